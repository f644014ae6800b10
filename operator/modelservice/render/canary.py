"""Traffic between two revisions of one ModelService (issue 10, part 2): pure builders.

``render.children(ms, observed, config, traffic=Traffic(...))`` calls ``traffic_children`` and ``revision_hpas``
when ``spec.rollout`` is set; the controller (controller/delivery.py) makes the ``Traffic`` from the rollout
state machine's decision.

Revisions are conversion hashes. With ``strategy: canary`` every revision runs as its own Deployment
(``Traffic.per_revision``), also when no canary runs, so a canary starts and ends without renaming anything:

- each revision has its own Deployment and ClusterIP Service, both named ``<name>-<hash>`` (``revision_name``);
  the pod template and the Deployment's selector carry ``modelservice.dev/revision: <hash>`` (``REVISION_LABEL``)
  so Services and metrics tell revisions apart;
- the user-facing Service ``<name>`` (type and annotations from ``spec.exposure.service``) selects the stable
  revision only at weight 0, the canary only at weight 100, and every revision of the ModelService otherwise
  (in between, its split of traffic is approximated by replica counts, ``split_replicas``; without a canary,
  a revision whose Deployment is being retired keeps serving until the new stable one is available);
- with ``spec.exposure.httpRoute`` the HTTPRoute sends requests to the per-revision Services with weighted
  ``backendRefs`` (stable ``100 - weight``, canary ``weight``, both listed, a weight may be 0) and, while the
  weight is still 0, copies ``mirror_percent`` percent of them to the canary's Service with a ``RequestMirror``
  filter (Gateway API v1 ``requestMirror.percent``; responses dropped by the gateway). Without a gateway there
  is no shadow traffic (a Service cannot copy requests): the mirror is ignored.

Replicas (``spec.serving.replicas``, no autoscaling): ``split_replicas(replicas, weight)``. The canary's Deployment
keeps at least one replica while it exists (unless scaled to zero), also at weight 0: it must become ready before
the first step, and the user-facing Service does not select it then. With a gateway its count also covers the
mirrored share. With ``spec.autoscaling`` ``replicas`` is left out of both Deployments, as today, and each has its
own HPA (``revision_hpas``): the stable's is today's (named ``<name>``), the canary's (``<name>-<hash>``) keeps
at least the replicas its weight needs out of ``minReplicas``.

``strategy: immediate`` keeps today's single Deployment ``<name>`` (``per_revision`` False), moved from revision to
revision. Switching strategy hands over between ``<name>`` and ``<name>-<hash>``: the Deployment no longer
rendered is deleted by the controller only once the new one is available (the user-facing Service selects both
meanwhile). Deployments' selectors overlap during that handover (``<name>`` selects every pod of the ModelService);
ReplicaSets and pods belong to their Deployment by owner reference, so neither adopts the other's pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelservice import GROUP
from modelservice.api.models import ModelService
from modelservice.render.deployment import build_deployment
from modelservice.render.hpa import build_hpa
from modelservice.render.ingress import build_httproute
from modelservice.render.names import COMPONENT_SERVER, HTTP_PORT, metadata, selector_labels
from modelservice.render.plan import DEFAULT_CONFIG, OperatorConfig
from modelservice.render.service import build_service, service_ports

# On a revision's Deployment, its selector and pod template, and in its Service's selector: the revision's hash.
REVISION_LABEL = f"{GROUP}/revision"


@dataclass(frozen=True)
class TrafficSplit:
    """Which revisions serve and how requests are shared between them.

    stable:          the hash serving what the canary does not.
    canary:          the hash under analysis; None (or ``stable``): no canary runs.
    weight:          percent of requests sent to the canary, 0..100.
    mirror_percent:  percent of requests copied to the canary while ``weight`` is 0 (HTTPRoute only), 1..100;
                     None: no shadow traffic.
    """

    stable: str
    canary: str | None = None
    weight: int = 0
    mirror_percent: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100:
            raise ValueError(f"weight must be 0..100, got {self.weight}")
        if self.mirror_percent is not None and not 1 <= self.mirror_percent <= 100:
            raise ValueError(f"mirror_percent must be 1..100, got {self.mirror_percent}")
        if not self.canary_running and (self.weight or self.mirror_percent is not None):
            raise ValueError("weight and mirror_percent need a canary other than the stable revision")

    @property
    def canary_running(self) -> bool:
        return self.canary is not None and self.canary != self.stable

    @property
    def mirroring(self) -> bool:
        """Shadow traffic is rendered only before any weight (the rollout's step 0)."""
        return self.canary_running and self.weight == 0 and self.mirror_percent is not None


def split_replicas(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replica counts approximating ``weight`` percent of requests for the canary when a Service
    spreads requests evenly over the ready pods of both revisions.

    Rounding, always in the canary's favour, so it never has fewer replicas than its weight needs:
    ``canary = ceil(total * weight / 100)``, at least 1 while ``weight > 0``; ``stable = total - canary``, but at
    least 1 while ``weight < 100`` (the stable revision keeps serving), so the two may add up to ``total + 1``.
    The share the canary really gets is ``canary / (stable + canary)``: exact only when ``total * weight`` is a
    multiple of 100, and coarse for few replicas (1 replica at weight 10 serves 50%: 1 stable + 1 canary).
    ``total`` 0 (scaled to zero) stays (0, 0).
    """
    if total < 0:
        raise ValueError(f"total must not be negative, got {total}")
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be 0..100, got {weight}")
    if total == 0:
        return 0, 0
    canary = -(-total * weight // 100)  # ceiling without floats
    if weight > 0:
        canary = max(canary, 1)
    stable = total - canary
    if weight < 100:
        stable = max(stable, 1)
    return stable, canary


def revision_name(ms: ModelService, hash_: str) -> str:
    """The Deployment and Service of one revision: ``<name>-<hash>`` (at most 40 + 1 + 10 characters)."""
    return f"{ms.name}-{hash_}"


def revision_selector(ms: ModelService, hash_: str) -> dict[str, str]:
    """Labels selecting the pods of revision ``hash_`` only."""
    return {**selector_labels(ms), REVISION_LABEL: hash_}


def _replicas(ms: ModelService, split: TrafficSplit) -> tuple[int, int] | None:
    """(stable, canary) replicas, or None with autoscaling (replicas left out, as build_deployment does)."""
    if ms.spec.autoscaling is not None:
        return None
    total = ms.spec.serving.replicas
    stable, canary = split_replicas(total, split.weight)
    if split.mirroring and ms.spec.exposure.http_route is not None:
        canary = max(canary, split_replicas(total, split.mirror_percent or 0)[1])
    return stable, max(canary, 1) if total > 0 else canary


def build_revision_deployment(
    ms: ModelService, hash_: str, replicas: int | None, config: OperatorConfig = DEFAULT_CONFIG
) -> dict[str, Any]:
    """``build_deployment`` for one revision: named ``revision_name``, the revision label on the Deployment, its
    selector and its pod template; ``replicas`` set when given (None: as ``build_deployment`` has it)."""
    deployment = build_deployment(ms, hash_, config)
    deployment["metadata"]["name"] = revision_name(ms, hash_)
    deployment["metadata"]["labels"][REVISION_LABEL] = hash_
    spec = deployment["spec"]
    spec["selector"]["matchLabels"][REVISION_LABEL] = hash_
    spec["template"]["metadata"]["labels"][REVISION_LABEL] = hash_
    if replicas is not None:
        spec["replicas"] = replicas
    return deployment


def build_revision_service(ms: ModelService, hash_: str) -> dict[str, Any]:
    """A ClusterIP Service in front of one revision's pods (the route's backend; per-revision metrics)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ms, revision_name(ms, hash_), COMPONENT_SERVER, extra_labels={REVISION_LABEL: hash_}),
        "spec": {"type": "ClusterIP", "selector": revision_selector(ms, hash_), "ports": service_ports()},
    }


