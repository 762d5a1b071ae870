"""rnn_xp inside JAX's transformations: jit, grad, vmap, checkpoint, lax.scan, and rnn_xp's backward as the gradient.

Every cell (Elman, LSTM, GRU: a ``cell`` parameter) runs one jitted ``lax.scan``
whose gradient is rnn_xp's backward (``kernels.jax``). References: JAX's own
autodiff of the portable loop (``kernels.portable.scan_portable`` and
``scan_cell`` on ``jax.numpy``, ``cell_cases.portable``), Python loops over
examples, and the float64 NumPy loop of ``support.reference_rnn``. The test process runs with ``jax_enable_x64`` (the
tests' own choice, in ``conftest.py``); what rnn_xp does to JAX's configuration
is checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cell_cases import CELLS, GRID as CELL_GRID, arrays, grid_id, portable, public, random_mask, split, weights_of
from support import make_backend
from support import half_product, jax_dots, optional_import, random_rnn, reference_rnn, uncovered

import rnn_xp
from rnn_xp import columns
from rnn_xp.kernels import jax as jax_kernel
from rnn_xp.kernels.portable import backward_cell, backward_portable, scan_cell, scan_portable

jax = optional_import("jax")
pytestmark = pytest.mark.skipif(jax is None, reason="jax not installed")
if jax is not None:
    import jax.numpy as jnp
npx = optional_import("array_api_compat.numpy")

RTOL, ATOL = 1e-10, 1e-12  # float64


@pytest.fixture
def be():
    return make_backend("jax")  # float64 enabled for the test process


def _inputs(rng, T=4, batch=(3,), D=2, H=5):
    return tuple(jnp.asarray(a) for a in random_rnn(rng, T, batch, D, H))


def _close(actual, expected, rtol=RTOL, atol=ATOL):
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def _jax(a, options):
    """A call's arrays and options as JAX arrays (``lengths`` and ``mask`` included)."""
    options = {k: jnp.asarray(v) if k in ("lengths", "mask") else v for k, v in options.items()}
    return {k: jnp.asarray(v) for k, v in a.items()}, options


def _cell_loss(outputs):
    return sum(jnp.sum(jnp.sin(o) * weights_of(o)) for o in outputs)


def _loss(h_seq, h_last):
    """A loss that weighs every state differently (sin/cos), so each gradient term counts."""
    total = jnp.sum(jnp.cos(h_last))
    return total if h_seq is None else total + jnp.sum(jnp.sin(h_seq) * jnp.arange(1, h_seq.shape[-1] + 1))


# -- the gradient is rnn_xp's backward, equal to JAX's autodiff of the portable loop ----------

# lengths, reverse, leak (and its activation), return_sequences: half the product, in which every
# three of the four meet in all eight of their combinations (each row is a compile of its own;
# the torch tests run the whole product)
LEVELS = [[None, (4, 0, 2)], [False, True], [1.0, 0.6], [True, False]]
GRID = half_product(*LEVELS)


def test_the_grid_meets_every_three_options():
    assert len(GRID) == 8 and not uncovered(GRID, LEVELS, strength=3)


@pytest.mark.parametrize("lengths, reverse, leak, return_sequences", GRID)
def test_grad_equals_jax_autodiff_of_the_portable_loop(be, rng, lengths, reverse, leak, return_sequences):
    args = _inputs(rng)
    lens = None if lengths is None else jnp.asarray(lengths)
    nonlinearity = "relu" if leak == 0.6 else "tanh"  # both activations, each with both leaks over the grid
    options = dict(nonlinearity=nonlinearity, lengths=lens, reverse=reverse, leak=leak,
                   return_sequences=return_sequences)  # fmt: skip

    def ours(args):
        out = rnn_xp.rnn_forward(*args, **options)
        return _loss(out, out[-1]) if return_sequences else _loss(None, out)

    def portable(args):
        h_seq, h_last = scan_portable(jnp, *args, **options)
        return _loss(h_seq, h_seq[-1] if return_sequences else h_last)

    _close(jax.grad(ours)(args), jax.grad(portable)(args))


