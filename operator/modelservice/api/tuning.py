"""Tuning Triton against a latency target (issue 11): spec.serving.latencyTarget, spec.serving.tuning and
status.performance.

The tuner (``modelservice tune`` locally, a profiling Job in the cluster) loads candidate configurations
(maxBatchSize, dynamic batching queue delay, preferred batch sizes, instances) into a real Triton, drives load at
each of ``tuning.concurrency``, and keeps the configuration with the most throughput whose latency percentile stays
within ``latencyTarget``. What it measured is ``status.performance`` (and ``performance.json`` locally); autoscaling
derives its default targets from it. A changed latency target re-tunes without converting again (it is not part of
the conversion hash).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelservice.api.base import ApiModel, cel

DEFAULT_CONCURRENCY = (1, 8, 32)
# CEL twin of _positive_list's uniqueness check (the API server refuses the same lists).
_UNIQUE = cel(("self.all(x, self.exists_one(y, y == x))", "values must be unique", ""))
DEFAULT_MAX_TRIALS = 24
DEFAULT_MAX_SECONDS = 300


class LatencyTarget(ApiModel):
    """The latency the tuned configuration must keep: one percentile, in milliseconds."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.p99Milliseconds) != has(self.p95Milliseconds)",
                "set exactly one of p99Milliseconds and p95Milliseconds",
                "",
            ),
        )
    )

    p99_milliseconds: float | None = Field(
        default=None, gt=0, le=600_000, description="99th percentile request latency, milliseconds."
    )
    p95_milliseconds: float | None = Field(
        default=None, gt=0, le=600_000, description="95th percentile request latency, milliseconds."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> LatencyTarget:
        if (self.p99_milliseconds is None) == (self.p95_milliseconds is None):
            raise ValueError("set exactly one of p99Milliseconds and p95Milliseconds")
        return self

    @property
    def percentile(self) -> Literal["p95", "p99"]:
        return "p99" if self.p99_milliseconds is not None else "p95"

    @property
    def milliseconds(self) -> float:
        value = self.p99_milliseconds if self.p99_milliseconds is not None else self.p95_milliseconds
        assert value is not None
        return value


def _positive_list(values: list[int] | None, *, allow_zero: bool = False) -> list[int] | None:
    if values is None:
        return None
    floor = 0 if allow_zero else 1
    if any(value < floor for value in values):
        raise ValueError(f"values must be >= {floor}")
    if len(set(values)) != len(values):
        raise ValueError("values must be unique")
    return values


class Tuning(ApiModel):
    """The search the tuner runs. Lists left unset are derived from the model: batch sizes are the powers of two
    up to maxBatchSize, queue delays 0, 100, 1000 and 5000 microseconds, instances 1 and 2."""

    enabled: bool = Field(default=True, description="Tune when latencyTarget is set; false keeps the spec's config.")
    max_trials: int = Field(
        default=DEFAULT_MAX_TRIALS, ge=1, le=500, description="Most configurations loaded and measured."
    )
    max_seconds: int = Field(
        default=DEFAULT_MAX_SECONDS, ge=10, le=24 * 3600, description="Wall-clock bound of the whole search."
    )
    concurrency: list[int] = Field(
        default_factory=lambda: list(DEFAULT_CONCURRENCY),
        min_length=1,
        max_length=16,
        description="Concurrent requests each configuration is measured at.",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 4096}, **_UNIQUE},
    )
    batch_sizes: list[int] | None = Field(
        default=None,
        max_length=16,
        description="maxBatchSize candidates (default: powers of two up to spec.serving.maxBatchSize).",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 65536}, **_UNIQUE},
    )
    queue_delays_microseconds: list[int] | None = Field(
        default=None,
        max_length=16,
        description="Dynamic batching max_queue_delay_microseconds candidates (default 0, 100, 1000, 5000).",
        json_schema_extra={"items": {"type": "integer", "minimum": 0, "maximum": 10_000_000}, **_UNIQUE},
    )
    instances: list[int] | None = Field(
        default=None,
        max_length=8,
        description="Model instances per replica candidates (default 1 and 2).",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 64}, **_UNIQUE},
    )

    @field_validator("concurrency", "batch_sizes", "instances")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        return _positive_list(values)

    @field_validator("queue_delays_microseconds")
    @classmethod
    def _delays(cls, values: list[int] | None) -> list[int] | None:
        return _positive_list(values, allow_zero=True)


# ---------------------------------------------------------------------------------------------- status


class TunedConfig(ApiModel):
    """A Triton configuration the tuner tried or chose."""

    max_batch_size: int = Field(description="Triton max_batch_size.")
    dynamic_batching: bool = Field(default=True, description="Whether the dynamic batcher is on.")
    max_queue_delay_microseconds: int = Field(default=0, description="Dynamic batching queue delay.")
    preferred_batch_sizes: list[int] = Field(default_factory=list, description="Dynamic batching preferred sizes.")
    instances: int = Field(default=1, description="Model instances per replica.")


class LatencyFigures(ApiModel):
    """Request latency percentiles, milliseconds."""

    p50: float = Field(description="Median.")
    p95: float = Field(description="95th percentile.")
    p99: float = Field(description="99th percentile.")


class Trial(ApiModel):
    """One configuration measured at one concurrency."""

    config: TunedConfig = Field(description="The configuration.")
    concurrency: int = Field(description="Concurrent requests.")
    throughput: float = Field(description="Inferences per second.")
    latency_ms: LatencyFigures = Field(description="Latency at that load.")
    meets_target: bool = Field(description="Whether the latency stayed within latencyTarget.")


class Performance(ApiModel):
    """What the tuner measured on the hardware that serves the model."""

    config: TunedConfig = Field(description="The chosen configuration.")
    throughput_per_replica: float = Field(description="Inferences per second per replica within the target.")
    latency_ms: LatencyFigures = Field(description="Latency of the chosen configuration at that load.")
    concurrency: int | None = Field(default=None, description="The load (concurrent requests) of those figures.")
    target: str | None = Field(default=None, description="The latency target, e.g. p99 <= 50 ms.")
    target_met: bool | None = Field(default=None, description="False: no configuration met the target.")
    default_throughput: float | None = Field(
        default=None, description="Throughput of the spec's own configuration under the same target, for comparison."
    )
    trials: list[Trial] | None = Field(default=None, description="Each configuration tried, when few.")
    trial_count: int | None = Field(default=None, description="How many configurations were measured.")
    cold_start_seconds: float | None = Field(default=None, description="Triton start to model ready, seconds.")
    measured_on: str | None = Field(default=None, description="CPU model or GPU product, and Triton's version.")
    measured_at: str | None = Field(default=None, description="When (RFC 3339).")
    tuning_seconds: float | None = Field(default=None, description="Wall time of the search.")
