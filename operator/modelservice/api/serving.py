"""spec.serving: how Triton runs (batching, instances, resources, placement, the tuner's latency target)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelservice.api.base import QUANTITY, ApiModel, cel
from modelservice.api.tuning import LatencyTarget, Tuning


class DynamicBatching(ApiModel):
    """Triton's dynamic batcher."""

    max_queue_delay_microseconds: int = Field(
        default=100,
        ge=0,
        le=10_000_000,
        description="How long a request may wait for others to form a batch.",
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list,
        max_length=16,
        description="Batch sizes the batcher tries to form.",
        json_schema_extra={"items": {"type": "integer", "minimum": 1}},
    )

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 for size in sizes):
            raise ValueError("batch sizes must be positive")
        return sizes


RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
# requests/limits in the CRD: at most one entry per resource name, each a quantity.
_RESOURCE_MAP_SCHEMA: dict[str, Any] = {
    "maxProperties": len(RESOURCE_NAMES),
    "additionalProperties": {"type": "string", "pattern": QUANTITY},
    **cel(
        (
            f"self.all(name, name in {list(RESOURCE_NAMES)})",
            "resource names are cpu, memory and ephemeral-storage (GPUs go in gpu)",
            "",
        )
    ),
}


class Resources(ApiModel):
    """Compute resources of each Triton replica."""

    gpu: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per replica; 0 runs Triton on CPU.")
    requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "2Gi"},
        description="CPU/memory requests.",
        json_schema_extra=_RESOURCE_MAP_SCHEMA,
    )
    limits: dict[str, str] = Field(
        default_factory=lambda: {"memory": "4Gi"},
        description="CPU/memory limits.",
        json_schema_extra=_RESOURCE_MAP_SCHEMA,
    )

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, values: dict[str, str]) -> dict[str, str]:
        for key, value in values.items():
            if key not in RESOURCE_NAMES:
                raise ValueError(f"unknown resource {key!r} (cpu, memory, ephemeral-storage; GPUs go in gpu)")
            if not re.fullmatch(QUANTITY, value):  # fullmatch: "$" would also match before a final newline
                raise ValueError(f"{key}: {value!r} is not a Kubernetes quantity")
        return values


DEFAULT_MAX_BATCH_SIZE = 32


class Serving(ApiModel):
    """How Triton runs."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSizes) || "
                "self.dynamicBatching.preferredBatchSizes.all(size, size <= "
                f"(has(self.maxBatchSize) ? self.maxBatchSize : {DEFAULT_MAX_BATCH_SIZE}))",
                "dynamicBatching.preferredBatchSizes must not exceed maxBatchSize (0 disables batching)",
                ".dynamicBatching",
            ),
        )
    )

    image: str | None = Field(
        default=None,
        min_length=1,
        description="Triton server image. Default: NVIDIA's nvcr.io/nvidia/tritonserver:25.01-py3, or for a text model "
        "(format huggingface, a text task) the operator's Triton image with the tokenizers library.",
    )
    replicas: int = Field(default=1, ge=0, le=1000, description="Replicas when autoscaling is not set.")
    max_batch_size: int = Field(
        default=DEFAULT_MAX_BATCH_SIZE, ge=0, le=65536, description="Triton max_batch_size; 0 disables batching."
    )
    dynamic_batching: DynamicBatching | None = Field(
        default_factory=DynamicBatching, description="Dynamic batcher settings; null turns it off."
    )
    instances: int = Field(default=1, ge=1, le=64, description="Model instances per replica (instance_group).")
    latency_target: LatencyTarget | None = Field(
        default=None, description="The latency the tuner keeps while it maximizes throughput (spec.serving.tuning)."
    )
    tuning: Tuning = Field(default_factory=Tuning, description="How the tuner searches (when latencyTarget is set).")
    resources: Resources = Field(default_factory=Resources, description="Per-replica resources.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector for Triton pods.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Tolerations for Triton pods.")
    affinity: dict[str, Any] | None = Field(default=None, description="Affinity for Triton pods.")

    @model_validator(mode="after")
    def _batching_rules(self) -> Serving:
        if self.dynamic_batching is not None:
            if self.max_batch_size == 0 and self.dynamic_batching.preferred_batch_sizes:
                raise ValueError("dynamicBatching: preferredBatchSizes need maxBatchSize > 0")
            too_big = [s for s in self.dynamic_batching.preferred_batch_sizes if s > self.max_batch_size]
            if too_big:
                raise ValueError(
                    f"dynamicBatching: preferredBatchSizes {too_big} exceed maxBatchSize {self.max_batch_size}"
                )
        return self
