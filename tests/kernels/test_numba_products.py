"""``kernels.numba_products``: the backward's products over all steps on the compiled packed product.

Held against float64 NumPy products (and ``cells._base``'s, which they replace): any size of rows and
columns (tiles and strips cut anywhere), masks, strided operands, non-finite values, one or two callers.
numba is optional: without it these tests skip.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rnn_xp.cells import _base
from rnn_xp.kernels import _packed, numba_products

pytest.importorskip("numba", reason="numba is not installed (pip install rnn_xp[numba])")

TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-5)}


def _ref_outer(d, a, valid=None):
    d64, a64 = d.astype(np.float64), a.astype(np.float64)
    if valid is not None:
        a64 = np.where(valid, a64, 0)
    N = int(np.prod(d.shape[:-1]))
    with np.errstate(invalid="ignore"):  # 0 * inf
        return d64.reshape(N, -1).T @ a64.reshape(N, -1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (11, 4, 33, 64), (7, 3, 70, 31), (300, 2, 24, 40), (1, 1, 1, 1)])
def test_outer_sum_is_the_product_over_all_rows(rng, compiled_products, dtype, shape):
    """``d.T @ a`` over every leading axis against a float64 product; rows (``F_d``) and columns (``F_a``)
    that are not whole tiles or strips, more rows than ``OUTER_STEPS`` (several blocks), a mask."""
    _check_outer_sum(rng, dtype, shape)


def _check_outer_sum(rng, dtype, shape):
    """``numba_products.outer_sum`` of random ``(T, B, F_d)`` and ``(T, B, F_a)`` arrays, with and without a
    mask, against a float64 product."""
    T, B, Fd, Fa = shape
    d = rng.standard_normal((T, B, Fd)).astype(dtype)
    a = rng.standard_normal((T, B, Fa)).astype(dtype)
    valid = rng.random((T, B, 1)) < 0.7
    for v in (None, valid):
        got = numba_products.outer_sum(np, d, a, v)
        assert got.shape == (Fd, Fa) and got.dtype == np.dtype(dtype) and got.flags.c_contiguous
        np.testing.assert_allclose(got, _ref_outer(d, a, v), **TOL[dtype])


def test_outer_sum_reads_a_strided_d_and_gives_the_same_bits_on_one_or_two_callers(rng, compiled_products):
    """A column slice of ``d`` (a GRU's ``da[..., :2H]``) is read in place; two callers split the result's rows
    and each element is the same sum (the same bits) as on one."""
    d = rng.standard_normal((50, 3, 3 * 24)).astype(np.float32)[..., : 2 * 24]
    a = rng.standard_normal((50, 3, 40)).astype(np.float32)
    two = numba_products.outer_sum(np, d, a)
    np.testing.assert_allclose(two, _ref_outer(d, a), **TOL["float32"])
    compiled_products.setattr(numba_products, "TWO_CALLERS_FROM", 1 << 62)
    np.testing.assert_array_equal(numba_products.outer_sum(np, d, a), two)


def test_outer_sum_keeps_nan_and_infinity(rng, compiled_products):
    """A NaN or an infinity reaches the result as in the sum written out: ``0 * inf`` is NaN, not skipped."""
    d = rng.standard_normal((20, 2, 16)).astype(np.float64)
    a = rng.standard_normal((20, 2, 33)).astype(np.float64)
    d[3, 1, 5] = np.nan
    a[7, 0, 2] = np.inf
    d[7, 0, :] = 0.0
    got = numba_products.outer_sum(np, d, a)
    want = _ref_outer(d, a)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[:, 2]).all() and np.isnan(got[5]).all()
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], **TOL["float64"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (11, 4, 64, 33), (9, 5, 48, 96), (2, 1, 1, 1)])
def test_rows_matmul_is_the_product_over_every_leading_axis(rng, compiled_products, dtype, shape):
    a, W, got = _check_rows_matmul(rng, dtype, shape)
    np.testing.assert_allclose(numba_products.rows_matmul(np, a[0], W), got[0], **TOL[dtype])


def _check_rows_matmul(rng, dtype, shape):
    """``numba_products.rows_matmul`` of a random ``(T, B, K)`` array and ``(K, M)`` matrix against a float64
    product; returns both operands and the result."""
    T, B, K, M = shape
    a = rng.standard_normal((T, B, K)).astype(dtype)
    W = rng.standard_normal((K, M)).astype(dtype)
    got = numba_products.rows_matmul(np, a, W)
    assert got.shape == (T, B, M) and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, a.astype(np.float64) @ W.astype(np.float64), **TOL[dtype])
    return a, W, got


def test_small_products_and_other_arrays_are_the_base_products(rng):
    """Below ``MACS_FROM``, or for another dtype or library, the answer is ``cells._base``'s, bit for bit."""
    d, a = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 6))
    np.testing.assert_array_equal(numba_products.outer_sum(np, d, a), _base.outer_sum(np, d, a))
    W = rng.standard_normal((5, 2))
    np.testing.assert_array_equal(numba_products.rows_matmul(np, d, W), _base.rows_matmul(np, d, W))
    di, ai = d.astype(np.int64), a.astype(np.int64)
    np.testing.assert_array_equal(numba_products.outer_sum(np, di, ai), _base.outer_sum(np, di, ai))
    mixed = numba_products.outer_sum(np, d.astype(np.float32), a)
    np.testing.assert_array_equal(mixed, _base.outer_sum(np, d.astype(np.float32), a))
    strict = pytest.importorskip("array_api_strict")
    ds, as_ = strict.asarray(d), strict.asarray(a)
    got = numba_products.outer_sum(strict, ds, as_)
    assert type(got) is type(ds)
    np.testing.assert_array_equal(np.asarray(got), _base.outer_sum(np, d, a))


