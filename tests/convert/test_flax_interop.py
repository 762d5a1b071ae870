"""Flax's simple RNN cell against rnn_xp: NNX and Linen parameters, both ways.

Flax's own ``nnx.RNN`` / ``linen.RNN`` run the cells on the same inputs;
``convert.from_flax`` must build a layer that gives their outputs, and
``convert.to_flax`` parameters must make Flax's cells give the layer's.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import jax_float64, to_numpy

from rnn_xp import RNN, convert

jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

B, T, D, H = 3, 6, 3, 4
TOL = {"rtol": 2e-5, "atol": 2e-6}

ACTIVATIONS = [nnx.tanh, jax.nn.relu, jax.nn.sigmoid, jax.nn.soft_sign, jax.nn.softplus,
               jax.nn.elu, jax.nn.leaky_relu, jax.nn.hard_sigmoid]


ZEROS = nnx.initializers.zeros_init()  # Flax's own initializers compile for seconds; draw here


def nnx_cell(activation, residual, seed, rng, **kw):
    cell = nnx.SimpleCell(D, H, activation_fn=activation, residual=residual, kernel_init=ZEROS,
                          recurrent_kernel_init=ZEROS, rngs=nnx.Rngs(seed), **kw)
    state = nnx.state(cell)
    dtype = kw.get("param_dtype", jnp.float32)
    draw = lambda *shape: jnp.asarray(rng.uniform(-0.6, 0.6, shape), dtype)  # noqa: E731
    nnx.replace_by_pure_dict(state, {"dense_i": {"kernel": draw(D, H), "bias": draw(H)},
                                     "dense_h": {"kernel": draw(H, H)}})
    nnx.update(cell, state)
    return cell


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda f: f.__name__)
def test_nnx_cells_match_flax_rnn(rng, activation):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    for residual in (False, True):
        cell = nnx_cell(activation, residual, 0, rng)
        want = np.asarray(nnx.RNN(cell)(jnp.asarray(x)))
        rnn = convert.from_flax(cell)
        assert rnn.batch_first and rnn.activations[0][0] == {
            "soft_sign": "softsign"}.get(activation.__name__, activation.__name__)
        out, h_n = rnn(x)
        np.testing.assert_allclose(out, want, **TOL, err_msg=f"residual={residual}")
        np.testing.assert_allclose(h_n[0], want[:, -1], **TOL)


def test_reverse_and_initial_carry_match_flax(rng):
    cell = nnx_cell(jax.nn.elu, False, 1, rng)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    want = nnx.RNN(cell, reverse=True, keep_order=True)(jnp.asarray(x),
                                                        initial_carry=jnp.asarray(h0))
    rnn = convert.from_flax(cell)
    backwards = RNN(D, H, nonlinearity="elu", batch_first=True, reverse=True)
    backwards.load_state_dict(rnn.state_dict())
    np.testing.assert_allclose(backwards(x, h0[None])[0], np.asarray(want), **TOL)


@pytest.mark.parametrize("activation", [nnx.tanh, jax.nn.hard_sigmoid], ids=lambda f: f.__name__)
def test_linen_parameters_both_ways(rng, activation):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    cell = nn.SimpleCell(H, activation_fn=activation)
    draw = lambda *shape: jnp.asarray(rng.uniform(-0.6, 0.6, shape), jnp.float32)  # noqa: E731
    variables = {"params": {"cell": {"i": {"kernel": draw(D, H), "bias": draw(H)},
                                     "h": {"kernel": draw(H, H)}}}}  # what nn.RNN(cell).init makes
    want = np.asarray(nn.RNN(cell).apply(variables, jnp.asarray(x)))
    rnn = convert.from_flax(variables, cell=cell)
    np.testing.assert_allclose(rnn(x)[0], want, **TOL)
    # rnn_xp -> Linen: the same numbers, and the same arrays
    back = convert.to_flax(rnn.to("jax"))
    again = nn.RNN(cell).apply({"params": {"cell": back["params"]}}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(again), want, **TOL)
    for part in ("i", "h"):
        for key, value in back["params"][part].items():
            np.testing.assert_array_equal(np.asarray(value),
                                          np.asarray(variables["params"]["cell"][part][key]))


def test_layer_weights_into_an_nnx_cell(rng):
    rnn = RNN(D, H, nonlinearity="relu", batch_first=True, bidirectional=True, dtype="float64",
              seed=5)
    x = rng.standard_normal((B, T, D))
    out, _ = rnn(x)
    with jax_float64():
        for reverse, half in ((False, slice(0, H)), (True, slice(H, 2 * H))):
            cell = nnx_cell(jax.nn.relu, False, 0, rng, param_dtype=jnp.float64,
                            dtype=jnp.float64)
            state = nnx.state(cell)
            nnx.replace_by_pure_dict(state, convert.to_flax(rnn.to("jax"), reverse=reverse,
                                                            layout="nnx"))
            nnx.update(cell, state)
            flax_out = nnx.RNN(cell, reverse=reverse, keep_order=True)(jnp.asarray(x))
            np.testing.assert_allclose(np.asarray(flax_out), out[..., half], rtol=1e-12,
                                       atol=1e-13)


def test_flax_refusals(rng):
    params = {"params": {"i": {"kernel": np.ones((D, H)), "bias": np.zeros(H)},
                         "h": {"kernel": np.eye(H)}}}
    with pytest.raises(ValueError, match="has no rnn_xp equivalent"):
        convert.from_flax(params, nonlinearity=jax.nn.gelu)
    with pytest.raises(ValueError, match=r"NNX's \{'dense_i', 'dense_h'\} or Linen's \{'i', 'h'\}"):
        convert.from_flax({"w": np.ones(3)})
    with pytest.raises(ValueError, match="the recurrent part has a bias"):
        convert.from_flax({"i": params["params"]["i"], "h": {"kernel": np.eye(H), "bias": np.ones(H)}})
    with pytest.raises(ValueError, match="disagrees with the cell's"):
        convert.from_flax(params, cell=nn.SimpleCell(H), residual=True)
    with pytest.raises(TypeError, match="cell_or_params must be"):
        convert.from_flax(42)
    with pytest.raises(ValueError, match="layout must be 'linen' or 'nnx'"):
        convert.to_flax(RNN(D, H), layout="haiku")
    rnn = convert.from_flax(params, residual=True, nonlinearity="relu")
    np.testing.assert_array_equal(to_numpy(rnn.weight_hh_l0), 2 * np.eye(H))
