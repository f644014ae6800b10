"""``modelservice infer``: a smoke request to Triton over HTTP or gRPC, with a result summary and latency.

A text model (an ensemble whose input is BYTES, ``text``) takes texts instead of tensors: ``--text`` (repeatable)
and/or ``--data`` with a .txt (one text a line) or .jsonl (``{"text": ...}`` a line) file; every text is sent, in
requests of ``--batch`` rows (default: as many as the model's max_batch_size allows), and the answer is printed
per text (its label, or the first values of its embedding / logits).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelservice.api.errors import UserError

# Triton datatype -> numpy dtype
NUMPY_TYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
VARIABLE_DIM = 8  # a -1 dimension becomes this long in random inputs
TEXT_TYPES = ("BYTES", "STRING")
SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog."
SHOWN_ROWS = 16


@dataclass
class InferOptions:
    url: str
    model: str
    protocol: str
    data: Path | None
    batch: int | None  # rows per request; None: 1 (tensors), as many as max_batch_size allows (texts)
    count: int
    seed: int
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the server's metadata declares it; ``shape`` excludes the batch dimension."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    max_batch_size: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


class InferError(UserError):
    """The server cannot be reached, lacks the model, or refuses the request."""


def _strip_scheme(url: str) -> str:
    return re.sub(r"^[a-z]+://", "", url).rstrip("/")


def _client_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise InferError(f"--protocol: {protocol!r} is not http or grpc")
    return module


def model_info(client: Any, protocol: str, model: str) -> ModelInfo:
    """Names, datatypes and shapes from the model metadata; max_batch_size from the model config."""
    if protocol == "grpc":
        metadata = client.get_model_metadata(model, as_json=True)
        config = client.get_model_config(model, as_json=True)["config"]
    else:
        metadata = client.get_model_metadata(model)
        config = client.get_model_config(model)
    max_batch = int(config.get("max_batch_size", 0))

    def tensors(items: list[dict[str, Any]]) -> list[TensorInfo]:
        found = []
        for item in items:
            shape = [int(d) for d in item.get("shape", [])]
            found.append(TensorInfo(item["name"], item["datatype"], shape[1:] if max_batch > 0 else shape))
        return found

    versions = metadata.get("versions") or ["1"]
    return ModelInfo(
        name=metadata["name"],
        version=str(versions[-1]),
        max_batch_size=max_batch,
        inputs=tensors(metadata.get("inputs", [])),
        outputs=tensors(metadata.get("outputs", [])),
    )


def random_inputs(info: ModelInfo, batch: int, seed: int) -> dict[str, NDArray[Any]]:
    """Seeded inputs within the declared shapes: floats in [0, 1), integers in [0, 100), random booleans."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, NDArray[Any]] = {}
    for tensor in info.inputs:
        dims = [VARIABLE_DIM if d < 0 else d for d in tensor.shape]
        shape = [batch, *dims] if info.max_batch_size > 0 else dims
        dtype = _numpy_type(tensor)
        if tensor.datatype == "BOOL":
            arrays[tensor.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            arrays[tensor.name] = rng.integers(0, 100, size=shape).astype(dtype)
        else:
            arrays[tensor.name] = rng.random(shape).astype(dtype)
    return arrays


def npz_inputs(path: Path, info: ModelInfo, batch: int) -> dict[str, NDArray[Any]]:
    """Inputs from an .npz: an array per input name (or ``x`` for a single-input model); the first ``batch``
    rows when the model batches."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise InferError(f"{path}: cannot read .npz: {exc}") from None
    arrays: dict[str, NDArray[Any]] = {}
    for tensor in info.inputs:
        array = stored.get(tensor.name)
        if array is None and len(info.inputs) == 1:
            array = stored.get("x")
        if array is None:
            raise InferError(f"{path}: no array named {tensor.name!r} (arrays: {', '.join(sorted(stored)) or 'none'})")
        if info.max_batch_size > 0:
            array = array[:batch]
        arrays[tensor.name] = np.ascontiguousarray(array, dtype=_numpy_type(tensor))
    return arrays


def _numpy_type(tensor: TensorInfo) -> type[np.generic]:
    try:
        return NUMPY_TYPES[tensor.datatype]
    except KeyError:
        raise InferError(f"input {tensor.name}: datatype {tensor.datatype} is not supported by infer") from None


def describe_output(name: str, datatype: str, array: NDArray[Any], batched: bool) -> str:
    """One line: shape, range, and argmax per row for classifier-like outputs ([batch, classes])."""
    line = f"output {name}: {datatype} {list(array.shape)}"
    if array.size and np.issubdtype(array.dtype, np.number):
        line += f" min {array.min():.4g} max {array.max():.4g}"
    if batched and array.ndim == 2 and array.shape[1] > 1 and np.issubdtype(array.dtype, np.floating):
        line += f" argmax {array.argmax(axis=1)[:16].tolist()}"
    elif array.size <= 16:
        line += f" values {np.round(array.astype(np.float64), 4).reshape(-1).tolist()}"
    return line


def percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.array(latencies) * 1000.0, q))


def _connect(options: InferOptions) -> tuple[Any, Any, str]:
    module = _client_module(options.protocol)
    url = _strip_scheme(options.url)
    exception = _exception_type(options.protocol)
    try:
        client = module.InferenceServerClient(url=url)
        live = client.is_server_live()
    except (exception, OSError, ConnectionError) as exc:
        raise InferError(f"cannot reach Triton at {url} over {options.protocol}: {_reason(exc)}") from None
    if not live:
        raise InferError(f"Triton at {url} is not live")
    return module, client, url


def _exception_type(protocol: str) -> type[BaseException]:
    from tritonclient.utils import InferenceServerException

    exception: type[BaseException] = InferenceServerException
    return exception


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _check_model(client: Any, protocol: str, model: str, url: str) -> ModelInfo:
    exception = _exception_type(protocol)
    try:
        ready = client.is_model_ready(model)
    except exception as exc:
        raise InferError(f"model {model} on {url}: {_reason(exc)}") from None
    if not ready:
        raise InferError(f"model {model} is not ready on {url} (available: {_available(client, protocol)})")
    return model_info(client, protocol, model)


def _available(client: Any, protocol: str) -> str:
    index = (
        client.get_model_repository_index(as_json=True) if protocol == "grpc" else client.get_model_repository_index()
    )
    models = index.get("models", []) if isinstance(index, dict) else index
    names = sorted(str(item.get("name")) for item in models if item.get("state", "READY") == "READY")
    return ", ".join(names) or "none"


def text_input(info: ModelInfo) -> TensorInfo | None:
    """The BYTES input of a text model (its ensemble's ``text``), or None for a tensor model."""
    found = [t for t in info.inputs if t.datatype in TEXT_TYPES]
    return found[0] if len(found) == 1 and len(info.inputs) == 1 else None


def read_texts(path: Path) -> list[str]:
    """Texts from a .txt (one a line, blank lines skipped) or a .jsonl file (a "text" field a line)."""
    from modelservice.convert.textdata import read_rows

    try:
        return [row["text"] for _, row in read_rows(path, f"--data {path}")]
    except UserError as exc:
        raise InferError(str(exc)) from None


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= width else text[: width - 1] + "\u2026", ensure_ascii=False)


def describe_text_row(text: str, outputs: dict[str, NDArray[Any]], row: int) -> str:
    """One line per text: its label(s), then the first values of each numeric output."""
    parts = []
    for name, array in outputs.items():
        value = array[row]
        if value.dtype == np.object_:
            labels = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]
            labels = [label for label in labels if label]  # token labels: padding positions are blank
            shown = labels[0] if value.size == 1 and labels else " ".join(labels[:SHOWN_ROWS])
            parts.append(f"{name} {shown}")
        elif value.ndim == 1:
            first = ", ".join(f"{v:.4f}" for v in value[:4]) + (", ..." if value.size > 4 else "")
            norm = f" norm {float(np.linalg.norm(value)):.4f}" if value.size > 4 else ""
            parts.append(f"{name} [{first}]{norm}")
        else:
            parts.append(f"{name} {list(value.shape)}")
    return f"  {_short(text)}: " + "; ".join(parts)


