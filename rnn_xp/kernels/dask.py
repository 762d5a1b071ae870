"""The recurrence and its gradient on Dask arrays: one task per batch chunk.

Sequences in a batch do not interact, so a Dask array chunked along its
batch axes splits the work into independent pieces. Each batch chunk runs
the in-memory kernel of the chunk's own library (NumPy's, or CuPy's when
the chunks hold CuPy arrays) over the whole sequence, as a single task: the
kernel the table of ``kernels/__init__.py`` picks for that library, given
as ``chunk_kernel`` (``kernels.forward_kernel``, ``kernels.backward_kernel``)::

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

The backward pass has the same shape. Each batch chunk runs the in-memory
backward of its library (NumPy's on NumPy chunks, the portable one on CuPy
chunks) over the whole sequence, as one task that returns the chunk's
``dx``, ``dh0`` and its share of the weight gradients::

    dh, x, h_seq   (T, *batch, H|D)  one chunk along T and features, batch chunks aligned
    h0, dh_n       (*batch, H)       aligned with the batch chunks
    -> dx (T, *batch, D), dh0 (*batch, H), chunked like the inputs along the batch
    -> dWx (H, D), dWh (H, H), db (H,): one chunk each, the chunks' shares added
       up by a tree of tasks

The tree adds the shares of ``split_every`` consecutive chunks at a time
(Dask's ``split_every`` setting, 4 by default), left to right in the order
of the batch chunks (C order over several batch axes), then the sums of
those groups the same way until one is left. The order is fixed by the
graph, not by the scheduler, so the weight gradients are the same bits on
every scheduler; they differ from the in-memory backward of the whole batch
only by the rounding of that order of additions. Graph size: one task per
batch chunk, three ``getitem`` tasks per chunk, the tree's tasks (about one
per ``split_every - 1`` chunks) and three more, whatever T is.

This module imports Dask; the table imports it only when the caller's
arrays are Dask arrays.
"""

from __future__ import annotations

import operator
import warnings
from numbers import Integral

import dask
import dask.array as da
from dask.array.utils import meta_from_array
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from .._checks import check_lengths, shape_str
from .._compat import device, namespace_of, outside_stacklevel
__all__ = ["backward_dask", "scan_dask", "split_every", "tree_sum"]

TOKEN = "rnn_xp-forward"  # key prefix of the tasks that run the recurrence
BACKWARD_TOKEN = "rnn_xp-backward"  # key prefix of the tasks that run the backward pass
SUM_TOKEN = "rnn_xp-grad-sum"  # key prefix of the tree that adds the chunks' weight gradients


