"""Canary rollouts (spec.rollout) with the real kopf operator against the API emulator over loopback HTTP.

The test plays the cluster's controllers (Job, kubelet, Deployment controller, as in test_lifecycle.py) and the
clock: the operator's ``Runtime.clock`` is a ``FakeClock`` the test moves forward, then it touches an annotation of
the ModelService so the operator looks again at once instead of waiting for its requeue timer (set in real
seconds from the fake clock). Canary analysis without Prometheus is by replica readiness; the abort test gives the
operator a stand-in Prometheus HTTP API on loopback (a canned answer per query: the PromQL itself is run against a
real Prometheus in tests/triton/test_canary_analysis.py).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from emulator import ApiServerEmulator, wait_for
from modelservice.controller.analysis import PrometheusClient
from modelservice.render.canary import REVISION_LABEL
from modelservice.render.names import HASH_ANNOTATION, HASH_LABEL
from test_lifecycle import (
    DEPLOYMENTS,
    EVENTS,
    HPAS,
    MS_PATH,
    NS,
    SERVICES,
    SUMMARY,
    condition,
    create,
    finish_job,
    jobs_of,
    make_ready,
    modelservice,
    ms_status,
    patch,
)

ROLLOUT = {
    "strategy": "canary",
    "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"}],
    "analysis": {"interval": "30s", "minRequests": 100, "maxErrorRate": 0.01},
}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


_pokes = 0


async def poke(emulator: ApiServerEmulator, name: str = "digits") -> None:
    """A watch event for the ModelService (an annotation: no new generation), so the operator reconciles now."""
    global _pokes
    _pokes += 1
    await patch(emulator, f"{MS_PATH}/{name}", {"metadata": {"annotations": {"test.example/poke": str(_pokes)}}})


def deployment_names(emulator: ApiServerEmulator) -> list[str]:
    return sorted(d["metadata"]["name"] for d in emulator.items(DEPLOYMENTS, NS))


def rollout_of(emulator: ApiServerEmulator) -> dict[str, Any]:
    return dict(ms_status(emulator).get("rollout") or {})


def revisions_of(emulator: ApiServerEmulator) -> dict[str, dict[str, Any]]:
    return {r["hash"]: r for r in ms_status(emulator).get("revisions") or []}


def events(emulator: ApiServerEmulator) -> list[str]:
    return [e["reason"] for e in emulator.items(EVENTS, NS)]


async def first_revision(emulator: ApiServerEmulator, **spec: Any) -> str:
    """Create a ModelService with a canary rollout and play the cluster until its first revision serves."""
    await create(emulator, modelservice(rollout=ROLLOUT, serving={"replicas": 2}, **spec))
    job = await wait_for(lambda: jobs_of(emulator) and jobs_of(emulator)[0], what="the first conversion Job")
    first = job["metadata"]["labels"][HASH_LABEL]
    await finish_job(emulator, job, SUMMARY)
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{first}"), what="the first revision's Deployment")
    assert emulator.get(DEPLOYMENTS, NS, "digits") is None  # strategy canary: every revision has its own
    await make_ready(emulator, f"digits-{first}")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready")
    assert rollout_of(emulator)["phase"] == "Promoted" and rollout_of(emulator)["stableRevision"] == first
    assert revisions_of(emulator)[first]["outcome"] == "Serving"
    return first


async def start_canary(emulator: ApiServerEmulator, first: str, precision: str = "fp16") -> str:
    """Change a field in the conversion hash; finish the new Job; return the new revision's hash."""
    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"conversion": {"precision": precision}}})
    job = await wait_for(
        lambda: next((j for j in jobs_of(emulator) if j["metadata"]["labels"][HASH_LABEL] != first), None),
        what="the new revision's Job",
    )
    second = str(job["metadata"]["labels"][HASH_LABEL])
    await finish_job(emulator, job, SUMMARY)
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{second}"), what="the canary's Deployment")
    await wait_for(lambda: rollout_of(emulator).get("phase") == "Progressing", what="waiting for the canary")
    await make_ready(emulator, f"digits-{second}")
    await wait_for(lambda: rollout_of(emulator).get("phase") == "Paused", what="the canary's first step")
    return second


