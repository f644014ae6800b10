"""Build, verify and (for ``precision: auto``) measure the ONNX variants of a model, and pick one.

``auto`` builds fp32, fp16, int8 dynamic and (with calibration data) int8 static, verifies each, measures the
ones that pass with ONNX Runtime (1 thread, interleaved rounds, median) at batch 1 and at the serving batch
size, and picks the fastest at the serving batch size. A variant other than fp32 must beat fp32 by at least
``SPEEDUP_MARGIN`` there and must not be slower than fp32 at batch 1 beyond the same margin, so ``auto`` never
picks a variant slower than fp32 (for tiny CNNs, int8 is slower and fp32 wins).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelservice.api.errors import UserError
from modelservice.api.models import ModelService
from modelservice.convert.external import copy_model, model_size
from modelservice.convert.measure import interleaved_latency
from modelservice.convert.progress import Progress
from modelservice.convert.quantize import (
    QuantStats,
    count_quantized,
    prepare_for_quantization,
    quantize_int8_dynamic,
    quantize_int8_static,
    to_fp16,
)
from modelservice.convert.tensors import Array, batch_slice
from modelservice.convert.verify import Check, Runner, check_against_spec, ort_runner, run_batched

SPEEDUP_MARGIN = 0.05
VERIFY_BATCH = 64


@dataclass
class Variant:
    name: str  # fp32, fp16, int8-dynamic, int8-static
    precision: str
    method: str | None
    path: Path
    build_seconds: float = 0.0
    stats: QuantStats | None = None
    check: Check | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""
    fp32_bytes: int = 0

    @property
    def passed(self) -> bool:
        return self.check is not None and self.check.passed and not self.note.startswith("not quantized")

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "precision": self.precision,
            "sizeBytes": model_size(self.path),
            "buildSeconds": round(self.build_seconds, 3),
            "passed": self.passed,
        }
        if self.method:
            entry["method"] = self.method
        if self.fp32_bytes:
            entry["sizeRatio"] = round(entry["sizeBytes"] / self.fp32_bytes, 4)
        if self.stats is not None:
            entry.update(self.stats.as_dict())
        if self.check is not None:
            entry["verification"] = self.check.as_status()
            if self.check.problems:
                entry["problems"] = self.check.problems
        if self.latency_ms:
            entry["latencyMs"] = {k: round(v, 4) for k, v in self.latency_ms.items()}
        if self.note:
            entry["note"] = self.note
        return entry


@dataclass
class VariantInputs:
    """What building and checking variants needs."""

    fp32: Path
    workdir: Path
    verify_inputs: dict[str, Array]
    labels: Array | None
    reference: list[Array]
    calibration: dict[str, Array] | None


def requested_variants(
    ms: ModelService, has_calibration: bool, *, tensorrt: bool = False
) -> list[tuple[str, str, str | None]]:
    """(name, precision, method) of the variants to build for the spec's precision. TensorRT takes int8 only
    as calibrated Q/DQ (explicit quantization), so for it ``auto`` has no int8 dynamic candidate."""
    conversion = ms.spec.conversion
    if conversion.precision == "fp32":
        return [("fp32", "fp32", None)]
    if conversion.precision == "fp16":
        return [("fp16", "fp16", None)]
    if conversion.precision == "int8":
        method = conversion.quantization.method
        return [(f"int8-{method}", "int8", method)]
    variants: list[tuple[str, str, str | None]] = [
        ("fp32", "fp32", None),
        ("fp16", "fp16", None),
    ]
    if not tensorrt:
        variants.append(("int8-dynamic", "int8", "dynamic"))
    if has_calibration:
        variants.append(("int8-static", "int8", "static"))
    return variants


def build_variant(
    name: str,
    precision: str,
    method: str | None,
    inputs: VariantInputs,
    progress: Progress,
    *,
    symmetric: bool = False,
) -> Variant:
    """The ONNX file of one variant; ``symmetric`` int8 (zero points 0, int8 activations) is what TensorRT
    takes."""
    started = time.perf_counter()
    path = inputs.workdir / f"{name}.onnx"
    variant = Variant(name, precision, method, path)
    if precision == "fp32":
        copy_model(inputs.fp32, path)
    elif precision == "fp16":
        progress.step("quantize", "fp16: converting float tensors to float16 (inputs/outputs stay float32)")
        to_fp16(inputs.fp32, path)
    else:
        prepared = inputs.workdir / "prepared.onnx"
        if not prepared.exists():
            note = prepare_for_quantization(inputs.fp32, prepared)
            if note:
                progress.step("quantize", note)
        if method == "static":
            if inputs.calibration is None:
                raise UserError("conversion.quantization.calibration: required for int8 static quantization")
            kind = "symmetric int8 for TensorRT" if symmetric else "QDQ"
            progress.step("quantize", f"int8 static ({kind}): calibrating activation ranges")
            quantize_int8_static(prepared, path, inputs.calibration, symmetric=symmetric)
        else:
            progress.step("quantize", "int8 dynamic: quantizing weights")
            quantize_int8_dynamic(prepared, path)
        variant.stats = count_quantized(path)
        baseline = count_quantized(inputs.fp32)
        if variant.stats.quantized_ops == 0:
            variant.note = (
                f"not quantized: none of the {baseline.float_ops} weighted operators became int8 "
                "(no MatMul/Gemm/Conv with constant weights the quantizer accepts)"
            )
        elif variant.stats.float_ops:
            variant.note = f"partly quantized: {variant.stats.describe()}"
        progress.step("quantize", f"{name}: {variant.stats.describe()}")
    variant.build_seconds = time.perf_counter() - started
    variant.fp32_bytes = model_size(inputs.fp32)
    return variant


def verify_variant(
    variant: Variant, inputs: VariantInputs, ms: ModelService, runner: Runner | None = None, batch: int = VERIFY_BATCH
) -> None:
    """Check ``variant`` against the reference outputs, run by ``runner`` (default: ONNX Runtime on its file)."""
    verification = ms.spec.conversion.verification
    outputs = run_batched(runner or ort_runner(variant.path), inputs.verify_inputs, batch)
    variant.check = check_against_spec(
        inputs.reference, outputs, inputs.labels, precision=variant.precision, spec=verification
    )


def serving_batch(ms: ModelService) -> int:
    return max(1, min(ms.spec.serving.max_batch_size, 32))


def measure(
    variants: list[Variant],
    inputs: VariantInputs,
    batch: int,
    budget_s: float = 2.0,
    runners: dict[str, Runner] | None = None,
) -> None:
    """Median latency at batch 1 and ``batch`` of every variant (interleaved), run by ``runners`` (by variant
    name; default: ONNX Runtime on each variant's file)."""
    from modelservice.convert.tensors import batch_count

    available = batch_count(inputs.verify_inputs)
    if runners is None:
        runners = {v.name: ort_runner(v.path) for v in variants}
    for size in sorted({1, batch}):
        sample = batch_slice(inputs.verify_inputs, 0, size)
        if available < size:  # few verification samples: repeat them to fill the batch
            import numpy as np

            reps = -(-size // available)
            sample = {k: np.concatenate([v] * reps)[:size] for k, v in inputs.verify_inputs.items()}
        for name, ms_value in interleaved_latency(runners, sample, budget_s=budget_s).items():
            next(v for v in variants if v.name == name).latency_ms[f"batch{size}"] = ms_value


def choose(variants: list[Variant], batch: int) -> tuple[Variant, str]:
    """The fastest passing variant at the serving batch size that beats fp32 by the margin (see module)."""
    fp32 = next(v for v in variants if v.name == "fp32")
    key = f"batch{batch}"
    base, base1 = fp32.latency_ms[key], fp32.latency_ms["batch1"]
    best, reason = fp32, f"fp32: {base:.3f} ms at batch {batch}"
    reasons: list[str] = []
    for variant in variants:
        if variant is fp32:
            continue
        if not variant.passed:
            why = (
                variant.note
                if variant.note.startswith(("not quantized", "not built")) or variant.check is None
                else "; ".join(variant.check.problems)
            )
            reasons.append(f"{variant.name} rejected ({why or 'failed verification'})")
            continue
        latency, latency1 = variant.latency_ms[key], variant.latency_ms["batch1"]
        speedup = base / latency if latency else 0.0
        if latency > base * (1 - SPEEDUP_MARGIN) or latency1 > base1 * (1 + SPEEDUP_MARGIN):
            reasons.append(f"{variant.name} not faster ({latency:.3f} ms at batch {batch}, {speedup:.2f}x fp32)")
            continue
        reasons.append(f"{variant.name} {speedup:.2f}x fp32 at batch {batch}")
        if latency < best.latency_ms[key]:
            best = variant
    if best is not fp32:
        reason = (
            f"{best.name} is the fastest variant within the accuracy budget: "
            f"{best.latency_ms[key]:.3f} ms vs fp32 {base:.3f} ms at batch {batch}"
        )
    else:
        reason = (
            f"fp32 kept: no variant within the accuracy budget was faster by {100 * SPEEDUP_MARGIN:.0f}% ({reason})"
        )
    return best, "; ".join([reason, *reasons])
