"""Canary analysis from Prometheus: PromQL per revision, a pure verdict, and a small query client.

Triton counts requests per model in ``nv_inference_request_success`` and ``nv_inference_request_failure`` (the
latter split by a ``reason`` label: BACKEND, REJECTED, CANCELED, OTHER) and their summed handling time in
``nv_inference_request_duration_us``; the scrape configuration attaches the revision as a label (``revision`` by
default). Over one window, per revision:

    successes   sum(increase(nv_inference_request_success{model="m",revision="r"}[30s]))
    failures    sum(increase(nv_inference_request_failure{model="m",revision="r"}[30s]))
    duration    sum(increase(nv_inference_request_duration_us{model="m",revision="r"}[30s]))
    p95 (opt.)  histogram_quantile(0.95, sum by (le) (increase(<histogram>_bucket{...}[30s])))

Error rate is failures / (successes + failures); latency is the p95 where a histogram is asked for and answers,
else the mean, duration / successes (Triton 2.51 adds ``duration_us`` for successful requests only; its
``--metrics-config histogram_latencies=true`` histogram, ``nv_inference_first_response_histogram_ms``, is
exported for decoupled models only, so ordinary models are judged on the mean). The ratios are computed here from
the three sums rather than in PromQL, so an idle revision is "0 requests", not an empty or NaN result.

The verdict never promotes on too little traffic (Wait), and one Fail line carries every failing number. Without a
Prometheus URL the analysis says so (ReadinessOnly): the rollout then goes by replica readiness alone.

Caveat, seen on the real Triton: a python-backend model that *returns* ``InferenceResponse(error=...)`` is counted
as a success by Triton; only an exception raised from ``execute`` (or a failing native backend) is a failure.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

import aiohttp

from modelservice import metrics

SUCCESS_METRIC = "nv_inference_request_success"
FAILURE_METRIC = "nv_inference_request_failure"
DURATION_METRIC = "nv_inference_request_duration_us"
FIRST_RESPONSE_HISTOGRAM = "nv_inference_first_response_histogram_ms"
REVISION_LABEL = "revision"


# ---------------------------------------------------------------- PromQL (pure)


def promql_duration(seconds: float) -> str:
    """A PromQL range duration for ``seconds`` (whole seconds, at least 1): 30 -> '30s', 120 -> '2m'."""
    whole = max(1, math.ceil(seconds))
    return f"{whole // 60}m" if whole % 60 == 0 else f"{whole}s"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(frozen=True)
class RevisionSelector:
    """The series of one revision of one model: ``model``, the revision label, and any fixed labels
    (namespace, service) the scrape configuration attaches."""

    model: str
    revision: str
    revision_label: str = REVISION_LABEL
    extra_labels: tuple[tuple[str, str], ...] = ()

    def matchers(self) -> str:
        labels = [("model", self.model), (self.revision_label, self.revision), *sorted(self.extra_labels)]
        return "{" + ",".join(f"{name}={_quote(value)}" for name, value in labels) + "}"


def increase_sum(metric: str, selector: RevisionSelector, window: str) -> str:
    return f"sum(increase({metric}{selector.matchers()}[{window}]))"


@dataclass(frozen=True)
class RevisionQueries:
    """The PromQL that measures one revision over one window."""

    successes: str
    failures: str
    duration_us: str
    p95_ms: str | None = None

    def all(self) -> dict[str, str]:
        queries = {"successes": self.successes, "failures": self.failures, "duration_us": self.duration_us}
        if self.p95_ms is not None:
            queries["p95_ms"] = self.p95_ms
        return queries


def revision_queries(
    selector: RevisionSelector, window_seconds: float, histogram: str | None = None
) -> RevisionQueries:
    """The queries for ``selector`` over the last ``window_seconds``; ``histogram`` (a Triton histogram metric
    name, e.g. FIRST_RESPONSE_HISTOGRAM) adds a p95 query over its buckets."""
    window = promql_duration(window_seconds)
    p95 = None
    if histogram is not None:
        buckets = f"increase({histogram}_bucket{selector.matchers()}[{window}])"
        p95 = f"histogram_quantile(0.95, sum by (le) ({buckets}))"
    return RevisionQueries(
        successes=increase_sum(SUCCESS_METRIC, selector, window),
        failures=increase_sum(FAILURE_METRIC, selector, window),
        duration_us=increase_sum(DURATION_METRIC, selector, window),
        p95_ms=p95,
    )


def error_rate_promql(selector: RevisionSelector, window_seconds: float) -> str:
    """Error rate as one expression (for dashboards and alerts; the analysis computes it from the sums)."""
    queries = revision_queries(selector, window_seconds)
    return f"{queries.failures} / ({queries.successes} + {queries.failures})"


def mean_latency_ms_promql(selector: RevisionSelector, window_seconds: float) -> str:
    """Mean request duration in milliseconds as one expression (dashboards; see error_rate_promql)."""
    queries = revision_queries(selector, window_seconds)
    return f"{queries.duration_us} / {queries.successes} / 1000"


# ---------------------------------------------------------------- verdict (pure)


@dataclass(frozen=True)
class Measurement:
    """What one revision did over the window (counts are Prometheus increase() values, hence floats)."""

    successes: float
    failures: float
    duration_us: float
    p95_ms: float | None = None

    @property
    def requests(self) -> float:
        return self.successes + self.failures

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests > 0 else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.duration_us / self.successes / 1000 if self.successes > 0 else None

    @property
    def latency_ms(self) -> float | None:
        """p95 where measured, else the mean."""
        return self.p95_ms if self.p95_ms is not None else self.mean_latency_ms


@dataclass(frozen=True)
class Thresholds:
    """spec.rollout.analysis: maxErrorRate, maxLatencyRatio (None: latency not judged), minRequests."""

    max_error_rate: float = 0.01
    max_latency_ratio: float | None = 1.5
    min_requests: int = 100


class Outcome(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    WAIT = "Wait"  # too little canary traffic: never promote on it
    READINESS_ONLY = "ReadinessOnly"  # no Prometheus configured
    ERROR = "Error"  # Prometheus did not answer; inconclusive, neither promote nor abort on it


@dataclass(frozen=True)
class AnalysisResult:
    outcome: Outcome
    message: str
    canary: Measurement | None = None
    stable: Measurement | None = None

    @property
    def latency_ratio(self) -> float | None:
        return latency_ratio(self.canary, self.stable) if self.canary and self.stable else None


def latency_ratio(canary: Measurement, stable: Measurement) -> float | None:
    canary_ms, stable_ms = canary.latency_ms, stable.latency_ms
    if canary_ms is None or stable_ms is None or stable_ms <= 0:
        return None
    return canary_ms / stable_ms


def _number(value: float) -> str:
    return f"{value:.4g}"


def verdict(canary: Measurement, stable: Measurement | None, thresholds: Thresholds) -> AnalysisResult:
    """Pass, Fail (every failing number in one line) or Wait (fewer canary requests than minRequests).

    The latency ratio is judged only when both revisions have a latency (the stable one served successfully in the
    window); the message says when it could not be.
    """
    if canary.requests < thresholds.min_requests:
        return AnalysisResult(
            Outcome.WAIT,
            f"canary served {canary.requests:.0f} requests, fewer than minRequests {thresholds.min_requests}: waiting",
            canary,
            stable,
        )
    failures: list[str] = []
    notes: list[str] = []
    error_rate = canary.error_rate or 0.0
    if error_rate > thresholds.max_error_rate:
        failures.append(
            f"error rate {_number(error_rate)} > maxErrorRate {_number(thresholds.max_error_rate)}"
            f" ({canary.failures:.0f} of {canary.requests:.0f} requests failed)"
        )
    else:
        notes.append(f"error rate {_number(error_rate)} <= {_number(thresholds.max_error_rate)}")
    if thresholds.max_latency_ratio is not None:
        ratio = latency_ratio(canary, stable) if stable is not None else None
        if ratio is None:
            notes.append("latency not compared (no stable latency in the window)")
        else:
            assert stable is not None and canary.latency_ms is not None and stable.latency_ms is not None
            detail = f"latency ratio {ratio:.2f} ({canary.latency_ms:.2f} ms vs stable {stable.latency_ms:.2f} ms)"
            if ratio > thresholds.max_latency_ratio:
                failures.append(f"{detail} > maxLatencyRatio {_number(thresholds.max_latency_ratio)}")
            else:
                notes.append(f"{detail} <= {_number(thresholds.max_latency_ratio)}")
    if failures:
        return AnalysisResult(Outcome.FAIL, "canary failed analysis: " + "; ".join(failures), canary, stable)
    summary = f"canary passed analysis over {canary.requests:.0f} requests: " + "; ".join(notes)
    return AnalysisResult(Outcome.PASS, summary, canary, stable)


# ---------------------------------------------------------------- Prometheus client


class PrometheusError(Exception):
    """A query that got no usable answer; the message is one line naming the server and the cause."""


@dataclass
class PrometheusClient:
    """Instant queries against Prometheus's HTTP API (``GET /api/v1/query``), one aiohttp session per client."""

    url: str
    timeout: float = 10.0
    queries_sent: int = field(default=0, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant query: a vector's samples (or a scalar as one sample)."""
        self.queries_sent += 1
        try:
            result = await self._query(promql)
        except PrometheusError:
            metrics.PROMETHEUS_QUERIES.labels(result="error").inc()
            raise
        metrics.PROMETHEUS_QUERIES.labels(result="ok").inc()
        return result

    async def _query(self, promql: str) -> list[dict[str, Any]]:
        endpoint = self.url.rstrip("/") + "/api/v1/query?" + urlencode({"query": promql})
        try:
            async with self._get_session().get(endpoint, headers={"Accept": "application/json"}) as response:
                text = await response.text()
        except TimeoutError:
            raise PrometheusError(f"prometheus {self.url}: no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PrometheusError(f"prometheus {self.url}: cannot reach it: {cause}") from None
        try:
            payload = json.loads(text)
        except ValueError:
            first = text.strip().splitlines()[0][:200] if text.strip() else "(empty)"
            raise PrometheusError(f"prometheus {self.url}: HTTP {response.status}, not JSON: {first}") from None
        if payload.get("status") != "success":
            error = " ".join(str(payload.get("error") or text[:200]).split())
            raise PrometheusError(
                f"prometheus {self.url}: query failed ({response.status} {payload.get('errorType', '')}): {error}"
            )
        data = payload.get("data") or {}
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data.get("result")}]
        result: list[dict[str, Any]] = data.get("result") or []
        return result

    async def value(self, promql: str) -> float | None:
        """The single number an aggregated query gives; None when it has no series or is NaN."""
        samples = await self.query(promql)
        if not samples:
            return None
        if len(samples) > 1:
            raise PrometheusError(f"prometheus {self.url}: expected one series, got {len(samples)} for {promql}")
        number = float(samples[0]["value"][1])
        return None if math.isnan(number) else number


