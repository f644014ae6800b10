"""The rollout state machine (controller/rollout.py), table-driven: each scenario is a list of ticks, each tick one
call of ``step`` at an explicit clock (seconds after T0) with what was observed and the analysis sample taken then;
the decision of one tick is the state of the next, as status would carry it. No sleeps, no real time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelservice.api.rollout import Rollout, parse_duration
from modelservice.api.status import ModelServiceStatus
from modelservice.controller.rollout import (
    AnalysisSample,
    Decision,
    Observed,
    Revision,
    RolloutState,
    analysis_due,
    step,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rollout(**changes: Any) -> Rollout:
    spec: dict[str, Any] = {
        "strategy": "canary",
        "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"}],
        "analysis": {"interval": "30s", "minRequests": 100},
    }
    return Rollout.model_validate({**spec, **changes})


CANARY = rollout()
MIRRORED = rollout(mirror={"percent": 20})
IMMEDIATE = Rollout(strategy="immediate")

SAMPLES = {
    "pass": dict(verdict="Passed", requests=500, error_rate=0.0, latency_ratio=1.1, message="ok"),
    "few": dict(verdict="Passed", requests=12, error_rate=0.0, latency_ratio=1.0, message="ok"),
    "fail-errors": dict(verdict="Failed", requests=400, error_rate=0.2, latency_ratio=1.0, message="80 of 400 failed"),
    "fail-latency": dict(verdict="Failed", requests=400, error_rate=0.0, latency_ratio=3.2, message="too slow"),
    "error": dict(verdict="Inconclusive", requests=0, message="Prometheus did not answer"),
    "readiness": dict(verdict="Passed", requests=0, message="no Prometheus: replicas ready", readiness_only=True),
}


@dataclass(frozen=True)
class Tick:
    t: float  # seconds after T0
    desired: str
    ready: bool = True
    sample: str | None = None  # a key of SAMPLES, taken at t
    rollout: Rollout | None = field(default_factory=lambda: CANARY)
    # expectations (None: not checked)
    phase: str | None = None
    step: int | None = None
    weights: dict[str, int] | None = None
    mirror: tuple[str, int] | None = None
    no_mirror: bool = False
    outcomes: dict[str, str] | None = None
    events: tuple[str, ...] | None = None  # reasons, in order
    conditions: dict[str, tuple[str, str]] | None = None  # type -> (status, reason)
    requeue: float | None = None  # seconds after T0
    no_requeue: bool = False
    history: list[tuple[str, str]] | None = None  # (hash, outcome), newest first
    message: str | None = None  # a fragment of the Stalled (or Reconciling) condition's message
    limit: int = 5


def serve(hash_: str, **kw: Any) -> Tick:
    """The first revision (nothing to compare with) serves everything."""
    return Tick(0, hash_, **kw)


def analyses(start: float, end: float, desired: str, kind: str = "pass", every: float = 30) -> list[Tick]:
    """A sample every ``every`` seconds from start to end, inclusive, nothing checked."""
    ticks, t = [], start
    while t <= end:
        ticks.append(Tick(t, desired, sample=kind))
        t += every
    return ticks


def run(ticks: list[Tick]) -> list[Decision]:
    state: RolloutState | None = None
    decisions = []
    for tick in ticks:
        sample = None
        if tick.sample is not None:
            sample = AnalysisSample(at=at(tick.t), **SAMPLES[tick.sample])  # type: ignore[arg-type]
        observed = Observed(
            desired=Revision(tick.desired, precision="int8", artifact_sha256="a" * 64), ready=tick.ready
        )
        decision = step(tick.rollout, state, observed, sample, at(tick.t), history_limit=tick.limit)
        again = step(tick.rollout, state, observed, sample, at(tick.t), history_limit=tick.limit)
        assert again == decision, "step is a function of its inputs"
        check(tick, decision)
        state = RolloutState(decision.rollout, decision.revisions)
        decisions.append(decision)
    return decisions


def check(tick: Tick, d: Decision) -> None:
    where = f"at t={tick.t}"
    if tick.phase is not None:
        assert d.rollout is not None and d.rollout.phase == tick.phase, (where, d.rollout)
    if tick.step is not None:
        assert d.rollout is not None and d.rollout.step == tick.step, (where, d.rollout)
    if tick.weights is not None:
        assert d.weights == tick.weights, where
        assert not d.weights or sum(d.weights.values()) == 100
    if tick.mirror is not None:
        assert d.mirror == tick.mirror, where
    if tick.no_mirror:
        assert d.mirror is None, where
    if tick.outcomes is not None:
        assert d.outcomes == tick.outcomes, where
    if tick.events is not None:
        assert tuple(reason for _, reason, _ in d.events) == tick.events, (where, d.events)
    if tick.conditions is not None:
        got = {c.type: (c.status, c.reason) for c in d.conditions}
        assert got == tick.conditions, where
    if tick.requeue is not None:
        assert d.requeue_at == at(tick.requeue), (where, d.requeue_at)
    if tick.no_requeue:
        assert d.requeue_at is None, where
    if tick.history is not None:
        assert [(r.hash, r.outcome) for r in d.revisions] == tick.history, where
    if tick.message is not None:
        assert any(tick.message in c.message for c in d.conditions), (where, d.conditions)


OFF = {"Reconciling": ("True", "CanaryProgressing"), "Stalled": ("False", "CanaryProgressing")}
ABORTED = {"Stalled": ("True", "CanaryAborted"), "Reconciling": ("False", "CanaryAborted")}


SCENARIOS: dict[str, list[Tick]] = {
    "first revision serves at once": [
        Tick(0, "h1", ready=False, weights={}, no_requeue=True, history=[]),
        Tick(5, "h1", phase="Promoted", weights={"h1": 100}, outcomes={"h1": "Serving"}, events=("Serving",)),
        Tick(6, "h1", phase="Promoted", weights={"h1": 100}, outcomes={}, events=(), conditions={}),
    ],
    "every step, every pause, then promote": [
        serve("h1"),
        Tick(
            10,
            "h2",
            ready=False,
            phase="Progressing",
            step=0,
            weights={"h1": 100},
            no_requeue=True,
            conditions=OFF,
            events=(),
        ),
        Tick(
            20,
            "h2",
            phase="Paused",
            step=1,
            weights={"h1": 90, "h2": 10},
            requeue=50,
            events=("CanaryStarted",),
            conditions=OFF,
            outcomes={"h2": "Serving"},
            no_mirror=True,
        ),
        Tick(50, "h2", sample="pass", step=1, weights={"h1": 90, "h2": 10}, requeue=80),
        *analyses(80, 110, "h2"),
        # the pause (2m from t=20) ends at 140: a tick before it holds, the analysis at 140 advances
        Tick(139, "h2", step=1, weights={"h1": 90, "h2": 10}, requeue=140, events=()),
        Tick(
            140, "h2", sample="pass", step=2, weights={"h1": 50, "h2": 50}, events=("CanaryStepAdvanced",), requeue=170
        ),
        *analyses(170, 410, "h2"),
        Tick(439, "h2", step=2, weights={"h1": 50, "h2": 50}, requeue=440),
        Tick(
            440,
            "h2",
            sample="pass",
            phase="Promoted",
            weights={"h2": 100},
            events=("CanaryPromoted",),
            outcomes={"h1": "Superseded", "h2": "Promoted"},
            conditions={},
            no_requeue=True,
            history=[("h2", "Promoted"), ("h1", "Superseded")],
        ),
        Tick(470, "h2", phase="Promoted", weights={"h2": 100}, events=(), outcomes={}, no_requeue=True),
    ],
    "a step waits for an analysis after its pause": [
        serve("h1", rollout=rollout(steps=[{"weight": 20, "pause": "0s"}])),
        Tick(10, "h2", rollout=rollout(steps=[{"weight": 20, "pause": "0s"}]), step=1, requeue=40),
        Tick(30, "h2", rollout=rollout(steps=[{"weight": 20, "pause": "0s"}]), step=1, requeue=40),
        Tick(
            40,
            "h2",
            rollout=rollout(steps=[{"weight": 20, "pause": "0s"}]),
            sample="pass",
            phase="Promoted",
            weights={"h2": 100},
        ),
    ],
    "too little traffic waits and never promotes": [
        serve("h1", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}])),
        Tick(0, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}]), step=1),
        *[
            Tick(
                t,
                "h2",
                rollout=rollout(steps=[{"weight": 10, "pause": "1m"}]),
                sample="few",
                phase="Paused",
                step=1,
                weights={"h1": 90, "h2": 10},
                requeue=t + 30,
                message="too little traffic: 12 requests",
            )
            for t in (30, 60, 90, 600, 3600)
        ],
        Tick(3630, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}]), sample="pass", phase="Promoted"),
    ],
    "a pass then too little traffic does not promote": [
        serve("h1", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}])),
        Tick(0, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}])),
        Tick(30, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}]), sample="pass", step=1),
        Tick(60, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}]), sample="few", phase="Paused"),
        Tick(90, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "1m"}]), sample="pass", phase="Promoted"),
    ],
    "Prometheus errors wait": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(30, "h2", sample="error", phase="Paused", step=1, requeue=60),
        Tick(200, "h2", sample="error", phase="Paused", step=1, weights={"h1": 90, "h2": 10}),
        Tick(230, "h2", sample="pass", phase="Paused", step=2),
    ],
    "no Prometheus: readiness alone may promote": [
        serve("h1", rollout=rollout(steps=[{"weight": 10, "pause": "30s"}])),
        Tick(0, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "30s"}])),
        Tick(30, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "30s"}]), sample="readiness", phase="Promoted"),
    ],
    "a missed analysis is retried an interval later": [
        serve("h1"),
        Tick(0, "h2", step=1, requeue=30),
        Tick(45, "h2", step=1, requeue=75),  # due at 30, nothing came: look again at 75
    ],
    "the canary losing its replicas holds": [
        serve("h1", rollout=rollout(steps=[{"weight": 10, "pause": "30s"}])),
        Tick(0, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "30s"}])),
        Tick(
            30,
            "h2",
            ready=False,
            rollout=rollout(steps=[{"weight": 10, "pause": "30s"}]),
            sample="pass",
            phase="Paused",
            message="no ready replicas",
        ),
        Tick(60, "h2", rollout=rollout(steps=[{"weight": 10, "pause": "30s"}]), sample="pass", phase="Promoted"),
    ],
    "failing errors abort at once": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(30, "h2", sample="pass", step=1),
        Tick(
            60,
            "h2",
            sample="fail-errors",
            phase="Aborted",
            weights={"h1": 100},
            conditions=ABORTED,
            outcomes={"h2": "Aborted"},
            events=("CanaryAborted",),
            no_requeue=True,
            message="error rate 0.2 (max 0.01), latency ratio 1 (max 1.5)",
            history=[("h2", "Aborted"), ("h1", "Serving")],
        ),
        # the same spec stays aborted: the stable serves, nothing is retried
        Tick(
            90,
            "h2",
            sample="pass",
            phase="Aborted",
            weights={"h1": 100},
            conditions=ABORTED,
            events=(),
            outcomes={},
            message="400 requests",
            no_requeue=True,
        ),
        Tick(3600, "h2", phase="Aborted", weights={"h1": 100}, conditions=ABORTED),
    ],
    "failing latency aborts in the last step": [
        serve("h1"),
        Tick(0, "h2", step=1),
        *analyses(30, 120, "h2"),
        Tick(121, "h2", step=2, weights={"h1": 50, "h2": 50}),
        Tick(151, "h2", sample="fail-latency", phase="Aborted", weights={"h1": 100}, message="latency ratio 3.2"),
    ],
    "after an abort the stable's spec clears it": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(30, "h2", sample="fail-errors", phase="Aborted"),
        Tick(
            40,
            "h1",
            phase="Promoted",
            weights={"h1": 100},
            conditions={},
            events=("CanaryAbortCleared",),
            history=[("h2", "Aborted"), ("h1", "Serving")],
        ),
    ],
    "after an abort a new spec starts a new canary": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(30, "h2", sample="fail-errors", phase="Aborted"),
        Tick(40, "h3", phase="Paused", step=1, weights={"h1": 90, "h3": 10}, events=("CanaryStarted",), conditions=OFF),
    ],
    "an aborted canary's revision applied again after another is canaried again": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(30, "h2", sample="fail-errors", phase="Aborted"),
        Tick(40, "h3", step=1),
        Tick(
            50,
            "h2",
            step=1,
            weights={"h1": 90, "h2": 10},
            events=("CanarySuperseded", "CanaryStarted"),
            history=[("h2", "Serving"), ("h3", "Superseded"), ("h1", "Serving")],
        ),
    ],
    "shadow traffic before any weight": [
        serve("h1", rollout=MIRRORED),
        Tick(
            10,
            "h2",
            rollout=MIRRORED,
            phase="Paused",
            step=0,
            weights={"h1": 100},
            mirror=("h2", 20),
            requeue=40,
            events=("CanaryStarted",),
            conditions=OFF,
        ),
        Tick(40, "h2", rollout=MIRRORED, sample="few", step=0, mirror=("h2", 20)),
        Tick(70, "h2", rollout=MIRRORED, sample="pass", step=1, weights={"h1": 90, "h2": 10}, no_mirror=True),
    ],
    "shadow traffic failing aborts before any weight": [
        serve("h1", rollout=MIRRORED),
        Tick(10, "h2", rollout=MIRRORED, mirror=("h2", 20)),
        Tick(40, "h2", rollout=MIRRORED, sample="fail-errors", phase="Aborted", weights={"h1": 100}, no_mirror=True),
    ],
    "a spec change mid-canary supersedes it": [
        serve("h1"),
        Tick(0, "h2", step=1),
        *analyses(30, 120, "h2"),
        Tick(125, "h2", step=2, weights={"h1": 50, "h2": 50}),
        Tick(
            130,
            "h3",
            ready=False,
            phase="Progressing",
            step=0,
            weights={"h1": 100},
            events=("CanarySuperseded",),
            outcomes={"h2": "Superseded"},
            conditions=OFF,
            no_requeue=True,
        ),
        Tick(200, "h3", phase="Paused", step=1, weights={"h1": 90, "h3": 10}, events=("CanaryStarted",)),
        Tick(230, "h3", sample="pass", step=1),
        *analyses(260, 320, "h3"),
        Tick(321, "h3", step=2, weights={"h1": 50, "h3": 50}),
        *analyses(351, 591, "h3"),
        Tick(
            621,
            "h3",
            sample="pass",
            phase="Promoted",
            weights={"h3": 100},
            history=[("h3", "Promoted"), ("h2", "Superseded"), ("h1", "Superseded")],
        ),
    ],
    "re-applying the stable's spec mid-canary rolls back": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(30, "h2", sample="pass", step=1),
        Tick(
            40,
            "h1",
            phase="Promoted",
            weights={"h1": 100},
            events=("RolledBack",),
            conditions={},
            outcomes={"h2": "RolledBack"},
            no_requeue=True,
            history=[("h2", "RolledBack"), ("h1", "Serving")],
        ),
    ],
    "re-applying an older revision rolls back at once, not converted, not canaried": [
        serve("h1"),
        Tick(0, "h2", step=1),
        *analyses(30, 420, "h2"),
        Tick(420, "h2", phase="Promoted"),
        Tick(
            500,
            "h1",
            ready=False,
            phase="Promoted",
            weights={"h1": 100},
            events=("RolledBack",),
            outcomes={"h2": "RolledBack", "h1": "Serving"},
            conditions={},
            history=[("h1", "Serving"), ("h2", "RolledBack")],
        ),
    ],
    "an older revision applied mid-canary rolls back past the canary": [
        serve("h1"),
        Tick(0, "h2", step=1),
        *analyses(30, 420, "h2"),
        Tick(430, "h3", step=1, weights={"h2": 90, "h3": 10}),
        Tick(
            440,
            "h1",
            phase="Promoted",
            weights={"h1": 100},
            events=("RolledBack",),
            outcomes={"h2": "RolledBack", "h3": "RolledBack", "h1": "Serving"},
        ),
    ],
    "a superseded canary's spec is canaried again, not rolled back to": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(10, "h3", step=1),
        Tick(
            20, "h2", phase="Paused", step=1, weights={"h1": 90, "h2": 10}, events=("CanarySuperseded", "CanaryStarted")
        ),
    ],
    "immediate strategy switches when ready": [
        serve("h1", rollout=IMMEDIATE),
        Tick(10, "h2", rollout=IMMEDIATE, ready=False, phase="Promoted", weights={"h1": 100}, conditions={}),
        Tick(
            20,
            "h2",
            rollout=IMMEDIATE,
            phase="Promoted",
            weights={"h2": 100},
            events=("Serving",),
            outcomes={"h1": "Superseded", "h2": "Serving"},
            no_requeue=True,
        ),
        Tick(30, "h1", rollout=IMMEDIATE, ready=False, weights={"h1": 100}, events=("RolledBack",)),
    ],
    "switching a running canary to immediate": [
        serve("h1"),
        Tick(0, "h2", step=1),
        Tick(
            10,
            "h2",
            rollout=IMMEDIATE,
            phase="Promoted",
            weights={"h2": 100},
            outcomes={"h1": "Superseded", "h2": "Serving"},
            history=[("h2", "Serving"), ("h1", "Superseded")],
        ),
    ],
    "no rollout: today's switch, no status.rollout, history kept": [
        serve("h1", rollout=None),
        Tick(10, "h2", rollout=None, ready=False, weights={"h1": 100}, conditions={}, no_requeue=True),
        Tick(20, "h2", rollout=None, weights={"h2": 100}, history=[("h2", "Serving"), ("h1", "Superseded")]),
        Tick(30, "h1", rollout=None, ready=False, weights={"h1": 100}, events=("RolledBack",)),
    ],
    "history keeps revisionHistoryLimit revisions, and every serving one": [
        serve("h0", rollout=None, limit=3),
        *[Tick(i, f"h{i}", rollout=None, limit=3) for i in range(1, 6)],
        Tick(6, "h6", rollout=None, limit=3, history=[("h6", "Serving"), ("h5", "Superseded"), ("h4", "Superseded")]),
        Tick(7, "h7", limit=1, step=1, history=[("h7", "Serving"), ("h6", "Serving")]),
        Tick(8, "h7", limit=0, step=1, history=[("h7", "Serving"), ("h6", "Serving")]),
        Tick(9, "h8", limit=0, ready=False, step=0, history=[("h6", "Serving")]),
    ],
    "a trimmed revision is no rollback target": [
        serve("h0", rollout=None, limit=1),
        Tick(1, "h1", rollout=None, limit=1, history=[("h1", "Serving")]),
        Tick(2, "h0", rollout=None, limit=1, ready=False, weights={"h1": 100}, events=()),
        Tick(3, "h0", rollout=None, limit=1, weights={"h0": 100}, events=("Serving",)),
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str) -> None:
    run(SCENARIOS[name])


def test_adopts_what_the_deployment_serves() -> None:
    """A ModelService that served before rollouts existed: its Deployment's hash is the stable revision."""
    observed = Observed(desired=Revision("h2"), ready=True, served="h1")
    decision = step(CANARY, None, observed, None, T0, history_limit=5)
    assert decision.stable == "h1" and decision.canary == "h2"
    assert decision.weights == {"h1": 90, "h2": 10}
    assert [(r.hash, r.outcome) for r in decision.revisions] == [("h2", "Serving"), ("h1", "Serving")]
    assert decision.revisions[1].served_from is None  # unknown: it served before any history


