"""Tensor specs, numpy dtypes and sample inputs shared by export, verification and measurement."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from modelservice.api.errors import UserError
from modelservice.api.models import TensorSpec

Array = npt.NDArray[Any]

NUMPY_DTYPES: dict[str, Any] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
# ONNX TensorProto element types -> API dtypes
ONNX_DTYPES = {
    1: "FP32", 10: "FP16", 16: "BF16", 11: "FP64", 3: "INT8", 5: "INT16", 6: "INT32", 7: "INT64", 2: "UINT8", 9: "BOOL",
}  # fmt: skip
VARIABLE_DIM = 8  # the size used for -1 dimensions in sample inputs


def numpy_dtype(spec: TensorSpec) -> Any:
    try:
        return NUMPY_DTYPES[spec.dtype]
    except KeyError:
        raise UserError(f"spec.model.inputs: {spec.name}: dtype {spec.dtype} is not supported for conversion") from None


def api_dtype(array: Any) -> str:
    """The API dtype of a numpy array or torch tensor's numpy dtype name."""
    name = str(getattr(array, "dtype", array)).replace("torch.", "")
    for api, np_type in NUMPY_DTYPES.items():
        if np.dtype(np_type).name == name:
            return api
    return "FP32"


def concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    return (batch, *(VARIABLE_DIM if dim == -1 else dim for dim in spec.shape))


def random_inputs(specs: list[TensorSpec], count: int, seed: int = 0) -> dict[str, Array]:
    """Seeded inputs within the declared shapes: floats uniform in [0, 1), integers in [0, 10), bools."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, Array] = {}
    for spec in specs:
        shape = concrete_shape(spec, count)
        dtype = numpy_dtype(spec)
        if np.issubdtype(dtype, np.floating):
            inputs[spec.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        elif dtype is np.bool_:
            inputs[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            inputs[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return inputs


def batch_slice(inputs: dict[str, Array], start: int, stop: int) -> dict[str, Array]:
    return {name: array[start:stop] for name, array in inputs.items()}


def batch_count(inputs: dict[str, Array]) -> int:
    return len(next(iter(inputs.values())))
