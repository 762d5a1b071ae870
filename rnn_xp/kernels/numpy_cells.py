"""Any plain cell's recurrence and its gradient as in-place loops, for NumPy.

The portable loops (``portable.scan_cell``, ``portable.backward_cell``)
allocate the step's arrays anew, concatenate the gate blocks and stack the
steps at the end. Here the buffers are allocated once and each step writes
into them; the arithmetic is the cell's own (``cell.pointwise`` and
``cell.pointwise_backward``, which the portable loops run too), so the two
agree to rounding.

Forward, per block of time steps (``_blocks.block_steps``: at most 32 steps and 1M elements)::

    xg[:] = x[block] @ W_in.T + b_in            # (n, B, G*H): one GEMM for the block (cell.input_weights)
    per step t:
        matmul(h, W_hh.T, out=hg); hg += b      # (B, G*H): the recurrent product, one BLAS call
        new = cell.pointwise(ops, xg[t] blocks, hg blocks, carried state)
        out[k][t] = new[k]                      # (B, S_k) each (an LSTM's h: new[0] @ W_hr.T, in place)

The states are views of the outputs (no copy) unless ``lengths`` freeze
some rows or there are no outputs (``return_sequences=False``). Beyond the
outputs, memory is O(B * G * H) whatever T is: one block's projection
buffer, reused for every block.

Backward: the states each step started from and ``cell.saved`` for all steps
(``saved_steps``: from the products a compiled forward kept, or the gates
recomputed with two GEMMs; then in blocks of steps), one reverse loop writing each
step's gate gradients into a ``(T, B, G*H)`` buffer (``cell.pointwise_backward``
and one ``matmul(out=)`` into the gradient reaching ``h``), then ``cell.grads``:
the weight gradients, one product each over all steps.

These loops take the plain cells (``cell.plain``: the default activations,
no clip, an LSTM without ``input_forget``; an LSTM's projection and
peepholes are taken) and no ``mask``; anything else, and calls with a size
of zero, run the portable loops (``runs`` says which). The caller's arrays
are never written to.
"""

from __future__ import annotations

import math

import numpy

from ..cells import split_gates
from ..cells._base import rows_matmul
from . import _pages, _threads
from ._blocks import block_steps, project, transposed_copy
from ._threads import blas_threads
from .portable import backward_cell, padding_mask, per_part, previous_states, scan_cell

__all__ = ["SAVED_BLOCKS_FROM", "SAVED_ELEMENTS", "backward_cells_numpy", "kept_products", "runs", "saved_steps",
           "scan_cells_numpy"]

# Below this batch size the step multiplies by a contiguous copy of W_hh.T
# (a no-transpose GEMM, faster for few rows); from it on by the transposed view.
_COPY_BELOW_BATCH = 16


def runs(cell, x, state0, mask):
    """Whether the in-place (and compiled) loops take this call: a plain cell with a ``pointwise`` step
    (``cells``' protocol for the fast loops), no mask, no size of zero."""
    B = math.prod(state0[0].shape[:-1])
    return (cell.plain and getattr(cell, "pointwise", None) is not None and mask is None
            and min(x.shape[0], B, *(s.shape[-1] for s in state0)) > 0)  # fmt: skip


def scan_cells_numpy(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None):
    """``portable.scan_cell`` for NumPy arrays, in place (see the module docstring)."""
    if not runs(cell, x, state0, mask):
        return scan_cell(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                         return_sequences=return_sequences, mask=mask)  # fmt: skip
    T, D = x.shape[0], x.shape[-1]
    batch = tuple(state0[0].shape[:-1])
    B = math.prod(batch)
    G = cell.gates
    GH = w.W_hh.shape[0]  # G * H
    sizes = tuple(s.shape[-1] for s in state0)
    dtype = state0[0].dtype
    with blas_threads(1 if B * sizes[0] * GH < _threads.SERIAL_MACS else None):
        return _scan(cell, x.reshape(T, B, D), [s.reshape(B, S) for s, S in zip(state0, sizes)], w,
                     lengths, reverse, return_sequences, batch, G, GH, sizes, dtype)  # fmt: skip


