"""``modelservice infer`` against the shared real Triton; its user errors as one line without a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _serving import RunningTriton, torch_logits
from modelservice.cli import main
from modelservice.serve.triton import free_port

pytestmark = pytest.mark.triton


def test_infer_over_http_with_npz_prints_argmax_of_the_torch_model(
    triton: RunningTriton, test_split: tuple[np.ndarray, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = test_split
    data = tmp_path / "samples.npz"
    np.savez(data, x=x[:8], y=y[:8])
    code = main(
        ["infer", "--url", triton.http_url, "-m", "digits-cnn", "--data", str(data), "--batch", "8", "--count", "5"]
    )
    out = capsys.readouterr().out
    assert code == 0
    expected = torch_logits("cnn", x[:8]).argmax(axis=1).tolist()
    assert f"argmax {expected}" in out
    assert "input image: FP32 [8, 1, 8, 8]" in out
    assert re.search(r"latency over 5 request\(s\): p50 [\d.]+ ms, p95 [\d.]+ ms", out)


def test_infer_over_grpc_with_random_inputs(triton: RunningTriton, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["infer", "--url", triton.grpc_url, "--protocol", "grpc", "-m", "digits-ts", "--batch", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "input image: FP32 [3, 1, 8, 8] (random, seed 0)" in out
    assert re.search(r"output logits: FP32 \[3, 10\] min \S+ max \S+ argmax \[\d, \d, \d\]", out)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelservice.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_unreachable_server_is_one_line_error() -> None:
    port = free_port()
    for protocol in ("http", "grpc"):
        result = _run_cli("infer", "--url", f"127.0.0.1:{port}", "--protocol", protocol, "-m", "digits")
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: cannot reach Triton at 127.0.0.1:{port} over {protocol}")


def test_unknown_model_and_too_big_batch_are_one_line_errors(triton: RunningTriton) -> None:
    result = _run_cli("infer", "--url", triton.http_url, "-m", "nope")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nope" in result.stderr
    result = _run_cli("infer", "--url", triton.http_url, "-m", "digits-mlp", "--batch", "9")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --batch 9 exceeds the model's max_batch_size 8"
