"""What a kube-apiserver does with a ModelService body under our CRD, emulated for the parity tests.

The steps and their order follow apiextensions-apiserver (v1.36): the request body is decoded, nulls the schema
does not allow and has no default for are dropped (defaulting.PruneNonNullableNullsWithoutDefaults), defaults are
applied (structuraldefaulting.Default: a missing field, or a null where null is not allowed, gets a copy of its
default, then every field is defaulted in turn), then the object is validated against the OpenAPI schema and the
x-kubernetes-validations (CEL) rules.

- The OpenAPI part is checked with ``jsonschema``'s Draft 4 validator (OpenAPI 3.0's boolean exclusiveMinimum),
  on a copy of the schema with the Kubernetes extensions removed, ``nullable`` turned into a ``null`` type, and
  every object with ``properties`` closed: kubectl's default ``--validate=strict`` asks the server to refuse unknown
  fields (fieldValidation=Strict) instead of pruning them.
- CEL rules run in cel-python, with null-valued fields left out (Kubernetes CEL treats them as absent: ``has()`` is
  false), and an evaluation error counts as a failure, as it does on the server.

What stays simplified: no CEL cost estimation, no ratcheting (an update keeps nothing of the old object), the
rules are only evaluated when the schema passes, and ``metadata`` is only checked by the root rules.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema  # type: ignore[import-untyped]

from modelservice.api.crd import crd

SCHEMA: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def sub_schema(node: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The schema of a mapping's field ``key`` (a property, or the map's value schema)."""
    if node is None:
        return None
    if key in node.get("properties", {}):
        return node["properties"][key]  # type: ignore[no-any-return]
    additional = node.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def prune_nulls(value: Any, node: dict[str, Any] | None) -> None:
    """Drop, in place, nulls whose schema is not nullable and has no default."""
    if isinstance(value, dict):
        for key in list(value):
            sub = sub_schema(node, key)
            if value[key] is None and sub is not None and not sub.get("nullable") and "default" not in sub:
                del value[key]
            else:
                prune_nulls(value[key], sub)
    elif isinstance(value, list):
        items = node.get("items") if node else None
        for item in value:
            prune_nulls(item, items)


def apply_defaults(value: Any, node: dict[str, Any] | None) -> None:
    """Fill in, in place, the schema's defaults (missing fields and non-nullable nulls), recursively."""
    if node is None:
        return
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if "default" in sub and (key not in value or (value[key] is None and not sub.get("nullable"))):
                value[key] = copy.deepcopy(sub["default"])
        for key in value:
            apply_defaults(value[key], sub_schema(node, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            apply_defaults(item, node["items"])


def _json_schema(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description", "default"):
            continue
        if key == "properties":
            out[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _json_schema(value)
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


_VALIDATOR = jsonschema.Draft4Validator(_json_schema(SCHEMA))


def schema_errors(document: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """OpenAPI (structural schema) problems of an already defaulted object."""
    validator = _VALIDATOR if schema is None else jsonschema.Draft4Validator(_json_schema(schema))
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def cel_errors(value: Any, node: dict[str, Any] | None = None, path: str = "") -> list[str]:
    """Failed x-kubernetes-validations rules of an already defaulted object, as ``path: message``."""
    node = SCHEMA if node is None else node
    failures: list[str] = []
    if value is None:
        return failures
    for rule in node.get("x-kubernetes-validations", []):
        try:
            passed = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(_without_nulls(value))})
        except celpy.CELEvalError as exc:
            passed = exc
        if passed is not True and not (isinstance(passed, celpy.celtypes.BoolType) and bool(passed)):
            failures.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub_value in value.items():
            sub = sub_schema(node, key)
            if sub is not None:
                failures += cel_errors(sub_value, sub, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            failures += cel_errors(item, node["items"], f"{path}[{index}]")
    return failures


def admit(document: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The object the API server would store (nulls pruned, defaults applied) and its validation problems."""
    stored = copy.deepcopy(document)
    prune_nulls(stored, SCHEMA)
    apply_defaults(stored, SCHEMA)
    problems = schema_errors(stored)
    if not problems:
        problems = cel_errors(stored)
    return stored, problems


def verdict(document: dict[str, Any]) -> list[str]:
    """The API server's problems with a ModelService (empty: it would be stored)."""
    return admit(document)[1]
