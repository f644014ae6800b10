"""The chart's RBAC grants exactly operator/modelservice/api/permissions.PERMISSIONS: no more, no less."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest
from chartlib import NAMESPACE, by_kind, expected_grants, grants_of, is_cluster_scoped, objects


def _subjects_are_the_operator(binding: dict[str, Any], service_account: str) -> None:
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}]


@pytest.mark.parametrize("peering", [False, True])
def test_cluster_wide_grants_exactly_the_permissions_table(chart: helm_python.Chart, peering: bool) -> None:
    objs = objects(chart, {"peering": {"enabled": peering}})
    assert by_kind(objs, "Role") == [] and by_kind(objs, "RoleBinding") == []
    (cluster_role,) = by_kind(objs, "ClusterRole")
    assert grants_of(cluster_role) == expected_grants(namespaced=False, peering=peering)
    (binding,) = by_kind(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cluster_role["metadata"]["name"],
    }
    (service_account,) = by_kind(objs, "ServiceAccount")
    _subjects_are_the_operator(binding, service_account["metadata"]["name"])
    (deployment,) = by_kind(objs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == service_account["metadata"]["name"]


@pytest.mark.parametrize("peering", [False, True])
def test_namespaced_mode_grants_namespaced_rules_per_namespace(chart: helm_python.Chart, peering: bool) -> None:
    watched = ["ml", "team-b"]
    objs = objects(chart, {"watchNamespaces": watched, "peering": {"enabled": peering}})
    expected = expected_grants(namespaced=True, peering=peering)
    (cluster_role,) = by_kind(objs, "ClusterRole")
    cluster = grants_of(cluster_role)
    # cluster-scoped: only kopf's read-only discovery of CRDs and namespaces
    assert cluster == {g for g in expected if is_cluster_scoped(g)}
    assert {verb for _, _, verb in cluster} == {"get", "list", "watch"}
    roles = by_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == watched
    for role in roles:
        assert grants_of(role) == {g for g in expected if not is_cluster_scoped(g)}
    assert cluster | grants_of(roles[0]) == expected
    bindings = by_kind(objs, "RoleBinding")
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings) == [
        (ns, roles[0]["metadata"]["name"]) for ns in watched
    ]
    for binding in bindings + by_kind(objs, "ClusterRoleBinding"):
        _subjects_are_the_operator(binding, by_kind(objs, "ServiceAccount")[0]["metadata"]["name"])


def test_rbac_create_false_renders_no_rbac(chart: helm_python.Chart) -> None:
    objs = objects(chart, {"rbac": {"create": False}})
    assert not {o["kind"] for o in objs} & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def test_grants_of_refuses_wildcards() -> None:
    with pytest.raises(AssertionError, match="wildcard"):
        grants_of({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]})


def test_every_permission_is_granted_somewhere_in_some_mode(chart: helm_python.Chart) -> None:
    from modelservice.api.permissions import PERMISSIONS

    granted: set[tuple[str, str, str]] = set()
    for values in ({"peering": {"enabled": True}}, {"peering": {"enabled": True}, "watchNamespaces": ["ml"]}):
        for role in by_kind(objects(chart, values), "ClusterRole") + by_kind(objects(chart, values), "Role"):
            granted |= grants_of(role)
    assert granted == {(p.api_group, p.resource, v) for p in PERMISSIONS for v in p.verbs}
