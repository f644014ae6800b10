"""The conversion Job: ``modelservice convert`` in the converter image, writing ``/models/<hash>`` on the claim."""

from __future__ import annotations

from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.names import (
    CACHE_DIR,
    COMPONENT_CONVERTER,
    HASH_LABEL,
    MODELS_DIR,
    SPEC_DIR,
    SPEC_FILE,
    common_labels,
    configmap_name,
    conversion_hash,
    job_name,
    metadata,
    pvc_name,
    repository_path,
    source_claims,
)
from modelservice.render.placement import converter_affinity
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig
from modelservice.render.security import container_security_context, pod_security_context

CONTAINER_NAME = "convert"
TERMINATION_LOG = "/dev/termination-log"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION: dict[str, Any] = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def conversion_needs_gpu(ms: ModelService) -> bool:
    """TensorRT engines (and fp16 TorchScript) are built on the kind of GPU that serves them."""
    conversion = ms.spec.conversion
    return conversion.target == "tensorrt" or (conversion.target == "torchscript" and conversion.precision == "fp16")


def converter_image(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> str:
    """The image of the conversion Job: the GPU converter (CUDA, TensorRT) when the conversion needs a GPU, else the
    CPU converter (a CPU conversion never pulls the CUDA image)."""
    return config.converter_gpu_image if conversion_needs_gpu(ms) else config.converter_image


def convert_command(ms: ModelService) -> list[str]:
    """The converter's command line. The compact JSON summary goes to the termination log, where the operator
    reads it from the pod status (Kubernetes keeps at most 4096 bytes of it); the conversion cache lives on the
    claim, shared by every conversion of this ModelService."""
    return [
        "modelservice",
        "convert",
        "-f",
        f"{SPEC_DIR}/{SPEC_FILE}",
        "--out",
        repository_path(conversion_hash(ms)),
        "--summary-file",
        TERMINATION_LOG,
        "--cache-dir",
        CACHE_DIR,
        "--quiet",
    ]


def with_gpu_toleration(tolerations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``tolerations`` plus the usual ``nvidia.com/gpu:NoSchedule`` taint toleration, unless one covers it."""
    if any(t.get("key") == GPU_RESOURCE and t.get("effect") in (None, "", "NoSchedule") for t in tolerations):
        return [dict(t) for t in tolerations]
    return [*(dict(t) for t in tolerations), dict(GPU_TOLERATION)]


def _volumes_and_mounts(ms: ModelService, config: OperatorConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    claim = pvc_name(ms)
    volumes: list[dict[str, Any]] = [
        {"name": "models", "persistentVolumeClaim": {"claimName": claim}},
        {"name": "spec", "configMap": {"name": configmap_name(ms)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": MODELS_DIR},
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for index, source in enumerate(source_claims(ms)):
        mount_path = f"{config.pvc_root.rstrip('/')}/{source}"
        if source == claim:  # the source lives on the model claim itself: mount the same volume again
            mounts.append({"name": "models", "mountPath": mount_path, "readOnly": True})
            continue
        name = f"source-{index}"
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": source, "readOnly": True}})
        mounts.append({"name": name, "mountPath": mount_path, "readOnly": True})
    return volumes, mounts


def _container(ms: ModelService, config: OperatorConfig, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    limits: dict[str, Any] = dict(config.converter_limits)
    if conversion_needs_gpu(ms):
        limits[GPU_RESOURCE] = 1
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": converter_image(ms, config),
        "imagePullPolicy": config.converter_image_pull_policy,
        "command": convert_command(ms),
        "env": [
            {"name": "MODELSERVICE_PVC_ROOT", "value": config.pvc_root},
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": dict(config.converter_requests), "limits": limits},
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": container_security_context(),
    }
    credentials = ms.spec.model.credentials
    if credentials is not None:
        container["envFrom"] = [{"secretRef": {"name": credentials.secret_name}}]
    return container


def _pod_spec(ms: ModelService, config: OperatorConfig) -> dict[str, Any]:
    volumes, mounts = _volumes_and_mounts(ms, config)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(config.run_as_user),
        "containers": [_container(ms, config, mounts)],
        "volumes": volumes,
    }
    base_affinity = None
    if conversion_needs_gpu(ms):  # built on the kind of GPU that serves it: Triton's placement
        serving = ms.spec.serving
        pod["tolerations"] = with_gpu_toleration(serving.tolerations)
        if serving.node_selector:
            pod["nodeSelector"] = dict(serving.node_selector)
        base_affinity = serving.affinity
    affinity = converter_affinity(ms, base_affinity)
    if affinity:
        pod["affinity"] = affinity
    return pod


def build_job(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """``<name>-convert-<hash>``: a changed conversion input makes a new Job; an unchanged spec never re-runs.

    Retries are few (``backoffLimit``), bounded in time (``activeDeadlineSeconds``), evictions do not count
    against them (``podFailurePolicy``), and the finished Job is cleaned up after ``ttlSecondsAfterFinished``.
    """
    hash_ = conversion_hash(ms)
    labels = {**common_labels(ms, COMPONENT_CONVERTER), HASH_LABEL: hash_}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(ms, job_name(ms, hash_), COMPONENT_CONVERTER, extra_labels={HASH_LABEL: hash_}),
        "spec": {
            "backoffLimit": config.job_backoff_limit,
            "activeDeadlineSeconds": config.job_active_deadline_seconds,
            "ttlSecondsAfterFinished": config.job_ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}],
            },
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec(ms, config)},
        },
    }