async def measure(client: PrometheusClient, queries: RevisionQueries) -> Measurement:
    """Run a revision's queries concurrently; an absent series counts as 0 (nothing happened)."""
    names = list(queries.all())
    values = await asyncio.gather(*(client.value(queries.all()[name]) for name in names))
    got = dict(zip(names, values, strict=True))
    return Measurement(
        successes=got["successes"] or 0.0,
        failures=got["failures"] or 0.0,
        duration_us=got["duration_us"] or 0.0,
        p95_ms=got.get("p95_ms"),
    )


@dataclass(frozen=True)
class AnalysisRequest:
    """One analysis: the canary and stable revisions of a model, the window, the thresholds."""

    canary: RevisionSelector
    stable: RevisionSelector | None
    window_seconds: float
    thresholds: Thresholds
    histogram: str | None = None  # a latency histogram to take the p95 from, where Triton exports one


async def analyze(client: PrometheusClient | None, request: AnalysisRequest) -> AnalysisResult:
    """Measure both revisions and judge the canary; ReadinessOnly without a client, Error when Prometheus fails."""
    if client is None:
        return AnalysisResult(Outcome.READINESS_ONLY, "no Prometheus configured: analysis by replica readiness only")
    try:
        canary = await measure(client, revision_queries(request.canary, request.window_seconds, request.histogram))
        stable = None
        if request.stable is not None:
            stable = await measure(client, revision_queries(request.stable, request.window_seconds, request.histogram))
    except PrometheusError as exc:
        return AnalysisResult(Outcome.ERROR, str(exc))
    return verdict(canary, stable, request.thresholds)
