"""Fetching model sources: local paths, pvc://, a real http(s) server on 127.0.0.1, fsspec, archives.

The DNS-rebinding tests stand a hostile resolver in for the environment (``socket.getaddrinfo`` patched for
made-up ``*.example.test`` names only): the fetch code itself runs for real against a real local server.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import io
import os
import re
import socket
import ssl
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from modelservice.api.errors import UserError
from modelservice.convert.archive import unpack
from modelservice.convert.digest import tree_sha256
from modelservice.convert.fetch import _fsspec_fetch, _host_header, check_url, fetch, fetch_to_dir
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
    seen: list[tuple[str, str | None, str | None]] = []  # (path, Host, Authorization) of each request

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host"), self.headers.get("Authorization")))
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
    port = httpd.server_address[1]
    base = f"http://127.0.0.1:{port}"
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
        "/to-evil-host": (302, {"Location": f"http://evil.example.test:{port}/model.bin"}, b""),
        "/to-other-host": (302, {"Location": f"http://other.example.test:{port}/model.bin"}, b""),
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


# ------------------------------------------------------------------------ DNS rebinding (pinned address)

REAL_GETADDRINFO = socket.getaddrinfo


class FakeDNS:
    """A hostile resolver for made-up names: each lookup of a name gets the next of its answers (the last one
    repeats); every other name (the IP literals urllib3 connects to included) goes to the real resolver."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str | bytes | None, port: str | int | None, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        answers = self.answers[name]
        address = answers[min(self.lookups.count(name), len(answers) - 1)]
        self.lookups.append(name)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], FakeDNS]:
    def install(answers: dict[str, list[str]]) -> FakeDNS:
        fake = FakeDNS(answers)
        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return fake

    monkeypatch.delenv("MODELSERVICE_ALLOW_PRIVATE_FETCH", raising=False)
    Handler.seen.clear()
    return install


def server_port(server: str) -> int:
    port = urlsplit(server).port
    assert port is not None
    return port


def test_rebinding_dns_cannot_move_the_download_to_the_metadata_address(
    server: str, tmp_path: Path, dns: Callable[[dict[str, list[str]]], FakeDNS]
) -> None:
    # The first answer (checked) is the local server, every later one the metadata service: a second lookup
    # for the connection would reach 169.254.169.254.
    fake = dns({"models.example.test": ["127.0.0.1", "169.254.169.254"]})
    url = f"http://models.example.test:{server_port(server)}/model.bin"
    fetched = fetch(url, tmp_path, sha256=sha(PAYLOAD), base_dir=tmp_path, progress=QUIET)
    assert fetched.path.read_bytes() == PAYLOAD
    assert fake.lookups == ["models.example.test"]  # resolved once: the checked address is the one connected to


def test_each_hop_is_resolved_once_and_the_server_sees_the_host_name(
    server: str, tmp_path: Path, dns: Callable[[dict[str, list[str]]], FakeDNS]
) -> None:
    fake = dns({"models.example.test": ["127.0.0.1"]})
    port = server_port(server)
    fetched = fetch(
        f"http://models.example.test:{port}/redirect", tmp_path, sha256=None, base_dir=tmp_path, progress=QUIET
    )
    assert fetched.path.read_bytes() == PAYLOAD
    assert fake.lookups == ["models.example.test", "models.example.test"]  # once per hop
    host = f"models.example.test:{port}"  # the name and the non-default port, never 127.0.0.1
    assert [(path, seen_host) for path, seen_host, _ in Handler.seen] == [("/redirect", host), ("/model.bin", host)]


@pytest.mark.parametrize(
    ("route", "answers"),
    [
        ("/to-evil-host", {"models.example.test": ["127.0.0.1"], "evil.example.test": ["169.254.169.254"]}),
        ("/redirect", {"models.example.test": ["127.0.0.1", "169.254.169.254"]}),  # same name, rebound between hops
    ],
)
def test_a_redirect_to_a_metadata_address_is_refused(
    server: str,
    tmp_path: Path,
    dns: Callable[[dict[str, list[str]]], FakeDNS],
    route: str,
    answers: dict[str, list[str]],
) -> None:
    fake = dns(answers)
    url = f"http://models.example.test:{server_port(server)}{route}"
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        fetch(url, out, sha256=None, base_dir=tmp_path, progress=QUIET)
    message = str(info.value)
    assert message.startswith("spec.model.uri: http://")
    assert "resolves to 169.254.169.254, a link-local/metadata address; refused" in message
    assert "\n" not in message
    assert len(fake.lookups) == 2
    assert [path for path, _, _ in Handler.seen] == [route]  # only the first hop reached a server
    assert list(out.iterdir()) == []


