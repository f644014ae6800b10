"""The Service in front of Triton."""

from __future__ import annotations

from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.names import (
    COMPONENT_SERVER,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    metadata,
    selector_labels,
    service_name,
)


def service_ports() -> list[dict[str, Any]]:
    """Named ports http 8000, grpc 8001 (appProtocol grpc, so meshes and gateways speak HTTP/2) and metrics 8002."""
    return [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "http"},
    ]


def build_service(ms: ModelService) -> dict[str, Any]:
    exposure = ms.spec.exposure.service
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ms, service_name(ms), COMPONENT_SERVER, annotations=exposure.annotations),
        "spec": {"type": exposure.type, "selector": selector_labels(ms), "ports": service_ports()},
    }
