"""Shared by the serving benchmarks (bench-serve.py, bench-serve-text.py): result cells, percentiles, the
subprocess servers people write instead of Triton, and the asyncio load generator with its CPU accounting.

The load generator is one asyncio process; ``concurrency`` workers send back to back for ``warmup + duration``
seconds and only the last ``duration`` seconds are measured. Its CPU time (all threads of this process) is
reported per wall second, as cores busy: on a small machine it competes with the server it measures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
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
from dataclasses import asdict, dataclass, field
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
    other_cores: float = float("nan")  # CPU used by processes outside this benchmark's tree (other people's work)


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
    other_cores: float = float("nan")


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
        other_cores=measured.other_cores,
    )


def print_cell(cell: Cell) -> None:
    print(
        f"{cell.model:8} {cell.system} c={cell.concurrency:<3} b={cell.batch:<3} {cell.throughput:9.1f}/s "
        f"p50 {cell.p50_ms:8.2f} p95 {cell.p95_ms:8.2f} p99 {cell.p99_ms:8.2f} ms  "
        f"loadgen {cell.loadgen_cores:.2f} cores  errors {cell.errors}  load {cell.load_average:.1f}  "
        f"others {cell.other_cores:.2f} cores",
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


def _machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _own_ticks() -> int:
    """CPU ticks used so far by this process and its descendants (the servers, Triton's python stubs)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry)], ticks[int(entry)] = int(fields[1]), int(fields[11]) + int(fields[12])
    family, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in family]
        family.update(children)
        frontier += children
    return sum(ticks.get(pid, 0) for pid in family)


def other_cores_meter() -> Callable[[], float]:
    """Start measuring the CPU that processes outside this benchmark use; the returned function stops and says
    how many cores they kept busy on average. Linux only (/proc); NaN elsewhere."""
    try:
        (busy0, all0), own0 = _machine_ticks(), _own_ticks()
    except OSError:
        return lambda: float("nan")

    def stop() -> float:
        (busy1, all1), own1 = _machine_ticks(), _own_ticks()
        elapsed = all1 - all0
        return (os.cpu_count() or 1) * max(0, busy1 - busy0 - (own1 - own0)) / elapsed if elapsed else float("nan")

    return stop


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

    async def clock() -> tuple[float, float, float]:
        nonlocal measuring, finished
        await asyncio.sleep(warmup)
        if probe is not None:
            probes.append(await probe())
        others = other_cores_meter()
        measuring, wall0, cpu0 = True, time.monotonic(), cpu_seconds()
        await asyncio.sleep(duration)
        measuring = False
        wall = time.monotonic() - wall0
        cores = (cpu_seconds() - cpu0) / wall
        other = others()
        if probe is not None:
            probes.append(await probe())
        finished = True
        return wall, cores, other

    timing = asyncio.ensure_future(clock())
    await asyncio.gather(timing, *(worker() for _ in range(concurrency)))
    wall, cores, other = timing.result()
    return Measured(latencies, errors, wall, cores, probes, other)


def merge(runs: Sequence[Measured]) -> Measured:
    """Several measured windows of the same cell (rounds) as one."""
    seconds = sum(run.seconds for run in runs)
    return Measured(
        [latency for run in runs for latency in run.latencies],
        sum(run.errors for run in runs),
        seconds,
        sum(run.loadgen_cores * run.seconds for run in runs) / seconds,
        [probe for run in runs for probe in run.probes],
        sum(run.other_cores * run.seconds for run in runs) / seconds,
    )


async def bench_json(
    url: str,
    bodies: Sequence[bytes],
    answer: str,
    concurrency: int,
    duration: float,
    warmup: float,
    probe: Callable[[], Awaitable[Any]] | None = None,
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

        return await drive(send, concurrency, duration, warmup, probe)


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


Counters = dict[str, int]


def counters(entry: dict[str, Any]) -> Counters:
    """One ``model_stats`` entry of /v2/models/<name>/stats as flat counters, so windows can be subtracted and
    added: inference_count, execution_count, ``<stat>.count``/``.ns`` of inference_stats (added up per request)
    and ``batch.<size>.<stat>.count``/``.ns`` of batch_stats (per execution)."""
    flat = {key: int(entry.get(key, 0)) for key in ("inference_count", "execution_count")}
    for key, value in (entry.get("inference_stats") or {}).items():
        flat[f"{key}.count"], flat[f"{key}.ns"] = int(value.get("count", 0)), int(value.get("ns", 0))
    for batch in entry.get("batch_stats") or []:
        for key in ("compute_input", "compute_infer", "compute_output"):
            value = batch.get(key) or {}
            prefix = f"batch.{int(batch['batch_size'])}.{key}"
            flat[f"{prefix}.count"], flat[f"{prefix}.ns"] = int(value.get("count", 0)), int(value.get("ns", 0))
    return flat


def subtract(after: Counters, before: Counters) -> Counters:
    return {key: value - before.get(key, 0) for key, value in after.items()}


def add(a: Counters, b: Counters) -> Counters:
    return {key: a.get(key, 0) + b.get(key, 0) for key in a.keys() | b.keys()}


def stage(system: str, concurrency: int, model: str, counts: Counters, wall: float) -> Stage:
    """A Stage from one model's counters over measured windows lasting ``wall`` seconds in all."""

    def per_request(key: str) -> float:
        count = counts.get(f"{key}.count", 0)
        return counts.get(f"{key}.ns", 0) / count / 1e6 if count else float("nan")

    sizes: dict[int, int] = {}
    spent = {"compute_input": 0, "compute_infer": 0, "compute_output": 0}
    for key, value in counts.items():
        parts = key.split(".")
        if parts[0] != "batch":
            continue
        if parts[2] == "compute_infer" and parts[3] == "count" and value:
            sizes[int(parts[1])] = value
        if parts[3] == "ns":
            spent[parts[2]] += value
    requests, executions = counts.get("inference_count", 0), counts.get("execution_count", 0)
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


def publish(report: Any, table: str, json_path: Path | None, markdown_path: Path | None) -> None:
    """Print the markdown table and write it and the report (a dataclass, as JSON) where asked."""
    print(table)
    if json_path:
        json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    if markdown_path:
        markdown_path.write_text(table)
