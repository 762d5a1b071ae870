"""The numba kernels (``kernels.numba_cpu``, ``kernels.numba_backward``, ``kernels.numba_cells``) against the portable loops.

Every way the compiled loop can run (its own product or BLAS's, one thread,
two threads over rows, two threads over columns with a barrier per step) is
held against ``portable.scan_portable`` / ``backward_portable`` on the edge
catalogue: zero sizes, NaN and infinite values, lengths 0 and T, reverse,
leak 1 and below, ``return_sequences=False`` over odd blocks of time and odd
T, float32 and float64, 0, 1 and 2 batch dimensions, batch-first inputs, an
infinite ``Wh`` with ``lengths``; the gated cells' loops (a ``cell``
parameter: the LSTM, with a projection and peepholes, and the GRU) on the
same catalogue. Also: the compiled tanh and sigmoid against NumPy's over the
whole float range; NumPy's BLAS found by address where it exports
``cblas_?gemm`` and its calls counted; the thread plan; the on-disk cache,
and a cache that cannot be used (no folder, corrupted, a full disk), in new
processes. numba is optional: without it these tests skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import rnn_xp
from rnn_xp.cells import GRUCell, GRUWeights, LSTMCell, LSTMWeights
from rnn_xp.kernels import _blocks, _threads, numba_backward, numba_cells, numba_cpu, numpy_cells
from rnn_xp.kernels.portable import backward_cell, backward_portable, previous_states, scan_cell, scan_portable
from support import reference_rnn

pytest.importorskip("numba", reason="numba is not installed (pip install rnn_xp[numba])")

import array_api_compat.numpy as xp  # noqa: E402

# (product, split, threads): every way the compiled loop runs
PATHS = [("own", "rows", 1), ("own", "rows", 2), ("own", "cols", 2),
         ("blas", "rows", 1), ("blas", "rows", 2), ("blas", "cols", 2)]  # fmt: skip
TOL = {"float64": dict(rtol=1e-11, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}
LENGTHS = {(): None, (4,): [5, 0, 2, 1], (2, 3): [[5, 3, 0], [1, 4, 5]]}  # 0 and T = 5 among them
OPTIONS = [
    dict(nonlinearity="tanh", reverse=False, leak=1.0),
    dict(nonlinearity="tanh", reverse=True, leak=1.0),
    dict(nonlinearity="relu", reverse=False, leak=0.3),
    dict(nonlinearity="tanh", reverse=True, leak=0.6),
]


def _inputs(rng, T, batch, D, H, dtype, scale=0.9):
    x = rng.standard_normal((T, *batch, D))
    h0 = rng.standard_normal((*batch, H)) * 0.5
    Wx = rng.standard_normal((H, D)) * scale / np.sqrt(max(D, 1))
    Wh = rng.standard_normal((H, H)) * scale / np.sqrt(max(H, 1))
    b = rng.standard_normal(H) * 0.1
    return [a.astype(dtype) for a in (x, h0, Wx, Wh, b)]


def _forward_both(arrays, lens, path, **opts):
    product, split, threads = path
    got = numba_cpu.scan_numba(xp, *arrays, lengths=lens, product=product, split=split, threads=threads, **opts)
    want = scan_portable(xp, *arrays, lengths=lens, **opts)
    return got, want


def _check(got, want, dtype, what):
    for g, w, name in zip(got, want, ("h_seq", "h_last")):
        if w is None:
            assert g is None, (what, name)
            continue
        assert g.shape == w.shape and g.dtype == w.dtype, (what, name, g.shape, w.shape)
        np.testing.assert_allclose(g, w, err_msg=f"{what} {name}", **TOL[dtype])


# -- the gated cells: the same catalogue, the cell a parameter ---------------------------------

CELL_PATHS = [("own", 1), ("own", 2), ("blas", 1), ("blas", 2)]  # (product, threads over the rows)
GATED = ["lstm", "lstm-proj-peep", "gru"]


def _cell_inputs(rng, kind, T, batch, D, H, dtype, scale=0.9):
    """``(cell, x, state0, w)`` of a gated cell: ``"lstm"``, ``"lstm-proj-peep"`` (P = 3, peepholes) or ``"gru"``."""
    G = 3 if kind == "gru" else 4
    P = 3 if kind == "lstm-proj-peep" else H
    normal = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    x = normal(T, *batch, D)
    W_ih, W_hh = normal(G * H, D) * scale / np.sqrt(max(D, 1)), normal(G * H, P) * scale / np.sqrt(max(P, 1))
    b_ih, b_hh = normal(G * H) * 0.3, normal(G * H) * 0.3
    cast = lambda *a: tuple(None if v is None else v.astype(dtype) for v in a)  # noqa: E731
    if kind == "gru":
        return GRUCell(), *cast(x), cast(normal(*batch, H) * 0.5), GRUWeights(*cast(W_ih, W_hh, b_ih, b_hh))
    W_hr = normal(P, H) * scale / np.sqrt(H) if kind == "lstm-proj-peep" else None
    peep = normal(3 * H) * 0.5 if kind == "lstm-proj-peep" else None
    state0 = cast(normal(*batch, P) * 0.5, normal(*batch, H) * 0.5)
    return LSTMCell(), *cast(x), state0, LSTMWeights(*cast(W_ih, W_hh, b_ih, b_hh, W_hr, peep))


def _cell_forward_both(case, lens, path, **opts):
    cell, x, state0, w = case
    got = numba_cells.scan_cells_numba(xp, cell, x, state0, w, lengths=lens, product=path[0], threads=path[1],
                                       **opts)  # fmt: skip
    want = scan_cell(xp, cell, x, state0, w, lengths=lens, **opts)
    return got, want


def _cell_check(got, want, dtype, what, **tol):
    tol = tol or TOL[dtype]
    for part, g, w in (("seqs", got[0], want[0]), ("finals", got[1], want[1])):
        if w is None:
            assert g is None, (what, part)
            continue
        assert len(g) == len(w), (what, part)
        for k, (a, b) in enumerate(zip(g, w)):
            assert a.shape == b.shape and a.dtype == b.dtype, (what, part, k, a.shape, b.shape)
            np.testing.assert_allclose(a, b, err_msg=f"{what} {part}[{k}]", equal_nan=True, **tol)


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("batch, with_lengths", [((), False), ((4,), True), ((2, 3), True)])
def test_cells_forward_matches_portable_on_every_path(rng, dtype, cell, batch, with_lengths):
    case = _cell_inputs(rng, cell, 5, batch, 3, 6, dtype)
    lens = np.asarray(LENGTHS[batch], dtype=np.int64) if with_lengths else None
    for path, reverse, return_sequences in itertools.product(CELL_PATHS, (False, True), (True, False)):
        got, want = _cell_forward_both(case, lens, path, reverse=reverse, return_sequences=return_sequences)
        _cell_check(got, want, dtype, (path, reverse, return_sequences))


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("block", [5, 7])
def test_cells_forward_odd_blocks_of_time_and_odd_T(monkeypatch, rng, cell, block):
    """return_sequences=False runs blocks of steps: the double buffers' parity across odd blocks and T, with H
    past the own product's blocks and more rows than the two threads split evenly."""
    monkeypatch.setattr(_blocks, "BLOCK_STEPS", block)
    case = _cell_inputs(rng, cell, 23, (5,), 7, 19, "float64")
    lens = np.asarray([23, 0, 11, 22, 1], dtype=np.int64)
    for path, reverse, lengths in itertools.product(CELL_PATHS, (False, True), (None, lens)):
        got, want = _cell_forward_both(case, lengths, path, reverse=reverse, return_sequences=False)
        _cell_check(got, want, "float64", (path, reverse, lengths is not None))


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("steps", [5, 7])
def test_cells_forward_projection_in_blocks_with_return_sequences(monkeypatch, rng, cell, steps):
    """return_sequences=True projects PROJECTION_ELEMENTS at a time: blocks of odd lengths (a smaller budget),
    odd T, every path, against the portable loop."""
    case = _cell_inputs(rng, cell, 23, (5,), 7, 19, "float64")
    GH = case[3].W_hh.shape[0]
    monkeypatch.setattr(numba_cells, "PROJECTION_ELEMENTS", steps * 5 * GH + 3)  # `steps` steps of 5 rows
    assert numba_cells.projection_steps(23, 5, GH, True) == steps
    lens = np.asarray([23, 0, 11, 22, 1], dtype=np.int64)
    for path, reverse, lengths in itertools.product(CELL_PATHS, (False, True), (None, lens)):
        got, want = _cell_forward_both(case, lengths, path, reverse=reverse, return_sequences=True)
        _cell_check(got, want, "float64", (path, reverse, lengths is not None))


