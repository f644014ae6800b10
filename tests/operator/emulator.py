"""A Kubernetes API emulator for operator tests: KMock's KubernetesEmulator plus what a real API server does
and the operator relies on.

Added here (KMock alone stores plain dicts and merges patches as plain dicts):
- metadata.uid, resourceVersion (one global counter, bumped on every change), generation (1 on create, bumped when
  anything outside metadata/status changes), creationTimestamp, namespace from the URL;
- 409 AlreadyExists on create, 404 on patch/delete of a missing object, 409 Conflict on a stale
  metadata.resourceVersion precondition, immutable uid/creationTimestamp/name;
- JSON merge patch (RFC 7386: null deletes, lists replace) and JSON patch; a patch that changes nothing is a no-op
  (no new resourceVersion, no watch event), as on a real server;
- the status subresource (PATCH .../status changes only status; writes to the main resource ignore status;
  create drops status) for every resource listed in ``STATUS_SUBRESOURCE``;
- the scale subresource (GET/PATCH .../scale) for Deployments and ModelServices (spec.serving.replicas);
- ``/api/v1/namespaces`` parsed as the cluster-scoped Namespace resource (KMock 0.8 cannot parse it);
- label selectors (``k=v``, ``k!=v``, ``k``) on list and watch;
- a watch that registers for changes before it replays the current objects (KMock's can lose an event there);
- optional cascading deletion through ownerReferences (background garbage collection, done synchronously);
- injected faults: ``emulator.fail(method, path_regex, status, times)`` answers a request with an API error;
  ``emulator.drop_watches()`` ends every open watch stream.

Object requests (list, watch, get, create, patch, delete) are served by the methods below, not through KMock's
reaction DSL (which costs ~70 ms a request with the bundled resources); discovery still goes through KMock.

Still simplified: no admission, no defaulting (so server-set defaults never differ from what was sent), no schema
validation, no RBAC (conftest checks every request of the operator against permissions.py instead), no
controllers (Jobs and Deployments get status only when a test writes it), list resourceVersions are not honoured
on watch (every watch replays all objects as ADDED, which clients must tolerate), strategic merge patch is
treated as a JSON merge patch, no server-side apply.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import jsonpatch
import yaml
from kmock import KubernetesEmulator, KubernetesError, Request, ResourceInfo, resource
from kmock._internal import apps, enums, parsing

from modelservice import GROUP, PLURAL, VERSION

MS_RESOURCE = resource(GROUP, VERSION, PLURAL)
# Resources whose status is a subresource (every built-in workload, and the ModelService CRD).
STATUS_SUBRESOURCE = {
    ("apps", "deployments"),
    ("batch", "jobs"),
    ("", "pods"),
    ("policy", "poddisruptionbudgets"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("", "persistentvolumeclaims"),
    ("", "services"),
    (GROUP, PLURAL),
}
# Scale subresource: where spec replicas, status replicas and the selector live.
SCALE = {
    ("apps", "deployments"): (("spec", "replicas"), ("status", "replicas"), None),
    (GROUP, PLURAL): (("spec", "serving", "replicas"), ("status", "replicas"), ("status", "selector")),
}
_DROP = "__DROP__"
_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    """KMock 0.8 fails on ``/api/v1/namespaces`` (it reads "namespaces" as the namespace prefix of a namespaced
    URL); kopf lists and watches that URL when it serves listed namespaces. Namespaces are cluster objects."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _get_path(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = obj
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set_path(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    patch: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        patch = {part: patch}
    return patch


def selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Equality-based label selectors, as kubectl and clients send them."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value.lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Fault:
    """An injected API error: the next ``times`` requests matching method and path get ``status``."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int = 1
    hits: int = 0

    def matches(self, request: Request) -> bool:
        return self.times > 0 and request.method.value == self.method and bool(self.path.search(request.url.path))


@dataclass
class _State:
    rv: int = 0
    faults: list[Fault] = field(default_factory=list)
    garbage_collect: bool = True
    pending: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)


class ApiServerEmulator(KubernetesEmulator):
    """KubernetesEmulator that assigns metadata, honours subresources and merge patches (see the module doc)."""

    state: _State

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.state = _State()

    # ------------------------------------------------------------------------------------------ test helpers

    def fail(self, method: str, path: str, status: int, times: int = 1) -> Fault:
        fault = Fault(method.upper(), re.compile(path), status, times)
        self.state.faults.append(fault)
        return fault

    async def drop_watches(self) -> None:
        """End every open watch stream (clients must reconnect and must not miss what happens meanwhile)."""
        for bus in list(self._buses.values()):
            await bus.put({"type": _DROP})

    def writes(self, since: int = 0) -> list[Request]:
        """Write requests (POST/PATCH/PUT/DELETE) recorded from request number ``since`` on."""
        return [r for r in self._requests[since:] if r.method.value in WRITE_METHODS]

    @property
    def request_count(self) -> int:
        return len(self._requests)

    def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (resource(res) if isinstance(res, str) else res, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(dict(self.objects[key].raw))

    def items(self, res: Any, namespace: str | None = None) -> list[dict[str, Any]]:
        want = resource(res) if isinstance(res, str) else res
        return [
            copy.deepcopy(dict(obj.raw))
            for (r, ns, _), obj in self.objects.items()
            if r == want and not obj.deleted and (namespace is None or ns == namespace)
        ]

    async def put_object(self, res: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object as a client would (with uid, resourceVersion...), without an HTTP request."""
        want = resource(res) if isinstance(res, str) else res
        meta = body.get("metadata", {})
        async with self._lock:
            created = self._create(want, meta.get("namespace"), copy.deepcopy(body))
            await self._flush()
        return created

    async def patch_object(
        self, res: Any, namespace: str | None, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        """Patch an object as the cluster's controllers would (e.g. a Job's status), without an HTTP request."""
        want = resource(res) if isinstance(res, str) else res
        async with self._lock:
            patched = await self._patch(want, namespace, name, patch, subresource)
            await self._flush()
        return patched

    # ---------------------------------------------------------------------------------------------- serving

    async def _handle(self, request: Request) -> Any:
        for fault in self.state.faults:
            if fault.matches(request):
                fault.times -= 1
                fault.hits += 1
                reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
                raise KubernetesError(
                    status=fault.status,
                    reason=reasons.get(fault.status, "Injected"),
                    message=f"injected fault {fault.status}",
                    details={},
                )
        action = request.action
        if request.resource is None or not request.resource.plural or action is None:
            return await apps.RawHandler._handle(self, request)  # discovery, /version, ...
        # Serve object requests directly: KMock's DSL matching costs ~70 ms a request with the bundled
        # resources, which would make the emulator, not the operator, the subject of the benchmark.
        if action == enums.action.WATCH:
            return await self._stream_watch(request)
        serve = {
            enums.action.LIST: self._serve_list,
            enums.action.FETCH: self._serve_fetch,
            enums.action.CREATE: self._serve_create,
            enums.action.UPDATE: self._serve_update,
            enums.action.DELETE: self._serve_delete,
        }[action]
        return aiohttp.web.json_response(await serve(request))

    async def _stream_watch(self, request: Request) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        try:
            async for event in self._serve_watch(request):
                if isinstance(event, dict):
                    await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        return response

    def _key(self, request: Request, name: str | None = None) -> tuple[Any, str | None, str | None]:
        return (request.resource, request.namespace, name if name is not None else request.name)

    def _live(self, key: tuple[Any, str | None, str | None]) -> dict[str, Any]:
        if key not in self.objects or self.objects[key].deleted:
            raise KubernetesError(status=404, reason="NotFound", message=f"{key[0]} {key[2]!r} not found", details={})
        return dict(self.objects[key].raw)

    def _next_rv(self) -> str:
        self.state.rv += 1
        return str(self.state.rv)

    def _has_status_subresource(self, res: Any) -> bool:
        return (res.group, res.plural) in STATUS_SUBRESOURCE

    def _create(self, res: Any, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise KubernetesError(status=422, reason="Invalid", message="metadata.name: Required value", details={})
        namespace = namespace or meta.get("namespace")
        key = (res, namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            raise KubernetesError(
                status=409, reason="AlreadyExists", message=f'{res.plural} "{name}" already exists', details={}
            )
        if self._has_status_subresource(res):
            body.pop("status", None)
        if namespace is not None:
            meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["generation"] = 1
        meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta.pop("deletionTimestamp", None)
        if key in self.objects:
            self.objects[key].create(body)
        else:
            self.objects[key] = body
        self._publish(res, "ADDED", body)
        return copy.deepcopy(body)

    def _publish(self, res: Any, kind: str, body: dict[str, Any]) -> None:
        # Bus.put is async: queue the event here, send it (in order, still under the lock) in _flush().
        self.state.pending.append((res, {"type": kind, "object": copy.deepcopy(body)}))

    async def _flush(self) -> None:
        events, self.state.pending = self.state.pending, []
        for res, event in events:
            await self._buses[res].put(event)

    async def _patch(
        self, res: Any, namespace: str | None, name: str, patch: Any, subresource: str | None
    ) -> dict[str, Any]:
        key = (res, namespace, name)
        live = self._live(key)
        if subresource == "scale":
            spec_path = SCALE[(res.group, res.plural)][0]
            replicas = _get_path(patch, ("spec", "replicas")) if isinstance(patch, Mapping) else None
            if replicas is None:
                raise KubernetesError(status=422, reason="Invalid", message="spec.replicas required", details={})
            patch, subresource = _set_path(spec_path, replicas), None
        if isinstance(patch, list):
            new = jsonpatch.apply_patch(copy.deepcopy(live), patch, in_place=False)
        else:
            expected_rv = _get_path(patch, ("metadata", "resourceVersion"))
            if expected_rv is not None and str(expected_rv) != live["metadata"]["resourceVersion"]:
                raise KubernetesError(
                    status=409,
                    reason="Conflict",
                    message=f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been modified',
                    details={},
                )
            new = merge_patch(live, patch)
        if self._has_status_subresource(res):
            if subresource == "status":
                new = dict(live, status=new.get("status")) if new.get("status") is not None else dict(live)
                if new.get("status") is None:
                    new.pop("status", None)
            elif "status" in live:
                new["status"] = live["status"]
            else:
                new.pop("status", None)
        new_meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation", "resourceVersion"):
            if fixed in live["metadata"]:
                new_meta[fixed] = live["metadata"][fixed]
        if new == live:
            return copy.deepcopy(live)  # a no-op patch changes nothing and notifies nobody
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in live.items() if k not in ("metadata", "status")
        }:
            new_meta["generation"] = int(live["metadata"].get("generation", 1)) + 1
        new_meta["resourceVersion"] = self._next_rv()
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            self._delete(res, namespace, name, new)
            return copy.deepcopy(new)
        self.objects[key].history.append(new)
        self._publish(res, "MODIFIED", new)
        return copy.deepcopy(new)

    def _delete(self, res: Any, namespace: str | None, name: str, last: dict[str, Any]) -> None:
        key = (res, namespace, name)
        self.objects[key].delete()
        self._publish(res, "DELETED", last)
        if self.state.garbage_collect:
            uid = last.get("metadata", {}).get("uid")
            for (r, ns, n), obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                refs = dict(obj.raw).get("metadata", {}).get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    self._delete(r, ns, n, dict(obj.raw))

    async def _serve_create(self, request: Request) -> Any:
        async with self._lock:
            body = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
            created = self._create(request.resource, request.namespace, body)
            await self._flush()
        return created

    async def _serve_update(self, request: Request) -> Any:
        assert request.name is not None
        async with self._lock:
            result = await self._patch(
                request.resource, request.namespace, request.name, request.data, request.subresource
            )
            await self._flush()
        if request.subresource == "scale":
            return self._scale_of(request, result)
        return result

    async def _serve_delete(self, request: Request) -> Any:
        async with self._lock:
            live = self._live(self._key(request))
            meta = live.get("metadata", {})
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    live = await self._patch(
                        request.resource,
                        request.namespace,
                        meta["name"],
                        {"metadata": {"deletionTimestamp": now}},
                        None,
                    )
            else:
                self._delete(request.resource, request.namespace, meta["name"], live)
            await self._flush()
        return live

    async def _serve_fetch(self, request: Request) -> Any:
        live = self._live(self._key(request))
        if request.subresource == "scale":
            return self._scale_of(request, live)
        return live

    def _scale_of(self, request: Request, live: dict[str, Any]) -> dict[str, Any]:
        res = request.resource
        spec_path, status_path, selector_path = SCALE[(res.group, res.plural)]
        selector = _get_path(live, selector_path) if selector_path else None
        if selector is None and res.plural == "deployments":
            labels = _get_path(live, ("spec", "selector", "matchLabels")) or {}
            selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {k: live["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion")},
            "spec": {"replicas": _get_path(live, spec_path) or 0},
            "status": {"replicas": _get_path(live, status_path) or 0, "selector": selector or ""},
        }

    def _matching(self, request: Request) -> list[dict[str, Any]]:
        selector = request.params.get("labelSelector")
        found = []
        for (res, namespace, _), obj in self.objects.items():
            if res != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = dict(obj.raw)
            if selector_matches(selector, raw.get("metadata", {}).get("labels") or {}):
                found.append(raw)
        return found

    async def _serve_list(self, request: Request) -> Any:
        async with self._lock:
            items = copy.deepcopy(self._matching(request))
            rv = str(self.state.rv)
        return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}

    async def _serve_watch(self, request: Request) -> AsyncIterator[Any]:
        yield b""
        assert request.resource is not None
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()
            replay = [{"type": "ADDED", "object": obj} for obj in copy.deepcopy(self._matching(request))]
        try:
            for event in replay:
                yield event
            selector = request.params.get("labelSelector")
            async for event in bus.stream(since=mark):
                if event.get("type") == _DROP:
                    return  # the server closes the stream, as API servers do (timeouts, restarts, LB resets)
                meta = event.get("object", {}).get("metadata", {})
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if not selector_matches(selector, meta.get("labels") or {}):
                    continue
                yield event
        finally:
            await bus.unmark(mark)


REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modelservice.dev_modelservices.yaml"
CRD_RESOURCE = resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def declare(emulator: ApiServerEmulator, namespaces: tuple[str, ...] = ("ml",)) -> None:
    """Built-in kinds (KMock's bundled discovery data), the ModelService CRD (as a resource and as the CRD object
    from crds/), Gateway API's HTTPRoute, and ``namespaces``."""
    emulator.resources.load_bundled()
    emulator.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = ResourceInfo(
        namespaced=True,
        kind="ModelService",
        singular="modelservice",
        shortnames={"msvc"},
        categories={"ml"},
        subresources={"status", "scale"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    )
    emulator.resources["gateway.networking.k8s.io/v1/httproutes"] = ResourceInfo(
        namespaced=True, kind="HTTPRoute", singular="httproute", verbs={"get", "list", "watch", "create", "patch"}
    )
    crd = yaml.safe_load(CRD_FILE.read_text())
    emulator.objects[CRD_RESOURCE, None, crd["metadata"]["name"]] = crd
    for namespace in namespaces:
        emulator.objects[resource("", "v1", "namespaces"), None, namespace] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace},
        }


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig as a user has one: a cluster, a user with a token, a current context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
        "current-context": "emulator",
    }
    path.write_text(json.dumps(config))
    return path


async def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


__all__ = [
    "MS_RESOURCE",
    "ApiServerEmulator",
    "Fault",
    "declare",
    "enums",
    "merge_patch",
    "selector_matches",
    "wait_for",
    "write_kubeconfig",
]
