"""``modelservice run`` as a user runs it: a subprocess with KUBECONFIG pointing at the emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from emulator import ApiServerEmulator, wait_for, write_kubeconfig
from test_lifecycle import NS, condition, create, jobs_of, modelservice, ms_status


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def fetch_text(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return 0, ""


async def test_modelservice_run_with_a_kubeconfig(emulator: ApiServerEmulator, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", str(emulator.url).rstrip("/"))
    metrics_port, health_port = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MODELSERVICE_RESYNC_SECONDS": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelservice.cli",
        "run",
        "--metrics-port",
        str(metrics_port),
        "--health-port",
        str(health_port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: bytes = b""
    try:
        await create(emulator, modelservice())
        status: dict[str, Any] = await wait_for(
            lambda: ms_status(emulator).get("phase") == "Converting" and ms_status(emulator),
            timeout=60,
            what="the subprocess operator to set the status",
        )
        assert condition(status, "Reconciling")["status"] == "True"
        assert len(jobs_of(emulator)) == 1

        code, text = await fetch_text(f"http://127.0.0.1:{metrics_port}/metrics")
        assert code == 200
        assert 'modelservice_reconciles_total{result="success"}' in text
        assert 'modelservice_modelservices{phase="Converting"} 1.0' in text
        assert "modelservice_reconcile_duration_seconds_bucket" in text
        assert 'modelservice_api_requests_total{resource="jobs",verb="POST"} 1.0' in text

        async def healthy() -> bool:
            return (await fetch_text(f"http://127.0.0.1:{health_port}/healthz"))[0] == 200

        for _ in range(100):
            if await healthy():
                break
            await asyncio.sleep(0.1)
        assert await healthy()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, output.decode()[-3000:]
    assert ms_status(emulator)["endpoints"]["http"] == f"http://digits.{NS}.svc:8000"
    assert "Traceback" not in output.decode()
