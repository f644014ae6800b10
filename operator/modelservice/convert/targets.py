"""Per-target conversion: write ``staging/<name>/1/<model file>`` and ``staging/<name>/config.pbtxt`` and fill
the report's artifact, verification and candidate sections."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from modelservice.api.errors import UserError
from modelservice.api.models import ModelService, TensorSpec
from modelservice.convert.context import ConvertContext
from modelservice.convert.digest import file_sha256
from modelservice.convert.export import export_onnx, export_torchscript, load_torchscript, release_weights
from modelservice.convert.external import artifact_digest, copy_model, install_model, model_sha256, model_size
from modelservice.convert.load import LoadedModel, run_torch
from modelservice.convert.onnxnames import placeholders, rename_file
from modelservice.convert.repository import (
    CONFIG_FILE,
    build_model_config,
    model_file_name,
    read_config,
    write_config,
)
from modelservice.convert.tensors import Array
from modelservice.convert.textserving import encoder_name
from modelservice.convert.variants import (
    Variant,
    VariantInputs,
    build_variant,
    choose,
    measure,
    requested_variants,
    serving_batch,
    serving_threads,
    verify_variant,
)
from modelservice.convert.verify import Runner, VerifyData, check_against_spec, load_npz, ort_runner, run_batched

VERSION = "1"


def _write_model(ctx: ConvertContext, platform: str, artifact: Path, model: LoadedModel) -> Path:
    folder = ctx.staging / encoder_name(ctx.ms)  # <name>, or <name>-encoder behind a text model's ensemble
    target = folder / VERSION / model_file_name(platform)
    target.parent.mkdir(parents=True, exist_ok=True)
    if platform == "onnx":  # model.onnx, with model.onnx.data past the threshold (convert/external.py)
        install_model(artifact, target, ctx.options.external_data_threshold)
    else:
        shutil.copyfile(artifact, target)
    config = build_model_config(ctx.ms, platform=platform, inputs=model.inputs, outputs=model.outputs)
    config.name = folder.name
    write_config(config, folder / CONFIG_FILE)
    return target


def _artifact(ctx: ConvertContext, path: Path, fmt: str, precision: str, method: str | None = None) -> dict[str, Any]:
    """sha256 and sizeBytes cover the model file and its external data (convert/external.py): the digest of
    the listed ``files`` concatenated in order, and their total size."""
    digest, files = artifact_digest(path)
    entry: dict[str, Any] = {
        "uri": path.relative_to(ctx.staging).as_posix(),
        "format": fmt,
        "precision": precision,
        "sha256": digest,
        "sizeBytes": sum(f.size_bytes for f in files),
        "sourceSha256": ctx.fetched.sha256,
        "files": [{**f.as_dict(), "path": f.path.relative_to(ctx.staging).as_posix()} for f in files],
    }
    if method:
        entry["method"] = method
    return entry


def _verify_installed(
    ctx: ConvertContext,
    target: Path,
    precision: str,
    verify_data: VerifyData,
    reference: list[Array],
    model: LoadedModel,
) -> dict[str, Any]:
    """Run the model as installed in the staging repository (``target``, with its data file) on the
    verification inputs and check it against the original again: the report's verification comes from here,
    so an artifact that lost a file on the way in can never be reported verified."""
    uri = target.relative_to(ctx.staging).as_posix()
    ctx.progress.step("verify", f"{uri} as installed: comparing with the original on {verify_data.description}")
    try:
        runner = ort_runner(target) if target.suffix == ".onnx" else _torchscript_runner(target, model)
        outputs = run_batched(runner, verify_data.inputs, 64)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise UserError(f"conversion: the installed {uri} does not run: {type(exc).__name__}: {first}") from None
    verification = ctx.ms.spec.conversion.verification
    check = check_against_spec(reference, outputs, verify_data.labels, precision=precision, spec=verification)
    if not check.passed:
        raise _fail(check.problems, f"the installed {uri}")
    return _verification(check.as_status(), ctx.ms, verify_data)


def _torchscript_runner(path: Path, model: LoadedModel) -> Runner:
    module = load_torchscript(path)
    return lambda batch: run_torch(module, batch, model.inputs)


def _fail(problems: list[str], what: str) -> UserError:
    return UserError(f"spec.conversion.verification: {what} failed verification: {'; '.join(problems)}")


# ---------------------------------------------------------------------------------------------- onnx


def onnx_target(
    ctx: ConvertContext, model: LoadedModel, verify_data: VerifyData, reference: list[Array], data: dict[str, Any]
) -> None:
    ms = ctx.ms
    fp32 = _export_onnx(ctx, model, data)
    calibration = _calibration(ctx, model)
    inputs = VariantInputs(fp32, ctx.work, verify_data.inputs, verify_data.labels, reference, calibration)
    inputs.transformer, inputs.threads = model.transformer, serving_threads(ms)  # fused variants; measuring
    t0 = time.perf_counter()
    variants: list[Variant] = []
    for name, precision, method in requested_variants(ms, calibration is not None, fusion=inputs.fusion):
        variant = build_variant(name, precision, method, inputs, ctx.progress)
        ctx.progress.step("verify", f"{name}: comparing with the original on {verify_data.description}")
        verify_variant(variant, inputs, ms, progress=ctx.progress)
        variants.append(variant)
    ctx.timings["quantizeVerifySeconds"] = time.perf_counter() - t0
    chosen = _pick(ctx, variants, inputs, data)
    target = _write_model(ctx, "onnx", chosen.path, model)
    data["verification"] = _verify_installed(ctx, target, chosen.precision, verify_data, reference, model)
    data["artifact"] = _artifact(ctx, target, "onnx", chosen.precision, chosen.method)


def _export_onnx(ctx: ConvertContext, model: LoadedModel, data: dict[str, Any]) -> Path:
    """The fp32 ONNX every variant starts from: exported from torch, or the ONNX source itself."""
    conversion = ctx.ms.spec.conversion
    fp32 = ctx.work / "exported.onnx"
    t0 = time.perf_counter()
    if model.is_torch:
        ctx.progress.step("convert", f"exporting to ONNX (opset {conversion.opset}, dynamic batch axis)")
        # Exported under placeholder names, then renamed: a served name may already name a value in the graph.
        inputs, outputs = placeholders(len(model.inputs), "in"), placeholders(len(model.outputs), "out")
        stand_in = dataclasses.replace(
            model,
            inputs=[t.model_copy(update={"name": n}) for t, n in zip(model.inputs, inputs, strict=True)],
            outputs=[t.model_copy(update={"name": n}) for t, n in zip(model.outputs, outputs, strict=True)],
        )
        exported = export_onnx(stand_in, fp32, conversion.opset)
        release_weights(model.module)  # nothing runs torch after export (the reference outputs are computed)
        served = [t.name for t in model.inputs + model.outputs]
        data["notes"] += rename_file(fp32, dict(zip(inputs + outputs, served, strict=True)))
        data["export"] = {"exporter": exported.exporter, "opset": exported.opset}
        data["notes"] += exported.notes
    else:
        copy_model(model.file, fp32)  # with its external data, if any
        data["export"] = {"exporter": "none (onnx source)"}
    ctx.timings["exportSeconds"] = time.perf_counter() - t0
    return fp32


def _pick(
    ctx: ConvertContext,
    variants: list[Variant],
    inputs: VariantInputs,
    data: dict[str, Any],
    runners: dict[str, Runner] | None = None,
) -> Variant:
    """The requested variant, or for ``auto`` the fastest that passed; fills the report's candidates and choice."""
    conversion = ctx.ms.spec.conversion
    if conversion.precision == "auto":
        t0 = time.perf_counter()
        batch = serving_batch(ctx.ms)
        passing = [v for v in variants if v.passed or (v.name == "fp32" and v.check is not None)]
        ctx.progress.step("measure", f"latency of {', '.join(v.name for v in passing)} at batch 1 and {batch}")
        measure(
            passing,
            inputs,
            batch,
            ctx.options.measure_seconds,
            runners={v.name: runners[v.name] for v in passing} if runners is not None else None,
        )
        chosen, reason = choose(variants, batch)
        if not chosen.passed:
            assert chosen.check is not None
            raise _fail(chosen.check.problems, "fp32 (the baseline of precision auto)")
        ctx.timings["measureSeconds"] = time.perf_counter() - t0
        if conversion.quantization.calibration is None:
            data["notes"].append("int8 static not tried: no spec.conversion.quantization.calibration")
    else:
        chosen = variants[0]
        reason = f"precision {conversion.precision} requested"
        if chosen.note.startswith("not quantized"):
            raise UserError(f"spec.conversion.precision: int8 quantization did not happen: {chosen.note}")
        if not chosen.passed:
            assert chosen.check is not None
            raise _fail(chosen.check.problems, chosen.name)
    if chosen.note:
        data["notes"].append(f"{chosen.name}: {chosen.note}")
    data["candidates"] = [v.as_dict() for v in variants]
    data["chosen"] = {"name": chosen.name, "precision": chosen.precision, "method": chosen.method, "reason": reason}
    return chosen


