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

When the table picks oneMKL for a call (``kernels.numpy_loop``: installed
and preferred, an Intel CPU or ``RNN_XP_MKL=1``, above a size), float32/float64
NumPy inputs run both products through it instead: ``Wh`` is packed once for
all steps (for one sequence, B = 1, the matrix-vector product reads it as it
is) and each step accumulates ``out[t] += h @ Wh.T`` in one call, so the
``tmp`` buffer and the separate add go away. oneMKL's thread count is chosen
step by step (``mkl.StepThreads``: one thread for a while after repeated stalls).

With ``return_sequences=False`` there is no ``(T, B, H)`` buffer: the input
is projected a block of time steps at a time into a buffer of at most
``_blocks.BLOCK_STEPS`` steps, so memory is O(B * H) whatever T is.

The code is written against a NumPy-like module ``mod`` (``numpy`` or
``cupy``); ``combine`` is the per-step elementwise part, which CuPy replaces
with one fused kernel (see ``kernels.cupy_fused``). The caller's arrays are never
written to (they may be read-only).
"""

from __future__ import annotations

import math

from . import mkl as mkl_library
from ._blocks import block_steps, project, time_blocks, transposed_copy
from ._threads import blas_threads

__all__ = ["scan_inplace", "scan_numpy", "wh_first"]

# Below this batch size the NumPy loop multiplies by a contiguous copy of Wh.T;
# from it on, by the transposed view (see scan_inplace).
_COPY_BELOW_BATCH = 16

# NumPy's steps can compute their product the other way round (wh_first):
# the forward Wh @ h.T into an (H, B) buffer that o adds through its
# transposed view, the backward Wh.T @ dz_t.T (a contiguous copy of Wh.T)
# likewise. NumPy's BLAS then takes the few rows as its small dimension. On
# the 2-core EPYC VM with OpenBLAS (benchmarks/bench_orientation.py,
# benchmarks/results/orientation-epyc.json) the left side was faster from
# H = 256 with 2 to 16 rows forward (up to 1.8x; B = 4, H = 512: 36 us
# against 59 us; at B = 4, H = 256, 0.86: the loop's whole time there was
# the same either way, 3.5 ms) and from H = 256 with 2 to 64 rows backward
# (up to 1.85x); with one row, at H = 128 and forward from 32 rows either
# way was faster by turns.
_WH_FIRST = {False: (256, 16), True: (256, 64)}  # (from H, at most B rows), forward and backward

# The forward's steps run on every BLAS thread from _STEP_THREADS_MACS
# multiply-adds per step (B * H * H), on one below: the same VM's NumPy loop
# took 0.61 to 0.79 of its time with one thread at 2^19 (B = 8, H = 256:
# 3.0 against 5.0 ms; B = 2, H = 512; B = 32, H = 128; B = 128, H = 64). The
# backward keeps _threads.SERIAL_MACS (2^20, measured on the Xeon VM).
_STEP_THREADS_MACS = 1 << 19


def wh_first(B, H, backward=False):
    """Whether NumPy's steps multiply with ``Wh`` on the left (``_WH_FIRST``: from H units, 2 to B rows)."""
    units, rows = _WH_FIRST[bool(backward)]
    return H >= units and 2 <= B <= rows


# When the steps run on one BLAS thread, the input projection of a block of
# time steps (one matrix product) still gets every thread from this many
# multiply-adds: with D = H = 256, B = 8, T = 200 it is 105M multiply-adds.
_PARALLEL_PROJECTION_MACS = 1 << 22


def scan_numpy(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences, mkl=False):
    """``scan_portable`` for NumPy arrays, in place (see the module docstring).

    ``mkl``: both products go through oneMKL (the table's choice,
    ``kernels.numpy_loop``), where it is loaded and the call has something
    to multiply, in float32 or float64.
    """
    import numpy

    T, D = x.shape[0], x.shape[-1]
    B = math.prod(h0.shape[:-1])
    H = h0.shape[-1]
    macs = B * H * H  # per step
    use_mkl = (mkl and mkl_library.library() is not None
               and min(T, B, H) > 0  # nothing to pack or multiply otherwise (D = 0 is fine)
               and h0.dtype in (numpy.float32, numpy.float64))  # fmt: skip
    small = macs < _STEP_THREADS_MACS and not use_mkl
    steps = T if return_sequences else block_steps(T, B, H)  # time steps projected at once
    serial_steps = small and steps * B * D * H >= _PARALLEL_PROJECTION_MACS
    with blas_threads(1 if small and not serial_steps else None):
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
    left = not mkl and mod.__name__ == "numpy" and wh_first(B, H)  # Wh @ h.T (see wh_first)
    if mkl:
        h0_2 = mod.ascontiguousarray(h0_2)  # oneMKL reads rows of H contiguous values
        WxT = mod.ascontiguousarray(Wx).T  # (D, H): a view of a C-contiguous (H, D)
        packed = mkl_library.step_product(Wh, B)  # Wh.T packed once for all steps (B = 1: as it is)
        threads = mkl_library.StepThreads()  # oneMKL's thread count, step by step
    else:
        WxT = Wx.T  # (D, H): a transposed view, no copy
        # (H, H): for a small batch a contiguous copy makes h @ Wh.T a plain
        # no-transpose GEMM, which BLAS runs up to twice as fast. From
        # _COPY_BELOW_BATCH rows on, NumPy's BLAS runs the transposed view as fast
        # (it packs Wh either way) and the copy is saved (1.4-1.7 ms at H = 1024).
        small_batch = B < _COPY_BELOW_BATCH or mod.__name__ != "numpy"
        WhT = None if left else transposed_copy(mod, Wh) if small_batch else Wh.T
    step_b = b if bias_in_step else None

    out, buf, blocks = time_blocks(mod, T, B, H, dtype, reverse=reverse, return_sequences=return_sequences)

    if left:  # tmp is the (B, H) view of an (H, B) buffer that Wh @ h.T fills
        tmp_t = mod.empty((H, B), dtype=dtype)
        tmp = tmp_t.T
    else:
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
            project(mod, x3[s:e], WxT, None if bias_in_step else b, block, mkl)
            if mkl:  # addresses for the packed product: block is C-contiguous, h too
                block_at, step_bytes = block.ctypes.data, B * H * block.itemsize
                h_at = h.ctypes.data
            with blas_threads(1 if serial_steps else None):  # the steps alone
                for t in range(e - 1, s - 1, -1) if reverse else range(s, e):
                    o = block[t - s]  # (B, H): z_t's input part, becomes h_t
                    if mkl:
                        o_at = block_at + (t - s) * step_bytes  # the address of o
                        threads.start()
                        packed.matmul_add_at(h_at, o_at)  # o += h @ Wh.T
                        activate(o, h, tmp)
                        threads.stop()
                    else:
                        if left:
                            mod.matmul(Wh, h.T, out=tmp_t)  # (h @ Wh.T).T
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
