"""The rollout state machine (spec.rollout, issue 10): which revision serves how much traffic, as a pure function.

``step(rollout, state, observed, analysis, now, history_limit=...)`` takes the spec's rollout settings, what the
last decision left in status (``status.rollout``/``status.revisions``), what the operator observed (the spec's
revision and whether it is converted and ready), the latest analysis sample and the clock, and returns a
``Decision``: the traffic split and shadow traffic, the new ``status.rollout`` and ``status.revisions``, the
outcomes it recorded, kstatus conditions, events, and when to look again. No I/O, no kopf, no wall clock.

The reconcile calls it through controller/delivery.py (which observes, takes the analysis sample, turns the
decision into the Traffic the renderer draws and into status, and requeues at ``Decision.requeue_at``).

Rules:
- Revisions are conversion hashes. The stable one serves what the canary does not.
- A canary walks its steps: step 0 holds shadow traffic (``mirror``) when asked for, else is only the wait for the
  new revision's artifact and replicas; step k (1-based) holds ``steps[k-1].weight`` for its ``pause``. An
  analysis is due every ``analysis.interval`` while a step is held (``analysis_due``). The first failed analysis
  aborts at once (weight 0, the stable keeps serving, ``Stalled=True`` reason ``CanaryAborted``). A step advances
  when its pause is over and the latest analysis taken during it passed; with fewer requests than
  ``minRequests`` an analysis is Inconclusive and the step waits (it never promotes on too little traffic). After
  the last step the canary is promoted: it serves everything and the old stable is Superseded.
- A spec change mid-canary (another new hash) supersedes the running canary; the new one starts at step 0 while
  the stable keeps serving. The aborted canary's own spec applied again stays aborted (a new spec moves on).
- Re-applying the stable's spec mid-canary, or the spec of an older revision that once served as stable and is
  still in the history, is a rollback: that revision serves everything at once (no conversion, no canary), and
  what it replaces ends ``RolledBack``.
- ``strategy: immediate`` (or no rollout) switches to a new revision as soon as it is ready (the behaviour before
  rollouts existed; ``status.rollout`` stays unset without a rollout).
- The history (newest first) keeps at most ``history_limit`` revisions, and always those serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modelservice.api.rollout import Rollout, parse_duration
from modelservice.api.status import (
    Condition,
    ModelServiceStatus,
    Outcome,
    RevisionRecord,
    RolloutAnalysis,
    RolloutPhase,
    RolloutStatus,
    Verdict,
)
from modelservice.controller.history import History
from modelservice.controller.history import Revision as Revision
from modelservice.controller.history import rfc3339 as rfc3339

REASON_PROGRESSING = "CanaryProgressing"
REASON_ABORTED = "CanaryAborted"


# ------------------------------------------------------------------------------------------ inputs, output


@dataclass(frozen=True)
class Observed:
    """What the operator saw.

    desired:  the revision the spec asks for.
    ready:    its artifact is converted and verified, and (as a canary) its Deployment has ready replicas.
    served:   the hash the existing Deployment serves, for a ModelService that has no rollout state yet.
    """

    desired: Revision
    ready: bool
    served: str | None = None


@dataclass(frozen=True)
class RolloutState:
    """What the last decision left in status."""

    rollout: RolloutStatus | None = None
    revisions: tuple[RevisionRecord, ...] = ()

    @classmethod
    def from_status(cls, status: ModelServiceStatus | None) -> RolloutState:
        if status is None:
            return cls()
        return cls(status.rollout, tuple(status.revisions or ()))


@dataclass(frozen=True)
class AnalysisSample:
    """One analysis of the canary over the last interval (controller/analysis.py measures and judges it).

    verdict Inconclusive: no answer (Prometheus down, too little traffic). ``readiness_only``: there is no
    Prometheus; a Passed verdict then rests on replica readiness and minRequests is not asked for. From
    analysis.AnalysisResult: Pass -> Passed, Fail -> Failed, Wait and Error -> Inconclusive, ReadinessOnly ->
    Passed with readiness_only (the adapter belongs to the wiring).
    """

    at: datetime
    verdict: Verdict
    requests: float = 0
    error_rate: float | None = None
    latency_ratio: float | None = None
    message: str = ""
    readiness_only: bool = False


@dataclass(frozen=True)
class Decision:
    """What to serve and what to write.

    stable:      the revision that serves what the canary does not (None: nothing serves yet).
    canary:      the revision under analysis, whose Deployment must exist (None: no canary runs).
    weights:     percent of requests per revision hash (sums to 100; empty: nothing serves yet).
    mirror:      (hash, percent) of requests shadowed to that revision, responses dropped; None: no shadowing.
    rollout:     status.rollout (None without spec.rollout).
    revisions:   status.revisions, newest first, trimmed.
    outcomes:    the outcomes recorded by this decision, per hash.
    conditions:  kstatus conditions that override status.py's of the same type (empty: status.py's stand; the
                 stable revision's Deployment keeps Available as status.py computes it).
    events:      (type Normal|Warning, reason, message) for transitions only.
    requeue_at:  when to decide again (the next analysis or the end of a pause); None: on the next change.
    """

    stable: str | None
    canary: str | None
    weights: dict[str, int]
    mirror: tuple[str, int] | None
    rollout: RolloutStatus | None
    revisions: tuple[RevisionRecord, ...]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    events: tuple[tuple[str, str, str], ...] = ()
    requeue_at: datetime | None = None

    @property
    def canary_weight(self) -> int:
        return self.weights.get(self.canary, 0) if self.canary else 0


# ------------------------------------------------------------------------------------------------- time


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _pause(rollout: Rollout, step: int) -> timedelta:
    """How long step ``step`` is held: its pause; step 0 (shadow traffic) one analysis interval."""
    return parse_duration(rollout.steps[step - 1].pause) if step > 0 else parse_duration(rollout.analysis.interval)


def _last_analysis_in_step(status: RolloutStatus) -> RolloutAnalysis | None:
    if status.analysis is None or status.step_started_at is None:
        return None
    if parse_time(status.analysis.at) <= parse_time(status.step_started_at):
        return None
    return status.analysis


def analysis_due(rollout: Rollout | None, state: RolloutState | None, now: datetime) -> bool:
    """Whether an analysis sample should be taken now: a canary step is held and an interval has passed since the
    step began or since its last analysis."""
    status = state.rollout if state else None
    if rollout is None or rollout.strategy != "canary" or status is None or status.phase != "Paused":
        return False
    return now >= _next_analysis(rollout, status)


def _next_analysis(rollout: Rollout, status: RolloutStatus) -> datetime:
    assert status.step_started_at is not None
    last = _last_analysis_in_step(status)
    since = parse_time(last.at) if last else parse_time(status.step_started_at)
    return since + parse_duration(rollout.analysis.interval)


# ------------------------------------------------------------------------------------------- the machine


@dataclass
class _Step:
    """One call of ``step``: the inputs and the history being edited."""

    rollout: Rollout | None
    status: RolloutStatus | None
    observed: Observed
    now: datetime
    history: History
    history_limit: int

    def decision(
        self,
        stable: str | None,
        status: RolloutStatus | None,
        canary: tuple[str, int] | None = None,
        mirror: tuple[str, int] | None = None,
        conditions: tuple[Condition, ...] = (),
        requeue_at: datetime | None = None,
    ) -> Decision:
        """``canary``: (hash, weight) while a canary runs."""
        weights = {} if stable is None else {stable: 100}
        if stable is not None and canary is not None and canary[1] > 0:
            weights = {stable: 100 - canary[1], canary[0]: canary[1]}
        return Decision(
            stable=stable,
            canary=canary[0] if canary else None,
            weights=weights,
            mirror=mirror,
            rollout=status if self.rollout is not None else None,
            revisions=self.history.trimmed(self.history_limit),
            outcomes=dict(self.history.outcomes),
            conditions=conditions,
            events=tuple(self.history.events),
            requeue_at=requeue_at,
        )

    def settled(self, stable: str, message: str) -> Decision:
        """``stable`` serves everything; no canary runs."""
        return self.decision(
            stable, RolloutStatus(phase="Promoted", step=0, weight=100, stable_revision=stable, message=message)
        )


def step(
    rollout: Rollout | None,
    state: RolloutState | None,
    observed: Observed,
    analysis: AnalysisSample | None,
    now: datetime,
    *,
    history_limit: int,
) -> Decision:
    """The next decision; see the module's docstring for the rules."""
    state = state or RolloutState()
    history = History(state.revisions, now)
    run = _Step(rollout, state.rollout, observed, now, history, history_limit)
    status = state.rollout
    desired = observed.desired.hash
    stable = (status.stable_revision if status else None) or history.serving("Stable") or observed.served
    running = status.canary_revision if status and status.phase in ("Progressing", "Paused") else None
    aborted = status.canary_revision if status and status.phase == "Aborted" else None
    canary_strategy = rollout is not None and rollout.strategy == "canary"

    if stable is None:
        return _first(run)
    history.adopt(observed.desired if desired == stable else Revision(stable))
    if desired == stable:
        if running is None and aborted is None and status is not None and status.phase == "Promoted":
            return run.decision(stable, status)  # settled: keep the promotion's step and last analysis as they are
        if running is not None:
            history.end(running, "RolledBack")
            history.event("Normal", "RolledBack", f"revision {stable} serves again; canary {running} rolled back")
        elif aborted is not None:
            history.event("Normal", "CanaryAbortCleared", f"the spec of revision {stable} applied again")
        return run.settled(stable, f"revision {stable} serves all requests")
    target = history.find(desired)
    if target is not None and target.role == "Stable" and target.served_until is not None:
        return _rollback(run, stable, running)
    if canary_strategy and desired == running:
        assert rollout is not None and status is not None
        return _canary(run, rollout, status, stable, analysis)
    if canary_strategy and desired == aborted:
        assert status is not None
        return _aborted(run, stable, status, status.analysis)
    if not canary_strategy:
        return _immediate(run, stable, running)
    assert rollout is not None
    if running is not None:
        history.end(running, "Superseded")
        history.event("Normal", "CanarySuperseded", f"canary {running} superseded by revision {desired}")
    fresh = RolloutStatus(phase="Progressing", step=0, weight=0, stable_revision=stable, canary_revision=desired)
    return _canary(run, rollout, fresh, stable, None)


