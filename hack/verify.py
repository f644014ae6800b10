#!/usr/bin/env python3
"""Check that every generated file is fresh: regenerate into a temporary tree and diff against the repository.

Exit 0 when all are up to date; exit 1 listing each stale, missing or leftover file (run hack/generate.py).
Usage: python hack/verify.py
"""

from __future__ import annotations

import difflib
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "hack"))

import generate  # noqa: E402


def stale_files(root: Path = REPO) -> list[tuple[str, str]]:
    """(path, what is wrong) for every generated file under ``root`` that differs from a fresh generation."""
    expected = generate.generate_all(root)
    problems: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate.write_tree(fresh, expected)
        for rel in sorted(expected):
            current = root / rel
            if not current.is_file():
                problems.append((rel, "missing"))
                continue
            old = current.read_text(encoding="utf-8")
            new = (fresh / rel).read_text(encoding="utf-8")
            if old != new:
                diff = difflib.unified_diff(
                    old.splitlines(), new.splitlines(), f"{rel} (repository)", f"{rel} (generated)", lineterm="", n=1
                )
                problems.append((rel, "stale\n" + "\n".join(list(diff)[:20])))
    for folder in generate.GENERATED_DIRS:
        for path in sorted((root / folder).glob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in expected:
                problems.append((rel, "leftover: nothing generates it any more"))
    return problems


def main() -> int:
    problems = stale_files()
    for rel, what in problems:
        print(f"{rel}: {what}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} generated file(s) out of date: run `python hack/generate.py`", file=sys.stderr)
        return 1
    print("generated files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
