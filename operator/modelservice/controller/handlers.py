"""kopf handler registration, and nothing more: every handler hands over to the cache, the queue or the client.

- login: kopf's own login (service account, kubeconfig via the kubernetes client, plain kubeconfig); the operator's
  client reuses the same credentials.
- index handlers on the labelled children feed the cache; kopf holds every other handler until all of them have
  seen their initial listing, so the first reconcile never takes an existing child for a missing one.
- event handlers on ModelServices and on the children add the owning ModelService's key to the reconcile queue.
- startup: settings (no kopf-posted Events, watch timeouts), the queue's workers and the periodic resync.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from modelservice import GROUP, PLURAL, VERSION
from modelservice.controller.analysis import PrometheusClient
from modelservice.controller.apply import CHILD_KINDS
from modelservice.controller.cache import Cache, owner_of
from modelservice.controller.client import Connection, KubeClient
from modelservice.controller.queue import ReconcileQueue
from modelservice.controller.reconcile import Reconciler
from modelservice.render import OperatorConfig
from modelservice.render.names import LABEL_MANAGED_BY, MANAGED_BY

logger = logging.getLogger(__name__)

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


@dataclass
class Runtime:
    """What the handlers of one operator share."""

    config: OperatorConfig
    resync_seconds: float = 600.0
    workers: int = 16
    tweak_settings: Callable[[kopf.OperatorSettings], None] | None = None
    cache: Cache = field(default_factory=Cache)
    client: KubeClient = field(default_factory=lambda: KubeClient(Connection("http://localhost", {}, None)))
    queue: ReconcileQueue | None = None
    resync_task: asyncio.Task[None] | None = None
    clock: Callable[[], datetime.datetime] = field(default=lambda: datetime.datetime.now(datetime.UTC))
    prometheus: PrometheusClient | None = None  # made from config.prometheus_url at startup


def connection_of(info: kopf.ConnectionInfo) -> Connection:
    ssl_context = info.as_ssl_context() if info.server.startswith("https:") else None
    return Connection(server=info.server, headers=info.as_http_headers(), ssl_context=ssl_context)


def login(**kwargs: Any) -> kopf.ConnectionInfo:
    """In-cluster service account first, then the kubeconfig (the kubernetes client's loader handles exec and
    auth-provider plugins; kopf's minimal parser is the fallback)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is None:
        try:
            info = kopf.login_via_client(**kwargs)
        except Exception as exc:  # the client library refuses some kubeconfigs kopf's parser reads
            logger.debug("kubernetes client login failed (%s); trying kopf's kubeconfig parser", exc)
    if info is None:
        info = kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig (KUBECONFIG or ~/.kube/config)")
    return info


def _configure(settings: kopf.OperatorSettings, runtime: Runtime) -> None:
    settings.posting.enabled = False  # the operator posts its own Events, on transitions only
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.error_backoffs = (1, 2, 4, 8, 16, 30)
    for kind in CHILD_KINDS.values():
        settings.watching.label_selectors[kind.group, kind.version, kind.plural] = MANAGED_SELECTOR
    if runtime.tweak_settings is not None:
        runtime.tweak_settings(settings)


async def _resync(runtime: Runtime) -> None:
    """Reconcile every ModelService every ``resync_seconds`` (a reconcile that finds nothing to do writes nothing)."""
    while True:
        await asyncio.sleep(runtime.resync_seconds)
        assert runtime.queue is not None
        for key in runtime.cache.modelservice_keys():
            runtime.queue.add(key)


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    if runtime.prometheus is None and runtime.config.prometheus_url:
        runtime.prometheus = PrometheusClient(runtime.config.prometheus_url)
    reconciler = Reconciler(runtime.client, runtime.cache, runtime.config, runtime.prometheus, clock=runtime.clock)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo:
        info = login(**kwargs)
        runtime.client.update(connection_of(info))
        return info

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure(settings, runtime)
        runtime.queue = ReconcileQueue(reconciler, workers=runtime.workers)
        runtime.queue.start()
        if runtime.resync_seconds > 0:
            runtime.resync_task = asyncio.create_task(_resync(runtime), name="resync")

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        if runtime.resync_task is not None:
            runtime.resync_task.cancel()
        if runtime.queue is not None:
            await runtime.queue.stop()
        await runtime.client.close()
        if runtime.prometheus is not None:
            await runtime.prometheus.close()

    @kopf.on.probe(id="queue", registry=registry)
    def _probe(**_: Any) -> dict[str, int]:
        return {"queued": runtime.queue.depth if runtime.queue else 0, "cached": len(runtime.cache)}

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def _modelservice(event: kopf.RawEvent, **_: Any) -> None:
        body = dict(event["object"])
        if event["type"] == "DELETED":
            key = runtime.cache.drop_modelservice(body)
        elif runtime.cache.is_echo(body):
            return  # the status the operator just wrote
        else:
            key = runtime.cache.put_modelservice(body)
        if runtime.queue is not None:
            runtime.queue.add(key, unless=lambda: runtime.cache.is_echo(body))

    for kind in CHILD_KINDS.values():
        labels = {LABEL_MANAGED_BY: MANAGED_BY}

        @kopf.index(kind.group, kind.version, kind.plural, labels=labels, id=f"cache-{kind.plural}", registry=registry)
        def _cache_child(body: kopf.Body, **_: Any) -> None:
            runtime.cache.put(dict(body))  # the cache is the index; kopf's own index stays empty

        @kopf.on.event(
            kind.group, kind.version, kind.plural, labels=labels, id=f"watch-{kind.plural}", registry=registry
        )
        def _child(event: kopf.RawEvent, **_: Any) -> None:
            body = dict(event["object"])
            if event["type"] != "DELETED" and runtime.cache.is_echo(body):
                return  # the operator's own create/patch: the reconcile that wrote it already knows
            deleted = event["type"] == "DELETED"
            owner = runtime.cache.drop(body) if deleted else owner_of(body)
            if owner is not None and runtime.queue is not None:
                runtime.queue.add(owner, unless=None if deleted else lambda: runtime.cache.is_echo(body))

    return registry