def _first(run: _Step) -> Decision:
    """Nothing served yet: the first revision serves everything once ready (there is nothing to compare with)."""
    desired = run.observed.desired
    if not run.observed.ready:
        return run.decision(None, None)
    run.history.start(desired, "Stable")
    run.history.event("Normal", "Serving", f"revision {desired.hash} serves all requests")
    return run.settled(desired.hash, f"revision {desired.hash} serves all requests")


def _immediate(run: _Step, stable: str, running: str | None) -> Decision:
    """strategy immediate (or no rollout): the new revision takes every request as soon as it is ready."""
    desired = run.observed.desired
    if not run.observed.ready:
        if running is not None:  # the spec moved on from the canary's revision
            run.history.end(running, "Superseded")
            run.history.event("Normal", "CanarySuperseded", f"canary {running} superseded by revision {desired.hash}")
        return run.settled(stable, f"revision {stable} serves all requests; {desired.hash} is not ready")
    for previous in (stable, running):
        if previous is not None and previous != desired.hash:
            run.history.end(previous, "Superseded")
    run.history.start(desired, "Stable")
    run.history.event("Normal", "Serving", f"revision {desired.hash} serves all requests, replacing {stable}")
    return run.settled(desired.hash, f"revision {desired.hash} serves all requests")


