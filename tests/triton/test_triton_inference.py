"""Converted digits models on a real tritonserver: parity with torch over HTTP and gRPC, health, metrics,
dynamic batching as the spec says (read back from Triton) and actually forming batches."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from _serving import MODELS, RunningTriton, model_named, torch_logits

pytestmark = pytest.mark.triton

TOLERANCE = 1e-4  # fp32 ONNX Runtime / TorchScript vs eager torch


def _batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


@pytest.mark.parametrize("name", [m.name for m in MODELS])
def test_http_inference_equals_torch(
    triton: RunningTriton, test_split: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    model = model_named(name)
    x, y = test_split
    client = httpclient.InferenceServerClient(triton.http_url)
    size = int(model.serving["maxBatchSize"])
    outputs = []
    for batch in _batches(x, size):
        item = httpclient.InferInput("image", list(batch.shape), "FP32")
        item.set_data_from_numpy(batch, binary_data=True)
        outputs.append(client.infer(name, [item]).as_numpy("logits"))
    logits = np.concatenate(outputs)
    expected = torch_logits(model.kind, x)
    assert logits.shape == (len(x), 10)
    np.testing.assert_allclose(logits, expected, atol=model.tolerance, rtol=0)
    assert (logits.argmax(axis=1) == y).mean() > 0.9


@pytest.mark.parametrize("name", [m.name for m in MODELS])
def test_grpc_inference_equals_torch(
    triton: RunningTriton, test_split: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    model = model_named(name)
    x, _ = test_split
    x = x[:64]
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    outputs = []
    for batch in _batches(x, 8):
        item = grpcclient.InferInput("image", list(batch.shape), "FP32")
        item.set_data_from_numpy(batch)
        outputs.append(
            client.infer(name, [item], outputs=[grpcclient.InferRequestedOutput("logits")]).as_numpy("logits")
        )
    np.testing.assert_allclose(np.concatenate(outputs), torch_logits(model.kind, x), atol=model.tolerance, rtol=0)


def test_health_endpoints(triton: RunningTriton) -> None:
    for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/digits-cnn/ready"):
        with urllib.request.urlopen(f"http://{triton.http_url}{path}", timeout=5) as response:
            assert response.status == 200, path
    assert grpcclient.InferenceServerClient(triton.grpc_url).is_server_ready()


def test_metrics_count_successes_and_queue_time(
    triton: RunningTriton, test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    item = httpclient.InferInput("image", [1, 1, 8, 8], "FP32")
    item.set_data_from_numpy(test_split[0][:1])
    for _ in range(3):
        client.infer("digits-mlp", [item])
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as response:
        text = response.read().decode()
    success = re.search(r'^nv_inference_request_success\{model="digits-mlp",version="1"\} (\d+)', text, re.M)
    assert success is not None, text[:2000]
    assert int(success.group(1)) >= 3
    queue = re.search(r'^nv_inference_queue_duration_us\{model="digits-mlp",version="1"\} (\d+)', text, re.M)
    assert queue is not None


def test_dynamic_batching_read_back_from_triton(triton: RunningTriton) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    cnn = client.get_model_config("digits-cnn")
    assert cnn["max_batch_size"] == 16
    assert int(cnn["dynamic_batching"]["max_queue_delay_microseconds"]) == 20000
    assert [int(s) for s in cnn["dynamic_batching"]["preferred_batch_size"]] == [4, 8]
    assert cnn["backend"] == "python"
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in cnn["input"]] == [
        ("image", "TYPE_FP32", [1, 8, 8])
    ]
    mlp = client.get_model_config("digits-mlp")
    assert mlp["max_batch_size"] == 8
    assert "dynamic_batching" not in mlp
    grpc = grpcclient.InferenceServerClient(triton.grpc_url).get_model_config("digits-cnn").config
    assert grpc.dynamic_batching.max_queue_delay_microseconds == 20000
    assert list(grpc.dynamic_batching.preferred_batch_size) == [4, 8]


def _stats(client: httpclient.InferenceServerClient, name: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(name)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


async def _concurrent(url: str, name: str, x: np.ndarray) -> list[np.ndarray]:
    import tritonclient.http.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    try:

        async def one(row: np.ndarray) -> np.ndarray:
            item = aioclient.InferInput("image", [1, 1, 8, 8], "FP32")
            item.set_data_from_numpy(row[None])
            result = await client.infer(name, [item])
            out: np.ndarray = result.as_numpy("logits")[0]
            return out

        return list(await asyncio.gather(*(one(row) for row in x)))
    finally:
        await client.close()


def test_dynamic_batcher_merges_concurrent_requests_and_splits_answers(
    triton: RunningTriton, test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    """32 concurrent single-sample requests: fewer executions than requests (batches were formed by Triton and
    run as one session call), and every requester gets exactly its own row back."""
    client = httpclient.InferenceServerClient(triton.http_url)
    x = test_split[0][:32]
    before = _stats(client, "digits-cnn")
    answers = asyncio.run(_concurrent(triton.http_url, "digits-cnn", x))
    after = _stats(client, "digits-cnn")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 32
    assert executions < 32, f"no batching: {executions} executions for 32 requests"
    np.testing.assert_allclose(np.stack(answers), torch_logits("cnn", x), atol=TOLERANCE, rtol=0)


def test_without_dynamic_batching_each_request_runs_alone(
    triton: RunningTriton, test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    x = test_split[0][:16]
    before = _stats(client, "digits-mlp")
    answers = asyncio.run(_concurrent(triton.http_url, "digits-mlp", x))
    after = _stats(client, "digits-mlp")
    assert after[0] - before[0] == 16
    assert after[1] - before[1] == 16
    np.testing.assert_allclose(np.stack(answers), torch_logits("mlp", x), atol=TOLERANCE, rtol=0)


def test_bad_requests_are_refused(triton: RunningTriton) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    too_big = httpclient.InferInput("image", [9, 1, 8, 8], "FP32")
    too_big.set_data_from_numpy(np.zeros((9, 1, 8, 8), np.float32))
    with pytest.raises(InferenceServerException, match="batch"):
        client.infer("digits-mlp", [too_big])
    wrong_shape = httpclient.InferInput("image", [1, 64], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 64), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("digits-cnn", [wrong_shape])