def test_cells_projection_steps():
    # return_sequences: the whole sequence at every size of the LSTM/GRU grids (G * H columns)
    for B, T, H in ((1, 200, 64), (16, 100, 128), (32, 100, 256), (64, 50, 1024)):
        assert numba_cells.projection_steps(T, B, 4 * H, True) == T
    assert numba_cells.projection_steps(10_000, 64, 4096, True) == 64  # a long one: 64 MiB of float32 at a time
    assert numba_cells.projection_steps(5, 1 << 20, 64, True) == 1  # at least one step
    # without it, _blocks' bound: 32 steps and 1M elements
    assert numba_cells.projection_steps(100, 16, 512, False) == 32
    assert numba_cells.projection_steps(50, 64, 4096, False) == 4


@pytest.mark.parametrize("cell", GATED)
def test_cells_forward_nan_and_inf_where_the_portable_loop_has_them(rng, cell):
    c, x, state0, w = _cell_inputs(rng, cell, 6, (4,), 3, 6, "float64")
    x[2, 0, 1] = np.nan  # sequence 0 turns NaN from step 2 on
    x[1, 1, 0] = np.inf  # sequence 1 saturates
    w.W_hh[3, 2] = -np.inf  # every sequence meets an infinite weight
    state0[-1][2, 4] = np.nan  # a NaN start (c0 or h0), frozen where the length is 0
    lens = np.asarray([6, 3, 0, 4], dtype=np.int64)
    for path, return_sequences in itertools.product(CELL_PATHS, (True, False)):
        with np.errstate(all="ignore"):
            got, want = _cell_forward_both((c, x, state0, w), lens, path, reverse=False,
                                           return_sequences=return_sequences)  # fmt: skip
        for g, wt in zip(got, want):
            for a, b in zip(g or (), wt or ()):
                np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
                np.testing.assert_allclose(a, b, **TOL["float64"])  # NaN where NaN


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("T, batch, D, H", [(0, (3,), 2, 4), (4, (0,), 2, 4), (4, (3,), 0, 4), (4, (3,), 2, 0)])
def test_cells_forward_and_backward_zero_sizes(rng, cell, T, batch, D, H):
    if H == 0 and cell == "lstm-proj-peep":
        pytest.skip("a projection of H = 0 units has no weights to draw")
    c, x, state0, w = _cell_inputs(rng, cell, T, batch, D, H, "float64")
    for path, return_sequences in itertools.product(CELL_PATHS, (True, False)):
        got, want = _cell_forward_both((c, x, state0, w), None, path, reverse=False,
                                       return_sequences=return_sequences)  # fmt: skip
        _cell_check(got, want, "float64", (path, return_sequences))
    seqs, _ = scan_cell(xp, c, x, state0, w, lengths=None, reverse=False, return_sequences=True)
    _cell_backward_check(c, (tuple(np.ones_like(q) for q in seqs), x, state0, w, seqs, state0), None, False,
                         "float64")  # fmt: skip


def _cell_backward_case(rng, cell, T, batch, D, H, dtype, *, lens, reverse, with_d_out=True, with_d_c=False,
                        with_d_finals=True):  # fmt: skip
    c, x, state0, w = _cell_inputs(rng, cell, T, batch, D, H, "float64")
    seqs, _ = scan_cell(xp, c, x, state0, w, lengths=lens, reverse=reverse, return_sequences=True)
    d_out = tuple(rng.standard_normal(q.shape) if with_d_out and (k == 0 or with_d_c) else None
                  for k, q in enumerate(seqs))  # fmt: skip
    d_fin = tuple(rng.standard_normal(s.shape) if with_d_finals else None for s in state0)
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    tcast = lambda t: tuple(cast(a) for a in t)  # noqa: E731
    return c, (tcast(d_out), cast(x), tcast(state0), type(w)(*tcast(w)), tcast(seqs), tcast(d_fin))


def _cell_backward_check(c, args, lens, reverse, dtype, paths=CELL_PATHS, **tol):
    tol = tol or TOL[dtype]
    want = backward_cell(xp, c, *args, lengths=lens, reverse=reverse)
    for product, threads in paths:
        got = numba_cells.backward_cells_numba(xp, c, *args, lengths=lens, reverse=reverse, product=product,
                                               threads=threads)  # fmt: skip
        what = (product, threads)
        np.testing.assert_allclose(got[0], want[0], err_msg=f"{what} dx", equal_nan=True, **tol)
        for k, (g, w) in enumerate(zip(got[1], want[1], strict=True)):
            np.testing.assert_allclose(g, w, err_msg=f"{what} dstate0[{k}]", equal_nan=True, **tol)
        for name, g, w in zip(want[2]._fields, got[2], want[2]):
            assert (g is None) == (w is None), (what, name)
            if w is not None:
                assert g.dtype == np.dtype(dtype), (what, name, g.dtype)
                np.testing.assert_allclose(g, w, err_msg=f"{what} d{name}", equal_nan=True, **tol)


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("batch, with_lengths", [((), False), ((4,), True), ((2, 3), True)])
def test_cells_backward_matches_portable_on_every_path(rng, dtype, cell, batch, with_lengths):
    lens = np.asarray(LENGTHS[batch], dtype=np.int64) if with_lengths else None
    for reverse, (d_out, d_c, d_fin) in itertools.product((False, True), ((True, False, False), (False, False, True),
                                                                          (True, True, True))):  # fmt: skip
        c, args = _cell_backward_case(rng, cell, 5, batch, 3, 6, dtype, lens=lens, reverse=reverse, with_d_out=d_out,
                                      with_d_c=d_c, with_d_finals=d_fin)  # fmt: skip
        _cell_backward_check(c, args, lens, reverse, dtype)


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("T", [24, 23])
def test_cells_backward_larger_sizes(rng, cell, T):
    """Even and odd T: the gradients' double buffers end at [T % 2]; odd rows over two threads."""
    lens = np.asarray([T, 0, 11, T - 1, 1], dtype=np.int64)
    for reverse in (False, True):
        c, args = _cell_backward_case(rng, cell, T, (5,), 7, 19, "float64", lens=lens, reverse=reverse,
                                      with_d_c=True)  # fmt: skip
        _cell_backward_check(c, args, lens, reverse, "float64")


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("reverse", [False, True])
def test_cells_backward_frozen_steps_pass_the_gradient_past_an_infinite_w_hh(rng, cell, reverse):
    """Past a length the upstream gradient is ignored and the carried one passes through exactly: an infinite
    gradient there and an infinite ``W_hh`` leave a length-0 row's dstate0 equal to d_finals, bit for bit."""
    lens = np.asarray([6, 2, 0], dtype=np.int64)
    c, (d_out, x, state0, w, seqs, d_fin) = _cell_backward_case(rng, cell, 6, (3,), 2, 4, "float64", lens=lens,
                                                                reverse=reverse, with_d_c=True)  # fmt: skip
    d_out = tuple(np.array(d) for d in d_out)
    for d in d_out:
        d[3:, 1] = np.inf
        d[:, 2] = np.inf
    w.W_hh[1, 2] = np.inf
    args = (d_out, x, state0, w, seqs, d_fin)
    with np.errstate(all="ignore"):
        for product, threads in CELL_PATHS:
            got = numba_cells.backward_cells_numba(xp, c, *args, lengths=lens, reverse=reverse, product=product,
                                                   threads=threads)  # fmt: skip
            for g, d in zip(got[1], d_fin):
                np.testing.assert_array_equal(g[2], d[2])  # length 0: dstate0 is d_finals, bit for bit
        _cell_backward_check(c, args, lens, reverse, "float64")


# -- the forward's products kept for the backward (the layer's return_cache) ----------------------------


