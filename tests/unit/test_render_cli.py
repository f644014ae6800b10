"""``modelservice render -f FILE`` prints a YAML stream of every child, valid and parseable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from _render_samples import SAMPLES

from _k8s import validate_strict
from modelservice import cli


def _write(tmp_path: Path, *bodies: dict[str, Any], drop_namespace: bool = False) -> Path:
    documents = []
    for body in bodies:
        body["metadata"].pop("uid", None)  # a file has no uid
        if drop_namespace:
            body["metadata"].pop("namespace", None)
        documents.append(body)
    path = tmp_path / "modelservice.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def test_render_via_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, SAMPLES["cpu"](), SAMPLES["repo-s3"]())
    assert cli.main(["render", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    objs = [doc for doc in yaml.safe_load_all(out) if doc is not None]
    kinds = [(obj["kind"], obj["metadata"]["name"]) for obj in objs]
    assert ("Job", objs[2]["metadata"]["name"]) in kinds and objs[2]["metadata"]["name"].startswith("digits-convert-")
    assert ("Deployment", "digits") in kinds and ("Deployment", "repo-s3") in kinds
    assert ("HorizontalPodAutoscaler", "digits") in kinds
    for obj in objs:
        assert "ownerReferences" not in obj["metadata"]
        validate_strict(obj)


def test_render_namespace_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, SAMPLES["repo-pvc"](), drop_namespace=True)
    assert cli.main(["render", "-f", str(path), "--namespace", "team-a"]) == 0
    objs = [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]
    assert {obj["metadata"]["namespace"] for obj in objs} == {"team-a"}


def test_render_local_uri_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = SAMPLES["onnx-none"]()
    body["spec"]["model"]["uri"] = "model.onnx"
    path = _write(tmp_path, body)
    assert cli.main(["render", "-f", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().count("\n") == 0 and "spec.model.uri" in captured.err


def test_render_subprocess(tmp_path: Path) -> None:
    path = _write(tmp_path, SAMPLES["gpu"]())
    result = subprocess.run(
        [sys.executable, "-m", "modelservice.cli", "render", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert [obj["kind"] for obj in objs] == [
        "PersistentVolumeClaim",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HTTPRoute",
    ]


def test_pod_commands_parse_with_the_cli() -> None:
    """The Job's ``modelservice convert`` and the init container's ``modelservice fetch`` are real CLI calls."""
    from _render_samples import sample

    from modelservice.render import build_deployment, build_job, conversion_hash

    parser = cli.build_parser()
    (convert,) = build_job(sample("cpu"))["spec"]["template"]["spec"]["containers"]
    assert convert["command"][0] == "modelservice"
    args = parser.parse_args(convert["command"][1:])
    assert args.func is cli._cmd_convert
    assert (args.file, args.out, args.summary_file) == (
        "/etc/modelservice/modelservice.yaml",
        f"/models/{conversion_hash(sample('cpu'))}",
        "/dev/termination-log",
    )
    repo = sample("repo-s3")
    (fetch,) = build_deployment(repo, conversion_hash(repo))["spec"]["template"]["spec"]["initContainers"]
    args = parser.parse_args(fetch["command"][1:])
    assert args.func is cli._cmd_fetch
    assert (args.uri, args.out, args.sha256) == ("s3://models/digits-repo.tar.gz", "/models/repository", "a" * 64)
