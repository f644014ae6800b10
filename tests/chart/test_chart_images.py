"""The Dockerfiles (no Docker engine here): what they install equals what CI installs and tests.

- operator image: the package's base dependencies only (`pip install .`); the operator's modules import without
  torch, ONNX, ONNX Runtime, numpy or tritonclient (checked by importing them with those blocked);
- converter image: torch==<the pin of hack/setup.sh> then `.[convert,cloud]`, extras that exist in pyproject.toml;
- all: multi-stage where they build, pinned base images, numeric non-root USER.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from chartlib import REPO

DOCKER = REPO / "docker"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript", "tritonclient", "numpy", "safetensors", "pytriton")


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _args(path: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for kw, rest in _instructions(path) if kw == "ARG" and "=" in rest)


def _pip_targets(path: Path) -> list[str]:
    targets = []
    for keyword, rest in _instructions(path):
        if keyword == "RUN":
            for match in re.finditer(r"pip install (?:--constraint \S+ )?(\"[^\"]+\"|'[^']+'|\S+)", rest):
                targets.append(match.group(1).strip("\"'"))
    return targets


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.converter", "Dockerfile.converter-gpu"])
def test_pinned_base_and_non_root_user(name: str) -> None:
    path = DOCKER / name
    args = _args(path)
    froms = [rest.split(" AS ")[0] for kw, rest in _instructions(path) if kw == "FROM"]
    for image in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.search(r":[0-9][\w.-]*(@sha256:[0-9a-f]{64})?$", resolved), f"{name}: unpinned base {resolved}"
        assert ":latest" not in resolved
    users = [rest for kw, rest in _instructions(path) if kw == "USER"]
    assert users, f"{name}: no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), f"{name}: must end as a numeric non-root user"


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.converter"])
def test_multi_stage(name: str) -> None:
    froms = [rest for kw, rest in _instructions(DOCKER / name) if kw == "FROM"]
    assert len(froms) >= 2 and " AS build" in froms[0]
    assert any(kw == "COPY" and rest.startswith("--from=build") for kw, rest in _instructions(DOCKER / name))


def test_operator_image_installs_the_base_dependencies_only() -> None:
    assert _pip_targets(DOCKER / "Dockerfile.operator") == ["pip==24.3.1", "."]
    base = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    for heavy in HEAVY:
        assert not re.search(rf"\b{heavy}\b", base), f"{heavy} is a base dependency: the operator image would carry it"


def test_converter_image_installs_ci_tested_extras_and_the_torch_pin() -> None:
    targets = _pip_targets(DOCKER / "Dockerfile.converter")
    torch_pin = re.search(r"torch==([\d.]+)", (REPO / "hack" / "setup.sh").read_text())
    assert torch_pin is not None
    assert _args(DOCKER / "Dockerfile.converter")["TORCH_VERSION"] == torch_pin.group(1)
    assert targets == ["pip==24.3.1", "torch==${TORCH_VERSION}", ".[convert,cloud]"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"convert", "cloud"} <= set(extras)
    # CI installs `.[all]`, which includes `convert`: the converter image's code path is the one CI tests.
    assert "convert" in " ".join(extras["all"])
    assert _pip_targets(DOCKER / "Dockerfile.converter-gpu") == [".[convert,cloud]"]


def test_operator_modules_import_without_heavy_packages() -> None:
    """What the operator image runs (cli, api, render, controller, metrics) imports with only base dependencies."""
    code = f"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {HEAVY!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the operator image")
        return None
sys.meta_path.insert(0, Block())
import modelservice
names = ["modelservice.cli"]
for pkg in ("api", "render", "controller"):
    module = importlib.import_module(f"modelservice.{{pkg}}")
    names += [m.name for m in pkgutil.walk_packages(module.__path__, f"modelservice.{{pkg}}.")]
if importlib.util.find_spec("modelservice.metrics"):
    names.append("modelservice.metrics")
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) >= 5


def test_dockerignore_sends_only_the_package() -> None:
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*" and {"!pyproject.toml", "!README.md", "!operator/"} <= set(lines)
    copied = {
        rest.split()[0]
        for name in ("Dockerfile.operator", "Dockerfile.converter")
        for kw, rest in _instructions(DOCKER / name)
        if kw == "COPY" and not rest.startswith("--from")
    }
    assert copied == {"pyproject.toml", "operator"}
