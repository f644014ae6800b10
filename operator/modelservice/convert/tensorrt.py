"""TensorRT plans built from the ONNX variants, where an NVIDIA GPU and TensorRT exist.

Precision lives in the graph, not in builder flags: the network is strongly typed (the ``STRONGLY_TYPED``
creation flag, required for this on TensorRT 10.x and implied on 11.x, which removed the weak-typing flags
``FP16``/``INT8``). So the fp16 variant is the ONNX graph converted to float16 (float32 inputs and outputs kept),
and int8 is explicit quantization: the calibrated Q/DQ graph, quantized symmetrically (zero points 0, int8
activations), the only int8 TensorRT accepts. Dynamic int8 (``DynamicQuantizeLinear``/``MatMulInteger``) has no
TensorRT form and is refused.

One optimization profile covers batches 1..``serving.maxBatchSize`` and is tuned for the batch the spec serves
most (``opt``); every other dimension must be fixed, because a plan is specialised to them.

A plan runs only on GPUs of the compute capability it was built on, with the TensorRT version that built it:
the report records both, and Triton must be the release that ships that TensorRT. Plans are not byte-for-byte
reproducible (the builder times kernels); the conversion cache keyed on the settings and the GPU makes a
repeated conversion a no-op instead.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelservice.api.errors import UserError
from modelservice.api.models import TensorSpec
from modelservice.convert.tensors import Array
from modelservice.convert.verify import Runner

FIELD = "spec.conversion.target"
WORKSPACE_BYTES = 4 << 30  # ceiling for the builder's scratch memory; TensorRT uses less when it can


def tensorrt_missing() -> list[str]:
    """What this machine lacks to build a TensorRT plan (empty when it can)."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("an NVIDIA GPU with CUDA (torch.cuda.is_available() is False)")
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the TensorRT Python package (pip install tensorrt)")
    return missing


def require_tensorrt() -> None:
    """A UserError naming what is missing, unless this machine can build plans."""
    missing = tensorrt_missing()
    if len(missing) == 2:
        raise UserError(
            f"{FIELD}: tensorrt needs {' and '.join(missing)}; this machine has neither, use target onnx here "
            "(the operator runs tensorrt conversions on GPU nodes)"
        )
    if missing:
        raise UserError(f"{FIELD}: tensorrt needs {missing[0]}")


def identity() -> dict[str, str] | None:
    """TensorRT version and GPU a plan built here is tied to (None where plans cannot be built)."""
    if tensorrt_missing():
        return None
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {
        "version": str(trt.__version__),
        "device": torch.cuda.get_device_name(),
        "computeCapability": f"{major}.{minor}",
    }


# ----------------------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class Profile:
    """Shapes (batch dimension first) one optimization profile accepts for one input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def optimization_profile(specs: list[TensorSpec], max_batch: int, opt_batch: int) -> list[Profile]:
    """Batches 1..``max_batch`` (tuned for ``opt_batch``) of ``specs``, whose other dimensions must be fixed."""
    if max_batch < 1:
        raise UserError(
            "spec.serving.maxBatchSize: target tensorrt builds a plan for batches 1..maxBatchSize; set it to 1 or more"
        )
    opt = max(1, min(opt_batch, max_batch))
    profiles = []
    for index, spec in enumerate(specs):
        if any(dim < 1 for dim in spec.shape):
            raise UserError(
                f"spec.model.inputs[{index}].shape: {list(spec.shape)} has a variable dimension; a TensorRT plan "
                "needs every dimension but the batch fixed"
            )
        dims = tuple(spec.shape)
        profiles.append(Profile(spec.name, (1, *dims), (opt, *dims), (max_batch, *dims)))
    return profiles


# -------------------------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    plan: Path
    messages: list[str] = field(default_factory=list)  # the builder's warnings and errors, for the report


def _logger(messages: list[str]) -> Any:
    import tensorrt as trt

    severity = trt.ILogger.Severity
    kept = {severity.INTERNAL_ERROR: "INTERNAL_ERROR", severity.ERROR: "ERROR", severity.WARNING: "WARNING"}

    class Collector(trt.ILogger):  # type: ignore[misc]
        """Keeps warnings and errors (the parser's and the builder's) to name them in the report or the error."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            name = kept.get(severity)
            if name is not None:
                messages.append(f"{name}: {msg.strip()}")

    return Collector()


