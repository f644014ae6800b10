"""Fetch a model source (or a data file) from a path, file://, pvc://, http(s)://, s3:// or gs://.

Downloads stream into a temporary file beside the destination, are size-limited
(``MODELSERVICE_MAX_DOWNLOAD_BYTES``, default 64 GiB), are checked against ``sha256`` when one is given, and
are renamed into place only when complete. Archives (.tar.gz, .tgz, .tar, .zip) are unpacked with every
member checked (see archive.py). http(s) redirects are followed only to http(s), and link-local / cloud
metadata addresses are refused unless ``MODELSERVICE_ALLOW_PRIVATE_FETCH=1``. Each hop's host is resolved once
and the connection goes to an address that was checked (no second lookup a rebinding DNS server could answer
differently); https certificates are still verified against the host name, with the CA bundle from
``REQUESTS_CA_BUNDLE`` (else certifi's). http(s) downloads connect directly: proxy variables are not used.

``pvc://CLAIM/PATH`` is the path ``$MODELSERVICE_PVC_ROOT/CLAIM/PATH`` (default ``/mnt/pvc``): the conversion
Job mounts each claim there. s3:// and gs:// go through fsspec (s3fs/gcsfs, the ``cloud`` extra), with
credentials from the environment (the Job maps the ModelService's credentials Secret into it).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import unquote, urljoin, urlsplit

from modelservice.api.errors import UserError
from modelservice.api.models import uri_scheme
from modelservice.convert.archive import is_archive, unpack
from modelservice.convert.digest import CHUNK, path_sha256
from modelservice.convert.progress import Progress

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
BLOCKED_NETWORKS = [
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, AWS/GCP/Azure metadata 169.254.169.254
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
]
BLOCKED_HOSTS = {"metadata.google.internal", "metadata.goog", "metadata"}
CLOUD_PACKAGES = {"s3": "s3fs", "gs": "gcsfs"}

Kind = Literal["file", "folder", "archive"]


@dataclass(frozen=True)
class Fetched:
    """What a fetch produced: ``path`` (a file, or the folder holding the source) and the digest of what was
    fetched (the file or archive as downloaded; for a folder, its listing digest, see digest.py)."""

    path: Path
    sha256: str
    kind: Kind


def max_download_bytes() -> int:
    return int(os.environ.get("MODELSERVICE_MAX_DOWNLOAD_BYTES", str(64 << 30)))


def private_fetch_allowed() -> bool:
    return os.environ.get("MODELSERVICE_ALLOW_PRIVATE_FETCH", "").lower() in ("1", "true", "yes")


def pvc_root() -> Path:
    return Path(os.environ.get("MODELSERVICE_PVC_ROOT", "/mnt/pvc"))


# ------------------------------------------------------------------------------------------- public


def fetch_to_dir(uri: str, out: Path, *, sha256: str | None, base_dir: Path, progress: bool) -> Path:
    """Fetch ``uri`` into the folder ``out``; return the fetched file (``out/NAME``) or ``out`` for a
    folder or an unpacked archive (the contents of an archive's single top-level folder land in ``out``)."""
    return fetch(uri, out, sha256=sha256, base_dir=base_dir, progress=Progress(progress)).path


def fetch(
    uri: str,
    out: Path,
    *,
    sha256: str | None,
    base_dir: Path,
    progress: Progress,
    unpack_archives: bool = True,
    field: str = "spec.model.uri",
) -> Fetched:
    """Fetch ``uri`` into ``out`` (see module docs). Errors name ``field``."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=out))
    try:
        fetched = _fetch_into(uri, staging, base_dir=base_dir, progress=progress, field=field)
        if sha256 is not None and fetched.sha256 != sha256.lower():
            what = "folder listing" if fetched.kind == "folder" else "file"
            raise UserError(
                f"{field}: {uri}: sha256 mismatch: expected {sha256.lower()}, got {fetched.sha256} ({what} digest)"
            )
        if fetched.kind == "file" and unpack_archives and is_archive(fetched.path.name):
            progress.step("fetch", f"unpacking {fetched.path.name}")
            unpacked = staging / ".unpacked"
            unpack(fetched.path, unpacked)
            return Fetched(_move_contents(_single_folder(unpacked), out), fetched.sha256, "archive")
        if fetched.kind == "file":
            target = out / fetched.path.name
            _remove(target)
            os.replace(fetched.path, target)
            return Fetched(target, fetched.sha256, "file")
        return Fetched(_move_contents(fetched.path, out), fetched.sha256, "folder")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def local_path(uri: str, base_dir: Path, field: str = "spec.model.uri") -> Path | None:
    """The local path a file://, pvc:// or bare-path URI names (relative ones against ``base_dir``);
    None for remote URIs."""
    scheme = uri_scheme(uri)
    if scheme == "file":
        raw = unquote(uri[len("file://") :]) if uri.startswith("file://") else uri
        path = Path(raw).expanduser()
        return path if path.is_absolute() else base_dir / path
    if scheme == "pvc":
        rest = uri[len("pvc://") :]
        claim, _, inner = rest.partition("/")
        if not claim or ".." in Path(inner).parts:
            raise UserError(f"{field}: {uri}: expected pvc://CLAIM/PATH without '..'")
        return pvc_root() / claim / inner
    return None


def fetch_file(uri: str, out: Path, *, base_dir: Path, progress: Progress, field: str) -> Path:
    """A single data file (.npz): local URIs are used in place, remote ones downloaded into ``out``."""
    path = local_path(uri, base_dir, field)
    if path is not None:
        if not path.is_file():
            raise UserError(f"{field}: {uri}: no such file ({path})")
        return path
    fetched = fetch(uri, out, sha256=None, base_dir=base_dir, progress=progress, unpack_archives=False, field=field)
    if fetched.kind != "file":
        raise UserError(f"{field}: {uri}: expected a file, found a folder")
    return fetched.path


# ------------------------------------------------------------------------------------------ schemes


def _fetch_into(uri: str, staging: Path, *, base_dir: Path, progress: Progress, field: str) -> Fetched:
    scheme = uri_scheme(uri)
    path = local_path(uri, base_dir, field)
    if path is not None:
        return _copy_local(path, staging, uri=uri, field=field)
    if scheme in ("http", "https"):
        name = _file_name(urlsplit(uri).path)
        target = staging / name
        digest = http_download(uri, target, progress, field)
        return Fetched(target, digest, "file")
    if scheme == "hf":
        from modelservice.convert.hub import fetch_hub

        folder = fetch_hub(uri, staging, progress, field)
        return Fetched(folder, path_sha256(folder), "folder")
    if scheme in CLOUD_PACKAGES:
        return _fsspec_fetch(_cloud_filesystem(scheme, field), uri, staging, progress, field)
    raise UserError(f"{field}: {uri}: unsupported scheme {scheme}:// (file, pvc, http, https, s3, gs, hf)")


def _copy_local(path: Path, staging: Path, *, uri: str, field: str) -> Fetched:
    if path.is_dir():
        target = staging / "folder"
        shutil.copytree(path, target, symlinks=False)
        return Fetched(target, path_sha256(target), "folder")
    if path.is_file():
        target = staging / path.name
        shutil.copyfile(path, target)
        return Fetched(target, path_sha256(target), "file")
    raise UserError(f"{field}: {uri}: no such file or folder ({path})")


def _file_name(url_path: str) -> str:
    name = unquote(url_path.rstrip("/").rsplit("/", 1)[-1])
    name = name.replace("\\", "_")
    return name if name not in ("", ".", "..") else "download"


# --------------------------------------------------------------------------------------------- http


def check_url(url: str, field: str = "spec.model.uri") -> list[str]:
    """Refuse non-http(s) URLs and hosts that resolve to link-local or cloud metadata addresses; return the
    addresses the host resolved to (each one checked), which are the only ones the download connects to.

    The host is resolved here once: connecting to one of these addresses (not to the name, which a hostile DNS
    server could answer differently a moment later: DNS rebinding) is what makes the check hold. With
    ``MODELSERVICE_ALLOW_PRIVATE_FETCH=1`` nothing is refused, but the addresses are still resolved and pinned.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UserError(f"{field}: {url}: only http(s) URLs may be fetched (redirects included)")
    host = _ascii_host(url, field)
    try:
        port = parts.port or _default_port(parts.scheme)
    except ValueError:
        raise UserError(f"{field}: {url}: invalid port in the URL") from None
    allowed = private_fetch_allowed()
    if not allowed and host in BLOCKED_HOSTS:
        raise UserError(f"{field}: {url}: host {host} is a cloud metadata service; refused")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"{field}: {url}: cannot resolve host {host}: {exc.strerror}") from None
    addresses: list[str] = []
    for info in infos:
        raw = str(info[4][0])
        address = ipaddress.ip_address(raw.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        for candidate in (address, mapped):
            if not allowed and candidate is not None and any(candidate in net for net in BLOCKED_NETWORKS):
                raise UserError(
                    f"{field}: {url}: {host} resolves to {address}, a link-local/metadata address; refused "
                    "(set MODELSERVICE_ALLOW_PRIVATE_FETCH=1 to allow)"
                )
        if raw not in addresses:
            addresses.append(raw)
    if not addresses:
        raise UserError(f"{field}: {url}: cannot resolve host {host}: no addresses")
    return addresses


def ca_bundle() -> str:
    """The CA certificates https downloads are verified against: ``REQUESTS_CA_BUNDLE`` (a file or a folder;
    ``CURL_CA_BUNDLE`` as a fallback, as requests reads them), else certifi's bundle."""
    configured = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if configured:
        return configured
    import certifi

    return certifi.where()


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _ascii_host(url: str, field: str) -> str:
    """The URL's host name, lower-case, without a trailing dot, IDNA-encoded (for DNS, SNI and Host alike)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        raise UserError(f"{field}: {url}: URL has no host")
    try:
        return host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UserError(f"{field}: {url}: host {host} is not a valid host name") from None


def _host_header(url: str, field: str = "spec.model.uri") -> str:
    """The ``Host`` header for ``url``: the host name (IPv6 literals in brackets), with the port unless default."""
    parts = urlsplit(url)
    host = _ascii_host(url, field)
    name = f"[{host}]" if ":" in host else host
    return name if parts.port in (None, _default_port(parts.scheme)) else f"{name}:{parts.port}"


def _http_headers(url: str, original: str, bearer: str | None = None) -> dict[str, str]:
    headers = {"Host": _host_header(url), "Accept-Encoding": "identity"}
    parts = urlsplit(url)
    token = bearer or os.environ.get("MODELSERVICE_HTTP_BEARER_TOKEN")
    # The token goes only to the host the user named, never to a redirect target elsewhere.
    if token and parts.netloc == urlsplit(original).netloc:
        headers["Authorization"] = f"Bearer {token}"
    if parts.username is not None:  # user:password@ in the URL wins, as it did with requests
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return headers


def _tls_context(uri: str, field: str) -> ssl.SSLContext:
    bundle = ca_bundle()
    try:
        if os.path.isdir(bundle):
            return ssl.create_default_context(capath=bundle)
        return ssl.create_default_context(cafile=bundle)
    except OSError as exc:
        raise UserError(f"{field}: {uri}: cannot load the CA bundle {bundle}: {exc}".splitlines()[0]) from None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


@contextmanager
def _pinned_get(
    url: str, addresses: list[str], headers: dict[str, str], uri: str, field: str
) -> Iterator[BaseHTTPResponse]:
    """GET ``url`` from the first of ``addresses`` that accepts a connection (never resolving the host again).

    The URL's host name is sent as ``Host`` and, for https, as the TLS server name: the certificate is verified
    against the name (SNI + hostname check, ``ca_bundle()``), not against the address. Redirects are not
    followed here. Proxies (``HTTP(S)_PROXY``) are not used: the download connects directly to the address.
    """
    import urllib3
    from urllib3.exceptions import ConnectTimeoutError, HTTPError

    parts = urlsplit(url)
    port = parts.port or _default_port(parts.scheme)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = _tls_context(uri, field) if parts.scheme == "https" else None
    timeout = urllib3.Timeout(connect=15, read=120)
    failure: Exception | None = None
    for address in addresses:
        pool: urllib3.HTTPConnectionPool
        if context is not None:
            pool = urllib3.HTTPSConnectionPool(
                address, port, maxsize=1, ssl_context=context, server_hostname=_ascii_host(url, field)
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, maxsize=1)
        with pool:
            try:
                response = pool.urlopen(
                    "GET",
                    target,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    timeout=timeout,
                )
            except ConnectTimeoutError as exc:  # includes NewConnectionError: try the next checked address
                failure = exc
                continue
            except HTTPError as exc:
                raise UserError(f"{field}: {uri}: request failed: {_one_line(exc)}") from None
            try:
                yield response
            finally:
                response.close()
            return
    reason = _one_line(failure) if failure is not None else "no address to connect to"
    raise UserError(f"{field}: {uri}: request failed: {reason}")


def http_download(uri: str, target: Path, progress: Progress, field: str, *, bearer: str | None = None) -> str:
    """Download ``uri`` following up to MAX_REDIRECTS http(s) redirects; each hop's host is resolved and checked
    once (check_url) and the connection goes to a checked address (see _pinned_get). ``bearer`` (else
    ``MODELSERVICE_HTTP_BEARER_TOKEN``) goes only to the host of ``uri``. Returns the SHA-256."""
    from urllib3.exceptions import HTTPError

    limit = max_download_bytes()
    current = uri
    for _ in range(MAX_REDIRECTS + 1):
        addresses = check_url(current, field)
        with _pinned_get(current, addresses, _http_headers(current, uri, bearer), uri, field) as response:
            location = response.headers.get("location")
            if response.status in REDIRECT_STATUSES and location is not None:
                current = urljoin(current, location)
                continue
            if response.status != 200:
                raise UserError(f"{field}: {uri}: HTTP {response.status} {response.reason or ''}".rstrip())
            declared = response.headers.get("content-length")
            total = int(declared) if declared and declared.isdigit() else None
            if total is not None and total > limit:
                raise UserError(f"{field}: {uri}: {total} bytes exceeds the download limit of {limit} bytes")
            try:
                # decode_content=False: the bytes as served (Accept-Encoding: identity), so digests and
                # Content-Length refer to the same thing.
                return _stream_to_file(
                    response.stream(CHUNK, decode_content=False),
                    target,
                    total=total,
                    limit=limit,
                    label=uri,
                    progress=progress,
                )
            except HTTPError as exc:
                raise UserError(f"{field}: {uri}: download interrupted (truncated): {type(exc).__name__}") from None
    raise UserError(f"{field}: {uri}: more than {MAX_REDIRECTS} redirects")


def _stream_to_file(
    chunks: Iterator[bytes], target: Path, *, total: int | None, limit: int, label: str, progress: Progress
) -> str:
    """Write chunks to ``target`` through a temp file; return the SHA-256. Checks size limit and truncation."""
    digest = hashlib.sha256()
    done = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                done += len(chunk)
                if done > limit:
                    raise UserError(f"{label}: more than the download limit of {limit} bytes")
                digest.update(chunk)
                handle.write(chunk)
                progress.transfer(label, done, total)
        if total is not None and done != total:
            raise UserError(f"{label}: download truncated: got {done} of {total} bytes")
        progress.transfer(label, done, total, final=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ s3 / gs (fsspec)


def _cloud_filesystem(scheme: str, field: str) -> Any:
    package = CLOUD_PACKAGES[scheme]
    try:
        importlib.import_module(package)
    except ImportError:
        raise UserError(
            f"{field}: {scheme}:// needs the {package} package: pip install 'modelservice-operator[cloud]'"
        ) from None
    import fsspec

    return fsspec.filesystem(scheme)


def _fsspec_fetch(fs: Any, uri: str, staging: Path, progress: Progress, field: str) -> Fetched:
    """Copy a file or a folder (prefix) from an fsspec filesystem into ``staging``."""
    path = uri.split("://", 1)[1] if "://" in uri else uri
    limit = max_download_bytes()
    try:
        if fs.isdir(path):
            root = staging / "folder"
            files = [f for f in fs.find(path) if not f.endswith("/")]
            if not files:
                raise UserError(f"{field}: {uri}: the folder is empty")
            total = sum(int(fs.size(f) or 0) for f in files)
            if total > limit:
                raise UserError(f"{field}: {uri}: {total} bytes exceeds the download limit of {limit} bytes")
            prefix = path.rstrip("/") + "/"
            for remote in files:
                relative = remote[len(prefix) :] if remote.startswith(prefix) else remote.rsplit("/", 1)[-1]
                local = root / relative
                if not local.resolve().is_relative_to(root.resolve()) or ".." in Path(relative).parts:
                    raise UserError(f"{field}: {uri}: object {remote!r} escapes the target folder; refused")
                local.parent.mkdir(parents=True, exist_ok=True)
                _fsspec_copy(fs, remote, local, limit, progress)
            return Fetched(root, path_sha256(root), "folder")
        if not fs.exists(path):
            raise UserError(f"{field}: {uri}: no such object")
        target = staging / _file_name(path)
        return Fetched(target, _fsspec_copy(fs, path, target, limit, progress), "file")
    except UserError:
        raise
    except Exception as exc:  # botocore/google-auth raise many types; the user needs one line
        raise UserError(f"{field}: {uri}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def _fsspec_copy(fs: Any, remote: str, local: Path, limit: int, progress: Progress) -> str:
    size = fs.size(remote)
    total = int(size) if size is not None else None
    if total is not None and total > limit:
        raise UserError(f"{remote}: {total} bytes exceeds the download limit of {limit} bytes")
    handle: BinaryIO
    with fs.open(remote, "rb") as handle:
        chunks = iter(lambda: handle.read(CHUNK), b"")
        return _stream_to_file(chunks, local, total=total, limit=limit, label=remote, progress=progress)


# ------------------------------------------------------------------------------------------ helpers


def _single_folder(root: Path) -> Path:
    """An unpacked archive holding exactly one top-level folder stands for that folder."""
    entries = list(root.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _move_contents(source: Path, out: Path) -> Path:
    for entry in sorted(source.iterdir()):
        target = out / entry.name
        _remove(target)
        os.replace(entry, target)
    return out
