"""The numba kernels (``kernels.numba_cpu``, ``kernels.numba_backward``) against the portable loops.

Every way the compiled loop can run (its own product or BLAS's, one thread,
two threads over rows, two threads over columns with a barrier per step) is
held against ``portable.scan_portable`` / ``backward_portable`` on the edge
catalogue: zero sizes, NaN and infinite values, lengths 0 and T, reverse,
leak 1 and below, ``return_sequences=False`` over odd blocks of time and odd
T, float32 and float64, 0, 1 and 2 batch dimensions, batch-first inputs, an
infinite ``Wh`` with ``lengths``. Also: the compiled tanh against NumPy's
over the whole float range; NumPy's BLAS found by address where it exports
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
from rnn_xp.kernels import _blocks, numba_backward, numba_cpu
from rnn_xp.kernels.portable import backward_portable, scan_portable
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


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_compiled_tanh_within_a_few_ulp_everywhere(name):
    dtype = np.dtype(name)
    rng = np.random.default_rng(0)
    info = np.finfo(dtype)
    x = np.concatenate([
        np.linspace(-25, 25, 200_001), rng.standard_normal(100_000) * 3,
        np.geomspace(float(info.smallest_subnormal), 1.0, 20_000),
        [0.0, -0.0, np.inf, -np.inf, np.nan, float(info.max), -float(info.max), 0.15, 0.25, 9.0, 10.0, 20.0],
    ]).astype(dtype)  # fmt: skip
    x = np.concatenate([x, -x])
    out = np.empty_like(x)
    numba_cpu.compiled()["tanh_into"](x, out)
    want = np.tanh(x.astype(np.float64)).astype(dtype)  # float64 rounded: within half an ulp for float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(x))
    ok = ~np.isnan(x)
    np.testing.assert_array_equal(np.signbit(out[ok]), np.signbit(want[ok]))  # -0.0 stays -0.0
    ulps = np.abs(out[ok].astype(np.float64) - want[ok]) / np.spacing(np.abs(want[ok]).astype(dtype))
    assert ulps.max() <= 8, (ulps.max(), x[ok][np.argmax(ulps)])
    assert np.all(np.abs(out[ok]) <= 1)


def test_plan_threads_rows_for_batches_and_columns_for_one_sequence():
    assert numba_cpu.plan(1, 64, threads=2) == ("own", "rows", 1)  # a step is too small to share
    assert numba_cpu.plan(16, 128, threads=2) == ("blas", "rows", 2)
    assert numba_cpu.plan(1, 1024, threads=2) == ("blas", "cols", 2)
    assert numba_cpu.plan(64, 1024, threads=1) == ("blas", "rows", 1)


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