def _text_requests(options: InferOptions, info: ModelInfo) -> tuple[list[list[str]], str]:
    texts, origins = list(options.texts), ["--text"] if options.texts else []
    if options.data is not None:
        texts += read_texts(options.data)
        origins.append(str(options.data))
    if not texts:
        texts, origins = [SAMPLE_TEXT], ["a sample sentence"]
    limit = info.max_batch_size if info.max_batch_size > 0 else len(texts)
    rows = options.batch or limit
    if rows > limit:
        raise InferError(f"--batch {rows} exceeds the model's max_batch_size {info.max_batch_size}")
    groups = [texts[i : i + rows] for i in range(0, len(texts), rows)]
    return groups, f"{len(texts)} text(s) from {' and '.join(origins)} in {len(groups)} request(s)"


def _send(client: Any, options: InferOptions, inputs: list[Any], outputs: list[Any], url: str) -> tuple[Any, float]:
    exception = _exception_type(options.protocol)
    start = time.perf_counter()
    try:
        result = client.infer(options.model, inputs, outputs=outputs)
    except exception as exc:
        raise InferError(f"model {options.model} on {url}: inference failed: {_reason(exc)}") from None
    return result, time.perf_counter() - start


def _infer_texts(module: Any, client: Any, options: InferOptions, info: ModelInfo, url: str) -> list[float]:
    tensor = text_input(info)
    assert tensor is not None
    groups, origin = _text_requests(options, info)
    requested = [module.InferRequestedOutput(t.name) for t in info.outputs]
    latencies: list[float] = []
    answers: list[tuple[list[str], dict[str, NDArray[Any]]]] = []
    for repeat in range(options.count):
        for texts in groups:
            array = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
            if info.max_batch_size == 0:
                array = array.reshape(-1)
            item = module.InferInput(tensor.name, list(array.shape), tensor.datatype)
            item.set_data_from_numpy(array)
            result, seconds = _send(client, options, [item], requested, url)
            latencies.append(seconds)
            if repeat == 0:
                answers.append((texts, {t.name: np.asarray(result.as_numpy(t.name)) for t in info.outputs}))
    print(f"input {tensor.name}: {tensor.datatype}, {origin}")
    for tensor in info.outputs:
        shape = list(answers[0][1][tensor.name].shape)
        print(f"output {tensor.name}: {tensor.datatype} {shape}" + (" (first request)" if len(answers) > 1 else ""))
    shown = 0
    for texts, outputs in answers:
        for row, text in enumerate(texts):
            if shown < SHOWN_ROWS:
                print(describe_text_row(text, outputs, row))
            shown += 1
    if shown > SHOWN_ROWS:
        print(f"  ... and {shown - SHOWN_ROWS} more")
    return latencies


