"""``format: huggingface``: load a checkpoint folder in the ``save_pretrained`` layout (config.json with
``model.safetensors``, or sharded ``model-0000N-of-0000M.safetensors`` with their index) or the
sentence-transformers layout (modules.json naming a Transformer, a Pooling and optionally a Normalize module).

What ``spec.model.task`` builds (architectures: any ``model_type`` that ``transformers`` knows for the task's
Auto class; tested on BERT-family encoders and ViT):

| task | transformers class | output |
| --- | --- | --- |
| sentence-embedding | AutoModel + pooling (+ L2 normalisation) | embedding [hidden] |
| feature-extraction | AutoModel | last_hidden_state [-1, hidden] |
| text-classification | AutoModelForSequenceClassification | logits [labels] |
| token-classification | AutoModelForTokenClassification | logits [-1, labels] |
| image-classification | AutoModelForImageClassification | logits [labels] |

Text tasks take input_ids, attention_mask and (when the model has token types) token_type_ids, INT64 [-1];
image-classification takes pixel_values [channels, height, width].

Safety: nothing is downloaded (``local_files_only``), no code from the folder runs (``trust_remote_code`` stays
off; a config that needs it is refused), weights come from safetensors, and a ``pytorch_model.bin`` is first
checked with ``torch.load(weights_only=True)`` (which refuses pickles that would run code). Sharded indexes may
not name files outside the folder.

Loading follows ``from_pretrained``: weights the current model class does not keep (such as the
``embeddings.position_ids`` buffer older transformers saved) are ignored and listed in the report; weights the
model needs but the checkpoint lacks, or of the wrong shape, stop the conversion (they would be random).
Attention runs in the eager implementation, whose graph ONNX Runtime's transformer optimizer can fuse.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelservice.api.errors import UserError
from modelservice.api.models import TEXT_TASKS, ModelSource, TensorSpec
from modelservice.convert.load import LoadedModel, TransformerInfo, load_state_dict

FIELD = "spec.model.uri"
POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


@dataclass(frozen=True)
class Layout:
    """What the folder holds."""

    model_dir: Path  # config.json and the weights
    sentence_transformers: bool
    pooling: str  # mean, cls, max, mean_sqrt_len (sentence-embedding)
    normalize: bool
    st_max_length: int | None


def load_huggingface(source: ModelSource, path: Path) -> LoadedModel:
    """Load the checkpoint folder ``path`` for ``source.task`` (see module docs)."""
    assert source.task is not None
    if not path.is_dir():
        raise UserError(f"{FIELD}: format huggingface needs a folder (or an archive of one); {path.name} is a file")
    layout = _layout(path)
    config = _read_config(layout.model_dir)
    weights = _weights(layout.model_dir)
    notes: list[str] = []
    model = _from_pretrained(source.task, layout.model_dir, config, weights, notes)
    text = source.task in TEXT_TASKS
    tokenizer = _tokenizer(layout.model_dir, path, config) if text else None
    info = TransformerInfo(
        task=source.task,
        model_type=str(config["model_type"]),
        # From the loaded config: its attribute_map reads DistilBERT's n_heads/dim/n_layers under these names.
        num_heads=int(getattr(model.config, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(model.config, "hidden_size", 0) or 0),
        num_layers=int(getattr(model.config, "num_hidden_layers", 0) or 0),
        tokenizer=tokenizer,
        max_length=_max_length(source, layout, config, tokenizer) if text else None,
        labels=_labels(model.config) if source.task.endswith("classification") else (),
        pad_id=_pad_id(tokenizer, config) if tokenizer else 0,
    )
    if layout.sentence_transformers:
        notes.append(
            f"sentence-transformers layout: {layout.pooling} pooling{', L2-normalised' if layout.normalize else ''}"
        )
    elif source.task == "sentence-embedding":
        notes.append("no modules.json: sentence-embedding uses mean pooling over the attention mask, not normalised")
    module, inputs, outputs = _wrap(source, model, layout, info)
    module.eval()
    loaded = LoadedModel("huggingface", weights[0], inputs, outputs, module, notes, info)
    return loaded


# ------------------------------------------------------------------------------------------------ layout


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{FIELD}: {what}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def _inside(root: Path, relative: str, what: str) -> Path:
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UserError(f"{FIELD}: {what}: {relative!r} points outside the model folder")
    return resolved


def _layout(path: Path) -> Layout:
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return Layout(path, False, "mean", False, None)
    modules = _read_json(modules_file, "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise UserError(f"{FIELD}: modules.json: expected a list of modules (sentence-transformers layout)")
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: str(m.get("path", "")) for m in modules}
    if "Transformer" not in kinds:
        raise UserError(f"{FIELD}: modules.json: no sentence_transformers.models.Transformer module")
    unknown = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if unknown:
        raise UserError(f"{FIELD}: modules.json: unsupported sentence-transformers module(s) {', '.join(unknown)}")
    model_dir = _inside(path, kinds["Transformer"], "modules.json")
    pooling = "cls"
    if "Pooling" in kinds:
        pooling_file = _inside(path, kinds["Pooling"], "modules.json") / "config.json"
        pooling_config = _read_json(pooling_file, f"{kinds['Pooling']}/config.json")
        chosen = [mode for key, mode in POOLING_MODES.items() if pooling_config.get(key)]
        others = [k for k, v in pooling_config.items() if k.startswith("pooling_mode") and v and k not in POOLING_MODES]
        if len(chosen) != 1 or others:
            raise UserError(
                f"{FIELD}: {kinds['Pooling']}/config.json: one of {', '.join(POOLING_MODES)} must be set "
                f"(found {', '.join(chosen + others) or 'none'})"
            )
        pooling = chosen[0]
    st_config = path / "sentence_bert_config.json"
    st_max = _read_json(st_config, "sentence_bert_config.json").get("max_seq_length") if st_config.is_file() else None
    return Layout(model_dir, True, pooling, "Normalize" in kinds, int(st_max) if st_max else None)


def _read_config(folder: Path) -> dict[str, Any]:
    from transformers import CONFIG_MAPPING

    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{FIELD}: no config.json in the model folder (save_pretrained layout expected)")
    config = _read_json(path, "config.json")
    if not isinstance(config, dict):
        raise UserError(f"{FIELD}: config.json: expected a JSON object, found {type(config).__name__}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise UserError(
            f"{FIELD}: config.json: model_type {model_type!r} is not an architecture transformers "
            f"{_transformers_version()} knows (custom code is never run)"
        )
    return config


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def _weights(folder: Path) -> list[Path]:
    """The weight files, safetensors first; a pickle is checked with weights_only before transformers sees it."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index, index.name).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{FIELD}: {index.name}: no weight_map")
        shards = sorted({_inside(folder, str(name), index.name) for name in weight_map.values()})
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise UserError(f"{FIELD}: {index.name} names shard(s) that are not in the folder: {', '.join(missing)}")
        return shards
    pickled = folder / "pytorch_model.bin"
    if pickled.is_file():
        load_state_dict(pickled, field=FIELD)  # refuses a pickle that would run code
        return [pickled]
    raise UserError(
        f"{FIELD}: no weights: expected model.safetensors, sharded model-*.safetensors with "
        "model.safetensors.index.json, or pytorch_model.bin"
    )


