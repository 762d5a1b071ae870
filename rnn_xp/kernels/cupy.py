"""The CuPy kernel: runs the path the table chose, the fused loop or the persistent kernel.

``kernels.cupy_forward`` (the CuPy row of the table in ``kernels/__init__.py``)
picks one of two paths for CuPy arrays with ``kernels.cupy_path``:

- ``kernels.cupy_fused``: a cuBLAS product and one fused CUDA kernel per step
  (two launches a step, ``lengths`` included), for any size;
- ``kernels.cupy_persistent``: all steps in one cooperative launch, the
  recurrent weights held in shared memory, for small batches whose weights
  fit on chip.

``scan_cupy`` runs it. The persistent kernel runs only after a check of its
plan (B, H) on this device against the fused path
(``cupy_persistent.self_check``), and any failure, then or at a later
launch, gives the fused path's result with one ``RuntimeWarning``: never an
exception, never a wrong number. CuPy is imported only inside the function.
"""

from __future__ import annotations

__all__ = ["scan_cupy"]


def scan_cupy(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences,
              path="fused", note=None, insist=False):  # fmt: skip
    """``scan_portable`` for float32/float64 CuPy arrays on ``path`` (``"fused"`` or ``"persistent"``).

    ``note``: a warning the choice of the path gave (or ``None``), issued here.
    ``insist``: the persistent kernel was asked for (``RNN_XP_CUPY_PATH=persistent``),
    so falling back to the fused path warns.
    """
    import math
    import warnings

    from . import cupy_persistent as persistent
    from ._settings import CUPY_PATH
    from .cupy_fused import scan_fused

    kw = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak,
              return_sequences=return_sequences)  # fmt: skip
    with x.device:  # new buffers and kernels on the inputs' device
        if note is not None:
            warnings.warn(note, RuntimeWarning, stacklevel=4)
        if path == "persistent":
            result = persistent.run_checked(x, h0, Wx, Wh, b, device_id=x.device.id, **kw)
            if result is not None:
                return result
            if insist:
                B, H = math.prod(h0.shape[:-1]), h0.shape[-1]
                warnings.warn(
                    f"{CUPY_PATH}=persistent, but the persistent kernel cannot run "
                    f"B={B}, H={H} here (occupancy, the self-check or a launch failed); "
                    "using the fused path",
                    RuntimeWarning, stacklevel=4,
                )  # fmt: skip
        return scan_fused(x, h0, Wx, Wh, b, **kw)
