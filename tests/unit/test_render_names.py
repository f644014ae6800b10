"""Conversion hash, deterministic names, labels and owner references."""

from __future__ import annotations

import re

import pytest
from _render_samples import SAMPLES, UID, modified, sample

from modelservice.api.models import MAX_NAME_LENGTH, ModelService
from modelservice.render.names import (
    HASH_LENGTH,
    common_labels,
    conversion_hash,
    is_owned_by,
    job_name,
    metadata,
    needs_conversion,
    owner_reference,
    parse_pvc_uri,
    pvc_name,
    selector_labels,
    selector_string,
    source_claims,
)


class TestConversionHash:
    def test_shape_and_determinism(self) -> None:
        ms = sample("cpu")
        value = conversion_hash(ms)
        assert re.fullmatch(rf"[0-9a-f]{{{HASH_LENGTH}}}", value)
        assert conversion_hash(sample("cpu")) == value

    def test_samples_differ(self) -> None:
        hashes = {conversion_hash(sample(name)) for name in SAMPLES}
        assert len(hashes) == len(SAMPLES)

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            ("model.uri", "s3://models/digits/v4/"),
            ("model.sha256", "b" * 64),
            ("model.weights", "other.safetensors"),
            ("model.inputs", [{"name": "image", "dtype": "FP32", "shape": [1, 8, 9]}]),
            ("conversion.precision", "fp16"),
            ("conversion.opset", 17),
            ("conversion.verification.tolerance", 0.5),
            ("serving.maxBatchSize", 16),
            ("serving.dynamicBatching.maxQueueDelayMicroseconds", 500),
            ("serving.instances", 2),
            ("serving.resources.gpu", 1),
        ],
    )
    def test_changes_with_conversion_inputs(self, path: str, value: object) -> None:
        ms = sample("cpu")
        assert conversion_hash(modified(ms, path, value)) != conversion_hash(ms)

    def test_dynamic_batching_off_changes_hash(self) -> None:
        ms = sample("cpu")
        assert conversion_hash(modified(ms, "serving.dynamicBatching", None)) != conversion_hash(ms)

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            ("serving.replicas", 5),
            ("serving.image", "nvcr.io/nvidia/tritonserver:25.02-py3"),
            ("serving.resources.requests", {"cpu": "2", "memory": "4Gi"}),
            ("serving.resources.limits", {"memory": "8Gi"}),
            ("serving.nodeSelector", {"pool": "inference"}),
            ("autoscaling.maxReplicas", 20),
            ("exposure.service.type", "NodePort"),
            ("storage.pvc.size", "100Gi"),
            ("model.credentials", {"secretName": "other-creds"}),
        ],
    )
    def test_unchanged_by_serving_only_fields(self, path: str, value: object) -> None:
        ms = sample("cpu")
        assert conversion_hash(modified(ms, path, value)) == conversion_hash(ms)

    def test_default_values_spelled_out_do_not_change_it(self) -> None:
        ms = sample("cpu")
        assert conversion_hash(modified(ms, "conversion.opset", 18)) == conversion_hash(ms)


class TestNames:
    def test_job_name_carries_hash(self) -> None:
        ms = sample("cpu")
        assert job_name(ms) == f"digits-convert-{conversion_hash(ms)}"
        assert job_name(ms, "0123456789") == "digits-convert-0123456789"

    def test_longest_name_fits_a_label(self) -> None:
        body = SAMPLES["cpu"]()
        body["metadata"]["name"] = "a" * MAX_NAME_LENGTH
        ms = ModelService.from_body(body)
        assert len(job_name(ms)) <= 63

    def test_pvc_name(self) -> None:
        assert pvc_name(sample("cpu")) == "digits-models"
        assert pvc_name(sample("gpu")) == "model-repo"

    def test_needs_conversion(self) -> None:
        assert needs_conversion(sample("cpu"))
        assert needs_conversion(sample("onnx-none"))
        assert not needs_conversion(sample("repo-pvc"))
        assert not needs_conversion(sample("repo-s3"))

    def test_pvc_uris(self) -> None:
        assert parse_pvc_uri("pvc://claim/a/b/") == ("claim", "a/b")
        assert parse_pvc_uri("pvc://claim") == ("claim", "")
        with pytest.raises(ValueError, match="not a pvc"):
            parse_pvc_uri("s3://x/y")
        assert source_claims(sample("cpu")) == ["datasets"]
        assert source_claims(sample("gpu")) == ["model-repo"]
        assert source_claims(sample("repo-s3")) == []


class TestLabelsAndOwners:
    def test_common_labels(self) -> None:
        labels = common_labels(sample("cpu"), "server")
        assert labels["app.kubernetes.io/instance"] == "digits"
        assert labels["app.kubernetes.io/managed-by"] == "modelservice-operator"
        assert {"app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/component"} <= set(labels)

    def test_selector_is_subset_of_common_labels(self) -> None:
        ms = sample("cpu")
        assert selector_labels(ms).items() <= common_labels(ms, "server").items()
        assert not selector_labels(ms).items() <= common_labels(ms, "converter").items()
        assert selector_string(ms) == (
            "app.kubernetes.io/component=server,app.kubernetes.io/instance=digits,app.kubernetes.io/name=modelservice"
        )

    def test_owner_reference(self) -> None:
        ref = owner_reference(sample("cpu"))
        assert ref == {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "name": "digits",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        meta = metadata(sample("cpu"), "x", "server")
        assert meta["ownerReferences"] == [ref]
        assert is_owned_by({"metadata": meta}, sample("cpu"))
        assert not is_owned_by({"metadata": {"name": "x"}}, sample("cpu"))

    def test_no_uid_no_owner(self) -> None:
        body = SAMPLES["cpu"]()
        del body["metadata"]["uid"]
        ms = ModelService.from_body(body)
        assert owner_reference(ms) is None
        assert "ownerReferences" not in metadata(ms, "x", "server")
