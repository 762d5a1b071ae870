"""``python -m rnn_xp demo``: the two seed programs on every installed backend.

The seed programs are the two plain NumPy loops rnn_xp grew from. Seed 000
is the column-vector step of the CS231n-style notebook (``rnn_xp.columns``);
seed 003 is the row loop ``output_t = tanh(W @ input_t + U @ state_t + b)``
(``rnn_xp.rnn_forward``). Both run on every installed backend in float32 and
float64, and each result is compared with the seed program itself: the
plain loop, run in float64 NumPy.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import _backends, columns
from ..forward import rnn_forward

__all__ = ["run"]


def run(*, backend="all", seed=0) -> int:
    """Print both seed programs' results and every backend's agreement with NumPy; 0 if all agree."""
    names = _backends.NAMES if backend == "all" else (backend,)
    rng = np.random.default_rng(seed)

    # Seed 000: column vectors, x (D, 1), a list of T steps.
    D, H, T = 3, 2, 4
    Wx = rng.standard_normal((H, D)) * 0.01
    Wh = rng.standard_normal((H, H)) * 0.01
    b = np.zeros((H, 1))
    h0 = np.zeros((H, 1))
    x_seq = [rng.standard_normal((D, 1)) for _ in range(T)]
    ref0 = np.zeros((T, H, 1))
    prev = h0
    for t in range(T):
        prev = np.tanh(np.dot(Wx, x_seq[t]) + np.dot(Wh, prev) + b)
        ref0[t] = prev
    hidden_states = columns.rnn_forward(x_seq, h0, Wx, Wh, b)
    print(f"seed 000 (the CS231n-style column-vector program; D={D}, H={H}, T={T}): "
          "rnn_xp.columns.rnn_forward on NumPy")
    for t, h in enumerate(hidden_states):
        print(f"Timestep {t} hidden state:\n{h.squeeze()}")

    # Seed 003: rows, inputs (T, D) -> (T, H).
    inputs = rng.random((42, 32))
    W = rng.random((64, 32)) * 0.05
    U = rng.random((64, 64)) * 0.05
    b3 = rng.random(64)
    ref3, state = [], np.zeros(64)
    for input_t in inputs:
        state = np.tanh(np.dot(W, input_t) + np.dot(U, state) + b3)
        ref3.append(state)
    ref3 = np.stack(ref3)
    print("\nseed 003 (the row loop output_t = tanh(W @ input_t + U @ state_t + b)): "
          "rnn_xp.rnn_forward(inputs (42, 32), state (64,), W, U, b) -> (42, 64)")
    print(f"last output (first 4 of 64): {rnn_forward(inputs, np.zeros(64), W, U, b3)[-1, :4]}")

    print("\nEach backend runs both programs through rnn_xp in float32 and float64. max|diff| is the")
    print("largest absolute difference from the seed program's own float64 NumPy loop; 'ok' means at")
    print("most 1e-5 in float32 and 1e-12 in float64.")
    print(f"\n{'backend':<18}{'dtype':<9}{'seed 000 max|diff|':>20}{'seed 003 max|diff|':>20}        device")
    failures = 0
    for name in names:
        try:
            xp, dev = _backends.load(name)
        except _backends.BackendUnavailable as exc:
            print(f"{name:<18}skipped: {exc}")
            continue
        for dtype in ("float32", "float64"):
            cast = lambda a: xp.asarray(np.asarray(a, dtype=dtype), device=dev)  # noqa: E731
            # JAX's 64-bit mode for this run only: rnn_xp leaves JAX's configuration alone
            x64 = name == "jax" and dtype == "float64"
            with _backends.jax_float64() if x64 else contextlib.nullcontext():
                out0 = columns.rnn_forward([cast(s) for s in x_seq], cast(h0), cast(Wx), cast(Wh), cast(b))
                out3 = rnn_forward(cast(inputs), cast(np.zeros(64)), cast(W), cast(U), cast(b3))
            d0 = float(np.max(np.abs(_backends.to_host(out0) - ref0)))
            d3 = float(np.max(np.abs(_backends.to_host(out3) - ref3)))
            tol = 1e-5 if dtype == "float32" else 1e-12
            ok = d0 <= tol and d3 <= tol
            failures += not ok
            verdict = "ok" if ok else "MISMATCH"
            print(f"{name:<18}{dtype:<9}{d0:>20.2e}{d3:>20.2e}  {verdict:<8}{_device_name(dev)}")
    return 1 if failures else 0


def _device_name(dev):
    """A device as its library names it in full: ``cpu``, ``TFRT_CPU_0``, ``CUDA Device 0 (NVIDIA H200)``."""
    text = str(dev)
    if type(dev).__module__.startswith("cupy"):
        try:
            import cupy

            name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"]
            text += f" ({name.decode() if isinstance(name, bytes) else name})"
        except Exception:  # a device without properties: its number is enough
            pass
    elif getattr(dev, "device_kind", "cpu").lower() != "cpu":  # JAX: gpu:0 (NVIDIA H200)
        text += f" ({dev.device_kind})"
    return text
