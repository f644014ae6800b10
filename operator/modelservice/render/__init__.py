"""Pure builders: a ModelService (+ what the operator observed) -> the child objects, as dicts.

Nothing here talks to the API. The operator (``modelservice.controller``) observes the cluster, fills an
``Observed``, calls ``children(ms, observed, config)`` and creates what is missing / patches what differs;
``modelservice render -f FILE`` prints ``render_stream(...)``.

Children, in creation order (names are deterministic, see ``names.py``; every child carries the common labels
``app.kubernetes.io/{name,instance,component,part-of,managed-by}`` and ``modelservice.dev/name``, and a
controller owner reference to the ModelService when it has a uid):

====================  =====================================  ================================================
kind                  name                                   when
====================  =====================================  ================================================
PersistentVolumeClaim ``spec.storage.pvc.name`` or           conversion needed and the claim is not an
                      ``<name>-models``                      existing foreign one (``Observed.pvc_external``)
ConfigMap             ``<name>-convert-<hash>`` (immutable)  ``plan.job_wanted``
Job                   ``<name>-convert-<hash>``              ``plan.job_wanted``
ConfigMap             ``<name>-tune-<tuning hash>`` (immut.) ``TunePlan.job_wanted`` (tuneplan.py: a latency
Job                   ``<name>-tune-<tuning hash>``          target set; the profiling Job, tunejob.py)
Deployment            ``<name>``                             ``TunePlan.deploy_hash`` is set (``plan``'s, held
                                                             back while a new conversion is being tuned)
Service               ``<name>``                             always
PodDisruptionBudget   ``<name>``                             with the Deployment
HorizontalPodAutosc.  ``<name>``                             with the Deployment, when ``spec.autoscaling``
                                                             has minReplicas >= 1
ScaledObject (KEDA)   ``<name>``                             with the Deployment, when minReplicas is 0
HTTPScaledObject      ``<name>``                             with the ScaledObject, when ``keda.httpAddOn``
Ingress               ``<name>``                             ``spec.exposure.ingress``
HTTPRoute             ``<name>``                             ``spec.exposure.httpRoute``
====================  =====================================  ================================================

The conversion hash and the rules the operator follows (pure functions in ``plan.py``, tested):

1. ``conversion_hash(ms)`` (10 hex) covers what changes the converted repository: ``spec.model`` (credentials
   excepted), ``spec.conversion`` and the serving fields written into config.pbtxt (maxBatchSize,
   dynamicBatching, instances, gpu). Replicas, resources, images, autoscaling and exposure do not change it.
2. ``needs_conversion(ms)``: every format except ``triton-repository`` is converted by a Job (also onnx /
   torchscript with target ``none``: the Job fetches, checks and writes config.pbtxt). A triton-repository is
   mounted in place from its PVC, or fetched into an emptyDir by an init container (``modelservice fetch``).
3. The Deployment carries the hash it serves in the annotation ``modelservice.dev/conversion-hash``
   (``HASH_ANNOTATION``), on itself and on its pod template; Triton reads ``/models/<hash>`` from the claim,
   mounted read-only, so a running Triton never sees a repository being written.
4. The Job (and ConfigMap) of the current hash is wanted unless the Deployment already serves that hash. So an
   unchanged spec never re-converts, and a succeeded Job removed by its TTL is not re-created.
5. The Deployment moves to the current hash only once that hash's Job succeeded; meanwhile it keeps serving
   the hash it has (only fields outside the hash, such as replicas, change at once). Before the first
   successful conversion there is no Deployment (nor PDB/HPA).
6. A failed Job is not retried by the operator (no hot loop): it stays, its ConfigMap too, until the spec
   changes (new hash, new Job) or someone deletes the Job (the operator then creates it again).
7. ``obsolete_children`` names what the operator created earlier and no longer wants (a removed Ingress/HPA,
   Jobs/ConfigMaps of other hashes); PersistentVolumeClaims and the Deployment are never in it.

Placement: Triton's replicas spread across nodes, except when the model claim is ReadWriteOnce (the default):
it attaches to one node, so replicas co-locate (required pod affinity) and the conversion Job prefers their node
(``placement.py``); ask for ``ReadWriteMany`` in ``spec.storage.pvc.accessModes`` to spread replicas.

The operator's loop, statelessly::

    observed = Observed(deployment=<Deployment named deployment_name(ms) or None>,
                        conversion_job=job_state(<Job named job_name(ms)>) or None,
                        pvc_external=<claim pvc_name(ms) exists and not is_owned_by(claim, ms)>)
    wanted = children(ms, observed, config)      # create missing, patch differing owned fields
    p = plan(ms, observed)                       # for status: p.converting, p.conversion_failed, p.up_to_date

``render_stream`` renders what the operator would create when conversion succeeds (Job *and* Deployment on the
new hash); objects from a file have no uid, so they carry no owner references.
"""

