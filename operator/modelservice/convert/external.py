"""ONNX models whose weights live in an external data file beside the graph (protobuf caps one message at 2 GiB).

Layout. A model ``X.onnx`` holds its weights inline, or keeps every tensor of 1 KiB or more in ONE file beside
it, ``X.onnx.data``, named by a relative ``location`` (ONNX's external data format). Tensors of 1 MiB or more
start at 64 KiB boundaries there, so ONNX Runtime can map them from the file rather than read them into memory.

Work files use external data wherever the tool writing them allows (the dynamo export, fp16, the quantizers
and their pre-processing; the TorchScript exporter writes inline below 2 GiB): weights then stream to disk, and
no step builds a 2 GiB protobuf. Every helper here takes either layout. Only the installed ``model.onnx`` is laid
out by size (``install_model``): inline up to ``ConvertOptions.external_data_threshold`` bytes of tensors
(default 1 GiB, ``$MODELSERVICE_EXTERNAL_DATA_THRESHOLD``), external above it.

Files and digest. The files of a model are the .onnx file followed by its data files in the order the graph
first names them (one, for every file this package writes). The model's SHA-256 is taken over those files'
bytes concatenated in that order, ``cat model.onnx model.onnx.data | sha256sum``; for a model without external
data that is the file's own digest.

Copying never loads weights: the graph is read without them and each tensor's bytes are streamed from file to
file. A ``location`` outside the model's folder (absolute, ``..``, a link) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from modelservice.api.errors import UserError

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, TensorProto

THRESHOLD_ENV = "MODELSERVICE_EXTERNAL_DATA_THRESHOLD"
DEFAULT_THRESHOLD = 1 << 30
DATA_SUFFIX = ".data"
INLINE_BELOW = 1024  # tensors smaller than this stay in the graph (ONNX's own default)
ALIGN_ABOVE = 1 << 20  # tensors at least this large start at an ALIGNMENT boundary
ALIGNMENT = 1 << 16
PROTOBUF_LIMIT = (1 << 31) - (1 << 20)  # a serialized graph must stay below 2 GiB (with room for the graph)
CHUNK = 1 << 24


def threshold_from_env() -> int:
    """``$MODELSERVICE_EXTERNAL_DATA_THRESHOLD`` (bytes; suffixes Ki, Mi, Gi allowed), else 1 GiB."""
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    text, factor = raw, 1
    for suffix, scale in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if text.endswith(suffix):
            text, factor = text[: -len(suffix)], scale
    try:
        value = int(text) * factor
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(f"{THRESHOLD_ENV}: expected a byte count such as 1073741824 or 1Gi, got {raw!r}")
    return value


def data_path(model: Path) -> Path:
    """The consolidated external data file of ``model``: ``X.onnx.data`` beside ``X.onnx``."""
    return model.with_name(model.name + DATA_SUFFIX)


# ----------------------------------------------------------------------------------------------- reading


def load_graph(path: Path) -> ModelProto:
    """The model at ``path`` without its external weights (the graph, small tensors and data references)."""
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _graphs(model: ModelProto) -> Iterator[GraphProto]:
    pending = [model.graph]
    while pending:
        graph = pending.pop(0)
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    pending.append(attribute.g)
                pending.extend(attribute.graphs)


def tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor that can hold weights: initializers (dense and sparse), and tensor attributes of nodes, in
    the graph, its subgraphs and the model's functions."""
    nodes = [node for graph in _graphs(model) for node in graph.node]
    nodes += [node for function in model.functions for node in function.node]
    for graph in _graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors


def _is_external(tensor: TensorProto) -> bool:
    from onnx import TensorProto

    return tensor.data_location == TensorProto.EXTERNAL


def _location(tensor: TensorProto) -> str:
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


def _span(tensor: TensorProto) -> tuple[int, int | None]:
    values = {entry.key: entry.value for entry in tensor.external_data}
    offset = int(values.get("offset") or 0)
    length = int(values["length"]) if values.get("length") else None
    return offset, length