async def test_canary_walks_its_steps_and_is_promoted(emulator: ApiServerEmulator, start_operator: Any) -> None:
    clock = FakeClock()
    await start_operator(clock=clock)
    first = await first_revision(emulator)
    second = await start_canary(emulator, first)

    status = ms_status(emulator)
    rollout = status["rollout"]
    assert (rollout["step"], rollout["weight"], rollout["canaryRevision"]) == (1, 10, second)
    assert condition(status, "Reconciling")["reason"] == "CanaryProgressing"
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Available")["status"] == "True"  # the stable revision serves
    # 2 replicas at weight 10: one each (the canary never has fewer than its weight needs; documented rounding).
    assert emulator.get(DEPLOYMENTS, NS, f"digits-{first}")["spec"]["replicas"] == 1
    assert emulator.get(DEPLOYMENTS, NS, f"digits-{second}")["spec"]["replicas"] == 1
    service = emulator.get(SERVICES, NS, "digits")
    assert REVISION_LABEL not in service["spec"]["selector"]  # both revisions take requests
    assert emulator.get(SERVICES, NS, f"digits-{second}")["spec"]["selector"][REVISION_LABEL] == second

    # Within the pause: analysed (readiness only: no Prometheus), held.
    clock.advance(31)
    await poke(emulator)
    await wait_for(lambda: (rollout_of(emulator).get("analysis") or {}).get("verdict") == "Passed", what="analysis")
    assert rollout_of(emulator)["step"] == 1
    assert "readiness" in rollout_of(emulator)["analysis"]["message"]

    # Pause over and an analysis passed in it: step 2, 50 %.
    clock.advance(120)
    await poke(emulator)
    await wait_for(lambda: rollout_of(emulator).get("step") == 2, what="step 2")
    assert rollout_of(emulator)["weight"] == 50
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{second}")["spec"]["replicas"] == 1, what="split")

    clock.advance(5 * 60 + 1)
    await poke(emulator)
    await wait_for(lambda: rollout_of(emulator).get("phase") == "Promoted", what="promotion")
    status = ms_status(emulator)
    assert status["rollout"]["stableRevision"] == second
    revisions = revisions_of(emulator)
    assert revisions[second]["outcome"] == "Promoted" and revisions[second]["role"] == "Stable"
    assert revisions[first]["outcome"] == "Superseded" and revisions[first]["servedUntil"]
    assert [r["hash"] for r in status["revisions"]] == [second, first]  # newest first

    # The promoted revision takes every replica; the old one goes once it is available.
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{second}")["spec"]["replicas"] == 2, what="scale")
    assert f"digits-{first}" in deployment_names(emulator)  # not before the new stable one is available
    await make_ready(emulator, f"digits-{second}")
    await wait_for(lambda: deployment_names(emulator) == [f"digits-{second}"], what="the old revision retired")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready after promotion")
    assert emulator.get(SERVICES, NS, f"digits-{first}") is None
    await wait_for(lambda: "CanaryPromoted" in events(emulator), what="the CanaryPromoted Event")
    assert {"CanaryStarted", "CanaryStepAdvanced", "CanaryPromoted"} <= set(events(emulator))


async def test_reverting_the_spec_rolls_back_without_a_job(emulator: ApiServerEmulator, start_operator: Any) -> None:
    clock = FakeClock()
    await start_operator(clock=clock)
    first = await first_revision(emulator)
    second = await start_canary(emulator, first)
    for seconds in (31, 120, 301):  # walk the canary to promotion (readiness only)
        clock.advance(seconds)
        await poke(emulator)
        await wait_for(lambda: (rollout_of(emulator).get("analysis") or {}).get("at") == _rfc(clock), what="analysis")
    await wait_for(lambda: rollout_of(emulator).get("phase") == "Promoted", what="promotion")
    await make_ready(emulator, f"digits-{second}")
    await wait_for(lambda: deployment_names(emulator) == [f"digits-{second}"], what="the old revision retired")
    job_posts = len(_job_posts(emulator))

    # A GitOps revert: the first revision's spec again. It is on the claim: served at once, no conversion Job.
    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"conversion": {"precision": "fp32"}}})
    await wait_for(lambda: rollout_of(emulator).get("stableRevision") == first, what="rolled back")
    assert revisions_of(emulator)[second]["outcome"] == "RolledBack"
    assert revisions_of(emulator)[first]["outcome"] == "Serving"
    deployment = await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{first}"), what="first again")
    assert deployment["metadata"]["annotations"][HASH_ANNOTATION] == first
    assert len(_job_posts(emulator)) == job_posts  # no conversion Job created
    assert not jobs_of(emulator)  # (the newer revision's Job is pruned, as any other hash's)
    assert f"digits-{second}" in deployment_names(emulator)  # serves until the rolled-back one is available
    await make_ready(emulator, f"digits-{first}")
    await wait_for(lambda: deployment_names(emulator) == [f"digits-{first}"], what="the newer revision retired")
    await wait_for(lambda: "RolledBack" in events(emulator), what="the RolledBack Event")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready")


