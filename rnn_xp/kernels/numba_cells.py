"""The gated cells' recurrence and gradient as one compiled call per direction (numba, optional).

``kernels.numpy_cells`` runs a Python loop whose step is a matrix product and
the cell's elementwise function, a dozen NumPy calls for an LSTM: at small
sizes the dispatch of those calls is the time. Here the whole time loop is one
function compiled by numba for each cell (``_numba_cells_jit.cell_loops``), from
the cell's own ``pointwise`` and ``pointwise_backward`` (compiled as written,
their activations NumPy's own inner loops, so the numbers are the NumPy
loop's bit for bit but for the products' rounding):

1. Forward: the input projection (``x @ W.T + b`` with the cell's
   ``input_weights``) a block of steps at a time into one buffer reused for
   every block (``projection_steps``: the whole sequence at once up to
   ``PROJECTION_ELEMENTS`` with ``return_sequences``), by the compiled packed
   product on the loop's own threads (with ``product="blas"``: one GEMM on
   every BLAS thread); one compiled call then
   runs every step of a block of rows: the step's projection copied gate by
   gate into a scratch (every block ``pointwise`` reads is C-contiguous),
   ``hg = h @ W_hh.T`` by the packed product (``_numba_jit``: ``W_hh``
   packed once per call, ``_packed``; or NumPy's ``cblas_?gemm`` by address), the
   recurrent bias, ``cell.pointwise`` on the rows, an LSTM's projection (a
   second product), the frozen rows past their lengths.
2. Backward: the states each step started from and ``cell.saved`` as in the
   NumPy loop: from the products the forward kept (``keep``: the layer's
   ``return_cache``; the projection and each step's ``h @ W_hh.T`` plus its
   bias, where the forward held the whole projection), or two GEMMs for all
   steps; one compiled call runs the reverse
   loop (``cell.pointwise_backward`` and the packed product into the
   gradient reaching ``h``); ``cell.grads`` then gives the weight
   gradients, one product each.
3. Threads (``plan``): the forward runs on two callers over halves of the
   rows from eight rows (no BLAS thread runs beside them); the backward on
   one caller, on two for the largest steps (``backward_on_two_callers``).

The table (``kernels.numpy_cells_loop``) picks this loop by size; it takes
float32 and float64 plain cells (``numpy_cells.runs``) and falls back to the
NumPy loop for everything else, and where numba or NumPy's loops by address
are not available.
"""

from __future__ import annotations

import math

import numpy

from . import _pages, _threads, numba_cpu
from . import numba_products, numpy_cells
from .portable import per_part
from ._blocks import block_steps, project
from ._packed import pack
from ._threads import blas_threads

__all__ = ["ACTIVATIONS", "BACKWARD_TWO_CALLERS_MACS", "BACKWARD_TWO_CALLERS_ROWS",
           "PROJECTION_ELEMENTS", "backward_cells_numba", "backward_on_two_callers", "plan", "projection_steps",
           "scan_cells_numba", "takes"]

# The forward's product is the packed product (_numba_jit: W_hh packed once
# per call into strips of its columns, tiles of eight rows) and needs no BLAS:
# it runs at every size, on two callers over halves of the rows from
# _FORWARD_TWO_CALLERS_ROWS rows and _FORWARD_TWO_CALLERS_MACS multiply-adds
# per step, the input projection on the same threads (no BLAS thread left
# spinning beside them). With the register-blocked product it replaced, two
# callers took 0.58 to 0.84 of one caller's time from B = 8 on the 2-core VM.
# The backward's reverse loop runs the packed product too (W_hh.T packed), on
# one caller: against BLAS's product it took 0.6 of the time at B = 1 and
# about as long from B = 16 (an LSTM and a GRU on the CPU grid; two callers
# gave no clear gain there), on two callers from BACKWARD_TWO_CALLERS_ROWS rows
# and BACKWARD_TWO_CALLERS_MACS multiply-adds per step, where the table
# (kernels.numpy_cells_loop) takes it beyond its size rule: with the forward's
# products kept, an LSTM's backward at (B, T, D, H) = (64, 50, 512, 1024)
# took 436 to 472 ms on two callers, 526 to 547 on one and 495 to 515 in the
# in-place NumPy loop; a GRU's 324 to 337, 367 to 379 and 355 to 363 (in one
# process, alternating). At (32, 100, 128, 256), (64, 50, 256, 512) and (16,
# 50, 256, 1024) (8M to 67M multiply-adds) the three were within the noise or
# the in-place loop ahead.
_FORWARD_TWO_CALLERS_ROWS = 8
_FORWARD_TWO_CALLERS_MACS = 1 << 17
BACKWARD_TWO_CALLERS_ROWS = 32
BACKWARD_TWO_CALLERS_MACS = 1 << 27


