"""Reads: what the operator observed for one ModelService, from the watch cache (and, once per finished
conversion, the conversion pod's termination message, listed on demand).

The conversion Job's container writes a compact JSON summary to /dev/termination-log::

    {"artifact": {"uri", "format", "precision", "sha256", "sizeBytes", "sourceSha256"},
     "verification": {"metric", "maxAbsError", "maxRelError", "accuracy", "referenceAccuracy", "minCosine",
                      "top1Agreement", "passed"}}

which the kubelet copies into the pod's ``status.containerStatuses[].state.terminated.message``.
"""

from __future__ import annotations

import json
from typing import Any

from modelservice.api.models import ModelService
from modelservice.controller.apply import CHILD_KINDS, POD
from modelservice.controller.cache import Cache
from modelservice.controller.client import ApiError, KubeClient
from modelservice.controller.status import ConversionResult
from modelservice.render import Observed, deployment_name, is_owned_by, job_name, job_state, pvc_name
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig
from modelservice.render.tuneplan import current_tune_job_name, tuning_wanted

JOB_NAME_LABEL = "job-name"  # set by the Job controller on its pods (also batch.kubernetes.io/job-name)
ARTIFACT_KEYS = ("uri", "format", "precision", "sha256", "sizeBytes", "sourceSha256")
VERIFICATION_KEYS = (
    "metric", "maxAbsError", "maxRelError", "accuracy", "referenceAccuracy", "minCosine", "top1Agreement", "passed"
)  # fmt: skip


def _kind(kind: str) -> tuple[str, str]:
    for (api_version, name), _ in CHILD_KINDS.items():
        if name == kind:
            return api_version, name
    raise KeyError(kind)


def cached_child(cache: Cache, ms: ModelService, kind: str, name: str) -> dict[str, Any] | None:
    api_version, kind_name = _kind(kind)
    return cache.get(api_version, kind_name, ms.namespace, name)


async def observe(
    client: KubeClient, cache: Cache, ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG
) -> Observed:
    """``Observed`` for the renderer: the Deployment, the current hash's Job state, a foreign model claim, and
    the state of the current tuning hash's profiling Job (looked up only when tuning is wanted)."""
    deployment = cached_child(cache, ms, "Deployment", deployment_name(ms))
    if deployment is not None and not is_owned_by(deployment, ms):
        deployment = None  # not ours: apply reports the conflict
    job = cached_child(cache, ms, "Job", job_name(ms))
    pvc = cached_child(cache, ms, "PersistentVolumeClaim", pvc_name(ms))
    external = False
    if pvc is None and ms.spec.storage.pvc.name:
        # A claim named in the spec may be the user's own (unlabelled, so not in the cache): look it up.
        external = await _foreign_claim_exists(client, cache, ms)
    elif pvc is not None:
        external = not is_owned_by(pvc, ms)
    tune = cached_child(cache, ms, "Job", current_tune_job_name(ms, config)) if tuning_wanted(ms) else None
    return Observed(
        deployment=deployment,
        conversion_job=job_state(job) if job is not None else None,
        pvc_external=external,
        tune_job=job_state(tune) if tune is not None else None,
    )


async def _foreign_claim_exists(client: KubeClient, cache: Cache, ms: ModelService) -> bool:
    api_version, kind_name = _kind("PersistentVolumeClaim")
    try:
        claim = await client.get(CHILD_KINDS[(api_version, kind_name)], ms.namespace, pvc_name(ms))
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return not is_owned_by(claim, ms)


def parse_summary(message: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(artifact, verification) from a termination message; (None, None) when it is not the JSON summary."""
    try:
        data = json.loads(message)
    except (ValueError, TypeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    artifact = data.get("artifact") if isinstance(data.get("artifact"), dict) else None
    verification = data.get("verification") if isinstance(data.get("verification"), dict) else None
    return (
        {k: artifact[k] for k in ARTIFACT_KEYS if artifact.get(k) is not None} if artifact else None,
        {k: verification[k] for k in VERIFICATION_KEYS if verification.get(k) is not None} if verification else None,
    )


def _termination_message(pods: list[dict[str, Any]]) -> str:
    """The message of the most recently finished container among the Job's pods."""
    best: tuple[str, str] = ("", "")
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        for container in statuses:
            terminated = (container.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if message:
                finished = str(terminated.get("finishedAt") or "")
                if finished >= best[0]:
                    best = (finished, str(message))
    return best[1].strip()


def job_failure(job: dict[str, Any]) -> str:
    """The message (or reason) of a Job's Failed/FailureTarget condition; empty when it has none."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Failed", "FailureTarget") and condition.get("status") == "True":
            return str(condition.get("message") or condition.get("reason") or "")
    return ""


async def conversion_result(
    client: KubeClient, cache: Cache, ms: ModelService, previous: dict[str, Any]
) -> ConversionResult | None:
    """The finished current Job's report; reused from the status when it already holds this Job's result."""
    name = job_name(ms)
    job = cached_child(cache, ms, "Job", name)
    if job is None:
        return None
    state = job_state(job)
    if state == "running":
        return None
    if state == "succeeded" and previous.get("conversionJob") == name and previous.get("artifact"):
        return ConversionResult(name, True, "", previous.get("artifact"), previous.get("verification"))
    if state == "failed":
        converted: dict[str, Any] = next(
            (c for c in previous.get("conditions") or [] if c.get("type") == "Converted"), {}
        )
        prefix = f"Job {name} failed: "
        if converted.get("reason") == "ConversionFailed" and str(converted.get("message", "")).startswith(prefix):
            return ConversionResult(name, False, str(converted["message"])[len(prefix) :])
    pods = await client.list(POD, ms.namespace, label_selector=f"{JOB_NAME_LABEL}={name}")
    message = _termination_message(pods)
    artifact, verification = parse_summary(message)
    if state == "failed":
        detail = message if artifact is None and message else job_failure(job)
        return ConversionResult(name, False, detail.splitlines()[-1][:512] if detail else "")
    return ConversionResult(name, True, "", artifact, verification)