def _resolve(folder: Path, location: str, model: Path) -> Path:
    """``location`` inside ``folder``; refused when empty, absolute, escaping the folder or missing."""
    candidate = folder / location
    if not location or Path(location).is_absolute() or not candidate.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"{model.name}: external data location {location!r} is not a file inside the model's folder")
    if not candidate.is_file():
        raise UserError(f"{model.name}: external data file {location!r} does not exist beside the model")
    return candidate


def data_files(path: Path) -> list[Path]:
    """The external data files ``path`` refers to, in the order the graph first names them."""
    if path.suffix != ".onnx":
        return []
    seen: dict[str, Path] = {}
    for tensor in tensors(load_graph(path)):
        if _is_external(tensor):
            location = _location(tensor)
            if location not in seen:
                seen[location] = _resolve(path.parent, location, path)
    return list(seen.values())


def model_files(path: Path) -> list[Path]:
    """``path`` followed by its external data files (see the module for the order)."""
    return [path, *data_files(path)]


def model_size(path: Path) -> int:
    """Bytes of the model file and its external data files together."""
    return sum(p.stat().st_size for p in model_files(path))


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path.name, "sha256": self.sha256, "sizeBytes": self.size_bytes}


def artifact_digest(path: Path) -> tuple[str, list[ModelFile]]:
    """The model's SHA-256 (over its files concatenated in ``model_files`` order, see the module) and each
    file's own digest and size, in one pass over the bytes."""
    combined = hashlib.sha256()
    files: list[ModelFile] = []
    for file in model_files(path):
        own = hashlib.sha256()
        size = 0
        with file.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                combined.update(chunk)
                own.update(chunk)
                size += len(chunk)
        files.append(ModelFile(file, own.hexdigest(), size))
    return combined.hexdigest(), files


def model_sha256(path: Path) -> str:
    """SHA-256 over the model's files concatenated in ``model_files`` order (see the module)."""
    return artifact_digest(path)[0]


def tensor_bytes(path: Path) -> int:
    """Bytes of weights the model holds, inline and external."""
    total = 0
    for tensor in tensors(load_graph(path)):
        if _is_external(tensor):
            _, length = _span(tensor)
            total += length if length is not None else _resolve(path.parent, _location(tensor), path).stat().st_size
        else:
            total += len(tensor.raw_data) if tensor.HasField("raw_data") else tensor.ByteSize()
    return total


# ----------------------------------------------------------------------------------------------- writing


def remove_model(path: Path) -> None:
    """Remove ``path`` and the external data files it names (nothing when it does not exist)."""
    if not path.exists():
        data_path(path).unlink(missing_ok=True)
        return
    try:
        files = data_files(path)
    except Exception:  # an unreadable or broken file: remove what follows the naming convention
        files = [data_path(path)]
    for file in [path, *files]:
        file.unlink(missing_ok=True)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A temporary file beside ``path``, readable by all (Triton may run as another user than the conversion)
    and renamed over ``path`` once written; removed if writing fails."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_bytes(path: Path, content: bytes) -> None:
    with _replacing(path) as handle:
        handle.write(content)


def _serialize(model: ModelProto, path: Path) -> bytes:
    if model.ByteSize() > PROTOBUF_LIMIT:
        raise UserError(
            f"conversion: {path.name}: the graph alone is {model.ByteSize() / (1 << 30):.1f} GiB, past protobuf's "
            "2 GiB limit (lower MODELSERVICE_EXTERNAL_DATA_THRESHOLD to move its weights into a data file)"
        )
    content: bytes = model.SerializeToString()
    return content


def write_graph(model: ModelProto, path: Path) -> None:
    """Rewrite ``path`` with ``model`` as it is (read with ``load_graph``): its external references stay."""
    _write_bytes(path, _serialize(model, path))