def scan_dask(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences, chunk_kernel):
    """``scan_portable`` for Dask: lazy results, one task per batch chunk.

    ``x`` is ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, ``lengths`` ``None``
    or an integer array ``(*batch,)``; any of them (and the weights) may be
    a NumPy array instead of a Dask array. Returns ``(h_seq, h_last)`` as
    Dask arrays, ``h_seq`` ``None`` when ``return_sequences`` is False.
    ``chunk_kernel(chunk_namespace)`` is the forward kernel a task runs on its chunk.
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
        "return_sequences": return_sequences, "chunk_kernel": chunk_kernel,
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


def _forward_chunk(x, h0, Wx, Wh, b, lengths, *, nonlinearity, reverse, leak, return_sequences, chunk_kernel):
    """One task: the in-memory forward pass over one batch chunk.

    Runs where the chunk lives (a worker), on the chunk's own library's
    kernel (``chunk_kernel(namespace)``: for NumPy chunks the one
    ``rnn_forward`` takes for NumPy arrays, so a chunk's states are the bits
    ``rnn_forward`` gives for that chunk alone); it validates ``lengths``
    values, which stay unread while the graph is built.
    """
    from . import mkl

    xp = namespace_of(x)
    T, batch = x.shape[0], tuple(x.shape[1:-1])
    lengths = check_lengths(xp, lengths, batch, T, device(x))  # the values, now that they are known
    with mkl.one_thread():  # the tasks are the parallelism (see mkl.one_thread)
        h_seq, h_last = chunk_kernel(xp)(
            xp, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
            reverse=reverse, leak=leak, return_sequences=return_sequences,
        )  # fmt: skip
    return (h_seq, h_last) if return_sequences else h_last


# -- the backward pass ---------------------------------------------------------


def backward_dask(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak, chunk_kernel):
    """``backward_portable`` for Dask: lazy results, one task per batch chunk.

    ``dh`` (or ``None``) and ``h_seq`` are ``(T, *batch, H)``, ``x``
    ``(T, *batch, D)``, ``h0`` and ``dh_n`` (or ``None``) ``(*batch, H)``,
    ``lengths`` ``None`` or an integer array ``(*batch,)``; any of them (and
    the weights) may be a NumPy array instead of a Dask array. The batch
    chunks are those of ``x`` (else of ``h_seq``, ``dh``, ``h0`` or
    ``dh_n``, the first that is a Dask array); the other arrays are
    rechunked to them. Returns ``(dx, dh0, dWx, dWh, db)`` as Dask arrays:
    ``dx`` and ``dh0`` chunked like ``x`` along the batch, the weight
    gradients one chunk each (see the module docstring for the order of
    their sums). ``chunk_kernel(chunk_namespace)`` is the backward kernel a
    task runs on its chunk.
    """
    k = x.ndim - 2  # number of batch axes
    T, D, H = x.shape[0], x.shape[-1], Wx.shape[0]
    batch_chunks = _batch_chunks(x, h_seq, dh, h0, dh_n)
    seq = {}
    for name, a in (("x", x), ("h_seq", h_seq), ("dh", dh)):
        if a is not None:
            a = _as_dask(a, (-1, *batch_chunks, -1))
            a = _single_chunk_along(name, a, {0: "time", k + 1: "features"})
            seq[name] = a.rechunk((-1, *batch_chunks, -1))
    x = seq["x"]
    h_seq, dh = (None if n not in seq else _chunks_like(x, seq[n]) for n in ("h_seq", "dh"))
    h0, dh_n = (
        None if a is None else _chunks_like(x, _single_chunk_along(
            name, _as_dask(a, (*batch_chunks, -1)), {k: "features"},
        ).rechunk((*batch_chunks, -1)))
        for name, a in (("h0", h0), ("dh_n", dh_n))
    )  # fmt: skip
    if lengths is not None:
        lengths = _chunks_like(x, _as_dask(lengths, batch_chunks).rechunk(batch_chunks))  # (*batch,)
    Wx, Wh = (_as_dask(w, -1).rechunk(-1) for w in (Wx, Wh))

    bi = tuple(f"b{i}" for i in range(k))  # one blockwise index per batch axis
    args = [
        dh, None if dh is None else ("t", *bi, "h"),
        x, ("t", *bi, "d"),
        h0, (*bi, "h"),
        Wx, ("h", "d"),
        Wh, ("h", "g"),
        h_seq, ("t", *bi, "h"),
        dh_n, None if dh_n is None else (*bi, "h"),
        lengths, None if lengths is None else bi,
    ]  # fmt: skip
    # One task per batch chunk returns (dx, dh0, (dWx, dWh, db)) for its chunk.
    parts = da.blockwise(
        _backward_chunk, bi, *args, token=BACKWARD_TOKEN, dtype=x.dtype, concatenate=True,
        meta=meta_from_array(x, ndim=k), nonlinearity=nonlinearity, reverse=reverse, leak=leak,
        chunk_kernel=chunk_kernel,
    )  # fmt: skip
    dx = da.blockwise(
        operator.getitem, ("t", *bi, "d"), parts, bi, 0, None, new_axes={"t": T, "d": D},
        dtype=x.dtype, meta=meta_from_array(x, ndim=k + 2),
    )  # fmt: skip  # (T, *batch, D)
    dh0 = da.blockwise(
        operator.getitem, (*bi, "h"), parts, bi, 1, None, new_axes={"h": H},
        dtype=x.dtype, meta=meta_from_array(x, ndim=k + 1),
    )  # fmt: skip  # (*batch, H)
    dWx, dWh, db = _sum_over_chunks(parts, {"dWx": (H, D), "dWh": (H, H), "db": (H,)}, x)
    return dx, dh0, dWx, dWh, db


def _backward_chunk(dh, x, h0, Wx, Wh, h_seq, dh_n, lengths, *, nonlinearity, reverse, leak, chunk_kernel):
    """One task: the in-memory backward pass over one batch chunk.

    Returns ``(dx, dh0, (dWx, dWh, db))`` of the chunk; like
    ``_forward_chunk`` it checks the chunk's ``lengths`` values.
    """
    xp = namespace_of(x)
    T, batch = x.shape[0], tuple(x.shape[1:-1])
    lengths = check_lengths(xp, lengths, batch, T, device(x))  # the values, now that they are known
    dx, dh0, dWx, dWh, db = chunk_kernel(xp)(
        xp, dh, x, h0, Wx, Wh, h_seq, dh_n, nonlinearity=nonlinearity, lengths=lengths,
        reverse=reverse, leak=leak,
    )  # fmt: skip
    return dx, dh0, (dWx, dWh, db)


def _batch_chunks(x, h_seq, dh, h0, dh_n):
    """The batch chunks of the backward: those of the first Dask array among the arguments."""
    for a in (x, h_seq, dh):
        if isinstance(a, da.Array):
            return a.chunks[1:-1]
    for a in (h0, dh_n):
        if isinstance(a, da.Array):
            return a.chunks[:-1]
    return tuple((n,) for n in x.shape[1:-1])  # only weights are Dask arrays: one chunk


def split_every():
    """How many values one task of a sum tree adds: Dask's ``split_every`` setting, else 4."""
    value = dask.config.get("split_every", None)
    if isinstance(value, Integral) and not isinstance(value, bool) and value >= 2:
        return int(value)
    return 4  # Dask's own default for its reductions


