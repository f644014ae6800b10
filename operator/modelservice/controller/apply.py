"""Writes to the API: create a child when missing, patch only the fields the operator owns that differ, write the
status when it changed, post Events. Never delete-and-recreate, never create-and-ignore-409.

"Fields the operator owns" are the fields of the rendered object: a live object is compared against the rendered
dict as a subset (fields the API server or other controllers add, e.g. ``spec.clusterIP`` or the replicas an HPA
sets when the rendered Deployment leaves them out, are not the operator's and never cause a patch). Objects whose
spec the API server makes immutable (Jobs, ConfigMaps, PersistentVolumeClaims) get only their metadata patched.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from modelservice import API_VERSION, KIND, PLURAL
from modelservice.controller.cache import Cache
from modelservice.controller.client import ApiError, Kind, KubeClient
from modelservice.render.quantity import parse_quantity

logger = logging.getLogger(__name__)

MODELSERVICE = Kind(API_VERSION.split("/")[0], API_VERSION.split("/")[1], PLURAL, KIND)
EVENT = Kind("", "v1", "events", "Event")
POD = Kind("", "v1", "pods", "Pod")

# Every kind of child the renderer makes, by (apiVersion, kind).
CHILD_KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("batch", "v1", "jobs", "Job"),
        Kind("", "v1", "configmaps", "ConfigMap"),
        Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
        Kind("apps", "v1", "deployments", "Deployment"),
        Kind("", "v1", "services", "Service"),
        Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
        Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
        Kind("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
        Kind("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject"),
        Kind("networking.k8s.io", "v1", "ingresses", "Ingress"),
        Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
    )
}
# Kinds whose spec cannot change after creation (only their metadata is patched).
METADATA_ONLY = {"Job", "ConfigMap", "PersistentVolumeClaim"}


class ChildConflict(Exception):
    """A child's name is taken by an object this ModelService does not own: the operator leaves it alone."""

    reason = "ChildConflict"


class ChildRejected(ChildConflict):
    """The API server refused a child for a reason retrying soon will not fix (403 Forbidden, 404 for a kind it
    does not serve such as HTTPRoute without Gateway API, 422 Invalid from validation or a webhook)."""

    reason = "ChildRejected"


REJECTED = {400, 403, 404, 422}


def kind_of(obj: dict[str, Any]) -> Kind:
    return CHILD_KINDS[(str(obj.get("apiVersion")), str(obj.get("kind")))]


# ------------------------------------------------------------------------------------------- owned fields


# Fields whose values are resource quantities: the API server stores them in canonical form ("0.5" -> "500m",
# "1024Mi" -> "1Gi"), so they compare by value, as Kubernetes' own equality.Semantic does.
QUANTITY_MAPS = frozenset({"requests", "limits"})
QUANTITY_FIELDS = frozenset({"sizeLimit", "storage"})


def _same_quantity(want: Any, have: Any) -> bool:
    try:
        return parse_quantity(str(want)) == parse_quantity(str(have))
    except ValueError:
        return False


def _list_matches(want: list[Any], have: list[Any]) -> bool:
    return len(want) == len(have) and all(_matches(w, h) for w, h in zip(want, have, strict=True))


def _matches(want: Any, have: Any, key: str = "", in_quantities: bool = False) -> bool:
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            _matches(v, have.get(k), k, in_quantities=key in QUANTITY_MAPS) for k, v in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and _list_matches(want, have)
    if want == have:
        return True
    return (in_quantities or key in QUANTITY_FIELDS) and have is not None and _same_quantity(want, have)


# Flat string maps the operator owns whole (a Service's ``spec.selector``: a canary's traffic moves by taking a
# revision label out of it): extra keys in the live object differ, and the patch removes them (null).
EXACT_MAPS = frozenset({"selector"})