@pytest.mark.parametrize("case", CELL_GRID, ids=grid_id)
def test_cell_grad_equals_jax_autodiff_of_the_portable_loop(be, rng, case):
    """Every cell: the registered backward against JAX's autodiff of the portable loop."""
    cell, options = case
    host, host_options = split(rng, cell, options)
    a, options = _jax(host, host_options)
    host_options = {k: np.asarray(v) if k == "lengths" else v for k, v in host_options.items()}
    _close(public(cell, a, **options), portable(npx, cell, host, **host_options))  # the NumPy loop
    grad = jax.grad(lambda a: _cell_loss(public(cell, a, **options)))
    ours = (jax.jit(grad) if options.get("reverse") else grad)(a)  # under jit too (each compile costs)
    _close(ours, jax.jit(jax.grad(lambda a: _cell_loss(portable(jnp, cell, a, **options))))(a))


def test_relu_with_a_leak_counts_no_inactive_unit(be, rng):
    """relu(z_t) = 0 everywhere (a large negative bias): no gradient reaches Wx or b.

    The backward reads relu's derivative off the states, h_t > (1 - leak) h_{t-1}; read
    off their difference instead, XLA's fused multiply-add leaves a rounding residue
    that counts about half the units as active.
    """
    x, h0, Wx, Wh, _ = _inputs(rng, T=6, batch=(50,), D=3, H=16)
    b = jnp.full((16,), -100.0)
    loss = lambda Wx, b: jnp.sum(rnn_xp.rnn_forward(x, h0, Wx, Wh, b, nonlinearity="relu", leak=0.6) ** 2)  # noqa: E731
    dWx, db = jax.jit(jax.grad(loss, argnums=(0, 1)))(Wx, b)
    assert np.all(np.asarray(dWx) == 0) and np.all(np.asarray(db) == 0)


def test_layer_grad_with_h_n_and_batch_first(be, rng, monkeypatch):
    """Both outputs of RNN (output and h_n) flow back; rnn_xp's backward against JAX's autodiff."""
    rnn = rnn_xp.RNN(3, 4, bidirectional=True, batch_first=True, leak=0.75, xp=jnp,
                     dtype="float64", seed=1)  # fmt: skip
    x = jnp.asarray(rng.standard_normal((3, 5, 3)))  # (B, T, D)
    h0 = jnp.asarray(rng.standard_normal((2, 3, 4)) * 0.5)
    lens = jnp.asarray([5, 0, 3])

    def loss(params, x, h0):
        rnn.params = params
        output, h_n = rnn(x, h0, lengths=lens)
        return _loss(output, h_n)

    params = dict(rnn.params)
    ours = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, x, h0)
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")  # read while jit traces
    framework = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, x, h0)
    _close(ours, framework)