def tree_sum(keys, name, every=None):
    """Graph entries that add up the values at ``keys`` in a fixed order.

    Each task adds ``every`` (default ``split_every()``) consecutive values of
    the level below, left to right (``((v0 + v1) + v2) + v3``), until one is
    left; a value is an array, a number, or tuples and dicts of them (added
    entry by entry; ``None`` entries stay ``None``). Returns ``(dsk, root)``:
    a dict of new tasks named ``(name, level, j)`` and the key of the sum
    (``keys[0]`` itself when there is one key). The order depends only on
    ``keys`` and ``every``, so the sum is the same bits on every scheduler.
    """
    every = split_every() if every is None else every
    level, dsk, depth = list(keys), {}, 0
    while len(level) > 1:
        depth += 1
        groups = [level[j:j + every] for j in range(0, len(level), every)]
        level = []
        for j, group in enumerate(groups):
            dsk[(name, depth, j)] = (_add_in_order, *group)
            level.append((name, depth, j))
    return dsk, level[0]


def _sum_over_chunks(parts, shapes, like):
    """The chunks' weight gradients as Dask arrays, added up by ``tree_sum``.

    ``parts`` has one block per batch chunk, each ``(dx, dh0, grads)``;
    ``shapes`` maps the name of each array of ``grads`` to its shape. Level 0
    takes ``grads`` out of every block (on the worker that holds it), in C
    order over the batch chunks. Returns one single-chunk Dask array per
    entry of ``shapes``.
    """
    every = split_every()
    token = tokenize(parts.name, every)
    tree = f"{SUM_TOKEN}-{token}"
    dsk, level = {}, []
    for i, key in enumerate(flatten(parts.__dask_keys__())):  # C order over the batch chunks
        dsk[(tree, 0, i)] = (operator.getitem, key, 2)
        level.append((tree, 0, i))
    sums, root = tree_sum(level, tree, every)
    dsk.update(sums)

    graph = parts.__dask_graph__()
    layers = {**graph.layers, tree: MaterializedLayer(dsk)}
    dependencies = {**graph.dependencies, tree: {parts.name}}
    out = []
    for i, (label, shape) in enumerate(shapes.items()):
        name = f"rnn_xp-{label}-{token}"  # one task: entry i of the root's tuple
        layer = MaterializedLayer({(name, *(0,) * len(shape)): (operator.getitem, root, i)})
        out.append(da.Array(
            HighLevelGraph({**layers, name: layer}, {**dependencies, name: {tree}}), name,
            chunks=tuple((n,) for n in shape), dtype=like.dtype,
            meta=meta_from_array(like, ndim=len(shape)),
        ))  # fmt: skip
    return out


def _add_in_order(*values):
    """``((v0 + v1) + v2) + ...``, entry by entry through tuples and dicts."""
    total = values[0]
    for v in values[1:]:
        total = _add(total, v)
    return total


def _add(a, b):
    if a is None:  # an entry that is None in every value (a gradient not asked for)
        return None
    if isinstance(a, tuple):
        return tuple(_add(u, v) for u, v in zip(a, b))
    if isinstance(a, dict):
        return {k: _add(u, b[k]) for k, u in a.items()}
    return a + b


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
    """``a`` with one chunk along each of ``axes`` ({axis: label}), warning if that rechunks.

    The warning points at the first caller outside rnn_xp (``outside_stacklevel``).
    """
    split = {ax: label for ax, label in axes.items() if a.numblocks[ax] > 1}
    if not split:
        return a
    where = " and ".join(f"{label} (chunks {shape_str(a.chunks[ax])})" for ax, label in split.items())
    warnings.warn(
        f"{name} is chunked along {where}; each task of rnn_xp runs whole sequences, so "
        f"{name} is rechunked to a single chunk along {' and '.join(split.values())}, "
        "keeping its batch chunks. Chunk it along the batch axes only to avoid this.",
        da.PerformanceWarning,
        stacklevel=outside_stacklevel(),
    )
    return a.rechunk({ax: -1 for ax in split})


# -- any cell ------------------------------------------------------------------


def scan_cell_dask(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None, chunk_scan):
    """``portable.scan_cell`` for Dask: any cell, lazy results, one task per batch chunk.

    ``x`` ``(T, *batch, D)``; ``state0`` a tuple of the state's parts
    ``(*batch, S_k)``; ``w`` the cell's ``Weights``; ``lengths`` ``None`` or
    ``(*batch,)`` integers; ``mask`` ``None`` or time-major ``(T, *batch)``
    booleans. Any of them may be an in-memory array instead of a Dask array.
    Each task runs ``chunk_scan`` (``kernels.scan``: the kernel the table
    picks for the chunk's library and the cell) over its batch chunk and
    the whole sequence. Returns ``(seqs, finals)`` as ``scan_cell`` does,
    every array a Dask array chunked like ``x`` along the batch.
    """
    x = _single_chunk_along("x", _as_dask(x), {0: "time", x.ndim - 1: "features"})
    k = x.ndim - 2  # number of batch axes
    T = x.shape[0]
    state0 = tuple(_state_like(x, f"{n}0", s) for n, s in zip(cell.state_names, state0))
    lengths, mask = _lengths_like(x, lengths), _mask_like(x, mask)
    w = type(w)(*(None if a is None else _as_dask(a, -1).rechunk(-1) for a in w))

    bi = tuple(f"b{i}" for i in range(k))  # one blockwise index per batch axis
    args = _cell_args(x, bi, lengths, mask, [(s, (*bi, f"s{j}")) for j, s in enumerate(state0)], w)
    options = {"cell": cell, "parts": len(state0), "reverse": reverse,
               "return_sequences": return_sequences, "chunk_scan": chunk_scan}  # fmt: skip
    # One task per batch chunk returns (seqs, finals) (finals alone without sequences);
    # getitem tasks expose each part as an array (dask fuses them on compute).
    results = da.blockwise(
        _cells_forward_chunk, bi, *args, token=TOKEN, dtype=x.dtype, concatenate=True,
        meta=meta_from_array(x, ndim=k), **options,
    )  # fmt: skip
    sizes = [s.shape[-1] for s in state0]
    path = (1,) if return_sequences else ()
    finals = tuple(_part(results, bi, x, (*path, j), (), S) for j, S in enumerate(sizes))  # (*batch, S_j)
    if not return_sequences:
        return None, finals
    seqs = tuple(_part(results, bi, x, (0, j), (("t", T),), S) for j, S in enumerate(sizes))  # (T, *batch, S_j)
    return seqs, finals


