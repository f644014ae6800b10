"""The PromQL we ship, run against a real Prometheus scraping a real tritonserver under load (issue 11, part 4).

One tritonserver serves ``scorer`` the way the operator serves a text model: an ensemble named after the
ModelService whose step, ``scorer-encoder`` (python backend, dynamic batching, 4 ms per batch), does the work; so
Triton exports every series twice, once per model, as it does in the cluster. Debian's ``prometheus`` scrapes its
metrics port every second and attaches ``namespace``, ``pod``, ``container`` and ``modelservice`` by relabelling
(what the chart's PodMonitor gives: Prometheus Operator adds namespace/pod/container, the chart adds
modelservice). It also scrapes the operator's own metrics registry (modelservice.metrics, served on loopback).
Four client threads send requests for a few seconds; then we evaluate:

(a) each prometheus-adapter rule: its seriesQuery finds the pod's series, and its metricsQuery with
    ``<<.LabelMatchers>>``/``<<.GroupBy>>`` expanded as prometheus-adapter expands them for a pods metric
    (``namespace="ml",pod=~"<pod>"`` and ``pod``) answers one series labelled ``pod``;
(b) the KEDA ScaledObject's trigger queries as render/keda.py renders them;
(c) every query of deploy/grafana/modelservice-dashboard.json, template variables substituted.

Values are checked against Triton's own counters read at the end: a rate over a window W that holds all the load
and the counter's first (zero) sample is Triton's total / W (Prometheus does not extrapolate a counter below
zero), an average queue time is Triton's total queue time / its successes.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import start_http_server

from _prometheus import PrometheusProcess, Target, find_prometheus
from modelservice import metrics
from modelservice.api.models import ModelService
from modelservice.render import PROMETHEUS_ADAPTER_RULES, OperatorConfig
from modelservice.render.hpa import RATE_WINDOW
from modelservice.render.keda import build_scaled_object
from modelservice.serve.triton import HOST, TritonProcess, find_tritonserver, free_port

pytestmark = [
    pytest.mark.triton,
    pytest.mark.slow,
    pytest.mark.skipif(
        find_prometheus() is None,
        reason="the prometheus binary is not on PATH (Debian: apt-get install prometheus; .ci/run installs it)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "modelservice-dashboard.json"
NAMESPACE = "ml"
MODEL = "scorer"  # the ModelService, its Deployment and the served (ensemble) model
STEP = f"{MODEL}-encoder"
POD = f"{MODEL}-7f9c6d5b8-k2x9q"  # <deployment>-<replicaset hash>-<suffix>
CLIENTS = 4
LOAD_SECONDS = 8.0
DASHBOARD_WINDOW = "1m"  # what $__rate_interval stands for here
WINDOW_SECONDS = {"1m": 60.0, "2m": 120.0}

STEP_PY = """
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.004)  # one batch of work
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 2)]))
        return responses
