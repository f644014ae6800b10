"""Operator settings, what the operator observed, and the pure rules that decide which hash Triton serves.

See the package docstring (``modelservice.render``) for the rules in prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from modelservice.api.errors import UserError
from modelservice.api.models import ModelService
from modelservice.render.names import HASH_ANNOTATION, conversion_hash, job_name, needs_conversion

JobState = Literal["running", "succeeded", "failed"]


@dataclass(frozen=True)
class OperatorConfig:
    """Operator-wide settings (environment variables / flags of ``modelservice run``)."""

    # The converter image of conversion Jobs that need no GPU (docker/Dockerfile.converter: torch CPU).
    converter_image: str = "ghcr.io/modelservice/converter:0.1.0"
    # The converter image of conversion Jobs that need a GPU (render/job.py: conversion_needs_gpu, i.e. target
    # tensorrt or torchscript fp16): docker/Dockerfile.converter-gpu (CUDA, TensorRT), tagged <version>-gpu.
    converter_gpu_image: str = "ghcr.io/modelservice/converter:0.1.0-gpu"
    # Pull policy of both converter images.
    converter_image_pull_policy: str = "IfNotPresent"
    # The Triton image of text models (format huggingface, a text task) that set no spec.serving.image:
    # docker/Dockerfile.triton-text, NVIDIA's tritonserver plus the tokenizers library their tokenizer step imports.
    triton_text_image: str = "ghcr.io/modelservice/triton-text:0.1.0"
    # Where pvc:// claims are mounted inside conversion Jobs (convert/fetch.py maps
    # pvc://CLAIM/PATH -> $MODELSERVICE_PVC_ROOT/CLAIM/PATH).
    pvc_root: str = "/mnt/pvc"
    cluster_domain: str = "cluster.local"
    # Endpoints as <svc>.<ns>.svc (DESIGN.md's form) or, when True, <svc>.<ns>.svc.<cluster_domain>.
    fqdn_endpoints: bool = False
    # Conversion Job limits.
    job_backoff_limit: int = 2
    job_active_deadline_seconds: int = 2 * 3600
    job_ttl_seconds_after_finished: int = 24 * 3600
    converter_requests: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    converter_limits: dict[str, str] = field(default_factory=lambda: {"memory": "8Gi"})
    # uid/gid of the converter and Triton containers (Triton's image runs as uid 1000).
    run_as_user: int = 1000
    # Triton startup budget: startupProbe period x failureThreshold (default 10 s x 180 = 30 min).
    startup_period_seconds: int = 10
    startup_failure_threshold: int = 180
    # Whether the operator-created model claim is owned by the ModelService (deleted with it).
    own_created_pvc: bool = True
    # Prometheus that scrapes Triton (``--prometheus-url``): canary analysis queries it, KEDA triggers point at it.
    # Empty: canaries are judged by replica readiness only (status says so).
    prometheus_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorConfig:
        """Settings from ``MODELSERVICE_<FIELD>`` variables (e.g. ``MODELSERVICE_CONVERTER_IMAGE``,
        ``MODELSERVICE_JOB_BACKOFF_LIMIT``); scalar fields only, unset variables keep the defaults.
        Raises UserError naming the variable for a value of the wrong type."""
        config = cls()
        changes: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(f"MODELSERVICE_{item.name.upper()}")
            if raw is None:
                continue
            current = getattr(config, item.name)
            try:
                changes[item.name] = _convert(raw, current)
            except ValueError as exc:
                raise UserError(f"MODELSERVICE_{item.name.upper()}={raw!r}: {exc}") from None
        return replace(config, **changes)


def _convert(raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if isinstance(current, int):
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(current, str):
        if not raw:
            raise ValueError("must not be empty")
        return raw
    raise ValueError("not settable from the environment")


DEFAULT_CONFIG = OperatorConfig()


@dataclass(frozen=True)
class Observed:
    """What the operator observed in the cluster (the defaults mean: nothing exists yet).

    deployment:        the existing Triton Deployment (as the API returned it), or None.
    conversion_job:    state of the conversion Job of the spec's *current* hash (``job_name(ms)``), or None
                       when no such Job exists; use ``job_state(job)`` to compute it from a Job object.
    pvc_external:      True when the model claim (``pvc_name(ms)``) exists and is not owned by this
                       ModelService: it is used as is and no PersistentVolumeClaim is rendered.
    revisions_available: hashes whose converted repositories are on the claim already (the revisions in
                       ``status.revisions``, spec.rollout): serving one of them again needs no conversion Job.
    tune_job:          state of the profiling Job of the spec's current tuning hash
                       (``tuneplan.current_tune_job_name``), or None: no such Job, or tuning not wanted.
    """

    deployment: dict[str, Any] | None = None
    conversion_job: JobState | None = None
    pvc_external: bool = False
    revisions_available: frozenset[str] = frozenset()
    tune_job: JobState | None = None

    @property
    def served_hash(self) -> str | None:
        """The conversion hash the existing Deployment serves (its annotation), or None."""
        if self.deployment is None:
            return None
        annotations = (self.deployment.get("metadata") or {}).get("annotations") or {}
        value = annotations.get(HASH_ANNOTATION)
        return value if isinstance(value, str) and value else None


def job_state(job: dict[str, Any]) -> JobState:
    """A Job object's state from its status: conditions Complete/Failed (True), else running."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


