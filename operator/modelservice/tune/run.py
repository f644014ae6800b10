"""``modelservice tune``: measure candidate Triton configurations and keep the one with the most throughput
within ``spec.serving.latencyTarget``.

Locally (``--out DIR``): convert (cached, as ``modelservice serve`` does) into DIR, make the repository runnable
for the local Triton (serve/pybackend.py), start a real tritonserver in explicit model-control mode on free
loopback ports, time its cold start (start -> model ready), search, and stop it by pid.
In the profiling pod (``--repository DIR --triton-url URL``): use the Triton already running beside it (the
serving image, explicit mode, same repository) and start nothing; its cold start is the first load.

Either way the winner's config.pbtxt replaces the model's (atomically, through Triton's ModelConfig protobuf),
the converter's original is kept once as ``config.untuned.pbtxt`` beside it (a re-tune starts from it), and
``performance.json`` is ``Performance.to_api()``. With a summary file (the pod's /dev/termination-log) the
compact summary (no trials, <= 4 KiB) goes there too, as the conversion Job does. A text model (a Triton
ensemble) is tuned on its encoder's batching and instances, measured through the ensemble with real sentences.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from modelservice.api.errors import UserError
from modelservice.api.loader import LoadedModelService
from modelservice.api.models import ModelService
from modelservice.api.tuning import LatencyTarget, Performance
from modelservice.convert.output import STEP_SUFFIXES, model_folders
from modelservice.convert.report import atomic_write_text
from modelservice.convert.repository import CONFIG_FILE, ModelConfig, read_config, write_config
from modelservice.convert.textdata import builtin_sentences
from modelservice.convert.textserving import encoder_name, is_text_model
from modelservice.serve.triton import TritonProcess
from modelservice.tune.profile import ProfileError, Profiler, apply, workload
from modelservice.tune.report import cpu_model, performance, point_text, summary, target_text
from modelservice.tune.search import Candidate, Measurement, Outcome, Search, space_for

UNTUNED_FILE = "config.untuned.pbtxt"
PERFORMANCE_FILE = "performance.json"
TERMINATION_LOG = Path("/dev/termination-log")


@dataclass
class TuneOptions:
    out: Path | None = None  # local: the converted and tuned repository, and performance.json
    repository: Path | None = None  # in the pod: the converted repository (shared with the Triton sidecar)
    triton_url: str | None = None  # in the pod: the sidecar's HTTP endpoint
    max_trials: int | None = None
    max_seconds: int | None = None
    warmup: float = 1.0
    window: float = 3.0
    cache_dir: Path | None = None
    summary_file: Path | None = None
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


@dataclass(frozen=True)
class Tuned:
    performance: Performance
    outcome: Outcome
    target: LatencyTarget
    repository: Path
    performance_file: Path


def check_tunable(ms: ModelService) -> LatencyTarget:
    target = ms.spec.serving.latency_target
    if target is None:
        raise UserError("spec.serving.latencyTarget: required to tune (p99Milliseconds or p95Milliseconds)")
    if not ms.spec.serving.tuning.enabled:
        raise UserError("spec.serving.tuning.enabled: false; the spec's configuration is kept (nothing to tune)")
    return target


def tune(item: LoadedModelService, options: TuneOptions) -> Tuned:
    """Tune the ModelService of ``item`` (see the module doc)."""
    ms = item.model
    check_tunable(ms)
    if (options.repository is None) != (options.triton_url is None):
        raise UserError("--repository and --triton-url go together (the profiling pod's Triton and its repository)")
    if options.repository is not None and options.triton_url is not None:
        return _tune_in_pod(ms, options.repository, options.triton_url, options)
    return _tune_local(item, options.out or Path.cwd() / f"{ms.name}-tuned", options)


# ------------------------------------------------------------------------------------------------- modes


class ExplicitTriton(TritonProcess):
    """A local Triton whose models are loaded and reloaded through the model-control API."""

    def command(self, backend_dir: Path | None) -> list[str]:
        mode = "--model-control-mode="
        return [f"{mode}explicit" if arg.startswith(mode) else arg for arg in super().command(backend_dir)]


def _tune_local(item: LoadedModelService, out: Path, options: TuneOptions) -> Tuned:
    from modelservice.convert.pipeline import ConvertOptions, convert
    from modelservice.serve.pybackend import make_runnable
    from modelservice.serve.triton import find_tritonserver

    ms = item.model
    install = find_tritonserver()
    report = convert(item, out, ConvertOptions(cache_dir=options.cache_dir, progress=True))
    options.echo(report.summary_line())
    with tempfile.TemporaryDirectory(prefix="modelservice-tune-") as tmp:
        runnable = Path(tmp) / "repository"
        make_runnable(out, runnable, install)
        triton = ExplicitTriton(
            repository=runnable, log_path=Path(tmp) / "triton.log", install=install, cache_dir=options.cache_dir
        )
        started = time.monotonic()
        with triton:
            options.echo(f"tritonserver pid {triton.pid} on {triton.http_url} (explicit model control)")
            session = _Session(ms, triton.http_url, runnable, options)
            try:
                asyncio.run(session.load_all())
                cold = time.monotonic() - started
                outcome, seconds = asyncio.run(session.search())
                measured_on = asyncio.run(session.measured_on())
            finally:
                with contextlib.suppress(Exception):  # a model left loaded only slows Triton's exit
                    asyncio.run(session.unload_all())
    return _finish(ms, out, outcome, cold, seconds, measured_on, options)


def _tune_in_pod(ms: ModelService, repository: Path, url: str, options: TuneOptions) -> Tuned:
    url = url.removeprefix("http://").rstrip("/")
    wait_ready(url)
    session = _Session(ms, url, repository, options)
    cold = asyncio.run(session.load_all())
    outcome, seconds = asyncio.run(session.search())
    measured_on = asyncio.run(session.measured_on())
    return _finish(ms, repository, outcome, cold, seconds, measured_on, options)


# ------------------------------------------------------------------------------------------------- session


class _Session:
    """The models of one ModelService on one Triton, and the search over them."""

    def __init__(self, ms: ModelService, url: str, repository: Path, options: TuneOptions) -> None:
        self.ms, self.url, self.options = ms, url, options
        self.target = check_tunable(ms)
        self.tuned = encoder_name(ms) if is_text_model(ms) else ms.name
        # this ModelService's folders only (the repository may hold other models): steps first, then <name>
        own = {ms.name, *(ms.name + suffix for suffix in STEP_SUFFIXES)}
        found = model_folders(repository, ms.name) if (repository / ms.name).is_dir() else [ms.name]
        self.models = [name for name in found if name in own]
        if not (repository / self.tuned / CONFIG_FILE).is_file():
            raise UserError(f"{repository / self.tuned / CONFIG_FILE}: not found (convert first)")
        base = _untuned(repository / self.tuned)
        request = base if self.tuned == ms.name else read_config(repository / ms.name / CONFIG_FILE)
        self.space = space_for(ms)
        if request is not base:  # Triton refuses an ensemble whose max_batch_size exceeds a step's
            floor = request.max_batch_size
            kept = tuple(size for size in self.space.batch_sizes if size >= floor)
            self.space = replace(self.space, batch_sizes=kept or (self.space.default.max_batch_size,))
            options.echo(f"{ms.name} is an ensemble (max_batch_size {floor}): {self.tuned} keeps batch >= {floor}")
        self.profiler = Profiler(
            url, self.tuned, base, workload(ms.name, request, builtin_sentences()), options.warmup, options.window
        )
        self.load_seconds = 0.0

    async def load_all(self) -> float:
        """Load every model of the ModelService (steps first), the tuned one with the spec's configuration."""
        import tritonclient.http.aio as aioclient
        from tritonclient.utils import InferenceServerException

        started = time.monotonic()
        client = aioclient.InferenceServerClient(self.url, conn_timeout=300.0)
        try:
            for name in self.models:
                if name == self.tuned:
                    await self.profiler.load(self.space.default)
                else:
                    await client.load_model(name)
        except InferenceServerException as exc:
            raise ProfileError(f"Triton could not load {self.ms.name}: {exc.message()}") from None
        finally:
            await client.close()
        self.load_seconds = time.monotonic() - started
        self.options.echo(f"loaded {', '.join(self.models)} in {self.load_seconds:.1f} s")
        return self.load_seconds

    async def unload_all(self) -> None:
        import tritonclient.http.aio as aioclient

        client = aioclient.InferenceServerClient(self.url)
        try:
            for name in reversed(self.models):
                await client.unload_model(name)
        finally:
            await client.close()

    async def measured_on(self) -> str:
        import tritonclient.http.aio as aioclient

        client = aioclient.InferenceServerClient(self.url)
        try:
            version = (await client.get_server_metadata()).get("version", "?")
        finally:
            await client.close()
        return f"{cpu_model()} ({os.cpu_count()} CPUs), Triton {version}"

    async def search(self) -> tuple[Outcome, float]:
        tuning = self.ms.spec.serving.tuning
        search = Search(
            self.space,
            self.target,
            tuning.concurrency,
            self.options.max_trials or tuning.max_trials,
            self.options.max_seconds or tuning.max_seconds,
        )
        echo, started = self.options.echo, time.monotonic()
        echo(
            f"tuning {self.tuned} for {target_text(self.target)}: {len(tuning.concurrency)} load levels, "
            f"at most {search.max_trials} configurations and {search.max_seconds:g} s"
        )
        logged = 0
        while (probe := search.next_probe(time.monotonic() - started)) is not None:
            for line in search.log[logged:]:
                echo(f"  {line}")
            logged = len(search.log)
            t0 = time.monotonic()
            try:
                if probe.candidate != self.profiler.loaded:
                    loaded = await self.profiler.load(probe.candidate)
                    echo(f"trial {probe.trial}: {probe.candidate.describe()} loaded in {loaded:.1f} s")
                measured = await self.profiler.measure(probe.concurrency)
            except ProfileError as exc:
                echo(f"trial {probe.trial}: {exc}")
                measured = Measurement(0.0, 0.0, 0.0, 0.0, errors=1)
            point = search.record(probe, measured, time.monotonic() - t0)
            echo(f"trial {probe.trial}: c={probe.concurrency:<3} {point_text(point, self.target)}")
        echo(f"search ended: {search.stopped}")
        if search.outcome().confirmation:
            echo(search.outcome().confirmation)
        return search.outcome(), time.monotonic() - started


