"""Scale to zero with KEDA (``spec.autoscaling.minReplicas: 0``): a ScaledObject, and with ``keda.httpAddOn`` an
HTTPScaledObject of the KEDA HTTP add-on. KEDA (2.x) must be installed in the cluster, the add-on too for
httpAddOn; without them the API server has no such kinds and the operator reports the child as rejected.

The ScaledObject (keda.sh/v1alpha1, named like the ModelService) scales the Deployment between 0 and maxReplicas;
KEDA makes and owns the HPA (``keda-hpa-<name>``), so no HorizontalPodAutoscaler of ours is rendered. Triggers:

- ``requests`` (prometheus, AverageValue): the Deployment's inference rate, ``REQUEST_RATE_QUERY`` below, against
  the inferenceRate target (given, or 80 % of the measured throughput per replica, render/targets.py). Always
  present: it is what tells KEDA the model went idle (after ``keda.cooldownSeconds`` at 0 it scales to zero).
- ``queue-time`` (prometheus, Value: the average queue time per request against its target) with a queueTime
  metric, and ``cpu`` (Utilization) with a cpu metric.
- ``http`` (external-push to the HTTP add-on's scaler) with httpAddOn: the interceptor counts the requests it
  holds, so a request arriving at zero replicas wakes the model and waits (``timeouts.conditionWait``, from the
  measured cold start) instead of failing.
- ``wake`` (prometheus) with ``keda.wakeQuery``: the user's signal that exists at zero replicas; its threshold is
  so high that it only ever asks for one replica.

Prometheus is the operator's ``--prometheus-url`` (``OperatorConfig.prometheus_url``), else ``DEFAULT_PROMETHEUS``
(the Prometheus Operator's ``prometheus-operated`` Service in ``monitoring``). Triton's series are expected with
``namespace`` and ``pod`` labels, as the chart's PodMonitor (and prometheus-adapter's rules) have them.

The HTTPScaledObject carries ``httpscaledobject.keda.sh/skip-scaledobject-creation: "true"``: the add-on then
only routes and counts, and our ScaledObject stays the one scaler of the Deployment. Clients reach the model
through the interceptor, ``http://keda-add-ons-http-interceptor-proxy.keda:8080``, with the Host header one of
``keda.hosts`` (default: the Service's names, ``<name>.<namespace>``, ``.svc`` and ``.svc.<clusterDomain>``);
calling the Service directly bypasses the interceptor and fails while at zero.
"""

from __future__ import annotations

import math
from typing import Any

from modelservice.api.models import MetricTarget, ModelService
from modelservice.render.hpa import RATE_WINDOW, SERVED
from modelservice.render.names import COMPONENT_SERVER, HTTP_PORT, deployment_name, metadata, service_name
from modelservice.render.plan import OperatorConfig
from modelservice.render.targets import (
    COLD_START_ANNOTATION,
    TARGETS_ANNOTATION,
    Target,
    cold_start_seconds,
    derived_target,
    derived_targets,
    targets_annotation,
)

DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
# Where the KEDA HTTP add-on's Helm chart (namespace keda) serves its external scaler and interceptor.
HTTP_ADD_ON_SCALER = "keda-add-ons-http-external-scaler.keda:9090"
HTTP_ADD_ON_INTERCEPTOR = "http://keda-add-ons-http-interceptor-proxy.keda:8080"
SKIP_SCALEDOBJECT_ANNOTATION = "httpscaledobject.keda.sh/skip-scaledobject-creation"
# The interceptor holds a request at most this long for a replica to be ready, unless the measured cold start
# (status.performance.coldStartSeconds) doubled is longer.
MIN_CONDITION_WAIT_SECONDS = 60
WAKE_THRESHOLD = "1000000000"  # a wake query only ever asks for one replica

REQUEST_RATE_QUERY = "sum(rate(nv_inference_count{{{served}}}[{window}]))"
QUEUE_TIME_QUERY = (
    "sum(rate(nv_inference_queue_duration_us{{{pods}}}[{window}]))"
    " / clamp_min(sum(rate(nv_inference_request_success{{{served}}}[{window}])), 1e-9)"
)


def pods_selector(ms: ModelService) -> str:
    """The Deployment's Triton series: its namespace and its pods (``<deployment>-<replicaset hash>-<suffix>``)."""
    return f'namespace="{ms.namespace}",pod=~"{deployment_name(ms)}-[a-z0-9]+-[a-z0-9]+"'


def served_selector(ms: ModelService) -> str:
    """Its served model's series: the model named after the ModelService (a text model's ensemble, without its
    steps, which count every request again); for a repository served as is, whose model names the operator does
    not choose, every model except ensemble steps named as the operator names them (render/hpa.py)."""
    if ms.spec.model.format == "triton-repository":
        return f"{pods_selector(ms)},{SERVED}"
    return f'{pods_selector(ms)},model="{ms.name}"'


def request_rate_query(ms: ModelService) -> str:
    """Inferences per second of the served model over the Deployment's pods."""
    return REQUEST_RATE_QUERY.format(served=served_selector(ms), window=RATE_WINDOW)


