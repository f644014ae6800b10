"""fp16 and int8 variants of an ONNX model (ONNX Runtime's tools), and a count of what really got quantized.

- fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 inputs/outputs kept, so
  the served signature does not change.
- int8 dynamic: ``quantize_dynamic`` (int8 weights; activations quantized at run time: MatMulInteger /
  DynamicQuantizeLinear).
- int8 static: ``quantize_static`` in QDQ format with activation ranges calibrated on the calibration data
  (uint8 activations, per-channel int8 weights).

Weights are quantized with ``reduce_range`` (7-bit range): on CPUs without VNNI, ONNX Runtime's u8s8 kernels
saturate 16-bit intermediate sums, which cost the benchmark encoder 2.2 pp of accuracy at 8 bits and nothing at
7 bits; the serving node's CPU is not known at conversion time, so the safe range is the default.

Before int8 quantization the graph goes through ``quant_pre_process`` (symbolic shape inference and ONNX
Runtime's basic graph optimizations: constant folding, redundant node removal), as ONNX Runtime recommends.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelservice.api.errors import UserError
from modelservice.convert import external
from modelservice.convert.tensors import Array, batch_count, batch_slice

INTEGER_OPS = {
    "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "QGemm", "QAttention",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QLinearAdd", "QLinearMul",
}  # fmt: skip
WEIGHTED_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU"}


@dataclass(frozen=True)
class QuantStats:
    """Weighted compute ops that run in int8 vs those left in float."""

    quantized_ops: int
    float_ops: int

    def as_dict(self) -> dict[str, int]:
        return {"quantizedOps": self.quantized_ops, "floatOps": self.float_ops}

    def describe(self) -> str:
        total = self.quantized_ops + self.float_ops
        return f"{self.quantized_ops} of {total} weighted operators quantized"


def count_quantized(path: Path) -> QuantStats:
    """Count int8 compute ops (integer kernels, or QDQ-wrapped weighted ops) and weighted ops left in float
    (a weighted op whose weight input is a float initializer or constant)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    quantized = floating = 0
    for node in graph.node:
        if node.op_type in INTEGER_OPS:
            quantized += 1
        elif node.op_type in WEIGHTED_OPS and len(node.input) > 1:
            if node.input[1] in dequantized:
                quantized += 1
            elif node.input[1] in constants:
                floating += 1
    return QuantStats(quantized, floating)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice through the root logger
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def prepare_for_quantization(source: Path, target: Path) -> str | None:
    """``quant_pre_process`` into ``target``; on failure copy the model and return why (a report note)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external.remove_model(target)
    try:
        with _quiet():
            quant_pre_process(
                str(source),
                str(target),
                skip_symbolic_shape=False,
                save_as_external_data=True,  # work files keep their weights outside the graph (external.py)
                all_tensors_to_one_file=True,
                external_data_location=external.data_path(target).name,
            )
        return None
    except Exception as exc:
        external.copy_model(source, target)
        return f"quantization pre-processing skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


def to_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with _quiet():
            model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        external.save_model(model, target)
    except Exception as exc:
        raise UserError(f"conversion.precision: fp16 conversion failed: {type(exc).__name__}: {exc}") from None


def quantize_int8_dynamic(prepared: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external.remove_model(target)
    try:
        with _quiet():
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                reduce_range=True,
                use_external_data_format=True,  # writes target.data (external.py)
            )
    except Exception as exc:
        raise UserError(
            f"conversion.quantization: int8 dynamic quantization failed: {type(exc).__name__}: {exc}"
        ) from None


class _CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over in-memory arrays, in batches."""

    def __init__(self, inputs: dict[str, Array], batch: int = 32) -> None:
        self._batches = [batch_slice(inputs, i, i + batch) for i in range(0, batch_count(inputs), batch)]
        self._index = 0

    def get_next(self) -> dict[str, Array] | None:
        if self._index >= len(self._batches):
            return None
        self._index += 1
        return self._batches[self._index - 1]

    def rewind(self) -> None:
        self._index = 0


# TensorRT's explicit quantization: symmetric int8 scales, and biases left in float (its DequantizeLinear takes
# int8, not the int32 biases ONNX Runtime's CPU recipe produces; TensorRT fuses the float bias itself).
_TENSORRT_QDQ = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}


def quantize_int8_static(
    prepared: Path, target: Path, calibration: dict[str, Array], *, symmetric: bool = False
) -> None:
    """QDQ int8. ``symmetric``: int8 activations and weights with zero points of 0, the full 8-bit range and
    float biases, the int8 TensorRT accepts (see ``_TENSORRT_QDQ``); otherwise ONNX Runtime's CPU
    recipe (uint8 activations, 7-bit weights, see the module)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(_CalibrationReader, CalibrationDataReader):  # type: ignore[misc]
        pass

    external.remove_model(target)
    try:
        with _quiet():
            quantize_static(
                str(prepared),
                str(target),
                Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=not symmetric,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                extra_options=_TENSORRT_QDQ if symmetric else None,
                use_external_data_format=True,  # writes target.data (external.py)
            )
    except Exception as exc:
        raise UserError(
            f"conversion.quantization: int8 static quantization failed: {type(exc).__name__}: {exc}"
        ) from None


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(Counter(node.op_type for node in graph.node).most_common())