def _products(c, x, state0, w, seqs, lens, reverse):
    """The products ``cell.saved`` takes, made here in float64: ``project`` and ``h_{t-1} @ W_hh.T + b``."""
    prev = previous_states(xp, seqs[0], state0[0], lens, reverse=reverse)  # (T, *batch, P)
    bias = c.recurrent_bias(w)
    hg = prev.astype(np.float64) @ w.W_hh.T.astype(np.float64)
    return c.project(xp, x.astype(np.float64), type(w)(*(None if a is None or isinstance(a, tuple) else
                                                         a.astype(np.float64) for a in w))), \
        hg if bias is None else hg + bias  # fmt: skip


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("batch, with_lengths", [((), False), ((4,), True), ((2, 3), True)])
def test_cells_kept_products_are_the_forwards_and_the_backward_takes_them(monkeypatch, rng, dtype, cell, batch,
                                                                          with_lengths):  # fmt: skip
    """keep=True: the same outputs, bit for bit; ``kept`` the projection and every step's recurrent product
    (against a float64 product); the compiled and the in-place backward given them agree with the portable
    backward, which computes both products again."""
    lens = np.asarray(LENGTHS[batch], dtype=np.int64) if with_lengths else None
    for path, reverse in itertools.product(CELL_PATHS, (False, True)):
        c, args = _cell_backward_case(rng, cell, 5, batch, 3, 6, dtype, lens=lens, reverse=reverse, with_d_c=True)
        d_out, x, state0, w, _, d_fin = args
        plain = numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=lens, reverse=reverse,
                                             return_sequences=True, product=path[0], threads=path[1])  # fmt: skip
        seqs, finals, kept = numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=lens, reverse=reverse,
                                                          return_sequences=True, product=path[0],
                                                          threads=path[1], keep=True)  # fmt: skip
        for a, b in zip(seqs + finals, plain[0] + plain[1], strict=True):
            np.testing.assert_array_equal(a, b)
        GH = w.W_hh.shape[0]
        assert [k.shape for k in kept] == [(5, *batch, GH)] * 2 and all(k.dtype == np.dtype(dtype) for k in kept)
        valid = np.ones((5, *batch, 1), bool) if lens is None else \
            (np.arange(5).reshape(5, *(1,) * len(batch)) < lens)[..., None]  # fmt: skip
        for k, want in zip(kept, _products(c, x, state0, w, seqs, lens, reverse)):  # past a length: any product
            np.testing.assert_allclose(np.where(valid, k, 0), np.where(valid, want, 0), err_msg=str(path),
                                       **TOL[dtype])  # fmt: skip
        args = (d_out, x, state0, w, seqs, d_fin)
        want = backward_cell(xp, c, *args, lengths=lens, reverse=reverse)
        for got in (numba_cells.backward_cells_numba(xp, c, *args, lengths=lens, reverse=reverse, kept=kept),
                    numpy_cells.backward_cells_numpy(xp, c, *args, lengths=lens, reverse=reverse, kept=kept)):
            for g, wv in zip([got[0], *got[1], *got[2]], [want[0], *want[1], *want[2]], strict=True):
                assert (g is None) == (wv is None)
                if wv is not None:
                    np.testing.assert_allclose(g, wv, equal_nan=True, err_msg=str(path), **TOL[dtype])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cells_saved_takes_the_kept_products_and_not_its_own(monkeypatch, rng, cell):
    """``cell.saved(..., products=)`` reads the products given: products that differ from the call's own
    give other gates (so a kept product is really what the backward reads)."""
    c, x, state0, w = _cell_inputs(rng, cell, 4, (3,), 2, 5, "float64")
    seqs, _, kept = numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=None, reverse=False,
                                                 return_sequences=True, keep=True)  # fmt: skip
    prev, _ = numpy_cells.states_before(np, seqs, state0, None, False)
    own = c.saved(np, x, prev, seqs, w, c.fixed(np, w), from_outputs=True)
    given = c.saved(np, x, prev, seqs, w, c.fixed(np, w), from_outputs=True, products=kept)
    for a, b in zip(own, given, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    moved = c.saved(np, x, prev, seqs, w, c.fixed(np, w), from_outputs=True,
                    products=(kept[0] + 0.5, kept[1]))  # fmt: skip
    assert not np.allclose(moved[0], own[0])


def test_cells_kept_products_only_when_the_whole_projection_is_held(monkeypatch, rng):
    """Where the forward projects a block of steps at a time nothing is kept (the backward makes the
    products); kept products of another dtype or shape are not used: the backward still gives the portable
    loop's answer."""
    c, x, state0, w = _cell_inputs(rng, "lstm", 23, (5,), 7, 19, "float64")
    GH = w.W_hh.shape[0]
    run = lambda: numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=None, reverse=False,  # noqa: E731
                                               return_sequences=True, keep=True)  # fmt: skip
    assert run()[2] is not None
    monkeypatch.setattr(numba_cells, "PROJECTION_ELEMENTS", 5 * 5 * GH)
    assert run()[2] is None
    monkeypatch.undo()
    seqs, _, kept = numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=None, reverse=False,
                                                 return_sequences=True, keep=True)  # fmt: skip
    assert kept is not None
    assert numpy_cells.kept_products(kept, x, state0, w) is not None
    f32 = tuple(k.astype(np.float32) for k in kept)
    assert numpy_cells.kept_products(f32, x, state0, w) is None
    assert numpy_cells.kept_products((kept[0][:-1], kept[1][:-1]), x, state0, w) is None
    d_out = (np.ones_like(seqs[0]), None)
    args = (d_out, x, state0, w, seqs, (None, None))
    want = backward_cell(xp, c, *args, lengths=None, reverse=False)
    got = numba_cells.backward_cells_numba(xp, c, *args, lengths=None, reverse=False, kept=f32)
    np.testing.assert_allclose(got[0], want[0], **TOL["float64"])
    np.testing.assert_allclose(got[2].W_hh, want[2].W_hh, **TOL["float64"])


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("steps", [1, 3])
def test_cells_saved_in_blocks_of_steps(monkeypatch, rng, cell, steps):
    """The backward's ``cell.saved`` over blocks of ``steps`` steps (``numpy_cells.SAVED_ELEMENTS``): the same
    arrays as one call, bit for bit, with the products kept or made; both backward loops then agree with the
    portable backward (odd T, lengths 0 and T, reverse)."""
    lens = np.asarray([23, 0, 11, 22, 1], dtype=np.int64)
    for reverse, with_lengths in itertools.product((False, True), (False, True)):
        lengths = lens if with_lengths else None
        c, args = _cell_backward_case(rng, cell, 23, (5,), 7, 19, "float64", lens=lengths, reverse=reverse,
                                      with_d_c=True)  # fmt: skip
        d_out, x, state0, w, _, d_fin = args
        seqs, _, kept = numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=lengths, reverse=reverse,
                                                     return_sequences=True, keep=True)  # fmt: skip
        assert kept is not None
        prev, _ = numpy_cells.states_before(np, seqs, state0, lengths, reverse)
        whole = {k: c.saved(np, x, prev, seqs, w, c.fixed(np, w), from_outputs=True, products=kept if k else None)
                 for k in (False, True)}  # fmt: skip
        monkeypatch.setattr(numpy_cells, "SAVED_ELEMENTS", steps * 5 * w.W_hh.shape[0] + 1)
        monkeypatch.setattr(numpy_cells, "SAVED_BLOCKS_FROM", 1)
        for k in (False, True):
            got = numpy_cells.saved_steps(c, x, prev, seqs, w, kept if k else None)
            for a, b in zip(got, whole[k], strict=True):
                np.testing.assert_array_equal(a, b)
        args = (d_out, x, state0, w, seqs, d_fin)
        want = backward_cell(xp, c, *args, lengths=lengths, reverse=reverse)
        for got in (numba_cells.backward_cells_numba(xp, c, *args, lengths=lengths, reverse=reverse, kept=kept),
                    numba_cells.backward_cells_numba(xp, c, *args, lengths=lengths, reverse=reverse),
                    numpy_cells.backward_cells_numpy(xp, c, *args, lengths=lengths, reverse=reverse, kept=kept),
                    numpy_cells.backward_cells_numpy(xp, c, *args, lengths=lengths, reverse=reverse)):
            for g, wv in zip([got[0], *got[1], *got[2]], [want[0], *want[1], *want[2]], strict=True):
                assert (g is None) == (wv is None)
                if wv is not None:
                    np.testing.assert_allclose(g, wv, equal_nan=True, **TOL["float64"])
        monkeypatch.undo()


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_layer_cache_keeps_the_compiled_forwards_products(monkeypatch, rng, kind):
    """The layer's forward(return_cache=True) keeps the compiled loop's products in the cache; its backward
    gives the gradients of a cache without them (to rounding), also with a float64 d_output for a float32
    forward (the products are then made again in float64) and with two layers, both directions."""
    monkeypatch.setenv("RNN_XP_NUMBA", "1")
    layer = getattr(rnn_xp, kind)(3, 5, num_layers=2, bidirectional=True, dtype="float32", seed=1)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    output, _, cache = layer.forward(x, return_cache=True)
    assert len(cache.kept) == 4 and all(k is not None for k in cache.kept)
    d = rng.standard_normal(output.shape)
    for d_output in (d.astype(np.float32), d):
        got = layer.backward(cache, d_output)
        want = layer.backward(cache._replace(kept=None), d_output)
        tol = TOL["float32"] if d_output.dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.dx, want.dx, **tol)
        for name in want.params:
            np.testing.assert_allclose(got.params[name], want.params[name], err_msg=name, **tol)


@pytest.mark.parametrize("name, message", [("x", "x is float64, the state is float32"),
                                           ("W_ih", "W_ih is float64"), ("W_hh", "W_hh is float64"),
                                           ("b_hh", "b_hh is float64"), ("c0", r"state0\[1\] is float64"),
                                           ("h0", "x is float32, the state is float64")])  # fmt: skip
