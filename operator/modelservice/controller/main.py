"""``modelservice run``: the operator process (kopf), cluster-wide or for listed namespaces.

Operator-wide settings come from the environment (the Helm chart sets them):

MODELSERVICE_CONVERTER_IMAGE (conversion Jobs that need no GPU), MODELSERVICE_CONVERTER_GPU_IMAGE (conversion Jobs
that need a GPU: target tensorrt, or torchscript fp16), MODELSERVICE_CONVERTER_IMAGE_PULL_POLICY (both converter
images), MODELSERVICE_TRITON_TEXT_IMAGE (the Triton image of text models that set no spec.serving.image),
MODELSERVICE_CLUSTER_DOMAIN, MODELSERVICE_FQDN_ENDPOINTS (true/false), MODELSERVICE_PROMETHEUS_URL (canary analysis;
``--prometheus-url`` overrides it), MODELSERVICE_RESYNC_SECONDS
(default 600; 0 turns the periodic resync off), MODELSERVICE_WORKERS (concurrent reconciles, default 16).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import kopf

from modelservice import metrics
from modelservice.api.errors import UserError
from modelservice.controller.handlers import Runtime, build_registry
from modelservice.render import OperatorConfig

logger = logging.getLogger(__name__)


def config_from_env(env: Mapping[str, str]) -> OperatorConfig:
    """OperatorConfig with the MODELSERVICE_* variables applied."""
    default = OperatorConfig()
    changes: dict[str, Any] = {}
    if env.get("MODELSERVICE_CONVERTER_IMAGE"):
        changes["converter_image"] = env["MODELSERVICE_CONVERTER_IMAGE"]
    if env.get("MODELSERVICE_CONVERTER_GPU_IMAGE"):
        changes["converter_gpu_image"] = env["MODELSERVICE_CONVERTER_GPU_IMAGE"]
    if env.get("MODELSERVICE_TRITON_TEXT_IMAGE"):
        changes["triton_text_image"] = env["MODELSERVICE_TRITON_TEXT_IMAGE"]
    if env.get("MODELSERVICE_CONVERTER_IMAGE_PULL_POLICY"):
        changes["converter_image_pull_policy"] = env["MODELSERVICE_CONVERTER_IMAGE_PULL_POLICY"]
    if env.get("MODELSERVICE_CLUSTER_DOMAIN"):
        changes["cluster_domain"] = env["MODELSERVICE_CLUSTER_DOMAIN"]
    if env.get("MODELSERVICE_PROMETHEUS_URL"):
        changes["prometheus_url"] = _http_url("MODELSERVICE_PROMETHEUS_URL", env["MODELSERVICE_PROMETHEUS_URL"])
    if env.get("MODELSERVICE_FQDN_ENDPOINTS"):
        changes["fqdn_endpoints"] = env["MODELSERVICE_FQDN_ENDPOINTS"].lower() in ("1", "true", "yes")
    return dataclasses.replace(default, **changes)


def _http_url(name: str, value: str) -> str:
    """An http(s) URL with a host, or a UserError naming the setting."""
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"{name}: {value!r} is not an http(s) URL")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{name}: {raw!r} is not a number") from None
    if value < 0:
        raise UserError(f"{name}: must not be negative")
    return value


def runtime_from_env(
    env: Mapping[str, str], tweak_settings: Callable[[kopf.OperatorSettings], None] | None = None
) -> Runtime:
    return Runtime(
        config=config_from_env(env),
        resync_seconds=_number(env, "MODELSERVICE_RESYNC_SECONDS", 600.0),
        workers=max(1, int(_number(env, "MODELSERVICE_WORKERS", 16))),
        tweak_settings=tweak_settings,
    )


async def operate(
    runtime: Runtime,
    namespaces: list[str],
    *,
    health_port: int = 0,
    peering: str | None = None,
    priority: int = 0,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal stops it, when run in the main thread)."""
    await kopf.operator(
        registry=build_registry(runtime),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(),
    )


def _quiet_logs(verbose: bool) -> None:
    """The CLI configured logging; keep kopf's per-event "Handler succeeded" lines out unless verbose."""
    if not verbose:
        for name in ("kopf.objects", "kopf.activities", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


def run_operator(
    namespaces: list[str],
    metrics_port: int,
    health_port: int,
    peering: str | None,
    priority: int,
    verbose: bool,
    prometheus_url: str | None = None,
) -> int:
    """The ``modelservice run`` command: blocks until SIGINT/SIGTERM; returns the exit code."""
    _quiet_logs(verbose)
    runtime = runtime_from_env(os.environ)
    if prometheus_url:
        url = _http_url("--prometheus-url", prometheus_url)
        runtime = dataclasses.replace(runtime, config=dataclasses.replace(runtime.config, prometheus_url=url))
    if not runtime.config.prometheus_url:
        logger.info("no Prometheus URL: canaries are judged by replica readiness only")
    metrics.serve(metrics_port)
    scope = ", ".join(namespaces) if namespaces else "all namespaces"
    logger.info("ModelService operator: watching %s; metrics on :%s, health on :%s", scope, metrics_port, health_port)
    asyncio.run(operate(runtime, namespaces, health_port=health_port, peering=peering, priority=priority))
    return 0
