"""Keras 3's LSTM and GRU against rnn_xp: every option, Bidirectional, masks with gaps, both ways.

Keras runs its own layers on the same inputs (its torch backend; the
``keras`` fixture is in ``conftest.py``): ``convert.from_keras`` must give
their numbers, and Keras layers made from ``convert.keras_config`` and
``convert.to_keras`` must give the rnn_xp layer's. Keras computes its
masked loop and ``reset_after=False`` in float32 even for a float64 layer
(``keras.backend.result_type("float64", "float64")`` is ``"float32"``), its
unmasked torch-backend LSTM and ``reset_after=True`` GRU in float64: those
are held to float64 precision.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close, keras_numpy, make_backend, randomize_keras, to_numpy

from rnn_xp import GRU, LSTM, RNN, convert

B, T, D, H = 3, 6, 3, 4
MASK = np.array([[True, True, False, True, False, False],   # post-padding with a gap
                 [False, True, True, False, True, True],    # masked start, gaps
                 [True, True, True, True, True, True]])
TOL = {"rtol": 1e-5, "atol": 1e-6}
KINDS = {"lstm": ("LSTM", {}), "gru": ("GRU", {}), "gru_reset_before": ("GRU", {"reset_after": False})}
ACTIVATIONS = ["tanh", "relu", "sigmoid", "softsign", "softplus", "elu", "linear", "hard_sigmoid",
               "leaky_relu"]

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def make(keras, kind, rng, *, dtype="float32", built=True, **options):
    """A built Keras layer of ``kind`` with random weights (all returned: sequences and states)."""
    name, defaults = KINDS[kind]
    layer = getattr(keras.layers, name)(H, return_sequences=True, return_state=True, dtype=dtype,
                                        **{**defaults, **options})
    if built:
        layer.build((None, None, D))
        randomize_keras(layer, rng)
    return layer


def states_of(rnn, finals):
    """The final states as Keras returns them: ``[h]`` or ``[h, c]`` per direction, ``(dirs, B, H)`` each."""
    return finals if isinstance(rnn, LSTM) else (finals,)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layers_match_keras_with_go_backwards_masks_and_initial_states(keras, rng, kind, use_bias):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    n_states = 2 if kind == "lstm" else 1
    initial = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(n_states)]
    # (Keras 3.15's torch backend fails unroll=True with go_backwards and a mask: not combined here)
    for go_backwards, unroll in ((False, True), (True, False)):
        layer = make(keras, kind, rng, use_bias=use_bias, go_backwards=go_backwards, unroll=unroll)
        rnn = convert.from_keras(layer)
        assert type(rnn).__name__ == KINDS[kind][0] and rnn.reverse == go_backwards
        assert rnn.batch_first and rnn.bias == use_bias and rnn.dtype == np.float32
        if kind != "lstm":
            assert rnn.linear_before_reset == (kind == "gru")
        for mask in (None, MASK):
            seq, *states = layer(x, initial_state=initial, mask=mask)
            hx = tuple(s[None] for s in initial)
            out, finals = rnn(x, hx if kind == "lstm" else hx[0], mask=mask)
            if go_backwards:  # Keras returns the outputs in the order it ran
                out = out[:, ::-1]
            np.testing.assert_allclose(out, keras_numpy(keras, seq), **TOL, err_msg=f"{go_backwards} {mask}")
            for got, want in zip(states_of(rnn, finals), states):
                np.testing.assert_allclose(got[0], keras_numpy(keras, want), **TOL)
        # rnn_xp -> Keras: the very same arrays, and the arguments of the layer
        for got, want in zip(convert.to_keras(rnn), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
        config = convert.keras_config(rnn)
        assert config == {key: layer.get_config()[key] for key in config}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_float64_layers_match_keras_to_float64_precision(keras, rng, kind):
    layer = make(keras, kind, rng, dtype="float64", go_backwards=True)
    x = rng.standard_normal((B, T, D))
    seq, *states = layer(x)
    rnn = convert.from_keras(layer)
    assert rnn.dtype == np.float64
    out, finals = rnn(x)
    np.testing.assert_allclose(out[:, ::-1], keras_numpy(keras, seq), rtol=1e-12, atol=1e-14)
    for got, want in zip(states_of(rnn, finals), states):
        np.testing.assert_allclose(got[0], keras_numpy(keras, want), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_keras_activation_for_gates_and_candidates(keras, rng, kind):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    for k, activation in enumerate(ACTIVATIONS):
        recurrent = ACTIVATIONS[(k + 3) % len(ACTIVATIONS)]
        layer = make(keras, kind, rng, activation=activation, recurrent_activation=recurrent)
        rnn = convert.from_keras(layer)
        seq = layer(x, mask=MASK)[0]
        np.testing.assert_allclose(rnn(x, mask=MASK)[0], keras_numpy(keras, seq), **TOL,
                                   err_msg=f"{activation}, {recurrent}")
        config = convert.keras_config(rnn)
        assert (config["activation"], config["recurrent_activation"]) == (activation, recurrent)


def test_hard_sigmoid_is_keras_3s(keras):
    """Keras 3's hard_sigmoid is relu6(x + 3) / 6 (alpha 1/6), not ONNX's default alpha 0.2."""
    z = np.linspace(-4.0, 4.0, 17)
    want = keras_numpy(keras, keras.activations.hard_sigmoid(keras.ops.convert_to_tensor(z)))
    np.testing.assert_allclose(np.clip(z / 6 + 0.5, 0, 1), want, rtol=1e-7)
    weights = [np.ones((D, 4 * H)), np.ones((H, 4 * H))]
    lstm = convert.from_keras(weights, recurrent_activation="hard_sigmoid")
    assert lstm.activation_alpha[0] == pytest.approx(1 / 6) and lstm.activation_beta[0] == 0.5


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul", None])
@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before"])
def test_bidirectional_every_merge_mode_both_ways(keras, rng, kind, merge_mode):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    inner = make(keras, kind, rng, built=False, activation="softsign")
    wrapper = keras.layers.Bidirectional(inner, merge_mode=merge_mode)
    wrapper.build((None, None, D))
    randomize_keras(wrapper, rng)
    rnn = convert.from_keras(wrapper)
    assert rnn.bidirectional and not rnn.reverse
    for mask in (None, MASK):
        result = wrapper(x, mask=mask)
        split = 2 if merge_mode is None else 1
        outputs, states = result[:split], result[split:]
        out, finals = rnn(x, mask=mask)
        merged = convert.keras_merge(out, merge_mode, mask=mask)
        for got, want in zip(merged if merge_mode is None else (merged,), outputs, strict=True):
            np.testing.assert_allclose(got, keras_numpy(keras, want), **TOL)
        per_direction = [s[d] for d in range(2) for s in states_of(rnn, finals)]  # Keras: fwd, then bwd
        for got, want in zip(per_direction, states, strict=True):
            np.testing.assert_allclose(got, keras_numpy(keras, want), **TOL)
    for got, want in zip(convert.to_keras_bidirectional(rnn), wrapper.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # rnn_xp -> Keras: a bidirectional layer of its own, rebuilt in Keras
    cls = LSTM if kind == "lstm" else GRU
    options = {} if kind == "lstm" else {"linear_before_reset": False}
    layer = cls(D, H, bidirectional=True, batch_first=True, seed=4, **options)
    config = convert.keras_config(layer)
    assert config["go_backwards"] is False and convert.keras_config(layer, reverse=True)["go_backwards"]
    name = KINDS[kind][0]
    built = keras.layers.Bidirectional(getattr(keras.layers, name)(return_sequences=True, **config),
                                       merge_mode=merge_mode)
    built.build((None, None, D))
    built.set_weights(convert.to_keras_bidirectional(layer))
    want = built(x, mask=MASK)
    got = convert.keras_merge(layer(x, mask=MASK)[0], merge_mode, mask=MASK)
    for g, w in zip(got if merge_mode is None else (got,), want if merge_mode is None else (want,)):
        np.testing.assert_allclose(g, keras_numpy(keras, w), **TOL)


def test_bidirectional_with_different_activations_per_direction(keras, rng):
    forward = keras.layers.LSTM(H, activation="elu", recurrent_activation="hard_sigmoid",
                                return_sequences=True)
    backward = keras.layers.LSTM(H, activation="relu", go_backwards=True, return_sequences=True)
    wrapper = keras.layers.Bidirectional(forward, backward_layer=backward)
    wrapper.build((None, None, D))
    randomize_keras(wrapper, rng)
    lstm = convert.from_keras(wrapper)
    assert lstm.activations == (("hard_sigmoid", "elu", "elu"), ("sigmoid", "relu", "relu"))
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    np.testing.assert_allclose(convert.keras_merge(lstm(x, mask=MASK)[0], mask=MASK),
                               keras_numpy(keras, wrapper(x, mask=MASK)), **TOL)
    assert convert.keras_config(lstm, reverse=True)["activation"] == "relu"


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "SimpleRNNCell"])
def test_a_keras_rnn_of_one_cell(keras, rng, cell):
    layer = keras.layers.RNN(getattr(keras.layers, cell)(H, activation="softplus"),
                             return_sequences=True, go_backwards=True)
    layer.build((None, None, D))
    randomize_keras(layer, rng)
    rnn = convert.from_keras(layer)
    assert type(rnn).__name__ == {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "RNN"}[cell]
    assert rnn.reverse
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    np.testing.assert_allclose(rnn(x, mask=MASK)[0][:, ::-1], keras_numpy(keras, layer(x, mask=MASK)), **TOL)


def test_weights_lists_of_every_kind(rng):
    def draw(*shape):
        return rng.standard_normal(shape)

    lstm = convert.from_keras([draw(D, 4 * H), draw(H, 4 * H), draw(4 * H)] * 2, nonlinearity="relu",
                              recurrent_activation="hard_sigmoid")
    assert isinstance(lstm, LSTM) and lstm.bidirectional and lstm.dtype == np.float64
    assert lstm.activations == ("hard_sigmoid", "relu", "relu")
    kernel, recurrent, bias = draw(D, 3 * H), draw(H, 3 * H), draw(2, 3 * H)
    after = convert.from_keras([kernel, recurrent, bias], go_backwards=True)
    assert isinstance(after, GRU) and after.linear_before_reset and after.reverse
    # z, r, h -> r, z, n: the first two blocks swap, the bias rows are bias_ih and bias_hh
    np.testing.assert_array_equal(after.weight_ih_l0[:H], kernel[:, H:2 * H].T)
    np.testing.assert_array_equal(after.weight_hh_l0[H:2 * H], recurrent[:, :H].T)
    np.testing.assert_array_equal(after.bias_hh_l0[2 * H:], bias[1, 2 * H:])
    before = convert.from_keras([kernel, recurrent, bias[0]])
    assert not before.linear_before_reset and not np.any(before.bias_hh_l0)
    assert not convert.from_keras([kernel, recurrent], reset_after=False).linear_before_reset
    assert convert.from_keras([kernel, recurrent]).linear_before_reset  # Keras's default
    for layer, weights in ((after, [kernel, recurrent, bias]), (before, [kernel, recurrent, bias[0]])):
        for got, want in zip(convert.to_keras(layer), weights, strict=True):
            np.testing.assert_array_equal(to_numpy(got), want)


def test_masked_gradients_of_a_reset_before_gru_match_keras_autograd(keras, rng):
    """torch has no reset-before GRU: Keras's autograd checks rnn_xp's backward of it."""
    torch = pytest.importorskip("torch")
    layer = make(keras, "gru_reset_before", rng, go_backwards=True, activation="elu")
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    d_seq = rng.standard_normal((B, T, H)).astype(np.float32)
    d_state = rng.standard_normal((B, H)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    seq, state = layer(xt, mask=torch.tensor(MASK))
    loss = (seq * torch.tensor(d_seq)).sum() + (state * torch.tensor(d_state)).sum()
    dx, *want = (g.numpy() for g in torch.autograd.grad(loss, [xt, *(w.value for w in layer.weights)]))
    gru = convert.from_keras(layer, dtype="float64")
    output, h_n, cache = gru.forward(x.astype(np.float64), mask=MASK, return_cache=True)
    grads = gru.backward(cache, np.ascontiguousarray(d_seq[:, ::-1]), d_state[None])
    # Keras's one bias is bias_ih (bias_hh = 0): its gradient is bias_ih's, in Keras's layout
    params = {**grads.params, "bias_hh_l0": np.zeros(3 * H)}
    back = convert.to_keras(GRU.from_params(params, D, H, linear_before_reset=False, dtype="float64"))
    np.testing.assert_allclose(grads.dx, dx, rtol=1e-4, atol=1e-5)
    for got, w in zip(back, want, strict=True):  # kernel, recurrent_kernel, bias
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["torch", "jax", "array_api_strict"])
def test_masks_on_other_backends_match_keras(keras, rng, name):
    backend = make_backend(name)
    layer = make(keras, "lstm", rng, recurrent_activation="hard_sigmoid")
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    seq, h, c = layer(x, mask=MASK)
    lstm = convert.from_keras(layer, xp=backend.xp, device=backend.device)
    out, (h_n, c_n) = lstm(backend.asarray(x), mask=backend.asarray(MASK))
    assert_close(out, keras_numpy(keras, seq), backend, "float32", **TOL)
    assert_close(c_n, keras_numpy(keras, c)[None], backend, "float32", **TOL)


def test_what_keras_cannot_compute_is_refused(keras, rng):
    cases = [
        (LSTM(D, H, clip=1.0), "a Keras LSTM has no clip; this LSTM has clip=1.0"),
        (LSTM(D, H, proj_size=2), "a Keras LSTM has no proj_size; this LSTM has proj_size=2"),
        (LSTM(D, H, peepholes=True), "a Keras LSTM has no peepholes"),
        (LSTM(D, H, input_forget=True), "a Keras LSTM has no input_forget"),
        (GRU(D, H, clip=2.0), "a Keras GRU has no clip"),
        (LSTM(D, H, activations=("sigmoid", "tanh", "relu")),
         r"one activation for the cell input and the cell output; this LSTM has \('tanh', None, None\)"),
        (GRU(D, H, activations=("thresholded_relu", "tanh")),
         r"the GRU's gate activation \('thresholded_relu', 1.0, None\) has no Keras equivalent "
         r"\(Keras's recurrent_activation\)"),
        (LSTM(D, H, activations=("sigmoid", "hard_sigmoid", "hard_sigmoid")),  # ONNX's alpha 0.2
         r"the LSTM's candidate activation \('hard_sigmoid', 0.2, 0.5\) has no Keras equivalent"),
    ]
    for rnn, message in cases:
        for call in (convert.keras_config, convert.to_keras):
            with pytest.raises(ValueError, match=message):
                call(rnn)
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional layer"):
        convert.to_keras(GRU(D, H), reverse=True)
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 1\]; got 2"):
        convert.to_keras(LSTM(D, H, num_layers=2), layer=2)
    with pytest.raises(ValueError, match="to_keras_bidirectional needs a bidirectional layer"):
        convert.to_keras_bidirectional(GRU(D, H))
    for kw in ({"reverse": "yes"}, {"reverse": 1}):
        with pytest.raises(TypeError, match="reverse must be True or False"):
            convert.keras_config(LSTM(D, H, bidirectional=True), **kw)


def test_keras_layers_and_options_rnn_xp_refuses(keras, rng):
    gelu = make(keras, "lstm", rng, activation="gelu")
    with pytest.raises(ValueError, match="the Keras LSTM's activation 'gelu' has no rnn_xp equivalent"):
        convert.from_keras(gelu)
    typed_in = make(keras, "lstm", rng, activation=lambda z: 2 * z)  # read off the cell, not serialized
    with pytest.raises(ValueError, match=r"the Keras LSTM's activation '.*<lambda>' has no rnn_xp"):
        convert.from_keras(typed_in)
    assert convert.from_keras(make(keras, "lstm", rng, activation=keras.ops.tanh)).activations is None
    gate = make(keras, "gru", rng, recurrent_activation="silu")
    with pytest.raises(ValueError, match="the Keras GRU's recurrent_activation 'silu' has no rnn_xp"):
        convert.from_keras(gate)
    mixed = keras.layers.Bidirectional(keras.layers.LSTM(H),
                                       backward_layer=keras.layers.GRU(H, go_backwards=True))
    mixed.build((None, None, D))
    with pytest.raises(TypeError, match="a Keras Bidirectional of a LSTM and a GRU has no rnn_xp"):
        convert.from_keras(mixed)
    resets = keras.layers.Bidirectional(keras.layers.GRU(H),
                                        backward_layer=keras.layers.GRU(H, reset_after=False,
                                                                        go_backwards=True))
    resets.build((None, None, D))
    with pytest.raises(ValueError, match="whose GRUs differ in reset_after"):
        convert.from_keras(resets)
    stacked = keras.layers.RNN(keras.layers.StackedRNNCells([keras.layers.LSTMCell(H)] * 2))
    with pytest.raises(TypeError, match="a Keras RNN of StackedRNNCells has no rnn_xp equivalent"):
        convert.from_keras(stacked)
    layer = make(keras, "gru", rng)
    with pytest.raises(ValueError, match="recurrent_activation='relu' disagrees with the layer's "
                                         "recurrent_activation 'sigmoid'"):
        convert.from_keras(layer, recurrent_activation="relu")
    with pytest.raises(ValueError, match="nonlinearity='relu' disagrees with the layer's activation"):
        convert.from_keras(layer, nonlinearity="relu")
    with pytest.raises(ValueError, match="reset_after=False disagrees with the layer's reset_after=True"):
        convert.from_keras(layer, reset_after=False)
    with pytest.raises(TypeError, match="reset_after must be True, False or None"):
        convert.from_keras(layer, reset_after=0)
    unbuilt = make(keras, "lstm", rng, built=False)
    with pytest.raises(ValueError, match="is not built: it holds no weights yet"):
        convert.from_keras(unbuilt)


def test_bad_weights_lists_name_the_keras_weight(rng):
    kernel, recurrent = np.ones((D, 4 * H)), np.ones((H, 4 * H))
    cases = [
        ([kernel[:, :-1], recurrent], r"kernel must have shape \(D, 4H\) with H = 4 \(from "
                                      r"recurrent_kernel \(H, 4H\)\) = \(D, 16\); got \(3, 15\)"),
        ([kernel, recurrent, np.ones(4 * H + 1)], r"bias must have shape \(4H,\) = \(16,\) for a Keras "
                                                   r"LSTM with H = 4; got \(17,\)"),
        ([kernel[:, :12], recurrent[:, :12], np.ones((3, 12))],
         r"bias must have shape \(2, 12\) for a Keras GRU with reset_after=True and H = 4; got \(3, 12\)"),
        ([kernel, recurrent, np.ones(16), kernel, recurrent], r"got 5 arrays"),
        ([kernel, recurrent, np.ones(16), kernel[:, :8], recurrent, np.ones(16)],
         r"kernel of the reverse direction must have shape .* = \(D, 16\); got \(3, 8\)"),
        ([kernel, recurrent, kernel, recurrent[:, :12]],
         r"recurrent_kernel of the reverse direction must have shape \(H, 4H\) for a Keras LSTM"),
        ([kernel, recurrent, np.ones(16), np.ones((2, 16)), recurrent, np.ones(16)],
         r"the two directions have kernel \(3, 16\) and \(2, 16\)"),
    ]
    for weights, message in cases:
        with pytest.raises(ValueError, match=message):
            convert.from_keras(weights)
    with pytest.raises(ValueError, match=r"bias must have shape \(12,\) for a Keras GRU with "
                                         r"reset_after=False"):
        convert.from_keras([kernel[:, :12], recurrent[:, :12], np.ones((2, 12))], reset_after=False)
    with pytest.raises(TypeError, match="recurrent_kernel must have a real floating dtype; got int64"):
        convert.from_keras([kernel, recurrent.astype(np.int64)])
    with pytest.raises(ValueError, match="recurrent_activation and reset_after are for an LSTM or a GRU"):
        convert.from_keras([np.ones((D, H)), np.eye(H)], recurrent_activation="sigmoid")
    with pytest.raises(ValueError, match="recurrent_activation must be one of"):
        convert.from_keras([kernel, recurrent], recurrent_activation="gelu")
    assert isinstance(convert.from_keras([np.ones((D, H)), np.eye(H)]), RNN)
