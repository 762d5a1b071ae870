#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: run the GPU tests, then the GPU benchmark grid.
#
#   bash benchmarks/gpu_check.sh            (from the repository root)
#
# 1. The CuPy and torch-CUDA tests (the fused CuPy kernel against the portable
#    loop and the float64 reference, on every option; the persistent CuPy
#    kernel, forced, against the reference and the fused path, and its
#    self-check). They fail here, rather than skip, if no CUDA device is visible.
# 2. The GPU grid (DeepBench vanilla-RNN sizes H in {1760, 2048, 2560},
#    B in {16, 32, 64, 128}, T = 50; small batches B in {1, 4, 8},
#    H in {256, 512, 1024}, T = 200) against torch.nn.RNN on CUDA (cuDNN),
#    writing benchmarks/results/<gpu-name>.json and .png.
set -euo pipefail
PY=${PYTHON:-python}
"$PY" - <<'PYEOF'
import cupy, torch
assert cupy.cuda.is_available(), "cupy finds no CUDA device"
assert torch.cuda.is_available(), "torch finds no CUDA device"
print("GPU:", torch.cuda.get_device_name(0))
PYEOF
"$PY" -m pytest -q -p no:cacheprovider tests/test_fast_paths.py tests/test_forward.py \
    tests/test_cupy_persistent.py -k "cupy or cuda" -rs
"$PY" -m rnn_xp bench --gpu --out benchmarks/results "$@"
