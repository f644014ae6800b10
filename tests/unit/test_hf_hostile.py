"""Hostile and odd Hugging Face folders through the real ``modelservice convert`` command: each is refused with
one line naming the field (exit 1, no traceback on stdout or stderr), code in pickles never runs, nothing is
written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import _hf

pytestmark = pytest.mark.slow


class Payload:
    """Unpickling this calls os.mkdir(marker): a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def _garbage_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text("this is not a tokenizer", encoding="utf-8")


def _json_that_is_no_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "Evil"}}), encoding="utf-8")


def _another_models_tokenizer(folder: Path) -> None:
    """A tokenizer of 50,000 tokens beside a model that embeds a few hundred."""
    from tokenizers import Tokenizer, models

    bigger = Tokenizer(models.WordLevel({f"w{i}": i for i in range(50_000)}, unk_token="w0"))
    bigger.save(str(folder / "tokenizer.json"))


def _config_list(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2, 3]", encoding="utf-8")


def _config_custom_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="totally-safe", auto_map={"AutoModel": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "modeling_evil.py").write_text("import os\nos.mkdir('pwned')\n", encoding="utf-8")


def _config_claims_vit(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "vit"
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _pickle_that_runs_code(folder: Path) -> None:
    import torch

    (folder / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": Payload(folder.parent / "pwned")}, folder / "pytorch_model.bin")


def _shard_outside(folder: Path) -> None:
    index = {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "../outside.safetensors"}}
    (folder / "model.safetensors").rename(folder.parent / "outside.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")


def _unsupported_module(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")


def _no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _truncated_safetensors(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "garbage tokenizer.json": (_garbage_tokenizer, "sentence-embedding", "tokenizer.json: not a Hugging Face tok"),
    "json that is no tokenizer": (_json_that_is_no_tokenizer, "sentence-embedding", "tokenizer.json: not a Hug"),
    "another model's tokenizer": (_another_models_tokenizer, "sentence-embedding", "not this model's tokenizer"),
    "config.json a list": (_config_list, "sentence-embedding", "config.json: expected a JSON object"),
    "config.json wants custom code": (_config_custom_code, "sentence-embedding", "custom code is never run"),
    "config.json claims vit": (_config_claims_vit, "sentence-embedding", "cannot build a vit model|do not fit"),
    "pickle that runs code": (_pickle_that_runs_code, "sentence-embedding", "pytorch_model.bin: refused"),
    "shard outside the folder": (_shard_outside, "sentence-embedding", "points outside the model folder"),
    "unsupported module": (_unsupported_module, "sentence-embedding", "unsupported sentence-transformers module"),
    "no weights": (_no_weights, "sentence-embedding", "no weights: expected model.safetensors"),
    "truncated safetensors": (_truncated_safetensors, "sentence-embedding", "spec.model.uri: "),
    "classifier without a head": (lambda folder: None, "text-classification", "missing classifier"),
}


def convert_cli(tmp_path: Path, source: str, task: str) -> subprocess.CompletedProcess[str]:
    spec = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "hostile"},
        "spec": {"model": {"uri": source, "format": "huggingface", "task": task}, "conversion": {"precision": "fp32"}},
    }
    (tmp_path / "ms.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    command = [sys.executable, "-m", "modelservice.cli", "convert", "-f", "ms.yaml", "--out", "out", "--quiet"]
    command += ["--cache-dir", "cache"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=environment)


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], pattern: str, tmp_path: Path) -> None:
    import re

    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ms.yaml: spec."), lines[0]  # names the file and the field
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_folder_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    damage, task, pattern = CASES[case]
    folder = _hf.write_text_model(tmp_path / "model", layout="sentence-transformers", layers=1, hidden=32, heads=2)
    damage(folder)
    result = convert_cli(tmp_path, "model", task)
    assert_one_line_refusal(result, pattern, tmp_path)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "model" / "pwned").exists()


def test_an_archive_whose_member_escapes_its_folder_is_refused(tmp_path: Path) -> None:
    folder = _hf.write_text_model(tmp_path / "model", layout="sentence-transformers", layers=1, hidden=32, heads=2)
    escape = tmp_path / "escape.txt"
    escape.write_text("outside", encoding="utf-8")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=f"model/{path.relative_to(folder)}", recursive=False)
        archive.add(escape, arcname="../escape.txt")
    escape.unlink()
    result = convert_cli(tmp_path, "model.tar.gz", "sentence-embedding")
    assert_one_line_refusal(result, "escape|outside|unsafe", tmp_path)
    assert not escape.exists()
