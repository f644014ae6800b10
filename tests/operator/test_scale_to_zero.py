"""Scale to zero with KEDA, the real operator against the emulator: a running ModelService moves from its HPA to
a KEDA ScaledObject (and the HTTP add-on's HTTPScaledObject) when minReplicas becomes 0, and back.

KEDA's admission webhook refuses a ScaledObject while another HPA scales the same Deployment (422, "the workload
is already managed by the hpa"): emulated by a fault that matches creations of ScaledObjects while the operator's
HPA exists. What stays simplified: the emulator has no KEDA controller, so nothing makes KEDA's own HPA or scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kmock import Request, ResourceInfo, resource

from emulator import ApiServerEmulator, Fault, wait_for
from test_lifecycle import DEPLOYMENTS, HPAS, MS_PATH, NS, condition, converge_ready, ms_status, patch

SCALEDOBJECTS = resource("keda.sh", "v1alpha1", "scaledobjects")
HTTPSCALEDOBJECTS = resource("http.keda.sh", "v1alpha1", "httpscaledobjects")
VERBS = {"get", "list", "watch", "create", "patch", "delete"}


@dataclass
class KedaWebhook(Fault):
    """Refuses a ScaledObject for digits while an HPA named digits scales the Deployment."""

    emulator: ApiServerEmulator | None = None

    def matches(self, request: Request) -> bool:
        assert self.emulator is not None
        creating = request.method.value == "POST" and bool(self.path.search(request.url.path))
        return creating and self.emulator.get(HPAS, NS, "digits") is not None


def declare_keda(emulator: ApiServerEmulator) -> KedaWebhook:
    emulator.resources["keda.sh/v1alpha1/scaledobjects"] = ResourceInfo(
        namespaced=True, kind="ScaledObject", singular="scaledobject", verbs=VERBS
    )
    emulator.resources["http.keda.sh/v1alpha1/httpscaledobjects"] = ResourceInfo(
        namespaced=True, kind="HTTPScaledObject", singular="httpscaledobject", verbs=VERBS
    )
    import re

    webhook = KedaWebhook("POST", re.compile(r"/scaledobjects$"), 422, times=1_000_000, emulator=emulator)
    emulator.state.faults.append(webhook)
    return webhook


async def test_hpa_to_scaled_object_and_back(emulator: ApiServerEmulator, start_operator: Any) -> None:
    webhook = declare_keda(emulator)
    await start_operator()
    await converge_ready(emulator, autoscaling={"minReplicas": 1, "maxReplicas": 3})
    assert emulator.get(HPAS, NS, "digits") is not None

    await patch(
        emulator, f"{MS_PATH}/digits", {"spec": {"autoscaling": {"minReplicas": 0, "keda": {"httpAddOn": True}}}}
    )
    scaled = await wait_for(lambda: emulator.get(SCALEDOBJECTS, NS, "digits"), what="the ScaledObject")
    assert webhook.hits >= 1  # KEDA refused it while the HPA was there; the operator removed the HPA, then retried
    assert emulator.get(HPAS, NS, "digits") is None
    assert scaled["spec"]["minReplicaCount"] == 0 and scaled["spec"]["scaleTargetRef"]["name"] == "digits"
    await wait_for(lambda: emulator.get(HTTPSCALEDOBJECTS, NS, "digits"), what="the HTTPScaledObject")
    await wait_for(lambda: ms_status(emulator).get("phase") == "Ready", what="Ready again")
    assert condition(ms_status(emulator), "Stalled").get("status") != "True"
    assert "replicas" not in emulator.get(DEPLOYMENTS, NS, "digits")["spec"]  # KEDA's HPA owns them

    await patch(emulator, f"{MS_PATH}/digits", {"spec": {"autoscaling": {"minReplicas": 1, "keda": None}}})
    await wait_for(lambda: emulator.get(HPAS, NS, "digits"), what="the HPA again")
    await wait_for(lambda: emulator.get(SCALEDOBJECTS, NS, "digits") is None, what="the ScaledObject removed")
    await wait_for(lambda: emulator.get(HTTPSCALEDOBJECTS, NS, "digits") is None, what="the HTTPScaledObject removed")
