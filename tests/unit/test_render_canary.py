"""Traffic between a stable and a canary revision (render/canary.py): replica split, per-revision objects, the
weighted HTTPRoute with its mirror filter, today's objects without a canary, schemas for every version."""

from __future__ import annotations

from typing import Any

import pytest
from _render_samples import SAMPLES, modified, sample

from _k8s import K8S_VERSIONS, check_restricted, pod_templates, validate_strict
from modelservice.render import Observed, build_deployment, build_httproute, build_service, children, selector_labels
from modelservice.render.canary import (
    REVISION_LABEL,
    Traffic,
    TrafficSplit,
    revision_hpas,
    revision_name,
    revision_selector,
    split_replicas,
    traffic_children,
)

STABLE = "0123456789"
CANARY = "abcdef0123"


def _by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


# ------------------------------------------------------------------------------------------ split_replicas


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [
        (10, 0, (10, 0)),
        (10, 10, (9, 1)),
        (10, 15, (8, 2)),  # 1.5 rounds up for the canary
        (10, 50, (5, 5)),
        (10, 99, (1, 10)),  # the stable keeps one replica below 100
        (10, 100, (0, 10)),
        (4, 10, (3, 1)),  # 0.4 -> 1: never below what the weight needs
        (3, 34, (1, 2)),
        (1, 10, (1, 1)),  # one replica: 1 + 1, the canary gets 50%
        (1, 100, (0, 1)),
        (2, 1, (1, 1)),
        (0, 0, (0, 0)),  # scaled to zero stays there
        (0, 50, (0, 0)),
        (100, 1, (99, 1)),
        (7, 33, (4, 3)),  # 2.31 -> 3
    ],
)
def test_split_replicas(total: int, weight: int, expected: tuple[int, int]) -> None:
    stable, canary = split_replicas(total, weight)
    assert (stable, canary) == expected
    assert canary * 100 >= total * weight  # never below what the weight needs
    if total > 0:
        assert canary >= 1 or weight == 0
        assert stable >= 1 or weight == 100
    assert total <= stable + canary <= total + 1


