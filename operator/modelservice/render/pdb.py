"""The PodDisruptionBudget of Triton's pods."""

from __future__ import annotations

from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.names import COMPONENT_SERVER, metadata, pdb_name, selector_labels


def build_pdb(ms: ModelService) -> dict[str, Any]:
    """At most one replica voluntarily disrupted at a time.

    ``maxUnavailable: 1`` (not ``minAvailable``) so a single-replica ModelService never blocks a node drain
    forever; ``unhealthyPodEvictionPolicy: AlwaysAllow`` so pods that are not ready (crash-looping, still
    loading) never block one either.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ms, pdb_name(ms), COMPONENT_SERVER),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(ms)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
