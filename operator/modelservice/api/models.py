"""The ModelService API (modelservice.dev/v1alpha1) as pydantic models.

These models are the single source of truth: the CRD in crds/ is generated from them (see api/crd.py),
the CLI validates files with them, and the operator parses every object it reconciles through them.
YAML/JSON fields are camelCase; Python attributes are snake_case.

Cross-field rules raise ``ValueError("<fieldAlias>: message")`` from model validators so that
``api.errors`` can name the exact field path (``spec.autoscaling.maxReplicas``). Every rule the API server can
check is also in the CRD (``cel()`` rules, schema keywords in ``json_schema_extra``), so that `kubectl apply` and
`modelservice validate` agree; tests/unit/test_crd_parity.py holds one case per validator and names the rules the
CRD cannot express. Defaults (``default=``, ``default_factory=``) become the CRD's structural defaults.
Status models live in ``api.status``, storage and exposure in ``api.exposure``, ``spec.rollout`` in ``api.rollout``,
``spec.autoscaling`` in ``api.scaling``,
``spec.serving`` in ``api.serving``, the shared base (``ApiModel``) in ``api.base``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from modelservice.api.base import QUANTITY as QUANTITY
from modelservice.api.base import ApiModel as ApiModel
from modelservice.api.base import cel
from modelservice.api.exposure import Exposure, Storage
from modelservice.api.rollout import Rollout
from modelservice.api.scaling import QUEUE_TIME_RULE, queue_time_problem
from modelservice.api.scaling import Autoscaling as Autoscaling
from modelservice.api.scaling import MetricTarget as MetricTarget
from modelservice.api.serving import DEFAULT_MAX_BATCH_SIZE as DEFAULT_MAX_BATCH_SIZE
from modelservice.api.serving import RESOURCE_NAMES as RESOURCE_NAMES
from modelservice.api.serving import DynamicBatching as DynamicBatching
from modelservice.api.serving import Resources as Resources
from modelservice.api.serving import Serving as Serving
from modelservice.api.status import Artifact as Artifact
from modelservice.api.status import Condition as Condition
from modelservice.api.status import Endpoints as Endpoints
from modelservice.api.status import ModelServiceStatus as ModelServiceStatus
from modelservice.api.status import Phase as Phase
from modelservice.api.status import VerificationStatus as VerificationStatus

# A ModelService name becomes the prefix of every child name; the longest child name is
# "<name>-convert-<10 hex>" (a Job, whose name also lands in a 63-character label).
MAX_NAME_LENGTH = 40
DNS1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SHA256 = r"^[0-9a-f]{64}$"
TENSOR_NAME = r"^[A-Za-z_][A-Za-z0-9_.:/-]*$"
ARCHITECTURE = r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"

# Schemes a ModelService may name. file:// and bare paths are for the local CLI only (the operator
# has no access to the user's disk); the operator reports them as Stalled.
CLUSTER_SCHEMES = ("pvc", "http", "https", "s3", "gs", "hf")
LOCAL_SCHEMES = ("file",)
URI_PATTERN = r"^((pvc|https?|s3|gs|hf|file)://.+|[^:]+)$"

DType = Literal["FP32", "FP16", "BF16", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "BOOL"]
Format = Literal["pytorch", "torchscript", "exported-program", "onnx", "triton-repository", "huggingface"]
# What a huggingface model does (transformers/Optimum task names where they exist); it fixes inputs and outputs.
Task = Literal[
    "sentence-embedding", "feature-extraction", "text-classification", "token-classification", "image-classification"
]
TEXT_TASKS = ("sentence-embedding", "feature-extraction", "text-classification", "token-classification")
Metric = Literal["accuracy", "top1", "cosine", "maxAbsError"]
Target = Literal["onnx", "torchscript", "tensorrt", "none"]
Precision = Literal["fp32", "fp16", "int8", "auto"]


def uri_scheme(uri: str) -> str:
    """The scheme of a model/data URI; a bare path counts as ``file``."""
    match = re.match(r"^([a-z][a-z0-9+.-]*)://", uri)
    return match.group(1) if match else "file"


# ----------------------------------------------------------------------------------------------- spec: model


class TensorSpec(ApiModel):
    """One input or output tensor, without the batch dimension."""

    name: str = Field(pattern=TENSOR_NAME, max_length=128, description="Tensor name as Triton exposes it.")
    dtype: DType = Field(default="FP32", description="Triton data type (FP32, FP16, INT64, ...).")
    shape: list[int] = Field(
        min_length=1,
        max_length=8,
        description="Dimensions excluding the batch dimension; -1 marks a variable dimension.",
        json_schema_extra={
            "items": {"type": "integer", "minimum": -1},
            **cel(("self.all(d, d != 0)", "dimensions must be positive or -1 (variable)", "")),
        },
    )

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, shape: list[int]) -> list[int]:
        for dim in shape:
            if dim == 0 or dim < -1:
                raise ValueError(f"dimensions must be positive or -1 (variable), got {dim}")
        return shape


class Credentials(ApiModel):
    """Where the operator finds credentials for the model source."""

    secret_name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Secret in the ModelService's namespace; its keys become the fetch step's environment "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...).",
    )


class ModelSource(ApiModel):
    """Where the model comes from and what it looks like."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.format) || self.format != 'pytorch' || has(self.architecture)",
                "architecture is required when format is pytorch",
                ".architecture",
            ),
            (
                "!has(self.architecture) || (has(self.format) && self.format == 'pytorch') || !has(self.format)",
                "architecture is only valid when format is pytorch",
                ".architecture",
            ),
            (
                "!has(self.format) || self.format != 'huggingface' || has(self.task)",
                "task is required when format is huggingface",
                ".task",
            ),
            (
                "!has(self.task) || (has(self.format) && self.format == 'huggingface')",
                "task is only valid when format is huggingface",
                ".task",
            ),
            (
                "!has(self.maxSequenceLength) || (has(self.task) && self.task != 'image-classification')",
                "maxSequenceLength is only valid for a text task",
                ".maxSequenceLength",
            ),
            (
                "!has(self.format) || !(self.format in ['pytorch', 'torchscript', 'exported-program']) "
                "|| (has(self.inputs) && self.inputs.size() > 0)",
                "inputs are required when format is pytorch, torchscript or exported-program",
                ".inputs",
            ),
            (
                "(!has(self.inputs) || self.inputs.all(i, self.inputs.exists_one(j, j.name == i.name) "
                "&& (!has(self.outputs) || !self.outputs.exists(o, o.name == i.name)))) "
                "&& (!has(self.outputs) || self.outputs.all(o, self.outputs.exists_one(p, p.name == o.name)))",
                "tensor names must be unique across inputs and outputs",
                ".inputs",
            ),
        )
    )

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=URI_PATTERN,
        description="pvc://CLAIM/PATH, http(s)://, s3://BUCKET/KEY, gs://BUCKET/KEY, hf://ORG/NAME[@REVISION] "
        "(format huggingface: the Hugging Face Hub, or HF_ENDPOINT; token HF_TOKEN from credentials); for the "
        "local CLI also file:// or a path (relative to the YAML file's folder). A folder, a file, or a .tar.gz/.zip "
        "archive.",
    )
    format: Format = Field(
        default="pytorch",
        description="pytorch (state dict + architecture), torchscript, exported-program (torch.export .pt2), "
        "onnx, triton-repository (served as is), or huggingface (a save_pretrained or sentence-transformers folder).",
    )
    task: Task | None = Field(
        default=None,
        description="Format huggingface: sentence-embedding (pooling/normalisation from the sentence-transformers "
        "config; output embedding), feature-extraction (last hidden state), text-classification, "
        "token-classification (output logits) or image-classification. Inputs and outputs follow from it.",
    )
    max_sequence_length: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Text tasks: the longest token sequence served (longer texts are truncated); default from the "
        "model's config (max_position_embeddings, or the sentence-transformers max_seq_length).",
    )
    architecture: str | None = Field(
        default=None,
        pattern=ARCHITECTURE,
        description="Format pytorch only: FILE_IN_SOURCE:CALLABLE that builds the module, e.g. model.py:DigitsNet.",
    )
    weights: str | None = Field(
        default=None,
        max_length=1024,
        description="File inside the source holding the state dict; .safetensors preferred, .pt/.pth are loaded "
        "with torch.load(weights_only=True).",
        json_schema_extra=cel(
            (
                "!self.startsWith('/') && self != '..' && !self.startsWith('../') && !self.endsWith('/..') "
                "&& !self.contains('/../')",
                "must be a relative path inside the model source",
                "",
            )
        ),
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256, description="Expected SHA-256 (hex) of the fetched file or archive."
    )
    credentials: Credentials | None = Field(default=None, description="Credentials for s3://, gs:// or http(s)://.")
    inputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=64,
        description="Input tensors; inferred from ONNX models when empty.",
    )
    outputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=64,
        description="Output tensors; inferred from ONNX models when empty.",
    )

    @field_validator("weights")
    @classmethod
    def _relative_weights(cls, weights: str | None) -> str | None:
        if weights is not None and (weights.startswith("/") or ".." in weights.split("/")):
            raise ValueError("must be a relative path inside the model source")
        return weights

    @model_validator(mode="after")
    def _format_rules(self) -> ModelSource:
        if self.format == "pytorch" and not self.architecture:
            raise ValueError("architecture: required when format is pytorch (FILE.py:CALLABLE)")
        if self.format != "pytorch" and self.architecture:
            raise ValueError("architecture: only valid when format is pytorch")
        if self.format in ("pytorch", "torchscript", "exported-program") and not self.inputs:
            raise ValueError(f"inputs: required when format is {self.format} (name, dtype, shape of each input)")
        if self.format == "huggingface" and self.task is None:
            raise ValueError("task: required when format is huggingface (sentence-embedding, text-classification, ...)")
        if self.task is not None and self.format != "huggingface":
            raise ValueError("task: only valid when format is huggingface")
        if self.max_sequence_length is not None and (self.task is None or self.task not in TEXT_TASKS):
            raise ValueError("maxSequenceLength: only valid for a text task")
        names = [t.name for t in self.inputs] + [t.name for t in self.outputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"inputs: tensor names must be unique, repeated: {', '.join(duplicates)}")
        return self


