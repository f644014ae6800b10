"""Verify a converted model against the original on the same inputs.

Inputs: the labelled ``conversion.verification.dataUri`` (.npz with ``x``, or one array per input name, and
optional labels ``y``), else seeded random inputs within the declared shapes. Both models run in batches.

Measures: ``maxAbsError`` (largest absolute difference over all outputs), ``maxRelError`` (that difference
relative to the largest absolute reference value, so values near zero do not blow it up), and, when the first
output is a [batch, classes] score, top-1 ``accuracy`` against the labels (or, without labels, top-1 agreement
with the original).

The rule without ``verification.metric`` (the default for models that are not ``format: huggingface``): fp32
and fp16 must stay within ``tolerance`` (absolute) and lose at most ``accuracyBudget`` accuracy; int8 is judged
on ``accuracyBudget`` alone (its logits move by more than a tight absolute tolerance while the decisions stay
the same), except for models without class scores, which fall back to ``tolerance``.

With a metric (the default for huggingface models follows the task, see ``default_metric``):
- ``cosine``: the minimum, over the samples, of the cosine similarity between the original's and the
  candidate's first output (flattened per sample) must reach ``minCosine``, whatever the precision: the measure
  of an embedding, where the argmax of a vector means nothing;
- ``accuracy`` (needs labels) and ``top1`` (agreement with the original's top-1 class; for per-token logits,
  over every token): the budget bounds the drop; fp32/fp16 must also stay within ``tolerance``;
- ``maxAbsError``: ``tolerance`` bounds the largest absolute difference, at every precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelservice.api.errors import UserError
from modelservice.api.models import Metric, TensorSpec, Verification
from modelservice.convert.tensors import Array, batch_count, batch_slice, numpy_dtype, random_inputs

Runner = Callable[[dict[str, Array]], list[Array]]
RANDOM_SAMPLES = 64


@dataclass
class VerifyData:
    inputs: dict[str, Array]
    labels: Array | None
    description: str


@dataclass
class Check:
    """Verification of one candidate against the reference outputs."""

    max_abs_error: float
    max_rel_error: float
    accuracy: float | None
    reference_accuracy: float | None
    agreement: float | None
    passed: bool
    problems: list[str] = field(default_factory=list)
    metric: str | None = None
    min_cosine: float | None = None

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "maxAbsError": round(self.max_abs_error, 6),
            "maxRelError": round(self.max_rel_error, 6),
            "passed": self.passed,
        }
        if self.accuracy is not None:
            status["accuracy"] = round(self.accuracy, 6)
        if self.reference_accuracy is not None:
            status["referenceAccuracy"] = round(self.reference_accuracy, 6)
        if self.agreement is not None:
            status["top1Agreement"] = round(self.agreement, 6)
        if self.min_cosine is not None:
            status["minCosine"] = round(self.min_cosine, 6)
        if self.metric is not None:
            status["metric"] = self.metric
        return status


def load_npz(
    path: Path, specs: list[TensorSpec], *, field_name: str, samples: int
) -> tuple[dict[str, Array], Array | None]:
    """Inputs (``x`` or one array per input name) and labels (``y``, optional) from an .npz, never unpickling."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:
        raise UserError(f"{field_name}: {path.name}: refused: {exc}") from None
    except Exception as exc:
        raise UserError(f"{field_name}: {path.name}: not a readable .npz file: {type(exc).__name__}: {exc}") from None
    inputs: dict[str, Array] = {}
    for index, spec in enumerate(specs):
        if spec.name in arrays:
            array = arrays[spec.name]
        elif index == 0 and "x" in arrays:
            array = arrays["x"]
        elif index == 0 and len(specs) == 1 and arrays:
            array = next(v for k, v in arrays.items() if k != "y")
        else:
            raise UserError(f"{field_name}: {path.name}: no array for input {spec.name!r} (found {', '.join(arrays)})")
        expected = list(spec.shape)
        actual = list(array.shape[1:])
        if len(actual) != len(expected) or any(e not in (-1, a) for e, a in zip(expected, actual, strict=True)):
            raise UserError(
                f"{field_name}: {path.name}: {spec.name} has shape {actual} per sample, "
                f"spec.model.inputs declares {expected}"
            )
        inputs[spec.name] = np.ascontiguousarray(array[:samples]).astype(numpy_dtype(spec), copy=False)
    labels = arrays.get("y")
    if labels is not None:
        labels = labels[:samples]
        if len(labels) != batch_count(inputs):
            raise UserError(f"{field_name}: {path.name}: y has {len(labels)} labels for {batch_count(inputs)} inputs")
    return inputs, labels


def random_data(specs: list[TensorSpec], samples: int) -> VerifyData:
    count = min(samples, RANDOM_SAMPLES)
    return VerifyData(random_inputs(specs, count, seed=0), None, f"seeded random inputs ({count} samples)")


def run_batched(runner: Runner, inputs: dict[str, Array], batch: int) -> list[Array]:
    outputs: list[list[Array]] = []
    for start in range(0, batch_count(inputs), batch):
        outputs.append(runner(batch_slice(inputs, start, start + batch)))
    return [np.concatenate([chunk[i] for chunk in outputs]) for i in range(len(outputs[0]))]


