"""Load a fetched model source safely.

- ``pytorch``: the architecture (``FILE.py:CALLABLE`` inside the source folder) is imported and called, then
  the state dict is loaded: ``.safetensors`` (preferred, no code at all) or ``.pt``/``.pth``/``.bin`` through
  ``torch.load(weights_only=True)``, which refuses any pickle that is not plain tensors.
- ``torchscript``: ``torch.jit.load`` (TorchScript's own unpickler, no Python callables).
- ``exported-program``: every pickle in the .pt2 is scanned (safety.py) before ``torch.export.load``.
- ``onnx``: ``onnx.load`` and ``onnx.checker``.
- ``triton-repository``: handled by the pipeline (validated, passed through).
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelservice.api.errors import UserError
from modelservice.api.models import ModelSource, TensorSpec
from modelservice.convert.safety import check_archive_pickles
from modelservice.convert.tensors import ONNX_DTYPES, Array, api_dtype, random_inputs

EXTENSIONS = {
    "torchscript": (".pt", ".pth", ".ts", ".torchscript", ".zip"),
    "exported-program": (".pt2",),
    "onnx": (".onnx",),
}
WEIGHT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class TransformerInfo:
    """What a ``format: huggingface`` model is (convert/hf.py fills it): the fusion, the tokenizer step and the
    verification data need it."""

    task: str  # sentence-embedding, feature-extraction, text-classification, token-classification, image-...
    model_type: str  # config.json model_type: bert, distilbert, roberta, vit, resnet, ...
    num_heads: int  # 0 where the model has no attention (resnet)
    hidden_size: int
    num_layers: int
    tokenizer: Path | None = None  # tokenizer.json inside the fetched source (text tasks)
    max_length: int | None = None  # longest token sequence served (text tasks)
    labels: tuple[str, ...] = ()  # id2label in index order (classification tasks)
    pad_id: int = 0

    @property
    def is_text(self) -> bool:
        return self.tokenizer is not None


@dataclass
class LoadedModel:
    """A model ready to convert: a torch callable (eval mode) or an ONNX file, with its tensor specs."""

    format: str
    file: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    module: Any = None  # torch.nn.Module / ScriptModule / GraphModule
    notes: list[str] = field(default_factory=list)
    transformer: TransformerInfo | None = None  # format huggingface

    @property
    def is_torch(self) -> bool:
        return self.module is not None


def load_model(source: ModelSource, path: Path) -> LoadedModel:
    """Load the fetched source at ``path`` (a file or a folder) according to ``source.format``."""
    if source.format == "pytorch":
        return _load_pytorch(source, path)
    if source.format == "huggingface":
        from modelservice.convert.hf import load_huggingface

        return load_huggingface(source, path)
    model_file = find_model_file(source, path)
    if source.format == "onnx":
        return _load_onnx(source, model_file)
    module = _load_torchscript(model_file) if source.format == "torchscript" else _load_exported(model_file)
    outputs = source.outputs or infer_torch_outputs(module, source.inputs)
    return LoadedModel(source.format, model_file, list(source.inputs), outputs, module)


def find_model_file(source: ModelSource, path: Path) -> Path:
    """The model file of a single-file format: ``path`` itself, ``weights`` inside the folder, or the one file
    with the format's extension."""
    if path.is_file():
        return path
    if source.weights:
        candidate = path / source.weights
        if not candidate.is_file():
            raise UserError(f"spec.model.weights: {source.weights} not found in the model source")
        return candidate
    extensions = EXTENSIONS[source.format]
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(extensions))
    if len(found) != 1:
        names = ", ".join(p.relative_to(path).as_posix() for p in found[:5]) or "none"
        raise UserError(
            f"spec.model.uri: expected one {'/'.join(extensions)} file for format {source.format}, found {names}; "
            "name it in spec.model.weights"
        )
    return found[0]


# --------------------------------------------------------------------------------------------- pytorch


def _load_pytorch(source: ModelSource, path: Path) -> LoadedModel:
    if not path.is_dir():
        raise UserError(
            "spec.model.uri: format pytorch needs a folder (or an archive) holding the architecture file and the "
            f"weights; {path.name} is a single file"
        )
    assert source.architecture is not None
    module = build_architecture(path, source.architecture)
    weights = _weights_file(source, path)
    state = load_state_dict(weights, field="spec.model.weights")
    _apply_state_dict(module, state, weights.name, source.architecture)
    module.eval()
    outputs = source.outputs or infer_torch_outputs(module, source.inputs)
    return LoadedModel("pytorch", weights, list(source.inputs), outputs, module)


