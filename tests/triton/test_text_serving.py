"""Text in, answers out: Hugging Face text models served as Triton ensembles (tokenizer python step with the
real ``tokenizers`` library, the ONNX encoder in ONNX Runtime, a labels step for classifiers) by the real
tritonserver, over HTTP and gRPC, against the torch originals.

The repository is built by hand here: each BERT-like model (tests/lib/_hf.py, random weights, a real WordPiece
tokenizer.json) is exported to ONNX with dynamic batch and sequence axes and written as ``<name>-encoder`` with
the same config builder the converter uses; ``write_text_ensemble`` adds the rest, and the repository goes
through ``make_runnable`` as ``modelservice serve`` does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import _hf
from modelservice.api.models import ModelService, TensorSpec
from modelservice.cli import main
from modelservice.convert.load import LoadedModel, TransformerInfo
from modelservice.convert.repository import build_model_config, write_config
from modelservice.convert.textserving import PAD_MULTIPLE, encoder_name, write_text_ensemble
from modelservice.serve.pybackend import make_runnable
from modelservice.serve.triton import TritonProcess, find_tritonserver

pytestmark = pytest.mark.triton

MAX_LENGTH = 64
MAX_BATCH = 8
BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@dataclass(frozen=True)
class TextModel:
    name: str
    task: str
    output: str


MODELS = [
    TextModel("emb", "sentence-embedding", "embedding"),
    TextModel("clf", "text-classification", "logits"),
    TextModel("tok", "token-classification", "logits"),
]


def _mean_pooled(torch: Any, model: Any) -> Any:
    class MeanPooled(torch.nn.Module):  # what sentence-transformers computes: mean over the mask, L2-normalised
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(input_ids, attention_mask, token_type_ids).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return MeanPooled()


def _logits_only(torch: Any, model: Any) -> Any:
    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids, attention_mask, token_type_ids).logits

    return Logits()


def write_text_repository(root: Path, model: TextModel) -> Path:
    """staging/<name>-encoder (ONNX) + the ensemble around it, for the checkpoint in root/src."""
    import torch

    source = _hf.write_text_model(root / "src", task=model.task)
    torch_model = _hf.build_text_model(model.task)
    wrapper = (
        _mean_pooled(torch, torch_model) if model.task == "sentence-embedding" else _logits_only(torch, torch_model)
    )
    staging = root / "staging"
    ms = ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": model.name},
            "spec": {
                "model": {"uri": "src", "format": "huggingface", "task": model.task},
                "serving": {"maxBatchSize": MAX_BATCH, "dynamicBatching": {"maxQueueDelayMicroseconds": 2000}},
            },
        }
    )
    folder = staging / encoder_name(ms)
    (folder / "1").mkdir(parents=True)
    sample = torch.ones(2, 7, dtype=torch.long)
    per_row = model.task in ("sentence-embedding", "text-classification")
    torch.onnx.export(
        wrapper, (sample, sample, torch.zeros_like(sample)), str(folder / "1" / "model.onnx"), dynamo=False,
        input_names=BERT_INPUTS, output_names=[model.output], opset_version=17,
        dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in BERT_INPUTS},
                      model.output: {0: "batch"} if per_row else {0: "batch", 1: "sequence"}},
    )  # fmt: skip
    config = torch_model.config
    shape = {
        "sentence-embedding": [config.hidden_size],
        "text-classification": [config.num_labels],
        "token-classification": [-1, config.num_labels],
    }[model.task]
    inputs = [TensorSpec(name=name, dtype="INT64", shape=[-1]) for name in BERT_INPUTS]
    outputs = [TensorSpec(name=model.output, dtype="FP32", shape=shape)]
    write_config(
        build_model_config(ms, platform="onnx", inputs=inputs, outputs=outputs, name=encoder_name(ms)),
        folder / "config.pbtxt",
    )
    labels = tuple(config.id2label[i] for i in range(config.num_labels)) if model.task != "sentence-embedding" else ()
    info = TransformerInfo(
        task=model.task, model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers, tokenizer=source / "tokenizer.json", max_length=MAX_LENGTH, labels=labels,
    )  # fmt: skip
    loaded = LoadedModel("huggingface", folder / "1" / "model.onnx", inputs, outputs, wrapper, transformer=info)
    write_text_ensemble(staging, ms, loaded)
    return staging


@dataclass(frozen=True)
class TextTriton:
    process: TritonProcess
    sources: dict[str, Path]


@pytest.fixture(scope="module")
def text_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextTriton]:
    root = tmp_path_factory.mktemp("text")
    converted = root / "converted"
    sources = {}
    for model in MODELS:
        staging = write_text_repository(root / model.name, model)
        sources[model.name] = root / model.name / "src"
        for folder in staging.iterdir():
            shutil.copytree(folder, converted / folder.name)
    install = find_tritonserver()
    make_runnable(converted, root / "repository", install)
    process = TritonProcess(
        repository=root / "repository", log_path=root / "triton.log", install=install, cache_dir=root / "cache"
    )
    with process:
        yield TextTriton(process, sources)


def texts_array(texts: list[str]) -> np.ndarray:
    return np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)


def http_infer(triton: TextTriton, model: str, texts: list[str], outputs: list[str]) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(triton.process.http_url)
    try:
        item = httpclient.InferInput("text", [len(texts), 1], "BYTES")
        item.set_data_from_numpy(texts_array(texts))
        result = client.infer(model, [item], outputs=[httpclient.InferRequestedOutput(o) for o in outputs])
        return {name: result.as_numpy(name) for name in outputs}
    finally:
        client.close()


def grpc_infer(triton: TextTriton, model: str, texts: list[str], outputs: list[str]) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(triton.process.grpc_url)
    try:
        item = grpcclient.InferInput("text", [len(texts), 1], "BYTES")
        item.set_data_from_numpy(texts_array(texts))
        result = client.infer(model, [item], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
        return {name: result.as_numpy(name) for name in outputs}
    finally:
        client.close()


def chunks(texts: list[str], size: int = MAX_BATCH) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def torch_outputs(source: Path, task: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The torch original's logits on the texts (tokenized by the tokenizers library, padded to the longest) and
    the attention mask."""
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(texts)
    tensors = [torch.tensor([getattr(e, field) for e in encoded]) for field in ("ids", "attention_mask", "type_ids")]
    model = _hf.build_text_model(task)
    with torch.inference_mode():
        logits = model(*tensors).logits.numpy()
    return logits, tensors[1].numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return result


LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)  # far beyond MAX_LENGTH tokens


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embeddings_equal_the_torch_original(text_triton: TextTriton, protocol: str) -> None:
    texts = [*_hf.sentences(), LONG, ""]
    infer = http_infer if protocol == "http" else grpc_infer
    served = np.concatenate([infer(text_triton, "emb", batch, ["embedding"])["embedding"] for batch in chunks(texts)])
    expected = _hf.reference_embeddings(text_triton.sources["emb"], texts, max_length=MAX_LENGTH)
    assert served.shape == expected.shape == (len(texts), 64)
    assert served.dtype == np.float32
    assert cosine(served, expected).min() > 0.999
    assert np.abs(served - expected).max() < 1e-3


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classifier_returns_torch_logits_and_label_names(text_triton: TextTriton, protocol: str) -> None:
    texts = _hf.sentences()[:MAX_BATCH]
    infer = http_infer if protocol == "http" else grpc_infer
    answer = infer(text_triton, "clf", texts, ["logits", "label"])
    logits, _ = torch_outputs(text_triton.sources["clf"], "text-classification", texts)
    assert answer["logits"].shape == (len(texts), 2)
    assert np.abs(answer["logits"] - logits).max() < 1e-3
    assert answer["label"].shape == (len(texts), 1)
    names = [value.decode() for value in answer["label"].reshape(-1)]
    assert names == [_hf.LABELS[int(i)] for i in logits.argmax(-1)]


def test_token_classifier_labels_every_token_and_blanks_padding(text_triton: TextTriton) -> None:
    texts = ["short one.", _hf.sentences()[0], LONG]
    answer = http_infer(text_triton, "tok", texts, ["logits", "label"])
    logits, mask = torch_outputs(text_triton.sources["tok"], "token-classification", texts)
    served = answer["logits"]
    length = mask.shape[1]  # the longest (truncated) sequence: MAX_LENGTH here
    assert served.shape == (3, length, 3)
    valid = mask.astype(bool)
    assert np.abs(served[valid] - logits[valid]).max() < 1e-3
    labels = answer["label"]
    assert labels.shape == (3, length)
    for row in range(3):
        names = [v.decode() for v in labels[row]]
        count = int(mask[row].sum())
        assert names[:count] == [_hf.TAGS[int(i)] for i in served[row, :count].argmax(-1)]
        assert names[count:] == [""] * (length - count)


