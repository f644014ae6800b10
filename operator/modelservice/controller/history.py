"""The revision history of a rollout (``status.revisions``) being edited by one decision of ``rollout.step``:
newest first, the outcomes and Events this decision records, and trimming to ``revisionHistoryLimit``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from modelservice.api.status import Outcome, RevisionRecord, VerificationStatus


@dataclass(frozen=True)
class Revision:
    """The spec's revision: its conversion hash, and its artifact once converted."""

    hash: str
    precision: str | None = None
    artifact_sha256: str | None = None
    verification: VerificationStatus | None = None


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class History:
    """status.revisions being edited: newest first; records the outcomes and events of this decision."""

    def __init__(self, records: tuple[RevisionRecord, ...], now: datetime) -> None:
        self.records = list(records)
        self.now = rfc3339(now)
        self.outcomes: dict[str, Outcome] = {}
        self.events: list[tuple[str, str, str]] = []

    def find(self, hash_: str) -> RevisionRecord | None:
        return next((r for r in self.records if r.hash == hash_), None)

    def serving(self, role: str) -> str | None:
        return next((r.hash for r in self.records if r.served_until is None and r.role == role), None)

    def start(self, revision: Revision, role: str) -> None:
        """``revision`` begins serving (again): it moves to the front, outcome Serving."""
        old = self.find(revision.hash)
        self.records = [r for r in self.records if r.hash != revision.hash]
        record = RevisionRecord(
            hash=revision.hash,
            precision=revision.precision or (old.precision if old else None),
            artifact_sha256=revision.artifact_sha256 or (old.artifact_sha256 if old else None),
            verification=revision.verification or (old.verification if old else None),
            role="Stable" if role == "Stable" or (old is not None and old.role == "Stable") else "Canary",
            served_from=self.now,
            outcome="Serving",
        )
        self.records.insert(0, record)
        self.outcomes[revision.hash] = "Serving"

    def adopt(self, revision: Revision) -> None:
        """A revision that served before any history was kept gets a record (the oldest), so it can be rolled
        back to; its outcome is not a change of this decision."""
        if self.find(revision.hash) is None:
            self.records.append(
                RevisionRecord(
                    hash=revision.hash,
                    precision=revision.precision,
                    artifact_sha256=revision.artifact_sha256,
                    verification=revision.verification,
                    outcome="Serving",
                )
            )

    def promote(self, hash_: str) -> None:
        self._update(hash_, {"outcome": "Promoted", "role": "Stable"})

    def end(self, hash_: str | None, outcome: Outcome) -> None:
        """``hash_`` stops serving with ``outcome`` (nothing when it has no record)."""
        if hash_ is not None and self.find(hash_) is not None:
            self._update(hash_, {"outcome": outcome, "served_until": self.now})

    def _update(self, hash_: str, changes: dict[str, str]) -> None:
        self.records = [r.model_copy(update=changes) if r.hash == hash_ else r for r in self.records]
        self.outcomes[hash_] = changes["outcome"]  # type: ignore[assignment]  # an Outcome, by the callers

    def trimmed(self, limit: int) -> tuple[RevisionRecord, ...]:
        """At most ``limit`` records, more only to keep every serving one; the newest of the rest first."""
        room = limit - sum(1 for r in self.records if r.served_until is None)
        kept: list[RevisionRecord] = []
        for record in self.records:
            if record.served_until is None:
                kept.append(record)
            elif room > 0:
                kept.append(record)
                room -= 1
        return tuple(kept)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))
