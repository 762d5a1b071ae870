"""Flax's LSTM and GRU cells against rnn_xp: NNX and Linen, through Flax's own RNNs, both ways.

``nnx.RNN`` and ``linen.RNN`` run Flax's cells on the same inputs;
``convert.from_flax`` must build a layer that gives their outputs and final
carries, and ``convert.to_flax`` parameters must make Flax's cells give the
layer's (and round-trip to the very same arrays). Flax's LSTM carry is
``(c, h)``; rnn_xp's ``hx`` is ``(h0, c0)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnn_xp import GRU, LSTM, convert
from support import jax_float64

jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

B, T, D, H = 3, 6, 3, 4
TOL = {"rtol": 1e-5, "atol": 1e-6}
ZEROS = nnx.initializers.zeros_init()  # Flax's own initializers compile for seconds; draw here
NNX_CELLS = {"LSTMCell": nnx.LSTMCell, "OptimizedLSTMCell": nnx.OptimizedLSTMCell,
             "GRUCell": nnx.GRUCell}


def nnx_cell(name, rng, *, dtype=jnp.float32, **kw):
    """An NNX cell with random parameters drawn here (uniform in [-0.6, 0.6])."""
    cell = NNX_CELLS[name](D, H, kernel_init=ZEROS, recurrent_kernel_init=ZEROS, rngs=nnx.Rngs(0),
                           param_dtype=dtype, dtype=dtype, **kw)
    fill(cell, rng)
    return cell


def fill(cell, rng, pure=None):
    """Set an NNX cell's parameters: ``pure`` (a pure dict), else random ones."""
    state = nnx.state(cell)
    if pure is None:
        pure = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.uniform(-0.6, 0.6, a.shape), a.dtype),
                                      nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(cell, state)


def carry_of(name, rng):
    """A random initial carry: ``(c, h)`` for an LSTM cell, ``h`` for a GRU cell; and rnn_xp's ``hx``."""
    h, c = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    if name == "GRUCell":
        return jnp.asarray(h), h[None]
    return (jnp.asarray(c), jnp.asarray(h)), (h[None], c[None])


def final_state(finals):
    """rnn_xp's final state as Flax's carry: ``(c, h)`` or ``h``, without the layer axis."""
    return (finals[1][0], finals[0][0]) if isinstance(finals, tuple) else finals[0]


@pytest.mark.parametrize("name", list(NNX_CELLS))
def test_nnx_cells_match_nnx_rnn_both_ways(rng, name):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    cell = nnx_cell(name, rng, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.soft_sign)
    carry, hx = carry_of(name, rng)
    final, want = nnx.RNN(cell, return_carry=True)(jnp.asarray(x), initial_carry=carry)
    rnn = convert.from_flax(cell)
    assert type(rnn) is (GRU if name == "GRUCell" else LSTM) and rnn.batch_first and rnn.bias
    if name == "GRUCell":
        assert rnn.linear_before_reset and rnn.activations == ("hard_sigmoid", "softsign")
        assert rnn.activation_alpha == (pytest.approx(1 / 6), None)
        assert not np.any(rnn.bias_hh_l0)  # NNX's GRUCell: no recurrent bias
    else:
        assert rnn.activations == ("hard_sigmoid", "softsign", "softsign")
        assert not np.any(rnn.bias_ih_l0)  # Flax's LSTM bias is in its recurrent parts
    out, finals = rnn(x, hx)
    np.testing.assert_allclose(out, np.asarray(want), **TOL)
    from_state = convert.from_flax(nnx.state(cell), cell=cell)  # its State: the same layer
    for key, value in rnn.params.items():
        np.testing.assert_array_equal(from_state.params[key], value)
    for got, ref in zip(jax.tree_util.tree_leaves(final_state(finals)), jax.tree_util.tree_leaves(final)):
        np.testing.assert_allclose(got, np.asarray(ref), **TOL)
    # rnn_xp -> NNX: the very same arrays, into a fresh cell that gives the same numbers
    back = convert.to_flax(rnn.to("jax"), layout="nnx", optimized=name == "OptimizedLSTMCell")
    own = nnx.to_pure_dict(nnx.state(cell))
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(own)
    for got, ref in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(own)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    fresh = nnx_cell(name, rng, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.soft_sign)
    fill(fresh, rng, back)
    np.testing.assert_allclose(np.asarray(nnx.RNN(fresh)(jnp.asarray(x), initial_carry=carry)),
                               np.asarray(want), **TOL)


