"""The generated CRD: structural, complete, in sync with crds/, and its CEL rules agree with pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelservice.api.crd import PRINTER_COLUMNS, crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"$ref", "anyOf", "oneOf", "allOf", "not", "title", "const", "$defs"}


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


class TestStructural:
    def test_every_node_is_typed_and_plain(self) -> None:
        for path, node in walk(schema()):
            assert not FORBIDDEN & node.keys(), f"{path}: {FORBIDDEN & node.keys()}"
            assert node.get("type") or node.get("x-kubernetes-preserve-unknown-fields"), path
            assert node.get("additionalProperties") is not False, path
            if node.get("type") == "object" and "properties" in node:
                assert "additionalProperties" not in node, path

    def test_spec_fields_have_descriptions(self) -> None:
        # `kubectl explain modelservice.spec.model` must help.
        spec = schema()["properties"]["spec"]
        for path, node in walk(spec, "spec"):
            if path.count(".") <= 3 and not path.endswith("[]") and "{" not in path:
                assert node.get("description"), path

    @pytest.mark.parametrize("version", ["1.30.0", "1.33.0", "1.36.0"])
    def test_crd_object_is_valid(self, version: str) -> None:
        kubernetes_validate.validate(crd(), version, strict=True)


class TestShape:
    def test_names_and_subresources(self) -> None:
        spec = crd()["spec"]
        assert spec["names"]["shortNames"] == ["msvc"]
        assert spec["names"]["categories"] == ["ml"]
        version = spec["versions"][0]
        scale = version["subresources"]["scale"]
        assert scale["specReplicasPath"] == ".spec.serving.replicas"
        assert scale["statusReplicasPath"] == ".status.replicas"
        assert "status" in version["subresources"]
        assert [c["name"] for c in PRINTER_COLUMNS] == [
            "Model",
            "Target",
            "Precision",
            "Ready",
            "Replicas",
            "URL",
            "Rollout",
            "Age",
        ]

    def test_scale_paths_exist_in_schema(self) -> None:
        # A scale subresource pointing at fields nothing defines is a classic CRD drift.
        version = crd()["spec"]["versions"][0]
        paths = {p for p, _ in walk(schema())}
        for key in ("specReplicasPath", "statusReplicasPath", "labelSelectorPath"):
            assert version["subresources"]["scale"][key] in paths
        for column in PRINTER_COLUMNS:
            json_path = column["jsonPath"].split("[")[0]
            if not json_path.startswith(".metadata"):
                assert json_path in paths, json_path

    def test_cel_rules_present(self) -> None:
        rules = {p: n["x-kubernetes-validations"] for p, n in walk(schema()) if "x-kubernetes-validations" in n}
        assert ".spec.autoscaling" in rules
        assert ".spec.conversion.quantization" in rules
        assert ".spec.model" in rules
        assert "" in rules  # metadata.name length on the root
        # field rules that used to live in pydantic only (test_crd_parity.py checks every one)
        assert ".spec.model.inputs[].shape" in rules
        assert ".spec.model.weights" in rules
        assert ".spec.serving" in rules
        assert ".spec.serving.resources.requests" in rules

    def test_defaults_fill_the_printer_columns(self) -> None:
        spec = schema()["properties"]["spec"]["properties"]
        assert spec["conversion"]["default"] == {}  # so that target and precision below apply to every object
        assert spec["conversion"]["properties"]["target"]["default"] == "onnx"
        assert spec["conversion"]["properties"]["precision"]["default"] == "fp32"
        serving = spec["serving"]["properties"]
        assert "default" not in serving["image"]  # unset: the operator picks the stock or the text image
        assert serving["dynamicBatching"]["nullable"] is True  # null (off) is kept, absence is defaulted
        assert serving["dynamicBatching"]["default"] == {}
        assert "default" not in spec["autoscaling"]

    def test_enums_match_models(self) -> None:
        conversion = schema()["properties"]["spec"]["properties"]["conversion"]["properties"]
        assert conversion["target"]["enum"] == ["onnx", "torchscript", "tensorrt", "none"]
        assert conversion["precision"]["enum"] == ["fp32", "fp16", "int8", "auto"]


def test_crds_folder_is_current() -> None:
    files = sorted((ROOT / "crds").glob("*.yaml"))
    assert files, "crds/ is empty: run python hack/generate.py"
    assert files[0].read_text() == crd_yaml(), "crds/ is stale: run python hack/generate.py"


def test_cli_prints_the_same_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    from modelservice.cli import main

    assert main(["crd"]) == 0
    out = capsys.readouterr().out
    assert out == crd_yaml()
    assert yaml.safe_load(out)["kind"] == "CustomResourceDefinition"
