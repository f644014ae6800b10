"""Spec sections that place and expose the served model: the storage of converted repositories and how Triton is
reached (Service, Ingress, Gateway API HTTPRoute)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelservice.api.base import QUANTITY, ApiModel


class PersistentVolumeClaimSpec(ApiModel):
    """The claim that holds converted model repositories."""

    name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Claim name; default <modelservice>-models. An existing claim is used as is.",
    )
    size: str = Field(default="10Gi", pattern=QUANTITY, description="Requested size when the operator creates it.")
    storage_class_name: str | None = Field(default=None, description="Storage class when the operator creates it.")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteOnce"],  # type: ignore[arg-type]
        min_length=1,
        description="Access modes; ReadWriteMany lets replicas on several nodes share the repository.",
    )


class Storage(ApiModel):
    """Where converted repositories live."""

    pvc: PersistentVolumeClaimSpec = Field(default_factory=PersistentVolumeClaimSpec, description="The claim.")


class ServiceExposure(ApiModel):
    """The Service in front of Triton."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP", description="Service type.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra Service annotations.")


class IngressExposure(ApiModel):
    """An Ingress for Triton's HTTP port."""

    host: str = Field(min_length=1, max_length=253, description="Host name.")
    path: str = Field(default="/", pattern=r"^/", description="Path prefix.")
    class_name: str | None = Field(default=None, description="IngressClass name.")
    tls_secret_name: str | None = Field(default=None, description="TLS Secret for the host.")


class ParentRef(ApiModel):
    """A Gateway API parent reference."""

    name: str = Field(min_length=1, description="Gateway name.")
    namespace: str | None = Field(default=None, description="Gateway namespace.")
    section_name: str | None = Field(default=None, description="Listener name.")


class HTTPRouteExposure(ApiModel):
    """A Gateway API HTTPRoute for Triton's HTTP port."""

    parent_refs: list[ParentRef] = Field(min_length=1, description="Gateways to attach to.")
    hostnames: list[str] = Field(default_factory=list, description="Host names.")
    path: str = Field(default="/", pattern=r"^/", description="Path prefix.")


class Exposure(ApiModel):
    """How Triton is reached."""

    service: ServiceExposure = Field(default_factory=ServiceExposure, description="The Service.")
    ingress: IngressExposure | None = Field(default=None, description="Optional Ingress.")
    http_route: HTTPRouteExposure | None = Field(default=None, description="Optional Gateway API HTTPRoute.")
