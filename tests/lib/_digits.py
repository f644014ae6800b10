"""Shared helpers: scikit-learn's digits and small reference models trained in seconds.

Other test suites import this (``import _digits``; pytest's pythonpath is tests/lib, not tests/, so the
folder tests/triton/ never shadows a package named ``triton``):

    split = _digits.load_split()                      # x: [N, 1, 8, 8] float32 in [0, 1], y: int64
    model = _digits.train("cnn")                      # seeded, cached per process; "mlp", "cnn", "encoder"
    src = _digits.write_source(tmp / "src", "cnn")    # model.py + weights.safetensors (+ test.npz)
    yaml_path = _digits.write_modelservice(tmp / "ms.yaml", name="digits", source="src", kind="cnn",
                                           precision="fp32")

The architectures live in examples/digits/model.py (the bundled sample), so the tests convert exactly the
code a user reads.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL_PY = REPO / "examples" / "digits" / "model.py"

ARCHITECTURES = {
    "mlp": "DigitsMLP",
    "cnn": "DigitsCNN",
    "encoder": "DigitsEncoder",
    "encoder-large": "DigitsEncoderLarge",
}
# epochs, learning rate: > 93 % test accuracy in a few seconds on 2 cores (seeded).
_TRAINING = {"mlp": (15, 1e-2), "cnn": (10, 5e-3), "encoder": (12, 5e-3), "encoder-large": (25, 3e-4)}
INPUTS = [{"name": "image", "dtype": "FP32", "shape": [1, 8, 8]}]
OUTPUTS = [{"name": "logits", "dtype": "FP32", "shape": [10]}]


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.lru_cache(maxsize=1)
def load_split() -> Split:
    """The digits as [N, 1, 8, 8] float32 in [0, 1], with a fixed stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return Split(x_train, y_train, x_test, y_test)


def model_module() -> ModuleType:
    """examples/digits/model.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("_digits_model", MODEL_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(kind: str) -> Any:
    """An untrained instance of the architecture for ``kind`` (mlp, cnn, encoder, encoder-large)."""
    return getattr(model_module(), ARCHITECTURES[kind])()


@functools.cache
def train(kind: str, seed: int = 0) -> Any:
    """A trained model (eval mode); deterministic for a given seed; cached per process."""
    import torch

    threads = torch.get_num_threads()
    # Small models: one thread is as fast and degrades far less on a busy machine; encoder-large uses two.
    torch.set_num_threads(2 if kind == "encoder-large" else 1)
    try:
        return _train(kind, seed)
    finally:
        torch.set_num_threads(threads)


def _train(kind: str, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    model = build(kind)
    split = load_split()
    x = torch.from_numpy(split.x_train)
    y = torch.from_numpy(split.y_train)
    epochs, lr = _TRAINING[kind]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // 64)
    warmup = steps // 10 if kind == "encoder-large" else 0  # the deep encoder needs warm-up to start learning
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.05, 1 - step / steps) if warmup else 1.0
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
        if os.environ.get("DIGITS_TRAIN_VERBOSE"):
            model.eval()
            print(
                f"{kind}: epoch {epoch + 1}/{epochs}: test accuracy {accuracy(model):.4f}", file=sys.stderr, flush=True
            )
            model.train()
    model.eval()
    return model


def accuracy(model: Any, x: np.ndarray | None = None, y: np.ndarray | None = None) -> float:
    """Accuracy of a torch model on the test split (or on x, y)."""
    import torch

    split = load_split()
    x = split.x_test if x is None else x
    y = split.y_test if y is None else y
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    return float((logits.argmax(axis=1) == y).mean())


def state_dict(model: Any) -> dict[str, Any]:
    """A contiguous, detached copy of the model's state dict (what safetensors needs)."""
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def write_test_npz(path: Path) -> Path:
    """The labelled test split as .npz (x, y): what verification.dataUri points to."""
    split = load_split()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, x=split.x_test, y=split.y_test)
    return path


def write_calibration_npz(path: Path, samples: int = 256) -> Path:
    """Unlabelled calibration inputs (x) from the training split."""
    split = load_split()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, x=split.x_train[:samples])
    return path


def write_source(folder: Path, kind: str, model: Any = None, *, weights: str = "weights.safetensors") -> Path:
    """A pytorch model source folder: model.py, the trained state dict, and test.npz / calib.npz."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL_PY, folder / "model.py")
    model = train(kind) if model is None else model
    if weights.endswith(".safetensors"):
        save_file(state_dict(model), str(folder / weights))
    else:
        import torch

        torch.save(state_dict(model), folder / weights)
    write_test_npz(folder / "test.npz")
    write_calibration_npz(folder / "calib.npz")
    return folder


def modelservice(
    *,
    name: str,
    source: str,
    kind: str | None = "cnn",
    format: str = "pytorch",
    target: str = "onnx",
    precision: str = "fp32",
    method: str = "dynamic",
    data_uri: str | None = "test.npz",
    calibration_uri: str | None = None,
    weights: str | None = "weights.safetensors",
    **extra: Any,
) -> dict[str, Any]:
    """A ModelService document for a digits model. ``source`` is the model URI (relative to the YAML file);
    ``data_uri``/``calibration_uri`` are relative to the YAML file too (None leaves them out).
    ``extra`` merges into the top level of ``spec`` (e.g. ``serving={...}``, ``conversion={...}`` to override)."""
    model: dict[str, Any] = {"uri": source, "format": format, "inputs": INPUTS, "outputs": OUTPUTS}
    if format == "pytorch":
        assert kind is not None
        model["architecture"] = f"model.py:{ARCHITECTURES[kind]}"
        if weights:
            model["weights"] = weights
    quantization: dict[str, Any] = {"method": method}
    if method == "static":
        quantization["calibration"] = {"uri": calibration_uri or "calib.npz", "samples": 128}
    verification: dict[str, Any] = {"tolerance": 0.01, "accuracyBudget": 0.01}
    if data_uri:
        verification["dataUri"] = data_uri
    conversion: dict[str, Any] = {
        "target": target,
        "precision": precision,
        "quantization": quantization,
        "verification": verification,
    }
    spec: dict[str, Any] = {"model": model, "conversion": conversion}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return {"apiVersion": "modelservice.dev/v1alpha1", "kind": "ModelService", "metadata": {"name": name}, "spec": spec}


def write_modelservice(path: Path, **kwargs: Any) -> Path:
    """Write ``modelservice(**kwargs)`` as YAML to ``path``. With the defaults and a source folder made by
    ``write_source(path.parent / SOURCE, ...)``, pass ``source=SOURCE`` and ``data_uri=SOURCE + "/test.npz"``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(modelservice(**kwargs), sort_keys=False), encoding="utf-8")
    return path


def write_example(folder: Path, kind: str = "cnn", **kwargs: Any) -> Path:
    """A complete local example: folder/src (model source) and folder/modelservice.yaml; returns the YAML path."""
    write_source(folder / "src", kind)
    kwargs.setdefault("name", "digits")
    kwargs.setdefault("data_uri", "src/test.npz")
    if kwargs.get("method") == "static":
        kwargs.setdefault("calibration_uri", "src/calib.npz")
    return write_modelservice(folder / "modelservice.yaml", source="src", kind=kind, **kwargs)
