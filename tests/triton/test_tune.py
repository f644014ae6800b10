"""``modelservice tune`` end to end with the real tritonserver: the digits CNN converted, loaded in explicit
model-control mode, a small search measured, the winner written into the repository, Triton stopped.

No assertion on timings (a shared 2-core machine): structure and consistency only, e.g. the kept configuration
is the most throughput among the measurements within the target (ties within 2 % to the simpler config).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient
import yaml

from _serving import MODELS, alive, command_line, write_digits_modelservice
from modelservice.api.tuning import Performance
from modelservice.convert.repository import read_config, write_config
from modelservice.tune.search import TIE

TUNE = [sys.executable, "-m", "modelservice.cli", "tune"]
BUDGET = ["--max-trials", "3", "--window", "0.6", "--warmup", "0.3"]


def _tunable(folder: Path, serving: dict[str, Any]) -> Path:
    """The digits CNN ModelService (maxBatchSize 16, queue delay 20 ms, preferred 4 and 8) with ``serving``."""
    item = write_digits_modelservice(folder, MODELS[0])
    document = yaml.safe_load(item.path.read_text(encoding="utf-8"))
    document["spec"]["serving"].update(serving)
    item.path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return item.path


def _run(args: list[str], tmp: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}  # the runnable repository and Triton's log live under tmp
    return subprocess.run([*TUNE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _leftovers(tmp: Path) -> list[str]:
    """Live processes whose command line names ``tmp`` (Triton, its python-backend stubs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            line = command_line(int(entry.name))
            if str(tmp) in line and "pytest" not in line and alive(int(entry.name)):
                found.append(line)
    return found


@pytest.mark.triton
@pytest.mark.slow
def test_tune_writes_the_winner_and_performance_json(tmp_path: Path, cache_dir: Path) -> None:
    target = {"latencyTarget": {"p99Milliseconds": 250}, "tuning": {"concurrency": [1, 4]}}
    spec = _tunable(tmp_path / "project", target)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    result = _run(["-f", str(spec), "--out", str(out), "--cache-dir", str(cache_dir), *BUDGET], tmp)
    assert result.returncode == 0, result.stderr[-3000:]

    # performance.json is exactly Performance.to_api()
    data = json.loads((out / "performance.json").read_text(encoding="utf-8"))
    performance = Performance.model_validate(data)
    assert performance.to_api() == data
    assert performance.target == "p99 <= 250 ms"
    assert performance.trial_count is not None and 1 <= performance.trial_count <= 3
    assert performance.trials is not None and performance.concurrency in (1, 4)
    assert performance.cold_start_seconds is not None and performance.cold_start_seconds > 0
    assert performance.tuning_seconds is not None and performance.measured_on and "Triton" in performance.measured_on
    configs = {json.dumps(t.config.to_api(), sort_keys=True) for t in performance.trials}
    assert len(configs) == performance.trial_count
    first = performance.trials[0]
    assert (first.config.max_batch_size, first.config.max_queue_delay_microseconds) == (16, 20000)  # the default
    assert first.config.preferred_batch_sizes == [4, 8]
    assert first.concurrency == 1

    # the winner: the most throughput within the target (ties within 2 %), or the lowest latency without one
    meeting = [t for t in performance.trials if t.meets_target]
    for trial in performance.trials:
        assert trial.meets_target == (trial.latency_ms.p99 <= 250)
    chosen = [
        t
        for t in performance.trials
        if t.config == performance.config
        and t.concurrency == performance.concurrency
        and t.throughput == performance.throughput_per_replica
    ]
    assert len(chosen) == 1 and chosen[0].latency_ms == performance.latency_ms
    # ... unless the winner was re-measured against the default: then the two decide between themselves
    confirmed = "re-measured against the default" in result.stdout
    if "the default kept" in result.stdout:
        assert performance.config == first.config
    if performance.target_met:
        assert chosen[0].meets_target
        assert performance.default_throughput is not None
        assert performance.throughput_per_replica >= performance.default_throughput
        if not confirmed:
            assert performance.throughput_per_replica >= max(t.throughput for t in meeting) * (1 - TIE)
    else:
        assert not meeting
        if not confirmed:
            assert performance.latency_ms.p99 == min(t.latency_ms.p99 for t in performance.trials)
    defaults = [t.throughput for t in performance.trials if t.config == first.config and t.meets_target]
    assert performance.default_throughput == (max(defaults) if defaults else 0.0)

    # config.pbtxt holds the winner; config.untuned.pbtxt the converter's original
    tuned = read_config(out / "digits-cnn" / "config.pbtxt")
    untuned = read_config(out / "digits-cnn" / "config.untuned.pbtxt")
    assert tuned.max_batch_size == performance.config.max_batch_size
    assert tuned.HasField("dynamic_batching") == performance.config.dynamic_batching
    assert tuned.dynamic_batching.max_queue_delay_microseconds == performance.config.max_queue_delay_microseconds
    assert list(tuned.dynamic_batching.preferred_batch_size) == performance.config.preferred_batch_sizes
    assert [g.count for g in tuned.instance_group] == [performance.config.instances]
    assert (untuned.max_batch_size, untuned.dynamic_batching.max_queue_delay_microseconds) == (16, 20000)
    assert list(untuned.dynamic_batching.preferred_batch_size) == [4, 8]
    assert (tuned.platform, list(tuned.input), list(tuned.output)) == (
        untuned.platform,
        list(untuned.input),
        list(untuned.output),
    )

    # the curve and the verdict were printed; Triton (and its stubs) stopped
    assert "(default)" in result.stdout and "p99 <= 250 ms" in result.stdout
    assert re.search(r"^(tuned: |the default is already best|no configuration met)", result.stdout, re.M)
    pid = int(re.search(r"tritonserver pid (\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert not alive(pid)
    assert _leftovers(tmp) == []


@pytest.mark.triton
@pytest.mark.slow
def test_a_second_tune_starts_from_the_untuned_config(tmp_path: Path, cache_dir: Path) -> None:
    # batch sizes 2 and 16 only, one load level: whatever wins, the original stays config.untuned.pbtxt
    target = {"latencyTarget": {"p95Milliseconds": 500}, "tuning": {"concurrency": [2], "batchSizes": [2]}}
    spec = _tunable(tmp_path / "project", target)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    folder = out / "digits-cnn"
    args = ["-f", str(spec), "--out", str(out), "--cache-dir", str(cache_dir), "--max-trials", "2"]
    first = _run([*args, "--window", "0.4", "--warmup", "0.2"], tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    original = (folder / "config.untuned.pbtxt").read_bytes()
    # the conversion (a cache hit) reinstalls the model folder: the original config comes back, then is kept again
    summary = tmp_path / "summary.json"
    second = _run([*args, "--window", "0.4", "--warmup", "0.2", "--summary-file", str(summary)], tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (folder / "config.untuned.pbtxt").read_bytes() == original
    compact = json.loads(summary.read_text(encoding="utf-8"))
    assert "trials" not in compact and compact["trialCount"] == 2 and len(summary.read_bytes()) <= 4096
    assert compact["target"] == "p95 <= 500 ms"
    assert _leftovers(tmp) == []


def test_tune_without_a_latency_target_is_one_line_naming_the_file_and_field(tmp_path: Path) -> None:
    spec = _tunable(tmp_path / "project", {})
    result = _run(["-f", str(spec), "--out", str(tmp_path / "out")], tmp_path / "tmp", timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {spec}: spec.serving.latencyTarget: required to tune (p99Milliseconds or p95Milliseconds)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.triton
@pytest.mark.slow
def test_a_text_model_tunes_its_encoder_through_the_ensemble(tmp_path: Path) -> None:
    import _hf

    source = tmp_path / "project" / "src"
    _hf.write_text_model(source, task="sentence-embedding", layout="sentence-transformers")
    document = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "emb"},
        "spec": {
            "model": {"uri": "src", "format": "huggingface", "task": "sentence-embedding"},
            "conversion": {"target": "onnx", "precision": "fp32"},
            "serving": {
                "maxBatchSize": 8,
                "latencyTarget": {"p99Milliseconds": 250},
                "tuning": {"concurrency": [1, 4], "queueDelaysMicroseconds": [0]},
            },
        },
    }
    spec = tmp_path / "project" / "modelservice.yaml"
    spec.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    result = _run(["-f", str(spec), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *BUDGET], tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    performance = Performance.model_validate(json.loads((out / "performance.json").read_text(encoding="utf-8")))
    assert performance.trials and performance.trial_count is not None and performance.trial_count <= 3
    # the ensemble's max_batch_size bounds its steps': the encoder's batch is not tuned below it
    assert {t.config.max_batch_size for t in performance.trials} == {8}
    assert {t.config.max_queue_delay_microseconds for t in performance.trials} <= {0, 100}
    encoder = read_config(out / "emb-encoder" / "config.pbtxt")
    assert encoder.dynamic_batching.max_queue_delay_microseconds == performance.config.max_queue_delay_microseconds
    assert [g.count for g in encoder.instance_group] == [performance.config.instances]
    assert (out / "emb-encoder" / "config.untuned.pbtxt").is_file()
    assert not (out / "emb" / "config.untuned.pbtxt").exists()  # the ensemble itself is not rewritten
    assert "emb is an ensemble" in result.stdout
    assert _leftovers(tmp) == []


@pytest.mark.triton
@pytest.mark.slow
def test_in_the_pod_tune_uses_the_running_triton_and_starts_none(tmp_path: Path, cache_dir: Path) -> None:
    """The profiling pod's path: a Triton already running in explicit mode (here: started by the test on the
    runnable repository, as the serving sidecar would on the converted one), --repository and --triton-url."""
    from _serving import convert_digits, descendants
    from modelservice.serve.pybackend import make_runnable
    from modelservice.serve.triton import find_tritonserver
    from modelservice.tune.run import ExplicitTriton

    converted = convert_digits(tmp_path / "project", MODELS[0], cache_dir)
    spec = _tunable(tmp_path / "project", {"latencyTarget": {"p99Milliseconds": 300}, "tuning": {"concurrency": [2]}})
    install = find_tritonserver()
    repository = tmp_path / "repository"
    make_runnable(converted, repository, install)
    before = (repository / "digits-cnn" / "config.pbtxt").read_bytes()
    # another model in the same repository is not this ModelService's: the profiler leaves it unloaded
    shutil.copytree(repository / "digits-cnn", repository / "other")
    other = read_config(repository / "other" / "config.pbtxt")
    other.name = "other"
    write_config(other, repository / "other" / "config.pbtxt")
    summary = tmp_path / "termination-log"
    triton = ExplicitTriton(
        repository=repository, log_path=tmp_path / "triton.log", install=install, cache_dir=cache_dir
    )
    with triton:
        assert triton.pid is not None
        stubs_before = descendants(triton.pid)
        args = ["-f", str(spec), "--repository", str(repository), "--triton-url", f"http://{triton.http_url}"]
        result = _run([*args, "--summary-file", str(summary), *BUDGET], tmp_path / "tmp")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "tritonserver pid" not in result.stdout  # it started none
        assert triton.alive()
        assert descendants(triton.pid) - stubs_before  # the model it loaded runs in a stub under this Triton
        index = httpclient.InferenceServerClient(triton.http_url).get_model_repository_index()
        states = {entry["name"]: entry.get("state") for entry in index}
        assert states["digits-cnn"] == "READY" and states["other"] != "READY"
    data = json.loads((repository / "performance.json").read_text(encoding="utf-8"))
    performance = Performance.model_validate(data)
    assert performance.target == "p99 <= 300 ms" and performance.cold_start_seconds is not None
    assert (repository / "digits-cnn" / "config.untuned.pbtxt").read_bytes() == before
    tuned = read_config(repository / "digits-cnn" / "config.pbtxt")
    assert tuned.backend == "python" and tuned.max_batch_size == performance.config.max_batch_size
    compact = json.loads(summary.read_text(encoding="utf-8"))
    assert compact == {key: value for key, value in data.items() if key != "trials"}
    assert len(summary.read_bytes()) <= 4096