def _verification(status: dict[str, Any], ms: ModelService, verify_data: VerifyData) -> dict[str, Any]:
    verification = ms.spec.conversion.verification
    return {
        **status,
        "enabled": verification.enabled,
        "data": verify_data.description,
        "tolerance": verification.tolerance,
        "accuracyBudget": verification.accuracy_budget,
    }


def _calibration(ctx: ConvertContext, model: LoadedModel) -> dict[str, Array] | None:
    calibration = ctx.ms.spec.conversion.quantization.calibration
    if ctx.calibration_path is None or calibration is None:
        return None
    inputs, _ = load_npz(
        ctx.calibration_path,
        model.inputs,
        field_name="spec.conversion.quantization.calibration.uri",
        samples=calibration.samples,
    )
    return inputs


# ------------------------------------------------------------------------------------------ torchscript


def torchscript_target(
    ctx: ConvertContext, model: LoadedModel, verify_data: VerifyData, reference: list[Array], data: dict[str, Any]
) -> None:
    conversion = ctx.ms.spec.conversion
    precision = conversion.precision
    if precision not in ("fp32", "fp16"):  # the API refuses int8/auto for torchscript too
        raise UserError(f"spec.conversion.precision: {precision} needs target onnx or tensorrt")
    if not model.is_torch:
        raise UserError("spec.conversion.target: an onnx model cannot be converted to torchscript")
    ctx.progress.step("convert", f"TorchScript {precision} (torch.jit.trace)")
    t0 = time.perf_counter()
    path = ctx.work / "model.pt"
    exported = export_torchscript(model, path, precision)
    data["export"] = {"exporter": exported.exporter}
    ctx.timings["exportSeconds"] = time.perf_counter() - t0
    module = load_torchscript(path)
    ctx.progress.step("verify", f"TorchScript vs the original on {verify_data.description}")
    outputs = run_batched(lambda batch: run_torch(module, batch, model.inputs), verify_data.inputs, 64)
    verification = conversion.verification
    check = check_against_spec(reference, outputs, verify_data.labels, precision=precision, spec=verification)
    if not check.passed:
        raise _fail(check.problems, f"the TorchScript {precision} model")
    target = _write_model(ctx, "torchscript", path, model)
    data["verification"] = _verify_installed(ctx, target, precision, verify_data, reference, model)
    data["artifact"] = _artifact(ctx, target, "torchscript", precision)


