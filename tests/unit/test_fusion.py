"""Transformer fusion and the fused int8 variants, for real: a small BERT built from a transformers config (the
sentence-transformers layout, mean pooling + L2 normalisation in the graph), loaded by the operator's own
loader, exported by export_onnx, fused by ONNX Runtime's transformer optimizer, quantized by ONNX Runtime's
quantizer and run by ONNX Runtime on real tokenized sentences. No timing is asserted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import _hf
from modelservice.api.loader import parse
from modelservice.api.models import ModelService
from modelservice.convert import exclusion
from modelservice.convert.export import export_onnx
from modelservice.convert.fusion import FUSION_MODEL_TYPES, fuse, fusion_model_type
from modelservice.convert.load import LoadedModel, TransformerInfo, load_model, run_torch
from modelservice.convert.progress import Progress
from modelservice.convert.quantize import count_quantized, fused_weight_range, op_histogram
from modelservice.convert.sensitivity import build_simulation
from modelservice.convert.textdata import tokenize
from modelservice.convert.variants import VariantInputs, build_variant, requested_variants, verify_variant
from modelservice.convert.verify import min_cosine, ort_runner, run_batched

pytestmark = pytest.mark.slow
LAYERS = 2


def modelservice(precision: str = "auto", min_cosine: float = 0.99, **conversion: Any) -> ModelService:
    document = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "emb"},
        "spec": {
            "model": {"uri": "st", "format": "huggingface", "task": "sentence-embedding"},
            "conversion": {
                "target": "onnx",
                "precision": precision,
                "verification": {"metric": "cosine", "minCosine": min_cosine},
                **conversion,
            },
        },
    }
    return parse(document, "test")


@dataclass
class Exported:
    model: LoadedModel
    fp32: Path
    inputs: dict[str, np.ndarray]
    reference: list[np.ndarray]

    @property
    def info(self) -> TransformerInfo:
        assert self.model.transformer is not None
        return self.model.transformer

    def variant_inputs(self, workdir: Path) -> VariantInputs:
        workdir.mkdir(parents=True, exist_ok=True)
        inputs = VariantInputs(self.fp32, workdir, self.inputs, None, self.reference, None)
        inputs.transformer = self.info
        return inputs


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A 2-layer BERT (hidden 64, 4 heads) exported as the onnx target does, at the default opset (18)."""
    root = tmp_path_factory.mktemp("fusion")
    folder = _hf.write_text_model(root / "st", layout="sentence-transformers", layers=LAYERS)
    ms = modelservice()
    model = load_model(ms.spec.model, folder)
    assert model.transformer is not None
    fp32 = root / "exported.onnx"
    result = export_onnx(model, fp32, ms.spec.conversion.opset)
    assert result.exporter == "torchscript"
    names = [spec.name for spec in model.inputs]
    inputs = tokenize(_hf.sentences(), model.transformer, names)
    reference = run_torch(model.module, inputs, model.inputs)
    return Exported(model, fp32, inputs, reference)


def test_covered_model_types() -> None:
    info = TransformerInfo(task="sentence-embedding", model_type="roberta", num_heads=4, hidden_size=64, num_layers=2)
    assert fusion_model_type(info) == "bert"
    assert fusion_model_type(TransformerInfo("image-classification", "vit", 4, 64, 2)) == "vit"
    assert fusion_model_type(TransformerInfo("image-classification", "resnet", 0, 0, 0)) is None
    assert fusion_model_type(None) is None
    assert "resnet" not in FUSION_MODEL_TYPES


def test_export_keeps_batch_and_sequence_dynamic(exported: Exported) -> None:
    graph = onnx.load(str(exported.fp32), load_external_data=False).graph
    for value in graph.input:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], (value.name, dims)
    run = ort_runner(exported.fp32)
    for length in (5, 40):  # other sequence lengths than the traced one
        short = {k: v[:3, :length] if v.shape[1] >= length else np.pad(v[:3], ((0, 0), (0, length - v.shape[1])))
                 for k, v in exported.inputs.items()}  # fmt: skip
        expected = run_torch(exported.model.module, short, exported.model.inputs)[0]
        assert np.abs(run(short)[0] - expected).max() < 1e-4


