"""spec.autoscaling: bounds, the signals to scale on, and scale to zero with KEDA (issue 11, part 3).

Targets left out are derived (``render/targets.py`` applies these shares; they are documented in the CRD):

- ``inferenceRate`` without ``targetPerReplica``: ``MEASURED_THROUGHPUT_SHARE`` (80 %) of the measured
  ``status.performance.throughputPerReplica``, rounded down, at least 1; before anything was measured,
  ``DEFAULT_INFERENCE_RATE`` (the HPA/ScaledObject annotation ``modelservice.dev/autoscaling-targets`` says which);
- ``queueTime`` without ``targetMicroseconds``: ``LATENCY_BUDGET_QUEUE_SHARE`` (25 %) of
  ``spec.serving.latencyTarget``; without a latency target ``targetMicroseconds`` stays required.

``minReplicas: 0`` scales to zero with KEDA (a prerequisite in the cluster): the operator renders a ScaledObject
instead of the HPA. A model at zero replicas exports no metrics, so something outside Triton must wake it:
``keda.httpAddOn`` (the KEDA HTTP add-on's interceptor holds requests and counts them) or ``keda.wakeQuery``
(a PromQL signal that exists while no replica runs, such as an ingress's request count for the Service).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from modelservice.api.base import ApiModel, cel

MetricType = Literal["cpu", "queueTime", "inferenceRate"]

MEASURED_THROUGHPUT_SHARE = 0.8
DEFAULT_INFERENCE_RATE = 100
LATENCY_BUDGET_QUEUE_SHARE = 0.25


class MetricTarget(ApiModel):
    """One autoscaling signal. cpu takes targetUtilization; queueTime targetMicroseconds (default: 25% of
    serving.latencyTarget); inferenceRate targetPerReplica (default: 80% of the measured throughput per replica)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.type != 'cpu' || (has(self.targetUtilization) && !has(self.targetMicroseconds) "
                "&& !has(self.targetPerReplica))",
                "metric type cpu takes targetUtilization only",
                "",
            ),
            (
                "self.type != 'queueTime' || (!has(self.targetUtilization) && !has(self.targetPerReplica))",
                "metric type queueTime takes targetMicroseconds only",
                "",
            ),
            (
                "self.type != 'inferenceRate' || (!has(self.targetUtilization) && !has(self.targetMicroseconds))",
                "metric type inferenceRate takes targetPerReplica only",
                "",
            ),
        )
    )

    type: MetricType = Field(description="cpu, queueTime (Triton queue time per request) or inferenceRate.")
    target_utilization: int | None = Field(default=None, ge=1, le=100, description="cpu: percent of requests.")
    target_microseconds: int | None = Field(
        default=None,
        ge=1,
        description="queueTime: average queue time, us. Default: 25% of serving.latencyTarget (required without one).",
    )
    target_per_replica: int | None = Field(
        default=None,
        ge=1,
        description="inferenceRate: inferences/s per pod. Default: 80% of status.performance.throughputPerReplica "
        f"(the tuner's measurement), {DEFAULT_INFERENCE_RATE} before anything was measured.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> MetricTarget:
        own = {"cpu": "targetUtilization", "queueTime": "targetMicroseconds", "inferenceRate": "targetPerReplica"}
        present = {
            "targetUtilization": self.target_utilization,
            "targetMicroseconds": self.target_microseconds,
            "targetPerReplica": self.target_per_replica,
        }
        want = own[self.type]
        if self.type == "cpu" and present[want] is None:
            raise ValueError(f"{want}: required for metric type {self.type}")
        extra = [k for k, v in present.items() if v is not None and k != want]
        if extra:
            raise ValueError(f"{extra[0]}: not valid for metric type {self.type}")
        return self


def _default_metrics() -> list[MetricTarget]:
    return [MetricTarget(type="cpu", target_utilization=70)]


class Keda(ApiModel):
    """Scale to zero with KEDA (minReplicas 0). KEDA must be installed; the HTTP add-on too for httpAddOn."""

    http_add_on: bool = Field(
        default=False,
        description="Route HTTP through the KEDA HTTP add-on's interceptor (an HTTPScaledObject): requests wait "
        "while Triton starts from zero instead of failing, and wake it. Clients call the interceptor with the "
        "Host of one of hosts. gRPC is not routed.",
    )
    hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=16,
        description="Host headers the interceptor routes to this model (default: the Service's cluster names).",
    )
    wake_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL whose value above 0 wakes the model from zero: a signal that exists while no replica "
        "runs, e.g. your ingress controller's request rate for this Service.",
    )
    cooldown_seconds: int = Field(
        default=300, ge=0, le=86400, description="Seconds without requests before scaling to zero (cooldownPeriod)."
    )
    polling_seconds: int = Field(default=15, ge=1, le=3600, description="How often KEDA checks its triggers.")


