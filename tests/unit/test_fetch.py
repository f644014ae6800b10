"""Fetching model sources: local paths, pvc://, a real http.server on 127.0.0.1, fsspec, archives."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelservice.api.errors import UserError
from modelservice.convert.archive import unpack
from modelservice.convert.digest import tree_sha256
from modelservice.convert.fetch import _fsspec_fetch, check_url, fetch, fetch_to_dir
from modelservice.convert.progress import Progress

PAYLOAD = os.urandom(200_000)
QUIET = Progress(False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    Handler.routes = {
        "/model.bin": (200, {}, PAYLOAD),
        "/redirect": (302, {"Location": "/model.bin"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        # Declares more bytes than it sends, then closes: a truncated download.
        "/truncated.bin": (200, {"Content-Length": str(len(PAYLOAD) + 1000), "Connection": "close"}, PAYLOAD),
        "/src.tar.gz": (200, {}, tar_gz({"digits/model.py": b"# model\n", "digits/weights.bin": b"w" * 10})),
        "/evil.tar.gz": (200, {}, tar_gz({"../../escaped.txt": b"x"})),
    }
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield base
    httpd.shutdown()
    httpd.server_close()


def test_http_download_is_streamed_to_the_file_and_digest_checked(server: str, tmp_path: Path) -> None:
    path = fetch_to_dir(f"{server}/model.bin", tmp_path, sha256=sha(PAYLOAD), base_dir=tmp_path, progress=False)
    assert path == tmp_path / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # no temp files left behind


def test_http_redirects_are_followed_within_http(server: str, tmp_path: Path) -> None:
    fetched = fetch(f"{server}/redirect", tmp_path, sha256=None, base_dir=tmp_path, progress=QUIET)
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.path.name == "redirect"


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/to-file", "only http(s) URLs may be fetched"),
        ("/to-metadata", "link-local/metadata address; refused"),
        ("/loop", "more than 5 redirects"),
        ("/missing", "HTTP 404"),
        ("/truncated.bin", "truncated"),
    ],
)
def test_http_refusals_and_failures_are_one_clear_error(server: str, tmp_path: Path, route: str, message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"spec\.model\.uri|truncated") as info:
        fetch(f"{server}{route}", out, sha256=None, base_dir=tmp_path, progress=QUIET)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert list(out.iterdir()) == []  # nothing half-written


def test_digest_mismatch_leaves_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sha256 mismatch: expected 0{64}, got " + sha(PAYLOAD)):
        fetch(f"{server}/model.bin", tmp_path, sha256="0" * 64, base_dir=tmp_path, progress=QUIET)
    assert list(tmp_path.iterdir()) == []


def test_download_size_limit(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVICE_MAX_DOWNLOAD_BYTES", "1000")
    with pytest.raises(UserError, match="exceeds the download limit of 1000 bytes"):
        fetch(f"{server}/model.bin", tmp_path, sha256=None, base_dir=tmp_path, progress=QUIET)


def test_metadata_hosts_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("http://169.254.169.254/latest", "http://metadata.google.internal/computeMetadata/v1/"):
        with pytest.raises(UserError, match="refused"):
            check_url(url)
    with pytest.raises(UserError, match="refused"):
        check_url("http://[fd00:ec2::254]/latest")
    monkeypatch.setenv("MODELSERVICE_ALLOW_PRIVATE_FETCH", "1")
    check_url("http://169.254.169.254/latest")


def test_http_archive_is_unpacked_to_its_single_folder(server: str, tmp_path: Path) -> None:
    fetched = fetch(f"{server}/src.tar.gz", tmp_path / "out", sha256=None, base_dir=tmp_path, progress=QUIET)
    assert fetched.kind == "archive"
    assert (fetched.path / "model.py").read_bytes() == b"# model\n"  # digits/ stands for the source


def test_http_archive_member_escaping_is_refused(server: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"member '../../escaped.txt' escapes the target folder"):
        fetch(f"{server}/evil.tar.gz", tmp_path / "a" / "b" / "out", sha256=None, base_dir=tmp_path, progress=QUIET)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_tar_links_pointing_outside_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("model/weights.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../etc/passwd"
        tar.addfile(link)
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match=re.escape("links to '../../../etc/passwd', outside the archive folder")):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "model").exists()


def test_zip_absolute_and_parent_members_are_refused(tmp_path: Path) -> None:
    for name in ("/abs.txt", "a/../../up.txt"):
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok.txt", "fine")
            zf.writestr(name, "bad")
        with pytest.raises(UserError, match="escapes the target folder"):
            unpack(archive, tmp_path / "out")
        assert not (tmp_path / "out" / "ok.txt").exists()  # checked before anything is written


def test_local_relative_folder_and_file_url(tmp_path: Path) -> None:
    src = tmp_path / "yaml-dir" / "model"
    src.mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub").mkdir()
    (src / "sub" / "b.txt").write_text("b")
    fetched = fetch("model", tmp_path / "out", sha256=None, base_dir=tmp_path / "yaml-dir", progress=QUIET)
    assert fetched.kind == "folder"
    assert fetched.sha256 == tree_sha256(src)
    assert (fetched.path / "sub" / "b.txt").read_text() == "b"
    single = fetch(f"file://{src / 'a.txt'}", tmp_path / "out2", sha256=sha(b"a"), base_dir=tmp_path, progress=QUIET)
    assert single.path.read_text() == "a"


def test_missing_local_path_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^spec.model.uri: nowhere: no such file or folder"):
        fetch("nowhere", tmp_path / "out", sha256=None, base_dir=tmp_path, progress=QUIET)


def test_pvc_uri_maps_to_the_mounted_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVICE_PVC_ROOT", str(tmp_path / "pvc"))
    (tmp_path / "pvc" / "models" / "digits").mkdir(parents=True)
    (tmp_path / "pvc" / "models" / "digits" / "model.onnx").write_bytes(b"onnx")
    path = fetch_to_dir(
        "pvc://models/digits/model.onnx", tmp_path / "out", sha256=None, base_dir=tmp_path, progress=False
    )
    assert path.read_bytes() == b"onnx"
    with pytest.raises(UserError, match=re.escape("without '..'")):
        fetch_to_dir("pvc://models/../../etc", tmp_path / "out", sha256=None, base_dir=tmp_path, progress=False)


def test_fsspec_folder_fetch_with_the_memory_filesystem(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/digits/model.py", b"# model")
    fs.pipe("/bucket/digits/weights/w.safetensors", b"w" * 100)
    staging = tmp_path / "staging"
    staging.mkdir()
    fetched = _fsspec_fetch(fs, "memory:///bucket/digits", staging, QUIET, "spec.model.uri")
    assert fetched.kind == "folder"
    assert (fetched.path / "weights" / "w.safetensors").read_bytes() == b"w" * 100
    single = _fsspec_fetch(fs, "memory:///bucket/digits/model.py", staging, QUIET, "spec.model.uri")
    assert single.sha256 == sha(b"# model")


def test_cloud_scheme_without_its_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if the cloud extra were not installed
    with pytest.raises(UserError, match=r"gs:// needs the gcsfs package: pip install 'modelservice-operator\[cloud\]'"):
        fetch("gs://bucket/model/", tmp_path, sha256=None, base_dir=tmp_path, progress=QUIET)
