"""Autoscaling from measurement (render/targets.py) and scale to zero with KEDA (render/keda.py): the rendered
ScaledObject and HTTPScaledObject validate against KEDA's own CRD schemas (tests/data/keda), the HPA against
Kubernetes' (kubernetes-validate); targets come from the spec, status.performance or the latency target."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from _crdschema import keda_errors
from _k8s import K8S_VERSIONS, validate_strict
from modelservice.api.models import ModelService
from modelservice.api.permissions import PERMISSIONS
from modelservice.controller.apply import CHILD_KINDS
from modelservice.render import MANAGED_KINDS, Observed, OperatorConfig, build_hpa, children
from modelservice.render.hpa import COMPOSING_MODELS
from modelservice.render.keda import (
    DEFAULT_PROMETHEUS,
    HTTP_ADD_ON_SCALER,
    SKIP_SCALEDOBJECT_ANNOTATION,
    build_http_scaled_object,
    build_scaled_object,
    request_rate_query,
)
from modelservice.render.targets import COLD_START_ANNOTATION, TARGETS_ANNOTATION

PROMETHEUS = "http://prometheus.monitoring.svc:9090"
CONFIG = OperatorConfig(prometheus_url=PROMETHEUS)
UID = "0b4f7a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def body(autoscaling: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "digits", "namespace": "ml", "uid": UID, "generation": 1},
        "spec": {"model": {"uri": "s3://models/digits.onnx", "format": "onnx"}, "autoscaling": autoscaling, **spec},
    }


def performance(throughput: float, cold_start: float | None = None) -> dict[str, Any]:
    return {
        "config": {"maxBatchSize": 16},
        "throughputPerReplica": throughput,
        "latencyMs": {"p50": 5, "p95": 9, "p99": 12},
        **({"coldStartSeconds": cold_start} if cold_start is not None else {}),
    }


def ms(document: dict[str, Any], status: dict[str, Any] | None = None) -> ModelService:
    document = copy.deepcopy(document)
    if status is not None:
        document["status"] = status
    return ModelService.model_validate(document)


TO_ZERO_HTTP = body({"minReplicas": 0, "maxReplicas": 4, "keda": {"httpAddOn": True, "cooldownSeconds": 120}})
TO_ZERO_WAKE = body(
    {
        "minReplicas": 0,
        "maxReplicas": 3,
        "metrics": [{"type": "cpu", "targetUtilization": 60}, {"type": "queueTime", "targetMicroseconds": 4000}],
        "keda": {"wakeQuery": 'sum(rate(nginx_ingress_controller_requests{service="digits"}[1m]))'},
    }
)
MEASURED = body({"minReplicas": 1, "maxReplicas": 6, "metrics": [{"type": "inferenceRate"}, {"type": "queueTime"}]})
MEASURED["spec"]["serving"] = {"latencyTarget": {"p99Milliseconds": 40}}


def converted(model: ModelService) -> list[dict[str, Any]]:
    return children(model, Observed(conversion_job="succeeded"), CONFIG)


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [obj["kind"] for obj in objects]


class TestScaleToZero:
    def test_keda_objects_replace_the_hpa(self) -> None:
        objects = converted(ms(TO_ZERO_HTTP))
        assert "HorizontalPodAutoscaler" not in kinds(objects)
        assert kinds(objects)[-2:] == ["ScaledObject", "HTTPScaledObject"]
        assert [obj["kind"] for obj in converted(ms(TO_ZERO_WAKE))][-1] == "ScaledObject"
        assert build_hpa(ms(TO_ZERO_HTTP)) is None and build_http_scaled_object(ms(TO_ZERO_WAKE), CONFIG) is None

    @pytest.mark.parametrize("document", [TO_ZERO_HTTP, TO_ZERO_WAKE], ids=["http-add-on", "wake-query"])
    def test_valid_against_keda_schemas(self, document: dict[str, Any]) -> None:
        keda_objects = [o for o in converted(ms(document)) if o["apiVersion"].endswith("keda.sh/v1alpha1")]
        assert keda_objects
        for obj in keda_objects:
            assert keda_errors(obj) == [], obj["kind"]
            assert obj["metadata"]["ownerReferences"][0]["uid"] == UID

    def test_schema_check_can_fail(self) -> None:
        scaled = build_scaled_object(ms(TO_ZERO_HTTP), CONFIG)
        assert scaled is not None
        scaled["spec"]["minReplicas"] = 0  # ScaledObject says minReplicaCount
        scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 5  # strings only
        errors = keda_errors(scaled)
        assert any("minReplicas" in e for e in errors) and any("threshold" in e for e in errors), errors

    def test_scaled_object(self) -> None:
        scaled = build_scaled_object(ms(TO_ZERO_HTTP), CONFIG)
        assert scaled is not None
        spec = scaled["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits"}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 4, 120)
        requests, cpu, http = spec["triggers"]  # the default metric is cpu 70%
        assert cpu["metadata"] == {"value": "70"}
        assert requests["type"] == "prometheus" and requests["metricType"] == "AverageValue"
        assert requests["metadata"]["serverAddress"] == PROMETHEUS
        assert requests["metadata"]["query"] == request_rate_query(ms(TO_ZERO_HTTP))
        assert requests["metadata"]["threshold"] == "100"  # nothing measured: the default
        assert http == {
            "type": "external-push",
            "name": "http",
            "metadata": {"scalerAddress": HTTP_ADD_ON_SCALER, "httpScaledObject": "digits"},
        }
        assert "default, nothing measured yet" in scaled["metadata"]["annotations"][TARGETS_ANNOTATION]

    def test_triggers_follow_the_metrics(self) -> None:
        scaled = build_scaled_object(ms(TO_ZERO_WAKE), OperatorConfig())
        assert scaled is not None
        triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
        assert list(triggers) == ["requests", "cpu", "queue-time", "wake"]
        assert triggers["requests"]["metadata"]["serverAddress"] == DEFAULT_PROMETHEUS
        assert triggers["queue-time"]["metricType"] == "Value"
        assert triggers["queue-time"]["metadata"]["threshold"] == "4000"
        assert "nv_inference_queue_duration_us" in triggers["queue-time"]["metadata"]["query"]
        assert triggers["cpu"] == {
            "type": "cpu",
            "name": "cpu",
            "metricType": "Utilization",
            "metadata": {"value": "60"},
        }
        assert triggers["wake"]["metadata"]["query"].startswith("sum(rate(nginx_ingress_controller_requests")

    def test_request_rate_query_selects_the_deployment_and_model(self) -> None:
        query = request_rate_query(ms(TO_ZERO_HTTP))
        assert query == (
            'sum(rate(nv_inference_count{namespace="ml",pod=~"digits-[a-z0-9]+-[a-z0-9]+",model="digits"}[2m]))'
        )
        repository = copy.deepcopy(TO_ZERO_HTTP)
        repository["spec"]["model"] = {"uri": "pvc://repo/digits", "format": "triton-repository"}
        repository["spec"]["conversion"] = {"target": "none"}
        assert 'model="' not in request_rate_query(ms(repository))

    def test_http_scaled_object(self) -> None:
        http = build_http_scaled_object(ms(TO_ZERO_HTTP), CONFIG)
        assert http is not None
        assert http["metadata"]["annotations"] == {SKIP_SCALEDOBJECT_ANNOTATION: "true"}
        spec = http["spec"]
        assert spec["hosts"] == ["digits.ml", "digits.ml.svc", "digits.ml.svc.cluster.local"]
        assert spec["scaleTargetRef"]["service"] == "digits" and spec["scaleTargetRef"]["port"] == 8000
        assert spec["replicas"] == {"min": 0, "max": 4}
        assert spec["timeouts"] == {"conditionWait": "60s"}
        hosts = copy.deepcopy(TO_ZERO_HTTP)
        hosts["spec"]["autoscaling"]["keda"]["hosts"] = ["digits.example.com"]
        http = build_http_scaled_object(ms(hosts), CONFIG)
        assert http is not None and http["spec"]["hosts"] == ["digits.example.com"]

    def test_measured_cold_start(self) -> None:
        model = ms(TO_ZERO_HTTP, {"performance": performance(410.5, cold_start=45.2)})
        http = build_http_scaled_object(model, CONFIG)
        scaled = build_scaled_object(model, CONFIG)
        assert http is not None and scaled is not None
        assert http["spec"]["timeouts"] == {"conditionWait": "91s"}  # twice the measured cold start
        assert scaled["metadata"]["annotations"][COLD_START_ANNOTATION] == "45.2"
        assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == "328"
        assert http["spec"]["scalingMetric"]["requestRate"]["targetValue"] == 328


class TestTargetsFromMeasurement:
    def hpa(self, status: dict[str, Any] | None = None) -> dict[str, Any]:
        hpa = build_hpa(ms(MEASURED, status))
        assert hpa is not None
        assert validate_strict(hpa) == list(K8S_VERSIONS)
        return hpa

    def test_defaults_before_a_measurement(self) -> None:
        hpa = self.hpa()
        rate, queue = hpa["spec"]["metrics"]
        assert rate["pods"]["target"]["averageValue"] == "100"
        assert queue["pods"]["target"]["averageValue"] == "10000"  # 25% of p99 40 ms
        note = hpa["metadata"]["annotations"][TARGETS_ANNOTATION]
        assert "default, nothing measured yet" in note and "25% of serving.latencyTarget p99 40 ms" in note

    def test_eighty_percent_of_the_measured_throughput(self) -> None:
        hpa = self.hpa({"performance": performance(410.5)})
        assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "328"  # floor(0.8 * 410.5)
        assert "80% of the measured 410.5/s" in hpa["metadata"]["annotations"][TARGETS_ANNOTATION]

    def test_at_least_one(self) -> None:
        hpa = self.hpa({"performance": performance(0.6)})
        assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "1"

    def test_given_targets_win(self) -> None:
        given = copy.deepcopy(MEASURED)
        given["spec"]["autoscaling"]["metrics"] = [
            {"type": "inferenceRate", "targetPerReplica": 50},
            {"type": "queueTime", "targetMicroseconds": 700},
        ]
        hpa = build_hpa(ms(given, {"performance": performance(410.5)}))
        assert hpa is not None
        assert [m["pods"]["target"]["averageValue"] for m in hpa["spec"]["metrics"]] == ["50", "700"]


def test_the_operator_watches_and_may_write_every_kind_it_renders() -> None:
    granted = {(p.api_group, p.resource): set(p.verbs) for p in PERMISSIONS}
    for api_version, kind in MANAGED_KINDS:
        assert (api_version, kind) in CHILD_KINDS, kind
        child = CHILD_KINDS[api_version, kind]
        verbs = granted[child.group, child.plural]
        assert {"list", "watch", "create", "patch"} <= verbs, kind


def test_composing_models_are_the_ensemble_steps() -> None:
    """The regex the shipped queries use to leave a text model's steps out matches exactly what the converter
    names them (an ensemble step counts each request again, see tests/triton/test_shipped_promql.py)."""
    from modelservice.convert.textserving import encoder_name, labels_name, tokenizer_name

    text = body({"maxReplicas": 2})
    text["spec"]["model"] = {"uri": "s3://m/minilm/", "format": "huggingface", "task": "text-classification"}
    model = ms(text)
    for step in (encoder_name(model), tokenizer_name(model), labels_name(model)):
        assert re.fullmatch(COMPOSING_MODELS, step), step
    assert not re.fullmatch(COMPOSING_MODELS, model.name)
