"""What ``modelservice serve`` prints for a text model (curl with a sentence, the ensemble's steps left out of the
examples) and how ``modelservice infer`` reads texts."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import _hf
from modelservice.api.models import ModelService, TensorSpec
from modelservice.convert.load import LoadedModel, TransformerInfo
from modelservice.convert.repository import ConfigTensor
from modelservice.convert.textserving import write_text_ensemble
from modelservice.serve.infer import InferError, ModelInfo, TensorInfo, read_texts, text_input
from modelservice.serve.local import CURL_TEXT, curl_example, describe, model_inputs
from modelservice.serve.pybackend import RunnableModel
from modelservice.serve.triton import Ports, TritonInstall, TritonProcess


def write_classifier_ensemble(tmp_path: Path, repository: Path) -> None:
    ms = ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "texts"},
            "spec": {"model": {"uri": "src", "format": "huggingface", "task": "text-classification"}},
        }
    )
    info = TransformerInfo(
        "text-classification", "bert", 4, 64, 2, tokenizer=_hf.write_tokenizer(tmp_path / "t"), labels=("a", "b")
    )
    inputs = [TensorSpec(name=n, dtype="INT64", shape=[-1]) for n in ("input_ids", "attention_mask")]
    outputs = [TensorSpec(name="logits", dtype="FP32", shape=[2])]
    write_text_ensemble(repository, ms, LoadedModel("huggingface", Path("m.onnx"), inputs, outputs, transformer=info))


def test_curl_example_of_a_text_model_sends_a_sentence() -> None:
    example = curl_example("http://127.0.0.1:8000", "emb", [ConfigTensor("text", "STRING", [1])], batched=True)
    assert example is not None
    argv = shlex.split(example)
    body = json.loads(argv[argv.index("-d") + 1])
    assert body == {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [CURL_TEXT]}]}


def test_serve_describes_the_ensemble_and_keeps_its_steps_out_of_the_examples(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    write_classifier_ensemble(tmp_path, repository)
    models = [
        RunnableModel("texts", "ensemble", None, "ensemble"),
        RunnableModel("texts-labels", "python", None, "python"),
        RunnableModel("texts-tokenizer", "python", None, "python"),
    ]
    found = model_inputs(repository, models)
    assert found["texts"].inputs == [ConfigTensor("text", "STRING", [1])] and found["texts"].batched
    assert found["texts"].step_of is None
    assert found["texts-tokenizer"].step_of == "texts" and found["texts-labels"].step_of == "texts"
    triton = TritonProcess(
        repository=repository,
        log_path=tmp_path / "log",
        ports=Ports(8000, 8001, 8002),
        install=TritonInstall(Path("x")),
    )
    text = describe(triton, triton.install, models, found)
    assert "  model texts: ensemble\n" in text
    assert "  model texts-tokenizer: python artifact, python backend (a step of texts)" in text
    assert "/v2/models/texts/infer" in text and "/v2/models/texts-tokenizer/infer" not in text
    assert f'modelservice infer --url 127.0.0.1:8000 -m texts --text "{CURL_TEXT}"' in text
    assert "-m texts-labels" not in text


def test_read_texts_from_txt_and_jsonl(tmp_path: Path) -> None:
    texts = ["first text", "second, with \u00e9"]
    assert read_texts(_hf.write_texts(tmp_path / "a.txt", texts)) == texts
    assert read_texts(_hf.write_texts(tmp_path / "a.jsonl", texts, labels=[0, 1])) == texts
    (tmp_path / "blank.txt").write_text("\n  one  \n\n", encoding="utf-8")
    assert read_texts(tmp_path / "blank.txt") == ["one"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{broken\n', r"bad.jsonl:2: not JSON"),
        ("bad.jsonl", '{"label": 1}\n', r'bad.jsonl:1: expected an object with a "text" string'),
        ("x.npz", "PK", r"a text model takes .txt \(one text a line\) or .jsonl"),
    ],
)
def test_bad_text_files_are_one_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(InferError, match=message) as exc:
        read_texts(tmp_path / name)
    assert "\n" not in str(exc.value)


def test_text_input_is_the_single_bytes_input() -> None:
    text = TensorInfo("text", "BYTES", [1])
    assert text_input(ModelInfo("m", "1", 8, [text], [])) == text
    assert text_input(ModelInfo("m", "1", 8, [TensorInfo("image", "FP32", [1, 8, 8])], [])) is None
    assert text_input(ModelInfo("m", "1", 8, [text, TensorInfo("mask", "INT64", [-1])], [])) is None
