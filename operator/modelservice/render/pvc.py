"""The PersistentVolumeClaim holding converted model repositories."""

from __future__ import annotations

from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.names import COMPONENT_STORAGE, metadata, pvc_name
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig


def build_pvc(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """The claim ``spec.storage.pvc`` describes, as the operator creates it when no claim of that name exists.

    The conversion Job writes ``/models/<hash>/`` on it; Triton mounts it read-only. With
    ``config.own_created_pvc`` it is owned by the ModelService (deleted with it), else it outlives it.
    """
    claim = ms.spec.storage.pvc
    meta = metadata(ms, pvc_name(ms), COMPONENT_STORAGE)
    if not config.own_created_pvc:
        meta.pop("ownerReferences", None)
    spec: dict[str, Any] = {
        "accessModes": list(claim.access_modes),
        "resources": {"requests": {"storage": claim.size}},
        "volumeMode": "Filesystem",
    }
    if claim.storage_class_name:
        spec["storageClassName"] = claim.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}