def queue_time_query(ms: ModelService) -> str:
    """Average queue time per request, us: every model's (an ensemble's requests wait in its steps' queues) over
    the served model's requests."""
    return QUEUE_TIME_QUERY.format(pods=pods_selector(ms), served=served_selector(ms), window=RATE_WINDOW)


def _prometheus(name: str, server: str, query: str, threshold: str, metric_type: str) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "name": name,
        "metricType": metric_type,
        "metadata": {"serverAddress": server, "query": query, "threshold": threshold, "activationThreshold": "0"},
    }


def _request_target(ms: ModelService, targets: list[Target]) -> Target:
    for target in targets:
        if target.metric.type == "inferenceRate":
            return target
    return derived_target(ms, MetricTarget(type="inferenceRate"))


def triggers(ms: ModelService, config: OperatorConfig, targets: list[Target]) -> list[dict[str, Any]]:
    server = config.prometheus_url or DEFAULT_PROMETHEUS
    rate = _request_target(ms, targets)
    out = [_prometheus("requests", server, request_rate_query(ms), str(rate.value), "AverageValue")]
    for target in targets:
        if target.metric.type == "queueTime":
            out.append(_prometheus("queue-time", server, queue_time_query(ms), str(target.value), "Value"))
        elif target.metric.type == "cpu":
            cpu = {"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": str(target.value)}}
            out.append(cpu)
    keda = ms.spec.autoscaling.keda if ms.spec.autoscaling is not None else None
    if keda is not None and keda.http_add_on:
        out.append(
            {
                "type": "external-push",
                "name": "http",
                "metadata": {"scalerAddress": HTTP_ADD_ON_SCALER, "httpScaledObject": ms.name},
            }
        )
    if keda is not None and keda.wake_query:
        out.append(_prometheus("wake", server, keda.wake_query, WAKE_THRESHOLD, "AverageValue"))
    return out


def _annotations(ms: ModelService, targets: list[Target], rate: Target) -> dict[str, str]:
    notes = targets if rate in targets else [*targets, rate]
    annotations = {TARGETS_ANNOTATION: targets_annotation(notes)}
    cold_start = cold_start_seconds(ms)
    if cold_start is not None:
        annotations[COLD_START_ANNOTATION] = f"{cold_start:g}"
    return annotations


def build_scaled_object(ms: ModelService, config: OperatorConfig) -> dict[str, Any] | None:
    """The KEDA ScaledObject, or None unless ``spec.autoscaling.minReplicas`` is 0."""
    autoscaling = ms.spec.autoscaling
    if autoscaling is None or not autoscaling.scales_to_zero or autoscaling.keda is None:
        return None
    targets = derived_targets(ms)
    rate = _request_target(ms, targets)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(ms, ms.name, COMPONENT_SERVER, annotations=_annotations(ms, targets, rate)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(ms)},
            "minReplicaCount": 0,
            "maxReplicaCount": autoscaling.max_replicas,
            "pollingInterval": autoscaling.keda.polling_seconds,
            "cooldownPeriod": autoscaling.keda.cooldown_seconds,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        },
                    },
                },
            },
            "triggers": triggers(ms, config, targets),
        },
    }


def interceptor_hosts(ms: ModelService, config: OperatorConfig) -> list[str]:
    autoscaling = ms.spec.autoscaling
    if autoscaling is not None and autoscaling.keda is not None and autoscaling.keda.hosts:
        return list(autoscaling.keda.hosts)
    base = f"{service_name(ms)}.{ms.namespace}"
    return [base, f"{base}.svc", f"{base}.svc.{config.cluster_domain}"]


def condition_wait_seconds(ms: ModelService) -> int:
    cold_start = cold_start_seconds(ms)
    return max(MIN_CONDITION_WAIT_SECONDS, math.ceil(2 * cold_start) if cold_start is not None else 0)


def build_http_scaled_object(ms: ModelService, config: OperatorConfig) -> dict[str, Any] | None:
    """The KEDA HTTP add-on's HTTPScaledObject, or None unless scaling to zero with ``keda.httpAddOn``."""
    autoscaling = ms.spec.autoscaling
    if autoscaling is None or autoscaling.keda is None or not autoscaling.keda.http_add_on:
        return None
    rate = _request_target(ms, derived_targets(ms))
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": metadata(ms, ms.name, COMPONENT_SERVER, annotations={SKIP_SCALEDOBJECT_ANNOTATION: "true"}),
        "spec": {
            "hosts": interceptor_hosts(ms, config),
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(ms),
                "service": service_name(ms),
                "port": HTTP_PORT,
            },
            "replicas": {"min": 0, "max": autoscaling.max_replicas},
            "scaledownPeriod": autoscaling.keda.cooldown_seconds,
            "scalingMetric": {"requestRate": {"targetValue": rate.value, "window": "1m", "granularity": "1s"}},
            "timeouts": {"conditionWait": f"{condition_wait_seconds(ms)}s"},
        },
    }
