"""The profiling Job wired into the operator (issue 11), pure parts: what ``children`` renders with tuning, the
rollout's readiness, the ``Tuned`` condition, ``status.performance`` kept or dropped, and the Events."""

from __future__ import annotations

from typing import Any

import yaml
from _render_samples import modified, sample

from modelservice.api.models import ModelService
from modelservice.controller import delivery
from modelservice.controller.status import StatusInputs, TuneResult, compute_status, failed_tune_detail
from modelservice.controller.tuning import served_tunings, tune_plan, tuning_event
from modelservice.render import HASH_ANNOTATION, Observed, children, conversion_hash, plan, render_stream
from modelservice.render.names import COMPONENT_TUNER, LABEL_COMPONENT, TUNING_HASH_ANNOTATION, tune_job_name
from modelservice.render.plan import DEFAULT_CONFIG
from modelservice.render.tunejob import with_tuning_annotation
from modelservice.render.tuneplan import tuning_hash

MS = modified(sample("cpu"), "serving.latencyTarget", {"p99Milliseconds": 50})
OLD = modified(MS, "conversion.precision", "fp16")  # another conversion hash
UNTUNED = sample("cpu")
H, H0, T, T0 = conversion_hash(MS), conversion_hash(OLD), tuning_hash(MS), tuning_hash(OLD)
PERFORMANCE = {
    "config": {"maxBatchSize": 8, "maxQueueDelayMicroseconds": 100, "instances": 1},
    "throughputPerReplica": 410.0,
    "latencyMs": {"p50": 12.0, "p95": 30.0, "p99": 41.0},
}


def live(ms: ModelService, hash_: str, tuning: str | None) -> dict[str, Any]:
    from modelservice.render import build_deployment

    return with_tuning_annotation(build_deployment(ms, hash_), tuning)


def kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def deployment_of(objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((o for o in objects if o["kind"] == "Deployment"), None)


def annotation(obj: dict[str, Any] | None) -> str | None:
    assert obj is not None
    value = (obj["metadata"].get("annotations") or {}).get(TUNING_HASH_ANNOTATION)
    assert value == (obj["spec"]["template"]["metadata"].get("annotations") or {}).get(TUNING_HASH_ANNOTATION)
    return value if isinstance(value, str) else None


class TestChildren:
    def test_after_conversion_the_profiling_job_and_no_deployment(self) -> None:
        out = children(MS, Observed(conversion_job="succeeded"))
        name = tune_job_name(MS, T)
        assert ("ConfigMap", name) in kinds(out) and ("Job", name) in kinds(out)
        assert deployment_of(out) is None
        assert not any(o["kind"] in ("PodDisruptionBudget", "HorizontalPodAutoscaler") for o in out)

    def test_tuned_deployment_carries_the_tuning_hash(self) -> None:
        out = children(MS, Observed(conversion_job="succeeded", tune_job="succeeded"))
        assert annotation(deployment_of(out)) == T
        assert any(o["kind"] == "PodDisruptionBudget" for o in out)

    def test_up_to_date_renders_no_job(self) -> None:
        out = children(MS, Observed(deployment=live(MS, H, T)))
        assert not any(o["metadata"]["labels"].get(LABEL_COMPONENT) == COMPONENT_TUNER for o in out)
        assert annotation(deployment_of(out)) == T

    def test_a_new_conversion_served_untuned_clears_the_old_tuning_hash(self) -> None:
        # the profiling Job failed: Triton moves to H untuned; the live one still says T0 (of H0)
        out = children(MS, Observed(deployment=live(OLD, H0, T0), conversion_job="succeeded", tune_job="failed"))
        deployment = deployment_of(out)
        assert deployment is not None and deployment["metadata"]["annotations"][HASH_ANNOTATION] == H
        assert annotation(deployment) == ""

    def test_retuning_keeps_what_serves(self) -> None:
        out = children(MS, Observed(deployment=live(OLD, H, T0), tune_job="running"))
        assert annotation(deployment_of(out)) == T0

    def test_without_tuning_nothing_changes(self) -> None:
        observed = Observed(deployment=live(UNTUNED, conversion_hash(UNTUNED), None))
        out = children(UNTUNED, observed)
        assert (deployment_of(out) or {}).get("metadata", {}).get("annotations", {}).get(TUNING_HASH_ANNOTATION) is None
        assert not any(o["metadata"]["labels"].get(LABEL_COMPONENT) == COMPONENT_TUNER for o in out)

    def test_render_stream_assumes_tuning_succeeded(self) -> None:
        documents = list(yaml.safe_load_all(render_stream([MS], namespace="ml")))
        assert ("Job", tune_job_name(MS, T)) in kinds(documents)
        assert annotation(deployment_of(documents)) == T


class TestRollout:
    def test_a_revision_is_ready_only_once_tuned(self) -> None:
        ms = modified(MS, "rollout", {"strategy": "immediate"})
        found = delivery.Deployments(None, {})
        state = delivery.state_of(ms)
        for tune_job, ready in (("running", False), (None, False), ("succeeded", True), ("failed", True)):
            observed = Observed(conversion_job="succeeded", tune_job=tune_job)
            tuning = tune_plan(ms, observed, DEFAULT_CONFIG)
            machine = delivery.machine_observed(ms, plan(ms, observed), None, state, found, tuning)
            assert machine.ready is ready, tune_job
            # without the tuning plan, as before: converted is ready
            assert delivery.machine_observed(ms, plan(ms, observed), None, state, found).ready

    def test_a_canary_is_rendered_once_its_repository_is_ready(self) -> None:
        """At weight 0 a canary still converting or being tuned has no Deployment yet (its Triton would find no
        model, or a config being replaced); the stable revision's is untouched."""
        from modelservice.render import Traffic, TrafficSplit

        for ms, tuned_state in ((UNTUNED, None), (MS, "running"), (MS, "succeeded")):
            ms = modified(ms, "rollout", {"strategy": "canary", "steps": [{"weight": 10, "pause": "1m"}]})
            old, new = "0123456789", conversion_hash(ms)
            stable = live(ms, old, None)
            stable["metadata"]["name"] = f"{ms.name}-{old}"
            traffic = Traffic(TrafficSplit(stable=old, canary=new, weight=0), per_revision=True)
            names = {f"{ms.name}-{old}", f"{ms.name}-{new}"}
            for conversion, expected in (("running", {f"{ms.name}-{old}"}), ("succeeded", names)):
                observed = Observed(deployment=stable, conversion_job=conversion, tune_job=tuned_state)
                rendered = {
                    o["metadata"]["name"] for o in children(ms, observed, traffic=traffic) if o["kind"] == "Deployment"
                }
                if tuned_state == "running":
                    expected = {f"{ms.name}-{old}"}
                assert rendered == expected, (tuned_state, conversion)


def status_of(observed: Observed, **kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "generation": 2,
        "now": "2026-01-01T00:00:00Z",
        "plan": plan(MS, observed),
        "job_name": "d-convert",
        "deployment": observed.deployment,
        "tuning": tune_plan(MS, observed, DEFAULT_CONFIG),
        "tune_job_name": tune_job_name(MS, T),
    }
    values.update(kw)
    return compute_status(StatusInputs(**values))


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status["conditions"] if c["type"] == type_), {})


