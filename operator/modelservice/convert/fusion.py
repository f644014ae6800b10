"""ONNX Runtime's transformer fusions on an exported encoder: the graph behind the ``*-fused`` variants.

``onnxruntime.transformers.optimizer.optimize_model`` rewrites the subgraphs of a transformer layer into ONNX
Runtime's fused CPU/GPU kernels (com.microsoft operators): the embeddings into ``EmbedLayerNormalization``, Q/K/V
projections + softmax attention into one ``Attention``, residual Add + LayerNormalization into
``SkipLayerNormalization``, bias + GELU into ``BiasGelu``. The fusions are the library's; this module picks the
optimizer's ``model_type`` from ``TransformerInfo.model_type``, passes the head count and hidden size (the
optimizer cannot detect them in these graphs and then skips Attention), and reports what fused.

Covered (``FUSION_MODEL_TYPES``): BERT-family text encoders (bert, roberta, xlm-roberta, camembert, distilbert,
electra) as ``bert``, and ViT as ``vit``. Others (resnet, mpnet, deberta, ...) get no fused variants: the
optimizer either has no pattern for them or fuses only part of a layer (mpnet: no Attention).

Which exporter: the patterns match the TorchScript exporter's graph of eager attention. On a 6-layer BERT
(hidden 384) the TorchScript export fuses to EmbedLayerNormalization x1, Attention x6, SkipLayerNormalization
x12, BiasGelu x6; the dynamo exporter's graph of the same model (torch 2.13, onnxscript's optimizer) only to
SkipLayerNormalization x12 and BiasGelu x6 (no Attention, no EmbedLayerNormalization: its attention mask and
Q/K/V reshapes come out in shapes the patterns do not know, at any ``opt_level``). So convert/export.py exports
models this module covers with the TorchScript exporter (see there). ViT (transformers 5.24) fuses
SkipLayerNormalization and BiasGelu but not Attention, with either exporter; its ``fp32-fused`` variant is
measured like any other and kept only when faster.

The optimizer needs ONNX Runtime's symbolic shape inference (SkipLayerNormalization checks the shapes it adds),
which does not read the ``axes`` input that reductions take from opset 18 on: a ``ReduceL2`` (the L2
normalisation of a sentence-transformers embedding) gets no shape, inference stops with ``TypeError: object of
type 'NoneType' has no len()``, and at opset 18 only BiasGelu fused (Attention x0). ``_shape_inferable`` rewrites
such a ReduceL2 as Sqrt(ReduceSum(x * x)) (ReduceSum it does read) before the optimizer runs, so the requested
opset stays; the arithmetic is the same.

The fused graph holds com.microsoft operators: ONNX Runtime (Triton's onnxruntime backend, CPU or CUDA) runs
them, TensorRT does not, so the tensorrt target never uses it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelservice.convert import external
from modelservice.convert.load import TransformerInfo
from modelservice.convert.quiet import quiet

if TYPE_CHECKING:
    from onnx import ModelProto

FUSION_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "distilbert": "bert",
    "electra": "bert",
    "vit": "vit",
}
# Operators the optimizer creates, in the order the report lists them.
FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


def fusion_model_type(info: TransformerInfo | None) -> str | None:
    """The optimizer's ``model_type`` for a model, or None when fusion does not cover it."""
    if info is None:
        return None
    return FUSION_MODEL_TYPES.get(info.model_type)


@dataclass
class FusionResult:
    """What ``fuse`` did."""

    model_type: str
    fused: dict[str, int] = field(default_factory=dict)  # fused operator -> count in the fused graph
    seconds: float = 0.0
    error: str = ""

    @property
    def attention(self) -> int:
        return self.fused.get("Attention", 0) + self.fused.get("MultiHeadAttention", 0)

    @property
    def any(self) -> bool:
        return not self.error and any(self.fused.values())

    def describe(self) -> str:
        if self.error:
            return f"transformer fusion (model_type {self.model_type}) failed: {self.error}"
        if not self.any:
            return f"transformer fusion (model_type {self.model_type}): nothing fused"
        ops = ", ".join(f"{op} x{count}" for op, count in self.fused.items())
        missing = "" if self.attention else " (attention did not fuse)"
        return f"fused by ONNX Runtime's transformer optimizer (model_type {self.model_type}): {ops}{missing}"


def _quiet() -> contextlib.AbstractContextManager[None]:
    """The optimizer logs per-fusion progress through ``logging`` and prints warnings."""
    return quiet("onnxruntime.transformers", "fusion_base", "onnx_model", "")


def fuse(source: Path, target: Path, info: TransformerInfo) -> FusionResult:
    """Run ONNX Runtime's transformer optimizer on ``source`` (fp32 ONNX) and write the fused graph to
    ``target`` (weights in ``target.data``, as every work file). A failure of the optimizer is reported in
    the result, not raised: the unfused variants stay."""
    model_type = fusion_model_type(info)
    if model_type is None:
        raise ValueError(f"transformer fusion does not cover model_type {info.model_type}")
    started = time.perf_counter()
    source, target = source.resolve(), target.resolve()  # the working directory changes meanwhile
    result = FusionResult(model_type)
    try:
        import onnx
        from onnxruntime.transformers.optimizer import optimize_model

        with _quiet(), contextlib.chdir(target.parent):  # where ONNX Runtime leaves its shape inference debris
            optimized = optimize_model(
                _shape_inferable(onnx.load(str(source))),
                model_type=model_type,
                num_heads=info.num_heads,
                hidden_size=info.hidden_size,
                opt_level=0,  # the python fusions only; ONNX Runtime applies its own graph optimizations at load
                use_gpu=False,
            )
            statistics = optimized.get_fused_operator_statistics()
        result.fused = {op: int(statistics[op]) for op in FUSED_OPS if statistics.get(op)}
        if result.any:
            external.save_model(optimized.model, target)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        result.error = f"{type(exc).__name__}: {first}"
    result.seconds = time.perf_counter() - started
    return result


def _shape_inferable(model: ModelProto) -> ModelProto:
    """Rewrite ``ReduceL2(x, axes)`` (opset 18+, axes an input) as ``Sqrt(ReduceSum(x * x, axes))`` in place: the
    same values, in operators ONNX Runtime's symbolic shape inference handles (see module)."""
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 18:
        return model
    graph = model.graph
    for position in reversed(range(len(graph.node))):
        node = graph.node[position]
        if node.op_type != "ReduceL2" or node.domain not in ("", "ai.onnx"):
            continue
        stem = f"{node.name or node.output[0]}_l2"
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        replacement = [
            helper.make_node("Mul", [node.input[0], node.input[0]], [f"{stem}_square"], name=f"{stem}_square"),
            helper.make_node(
                "ReduceSum", [f"{stem}_square", *node.input[1:]], [f"{stem}_sum"], name=f"{stem}_sum", **attributes
            ),
            helper.make_node("Sqrt", [f"{stem}_sum"], list(node.output), name=f"{stem}_sqrt"),
        ]
        del graph.node[position]
        for offset, new_node in enumerate(replacement):
            graph.node.insert(position + offset, new_node)
    return model