def test_cells_a_second_dtype_is_refused_before_the_compiled_loop_reads_it(name, message):
    """The compiled loops read raw addresses in the state's dtype: a float64 array among float32 ones is refused."""
    c, x, state0, w = _cell_inputs(np.random.default_rng(0), "lstm", 5, (2,), 8, 32, "float32")
    arrays = dict(x=x, h0=state0[0], c0=state0[1], **w._asdict())
    arrays[name] = arrays[name].astype(np.float64)
    w = LSTMWeights(**{k: arrays[k] for k in LSTMWeights._fields})
    with pytest.raises(TypeError, match=f"the compiled loop needs one dtype: {message}"):
        numba_cells.scan_cells_numba(xp, c, arrays["x"], (arrays["h0"], arrays["c0"]), w, lengths=None,
                                     reverse=False, return_sequences=True)  # fmt: skip


@pytest.mark.parametrize("cell", ["lstm-proj-peep", "gru"])
def test_cells_the_blas_product_calls_blas_every_step(monkeypatch, rng, cell):
    """product="blas": per thread and step, forward one cblas_?gemm for every gate (``h @ W_hh.T``, then
    copied gate by gate), backward one (the gate gradients' product into dL/dh); one more each for an LSTM's
    projection."""
    calls = _counting_gemm(monkeypatch, np.float64)
    T, threads = 9, 2
    case = _cell_inputs(rng, cell, T, (4,), 3, 8, "float64")
    lens = np.asarray([9, 0, 4, 8], dtype=np.int64)
    proj = 1 if cell == "lstm-proj-peep" else 0
    got, want = _cell_forward_both(case, lens, ("blas", threads), reverse=False, return_sequences=True)
    _cell_check(got, want, "float64", cell)
    assert len(calls) == T * threads * (1 + proj)
    del calls[:]
    c, args = _cell_backward_case(rng, cell, T, (4,), 3, 8, "float64", lens=lens, reverse=False)
    _cell_backward_check(c, args, lens, False, "float64", paths=[("blas", threads)])
    assert len(calls) == T * threads * (1 + proj)


def test_cells_plan(monkeypatch):
    monkeypatch.setattr(_threads, "CPUS", 2)
    # the forward: the packed product, on two callers from 8 rows and 2^17 multiply-adds
    assert numba_cells.plan(1, 64, 256) == ("own", 1)
    assert numba_cells.plan(4, 512, 2048) == ("own", 1)  # two rows a caller: one caller
    assert numba_cells.plan(8, 512, 2048) == ("own", 2)
    assert numba_cells.plan(16, 8, 32) == ("own", 1)  # a step too small to share
    assert numba_cells.plan(16, 128, 512) == ("own", 2)
    assert numba_cells.plan(64, 1024, 4096) == ("own", 2)
    monkeypatch.setattr(_threads, "CPUS", 1)
    assert numba_cells.plan(64, 1024, 4096) == ("own", 1)
    # the backward: the packed product on one caller, two from 32 rows and 2^27 multiply-adds per step
    monkeypatch.setattr(_threads, "CPUS", 2)
    for B, P, GH in [(1, 64, 256), (2, 1024, 4096), (8, 512, 2048), (16, 1024, 8192), (64, 512, 2048)]:
        assert numba_cells.plan(B, P, GH, backward=True) == ("own", 1)
    assert numba_cells.plan(64, 1024, 4096, backward=True) == ("own", 2)
    assert numba_cells.plan(32, 1024, 4096, backward=True) == ("own", 2)
    monkeypatch.setattr(_threads, "CPUS", 1)
    assert numba_cells.plan(64, 1024, 4096, backward=True) == ("own", 1)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
@pytest.mark.parametrize("batch, with_lengths", [((), False), ((4,), False), ((4,), True), ((2, 3), True)])
def test_forward_matches_portable_on_every_path(rng, dtype, opts, batch, with_lengths):
    arrays = _inputs(rng, 5, batch, 3, 6, dtype)
    lens = np.asarray(LENGTHS[batch], dtype=np.int64) if with_lengths else None
    for path, return_sequences in itertools.product(PATHS, (True, False)):
        got, want = _forward_both(arrays, lens, path, return_sequences=return_sequences, **opts)
        _check(got, want, dtype, (path, return_sequences))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(map(str, p)))
def test_forward_larger_sizes_and_long_blocks(rng, path):
    """H past the own loop's 4-column blocks, B odd, T past a return_sequences=False block (32 steps)."""
    arrays = _inputs(rng, 70, (5,), 7, 67, "float64")
    lens = np.asarray([70, 0, 33, 69, 1], dtype=np.int64)
    for reverse, return_sequences in itertools.product((False, True), (True, False)):
        got, want = _forward_both(arrays, lens, path, nonlinearity="tanh", reverse=reverse, leak=0.8,
                                  return_sequences=return_sequences)  # fmt: skip
        _check(got, want, "float64", (reverse, return_sequences))


@pytest.mark.parametrize("block", [5, 7])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(map(str, p)))
def test_forward_odd_blocks_of_time_and_odd_T(monkeypatch, rng, path, block):
    """return_sequences=False runs blocks of BLOCK_STEPS steps: odd blocks and odd T turn the double buffer's parity.

    The state of step k lives in S[k % 2] across blocks; with blocks of an
    even length (32, the default) a parity error between blocks goes unseen.
    """
    monkeypatch.setattr(_blocks, "BLOCK_STEPS", block)
    for T, batch, H in ((23, (5,), 9), (37, (33,), 67)):
        arrays = _inputs(rng, T, batch, 3, H, "float64")
        B = batch[0]
        lens = np.asarray([T, 0, T // 2, T - 1, 1] * (B // 5) + [T] * (B % 5), dtype=np.int64)
        for reverse, lengths in itertools.product((False, True), (None, lens)):
            got, want = _forward_both(arrays, lengths, path, nonlinearity="tanh", reverse=reverse, leak=0.7,
                                      return_sequences=False)  # fmt: skip
            _check(got, want, "float64", (T, reverse, lengths is not None))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(map(str, p)))
def test_forward_nan_and_inf_where_the_portable_loop_has_them(rng, path):
    x, h0, Wx, Wh, b = _inputs(rng, 6, (4,), 3, 6, "float64")
    x[2, 0, 1] = np.nan  # sequence 0 turns NaN from step 2 on
    x[1, 1, 0] = np.inf  # sequence 1 saturates
    Wh[3, 2] = -np.inf  # every sequence meets an infinite weight
    h0[2, 4] = np.nan  # a NaN start, frozen where the length is 0
    lens = np.asarray([6, 3, 0, 4], dtype=np.int64)
    for nonlinearity, return_sequences in itertools.product(("tanh", "relu"), (True, False)):
        got, want = _forward_both([x, h0, Wx, Wh, b], lens, path, nonlinearity=nonlinearity, reverse=False,
                                  leak=1.0, return_sequences=return_sequences)  # fmt: skip
        for g, w in zip(got, want):
            if w is not None:
                np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
                np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)  # NaN where NaN


@pytest.mark.parametrize("T, batch, D, H", [(0, (3,), 2, 4), (4, (0,), 2, 4), (4, (3,), 0, 4),
                                            (4, (3,), 2, 0), (0, (), 2, 4)])  # fmt: skip
def test_forward_zero_sizes(rng, dtype, T, batch, D, H):
    arrays = _inputs(rng, T, batch, D, H, dtype)
    for path, return_sequences in itertools.product(PATHS, (True, False)):
        got, want = _forward_both(arrays, None, path, nonlinearity="tanh", reverse=False, leak=1.0,
                                  return_sequences=return_sequences)  # fmt: skip
        _check(got, want, dtype, (path, return_sequences))


def test_rnn_forward_batch_first_and_strided_inputs(monkeypatch, rng, dtype):
    """Through ``rnn_forward`` (numba forced): batch-first, Fortran-ordered weights, against the reference."""
    monkeypatch.setenv("RNN_XP_NUMBA", "1")
    calls = []
    real = numba_cpu.scan_numba
    monkeypatch.setattr(numba_cpu, "scan_numba", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    x, h0, Wx, Wh, b = _inputs(rng, 6, (2, 3), 4, 9, "float64")
    want, _ = reference_rnn(x, h0, Wx, Wh, b, leak=0.7)
    x_bf = np.moveaxis(x, 0, -2).astype(dtype)  # (2, 3, T, D)
    got = rnn_xp.rnn_forward(x_bf, h0.astype(dtype), np.asfortranarray(Wx.astype(dtype)),
                             np.asfortranarray(Wh.astype(dtype)), b.astype(dtype), batch_first=True, leak=0.7)
    assert calls == [1] and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, np.moveaxis(want, 0, -2), **TOL[dtype])


# -- backward -------------------------------------------------------------------------------


def _backward_case(rng, T, batch, D, H, dtype, *, lens, opts, with_dh, with_dh_n):
    x, h0, Wx, Wh, b = _inputs(rng, T, batch, D, H, "float64")
    h_seq, _ = scan_portable(xp, x, h0, Wx, Wh, b, lengths=lens, return_sequences=True, **opts)
    dh = rng.standard_normal((T, *batch, H)) if with_dh else None
    dh_n = rng.standard_normal((*batch, H)) if with_dh_n else None
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    return tuple(cast(a) for a in (dh, x, h0, Wx, Wh, h_seq, dh_n))