class TestStatus:
    def test_tuning_is_converting(self) -> None:
        status = status_of(Observed(conversion_job="succeeded", tune_job="running"))
        assert status["phase"] == "Converting"
        assert condition(status, "Reconciling")["reason"] == "Tuning" and condition(status, "Reconciling")["status"]
        assert (condition(status, "Tuned")["status"], condition(status, "Tuned")["reason"]) == ("False", "Tuning")

    def test_tuned_with_performance(self) -> None:
        observed = Observed(deployment=live(MS, H, T))
        result = TuneResult(tune_job_name(MS, T), True, "", PERFORMANCE)
        status = status_of(observed, tune=result, served_tunings=frozenset({T}))
        assert status["performance"] == PERFORMANCE and status["tuneJob"] == tune_job_name(MS, T)
        assert condition(status, "Tuned")["status"] == "True"
        assert "410 inferences/s per replica, p99 41 ms" in condition(status, "Tuned")["message"]
        # later reconciles: the Job gone (TTL), the status keeps it while the Deployment serves that tuning
        again = status_of(observed, previous=status, served_tunings=frozenset({T}))
        assert again == status

    def test_performance_goes_when_its_tuning_no_longer_serves(self) -> None:
        previous = {"performance": PERFORMANCE, "tuneJob": tune_job_name(MS, T0)}
        status = status_of(Observed(deployment=live(MS, H, "")), previous=previous, served_tunings=frozenset())
        assert "performance" not in status and "tuneJob" not in status
        kept = status_of(Observed(deployment=live(MS, H, T0)), previous=previous, served_tunings=frozenset({T0}))
        assert kept["performance"] == PERFORMANCE

    def test_failed_tuning_serves_and_says_why(self) -> None:
        observed = Observed(deployment=live(MS, H, None), tune_job="failed")
        result = TuneResult(tune_job_name(MS, T), False, "Triton did not load the model")
        status = status_of(observed, tune=result)
        tuned = condition(status, "Tuned")
        assert (tuned["status"], tuned["reason"]) == ("False", "TuningFailed")
        assert "untuned" in tuned["message"] and tuned["message"].endswith("Triton did not load the model")
        assert condition(status, "Stalled")["status"] == "False" and status["phase"] != "Converting"
        assert failed_tune_detail(tune_job_name(MS, T), status) == "Triton did not load the model"
        event = tuning_event({}, status)
        assert event is not None and event[:2] == ("Warning", "TuningFailed")
        assert tuning_event(status, status) is None  # on transitions only

    def test_no_tuned_condition_without_tuning(self) -> None:
        observed = Observed(deployment=live(UNTUNED, conversion_hash(UNTUNED), None))
        status = compute_status(
            StatusInputs(generation=1, now="2026-01-01T00:00:00Z", plan=plan(UNTUNED, observed), deployment=None)
        )
        assert [c["type"] for c in status["conditions"]] == [
            "Ready",
            "Converted",
            "Available",
            "Reconciling",
            "Stalled",
        ]


def test_served_tunings_reads_the_annotations() -> None:
    assert served_tunings([live(MS, H, T), live(MS, H0, ""), live(MS, H0, None)]) == {T}
