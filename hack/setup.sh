#!/usr/bin/env bash
# Create .venv and install the project with every extra. Safe to re-run.
# torch is pinned to the 2.13.0 CPU wheel FIRST: any other torch request pulls several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null \
  || python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[all]'
echo "setup: $(python -c 'import torch, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)')"
