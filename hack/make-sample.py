#!/usr/bin/env python3
"""Regenerate the bundled sample in examples/digits/ (deterministic: seeded, single-threaded training).

    .venv/bin/python hack/make-sample.py

Writes weights.safetensors (DigitsCNN trained on scikit-learn's digits), digits-test.npz (the labelled test
split: x [N, 1, 8, 8] float32, y int64), digits-calib.npz (256 training images for static int8 calibration)
and modelservice.yaml. model.py is hand-written; the training recipe lives in tests/lib/_digits.py so tests and
sample agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))

import _digits  # noqa: E402

SAMPLE = REPO / "examples" / "digits"

YAML = """\
# The bundled sample: a PyTorch state dict (safetensors) plus its architecture, converted to ONNX,
# verified against the original on the digits test split, and served by Triton.
#   modelservice convert -f examples/digits/modelservice.yaml --out /tmp/repo
#   modelservice serve -f examples/digits/modelservice.yaml
# Regenerate the weights and data with: .venv/bin/python hack/make-sample.py
apiVersion: modelservice.dev/v1alpha1
kind: ModelService
metadata:
  name: digits
spec:
  model:
    uri: .                              # this folder (relative URIs resolve against the YAML file's folder)
    format: pytorch
    architecture: model.py:DigitsCNN
    weights: weights.safetensors
    inputs: [{name: image, dtype: FP32, shape: [1, 8, 8]}]
    outputs: [{name: logits, dtype: FP32, shape: [10]}]
  conversion:
    target: onnx
    precision: auto                     # fp32, fp16, int8 dynamic and static are built, verified and timed
    quantization:
      method: static
      calibration: {uri: digits-calib.npz, samples: 256}
    verification: {tolerance: 0.01, accuracyBudget: 0.01, dataUri: digits-test.npz}
    opset: 18
  serving:
    maxBatchSize: 32
    dynamicBatching: {maxQueueDelayMicroseconds: 100, preferredBatchSizes: [8, 16]}
    instances: 1
"""


def main() -> int:
    from safetensors.torch import save_file

    model = _digits.train("cnn")
    save_file(_digits.state_dict(model), str(SAMPLE / "weights.safetensors"))
    _digits.write_test_npz(SAMPLE / "digits-test.npz")
    _digits.write_calibration_npz(SAMPLE / "digits-calib.npz", samples=256)
    (SAMPLE / "modelservice.yaml").write_text(YAML, encoding="utf-8")
    print(f"DigitsCNN test accuracy {_digits.accuracy(model):.4f}; wrote {SAMPLE.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