@pytest.fixture
def split_products(monkeypatch):
    """``numba_products`` with BLAS's products on two callers at every size below the compiled ones; records the
    callers of each ``run_parallel`` and the BLAS thread count seen inside each caller."""
    threadpool_info = pytest.importorskip("threadpoolctl").threadpool_info

    monkeypatch.setattr(numba_products, "SPLIT_FROM", 0)
    monkeypatch.setattr(numba_products, "SPLIT_BELOW", 1 << 62)
    seen = []
    run = numba_products.run_parallel

    def recorded(fn, args, one_blas_thread=False):
        def counted(*a):
            blas = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
            seen.append((fn.__name__, a[-3:-1], blas))  # (name, (r0, r1), BLAS thread counts in this caller)
            return fn(*a)

        return run(counted, args, one_blas_thread=one_blas_thread)

    monkeypatch.setattr(numba_products, "run_parallel", recorded)
    return seen


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 2, 16, 7), (11, 4, 33, 64), (7, 3, 70, 31), (300, 2, 24, 1)])
def test_outer_sum_on_two_callers_is_the_product_over_all_rows(rng, split_products, dtype, shape):
    """Below the compiled sizes ``d.T @ a`` runs as two BLAS products over halves of the result's rows, each
    caller on one BLAS thread: against a float64 product, with and without a mask; BLAS's threads as before."""
    from threadpoolctl import threadpool_info  # (split_products skips without it)

    before = [i["num_threads"] for i in threadpool_info()]
    _check_outer_sum(rng, dtype, shape)
    Fd = shape[2]
    halves = [("_outer_rows", (0, Fd // 2)), ("_outer_rows", (Fd // 2, Fd))]
    assert sorted((name, bounds) for name, bounds, _ in split_products) == sorted(halves * 2)
    assert all(threads == {1} for _, _, threads in split_products)
    assert [i["num_threads"] for i in threadpool_info()] == before


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(8, 2, 5, 7), (11, 4, 64, 33), (9, 5, 48, 96), (16, 1, 1, 1)])
def test_rows_matmul_on_two_callers_is_the_product_over_every_leading_axis(rng, split_products, dtype, shape):
    T, B, K, M = shape
    a, W, got = _check_rows_matmul(rng, dtype, shape)
    if K < 2:  # one term per sum: BLAS's own product
        np.testing.assert_array_equal(got, _base.rows_matmul(np, a, W))
        assert split_products == []
        return
    halves = [("_matmul_rows", (0, T * B // 2)), ("_matmul_rows", (T * B // 2, T * B))]
    assert sorted((name, bounds) for name, bounds, _ in split_products) == halves
    assert all(threads == {1} for _, _, threads in split_products)


def test_products_on_two_callers_keep_nan_and_infinity(rng, split_products):
    """``0 * inf`` is NaN in either half, as in the sums written out."""
    d = rng.standard_normal((20, 2, 16)).astype(np.float64)
    a = rng.standard_normal((20, 2, 33)).astype(np.float64)
    d[3, 1, 12] = 0.0
    a[3, 1, 7] = np.inf
    d[5, 0, 2] = np.nan
    with np.errstate(invalid="ignore"):  # NumPy's own warning for 0 * inf, as on one BLAS call
        got = numba_products.outer_sum(np, d, a)
    ref = _ref_outer(d, a)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got[12, 7]) and np.isnan(got[2]).all()
    np.testing.assert_allclose(got[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-12)
    W = rng.standard_normal((16, 5))
    W[12, 3] = np.inf
    dm = d.copy()
    dm[5, 0, 2] = 0.0
    with np.errstate(invalid="ignore"):
        got = numba_products.rows_matmul(np, dm, W)
        ref = dm @ W
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))


def test_products_on_two_callers_take_the_callers_error_handling(rng, split_products):
    """``numpy.errstate`` is each thread's own: the caller's reaches both halves (``0 * inf`` in the second
    half raises under ``invalid="raise"`` and stays silent under ``"ignore"``, as one BLAS call would)."""
    d = rng.standard_normal((20, 2, 16))
    a = rng.standard_normal((20, 2, 33))
    d[3, 1, 12], a[3, 1, 7] = 0.0, np.inf  # row 12 of the result: the second half
    with np.errstate(invalid="raise"):
        with pytest.raises(FloatingPointError):
            _base.outer_sum(np, d, a)
        with pytest.raises(FloatingPointError):
            numba_products.outer_sum(np, d, a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(invalid="ignore"):
            assert np.isnan(numba_products.outer_sum(np, d, a)[12, 7])


def test_small_and_narrow_products_stay_on_blas_threads(rng, monkeypatch):
    """Below ``SPLIT_FROM`` multiply-adds, from ``SPLIT_BELOW``, or with fewer than two tiles of the result's
    rows: one BLAS call, bit for bit ``cells._base``'s."""
    called = []
    monkeypatch.setattr(numba_products, "run_parallel", lambda *a, **k: called.append(a))
    d, a = rng.standard_normal((50, 4, 40)), rng.standard_normal((50, 4, 30))
    macs = 200 * 40 * 30
    for lo, hi in ((macs + 1, 1 << 62), (0, macs)):
        monkeypatch.setattr(numba_products, "SPLIT_FROM", lo)
        monkeypatch.setattr(numba_products, "SPLIT_BELOW", hi)
        np.testing.assert_array_equal(numba_products.outer_sum(np, d, a), _base.outer_sum(np, d, a))
    monkeypatch.setattr(numba_products, "SPLIT_FROM", 0)
    monkeypatch.setattr(numba_products, "SPLIT_BELOW", 1 << 62)
    narrow = d[..., :15]  # 15 rows of the result: fewer than two tiles
    np.testing.assert_array_equal(numba_products.outer_sum(np, narrow, a), _base.outer_sum(np, narrow, a))
    assert called == []


@pytest.mark.parametrize("F", [1, 31, 32, 33, 64, 100])
def test_pack_columns_is_pack_of_the_transpose(rng, F):
    a = rng.standard_normal((13, F)).astype(np.float32)
    np.testing.assert_array_equal(_packed.pack_columns(a), _packed.pack(np.ascontiguousarray(a.T)))
