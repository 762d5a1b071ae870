"""``kernels._numba_elementwise``: the cells' elementwise formulas compiled with their arithmetic written out.

The written-out formula must give the bits of the formula as numba
compiles it (its fused array expressions) and as NumPy runs it (the cell's
``pointwise`` on ``ArrayOps`` of NumPy), on values that include NaN,
infinities, signed zeros and sub-normals (a NaN for a NaN: which operand's
NaN an operation passes on, and so its sign, is the compiler's choice); the operators must keep every
case numba has (broadcasting, numbers, mixed dtypes) as they were; and a
formula without source is compiled as it is.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from rnn_xp.cells import GRUCell, LSTMCell

pytest.importorskip("numba", reason="numba is not installed (pip install rnn_xp[numba])")

from numba import njit  # noqa: E402

from rnn_xp.kernels import _numba_elementwise as E  # noqa: E402
from rnn_xp.kernels import _numba_jit as J  # noqa: E402

import array_api_compat.numpy as xp  # noqa: E402

EXACT = dict(nogil=True, error_model="numpy")  # the options the compiled loops take for a cell's formula


def _compiled_ops():
    ops = types.ModuleType("ops")
    ops.fa, ops.ga, ops.ha = J.sigmoid_rows, J.tanh_rows, J.tanh_rows
    ops.zeros_like, ops.complement = J.zeros_like, J.complement_rows
    return ops


_MADE = {}  # one dispatcher per function and way (numba compiles once per signature)


def _compiled(fn, written):
    """``fn(ops, *args)`` compiled as the loops compile a cell's formula (``written``: written out), ``ops``
    a global module of the compiled activations (numba takes no module as an argument)."""
    made = _MADE.get((fn, written))
    if made is None:
        namespace = {"OPS": _compiled_ops(), "FN": njit(**EXACT)(E.written_out(fn) if written else fn)}
        exec("def run(*args):\n    return FN(OPS, *args)\n", namespace)  # noqa: S102
        made = _MADE[fn, written] = njit(**EXACT)(namespace["run"])
    return made


def _values(rng, shape, dtype):
    """Normal values with NaN, +-inf, +-0 and sub-normals sprinkled in."""
    a = rng.standard_normal(shape) * 3
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(dtype).smallest_subnormal,
                -np.finfo(dtype).smallest_subnormal * 3, 1e30, -1e30]  # fmt: skip
    flat = a.reshape(-1)
    where = rng.choice(flat.size, size=min(flat.size, 2 * len(specials)), replace=False)
    flat[where] = np.resize(specials, where.size)
    return a.astype(dtype)


def _same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


def _nan_equal(got, want):
    """The same bits, but any NaN for a NaN (NumPy's and the compiled NaN payloads may differ)."""
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    _same_bits(got[ok], want[ok])


CELLS = {"lstm": LSTMCell(), "gru": GRUCell()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("shape", [(1, 64), (8, 128), (3, 5), (0, 4)])
def test_written_out_pointwise_gives_the_fused_and_the_numpy_bits(rng, name, dtype, shape):
    cell = CELLS[name]
    G = cell.gates
    xg = tuple(_values(rng, shape, dtype) for _ in range(G))
    hg = tuple(_values(rng, shape, dtype) for _ in range(G))
    carry = (_values(rng, shape, dtype),)
    got = _compiled(cell.pointwise, True)(xg, hg, carry)
    want = _compiled(cell.pointwise, False)(xg, hg, carry)
    with np.errstate(all="ignore"):  # inf - inf on purpose
        on_numpy = cell.pointwise(cell.ops(xp), xg, hg, carry)
    assert len(got) == len(want) == len(on_numpy)
    for g, w, n in zip(got, want, on_numpy):
        _nan_equal(g, w)
        _nan_equal(g, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_written_out_pointwise_backward_gives_the_fused_and_the_numpy_bits(rng, name, dtype):
    cell = CELLS[name]
    shape = (8, 40)
    n_saved = 11 if name == "lstm" else 7
    saved = tuple(_values(rng, shape, dtype) for _ in range(n_saved))
    carry = (_values(rng, shape, dtype),)
    grads = tuple(_values(rng, shape, dtype) for _ in range(len(cell.state_names)))
    got = _compiled(cell.pointwise_backward, True)(saved, carry, grads)
    want = _compiled(cell.pointwise_backward, False)(saved, carry, grads)
    with np.errstate(all="ignore"):
        on_numpy = cell.pointwise_backward(cell.ops(xp), saved, carry, grads)
    for g3, w3, n3 in zip(got, want, on_numpy):
        for g, w, n in zip(g3, w3, n3):
            _nan_equal(g, w)
            _nan_equal(g, n)


def _every_operator(a, b):
    return (a + b, a - b, a * b, a / b, a + b * a - b / a, a ** 2)


@pytest.mark.parametrize(
    "a, b",
    [
        (np.arange(1.0, 7.0).reshape(2, 3), np.full((2, 3), 0.5)),  # the loop's case, 2-D
        (np.arange(1.0, 7.0, dtype=np.float32), np.linspace(-1, 1, 6, dtype=np.float32)),  # 1-D
        (np.arange(1.0, 7.0).reshape(2, 3), np.arange(1.0, 4.0)),  # broadcasting across ndim
        (np.arange(1.0, 7.0).reshape(2, 3), np.arange(1.0, 3.0).reshape(2, 1)),  # same ndim, broadcast
        (np.arange(1.0, 7.0, dtype=np.float32).reshape(3, 2), 2.5),  # an array and a number
        (1.5, np.arange(1.0, 5.0)),
        (np.arange(1.0, 5.0, dtype=np.float32), np.arange(1.0, 5.0)),  # two dtypes
        (np.arange(1, 5), np.arange(2, 6)),  # integers
        (3.0, 4.0),  # numbers
    ],
)
def test_every_other_case_keeps_numbas_operators(a, b):
    written, plain = (_MADE.setdefault(("every", way), njit(**EXACT)(fn))
                      for way, fn in ((True, E.written_out(_every_operator)), (False, _every_operator)))  # fmt: skip
    for g, w, p in zip(written(a, b), plain(a, b), _every_operator(a, b)):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        np.testing.assert_array_equal(g, w)
        np.testing.assert_allclose(g, p, rtol=1e-6)


def test_the_rewrite_replaces_each_binary_operator_and_keeps_the_rest():
    made = E.written_out(_every_operator)
    names = set(made.__code__.co_names)
    assert {"_rnn_xp_add", "_rnn_xp_sub", "_rnn_xp_mul", "_rnn_xp_truediv"} <= names
    assert made.__code__.co_firstlineno == _every_operator.__code__.co_firstlineno  # tracebacks name the cell's lines
    assert made(6.0, 3.0) == _every_operator(6.0, 3.0)  # ** is left as it is


def test_a_formula_without_source_is_compiled_as_it_is():
    namespace = {}
    exec("def f(a, b):\n    return a * b + a\n", namespace)  # noqa: S102
    f = namespace["f"]
    assert E.written_out(f) is f
