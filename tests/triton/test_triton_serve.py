"""``modelservice serve`` end to end in a subprocess: converts, starts a real Triton, serves, and stops cleanly
on SIGTERM or SIGINT (Ctrl-C) with no process left behind; a busy port is a one-line error."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from _serving import MODELS, Lines, alive, command_line, descendants, torch_logits, write_digits_modelservice
from modelservice.serve.triton import free_port

pytestmark = pytest.mark.triton

READY_LINE = "Press Ctrl-C"
SERVE = [sys.executable, "-m", "modelservice.cli", "serve"]


def _port_args(http: int, grpc: int, metrics: int) -> list[str]:
    return ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_starts_serves_and_stops_cleanly(
    tmp_path: Path, cache_dir: Path, test_split: tuple[np.ndarray, np.ndarray], stop_signal: signal.Signals
) -> None:
    model = MODELS[0]
    item = write_digits_modelservice(tmp_path / "project", model)
    ports = [free_port(), free_port(), free_port()]
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    stderr = (tmp_path / "serve.stderr").open("w")
    process = subprocess.Popen(
        [*SERVE, "-f", str(item.path), "--cache-dir", str(cache_dir), *_port_args(*ports)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    out = Lines(process.stdout)
    try:
        printed = out.until(READY_LINE, timeout=240)
        # endpoints and examples are printed
        assert f"HTTP     http://127.0.0.1:{ports[0]}" in printed
        assert f"gRPC     127.0.0.1:{ports[1]}" in printed
        assert f"metrics  http://127.0.0.1:{ports[2]}/metrics" in printed
        assert f"modelservice infer --url 127.0.0.1:{ports[0]} -m {model.name}" in printed
        curl = re.search(r"^\s*(curl -s .*)$", printed, re.M)
        assert curl is not None, printed

        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/health/ready", timeout=5) as response:
            assert response.status == 200
        x = test_split[0][:5]
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        item_in = httpclient.InferInput("image", list(x.shape), "FP32")
        item_in.set_data_from_numpy(x)
        logits = client.infer(model.name, [item_in]).as_numpy("logits")
        np.testing.assert_allclose(logits, torch_logits(model.kind, x), atol=1e-4, rtol=0)
        # the printed curl example works as printed
        answer = json.loads(
            subprocess.run(curl.group(1), shell=True, capture_output=True, text=True, check=True).stdout
        )
        assert answer["outputs"][0]["name"] == "logits" and len(answer["outputs"][0]["data"]) == 10

        children = descendants(process.pid)
        commands = [command_line(pid) for pid in children]
        assert any("tritonserver" in c for c in commands), commands
        assert any("triton_python_backend_stub" in c for c in commands), commands
        workdirs = list(temp.glob("modelservice-serve-*"))
        assert len(workdirs) == 1
    finally:
        process.send_signal(stop_signal)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    rest = out.rest(timeout=5)
    assert code == 0, rest + (tmp_path / "serve.stderr").read_text()
    assert rest.rstrip().endswith("stopped")
    survivors = {pid: command_line(pid) for pid in children if alive(pid)}
    assert survivors == {}
    assert not alive(process.pid)
    for port in ports:  # nothing listens any more (SO_REUSEADDR: TIME_WAIT leftovers of clients do not count)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    assert list(temp.glob("modelservice-serve-*")) == []  # the temporary workdir is removed


def test_serve_with_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    item = write_digits_modelservice(tmp_path / "project", MODELS[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        result = subprocess.run(
            [*SERVE, "-f", str(item.path), *_port_args(busy, free_port(), free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: port {busy} on 127.0.0.1 is already in use (--http-port); choose another"
