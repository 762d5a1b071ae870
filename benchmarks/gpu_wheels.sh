#!/usr/bin/env bash
# Fetch, into .whl/ (ignored by git), the wheels that benchmarks/gpu_check.sh
# installs on a GPU machine that has CuPy, torch, numpy and pytest but no
# network: array-api-compat (needed), array-api-strict (its tests) and
# pytest-timeout (a hung test is stopped with its name and stack). All three
# are pure Python; the versions are the ones installed here, else the newest.
# Carry .whl/ to the GPU machine with the checkout (the device tool: carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(array-api-compat array-api-strict pytest-timeout)
mkdir -p .whl
for name in "${WHEELS[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
        -d .whl "$name${version:+==$version}"
done
ls -l .whl
