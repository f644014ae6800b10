"""Where Triton and conversion pods run: spread across nodes, unless the model claim can attach to one node only.

A ReadWriteOnce claim attaches to one node at a time: replicas spread over several nodes (and a conversion Job
on another node) would wait forever on "Multi-Attach error". So when the converted repository lives on a claim
without ReadWriteMany/ReadOnlyMany, Triton's replicas are co-located (required pod affinity on the hostname;
the first replica may go anywhere) and the conversion Job prefers that node. With a shared claim (or no claim),
replicas spread across nodes (``topologySpreadConstraints``, soft so a small cluster still schedules them).
"""

from __future__ import annotations

import copy
from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.names import needs_conversion, selector_labels

HOSTNAME = "kubernetes.io/hostname"
SHARED_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})


def single_node_claim(ms: ModelService) -> bool:
    """Whether Triton reads the converted repository from a claim that attaches to one node only."""
    return needs_conversion(ms) and not SHARED_MODES & set(ms.spec.storage.pvc.access_modes)


def _colocate_term(ms: ModelService) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": selector_labels(ms)}, "topologyKey": HOSTNAME}


def spread_constraints(ms: ModelService) -> list[dict[str, Any]]:
    """Soft spread of Triton's replicas across nodes (none when the claim pins them to one node)."""
    if single_node_claim(ms):
        return []
    return [
        {
            "maxSkew": 1,
            "topologyKey": HOSTNAME,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(ms)},
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]


def server_affinity(ms: ModelService) -> dict[str, Any] | None:
    """``spec.serving.affinity``, plus the co-location term when the claim attaches to one node only."""
    affinity = copy.deepcopy(ms.spec.serving.affinity) if ms.spec.serving.affinity else {}
    if single_node_claim(ms):
        pod_affinity = affinity.setdefault("podAffinity", {})
        pod_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(_colocate_term(ms))
    return affinity or None


def converter_affinity(ms: ModelService, base: dict[str, Any] | None) -> dict[str, Any] | None:
    """``base`` plus, when the claim attaches to one node only, a preference for the node Triton runs on."""
    affinity = copy.deepcopy(base) if base else {}
    if single_node_claim(ms):
        pod_affinity = affinity.setdefault("podAffinity", {})
        pod_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {"weight": 100, "podAffinityTerm": _colocate_term(ms)}
        )
    return affinity or None
