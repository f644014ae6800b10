"""Status of a ModelService: what the operator observed (phase, kstatus conditions, artifact, endpoints)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelservice.api.base import ApiModel
from modelservice.api.tuning import Performance

Phase = Literal["Pending", "Converting", "Deploying", "Ready", "Degraded", "Failed"]


class Condition(ApiModel):
    """A kstatus-style condition."""

    type: str = Field(description="Ready, Converted, Available, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Generation this condition is about.")


class Artifact(ApiModel):
    """The converted model the replicas serve."""

    uri: str | None = Field(default=None, description="Where the model repository is.")
    format: str | None = Field(default=None, description="onnx, torchscript, tensorrt, ...")
    precision: str | None = Field(default=None, description="Chosen precision.")
    sha256: str | None = Field(default=None, description="Digest of the artifact.")
    size_bytes: int | None = Field(default=None, description="Artifact size.")
    source_sha256: str | None = Field(default=None, description="Digest of the fetched source.")


class VerificationStatus(ApiModel):
    """What verification measured."""

    max_abs_error: float | None = Field(default=None, description="Largest absolute output difference.")
    max_rel_error: float | None = Field(default=None, description="Largest relative output difference.")
    accuracy: float | None = Field(default=None, description="Accuracy of the converted model on dataUri.")
    reference_accuracy: float | None = Field(default=None, description="Accuracy of the original model.")
    metric: str | None = Field(default=None, description="The metric that judged the artifact.")
    min_cosine: float | None = Field(default=None, description="Lowest cosine similarity to the original.")
    top1_agreement: float | None = Field(default=None, description="Share of samples whose top-1 class is kept.")
    passed: bool | None = Field(default=None, description="Whether every check passed.")


class Endpoints(ApiModel):
    """Where Triton answers."""

    http: str | None = Field(default=None, description="KServe v2 HTTP endpoint.")
    grpc: str | None = Field(default=None, description="KServe v2 gRPC endpoint (host:port).")
    metrics: str | None = Field(default=None, description="Prometheus metrics URL.")
    external: str | None = Field(default=None, description="Ingress/HTTPRoute URL, when one exists.")


RolloutPhase = Literal["Progressing", "Paused", "Promoted", "Aborted"]
Verdict = Literal["Passed", "Failed", "Inconclusive"]
Outcome = Literal["Promoted", "Aborted", "Superseded", "RolledBack", "Serving"]
Role = Literal["Stable", "Canary"]


class RolloutAnalysis(ApiModel):
    """The last analysis of the new revision, with its numbers and what they meant."""

    at: str = Field(description="When it was taken (RFC 3339).")
    error_rate: float | None = Field(default=None, description="Failed / all inferences of the new revision.")
    latency_ratio: float | None = Field(default=None, description="New revision's latency / the stable's.")
    requests: int = Field(default=0, description="Requests of the new revision in the window.")
    verdict: Verdict = Field(description="Passed, Failed, or Inconclusive (too little traffic).")
    message: str = Field(default="", description="What was compared with what.")


class RolloutStatus(ApiModel):
    """Where a rollout stands (spec.rollout)."""

    phase: RolloutPhase = Field(description="Progressing, Paused (a step is held), Promoted or Aborted.")
    step: int = Field(default=0, description="Current step, 1-based; 0 before the first weight (shadow traffic).")
    weight: int = Field(default=0, description="Percent of requests the new revision gets (100 once promoted).")
    mirror_percent: int | None = Field(default=None, description="Percent of requests shadowed to the new revision.")
    stable_revision: str | None = Field(default=None, description="Hash of the revision that serves the rest.")
    canary_revision: str | None = Field(default=None, description="Hash of the new revision under analysis.")
    step_started_at: str | None = Field(default=None, description="When the current step began (RFC 3339).")
    analysis: RolloutAnalysis | None = Field(default=None, description="The last analysis.")
    message: str = Field(default="", description="What the rollout does now.")


class RevisionRecord(ApiModel):
    """A revision that served (or serves): its artifact, verification, when it served and how that ended."""

    hash: str = Field(description="Conversion hash of the revision.")
    precision: str | None = Field(default=None, description="Precision of its artifact.")
    artifact_sha256: str | None = Field(default=None, description="Digest of its artifact.")
    verification: VerificationStatus | None = Field(default=None, description="Its verification results.")
    role: Role = Field(default="Stable", description="Stable (served everything once) or Canary (never did).")
    served_from: str | None = Field(default=None, description="When it last began serving (RFC 3339).")
    served_until: str | None = Field(default=None, description="When it last stopped serving; unset: it serves.")
    outcome: Outcome = Field(
        description="Serving, or how its last serving ended: Promoted (a canary that passed and serves everything), "
        "Aborted, Superseded, RolledBack."
    )


class ModelServiceStatus(ApiModel):
    """Observed state of a ModelService."""

    phase: Phase | None = Field(default=None, description="Pending, Converting, Deploying, Ready, Degraded, Failed.")
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="kstatus conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    artifact: Artifact | None = Field(default=None, description="The served artifact.")
    verification: VerificationStatus | None = Field(default=None, description="Verification results.")
    replicas: int | None = Field(default=None, description="Triton replicas (scale subresource).")
    ready_replicas: int | None = Field(default=None, description="Ready Triton replicas.")
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    endpoints: Endpoints | None = Field(default=None, description="Where to reach the model.")
    conversion_job: str | None = Field(default=None, description="Name of the current conversion Job.")
    performance: Performance | None = Field(
        default=None, description="What tuning measured (spec.serving.latencyTarget): config, throughput, latency."
    )
    tune_job: str | None = Field(
        default=None, description="Name of the profiling Job status.performance comes from (its tuning hash)."
    )
    rollout: RolloutStatus | None = Field(default=None, description="The rollout of a new revision (spec.rollout).")
    # No default (unlike conditions): a schema default would make the API server store ``revisions: []`` in
    # every status, and the operator, which writes none until a rollout records one, would patch it away each time.
    revisions: list[RevisionRecord] | None = Field(
        default=None, description="Revisions that served, newest first (spec.revisionHistoryLimit)."
    )