def _cells_forward_chunk(x, lengths, mask, *arrays, cell, parts, reverse, return_sequences, chunk_scan):
    """One task: ``chunk_scan`` over one batch chunk (as ``_forward_chunk``, for any cell)."""
    from . import mkl

    xp = namespace_of(x)
    T, batch = x.shape[0], tuple(x.shape[1:-1])
    lengths = check_lengths(xp, lengths, batch, T, device(x))  # the values, now that they are known
    state0, w = tuple(arrays[:parts]), cell.Weights(*arrays[parts:])
    with mkl.one_thread():  # the tasks are the parallelism (see mkl.one_thread)
        seqs, finals = chunk_scan(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                                  return_sequences=return_sequences, mask=mask)  # fmt: skip
    return (seqs, finals) if return_sequences else finals


def backward_cell_dask(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None,
                       chunk_backward):  # fmt: skip
    """``portable.backward_cell`` for Dask: any cell, lazy results, one task per batch chunk.

    The arguments are ``backward_cell``'s (``d_out`` an array, ``None`` or a
    tuple per part of the state; ``None`` entries for gradients that are
    zero), any of them in memory or Dask arrays, aligned to the batch chunks
    of the first Dask array among ``x``, ``seqs``, ``d_out``, ``state0`` and
    ``d_finals``. Each task runs ``chunk_backward`` (``kernels.backward``)
    over its batch chunk and returns its ``dx``, ``dstate0`` and share of
    the weight gradients, which ``tree_sum`` adds in a fixed order (see the
    module docstring). Returns ``(dx, dstate0, dw)`` as ``backward_cell``
    does, with ``None`` in ``dw`` for each weight that is ``None``.
    """
    from .portable import per_part

    k = x.ndim - 2  # number of batch axes
    parts = len(state0)
    d_seqs = per_part(d_out, parts)
    T, D = x.shape[0], x.shape[-1]
    batch_chunks = _first_batch_chunks([x, *seqs, *d_seqs], [*state0, *d_finals], x.shape[1:-1])
    names = cell.state_names

    def sequence(name, a):  # (T, *batch, F), one chunk along time and features
        if a is None:
            return None
        a = _single_chunk_along(name, _as_dask(a, (-1, *batch_chunks, -1)), {0: "time", k + 1: "features"})
        return a.rechunk((-1, *batch_chunks, -1))

    x = sequence("x", x)
    seqs = tuple(_chunks_like(x, sequence(f"{n}_seq", q)) for n, q in zip(names, seqs))
    d_seqs = tuple(None if q is None else _chunks_like(x, sequence(f"d{n}", q)) for n, q in zip(names, d_seqs))
    state0 = tuple(_state_like(x, f"{n}0", s) for n, s in zip(names, state0))
    d_finals = tuple(None if q is None else _state_like(x, f"d{n}_n", q) for n, q in zip(names, d_finals))
    lengths, mask = _lengths_like(x, lengths), _mask_like(x, mask)
    w = type(w)(*(None if a is None else _as_dask(a, -1).rechunk(-1) for a in w))

    bi = tuple(f"b{i}" for i in range(k))
    per_batch = [(s, (*bi, f"s{j}")) for j, s in enumerate(state0)]
    per_batch += [(q, ("t", *bi, f"s{j}")) for j, q in enumerate(seqs)]
    per_batch += [(q, None if q is None else ("t", *bi, f"s{j}")) for j, q in enumerate(d_seqs)]
    per_batch += [(q, None if q is None else (*bi, f"s{j}")) for j, q in enumerate(d_finals)]
    args = _cell_args(x, bi, lengths, mask, per_batch, w)
    # One task per batch chunk returns (dx, dstate0, grads): grads the gradients of the
    # weights that are not None, in the order of the cell's Weights.
    results = da.blockwise(
        _cells_backward_chunk, bi, *args, token=BACKWARD_TOKEN, dtype=x.dtype, concatenate=True,
        meta=meta_from_array(x, ndim=k), cell=cell, parts=parts, reverse=reverse,
        chunk_backward=chunk_backward,
    )  # fmt: skip
    dx = _part(results, bi, x, (0,), (("t", T),), D)  # (T, *batch, D)
    dstate0 = tuple(_part(results, bi, x, (1, j), (), s.shape[-1]) for j, s in enumerate(state0))
    given = {f"d{name}": a.shape for name, a in zip(w._fields, w) if a is not None}
    sums = iter(_sum_over_chunks(results, given, x))
    dw = type(w)(*(None if a is None else next(sums) for a in w))
    return dx, dstate0, dw


