"""``kernels.numba_activations``: the backward's sigmoids over all steps on the compiled loops' sigmoid.

Held against ``cells._base.activated`` (NumPy's sigmoid of ``_activations``) bit for bit: on a gate's
block of a wider array (rows far apart), on arrays whose rows cannot be read as one view, on every
special value; everything it does not take goes to ``cells._base.activated`` unchanged; and the gated
backward of the compiled loops gives the same bits with it as with NumPy's. numba is optional: without it
these tests skip.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnn_xp.bench import gated
from rnn_xp.cells import _base
from rnn_xp.cells._base import GateActivation
from rnn_xp.kernels import _numba_jit, numba_activations, numba_cpu

pytest.importorskip("numba", reason="numba is not installed (pip install rnn_xp[numba])")

SIGMOID = GateActivation("sigmoid")


def _special(dtype):
    """Every kind of value a sigmoid meets: zeros of both signs, sub-normals, the largest finite values, the
    point where exp underflows, infinities and NaN."""
    info = np.finfo(dtype)
    edge = [0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal, info.tiny, -info.tiny, info.eps,
            1.0, -1.0, 88.7, -88.7, 103.9, -103.9, 709.8, -709.8, 745.2, -745.2, info.max, -info.max,
            np.inf, -np.inf, np.nan, -np.nan]  # fmt: skip
    return np.array(edge, dtype=dtype)


def _assert_same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


@pytest.fixture
def calls(monkeypatch):
    """The names ``numba_cpu.run_compiled`` was asked for, in order."""
    seen = []
    run = numba_cpu.run_compiled

    def counted(name, *args, **kwargs):
        seen.append(name)
        return run(name, *args, **kwargs)

    monkeypatch.setattr(numba_cpu, "run_compiled", counted)
    return seen


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gates_block_gives_numpys_bits(rng, calls, dtype):
    """A gate's block of the pre-activations of all gates ``(T, B, G * H)``, its rows ``G * H`` apart, with
    special values among random ones of every scale: the value and the derivative bit for bit, compiled."""
    T, B, H, G = 7, 5, 37, 4
    z = (rng.standard_normal((T, B, G * H)) * rng.choice([1e-3, 1, 30, 1e3], size=(T, B, G * H))).astype(dtype)
    special = _special(dtype)
    z[2, 1, H : H + special.size] = special
    z[6, 4, 2 * H - special.size : 2 * H] = special[::-1]
    for k in range(G):
        block = z[..., k * H : (k + 1) * H]
        value, derivative = numba_activations.activated(np, SIGMOID, block, None)
        want_value, want_derivative = _base.activated(np, SIGMOID, block, None)
        _assert_same_bits(value, want_value)
        _assert_same_bits(derivative, want_derivative)
        assert value.flags.c_contiguous
    assert calls == ["sigmoid_span"] * G


@pytest.mark.parametrize(
    "make",
    [
        lambda z: z,  # C-contiguous
        lambda z: z[::-1],  # rows in reverse: a copy first
        lambda z: z.transpose(1, 0, 2),  # leading axes that fold into no single stride: a copy first
        lambda z: z[:, :, ::2],  # a column stride: a copy first
        lambda z: z[:1, :1],  # one row
        lambda z: z[0, 0],  # one dimension
    ],
    ids=["contiguous", "reversed", "transposed", "column-strided", "one-row", "1-d"],
)
def test_any_layout_gives_numpys_bits(rng, calls, make):
    z = make(rng.standard_normal((6, 3, 40)).astype(np.float32) * 10)
    value, derivative = numba_activations.activated(np, SIGMOID, z, None)
    want_value, want_derivative = _base.activated(np, SIGMOID, z, None)
    _assert_same_bits(value, want_value)
    _assert_same_bits(derivative, want_derivative)
    assert calls == ["sigmoid_span"]


def test_the_input_is_left_as_it_was(rng):
    z = rng.standard_normal((4, 3, 24)).astype(np.float64)
    before = z.copy()
    numba_activations.activated(np, SIGMOID, z[..., 8:16], None)
    _assert_same_bits(z, before)


@pytest.mark.parametrize(
    "case",
    [
        dict(act=GateActivation("tanh")),
        dict(act=GateActivation("relu")),
        dict(act=GateActivation("affine", 2.0, 0.5)),
        dict(clip=2.5),
        dict(dtype="float16"),
        dict(shape=(0, 3, 8)),
        dict(shape=(4, 0, 8)),
    ],
    ids=["tanh", "relu", "affine", "clip", "float16", "no-steps", "no-batch"],
)
def test_everything_else_is_cells_own(rng, calls, case):
    """Another activation, a clip, another dtype, an empty block: ``cells._base.activated``'s arrays, no
    compiled call."""
    act, clip = case.get("act", SIGMOID), case.get("clip")
    z = (rng.standard_normal(case.get("shape", (4, 3, 8))) * 4).astype(case.get("dtype", "float32"))
    value, derivative = numba_activations.activated(np, act, z, clip)
    want_value, want_derivative = _base.activated(np, act, z, clip)
    _assert_same_bits(value, want_value)
    _assert_same_bits(derivative, want_derivative)
    assert calls == []


def test_another_library_is_cells_own(rng, calls):
    xps = pytest.importorskip("array_api_strict")
    z = xps.asarray(rng.standard_normal((3, 2, 8)).astype(np.float32))
    value, derivative = numba_activations.activated(xps, SIGMOID, z, None)
    want_value, want_derivative = _base.activated(xps, SIGMOID, z, None)
    assert type(value) is type(want_value)
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want_value))
    np.testing.assert_array_equal(np.asarray(derivative), np.asarray(want_derivative))
    assert calls == []


def test_sigmoid_span_is_the_rows_sigmoid(rng):
    """``sigmoid_span`` over rows ``stride`` apart is ``sigmoid_rows`` of those rows made contiguous."""
    rows, stride, n = 9, 50, 23
    flat = (rng.standard_normal((rows - 1) * stride + n) * 20).astype(np.float32)
    out = np.full((rows, n), np.nan, dtype=np.float32)
    _numba_jit.sigmoid_span(flat, rows, stride, n, out)
    picked = np.stack([flat[i * stride : i * stride + n] for i in range(rows)])
    _assert_same_bits(out, _numba_jit.sigmoid_rows(picked))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("blocks", [False, True], ids=["saved-at-once", "saved-in-blocks"])
def test_the_compiled_backward_gives_the_same_bits_with_numpys_sigmoid(monkeypatch, calls, cell, blocks):
    """The layer's forward + backward on the compiled loops: every gradient the same bits whether ``saved``
    runs the compiled sigmoid or NumPy's (all steps at once, and over blocks of steps)."""
    from rnn_xp.kernels import numpy_cells

    if blocks:
        monkeypatch.setattr(numpy_cells, "SAVED_BLOCKS_FROM", 0)
        monkeypatch.setattr(numpy_cells, "SAVED_ELEMENTS", 3 * 4 * {"lstm": 4, "gru": 3}[cell] * 6)  # 3 steps
    p = gated.problem(cell, 4, 13, 5, 6)
    d = np.random.default_rng(3).standard_normal((13, 4, 6)).astype(np.float32)
    run, _ = gated.rnn_xp_numpy("forward-backward", p, d_output=d)
    compiled = run()
    sigmoids = {"lstm": 3, "gru": 2}[cell] * (5 if blocks else 1)  # 13 steps in blocks of 3: 5 blocks
    assert calls.count("sigmoid_span") == sigmoids
    monkeypatch.setattr(numba_activations, "activated", _base.activated)
    numpys = run()
    _assert_same_bits(compiled.dx, numpys.dx)
    assert compiled.params.keys() == numpys.params.keys()
    for name in compiled.params:
        _assert_same_bits(compiled.params[name], numpys.params[name])