@pytest.mark.parametrize("cell", CELLS)
def test_grad_runs_rnn_xps_backward(be, rng, monkeypatch, cell):
    calls = []
    real = jax_kernel.backward_cell_jax
    monkeypatch.setattr(jax_kernel, "backward_cell_jax", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, _ = _jax(arrays(rng, cell), {})
    loss = lambda x: _cell_loss(public(cell, {**a, "x": x}))  # noqa: E731
    want = jax.jit(jax.grad(lambda x: _cell_loss(portable(jnp, cell, {**a, "x": x}))))(a["x"])
    _close(jax.grad(loss)(a["x"]), want)
    assert len(calls) == 1
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    _close(jax.grad(loss)(a["x"]), want)
    assert len(calls) == 1  # JAX differentiated the scan itself


def test_autodiff_variable_is_checked(be, rng, monkeypatch):
    monkeypatch.setenv("RNN_XP_AUTODIFF", "torch")
    with pytest.raises(ValueError, match="RNN_XP_AUTODIFF must be one of"):
        rnn_xp.rnn_forward(*_inputs(rng))


@pytest.mark.parametrize("cell", CELLS)
def test_jvp_is_a_clear_error_and_works_with_framework_autodiff(be, rng, monkeypatch, cell):
    a, _ = _jax(arrays(rng, cell), {})
    name = "Wx" if cell == "elman" else "W_hh"
    f = lambda W: public(cell, {**a, name: W})  # noqa: E731
    W = a[name]
    with pytest.raises(TypeError, match="RNN_XP_AUTODIFF=framework"):
        jax.jvp(f, (W,), (jnp.ones_like(W),))
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    _, tangent = jax.jvp(f, (W,), (jnp.ones_like(W),))
    eps = 1e-6  # central difference of the forward
    expected = tuple((p - m) / (2 * eps) for p, m in zip(f(W + eps), f(W - eps)))
    _close(tangent, expected, rtol=1e-6, atol=1e-8)


# -- transformations ---------------------------------------------------------------------------


def test_jit_with_closed_over_weights(be, rng):
    x, h0, Wx, Wh, b = _inputs(rng)
    out = jax.jit(lambda x: rnn_xp.rnn_forward(x, h0, Wx, Wh, b))(x)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    _close(out, jnp.asarray(expected))


@pytest.mark.parametrize("wrt", ["x", "h0", "Wx", "Wh", "b"])
def test_grad_with_respect_to_each_argument(be, rng, wrt):
    """One argument traced, the others concrete (closed over); and all passed, under jit."""
    names = ("x", "h0", "Wx", "Wh", "b")
    args = dict(zip(names, _inputs(rng)))

    def loss_of(value):
        return jnp.sum(jnp.sin(rnn_xp.rnn_forward(**{**args, wrt: value})))

    def portable(value):
        a = {**args, wrt: value}
        return jnp.sum(jnp.sin(scan_portable(jnp, *(a[n] for n in names), nonlinearity="tanh", lengths=None,
                                             reverse=False, leak=1.0, return_sequences=True)[0]))

    expected = jax.grad(portable)(args[wrt])
    _close(jax.grad(loss_of)(args[wrt]), expected)
    value, grad = jax.jit(jax.value_and_grad(loss_of))(args[wrt])
    _close(grad, expected)
    _close(value, portable(args[wrt]))


def test_grad_with_every_argument_passed_and_traced(be, rng):
    args = _inputs(rng)
    loss = lambda *a: jnp.sum(jnp.sin(rnn_xp.rnn_forward(*a)))  # noqa: E731
    portable = lambda *a: jnp.sum(jnp.sin(scan_portable(  # noqa: E731
        jnp, *a, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0, return_sequences=True)[0]))
    argnums = tuple(range(5))
    _close(jax.jit(jax.grad(loss, argnums=argnums))(*args), jax.grad(portable, argnums=argnums)(*args))


@pytest.mark.parametrize("cell, jit", [("elman", False), ("elman", True), ("lstm", True), ("gru", True)])
def test_vmap_per_example_gradients_equal_a_loop(be, rng, cell, jit):
    a, _ = _jax(arrays(rng, cell, batch=(4,), proj=3 if cell == "lstm" else 0), {})
    lens = jnp.asarray([4, 0, 1, 3])
    states = [k for k in ("h0", "c0") if k in a]
    weights = {k: v for k, v in a.items() if k != "x" and k not in states}
    bias = [k for k in weights if k.startswith("b")][:1]  # one weight closed over (concrete)

    def loss(params, xi, si, li):  # one example: xi (T, D), si the state's parts (S_k,)
        return _cell_loss(public(cell, {**params, **{k: weights[k] for k in bias}, "x": xi, **si},
                                 lengths=li, reverse=cell == "gru"))  # fmt: skip

    params = {k: v for k, v in weights.items() if k not in bias}
    s = {k: a[k] for k in states}
    per_example = jax.vmap(jax.grad(loss), in_axes=(None, 1, 0, 0))
    per_example = (jax.jit(per_example) if jit else per_example)(params, a["x"], s, lens)
    for i in range(4):
        one = jax.grad(loss)(params, a["x"][:, i], {k: v[i] for k, v in s.items()}, lens[i])
        _close({k: g[i] for k, g in per_example.items()}, one)


@pytest.mark.parametrize("cell", CELLS)
def test_checkpoint_and_nesting(be, rng, cell):
    a, _ = _jax(arrays(rng, cell), {})
    name = "Wx" if cell == "elman" else "W_ih"
    Wx, x = a[name], a["x"]
    loss = lambda W, x: _cell_loss(public(cell, {**a, name: W, "x": x}, reverse=True))  # noqa: E731
    expected = jax.grad(loss)(Wx, x)
    _close(expected, jax.jit(jax.grad(lambda W: _cell_loss(portable(jnp, cell, {**a, name: W}, reverse=True))))(Wx))
    _close(jax.grad(jax.checkpoint(loss))(Wx, x), expected)
    _close(jax.jit(jax.grad(jax.jit(loss)))(Wx, x), expected)
    if cell == "gru":
        return  # the nesting below runs the same kernels as for the LSTM
    # grad of a function that itself takes a per-example vmap of grads
    inner = jax.vmap(jax.grad(loss, argnums=1), in_axes=(None, 0))
    outer = jax.jit(jax.grad(lambda W: jnp.sum(inner(W, jnp.stack([x, 2 * x])) ** 2)))
    assert outer(Wx).shape == Wx.shape
    assert np.all(np.isfinite(np.asarray(outer(Wx))))


def test_lax_scan_over_step_forward(be, rng):
    x, h0, Wx, Wh, b = _inputs(rng)

    def run(Wx):
        step = lambda h, xt: (rnn_xp.rnn_step_forward(xt, h, Wx, Wh, b),) * 2  # noqa: E731
        return jax.lax.scan(step, h0, x)[1]  # (T, *batch, H)

    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    _close(jax.jit(run)(Wx), jnp.asarray(expected))
    _close(jax.grad(lambda W: jnp.sum(jnp.sin(run(W))))(Wx),
           jax.grad(lambda W: jnp.sum(jnp.sin(rnn_xp.rnn_forward(x, h0, W, Wh, b))))(Wx))  # fmt: skip


def test_columns_under_jit_and_grad(be, rng):
    x, h0, Wx, Wh, b = _inputs(rng)
    xc, hc = jnp.permute_dims(x, (0, 2, 1)), h0.T  # (T, D, N), (H, N)
    rows = lambda W: rnn_xp.rnn_forward(x, h0, W, Wh, b)  # noqa: E731
    cols = jax.jit(lambda W: columns.rnn_forward(xc, hc, W, Wh, b[:, None]))
    _close(cols(Wx), jnp.permute_dims(rows(Wx), (0, 2, 1)))
    _close(jax.grad(lambda W: jnp.sum(jnp.sin(cols(W))))(Wx), jax.grad(lambda W: jnp.sum(jnp.sin(rows(W))))(Wx))
    step = jax.jit(lambda W: columns.rnn_step_forward(xc[0], hc, W, Wh, b[:, None]))
    _close(step(Wx), rnn_xp.rnn_step_forward(x[0], h0, Wx, Wh, b).T)


def test_layer_call_under_jit_and_grad(be, rng):
    rnn = rnn_xp.RNN(2, 3, num_layers=2, xp=jnp, dtype="float64", seed=0)
    x = jnp.asarray(rng.standard_normal((5, 4, 2)))
    out, h_n = jax.jit(lambda x: rnn(x))(x)
    eager_out, eager_h_n = rnn(x)
    _close((out, h_n), (eager_out, eager_h_n))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(rnn(x)[0] ** 2)))(x)
    assert grad.shape == x.shape