@pytest.mark.parametrize(("total", "weight"), [(-1, 10), (3, -1), (3, 101)])
def test_split_replicas_refuses(total: int, weight: int) -> None:
    with pytest.raises(ValueError):
        split_replicas(total, weight)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight": 101, "canary": CANARY},
        {"weight": -1, "canary": CANARY},
        {"weight": 10},  # a weight without a canary
        {"mirror_percent": 20},
        {"canary": STABLE, "weight": 10},  # the canary is the stable revision: no canary runs
        {"canary": CANARY, "mirror_percent": 0},
        {"canary": CANARY, "mirror_percent": 101},
    ],
)
def test_traffic_split_refuses(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TrafficSplit(STABLE, **kwargs)


# ------------------------------------------------------------------------------------- without a canary


NO_CANARY = [TrafficSplit(STABLE), TrafficSplit(STABLE, canary=STABLE)]


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("split", NO_CANARY, ids=["canary-none", "canary-is-stable"])
def test_no_canary_is_todays_objects(name: str, split: TrafficSplit) -> None:
    ms = sample(name)
    route = build_httproute(ms)
    today = [build_deployment(ms, STABLE), build_service(ms), *([route] if route else [])]
    assert traffic_children(ms, split) == today


def test_rollout_set_but_no_canary_running_is_todays_objects() -> None:
    rollout = {"strategy": "canary", "steps": [{"weight": 10, "pause": "1m"}], "mirror": {"percent": 20}}
    ms = sample("gpu", rollout=rollout)
    assert ms.spec.rollout is not None
    today = [build_deployment(ms, STABLE), build_service(ms), build_httproute(ms)]
    assert traffic_children(ms, TrafficSplit(STABLE)) == today


# ----------------------------------------------------------------------------------- with a canary running

# (sample, weight, mirror, stable replicas, canary replicas (None: left to the HPA), user Service selects)
CASES: list[tuple[str, int, int | None, int | None, int | None, str]] = [
    ("gpu", 0, None, 3, 1, "stable"),  # warming up: one canary replica, not selected by the user Service
    ("gpu", 0, 20, 3, 1, "stable"),  # shadowing 20% of 3 replicas -> 1
    ("gpu", 0, 50, 3, 2, "stable"),  # shadowing 50% of 3 -> 2 (ceil 1.5)
    ("gpu", 10, None, 2, 1, "both"),
    ("gpu", 10, 20, 2, 1, "both"),  # mirror only before any weight: ignored now
    ("gpu", 50, None, 1, 2, "both"),
    ("gpu", 100, None, 0, 3, "canary"),
    ("cpu", 0, 20, None, None, "stable"),  # autoscaled: replicas left out of both Deployments
    ("cpu", 30, None, None, None, "both"),
    ("repo-pvc", 0, 20, 1, 1, "stable"),  # no gateway: no shadow traffic, no extra replica for it
    ("repo-pvc", 10, None, 1, 1, "both"),
    ("repo-s3", 90, None, 1, 1, "both"),
    ("repo-s3/zero", 0, None, 0, 0, "stable"),  # scaled to zero: no warm canary replica either
]
CASE_IDS = [f"{name}-w{weight}-m{mirror}" for name, weight, mirror, *_ in CASES]


@pytest.mark.parametrize(("name", "weight", "mirror", "stable_n", "canary_n", "selects"), CASES, ids=CASE_IDS)
def test_canary_objects(
    name: str, weight: int, mirror: int | None, stable_n: int | None, canary_n: int | None, selects: str
) -> None:
    base, _, zero = name.partition("/")
    ms = modified(sample(base), "serving.replicas", 0) if zero else sample(base)
    split = TrafficSplit(STABLE, CANARY, weight, mirror)
    objects = _by_key(traffic_children(ms, split))
    route_wanted = ms.spec.exposure.http_route is not None
    expected_keys = {
        ("Deployment", f"{ms.name}-{STABLE}"),
        ("Deployment", f"{ms.name}-{CANARY}"),
        ("Service", f"{ms.name}-{STABLE}"),
        ("Service", f"{ms.name}-{CANARY}"),
        ("Service", ms.name),
    } | ({("HTTPRoute", ms.name)} if route_wanted else set())
    assert set(objects) == expected_keys

    for hash_, replicas in ((STABLE, stable_n), (CANARY, canary_n)):
        deployment = objects["Deployment", revision_name(ms, hash_)]
        assert deployment["metadata"]["annotations"]["modelservice.dev/conversion-hash"] == hash_
        assert (
            f"--model-repository=/models/{hash_}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            or ms.spec.model.format == "triton-repository"
        )
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector == revision_selector(ms, hash_)
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert deployment["metadata"]["labels"][REVISION_LABEL] == hash_
        assert deployment["spec"].get("replicas") == replicas
        # the rest is build_deployment's: same pod spec
        assert deployment["spec"]["template"]["spec"] == build_deployment(ms, hash_)["spec"]["template"]["spec"]
        service = objects["Service", revision_name(ms, hash_)]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"] == revision_selector(ms, hash_)
        assert service["spec"]["ports"] == build_service(ms)["spec"]["ports"]

    user = objects["Service", ms.name]
    today = build_service(ms)
    assert {k: v for k, v in user["spec"].items() if k != "selector"} == {
        k: v for k, v in today["spec"].items() if k != "selector"
    }
    assert user["metadata"] == today["metadata"]
    expected_selector = {
        "stable": revision_selector(ms, STABLE),
        "canary": revision_selector(ms, CANARY),
        "both": selector_labels(ms),
    }[selects]
    assert user["spec"]["selector"] == expected_selector


# (weight, mirror, backend weights (stable, canary), mirror percent rendered)
ROUTE_CASES: list[tuple[int, int | None, tuple[int, int], int | None]] = [
    (0, None, (100, 0), None),
    (0, 20, (100, 0), 20),
    (0, 100, (100, 0), 100),
    (10, None, (90, 10), None),
    (10, 20, (90, 10), None),  # a weight set: shadowing is over
    (50, None, (50, 50), None),
    (100, None, (0, 100), None),
]


@pytest.mark.parametrize(("weight", "mirror", "weights", "mirrored"), ROUTE_CASES)
def test_weighted_route_and_mirror(
    weight: int, mirror: int | None, weights: tuple[int, int], mirrored: int | None
) -> None:
    ms = sample("gpu")
    objects = _by_key(traffic_children(ms, TrafficSplit(STABLE, CANARY, weight, mirror)))
    route = objects["HTTPRoute", ms.name]
    today = build_httproute(ms)
    assert today is not None
    assert route["metadata"] == today["metadata"]
    assert route["spec"]["parentRefs"] == today["spec"]["parentRefs"]
    assert route["spec"]["hostnames"] == today["spec"]["hostnames"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == today["spec"]["rules"][0]["matches"]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": f"encoder-{STABLE}", "port": 8000, "weight": weights[0]},
        {"group": "", "kind": "Service", "name": f"encoder-{CANARY}", "port": 8000, "weight": weights[1]},
    ]
    if mirrored is None:
        assert "filters" not in rule
    else:
        assert rule["filters"] == [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"group": "", "kind": "Service", "name": f"encoder-{CANARY}", "port": 8000},
                    "percent": mirrored,
                },
            }
        ]
    assert validate_strict(route) == ["gateway-api-v1"]