@dataclass(frozen=True)
class Plan:
    """What the operator should do for one ModelService, from its spec and what it observed.

    desired_hash:  the spec's conversion hash.
    served_hash:   the hash the existing Deployment serves (None: no Deployment).
    deploy_hash:   the hash the rendered Deployment serves; None: render no Deployment (yet).
    job_wanted:    render the conversion Job (and its ConfigMap) of desired_hash.
    """

    desired_hash: str
    served_hash: str | None
    deploy_hash: str | None
    job_wanted: bool
    conversion_state: JobState | None

    @property
    def converting(self) -> bool:
        """A conversion to a hash not yet served is running or about to be created."""
        return self.job_wanted and self.conversion_state in (None, "running")

    @property
    def conversion_failed(self) -> bool:
        return self.job_wanted and self.conversion_state == "failed"

    @property
    def up_to_date(self) -> bool:
        """Triton serves (or is being rolled to) the spec's current hash."""
        return self.deploy_hash == self.desired_hash


def plan(ms: ModelService, observed: Observed) -> Plan:
    """Decide statelessly which hash the Deployment serves and whether a conversion Job is wanted.

    - No conversion needed (triton-repository source): the Deployment serves the current spec at once.
    - The Job of the current hash is wanted unless the Deployment already serves that hash (so a Job removed
      by its TTL after success is never re-created, and an unchanged spec never re-converts).
    - A hash in ``revisions_available`` (an older revision kept on the claim, spec.rollout) is served again at
      once, without a Job: a GitOps revert rolls back without waiting for a conversion.
    - The Deployment moves to the current hash only once that hash's Job succeeded; until then it keeps
      serving the hash it has (a running Triton keeps the old model), and it does not exist before the first
      successful conversion.
    """
    desired = conversion_hash(ms)
    served = observed.served_hash
    if not needs_conversion(ms):
        return Plan(desired, served, desired, job_wanted=False, conversion_state=None)
    if served != desired and desired in observed.revisions_available:
        return Plan(desired, served, desired, job_wanted=False, conversion_state=None)  # a rollback
    job_wanted = served != desired
    state = observed.conversion_job if job_wanted else None
    deploy = desired if (served == desired or state == "succeeded") else served
    return Plan(desired, served, deploy, job_wanted=job_wanted, conversion_state=state)


def current_job_name(ms: ModelService) -> str:
    """The conversion Job name the operator should look up to fill ``Observed.conversion_job``."""
    return job_name(ms)
