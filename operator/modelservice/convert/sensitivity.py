"""Which nodes lose the most to int8 dynamic quantization, found by simulating it in one ONNX model.

Building one quantized model per node to learn what each costs takes minutes on a BERT (about 2 s a build, 25
quantized nodes in 6 layers: measured 187 s). Instead, one float model simulates ONNX Runtime's dynamic int8
arithmetic at every node the quantizer turned into an integer operator, each behind a switch:

- the node's input goes through ``DynamicQuantizeLinear`` + ``DequantizeLinear``: the uint8 per-tensor
  quantization ONNX Runtime applies to activations at run time, computed the same way;
- its weights (also the embedding tables of ``QEmbedLayerNormalization``) are replaced by the dequantized int8
  weights read from the quantized model itself (the quantizer's own scales and rounding, nothing
  re-implemented);
- a boolean graph input ``SELECT`` (one entry per node) picks, per node, the simulated or the float path.

One run per question (on the verification inputs) then answers "what does quantizing exactly this set of nodes
do to the outputs": ``rank`` quantizes one node at a time, and the caller probes "all but the k worst" before
building the real model. The simulation is exact integer arithmetic (int32 accumulation, as VNNI kernels
compute); the real model is always verified afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelservice.convert import external
from modelservice.convert.tensors import Array
from modelservice.convert.verify import Runner, min_cosine, ort_runner, run_batched

SELECT = "modelservice_quantize_select"
_SUFFIXES = ("_quantized", "_scale", "_zero_point")
_DYNAMIC_INPUT = {"MatMul", "Attention"}  # ops whose float input ONNX Runtime quantizes at run time (uint8)


@dataclass
class Simulation:
    """A float model simulating int8 dynamic quantization node by node (see module)."""

    path: Path
    nodes: list[str]  # names of the simulated nodes in the float graph, in graph order
    _runner: Runner | None = field(default=None, repr=False)

    def run(self, inputs: dict[str, Array], quantized: set[str], batch: int = 64) -> list[Array]:
        """The outputs on ``inputs`` with the nodes in ``quantized`` simulated in int8, the others in float."""
        if self._runner is None:
            self._runner = ort_runner(self.path, step="quantize")
        runner = self._runner
        select = np.asarray([name in quantized for name in self.nodes], dtype=bool)
        return run_batched(lambda chunk: runner({**chunk, SELECT: select}), inputs, batch)


def build_simulation(float_model: Path, quantized_model: Path, target: Path) -> Simulation | None:
    """The simulation of ``quantized_model`` (a dynamic int8 model the quantizer made from ``float_model``),
    written to ``target``; None when no node of the float graph can be matched to its quantized weights.

    A node ``N`` is simulated when the quantized model replaced it by ``N_quant`` reading ``W_quantized`` (with
    ``W_scale``, ``W_zero_point``) for one of its float initializers ``W`` (the quantizer's naming): every such
    initializer is switched to its dequantized values, and a MatMul's or Attention's input to its dynamic uint8
    round trip. That covers the embedding
    tables ``QEmbedLayerNormalization`` quantizes too, which a fused BERT's int8 includes by default."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(float_model))
    q_graph = onnx.load(str(quantized_model)).graph
    q_inits = {i.name: i for i in q_graph.initializer}
    q_inputs = {n.name: set(n.input) for n in q_graph.node}  # the quantizer names a node's replacement N_quant
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    nodes: list[str] = []
    added_inits: list[onnx.TensorProto] = []
    added_nodes: list[tuple[int, list[onnx.NodeProto]]] = []
    for position, node in enumerate(graph.node):
        replaced = q_inputs.get(f"{node.name}_quant", set())
        quantized = [
            (slot, name)
            for slot, name in enumerate(node.input)
            if name in weights
            and f"{name}_quantized" in replaced
            and all(f"{name}{suffix}" in q_inits for suffix in _SUFFIXES)
        ]
        if not quantized:
            continue  # left in float by the quantizer: nothing to simulate
        index = len(nodes)
        nodes.append(node.name)
        prefix = f"modelservice_sim_{index}"
        added_inits.append(numpy_helper.from_array(np.asarray(index, dtype=np.int64), f"{prefix}_index"))
        chain = [helper.make_node("Gather", [SELECT, f"{prefix}_index"], [f"{prefix}_on"], axis=0)]
        for slot, name in quantized:
            q, scale, zero = (numpy_helper.to_array(q_inits[f"{name}{suffix}"]) for suffix in _SUFFIXES)
            added_inits.append(numpy_helper.from_array(_dequantize(q, scale, zero), f"{prefix}_{slot}_dequantized"))
            chain.append(
                helper.make_node("Where", [f"{prefix}_on", f"{prefix}_{slot}_dequantized", name], [f"{prefix}_{slot}"])
            )
            node.input[slot] = f"{prefix}_{slot}"
        if node.op_type in _DYNAMIC_INPUT:
            activation = node.input[0]
            chain += [
                helper.make_node("DynamicQuantizeLinear", [activation], [f"{prefix}_q", f"{prefix}_s", f"{prefix}_z"]),
                helper.make_node("DequantizeLinear", [f"{prefix}_q", f"{prefix}_s", f"{prefix}_z"], [f"{prefix}_xd"]),
                helper.make_node("Where", [f"{prefix}_on", f"{prefix}_xd", activation], [f"{prefix}_x"]),
            ]
            node.input[0] = f"{prefix}_x"
        added_nodes.append((position, chain))
    if not nodes:
        return None
    for position, chain in reversed(added_nodes):  # keep the graph topologically sorted
        for offset, new in enumerate(chain):
            graph.node.insert(position + offset, new)
    graph.initializer.extend(added_inits)
    graph.input.append(helper.make_tensor_value_info(SELECT, TensorProto.BOOL, [len(nodes)]))
    external.save_model(model, target)
    return Simulation(target, nodes)


def _dequantize(q: Array, scale: Array, zero: Array) -> Array:
    """Per-tensor or per-output-channel (the last axis of a [in, out] weight) dequantization."""
    if scale.size > 1:  # per channel: MatMul/Attention weights are [in, out], channels on the last axis
        if q.shape[-1] != scale.size:
            raise ValueError(f"per-channel scales of size {scale.size} do not match a weight of shape {q.shape}")
        scale, zero = scale.reshape(1, -1), zero.reshape(1, -1)
    return np.asarray((q.astype(np.float32) - zero.astype(np.float32)) * scale, dtype=np.float32)


def damage(reference: list[Array], outputs: list[Array]) -> float:
    """How far ``outputs`` are from ``reference``: 1 - the minimum per-sample cosine similarity of the first
    output (0 for identical; continuous, unlike a count of changed top-1 decisions)."""
    return 1.0 - min_cosine(reference[0], outputs[0])


def rank(simulation: Simulation, inputs: dict[str, Array], reference: list[Array]) -> list[tuple[str, float]]:
    """Every simulated node with the damage of quantizing it alone, worst first."""
    scores = [(name, damage(reference, simulation.run(inputs, {name}))) for name in simulation.nodes]
    return sorted(scores, key=lambda item: -item[1])
