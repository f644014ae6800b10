"""config.pbtxt generation through Triton's ModelConfig protobuf: every platform parses back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2

from modelservice.api.models import ModelService, TensorSpec
from modelservice.convert.repository import (
    ConfigError,
    build_model_config,
    config_text,
    model_file_name,
    parse_config,
    read_config,
    tensor_specs,
    write_config,
)

INPUTS = [TensorSpec(name="image", dtype="FP32", shape=[1, 8, 8])]
OUTPUTS = [TensorSpec(name="logits", dtype="FP32", shape=[10])]


def make_ms(serving: dict[str, Any] | None = None, target: str = "onnx") -> ModelService:
    return ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "digits"},
            "spec": {
                "model": {
                    "uri": "model/",
                    "architecture": "model.py:DigitsNet",
                    "inputs": [i.to_api() for i in INPUTS],
                    "outputs": [o.to_api() for o in OUTPUTS],
                },
                "conversion": {"target": target},
                "serving": serving or {},
            },
        }
    )


GPU = {"resources": {"gpu": 1}, "instances": 2}
CASES = [
    ("onnx", {}, "platform", "onnxruntime_onnx"),
    ("onnx", GPU, "platform", "onnxruntime_onnx"),
    ("torchscript", {}, "platform", "pytorch_libtorch"),
    ("torchscript", GPU, "platform", "pytorch_libtorch"),
    ("tensorrt", GPU, "platform", "tensorrt_plan"),
    ("python", {}, "backend", "python"),
]


@pytest.mark.parametrize(("platform", "serving", "field", "value"), CASES)
def test_every_platform_round_trips_through_the_protobuf(
    tmp_path: Path, platform: str, serving: dict[str, Any], field: str, value: str
) -> None:
    target = "tensorrt" if platform == "tensorrt" else "onnx"
    ms = make_ms(serving, target=target)
    config = build_model_config(ms, platform=platform, inputs=INPUTS, outputs=OUTPUTS)
    path = tmp_path / "digits" / "config.pbtxt"
    write_config(config, path)
    text = path.read_text()
    # Parsed by Triton's own message, independently of our reader.
    parsed = model_config_pb2.ModelConfig()
    from google.protobuf import text_format

    text_format.Parse(text, parsed)
    assert parsed == config == read_config(path)
    assert getattr(parsed, field) == value
    assert parsed.name == "digits"
    assert parsed.max_batch_size == 32
    assert [(t.name, t.data_type, list(t.dims)) for t in parsed.input] == [
        ("image", model_config_pb2.TYPE_FP32, [1, 8, 8])
    ]
    assert [(t.name, list(t.dims)) for t in parsed.output] == [("logits", [10])]
    group = parsed.instance_group[0]
    gpu = bool(serving.get("resources", {}).get("gpu"))
    expected_kind = (
        model_config_pb2.ModelInstanceGroup.KIND_GPU if gpu else model_config_pb2.ModelInstanceGroup.KIND_CPU
    )
    assert group.kind == expected_kind
    assert group.count == serving.get("instances", 1)
    assert tensor_specs(parsed.input) == INPUTS


def test_dynamic_batching_follows_the_spec() -> None:
    ms = make_ms(
        {
            "maxBatchSize": 64,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 250, "preferredBatchSizes": [8, 16]},
        }
    )
    config = build_model_config(ms, platform="onnx", inputs=INPUTS, outputs=OUTPUTS)
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.max_batch_size == 64


def test_no_dynamic_batching_when_off_or_batching_disabled() -> None:
    off = build_model_config(make_ms({"dynamicBatching": None}), platform="onnx", inputs=INPUTS, outputs=OUTPUTS)
    assert not off.HasField("dynamic_batching")
    unbatched = build_model_config(make_ms({"maxBatchSize": 0}), platform="onnx", inputs=INPUTS, outputs=OUTPUTS)
    assert not unbatched.HasField("dynamic_batching")
    assert unbatched.max_batch_size == 0
    assert "dynamic_batching" not in config_text(unbatched)


def test_variable_dims_and_integer_dtypes() -> None:
    inputs = [
        TensorSpec(name="input_ids", dtype="INT64", shape=[-1]),
        TensorSpec(name="mask", dtype="BOOL", shape=[-1]),
    ]
    outputs = [TensorSpec(name="hidden", dtype="FP16", shape=[-1, 384])]
    config = build_model_config(make_ms(), platform="onnx", inputs=inputs, outputs=outputs)
    parsed = parse_config(config_text(config))
    assert list(parsed.input[0].dims) == [-1]
    assert parsed.input[0].data_type == model_config_pb2.TYPE_INT64
    assert parsed.input[1].data_type == model_config_pb2.TYPE_BOOL
    assert parsed.output[0].data_type == model_config_pb2.TYPE_FP16
    assert tensor_specs(parsed.output) == outputs


def test_text_is_deterministic() -> None:
    a = config_text(build_model_config(make_ms(), platform="onnx", inputs=INPUTS, outputs=OUTPUTS))
    b = config_text(build_model_config(make_ms(), platform="onnx", inputs=INPUTS, outputs=OUTPUTS))
    assert a == b
    assert a.startswith('name: "digits"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 32\n')


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text("old")
    write_config(build_model_config(make_ms(), platform="onnx", inputs=INPUTS, outputs=OUTPUTS), path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.pbtxt"]
    assert read_config(path).name == "digits"


def test_unknown_platform_and_bad_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown Triton platform 'openvino'"):
        build_model_config(make_ms(), platform="openvino", inputs=INPUTS, outputs=OUTPUTS)
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "x"\nmax_batch_sizes: 3\n')
    with pytest.raises(ConfigError, match=r"config.pbtxt: not a valid Triton model config"):
        read_config(bad)
    with pytest.raises(ConfigError, match="cannot read model config"):
        read_config(tmp_path / "missing.pbtxt")


def test_model_file_names() -> None:
    assert [model_file_name(p) for p in ("onnx", "torchscript", "tensorrt", "python")] == [
        "model.onnx",
        "model.pt",
        "model.plan",
        "model.py",
    ]
