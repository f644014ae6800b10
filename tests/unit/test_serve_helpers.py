"""Pure helpers of ``modelservice infer`` and ``modelservice serve`` (inputs, summaries, examples)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from modelservice.api.models import TensorSpec
from modelservice.serve.infer import (
    InferError,
    ModelInfo,
    TensorInfo,
    describe_output,
    npz_inputs,
    percentile_ms,
    random_inputs,
)
from modelservice.serve.local import curl_example

INFO = ModelInfo(
    name="m",
    version="1",
    max_batch_size=8,
    inputs=[TensorInfo("image", "FP32", [1, 8, 8]), TensorInfo("ids", "INT64", [-1]), TensorInfo("mask", "BOOL", [3])],
    outputs=[TensorInfo("logits", "FP32", [10])],
)


def test_random_inputs_follow_declared_shapes_and_types_and_are_seeded() -> None:
    arrays = random_inputs(INFO, batch=4, seed=7)
    assert arrays["image"].shape == (4, 1, 8, 8) and arrays["image"].dtype == np.float32
    assert arrays["image"].min() >= 0.0 and arrays["image"].max() < 1.0
    assert arrays["ids"].shape == (4, 8) and arrays["ids"].dtype == np.int64  # -1 becomes 8
    assert arrays["mask"].dtype == np.bool_
    again = random_inputs(INFO, batch=4, seed=7)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    assert not np.array_equal(arrays["image"], random_inputs(INFO, batch=4, seed=8)["image"])


def test_unbatched_models_get_no_batch_dimension() -> None:
    info = ModelInfo("m", "1", 0, [TensorInfo("x", "FP16", [2, 3])], [])
    assert random_inputs(info, batch=5, seed=0)["x"].shape == (2, 3)


def test_npz_inputs_by_name_or_x_and_first_rows(tmp_path: Path) -> None:
    single = ModelInfo("m", "1", 8, [TensorInfo("image", "FP32", [1, 8, 8])], [])
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(10 * 64, dtype=np.float64).reshape(10, 1, 8, 8), y=np.arange(10))
    arrays = npz_inputs(path, single, batch=3)
    assert arrays["image"].shape == (3, 1, 8, 8) and arrays["image"].dtype == np.float32
    assert arrays["image"][2, 0, 0, 0] == 128.0
    with pytest.raises(InferError, match=r"d.npz: no array named 'image' \(arrays: x, y\)"):
        npz_inputs(path, INFO, batch=1)
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(InferError, match=r"bad\.npz: cannot read \.npz"):
        npz_inputs(bad, single, batch=1)


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    single = ModelInfo("m", "1", 8, [TensorInfo("image", "FP32", [1])], [])
    with pytest.raises(InferError, match=r"cannot read \.npz"):
        npz_inputs(path, single, batch=1)


def test_describe_output_shows_argmax_for_classifiers() -> None:
    logits = np.array([[0.1, 2.0, 0.3], [5.0, 0.0, 1.0]], dtype=np.float32)
    line = describe_output("logits", "FP32", logits, batched=True)
    assert line == "output logits: FP32 [2, 3] min 0 max 5 argmax [1, 0]"
    assert describe_output("n", "INT64", np.array([3, 4]), batched=False) == (
        "output n: INT64 [2] min 3 max 4 values [3.0, 4.0]"
    )


def test_percentiles_in_milliseconds() -> None:
    assert percentile_ms([0.001, 0.002, 0.003], 50) == pytest.approx(2.0)


def test_curl_example_is_a_valid_request() -> None:
    example = curl_example(
        "http://127.0.0.1:8000", "digits", [TensorSpec(name="image", dtype="FP32", shape=[1, 8, 8])], batched=True
    )
    assert example is not None
    argv = shlex.split(example)
    assert argv[:3] == ["curl", "-s", "http://127.0.0.1:8000/v2/models/digits/infer"]
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert len(body["inputs"][0]["data"]) == 64
    big = [TensorSpec(name="image", dtype="FP32", shape=[3, 224, 224])]
    assert curl_example("http://h:1", "m", big, batched=True) is None
