"""The backward's products over all steps on the compiled packed product, on every CPU (numba, optional).

After the reverse loop, ``cell.grads`` takes the weight gradients and
``dx`` as one product each over all ``N = T * B`` rows: ``d.T @ a`` (each
weight's gradient, ``outer_sum``) and ``d @ W`` (``dx``, ``rows_matmul``).
On NumPy those are BLAS calls; on the 2-core EPYC VM NumPy's OpenBLAS runs
its AVX2 kernels there, about 185 to 200 GFLOP/s on both cores, while the
compiled packed product's tile (``_numba_jit``, AVX-512 where the CPU has
it) runs 190 to 225 GFLOP/s on one. ``MATMULS`` gives ``cell.grads`` both
on that product, over the rows of the result split between the callers
(``_threads.run_parallel``):

- ``outer_sum(xp, d, a, valid)``: ``a`` packed by strips of columns
  (``_packed.pack_columns``), ``d`` read in place as the tile's transposed
  operand (``_numba_jit.outer_packed``), ``OUTER_STEPS`` rows at a time;
- ``rows_matmul(xp, a, W)``: ``W`` packed by strips of columns, ``a``'s rows
  through ``_numba_jit.packed_product``.

Below ``MACS_FROM`` multiply-adds or ``WIDTH_FROM`` columns of the
gradient ``d``, from ``SPLIT_FROM`` to ``SPLIT_BELOW``, each is BLAS's own
product on the same two callers with one BLAS thread each (halves of the
result's rows): OpenBLAS's second thread, woken by a product on two
threads, spins after it (up to 2^28 cycles by default,
``OPENBLAS_THREAD_TIMEOUT``) and takes a core from the compiled loops of
the next call. Everything else is ``cells._base``'s (one BLAS call):
another library or dtype, the other sizes, or no numba. The compiled sums
differ from BLAS's only by rounding (each element's sum runs over the rows
in order, ``OUTER_STEPS`` at a time). A NaN or an infinity in either
operand reaches the result as in the product written out (``0 * inf`` is
NaN).
"""

from __future__ import annotations

import math

import numpy

from .._compat import is_numpy_namespace
from ..cells import _base
from . import _pages, _threads, numba_cpu
from ._packed import TILE_ROWS, pack_columns
from ._threads import blas_threads, run_parallel

__all__ = ["MACS_FROM", "MATMULS", "OUTER_STEPS", "SPLIT_BELOW", "SPLIT_FROM", "TWO_CALLERS_FROM", "WIDTH_FROM",
           "outer_sum", "rows_matmul"]  # fmt: skip

# The products run compiled from this many multiply-adds, on two callers from
# TWO_CALLERS_FROM. Measured on the 2-core VM in the gated layer's forward +
# backward (alternating in one process, medians of 9): at (64, 50, 512, 1024)
# an LSTM's took 0.85 of its time with BLAS's products (526 against 623 ms), a
# GRU's 0.71; at (32, 100, 128, 256) and (16, 100, 64, 128) (products of 4e8
# multiply-adds and less) both were level, as was the Elman backward at (64,
# 50, 512, 1024) (H = 1024 columns of d: it keeps BLAS's by WIDTH_FROM). With
# the compiled products for dx and every weight's gradient no OpenBLAS thread
# wakes in cell.grads (an awake one spins after its call, taking a core from
# the next compiled one): the weight gradients alone on them and dx on BLAS
# took 0.88 to 0.91.
# Products of one call alone (alternating with BLAS's in one process) were
# faster where d has many columns (G*H = 4096, 3200 rows: 0.70 to 0.86 of
# BLAS's time) and mostly slower with 1024 (0.85 to 1.4): d's width is the
# second condition.
MACS_FROM = 1 << 30
WIDTH_FROM = 2048
TWO_CALLERS_FROM = 1 << 23

# Below those, BLAS's products on two callers with one BLAS thread each from
# SPLIT_FROM to SPLIT_BELOW multiply-adds (module docstring). In a loop of the
# gated layer's forward + backward at (B, T, D, H) = (16, 100, 64, 128)
# (products of 5e7 to 1e8 multiply-adds) OpenBLAS's spinning thread took 38%
# of the process's CPU samples (perf; its SkylakeX kernels on the 2-core EPYC
# VM), 1.5% with the products split. Alternating pairs of processes against
# BLAS's own threads: the LSTM took 0.87 and 0.91 of its time (6 and 10 pairs,
# faster in 6 and 8), the GRU 0.92 and 0.92 (faster in 6 and 7), the Elman
# backward 0.91 (5 pairs). In an earlier run of six rounds (a first version of
# this split, and OpenBLAS's threads sleeping at once after a product:
# OPENBLAS_THREAD_TIMEOUT=4, set before NumPy loads it) the LSTM took 0.90 and
# 0.87, the GRU 0.95 and 0.91. At (1, 200, 32, 64) (2e6 to 3e6) one caller
# runs the loops and the products stay on BLAS's threads; at (32, 100, 128,
# 256) (4e8 to 8e8) two runs of alternating pairs, products split or not,
# moved either way (0.94 to 1.06): they stay too.
SPLIT_FROM = 1 << 23
SPLIT_BELOW = 1 << 28

# The rows outer_packed sums at a time: d's block for a tile of 8 rows (the
# cache lines of OUTER_STEPS rows) stays in L1, the packed strip's in L2.
OUTER_STEPS = 256


