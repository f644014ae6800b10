"""The CRD's CEL rules, evaluated with a real CEL interpreter (cel-python), agree with the pydantic rules.

The API server applies schema defaults before it evaluates x-kubernetes-validations; so do we (``_apiserver``,
which also says what stays simplified). test_crd_parity.py extends this to every validator and the OpenAPI part.
"""

from __future__ import annotations

from typing import Any

import pytest
from _apiserver import admit, cel_errors

from modelservice.api.errors import SpecError
from modelservice.api.loader import parse


def cel_verdict(doc: dict[str, Any]) -> list[str]:
    return cel_errors(admit(doc)[0])


def pydantic_valid(doc: dict[str, Any]) -> bool:
    try:
        parse(doc, "ms.yaml")
    except SpecError:
        return False
    return True


def doc(spec: dict[str, Any], name: str = "digits") -> dict[str, Any]:
    return {"apiVersion": "modelservice.dev/v1alpha1", "kind": "ModelService", "metadata": {"name": name}, "spec": spec}


PYTORCH = {
    "uri": "s3://m/d/",
    "architecture": "model.py:Net",
    "inputs": [{"name": "x", "shape": [64]}],
}

HF = {"uri": "s3://m/minilm/", "format": "huggingface", "task": "sentence-embedding", "maxSequenceLength": 128}

VALID = [
    doc({"model": PYTORCH}),
    doc({"model": {"uri": "pvc://repo/digits", "format": "triton-repository"}, "conversion": {"target": "none"}}),
    doc({"model": {"uri": "s3://m/x.onnx", "format": "onnx"}, "conversion": {"precision": "int8"}}),
    doc({"model": HF, "conversion": {"precision": "auto", "verification": {"metric": "cosine", "minCosine": 0.995}}}),
    doc({"model": {"uri": "s3://m/vit/", "format": "huggingface", "task": "image-classification"}}),
    doc(
        {
            "model": PYTORCH,
            "conversion": {"target": "tensorrt", "precision": "fp16"},
            "serving": {"resources": {"gpu": 1}},
            "autoscaling": {"maxReplicas": 4, "metrics": [{"type": "queueTime", "targetMicroseconds": 500}]},
        }
    ),
    doc(
        {
            "model": PYTORCH,
            "conversion": {"quantization": {"method": "static", "calibration": {"uri": "s3://c/x.npz"}}},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
        }
    ),
]

# Cross-field rules the API server can enforce itself: each must be caught by CEL as well as pydantic.
INVALID = {
    "architecture missing": doc({"model": {**PYTORCH, "architecture": None}}),
    "architecture on onnx": doc({"model": {"uri": "s3://x", "format": "onnx", "architecture": "m.py:N"}}),
    "static without calibration": doc({"model": PYTORCH, "conversion": {"quantization": {"method": "static"}}}),
    "min above max": doc({"model": PYTORCH, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}),
    "cpu metric without target": doc(
        {"model": PYTORCH, "autoscaling": {"maxReplicas": 2, "metrics": [{"type": "cpu"}]}}
    ),
    "queueTime with wrong target": doc(
        {"model": PYTORCH, "autoscaling": {"maxReplicas": 2, "metrics": [{"type": "queueTime", "targetPerReplica": 5}]}}
    ),
    "target none with int8": doc(
        {"model": {"uri": "s3://x", "format": "onnx"}, "conversion": {"target": "none", "precision": "int8"}}
    ),
    "target none for pytorch": doc({"model": PYTORCH, "conversion": {"target": "none"}}),
    "triton repository converted": doc({"model": {"uri": "pvc://r/d", "format": "triton-repository"}}),
    "tensorrt without gpu": doc({"model": PYTORCH, "conversion": {"target": "tensorrt"}}),
    "torchscript int8": doc({"model": PYTORCH, "conversion": {"target": "torchscript", "precision": "int8"}}),
    "name too long": doc({"model": PYTORCH}, name="d" * 41),
    "huggingface without task": doc({"model": {"uri": "s3://m/x/", "format": "huggingface"}}),
    "task on onnx": doc({"model": {"uri": "s3://x", "format": "onnx", "task": "sentence-embedding"}}),
    "maxSequenceLength on images": doc(
        {"model": {"uri": "s3://x/", "format": "huggingface", "task": "image-classification", "maxSequenceLength": 9}}
    ),
    "target none for huggingface": doc({"model": HF, "conversion": {"target": "none"}}),
    "text model without batching": doc({"model": HF, "serving": {"maxBatchSize": 0}}),
}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@pytest.mark.parametrize("document", VALID, ids=range(len(VALID)))
def test_valid_documents_pass_every_rule(document: dict[str, Any]) -> None:
    assert pydantic_valid(document)
    assert cel_verdict(document) == []


@pytest.mark.parametrize("case", sorted(INVALID))
def test_cross_field_rules_agree(case: str) -> None:
    document = _clean(INVALID[case])
    assert not pydantic_valid(document), case
    assert cel_verdict(document), f"{case}: the API server would accept what the operator rejects"