# ------------------------------------------------------------------------------------------ spec: conversion


class Calibration(ApiModel):
    """Representative inputs for static int8 quantization."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=URI_PATTERN,
        description="A .npz file whose array 'x' (or the first array) holds calibration inputs.",
    )
    samples: int = Field(default=256, ge=1, le=100_000, description="How many samples to calibrate with.")


class Quantization(ApiModel):
    """How int8 weights/activations are computed."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.method) || self.method != 'static' || has(self.calibration)",
                "calibration is required when method is static",
                ".calibration",
            ),
        )
    )

    method: Literal["dynamic", "static"] = Field(
        default="dynamic",
        description="dynamic: int8 weights, activations quantized at run time (ONNX Runtime quantize_dynamic); "
        "static: QDQ with activation ranges from calibration data (quantize_static).",
    )
    calibration: Calibration | None = Field(default=None, description="Required for method static.")

    @model_validator(mode="after")
    def _static_needs_calibration(self) -> Quantization:
        if self.method == "static" and self.calibration is None:
            raise ValueError("calibration: required when method is static")
        return self


class Verification(ApiModel):
    """How the converted model is checked against the original."""

    tolerance: float = Field(
        default=0.01,
        gt=0,
        le=1000,
        description="Largest absolute output difference accepted (fp32/fp16 targets).",
    )
    accuracy_budget: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest accuracy drop accepted, as a fraction (0.01 = 1 percentage point). Also bounds the "
        "candidates precision auto may pick.",
    )
    data_uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=URI_PATTERN,
        description="Labelled .npz with arrays x and y; text models also .txt (one text per line) or .jsonl "
        '({"text": ..., "label": ...}), tokenized with the model\'s tokenizer. Without it, seeded random inputs.',
    )
    metric: Metric | None = Field(
        default=None,
        description="How a candidate is judged: accuracy (labels), top1 (agreement with the original), cosine "
        "(minimum cosine similarity to the original over the samples, for embeddings), maxAbsError. Default "
        "follows the task: cosine for sentence-embedding/feature-extraction, accuracy or top1 for classifiers.",
    )
    min_cosine: float = Field(
        default=0.99, gt=0, le=1, description="metric cosine: the lowest cosine similarity accepted per sample."
    )
    samples: int = Field(default=512, ge=1, le=1_000_000, description="Largest number of samples verified.")
    enabled: bool = Field(default=True, description="Turn verification off (not recommended).")


