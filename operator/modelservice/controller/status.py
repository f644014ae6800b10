"""The status of a ModelService as ONE pure function of what the operator observed.

``compute_status(StatusInputs) -> dict`` returns the whole ``status`` (camelCase, as stored). It never talks to
the API and never reads the clock: the caller passes ``now``. Conditions follow kstatus: ``Ready`` (the current
generation is fully served), ``Converted``, ``Available``, and ``Reconciling``/``Stalled``, which are True only
while something is in progress or stuck; ``Tuned`` too while tuning is wanted (``spec.serving.latencyTarget``).
``lastTransitionTime`` changes only when a condition's status changes, so an unchanged situation gives an
identical status (and the caller writes nothing).

Tuning (the profiling Job, issue 11) holds the phase at ``Converting`` (Ready False, Reconciling True, reason
``Tuning``): it prepares the repository Triton serves, and the Deployment rolls only after it. A failed profiling
Job never blocks serving: ``Tuned`` False reason ``TuningFailed`` says why; Ready follows the Deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelservice.render.plan import Plan
from modelservice.render.tuneplan import TunePlan

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
CONDITION_TYPES = ("Ready", "Converted", "Available", "Reconciling", "Stalled")
# Present only while tuning is wanted (after the others): True once Triton serves the config tuned for the spec.
TUNED = "Tuned"


@dataclass(frozen=True)
class ConversionResult:
    """What a finished conversion Job reported (its pod's termination message)."""

    job: str
    succeeded: bool
    message: str = ""
    artifact: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None


@dataclass(frozen=True)
class TuneResult:
    """What a finished profiling Job reported: ``performance`` is ``Performance.to_api()`` from its profiler's
    termination message (None: unreadable, ``message`` says why); on failure ``message`` is the error."""

    job: str
    succeeded: bool
    message: str = ""
    performance: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeploymentView:
    """The parts of a Deployment the status depends on."""

    spec_replicas: int
    generation: int
    observed_generation: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool

    @classmethod
    def of(cls, deployment: dict[str, Any]) -> DeploymentView:
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        meta = deployment.get("metadata") or {}
        progressing = [c for c in status.get("conditions") or [] if c.get("type") == "Progressing"]
        exceeded = any(c.get("reason") == "ProgressDeadlineExceeded" and c.get("status") == FALSE for c in progressing)
        return cls(
            spec_replicas=int(spec.get("replicas", 1)),
            generation=int(meta.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            replicas=int(status.get("replicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or status.get("replicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or status.get("readyReplicas") or 0),
            progress_deadline_exceeded=exceeded,
        )

    @property
    def rolled_out(self) -> bool:
        """The Deployment controller saw the latest template and every replica runs it."""
        return self.observed_generation >= self.generation and self.updated_replicas >= self.spec_replicas

    @property
    def available(self) -> bool:
        return self.spec_replicas == 0 or self.ready_replicas >= self.spec_replicas


@dataclass(frozen=True)
class RolloutOverlay:
    """What a rollout decided (spec.rollout; controller/delivery.py), in status's camelCase form.

    conditions:  override status.py's of the same type while the serving revision is healthy and nothing else is in
                 progress (a canary running: Reconciling=True CanaryProgressing; aborted: Stalled=True
                 CanaryAborted); Ready is then False with the same reason: the spec's revision is not fully served.
    rollout:     ``status.rollout``; revisions: ``status.revisions`` (newest first).
    """

    conditions: tuple[dict[str, Any], ...] = ()
    rollout: dict[str, Any] | None = None
    revisions: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class StatusInputs:
    """Everything ``compute_status`` looks at.

    problems:     spec problems only the operator can judge (``spec.x.y: message``); non-empty = invalid spec.
    plan:         render's plan (None when the spec is invalid).
    conversion:   the result of the current hash's conversion Job, when it finished and reported.
    served:       the conversion result of the hash the Deployment serves (carried from the previous status).
    apply_error:  a child the operator cannot create or take over (e.g. a foreign object with its name), with
                  ``apply_reason`` (ChildConflict, ChildRejected).
    tuning:       the tuning plan (``plan_tuning``); None or not ``wanted``: no Tuned condition.
    tune:         the result of the current tuning hash's profiling Job (``tune_job_name``), when it finished.
    served_tunings: the tuning hashes the ModelService's Deployments carry: ``status.performance`` is kept while
                  the one it was measured for (``status.tuneJob``'s) is among them.
    """

    generation: int
    now: str
    previous: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    plan: Plan | None = None
    job_name: str | None = None
    conversion: ConversionResult | None = None
    deployment: dict[str, Any] | None = None
    selector: str | None = None
    endpoints: dict[str, str] | None = None
    apply_error: str | None = None
    apply_reason: str = "ChildConflict"
    rollout: RolloutOverlay | None = None
    tuning: TunePlan | None = None
    tune_job_name: str | None = None
    tune: TuneResult | None = None
    served_tunings: frozenset[str] = frozenset()


def _condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def _available_condition(dep: DeploymentView | None) -> dict[str, Any]:
    if dep is None:
        return _condition("Available", FALSE, "NoDeployment", "Triton is not deployed yet")
    if dep.spec_replicas == 0:
        return _condition("Available", TRUE, "ScaledToZero", "scaled to 0 replicas")
    if dep.ready_replicas >= dep.spec_replicas:
        return _condition("Available", TRUE, "MinimumReplicasAvailable", f"{dep.ready_replicas} ready")
    if dep.ready_replicas > 0:
        return _condition(
            "Available", TRUE, "ReplicasUnavailable", f"{dep.ready_replicas}/{dep.spec_replicas} replicas ready"
        )
    return _condition("Available", FALSE, "NoReplicasReady", f"0/{dep.spec_replicas} replicas ready")


def _converted_condition(inputs: StatusInputs, plan: Plan) -> dict[str, Any]:
    if plan.conversion_failed:
        detail = inputs.conversion.message if inputs.conversion and inputs.conversion.message else "see the Job's logs"
        return _condition("Converted", FALSE, "ConversionFailed", f"Job {inputs.job_name} failed: {detail}")
    if plan.converting:
        return _condition("Converted", FALSE, "Converting", f"Job {inputs.job_name} is converting the model")
    verification = _served_verification(inputs)
    if verification is not None and verification.get("passed") is True:
        return _condition("Converted", TRUE, "Verified", "converted and verified against the original")
    return _condition("Converted", TRUE, "Converted", "the model repository for this spec is ready")


def _served_verification(inputs: StatusInputs) -> dict[str, Any] | None:
    if inputs.conversion is not None and inputs.conversion.succeeded:
        return inputs.conversion.verification
    previous = inputs.previous.get("verification")
    return previous if isinstance(previous, dict) else None


def _performance(inputs: StatusInputs) -> tuple[dict[str, Any] | None, str | None]:
    """(``status.performance``, ``status.tuneJob``): a profiling Job's that just succeeded, else the previous ones
    while a Deployment still serves the tuning they measured (the tuning hash ends the Job's name)."""
    result = inputs.tune
    if result is not None and result.succeeded:
        return result.performance, result.job
    job = inputs.previous.get("tuneJob")
    if not isinstance(job, str) or job.rsplit("-", 1)[-1] not in inputs.served_tunings:
        return None, None
    performance = inputs.previous.get("performance")
    return (performance if isinstance(performance, dict) else None), job


def _performance_summary(performance: dict[str, Any] | None) -> str:
    if performance is None:
        return "its summary could not be read (see the Job's logs)"
    latency = performance.get("latencyMs") or {}
    config = performance.get("config") or {}
    text = (
        f"{performance.get('throughputPerReplica', 0):g} inferences/s per replica, p99 {latency.get('p99', 0):g} ms"
        f" (maxBatchSize {config.get('maxBatchSize')}, queue delay {config.get('maxQueueDelayMicroseconds', 0)} us,"
        f" {config.get('instances', 1)} instance(s))"
    )
    if performance.get("targetMet") is False:
        text += f"; no configuration met {performance.get('target') or 'the latency target'}"
    return text


def _tuned_condition(inputs: StatusInputs, tuning: TunePlan, performance: dict[str, Any] | None) -> dict[str, Any]:
    job = inputs.tune_job_name
    if tuning.tuning_failed:
        result = inputs.tune
        detail = result.message if result is not None and not result.succeeded and result.message else "see its logs"
        serving = "serving the untuned configuration" if tuning.deploy_tuning_hash is None else "serving the last tuned"
        return _condition(TUNED, FALSE, "TuningFailed", f"Job {job} failed ({serving}): {detail}")
    if tuning.tuning:
        return _condition(TUNED, FALSE, "Tuning", f"Job {job} is profiling the converted model on the serving hardware")
    if tuning.tuned:
        return _condition(TUNED, TRUE, "Tuned", _performance_summary(performance))
    return _condition(TUNED, FALSE, "WaitingForConversion", "the profiling Job runs once the model is converted")


def failed_tune_detail(job: str, previous: dict[str, Any]) -> str | None:
    """The error a failed profiling Job ``job`` reported, as the previous status's Tuned condition holds it."""
    tuned: dict[str, Any] = next((c for c in previous.get("conditions") or [] if c.get("type") == TUNED), {})
    message, prefix = str(tuned.get("message") or ""), f"Job {job} failed ("
    if tuned.get("reason") != "TuningFailed" or not message.startswith(prefix) or "): " not in message:
        return None
    return message.split("): ", 1)[1]


@dataclass(frozen=True)
class _Verdict:
    phase: str
    ready: tuple[str, str, str]  # status, reason, message
    reconciling: tuple[str, str, str]
    stalled: tuple[str, str, str]


def _verdict(inputs: StatusInputs, plan: Plan, converted: dict[str, Any], dep: DeploymentView | None) -> _Verdict:
    """Phase and the Ready/Reconciling/Stalled conditions, first matching situation wins."""
    ok = (FALSE, "NotStalled", "")
    if inputs.apply_error:
        stuck = (TRUE, inputs.apply_reason, inputs.apply_error)
        return _Verdict("Failed", (FALSE, inputs.apply_reason, inputs.apply_error), (FALSE, "Stalled", ""), stuck)
    if plan.conversion_failed:
        message = converted["message"]
        serving = dep is not None and dep.ready_replicas > 0
        return _Verdict(
            "Degraded" if serving else "Failed",
            (FALSE, "ConversionFailed", message),
            (FALSE, "Stalled", ""),
            (TRUE, "ConversionFailed", message),
        )
    if plan.converting:
        message = converted["message"]
        return _Verdict("Converting", (FALSE, "Converting", message), (TRUE, "Converting", message), ok)
    if inputs.tuning is not None and inputs.tuning.tuning:  # the profiling Job prepares the repository: Converting
        message = f"Job {inputs.tune_job_name} is tuning the served configuration"
        return _Verdict("Converting", (FALSE, "Tuning", message), (TRUE, "Tuning", message), ok)
    if dep is None or plan.deploy_hash is None:
        message = "creating the Triton Deployment"
        return _Verdict("Deploying", (FALSE, "Deploying", message), (TRUE, "Deploying", message), ok)
    if dep.progress_deadline_exceeded:
        message = "the Deployment exceeded its progress deadline"
        return _Verdict(
            "Degraded" if dep.ready_replicas > 0 else "Failed",
            (FALSE, "ProgressDeadlineExceeded", message),
            (FALSE, "Stalled", ""),
            (TRUE, "ProgressDeadlineExceeded", message),
        )
    if not dep.rolled_out:
        message = f"rolling out: {dep.updated_replicas}/{dep.spec_replicas} replicas updated"
        return _Verdict("Deploying", (FALSE, "RollingOut", message), (TRUE, "RollingOut", message), ok)
    ready_message = f"{dep.ready_replicas}/{dep.spec_replicas} replicas ready"
    if dep.available:
        return _Verdict("Ready", (TRUE, "Available", ready_message), (FALSE, "Reconciled", ""), ok)
    if dep.ready_replicas > 0:
        return _Verdict("Degraded", (FALSE, "ReplicasUnavailable", ready_message), (FALSE, "Reconciled", ""), ok)
    return _Verdict(
        "Deploying", (FALSE, "WaitingForReplicas", ready_message), (TRUE, "WaitingForReplicas", ready_message), ok
    )


def _phase_and_conditions(inputs: StatusInputs) -> tuple[str, list[dict[str, Any]]]:
    dep = DeploymentView.of(inputs.deployment) if inputs.deployment is not None else None
    available = _available_condition(dep)
    if inputs.problems:
        message = "; ".join(inputs.problems)
        return "Failed", [
            _condition("Ready", FALSE, "InvalidSpec", message),
            _condition("Converted", UNKNOWN, "InvalidSpec", message),
            available,
            _condition("Reconciling", FALSE, "InvalidSpec"),
            _condition("Stalled", TRUE, "InvalidSpec", message),
        ]
    assert inputs.plan is not None, "a valid spec comes with a plan"
    converted = _converted_condition(inputs, inputs.plan)
    verdict = _verdict(inputs, inputs.plan, converted, dep)
    conditions = [
        _condition("Ready", *verdict.ready),
        converted,
        available,
        _condition("Reconciling", *verdict.reconciling),
        _condition("Stalled", *verdict.stalled),
    ]
    if inputs.tuning is not None and inputs.tuning.wanted:
        conditions.append(_tuned_condition(inputs, inputs.tuning, _performance(inputs)[0]))
    overlay = inputs.rollout
    if overlay is None or not overlay.conditions or verdict.phase not in ("Ready", "Degraded", "Deploying"):
        return verdict.phase, conditions
    return _with_rollout(conditions, overlay)


def _with_rollout(conditions: list[dict[str, Any]], overlay: RolloutOverlay) -> tuple[str, list[dict[str, Any]]]:
    """The rollout's conditions over ours; Ready False while a canary runs (phase Deploying) or after it was
    aborted (phase Degraded: the stable revision serves, the spec's does not)."""
    by_type = {c["type"]: c for c in overlay.conditions}
    merged = [
        _condition(c["type"], by_type[c["type"]]["status"], by_type[c["type"]].get("reason", ""),
                   by_type[c["type"]].get("message", ""))
        if c["type"] in by_type else c
        for c in conditions
    ]  # fmt: skip
    stalled = by_type.get("Stalled", {})
    cause = stalled if stalled.get("status") == TRUE else by_type.get("Reconciling", {})
    reason, message = str(cause.get("reason") or "Rollout"), str(cause.get("message") or "")
    merged[0] = _condition("Ready", FALSE, reason, message)
    return ("Degraded" if stalled.get("status") == TRUE else "Deploying"), merged


def _stamp(conditions: list[dict[str, Any]], previous: list[dict[str, Any]], now: str, generation: int) -> None:
    """Set observedGeneration, and lastTransitionTime: kept from ``previous`` while the status is unchanged."""
    before = {c.get("type"): c for c in previous}
    for condition in conditions:
        old = before.get(condition["type"])
        if old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime"):
            condition["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            condition["lastTransitionTime"] = now
        condition["observedGeneration"] = generation


def compute_status(inputs: StatusInputs) -> dict[str, Any]:
    """The complete new ``status`` of a ModelService (camelCase), from what was observed."""
    phase, conditions = _phase_and_conditions(inputs)
    _stamp(conditions, list(inputs.previous.get("conditions") or []), inputs.now, inputs.generation)
    status: dict[str, Any] = {"phase": phase, "observedGeneration": inputs.generation, "conditions": conditions}
    dep = DeploymentView.of(inputs.deployment) if inputs.deployment is not None else None
    status["replicas"] = dep.replicas if dep else 0
    status["readyReplicas"] = dep.ready_replicas if dep else 0
    if inputs.selector:
        status["selector"] = inputs.selector
    if inputs.endpoints:
        status["endpoints"] = dict(inputs.endpoints)
    if inputs.rollout is not None:
        if inputs.rollout.rollout is not None:
            status["rollout"] = dict(inputs.rollout.rollout)
        if inputs.rollout.revisions:
            status["revisions"] = [dict(r) for r in inputs.rollout.revisions]
    result = inputs.conversion
    if result is not None and result.succeeded:
        if result.artifact:
            status["artifact"] = dict(result.artifact)
        if result.verification:
            status["verification"] = dict(result.verification)
        status["conversionJob"] = result.job
    else:
        # Keep what the served model was converted with until a new conversion succeeds.
        for key in ("artifact", "verification", "conversionJob"):
            if key in inputs.previous:
                status[key] = inputs.previous[key]
    performance, tune_job = _performance(inputs)
    if performance is not None:
        status["performance"] = dict(performance)
    if tune_job is not None:
        status["tuneJob"] = tune_job
    return status


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning ``old`` status into ``new`` (None when they are equal)."""
    if old == new:
        return None
    return _with_removals(old, new)


def _with_removals(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``, plus null for every key of ``old`` it lacks, at every depth of objects (a merge patch keeps keys
    it does not null: ``status.rollout.canaryRevision`` must go when a canary ends). Lists are replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        patch[key] = _with_removals(before, value) if isinstance(value, dict) and isinstance(before, dict) else value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def phase_event(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a phase transition, or None when the phase is unchanged."""
    if old.get("phase") == new.get("phase"):
        return None
    phase = str(new.get("phase"))
    ready: dict[str, Any] = next((c for c in new.get("conditions") or [] if c.get("type") == "Ready"), {})
    message = str(ready.get("message") or f"phase {phase}")
    kind = "Warning" if phase in ("Failed", "Degraded") else "Normal"
    return kind, phase, message