"""


def write_repository(root: Path) -> Path:
    step = root / STEP
    (step / "1").mkdir(parents=True)
    (step / "1" / "model.py").write_text(STEP_PY, encoding="utf-8")
    (step / "config.pbtxt").write_text(
        f'name: "{STEP}"\nbackend: "python"\nmax_batch_size: 8\n'
        'input [{ name: "x", data_type: TYPE_FP32, dims: [4] }]\n'
        'output [{ name: "y", data_type: TYPE_FP32, dims: [4] }]\n'
        "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
        "instance_group [{ kind: KIND_CPU, count: 1 }]\n",
        encoding="utf-8",
    )
    ensemble = root / MODEL
    (ensemble / "1").mkdir(parents=True)
    (ensemble / "config.pbtxt").write_text(
        f'name: "{MODEL}"\nplatform: "ensemble"\nmax_batch_size: 8\n'
        'input [{ name: "x", data_type: TYPE_FP32, dims: [4] }]\n'
        'output [{ name: "y", data_type: TYPE_FP32, dims: [4] }]\n'
        "ensemble_scheduling { step [{ "
        f'model_name: "{STEP}" model_version: -1 '
        'input_map { key: "x" value: "x" } output_map { key: "y" value: "y" } }] }\n',
        encoding="utf-8",
    )
    return root


@dataclass
class PodScrapingPrometheus(PrometheusProcess):
    """Scrapes Triton with the labels a PodMonitor gives (relabelling, not static labels), and the operator."""

    operator_address: str = ""
    relabel: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        config = super().config()
        triton = config["scrape_configs"][0]
        triton["static_configs"] = [{"targets": [t.address]} for t in self.targets]
        triton["relabel_configs"] = [
            {"target_label": label, "replacement": value} for label, value in self.relabel.items()
        ]
        operator = {**triton, "job_name": "modelservice-operator", "relabel_configs": []}
        operator["static_configs"] = [{"targets": [self.operator_address]}]
        config["scrape_configs"].append(operator)
        return config


@dataclass(frozen=True)
class Loaded:
    prometheus: PrometheusProcess
    requests: int  # requests the clients completed
    load_rate: float  # requests/s the clients achieved
    totals: dict[tuple[str, str], float]  # (metric, model) -> Triton's counter at the end, from its /metrics


def triton_counters(url: str) -> dict[tuple[str, str], float]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = re.match(r'^(nv_inference_\w+)\{[^}]*model="([^"]+)"[^}]*\} (\S+)$', line)
        if match:
            key = (match.group(1), match.group(2))
            totals[key] = totals.get(key, 0.0) + float(match.group(3))
    return totals


def drive(process: TritonProcess, seconds: float, counts: list[int]) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(process.http_url)
    try:
        x = httpclient.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.infer(MODEL, [x])
            counts.append(1)
    finally:
        client.close()  # an open keep-alive connection holds Triton's shutdown for its 30 s exit timeout


API_ERROR = {"verb": "patch", "resource": "deployments", "code": "409"}


def operator_series() -> metrics.PhaseTracker:
    """The operator's series, at 0 until exercise_operator_metrics (labelled series appear once labelled)."""
    metrics.RECONCILES.labels(result="success")
    metrics.API_ERRORS.labels(**API_ERROR)
    return metrics.PhaseTracker()


def exercise_operator_metrics(phases: metrics.PhaseTracker) -> None:
    """Update the operator's registry through its own objects, as a reconcile does."""
    metrics.RECONCILES.labels(result="success").inc()
    metrics.RECONCILE_DURATION.observe(0.02)
    phases.set((NAMESPACE, MODEL), "Ready")
    metrics.API_ERRORS.labels(**API_ERROR).inc()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    root = tmp_path_factory.mktemp("promql")
    operator_port = free_port()
    phases = operator_series()
    server, thread = start_http_server(operator_port, addr=HOST)
    triton = TritonProcess(
        repository=write_repository(root / "repository"),
        log_path=root / "triton.log",
        install=find_tritonserver(),
        cache_dir=root / "cache",
    )
    relabel = {"namespace": NAMESPACE, "pod": POD, "container": "triton", "modelservice": MODEL}
    with contextlib.ExitStack() as stop:
        stop.callback(thread.join, 5)
        stop.callback(server.shutdown)
        stop.enter_context(triton)
        prometheus = stop.enter_context(
            PodScrapingPrometheus(
                root / "prometheus",
                [Target(f"{HOST}:{triton.ports.metrics}", {})],
                operator_address=f"{HOST}:{operator_port}",
                relabel=relabel,
            )
        )
        # The first scrape sees every counter at 0, so a rate over the window covers the whole load.
        prometheus.wait_for_series(f'nv_inference_count{{model="{MODEL}",pod="{POD}"}}', 1)
        prometheus.wait_for_series("modelservice_api_errors_total", 1)
        counts: list[int] = []
        threads = [threading.Thread(target=drive, args=(triton, LOAD_SECONDS, counts)) for _ in range(CLIENTS)]
        started = time.monotonic()
        for worker in threads:
            worker.start()
        exercise_operator_metrics(phases)
        for worker in threads:
            worker.join(timeout=60)
        load_rate = len(counts) / (time.monotonic() - started)
        totals = triton_counters(f"http://{HOST}:{triton.ports.metrics}/metrics")
        done = f'nv_inference_request_success{{model="{MODEL}"}} >= {totals[("nv_inference_request_success", MODEL)]}'
        prometheus.wait_for_series(done, 1)
        prometheus.wait_for_series('modelservice_modelservices{phase="Ready"} == 1', 1)
        time.sleep(2)  # two more scrapes: the series' last samples are the final counters
        yield Loaded(prometheus, len(counts), load_rate, totals)