from __future__ import annotations

from typing import Any

from modelservice.api import kubeyaml
from modelservice.api.models import ModelService
from modelservice.render.canary import REVISION_LABEL, Traffic, TrafficSplit, revision_hpas, traffic_children
from modelservice.render.configmap import build_configmap
from modelservice.render.delivery import check_cluster_uris, model_delivery
from modelservice.render.deployment import build_deployment
from modelservice.render.endpoints import endpoints
from modelservice.render.hpa import (
    METRIC_INFERENCE_RATE,
    METRIC_QUEUE_TIME,
    PROMETHEUS_ADAPTER_RULES,
    build_hpa,
)
from modelservice.render.ingress import build_httproute, build_ingress
from modelservice.render.job import build_job
from modelservice.render.keda import build_http_scaled_object, build_scaled_object
from modelservice.render.names import (
    HASH_ANNOTATION,
    HASH_LABEL,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    common_labels,
    configmap_name,
    conversion_hash,
    deployment_name,
    is_owned_by,
    job_name,
    needs_conversion,
    owner_reference,
    pvc_name,
    selector_labels,
    selector_string,
    service_name,
)
from modelservice.render.pdb import build_pdb
from modelservice.render.plan import DEFAULT_CONFIG, JobState, Observed, OperatorConfig, Plan, job_state, plan
from modelservice.render.pvc import build_pvc
from modelservice.render.service import build_service
from modelservice.render.tunejob import build_tune_configmap, build_tune_job, with_tuning_annotation
from modelservice.render.tuneplan import TunePlan, plan_tuning, served_tuning_hash

__all__ = [
    "HASH_ANNOTATION",
    "HASH_LABEL",
    "MANAGED_KINDS",
    "METRIC_INFERENCE_RATE",
    "METRIC_QUEUE_TIME",
    "PROMETHEUS_ADAPTER_RULES",
    "REVISION_LABEL",
    "JobState",
    "Observed",
    "OperatorConfig",
    "Plan",
    "Traffic",
    "TrafficSplit",
    "build_configmap",
    "build_deployment",
    "build_hpa",
    "build_httproute",
    "build_ingress",
    "build_job",
    "build_pdb",
    "build_pvc",
    "build_service",
    "check_cluster_uris",
    "children",
    "common_labels",
    "configmap_name",
    "conversion_hash",
    "deployment_name",
    "endpoints",
    "is_owned_by",
    "job_name",
    "job_state",
    "model_delivery",
    "needs_conversion",
    "obsolete_children",
    "owner_reference",
    "plan",
    "pvc_name",
    "render_stream",
    "selector_labels",
    "selector_string",
    "service_name",
]

