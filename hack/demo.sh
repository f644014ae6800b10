#!/usr/bin/env bash
# The main job, locally and without a cluster: train-free, it converts the bundled digits sample
# (examples/digits: a PyTorch state dict + architecture) to ONNX, verifies it against the original on the
# digits test split, and serves it on a real Triton (the tritonserver binary of the nvidia-pytriton wheel).
# Ctrl-C stops Triton. In another terminal: .venv/bin/modelservice infer -m digits --data examples/digits/digits-test.npz
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
exec .venv/bin/modelservice serve -f examples/digits/modelservice.yaml "$@"
