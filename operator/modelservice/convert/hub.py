"""``hf://ORG/NAME[@REVISION]``: a model repository on the Hugging Face Hub (or a Hub-compatible server named by
``HF_ENDPOINT``), fetched at conversion time, never at serving time.

1. The listing comes from the Hub API through ``huggingface_hub`` (``HfApi.model_info`` with file metadata):
   the commit the revision points to, and each file's size and digest (sha256 for LFS files, the git blob id
   for the others). The token is ``HF_TOKEN`` (a key of the Secret named in ``spec.model.credentials``).
2. Only the files a conversion needs are taken: configs, tokenizer files, safetensors weights (and their
   index); ``pytorch_model.bin`` only where no safetensors exist (it is then loaded with ``weights_only``);
   other frameworks' weights (TensorFlow, Flax, ONNX exports), READMEs and images are skipped.
3. Every file is downloaded from ``/<repo>/resolve/<commit>/<path>`` (the commit, so a moving branch cannot
   change between two files) by the same downloader as http(s) URIs: each redirect hop is checked and pinned,
   the size limit holds, the bearer token goes only to the endpoint's host; then its size and digest must
   equal the listing's. Paths that would leave the folder are refused.
The fetched folder's digest is the listing digest of a folder (``spec.model.sha256`` pins it).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from modelservice.api.errors import UserError
from modelservice.convert.digest import CHUNK
from modelservice.convert.progress import Progress

HF_URI = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<revision>[\w./-]+))?/?$")
DEFAULT_ENDPOINT = "https://huggingface.co"
WANTED_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
SKIPPED_PARTS = ("onnx/", "openvino/", "coreml/", "tf_", "flax_", "rust_")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def parse(uri: str, field: str) -> tuple[str, str]:
    match = HF_URI.match(uri)
    if match is None:
        raise UserError(f"{field}: {uri}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    return match["repo"], match["revision"] or "main"


def wanted(files: list[str]) -> list[str]:
    """The files of a repository a conversion needs (see module docs)."""
    has_safetensors = any(f.endswith(".safetensors") for f in files)
    chosen = []
    for name in files:
        if any(part in name for part in SKIPPED_PARTS) or "/." in f"/{name}":
            continue
        if name.endswith(WANTED_SUFFIXES) or (name == "pytorch_model.bin" and not has_safetensors):
            chosen.append(name)
    return sorted(chosen)


def _listing(repo: str, revision: str, token: str | None, field: str, uri: str) -> tuple[str, list[Any]]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi(endpoint=endpoint(), token=token or False).model_info(
            repo, revision=revision, files_metadata=True, timeout=60
        )
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"{field}: {uri}: the Hub refused the listing: {first}") from None
    except Exception as exc:
        raise UserError(f"{field}: {uri}: cannot list the repository: {type(exc).__name__}: {exc}") from None
    if not info.sha or not re.fullmatch(r"[0-9a-f]{40}", info.sha):
        raise UserError(f"{field}: {uri}: the Hub gave no commit for revision {revision}")
    return info.sha, list(info.siblings or [])


def _git_blob_id(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_hub(uri: str, staging: Path, progress: Progress, field: str) -> Path:
    """Download the repository's needed files into ``staging/<NAME>/``; return that folder."""
    from modelservice.convert.fetch import http_download

    repo, revision = parse(uri, field)
    token = os.environ.get("HF_TOKEN") or None
    commit, siblings = _listing(repo, revision, token, field, uri)
    by_name = {s.rfilename: s for s in siblings}
    for name in by_name:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or "\\" in name:
            raise UserError(f"{field}: {uri}: file {name!r} would leave the model folder; refused")
    names = wanted(list(by_name))
    if "config.json" not in names:
        raise UserError(f"{field}: {uri}: the repository has no config.json at {commit[:12]}")
    folder = staging / repo.split("/")[1]
    progress.step("fetch", f"{repo} at {commit[:12]}: {len(names)} of {len(by_name)} files")
    for name in names:
        target = folder.joinpath(*PurePosixPath(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        url = f"{endpoint()}/{repo}/resolve/{commit}/{quote(name)}"
        sha256 = http_download(url, target, progress, field, bearer=token)
        _check(by_name[name], target, sha256, f"{field}: {uri}: {name}")
    return folder


def _check(sibling: Any, path: Path, sha256: str, where: str) -> None:
    size = path.stat().st_size
    lfs = getattr(sibling, "lfs", None)
    expected_size = lfs.size if lfs is not None else sibling.size
    if expected_size is not None and size != expected_size:
        raise UserError(f"{where}: size {size} differs from the listing's {expected_size}; refused")
    if lfs is not None:
        if sha256 != lfs.sha256:
            raise UserError(f"{where}: sha256 mismatch: the listing says {lfs.sha256}, got {sha256}; refused")
    elif sibling.blob_id and _git_blob_id(path) != sibling.blob_id:
        raise UserError(f"{where}: git blob id mismatch with the listing ({sibling.blob_id}); refused")
    elif not sibling.blob_id:
        raise UserError(f"{where}: the listing gives no digest for this file; refused")
