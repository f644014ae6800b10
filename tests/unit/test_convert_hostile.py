"""Hostile and broken inputs to ``modelservice convert``: each is refused with one clear line, and code hidden
in pickles never runs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

import _digits
from modelservice.api.errors import UserError
from modelservice.api.loader import load_one
from modelservice.convert.pipeline import ConvertOptions, convert


class Payload:
    """Unpickling this calls os.mkdir(marker): a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def run(yaml_path: Path, out: Path) -> None:
    convert(load_one(yaml_path), out, ConvertOptions(cache_dir=out.parent / "cache", progress=False))


def one_line_error(yaml_path: Path, out: Path, pattern: str) -> str:
    with pytest.raises(UserError, match=pattern) as info:
        run(yaml_path, out)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert not out.exists()  # nothing half-written
    return message


def test_a_pt_state_dict_whose_unpickling_runs_code_is_refused_and_the_code_never_runs(tmp_path: Path) -> None:
    import torch

    folder = _digits.write_source(tmp_path / "src", "mlp")
    marker = tmp_path / "pwned"
    torch.save({"net.0.weight": Payload(marker)}, folder / "weights.pt")
    # Control: a plain torch.load would run it.
    torch.load(folder / "weights.pt", weights_only=False)
    assert marker.exists()
    marker.rmdir()
    yaml_path = _digits.write_modelservice(
        tmp_path / "ms.yaml", name="digits", source="src", kind="mlp", weights="weights.pt", data_uri=None
    )
    one_line_error(yaml_path, tmp_path / "out", r"^spec.model.weights: weights.pt: refused: holds more than tensors")
    assert not marker.exists()


def test_a_pt2_whose_weights_would_run_code_is_refused_before_torch_export_load(tmp_path: Path) -> None:
    import torch

    model = _digits.train("mlp")
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 1, 8, 8),)), str(good))
    marker = tmp_path / "pwned"
    evil_weight = io.BytesIO()
    torch.save(Payload(marker), evil_weight)
    folder = tmp_path / "src"
    folder.mkdir()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(folder / "model.pt2", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                weight_member = info.filename.rsplit("/", 1)[0] + "/" + first["path_name"]
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    # Replace the pickled weight's bytes (rewrite the archive with the payload in its place).
    rewritten = tmp_path / "model.pt2"
    with zipfile.ZipFile(folder / "model.pt2") as src, zipfile.ZipFile(rewritten, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, evil_weight.getvalue() if info.filename == weight_member else src.read(info))
    os.replace(rewritten, folder / "model.pt2")
    # Control: torch.export.load itself would run the payload.
    with contextlib.suppress(Exception):
        torch.export.load(str(folder / "model.pt2"))
    assert marker.exists()
    marker.rmdir()
    yaml_path = _digits.write_modelservice(
        tmp_path / "ms.yaml",
        name="digits",
        source="src",
        format="exported-program",
        kind=None,
        weights=None,
        data_uri=None,
    )
    one_line_error(yaml_path, tmp_path / "out", r"would import posix.mkdir when unpickled; refusing to load it")
    assert not marker.exists()


def test_an_archive_member_escaping_its_folder_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "model.tar.gz").write_bytes(buffer.getvalue())
    yaml_path = _digits.write_modelservice(
        tmp_path / "ms.yaml", name="digits", source="model.tar.gz", kind="mlp", data_uri=None
    )
    one_line_error(yaml_path, tmp_path / "out", r"member '../escaped.py' escapes the target folder; refused")
    assert not list(tmp_path.rglob("escaped.py"))


def test_a_digest_mismatch_is_refused(tmp_path: Path) -> None:
    _digits.write_source(tmp_path / "src", "mlp")
    import tarfile as tf

    with tf.open(tmp_path / "src.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src", arcname="src")
    doc = _digits.modelservice(name="digits", source="src.tar.gz", kind="mlp", data_uri=None)
    doc["spec"]["model"]["sha256"] = "ab" * 32
    yaml_path = tmp_path / "ms.yaml"
    yaml_path.write_text(json.dumps(doc))
    one_line_error(
        yaml_path,
        tmp_path / "out",
        r"^spec.model.uri: src.tar.gz: sha256 mismatch: expected (ab){32}, got [0-9a-f]{64}",
    )


