"""`modelservice validate` as a user runs it: exit codes, one line per problem naming file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _apiserver import verdict

from modelservice.api import kubeyaml
from modelservice.api.errors import SpecError
from modelservice.api.loader import load_file

GOOD = """\
apiVersion: modelservice.dev/v1alpha1
kind: ModelService
metadata: {name: digits}
spec:
  model:
    uri: s3://models/digits/
    format: onnx
"""

BAD = """\
apiVersion: modelservice.dev/v1alpha1
kind: ModelService
metadata: {name: digits}
spec:
  model: {uri: s3://models/digits/, format: onnx}
  autoscaling: {minReplicas: 4, maxReplicas: 2}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelservice.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_valid_file_exits_zero(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = run("validate", str(good))
    assert result.returncode == 0, result.stderr
    assert "digits: valid" in result.stdout


def test_invalid_file_names_file_and_field(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    result = run("validate", str(good), str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"{bad}: spec.autoscaling.minReplicas: 4 is greater than maxReplicas 2"]


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = run("validate", str(broken), str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{broken}: invalid YAML (line")
    assert lines[1] == f"{tmp_path / 'absent.yaml'}: file not found"


def test_file_without_modelservice(tmp_path: Path) -> None:
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = run("validate", str(other))
    assert result.returncode == 1
    assert "kind: no ModelService" in result.stderr


# ------------------------------------------------------------------------------- YAML as kubectl reads it

ISSUE_EXAMPLE = """\
apiVersion: modelservice.dev/v1alpha1
kind: ModelService
metadata: {name: digits}
spec:
  model:
    uri: s3://models/digits/
    format: onnx
    outputs: [{name: n, shape: [10]}]
"""


def test_yaml_boolean_name_is_refused_as_the_api_server_does(tmp_path: Path) -> None:
    spec = tmp_path / "n.yaml"
    spec.write_text(ISSUE_EXAMPLE)
    result = run("validate", str(spec))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{spec}: spec.model.outputs[0].name: expected a string, got the YAML boolean n (quote it)"
    ]
    spec.write_text(ISSUE_EXAMPLE.replace("name: n,", "name: 'n',"))
    assert run("validate", str(spec)).returncode == 0


# (YAML lines under `spec:` after the model, the problem `validate` reports or "" when valid)
YAML_CASES: list[tuple[str, str]] = [
    ("  serving: {replicas: yes}", "spec.serving.replicas: expected an integer, got the YAML boolean yes"),
    ("  serving: {replicas: '3'}", "spec.serving.replicas: expected an integer, got the string '3'"),
    ("  serving: {replicas: 3.0}", ""),  # JSON 3
    ("  serving: {replicas: 0x3}", ""),
    (
        "  serving: {nodeSelector: {gpu: yes}}",
        "spec.serving.nodeSelector.gpu: expected a string, got the YAML boolean yes (quote it)",
    ),
    ("  serving: {nodeSelector: {gpu: 'yes'}}", ""),
    (
        "  serving: {nodeSelector: {zone: 1e3}}",
        "spec.serving.nodeSelector.zone: expected a string, got the number 1e3 (quote it)",
    ),
    (
        "  serving: {resources: {requests: {cpu: 2}}}",
        "spec.serving.resources.requests.cpu: expected a string, got the number 2 (quote it)",
    ),
    (
        "  conversion: {precision: no}",
        "spec.conversion.precision: expected 'fp32', 'fp16', 'int8' or 'auto', got the YAML boolean no (quote it)",
    ),
    ("  conversion: {verification: {enabled: off}}", ""),
    (
        "  conversion: {verification: {enabled: 'off'}}",
        "spec.conversion.verification.enabled: expected a boolean (true or false), got the string 'off'",
    ),
    ("  conversion: {verification: {tolerance: 1e-2, samples: 1e3}}", ""),  # PyYAML: the strings "1e-2", "1e3"
    ("  conversion: {opset: 0o22}", ""),
    ("  conversion: ~", ""),  # null where null is not allowed: absent, so the default conversion
    ("  exposure: {service: {annotations: {since: 2024-01-01}}}", ""),  # PyYAML: a date
    (
        "  exposure: {service: {annotations: {enabled: Y}}}",
        "spec.exposure.service.annotations.enabled: expected a string, got the YAML boolean Y (quote it)",
    ),
]


@pytest.mark.parametrize(("lines", "problem"), YAML_CASES, ids=[lines.strip() for lines, _ in YAML_CASES])
def test_yaml_scalars_mean_what_kubectl_sends(tmp_path: Path, lines: str, problem: str) -> None:
    spec = tmp_path / "ms.yaml"
    spec.write_text(GOOD + lines + "\n")
    (document,) = kubeyaml.load_all(spec.read_text())
    if problem:
        with pytest.raises(SpecError) as info:
            load_file(spec)
        assert str(info.value).splitlines() == [f"{spec}: {problem}"]
        assert verdict(document.value), "the API server would accept it"
    else:
        assert load_file(spec)
        assert verdict(document.value) == []


def test_yaml_boolean_in_metadata(tmp_path: Path) -> None:
    spec = tmp_path / "ms.yaml"
    spec.write_text(GOOD.replace("{name: digits}", "{name: n}"))
    with pytest.raises(SpecError, match=r"metadata\.name: expected a string, got the YAML boolean n \(quote it\)"):
        load_file(spec)