# With return_sequences the input projection takes as many steps at a time as
# PROJECTION_ELEMENTS elements hold (64 MiB in float32; every size of the LSTM
# and GRU grids in one block), in memory of the result's order (G*H per row
# and step, against the outputs' P + H). In blocks of _blocks.BLOCK_STEPS (32)
# steps each block streamed W_ih again and handed the rows to the callers
# again: an LSTM forward at (B, T, D, H) = (16, 100, 64, 128) took 3.9 to 4.0
# ms in four blocks and 2.6 to 3.2 in one, (8, 200, 64, 256) 7.6 against 6.8,
# (32, 100, 128, 256) 16.9 to 18.3 against 14.3 to 16.1, (64, 50, 512, 1024)
# 167 to 172 against 156 to 157 (each in its own process on the 2-core VM).
# Without return_sequences memory stays O(B * G * H) whatever T is
# (_blocks.block_steps). Read at every call (tests set smaller ones).
PROJECTION_ELEMENTS = 1 << 24


def projection_steps(T, B, GH, return_sequences):
    """How many time steps the forward projects at a time (at least one): ``PROJECTION_ELEMENTS`` elements
    of ``B * GH`` per step with ``return_sequences``, ``_blocks.block_steps`` without."""
    if not return_sequences:
        return block_steps(T, B, GH)
    return max(1, min(T, PROJECTION_ELEMENTS // max(B * GH, 1)))


def plan(B, P, GH, backward=False):
    """``(product, n)``: ``"own"`` (the packed product) or ``"blas"``, and the callers over the rows.

    ``"own"`` at every size: the forward on two callers from
    ``_FORWARD_TWO_CALLERS_ROWS`` rows and ``_FORWARD_TWO_CALLERS_MACS``
    multiply-adds per step, the backward on one (two from
    ``backward_on_two_callers``). ``"blas"`` (each step's
    product on BLAS's own threads; with two callers, one BLAS thread each)
    is there for tests and benchmarks (``product="blas"``).
    """
    if backward:
        return "own", 2 if backward_on_two_callers(B, P, GH) else 1
    two = B >= _FORWARD_TWO_CALLERS_ROWS and B * P * GH >= _FORWARD_TWO_CALLERS_MACS and _threads.CPUS >= 2
    return "own", 2 if two else 1


def backward_on_two_callers(B, P, GH):
    """Whether the backward's reverse loop runs on two callers (``BACKWARD_TWO_CALLERS_ROWS`` rows and
    ``BACKWARD_TWO_CALLERS_MACS`` multiply-adds per step, two CPUs)."""
    return B >= BACKWARD_TWO_CALLERS_ROWS and B * P * GH >= BACKWARD_TWO_CALLERS_MACS and _threads.CPUS >= 2


# The activations the compiled loops have (NumPy's own, by address: _numba_jit).
ACTIVATIONS = ("sigmoid", "tanh")


def takes(cell, x, state0, mask):
    """Whether the compiled loops take this call: ``numpy_cells.runs``, float32 or float64, one carried part
    of the state, the activations of ``ACTIVATIONS``, numba available."""
    return (numpy_cells.runs(cell, x, state0, mask) and state0[0].dtype in (numpy.float32, numpy.float64)
            and len(cell.carried) == 1 and set(cell.activations) <= set(ACTIVATIONS)
            and numba_cpu.available())  # fmt: skip


def _work(B, P, GH, dtype, product, threads, backward=False):
    auto = plan(B, P, GH, backward)
    product = product or auto[0]
    n = auto[1] if threads is None else max(1, min(int(threads), B))
    gemm, ilp64 = (0, False) if product == "own" else numba_cpu.blas_gemm(dtype)
    return gemm, ilp64, [(B * i // n, B * (i + 1) // n) for i in range(n)]


def scan_cells_numba(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None, product=None,
                     threads=None, keep=False):  # fmt: skip
    """``portable.scan_cell`` for float32/float64 NumPy arrays, one compiled call (module docstring).

    ``product`` (``"own"``, ``"blas"``) and ``threads`` (1, 2) override
    ``plan``'s choice (for tests and benchmarks). ``keep``: return
    ``(seqs, finals, kept)``, ``kept`` the products ``cell.saved`` takes
    (``(xg, hg)``, each ``(T, *batch, G*H)``) where the forward holds the
    whole sequence's projection at once (``projection_steps``), else ``None``.
    """
    if not takes(cell, x, state0, mask):
        result = numpy_cells.scan_cells_numpy(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                                              return_sequences=return_sequences, mask=mask)  # fmt: skip
        return (*result, None) if keep else result
    numba_cpu.require_one_dtype(state0[0].dtype, x=x, **_arrays(w), **{f"state0[{k}]": s for k, s in enumerate(state0)})
    try:
        seqs, finals, kept = _scan(cell, x, state0, w, lengths, reverse, return_sequences, product, threads, keep)
    except numba_cpu.CompileAgain:  # numba's on-disk cache failed: once more, compiled anew (or the NumPy loop)
        return scan_cells_numba(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                                return_sequences=return_sequences, product=product, threads=threads,
                                keep=keep)  # fmt: skip
    return (seqs, finals, kept) if keep else (seqs, finals)


def _arrays(w):
    return {name: a for name, a in zip(w._fields, w) if a is not None and not isinstance(a, tuple)}


def _sizes(cell, state0, w):
    """``(batch, B, P, G*H, H, parts, dtype)`` of a call: batch shape, rows, state sizes, gates, parts of the state."""
    batch = tuple(state0[0].shape[:-1])
    GH = w.W_hh.shape[0]
    return batch, math.prod(batch), state0[0].shape[-1], GH, GH // cell.gates, len(state0), state0[0].dtype


def _scan(cell, x, state0, w, lengths, reverse, return_sequences, product, threads, keep):
    T, D = x.shape[0], x.shape[-1]
    batch, B, P, GH, H, nparts, dtype = _sizes(cell, state0, w)
    gemm, ilp64, bounds = _work(B, P, GH, dtype, product, threads)

    x3 = x.reshape(T, B, D)
    HS = numpy.empty((2, B, P), dtype=dtype)  # the double-buffered h
    HS[0] = state0[0].reshape(B, P)
    carried = cell.carried[0]
    if carried == 0:
        CS = HS  # the cell carries h itself
    else:
        CS = numpy.empty((2, B, H), dtype=dtype)  # the double-buffered carried part (an LSTM's c)
        CS[0] = state0[carried].reshape(B, H)
    if return_sequences:
        O0 = numpy.empty((T, B, P), dtype=dtype)
        O1 = numpy.empty((T, B, H), dtype=dtype) if nparts == 2 else O0
    else:
        O0 = O1 = numpy.empty((1, 1, 1), dtype=dtype)
    G = cell.gates
    HG = numpy.empty((G, B, H), dtype=dtype)  # (G, B, H): h @ W_hh.T + b, gate by gate
    W = numpy.ascontiguousarray(w.W_hh.T) if gemm else numpy.empty((1, 1), dtype=dtype)  # BLAS: (P, G*H)
    WK = numpy.empty((1, 1, 1), dtype=dtype) if gemm else pack(w.W_hh)  # the packed product's W_hh
    W_p = cell.projection(w)
    WP = numpy.ascontiguousarray(W_p.T) if W_p is not None else numpy.empty((1, 1), dtype=dtype)  # (H, P)
    bias = cell.recurrent_bias(w)
    b = bias if bias is not None else numpy.empty(1, dtype=dtype)
    lens = numpy.zeros(B, dtype=numpy.int64) if lengths is None else \
        numpy.ascontiguousarray(numpy.asarray(lengths).reshape(B), dtype=numpy.int64)  # fmt: skip
    extras = cell.extras(w)

    n = projection_steps(T, B, GH, return_sequences)  # the input projection, a block of steps at a time
    keep = keep and n == T  # the whole projection is held: keep it, and every step's recurrent product beside it
    W_in, b_in = cell.input_weights(w)  # the cell's projection is x @ W_in.T + b_in
    if keep:  # one buffer for both, on whole huge pages from 4 MiB (_pages: few page faults)
        XG, HK = _pages.empty((2, T, B, GH), dtype)
    else:
        XG = numpy.empty((n, B, GH), dtype=dtype)  # (n, B, G*H): a block's projection, reused for every block
        HK = numpy.empty((1, 1, 1), dtype=dtype)
    XS = numpy.empty((G, B, H), dtype=dtype)  # (G, B, H): a step's projection gate by gate
    HF = numpy.empty((B, GH), dtype=dtype)  # h @ W_hh.T, every gate side by side
    W_rows = pack(W_in) if not gemm else None  # W_in packed for the projection's packed product
    starts = range(0, T, n)
    k0 = 0
    for s in reversed(starts) if reverse else starts:
        e = min(s + n, T)
        if gemm:
            project(numpy, x3[s:e], W_in.T, b_in, XG[: e - s])  # x @ W_in.T + b_in: one GEMM, every BLAS thread
        else:  # the packed product on the callers' threads, over all the block's rows: no BLAS thread spins after
            _project_packed(x3[s:e], W_rows, b_in, XG[: e - s], len(bounds))
        with blas_threads(1 if gemm and len(bounds) > 1 else None):  # several callers: one BLAS thread each
            args = [(XG, XS, HF, s, e, k0, int(reverse), lens, int(lengths is not None), HS, CS, O0, O1,
                     int(return_sequences), HG, W, WK, b, int(bias is not None), WP, int(W_p is not None), extras,
                     HK, int(keep), r0, r1, gemm, int(ilp64)) for r0, r1 in bounds]  # fmt: skip
            numba_cpu.run_compiled("cell_forward", args, one_blas_thread=bool(gemm) and len(bounds) > 1, cell=cell)
        del args
        k0 += e - s
    finals = (HS[T % 2].reshape(*batch, P).copy(),)
    if nparts == 2:
        finals += (CS[T % 2].reshape(*batch, H).copy(),)
    kept = (XG.reshape(T, *batch, GH), HK.reshape(T, *batch, GH)) if keep else None
    if not return_sequences:
        return None, finals, kept
    seqs = (O0.reshape(T, *batch, P),) + ((O1.reshape(T, *batch, H),) if nparts == 2 else ())
    return seqs, finals, kept


def _project_packed(x3, W_rows, b_in, out, callers):
    """``out = x3 @ W_in.T + b_in`` (``(n, B, D)`` into ``(n, B, G*H)``) with the compiled packed product
    (``W_rows``: ``W_in`` packed), on ``callers`` threads over the ``n * B`` rows."""
    n, B, D = x3.shape
    out[...] = 0 if b_in is None else b_in
    rows = n * B
    x2, o2 = numpy.ascontiguousarray(x3).reshape(rows, D), out.reshape(rows, out.shape[-1])
    k = max(1, min(callers, rows // 4))
    GH = out.shape[-1]
    numba_cpu.run_compiled("packed_product", [(o2, x2, W_rows, rows * i // k, rows * (i + 1) // k, 0, GH)
                                              for i in range(k)])  # fmt: skip


def backward_cells_numba(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None,
                         product=None, threads=None, kept=None):  # fmt: skip
    """``portable.backward_cell`` for float32/float64 NumPy arrays, the loop compiled (module docstring).

    ``kept``: what ``scan_cells_numba(..., keep=True)`` kept of this call's
    forward (``cell.saved`` then makes no product again), or ``None``.
    """
    if not takes(cell, x, state0, mask):
        return numpy_cells.backward_cells_numpy(xp, cell, d_out, x, state0, w, seqs, d_finals, lengths=lengths,
                                                reverse=reverse, mask=mask, kept=kept)  # fmt: skip
    d_seqs = per_part(d_out, len(state0))
    numba_cpu.require_one_dtype(state0[0].dtype, x=x, **_arrays(w),
                                **{f"d_out[{k}]": d for k, d in enumerate(d_seqs)},
                                **{f"seqs[{k}]": q for k, q in enumerate(seqs)},
                                **{f"d_finals[{k}]": d for k, d in enumerate(d_finals)})  # fmt: skip
    try:
        return _backward(cell, d_seqs, x, state0, w, seqs, d_finals, lengths, reverse, product, threads,
                         numpy_cells.kept_products(kept, x, state0, w))  # fmt: skip
    except numba_cpu.CompileAgain:
        return backward_cells_numba(xp, cell, d_out, x, state0, w, seqs, d_finals, lengths=lengths,
                                    reverse=reverse, product=product, threads=threads, kept=kept)  # fmt: skip


def _backward(cell, d_seqs, x, state0, w, seqs, d_finals, lengths, reverse, product, threads, kept):
    T = x.shape[0]
    batch, B, P, GH, H, nparts, dtype = _sizes(cell, state0, w)
    carried = cell.carried[0]
    gemm, ilp64, bounds = _work(B, P, GH, dtype, product, threads, backward=True)

    prev, valid_all = numpy_cells.states_before(numpy, seqs, state0, lengths, reverse)
    saved = numpy_cells.saved_steps(cell, x, prev, seqs, w, kept)
    SV = tuple(numpy.ascontiguousarray(s.reshape(T, B, H)) for s in saved)  # each (T, B, H)
    PC = numpy.ascontiguousarray(prev[carried].reshape(T, B, H))  # (T, B, H)
    dummy = numpy.empty((1, 1, 1), dtype=dtype)
    D0 = dummy if d_seqs[0] is None else numpy.ascontiguousarray(d_seqs[0].reshape(T, B, P))
    D1 = dummy if nparts < 2 or d_seqs[1] is None else numpy.ascontiguousarray(d_seqs[1].reshape(T, B, H))
    G0 = numpy.empty((2, B, P), dtype=dtype)  # the double-buffered dL/dh
    G0[0] = 0 if d_finals[0] is None else d_finals[0].reshape(B, P)
    GC = numpy.empty((2, B, H), dtype=dtype) if nparts == 2 else numpy.empty((2, 1, 1), dtype=dtype)
    if nparts == 2:
        GC[0] = 0 if d_finals[1] is None else d_finals[1].reshape(B, H)
    DX = _pages.empty((T, B, GH), dtype)
    DH = _pages.empty((T, B, GH), dtype) if cell.separate_recurrent_grads else DX
    W_p = cell.projection(w)
    GHS = numpy.empty((T, B, P), dtype=dtype) if W_p is not None else dummy
    WPn = numpy.ascontiguousarray(W_p) if W_p is not None else numpy.empty((1, 1), dtype=dtype)  # (P, H)
    DM = numpy.empty((B, H), dtype=dtype)
    W = numpy.ascontiguousarray(w.W_hh) if gemm else numpy.empty((1, 1), dtype=dtype)  # (G*H, P) for BLAS
    WK = numpy.empty((1, 1, 1), dtype=dtype) if gemm else pack(w.W_hh.T)  # the packed product's W_hh
    lens = numpy.zeros(B, dtype=numpy.int64) if lengths is None else \
        numpy.ascontiguousarray(numpy.asarray(lengths).reshape(B), dtype=numpy.int64)  # fmt: skip
    args = [(SV, PC, D0, int(d_seqs[0] is not None), D1, int(nparts == 2 and d_seqs[1] is not None), G0, GC, DX, DH,
             GHS, int(W_p is not None), W, WK, WPn, int(W_p is not None), DM, lens, int(lengths is not None),
             cell.extras(w), int(reverse), r0, r1, gemm, int(ilp64)) for r0, r1 in bounds]  # fmt: skip
    with blas_threads(1 if gemm and len(bounds) > 1 else None):  # several callers: one BLAS thread each
        numba_cpu.run_compiled("cell_backward", args, one_blas_thread=bool(gemm) and len(bounds) > 1, cell=cell)

    shaped = lambda a: a.reshape(T, *batch, a.shape[-1])  # noqa: E731
    d = cell.grads_input(shaped(DX), shaped(DH), shaped(GHS) if W_p is not None else None)
    dx, dw = cell.grads(numpy, d, x, prev, saved, w, valid_all, matmuls=numba_products.MATMULS)  # compiled products
    dstate0 = (G0[T % 2].reshape(*batch, P).copy(),)
    if nparts == 2:
        dstate0 += (GC[T % 2].reshape(*batch, H).copy(),)
    return dx, dstate0, dw
