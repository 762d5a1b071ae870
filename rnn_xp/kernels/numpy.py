"""The recurrence as an in-place loop, for NumPy (and, with ``mod=cupy``, CuPy).

The portable loop (``portable.scan_portable``) allocates a few new arrays at
every step and stacks them at the end. Here every buffer is allocated once:

1. ``out`` ``(T, B, H)`` is allocated empty and the input projection
   ``x @ Wx.T + b`` is written straight into it, one matrix product for all
   steps (``matmul(..., out=)``).
2. Step t then overwrites ``out[t]`` with the new state, in place::

       tmp = h @ Wh.T                  # matmul into a (B, H) scratch buffer
       out[t] += tmp; f(out[t], out=out[t])
       out[t] = leak * out[t] + (1 - leak) * h     # only when leak != 1

   and ``h`` becomes the view ``out[t]``: no copy, no new array.

Beyond its result, the loop holds a few ``(B, H)`` buffers and, for fewer
than 16 rows, a contiguous ``(H, H)`` copy of ``Wh.T``, whatever T is.

When oneMKL is installed and preferred (``_mkl.preferred``: an Intel CPU,
or ``RNN_XP_MKL=1``), float32/float64 NumPy inputs above a small size run
both products through it instead: ``Wh`` is packed once for
all steps (for one sequence, B = 1, the matrix-vector product reads it as it
is) and each step accumulates ``out[t] += h @ Wh.T`` in one call, so the
``tmp`` buffer and the separate add go away. oneMKL's thread count is chosen
step by step (``_mkl.StepThreads``: one thread for a while after repeated stalls).

With ``return_sequences=False`` there is no ``(T, B, H)`` buffer: the input
is projected a block of time steps at a time into a buffer of at most
``_BLOCK_STEPS`` steps, so memory is O(B * H) whatever T is.

The code is written against a NumPy-like module ``mod`` (``numpy`` or
``cupy``); ``combine`` is the per-step elementwise part, which CuPy replaces
with one fused kernel (see ``kernels.cupy_fused``). The caller's arrays are never
written to (they may be read-only).
"""

from __future__ import annotations

import math
import os
import threading

from . import mkl as _mkl

__all__ = ["scan_inplace", "scan_numpy", "time_blocks"]

# A return_sequences=False block holds at most _BLOCK_STEPS time steps and at
# most _BLOCK_ELEMENTS elements (4 MiB in float32), and at least one step.
_BLOCK_STEPS = 32
_BLOCK_ELEMENTS = 1 << 20

# The recurrent product (B, H) @ (H, H) runs on one BLAS thread below this many
# multiply-adds: there, waking a second thread costs more than it saves.
_SERIAL_MACS = 1 << 20

# oneMKL (when installed) takes the recurrent product from this many multiply-adds
# per step, where it runs on its threads; below, one OpenBLAS thread is faster
# than a ctypes call. Its threads meet at a barrier every step, which stalls
# when another library's idle threads still spin on the same cores (OpenBLAS's
# do for about 0.1 s after each call): ``_mkl.StepThreads`` then falls back to
# one thread for a while (benchmarks/bench_interference.py measures both cases).
_MKL_MACS = _SERIAL_MACS

# One sequence (B = 1) takes oneMKL's matrix-vector product from this many
# multiply-adds per step (H >= 512): reading Wh is the cost there, and two
# threads read it twice as fast (B=1, H=512, T=200: 2.8 ms against 4.8 ms on
# one OpenBLAS thread).
_MKL_ROW_MACS = 1 << 18

# Below this batch size the NumPy loop multiplies by a contiguous copy of Wh.T;
# from it on, by the transposed view (see scan_inplace).
_COPY_BELOW_BATCH = 16

# When the steps run on one BLAS thread, the input projection of a block of
# time steps (one matrix product) still gets every thread from this many
# multiply-adds: with D = H = 256, B = 8, T = 200 it is 105M multiply-adds.
_PARALLEL_PROJECTION_MACS = 1 << 22


