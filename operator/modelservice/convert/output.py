"""The conversion cache and installing a finished repository into the output folder.

The cache (``--cache-dir``, else ``$MODELSERVICE_CACHE_DIR``, else ``~/.cache/modelservice``) holds one
folder per conversion hash: the model folders (one, or a text model's ensemble and its steps) and report.json
exactly as installed. Entries are written to a temporary folder and renamed into place, so a crashed conversion
never leaves a half entry behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

REPORT = "report.json"
CONFIG = "config.pbtxt"
# The folders a text model's ensemble <name> calls (convert/textserving.py): an install of <name> that does not
# write one of them removes an old one, so a ModelService that stops being a text classifier (or a text model)
# leaves no orphan step behind for Triton to load.
STEP_SUFFIXES = ("-tokenizer", "-encoder", "-labels")


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


def model_folders(staging: Path, name: str) -> list[str]:
    """The model folders of a staging repository (those holding a config.pbtxt), ``name`` last: a text model's
    ensemble ``<name>`` goes in after the steps it calls (``<name>-tokenizer``, ``<name>-encoder``, ...)."""
    found = sorted(p.name for p in staging.iterdir() if p.is_dir() and (p / CONFIG).is_file() and p.name != name)
    return [*found, name]


def install(staging: Path, out: Path, name: str) -> None:
    """Move every model folder of ``staging`` (``<name>``, and for a text model its ensemble steps) and
    ``staging/report.json`` into ``out`` (a Triton model repository, possibly holding other models).

    Everything is copied into a hidden temporary folder inside ``out`` first; only then is each folder renamed
    over the old one (``<name>`` last, report.json after it), so no model folder is ever half-written and a
    failed copy leaves ``out`` as it was. Ensemble steps of an earlier install of ``<name>`` that this one does
    not write (``<name>-labels`` of a former classifier, ...) are removed."""
    out.mkdir(parents=True, exist_ok=True)
    names = model_folders(staging, name)
    temp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    try:
        for folder in names:
            shutil.copytree(staging / folder, temp / "new" / folder)
        shutil.copyfile(staging / REPORT, temp / REPORT)
        (temp / "previous").mkdir()
        for folder in names:
            target = out / folder
            if target.exists():
                os.replace(target, temp / "previous" / folder)
            os.replace(temp / "new" / folder, target)
        for folder in sorted({name + suffix for suffix in STEP_SUFFIXES} - set(names)):
            if (out / folder / CONFIG).is_file():
                os.replace(out / folder, temp / "previous" / folder)
        os.replace(temp / REPORT, out / REPORT)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