def _scan(cell, x3, state0, w, lengths, reverse, return_sequences, batch, G, GH, sizes, dtype):
    T, B = x3.shape[0], x3.shape[1]
    ops = cell.ops(numpy)
    W_hhT = transposed_copy(numpy, w.W_hh) if B < _COPY_BELOW_BATCH else w.W_hh.T  # (P, G*H)
    W_p = cell.projection(w)  # an LSTM's W_hr (P, H), or None
    W_pT = None if W_p is None else numpy.ascontiguousarray(W_p.T)  # (H, P)
    bias = cell.recurrent_bias(w)
    extras = cell.extras(w)
    carried = cell.carried

    outs = [numpy.empty((T, B, S), dtype=dtype) for S in sizes] if return_sequences else None
    frozen = lengths is not None
    own = frozen or not return_sequences  # the state lives in buffers of its own, not in outs
    state = [numpy.array(s, dtype=dtype, copy=True) if own else s for s in state0]  # each (B, S_k)
    hg = numpy.empty((B, GH), dtype=dtype)  # (B, G*H): h @ W_hh.T (+ b)
    if frozen:
        lens = numpy.asarray(lengths).reshape(B, 1)  # (B, 1)
        valid = numpy.empty((B, 1), dtype=bool)
    n = block_steps(T, B, GH)  # the projection a block of steps at a time: O(B * G * H) memory whatever T is
    W_in, b_in = cell.input_weights(w)  # the cell's projection is x @ W_in.T + b_in
    xgs = numpy.empty((n, B, GH), dtype=dtype)  # (n, B, G*H): a block's projection, reused for every block
    starts = range(0, T, n)
    for s in reversed(starts) if reverse else starts:
        e = min(s + n, T)
        xg = xgs[: e - s]
        project(numpy, x3[s:e], W_in.T, b_in, xg)  # (e - s, B, G*H): one GEMM for the block, the bias in place
        for t in range(e - 1, s - 1, -1) if reverse else range(s, e):
            numpy.matmul(state[0], W_hhT, out=hg)
            if bias is not None:
                hg += bias
            new = cell.pointwise(ops, split_gates(xg[t - s], G), split_gates(hg, G),
                                 tuple(state[k] for k in carried), *extras)  # fmt: skip
            if frozen:
                numpy.greater(lens, t, out=valid)  # past its length a row keeps its state, outputs 0
            for k, v in enumerate(new):
                if not own:  # the outputs are the states: write step t's and read them there next
                    if k == 0 and W_pT is not None:
                        numpy.matmul(v, W_pT, out=outs[0][t])  # h_t = m_t @ W_hr.T
                    else:
                        numpy.copyto(outs[k][t], v)
                    state[k] = outs[k][t]
                    continue
                if k == 0 and W_pT is not None:
                    v = v @ W_pT
                if outs is not None:
                    numpy.copyto(outs[k][t], v)
                    if frozen:
                        numpy.copyto(outs[k][t], 0, where=~valid)
                numpy.copyto(state[k], v, where=valid) if frozen else numpy.copyto(state[k], v)
        del new
    finals = tuple(numpy.array(s, copy=True).reshape(*batch, S) for s, S in zip(state, sizes))
    if outs is None:
        return None, finals
    return tuple(o.reshape(T, *batch, S) for o, S in zip(outs, sizes)), finals


def backward_cells_numpy(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None, kept=None):
    """``portable.backward_cell`` for NumPy arrays, one in-place reverse loop (see the module docstring).

    ``kept``: the products a compiled forward of this call kept
    (``numba_cells.scan_cells_numba(..., keep=True)``), or ``None``.
    """
    if not runs(cell, x, state0, mask):
        return backward_cell(xp, cell, d_out, x, state0, w, seqs, d_finals, lengths=lengths, reverse=reverse,
                             mask=mask)  # fmt: skip
    T = x.shape[0]
    batch = tuple(state0[0].shape[:-1])
    B = math.prod(batch)
    GH = w.W_hh.shape[0]
    P = state0[0].shape[-1]
    with blas_threads(1 if B * P * GH < _threads.SERIAL_MACS else None):
        return _backward(cell, per_part(d_out, len(state0)), x, state0, w, seqs, d_finals, lengths, reverse,
                         T, batch, B, kept_products(kept, x, state0, w))  # fmt: skip


