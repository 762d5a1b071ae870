"""The backward's sigmoids over all steps on the compiled loops' sigmoid (numba, optional).

Before the reverse loop, the gated cells' ``saved`` takes every gate's
activation and its derivative over all steps at once (``cells._base.activated``).
On NumPy the sigmoid there is eight array operations (``_activations``:
``exp(-|z|)``, a mask, a maximum, a division), each a pass over the
``(T, *batch, H)`` block with an array of its own; a gate's block is a view
of the pre-activations of all the gates, its rows ``G * H`` apart.
``activated`` runs the compiled loops' sigmoid instead (``_numba_jit``: the
same operations in the same order on each value, NumPy's own ``exp`` loop,
so the same bits), a row at a time over a one-dimensional view of the block
(``sigmoid_span``), in one pass whose loops vectorise. The derivative is the
activation's own (``s * (1 - s)`` on NumPy arrays).

Everything else runs ``cells._base.activated``: another library or dtype, a
``clip``, an activation other than the plain sigmoid (the compiled loops'
``tanh`` is NumPy's own, and NumPy's ``tanh`` reads the block in place as
fast), an empty block, or no numba.
"""

from __future__ import annotations

import numpy
from numpy.lib.stride_tricks import as_strided

from .._compat import is_numpy_namespace
from ..cells import _base
from . import numba_cpu

__all__ = ["activated"]


def activated(xp, act, z, clip):
    """``cells._base.activated`` (``(act(z), act'(z))``) with the compiled sigmoid (module docstring)."""
    if (clip is not None or act.name != "sigmoid" or act.alpha is not None or act.beta is not None
            or not is_numpy_namespace(xp) or type(z) is not numpy.ndarray
            or z.dtype not in (numpy.float32, numpy.float64) or z.size == 0 or numba_cpu.compiled() is None):  # fmt: skip
        return _base.activated(xp, act, z, clip)
    n = z.shape[-1]
    rows = z.reshape(-1, n)  # a view where the leading axes allow one (a gate's block of z): else a copy
    size = rows.itemsize
    if rows.strides[1] != size or rows.strides[0] % size or rows.strides[0] < n * size:
        rows = numpy.ascontiguousarray(rows)
    stride = rows.strides[0] // size
    flat = as_strided(rows, shape=((rows.shape[0] - 1) * stride + n,), strides=(size,), writeable=False)  # in bounds
    out = numpy.empty(rows.shape, z.dtype)
    try:
        numba_cpu.run_compiled("sigmoid_span", [(flat, rows.shape[0], stride, n, out)])
    except numba_cpu.CompileAgain:  # numba's on-disk cache failed: once more, compiled anew (or NumPy's)
        return activated(xp, act, z, clip)
    out = out.reshape(z.shape)
    return out, act.derivative()(xp, out)
