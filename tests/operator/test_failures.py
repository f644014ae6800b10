"""Bad specs, failed conversions, API errors, deletion, restarts and resyncs: the operator against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

from emulator import MS_RESOURCE, ApiServerEmulator, wait_for
from modelservice import metrics
from test_lifecycle import (
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    MS_PATH,
    NS,
    SERVICES,
    SUMMARY,
    condition,
    converge_ready,
    create,
    finish_job,
    jobs_of,
    modelservice,
    ms_status,
    patch,
)


def writes_about(emulator: ApiServerEmulator, since: int, name: str = "digits") -> list[Any]:
    return [r for r in emulator.writes(since) if name in r.url.path or name in r.text]


async def settle(seconds: float = 0.6) -> None:
    """Give the operator time to do anything it would (wrongly) do."""
    await asyncio.sleep(seconds)


async def test_local_uri_is_stalled_naming_the_field_without_hot_loop(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    await start_operator()
    body = modelservice()
    body["spec"]["model"]["uri"] = "file:///home/me/model.onnx"  # the schema admits it (the local CLI reads it)
    await create(emulator, body)
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Failed" and ms_status(emulator), what="Failed")
    await wait_for(lambda: emulator.items(EVENTS, NS), what="the Event")
    stalled = condition(status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    assert "spec.model.uri" in stalled["message"]
    assert condition(status, "Ready")["status"] == "False"
    assert status["observedGeneration"] == 1
    assert emulator.items(JOBS, NS) == [] and emulator.items(SERVICES, NS) == []
    before = emulator.request_count
    await settle()
    assert emulator.writes(before) == []  # never retried in a loop
    assert [e["reason"] for e in emulator.items(EVENTS, NS)] == ["Failed"]

    # Fixing the spec recovers.
    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"model": {"uri": "s3://models/digits/model.onnx"}}})
    status = await wait_for(
        lambda: ms_status(emulator).get("phase") == "Converting" and ms_status(emulator), what="Converting"
    )
    assert condition(status, "Stalled")["status"] == "False"
    assert status["observedGeneration"] == 2


async def test_rule_only_pydantic_knows_is_stalled_naming_the_field(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    await start_operator()
    # minReplicas > maxReplicas: the CRD's CEL rule rejects it on a real server; the emulator has no admission,
    # so this stands for any object that slipped past the schema (e.g. applied before the CRD was updated).
    await create(emulator, modelservice(autoscaling={"minReplicas": 5, "maxReplicas": 2}))
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Failed" and ms_status(emulator), what="Failed")
    assert "spec.autoscaling.minReplicas" in condition(status, "Stalled")["message"]


async def test_failed_conversion_is_reported_and_not_retried(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await create(emulator, modelservice())
    job = (await wait_for(lambda: jobs_of(emulator), what="the Job"))[0]
    await finish_job(emulator, job, None, ok=False)
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Failed" and ms_status(emulator), what="Failed")
    converted = condition(status, "Converted")
    assert converted["status"] == "False" and converted["reason"] == "ConversionFailed"
    assert "accuracy dropped by 0.2" in converted["message"]
    await wait_for(lambda: any(e["reason"] == "Failed" for e in emulator.items(EVENTS, NS)), what="the Event")
    assert condition(status, "Stalled")["status"] == "True"
    assert emulator.get(DEPLOYMENTS, NS, "digits") is None
    before = emulator.request_count
    await settle()
    assert emulator.writes(before) == []
    assert len(jobs_of(emulator)) == 1  # the failed Job stays (logs); no new Job until the spec changes

    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"conversion": {"precision": "fp16"}}})
    new_job = await wait_for(
        lambda: [j for j in jobs_of(emulator) if j["metadata"]["name"] != job["metadata"]["name"]],
        what="a new Job for the new hash",
    )
    assert len(new_job) == 1
    await wait_for(lambda: len(jobs_of(emulator)) == 1, what="the failed Job of the old hash removed")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Converting", what="Converting")


async def test_api_errors_are_retried_with_backoff(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    job_fault = emulator.fail("POST", r"/jobs$", 500, times=2)
    status_fault = emulator.fail("PATCH", r"/modelservices/digits/status$", 409, times=1)
    errors_before = metrics.API_ERRORS.labels(verb="POST", resource="jobs", code="500")._value.get()
    await create(emulator, modelservice())
    await wait_for(lambda: ms_status(emulator).get("phase") == "Converting", what="Converting despite errors")
    assert job_fault.hits == 2 and status_fault.hits == 1
    assert len(jobs_of(emulator)) == 1
    assert metrics.API_ERRORS.labels(verb="POST", resource="jobs", code="500")._value.get() == errors_before + 2


async def test_unavailable_api_server_during_reconcile_recovers(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    await start_operator()
    emulator.fail(
        "POST", r"/namespaces/ml/(jobs|services|configmaps|persistentvolumeclaims)$", 503, times=3
    )  # every create fails for a while
    await create(emulator, modelservice())
    await wait_for(lambda: ms_status(emulator).get("phase") == "Converting", timeout=30, what="Converting after 503s")


async def test_resync_and_restart_write_nothing(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator(resync_seconds=0.2)
    await converge_ready(emulator)
    await settle(0.3)
    before = emulator.request_count
    await settle(0.8)  # several resyncs
    assert emulator.writes(before) == []

    # A second operator (as after a restart) finds everything in place: kopf holds the reconciles until the
    # children's initial listing is in the cache, so nothing is created, patched or 409-ed.
    before = emulator.request_count
    await start_operator()
    await settle(1.0)
    assert emulator.writes(before) == []


async def test_deleted_child_is_recreated(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await converge_ready(emulator)
    async with emulator.request("DELETE", f"/api/v1/namespaces/{NS}/services/digits") as response:
        assert response.status == 200
    await wait_for(lambda: emulator.get(SERVICES, NS, "digits"), what="the Service recreated")


async def test_foreign_object_in_the_way_is_stalled(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await emulator.put_object(
        SERVICES,
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "digits", "namespace": NS}, "spec": {"ports": []}},
    )
    await create(emulator, modelservice())
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Failed" and ms_status(emulator), what="Failed")
    stalled = condition(status, "Stalled")
    assert stalled["reason"] == "ChildConflict" and "Service digits" in stalled["message"]
    assert "ownerReferences" not in (emulator.get(SERVICES, NS, "digits") or {})["metadata"]  # left alone


async def test_deletion_leaves_children_to_garbage_collection(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await converge_ready(emulator)
    before = emulator.request_count
    async with emulator.request("DELETE", f"{MS_PATH}/digits") as response:
        assert response.status == 200
    # The emulator's garbage collector follows owner references, as the cluster's does.
    assert emulator.get(MS_RESOURCE, NS, "digits") is None
    assert emulator.get(DEPLOYMENTS, NS, "digits") is None and emulator.get(SERVICES, NS, "digits") is None
    await settle()
    # The operator noticed the children go and recreated nothing; it added no finalizer either.
    assert [r for r in emulator.writes(before) if r.method.value != "DELETE"] == []
    assert not any(e["reason"] == "Failed" for e in emulator.items(EVENTS, NS))


async def test_namespaced_operator_ignores_other_namespaces(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator(namespaces=["other"])
    await create(emulator, modelservice())
    await settle(0.8)
    assert ms_status(emulator) == {} and jobs_of(emulator) == []


async def test_namespaced_operator_serves_its_namespace(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator(namespaces=[NS])
    await create(emulator, modelservice())
    await wait_for(lambda: ms_status(emulator).get("phase") == "Converting", what="Converting")
    watches = [r for r in emulator._requests if r.params.get("watch") == "true" and r.resource is not None]
    assert all(
        r.namespace == NS for r in watches if r.resource.plural not in ("customresourcedefinitions", "namespaces")
    )


async def test_conversion_result_is_copied_once(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await create(emulator, modelservice())
    job = (await wait_for(lambda: jobs_of(emulator), what="the Job"))[0]
    before = emulator.request_count
    await finish_job(emulator, job, SUMMARY)
    await wait_for(lambda: ms_status(emulator).get("artifact"), what="the artifact")
    await settle()
    pod_lists = [r for r in list(emulator._requests)[before:] if r.method.value == "GET" and "/pods" in r.url.path]
    assert len(pod_lists) == 1


async def test_dropped_watches_are_resumed(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await create(emulator, modelservice())
    job = (await wait_for(lambda: jobs_of(emulator), what="the Job"))[0]
    watches_before = sum(1 for r in emulator._requests if r.params.get("watch") == "true")
    await emulator.drop_watches()
    await finish_job(emulator, job, SUMMARY)  # happens while kopf reconnects
    await wait_for(lambda: ms_status(emulator).get("phase") == "Deploying", what="Deploying after reconnecting")
    assert sum(1 for r in emulator._requests if r.params.get("watch") == "true") > watches_before


async def test_child_kind_the_server_does_not_serve_is_stalled(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    await start_operator()
    emulator.fail("POST", r"/httproutes$", 404, times=1000)  # a cluster without Gateway API
    route = {"parentRefs": [{"name": "gateway"}], "hostnames": ["digits.example.com"]}
    await create(emulator, modelservice(exposure={"httpRoute": route}))
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Failed" and ms_status(emulator), what="Failed")
    stalled = condition(status, "Stalled")
    assert stalled["reason"] == "ChildRejected" and "HTTPRoute/digits: 404" in stalled["message"]
    assert emulator.get(SERVICES, NS, "digits") is not None  # what could be created was
    await settle(0.3)  # reconciles already triggered by the children's watch events
    before = emulator.request_count
    await settle()
    assert emulator.writes(before) == []


async def test_cluster_without_gateway_api(emulator: ApiServerEmulator, start_operator: Any) -> None:
    """Kinds the cluster does not serve are not watched and do not hold the operator back."""
    del emulator.resources["gateway.networking.k8s.io/v1/httproutes"]
    await start_operator()
    await create(emulator, modelservice())
    await wait_for(lambda: ms_status(emulator).get("phase") == "Converting", what="Converting")
