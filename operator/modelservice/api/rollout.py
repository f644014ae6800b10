"""``spec.rollout``: how a new revision replaces the served one (canary steps, shadow traffic, the analysis that
promotes or aborts it). Absent, or ``strategy: immediate``, the served revision switches at once, as before.

Durations are written as Go/Flagger users write them (``30s``, ``2m``, ``1h``, ``1m30s``); ``parse_duration``
reads them. Each rule is both a pydantic validator and a schema keyword or CEL rule (tests/unit/test_crd_parity.py).
"""

from __future__ import annotations

import re
from datetime import timedelta
from itertools import pairwise
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelservice.api.base import ApiModel, cel

# A duration: one or more <digits><unit>, units s, m, h; a pause may be 0s, an interval may not (Analysis).
DURATION = r"^([0-9]{1,6}(s|m|h))+$"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
MAX_STEPS = 10

Strategy = Literal["canary", "immediate"]


def parse_duration(text: str) -> timedelta:
    """``1m30s`` -> 90 seconds. Raises ValueError on anything ``DURATION`` refuses."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 2m, 1h or 1m30s")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"([0-9]+)(s|m|h)", text)))


class RolloutStep(ApiModel):
    """One canary step: the canary's share of traffic, held for ``pause`` while the analysis runs."""

    weight: int = Field(ge=1, le=99, description="Percent of requests sent to the new revision (1-99).")
    pause: str = Field(
        pattern=DURATION,
        max_length=32,
        description="How long the weight is held, analysed every analysis.interval (30s, 2m, 1h, 1m30s).",
    )


class Mirror(ApiModel):
    """Shadow traffic: before any weight, a share of requests is copied to the new revision, responses dropped."""

    percent: int = Field(ge=1, le=100, description="Percent of requests copied to the new revision.")


class Analysis(ApiModel):
    """What the new revision must show during every pause; one failure aborts the rollout."""

    interval: str = Field(
        default="30s",
        pattern=DURATION,
        max_length=32,
        description="How often the analysis runs while a step is held (a positive duration: 30s, 1m, 1m30s).",
        json_schema_extra=cel(("self.matches('[1-9]')", "interval must be longer than 0s", "")),
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Largest share of failed inferences of the new revision (0-1)."
    )
    max_latency_ratio: float = Field(
        default=1.5,
        ge=1,
        le=1000,
        description="Largest ratio of the new revision's latency (p95, or mean without histograms) to the stable "
        "revision's, over the same window.",
    )
    min_requests: int = Field(
        default=100,
        ge=0,
        le=1_000_000_000,
        description="Fewest requests of the new revision per analysis window; with fewer the rollout waits (it "
        "never promotes on too little traffic).",
    )

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, interval: str) -> str:
        if parse_duration(interval) <= timedelta(0):
            raise ValueError("interval must be longer than 0s")
        return interval


def _increasing_weights_rule() -> str:
    """CEL for "weights strictly increasing" without index ranges (the list is bounded by MAX_STEPS)."""
    return " && ".join(
        f"(self.size() <= {i + 1} || self[{i}].weight < self[{i + 1}].weight)" for i in range(MAX_STEPS - 1)
    )


class Rollout(ApiModel):
    """How a new revision (a changed conversion hash) replaces the served one."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.strategy) || self.strategy != 'canary' || (has(self.steps) && self.steps.size() > 0)",
                "strategy canary needs at least one step",
                ".steps",
            ),
            (
                "(has(self.strategy) && self.strategy == 'canary') "
                "|| ((!has(self.steps) || self.steps.size() == 0) && !has(self.mirror))",
                "steps and mirror need strategy canary",
                ".strategy",
            ),
        )
    )

    strategy: Strategy = Field(
        default="immediate",
        description="canary: steps of weighted traffic, analysed, then promotion; immediate: switch at once.",
    )
    steps: list[RolloutStep] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description="Canary steps, weights strictly increasing; after the last one the new revision gets 100%.",
        json_schema_extra=cel((_increasing_weights_rule(), "step weights must be strictly increasing", "")),
    )
    mirror: Mirror | None = Field(default=None, description="Optional shadow traffic before the first step.")
    analysis: Analysis = Field(default_factory=Analysis, description="Promote or abort on measured metrics.")

    @model_validator(mode="after")
    def _steps_rules(self) -> Rollout:
        if self.strategy == "canary" and not self.steps:
            raise ValueError("steps: strategy canary needs at least one step")
        if self.strategy != "canary" and (self.steps or self.mirror is not None):
            raise ValueError("strategy: steps and mirror need strategy canary")
        weights = [step.weight for step in self.steps]
        if any(a >= b for a, b in pairwise(weights)):
            raise ValueError(f"steps: step weights must be strictly increasing, got {weights}")
        return self
