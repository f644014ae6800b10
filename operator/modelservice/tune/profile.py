"""Measurements against a running Triton: load a candidate configuration through the model-control API
(explicit mode), then drive closed-loop load at one concurrency for a fixed window.

The configuration override is Triton's JSON ModelConfig, made from the model's own config.pbtxt (the protobuf
of ``convert/repository.py``) with the tuned fields replaced: max_batch_size, dynamic_batching (queue delay and
preferred sizes, or none), the instance count. Triton reloads the model with it (the old one serves until the
new one is ready) and a reload with the same configuration is skipped.

Load: ``concurrency`` asyncio workers (tritonclient.http.aio, one connection each) send one-row requests back to
back; only the last ``window`` seconds after ``warmup`` are measured. Tensor models get random tensors of their
inputs' shapes and dtypes (variable dimensions become 16); text models (a BYTES ``text`` input) get the real
sentences shipped with the package (convert/textdata.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format

from modelservice.api.errors import UserError
from modelservice.convert.repository import ModelConfig, dtype_name
from modelservice.convert.tensors import Array
from modelservice.tune.search import Candidate, Measurement

VARIABLE_DIMENSION = 16  # what a -1 dimension becomes in generated requests
POOL = 64  # distinct requests cycled through
LOAD_TIMEOUT = 300.0


class ProfileError(UserError):
    """Triton refused a configuration or did not answer."""


def apply(base: ModelConfig, candidate: Candidate) -> ModelConfig:
    """``base`` (a ModelConfig) with the candidate's batching and instance count; everything else kept."""
    config = type(base)()
    config.CopyFrom(base)
    config.max_batch_size = candidate.max_batch_size
    config.ClearField("dynamic_batching")
    if candidate.max_queue_delay_microseconds is not None and candidate.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = candidate.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(candidate.preferred_batch_sizes)
    if not config.instance_group:
        config.instance_group.add()
    del config.instance_group[1:]
    config.instance_group[0].count = candidate.instances
    return config


def config_json(config: ModelConfig) -> str:
    """Triton's JSON ModelConfig (the load API's ``config`` override)."""
    text: str = json_format.MessageToJson(config, preserving_proto_field_name=True)
    return text


@dataclass(frozen=True)
class Workload:
    """The requests to send: per request, input name -> (Triton datatype, array with the batch row)."""

    model: str
    requests: list[dict[str, tuple[str, Array]]]


def workload(model: str, config: ModelConfig, sentences: Sequence[str], seed: int = 0) -> Workload:
    """Requests for the model whose config is ``config`` (the one clients call: the ensemble of a text model)."""
    rng = np.random.default_rng(seed)
    batched = config.max_batch_size > 0
    requests: list[dict[str, tuple[str, Array]]] = []
    cycle = itertools.cycle(sentences or ["The quick brown fox jumps over the lazy dog."])
    for _ in range(POOL):
        request: dict[str, tuple[str, Array]] = {}
        for tensor in config.input:
            dtype = dtype_name(tensor.data_type)
            dims = [VARIABLE_DIMENSION if d < 0 else int(d) for d in tensor.dims]
            shape = [1, *dims] if batched else dims
            if dtype in ("STRING", "BYTES"):
                size = int(np.prod(shape)) if shape else 1
                data = np.array([next(cycle).encode("utf-8") for _ in range(size)], dtype=np.object_).reshape(shape)
                request[tensor.name] = ("BYTES", data)
            elif dtype == "BOOL":
                request[tensor.name] = ("BOOL", rng.random(shape) < 0.5)
            elif dtype.startswith(("INT", "UINT")):
                request[tensor.name] = (dtype, rng.integers(0, 10, size=shape).astype(_numpy(dtype)))
            else:
                request[tensor.name] = (dtype, rng.random(shape).astype(_numpy(dtype)))
        requests.append(request)
    return Workload(model, requests)


def _numpy(dtype: str) -> Any:
    from tritonclient.utils import triton_to_np_dtype

    return triton_to_np_dtype(dtype)


@dataclass
class Profiler:
    """One Triton (``url``: host:port of its HTTP endpoint) and the model being tuned."""

    url: str
    tuned_model: str  # the model whose config is tuned (a text model's encoder)
    base_config: ModelConfig  # its config as Triton loads it (the python-backend twin locally)
    workload: Workload
    warmup: float = 1.0
    window: float = 3.0
    loaded: Candidate | None = None

    async def load(self, candidate: Candidate) -> float:
        """Load ``candidate`` (skipped when it is the loaded one) and wait until the requested model is ready;
        the seconds it took."""
        if candidate == self.loaded:
            return 0.0
        import tritonclient.http.aio as aioclient
        from tritonclient.utils import InferenceServerException

        started = time.monotonic()
        client = aioclient.InferenceServerClient(self.url, conn_timeout=LOAD_TIMEOUT)
        try:
            await client.load_model(self.tuned_model, config=config_json(apply(self.base_config, candidate)))
            if self.workload.model != self.tuned_model and not await client.is_model_ready(self.workload.model):
                await client.load_model(self.workload.model)
        except InferenceServerException as exc:
            self.loaded = None
            message = " ".join(str(exc.message()).split())
            raise ProfileError(f"Triton refused configuration {candidate.describe()}: {message}") from None
        finally:
            await client.close()
        self.loaded = candidate
        return time.monotonic() - started

    async def measure(self, concurrency: int) -> Measurement:
        """Closed-loop load at ``concurrency`` for warmup + window seconds; figures of the window."""
        import tritonclient.http.aio as aioclient

        client = aioclient.InferenceServerClient(self.url, conn_limit=max(concurrency, 8), conn_timeout=120.0)
        inputs = [_inputs(aioclient, request) for request in self.workload.requests]
        latencies: list[float] = []
        errors = 0
        state = {"measuring": False, "finished": False}
        counter = itertools.count()

        async def worker() -> None:
            nonlocal errors
            while not state["finished"]:
                request = inputs[next(counter) % len(inputs)]
                start = time.perf_counter()
                try:
                    await client.infer(self.workload.model, request)
                    ok = True
                except Exception:  # counted: a configuration that errs under load does not meet the target
                    ok = False
                elapsed = time.perf_counter() - start
                if state["measuring"]:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors += 1

        async def clock() -> float:
            await asyncio.sleep(self.warmup)
            state["measuring"], opened = True, time.monotonic()
            await asyncio.sleep(self.window)
            state["measuring"] = False
            wall = time.monotonic() - opened
            state["finished"] = True
            return wall

        timing = asyncio.ensure_future(clock())
        try:
            await asyncio.gather(timing, *(worker() for _ in range(concurrency)))
        finally:
            await client.close()
        return figures(latencies, errors, timing.result())


def _inputs(aioclient: Any, request: dict[str, tuple[str, Array]]) -> list[Any]:
    items = []
    for name, (datatype, array) in request.items():
        item = aioclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        items.append(item)
    return items


def figures(latencies: Sequence[float], errors: int, wall: float) -> Measurement:
    """Throughput (completed requests per second of the window; one row each) and percentiles in ms."""
    if not latencies:  # nothing came back within the window: its latency is at least the window
        return Measurement(0.0, wall * 1000.0, wall * 1000.0, wall * 1000.0, max(errors, 1))
    ms = np.asarray(latencies) * 1000.0
    p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
    return Measurement(len(latencies) / wall, p50, p95, p99, errors)