def ort_runner(path: Path, threads: int = 1, *, optimize: bool = True, step: str = "verify") -> Runner:
    """ONNX Runtime on the CPU. ``optimize=False`` keeps the graph as written: Q/DQ pairs then run as quantize-
    dequantize in float (simulated quantization, the arithmetic of an exact int32-accumulating engine such as
    TensorRT) instead of being fused into CPU int8 kernels, whose 16-bit intermediate sums saturate on CPUs
    without VNNI."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph/... types: one line, never a traceback
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UserError(f"conversion ({step}): ONNX Runtime refuses {path.name}: {first}") from None
    names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, Array]) -> list[Array]:
        return [np.asarray(o) for o in session.run(None, {name: inputs[name] for name in names})]

    return run


def _top1(array: Array, per_token: bool = False) -> Array | None:
    if per_token and array.ndim == 3 and array.shape[2] > 1:
        tokens: Array = array.argmax(axis=2).reshape(-1)
        return tokens
    return array.argmax(axis=1) if array.ndim == 2 and array.shape[1] > 1 else None


def min_cosine(reference: Array, candidate: Array) -> float:
    """The lowest cosine similarity between matching samples (each flattened)."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(out, axis=1) == 0)
    cosine = np.where(both_zero, 1.0, np.where(norms > 0, cosine, 0.0))
    return float(cosine.min()) if len(cosine) else 1.0


def default_metric(task: str | None, has_labels: bool) -> Metric | None:
    """The metric a task is judged by when the spec names none (None: the rule for plain models)."""
    if task in ("sentence-embedding", "feature-extraction"):
        return "cosine"
    if task in ("text-classification", "image-classification"):
        return "accuracy" if has_labels else "top1"
    if task == "token-classification":
        return "top1"
    return None


def compare(
    reference: list[Array],
    candidate: list[Array],
    labels: Array | None,
    *,
    precision: str,
    tolerance: float,
    budget: float,
    metric: str | None = None,
    cosine_floor: float = 0.99,
) -> Check:
    """Errors and accuracies of ``candidate`` against ``reference``, and whether it passes (see module docs)."""
    if len(reference) != len(candidate):
        raise UserError(
            f"spec.model.outputs: the original has {len(reference)} outputs, the converted {len(candidate)}"
        )
    max_abs = 0.0
    scale = 0.0
    finite = True
    for ref, out in zip(reference, candidate, strict=True):
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        finite = finite and bool(np.isfinite(out64).all())
        if ref64.shape != out64.shape:
            raise UserError(f"spec.model.outputs: output shape changed from {ref.shape} to {out.shape} in conversion")
        if ref64.size:
            max_abs = max(max_abs, float(np.abs(ref64 - out64).max()))
            scale = max(scale, float(np.abs(ref64).max()))
    max_rel = max_abs / scale if scale > 0 else max_abs
    if metric == "accuracy" and labels is None:
        raise UserError("spec.conversion.verification.metric: accuracy needs labels (y in the .npz, label in .jsonl)")
    per_token = metric == "top1"
    ref_top = out_top = None
    if metric in (None, "accuracy", "top1"):  # an embedding's argmax means nothing
        ref_top, out_top = _top1(reference[0], per_token), _top1(candidate[0], per_token)
    if metric == "top1":
        labels = None
    accuracy = reference_accuracy = agreement = None
    drop: float | None = None
    if ref_top is not None and out_top is not None:
        agreement = float((ref_top == out_top).mean())
        if labels is not None:
            accuracy = float((out_top == labels).mean())
            reference_accuracy = float((ref_top == labels).mean())
            drop = reference_accuracy - accuracy
        else:
            drop = 1.0 - agreement
    problems: list[str] = []
    if not finite:
        problems.append("the converted model produced NaN or infinite values")
    cosine = min_cosine(reference[0], candidate[0]) if reference[0].size else None
    if metric in ("top1", "accuracy") and drop is None:
        raise UserError(f"spec.conversion.verification.metric: {metric} needs class scores as the first output")
    if metric == "cosine":
        assert cosine is not None
        if cosine < cosine_floor:
            problems.append(f"min cosine similarity {cosine:.8f} to the original is below minCosine {cosine_floor}")
    elif (metric == "maxAbsError" or precision != "int8" or drop is None) and max_abs > tolerance:
        problems.append(f"max abs error {max_abs:.4g} exceeds tolerance {tolerance:g}")
    if metric in (None, "accuracy", "top1") and drop is not None and drop > budget + 1e-12:
        what = "accuracy" if labels is not None else "top-1 agreement with the original"
        problems.append(f"{what} drops by {100 * drop:.2f} pp, more than accuracyBudget {100 * budget:.2f} pp")
    check = Check(max_abs, max_rel, accuracy, reference_accuracy, agreement, not problems, problems, metric)
    check.min_cosine = cosine if metric == "cosine" else None
    return check


def check_against_spec(
    reference: list[Array],
    candidate: list[Array],
    labels: Array | None,
    *,
    precision: str,
    spec: Verification,
) -> Check:
    """``compare`` with the spec's tolerance and budget; with ``enabled: false`` the figures are measured and
    reported, but the check is not enforced."""
    check = compare(
        reference,
        candidate,
        labels,
        precision=precision,
        tolerance=spec.tolerance,
        budget=spec.accuracy_budget,
        metric=spec.metric,
        cosine_floor=spec.min_cosine,
    )
    if not spec.enabled:
        check.passed = True
    return check
