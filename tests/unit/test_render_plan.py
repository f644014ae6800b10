"""The stateless rules: which hash Triton serves, when a conversion Job is wanted, which children exist."""

from __future__ import annotations

from typing import Any

import pytest
from _render_samples import modified, sample

from modelservice.api.errors import SpecError, UserError
from modelservice.render import (
    HASH_ANNOTATION,
    Observed,
    OperatorConfig,
    build_deployment,
    children,
    conversion_hash,
    job_name,
    job_state,
    obsolete_children,
    plan,
)


def _kinds(objs: list[dict[str, Any]]) -> list[str]:
    return [obj["kind"] for obj in objs]


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in objs if obj["kind"] == kind]
    return found


def _served(hash_: str) -> dict[str, Any]:
    return {"metadata": {"name": "digits", "annotations": {HASH_ANNOTATION: hash_}}}


class TestJobState:
    def test_states(self) -> None:
        assert job_state({}) == "running"
        assert job_state({"status": {"active": 1}}) == "running"
        assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "succeeded"
        assert job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "failed"
        assert job_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) == "running"
        assert job_state({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}) == "failed"
        assert job_state({"status": {"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}}) == "succeeded"


class TestPlan:
    def test_fresh_object_converts_first(self) -> None:
        ms = sample("cpu")
        p = plan(ms, Observed())
        assert p.job_wanted and p.converting and p.deploy_hash is None
        objs = children(ms, Observed())
        assert _kinds(objs) == ["PersistentVolumeClaim", "ConfigMap", "Job", "Service", "Ingress"]
        assert _by_kind(objs, "Job")["metadata"]["name"] == job_name(ms)

    def test_running_job_still_no_deployment(self) -> None:
        ms = sample("cpu")
        assert "Deployment" not in _kinds(children(ms, Observed(conversion_job="running")))

    def test_succeeded_job_deploys_the_hash(self) -> None:
        ms = sample("cpu")
        objs = children(ms, Observed(conversion_job="succeeded"))
        deployment = _by_kind(objs, "Deployment")
        assert deployment["metadata"]["annotations"][HASH_ANNOTATION] == conversion_hash(ms)
        assert (
            f"--model-repository=/models/{conversion_hash(ms)}"
            in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        )
        assert {"PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(_kinds(objs))

    def test_failed_job_reported_not_deployed(self) -> None:
        p = plan(sample("cpu"), Observed(conversion_job="failed"))
        assert p.conversion_failed and not p.converting and p.deploy_hash is None
        assert "Job" in _kinds(children(sample("cpu"), Observed(conversion_job="failed")))

    def test_up_to_date_needs_no_job(self) -> None:
        """A Job removed by its TTL after success is not re-created: the Deployment serves its hash."""
        ms = sample("cpu")
        observed = Observed(deployment=_served(conversion_hash(ms)))
        p = plan(ms, observed)
        assert not p.job_wanted and p.up_to_date and p.deploy_hash == conversion_hash(ms)
        assert "Job" not in _kinds(children(ms, observed))
        assert "ConfigMap" not in _kinds(children(ms, observed))

    @pytest.mark.parametrize("state", [None, "running", "failed"])
    def test_deployment_keeps_old_hash_until_new_job_succeeded(self, state: Any) -> None:
        old = sample("cpu")
        new = modified(old, "conversion.precision", "fp16")
        observed = Observed(deployment=_served(conversion_hash(old)), conversion_job=state)
        p = plan(new, observed)
        assert p.job_wanted and p.deploy_hash == conversion_hash(old) and not p.up_to_date
        objs = children(new, observed)
        assert _by_kind(objs, "Job")["metadata"]["name"] == job_name(new)
        deployment = _by_kind(objs, "Deployment")
        assert deployment["metadata"]["annotations"][HASH_ANNOTATION] == conversion_hash(old)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--model-repository=/models/{conversion_hash(old)}" in args

    def test_deployment_moves_once_new_job_succeeded(self) -> None:
        old = sample("cpu")
        new = modified(old, "conversion.precision", "fp16")
        observed = Observed(deployment=_served(conversion_hash(old)), conversion_job="succeeded")
        p = plan(new, observed)
        assert p.deploy_hash == conversion_hash(new) and p.up_to_date
        assert _by_kind(children(new, observed), "Deployment")["metadata"]["annotations"][HASH_ANNOTATION] == (
            conversion_hash(new)
        )

    def test_serving_only_change_applies_at_once(self) -> None:
        old = sample("gpu")
        new = modified(old, "serving.replicas", 7)
        observed = Observed(deployment=_served(conversion_hash(old)))
        deployment = _by_kind(children(new, observed), "Deployment")
        assert deployment["spec"]["replicas"] == 7
        assert "Job" not in _kinds(children(new, observed))

    def test_repository_sources_deploy_without_job(self) -> None:
        for name in ("repo-pvc", "repo-s3"):
            ms = sample(name)
            p = plan(ms, Observed())
            assert not p.job_wanted and p.deploy_hash == conversion_hash(ms)
            assert _kinds(children(ms, Observed())) == ["Deployment", "Service", "PodDisruptionBudget"]

    def test_external_pvc_not_rendered(self) -> None:
        ms = sample("gpu")
        assert "PersistentVolumeClaim" in _kinds(children(ms, Observed()))
        assert "PersistentVolumeClaim" not in _kinds(children(ms, Observed(pvc_external=True)))

    def test_served_hash_ignores_missing_annotation(self) -> None:
        assert Observed(deployment={"metadata": {"name": "x"}}).served_hash is None
        assert Observed().served_hash is None

    def test_local_uris_rejected_with_field(self) -> None:
        ms = modified(sample("cpu"), "model.uri", "file:///home/me/model")
        with pytest.raises(SpecError, match=r"spec\.model\.uri: file://"):
            children(ms, Observed())
        ms = modified(sample("cpu"), "conversion.verification.dataUri", "data/test.npz")
        with pytest.raises(SpecError, match=r"spec\.conversion\.verification\.dataUri"):
            children(ms, Observed())


class TestObsolete:
    def test_removed_children_and_old_jobs(self) -> None:
        old = sample("cpu")
        existing = children(old, Observed(conversion_job="succeeded"))
        new = modified(old, "conversion.precision", "fp16")
        new = modified(new, "exposure.ingress", None)
        new = modified(new, "autoscaling", None)
        observed = Observed(deployment=build_deployment(old, conversion_hash(old)), conversion_job="running")
        wanted = children(new, observed)
        gone = {(obj["kind"], obj["metadata"]["name"]) for obj in obsolete_children(new, wanted, existing)}
        assert gone == {
            ("ConfigMap", job_name(old)),
            ("Job", job_name(old)),
            ("HorizontalPodAutoscaler", "digits"),
            ("Ingress", "digits"),
        }

    def test_never_foreign_or_pvc(self) -> None:
        ms = sample("cpu")
        foreign = {"kind": "Ingress", "metadata": {"name": "other", "labels": {"app.kubernetes.io/instance": "digits"}}}
        pvc = children(ms, Observed())[0]
        assert pvc["kind"] == "PersistentVolumeClaim"
        deployment = build_deployment(ms, "0123456789")
        assert obsolete_children(ms, [], [foreign, pvc, deployment]) == []


class TestOperatorConfigFromEnv:
    def test_overrides(self) -> None:
        config = OperatorConfig.from_env(
            {
                "MODELSERVICE_CONVERTER_IMAGE": "registry.local/conv:2",
                "MODELSERVICE_CONVERTER_GPU_IMAGE": "registry.local/conv:2-gpu",
                "MODELSERVICE_JOB_BACKOFF_LIMIT": "0",
                "MODELSERVICE_OWN_CREATED_PVC": "false",
                "UNRELATED": "x",
            }
        )
        assert config.converter_image == "registry.local/conv:2"
        assert config.converter_gpu_image == "registry.local/conv:2-gpu"
        assert config.job_backoff_limit == 0 and config.own_created_pvc is False
        assert config.pvc_root == OperatorConfig().pvc_root

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("MODELSERVICE_JOB_BACKOFF_LIMIT", "two"),
            ("MODELSERVICE_JOB_BACKOFF_LIMIT", "-1"),
            ("MODELSERVICE_OWN_CREATED_PVC", "maybe"),
            ("MODELSERVICE_CONVERTER_IMAGE", ""),
            ("MODELSERVICE_CONVERTER_GPU_IMAGE", ""),
            ("MODELSERVICE_CONVERTER_REQUESTS", "cpu=1"),
        ],
    )
    def test_bad_values_name_the_variable(self, name: str, value: str) -> None:
        with pytest.raises(UserError, match=name):
            OperatorConfig.from_env({name: value})
