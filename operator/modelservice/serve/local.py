"""``modelservice serve``: convert (cached), write a runnable repository, run a real Triton on 127.0.0.1.

Blocks until SIGINT or SIGTERM, then stops Triton and every process it started (its python-backend stubs).
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from modelservice.api.loader import LoadedModelService
from modelservice.convert.repository import CONFIG_FILE, ConfigTensor, TensorLike, dtype_name, read_config
from modelservice.serve.pybackend import RunnableModel, make_runnable
from modelservice.serve.triton import (
    HOST,
    Ports,
    TritonError,
    TritonInstall,
    TritonProcess,
    find_tritonserver,
    tail,
)

CURL_MAX_ELEMENTS = 256  # larger inputs get no inline curl example
CURL_TEXT = "The quick brown fox jumps over the lazy dog."  # no quote: the body goes in single quotes


@dataclass
class ServeOptions:
    http_port: int
    grpc_port: int
    metrics_port: int
    workdir: Path | None
    cache_dir: Path | None


class _Stop(BaseException):
    """Raised by the signal handler to unwind into the cleanup code."""


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """While active, SIGINT/SIGTERM raise _Stop once (later ones are ignored while we stop)."""
    stopping = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    path = Path(tempfile.mkdtemp(prefix="modelservice-serve-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def curl_example(http_url: str, model: str, inputs: Sequence[TensorLike], batched: bool) -> str | None:
    """A curl command with an all-zero request (a sentence for a BYTES input: a text model's ``text``), or None
    when the inputs are too large to inline."""
    body_inputs = []
    for tensor in inputs:
        dims = [1 if d < 0 else d for d in tensor.shape]
        shape = [1, *dims] if batched else dims
        elements = 1
        for dim in shape:
            elements *= dim
        if elements > CURL_MAX_ELEMENTS:
            return None
        zero: object = False if tensor.dtype == "BOOL" else 0 if tensor.dtype.startswith(("INT", "UINT")) else 0.0
        if tensor.dtype in ("BYTES", "STRING"):
            zero = CURL_TEXT
        datatype = "BYTES" if tensor.dtype == "STRING" else tensor.dtype
        body_inputs.append({"name": tensor.name, "shape": shape, "datatype": datatype, "data": [zero] * elements})
    body = json.dumps({"inputs": body_inputs}, separators=(",", ":"))
    return f"curl -s {http_url}/v2/models/{model}/infer -d '{body}'"


@dataclass(frozen=True)
class ModelInputs:
    """What serve prints examples from: a model's inputs (without batch dimension), whether it batches, and the
    ensemble it is a step of (its examples are left out: clients call the ensemble)."""

    inputs: list[ConfigTensor]
    batched: bool
    step_of: str | None = None


def describe(
    triton: TritonProcess,
    install: TritonInstall,
    models: list[RunnableModel],
    inputs: dict[str, ModelInputs],
) -> str:
    """What serve prints once Triton is ready: endpoints and examples."""
    http = f"http://{HOST}:{triton.ports.http}"
    lines = [f"Triton is ready (tritonserver from {install.source}); log: {triton.log_path}"]
    for model in models:
        if model.source_platform == "ensemble":
            how = "ensemble"
        elif model.runtime:
            how = f"{model.source_platform} artifact, python backend running {model.runtime}"
        else:
            how = f"{model.source_platform} artifact, {model.backend} backend"
        step_of = inputs[model.name].step_of if model.name in inputs else None
        lines.append(f"  model {model.name}: {how}" + (f" (a step of {step_of})" if step_of else ""))
    lines += [
        f"  HTTP     {http}   (GET {http}/v2/health/ready, {http}/v2/models/<model>/config)",
        f"  gRPC     {triton.grpc_url}",
        f"  metrics  {triton.metrics_url}",
        "Try:",
    ]
    for model in models:
        found = inputs.get(model.name, ModelInputs([], False))
        if found.step_of:
            continue
        example = curl_example(http, model.name, found.inputs, batched=found.batched) if found.inputs else None
        if example:
            lines.append(f"  {example}")
        text = any(t.dtype in ("BYTES", "STRING") for t in found.inputs)
        sample = f' --text "{CURL_TEXT}"' if text else " --count 20"
        lines.append(f"  modelservice infer --url {triton.http_url} -m {model.name}{sample}")
        lines.append(f"  modelservice infer --url {triton.grpc_url} --protocol grpc -m {model.name}")
    lines.append("Press Ctrl-C (or send SIGTERM) to stop.")
    return "\n".join(lines)


def model_inputs(repository: Path, models: list[RunnableModel]) -> dict[str, ModelInputs]:
    """Per model: its inputs, whether it batches, and the ensemble calling it (if any)."""
    configs = {model.name: read_config(repository / model.name / CONFIG_FILE) for model in models}
    steps = {step.model_name: name for name, config in configs.items() for step in config.ensemble_scheduling.step}
    return {
        name: ModelInputs(
            [ConfigTensor(t.name, dtype_name(t.data_type), list(t.dims)) for t in config.input],
            config.max_batch_size > 0,
            steps.get(name),
        )
        for name, config in configs.items()
    }


def serve(item: LoadedModelService, options: ServeOptions) -> int:
    """Convert, start Triton, print endpoints, block until SIGINT/SIGTERM, stop everything; 0 on a clean stop."""
    install = find_tritonserver()
    # Busy ports are reported before a long conversion; 0 picks a free port.
    ports = Ports.pick(options.http_port, options.grpc_port, options.metrics_port)
    from modelservice.convert.pipeline import ConvertOptions, convert

    with _stop_on_signals(), _workdir(options.workdir) as workdir:
        try:
            converted = workdir / "converted"
            report = convert(item, converted, ConvertOptions(cache_dir=options.cache_dir, progress=True))
            print(report.summary_line(), flush=True)
            repository = workdir / "repository"
            models = make_runnable(converted, repository, install)
            triton = TritonProcess(
                repository=repository,
                log_path=workdir / "triton.log",
                ports=ports,
                install=install,
                cache_dir=options.cache_dir,
            )
            with triton:
                print(describe(triton, install, models, model_inputs(repository, models)), flush=True)
                while triton.alive():
                    time.sleep(0.5)
                code = triton.process.returncode if triton.process else None
                raise TritonError(f"tritonserver exited unexpectedly (code {code}):\n{tail(triton.log_path)}")
        except _Stop:
            print("stopped", flush=True)
            return 0