class _DataWriter:
    """Appends tensors to one data file, aligned (see the module), and points each tensor at its bytes."""

    def __init__(self, handle: BinaryIO, location: str) -> None:
        self.handle = handle
        self.location = location
        self.offset = 0

    def _start(self, length: int) -> int:
        if length >= ALIGN_ABOVE and self.offset % ALIGNMENT:
            padding = ALIGNMENT - self.offset % ALIGNMENT
            self.handle.write(b"\0" * padding)
            self.offset += padding
        return self.offset

    def _point(self, tensor: TensorProto, offset: int, length: int) -> None:
        from onnx import TensorProto

        del tensor.external_data[:]
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value

    def add_bytes(self, tensor: TensorProto, content: bytes) -> None:
        offset = self._start(len(content))
        self.handle.write(content)
        self.offset += len(content)
        tensor.ClearField("raw_data")
        self._point(tensor, offset, len(content))

    def add_file_range(self, tensor: TensorProto, source: Path, start: int, length: int | None) -> None:
        size = source.stat().st_size
        length = size - start if length is None else length
        if start < 0 or length < 0 or start + length > size:
            raise UserError(f"{source.name}: external data of tensor {tensor.name!r} lies past the end of the file")
        offset = self._start(length)
        with source.open("rb") as reader:
            reader.seek(start)
            left = length
            while left:
                chunk = reader.read(min(CHUNK, left))
                if not chunk:
                    raise UserError(f"{source.name}: external data of tensor {tensor.name!r} is truncated")
                self.handle.write(chunk)
                left -= len(chunk)
        self.offset += length
        self._point(tensor, offset, length)


def save_model(model: ModelProto, path: Path, threshold: int = 0) -> None:
    """Write ``model`` (weights in memory) to ``path``: inline when its tensors hold at most ``threshold``
    bytes, else every tensor of 1 KiB or more goes to ``path.data``, and the tensors written out drop their
    in-memory bytes (``model`` then refers to the file). Stale files of an earlier model at ``path`` are
    removed first."""
    if any(_is_external(t) for t in tensors(model)):
        raise ValueError(f"{path.name}: the model refers to external data not loaded into memory")
    remove_model(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = sum(len(t.raw_data) for t in tensors(model) if t.HasField("raw_data"))
    if weights <= threshold and weights < PROTOBUF_LIMIT:
        _write_bytes(path, _serialize(model, path))
        return
    target = data_path(path)
    with _replacing(target) as handle:
        writer = _DataWriter(handle, target.name)
        for tensor in tensors(model):
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= INLINE_BELOW:
                writer.add_bytes(tensor, tensor.raw_data)
    _write_bytes(path, _serialize(model, path))


def copy_model(source: Path, target: Path) -> None:
    """Copy the model at ``source`` to ``target`` with its weights: a model without external data is copied
    byte for byte; otherwise the external bytes are streamed into ONE file, ``target.data`` (``source`` may be
    ``target``: its data files are then consolidated in place)."""
    graph = load_graph(source)
    external = [t for t in tensors(graph) if _is_external(t)]
    if not external:
        if source.resolve() != target.resolve():
            remove_model(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return
    old = data_files(source) if source.resolve() == target.resolve() else []
    if source.resolve() != target.resolve():
        remove_model(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    destination = data_path(target)
    with _replacing(destination) as handle:
        writer = _DataWriter(handle, destination.name)
        for tensor in external:
            start, length = _span(tensor)
            writer.add_file_range(tensor, _resolve(source.parent, _location(tensor), source), start, length)
    _write_bytes(target, _serialize(graph, target))
    for stale in old:
        if stale.resolve() != destination.resolve():
            stale.unlink(missing_ok=True)


def install_model(source: Path, target: Path, threshold: int) -> None:
    """Copy ``source`` to ``target`` laid out by size: weights inline when they hold at most ``threshold``
    bytes (and fit protobuf), else in one data file ``target.data``. Only an inline result loads the weights."""
    import onnx

    weights = tensor_bytes(source)
    if weights > threshold or weights >= PROTOBUF_LIMIT:
        if data_files(source):
            copy_model(source, target)
        else:  # an inline model past the threshold (at most 2 GiB): move its weights out
            save_model(onnx.load(str(source)), target, 0)
        return
    if not data_files(source):
        copy_model(source, target)
        return
    model = onnx.load(str(source))  # loads the external weights into the tensors, marking them inline
    save_model(model, target, threshold=PROTOBUF_LIMIT)
