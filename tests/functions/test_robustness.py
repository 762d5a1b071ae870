"""Non-finite values, threads, determinism and long sequences.

- NaN or Inf in one sequence of a batch stays in that sequence's outputs;
  a NaN past a sequence's length never shows up at all.
- ``relu`` with large weights overflows to Inf without raising.
- Eight threads calling ``rnn_forward`` at once get what sequential calls get,
  and repeated calls on CPU are bitwise identical.
- T = 1,000,000 with ``return_sequences=False`` keeps no per-step state, and
  T = 100,000 in float32 stays finite and close to float64 when the
  recurrence is contractive (the error does not grow with T).

The long tests are marked ``long`` (seconds each); ``-m "not long"`` skips them.
"""

from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnn_xp
from support import assert_close, random_rnn, reference_rnn, to_numpy


def _args(backend, dtype, *arrays):
    return [None if a is None else backend.asarray(a, dtype) for a in arrays]


def _plain_rnn(x, h0, Wx, Wh, b, f=np.tanh):
    """``h_t = f(x_t Wx^T + h_{t-1} Wh^T + b)`` in float64, with no leak term.

    ``support.reference_rnn`` always forms ``(1 - leak) * h``, which is
    ``0 * inf = nan`` for an infinite state even at ``leak = 1``; the plain
    RNN (and rnn_xp at ``leak = 1``) has no such term.
    """
    out, h = [], h0
    for t in range(x.shape[0]):
        h = f(x[t] @ Wx.T + h @ Wh.T + b)
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "h0"])
def test_non_finite_stays_in_its_sequence(backend, dtype, bad, where):
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(10), 6, (4,), 3, 5)
    j, t0 = 2, 3
    if where == "x":
        x[t0, j, 1] = bad
    else:
        h0[j, 0] = bad
        t0 = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = _plain_rnn(x, h0, Wx, Wh, b)
        out = to_numpy(rnn_xp.rnn_forward(*_args(backend, dtype, x, h0, Wx, Wh, b)))
    others = [n for n in range(4) if n != j]
    assert np.isfinite(out[:, others]).all()
    assert np.isfinite(out[:t0, j]).all()
    if np.isnan(bad):  # NaN spreads through every later state of that sequence
        assert np.isnan(out[t0:, j]).all()
    # (an Inf becomes +-Inf in z, which tanh saturates to +-1: finite from then on)
    np.testing.assert_allclose(out, expected, rtol=2e-4 if dtype == "float32" else 1e-10,
                               atol=2e-5 if dtype == "float32" else 1e-12)  # NaN where the reference has NaN


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN in x @ Wx.T
def test_nan_past_length_never_appears(backend, dtype):
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(11), 6, (3,), 3, 4)
    lengths = np.array([6, 2, 4])
    x[2:, 1] = np.nan  # only steps past sequence 1's length
    x[5, 2] = np.inf
    for reverse in (False, True):
        expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, reverse=reverse)
        args = _args(backend, dtype, x, h0, Wx, Wh, b)
        out = rnn_xp.rnn_forward(*args, lengths=backend.asarray(lengths), reverse=reverse)
        assert np.isfinite(to_numpy(out)).all()
        assert_close(out, expected, backend, dtype)
        fin = rnn_xp.rnn_forward(*args, lengths=backend.asarray(lengths), reverse=reverse, return_sequences=False)
        assert_close(fin, last, backend, dtype)


def test_relu_overflows_to_inf(backend, dtype):
    T, H = 40, 3
    x = np.ones((T, 2, 2))
    Wx = np.ones((H, 2))
    Wh = np.full((H, H), 1e12)  # every entry positive: inf * w stays inf, never inf - inf
    b = np.zeros(H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = to_numpy(rnn_xp.rnn_forward(*_args(backend, dtype, x, None, Wx, Wh, b), nonlinearity="relu"))
        expected = _plain_rnn(x, np.zeros((2, H)), Wx, Wh, b, f=lambda z: np.maximum(z, 0))
    assert not np.isnan(out).any()
    assert np.isposinf(out[-1]).all()
    assert np.isfinite(out[0]).all()
    first_inf = int(np.argmax(np.isinf(out[:, 0, 0])))
    print(f"\n{backend.name} {dtype}: relu state overflows to inf at step {first_inf}")
    assert 0 < first_inf < T
    if dtype == "float64":
        np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-10)


def _problem(seed, T=30, batch=(3,), D=4, H=6):
    return random_rnn(np.random.default_rng(seed), T, batch, D, H)