# ----------------------------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers reports loading through logging, warnings and progress bars; the report says it once."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _auto_class(task: str) -> Any:
    import transformers

    return {
        "sentence-embedding": transformers.AutoModel,
        "feature-extraction": transformers.AutoModel,
        "text-classification": transformers.AutoModelForSequenceClassification,
        "token-classification": transformers.AutoModelForTokenClassification,
        "image-classification": transformers.AutoModelForImageClassification,
    }[task]


def _from_pretrained(task: str, folder: Path, config: dict[str, Any], weights: list[Path], notes: list[str]) -> Any:
    import torch

    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": False,
        "output_loading_info": True,
        "dtype": torch.float32,
        "use_safetensors": weights[0].suffix == ".safetensors",
    }
    try:
        with _quiet():
            try:
                model, info = _auto_class(task).from_pretrained(str(folder), attn_implementation="eager", **kwargs)
            except (ValueError, TypeError) as exc:
                if "attn_implementation" not in str(exc) and "eager" not in str(exc):
                    raise
                model, info = _auto_class(task).from_pretrained(str(folder), **kwargs)
    except UserError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{FIELD}: transformers cannot build a {config['model_type']} model for task {task} from this folder: "
            f"{type(exc).__name__}: {first}"
        ) from None
    missing = list(info.get("missing_keys") or [])
    mismatched = [str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in info.get("mismatched_keys") or []]
    unexpected = sorted(info.get("unexpected_keys") or [])
    if missing or mismatched:
        detail = "; ".join(
            part
            for part in (
                f"missing {_few(sorted(missing))}" if missing else "",
                f"wrong shape {_few(sorted(mismatched))}" if mismatched else "",
            )
            if part
        )
        hint = " (the checkpoint has no head for this task?)" if task.endswith("classification") else ""
        what = f"a {config['model_type']} model for task {task}"
        raise UserError(f"{FIELD}: the weights do not fit {what}: {detail}{hint}")
    ignored = sorted(set(unexpected) | _unused_keys(model, weights))
    if ignored:
        notes.append(f"ignored {len(ignored)} checkpoint tensor(s) the model does not use: {_few(ignored)}")
    return model.eval()


def _unused_keys(model: Any, weights: list[Path]) -> set[str]:
    """Checkpoint tensors that no parameter or persistent buffer of ``model`` takes (transformers drops some,
    such as the stale ``position_ids`` buffer, without listing them); read from the safetensors headers."""
    from safetensors import safe_open

    if weights[0].suffix != ".safetensors":
        return set()
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    wanted = {k.removeprefix(prefix) for k in model.state_dict()}
    found: set[str] = set()
    for shard in weights:
        with safe_open(str(shard), framework="pt") as handle:
            found.update(handle.keys())
    return {k for k in found if k.removeprefix(prefix) not in wanted}


