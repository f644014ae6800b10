"""Autoscaling targets, given or derived from measurement (api/scaling.py documents the shares).

``derived_targets(ms)`` gives each metric's target value and where it came from; the HPA and the ScaledObject
use the values and carry the explanation in the annotation ``modelservice.dev/autoscaling-targets`` (so
``kubectl describe`` tells why the target is what it is, and that it will change once something is measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelservice.api.models import MetricTarget, ModelService
from modelservice.api.scaling import DEFAULT_INFERENCE_RATE, LATENCY_BUDGET_QUEUE_SHARE, MEASURED_THROUGHPUT_SHARE

TARGETS_ANNOTATION = "modelservice.dev/autoscaling-targets"
COLD_START_ANNOTATION = "modelservice.dev/cold-start-seconds"


@dataclass(frozen=True)
class Target:
    metric: MetricTarget
    value: int
    source: str  # "spec", "measured", "latencyTarget" or "default"
    note: str  # one line: "inferenceRate 328/s per replica: 80% of the measured 410.5/s"


def measured_throughput(ms: ModelService) -> float | None:
    performance = ms.status.performance if ms.status is not None else None
    if performance is None or performance.throughput_per_replica <= 0:
        return None
    return performance.throughput_per_replica


def cold_start_seconds(ms: ModelService) -> float | None:
    performance = ms.status.performance if ms.status is not None else None
    return performance.cold_start_seconds if performance is not None else None


def _inference_rate(ms: ModelService, metric: MetricTarget) -> Target:
    if metric.target_per_replica is not None:
        value = metric.target_per_replica
        return Target(metric, value, "spec", f"inferenceRate {value}/s per replica (spec)")
    throughput = measured_throughput(ms)
    if throughput is None:
        value = DEFAULT_INFERENCE_RATE
        note = f"inferenceRate {value}/s per replica: default, nothing measured yet (status.performance)"
        return Target(metric, value, "default", note)
    value = max(1, math.floor(throughput * MEASURED_THROUGHPUT_SHARE))
    note = (
        f"inferenceRate {value}/s per replica: {MEASURED_THROUGHPUT_SHARE:.0%} of the measured "
        f"{throughput:g}/s (status.performance.throughputPerReplica)"
    )
    return Target(metric, value, "measured", note)


def _queue_time(ms: ModelService, metric: MetricTarget) -> Target:
    if metric.target_microseconds is not None:
        value = metric.target_microseconds
        return Target(metric, value, "spec", f"queueTime {value}us (spec)")
    latency = ms.spec.serving.latency_target
    assert latency is not None  # ModelServiceSpec refuses a queueTime metric with neither
    value = max(1, math.floor(latency.milliseconds * 1000 * LATENCY_BUDGET_QUEUE_SHARE))
    note = (
        f"queueTime {value}us: {LATENCY_BUDGET_QUEUE_SHARE:.0%} of serving.latencyTarget "
        f"{latency.percentile} {latency.milliseconds:g} ms"
    )
    return Target(metric, value, "latencyTarget", note)


def derived_target(ms: ModelService, metric: MetricTarget) -> Target:
    if metric.type == "inferenceRate":
        return _inference_rate(ms, metric)
    if metric.type == "queueTime":
        return _queue_time(ms, metric)
    assert metric.target_utilization is not None
    value = metric.target_utilization
    return Target(metric, value, "spec", f"cpu {value}% of requests (spec)")


def derived_targets(ms: ModelService) -> list[Target]:
    autoscaling = ms.spec.autoscaling
    return [] if autoscaling is None else [derived_target(ms, metric) for metric in autoscaling.metrics]


def targets_annotation(targets: list[Target]) -> str:
    return "; ".join(target.note for target in targets)