@pytest.mark.parametrize("name", ["LSTMCell", "OptimizedLSTMCell", "GRUCell"])
def test_linen_cells_match_linen_rnn_both_ways(rng, name):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    cell = getattr(nn, name)(H, gate_fn=jax.nn.sigmoid, activation_fn=jax.nn.elu)
    shapes = jax.eval_shape(nn.RNN(cell).init, jax.random.key(0), jnp.asarray(x))
    variables = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.uniform(-0.6, 0.6, s.shape), s.dtype),
                                       shapes)
    want = np.asarray(nn.RNN(cell).apply(variables, jnp.asarray(x)))
    rnn = convert.from_flax(variables, cell=cell)
    np.testing.assert_allclose(rnn(x)[0], want, **TOL)
    if name == "GRUCell":  # Linen's hn has the bias inside the reset: b_hn
        np.testing.assert_array_equal(rnn.bias_hh_l0[2 * H:], variables["params"]["cell"]["hn"]["bias"])
    back = convert.to_flax(rnn.to("jax"))
    again = nn.RNN(cell).apply({"params": {"cell": back["params"]}}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(again), want, **TOL)
    ref = variables["params"]["cell"]
    assert jax.tree_util.tree_structure(back["params"]) == jax.tree_util.tree_structure(ref)
    for got, r in zip(jax.tree_util.tree_leaves(back["params"]), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(r))


