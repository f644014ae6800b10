"""Progress lines on stderr: one line per step, and throttled byte counts for downloads."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``[stage] message`` lines to stderr (nothing when disabled)."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._last = 0.0

    def step(self, stage: str, message: str) -> None:
        if self.enabled:
            print(f"[{stage}] {message}", file=self.stream, flush=True)

    def transfer(self, label: str, done: int, total: int | None, *, final: bool = False) -> None:
        """A download/copy counter, printed at most twice a second (and once at the end)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < 0.5:
            return
        self._last = now
        size = f"{_human(done)}/{_human(total)}" if total else _human(done)
        percent = f" {100 * done // total:3d}%" if total else ""
        print(f"[download] {label}: {size}{percent}", file=self.stream, flush=True)


def _human(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
