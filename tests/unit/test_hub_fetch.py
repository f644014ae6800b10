"""``hf://ORG/NAME[@REVISION]`` against a Hub-compatible server on loopback (the API listing that
``huggingface_hub`` reads, and ``/resolve/<commit>/<file>`` downloads with a redirect to a CDN path): only the
needed files, each checked against the listing's digest, the token only to the endpoint's host, paths that
leave the folder refused; then a real conversion of what was fetched."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

import _hf
from modelservice.api.errors import UserError
from modelservice.convert.fetch import fetch
from modelservice.convert.progress import Progress

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Hub:
    files: dict[str, bytes]
    port: int = 0
    token: str | None = None
    tamper: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def sibling(self, name: str, data: bytes) -> dict[str, Any]:
        blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()
        entry: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": blob}
        if name.endswith((".safetensors", ".bin")):
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


def _handler(hub: Hub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            authorization = self.headers.get("Authorization")
            hub.requests.append((path, authorization))
            if hub.token and not path.startswith("/cdn/") and authorization != f"Bearer {hub.token}":
                self._send(401, b'{"error": "Invalid credentials"}', {"Content-Type": "application/json"})
                return
            if path.startswith("/api/models/acme/tiny/revision/"):
                siblings = [hub.sibling(n, d) for n, d in sorted(hub.files.items())]
                listing = {"id": "acme/tiny", "modelId": "acme/tiny", "sha": COMMIT, "siblings": siblings}
                self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})
                return
            prefix = f"/acme/tiny/resolve/{COMMIT}/"
            if path.startswith(prefix):
                name = path[len(prefix) :]
                if name.endswith(".safetensors"):  # LFS files come from a CDN on another host name
                    self._send(302, b"", {"Location": f"http://localhost:{hub.port}/cdn/{name}"})
                elif name in hub.files:
                    self._send(200, hub.files[name])
                else:
                    self._send(404, b"")
                return
            if path.startswith("/cdn/") and path[5:] in hub.files:
                data = hub.files[path[5:]]
                self._send(200, data[:-1] + b"\0" if path[5:] in hub.tamper else data)
                return
            self._send(404, b"")

    return Handler


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    folder = _hf.write_text_model(tmp_path / "origin", layout="sentence-transformers", layers=1, hidden=32, heads=2)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    files.update({"README.md": b"# tiny", "onnx/model.onnx": b"not needed", "tf_model.h5": b"not needed"})
    state = Hub(files)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{state.port}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_fetch(tmp_path: Path, uri: str = "hf://acme/tiny") -> Path:
    fetched = fetch(uri, tmp_path / "fetched", sha256=None, base_dir=tmp_path, progress=Progress(False))
    assert fetched.kind == "folder"
    return fetched.path


def test_fetches_the_needed_files_checked_against_the_listing(tmp_path: Path, hub: Hub) -> None:
    folder = run_fetch(tmp_path, "hf://acme/tiny@main")
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "model.safetensors" in names and "tokenizer.json" in names and "1_Pooling/config.json" in names
    assert not {"README.md", "onnx/model.onnx", "tf_model.h5"} & set(names)
    assert all((folder / n).read_bytes() == hub.files[n] for n in names)
    assert any(path == f"/acme/tiny/resolve/{COMMIT}/config.json" for path, _ in hub.requests)  # by commit


def test_a_file_that_differs_from_the_listing_is_refused(tmp_path: Path, hub: Hub) -> None:
    hub.tamper.add("model.safetensors")
    with pytest.raises(UserError, match=r"^spec.model.uri: hf://acme/tiny: model.safetensors: sha256 mismatch"):
        run_fetch(tmp_path)


def test_the_token_goes_to_the_endpoint_only(tmp_path: Path, hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.token = "hf_secret"
    with pytest.raises(UserError, match="the Hub refused the listing"):
        run_fetch(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    run_fetch(tmp_path / "again")
    cdn = [auth for path, auth in hub.requests if path.startswith("/cdn/")]
    assert cdn and all(auth is None for auth in cdn)  # the redirect target is another host: no token


def test_a_listed_path_that_leaves_the_folder_is_refused(tmp_path: Path, hub: Hub) -> None:
    hub.files["../outside.json"] = b"{}"
    with pytest.raises(UserError, match="would leave the model folder"):
        run_fetch(tmp_path)
    assert not (tmp_path / "fetched" / "outside.json").exists() and not (tmp_path / "outside.json").exists()


@pytest.mark.slow
def test_an_hf_uri_converts(tmp_path: Path, hub: Hub) -> None:
    from modelservice.api.loader import load_one
    from modelservice.convert.pipeline import ConvertOptions, convert

    spec = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "tiny"},
        "spec": {"model": {"uri": "hf://acme/tiny", "format": "huggingface", "task": "sentence-embedding"}},
    }
    (tmp_path / "ms.yaml").write_text(json.dumps(spec), encoding="utf-8")
    options = ConvertOptions(cache_dir=tmp_path / "cache", progress=False)
    report = convert(load_one(tmp_path / "ms.yaml"), tmp_path / "out", options)
    assert report.data["source"]["kind"] == "folder" and report.data["verification"]["passed"]