@pytest.mark.parametrize(
    ("file_name", "pattern"),
    [("weights.safetensors", "not a readable safetensors file"), ("model.onnx", "not a valid ONNX model")],
)
def test_a_truncated_file_is_a_clear_error(tmp_path: Path, file_name: str, pattern: str) -> None:
    folder = _digits.write_source(tmp_path / "src", "mlp")
    if file_name == "model.onnx":
        import torch

        torch.onnx.export(_digits.train("mlp"), (torch.rand(2, 1, 8, 8),), str(folder / file_name), dynamo=False)
        yaml_path = _digits.write_modelservice(
            tmp_path / "ms.yaml",
            name="digits",
            source="src/model.onnx",
            format="onnx",
            kind=None,
            weights=None,
            data_uri=None,
        )
    else:
        yaml_path = _digits.write_modelservice(
            tmp_path / "ms.yaml", name="digits", source="src", kind="mlp", data_uri=None
        )
    data = (folder / file_name).read_bytes()
    (folder / file_name).write_bytes(data[: len(data) // 2])
    one_line_error(yaml_path, tmp_path / "out", pattern)


def test_an_architecture_that_does_not_match_the_weights(tmp_path: Path) -> None:
    _digits.write_source(tmp_path / "src", "mlp")
    yaml_path = _digits.write_modelservice(tmp_path / "ms.yaml", name="digits", source="src", kind="cnn", data_uri=None)
    message = one_line_error(
        yaml_path,
        tmp_path / "out",
        r"^spec.model.weights: weights.safetensors does not match model.py:DigitsCNN: missing ",
    )
    assert "unexpected net.1." in message


def test_an_architecture_file_outside_the_source_or_missing(tmp_path: Path) -> None:
    _digits.write_source(tmp_path / "src", "mlp")
    doc = _digits.modelservice(name="digits", source="src", kind="mlp", data_uri=None)
    for architecture, pattern in [
        ("../x.py:Net", "is outside the model source"),
        ("nope.py:Net", "nope.py not found"),
        ("model.py:Nope", "has no attribute 'Nope'"),
    ]:
        doc["spec"]["model"]["architecture"] = architecture
        (tmp_path / "ms.yaml").write_text(json.dumps(doc))
        one_line_error(tmp_path / "ms.yaml", tmp_path / "out", f"^spec.model.architecture: .*{pattern}")


def test_an_unsupported_operator_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "model.py").write_text(
        "import torch\n"
        "class Zeta(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.q = torch.nn.Parameter(torch.full((64,), 2.0))\n"
        "    def forward(self, image):\n"
        "        return torch.special.zeta(image.reshape(-1, 64) + 2, self.q)\n"
    )
    import torch
    from safetensors.torch import save_file

    save_file({"q": torch.full((64,), 2.0)}, str(folder / "weights.safetensors"))
    doc = _digits.modelservice(name="digits", source="src", data_uri=None)
    doc["spec"]["model"]["architecture"] = "model.py:Zeta"
    doc["spec"]["model"]["outputs"] = [{"name": "out", "shape": [64]}]
    (tmp_path / "ms.yaml").write_text(json.dumps(doc))
    one_line_error(
        tmp_path / "ms.yaml",
        tmp_path / "out",
        r"^conversion.target: the model cannot be exported to ONNX: unsupported operator\(s\) .*zeta",
    )


def test_verification_data_with_the_wrong_shape_names_the_field(tmp_path: Path) -> None:
    import numpy as np

    folder = _digits.write_source(tmp_path / "src", "mlp")
    np.savez(folder / "test.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    yaml_path = _digits.write_modelservice(
        tmp_path / "ms.yaml", name="digits", source="src", kind="mlp", data_uri="src/test.npz"
    )
    one_line_error(
        yaml_path,
        tmp_path / "out",
        r"^spec.conversion.verification.dataUri: test.npz: image has shape \[64\] per sample, "
        r"spec.model.inputs declares \[1, 8, 8\]",
    )


def test_an_object_array_in_the_npz_is_not_unpickled(tmp_path: Path) -> None:
    import numpy as np

    folder = _digits.write_source(tmp_path / "src", "mlp")
    np.savez(folder / "test.npz", x=np.array([Payload(tmp_path / "pwned")], dtype=object))
    yaml_path = _digits.write_modelservice(
        tmp_path / "ms.yaml", name="digits", source="src", kind="mlp", data_uri="src/test.npz"
    )
    one_line_error(
        yaml_path, tmp_path / "out", r"^spec.conversion.verification.dataUri: test.npz: refused: .*allow_pickle"
    )
    assert not (tmp_path / "pwned").exists()


def test_tensorrt_without_gpu_names_what_is_missing(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _digits.write_source(tmp_path / "src", "mlp")
    yaml_path = _digits.write_modelservice(
        tmp_path / "ms.yaml",
        name="digits",
        source="src",
        kind="mlp",
        target="tensorrt",
        serving={"resources": {"gpu": 1}},
        data_uri=None,
    )
    one_line_error(yaml_path, tmp_path / "out", r"^spec.conversion.target: tensorrt needs an NVIDIA GPU with CUDA")