def _backward_check(args, lens, dtype, opts, paths=PATHS):
    want = backward_portable(xp, *args, lengths=lens, **opts)
    for product, split, threads in paths:
        got = numba_backward.backward_numba(xp, *args, lengths=lens, product=product, split=split,
                                            threads=threads, **opts)  # fmt: skip
        for g, w, name in zip(got, want, ("dx", "dh0", "dWx", "dWh", "db")):
            assert g.shape == w.shape and g.dtype == np.dtype(dtype), (name, g.shape, w.shape)
            np.testing.assert_allclose(g, w, err_msg=f"{(product, split, threads)} {name}", **TOL[dtype])


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
@pytest.mark.parametrize("batch, with_lengths", [((), False), ((4,), False), ((4,), True), ((2, 3), True)])
def test_backward_matches_portable_on_every_path(rng, dtype, opts, batch, with_lengths):
    lens = np.asarray(LENGTHS[batch], dtype=np.int64) if with_lengths else None
    for with_dh, with_dh_n in ((True, False), (False, True), (True, True)):
        args = _backward_case(rng, 5, batch, 3, 6, dtype, lens=lens, opts=opts, with_dh=with_dh,
                              with_dh_n=with_dh_n)  # fmt: skip
        _backward_check(args, lens, dtype, opts)


@pytest.mark.parametrize("T", [40, 23])
def test_backward_larger_sizes(rng, T):
    """Even and odd T: the gradient's double buffer G[k % 2] ends at G[T % 2]."""
    lens = np.asarray([T, 0, 17, T - 1, 1], dtype=np.int64)
    for reverse in (False, True):
        opts = dict(nonlinearity="tanh", reverse=reverse, leak=0.8)
        args = _backward_case(rng, T, (5,), 7, 67, "float64", lens=lens, opts=opts, with_dh=True, with_dh_n=True)
        _backward_check(args, lens, "float64", opts)


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_frozen_steps_pass_the_gradient_exactly(rng, reverse):
    """Past a length, dh is ignored: an infinite dh there gives 0, not NaN (an infinite Wh: the test below)."""
    lens = np.asarray([6, 2, 0], dtype=np.int64)
    opts = dict(nonlinearity="tanh", reverse=reverse, leak=1.0)
    dh, x, h0, Wx, Wh, h_seq, dh_n = _backward_case(rng, 6, (3,), 2, 4, "float64", lens=lens, opts=opts,
                                                    with_dh=True, with_dh_n=True)  # fmt: skip
    dh[3:, 1] = np.inf
    dh[:, 2] = np.inf
    want = backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, lengths=lens, **opts)
    for product, split, threads in PATHS:
        got = numba_backward.backward_numba(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, lengths=lens, product=product,
                                            split=split, threads=threads, **opts)  # fmt: skip
        np.testing.assert_array_equal(got[1][2], dh_n[2])  # length 0: dh0 is dh_n, bit for bit
        for g, w in zip(got, want):
            assert np.all(np.isfinite(g))
            np.testing.assert_allclose(g, w, **TOL["float64"])


@pytest.mark.parametrize("leak", [1.0, 0.5])
@pytest.mark.parametrize("reverse", [False, True])
def test_backward_frozen_steps_pass_the_gradient_past_an_infinite_wh(rng, reverse, leak):
    """A frozen step's gradient never meets Wh: with an infinite Wh, a length-0 row's dh0 is dh_n, not NaN.

    (0 @ Wh is NaN where Wh is infinite; the compiled loop copies the frozen
    rows back after its product.) The other rows meet the infinity as the
    portable loop's do: NaN and infinities at the same places.
    """
    lens = np.asarray([6, 2, 0], dtype=np.int64)
    opts = dict(nonlinearity="tanh", reverse=reverse, leak=leak)
    dh, x, h0, Wx, Wh, h_seq, dh_n = _backward_case(rng, 6, (3,), 2, 4, "float64", lens=lens, opts=opts,
                                                    with_dh=True, with_dh_n=True)  # fmt: skip
    Wh = Wh.copy()
    Wh[1, 2] = np.inf
    Wh[3, 0] = -np.inf
    with np.errstate(all="ignore"):
        want = backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, lengths=lens, **opts)
        np.testing.assert_array_equal(want[1][2], dh_n[2])
        for product, split, threads in PATHS:
            got = numba_backward.backward_numba(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, lengths=lens, product=product,
                                                split=split, threads=threads, **opts)  # fmt: skip
            np.testing.assert_array_equal(got[1][2], dh_n[2])  # length 0: dh0 is dh_n, bit for bit
            for g, w, name in zip(got, want, ("dx", "dh0", "dWx", "dWh", "db")):
                np.testing.assert_allclose(g, w, equal_nan=True, err_msg=f"{(product, split, threads)} {name}",
                                           **TOL["float64"])  # fmt: skip


@pytest.mark.parametrize("T, batch", [(0, (3,)), (3, (0,))])
def test_backward_zero_sizes(rng, T, batch):
    opts = dict(nonlinearity="tanh", reverse=False, leak=1.0)
    args = _backward_case(rng, T, batch, 2, 4, "float64", lens=None, opts=opts, with_dh=True, with_dh_n=True)
    _backward_check(args, None, "float64", opts)


# -- tanh, plan, cache ------------------------------------------------------------------


