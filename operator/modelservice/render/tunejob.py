"""The profiling Job: ``modelservice tune`` beside a Triton on the serving hardware, tuning ``/models/<hash>``.

One pod, two containers sharing the model claim (issue 11):

- ``triton``: the serving image (``triton_image``: spec.serving.image, the text image for text models, else
  NVIDIA's), the same GPUs, nodeSelector, tolerations and affinity as the Deployment (it measures the hardware
  that serves), model-control-mode ``explicit`` (the profiler loads each candidate config through the
  model-control API), every endpoint bound to 127.0.0.1 only (nothing outside the pod can load models), the
  claim mounted read-only. It is a native sidecar (an init container with ``restartPolicy: Always``,
  Kubernetes >= 1.29): it starts first, and the kubelet stops it when the profiler exits, so the Job completes.
  It has no probes: kubelet probes reach the pod IP, not loopback; the profiler waits for Triton's readiness.
- ``profiler``: the converter image (``converter_image``, the conversion's rule), running ``modelservice tune -f
  /etc/modelservice/modelservice.yaml --repository /models/<hash> --triton-url http://127.0.0.1:8000
  --summary-file /dev/termination-log`` (it waits for Triton's readiness). It writes the winner's config.pbtxt
  atomically into ``/models/<hash>/<model>/`` (keeping config.untuned.pbtxt), performance.json, and a compact
  ``Performance`` JSON to /dev/termination-log (``parse_performance`` reads it; on failure the error line goes
  there). The spec comes from an immutable ConfigMap of the tuning hash (``build_tune_configmap``): the
  conversion's ConfigMap holds the spec of the conversion, and a changed latency target keeps the conversion hash.

Wiring (done in render/__init__.py ``children``, controller/observe.py and controller/tuning.py; ``plan_tuning``
in tuneplan.py holds the rules)::

    # controller/observe.py: the profiling Job of the current tuning hash, and the served tuning hash
    tune = cached_child(cache, ms, "Job", current_tune_job_name(ms, config))
    tune_state = job_state(tune) if tune is not None else None          # -> a new Observed.tune_job field
    served_tuning = served_tuning_hash(deployment)                       # TUNING_HASH_ANNOTATION on the Deployment

    # render/__init__.py children(): after the conversion ConfigMap/Job
    decision = plan(ms, observed)
    tuning = plan_tuning(ms, decision, observed.tune_job, served_tuning_hash(observed.deployment), config)
    if tuning.job_wanted:
        out += [build_tune_configmap(ms, config), build_tune_job(ms, config)]
    # the Deployment (and PDB/HPA) follow tuning.deploy_hash, NOT decision.deploy_hash (tuning holds it back):
    if tuning.deploy_hash is not None:
        out.append(with_tuning_annotation(build_deployment(ms, tuning.deploy_hash, config), tuning.deploy_tuning_hash))
    # render_stream: assume the profiling Job succeeded too (tune_job="succeeded").

    # controller/status.py: tuning.tuning -> e.g. condition Tuned=False reason Tuning (phase Converting/Deploying);
    # tuning.tuning_failed -> Tuned=False reason TuningFailed, message from the Job (serving goes on, untuned);
    # tuning.tuned -> Tuned=True. status.performance: when the Job is "succeeded", list its pods (label job-name),
    # parse_performance(profiler_termination_message(pods)); do it in that reconcile: the next one finds the Job
    # obsolete (obsolete_children deletes Jobs/ConfigMaps of other tuning hashes) and keeps status.performance.

The Deployment needs ``TUNING_HASH_ANNOTATION`` (``modelservice.dev/tuning-hash``) on itself (what
``served_tuning_hash`` reads) and on its pod template (a new tuned config restarts the pods: Triton reads
config.pbtxt at start): ``with_tuning_annotation`` sets both. Rendered without it (untuned, or tuning off), a
Deployment keeps an annotation it had (the operator's merge patch never removes a field it does not render):
harmless: a tuning hash covers its conversion hash, so a stale value matches only the tuning still on disk. When
the Deployment moves to another conversion hash untuned, ``children`` renders the value empty (``_tuned`` in
render/__init__.py), so what it carries names only a tuning it serves (``status.performance`` relies on it).

Known limits: the profiler rewrites config.pbtxt in the repository a running Deployment may serve (a re-tune on
the same conversion hash), so a pod that restarts during a re-tune already reads the new config; turning tuning
off keeps the tuned config.pbtxt of that conversion (the untuned one is config.untuned.pbtxt) until the next
conversion.
"""

from __future__ import annotations

