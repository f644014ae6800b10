"""``modelservice convert`` end to end in-process: real torch, ONNX and ONNX Runtime on models trained on
scikit-learn's digits in the test session (see tests/lib/_digits.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml

import _digits
from modelservice.api.errors import UserError
from modelservice.api.loader import load_one
from modelservice.convert.pipeline import ConvertOptions, convert
from modelservice.convert.report import Report
from modelservice.convert.repository import data_type, read_config
from modelservice.convert.verify import ort_runner

pytestmark = pytest.mark.slow


def run(yaml_path: Path, out: Path, cache: Path | None = None, **options: Any) -> Report:
    return convert(
        load_one(yaml_path),
        out,
        ConvertOptions(cache_dir=cache or out.parent / "cache", progress=False, measure_seconds=0.3, **options),
    )


def example(tmp_path: Path, kind: str, **kwargs: Any) -> Path:
    return _digits.write_example(tmp_path / "ex", kind, **kwargs)


def torch_logits(kind: str, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _digits.train(kind)(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]


def installed_logits(out: Path, x: np.ndarray, name: str = "digits") -> np.ndarray:
    return ort_runner(out / name / "1" / "model.onnx")({"image": x})[0]


def test_state_dict_fp32_mlp_writes_a_verified_triton_repository(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    report = run(example(tmp_path, "mlp"), out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "digits",
        "digits/1",
        "digits/1/model.onnx",
        "digits/config.pbtxt",
        "report.json",
    ]  # nothing half-written or temporary left behind
    config = read_config(out / "digits" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx"
    assert [i.name for i in config.input] == ["image"] and list(config.input[0].dims) == [1, 8, 8]
    assert [o.name for o in config.output] == ["logits"] and config.max_batch_size == 32
    split = _digits.load_split()
    np.testing.assert_allclose(installed_logits(out, split.x_test), torch_logits("mlp", split.x_test), atol=1e-4)
    verification = report.data["verification"]
    assert verification["passed"] and verification["maxAbsError"] < 1e-4
    assert verification["accuracy"] == pytest.approx(_digits.accuracy(_digits.train("mlp")))
    assert verification["accuracy"] > 0.9
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["artifact"]["sha256"] == report.data["artifact"]["sha256"]
    assert report.data["export"]["exporter"] == "dynamo"
    model = onnx.load(str(out / "digits" / "1" / "model.onnx"))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # dynamic batch axis
    summary = report.summary()
    assert set(summary["artifact"]) == {"uri", "format", "precision", "sha256", "sizeBytes", "sourceSha256"}
    assert len(json.dumps(summary)) < 3000


def test_encoder_int8_dynamic_quantizes_every_weight_and_shrinks(tmp_path: Path) -> None:
    report = run(example(tmp_path, "encoder", precision="int8"), tmp_path / "repo")
    candidate = report.data["candidates"][0]
    assert candidate["name"] == "int8-dynamic"
    assert candidate["quantizedOps"] >= 10 and candidate["floatOps"] == 0
    assert candidate["sizeRatio"] < 0.45  # small model: graph overhead keeps it above int8's 0.25
    verification = report.data["verification"]
    assert verification["referenceAccuracy"] - verification["accuracy"] <= 0.01
    assert report.data["artifact"]["precision"] == "int8"


def test_cnn_int8_static_uses_qdq_and_calibration(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    report = run(example(tmp_path, "cnn", precision="int8", method="static"), out)
    model = onnx.load(str(out / "digits" / "1" / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    candidate = report.data["candidates"][0]
    assert candidate["quantizedOps"] == 4 and candidate["floatOps"] == 0
    assert candidate["sizeRatio"] < 0.4
    verification = report.data["verification"]
    assert verification["passed"] and verification["referenceAccuracy"] - verification["accuracy"] <= 0.01


def test_mlp_fp16_stays_within_tolerance_with_float32_io(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    report = run(example(tmp_path, "mlp", precision="fp16"), out)
    model = onnx.load(str(out / "digits" / "1" / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert 0 < report.data["verification"]["maxAbsError"] <= 0.01
    assert report.data["candidates"][0]["sizeRatio"] < 0.7


def test_auto_measures_every_candidate_and_never_picks_a_slower_one(tmp_path: Path) -> None:
    report = run(example(tmp_path, "cnn", precision="auto", method="static"), tmp_path / "repo")
    candidates = {c["name"]: c for c in report.data["candidates"]}
    assert set(candidates) == {"fp32", "fp16", "int8-dynamic", "int8-static"}
    chosen = report.data["chosen"]
    fp32 = candidates["fp32"]["latencyMs"]["batch32"]
    assert candidates[chosen["name"]]["latencyMs"]["batch32"] <= fp32
    assert candidates[chosen["name"]]["passed"]
    for name, candidate in candidates.items():
        assert candidate["sizeBytes"] > 0 and "verification" in candidate
        assert name in chosen["reason"]
    # The observation: a 38k-parameter CNN runs int8 dynamic several times slower than fp32.
    assert candidates["int8-dynamic"]["latencyMs"]["batch32"] > fp32
    assert chosen["name"] != "int8-dynamic"
    assert report.summary()["chosen"]["candidates"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_same_inputs_give_byte_identical_output_and_the_cache_makes_a_repeat_a_no_op(
    tmp_path: Path, precision: str
) -> None:
    yaml_path = example(tmp_path, "mlp", precision=precision, method="static")
    cache = tmp_path / "cache"
    first = run(yaml_path, tmp_path / "a", cache)
    fresh = run(yaml_path, tmp_path / "b", use_cache=False)
    assert not first.cache_hit and not fresh.cache_hit
    for name in ("digits/1/model.onnx", "digits/config.pbtxt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    hit = run(yaml_path, tmp_path / "c", cache)
    assert hit.cache_hit and "exportSeconds" not in hit.data["timings"]
    assert hit.data["conversionHash"] == first.data["conversionHash"]
    assert (tmp_path / "c" / "digits/1/model.onnx").read_bytes() == (
        tmp_path / "a" / "digits/1/model.onnx"
    ).read_bytes()
    assert "cache hit" in hit.summary_line()
    # A changed setting is a different conversion.
    text = yaml_path.read_text().replace("maxBatchSize", "x") + "  serving: {maxBatchSize: 8}\n"
    yaml_path.write_text(text)
    assert run(yaml_path, tmp_path / "d", cache).data["conversionHash"] != first.data["conversionHash"]


def test_a_damaged_cache_entry_is_converted_again_not_installed(tmp_path: Path) -> None:
    yaml_path = example(tmp_path, "mlp", precision="fp32")
    cache = tmp_path / "cache"
    first = run(yaml_path, tmp_path / "a", cache)
    (entry,) = [p for p in cache.iterdir() if p.name == first.data["conversionHash"]]
    damaged = entry / "digits" / "1" / "model.onnx"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)  # same size, other bytes
    again = run(yaml_path, tmp_path / "b", cache)
    assert not again.cache_hit
    assert (tmp_path / "b" / "digits/1/model.onnx").read_bytes() == (
        tmp_path / "a" / "digits/1/model.onnx"
    ).read_bytes()


def _source(tmp_path: Path, kind: str, file_name: str, save: Any) -> Path:
    folder = tmp_path / "src"
    folder.mkdir(parents=True)
    save(_digits.train(kind), folder / file_name)
    _digits.write_test_npz(folder / "test.npz")
    return folder


def _yaml(tmp_path: Path, fmt: str, **kwargs: Any) -> Path:
    kwargs.setdefault("data_uri", "src/test.npz")
    return _digits.write_modelservice(
        tmp_path / "ms.yaml", name="digits", source="src", format=fmt, kind=None, weights=None, **kwargs
    )


def test_torchscript_source_to_onnx(tmp_path: Path) -> None:
    import torch

    def save(model: Any, path: Path) -> None:
        torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 8, 8)), str(path))

    _source(tmp_path, "cnn", "model.pt", save)
    report = run(_yaml(tmp_path, "torchscript"), tmp_path / "repo")
    assert report.data["export"]["exporter"] == "torchscript"  # a ScriptModule goes through the TorchScript exporter
    assert report.data["verification"]["maxAbsError"] < 1e-4
    split = _digits.load_split()
    np.testing.assert_allclose(
        installed_logits(tmp_path / "repo", split.x_test[:64]), torch_logits("cnn", split.x_test[:64]), atol=1e-4
    )


def test_exported_program_source_to_int8(tmp_path: Path) -> None:
    import torch

    def save(model: Any, path: Path) -> None:
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))

    _source(tmp_path, "encoder", "model.pt2", save)
    report = run(_yaml(tmp_path, "exported-program", precision="int8"), tmp_path / "repo")
    assert report.data["candidates"][0]["quantizedOps"] >= 10
    assert report.data["verification"]["passed"]


def _onnx_source(tmp_path: Path, kind: str) -> Path:
    import torch

    def save(model: Any, path: Path) -> None:
        torch.onnx.export(
            model,
            (torch.rand(2, 1, 8, 8),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
        )

    return _source(tmp_path, kind, "model.onnx", save)


def test_onnx_source_int8_with_inferred_tensors(tmp_path: Path) -> None:
    _onnx_source(tmp_path, "mlp")
    doc = _digits.modelservice(
        name="digits", source="src", format="onnx", kind=None, weights=None, precision="int8", data_uri="src/test.npz"
    )
    del doc["spec"]["model"]["inputs"], doc["spec"]["model"]["outputs"]
    yaml_path = tmp_path / "ms.yaml"
    yaml_path.write_text(json.dumps(doc))
    out = tmp_path / "repo"
    report = run(yaml_path, out)
    config = read_config(out / "digits" / "config.pbtxt")
    assert [(t.name, list(t.dims)) for t in config.input] == [("image", [1, 8, 8])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [10])]
    assert report.data["export"]["exporter"] == "none (onnx source)"
    assert report.data["candidates"][0]["quantizedOps"] == 2
    assert report.data["verification"]["passed"]


def test_target_none_serves_an_onnx_file_as_is(tmp_path: Path) -> None:
    src = _onnx_source(tmp_path, "mlp")
    out = tmp_path / "repo"
    run(_yaml(tmp_path, "onnx", target="none"), out)
    assert (out / "digits" / "1" / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()


def test_target_torchscript_is_traced_and_verified(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "repo"
    report = run(example(tmp_path, "mlp", target="torchscript"), out)
    assert read_config(out / "digits" / "config.pbtxt").platform == "pytorch_libtorch"
    module = torch.jit.load(str(out / "digits" / "1" / "model.pt"))
    x = _digits.load_split().x_test[:16]
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), torch_logits("mlp", x), atol=1e-5)
    assert report.data["verification"]["passed"] and report.data["artifact"]["format"] == "torchscript"


# fp16 TorchScript is for GPU Triton (the API asks for a GPU); it is built and verified here on the CPU.
FP16_VERIFICATION = {"verification": {"tolerance": 0.05, "accuracyBudget": 0.01, "dataUri": "src/test.npz"}}
GPU = {"resources": {"gpu": 1}}


def test_target_torchscript_fp16_keeps_float32_io_and_is_verified(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "repo"
    yaml_path = example(
        tmp_path, "cnn", target="torchscript", precision="fp16", conversion=FP16_VERIFICATION, serving=GPU
    )
    report = run(yaml_path, out)
    assert report.data["artifact"]["precision"] == "fp16" and report.data["verification"]["passed"]
    config = read_config(out / "digits" / "config.pbtxt")
    assert [(t.name, t.data_type) for t in config.input] == [("image", data_type("FP32"))]  # the signature stays
    module = torch.jit.load(str(out / "digits" / "1" / "model.pt"))
    assert {p.dtype for p in module.parameters()} == {torch.float16}
    x = _digits.load_split().x_test[:64]
    logits = module(torch.from_numpy(x)).detach()
    assert logits.dtype == torch.float32
    np.testing.assert_allclose(logits.numpy(), torch_logits("cnn", x), atol=0.05)


def test_torchscript_source_to_torchscript_fp16(tmp_path: Path) -> None:
    import torch

    def save(model: Any, path: Path) -> None:
        torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 8, 8)), str(path))

    src = _source(tmp_path, "mlp", "model.pt", save)
    before = (src / "model.pt").read_bytes()
    yaml_path = _yaml(
        tmp_path, "torchscript", target="torchscript", precision="fp16", conversion=FP16_VERIFICATION, serving=GPU
    )
    report = run(yaml_path, tmp_path / "repo")
    assert report.data["export"]["exporter"].startswith("torch.jit.trace (fp16")
    assert report.data["verification"]["passed"] and (src / "model.pt").read_bytes() == before


def test_triton_repository_is_validated_and_passed_through(tmp_path: Path) -> None:
    first = tmp_path / "first"
    run(example(tmp_path, "mlp"), first)
    source = tmp_path / "given"
    shutil.copytree(first / "digits", source / "legacy-name")
    (source / "legacy-name" / "config.pbtxt").write_text(
        (first / "digits" / "config.pbtxt").read_text().replace('"digits"', '"legacy-name"')
    )
    doc = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "digits2"},
        "spec": {"model": {"uri": "given", "format": "triton-repository"}, "conversion": {"target": "none"}},
    }
    yaml_path = tmp_path / "repo.yaml"
    yaml_path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    report = run(yaml_path, out)
    assert read_config(out / "digits2" / "config.pbtxt").name == "digits2"
    assert (out / "digits2" / "1" / "model.onnx").read_bytes() == (first / "digits" / "1" / "model.onnx").read_bytes()
    assert report.data["artifact"]["format"] == "onnxruntime_onnx"
    (source / "legacy-name" / "config.pbtxt").write_text("this is { not a config")
    with pytest.raises(UserError, match="not a valid Triton model config"):
        run(yaml_path, tmp_path / "out2", use_cache=False)


def test_verification_beyond_tolerance_fails_and_writes_nothing(tmp_path: Path) -> None:
    yaml_path = example(tmp_path, "mlp", precision="fp16")
    yaml_path.write_text(yaml_path.read_text().replace("tolerance: 0.01", "tolerance: 1.0e-07"))
    out = tmp_path / "repo"
    with pytest.raises(
        UserError,
        match=r"^spec.conversion.verification: fp16 failed verification: max abs error .* exceeds tolerance 1e-07$",
    ):
        run(yaml_path, out)
    assert not out.exists()


def test_int8_on_a_model_without_weighted_operators_says_quantization_did_not_happen(tmp_path: Path) -> None:
    folder = tmp_path / "ex" / "src"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(
        "import torch\n"
        "class Scale(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.scale = torch.nn.Parameter(torch.ones(10))\n"
        "    def forward(self, image):\n"
        "        return image.reshape(-1, 64)[:, :10] * self.scale\n"
    )
    import torch
    from safetensors.torch import save_file

    save_file({"scale": torch.ones(10)}, str(folder / "weights.safetensors"))
    doc = _digits.modelservice(name="digits", source="src", precision="int8", data_uri=None)
    doc["spec"]["model"]["architecture"] = "model.py:Scale"
    yaml_path = tmp_path / "ex" / "ms.yaml"
    yaml_path.write_text(json.dumps(doc))
    with pytest.raises(
        UserError, match="int8 quantization did not happen: not quantized: none of the 0 weighted operators"
    ):
        run(yaml_path, tmp_path / "repo")


def test_the_bundled_sample_converts_as_the_readme_says(tmp_path: Path) -> None:
    sample = _digits.REPO / "examples" / "digits" / "modelservice.yaml"
    report = run(sample, tmp_path / "repo")
    assert report.data["verification"]["passed"] and report.data["verification"]["accuracy"] > 0.95
    assert {c["name"] for c in report.data["candidates"]} == {"fp32", "fp16", "int8-dynamic", "int8-static"}
    assert (tmp_path / "repo" / "digits" / "config.pbtxt").is_file()


def test_disabled_verification_measures_but_does_not_enforce(tmp_path: Path) -> None:
    path = example(tmp_path, "mlp", precision="fp16")
    document = yaml.safe_load(path.read_text())
    document["spec"]["conversion"]["verification"]["tolerance"] = 1e-9  # fp16 cannot meet it
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(UserError, match="tolerance"):
        run(path, tmp_path / "enforced")
    assert not (tmp_path / "enforced").exists()
    document["spec"]["conversion"]["verification"]["enabled"] = False
    path.write_text(yaml.safe_dump(document))
    report = run(path, tmp_path / "measured")
    assert report.data["verification"]["maxAbsError"] > 1e-9  # still measured and reported
    assert (tmp_path / "measured" / "digits" / "1" / "model.onnx").is_file()
