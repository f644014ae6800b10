"""ONNX models with external data (convert/external.py) and conversions that install them: real ONNX, real ONNX
Runtime, real torch on scikit-learn's digits (tests/lib/_digits.py).

The pipeline tests force external data on small models with ``external_data_threshold=0`` (a model past 2 GiB
takes minutes and gigabytes: hack/bench-large.py measures that one)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import _digits
from modelservice.api.errors import UserError
from modelservice.api.loader import load_one
from modelservice.convert import external, targets
from modelservice.convert.pipeline import ConvertOptions, convert
from modelservice.convert.report import Report
from modelservice.convert.verify import ort_runner
from modelservice.serve.pybackend import make_runnable
from modelservice.serve.triton import TritonInstall

# ------------------------------------------------------------------------------------- external.py alone


def _graph_model(seed: int = 0) -> onnx.ModelProto:
    """y = (x @ A) @ B + c: A 300x300 (360 KB: external, not aligned), B 300x600 (720 KB) and D 600x600
    (1.4 MB: external, aligned), c (400 B: inline)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((300, 300), dtype=np.float32) / 20
    b = rng.standard_normal((300, 600), dtype=np.float32) / 20
    d = rng.standard_normal((600, 600), dtype=np.float32) / 30
    c = rng.standard_normal((100,), dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["h1"]),
        helper.make_node("MatMul", ["h1", "B"], ["h2"]),
        helper.make_node("MatMul", ["h2", "D"], ["h3"]),
        helper.make_node("Slice", ["h3", "starts", "ends", "axes"], ["h4"]),
        helper.make_node("Add", ["h4", "c"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v, n) for n, v in (("A", a), ("B", b), ("D", d), ("c", c))]
    inits += [numpy_helper.from_array(np.array([v], dtype=np.int64), n) for n, v in (("starts", 0), ("ends", 100))]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 300])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 100])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


X = np.random.default_rng(1).standard_normal((4, 300), dtype=np.float32)


def _run(path: Path) -> np.ndarray:
    return ort_runner(path)({"x": X})[0]


def _offsets(path: Path) -> dict[str, tuple[str, int, int]]:
    found = {}
    for tensor in external.tensors(external.load_graph(path)):
        values = {e.key: e.value for e in tensor.external_data}
        if values:
            found[tensor.name] = (values["location"], int(values.get("offset", 0)), int(values["length"]))
    return found


