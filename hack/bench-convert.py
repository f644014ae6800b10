#!/usr/bin/env python3
"""Benchmark ``modelservice convert`` on the reference models: torch eager fp32 vs ONNX Runtime fp32, fp16,
int8 dynamic, int8 static (and what ``precision: auto`` picks).

    .venv/bin/python hack/bench-convert.py [--models cnn encoder-large] [--json bench-convert.json]
    .venv/bin/python hack/bench-convert.py --models bert-random minilm --json hack/results/bench-convert-text.json \
        --markdown hack/results/bench-convert-text.md

``bert-random`` and ``minilm`` are BERT-class sentence encoders (hidden 384, 6 layers; random weights, and the
real pretrained all-MiniLM-L6-v2): see hack/_benchtext.py for what is measured there (batch 32, sequence 128,
2 threads, against a plain fp32 ONNX export, min cosine to torch on real sentences, ``auto``'s conversion time).

For each model (DigitsCNN, about 38k parameters; DigitsEncoderLarge, hidden 384, 4 layers, about 7M
parameters) it trains the model on scikit-learn's digits (seeded; the encoder's weights are cached under
~/.cache/modelservice/bench), runs the real conversion pipeline once per precision (no cache), and measures
every artifact: file size, accuracy on the digits test split, latency at batch 1 (1 thread) and throughput at
batch 32 with 1 and 2 threads. Latencies are medians over interleaved rounds (every variant measured in turn,
so load from other processes hits all alike); on a shared machine they stay noisy, so read ratios, not
absolute numbers. Prints a markdown table and the goal checks, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))

import numpy as np  # noqa: E402

import _benchtext  # noqa: E402
import _digits  # noqa: E402

VARIANTS = [  # name, precision, quantization method
    ("fp32", "fp32", "dynamic"),
    ("fp16", "fp16", "dynamic"),
    ("int8-dynamic", "int8", "dynamic"),
    ("int8-static", "int8", "static"),
    ("auto", "auto", "static"),
]
CACHE = Path.home() / ".cache" / "modelservice" / "bench"


def trained(kind: str) -> Any:
    """The trained model; the large encoder's weights are cached (training it takes minutes on 2 cores)."""
    from safetensors.torch import load_file, save_file

    if kind != "encoder-large":
        return _digits.train(kind)
    cached = CACHE / "encoder-large.safetensors"
    if cached.is_file():
        model = _digits.build(kind)
        model.load_state_dict(load_file(str(cached)))
        return model.eval()
    started = time.perf_counter()
    model = _digits.train(kind)
    print(f"trained {kind} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file(_digits.state_dict(model), str(cached))
    return model


def convert_variant(
    folder: Path, kind: str, name: str, precision: str, method: str
) -> tuple[dict[str, Any], Path, float]:
    from modelservice.api.loader import load_one
    from modelservice.convert.pipeline import ConvertOptions, convert

    yaml_path = _digits.write_modelservice(
        folder / f"{name}.yaml",
        name="digits",
        source="src",
        kind=kind,
        precision=precision,
        method=method,
        data_uri="src/test.npz",
        calibration_uri="src/calib.npz",
    )
    if name != "auto":
        # Fixed precisions are built with a generous budget so that every variant gets measured; the table
        # reports the accuracy each really has. auto keeps the default budget (1 pp), as a user gets it.
        yaml_path.write_text(yaml_path.read_text().replace("accuracyBudget: 0.01", "accuracyBudget: 0.05"))
    out = folder / f"out-{name}"
    started = time.perf_counter()
    report = convert(load_one(yaml_path), out, ConvertOptions(progress=False, use_cache=False))
    return report.data, out / "digits" / "1" / "model.onnx", time.perf_counter() - started


def ort_accuracy(path: Path, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
    from modelservice.convert.verify import ort_runner, run_batched

    logits = run_batched(ort_runner(path, threads=2), {"image": x}, 64)[0]
    return float((logits.argmax(axis=1) == y).mean())


def torch_latency(model: Any, batch: np.ndarray[Any, Any], threads: int, rounds: int = 30) -> float:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tensor = torch.from_numpy(batch)
        times = []
        with torch.inference_mode():
            model(tensor)
            for _ in range(rounds):
                started = time.perf_counter()
                model(tensor)
                times.append(time.perf_counter() - started)
        return float(np.median(times)) * 1000
    finally:
        torch.set_num_threads(previous)


def bench_model(kind: str, workdir: Path, seconds: float) -> dict[str, Any]:
    from modelservice.convert.measure import interleaved_latency
    from modelservice.convert.verify import ort_runner

    split = _digits.load_split()
    model = trained(kind)
    folder = workdir / kind
    _digits.write_source(folder / "src", kind, model)
    rows: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    for name, precision, method in VARIANTS:
        print(f"{kind}: converting {name}", file=sys.stderr, flush=True)
        report, path, wall = convert_variant(folder, kind, name, precision, method)
        candidate = report.get("candidates", [{}])
        chosen = report["chosen"]["name"]
        stats: dict[str, Any] = next((c for c in candidate if c["name"] == chosen), {})
        rows[name] = {
            "sizeBytes": path.stat().st_size,
            "accuracy": ort_accuracy(path, split.x_test, split.y_test),
            "convertSeconds": round(wall, 2),
            "quantizedOps": stats.get("quantizedOps"),
            "floatOps": stats.get("floatOps"),
            "chosen": chosen,
            "exporter": report.get("export", {}).get("exporter"),
        }
        if name == "auto":
            rows[name]["reason"] = report["chosen"]["reason"]
        paths[name] = path
    x1, x32 = split.x_test[:1], split.x_test[:32]
    print(f"{kind}: measuring", file=sys.stderr, flush=True)
    runners = {t: {name: ort_runner(path, t) for name, path in paths.items()} for t in (1, 2)}
    lat1 = interleaved_latency(runners[1], {"image": x1}, budget_s=seconds)
    lat32 = {t: interleaved_latency(runners[t], {"image": x32}, budget_s=seconds) for t in (1, 2)}
    for name in rows:
        rows[name]["latencyBatch1Ms"] = round(lat1[name], 4)
        for t in (1, 2):
            rows[name][f"throughputBatch32Threads{t}"] = round(32 / lat32[t][name] * 1000, 1)
    eager = {
        "sizeBytes": sum(p.numel() * p.element_size() for p in model.state_dict().values()),
        "accuracy": _digits.accuracy(model),
        "latencyBatch1Ms": round(torch_latency(model, x1, 1), 4),
        "throughputBatch32Threads1": round(32 / torch_latency(model, x32, 1) * 1000, 1),
        "throughputBatch32Threads2": round(32 / torch_latency(model, x32, 2) * 1000, 1),
    }
    return {"torchEager": eager, **rows}


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | variant | size KiB | size vs fp32 | int8 ops | accuracy % | Δ pp | batch-1 ms (1 thr) "
        "| batch-32 /s (1 thr) | batch-32 /s (2 thr) | vs ORT fp32 (b32, 1 thr) | convert s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, rows in results.items():
        fp32 = rows["fp32"]
        for name, row in rows.items():
            label = "torch eager fp32" if name == "torchEager" else f"ORT {name}"
            if name == "auto":
                label += f" → {row['chosen']}"
            ops = (
                ""
                if row.get("quantizedOps") is None
                else f"{row['quantizedOps']}/{row['quantizedOps'] + row['floatOps']}"
            )
            lines.append(
                f"| {kind} | {label} | {row['sizeBytes'] / 1024:.1f} | {row['sizeBytes'] / fp32['sizeBytes']:.2f}x "
                f"| {ops} | {100 * row['accuracy']:.2f} | {100 * (row['accuracy'] - fp32['accuracy']):+.2f} "
                f"| {row['latencyBatch1Ms']:.3f} | {row['throughputBatch32Threads1']:.0f} "
                f"| {row['throughputBatch32Threads2']:.0f} "
                f"| {row['throughputBatch32Threads1'] / fp32['throughputBatch32Threads1']:.2f}x "
                f"| {row.get('convertSeconds', '')} |"
            )
    return "\n".join(lines)


def goals(results: dict[str, dict[str, Any]]) -> list[tuple[str, bool]]:
    checks: list[tuple[str, bool]] = []
    encoder = results.get("encoder-large")
    if encoder:
        fp32, int8 = encoder["fp32"], encoder["int8-dynamic"]
        speedup = int8["throughputBatch32Threads1"] / fp32["throughputBatch32Threads1"]
        checks.append(
            (f"encoder int8 throughput at batch 32 >= 1.7x ORT fp32 (1 thread): {speedup:.2f}x", speedup >= 1.7)
        )
        ratio = int8["sizeBytes"] / fp32["sizeBytes"]
        checks.append((f"encoder int8 size <= 0.30x fp32: {ratio:.2f}x", ratio <= 0.30))
        drop = 100 * (fp32["accuracy"] - int8["accuracy"])
        checks.append((f"encoder int8 accuracy drop <= 0.5 pp: {drop:.2f} pp", drop <= 0.5))
    for kind, rows in results.items():
        auto, fp32 = rows["auto"], rows["fp32"]
        ok = auto["throughputBatch32Threads1"] >= 0.95 * fp32["throughputBatch32Threads1"]
        checks.append((f"{kind}: auto picked {auto['chosen']}, not slower than fp32 (5 % noise margin)", ok))
        slowest = max(row.get("convertSeconds", 0) for row in rows.values())
        checks.append((f"{kind}: every conversion < 30 s (slowest {slowest:.1f} s)", slowest < 30))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["cnn", "encoder-large"],
        choices=["mlp", "cnn", "encoder", "encoder-large", *_benchtext.TEXT_MODELS],
    )
    parser.add_argument("--json", default="bench-convert.json", help="where to write the results")
    parser.add_argument("--markdown", help="also write the tables and goal checks here")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per batch size and thread count")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    text_results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        for kind in args.models:
            if kind in _benchtext.TEXT_MODELS:
                text_results[kind] = _benchtext.bench_text_model(kind, Path(tmp), args.seconds)
            else:
                results[kind] = bench_model(kind, Path(tmp), args.seconds)
    import onnxruntime
    import torch

    tables = [table(results)] if results else []
    tables += [_benchtext.table(text_results)] if text_results else []
    checks = goals(results) + _benchtext.goals(text_results)
    loads = [
        f"- {kind}: load average {r['load']['before']} before, {r['load']['after']} after"
        for kind, r in text_results.items()
    ]
    markdown = "\n\n".join(tables) + "\n\n" + "\n".join(f"- [{'x' if ok else ' '}] {text}" for text, ok in checks)
    markdown += ("\n\n" + "\n".join(loads)) if loads else ""
    print(markdown)
    if args.markdown:
        Path(args.markdown).write_text(markdown + "\n", encoding="utf-8")
    document = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": __import__("os").cpu_count(),
            "vnni": __import__("modelservice.convert.quantize", fromlist=["cpu_vnni"]).cpu_vnni(),
        },
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "transformers": __import__("transformers").__version__,
        },
        "note": "medians over interleaved rounds on a shared machine: compare ratios. Fixed-precision variants are "
        "built with accuracyBudget 0.05 so each is measured; auto uses the default 0.01.",
        "results": {**results, **text_results},
        "goals": [{"goal": text, "met": ok} for text, ok in checks],
    }
    Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
