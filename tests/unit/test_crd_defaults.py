"""The CRD's structural defaults: the API server stores what pydantic assumes, and the defaults themselves are valid.

A CRD whose default fails its own schema or CEL rules is refused by the API server (apiextensions validates every
default, with the defaults below it applied); ``test_every_default_is_valid_where_it_stands`` does the same here.
Minimal documents, defaulted as the API server defaults them (``_apiserver``), must stay valid and parse to the
same model as without the defaults, and the defaulted spec must be exactly pydantic's.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from _apiserver import SCHEMA, admit, apply_defaults, cel_errors, schema_errors

from modelservice.api.crd import PRINTER_COLUMNS
from modelservice.api.loader import parse


def doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "modelservice.dev/v1alpha1", "kind": "ModelService", "metadata": {"name": "m"}, "spec": spec}


PYTORCH = {"uri": "s3://m/d/", "architecture": "model.py:Net", "inputs": [{"name": "x", "shape": [64]}]}
ONNX = {"uri": "s3://m/x.onnx", "format": "onnx"}

# The smallest documents that reach every default: each optional object appears with only its required fields.
MINIMAL = {
    "pytorch": doc({"model": PYTORCH}),
    "onnx": doc({"model": ONNX}),
    "huggingface": doc({"model": {"uri": "hf://org/minilm", "format": "huggingface", "task": "sentence-embedding"}}),
    "triton repository": doc(
        {"model": {"uri": "pvc://r/d", "format": "triton-repository"}, "conversion": {"target": "none"}}
    ),
    "every optional object": doc(
        {
            "model": {**ONNX, "outputs": [{"name": "y", "shape": [10]}], "credentials": {"secretName": "s3"}},
            "conversion": {"precision": "int8", "quantization": {"method": "static", "calibration": {"uri": "s3://c"}}},
            "autoscaling": {"maxReplicas": 3},
            "storage": {"pvc": {}},
            "exposure": {"ingress": {"host": "m.example.com"}, "httpRoute": {"parentRefs": [{"name": "gw"}]}},
        }
    ),
    "empty sections": doc({"model": ONNX, "conversion": {}, "serving": {}, "storage": {}, "exposure": {}}),
}


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            found += _walk(node[key], path + mark)
    return found


def _at(document: dict[str, Any], json_path: str) -> Any:
    value: Any = document
    for part in json_path.strip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@pytest.mark.parametrize("case", sorted(MINIMAL))
def test_defaulted_documents_stay_valid_and_mean_the_same(case: str) -> None:
    original = MINIMAL[case]
    stored, problems = admit(original)
    assert problems == []
    assert parse(copy.deepcopy(stored), "ms.yaml") == parse(copy.deepcopy(original), "ms.yaml")


@pytest.mark.parametrize("case", sorted(MINIMAL))
def test_the_api_server_stores_what_pydantic_assumes(case: str) -> None:
    stored, _ = admit(MINIMAL[case])
    assert stored["spec"] == parse(copy.deepcopy(MINIMAL[case]), "ms.yaml").spec.to_api()


def test_every_default_is_valid_where_it_stands() -> None:
    defaults = [(path, node) for path, node in _walk(SCHEMA) if "default" in node]
    assert len(defaults) > 40
    for path, node in defaults:
        value = copy.deepcopy(node["default"])
        apply_defaults(value, node)
        assert schema_errors(value, node) == [], path
        assert cel_errors(value, node, path) == [], path


def test_printer_columns_show_the_defaults() -> None:
    stored, _ = admit(MINIMAL["pytorch"])
    columns = {column["name"]: column["jsonPath"] for column in PRINTER_COLUMNS}
    assert _at(stored, columns["Target"]) == "onnx"
    assert _at(stored, columns["Precision"]) == "fp32"


def test_null_dynamic_batching_is_kept_and_absence_is_defaulted() -> None:
    off, problems = admit(doc({"model": ONNX, "serving": {"dynamicBatching": None}}))
    assert problems == []
    assert off["spec"]["serving"]["dynamicBatching"] is None
    assert parse(off, "ms.yaml").spec.serving.dynamic_batching is None
    on, _ = admit(doc({"model": ONNX}))
    assert on["spec"]["serving"]["dynamicBatching"] == {"maxQueueDelayMicroseconds": 100, "preferredBatchSizes": []}


@pytest.mark.parametrize(
    "path",
    [
        ".spec.serving.image",  # unset: the operator picks NVIDIA's stock image or its text image
        ".spec.autoscaling",  # absent: fixed replicas
        ".spec.model.task",
        ".spec.model.architecture",
        ".spec.model.maxSequenceLength",  # from the model's config
        ".spec.conversion.verification.metric",  # follows the task
        ".spec.conversion.verification.dataUri",  # seeded random inputs
        ".spec.conversion.quantization.calibration",
        ".spec.storage.pvc.name",  # <name>-models
        ".spec.exposure.ingress",
        ".spec.exposure.httpRoute",
        ".spec.serving.affinity",
    ],
)
def test_fields_whose_absence_means_something_have_no_default(path: str) -> None:
    nodes = dict(_walk(SCHEMA))
    assert path in nodes
    assert "default" not in nodes[path]
