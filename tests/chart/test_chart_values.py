"""values.schema.json: closed everywhere (a typo fails), defaults valid, helm lint clean."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import helm_python
import pytest
import yaml
from chartlib import CHART_DIR, VALUE_SETS, render


def _schema_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path or "<root>", node
        for key, value in node.items():
            yield from _schema_nodes(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_nodes(value, f"{path}[{index}]")


def test_schema_is_closed_everywhere() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    checked = 0
    for path, node in _schema_nodes(schema):
        if "properties" in node and isinstance(node["properties"], dict) and node.get("type") == "object":
            assert node.get("additionalProperties") is False, (
                f"{path}: object schema without additionalProperties: false"
            )
            checked += 1
        elif node.get("type") == "object" and "additionalProperties" in node:
            # free-form maps (labels, annotations, nodeSelector) are typed, never open to anything
            assert node["additionalProperties"] in ({"type": "string"},) or node["additionalProperties"] is False, path
    assert checked >= 15


def test_every_default_value_is_in_the_schema(chart: helm_python.Chart) -> None:
    chart.validate_schema(chart.values)
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert set(yaml.safe_load((CHART_DIR / "values.yaml").read_text())) == set(schema["properties"])


@pytest.mark.parametrize(
    ("values", "offending"),
    [
        ({"replica": 2}, "replica"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"watchNamespace": ["ml"]}, "watchNamespace"),
        ({"image": {"repository": "x", "tags": "1"}}, "tags"),
        ({"crds": {"enabled": "yes"}}, "enabled"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"converter": {"gpuImage": {"repository": "x", "tags": "1-gpu"}}}, "tags"),
        ({"converter": {"gpuImage": {"pullPolicy": "Always"}}}, "pullPolicy"),  # shared: converter.image.pullPolicy
        ({"converter": {"gpuImage": {"digest": "1-gpu"}}}, "digest"),
        ({"converter": {"gpuImage": {"repository": ""}}}, "repository"),
        ({"converter": {"gpuImag": {"tag": "1-gpu"}}}, "gpuImag"),
    ],
)
def test_misspelled_or_wrong_values_are_rejected(
    chart: helm_python.Chart, values: dict[str, Any], offending: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as excinfo:
        chart.validate_schema(values)
    assert offending in str(excinfo.value)
    # rendering (what `helm install`/`helm template` do) refuses them too
    with pytest.raises(helm_python.HelmError):
        render(chart, values)


def test_values_yaml_documents_every_leaf() -> None:
    """Each value in values.yaml has a `# --` comment (helm-docs style) above it or above one of its parents."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    undocumented = []
    ancestors: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing block headers
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-"):
            continue
        indent = len(line) - len(line.lstrip())
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        previous = index - 1
        while previous >= 0 and lines[previous].strip().startswith("#") and "# --" not in lines[previous]:
            previous -= 1
        documented = previous >= 0 and lines[previous].strip().startswith("# --")
        key, _, rest = stripped.partition(":")
        if rest.strip() == "":
            ancestors.append((indent, documented))
            continue
        if not documented and not any(doc for _, doc in ancestors):
            undocumented.append(key)
    assert undocumented == []


@pytest.mark.parametrize("case", list(VALUE_SETS))
def test_helm_lint_is_clean(case: str) -> None:
    report = helm_python.lint(CHART_DIR, VALUE_SETS[case], strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_helm_lint_catches_a_broken_chart(tmp_path: Any) -> None:
    import shutil

    broken = tmp_path / "modelservice-operator"
    shutil.copytree(CHART_DIR, broken)
    template = broken / "templates" / "service.yaml"
    template.write_text(template.read_text().replace("{{- end }}", "", 1))
    report = helm_python.lint(broken, {}, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


def test_packaged_chart_renders_like_the_directory(chart: helm_python.Chart, tmp_path: Any) -> None:
    """`helm package` keeps files/ (the CRD, the adapter rules): the archive renders the same objects."""
    archive = helm_python.package(CHART_DIR, destination=tmp_path)
    values = {"prometheusAdapter": {"rules": {"enabled": True}}}
    with helm_python.Chart.load(archive) as packaged:
        assert render(packaged, values) == render(chart, values)
