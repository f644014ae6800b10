"""The conversion report: the full ``report.json`` and the compact status summary the operator copies into
``status.artifact`` / ``status.verification`` (through the Job's termination message, < 3 KB)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY_LIMIT = 3000
SUMMARY_VERIFICATION_KEYS = (
    "metric", "maxAbsError", "maxRelError", "accuracy", "referenceAccuracy", "minCosine", "top1Agreement", "passed"
)  # fmt: skip


@dataclass
class Report:
    """A conversion report; ``data`` is the JSON document written to report.json."""

    data: dict[str, Any]

    @property
    def cache_hit(self) -> bool:
        return bool(self.data.get("cacheHit"))

    def summary_line(self) -> str:
        artifact = self.data.get("artifact", {})
        verification = self.data.get("verification", {})
        parts = [f"{self.data.get('modelName')}: {artifact.get('format')} {artifact.get('precision')}"]
        if artifact.get("method"):
            parts[0] += f" ({artifact['method']})"
        if artifact.get("sizeBytes") is not None:
            parts.append(f"{artifact['sizeBytes'] / 1024:.1f} KiB")
        if verification.get("accuracy") is not None:
            parts.append(
                f"accuracy {100 * verification['accuracy']:.2f}% "
                f"(original {100 * verification.get('referenceAccuracy', 0):.2f}%)"
            )
        if verification.get("minCosine") is not None:
            parts.append(f"min cosine {verification['minCosine']:.4f}")
        if verification.get("maxAbsError") is not None:
            parts.append(f"max abs error {verification['maxAbsError']:.3g}")
        if verification.get("passed") is not None:
            parts.append("verified" if verification["passed"] else "NOT verified")
        parts.append("cache hit" if self.cache_hit else f"{self.data.get('timings', {}).get('totalSeconds', 0):.1f} s")
        parts.append(f"-> {self.data.get('output', '')}")
        return ", ".join(parts)

    def summary(self) -> dict[str, Any]:
        """Compact JSON shaped like the API status (camelCase), below 3 KB."""
        summary: dict[str, Any] = {
            "modelName": self.data.get("modelName"),
            "conversionHash": self.data.get("conversionHash"),
            "cacheHit": self.cache_hit,
            "artifact": {k: v for k, v in self.data.get("artifact", {}).items() if k not in ("method", "files")},
            "verification": {
                k: v for k, v in self.data.get("verification", {}).items() if k in SUMMARY_VERIFICATION_KEYS
            },
        }
        chosen = self.data.get("chosen")
        if chosen:
            summary["chosen"] = {
                "precision": chosen.get("precision"),
                "method": chosen.get("method"),
                "reason": str(chosen.get("reason", ""))[:300],
                "candidates": [
                    {
                        "name": c.get("name"),
                        "passed": c.get("passed"),
                        "latencyMs": c.get("latencyMs"),
                        "sizeBytes": c.get("sizeBytes"),
                    }
                    for c in self.data.get("candidates", [])
                ],
            }
        text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
        if len(text) > SUMMARY_LIMIT and "chosen" in summary:
            summary["chosen"].pop("candidates", None)
            summary["chosen"]["reason"] = summary["chosen"]["reason"][:120]
        return summary


def write_report(report: Report, path: Path) -> None:
    """Write report.json atomically."""
    atomic_write_text(path, json.dumps(report.data, indent=2, sort_keys=True) + "\n")


def write_summary(report: Report, path: Path) -> None:
    """Write the compact summary; special files (/dev/termination-log) are written in place."""
    text = json.dumps(report.summary(), separators=(",", ":"), sort_keys=True)
    if (path.exists() and not path.is_file()) or str(path).startswith("/dev/"):
        with path.open("w", encoding="utf-8") as handle:
            handle.write(text)
        return
    atomic_write_text(path, text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
