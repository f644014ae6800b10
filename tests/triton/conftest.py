"""Real tritonserver on loopback, shared by the tests of this folder (one Triton per session).

The repository holds three digits models, each produced from a ModelService through the convert pipeline and
then made runnable for the local Triton (the wheel's Triton has only the python backend):
- digits-cnn: CNN -> ONNX fp32, maxBatchSize 16, dynamic batching (queue delay 20 ms, preferred sizes 4 and 8)
- digits-mlp: MLP -> ONNX fp32, maxBatchSize 8, dynamic batching off
- digits-ts:  CNN -> TorchScript fp32, maxBatchSize 8
- digits-ts16: MLP -> TorchScript fp16 (float32 I/O), maxBatchSize 8, a GPU ModelService run on the CPU here
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import _digits
from _serving import MODELS, RunningTriton, convert_digits
from modelservice.serve.pybackend import make_runnable
from modelservice.serve.triton import TritonProcess, find_tritonserver


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
