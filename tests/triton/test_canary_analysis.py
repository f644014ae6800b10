"""Canary analysis against a real Prometheus scraping real tritonservers on loopback (controller/analysis.py).

Four tritonservers serve a python-backend model under the same name, ``classifier``; Prometheus (Debian's
``prometheus`` package) scrapes each one's metrics port every second and attaches its revision as the label
``revision`` (static_configs labels, as a PodMonitor's relabelling would). Each model does 10 ms of work per
request, except:
- ``broken``: raises from ``execute`` on every request (Triton counts nv_inference_request_failure{reason="BACKEND"});
- ``slow``: takes 35 ms per request (3.5x the stable one).
After a few seconds of load through tritonclient, the analysis, with real PromQL through PrometheusClient, must pass
``good``, fail ``broken`` on its error rate and ``slow`` on its latency ratio, and wait when minRequests is not met.
The last tests take the operator's own path (controller/delivery.py's sample, then the rollout state machine) for a
ModelService in namespace ``ml`` (the scrape also attaches ``namespace``, as a PodMonitor does): the healthy canary
is promoted, the failing one aborted, from the same real PromQL results.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from _prometheus import PrometheusProcess, Target, find_prometheus
from modelservice.api.loader import parse
from modelservice.controller import delivery, rollout
from modelservice.controller.analysis import (
    AnalysisRequest,
    AnalysisResult,
    Outcome,
    PrometheusClient,
    RevisionSelector,
    Thresholds,
    analyze,
)
from modelservice.serve.triton import HOST, TritonProcess, find_tritonserver

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        find_prometheus() is None,
        reason="the prometheus binary is not on PATH (Debian: apt-get install prometheus; .ci/run installs it)",
    ),
]

MODEL = "classifier"
NAMESPACE = "ml"
# revision -> (mode, milliseconds of work per request, requests sent)
REVISIONS = {
    "stable": ("ok", 10, 150),
    "good": ("ok", 10, 150),
    "broken": ("fail", 0, 150),
    "slow": ("ok", 35, 120),
}
THRESHOLDS = Thresholds(max_error_rate=0.01, max_latency_ratio=1.5, min_requests=100)
WINDOW_SECONDS = 60  # longer than the whole test: covers every request since Triton started

MODEL_PY = """
import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.mode = parameters["mode"]["string_value"]
        self.delay = float(parameters["delay_ms"]["string_value"]) / 1000

    def execute(self, requests):
        if self.mode == "fail":
            # An exception fails every request of the batch (nv_inference_request_failure); a response carrying
            # an error would be counted as a success by Triton.
            raise pb_utils.TritonModelException("this revision is broken")
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            time.sleep(self.delay)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 2)]))
        return responses
