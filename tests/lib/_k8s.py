"""Shared Kubernetes test helpers: strict schema validation and the Pod Security Standard "restricted" check.

``validate_strict(obj)`` validates one object with kubernetes-validate's *strict* schemas (unknown fields are
errors) for several Kubernetes versions; it raises ``AssertionError`` naming the version, the field path and
the problem. Kinds kubernetes-validate does not ship (Gateway API's HTTPRoute) are checked against the
HTTPRoute v1 schema extracted from Gateway API's standard CRD (tests/data/gateway-api/), with unknown
fields rejected as ``kubectl apply --validate=strict`` would; any other unknown kind is an error, never a
silent pass.

``check_restricted(pod_spec)`` returns the list of Pod Security Standard violations (profile "restricted",
version "latest" as of Kubernetes 1.30-1.36, which includes every "baseline" control); an empty list means the
pod would be admitted in a namespace labelled ``pod-security.kubernetes.io/enforce: restricted``.
Reference: https://kubernetes.io/docs/concepts/security/pod-security-standards/

Both are used by the render tests and by the chart tests
(``from _k8s import validate_strict, check_restricted``; pytest's ``pythonpath = ["tests"]`` makes this
importable).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import kubernetes_validate.utils
import referencing

from _crdschema import KEDA_SCHEMAS, keda_errors

# Kubernetes versions checked (kubernetes-validate 1.37 ships schemas for 1.25 .. 1.37).
K8S_VERSIONS: tuple[str, ...] = ("1.30.0", "1.32.0", "1.34.0", "1.36.0")

_HTTPROUTE_SCHEMA = Path(__file__).resolve().parents[2] / "tests" / "data" / "gateway-api" / "httproute-v1.schema.json"


# --------------------------------------------------------------------------------------- schema validation


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _forbid_unknown(schema: Any) -> Any:
    """Structural CRD schemas prune unknown fields; strict client validation rejects them: mirror that."""
    if isinstance(schema, dict):
        out = {k: _forbid_unknown(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_forbid_unknown(v) for v in schema]
    return schema


@functools.cache
def _httproute_validator() -> jsonschema.protocols.Validator:
    schema = _forbid_unknown(json.loads(_HTTPROUTE_SCHEMA.read_text()))
    # metadata is validated by the API server itself, not by the CRD schema
    schema["properties"]["metadata"] = {"type": "object"}
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def _validate_httproute(obj: dict[str, Any]) -> None:
    errors = sorted(_httproute_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"HTTPRoute (gateway-api v1 CRD) {_path(e.absolute_path)}: {e.message}" for e in errors]
        raise AssertionError("\n".join(lines))
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise AssertionError("HTTPRoute metadata.name: required")


def _schema_dir(version: str) -> Any:
    return importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"


@functools.cache
def _definitions(version: str) -> Any:
    return referencing.Resource.from_contents(json.loads((_schema_dir(version) / "_definitions.json").read_text()))


@functools.cache
def _k8s_validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """The validator ``kubernetes_validate.validate(obj, version, strict=True)`` builds, built once.

    kubernetes_validate re-reads its 1.6 MB definitions file on every call; the render and chart tests validate
    hundreds of objects, so this caches the same schema files and the same validator construction
    (``test_cached_validator_agrees_with_kubernetes_validate`` pins the equivalence).
    """
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir(version) / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        raise AssertionError(f"no Kubernetes {version} schema for {kind} ({api_version})")
    schema = json.loads(path.read_text())
    registry = _definitions(version) @ (referencing.Resource.from_contents(schema) @ referencing.Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate_strict(obj: dict[str, Any], versions: Iterable[str] = K8S_VERSIONS) -> list[str]:
    """Validate ``obj`` strictly for every version in ``versions``; return the versions checked.

    Raises AssertionError (with version, field path and message) on the first invalid version.
    """
    if obj.get("apiVersion", "").startswith("gateway.networking.k8s.io/") and obj.get("kind") == "HTTPRoute":
        if obj["apiVersion"] != "gateway.networking.k8s.io/v1":
            raise AssertionError(f"HTTPRoute: only gateway.networking.k8s.io/v1 is checked, got {obj['apiVersion']}")
        _validate_httproute(obj)
        return ["gateway-api-v1"]
    if (str(obj.get("apiVersion")), str(obj.get("kind"))) in KEDA_SCHEMAS:  # KEDA's CRDs (tests/data/keda/)
        errors = keda_errors(obj)
        if errors:
            raise AssertionError(f"{obj['kind']}/{obj.get('metadata', {}).get('name')} (KEDA CRD): {errors[0]}")
        return ["keda-v1alpha1"]
    checked: list[str] = []
    for version in versions:
        if version not in kubernetes_validate.utils.all_versions():
            raise AssertionError(f"kubernetes-validate ships no schemas for {version}")
        validator = _k8s_validator(version, str(obj.get("apiVersion")), str(obj.get("kind")))
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is not None:
            where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            raise AssertionError(
                f"{where} invalid for Kubernetes {version}: {_path(error.absolute_path)}: {error.message}"
            )
        checked.append(version)
    return checked


# ------------------------------------------------------------------------------ Pod Security Standards


# Volume types the restricted profile allows (everything else, hostPath included, is a violation).
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_VOLUME_META_KEYS = frozenset({"name"})
# Baseline "safe" sysctls (Kubernetes 1.29+).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})


def _containers(pod_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod_spec.get(field) or []:
            yield f"{field}[{container.get('name', '?')}]", container


def _check_host_namespaces(pod: dict[str, Any]) -> list[str]:
    return [f"spec.{field} must not be true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]


def _check_volumes(pod: dict[str, Any]) -> list[str]:
    problems = []
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - _VOLUME_META_KEYS
        bad = sorted(kinds - RESTRICTED_VOLUME_TYPES)
        if bad:
            problems.append(f"volume {volume.get('name')!r}: type {', '.join(bad)} not allowed")
    return problems


def _check_selinux(where: str, ctx: dict[str, Any]) -> list[str]:
    opts = ctx.get("seLinuxOptions") or {}
    problems = []
    if opts.get("type", "") not in _SELINUX_TYPES:
        problems.append(f"{where}: seLinuxOptions.type {opts['type']!r} not allowed")
    for key in ("user", "role"):
        if opts.get(key):
            problems.append(f"{where}: seLinuxOptions.{key} must be unset")
    return problems


def _check_pod_context(pod: dict[str, Any]) -> list[str]:
    ctx = pod.get("securityContext") or {}
    problems = _check_selinux("spec.securityContext", ctx)
    if (ctx.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("spec.securityContext.windowsOptions.hostProcess must not be true")
    if ctx.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser must not be 0")
    seccomp = (ctx.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in _SECCOMP_OK:
        problems.append(f"spec.securityContext.seccompProfile.type {seccomp!r} not allowed")
    apparmor = (ctx.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in _SECCOMP_OK:
        problems.append(f"spec.securityContext.appArmorProfile.type {apparmor!r} not allowed")
    for sysctl in ctx.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"spec.securityContext.sysctls: {sysctl.get('name')!r} is not a safe sysctl")
    return problems


def _check_container(where: str, container: dict[str, Any], pod_ctx: dict[str, Any]) -> list[str]:
    ctx = container.get("securityContext") or {}
    problems = _check_selinux(where, ctx)
    if ctx.get("privileged"):
        problems.append(f"{where}: privileged must not be true")
    if (ctx.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{where}: windowsOptions.hostProcess must not be true")
    if ctx.get("procMount", "Default") != "Default":
        problems.append(f"{where}: procMount must be Default")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    # runAsNonRoot: the container's own value wins; else the pod's must be true
    non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
    if non_root is not True:
        problems.append(f"{where}: runAsNonRoot must be true (pod or container)")
    if ctx.get("runAsUser") == 0:
        problems.append(f"{where}: runAsUser must not be 0")
    seccomp = (ctx.get("seccompProfile") or {}).get("type") or (pod_ctx.get("seccompProfile") or {}).get("type")
    if seccomp not in _SECCOMP_OK:
        problems.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container)")
    apparmor = (ctx.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in _SECCOMP_OK:
        problems.append(f"{where}: appArmorProfile.type {apparmor!r} not allowed")
    caps = ctx.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{where}: capabilities.drop must include ALL")
    added = sorted(set(caps.get("add") or []) - {"NET_BIND_SERVICE"})
    if added:
        problems.append(f"{where}: capabilities.add may only contain NET_BIND_SERVICE, found {', '.join(added)}")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            problems.append(f"{where}: hostPort {port['hostPort']} not allowed")
    return problems


def _check_apparmor_annotations(annotations: dict[str, str]) -> list[str]:
    problems = []
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            problems.append(f"annotation {key}={value!r} not allowed")
    return problems


def check_restricted(pod_spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Pod Security Standard "restricted" (latest) violations of a pod spec; [] when it would be admitted.

    ``pod_spec`` is a Pod's ``spec`` (e.g. ``deployment["spec"]["template"]["spec"]``); pass the pod
    template's annotations to check the legacy AppArmor annotations as well.
    """
    if not isinstance(pod_spec, dict) or not pod_spec.get("containers"):
        return ["pod spec has no containers"]
    pod_ctx = pod_spec.get("securityContext") or {}
    problems = _check_host_namespaces(pod_spec) + _check_volumes(pod_spec) + _check_pod_context(pod_spec)
    problems += _check_apparmor_annotations(annotations or {})
    for where, container in _containers(pod_spec):
        problems += _check_container(where, container, pod_ctx)
    return problems


def pod_templates(obj: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(pod spec, pod annotations) of each pod template in ``obj`` (Deployment, Job, StatefulSet, CronJob)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return [(spec, (obj.get("metadata") or {}).get("annotations") or {})]
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template")
    if not isinstance(template, dict):
        return []
    return [(template.get("spec") or {}, (template.get("metadata") or {}).get("annotations") or {})]
