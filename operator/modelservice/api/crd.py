"""Generate the ModelService CustomResourceDefinition from the pydantic models.

Pydantic's JSON Schema is turned into a Kubernetes *structural* OpenAPI v3 schema: references inlined,
``anyOf [X, null]`` folded into ``X`` with ``nullable``, titles dropped, free-form maps marked with
``x-kubernetes-preserve-unknown-fields``, JSON Schema 2020 exclusive bounds rewritten in the OpenAPI 3.0 form.
CEL rules come from the models' ``json_schema_extra`` (see ``models._cel``). ``crds/`` holds the output of
``crd_yaml()`` byte for byte (``hack/generate.py`` writes it; a test fails when it is stale).
"""

from __future__ import annotations

from typing import Any

import yaml

from modelservice import GROUP, KIND, PLURAL, VERSION
from modelservice.api.models import MAX_NAME_LENGTH, ModelServiceSpec, ModelServiceStatus

CRD_NAME = f"{PLURAL}.{GROUP}"
SHORT_NAMES = ["msvc"]
CATEGORIES = ["ml"]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri"},
    {"name": "Target", "type": "string", "jsonPath": ".spec.conversion.target"},
    {"name": "Precision", "type": "string", "jsonPath": ".spec.conversion.precision"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "URL", "type": "string", "jsonPath": ".status.endpoints.http"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP = {"title", "$defs", "discriminator"}


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def convert(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target = dict(self.defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return self.convert({**target, **extra})
        any_of = node.get("anyOf")
        if any_of is not None:
            non_null = [branch for branch in any_of if branch.get("type") != "null"]
            if len(non_null) != 1:
                raise ValueError(f"cannot express anyOf with {len(non_null)} non-null branches in a structural schema")
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = self.convert({**non_null[0], **rest})
            if len(non_null) != len(any_of):
                merged["nullable"] = True
            if merged.get("default", "absent") is None:
                del merged["default"]
            return merged

        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP:
                continue
            if key == "properties":
                out["properties"] = {name: self.convert(sub) for name, sub in value.items()}
            elif key == "items":
                out["items"] = self.convert(value)
            elif key == "additionalProperties":
                if value is False:
                    continue  # structural schemas prune unknown fields; pydantic (the operator) rejects them
                if value is True or value == {}:
                    out["x-kubernetes-preserve-unknown-fields"] = True
                else:
                    out["additionalProperties"] = self.convert(value)
            elif key == "exclusiveMinimum":
                out["minimum"] = value
                out["exclusiveMinimum"] = True
            elif key == "exclusiveMaximum":
                out["maximum"] = value
                out["exclusiveMaximum"] = True
            elif key == "required":
                out["required"] = sorted(value)
            else:
                out[key] = value
        if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            # Any-typed values (e.g. a toleration's free-form fields).
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "description" in out:
            out["description"] = " ".join(str(out["description"]).split())
        return out


def _schema(model: type[ModelServiceSpec] | type[ModelServiceStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _Converter(raw.get("$defs", {})).convert(raw)


def openapi_schema() -> dict[str, Any]:
    """The structural openAPIV3Schema of the ModelService kind."""
    return {
        "type": "object",
        "description": "ModelService fetches a PyTorch (or ONNX/TorchScript) model, converts, quantizes and "
        "verifies it, and serves it on NVIDIA Triton.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": _schema(ModelServiceSpec),
            "status": _schema(ModelServiceStatus),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters (child names add suffixes)",
            },
            {
                "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name must be a DNS-1035 label (it names the Service)",
            },
        ],
    }


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "modelservice-operator",
                "app.kubernetes.io/part-of": "modelservice",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.serving.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as YAML, deterministic byte for byte."""
    header = "# Generated by hack/generate.py from operator/modelservice/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=False)