def _rollback(run: _Step, stable: str, running: str | None) -> Decision:
    """An older stable revision still in the history serves everything again, at once, without conversion."""
    desired = run.observed.desired
    for previous in (stable, running):
        run.history.end(previous, "RolledBack")
    run.history.start(desired, "Stable")
    run.history.event("Normal", "RolledBack", f"rolled back to revision {desired.hash} (replacing {stable})")
    return run.settled(desired.hash, f"rolled back to revision {desired.hash}")


def _judge(rollout: Rollout, sample: AnalysisSample) -> RolloutAnalysis:
    """The sample as status shows it; too little traffic turns a pass into Inconclusive."""
    verdict, message = sample.verdict, sample.message
    minimum = rollout.analysis.min_requests
    if verdict == "Passed" and not sample.readiness_only and sample.requests < minimum:
        verdict = "Inconclusive"
        message = f"too little traffic: {sample.requests:.0f} requests < minRequests {minimum}, waiting"
    return RolloutAnalysis(
        at=rfc3339(sample.at),
        error_rate=sample.error_rate,
        latency_ratio=sample.latency_ratio,
        requests=int(sample.requests),
        verdict=verdict,
        message=message,
    )


def _failure_message(rollout: Rollout, analysis: RolloutAnalysis | None) -> str:
    if analysis is None:
        return "canary aborted"
    numbers = [f"{analysis.requests} requests"]
    if analysis.error_rate is not None:
        numbers.append(f"error rate {analysis.error_rate:.4g} (max {rollout.analysis.max_error_rate:.4g})")
    if analysis.latency_ratio is not None:
        numbers.append(f"latency ratio {analysis.latency_ratio:.3g} (max {rollout.analysis.max_latency_ratio:.3g})")
    reason = analysis.message.removeprefix("canary failed analysis: ")
    detail = f": {reason}" if reason else ""
    return f"canary failed analysis at {analysis.at} ({', '.join(numbers)}){detail}"


def _aborted(run: _Step, stable: str, status: RolloutStatus, analysis: RolloutAnalysis | None) -> Decision:
    """The canary is off; the stable serves everything; Stalled until the spec changes."""
    assert run.rollout is not None
    message = status.message if status.phase == "Aborted" else _failure_message(run.rollout, analysis)
    aborted = status.model_copy(
        update={"phase": "Aborted", "weight": 0, "mirror_percent": None, "analysis": analysis, "message": message}
    )
    conditions = (
        Condition(type="Stalled", status="True", reason=REASON_ABORTED, message=message),
        Condition(type="Reconciling", status="False", reason=REASON_ABORTED, message="the stable revision serves"),
    )
    return run.decision(stable, aborted, conditions=conditions)


