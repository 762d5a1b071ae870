"""The in-place NumPy kernels (``rnn_xp.kernels.numpy``; ``numpy_cells`` for the gated cells): views, blocks
of time, memory, BLAS threads.

Their agreement with the portable loop on every option is in ``test_kernels.py`` and ``test_differential.py``.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from support import random_rnn, reference_rnn

import rnn_xp
from rnn_xp import kernels
from rnn_xp.kernels import _blocks, numpy_cells
from rnn_xp.kernels import numpy as numpy_kernel
from rnn_xp.kernels.portable import scan_cell
from cell_cases import CELLS, arrays, make_cell


def _cell_args(a, cell):
    """``(state0, w)`` of ``cell_cases.arrays``' arrays."""
    from rnn_xp.cells import GRUWeights, LSTMWeights

    if cell == "lstm":
        return (a["h0"], a["c0"]), LSTMWeights(a["W_ih"], a["W_hh"], a.get("b_ih"), a.get("b_hh"), a.get("W_hr"),
                                               a.get("peepholes"))  # fmt: skip
    return (a["h0"],), GRUWeights(a["W_ih"], a["W_hh"], a.get("b_ih"), a.get("b_hh"))


def test_last_state_is_not_a_view_of_the_output(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (2,), 3, 5)
    seq, last = numpy_kernel.scan_numpy(
        None, x, h0, Wx, Wh, b, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
        return_sequences=True,
    )  # fmt: skip
    kept = last.copy()
    seq[...] = 0.0
    np.testing.assert_array_equal(last, kept)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [50, 13, 0]])
def test_blocks_of_time_steps(rng, monkeypatch, cell, reverse, lengths):
    """return_sequences=False projects the input in blocks; block edges change nothing."""
    monkeypatch.setattr(_blocks, "BLOCK_STEPS", 7)
    lens = None if lengths is None else np.asarray(lengths)
    if cell != "elman":
        import array_api_compat.numpy as npx

        a = arrays(rng, cell, T=50, batch=(3,), D=2, H=4, proj=3 if cell == "lstm" else 0)
        state0, w = _cell_args(a, cell)
        c = make_cell(cell, {})
        _, want = scan_cell(npx, c, a["x"], state0, w, lengths=lens, reverse=reverse, return_sequences=True)
        seqs, got = numpy_cells.scan_cells_numpy(npx, c, a["x"], state0, w, lengths=lens, reverse=reverse,
                                                 return_sequences=False)  # fmt: skip
        assert seqs is None
        for g, v in zip(got, want, strict=True):
            np.testing.assert_allclose(g, v, rtol=1e-10, atol=1e-12)
        return
    x, h0, Wx, Wh, b = random_rnn(rng, 50, (3,), 2, 4)
    _, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, reverse=reverse, leak=0.7)
    got = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lens, reverse=reverse, leak=0.7,
                             return_sequences=False)
    np.testing.assert_allclose(got, last, rtol=1e-10, atol=1e-12)


def _forward(cell, x, B, D, H, **kw):
    """The NumPy row's forward of ``cell`` on float32 weights drawn once (seed 0), ``x`` ``(T, B, D)``."""
    rng = np.random.default_rng(0)
    if cell == "elman":
        _, h0, Wx, Wh, b = (a.astype(np.float32) for a in random_rnn(rng, 0, (B,), D, H))
        return rnn_xp.rnn_forward(x, h0, Wx, Wh, b, **kw)
    a = {k: v.astype(np.float32) for k, v in arrays(rng, cell, T=0, batch=(B,), D=D, H=H).items() if k != "x"}
    if cell == "lstm":
        out = rnn_xp.lstm_forward(x, (a["h0"], a["c0"]), a["W_ih"], a["W_hh"], a["b_ih"], a["b_hh"], **kw)
        return out if kw.get("return_sequences", True) is False else out[0]
    return rnn_xp.gru_forward(x, a["h0"], a["W_ih"], a["W_hh"], a["b_ih"], a["b_hh"], **kw)