def test_records_the_artifact_and_the_clock() -> None:
    verification = ModelServiceStatus.model_validate({"verification": {"passed": True, "accuracy": 0.98}}).verification
    revision = Revision("h1", precision="int8", artifact_sha256="b" * 64, verification=verification)
    decision = step(None, None, Observed(revision, ready=True), None, at(5), history_limit=5)
    record = decision.revisions[0]
    assert record.to_api() == {
        "hash": "h1",
        "precision": "int8",
        "artifactSha256": "b" * 64,
        "verification": {"accuracy": 0.98, "passed": True},
        "role": "Stable",
        "servedFrom": "2026-01-01T00:00:05Z",
        "outcome": "Serving",
    }
    assert decision.rollout is None  # no spec.rollout: no status.rollout


def test_status_round_trip() -> None:
    """What a decision writes parses back as status, and continues the rollout from there."""
    decisions = run([serve("h1"), Tick(0, "h2", step=1)])
    status = ModelServiceStatus.model_validate(
        {"rollout": decisions[-1].rollout.to_api(), "revisions": [r.to_api() for r in decisions[-1].revisions]}
    )
    assert status.rollout is not None and status.rollout.to_api() == {
        "phase": "Paused",
        "step": 1,
        "weight": 10,
        "stableRevision": "h1",
        "canaryRevision": "h2",
        "stepStartedAt": "2026-01-01T00:00:00Z",
        "message": "holding weight 10%",
    }
    state = RolloutState.from_status(status)
    sample = AnalysisSample(at=at(30), **SAMPLES["pass"])  # type: ignore[arg-type]
    decision = step(CANARY, state, Observed(Revision("h2"), ready=True), sample, at(30), history_limit=5)
    assert decision.rollout is not None and decision.rollout.analysis is not None
    assert decision.rollout.analysis.verdict == "Passed" and decision.rollout.analysis.requests == 500


