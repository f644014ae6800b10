"""Read ModelService objects from YAML files, with errors that name the file and field.

Files are read as kubectl reads them (``api.kubeyaml``: ``n`` is a boolean, ``1e3`` a number) and validated as
the API server validates what kubectl sends: strictly typed (a boolean or a number is not a string, a string is not
a number), so ``modelservice validate`` refuses what ``kubectl apply`` would have refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelservice import API_VERSION, KIND
from modelservice.api import kubeyaml
from modelservice.api.errors import FieldProblem, ScalarTexts, SpecError, problems_from
from modelservice.api.models import ModelService


@dataclass(frozen=True)
class LoadedModelService:
    """A ModelService and the file it came from (relative URIs resolve against ``base_dir``)."""

    model: ModelService
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent


def _documents(path: Path) -> list[kubeyaml.Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), [FieldProblem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [FieldProblem("", f"cannot read file: {exc}")]) from None
    try:
        return kubeyaml.load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(str(path), [FieldProblem("", f"invalid YAML{where}: {problem}")]) from None


def parse(document: Any, source: str, scalars: ScalarTexts | None = None) -> ModelService:
    """Validate one document as a ModelService; raise SpecError naming ``source`` and the field.

    Validation is strict, as the API server's: JSON types are not converted into one another. ``scalars`` (the
    YAML text of non-string plain scalars, by path) lets errors quote what the user wrote.
    """
    if not isinstance(document, dict):
        raise SpecError(source, [FieldProblem("", "not a mapping")])
    if document.get("apiVersion") != API_VERSION:
        raise SpecError(source, [FieldProblem("apiVersion", f"must be {API_VERSION}")])
    try:
        return ModelService.model_validate(document, strict=True)
    except ValidationError as exc:
        raise SpecError(source, problems_from(exc, scalars=scalars)) from None


def load_file(path: Path | str) -> list[LoadedModelService]:
    """Every ModelService in a (multi-document) YAML file; documents of other kinds are skipped."""
    path = Path(path)
    found: list[LoadedModelService] = []
    problems: list[str] = []
    documents = [doc for doc in _documents(path) if isinstance(doc.value, dict) and doc.value.get("kind") == KIND]
    for index, document in enumerate(documents):
        source = f"{path} (document {index + 1})" if len(documents) > 1 else str(path)
        try:
            found.append(LoadedModelService(parse(document.value, source, document.scalars), path))
        except SpecError as exc:
            problems += exc.lines()
    if problems:
        raise SpecError("", [FieldProblem("", line) for line in problems])
    if not found:
        raise SpecError(str(path), [FieldProblem("kind", f"no {KIND} ({API_VERSION}) found in the file")])
    return found


def load_one(path: Path | str) -> LoadedModelService:
    """The single ModelService of a file (convert/serve take exactly one)."""
    found = load_file(path)
    if len(found) != 1:
        names = ", ".join(item.model.name for item in found)
        raise SpecError(str(path), [FieldProblem("", f"expected one {KIND}, found {len(found)} ({names})")])
    return found[0]