def test_save_model_inline_below_the_threshold_external_above(tmp_path: Path) -> None:
    expected = _run(_save(tmp_path / "plain.onnx", _graph_model(), threshold=1 << 30))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]
    path = _save(tmp_path / "m.onnx", _graph_model(), threshold=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data", "plain.onnx"]
    offsets = _offsets(path)
    assert set(offsets) == {"A", "B", "D"}  # c (400 B) and the int64 constants stay in the graph
    assert {location for location, _, _ in offsets.values()} == {"m.onnx.data"}  # one relative file
    assert offsets["D"][1] % external.ALIGNMENT == 0  # 1.4 MB: starts at a 64 KiB boundary
    assert path.stat().st_size < 2000 < external.data_path(path).stat().st_size
    np.testing.assert_array_equal(_run(path), expected)
    # Saving a small model over it leaves no stale data file behind.
    _save(path, _graph_model(), threshold=1 << 30)
    assert not external.data_path(path).exists()
    np.testing.assert_array_equal(_run(path), expected)


def _save(path: Path, model: onnx.ModelProto, threshold: int) -> Path:
    external.save_model(model, path, threshold)
    return path


def test_copy_model_carries_and_consolidates_the_data_where_a_plain_copy_breaks(tmp_path: Path) -> None:
    source = tmp_path / "src" / "model.onnx"
    source.parent.mkdir()
    # ONNX's own writer with one file per tensor, as the TorchScript exporter does past 2 GiB.
    onnx.save_model(_graph_model(), str(source), save_as_external_data=True, all_tensors_to_one_file=False)
    assert len(external.data_files(source)) == 3
    expected = _run(source)
    naive = tmp_path / "naive" / "model.onnx"
    naive.parent.mkdir()
    shutil.copyfile(source, naive)  # the bug this module exists for: the graph without its weights
    with pytest.raises(Exception, match=r"(?i)external|exist|no such file"):
        _run(naive)
    target = tmp_path / "out" / "model.onnx"
    external.copy_model(source, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    np.testing.assert_array_equal(_run(target), expected)
    assert len(external.data_files(source)) == 3  # the source is untouched
    # In place: the per-tensor files become one.
    external.copy_model(source, source)
    assert sorted(p.name for p in source.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    np.testing.assert_array_equal(_run(source), expected)


def test_digest_and_size_cover_the_model_and_its_data_in_order(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.onnx", _graph_model(), threshold=0)
    data = external.data_path(path)
    assert external.model_files(path) == [path, data]
    digest, files = external.artifact_digest(path)
    assert digest == hashlib.sha256(path.read_bytes() + data.read_bytes()).hexdigest()
    assert [(f.path, f.sha256, f.size_bytes) for f in files] == [
        (p, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in (path, data)
    ]
    assert external.model_size(path) == path.stat().st_size + data.stat().st_size
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert external.model_sha256(path) != digest  # a change in the data file changes the model's digest
    inline = _save(tmp_path / "i.onnx", _graph_model(), threshold=1 << 30)
    assert external.model_sha256(inline) == hashlib.sha256(inline.read_bytes()).hexdigest()


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "missing.bin"])
def test_locations_outside_the_folder_or_missing_are_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    path = _save(tmp_path / "m" / "m.onnx", _graph_model(), threshold=0)
    model = external.load_graph(path)
    for tensor in external.tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    external.write_graph(model, path)
    with pytest.raises(UserError, match=r"not a file inside the model's folder|does not exist"):
        external.copy_model(path, tmp_path / "copy.onnx")
    with pytest.raises(UserError):
        external.artifact_digest(path)


def test_install_model_lays_out_by_size(tmp_path: Path) -> None:
    work = _save(tmp_path / "work.onnx", _graph_model(), threshold=0)
    expected = _run(work)
    small = tmp_path / "small" / "model.onnx"
    external.install_model(work, small, threshold=1 << 30)
    assert sorted(p.name for p in small.parent.iterdir()) == ["model.onnx"]
    large = tmp_path / "large" / "model.onnx"
    external.install_model(small, large, threshold=1000)  # an inline model past the threshold moves out
    assert sorted(p.name for p in large.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    for path in (small, large):
        np.testing.assert_array_equal(_run(path), expected)


@pytest.mark.parametrize(
    ("text", "value"), [("", 1 << 30), ("0", 0), ("4096", 4096), ("2Mi", 2 << 20), ("1Gi", 1 << 30)]
)
def test_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch, text: str, value: int) -> None:
    monkeypatch.setenv(external.THRESHOLD_ENV, text)
    assert external.threshold_from_env() == value
    assert ConvertOptions().external_data_threshold == value


@pytest.mark.parametrize("text", ["abc", "-1", "1.5Gi"])
def test_a_bad_threshold_is_a_user_error(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(external.THRESHOLD_ENV, text)
    with pytest.raises(UserError, match=external.THRESHOLD_ENV):
        ConvertOptions()


# ----------------------------------------------------------------------------------------- conversions


def run(yaml_path: Path, out: Path, cache: Path | None = None, **options: Any) -> Report:
    options.setdefault("external_data_threshold", 0)
    return convert(
        load_one(yaml_path),
        out,
        ConvertOptions(cache_dir=cache or out.parent / "cache", progress=False, measure_seconds=0.3, **options),
    )


def example(tmp_path: Path, kind: str = "mlp", **kwargs: Any) -> Path:
    return _digits.write_example(tmp_path / "ex", kind, **kwargs)


def _installed(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))


def _check_installed(out: Path, report: Report, kind: str, atol: float | None) -> None:
    """model.onnx + model.onnx.data and nothing else; ORT runs them from the installed folder and matches the
    torch original (within ``atol``; None: int8, the same top-1 class on 95 % of the test split); the report's
    digest and size cover both files."""
    version = out / "digits" / "1"
    assert _installed(out) == [
        "digits",
        "digits/1",
        "digits/1/model.onnx",
        "digits/1/model.onnx.data",
        "digits/config.pbtxt",
        "report.json",
    ]
    assert external.data_files(version / "model.onnx") == [version / "model.onnx.data"]
    for file in version.iterdir():  # readable by Triton, which may run as another user than the conversion
        assert file.stat().st_mode & 0o444 == 0o444, file.name
    split = _digits.load_split()
    import torch

    with torch.no_grad():
        expected = _digits.train(kind)(torch.from_numpy(split.x_test)).numpy()
    installed = ort_runner(version / "model.onnx")({"image": split.x_test})[0]
    if atol is None:
        assert (installed.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.95
    else:
        np.testing.assert_allclose(installed, expected, atol=atol)
    artifact = report.data["artifact"]
    graph, data = (version / "model.onnx").read_bytes(), (version / "model.onnx.data").read_bytes()
    assert artifact["sha256"] == hashlib.sha256(graph + data).hexdigest()
    assert artifact["sizeBytes"] == len(graph) + len(data)
    assert [f["path"] for f in artifact["files"]] == ["digits/1/model.onnx", "digits/1/model.onnx.data"]
    assert artifact["files"][1]["sha256"] == hashlib.sha256(data).hexdigest()
    assert set(report.summary()["artifact"]) == {"uri", "format", "precision", "sha256", "sizeBytes", "sourceSha256"}
    assert json.loads((out / "report.json").read_text())["artifact"] == artifact
    assert report.data["verification"]["passed"]


@pytest.mark.slow
def test_fp32_installs_model_and_data_verified_there_and_the_cache_restores_both(tmp_path: Path) -> None:
    yaml_path = example(tmp_path)
    cache = tmp_path / "cache"
    out = tmp_path / "a"
    report = run(yaml_path, out, cache)
    _check_installed(out, report, "mlp", atol=1e-4)
    assert report.data["verification"]["accuracy"] == pytest.approx(_digits.accuracy(_digits.train("mlp")))
    candidate = report.data["candidates"][0]
    assert candidate["sizeBytes"] >= report.data["artifact"]["sizeBytes"] - 4096  # graph + data, not the graph
    hit = run(yaml_path, tmp_path / "b", cache)
    assert hit.cache_hit
    _check_installed(tmp_path / "b", hit, "mlp", atol=1e-4)
    for name in ("digits/1/model.onnx", "digits/1/model.onnx.data"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # The default threshold keeps a small model in one file, bytes as they were before external data existed.
    run(yaml_path, tmp_path / "c", use_cache=False, external_data_threshold=1 << 30)
    assert "digits/1/model.onnx.data" not in _installed(tmp_path / "c")
    np.testing.assert_array_equal(
        ort_runner(tmp_path / "c" / "digits/1/model.onnx")({"image": _digits.load_split().x_test})[0],
        ort_runner(out / "digits/1/model.onnx")({"image": _digits.load_split().x_test})[0],
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "precision", "method", "atol"),
    [("mlp", "fp16", "dynamic", 0.01), ("encoder", "int8", "dynamic", None), ("cnn", "int8", "static", None)],
)
def test_every_variant_path_carries_its_data(
    tmp_path: Path, kind: str, precision: str, method: str, atol: float | None
) -> None:
    out = tmp_path / "repo"
    report = run(example(tmp_path, kind, precision=precision, method=method), out)
    _check_installed(out, report, kind, atol=atol)
    assert report.data["artifact"]["precision"] == precision
    if precision == "int8":
        assert report.data["candidates"][0]["quantizedOps"] > 0 and report.data["candidates"][0]["floatOps"] == 0


@pytest.mark.slow
def test_auto_measures_variants_with_external_data(tmp_path: Path) -> None:
    report = run(example(tmp_path, "cnn", precision="auto", method="static"), tmp_path / "repo")
    assert {c["name"] for c in report.data["candidates"]} == {"fp32", "fp16", "int8-dynamic", "int8-static"}
    assert all(c["passed"] and c["latencyMs"] for c in report.data["candidates"] if c["name"] != "int8-dynamic")
    _check_installed(tmp_path / "repo", report, "cnn", atol=None)


def _corrupt_after_install(monkeypatch: pytest.MonkeyPatch, damage: Any) -> None:
    """Let the real install_model write staging/<name>/1/, then damage what it wrote."""
    real = targets.install_model

    def install_then_damage(source: Path, target: Path, threshold: int) -> None:
        real(source, target, threshold)
        damage(target)

    monkeypatch.setattr(targets, "install_model", install_then_damage)


def _flip_weights(target: Path) -> None:
    data = external.data_path(target)
    raw = np.frombuffer(data.read_bytes(), dtype=np.float32).copy()
    raw[: len(raw) // 2] *= -1.0  # weights as wrong as a mixed-up file: the model still loads and runs
    data.write_bytes(raw.tobytes())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_flip_weights, "installed digits/1/model.onnx failed verification"),
        (lambda target: external.data_path(target).unlink(), "installed digits/1/model.onnx does not run"),
    ],
    ids=["tampered-data", "missing-data"],
)
def test_a_broken_install_fails_verification_and_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Any, message: str
) -> None:
    _corrupt_after_install(monkeypatch, damage)
    out = tmp_path / "repo"
    with pytest.raises(UserError, match=message):
        run(example(tmp_path), out, use_cache=False)
    assert not (out / "digits").exists()


@pytest.mark.slow
def test_the_old_copy_of_model_onnx_alone_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the issue's user got (the graph copied, its data left in the temporary folder), now refused."""
    monkeypatch.setattr(targets, "install_model", lambda source, target, threshold: shutil.copyfile(source, target))
    with pytest.raises(UserError, match="does not run"):
        run(example(tmp_path), tmp_path / "repo", use_cache=False)


def _onnx_source(tmp_path: Path) -> Path:
    """An ONNX source folder whose weights are in model.onnx.data (exported from the trained MLP)."""
    import torch

    folder = tmp_path / "ex" / "src"
    folder.mkdir(parents=True)
    plain = tmp_path / "plain.onnx"
    with torch.no_grad():
        torch.onnx.export(
            _digits.train("mlp"),
            (torch.from_numpy(_digits.load_split().x_test[:2]),),
            str(plain),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    external.save_model(onnx.load(str(plain)), folder / "model.onnx", 0)
    _digits.write_test_npz(folder / "test.npz")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "none"])
