"""``modelservice convert``: fetch, load, convert, quantize, verify; write a Triton repository and a report.

Output: ``OUT/<name>/config.pbtxt``, ``OUT/<name>/1/model.onnx|model.pt|model.plan``, ``OUT/report.json``. Everything is
built in a temporary folder and renamed into place. The conversion hash covers the source digest, the
data digests and every setting that changes the output (and the tool versions); a cache keyed on it makes a
repeated conversion a no-op. The same inputs give byte-identical model files and config.pbtxt (``auto``
picks by measured latency, so its choice can differ between machines; the cache pins it). TensorRT plans are
the exception: the builder times kernels, so a rebuild can differ; the cache, keyed on the GPU and TensorRT
version too, makes a repeated conversion a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from modelservice import __version__
from modelservice.api.errors import UserError
from modelservice.api.loader import LoadedModelService
from modelservice.api.models import ModelService
from modelservice.convert import targets
from modelservice.convert.context import ConvertContext, ConvertOptions
from modelservice.convert.digest import file_sha256
from modelservice.convert.external import model_sha256
from modelservice.convert.fetch import fetch, fetch_file
from modelservice.convert.load import LoadedModel, load_model, run_torch
from modelservice.convert.output import REPORT, Cache, default_cache_dir, install
from modelservice.convert.progress import Progress
from modelservice.convert.report import Report, write_report
from modelservice.convert.report import write_summary as _write_summary
from modelservice.convert.tensors import Array
from modelservice.convert.textdata import TEXT_SUFFIXES, builtin_sentences, load_texts, tokenize
from modelservice.convert.textserving import encoder_name, is_text_model, write_text_ensemble
from modelservice.convert.verify import VerifyData, default_metric, load_npz, ort_runner, random_data, run_batched

CACHE_FORMAT = 2  # 2: format huggingface, ensembles, external data

__all__ = ["ConvertOptions", "conversion_hash", "convert", "write_summary"]


def write_summary(report: Report, path: Path) -> None:
    """The compact JSON summary (the conversion Job writes it to /dev/termination-log)."""
    _write_summary(report, path)


def convert(item: LoadedModelService, out: Path, options: ConvertOptions) -> Report:
    """Convert the ModelService in ``item`` into the Triton repository ``out`` (see module docs)."""
    started = time.perf_counter()
    # A private copy: the conversion resolves defaults that depend on the model (the verification metric).
    item = dataclasses.replace(item, model=item.model.model_copy(deep=True))
    ms = item.model
    progress = Progress(options.progress)
    _check_target_prerequisites(ms)
    with tempfile.TemporaryDirectory(prefix="modelservice-convert-") as tmp:
        work = Path(tmp)
        timings: dict[str, float] = {}
        progress.step("fetch", ms.spec.model.uri)
        t0 = time.perf_counter()
        try:
            fetched = fetch(
                ms.spec.model.uri,
                work / "source",
                sha256=ms.spec.model.sha256,
                base_dir=item.base_dir,
                progress=progress,
            )
        except UserError as exc:  # name the field whose value failed (fetch itself knows only the URI)
            if str(exc).startswith("spec."):
                raise
            raise UserError(f"spec.model.uri: {exc}") from None
        data_path, calibration_path = _data_files(item, work, progress)
        timings["fetchSeconds"] = time.perf_counter() - t0
        key = conversion_hash(ms, fetched.sha256, data_path, calibration_path)
        cache = Cache(options.cache_dir or default_cache_dir())
        hit = cache.lookup(key) if options.use_cache else None
        if hit is not None and not _cache_entry_intact(hit):
            progress.step("cache", f"entry {key[:16]} does not match its report (damaged): converting again")
            hit = None
        if hit is not None:
            progress.step("cache", f"hit {key[:16]}: reusing the verified conversion")
            data = json.loads((hit / REPORT).read_text(encoding="utf-8"))
            data.update(cacheHit=True, output=str(out))
            data["timings"] = {**timings, "totalSeconds": round(time.perf_counter() - started, 3)}
            staging = work / "staging"
            shutil.copytree(hit, staging)
            report = Report(data)
            write_report(report, staging / REPORT)
            install(staging, out, ms.name)
            return report
        ctx = ConvertContext(
            item, work, work / "staging", progress, fetched, data_path, calibration_path, timings, options
        )
        data = _build(ctx)
        data.update(conversionHash=key, cacheHit=False)
        # Cached entries carry no timings or output path of the run that made them.
        cached = Report({k: v for k, v in data.items() if k not in ("output",)})
        write_report(cached, ctx.staging / REPORT)
        if options.use_cache:
            cache.store(key, ctx.staging)
        timings["totalSeconds"] = time.perf_counter() - started
        data["timings"] = {k: round(v, 3) for k, v in timings.items()}
        data["output"] = str(out)
        report = Report(data)
        write_report(report, ctx.staging / REPORT)
        install(ctx.staging, out, ms.name)
        return report


def _cache_entry_intact(entry: Path) -> bool:
    """Whether the cached artifact still has the digest its report recorded (a cache hit is installed without
    verification, so a damaged entry must not be)."""
    try:
        artifact = json.loads((entry / REPORT).read_text(encoding="utf-8")).get("artifact") or {}
        path = entry / str(artifact["uri"])
        digest = model_sha256(path) if path.suffix == ".onnx" else file_sha256(path)
    except Exception:  # unreadable in any way (a damaged protobuf raises DecodeError): not intact
        return False
    return bool(digest == artifact.get("sha256"))


def _check_target_prerequisites(ms: ModelService) -> None:
    """Fail before any download when the target cannot be built on this machine, or the spec cannot be."""
    conversion = ms.spec.conversion
    if conversion.target != "tensorrt" or ms.spec.model.format == "triton-repository":
        return
    from modelservice.convert import tensorrt

    if conversion.precision == "int8" and conversion.quantization.method != "static":
        raise UserError(
            "spec.conversion.quantization.method: TensorRT runs int8 only from calibrated Q/DQ (explicit "
            "quantization); use method static with spec.conversion.quantization.calibration"
        )
    tensorrt.optimization_profile(ms.spec.model.inputs, ms.spec.serving.max_batch_size, 1)
    tensorrt.require_tensorrt()


def _data_files(item: LoadedModelService, work: Path, progress: Progress) -> tuple[Path | None, Path | None]:
    conversion = item.model.spec.conversion
    data = calibration = None
    if conversion.verification.data_uri and conversion.verification.enabled:
        data = fetch_file(
            conversion.verification.data_uri,
            work / "data",
            base_dir=item.base_dir,
            progress=progress,
            field="spec.conversion.verification.dataUri",
        )
    quantization = conversion.quantization
    wants_static = conversion.precision == "auto" or (
        conversion.precision == "int8" and quantization.method == "static"
    )
    if quantization.calibration is not None and wants_static:
        calibration = fetch_file(
            quantization.calibration.uri,
            work / "calibration",
            base_dir=item.base_dir,
            progress=progress,
            field="spec.conversion.quantization.calibration.uri",
        )
    return data, calibration


def conversion_hash(ms: ModelService, source_sha256: str, data: Path | None, calibration: Path | None) -> str:
    """SHA-256 over everything that changes the output: source and data digests, model and conversion
    settings, the serving fields config.pbtxt depends on, and the tool versions."""
    import onnx
    import onnxruntime
    import torch

    spec = ms.spec
    model = spec.model.to_api()
    for volatile in ("uri", "sha256", "credentials"):
        model.pop(volatile, None)
    conversion = spec.conversion.to_api()
    conversion.get("verification", {}).pop("dataUri", None)
    conversion.get("quantization", {}).get("calibration", {}).pop("uri", None)
    serving = spec.serving
    settings = {
        "format": CACHE_FORMAT,
        "versions": [__version__, torch.__version__, onnx.__version__, onnxruntime.__version__],
        "name": ms.name,
        "source": source_sha256,
        "data": file_sha256(data) if data else None,
        "calibration": file_sha256(calibration) if calibration else None,
        "model": model,
        "conversion": conversion,
        "serving": {
            "maxBatchSize": serving.max_batch_size,
            "dynamicBatching": serving.dynamic_batching.to_api() if serving.dynamic_batching else None,
            "instances": serving.instances,
            "gpu": serving.resources.gpu,
        },
    }
    if spec.conversion.precision in ("auto", "int8"):
        # int8 weights take 8 bits where the converting CPU has VNNI, 7 bits where it has not (convert/quantize.py)
        from modelservice.convert.quantize import cpu_vnni

        settings["cpuVnni"] = cpu_vnni()
    if spec.conversion.target == "tensorrt":  # a plan is tied to the TensorRT version and the GPU that built it
        from modelservice.convert import tensorrt

        settings["tensorrt"] = tensorrt.identity()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- build


def _build(ctx: ConvertContext) -> dict[str, Any]:
    ms = ctx.ms
    spec = ms.spec
    data: dict[str, Any] = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ConversionReport",
        "modelName": ms.name,
        "source": {
            "uri": spec.model.uri,
            "format": spec.model.format,
            "sha256": ctx.fetched.sha256,
            "kind": ctx.fetched.kind,
        },
        "settings": {"target": spec.conversion.target, "precision": spec.conversion.precision},
        "versions": _versions(),
        "notes": [],
    }
    if spec.model.format == "triton-repository":
        targets.pass_through_repository(ctx.fetched.path, ctx.staging, ms, data)
        return data
    t0 = time.perf_counter()
    ctx.progress.step("load", f"{spec.model.format} model")
    model = load_model(spec.model, ctx.fetched.path)
    ctx.timings["loadSeconds"] = time.perf_counter() - t0
    data["source"]["file"] = model.file.name
    data["notes"] += model.notes
    if model.transformer is not None:
        data["transformer"] = _describe_transformer(model)
    data["inputs"] = [t.to_api() for t in model.inputs]
    data["outputs"] = [t.to_api() for t in model.outputs]
    verify_data = _verify_data(ctx, model)
    data["verificationData"] = verify_data.description
    verification = spec.conversion.verification
    if verification.metric is None:
        task = model.transformer.task if model.transformer else None
        verification.metric = default_metric(task, verify_data.labels is not None)
    reference = _reference_outputs(ctx, model, verify_data)
    if spec.conversion.target == "none":
        targets.pass_through_model(ctx, model, data)
    elif spec.conversion.target == "torchscript":
        targets.torchscript_target(ctx, model, verify_data, reference, data)
    elif spec.conversion.target == "tensorrt":
        targets.tensorrt_target(ctx, model, verify_data, reference, data)
    else:
        targets.onnx_target(ctx, model, verify_data, reference, data)
    if is_text_model(ms) and spec.conversion.target != "none":
        ctx.progress.step("repository", f"text in: ensemble {ms.name} = tokenizer step + {encoder_name(ms)}")
        data["notes"] += write_text_ensemble(ctx.staging, ms, model)
    return data


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "modelservice": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _describe_transformer(model: LoadedModel) -> dict[str, Any]:
    info = model.transformer
    assert info is not None
    described: dict[str, Any] = {"task": info.task, "modelType": info.model_type, "layers": info.num_layers}
    if info.max_length:
        described["maxSequenceLength"] = info.max_length
    if info.labels:
        described["labels"] = list(info.labels)
    return described


def _verify_data(ctx: ConvertContext, model: LoadedModel) -> VerifyData:
    verification = ctx.ms.spec.conversion.verification
    info = model.transformer
    if info is not None and info.is_text:
        return _text_verify_data(ctx, model)
    if ctx.data_path is not None and ctx.data_path.suffix in TEXT_SUFFIXES:
        raise UserError(
            f"spec.conversion.verification.dataUri: {ctx.data_path.name}: text data needs a huggingface text model; "
            "give an .npz"
        )
    if ctx.data_path is not None:
        inputs, labels = load_npz(
            ctx.data_path, model.inputs, field_name="spec.conversion.verification.dataUri", samples=verification.samples
        )
        count = len(next(iter(inputs.values())))
        what = f"{ctx.data_path.name} ({count} samples{', labelled' if labels is not None else ''})"
        return VerifyData(inputs, labels, what)
    return random_data(model.inputs, verification.samples)


def _text_verify_data(ctx: ConvertContext, model: LoadedModel) -> VerifyData:
    """Texts from the dataUri (.txt/.jsonl) or the built-in sentences, tokenized as the served tokenizer does."""
    info = model.transformer
    assert info is not None
    field = "spec.conversion.verification.dataUri"
    samples = ctx.ms.spec.conversion.verification.samples
    names = [spec.name for spec in model.inputs]
    if ctx.data_path is None:
        texts, labels = builtin_sentences()[:samples], None
        what = f"{len(texts)} built-in English sentences"
    elif ctx.data_path.suffix in TEXT_SUFFIXES:
        texts, labels = load_texts(ctx.data_path, info, field=field, samples=samples)
        what = f"{ctx.data_path.name} ({len(texts)} texts{', labelled' if labels is not None else ''})"
    else:
        raise UserError(f"{field}: {ctx.data_path.name}: a text model takes .txt (one text per line) or .jsonl")
    inputs = tokenize(texts, info, names)
    return VerifyData(inputs, labels, f"{what}, tokenized to {inputs[names[0]].shape[1]} tokens")


def _reference_outputs(ctx: ConvertContext, model: LoadedModel, verify_data: VerifyData) -> list[Array]:
    ctx.progress.step("verify", f"running the original model on {verify_data.description}")
    t0 = time.perf_counter()
    if model.is_torch:
        try:
            outputs = run_batched(lambda batch: run_torch(model.module, batch, model.inputs), verify_data.inputs, 64)
        except Exception as exc:
            raise UserError(
                f"spec.model.inputs: the original model fails on the verification inputs: {type(exc).__name__}: {exc}"
            ) from None
    else:
        outputs = run_batched(ort_runner(model.file), verify_data.inputs, 64)
    ctx.timings["referenceSeconds"] = time.perf_counter() - t0
    if model.outputs and len(outputs) != len(model.outputs):
        raise UserError(f"spec.model.outputs: declares {len(model.outputs)} outputs, the model returns {len(outputs)}")
    return outputs
