"""controller/delivery.py: the glue between observations, the rollout state machine and the renderer (pure)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from modelservice.api.loader import parse
from modelservice.api.models import ModelService
from modelservice.api.status import Condition, RevisionRecord, RolloutStatus
from modelservice.controller import analysis, delivery, rollout
from modelservice.controller.status import ConversionResult, StatusInputs, compute_status
from modelservice.render import HASH_ANNOTATION, REVISION_LABEL, Plan, TrafficSplit, children, plan
from modelservice.render.canary import revision_name
from modelservice.render.plan import Observed

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
CANARY = {
    "strategy": "canary",
    "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"}],
    "analysis": {"interval": "30s"},
}


def modelservice(strategy: str = "canary", status: dict[str, Any] | None = None) -> ModelService:
    spec: dict[str, Any] = {
        "model": {"uri": "s3://m/model.onnx", "format": "onnx"},
        "serving": {"replicas": 2},
        "rollout": CANARY if strategy == "canary" else {"strategy": "immediate"},
    }
    body: dict[str, Any] = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1"},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return parse(body, "test")


def deployment(name: str, hash_: str, *, ready: int = 2, replicas: int = 2, uid: str = "u-1", gen: int = 1) -> dict:
    labels = {"app.kubernetes.io/instance": "digits"}
    if name != "digits":
        labels[REVISION_LABEL] = hash_
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": labels,
            "annotations": {HASH_ANNOTATION: hash_},
            "generation": gen,
            "ownerReferences": [{"uid": uid, "controller": True}],
        },
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": gen,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
        },
    }


def test_deployments_are_sorted_into_named_and_per_revision() -> None:
    ms = modelservice()
    found = delivery.Deployments.of(
        ms,
        [
            deployment("digits", "aaa"),
            deployment("digits-bbb", "bbb"),
            deployment("digits-ccc", "ccc", uid="someone-else"),
            {"kind": "Service", "metadata": {"name": "digits-bbb", "ownerReferences": [{"uid": "u-1"}]}},
        ],
    )
    assert found.named is not None and set(found.revisions) == {"bbb"}
    assert found.served() == "aaa"  # today's Deployment names what served before any rollout state
    # Canary: a revision's own Deployment first; during a handover the named one serving that hash.
    assert found.of_revision(ms, "bbb")["metadata"]["name"] == "digits-bbb"  # type: ignore[index]
    assert found.of_revision(ms, "aaa")["metadata"]["name"] == "digits"  # type: ignore[index]
    assert found.of_revision(ms, "zzz") is None
    immediate = modelservice("immediate")
    both = delivery.Deployments.of(immediate, [deployment("digits", "bbb"), deployment("digits-bbb", "bbb")])
    assert both.of_revision(immediate, "bbb")["metadata"]["name"] == "digits"  # type: ignore[index]


def _plan(desired: str, deploy: str | None) -> Plan:
    return Plan(desired, None, deploy, job_wanted=deploy != desired, conversion_state=None)


SUCCEEDED = ConversionResult("job", True, "", {"precision": "fp16", "sha256": "d" * 64}, {"passed": True})


@pytest.mark.parametrize(
    ("status", "deployments", "deploy", "ready"),
    [
        pytest.param(None, [], "new", True, id="first revision: ready once converted"),
        pytest.param(None, [], None, False, id="first revision converting"),
        pytest.param(
            {"rollout": {"phase": "Promoted", "stableRevision": "old"}},
            [deployment("digits-old", "old")],
            "new",
            False,
            id="canary converted, no Deployment yet",
        ),
        pytest.param(
            {"rollout": {"phase": "Progressing", "stableRevision": "old", "canaryRevision": "new"}},
            [deployment("digits-old", "old"), deployment("digits-new", "new", ready=0)],
            "new",
            False,
            id="canary converted, no ready replica",
        ),
        pytest.param(
            {"rollout": {"phase": "Progressing", "stableRevision": "old", "canaryRevision": "new"}},
            [deployment("digits-old", "old"), deployment("digits-new", "new", ready=1)],
            "new",
            True,
            id="canary with a ready replica",
        ),
    ],
)
def test_the_spec_revision_is_ready(
    status: dict[str, Any] | None, deployments: list[dict[str, Any]], deploy: str | None, ready: bool
) -> None:
    ms = modelservice(status=status)
    state = delivery.state_of(ms)
    found = delivery.Deployments.of(ms, deployments)
    observed = delivery.machine_observed(ms, _plan("new", deploy), SUCCEEDED, state, found)
    assert observed.ready is ready
    assert observed.desired.precision == "fp16" and observed.desired.artifact_sha256 == "d" * 64


def test_immediate_strategy_is_ready_once_converted() -> None:
    ms = modelservice("immediate", status={"rollout": {"phase": "Promoted", "stableRevision": "old"}})
    found = delivery.Deployments.of(ms, [deployment("digits", "old")])
    observed = delivery.machine_observed(ms, _plan("new", "new"), None, delivery.state_of(ms), found)
    assert observed.ready and observed.served == "old" and observed.desired.precision is None


def test_revisions_in_the_history_need_no_conversion_job() -> None:
    status = {"revisions": [{"hash": "aaa", "outcome": "Superseded", "role": "Stable"}]}
    ms = modelservice(status=status)
    observed = delivery.observed_for_plan(ms, Observed(), delivery.state_of(ms), delivery.Deployments(None, {}))
    assert observed.revisions_available == {"aaa"}
    # a spec whose hash is in the history is served without a Job (a rollback)
    from modelservice.render import conversion_hash

    current = conversion_hash(ms)
    with_history = Observed(deployment=deployment("digits-bbb", "bbb"), revisions_available=frozenset({current}))
    decided = plan(ms, with_history)
    assert decided.deploy_hash == current and not decided.job_wanted


def decision(**kw: Any) -> rollout.Decision:
    base: dict[str, Any] = {
        "stable": "old",
        "canary": None,
        "weights": {"old": 100},
        "mirror": None,
        "rollout": None,
        "revisions": (),
    }
    return rollout.Decision(**{**base, **kw})


@pytest.mark.parametrize(
    ("made", "split"),
    [
        (decision(stable=None, weights={}), None),
        (decision(), TrafficSplit("old")),
        (decision(canary="new", weights={"old": 90, "new": 10}), TrafficSplit("old", "new", 10)),
        (decision(canary="new", mirror=("new", 20)), TrafficSplit("old", "new", 0, 20)),
        (decision(canary="new", weights={"old": 90, "new": 10}, mirror=("new", 20)), TrafficSplit("old", "new", 10)),
    ],
)
def test_traffic_of_a_decision(made: rollout.Decision, split: TrafficSplit | None) -> None:
    traffic = delivery.traffic(modelservice(), made)
    assert traffic.split == split and traffic.per_revision


def _wanted(ms: ModelService, stable: str) -> list[dict[str, Any]]:
    traffic = delivery.traffic(ms, decision(stable=stable, weights={stable: 100}))
    return children(ms, Observed(conversion_job="succeeded"), traffic=traffic)


@pytest.mark.parametrize(
    ("stable_ready", "stable_gen", "aborted", "expected"),
    [
        (0, 1, False, []),
        (1, 1, False, []),  # not every replica ready: the old one keeps serving
        (2, 2, False, ["digits", "digits-old"]),
        (1, 1, True, ["digits-old"]),  # an aborted canary goes once the stable has a ready replica
    ],
)
def test_retired_deployments_wait_for_the_stable_one(
    stable_ready: int, stable_gen: int, aborted: bool, expected: list[str]
) -> None:
    ms = modelservice()
    found = delivery.Deployments.of(
        ms,
        [
            deployment("digits", "older"),
            deployment("digits-old", "old"),
            deployment("digits-new", "new", ready=stable_ready, gen=stable_gen),
        ],
    )
    records = (RevisionRecord(hash="old", outcome="Aborted", role="Canary"),) if aborted else ()
    made = decision(stable="new", weights={"new": 100}, revisions=records)
    gone = delivery.retired(ms, found, _wanted(ms, "new"), made)
    assert sorted(d["metadata"]["name"] for d in gone) == expected


@pytest.mark.parametrize(
    ("outcome", "verdict", "readiness_only"),
    [
        (analysis.Outcome.PASS, "Passed", False),
        (analysis.Outcome.FAIL, "Failed", False),
        (analysis.Outcome.WAIT, "Inconclusive", False),
        (analysis.Outcome.ERROR, "Inconclusive", False),
        (analysis.Outcome.READINESS_ONLY, "Passed", True),
    ],
)
def test_analysis_results_become_samples(outcome: analysis.Outcome, verdict: str, readiness_only: bool) -> None:
    canary = analysis.Measurement(successes=90, failures=10, duration_us=9000)
    stable = analysis.Measurement(successes=100, failures=0, duration_us=5000)
    sample = delivery.to_sample(analysis.AnalysisResult(outcome, "why", canary, stable), NOW)
    assert (sample.verdict, sample.readiness_only, sample.at) == (verdict, readiness_only, NOW)
    assert sample.requests == 100 and sample.error_rate == pytest.approx(0.1)
    assert sample.latency_ratio == pytest.approx(2.0)


def test_analysis_request_names_model_revisions_and_namespace() -> None:
    status = {"rollout": {"phase": "Paused", "step": 1, "stableRevision": "old", "canaryRevision": "new"}}
    ms = modelservice(status=status)
    request = delivery.analysis_request(ms, delivery.state_of(ms))
    assert request is not None and request.window_seconds == 30
    assert request.canary.matchers() == '{model="digits",revision="new",namespace="ml"}'
    assert request.stable is not None and request.stable.revision == "old"
    assert delivery.analysis_request(modelservice(), delivery.state_of(modelservice())) is None


def _status(overlay: rollout.Decision, phase_plan: Plan, ready: int = 2) -> dict[str, Any]:
    inputs = StatusInputs(
        generation=2,
        now="2026-03-01T12:00:00Z",
        plan=phase_plan,
        deployment=deployment("digits-old", "old", ready=ready),
        rollout=delivery.status_overlay(overlay),
    )
    return compute_status(inputs)


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_running_canary_is_reconciling_and_not_ready() -> None:
    progressing = Condition(type="Reconciling", status="True", reason="CanaryProgressing", message="step 1/2")
    made = decision(
        canary="new",
        weights={"old": 90, "new": 10},
        rollout=RolloutStatus(phase="Paused", step=1, weight=10, stable_revision="old", canary_revision="new"),
        conditions=(progressing,),
    )
    status = _status(made, Plan("new", "old", "new", job_wanted=True, conversion_state="succeeded"))
    assert status["phase"] == "Deploying"
    assert _conditions(status)["Ready"] == ("False", "CanaryProgressing")
    assert _conditions(status)["Reconciling"] == ("True", "CanaryProgressing")
    assert _conditions(status)["Available"][0] == "True"
    assert status["rollout"]["weight"] == 10


def test_an_aborted_canary_is_stalled_and_degraded_while_the_stable_serves() -> None:
    stalled = Condition(type="Stalled", status="True", reason="CanaryAborted", message="error rate 0.5")
    made = decision(rollout=RolloutStatus(phase="Aborted", stable_revision="old"), conditions=(stalled,))
    status = _status(made, Plan("new", "old", "new", job_wanted=False, conversion_state=None))
    assert status["phase"] == "Degraded"
    assert _conditions(status)["Stalled"] == ("True", "CanaryAborted")
    assert _conditions(status)["Ready"] == ("False", "CanaryAborted")
    assert _conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")


def test_a_conversion_in_progress_keeps_its_own_conditions() -> None:
    progressing = Condition(type="Reconciling", status="True", reason="CanaryProgressing", message="waiting")
    made = decision(rollout=RolloutStatus(phase="Progressing", stable_revision="old"), conditions=(progressing,))
    status = _status(made, Plan("new", "old", "old", job_wanted=True, conversion_state="running"))
    assert status["phase"] == "Converting"
    assert _conditions(status)["Reconciling"] == ("True", "Converting")


def test_requeue_after() -> None:
    assert delivery.requeue_after(decision(), NOW) is None
    later = decision(requeue_at=NOW + datetime.timedelta(seconds=30))
    assert delivery.requeue_after(later, NOW) == 30
    assert delivery.requeue_after(decision(requeue_at=NOW), NOW) == 1.0


def test_revision_name_is_the_per_revision_deployment() -> None:
    assert revision_name(modelservice(), "abc") == "digits-abc"
