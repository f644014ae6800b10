"""Build, verify and (for ``precision: auto``) measure the ONNX variants of a model, and pick one.

``auto`` builds fp32, fp16, int8 dynamic and (with calibration data) int8 static, verifies each, measures the
ones that pass with ONNX Runtime (interleaved rounds, median) at batch 1 and at the serving batch size, and
picks the fastest at the serving batch size. A variant other than fp32 must beat fp32 by at least
``SPEEDUP_MARGIN`` there and must not be slower than fp32 at batch 1 beyond the same margin, so ``auto`` never
picks a variant slower than fp32 (for tiny CNNs, int8 is slower and fp32 wins).

Transformers that ONNX Runtime's transformer optimizer covers (convert/fusion.py) get three candidates built on
the fused graph instead of the unfused int8 ones: ``fp32-fused``, ``int8-fused-dynamic`` and
``int8-fused-static`` (per-channel int8 weights; the static one calibrated on
spec.conversion.quantization.calibration, else on the verification inputs). The unfused graph's per-tensor int8
is not built for them: on all-MiniLM-L6-v2 it reached a min cosine of 0.76-0.92 (always rejected, 4 s spent),
where the fused per-channel int8 quantizes the same operators better. A fused int8 variant that misses the
accuracy budget is rebuilt with its most sensitive nodes left in float (convert/exclusion.py), and the notes say
which. ``precision: int8`` on such a model builds the fused int8 of the requested method.

Measurement threads: ``VariantInputs.threads``, the serving pod's CPU request rounded up and capped at this
machine's CPUs (``serving_threads``; 1 by default, as before). Triton's ONNX Runtime backend sets no thread
count, so a pod uses up to what its CPU share gives it; the request is what it is guaranteed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelservice.api.errors import UserError
from modelservice.api.models import ModelService
from modelservice.convert import exclusion
from modelservice.convert.external import copy_model, model_size
from modelservice.convert.fusion import FusionResult, fuse, fusion_model_type
from modelservice.convert.load import TransformerInfo
from modelservice.convert.measure import interleaved_latency
from modelservice.convert.progress import Progress
from modelservice.convert.quantize import (
    QuantStats,
    count_quantized,
    fused_weight_range,
    prepare_for_quantization,
    quantize_int8_dynamic,
    quantize_int8_static,
    to_fp16,
)
from modelservice.convert.tensors import Array, batch_slice
from modelservice.convert.verify import Check, Runner, check_against_spec, ort_runner, run_batched

SPEEDUP_MARGIN = 0.05
VERIFY_BATCH = 64
FUSED = "-fused"  # in the names of the variants built on the fused graph


@dataclass
class Variant:
    name: str  # fp32, fp16, int8-dynamic, int8-static, fp32-fused, int8-fused-dynamic, int8-fused-static
    precision: str
    method: str | None
    path: Path
    build_seconds: float = 0.0
    stats: QuantStats | None = None
    check: Check | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""
    fp32_bytes: int = 0
    notes: list[str] = field(default_factory=list)  # how it was built: pre-processing, fusion, exclusions
    excluded: tuple[str, ...] = ()  # nodes left in float

    @property
    def passed(self) -> bool:
        return self.check is not None and self.check.passed and not self.note.startswith(("not quantized", "not built"))

    @property
    def fused(self) -> bool:
        return FUSED in self.name

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
        if self.notes:
            entry["notes"] = list(self.notes)
        if self.excluded:
            entry["excludedNodes"] = list(self.excluded)
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
    transformer: TransformerInfo | None = None  # format huggingface: what the fusion needs
    threads: int = 1  # ONNX Runtime threads when measuring (see module)
    # Built once per conversion, on demand: the fused graph, pre-processed graphs, the sensitivity ranking.
    _fusion: FusionResult | None = field(default=None, init=False, repr=False)
    _prepared: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _ranking: exclusion.Ranking | None = field(default=None, init=False, repr=False)
    _dynamic_excluded: tuple[str, ...] | None = field(default=None, init=False, repr=False)

    @property
    def fusion(self) -> bool:
        """Whether the fused variants apply (the fusion covers the model type)."""
        return fusion_model_type(self.transformer) is not None


def requested_variants(
    ms: ModelService, has_calibration: bool, *, tensorrt: bool = False, fusion: bool = False
) -> list[tuple[str, str, str | None]]:
    """(name, precision, method) of the variants to build for the spec's precision. TensorRT takes int8 only
    as calibrated Q/DQ (explicit quantization), so for it ``auto`` has no int8 dynamic candidate, and it does
    not run the fused graph's com.microsoft operators. ``fusion``: the model has fused variants (see module)."""
    conversion = ms.spec.conversion
    fused = fusion and not tensorrt
    if conversion.precision == "fp32":
        return [("fp32", "fp32", None)]
    if conversion.precision == "fp16":
        return [("fp16", "fp16", None)]
    if conversion.precision == "int8":
        method = conversion.quantization.method
        return [(f"int8{FUSED if fused else ''}-{method}", "int8", method)]
    variants: list[tuple[str, str, str | None]] = [
        ("fp32", "fp32", None),
        ("fp16", "fp16", None),
    ]
    if fused:  # the fused int8 variants replace the unfused ones (see module)
        return [
            *variants,
            (f"fp32{FUSED}", "fp32", None),
            (f"int8{FUSED}-dynamic", "int8", "dynamic"),
            (f"int8{FUSED}-static", "int8", "static"),
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
    source = inputs.fp32
    if variant.fused:
        source = _fused_graph(variant, inputs, progress)
    if variant.note.startswith("not built"):
        copy_model(inputs.fp32, path)  # a file for the report's size; never verified, measured or chosen
    elif precision == "fp32":
        copy_model(source, path)
    elif precision == "fp16":
        progress.step("quantize", "fp16: converting float tensors to float16 (inputs/outputs stay float32)")
        to_fp16(inputs.fp32, path)
    else:
        prepared = _prepared(source, variant, inputs, progress)
        if variant.fused:
            if method == "dynamic":
                _quantize_fused(variant, prepared, inputs, ())
            else:
                excluded = inputs._dynamic_excluded or ()
                if excluded:
                    variant.notes.append(f"started without the {len(excluded)} nodes int8-fused-dynamic left in float")
                _quantize_fused(variant, prepared, inputs, excluded)
        elif method == "static":
            if inputs.calibration is None:
                raise UserError("conversion.quantization.calibration: required for int8 static quantization")
            kind = "symmetric int8 for TensorRT" if symmetric else "QDQ"
            progress.step("quantize", f"int8 static ({kind}): calibrating activation ranges")
            quantize_int8_static(prepared, path, inputs.calibration, symmetric=symmetric)
        else:
            progress.step("quantize", "int8 dynamic: quantizing weights")
            quantize_int8_dynamic(prepared, path)
        _count(variant, inputs)
        progress.step("quantize", f"{name}: {variant.stats.describe() if variant.stats else ''}")
    variant.build_seconds = time.perf_counter() - started
    variant.fp32_bytes = model_size(inputs.fp32)
    return variant


def _count(variant: Variant, inputs: VariantInputs) -> None:
    variant.stats = count_quantized(variant.path)
    baseline = count_quantized(inputs.fp32)
    variant.note = ""
    if variant.stats.quantized_ops == 0:
        variant.note = (
            f"not quantized: none of the {baseline.float_ops} weighted operators became int8 "
            "(no MatMul/Gemm/Conv with constant weights the quantizer accepts)"
        )
    elif variant.stats.float_ops:
        variant.note = f"partly quantized: {variant.stats.describe()}"


def _fused_graph(variant: Variant, inputs: VariantInputs, progress: Progress) -> Path:
    """The fused fp32 graph (built once). When nothing fused, fp32-fused is not built (it would be fp32) and
    the fused int8 variants quantize the unfused graph, per channel, as their notes say."""
    fused = inputs.workdir / "fused.onnx"
    if inputs._fusion is None:
        assert inputs.transformer is not None
        progress.step(
            "convert", f"fusing transformer operators (ONNX Runtime, model_type {inputs.transformer.model_type})"
        )
        inputs._fusion = fuse(inputs.fp32, fused, inputs.transformer)
        progress.step("convert", inputs._fusion.describe())
    variant.notes.append(inputs._fusion.describe())
    if inputs._fusion.any:
        return fused
    if variant.precision == "fp32":
        variant.note = f"not built: {inputs._fusion.describe()}"
    else:
        variant.notes.append("quantized the unfused graph")
    return inputs.fp32


def _prepared(source: Path, variant: Variant, inputs: VariantInputs, progress: Progress) -> Path:
    """``quant_pre_process`` of ``source`` (once per source); its notes go to every variant built on it."""
    prepared = inputs.workdir / ("prepared-fused.onnx" if source != inputs.fp32 else "prepared.onnx")
    if prepared.name not in inputs._prepared:
        inputs._prepared[prepared.name] = prepare_for_quantization(source, prepared)
        for note in inputs._prepared[prepared.name]:
            progress.step("quantize", note)
    variant.notes += inputs._prepared[prepared.name]
    return prepared


def _quantize_fused(variant: Variant, prepared: Path, inputs: VariantInputs, excluded: tuple[str, ...]) -> None:
    """Per-channel int8 of the (fused) graph, without ``excluded``; notes the weight range once."""
    reduce_range, why = fused_weight_range()
    if why not in variant.notes:
        variant.notes.append(why)
    variant.excluded = excluded
    if variant.method == "dynamic":
        quantize_int8_dynamic(prepared, variant.path, per_channel=True, reduce_range=reduce_range, exclude=excluded)
        return
    calibration = inputs.calibration
    if calibration is None:
        calibration = inputs.verify_inputs
        note = "calibrated on the verification inputs (no spec.conversion.quantization.calibration)"
        if note not in variant.notes:
            variant.notes.append(note)
    quantize_int8_static(prepared, variant.path, calibration, reduce_range=reduce_range, exclude=excluded)


def verify_variant(
    variant: Variant,
    inputs: VariantInputs,
    ms: ModelService,
    runner: Runner | None = None,
    batch: int = VERIFY_BATCH,
    *,
    progress: Progress | None = None,
) -> None:
    """Check ``variant`` against the reference outputs, run by ``runner`` (default: ONNX Runtime on its file).
    A fused int8 variant that fails is rebuilt without its most sensitive nodes (see module)."""
    if variant.note.startswith("not built"):
        return
    verification = ms.spec.conversion.verification
    outputs = run_batched(runner or ort_runner(variant.path), inputs.verify_inputs, batch)
    variant.check = check_against_spec(
        inputs.reference, outputs, inputs.labels, precision=variant.precision, spec=verification
    )
    if variant.fused and variant.precision == "int8" and runner is None and not variant.check.passed:
        started = time.perf_counter()
        _exclude_sensitive(variant, inputs, ms, progress or Progress(False))
        variant.build_seconds += time.perf_counter() - started
    if variant.fused and variant.method == "dynamic" and variant.passed:
        inputs._dynamic_excluded = variant.excluded


def _exclude_sensitive(variant: Variant, inputs: VariantInputs, ms: ModelService, progress: Progress) -> None:
    """Rebuild ``variant`` without the nodes the simulation ranks worst until it passes (convert/exclusion.py).
    The dynamic variant searches from one node up; the static one (slow to build) gets one more try, from twice
    what it started without."""
    verification = ms.spec.conversion.verification
    failed = "; ".join(variant.check.problems) if variant.check else ""
    progress.step("quantize", f"{variant.name} failed verification ({failed}): ranking nodes by simulated error")
    ranking = _ranking(variant, inputs)
    if ranking is None:
        variant.notes.append("no node could be simulated: nothing excluded")
        return
    prepared = inputs.workdir / ("prepared-fused.onnx" if inputs._fusion and inputs._fusion.any else "prepared.onnx")
    total = len(ranking.nodes)

    def passes(outputs: list[Array]) -> bool:
        return check_against_spec(inputs.reference, outputs, inputs.labels, precision="int8", spec=verification).passed

    def build_and_verify(excluded: tuple[str, ...]) -> bool:
        progress.step("quantize", f"{variant.name}: rebuilding with {len(excluded)} of {total} nodes in float")
        _quantize_fused(variant, prepared, inputs, excluded)
        _count(variant, inputs)
        outputs = run_batched(ort_runner(variant.path), inputs.verify_inputs, VERIFY_BATCH)
        variant.check = check_against_spec(
            inputs.reference, outputs, inputs.labels, precision=variant.precision, spec=verification
        )
        return variant.check.passed

    start = 1 if variant.method == "dynamic" else max(1, 2 * len(variant.excluded))
    builds = exclusion.MAX_BUILDS if variant.method == "dynamic" else 1
    outcome = exclusion.search(ranking, inputs.verify_inputs, passes, build_and_verify, start=start, max_builds=builds)
    variant.notes += outcome.notes
    if outcome.builds:
        verdict = "passed" if outcome.passed else "still failed"
        variant.notes.append(f"{exclusion.describe(ranking, outcome.excluded, total)}; {verdict}")


def _ranking(variant: Variant, inputs: VariantInputs) -> exclusion.Ranking | None:
    """The sensitivity ranking (once per conversion), from a dynamic int8 model with every node quantized: the
    failing dynamic variant itself, else one built for the purpose."""
    if inputs._ranking is not None:
        return inputs._ranking
    fused = inputs._fusion is not None and inputs._fusion.any
    float_graph = inputs.workdir / ("prepared-fused.onnx" if fused else "prepared.onnx")
    quantized = variant.path
    if variant.method != "dynamic" or variant.excluded:
        quantized = inputs.workdir / "sensitivity-int8.onnx"
        reduce_range, _ = fused_weight_range()
        quantize_int8_dynamic(float_graph, quantized, per_channel=True, reduce_range=reduce_range)
    inputs._ranking = exclusion.rank_nodes(
        float_graph, quantized, inputs.workdir, inputs.verify_inputs, inputs.reference
    )
    return inputs._ranking


def serving_threads(ms: ModelService) -> int:
    """The serving pod's CPU request rounded up (at least 1), capped at the CPUs this process may use."""
    text = str(ms.spec.serving.resources.requests.get("cpu", "1")).strip()
    try:
        cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        cpus = 1.0
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(math.ceil(cpus), available))


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
        runners = {v.name: ort_runner(v.path, inputs.threads) for v in variants}
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
