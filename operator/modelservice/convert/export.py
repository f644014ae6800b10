"""Export torch models to ONNX (dynamic batch axis) or TorchScript.

ONNX exporter choice: the dynamo exporter (``torch.export`` + onnxscript, torch's default) is tried first. It
constant-folds and inlines weights as initializers feeding MatMul/Gemm/Conv directly, which is what ONNX
Runtime's quantizer needs; the TorchScript exporter leaves e.g. ``nn.TransformerEncoder`` weights behind
in-graph transposes and fused paths that the quantizer never touches. The dynamo exporter emits opset 18 or
newer, so a lower requested opset is raised to 18 (the report says so). When the dynamo exporter cannot
capture a model (data-dependent control flow, a ScriptModule), the TorchScript exporter is used at the
requested opset, and the report says that too.

Transformers that ONNX Runtime's transformer optimizer covers (convert/fusion.py: BERT-family encoders, ViT) go
the other way round: the TorchScript exporter first, at the requested opset, because the optimizer's fusion
patterns (Attention, EmbedLayerNormalization) match its graph of eager attention and not the dynamo exporter's
(measured on a 6-layer BERT: 6 of 6 attention blocks fused vs none). The dynamo exporter is the fallback.
Every ``-1`` dimension of the spec stays dynamic: the batch axis and, for text models, the sequence axis
(``sequence``, shared by input_ids, attention_mask and token_type_ids, so shape inference knows they match).
The TorchScript exporter is deprecated in torch 2.9+ but still shipped (2.13); should it go, the dynamo
fallback keeps conversions working, without the fused variants' Attention.
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelservice.api.errors import UserError
from modelservice.api.models import TensorSpec
from modelservice.convert import external
from modelservice.convert.fusion import fusion_model_type
from modelservice.convert.load import LoadedModel
from modelservice.convert.quiet import quiet
from modelservice.convert.tensors import random_inputs

DYNAMO_MIN_OPSET = 18


@dataclass
class ExportResult:
    exporter: str
    opset: int
    notes: list[str] = field(default_factory=list)


def _example_args(inputs: list[TensorSpec], text: bool = False) -> tuple[Any, ...]:
    """Sample inputs to trace with. A text model (inputs in convert/hf.py's order: input_ids, attention_mask,
    token_type_ids; the names may be placeholders here) gets a mask with padding in the second sample, so the
    masking path is traced as it runs on padded batches, and token types of 0 (random ones would index past a
    2-row type embedding)."""
    import numpy as np
    import torch

    arrays = random_inputs(inputs, 2, seed=1)
    if text and len(inputs) >= 2:
        mask = arrays[inputs[1].name]
        mask[...] = 1
        mask[1, mask.shape[1] // 2 :] = 0
        for spec in inputs[2:]:
            arrays[spec.name] = np.zeros_like(arrays[spec.name])
    return tuple(torch.from_numpy(arrays[spec.name]) for spec in inputs)


def _first_line(exc: BaseException) -> str:
    """One line for an exporter failure; names the unsupported operators when there are any."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if any(marker in text for marker in ("No ONNX function", "nsupported", "not supported", "No decomposition")):
        found = re.findall(r"op='([\w.]+)'", text) + re.findall(r"\b(?:aten|prims)::?\.?[A-Za-z0-9_]+", text)
        found += re.findall(r"\b(?:aten|prims)\.[A-Za-z0-9_]+", text)
        ops = sorted({op.replace("::", ".").removesuffix(".default") for op in found})
        if ops:
            return f"unsupported operator(s) {', '.join(ops[:4])}"
    for line in text.splitlines():
        if line.strip() and not line.startswith(("Traceback", "  ")):
            return f"{type(exc).__name__}: {line.strip()[:300]}"
    return type(exc).__name__


def _quiet() -> contextlib.AbstractContextManager[None]:
    """The exporters print progress and warnings to stdout/stderr; keep the CLI's output to our own lines."""
    return quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")


def export_onnx(model: LoadedModel, path: Path, opset: int) -> ExportResult:
    """Write ``model`` (a torch model) to ``path`` as ONNX with a dynamic batch axis (and every -1 dimension
    dynamic). The dynamo exporter writes the weights to ``path.data`` (see convert/external.py: every work
    file keeps them outside the graph); the TorchScript exporter writes them inline below 2 GiB."""
    import torch

    external.remove_model(path)
    args = _example_args(model.inputs, model.transformer is not None and model.transformer.is_text)
    if fusion_model_type(model.transformer) is not None:
        return _export_for_fusion(model, path, opset, args)
    dynamo_error: BaseException | None = None
    if not isinstance(model.module, torch.jit.ScriptModule):
        try:
            return _dynamo_export(model, path, opset, args)
        except Exception as exc:
            dynamo_error = exc
    try:
        _torchscript_export(model, path, opset, args)
    except Exception as exc:
        reason = _first_line(dynamo_error or exc)
        raise UserError(f"conversion.target: the model cannot be exported to ONNX: {reason}") from None
    notes = (
        [f"dynamo exporter failed ({_first_line(dynamo_error)}); used the TorchScript exporter"] if dynamo_error else []
    )
    return ExportResult("torchscript", _model_opset(path), notes)


