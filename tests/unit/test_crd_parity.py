"""Parity with the API server: for every rule pydantic enforces, the CRD (OpenAPI schema + CEL, as the API server
applies them, see ``_apiserver``) gives the same verdict; and what one accepts, the other accepts.

Each case of ``INVALID`` names the validator it exercises; ``test_every_validator_has_a_case`` fails when a
field_validator or model_validator has no case, so a new rule cannot land in pydantic alone.

Rules the CRD cannot express, and why (none of them is a field_validator or model_validator):

- Unknown fields. A structural schema prunes unknown fields rather than refusing them; the API server refuses them
  only when the client asks for ``fieldValidation=Strict``, which is kubectl's default (``--validate=strict``).
  ``_apiserver`` emulates Strict; a client that sends Warn/Ignore gets the fields dropped with a warning.
- ``apiVersion``/``kind``: the loader checks them; the API server routes by them, a schema has nothing to say.
- A trailing newline against an anchored ``pattern``: Go's RE2 ``$`` (the API server) and the Rust regex
  pydantic uses both refuse ``"1\\n"``; Python's ``re`` (jsonschema here) would accept it, so such cases stay out
  of this table (``Resources._quantities`` uses ``re.fullmatch`` for the same reason).
- Local sources (``file://``, bare paths) are valid for both: only the operator can say it cannot reach them,
  which it reports as ``Stalled`` rather than a validation error.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
from _apiserver import verdict
from pydantic import BaseModel

from modelservice.api import exposure, models, rollout, scaling, serving, status, tuning
from modelservice.api.errors import SpecError
from modelservice.api.loader import parse
from modelservice.api.models import ModelService


def doc(spec: dict[str, Any], name: str = "digits") -> dict[str, Any]:
    return {"apiVersion": "modelservice.dev/v1alpha1", "kind": "ModelService", "metadata": {"name": name}, "spec": spec}


PYTORCH: dict[str, Any] = {
    "uri": "s3://m/d/",
    "architecture": "model.py:Net",
    "inputs": [{"name": "x", "shape": [64]}],
}
ONNX: dict[str, Any] = {"uri": "s3://m/x.onnx", "format": "onnx"}
HF: dict[str, Any] = {"uri": "s3://m/minilm/", "format": "huggingface", "task": "sentence-embedding"}


def canary_step(weight: int, pause: str = "1m") -> dict[str, Any]:
    return {"weight": weight, "pause": pause}


def pytorch(**model: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PYTORCH), **model}


def tensor(name: str, *shape: int) -> dict[str, Any]:
    return {"name": name, "shape": list(shape)}


@dataclass(frozen=True)
class Case:
    rule: str  # "Model._validator" it exercises, or "schema" for a Field constraint / a type
    document: dict[str, Any]
    pydantic: str  # a fragment of pydantic's problem line
    crd: str  # a fragment of the API server's problem
    extra: dict[str, Any] = field(default_factory=dict)


INVALID: dict[str, Case] = {
    # TensorSpec
    "zero dimension": Case(
        "TensorSpec._positive_dims",
        doc({"model": pytorch(inputs=[tensor("x", 0, 4)])}),
        "spec.model.inputs[0].shape: dimensions must be positive or -1",
        ".spec.model.inputs[0].shape: dimensions must be positive or -1",
    ),
    "dimension below -1": Case(
        "TensorSpec._positive_dims",
        doc({"model": pytorch(outputs=[tensor("y", 10, -2)])}),
        "spec.model.outputs[0].shape: dimensions must be positive",
        "spec.model.outputs.0.shape.1: -2 is less than the minimum of -1",
    ),
    # ModelSource
    "absolute weights": Case(
        "ModelSource._relative_weights",
        doc({"model": pytorch(weights="/etc/w.safetensors")}),
        "spec.model.weights: must be a relative path",
        ".spec.model.weights: must be a relative path",
    ),
    "weights leaving the source": Case(
        "ModelSource._relative_weights",
        doc({"model": pytorch(weights="sub/../../w.pt")}),
        "spec.model.weights: must be a relative path",
        ".spec.model.weights: must be a relative path",
    ),
    "weights above the source": Case(
        "ModelSource._relative_weights",
        doc({"model": pytorch(weights="../w.pt")}),
        "spec.model.weights: must be a relative path",
        ".spec.model.weights: must be a relative path",
    ),
    "architecture missing": Case(
        "ModelSource._format_rules",
        doc({"model": {"uri": "s3://m/", "inputs": [tensor("x", 4)]}}),
        "spec.model.architecture: required when format is pytorch",
        "architecture is required when format is pytorch",
    ),
    "architecture on onnx": Case(
        "ModelSource._format_rules",
        doc({"model": {**ONNX, "architecture": "m.py:N"}}),
        "spec.model.architecture: only valid when format is pytorch",
        "architecture is only valid when format is pytorch",
    ),
    "pytorch without inputs": Case(
        "ModelSource._format_rules",
        doc({"model": pytorch(inputs=[])}),
        "spec.model.inputs: required when format is pytorch",
        "inputs are required when format is pytorch",
    ),
    "torchscript without inputs": Case(
        "ModelSource._format_rules",
        doc({"model": {"uri": "s3://m/m.pt", "format": "torchscript"}}),
        "spec.model.inputs: required when format is torchscript",
        "inputs are required",
    ),
    "exported-program without inputs": Case(
        "ModelSource._format_rules",
        doc({"model": {"uri": "s3://m/m.pt2", "format": "exported-program"}}),
        "spec.model.inputs: required when format is exported-program",
        "inputs are required",
    ),
    "huggingface without task": Case(
        "ModelSource._format_rules",
        doc({"model": {"uri": "s3://m/x/", "format": "huggingface"}}),
        "spec.model.task: required when format is huggingface",
        "task is required when format is huggingface",
    ),
    "task on onnx": Case(
        "ModelSource._format_rules",
        doc({"model": {**ONNX, "task": "sentence-embedding"}}),
        "spec.model.task: only valid when format is huggingface",
        "task is only valid when format is huggingface",
    ),
    "maxSequenceLength on images": Case(
        "ModelSource._format_rules",
        doc({"model": {**HF, "task": "image-classification", "maxSequenceLength": 9}}),
        "spec.model.maxSequenceLength: only valid for a text task",
        "maxSequenceLength is only valid for a text task",
    ),
    "maxSequenceLength without task": Case(
        "ModelSource._format_rules",
        doc({"model": {**ONNX, "maxSequenceLength": 9}}),
        "spec.model.maxSequenceLength: only valid for a text task",
        "maxSequenceLength is only valid for a text task",
    ),
    "repeated input name": Case(
        "ModelSource._format_rules",
        doc({"model": pytorch(inputs=[tensor("x", 4), tensor("x", 2)])}),
        "spec.model.inputs: tensor names must be unique, repeated: x",
        "tensor names must be unique",
    ),
    "input and output share a name": Case(
        "ModelSource._format_rules",
        doc({"model": pytorch(outputs=[tensor("x", 10)])}),
        "spec.model.inputs: tensor names must be unique, repeated: x",
        "tensor names must be unique",
    ),
    "repeated output name": Case(
        "ModelSource._format_rules",
        doc({"model": {**ONNX, "outputs": [tensor("y", 1), tensor("y", 2)]}}),
        "spec.model.inputs: tensor names must be unique, repeated: y",
        "tensor names must be unique",
    ),
    # Conversion
    "static without calibration": Case(
        "Quantization._static_needs_calibration",
        doc({"model": PYTORCH, "conversion": {"quantization": {"method": "static"}}}),
        "spec.conversion.quantization.calibration: required when method is static",
        "calibration is required when method is static",
    ),
    "target none with int8": Case(
        "Conversion._target_rules",
        doc({"model": ONNX, "conversion": {"target": "none", "precision": "int8"}}),
        "spec.conversion.precision: must be fp32 when target is none",
        "precision must be fp32 when target is none",
    ),
    "torchscript int8": Case(
        "Conversion._target_rules",
        doc({"model": PYTORCH, "conversion": {"target": "torchscript", "precision": "int8"}}),
        "spec.conversion.precision: int8 needs target onnx or tensorrt",
        "int8 and auto precision need target onnx or tensorrt",
    ),
    "torchscript auto": Case(
        "Conversion._target_rules",
        doc({"model": PYTORCH, "conversion": {"target": "torchscript", "precision": "auto"}}),
        "spec.conversion.precision: auto needs target onnx or tensorrt",
        "int8 and auto precision need target onnx or tensorrt",
    ),
    # Serving
    "zero preferred batch size": Case(
        "DynamicBatching._positive_sizes",
        doc({"model": PYTORCH, "serving": {"dynamicBatching": {"preferredBatchSizes": [0, 8]}}}),
        "spec.serving.dynamicBatching.preferredBatchSizes: batch sizes must be positive",
        "preferredBatchSizes.0: 0 is less than the minimum of 1",
    ),
    "negative preferred batch size": Case(
        "DynamicBatching._positive_sizes",
        doc({"model": PYTORCH, "serving": {"dynamicBatching": {"preferredBatchSizes": [-4]}}}),
        "spec.serving.dynamicBatching.preferredBatchSizes: batch sizes must be positive",
        "-4 is less than the minimum of 1",
    ),
    "unknown resource": Case(
        "Resources._quantities",
        doc({"model": PYTORCH, "serving": {"resources": {"requests": {"nvidia.com/gpu": "1"}}}}),
        "spec.serving.resources.requests: unknown resource 'nvidia.com/gpu'",
        ".spec.serving.resources.requests: resource names are cpu, memory and ephemeral-storage",
    ),
    "resource with a typo": Case(
        "Resources._quantities",
        doc({"model": PYTORCH, "serving": {"resources": {"limits": {"memroy": "4Gi"}}}}),
        "spec.serving.resources.limits: unknown resource 'memroy'",
        ".spec.serving.resources.limits: resource names are",
    ),
    "not a quantity": Case(
        "Resources._quantities",
        doc({"model": PYTORCH, "serving": {"resources": {"limits": {"memory": "4 GB"}}}}),
        "spec.serving.resources.limits.memory: '4 GB' is not a Kubernetes quantity",
        "spec.serving.resources.limits.memory: '4 GB' does not match",
    ),
    "preferred sizes without batching": Case(
        "Serving._batching_rules",
        doc({"model": ONNX, "serving": {"maxBatchSize": 0, "dynamicBatching": {"preferredBatchSizes": [4]}}}),
        "spec.serving.dynamicBatching: preferredBatchSizes need maxBatchSize > 0",
        "preferredBatchSizes must not exceed maxBatchSize",
    ),
    "preferred size above the default maxBatchSize": Case(
        "Serving._batching_rules",
        doc({"model": ONNX, "serving": {"dynamicBatching": {"preferredBatchSizes": [8, 64]}}}),
        "spec.serving.dynamicBatching: preferredBatchSizes [64] exceed maxBatchSize 32",
        "preferredBatchSizes must not exceed maxBatchSize",
    ),
    "preferred size above maxBatchSize": Case(
        "Serving._batching_rules",
        doc({"model": ONNX, "serving": {"maxBatchSize": 4, "dynamicBatching": {"preferredBatchSizes": [8]}}}),
        "spec.serving.dynamicBatching: preferredBatchSizes [8] exceed maxBatchSize 4",
        "preferredBatchSizes must not exceed maxBatchSize",
    ),
    # Autoscaling
    "cpu metric without target": Case(
        "MetricTarget._one_target",
        doc({"model": PYTORCH, "autoscaling": {"maxReplicas": 2, "metrics": [{"type": "cpu"}]}}),
        "spec.autoscaling.metrics[0].targetUtilization: required for metric type cpu",
        "metric type cpu takes targetUtilization only",
    ),
    "cpu metric with two targets": Case(
        "MetricTarget._one_target",
        doc(
            {
                "model": PYTORCH,
                "autoscaling": {
                    "maxReplicas": 2,
                    "metrics": [{"type": "cpu", "targetUtilization": 50, "targetPerReplica": 5}],
                },
            }
        ),
        "spec.autoscaling.metrics[0].targetPerReplica: not valid for metric type cpu",
        "metric type cpu takes targetUtilization only",
    ),
    "queueTime with the wrong target": Case(
        "MetricTarget._one_target",
        doc(
            {
                "model": PYTORCH,
                "autoscaling": {"maxReplicas": 2, "metrics": [{"type": "queueTime", "targetPerReplica": 5}]},
            }
        ),
        "spec.autoscaling.metrics[0].targetPerReplica: not valid for metric type queueTime",
        "metric type queueTime takes targetMicroseconds only",
    ),
    "inferenceRate with a queue target": Case(
        "MetricTarget._one_target",
        doc(
            {
                "model": PYTORCH,
                "autoscaling": {"maxReplicas": 2, "metrics": [{"type": "inferenceRate", "targetMicroseconds": 5}]},
            }
        ),
        "spec.autoscaling.metrics[0].targetMicroseconds: not valid for metric type inferenceRate",
        "metric type inferenceRate takes targetPerReplica only",
    ),
    "queueTime without target nor latencyTarget": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": PYTORCH, "autoscaling": {"maxReplicas": 2, "metrics": [{"type": "queueTime"}]}}),
        "spec.autoscaling: metrics[0] (queueTime) needs targetMicroseconds, or serving.latencyTarget",
        "a queueTime metric needs targetMicroseconds, or serving.latencyTarget to derive it from",
    ),
    "scale to zero without a wake": Case(
        "Autoscaling._bounds",
        doc({"model": PYTORCH, "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}),
        "spec.autoscaling.minReplicas: 0 scales to zero with KEDA; set keda.httpAddOn or keda.wakeQuery",
        "minReplicas 0 scales to zero with KEDA: set keda.httpAddOn or keda.wakeQuery so requests wake it",
    ),
    "scale to zero with the add-on off": Case(
        "Autoscaling._bounds",
        doc({"model": PYTORCH, "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "keda": {"httpAddOn": False}}}),
        "spec.autoscaling.minReplicas: 0 scales to zero with KEDA; set keda.httpAddOn or keda.wakeQuery",
        "minReplicas 0 scales to zero with KEDA: set keda.httpAddOn or keda.wakeQuery so requests wake it",
    ),
    "keda without scale to zero": Case(
        "Autoscaling._bounds",
        doc({"model": PYTORCH, "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "keda": {"httpAddOn": True}}}),
        "spec.autoscaling.keda: applies only with minReplicas 0",
        "keda applies only with minReplicas 0",
    ),
    "keda with the default minReplicas": Case(
        "Autoscaling._bounds",
        doc({"model": PYTORCH, "autoscaling": {"maxReplicas": 2, "keda": {"wakeQuery": "vector(1)"}}}),
        "spec.autoscaling.keda: applies only with minReplicas 0",
        "keda applies only with minReplicas 0",
    ),
    "negative minReplicas": Case(
        "schema",
        doc({"model": PYTORCH, "autoscaling": {"minReplicas": -1, "maxReplicas": 2}}),
        "spec.autoscaling.minReplicas: Input should be greater than or equal to 0",
        "-1 is less than the minimum of 0",
    ),
    "empty interceptor host": Case(
        "schema",
        doc(
            {
                "model": PYTORCH,
                "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "keda": {"httpAddOn": True, "hosts": [""]}},
            }
        ),
        "spec.autoscaling.keda.hosts[0]: String should have at least 1 character",
        "should be non-empty",
    ),
    "cooldown below zero": Case(
        "schema",
        doc(
            {
                "model": PYTORCH,
                "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "keda": {"httpAddOn": True, "cooldownSeconds": -1}},
            }
        ),
        "spec.autoscaling.keda.cooldownSeconds: Input should be greater than or equal to 0",
        "-1 is less than the minimum of 0",
    ),
    "min above max": Case(
        "Autoscaling._bounds",
        doc({"model": PYTORCH, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}),
        "spec.autoscaling.minReplicas: 3 is greater than maxReplicas 2",
        "minReplicas must not exceed maxReplicas",
    ),
    "min above a max of one": Case(
        "Autoscaling._bounds",
        doc({"model": PYTORCH, "autoscaling": {"minReplicas": 3, "maxReplicas": 1}}),
        "spec.autoscaling.minReplicas: 3 is greater than maxReplicas 1",
        "minReplicas must not exceed maxReplicas",
    ),
    "metric type twice": Case(
        "Autoscaling._bounds",
        doc(
            {
                "model": PYTORCH,
                "autoscaling": {
                    "maxReplicas": 4,
                    "metrics": [{"type": "cpu", "targetUtilization": 50}, {"type": "cpu", "targetUtilization": 80}],
                },
            }
        ),
        "spec.autoscaling.metrics: each metric type may appear once",
        "each metric type may appear once",
    ),
    # ModelServiceSpec
    "target none for pytorch": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": PYTORCH, "conversion": {"target": "none"}}),
        "spec.conversion: target none cannot serve format pytorch",
        "target none cannot serve a pytorch, exported-program or huggingface model",
    ),
    "target none for exported-program": Case(
        "ModelServiceSpec._cross_section_rules",
        doc(
            {
                "model": {"uri": "s3://m/m.pt2", "format": "exported-program", "inputs": [tensor("x", 4)]},
                "conversion": {"target": "none"},
            }
        ),
        "spec.conversion: target none cannot serve format exported-program",
        "target none cannot serve",
    ),
    "target none for huggingface": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": HF, "conversion": {"target": "none"}}),
        "spec.conversion: target none cannot serve format huggingface",
        "target none cannot serve",
    ),
    "triton repository converted": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": {"uri": "pvc://r/d", "format": "triton-repository"}}),
        "spec.conversion: format triton-repository is served as is; set target none",
        "a triton-repository model is served as is",
    ),
    "onnx to torchscript": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": ONNX, "conversion": {"target": "torchscript"}}),
        "spec.conversion: an onnx model cannot be converted to torchscript",
        "an onnx model cannot be converted to torchscript",
    ),
    "text model without batching": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": HF, "serving": {"maxBatchSize": 0}}),
        "spec.serving: maxBatchSize must be > 0 for a text model",
        "maxBatchSize must be > 0",
    ),
    "tensorrt without gpu": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": PYTORCH, "conversion": {"target": "tensorrt"}}),
        "spec.serving: target tensorrt needs a GPU",
        "target tensorrt needs serving.resources.gpu >= 1",
    ),
    "fp16 torchscript without gpu": Case(
        "ModelServiceSpec._cross_section_rules",
        doc({"model": PYTORCH, "conversion": {"target": "torchscript", "precision": "fp16"}}),
        "spec.conversion: fp16 torchscript needs a GPU",
        "fp16 torchscript needs serving.resources.gpu >= 1",
    ),
    # Rollout
    "canary without steps": Case(
        "Rollout._steps_rules",
        doc({"model": ONNX, "rollout": {"strategy": "canary"}}),
        "spec.rollout.steps: strategy canary needs at least one step",
        ".spec.rollout: strategy canary needs at least one step",
    ),
    "latency target with two percentiles": Case(
        "LatencyTarget._exactly_one",
        doc({"model": ONNX, "serving": {"latencyTarget": {"p99Milliseconds": 50, "p95Milliseconds": 40}}}),
        "spec.serving.latencyTarget: set exactly one of p99Milliseconds and p95Milliseconds",
        ".spec.serving.latencyTarget: set exactly one of",
    ),
    "latency target without a percentile": Case(
        "LatencyTarget._exactly_one",
        doc({"model": ONNX, "serving": {"latencyTarget": {}}}),
        "spec.serving.latencyTarget: set exactly one of p99Milliseconds and p95Milliseconds",
        ".spec.serving.latencyTarget: set exactly one of",
    ),
    "tuning concurrency zero": Case(
        "Tuning._positive",
        doc({"model": ONNX, "serving": {"tuning": {"concurrency": [0, 8]}}}),
        "spec.serving.tuning.concurrency: values must be >= 1",
        "spec.serving.tuning.concurrency.0: 0 is less than the minimum of 1",
    ),
    "tuning batch sizes twice": Case(
        "Tuning._positive",
        doc({"model": ONNX, "serving": {"tuning": {"batchSizes": [8, 8]}}}),
        "spec.serving.tuning.batchSizes: values must be unique",
        "spec.serving.tuning.batchSizes: values must be unique",
    ),
    "tuning negative queue delay": Case(
        "Tuning._delays",
        doc({"model": ONNX, "serving": {"tuning": {"queueDelaysMicroseconds": [-1]}}}),
        "spec.serving.tuning.queueDelaysMicroseconds: values must be >= 0",
        "spec.serving.tuning.queueDelaysMicroseconds.0: -1 is less than the minimum of 0",
    ),
    "steps without canary": Case(
        "Rollout._steps_rules",
        doc({"model": ONNX, "rollout": {"steps": [{"weight": 10, "pause": "1m"}]}}),
        "spec.rollout.strategy: steps and mirror need strategy canary",
        ".spec.rollout: steps and mirror need strategy canary",
    ),
    "mirror without canary": Case(
        "Rollout._steps_rules",
        doc({"model": ONNX, "rollout": {"strategy": "immediate", "mirror": {"percent": 10}}}),
        "spec.rollout.strategy: steps and mirror need strategy canary",
        "steps and mirror need strategy canary",
    ),
    "weights decreasing": Case(
        "Rollout._steps_rules",
        doc({"model": ONNX, "rollout": {"strategy": "canary", "steps": [canary_step(50), canary_step(10)]}}),
        "spec.rollout.steps: step weights must be strictly increasing, got [50, 10]",
        ".spec.rollout.steps: step weights must be strictly increasing",
    ),
    "weight repeated": Case(
        "Rollout._steps_rules",
        doc(
            {
                "model": ONNX,
                "rollout": {"strategy": "canary", "steps": [canary_step(5), canary_step(20), canary_step(20)]},
            }
        ),
        "spec.rollout.steps: step weights must be strictly increasing, got [5, 20, 20]",
        "step weights must be strictly increasing",
    ),
    "interval zero": Case(
        "Analysis._positive_interval",
        doc({"model": ONNX, "rollout": {"analysis": {"interval": "0s"}}}),
        "spec.rollout.analysis.interval: interval must be longer than 0s",
        ".spec.rollout.analysis.interval: interval must be longer than 0s",
    ),
    "interval zero in two units": Case(
        "Analysis._positive_interval",
        doc({"model": ONNX, "rollout": {"analysis": {"interval": "0m00s"}}}),
        "spec.rollout.analysis.interval: interval must be longer than 0s",
        "interval must be longer than 0s",
    ),
    "pause not a duration": Case(
        "schema",
        doc({"model": ONNX, "rollout": {"strategy": "canary", "steps": [{"weight": 10, "pause": "2 minutes"}]}}),
        "spec.rollout.steps[0].pause: String should match pattern",
        "'2 minutes' does not match",
    ),
    "weight 100": Case(
        "schema",
        doc({"model": ONNX, "rollout": {"strategy": "canary", "steps": [canary_step(100)]}}),
        "spec.rollout.steps[0].weight: Input should be less than or equal to 99",
        "100 is greater than the maximum of 99",
    ),
    "mirror 0 percent": Case(
        "schema",
        doc({"model": ONNX, "rollout": {"strategy": "canary", "steps": [canary_step(10)], "mirror": {"percent": 0}}}),
        "spec.rollout.mirror.percent: Input should be greater than or equal to 1",
        "0 is less than the minimum of 1",
    ),
    "error rate above 1": Case(
        "schema",
        doc({"model": ONNX, "rollout": {"analysis": {"maxErrorRate": 1.5}}}),
        "spec.rollout.analysis.maxErrorRate: Input should be less than or equal to 1",
        "1.5 is greater than the maximum of 1",
    ),
    "latency ratio below 1": Case(
        "schema",
        doc({"model": ONNX, "rollout": {"analysis": {"maxLatencyRatio": 0.5}}}),
        "spec.rollout.analysis.maxLatencyRatio: Input should be greater than or equal to 1",
        "0.5 is less than the minimum of 1",
    ),
    "history limit above 50": Case(
        "schema",
        doc({"model": ONNX, "revisionHistoryLimit": 51}),
        "spec.revisionHistoryLimit: Input should be less than or equal to 50",
        "51 is greater than the maximum of 50",
    ),
    # metadata (root CEL rules)
    "name too long": Case(
        "schema",
        doc({"model": PYTORCH}, name="d" * 41),
        "metadata.name: String should have at most 40 characters",
        "metadata.name must be at most 40 characters",
    ),
    "name not DNS-1035": Case(
        "schema",
        doc({"model": PYTORCH}, name="9digits"),
        "metadata.name: String should match pattern",
        "metadata.name must be a DNS-1035 label",
    ),
    # Field constraints and JSON types: the schema, strictly typed as the API server's is
    "unknown field": Case(
        "schema",
        doc({"model": pytorch(weight="w.pt")}),
        "spec.model.weight: unknown field",
        "Additional properties are not allowed ('weight' was unexpected)",
    ),
    "a boolean for a name": Case(
        "schema",
        doc({"model": {**ONNX, "outputs": [{"name": False, "shape": [10]}]}}),
        "spec.model.outputs[0].name: expected a string, got the YAML boolean false (quote it)",
        "spec.model.outputs.0.name: False is not of type 'string'",
    ),
    "a number for a name": Case(
        "schema",
        doc({"model": {**ONNX, "outputs": [{"name": 7, "shape": [10]}]}}),
        "spec.model.outputs[0].name: expected a string, got the number 7 (quote it)",
        "7 is not of type 'string'",
    ),
    "a string for an integer": Case(
        "schema",
        doc({"model": ONNX, "serving": {"replicas": "3"}}),
        "spec.serving.replicas: expected an integer, got the string '3'",
        "spec.serving.replicas: '3' is not of type 'integer'",
    ),
    "a boolean for an integer": Case(
        "schema",
        doc({"model": ONNX, "serving": {"replicas": True}}),
        "spec.serving.replicas: expected an integer, got the YAML boolean true",
        "True is not of type 'integer'",
    ),
    "a fraction for an integer": Case(
        "schema",
        doc({"model": ONNX, "serving": {"replicas": 1.5}}),
        "spec.serving.replicas: expected an integer, got the number 1.5",
        "1.5 is not of type 'integer'",
    ),
    "a string for a number": Case(
        "schema",
        doc({"model": ONNX, "conversion": {"verification": {"tolerance": "0.1"}}}),
        "spec.conversion.verification.tolerance: expected a number, got the string '0.1'",
        "'0.1' is not of type 'number'",
    ),
    "a string for a boolean": Case(
        "schema",
        doc({"model": ONNX, "conversion": {"verification": {"enabled": "yes"}}}),
        "spec.conversion.verification.enabled: expected a boolean (true or false), got the string 'yes'",
        "'yes' is not of type 'boolean'",
    ),
    "a boolean for an enum": Case(
        "schema",
        doc({"model": ONNX, "conversion": {"precision": False}}),
        "spec.conversion.precision: expected 'fp32', 'fp16', 'int8' or 'auto', got the YAML boolean false",
        "False is not one of ['fp32', 'fp16', 'int8', 'auto']",
    ),
    "a number for a quantity": Case(
        "schema",
        doc({"model": ONNX, "serving": {"resources": {"requests": {"cpu": 2}}}}),
        "spec.serving.resources.requests.cpu: expected a string, got the number 2 (quote it)",
        "2 is not of type 'string'",
    ),
    "tolerance zero": Case(
        "schema",
        doc({"model": ONNX, "conversion": {"verification": {"tolerance": 0}}}),
        "spec.conversion.verification.tolerance: Input should be greater than 0",
        "0 is less than or equal to the minimum of 0",
    ),
    "opset too old": Case(
        "schema",
        doc({"model": ONNX, "conversion": {"opset": 12}}),
        "spec.conversion.opset: Input should be greater than or equal to 13",
        "12 is less than the minimum of 13",
    ),
    "empty shape": Case(
        "schema",
        doc({"model": pytorch(inputs=[tensor("x")])}),
        "spec.model.inputs[0].shape: List should have at least 1 item",
        "[] should be non-empty",
    ),
    "tensor name pattern": Case(
        "schema",
        doc({"model": pytorch(inputs=[tensor("9x", 4)])}),
        "spec.model.inputs[0].name: String should match pattern",
        "'9x' does not match",
    ),
    "required field null": Case(
        "schema",
        doc({"model": ONNX, "autoscaling": {"maxReplicas": None}}),
        "spec.autoscaling.maxReplicas: required field is missing",
        "'maxReplicas' is a required property",
    ),
    "model null": Case(
        "schema",
        doc({"model": None}),
        "spec.model: required field is missing",
        "'model' is a required property",
    ),
}

# Valid for both: in particular, a null where the schema has no null reads as absent (ApiModel._null_is_absent),
# on the API server because it drops such nulls before defaulting.
VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "pytorch": ("", doc({"model": PYTORCH})),
    "variable dimensions": ("", doc({"model": pytorch(inputs=[tensor("x", -1, 3)])})),
    "weights in a folder": ("", doc({"model": pytorch(weights="ckpt/..w/model.safetensors")})),
    "weights with dots": ("", doc({"model": pytorch(weights="a..b/w.pt")})),
    "triton repository": (
        "",
        doc({"model": {"uri": "pvc://repo/digits", "format": "triton-repository"}, "conversion": {"target": "none"}}),
    ),
    "onnx int8": ("", doc({"model": ONNX, "conversion": {"precision": "int8"}})),
    "fp16 torchscript on a GPU": (
        "",
        doc(
            {
                "model": PYTORCH,
                "conversion": {"target": "torchscript", "precision": "fp16"},
                "serving": {"resources": {"gpu": 1}},
            }
        ),
    ),
    "batching off with maxBatchSize 0": (
        "",
        doc({"model": ONNX, "serving": {"maxBatchSize": 0, "dynamicBatching": None}}),
    ),
    "maxBatchSize 0 without preferred sizes": ("", doc({"model": ONNX, "serving": {"maxBatchSize": 0}})),
    "preferred sizes up to maxBatchSize": (
        "",
        doc({"model": ONNX, "serving": {"maxBatchSize": 16, "dynamicBatching": {"preferredBatchSizes": [8, 16]}}}),
    ),
    "every resource": (
        "",
        doc(
            {
                "model": ONNX,
                "serving": {
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "10Gi"},
                        "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "20Gi"},
                    }
                },
            }
        ),
    ),
    "three metrics": (
        "",
        doc(
            {
                "model": PYTORCH,
                "autoscaling": {
                    "maxReplicas": 8,
                    "metrics": [
                        {"type": "cpu", "targetUtilization": 70},
                        {"type": "queueTime", "targetMicroseconds": 5000},
                        {"type": "inferenceRate", "targetPerReplica": 200},
                    ],
                },
            }
        ),
    ),
    "measured targets": (
        "",
        doc(
            {
                "model": PYTORCH,
                "serving": {"latencyTarget": {"p99Milliseconds": 40}},
                "autoscaling": {"maxReplicas": 8, "metrics": [{"type": "queueTime"}, {"type": "inferenceRate"}]},
            }
        ),
    ),
    "scale to zero through the HTTP add-on": (
        "",
        doc({"model": ONNX, "autoscaling": {"minReplicas": 0, "maxReplicas": 3, "keda": {"httpAddOn": True}}}),
    ),
    "scale to zero woken by a query": (
        "",
        doc(
            {
                "model": ONNX,
                "autoscaling": {
                    "minReplicas": 0,
                    "maxReplicas": 3,
                    "keda": {"wakeQuery": 'sum(rate(nginx_ingress_controller_requests{service="digits"}[1m]))'},
                },
            }
        ),
    ),
    "an integer for a number": ("", doc({"model": ONNX, "conversion": {"verification": {"tolerance": 1}}})),
    "conversion null": ("ApiModel._null_is_absent", doc({"model": ONNX, "conversion": None})),
    "serving fields null": (
        "ApiModel._null_is_absent",
        doc({"model": ONNX, "serving": {"replicas": None, "resources": None, "nodeSelector": {"disk": None}}}),
    ),
    "tensor dtype null": (
        "ApiModel._null_is_absent",
        doc({"model": pytorch(inputs=[{**tensor("x", 4), "dtype": None}])}),
    ),
    "optional field null": ("", doc({"model": {**ONNX, "weights": None, "sha256": None}})),
    "a full canary": (
        "",
        doc(
            {
                "model": ONNX,
                "rollout": {
                    "strategy": "canary",
                    "steps": [
                        canary_step(w, p) for w, p in zip(range(1, 11), ["0s", "30s", "1m30s"] * 4, strict=False)
                    ],
                    "mirror": {"percent": 100},
                    "analysis": {"interval": "1h", "maxErrorRate": 0, "maxLatencyRatio": 1, "minRequests": 0},
                },
                "revisionHistoryLimit": 0,
            }
        ),
    ),
    "immediate rollout": ("", doc({"model": ONNX, "rollout": {"strategy": "immediate"}})),
    "rollout null": ("ApiModel._null_is_absent", doc({"model": ONNX, "rollout": None})),
    "interval of ten seconds": ("", doc({"model": ONNX, "rollout": {"analysis": {"interval": "10s"}}})),
}


def pydantic_problems(document: dict[str, Any]) -> list[str]:
    try:
        parse(copy.deepcopy(document), "ms.yaml")
    except SpecError as exc:
        return [str(problem) for problem in exc.problems]
    return []


@pytest.mark.parametrize("case", sorted(INVALID))
def test_both_refuse(case: str) -> None:
    rule = INVALID[case]
    refused_by_pydantic = pydantic_problems(rule.document)
    refused_by_crd = verdict(rule.document)
    assert any(rule.pydantic in line for line in refused_by_pydantic), refused_by_pydantic
    assert any(rule.crd in line for line in refused_by_crd), (
        f"the API server would answer {refused_by_crd} where the operator refuses: {refused_by_pydantic}"
    )


@pytest.mark.parametrize("case", sorted(VALID))
def test_both_accept(case: str) -> None:
    document = VALID[case][1]
    assert pydantic_problems(document) == []
    assert verdict(document) == []


def _api_models() -> list[type[BaseModel]]:
    found = []
    for module in (models, status, exposure, rollout, scaling, serving, tuning):
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseModel) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_validator_has_a_case() -> None:
    validators = set()
    for model in [*_api_models(), ModelService]:
        decorators = model.__pydantic_decorators__
        for info in [*decorators.field_validators.values(), *decorators.model_validators.values()]:
            validators.add(info.func.__qualname__)  # "Class._validator", the class that defines it
    covered = {case.rule for case in INVALID.values()} | {rule for rule, _ in VALID.values()}
    assert validators - covered == set(), "validators without a parity case"
    assert covered - validators - {"schema", ""} == set(), "cases naming no validator"
