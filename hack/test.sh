#!/usr/bin/env bash
# Everything CI checks, in the order it checks it: set-up, lint, types, layering, generated files, tests.
# Extra arguments go to pytest (e.g. `bash hack/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
. .venv/bin/activate
echo "== ruff";        ruff check . && ruff format --check .
echo "== mypy";        mypy
echo "== import layers"; lint-imports
echo "== generated files"; python hack/verify.py
echo "== pytest";      python -m pytest -q -p no:cacheprovider "$@"
