"""manifests/samples: each passes `modelservice validate`, the CRD schema, and renders valid objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import REPO, crd_object_errors

from _k8s import check_restricted, pod_templates, validate_strict

SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
CLI = [sys.executable, "-m", "modelservice.cli"]


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / "modelservice.dev_modelservices.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_required_samples_exist() -> None:
    docs = {p.name: yaml.safe_load(p.read_text()) for p in SAMPLES}
    specs = [d["spec"] for d in docs.values()]
    cpu_int8 = [s for s in specs if s["conversion"]["target"] == "onnx" and s["conversion"]["precision"] == "int8"]
    assert cpu_int8 and all(s["serving"]["resources"]["gpu"] == 0 for s in cpu_int8)
    gpu_trt = [s for s in specs if s["conversion"]["target"] == "tensorrt" and s["conversion"]["precision"] == "fp16"]
    assert gpu_trt and any(m["type"] == "queueTime" for s in gpu_trt for m in s["autoscaling"]["metrics"])
    assert any(s["conversion"]["precision"] == "auto" for s in specs)
    assert any(s["model"]["format"] == "triton-repository" and s["model"]["uri"].startswith("pvc://") for s in specs)


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_passes_modelservice_validate(sample: Path) -> None:
    result = subprocess.run([*CLI, "validate", str(sample)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("valid")


def test_validate_rejects_a_broken_sample(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text((REPO / "manifests/samples/gpu-tensorrt-fp16.yaml").read_text().replace("gpu: 1,", "gpu: 0,"))
    result = subprocess.run([*CLI, "validate", str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "broken.yaml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_matches_the_crd_schema(sample: Path) -> None:
    assert crd_object_errors(yaml.safe_load(sample.read_text()), _crd_schema()) == []


def test_crd_schema_check_rejects_a_misspelled_field() -> None:
    sample = yaml.safe_load((REPO / "manifests/samples/precision-auto.yaml").read_text())
    sample["spec"]["conversion"]["precison"] = "int8"
    sample["spec"]["conversion"]["verification"]["tolerance"] = 0
    errors = crd_object_errors(sample, _crd_schema())
    assert any("precison" in e for e in errors) and any("tolerance" in e for e in errors)


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_renders_valid_restricted_children(sample: Path) -> None:
    result = subprocess.run(
        [*CLI, "render", "-f", str(sample), "--namespace", "ml"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    children = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert any(c["kind"] == "Deployment" for c in children)
    for child in children:
        validate_strict(child)
        for pod, pod_annotations in pod_templates(child):
            assert check_restricted(pod, pod_annotations) == [], child["kind"]


def test_hpa_metrics_are_served_by_the_adapter_rules() -> None:
    """End to end: the GPU sample's HPA reads custom metrics that the shipped prometheus-adapter rules produce."""
    result = subprocess.run(
        [*CLI, "render", "-f", str(REPO / "manifests/samples/gpu-tensorrt-fp16.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (hpa,) = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "HorizontalPodAutoscaler"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert len(wanted) == 2
    chart_rules = yaml.safe_load(
        (REPO / "charts/modelservice-operator/files/prometheus-adapter-rules.yaml").read_text()
    )
    adapter_values = yaml.safe_load((REPO / "deploy/prometheus-adapter/values.yaml").read_text())
    for rules in (chart_rules["rules"], adapter_values["rules"]["custom"]):
        assert wanted <= {rule["name"]["as"] for rule in rules}
        for rule in rules:
            assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
            assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
