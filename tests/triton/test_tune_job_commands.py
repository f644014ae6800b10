"""The profiling Job's command lines, run for real: the Triton sidecar's args and the profiler's command exactly
as ``build_tune_job`` renders them, against the digits CNN converted into a claim-like root
(``<root>/<conversion hash>/digits-cnn``) and made runnable for the wheel's Triton (python backend only).

Only ``on_this_machine`` changes anything: paths (/models, /etc/modelservice/modelservice.yaml,
/dev/termination-log, /tmp), the three loopback ports (and the profiler's --triton-url with them), and the
tritonserver binary, its environment and backend directory. Every other argument is asserted unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from _serving import MODELS, alive, command_line, write_digits_modelservice
from modelservice.api.loader import load_one
from modelservice.api.tuning import Performance
from modelservice.convert.pipeline import ConvertOptions, convert
from modelservice.convert.repository import read_config
from modelservice.render.job import TERMINATION_LOG
from modelservice.render.names import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODELS_DIR,
    SPEC_DIR,
    SPEC_FILE,
    conversion_hash,
)
from modelservice.render.plan import OperatorConfig
from modelservice.render.tunejob import build_tune_configmap, build_tune_job, parse_performance
from modelservice.serve.pybackend import make_runnable
from modelservice.serve.triton import Ports, TritonInstall, TritonProcess, find_tritonserver, prepare_backend_dir

SERVING = {"latencyTarget": {"p99Milliseconds": 300}, "tuning": {"maxTrials": 2, "maxSeconds": 20, "concurrency": [2]}}


@dataclass
class Local:
    """Where the pod's paths and ports are on this machine."""

    root: Path  # the claim: /models
    spec: Path  # /etc/modelservice/modelservice.yaml
    termination_log: Path  # /dev/termination-log
    tmp: Path  # the emptyDir mounted at /tmp
    ports: Ports = field(default_factory=Ports.pick)


