"""Fixtures: the API emulator on a loopback port, a kubeconfig pointing at it, and the real kopf operator
(``modelservice.controller.main.operate``) running in the test's event loop, cluster-wide."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
from kmock import Server

from emulator import ApiServerEmulator, declare, write_kubeconfig
from modelservice.api.permissions import PERMISSIONS
from modelservice.controller.handlers import Runtime
from modelservice.controller.main import operate
from modelservice.render import OperatorConfig


@pytest.fixture()
async def emulator() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as handler, Server(handler):
        declare(handler)
        yield handler


@pytest.fixture()
def kubeconfig(tmp_path: Path, emulator: ApiServerEmulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_kubeconfig(tmp_path / "kubeconfig", str(emulator.url).rstrip("/"))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def fast_settings(settings: kopf.OperatorSettings) -> None:
    """Short timeouts so a test's operator starts and stops in well under a second."""
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    settings.watching.connect_timeout = 2
    settings.networking.error_backoffs = (0.1, 0.2, 0.5)


OperatorFactory = Callable[..., Any]


VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def assert_permitted(emulator: ApiServerEmulator) -> None:
    """Every API request the operator (kopf and its own client) sent is granted by the permissions table, which
    the Helm chart's RBAC is generated from: a missing row would be a 403 in a real cluster."""
    granted = {(p.api_group, p.resource, verb) for p in PERMISSIONS for verb in p.verbs}
    for request in list(emulator._requests):
        if request.headers.get("User-Agent", "").startswith("kmock/") or request.resource is None:
            continue  # the test's own requests; discovery (/api, /apis) is open to every authenticated user
        if not request.resource.plural:
            continue
        verb = VERBS[request.method.value]
        if verb == "get" and request.name is None:
            verb = "watch" if request.params.get("watch") == "true" else "list"
        plural = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        assert (request.resource.group, plural, verb) in granted, f"not in permissions.py: {verb} {plural}"


@pytest.fixture()
async def start_operator(emulator: ApiServerEmulator, kubeconfig: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_operator(**runtime_overrides)`` runs the operator until the test ends.

    The operator runs in its own thread and event loop (as ``kopf.testing.KopfRunner`` does): kopf cancels every
    task it did not start when it exits, so it must not share the loop of the test and the emulator."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    async def start(**overrides: Any) -> Runtime:
        runtime = Runtime(
            config=OperatorConfig(converter_image="example.com/modelservice/converter:test"),
            resync_seconds=overrides.pop("resync_seconds", 0),
            workers=overrides.pop("workers", 4),
            tweak_settings=fast_settings,
        )
        for name in ("clock", "prometheus"):  # a test's clock (rollouts), a PrometheusClient for canary analysis
            if name in overrides:
                setattr(runtime, name, overrides.pop(name))
        stop, ready = threading.Event(), threading.Event()
        namespaces = overrides.pop("namespaces", [])

        def main() -> None:
            asyncio.run(operate(runtime, namespaces, stop_flag=stop, ready_flag=ready))

        thread = threading.Thread(target=main, name="operator", daemon=True)
        thread.start()
        running.append((stop, thread))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, ready.wait, 15), "the operator did not start within 15 s"
        return runtime

    yield start
    loop = asyncio.get_running_loop()
    for stop, _ in running:
        stop.set()
    for _, thread in running:
        await loop.run_in_executor(None, thread.join, 15)
        assert not thread.is_alive(), "the operator did not stop within 15 s"
    assert_permitted(emulator)