def build_user_service(ms: ModelService, split: TrafficSplit) -> dict[str, Any]:
    """The user-facing Service ``<name>``: today's, whose selector picks the revisions that take requests."""
    service = build_service(ms)
    if split.canary_running and split.canary is not None:
        if split.weight == 0:
            service["spec"]["selector"] = revision_selector(ms, split.stable)
        elif split.weight == 100:
            service["spec"]["selector"] = revision_selector(ms, split.canary)
    return service


def _backend(name: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": HTTP_PORT}
    if weight is not None:
        ref["weight"] = weight
    return ref


def build_split_httproute(ms: ModelService, split: TrafficSplit) -> dict[str, Any] | None:
    """``build_httproute`` with weighted backends per revision and, while mirroring, a RequestMirror filter."""
    route = build_httproute(ms)
    if route is None or not split.canary_running or split.canary is None:
        return route
    for rule in route["spec"]["rules"]:
        rule["backendRefs"] = [
            _backend(revision_name(ms, split.stable), 100 - split.weight),
            _backend(revision_name(ms, split.canary), split.weight),
        ]
        if split.mirroring:
            mirror = {"backendRef": _backend(revision_name(ms, split.canary)), "percent": split.mirror_percent}
            rule["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    return route


@dataclass(frozen=True)
class Traffic:
    """What the rollout decided for rendering (``spec.rollout`` set).

    split:         the revisions serving and their weights; None: nothing serves yet (first conversion running).
    per_revision:  every revision runs as its own ``<name>-<hash>`` Deployment (strategy canary).
    """

    split: TrafficSplit | None
    per_revision: bool = False


def traffic_children(
    ms: ModelService, split: TrafficSplit, config: OperatorConfig = DEFAULT_CONFIG, *, per_revision: bool = False
) -> list[dict[str, Any]]:
    """The Deployments, Services and HTTPRoute serving ``split``, in creation order.

    No canary running and not ``per_revision``: ``[build_deployment(ms, stable), build_service(ms),
    build_httproute(ms)?]``, today's objects. ``per_revision`` without a canary: the stable's Deployment and
    Service, the user-facing Service, the HTTPRoute. A canary running: the stable's and the canary's Deployment and
    Service, the user-facing Service, the HTTPRoute when ``spec.exposure.httpRoute`` is set.
    """
    route = build_split_httproute(ms, split)
    tail = [route] if route is not None else []
    if not split.canary_running or split.canary is None:
        if not per_revision:
            return [build_deployment(ms, split.stable, config), build_service(ms), *tail]
        fixed = None if ms.spec.autoscaling is not None else ms.spec.serving.replicas
        return [
            build_revision_deployment(ms, split.stable, fixed, config),
            build_revision_service(ms, split.stable),
            build_user_service(ms, split),
            *tail,
        ]
    replicas = _replicas(ms, split)
    stable_replicas, canary_replicas = replicas if replicas is not None else (None, None)
    return [
        build_revision_deployment(ms, split.stable, stable_replicas, config),
        build_revision_deployment(ms, split.canary, canary_replicas, config),
        build_revision_service(ms, split.stable),
        build_revision_service(ms, split.canary),
        build_user_service(ms, split),
        *tail,
    ]


def revision_hpas(ms: ModelService, split: TrafficSplit, *, per_revision: bool = False) -> list[dict[str, Any]]:
    """The HPAs of ``split`` (none without ``spec.autoscaling``).

    Today's HPA ``<name>`` scales the stable revision's Deployment (``<name>-<stable>`` when ``per_revision``).
    While a canary runs with ``per_revision``, a second HPA ``<name>-<canary>`` scales the canary between
    ``maxReplicas`` and the replicas its weight (or mirrored share) needs out of ``minReplicas``
    (``split_replicas``, at least 1).
    """
    autoscaling = ms.spec.autoscaling
    hpa = build_hpa(ms)
    if hpa is None or autoscaling is None:
        return []
    if not per_revision:
        return [hpa]
    hpa["spec"]["scaleTargetRef"]["name"] = revision_name(ms, split.stable)
    if not split.canary_running or split.canary is None:
        return [hpa]
    share = split.weight
    if split.mirroring and ms.spec.exposure.http_route is not None:
        share = max(share, split.mirror_percent or 0)
    canary = build_hpa(ms)
    assert canary is not None
    canary["metadata"]["name"] = revision_name(ms, split.canary)
    canary["metadata"]["labels"][REVISION_LABEL] = split.canary
    canary["spec"]["scaleTargetRef"]["name"] = revision_name(ms, split.canary)
    canary["spec"]["minReplicas"] = max(1, split_replicas(autoscaling.min_replicas, share)[1])
    return [hpa, canary]