@pytest.mark.parametrize(
    ("seconds", "due"),
    [(0, False), (29, False), (30, True), (45, True)],
)
def test_analysis_due_every_interval(seconds: float, due: bool) -> None:
    decisions = run([serve("h1"), Tick(0, "h2", step=1)])
    state = RolloutState(decisions[-1].rollout, decisions[-1].revisions)
    assert analysis_due(CANARY, state, at(seconds)) is due
    assert analysis_due(None, state, at(seconds)) is False


def test_analysis_due_counts_from_the_last_sample() -> None:
    decisions = run([serve("h1"), Tick(0, "h2", step=1), Tick(30, "h2", sample="pass")])
    state = RolloutState(decisions[-1].rollout, decisions[-1].revisions)
    assert not analysis_due(CANARY, state, at(59))
    assert analysis_due(CANARY, state, at(60))


def test_no_analysis_without_a_held_step() -> None:
    waiting = run([serve("h1"), Tick(0, "h2", ready=False, phase="Progressing")])[-1]
    assert not analysis_due(CANARY, RolloutState(waiting.rollout, waiting.revisions), at(600))
    aborted = run([serve("h1"), Tick(0, "h2"), Tick(30, "h2", sample="fail-errors", phase="Aborted")])[-1]
    assert not analysis_due(CANARY, RolloutState(aborted.rollout, aborted.revisions), at(600))


def test_a_stale_sample_counts_once() -> None:
    """A sample from before the step began, or not newer than the last one, changes nothing."""
    decisions = run([serve("h1"), Tick(100, "h2", step=1)])
    state = RolloutState(decisions[-1].rollout, decisions[-1].revisions)
    old = AnalysisSample(at=at(50), **SAMPLES["fail-errors"])  # type: ignore[arg-type]
    decision = step(CANARY, state, Observed(Revision("h2"), ready=True), old, at(130), history_limit=5)
    assert decision.rollout is not None and decision.rollout.phase == "Paused"


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("1h", 3600), ("1m30s", 90), ("0s", 0), ("1h2m3s", 3723)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "1d", "1.5m", "m", "-1s", "30s "])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_rollout_absent_changes_nothing_in_the_spec() -> None:
    from modelservice.api.models import ModelServiceSpec

    spec = ModelServiceSpec.model_validate({"model": {"uri": "s3://m/x.onnx", "format": "onnx"}})
    assert spec.rollout is None
    assert spec.revision_history_limit == 5
    assert Rollout().strategy == "immediate" and Rollout().steps == [] and Rollout().mirror is None
