"""`modelservice validate` as a user runs it: exit codes, one line per problem naming file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