def _infer_tensors(module: Any, client: Any, options: InferOptions, info: ModelInfo, url: str) -> list[float]:
    batch = options.batch or 1
    if info.max_batch_size > 0 and batch > info.max_batch_size:
        raise InferError(f"--batch {batch} exceeds the model's max_batch_size {info.max_batch_size}")
    if options.texts:
        raise InferError(
            f"--text: model {info.name} takes no text (its inputs: {', '.join(t.name for t in info.inputs)})"
        )
    if options.data is not None:
        arrays, origin = npz_inputs(options.data, info, batch), str(options.data)
    else:
        arrays, origin = random_inputs(info, batch, options.seed), f"random, seed {options.seed}"
    inputs = []
    for tensor in info.inputs:
        item = module.InferInput(tensor.name, list(arrays[tensor.name].shape), tensor.datatype)
        item.set_data_from_numpy(arrays[tensor.name])
        inputs.append(item)
    outputs = [module.InferRequestedOutput(t.name) for t in info.outputs]
    latencies: list[float] = []
    result = None
    for _ in range(options.count):
        result, seconds = _send(client, options, inputs, outputs, url)
        latencies.append(seconds)
    assert result is not None
    for tensor in info.inputs:
        print(f"input {tensor.name}: {tensor.datatype} {list(arrays[tensor.name].shape)} ({origin})")
    for tensor in info.outputs:
        array = result.as_numpy(tensor.name)
        print(describe_output(tensor.name, tensor.datatype, np.asarray(array), info.max_batch_size > 0))
    return latencies


def infer(options: InferOptions) -> int:
    """Send ``count`` requests (of ``batch`` rows, or every text of a text model); print the outputs of the first
    and the latency over all."""
    if (options.batch is not None and options.batch < 1) or options.count < 1:
        raise InferError("--batch and --count must be at least 1")
    module, client, url = _connect(options)
    info = _check_model(client, options.protocol, options.model, url)
    print(f"model {info.name} (version {info.version}) at {url} over {options.protocol}")
    if text_input(info) is not None:
        latencies = _infer_texts(module, client, options, info, url)
    else:
        latencies = _infer_tensors(module, client, options, info, url)
    print(
        f"latency over {len(latencies)} request(s): p50 {percentile_ms(latencies, 50):.2f} ms, "
        f"p95 {percentile_ms(latencies, 95):.2f} ms"
    )
    close = getattr(client, "close", None)
    if close is not None:
        close()
    return 0
