"""Generated files: the chart's CRD is crds/ byte for byte, manifests/ are fresh, the kustomize builds are valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from chartlib import CHART_DIR, REPO, by_kind, expected_grants, grants_of, is_cluster_scoped, objects

from _k8s import check_restricted, pod_templates, validate_strict

CRD_NAME = "modelservice.dev_modelservices.yaml"


def test_crds_folder_is_the_generated_crd() -> None:
    from modelservice.api.crd import crd_yaml

    assert (REPO / "crds" / CRD_NAME).read_text() == crd_yaml()


def test_chart_carries_the_same_crd_bytes() -> None:
    assert (CHART_DIR / "files" / "crds" / CRD_NAME).read_bytes() == (REPO / "crds" / CRD_NAME).read_bytes()
    assert sorted(p.name for p in (CHART_DIR / "files" / "crds").iterdir()) == [CRD_NAME]


def test_rendered_crd_equals_crds_folder_plus_release_metadata(chart: helm_python.Chart) -> None:
    expected = yaml.safe_load((REPO / "crds" / CRD_NAME).read_text())
    (crd,) = [c for c in by_kind(objects(chart, {}), "CustomResourceDefinition")]
    metadata = crd.pop("metadata")
    expected_metadata = expected.pop("metadata")
    assert crd == expected  # spec (schema, CEL rules, printer columns, subresources) unchanged by fromYaml/toYaml
    assert metadata["name"] == expected_metadata["name"]
    assert expected_metadata["labels"].items() <= metadata["labels"].items()
    assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
    (unkept,) = by_kind(objects(chart, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]
    assert by_kind(objects(chart, {"crds": {"enabled": False}}), "CustomResourceDefinition") == []


def test_generated_files_are_fresh() -> None:
    import verify

    assert verify.stale_files() == []


def test_verify_names_a_stale_file(tmp_path: Path) -> None:
    import generate
    import verify

    for folder in ("charts", "crds", "manifests", "deploy", "operator"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert verify.stale_files(tmp_path) == []
    rbac = tmp_path / "manifests/base/rbac.yaml"
    rbac.write_text(rbac.read_text().replace("- watch\n", "- '*'\n", 1))
    (tmp_path / "manifests/base/extra.yaml").write_text("{}\n")
    (tmp_path / "deploy/prometheus-adapter/values.yaml").unlink()
    problems = dict(verify.stale_files(tmp_path))
    assert set(problems) == {
        "manifests/base/rbac.yaml",
        "manifests/base/extra.yaml",
        "deploy/prometheus-adapter/values.yaml",
    }
    assert problems["manifests/base/rbac.yaml"].startswith("stale")
    # and generate repairs the tree
    generate.write_tree(tmp_path, generate.generate_all(tmp_path))
    assert verify.stale_files(tmp_path) == []


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=120)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_kustomize_base_builds_valid_objects() -> None:
    objs = _kustomize(REPO / "manifests" / "base")
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
        ]
    )
    for obj in objs:
        validate_strict(obj)
        assert "helm.sh/chart" not in obj["metadata"].get("labels", {})
    (deployment,) = by_kind(objs, "Deployment")
    ((pod, annotations),) = pod_templates(deployment)
    assert check_restricted(pod, annotations) == []
    (crd,) = by_kind(objs, "CustomResourceDefinition")
    assert crd == yaml.safe_load((REPO / "crds" / CRD_NAME).read_text())


def test_kustomize_namespaced_overlay() -> None:
    objs = _kustomize(REPO / "manifests" / "overlays" / "namespaced")
    for obj in objs:
        validate_strict(obj)
    (deployment,) = by_kind(objs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--namespace", "ml"]
    (role,) = by_kind(objs, "Role")
    assert role["metadata"]["namespace"] == "ml"
    (cluster_role,) = by_kind(objs, "ClusterRole")
    expected = expected_grants(namespaced=True, peering=False)
    assert grants_of(cluster_role) == {g for g in expected if is_cluster_scoped(g)}
    assert grants_of(role) == {g for g in expected if not is_cluster_scoped(g)}
