"""``modelservice convert`` as a user runs it: a subprocess, progress on stderr, one summary line on stdout,
the termination-message summary, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import _digits

pytestmark = pytest.mark.slow


def modelservice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELSERVICE_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "modelservice.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_convert_end_to_end_in_a_subprocess(tmp_path: Path) -> None:
    yaml_path = _digits.write_example(tmp_path, "mlp", precision="int8")
    result = modelservice(
        "convert", "-f", str(yaml_path), "--out", "repo", "--summary-file", "summary.json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("digits: onnx int8 (dynamic)")
    assert "verified" in result.stdout
    for stage in ("[fetch]", "[load]", "[convert]", "[quantize]", "[verify]"):
        assert stage in result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["modelName"] == "digits" and summary["artifact"]["precision"] == "int8"
    assert summary["verification"]["passed"] is True and len((tmp_path / "summary.json").read_bytes()) < 3000
    assert (tmp_path / "repo" / "digits" / "1" / "model.onnx").is_file()
    again = modelservice("convert", "-f", str(yaml_path), "--out", "repo", "-q", cwd=tmp_path)
    assert again.returncode == 0 and "cache hit" in again.stdout and again.stderr == ""


def test_a_bad_file_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    _digits.write_source(tmp_path / "src", "mlp")
    doc = _digits.modelservice(name="digits", source="src", kind="mlp", data_uri=None, weights="missing.safetensors")
    (tmp_path / "ms.yaml").write_text(json.dumps(doc))
    args = ("convert", "-f", "ms.yaml", "--out", "repo", "-q", "--summary-file", "summary.txt")
    result = modelservice(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr == "error: ms.yaml: spec.model.weights: missing.safetensors not found in the model source\n"
    assert result.stdout == "" and not (tmp_path / "repo").exists()
    # In a Job the summary file is the termination message: the operator's Converted condition names the field.
    summary = (tmp_path / "summary.txt").read_text()
    assert summary == "spec.model.weights: missing.safetensors not found in the model source\n"


def test_fetch_command_checks_the_digest(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"weights")
    result = modelservice("fetch", "w.bin", "--out", "got", "--sha256", "0" * 64, "-q", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: spec.model.uri: w.bin: sha256 mismatch")
    assert result.stderr.count("\n") == 1
