"""Unpack .tar(.gz) and .zip archives, refusing members that escape the target folder.

Every member is checked before anything is written: absolute names, ``..`` components, links whose
target resolves outside the folder, device files and FIFOs are refused with a UserError naming the
member. The total unpacked size is bounded.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path

from modelservice.api.errors import UserError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
MAX_UNPACKED_BYTES = int(os.environ.get("MODELSERVICE_MAX_UNPACKED_BYTES", str(64 << 30)))


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _inside(name: str) -> str | None:
    """The normalised relative path of a member, or None when it escapes (absolute, or climbs out)."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return None
    normal = posixpath.normpath(name.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def _check_link(archive: Path, member: str, target: str, *, hard: bool) -> None:
    # Symlink targets are relative to the link's folder; hard link targets to the archive root.
    base = "" if hard else posixpath.dirname(member)
    joined = target if target.startswith("/") else posixpath.join(base, target)
    if target.startswith("/") or _inside(joined) is None:
        raise UserError(f"{archive.name}: member {member!r} links to {target!r}, outside the archive folder; refused")


def unpack(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` (created) after checking every member."""
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            _unpack_zip(archive, dest)
        else:
            _unpack_tar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{archive.name}: not a readable archive: {exc}") from None


def _unpack_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        total = 0
        for member in members:
            if _inside(member.name) is None:
                raise UserError(f"{archive.name}: member {member.name!r} escapes the target folder; refused")
            if member.issym() or member.islnk():
                _check_link(archive, member.name, member.linkname, hard=member.islnk())
            elif not (member.isfile() or member.isdir()):
                raise UserError(f"{archive.name}: member {member.name!r} is a device or FIFO; refused")
            total += member.size
            if total > MAX_UNPACKED_BYTES:
                raise UserError(f"{archive.name}: unpacks to more than {MAX_UNPACKED_BYTES} bytes; refused")
        # The "data" filter repeats these checks inside tarfile (and drops set-uid bits and owners).
        tar.extractall(dest, members=members, filter="data")


def _unpack_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            if _inside(info.filename) is None:
                raise UserError(f"{archive.name}: member {info.filename!r} escapes the target folder; refused")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
                raise UserError(
                    f"{archive.name}: member {info.filename!r} is a symbolic link; zip links are not supported"
                )
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise UserError(f"{archive.name}: unpacks to more than {MAX_UNPACKED_BYTES} bytes; refused")
        root = dest.resolve()
        for info in infos:
            target = (root / info.filename).resolve()
            if not target.is_relative_to(root):
                raise UserError(f"{archive.name}: member {info.filename!r} escapes the target folder; refused")
            zf.extract(info, root)