def test_mirror_percent_is_in_the_gateway_api_schema() -> None:
    """The vendored HTTPRoute v1 schema has requestMirror.percent (and fraction): percent is what we render."""
    from _k8s import _httproute_validator

    mirror = _httproute_validator().schema["properties"]["spec"]["properties"]["rules"]["items"]["properties"][
        "filters"
    ]["items"]["properties"]["requestMirror"]["properties"]
    assert mirror["percent"] == {"format": "int32", "maximum": 100, "minimum": 0, "type": "integer"}


def test_revision_label_set_on_pods_but_not_on_todays_deployment() -> None:
    ms = sample("gpu")
    (deployment, *_) = traffic_children(ms, TrafficSplit(STABLE))
    assert REVISION_LABEL not in deployment["spec"]["template"]["metadata"]["labels"]
    (stable, canary, *_) = traffic_children(ms, TrafficSplit(STABLE, CANARY, 10))
    assert stable["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == STABLE
    assert canary["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == CANARY


def test_names_fit_a_label_value() -> None:
    ms = sample("cpu")
    long = ms.model_copy(update={"metadata": ms.metadata.model_copy(update={"name": "m" * 40})})
    assert len(revision_name(long, CANARY)) <= 63


# ---------------------------------------------------------------------------------------------- schemas


def _all_canary_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in SAMPLES:
        for weight, mirror in ((0, None), (0, 20), (10, None), (100, None)):
            for obj in traffic_children(sample(name), TrafficSplit(STABLE, CANARY, weight, mirror)):
                out.append((f"{name}/w{weight}-m{mirror}/{obj['kind']}/{obj['metadata']['name']}", obj))
    return out


ALL = _all_canary_objects()


@pytest.mark.parametrize(("label", "obj"), ALL, ids=[label for label, _ in ALL])
def test_strictly_valid(label: str, obj: dict[str, Any]) -> None:
    checked = validate_strict(obj)
    assert checked == (["gateway-api-v1"] if obj["kind"] == "HTTPRoute" else list(K8S_VERSIONS))
    for pod_spec, pod_annotations in pod_templates(obj):
        assert check_restricted(pod_spec, pod_annotations) == []


def test_every_kind_is_covered() -> None:
    assert {obj["kind"] for _, obj in ALL} == {"Deployment", "Service", "HTTPRoute"}
    assert any("filters" in obj["spec"]["rules"][0] for _, obj in ALL if obj["kind"] == "HTTPRoute")


# ------------------------------------------------------------------- strategy canary: a Deployment per revision


def test_per_revision_without_a_canary_is_the_stable_revision_alone() -> None:
    ms = sample("gpu")
    objects = _by_key(traffic_children(ms, TrafficSplit(STABLE), per_revision=True))
    assert set(objects) == {
        ("Deployment", revision_name(ms, STABLE)),
        ("Service", revision_name(ms, STABLE)),
        ("Service", ms.name),
        ("HTTPRoute", ms.name),
    }
    deployment = objects["Deployment", revision_name(ms, STABLE)]
    assert deployment["spec"]["replicas"] == ms.spec.serving.replicas
    assert deployment["spec"]["selector"]["matchLabels"][REVISION_LABEL] == STABLE
    # every revision's pods: a Deployment being retired keeps serving until the new stable one is available
    assert objects["Service", ms.name]["spec"]["selector"] == selector_labels(ms)


@pytest.mark.parametrize(("weight", "mirror", "canary_min"), [(0, None, 1), (0, 50, 1), (10, None, 1), (60, None, 2)])
def test_revision_hpas(weight: int, mirror: int | None, canary_min: int) -> None:
    ms = sample("cpu")  # autoscaling minReplicas 2 .. maxReplicas N
    assert ms.spec.autoscaling is not None and ms.spec.autoscaling.min_replicas == 2
    split = TrafficSplit(STABLE, CANARY, weight, mirror)
    today = revision_hpas(ms, split)
    assert [h["spec"]["scaleTargetRef"]["name"] for h in today] == [ms.name]  # strategy immediate: today's HPA
    stable, canary = revision_hpas(ms, split, per_revision=True)
    assert stable["metadata"]["name"] == ms.name
    assert stable["spec"]["scaleTargetRef"]["name"] == revision_name(ms, STABLE)
    assert canary["metadata"]["name"] == revision_name(ms, CANARY)
    assert canary["spec"]["scaleTargetRef"]["name"] == revision_name(ms, CANARY)
    assert canary["spec"]["minReplicas"] == canary_min
    assert canary["spec"]["maxReplicas"] == ms.spec.autoscaling.max_replicas
    for hpa in (stable, canary):
        assert validate_strict(hpa) == list(K8S_VERSIONS)
    assert revision_hpas(sample("gpu"), split, per_revision=True) == []  # no autoscaling, no HPA
    only = revision_hpas(ms, TrafficSplit(STABLE), per_revision=True)
    assert [h["spec"]["scaleTargetRef"]["name"] for h in only] == [revision_name(ms, STABLE)]


def test_children_with_traffic() -> None:
    ms = sample("cpu")
    observed = Observed(conversion_job="succeeded")
    waiting = children(ms, observed, traffic=Traffic(None, per_revision=True))
    assert "Deployment" not in {o["kind"] for o in waiting}  # nothing serves before the first revision
    canary = _by_key(children(ms, observed, traffic=Traffic(TrafficSplit(STABLE, CANARY, 10), per_revision=True)))
    assert ("Deployment", revision_name(ms, STABLE)) in canary and ("Deployment", revision_name(ms, CANARY)) in canary
    assert ("Deployment", ms.name) not in canary
    assert ("PodDisruptionBudget", ms.name) in canary  # one PDB over every revision's pods
    assert ("HorizontalPodAutoscaler", revision_name(ms, CANARY)) in canary
    immediate = _by_key(children(ms, observed, traffic=Traffic(TrafficSplit(STABLE))))
    assert immediate["Deployment", ms.name]["metadata"]["annotations"]["modelservice.dev/conversion-hash"] == STABLE
