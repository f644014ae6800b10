"""One reconcile of one ModelService: parse, observe, render, apply, compute the status, write it if it changed.

Level-triggered and idempotent: it reads everything from the watch cache, so a reconcile with nothing to do sends
no request. Outcomes for the queue: ``Done()``; ``Done(stalled=True)`` for problems only a change can fix (an
invalid spec, a failed conversion, a foreign object in the way), never retried in a loop; ``Retry`` for API errors
(409, 429, 5xx, dropped connections), retried with exponential backoff.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from modelservice.api.errors import SpecError
from modelservice.api.loader import parse
from modelservice.api.models import ModelService
from modelservice.controller import apply, delivery, observe, tuning
from modelservice.controller.analysis import PrometheusClient
from modelservice.controller.cache import Cache
from modelservice.controller.client import ApiError, KubeClient
from modelservice.controller.queue import Done, Key, Outcome, Retry
from modelservice.controller.rollout import Decision, step
from modelservice.controller.status import StatusInputs, compute_status, phase_event, status_patch
from modelservice.metrics import PhaseTracker
from modelservice.render import (
    HASH_LABEL,
    Observed,
    OperatorConfig,
    Traffic,
    children,
    conversion_hash,
    endpoints,
    job_name,
    obsolete_children,
    plan,
    selector_string,
    service_name,
)
from modelservice.render.names import TUNING_HASH_LABEL
from modelservice.render.tuneplan import served_tuning_hash

logger = logging.getLogger(__name__)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class _Rollout:
    """One reconcile's rollout decision: the plan's view of the cluster, the decision, what to render."""

    observed: Observed
    decision: Decision
    traffic: Traffic


@dataclass
class Reconciler:
    client: KubeClient
    cache: Cache
    config: OperatorConfig
    prometheus: PrometheusClient | None = None
    phases: PhaseTracker = field(default_factory=PhaseTracker)
    clock: Callable[[], datetime.datetime] = _utcnow
    _rendered: dict[Key, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)

    async def __call__(self, key: Key) -> Outcome:
        body = self.cache.modelservice(key)
        if body is None:
            self.phases.set(key, None)
            self._rendered.pop(key, None)
            return Done()
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return Done()  # children go with it (owner references); nothing to clean up
        try:
            return await self._reconcile(key, body)
        except ApiError as exc:
            if exc.retryable:
                return Retry(str(exc))
            logger.warning("%s/%s: %s", key[0], key[1], exc)
            return Retry(str(exc), delay=60.0)  # 4xx other than 409/429: unexpected; slow retry

    async def _reconcile(self, key: Key, body: dict[str, Any]) -> Outcome:
        previous = dict(body.get("status") or {})
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        clock = self.clock()
        now = clock.strftime("%Y-%m-%dT%H:%M:%SZ")
        rollout: _Rollout | None = None
        try:
            ms = parse(body, f"{key[0]}/{key[1]}")
            observed = await observe.observe(self.client, self.cache, ms, self.config)
            if ms.spec.rollout is not None:
                rollout = await self._decide(key, ms, observed, previous, clock)
                observed = rollout.observed
            wanted = self._children(key, body, ms, observed, rollout.traffic if rollout else None)
        except SpecError as exc:
            inputs = StatusInputs(
                generation=generation, now=now, previous=previous, problems=tuple(map(str, exc.problems))
            )
            await self._publish(key, body, compute_status(inputs))
            return Done(stalled=True)

        uid = str(ms.metadata.uid or "")
        apply_error: str | None = None
        apply_reason = apply.ChildConflict.reason
        try:
            result = await apply.apply_children(self.client, self.cache, wanted, uid)
            if result.created or result.patched:
                logger.info("%s/%s: created %s patched %s", *key, result.created or "-", result.patched or "-")
            await self._prune(key, ms, wanted, uid)
            if rollout is not None:
                await self._retire(key, ms, wanted, rollout.decision)
        except apply.ChildConflict as exc:
            apply_error, apply_reason = str(exc), exc.reason
            if isinstance(exc, apply.ChildRejected):
                # What the spec no longer wants goes anyway: it may be why (KEDA's webhook refuses a ScaledObject
                # while the HPA it replaces still scales the Deployment); its deletion's event reconciles again.
                await self._prune(key, ms, wanted, uid)

        observed = await observe.observe(self.client, self.cache, ms, self.config)
        if rollout is not None:
            deployments = delivery.Deployments.of(ms, self.cache.children(key))
            observed = replace(
                observed,
                deployment=deployments.of_revision(ms, rollout.decision.stable),
                revisions_available=rollout.observed.revisions_available,
            )
        decision = plan(ms, observed)
        inputs = StatusInputs(
            generation=generation,
            now=now,
            previous=previous,
            plan=decision,
            job_name=job_name(ms),
            conversion=await observe.conversion_result(self.client, self.cache, ms, previous),
            deployment=observed.deployment,
            selector=selector_string(ms),
            endpoints=self._endpoints(ms),
            apply_error=apply_error,
            apply_reason=apply_reason,
            rollout=delivery.status_overlay(rollout.decision) if rollout else None,
            **await self._tuning_inputs(key, ms, observed, previous),
        )
        status = compute_status(inputs)
        wrote = await self._publish(key, body, status)
        event = tuning.tuning_event(previous, status) if wrote else None
        if event is not None:
            await apply.post_event(self.client, body, *event, now=clock)
        stalled = apply_error is not None or decision.conversion_failed
        if rollout is None:
            return Done(stalled=stalled)
        if wrote:
            for event in rollout.decision.events:
                await apply.post_event(self.client, body, *event, now=clock)
        return Done(stalled=stalled, requeue_after=delivery.requeue_after(rollout.decision, clock))

    async def _decide(
        self, key: Key, ms: ModelService, observed: Observed, previous: dict[str, Any], now: datetime.datetime
    ) -> _Rollout:
        """spec.rollout: the rollout state machine's decision (with an analysis when one is due)."""
        assert ms.spec.rollout is not None
        state = delivery.state_of(ms)
        deployments = delivery.Deployments.of(ms, self.cache.children(key))
        observed = delivery.observed_for_plan(ms, observed, state, deployments)
        conversion = await observe.conversion_result(self.client, self.cache, ms, previous)
        tune = tuning.tune_plan(ms, observed, self.config)
        machine = delivery.machine_observed(ms, plan(ms, observed), conversion, state, deployments, tune)
        sample = await delivery.take_sample(self.prometheus, ms, state, now)
        decision = step(ms.spec.rollout, state, machine, sample, now, history_limit=ms.spec.revision_history_limit)
        return _Rollout(observed, decision, delivery.traffic(ms, decision))

    async def _retire(self, key: Key, ms: ModelService, wanted: list[dict[str, Any]], decision: Decision) -> None:
        """Delete the Deployments a rollout no longer renders, once the stable revision's is available."""
        deployments = delivery.Deployments.of(ms, self.cache.children(key))
        for obj in delivery.retired(ms, deployments, wanted, decision):
            await apply.delete_child(self.client, self.cache, obj)
            logger.info("%s/%s: retired Deployment %s", *key, (obj.get("metadata") or {}).get("name"))

    def _children(
        self, key: Key, body: dict[str, Any], ms: ModelService, observed: Observed, traffic: Traffic | None
    ) -> list[dict[str, Any]]:
        """``render.children``, memoized on everything it reads: rendering (YAML of the spec into the conversion
        ConfigMap) costs more CPU than the rest of a reconcile, and most reconciles render the same objects."""
        meta = body.get("metadata") or {}
        fingerprint = json.dumps(
            [
                {k: meta.get(k) for k in ("name", "namespace", "uid", "labels", "annotations")},
                body.get("spec"),
                [observed.served_hash, observed.conversion_job, observed.pvc_external, observed.tune_job],
                [served_tuning_hash(observed.deployment), (body.get("status") or {}).get("performance")],
                sorted(observed.revisions_available),
                repr(traffic),
            ],
            sort_keys=True,
            separators=(",", ":"),
        )
        cached = self._rendered.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        wanted = children(ms, observed, self.config, traffic)
        self._rendered[key] = (fingerprint, wanted)
        return wanted

    def _endpoints(self, ms: ModelService) -> dict[str, str] | None:
        service = observe.cached_child(self.cache, ms, "Service", service_name(ms))
        if service is None:
            return None
        return endpoints(ms, self.config, service).to_api()

    async def _tuning_inputs(
        self, key: Key, ms: ModelService, observed: Observed, previous: dict[str, Any]
    ) -> dict[str, Any]:
        """StatusInputs' tuning fields (issue 11): the plan, the profiling Job's result, the tunings served."""
        if not tuning.tuning_wanted(ms) and not previous.get("tuneJob"):
            return {}
        deployments = (o for o in self.cache.children(key) if o.get("kind") == "Deployment")
        return {
            "tuning": tuning.tune_plan(ms, observed, self.config),
            "tune_job_name": tuning.current_tune_job_name(ms, self.config),
            "tune": await tuning.tune_result(self.client, self.cache, ms, previous, self.config),
            "served_tunings": tuning.served_tunings(deployments),
        }

    async def _prune(self, key: Key, ms: ModelService, wanted: list[dict[str, Any]], uid: str) -> None:
        """Delete children the spec no longer asks for; the current hash's Job and ConfigMap stay (its logs), and
        so do the current tuning hash's profiling Job and ConfigMap (those of other tuning hashes go, also on the
        current conversion hash: a changed latency target)."""
        current = conversion_hash(ms)
        current_tuning: str | None = None
        existing = list(self.cache.children(key))
        for obj in obsolete_children(ms, wanted, existing):
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if TUNING_HASH_LABEL in labels:
                current_tuning = current_tuning or tuning.tuning_hash(ms, self.config)
                if labels[TUNING_HASH_LABEL] == current_tuning:
                    continue
            elif labels.get(HASH_LABEL) == current:
                continue
            await apply.delete_child(self.client, self.cache, obj)
            logger.info("%s/%s: deleted %s/%s", *key, obj.get("kind"), (obj.get("metadata") or {}).get("name"))

    async def _publish(self, key: Key, body: dict[str, Any], status: dict[str, Any]) -> bool:
        """Write the status when it changed (True); post an Event when the phase changed."""
        previous = dict(body.get("status") or {})
        self.phases.set(key, status.get("phase"))
        patch = status_patch(previous, status)
        if patch is None:
            return False
        await apply.write_status(self.client, self.cache, key[0], key[1], patch)
        transition = phase_event(previous, status)
        if transition is not None:
            await apply.post_event(self.client, body, *transition, now=self.clock())
        return True
