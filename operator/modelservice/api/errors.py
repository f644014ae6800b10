"""Turn validation failures into one line per problem that names the file and the field path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

_FIELD_PREFIX = re.compile(r"^(?:Value error, )?([a-z][A-Za-z0-9]*): (.*)$", re.DOTALL)
# Type errors, said in the user's terms: what the field takes, and what the YAML gave it.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean (true or false)",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}

ScalarTexts = Mapping[tuple[str | int, ...], str]


@dataclass(frozen=True)
class FieldProblem:
    """One problem: ``path`` is a dotted camelCase field path such as ``spec.autoscaling.minReplicas``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UserError(Exception):
    """An error the user can fix (bad input, missing file, unsupported request): the CLI prints
    ``str(error)`` as one line per problem and exits non-zero, without a traceback."""

    exit_code = 1


class SpecError(UserError):
    """A user error in a ModelService (or a file naming one). ``str()`` is one line per problem."""

    def __init__(self, source: str, problems: list[FieldProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.lines()[0] if problems else source)

    def lines(self) -> list[str]:
        prefix = f"{self.source}: " if self.source else ""
        return [f"{prefix}{problem}" for problem in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _join(parts: list[str | int]) -> str:
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _given(value: Any, text: str | None) -> str:
    """What a document gave a field, as the YAML said it (``text``: the plain scalar, when known)."""
    if isinstance(value, bool):
        return f"the YAML boolean {text or str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {text or value}"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def _type_message(kind: str, message: str, value: Any, text: str | None) -> str:
    quote = " (quote it)" if isinstance(value, bool | int | float) else ""
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        return f"expected {expected}, got {_given(value, text)}{quote if expected == 'a string' else ''}"
    if kind == "literal_error" and not isinstance(value, str):
        return f"expected {message.removeprefix('Input should be ')}, got {_given(value, text)}{quote}"
    return message


def problems_from(error: ValidationError, root: str = "", scalars: ScalarTexts | None = None) -> list[FieldProblem]:
    """Field problems from a pydantic error; model-level rules name their field as ``field: message``.

    ``scalars`` maps a document path to the text of the plain YAML scalar there (``kubeyaml.Document.scalars``),
    so a type error can say "got the YAML boolean n" where the user wrote ``n``.
    """
    problems: list[FieldProblem] = []
    for item in error.errors(include_url=False):
        loc: list[str | int] = [root] if root else []
        # Union/tagged branches add type names to loc; keep real field names and list indexes.
        loc += [p for p in item["loc"] if isinstance(p, int) or not p[:1].isupper()]
        message = str(item["msg"])
        match = _FIELD_PREFIX.match(message)
        if item["type"] == "value_error" and match:
            loc.append(match.group(1))
            message = match.group(2)
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        else:
            text = (scalars or {}).get(tuple(item["loc"]))
            message = _type_message(item["type"], message, item.get("input"), text)
        problems.append(FieldProblem(_join(loc), message))
    return problems