def _peak_last_state(T, cell="elman", B=8, D=16, H=32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    _forward(cell, x[:2], B, D, H, return_sequences=False)  # the kernel's first call loads what it uses
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    _forward(cell, x, B, D, H, return_sequences=False)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("cell", CELLS)
def test_last_state_memory_does_not_grow_with_T(monkeypatch, cell):
    """No (T, B, H) buffer: peak extra memory at T=20000 is that at T=1000, within 10%.

    With B=8, H=32 a (T, B, H) float32 buffer would be 1 MB at T=1000 and
    20 MB at T=20000 (four times that for an LSTM's gates). The in-place loop
    (numba off: the compiled one keeps its buffers alike, tested apart).
    """
    monkeypatch.setenv("RNN_XP_NUMBA", "0")
    small, large = _peak_last_state(1000, cell), _peak_last_state(20000, cell)
    assert large <= 1.1 * small + 64 * 1024, (small, large)
    assert large < 20000 * 8 * 32 * 4 / 4  # far below one (T, B, H) buffer


@pytest.mark.parametrize("cell", CELLS)
def test_full_forward_extra_memory_is_output_plus_O_BH(monkeypatch, cell):
    """Beyond the outputs, a few (B, H) buffers (the gated cells: their gates' projection, a block of steps)."""
    monkeypatch.setenv("RNN_XP_NUMBA", "0")
    rng = np.random.default_rng(0)
    T, B, D, H = 2000, 8, 16, 32
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    _forward(cell, x[:2], B, D, H)  # the kernel's first call loads what it uses (numba, BLAS)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out = _forward(cell, x, B, D, H)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    G = {"elman": 1, "lstm": 4, "gru": 3}[cell]
    outputs = out.nbytes * (2 if cell == "lstm" else 1)  # an LSTM outputs its cell states too (c_seq)
    block = 0 if cell == "elman" else 2 * _blocks.block_steps(T, B, G * H) * B * G * H * 4  # and the bias added
    extra = peak - outputs
    assert 0 <= extra <= block + 16 * B * H * 4 * G + 4 * H * H * 4 * G + 64 * 1024, extra


@pytest.mark.parametrize("shape", [(65, 65), (130, 200), (200, 130), (64, 64), (3, 7)])
def test_tiled_transpose_copy(shape):
    from rnn_xp.kernels._blocks import transposed_copy

    W = np.random.default_rng(0).standard_normal(shape)
    Wt = transposed_copy(np, W)
    assert Wt.flags.c_contiguous
    np.testing.assert_array_equal(Wt, W.T)


def test_numpy_kernel_large_hidden_matches_reference():
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(1), 4, (3,), 5, 150)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    np.testing.assert_allclose(rnn_xp.rnn_forward(x, h0, Wx, Wh, b), expected, rtol=1e-12, atol=1e-12)


def _blas_threads_now():
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_small_steps_run_on_one_thread_and_a_large_projection_on_all(two_blas_threads, monkeypatch, rng,
                                                                     return_sequences):  # fmt: skip
    """Below _STEP_THREADS_MACS the steps run on one BLAS thread; the projection keeps every thread when large."""
    monkeypatch.setattr(kernels, "MKL_MACS", 1 << 40)  # the OpenBLAS loop, with or without oneMKL
    monkeypatch.setattr(kernels, "MKL_ROW_MACS", 1 << 40)
    seen = {"project": set(), "step": set()}
    real_project, real_combine = numpy_kernel.project, numpy_kernel._numpy_combine

    def project(*args, **kw):
        seen["project"].add(_blas_threads_now())
        return real_project(*args, **kw)

    def numpy_combine(mod, activate):
        combine = real_combine(mod, activate)

        def spy(*args):
            seen["step"].add(_blas_threads_now())
            return combine(*args)

        return spy

    monkeypatch.setattr(numpy_kernel, "project", project)
    monkeypatch.setattr(numpy_kernel, "_numpy_combine", numpy_combine)
    for D, want_project in ((4, {1}), (4096, {_blas_threads_now()})):
        # B * H * H = 128K steps; the projection of a block is tiny, then 84M (T = 20) / 34M (8 steps)
        seen["project"].clear(), seen["step"].clear()
        x, h0, Wx, Wh, b = [a.astype(np.float32) for a in random_rnn(rng, 20, (8,), D, 128)]
        monkeypatch.setattr(_blocks, "BLOCK_STEPS", 8)
        h_seq, h_last = numpy_kernel.scan_numpy(
            np, x, h0, Wx, Wh, b, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
            return_sequences=return_sequences,
        )  # fmt: skip
        assert seen["step"] == {1}
        assert seen["project"] == want_project, D
        want_seq, want_last = reference_rnn(x, h0, Wx, Wh, b)
        np.testing.assert_allclose(h_last, want_last, rtol=1e-4, atol=1e-5)
        if return_sequences:
            np.testing.assert_allclose(h_seq, want_seq, rtol=1e-4, atol=1e-5)
    assert _blas_threads_now() >= 2  # the caller's thread count is back


