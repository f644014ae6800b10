"""The shared helpers must be able to fail: each check is exercised on a compliant and a violating object."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from _k8s import K8S_VERSIONS, check_restricted, pod_templates, validate_strict


def _pod_spec() -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }


def _deployment(pod_spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": "x"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


class TestValidateStrict:
    def test_versions_cover_the_range(self) -> None:
        minors = {v.rsplit(".", 1)[0] for v in K8S_VERSIONS}
        assert len(minors) >= 3
        assert all("1.30" <= m <= "1.36" for m in minors)

    def test_valid_deployment(self) -> None:
        assert validate_strict(_deployment(_pod_spec())) == list(K8S_VERSIONS)

    def test_unknown_field_rejected(self) -> None:
        obj = _deployment(_pod_spec())
        obj["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
        with pytest.raises(AssertionError, match=r"containers\[0\].*bogus"):
            validate_strict(obj)

    def test_wrong_type_rejected(self) -> None:
        obj = _deployment(_pod_spec())
        obj["spec"]["replicas"] = "two"
        with pytest.raises(AssertionError, match=r"spec\.replicas"):
            validate_strict(obj)

    def test_cached_validator_agrees_with_kubernetes_validate(self) -> None:
        good = _deployment(_pod_spec())
        bad = copy.deepcopy(good)
        bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(good, version, strict=True)
            with pytest.raises(kubernetes_validate.ValidationError):
                kubernetes_validate.validate(bad, version, strict=True)
        validate_strict(good)
        with pytest.raises(AssertionError):
            validate_strict(bad)

    def test_unknown_kind_is_an_error(self) -> None:
        with pytest.raises(AssertionError):
            validate_strict({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})

    def test_httproute(self) -> None:
        route: dict[str, Any] = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "svc", "port": 8000}],
                    }
                ],
            },
        }
        assert validate_strict(route) == ["gateway-api-v1"]
        bad = copy.deepcopy(route)
        bad["spec"]["rules"][0]["backendRefs"][0]["prot"] = 8000
        with pytest.raises(AssertionError, match="prot"):
            validate_strict(bad)
        bad = copy.deepcopy(route)
        bad["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Glob"
        with pytest.raises(AssertionError, match="Glob"):
            validate_strict(bad)


class TestCheckRestricted:
    def test_compliant(self) -> None:
        assert check_restricted(_pod_spec()) == []

    @pytest.mark.parametrize(
        ("mutate", "expected"),
        [
            (lambda p: p.update(hostNetwork=True), "hostNetwork"),
            (lambda p: p.update(hostPID=True), "hostPID"),
            (lambda p: p.update(hostIPC=True), "hostIPC"),
            (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
            (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
            (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser"),
            (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
            (lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
            (
                lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
                "sysctl",
            ),
            (
                lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
                "allowPrivilegeEsc",
            ),
            (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
            (
                lambda p: p["containers"][0]["securityContext"].update(capabilities={"drop": ["NET_RAW"]}),
                "drop",
            ),
            (
                lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
                "SYS_ADMIN",
            ),
            (lambda p: p["containers"][0]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
            (lambda p: p["containers"][0]["securityContext"].update(procMount="Unmasked"), "procMount"),
            (lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
            (
                lambda p: p["containers"][0]["securityContext"].update(seLinuxOptions={"user": "root"}),
                "seLinuxOptions.user",
            ),
            (lambda p: p.update(initContainers=[{"name": "init", "image": "x"}]), "initContainers[init]"),
        ],
    )
    def test_violation_detected(self, mutate: Any, expected: str) -> None:
        pod = _pod_spec()
        mutate(pod)
        problems = check_restricted(pod)
        assert any(expected in p for p in problems), problems

    def test_net_bind_service_allowed(self) -> None:
        pod = _pod_spec()
        pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
        assert check_restricted(pod) == []

    def test_apparmor_annotation(self) -> None:
        key = "container.apparmor.security.beta.kubernetes.io/main"
        assert check_restricted(_pod_spec(), {key: "runtime/default"}) == []
        assert check_restricted(_pod_spec(), {key: "unconfined"})

    def test_pod_templates(self) -> None:
        ((spec, annotations),) = pod_templates(_deployment(_pod_spec()))
        assert spec["containers"][0]["name"] == "main"
        assert annotations == {}
