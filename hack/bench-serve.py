#!/usr/bin/env python3
"""Serving benchmark: Triton with and without dynamic batching against the servers people write instead.

For the digits CNN and a transformer encoder (examples/digits/model.py DigitsEncoderLarge: hidden 384, 4 layers),
both converted to ONNX by ``modelservice.convert`` (same artifact everywhere), at each concurrency:

  (a) Triton (this project's local serve path) with dynamic batching
  (b) Triton without dynamic batching (same model, batch dimension kept)
  (c) the naive server many tutorials show: Flask, model loaded per request, JSON
  (d) what a user would write instead: FastAPI + uvicorn, ONNX Runtime session created once, JSON
  (e) the limit: the same ONNX Runtime session called in-process at batch 1 and batch 32 (no server)

(d) and (e) use the ONNX Runtime session options of Triton's python model (intra-op threads = cores, no
spinning), so differences come from the serving architecture; the naive Flask server uses the defaults.
Every request carries one sample. The load generator is one asyncio process (tritonclient.http.aio for Triton,
aiohttp for Flask/FastAPI); its CPU time is reported as a share of the machine's cores, since on a small machine
it competes with the server. Servers run as subprocesses bound to 127.0.0.1 on free ports and are stopped by pid.

Usage: python hack/bench-serve.py [--duration 8] [--concurrency 1,8,32] [--models cnn,encoder]
                                  [--systems a,b,c,d,e] [--precision fp32] [--json out.json] [--markdown out.md]
Timings on a shared machine are noisy: each cell is one run of --duration seconds after a warm-up; say so.
Cells, the servers and the load generator are shared with bench-serve-text.py (hack/_servebench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "lib"))  # _digits: the example's architectures and ModelService writer
import _digits  # noqa: E402
from _servebench import (  # noqa: E402  (hack/ is on sys.path: this script's folder)
    Cell,
    Measured,
    Report,
    bench_json,
    drive,
    machine,
    make_cell,
    package_version,
    percentiles,
    print_cell,
    publish,
    start_python_server,
)

KINDS = {"cnn": "cnn", "encoder": "encoder-large"}  # bench name -> _digits kind
SYSTEMS = {
    "a": "Triton + dynamic batching",
    "b": "Triton, no dynamic batching",
    "c": "Flask, model loaded per request",
    "d": "FastAPI/uvicorn, model loaded once",
    "e": "in-process ONNX Runtime",
}
MAX_BATCH = 32
Array = NDArray[Any]


# ---------------------------------------------------------------------------------------- the models


def convert_models(kinds: list[str], workdir: Path, precision: str) -> dict[str, Path]:
    """Convert each model with the project's pipeline; returns kind -> converted repository folder."""
    from modelservice.api.loader import load_one
    from modelservice.convert.pipeline import ConvertOptions, convert

    out: dict[str, Path] = {}
    for kind in kinds:
        folder = workdir / kind
        print(f"converting {kind} ({precision}) ...", file=sys.stderr, flush=True)
        _digits.write_source(folder / "src", KINDS[kind], model=_seeded(KINDS[kind]))
        yaml_path = _digits.write_modelservice(
            folder / "modelservice.yaml",
            name=f"bench-{kind}",
            source="src",
            kind=KINDS[kind],
            precision=precision,
            data_uri="src/test.npz",
            serving={"maxBatchSize": MAX_BATCH},
        )
        convert(load_one(yaml_path), folder / "converted", ConvertOptions(cache_dir=workdir / "cache", progress=False))
        out[kind] = folder / "converted"
    return out


def _seeded(kind: str) -> Any:
    """The architecture with seeded weights: the CNN trains in seconds (real accuracy); the large encoder is
    benchmarked untrained (throughput does not depend on the weights; training it takes minutes here)."""
    import torch

    if kind == "cnn":
        return _digits.train(kind)
    torch.manual_seed(0)
    return _digits.build(kind).eval()


def onnx_path(converted: Path) -> Path:
    found = sorted(converted.glob("*/1/model.onnx"))
    if not found:
        raise SystemExit(f"{converted}: no */1/model.onnx (bench needs the onnx target)")
    return found[0]


