"""The NumPy backward loop (``numpy_backward.backward_numpy``) against the portable one.

``rnn_backward`` on NumPy arrays runs ``backward_numpy``; everywhere else it
runs ``backward.backward_portable``. Both take the same validated arrays and
must give the same gradients on every option (``test_backward.py`` checks
``rnn_backward`` itself against torch autograd on every backend).
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

import rnn_xp
from rnn_xp import kernels
from rnn_xp.kernels import _threads, numpy_backward
from rnn_xp.kernels.portable import backward_portable
from support import random_rnn

TOL = {"float64": dict(rtol=1e-11, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}
LENGTHS = {(4,): [5, 0, 2, 1], (2, 3): [[5, 3, 0], [1, 4, 5]]}


def _case(rng, T, batch, D, H, dtype, *, lengths, reverse, leak, nonlinearity, with_dh, with_dh_n):
    x, h0, Wx, Wh, b = random_rnn(rng, T, batch, D, H, scale=0.9)
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    h_seq = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lens, reverse=reverse, leak=leak,
                               nonlinearity=nonlinearity)  # fmt: skip
    dh = rng.standard_normal((T, *batch, H)) if with_dh else None
    dh_n = rng.standard_normal((*batch, H)) if with_dh_n else None
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    return (cast(dh), cast(x), cast(h0), cast(Wx), cast(Wh), cast(h_seq), cast(dh_n)), lens


def _both(args, **opts):
    import array_api_compat.numpy as xp

    fast = numpy_backward.backward_numpy(xp, *args, **opts)
    slow = backward_portable(xp, *args, **opts)
    return fast, slow


OPTIONS = list(itertools.product(["tanh", "relu"], [False, True], [1.0, 0.4], [True, False], [True, False]))


@pytest.mark.parametrize("nonlinearity, reverse, leak, with_dh, with_dh_n", OPTIONS)
@pytest.mark.parametrize("batch, with_lengths", [((4,), False), ((4,), True), ((2, 3), False), ((2, 3), True),
                                                 ((), False)])  # fmt: skip
def test_numpy_backward_matches_portable(rng, dtype, nonlinearity, reverse, leak, with_dh, with_dh_n, batch,
                                         with_lengths):  # fmt: skip
    lengths = LENGTHS[batch] if with_lengths else None
    args, lens = _case(rng, 5, batch, 3, 6, dtype, lengths=lengths, reverse=reverse, leak=leak,
                       nonlinearity=nonlinearity, with_dh=with_dh, with_dh_n=with_dh_n)  # fmt: skip
    fast, slow = _both(args, nonlinearity=nonlinearity, lengths=lens, reverse=reverse, leak=leak)
    for name, f, s in zip(("dx", "dh0", "dWx", "dWh", "db"), fast, slow):
        assert f.shape == s.shape and f.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(f, s, err_msg=name, **TOL[dtype])


@pytest.mark.parametrize("T", [0, 1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_short_sequences(rng, T, reverse):
    args, lens = _case(rng, T, (3,), 2, 4, "float64", lengths=[T, 0, min(T, 1)], reverse=reverse, leak=0.5,
                       nonlinearity="tanh", with_dh=True, with_dh_n=True)  # fmt: skip
    fast, slow = _both(args, nonlinearity="tanh", lengths=lens, reverse=reverse, leak=0.5)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, **TOL["float64"])


@pytest.mark.parametrize("reverse", [False, True])
def test_frozen_steps_take_no_gradient_even_from_inf(rng, reverse):
    """Past a sequence's length dh is ignored: an infinite dh there gives 0, not NaN (0 * inf)."""
    args, lens = _case(rng, 6, (3,), 2, 4, "float64", lengths=[6, 2, 0], reverse=reverse, leak=1.0,
                       nonlinearity="tanh", with_dh=True, with_dh_n=False)  # fmt: skip
    dh = args[0].copy()
    dh[3:, 1] = np.inf  # the second sequence has length 2
    dh[:, 2] = np.inf  # the third has length 0
    args = (dh, *args[1:])
    fast, slow = _both(args, nonlinearity="tanh", lengths=lens, reverse=reverse, leak=1.0)
    for f, s in zip(fast, slow):
        assert np.all(np.isfinite(f))
        np.testing.assert_allclose(f, s, **TOL["float64"])