def test_fusion_creates_attention_and_layer_norm_kernels_that_match_the_original(
    exported: Exported, tmp_path: Path
) -> None:
    result = fuse(exported.fp32, tmp_path / "fused.onnx", exported.info)
    assert not result.error
    assert result.fused["Attention"] == LAYERS
    assert result.fused["EmbedLayerNormalization"] == 1
    assert result.fused["SkipLayerNormalization"] == 2 * LAYERS
    assert result.fused["BiasGelu"] == LAYERS
    assert "Attention x2" in result.describe() and "model_type bert" in result.describe()
    ops = op_histogram(tmp_path / "fused.onnx")
    assert ops["Attention"] == LAYERS and "Softmax" not in ops  # really in the graph, not only counted
    outputs = run_batched(ort_runner(tmp_path / "fused.onnx"), exported.inputs, 64)
    assert min_cosine(exported.reference[0], outputs[0]) > 0.99999
    assert np.abs(outputs[0] - exported.reference[0]).max() < 1e-4


def test_the_dynamo_exporters_graph_does_not_fuse_attention(exported: Exported, tmp_path: Path) -> None:
    """Why export.py uses the TorchScript exporter for these models: if this starts failing, the dynamo graph
    fuses too, and the exporter choice (and the docs in fusion.py/export.py) should be revisited."""
    import dataclasses

    plain = dataclasses.replace(exported.model, transformer=None)  # the plain path: dynamo first
    result = export_onnx(plain, tmp_path / "dynamo.onnx", 18)
    assert result.exporter == "dynamo"
    fused = fuse(tmp_path / "dynamo.onnx", tmp_path / "dynamo-fused.onnx", exported.info)
    assert fused.attention == 0


def test_opset_18_l2_normalisation_is_rewritten_to_what_shape_inference_reads(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from modelservice.convert.fusion import _shape_inferable

    node = helper.make_node("ReduceL2", ["x", "axes"], ["y"], keepdims=1)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "l2.onnx"))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    before = ort_runner(tmp_path / "l2.onnx")({"x": x})[0]
    rewritten = _shape_inferable(model)
    assert [n.op_type for n in rewritten.graph.node] == ["Mul", "ReduceSum", "Sqrt"]
    onnx.save(rewritten, str(tmp_path / "sum.onnx"))
    assert np.allclose(ort_runner(tmp_path / "sum.onnx")({"x": x})[0], before, atol=1e-6)


def test_requested_variants_with_fusion() -> None:
    auto = [n for n, _, _ in requested_variants(modelservice(), False, fusion=True)]
    assert auto == ["fp32", "fp16", "fp32-fused", "int8-fused-dynamic", "int8-fused-static"]
    assert [n for n, _, _ in requested_variants(modelservice(), False, fusion=True, tensorrt=True)] == ["fp32", "fp16"]
    int8 = modelservice("int8", quantization={"method": "dynamic"})
    assert [n for n, _, _ in requested_variants(int8, False, fusion=True)] == ["int8-fused-dynamic"]
    assert [n for n, _, _ in requested_variants(int8, False)] == ["int8-dynamic"]


def test_fused_int8_dynamic_quantizes_every_weighted_node_per_channel(exported: Exported, tmp_path: Path) -> None:
    inputs = exported.variant_inputs(tmp_path)
    variant = build_variant("int8-fused-dynamic", "int8", "dynamic", inputs, Progress(False))
    stats = count_quantized(variant.path)
    assert stats.float_ops == 0 and stats.quantized_ops == LAYERS * 4  # Attention (QKV) + 3 MatMuls per layer
    ops = op_histogram(variant.path)
    assert ops["QAttention"] == LAYERS and ops["MatMulInteger"] == 3 * LAYERS
    scales = [i for i in onnx.load(str(variant.path)).graph.initializer if i.name.endswith("_scale")]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)  # per channel
    assert any("Attention x2" in n for n in variant.notes)
    assert any("weights use" in n for n in variant.notes)  # the 7/8-bit decision is reported
    verify_variant(variant, inputs, modelservice(min_cosine=0.5))
    assert variant.passed and not variant.excluded