def test_tokenizer_pads_each_batch_to_its_longest_text_not_to_max_length(text_triton: TextTriton) -> None:
    """Asked directly, the tokenizer step shows its padding: short texts -> a short multiple of 16; a batch with
    a longer text -> that text's length rounded up, every row the same length; a too long text -> MAX_LENGTH."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(text_triton.sources["emb"] / "tokenizer.json"))
    outputs = ["input_ids", "attention_mask", "token_type_ids"]

    def lengths(texts: list[str]) -> list[int]:
        return [len(tokenizer.encode(t).ids) for t in texts]

    short = ["a cat.", "dogs bark."]
    answer = http_infer(text_triton, "emb-tokenizer", short, outputs)
    assert max(lengths(short)) <= PAD_MULTIPLE
    assert answer["input_ids"].shape == (2, PAD_MULTIPLE)
    assert answer["attention_mask"].sum(axis=1).tolist() == lengths(short)
    assert answer["input_ids"].dtype == np.int64 and answer["token_type_ids"].max() == 0
    expected_ids = tokenizer.encode(short[0]).ids
    assert answer["input_ids"][0, : len(expected_ids)].tolist() == expected_ids
    assert (answer["input_ids"][0, len(expected_ids) :] == 0).all()  # [PAD]

    mixed = [*short, _hf.sentences()[0] + " " + _hf.sentences()[1]]
    longest = max(lengths(mixed))
    assert PAD_MULTIPLE < longest < MAX_LENGTH - PAD_MULTIPLE  # the sentences file keeps this true
    answer = http_infer(text_triton, "emb-tokenizer", mixed, outputs)
    padded = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    assert answer["input_ids"].shape == (3, padded) and padded < MAX_LENGTH
    assert answer["attention_mask"].sum(axis=1).tolist() == lengths(mixed)

    answer = http_infer(text_triton, "emb-tokenizer", [*short, LONG], outputs)
    assert answer["input_ids"].shape == (3, MAX_LENGTH)  # truncated, special tokens kept
    assert answer["attention_mask"][2].sum() == MAX_LENGTH
    assert answer["input_ids"][2, -1] == tokenizer.token_to_id("[SEP]")


def test_model_metadata_declares_text_in_and_answers_out(text_triton: TextTriton) -> None:
    client = httpclient.InferenceServerClient(text_triton.process.http_url)
    try:
        metadata = client.get_model_metadata("clf")
        config = client.get_model_config("clf")
    finally:
        client.close()
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [("text", "BYTES", [-1, 1])]
    assert {t["name"]: t["datatype"] for t in metadata["outputs"]} == {"logits": "FP32", "label": "BYTES"}
    assert config["platform"] == "ensemble"
    assert [s["model_name"] for s in config["ensemble_scheduling"]["step"]] == [
        "clf-tokenizer",
        "clf-encoder",
        "clf-labels",
    ]


def test_infer_cli_sends_texts_and_prints_labels(text_triton: TextTriton, capsys: pytest.CaptureFixture[str]) -> None:
    texts = _hf.sentences()[:3]
    argv = ["infer", "--url", text_triton.process.http_url, "-m", "clf", "--count", "2"]
    code = main([*argv, *[item for text in texts for item in ("--text", text)]])
    out = capsys.readouterr().out
    assert code == 0
    logits, _ = torch_outputs(text_triton.sources["clf"], "text-classification", texts)
    assert "input text: BYTES, 3 text(s) from --text in 1 request(s)" in out
    assert "output label: BYTES [3, 1]" in out
    for text, index in zip(texts, logits.argmax(-1), strict=True):
        assert re.search(
            rf'  "{re.escape(text[:20])}.*": logits \[\S+, \S+\]; label {_hf.LABELS[int(index)]}$', out, re.M
        )
    assert re.search(r"latency over 2 request\(s\): p50 [\d.]+ ms", out)


def test_infer_cli_reads_a_text_file_over_grpc(
    text_triton: TextTriton, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = _hf.sentences()[:10]
    data = _hf.write_texts(tmp_path / "texts.txt", texts)
    code = main(
        ["infer", "--url", text_triton.process.grpc_url, "--protocol", "grpc", "-m", "emb", "--data", str(data)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"input text: BYTES, 10 text(s) from {data} in 2 request(s)" in out  # max_batch_size 8
    expected = _hf.reference_embeddings(text_triton.sources["emb"], texts[:1], max_length=MAX_LENGTH)[0]
    first = ", ".join(f"{v:.4f}" for v in expected[:4])
    assert re.search(rf"  \".*\": embedding \[{re.escape(first)}, \.\.\.\] norm 1\.0000$", out, re.M), out


def test_infer_cli_batch_beyond_the_model_is_one_line(text_triton: TextTriton) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelservice.cli", "infer", "--url", text_triton.process.http_url, "-m", "emb",
         "--text", "hello", "--batch", "9"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --batch 9 exceeds the model's max_batch_size 8"