def wait_ready(url: str, timeout: float = 600.0) -> None:
    """Block until Triton at ``url`` (host:port) answers /v2/health/ready (the sidecar may start later)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ProfileError(f"Triton at {url} was not ready after {timeout:.0f} s")
        time.sleep(1)


def _untuned(folder: Path) -> ModelConfig:
    """The converter's config of a model folder: config.untuned.pbtxt once tuned, else config.pbtxt."""
    untuned = folder / UNTUNED_FILE
    return read_config(untuned if untuned.is_file() else folder / CONFIG_FILE)


# ------------------------------------------------------------------------------------------------- writing


def write_tuned_config(folder: Path, candidate: Candidate) -> None:
    """The winner's config.pbtxt in ``folder``; the converter's original kept once as config.untuned.pbtxt."""
    untuned = folder / UNTUNED_FILE
    if not untuned.is_file():
        _atomic_copy(folder / CONFIG_FILE, untuned)
    write_config(apply(read_config(untuned), candidate), folder / CONFIG_FILE)


def _atomic_copy(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically, except special files (/dev/termination-log), which are written in place."""
    if str(path).startswith("/dev/") or (path.exists() and not path.is_file()):
        path.write_text(text, encoding="utf-8")
        return
    atomic_write_text(path, text)


def _finish(
    ms: ModelService,
    repository: Path,
    outcome: Outcome,
    cold: float | None,
    seconds: float,
    measured_on: str,
    options: TuneOptions,
) -> Tuned:
    target = check_tunable(ms)
    perf = performance(outcome, target, cold, seconds, measured_on)
    assert outcome.winner is not None
    tuned = encoder_name(ms) if is_text_model(ms) else ms.name
    write_tuned_config(repository / tuned, outcome.winner.candidate)
    out = options.out or repository
    performance_file = out / PERFORMANCE_FILE
    write_text(performance_file, json.dumps(perf.to_api(), indent=2, sort_keys=True) + "\n")
    summary_file = options.summary_file
    if summary_file is None and options.triton_url is not None and TERMINATION_LOG.exists():
        summary_file = TERMINATION_LOG
    if summary_file is not None:
        write_text(summary_file, summary(perf))
    return Tuned(perf, outcome, target, repository, performance_file)