import copy
import json
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from modelservice.api import kubeyaml
from modelservice.api.models import ModelService
from modelservice.api.tuning import Performance
from modelservice.render.configmap import modelservice_document
from modelservice.render.deployment import shm_size, triton_image, triton_resources
from modelservice.render.job import TERMINATION_LOG, converter_image, with_gpu_toleration
from modelservice.render.names import (
    COMPONENT_TUNER,
    GRPC_PORT,
    HASH_LABEL,
    HTTP_PORT,
    METRICS_PORT,
    MODELS_DIR,
    SPEC_DIR,
    SPEC_FILE,
    TUNING_HASH_ANNOTATION,
    TUNING_HASH_LABEL,
    common_labels,
    conversion_hash,
    metadata,
    pvc_name,
    repository_path,
    tune_job_name,
)
from modelservice.render.placement import converter_affinity
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig
from modelservice.render.security import container_security_context, pod_security_context
from modelservice.render.tuneplan import tuning_hash

TRITON_CONTAINER = "triton"
PROFILER_CONTAINER = "profiler"
LOOPBACK = "127.0.0.1"
TRITON_URL = f"http://{LOOPBACK}:{HTTP_PORT}"
# A tuning is a measurement: one retry at most (evictions do not count); a failed tuning never blocks serving.
TUNE_BACKOFF_LIMIT = 1
# Beyond tuning.maxSeconds and Triton's startup budget: loading the last candidate, writing the results.
TUNE_DEADLINE_MARGIN_SECONDS = 300
MESSAGE_PREVIEW = 200


# ---------------------------------------------------------------------------------------- the containers


def tune_command(hash_: str) -> list[str]:
    """The profiler's command line (``modelservice tune``), against the sidecar Triton on loopback."""
    return [
        "modelservice",
        "tune",
        "-f",
        f"{SPEC_DIR}/{SPEC_FILE}",
        "--repository",
        repository_path(hash_),
        "--triton-url",
        TRITON_URL,
        "--summary-file",  # also on failure: the error line, which parse_performance reports as the reason
        TERMINATION_LOG,
    ]


def tune_triton_args(repository: str) -> list[str]:
    """Triton's flags in the profiling pod: explicit model control (the profiler loads candidates), no model
    loaded at start, every endpoint on loopback, exit when startup fails, the serving ports."""
    return [
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-address={LOOPBACK}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-address={LOOPBACK}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-address={LOOPBACK}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
    ]


def tune_deadline_seconds(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> int:
    """``activeDeadlineSeconds``: the search bound (tuning.maxSeconds), plus Triton's startup budget (image pull,
    start; the Deployment's startupProbe budget), plus ``TUNE_DEADLINE_MARGIN_SECONDS``."""
    startup = config.startup_period_seconds * config.startup_failure_threshold
    return ms.spec.serving.tuning.max_seconds + startup + TUNE_DEADLINE_MARGIN_SECONDS


def _triton(ms: ModelService, hash_: str, config: OperatorConfig) -> dict[str, Any]:
    return {
        "name": TRITON_CONTAINER,
        "image": triton_image(ms, config),
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",  # a native sidecar: stopped once the profiler exits
        "command": ["tritonserver"],
        "args": tune_triton_args(repository_path(hash_)),
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": triton_resources(ms),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "triton-tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }


def _profiler(ms: ModelService, hash_: str, config: OperatorConfig) -> dict[str, Any]:
    return {
        "name": PROFILER_CONTAINER,
        "image": converter_image(ms, config),
        "imagePullPolicy": config.converter_image_pull_policy,
        "command": tune_command(hash_),
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": dict(config.converter_requests), "limits": dict(config.converter_limits)},
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }


def _pod_spec(ms: ModelService, hash_: str, tuning: str, config: OperatorConfig) -> dict[str, Any]:
    serving = ms.spec.serving
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(config.run_as_user),
        "initContainers": [_triton(ms, hash_, config)],
        "containers": [_profiler(ms, hash_, config)],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": pvc_name(ms)}},
            {"name": "spec", "configMap": {"name": tune_job_name(ms, tuning)}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(ms)}},
            {"name": "triton-tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if serving.node_selector:
        pod["nodeSelector"] = dict(serving.node_selector)
    tolerations = with_gpu_toleration(serving.tolerations) if serving.resources.gpu > 0 else serving.tolerations
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    # spec.serving.affinity, plus a preference for Triton's node when the claim attaches to one node only
    affinity = converter_affinity(ms, serving.affinity)
    if affinity:
        pod["affinity"] = affinity
    return pod


# ------------------------------------------------------------------------------------------ the objects


def _hash_labels(ms: ModelService, config: OperatorConfig) -> dict[str, str]:
    return {HASH_LABEL: conversion_hash(ms), TUNING_HASH_LABEL: tuning_hash(ms, config)}


def build_tune_configmap(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """``<name>-tune-<tuning hash>``: the ModelService file the profiler reads, immutable (one per tuning hash)."""
    labels = _hash_labels(ms, config)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ms, tune_job_name(ms, labels[TUNING_HASH_LABEL]), COMPONENT_TUNER, extra_labels=labels),
        "immutable": True,
        "data": {SPEC_FILE: yaml.dump(modelservice_document(ms), Dumper=kubeyaml.Dumper, sort_keys=False)},
    }


