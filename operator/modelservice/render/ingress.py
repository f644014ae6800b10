"""Optional Ingress and Gateway API HTTPRoute for Triton's HTTP port."""

from __future__ import annotations

from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.names import (
    COMPONENT_SERVER,
    HTTP_PORT,
    httproute_name,
    ingress_name,
    metadata,
    service_name,
)


def build_ingress(ms: ModelService) -> dict[str, Any] | None:
    """networking.k8s.io/v1 Ingress for ``spec.exposure.ingress`` (HTTP port, path prefix), or None."""
    ingress = ms.spec.exposure.ingress
    if ingress is None:
        return None
    backend = {"service": {"name": service_name(ms), "port": {"name": "http"}}}
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": ingress.host,
                "http": {"paths": [{"path": ingress.path, "pathType": "Prefix", "backend": backend}]},
            }
        ],
    }
    if ingress.class_name:
        spec = {"ingressClassName": ingress.class_name, **spec}
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(ms, ingress_name(ms), COMPONENT_SERVER),
        "spec": spec,
    }


def build_httproute(ms: ModelService) -> dict[str, Any] | None:
    """gateway.networking.k8s.io/v1 HTTPRoute for ``spec.exposure.httpRoute``, or None."""
    route = ms.spec.exposure.http_route
    if route is None:
        return None
    parents = []
    for ref in route.parent_refs:
        parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        parents.append(parent)
    spec: dict[str, Any] = {"parentRefs": parents}
    if route.hostnames:
        spec["hostnames"] = list(route.hostnames)
    spec["rules"] = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": route.path}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": service_name(ms), "port": HTTP_PORT}],
        }
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(ms, httproute_name(ms), COMPONENT_SERVER),
        "spec": spec,
    }
