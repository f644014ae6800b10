"""The verification rule and the auto choice, as pure functions on numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelservice.convert.report import Report
from modelservice.convert.variants import Variant, choose
from modelservice.convert.verify import Check, compare

LABELS = np.array([0, 1, 2, 3])
REFERENCE = [np.eye(4, dtype=np.float32) * 5]


def shifted(delta: float) -> list[np.ndarray]:
    return [REFERENCE[0] + delta]


def test_fp32_is_judged_on_the_absolute_tolerance() -> None:
    assert compare(REFERENCE, shifted(0.001), LABELS, precision="fp32", tolerance=0.01, budget=0.01).passed
    check = compare(REFERENCE, shifted(0.5), LABELS, precision="fp16", tolerance=0.01, budget=0.01)
    assert not check.passed and check.problems == ["max abs error 0.5 exceeds tolerance 0.01"]
    assert check.max_rel_error == pytest.approx(0.1)  # relative to the largest reference value (5)


def test_int8_is_judged_on_the_accuracy_budget_not_the_tolerance() -> None:
    check = compare(REFERENCE, shifted(0.5), LABELS, precision="int8", tolerance=0.01, budget=0.01)
    assert check.passed and check.accuracy == check.reference_accuracy == 1.0
    flipped = [REFERENCE[0].copy()]
    flipped[0][0] = [0, 6, 0, 0]  # one of four decisions changes: -25 pp
    check = compare(REFERENCE, flipped, LABELS, precision="int8", tolerance=0.01, budget=0.01)
    assert not check.passed and "accuracy drops by 25.00 pp, more than accuracyBudget 1.00 pp" in check.problems[0]


def test_without_labels_top1_agreement_stands_in_for_accuracy() -> None:
    flipped = [REFERENCE[0].copy()]
    flipped[0][0] = [0, 6, 0, 0]
    check = compare(REFERENCE, flipped, None, precision="int8", tolerance=0.01, budget=0.3)
    assert check.passed and check.agreement == 0.75 and check.accuracy is None


def test_non_finite_outputs_fail() -> None:
    check = compare(REFERENCE, shifted(float("nan")), LABELS, precision="int8", tolerance=1, budget=1)
    assert not check.passed


def variant(name: str, batch1: float, batch32: float, passed: bool = True) -> Variant:
    v = Variant(name, name.split("-")[0], None, Path("/dev/null"))
    v.check = Check(0.0, 0.0, None, None, None, passed, [] if passed else ["accuracy drops"])
    v.latency_ms = {"batch1": batch1, "batch32": batch32}
    return v


def test_auto_picks_the_fastest_passing_variant() -> None:
    variants = [variant("fp32", 1.0, 10.0), variant("fp16", 1.2, 9.0), variant("int8-dynamic", 0.6, 5.0)]
    chosen, reason = choose(variants, 32)
    assert chosen.name == "int8-dynamic" and "2.00x fp32" in reason


def test_auto_never_picks_a_slower_or_failing_variant() -> None:
    variants = [
        variant("fp32", 1.0, 10.0),
        variant("fp16", 1.0, 9.8),  # within the 5 % noise margin: not faster
        variant("int8-dynamic", 3.0, 80.0),  # the tiny-CNN case
        variant("int8-static", 0.5, 4.0, passed=False),  # fast but over the accuracy budget
        variant("int8-x", 2.0, 5.0),  # faster batched, slower at batch 1
    ]
    chosen, reason = choose(variants, 32)
    assert chosen.name == "fp32"
    assert "int8-static rejected (accuracy drops)" in reason and "int8-dynamic not faster" in reason


def test_summary_stays_under_three_kilobytes_with_many_candidates() -> None:
    candidates = [{"name": f"c{i}", "passed": True, "latencyMs": {"batch1": 1.0}, "sizeBytes": 1} for i in range(60)]
    report = Report(
        {
            "modelName": "m",
            "artifact": {"uri": "m/1/model.onnx"},
            "chosen": {"reason": "x" * 5000},
            "candidates": candidates,
        }
    )
    import json

    assert len(json.dumps(report.summary(), separators=(",", ":"))) < 3000
