"""The TensorRT target's GPU-free half, run for real on this CPU: the spec rules it enforces before any
download, the optimization profile, and the symmetric int8 Q/DQ graph it hands to TensorRT (checked with ONNX
and ONNX Runtime). Building and running plans needs a GPU: tests/gpu/test_tensorrt_gpu.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import _digits
from modelservice.api.errors import UserError
from modelservice.api.loader import load_one
from modelservice.api.models import ModelService, TensorSpec
from modelservice.convert.export import export_onnx
from modelservice.convert.load import load_model, run_torch
from modelservice.convert.pipeline import ConvertOptions, convert
from modelservice.convert.progress import Progress
from modelservice.convert.tensorrt import optimization_profile
from modelservice.convert.variants import VariantInputs, build_variant, requested_variants, verify_variant
from modelservice.convert.verify import ort_runner, run_batched


def spec(shape: list[int], name: str = "image") -> list[TensorSpec]:
    return [TensorSpec(name=name, dtype="FP32", shape=shape)]


def test_profile_spans_batch_one_to_max_and_is_tuned_for_the_serving_batch() -> None:
    (profile,) = optimization_profile(spec([1, 8, 8]), max_batch=64, opt_batch=32)
    assert profile.name == "image"
    assert (profile.min, profile.opt, profile.max) == ((1, 1, 8, 8), (32, 1, 8, 8), (64, 1, 8, 8))
    (small,) = optimization_profile(spec([10]), max_batch=4, opt_batch=32)
    assert small.opt == (4, 10) and small.max == (4, 10)


def test_profile_refuses_unbatched_serving_and_variable_dimensions() -> None:
    with pytest.raises(UserError, match=r"^spec.serving.maxBatchSize: target tensorrt builds a plan for batches"):
        optimization_profile(spec([10]), max_batch=0, opt_batch=1)
    with pytest.raises(UserError, match=r"^spec.model.inputs\[1\].shape: \[-1, 64\] has a variable dimension"):
        optimization_profile([*spec([3]), *spec([-1, 64], "tokens")], max_batch=8, opt_batch=8)


def test_auto_for_tensorrt_has_no_dynamic_int8_candidate() -> None:
    ms = ModelService.model_validate(
        _digits.modelservice(
            name="d", source="src", target="tensorrt", precision="auto", serving={"resources": {"gpu": 1}}
        )
    )
    assert [n for n, _, _ in requested_variants(ms, True, tensorrt=True)] == ["fp32", "fp16", "int8-static"]
    assert [n for n, _, _ in requested_variants(ms, False, tensorrt=True)] == ["fp32", "fp16"]
    assert "int8-dynamic" in [n for n, _, _ in requested_variants(ms, True)]


def tensorrt_yaml(tmp_path: Path, **kwargs: Any) -> Path:
    """A tensorrt ModelService whose source does not exist: a rule checked before the download fires first."""
    kwargs.setdefault("serving", {"resources": {"gpu": 1}})
    return _digits.write_modelservice(
        tmp_path / "ms.yaml", name="digits", source="no-such-folder", kind="mlp", target="tensorrt", **kwargs
    )


def convert_error(yaml_path: Path, out: Path) -> str:
    with pytest.raises(UserError) as info:
        convert(load_one(yaml_path), out, ConvertOptions(cache_dir=out.parent / "cache", progress=False))
    assert not out.exists()
    return str(info.value)


def test_dynamic_int8_for_tensorrt_is_refused_before_anything_is_fetched(tmp_path: Path) -> None:
    message = convert_error(tensorrt_yaml(tmp_path, precision="int8", method="dynamic"), tmp_path / "out")
    assert message.startswith("spec.conversion.quantization.method: TensorRT runs int8 only from calibrated Q/DQ")


def test_unbatched_tensorrt_is_refused_before_anything_is_fetched(tmp_path: Path) -> None:
    serving = {"resources": {"gpu": 1}, "maxBatchSize": 0}
    message = convert_error(tensorrt_yaml(tmp_path, serving=serving), tmp_path / "out")
    assert message.startswith("spec.serving.maxBatchSize: target tensorrt builds a plan")


def test_without_gpu_the_error_comes_before_the_download(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    message = convert_error(tensorrt_yaml(tmp_path), tmp_path / "out")
    assert message.startswith("spec.conversion.target: tensorrt needs an NVIDIA GPU with CUDA")
    assert "no-such-folder" not in message


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_int8_for_tensorrt_is_symmetric_qdq_and_stays_within_the_budget(tmp_path: Path, kind: str) -> None:
    """What TensorRT's explicit quantization takes: every Q/DQ pair int8 with zero points of 0, biases in float,
    every weighted operator fed by a DequantizeLinear. Its arithmetic, simulated in float by ONNX Runtime with the
    graph unfused, stays within the accuracy budget of the original. (Fused into this CPU's int8 kernels, whose
    16-bit sums saturate without VNNI, the full-range MLP loses more: that is a CPU artefact, not the graph's.)"""
    folder = _digits.write_source(tmp_path / "src", kind)
    ms = ModelService.model_validate(
        _digits.modelservice(
            name="digits",
            source="src",
            kind=kind,
            target="tensorrt",
            precision="int8",
            method="static",
            serving={"resources": {"gpu": 1}},
        )
    )
    model = load_model(ms.spec.model, folder)
    fp32 = tmp_path / "exported.onnx"
    export_onnx(model, fp32, ms.spec.conversion.opset)
    split = _digits.load_split()
    x, y = split.x_test, split.y_test
    reference = run_batched(lambda batch: run_torch(model.module, batch, model.inputs), {"image": x}, 64)
    calibration = {"image": split.x_train[:256]}
    inputs = VariantInputs(fp32, tmp_path, {"image": x}, y, reference, calibration)

    variant = build_variant("int8-static", "int8", "static", inputs, Progress(False), symmetric=True)

    graph = onnx.load(str(variant.path)).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8, node.name  # no int32 bias: TensorRT dequantizes int8 only
        assert not zero_point.any(), node.name
    assert variant.stats is not None and variant.stats.quantized_ops > 0 and variant.stats.float_ops == 0
    verify_variant(variant, inputs, ms, runner=ort_runner(variant.path, optimize=False))
    assert variant.check is not None and variant.check.passed, variant.check.problems
    assert variant.check.accuracy is not None and variant.check.reference_accuracy is not None
    assert variant.check.reference_accuracy - variant.check.accuracy <= 0.01


# ------------------------------------------------------------------ build_plan against a stand-in TensorRT
# TensorRT cannot run without a GPU. This stand-in implements the few documented Python API calls build_plan
# makes (Builder, strongly typed network, OnnxParser.parse_from_file, optimization profile, serialization), so
# the control flow around them (flags, profile shapes, error messages, the atomic write) runs here; the real
# builder runs in tests/gpu.


class _Enum:
    def __init__(self, **members: int) -> None:
        self.__dict__.update(members)


def fake_tensorrt(*, parse_ok: bool = True, inputs: tuple[str, ...] = ("image",), plan: bytes | None = b"PLAN") -> Any:
    import types

    calls: dict[str, Any] = {"shapes": {}}
    trt = types.ModuleType("tensorrt")

    class ILogger:
        Severity = _Enum(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            pass

    class Tensor:
        def __init__(self, name: str) -> None:
            self.name = name

    class Network:
        def __init__(self, flags: int) -> None:
            calls["flags"] = flags
            self.num_inputs = len(inputs)

        def get_input(self, index: int) -> Tensor:
            return Tensor(inputs[index])

    class ParserError:
        def desc(self) -> str:
            return "UNSUPPORTED_NODE: no importer for op Einsum"

        def node_operator(self) -> str:
            return "Einsum"

        def node_name(self) -> str:
            return "/net/Einsum"

        def node(self) -> int:
            return 3

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path: str) -> bool:
            calls["onnx"] = path
            return parse_ok

        def get_error(self, index: int) -> ParserError:
            return ParserError()

    class Profile:
        def set_shape(self, name: str, low: tuple[int, ...], opt: tuple[int, ...], high: tuple[int, ...]) -> None:
            calls["shapes"][name] = (low, opt, high)

    class Config:
        def set_memory_pool_limit(self, pool: int, limit: int) -> None:
            calls["workspace"] = limit

        def add_optimization_profile(self, profile: Profile) -> None:
            calls["profiles"] = calls.get("profiles", 0) + 1

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            if plan is None:
                self.logger.log(ILogger.Severity.ERROR, "no implementation obeys the type constraints")
            return plan

    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = OnnxParser  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=5)  # type: ignore[attr-defined]
    trt.MemoryPoolType = _Enum(WORKSPACE=0)  # type: ignore[attr-defined]
    trt.calls = calls  # type: ignore[attr-defined]
    return trt