# -------------------------------------------------------------------------------------------- tensorrt


def tensorrt_target(
    ctx: ConvertContext, model: LoadedModel, verify_data: VerifyData, reference: list[Array], data: dict[str, Any]
) -> None:
    """Plans built from the ONNX variants (see convert/tensorrt.py), each verified on the GPU against the
    original; ``auto`` measures the plans and picks as for ONNX. The pipeline has checked the machine
    (``tensorrt.require_tensorrt``) before fetching."""
    from modelservice.convert import tensorrt

    ms = ctx.ms
    max_batch = ms.spec.serving.max_batch_size
    profiles = tensorrt.optimization_profile(model.inputs, max_batch, serving_batch(ms))
    data["tensorrt"] = {
        **(tensorrt.identity() or {}),
        "profile": {p.name: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in profiles},
    }
    fp32 = _export_onnx(ctx, model, data)
    calibration = _calibration(ctx, model)
    inputs = VariantInputs(fp32, ctx.work, verify_data.inputs, verify_data.labels, reference, calibration)
    outputs = [t.name for t in model.outputs]
    t0 = time.perf_counter()
    variants: list[Variant] = []
    runners: dict[str, Runner] = {}
    for name, precision, method in requested_variants(ms, calibration is not None, tensorrt=True):
        variant = build_variant(name, precision, method, inputs, ctx.progress, symmetric=True)
        variants.append(variant)
        if variant.note.startswith("not quantized"):
            continue
        ctx.progress.step("convert", f"{name}: building the TensorRT plan (batch 1..{max_batch})")
        started = time.perf_counter()
        try:
            built = tensorrt.build_plan(variant.path, ctx.work / f"{name}.plan", profiles)
        except UserError as exc:
            if ms.spec.conversion.precision != "auto" or name == "fp32":
                raise
            variant.note = f"not built: {exc}"
            continue
        variant.build_seconds += time.perf_counter() - started
        variant.path = built.plan
        data["notes"] += [f"{name} plan: {m}" for m in built.messages[:5]]
        runners[name] = tensorrt.plan_runner(built.plan, outputs)
        ctx.progress.step("verify", f"{name} plan: comparing with the original on {verify_data.description}")
        verify_variant(variant, inputs, ms, runners[name], batch=min(64, max_batch))
    base = next((v for v in variants if v.name == "fp32" and v.path.suffix == ".plan"), None)
    for variant in variants:  # plan sizes compare with the fp32 plan, not with the ONNX file
        variant.fp32_bytes = base.path.stat().st_size if base is not None and variant.path.suffix == ".plan" else 0
    ctx.timings["quantizeBuildVerifySeconds"] = time.perf_counter() - t0
    chosen = _pick(ctx, variants, inputs, data, runners)
    identity = data["tensorrt"]
    data["notes"].append(
        f"the plan runs only with TensorRT {identity.get('version')} on GPUs of compute capability "
        f"{identity.get('computeCapability')} (built on {identity.get('device')}): serve it with the Triton "
        "release that ships this TensorRT version, on the same kind of GPU"
    )
    target = _write_model(ctx, "tensorrt", chosen.path, model)
    data["artifact"] = _artifact(ctx, target, "tensorrt", chosen.precision, chosen.method)
    assert chosen.check is not None
    data["verification"] = _verification(chosen.check.as_status(), ms, verify_data)


