#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the GPU tests, then the GPU benchmark grid,
# within about 9 minutes in all (each phase has its own time limit, and none
# runs past the whole check's budget, RNN_XP_GPU_CHECK_S, 540 s by default).
#
#   bash benchmarks/gpu_wheels.sh        # once, where PyPI is reachable: .whl/ to carry to a bare GPU machine
#   bash benchmarks/gpu_check.sh         # on the GPU machine, from anywhere in the repository
#   DRY_RUN=1 bash benchmarks/gpu_check.sh   # print each phase's command and limit, run nothing
#
# Phases (docs/gpu.md, "Running the GPU check"):
# 0. Wheels in .whl/ (array-api-compat, array-api-strict, pytest-timeout), if
#    present, are installed into a scratch folder: a GPU image without
#    network may lack them.
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
#    .png and gpu-bench.log. Every size is timed first without the rows that
#    may run the persistent kernel, then those rows (with cuDNN again) last;
#    the JSON is rewritten after every size, so a run cut short keeps what
#    it measured ("complete": false).
#
# pytest runs with -vv, so each test's name is in the log before it runs, and
# with pytest-timeout (thread method, TEST_TIMEOUT_S per test) when it is
# installed: a test that hangs (the persistent kernel's grid barrier) is
# stopped with its name and every thread's stack, not killed without a word.
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
BUDGET_S=${RNN_XP_GPU_CHECK_S:-540}
TEST_TIMEOUT_S=90
DRY_RUN=${DRY_RUN:-0}
START_S=$SECONDS
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false RNN_XP_REQUIRE_GPU=1

if compgen -G ".whl/*.whl" >/dev/null && [ "$DRY_RUN" = 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/rnn_xp_site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/rnn_xp_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [ "$DRY_RUN" = 0 ]; then
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
fi

# pytest-timeout, if installed (gpu_wheels.sh carries it): pytest loads it by its entry point
PYTEST_ARGS=(-vv -p no:cacheprovider -rfEs --durations=10)
if "$PY" -c "import importlib.metadata as m, sys; sys.exit(not any(e.value.split(':')[0] == 'pytest_timeout'
              for e in m.entry_points(group='pytest11')))" 2>/dev/null; then
    [ -n "${PYTEST_DISABLE_PLUGIN_AUTOLOAD:-}" ] && PYTEST_ARGS+=(-p pytest_timeout)
    PYTEST_ARGS+=(--timeout="$TEST_TIMEOUT_S" --timeout-method=thread)
else
    echo "pytest-timeout is not installed (bash benchmarks/gpu_wheels.sh): a hung test is stopped by its phase's limit"
fi

test_file() {  # test_file NAME: the test file of that name under tests/ (names are unique there)
    find tests -name "$1" -print -quit
}

phase() {  # phase SECONDS LOG COMMAND...: run with a time limit (within the budget), output to the log too
    local limit=$1 log=$2 left
    shift 2
    left=$((BUDGET_S - (SECONDS - START_S) - 20))  # 20 s: SIGKILL's grace after SIGINT
    [ "$left" -lt "$limit" ] && limit=$((left > 10 ? left : 10))
    echo "=== $* (limit ${limit}s)"
    [ "$DRY_RUN" = 0 ] || return 0
    timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee "$DEST/$log"
    return "${PIPESTATUS[0]}"
}

PERSISTENT=$(test_file test_kernel_cupy_persistent.py)
CPU_ONLY=(--ignore="$(test_file test_kernel_cupy_compile.py)" --ignore="$(test_file test_kernel_cupy_emulated.py)")
phase 230 gpu-tests.log env RNN_XP_CUPY_PATH=fused "$PY" -m pytest "${PYTEST_ARGS[@]}" tests \
    -k "cupy or cuda" --ignore="$PERSISTENT" "${CPU_ONLY[@]}"
tests_rc=$?
phase 100 gpu-tests-persistent.log env RNN_XP_CUPY_PATH=persistent "$PY" -m pytest "${PYTEST_ARGS[@]}" \
    "$PERSISTENT" "$(test_file test_robustness.py)" "$(test_file test_kernels.py)" "$(test_file test_forward.py)" \
    -k "persistent or cupy"
persistent_rc=$?
phase 170 gpu-bench.log "$PY" -m rnn_xp bench --gpu --out "$DEST" "$@"
bench_rc=$?

echo "=== exit codes: tests $tests_rc, persistent-kernel tests $persistent_rc, bench $bench_rc ($((SECONDS - START_S)) s)"
[ "$tests_rc" -eq 0 ] && [ "$persistent_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
