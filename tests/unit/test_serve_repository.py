"""Runnable repositories for the local Triton, Triton discovery and ports (no server started here)."""

from __future__ import annotations

import py_compile
import socket
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2

from modelservice.api.models import ModelService, TensorSpec
from modelservice.convert.repository import build_model_config, read_config, write_config
from modelservice.serve.pybackend import make_runnable, python_model_source
from modelservice.serve.triton import (
    STUB_NAME,
    Ports,
    TritonError,
    TritonInstall,
    find_tritonserver,
    prepare_backend_dir,
)

INPUTS = [TensorSpec(name="image", dtype="FP32", shape=[1, 8, 8])]
OUTPUTS = [TensorSpec(name="logits", dtype="FP32", shape=[10])]


def _ms(serving: dict[str, Any], target: str = "onnx") -> ModelService:
    return ModelService.from_body(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "digits"},
            "spec": {
                "model": {"uri": "m.onnx", "format": "onnx"},
                "conversion": {"target": target},
                "serving": serving,
            },
        }
    )


def _converted(
    root: Path, platform: str = "onnx", serving: dict[str, Any] | None = None, artifact: str = "model.onnx"
) -> Path:
    target = "tensorrt" if platform == "tensorrt" else "onnx"
    ms = _ms(serving or {}, target)
    config = build_model_config(ms, platform=platform, inputs=INPUTS, outputs=OUTPUTS)
    write_config(config, root / "digits" / "config.pbtxt")
    (root / "digits" / "1").mkdir(parents=True)
    (root / "digits" / "1" / artifact).write_bytes(b"artifact bytes")
    (root / "report.json").write_text("{}")
    return root


def _wheel(tmp_path: Path) -> TritonInstall:
    return TritonInstall(binary=tmp_path / "bin" / "tritonserver", source="nvidia-pytriton")


SERVING = {
    "maxBatchSize": 16,
    "instances": 2,
    "dynamicBatching": {"maxQueueDelayMicroseconds": 300, "preferredBatchSizes": [4, 8]},
    "resources": {"gpu": 1},
}


def test_onnx_becomes_a_python_twin_with_the_same_name_tensors_and_batching(tmp_path: Path) -> None:
    converted = _converted(tmp_path / "converted", serving=SERVING)
    out = tmp_path / "repository"
    models = make_runnable(converted, out, _wheel(tmp_path), intra_op_threads=2)
    assert [(m.name, m.backend, m.runtime, m.source_platform) for m in models] == [
        ("digits", "python", "onnxruntime", "onnxruntime_onnx")
    ]
    original = read_config(converted / "digits" / "config.pbtxt")
    twin = read_config(out / "digits" / "config.pbtxt")
    assert twin.backend == "python" and twin.platform == ""
    for field in ("name", "max_batch_size", "input", "output", "dynamic_batching"):
        assert getattr(twin, field) == getattr(original, field), field
    # the twin runs on the CPU: the GPU ModelService's two GPU instances become two CPU instances
    assert original.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert twin.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert twin.instance_group[0].count == 2
    assert {k: v.string_value for k, v in twin.parameters.items()} == {
        "runtime": "onnxruntime",
        "artifact": "model.onnx",
        "intra_op_thread_count": "2",
    }
    assert (out / "digits" / "1" / "model.onnx").read_bytes() == b"artifact bytes"
    assert (out / "digits" / "1" / "model.py").read_text() == python_model_source()
    assert sorted(p.name for p in out.iterdir()) == ["digits"]  # report.json is not a model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "repository"]  # no staging left


def test_torchscript_twin_uses_the_torchscript_runtime(tmp_path: Path) -> None:
    converted = _converted(tmp_path / "c", platform="torchscript", artifact="model.pt")
    models = make_runnable(converted, tmp_path / "r", _wheel(tmp_path))
    assert models[0].runtime == "torchscript"
    twin = read_config(tmp_path / "r" / "digits" / "config.pbtxt")
    assert twin.parameters["artifact"].string_value == "model.pt"


