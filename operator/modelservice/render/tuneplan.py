"""The tuning hash and the pure rules that decide when the profiling Job runs and which tuned config Triton serves.

Tuning (issue 11) runs between conversion and deployment: the profiling Job (``tunejob.py``) loads candidate
configurations of the converted repository ``/models/<conversion hash>`` into a Triton on the serving hardware,
measures them and writes the winner's config.pbtxt into that repository. The Deployment carries the tuning hash
it serves in ``TUNING_HASH_ANNOTATION`` (on itself and its pod template: a new value restarts the pods, which
then read the new config.pbtxt). ``plan_tuning`` decides, statelessly, from the conversion ``Plan``:

- which (conversion hash, tuning hash) the Deployment serves, and
- whether the profiling Job of the spec's current tuning hash is wanted.

Without tuning wanted (``tuning_wanted``) the answer is ``plan``'s, unchanged, and no tuning annotation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from modelservice.api.models import ModelService
from modelservice.render.deployment import triton_image
from modelservice.render.names import (
    HASH_LENGTH,
    TUNING_HASH_ANNOTATION,
    conversion_hash,
    needs_conversion,
    tune_job_name,
)
from modelservice.render.plan import DEFAULT_CONFIG, JobState, OperatorConfig, Plan

# Bump when what the profiler writes changes in a way that must re-tune everything.
TUNING_SCHEMA = "v1"


# ------------------------------------------------------------------------------------------- the hash


def tuning_inputs(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """Everything that changes the tuned config: the converted repository (its conversion hash), the latency
    target, the search settings, and what the measurements run on: the Triton image (an operator upgrade that
    changes the default image re-tunes), the GPUs, the CPU request/limit and the node selector (the hardware).

    Replicas, memory, autoscaling and exposure do not change it. The latency target and the search settings are
    not in ``conversion_inputs``: changing them re-tunes without converting again.
    """
    serving = ms.spec.serving
    resources = serving.resources
    target = serving.latency_target
    return {
        "schema": TUNING_SCHEMA,
        "conversionHash": conversion_hash(ms),
        "latencyTarget": target.to_api() if target is not None else None,
        "tuning": serving.tuning.to_api(),
        "image": triton_image(ms, config),
        "gpu": resources.gpu,
        "cpu": {"request": resources.requests.get("cpu"), "limit": resources.limits.get("cpu")},
        "nodeSelector": dict(sorted(serving.node_selector.items())),
    }


def tuning_hash(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> str:
    """10 hex characters of SHA-256 over the canonical JSON of ``tuning_inputs``."""
    canonical = json.dumps(tuning_inputs(ms, config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def tuning_wanted(ms: ModelService) -> bool:
    """Whether a profiling Job tunes the served config: a converted model (the profiler writes into the
    conversion's repository; a triton-repository source is served as the user wrote it), a latency target set,
    and ``spec.serving.tuning.enabled``."""
    serving = ms.spec.serving
    return needs_conversion(ms) and serving.latency_target is not None and serving.tuning.enabled


def current_tune_job_name(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> str:
    """The profiling Job (and ConfigMap) name of the spec's current tuning hash: the Job to observe."""
    return tune_job_name(ms, tuning_hash(ms, config))


def served_tuning_hash(deployment: dict[str, Any] | None) -> str | None:
    """The tuning hash an existing Deployment serves (its ``TUNING_HASH_ANNOTATION``), or None: none, or untuned."""
    if deployment is None:
        return None
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(TUNING_HASH_ANNOTATION)
    return value if isinstance(value, str) and value else None


# ------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class TunePlan:
    """Which (conversion hash, tuning hash) the Deployment serves, and whether the profiling Job runs.

    wanted:               ``tuning_wanted(ms)``.
    desired_tuning_hash:  the spec's tuning hash (None when tuning is not wanted).
    served_tuning_hash:   the tuning hash the existing Deployment serves (None: none, untuned, or no Deployment).
    job_wanted:           render the profiling Job (and its ConfigMap) of ``desired_tuning_hash``.
    tune_state:           that Job's state when it is wanted (None: not created yet, or not wanted).
    deploy_hash:          the conversion hash the rendered Deployment serves; None: render no Deployment (yet).
                          Use it instead of ``Plan.deploy_hash``: it holds the Deployment back while tuning.
    deploy_tuning_hash:   the ``TUNING_HASH_ANNOTATION`` value of the rendered Deployment; None: leave it out.
    """

    wanted: bool
    desired_tuning_hash: str | None
    served_tuning_hash: str | None
    job_wanted: bool
    tune_state: JobState | None
    deploy_hash: str | None
    deploy_tuning_hash: str | None

    @property
    def tuning(self) -> bool:
        """The profiling Job of the current tuning hash is running or about to be created."""
        return self.job_wanted and self.tune_state in (None, "running")

    @property
    def tuning_failed(self) -> bool:
        """The profiling Job failed: Triton serves the config it had (untuned on a new conversion); report it."""
        return self.job_wanted and self.tune_state == "failed"

    @property
    def tuned(self) -> bool:
        """Triton serves (or is being rolled to) the config tuned for the current spec."""
        return (
            self.wanted and self.deploy_tuning_hash is not None and self.deploy_tuning_hash == self.desired_tuning_hash
        )


def plan_tuning(
    ms: ModelService,
    conversion: Plan,
    tune_job: JobState | None,
    served_tuning: str | None,
    config: OperatorConfig = DEFAULT_CONFIG,
) -> TunePlan:
    """Decide statelessly whether the profiling Job runs and which (conversion hash, tuning hash) is served.

    ``conversion`` is ``plan(ms, observed)``; ``tune_job`` the state of the Job named ``current_tune_job_name``
    (None: no such Job); ``served_tuning`` is ``served_tuning_hash(observed.deployment)``.

    - Tuning not wanted: ``plan``'s decision as it is, without a tuning annotation (a Deployment that served a
      tuned config rolls once; the tuned config.pbtxt stays in that conversion's repository, see tunejob.py).
    - Conversion first: while ``plan`` does not deploy the desired conversion hash (its Job is running or
      failed) no profiling Job runs, and the Deployment keeps what it serves (none before the first conversion).
    - Then the Job of the current tuning hash is wanted unless the Deployment serves exactly (desired conversion
      hash, current tuning hash): an unchanged spec never re-tunes, and a succeeded Job removed by its TTL is
      not re-created.
    - After a conversion, the Deployment moves to the new conversion hash only once that Job succeeded (as for
      conversion); it then carries the new tuning hash. A changed latency target alone (same conversion hash)
      re-tunes while the Deployment keeps serving, and rolls it (the tuning annotation changes) once the Job
      succeeded. A hash ``plan`` serves at once, without a conversion Job (a rollback to a revision kept on the
      claim), is served at once here too, untuned until its profiling Job succeeded.
    - A failed tuning never blocks serving: when the Job failed, the Deployment moves to the new conversion
      hash anyway, untuned (no tuning annotation), or keeps the config it serves on the same conversion hash
      (the profiler writes config.pbtxt only at success). The failed Job stays wanted, so it is reported, until
      the spec changes or it is removed (its TTL; the operator then creates it again: a slow retry).
    """
    served = conversion.served_hash
    if not tuning_wanted(ms):
        return TunePlan(False, None, served_tuning, False, None, conversion.deploy_hash, None)
    desired = conversion.desired_hash
    wanted_tuning = tuning_hash(ms, config)
    # What the Deployment serves now; its tuning annotation belongs to the conversion hash it serves.
    keep = (served, served_tuning if served is not None else None)
    if conversion.deploy_hash != desired:  # conversion first
        return TunePlan(True, wanted_tuning, served_tuning, False, None, conversion.deploy_hash, keep[1])
    if served == desired and served_tuning == wanted_tuning:
        return TunePlan(True, wanted_tuning, served_tuning, False, None, desired, wanted_tuning)
    deploy: tuple[str | None, str | None]
    if tune_job == "succeeded":
        deploy = (desired, wanted_tuning)
    elif served == desired:  # re-tuning (or failed to) on the repository served: keep serving it
        deploy = keep
    elif tune_job == "failed" or not conversion.job_wanted:  # never blocks serving; a rollback serves at once
        deploy = (desired, None)
    else:  # a new conversion waits for its tuning, serving the old hash (if any) meanwhile
        deploy = keep
    return TunePlan(True, wanted_tuning, served_tuning, True, tune_job, *deploy)
