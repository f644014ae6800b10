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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from modelservice.api.loader import LoadedModelService
from modelservice.api.models import TensorSpec
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


def curl_example(http_url: str, model: str, inputs: list[TensorSpec], batched: bool) -> str | None:
    """A curl command with an all-zero request, or None when the inputs are too large to inline."""
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
        body_inputs.append({"name": tensor.name, "shape": shape, "datatype": tensor.dtype, "data": [zero] * elements})
    body = json.dumps({"inputs": body_inputs}, separators=(",", ":"))
    return f"curl -s {http_url}/v2/models/{model}/infer -d '{body}'"


def describe(
    triton: TritonProcess,
    install: TritonInstall,
    models: list[RunnableModel],
    inputs: dict[str, tuple[list[TensorSpec], bool]],
) -> str:
    """What serve prints once Triton is ready: endpoints and examples."""
    http = f"http://{HOST}:{triton.ports.http}"
    lines = [f"Triton is ready (tritonserver from {install.source}); log: {triton.log_path}"]
    for model in models:
        how = f"python backend running {model.runtime}" if model.runtime else f"{model.backend} backend"
        lines.append(f"  model {model.name}: {model.source_platform} artifact, {how}")
    lines += [
        f"  HTTP     {http}   (GET {http}/v2/health/ready, {http}/v2/models/<model>/config)",
        f"  gRPC     {triton.grpc_url}",
        f"  metrics  {triton.metrics_url}",
        "Try:",
    ]
    for model in models:
        tensors, batched = inputs.get(model.name, ([], False))
        example = curl_example(http, model.name, tensors, batched=batched) if tensors else None
        if example:
            lines.append(f"  {example}")
        lines.append(f"  modelservice infer --url {triton.http_url} -m {model.name} --count 20")
        lines.append(f"  modelservice infer --url {triton.grpc_url} --protocol grpc -m {model.name}")
    lines.append("Press Ctrl-C (or send SIGTERM) to stop.")
    return "\n".join(lines)


def _model_inputs(repository: Path, models: list[RunnableModel]) -> dict[str, tuple[list[TensorSpec], bool]]:
    """Per model: its inputs (without batch dimension) and whether it batches."""
    from modelservice.convert.repository import CONFIG_FILE, read_config, tensor_specs

    found: dict[str, tuple[list[TensorSpec], bool]] = {}
    for model in models:
        config = read_config(repository / model.name / CONFIG_FILE)
        found[model.name] = (tensor_specs(config.input), config.max_batch_size > 0)
    return found


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
                print(describe(triton, install, models, _model_inputs(repository, models)), flush=True)
                while triton.alive():
                    time.sleep(0.5)
                code = triton.process.returncode if triton.process else None
                raise TritonError(f"tritonserver exited unexpectedly (code {code}):\n{tail(triton.log_path)}")
        except _Stop:
            print("stopped", flush=True)
            return 0
