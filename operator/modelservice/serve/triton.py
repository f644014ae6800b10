"""Find and run a local ``tritonserver``.

The binary comes from PATH (a Triton install, e.g. inside the NGC image) or, failing that, from the
``nvidia-pytriton`` wheel. The wheel's Triton needs ``LD_LIBRARY_PATH=<site-packages>/nvidia_pytriton.libs``
and only ships the python backend, whose stub must match the running Python: we assemble our own backend
folder (``libtriton_python.so`` + the stub for this Python) in a cache folder instead of writing into
site-packages. The stub embeds the system libpython and finds its ``python3`` on PATH, so this process's
interpreter folder goes first on PATH: the stub then sees this environment's packages (numpy, onnxruntime).

``TritonProcess`` starts Triton in its own process group, bound to 127.0.0.1, waits for
``/v2/health/ready`` and stops it: SIGTERM to Triton, then SIGKILL to whatever is left of its group (stubs).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from modelservice.api.errors import UserError
from modelservice.convert.output import default_cache_dir

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STUB_NAME = "triton_python_backend_stub"
PYTHON_BACKEND_LIB = "libtriton_python.so"
PYTHON_BACKEND_UTILS = "triton_python_backend_utils.py"


class TritonError(UserError):
    """Triton could not be found, started, or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    """A tritonserver binary and what it needs to run."""

    binary: Path
    library_dir: Path | None = None  # prepended to LD_LIBRARY_PATH (the wheel's bundled libraries)
    python_backend: Path | None = None  # folder holding libtriton_python.so (wheel only)
    stub: Path | None = None  # the python-backend stub for this Python (wheel only)
    source: str = "PATH"

    @property
    def from_wheel(self) -> bool:
        return self.source == "nvidia-pytriton"

    def native_backends(self) -> set[str]:
        """Backends found beside a PATH install (onnxruntime, pytorch, tensorrt, python); the wheel has python."""
        if self.from_wheel:
            return {"python"}
        backends = self.binary.resolve().parent.parent / "backends"
        return {p.name for p in backends.iterdir() if p.is_dir()} if backends.is_dir() else set()


def find_tritonserver() -> TritonInstall:
    """``tritonserver`` on PATH first, else the one in the nvidia-pytriton wheel; TritonError when neither."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(binary=Path(on_path))
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("tritonserver not found: not on PATH and nvidia-pytriton is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=dist / "bin" / "tritonserver",
        library_dir=package.parent / "nvidia_pytriton.libs",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / STUB_NAME,
        source="nvidia-pytriton",
    )
    for path in (install.binary, install.python_backend, install.stub):
        if path is not None and not path.exists():
            raise TritonError(f"the nvidia-pytriton wheel lacks {path} (Python {version} unsupported?)")
    return install


def _digest(paths: list[Path]) -> str:
    hasher = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        hasher.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return hasher.hexdigest()[:16]


def prepare_backend_dir(install: TritonInstall, cache_dir: Path | None = None) -> Path | None:
    """A backend folder ``<cache>/triton-backends/<digest>/python/`` with the wheel's python backend and the
    stub for this Python; None for a PATH install (it finds its own backends). Built once, atomically."""
    if install.python_backend is None or install.stub is None:
        return None
    files = [install.python_backend / PYTHON_BACKEND_LIB, install.python_backend / PYTHON_BACKEND_UTILS, install.stub]
    root = (cache_dir or default_cache_dir()) / "triton-backends"
    target = root / _digest(files)
    if (target / "python" / STUB_NAME).is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".backends-", dir=root))
    except OSError as exc:
        raise TritonError(
            f"cannot prepare Triton's python backend in {root}: {exc.strerror} (use --cache-dir)"
        ) from None
    try:
        (staging / "python").mkdir()
        for file in files:
            shutil.copy2(file, staging / "python" / file.name)
        try:
            staging.rename(target)
        except OSError:  # built concurrently by another process: keep theirs
            if not (target / "python" / STUB_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(port: int, what: str) -> None:
    """UserError naming the option when ``port`` on 127.0.0.1 is taken (listened on; connections of a stopped
    server lingering in TIME_WAIT do not count, as Triton binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise TritonError(f"port {port} on {HOST} is already in use ({what}); choose another") from None


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls, http: int = 0, grpc: int = 0, metrics: int = 0) -> Ports:
        """Given ports, or free ones where 0; a busy given port is a UserError naming its option."""
        for port, what in ((http, "--http-port"), (grpc, "--grpc-port"), (metrics, "--metrics-port")):
            if port:
                check_port_free(port, what)
        chosen = [http or free_port(), grpc or free_port(), metrics or free_port()]
        while len(set(chosen)) < 3:  # the OS may hand out the same free port twice
            chosen = [http or free_port(), grpc or free_port(), metrics or free_port()]
        return cls(*chosen)