def test_steps_from_step_threads_macs_run_on_every_thread(two_blas_threads, monkeypatch, rng):
    """From _STEP_THREADS_MACS multiply-adds per step (B = 8, H = 256: 2^19) the steps keep every BLAS thread."""
    monkeypatch.setattr(kernels, "MKL_MACS", 1 << 40)  # the OpenBLAS loop, with or without oneMKL
    monkeypatch.setattr(kernels, "MKL_ROW_MACS", 1 << 40)
    assert 8 * 256 * 256 == numpy_kernel._STEP_THREADS_MACS
    seen = set()
    real_combine = numpy_kernel._numpy_combine

    def numpy_combine(mod, activate):
        combine = real_combine(mod, activate)
        return lambda *args: (seen.add(_blas_threads_now()), combine(*args))[1]

    monkeypatch.setattr(numpy_kernel, "_numpy_combine", numpy_combine)
    for B, want in ((8, {_blas_threads_now()}), (7, {1})):
        seen.clear()
        x, h0, Wx, Wh, b = [a.astype(np.float32) for a in random_rnn(rng, 3, (B,), 4, 256)]
        h_seq, _ = numpy_kernel.scan_numpy(np, x, h0, Wx, Wh, b, nonlinearity="tanh", lengths=None, reverse=False,
                                           leak=1.0, return_sequences=True)  # fmt: skip
        assert seen == want, B
        np.testing.assert_allclose(h_seq, reference_rnn(x, h0, Wx, Wh, b)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("B", [15, 16, 40])
def test_numpy_loop_copies_wh_transposed_only_for_small_batches(monkeypatch, rng, B):
    """Below 16 rows the loop multiplies by a contiguous copy of Wh.T, from 16 on by the view: same numbers."""
    monkeypatch.setattr(kernels, "MKL_MACS", 1 << 40)  # the OpenBLAS loop, with or without oneMKL
    monkeypatch.setenv("RNN_XP_NUMBA", "0")  # the NumPy loop, with or without numba
    copies = []
    real = numpy_kernel.transposed_copy
    monkeypatch.setattr(numpy_kernel, "transposed_copy", lambda mod, W: (copies.append(W.shape), real(mod, W))[1])
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (B,), 5, 70)
    got = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    assert copies == ([(70, 70)] if B < 16 else [])
    np.testing.assert_allclose(got, reference_rnn(x, h0, Wx, Wh, b)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nonlinearity, leak", [("tanh", 1.0), ("relu", 0.4)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch, lengths", [((4,), None), ((4,), [5, 0, 2, 1]), ((2, 3), [[5, 3, 0], [1, 4, 5]])])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_numpy_loop_with_wh_on_the_left_matches_reference(monkeypatch, rng, nonlinearity, leak, reverse, batch,
                                                          lengths, return_sequences):  # fmt: skip
    """A few rows of many units: the step is Wh @ h.T into an (H, B) buffer, the same numbers as the reference."""
    monkeypatch.setattr(numpy_kernel, "_WH_FIRST", {False: (8, 16), True: (8, 64)})
    B = int(np.prod(batch))
    assert numpy_kernel.wh_first(B, 9) and not numpy_kernel.wh_first(B, 7) and not numpy_kernel.wh_first(1, 9)
    import array_api_compat.numpy as xp

    x, h0, Wx, Wh, b = random_rnn(rng, 5, batch, 3, 9)
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    seq, last = numpy_kernel.scan_numpy(xp, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lens,
                                        reverse=reverse, leak=leak, return_sequences=return_sequences)  # fmt: skip
    want_seq, want_last = reference_rnn(x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lens, reverse=reverse,
                                        leak=leak)  # fmt: skip
    np.testing.assert_allclose(last, want_last, rtol=1e-12, atol=1e-12)
    assert last.flags.c_contiguous and last.shape == (*batch, 9)
    if return_sequences:
        np.testing.assert_allclose(seq, want_seq, rtol=1e-12, atol=1e-12)
    else:
        assert seq is None


@pytest.mark.parametrize("B, H, left", [(4, 512, True), (1, 512, False), (8, 256, True), (4, 128, False),
                                        (32, 512, False)])  # fmt: skip
def test_numpy_loop_puts_wh_on_the_left_by_its_rule(monkeypatch, rng, B, H, left):
    """The measured rule at its own sizes (float32, 3 steps): the product's side, and the numbers."""
    monkeypatch.setattr(kernels, "MKL_MACS", 1 << 40)  # the OpenBLAS loop, with or without oneMKL
    monkeypatch.setenv("RNN_XP_NUMBA", "0")  # the NumPy loop, with or without numba
    assert numpy_kernel.wh_first(B, H) == left
    copies = []
    real = numpy_kernel.transposed_copy
    monkeypatch.setattr(numpy_kernel, "transposed_copy", lambda mod, W: (copies.append(W.shape), real(mod, W))[1])
    x, h0, Wx, Wh, b = random_rnn(rng, 3, (B,), 16, H)
    got = rnn_xp.rnn_forward(*(a.astype(np.float32) for a in (x, h0, Wx, Wh, b)))
    assert copies == ([] if left else [(H, H)] if B < 16 else [])
    np.testing.assert_allclose(got, reference_rnn(x, h0, Wx, Wh, b)[0], rtol=2e-4, atol=2e-5)
