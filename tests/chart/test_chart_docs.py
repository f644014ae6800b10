"""docs/install.md, hack/kind-e2e.sh and deploy/keda stay consistent with the files they name."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from chartlib import CHART_DIR, REPO

DOC = REPO / "docs" / "install.md"


def test_relative_links_in_the_install_doc_exist() -> None:
    links = re.findall(r"\]\((\.\./[^)#]+)\)", DOC.read_text())
    assert len(links) >= 5
    missing = [link for link in links if not (DOC.parent / link).exists()]
    assert missing == []


def test_files_named_in_the_install_doc_exist() -> None:
    named = set(re.findall(r"`((?:deploy|manifests|docker|hack|crds|charts)/[\w./-]+)`", DOC.read_text()))
    assert len(named) >= 10
    assert sorted(p for p in named if not (REPO / p.rstrip("/")).exists()) == []


def test_kind_e2e_script_parses_and_uses_the_chart_defaults() -> None:
    script = REPO / "hack" / "kind-e2e.sh"
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["image"]["repository"] in text and values["converter"]["image"]["repository"] in text
    assert "manifests/samples/cpu-onnx-int8.yaml" in text
    sample = (REPO / "manifests/samples/cpu-onnx-int8.yaml").read_text()
    for needle in ("uri: s3://models/digits/v3/", "dataUri: s3://models/digits/v3/test.npz", "name: digits-int8"):
        assert needle in sample, f"kind-e2e.sh rewrites {needle!r}, which the sample no longer has"


def test_keda_scaled_object_targets_the_modelservice_scale_subresource() -> None:
    scaled = yaml.safe_load((REPO / "deploy" / "keda" / "scaledobject.yaml").read_text())
    crd = yaml.safe_load((REPO / "crds" / "modelservice.dev_modelservices.yaml").read_text())
    version = crd["spec"]["versions"][0]
    target = scaled["spec"]["scaleTargetRef"]
    assert target["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert target["kind"] == crd["spec"]["names"]["kind"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.serving.replicas"
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0
        assert "nv_inference_" in trigger["metadata"]["query"]