def tail(path: Path, lines: int = 12) -> str:
    """What explains a failure in a Triton log: its error lines (glog ``E...`` and ``error:``), else its last
    lines; the status tables Triton prints are left out ('' when the log is missing)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith(("+", "|"))]
    errors = [line for line in kept if re.match(r"^(E\d{4} |error:|Error:)", line) and "CudaDriverHelper" not in line]
    errors = [line for line in errors if "NVML" not in line]
    return "\n".join((errors or kept)[-lines:])


def http_ready(port: int, timeout: float = 1.0) -> bool:
    """Whether Triton on ``port`` answers /v2/health/ready with 200."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/v2/health/ready", timeout=timeout) as response:
            status: int = response.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class TritonProcess:
    """A tritonserver on 127.0.0.1, as a context manager: start, wait ready, and stop its whole process group.

    Ports left at 0 are chosen free. ``log_path`` receives Triton's stdout and stderr.
    """

    repository: Path
    log_path: Path
    ports: Ports = field(default_factory=Ports.pick)
    install: TritonInstall = field(default_factory=find_tritonserver)
    cache_dir: Path | None = None
    ready_timeout: float = 120.0
    stop_timeout: float = 30.0
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def command(self, backend_dir: Path | None) -> list[str]:
        args = [
            str(self.install.binary),
            f"--model-repository={self.repository.resolve()}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--http-address={HOST}",
            f"--grpc-address={HOST}",
            f"--metrics-address={HOST}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
        ]
        if backend_dir is not None:
            args.append(f"--backend-directory={backend_dir}")
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.install.library_dir is not None:
            previous = env.get("LD_LIBRARY_PATH")
            libs = str(self.install.library_dir)
            env["LD_LIBRARY_PATH"] = f"{libs}:{previous}" if previous else libs
        # The python-backend stub finds the interpreter (and so site-packages) through PATH.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def start(self) -> TritonProcess:
        backend_dir = prepare_backend_dir(self.install, self.cache_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self.command(backend_dir)
        log.debug("starting %s", " ".join(command))
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # its own process group: stop() reaches the stubs too
            )
        return self

    def wait_ready(self) -> None:
        """Block until /v2/health/ready answers 200; TritonError with the log tail on exit or timeout."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise TritonError(
                    f"tritonserver exited with code {code} before it was ready; log {self.log_path}:\n"
                    + tail(self.log_path)
                )
            if http_ready(self.ports.http):
                return
            time.sleep(0.1)
        raise TritonError(
            f"tritonserver was not ready after {self.ready_timeout:.0f}s; log {self.log_path}:\n" + tail(self.log_path)
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM Triton, wait ``stop_timeout``, then SIGKILL its process group; returns Triton's exit code.

        Only Triton gets SIGTERM: it unloads its models and ends their stubs itself (a stub signalled at the
        same time dies under Triton, which then waits for it). Whatever is left in the group is killed.
        """
        if self.process is None:
            return None
        pgid = self.process.pid  # start_new_session: the group id is Triton's pid
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop within %.0fs; killing it", self.stop_timeout)
        # Anything left in the group (Triton itself after a timeout, or stubs it did not reap) is killed.
        _signal_group(pgid, signal.SIGKILL)
        code = self.process.wait()
        return code

    def __enter__(self) -> TritonProcess:
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

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.ports.metrics}/metrics"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
