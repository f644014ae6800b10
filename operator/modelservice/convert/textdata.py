"""Verification data of text models: ``.txt`` (one text per line) or ``.jsonl`` (``{"text": ..., "label": ...}``,
the label a class index or an id2label name), tokenized with the model's own tokenizer.json exactly as the
served tokenizer step does (truncated to the model's maximum length, padded to the longest text). Without a
dataUri, the verification runs on sentences shipped with the package (sentences.txt: everyday English, 5 to 20
words), not on random token ids, which no real client sends."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from modelservice.api.errors import UserError
from modelservice.convert.load import TransformerInfo
from modelservice.convert.tensors import Array

TEXT_SUFFIXES = (".txt", ".jsonl")


def builtin_sentences() -> list[str]:
    text = resources.files("modelservice.convert").joinpath("sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_rows(path: Path, where: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a .txt (``{"text": line}``, blank lines skipped) or .jsonl file (objects with a
    "text" string); ``where`` starts each error line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: not a readable UTF-8 text file ({type(exc).__name__})") from None
    if path.suffix not in TEXT_SUFFIXES:
        raise UserError(f'{where}: a text model takes .txt (one text a line) or .jsonl ({{"text": ...}})')
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            rows.append((number, {"text": line.strip()}))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise UserError(f'{where}:{number}: expected an object with a "text" string')
        rows.append((number, row))
    if not rows:
        raise UserError(f"{where}: no text")
    return rows


def load_texts(path: Path, info: TransformerInfo, *, field: str, samples: int) -> tuple[list[str], Array | None]:
    """Texts and (when every row has one) label indices from ``path``."""
    where = f"{field}: {path.name}"
    rows = read_rows(path, where)[:samples]
    texts = [row["text"] for _, row in rows]
    labels = [_label(row.get("label"), info, f"{where}:{number}") for number, row in rows]
    if all(label is None for label in labels):
        return texts, None
    if any(label is None for label in labels):
        raise UserError(f"{field}: {path.name}: some rows have a label and some do not")
    return texts, np.asarray(labels, dtype=np.int64)


def _label(value: object, info: TransformerInfo, where: str) -> int | None:
    if value is None:
        return None
    if info.task != "text-classification":
        raise UserError(f"{where}: labels are only used for task text-classification")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{where}: label must be a class index or one of {', '.join(info.labels)}")
    if isinstance(value, str):
        if value not in info.labels:
            raise UserError(f"{where}: label {value!r} is not one of the model's labels ({', '.join(info.labels)})")
        return info.labels.index(value)
    if not 0 <= value < len(info.labels):
        raise UserError(f"{where}: label {value} is outside 0..{len(info.labels) - 1}")
    return value


def tokenize(texts: list[str], info: TransformerInfo, names: list[str]) -> dict[str, Array]:
    """The encoder's inputs (``names``: input_ids, attention_mask[, token_type_ids]) for ``texts``, as int64."""
    from tokenizers import Tokenizer

    assert info.tokenizer is not None
    tokenizer = Tokenizer.from_file(str(info.tokenizer))
    if info.max_length:
        tokenizer.enable_truncation(info.max_length)
    tokenizer.enable_padding(pad_id=info.pad_id)
    encoded = tokenizer.encode_batch(texts)
    columns = {
        "input_ids": [e.ids for e in encoded],
        "attention_mask": [e.attention_mask for e in encoded],
        "token_type_ids": [e.type_ids for e in encoded],
    }
    missing = [n for n in names if n not in columns]
    if missing:
        known = ", ".join(columns)
        raise UserError(f"spec.model.inputs: a text model's inputs are among {known}; not {', '.join(missing)}")
    return {name: np.asarray(columns[name], dtype=np.int64) for name in names}
