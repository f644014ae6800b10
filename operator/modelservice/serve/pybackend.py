"""Turn a converted Triton repository into one the local Triton can run.

A converted repository holds ``<model>/config.pbtxt`` (platform onnxruntime_onnx, pytorch_libtorch or
tensorrt_plan) and ``<model>/<version>/model.*``; a text model adds python-backend steps (its tokenizer, with
tokenizer.json beside model.py, and a labels step) and an ensemble (platform ensemble, an empty version folder).
Where the local Triton has the native backend, the model is copied as is: python models and ensembles always
are (Triton's core runs ensembles). Where it has not (the nvidia-pytriton wheel ships only the python backend),
the model becomes a python-backend model with the SAME name, tensors, max_batch_size, dynamic batching and
instance groups, whose ``model.py`` runs the artifact with ONNX Runtime (model.onnx) or TorchScript (model.pt).
TensorRT plans need a GPU Triton and are refused with a clear error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from modelservice.convert.repository import CONFIG_FILE, ModelConfig, read_config, write_config
from modelservice.serve.triton import TritonError, TritonInstall

TEMPLATE = "python_model.py.tmpl"

# Triton platform -> (backend that runs it natively, runtime our python model uses, default artifact name)
PLATFORM_BACKENDS: dict[str, tuple[str, str | None, str]] = {
    "onnxruntime_onnx": ("onnxruntime", "onnxruntime", "model.onnx"),
    "pytorch_libtorch": ("pytorch", "torchscript", "model.pt"),
    "tensorrt_plan": ("tensorrt", None, "model.plan"),
}


@dataclass(frozen=True)
class RunnableModel:
    """What became of one model of the repository."""

    name: str
    backend: str  # the backend Triton runs it with
    runtime: str | None  # the runtime inside our python model, None when served natively
    source_platform: str


def python_model_source() -> str:
    """The generated model.py (a static file: everything model specific comes from the config parameters)."""
    return resources.files("modelservice.serve").joinpath(TEMPLATE).read_text(encoding="utf-8")


def model_dirs(repository: Path) -> list[Path]:
    """Model folders of a repository (those holding a config.pbtxt), sorted by name."""
    if not repository.is_dir():
        raise TritonError(f"{repository}: model repository not found")
    found = sorted(p for p in repository.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    if not found:
        raise TritonError(f"{repository}: no model (no <model>/{CONFIG_FILE}) in the repository")
    return found


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_tree(source: Path, target: Path) -> None:
    """Files hard-linked (else copied); folders kept even when empty (an ensemble's version folder is)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            raise TritonError(f"{path}: symbolic links are not allowed in a model repository")
        if path.is_dir():
            (target / path.relative_to(source)).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            _link_or_copy(path, target / path.relative_to(source))


def python_backend_config(config: ModelConfig, runtime: str, artifact: str, intra_op_threads: int) -> ModelConfig:
    """The config of the python-backend twin: same name, tensors, batching and instance count; backend python."""
    twin = type(config)()
    twin.CopyFrom(config)
    twin.ClearField("platform")
    twin.ClearField("default_model_filename")
    twin.backend = "python"
    twin.parameters["runtime"].string_value = runtime
    twin.parameters["artifact"].string_value = artifact
    twin.parameters["intra_op_thread_count"].string_value = str(intra_op_threads)
    # The twin runs its artifact on the CPU (ONNX Runtime CPU provider, TorchScript on CPU): GPU instance groups
    # of a GPU ModelService become CPU instances with the same count.
    for group in twin.instance_group:
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        group.ClearField("gpus")
    return twin


def _platform_of(config: ModelConfig) -> str:
    platform: str = config.platform or config.backend
    # "onnxruntime" and "pytorch" are the backend-field spellings of the same platforms.
    aliases = {"onnxruntime": "onnxruntime_onnx", "pytorch": "pytorch_libtorch", "tensorrt": "tensorrt_plan"}
    return aliases.get(platform, platform)


def _runnable_model(
    source: Path, target: Path, install: TritonInstall, intra_op_threads: int, native: set[str]
) -> RunnableModel:
    config = read_config(source / CONFIG_FILE)
    name = config.name or source.name
    if config.name and config.name != source.name:
        raise TritonError(f"{source / CONFIG_FILE}: name {config.name!r} differs from its folder {source.name!r}")
    platform = _platform_of(config)
    backend, runtime, default_artifact = PLATFORM_BACKENDS.get(platform, (platform, None, ""))
    if backend in native or platform not in PLATFORM_BACKENDS:
        _copy_tree(source, target)
        return RunnableModel(name, backend, None, platform)
    if runtime is None:
        have = ", ".join(sorted(native)) or "none"
        raise TritonError(
            f"model {name}: {platform} needs a Triton with the {backend} backend and a GPU "
            f"(this tritonserver, from {install.source}, has: {have})"
        )
    artifact = config.default_model_filename or default_artifact
    versions = sorted(p for p in source.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise TritonError(f"{source}: no version folder (1/, 2/, ...) in model {name}")
    for version in versions:
        if not (version / artifact).is_file():
            raise TritonError(f"{version / artifact}: model artifact missing")
        _copy_tree(version, target / version.name)
        (target / version.name / "model.py").write_text(python_model_source(), encoding="utf-8")
    write_config(python_backend_config(config, runtime, artifact, intra_op_threads), target / CONFIG_FILE)
    return RunnableModel(name, "python", runtime, platform)


def make_runnable(
    converted: Path, out: Path, install: TritonInstall, *, intra_op_threads: int = 0
) -> list[RunnableModel]:
    """Write to ``out`` (replaced atomically) a repository the local Triton ``install`` can load."""
    native = install.native_backends()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        models = [
            _runnable_model(source, staging / source.name, install, intra_op_threads, native)
            for source in model_dirs(converted)
        ]
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return models