class Autoscaling(ApiModel):
    """HorizontalPodAutoscaler settings, or a KEDA ScaledObject with minReplicas 0; absent means fixed replicas."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                "minReplicas must not exceed maxReplicas",
                ".minReplicas",
            ),
            (
                "!has(self.metrics) || self.metrics.all(m, self.metrics.exists_one(n, n.type == m.type))",
                "each metric type may appear once",
                ".metrics",
            ),
            (
                "!has(self.minReplicas) || self.minReplicas != 0 || (has(self.keda) && "
                "((has(self.keda.httpAddOn) && self.keda.httpAddOn) || has(self.keda.wakeQuery)))",
                "minReplicas 0 scales to zero with KEDA: set keda.httpAddOn or keda.wakeQuery so requests wake it",
                ".minReplicas",
            ),
            (
                "!has(self.keda) || (has(self.minReplicas) && self.minReplicas == 0)",
                "keda applies only with minReplicas 0",
                ".keda",
            ),
        )
    )

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas; 0 scales to zero with KEDA.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    metrics: list[MetricTarget] = Field(
        default_factory=_default_metrics, min_length=1, max_length=8, description="Signals to scale on."
    )
    keda: Keda | None = Field(default=None, description="Scale to zero (minReplicas 0): how requests wake the model.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas: {self.min_replicas} is greater than maxReplicas {self.max_replicas}")
        types = [m.type for m in self.metrics]
        if len(set(types)) != len(types):
            raise ValueError("metrics: each metric type may appear once")
        if self.min_replicas == 0 and (self.keda is None or not (self.keda.http_add_on or self.keda.wake_query)):
            raise ValueError(
                "minReplicas: 0 scales to zero with KEDA; set keda.httpAddOn or keda.wakeQuery so requests wake it"
            )
        if self.keda is not None and self.min_replicas != 0:
            raise ValueError("keda: applies only with minReplicas 0")
        return self

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0


def queue_time_problem(autoscaling: Autoscaling | None, has_latency_target: bool) -> str | None:
    """Why a queueTime metric without targetMicroseconds cannot be given a default, or None."""
    if autoscaling is None or has_latency_target:
        return None
    for index, metric in enumerate(autoscaling.metrics):
        if metric.type == "queueTime" and metric.target_microseconds is None:
            return (
                f"autoscaling: metrics[{index}] (queueTime) needs targetMicroseconds, or serving.latencyTarget "
                f"to derive it from ({LATENCY_BUDGET_QUEUE_SHARE:.0%} of the budget)"
            )
    return None


# The CEL twin of queue_time_problem, for ModelServiceSpec.
QUEUE_TIME_RULE = (
    "!has(self.autoscaling) || !has(self.autoscaling.metrics) || "
    "self.autoscaling.metrics.all(m, m.type != 'queueTime' || has(m.targetMicroseconds)) || "
    "(has(self.serving) && has(self.serving.latencyTarget))",
    "a queueTime metric needs targetMicroseconds, or serving.latencyTarget to derive it from",
    ".autoscaling",
)
