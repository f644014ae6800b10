"""The Triton Deployment."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from modelservice.api.models import TEXT_TASKS, ModelService
from modelservice.render.delivery import model_delivery
from modelservice.render.job import GPU_RESOURCE, with_gpu_toleration
from modelservice.render.names import (
    COMPONENT_SERVER,
    GRPC_PORT,
    HASH_ANNOTATION,
    HTTP_PORT,
    METRICS_PORT,
    common_labels,
    deployment_name,
    metadata,
    selector_labels,
)
from modelservice.render.placement import server_affinity, spread_constraints
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig
from modelservice.render.quantity import mebibytes, parse_quantity
from modelservice.render.security import container_security_context, pod_security_context

CONTAINER_NAME = "triton"
# NVIDIA's Triton image, served when spec.serving.image is unset (text models get OperatorConfig.triton_text_image).
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"
SHM_DEFAULT = "1Gi"
SHM_MIN = "64Mi"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"


def is_text_model(ms: ModelService) -> bool:
    """Served as a Triton ensemble with a python tokenizer step (convert/textserving.py), which imports the
    tokenizers library: the stock Triton image lacks it."""
    return ms.spec.model.format == "huggingface" and ms.spec.model.task in TEXT_TASKS


def triton_image(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> str:
    """spec.serving.image when set; else the operator's text image for a text model, NVIDIA's stock image for
    every other model."""
    if ms.spec.serving.image:
        return ms.spec.serving.image
    return config.triton_text_image if is_text_model(ms) else DEFAULT_TRITON_IMAGE


def triton_args(repository: str) -> list[str]:
    """Triton's flags: model-control-mode none (poll/explicit could load code written into the repository
    later), strict readiness, exit on any load error, fixed ports."""
    return [
        f"--model-repository={repository}",
        "--strict-readiness=true",
        "--model-control-mode=none",
        "--exit-on-error=true",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
    ]


def shm_size(ms: ModelService) -> str:
    """/dev/shm (tmpfs counts against the memory limit): 1Gi, or a quarter of the memory limit when that is
    smaller, but at least 64Mi."""
    limit = ms.spec.serving.resources.limits.get("memory")
    if limit is None:
        return SHM_DEFAULT
    quarter = parse_quantity(limit) / 4
    size = max(min(quarter, parse_quantity(SHM_DEFAULT)), parse_quantity(SHM_MIN))
    return mebibytes(str(size.quantize(Decimal(1))))


def _probes(config: OperatorConfig) -> dict[str, Any]:
    def http(path: str, **extra: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, **extra}

    return {
        "startupProbe": http(
            READY_PATH,
            periodSeconds=config.startup_period_seconds,
            failureThreshold=config.startup_failure_threshold,
            timeoutSeconds=5,
        ),
        "readinessProbe": http(READY_PATH, periodSeconds=5, failureThreshold=3, timeoutSeconds=5),
        "livenessProbe": http(LIVE_PATH, periodSeconds=10, failureThreshold=3, timeoutSeconds=5),
    }


def triton_resources(ms: ModelService) -> dict[str, Any]:
    """Triton's container resources: spec.serving.resources, GPUs as nvidia.com/gpu limits."""
    resources = ms.spec.serving.resources
    limits: dict[str, Any] = dict(resources.limits)
    if resources.gpu > 0:
        limits[GPU_RESOURCE] = resources.gpu
    out: dict[str, Any] = {}
    if resources.requests:
        out["requests"] = dict(resources.requests)
    if limits:
        out["limits"] = limits
    return out


def _container(
    ms: ModelService, repository: str, mounts: list[dict[str, Any]], config: OperatorConfig
) -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": triton_image(ms, config),
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": triton_args(repository),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": triton_resources(ms),
        **_probes(config),
        "volumeMounts": [
            *mounts,
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }


def _pod_spec(ms: ModelService, hash_: str, config: OperatorConfig) -> dict[str, Any]:
    serving = ms.spec.serving
    delivery = model_delivery(ms, hash_, config)
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security_context(config.run_as_user),
        "containers": [_container(ms, delivery.repository, delivery.mounts, config)],
        "volumes": [
            *delivery.volumes,
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(ms)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    spread = spread_constraints(ms)
    if spread:
        pod["topologySpreadConstraints"] = spread
    if delivery.init_containers:
        pod["initContainers"] = delivery.init_containers
    if serving.node_selector:
        pod["nodeSelector"] = dict(serving.node_selector)
    tolerations = with_gpu_toleration(serving.tolerations) if serving.resources.gpu > 0 else serving.tolerations
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    affinity = server_affinity(ms)
    if affinity:
        pod["affinity"] = affinity
    return pod


def build_deployment(ms: ModelService, hash_: str, config: OperatorConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """Triton serving the repository of conversion ``hash_`` (``plan(...).deploy_hash``).

    ``replicas`` is left out when autoscaling is set (the HPA owns it). Rolling updates never take a ready
    replica away before its successor is ready (``maxUnavailable: 0``).
    """
    annotations = {HASH_ANNOTATION: hash_}
    template_annotations = {
        HASH_ANNOTATION: hash_,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(ms)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 3,
        # a rollout may take the whole startup budget before Kubernetes calls it stuck
        "progressDeadlineSeconds": config.startup_period_seconds * config.startup_failure_threshold + 600,
        "template": {
            "metadata": {"labels": common_labels(ms, COMPONENT_SERVER), "annotations": template_annotations},
            "spec": _pod_spec(ms, hash_, config),
        },
    }
    if ms.spec.autoscaling is None:
        spec = {"replicas": ms.spec.serving.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ms, deployment_name(ms), COMPONENT_SERVER, annotations=annotations),
        "spec": spec,
    }
