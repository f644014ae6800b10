"""Triton model configuration (config.pbtxt), built through Triton's own ModelConfig protobuf.

The protobuf is the one ``tritonclient`` ships (``tritonclient.grpc.model_config_pb2``), so every config
written here is checked field by field against the schema Triton itself parses; ``read_config`` parses
a config.pbtxt back with the same message (tests use it on every platform, also those that cannot load
on this CPU-only machine: TensorRT, ONNX Runtime, LibTorch, GPU instance groups).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from modelservice.api.errors import UserError
from modelservice.api.models import ModelService, TensorSpec

# The protobuf message class; typed as Any because tritonclient ships no type stubs.
ModelConfig = Any

Platform = Literal["onnx", "torchscript", "tensorrt", "python"]

# platform -> (config field, value, default model file name inside the version folder)
PLATFORMS: dict[str, tuple[str, str, str]] = {
    "onnx": ("platform", "onnxruntime_onnx", "model.onnx"),
    "torchscript": ("platform", "pytorch_libtorch", "model.pt"),
    "tensorrt": ("platform", "tensorrt_plan", "model.plan"),
    "python": ("backend", "python", "model.py"),
}

CONFIG_FILE = "config.pbtxt"


class ConfigError(UserError):
    """A config.pbtxt that cannot be read or parsed."""


def model_file_name(platform: str) -> str:
    """The file Triton loads from ``<model>/<version>/`` for a platform (model.onnx, model.pt, ...)."""
    return _platform(platform)[2]


def data_type(dtype: str) -> int:
    """Triton's TYPE_ enum value for an API dtype (FP32 -> TYPE_FP32)."""
    try:
        value: int = model_config_pb2.DataType.Value(f"TYPE_{dtype}")
    except ValueError:
        raise ConfigError(f"unsupported tensor dtype {dtype!r}") from None
    return value


def dtype_name(value: int) -> str:
    """The API dtype for a TYPE_ enum value (TYPE_FP32 -> FP32)."""
    name: str = model_config_pb2.DataType.Name(value)
    return name.removeprefix("TYPE_")


def _platform(platform: str) -> tuple[str, str, str]:
    try:
        return PLATFORMS[platform]
    except KeyError:
        known = ", ".join(PLATFORMS)
        raise ConfigError(f"unknown Triton platform {platform!r} (one of {known})") from None


def build_model_config(
    ms: ModelService, *, platform: str, inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> ModelConfig:
    """The ModelConfig Triton loads for ``ms`` served on ``platform`` (onnx, torchscript, tensorrt, python).

    ``inputs``/``outputs`` exclude the batch dimension (Triton adds it when max_batch_size > 0);
    -1 marks a variable dimension. Dynamic batching is configured only when the spec asks for it and
    batching is on (max_batch_size > 0); instances run on the GPU when the spec requests one.
    """
    field, value, _ = _platform(platform)
    serving = ms.spec.serving
    config = model_config_pb2.ModelConfig(name=ms.name, max_batch_size=serving.max_batch_size)
    setattr(config, field, value)
    for spec in inputs:
        config.input.add(name=spec.name, data_type=data_type(spec.dtype), dims=list(spec.shape))
    for spec in outputs:
        config.output.add(name=spec.name, data_type=data_type(spec.dtype), dims=list(spec.shape))
    batching = serving.dynamic_batching
    if batching is not None and serving.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
    kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    if serving.resources.gpu < 1:
        kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=serving.instances, kind=kind)
    return config


def config_text(config: ModelConfig) -> str:
    """Deterministic protobuf text format of a config (the bytes of config.pbtxt)."""
    text: str = text_format.MessageToString(config, as_utf8=True)
    return text


def write_config(config: ModelConfig, path: Path) -> None:
    """Write ``config`` as text protobuf to ``path`` atomically (temp file beside it, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(config_text(config))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_config(text: str, source: str = CONFIG_FILE) -> ModelConfig:
    """Parse config.pbtxt text with Triton's ModelConfig protobuf; ConfigError names ``source``."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a valid Triton model config: {exc}") from None
    return config


def read_config(path: Path | str) -> ModelConfig:
    """Read and parse a config.pbtxt."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read model config: {exc.strerror or exc}") from None
    return parse_config(text, str(path))


def tensor_specs(tensors: Any) -> list[TensorSpec]:
    """TensorSpecs (without batch dimension) from a config's repeated input/output field."""
    return [TensorSpec(name=t.name, dtype=dtype_name(t.data_type), shape=list(t.dims)) for t in tensors]