def triton_repository(
    converted: dict[str, Path], out: Path, threads: int, instances: int
) -> dict[tuple[str, str], str]:
    """A runnable repository with, per model, a batched (a) and an unbatched (b) twin; -> (kind, system) -> name."""
    from modelservice.convert.repository import CONFIG_FILE, read_config, write_config
    from modelservice.serve.pybackend import make_runnable
    from modelservice.serve.triton import find_tritonserver

    merged = out.parent / "converted-merged"
    shutil.rmtree(merged, ignore_errors=True)
    names: dict[tuple[str, str], str] = {}
    for kind, folder in converted.items():
        source = onnx_path(folder).parent.parent
        for system, batching in (("a", True), ("b", False)):
            name = f"{kind}-{'batched' if batching else 'unbatched'}"
            shutil.copytree(source, merged / name)
            config = read_config(merged / name / CONFIG_FILE)
            config.name = name
            config.max_batch_size = MAX_BATCH
            config.ClearField("dynamic_batching")
            config.instance_group[0].count = instances
            if batching:
                config.dynamic_batching.max_queue_delay_microseconds = 100
            write_config(config, merged / name / CONFIG_FILE)
            names[(kind, system)] = name
    make_runnable(merged, out, find_tritonserver(), intra_op_threads=threads)
    return names


# ---------------------------------------------------------------------------------------- the servers

FLASK_APP = """
import sys
import numpy as np
from numpy.typing import NDArray
import onnxruntime as ort
from flask import Flask, jsonify, request

MODEL, PORT = sys.argv[1], int(sys.argv[2])
app = Flask(__name__)

@app.get("/health")
def health():
    return "ok"

@app.post("/predict")
def predict():
    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])  # loaded per request
    x = np.asarray(request.get_json()["image"], dtype=np.float32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    return jsonify({"logits": logits.tolist()})

app.run(host="127.0.0.1", port=PORT, threaded=True)
"""

FASTAPI_APP = """
import sys
import numpy as np
from numpy.typing import NDArray
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

MODEL, PORT, THREADS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = ort.SessionOptions()
options.intra_op_num_threads = THREADS  # the same session options as Triton's python model and (e)
options.inter_op_num_threads = 1
options.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(MODEL, sess_options=options, providers=["CPUExecutionProvider"])  # loaded once
INPUT = session.get_inputs()[0].name
app = FastAPI()

class Request(BaseModel):
    image: list

@app.get("/health")
def health():
    return "ok"

@app.post("/predict")
def predict(body: Request):
    x = np.asarray(body.image, dtype=np.float32)
    (logits,) = session.run(None, {INPUT: x})
    return {"logits": logits.tolist()}

uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
"""


# ------------------------------------------------------------------------------------- load generation


async def bench_triton(url: str, model: str, x: Array, concurrency: int, duration: float, warmup: float) -> Measured:
    import tritonclient.http.aio as aioclient

    client = aioclient.InferenceServerClient(url, conn_limit=max(concurrency, 8))
    sample = x[:1]

    async def send() -> bool:
        item = aioclient.InferInput("image", [1, 1, 8, 8], "FP32")
        item.set_data_from_numpy(sample)
        try:
            result = await client.infer(model, [item])
            return result.as_numpy("logits") is not None
        except Exception:  # counted as an error
            return False

    try:
        return await drive(send, concurrency, duration, warmup)
    finally:
        await client.close()


def bench_in_process(model_file: Path, x: Array, batch: int, threads: int, duration: float) -> Cell:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the same session options as Triton's python model
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(np.resize(x, (batch, 1, 8, 8)))}
    for _ in range(5):
        session.run(None, feed)
    latencies: list[float] = []
    start = time.monotonic()
    while time.monotonic() - start < duration:
        t0 = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - t0)
    seconds = time.monotonic() - start
    p50, p95, p99 = percentiles(latencies)
    return Cell("", "e", 1, len(latencies), 0, seconds, len(latencies) * batch / seconds, p50, p95, p99, 0.0, batch)


# ------------------------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, workdir: Path) -> Report:
    from modelservice.serve.triton import TritonProcess

    kinds = args.models.split(",")
    systems = args.systems.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    report = Report(
        machine={
            **machine("onnxruntime"),
            "tritonserver": "nvidia-pytriton " + package_version("nvidia-pytriton"),
        },
        settings={
            "command": " ".join(["python hack/bench-serve.py", *sys.argv[1:]]),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "precision": args.precision,
            "threads": args.threads,
            "triton_instances": args.instances,
            "triton_threads": args.triton_threads or "cores / instances",
            "max_batch_size": MAX_BATCH,
            "max_queue_delay_us": 100,
            "concurrency": levels,
        },
    )
    x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    converted = convert_models(kinds, workdir, args.precision)

    def add(cell: Cell) -> None:
        report.cells.append(cell)
        print_cell(cell)

    if "e" in systems:
        for kind in kinds:
            for batch in (1, MAX_BATCH):
                cell = bench_in_process(onnx_path(converted[kind]), x, batch, args.threads, args.duration)
                cell.model = kind
                add(cell)

    if {"a", "b"} & set(systems):
        names = triton_repository(converted, workdir / "repository", args.triton_threads, args.instances)
        with TritonProcess(workdir / "repository", workdir / "triton.log", cache_dir=workdir / "cache") as triton:
            for kind in kinds:
                for system in ("a", "b"):
                    if system not in systems:
                        continue
                    for level in levels:
                        result = asyncio.run(
                            bench_triton(triton.http_url, names[(kind, system)], x, level, args.duration, args.warmup)
                        )
                        add(make_cell(kind, system, level, result))

    for system, source in (("d", FASTAPI_APP), ("c", FLASK_APP)):
        if system not in systems:
            continue
        for kind in kinds:
            extra = [str(args.threads)] if system == "d" else []
            server = start_python_server(source, [str(onnx_path(converted[kind])), *extra], workdir, f"{system}-{kind}")
            body = json.dumps({"image": x[:1].tolist()}).encode()
            try:
                for level in levels:
                    result = asyncio.run(
                        bench_json(f"{server.url}/predict", [body], "logits", level, args.duration, args.warmup)
                    )
                    add(make_cell(kind, system, level, result))
            finally:
                server.stop()

    report.goals = goals(report.cells)
    return report


