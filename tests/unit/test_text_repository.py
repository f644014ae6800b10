"""A text model's Triton ensemble as written to the repository (convert/textserving.py), parsed back with Triton's
ModelConfig protobuf; hostile tokenizer files; installing several model folders at once (convert/output.py)."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2

import _hf
from modelservice.api.errors import UserError
from modelservice.api.models import ModelService, TensorSpec
from modelservice.convert import output
from modelservice.convert.load import LoadedModel, TransformerInfo
from modelservice.convert.repository import (
    ConfigError,
    ConfigTensor,
    EnsembleStep,
    build_ensemble_config,
    dtype_name,
    read_config,
)
from modelservice.convert.textserving import (
    LABELS_TEMPLATE,
    PAD_MULTIPLE,
    TOKENIZER_TEMPLATE,
    check_tokenizer,
    encoder_name,
    model_names,
    template,
    write_text_ensemble,
)

HIDDEN = 64
OUTPUTS = {
    "sentence-embedding": TensorSpec(name="embedding", dtype="FP32", shape=[HIDDEN]),
    "feature-extraction": TensorSpec(name="last_hidden_state", dtype="FP32", shape=[-1, HIDDEN]),
    "text-classification": TensorSpec(name="logits", dtype="FP32", shape=[2]),
    "token-classification": TensorSpec(name="logits", dtype="FP32", shape=[-1, 3]),
}
LABELS = {"text-classification": ("negative", "positive"), "token-classification": ("O", "B-THING", "I-THING")}
STRING = model_config_pb2.TYPE_STRING


def make_ms(task: str, serving: dict[str, Any] | None = None, model: dict[str, Any] | None = None) -> ModelService:
    return ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "texts"},
            "spec": {
                "model": {"uri": "src", "format": "huggingface", "task": task, **(model or {})},
                "serving": serving or {"maxBatchSize": 16, "dynamicBatching": {"maxQueueDelayMicroseconds": 500}},
            },
        }
    )


BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def encoder(
    tokenizer: Path | None,
    task: str,
    inputs: tuple[str, ...] = BERT_INPUTS,
    pad_id: int = 0,
    max_length: int | None = 48,
) -> LoadedModel:
    info = TransformerInfo(
        task=task, model_type="bert", num_heads=4, hidden_size=HIDDEN, num_layers=2, tokenizer=tokenizer,
        max_length=max_length, labels=LABELS.get(task, ()), pad_id=pad_id,
    )  # fmt: skip
    specs = [TensorSpec(name=name, dtype="INT64", shape=[-1]) for name in inputs]
    return LoadedModel("huggingface", Path("model.onnx"), specs, [OUTPUTS[task]], None, transformer=info)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _hf.write_tokenizer(tmp_path_factory.mktemp("tok"))


def configs(staging: Path) -> dict[str, Any]:
    return {p.name: read_config(p / "config.pbtxt") for p in sorted(staging.iterdir())}


@pytest.mark.parametrize("task", list(OUTPUTS))
def test_ensemble_of_every_text_task(tmp_path: Path, tokenizer_file: Path, task: str) -> None:
    ms = make_ms(task)
    notes = write_text_ensemble(tmp_path, ms, encoder(tokenizer_file, task))
    classifier = task in LABELS
    found = configs(tmp_path)
    assert sorted(found) == sorted(name for name in model_names(ms) if name != encoder_name(ms))
    assert "texts-tokenizer" in notes[0] and "WordPiece" in notes[0]

    ensemble = found["texts"]
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 16
    assert not ensemble.instance_group and not ensemble.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.input] == [("text", STRING, [1])]
    outputs = {t.name: (dtype_name(t.data_type), list(t.dims)) for t in ensemble.output}
    expected = {OUTPUTS[task].name: ("FP32", OUTPUTS[task].shape)}
    if classifier:
        expected["label"] = ("STRING", [-1] if task == "token-classification" else [1])
    assert outputs == expected
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in ensemble.ensemble_scheduling.step]
    tensors = {name: name for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert steps[0] == ("texts-tokenizer", {"text": "text"}, tensors)
    assert steps[1] == ("texts-encoder", tensors, {OUTPUTS[task].name: OUTPUTS[task].name})
    if classifier:
        mask = {"attention_mask": "attention_mask"} if task == "token-classification" else {}
        assert steps[2] == ("texts-labels", {"logits": "logits", **mask}, {"label": "label"})
    assert len(steps) == (3 if classifier else 2)
    assert (tmp_path / "texts" / "1").is_dir() and not any((tmp_path / "texts" / "1").iterdir())

    tokenizer = found["texts-tokenizer"]
    assert tokenizer.backend == "python" and tokenizer.max_batch_size == 16
    assert tokenizer.dynamic_batching.max_queue_delay_microseconds == 500
    assert [g.kind for g in tokenizer.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert [(t.name, dtype_name(t.data_type), list(t.dims)) for t in tokenizer.output] == [
        (name, "INT64", [-1]) for name in tensors
    ]
    parameters = {k: v.string_value for k, v in tokenizer.parameters.items()}
    assert parameters == {
        "tokenizer": "tokenizer.json", "max_length": "48", "pad_id": "0", "pad_to_multiple_of": str(PAD_MULTIPLE),
    }  # fmt: skip
    version = tmp_path / "texts-tokenizer" / "1"
    assert filecmp.cmp(version / "tokenizer.json", tokenizer_file, shallow=False)
    assert (version / "model.py").read_text(encoding="utf-8") == template(TOKENIZER_TEMPLATE)
    if classifier:
        labels = found["texts-labels"]
        assert json.loads(labels.parameters["labels"].string_value) == list(LABELS[task])
        assert labels.max_batch_size == 16 and labels.HasField("dynamic_batching")
        model = tmp_path / "texts-labels" / "1" / "model.py"
        assert model.read_text(encoding="utf-8") == template(LABELS_TEMPLATE)


def test_encoder_without_token_type_ids_gets_no_such_tensor(tmp_path: Path, tokenizer_file: Path) -> None:
    """A DistilBERT-like encoder takes input_ids and attention_mask only: the tokenizer emits just those."""
    ms = make_ms("sentence-embedding")
    write_text_ensemble(tmp_path, ms, encoder(tokenizer_file, "sentence-embedding", ("input_ids", "attention_mask")))
    tokenizer = read_config(tmp_path / "texts-tokenizer" / "config.pbtxt")
    assert [t.name for t in tokenizer.output] == ["input_ids", "attention_mask"]


def test_token_classifier_without_mask_input_still_masks_labels(tmp_path: Path, tokenizer_file: Path) -> None:
    """The labels step of a token classifier blanks padding: the tokenizer makes the mask even when the encoder
    does not take it."""
    ms = make_ms("token-classification")
    write_text_ensemble(tmp_path, ms, encoder(tokenizer_file, "token-classification", ("input_ids",)))
    tokenizer = read_config(tmp_path / "texts-tokenizer" / "config.pbtxt")
    assert [t.name for t in tokenizer.output] == ["input_ids", "attention_mask"]
    steps = read_config(tmp_path / "texts" / "config.pbtxt").ensemble_scheduling.step
    assert dict(steps[1].input_map) == {"input_ids": "input_ids"}
    assert dict(steps[2].input_map) == {"logits": "logits", "attention_mask": "attention_mask"}


def test_max_length_falls_back_to_the_spec(tmp_path: Path, tokenizer_file: Path) -> None:
    ms = make_ms("sentence-embedding", model={"maxSequenceLength": 100})
    write_text_ensemble(tmp_path, ms, encoder(tokenizer_file, "sentence-embedding", max_length=None))
    tokenizer = read_config(tmp_path / "texts-tokenizer" / "config.pbtxt")
    assert tokenizer.parameters["max_length"].string_value == "100"


def _one_line(exc: pytest.ExceptionInfo[UserError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", r"tokenizer.json: not a Hugging Face tokenizers file"),
        (json.dumps({"model_type": "bert", "hidden_size": 64}).encode(), r"not a Hugging Face tokenizers file"),
        (b'{"version": "1.0", "model": {"type": "WordPiece", "vocab": 7}}', r"not a Hugging Face tokenizers file"),
        (b"", r"not a Hugging Face tokenizers file"),
    ],
    ids=["binary", "a-config-json", "broken-vocab", "empty"],
)
def test_a_tokenizer_that_is_not_one_is_one_clear_line(tmp_path: Path, content: bytes, expected: str) -> None:
    fake = tmp_path / "src" / "tokenizer.json"
    fake.parent.mkdir()
    fake.write_bytes(content)
    staging = tmp_path / "staging"
    with pytest.raises(UserError, match=expected) as exc:
        write_text_ensemble(staging, make_ms("sentence-embedding"), encoder(fake, "sentence-embedding"))
    assert _one_line(exc).startswith("spec.model.uri: tokenizer.json:")
    assert not staging.exists() or not any(staging.iterdir())  # nothing written


def test_padding_id_outside_the_vocabulary(tmp_path: Path, tokenizer_file: Path) -> None:
    with pytest.raises(UserError, match=r"padding id 99999 is outside its vocabulary of \d+ tokens") as exc:
        write_text_ensemble(
            tmp_path, make_ms("sentence-embedding"), encoder(tokenizer_file, "sentence-embedding", pad_id=99999)
        )
    _one_line(exc)


def test_missing_tokenizer_and_unbatched_serving_are_refused(tmp_path: Path, tokenizer_file: Path) -> None:
    with pytest.raises(UserError, match=r"needs its fast tokenizer \(tokenizer.json\)"):
        write_text_ensemble(tmp_path, make_ms("sentence-embedding"), encoder(None, "sentence-embedding"))
    # The API refuses an unbatched text model up front (CEL and pydantic) ...
    with pytest.raises(ValueError, match=r"maxBatchSize must be > 0 for a text model"):
        make_ms("sentence-embedding", {"maxBatchSize": 0, "dynamicBatching": None})
    # ... and the ensemble writer still refuses one that bypassed validation.
    unbatched = make_ms("sentence-embedding")
    unbatched.spec.serving.max_batch_size = 0
    unbatched.spec.serving.dynamic_batching = None
    with pytest.raises(UserError, match=r"spec.serving.maxBatchSize: a text model is served as a batching ensemble"):
        write_text_ensemble(tmp_path, unbatched, encoder(tokenizer_file, "sentence-embedding"))


def test_inputs_renamed_in_the_spec_are_wired_by_position(tmp_path: Path, tokenizer_file: Path) -> None:
    """spec.model.inputs may rename the encoder's inputs (convert/hf.py keeps its order: ids, mask, types): the
    tokenizer still makes input_ids/attention_mask/token_type_ids and the ensemble wires them to the new names."""
    ms = make_ms("token-classification")
    write_text_ensemble(tmp_path, ms, encoder(tokenizer_file, "token-classification", ("ids", "mask", "types")))
    tokenizer = read_config(tmp_path / "texts-tokenizer" / "config.pbtxt")
    assert [t.name for t in tokenizer.output] == ["input_ids", "attention_mask", "token_type_ids"]
    steps = read_config(tmp_path / "texts" / "config.pbtxt").ensemble_scheduling.step
    assert dict(steps[0].output_map) == {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "types"}
    assert dict(steps[1].input_map) == {"ids": "ids", "mask": "mask", "types": "types"}
    assert dict(steps[2].input_map) == {"logits": "logits", "attention_mask": "mask"}


def test_model_vocabulary_smaller_than_the_tokenizer_is_another_models_tokenizer(tokenizer_file: Path) -> None:
    kind, size = check_tokenizer(tokenizer_file, 0, model_vocabulary=10_000)
    assert kind == "WordPiece" and size > 100
    with pytest.raises(UserError, match=rf"its vocabulary has {size} tokens but the model embeds 100: not this model"):
        check_tokenizer(tokenizer_file, 0, model_vocabulary=100)


def test_encoder_inputs_the_tokenizer_cannot_make(tmp_path: Path, tokenizer_file: Path) -> None:
    with pytest.raises(UserError, match=r"takes input_ids, pixel_values; the tokenizer step makes"):
        write_text_ensemble(
            tmp_path,
            make_ms("sentence-embedding"),
            encoder(tokenizer_file, "sentence-embedding", ("input_ids", "pixel_values")),
        )


def test_ensemble_builder_checks_its_wiring() -> None:
    text = ConfigTensor("text", "BYTES", [1])
    ids = ConfigTensor("ids", "INT64", [-1])
    with pytest.raises(ConfigError, match="step enc reads ids before any step makes it"):
        build_ensemble_config(
            "e", max_batch_size=4, inputs=[text], outputs=[ids], steps=[EnsembleStep("enc", {"x": "ids"})]
        )
    with pytest.raises(ConfigError, match="no step produces output ids"):
        build_ensemble_config(
            "e", max_batch_size=4, inputs=[text], outputs=[ids], steps=[EnsembleStep("tok", {"t": "text"})]
        )


# ------------------------------------------------------------------------------------------------ install


def _model(root: Path, name: str, marker: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(f'name: "{name}"\n', encoding="utf-8")
    (root / name / "1" / "marker").write_text(marker, encoding="utf-8")


def _staging(root: Path, marker: str) -> Path:
    for name in ("texts", "texts-encoder", "texts-tokenizer"):
        _model(root, name, marker)
    (root / "report.json").write_text(json.dumps({"marker": marker}), encoding="utf-8")
    return root


def test_install_moves_every_model_folder_and_replaces_old_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _model(out, "other", "untouched")
    output.install(_staging(tmp_path / "a", "first"), out, "texts")
    output.install(_staging(tmp_path / "b", "second"), out, "texts")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["other", "report.json", "texts", "texts-encoder", "texts-tokenizer"]  # no temp folder left
    for name in ("texts", "texts-encoder", "texts-tokenizer"):
        assert (out / name / "1" / "marker").read_text(encoding="utf-8") == "second"
    assert (out / "other" / "1" / "marker").read_text(encoding="utf-8") == "untouched"
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == {"marker": "second"}


def test_install_puts_the_ensemble_in_after_its_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[str] = []
    real = os.replace

    def recording(source: Any, target: Any) -> None:
        if Path(target).parent == tmp_path / "out":
            replaced.append(Path(target).name)
        real(source, target)

    monkeypatch.setattr(output.os, "replace", recording)
    output.install(_staging(tmp_path / "a", "x"), tmp_path / "out", "texts")
    assert replaced == ["texts-encoder", "texts-tokenizer", "texts", "report.json"]


def test_a_failed_install_leaves_the_output_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    output.install(_staging(tmp_path / "a", "first"), out, "texts")
    real = shutil.copytree
    calls: list[str] = []

    def failing(source: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(source).parent == tmp_path / "b":  # a model folder (not copytree's own recursion)
            calls.append(Path(source).name)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(output.shutil, "copytree", failing)
    with pytest.raises(OSError, match="No space left"):
        output.install(_staging(tmp_path / "b", "second"), out, "texts")
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "texts", "texts-encoder", "texts-tokenizer"]
    for name in ("texts", "texts-encoder", "texts-tokenizer"):
        assert (out / name / "1" / "marker").read_text(encoding="utf-8") == "first"


def test_install_removes_steps_an_earlier_text_model_left(tmp_path: Path) -> None:
    """A classifier installed, then the same ModelService as a plain model: its old steps go, other models stay."""
    out = tmp_path / "out"
    first = _staging(tmp_path / "a", "first")
    _model(first, "texts-labels", "first")
    _model(out, "texts-other", "untouched")
    output.install(first, out, "texts")
    assert (out / "texts-labels").is_dir()
    plain = tmp_path / "b"
    _model(plain, "texts", "second")
    (plain / "report.json").write_text("{}", encoding="utf-8")
    output.install(plain, out, "texts")
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "texts", "texts-other"]


def test_step_suffixes_cover_every_step_of_a_text_model() -> None:
    for task in OUTPUTS:
        ms = make_ms(task)
        assert {name.removeprefix("texts") for name in model_names(ms)} - {""} <= set(output.STEP_SUFFIXES)