def _whole_range(dtype, n=1 << 20):
    """Values over the whole range of ``dtype``: bit patterns at a stride through every exponent, both signs,
    sub-normals, signed zeros, the largest and smallest numbers, infinities and NaN, and the region near 0."""
    dtype = np.dtype(dtype)
    uint = np.dtype(f"u{dtype.itemsize}")
    top = (np.iinfo(uint).max >> 1) + 1  # the patterns of the positive numbers, infinity and NaN included
    patterns = np.arange(0, top, max(1, top // n), dtype=np.uint64).astype(uint)
    info = np.finfo(dtype)
    x = np.concatenate([
        patterns.view(dtype),
        np.geomspace(float(info.smallest_subnormal), 1.0, 20_000).astype(dtype),
        np.linspace(-25, 25, 100_001).astype(dtype),
        np.array([0.0, np.inf, np.nan, float(info.max), float(info.tiny), float(info.smallest_subnormal),
                  float(info.eps), 0.5, 1.0], dtype=dtype),
    ])  # fmt: skip
    return np.concatenate([x, -x])


def _ulps(got, want):
    """How many representable numbers lie between ``got`` and ``want`` (same dtype, neither NaN)."""
    bits = np.dtype(f"i{got.dtype.itemsize}")
    ordered = lambda a: np.where(a.view(bits) < 0, np.iinfo(bits).min - a.view(bits), a.view(bits)).astype(np.float64)  # noqa: E731
    return np.abs(ordered(got) - ordered(want))


@pytest.mark.parametrize("name", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_compiled_activations_within_one_ulp_of_numpys(name, activation):
    """The compiled loops' tanh (every cell's) and sigmoid (the gated cells' gates) against NumPy's, over the whole range.

    NumPy's: ``numpy.tanh``, and the sigmoid of ``_activations`` computed on
    NumPy arrays (what the NumPy loops run). Within 1 ulp everywhere,
    sub-normals, signed zeros (the sign kept), infinities and NaN included.
    """
    from rnn_xp._activations import activation as numpy_activation

    x = _whole_range(name)
    out = np.empty_like(x)
    numba_cpu.compiled()[f"{activation}_into"](x, out)
    with np.errstate(all="ignore"):
        want = numpy_activation(activation)(np, x)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(out[ok]), np.signbit(want[ok]))  # -0.0 stays -0.0
    ulps = _ulps(out[ok], want[ok])
    assert ulps.max() <= 1, (ulps.max(), x[ok][np.argmax(ulps)], out[ok][np.argmax(ulps)], want[ok][np.argmax(ulps)])


def test_plan_threads_rows_for_batches_and_columns_for_one_sequence():
    # the forward: the own product at every size; rows from eight rows (four per thread), else columns
    assert numba_cpu.plan(1, 64, threads=2) == ("own", "rows", 1)  # a step is too small to share
    assert numba_cpu.plan(16, 128, threads=2) == ("own", "rows", 2)
    assert numba_cpu.plan(4, 256, threads=2) == ("own", "cols", 2)
    assert numba_cpu.plan(1, 1024, threads=2) == ("own", "cols", 2)
    assert numba_cpu.plan(64, 1024, threads=1) == ("own", "rows", 1)
    # the backward: rows from four rows, never the columns
    assert numba_cpu.plan(1, 64, threads=2, backward=True) == ("own", "rows", 1)
    assert numba_cpu.plan(4, 256, threads=2, backward=True) == ("own", "rows", 2)
    assert numba_cpu.plan(1, 1024, threads=2, backward=True) == ("own", "rows", 1)
    assert numba_cpu.plan(64, 1024, threads=1, backward=True) == ("own", "rows", 1)


@pytest.mark.parametrize("name", ["x", "Wx", "Wh", "b"])
def test_a_second_dtype_is_refused_before_the_compiled_loop_reads_it(name):
    """The compiled loops read raw addresses in the state's dtype: a float64 array among float32 ones is refused."""
    rng = np.random.default_rng(0)
    T, B, D, H = 5, 2, 8, 128  # the BLAS product (a float64 Wh read as float32 ran past the buffers)
    arrays = {"x": rng.standard_normal((T, B, D)), "Wx": rng.standard_normal((H, D)),
              "Wh": rng.standard_normal((H, H)), "b": rng.standard_normal(H)}  # fmt: skip
    arrays = {k: v.astype(np.float64 if k == name else np.float32) for k, v in arrays.items()}
    h0 = np.zeros((B, H), np.float32)
    kw = dict(nonlinearity="tanh", lengths=None, reverse=False, leak=1.0)
    with pytest.raises(TypeError, match=f"one dtype: {name} is float64, the state is float32"):
        numba_cpu.scan_numba(xp, arrays["x"], h0, arrays["Wx"], arrays["Wh"], arrays["b"], return_sequences=True,
                             **kw)  # fmt: skip
    if name != "b":
        h_seq = np.zeros((T, B, H), np.float32)
        with pytest.raises(TypeError, match=f"one dtype: {name} is float64"):
            numba_backward.backward_numba(xp, h_seq, arrays["x"], h0, arrays["Wx"], arrays["Wh"], h_seq, None, **kw)


def _exported_gemm(dtype):
    """Where NumPy's own BLAS exports ``cblas_?gemm`` (looked up here, apart from ``numba_cpu``'s search)."""
    import ctypes
    import glob

    p = "s" if np.dtype(dtype).itemsize == 4 else "d"
    root = os.path.dirname(os.path.dirname(np.__file__))
    paths = glob.glob(os.path.join(root, "numpy.libs", "*openblas*"))
    try:
        from threadpoolctl import threadpool_info

        paths += [lib["filepath"] for lib in threadpool_info() if lib["internal_api"] == "openblas"]
    except ImportError:
        pass
    names = [f"{prefix}cblas_{p}gemm{suffix}" for prefix in ("", "scipy_") for suffix in ("", "64_")]
    return [f"{name} of {path}" for path in paths for name in names if hasattr(ctypes.CDLL(path), name)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_found_by_address_agrees_with_numpy(dtype):
    """Where NumPy's BLAS exports cblas_?gemm, the compiled loop finds it and its self-check passes.

    A failing self-check (a wrong argument in the call, say) would otherwise
    send every size to the own product loop, quietly.
    """
    exported = _exported_gemm(dtype)
    address, ilp64 = numba_cpu.blas_gemm(dtype)
    if not exported:
        assert address == 0 and "exports no cblas" in numba_cpu.blas_status(dtype)
        pytest.skip("NumPy's BLAS exports no cblas_?gemm here: the own product loop runs")
    assert address != 0, (numba_cpu.blas_status(dtype), exported)
    assert numba_cpu.blas_status(dtype) == ""
    assert numba_cpu._gemm_agrees(address, ilp64, np.dtype(dtype))


def _counting_gemm(monkeypatch, dtype):
    """NumPy's cblas_?gemm behind a ctypes callback that counts its calls (from any thread)."""
    import ctypes

    address, ilp64 = numba_cpu.blas_gemm(dtype)
    if address == 0:
        pytest.skip(f"no BLAS by address here: {numba_cpu.blas_status(dtype)}")
    i, real = ctypes.c_int, (ctypes.c_float if np.dtype(dtype).itemsize == 4 else ctypes.c_double)
    n = ctypes.c_int64 if ilp64 else ctypes.c_int32
    p = ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(None, i, i, i, n, n, n, real, p, n, p, n, real, p, n)
    gemm = proto(address)
    calls = []

    def counting(*args):
        calls.append(1)  # list.append holds the GIL: safe from the pool's threads
        gemm(*args)

    callback = proto(counting)
    monkeypatch.setattr(numba_cpu, "blas_gemm", lambda d: (ctypes.cast(callback, ctypes.c_void_p).value, ilp64))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("split, threads", [("rows", 1), ("rows", 2), ("cols", 2)])
def test_the_blas_product_calls_blas_every_step(monkeypatch, rng, dtype, split, threads):
    """product="blas": each thread calls cblas_?gemm once per step, forward and backward, and the answer is right."""
    calls = _counting_gemm(monkeypatch, dtype)
    T, name = 9, np.dtype(dtype).name
    arrays = _inputs(rng, T, (4,), 3, 8, name)
    lens = np.asarray([9, 0, 4, 8], dtype=np.int64)
    opts = dict(nonlinearity="tanh", reverse=False, leak=1.0)
    got, want = _forward_both(arrays, lens, ("blas", split, threads), return_sequences=True, **opts)
    _check(got, want, name, (split, threads))
    assert len(calls) == T * threads
    del calls[:]
    args = _backward_case(rng, T, (4,), 3, 8, name, lens=lens, opts=opts, with_dh=True, with_dh_n=True)
    _backward_check(args, lens, name, opts, paths=[("blas", split, threads)])
    assert len(calls) == T * threads


_CACHE_CHECK = """
import numpy as np, rnn_xp
from rnn_xp.kernels import _numba_jit as J
x = np.ones((5, 2, 3), np.float32)
h = rnn_xp.rnn_forward(x, None, np.ones((4, 3), np.float32), np.eye(4, dtype=np.float32))
print(sum(J.recurrence.stats.cache_hits.values()), sum(J.recurrence.stats.cache_misses.values()))
"""


def test_a_new_process_loads_the_compiled_code_from_disk(tmp_path):
    """numba's on-disk cache: the second process compiles nothing (misses 0, hits 1)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), RNN_XP_NUMBA="1")
    runs = [subprocess.run([sys.executable, "-c", _CACHE_CHECK], capture_output=True, text=True, env=env,
                           timeout=300) for _ in range(2)]  # fmt: skip
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    assert runs[1].stdout.split() == ["1", "0"], [r.stdout for r in runs]


_CELL_CACHE_CHECK = """
import sys
from dataclasses import dataclass
import numpy as np
import array_api_compat.numpy as xp
from rnn_xp.cells import LSTMCell, LSTMWeights
from rnn_xp.kernels import numba_cells
from rnn_xp.kernels.portable import scan_cell


@dataclass(frozen=True)
class Doubled(LSTMCell):  # an LSTM whose step is edited: h_t is twice the LSTM's
    @staticmethod
    def pointwise(ops, xg, hg, carry, peep=None, coupled=None):
        (c,) = carry
        c = ops.fa(xg[1] + hg[1]) * c + ops.fa(xg[0] + hg[0]) * ops.ga(xg[2] + hg[2])
        m = ops.fa(xg[3] + hg[3]) * ops.ha(c)
        return m + m, c


rng = np.random.default_rng(0)
x = rng.standard_normal((5, 2, 3)).astype(np.float32)
w = LSTMWeights(*(rng.standard_normal(s).astype(np.float32) / 3 for s in ((16, 3), (16, 4), (16,), (16,))))
state0 = (np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))
for cell in [LSTMCell()] + ([Doubled()] if sys.argv[1] == "edited" else []):
    got = numba_cells.scan_cells_numba(xp, cell, x, state0, w, lengths=None, reverse=False, return_sequences=True)
    want = scan_cell(xp, cell, x, state0, w, lengths=None, reverse=False, return_sequences=True)
    right = all(np.allclose(g, v, rtol=1e-5, atol=1e-6) for g, v in zip(got[0], want[0]))
    loop = numba_cells.numba_cpu.compiled()["cell_loops"](cell)["cell_forward"]
    print(type(cell).__name__, sum(loop.stats.cache_hits.values()), sum(loop.stats.cache_misses.values()),
          "right" if right else "wrong")
"""


def test_the_cell_loops_load_from_disk_and_an_edited_cell_compiles_anew(tmp_path):
    """numba's cache keeps the cells' loops (a new process compiles nothing), and a cell whose step is edited
    gets loops compiled from its code, not the cached ones of the cell it came from (which give other numbers)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    run = lambda case: subprocess.run([sys.executable, "-c", _CELL_CACHE_CHECK, case], capture_output=True,  # noqa: E731
                                      text=True, env=env, timeout=600)  # fmt: skip
    first, second = run("plain"), run("edited")
    for proc in (first, second):
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert first.stdout.split() == ["LSTMCell", "0", "1", "right"], first.stdout
    assert second.stdout.split() == ["LSTMCell", "1", "0", "right", "Doubled", "0", "1", "right"], second.stdout


_CACHE_FAILURE = """
import sys, warnings
import numpy as np
import array_api_compat.numpy as xp

if sys.argv[1] == "full":  # a disk with no room left: numba's writing of its cache fails
    import errno
    from numba.core import caching

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    caching.IndexDataCacheFile._save_index = caching.IndexDataCacheFile._save_data = full

import rnn_xp
from rnn_xp.kernels import numba_cpu
from rnn_xp.kernels.portable import backward_portable, scan_portable

if sys.argv[1] == "no-compiler":  # nor can numba compile without its cache
    def broken():
        raise RuntimeError("no compiler here")

    numba_cpu._load_uncached = broken

rng = np.random.default_rng(0)
x, h0 = rng.standard_normal((6, 4, 3)).astype(np.float32), rng.standard_normal((4, 16)).astype(np.float32)
Wx, Wh = (rng.standard_normal((16, 3)) / 2).astype(np.float32), (rng.standard_normal((16, 16)) / 4).astype(np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    h = rnn_xp.rnn_forward(x, h0, Wx, Wh)
    g = rnn_xp.rnn_backward(np.ones_like(h), x, h0, Wx, Wh, None, h)
    rnn_xp.rnn_forward(x, h0, Wx, Wh)
want = scan_portable(xp, x, h0, Wx, Wh, None, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
                     return_sequences=True)[0]
want_g = backward_portable(xp, np.ones_like(h), x, h0, Wx, Wh, h, None, nonlinearity="tanh", lengths=None,
                           reverse=False, leak=1.0)
right = np.allclose(h, want, rtol=2e-4, atol=2e-5) and all(
    np.allclose(a, b, rtol=2e-4, atol=2e-5) for a, b in zip(g, want_g) if a is not None)  # db: no bias
ours = [w for w in caught if str(w.message).startswith("rnn_xp:")]
for w in ours:
    print(w.message, file=sys.stderr)
print(len(ours), "right" if right else "wrong", "compiled" if numba_cpu.available() else "numpy-loop")
"""


def _run_with_cache(tmp_path, cache_dir, case="plain"):
    """The script above in a new process whose numba cache is confined to ``cache_dir``."""
    from numba.core import config

    if not hasattr(config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip("this numba cannot confine its cache to one folder (NUMBA_CACHE_LOCATOR_CLASSES)")
    script = tmp_path / "cache_failure.py"
    script.write_text(_CACHE_FAILURE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator",
               RNN_XP_NUMBA="1")  # fmt: skip
    return subprocess.run([sys.executable, str(script), case], capture_output=True, text=True, env=env, timeout=600)


def test_no_usable_cache_folder_compiles_in_the_process(tmp_path):
    """No folder numba may write its cache to (read-only package and HOME): one warning, the compiled loop runs."""
    (tmp_path / "a-file").write_text("")
    proc = _run_with_cache(tmp_path, tmp_path / "a-file" / "cache")  # no folder can be made under a file
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "right", "compiled"], proc.stdout + proc.stderr[-2000:]
    assert "cache cannot be used" in proc.stderr and "cannot cache function" in proc.stderr


@pytest.fixture(scope="module")
def written_cache(tmp_path_factory):
    """A numba cache as a first run of the script above writes it (no warning), for tests to copy and damage."""
    folder = tmp_path_factory.mktemp("numba")
    first = _run_with_cache(folder, folder / "cache")
    assert first.returncode == 0 and first.stdout.split() == ["0", "right", "compiled"], first.stderr[-3000:]
    return folder / "cache"


@pytest.mark.parametrize("damage", ["nbc", "nbi"])
def test_a_corrupted_cache_compiles_in_the_process(tmp_path, written_cache, damage):
    """Machine code overwritten (.nbc) or an index cut short (.nbi): one warning, right results, every run."""
    cache = tmp_path / "cache"
    shutil.copytree(written_cache, cache)  # the first run's cache, written once for both kinds of damage
    files = sorted(cache.rglob(f"*.{damage}"))
    assert files, sorted(cache.rglob("*"))
    for f in files:
        f.write_bytes(b"garbage" if damage == "nbc" else f.read_bytes()[:20])
    for _ in range(2):  # the damaged files stay: every run meets them
        proc = _run_with_cache(tmp_path, cache)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == ["1", "right", "compiled"], proc.stdout + proc.stderr[-2000:]


def test_a_full_disk_compiles_in_the_process(tmp_path):
    """numba cannot write its cache (ENOSPC): one warning, the compiled loop runs."""
    proc = _run_with_cache(tmp_path, tmp_path / "cache", "full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "right", "compiled"], proc.stdout + proc.stderr[-2000:]
    assert "No space left on device" in proc.stderr


def test_no_cache_and_no_compiler_runs_the_numpy_loop(tmp_path):
    """Where numba can compile neither from its cache nor anew, the NumPy loop runs, after one warning."""
    (tmp_path / "a-file").write_text("")
    proc = _run_with_cache(tmp_path, tmp_path / "a-file" / "cache", "no-compiler")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "right", "numpy-loop"], proc.stdout + proc.stderr[-2000:]
    assert "the NumPy loop runs instead" in proc.stderr



@pytest.mark.parametrize("dtype, K", [("float32", 3), ("float32", 2000), ("float64", 4096)])
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (4, 4), (9, 37), (16, 64)])
def test_own_product_blocks_and_leftovers_match_float64(rng, dtype, K, rows, cols):
    """The register-blocked product (4 x 4 tiles, leftover rows and columns, panels of W) against a float64 product.

    K = 4096 in float64 makes panels of four rows of W, so every tile is in a
    panel of its own; rows 1..9 leave 1 to 3 rows over, 5 and 37 columns one.
    """
    x = rng.standard_normal((rows + 2, K)).astype(dtype)
    W = rng.standard_normal((cols, K)).astype(dtype)
    out = rng.standard_normal((rows + 2, cols)).astype(dtype)
    want = out.astype(np.float64).copy()
    want[1:rows + 1] += x[1:rows + 1].astype(np.float64) @ W.T.astype(np.float64)
    got = out.copy()
    numba_cpu.compiled()["project_rows"](got, x, W, 1, rows + 1)  # rows 1..rows: the first and last untouched
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * eps * np.sqrt(K) * (np.abs(x).max() * np.abs(W).max() * K))
    np.testing.assert_array_equal(got[[0, -1]], out[[0, -1]])