def test_build_plan_makes_a_strongly_typed_network_with_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelservice.convert.tensorrt import WORKSPACE_BYTES, build_plan

    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    profiles = optimization_profile(spec([1, 8, 8]), max_batch=16, opt_batch=8)
    result = build_plan(tmp_path / "m.onnx", tmp_path / "plans" / "m.plan", profiles)
    assert result.plan.read_bytes() == b"PLAN" and [p.name for p in result.plan.parent.iterdir()] == ["m.plan"]
    assert trt.calls["flags"] == 1 << 5 and trt.calls["workspace"] == WORKSPACE_BYTES and trt.calls["profiles"] == 1
    assert trt.calls["shapes"] == {"image": ((1, 1, 8, 8), (8, 1, 8, 8), (16, 1, 8, 8))}


def test_build_plan_errors_are_one_line_and_name_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelservice.convert.tensorrt import build_plan

    profiles = optimization_profile(spec([1, 8, 8]), max_batch=16, opt_batch=8)
    cases = [
        (fake_tensorrt(parse_ok=False), r"^spec.conversion.target: TensorRT cannot parse the ONNX model: "
         r"UNSUPPORTED_NODE: no importer for op Einsum \(operator Einsum, node /net/Einsum\)$"),
        (fake_tensorrt(inputs=("x",)), r"^spec.model.inputs: the ONNX model's inputs \['x'\] differ from the "
         r"declared \['image'\]$"),
        (fake_tensorrt(plan=None), r"^spec.conversion.target: TensorRT failed to build the plan: "
         r"ERROR: no implementation obeys the type constraints$"),
    ]  # fmt: skip
    for trt, pattern in cases:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        with pytest.raises(UserError, match=pattern):
            build_plan(tmp_path / "m.onnx", tmp_path / "out" / "m.plan", profiles)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ----------------------------------------------- the tensorrt target's orchestration, with TensorRT stood in
