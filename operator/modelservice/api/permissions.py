"""The one table of API permissions the operator needs.

The controller's code calls exactly these resources and verbs; the Helm chart's RBAC templates grant exactly
these (tests/chart checks both directions). Change this table when the code starts calling something new.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    api_group: str  # "" is the core group
    resource: str  # plural, with "/subresource" where one is used
    verbs: tuple[str, ...]


PERMISSIONS: tuple[Permission, ...] = (
    Permission("modelservice.dev", "modelservices", ("get", "list", "watch", "patch")),
    Permission("modelservice.dev", "modelservices/status", ("get", "patch")),
    Permission("apps", "deployments", ("get", "list", "watch", "create", "patch")),
    Permission("batch", "jobs", ("get", "list", "watch", "create", "patch")),
    Permission("", "services", ("get", "list", "watch", "create", "patch")),
    Permission("", "configmaps", ("get", "list", "watch", "create", "patch")),
    Permission("", "persistentvolumeclaims", ("get", "list", "watch", "create", "patch")),
    Permission("", "pods", ("get", "list", "watch")),
    Permission("", "events", ("create",)),
    Permission("events.k8s.io", "events", ("create",)),
    Permission("policy", "poddisruptionbudgets", ("get", "list", "watch", "create", "patch")),
    Permission("autoscaling", "horizontalpodautoscalers", ("get", "list", "watch", "create", "patch")),
    Permission("networking.k8s.io", "ingresses", ("get", "list", "watch", "create", "patch")),
    Permission("gateway.networking.k8s.io", "httproutes", ("get", "list", "watch", "create", "patch")),
    # kopf: CRD discovery and (optional) peering.
    Permission("apiextensions.k8s.io", "customresourcedefinitions", ("get", "list", "watch")),
    Permission("", "namespaces", ("get", "list", "watch")),
    Permission("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch")),
    Permission("kopf.dev", "kopfpeerings", ("get", "list", "watch", "patch")),
)
