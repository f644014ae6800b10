"""TritonProcess against the real tritonserver: a broken repository fails fast with the log tail, and a Triton
that ignores SIGTERM is killed together with its python-backend stubs (no orphan process)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from _serving import RunningTriton, alive, command_line, descendants
from modelservice.convert.repository import read_config, write_config
from modelservice.serve.triton import TritonError, TritonProcess

pytestmark = pytest.mark.triton


def test_broken_model_makes_start_fail_with_the_log_tail(tmp_path: Path, triton: RunningTriton) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(triton.repository / "digits-mlp", repository / "digits-mlp")
    config = read_config(repository / "digits-mlp" / "config.pbtxt")
    config.parameters["artifact"].string_value = "missing.onnx"
    write_config(config, repository / "digits-mlp" / "config.pbtxt")
    started = time.monotonic()
    with (
        pytest.raises(TritonError, match=r"tritonserver exited with code \d+ before it was ready") as error,
        TritonProcess(repository=repository, log_path=tmp_path / "triton.log", ready_timeout=90),
    ):
        pass
    assert time.monotonic() - started < 60
    assert "digits-mlp" in str(error.value)  # the tail names the model that failed


def test_a_triton_that_ignores_sigterm_is_killed_with_its_stubs(tmp_path: Path, triton: RunningTriton) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(triton.repository / "digits-mlp", repository / "digits-mlp")
    process = TritonProcess(repository=repository, log_path=tmp_path / "triton.log", stop_timeout=2)
    with process:
        assert process.pid is not None
        children = descendants(process.pid)
        assert any("triton_python_backend_stub" in command_line(pid) for pid in children)
        os.kill(process.pid, signal.SIGSTOP)  # frozen: SIGTERM stays pending
        started = time.monotonic()
    assert time.monotonic() - started < 20
    assert process.process is not None and process.process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.1)
    assert {pid: command_line(pid) for pid in children if alive(pid)} == {}
