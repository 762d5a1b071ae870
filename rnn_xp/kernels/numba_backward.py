"""Backpropagation through time as one compiled call, for NumPy on the CPU (numba, optional).

The same three steps as ``kernels.numpy_backward`` (whose first and last
step this module reuses), with the loop of step 2 compiled by numba
(``_numba_jit.backward_recurrence``): per step, against the forward's
direction::

    g_t  = g + dh_t                                  # the gradient reaching h_t
    dz_t = g_t * leak * f'(z_t)                      # in place in dz (frozen rows: 0)
    g    = dz_t @ Wh + (1 - leak) * g_t              # the packed product (Wh.T packed), or BLAS

with no Python per step. The gradient ``g`` is a ``(2, B, H)`` double
buffer. Threads follow the forward's plan (``numba_cpu.plan``): two threads
over halves of the rows with no synchronisation, or, for a few rows, over
halves of the columns with a barrier after each step's ``dz_t``.
``dx``, ``dWx``, ``dWh`` and ``db`` are then each one product over all steps
(``numba_products``: the packed product on every CPU from ``MACS_FROM``).
"""

from __future__ import annotations

import math

import numpy as np

from . import numba_cpu, numba_products
from . import numpy_backward as _np_backward
from ._packed import pack
from ._threads import blas_threads

__all__ = ["backward_numba"]


def backward_numba(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak,
                   product=None, split=None, threads=None):  # fmt: skip
    """``backward_portable`` for float32/float64 NumPy arrays, the loop compiled (module docstring).

    ``product``, ``split`` and ``threads`` override ``numba_cpu.plan`` as in
    ``numba_cpu.scan_numba``; every choice gives the same results to rounding.
    """
    numba_cpu.require_one_dtype(h0.dtype, dh=dh, x=x, Wx=Wx, Wh=Wh, h_seq=h_seq, dh_n=dh_n)
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak)
    try:
        return _backward(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, product, split, threads, **options)
    except numba_cpu.CompileAgain:  # numba's on-disk cache failed: once more, compiled anew (or the NumPy loop)
        return _backward(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, product, split, threads, **options)


def _backward(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, product, split, threads, *, nonlinearity, lengths, reverse,
              leak):  # fmt: skip
    jit = numba_cpu.compiled()
    T = x.shape[0]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)
    dtype = h0.dtype
    if jit is None or T == 0 or B == 0 or H == 0 or nonlinearity not in ("tanh", "relu") \
            or dtype not in (np.float32, np.float64):  # fmt: skip
        return _np_backward.backward_numpy(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, nonlinearity=nonlinearity,
                                           lengths=lengths, reverse=reverse, leak=leak)  # fmt: skip

    gemm, ilp64, bounds, nsync = numba_cpu.work_plan(B, H, dtype, product, split, threads, backward=True)

    hs = h_seq.reshape(T, B, H)  # (T, B, H)
    h0_2 = h0.reshape(B, H)  # (B, H)
    x3 = x.reshape(T, B, x.shape[-1])  # (T, B, D)
    lens = None if lengths is None else np.asarray(lengths).reshape(B)  # (B,)
    x3, hs, h0_2, pad = _np_backward.without_padding(x3, hs, h0_2, lens)  # padding reaches no gradient
    dz = _np_backward.derivative_buffer(hs, h0_2, lens, nonlinearity=nonlinearity, reverse=reverse, leak=leak)

    G = np.empty((2, B, H), dtype=dtype)  # (2, B, H): the gradient reaching the carried state
    G[0] = 0 if dh_n is None else dh_n.reshape(B, H)
    dh3 = G[:1] if dh is None else np.ascontiguousarray(dh.reshape(T, B, H), dtype=dtype)  # (T, B, H)
    lens64 = np.zeros(B, dtype=np.int64) if lens is None else np.ascontiguousarray(lens, dtype=np.int64)
    coef = np.array([leak, 1.0 - leak], dtype=dtype)  # (2,)
    flags = (int(lens is not None), int(leak != 1.0))
    sync = numba_cpu.barrier_words()  # the barrier's counter and sched_yield
    Wh_c = np.ascontiguousarray(Wh) if gemm else np.empty((1, 1), dtype=dtype)  # (H, H): BLAS multiplies by Wh
    WK = np.empty((1, 1, 1), dtype=dtype) if gemm else pack(Wh.T)  # the packed product's: g @ Wh
    args = [(dz, dh3, int(dh is not None), G, Wh_c, WK, lens64, int(reverse), r0, r1, c0, c1, flags, coef,
             gemm, int(ilp64), sync, nsync)
            for r0, r1, c0, c1 in bounds]  # fmt: skip
    with blas_threads(1 if gemm else None):  # one BLAS thread per caller
        numba_cpu.run_compiled("backward_recurrence", args, one_blas_thread=bool(gemm))

    g = G[T % 2]  # (B, H): dL/dh0
    dx, dWx, dWh, db = _np_backward.weight_gradients(dz, x3, hs, h0_2, Wx, lens, reverse=reverse, batch=batch,
                                                     pad=pad, matmuls=numba_products.MATMULS)  # fmt: skip
    return dx, g.reshape(*batch, H).copy(), dWx, dWh, db
