"""``modelservice convert`` of a text model whose tokenizer.json is not what it claims: one clear error line
naming the file, exit code 1, no traceback and nothing installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import _hf
from modelservice.cli import main


def write_project(root: Path, tokenizer: bytes) -> Path:
    source = _hf.write_text_model(root / "src", task="text-classification")
    (source / "tokenizer.json").write_bytes(tokenizer)
    document = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "hostile"},
        "spec": {"model": {"uri": "src", "format": "huggingface", "task": "text-classification"}},
    }
    path = root / "modelservice.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def error_lines(stderr: str) -> list[str]:
    """The error lines of stderr; everything else there must be progress lines ([fetch], [load], ...)."""
    lines = stderr.strip().splitlines()
    assert all(line.startswith(("error: ", "[")) for line in lines), stderr
    return [line for line in lines if line.startswith("error: ")]


def test_binary_tokenizer_is_one_line_without_traceback(tmp_path: Path) -> None:
    path = write_project(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00 not a tokenizer")
    result = subprocess.run(
        [sys.executable, "-m", "modelservice.cli", "convert", "-f", str(path), "--out", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: ") and "modelservice.yaml: spec.model.uri: tokenizer.json: not a" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"model_type": "bert", "vocab_size": 431}).encode(),  # a config.json under the wrong name
        b'{"version": "1.0", "model": {"type": "WordPiece", "vocab": "none"}}',
    ],
    ids=["config-json", "broken-model"],
)
def test_json_that_is_no_tokenizer_is_one_line(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_project(tmp_path, content)
    capsys.readouterr()  # the checkpoint writer's progress bars
    code = main(["convert", "-f", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 1
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert "spec.model.uri: tokenizer.json: not a" in errors[0]
    assert not (tmp_path / "out").exists()
