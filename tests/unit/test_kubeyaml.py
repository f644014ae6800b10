"""YAML as kubectl reads it (sigs.k8s.io/yaml: go-yaml v2's resolution, then JSON), and written so that kubectl and
PyYAML read it back alike. The expected values follow go-yaml v2's resolve.go and Go's strconv/encoding/json."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelservice.api import kubeyaml

ROOT = Path(__file__).resolve().parents[2]

SCALARS: list[tuple[str, Any]] = [
    # booleans: exactly go-yaml v2's table (PyYAML's safe_load misses y/Y/n/N)
    *[(text, True) for text in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")],
    *[(text, False) for text in ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")],
    # ... and nothing else
    *[(text, text) for text in ("yES", "nO", "tRUE", "oN", "yep", "nope", "t", "f", "Yes!")],
    # nulls
    *[(text, None) for text in ("~", "null", "Null", "NULL", "")],
    ("nULL", "nULL"),
    # integers as strconv.ParseInt(s, 0, 64) reads them, "_" removed first
    ("0", 0),
    ("-0", 0),
    ("+12", 12),
    ("1_000", 1000),
    ("017", 15),
    ("0o17", 15),
    ("0x1F", 31),
    ("-0x10", -16),
    ("0b101", 5),
    ("9223372036854775807", 2**63 - 1),
    ("18446744073709551615", 2**64 - 1),
    # floats by go-yaml's pattern; whole ones become JSON integers
    ("08", 8),
    ("1e3", 1000),
    ("1.0", 1),
    ("-2.0e2", -200),
    ("1.5", 1.5),
    (".5", 0.5),
    ("+.5", 0.5),
    ("1.", 1),
    ("1e-7", 1e-7),
    ("1e21", 1e21),
    # strings: what go-yaml v2 leaves alone (PyYAML would read the first four as int, float, date and datetime)
    ("1:30", "1:30"),
    ("190:20:30.15", "190:20:30.15"),
    ("2024-01-01", "2024-01-01"),
    ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
    ("1e999", "1e999"),
    ("0x", "0x"),
    ("0b2", "0b2"),
    ("._5", "._5"),
    ("nan", "nan"),
    ("inf", "inf"),
    ("1.2.3", "1.2.3"),
    ("s3://m/x", "s3://m/x"),
    # quoted scalars are strings, whatever they say
    ("'n'", "n"),
    ('"yes"', "yes"),
    ("'1e3'", "1e3"),
    ("'~'", "~"),
]


@pytest.mark.parametrize(("text", "expected"), SCALARS, ids=[repr(t) for t, _ in SCALARS])
def test_plain_scalars_resolve_as_in_kubectl(text: str, expected: Any) -> None:
    value = kubeyaml.load(f"v: {text}\n")["v"]
    assert value == expected
    assert type(value) is type(expected)


def test_n_is_a_boolean_where_pyyaml_says_string() -> None:
    text = "outputs: [{name: n, shape: [1]}, {name: 'n', shape: [1]}]\n"
    assert yaml.safe_load(text)["outputs"][0]["name"] == "n"
    (document,) = kubeyaml.load_all(text)
    assert document.value["outputs"][0]["name"] is False
    assert document.value["outputs"][1]["name"] == "n"
    assert document.source_text(["outputs", 0, "name"]) == "n"
    assert document.source_text(["outputs", 1, "name"]) is None  # quoted: a string, nothing to explain


def test_source_texts_of_non_string_scalars() -> None:
    (document,) = kubeyaml.load_all("a: [Off, 0o17, 1e3, ~, 1.5]\nb: text\n")
    assert document.scalars == {("a", 0): "Off", ("a", 1): "0o17", ("a", 2): "1e3", ("a", 3): "~", ("a", 4): "1.5"}


def test_mapping_keys_become_strings_as_in_json() -> None:
    assert kubeyaml.load("{yes: a, off: b, 2: c, 0x10: d, 1.0: e}") == {
        "true": "a",
        "false": "b",
        "2": "c",
        "16": "d",
        "1": "e",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v: .inf", "not a JSON number"),
        ("v: -.Inf", "not a JSON number"),
        ("v: .NaN", "not a JSON number"),
        ("{1.5: a}", "mapping key '1.5' is not a string"),
        ("{~: a}", "mapping key '~' is not a string"),
        ("{[a]: b}", "a mapping key must be a scalar"),
        ("v: !!int abc", "cannot read 'abc' as an integer"),
        ("v: !!bool maybe", "cannot read 'maybe' as a boolean"),
        ("a: &a [*a]", "an alias refers to a collection that contains it"),
        ("v: [unclosed", "expected ',' or ']'"),
    ],
)
def test_what_kubectl_refuses(text: str, message: str) -> None:
    with pytest.raises(yaml.YAMLError, match=message.replace("[", r"\[").replace("]", r"\]")):
        kubeyaml.load_all(text)


def test_tags_merges_and_documents() -> None:
    text = "base: &b {p: 1, q: 2}\nm: {<<: *b, q: 3}\nbin: !!binary aGVsbG8=\ncustom: !thing 5\nstr: !!str 5\n"
    assert kubeyaml.load(text) == {
        "base": {"p": 1, "q": 2},
        "m": {"p": 1, "q": 3},
        "bin": "hello",
        "custom": "5",
        "str": "5",
    }
    documents = kubeyaml.load_all("---\na: 1\n---\n---\n# only a comment\n---\nb: y\n")
    assert [d.value for d in documents] == [{"a": 1}, {"b": True}]


def test_float_of_the_int_tag_and_int_of_the_float_tag() -> None:
    assert kubeyaml.load("v: !!float 5") == {"v": 5}  # JSON has one number type: 5.0 is written 5
    assert kubeyaml.load("v: !!float 5.5") == {"v": 5.5}


STRINGS = ["n", "Y", "yes", "off", "~", "", "null", "0o17", "017", "08", "1e3", "1_0", "1:30", "2024-01-01", "<<", ".5"]


@pytest.mark.parametrize("value", STRINGS)
def test_dump_quotes_what_either_reader_would_not_read_as_a_string(value: str) -> None:
    text = kubeyaml.dump({"v": value, "l": [value]})
    assert kubeyaml.load(text) == {"v": value, "l": [value]}
    assert yaml.safe_load(text) == {"v": value, "l": [value]}


def test_y_as_a_key_is_true_in_kubectl() -> None:
    assert kubeyaml.load("{y: 1, n: 2}") == {"true": 1, "false": 2}
    assert kubeyaml.load(kubeyaml.dump({"y": 1, "n": 2})) == {"y": 1, "n": 2}


def test_dump_is_safe_dump_elsewhere_without_anchors() -> None:
    data = {"a": "text", "b": [1, 2.5, True, None], "c": {"d": "s3://x/y", "e": 1e-7}}
    assert kubeyaml.dump(data, sort_keys=False) == yaml.safe_dump(data, sort_keys=False)
    assert math.isclose(kubeyaml.load(kubeyaml.dump(data))["c"]["e"], 1e-7)
    shared = ["x"]
    assert kubeyaml.dump({"a": shared, "b": shared}) == "a:\n- x\nb:\n- x\n"


def test_repository_yaml_reads_the_same_in_kubectl_and_pyyaml() -> None:
    """Samples, manifests, CRDs, chart values: kubectl (and Helm, with sigs.k8s.io/yaml) read what PyYAML reads."""
    listed = subprocess.run(
        ["git", "ls-files", "*.yaml", "*.yml"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [ROOT / name for name in listed if "/templates/" not in name and not name.startswith("tests/data/")]
    assert any(path.parent.name == "samples" for path in files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        pyyaml = [document for document in yaml.safe_load_all(text) if document is not None]
        assert [document.value for document in kubeyaml.load_all(text)] == pyyaml, path


def test_what_the_operator_writes_reads_back_in_kubectl_and_in_convert() -> None:
    """The conversion Job's ModelService file (``modelservice convert -f`` reads it with this loader) and
    ``modelservice render``'s stream (users pipe it to kubectl) quote strings kubectl would read otherwise."""
    from modelservice.api.loader import parse
    from modelservice.render import render_stream
    from modelservice.render.configmap import SPEC_FILE, build_configmap

    ms = parse(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "n", "namespace": "y"},
            "spec": {
                "model": {
                    "uri": "s3://m/x.onnx",
                    "format": "onnx",
                    "sha256": "1234567e" + "0" * 56,  # digits and one "e": a float to go-yaml
                    "outputs": [{"name": "n", "shape": [10]}, {"name": "Off", "shape": [1]}],
                },
                "serving": {"nodeSelector": {"pool": "yes", "zone": "1e3"}},
            },
        },
        "ms.yaml",
    )
    written = build_configmap(ms)["data"][SPEC_FILE]
    assert parse(kubeyaml.load(written), "modelservice.yaml").spec == ms.spec
    stream = render_stream([ms])
    assert [d.value for d in kubeyaml.load_all(stream)] == [d for d in yaml.safe_load_all(stream) if d is not None]
