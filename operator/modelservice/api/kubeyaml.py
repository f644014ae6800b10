"""YAML read (and written) the way kubectl reads it.

kubectl turns YAML into JSON with sigs.k8s.io/yaml: go-yaml v2 resolves each plain scalar with YAML 1.1's rules,
and the tree is then marshalled to JSON. PyYAML's ``safe_load`` differs in ways that change what a ModelService
says: ``y``/``Y``/``n``/``N`` stay strings (kubectl: booleans), ``1e3``/``0o17``/``08`` stay strings (kubectl:
numbers), ``1:30`` is a sexagesimal int and ``2024-01-01`` a date (kubectl: strings). Here:

- a plain scalar resolves exactly as go-yaml v2 resolves it (``resolve_plain``): booleans ``y Y yes Yes YES true
  True TRUE on On ON`` and ``n N no No NO false False FALSE off Off OFF``; nulls ``~ null Null NULL`` and the
  empty scalar; integers as Go's ``strconv.ParseInt(s, 0, 64)`` reads them after removing ``_`` (``0x``, ``0o``,
  ``0b``, a leading ``0`` for octal); floats by go-yaml's float pattern and ``.inf``/``.nan``; everything else,
  timestamps included, is a string;
- the JSON step is applied: a whole float becomes an integer (JSON ``1000``, as Go writes ``1e3``), ``.inf`` and
  ``.nan`` are refused (JSON has no such numbers), boolean and integer mapping keys become the strings
  ``"true"``/``"false"``/``"12"``; other non-string keys are refused;
- unknown tags are ignored (the value is read as its node kind), ``!!binary`` becomes the decoded text.

Documents come back with the source text of every plain scalar that did not resolve to a string (``scalars``), so
an error can say "got the YAML boolean n" rather than "got False". ``dump``/``dump_all`` quote every string that
either kubectl or PyYAML would read as something else, so what this package writes reads back the same in both.

Left as PyYAML does it: duplicate keys (the last one wins, as in go-yaml v2's non-strict decoding) and the order in
which merge keys (``<<``) and explicit keys override each other (explicit keys win).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[str | int, ...]

NULL_TAG = "tag:yaml.org,2002:null"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"
BINARY_TAG = "tag:yaml.org,2002:binary"
# What the dumper answers for a string that kubectl and PyYAML would read differently: it matches no tag, so the
# emitter quotes the string.
_AMBIGUOUS_TAG = "tag:modelservice.dev,2025:ambiguous"

# go-yaml v2 resolve.go: the values looked up whole.
BOOLEANS: dict[str, bool] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
}
NULLS = frozenset(("", "~", "null", "Null", "NULL"))
SPECIAL_FLOATS: dict[str, float] = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")  # strconv.ParseFloat of a scalar starting with "."
_GO_INT = re.compile(r"([-+]?)(0[bB][01]+|0[oO][0-7]+|0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1
# Go's encoding/json writes a float64 without an exponent (so the API server reads an integer) below this.
_JSON_PLAIN_FLOAT_LIMIT = 1e21
_NON_STRING = frozenset((NULL_TAG, BOOL_TAG, INT_TAG, FLOAT_TAG))
_MAX_NODES = 1_000_000  # alias expansion guard ("billion laughs"), as go-yaml v2 limits aliasing


def _go_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 0, 64)``, then ``ParseUint``, as go-yaml v2 tries them (``_`` already removed)."""
    match = _GO_INT.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    prefix = digits[:2].lower()
    base = {"0b": 2, "0o": 8, "0x": 16}.get(prefix)
    if base is not None:
        value = int(digits[2:], base)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(digits, 8)
    else:
        value = int(digits, 10)
    if sign == "-":
        value = -value
    if _INT64[0] <= value <= _INT64[1] or (not sign and 0 <= value <= _UINT64_MAX):
        return value
    return None


def _go_float(text: str) -> float | None:
    """``strconv.ParseFloat(text, 64)`` for the forms go-yaml v2 hands it; out of range (±Inf) is an error there."""
    value = float(text)
    return None if math.isinf(value) else value


def resolve_plain(text: str) -> str:
    """The tag go-yaml v2 gives an untagged plain scalar (its ``resolve("", in)``)."""
    hint = text[:1]
    if text in NULLS:
        return NULL_TAG
    if hint == "<":
        return MERGE_TAG if text == "<<" else STR_TAG
    if not hint or hint not in "+-0123456789yYnNtTfFoO~.":
        return STR_TAG
    if text in BOOLEANS:
        return BOOL_TAG
    if text in SPECIAL_FLOATS:
        return FLOAT_TAG
    if hint == ".":
        return FLOAT_TAG if _DOT_FLOAT.fullmatch(text) and _go_float(text) is not None else STR_TAG
    if hint in "+-0123456789":
        plain = text.replace("_", "")
        if _go_int(plain) is not None:
            return INT_TAG
        if _YAML_STYLE_FLOAT.fullmatch(plain) and _go_float(plain) is not None:
            return FLOAT_TAG
    return STR_TAG


