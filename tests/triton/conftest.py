"""Real tritonserver on loopback, shared by the tests of this folder (one Triton per session).

The repository holds three digits models, each produced from a ModelService through the convert pipeline and
then made runnable for the local Triton (the wheel's Triton has only the python backend):
- digits-cnn: CNN -> ONNX fp32, maxBatchSize 16, dynamic batching (queue delay 20 ms, preferred sizes 4 and 8)
- digits-mlp: MLP -> ONNX fp32, maxBatchSize 8, dynamic batching off
- digits-ts:  CNN -> TorchScript fp32, maxBatchSize 8
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _digits  # first: keeps tests/triton from shadowing the name "triton" for torch
from modelservice.api.loader import LoadedModelService, load_one
from modelservice.serve.pybackend import make_runnable
from modelservice.serve.triton import TritonProcess, find_tritonserver


@dataclass(frozen=True)
class DigitsModel:
    name: str
    kind: str
    target: str
    serving: dict[str, Any]


MODELS = [
    DigitsModel(
        "digits-cnn",
        "cnn",
        "onnx",
        {"maxBatchSize": 16, "dynamicBatching": {"maxQueueDelayMicroseconds": 20000, "preferredBatchSizes": [4, 8]}},
    ),
    DigitsModel("digits-mlp", "mlp", "onnx", {"maxBatchSize": 8, "dynamicBatching": None}),
    DigitsModel("digits-ts", "cnn", "torchscript", {"maxBatchSize": 8}),
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
        data_uri="src/test.npz",
        serving=model.serving,
    )
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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def converted_repository(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """One repository with every model of MODELS, each converted by the pipeline."""
    merged = tmp_path_factory.mktemp("converted")
    for model in MODELS:
        out = convert_digits(tmp_path_factory.mktemp(model.name), model, cache_dir)
        shutil.copytree(out / model.name, merged / model.name)
    return merged


@pytest.fixture(scope="session")
def triton(
    tmp_path_factory: pytest.TempPathFactory, converted_repository: Path, cache_dir: Path
) -> Iterator[RunningTriton]:
    install = find_tritonserver()
    root = tmp_path_factory.mktemp("triton")
    repository = root / "repository"
    make_runnable(converted_repository, repository, install)
    process = TritonProcess(repository=repository, log_path=root / "triton.log", install=install, cache_dir=cache_dir)
    with process:
        yield RunningTriton(process, repository)


@pytest.fixture(scope="session")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    split = _digits.load_split()
    return split.x_test, split.y_test


def torch_logits(kind: str, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out: np.ndarray = _digits.train(kind)(torch.from_numpy(x)).numpy()
    return out


def model_named(name: str) -> DigitsModel:
    return next(m for m in MODELS if m.name == name)
