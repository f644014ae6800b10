"""Progressive delivery in the reconcile (``spec.rollout``): the glue between what the operator observed, the
rollout state machine (``rollout.py``), canary analysis (``analysis.py``) and the renderer's ``Traffic``.

Pure functions, except ``take_sample`` (it queries Prometheus). One reconcile of a ModelService with a rollout:

1. ``Deployments.of`` sorts the ModelService's Deployments: today's ``<name>`` and the per-revision
   ``<name>-<hash>`` ones (strategy canary).
2. ``observed_for_plan`` points the conversion plan at the stable revision's Deployment and tells it which
   revisions are on the claim already (``status.revisions``): re-applying one of them needs no conversion Job.
3. ``machine_observed`` says what the state machine needs: the spec's revision, whether it is converted and (as a
   canary) has ready replicas. ``take_sample`` runs an analysis when ``rollout.analysis_due`` says so.
4. ``rollout.step`` decides; ``traffic`` turns the decision into what ``render.children`` draws.
5. ``retired`` names the Deployments no longer rendered that may go now: only once the stable revision's
   Deployment is available, so a handover (promotion, rollback, a changed strategy) never leaves no pod serving.
6. ``status_overlay`` hands the decision's conditions, ``status.rollout`` and ``status.revisions`` to
   ``compute_status``; ``requeue_after`` says when to look again (the next analysis or the end of a pause).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from modelservice.api.models import ModelService
from modelservice.api.rollout import parse_duration
from modelservice.api.status import Verdict, VerificationStatus
from modelservice.controller import analysis, rollout
from modelservice.controller.status import ConversionResult, DeploymentView, RolloutOverlay
from modelservice.render import (
    HASH_ANNOTATION,
    REVISION_LABEL,
    Observed,
    Plan,
    Traffic,
    TrafficSplit,
    deployment_name,
    is_owned_by,
)
from modelservice.render.canary import revision_name
from modelservice.render.tuneplan import TunePlan


def per_revision(ms: ModelService) -> bool:
    """Strategy canary: every revision runs as its own ``<name>-<hash>`` Deployment."""
    return ms.spec.rollout is not None and ms.spec.rollout.strategy == "canary"


def state_of(ms: ModelService) -> rollout.RolloutState:
    return rollout.RolloutState.from_status(ms.status)


def _served_hash(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    value = ((deployment.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Deployments:
    """The ModelService's own Deployments: ``named`` is today's ``<name>``; ``revisions`` the per-revision ones
    by hash."""

    named: dict[str, Any] | None
    revisions: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, ms: ModelService, objects: Iterable[dict[str, Any]]) -> Deployments:
        named: dict[str, Any] | None = None
        revisions: dict[str, dict[str, Any]] = {}
        for obj in objects:
            if obj.get("kind") != "Deployment" or (ms.metadata.uid and not is_owned_by(obj, ms)):
                continue
            meta = obj.get("metadata") or {}
            revision = (meta.get("labels") or {}).get(REVISION_LABEL)
            if meta.get("name") == deployment_name(ms):
                named = obj
            elif revision and meta.get("name") == revision_name(ms, revision):
                revisions[revision] = obj
        return cls(named, revisions)

    def of_revision(self, ms: ModelService, hash_: str | None) -> dict[str, Any] | None:
        """The Deployment serving ``hash_`` as the rollout renders it: ``<name>-<hash>`` with strategy canary,
        else ``<name>``; during a handover, whichever of the two serves that hash."""
        if hash_ is None:
            return None
        own = self.revisions.get(hash_)
        named = self.named if _served_hash(self.named) == hash_ else None
        return (own or named) if per_revision(ms) else (named or own)

    def served(self) -> str | None:
        """The hash served before any rollout state existed: ``<name>``'s, or the only revision Deployment's."""
        if self.named is not None:
            return _served_hash(self.named)
        return next(iter(self.revisions)) if len(self.revisions) == 1 else None


def stable_hint(state: rollout.RolloutState, deployments: Deployments) -> str | None:
    """The stable revision as the state machine will see it before it decides."""
    if state.rollout is not None and state.rollout.stable_revision:
        return state.rollout.stable_revision
    serving = next((r.hash for r in state.revisions if r.served_until is None and r.role == "Stable"), None)
    return serving or deployments.served()


def observed_for_plan(
    ms: ModelService, observed: Observed, state: rollout.RolloutState, deployments: Deployments
) -> Observed:
    """``observed`` with the stable revision's Deployment (the plan compares the spec's hash with the one it
    serves) and the revisions kept on the claim."""
    return replace(
        observed,
        deployment=deployments.of_revision(ms, stable_hint(state, deployments)),
        revisions_available=frozenset(r.hash for r in state.revisions),
    )


def _ready_replicas(deployment: dict[str, Any] | None) -> int:
    return DeploymentView.of(deployment).ready_replicas if deployment is not None else 0


def machine_observed(
    ms: ModelService,
    plan: Plan,
    conversion: ConversionResult | None,
    state: rollout.RolloutState,
    deployments: Deployments,
    tuning: TunePlan | None = None,
) -> rollout.Observed:
    """What ``rollout.step`` needs. The spec's revision is ready when its repository is converted (its Job
    succeeded, or it is on the claim already), with tuning wanted also tuned (``tuning.deploy_hash``: its
    profiling Job finished, succeeded or failed), and, when it will run as a canary, its Deployment has a ready
    replica."""
    desired = plan.desired_hash
    artifact = conversion.artifact if conversion is not None and conversion.succeeded else None
    verification = conversion.verification if conversion is not None and conversion.succeeded else None
    revision = rollout.Revision(
        hash=desired,
        precision=(artifact or {}).get("precision"),
        artifact_sha256=(artifact or {}).get("sha256"),
        verification=VerificationStatus.model_validate(verification) if verification else None,
    )
    ready = (tuning.deploy_hash if tuning is not None and tuning.wanted else plan.deploy_hash) == desired
    stable = stable_hint(state, deployments)
    if ready and per_revision(ms) and stable is not None and stable != desired:
        ready = _ready_replicas(deployments.revisions.get(desired)) > 0
    return rollout.Observed(desired=revision, ready=ready, served=deployments.served())


def traffic(ms: ModelService, decision: rollout.Decision) -> Traffic:
    """What ``render.children`` draws for the decision."""
    if decision.stable is None:
        return Traffic(None, per_revision(ms))
    mirror = decision.mirror[1] if decision.mirror is not None and decision.canary_weight == 0 else None
    split = TrafficSplit(
        stable=decision.stable,
        canary=decision.canary if decision.canary != decision.stable else None,
        weight=decision.canary_weight,
        mirror_percent=mirror if decision.canary is not None else None,
    )
    return Traffic(split, per_revision(ms))


def retired(
    ms: ModelService, deployments: Deployments, wanted: list[dict[str, Any]], decision: rollout.Decision
) -> list[dict[str, Any]]:
    """Deployments of this ModelService no longer rendered, to delete now: once the Deployment serving the stable
    revision is available (every replica ready), so requests always find a pod and capacity does not drop; an
    aborted canary's as soon as the stable revision has a ready replica (it must not take requests any longer)."""
    names = {(o.get("metadata") or {}).get("name") for o in wanted if o.get("kind") == "Deployment"}
    serving = deployments.of_revision(ms, decision.stable)
    if serving is None or (serving.get("metadata") or {}).get("name") not in names:
        return []
    view = DeploymentView.of(serving)
    if view.ready_replicas == 0:
        return []
    available = view.rolled_out and view.available
    aborted = {r.hash for r in decision.revisions if r.outcome == "Aborted"}
    out = []
    for hash_, deployment in [(_served_hash(deployments.named), deployments.named), *deployments.revisions.items()]:
        if deployment is None or (deployment.get("metadata") or {}).get("name") in names:
            continue
        if available or hash_ in aborted:
            out.append(deployment)
    return out