# ------------------------------------------------------------------------------------------- pass-through


def pass_through_model(ctx: ConvertContext, model: LoadedModel, data: dict[str, Any]) -> None:
    """target none: serve the source as is (onnx or torchscript)."""
    platform = {"onnx": "onnx", "torchscript": "torchscript"}.get(model.format)
    if platform is None:
        raise UserError(f"spec.conversion.target: none cannot serve format {model.format}")
    ctx.progress.step("convert", f"target none: serving the {model.format} file as is")
    target = _write_model(ctx, platform, model.file, model)
    data["artifact"] = _artifact(ctx, target, platform, "fp32")
    data["verification"] = {"passed": True, "data": "not converted: nothing to verify"}


def pass_through_repository(path: Path, staging: Path, ms: ModelService, data: dict[str, Any]) -> None:
    """format triton-repository: ``path`` is a model folder (config.pbtxt + version folders) or a repository
    holding exactly one; it is validated with Triton's ModelConfig protobuf and copied as ``<name>``."""
    folder = path if (path / CONFIG_FILE).is_file() else None
    if folder is None and path.is_dir():
        models = sorted(p for p in path.iterdir() if (p / CONFIG_FILE).is_file())
        if len(models) != 1:
            found = ", ".join(p.name for p in models) or "none"
            raise UserError(f"spec.model.uri: expected one Triton model folder with {CONFIG_FILE}, found {found}")
        folder = models[0]
    if folder is None:
        raise UserError(f"spec.model.uri: a triton-repository source must be a folder with {CONFIG_FILE}")
    config = read_config(folder / CONFIG_FILE)
    versions = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and any(p.iterdir()))
    if not versions:
        raise UserError(f"spec.model.uri: {folder.name} has no version folder (1/, 2/, ...) with a model file")
    target = staging / ms.name
    shutil.copytree(folder, target, symlinks=False)
    if config.name and config.name != ms.name:
        config.name = ms.name
        write_config(config, target / CONFIG_FILE)
        data["notes"].append(f"config.pbtxt name {folder.name!r} renamed to {ms.name!r}")
    files = sorted(p for p in versions[-1].rglob("*") if p.is_file())
    # The platform's model file (config default_model_filename, else model.onnx/.plan/.pt); the largest file
    # only when there is none (an ONNX model's external data file is larger than the model itself).
    named = config.default_model_filename or PLATFORM_FILES.get(config.platform or config.backend, "")
    main = next((p for p in files if p.name == named), None) or max(files, key=lambda p: p.stat().st_size)
    staged = target / main.relative_to(folder)
    platform = config.platform or config.backend
    data["artifact"] = _artifact_for_repo(staged, staging, platform, data["source"]["sha256"])
    data["verification"] = {"passed": True, "data": "served as is: nothing converted"}
    data["inputs"] = [t.to_api() for t in _specs(config.input)]
    data["outputs"] = [t.to_api() for t in _specs(config.output)]


def _artifact_for_repo(path: Path, staging: Path, platform: str, source: str) -> dict[str, Any]:
    return {
        "uri": path.relative_to(staging).as_posix(),
        "format": platform or "unknown",
        "precision": "as-is",
        "sha256": model_sha256(path) if path.suffix == ".onnx" else file_sha256(path),
        "sizeBytes": model_size(path) if path.suffix == ".onnx" else path.stat().st_size,
        "sourceSha256": source,
    }


PLATFORM_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan", "pytorch_libtorch": "model.pt"}


def _specs(tensors: Any) -> list[TensorSpec]:
    from modelservice.convert.repository import tensor_specs

    return tensor_specs(tensors)