def _parser_errors(parser: Any) -> list[str]:
    errors = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        where = ""
        try:
            if error.node_operator():
                where = f" (operator {error.node_operator()}, node {error.node_name() or error.node()})"
        except (AttributeError, RuntimeError):
            pass
        errors.append(f"{error.desc()}{where}")
    return errors


def build_plan(onnx_path: Path, plan_path: Path, profiles: list[Profile]) -> BuildResult:
    """Parse ``onnx_path`` into a strongly typed network and serialize a plan to ``plan_path`` (atomically)."""
    import tensorrt as trt

    messages: list[str] = []
    logger = _logger(messages)
    try:
        builder = trt.Builder(logger)  # raises (a null factory result) when CUDA cannot be initialised
    except (TypeError, RuntimeError) as exc:
        builder = None
        messages.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if builder is None:
        raise UserError(f"{FIELD}: TensorRT cannot start a builder: {'; '.join(messages[-3:]) or 'no CUDA device'}")
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser) or messages
        raise UserError(f"{FIELD}: TensorRT cannot parse the ONNX model: {'; '.join(errors[:3])}")
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    declared = {p.name for p in profiles}
    if names != declared:
        raise UserError(
            f"spec.model.inputs: the ONNX model's inputs {sorted(names)} differ from the declared {sorted(declared)}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = [m for m in messages if not m.startswith("WARNING")] or messages
        raise UserError(f"{FIELD}: TensorRT failed to build the plan: {'; '.join(errors[-3:]) or 'no reason given'}")
    _write_atomic(plan_path, memoryview(serialized))
    return BuildResult(plan_path, messages)


def _write_atomic(path: Path, data: memoryview) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------------- run


def plan_runner(plan_path: Path, output_names: list[str]) -> Runner:
    """Run a plan on the GPU: numpy batches in, numpy outputs out (in ``output_names`` order when given)."""
    import tensorrt as trt
    import torch

    messages: list[str] = []
    runtime = trt.Runtime(_logger(messages))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise UserError(f"{FIELD}: TensorRT cannot load the plan it built: {'; '.join(messages[-3:])}")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if output_names and sorted(output_names) == sorted(outputs):
        outputs = list(output_names)
    dtypes = {n: _torch_dtype(engine.get_tensor_dtype(n)) for n in outputs}
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def run(batch: dict[str, Array]) -> list[Array]:
        results = []
        with torch.cuda.stream(stream):
            keep = []  # device inputs stay alive until the engine has run
            for name in inputs:
                tensor = torch.from_numpy(np.ascontiguousarray(batch[name])).to("cuda", non_blocking=False)
                keep.append(tensor)
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            for name in outputs:
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtypes[name], device="cuda")
                context.set_tensor_address(name, out.data_ptr())
                results.append(out)
            if not context.execute_async_v3(stream.cuda_stream):
                raise UserError(f"{FIELD}: the TensorRT plan failed to run: {'; '.join(messages[-3:])}")
        stream.synchronize()
        return [r.cpu().numpy() for r in results]

    return run


def _torch_dtype(trt_dtype: Any) -> Any:
    import tensorrt as trt
    import torch

    table = {
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "int32": torch.int32,
        "int64": torch.int64,
        "int8": torch.int8,
        "uint8": torch.uint8,
        "bool": torch.bool,
    }
    for name, dtype in table.items():
        if getattr(trt, name, None) == trt_dtype:
            return dtype
    raise UserError(f"{FIELD}: the plan has an output of type {trt_dtype}, which this converter cannot read back")
