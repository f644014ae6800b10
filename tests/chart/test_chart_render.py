"""The chart renders valid objects (strict schemas, three+ Kubernetes versions, PSS restricted) in every mode."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest
from chartlib import (
    NAMESPACE,
    RELEASE,
    REPO,
    VALUE_SETS,
    by_kind,
    crd_object_errors,
    objects,
    prometheus_operator_schema,
    render,
)

from _k8s import K8S_VERSIONS, check_restricted, pod_templates, validate_strict

# Kinds from CRDs that kubernetes-validate does not ship: checked structurally below.
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor"}
PEERING_KINDS = {"ClusterKopfPeering", "KopfPeering"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


def _check_monitor(obj: dict[str, Any]) -> None:
    """A Prometheus Operator ServiceMonitor/PodMonitor: its v1 CRD schema (0.93.0), plus what we rely on."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert crd_object_errors(obj, prometheus_operator_schema(obj["kind"])) == []
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    spec = obj["spec"]
    endpoints_key = "endpoints" if obj["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    assert set(spec) <= {"selector", "namespaceSelector", endpoints_key}, spec.keys()
    assert spec["selector"]["matchLabels"], "an empty selector would scrape everything"
    ns_selector = spec["namespaceSelector"]
    assert ns_selector == {"any": True} or (set(ns_selector) == {"matchNames"} and ns_selector["matchNames"])
    for endpoint in spec[endpoints_key]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
        assert isinstance(endpoint["port"], str) and endpoint["path"] == "/metrics"
        assert DURATION.match(endpoint["interval"])
        for relabel in endpoint.get("relabelings", []):
            assert set(relabel) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement"}


def _check_peering(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "kopf.dev/v1"
    assert set(obj) == {"apiVersion", "kind", "metadata"}
    annotations = obj["metadata"]["annotations"]
    # Created after the release's CRDs exist (a hook), re-created on upgrade.
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert (obj["kind"] == "KopfPeering") == ("namespace" in obj["metadata"])


@pytest.mark.parametrize("case", list(VALUE_SETS))
def test_every_object_is_valid(chart: helm_python.Chart, case: str) -> None:
    objs = objects(chart, VALUE_SETS[case])
    assert objs
    for obj in objs:
        if obj["kind"] in MONITORING_KINDS:
            _check_monitor(obj)
        elif obj["kind"] in PEERING_KINDS:
            _check_peering(obj)
        else:
            assert validate_strict(obj) == list(K8S_VERSIONS)
    assert len(K8S_VERSIONS) >= 3


@pytest.mark.parametrize("case", list(VALUE_SETS))
def test_pods_pass_restricted_pod_security(chart: helm_python.Chart, case: str) -> None:
    (deployment,) = by_kind(objects(chart, VALUE_SETS[case]), "Deployment")
    ((pod, annotations),) = pod_templates(deployment)
    assert check_restricted(pod, annotations) == []
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_default_render_shape(chart: helm_python.Chart) -> None:
    objs = objects(chart, {})
    kinds = sorted(obj["kind"] for obj in objs)
    assert kinds == sorted(
        ["CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]
    )
    (deployment,) = by_kind(objs, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/modelservice/operator:0.1.0"
    assert container["command"] == ["modelservice"]
    assert container["args"] == ["run", "--metrics-port", "8080", "--health-port", "8081"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MODELSERVICE_CONVERTER_IMAGE"]["value"] == "ghcr.io/modelservice/converter:0.1.0"
    assert env["MODELSERVICE_CONVERTER_GPU_IMAGE"]["value"] == "ghcr.io/modelservice/converter:0.1.0-gpu"
    (service,) = by_kind(objs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_namespaced_mode_watches_only_the_listed_namespaces(chart: helm_python.Chart) -> None:
    objs = objects(chart, {"watchNamespaces": ["ml", "team-b"]})
    (deployment,) = by_kind(objs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--namespace", "ml", "--namespace", "team-b"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objs, "Role")) == ["ml", "team-b"]
    for binding in by_kind(objs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE + "-modelservice-operator", "namespace": NAMESPACE}
        ]


def test_peering_mode_runs_standby_replicas_with_distinct_priorities(chart: helm_python.Chart) -> None:
    objs = objects(chart, VALUE_SETS["peering"])
    (deployment,) = by_kind(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    assert script.startswith(
        "exec modelservice run --metrics-port 8080 --health-port 8081 --peering modelservice-operator"
    )
    assert '--priority "$(python -c' in script
    crds = {c["metadata"]["name"] for c in by_kind(objs, "CustomResourceDefinition")}
    assert crds == {"modelservices.modelservice.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    (peering,) = by_kind(objs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "modelservice-operator"
    namespaced = objects(chart, VALUE_SETS["peering-namespaced"])
    assert [p["metadata"]["namespace"] for p in by_kind(namespaced, "KopfPeering")] == ["ml"]
    assert not by_kind(namespaced, "ClusterKopfPeering")


def test_the_priority_script_is_valid_shell_and_python() -> None:
    import subprocess
    import sys

    objs_script = "python -c 'import secrets; print(1 + secrets.randbelow(1000000))'"
    out = subprocess.run(
        ["/bin/sh", "-c", f'echo "$({objs_script.replace("python", sys.executable, 1)})"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 1 <= int(out.stdout) <= 1000000


def test_more_replicas_without_peering_is_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmError, match=r"replicas > 1 needs peering\.enabled"):
        render(chart, {"replicas": 2})


def test_monitoring_objects(chart: helm_python.Chart) -> None:
    from modelservice.render import names

    objs = objects(chart, VALUE_SETS["monitoring"])
    (service_monitor,) = by_kind(objs, "ServiceMonitor")
    (service,) = by_kind(objs, "Service")
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (pod_monitor,) = by_kind(objs, "PodMonitor")
    # The PodMonitor selects exactly the labels the renderer puts on Triton's pods, on Triton's metrics port.
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {
        names.LABEL_NAME: names.APP_NAME,
        names.LABEL_COMPONENT: names.COMPONENT_SERVER,
    }
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9]", "_", names.NAME_LABEL)]
    namespaced = objects(chart, {"watchNamespaces": ["ml"], "tritonMetrics": {"podMonitor": {"enabled": True}}})
    assert by_kind(namespaced, "PodMonitor")[0]["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_notes_render_in_every_mode(chart: helm_python.Chart) -> None:
    for values in VALUE_SETS.values():
        notes = [objs[0]["notes"] for path, objs in render(chart, values).items() if path.endswith("NOTES.txt")]
        assert len(notes) == 1 and "kubectl wait --for=condition=Ready" in notes[0]
    assert (
        "install the CRD yourself"
        in render(chart, {"crds": {"enabled": False}})["modelservice-operator/templates/NOTES.txt"][0]["notes"]
    )


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_every_operator_setting_is_set_by_the_chart(chart: helm_python.Chart) -> None:
    """Each MODELSERVICE_* variable the operator reads is set by the chart, and the operator parses the values."""
    import inspect

    from modelservice.controller import main

    read = set(re.findall(r'"(MODELSERVICE_[A-Z_]+)"', inspect.getsource(main)))
    assert len(read) >= 5
    (deployment,) = by_kind(objects(chart, {}), "Deployment")
    env = _env(deployment)
    assert read <= set(env), f"not settable through the chart: {sorted(read - set(env))}"
    runtime = main.runtime_from_env(env)
    assert runtime.config.converter_image == "ghcr.io/modelservice/converter:0.1.0"
    # the chart's defaults are the operator's own
    from modelservice.render import OperatorConfig

    assert runtime.config.converter_image == OperatorConfig().converter_image
    assert runtime.config.converter_gpu_image == OperatorConfig().converter_gpu_image
    custom = {
        "converter": {
            "image": {"repository": "registry.local/conv", "tag": "1.2.3", "pullPolicy": "Always"},
            "gpuImage": {"repository": "registry.local/conv-cuda", "tag": "1.2.3-cuda12"},
        },
        "settings": {
            "clusterDomain": "corp.local",
            "fqdnEndpoints": True,
            "resyncSeconds": 0,
            "workers": 4,
            "prometheusUrl": "http://prometheus-operated.monitoring:9090",
        },
    }
    (deployment,) = by_kind(objects(chart, custom), "Deployment")
    runtime = main.runtime_from_env(_env(deployment))
    assert runtime.config.converter_image == "registry.local/conv:1.2.3"
    assert runtime.config.converter_gpu_image == "registry.local/conv-cuda:1.2.3-cuda12"
    assert runtime.config.converter_image_pull_policy == "Always"
    assert runtime.config.cluster_domain == "corp.local" and runtime.config.fqdn_endpoints is True
    assert runtime.config.prometheus_url == "http://prometheus-operated.monitoring:9090"
    assert runtime.resync_seconds == 0 and runtime.workers == 4


@pytest.mark.parametrize(
    ("converter", "cpu", "gpu"),
    [
        ({}, "ghcr.io/modelservice/converter:0.1.0", "ghcr.io/modelservice/converter:0.1.0-gpu"),
        # the CPU tag alone never moves the GPU image onto the CPU build (or the other way round)
        (
            {"image": {"tag": "0.2.0"}},
            "ghcr.io/modelservice/converter:0.2.0",
            "ghcr.io/modelservice/converter:0.1.0-gpu",
        ),
        (
            {"gpuImage": {"tag": "0.2.0-gpu"}},
            "ghcr.io/modelservice/converter:0.1.0",
            "ghcr.io/modelservice/converter:0.2.0-gpu",
        ),
        (
            {"gpuImage": {"repository": "registry.local/conv", "digest": "sha256:" + "c" * 64, "tag": "ignored"}},
            "ghcr.io/modelservice/converter:0.1.0",
            "registry.local/conv@sha256:" + "c" * 64,
        ),
    ],
)
def test_gpu_converter_image_value(chart: helm_python.Chart, converter: dict[str, Any], cpu: str, gpu: str) -> None:
    """converter.gpuImage reaches the operator as MODELSERVICE_CONVERTER_GPU_IMAGE: the shipped TensorRT sample's
    Job runs it, the CPU (onnx int8) sample's Job the CPU image."""
    from modelservice.api.loader import load_one
    from modelservice.controller import main
    from modelservice.render import build_job

    (deployment,) = by_kind(objects(chart, {"converter": converter}), "Deployment")
    env = _env(deployment)
    assert env["MODELSERVICE_CONVERTER_IMAGE"] == cpu and env["MODELSERVICE_CONVERTER_GPU_IMAGE"] == gpu
    config = main.runtime_from_env(env).config
    images = {}
    for name in ("cpu-onnx-int8", "gpu-tensorrt-fp16"):
        ms = load_one(REPO / "manifests" / "samples" / f"{name}.yaml").model
        images[name] = build_job(ms, config)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert images == {"cpu-onnx-int8": cpu, "gpu-tensorrt-fp16": gpu}


@pytest.mark.parametrize("case", list(VALUE_SETS))
def test_operator_command_line_is_accepted_by_the_cli(chart: helm_python.Chart, case: str) -> None:
    """The Deployment's command parses with the real `modelservice` argument parser, with the chart's ports."""
    import inspect
    import shlex

    from modelservice import cli
    from modelservice.controller import main

    (deployment,) = by_kind(objects(chart, VALUE_SETS[case]), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if container["command"] == ["modelservice"]:
        argv = container["args"]
    else:  # peering: a shell line computing a random priority
        line = container["args"][0].replace("$(python -c 'import secrets; print(1 + secrets.randbelow(1000000))')", "7")
        words = shlex.split(line)
        assert words[:2] == ["exec", "modelservice"]
        argv = words[2:]
    args = cli.build_parser().parse_args(argv)
    assert args.func is cli._cmd_run
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.metrics_port == ports["metrics"] and args.health_port == ports["health"]
    assert (args.namespace or []) == VALUE_SETS[case].get("watchNamespaces", [])
    assert (args.peering is not None) == VALUE_SETS[case].get("peering", {}).get("enabled", False)
    # the probes ask kopf's liveness endpoint at the path the operator serves it on
    assert f":{{health_port}}{container['livenessProbe']['httpGet']['path']}" in inspect.getsource(main)


def test_monitor_schema_check_rejects_a_wrong_field(chart: helm_python.Chart) -> None:
    (monitor,) = by_kind(objects(chart, VALUE_SETS["monitoring"]), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    monitor["spec"]["endpoints"][0]["scheme"] = "gopher"
    errors = crd_object_errors(monitor, prometheus_operator_schema("ServiceMonitor"))
    assert any("intervall" in e for e in errors) and any("gopher" in e for e in errors)