def on_this_machine(
    job: dict[str, Any], local: Local, install: TritonInstall, backend_dir: Path | None
) -> tuple[tuple[list[str], dict[str, str]], tuple[list[str], dict[str, str]]]:
    """(argv, env) of the Triton sidecar and of the profiler, from the rendered Job, mapped to this machine."""
    pod = job["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c.get("restartPolicy") == "Always"]
    (profiler,) = pod["containers"]
    paths = {
        f"{SPEC_DIR}/{SPEC_FILE}": str(local.spec),
        TERMINATION_LOG: str(local.termination_log),
        MODELS_DIR: str(local.root),
        "/tmp": str(local.tmp),
    }
    ports = {HTTP_PORT: local.ports.http, GRPC_PORT: local.ports.grpc, METRICS_PORT: local.ports.metrics}

    def value(text: str) -> str:
        for pod_path, here in paths.items():
            if text == pod_path or text.startswith(pod_path + "/"):
                return here + text[len(pod_path) :]
        if text.startswith("http://127.0.0.1:"):  # --triton-url
            host, port = text.rsplit(":", 1)
            return f"{host}:{ports[int(port)]}"
        return text

    def arg(text: str) -> str:
        flag, eq, rest = text.partition("=")
        if not eq:
            return value(text)
        if flag.endswith("-port"):
            return f"{flag}={ports[int(rest)]}"
        return f"{flag}={value(rest)}"

    def env(container: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
        return {**os.environ, **{e["name"]: value(e["value"]) for e in container.get("env", [])}, **extra}

    assert sidecar["command"] == ["tritonserver"] and profiler["command"][:2] == ["modelservice", "tune"]
    libraries = {"LD_LIBRARY_PATH": str(install.library_dir)} if install.library_dir else {}
    stub_python = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # TritonProcess's rule
    backend = [f"--backend-directory={backend_dir}"] if backend_dir is not None else []
    triton = [str(install.binary), *map(arg, sidecar["args"]), *backend]
    tune = [sys.executable, "-m", "modelservice.cli", *map(arg, profiler["command"][1:] + profiler.get("args", []))]
    return (triton, env(sidecar, {**libraries, **stub_python})), (tune, env(profiler, {}))


@dataclass
class RenderedTriton(TritonProcess):
    """TritonProcess's start, readiness wait and stop (SIGTERM by pid, then its process group), our argv."""

    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def command(self, backend_dir: Path | None) -> list[str]:
        return self.argv

    def environment(self) -> dict[str, str]:
        return self.env


def _changed(rendered: list[str], mapped: list[str]) -> list[str]:
    assert len(rendered) == len(mapped)
    return [r for r, m in zip(rendered, mapped, strict=True) if r != m]


@pytest.mark.triton
@pytest.mark.slow
def test_the_rendered_profiling_job_tunes_with_the_real_binaries(tmp_path: Path, cache_dir: Path) -> None:
    # the digits CNN with a latency target and a small budget, converted into <root>/<conversion hash>
    item = write_digits_modelservice(tmp_path / "project", MODELS[0])
    document = yaml.safe_load(item.path.read_text(encoding="utf-8"))
    document["spec"]["serving"].update(SERVING)
    item.path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    item = load_one(item.path)
    ms, install = item.model, find_tritonserver()
    convert(item, tmp_path / "converted", ConvertOptions(cache_dir=cache_dir, progress=False))
    local = Local(tmp_path / "models", tmp_path / "spec" / SPEC_FILE, tmp_path / "termination-log", tmp_path / "tmp")
    repository = local.root / conversion_hash(ms)
    make_runnable(tmp_path / "converted", repository, install)
    folder = repository / ms.name
    untuned = (folder / "config.pbtxt").read_bytes()

    # the rendered objects: the spec from the ConfigMap, the two command lines from the Job
    local.spec.parent.mkdir()
    local.spec.write_text(build_tune_configmap(ms, OperatorConfig())["data"][SPEC_FILE], encoding="utf-8")
    local.tmp.mkdir()
    job = build_tune_job(ms, OperatorConfig())
    pod = job["spec"]["template"]["spec"]
    backend_dir = prepare_backend_dir(install, cache_dir)
    (triton_argv, triton_env), (tune_argv, tune_env) = on_this_machine(job, local, install, backend_dir)

    rendered_triton = pod["initContainers"][0]["args"]
    assert triton_argv[1 : 1 + len(rendered_triton)] == [
        *(f"--model-repository={repository}", "--model-control-mode=explicit"),
        *("--strict-readiness=true", "--exit-on-error=true", "--http-address=127.0.0.1"),
        *(f"--http-port={local.ports.http}", "--grpc-address=127.0.0.1", f"--grpc-port={local.ports.grpc}"),
        *("--metrics-address=127.0.0.1", f"--metrics-port={local.ports.metrics}", "--allow-metrics=true"),
    ]
    assert _changed(rendered_triton, triton_argv[1 : 1 + len(rendered_triton)]) == [
        f"--model-repository={MODELS_DIR}/{conversion_hash(ms)}",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    rendered_tune = pod["containers"][0]["command"][1:]
    assert _changed(rendered_tune, tune_argv[3:]) == [
        f"{SPEC_DIR}/{SPEC_FILE}",
        f"{MODELS_DIR}/{conversion_hash(ms)}",
        "http://127.0.0.1:8000",
        TERMINATION_LOG,
    ]
    assert tune_argv[3:] == [
        *("tune", "-f", str(local.spec), "--repository", str(repository)),
        *("--triton-url", f"http://127.0.0.1:{local.ports.http}", "--summary-file", str(local.termination_log)),
    ]

    triton = RenderedTriton(
        repository=repository, log_path=tmp_path / "triton.log", ports=local.ports, install=install,
        argv=triton_argv, env=triton_env,
    )  # fmt: skip
    try:
        triton.start()
        triton.wait_ready()
        result = subprocess.run(tune_argv, capture_output=True, text=True, timeout=120, env=tune_env, check=False)
        assert triton.alive()
    finally:
        triton.stop()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "tritonserver pid" not in result.stdout  # the profiler used the sidecar, started none

    # the operator's parser reads the termination message; the repository holds the winner
    performance, reason = parse_performance(local.termination_log.read_text(encoding="utf-8"))
    assert reason is None and isinstance(performance, Performance), reason
    assert performance.target == "p99 <= 300 ms" and performance.trial_count in (1, 2)
    assert (folder / "config.untuned.pbtxt").read_bytes() == untuned
    tuned = read_config(folder / "config.pbtxt")
    assert tuned.max_batch_size == performance.config.max_batch_size
    assert tuned.HasField("dynamic_batching") == performance.config.dynamic_batching
    assert tuned.dynamic_batching.max_queue_delay_microseconds == performance.config.max_queue_delay_microseconds
    assert list(tuned.dynamic_batching.preferred_batch_size) == performance.config.preferred_batch_sizes
    assert [g.count for g in tuned.instance_group] == [performance.config.instances]
    data = json.loads((repository / "performance.json").read_text(encoding="utf-8"))
    assert performance.to_api() == {key: value for key, value in data.items() if key != "trials"}

    # nothing of this test's Triton (nor its python-backend stubs) is left running
    assert triton.pid is not None and not alive(triton.pid)
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]
    assert [command_line(pid) for pid in pids if str(tmp_path) in command_line(pid) and alive(pid)] == []
