#!/usr/bin/env python3
"""Benchmark the operator: N ModelServices in the API emulator, `modelservice run` as a subprocess.

Measures
- time from the first ModelService created until every one has its children (claim, ConfigMap, Job, Service)
  and a status (phase Converting);
- write requests (POST/PATCH/PUT/DELETE) and all requests (watches excluded) per ModelService to converge;
- write requests during a periodic resync when nothing changed (every ModelService reconciled once more);
- with --full, also plays the cluster (every Job succeeds, every Deployment becomes ready) and measures the time
  and writes until every ModelService is Ready;
- the operator's peak RSS (VmHWM) and CPU time, and the emulator's CPU time (what dominates);
- with --rollout, every ModelService has ``spec.rollout`` (strategy canary: per-revision Deployments); with
  --canaries N (needs --full) N of them then get a new revision, played to their first canary step, and the bench
  counts, over --canary-window seconds, the operator's reconciles and the PromQL queries it sends to a stand-in
  Prometheus query API (in this process: every revision healthy, 200 requests per window).

The emulator (KMock + tests/operator/emulator.py) runs in this process, the operator in its own; both share the
machine. Usage: hack/bench-operator.py [--count 1000] [--full] [--rollout [--canaries N]] [--json FILE]
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
from aiohttp import web  # noqa: E402
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


ROLLOUT = {
    "strategy": "canary",
    "steps": [{"weight": 10, "pause": "10m"}, {"weight": 50, "pause": "10m"}, {"weight": 80, "pause": "10m"}],
    "analysis": {"interval": "10s", "minRequests": 100},
}


def modelservice(index: int, rollout: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": f"s3://models/m{index}/model.onnx", "format": "onnx"},
        "conversion": {"target": "onnx", "precision": "fp32"},
        "serving": {"replicas": 1},
    }
    if rollout:
        spec["rollout"] = ROLLOUT
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": f"model-{index:04d}", "namespace": NS},
        "spec": spec,
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
    """Every conversion succeeds: a pod with the summary, the Job Complete (the newest Job of each)."""
    jobs: dict[str, dict[str, Any]] = {}
    for job in emulator.items(JOBS, NS):
        if not (job.get("status") or {}).get("succeeded"):
            jobs[job["metadata"]["labels"].get("modelservice.dev/name")] = job
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


def unready_deployments(emulator: ApiServerEmulator) -> dict[str, dict[str, Any]]:
    """The Deployments whose status does not yet report their latest generation ready, by ModelService name
    (``<name>``, or with a rollout a ``<name>-<hash>``)."""
    found: dict[str, dict[str, Any]] = {}
    for dep in emulator.items(DEPLOYMENTS, NS):
        status = dep.get("status") or {}
        if status.get("readyReplicas") and status.get("observedGeneration") == dep["metadata"]["generation"]:
            continue
        found[dep["metadata"]["labels"].get("modelservice.dev/name", dep["metadata"]["name"])] = dep
    return found


async def make_ready(emulator: ApiServerEmulator, names: list[str], timeout: float) -> None:
    pending = set(names)
    started = time.monotonic()
    while pending:
        unready = unready_deployments(emulator)
        for name in sorted(pending & set(unready)):
            dep = unready[name]
            replicas = dep["spec"].get("replicas", 1)
            ready = {"observedGeneration": dep["metadata"]["generation"], "replicas": replicas}
            ready |= {"updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}
            await emulator.patch_object(DEPLOYMENTS, NS, dep["metadata"]["name"], {"status": ready}, "status")
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
        prometheus = await StandInPrometheus.start() if args.canaries else None
        if prometheus is not None:
            env["MODELSERVICE_PROMETHEUS_URL"] = prometheus.url
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
                await emulator.put_object(MS_RESOURCE, modelservice(index, args.rollout))
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
            if args.canaries and prometheus is not None:
                results |= await canary_phase(emulator, names[: args.canaries], metrics_port, prometheus, args)

            cpu2, hwm = proc_stat(process.pid)
            results["operator_peak_rss_mb"] = round(hwm / 2**20, 1)
            results["operator_cpu_seconds_total"] = round(cpu2 - cpu0, 2)
            results["emulator_cpu_seconds_total"] = round(own_cpu() - emulator_cpu0, 2)
            results["reconciles"] = await metric(metrics_port, "modelservice_reconciles_total")
            duration_sum = await metric(metrics_port, "modelservice_reconcile_duration_seconds_sum")
            duration_count = await metric(metrics_port, "modelservice_reconcile_duration_seconds_count")
            results["mean_reconcile_ms"] = round(1000 * duration_sum / max(duration_count, 1), 2)
        finally:
            if prometheus is not None:
                await prometheus.stop()
            if process.returncode is None:
                process.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            await process.wait()
            log.close()
        results["operator_log"] = str(workdir / "operator.log")
    return results


class StandInPrometheus:
    """Prometheus's instant-query API answering every query with one sample: each revision served 200 requests
    in the window, none failed, 5 ms each (so every analysis passes). Counts the queries."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner, self.url, self.queries = runner, url, 0

    @classmethod
    async def start(cls) -> StandInPrometheus:
        app = web.Application()
        runner = web.AppRunner(app, access_log=None)
        holder: list[StandInPrometheus] = []

        async def query(request: web.Request) -> web.Response:
            holder[0].queries += 1
            promql = request.query.get("query", "")
            value = 0.0 if "failure" in promql else 200.0 if "success" in promql else 200.0 * 5000
            data = {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]}
            return web.json_response({"status": "success", "data": data})

        app.router.add_get("/api/v1/query", query)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        holder.append(cls(runner, f"http://127.0.0.1:{port}"))
        return holder[0]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def canary_phase(
    emulator: ApiServerEmulator, names: list[str], metrics_port: int, prometheus: StandInPrometheus, args: Any
) -> dict[str, Any]:
    """New revisions for ``names``, played to their first canary step; then reconciles and PromQL queries over a
    window while they hold it (analysis every 10 s, pause 10 min: no step advances in the window)."""
    say(f"canary: a new revision for {len(names)} ModelServices")
    for name in names:
        obj = dict(emulator.objects[MS_RESOURCE, NS, name].raw)
        spec = {**obj["spec"], "conversion": {"target": "onnx", "precision": "fp16"}}
        await emulator.patch_object(MS_RESOURCE, NS, name, {"spec": spec})
    await asyncio.sleep(2.0)
    deadline = time.monotonic() + args.timeout
    while sum(1 for j in emulator.items(JOBS, NS) if not (j.get("status") or {}).get("succeeded")) < len(names):
        if time.monotonic() > deadline:
            raise SystemExit("the canaries' Jobs did not appear")
        await asyncio.sleep(0.5)
    await play_cluster(emulator, names)
    await make_ready(emulator, names, args.timeout)

    def paused() -> int:
        count = 0
        for name in names:
            status = dict(emulator.objects[MS_RESOURCE, NS, name].raw).get("status") or {}
            count += (status.get("rollout") or {}).get("phase") == "Paused"
        return count

    while paused() < len(names):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {paused()}/{len(names)} canaries reached their first step")
        await asyncio.sleep(1.0)
    say(f"{len(names)} canaries hold step 1; measuring for {args.canary_window:.0f}s")
    reconciles0 = await metric(metrics_port, "modelservice_reconciles_total")
    queries0 = prometheus.queries
    counter = Counter(emulator)
    await asyncio.sleep(args.canary_window)
    reconciles = await metric(metrics_port, "modelservice_reconciles_total") - reconciles0
    queries = prometheus.queries - queries0
    writes, _ = counter.since()
    minutes = args.canary_window / 60
    return {
        "canaries": len(names),
        "canary_window_seconds": args.canary_window,
        "canary_analysis_interval_seconds": 10,
        "canary_window_reconciles": reconciles,
        # the periodic resync reconciles every ModelService once per --resync seconds: not the canaries' doing
        "canary_window_resync_reconciles": round(args.count * args.canary_window / args.resync),
        "canary_reconciles_per_minute_per_canary": round(
            (reconciles - args.count * args.canary_window / args.resync) / minutes / len(names), 2
        ),
        "canary_prometheus_queries_per_minute": round(queries / minutes, 1),
        "canary_prometheus_queries_per_minute_per_canary": round(queries / minutes / len(names), 2),
        "canary_writes_per_minute_per_canary": round(writes / minutes / len(names), 2),
    }


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
    parser.add_argument("--rollout", action="store_true", help="every ModelService has spec.rollout (canary)")
    parser.add_argument("--canaries", type=int, default=0, help="with --full --rollout: canaries to hold (step 1)")
    parser.add_argument("--canary-window", type=float, default=60.0, help="seconds the canaries are measured")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
