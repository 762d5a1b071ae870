#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the GPU tests, then the GPU benchmark grid,
# in about 8 minutes at most (each phase has its own time limit).
#
#   bash benchmarks/gpu_wheels.sh        # once, on a machine with PyPI: .whl/ for a bare GPU machine
#   bash benchmarks/gpu_check.sh         # on the GPU machine, from anywhere in the repository
#
# Phases (docs/gpu.md, "Running the GPU check"):
# 0. Wheels in .whl/ (array-api-compat, array-api-strict), if present, are
#    installed into a scratch folder: a GPU image may lack them.
# 1. The machine: GPU, driver, library versions -> gpu-env.txt. Stops here
#    if CuPy or torch sees no CUDA device.
# 2. Every CuPy and torch-CUDA test except the persistent kernel's, with
#    RNN_XP_CUPY_PATH=fused: nothing here reaches the persistent kernel's grid
#    barrier (the CuPy tests of small batches would take it on the auto path)
#    -> gpu-tests.log
# 3. The persistent kernel's tests, and the CuPy cases of the forward,
#    kernel and robustness tests with RNN_XP_CUPY_PATH=persistent (infinite
#    and NaN states, leak 1, lengths...) -> gpu-tests-persistent.log; apart,
#    so that a hang in its grid barrier cannot hide the other results.
# 4. The GPU grid (DeepBench vanilla-RNN sizes first, then the small
#    batches) against torch.nn.RNN on CUDA (cuDNN, TF32 off) -> <gpu-name>.json,
#    .png and gpu-bench.log. The JSON is rewritten after every size, so a run
#    cut short keeps what it measured ("complete": false).
#
# RNN_XP_REQUIRE_GPU=1 turns the tests' "no CUDA device" skips into failures:
# here a CuPy or torch-CUDA test that does not run is a fault, not a pass.
# The CPU-only CUDA tests (NVRTC compiles, the kernels' emulation) are left
# to CI. A phase that runs out of time is interrupted (SIGINT): pytest still
# prints its summary. Everything lands in $OUT when it is set (the device
# tool's output folder), else in benchmarks/results/. The exit status is 0
# only if both test phases and the benchmark passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false RNN_XP_REQUIRE_GPU=1

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/rnn_xp_site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/rnn_xp_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

"$PY" - <<'PYEOF' 2>&1 | tee "$DEST/gpu-env.txt"
import platform, subprocess, sys
import numpy, array_api_compat, cupy, torch
print("python", platform.python_version(), "numpy", numpy.__version__, "array_api_compat",
      array_api_compat.__version__, "cupy", cupy.__version__, "torch", torch.__version__)
assert cupy.cuda.is_available(), "cupy finds no CUDA device"
assert torch.cuda.is_available(), "torch finds no CUDA device"
print("GPU:", torch.cuda.get_device_name(0), "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
      "| driver", cupy.cuda.runtime.driverGetVersion(), "| cuDNN", torch.backends.cudnn.version())
try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip())
except Exception as exc:  # nvidia-smi is a nicety
    print("nvidia-smi:", exc)
PYEOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

phase() {  # phase SECONDS LOG COMMAND...: run with a time limit, output to the log too
    local limit=$1 log=$2
    shift 2
    echo "=== $* (limit ${limit}s)"
    timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee "$DEST/$log"
    return "${PIPESTATUS[0]}"
}

CPU_ONLY="--ignore=tests/kernels/test_kernel_cupy_compile.py --ignore=tests/kernels/test_kernel_cupy_emulated.py"
phase 150 gpu-tests.log env RNN_XP_CUPY_PATH=fused "$PY" -m pytest -q -p no:cacheprovider tests \
    -k "cupy or cuda" --ignore=tests/kernels/test_kernel_cupy_persistent.py $CPU_ONLY -rfEs --durations=10
tests_rc=$?
phase 120 gpu-tests-persistent.log env RNN_XP_CUPY_PATH=persistent "$PY" -m pytest -q -p no:cacheprovider \
    tests/kernels/test_kernel_cupy_persistent.py tests/test_robustness.py tests/kernels/test_kernels.py tests/test_forward.py \
    -k "persistent or cupy" -rfEs --durations=10
persistent_rc=$?
phase 200 gpu-bench.log "$PY" -m rnn_xp bench --gpu --out "$DEST" "$@"
bench_rc=$?

echo "=== exit codes: tests $tests_rc, persistent-kernel tests $persistent_rc, bench $bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$persistent_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