def query(prometheus: PrometheusProcess, promql: str) -> list[dict[str, Any]]:
    answer = prometheus.get("/api/v1/query", query=promql)
    assert answer["status"] == "success", (promql, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


def total(loaded: Loaded, metric: str, model: str = MODEL) -> float:
    return loaded.totals[(metric, model)]


def rate_of(loaded: Loaded, metric: str, window: str, model: str = MODEL) -> float:
    return total(loaded, metric, model) / WINDOW_SECONDS[window]


def queue_per_request(loaded: Loaded) -> float:
    """What a request waited in queues, on average: the ensemble's own queue (~0) plus its step's."""
    waited = total(loaded, "nv_inference_queue_duration_us") + total(loaded, "nv_inference_queue_duration_us", STEP)
    return waited / total(loaded, "nv_inference_request_success")


def close(got: float, want: float, tolerance: float = 0.3) -> bool:
    return want > 0 and abs(got - want) <= tolerance * want


def test_the_load_reached_triton(loaded: Loaded) -> None:
    assert loaded.requests >= 50, loaded
    # Where requests queue: in the step, not in the ensemble (what the queue-time queries must account for).
    assert total(loaded, "nv_inference_queue_duration_us", STEP) > 10 * total(loaded, "nv_inference_queue_duration_us")
    assert total(loaded, "nv_inference_request_success") == loaded.requests
    assert total(loaded, "nv_inference_count", STEP) == loaded.requests  # each request runs the step once
    assert total(loaded, "nv_inference_exec_count", STEP) < loaded.requests  # the step batched requests


# ------------------------------------------------------------------------------------- (a) prometheus-adapter


def adapter_query(rule: dict[str, Any]) -> str:
    """metricsQuery as prometheus-adapter expands it for the pods of one namespace (custom metrics API)."""
    matchers = f'namespace="{NAMESPACE}",pod=~"{POD}"'
    return str(rule["metricsQuery"]).replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")


def test_adapter_series_queries_find_the_pod(loaded: Loaded) -> None:
    for rule in PROMETHEUS_ADAPTER_RULES:
        answer = loaded.prometheus.get("/api/v1/series", **{"match[]": rule["seriesQuery"]})
        pods = {(s["namespace"], s["pod"]) for s in answer["data"]}
        assert pods == {(NAMESPACE, POD)}, rule["seriesQuery"]


def test_adapter_inference_rate(loaded: Loaded) -> None:
    (rule,) = [r for r in PROMETHEUS_ADAPTER_RULES if r["name"]["as"] == "modelservice_triton_inference_rate"]
    (series,) = query(loaded.prometheus, adapter_query(rule))
    assert series["metric"] == {"pod": POD}
    # The served model's inferences, not the ensemble's plus its steps'.
    want = rate_of(loaded, "nv_inference_count", RATE_WINDOW)
    assert close(value(series), want), (value(series), want, adapter_query(rule))
    assert 0 < value(series) < loaded.load_rate * 1.5


def test_adapter_queue_time(loaded: Loaded) -> None:
    (rule,) = [r for r in PROMETHEUS_ADAPTER_RULES if r["name"]["as"] == "modelservice_triton_queue_time_us"]
    (series,) = query(loaded.prometheus, adapter_query(rule))
    assert series["metric"] == {"pod": POD}
    want = queue_per_request(loaded)
    assert value(series) >= 0 and close(value(series), want), (value(series), want)
    assert value(series) < 1_000_000  # microseconds: well under the requests' own latency


# ------------------------------------------------------------------------------------------------ (b) KEDA


SOURCES = {
    "text-model": {"model": {"uri": "s3://models/minilm/", "format": "huggingface", "task": "sentence-embedding"}},
    "repository-as-is": {
        "model": {"uri": "pvc://models/scorer", "format": "triton-repository"},
        "conversion": {"target": "none"},
    },
}


def scaled_object(source: str = "text-model") -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": {
            **SOURCES[source],
            "serving": {"latencyTarget": {"p99Milliseconds": 50}},
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 4,
                "metrics": [{"type": "inferenceRate"}, {"type": "queueTime"}],
                "keda": {"httpAddOn": True},
            },
        },
    }
    scaled = build_scaled_object(ModelService.model_validate(document), OperatorConfig(prometheus_url="http://p"))
    assert scaled is not None
    return scaled


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_keda_triggers(loaded: Loaded, source: str) -> None:
    """A repository served as is selects its models by name pattern rather than by the ModelService's name."""
    triggers = {t["name"]: t for t in scaled_object(source)["spec"]["triggers"] if t["type"] == "prometheus"}
    assert set(triggers) == {"requests", "queue-time"}
    (requests,) = query(loaded.prometheus, triggers["requests"]["metadata"]["query"])
    assert requests["metric"] == {}  # one number for the whole Deployment; KEDA divides by replicas
    want = rate_of(loaded, "nv_inference_count", RATE_WINDOW)
    assert close(value(requests), want) and value(requests) < loaded.load_rate * 1.5, (value(requests), want)
    (queue,) = query(loaded.prometheus, triggers["queue-time"]["metadata"]["query"])
    want = queue_per_request(loaded)
    assert value(queue) >= 0 and close(value(queue), want), (value(queue), want)