def test_eight_threads_equal_sequential(backend, dtype):
    problems = [_problem(seed) for seed in range(8)]
    args = [_args(backend, dtype, *p) for p in problems]
    options = [{"nonlinearity": ("tanh", "relu")[i % 2], "reverse": i % 3 == 0, "leak": 1.0 if i % 4 else 0.5,
                "lengths": [30, 7, 0] if i % 2 else None} for i in range(8)]
    sequential = [to_numpy(rnn_xp.rnn_forward(*a, **o)) for a, o in zip(args, options)]
    start = threading.Barrier(8)

    def work(i):
        start.wait()
        return [to_numpy(rnn_xp.rnn_forward(*args[i], **options[i])) for _ in range(5)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    for i, runs in enumerate(results):
        for r in runs:
            np.testing.assert_array_equal(r, sequential[i])
        expected, _ = reference_rnn(*problems[i], **{**options[i], "lengths": options[i]["lengths"]})
        np.testing.assert_allclose(sequential[i], expected, rtol=2e-4 if dtype == "float32" else 1e-10,
                                   atol=2e-5 if dtype == "float32" else 1e-12)


def test_repeated_calls_bitwise_identical(backend, dtype):
    if "cuda" in backend.name or backend.name == "cupy":
        pytest.skip("bitwise repeatability is checked on CPU only")
    x, h0, Wx, Wh, b = _problem(20, T=50, batch=(4, 2))
    args = _args(backend, dtype, x, h0, Wx, Wh, b)
    lengths = backend.asarray(np.array([[50, 3], [0, 49], [10, 10], [1, 2]]))
    first = to_numpy(rnn_xp.rnn_forward(*args, lengths=lengths, leak=0.5))
    for _ in range(10):
        again = to_numpy(rnn_xp.rnn_forward(*args, lengths=lengths, leak=0.5))
        assert again.tobytes() == first.tobytes()


class _PeakRSS:
    """The largest increase of this process's resident memory while inside ``with``."""

    def __enter__(self):
        psutil = pytest.importorskip("psutil")
        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_increase = self._peak - self._base


@pytest.mark.long
def test_million_steps_final_state_numpy():
    """T = 1,000,000, return_sequences=False: memory is the input projection, not T states."""
    T, B, D, H = 1_000_000, 1, 1, 2
    rng = np.random.default_rng(30)
    x = rng.standard_normal((T, B, D))
    Wx = rng.standard_normal((H, D))
    Wh = np.array([[0.3, -0.2], [0.1, 0.4]])  # spectral radius < 1: the start is forgotten
    b = np.array([0.1, -0.1])
    with _PeakRSS() as rss:
        t0 = time.perf_counter()
        last = rnn_xp.rnn_forward(x, None, Wx, Wh, b, return_sequences=False)
        seconds = time.perf_counter() - t0
    peak = rss.peak_increase
    projection = T * B * H * 8  # x @ Wx.T, one float64 array (T, B, H)
    kept_states = T * (B * H * 8 + 96)  # what T separate state arrays would need, at least
    print(f"\nT={T:,} B={B} D={D} H={H}: {seconds:.1f} s, peak resident memory increase "
          f"{peak / 1e6:.1f} MB; x is {x.nbytes / 1e6:.1f} MB, the projection {projection / 1e6:.1f} MB, "
          f"T kept states would be {kept_states / 1e6:.0f} MB or more")
    assert peak < 3 * projection + x.nbytes + 2**22 < kept_states
    # a contractive recurrence forgets: the last 200 steps from zeros give the same state
    tail, _ = reference_rnn(x[-200:], None, Wx, Wh, b)
    np.testing.assert_allclose(last, tail[-1], rtol=1e-10, atol=1e-12)


@pytest.mark.long
def test_hundred_thousand_steps_float32_vs_float64_numpy():
    T, B, D, H = 100_000, 2, 3, 8
    rng = np.random.default_rng(31)
    x = rng.standard_normal((T, B, D))
    Wx = rng.standard_normal((H, D)) * 0.5
    Wh = rng.standard_normal((H, H))
    Wh *= 0.9 / np.max(np.abs(np.linalg.eigvals(Wh)))  # spectral radius 0.9: contractive (tanh' <= 1)
    b = rng.standard_normal(H) * 0.1
    h64 = rnn_xp.rnn_forward(x, None, Wx, Wh, b)
    x32, Wx32, Wh32, b32 = (a.astype(np.float32) for a in (x, Wx, Wh, b))
    h32 = rnn_xp.rnn_forward(x32, None, Wx32, Wh32, b32)
    assert h32.dtype == np.float32 and h64.dtype == np.float64
    assert np.isfinite(h32).all()
    err = np.abs(h32.astype(np.float64) - h64)
    rel = float(err.max() / np.abs(h64).max())
    rel_first = float(err[:1000].max() / np.abs(h64).max())
    rel_last = float(err[-1000:].max() / np.abs(h64).max())
    print(f"\nT={T:,} float32 vs float64: max relative error {rel:.2e} "
          f"(first 1000 steps {rel_first:.2e}, last 1000 steps {rel_last:.2e})")
    assert rel < 1e-4  # float32 eps is 1.2e-7; a contractive recurrence does not accumulate error
    ref, _ = reference_rnn(x[:300], None, Wx, Wh, b)
    np.testing.assert_allclose(h64[:300], ref, rtol=1e-10, atol=1e-12)


def test_eight_threads_share_one_layer(backend, dtype):
    """One bidirectional two-layer ``RNN`` called from eight threads at once."""
    rnn = rnn_xp.RNN(4, 6, num_layers=2, bidirectional=True, seed=3, xp=backend.xp,
                     device=backend.device, dtype=dtype)
    xs = [backend.asarray(np.random.default_rng(s).standard_normal((12, 3, 4)), dtype) for s in range(8)]
    lengths = [12, 5, 1]
    sequential = [[to_numpy(a) for a in rnn(x, lengths=lengths)] for x in xs]
    start = threading.Barrier(8)

    def work(i):
        start.wait()
        return [[to_numpy(a) for a in rnn(xs[i], lengths=lengths)] for _ in range(3)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    for i, runs in enumerate(results):
        assert not np.array_equal(sequential[i][0], sequential[(i + 1) % 8][0])  # inputs differ
        for output, h_n in runs:
            np.testing.assert_array_equal(output, sequential[i][0])
            np.testing.assert_array_equal(h_n, sequential[i][1])
