"""What the in-place loops share: blocks of time steps, the input projection, a transposed copy.

The NumPy loop (``kernels.numpy``), the compiled loop (``kernels.numba_cpu``)
and both CuPy loops (``kernels.cupy_fused``, ``kernels.cupy_persistent``)
lay out their buffers the same way:

- with ``return_sequences=True`` the ``(T, B, H)`` result is allocated once
  and the input projection ``x @ Wx.T (+ b)`` of every step is written
  straight into it (``project``), then overwritten step by step with the
  states;
- with ``return_sequences=False`` there is no ``(T, B, H)`` buffer: the
  input is projected a block of time steps at a time into a buffer of at
  most ``BLOCK_STEPS`` steps and ``BLOCK_ELEMENTS`` elements (``time_blocks``),
  so memory is O(B * H) whatever T is.

The functions are written against a NumPy-like module ``mod`` (``numpy``
or ``cupy``) and never write to the caller's arrays.
"""

from __future__ import annotations

from . import mkl as mkl_library

__all__ = ["BLOCK_ELEMENTS", "BLOCK_STEPS", "block_steps", "project", "time_blocks", "transposed_copy"]

# A return_sequences=False block holds at most BLOCK_STEPS time steps and at
# most BLOCK_ELEMENTS elements (4 MiB in float32), and at least one step.
# Read at every call (tests set other sizes, odd ones included).
BLOCK_STEPS = 32
BLOCK_ELEMENTS = 1 << 20


def block_steps(T, B, H):
    """Time steps in one block of ``return_sequences=False`` (at least one)."""
    return max(1, min(T, BLOCK_STEPS, BLOCK_ELEMENTS // max(B * H, 1)))


def time_blocks(mod, T, B, H, dtype, *, reverse, return_sequences):
    """``(out, buf, blocks)``: the result buffer, the projection buffer and its time blocks.

    With ``return_sequences`` ``out`` is the ``(T, B, H)`` result and the one
    block ``(0, T)`` is projected straight into it. Otherwise ``out`` is
    ``None``, ``buf`` holds at most ``BLOCK_STEPS`` steps (and one at least),
    and ``blocks`` yields ``(start, end)`` pairs in the order the loop runs them.
    """
    if return_sequences:
        out = mod.empty((T, B, H), dtype=dtype)  # (T, B, H), the result
        return out, out, [(0, T)]
    Tb = block_steps(T, B, H)
    buf = mod.empty((Tb, B, H), dtype=dtype)  # (Tb, B, H), reused for every block
    starts = range(0, T, Tb)
    # a generator: a list of T / Tb pairs would itself grow with T
    return None, buf, ((s, min(s + Tb, T)) for s in (reversed(starts) if reverse else starts))


def project(mod, x3, WxT, b, out, mkl=False):
    """``out = x3 @ Wx.T (+ b)``, written in place; ``x3`` ``(n, B, D)``, ``out`` ``(n, B, H)``.

    With ``mkl`` (NumPy arrays, oneMKL loaded) the product is oneMKL's GEMM.
    """
    n, B, D = x3.shape
    if mkl and x3.flags.c_contiguous and out.flags.c_contiguous:
        mkl_library.gemm(x3.reshape(n * B, D), WxT.T, out.reshape(n * B, out.shape[-1]))  # one GEMM
    elif x3.flags.c_contiguous and out.flags.c_contiguous:
        mod.matmul(x3.reshape(n * B, D), WxT, out=out.reshape(n * B, out.shape[-1]))  # one GEMM
    else:
        mod.matmul(x3, WxT, out=out)  # a strided input (batch_first): one GEMM per step
    if b is not None:
        out += b


def transposed_copy(mod, W, tile=64):
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
