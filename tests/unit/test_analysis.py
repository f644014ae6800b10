"""Canary analysis: the PromQL per revision and the verdict, table-driven (controller/analysis.py).

The real queries against a real Prometheus scraping real tritonservers are in tests/triton/test_canary_analysis.py.
"""

from __future__ import annotations

import pytest

from modelservice.controller.analysis import (
    FIRST_RESPONSE_HISTOGRAM,
    AnalysisRequest,
    Measurement,
    Outcome,
    PrometheusClient,
    RevisionSelector,
    Thresholds,
    analyze,
    error_rate_promql,
    mean_latency_ms_promql,
    promql_duration,
    revision_queries,
    verdict,
)
from modelservice.serve.triton import free_port

CANARY = RevisionSelector("digits", "abc123")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(30, "30s"), (60, "1m"), (120, "2m"), (90, "90s"), (0.2, "1s"), (0, "1s"), (29.5, "30s")],
)
def test_promql_duration(seconds: float, expected: str) -> None:
    assert promql_duration(seconds) == expected


@pytest.mark.parametrize(
    ("selector", "matchers"),
    [
        (CANARY, '{model="digits",revision="abc123"}'),
        (RevisionSelector("m", "r", revision_label="pod_template_hash"), '{model="m",pod_template_hash="r"}'),
        (
            RevisionSelector("m", "r", extra_labels=(("service", "s"), ("namespace", "ml"))),
            '{model="m",revision="r",namespace="ml",service="s"}',
        ),
        (RevisionSelector('we"ird\\', "r\n"), '{model="we\\"ird\\\\",revision="r\\n"}'),
    ],
)
def test_matchers(selector: RevisionSelector, matchers: str) -> None:
    assert selector.matchers() == matchers


def test_revision_queries() -> None:
    queries = revision_queries(CANARY, 30)
    m = '{model="digits",revision="abc123"}'
    assert queries.all() == {
        "successes": f"sum(increase(nv_inference_request_success{m}[30s]))",
        "failures": f"sum(increase(nv_inference_request_failure{m}[30s]))",
        "duration_us": f"sum(increase(nv_inference_request_duration_us{m}[30s]))",
    }
    with_histogram = revision_queries(CANARY, 120, FIRST_RESPONSE_HISTOGRAM)
    assert with_histogram.p95_ms == (
        f"histogram_quantile(0.95, sum by (le) (increase(nv_inference_first_response_histogram_ms_bucket{m}[2m])))"
    )
    assert error_rate_promql(CANARY, 30) == f"{queries.failures} / ({queries.successes} + {queries.failures})"
    assert mean_latency_ms_promql(CANARY, 30) == f"{queries.duration_us} / {queries.successes} / 1000"


def test_measurement_numbers() -> None:
    m = Measurement(successes=90, failures=10, duration_us=450_000)
    assert (m.requests, m.error_rate, m.mean_latency_ms, m.latency_ms) == (100, 0.1, 5.0, 5.0)
    assert Measurement(0, 0, 0).error_rate is None and Measurement(0, 5, 0).mean_latency_ms is None
    assert Measurement(10, 0, 10_000, p95_ms=7.5).latency_ms == 7.5


STABLE = Measurement(successes=1000, failures=0, duration_us=10_000_000)  # 10 ms mean
LIMITS = Thresholds(max_error_rate=0.01, max_latency_ratio=1.5, min_requests=100)

VERDICTS = [
    # (case, canary, stable, thresholds, outcome, words the message must hold)
    ("healthy", Measurement(500, 0, 5_500_000), STABLE, LIMITS, Outcome.PASS, ["error rate 0", "latency ratio 1.10"]),
    ("at the error limit", Measurement(990, 10, 9_900_000), STABLE, LIMITS, Outcome.PASS, ["error rate 0.01 <="]),
    ("errors", Measurement(80, 20, 800_000), STABLE, LIMITS, Outcome.FAIL, ["error rate 0.2 > maxErrorRate 0.01"]),
    ("all failing", Measurement(0, 300, 0), STABLE, LIMITS, Outcome.FAIL, ["300 of 300 requests failed"]),
    ("slow", Measurement(200, 0, 4_000_000), STABLE, LIMITS, Outcome.FAIL, ["latency ratio 2.00", "> maxLatencyRatio"]),
    (
        "slow and failing",
        Measurement(180, 20, 3_600_000),
        STABLE,
        LIMITS,
        Outcome.FAIL,
        ["error rate 0.1 >", "; latency ratio 2.00 (20.00 ms vs stable 10.00 ms) > maxLatencyRatio 1.5"],
    ),
    ("too few", Measurement(99, 0, 990_000), STABLE, LIMITS, Outcome.WAIT, ["99 requests", "minRequests 100"]),
    ("too few, all failing", Measurement(0, 50, 0), STABLE, LIMITS, Outcome.WAIT, ["50 requests"]),
    ("no traffic", Measurement(0, 0, 0), None, LIMITS, Outcome.WAIT, ["0 requests"]),
    ("no stable", Measurement(500, 0, 5_000_000), None, LIMITS, Outcome.PASS, ["latency not compared"]),
    ("idle stable", Measurement(500, 0, 5_000_000), Measurement(0, 0, 0), LIMITS, Outcome.PASS, ["not compared"]),
    (
        "latency not judged",
        Measurement(200, 0, 40_000_000),
        STABLE,
        Thresholds(max_latency_ratio=None),
        Outcome.PASS,
        ["error rate 0"],
    ),
    (
        "p95 preferred",
        Measurement(200, 0, 2_000_000, p95_ms=30.0),
        Measurement(1000, 0, 10_000_000, p95_ms=12.0),
        LIMITS,
        Outcome.FAIL,
        ["latency ratio 2.50 (30.00 ms vs stable 12.00 ms)"],
    ),
]


@pytest.mark.parametrize(
    ("case", "canary", "stable", "thresholds", "outcome", "words"), VERDICTS, ids=[v[0] for v in VERDICTS]
)
def test_verdict(
    case: str,
    canary: Measurement,
    stable: Measurement | None,
    thresholds: Thresholds,
    outcome: Outcome,
    words: list[str],
) -> None:
    result = verdict(canary, stable, thresholds)
    assert result.outcome == outcome, result.message
    assert "\n" not in result.message
    for word in words:
        assert word in result.message, result.message
    assert result.canary == canary and result.stable == stable


async def test_no_prometheus_means_readiness_only() -> None:
    result = await analyze(None, AnalysisRequest(CANARY, None, 30, LIMITS))
    assert result.outcome == Outcome.READINESS_ONLY
    assert result.message == "no Prometheus configured: analysis by replica readiness only"


async def test_unreachable_prometheus_is_one_line_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with PrometheusClient(url, timeout=2.0) as client:
        result = await analyze(client, AnalysisRequest(CANARY, None, 30, LIMITS))
    assert result.outcome == Outcome.ERROR
    assert result.message.startswith(f"prometheus {url}: cannot reach it: ") and "\n" not in result.message
