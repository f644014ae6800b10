"""Static checks that refuse archives whose pickles could run code when loaded.

``torch.export.load`` unpickles the weights inside a .pt2 with ``weights_only=False``. Before it is called,
every pickle in the archive (also inside nested ``torch.save`` archives) is scanned with ``pickletools``,
which reads opcodes without executing anything: any global outside a small allowlist of tensor-rebuilding
functions, storages and dtypes is refused.
"""

from __future__ import annotations

import io
import json
import pickletools
import posixpath
import zipfile
from pathlib import Path

from modelservice.api.errors import UserError

SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.serialization", "_get_layout"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "tuple"),
    ("builtins", "list"),
    ("builtins", "dict"),
}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
MAX_DEPTH = 3


def _allowed(module: str, name: str) -> bool:
    if (module, name) in SAFE_GLOBALS:
        return True
    # dtypes and typed storages: torch.float32, torch.FloatStorage, torch.storage.UntypedStorage ...
    if module == "torch" and (name.endswith("Storage") or name in _DTYPE_NAMES):
        return True
    return module == "torch.storage" and name in ("UntypedStorage", "TypedStorage")


_DTYPE_NAMES = {
    "float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool",
    "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "half", "float", "double", "long", "int", "short",
}  # fmt: skip


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """The (module, name) globals a pickle would import, found without executing it."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
        if opcode.name in _STRING_OPS and isinstance(arg, (str, bytes)):
            strings.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
        elif opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
            module, _, name = arg.partition(" ")
            found.append((module, name))
        elif opcode.name == "STACK_GLOBAL":
            found.append((strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?"))
    return found


def check_archive_pickles(path: Path, field: str) -> None:
    """Raise UserError if any pickle inside the zip archive ``path`` imports a non-allowlisted global."""
    try:
        with zipfile.ZipFile(path) as zf:
            _check_zip(zf, path.name, field, depth=0)
    except zipfile.BadZipFile:
        raise UserError(f"{field}: {path.name} is not a .pt2 (zip) archive") from None


def _raw_tensor_members(zf: zipfile.ZipFile) -> set[str]:
    """Members the .pt2 configs declare as raw tensor bytes (``use_pickle: false``), never unpickled by torch.
    A member that any config (a decoy included) declares otherwise is scanned."""
    raw: set[str] = set()
    other: set[str] = set()
    for name in zf.namelist():
        if not name.endswith("_config.json"):
            continue
        try:
            entries = json.loads(zf.read(name)).get("config", {})
        except (ValueError, AttributeError):
            continue
        folder = posixpath.dirname(name)
        for entry in entries.values() if isinstance(entries, dict) else []:
            if isinstance(entry, dict) and "path_name" in entry:
                member = posixpath.join(folder, str(entry["path_name"]))
                (raw if entry.get("use_pickle") is False else other).add(member)
    return raw - other


def _check_zip(zf: zipfile.ZipFile, label: str, field: str, depth: int) -> None:
    raw = _raw_tensor_members(zf)
    for info in zf.infolist():
        if info.filename in raw or info.is_dir():
            continue
        data = zf.read(info)
        member = f"{label}/{info.filename}"
        if data[:4] == b"PK\x03\x04":
            if depth >= MAX_DEPTH:
                raise UserError(f"{field}: {member}: archives nested too deeply; refused")
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                _check_zip(inner, member, field, depth + 1)
        elif data[:1] == b"\x80" or info.filename.endswith(".pkl"):
            try:
                names = pickle_globals(data)
            except Exception:
                raise UserError(f"{field}: {member}: unreadable pickle; refused") from None
            bad = [f"{m}.{n}" for m, n in names if not _allowed(m, n)]
            if bad:
                raise UserError(
                    f"{field}: {member} would import {', '.join(sorted(set(bad))[:3])} when unpickled; "
                    "refusing to load it (only tensors and dtypes are allowed)"
                )