def test_rnn_backward_under_jit_with_traced_lengths(be, rng):
    x, h0, Wx, Wh, b = _inputs(rng)
    lens = jnp.asarray([4, 0, 2])

    @jax.jit
    def grads(x, lens):  # lengths traced: its range check is skipped (it needs values)
        h = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lens, reverse=True)
        return rnn_xp.rnn_backward(jnp.ones_like(h), x, h0, Wx, Wh, b, h, lengths=lens, reverse=True)

    expected = jax.grad(lambda a: jnp.sum(scan_portable(jnp, *a, nonlinearity="tanh", lengths=lens, reverse=True,
                                                         leak=1.0, return_sequences=True)[0]))((x, h0, Wx, Wh, b))
    _close(tuple(grads(x, lens)), expected)  # fmt: skip


# -- the backward kernel against the portable loop, on the edge catalogue ------------------------

EDGES = [  # (T, batch, D, H, lengths, reverse, leak, nonlinearity)
    (0, (2,), 3, 4, None, False, 1.0, "tanh"),
    (4, (0,), 3, 4, None, True, 1.0, "tanh"),
    (3, (), 2, 3, None, False, 0.3, "relu"),
    (5, (2, 3), 2, 3, None, True, 1.0, "tanh"),
    (5, (3,), 2, 4, (0, 5, 2), True, 0.6, "relu"),
    (5, (3,), 2, 4, (5, 5, 5), False, 1.0, "tanh"),
]


