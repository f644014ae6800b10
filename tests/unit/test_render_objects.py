"""Every builder: schema-valid for several Kubernetes versions, PSS restricted, and the fields that matter."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from _render_samples import SAMPLES, UID, modified, sample

from _k8s import K8S_VERSIONS, check_restricted, pod_templates, validate_strict
from modelservice.api.loader import parse
from modelservice.render import (
    METRIC_INFERENCE_RATE,
    METRIC_QUEUE_TIME,
    PROMETHEUS_ADAPTER_RULES,
    Observed,
    OperatorConfig,
    build_configmap,
    build_deployment,
    build_hpa,
    build_httproute,
    build_ingress,
    build_job,
    build_pdb,
    build_pvc,
    build_service,
    children,
    conversion_hash,
    endpoints,
    selector_labels,
)
from modelservice.render.deployment import shm_size

OBSERVED_STATES = {
    "fresh": Observed(),
    "converted": Observed(conversion_job="succeeded"),
}


def _all_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in SAMPLES:
        for state, observed in OBSERVED_STATES.items():
            for obj in children(sample(name), observed):
                out.append((f"{name}/{state}/{obj['kind']}", obj))
    return out


ALL = _all_objects()
KINDS_COVERED = {obj["kind"] for _, obj in ALL}


def test_every_kind_is_covered() -> None:
    assert {
        "PersistentVolumeClaim",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "HTTPRoute",
    } == KINDS_COVERED


@pytest.mark.parametrize(("label", "obj"), ALL, ids=[label for label, _ in ALL])
def test_strictly_valid(label: str, obj: dict[str, Any]) -> None:
    checked = validate_strict(obj)
    if obj["kind"] == "HTTPRoute":  # a CRD kind: checked against Gateway API's v1 schema instead
        assert checked == ["gateway-api-v1"]
    else:
        assert checked == list(K8S_VERSIONS)


@pytest.mark.parametrize(("label", "obj"), ALL, ids=[label for label, _ in ALL])
def test_common_metadata(label: str, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    assert meta["namespace"] == "ml"
    assert meta["ownerReferences"][0]["uid"] == UID
    assert meta["ownerReferences"][0]["controller"] is True
    for key in ("name", "instance", "managed-by", "part-of", "component"):
        assert f"app.kubernetes.io/{key}" in meta["labels"]


PODS = [(label, obj) for label, obj in ALL if pod_templates(obj)]


@pytest.mark.parametrize(("label", "obj"), PODS, ids=[label for label, _ in PODS])
def test_pod_templates_restricted(label: str, obj: dict[str, Any]) -> None:
    for pod_spec, pod_annotations in pod_templates(obj):
        assert check_restricted(pod_spec, pod_annotations) == []
        for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_pods_covered() -> None:
    assert {obj["kind"] for _, obj in PODS} == {"Job", "Deployment"}
    assert any("initContainers" in obj["spec"]["template"]["spec"] for _, obj in PODS)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in pod["volumes"]}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["mountPath"]: mount for mount in container["volumeMounts"]}


class TestGpuDeployment:
    ms = sample("gpu")
    deployment = build_deployment(ms, conversion_hash(ms))
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)

    def test_args(self) -> None:
        assert self.container["image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
        assert self.container["args"][:4] == [
            f"--model-repository=/models/{conversion_hash(self.ms)}",
            "--strict-readiness=true",
            "--model-control-mode=none",
            "--exit-on-error=true",
        ]

    def test_ports(self) -> None:
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
        assert not any("hostPort" in p for p in self.container["ports"])

    def test_probes(self) -> None:
        assert self.container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert self.container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        startup = self.container["startupProbe"]
        assert startup["httpGet"]["path"] == "/v2/health/ready"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60  # large models load slowly

    def test_gpu_limits_and_toleration(self) -> None:
        assert self.container["resources"]["limits"]["nvidia.com/gpu"] == 2
        assert self.container["resources"]["limits"]["memory"] == "32Gi"
        assert self.container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
        tolerations = self.pod["tolerations"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
        assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in tolerations
        assert self.pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert "nodeAffinity" in self.pod["affinity"]

    def test_shm_and_scratch(self) -> None:
        volumes = _volumes(self.pod)
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
        mounts = _mounts(self.container)
        assert mounts["/dev/shm"]["name"] == "shm"
        assert mounts["/tmp"]["name"] == "tmp" and "emptyDir" in volumes["tmp"]

    def test_security_context(self) -> None:
        assert self.pod["securityContext"]["runAsUser"] == 1000
        assert self.pod["securityContext"]["runAsNonRoot"] is True
        assert self.pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        ctx = self.container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert check_restricted(self.pod) == []

    def test_model_claim_read_only(self) -> None:
        volumes = _volumes(self.pod)
        assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "model-repo", "readOnly": True}
        assert _mounts(self.container)["/models"]["readOnly"] is True

    def test_rollout_and_spread(self) -> None:
        spec = self.deployment["spec"]
        assert spec["replicas"] == 3
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        (spread,) = self.pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["labelSelector"]["matchLabels"] == selector_labels(self.ms)
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


class TestDeploymentVariants:
    def test_cpu_has_no_gpu(self) -> None:
        ms = sample("cpu")
        deployment = build_deployment(ms, conversion_hash(ms))
        assert "nvidia.com/gpu" not in _container(deployment)["resources"]["limits"]
        assert "tolerations" not in deployment["spec"]["template"]["spec"]

    def test_gpu_toleration_not_duplicated(self) -> None:
        toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ms = modified(sample("gpu"), "serving.tolerations", [toleration])
        assert build_deployment(ms, "h")["spec"]["template"]["spec"]["tolerations"] == [toleration]

    def test_replicas_omitted_with_autoscaling(self) -> None:
        ms = sample("cpu")
        assert "replicas" not in build_deployment(ms, conversion_hash(ms))["spec"]

    def test_shm_sized_by_memory_limit(self) -> None:
        assert shm_size(modified(sample("cpu"), "serving.resources.limits", {"memory": "1Gi"})) == "256Mi"
        assert shm_size(modified(sample("cpu"), "serving.resources.limits", {"memory": "128Mi"})) == "64Mi"
        assert shm_size(modified(sample("cpu"), "serving.resources.limits", {})) == "1Gi"

    def test_triton_repository_on_pvc_mounted_in_place(self) -> None:
        ms = sample("repo-pvc")
        deployment = build_deployment(ms, conversion_hash(ms))
        pod = deployment["spec"]["template"]["spec"]
        assert _volumes(pod)["models"]["persistentVolumeClaim"] == {"claimName": "repos", "readOnly": True}
        mount = _mounts(_container(deployment))["/models"]
        assert mount == {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "digits-repo"}
        assert "--model-repository=/models" in _container(deployment)["args"]
        assert "initContainers" not in pod

    def test_triton_repository_in_s3_fetched_by_init_container(self) -> None:
        ms = sample("repo-s3")
        deployment = build_deployment(ms, conversion_hash(ms))
        pod = deployment["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["command"][:3] == ["modelservice", "fetch", "s3://models/digits-repo.tar.gz"]
        assert init["command"][-2:] == ["--sha256", "a" * 64]
        assert "--out" in init["command"] and "/models/repository" in init["command"]
        assert init["image"] == OperatorConfig().converter_image
        # `modelservice fetch` runs on CPU: the CPU converter, whatever the GPU converter is
        config = OperatorConfig(
            converter_image="registry.local/conv:1", converter_gpu_image="registry.local/conv:1-gpu"
        )
        for served in (ms, modified(ms, "serving.resources", {"gpu": 1})):
            (init,) = build_deployment(served, conversion_hash(served), config)["spec"]["template"]["spec"][
                "initContainers"
            ]
            assert init["image"] == "registry.local/conv:1"
        assert init["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert "emptyDir" in _volumes(pod)["models"]
        assert _mounts(init)["/models"].get("readOnly") is not True
        assert _mounts(_container(deployment))["/models"]["readOnly"] is True
        assert "--model-repository=/models/repository" in _container(deployment)["args"]


class TestPlacement:
    """A ReadWriteOnce claim attaches to one node: replicas co-locate, the Job prefers their node."""

    def test_single_node_claim_colocates(self) -> None:
        ms = sample("cpu")  # default accessModes [ReadWriteOnce]
        pod = build_deployment(ms, conversion_hash(ms))["spec"]["template"]["spec"]
        assert "topologySpreadConstraints" not in pod
        (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term == {"labelSelector": {"matchLabels": selector_labels(ms)}, "topologyKey": "kubernetes.io/hostname"}
        job_pod = build_job(ms)["spec"]["template"]["spec"]
        (preferred,) = job_pod["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert preferred["podAffinityTerm"] == term

    def test_shared_claim_spreads(self) -> None:
        ms = sample("gpu")  # ReadWriteMany
        pod = build_deployment(ms, conversion_hash(ms))["spec"]["template"]["spec"]
        assert "podAffinity" not in pod["affinity"] and pod["topologySpreadConstraints"]
        assert "podAffinity" not in build_job(ms)["spec"]["template"]["spec"]["affinity"]

    def test_user_affinity_kept(self) -> None:
        anti: dict[str, Any] = {"preferredDuringSchedulingIgnoredDuringExecution": []}
        ms = modified(sample("cpu"), "serving.affinity", {"podAntiAffinity": anti})
        affinity = build_deployment(ms, "0123456789")["spec"]["template"]["spec"]["affinity"]
        assert affinity["podAntiAffinity"] == anti and "podAffinity" in affinity
        assert "podAntiAffinity" not in (ms.spec.serving.affinity or {}).get("podAffinity", {})

    def test_repository_on_pvc_spreads(self) -> None:
        ms = sample("repo-pvc")
        assert build_deployment(ms, conversion_hash(ms))["spec"]["template"]["spec"]["topologySpreadConstraints"]


class TestJob:
    ms = sample("cpu")
    job = build_job(ms)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    def test_name_and_command(self) -> None:
        hash_ = conversion_hash(self.ms)
        assert self.job["metadata"]["name"] == f"digits-convert-{hash_}"
        command = self.container["command"]
        assert command[:4] == ["modelservice", "convert", "-f", "/etc/modelservice/modelservice.yaml"]
        assert command[command.index("--out") + 1] == f"/models/{hash_}"
        assert command[command.index("--summary-file") + 1] == "/dev/termination-log"
        assert self.container["terminationMessagePolicy"] == "File"
        assert self.container["image"] == "ghcr.io/modelservice/converter:0.1.0"

    def test_limits(self) -> None:
        spec = self.job["spec"]
        assert 0 < spec["backoffLimit"] <= 3
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
        assert self.pod["restartPolicy"] == "Never"

    def test_mounts(self) -> None:
        volumes = _volumes(self.pod)
        mounts = _mounts(self.container)
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "digits-models"
        assert mounts["/models"].get("readOnly") is not True
        assert volumes["spec"]["configMap"]["name"] == self.job["metadata"]["name"]
        assert mounts["/etc/modelservice"]["readOnly"] is True
        source = mounts["/mnt/pvc/datasets"]
        assert source["readOnly"] is True
        assert volumes[source["name"]]["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
        env = {e["name"]: e["value"] for e in self.container["env"]}
        assert env["MODELSERVICE_PVC_ROOT"] == "/mnt/pvc"
        assert self.container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]

    def test_cpu_job_has_no_gpu_but_tensorrt_has(self) -> None:
        assert "nvidia.com/gpu" not in self.container["resources"]["limits"]
        gpu_job = build_job(sample("gpu"))
        (gpu_container,) = gpu_job["spec"]["template"]["spec"]["containers"]
        assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert any(t["key"] == "nvidia.com/gpu" for t in gpu_job["spec"]["template"]["spec"]["tolerations"])

    def test_config(self) -> None:
        config = OperatorConfig(converter_image="registry.local/conv:1", pvc_root="/data", job_backoff_limit=1)
        job = build_job(self.ms, config)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.local/conv:1" and job["spec"]["backoffLimit"] == 1
        assert "/data/datasets" in _mounts(container)

    @pytest.mark.parametrize(
        ("name", "conversion", "gpu"),
        [
            ("cpu", None, False),  # onnx int8
            ("gpu", None, True),  # tensorrt fp16
            ("gpu", {"target": "tensorrt", "precision": "fp32"}, True),
            ("gpu", {"target": "torchscript", "precision": "fp16"}, True),
            ("gpu", {"target": "torchscript", "precision": "fp32"}, False),  # served on GPUs, converted on CPU
            ("gpu", {"target": "onnx", "precision": "fp16"}, False),
            ("onnx-none", None, False),
        ],
    )
    def test_image_is_the_gpu_converter_only_when_the_job_needs_a_gpu(
        self, name: str, conversion: dict[str, Any] | None, gpu: bool
    ) -> None:
        ms = sample(name) if conversion is None else modified(sample(name), "conversion", conversion)
        for config, cpu_image, gpu_image in [
            (OperatorConfig(), "ghcr.io/modelservice/converter:0.1.0", "ghcr.io/modelservice/converter:0.1.0-gpu"),
            (
                OperatorConfig(
                    converter_image="registry.local/conv:1",
                    converter_gpu_image="registry.local/conv-gpu:1@sha256:" + "b" * 64,
                    converter_image_pull_policy="Always",
                ),
                "registry.local/conv:1",
                "registry.local/conv-gpu:1@sha256:" + "b" * 64,
            ),
        ]:
            (container,) = build_job(ms, config)["spec"]["template"]["spec"]["containers"]
            assert container["image"] == (gpu_image if gpu else cpu_image)
            assert ("nvidia.com/gpu" in container["resources"]["limits"]) is gpu
            assert container["imagePullPolicy"] == config.converter_image_pull_policy

    def test_gpu_image_from_the_environment(self) -> None:
        config = OperatorConfig.from_env({"MODELSERVICE_CONVERTER_GPU_IMAGE": "registry.local/conv:2-gpu"})
        (container,) = build_job(sample("gpu"), config)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.local/conv:2-gpu"
        (container,) = build_job(sample("cpu"), config)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == OperatorConfig().converter_image

    def test_configmap_round_trips(self) -> None:
        configmap = build_configmap(self.ms)
        assert configmap["immutable"] is True
        assert configmap["metadata"]["name"] == self.job["metadata"]["name"]
        document = yaml.safe_load(configmap["data"]["modelservice.yaml"])
        again = parse(document, "configmap")
        assert again.spec == self.ms.spec and again.name == "digits"
        assert conversion_hash(again) == conversion_hash(self.ms)


class TestOtherChildren:
    def test_service(self) -> None:
        service = build_service(sample("gpu"))
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert [ports[n]["port"] for n in ("http", "grpc", "metrics")] == [8000, 8001, 8002]
        assert ports["grpc"]["appProtocol"] == "grpc"
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["metadata"]["annotations"] == {"example.com/lb": "internal"}
        assert service["spec"]["selector"] == selector_labels(sample("gpu"))

    def test_pdb(self) -> None:
        pdb = build_pdb(sample("cpu"))
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == selector_labels(sample("cpu"))

    def test_hpa(self) -> None:
        hpa = build_hpa(sample("cpu"))
        assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
        spec = hpa["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits"}
        cpu, queue, rate = spec["metrics"]
        assert cpu["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
        assert queue["pods"]["metric"]["name"] == METRIC_QUEUE_TIME
        assert queue["pods"]["target"] == {"type": "AverageValue", "averageValue": "5000"}
        assert rate["pods"]["metric"]["name"] == METRIC_INFERENCE_RATE
        assert rate["pods"]["target"]["averageValue"] == "200"
        assert build_hpa(sample("gpu")) is None

    def test_adapter_rules_name_the_hpa_metrics(self) -> None:
        names = {rule["name"]["as"] for rule in PROMETHEUS_ADAPTER_RULES}
        assert names == {METRIC_QUEUE_TIME, METRIC_INFERENCE_RATE}
        queries = " ".join(rule["metricsQuery"] for rule in PROMETHEUS_ADAPTER_RULES)
        for triton_metric in ("nv_inference_queue_duration_us", "nv_inference_request_success", "nv_inference_count"):
            assert triton_metric in queries

    def test_ingress(self) -> None:
        ingress = build_ingress(sample("cpu"))
        assert ingress is not None
        assert ingress["spec"]["ingressClassName"] == "nginx"
        (rule,) = ingress["spec"]["rules"]
        assert rule["host"] == "digits.example.com"
        assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "digits", "port": {"name": "http"}}
        assert ingress["spec"]["tls"] == [{"hosts": ["digits.example.com"], "secretName": "tls"}]
        assert build_ingress(sample("gpu")) is None

    def test_httproute(self) -> None:
        route = build_httproute(sample("gpu"))
        assert route is not None
        assert route["spec"]["parentRefs"][0]["name"] == "gw"
        assert route["spec"]["hostnames"] == ["encoder.example.com"]
        (rule,) = route["spec"]["rules"]
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2"}}]
        assert rule["backendRefs"][0]["name"] == "encoder" and rule["backendRefs"][0]["port"] == 8000
        assert build_httproute(sample("cpu")) is None

    def test_pvc(self) -> None:
        pvc = build_pvc(sample("gpu"))
        assert pvc["metadata"]["name"] == "model-repo"
        assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
        assert pvc["spec"]["storageClassName"] == "fast"
        assert "ownerReferences" not in build_pvc(sample("gpu"), OperatorConfig(own_created_pvc=False))["metadata"]


class TestEndpoints:
    def test_cluster_endpoints(self) -> None:
        found = endpoints(sample("cpu"))
        assert found.http == "http://digits.ml.svc:8000"
        assert found.grpc == "digits.ml.svc:8001"
        assert found.metrics == "http://digits.ml.svc:8002/metrics"
        assert found.external == "https://digits.example.com/"

    def test_fqdn(self) -> None:
        found = endpoints(sample("cpu"), OperatorConfig(fqdn_endpoints=True, cluster_domain="corp.local"))
        assert found.http == "http://digits.ml.svc.corp.local:8000"

    def test_external_from_route_and_load_balancer(self) -> None:
        assert endpoints(sample("gpu")).external == "http://encoder.example.com/v2"
        ms = modified(sample("gpu"), "exposure.httpRoute", None)
        assert endpoints(ms).external is None
        service = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}
        assert endpoints(ms, service=service).external == "http://203.0.113.7:8000"
        assert endpoints(sample("repo-pvc")).external is None
