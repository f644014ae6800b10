"""The immutable ConfigMap holding the ModelService file a conversion Job reads."""

from __future__ import annotations

from typing import Any

import yaml

from modelservice.api import kubeyaml
from modelservice.api.models import ModelService
from modelservice.render.names import (
    COMPONENT_CONVERTER,
    HASH_LABEL,
    SPEC_FILE,
    configmap_name,
    conversion_hash,
    metadata,
)

# libyaml's dumper (this runs on every reconcile), quoting what kubectl's YAML reading would not take for a string
# (``modelservice convert -f`` reads the file as kubectl does: a tensor named "n" must be written 'n').
_DUMPER: Any = kubeyaml.Dumper


def modelservice_document(ms: ModelService) -> dict[str, Any]:
    """The ModelService as ``modelservice convert -f`` reads it: apiVersion, kind, name/namespace and spec."""
    return {
        "apiVersion": ms.api_version,
        "kind": ms.kind,
        "metadata": {"name": ms.name, "namespace": ms.namespace},
        "spec": ms.spec.to_api(),
    }


def build_configmap(ms: ModelService) -> dict[str, Any]:
    """``<name>-convert-<hash>``: one per conversion hash, immutable, so a running Job never sees a later spec."""
    hash_ = conversion_hash(ms)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ms, configmap_name(ms, hash_), COMPONENT_CONVERTER, extra_labels={HASH_LABEL: hash_}),
        "immutable": True,
        "data": {SPEC_FILE: yaml.dump(modelservice_document(ms), Dumper=_DUMPER, sort_keys=False)},
    }
