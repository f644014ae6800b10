"""SHA-256 digests of files and folders.

A folder's digest is the SHA-256 of the ``sha256sum``-style listing of its files, sorted by relative path
(bytewise): ``"<hex>  <relative/path>\\n"`` per file. A user reproduces it with
``(cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum) | sha256sum``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path) -> str:
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix().encode())
    listing = "".join(f"{file_sha256(p)}  {p.relative_to(root).as_posix()}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def path_sha256(path: Path) -> str:
    """A file's digest, or a folder's listing digest."""
    return tree_sha256(path) if path.is_dir() else file_sha256(path)
