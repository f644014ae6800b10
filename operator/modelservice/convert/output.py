"""The conversion cache and installing a finished repository into the output folder.

The cache (``--cache-dir``, else ``$MODELSERVICE_CACHE_DIR``, else ``~/.cache/modelservice``) holds one
folder per conversion hash: the model folder and report.json exactly as installed. Entries are written to a
temporary folder and renamed into place, so a crashed conversion never leaves a half entry behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

REPORT = "report.json"


def default_cache_dir() -> Path:
    env = os.environ.get("MODELSERVICE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "modelservice"


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def lookup(self, key: str) -> Path | None:
        entry = self.root / key
        return entry if (entry / REPORT).is_file() else None

    def store(self, key: str, staging: Path) -> None:
        """Copy ``staging`` into the cache as ``key`` (best effort: a read-only cache only costs speed)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=self.root))
            try:
                shutil.copytree(staging, temp, dirs_exist_ok=True)
                if not (self.root / key).exists():
                    os.replace(temp, self.root / key)
            finally:
                shutil.rmtree(temp, ignore_errors=True)
        except OSError:
            pass


def install(staging: Path, out: Path, name: str) -> None:
    """Move ``staging/<name>`` and ``staging/report.json`` into ``out`` (a Triton model repository, possibly
    holding other models): each is copied to a hidden temporary folder inside ``out`` first and then renamed
    over the old one, so ``out/<name>`` is never half-written."""
    out.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    try:
        shutil.copytree(staging / name, temp / name)
        shutil.copyfile(staging / REPORT, temp / REPORT)
        target = out / name
        if target.exists():
            os.replace(target, temp / "previous")
        os.replace(temp / name, target)
        os.replace(temp / REPORT, out / REPORT)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