def build_architecture(root: Path, architecture: str) -> Any:
    """Import ``FILE.py`` from ``root`` and call ``CALLABLE`` (dotted attributes allowed) without arguments."""
    import torch

    file_name, _, attribute = architecture.partition(":")
    root = root.resolve()
    path = (root / file_name).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"spec.model.architecture: {file_name} is outside the model source")
    if not path.is_file():
        raise UserError(f"spec.model.architecture: {file_name} not found in the model source")
    # Named by content, not location, so exports from different temporary folders are identical.
    module_name = "modelservice_user_" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    user_module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root))  # the architecture file may import its sibling modules
    try:
        spec.loader.exec_module(user_module)
        target: Any = user_module
        for part in attribute.split("."):
            target = getattr(target, part)
        instance = target()
    except AttributeError as exc:
        raise UserError(f"spec.model.architecture: {architecture}: {exc}") from None
    except Exception as exc:
        raise UserError(f"spec.model.architecture: {architecture} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(root))
    if not isinstance(instance, torch.nn.Module):
        raise UserError(
            f"spec.model.architecture: {architecture} returned {type(instance).__name__}, not a torch module"
        )
    return instance


def _weights_file(source: ModelSource, root: Path) -> Path:
    if source.weights:
        path = (root / source.weights).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise UserError(f"spec.model.weights: {source.weights} not found in the model source")
        return path
    found = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(WEIGHT_EXTENSIONS))
    preferred = [p for p in found if p.suffix == ".safetensors"] or found
    if len(preferred) != 1:
        names = ", ".join(p.name for p in preferred) or "none"
        raise UserError(f"spec.model.weights: name the state dict file (found {names})")
    return preferred[0]


def load_state_dict(path: Path, *, field: str) -> dict[str, Any]:
    """A state dict from .safetensors, or from .pt/.pth/.bin with ``torch.load(weights_only=True)``."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{field}: {path.name}: not a readable safetensors file: {exc}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"{field}: {path.name}: refused: holds more than tensors, loading it would run code ({first})"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise UserError(f"{field}: {path.name}: not a readable torch file: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{field}: {path.name}: not a state dict (a mapping of names to tensors)")
    return state


def _apply_state_dict(module: Any, state: dict[str, Any], weights: str, architecture: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} is {list(expected[k].shape)} in the model, {list(state[k].shape)} in the weights"
        for k in expected
        if k in state and tuple(expected[k].shape) != tuple(state[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if shapes:
        problems.append(_few(shapes))
    if problems:
        raise UserError(f"spec.model.weights: {weights} does not match {architecture}: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)


def _few(items: list[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# -------------------------------------------------------------------------------- torchscript / .pt2


def _load_torchscript(path: Path) -> Any:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"spec.model.uri: {path.name}: not a TorchScript archive: {first}") from None
    module.eval()
    return module


def _load_exported(path: Path) -> Any:
    import torch

    check_archive_pickles(path, "spec.model.uri")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"spec.model.uri: {path.name}: not a torch.export program: {first}") from None
    return program.module()


# ---------------------------------------------------------------------------------------------- onnx


def _load_onnx(source: ModelSource, path: Path) -> LoadedModel:
    import onnx

    try:
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"spec.model.uri: {path.name}: not a valid ONNX model: {first}") from None
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    inputs = source.inputs or [_onnx_spec(i) for i in graph_inputs]
    outputs = source.outputs or [_onnx_spec(o) for o in model.graph.output]
    names = {i.name for i in graph_inputs}
    for spec in inputs:
        if spec.name not in names:
            raise UserError(
                f"spec.model.inputs: {spec.name!r} is not an input of {path.name} ({', '.join(sorted(names))})"
            )
    return LoadedModel("onnx", path, list(inputs), list(outputs))


def _onnx_spec(value: Any) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim][1:] or [1]
    return TensorSpec(name=value.name, dtype=ONNX_DTYPES.get(tensor.elem_type, "FP32"), shape=dims)


# --------------------------------------------------------------------------------------- torch helpers


def run_torch(module: Any, inputs: dict[str, Array], specs: list[TensorSpec]) -> list[Array]:
    """Run a torch callable on numpy inputs (positional, in spec order); outputs as numpy arrays."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(inputs[spec.name])) for spec in specs]
    with torch.inference_mode():
        result = module(*args)
    flat = list(result) if isinstance(result, (tuple, list)) else [result]
    if isinstance(result, dict):
        flat = list(result.values())
    return [t.detach().cpu().float().numpy() if t.dtype == torch.bfloat16 else t.detach().cpu().numpy() for t in flat]


def infer_torch_outputs(module: Any, inputs: list[TensorSpec]) -> list[TensorSpec]:
    """Output specs from one run on sample inputs (names output0, output1, ...)."""
    try:
        outputs = run_torch(module, random_inputs(inputs, 2), inputs)
    except Exception as exc:
        raise UserError(f"spec.model.inputs: the model fails on inputs of the declared shapes: {exc}") from None
    return [
        TensorSpec(name=f"output{i}", dtype=api_dtype(array), shape=list(array.shape[1:]) or [1])
        for i, array in enumerate(outputs)
    ]