def kept_products(kept, x, state0, w):
    """``kept`` if it holds ``cell.saved``'s products for this call (two ``(T, *batch, G*H)`` arrays of its
    dtype), else ``None``: the backward may run in another dtype than the forward (a float64 ``d_output``
    for a float32 forward), and then ``cell.saved`` makes the products again."""
    if kept is None or len(kept) != 2:
        return None
    shape = (x.shape[0], *state0[0].shape[:-1], w.W_hh.shape[0])
    ok = all(isinstance(k, numpy.ndarray) and k.shape == shape and k.dtype == state0[0].dtype for k in kept)
    return tuple(kept) if ok else None


# From SAVED_BLOCKS_FROM gate values over all steps (T x rows x G*H), the
# backward's cell.saved runs over blocks of steps of at most SAVED_ELEMENTS
# gate values each, into one buffer for all its arrays: its activations'
# temporaries stay small (the heap NumPy's allocator holds takes them again)
# and the buffer is large enough for NumPy to ask Linux for huge pages (from
# 4 MiB). On the 2-core VM the first touch of a 4 KiB page costs about 1.6
# us, as long as writing 6 KB: an LSTM's saved for all steps at once at (B,
# T, D, H) = (32, 100, 128, 256) took 18 ms with 6,368 page faults, in blocks
# 8.5 to 9.7 ms with 625 (the same numbers bit for bit); its layer forward +
# backward 73 against 87 ms. At (16, 100, 64, 128) (0.8 M gate values) the
# blocks' buffer of 9 MB was the one allocation that faulted every call (24.9
# against 11.5 ms), so smaller calls take saved in one call.
SAVED_ELEMENTS = 1 << 18
SAVED_BLOCKS_FROM = 1 << 21


