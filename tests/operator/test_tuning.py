"""The real kopf operator against the API emulator: the profiling (tuning) Job between conversion and deployment
(issue 11).

The test plays the Job controller and the kubelet for both Jobs (the profiler's termination message is a
``Performance`` summary, or an error line), and the Deployment controller. What stays simplified: the emulator
runs no pods, so the native Triton sidecar and the shared repository are only checked as rendered.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from emulator import ApiServerEmulator, wait_for
from modelservice.render.names import COMPONENT_TUNER, HASH_LABEL, LABEL_COMPONENT, TUNING_HASH_ANNOTATION
from test_lifecycle import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    HPAS,
    JOBS,
    MS_PATH,
    NS,
    PODS,
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

PERFORMANCE = {
    "config": {
        "maxBatchSize": 8,
        "dynamicBatching": True,
        "maxQueueDelayMicroseconds": 100,
        "preferredBatchSizes": [],
        "instances": 1,
    },
    "throughputPerReplica": 410.0,
    "latencyMs": {"p50": 12.0, "p95": 30.0, "p99": 41.0},
    "concurrency": 8,
    "target": "p99 <= 50 ms",
    "targetMet": True,
    "trialCount": 6,
    "measuredOn": "NVIDIA H100 80GB HBM3, Triton 2.54.0",
    "measuredAt": "2026-01-01T00:10:00Z",
}


def tuned_modelservice(p99: float = 50) -> dict[str, Any]:
    return modelservice(serving={"replicas": 1, "latencyTarget": {"p99Milliseconds": p99}})


def tune_jobs(emulator: ApiServerEmulator) -> list[dict[str, Any]]:
    return [j for j in jobs_of(emulator) if j["metadata"]["labels"].get(LABEL_COMPONENT) == COMPONENT_TUNER]


def conversion_jobs(emulator: ApiServerEmulator) -> list[dict[str, Any]]:
    return [j for j in jobs_of(emulator) if j["metadata"]["labels"].get(LABEL_COMPONENT) != COMPONENT_TUNER]


async def finish_tune_job(emulator: ApiServerEmulator, job: dict[str, Any], message: str, ok: bool = True) -> None:
    """What the Job controller and the kubelet do when the profiler exits (the Triton sidecar is stopped)."""
    name = job["metadata"]["name"]
    labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": name, "batch.kubernetes.io/job-name": name}
    pod = f"{name}-q4w8z"
    await emulator.put_object(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": NS, "labels": labels},
            "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
        },
    )
    finished = "2026-01-01T00:10:00Z"
    profiler = {"exitCode": 0 if ok else 1, "message": message, "finishedAt": finished}
    sidecar = {"exitCode": 143, "finishedAt": finished}
    status = {
        "phase": "Succeeded" if ok else "Failed",
        "initContainerStatuses": [{"name": "triton", "state": {"terminated": sidecar}}],
        "containerStatuses": [{"name": "profiler", "state": {"terminated": profiler}}],
    }
    await emulator.patch_object(PODS, NS, pod, {"status": status}, subresource="status")
    kind = "Complete" if ok else "Failed"
    condition_ = {"type": kind, "status": "True", "reason": "Done" if ok else "BackoffLimitExceeded"}
    job_status = {"succeeded" if ok else "failed": 1, "conditions": [condition_]}
    await emulator.patch_object(JOBS, NS, name, {"status": job_status}, subresource="status")


def tuning_annotation(emulator: ApiServerEmulator) -> str | None:
    deployment = emulator.get(DEPLOYMENTS, NS, "digits")
    assert deployment is not None
    value = (deployment["metadata"].get("annotations") or {}).get(TUNING_HASH_ANNOTATION)
    template = (deployment["spec"]["template"]["metadata"].get("annotations") or {}).get(TUNING_HASH_ANNOTATION)
    assert value == template, "the pod template carries the Deployment's tuning hash (pods restart on a new one)"
    return value if isinstance(value, str) else None


def pod_lists(emulator: ApiServerEmulator, job: dict[str, Any]) -> int:
    """How often the operator listed the pods of ``job`` (for its termination message)."""
    selector = f"job-name={job['metadata']['name']}"
    return sum(
        1
        for r in list(emulator._requests)
        if r.method.value == "GET" and "/pods" in r.url.path and r.params.get("labelSelector") == selector
    )


def events(emulator: ApiServerEmulator, reason: str) -> list[dict[str, Any]]:
    return [e for e in emulator.items(EVENTS, NS) if e.get("reason") == reason]


async def convert(emulator: ApiServerEmulator) -> dict[str, Any]:
    """Conversion first: its Job, then the profiling Job once it succeeded, and no Deployment meanwhile."""
    job = await wait_for(lambda: conversion_jobs(emulator) and conversion_jobs(emulator)[0], what="conversion Job")
    assert not tune_jobs(emulator), "no profiling before the conversion succeeded"
    await finish_job(emulator, job, SUMMARY)
    return await wait_for(lambda: tune_jobs(emulator) and tune_jobs(emulator)[0], what="the profiling Job")


async def test_conversion_then_tuning_then_deployment(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await create(emulator, tuned_modelservice())
    tune = await convert(emulator)

    # The profiling pod: Triton (a native sidecar) beside the profiler, on the converted repository.
    pod = tune["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["triton"] and pod["initContainers"][0]["restartPolicy"]
    assert [c["name"] for c in pod["containers"]] == ["profiler"]
    for container in pod["initContainers"] + pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    conversion = tune["metadata"]["labels"][HASH_LABEL]
    assert f"/models/{conversion}" in pod["containers"][0]["command"]
    assert emulator.get(CONFIGMAPS, NS, tune["metadata"]["name"]) is not None  # the spec it tunes for

    status = await wait_for(
        lambda: condition(ms_status(emulator), "Tuned").get("reason") == "Tuning" and ms_status(emulator),
        what="Tuned=False Tuning",
    )
    assert emulator.get(DEPLOYMENTS, NS, "digits") is None, "the Deployment waits for the tuned config"
    assert status["phase"] == "Converting"
    assert (
        condition(status, "Reconciling")["status"] == "True" and condition(status, "Reconciling")["reason"] == "Tuning"
    )
    assert condition(status, "Converted")["status"] == "True"

    await finish_tune_job(emulator, tune, json.dumps(PERFORMANCE))
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, "digits") is not None, what="the Deployment")
    assert tuning_annotation(emulator) == tune["metadata"]["labels"][TUNING_HASH_ANNOTATION]
    status = await wait_for(lambda: ms_status(emulator).get("performance") and ms_status(emulator), what="performance")
    assert status["performance"] == PERFORMANCE
    assert status["tuneJob"] == tune["metadata"]["name"]
    tuned = condition(status, "Tuned")
    assert tuned["status"] == "True" and "410 inferences/s per replica, p99 41 ms" in tuned["message"], tuned
    await wait_for(lambda: events(emulator, "Tuned"), what="a Tuned Event")

    await make_ready(emulator)
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Ready" and ms_status(emulator), what="Ready")
    assert status["performance"] == PERFORMANCE
    assert len(tune_jobs(emulator)) == 1, "the current tuning's Job stays (its logs) until its TTL"
    assert pod_lists(emulator, tune) == 1, "the summary is read once, then carried in the status"

    # A new latency target only: a new profiling Job, no conversion; Triton keeps serving the tuned config meanwhile.
    served = tuning_annotation(emulator)
    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"serving": {"latencyTarget": {"p99Milliseconds": 20}}}})
    retune = await wait_for(
        lambda: [j for j in tune_jobs(emulator) if j["metadata"]["name"] != tune["metadata"]["name"]],
        what="a new profiling Job",
    )
    retune = retune[0]
    assert retune["metadata"]["labels"][HASH_LABEL] == conversion
    assert len(conversion_jobs(emulator)) == 1, "a latency target does not convert again"
    status = await wait_for(
        lambda: ms_status(emulator).get("observedGeneration") == 2 and ms_status(emulator), what="generation 2"
    )
    assert status["phase"] == "Converting" and condition(status, "Ready")["reason"] == "Tuning"
    assert condition(status, "Available")["status"] == "True"
    assert tuning_annotation(emulator) == served and status["performance"] == PERFORMANCE
    await wait_for(lambda: len(tune_jobs(emulator)) == 1, what="the old tuning's Job pruned")

    faster = {**PERFORMANCE, "throughputPerReplica": 250.0, "latencyMs": {"p50": 5.0, "p95": 12.0, "p99": 18.0}}
    await finish_tune_job(emulator, retune, json.dumps(faster))
    await wait_for(lambda: tuning_annotation(emulator) != served, what="the Deployment rolled to the new tuning")
    assert tuning_annotation(emulator) == retune["metadata"]["labels"][TUNING_HASH_ANNOTATION]
    status = await wait_for(
        lambda: ms_status(emulator).get("performance") == faster and ms_status(emulator), what="new performance"
    )
    assert status["tuneJob"] == retune["metadata"]["name"]
    assert len(conversion_jobs(emulator)) == 1


async def test_a_failed_tuning_serves_untuned(emulator: ApiServerEmulator, start_operator: Any) -> None:
    await start_operator()
    await create(emulator, tuned_modelservice())
    tune = await convert(emulator)
    await finish_tune_job(emulator, tune, "tune: Triton did not load the model: out of memory", ok=False)

    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, "digits") is not None, what="the untuned Deployment")
    assert tuning_annotation(emulator) is None
    status = await wait_for(
        lambda: condition(ms_status(emulator), "Tuned").get("reason") == "TuningFailed" and ms_status(emulator),
        what="Tuned=False TuningFailed",
    )
    message = condition(status, "Tuned")["message"]
    assert "untuned" in message and "out of memory" in message, message
    assert "performance" not in status and "tuneJob" not in status
    warnings = await wait_for(lambda: events(emulator, "TuningFailed"), what="a Warning Event")
    assert warnings[0]["type"] == "Warning"

    await make_ready(emulator)
    status = await wait_for(lambda: ms_status(emulator).get("phase") == "Ready" and ms_status(emulator), what="Ready")
    assert condition(status, "Ready")["status"] == "True" and condition(status, "Stalled")["status"] == "False"
    assert condition(status, "Tuned")["reason"] == "TuningFailed"
    assert len(tune_jobs(emulator)) == 1, "the failed Job is not retried in a loop"
    assert pod_lists(emulator, tune) == 1, "the error is read once, then carried in the Tuned condition"
    assert len(events(emulator, "TuningFailed")) == 1


async def test_a_canary_starts_only_once_its_revision_is_tuned(
    emulator: ApiServerEmulator, start_operator: Any
) -> None:
    rollout = {"strategy": "canary", "steps": [{"weight": 10, "pause": "2m"}], "analysis": {"interval": "30s"}}
    await start_operator()
    body = modelservice(rollout=rollout, serving={"replicas": 2, "latencyTarget": {"p99Milliseconds": 50}})
    await create(emulator, body)
    tune = await convert(emulator)
    first = tune["metadata"]["labels"][HASH_LABEL]
    await wait_for(lambda: condition(ms_status(emulator), "Tuned").get("reason") == "Tuning", what="tuning")
    assert not emulator.items(DEPLOYMENTS, NS), "no revision serves before it is tuned"
    await finish_tune_job(emulator, tune, json.dumps(PERFORMANCE))
    stable = await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{first}"), what="the first revision")
    assert (
        stable["metadata"]["annotations"][TUNING_HASH_ANNOTATION] == tune["metadata"]["labels"][TUNING_HASH_ANNOTATION]
    )
    await make_ready(emulator, f"digits-{first}")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready")

    # A new conversion: its profiling Job runs before the canary's Deployment exists; the stable one keeps serving.
    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"conversion": {"precision": "fp16"}}})
    job = await wait_for(
        lambda: next((j for j in conversion_jobs(emulator) if j["metadata"]["labels"][HASH_LABEL] != first), None),
        what="the new revision's conversion Job",
    )
    second = job["metadata"]["labels"][HASH_LABEL]
    await finish_job(emulator, job, SUMMARY)
    retune = await wait_for(
        lambda: next((j for j in tune_jobs(emulator) if j["metadata"]["labels"][HASH_LABEL] == second), None),
        what="the new revision's profiling Job",
    )
    await wait_for(
        lambda: (
            ms_status(emulator).get("observedGeneration") == 2
            and condition(ms_status(emulator), "Tuned").get("reason") == "Tuning"
        ),
        what="tuning the new revision",
    )
    assert emulator.get(DEPLOYMENTS, NS, f"digits-{second}") is None, "the canary waits for its tuning"
    assert emulator.get(DEPLOYMENTS, NS, f"digits-{first}") is not None
    await finish_tune_job(emulator, retune, json.dumps(PERFORMANCE))
    canary = await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{second}"), what="the canary")
    tuned = retune["metadata"]["labels"][TUNING_HASH_ANNOTATION]
    assert canary["metadata"]["annotations"][TUNING_HASH_ANNOTATION] == tuned
    stable = emulator.get(DEPLOYMENTS, NS, f"digits-{first}")
    assert (
        stable["metadata"]["annotations"][TUNING_HASH_ANNOTATION] == tune["metadata"]["labels"][TUNING_HASH_ANNOTATION]
    )


async def test_autoscaling_follows_the_measured_throughput(emulator: ApiServerEmulator, start_operator: Any) -> None:
    """inferenceRate without a target: 80% of status.performance.throughputPerReplica once tuned (issue 11)."""
    await start_operator()
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "metrics": [{"type": "inferenceRate"}]}
    body = modelservice(serving={"replicas": 1, "latencyTarget": {"p99Milliseconds": 50}}, autoscaling=autoscaling)
    await create(emulator, body)
    tune = await convert(emulator)
    await finish_tune_job(emulator, tune, json.dumps(PERFORMANCE))
    await wait_for(lambda: ms_status(emulator).get("performance"), what="performance")
    await make_ready(emulator)

    def average() -> str | None:
        hpa = emulator.get(HPAS, NS, "digits")
        return hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] if hpa else None

    await wait_for(lambda: average() == "328", what="the HPA target from the measured 410/s")