def test_simulation_matches_float_and_int8_models(exported: Exported, tmp_path: Path) -> None:
    inputs = exported.variant_inputs(tmp_path)
    variant = build_variant("int8-fused-dynamic", "int8", "dynamic", inputs, Progress(False))
    prepared = tmp_path / "prepared-fused.onnx"
    simulation = build_simulation(prepared, variant.path, tmp_path / "sim.onnx")
    assert simulation is not None and len(simulation.nodes) == LAYERS * 4 + 1  # + the embeddings
    float_out = run_batched(ort_runner(prepared), exported.inputs, 64)[0]
    int8_out = run_batched(ort_runner(variant.path), exported.inputs, 64)[0]
    assert np.abs(simulation.run(exported.inputs, set())[0] - float_out).max() < 1e-5
    simulated = simulation.run(exported.inputs, set(simulation.nodes))[0]
    assert np.abs(simulated - int8_out).max() < 0.05 * np.abs(float_out - int8_out).max()
    for node in simulation.nodes[:3]:  # one node alone: the simulation against a real model quantizing only it
        from onnxruntime.quantization import QuantType, quantize_dynamic

        alone = tmp_path / "alone.onnx"
        quantize_dynamic(
            str(prepared), str(alone), weight_type=QuantType.QInt8, per_channel=True,
            reduce_range=fused_weight_range()[0], nodes_to_quantize=[node],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
        real = run_batched(ort_runner(alone), exported.inputs, 64)[0]
        assert np.abs(simulation.run(exported.inputs, {node})[0] - real).max() < 1e-5


def test_exclusion_leaves_the_most_sensitive_nodes_in_float_when_the_budget_is_missed(
    exported: Exported, tmp_path: Path
) -> None:
    whole = exported.variant_inputs(tmp_path / "whole")
    everything = build_variant("int8-fused-dynamic", "int8", "dynamic", whole, Progress(False))
    verify_variant(everything, whole, modelservice(min_cosine=0.5))
    assert everything.check is not None and everything.check.min_cosine is not None
    all_int8 = everything.check.min_cosine
    assert all_int8 < 1 - 1e-6  # int8 is not exact: there is error to remove
    floor = 1 - (1 - all_int8) * 0.6  # int8 of every node misses it: 40 % of its error has to go
    inputs = exported.variant_inputs(tmp_path / "tight")
    variant = build_variant("int8-fused-dynamic", "int8", "dynamic", inputs, Progress(False))
    verify_variant(variant, inputs, modelservice(min_cosine=floor))
    assert variant.passed, variant.notes
    assert variant.check is not None and variant.check.min_cosine is not None
    assert variant.check.min_cosine >= floor
    assert 0 < len(variant.excluded) <= (LAYERS * 4 + 1) // 2
    weighted = [name for name in variant.excluded if not name.startswith("EmbedLayerNormalization")]
    assert variant.stats is not None and variant.stats.float_ops == len(weighted)
    graph_nodes = {n.name for n in onnx.load(str(variant.path), load_external_data=False).graph.node}
    assert set(variant.excluded) <= graph_nodes  # left as the float nodes they were
    assert any(f"left {len(variant.excluded)} of {LAYERS * 4 + 1} quantized nodes in float" in n for n in variant.notes)
    assert variant.as_dict()["excludedNodes"] == list(variant.excluded)
    assert inputs._ranking is not None  # the ranking names the excluded ones first
    assert list(variant.excluded) == [name for name, _ in inputs._ranking.nodes[: len(variant.excluded)]]


def test_exclusion_gives_up_when_no_budget_within_half_the_nodes_is_met(exported: Exported, tmp_path: Path) -> None:
    inputs = exported.variant_inputs(tmp_path)
    variant = build_variant("int8-fused-dynamic", "int8", "dynamic", inputs, Progress(False))
    verify_variant(variant, inputs, modelservice(min_cosine=1.0))  # only float arithmetic reaches it
    assert not variant.passed
    assert len(variant.excluded) <= int((LAYERS * 4 + 1) * exclusion.MAX_FRACTION)
    assert any("int8 gave up" in n or "still failed" in n for n in variant.notes)


def test_fused_static_calibrates_on_the_verification_inputs_without_calibration(
    exported: Exported, tmp_path: Path
) -> None:
    inputs = exported.variant_inputs(tmp_path)
    variant = build_variant("int8-fused-static", "int8", "static", inputs, Progress(False))
    assert variant.stats is not None and variant.stats.quantized_ops > 0
    assert "QuantizeLinear" in op_histogram(variant.path)
    assert any("calibrated on the verification inputs" in n for n in variant.notes)


def _mlp(path: Path, *, custom_op: bool = False) -> Path:
    """A float MatMul + Relu graph (no transformer in it); ``custom_op`` adds an operator nothing knows."""
    from onnx import TensorProto, helper

    weight = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"), helper.make_node("Relu", ["h"], ["y"])]
    if custom_op:
        nodes.append(helper.make_node("Mystery", ["y"], ["z"], domain="example.unknown"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("z" if custom_op else "y", TensorProto.FLOAT, ["batch", 16])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("example.unknown", 1)] if custom_op else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_without_anything_fused_fp32_fused_is_not_built_and_int8_quantizes_the_unfused_graph(tmp_path: Path) -> None:
    fp32 = _mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    reference = ort_runner(fp32)({"x": x})
    inputs = VariantInputs(fp32, tmp_path, {"x": x}, None, reference, None)
    inputs.transformer = TransformerInfo("feature-extraction", "bert", 4, 16, 1)
    variant = build_variant("fp32-fused", "fp32", None, inputs, Progress(False))
    assert variant.note == "not built: transformer fusion (model_type bert): nothing fused"
    verify_variant(variant, inputs, modelservice())
    assert variant.check is None and not variant.passed
    int8 = build_variant("int8-fused-dynamic", "int8", "dynamic", inputs, Progress(False))
    assert "quantized the unfused graph" in int8.notes
    assert int8.stats is not None and int8.stats.quantized_ops == 1


def test_preprocessing_failures_are_reported_not_swallowed(exported: Exported, tmp_path: Path) -> None:
    from modelservice.convert.quantize import prepare_for_quantization

    # The TorchScript exporter's unfused BERT graph: dynamic sequence lengths symbolic inference cannot resolve.
    notes = prepare_for_quantization(exported.fp32, tmp_path / "prepared.onnx")
    assert notes[0].startswith("quantization pre-processing: symbolic shape inference failed (")
    assert notes[-1] == "quantization pre-processing ran without symbolic shape inference"
    # An operator nothing knows: symbolic inference fails, and then ONNX Runtime's graph optimization, which
    # quant_pre_process only logs (and skips): the notes carry both.
    notes = prepare_for_quantization(_mlp(tmp_path / "odd.onnx", custom_op=True), tmp_path / "odd-prepared.onnx")
    assert notes[0].startswith("quantization pre-processing: symbolic shape inference failed (")
    assert "graph optimization failed and was skipped" in notes[1] and "Mystery" in notes[1]
    assert notes[2] == "quantization pre-processing ran without symbolic shape inference"
    assert (tmp_path / "odd-prepared.onnx").is_file()
    # The fused graph of the same model passes whole: the fused int8 variants carry no such note.
    inputs = exported.variant_inputs(tmp_path / "fused")
    variant = build_variant("int8-fused-dynamic", "int8", "dynamic", inputs, Progress(False))
    assert not [n for n in variant.notes if "pre-processing" in n]


def test_auto_through_the_pipeline_reports_fusion_and_picks_among_the_fused_variants(tmp_path: Path) -> None:
    import yaml

    from modelservice.api.loader import load_one
    from modelservice.convert.pipeline import ConvertOptions, convert

    _hf.write_text_model(tmp_path / "st", layout="sentence-transformers", layers=LAYERS)
    document = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "emb"},
        "spec": {
            "model": {"uri": "st", "format": "huggingface", "task": "sentence-embedding"},
            "conversion": {"target": "onnx", "precision": "auto"},
            "serving": {"resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
        },
    }
    (tmp_path / "ms.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    options = ConvertOptions(cache_dir=tmp_path / "cache", progress=False, measure_seconds=0.3)
    data = convert(load_one(tmp_path / "ms.yaml"), tmp_path / "out", options).data
    assert data["export"]["exporter"] == "torchscript"
    candidates = {c["name"]: c for c in data["candidates"]}
    assert list(candidates) == ["fp32", "fp16", "fp32-fused", "int8-fused-dynamic", "int8-fused-static"]
    assert any("Attention x2" in n for n in candidates["fp32-fused"]["notes"])
    assert candidates["int8-fused-dynamic"]["quantizedOps"] > 0
    measured = [c for c in data["candidates"] if c["passed"]]
    assert all("latencyMs" in c for c in measured)  # auto measured every passing candidate
    assert data["chosen"]["name"] in {c["name"] for c in measured}
    encoder = tmp_path / "out" / "emb-encoder" / "1" / "model.onnx"
    assert encoder.is_file() and data["verification"]["passed"]


def test_serving_threads_follow_the_cpu_request() -> None:
    import os

    from modelservice.convert.variants import serving_threads

    available = len(os.sched_getaffinity(0))

    def threads(cpu: str) -> int:
        ms = modelservice()
        ms.spec.serving.resources.requests["cpu"] = cpu
        return serving_threads(ms)

    assert threads("1") == 1
    assert threads("500m") == 1
    assert threads("1500m") == min(2, available)
    assert threads("64") == available