def test_own_product_keeps_ieee_non_finite_values(rng):
    """inf * 0 is NaN, inf + finite is inf, NaN spreads: as BLAS and the portable loop have it."""
    x = np.zeros((5, 8), np.float64)
    W = rng.standard_normal((6, 8))
    x[0, 3] = np.inf  # row 0: inf times W's column 3 (finite): +-inf
    x[1, 2] = np.nan  # row 1: NaN everywhere
    W[4, 5] = np.inf  # column 4: inf * x[:, 5] (0 for most rows): NaN
    x[2, 5] = 1.0
    got = np.zeros((5, 6))
    numba_cpu.compiled()["project_rows"](got, x, W, 0, 5)
    with np.errstate(all="ignore"):
        want = np.einsum("ik,jk->ijk", x, W).sum(axis=-1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(want)], want[~np.isnan(want)])


@pytest.mark.parametrize("dtype, K", [("float32", 3), ("float32", 700), ("float64", 129)])
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (8, 32), (9, 37), (17, 100)])
def test_packed_product_tiles_strips_and_leftovers_match_float64(rng, dtype, K, rows, cols):
    """The packed product (tiles of 1 to 8 rows, whole strips, a strip cut by the columns asked for) against a
    float64 product; the rows and columns outside ``r0:r1``, ``c0:c1`` untouched."""
    from rnn_xp.kernels._packed import pack

    x = rng.standard_normal((rows + 2, K)).astype(dtype)
    W = rng.standard_normal((cols + 3, K)).astype(dtype)
    out = rng.standard_normal((rows + 2, cols + 3)).astype(dtype)
    want = out.astype(np.float64).copy()
    c0, c1 = 1, cols + 1
    want[1:rows + 1, c0:c1] += x[1:rows + 1].astype(np.float64) @ W[c0:c1].T.astype(np.float64)
    got = out.copy()
    numba_cpu.compiled()["packed_product"](got, x, pack(W), 1, rows + 1, c0, c1)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * eps * np.sqrt(K) * (np.abs(x).max() * np.abs(W).max() * K))
    np.testing.assert_array_equal(got[[0, -1]], out[[0, -1]])
    np.testing.assert_array_equal(got[:, [0, -2, -1]], out[:, [0, -2, -1]])