def test_keda_queries_see_nothing_of_other_deployments(loaded: Loaded) -> None:
    """A canary's pods (<name>-<hash>-<replicaset>-<suffix>) or another namespace's are not counted."""
    query_text = scaled_object()["spec"]["triggers"][0]["metadata"]["query"]
    assert query(loaded.prometheus, query_text.replace(f'namespace="{NAMESPACE}"', 'namespace="other"')) == []
    assert query(loaded.prometheus, query_text.replace(f'pod=~"{MODEL}-', f'pod=~"{MODEL}-0a1b2c3d4e-')) == []


def test_keda_example_triggers(loaded: Loaded) -> None:
    """deploy/keda/scaledobject.yaml (KEDA scaling a ModelService through its scale subresource), for our model."""
    example = yaml.safe_load((REPO / "deploy" / "keda" / "scaledobject.yaml").read_text(encoding="utf-8"))
    queue, rate = (t["metadata"]["query"].replace("resnet50-trt", MODEL) for t in example["spec"]["triggers"])
    (series,) = query(loaded.prometheus, queue)  # average queue time x pods; KEDA divides by replicas
    assert series["metric"] == {} and close(value(series), queue_per_request(loaded)), (value(series), queue)
    (series,) = query(loaded.prometheus, rate)
    assert series["metric"] == {} and close(value(series), rate_of(loaded, "nv_inference_count", "2m")), rate


# ------------------------------------------------------------------------------------------------ (c) Grafana


@dataclass(frozen=True)
class Expect:
    labels: set[str]  # the series' label names
    check: str  # what the values must satisfy, see _check_value
    steps: bool = False  # whether the ensemble's step shows as a model of its own (with every model selected)


# (panel title, legendFormat) -> what the query must return here. Series from kube-state-metrics and GPU
# utilization have no source on this machine: those queries are only parsed (Prometheus answers an empty vector).
EXPECT: dict[tuple[str, str], Expect | None] = {
    ("Request rate", "{{namespace}}/{{model}} ok"): Expect({"namespace", "model"}, "success-rate", steps=True),
    ("Request rate", "{{namespace}}/{{model}} failed"): Expect({"namespace", "model"}, "zero", steps=True),
    ("Inference rate (inferenceRate metric)", "{{pod}}"): Expect({"namespace", "model", "pod"}, "inference-rate"),
    ("Request latency", "{{namespace}}/{{model}} total"): Expect({"namespace", "model"}, "latency", steps=True),
    ("Request latency", "{{namespace}}/{{model}} compute"): Expect({"namespace", "model"}, "compute", steps=True),
    ("Queue time (queueTime metric)", "{{pod}}"): Expect({"namespace", "pod"}, "queue"),
    ("Average batch size", "{{namespace}}/{{model}}"): Expect({"namespace", "model"}, "batch", steps=True),
    ("GPU utilization", "{{pod}} {{gpu_uuid}}"): None,
    ("Replicas", "{{deployment}} available"): None,
    ("Replicas", "{{horizontalpodautoscaler}} desired (HPA)"): None,
    ("Replicas", "{{model}} pods scraped"): Expect({"namespace", "model"}, "one"),
    ("Reconciles", "{{result}}"): Expect({"result"}, "positive"),
    ("Reconcile duration p95", "p95"): Expect(set(), "seconds"),
    ("ModelServices by phase", "{{phase}}"): Expect({"phase"}, "phases"),
    ("Operator API errors", "{{verb}} {{resource}} {{code}}"): Expect({"verb", "resource", "code"}, "positive"),
}