def test_native_backend_serves_the_repository_as_is(tmp_path: Path) -> None:
    install_root = tmp_path / "opt" / "tritonserver"
    (install_root / "bin").mkdir(parents=True)
    (install_root / "backends" / "onnxruntime").mkdir(parents=True)
    (install_root / "backends" / "python").mkdir(parents=True)
    install = TritonInstall(binary=install_root / "bin" / "tritonserver")
    assert install.native_backends() == {"onnxruntime", "python"}
    converted = _converted(tmp_path / "c")
    models = make_runnable(converted, tmp_path / "r", install)
    assert (models[0].backend, models[0].runtime) == ("onnxruntime", None)
    assert (tmp_path / "r" / "digits" / "config.pbtxt").read_bytes() == (
        converted / "digits" / "config.pbtxt"
    ).read_bytes()
    assert not (tmp_path / "r" / "digits" / "1" / "model.py").exists()


def test_tensorrt_without_its_backend_is_a_clear_error(tmp_path: Path) -> None:
    converted = _converted(
        tmp_path / "c", platform="tensorrt", serving={"resources": {"gpu": 1}}, artifact="model.plan"
    )
    with pytest.raises(TritonError, match=r"model digits: tensorrt_plan needs a Triton with the tensorrt backend"):
        make_runnable(converted, tmp_path / "r", _wheel(tmp_path))
    assert not (tmp_path / "r").exists()


def test_broken_repositories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TritonError, match="model repository not found"):
        make_runnable(tmp_path / "missing", tmp_path / "r", _wheel(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TritonError, match="no model"):
        make_runnable(tmp_path / "empty", tmp_path / "r", _wheel(tmp_path))
    converted = _converted(tmp_path / "c")
    (converted / "digits" / "1" / "model.onnx").unlink()
    with pytest.raises(TritonError, match=r"1/model.onnx: model artifact missing"):
        make_runnable(converted, tmp_path / "r", _wheel(tmp_path))
    renamed = tmp_path / "c" / "other"
    (converted / "digits").rename(renamed)
    with pytest.raises(TritonError, match="name 'digits' differs from its folder 'other'"):
        make_runnable(converted, tmp_path / "r", _wheel(tmp_path))


def test_existing_output_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "r"
    (out / "stale").mkdir(parents=True)
    make_runnable(_converted(tmp_path / "c"), out, _wheel(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == ["digits"]


def test_generated_python_model_compiles(tmp_path: Path) -> None:
    path = tmp_path / "model.py"
    path.write_text(python_model_source())
    py_compile.compile(str(path), doraise=True)


def test_wheel_install_and_backend_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    install = find_tritonserver()
    assert install.from_wheel
    assert install.binary.name == "tritonserver" and install.binary.is_file()
    assert install.library_dir is not None and install.library_dir.name == "nvidia_pytriton.libs"
    first = prepare_backend_dir(install, tmp_path)
    assert first is not None
    assert sorted(p.name for p in (first / "python").iterdir()) == sorted(
        ["libtriton_python.so", "triton_python_backend_utils.py", STUB_NAME]
    )
    assert prepare_backend_dir(install, tmp_path) == first  # cached
    assert [p.name for p in (tmp_path / "triton-backends").iterdir()] == [first.name]


def test_tritonserver_on_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    binary = bin_dir / "tritonserver"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    install = find_tritonserver()
    assert install.binary == binary and not install.from_wheel
    assert prepare_backend_dir(install, tmp_path) is None


def test_busy_port_names_its_option() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        with pytest.raises(TritonError, match=rf"port {busy} on 127.0.0.1 is already in use \(--grpc-port\)"):
            Ports.pick(0, busy, 0)
    ports = Ports.pick()
    assert len({ports.http, ports.grpc, ports.metrics}) == 3


def test_unwritable_cache_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(TritonError, match=r"cannot prepare Triton's python backend in .*not-a-folder/triton-backends"):
        prepare_backend_dir(find_tritonserver(), blocker)
