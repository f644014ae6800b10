"""Generate the ModelService CustomResourceDefinition from the pydantic models.

Pydantic's JSON Schema is turned into a Kubernetes *structural* OpenAPI v3 schema: references inlined,
``anyOf [X, null]`` folded into ``X`` with ``nullable``, titles dropped, free-form maps marked with
``x-kubernetes-preserve-unknown-fields``, JSON Schema 2020 exclusive bounds rewritten in the OpenAPI 3.0 form.
CEL rules and extra schema keywords come from the models' ``json_schema_extra`` (see ``base.cel``). ``crds/`` holds
the output of ``crd_yaml()`` byte for byte (``hack/generate.py`` writes it; a test fails when it is stale).

Defaults: every pydantic default becomes a structural ``default``, so the API server stores what the operator
would assume (``kubectl get msvc`` shows TARGET and PRECISION; ``kubectl get -o yaml`` every setting in effect).
``default=`` values and ``default_factory=`` results are dumped by alias; a model-valued default is written ``{}``
(its own fields' defaults fill it in, as the API server defaults nested fields) unless it differs from the
model's own defaults. Fields without a default, on purpose, because their absence means something:

- those whose pydantic default is None: ``serving.image`` (unset: the operator picks the stock or the text
  image), ``autoscaling`` (fixed replicas), ``model.task``/``architecture``/``weights``/``sha256``/
  ``credentials``/``maxSequenceLength`` (per format, or from the model's config), ``verification.metric``
  (follows the task), ``verification.dataUri`` (seeded random inputs), ``quantization.calibration``,
  ``storage.pvc.name`` (``<name>-models``), ``storageClassName``, ``exposure.ingress``/``httpRoute``,
  ``serving.affinity``, ``rollout`` (the immediate switch of before), ``rollout.mirror``, ``status.revisions``
  (a default would put ``[]`` into every stored status), and the optional names inside them;
- required fields (``model.uri``, a tensor's ``name``/``shape``, ``autoscaling.maxReplicas``, ...).

``serving.dynamicBatching`` has a default (``{}``) and is ``nullable``: the API server keeps an explicit null
(batching off) and defaults only an absent field, which is what pydantic does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema, to_jsonable_python

from modelservice import GROUP, KIND, PLURAL, VERSION
from modelservice.api import kubeyaml
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
    {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP = {"title", "$defs", "discriminator"}


class _WithDefaults(GenerateJsonSchema):
    """Pydantic's JSON Schema, with ``default_factory`` results as defaults (pydantic leaves them out)."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return super().get_default_value(schema)

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, BaseModel):
            try:
                if dft == type(dft).model_validate({}):
                    return {}  # the nested defaults fill it in
            except ValidationError:
                pass  # a model with required fields: written out whole
        return to_jsonable_python(dft, by_alias=True, exclude_none=True)


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
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithDefaults)
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
    return header + kubeyaml.dump(crd(), sort_keys=False, width=120, allow_unicode=False)