def test_an_onnx_source_with_external_data_converts_and_passes_through(tmp_path: Path, target: str) -> None:
    _onnx_source(tmp_path)
    yaml_path = _digits.write_modelservice(
        tmp_path / "ex" / "ms.yaml",
        name="digits",
        source="src",  # the folder: model.onnx and model.onnx.data travel together
        kind=None,
        format="onnx",
        target=target,
        data_uri="src/test.npz",
        weights=None,
    )
    out = tmp_path / "repo"
    report = run(yaml_path, out)
    _check_installed(out, report, "mlp", atol=1e-4)


@pytest.mark.slow
def test_the_local_serve_twin_carries_the_data_file(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    run(example(tmp_path), out)
    twin = tmp_path / "runnable"
    wheel = TritonInstall(binary=tmp_path / "bin" / "tritonserver", source="nvidia-pytriton")
    make_runnable(out, twin, wheel)
    version = twin / "digits" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.onnx.data", "model.py"]
    x = _digits.load_split().x_test
    np.testing.assert_array_equal(
        ort_runner(version / "model.onnx")({"image": x})[0], ort_runner(out / "digits/1/model.onnx")({"image": x})[0]
    )


@pytest.mark.slow
def test_an_onnx_file_uri_without_its_data_file_is_a_clear_error(tmp_path: Path) -> None:
    _onnx_source(tmp_path)
    yaml_path = _digits.write_modelservice(
        tmp_path / "ex" / "ms.yaml",
        name="digits",
        source="src/model.onnx",  # the file alone: its model.onnx.data is not fetched
        kind=None,
        format="onnx",
        data_uri="src/test.npz",
        weights=None,
    )
    with pytest.raises(UserError, match=r"spec\.model\.uri: model\.onnx: not a valid ONNX model"):
        run(yaml_path, tmp_path / "repo")


def test_a_served_as_is_repository_reports_the_model_file_with_its_external_data(tmp_path: Path) -> None:
    """format triton-repository: the artifact is model.onnx (not its larger data file), digest and size over both."""
    import hashlib

    import onnx
    import yaml
    from onnx import TensorProto, helper, numpy_helper

    from modelservice.api.loader import load_one
    from modelservice.convert.pipeline import ConvertOptions, convert

    weight = numpy_helper.from_array(np.ones((64, 256), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 256])],
        [weight],
    )
    version = tmp_path / "repo" / "dense" / "1"
    version.mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save_model(model, str(version / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    config = 'name: "dense"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    config += (
        'input [{name: "x" data_type: TYPE_FP32 dims: [64]}]\noutput [{name: "y" data_type: TYPE_FP32 dims: [256]}]\n'
    )
    (tmp_path / "repo" / "dense" / "config.pbtxt").write_text(config)
    spec = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "dense"},
        "spec": {"model": {"uri": "repo", "format": "triton-repository"}, "conversion": {"target": "none"}},
    }
    (tmp_path / "ms.yaml").write_text(yaml.safe_dump(spec))
    options = ConvertOptions(cache_dir=tmp_path / "cache", progress=False)
    artifact = convert(load_one(tmp_path / "ms.yaml"), tmp_path / "out", options).data["artifact"]
    installed = tmp_path / "out" / "dense" / "1"
    assert artifact["uri"] == "dense/1/model.onnx"
    both = (installed / "model.onnx").read_bytes() + (installed / "model.onnx.data").read_bytes()
    assert artifact["sha256"] == hashlib.sha256(both).hexdigest()
    assert artifact["sizeBytes"] == len(both)
