"""Where Triton answers, for ``status.endpoints``."""

from __future__ import annotations

from typing import Any

from modelservice.api.models import Endpoints, ModelService
from modelservice.render.names import GRPC_PORT, HTTP_PORT, METRICS_PORT, service_name
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig


def service_host(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> str:
    """``<svc>.<ns>.svc`` (or with the cluster domain appended when ``config.fqdn_endpoints``)."""
    host = f"{service_name(ms)}.{ms.namespace}.svc"
    return f"{host}.{config.cluster_domain}" if config.fqdn_endpoints else host


def _load_balancer_address(service: dict[str, Any] | None) -> str | None:
    if not service:
        return None
    ingress = (((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    for entry in ingress:
        address = entry.get("hostname") or entry.get("ip")
        if address:
            return str(address)
    return None


def external_url(ms: ModelService, service: dict[str, Any] | None = None) -> str | None:
    """The URL from outside the cluster: the Ingress host (https with TLS), else the HTTPRoute's first
    hostname, else a LoadBalancer Service's address (from the observed Service's status), else None."""
    exposure = ms.spec.exposure
    if exposure.ingress is not None:
        scheme = "https" if exposure.ingress.tls_secret_name else "http"
        return f"{scheme}://{exposure.ingress.host}{exposure.ingress.path}"
    if exposure.http_route is not None and exposure.http_route.hostnames:
        return f"http://{exposure.http_route.hostnames[0]}{exposure.http_route.path}"
    if exposure.service.type == "LoadBalancer":
        address = _load_balancer_address(service)
        if address:
            return f"http://{address}:{HTTP_PORT}"
    return None


def endpoints(
    ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG, service: dict[str, Any] | None = None
) -> Endpoints:
    """KServe v2 HTTP and gRPC endpoints, the metrics URL, and the external URL when one exists.

    Pass the observed Service to pick up a LoadBalancer's address; report these once the Service exists.
    """
    host = service_host(ms, config)
    return Endpoints(
        http=f"http://{host}:{HTTP_PORT}",
        grpc=f"{host}:{GRPC_PORT}",
        metrics=f"http://{host}:{METRICS_PORT}/metrics",
        external=external_url(ms, service),
    )