def dashboard_targets() -> list[tuple[str, str, str]]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [
        (panel["title"], target.get("legendFormat", ""), target["expr"])
        for panel in panels
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def substitute(expr: str, namespace: str, model: str) -> str:
    return expr.replace("$__rate_interval", DASHBOARD_WINDOW).replace("$namespace", namespace).replace("$model", model)


def _check_value(loaded: Loaded, check: str, series: dict[str, Any]) -> bool:
    got, labels = value(series), series["metric"]
    model = labels.get("model", MODEL)
    success = total(loaded, "nv_inference_request_success", model) if "model" in labels else 0.0
    checks = {
        "success-rate": lambda: close(got, rate_of(loaded, "nv_inference_request_success", DASHBOARD_WINDOW, model)),
        "zero": lambda: got == 0,
        "inference-rate": lambda: close(got, rate_of(loaded, "nv_inference_count", DASHBOARD_WINDOW, model)),
        "latency": lambda: close(got, total(loaded, "nv_inference_request_duration_us", model) / success),
        "compute": lambda: close(got, total(loaded, "nv_inference_compute_infer_duration_us", model) / success),
        "queue": lambda: got >= 0 and close(got, queue_per_request(loaded)),
        "batch": lambda: 1 <= got <= 8,
        "one": lambda: got == 1,
        # Ours went up in the window; series other tests of this process left behind stand still.
        "positive": lambda: got > 0 if labels in ({"result": "success"}, API_ERROR) else got >= 0,
        "seconds": lambda: 0 < got <= 0.025,  # one observation of 20 ms: p95 within its bucket
        "phases": lambda: got == (1 if labels["phase"] == "Ready" else 0),
    }
    return bool(checks[check]())


@pytest.mark.parametrize(("namespace", "model"), [(".*", ".*"), (NAMESPACE, MODEL)], ids=["all", "selected"])
def test_dashboard_queries(loaded: Loaded, namespace: str, model: str) -> None:
    targets = dashboard_targets()
    assert {(title, legend) for title, legend, _ in targets} == set(EXPECT), "a dashboard query has no expectation"
    for title, legend, expr in targets:
        promql = substitute(expr, namespace, model)
        assert "$" not in promql, promql
        result = query(loaded.prometheus, promql)
        expect = EXPECT[(title, legend)]
        if expect is None:
            assert result == [], (title, promql, result)
            continue
        assert result, (title, legend, promql)
        if expect.check == "positive":
            assert {"result": "success"} in [s["metric"] for s in result] or API_ERROR in [s["metric"] for s in result]
        for series in result:
            assert set(series["metric"]) == expect.labels, (title, legend, series)
            assert math.isfinite(value(series)), (title, legend, series)
            assert _check_value(loaded, expect.check, series), (title, legend, series, promql)
        if "model" in expect.labels:
            models = {s["metric"]["model"] for s in result}
            assert models == ({MODEL, STEP} if expect.steps and model == ".*" else {MODEL}), (title, legend, models)


def label_values(prometheus: PrometheusProcess, definition: str) -> set[str]:
    """Grafana's ``label_values(SELECTOR, LABEL)`` through the API it calls (/api/v1/label/LABEL/values)."""
    match = re.fullmatch(r"label_values\((?:(.*), )?(\w+)\)", definition)
    assert match, definition
    selector, label = match.groups()
    answer = prometheus.get(f"/api/v1/label/{label}/values", **({"match[]": selector} if selector else {}))
    assert answer["status"] == "success", answer
    return set(answer["data"])


def test_dashboard_variables(loaded: Loaded) -> None:
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text(encoding="utf-8"))["templating"]["list"]}
    assert NAMESPACE in label_values(loaded.prometheus, variables["namespace"]["definition"])
    model_query = variables["model"]["definition"].replace("$namespace", NAMESPACE)
    assert label_values(loaded.prometheus, model_query) == {MODEL}  # the served model, not its ensemble's steps
