"""Model delivery: how Triton's pod gets the repository it serves.

- converted models: the model claim, mounted read-only at /models; Triton reads ``/models/<hash>`` (versioned
  folders, so a new conversion never rewrites files a running Triton reads);
- a ``triton-repository`` on a PVC: that claim mounted read-only in place (``subPath`` = the URI's path);
- a ``triton-repository`` in an object store or on http(s): an init container (``modelservice fetch``, the
  same fetch code as conversion, digest checked) fills an emptyDir that Triton then mounts read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelservice.api.errors import FieldProblem, SpecError
from modelservice.api.models import CLUSTER_SCHEMES, ModelService, uri_scheme
from modelservice.render.names import (
    FETCHED_REPOSITORY,
    MODELS_DIR,
    needs_conversion,
    parse_pvc_uri,
    pvc_name,
    repository_path,
)
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig
from modelservice.render.security import container_security_context

FETCH_CONTAINER = "fetch"


@dataclass(frozen=True)
class Delivery:
    """Volumes, mounts and init containers that put the repository at ``repository`` inside Triton's pod."""

    repository: str
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    init_containers: list[dict[str, Any]] = field(default_factory=list)


def check_cluster_uris(ms: ModelService) -> None:
    """Raise SpecError naming the field when a URI only the local CLI can read (file://, a path) is used."""
    uris = {
        "spec.model.uri": ms.spec.model.uri,
        "spec.conversion.verification.dataUri": ms.spec.conversion.verification.data_uri,
    }
    calibration = ms.spec.conversion.quantization.calibration
    if calibration is not None:
        uris["spec.conversion.quantization.calibration.uri"] = calibration.uri
    problems = [
        FieldProblem(
            path,
            f"{uri_scheme(uri)}:// sources are for the local CLI; in a cluster use "
            + ", ".join(f"{s}://" for s in CLUSTER_SCHEMES),
        )
        for path, uri in uris.items()
        if uri is not None and uri_scheme(uri) not in CLUSTER_SCHEMES
    ]
    if problems:
        raise SpecError(f"{ms.namespace}/{ms.name}", problems)


def _fetch_container(ms: ModelService, config: OperatorConfig) -> dict[str, Any]:
    source = ms.spec.model
    command = ["modelservice", "fetch", source.uri, "--out", FETCHED_REPOSITORY, "--quiet"]
    if source.sha256:
        command += ["--sha256", source.sha256]
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": config.converter_image,
        "imagePullPolicy": config.converter_image_pull_policy,
        "command": command,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }
    if source.credentials is not None:
        container["envFrom"] = [{"secretRef": {"name": source.credentials.secret_name}}]
    return container


def model_delivery(ms: ModelService, hash_: str, config: OperatorConfig = DEFAULT_CONFIG) -> Delivery:
    """How the pod serving ``hash_`` of ``ms`` gets its model repository."""
    read_only_mount = {"name": "models", "mountPath": MODELS_DIR, "readOnly": True}
    if needs_conversion(ms):
        volume = {"name": "models", "persistentVolumeClaim": {"claimName": pvc_name(ms), "readOnly": True}}
        return Delivery(repository_path(hash_), [volume], [read_only_mount])
    uri = ms.spec.model.uri
    if uri_scheme(uri) == "pvc":
        claim, path = parse_pvc_uri(uri)
        volume = {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        mount = {**read_only_mount, **({"subPath": path} if path else {})}
        return Delivery(MODELS_DIR, [volume], [mount])
    volume = {"name": "models", "emptyDir": {"sizeLimit": ms.spec.storage.pvc.size}}
    return Delivery(FETCHED_REPOSITORY, [volume], [read_only_mount], [_fetch_container(ms, config)])
