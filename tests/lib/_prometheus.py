"""A real Prometheus (Debian's ``prometheus`` package) on loopback for tests, scraping given targets.

    with PrometheusProcess(folder, [Target("127.0.0.1:8002", {"revision": "stable"})]) as prom:
        prom.url                      # http://127.0.0.1:PORT
        prom.wait_for_targets_up()    # every target scraped at least once

It runs in its own process group and is stopped by pid (SIGTERM, then SIGKILL of the group).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from modelservice.serve.triton import HOST, free_port


def find_prometheus() -> str | None:
    return shutil.which("prometheus")


@dataclass(frozen=True)
class Target:
    address: str  # host:port serving /metrics
    labels: dict[str, str]


@dataclass
class PrometheusProcess:
    folder: Path
    targets: list[Target]
    scrape_interval: str = "1s"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "prometheus.log"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "triton",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": [t.address], "labels": t.labels} for t in self.targets],
                }
            ],
        }

    def start(self) -> None:
        binary = find_prometheus()
        assert binary is not None, "prometheus not on PATH"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            return json.loads(response.read()) if path.startswith("/api/") else response.read()

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log_text()}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.get("/-/ready")
                return
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout:.0f}s:\n{self.log_text()}")

    def wait_for_series(self, promql: str, count: int, timeout: float = 20.0) -> None:
        """Until ``promql`` (an instant query) returns ``count`` series."""
        deadline = time.monotonic() + timeout
        got: list[Any] = []
        while time.monotonic() < deadline:
            got = self.get("/api/v1/query", query=promql)["data"]["result"]
            if len(got) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"{promql}: {len(got)} series after {timeout:.0f}s, expected {count}: {got}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> PrometheusProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