def test_rnn_backward_runs_the_numpy_kernel_on_numpy_only(monkeypatch, rng):
    monkeypatch.setenv("RNN_XP_NUMBA", "0")  # the NumPy loop, with or without numba
    calls = []
    real = numpy_backward.backward_numpy
    monkeypatch.setattr(numpy_backward, "backward_numpy", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (2,), 3, 5)
    h = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    rnn_xp.rnn_backward(np.ones_like(h), x, h0, Wx, Wh, b, h)
    assert calls == [1]
    import array_api_strict

    assert kernels.backward_kernel(array_api_strict) is backward_portable


@pytest.mark.parametrize("B, H", [(16, 256), (3, 40)])  # the step's product on all threads, and on one
def test_numpy_backward_above_and_below_the_thread_threshold(rng, B, H):
    assert (B * H * H >= _threads.SERIAL_MACS) == (H == 256)
    args, lens = _case(rng, 4, (B,), 8, H, "float64", lengths=None, reverse=False, leak=1.0,
                       nonlinearity="tanh", with_dh=True, with_dh_n=True)  # fmt: skip
    fast, slow = _both(args, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, **TOL["float64"])


def test_read_only_and_strided_inputs_are_not_written(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (3,), 4, 6)
    x_bf = np.moveaxis(x, 0, 1).copy()  # (B, T, D)
    h_bf = rnn_xp.rnn_forward(x_bf, h0, Wx, Wh, b, batch_first=True, leak=0.5)  # (B, T, H)
    dh = rng.standard_normal(h_bf.shape)
    arrays = [dh, x_bf, h0, Wx, Wh, b, h_bf]
    for a in arrays:
        a.flags.writeable = False
    before = [a.copy() for a in arrays]
    got = rnn_xp.rnn_backward(dh, x_bf, h0, Wx, Wh, b, h_bf, batch_first=True, leak=0.5)
    for a, was in zip(arrays, before):
        np.testing.assert_array_equal(a, was)
    import array_api_strict as strict

    want = rnn_xp.rnn_backward(*[strict.asarray(a) for a in arrays], batch_first=True, leak=0.5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.from_dlpack(w), **TOL["float64"])


def test_numpy_backward_holds_dz_and_a_few_row_buffers(rng):
    """Beyond its results, one (T, B, H) buffer (dz) and a few (B, H) ones; the portable loop more."""
    import array_api_compat.numpy as xp

    T, B, D, H = 200, 8, 4, 64
    args, _ = _case(rng, T, (B,), D, H, "float64", lengths=None, reverse=False, leak=0.5,
                    nonlinearity="tanh", with_dh=True, with_dh_n=False)  # fmt: skip
    peaks = {}
    for name, kernel in (("numpy", numpy_backward.backward_numpy), ("portable", backward_portable)):
        kernel(xp, *args, nonlinearity="tanh", lengths=None, reverse=False, leak=0.5)  # warm-up
        tracemalloc.start()
        out = kernel(xp, *args, nonlinearity="tanh", lengths=None, reverse=False, leak=0.5)
        peaks[name] = tracemalloc.get_traced_memory()[1] - sum(a.nbytes for a in out)
        tracemalloc.stop()
    tbh = T * B * H * 8
    assert peaks["numpy"] <= tbh + 16 * B * H * 8 + 64 * 1024, peaks
    assert peaks["portable"] > 2 * tbh, peaks


