"""Helpers of the chart tests: render charts/modelservice-operator with the real Helm SDK (Helm v4 Go SDK)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml

from _crdschema import closed_schema

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "modelservice-operator"
RELEASE = "msvc-op"
NAMESPACE = "modelservice-system"

if str(REPO / "hack") not in sys.path:
    sys.path.insert(0, str(REPO / "hack"))

# Value sets the tests render: the defaults and the non-default modes users pick.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["ml", "team-b"]},
    "monitoring": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
        "tritonMetrics": {"podMonitor": {"enabled": True}},
        "prometheusAdapter": {"rules": {"enabled": True}},
    },
    "peering": {"peering": {"enabled": True}, "replicas": 2},
    "peering-namespaced": {"peering": {"enabled": True}, "replicas": 2, "watchNamespaces": ["ml"]},
    "no-crds-digest": {
        "crds": {"enabled": False},
        "image": {"digest": "sha256:" + "a" * 64},
        "converter": {"gpuImage": {"repository": "registry.local/conv-gpu", "digest": "sha256:" + "b" * 64}},
        "serviceAccount": {"create": False, "name": "existing"},
        "verbose": True,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/a": "b"},
        "imagePullSecrets": [{"name": "regcred"}],
    },
}


def render(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """template path -> the objects it renders (NOTES.txt -> [{"notes": text}])."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            out[template] = [{"notes": text}]
            continue
        out[template] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def objects(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for path, objs in sorted(render(chart, values).items()) if "NOTES" not in path for obj in objs]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objs if obj["kind"] == kind]


# ------------------------------------------------------------------------------------------------ RBAC

Grant = tuple[str, str, str]  # (api group, resource, verb)
# Resources that are not namespaced: granted by a ClusterRole in every mode.
CLUSTER_SCOPED = frozenset(
    {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"), ("kopf.dev", "clusterkopfpeerings")}
)
PEERING = frozenset({("kopf.dev", "clusterkopfpeerings"), ("kopf.dev", "kopfpeerings")})


def grants_of(role: dict[str, Any]) -> set[Grant]:
    """Every (group, resource, verb) a Role/ClusterRole grants; refuses wildcards and name/URL rules."""
    out: set[Grant] = set()
    for rule in role.get("rules") or []:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field] and all("*" not in item for item in rule[field]), f"wildcard: {rule}"
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def expected_grants(*, namespaced: bool, peering: bool) -> set[Grant]:
    """permissions.PERMISSIONS, less the peering resource the mode does not use."""
    from modelservice.api.permissions import PERMISSIONS

    unused = (
        set(PEERING) if not peering else {("kopf.dev", "kopfpeerings" if not namespaced else "clusterkopfpeerings")}
    )
    return {
        (p.api_group, p.resource, verb)
        for p in PERMISSIONS
        if (p.api_group, p.resource) not in unused
        for verb in p.verbs
    }


def is_cluster_scoped(grant: Grant) -> bool:
    return (grant[0], grant[1]) in CLUSTER_SCOPED


# ------------------------------------------------------------------------------------- CRD-typed objects


def crd_object_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Problems of ``obj`` against a CRD's openAPIV3Schema (OpenAPI 3.0 = JSON Schema draft 4 bounds)."""
    import jsonschema  # type: ignore[import-untyped]

    schema = closed_schema(schema)
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    validator = jsonschema.Draft4Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


def prometheus_operator_schema(kind: str) -> dict[str, Any]:
    import json

    path = REPO / "tests" / "data" / "prometheus-operator" / f"{kind.lower()}-v1.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema
