"""The pure status function, the owned-fields patch, the termination-message parser."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice.controller.apply import child_patch, owned_patch
from modelservice.controller.observe import _termination_message, parse_summary
from modelservice.controller.status import (
    ConversionResult,
    StatusInputs,
    compute_status,
    phase_event,
    status_patch,
)
from modelservice.render.plan import Plan

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
ARTIFACT = {"uri": "pvc://m/abc", "format": "onnx", "precision": "int8", "sha256": "a" * 64, "sizeBytes": 10}
VERIFIED = {"maxAbsError": 0.01, "accuracy": 0.97, "referenceAccuracy": 0.98, "passed": True}


def plan(**kw: Any) -> Plan:
    values: dict[str, Any] = {
        "desired_hash": "h2",
        "served_hash": "h2",
        "deploy_hash": "h2",
        "job_wanted": False,
        "conversion_state": None,
    }
    values.update(kw)
    return Plan(**values)


def deployment(
    replicas: int = 2, ready: int = 2, generation: int = 1, observed: int = 1, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            **status,
        },
    }


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def inputs(**kw: Any) -> StatusInputs:
    values: dict[str, Any] = {"generation": 3, "now": T0, "plan": plan(), "job_name": "d-convert-h2"}
    values.update(kw)
    return StatusInputs(**values)


class TestPhases:
    def test_converting_first_time(self) -> None:
        status = compute_status(
            inputs(plan=plan(served_hash=None, deploy_hash=None, job_wanted=True, conversion_state="running"))
        )
        assert status["phase"] == "Converting"
        assert conditions(status) == {
            "Ready": ("False", "Converting"),
            "Converted": ("False", "Converting"),
            "Available": ("False", "NoDeployment"),
            "Reconciling": ("True", "Converting"),
            "Stalled": ("False", "NotStalled"),
        }
        assert status["observedGeneration"] == 3
        assert all(c["observedGeneration"] == 3 for c in status["conditions"])
        assert status["replicas"] == 0 and status["readyReplicas"] == 0

    def test_conversion_succeeded_deploying_copies_the_report(self) -> None:
        result = ConversionResult("d-convert-h2", True, "", ARTIFACT, VERIFIED)
        status = compute_status(inputs(conversion=result, deployment=deployment(ready=0, observed=0)))
        assert status["phase"] == "Deploying"
        assert status["artifact"] == ARTIFACT and status["verification"] == VERIFIED
        assert status["conversionJob"] == "d-convert-h2"
        assert conditions(status)["Converted"] == ("True", "Verified")
        assert conditions(status)["Reconciling"] == ("True", "RollingOut")

    def test_ready(self) -> None:
        status = compute_status(inputs(deployment=deployment(), selector="a=b", endpoints={"http": "http://x:8000"}))
        assert status["phase"] == "Ready"
        assert conditions(status)["Ready"] == ("True", "Available")
        assert conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")
        assert conditions(status)["Reconciling"][0] == "False"
        assert status["selector"] == "a=b" and status["endpoints"] == {"http": "http://x:8000"}
        assert status["replicas"] == 2 and status["readyReplicas"] == 2

    def test_degraded_when_some_replicas_are_not_ready(self) -> None:
        status = compute_status(inputs(deployment=deployment(replicas=3, ready=1)))
        assert status["phase"] == "Degraded"
        assert conditions(status)["Ready"] == ("False", "ReplicasUnavailable")
        assert conditions(status)["Available"][0] == "True"

    def test_waiting_for_first_ready_replica(self) -> None:
        assert compute_status(inputs(deployment=deployment(ready=0)))["phase"] == "Deploying"

    def test_rollout_of_new_generation_is_deploying(self) -> None:
        status = compute_status(inputs(deployment=deployment(generation=2, observed=1)))
        assert status["phase"] == "Deploying"
        assert conditions(status)["Reconciling"] == ("True", "RollingOut")

    def test_scaled_to_zero_is_ready(self) -> None:
        status = compute_status(inputs(deployment=deployment(replicas=0, ready=0)))
        assert status["phase"] == "Ready"
        assert conditions(status)["Available"] == ("True", "ScaledToZero")

    def test_progress_deadline_exceeded_is_stalled(self) -> None:
        stuck = deployment(
            ready=0,
            generation=2,
            observed=2,
            conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
        )
        status = compute_status(inputs(deployment=stuck))
        assert status["phase"] == "Failed"
        assert conditions(status)["Stalled"] == ("True", "ProgressDeadlineExceeded")

    def test_new_conversion_while_old_model_serves(self) -> None:
        p = plan(served_hash="h1", deploy_hash="h1", job_wanted=True, conversion_state="running")
        previous = {"artifact": ARTIFACT, "verification": VERIFIED, "conversionJob": "d-convert-h1"}
        status = compute_status(inputs(plan=p, deployment=deployment(), previous=previous))
        assert status["phase"] == "Converting"
        assert conditions(status)["Available"][0] == "True"
        assert status["artifact"] == ARTIFACT  # what is served, until the new conversion succeeds
        assert status["conversionJob"] == "d-convert-h1"

    def test_failed_conversion_without_deployment_is_failed_and_stalled(self) -> None:
        p = plan(served_hash=None, deploy_hash=None, job_wanted=True, conversion_state="failed")
        result = ConversionResult("d-convert-h2", False, "accuracy dropped by 0.2")
        status = compute_status(inputs(plan=p, conversion=result))
        assert status["phase"] == "Failed"
        assert conditions(status)["Converted"] == ("False", "ConversionFailed")
        assert conditions(status)["Stalled"] == ("True", "ConversionFailed")
        converted = next(c for c in status["conditions"] if c["type"] == "Converted")
        assert "accuracy dropped by 0.2" in converted["message"] and "d-convert-h2" in converted["message"]

    def test_failed_conversion_with_old_model_serving_is_degraded(self) -> None:
        p = plan(served_hash="h1", deploy_hash="h1", job_wanted=True, conversion_state="failed")
        assert compute_status(inputs(plan=p, deployment=deployment()))["phase"] == "Degraded"

    def test_invalid_spec_names_the_field(self) -> None:
        status = compute_status(inputs(plan=None, problems=("spec.model.uri: file:// sources are for the local CLI",)))
        assert status["phase"] == "Failed"
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
        assert stalled["message"].startswith("spec.model.uri:")
        assert conditions(status)["Ready"] == ("False", "InvalidSpec")

    def test_child_conflict_is_stalled(self) -> None:
        status = compute_status(inputs(apply_error="Service d exists and is not owned by this ModelService"))
        assert status["phase"] == "Failed"
        assert conditions(status)["Stalled"] == ("True", "ChildConflict")


class TestTransitions:
    def test_unchanged_situation_gives_identical_status(self) -> None:
        first = compute_status(inputs(deployment=deployment(), now=T0))
        second = compute_status(inputs(deployment=deployment(), now=T1, previous=first))
        assert second == first
        assert status_patch(first, second) is None
        assert phase_event(first, second) is None

    def test_last_transition_time_moves_only_for_changed_conditions(self) -> None:
        first = compute_status(inputs(deployment=deployment(ready=0), now=T0))
        second = compute_status(inputs(deployment=deployment(), now=T1, previous=first))
        times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
        assert times["Ready"] == T1 and times["Available"] == T1 and times["Reconciling"] == T1
        assert times["Converted"] == T0 and times["Stalled"] == T0

    def test_status_patch_removes_vanished_fields(self) -> None:
        old = {"phase": "Ready", "artifact": ARTIFACT}
        assert status_patch(old, {"phase": "Failed"}) == {"phase": "Failed", "artifact": None}

    def test_phase_event(self) -> None:
        ready = compute_status(inputs(deployment=deployment()))
        degraded = compute_status(inputs(deployment=deployment(replicas=3, ready=1), previous=ready))
        assert phase_event(ready, degraded) == ("Warning", "Degraded", "1/3 replicas ready")
        assert phase_event({}, ready) == ("Normal", "Ready", "2/2 replicas ready")


class TestOwnedFields:
    def test_fields_set_by_others_are_not_patched(self) -> None:
        desired = {"spec": {"ports": [{"name": "http", "port": 8000}], "type": "ClusterIP"}}
        live = {
            "spec": {
                "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
                "type": "ClusterIP",
                "clusterIP": "10.0.0.1",
            }
        }
        assert owned_patch(desired, live) == {}

    def test_changed_fields_are_patched_lists_whole(self) -> None:
        desired = {"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "t", "image": "b"}]}}}}
        live = {"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "t", "image": "a", "x": 1}]}}}}
        assert owned_patch(desired, live) == {
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "t", "image": "b"}]}}}
        }

    def test_quantities_compare_by_value_as_the_server_normalises_them(self) -> None:
        container = {"name": "t", "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {}}}
        volume = {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1024Mi"}}
        desired = {"spec": {"containers": [container], "volumes": [volume]}}
        normalised = {
            "spec": {
                "containers": [
                    {"name": "t", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {}}}
                ],
                "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
            }
        }
        assert owned_patch(desired, normalised) == {}
        changed = {"spec": {"containers": [{**container, "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}
        assert owned_patch({"spec": {"containers": [container]}}, changed) != {}
        # Outside quantity fields, equal numbers written differently are still a difference.
        assert owned_patch({"metadata": {"labels": {"v": "0.5"}}}, {"metadata": {"labels": {"v": "500m"}}}) != {}

    def test_immutable_kinds_get_only_metadata(self) -> None:
        desired = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j", "namespace": "n", "labels": {"a": "2"}},
            "spec": {"template": {"spec": {"containers": [{"image": "new"}]}}},
        }
        live = {
            "metadata": {"name": "j", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [{"image": "old"}]}}},
        }
        assert child_patch(desired, live) == {"metadata": {"labels": {"a": "2"}}}


class TestTerminationMessage:
    def test_summary_is_parsed_and_filtered(self) -> None:
        artifact, verification = parse_summary(
            '{"artifact": {"uri": "u", "format": "onnx", "extra": 1}, "verification": {"passed": true}}'
        )
        assert artifact == {"uri": "u", "format": "onnx"}
        assert verification == {"passed": True}

    @pytest.mark.parametrize("message", ["", "Traceback ...", "[1, 2]", "null"])
    def test_other_messages_are_not_a_summary(self, message: str) -> None:
        assert parse_summary(message) == (None, None)

    def test_latest_terminated_container_wins(self) -> None:
        def pod(finished: str, message: str) -> dict[str, Any]:
            state = {"terminated": {"finishedAt": finished, "message": message}}
            return {"status": {"containerStatuses": [{"state": state}]}}

        pods = [pod("2026-01-01T00:00:02Z", "second"), pod("2026-01-01T00:00:01Z", "first")]
        assert _termination_message(pods) == "second"
