"""Text models served as a Triton ensemble named after the ModelService.

    <name>            platform ensemble: input ``text`` (BYTES, one string per batch row)
      1. <name>-tokenizer   python backend: the model's own tokenizer.json through the ``tokenizers`` library;
                            truncates to the max length, pads each batch to its longest sequence (rounded up to
                            a multiple of PAD_MULTIPLE); outputs the encoder's inputs (INT64, [-1])
      2. <name>-encoder     the converted model (ONNX, ...): embedding / logits / last_hidden_state
      3. <name>-labels      classifiers only, python backend: argmax of the logits -> the id2label name
    outputs: the encoder's outputs, plus ``label`` (BYTES) for classifiers

Every step batches (max_batch_size = spec.serving.maxBatchSize, each python step with the spec's dynamic
batcher), so Triton's dynamic batching still groups requests; the ensemble itself has no scheduler of its own.
The python steps are static files (``text_tokenizer.py.tmpl``, ``text_labels.py.tmpl``) parametrised by their
config.pbtxt ``parameters``; nothing model specific is generated as code.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from modelservice.api.errors import UserError
from modelservice.api.models import TEXT_TASKS, ModelService, TensorSpec
from modelservice.convert.load import LoadedModel, TransformerInfo
from modelservice.convert.repository import (
    CONFIG_FILE,
    ConfigTensor,
    EnsembleStep,
    ModelConfig,
    build_ensemble_config,
    build_model_config,
    set_parameters,
    write_config,
)

TEXT_INPUT = "text"
LABEL_OUTPUT = "label"
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_TEMPLATE = "text_tokenizer.py.tmpl"
LABELS_TEMPLATE = "text_labels.py.tmpl"
PAD_MULTIPLE = 16  # sequence lengths are rounded up to a multiple of this (fewer distinct shapes to batch)
DEFAULT_MAX_LENGTH = 512
CLASSIFIERS = ("text-classification", "token-classification")


def is_text_model(ms: ModelService) -> bool:
    return ms.spec.model.format == "huggingface" and ms.spec.model.task in TEXT_TASKS


def encoder_name(ms: ModelService) -> str:
    """The repository folder of the converted model: ``<name>`` itself, or ``<name>-encoder`` behind the
    ensemble of a text model."""
    return f"{ms.name}-encoder" if is_text_model(ms) else ms.name


def tokenizer_name(ms: ModelService) -> str:
    return f"{ms.name}-tokenizer"


def labels_name(ms: ModelService) -> str:
    return f"{ms.name}-labels"


def model_names(ms: ModelService, info: TransformerInfo | None = None) -> list[str]:
    """The repository folders a conversion of ``ms`` writes (ensemble steps first, the ensemble last)."""
    if not is_text_model(ms):
        return [ms.name]
    names = [tokenizer_name(ms), encoder_name(ms)]
    if ms.spec.model.task in CLASSIFIERS and (info is None or info.labels):
        names.append(labels_name(ms))
    return [*names, ms.name]


def template(name: str) -> str:
    return resources.files("modelservice.convert").joinpath(name).read_text(encoding="utf-8")


def check_tokenizer(path: Path, pad_id: int, model_vocabulary: int | None = None) -> tuple[str, int]:
    """Load ``path`` with the ``tokenizers`` library as the tokenizer step will, and encode a sentence; returns
    (model type, vocabulary size). UserError in one line when it is not a usable tokenizer.json, or (given the
    model's ``vocab_size``) when it makes token ids the model has no embedding for: another model's tokenizer."""
    where = f"spec.model.uri: {path.name}"
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UserError(
            "text models need the tokenizers package: pip install 'modelservice-operator[convert]'"
        ) from None
    try:
        tokenizer = Tokenizer.from_file(str(path))
        encoding = tokenizer.encode("The quick brown fox jumps over the lazy dog.")
    except Exception as exc:  # the Rust library raises plain Exception for every parse error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{where}: not a Hugging Face tokenizers file ({first[:200]})") from None
    vocabulary = tokenizer.get_vocab_size(with_added_tokens=True)
    if not encoding.ids:
        raise UserError(f"{where}: encodes a sentence to no tokens at all; not the model's tokenizer?")
    if model_vocabulary is not None and vocabulary > model_vocabulary:
        raise UserError(
            f"{where}: its vocabulary has {vocabulary} tokens but the model embeds {model_vocabulary}: "
            "not this model's tokenizer"
        )
    if not 0 <= pad_id < vocabulary:
        raise UserError(f"{where}: the padding id {pad_id} is outside its vocabulary of {vocabulary} tokens")
    model_type = json.loads(tokenizer.to_str()).get("model", {}).get("type") or "unknown"
    return str(model_type), vocabulary


def encoder_roles(encoder: LoadedModel) -> dict[str, str]:
    """What each encoder input is, as {tokenizer output: encoder input name}: by name (input_ids, attention_mask,
    token_type_ids), or, when spec.model.inputs renamed them, by position in that order (convert/hf.py's)."""
    names = [spec.name for spec in encoder.inputs]
    for spec in encoder.inputs:
        if spec.dtype not in ("INT64", "INT32") or len(spec.shape) != 1:
            raise UserError(f"text encoder input {spec.name}: expected INT64 [-1], got {spec.dtype} {list(spec.shape)}")
    if "input_ids" in names and set(names) <= set(ENCODER_INPUTS):
        return {name: name for name in names}
    if 1 <= len(names) <= len(ENCODER_INPUTS) and not set(names) & set(ENCODER_INPUTS):
        return dict(zip(ENCODER_INPUTS, names, strict=False))
    raise UserError(
        f"spec.model.inputs: the text encoder takes {', '.join(names)}; the tokenizer step makes "
        f"{', '.join(ENCODER_INPUTS)} (input_ids required; renamed inputs are taken in this order)"
    )


def _write_python_model(folder: Path, config: ModelConfig, source: str, files: dict[str, Path]) -> None:
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(source, encoding="utf-8")
    for name, path in files.items():
        shutil.copyfile(path, version / name)
    write_config(config, folder / CONFIG_FILE)


def _tokenizer_model(
    ms: ModelService, info: TransformerInfo, made: dict[str, str], dtypes: dict[str, str], max_length: int
) -> ModelConfig:
    text = ConfigTensor(TEXT_INPUT, "BYTES", [1])
    outputs = [ConfigTensor(role, dtypes.get(role, "INT64"), [-1]) for role in made]
    config = build_model_config(
        ms, platform="python", inputs=[text], outputs=outputs, name=tokenizer_name(ms), cpu_only=True
    )
    set_parameters(
        config,
        {
            "tokenizer": TOKENIZER_FILE,
            "max_length": str(max_length),
            "pad_id": str(info.pad_id),
            "pad_to_multiple_of": str(PAD_MULTIPLE),
        },
    )
    return config


def _logits(encoder: LoadedModel) -> TensorSpec:
    for spec in encoder.outputs:
        if spec.name == "logits":
            return spec
    if len(encoder.outputs) == 1:
        return encoder.outputs[0]
    raise UserError(f"the converted classifier has no logits output (outputs: {[s.name for s in encoder.outputs]})")


def _labels_model(ms: ModelService, info: TransformerInfo, logits: TensorSpec) -> tuple[ModelConfig, ConfigTensor]:
    per_token = ms.spec.model.task == "token-classification"
    inputs: list[ConfigTensor] = [ConfigTensor("logits", logits.dtype, list(logits.shape))]
    if per_token:
        inputs.append(ConfigTensor("attention_mask", "INT64", [-1]))
    label = ConfigTensor(LABEL_OUTPUT, "BYTES", [-1] if per_token else [1])
    config = build_model_config(
        ms, platform="python", inputs=inputs, outputs=[label], name=labels_name(ms), cpu_only=True
    )
    parameters = {"labels": json.dumps(list(info.labels)), "logits": "logits"}
    if per_token:
        parameters["mask"] = "attention_mask"
    set_parameters(config, parameters)
    return config, label


def write_text_ensemble(staging: Path, ms: ModelService, encoder: LoadedModel) -> list[str]:
    """Write ``staging/<name>-tokenizer/``, ``staging/<name>-labels/`` (classifiers) and the ensemble
    ``staging/<name>/`` around the encoder already written to ``staging/<name>-encoder/``; returns report notes."""
    info = encoder.transformer
    if info is None or info.tokenizer is None:
        raise UserError(
            "spec.model.uri: a text model needs its fast tokenizer (tokenizer.json) in the model source; "
            "save it with tokenizer.save_pretrained()"
        )
    if ms.spec.serving.max_batch_size < 1:
        raise UserError("spec.serving.maxBatchSize: a text model is served as a batching ensemble; set it to 1 or more")
    kind, vocabulary = check_tokenizer(info.tokenizer, info.pad_id)
    max_length = info.max_length or ms.spec.model.max_sequence_length or DEFAULT_MAX_LENGTH
    roles = encoder_roles(encoder)
    dtypes: dict[str, str] = {role: spec.dtype for role, spec in zip(roles, encoder.inputs, strict=True)}
    # What the tokenizer makes, as {its output: ensemble tensor}: the encoder's inputs (the ensemble tensors are
    # named as the encoder names them), plus the mask a token classifier's labels step reads.
    made = dict(roles)
    if ms.spec.model.task == "token-classification":
        made.setdefault("attention_mask", "attention_mask")
    tokenizer = _tokenizer_model(ms, info, made, dtypes, max_length)
    _write_python_model(
        staging / tokenizer_name(ms), tokenizer, template(TOKENIZER_TEMPLATE), {TOKENIZER_FILE: info.tokenizer}
    )
    steps = [
        EnsembleStep(tokenizer_name(ms), {TEXT_INPUT: TEXT_INPUT}, made),
        EnsembleStep(
            encoder_name(ms), {name: name for name in roles.values()}, {s.name: s.name for s in encoder.outputs}
        ),
    ]
    outputs: list[TensorSpec | ConfigTensor] = list(encoder.outputs)
    notes = [
        f"text ensemble {ms.name}: text -> {tokenizer_name(ms)} ({kind}, {vocabulary} tokens, truncated to "
        f"{max_length}, padded per batch to a multiple of {PAD_MULTIPLE}) -> {encoder_name(ms)}"
    ]
    if ms.spec.model.task in CLASSIFIERS and info.labels:
        logits = _logits(encoder)
        config, label = _labels_model(ms, info, logits)
        _write_python_model(staging / labels_name(ms), config, template(LABELS_TEMPLATE), {})
        mapping = {"logits": logits.name}
        if ms.spec.model.task == "token-classification":
            mapping["attention_mask"] = made["attention_mask"]
        steps.append(EnsembleStep(labels_name(ms), mapping, {LABEL_OUTPUT: LABEL_OUTPUT}))
        outputs.append(label)
        notes[0] += f" -> {labels_name(ms)} ({len(info.labels)} labels)"
    ensemble = build_ensemble_config(
        ms.name,
        max_batch_size=ms.spec.serving.max_batch_size,
        inputs=[ConfigTensor(TEXT_INPUT, "BYTES", [1])],
        outputs=outputs,
        steps=steps,
    )
    (staging / ms.name / "1").mkdir(parents=True, exist_ok=True)  # Triton wants a (empty) version folder
    write_config(ensemble, staging / ms.name / CONFIG_FILE)
    return notes
