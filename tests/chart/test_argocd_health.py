"""deploy/argocd/health.lua, run by a real Lua 5.1 interpreter (lupa; Argo CD runs gopher-lua, Lua 5.1)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chartlib import REPO
from lupa import lua51

from modelservice.api.models import Condition, ModelServiceStatus

HEALTH_LUA = REPO / "deploy" / "argocd" / "health.lua"


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    """Run the health check as Argo CD does: the resource as global ``obj``; returns (status, message)."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script if script is not None else HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])


def _ms(generation: int | None, status: ModelServiceStatus | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "digits", "namespace": "ml"}
    if generation is not None:
        metadata["generation"] = generation
    obj: dict[str, Any] = {"apiVersion": "modelservice.dev/v1alpha1", "kind": "ModelService", "metadata": metadata}
    if status is not None:
        obj["status"] = status.to_api()
    return obj


def _status(
    phase: str | None, observed: int | None, *conditions: tuple[str, str, str, str], cond_generation: int | None = None
) -> ModelServiceStatus:
    return ModelServiceStatus.model_validate(
        {
            "phase": phase,
            "observedGeneration": observed,
            "conditions": [
                Condition(type=t, status=s, reason=r, message=m, observed_generation=cond_generation).to_api()
                for t, s, r, m in conditions
            ],
        }
    )


READY = ("Ready", "True", "Available", "2/2 replicas serve onnx int8")
NOT_READY = ("Ready", "False", "Converting", "conversion Job digits-convert-1a2b running")
STALLED = ("Stalled", "True", "VerificationFailed", "spec.conversion.verification: accuracy drop 0.04 > budget 0.01")
NOT_STALLED = ("Stalled", "False", "", "")
RECONCILING = ("Reconciling", "True", "Converting", "converting to onnx int8")
NOT_RECONCILING = ("Reconciling", "False", "", "")

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing status", _ms(1, None), "Progressing", "Waiting for the operator to report status"),
    ("empty status", {"metadata": {"generation": 1}, "status": {}}, "Progressing", "observe generation 1"),
    ("ready", _ms(3, _status("Ready", 3, READY, NOT_RECONCILING, NOT_STALLED)), "Healthy", READY[3]),
    ("ready, no generation field", _ms(None, _status("Ready", None, READY)), "Healthy", READY[3]),
    (
        "stale observedGeneration even though Ready is True",
        _ms(4, _status("Ready", 3, READY, NOT_RECONCILING, NOT_STALLED)),
        "Progressing",
        "observe generation 4",
    ),
    (
        "Ready condition about an older generation",
        _ms(4, _status("Ready", 4, READY, NOT_STALLED, cond_generation=3)),
        "Progressing",
        "",
    ),
    (
        "stalled",
        _ms(2, _status("Failed", 2, ("Ready", "False", "VerificationFailed", ""), STALLED)),
        "Degraded",
        STALLED[3],
    ),
    (
        "stalled while the old model still serves",
        _ms(5, _status("Degraded", 5, READY, STALLED)),
        "Degraded",
        STALLED[3],
    ),
    (
        "failed phase without Stalled",
        _ms(2, _status("Failed", 2, ("Ready", "False", "JobFailed", "Job failed"))),
        "Degraded",
        "Job failed",
    ),
    (
        "reconciling",
        _ms(2, _status("Converting", 2, NOT_READY, RECONCILING, NOT_STALLED)),
        "Progressing",
        RECONCILING[3],
    ),
    ("pending without conditions", _ms(1, _status("Pending", 1)), "Progressing", "Phase Pending"),
]


@pytest.mark.parametrize(("case", "obj", "verdict", "message"), CASES, ids=[c[0] for c in CASES])
def test_health_verdicts(case: str, obj: dict[str, Any], verdict: str, message: str) -> None:
    status, text = health(obj)
    assert status == verdict, case
    assert message in text


def test_the_configmap_snippets_carry_the_same_script() -> None:
    key = "resource.customizations.health.modelservice.dev_ModelService"
    script = HEALTH_LUA.read_text()
    patch = yaml.safe_load((REPO / "deploy" / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert patch["metadata"]["name"] == "argocd-cm" and patch["data"][key] == script
    values = yaml.safe_load((REPO / "deploy" / "argocd" / "argo-cd-values.yaml").read_text())
    assert values["configs"]["cm"][key] == script


def test_a_broken_script_would_be_caught() -> None:
    """The harness really executes the script: a health check that always says Healthy fails the stale case."""
    always_healthy = 'hs = {} hs.status = "Healthy" hs.message = "" return hs'
    stale = CASES[4][1]
    assert health(stale, always_healthy)[0] == "Healthy" != health(stale)[0]


# ---------------------------------------------------------------- the operator's own statuses through the check


def _operator_status(scenario: str, generation: int) -> dict[str, Any]:
    """A status computed by the operator's pure status function (controller/status.py) for a real sample."""
    from modelservice.api.loader import load_one
    from modelservice.controller.status import ConversionResult, StatusInputs, compute_status
    from modelservice.render.names import HASH_ANNOTATION, conversion_hash, job_name
    from modelservice.render.plan import Observed, plan

    ms = load_one(REPO / "manifests" / "samples" / "cpu-onnx-int8.yaml").model
    desired = conversion_hash(ms)

    def deployment(ready: int, updated: int = 2) -> dict[str, Any]:
        return {
            "metadata": {"generation": 1, "annotations": {HASH_ANNOTATION: desired}},
            "spec": {"replicas": 2},
            "status": {
                "observedGeneration": 1,
                "replicas": 2,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": ready,
            },
        }

    now = "2026-01-01T00:00:00Z"
    if scenario == "invalid":
        return compute_status(StatusInputs(generation=generation, now=now, problems=("spec.model.uri: not found",)))
    observed = {
        "converting": Observed(conversion_job="running"),
        "conversion-failed": Observed(conversion_job="failed"),
        "rolling-out": Observed(deployment=deployment(ready=1, updated=1)),
        "ready": Observed(deployment=deployment(ready=2)),
    }[scenario]
    conversion = ConversionResult(job=job_name(ms), succeeded=False, message="accuracy drop 0.04 > budget 0.01")
    return compute_status(
        StatusInputs(
            generation=generation,
            now=now,
            plan=plan(ms, observed),
            job_name=job_name(ms),
            conversion=conversion if scenario == "conversion-failed" else None,
            deployment=observed.deployment,
        )
    )


@pytest.mark.parametrize(
    ("scenario", "verdict"),
    [
        ("invalid", "Degraded"),
        ("converting", "Progressing"),
        ("conversion-failed", "Degraded"),
        ("rolling-out", "Progressing"),
        ("ready", "Healthy"),
    ],
)
def test_verdicts_on_statuses_the_operator_computes(scenario: str, verdict: str) -> None:
    status = _operator_status(scenario, generation=3)
    obj = {"metadata": {"name": "digits-int8", "generation": 3}, "status": status}
    assert health(obj)[0] == verdict, status
    # the same status after the user edits the spec (generation 4, not yet observed): Progressing, whatever it was
    obj["metadata"]["generation"] = 4
    assert health(obj)[0] == "Progressing"
