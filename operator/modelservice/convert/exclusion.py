"""Selective exclusion: when an int8 variant misses the accuracy budget, leave its most sensitive nodes in float.

1. Rank: convert/sensitivity.py simulates the all-int8 model node by node and scores what quantizing each
   node alone (MatMul, Attention, the embeddings) does to the outputs (1 - min cosine to the original on the
   verification inputs the all-int8 model serves worst).
2. Predict: for k = 1, 2, ... (at most half the nodes), simulate "every node but the k worst" and check the
   simulated outputs against the spec; the first k that passes is the candidate.
3. Build and verify the real model without those k nodes; if it still fails (the simulation is close, not
   exact), go on from k + 1, up to ``MAX_BUILDS`` real builds.

What was excluded, and the ranking behind it, goes into the variant's notes. The per-node simulation costs one
model build and one short run per node, instead of one quantization per node (minutes on a BERT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelservice.convert.sensitivity import Simulation, build_simulation, damage, rank
from modelservice.convert.tensors import Array

MAX_BUILDS = 3
RANK_SAMPLES = 16  # the worst-served samples the ranking runs on (see rank_nodes)
MAX_FRACTION = 0.5  # beyond half the quantized nodes in float, int8 is not worth it
SHOWN = 4  # nodes named in the notes


@dataclass
class Ranking:
    """Weighted nodes, worst first, with the simulated damage of quantizing each alone, and the simulation."""

    nodes: list[tuple[str, float]]
    simulation: Simulation
    all_damage: float  # simulated damage with every node quantized

    def worst(self, count: int) -> tuple[str, ...]:
        return tuple(name for name, _ in self.nodes[:count])


def rank_nodes(
    float_model: Path, quantized_model: Path, workdir: Path, inputs: dict[str, Array], reference: list[Array]
) -> Ranking | None:
    """Rank the nodes of ``quantized_model`` (dynamic int8 of ``float_model``, every node quantized); None when
    none can be simulated. The ranking runs on the ``RANK_SAMPLES`` samples the all-int8 simulation serves worst:
    the budget is a minimum over samples, so those decide (and a quarter of the runs cost a quarter)."""
    simulation = build_simulation(float_model, quantized_model, workdir / "sensitivity.onnx")
    if simulation is None:
        return None
    every = simulation.run(inputs, set(simulation.nodes))
    worst = np.argsort(cosines(reference[0], every[0]))[:RANK_SAMPLES]
    subset = {name: array[worst] for name, array in inputs.items()}
    ranked = rank(simulation, subset, [array[worst] for array in reference])
    return Ranking(ranked, simulation, damage(reference, every))


def cosines(reference: Array, candidate: Array) -> Array:
    """Per-sample cosine similarity (each sample flattened)."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-300)
    return np.asarray((ref * out).sum(axis=1) / norms)


@dataclass
class Outcome:
    """Where the search ended: ``excluded`` is the set of the last build (passed or not)."""

    excluded: tuple[str, ...] = ()
    passed: bool = False
    builds: int = 0
    notes: list[str] = field(default_factory=list)


def search(
    ranking: Ranking,
    inputs: dict[str, Array],
    passes: Callable[[list[Array]], bool],
    build_and_verify: Callable[[tuple[str, ...]], bool],
    *,
    start: int = 1,
    max_builds: int = MAX_BUILDS,
) -> Outcome:
    """Exclude the fewest worst-ranked nodes whose simulation ``passes`` and whose real build passes
    ``build_and_verify`` (see module); k runs from ``start``."""
    outcome = Outcome()
    nodes = [name for name, _ in ranking.nodes]
    limit = max(1, int(len(nodes) * MAX_FRACTION))
    every = set(nodes)
    k = max(1, start)
    while k <= limit and outcome.builds < max_builds:
        if not passes(ranking.simulation.run(inputs, every - set(nodes[:k]))):
            k += 1
            continue
        outcome.excluded = ranking.worst(k)
        outcome.builds += 1
        if build_and_verify(outcome.excluded):
            outcome.passed = True
            break
        k += 1
    if not outcome.builds:
        outcome.notes.append(
            f"no exclusion of up to {limit} of {len(nodes)} quantized nodes passes in simulation: int8 gave up"
        )
    return outcome


def describe(ranking: Ranking, excluded: tuple[str, ...], total: int) -> str:
    """The report's account of an exclusion."""
    scores = dict(ranking.nodes)
    named = ", ".join(f"{name} ({1 - scores[name]:.4f})" for name in excluded[:SHOWN])
    more = f" and {len(excluded) - SHOWN} more" if len(excluded) > SHOWN else ""
    return (
        f"left {len(excluded)} of {total} quantized nodes in float, the most sensitive by simulated per-node "
        f"error (min cosine to the original with only that node in int8): {named}{more}; simulated min cosine "
        f"with every node in int8: {1 - ranking.all_damage:.4f}"
    )
