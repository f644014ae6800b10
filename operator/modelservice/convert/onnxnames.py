"""Give an exported ONNX graph the served tensor names without colliding with the names inside it.

Exporters name internal values after modules and operators (``embedding``, ``logits``, ``attention_mask``...),
so asking the exporter for an output called ``embedding`` can write a graph with two definitions of one name,
which ONNX Runtime refuses. The model is exported with placeholder names (``PLACEHOLDER`` + index); then every
value already called like a served name is renamed to a fresh name, and the placeholders take the served names.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PLACEHOLDER = "modelservice_io_"


def placeholders(count: int, kind: str) -> list[str]:
    return [f"{PLACEHOLDER}{kind}{i}" for i in range(count)]


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph (If/Loop/Scan bodies) below it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def value_names(graph: Any) -> set[str]:
    names: set[str] = set()
    for g in _graphs(graph):
        names.update(v.name for v in itertools.chain(g.input, g.output, g.value_info))
        names.update(i.name for i in g.initializer)
        for node in g.node:
            names.update(n for n in itertools.chain(node.input, node.output) if n)
    return names


def _apply(graph: Any, mapping: dict[str, str]) -> None:
    for g in _graphs(graph):
        for value in itertools.chain(g.input, g.output, g.value_info, g.initializer):
            value.name = mapping.get(value.name, value.name)
        for node in g.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]


def rename_values(model: Any, mapping: dict[str, str]) -> list[str]:
    """Rename values of ``model`` (a ModelProto, in place) by ``mapping``; values that already carry a target
    name are moved aside first. Returns a note per value moved aside."""
    taken = value_names(model.graph)
    targets = set(mapping.values())
    aside: dict[str, str] = {}
    for name in sorted(targets & taken - set(mapping)):
        fresh = next(f"{name}_{i}" for i in itertools.count(1) if f"{name}_{i}" not in taken | targets)
        aside[name] = fresh
        taken.add(fresh)
    if aside:
        _apply(model.graph, aside)
    _apply(model.graph, mapping)
    return [f"internal value {old!r} renamed to {new!r} (a served tensor takes its name)" for old, new in aside.items()]


def rename_file(path: Path, mapping: dict[str, str]) -> list[str]:
    """``rename_values`` on the ONNX file at ``path`` (graph only: external weights stay where they are)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    notes = rename_values(model, mapping)
    onnx.save(model, str(path))
    return notes