def _job_posts(emulator: ApiServerEmulator) -> list[Any]:
    return [r for r in emulator.writes() if r.method.value == "POST" and r.url.path.endswith("/jobs")]


def _rfc(clock: FakeClock) -> str:
    return clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture()
async def failing_prometheus() -> AsyncIterator[tuple[str, list[str], dict[str, str]]]:
    """A stand-in for Prometheus's query API: the revision the test names as ``canary`` fails a third of its
    requests; every answer is a one-sample vector."""
    queries: list[str] = []
    named: dict[str, str] = {}

    async def query(request: web.Request) -> web.Response:
        promql = request.query["query"]
        queries.append(promql)
        canary = "canary" in named and f'revision="{named["canary"]}"' in promql
        if "nv_inference_request_failure" in promql:
            value = 60.0 if canary else 0.0
        elif "nv_inference_request_success" in promql:
            value = 120.0
        else:
            value = 120.0 * 1000
        result = [{"metric": {}, "value": [0, str(value)]}]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return web.Response(text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", queries, named
    finally:
        await runner.cleanup()


async def test_a_failing_canary_is_aborted_and_the_stable_keeps_serving(
    emulator: ApiServerEmulator, start_operator: Any, failing_prometheus: tuple[str, list[str], dict[str, str]]
) -> None:
    url, queries, named = failing_prometheus
    clock = FakeClock()
    await start_operator(clock=clock, prometheus=PrometheusClient(url))
    first = await first_revision(emulator)
    second = await start_canary(emulator, first)
    named["canary"] = second
    assert not queries  # no analysis is due before an interval has passed

    clock.advance(31)
    await poke(emulator)
    await wait_for(lambda: rollout_of(emulator).get("phase") == "Aborted", what="the abort")
    assert any(f'revision="{second}"' in q for q in queries) and any(f'revision="{first}"' in q for q in queries)
    assert all('namespace="ml"' in q and 'model="digits"' in q for q in queries)
    status = ms_status(emulator)
    stalled = condition(status, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "CanaryAborted")
    assert "error rate 0.3333" in stalled["message"] and "maxErrorRate 0.01" in stalled["message"]
    assert condition(status, "Available")["status"] == "True"
    assert status["phase"] == "Degraded"
    assert status["rollout"]["weight"] == 0
    assert revisions_of(emulator)[second]["outcome"] == "Aborted"
    # The canary's Deployment and Service go (the stable one is available); the stable takes every replica.
    await wait_for(lambda: deployment_names(emulator) == [f"digits-{first}"], what="the canary removed")
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{first}")["spec"]["replicas"] == 2, what="scale")
    await wait_for(lambda: emulator.get(SERVICES, NS, f"digits-{second}") is None, what="the canary's Service")
    await wait_for(lambda: "CanaryAborted" in events(emulator), what="the CanaryAborted Event")
    warning = next(e for e in emulator.items(EVENTS, NS) if e["reason"] == "CanaryAborted")
    assert warning["type"] == "Warning"

    # Nothing more happens until the spec changes: more time and pokes leave the abort as it is.
    count = len(queries)
    clock.advance(600)
    await poke(emulator)
    await wait_for(lambda: ms_status(emulator)["conditions"] and True, what="a reconcile")
    assert rollout_of(emulator)["phase"] == "Aborted" and len(queries) == count


async def test_canary_with_autoscaling_gets_its_own_hpa(emulator: ApiServerEmulator, start_operator: Any) -> None:
    clock = FakeClock()
    await start_operator(clock=clock)
    first = await first_revision(emulator, autoscaling={"minReplicas": 4, "maxReplicas": 8})
    hpa = await wait_for(lambda: emulator.get(HPAS, NS, "digits"), what="the HPA")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"digits-{first}"
    second = await start_canary(emulator, first)
    canary_hpa = await wait_for(lambda: emulator.get(HPAS, NS, f"digits-{second}"), what="the canary's HPA")
    assert canary_hpa["spec"]["scaleTargetRef"]["name"] == f"digits-{second}"
    assert canary_hpa["spec"]["minReplicas"] == 1  # ceil(4 * 10 %)
    assert canary_hpa["spec"]["maxReplicas"] == 8


async def test_a_second_canary_after_a_promotion_starts_afresh(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    """status.rollout is replaced whole (fields of the last canary do not linger under a merge patch)."""
    clock = FakeClock()
    await start_operator(clock=clock)
    first = await first_revision(emulator)
    second = await start_canary(emulator, first)
    for seconds in (31, 120, 301):
        clock.advance(seconds)
        await poke(emulator)
        await wait_for(lambda: (rollout_of(emulator).get("analysis") or {}).get("at") == _rfc(clock), what="analysis")
    await wait_for(lambda: rollout_of(emulator).get("phase") == "Promoted", what="promotion")
    promoted = rollout_of(emulator)
    assert promoted["stableRevision"] == second and "canaryRevision" not in promoted
    assert promoted["analysis"]["verdict"] == "Passed"  # the promotion's last analysis stays visible
    third = await start_canary(emulator, second, precision="int8")
    rollout = rollout_of(emulator)
    assert (rollout["canaryRevision"], rollout["stableRevision"], rollout["step"]) == (third, second, 1)
    assert "analysis" not in rollout  # none taken in this canary yet
    assert [r["hash"] for r in ms_status(emulator)["revisions"]] == [third, second, first]


async def test_immediate_strategy_keeps_history_and_rolls_back_without_a_job(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    """strategy immediate: today's single Deployment <name>, switched at once, with status.revisions kept."""
    await start_operator(clock=FakeClock())
    await create(emulator, modelservice(rollout={"strategy": "immediate"}))
    job = await wait_for(lambda: jobs_of(emulator) and jobs_of(emulator)[0], what="the first Job")
    first = job["metadata"]["labels"][HASH_LABEL]
    await finish_job(emulator, job, SUMMARY)
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, "digits"), what="the Deployment")
    await make_ready(emulator, "digits")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready")

    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"conversion": {"precision": "fp16"}}})
    job = await wait_for(
        lambda: next((j for j in jobs_of(emulator) if j["metadata"]["labels"][HASH_LABEL] != first), None),
        what="the second Job",
    )
    second = job["metadata"]["labels"][HASH_LABEL]
    await finish_job(emulator, job, SUMMARY)

    def served() -> str:
        return str(emulator.get(DEPLOYMENTS, NS, "digits")["metadata"]["annotations"][HASH_ANNOTATION])

    await wait_for(lambda: served() == second, what="switched at once")
    await wait_for(lambda: revisions_of(emulator).get(first, {}).get("outcome") == "Superseded", what="history")
    job_posts = len(_job_posts(emulator))

    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"conversion": {"precision": "fp32"}}})
    await wait_for(lambda: served() == first, what="rolled back")
    await wait_for(lambda: revisions_of(emulator).get(second, {}).get("outcome") == "RolledBack", what="RolledBack")
    assert len(_job_posts(emulator)) == job_posts
    assert deployment_names(emulator) == ["digits"]  # never a per-revision Deployment
    assert rollout_of(emulator)["phase"] == "Promoted"


