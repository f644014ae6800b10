"""The real kopf operator against the API emulator over loopback HTTP: the life of a ModelService.

The test plays the cluster's controllers: it writes a Job's status and its pod's termination message (as the Job
controller and the kubelet would), and a Deployment's status (as the Deployment controller would).
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from kmock import resource

from emulator import MS_RESOURCE, ApiServerEmulator, wait_for
from modelservice.render.names import HASH_ANNOTATION, NAME_LABEL

NS = "ml"
JOBS = resource("batch", "v1", "jobs")
DEPLOYMENTS = resource("apps", "v1", "deployments")
SERVICES = resource("", "v1", "services")
PODS = resource("", "v1", "pods")
PVCS = resource("", "v1", "persistentvolumeclaims")
CONFIGMAPS = resource("", "v1", "configmaps")
PDBS = resource("policy", "v1", "poddisruptionbudgets")
HPAS = resource("autoscaling", "v2", "horizontalpodautoscalers")
EVENTS = resource("", "v1", "events")
MS_PATH = f"/apis/modelservice.dev/v1alpha1/namespaces/{NS}/modelservices"

SUMMARY = {
    "artifact": {
        "uri": "pvc://digits-models/abc/digits",
        "format": "onnx",
        "precision": "fp32",
        "sha256": "a" * 64,
        "sizeBytes": 1234,
        "sourceSha256": "b" * 64,
    },
    "verification": {
        "maxAbsError": 0.0001,
        "maxRelError": 0.001,
        "accuracy": 0.98,
        "referenceAccuracy": 0.98,
        "passed": True,
    },
}


def modelservice(name: str = "digits", **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": "s3://models/digits/model.onnx", "format": "onnx"},
        "conversion": {"target": "onnx", "precision": "fp32"},
        "serving": {"replicas": 1},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


async def create(emulator: ApiServerEmulator, body: dict[str, Any]) -> dict[str, Any]:
    async with emulator.post(MS_PATH, json=body) as response:
        assert response.status < 300, await response.text()
        created: dict[str, Any] = await response.json()
        return created


async def patch(emulator: ApiServerEmulator, path: str, body: Any) -> dict[str, Any]:
    headers = {"Content-Type": "application/merge-patch+json"}
    async with emulator.patch(path, data=json.dumps(body), headers=headers) as response:
        assert response.status < 300, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def ms_status(emulator: ApiServerEmulator, name: str = "digits") -> dict[str, Any]:
    obj = emulator.get(MS_RESOURCE, NS, name) or {}
    return dict(obj.get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def jobs_of(emulator: ApiServerEmulator, name: str = "digits") -> list[dict[str, Any]]:
    return [j for j in emulator.items(JOBS, NS) if j["metadata"]["labels"].get(NAME_LABEL) == name]


async def finish_job(
    emulator: ApiServerEmulator, job: dict[str, Any], summary: dict[str, Any] | None, ok: bool = True
) -> None:
    """What the Job controller and the kubelet do when the converter exits."""
    name = job["metadata"]["name"]
    message = json.dumps(summary) if summary is not None else "verification failed: accuracy dropped by 0.2"
    labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": name, "batch.kubernetes.io/job-name": name}
    await emulator.put_object(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-x7k2p", "namespace": NS, "labels": labels},
            "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
        },
    )
    terminated = {"exitCode": 0 if ok else 1, "message": message, "finishedAt": "2026-01-01T00:00:00Z"}
    await emulator.patch_object(
        PODS,
        NS,
        f"{name}-x7k2p",
        {
            "status": {
                "phase": "Succeeded" if ok else "Failed",
                "containerStatuses": [{"name": "convert", "state": {"terminated": terminated}}],
            }
        },
        subresource="status",
    )
    kind = "Complete" if ok else "Failed"
    await emulator.patch_object(
        JOBS,
        NS,
        name,
        {
            "status": {
                "succeeded" if ok else "failed": 1,
                "conditions": [{"type": kind, "status": "True", "reason": "Done" if ok else "BackoffLimitExceeded"}],
            }
        },
        subresource="status",
    )


async def make_ready(emulator: ApiServerEmulator, name: str = "digits", ready: int | None = None) -> None:
    """What the Deployment controller reports once the pods are ready."""
    deployment = emulator.get(DEPLOYMENTS, NS, name)
    assert deployment is not None
    replicas = deployment["spec"].get("replicas", 1)
    ready = replicas if ready is None else ready
    await emulator.patch_object(
        DEPLOYMENTS,
        NS,
        name,
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
        },
        subresource="status",
    )


async def test_create_convert_deploy_ready(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    created = await create(emulator, modelservice())
    uid = created["metadata"]["uid"]

    status = await wait_for(
        lambda: ms_status(emulator).get("phase") == "Converting" and ms_status(emulator), what="Converting"
    )
    jobs = jobs_of(emulator)
    assert len(jobs) == 1
    job = jobs[0]
    assert job["metadata"]["ownerReferences"][0]["uid"] == uid
    assert emulator.get(SERVICES, NS, "digits")["metadata"]["ownerReferences"][0]["uid"] == uid
    assert emulator.get(DEPLOYMENTS, NS, "digits") is None  # no Deployment before the first conversion
    assert condition(status, "Converted")["reason"] == "Converting"
    assert condition(status, "Reconciling")["status"] == "True"
    assert status["observedGeneration"] == 1

    await finish_job(emulator, job, SUMMARY)
    status = await wait_for(
        lambda: ms_status(emulator).get("phase") == "Deploying" and ms_status(emulator), what="Deploying"
    )
    assert status["artifact"] == SUMMARY["artifact"]
    assert status["verification"] == SUMMARY["verification"]
    assert condition(status, "Converted") | {"lastTransitionTime": None} == condition(status, "Converted") | {
        "lastTransitionTime": None
    }
    assert condition(status, "Converted")["reason"] == "Verified"
    deployment = emulator.get(DEPLOYMENTS, NS, "digits")
    assert deployment is not None
    assert (
        deployment["metadata"]["annotations"][HASH_ANNOTATION]
        == job["metadata"]["labels"]["modelservice.dev/conversion-hash"]
    )
    assert emulator.get(PDBS, NS, "digits") is not None

    await make_ready(emulator)
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Ready" and ms_status(emulator), what="Ready")
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Ready")["observedGeneration"] == 1
    assert condition(status, "Stalled")["status"] == "False"
    assert status["readyReplicas"] == 1
    assert status["endpoints"]["http"] == "http://digits.ml.svc:8000"
    assert status["selector"]
    # Children are watched with a server-side label selector (only what the operator manages).
    child_watches = [
        r
        for r in emulator._requests
        if r.params.get("watch") == "true"
        and r.resource is not None
        and r.resource.plural not in ("modelservices", "customresourcedefinitions")
    ]
    assert len({r.resource.plural for r in child_watches}) == 9
    assert all(
        r.params.get("labelSelector") == "app.kubernetes.io/managed-by=modelservice-operator" for r in child_watches
    )
    await wait_for(lambda: len(emulator.items(EVENTS, NS)) >= 3, what="three Events")
    await asyncio.sleep(0.2)
    events = [e["reason"] for e in emulator.items(EVENTS, NS)]
    assert events == ["Converting", "Deploying", "Ready"], events
    assert events.count("Converting") == 1 and events.count("Deploying") == 1 and events.count("Ready") == 1


async def converge_ready(emulator: ApiServerEmulator, name: str = "digits", **spec: Any) -> dict[str, Any]:
    """Create a ModelService and play the cluster until it is Ready; returns the created object."""
    created = await create(emulator, modelservice(name, **spec))
    await wait_for(lambda: jobs_of(emulator, name), what="the conversion Job")
    await finish_job(emulator, jobs_of(emulator, name)[0], SUMMARY)
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, name), what="the Deployment")
    await make_ready(emulator, name)
    await wait_for(lambda: ms_status(emulator, name).get("phase") == "Ready", what="Ready")
    await wait_for(
        lambda: any(e["reason"] == "Ready" and name in e["metadata"]["name"] for e in emulator.items(EVENTS, NS)),
        what="the Ready Event",
    )
    return created


async def test_spec_change_converts_again_then_moves_the_deployment(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    await start_operator()
    await converge_ready(emulator)
    old_job = jobs_of(emulator)[0]["metadata"]["name"]
    deployment_uid = emulator.get(DEPLOYMENTS, NS, "digits")["metadata"]["uid"]

    # A field outside the conversion hash: the Deployment is patched at once, no new conversion.
    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"serving": {"resources": {"requests": {"cpu": "2"}}}}})
    await wait_for(lambda: ms_status(emulator).get("observedGeneration") == 2, what="generation 2 observed")

    def cpu_request() -> str:
        deployment = emulator.get(DEPLOYMENTS, NS, "digits") or {}
        containers = deployment["spec"]["template"]["spec"]["containers"]
        return str(containers[0]["resources"]["requests"]["cpu"])

    await wait_for(lambda: cpu_request() == "2", what="the Deployment's cpu request patched")
    assert [j["metadata"]["name"] for j in jobs_of(emulator)] == [old_job]

    # A field inside the hash: a new Job; the Deployment keeps serving the old hash until it succeeds.
    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"conversion": {"precision": "int8"}}})
    status = await wait_for(
        lambda: ms_status(emulator).get("phase") == "Converting" and ms_status(emulator), what="Converting again"
    )
    assert status["observedGeneration"] == 3
    new_jobs = [j for j in jobs_of(emulator) if j["metadata"]["name"] != old_job]
    assert len(new_jobs) == 1
    old_hash = emulator.get(DEPLOYMENTS, NS, "digits")["metadata"]["annotations"][HASH_ANNOTATION]
    assert old_hash == old_job.rsplit("-", 1)[-1]
    assert condition(status, "Available")["status"] == "True"  # the old model still serves

    await finish_job(emulator, new_jobs[0], SUMMARY)
    new_hash = new_jobs[0]["metadata"]["name"].rsplit("-", 1)[-1]
    await wait_for(
        lambda: (emulator.get(DEPLOYMENTS, NS, "digits") or {})["metadata"]["annotations"][HASH_ANNOTATION] == new_hash,
        what="the Deployment moved to the new hash",
    )
    deployment = emulator.get(DEPLOYMENTS, NS, "digits")
    assert deployment is not None and deployment["metadata"]["uid"] == deployment_uid  # patched, never recreated
    await wait_for(lambda: emulator.get(JOBS, NS, old_job) is None, what="the old hash's Job pruned")
    await make_ready(emulator)
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Ready" and ms_status(emulator), what="Ready")
    assert status["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    posts = [r for r in emulator.writes() if r.method.value == "POST" and "/deployments" in r.url.path]
    assert len(posts) == 1


async def test_scale_subresource_patches_deployment_replicas(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await converge_ready(emulator)
    scale_path = f"{MS_PATH}/digits/scale"
    async with emulator.request("GET", scale_path) as response:
        scale = await response.json()
    assert scale["spec"]["replicas"] == 1 and scale["status"]["replicas"] == 1
    assert scale["status"]["selector"]

    await patch(emulator, scale_path, {"spec": {"replicas": 3}})  # what kubectl scale sends
    await wait_for(
        lambda: (emulator.get(DEPLOYMENTS, NS, "digits") or {})["spec"].get("replicas") == 3, what="replicas 3"
    )
    status = await wait_for(
        lambda: ms_status(emulator).get("observedGeneration") == 2 and ms_status(emulator), what="generation 2"
    )
    assert status["phase"] == "Deploying"  # the Deployment controller has not caught up yet
    await make_ready(emulator)
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Ready" and ms_status(emulator), what="Ready")
    assert status["replicas"] == 3 and status["readyReplicas"] == 3


async def test_deployment_losing_replicas_is_degraded(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await converge_ready(emulator, serving={"replicas": 2})
    await make_ready(emulator, ready=1)
    status = await wait_for(
        lambda: ms_status(emulator).get("phase") == "Degraded" and ms_status(emulator), what="Degraded"
    )
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Available")["status"] == "True"
    warnings = await wait_for(
        lambda: [e for e in emulator.items(EVENTS, NS) if e["reason"] == "Degraded"], what="the Degraded Event"
    )
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"


async def test_triton_repository_is_served_without_conversion(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await create(
        emulator,
        modelservice(
            model={"uri": "s3://models/digits-repository/", "format": "triton-repository"},
            conversion={"target": "none"},
        ),
    )
    status = await wait_for(
        lambda: ms_status(emulator).get("phase") == "Deploying" and ms_status(emulator), what="Deploying"
    )
    assert jobs_of(emulator) == []
    assert condition(status, "Converted")["status"] == "True"
    await make_ready(emulator)
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready")
