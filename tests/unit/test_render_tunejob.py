"""The profiling Job (issue 11): Triton as a native sidecar beside the profiler, one claim, the serving hardware,
restricted, schema-valid for several Kubernetes versions; its ConfigMap; the tuning hash; the profiler's summary."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from _render_samples import UID, modified, sample

from _k8s import K8S_VERSIONS, check_restricted, validate_strict
from modelservice.api.models import ModelService
from modelservice.api.tuning import Performance
from modelservice.render import OperatorConfig, build_deployment, conversion_hash, pvc_name
from modelservice.render.job import GPU_TOLERATION
from modelservice.render.names import HASH_LABEL, TUNING_HASH_ANNOTATION, TUNING_HASH_LABEL, tune_job_name
from modelservice.render.tunejob import (
    PROFILER_CONTAINER,
    TRITON_CONTAINER,
    TUNE_DEADLINE_MARGIN_SECONDS,
    build_tune_configmap,
    build_tune_job,
    parse_performance,
    profiler_termination_message,
    with_tuning_annotation,
)
from modelservice.render.tuneplan import current_tune_job_name, served_tuning_hash, tuning_hash, tuning_wanted
from modelservice.tune.report import summary

TARGET = {"p99Milliseconds": 50}


def tuned(name: str, target: dict[str, Any] | None = None) -> ModelService:
    return modified(sample(name), "serving.latencyTarget", target or TARGET)


def text_model(serving: dict[str, Any] | None = None) -> ModelService:
    return ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "minilm", "namespace": "ml", "uid": UID, "generation": 1},
            "spec": {
                "model": {"uri": "s3://models/minilm/", "format": "huggingface", "task": "sentence-embedding"},
                "conversion": {"target": "onnx", "precision": "int8"},
                "serving": {"latencyTarget": TARGET, **(serving or {})},
            },
        }
    )


MODELS = {
    "cpu": tuned("cpu"),
    "gpu": tuned("gpu"),
    "onnx-none": tuned("onnx-none", {"p95Milliseconds": 20}),
    "text": text_model(),
}


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def triton(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod(job)["initContainers"]
    assert container["name"] == TRITON_CONTAINER
    return dict(container)


def profiler(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod(job)["containers"]
    assert container["name"] == PROFILER_CONTAINER
    return dict(container)


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["mountPath"]: mount for mount in container["volumeMounts"]}


@pytest.mark.parametrize("name", list(MODELS))
class TestEveryModel:
    def test_strictly_valid(self, name: str) -> None:
        ms = MODELS[name]
        assert validate_strict(build_tune_job(ms)) == list(K8S_VERSIONS)
        assert validate_strict(build_tune_configmap(ms)) == list(K8S_VERSIONS)

    def test_restricted(self, name: str) -> None:
        spec = pod(build_tune_job(MODELS[name]))
        assert check_restricted(spec) == []
        for container in spec["initContainers"] + spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False

    def test_metadata(self, name: str) -> None:
        ms = MODELS[name]
        hashes = {HASH_LABEL: conversion_hash(ms), TUNING_HASH_LABEL: tuning_hash(ms)}
        for obj in (build_tune_job(ms), build_tune_configmap(ms)):
            meta = obj["metadata"]
            assert meta["name"] == f"{ms.name}-tune-{tuning_hash(ms)}" == current_tune_job_name(ms)
            assert meta["namespace"] == "ml"
            assert meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["controller"] is True
            assert meta["labels"]["app.kubernetes.io/component"] == "tuner"
            assert hashes.items() <= meta["labels"].items()
        template_labels = build_tune_job(ms)["spec"]["template"]["metadata"]["labels"]
        assert hashes.items() <= template_labels.items()
        assert template_labels["app.kubernetes.io/component"] == "tuner"  # not Triton's selector: no traffic

    def test_two_containers_one_claim(self, name: str) -> None:
        ms = MODELS[name]
        job = build_tune_job(ms)
        volumes = {volume["name"]: volume for volume in pod(job)["volumes"]}
        assert volumes["models"] == {"name": "models", "persistentVolumeClaim": {"claimName": pvc_name(ms)}}
        assert mounts(triton(job))["/models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
        assert mounts(profiler(job))["/models"] == {"name": "models", "mountPath": "/models"}  # writes config.pbtxt
        assert volumes["spec"]["configMap"]["name"] == build_tune_configmap(ms)["metadata"]["name"]
        assert mounts(profiler(job))["/etc/modelservice"]["readOnly"] is True
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
        assert pod(job)["restartPolicy"] == "Never"

    def test_triton_is_a_native_sidecar_on_loopback(self, name: str) -> None:
        ms = MODELS[name]
        container = triton(build_tune_job(ms))
        assert container["restartPolicy"] == "Always"
        assert container["command"] == ["tritonserver"]
        args = container["args"]
        assert f"--model-repository=/models/{conversion_hash(ms)}" in args
        assert "--model-control-mode=explicit" in args
        for endpoint in ("http", "grpc", "metrics"):
            assert f"--{endpoint}-address=127.0.0.1" in args
        assert "ports" not in container  # nothing listens on the pod IP
        assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(container)  # probes reach the pod IP

    def test_profiler_runs_tune(self, name: str) -> None:
        ms = MODELS[name]
        container = profiler(build_tune_job(ms))
        assert container["command"] == [
            "modelservice",
            "tune",
            "-f",
            "/etc/modelservice/modelservice.yaml",
            "--repository",
            f"/models/{conversion_hash(ms)}",
            "--triton-url",
            "http://127.0.0.1:8000",
            "--summary-file",
            "/dev/termination-log",
        ]
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert "restartPolicy" not in container

    def test_same_triton_image_as_the_deployment(self, name: str) -> None:
        ms = MODELS[name]
        for config in (OperatorConfig(), OperatorConfig(triton_text_image="registry.local/text:9")):
            (served,) = build_deployment(ms, conversion_hash(ms), config)["spec"]["template"]["spec"]["containers"]
            assert triton(build_tune_job(ms, config))["image"] == served["image"]
            assert triton(build_tune_job(ms, config))["resources"] == served["resources"]

    def test_configmap_holds_the_spec_of_its_tuning_hash(self, name: str) -> None:
        ms = MODELS[name]
        configmap = build_tune_configmap(ms)
        assert configmap["immutable"] is True
        document = yaml.safe_load(configmap["data"]["modelservice.yaml"])
        target = ms.spec.serving.latency_target
        assert target is not None and document["spec"]["serving"]["latencyTarget"] == target.to_api()
        reread = ModelService.from_body({**document, "metadata": {**document["metadata"], "uid": UID}})
        assert tuning_hash(reread) == tuning_hash(ms) and conversion_hash(reread) == conversion_hash(ms)


class TestHardware:
    def test_gpu_when_asked_and_the_serving_placement(self) -> None:
        ms = MODELS["gpu"]  # 2 GPUs, a node selector, a toleration, node affinity, a ReadWriteMany claim
        job = build_tune_job(ms)
        spec = pod(job)
        assert triton(job)["resources"]["limits"]["nvidia.com/gpu"] == 2
        assert "nvidia.com/gpu" not in profiler(job)["resources"].get("limits", {})  # it only sends requests
        assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert GPU_TOLERATION in spec["tolerations"]
        assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in spec["tolerations"]
        assert spec["affinity"] == ms.spec.serving.affinity

    def test_cpu_model_asks_no_gpu(self) -> None:
        job = build_tune_job(MODELS["cpu"])
        spec = pod(job)
        assert "nvidia.com/gpu" not in json.dumps(job)
        assert "tolerations" not in spec and "nodeSelector" not in spec

    def test_single_node_claim_prefers_tritons_node(self) -> None:
        spec = pod(build_tune_job(MODELS["cpu"]))  # ReadWriteOnce (the default): attaches to one node
        (term,) = spec["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"

    def test_converter_image_follows_the_conversion_rule(self) -> None:
        config = OperatorConfig(converter_image="conv:cpu", converter_gpu_image="conv:gpu")
        assert profiler(build_tune_job(MODELS["cpu"], config))["image"] == "conv:cpu"
        assert profiler(build_tune_job(MODELS["gpu"], config))["image"] == "conv:gpu"  # TensorRT: the GPU image

    def test_users_image(self) -> None:
        ms = modified(MODELS["cpu"], "serving.image", "registry.local/triton:1")
        assert triton(build_tune_job(ms))["image"] == "registry.local/triton:1"


class TestJobLimits:
    def test_deadline_from_max_seconds(self) -> None:
        config = OperatorConfig(startup_period_seconds=10, startup_failure_threshold=30)
        for seconds in (60, 900):
            ms = modified(MODELS["cpu"], "serving.tuning", {"maxSeconds": seconds})
            job = build_tune_job(ms, config)
            assert job["spec"]["activeDeadlineSeconds"] == seconds + 300 + TUNE_DEADLINE_MARGIN_SECONDS

    def test_backoff_ttl_and_evictions(self) -> None:
        spec = build_tune_job(MODELS["cpu"])["spec"]
        assert spec["backoffLimit"] == 1
        assert spec["ttlSecondsAfterFinished"] == OperatorConfig().job_ttl_seconds_after_finished
        assert spec["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
        assert build_tune_job(MODELS["cpu"], OperatorConfig(job_backoff_limit=0))["spec"]["backoffLimit"] == 0

    def test_longest_name_fits_a_label(self) -> None:
        ms = modified(MODELS["cpu"], "exposure.ingress", None)
        body = ms.to_api()
        body["metadata"]["name"] = "m" * 40
        long = ModelService.from_body(body)
        assert len(current_tune_job_name(long)) <= 63
        assert validate_strict(build_tune_job(long)) == list(K8S_VERSIONS)


class TestTuningHash:
    @pytest.mark.parametrize(
        ("path", "value"),
        [
            ("serving.latencyTarget", {"p99Milliseconds": 80}),
            ("serving.latencyTarget", {"p95Milliseconds": 50}),
            ("serving.tuning", {"maxTrials": 5}),
            ("serving.tuning", {"concurrency": [4]}),
            ("serving.image", "registry.local/triton:2"),
            ("serving.nodeSelector", {"gpu": "a10"}),
            ("serving.resources", {"requests": {"cpu": "4", "memory": "2Gi"}}),
        ],
    )
    def test_retunes_without_reconverting(self, path: str, value: Any) -> None:
        ms = MODELS["cpu"]
        changed = modified(ms, path, value)
        assert tuning_hash(changed) != tuning_hash(ms)
        assert conversion_hash(changed) == conversion_hash(ms)

    @pytest.mark.parametrize(("path", "value"), [("conversion.precision", "fp16"), ("serving.instances", 2)])
    def test_a_new_conversion_retunes(self, path: str, value: Any) -> None:
        ms = MODELS["cpu"]
        changed = modified(ms, path, value)
        assert conversion_hash(changed) != conversion_hash(ms) and tuning_hash(changed) != tuning_hash(ms)

    @pytest.mark.parametrize(
        ("path", "value"),
        [("serving.replicas", 5), ("autoscaling", None), ("exposure.ingress", None), ("model.credentials", None)],
    )
    def test_unchanged(self, path: str, value: Any) -> None:
        ms = MODELS["cpu"]
        assert tuning_hash(modified(ms, path, value)) == tuning_hash(ms)

    def test_the_operators_text_image_is_part_of_it(self) -> None:
        ms = MODELS["text"]
        assert tuning_hash(ms, OperatorConfig(triton_text_image="t:2")) != tuning_hash(ms)
        assert tuning_hash(MODELS["cpu"], OperatorConfig(triton_text_image="t:2")) == tuning_hash(MODELS["cpu"])

    def test_deterministic(self) -> None:
        assert tuning_hash(tuned("cpu")) == tuning_hash(tuned("cpu"))
        assert len(tuning_hash(tuned("cpu"))) == 10
        assert tune_job_name(MODELS["cpu"], "0123456789") == "digits-tune-0123456789"


class TestTuningWanted:
    def test_needs_a_target_enabled_and_a_conversion(self) -> None:
        assert tuning_wanted(MODELS["cpu"])
        assert not tuning_wanted(sample("cpu"))
        assert not tuning_wanted(modified(MODELS["cpu"], "serving.tuning", {"enabled": False}))
        assert not tuning_wanted(modified(sample("repo-pvc"), "serving.latencyTarget", TARGET))
        assert tuning_wanted(MODELS["onnx-none"])  # target none still writes config.pbtxt through a Job


class TestTuningAnnotation:
    def test_on_the_deployment_and_its_pod_template(self) -> None:
        ms = MODELS["gpu"]
        deployment = build_deployment(ms, conversion_hash(ms))
        annotated = with_tuning_annotation(deployment, "abcdef0123")
        assert annotated["metadata"]["annotations"][TUNING_HASH_ANNOTATION] == "abcdef0123"
        assert annotated["spec"]["template"]["metadata"]["annotations"][TUNING_HASH_ANNOTATION] == "abcdef0123"
        assert TUNING_HASH_ANNOTATION not in json.dumps(deployment)  # the input is not changed
        assert served_tuning_hash(annotated) == "abcdef0123"
        assert validate_strict(annotated) == list(K8S_VERSIONS)

    def test_none_removes_it(self) -> None:
        ms = MODELS["cpu"]
        annotated = with_tuning_annotation(build_deployment(ms, conversion_hash(ms)), "abcdef0123")
        cleared = with_tuning_annotation(annotated, None)
        assert cleared == build_deployment(ms, conversion_hash(ms))
        assert served_tuning_hash(cleared) is None
        assert served_tuning_hash(None) is None
        assert served_tuning_hash({"metadata": {"annotations": {TUNING_HASH_ANNOTATION: ""}}}) is None


# ------------------------------------------------------------------------------------- the profiler's summary

PERFORMANCE: dict[str, Any] = {
    "config": {"maxBatchSize": 16, "maxQueueDelayMicroseconds": 100, "preferredBatchSizes": [8, 16], "instances": 2},
    "throughputPerReplica": 410.5,
    "latencyMs": {"p50": 12, "p95": 30, "p99": 41},
    "concurrency": 8,
    "target": "p99 <= 50 ms",
    "targetMet": True,
    "trialCount": 9,
    "measuredOn": "NVIDIA H100, Triton 2.54",
    "measuredAt": "2026-12-02T16:00:00Z",
}
COMPACT = json.dumps(PERFORMANCE, separators=(",", ":"))


class TestParsePerformance:
    @pytest.mark.parametrize(
        "message",
        [
            COMPACT,
            f"  {COMPACT}\n",
            json.dumps({"performance": PERFORMANCE}),
            f"loading candidate 9\nINFO done\n{COMPACT}\n",  # a log tail (FallbackToLogsOnError)
            json.dumps({**PERFORMANCE, "gpuPowerWatts": 300, "config": {**PERFORMANCE["config"], "newKnob": 1}}),
        ],
        ids=["compact", "padded", "wrapped", "log-tail", "newer-profiler"],
    )
    def test_reads(self, message: str) -> None:
        performance, problem = parse_performance(message)
        assert problem is None and performance is not None
        assert performance.config.max_batch_size == 16 and performance.config.instances == 2
        assert performance.throughput_per_replica == 410.5 and performance.latency_ms.p99 == 41
        assert performance.to_api()["targetMet"] is True

    def test_what_the_tuner_writes(self) -> None:
        """The real summary of ``modelservice tune`` (tune/report.py) reads back as the same Performance."""
        written = Performance.model_validate({**PERFORMANCE, "trials": [], "tuningSeconds": 12.5})
        performance, problem = parse_performance(summary(written))
        assert problem is None
        assert performance == written.model_copy(update={"trials": None})

    def test_snake_case_too(self) -> None:
        performance, problem = parse_performance(
            json.dumps(
                {"config": {"max_batch_size": 4}, "throughput_per_replica": 1, "latency_ms": PERFORMANCE["latencyMs"]}
            )
        )
        assert problem is None and performance is not None and performance.config.max_batch_size == 4

    @pytest.mark.parametrize(
        ("message", "reason"),
        [
            (None, "no termination message"),
            ("", "no termination message"),
            ("   \n", "no termination message"),
            ("Traceback (most recent call last):\n  ...\nRuntimeError: Triton did not start", "not JSON: RuntimeError"),
            (COMPACT[:-7], "not JSON"),  # cut at the kubelet's size limit
            ("[1, 2]", "not a JSON object"),
            ('"done"', "not a JSON object"),
            (json.dumps({"artifact": {"uri": "x"}}), "not a performance summary: config: Field required"),
            (json.dumps({**PERFORMANCE, "latencyMs": {"p50": "fast"}}), "not a performance summary: latencyMs"),
            (json.dumps({**PERFORMANCE, "config": []}), "not a performance summary: config"),
            ("x" * 5000, "not JSON"),
        ],
        ids=[
            "none",
            "empty",
            "blank",
            "traceback",
            "truncated",
            "array",
            "string",
            "other-json",
            "bad-field",
            "bad-type",
            "long",
        ],
    )
    def test_junk_gives_a_reason(self, message: str | None, reason: str) -> None:
        performance, problem = parse_performance(message)
        assert performance is None and problem is not None
        assert reason in problem
        assert len(problem) <= 260 and "\n" not in problem


class TestProfilerMessage:
    @staticmethod
    def _pod(finished: str, statuses: dict[str, str]) -> dict[str, Any]:
        return {
            "status": {
                "initContainerStatuses": [
                    {"name": TRITON_CONTAINER, "state": {"terminated": {"message": "triton log", "finishedAt": "9"}}}
                ],
                "containerStatuses": [
                    {"name": name, "state": {"terminated": {"message": message, "finishedAt": finished}}}
                    for name, message in statuses.items()
                ],
            }
        }

    def test_the_latest_profiler_message(self) -> None:
        pods = [
            self._pod("2026-12-02T10:00:00Z", {PROFILER_CONTAINER: "first try"}),
            self._pod("2026-12-02T11:00:00Z", {PROFILER_CONTAINER: f"{COMPACT}\n"}),
            {"status": {"containerStatuses": [{"name": PROFILER_CONTAINER, "state": {"running": {}}}]}},
            {},
        ]
        assert profiler_termination_message(pods) == COMPACT
        assert parse_performance(profiler_termination_message(pods))[0] is not None

    def test_none(self) -> None:
        assert profiler_termination_message([]) == ""
        assert profiler_termination_message([self._pod("1", {"other": "x"})]) == ""
