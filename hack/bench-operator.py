#!/usr/bin/env python3
"""Benchmark the operator: N ModelServices in the API emulator, `modelservice run` as a subprocess.

Measures
- time from the first ModelService created until every one has its children (claim, ConfigMap, Job, Service)
  and a status (phase Converting);
- write requests (POST/PATCH/PUT/DELETE) and all requests (watches excluded) per ModelService to converge;
- write requests during a periodic resync when nothing changed (every ModelService reconciled once more);
- with --full, also plays the cluster (every Job succeeds, every Deployment becomes ready) and measures the time
  and writes until every ModelService is Ready;
- the operator's peak RSS (VmHWM) and CPU time, and the emulator's CPU time (what dominates).

The emulator (KMock + tests/operator/emulator.py) runs in this process, the operator in its own; both share the
machine. Usage: hack/bench-operator.py [--count 1000] [--full] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "operator"))

import aiohttp  # noqa: E402
from kmock import Server  # noqa: E402
from kmock import resource as kresource  # noqa: E402

from emulator import MS_RESOURCE, ApiServerEmulator, declare, write_kubeconfig  # noqa: E402

NS = "bench"
JOBS = kresource("batch", "v1", "jobs")
DEPLOYMENTS = kresource("apps", "v1", "deployments")
PODS = kresource("", "v1", "pods")
WRITES = {"POST", "PATCH", "PUT", "DELETE"}
SUMMARY = json.dumps(
    {
        "artifact": {"uri": "pvc://m/x", "format": "onnx", "precision": "fp32", "sha256": "a" * 64, "sizeBytes": 1},
        "verification": {"maxAbsError": 0.0, "passed": True},
    }
)


def modelservice(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": f"model-{index:04d}", "namespace": NS},
        "spec": {
            "model": {"uri": f"s3://models/m{index}/model.onnx", "format": "onnx"},
            "conversion": {"target": "onnx", "precision": "fp32"},
            "serving": {"replicas": 1},
        },
    }


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a process."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return cpu, int(hwm.group(1)) * 1024 if hwm else 0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Counter:
    """Requests the emulator served since a mark (the bench itself writes without HTTP)."""

    def __init__(self, emulator: ApiServerEmulator) -> None:
        self.emulator = emulator
        self.mark = emulator.request_count

    def since(self) -> tuple[int, int]:
        requests = list(self.emulator._requests)[self.mark :]
        non_watch = [r for r in requests if r.params.get("watch") != "true"]
        return sum(1 for r in non_watch if r.method.value in WRITES), len(non_watch)


def converged(emulator: ApiServerEmulator, names: list[str], phase: str) -> int:
    done = 0
    for name in names:
        obj = emulator.objects[MS_RESOURCE, NS, name]
        if (dict(obj.raw).get("status") or {}).get("phase") == phase:
            done += 1
    return done


def check_children(emulator: ApiServerEmulator, names: list[str]) -> None:
    """Every ModelService that reports Converting has its claim, ConfigMap, Job and Service, owned by it."""
    wanted = ("persistentvolumeclaims", "configmaps", "jobs", "services")
    owners: dict[str, set[str]] = {name: set() for name in names}
    for (res, _, _), obj in emulator.objects.items():
        if obj.deleted or res.plural not in wanted:
            continue
        raw = dict(obj.raw)
        for ref in raw["metadata"].get("ownerReferences") or []:
            if ref["name"] in owners:
                owners[ref["name"]].add(res.plural)
    missing = [name for name, kinds in owners.items() if len(kinds) != len(wanted)]
    if missing:
        raise SystemExit(f"{len(missing)} ModelServices lack children, e.g. {missing[0]}: {owners[missing[0]]}")


async def wait_all(emulator: ApiServerEmulator, names: list[str], phase: str, timeout: float) -> float:
    started = time.monotonic()
    while True:
        done = converged(emulator, names, phase)
        if done == len(names):
            return time.monotonic() - started
        say(f"{done}/{len(names)} {phase}")
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timeout: {done}/{len(names)} reached {phase} after {timeout}s")
        await asyncio.sleep(1.0)


async def play_cluster(emulator: ApiServerEmulator, names: list[str]) -> None:
    """Every conversion succeeds: a pod with the summary, the Job Complete."""
    jobs = {j["metadata"]["labels"].get("modelservice.dev/name"): j for j in emulator.items(JOBS, NS)}
    for name in names:
        job_name = jobs[name]["metadata"]["name"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{job_name}-p", "namespace": NS, "labels": {"job-name": job_name}},
            "status": {"containerStatuses": [{"name": "c", "state": {"terminated": {"message": SUMMARY}}}]},
        }
        await emulator.put_object(PODS, pod)
        await emulator.patch_object(PODS, NS, pod["metadata"]["name"], {"status": pod["status"]}, "status")
        done = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        await emulator.patch_object(JOBS, NS, job_name, {"status": done}, "status")


async def make_ready(emulator: ApiServerEmulator, names: list[str], timeout: float) -> None:
    pending = set(names)
    started = time.monotonic()
    while pending:
        for name in sorted(pending):
            dep = emulator.get(DEPLOYMENTS, NS, name)
            if dep is None:
                continue
            ready = {"observedGeneration": dep["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1}
            ready |= {"readyReplicas": 1, "availableReplicas": 1}
            await emulator.patch_object(DEPLOYMENTS, NS, name, {"status": ready}, "status")
            pending.discard(name)
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timeout: {len(pending)} Deployments never appeared")
        await asyncio.sleep(0.25)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"count": args.count, "cpus": os.cpu_count()}
    async with ApiServerEmulator() as emulator, Server(emulator):
        declare(emulator, namespaces=(NS,))
        workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", str(emulator.url).rstrip("/"))
        metrics_port, health_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MODELSERVICE_RESYNC_SECONDS": str(args.resync)}
        log = (workdir / "operator.log").open("wb")
        profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        process = await asyncio.create_subprocess_exec(
            sys.executable, *profile, "-m", "modelservice.cli", "run",
            "--metrics-port", str(metrics_port), "--health-port", str(health_port),
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            await wait_healthy(health_port)
            say(f"operator up (pid {process.pid}, log {workdir / 'operator.log'}); creating {args.count}")
            cpu0, _ = proc_stat(process.pid)
            emulator_cpu0 = own_cpu()
            names = [f"model-{i:04d}" for i in range(args.count)]
            counter = Counter(emulator)
            started = time.monotonic()
            for index in range(args.count):
                await emulator.put_object(MS_RESOURCE, modelservice(index))
            results["create_seconds"] = round(time.monotonic() - started, 2)
            say(f"created in {results['create_seconds']}s; waiting for children and status")
            await wait_all(emulator, names, "Converting", args.timeout)
            results["converge_seconds"] = round(time.monotonic() - started, 2)
            writes, requests = counter.since()
            check_children(emulator, names)
            results["converge_writes_per_ms"] = round(writes / args.count, 2)
            results["converge_requests_per_ms"] = round(requests / args.count, 2)
            cpu1, _ = proc_stat(process.pid)
            results["converge_operator_cpu_seconds"] = round(cpu1 - cpu0, 2)
            results["converge_emulator_cpu_seconds"] = round(own_cpu() - emulator_cpu0, 2)

            say(f"converged in {results['converge_seconds']}s; waiting for a resync")
            # A resync: every ModelService reconciled once more, nothing changed.
            await asyncio.sleep(1.0)
            reconciles = await metric(metrics_port, "modelservice_reconciles_total")
            counter = Counter(emulator)
            resync_started = time.monotonic()
            while await metric(metrics_port, "modelservice_reconciles_total") < reconciles + args.count:
                if time.monotonic() - resync_started > args.resync * 2 + args.timeout:
                    raise SystemExit("no resync happened")
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)
            writes, requests = counter.since()
            results["resync_writes"] = writes
            results["resync_requests"] = requests

            say(f"resync: {results['resync_writes']} writes")
            if args.full:
                counter = Counter(emulator)
                started = time.monotonic()
                await play_cluster(emulator, names)
                await wait_all(emulator, names, "Deploying", args.timeout)
                await make_ready(emulator, names, args.timeout)
                await wait_all(emulator, names, "Ready", args.timeout)
                results["ready_seconds"] = round(time.monotonic() - started, 2)
                writes, requests = counter.since()
                results["ready_writes_per_ms"] = round(writes / args.count, 2)
                results["ready_requests_per_ms"] = round(requests / args.count, 2)

            cpu2, hwm = proc_stat(process.pid)
            results["operator_peak_rss_mb"] = round(hwm / 2**20, 1)
            results["operator_cpu_seconds_total"] = round(cpu2 - cpu0, 2)
            results["emulator_cpu_seconds_total"] = round(own_cpu() - emulator_cpu0, 2)
            results["reconciles"] = await metric(metrics_port, "modelservice_reconciles_total")
            duration_sum = await metric(metrics_port, "modelservice_reconcile_duration_seconds_sum")
            duration_count = await metric(metrics_port, "modelservice_reconcile_duration_seconds_count")
            results["mean_reconcile_ms"] = round(1000 * duration_sum / max(duration_count, 1), 2)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            await process.wait()
            log.close()
        results["operator_log"] = str(workdir / "operator.log")
    return results


async def wait_healthy(port: int, timeout: float = 60) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the operator did not become healthy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--resync", type=float, default=20.0, help="operator resync period during the bench (s)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--full", action="store_true", help="also play the cluster until every one is Ready")
    parser.add_argument("--profile", default=None, help="run the operator under cProfile, writing this file")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