class Conversion(ApiModel):
    """What the model is converted to before Triton serves it."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.target) || self.target != 'none' || !has(self.precision) || self.precision == 'fp32'",
                "precision must be fp32 when target is none",
                ".precision",
            ),
            (
                "!has(self.target) || self.target != 'torchscript' || !has(self.precision) "
                "|| !(self.precision in ['int8', 'auto'])",
                "int8 and auto precision need target onnx or tensorrt",
                ".precision",
            ),
        )
    )

    target: Target = Field(
        default="onnx", description="onnx, torchscript, tensorrt (GPU), or none (serve the source as is)."
    )
    precision: Precision = Field(
        default="fp32", description="fp32, fp16, int8, or auto (fastest variant within accuracyBudget)."
    )
    quantization: Quantization = Field(default_factory=Quantization, description="int8 settings.")
    verification: Verification = Field(default_factory=Verification, description="Parity and accuracy checks.")
    opset: int = Field(
        default=18,
        ge=13,
        le=23,
        description="ONNX opset for the onnx and tensorrt targets. The torch.export-based exporter emits 18 or "
        "newer, so a lower value is raised to 18 (the report says so) unless the TorchScript exporter is the fallback.",
    )

    @model_validator(mode="after")
    def _target_rules(self) -> Conversion:
        if self.target == "none" and self.precision != "fp32":
            raise ValueError("precision: must be fp32 when target is none (nothing is converted)")
        if self.target == "torchscript" and self.precision in ("int8", "auto"):
            raise ValueError(f"precision: {self.precision} needs target onnx or tensorrt")
        return self


# ---------------------------------------------------------------------------------------------------- spec


class ModelServiceSpec(ApiModel):
    """Desired state of a ModelService."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.model.format) || !(self.model.format in ['pytorch', 'exported-program', 'huggingface']) "
                "|| !has(self.conversion) || !has(self.conversion.target) || self.conversion.target != 'none'",
                "target none cannot serve a pytorch, exported-program or huggingface model",
                ".conversion",
            ),
            (
                "!has(self.model.format) || self.model.format != 'triton-repository' || "
                "(has(self.conversion) && has(self.conversion.target) && self.conversion.target == 'none')",
                "a triton-repository model is served as is: set conversion.target none",
                ".conversion",
            ),
            (
                "!has(self.conversion) || !has(self.conversion.target) || self.conversion.target != 'tensorrt' "
                "|| (has(self.serving) && has(self.serving.resources) && has(self.serving.resources.gpu) "
                "&& self.serving.resources.gpu >= 1)",
                "target tensorrt needs serving.resources.gpu >= 1",
                ".serving",
            ),
            (
                "!has(self.model.task) || self.model.task == 'image-classification' || !has(self.serving) "
                "|| !has(self.serving.maxBatchSize) || self.serving.maxBatchSize > 0",
                "a text model is served as an ensemble whose tokenizer batches texts: maxBatchSize must be > 0",
                ".serving.maxBatchSize",
            ),
            (
                "!has(self.model.format) || self.model.format != 'onnx' || !has(self.conversion) "
                "|| !has(self.conversion.target) || self.conversion.target != 'torchscript'",
                "an onnx model cannot be converted to torchscript",
                ".conversion",
            ),
            (
                "!has(self.conversion) || !has(self.conversion.target) || self.conversion.target != 'torchscript' "
                "|| !has(self.conversion.precision) || self.conversion.precision != 'fp16' "
                "|| (has(self.serving) && has(self.serving.resources) && has(self.serving.resources.gpu) "
                "&& self.serving.resources.gpu >= 1)",
                "fp16 torchscript needs serving.resources.gpu >= 1",
                ".conversion",
            ),
            QUEUE_TIME_RULE,
        )
    )

    model: ModelSource = Field(description="The model to fetch.")
    conversion: Conversion = Field(default_factory=Conversion, description="Conversion, quantization, verification.")
    serving: Serving = Field(default_factory=Serving, description="How Triton serves the model.")
    autoscaling: Autoscaling | None = Field(default=None, description="Autoscaling; absent means fixed replicas.")
    storage: Storage = Field(default_factory=Storage, description="Where converted repositories live.")
    exposure: Exposure = Field(default_factory=Exposure, description="Service, Ingress, HTTPRoute.")
    rollout: Rollout | None = Field(
        default=None,
        description="How a new revision (a changed conversion hash) replaces the served one: canary steps judged on "
        "live metrics, or immediate; absent: it switches at once and no history is kept.",
    )
    revision_history_limit: int = Field(
        default=5,
        ge=0,
        le=50,
        description="Revisions kept in status.revisions (with spec.rollout): re-applying the spec of one serves "
        "it again without converting; those serving are always kept.",
    )

    @model_validator(mode="after")
    def _cross_section_rules(self) -> ModelServiceSpec:
        fmt, target = self.model.format, self.conversion.target
        if fmt in ("pytorch", "exported-program", "huggingface") and target == "none":
            raise ValueError(f"conversion: target none cannot serve format {fmt}; choose onnx, torchscript or tensorrt")
        if fmt == "triton-repository" and target != "none":
            raise ValueError("conversion: format triton-repository is served as is; set target none")
        if fmt == "onnx" and target == "torchscript":
            raise ValueError("conversion: an onnx model cannot be converted to torchscript")
        if self.model.task in TEXT_TASKS and self.serving.max_batch_size == 0:
            raise ValueError(
                "serving: maxBatchSize must be > 0 for a text model (its ensemble's tokenizer step batches texts)"
            )
        if target == "tensorrt" and self.serving.resources.gpu < 1:
            raise ValueError("serving: target tensorrt needs a GPU (serving.resources.gpu >= 1)")
        if self.conversion.precision == "fp16" and target == "torchscript" and self.serving.resources.gpu < 1:
            raise ValueError("conversion: fp16 torchscript needs a GPU (serving.resources.gpu >= 1)")
        problem = queue_time_problem(self.autoscaling, self.serving.latency_target is not None)
        if problem:
            raise ValueError(problem)
        return self


# ---------------------------------------------------------------------------------------------- the object


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=DNS1035, max_length=MAX_NAME_LENGTH)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelService(ApiModel):
    """A ModelService as found in a file or in the cluster."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["modelservice.dev/v1alpha1"] = Field(default="modelservice.dev/v1alpha1")
    kind: Literal["ModelService"] = Field(default="ModelService")
    metadata: ObjectMeta
    spec: ModelServiceSpec
    status: ModelServiceStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ModelService:
        """Parse an object as the API server (or kopf) hands it over: typed JSON, validated strictly."""
        return cls.model_validate(dict(body), strict=True)