# ------------------------------------------------------------------------------------------------ reading


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's parser and composer with go-yaml v2's resolution of plain scalars."""

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            return resolve_plain(value)
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


@dataclass
class Document:
    """One YAML document as kubectl would send it, and the text of its non-string plain scalars by path."""

    value: Any
    scalars: dict[Path, str] = field(default_factory=dict)

    def source_text(self, path: Iterable[str | int]) -> str | None:
        """How the scalar at ``path`` was written, when it was a plain scalar that is not a string."""
        return self.scalars.get(tuple(path))


def _error(problem: str, node: Node) -> ConstructorError:
    return ConstructorError(None, None, problem, node.start_mark)


class _Builder:
    """Builds the JSON-like value of a composed node, recording where non-string plain scalars came from."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.scalars: dict[Path, str] = {}
        self.active: set[int] = set()
        self.count = 0

    def build(self, node: Node, path: Path) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _error(f"more than {_MAX_NODES} values after expanding aliases", node)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise _error("an alias refers to a collection that contains it", node)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            assert isinstance(node, MappingNode)
            self.loader.flatten_mapping(node)
            mapping: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.key(key_node)
                mapping[key] = self.build(value_node, (*path, key))
            return mapping
        finally:
            self.active.discard(id(node))

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise _error("a mapping key must be a scalar", node)
        value = self.scalar(node, None)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if not isinstance(value, str):
            raise _error(f"mapping key {node.value!r} is not a string, a boolean or an integer (quote it)", node)
        return value

    def scalar(self, node: ScalarNode, path: Path | None) -> Any:
        text: str = node.value
        value = self._scalar_value(node)
        if path is not None and node.tag in _NON_STRING and not node.style:
            self.scalars[path] = text
        return value

    def _scalar_value(self, node: ScalarNode) -> Any:
        tag, text = node.tag, node.value
        if tag == NULL_TAG:
            return None
        if tag == BOOL_TAG:
            if text not in BOOLEANS:
                raise _error(f"cannot read {text!r} as a boolean", node)
            return BOOLEANS[text]
        if tag == INT_TAG:
            number = _go_int(text.replace("_", ""))
            if number is None:
                raise _error(f"cannot read {text!r} as an integer", node)
            return number
        if tag == FLOAT_TAG:
            return self._float(node)
        if tag == BINARY_TAG:
            try:
                return base64.b64decode("".join(text.split()), validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                raise _error("!!binary value is not valid base64", node) from None
        return text  # !!str, !!timestamp (a string, as go-yaml v2 decodes it) and unknown tags

    def _float(self, node: ScalarNode) -> float | int:
        text = node.value
        if text in SPECIAL_FLOATS:
            raise _error(f"{text} is not a JSON number (kubectl refuses it)", node)
        number = _go_int(text.replace("_", ""))
        value: float | None = float(number) if number is not None else None
        if value is None and _YAML_STYLE_FLOAT.fullmatch(text.replace("_", "")):
            value = _go_float(text.replace("_", ""))
        if value is None and _DOT_FLOAT.fullmatch(text):
            value = _go_float(text)
        if value is None:
            raise _error(f"cannot read {text!r} as a number", node)
        # encoding/json writes a whole float64 below 1e21 without a fraction: the API server reads an integer.
        if value.is_integer() and abs(value) < _JSON_PLAIN_FLOAT_LIMIT:
            return int(value)
        return value


def load_all(text: str) -> list[Document]:
    """Every non-empty document of a YAML stream, as kubectl reads it. Raises ``yaml.YAMLError``."""
    loader = _Loader(text)
    documents: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            builder = _Builder(loader)
            try:
                value = builder.build(node, ())
            except RecursionError:
                raise _error("the document nests too deeply", node) from None
            if value is not None:
                documents.append(Document(value, builder.scalars))
    finally:
        loader.dispose()
    return documents


def load(text: str) -> Any:
    """The single document of ``text`` as kubectl reads it (None when empty)."""
    documents = load_all(text)
    if len(documents) > 1:
        raise yaml.YAMLError(f"expected one YAML document, found {len(documents)}")
    return documents[0].value if documents else None


# ------------------------------------------------------------------------------------------------ writing


class Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """PyYAML's safe dumper that also quotes the strings go-yaml v2 reads as something else (``n``, ``0o17``)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # no anchors: a value written twice is written out twice

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        tag: str = super().resolve(kind, value, implicit)
        if kind is ScalarNode and implicit[0] and resolve_plain(value) != tag:
            return _AMBIGUOUS_TAG
        return tag


def dump(data: Any, **options: Any) -> str:
    """``yaml.safe_dump`` whose output kubectl and PyYAML read back alike."""
    text: str = yaml.dump(data, Dumper=Dumper, **options)
    return text


def dump_all(documents: Iterable[Any], **options: Any) -> str:
    """``yaml.safe_dump_all`` whose output kubectl and PyYAML read back alike."""
    text: str = yaml.dump_all(documents, Dumper=Dumper, **options)
    return text