def _cells_backward_chunk(x, lengths, mask, *arrays, cell, parts, reverse, chunk_backward):
    """One task: ``chunk_backward`` over one batch chunk; ``(dx, dstate0, grads)`` (see ``backward_cell_dask``)."""
    xp = namespace_of(x)
    T, batch = x.shape[0], tuple(x.shape[1:-1])
    lengths = check_lengths(xp, lengths, batch, T, device(x))  # the values, now that they are known
    state0, seqs, d_seqs, d_finals = (tuple(arrays[i * parts:(i + 1) * parts]) for i in range(4))
    w = cell.Weights(*arrays[4 * parts:])
    dx, dstate0, dw = chunk_backward(xp, cell, d_seqs, x, state0, w, seqs, d_finals, lengths=lengths,
                                     reverse=reverse, mask=mask)  # fmt: skip
    return dx, tuple(dstate0), tuple(g for g, a in zip(dw, w) if a is not None)


def _cell_args(x, bi, lengths, mask, per_batch, w):
    """``blockwise``'s arguments of the cells' tasks: x, lengths, mask, the per-batch arrays, the weights."""
    args = [
        x, ("t", *bi, "d"),
        lengths, None if lengths is None else bi,
        mask, None if mask is None else ("t", *bi),
    ]  # fmt: skip
    for a, index in per_batch:
        args += [a, index]
    for j, a in enumerate(w):  # each weight one chunk, its own indices
        args += [a, None if a is None else tuple(f"w{j}_{i}" for i in range(a.ndim))]
    return args


def _part(results, bi, x, path, leading, size):
    """The array at ``path`` in every task's result: ``(*leading, *batch, size)``, chunked like ``x``."""
    names = tuple(n for n, _ in leading)
    steps = [a for i in path for a in (i, None)]  # each index a literal argument
    return da.blockwise(
        _pick, (*names, *bi, "f"), results, bi, *steps, new_axes={**dict(leading), "f": size},
        dtype=x.dtype, meta=meta_from_array(x, ndim=len(names) + len(bi) + 1),
    )  # fmt: skip


def _pick(value, *path):
    for i in path:
        value = value[i]
    return value


def _state_like(x, name, s):
    """A state part ``(*batch, S)`` as a Dask array with x's batch chunks and chunk library, one chunk along S."""
    k = x.ndim - 2
    batch_chunks = x.chunks[1:-1]
    s = _single_chunk_along(name, _as_dask(s, (*batch_chunks, -1)), {k: "features"})
    return _chunks_like(x, s.rechunk((*batch_chunks, -1)))


def _lengths_like(x, lengths):
    if lengths is None:
        return None
    batch_chunks = x.chunks[1:-1]
    return _chunks_like(x, _as_dask(lengths, batch_chunks).rechunk(batch_chunks))  # (*batch,)


def _mask_like(x, mask):
    """The time-major mask ``(T, *batch)`` with x's batch chunks, one chunk along time."""
    if mask is None:
        return None
    batch_chunks = x.chunks[1:-1]
    mask = _single_chunk_along("mask", _as_dask(mask, (-1, *batch_chunks)), {0: "time"})
    return _chunks_like(x, mask.rechunk((-1, *batch_chunks)))


def _first_batch_chunks(sequences, states, batch):
    """The batch chunks of the first Dask array among ``sequences`` ``(T, *batch, F)``, then ``states``."""
    for a in sequences:
        if isinstance(a, da.Array):
            return a.chunks[1:-1]
    for a in states:
        if isinstance(a, da.Array):
            return a.chunks[:-1]
    return tuple((n,) for n in batch)  # only weights are Dask arrays: one chunk