async def test_adding_a_canary_rollout_hands_over_to_a_per_revision_deployment(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    """A ModelService served by today's <name> Deployment gets spec.rollout (canary): its revision moves to
    <name>-<hash> with no conversion, and <name> goes only once the new Deployment is available."""
    await start_operator(clock=FakeClock())
    await create(emulator, modelservice(serving={"replicas": 2}))
    job = await wait_for(lambda: jobs_of(emulator) and jobs_of(emulator)[0], what="the Job")
    served = job["metadata"]["labels"][HASH_LABEL]
    await finish_job(emulator, job, SUMMARY)
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, "digits"), what="today's Deployment")
    await make_ready(emulator, "digits")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready")
    job_posts = len(_job_posts(emulator))

    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"rollout": ROLLOUT}})
    own = await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{served}"), what="the per-revision one")
    assert own["metadata"]["annotations"][HASH_ANNOTATION] == served
    assert "digits" in deployment_names(emulator)  # keeps serving during the handover
    assert REVISION_LABEL not in emulator.get(SERVICES, NS, "digits")["spec"]["selector"]  # selects both meanwhile
    await make_ready(emulator, f"digits-{served}")
    await wait_for(lambda: deployment_names(emulator) == [f"digits-{served}"], what="today's Deployment retired")
    assert len(_job_posts(emulator)) == job_posts  # the same revision: no conversion
    assert revisions_of(emulator)[served]["outcome"] == "Serving"
    assert rollout_of(emulator)["phase"] == "Promoted"
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready again")
