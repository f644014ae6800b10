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
    # kopf watches ModelServices (list, watch); the operator writes only their status (controller/apply.py).
    Permission("modelservice.dev", "modelservices", ("list", "watch")),
    Permission("modelservice.dev", "modelservices/status", ("patch",)),
    # Children: kopf watches them (list, watch); apply.py creates, patches, reads one after a 409 (get) and deletes
    # what the spec no longer asks for (render.obsolete_children; never a claim).
    Permission("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("batch", "jobs", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("", "services", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("", "configmaps", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("", "persistentvolumeclaims", ("get", "list", "watch", "create", "patch")),
    Permission("policy", "poddisruptionbudgets", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("autoscaling", "horizontalpodautoscalers", ("get", "list", "watch", "create", "patch", "delete")),
    # Scale to zero (render/keda.py): KEDA's ScaledObject and the KEDA HTTP add-on's HTTPScaledObject.
    Permission("keda.sh", "scaledobjects", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("http.keda.sh", "httpscaledobjects", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("networking.k8s.io", "ingresses", ("get", "list", "watch", "create", "patch", "delete")),
    Permission("gateway.networking.k8s.io", "httproutes", ("get", "list", "watch", "create", "patch", "delete")),
    # The conversion Job's pods: listed once per finished conversion for the termination message (observe.py).
    Permission("", "pods", ("list",)),
    # Events on phase transitions (apply.post_event); kopf's own event posting is off.
    Permission("", "events", ("create",)),
    # kopf: CRD discovery and (optional) peering.
    Permission("apiextensions.k8s.io", "customresourcedefinitions", ("get", "list", "watch")),
    Permission("", "namespaces", ("get", "list", "watch")),
    Permission("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch")),
    Permission("kopf.dev", "kopfpeerings", ("get", "list", "watch", "patch")),
)
