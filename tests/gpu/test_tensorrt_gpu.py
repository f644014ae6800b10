"""``target: tensorrt`` end to end: plans built by the real TensorRT builder on a real GPU, run by the TensorRT
runtime and verified against the original torch model on the digits test split.

These run only where an NVIDIA GPU and the TensorRT Python package exist (the GPU converter image); elsewhere
they are skipped, and tests/unit/test_convert_tensorrt.py covers the GPU-free half."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

import _digits
from modelservice.api.loader import load_one
from modelservice.convert.pipeline import ConvertOptions, convert
from modelservice.convert.report import Report
from modelservice.convert.repository import read_config


def _gpu_with_tensorrt() -> bool:
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _gpu_with_tensorrt(), reason="needs an NVIDIA GPU and the tensorrt package"),
]

GPU = {"resources": {"gpu": 1}, "maxBatchSize": 64}


def run(tmp_path: Path, kind: str = "mlp", **kwargs: Any) -> tuple[Report, Path]:
    yaml_path = _digits.write_example(tmp_path / "ex", kind, target="tensorrt", serving=GPU, **kwargs)
    out = tmp_path / "out"
    options = ConvertOptions(cache_dir=tmp_path / "cache", progress=False, measure_seconds=0.3)
    return convert(load_one(yaml_path), out, options), out


@pytest.mark.parametrize(
    ("kind", "precision", "method"),
    [("mlp", "fp32", "dynamic"), ("mlp", "fp16", "dynamic"), ("cnn", "int8", "static")],
)
def test_plan_is_built_verified_and_configured(tmp_path: Path, kind: str, precision: str, method: str) -> None:
    # half-precision logits move by about 0.01 (as TorchScript fp16 does on the CPU): verify fp16 at 0.05
    tolerance = 0.05 if precision == "fp16" else 0.01
    verification = {"tolerance": tolerance, "accuracyBudget": 0.01, "dataUri": "src/test.npz"}
    report, out = run(tmp_path, kind, precision=precision, method=method, conversion={"verification": verification})
    data = json.loads((out / "report.json").read_text())
    plan = out / "digits" / "1" / "model.plan"
    assert plan.is_file() and plan.stat().st_size > 0
    config = read_config(out / "digits" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 64
    assert data["artifact"]["format"] == "tensorrt" and data["artifact"]["precision"] == precision
    assert data["verification"]["passed"] is True
    assert data["verification"]["referenceAccuracy"] - data["verification"]["accuracy"] <= 0.01
    assert data["tensorrt"]["computeCapability"] and data["tensorrt"]["version"]
    assert data["tensorrt"]["profile"]["image"] == {"min": [1, 1, 8, 8], "opt": [32, 1, 8, 8], "max": [64, 1, 8, 8]}
    assert report.data["cacheHit"] is False


def test_auto_measures_plans_and_a_repeat_is_a_cache_hit(tmp_path: Path) -> None:
    report, out = run(tmp_path, "cnn", precision="auto", method="static")
    data = report.data
    names = [c["name"] for c in data["candidates"]]
    assert names == ["fp32", "fp16", "int8-static"]
    assert all("batch32" in c.get("latencyMs", {}) for c in data["candidates"] if c["passed"])
    assert data["chosen"]["name"] in names
    again = convert(
        load_one(tmp_path / "ex" / "modelservice.yaml"),
        tmp_path / "out2",
        ConvertOptions(cache_dir=tmp_path / "cache", progress=False, measure_seconds=0.3),
    )
    assert again.data["cacheHit"] is True
    assert (tmp_path / "out2" / "digits" / "1" / "model.plan").read_bytes() == (
        out / "digits" / "1" / "model.plan"
    ).read_bytes()