@pytest.mark.parametrize("reverse", [False, True])
def test_values_past_the_lengths_in_h_seq_are_not_read(rng, reverse):
    """rnn_forward outputs zeros past a sequence's length; other values there change nothing."""
    args, lens = _case(rng, 6, (3,), 2, 4, "float64", lengths=[6, 2, 4], reverse=reverse, leak=0.7,
                       nonlinearity="tanh", with_dh=True, with_dh_n=True)  # fmt: skip
    h_seq = args[5].copy()
    for n, L in enumerate(lens):
        h_seq[L:, n] = rng.uniform(-0.9, 0.9, size=h_seq[L:, n].shape)
    fast, slow = _both((*args[:5], h_seq, args[6]), nonlinearity="tanh", lengths=lens, reverse=reverse, leak=0.7)
    zeros_past, _ = _both(args, nonlinearity="tanh", lengths=lens, reverse=reverse, leak=0.7)
    for f, s, z in zip(fast, slow, zeros_past):
        np.testing.assert_allclose(f, s, **TOL["float64"])
        np.testing.assert_allclose(f, z, **TOL["float64"])


def test_backward_benchmark_checks_and_prints(monkeypatch, capsys):
    """benchmarks/bench_backward.py on tiny sizes: every contender's gradients agree with torch's."""
    pytest.importorskip("torch")
    import pathlib
    import runpy

    from rnn_xp import bench

    monkeypatch.setattr(bench, "CPU_GRID", [(2, 3, 4, 5), (1, 4, 3, 2)])  # the script reads bench.CPU_GRID
    monkeypatch.setattr(bench, "SETTLE_S", 0.0)
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_backward.py"  # tests/kernels/ -> root
    bench = runpy.run_path(str(path))
    assert bench["main"](["--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("torch.nn.RNN backward", "rnn_xp rnn_backward (numpy)", "rnn_xp forward + backward (numpy)"):
        assert out.count(name) == 2  # one row per size
    with pytest.raises(AssertionError, match="differs from torch"):
        monkeypatch.setattr(rnn_xp, "rnn_backward", lambda *a, **k: [2 * np.ones(1)] * 5)
        bench["contenders"](2, 3, 4, 5)


@pytest.mark.parametrize("nonlinearity, reverse, leak, with_dh, with_dh_n", OPTIONS)
@pytest.mark.parametrize("batch, with_lengths", [((4,), False), ((4,), True), ((2, 3), True)])
def test_numpy_backward_with_wh_on_the_left_matches_portable(monkeypatch, rng, nonlinearity, reverse, leak, with_dh,
                                                             with_dh_n, batch, with_lengths):  # fmt: skip
    """A few rows of many units: the step is Wh.T @ dz_t.T into (H, B) buffers, the same gradients."""
    from rnn_xp.kernels import numpy as numpy_kernel

    monkeypatch.setattr(numpy_kernel, "_WH_FIRST", {False: (8, 16), True: (8, 64)})
    assert numpy_backward.wh_first(int(np.prod(batch)), 9, backward=True)
    lengths = LENGTHS[batch] if with_lengths else None
    args, lens = _case(rng, 5, batch, 3, 9, "float64", lengths=lengths, reverse=reverse, leak=leak,
                       nonlinearity=nonlinearity, with_dh=with_dh, with_dh_n=with_dh_n)  # fmt: skip
    fast, slow = _both(args, nonlinearity=nonlinearity, lengths=lens, reverse=reverse, leak=leak)
    for name, f, s in zip(("dx", "dh0", "dWx", "dWh", "db"), fast, slow):
        assert f.shape == s.shape, name
        np.testing.assert_allclose(f, s, err_msg=name, **TOL["float64"])
    assert fast[1].flags.c_contiguous


def test_numpy_backward_wh_on_the_left_at_its_own_size(rng):
    """The measured rule (4 rows, 256 units) against the portable backward, float32."""
    assert numpy_backward.wh_first(4, 256, backward=True) and not numpy_backward.wh_first(1, 256, backward=True)
    args, lens = _case(rng, 3, (4,), 8, 256, "float32", lengths=None, reverse=False, leak=1.0,
                       nonlinearity="tanh", with_dh=True, with_dh_n=True)  # fmt: skip
    fast, slow = _both(args, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0)
    for name, f, s in zip(("dx", "dh0", "dWx", "dWh", "db"), fast, slow):
        np.testing.assert_allclose(f, s, err_msg=name, **TOL["float32"])
