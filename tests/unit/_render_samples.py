"""ModelService samples for the render tests (one per delivery path)."""

from __future__ import annotations

import copy
from typing import Any

from modelservice.api.models import ModelService

UID = "0b4f7a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
SHA = "a" * 64


def _base(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name, "namespace": "ml", "uid": UID, "generation": 1},
        "spec": spec,
    }


def cpu_body() -> dict[str, Any]:
    """Converted on CPU: pytorch from s3 -> onnx int8, autoscaled on all three metrics, with an Ingress."""
    return _base(
        "digits",
        {
            "model": {
                "uri": "s3://models/digits/v3/",
                "format": "pytorch",
                "architecture": "model.py:DigitsNet",
                "weights": "weights.safetensors",
                "sha256": SHA,
                "credentials": {"secretName": "s3-creds"},
                "inputs": [{"name": "image", "dtype": "FP32", "shape": [1, 8, 8]}],
                "outputs": [{"name": "logits", "dtype": "FP32", "shape": [10]}],
            },
            "conversion": {
                "target": "onnx",
                "precision": "int8",
                "quantization": {"method": "static", "calibration": {"uri": "pvc://datasets/digits/calib.npz"}},
                "verification": {"dataUri": "pvc://datasets/digits/test.npz"},
            },
            "serving": {"maxBatchSize": 32, "dynamicBatching": {"preferredBatchSizes": [8, 16]}},
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 8,
                "metrics": [
                    {"type": "cpu", "targetUtilization": 70},
                    {"type": "queueTime", "targetMicroseconds": 5000},
                    {"type": "inferenceRate", "targetPerReplica": 200},
                ],
            },
            "exposure": {
                "service": {"type": "ClusterIP"},
                "ingress": {"host": "digits.example.com", "path": "/", "className": "nginx", "tlsSecretName": "tls"},
            },
        },
    )


def gpu_body() -> dict[str, Any]:
    """Converted on a GPU: pytorch on a PVC -> TensorRT fp16, 2 GPUs per replica, HTTPRoute, named claim."""
    return _base(
        "encoder",
        {
            "model": {
                "uri": "pvc://model-repo/sources/encoder",
                "format": "pytorch",
                "architecture": "model.py:Encoder",
                "inputs": [{"name": "tokens", "dtype": "INT64", "shape": [128]}],
            },
            "conversion": {"target": "tensorrt", "precision": "fp16"},
            "serving": {
                "replicas": 3,
                "resources": {"gpu": 2, "requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}},
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["true"]}]}
                            ]
                        }
                    }
                },
            },
            "storage": {
                "pvc": {
                    "name": "model-repo",
                    "size": "50Gi",
                    "storageClassName": "fast",
                    "accessModes": ["ReadWriteMany"],
                }
            },
            "exposure": {
                "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
                "httpRoute": {
                    "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "https"}],
                    "hostnames": ["encoder.example.com"],
                    "path": "/v2",
                },
            },
        },
    )


def repo_pvc_body() -> dict[str, Any]:
    """A ready Triton repository on a PVC, served in place."""
    return _base(
        "repo-pvc",
        {"model": {"uri": "pvc://repos/digits-repo", "format": "triton-repository"}, "conversion": {"target": "none"}},
    )


def repo_s3_body() -> dict[str, Any]:
    """A ready Triton repository archive in S3, fetched by an init container."""
    return _base(
        "repo-s3",
        {
            "model": {
                "uri": "s3://models/digits-repo.tar.gz",
                "format": "triton-repository",
                "sha256": SHA,
                "credentials": {"secretName": "s3-creds"},
            },
            "conversion": {"target": "none"},
        },
    )


def onnx_none_body() -> dict[str, Any]:
    """An ONNX file served as is (target none): still a Job, which writes config.pbtxt."""
    return _base(
        "onnx-plain",
        {"model": {"uri": "https://example.com/m.onnx", "format": "onnx"}, "conversion": {"target": "none"}},
    )


SAMPLES = {
    "cpu": cpu_body,
    "gpu": gpu_body,
    "repo-pvc": repo_pvc_body,
    "repo-s3": repo_s3_body,
    "onnx-none": onnx_none_body,
}


def sample(name: str, **spec_updates: Any) -> ModelService:
    """A sample, with top-level spec sections replaced by ``spec_updates`` (camelCase keys)."""
    body = copy.deepcopy(SAMPLES[name]())
    body["spec"].update(spec_updates)
    return ModelService.from_body(body)


def modified(ms: ModelService, path: str, value: Any) -> ModelService:
    """A copy of ``ms`` with the camelCase dotted ``path`` under spec set to ``value``."""
    body = ms.to_api()
    node = body["spec"]
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return ModelService.from_body(body)