def _dynamo_export(model: LoadedModel, path: Path, opset: int, args: tuple[Any, ...]) -> ExportResult:
    import torch

    dynamo_opset = max(opset, DYNAMO_MIN_OPSET)
    dims = tuple(
        {
            0: torch.export.Dim("batch"),
            **{i + 1: torch.export.Dim.DYNAMIC for i, d in enumerate(s.shape) if d == -1},
        }
        for s in model.inputs
    )
    with _quiet():
        torch.onnx.export(
            model.module,
            args,
            str(path),
            dynamo=True,
            input_names=[spec.name for spec in model.inputs],
            output_names=[spec.name for spec in model.outputs],
            opset_version=dynamo_opset,
            dynamic_shapes=dims,
            optimize=True,
            external_data=True,  # weights streamed to path.data: no 2 GiB proto, no copy in memory
            verbose=False,
        )
    canonicalize(path)
    notes = [f"opset {dynamo_opset} (requested {opset}; the dynamo exporter's minimum is 18)"]
    return ExportResult("dynamo", _model_opset(path), notes if dynamo_opset != opset else [])


def _dynamic_axes(model: LoadedModel) -> dict[str, dict[int, str]]:
    """The TorchScript exporter's dynamic axes: the batch axis and every -1 dimension of the specs. A text
    model's variable dimension is its sequence, one name for all its tensors; others get a name per tensor."""
    text = model.transformer is not None and model.transformer.is_text
    axes: dict[str, dict[int, str]] = {}
    for spec in [*model.inputs, *model.outputs]:
        axes[spec.name] = {0: "batch"}
        for index, dim in enumerate(spec.shape, start=1):
            if dim == -1:
                axes[spec.name][index] = "sequence" if text and index == 1 else f"{spec.name}_{index}"
    return axes


def _torchscript_export(model: LoadedModel, path: Path, opset: int, args: tuple[Any, ...]) -> None:
    import torch

    with _quiet():
        torch.onnx.export(
            model.module,
            args,
            str(path),
            dynamo=False,
            input_names=[spec.name for spec in model.inputs],
            output_names=[spec.name for spec in model.outputs],
            opset_version=opset,
            dynamic_axes=_dynamic_axes(model),
            do_constant_folding=True,
        )


def _export_for_fusion(model: LoadedModel, path: Path, opset: int, args: tuple[Any, ...]) -> ExportResult:
    """A transformer the fusion covers: the TorchScript exporter first (see module), the dynamo exporter when it
    fails."""
    try:
        _torchscript_export(model, path, opset, args)
        why = "exported with the TorchScript exporter: ONNX Runtime's transformer fusions match its graph"
        return ExportResult("torchscript", _model_opset(path), [why])
    except Exception as exc:
        error = exc
    external.remove_model(path)
    try:
        result = _dynamo_export(model, path, opset, args)
    except Exception:
        raise UserError(f"conversion.target: the model cannot be exported to ONNX: {_first_line(error)}") from None
    result.notes.insert(0, f"TorchScript exporter failed ({_first_line(error)}); fusions may not match this graph")
    return result


def release_weights(module: Any) -> None:
    """Free the memory of ``module``'s parameters and buffers (each becomes an empty tensor) once nothing will
    run it again. Dropping the module is not enough after a dynamo export: onnxscript's graph rewriter keeps
    the last graph it matched in its module-level rules, and that graph wraps every parameter (measured: a
    model's whole size stays resident through quantization and verification otherwise)."""
    import torch

    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            with contextlib.suppress(RuntimeError):  # a ScriptModule may refuse; its exporter keeps nothing
                tensor.data = torch.empty(0, dtype=tensor.dtype)


def canonicalize(path: Path) -> None:
    """Drop per-node debugging metadata (stack traces with temporary paths, module names, FX node text) and
    doc strings, so the same model exports to the same bytes wherever and whenever it is converted. Only the
    graph is read and rewritten: external weights stay in their data file, untouched."""
    model = external.load_graph(path)
    graphs = [model.graph, *(f for f in model.functions)]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            graphs += [a.g for a in node.attribute if a.HasField("g")]
            graphs += [g for a in node.attribute for g in a.graphs]
        if hasattr(graph, "doc_string"):
            graph.doc_string = ""
    model.doc_string = ""
    external.write_graph(model, path)


def _model_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def export_torchscript(model: LoadedModel, path: Path, precision: str = "fp32") -> ExportResult:
    """Write a TorchScript archive (Triton's pytorch_libtorch): an fp32 TorchScript source is copied as is,
    other torch models are traced on sample inputs. fp16: a copy of the model in half precision, wrapped so its
    floating inputs and outputs stay float32 (the served signature does not change, as for ONNX fp16)."""
    import torch

    if model.format == "torchscript" and precision == "fp32":
        shutil.copyfile(model.file, path)
        return ExportResult("copy", 0)
    module = model.module
    if precision == "fp16":
        original = (
            torch.jit.load(str(model.file), map_location="cpu")  # type: ignore[no-untyped-call]
            if model.format == "torchscript"
            else copy.deepcopy(model.module)  # .half() converts in place; the original stays the reference
        )
        module = _HalfPrecision.wrap(original)
    args = _example_args(model.inputs)
    try:
        with _quiet(), torch.inference_mode():
            traced = torch.jit.trace(module, args, check_trace=False)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path))
    except Exception as exc:
        raise UserError(f"conversion.target: the model cannot be traced to TorchScript: {_first_line(exc)}") from None
    return ExportResult("torch.jit.trace" + (" (fp16, float32 inputs/outputs)" if precision == "fp16" else ""), 0)


class _HalfPrecision:
    """Builds ``torch.nn.Module`` wrappers lazily (torch is imported only when converting)."""

    @staticmethod
    def wrap(module: Any) -> Any:
        import torch

        class HalfPrecision(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner.half().eval()

            def forward(self, *args: Any) -> Any:
                result = self.inner(*[a.half() if a.is_floating_point() else a for a in args])
                if isinstance(result, (tuple, list)):
                    return tuple(r.float() if r.is_floating_point() else r for r in result)
                return result.float() if result.is_floating_point() else result

        return HalfPrecision(module).eval()


def load_torchscript(path: Path) -> Any:
    import torch

    module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    module.eval()
    return module
