#!/usr/bin/env python3
"""A canary, an abort and a rollback as a user sees them, with the real operator and the real kubectl.

The API server is the emulator the operator tests use (KMock + tests/operator/emulator.py, on loopback), the
operator is ``modelservice.controller.main.operate`` (kopf) with a clock this script moves forward (pauses of
minutes pass in a second), and kubectl 1.32 talks to the emulator through a kubeconfig. The script plays the
cluster's controllers (Job succeeds with a termination-log summary, Deployments become ready) and, for the abort, a
stand-in Prometheus query API in which the new revision fails a third of its requests. kubectl's columns are the
CRD's printer columns evaluated client-side (``-o custom-columns``): the emulator serves no server-side tables,
and no OpenAPI document, so ``apply`` runs with ``--validate=false``.

Usage: hack/demo-canary.py [--out FILE]   (prints the session; README.md quotes it)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "operator"))

from aiohttp import web  # noqa: E402
from kmock import Server  # noqa: E402

from emulator import MS_RESOURCE, ApiServerEmulator, declare, wait_for, write_kubeconfig  # noqa: E402
from modelservice.controller.analysis import PrometheusClient  # noqa: E402
from modelservice.controller.handlers import Runtime  # noqa: E402
from modelservice.controller.main import operate  # noqa: E402
from modelservice.render import OperatorConfig  # noqa: E402
from modelservice.render.names import HASH_LABEL  # noqa: E402
from test_lifecycle import DEPLOYMENTS, MS_PATH, NS, SUMMARY, finish_job, jobs_of, make_ready, patch  # noqa: E402

ROLLOUT = {
    "strategy": "canary",
    "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"}],
    "analysis": {"interval": "30s", "maxErrorRate": 0.01, "maxLatencyRatio": 1.5, "minRequests": 100},
}
COLUMNS = (
    "NAME:.metadata.name,TARGET:.spec.conversion.target,PRECISION:.spec.conversion.precision,"
    'READY:.status.conditions[?(@.type=="Ready")].status,REPLICAS:.status.readyReplicas,'
    "ROLLOUT:.status.rollout.phase,STEP:.status.rollout.step,WEIGHT:.status.rollout.weight"
)
REVISIONS = (
    '{range .status.revisions[*]}{.hash}{"\\t"}{.precision}{"\\t"}{.role}{"\\t"}{.outcome}{"\\t"}'
    '{.servedFrom}{" .. "}{.servedUntil}{"\\n"}{end}'
)


def summary(precision: str) -> dict[str, Any]:
    """The conversion Job's termination-log summary for a revision of that precision."""
    return {**SUMMARY, "artifact": {**SUMMARY["artifact"], "precision": precision}}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 12, 2, 9, 0, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


class Session:
    def __init__(self, emulator: ApiServerEmulator, kubeconfig: Path, clock: Clock) -> None:
        self.emulator, self.kubeconfig, self.clock = emulator, kubeconfig, clock
        self.lines: list[str] = []
        self.pokes = 0

    def say(self, text: str) -> None:
        self.lines.append(f"\n# {text}")

    async def kubectl(self, *args: str, show: str | None = None) -> str:
        command = ["kubectl", "--kubeconfig", str(self.kubeconfig), "-n", NS, *args]
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=False)
        self.lines.append(f"$ {show or 'kubectl -n ' + NS + ' ' + ' '.join(args)}")
        self.lines.append((done.stdout or done.stderr).rstrip())
        return done.stdout

    async def raw(self, plural: str, row: Callable[[dict[str, Any]], list[str]], fields: str) -> None:
        """A list through the raw API, as a jq one-liner would print it (the emulator's core-group discovery
        confuses kubectl's ``get services``/``get events``)."""
        text = await asyncio.to_thread(
            subprocess.run,
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "get", "--raw", f"/api/v1/namespaces/{NS}/{plural}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.lines.append(
            f"$ kubectl get --raw /api/v1/namespaces/{NS}/{plural} | jq -r '.items[] | [{fields}] | @tsv'"
        )
        self.lines += ["\t".join(row(item)) for item in json.loads(text.stdout)["items"]]

    async def get_msvc(self) -> None:
        await self.kubectl("get", "msvc", "-o", f"custom-columns={COLUMNS}", show="kubectl -n ml get msvc")

    async def advance(self, seconds: float) -> None:
        """Time passes; an annotation's watch event makes the operator look now rather than at its timer."""
        self.clock.now += datetime.timedelta(seconds=seconds)
        self.pokes += 1
        await patch(self.emulator, f"{MS_PATH}/digits", {"metadata": {"annotations": {"demo/tick": str(self.pokes)}}})
        await asyncio.sleep(0.5)


def rollout_phase(emulator: ApiServerEmulator) -> str:
    obj = emulator.get(MS_RESOURCE, NS, "digits") or {}
    return str(((obj.get("status") or {}).get("rollout") or {}).get("phase") or "")


async def new_revision(session: Session, precision: str) -> str:
    emulator = session.emulator
    known = {j["metadata"]["labels"][HASH_LABEL] for j in jobs_of(emulator)}
    await session.kubectl(
        "patch", "msvc", "digits", "--type=merge", "-p", f'{{"spec":{{"conversion":{{"precision":"{precision}"}}}}}}'
    )
    job = await wait_for(
        lambda: next((j for j in jobs_of(emulator) if j["metadata"]["labels"][HASH_LABEL] not in known), None),
        what="the new revision's Job",
    )
    await finish_job(emulator, job, summary(precision))
    revision = str(job["metadata"]["labels"][HASH_LABEL])
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{revision}"), what="the canary Deployment")
    await make_ready(emulator, f"digits-{revision}")
    await wait_for(lambda: rollout_phase(emulator) == "Paused", what="step 1")
    return revision


