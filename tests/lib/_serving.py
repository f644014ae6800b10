"""Helpers for the real-Triton tests (tests/triton/) and anything else that serves digits models:
ModelServices converted by the pipeline, the torch reference, and /proc-based process inspection.

    model = MODELS[0]                                   # digits-cnn, ONNX, dynamic batching
    item = write_digits_modelservice(folder, model)     # src/ (model.py, weights, test.npz) + modelservice.yaml
    out = convert_digits(folder, model, cache_dir)      # the convert pipeline's repository
    torch_logits("cnn", x)                              # what the original torch model answers
    descendants(pid), alive(pid), command_line(pid)     # process tree checks (no orphan stubs)
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import _digits
from modelservice.api.loader import LoadedModelService, load_one
from modelservice.serve.triton import TritonProcess


@dataclass(frozen=True)
class DigitsModel:
    name: str
    kind: str
    target: str
    serving: dict[str, Any]
    precision: str = "fp32"
    tolerance: float = 1e-4  # served logits vs eager torch (fp32 ONNX Runtime / TorchScript)


MODELS = [
    DigitsModel(
        "digits-cnn",
        "cnn",
        "onnx",
        {"maxBatchSize": 16, "dynamicBatching": {"maxQueueDelayMicroseconds": 20000, "preferredBatchSizes": [4, 8]}},
    ),
    DigitsModel("digits-mlp", "mlp", "onnx", {"maxBatchSize": 8, "dynamicBatching": None}),
    DigitsModel("digits-ts", "cnn", "torchscript", {"maxBatchSize": 8}),
    # fp16 TorchScript asks for a GPU; the local Triton runs its instance on the CPU (see serve/pybackend.py).
    DigitsModel("digits-ts16", "mlp", "torchscript", {"maxBatchSize": 8, "resources": {"gpu": 1}}, "fp16", 0.05),
]


def write_digits_modelservice(folder: Path, model: DigitsModel) -> LoadedModelService:
    """A source folder (model.py + trained weights + test.npz) and the ModelService YAML naming it."""
    _digits.write_source(folder / "src", model.kind)
    path = _digits.write_modelservice(
        folder / "modelservice.yaml",
        name=model.name,
        source="src",
        kind=model.kind,
        target=model.target,
        precision=model.precision,
        data_uri="src/test.npz",
        serving=model.serving,
    )
    if model.precision == "fp16":  # logits in half precision move by about 0.01: verify at the served tolerance
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        document["spec"]["conversion"]["verification"]["tolerance"] = model.tolerance
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_one(path)


def convert_digits(folder: Path, model: DigitsModel, cache_dir: Path) -> Path:
    """Run the convert pipeline for ``model``; returns the converted repository folder."""
    from modelservice.convert.pipeline import ConvertOptions, convert

    item = write_digits_modelservice(folder, model)
    out = folder / "converted"
    convert(item, out, ConvertOptions(cache_dir=cache_dir, progress=False))
    return out


@dataclass(frozen=True)
class RunningTriton:
    process: TritonProcess
    repository: Path

    @property
    def http_url(self) -> str:
        return self.process.http_url

    @property
    def grpc_url(self) -> str:
        return self.process.grpc_url

    @property
    def metrics_url(self) -> str:
        return self.process.metrics_url


def torch_logits(kind: str, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out: np.ndarray = _digits.train(kind)(torch.from_numpy(x)).numpy()
    return out


def model_named(name: str) -> DigitsModel:
    return next(m for m in MODELS if m.name == name)


def descendants(root: int) -> set[int]:
    """Pids whose parent chain reaches ``root`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # the command may contain spaces and parentheses: fields follow the last ')'
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Lines:
    """Collects a process's stdout lines on a thread, so reads can time out."""

    def __init__(self, stream: Iterator[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Iterator[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def _collect(self, timeout: float, marker: str | None = None) -> bool:
        """Read lines until ``marker`` appears (True), the stream ends or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.lines.append(line)
            if marker is not None and marker in line:
                return True
        return False

    def until(self, marker: str, timeout: float) -> str:
        if self._collect(timeout, marker):
            return "".join(self.lines)
        raise AssertionError(f"{marker!r} not seen; output so far:\n{''.join(self.lines)}")

    def rest(self, timeout: float) -> str:
        self._collect(timeout)
        return "".join(self.lines)
