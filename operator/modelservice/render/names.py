"""Deterministic names, labels, annotations, owner references and the conversion hash.

Every child name is a function of the ModelService name (at most ``MAX_NAME_LENGTH`` = 40 characters), so the
longest, ``<name>-convert-<10 hex>`` (59), still fits a 63-character label value (``<name>-tune-<10 hex>``: 56).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from modelservice import API_VERSION, GROUP, KIND
from modelservice.api.models import ModelService, uri_scheme

HASH_LENGTH = 10
# Bump when the layout of what a conversion writes changes in a way that must re-convert everything.
HASH_SCHEMA = "v1"

# Annotations and labels the operator owns.
HASH_ANNOTATION = f"{GROUP}/conversion-hash"  # on the Deployment and its pod template: the hash Triton serves
HASH_LABEL = f"{GROUP}/conversion-hash"  # on conversion Jobs/ConfigMaps: the hash they produce
NAME_LABEL = f"{GROUP}/name"  # the owning ModelService's name, on every child
# The tuning hash (render/tuneplan.py: tuning_hash): on the Deployment and its pod template, the tuned config.pbtxt
# Triton serves (pods restart when it changes); on profiling Jobs/ConfigMaps, the hash they tune for.
TUNING_HASH_ANNOTATION = f"{GROUP}/tuning-hash"
TUNING_HASH_LABEL = f"{GROUP}/tuning-hash"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"

APP_NAME = "modelservice"
MANAGED_BY = "modelservice-operator"
PART_OF = "modelservice"

COMPONENT_SERVER = "server"
COMPONENT_CONVERTER = "converter"
COMPONENT_STORAGE = "storage"
COMPONENT_TUNER = "tuner"

# Triton's ports (container and Service use the same numbers).
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

# Paths inside pods.
MODELS_DIR = "/models"  # converted repositories: /models/<hash>/<model>/config.pbtxt
SPEC_DIR = "/etc/modelservice"  # the conversion Job's ModelService file
SPEC_FILE = "modelservice.yaml"
CACHE_DIR = f"{MODELS_DIR}/.cache"  # conversion cache shared by every conversion on the claim
FETCHED_REPOSITORY = f"{MODELS_DIR}/repository"  # where the fetch init container puts a triton-repository

_PVC_URI = re.compile(r"^pvc://([^/]+)/?(.*)$")


# ------------------------------------------------------------------------------------------- the hash


def conversion_inputs(ms: ModelService) -> dict[str, Any]:
    """Everything that changes the converted repository: the model source (credentials excepted: they change
    how it is fetched, not what), the conversion settings, and the serving fields written into config.pbtxt."""
    serving = ms.spec.serving
    model = ms.spec.model.to_api()
    model.pop("credentials", None)
    return {
        "schema": HASH_SCHEMA,
        "name": ms.name,  # the model's name inside the repository
        "model": model,
        "conversion": ms.spec.conversion.to_api(),
        "serving": {
            "maxBatchSize": serving.max_batch_size,
            "dynamicBatching": serving.dynamic_batching.to_api() if serving.dynamic_batching else None,
            "instances": serving.instances,
            "gpu": serving.resources.gpu,
        },
    }


def conversion_hash(ms: ModelService) -> str:
    """10 hex characters of SHA-256 over the canonical JSON of ``conversion_inputs``."""
    canonical = json.dumps(conversion_inputs(ms), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def needs_conversion(ms: ModelService) -> bool:
    """Whether a conversion Job writes the repository Triton serves.

    Only a ``triton-repository`` source is served as is (mounted from its PVC, or fetched by an init
    container). Every other format, also ``onnx``/``torchscript`` with target ``none``, goes through
    ``modelservice convert``, which fetches and checks the source, verifies it and writes config.pbtxt.
    """
    return ms.spec.model.format != "triton-repository"


# ------------------------------------------------------------------------------------------------ names


def deployment_name(ms: ModelService) -> str:
    return ms.name


def service_name(ms: ModelService) -> str:
    return ms.name


def pdb_name(ms: ModelService) -> str:
    return ms.name


def hpa_name(ms: ModelService) -> str:
    return ms.name


def ingress_name(ms: ModelService) -> str:
    return ms.name


def httproute_name(ms: ModelService) -> str:
    return ms.name


def job_name(ms: ModelService, hash_: str | None = None) -> str:
    """The conversion Job for ``hash_`` (default: the spec's current hash)."""
    return f"{ms.name}-convert-{hash_ or conversion_hash(ms)}"


def configmap_name(ms: ModelService, hash_: str | None = None) -> str:
    """The immutable ConfigMap holding the ModelService file the conversion Job for ``hash_`` reads."""
    return job_name(ms, hash_)


def tune_job_name(ms: ModelService, tuning_hash_: str) -> str:
    """The profiling Job, and its immutable ConfigMap, of the tuning hash ``tuning_hash_`` (``tuneplan.tuning_hash``;
    ``tuneplan.current_tune_job_name(ms, config)`` names the spec's current one)."""
    return f"{ms.name}-tune-{tuning_hash_}"


def pvc_name(ms: ModelService) -> str:
    """The claim holding converted repositories: ``spec.storage.pvc.name`` or ``<name>-models``."""
    return ms.spec.storage.pvc.name or f"{ms.name}-models"


def repository_path(hash_: str) -> str:
    """Where the conversion for ``hash_`` writes its repository and Triton reads it."""
    return f"{MODELS_DIR}/{hash_}"


# ---------------------------------------------------------------------------------------- pvc:// URIs


def parse_pvc_uri(uri: str) -> tuple[str, str]:
    """``pvc://CLAIM/PATH`` -> (CLAIM, PATH); PATH may be empty."""
    match = _PVC_URI.match(uri)
    if not match:
        raise ValueError(f"not a pvc:// URI: {uri}")
    return match.group(1), match.group(2).strip("/")


def source_claims(ms: ModelService) -> list[str]:
    """Claims named by pvc:// URIs of the spec (model, calibration data, verification data), sorted."""
    uris = [ms.spec.model.uri, ms.spec.conversion.verification.data_uri]
    calibration = ms.spec.conversion.quantization.calibration
    if calibration is not None:
        uris.append(calibration.uri)
    return sorted({parse_pvc_uri(uri)[0] for uri in uris if uri and uri_scheme(uri) == "pvc"})


# ---------------------------------------------------------------------------------- labels and owners


def selector_labels(ms: ModelService) -> dict[str, str]:
    """Labels selecting Triton's pods (immutable in the Deployment: never add to them)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: ms.name, LABEL_COMPONENT: COMPONENT_SERVER}


def selector_string(ms: ModelService) -> str:
    """``selector_labels`` as a label selector string (``status.selector`` for the scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(ms).items()))


def common_labels(ms: ModelService, component: str) -> dict[str, str]:
    """Labels on every child and pod the operator creates for ``ms``."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: ms.name,
        LABEL_COMPONENT: component,
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: MANAGED_BY,
        NAME_LABEL: ms.name,
    }


def owner_reference(ms: ModelService) -> dict[str, Any] | None:
    """The controller owner reference to ``ms``; None when ``ms`` has no uid (a file, not a cluster object)."""
    if not ms.metadata.uid:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ms.name,
        "uid": ms.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(obj: dict[str, Any], ms: ModelService) -> bool:
    """Whether ``obj`` carries an owner reference to ``ms`` (by uid)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(ms.metadata.uid) and any(ref.get("uid") == ms.metadata.uid for ref in refs)


def metadata(
    ms: ModelService,
    name: str,
    component: str,
    *,
    annotations: dict[str, str] | None = None,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Child metadata: name, namespace, common labels, owner reference (when ``ms`` has a uid)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ms.namespace,
        "labels": {**common_labels(ms, component), **(extra_labels or {})},
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    owner = owner_reference(ms)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta
