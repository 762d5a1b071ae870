"""The recurrence on Dask arrays: one task per batch chunk.

Sequences in a batch do not interact, so a Dask array chunked along its
batch axes splits the work into independent pieces. Each batch chunk runs
the in-memory kernel of the chunk's own library (NumPy's, or CuPy's when
the chunks hold CuPy arrays) over the whole sequence, as a single task::

    x        (T, *batch, D)   chunks: one along T, any along batch, one along D
    h0       (*batch, H)      aligned with x's batch chunks
    lengths  (*batch,)        aligned with x's batch chunks
    Wx, Wh, b                 one chunk each, one key in the graph, shared by every task
    -> h_seq (T, *batch, H), h_last (*batch, H), chunked like x along the batch

The graph therefore grows with the number of batch chunks, never with T.
A task needs the whole sequence, so an input chunked along time or
features is rechunked to one chunk along those axes, with a
``dask.array.PerformanceWarning`` that says so. NumPy weights (and ``h0``)
given with Dask inputs become single-chunk Dask arrays: one key each in the
graph, which a distributed scheduler ships to a worker once, not per task.

This module imports Dask; ``kernels.forward_kernel`` imports it only when
the caller's arrays are Dask arrays.
"""

from __future__ import annotations

import operator
import warnings

import dask.array as da
from dask.array.utils import meta_from_array

from .._checks import check_lengths, shape_str
from .._compat import device, is_cupy_namespace, is_numpy_namespace, namespace_of
from .portable import scan_portable

__all__ = ["scan_dask"]

TOKEN = "rnn_xp-forward"  # key prefix of the tasks that run the recurrence


def scan_dask(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """``scan_portable`` for Dask: lazy results, one task per batch chunk.

    ``x`` is ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, ``lengths`` ``None``
    or an integer array ``(*batch,)``; any of them (and the weights) may be
    a NumPy array instead of a Dask array. Returns ``(h_seq, h_last)`` as
    Dask arrays, ``h_seq`` ``None`` when ``return_sequences`` is False.
    """
    x = _single_chunk_along("x", _as_dask(x), {0: "time", x.ndim - 1: "features"})
    k = x.ndim - 2  # number of batch axes
    T, H = x.shape[0], Wx.shape[0]
    batch_chunks = x.chunks[1:-1]
    h0 = _single_chunk_along("h0", _as_dask(h0, (*batch_chunks, -1)), {k: "features"})
    h0 = _chunks_like(x, h0.rechunk((*batch_chunks, -1)))  # (*batch, H), aligned with x
    if lengths is not None:
        lengths = _chunks_like(x, _as_dask(lengths, batch_chunks).rechunk(batch_chunks))  # (*batch,)
    Wx, Wh, b = (None if w is None else _as_dask(w, -1).rechunk(-1) for w in (Wx, Wh, b))

    bi = tuple(f"b{i}" for i in range(k))  # one blockwise index per batch axis
    args = [
        x, ("t", *bi, "d"),
        h0, (*bi, "h"),
        Wx, ("h", "d"),
        Wh, ("h", "g"),
        b, None if b is None else ("h",),
        lengths, None if lengths is None else bi,
    ]  # fmt: skip
    options = {
        "nonlinearity": nonlinearity, "reverse": reverse, "leak": leak,
        "return_sequences": return_sequences,
    }  # fmt: skip

    if not return_sequences:
        h_last = da.blockwise(
            _forward_chunk, (*bi, "h"), *args, token=TOKEN, dtype=x.dtype,
            concatenate=True, meta=meta_from_array(x, ndim=k + 1), **options,
        )  # fmt: skip
        return None, h_last  # (*batch, H)

    # One task per batch chunk returns the pair (h_seq, h_last); two cheap
    # getitem layers expose each half as an array (dask fuses them on compute).
    pairs = da.blockwise(
        _forward_chunk, bi, *args, token=TOKEN, dtype=x.dtype, concatenate=True,
        meta=meta_from_array(x, ndim=k), **options,
    )  # fmt: skip
    h_seq = da.blockwise(
        operator.getitem, ("t", *bi, "h"), pairs, bi, 0, None, new_axes={"t": T, "h": H},
        dtype=x.dtype, meta=meta_from_array(x, ndim=k + 2),
    )  # fmt: skip  # (T, *batch, H)
    h_last = da.blockwise(
        operator.getitem, (*bi, "h"), pairs, bi, 1, None, new_axes={"h": H},
        dtype=x.dtype, meta=meta_from_array(x, ndim=k + 1),
    )  # fmt: skip  # (*batch, H)
    return h_seq, h_last


def _forward_chunk(x, h0, Wx, Wh, b, lengths, *, nonlinearity, reverse, leak, return_sequences):
    """One task: the in-memory forward pass over one batch chunk.

    Runs where the chunk lives (a worker), on the chunk's own library; it
    validates ``lengths`` values, which stay unread while the graph is built.
    """
    from . import mkl

    xp = namespace_of(x)
    T, batch = x.shape[0], tuple(x.shape[1:-1])
    lengths = check_lengths(xp, lengths, batch, T, device(x))  # the values, now that they are known
    with mkl.one_thread():  # the tasks are the parallelism (see mkl.one_thread)
        h_seq, h_last = _in_memory_kernel(xp)(
            xp, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
            reverse=reverse, leak=leak, return_sequences=return_sequences,
        )  # fmt: skip
    return (h_seq, h_last) if return_sequences else h_last


def _in_memory_kernel(xp):
    """The kernel for a chunk's library: NumPy's or CuPy's in-place loop, else the portable one."""
    if is_numpy_namespace(xp):
        from .numpy import scan_numpy

        return scan_numpy
    if is_cupy_namespace(xp):
        from .cupy import scan_cupy

        return scan_cupy
    return scan_portable


def _as_dask(a, chunks=-1):
    """``a`` as a Dask array; an in-memory array becomes one graph key (or one per chunk)."""
    if isinstance(a, da.Array):
        return a
    return da.from_array(a, chunks=chunks)


def _chunks_like(x, a):
    """``a`` with chunks of the same library as ``x``'s chunks.

    ``h0=None`` and ``lengths`` given as a list become Dask arrays of NumPy
    chunks; when ``x`` holds CuPy chunks they are moved to CuPy per chunk.
    (Arrays the caller gave on another device are refused earlier.)
    """
    if type(a._meta) is type(x._meta):
        return a
    return a.map_blocks(
        _to_library_of, like=x._meta, dtype=a.dtype,
        meta=meta_from_array(x._meta, ndim=a.ndim, dtype=a.dtype),
    )  # fmt: skip


def _to_library_of(block, like):
    return namespace_of(like).asarray(block)


def _single_chunk_along(name, a, axes):
    """``a`` with one chunk along each of ``axes`` ({axis: label}), warning if that rechunks."""
    split = {ax: label for ax, label in axes.items() if a.numblocks[ax] > 1}
    if not split:
        return a
    where = " and ".join(f"{label} (chunks {shape_str(a.chunks[ax])})" for ax, label in split.items())
    warnings.warn(
        f"{name} is chunked along {where}; each task of rnn_xp runs whole sequences, so "
        f"{name} is rechunked to a single chunk along {' and '.join(split.values())}, "
        "keeping its batch chunks. Chunk it along the batch axes only to avoid this.",
        da.PerformanceWarning,
        stacklevel=5,  # the caller of rnn_forward
    )
    return a.rechunk({ax: -1 for ax in split})