async def stand_in_prometheus(failing: dict[str, str]) -> tuple[web.AppRunner, str]:
    async def query(request: web.Request) -> web.Response:
        promql = request.query["query"]
        bad = "revision" in failing and f'revision="{failing["revision"]}"' in promql
        value = (60.0 if bad else 0.0) if "failure" in promql else 120.0 if "success" in promql else 120.0 * 6000
        data = {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]}
        return web.json_response({"status": "success", "data": data})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def demo() -> list[str]:
    failing: dict[str, str] = {}
    runner, prometheus_url = await stand_in_prometheus(failing)
    async with ApiServerEmulator() as emulator, Server(emulator):
        declare(emulator)
        workdir = Path(tempfile.mkdtemp(prefix="demo-canary-"))
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", str(emulator.url).rstrip("/"))
        clock = Clock()
        runtime = Runtime(config=OperatorConfig(), resync_seconds=0, workers=2, clock=clock)
        runtime.prometheus = PrometheusClient(prometheus_url)
        stop, ready = threading.Event(), threading.Event()

        def main() -> None:
            import os

            os.environ["KUBECONFIG"] = str(kubeconfig)
            asyncio.run(operate(runtime, [], stop_flag=stop, ready_flag=ready))

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        await asyncio.to_thread(ready.wait, 15)
        session = Session(emulator, kubeconfig, clock)
        try:
            await run_story(session, failing)
        except BaseException:
            print("\n".join(session.lines), file=sys.stderr)
            raise
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 15)
            await runner.cleanup()
    return session.lines


async def run_story(session: Session, failing: dict[str, str]) -> None:
    emulator = session.emulator
    spec = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "digits", "namespace": NS},
        "spec": {
            "model": {"uri": "s3://models/digits/model.onnx", "format": "onnx"},
            "conversion": {"target": "onnx", "precision": "fp32"},
            "serving": {"replicas": 4},
            "rollout": ROLLOUT,
        },
    }
    manifest = Path(tempfile.mkdtemp()) / "digits.yaml"
    manifest.write_text(json.dumps(spec))
    session.say("a ModelService with a canary rollout; its first revision serves everything once converted")
    await session.kubectl("apply", "--validate=false", "-f", str(manifest), show="kubectl -n ml apply -f digits.yaml")
    job = await wait_for(lambda: jobs_of(emulator) and jobs_of(emulator)[0], what="the Job")
    first = str(job["metadata"]["labels"][HASH_LABEL])
    await finish_job(emulator, job, summary("fp32"))
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{first}"), what="the first Deployment")
    await make_ready(emulator, f"digits-{first}")
    await wait_for(lambda: rollout_phase(emulator) == "Promoted", what="first revision serving")
    await asyncio.sleep(0.5)
    await session.get_msvc()

    session.say("a new revision (fp16): converted, started beside the stable one, then 10 % of requests")
    second = await new_revision(session, "fp16")
    await session.get_msvc()
    await session.raw(
        "services", lambda o: [o["metadata"]["name"], json.dumps(o["spec"]["selector"], sort_keys=True)],
        ".metadata.name, .spec.selector",
    )  # fmt: skip
    await session.kubectl("get", "deployments", "-l", "modelservice.dev/name=digits", "-o",
                          "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas",
                          show="kubectl -n ml get deploy -l modelservice.dev/name=digits")  # fmt: skip

    session.say("every 30 s an analysis; after the 2 m pause, step 2 (50 %); after 5 m more, promotion")
    for seconds in (31, 100, 31, 200, 101):
        await session.advance(seconds)
    await wait_for(lambda: rollout_phase(emulator) == "Promoted", what="promotion")
    await make_ready(emulator, f"digits-{second}")
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{first}") is None, what="old one retired")
    await asyncio.sleep(0.5)
    await session.get_msvc()
    message = "jsonpath={.status.rollout.analysis.message}"
    await session.kubectl("get", "msvc", "digits", "-o", message, show=f"kubectl -n ml get msvc digits -o '{message}'")

    session.say("a third revision (int8) whose requests fail: the first analysis aborts it")
    failing["revision"] = "pending"
    third = await new_revision(session, "int8")
    failing["revision"] = third
    await session.advance(31)
    await wait_for(lambda: rollout_phase(emulator) == "Aborted", what="the abort")
    await asyncio.sleep(0.5)
    await session.get_msvc()
    await session.kubectl(
        "get", "msvc", "digits", "-o", 'jsonpath={.status.conditions[?(@.type=="Stalled")].message}',
        show="kubectl -n ml get msvc digits -o jsonpath='{.status.conditions[?(@.type==\"Stalled\")].message}'",
    )  # fmt: skip

    session.say("a GitOps revert to the first spec (fp32): on the claim already, served at once, no conversion Job")
    await session.kubectl(
        "patch", "msvc", "digits", "--type=merge", "-p", '{"spec":{"conversion":{"precision":"fp32"}}}'
    )
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{first}"), what="the first revision again")
    await make_ready(emulator, f"digits-{first}")
    await wait_for(lambda: emulator.get(DEPLOYMENTS, NS, f"digits-{second}") is None, what="second retired")
    await asyncio.sleep(0.5)
    await session.get_msvc()
    await session.kubectl("get", "jobs", show="kubectl -n ml get jobs")
    shown = "kubectl -n ml get msvc digits -o jsonpath='{range .status.revisions[*]}...'"
    await session.kubectl("get", "msvc", "digits", "-o", f"jsonpath={REVISIONS}", show=shown)
    await session.raw("events", lambda o: [o["type"], o["reason"], o["message"]], ".type, .reason, .message")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the session here too")
    args = parser.parse_args()
    text = "\n".join(asyncio.run(demo())).strip() + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
