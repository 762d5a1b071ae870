"""The LSTM's and the GRU's contenders: one problem per size, each library's forward and forward+backward.

The gated cells are timed in two measurements per size:

``"forward"``
    one forward pass, no gradient kept;
``"forward-backward"``
    one training step's gradient: a forward that keeps what its backward
    needs, then the backward of ``sum(output * d_output)`` (``d_output`` a
    fixed random array) to the input and every weight.

Each contender is a maker ``make(kind, problem, leak, d_output) -> (fn, fingerprint)``
(``leak`` is the Elman suites' and unused here): ``fn()`` is one call that
returns once its result is computed (JAX's results are blocked on), and
``fingerprint(result)`` a few of its numbers as a NumPy vector, compared
across contenders (forward: the last step's output of batch entry 0;
forward+backward: the gradient of the input's first step for batch entry 0,
then row 0 of the recurrent weight's gradient). The isolated suites
(``rnn_xp.bench.isolated``, ``--suite lstm`` and ``--suite gru``) run each
maker in a process of its own; ``rnn_xp.bench.cells.SETS`` holds the same
makers as in-process contender sets.

``torch.nn.LSTM`` / ``torch.nn.GRU``
    The baseline: torch's module with the problem's weights. Forward+backward
    is ``output.backward(d_output)`` with ``requires_grad`` on the weights and
    the input, after setting their gradients to ``None`` (what
    ``optimizer.zero_grad()`` does), as torch users train.
``rnn_xp jax (lax.scan)``
    ``rnn_xp.lstm_forward`` / ``gru_forward`` on JAX arrays under
    ``jax.jit``; forward+backward is ``jax.vjp`` through it, jitted.
Flax (``FLAX``)
    ``flax.nnx.OptimizedLSTMCell`` / ``nnx.GRUCell`` under ``nnx.RNN`` (a
    ``lax.scan``), time-major, the module split into its graph and its
    parameters and the pure function jitted (``jax.jit`` over ``nnx.merge``);
    forward+backward is ``jax.vjp`` to the parameters and the input. Its
    weights are the problem's, transposed and (LSTM) the two biases summed.
rnn_xp on NumPy
    The layer ``rnn_xp.LSTM`` / ``rnn_xp.GRU``; forward+backward is
    ``forward(..., return_cache=True)`` then ``backward(cache, d_output)``,
    the training path of ``docs/tutorial-training.md``. The kernel that runs
    is the install's (the isolated suites set ``RNN_XP_NUMBA`` and
    ``RNN_XP_MKL`` per row).

>>> from rnn_xp.bench import gated
>>> p = gated.problem("gru", 2, 5, 3, 4)
>>> p.W_ih.shape, p.W_hh.shape, p.c0, p.d_output.shape
((12, 3), (12, 4), None, (5, 2, 4))
>>> fn, fingerprint = gated.rnn_xp_numpy("forward-backward", p, 1.0, p.d_output)
>>> fingerprint(fn()).shape                  # dx[0, 0] (D) then dW_hh[0] (H)
(7,)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "BASELINES", "FLAX", "GATES", "JAX", "KINDS", "NOTES", "NUMPY", "GatedProblem", "flax_rnn", "flops",
    "problem", "rnn_xp_jax", "rnn_xp_numpy", "torch_layer", "torch_module",
]  # fmt: skip

GATES = {"lstm": 4, "gru": 3}  # the gate blocks of W_ih and W_hh
KINDS = ("forward", "forward-backward")
BASELINES = {"lstm": "torch.nn.LSTM", "gru": "torch.nn.GRU"}
JAX = "rnn_xp jax (lax.scan)"
NUMPY = "rnn_xp numpy"  # the in-process row: what the layer does in the process that runs it
FLAX = {"lstm": "flax nnx.OptimizedLSTMCell (lax.scan)", "gru": "flax nnx.GRUCell (lax.scan)"}
# What a row's reader should know, printed under its table.
NOTES = {
    FLAX["gru"]: "Flax's GRUCell has no bias inside the reset product (n = tanh(W_in x + b_in + r * W_hn h), "
                 "torch's adds b_hn to W_hn h): the GRU problem's bias_hh is zero, so every row computes "
                 "the same numbers",
}  # fmt: skip


class GatedProblem(NamedTuple):
    """One size's float32 arrays, torch's layout: ``x (T, B, D)``, ``h0 (B, H)``, ``c0 (B, H)`` (None for the
    GRU), ``W_ih (G*H, D)``, ``W_hh (G*H, H)``, ``b_ih``, ``b_hh (G*H,)`` and ``d_output (T, B, H)``."""

    cell: str
    x: Any
    h0: Any
    c0: Any
    W_ih: Any
    W_hh: Any
    b_ih: Any
    b_hh: Any
    d_output: Any


def problem(cell, B, T, D, H, seed=0):
    """The problem of a size for ``cell`` (``"lstm"`` or ``"gru"``): seeded float32 arrays.

    The GRU's ``b_hh`` is zero: Flax's GRUCell has no bias inside the reset
    product, and with it zero every contender computes the same function.
    """
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}; got {cell!r}")
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    h0 = f32(rng.standard_normal((B, H)) * 0.5)
    c0 = f32(rng.standard_normal((B, H)) * 0.5) if cell == "lstm" else None
    W_ih = f32(rng.standard_normal((G * H, D)) / math.sqrt(max(D, 1)))
    W_hh = f32(rng.standard_normal((G * H, H)) / math.sqrt(max(H, 1)))
    b_ih = f32(rng.standard_normal(G * H) * 0.1)
    b_hh = f32(rng.standard_normal(G * H) * 0.1) if cell == "lstm" else np.zeros(G * H, np.float32)
    d_output = np.random.default_rng(seed + 1).standard_normal((T, B, H), dtype=np.float32)
    return GatedProblem(cell, x, h0, c0, W_ih, W_hh, b_ih, b_hh, d_output)


def flops(cell, B, T, D, H, kind="forward"):
    """Floating-point operations of the products: ``2 T B G H (D + H)`` for a forward (G gates), three
    times that for forward+backward (the backward's products to the input, the state and the weights)."""
    return 2.0 * T * B * GATES[cell] * H * (D + H) * (3 if kind == "forward-backward" else 1)


def _grads_fingerprint(dx, dW_hh):
    return np.concatenate([np.asarray(dx)[0, 0], np.asarray(dW_hh)[0]]).astype(np.float64)


def _last_output(out):
    return np.asarray(out)[-1, 0]


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")


# -- torch ---------------------------------------------------------------------------------------


def torch_module(p):
    """``torch.nn.LSTM`` or ``torch.nn.GRU`` (one layer, float32, CPU) with the problem's weights."""
    import torch

    D, H = p.x.shape[-1], p.h0.shape[-1]
    module = (torch.nn.LSTM if p.cell == "lstm" else torch.nn.GRU)(D, H)
    with torch.no_grad():
        for name, a in (("weight_ih_l0", p.W_ih), ("weight_hh_l0", p.W_hh), ("bias_ih_l0", p.b_ih),
                        ("bias_hh_l0", p.b_hh)):  # fmt: skip
            getattr(module, name).copy_(torch.from_numpy(a))
    return module


def torch_layer(kind, p, leak=1.0, d_output=None):
    """The baseline: ``torch.nn.LSTM`` / ``GRU``; forward+backward through autograd as a training step."""
    import torch

    _check_kind(kind)
    module = torch_module(p)
    tx = torch.from_numpy(p.x.copy())
    h0 = torch.from_numpy(p.h0)[None]
    state = h0 if p.c0 is None else (h0, torch.from_numpy(p.c0)[None])
    if kind == "forward":

        def forward():
            with torch.no_grad():
                return module(tx, state)[0]

        return forward, lambda out: _last_output(out.numpy())
    tx.requires_grad_()
    d = torch.from_numpy(d_output)
    leaves = [tx, *module.parameters()]

    def forward_backward():
        for t in leaves:
            t.grad = None
        module(tx, state)[0].backward(d)
        return tx.grad, module.weight_hh_l0.grad

    return forward_backward, lambda r: _grads_fingerprint(r[0].numpy(), r[1].numpy())


# -- JAX: rnn_xp's functions, and Flax's cells -----------------------------------------------------


def rnn_xp_jax(kind, p, leak=1.0, d_output=None):
    """``rnn_xp.lstm_forward`` / ``gru_forward`` on JAX arrays under ``jax.jit``; ``jax.vjp`` for the gradient."""
    import jax
    import jax.numpy as jnp

    import rnn_xp

    _check_kind(kind)
    weights = tuple(jnp.asarray(a) for a in (p.x, p.W_ih, p.W_hh, p.b_ih, p.b_hh))
    state = jnp.asarray(p.h0) if p.c0 is None else (jnp.asarray(p.h0), jnp.asarray(p.c0))

    if p.cell == "lstm":

        def output(state, x, W_ih, W_hh, b_ih, b_hh):
            return rnn_xp.lstm_forward(x, state, W_ih, W_hh, b_ih, b_hh)[0]
    else:

        def output(state, x, W_ih, W_hh, b_ih, b_hh):
            return rnn_xp.gru_forward(x, state, W_ih, W_hh, b_ih, b_hh)

    if kind == "forward":
        forward = jax.jit(output)
        return (lambda: jax.block_until_ready(forward(state, *weights))), _last_output

    @jax.jit
    def grads(state, weights, d):
        return jax.vjp(lambda *w: output(state, *w), *weights)[1](d)  # (dx, dW_ih, dW_hh, db_ih, db_hh)

    d = jnp.asarray(d_output)
    return (lambda: jax.block_until_ready(grads(state, weights, d))), lambda g: _grads_fingerprint(g[0], g[2])


def flax_rnn(kind, p, leak=1.0, d_output=None):
    """Flax NNX's ``OptimizedLSTMCell`` / ``GRUCell`` under ``nnx.RNN``, jitted as a pure function of its
    parameters; ``jax.vjp`` to the parameters and the input for the gradient."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    _check_kind(kind)
    D, H = p.x.shape[-1], p.h0.shape[-1]
    if p.cell == "lstm":  # dense_i (D, 4H) no bias, dense_h (H, 4H) with one bias; gates i, f, g, o as torch
        cell = nnx.OptimizedLSTMCell(D, H, rngs=nnx.Rngs(0))
        cell.dense_h.bias[...] = jnp.asarray(p.b_ih + p.b_hh)
        carry = (jnp.asarray(p.c0), jnp.asarray(p.h0))  # Flax's carry: the cell state first
    else:  # dense_i (D, 3H) with a bias, dense_h (H, 3H) without: gates r, z, n as torch
        cell = nnx.GRUCell(D, H, rngs=nnx.Rngs(0))
        cell.dense_i.bias[...] = jnp.asarray(p.b_ih)
        carry = jnp.asarray(p.h0)
    cell.dense_i.kernel[...] = jnp.asarray(p.W_ih.T)
    cell.dense_h.kernel[...] = jnp.asarray(p.W_hh.T)
    graphdef, params = nnx.split(nnx.RNN(cell, time_major=True, rngs=False))
    x = jnp.asarray(p.x)

    def output(params, x, carry):
        return nnx.merge(graphdef, params)(x, initial_carry=carry)

    if kind == "forward":
        forward = jax.jit(output)
        return (lambda: jax.block_until_ready(forward(params, x, carry))), _last_output

    @jax.jit
    def grads(params, x, carry, d):
        return jax.vjp(lambda q, x: output(q, x, carry), params, x)[1](d)  # (d params, dx)

    def fingerprint(g):
        dW_hh = nnx.merge(graphdef, g[0]).cell.dense_h.kernel[...].T  # (H, G*H) -> torch's (G*H, H)
        return _grads_fingerprint(g[1], dW_hh)

    d = jnp.asarray(d_output)
    return (lambda: jax.block_until_ready(grads(params, x, carry, d))), fingerprint


# -- NumPy: the layer, as the install runs it --------------------------------------------------------


def rnn_xp_numpy(kind, p, leak=1.0, d_output=None):
    """The layer ``rnn_xp.LSTM`` / ``GRU`` on NumPy; forward+backward as ``forward(return_cache=True)`` and
    ``backward(cache, d_output)``."""
    import rnn_xp

    _check_kind(kind)
    D, H = p.x.shape[-1], p.h0.shape[-1]
    layer = (rnn_xp.LSTM if p.cell == "lstm" else rnn_xp.GRU)(D, H, dtype="float32", seed=0)
    layer.load_state_dict({"weight_ih_l0": p.W_ih, "weight_hh_l0": p.W_hh, "bias_ih_l0": p.b_ih,
                           "bias_hh_l0": p.b_hh})  # fmt: skip
    state = p.h0[None] if p.c0 is None else (p.h0[None], p.c0[None])
    if kind == "forward":
        return (lambda: layer(p.x, state)[0]), _last_output

    def forward_backward():
        cache = layer.forward(p.x, state, return_cache=True)[-1]
        return layer.backward(cache, d_output)

    return forward_backward, lambda g: _grads_fingerprint(g.dx, g.params["weight_hh_l0"])
