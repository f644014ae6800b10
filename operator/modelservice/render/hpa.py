"""The HorizontalPodAutoscaler (autoscaling/v2) and the custom metrics it reads.

``cpu`` is a Resource metric (metrics-server). ``queueTime`` and ``inferenceRate`` are Pods metrics served
through the custom metrics API by prometheus-adapter, from Triton's own Prometheus metrics scraped from
port 8002 of every pod (the pod template carries ``prometheus.io/scrape`` annotations):

- ``modelservice_triton_queue_time_us``: average queue time per request, microseconds, per pod
  = rate(nv_inference_queue_duration_us of every model) / rate(nv_inference_request_success of served models);
- ``modelservice_triton_inference_rate``: inferences per second, per pod = rate(nv_inference_count of served
  models).

A text model is an ensemble (convert/textserving.py) whose steps ``<name>-tokenizer``, ``<name>-encoder`` and
``<name>-labels`` are models of their own: Triton counts each request again for each step, so the served models'
rates leave them out (``COMPOSING_MODELS``), and the ensemble's own queue time is ~0 while its requests wait in the
steps' queues, so the queue time sums every model's. Measured against a real Triton serving an ensemble
(tests/triton/test_shipped_promql.py): summing every model doubled the inference rate and halved the queue time.
A ModelService whose own name ends in one of those suffixes is counted out too: do not name one ``*-encoder``.

``PROMETHEUS_ADAPTER_RULES`` is the prometheus-adapter ``rules`` list producing exactly these names; the
Helm chart renders it into the adapter's configuration.
"""

from __future__ import annotations

from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.names import COMPONENT_SERVER, deployment_name, hpa_name, metadata
from modelservice.render.targets import TARGETS_ANNOTATION, Target, derived_targets, targets_annotation

METRIC_QUEUE_TIME = "modelservice_triton_queue_time_us"
METRIC_INFERENCE_RATE = "modelservice_triton_inference_rate"
RATE_WINDOW = "2m"
# Triton models that are steps of a text model's ensemble (convert/textserving.py names them), as a PromQL regex.
COMPOSING_MODELS = ".+-(tokenizer|encoder|labels)"
SERVED = f'model!~"{COMPOSING_MODELS}"'

# prometheus-adapter rules (config.rules): series are Triton's, per pod and namespace labels added by scraping.
PROMETHEUS_ADAPTER_RULES: list[dict[str, Any]] = [
    {
        "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^nv_inference_queue_duration_us$", "as": METRIC_QUEUE_TIME},
        "metricsQuery": (
            f"sum(rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>}}[{RATE_WINDOW}])) by (<<.GroupBy>>)"
            f" / clamp_min(sum(rate(nv_inference_request_success{{<<.LabelMatchers>>,{SERVED}}}[{RATE_WINDOW}]))"
            " by (<<.GroupBy>>), 1e-9)"
        ),
    },
    {
        "seriesQuery": 'nv_inference_count{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^nv_inference_count$", "as": METRIC_INFERENCE_RATE},
        "metricsQuery": (
            f"sum(rate(nv_inference_count{{<<.LabelMatchers>>,{SERVED}}}[{RATE_WINDOW}])) by (<<.GroupBy>>)"
        ),
    },
]


def _pods_metric(name: str, average: int) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": str(average)}},
    }


def hpa_metric(target: Target) -> dict[str, Any]:
    """One ModelService metric, with its given or derived target (render/targets.py), as a MetricSpec."""
    if target.metric.type == "cpu":
        return {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target.value}},
        }
    if target.metric.type == "queueTime":
        return _pods_metric(METRIC_QUEUE_TIME, target.value)
    return _pods_metric(METRIC_INFERENCE_RATE, target.value)


def build_hpa(ms: ModelService) -> dict[str, Any] | None:
    """The HPA scaling the Deployment, or None when ``spec.autoscaling`` is absent or scales to zero (KEDA's
    ScaledObject then makes its own HPA, render/keda.py).

    Scale-down waits 5 minutes of lower load (Triton replicas are slow to start) and removes at most one pod
    per minute; scale-up is immediate. The annotation ``modelservice.dev/autoscaling-targets`` says where each
    target comes from (the spec, a measurement, the latency target or a default).
    """
    autoscaling = ms.spec.autoscaling
    if autoscaling is None or autoscaling.scales_to_zero:
        return None
    targets = derived_targets(ms)
    meta = metadata(ms, hpa_name(ms), COMPONENT_SERVER, annotations={TARGETS_ANNOTATION: targets_annotation(targets)})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(ms)},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [hpa_metric(target) for target in targets],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }
