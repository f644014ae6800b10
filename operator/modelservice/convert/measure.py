"""Latency of converted models (ONNX Runtime sessions, TensorRT engines), measured in interleaved rounds (so a
busy machine slows every candidate alike) and summarised by the median."""

from __future__ import annotations

import time

import numpy as np

from modelservice.convert.tensors import Array
from modelservice.convert.verify import Runner


def interleaved_latency(
    runners: dict[str, Runner],
    inputs: dict[str, Array],
    *,
    min_rounds: int = 7,
    max_rounds: int = 200,
    budget_s: float = 2.0,
) -> dict[str, float]:
    """Median milliseconds per run of each runner on ``inputs`` (one batch)."""
    for runner in runners.values():  # warm-up: allocations, kernel selection
        runner(inputs)
        runner(inputs)
    times: dict[str, list[float]] = {name: [] for name in runners}
    started = time.perf_counter()
    for round_index in range(max_rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner(inputs)
            times[name].append(time.perf_counter() - t0)
        if round_index + 1 >= min_rounds and time.perf_counter() - started > budget_s:
            break
    return {name: float(np.median(values)) * 1000 for name, values in times.items()}