"""


def write_repository(root: Path, mode: str, delay_ms: int) -> Path:
    folder = root / MODEL
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(MODEL_PY, encoding="utf-8")
    parameters = {"mode": mode, "delay_ms": str(delay_ms)}
    (folder / "config.pbtxt").write_text(
        f'name: "{MODEL}"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "x", data_type: TYPE_FP32, dims: [4] }]\n'
        'output [{ name: "y", data_type: TYPE_FP32, dims: [4] }]\n'
        "instance_group [{ kind: KIND_CPU, count: 1 }]\n"
        + "".join(
            f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}\n'
            for key, value in parameters.items()
        ),
        encoding="utf-8",
    )
    return root


@dataclass(frozen=True)
class Stack:
    prometheus: PrometheusProcess
    tritons: dict[str, TritonProcess]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("canary")
    install = find_tritonserver()
    tritons = {
        revision: TritonProcess(
            repository=write_repository(root / revision / "repository", mode, delay_ms),
            log_path=root / revision / "triton.log",
            install=install,
            cache_dir=root / "cache",
        )
        for revision, (mode, delay_ms, _) in REVISIONS.items()
    }
    with contextlib.ExitStack() as stop:
        for process in tritons.values():  # start all, then wait: they load in parallel
            process.start()
            stop.callback(process.stop)
        for process in tritons.values():
            process.wait_ready()
        labels = {"namespace": NAMESPACE}
        targets = [Target(f"{HOST}:{p.ports.metrics}", {**labels, "revision": r}) for r, p in tritons.items()]
        prometheus = stop.enter_context(PrometheusProcess(root / "prometheus", targets))
        # Every target scraped once with its counters at 0, so increase() sees the whole load.
        prometheus.wait_for_series(f'nv_inference_request_success{{model="{MODEL}"}}', len(tritons))
        yield Stack(prometheus, tritons)


def send(process: TritonProcess, requests: int) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(process.http_url)
    try:
        x = httpclient.InferInput("x", [4], "FP32")
        x.set_data_from_numpy(np.arange(4, dtype=np.float32))
        for _ in range(requests):
            with contextlib.suppress(InferenceServerException):
                client.infer(MODEL, [x])
    finally:
        client.close()  # an open keep-alive connection holds Triton's shutdown for its 30 s exit timeout


def counted(prometheus: PrometheusProcess, revision: str) -> float:
    total = 0.0
    for metric in ("nv_inference_request_success", "nv_inference_request_failure"):
        query = f'sum({metric}{{model="{MODEL}",revision="{revision}"}})'
        result = prometheus.get("/api/v1/query", query=query)["data"]["result"]
        total += float(result[0]["value"][1]) if result else 0.0
    return total


@pytest.fixture(scope="module")
def loaded(stack: Stack) -> Stack:
    """Drive every revision at once, then wait until Prometheus has scraped the final counters."""
    threads = [
        threading.Thread(target=send, args=(stack.tritons[revision], requests))
        for revision, (_, _, requests) in REVISIONS.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    deadline = time.monotonic() + 15
    while any(counted(stack.prometheus, r) < n for r, (_, _, n) in REVISIONS.items()):
        assert time.monotonic() < deadline, {r: counted(stack.prometheus, r) for r in REVISIONS}
        time.sleep(0.2)
    return stack


async def analysis_of(stack: Stack, canary: str, thresholds: Thresholds = THRESHOLDS) -> AnalysisResult:
    request = AnalysisRequest(
        canary=RevisionSelector(MODEL, canary),
        stable=RevisionSelector(MODEL, "stable"),
        window_seconds=WINDOW_SECONDS,
        thresholds=thresholds,
    )
    async with PrometheusClient(stack.prometheus.url, timeout=5.0) as client:
        result = await analyze(client, request)
        assert client.queries_sent == 6  # three per revision
    print(f"\n{canary}: {result.outcome}: {result.message}")
    return result


async def test_healthy_canary_passes(loaded: Stack) -> None:
    result = await analysis_of(loaded, "good")
    assert result.outcome == Outcome.PASS, result.message
    assert result.canary is not None and result.canary.failures == 0
    assert result.canary.requests >= 150
    assert result.latency_ratio is not None and result.latency_ratio < 1.5
    assert result.canary.mean_latency_ms is not None and result.canary.mean_latency_ms >= 10  # the model's 10 ms


async def test_failing_canary_fails_on_error_rate(loaded: Stack) -> None:
    result = await analysis_of(loaded, "broken")
    assert result.outcome == Outcome.FAIL, result.message
    assert "> maxErrorRate 0.01" in result.message and "maxLatencyRatio" not in result.message
    assert result.canary is not None and result.canary.successes == 0 and result.canary.failures >= 150
    assert result.canary.error_rate == 1.0


async def test_slow_canary_fails_on_latency_ratio(loaded: Stack) -> None:
    result = await analysis_of(loaded, "slow")
    assert result.outcome == Outcome.FAIL, result.message
    assert "> maxLatencyRatio 1.5" in result.message and "maxErrorRate" not in result.message
    assert result.latency_ratio is not None and result.latency_ratio > 2


async def test_too_little_traffic_waits(loaded: Stack) -> None:
    result = await analysis_of(loaded, "good", Thresholds(min_requests=100_000))
    assert result.outcome == Outcome.WAIT, result.message


async def test_unknown_revision_has_no_traffic(loaded: Stack) -> None:
    result = await analysis_of(loaded, "never-deployed")
    assert result.outcome == Outcome.WAIT and result.canary is not None and result.canary.requests == 0


def in_last_step(canary: str, now: datetime.datetime) -> dict[str, object]:
    """A ModelService named like the model, whose canary ``canary`` holds its only step, paused long enough."""
    started = now - datetime.timedelta(minutes=2)
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": MODEL, "namespace": NAMESPACE, "uid": "u-1", "generation": 2},
        "spec": {
            "model": {"uri": "s3://models/classifier/model.onnx", "format": "onnx"},
            "rollout": {
                "strategy": "canary",
                "steps": [{"weight": 50, "pause": "1m"}],
                "analysis": {"interval": f"{WINDOW_SECONDS}s", "maxErrorRate": 0.01, "maxLatencyRatio": 1.5},
            },
        },
        "status": {
            "rollout": {
                "phase": "Paused",
                "step": 1,
                "weight": 50,
                "stableRevision": "stable",
                "canaryRevision": canary,
                "stepStartedAt": rollout.rfc3339(started),
            },
            "revisions": [
                {"hash": canary, "role": "Canary", "outcome": "Serving", "servedFrom": rollout.rfc3339(started)},
                {"hash": "stable", "role": "Stable", "outcome": "Serving"},
            ],
        },
    }


async def decided(stack: Stack, canary: str) -> rollout.Decision:
    now = datetime.datetime.now(datetime.UTC)
    ms = parse(in_last_step(canary, now), "test")
    state = delivery.state_of(ms)
    async with PrometheusClient(stack.prometheus.url, timeout=5.0) as client:
        sample = await delivery.take_sample(client, ms, state, now)
        assert client.queries_sent == 6
    assert sample is not None
    observed = rollout.Observed(desired=rollout.Revision(canary), ready=True)
    assert ms.spec.rollout is not None
    return rollout.step(ms.spec.rollout, state, observed, sample, now, history_limit=5)


async def test_the_operator_promotes_a_healthy_canary_from_real_promql(loaded: Stack) -> None:
    decision = await decided(loaded, "good")
    assert decision.rollout is not None and decision.rollout.phase == "Promoted", decision.rollout
    assert decision.stable == "good" and decision.weights == {"good": 100}
    assert decision.rollout.analysis is not None and decision.rollout.analysis.verdict == "Passed"
    assert decision.rollout.analysis.requests >= 150


async def test_the_operator_aborts_a_failing_canary_from_real_promql(loaded: Stack) -> None:
    decision = await decided(loaded, "broken")
    assert decision.rollout is not None and decision.rollout.phase == "Aborted", decision.rollout
    assert decision.stable == "stable" and decision.weights == {"stable": 100}
    stalled = next(c for c in decision.conditions if c.type == "Stalled")
    assert stalled.status == "True" and stalled.reason == "CanaryAborted"
    assert "error rate 1" in stalled.message


async def test_the_operator_aborts_a_slow_canary_from_real_promql(loaded: Stack) -> None:
    decision = await decided(loaded, "slow")
    assert decision.rollout is not None and decision.rollout.phase == "Aborted", decision.rollout
    assert decision.rollout.analysis is not None and (decision.rollout.analysis.latency_ratio or 0) > 1.5
