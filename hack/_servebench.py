"""Shared by the serving benchmarks (bench-serve.py, bench-serve-text.py): result cells, percentiles, the
subprocess servers people write instead of Triton, and the asyncio load generator with its CPU accounting.

The load generator is one asyncio process; ``concurrency`` workers send back to back for ``warmup + duration``
seconds and only the last ``duration`` seconds are measured. Its CPU time (all threads of this process) is
reported per wall second, as cores busy: on a small machine it competes with the server it measures.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import resource
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------- results


@dataclass
class Cell:
    model: str
    system: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # samples per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    loadgen_cores: float  # CPU seconds of the load generator per wall second (cores busy)
    batch: int = 1
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-minute, when the cell ended


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Measured:
    """What one load-generator run saw: latencies of the measured window, and the probe's snapshots taken
    when the window opened and closed (empty without a probe)."""

    latencies: list[float]
    errors: int
    seconds: float
    loadgen_cores: float
    probes: list[Any] = field(default_factory=list)


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    if not latencies:
        return (float("nan"),) * 3
    ms = np.array(latencies) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(np.percentile(ms, 99))


def make_cell(model: str, system: str, concurrency: int, measured: Measured) -> Cell:
    p50, p95, p99 = percentiles(measured.latencies)
    return Cell(
        model,
        system,
        concurrency,
        len(measured.latencies),
        measured.errors,
        measured.seconds,
        len(measured.latencies) / measured.seconds,
        p50,
        p95,
        p99,
        measured.loadgen_cores,
    )


def print_cell(cell: Cell) -> None:
    print(
        f"{cell.model:8} {cell.system} c={cell.concurrency:<3} b={cell.batch:<3} {cell.throughput:9.1f}/s "
        f"p50 {cell.p50_ms:8.2f} p95 {cell.p95_ms:8.2f} p99 {cell.p99_ms:8.2f} ms  "
        f"loadgen {cell.loadgen_cores:.2f} cores  errors {cell.errors}  load {cell.load_average:.1f}",
        file=sys.stderr,
        flush=True,
    )


def package_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine(*packages: str) -> dict[str, Any]:
    """The machine and the versions of ``packages`` (the runtimes being compared)."""
    found: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor(),
    }
    found.update({package: package_version(package) for package in packages})
    return found


# ---------------------------------------------------------------------------------------- the servers


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_python_server(source: str, args: list[str], workdir: Path, name: str, ready_timeout: float = 60.0) -> Server:
    """Run ``source`` as ``python SCRIPT args[0] PORT args[1:]`` (a free port on 127.0.0.1); wait for /health."""
    from modelservice.serve.triton import free_port

    port = free_port()
    script = workdir / f"{name}.py"
    script.write_text(textwrap.dedent(source))
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(script), args[0], str(port), *args[1:]], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited; see {workdir / (name + '.log')}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return Server(process, url)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{name} not ready after {ready_timeout:.0f}s")


# ------------------------------------------------------------------------------------- load generation


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(
    send: Callable[[], Awaitable[bool]],
    concurrency: int,
    duration: float,
    warmup: float,
    probe: Callable[[], Awaitable[Any]] | None = None,
) -> Measured:
    """``concurrency`` workers send back to back until the measured window has closed; ``probe`` (e.g. server
    statistics, on a connection of its own: the workers' pool would starve it) is awaited when the window opens
    and when it closes, under the same load."""
    latencies: list[float] = []
    errors = 0
    measuring = False
    finished = False
    probes: list[Any] = []

    async def worker() -> None:
        nonlocal errors
        while not finished:
            start = time.perf_counter()
            ok = await send()
            elapsed = time.perf_counter() - start
            if measuring:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors += 1

    async def clock() -> tuple[float, float]:
        nonlocal measuring, finished
        await asyncio.sleep(warmup)
        if probe is not None:
            probes.append(await probe())
        measuring, wall0, cpu0 = True, time.monotonic(), cpu_seconds()
        await asyncio.sleep(duration)
        measuring = False
        wall = time.monotonic() - wall0
        cores = (cpu_seconds() - cpu0) / wall
        if probe is not None:
            probes.append(await probe())
        finished = True
        return wall, cores

    timing = asyncio.ensure_future(clock())
    await asyncio.gather(timing, *(worker() for _ in range(concurrency)))
    wall, cores = timing.result()
    return Measured(latencies, errors, wall, cores, probes)


async def bench_json(
    url: str, bodies: Sequence[bytes], answer: str, concurrency: int, duration: float, warmup: float
) -> Measured:
    """POST ``bodies`` (JSON, taken in turn) to ``url``; a request succeeds with 200 and ``answer`` in the reply."""
    import aiohttp

    cycle = itertools.cycle(bodies)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=max(concurrency, 8))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def send() -> bool:
            try:
                async with session.post(url, data=next(cycle), headers=headers) as response:
                    payload = await response.json()
                    return response.status == 200 and answer in payload
            except (aiohttp.ClientError, TimeoutError):
                return False

        return await drive(send, concurrency, duration, warmup)


# ------------------------------------------------------------------------------- Triton's statistics


@dataclass
class Stage:
    """One Triton model over one measured window: deltas of its /v2/models/<name>/stats."""

    system: str
    concurrency: int
    model: str
    requests: int
    executions: int
    mean_batch: float  # requests per execution: the batches the dynamic batcher formed
    batch_sizes: dict[int, int]  # batch size -> executions
    request_ms: float  # per request: time in the model, queue + compute (success duration)
    queue_ms: float  # per request
    input_ms: float  # per execution
    infer_ms: float  # per execution
    output_ms: float  # per execution
    busy_share: float  # execution time / wall time


def _count_ns(stats: dict[str, Any], key: str) -> tuple[int, int]:
    entry = stats.get(key) or {}
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def _per_execution(stats: dict[str, Any]) -> dict[int, dict[str, tuple[int, int]]]:
    keys = ("compute_input", "compute_infer", "compute_output")
    return {int(b["batch_size"]): {key: _count_ns(b, key) for key in keys} for b in stats.get("batch_stats", [])}


def stage(
    system: str, concurrency: int, model: str, before: dict[str, Any], after: dict[str, Any], wall: float
) -> Stage:
    """Deltas of one model's statistics (a ``model_stats`` entry); Triton's inference_stats add up per request,
    its batch_stats per execution."""

    def per_request(key: str) -> float:
        (c0, n0), (c1, n1) = _count_ns(before["inference_stats"], key), _count_ns(after["inference_stats"], key)
        return (n1 - n0) / (c1 - c0) / 1e6 if c1 > c0 else float("nan")

    was, now = _per_execution(before), _per_execution(after)
    sizes: dict[int, int] = {}
    spent = {"compute_input": 0, "compute_infer": 0, "compute_output": 0}
    for size, figures in now.items():
        old = was.get(size, {})
        count = figures["compute_infer"][0] - old.get("compute_infer", (0, 0))[0]
        if count:
            sizes[size] = count
        for key in spent:
            spent[key] += figures[key][1] - old.get(key, (0, 0))[1]
    requests = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    runs = sum(sizes.values()) or 1
    return Stage(
        system,
        concurrency,
        model,
        requests,
        executions,
        requests / executions if executions else float("nan"),
        dict(sorted(sizes.items())),
        per_request("success"),
        per_request("queue"),
        spent["compute_input"] / runs / 1e6,
        spent["compute_infer"] / runs / 1e6,
        spent["compute_output"] / runs / 1e6,
        sum(spent.values()) / 1e9 / wall,
    )
