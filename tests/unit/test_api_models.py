"""The API models: defaults, camelCase round trip, and every cross-field rule naming its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelservice.api.errors import SpecError
from modelservice.api.loader import parse
from modelservice.api.models import ModelService, uri_scheme

BASE: dict[str, Any] = {
    "apiVersion": "modelservice.dev/v1alpha1",
    "kind": "ModelService",
    "metadata": {"name": "digits", "namespace": "ml"},
    "spec": {
        "model": {
            "uri": "s3://models/digits/v3/",
            "format": "pytorch",
            "architecture": "model.py:DigitsNet",
            "weights": "weights.safetensors",
            "inputs": [{"name": "image", "dtype": "FP32", "shape": [1, 8, 8]}],
            "outputs": [{"name": "logits", "dtype": "FP32", "shape": [10]}],
        },
        "conversion": {"target": "onnx", "precision": "int8", "quantization": {"method": "dynamic"}},
    },
}


def with_changes(**paths: Any) -> dict[str, Any]:
    """BASE with dotted paths set (value None deletes the key)."""
    doc = copy.deepcopy(BASE)
    for dotted, value in paths.items():
        node = doc
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(doc, "ms.yaml")
    return [str(p) for p in info.value.problems]


class TestDefaults:
    def test_defaults_follow_design(self) -> None:
        ms = parse(BASE, "ms.yaml")
        assert ms.spec.serving.max_batch_size == 32
        assert ms.spec.serving.replicas == 1
        assert ms.spec.conversion.opset == 18
        assert ms.spec.serving.dynamic_batching is not None
        assert ms.spec.serving.dynamic_batching.max_queue_delay_microseconds == 100
        assert ms.spec.autoscaling is None
        assert ms.spec.exposure.service.type == "ClusterIP"

    def test_camel_case_round_trip(self) -> None:
        doc = with_changes(
            spec__autoscaling={
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [{"type": "queueTime", "targetMicroseconds": 5000}],
            }
        )
        ms = parse(doc, "ms.yaml")
        dumped = ms.to_api()
        assert dumped["spec"]["autoscaling"] == doc["spec"]["autoscaling"]
        assert dumped["spec"]["serving"]["maxBatchSize"] == 32
        assert ModelService.from_body(dumped) == ms

    def test_uri_scheme(self) -> None:
        assert uri_scheme("s3://b/k") == "s3"
        assert uri_scheme("./model") == "file"
        assert uri_scheme("pvc://claim/path") == "pvc"


class TestRules:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({"spec__model__architecture": None}, "spec.model.architecture: required when format is pytorch"),
            ({"spec__model__sha256": "abc"}, "spec.model.sha256:"),
            ({"spec__model__uri": "ftp://host/x"}, "spec.model.uri:"),
            ({"spec__model__inputs": [{"name": "x", "shape": [0]}]}, "spec.model.inputs[0].shape:"),
            (
                {"spec__model__inputs": [{"name": "x", "dtype": "FP8", "shape": [1]}]},
                "spec.model.inputs[0].dtype:",
            ),
            ({"spec__model__weights": "../escape.pt"}, "spec.model.weights:"),
            ({"spec__conversion__quantization": {"method": "static"}}, "quantization.calibration: required"),
            ({"spec__conversion__target": "none"}, "spec.conversion.precision: must be fp32"),
            (
                {"spec__conversion__precision": "fp32", "spec__conversion__target": "none"},
                "spec.conversion: target",
            ),
            ({"spec__conversion__target": "tensorrt"}, "spec.serving: target tensorrt needs a GPU"),
            ({"spec__conversion__bogus": 1}, "spec.conversion.bogus: unknown field"),
            (
                {
                    "spec__serving__maxBatchSize": 4,
                    "spec__serving__dynamicBatching": {"preferredBatchSizes": [8]},
                },
                "spec.serving.dynamicBatching: preferredBatchSizes [8] exceed maxBatchSize 4",
            ),
            (
                {"spec__autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
                "spec.autoscaling.minReplicas: 5 is greater",
            ),
            (
                {"spec__autoscaling": {"maxReplicas": 2, "metrics": [{"type": "gpu"}]}},
                "spec.autoscaling.metrics[0].type:",
            ),
            (
                {"spec__autoscaling": {"maxReplicas": 2, "metrics": [{"type": "queueTime"}]}},
                "spec.autoscaling: metrics[0] (queueTime) needs targetMicroseconds, or serving.latencyTarget",
            ),
            (
                {
                    "spec__autoscaling": {
                        "maxReplicas": 2,
                        "metrics": [{"type": "cpu", "targetUtilization": 50, "targetPerReplica": 3}],
                    }
                },
                "spec.autoscaling.metrics[0].targetPerReplica: not valid",
            ),
            (
                {"spec__serving__resources": {"requests": {"cpu": "lots"}}},
                "spec.serving.resources.requests.cpu: 'lots' is not a Kubernetes quantity",
            ),
            ({"spec__serving__resources": {"requests": {"nvidia.com/gpu": "1"}}}, "unknown resource"),
            ({"metadata__name": "Digits"}, "metadata.name:"),
            ({"metadata__name": "d" * 41}, "metadata.name:"),
        ],
    )
    def test_rule_names_field(self, changes: dict[str, Any], expected: str) -> None:
        found = problems(with_changes(**changes))
        assert any(expected in line for line in found), found

    def test_every_problem_reported_at_once(self) -> None:
        doc = with_changes(spec__model__sha256="x", spec__autoscaling={"minReplicas": 3, "maxReplicas": 1})
        found = problems(doc)
        assert len(found) == 2, found

    def test_wrong_api_version(self) -> None:
        assert problems(with_changes(apiVersion="modelservice.dev/v1")) == [
            "apiVersion: must be modelservice.dev/v1alpha1"
        ]

    @pytest.mark.parametrize("fmt", ["onnx", "triton-repository"])
    def test_formats_without_inputs_are_valid(self, fmt: str) -> None:
        target = "none" if fmt == "triton-repository" else "onnx"
        doc = with_changes(
            spec__model={"uri": "pvc://models/digits", "format": fmt},
            spec__conversion={"target": target},
        )
        assert parse(doc, "ms.yaml").spec.model.format == fmt