def _takes(xp, *arrays):
    """NumPy float32/float64 ndarrays of one dtype, numba's loops at hand."""
    if not is_numpy_namespace(xp) or not all(type(a) is numpy.ndarray for a in arrays):
        return False
    dtype = arrays[0].dtype
    if dtype not in (numpy.float32, numpy.float64) or any(a.dtype != dtype for a in arrays):
        return False
    return numba_cpu.compiled() is not None


def _row_bounds(rows, macs):
    """Each caller's rows ``(r0, r1)`` of the result: whole tiles, two callers from ``TWO_CALLERS_FROM``."""
    n = 2 if macs >= TWO_CALLERS_FROM and _threads.CPUS >= 2 and rows >= 2 * TILE_ROWS else 1
    cut = [0] + [rows * i // n // TILE_ROWS * TILE_ROWS for i in range(1, n)] + [rows]
    return [(cut[i], cut[i + 1]) for i in range(n)]


def _split(inner, rows, macs):
    """Whether a product of ``rows`` result rows, ``inner`` terms a sum, runs on two callers with one BLAS thread
    each (``SPLIT_FROM`` to ``SPLIT_BELOW`` multiply-adds)."""
    return SPLIT_FROM <= macs < SPLIT_BELOW and rows >= 2 * TILE_ROWS and inner >= 2 and _threads.CPUS >= 2


def _on_two_callers(fn, o, x, y, rows):
    """``fn(o, x, y, r0, r1, err)`` over two halves of ``rows``, each caller on one BLAS thread, ``err`` the
    caller's ``numpy.geterr()`` (NumPy's floating-point error handling is each thread's own)."""
    half, err = rows // 2, numpy.geterr()
    with blas_threads(1):
        run_parallel(fn, [(o, x, y, 0, half, err), (o, x, y, half, rows, err)], one_blas_thread=True)


def _outer_rows(o, d2, a2, r0, r1, err):
    """``o[r0:r1] = d2[:, r0:r1].T @ a2``: BLAS on the calling thread, NumPy's error handling ``err``."""
    with numpy.errstate(**err):
        numpy.matmul(d2[:, r0:r1].T, a2, out=o[r0:r1])


def _matmul_rows(o, a2, W, r0, r1, err):
    """``o[r0:r1] = a2[r0:r1] @ W``: BLAS on the calling thread, NumPy's error handling ``err``."""
    with numpy.errstate(**err):
        numpy.matmul(a2[r0:r1], W, out=o[r0:r1])


def outer_sum(xp, d, a, valid=None):
    """``cells._base.outer_sum`` (``sum over steps and batch of d_t.T @ a_t``), compiled from ``MACS_FROM``
    multiply-adds and ``WIDTH_FROM`` columns of ``d``, BLAS's on two callers from ``SPLIT_FROM``."""
    N, Fd, Fa = math.prod(d.shape[:-1]), d.shape[-1], a.shape[-1]
    compiled = N * Fd * Fa >= MACS_FROM and Fd >= WIDTH_FROM
    if not (compiled or _split(N, Fd, N * Fd * Fa)) or not _takes(xp, d, a):
        return _base.outer_sum(xp, d, a, valid)
    if valid is not None:
        a = numpy.where(valid, a, 0).astype(a.dtype, copy=False)
    d2 = d.reshape(N, Fd)
    if not compiled:
        o = numpy.empty((Fd, Fa), d.dtype)
        _on_two_callers(_outer_rows, o, d2, a.reshape(N, Fa), Fd)
        return o
    if d2.strides[-1] != d2.itemsize:
        d2 = numpy.ascontiguousarray(d2)
    AP = pack_columns(a.reshape(N, Fa))  # (ceil(Fa / S), N, S)
    o = _pages.empty((Fd, AP.shape[0] * AP.shape[2]), d.dtype)
    o.fill(0)
    args = [(o, d2, AP, r0, r1, OUTER_STEPS) for r0, r1 in _row_bounds(Fd, N * Fd * Fa)]
    try:
        numba_cpu.run_compiled("outer_packed", args)
    except numba_cpu.CompileAgain:  # numba's on-disk cache failed: once more, compiled anew (or BLAS)
        return outer_sum(xp, d, a)
    return o if o.shape[1] == Fa else numpy.ascontiguousarray(o[:, :Fa])


def rows_matmul(xp, a, W):
    """``cells._base.rows_matmul`` (``a @ W`` over every leading axis), compiled from ``MACS_FROM``
    multiply-adds and ``WIDTH_FROM`` columns of ``a``, BLAS's on two callers from ``SPLIT_FROM``."""
    K, M = W.shape
    lead = tuple(a.shape[:-1])
    N = math.prod(lead)
    compiled = N * K * M >= MACS_FROM and K >= WIDTH_FROM
    if not (compiled or _split(K, N, N * K * M)) or W.ndim != 2 or not _takes(xp, a, W):
        return _base.rows_matmul(xp, a, W)
    if not compiled:
        o = numpy.empty((N, M), a.dtype)
        _on_two_callers(_matmul_rows, o, a.reshape(N, K), W, N)
        return o.reshape(*lead, M)
    a2 = numpy.ascontiguousarray(a.reshape(N, K))
    WP = pack_columns(W)  # (ceil(M / S), K, S): W's columns, as the product's packed W.T
    o = _pages.empty((N, M), a.dtype)
    o.fill(0)
    args = [(o, a2, WP, r0, r1, 0, M) for r0, r1 in _row_bounds(N, N * K * M)]
    try:
        numba_cpu.run_compiled("packed_product", args)
    except numba_cpu.CompileAgain:
        return rows_matmul(xp, a, W)
    return o.reshape(*lead, M)


# What cell.grads takes (``matmuls=``): both products compiled.
MATMULS = _base.Matmuls(outer_sum, rows_matmul)
