#!/usr/bin/env bash
# Create .venv and install the project with every extra. Safe to re-run: when pyproject.toml is unchanged
# since the last successful install, it does nothing (delete .venv/.setup-stamp to force a reinstall).
# torch is pinned to the 2.13.0 CPU wheel FIRST: any other torch request pulls several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
# pip warns about every absent local index folder on these machines; drop those lines, keep pip's exit status.
quiet() { grep -v '^WARNING: Location' || true; }
stamp=.venv/.setup-stamp
want=$(sha256sum pyproject.toml hack/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is current"
  exit 0
fi
python -m pip install -q --upgrade pip 2>&1 | quiet
python -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null \
  || python -m pip install -q torch==2.13.0 2>&1 | quiet
python -m pip install -q -e '.[all]' 2>&1 | quiet
echo "$want" > "$stamp"
echo "setup: $(python -c 'import torch, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)')"