# The builder is the stand-in above; the "engine" runs the variant's ONNX graph in ONNX Runtime with the graph
# unfused (simulated quantization). What runs for real: export, the fp16 and symmetric int8 graphs, verification
# against torch, measuring, the auto choice, the repository and the report.


@pytest.fixture
def stand_in_tensorrt(monkeypatch: pytest.MonkeyPatch) -> Any:
    from modelservice.convert import tensorrt

    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt, "tensorrt_missing", lambda: [])
    identity = {"version": "11.4.0-stand-in", "device": "stand-in GPU", "computeCapability": "9.0"}
    monkeypatch.setattr(tensorrt, "identity", lambda: identity)
    monkeypatch.setattr(
        tensorrt, "plan_runner", lambda plan, outputs: ort_runner(plan.with_suffix(".onnx"), optimize=False)
    )
    return trt


@pytest.mark.slow
def test_tensorrt_target_auto_builds_verifies_measures_and_writes_a_plan_repository(
    tmp_path: Path, stand_in_tensorrt: Any
) -> None:
    from modelservice.convert.repository import read_config

    yaml_path = _digits.write_example(
        tmp_path / "ex", "mlp", target="tensorrt", precision="auto", method="static",
        serving={"resources": {"gpu": 1}, "maxBatchSize": 16},
    )  # fmt: skip
    options = ConvertOptions(cache_dir=tmp_path / "cache", progress=False, measure_seconds=0.2)
    report = convert(load_one(yaml_path), tmp_path / "out", options)
    data = report.data

    assert [c["name"] for c in data["candidates"]] == ["fp32", "fp16", "int8-static"]
    assert all(c["passed"] and set(c["latencyMs"]) == {"batch1", "batch16"} for c in data["candidates"])
    assert data["candidates"][0]["sizeRatio"] == 1.0  # plan sizes compare with the fp32 plan
    assert data["chosen"]["name"] in ("fp32", "fp16", "int8-static")
    assert stand_in_tensorrt.calls["shapes"] == {"image": ((1, 1, 8, 8), (16, 1, 8, 8), (16, 1, 8, 8))}
    assert data["tensorrt"]["profile"]["image"] == {"min": [1, 1, 8, 8], "opt": [16, 1, 8, 8], "max": [16, 1, 8, 8]}
    assert any("runs only with TensorRT 11.4.0-stand-in on GPUs of compute capability 9.0" in n for n in data["notes"])
    plan = tmp_path / "out" / "digits" / "1" / "model.plan"
    assert plan.read_bytes() == b"PLAN"
    config = read_config(tmp_path / "out" / "digits" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert data["artifact"]["format"] == "tensorrt" and data["verification"]["passed"] is True

    again = convert(load_one(yaml_path), tmp_path / "out2", options)
    assert again.data["cacheHit"] is True and (tmp_path / "out2" / "digits" / "1" / "model.plan").is_file()


@pytest.mark.slow
def test_tensorrt_target_int8_is_the_symmetric_graph_and_reports_it(tmp_path: Path, stand_in_tensorrt: Any) -> None:
    yaml_path = _digits.write_example(
        tmp_path / "ex", "cnn", target="tensorrt", precision="int8", method="static",
        serving={"resources": {"gpu": 1}},
    )  # fmt: skip
    report = convert(load_one(yaml_path), tmp_path / "out", ConvertOptions(cache_dir=tmp_path / "c", progress=False))
    data = report.data
    assert data["chosen"]["name"] == "int8-static" and data["artifact"]["precision"] == "int8"
    (candidate,) = data["candidates"]
    assert candidate["quantizedOps"] > 0 and candidate["floatOps"] == 0
    accuracy, reference = data["verification"]["accuracy"], data["verification"]["referenceAccuracy"]
    assert reference - accuracy <= 0.01
