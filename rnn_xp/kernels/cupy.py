"""The CuPy kernel: the fused loop, or the persistent kernel for small batches.

``scan_cupy`` picks one of two paths for CuPy arrays:

- ``kernels.cupy_fused``: a cuBLAS product and one fused CUDA kernel per step
  (two launches a step, ``lengths`` included), for any size;
- ``kernels.cupy_persistent``: all steps in one cooperative launch, the
  recurrent weights held in shared memory, for small batches whose weights
  fit on chip.

``cupy_persistent.decide_path`` picks the path from the sizes, the device
and ``$RNN_XP_CUPY_PATH`` (``auto`` | ``fused`` | ``persistent``). The
persistent kernel runs only after a check of its plan (B, H) on this device
against the fused path (``cupy_persistent.self_check``), and any failure,
then or at a later launch, gives the fused path's result with one
``RuntimeWarning``: never an exception, never a wrong number. CuPy is
imported only inside the function.
"""

from __future__ import annotations

__all__ = ["scan_cupy"]


def scan_cupy(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """``scan_portable`` for CuPy arrays: the persistent kernel or the fused loop."""
    import math
    import warnings

    import cupy

    from . import cupy_persistent as persistent
    from .cupy_fused import scan_fused

    kw = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak,
              return_sequences=return_sequences)  # fmt: skip
    T, B, H = x.shape[0], math.prod(h0.shape[:-1]), h0.shape[-1]
    with x.device:  # new buffers and kernels on the inputs' device
        setting = persistent.path_setting()
        if setting != "fused" and T > 0 and B > 0:  # nothing to run otherwise
            dev = x.device.id
            props = persistent.device_props(dev)
            path, note = persistent.decide_path(setting, B, H, cupy.dtype(h0.dtype).itemsize, props)
            if note is not None:
                warnings.warn(note, RuntimeWarning, stacklevel=3)
            if path == "persistent":
                result = persistent.run_checked(x, h0, Wx, Wh, b, device_id=dev, **kw)
                if result is not None:
                    return result
                if setting == "persistent":
                    warnings.warn(
                        f"{persistent.ENV_VAR}=persistent, but the persistent kernel cannot run "
                        f"B={B}, H={H} here (occupancy, the self-check or a launch failed); "
                        "using the fused path",
                        RuntimeWarning, stacklevel=3,
                    )  # fmt: skip
        return scan_fused(x, h0, Wx, Wh, b, **kw)
