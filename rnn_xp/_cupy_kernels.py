"""The CuPy path: the in-place loop of ``_inplace`` with one fused kernel per step.

On a GPU each elementwise operation is a kernel launch, and at small sizes
the launches, not the arithmetic, take the time. The loop here is
``_inplace.scan_inplace`` with ``mod=cupy`` (preallocated buffers, the input
projection written straight into the output, ``matmul(..., out=)`` for
``h @ Wh.T``), and its elementwise part is one ``cupy.ElementwiseKernel``::

    o = (1 - leak) * h + leak * f(o + tmp + b)

so a step is two launches: the cuBLAS product and this kernel.

For small batches ``scan_cupy`` runs the persistent kernel of
``_cupy_persistent`` instead: all steps in one launch, the recurrent weights
held in shared memory. ``_cupy_persistent.decide_path`` picks the path from
the sizes, the device and ``$RNN_XP_CUPY_PATH`` (``auto`` | ``fused`` |
``persistent``); the persistent kernel also has to pass a first-use
self-check against the fused path. CuPy is imported only inside these
functions.
"""

from __future__ import annotations

__all__ = ["fused_combine", "scan_cupy", "scan_fused"]

_KERNELS = {}

# The body of the fused step, per activation; leak and the bias are arguments.
_BODY = {
    "tanh": "T z = o + tmp + bias; o = one_minus_leak * h + leak * tanh(z);",
    "relu": "T z = o + tmp + bias; o = one_minus_leak * h + leak * (z > (T)0 || z != z ? z : (T)0);",
}


def _kernel(nonlinearity):
    """The fused ``ElementwiseKernel`` for ``nonlinearity`` (built once, compiled on first use)."""
    if nonlinearity not in _KERNELS:
        import cupy

        _KERNELS[nonlinearity] = cupy.ElementwiseKernel(
            "T tmp, T h, T bias, T leak, T one_minus_leak",
            "T o",
            _BODY[nonlinearity],
            f"rnn_xp_step_{nonlinearity}",
        )
    return _KERNELS[nonlinearity]


def fused_combine(nonlinearity, leak, dtype):
    """``combine(o, tmp, h, b)`` for ``scan_inplace``: one fused kernel launch."""
    import cupy

    kernel = _kernel(nonlinearity)
    leak_, rest = cupy.dtype(dtype).type(leak), cupy.dtype(dtype).type(1.0 - leak)
    zero = cupy.dtype(dtype).type(0)

    def combine(o, tmp, h, b):
        kernel(tmp, h, zero if b is None else b, leak_, rest, o)  # b (H,) broadcasts over (B, H)

    return combine


def scan_cupy(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """``scan_portable`` for CuPy arrays: the persistent kernel or the fused loop."""
    import math
    import warnings

    import cupy

    from . import _cupy_persistent as persistent

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
                plan = persistent.usable(dev, h0.dtype, nonlinearity, B, H)
                if plan is not None:
                    return persistent.scan_persistent(x, h0, Wx, Wh, b, plan=plan, **kw)
                if setting == "persistent":
                    warnings.warn(
                        f"{persistent.ENV_VAR}=persistent, but the persistent kernel cannot run "
                        f"B={B}, H={H} here (occupancy or the self-check); using the fused path",
                        RuntimeWarning, stacklevel=3,
                    )  # fmt: skip
        return scan_fused(x, h0, Wx, Wh, b, **kw)


def scan_fused(x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """The in-place loop with the fused step, on the current device."""
    import cupy

    from ._inplace import scan_inplace

    return scan_inplace(
        cupy, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
        reverse=reverse, leak=leak, return_sequences=return_sequences,
        combine=fused_combine(nonlinearity, leak, h0.dtype), bias_in_step=True,
    )  # fmt: skip