def _find(cells: list[Cell], model: str, system: str, concurrency: int, batch: int = 1) -> Cell | None:
    for cell in cells:
        if (cell.model, cell.system, cell.concurrency, cell.batch) == (model, system, concurrency, batch):
            return cell
    return None


def goals(cells: list[Cell]) -> list[dict[str, Any]]:
    """The issue's goals on the transformer: c=32 (a) >= 85% of best (e) and (a) >= (d); c=1 p50 (a) - (b) <= 1 ms."""
    found: list[dict[str, Any]] = []
    a32, d32 = _find(cells, "encoder", "a", 32), _find(cells, "encoder", "d", 32)
    e_best = max((c.throughput for c in cells if c.model == "encoder" and c.system == "e"), default=None)
    if a32 and e_best:
        found.append(
            {
                "goal": "encoder c=32: (a) >= 85% of best in-process (e)",
                "value": f"{a32.throughput:.1f} / {e_best:.1f} = {a32.throughput / e_best:.0%}",
                "met": a32.throughput >= 0.85 * e_best,
            }
        )
    if a32 and d32:
        found.append(
            {
                "goal": "encoder c=32: (a) >= (d)",
                "value": f"{a32.throughput:.1f} vs {d32.throughput:.1f}",
                "met": a32.throughput >= d32.throughput,
            }
        )
    a1, b1 = _find(cells, "encoder", "a", 1), _find(cells, "encoder", "b", 1)
    if a1 and b1:
        found.append(
            {
                "goal": "encoder c=1: p50 (a) within 1 ms of (b)",
                "value": f"{a1.p50_ms:.2f} ms vs {b1.p50_ms:.2f} ms",
                "met": a1.p50_ms - b1.p50_ms <= 1.0,
            }
        )
    return found


def markdown(report: Report) -> str:
    lines = [
        f"`{report.settings['command']}`",
        "",
        f"Machine: {report.machine['cpus']} CPUs, {report.machine['platform']}; "
        f"precision {report.settings['precision']}, "
        f"{report.settings['threads']} ONNX Runtime intra-op threads, {report.settings['duration_s']} s per cell "
        f"after {report.settings['warmup_s']} s warm-up; one run per cell on a shared machine (noisy).",
        "",
        f"| model | system | concurrency | samples/s | p50 ms | p95 ms | p99 ms | load generator CPU "
        f"(of {report.machine['cpus']} cores) | errors | machine load (1 min) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in report.cells:
        system = f"({c.system}) {SYSTEMS[c.system]}" + (f", batch {c.batch}" if c.system == "e" else "")
        level = "-" if c.system == "e" else str(c.concurrency)
        share = c.loadgen_cores / (report.machine["cpus"] or 1)
        cores = "-" if c.system == "e" else f"{c.loadgen_cores:.2f} ({share:.0%})"
        lines.append(
            f"| {c.model} | {system} | {level} | {c.throughput:.1f} | {c.p50_ms:.2f} | {c.p95_ms:.2f} | "
            f"{c.p99_ms:.2f} | {cores} | {c.errors} | {c.load_average:.1f} |"
        )
    if report.goals:
        lines += ["", "| goal | measured | met |", "| --- | --- | --- |"]
        lines += [f"| {g['goal']} | {g['value']} | {'yes' if g['met'] else 'NO'} |" for g in report.goals]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each cell")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--models", default="cnn,encoder")
    parser.add_argument("--systems", default="a,b,c,d,e")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--instances", type=int, default=1, help="Triton model instances (instance_group count)")
    parser.add_argument(
        "--triton-threads", type=int, default=0, help="intra-op threads per Triton instance (0: cores / instances)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep models, logs and repositories here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    publish(report, markdown(report), args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