def test_bearer_token_goes_only_to_the_host_named_in_the_uri(
    server: str, tmp_path: Path, dns: Callable[[dict[str, list[str]]], FakeDNS], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELSERVICE_HTTP_BEARER_TOKEN", "s3cret")
    dns({"models.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    port = server_port(server)
    fetch(f"http://models.example.test:{port}/to-other-host", tmp_path, sha256=None, base_dir=tmp_path, progress=QUIET)
    assert Handler.seen == [
        ("/to-other-host", f"models.example.test:{port}", "Bearer s3cret"),
        ("/model.bin", f"other.example.test:{port}", None),
    ]


def test_check_url_returns_the_addresses_it_checked(dns: Callable[[dict[str, list[str]]], FakeDNS]) -> None:
    dns({"models.example.test": ["127.0.0.1", "::1", "127.0.0.1"], "meta.example.test": ["fd00:ec2::254"]})
    assert check_url("https://models.example.test/model.bin") == ["127.0.0.1"]
    assert check_url("https://models.example.test/model.bin") == ["::1"]
    with pytest.raises(UserError, match=r"resolves to fd00:ec2::254, a link-local/metadata address; refused"):
        check_url("https://meta.example.test/latest")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[::1]:8080/m.bin", "[::1]:8080"),
        ("https://[2001:db8::1]/m.bin", "[2001:db8::1]"),
        ("https://Models.Example.TEST:443/m.bin", "models.example.test"),
        ("http://models.example.test:80/m.bin", "models.example.test"),
        ("https://models.example.test:80/m.bin", "models.example.test:80"),
        ("http://user:pw@bücher.example.test:8080/m.bin", "xn--bcher-kva.example.test:8080"),
    ],
)
def test_host_header_is_the_name_with_a_non_default_port(url: str, host: str) -> None:
    assert _host_header(url) == host


# ------------------------------------------------------------------- https to a pinned address (real TLS)


@dataclass
class TLSServer:
    port: int
    ca: Path
    server_names: list[str | None] = field(default_factory=list)  # the SNI each handshake carried


def write_test_pki(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA (ca.pem) and a certificate for the DNS name ``name`` signed by it (server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelservice test CA")])
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only"), False
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, decipher_only=False, **usage),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture(scope="module")
def tls_server(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    """The same routes over https on 127.0.0.1, with a certificate for models.example.test only."""
    pytest.importorskip("cryptography")
    ca, certificate, key = write_test_pki(tmp_path_factory.mktemp("pki"), "models.example.test")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    info = TLSServer(port=httpd.server_address[1], ca=ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    context.sni_callback = lambda _sock, name, _context: info.server_names.append(name)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield info
    httpd.shutdown()
    httpd.server_close()


def test_https_to_the_pinned_address_verifies_the_certificate_against_the_host_name(
    tls_server: TLSServer,
    tmp_path: Path,
    dns: Callable[[dict[str, list[str]]], FakeDNS],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.ca))
    fake = dns({"models.example.test": ["127.0.0.1", "169.254.169.254"]})
    tls_server.server_names.clear()
    url = f"https://models.example.test:{tls_server.port}/model.bin"
    fetched = fetch(url, tmp_path, sha256=sha(PAYLOAD), base_dir=tmp_path, progress=QUIET)
    assert fetched.path.read_bytes() == PAYLOAD
    assert fake.lookups == ["models.example.test"]
    assert tls_server.server_names == ["models.example.test"]  # SNI is the name, not 127.0.0.1
    assert Handler.seen[-1][1] == f"models.example.test:{tls_server.port}"


@pytest.mark.parametrize(
    ("host", "ca", "message"),
    [
        # The same server and address under a name its certificate does not carry.
        ("other.example.test", "test", "Hostname mismatch, certificate is not valid for 'other.example.test'"),
        # The certificate carries no IP address: the successful fetch above was verified by name.
        ("127.0.0.1", "test", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
        # A CA the default bundle (certifi) does not know.
        ("models.example.test", "default", "unable to get local issuer certificate"),
    ],
)
def test_https_certificate_failures_are_refused(
    tls_server: TLSServer,
    tmp_path: Path,
    dns: Callable[[dict[str, list[str]]], FakeDNS],
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    ca: str,
    message: str,
) -> None:
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    if ca == "test":
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.ca))
    else:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    dns({"models.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        fetch(f"https://{host}:{tls_server.port}/model.bin", out, sha256=None, base_dir=tmp_path, progress=QUIET)
    text = str(info.value)
    assert text.startswith(f"spec.model.uri: https://{host}:{tls_server.port}/model.bin: request failed: SSLError")
    assert "certificate verify failed" in text
    assert message in text
    assert "\n" not in text
    assert list(out.iterdir()) == []
    assert Handler.seen == []  # no request was sent over an unverified connection


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
