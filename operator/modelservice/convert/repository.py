"""Triton model configuration (config.pbtxt), built through Triton's own ModelConfig protobuf.

The protobuf is the one ``tritonclient`` ships (``tritonclient.grpc.model_config_pb2``), so every config
written here is checked field by field against the schema Triton itself parses; ``read_config`` parses
a config.pbtxt back with the same message (tests use it on every platform, also those that cannot load
on this CPU-only machine: TensorRT, ONNX Runtime, LibTorch, GPU instance groups).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

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


class TensorLike(Protocol):
    """A tensor of a config: a TensorSpec, or a ConfigTensor (which also takes BYTES)."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> list[int]: ...


@dataclass(frozen=True)
class ConfigTensor:
    """A config tensor the API's TensorSpec cannot express: ``dtype`` may be BYTES (Triton TYPE_STRING)."""

    name: str
    dtype: str
    shape: list[int]


def data_type(dtype: str) -> int:
    """Triton's TYPE_ enum value for an API dtype (FP32 -> TYPE_FP32; BYTES, the protocol's name for strings,
    -> TYPE_STRING)."""
    if dtype == "BYTES":
        dtype = "STRING"
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
    ms: ModelService,
    *,
    platform: str,
    inputs: Sequence[TensorLike],
    outputs: Sequence[TensorLike],
    name: str | None = None,
    cpu_only: bool = False,
) -> ModelConfig:
    """The ModelConfig Triton loads for ``ms`` served on ``platform`` (onnx, torchscript, tensorrt, python).

    ``inputs``/``outputs`` exclude the batch dimension (Triton adds it when max_batch_size > 0);
    -1 marks a variable dimension. Dynamic batching is configured only when the spec asks for it and
    batching is on (max_batch_size > 0); instances run on the GPU when the spec requests one, unless
    ``cpu_only`` (python steps such as a tokenizer). ``name`` defaults to the ModelService's name.
    """
    field_name, value, _ = _platform(platform)
    serving = ms.spec.serving
    config = model_config_pb2.ModelConfig(name=name or ms.name, max_batch_size=serving.max_batch_size)
    setattr(config, field_name, value)
    _add_tensors(config, inputs, outputs)
    batching = serving.dynamic_batching
    if batching is not None and serving.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
    kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    if serving.resources.gpu < 1 or cpu_only:
        kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=serving.instances, kind=kind)
    return config


def _add_tensors(config: ModelConfig, inputs: Sequence[TensorLike], outputs: Sequence[TensorLike]) -> None:
    for spec in inputs:
        config.input.add(name=spec.name, data_type=data_type(spec.dtype), dims=list(spec.shape))
    for spec in outputs:
        config.output.add(name=spec.name, data_type=data_type(spec.dtype), dims=list(spec.shape))


def set_parameters(config: ModelConfig, parameters: Mapping[str, str]) -> None:
    """Model parameters (``parameters { key: ... value { string_value: ... } }``), read by python models."""
    for key, value in parameters.items():
        config.parameters[key].string_value = value


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: ``inputs`` maps the step model's input names to ensemble tensors, ``outputs``
    its output names to ensemble tensors."""

    model: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)


def build_ensemble_config(
    name: str,
    *,
    max_batch_size: int,
    inputs: Sequence[TensorLike],
    outputs: Sequence[TensorLike],
    steps: Sequence[EnsembleStep],
) -> ModelConfig:
    """An ensemble (platform "ensemble"): no instances or batcher of its own; each step runs on its model's
    scheduler, so the steps' dynamic batchers still group requests. Every ensemble input must feed a step and
    every output be produced by one (ConfigError otherwise, as Triton would refuse to load it)."""
    config = model_config_pb2.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    _add_tensors(config, inputs, outputs)
    produced = {spec.name for spec in inputs}
    for step in steps:
        missing = sorted(set(step.inputs.values()) - produced)
        if missing:
            raise ConfigError(f"ensemble {name}: step {step.model} reads {', '.join(missing)} before any step makes it")
        produced |= set(step.outputs.values())
        item = config.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
        for key, value in step.inputs.items():
            item.input_map[key] = value
        for key, value in step.outputs.items():
            item.output_map[key] = value
    unmade = sorted({spec.name for spec in outputs} - produced)
    if unmade:
        raise ConfigError(f"ensemble {name}: no step produces output {', '.join(unmade)}")
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