@pytest.mark.parametrize("T, batch, D, H, lengths, reverse, leak, nonlinearity", EDGES)
def test_backward_kernel_against_portable(be, rng, T, batch, D, H, lengths, reverse, leak, nonlinearity):
    x, h0, Wx, Wh, _ = _inputs(rng, T, batch, D, H)
    options = dict(nonlinearity=nonlinearity, lengths=None if lengths is None else jnp.asarray(lengths),
                   reverse=reverse, leak=leak)  # fmt: skip
    h_seq, h_last = scan_portable(jnp, x, h0, Wx, Wh, None, return_sequences=True, **options)
    dh = jnp.asarray(rng.standard_normal(h_seq.shape))
    dh_n = jnp.asarray(rng.standard_normal(h_last.shape))
    if T:  # NaN and Inf in the upstream gradient stay where the portable loop puts them
        dh = dh.at[(T - 1,) + (0,) * (dh.ndim - 1)].set(jnp.nan) if dh.size else dh
    got = jax_kernel.backward_jax(jnp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)
    want = backward_portable(jnp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)
    _close(got, want)


CELL_EDGES = [  # (cell, T, batch, lengths, mask, reverse)
    ("lstm", 0, (2,), None, False, False),
    ("gru", 4, (0,), None, False, True),
    ("lstm", 3, (), None, False, False),
    ("gru", 5, (2, 3), None, False, True),
    ("lstm", 5, (3,), (0, 5, 2), False, True),
    ("gru", 5, (3,), None, True, False),
]


@pytest.mark.parametrize("cell, T, batch, lengths, mask, reverse", CELL_EDGES)
def test_cell_kernels_against_portable(be, rng, cell, T, batch, lengths, mask, reverse):
    """scan_cell_jax and backward_cell_jax against the portable loops on the edge catalogue.

    Non-finite input past a sequence's length and NaN in the upstream
    gradient there stay out of every result; every part of the state takes
    an upstream gradient (an LSTM's c_seq too).
    """
    from cell_cases import make_cell
    from rnn_xp.cells import GRUWeights, LSTMWeights

    host = arrays(rng, cell, T=T, batch=batch, proj=2 if cell == "lstm" else 0)
    lens = None if lengths is None else np.asarray(lengths)
    if lens is not None and T:
        for i, n in enumerate(lens):
            host["x"][n:, i] = np.nan  # padding: never read
    c = make_cell(cell, {})
    m = None if not mask else np.moveaxis(random_mask(rng, batch, T), -1, 0)  # (T, *batch)

    def call(a, to):  # (x, state0, w, options) in one library: the portable loop's on NumPy is the reference
        a = {k: to(v) for k, v in a.items()}
        state0 = (a["h0"], a["c0"]) if cell == "lstm" else (a["h0"],)
        w = (LSTMWeights(a["W_ih"], a["W_hh"], a["b_ih"], a["b_hh"], a["W_hr"]) if cell == "lstm"
             else GRUWeights(a["W_ih"], a["W_hh"], a["b_ih"], a["b_hh"]))  # fmt: skip
        options = dict(lengths=None if lens is None else to(lens), reverse=reverse, mask=None if m is None else to(m))
        return a["x"], state0, w, options

    x, state0, w, options = call(host, jnp.asarray)
    hx, hstate0, hw, hoptions = call(host, np.asarray)
    for sequences in (True, False) if reverse else (True,):
        got = jax_kernel.scan_cell_jax(jnp, c, x, state0, w, return_sequences=sequences, **options)
        _close(got, scan_cell(npx, c, hx, hstate0, hw, return_sequences=sequences, **hoptions))
    hseqs, _ = scan_cell(npx, c, hx, hstate0, hw, return_sequences=True, **hoptions)
    d_seqs = tuple(rng.standard_normal(q.shape) for q in hseqs)
    padded = None if lens is None else [(t, i) for i, n in enumerate(lens) for t in range(n, T)]
    if padded:  # NaN in the upstream gradient where the output is a constant zero
        for q in d_seqs:
            q[padded[0]] = np.nan
    d_finals = tuple(rng.standard_normal(s.shape) for s in hstate0)
    for d_out in (d_seqs, None):  # every part's gradient (an LSTM's c_seq too), or none
        got = jax_kernel.backward_cell_jax(jnp, c, None if d_out is None else tuple(map(jnp.asarray, d_out)), x,
                                           state0, w, tuple(map(jnp.asarray, hseqs)),
                                           tuple(map(jnp.asarray, d_finals)), **options)  # fmt: skip
        want = backward_cell(npx, c, d_out, hx, hstate0, hw, hseqs, d_finals, **hoptions)
        _close(got, want)
        if padded:
            assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(got))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_cell_product_is_full_precision(be, rng, cell):
    """On a GPU float32 products default to TF32: every product of the forward and the gradient asks for HIGHEST."""
    a = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in arrays(rng, cell, proj=3 if cell == "lstm" else 0).items()}
    lens = jnp.asarray([4, 0, 2])
    loss = lambda a: _cell_loss(public(cell, a, lengths=lens))  # noqa: E731
    dots = jax_dots(jax.make_jaxpr(jax.grad(loss))(a).jaxpr)
    assert len(dots) >= 6  # the products of the forward and the backward
    for eqn in dots:
        precision = eqn.params.get("precision")
        assert all(p == jax.lax.Precision.HIGHEST for p in precision), str(eqn)