def saved_steps(cell, x, prev, seqs, w, products):
    """``cell.saved(numpy, x, prev, seqs, w, cell.fixed(numpy, w), from_outputs=True, products=products)``,
    from ``SAVED_BLOCKS_FROM`` gate values over blocks of steps (``SAVED_ELEMENTS``): the same arrays (each
    ``(T, *batch, .)``) as views of one buffer.

    Without ``products`` both are made first for all steps at once (two GEMMs:
    ``cell.project`` and ``h_{t-1} @ W_hh.T`` plus ``cell.recurrent_bias``).
    """
    T = x.shape[0]
    fixed = cell.fixed(numpy, w)
    step = math.prod(x.shape[1:-1]) * w.W_hh.shape[0]  # gate values per step
    n = max(1, SAVED_ELEMENTS // max(step, 1))
    if n >= T or T * step < SAVED_BLOCKS_FROM:
        return cell.saved(numpy, x, prev, seqs, w, fixed, from_outputs=True, products=products)
    if products is None:
        hg = rows_matmul(numpy, prev[0], w.W_hh.T)  # (T, *batch, G*H)
        bias = cell.recurrent_bias(w)
        products = (cell.project(numpy, x, w), hg if bias is None else hg + bias)
    out = None
    for s in range(0, T, n):
        e = min(s + n, T)
        part = cell.saved(numpy, x[s:e], tuple(p[s:e] for p in prev), tuple(q[s:e] for q in seqs), w, fixed,
                          from_outputs=True, products=tuple(k[s:e] for k in products))  # fmt: skip
        if out is None:
            shapes = {(p.shape[1:], p.dtype) for p in part}
            if len(shapes) == 1:
                out = tuple(_pages.empty((len(part), T, *part[0].shape[1:]), part[0].dtype))
            else:
                out = tuple(_pages.empty((T, *p.shape[1:]), p.dtype) for p in part)
        for o, p in zip(out, part):
            o[s:e] = p
    return out


def states_before(xp, seqs, state0, lengths, reverse):
    """``(prev, valid)``: each part's state before every step ``(T, *batch, S_k)``, zero past the
    lengths, and ``(T, *batch, 1)`` booleans marking the steps within them (``None`` without lengths)."""
    prev = tuple(previous_states(xp, q, s0, lengths, reverse=reverse) for q, s0 in zip(seqs, state0))
    valid = None if lengths is None else padding_mask(xp, lengths, seqs[0].shape[0])  # (T, *batch, 1)
    if valid is not None:  # padding reaches no gradient: no NaN there to meet a zero
        prev = tuple(xp.where(valid, p, xp.zeros_like(p)) for p in prev)
    return prev, valid


def _backward(cell, d_seqs, x, state0, w, seqs, d_finals, lengths, reverse, T, batch, B, kept):
    dtype = state0[0].dtype
    GH = w.W_hh.shape[0]
    ops = cell.ops(numpy)
    extras = cell.extras(w)
    carried = cell.carried
    W_p = cell.projection(w)  # (P, H) or None
    prev, valid_all = states_before(numpy, seqs, state0, lengths, reverse)
    saved = saved_steps(cell, x, prev, seqs, w, kept)  # each (T, *batch, .)

    flat = lambda a: a.reshape(T, B, a.shape[-1])  # noqa: E731  (T, B, F)
    saved3, prev3 = [flat(s) for s in saved], [flat(p) for p in prev]
    d3 = [None if d is None else flat(d) for d in d_seqs]
    g = [numpy.zeros((B, s.shape[-1]), dtype=dtype) if d is None else
         numpy.array(d.reshape(B, s.shape[-1]), dtype=dtype, copy=True)
         for s, d in zip(state0, d_finals)]  # fmt: skip  each (B, S_k): dL/d(state) carried back
    dX = _pages.empty((T, B, GH), dtype)  # the gates' gradients on the input's side
    dH = None  # ... and on the recurrent product's side, where they differ (a GRU)
    gh_seq = numpy.empty((T, B, g[0].shape[-1]), dtype=dtype) if W_p is not None else None
    W_hh = w.W_hh  # (G*H, P)
    g_buf = numpy.empty_like(g[0])  # (B, P): the product's buffer, swapped with g[0]
    if lengths is not None:
        lens = numpy.asarray(lengths).reshape(B, 1)
        invalid = numpy.empty((B, 1), dtype=bool)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        g_t = [gk if d is None else gk + d[t] for gk, d in zip(g, d3)]  # dL/d(state_t), each (B, S_k)
        into = list(g_t)
        if W_p is not None:
            into[0] = g_t[0] @ W_p  # (B, H): dL/dm_t through h_t = m_t @ W_hr.T
        dx, dh, dcarry = cell.pointwise_backward(ops, tuple(s[t] for s in saved3),
                                                 tuple(prev3[k][t] for k in carried), tuple(into),
                                                 *extras)  # fmt: skip
        _put(dX[t], dx)
        if dh is not dx:
            if dH is None:
                dH = _pages.empty((T, B, GH), dtype)
            _put(dH[t], dh)
        dh_t = dX[t] if dh is dx else dH[t]
        if lengths is not None:
            numpy.less_equal(lens, t, out=invalid)  # a frozen step takes no gradient, passes g through
            numpy.copyto(dX[t], 0, where=invalid)
            if dh is not dx:
                numpy.copyto(dH[t], 0, where=invalid)
        if gh_seq is not None:
            numpy.copyto(gh_seq[t], g_t[0])
            if lengths is not None:
                numpy.copyto(gh_seq[t], 0, where=invalid)
        new = [numpy.matmul(dh_t, W_hh, out=g_buf)] + [None] * (len(g) - 1)  # dL/dh_{t-1} through the product
        for k, dc in zip(carried, dcarry):
            if new[k] is None:
                new[k] = dc
            else:
                new[k] += dc
        if lengths is None:
            g_buf, g[0] = g[0], g_buf
            g[1:] = new[1:]
        else:
            for k, v in enumerate(new):
                numpy.copyto(g[k], v, where=~invalid)
    dH_all = dX if dH is None else dH
    shaped = lambda a: None if a is None else a.reshape(T, *batch, a.shape[-1])  # noqa: E731
    d = cell.grads_input(shaped(dX), shaped(dH_all), shaped(gh_seq))
    dx, dw = cell.grads(numpy, d, x, prev, saved, w, valid_all)
    return dx, tuple(gk.reshape(*batch, gk.shape[-1]) for gk in g), dw


def _put(row, blocks):
    """Write the gate blocks ``(B, H)`` each side by side into ``row`` ``(B, G * H)``."""
    H = blocks[0].shape[-1]
    for j, blk in enumerate(blocks):
        numpy.copyto(row[:, j * H:(j + 1) * H], blk)
