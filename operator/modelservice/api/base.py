"""The base of every API model: camelCase on the wire, unknown fields refused, nulls read as the API server reads
them; ``cel()``, the CEL rules (x-kubernetes-validations) a model or field adds to the generated CRD; shared
patterns."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

# A Kubernetes quantity as the spec accepts it (a subset of resource.Quantity: no exponents).
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"


def cel(*rules: tuple[str, str, str]) -> dict[str, Any]:
    """CEL rules ``(rule, message, fieldPath)`` that the API server enforces itself (for a ``json_schema_extra``);
    the same rules are implemented in validators so the CLI and the operator reject what the cluster would."""
    return {
        "x-kubernetes-validations": [
            {"rule": rule, "message": message, **({"fieldPath": path} if path else {})} for rule, message, path in rules
        ]
    }


def _nullable(annotation: Any) -> bool:
    if annotation is Any or annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_nullable(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _nullable(typing.get_args(annotation)[0])
    return False


def _map_of_non_nullable(annotation: Any) -> bool:
    if typing.get_origin(annotation) is not dict:
        return False
    return not _nullable(typing.get_args(annotation)[1])


_PRUNED: dict[type[BaseModel], tuple[frozenset[str], frozenset[str]]] = {}


def _null_pruning(model: type[BaseModel]) -> tuple[frozenset[str], frozenset[str]]:
    """(keys whose null is dropped, keys of maps whose null values are dropped), by alias and by name."""
    if model not in _PRUNED:
        fields, maps = set(), set()
        for name, info in model.model_fields.items():
            keys = {name, info.alias or name}
            if not _nullable(info.annotation):
                fields |= keys
            if _map_of_non_nullable(info.annotation):
                maps |= keys
        _PRUNED[model] = (frozenset(fields), frozenset(maps))
    return _PRUNED[model]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A null where the schema allows none reads as absent, as on the API server: it drops such nulls before
        defaulting (apiextensions' PruneNonNullableNullsWithoutDefaults, then Default), so ``conversion: null``
        means the default conversion and ``maxReplicas: null`` a missing required field. Map entries too."""
        if not isinstance(data, dict):
            return data
        fields, maps = _null_pruning(cls)
        if not any(value is None or (key in maps and isinstance(value, dict)) for key, value in data.items()):
            return data
        kept: dict[str, Any] = {}
        for key, value in data.items():
            if value is None and key in fields:
                continue
            if key in maps and isinstance(value, dict) and None in value.values():
                value = {k: v for k, v in value.items() if v is not None}
            kept[key] = value
        return kept

    def to_api(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
