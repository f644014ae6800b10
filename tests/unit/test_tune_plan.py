"""The tuning rules (issue 11), table-driven: conversion first, then the profiling Job of the current tuning hash;
the Deployment moves to a new conversion only once it is tuned; a changed latency target re-tunes while serving;
a failed tuning never blocks serving; without tuning, ``plan``'s decision as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from _render_samples import modified, sample

from modelservice.api.models import ModelService
from modelservice.render import HASH_ANNOTATION, JobState, Observed, Plan, build_deployment, conversion_hash, plan
from modelservice.render.names import TUNING_HASH_ANNOTATION
from modelservice.render.tunejob import with_tuning_annotation
from modelservice.render.tuneplan import TunePlan, plan_tuning, served_tuning_hash, tuning_hash

TARGET = {"p99Milliseconds": 50}
MS = modified(sample("cpu"), "serving.latencyTarget", TARGET)  # the spec now
OLD_CONVERSION = modified(modified(MS, "conversion.precision", "fp16"), "serving.latencyTarget", {"p99Milliseconds": 9})
OLD_TARGET = modified(MS, "serving.latencyTarget", {"p99Milliseconds": 80})  # same conversion, other target

H, T = conversion_hash(MS), tuning_hash(MS)
H0, T0 = conversion_hash(OLD_CONVERSION), tuning_hash(OLD_CONVERSION)
T1 = tuning_hash(OLD_TARGET)
SYMBOLS = {"H": H, "H0": H0, "T": T, "T0": T0, "T1": T1, None: None}


def test_the_fixtures_differ_as_named() -> None:
    assert len({H, H0}) == 2 and len({T, T0, T1}) == 3
    assert conversion_hash(OLD_TARGET) == H  # a latency target is not part of the conversion hash


def deployment(ms: ModelService, hash_: str, tuning: str | None) -> dict[str, Any]:
    """The Deployment as the API returns it: what children() rendered, with the tuning annotation."""
    return with_tuning_annotation(build_deployment(ms, hash_), tuning)


@dataclass(frozen=True)
class Case:
    served: tuple[str | None, str | None]  # (conversion hash, tuning hash) of the existing Deployment, by symbol
    conversion_job: JobState | None  # the conversion Job of H
    tune_job: JobState | None  # the profiling Job of T
    conversion_wanted: bool
    tune_wanted: bool
    deploy: tuple[str | None, str | None]  # (conversion hash, tuning annotation) rendered, by symbol
    state: str  # "tuning" | "failed" | "tuned" | "-" (none of those)


CASES: dict[str, Case] = {
    # a new ModelService: conversion, then tuning, then the first Deployment
    "fresh/converting": Case((None, None), None, None, True, False, (None, None), "-"),
    "fresh/conversion-running": Case((None, None), "running", None, True, False, (None, None), "-"),
    "fresh/conversion-failed": Case((None, None), "failed", None, True, False, (None, None), "-"),
    "fresh/converted": Case((None, None), "succeeded", None, True, True, (None, None), "tuning"),
    "fresh/tuning": Case((None, None), "succeeded", "running", True, True, (None, None), "tuning"),
    "fresh/tuned": Case((None, None), "succeeded", "succeeded", True, True, ("H", "T"), "tuned"),
    "fresh/tuning-failed": Case((None, None), "succeeded", "failed", True, True, ("H", None), "failed"),
    # a new conversion while an older one serves
    "new/converting": Case(("H0", "T0"), None, None, True, False, ("H0", "T0"), "-"),
    "new/converting-ignores-tune-job": Case(("H0", "T0"), "running", "succeeded", True, False, ("H0", "T0"), "-"),
    "new/conversion-failed": Case(("H0", "T0"), "failed", None, True, False, ("H0", "T0"), "-"),
    "new/converted": Case(("H0", "T0"), "succeeded", None, True, True, ("H0", "T0"), "tuning"),
    "new/tuning": Case(("H0", "T0"), "succeeded", "running", True, True, ("H0", "T0"), "tuning"),
    "new/tuned": Case(("H0", "T0"), "succeeded", "succeeded", True, True, ("H", "T"), "tuned"),
    "new/tuning-failed": Case(("H0", "T0"), "succeeded", "failed", True, True, ("H", None), "failed"),
    "new/old-untuned": Case(("H0", None), "succeeded", "running", True, True, ("H0", None), "tuning"),
    # up to date: nothing runs, even once the Jobs are gone (TTL)
    "current": Case(("H", "T"), None, None, False, False, ("H", "T"), "tuned"),
    "current/jobs-still-there": Case(("H", "T"), "succeeded", "succeeded", False, False, ("H", "T"), "tuned"),
    # a changed latency target: re-tune while serving, roll when tuned, keep the config when it fails
    "retarget/pending": Case(("H", "T1"), None, None, False, True, ("H", "T1"), "tuning"),
    "retarget/tuning": Case(("H", "T1"), None, "running", False, True, ("H", "T1"), "tuning"),
    "retarget/tuned": Case(("H", "T1"), None, "succeeded", False, True, ("H", "T"), "tuned"),
    "retarget/failed": Case(("H", "T1"), None, "failed", False, True, ("H", "T1"), "failed"),
    # served untuned (tuning just turned on, or it failed before)
    "untuned/pending": Case(("H", None), None, None, False, True, ("H", None), "tuning"),
    "untuned/tuned": Case(("H", None), None, "succeeded", False, True, ("H", "T"), "tuned"),
    "untuned/failed-stays": Case(("H", None), None, "failed", False, True, ("H", None), "failed"),
    # a stale annotation (the operator's merge patch never removes one): a tuning hash covers its conversion hash,
    # so the old conversion's T0 on H never passes for tuned
    "stale/pending": Case(("H", "T0"), None, None, False, True, ("H", "T0"), "tuning"),
    "stale/tuned": Case(("H", "T0"), None, "succeeded", False, True, ("H", "T"), "tuned"),
    "stale/failed": Case(("H", "T0"), None, "failed", False, True, ("H", "T0"), "failed"),
}


def observed(case: Case) -> Observed:
    hash_, tuning = (SYMBOLS[s] for s in case.served)
    existing = None if hash_ is None else deployment(MS, hash_, tuning)
    return Observed(deployment=existing, conversion_job=case.conversion_job)


def decide(ms: ModelService, seen: Observed, tune_job: JobState | None) -> tuple[Plan, TunePlan]:
    conversion = plan(ms, seen)
    return conversion, plan_tuning(ms, conversion, tune_job, served_tuning_hash(seen.deployment))


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_rules(case: Case) -> None:
    conversion, tuning = decide(MS, observed(case), case.tune_job)
    assert conversion.job_wanted is case.conversion_wanted
    assert tuning.wanted and tuning.desired_tuning_hash == T
    assert tuning.job_wanted is case.tune_wanted
    assert (tuning.deploy_hash, tuning.deploy_tuning_hash) == tuple(SYMBOLS[s] for s in case.deploy)
    assert tuning.tuning is (case.state == "tuning")
    assert tuning.tuning_failed is (case.state == "failed")
    assert tuning.tuned is (case.state == "tuned")
    assert tuning.tune_state == (case.tune_job if case.tune_wanted else None)


DEPLOYED = {name: case for name, case in CASES.items() if case.deploy[0] is not None}


@pytest.mark.parametrize("case", DEPLOYED.values(), ids=list(DEPLOYED))
def test_settles(case: Case) -> None:
    """Applying a decision and reconciling again with the same Jobs decides the same: no flapping,
    and a failed tuning stays reported."""
    _, first = decide(MS, observed(case), case.tune_job)
    assert first.deploy_hash is not None
    rolled = Observed(
        deployment=deployment(MS, first.deploy_hash, first.deploy_tuning_hash),
        conversion_job=case.conversion_job,
    )
    _, second = decide(MS, rolled, case.tune_job)
    assert (second.deploy_hash, second.deploy_tuning_hash) == (first.deploy_hash, first.deploy_tuning_hash)
    assert second.tuning_failed is first.tuning_failed  # a failed Job stays wanted: still reported


def test_a_rollback_serves_at_once_and_retunes() -> None:
    """``plan`` serves a hash kept on the claim without a conversion Job (spec.rollout): tuning does not hold it."""
    rollback = Plan(desired_hash=H, served_hash=H0, deploy_hash=H, job_wanted=False, conversion_state=None)
    tuning = plan_tuning(MS, rollback, None, T0)
    assert (tuning.deploy_hash, tuning.deploy_tuning_hash) == (H, None)
    assert tuning.job_wanted and tuning.tuning
    done = plan_tuning(MS, rollback, "succeeded", T0)
    assert (done.deploy_hash, done.deploy_tuning_hash) == (H, T)


# ------------------------------------------------------------------------------------------ tuning not wanted

UNTUNED_SPECS = {
    "no-target": sample("cpu"),
    "disabled": modified(MS, "serving.tuning", {"enabled": False}),
    "repository": modified(sample("repo-s3"), "serving.latencyTarget", TARGET),
}


@pytest.mark.parametrize("name", list(UNTUNED_SPECS))
@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize("tune_job", [None, "running", "succeeded", "failed"])
def test_without_tuning_the_plan_is_todays(name: str, case: Case, tune_job: JobState | None) -> None:
    ms = UNTUNED_SPECS[name]
    hash_, tuning_ = (SYMBOLS[s] for s in case.served)
    existing = None if hash_ is None else deployment(ms, hash_, tuning_)
    conversion, tuning = decide(ms, Observed(deployment=existing, conversion_job=case.conversion_job), tune_job)
    assert not tuning.wanted and not tuning.job_wanted and tuning.tune_state is None
    assert tuning.deploy_hash == conversion.deploy_hash and tuning.deploy_tuning_hash is None
    assert not (tuning.tuning or tuning.tuning_failed or tuning.tuned)


def test_turning_tuning_off_drops_the_annotation() -> None:
    ms = modified(MS, "serving.latencyTarget", None)
    seen = Observed(deployment=deployment(ms, H, T))
    conversion, tuning = decide(ms, seen, None)
    assert not conversion.job_wanted and (tuning.deploy_hash, tuning.deploy_tuning_hash) == (H, None)
    assert tuning.served_tuning_hash == T


def test_served_hashes_read_from_the_deployment() -> None:
    existing = deployment(MS, H, T)
    assert existing["metadata"]["annotations"][HASH_ANNOTATION] == H
    assert existing["spec"]["template"]["metadata"]["annotations"][TUNING_HASH_ANNOTATION] == T
    assert Observed(deployment=existing).served_hash == H and served_tuning_hash(existing) == T
