"""Pod Security Standard "restricted" security contexts for every pod the operator creates."""

from __future__ import annotations

from typing import Any


def pod_security_context(uid: int) -> dict[str, Any]:
    """Non-root uid/gid, group ownership of volumes (so the converter can write the claim Triton reads),
    RuntimeDefault seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """No privilege escalation, every capability dropped, read-only root filesystem (scratch is an emptyDir)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