# (apiVersion, kind) of every child kind the operator may create, in creation order.
MANAGED_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ConfigMap"),
    ("batch/v1", "Job"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("http.keda.sh/v1alpha1", "HTTPScaledObject"),
    ("networking.k8s.io/v1", "Ingress"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
)


def children(
    ms: ModelService, observed: Observed, config: OperatorConfig = DEFAULT_CONFIG, traffic: Traffic | None = None
) -> list[dict[str, Any]]:
    """Every child the operator wants for ``ms`` given what it observed, in creation order.

    ``traffic``: with ``spec.rollout``, what the rollout decided serves (``canary.py``); None: ``plan``'s
    deploy hash serves, as without a rollout.

    Raises ``SpecError`` (naming the field) for specs only the local CLI can serve (file:// sources).
    """
    check_cluster_uris(ms)
    decision = plan(ms, observed)
    tuning = plan_tuning(ms, decision, observed.tune_job, served_tuning_hash(observed.deployment), config)
    out: list[dict[str, Any]] = []
    if needs_conversion(ms) and not observed.pvc_external:
        out.append(build_pvc(ms, config))
    if decision.job_wanted:
        out += [build_configmap(ms), build_job(ms, config)]
    if tuning.job_wanted:
        out += [build_tune_configmap(ms, config), build_tune_job(ms, config)]
    if traffic is not None:
        served = _traffic_children(ms, _deployable(traffic, tuning.deploy_hash), config)
        return out + [_tuned(obj, tuning, observed.deployment) for obj in served]
    if tuning.deploy_hash is not None:
        out.append(_tuned(build_deployment(ms, tuning.deploy_hash, config), tuning, observed.deployment))
    out.append(build_service(ms))
    if tuning.deploy_hash is not None:
        out.append(build_pdb(ms))
        for scaler in (build_hpa(ms), build_scaled_object(ms, config), build_http_scaled_object(ms, config)):
            if scaler is not None:
                out.append(scaler)
    for optional in (build_ingress(ms), build_httproute(ms)):
        if optional is not None:
            out.append(optional)
    return out


def _deployable(traffic: Traffic, deploy_hash: str | None) -> Traffic:
    """``traffic`` without a canary that takes no requests yet (weight 0) and whose repository is not ready to
    serve (``deploy_hash``: still converting, or being tuned): its Triton would find no model, or load the config
    the profiler is replacing. The rollout waits for it (not ready) and renders it once it is."""
    split = traffic.split
    if split is None or not split.canary_running or split.weight > 0 or split.canary == deploy_hash:
        return traffic
    return Traffic(TrafficSplit(stable=split.stable), traffic.per_revision)


def _tuned(obj: dict[str, Any], tuning: TunePlan, live: dict[str, Any] | None) -> dict[str, Any]:
    """A Deployment with the tuning annotation ``tuning`` decided for it (other objects as they are).

    The Deployment serving ``tuning.deploy_hash`` carries ``deploy_tuning_hash``. One moving to another conversion
    hash untuned while the live one (``live``, same name) still carries a tuning hash gets an empty value: the
    merge patch keeps what is not rendered, and the old value would claim a tuning the new repository lacks
    (``served_tuning_hash`` reads empty as untuned). Otherwise none is rendered: what the live one has stays.
    """
    if obj.get("kind") != "Deployment":
        return obj
    meta = obj.get("metadata") or {}
    hash_ = (meta.get("annotations") or {}).get(HASH_ANNOTATION)
    value = tuning.deploy_tuning_hash if hash_ == tuning.deploy_hash else None
    if value is None and live is not None and (live.get("metadata") or {}).get("name") == meta.get("name"):
        moved = (((live.get("metadata") or {}).get("annotations")) or {}).get(HASH_ANNOTATION) != hash_
        if moved and served_tuning_hash(live) is not None:
            value = ""
    return obj if value is None else with_tuning_annotation(obj, value)


def _traffic_children(ms: ModelService, traffic: Traffic, config: OperatorConfig) -> list[dict[str, Any]]:
    split = traffic.split
    if split is None:  # nothing serves yet
        return [build_service(ms), *(o for o in (build_ingress(ms), build_httproute(ms)) if o is not None)]
    out = traffic_children(ms, split, config, per_revision=traffic.per_revision)
    routes = [o for o in out if o["kind"] == "HTTPRoute"]
    out = [o for o in out if o["kind"] != "HTTPRoute"]
    out.append(build_pdb(ms))
    out += revision_hpas(ms, split, per_revision=traffic.per_revision)
    ingress = build_ingress(ms)
    return out + ([ingress] if ingress is not None else []) + routes


# A claim holds data; a Deployment, once serving, is never taken away (plan() always keeps a served hash; the
# controller retires a Deployment a rollout no longer renders once the one serving instead is available).
_NEVER_OBSOLETE = frozenset({"PersistentVolumeClaim", "Deployment"})


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return str(obj.get("kind")), str((obj.get("metadata") or {}).get("name"))


def obsolete_children(
    ms: ModelService, wanted: list[dict[str, Any]], existing: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Objects in ``existing`` (children the operator found, e.g. listed by the ``app.kubernetes.io/instance``
    label) that it created for ``ms`` and no longer wants. Never a PersistentVolumeClaim (it holds data) or the
    Deployment (Triton keeps serving), never an object without this operator's ``managed-by`` label and
    instance, nor one owned by another object. Delete Jobs with ``propagationPolicy: Background``."""
    wanted_keys = {_key(obj) for obj in wanted}
    out = []
    for obj in existing:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        mine = labels.get(LABEL_MANAGED_BY) == common_labels(ms, "")[LABEL_MANAGED_BY]
        mine = mine and labels.get(LABEL_INSTANCE) == ms.name
        if not mine or obj.get("kind") in _NEVER_OBSOLETE or _key(obj) in wanted_keys:
            continue
        if ms.metadata.uid and not is_owned_by(obj, ms):
            continue
        out.append(obj)
    return out


def _with_namespace(ms: ModelService, namespace: str | None) -> ModelService:
    if namespace is None or ms.metadata.namespace:
        return ms
    return ms.model_copy(update={"metadata": ms.metadata.model_copy(update={"namespace": namespace})})


def render_stream(
    models: list[ModelService], namespace: str | None = None, config: OperatorConfig = DEFAULT_CONFIG
) -> str:
    """A YAML stream of what the operator would create for each ModelService, assuming conversion (and tuning,
    with ``spec.serving.latencyTarget``) succeeds.

    ``namespace`` applies to ModelServices whose metadata names none (default: ``default``).
    """
    documents: list[str] = []
    for model in models:
        ms = _with_namespace(model, namespace)
        observed = Observed(conversion_job="succeeded", tune_job="succeeded")
        for obj in children(ms, observed, config):
            documents.append(kubeyaml.dump(obj, sort_keys=False, default_flow_style=False))  # kubectl applies it
    return "".join(f"---\n{doc}" for doc in documents)