# -- JAX's configuration, devices: in a fresh interpreter ---------------------------------------

_FRESH = r"""
import json, jax, jax.numpy as jnp, numpy as np, rnn_xp
report = {}
rnn = rnn_xp.RNN(2, 3, xp="jax", seed=0)
out, h_n = rnn(jnp.ones((4, 2, 2)))
report["layer_dtype"] = str(rnn.dtype.__name__ if isinstance(rnn.dtype, type) else rnn.dtype)
report["out_dtype"] = str(out.dtype)
rnn_xp.rnn_forward(jnp.ones((3, 2)), None, jnp.ones((4, 2)), jnp.eye(4))
report["after"] = str(jnp.ones(3).dtype)
report["x64"] = bool(jax.config.jax_enable_x64)
for dtype in ("float64", jnp.float64, np.float64):
    try:
        rnn_xp.RNN(2, 3, xp=jnp, dtype=dtype)
        report.setdefault("float64", []).append("no error")
    except TypeError as exc:
        report.setdefault("float64", []).append(str(exc))
# two CPU devices (XLA_FLAGS): a genuine mismatch raises; a tracer next to either does not
d0, d1 = jax.devices("cpu")[:2]
x = jax.device_put(jnp.ones((3, 2, 2)), d0)
Wx, Wh = jax.device_put(jnp.ones((4, 2)), d1), jax.device_put(jnp.eye(4), d1)
try:
    rnn_xp.rnn_forward(x, None, Wx, Wh)
    report["mismatch"] = "no error"
except ValueError as exc:
    report["mismatch"] = str(exc)
x1 = jax.device_put(x, d1)  # traced, next to weights on the second device
report["traced"] = list(jax.jit(lambda x: rnn_xp.rnn_forward(x, None, Wx, Wh))(x1).shape)
print(json.dumps(report))
"""


def test_rnn_xp_never_turns_on_x64_and_checks_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["x64"] is False and report["after"] == "float32"
    assert report["layer_dtype"] == "float32" and report["out_dtype"] == "float32"
    for message in report["float64"]:
        assert "jax_enable_x64" in message and "64-bit mode" in message, message
    assert "is on device" in report["mismatch"] and "move them to one device" in report["mismatch"]
    assert report["traced"] == [3, 2, 4]


def test_options_the_scans_do_not_know_travel_to_the_portable_loops(be, rng, monkeypatch):
    """A newer option (here a setting and an array) reaches the portable forward and backward, with the bias."""
    from rnn_xp.kernels import portable

    seen = {}

    def scan(xp, *args, extra_setting, extra_data, **options):
        seen["forward"] = extra_setting, extra_data.shape
        return scan_portable(xp, *args, **options)

    def backward(xp, *args, extra_setting, extra_data, b=None, **options):
        seen["backward"] = extra_setting, extra_data.shape, b is not None
        return backward_portable(xp, *args, **options)

    args = _inputs(rng)
    options = dict(nonlinearity="relu", lengths=jnp.asarray([4, 0, 2]), reverse=True, leak=0.6,
                   return_sequences=False)  # fmt: skip
    want = jax.grad(lambda a: jnp.sum(jnp.sin(scan_portable(jnp, *a, **options)[1])))(args)
    monkeypatch.setattr(portable, "scan_portable", scan)
    monkeypatch.setattr(portable, "backward_portable", backward)

    def loss(a):
        _, h_last = jax_kernel.scan_jax(jnp, *a, extra_setting=0.5, extra_data=jnp.ones(3), **options)
        return jnp.sum(jnp.sin(h_last))

    _close(jax.grad(loss)(args), want)
    assert seen["forward"] == (0.5, (3,)) and seen["backward"] == (0.5, (3,), True)
