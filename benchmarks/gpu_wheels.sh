#!/usr/bin/env bash
# Fetch, into .whl/ (ignored by git), the wheels that benchmarks/gpu_check.sh
# installs on a GPU machine that has CuPy, torch, numpy and pytest but no
# PyPI: array-api-compat (needed) and array-api-strict (its tests). Both are
# pure Python; the versions are the ones installed here, else the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
for name in array-api-compat array-api-strict; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
        -d .whl "$name${version:+==$version}"
done
ls -l .whl