# ------------------------------------------------------------------------------------------------- analysis


def analysis_request(ms: ModelService, state: rollout.RolloutState) -> analysis.AnalysisRequest | None:
    """Canary vs stable of the current step, over one analysis interval; the series carry the model name (Triton's
    ``model``, the ensemble's for a text model), the ``revision`` label the scrape adds and the namespace."""
    spec, status = ms.spec.rollout, state.rollout
    if spec is None or status is None or status.canary_revision is None:
        return None
    labels = (("namespace", ms.namespace),)
    canary = analysis.RevisionSelector(ms.name, status.canary_revision, extra_labels=labels)
    stable = analysis.RevisionSelector(ms.name, status.stable_revision or "", extra_labels=labels)
    thresholds = analysis.Thresholds(
        max_error_rate=spec.analysis.max_error_rate,
        max_latency_ratio=spec.analysis.max_latency_ratio,
        min_requests=spec.analysis.min_requests,
    )
    window = parse_duration(spec.analysis.interval).total_seconds()
    return analysis.AnalysisRequest(
        canary=canary, stable=stable if status.stable_revision else None, window_seconds=window, thresholds=thresholds
    )


_VERDICTS: dict[analysis.Outcome, Verdict] = {
    analysis.Outcome.PASS: "Passed",
    analysis.Outcome.FAIL: "Failed",
    analysis.Outcome.WAIT: "Inconclusive",
    analysis.Outcome.ERROR: "Inconclusive",
    analysis.Outcome.READINESS_ONLY: "Passed",
}


def to_sample(result: analysis.AnalysisResult, at: datetime.datetime) -> rollout.AnalysisSample:
    canary = result.canary
    return rollout.AnalysisSample(
        at=at,
        verdict=_VERDICTS[result.outcome],
        requests=canary.requests if canary is not None else 0,
        error_rate=canary.error_rate if canary is not None else None,
        latency_ratio=result.latency_ratio,
        message=result.message,
        readiness_only=result.outcome == analysis.Outcome.READINESS_ONLY,
    )


async def take_sample(
    client: analysis.PrometheusClient | None, ms: ModelService, state: rollout.RolloutState, now: datetime.datetime
) -> rollout.AnalysisSample | None:
    """An analysis sample when one is due (None otherwise)."""
    if not rollout.analysis_due(ms.spec.rollout, state, now):
        return None
    request = analysis_request(ms, state)
    if request is None:
        return None
    return to_sample(await analysis.analyze(client, request), now)


# --------------------------------------------------------------------------------------------------- status


def status_overlay(decision: rollout.Decision) -> RolloutOverlay:
    return RolloutOverlay(
        conditions=tuple(c.to_api() for c in decision.conditions),
        rollout=decision.rollout.to_api() if decision.rollout is not None else None,
        revisions=tuple(r.to_api() for r in decision.revisions),
    )


def requeue_after(decision: rollout.Decision, now: datetime.datetime) -> float | None:
    """Seconds until the decision wants another look (at least one), or None."""
    if decision.requeue_at is None:
        return None
    return max(1.0, (decision.requeue_at - now).total_seconds())