def test_packed_product_is_the_same_bits_for_a_row_in_any_tile_and_strip(rng, dtype):
    """Each element is the same multiply-adds in the same order: a row alone or one to three rows (whole strips
    several at a time), in a tile of any size, and a column range cut through a strip give the bits of the whole
    product."""
    from rnn_xp.kernels._packed import pack

    N = 300  # nine strips and a cut one in float32 (one to three rows take whole strips four or two at a time)
    x = rng.standard_normal((13, 45)).astype(dtype)
    W = rng.standard_normal((N, 45)).astype(dtype)
    WP = pack(W)
    product = numba_cpu.compiled()["packed_product"]
    whole = np.zeros((13, N), dtype)
    product(whole, x, WP, 0, 13, 0, N)
    for lo, hi in [(0, 1), (3, 5), (5, 8), (5, 13), (12, 13)]:
        part = np.zeros((hi - lo, N), dtype)
        product(part, np.ascontiguousarray(x[lo:hi]), WP, 0, hi - lo, 0, N)
        np.testing.assert_array_equal(part, whole[lo:hi])
        for c0, c1 in [(0, 7), (7, 64), (64, 250), (250, N)]:  # rows and columns cut together
            product(part, np.ascontiguousarray(x[lo:hi]), WP, 0, hi - lo, c0, c1)
        np.testing.assert_array_equal(part, 2 * whole[lo:hi])  # o + the same sums: twice the sums, exactly
    cut = np.zeros((13, N), dtype)
    for c0, c1 in [(0, 7), (7, 64), (64, 250), (250, N)]:
        product(cut, x, WP, 0, 13, c0, c1)
    np.testing.assert_array_equal(cut, whole)


def test_packed_product_keeps_ieee_non_finite_values(rng):
    """inf * 0 is NaN, inf + finite is inf, NaN spreads, as in the own product's test; the zero padding of the
    last strip puts no NaN in the columns asked for."""
    from rnn_xp.kernels._packed import pack

    x = np.zeros((5, 8), np.float64)
    W = rng.standard_normal((6, 8))
    x[0, 3] = np.inf
    x[1, 2] = np.nan
    W[4, 5] = np.inf
    x[2, 5] = 1.0
    got = np.zeros((5, 6))
    numba_cpu.compiled()["packed_product"](got, x, pack(W), 0, 5, 0, 6)
    with np.errstate(all="ignore"):
        want = np.einsum("ik,jk->ijk", x, W).sum(axis=-1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(want)], want[~np.isnan(want)])


def test_pack_lays_out_strips_of_the_transpose():
    from rnn_xp.kernels._packed import pack, strip_width

    W = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    S = strip_width(4)
    WP = pack(W)
    assert WP.shape == (-(-70 // S), 3, S) and WP.flags.c_contiguous
    for s in range(WP.shape[0]):
        block = W[s * S:(s + 1) * S].T
        np.testing.assert_array_equal(WP[s, :, :block.shape[1]], block)
        assert not WP[s, :, block.shape[1]:].any()  # zeros past the last row


ELMAN_SPLITS = [(None, 1), ("cols", 2), ("rows", 2)]


@pytest.mark.parametrize("H", [5, 37, 64])
def test_a_rows_forward_is_the_same_bits_in_any_batch(rng, dtype, H):
    """The own product sums every element with the same code: rows 3..5 of 13 alone, or one row alone, give
    the bits they have in the whole batch, on every thread split (Dask runs each chunk as a batch of its own)."""
    x, h0, Wx, Wh, b = _inputs(rng, 7, (13,), 11, H, dtype)
    o = dict(nonlinearity="tanh", lengths=None, reverse=False, leak=1.0, return_sequences=True)
    whole = numba_cpu.scan_numba(xp, x, h0, Wx, Wh, b, **o)[0]
    for (split, threads), (lo, hi) in itertools.product(ELMAN_SPLITS, [(0, 1), (3, 5), (5, 13), (0, 13)]):
        part = numba_cpu.scan_numba(xp, np.ascontiguousarray(x[:, lo:hi]), h0[lo:hi].copy(), Wx, Wh, b,
                                    split=split, threads=threads, **o)[0]  # fmt: skip
        np.testing.assert_array_equal(part, whole[:, lo:hi], err_msg=f"{split} {threads} rows {lo}:{hi}")


@pytest.mark.parametrize("cell", GATED)
def test_cells_buffers_on_huge_pages_give_the_portable_answer(monkeypatch, rng, cell):
    """With every work buffer placed by ``_pages.empty`` on a huge page boundary (``HUGE_FROM`` 0: the kept
    products, ``saved``'s blocks, the gates' gradients), the forward keeps the same outputs and both backward
    loops give the portable backward's gradients (lengths, reverse)."""
    from rnn_xp.kernels import _pages

    lens = np.asarray([7, 0, 3, 6], dtype=np.int64)
    c, args = _cell_backward_case(rng, cell, 7, (4,), 3, 5, "float32", lens=lens, reverse=True, with_d_c=True)
    d_out, x, state0, w, _, d_fin = args
    plain = numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=lens, reverse=True, return_sequences=True)
    monkeypatch.setattr(_pages, "HUGE_FROM", 0)
    monkeypatch.setattr(numpy_cells, "SAVED_ELEMENTS", 2 * 4 * w.W_hh.shape[0])
    monkeypatch.setattr(numpy_cells, "SAVED_BLOCKS_FROM", 1)
    seqs, finals, kept = numba_cells.scan_cells_numba(xp, c, x, state0, w, lengths=lens, reverse=True,
                                                      return_sequences=True, keep=True)  # fmt: skip
    assert all(k.ctypes.data % _pages.HUGE_PAGE == 0 for k in kept[:1])
    for a, b in zip(seqs + finals, plain[0] + plain[1], strict=True):
        np.testing.assert_array_equal(a, b)
    args = (d_out, x, state0, w, seqs, d_fin)
    want = backward_cell(xp, c, *args, lengths=lens, reverse=True)
    for got in (numba_cells.backward_cells_numba(xp, c, *args, lengths=lens, reverse=True, kept=kept),
                numpy_cells.backward_cells_numpy(xp, c, *args, lengths=lens, reverse=True, kept=kept)):
        for g, wv in zip([got[0], *got[1], *got[2]], [want[0], *want[1], *want[2]], strict=True):
            assert (g is None) == (wv is None)
            if wv is not None:
                np.testing.assert_allclose(g, wv, equal_nan=True, **TOL["float32"])


# -- the backward's products over all steps, compiled (numba_products) ------------------------


@pytest.mark.parametrize("cell", GATED)
def test_cells_backward_with_compiled_products_matches_portable(rng, backward_products, dtype, cell):
    """The weight gradients and dx by the compiled products, and by BLAS's on two callers: the portable
    backward's (lengths 0 and T, reverse, odd T, an infinite ``W_hh`` and infinite upstream gradients past the
    lengths, zero sizes)."""
    lens = np.asarray([23, 0, 11, 22, 1], dtype=np.int64)
    for reverse in (False, True):
        c, args = _cell_backward_case(rng, cell, 23, (5,), 7, 19, dtype, lens=lens, reverse=reverse, with_d_c=True)
        _cell_backward_check(c, args, lens, reverse, dtype)
    short = np.asarray([6, 2, 0], dtype=np.int64)
    c, (d_out, x, state0, w, seqs, d_fin) = _cell_backward_case(rng, cell, 6, (3,), 2, 4, "float64", lens=short,
                                                                reverse=True, with_d_c=True)  # fmt: skip
    d_out = tuple(np.array(d) for d in d_out)
    for d in d_out:
        d[3:, 1] = np.inf
    w.W_hh[1, 2] = np.inf
    with np.errstate(all="ignore"):
        _cell_backward_check(c, (d_out, x, state0, w, seqs, d_fin), short, True, "float64")
    c, x, state0, w = _cell_inputs(rng, cell, 4, (0,), 2, 4, "float64")
    seqs, _ = scan_cell(xp, c, x, state0, w, lengths=None, reverse=False, return_sequences=True)
    _cell_backward_check(c, (tuple(np.ones_like(q) for q in seqs), x, state0, w, seqs, state0), None, False,
                         "float64")  # fmt: skip


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_with_compiled_products_matches_portable(rng, backward_products, dtype, reverse):
    """Elman's dx, dWx and dWh by the compiled products, and by BLAS's on two callers: the portable backward's
    (lengths, leak, reverse)."""
    lens = np.asarray([23, 0, 17, 22, 1], dtype=np.int64)
    opts = dict(nonlinearity="tanh", reverse=reverse, leak=0.8)
    args = _backward_case(rng, 23, (5,), 7, 67, dtype, lens=lens, opts=opts, with_dh=True, with_dh_n=True)
    _backward_check(args, lens, dtype, opts)
    opts = dict(nonlinearity="relu", reverse=reverse, leak=1.0)
    args = _backward_case(rng, 9, (4,), 33, 40, dtype, lens=None, opts=opts, with_dh=True, with_dh_n=False)
    _backward_check(args, None, dtype, opts)