def scan_numpy(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """``scan_portable`` for NumPy arrays, in place (see the module docstring)."""
    import numpy

    T, D = x.shape[0], x.shape[-1]
    B = math.prod(h0.shape[:-1])
    H = h0.shape[-1]
    macs = B * H * H  # per step
    use_mkl = (_mkl.preferred()  # first: it also checks RNN_XP_MKL, whatever the size
               and macs >= (_MKL_ROW_MACS if B == 1 else _MKL_MACS)
               and min(T, B, H) > 0  # nothing to pack or multiply otherwise (D = 0 is fine)
               and h0.dtype in (numpy.float32, numpy.float64))  # fmt: skip
    small = macs < _SERIAL_MACS and not use_mkl
    steps = T if return_sequences else _block_steps(T, B, H)  # time steps projected at once
    serial_steps = small and steps * B * D * H >= _PARALLEL_PROJECTION_MACS
    with _blas_threads(1 if small and not serial_steps else None):
        return scan_inplace(
            numpy, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
            reverse=reverse, leak=leak, return_sequences=return_sequences, mkl=use_mkl,
            serial_steps=serial_steps,
        )  # fmt: skip


def scan_inplace(
    mod, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences,
    combine=None, bias_in_step=False, mkl=False, serial_steps=False,
):  # fmt: skip
    """The in-place recurrence on ``mod`` arrays; returns ``(h_seq or None, h_last)``.

    ``x`` is ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, ``lengths`` ``None``
    or an integer array ``(*batch,)``, all validated and of one dtype.
    ``combine(o, tmp, h, b)`` sets ``o = (1 - leak) * h + leak * f(o + tmp [+ b])``
    in place; by default it is built from ``mod``'s in-place ufuncs. With
    ``bias_in_step`` the bias is left to ``combine`` instead of being added
    to the projection. With ``mkl`` (NumPy only) both products go through
    oneMKL and ``Wh`` is packed once (see the module docstring). With
    ``serial_steps`` the steps run on one BLAS thread and the projections on all.
    """
    T, D = x.shape[0], x.shape[-1]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)
    dtype = h0.dtype
    activate = _numpy_activate(mod, nonlinearity, leak)
    if combine is None:
        combine = _numpy_combine(mod, activate)
    x3 = x.reshape(T, B, D)  # (T, B, D): a view for time-major and batch_first inputs
    h0_2 = h0.reshape(B, H)  # (B, H)
    if mkl:
        h0_2 = mod.ascontiguousarray(h0_2)  # oneMKL reads rows of H contiguous values
        WxT = mod.ascontiguousarray(Wx).T  # (D, H): a view of a C-contiguous (H, D)
        packed = _mkl.step_product(Wh, B)  # Wh.T packed once for all steps (B = 1: as it is)
        threads = _mkl.StepThreads()  # oneMKL's thread count, step by step
    else:
        WxT = Wx.T  # (D, H): a transposed view, no copy
        # (H, H): for a small batch a contiguous copy makes h @ Wh.T a plain
        # no-transpose GEMM, which BLAS runs up to twice as fast. From
        # _COPY_BELOW_BATCH rows on, NumPy's BLAS runs the transposed view as fast
        # (it packs Wh either way) and the copy is saved (1.4-1.7 ms at H = 1024).
        small_batch = B < _COPY_BELOW_BATCH or mod.__name__ != "numpy"
        WhT = _transposed_copy(mod, Wh) if small_batch else Wh.T
    step_b = b if bias_in_step else None

    out, buf, blocks = time_blocks(mod, T, B, H, dtype, reverse=reverse, return_sequences=return_sequences)

    tmp = mod.empty((B, H), dtype=dtype)  # (B, H) scratch for h @ Wh.T
    if lengths is not None or not return_sequences:
        state = mod.array(h0_2, dtype=dtype, copy=True)  # (B, H), the carried state
        h = state
    else:
        state, h = None, h0_2
    if lengths is not None:
        lens = lengths.reshape(B, 1)  # (B, 1)
        valid = mod.empty((B, 1), dtype=bool)  # (B, 1)

    try:
        for s, e in blocks:
            block = buf[: e - s]  # (n, B, H)
            _project(mod, x3[s:e], WxT, None if bias_in_step else b, block, mkl)
            if mkl:  # addresses for the packed product: block is C-contiguous, h too
                block_at, step_bytes = block.ctypes.data, B * H * block.itemsize
                h_at = h.ctypes.data
            with _blas_threads(1) if serial_steps else _Null():  # the steps alone
                for t in range(e - 1, s - 1, -1) if reverse else range(s, e):
                    o = block[t - s]  # (B, H): z_t's input part, becomes h_t
                    if mkl:
                        o_at = block_at + (t - s) * step_bytes  # the address of o
                        threads.start()
                        packed.matmul_add_at(h_at, o_at)  # o += h @ Wh.T
                        activate(o, h, tmp)
                        threads.stop()
                    else:
                        mod.matmul(h, WhT, out=tmp)
                        combine(o, tmp, h, step_b)
                    if lengths is not None:
                        # Past its length a sequence keeps its state and outputs zeros.
                        mod.greater(lens, t, out=valid)
                        mod.copyto(state, o, where=valid)
                        if return_sequences:
                            mod.copyto(o, 0, where=~valid)
                    else:
                        h = o
                        if mkl:
                            h_at = o_at
            if state is not None and h is not state:  # h lives in buf, which the next block reuses
                mod.copyto(state, h)
                h = state
    finally:
        if mkl:
            threads.close()  # oneMKL's thread count as the caller had it
            packed.close()  # the pack buffer back to the shared pool

    h_last = mod.array(h, copy=True).reshape(*batch, H)  # (*batch, H), never a view of out
    if out is None:
        return None, h_last
    return out.reshape(T, *batch, H), h_last


