"""The operator's in-memory view of the cluster, fed by kopf's watch streams (an informer cache).

The reconcile reads ModelServices and their children from here instead of GETting them, so a reconcile that finds
nothing to do sends no request at all. Objects written by the operator are stored from the API's answer at once
(read-your-writes), so the next reconcile does not act on a watch event that has not arrived yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelservice import KIND
from modelservice.render.names import NAME_LABEL

# (apiVersion, kind, namespace, name)
ObjectKey = tuple[str, str, str, str]
# (namespace, name) of a ModelService
OwnerKey = tuple[str, str]
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without what the operator never reads and what makes objects big (managedFields). Shallow: cached
    objects are never mutated (watch events and API answers are fresh dicts), only their metadata is rebuilt."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and any(key in annotations for key in _DROPPED_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS}
    return {**obj, "metadata": meta}


def _newer_or_equal(incoming: dict[str, Any], cached: dict[str, Any]) -> bool:
    """Whether ``incoming`` is not older than ``cached``. resourceVersions are opaque; compare them as numbers
    only when both are numbers (as every known API server makes them), else trust the incoming object."""
    new = str((incoming.get("metadata") or {}).get("resourceVersion") or "")
    old = str((cached.get("metadata") or {}).get("resourceVersion") or "")
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion")), str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def owner_of(obj: dict[str, Any]) -> OwnerKey | None:
    """The ModelService a child belongs to: its ``modelservice.dev/name`` label (set on every child)."""
    meta = obj.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(NAME_LABEL)
    return (str(meta.get("namespace") or ""), str(owner)) if owner else None


class Cache:
    """ModelServices and their children, by key; children also by owning ModelService."""

    def __init__(self) -> None:
        self._modelservices: dict[OwnerKey, dict[str, Any]] = {}
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._by_owner: dict[OwnerKey, set[ObjectKey]] = {}
        # resourceVersions the operator's own writes produced: their watch events are echoes, not news.
        self._own_writes: dict[ObjectKey | OwnerKey, str] = {}

    # ------------------------------------------------------------------------------------------ own writes

    def put_own(self, obj: dict[str, Any]) -> None:
        """Store an object the API returned for the operator's own write (create/patch)."""
        if obj.get("kind") == KIND:
            key: ObjectKey | OwnerKey = self.put_modelservice(obj)
        else:
            self.put(obj)
            key = object_key(obj)
        self._own_writes[key] = _rv(obj)

    def is_echo(self, obj: dict[str, Any]) -> bool:
        """Whether a watch event only reports the operator's own last write (nothing new to react to)."""
        meta = obj.get("metadata") or {}
        if obj.get("kind") == KIND:
            key: ObjectKey | OwnerKey = (str(meta.get("namespace") or ""), str(meta.get("name")))
        else:
            key = object_key(obj)
        own = self._own_writes.get(key)
        return own is not None and own == _rv(obj)

    # ---------------------------------------------------------------------------------------- ModelServices

    def put_modelservice(self, body: dict[str, Any]) -> OwnerKey:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name")))
        cached = self._modelservices.get(key)
        if cached is None or _newer_or_equal(body, cached) or _uid(body) != _uid(cached):
            self._modelservices[key] = _slim(body)
        return key

    def drop_modelservice(self, body: dict[str, Any]) -> OwnerKey:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name")))
        cached = self._modelservices.get(key)
        if cached is not None and _uid(cached) == _uid(body):
            del self._modelservices[key]
            self._own_writes.pop(key, None)
        return key

    def modelservice(self, key: OwnerKey) -> dict[str, Any] | None:
        return self._modelservices.get(key)

    def modelservice_keys(self) -> list[OwnerKey]:
        return list(self._modelservices)

    # --------------------------------------------------------------------------------------------- children

    def put(self, obj: dict[str, Any]) -> OwnerKey | None:
        """Store a child (from a watch event or a write's answer); returns its owner, if any."""
        key = object_key(obj)
        cached = self._objects.get(key)
        if cached is not None and _uid(cached) == _uid(obj) and not _newer_or_equal(obj, cached):
            return owner_of(cached)
        self._objects[key] = _slim(obj)
        owner = owner_of(obj)
        if owner is not None:
            self._by_owner.setdefault(owner, set()).add(key)
        return owner

    def drop(self, obj: dict[str, Any]) -> OwnerKey | None:
        key = object_key(obj)
        cached = self._objects.get(key)
        if cached is None or _uid(cached) != _uid(obj):
            return owner_of(obj)
        del self._objects[key]
        self._own_writes.pop(key, None)
        owner = owner_of(cached)
        if owner is not None:
            keys = self._by_owner.get(owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_owner[owner]
        return owner

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((api_version, kind, namespace, name))

    def children(self, owner: OwnerKey) -> Iterator[dict[str, Any]]:
        for key in sorted(self._by_owner.get(owner, ())):
            obj = self._objects.get(key)
            if obj is not None:
                yield obj

    def __len__(self) -> int:
        return len(self._objects) + len(self._modelservices)


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
