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

The per-channel int8 of fused transformers (convert/fusion.py, ``int8-fused-*``) is the exception: on a CPU with
VNNI (AVX512-VNNI, AVX-VNNI: int32 accumulation, no saturation) 7-bit weights cost all-MiniLM-L6-v2 what 8-bit
ones do not (min cosine 0.958 vs 0.980 with every node quantized, dynamic, sequence 128), and u8u8 kernels, which
never saturate, gained 1.22x over the fused fp32 graph where u8s8 gained 1.67x (2 threads, AMD EPYC with
AVX512-VNNI). So ``fused_weight_range`` gives 8-bit weights where the converting CPU has VNNI and says so in the
variant's notes: such an artifact is verified for VNNI CPUs, and a node without VNNI may lose accuracy to
saturation. Without VNNI it keeps 7 bits.

Before int8 quantization the graph goes through ``quant_pre_process`` (symbolic shape inference and ONNX
Runtime's basic graph optimizations: constant folding, redundant node removal), as ONNX Runtime recommends.
ONNX Runtime's symbolic shape inference fails on some exports: opset 18+ reductions take their axes as an
input it does not read (``ReduceL2`` of an L2-normalised embedding ends as ``TypeError: object of type
'NoneType' has no len()`` at the next Expand), and dynamic sequence lengths of the TorchScript exporter's BERT
graph stay unresolved ("Incomplete symbolic shape inference"). Pre-processing is then retried without it
(ONNX's own shape inference and the graph optimizations still run), and the variant's notes say so; the fused
graph of convert/fusion.py, whose operators it knows, passes.
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


def prepare_for_quantization(source: Path, target: Path) -> list[str]:
    """``quant_pre_process`` into ``target``, retried without symbolic shape inference when that fails (see
    module); when both fail the model is copied as is. Returns what happened for the report (nothing when the
    first attempt succeeded), including the graph optimization failures ``quant_pre_process`` only logs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = source.resolve(), target.resolve()  # the working directory changes meanwhile
    notes: list[str] = []
    for skip_symbolic in (False, True):
        external.remove_model(target)
        try:
            # contextlib.chdir: on an incomplete inference ONNX Runtime saves sym_shape_infer_temp.onnx and its
            # data into the working directory; they land beside the target, in the conversion's work folder.
            logged = _logged_errors("onnxruntime.quantization.shape_inference")
            with _quiet(), contextlib.chdir(target.parent), logged as errors:
                quant_pre_process(
                    str(source),
                    str(target),
                    skip_symbolic_shape=skip_symbolic,
                    save_as_external_data=True,  # work files keep their weights outside the graph (external.py)
                    all_tensors_to_one_file=True,
                    external_data_location=external.data_path(target).name,
                )
            if errors:
                failed = f"ONNX Runtime's graph optimization failed and was skipped ({errors[-1]})"
                notes.append(f"quantization pre-processing: {failed}")
            if skip_symbolic:
                notes.append("quantization pre-processing ran without symbolic shape inference")
            return notes
        except Exception as exc:
            what = "symbolic shape inference" if not skip_symbolic else "pre-processing without it"
            notes.append(f"quantization pre-processing: {what} failed ({_one_line(exc)})")
    external.copy_model(source, target)
    notes.append("quantization pre-processing skipped: the model is quantized as exported")
    return notes


@contextlib.contextmanager
def _logged_errors(name: str) -> Iterator[list[str]]:
    """The last line of each ERROR record ``name``'s logger emits meanwhile (ONNX Runtime reports some failures
    only there)."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines = [line.strip() for line in record.getMessage().strip().splitlines() if line.strip()]
            if lines:  # the end of a traceback's last line says what failed
                found.append(lines[-1] if len(lines[-1]) <= 200 else "..." + lines[-1][-200:])

    handler = Collect(logging.ERROR)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def fused_weight_range() -> tuple[bool, str]:
    """``reduce_range`` for the per-channel int8 of fused transformers, and why (see module)."""
    vnni = cpu_vnni()
    if vnni:
        return False, (
            f"int8 weights use the full 8-bit range: this CPU has {vnni} (no saturation); on a CPU without "
            "VNNI, ONNX Runtime's u8s8 kernels may saturate and lose accuracy this check did not see"
        )
    return True, "int8 weights use a 7-bit range (reduce_range): this CPU has no VNNI, whose absence saturates u8s8"


def cpu_vnni() -> str | None:
    """The VNNI flag of this (Linux x86) CPU, if any."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("flags")
            ),
            [],
        )
    except OSError:
        return None
    return next((flag for flag in ("avx512_vnni", "avx_vnni", "amx_int8") if flag in flags), None)


def to_fp16(source: Path, target: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with _quiet():
            # The path, not a loaded model: the converter then infers shapes with infer_shapes_path, which reads
            # the graph only; given a ModelProto it serializes the whole model (fails past 2 GiB, and peaked at
            # 5.5x the model's size where 1.7x is enough).
            model = convert_float_to_float16(str(source), keep_io_types=True)
        external.save_model(model, target)
    except Exception as exc:
        raise UserError(f"conversion.precision: fp16 conversion failed: {type(exc).__name__}: {exc}") from None


def quantize_int8_dynamic(
    prepared: Path,
    target: Path,
    *,
    per_channel: bool = False,
    reduce_range: bool = True,
    exclude: tuple[str, ...] = (),
) -> None:
    """Dynamic int8 (int8 weights, uint8 activations quantized at run time); ``exclude`` names nodes left in
    float. ``DefaultTensorType`` lets the quantizer handle outputs of com.microsoft operators (fused graphs),
    whose types ONNX shape inference does not know."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external.remove_model(target)
    try:
        with _quiet():
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
                nodes_to_exclude=list(exclude),
                use_external_data_format=True,  # writes target.data (external.py)
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
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
    prepared: Path,
    target: Path,
    calibration: dict[str, Array],
    *,
    symmetric: bool = False,
    reduce_range: bool | None = None,
    exclude: tuple[str, ...] = (),
) -> None:
    """QDQ int8. ``symmetric``: int8 activations and weights with zero points of 0, the full 8-bit range and
    float biases, the int8 TensorRT accepts (see ``_TENSORRT_QDQ``); otherwise ONNX Runtime's CPU
    recipe (uint8 activations, 7-bit weights unless ``reduce_range`` says otherwise, see the module).
    ``exclude`` names nodes left in float."""
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
                reduce_range=(not symmetric) if reduce_range is None else reduce_range,
                nodes_to_exclude=list(exclude),
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