def _block_steps(T, B, H):
    """Time steps in one block of ``return_sequences=False`` (at least one)."""
    return max(1, min(T, _BLOCK_STEPS, _BLOCK_ELEMENTS // max(B * H, 1)))


def time_blocks(mod, T, B, H, dtype, *, reverse, return_sequences):
    """``(out, buf, blocks)``: the result buffer, the projection buffer and its time blocks.

    With ``return_sequences`` ``out`` is the ``(T, B, H)`` result and the one
    block ``(0, T)`` is projected straight into it. Otherwise ``out`` is
    ``None``, ``buf`` holds at most ``_BLOCK_STEPS`` steps (and one at least),
    and ``blocks`` yields ``(start, end)`` pairs in the order the loop runs them.
    """
    if return_sequences:
        out = mod.empty((T, B, H), dtype=dtype)  # (T, B, H), the result
        return out, out, [(0, T)]
    Tb = _block_steps(T, B, H)
    buf = mod.empty((Tb, B, H), dtype=dtype)  # (Tb, B, H), reused for every block
    starts = range(0, T, Tb)
    # a generator: a list of T / Tb pairs would itself grow with T
    return None, buf, ((s, min(s + Tb, T)) for s in (reversed(starts) if reverse else starts))


def _transposed_copy(mod, W, tile=64):
    """A C-contiguous copy of ``W.T``, copied in square tiles.

    A plain ``ascontiguousarray(W.T)`` reads ``W`` down its columns; for
    H = 1024 float32 that stride thrashes the cache and the copy costs more
    than the faster products save over 50 steps. Tiles keep both sides in
    cache (about 5x faster at H = 1024 on a Xeon).
    """
    if mod.__name__ != "numpy" or W.shape[0] <= tile:
        return mod.ascontiguousarray(W.T)
    n, m = W.shape
    out = mod.empty((m, n), dtype=W.dtype)  # (m, n)
    for i in range(0, m, tile):
        for j in range(0, n, tile):
            out[i : i + tile, j : j + tile] = W[j : j + tile, i : i + tile].T
    return out


def _project(mod, x3, WxT, b, out, mkl=False):
    """``out = x3 @ Wx.T (+ b)``, written in place; ``x3`` ``(n, B, D)``, ``out`` ``(n, B, H)``."""
    n, B, D = x3.shape
    if mkl and x3.flags.c_contiguous and out.flags.c_contiguous:
        _mkl.gemm(x3.reshape(n * B, D), WxT.T, out.reshape(n * B, out.shape[-1]))  # one GEMM
    elif x3.flags.c_contiguous and out.flags.c_contiguous:
        mod.matmul(x3.reshape(n * B, D), WxT, out=out.reshape(n * B, out.shape[-1]))  # one GEMM
    else:
        mod.matmul(x3, WxT, out=out)  # a strided input (batch_first): one GEMM per step
    if b is not None:
        out += b


def _numpy_combine(mod, activate):
    """``combine(o, tmp, h, b)`` from in-place ufuncs: no new (B, H) array per step."""

    def combine(o, tmp, h, b):
        o += tmp
        if b is not None:
            o += b
        activate(o, h, tmp)

    return combine


def _numpy_activate(mod, nonlinearity, leak):
    """``activate(o, h, tmp)``: ``o = (1 - leak) * h + leak * f(o)`` in place; ``tmp`` is scratch."""

    def activate(o, h, tmp):
        if nonlinearity == "tanh":
            mod.tanh(o, out=o)
        else:
            mod.maximum(o, 0, out=o)  # keeps NaN, as clip(z, min=0) does
        if leak != 1.0:
            o *= leak
            mod.multiply(h, 1.0 - leak, out=tmp)  # tmp is free again here
            o += tmp

    return activate


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_CONTROLLER = None
_LOCK = threading.Lock()
_HOLDERS = 0  # calls (in any thread) inside a one-thread BLAS block right now
_LIMITER = None  # threadpoolctl's limiter of the first of them: it holds the caller's settings


class _OneBlasThread:
    """BLAS on one thread while any call of the process is inside such a block.

    BLAS thread counts are process-wide. The first block to enter saves the
    caller's settings and sets one thread; the last one to leave restores
    them. Each call saving and restoring on its own (threadpoolctl's
    ``limit``) loses the caller's settings when calls overlap: a second call
    saves the 1 that the first one set, and restores it after the first has
    restored the original. Four threads (or Dask's worker threads) calling
    the forward at once then left NumPy's and SciPy's BLAS on one thread for
    the rest of the process.
    """

    def __enter__(self):
        global _HOLDERS, _LIMITER
        with _LOCK:
            if _HOLDERS == 0:
                _LIMITER = _CONTROLLER.limit(limits=1, user_api="blas")
            _HOLDERS += 1
        return self

    def __exit__(self, *exc):
        global _HOLDERS, _LIMITER
        with _LOCK:
            _HOLDERS -= 1
            if _HOLDERS == 0:
                _LIMITER.restore_original_limits()
                _LIMITER = None
        return False


def _after_fork_in_child():
    """A forked child starts with no one-thread block open (their threads stayed in the parent).

    The parent's lock may have been held by another thread at the fork, and
    blocks open in the parent would never close in the child: a new lock, no
    holders, and the caller's thread counts back if the parent was inside a block.
    """
    global _LOCK, _HOLDERS, _LIMITER
    _LOCK = threading.Lock()
    if _HOLDERS and _LIMITER is not None:
        try:
            _LIMITER.restore_original_limits()
        except Exception:  # best effort: the child computes the same either way
            pass
    _HOLDERS, _LIMITER = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _blas_threads(limit):
    """A context that runs BLAS on one thread (``limit=1``) or leaves it as is (``None``)."""
    global _CONTROLLER
    if limit is None:
        return _Null()
    if limit != 1:
        raise ValueError(f"only a limit of 1 BLAS thread is supported; got {limit}")
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # threadpoolctl is optional
            return _Null()
        with _LOCK:
            if _CONTROLLER is None:
                _CONTROLLER = ThreadpoolController()  # scanning loaded libraries is slow: once
    return _OneBlasThread()