def _holding(
    run: _Step, rollout: Rollout, status: RolloutStatus, stable: str, phase: RolloutPhase, message: str
) -> Decision:
    """The canary runs: its weight (and shadow traffic at step 0), Reconciling, and when to look again."""
    canary = status.canary_revision
    assert canary is not None
    weight = status.weight
    mirror = (canary, status.mirror_percent) if status.mirror_percent else None
    requeue_at = None
    if status.step_started_at is not None:
        next_analysis = _next_analysis(rollout, status)
        if next_analysis <= run.now:  # overdue (no sample was taken): try again an interval later
            next_analysis = run.now + parse_duration(rollout.analysis.interval)
        pause_end = parse_time(status.step_started_at) + _pause(rollout, status.step)
        requeue_at = min(next_analysis, pause_end) if pause_end > run.now else next_analysis
    updated = status.model_copy(update={"phase": phase, "message": message})
    total = len(rollout.steps)
    reconciling = Condition(
        type="Reconciling",
        status="True",
        reason=REASON_PROGRESSING,
        message=f"canary {canary} at step {status.step}/{total}, weight {weight}%: {message}",
    )
    stalled = Condition(type="Stalled", status="False", reason=REASON_PROGRESSING, message="")
    return run.decision(
        stable,
        updated,
        canary=(canary, weight),
        mirror=mirror,
        conditions=(reconciling, stalled),
        requeue_at=requeue_at,
    )


def _enter(run: _Step, rollout: Rollout, status: RolloutStatus, step_: int) -> RolloutStatus:
    """Status for holding step ``step_`` from now on."""
    weight = rollout.steps[step_ - 1].weight if step_ > 0 else 0
    mirror = rollout.mirror.percent if step_ == 0 and rollout.mirror is not None else None
    return status.model_copy(
        update={"step": step_, "weight": weight, "mirror_percent": mirror, "step_started_at": rfc3339(run.now)}
    )


def _canary(
    run: _Step, rollout: Rollout, status: RolloutStatus, stable: str, sample: AnalysisSample | None
) -> Decision:
    """A canary of the spec's revision: wait for it, hold each step, analyse, advance, promote or abort."""
    desired = run.observed.desired
    history = run.history
    status = status.model_copy(update={"stable_revision": stable})
    if status.step_started_at is None:  # step 0 before it began: the new revision is converted and started
        if not run.observed.ready:
            return _holding(run, rollout, status, stable, "Progressing", f"waiting for revision {desired.hash}")
        history.start(desired, "Canary")
        status = _enter(run, rollout, status, 0 if rollout.mirror is not None else 1)
        what = f"shadowing {status.mirror_percent}%" if status.mirror_percent else f"weight {status.weight}%"
        history.event("Normal", "CanaryStarted", f"canary {desired.hash} started: {what}")
        return _holding(run, rollout, status, stable, "Paused", f"holding {what}")

    last = _last_analysis_in_step(status)
    started = parse_time(status.step_started_at)
    if sample is not None and sample.at > started and (last is None or sample.at > parse_time(last.at)):
        last = _judge(rollout, sample)
        status = status.model_copy(update={"analysis": last})
        if last.verdict == "Failed":
            history.end(desired.hash, "Aborted")
            message = _failure_message(rollout, last)
            history.event("Warning", REASON_ABORTED, message)
            return _aborted(run, stable, status.model_copy(update={"message": message, "phase": "Aborted"}), last)

    pause_over = run.now >= started + _pause(rollout, status.step)
    if not (pause_over and last is not None and last.verdict == "Passed" and run.observed.ready):
        if not run.observed.ready:
            waiting = f"revision {desired.hash} has no ready replicas"
        elif last is not None and last.verdict == "Inconclusive":
            waiting = last.message or "the last analysis was inconclusive"
        elif pause_over:
            waiting = "pause over, waiting for an analysis"
        else:
            waiting = f"pausing until {rfc3339(started + _pause(rollout, status.step))}"
        return _holding(run, rollout, status, stable, "Paused", waiting)

    if status.step < len(rollout.steps):
        status = _enter(run, rollout, status, status.step + 1)
        history.event("Normal", "CanaryStepAdvanced", f"canary {desired.hash}: step {status.step}, {status.weight}%")
        return _holding(run, rollout, status, stable, "Paused", f"holding weight {status.weight}%")

    history.end(stable, "Superseded")
    history.promote(desired.hash)
    history.event("Normal", "CanaryPromoted", f"revision {desired.hash} promoted, replacing {stable}")
    promoted = RolloutStatus(
        phase="Promoted",
        step=len(rollout.steps),
        weight=100,
        stable_revision=desired.hash,
        analysis=last,
        message=f"revision {desired.hash} promoted after {len(rollout.steps)} steps",
    )
    return run.decision(desired.hash, promoted)
