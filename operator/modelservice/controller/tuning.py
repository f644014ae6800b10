"""Tuning in the reconcile (issue 11): the profiling Job's result, the tuning hashes served, and its Events.

The rules live in ``render/tuneplan.py`` (``plan_tuning``) and the Job in ``render/tunejob.py``; ``children``
renders both. Here is what the reconcile reads around them:

- ``tune_plan``: the ``TunePlan`` for an ``Observed`` (status and the rollout's readiness need it too);
- ``tune_result``: once the current tuning hash's Job finished, its profiler's termination message (the pods are
  listed once: the status then holds the result, ``status.tuneJob`` / ``status.performance``, or the failure in
  the ``Tuned`` condition, and later reconciles reuse it, as ``observe.conversion_result`` does);
- ``served_tunings``: the tuning hashes the ModelService's Deployments carry (``status.performance`` is kept
  while the one it measured still serves);
- ``tuning_event``: a Warning Event when tuning fails (serving goes on, untuned), a Normal one when it succeeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelservice.api.models import ModelService
from modelservice.controller.apply import POD
from modelservice.controller.cache import Cache
from modelservice.controller.client import KubeClient
from modelservice.controller.observe import JOB_NAME_LABEL, cached_child, job_failure
from modelservice.controller.status import TUNED, TuneResult, failed_tune_detail
from modelservice.render import Observed, OperatorConfig, job_state, plan
from modelservice.render.tunejob import parse_performance, profiler_termination_message
from modelservice.render.tuneplan import (
    TunePlan,
    current_tune_job_name,
    plan_tuning,
    served_tuning_hash,
    tuning_hash,
    tuning_wanted,
)

__all__ = [
    "current_tune_job_name",
    "served_tunings",
    "tune_plan",
    "tune_result",
    "tuning_event",
    "tuning_hash",
    "tuning_wanted",
]

MESSAGE_LIMIT = 512


def tune_plan(ms: ModelService, observed: Observed, config: OperatorConfig) -> TunePlan:
    """``plan_tuning`` for what was observed (as ``children`` decides it)."""
    return plan_tuning(ms, plan(ms, observed), observed.tune_job, served_tuning_hash(observed.deployment), config)


async def tune_result(
    client: KubeClient, cache: Cache, ms: ModelService, previous: dict[str, Any], config: OperatorConfig
) -> TuneResult | None:
    """The finished profiling Job of the current tuning hash, or None (tuning not wanted, no such Job, running).

    Reused from ``previous`` (the status) when it already holds this Job's result: ``tuneJob`` names it after a
    success, the ``Tuned`` condition carries a failure's error; otherwise the Job's pods are listed once."""
    if not tuning_wanted(ms):
        return None
    name = current_tune_job_name(ms, config)
    job = cached_child(cache, ms, "Job", name)
    if job is None:
        return None
    state = job_state(job)
    if state == "running":
        return None
    if state == "succeeded" and previous.get("tuneJob") == name:
        performance = previous.get("performance")
        return TuneResult(name, True, "", performance if isinstance(performance, dict) else None)
    if state == "failed":
        detail = failed_tune_detail(name, previous)
        if detail is not None:
            return TuneResult(name, False, detail)
    pods = await client.list(POD, ms.namespace, label_selector=f"{JOB_NAME_LABEL}={name}")
    message = profiler_termination_message(pods)
    if state == "failed":
        detail = message.splitlines()[-1] if message else job_failure(job)
        return TuneResult(name, False, detail[:MESSAGE_LIMIT])
    performance, problem = parse_performance(message)
    return TuneResult(name, True, problem or "", performance.to_api() if performance is not None else None)


def served_tunings(deployments: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The tuning hashes (``TUNING_HASH_ANNOTATION``) the given Deployments carry."""
    return frozenset(h for h in map(served_tuning_hash, deployments) if h is not None)


def _tuned(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == TUNED), {})


def tuning_event(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event when the ``Tuned`` condition turns TuningFailed (Warning: Triton
    serves the untuned, or last tuned, configuration) or Tuned (Normal); None otherwise."""
    before, after = _tuned(old), _tuned(new)
    reason = after.get("reason")
    if reason not in ("TuningFailed", "Tuned") or (before.get("reason"), before.get("message")) == (
        reason,
        after.get("message"),
    ):
        return None
    return ("Warning" if reason == "TuningFailed" else "Normal"), str(reason), str(after.get("message") or "")