def test_a_bidirectional_lstm_into_nnx_cells_in_float64(rng):
    """Each direction of a float64 layer in its own NNX cell: nnx.Bidirectional gives its output."""
    lstm = LSTM(D, H, batch_first=True, bidirectional=True, dtype="float64", seed=5,
                activations=("sigmoid", "relu", "relu"))
    x = rng.standard_normal((B, T, D))
    lengths = np.array([6, 2, 4])
    out, (h_n, c_n) = lstm(x, lengths=lengths)
    with jax_float64():
        cells = []
        for reverse in (False, True):
            cell = nnx_cell("LSTMCell", rng, dtype=jnp.float64, activation_fn=jax.nn.relu)
            fill(cell, rng, convert.to_flax(lstm.to("jax"), reverse=reverse, layout="nnx"))
            cells.append(cell)
        lstm.to("numpy")
        both = nnx.Bidirectional(nnx.RNN(cells[0]), nnx.RNN(cells[1], reverse=True, keep_order=True),
                                 return_carry=True)
        (forward, backward), got = both(jnp.asarray(x), seq_lengths=jnp.asarray(lengths))
        got = np.asarray(got)
    for b, n in enumerate(lengths):  # past a length Flax runs on; rnn_xp outputs zeros there
        np.testing.assert_allclose(got[b, :n], out[b, :n], rtol=1e-12, atol=1e-13)
    for d, (c, h) in enumerate((forward, backward)):  # the carries at each sequence's end
        np.testing.assert_allclose(np.asarray(h), h_n[d], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(np.asarray(c), c_n[d], rtol=1e-12, atol=1e-13)


def test_parameters_alone_name_their_cell(rng):
    def draw(*shape):
        return rng.standard_normal(shape)

    nnx_lstm = {"ii": {"kernel": draw(D, H)}, "if_": {"kernel": draw(D, H)}, "ig": {"kernel": draw(D, H)},
                "io": {"kernel": draw(D, H)}, **{n: {"kernel": draw(H, H), "bias": draw(H)}
                                                for n in ("hi", "hf", "hg", "ho")}}  # fmt: skip
    lstm = convert.from_flax({"cell": nnx_lstm}, gate_fn="hard_sigmoid", nonlinearity=jax.nn.relu)
    assert isinstance(lstm, LSTM) and lstm.activations == ("hard_sigmoid", "relu", "relu")
    assert lstm.activation_alpha == (0.2, None, None)  # an rnn_xp name: rnn_xp's (ONNX's) alpha
    np.testing.assert_array_equal(lstm.weight_ih_l0[2 * H:3 * H], nnx_lstm["ig"]["kernel"].T)
    np.testing.assert_array_equal(lstm.bias_hh_l0[3 * H:], nnx_lstm["ho"]["bias"])
    optimized = {"dense_i": {"kernel": draw(D, 4 * H)}, "dense_h": {"kernel": draw(H, 4 * H),
                                                                    "bias": draw(4 * H)}}
    assert isinstance(convert.from_flax({"params": optimized}), LSTM)
    back = convert.to_flax(lstm, layout="nnx")
    for part, value in nnx_lstm.items():
        for key, array in value.items():
            np.testing.assert_array_equal(back[part][key], array)


def test_what_flax_cannot_compute_is_refused(rng):
    gru = GRU(D, H, seed=0)  # torch's initial draws: a nonzero b_hn
    with pytest.raises(ValueError, match=r"NNX's GRUCell has no recurrent bias .* bias_hh_l0 holds a "
                                         r"nonzero n block; use layout='linen'"):
        convert.to_flax(gru, layout="nnx")
    assert set(convert.to_flax(gru)["params"]) == {"ir", "iz", "in", "hr", "hz", "hn"}
    zero_hn = {**gru.state_dict(), "bias_hh_l0": np.concatenate([np.ones(2 * H), np.zeros(H)])}
    folded = convert.to_flax(GRU.from_params(zero_hn, D, H), layout="nnx")["dense_i"]["bias"]
    np.testing.assert_allclose(folded[:2 * H], gru.bias_ih_l0[:2 * H] + 1)  # b_hr, b_hz folded in
    cases = [
        (GRU(D, H, linear_before_reset=False), "a Flax GRUCell resets after the product"),
        (GRU(D, H, clip=1.0), "a Flax GRU cell has no clip; this GRU has clip=1.0"),
        (LSTM(D, H, proj_size=2), "a Flax LSTM cell has no proj_size"),
        (LSTM(D, H, input_forget=True), "a Flax LSTM cell has no input_forget"),
        (LSTM(D, H, peepholes=True), "a Flax LSTM cell has no peepholes"),
        (LSTM(D, H, activations=("sigmoid", "tanh", "relu")), "one activation_fn for the cell input"),
    ]
    for rnn, message in cases:
        with pytest.raises(ValueError, match=message):
            convert.to_flax(rnn)
    with pytest.raises(ValueError, match="optimized=True is for an LSTM"):
        convert.to_flax(gru, layout="nnx", optimized=True)
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional layer"):
        convert.to_flax(LSTM(D, H), reverse=True)


def test_flax_inputs_rnn_xp_refuses(rng):
    lstm = convert.to_flax(LSTM(D, H, seed=0))
    with pytest.raises(TypeError, match="a Linen LSTMCell holds no parameters: pass its variables"):
        convert.from_flax(nn.LSTMCell(H))
    with pytest.raises(ValueError, match=r"the parameters are a LSTMCell \(or OptimizedLSTMCell\)'s but "
                                         r"cell is a GRUCell"):
        convert.from_flax(lstm, cell=nn.GRUCell(H))
    with pytest.raises(ValueError, match="gate_fn=.* disagrees with the cell's gate_fn"):
        convert.from_flax(lstm, cell=nn.LSTMCell(H), gate_fn=jax.nn.relu)
    with pytest.raises(ValueError, match="residual is for a SimpleCell"):
        convert.from_flax(lstm, residual=False)
    with pytest.raises(ValueError, match="has no rnn_xp equivalent"):
        convert.from_flax(lstm, nonlinearity=jax.nn.gelu)
    simple = {"i": {"kernel": np.ones((D, H)), "bias": np.zeros(H)}, "h": {"kernel": np.eye(H)}}
    with pytest.raises(ValueError, match="gate_fn is for an LSTM or GRU cell"):
        convert.from_flax(simple, gate_fn="sigmoid")
    with pytest.raises(TypeError, match="cell must be a Flax SimpleCell, LSTMCell"):
        convert.from_flax(lstm, cell=object())
    bad = {**lstm["params"], "hi": {"kernel": np.ones((H, H))}}
    with pytest.raises(ValueError, match=r"the parameters' 'hi' need \['bias', 'kernel'\]; missing 'bias'"):
        convert.from_flax(bad)
    bad = {**lstm["params"], "ii": {"kernel": np.ones((D, H)), "bias": np.ones(H)}}
    with pytest.raises(ValueError, match=r"the parameters' 'ii' hold \['bias'\]: a Flax cell has \['kernel'\]"):
        convert.from_flax(bad)
    bad = {**lstm["params"], "hg": {"kernel": np.ones((H, H + 1)), "bias": np.ones(H)}}
    with pytest.raises(ValueError, match=r"hg.kernel must have shape \(4, 4\); got \(4, 5\)"):
        convert.from_flax(bad)
    bad = {**lstm["params"], "ho": {"kernel": np.ones((H, H)), "bias": np.ones(H, dtype=int)}}
    with pytest.raises(TypeError, match="ho.bias must have a real floating dtype"):
        convert.from_flax(bad)
    gru = convert.to_flax(GRU(D, H, seed=0))["params"]
    with pytest.raises(ValueError, match=r"the parameters' 'hr' hold \['bias'\]"):
        convert.from_flax({**gru, "hr": {"kernel": np.ones((H, H)), "bias": np.ones(H)}})
    with pytest.raises(ValueError, match=r"in.bias must have shape \(4,\); got \(5,\)"):
        convert.from_flax({**gru, "in": {"kernel": np.ones((D, H)), "bias": np.ones(H + 1)}})
    nnx_gru = {"dense_i": {"kernel": np.ones((D, 3 * H)), "bias": np.ones(3 * H + 1)},
               "dense_h": {"kernel": np.ones((H, 3 * H))}}
    with pytest.raises(ValueError, match=r"dense_i.bias must have shape \(12,\); got \(13,\)"):
        convert.from_flax(nnx_gru)
