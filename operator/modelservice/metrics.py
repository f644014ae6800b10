"""Prometheus metrics of the operator (served by ``modelservice run --metrics-port``).

- ``modelservice_reconciles_total{result}``: reconciles by result (success, retry, stalled, error).
- ``modelservice_reconcile_duration_seconds``: histogram of one reconcile's duration.
- ``modelservice_modelservices{phase}``: ModelServices by status phase, as last computed.
- ``modelservice_api_requests_total{verb,resource}`` and ``modelservice_api_errors_total{verb,resource,code}``:
  the operator's own API requests (kopf's watches excluded); code ``connection`` when no HTTP answer came.
- ``modelservice_prometheus_queries_total{result}``: PromQL queries of canary analysis (ok, error); three per
  revision per analysis, one analysis per ``spec.rollout.analysis.interval`` per canary in progress.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Converting", "Deploying", "Ready", "Degraded", "Failed")

RECONCILES = Counter("modelservice_reconciles", "Reconciles of ModelServices by result.", ["result"])
RECONCILE_DURATION = Histogram(
    "modelservice_reconcile_duration_seconds",
    "Duration of one reconcile of a ModelService.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MODELSERVICES = Gauge("modelservice_modelservices", "ModelServices by status phase.", ["phase"])
API_REQUESTS = Counter("modelservice_api_requests", "API requests sent by the operator.", ["verb", "resource"])
PROMETHEUS_QUERIES = Counter(
    "modelservice_prometheus_queries", "PromQL queries sent for canary analysis, by result.", ["result"]
)
API_ERRORS = Counter("modelservice_api_errors", "Failed API requests of the operator.", ["verb", "resource", "code"])


class PhaseTracker:
    """Keeps ``modelservice_modelservices{phase}`` equal to the phases of the ModelServices seen last."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        for phase in PHASES:
            MODELSERVICES.labels(phase=phase).set(0)

    def set(self, key: tuple[str, str], phase: str | None) -> None:
        old = self._phases.pop(key, None)
        if old is not None:
            MODELSERVICES.labels(phase=old).dec()
        if phase is not None:
            self._phases[key] = phase
            MODELSERVICES.labels(phase=phase).inc()


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on ``port`` (0: off) in a background thread."""
    if port:
        start_http_server(port, addr=address)