def _is_flat(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def owned_patch(desired: dict[str, Any], live: dict[str, Any], in_quantities: bool = False) -> dict[str, Any]:
    """A JSON merge patch setting every rendered field that differs in ``live`` (lists are set whole; maps in
    ``EXACT_MAPS`` whole, extra keys removed)."""
    patch: dict[str, Any] = {}
    for key, want in desired.items():
        have = live.get(key)
        if key in EXACT_MAPS and isinstance(have, dict) and _is_flat(want) and _is_flat(have):
            if want != have:
                patch[key] = {**want, **{k: None for k in have if k not in want}}
        elif isinstance(want, dict) and isinstance(have, dict):
            sub = owned_patch(want, have, in_quantities=key in QUANTITY_MAPS)
            if sub:
                patch[key] = sub
        elif not _matches(want, have, key, in_quantities):
            patch[key] = want
    return patch


def child_patch(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """What to patch on a child: its owned fields, only metadata for immutable kinds; never name/namespace."""
    scope = {"metadata": desired.get("metadata", {})} if desired.get("kind") in METADATA_ONLY else dict(desired)
    scope.pop("apiVersion", None)
    scope.pop("kind", None)
    meta = {k: v for k, v in (scope.get("metadata") or {}).items() if k in ("labels", "annotations", "ownerReferences")}
    scope["metadata"] = meta
    patch = owned_patch(scope, live)
    return patch


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


# ------------------------------------------------------------------------------------------------ writes


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)


def _label(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


async def apply_child(client: KubeClient, cache: Cache, desired: dict[str, Any], owner_uid: str) -> str | None:
    """Create ``desired`` when missing, patch its owned fields when they differ. Returns what was done."""
    kind = kind_of(desired)
    meta = desired.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
    live = cache.get(kind.api_version, kind.kind, namespace, name)
    if live is None:
        try:
            cache.put_own(await client.create(kind, namespace, desired))
            return "created"
        except ApiError as exc:
            if exc.status != 409:
                raise
        # It exists but the watch has not shown it (or it is not ours, so unlabelled and unwatched): look.
        live = await client.get(kind, namespace, name)
        cache.put(live)
    if not owned_by(live, owner_uid):
        raise ChildConflict(f"{kind.kind} {name} exists and is not owned by this ModelService")
    patch = child_patch(desired, live)
    if not patch:
        return None
    cache.put_own(await client.merge_patch(kind, namespace, name, patch))
    return "patched"


async def apply_children(
    client: KubeClient, cache: Cache, desired: list[dict[str, Any]], owner_uid: str
) -> ApplyResult:
    result = ApplyResult()
    for obj in desired:
        try:
            done = await apply_child(client, cache, obj, owner_uid)
        except ApiError as exc:
            if exc.status not in REJECTED:
                raise
            raise ChildRejected(f"{_label(obj)}: {exc.status} {exc.reason}: {exc.message}") from exc
        if done == "created":
            result.created.append(_label(obj))
        elif done == "patched":
            result.patched.append(_label(obj))
    return result


async def delete_child(client: KubeClient, cache: Cache, obj: dict[str, Any]) -> None:
    """Delete a child the spec no longer asks for (its own dependents, e.g. a Job's pods, go in the background)."""
    kind = kind_of(obj)
    meta = obj.get("metadata") or {}
    path = kind.path(str(meta.get("namespace") or ""), str(meta.get("name")))
    try:
        await client.request("DELETE", kind, path, params={"propagationPolicy": "Background"})
    except ApiError as exc:
        if exc.status != 404:
            raise
    cache.drop(obj)


async def write_status(client: KubeClient, cache: Cache, namespace: str, name: str, patch: dict[str, Any]) -> None:
    """Merge-patch the status subresource and keep the cache's copy current."""
    answer = await client.merge_patch(MODELSERVICE, namespace, name, {"status": patch}, subresource="status")
    cache.put_own(answer)


async def post_event(
    client: KubeClient, ms: dict[str, Any], type_: str, reason: str, message: str, now: datetime.datetime
) -> None:
    """A core/v1 Event about the ModelService (failures are logged, never retried: Events are best effort)."""
    meta = ms.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "modelservice-operator"},
        "reportingComponent": "modelservice-operator",
        "reportingInstance": "modelservice-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await client.create(EVENT, namespace, event)
    except ApiError as exc:
        logger.warning("could not post event %s for %s/%s: %s", reason, namespace, meta.get("name"), exc)
