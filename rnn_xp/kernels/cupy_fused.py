"""The fused CuPy loop: the in-place loop of ``kernels.numpy`` with one fused kernel per step.

On a GPU each elementwise operation is a kernel launch, and at small sizes
the launches, not the arithmetic, take the time. The loop here is
``kernels.numpy.scan_inplace`` with ``mod=cupy`` (preallocated buffers, the input
projection written straight into the output, ``matmul(..., out=)`` for
``h @ Wh.T``), and its elementwise part is one ``cupy.ElementwiseKernel``::

    o = (1 - leak) * h + leak * f(o + tmp + b)

so a step is two launches: the cuBLAS product and this kernel.

For small batches ``kernels.cupy.scan_cupy`` runs the persistent kernel of
``kernels.cupy_persistent`` instead, which checks itself against this loop
on first use. CuPy is imported only inside these functions.
"""

from __future__ import annotations

__all__ = ["fused_combine", "scan_fused"]

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


def scan_fused(x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """The in-place loop with the fused step, on the current device."""
    import cupy

    from .numpy import scan_inplace

    return scan_inplace(
        cupy, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
        reverse=reverse, leak=leak, return_sequences=return_sequences,
        combine=fused_combine(nonlinearity, leak, h0.dtype), bias_in_step=True,
    )  # fmt: skip
