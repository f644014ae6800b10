"""Text models in the cluster: the Triton Deployment runs the text image (Triton + tokenizers) unless
spec.serving.image says otherwise; the setting reaches the operator from the environment and the Helm chart;
docker/Dockerfile.triton-text installs the library versions the tests run the tokenizer step with."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from _k8s import K8S_VERSIONS, check_restricted, validate_strict
from modelservice.api.models import ModelService
from modelservice.controller.main import config_from_env
from modelservice.render import Observed, OperatorConfig, build_deployment, children, conversion_hash
from modelservice.render.deployment import DEFAULT_TRITON_IMAGE

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelservice-operator"
DOCKERFILE = REPO / "docker" / "Dockerfile.triton-text"
UID = "0b4f7a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def text_ms(task: str = "sentence-embedding", serving: dict[str, Any] | None = None) -> ModelService:
    return ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "minilm", "namespace": "ml", "uid": UID, "generation": 1},
            "spec": {
                "model": {"uri": "s3://models/minilm/", "format": "huggingface", "task": task},
                "conversion": {"target": "onnx", "precision": "int8"},
                "serving": serving or {"maxBatchSize": 32},
            },
        }
    )


def image_of(deployment: dict[str, Any]) -> str:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image: str = container["image"]
    return image


def deployment_of(ms: ModelService, config: OperatorConfig | None = None) -> dict[str, Any]:
    found = [
        obj
        for obj in children(ms, Observed(conversion_job="succeeded"), config or OperatorConfig())
        if obj["kind"] == "Deployment"
    ]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize(
    "task", ["sentence-embedding", "feature-extraction", "text-classification", "token-classification"]
)
def test_text_models_run_the_text_image_and_render_valid_objects(task: str) -> None:
    ms = text_ms(task)
    assert ms.spec.serving.image is None  # nothing set: the operator chooses
    deployment = deployment_of(ms)
    assert image_of(deployment) == OperatorConfig().triton_text_image == "ghcr.io/modelservice/triton-text:0.1.0"
    assert validate_strict(deployment) == list(K8S_VERSIONS)
    pod = deployment["spec"]["template"]["spec"]
    assert check_restricted(pod, deployment["spec"]["template"]["metadata"].get("annotations")) == []
    for obj in children(ms, Observed(conversion_job="succeeded")):
        assert validate_strict(obj), obj["kind"]


def test_the_operator_setting_and_the_users_image() -> None:
    config = OperatorConfig(triton_text_image="registry.local/triton-text:2@sha256:" + "c" * 64)
    assert image_of(deployment_of(text_ms(), config)) == config.triton_text_image
    own = text_ms(serving={"image": "registry.local/my-triton:25.01"})
    assert image_of(deployment_of(own, config)) == "registry.local/my-triton:25.01"
    assert validate_strict(deployment_of(own, config)) == list(K8S_VERSIONS)


def test_other_models_keep_nvidias_image() -> None:
    image = text_ms("image-classification")
    assert image_of(build_deployment(image, conversion_hash(image))) == DEFAULT_TRITON_IMAGE
    digits = ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "digits", "namespace": "ml", "uid": UID},
            "spec": {
                "model": {
                    "uri": "s3://m/d/", "architecture": "model.py:Net",
                    "inputs": [{"name": "x", "shape": [4]}], "outputs": [{"name": "y", "shape": [2]}],
                },
            },
        }
    )  # fmt: skip
    assert image_of(build_deployment(digits, conversion_hash(digits))) == "nvcr.io/nvidia/tritonserver:25.01-py3"


def test_a_stored_object_without_image_round_trips_without_one() -> None:
    """The CRD no longer defaults the image (the API server would fill it in and hide the user's choice)."""
    crd = yaml.safe_load((REPO / "crds" / "modelservice.dev_modelservices.yaml").read_text(encoding="utf-8"))
    serving = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["serving"]
    assert "default" not in serving["properties"]["image"]
    assert "image" not in text_ms().to_api()["spec"].get("serving", {})


def test_environment_sets_the_text_image() -> None:
    assert config_from_env({}).triton_text_image == OperatorConfig().triton_text_image
    assert config_from_env({"MODELSERVICE_TRITON_TEXT_IMAGE": "r.local/tt:9"}).triton_text_image == "r.local/tt:9"
    assert OperatorConfig.from_env({"MODELSERVICE_TRITON_TEXT_IMAGE": "r.local/tt:9"}).triton_text_image == (
        "r.local/tt:9"
    )


def _operator_env(values: dict[str, Any]) -> dict[str, str]:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name="rel", namespace="modelservice-system", is_install=True)
    for template, text in rendered.items():
        if template.endswith("templates/deployment.yaml"):
            (deployment,) = [d for d in yaml.safe_load_all(text) if d]
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            return {e["name"]: e.get("value", "") for e in container["env"]}
    raise AssertionError("the chart renders no operator Deployment")


def test_chart_passes_the_text_image_to_the_operator() -> None:
    env = _operator_env({})
    assert env["MODELSERVICE_TRITON_TEXT_IMAGE"] == OperatorConfig().triton_text_image
    assert config_from_env(env).triton_text_image == OperatorConfig().triton_text_image
    env = _operator_env({"triton": {"textImage": {"repository": "registry.local/tt", "tag": "1.2.3"}}})
    assert env["MODELSERVICE_TRITON_TEXT_IMAGE"] == "registry.local/tt:1.2.3"
    digest = "sha256:" + "d" * 64
    env = _operator_env({"triton": {"textImage": {"repository": "registry.local/tt", "digest": digest}}})
    assert env["MODELSERVICE_TRITON_TEXT_IMAGE"] == f"registry.local/tt@{digest}"


@pytest.mark.parametrize(
    "values",
    [{"triton": {"textImage": {"repository": "x", "tags": "1"}}}, {"triton": {"textimage": {}}},
     {"triton": {"textImage": {"repository": "x", "digest": "1.0"}}}],
)  # fmt: skip
def test_chart_schema_rejects_misspelled_text_image_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(Exception, match=r"(?i)schema|additional|pattern"):
        chart.validate_schema(values)


def _dockerfile() -> str:
    return re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))


def test_text_image_installs_what_the_tests_run() -> None:
    text = _dockerfile()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert args["TRITON_IMAGE"] == DEFAULT_TRITON_IMAGE  # the same Triton release as every other model
    assert args["TOKENIZERS_VERSION"] == importlib.metadata.version("tokenizers")
    assert args["NUMPY_VERSION"] == importlib.metadata.version("numpy")
    assert re.search(r'pip install .*"tokenizers==\$\{TOKENIZERS_VERSION\}" "numpy==\$\{NUMPY_VERSION\}"', text)
    assert re.search(r"^FROM \$\{TRITON_IMAGE\}$", text, re.M)
    users = re.findall(r"^USER (\d+):(\d+)$", text, re.M)
    assert users and int(users[-1][0]) > 0
    # the python steps import only what the image adds (and the backend's own utils)
    for template in ("text_tokenizer.py.tmpl", "text_labels.py.tmpl"):
        source = (REPO / "operator" / "modelservice" / "convert" / template).read_text(encoding="utf-8")
        imported = set(re.findall(r"^\s*(?:from|import) (\w+)", source, re.M))
        assert imported <= {"json", "os", "numpy", "tokenizers", "triton_python_backend_utils"}, imported
