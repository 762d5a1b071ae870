"""Peak memory of the NumPy kernels, measured with ``tracemalloc`` (NumPy registers its buffers there).

Two questions: does ``return_sequences=False`` keep memory independent of
``T`` (the peak at T = 100,000 against T = 1,000), and how much does a full
forward take beyond its output (the in-place loop against the portable one)?
The inputs are made before tracing starts, as the caller holds them.

>>> from rnn_xp.bench.memory import peak_bytes
>>> import numpy as np
>>> peak, result = peak_bytes(lambda: np.ones(1000))
>>> peak >= 8000 and result.shape == (1000,)
True
"""

from __future__ import annotations

import tracemalloc

from .cells import problem

__all__ = ["memory_section", "peak_bytes"]


def peak_bytes(fn):
    """``(peak bytes traced while fn runs, its result)``."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, result


def memory_section(B=8, D=8, H=128, T_small=1000, T_large=100_000, T_full=2000, progress=None):
    """Peak memory of the NumPy kernels at these sizes: a JSON-able dict (the results file's ``memory``)."""
    import array_api_compat.numpy as nxp

    import rnn_xp

    from ..kernels.portable import scan_portable

    note = (lambda label: None) if progress is None else progress.note  # noqa: E731

    out = {"B": B, "D": D, "H": H, "tool": "tracemalloc (NumPy registers its buffers)"}
    x, h0, Wx, Wh, b = problem(B, 3, D, H)
    rnn_xp.rnn_forward(x, h0, Wx, Wh, b, return_sequences=False)  # warm-up: one-time imports and caches
    last = {}
    for T in (T_small, T_large):
        note(f"memory: return_sequences=False, T={T}")
        x, h0, Wx, Wh, b = problem(B, T, D, H)
        peak, _ = peak_bytes(lambda: rnn_xp.rnn_forward(x, h0, Wx, Wh, b, return_sequences=False))
        last[T] = peak
        del x
    out["last_state"] = {
        "T": [T_small, T_large], "peak_bytes": [last[T_small], last[T_large]],
        "ratio_large_to_small": last[T_large] / max(last[T_small], 1),
        "one_TBH_buffer_bytes_at_large_T": T_large * B * H * 4,
    }  # fmt: skip
    note(f"memory: the full forward, T={T_full}")
    x, h0, Wx, Wh, b = problem(B, T_full, D, H)
    full = {"T": T_full, "output_bytes": T_full * B * H * 4, "B_H_bytes": B * H * 4}
    peak, _ = peak_bytes(lambda: rnn_xp.rnn_forward(x, h0, Wx, Wh, b))
    full["in_place_extra_bytes"] = peak - full["output_bytes"]
    peak, _ = peak_bytes(lambda: scan_portable(nxp, x, h0, Wx, Wh, b, nonlinearity="tanh", lengths=None,
                                               reverse=False, leak=1.0, return_sequences=True))  # fmt: skip
    full["portable_extra_bytes"] = peak - full["output_bytes"]
    out["full_forward"] = full
    return out
