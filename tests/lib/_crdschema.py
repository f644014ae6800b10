"""Validate objects of CRD kinds against an upstream CRD's openAPIV3Schema stored in tests/data (JSON Schema
draft 4, as OpenAPI 3.0 bounds are). Unknown fields are rejected, as ``kubectl apply --validate=strict`` would
(a structural schema would prune them silently); CEL rules (x-kubernetes-validations) are not run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"


def closed_schema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: closed_schema(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    return [closed_schema(v) for v in node] if isinstance(node, list) else node


def load_schema(relative: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((DATA / relative).read_text(encoding="utf-8"))
    return schema


def crd_object_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema  # type: ignore[import-untyped]

    closed = closed_schema(schema)
    closed.setdefault("properties", {})["metadata"] = {"type": "object"}
    validator = jsonschema.Draft4Validator(closed)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


KEDA_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda/scaledobject-v1alpha1.schema.json",
    ("http.keda.sh/v1alpha1", "HTTPScaledObject"): "keda/httpscaledobject-v1alpha1.schema.json",
}


def keda_errors(obj: dict[str, Any]) -> list[str]:
    return crd_object_errors(obj, load_schema(KEDA_SCHEMAS[(obj["apiVersion"], obj["kind"])]))
