"""deploy/grafana: a valid dashboard whose queries name metrics that exist (operator registry, Triton, kube-state)."""

from __future__ import annotations

import json
import re
from typing import Any

from chartlib import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "modelservice-dashboard.json"
# Triton's Prometheus metrics (server docs, "Metrics"): the ones the dashboard reads.
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_gpu_utilization",
}
KUBE_STATE_METRICS = {
    "kube_deployment_status_replicas_available",
    "kube_horizontalpodautoscaler_status_desired_replicas",
}
PROMQL_WORDS = {"sum", "by", "rate", "avg", "count", "clamp_min", "histogram_quantile", "le", "label_values"}


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def _operator_metric_names() -> set[str]:
    """Series names the operator's registry exposes (counters as NAME_total, histograms as _bucket/_sum/_count)."""
    from prometheus_client import REGISTRY

    import modelservice.metrics  # noqa: F401  (registers the operator's metrics)

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("modelservice_")
        for suffix in suffixes.get(family.type, [""])
    }


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    everything = dashboard["panels"]
    assert len({p["id"] for p in everything}) == len(everything)
    cells: set[tuple[int, int]] = set()
    for panel in everything:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
    titles = " ".join(p["title"].lower() for p in _panels())
    for topic in ("request rate", "latency", "queue time", "replicas"):
        assert topic in titles


def test_every_queried_metric_exists() -> None:
    operator_metrics = _operator_metric_names()
    known = TRITON_METRICS | KUBE_STATE_METRICS | operator_metrics
    used: set[str] = set()
    for panel in _panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^]]*\]|\bby\s*\([^)]*\)', " ", target["expr"])
            names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS
            names = {n for n in names if "_" in n}
            assert names, target["expr"]
            assert names <= known, f"{panel['title']}: unknown metrics {sorted(names - known)}"
            used |= names
    assert {n for n in used if n.startswith("modelservice_")} <= operator_metrics
    assert "nv_inference_queue_duration_us" in used and "kube_deployment_status_replicas_available" in used
