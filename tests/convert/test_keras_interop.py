"""Keras 3 against rnn_xp: go_backwards, Bidirectional with every merge mode, masks with gaps.

Keras runs here on its torch backend, so its own layers' gradients come
from torch autograd: ``RNN.backward`` with a mask is held against them.
Keras 3 computes float64 layers in float32, so the comparisons are at
float32 precision. The ``keras`` fixture is in ``tests/convert/conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close, keras_numpy, make_backend, randomize_keras, to_numpy

from rnn_xp import RNN, convert

B, T, D, H = 3, 6, 3, 4
MASK = np.array([[True, True, False, True, False, False],   # post-padding with a gap
                 [False, True, True, False, True, True],    # masked start, gaps
                 [True, True, True, True, True, True]])
TOL = {"rtol": 2e-5, "atol": 2e-6}

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "softsign", "softplus", "elu",
                                        "linear", "hard_sigmoid", "leaky_relu"])
def test_simple_rnn_every_activation_with_go_backwards_and_masks(keras, rng, activation):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    for go_backwards in (False, True):
        layer = keras.layers.SimpleRNN(H, activation=activation, go_backwards=go_backwards,
                                       return_sequences=True, return_state=True)
        layer.build((None, None, D))
        randomize_keras(layer, rng)
        rnn = convert.from_keras(layer)
        assert rnn.reverse == go_backwards and rnn.batch_first
        assert convert.keras_config(rnn) == {"units": H, "activation": activation,
                                             "use_bias": True, "go_backwards": go_backwards}
        for mask in (None, MASK):
            seq, state = layer(x, initial_state=[h0], mask=mask)
            out, h_n = rnn(x, h0[None], mask=mask)
            if go_backwards:  # Keras returns the states in the order it ran them
                out = out[:, ::-1]
            np.testing.assert_allclose(out, keras_numpy(keras, seq), **TOL, err_msg=f"{go_backwards} {mask}")
            np.testing.assert_allclose(h_n[0], keras_numpy(keras, state), **TOL)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul", None])
def test_bidirectional_every_merge_mode_both_ways(keras, rng, merge_mode):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    inner = keras.layers.SimpleRNN(H, activation="softsign", return_sequences=True, return_state=True)
    wrapper = keras.layers.Bidirectional(inner, merge_mode=merge_mode)
    wrapper.build((None, None, D))
    randomize_keras(wrapper, rng)
    rnn = convert.from_keras(wrapper)
    assert rnn.bidirectional and rnn.activations == (("softsign", None, None),) * 2
    for mask in (None, MASK):
        result = wrapper(x, mask=mask)
        outputs, states = (result[:2], result[2:]) if merge_mode is None else (result[:1], result[1:])
        out, h_n = rnn(x, mask=mask)
        merged = convert.keras_merge(out, merge_mode, mask=mask)
        merged = merged if merge_mode is None else (merged,)
        for got, want in zip(merged, outputs):
            np.testing.assert_allclose(got, keras_numpy(keras, want), **TOL)
        for d, state in enumerate(states):
            np.testing.assert_allclose(h_n[d], keras_numpy(keras, state), **TOL)
    # rnn_xp -> Keras: the same weights in Bidirectional.get_weights() order
    for got, want in zip(convert.to_keras_bidirectional(rnn), wrapper.get_weights()):
        np.testing.assert_array_equal(got, want)
    layer = RNN(D, H, bidirectional=True, nonlinearity="relu", seed=4)
    built = keras.layers.Bidirectional(keras.layers.SimpleRNN(return_sequences=True,
                                                              **convert.keras_config(layer)),
                                       merge_mode=merge_mode)
    built.build((None, None, D))
    built.set_weights(convert.to_keras_bidirectional(layer))
    want = built(x)
    time_major = np.ascontiguousarray(np.moveaxis(x, 0, 1))  # the layer is (T, B, D)
    got = convert.keras_merge(np.moveaxis(layer(time_major)[0], 0, 1), merge_mode)
    for g, w in zip(got if merge_mode is None else (got,), want if merge_mode is None else (want,)):
        np.testing.assert_allclose(g, keras_numpy(keras, w), **TOL)


def test_bidirectional_with_different_activations_per_direction(keras, rng):
    forward = keras.layers.SimpleRNN(H, activation="elu", return_sequences=True)
    backward = keras.layers.SimpleRNN(H, activation="hard_sigmoid", return_sequences=True,
                                      go_backwards=True)
    wrapper = keras.layers.Bidirectional(forward, backward_layer=backward)
    wrapper.build((None, None, D))
    randomize_keras(wrapper, rng)
    rnn = convert.from_keras(wrapper)
    assert rnn.nonlinearity == ("elu", "hard_sigmoid")
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    np.testing.assert_allclose(convert.keras_merge(rnn(x, mask=MASK)[0], mask=MASK),
                               keras_numpy(keras, wrapper(x, mask=MASK)), **TOL)


def test_masked_gradients_match_keras_autograd(keras, rng):
    torch = pytest.importorskip("torch")
    layer = keras.layers.SimpleRNN(H, activation="tanh", go_backwards=True, return_sequences=True,
                                   return_state=True)
    layer.build((None, None, D))
    randomize_keras(layer, rng)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    d_seq = rng.standard_normal((B, T, H)).astype(np.float32)
    d_state = rng.standard_normal((B, H)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    seq, state = layer(xt, mask=torch.tensor(MASK))
    weights = [w.value for w in layer.weights]
    loss = (seq * torch.tensor(d_seq)).sum() + (state * torch.tensor(d_state)).sum()
    want = [g.numpy() for g in torch.autograd.grad(loss, [xt, *weights])]

    rnn = convert.from_keras(layer, dtype="float64")
    output, h_n, cache = rnn.forward(x.astype(np.float64), mask=MASK, return_cache=True)
    grads = rnn.backward(cache, np.ascontiguousarray(d_seq[:, ::-1]), d_state[None])
    np.testing.assert_allclose(grads.dx, want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads.params["weight_ih_l0"].T, want[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads.params["weight_hh_l0"].T, want[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads.params["bias_ih_l0"], want[3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "array_api_strict"])
def test_masks_on_other_backends_match_keras(keras, rng, name):
    backend = make_backend(name)
    layer = keras.layers.SimpleRNN(H, activation="relu", return_sequences=True, return_state=True)
    layer.build((None, None, D))
    randomize_keras(layer, rng)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    seq, state = layer(x, mask=MASK)
    rnn = convert.from_keras(layer, xp=backend.xp, device=backend.device)
    out, h_n = rnn(backend.asarray(x), mask=backend.asarray(MASK))
    assert_close(out, keras_numpy(keras, seq), backend, "float32", **TOL)
    assert_close(h_n, keras_numpy(keras, state)[None], backend, "float32", **TOL)


def test_return_sequences_false_is_h_n(keras, rng):
    layer = keras.layers.SimpleRNN(H, activation="sigmoid", go_backwards=True)
    layer.build((None, None, D))
    randomize_keras(layer, rng)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    _, h_n = convert.from_keras(layer)(x, mask=MASK)
    np.testing.assert_allclose(h_n[0], keras_numpy(keras, layer(x, mask=MASK)), **TOL)


def test_keras_weights_lists_and_refusals(keras, rng):
    kernel, rec, bias = (rng.standard_normal(s) for s in ((D, H), (H, H), (H,)))
    rnn = convert.from_keras([kernel, rec, bias, kernel, rec, bias], nonlinearity="linear")
    assert rnn.bidirectional and rnn.activations[0] == ("affine", 1.0, 0.0)
    rev = convert.from_keras([kernel, rec], go_backwards=True)
    assert rev.reverse and not rev.bias
    for got, want in zip(convert.to_keras(rev), (kernel, rec)):
        np.testing.assert_array_equal(to_numpy(got), want)
    with pytest.raises(TypeError, match="a Keras ConvLSTM1D of ConvLSTMCell has no rnn_xp equivalent"):
        convert.from_keras(keras.layers.ConvLSTM1D(H, 3))
    layer = keras.layers.SimpleRNN(H, go_backwards=True)
    layer.build((None, None, D))
    with pytest.raises(ValueError, match="go_backwards=False disagrees with the layer's go_backwards=True"):
        convert.from_keras(layer, go_backwards=False)
    odd = keras.layers.Bidirectional(keras.layers.SimpleRNN(H, go_backwards=True),
                                     backward_layer=keras.layers.SimpleRNN(H))
    odd.build((None, None, D))
    with pytest.raises(ValueError, match="forward layer runs backwards"):
        convert.from_keras(odd)
    with pytest.raises(ValueError, match="has no Keras equivalent"):
        convert.keras_config(RNN(D, H, nonlinearity="thresholded_relu"))
    with pytest.raises(ValueError, match="merge_mode must be"):
        convert.keras_merge(np.zeros((B, T, 2 * H)), "max")
    with pytest.raises(ValueError, match=r"mask must have shape \(\*batch, T\) = \(3, 6\)"):
        convert.keras_merge(np.zeros((B, T, 2 * H)), mask=MASK.T)