def _few(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _tokenizer(model_dir: Path, root: Path, config: dict[str, Any]) -> Path:
    from modelservice.convert.textserving import check_tokenizer

    path = next((p / "tokenizer.json" for p in (model_dir, root) if (p / "tokenizer.json").is_file()), None)
    if path is None:
        raise UserError(
            f"{FIELD}: a text task needs the model's tokenizer.json (the fast tokenizer file save_pretrained writes)"
        )
    vocabulary = config.get("vocab_size")
    check_tokenizer(path, _pad_id(path, config), int(vocabulary) if isinstance(vocabulary, int) else None)
    return path


def _max_length(source: ModelSource, layout: Layout, config: dict[str, Any], tokenizer: Path | None) -> int:
    positions = int(config.get("max_position_embeddings") or 0) or None
    if source.max_sequence_length is not None:
        if positions and source.max_sequence_length > positions:
            raise UserError(
                f"spec.model.maxSequenceLength: {source.max_sequence_length} exceeds the model's "
                f"max_position_embeddings {positions}"
            )
        return source.max_sequence_length
    candidates = [layout.st_max_length]
    if tokenizer is not None and (tokenizer.parent / "tokenizer_config.json").is_file():
        value = _read_json(tokenizer.parent / "tokenizer_config.json", "tokenizer_config.json").get("model_max_length")
        candidates.append(int(value) if isinstance(value, (int, float)) and value < 1_000_000 else None)
    candidates.append(positions)
    chosen = next((c for c in candidates if c), 512)
    return min(chosen, positions) if positions else chosen


def _labels(config: Any) -> tuple[str, ...]:
    id2label = getattr(config, "id2label", None) or {}
    count = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    return tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(count))


def _pad_id(tokenizer: Path, config: dict[str, Any]) -> int:
    from tokenizers import Tokenizer

    try:
        loaded = Tokenizer.from_file(str(tokenizer))
    except Exception:  # not a tokenizer: check_tokenizer says so in one line
        return int(config.get("pad_token_id") or 0)
    if loaded.padding and loaded.padding.get("pad_id") is not None:
        return int(loaded.padding["pad_id"])
    for token in ("[PAD]", "<pad>"):
        found = loaded.token_to_id(token)
        if found is not None:
            return int(found)
    return int(config.get("pad_token_id") or 0)


# ------------------------------------------------------------------------------------------------ wrapping


def _text_inputs(model: Any) -> list[str]:
    import inspect

    parameters = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in parameters and int(getattr(model.config, "type_vocab_size", 0) or 0) > 0:
        names.append("token_type_ids")
    return names


def _wrap(
    source: ModelSource, model: Any, layout: Layout, info: TransformerInfo
) -> tuple[Any, list[TensorSpec], list[TensorSpec]]:
    from modelservice.convert.hfmodules import ImageClassifier, TextModel

    task = info.task
    if task == "image-classification":
        channels = int(getattr(model.config, "num_channels", 3) or 3)
        size = _image_size(model.config, layout.model_dir)
        inputs = [TensorSpec(name="pixel_values", dtype="FP32", shape=[channels, size, size])]
        outputs = [TensorSpec(name="logits", dtype="FP32", shape=[len(info.labels)])]
        module: Any = ImageClassifier.build(model)
    else:
        names = _text_inputs(model)
        inputs = [TensorSpec(name=name, dtype="INT64", shape=[-1]) for name in names]
        name, shape = {
            "sentence-embedding": ("embedding", [info.hidden_size]),
            "feature-extraction": ("last_hidden_state", [-1, info.hidden_size]),
            "text-classification": ("logits", [len(info.labels)]),
            "token-classification": ("logits", [-1, len(info.labels)]),
        }[task]
        outputs = [TensorSpec(name=name, dtype="FP32", shape=shape)]
        module = TextModel.build(model, task, names, layout.pooling, layout.normalize)
    return module, _override(source.inputs, inputs, "inputs"), _override(source.outputs, outputs, "outputs")


def _override(given: list[TensorSpec], inferred: list[TensorSpec], what: str) -> list[TensorSpec]:
    """A user may rename the inferred tensors (and restate their shapes); the count must match."""
    if not given:
        return inferred
    if len(given) != len(inferred):
        expected = ", ".join(t.name for t in inferred)
        raise UserError(
            f"spec.model.{what}: this task has {len(inferred)} {what} ({expected}), the spec lists {len(given)}"
        )
    return list(given)


def _image_size(config: Any, folder: Path) -> int:
    size = getattr(config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    if not size and (folder / "preprocessor_config.json").is_file():
        processor = _read_json(folder / "preprocessor_config.json", "preprocessor_config.json")
        crop = processor.get("crop_size") or processor.get("size") or {}
        size = crop.get("height") or crop.get("shortest_edge") if isinstance(crop, dict) else crop
    if not size:
        raise UserError(
            "spec.model.inputs: the image size is not in config.json or preprocessor_config.json; declare "
            "pixel_values with its shape [channels, height, width]"
        )
    return int(size)