def build_tune_job(ms: ModelService, config: OperatorConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """``<name>-tune-<tuning hash>``: the profiling Job of the spec's conversion hash and tuning hash.

    It tunes ``/models/<conversion_hash(ms)>``, the only repository its tuning hash describes (so it takes no
    hash argument). The Triton sidecar needs Kubernetes >= 1.29 (native sidecars, ``restartPolicy: Always`` on
    an init container); on an older cluster the Job would never complete and ends at its deadline, failed, which
    serves the model untuned. One retry (``TUNE_BACKOFF_LIMIT``, or the operator's lower backoff limit),
    evictions not counted; ``activeDeadlineSeconds`` from ``tune_deadline_seconds``; removed after
    ``ttlSecondsAfterFinished``.
    """
    labels = _hash_labels(ms, config)
    hash_, tuning = labels[HASH_LABEL], labels[TUNING_HASH_LABEL]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(ms, tune_job_name(ms, tuning), COMPONENT_TUNER, extra_labels=labels),
        "spec": {
            "backoffLimit": min(TUNE_BACKOFF_LIMIT, config.job_backoff_limit),
            "activeDeadlineSeconds": tune_deadline_seconds(ms, config),
            "ttlSecondsAfterFinished": config.job_ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}],
            },
            "template": {
                "metadata": {"labels": {**common_labels(ms, COMPONENT_TUNER), **labels}},
                "spec": _pod_spec(ms, hash_, tuning, config),
            },
        },
    }


def with_tuning_annotation(deployment: dict[str, Any], tuning: str | None) -> dict[str, Any]:
    """A copy of the Triton Deployment carrying ``TUNING_HASH_ANNOTATION: tuning`` on itself and its pod
    template (``TunePlan.deploy_tuning_hash``); None: the copy carries none (untuned)."""
    out = copy.deepcopy(deployment)
    template = out.setdefault("spec", {}).setdefault("template", {})
    for meta in (out.setdefault("metadata", {}), template.setdefault("metadata", {})):
        annotations = meta.setdefault("annotations", {})
        annotations.pop(TUNING_HASH_ANNOTATION, None)
        if tuning is not None:
            annotations[TUNING_HASH_ANNOTATION] = tuning
        elif not annotations:
            del meta["annotations"]
    return out


# ------------------------------------------------------------------------------------------ the results


def profiler_termination_message(pods: list[dict[str, Any]]) -> str:
    """The profiler container's termination message among the Job's pods (the most recently finished one)."""
    best: tuple[str, str] = ("", "")
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != PROFILER_CONTAINER:
                continue
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            finished = str(terminated.get("finishedAt") or "")
            if message and finished >= best[0]:
                best = (finished, str(message))
    return best[1].strip()


def _preview(text: str) -> str:
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= MESSAGE_PREVIEW else line[: MESSAGE_PREVIEW - 3] + "..."


def _json_object(text: str) -> tuple[dict[str, Any] | None, str]:
    """The message as a JSON object; else the last line that is one (FallbackToLogsOnError gives a log tail)."""
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    else:
        if isinstance(whole, dict):
            return whole, ""
        return None, f"not a JSON object: {_preview(text)}"
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found, ""
    return None, f"not JSON: {_preview(text)}"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _known_fields(model: type[BaseModel], data: Any) -> Any:
    """``data`` without keys ``model`` does not know, recursively (a newer profiler may report more)."""
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = next((k for k in (info.alias or name, name) if k in data), None)
        if key is None:
            continue
        value, nested = data[key], _nested_model(info.annotation)
        if nested is not None:
            value = (
                [_known_fields(nested, v) for v in value] if isinstance(value, list) else _known_fields(nested, value)
            )
        out[key] = value
    return out


def parse_performance(message: str | None) -> tuple[Performance | None, str | None]:
    """``(Performance, None)`` from the profiler's termination message, or ``(None, reason)``.

    Tolerant: the message may be the compact ``Performance`` JSON (camelCase, as ``status.performance``), that
    object under a ``performance`` key, or a log tail whose last JSON-object line is either; fields this
    operator does not know are dropped. The reason (one line, at most ~250 characters) says what was wrong:
    no message, not JSON, or which field is missing or invalid.
    """
    text = (message or "").strip()
    if not text:
        return None, "the profiler left no termination message"
    data, problem = _json_object(text)
    if data is None:
        return None, problem
    if isinstance(data.get("performance"), dict):
        data = data["performance"]
    try:
        return Performance.model_validate(_known_fields(Performance, data)), None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "<root>"
        return None, f"not a performance summary: {where}: {error['msg']}"[: MESSAGE_PREVIEW + 50]
