"""Converters: torch state dicts, Keras SimpleRNN, the ONNX RNN operator, CS231n.

Parity is checked against each library's own implementation (``torch.nn.RNN``,
``keras.layers.SimpleRNN`` with the torch backend, ``onnx.reference``) or, for
CS231n, against the assignment's loop written out here; round trips
``format -> RNN -> format`` must give back the very same numbers.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from rnn_xp import RNN, convert, rnn_forward
from support import assert_close, to_numpy

D, H, T, B = 3, 4, 6, 2

# Keras' own NumPy 2 deprecation noise, not rnn_xp's
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


# -- torch -----------------------------------------------------------------------

torch = pytest.importorskip("torch")


def torch_module(num_layers=2, bias=True, bidirectional=True, nonlinearity="tanh",
                 dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return torch.nn.RNN(D, H, num_layers, nonlinearity=nonlinearity, bias=bias,
                        bidirectional=bidirectional, dtype=dtype, **kwargs)


@pytest.mark.parametrize("torch_dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_torch_round_trip_is_exact(backend, torch_dtype, bias):
    module = torch_module(3, bias=bias, batch_first=True, nonlinearity="relu",
                          dtype=getattr(torch, torch_dtype))
    rnn = RNN.from_torch(module, xp=backend.xp, device=backend.device)
    assert (rnn.num_layers, rnn.bias, rnn.batch_first, rnn.bidirectional, rnn.nonlinearity) == (
        3, bias, True, True, "relu")
    for name, t in module.state_dict().items():
        assert_close(rnn.state_dict()[name], t.numpy(), backend, torch_dtype, rtol=0, atol=0)
    back = convert.to_torch(rnn)
    assert isinstance(back, torch.nn.RNN)
    assert (back.num_layers, back.bias, back.batch_first, back.bidirectional, back.nonlinearity) == (
        3, bias, True, True, "relu")
    assert list(back.state_dict()) == list(module.state_dict())
    for name, t in module.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
        assert back.state_dict()[name].dtype == t.dtype


def test_from_state_dict_reads_the_configuration():
    module = torch_module(3, bias=False, bidirectional=True)
    rnn = convert.from_torch(module.state_dict(), nonlinearity="relu", batch_first=True)
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers) == (D, H, 3)
    assert (rnn.bias, rnn.bidirectional, rnn.nonlinearity, rnn.batch_first) == (
        False, True, "relu", True)
    assert rnn.dtype == np.float64
    # a state dict of rnn_xp's own arrays loads as well
    again = RNN.from_torch(rnn.state_dict(), xp="torch")
    for name, t in module.state_dict().items():
        assert torch.equal(again.params[name], t)


def test_torch_state_dict_loads_into_torch():
    rnn = RNN(D, H, 2, bidirectional=True, seed=4, dtype="float64")
    module = torch_module(2)
    module.load_state_dict(convert.torch_state_dict(rnn))
    x = np.random.default_rng(1).standard_normal((T, B, D))
    with torch.no_grad():
        expected, expected_hn = module(torch.from_numpy(x))
    out, h_n = rnn(x)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, expected_hn.numpy(), rtol=1e-12, atol=1e-14)


def test_load_state_dict_lists_every_bad_key():
    rnn = RNN(D, H, 2, seed=0)
    state = rnn.state_dict()
    del state["weight_hh_l1"], state["bias_ih_l0"]
    state["weight_ih_l0_reverse"] = np.zeros((H, D))
    state["bias_hh_l1"] = np.zeros(H + 1)
    state["weight_ih_l1"] = np.zeros((H, D))
    with pytest.raises(ValueError) as info:
        rnn.load_state_dict(state)
    msg = str(info.value)
    for part in ("missing keys", "'weight_hh_l1'", "'bias_ih_l0'", "unexpected keys",
                 "'weight_ih_l0_reverse'", "bias_hh_l1: got (5,), need (4,)",
                 "weight_ih_l1: got (4, 3), need (4, 4)"):
        assert part in msg, part
    with pytest.raises(TypeError, match="mapping"):
        rnn.load_state_dict([1, 2])
    bad = rnn.state_dict()
    bad["weight_hh_l0"] = np.zeros((H, H), dtype=np.int64)
    with pytest.raises(TypeError, match="weight_hh_l0"):
        rnn.load_state_dict(bad)


def test_load_state_dict_keeps_the_layers_placement(backend):
    rnn = RNN(D, H, seed=0, xp=backend.xp, device=backend.device, dtype="float64")
    source = RNN(D, H, seed=1, dtype="float32")  # NumPy float32
    rnn.load_state_dict(source.state_dict())
    for name, p in rnn.params.items():
        assert_close(p, source.params[name].astype(np.float64), backend, "float64", rtol=0, atol=0)


@pytest.mark.parametrize("make", [lambda: torch.nn.LSTM(D, H), lambda: torch.nn.GRU(D, H),
                                  lambda: torch.nn.Linear(D, H), lambda: 42,
                                  lambda: "weight_ih_l0"])
def test_from_torch_rejects_other_objects(make):
    with pytest.raises(TypeError, match="torch.nn.RNN"):
        RNN.from_torch(make())


def test_from_torch_disagreeing_option():
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN.from_torch(torch_module(1), nonlinearity="relu")


def test_to_torch_refuses_leak():
    with pytest.raises(ValueError, match="leak"):
        convert.to_torch(RNN(D, H, leak=0.5))


# -- ONNX ------------------------------------------------------------------------


def run_onnx(W, R, Bias, x, h0, direction, activation):
    """``(Y, Y_h)`` of one ONNX ``RNN`` node, from ``onnx.reference``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.ops.op_rnn import RNN_14

    dirs = W.shape[0]
    node = helper.make_node("RNN", ["X", "W", "R", "B", "", "initial_h"], ["Y", "Y_h"],
                            hidden_size=H, direction=direction, activations=[activation] * dirs)
    f64 = TensorProto.DOUBLE
    graph = helper.make_graph(
        [node], "rnn",
        [helper.make_tensor_value_info("X", f64, list(x.shape)),
         helper.make_tensor_value_info("initial_h", f64, list(h0.shape))],
        [helper.make_tensor_value_info("Y", f64, [x.shape[0], dirs, x.shape[1], H]),
         helper.make_tensor_value_info("Y_h", f64, [dirs, x.shape[1], H])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bias, "B"))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)

    class RNN(RNN_14):  # onnx.reference knows Tanh only; add Relu, keep its recurrence
        op_domain = ""

        def choose_act(self, name, alpha, beta):
            if name == "Relu":
                return lambda z: np.maximum(z, 0)
            return super().choose_act(name, alpha, beta)

    new_ops = [RNN] if activation == "Relu" else None
    return ReferenceEvaluator(model, new_ops=new_ops).run(None, {"X": x, "initial_h": h0})


def onnx_weights(rng, dirs):
    W = rng.uniform(-0.5, 0.5, (dirs, H, D))
    R = rng.uniform(-0.5, 0.5, (dirs, H, H))
    Bias = rng.uniform(-0.5, 0.5, (dirs, 2 * H))
    return W, R, Bias


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("activation", ["Tanh", "Relu"])
def test_onnx_layer_matches_reference(backend, rng, direction, activation):
    dirs = 2 if direction == "bidirectional" else 1
    W, R, Bias = onnx_weights(rng, dirs)
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((dirs, B, H))
    Y, Y_h = run_onnx(W, R, Bias, x, h0, direction, activation)
    rnn = convert.from_onnx(W, R, Bias, activations=[activation] * dirs, xp=backend.xp,
                            device=backend.device)
    assert convert.onnx_attributes(rnn)["direction"] == direction
    out, h_n = rnn(backend.asarray(x), backend.asarray(h0))
    assert_close(out, to_numpy(convert.onnx_y_to_output(Y)), backend, "float64")
    assert_close(h_n, Y_h, backend, "float64")
    assert_close(convert.output_to_onnx_y(out, dirs), Y, backend, "float64")


@pytest.mark.parametrize("activation", ["Tanh", "Relu"])
def test_onnx_reverse_matches_reference(backend, rng, activation):
    W, R, Bias = onnx_weights(rng, 1)
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((1, B, H))
    Y, Y_h = run_onnx(W, R, Bias, x, h0, "reverse", activation)
    rnn = convert.from_onnx(W, R, Bias, direction="reverse", activations=[activation],
                            xp=backend.xp, device=backend.device)
    assert rnn.reverse and convert.onnx_attributes(rnn)["direction"] == "reverse"
    out, h_n = rnn(backend.asarray(x), backend.asarray(h0))
    assert_close(out, Y[:, 0], backend, "float64")
    assert_close(h_n, Y_h, backend, "float64")
    args = [backend.asarray(a) for a in (x, h0[0], W[0], R[0], Bias[0, :H] + Bias[0, H:])]
    out = rnn_forward(*args, nonlinearity=activation.lower(), reverse=True)
    assert_close(out, Y[:, 0], backend, "float64")
    assert_close(out[0, ...], Y_h[0], backend, "float64")


@pytest.mark.parametrize("bias", [True, False])
def test_onnx_round_trips_are_exact(backend, rng, bias):
    W, R, Bias = onnx_weights(rng, 2)
    Bias = Bias if bias else None
    rnn = convert.from_onnx(W, R, Bias, xp=backend.xp, device=backend.device)
    back = convert.to_onnx(rnn)
    assert sorted(back) == (["B", "R", "W"] if bias else ["R", "W"])
    for name, a in (("W", W), ("R", R), ("B", Bias)):
        if a is not None:
            assert_close(back[name], a, backend, "float64", rtol=0, atol=0)
    Y = rng.standard_normal((T, 2, B, H))
    assert_close(convert.output_to_onnx_y(convert.onnx_y_to_output(backend.asarray(Y)), 2),
                 Y, backend, "float64", rtol=0, atol=0)
    # the other way: a layer's weights through ONNX's layout and back, per layer
    layer = RNN(D, H, 2, bias=bias, bidirectional=True, seed=2, dtype="float64")
    first = convert.from_onnx(*convert.to_onnx(layer, layer=0).values())
    for name, p in first.state_dict().items():
        np.testing.assert_array_equal(p, layer.params[name])
    second = convert.to_onnx(layer, layer=1)
    assert second["W"].shape == (2, H, 2 * H)


def test_onnx_bad_shapes():
    W, R, Bias = onnx_weights(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match=r"R must have shape \(1, 4, 4\)"):
        convert.from_onnx(W, R[:, :2], Bias)
    with pytest.raises(ValueError, match=r"B must have shape \(1, 8\)"):
        convert.from_onnx(W, R, Bias[:, :4])
    with pytest.raises(ValueError, match="activations"):
        convert.from_onnx(W, R, Bias, activations=["Gelu"])
    with pytest.raises(ValueError, match="Y must have shape"):
        convert.onnx_y_to_output(np.zeros((T, B, H)))


# -- CS231n ----------------------------------------------------------------------


def cs231n_forward(x, h0, Wx, Wh, b):
    """The CS231n assignment's rnn_forward: x (N, T, D), h0 (N, H) -> h (N, T, H)."""
    N, T_, _ = x.shape
    h = np.zeros((N, T_, Wh.shape[0]))
    prev_h = h0
    for t in range(T_):
        prev_h = np.tanh(x[:, t, :].dot(Wx) + prev_h.dot(Wh) + b)
        h[:, t, :] = prev_h
    return h


def test_cs231n_matches_the_assignment_loop(backend, dtype, rng):
    Wx, Wh, b = rng.standard_normal((D, H)) * 0.5, rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H)
    x, h0 = rng.standard_normal((B, T, D)), rng.standard_normal((B, H))
    expected = cs231n_forward(x, h0, Wx, Wh, b)
    rnn = convert.from_cs231n(Wx, Wh, b, xp=backend.xp, device=backend.device, dtype=dtype)
    assert rnn.batch_first
    out, h_n = rnn(backend.asarray(x, dtype), backend.asarray(h0[None], dtype))
    assert_close(out, expected, backend, dtype)
    assert_close(h_n, expected[None, :, -1], backend, dtype)


def test_cs231n_round_trips(backend, rng):
    Wx, Wh, b = rng.standard_normal((D, H)), rng.standard_normal((H, H)), rng.standard_normal(H)
    rnn = convert.from_cs231n(backend.asarray(Wx), backend.asarray(Wh), backend.asarray(b),
                              xp=backend.xp, device=backend.device)
    back = convert.to_cs231n(rnn)
    for name, a in (("Wx", Wx), ("Wh", Wh), ("b", b)):
        assert_close(back[name], a, backend, "float64", rtol=0, atol=0)
    # a torch-layout layer through CS231n's layout: same outputs, same matrices
    layer = RNN(D, H, bidirectional=True, seed=3, dtype="float64")
    w = convert.to_cs231n(layer, reverse=True)
    again = convert.from_cs231n(w["Wx"], w["Wh"], w["b"], batch_first=False)
    np.testing.assert_array_equal(again.weight_ih_l0, layer.weight_ih_l0_reverse)
    x = rng.standard_normal((T, B, D))
    expected = layer(x)[0][..., H:]
    np.testing.assert_allclose(
        rnn_forward(x, None, again.weight_ih_l0, again.weight_hh_l0,
                    again.bias_ih_l0 + again.bias_hh_l0, reverse=True),
        expected, rtol=1e-12, atol=1e-14)
    no_bias = convert.to_cs231n(RNN(D, H, bias=False))
    np.testing.assert_array_equal(no_bias["b"], np.zeros(H, dtype=np.float32))


def test_cs231n_bad_shapes():
    with pytest.raises(ValueError, match=r"Wh must have shape \(H, H\) = \(4, 4\)"):
        convert.from_cs231n(np.zeros((D, H)), np.zeros((H, D)), np.zeros(H))
    with pytest.raises(ValueError, match=r"b must have shape \(H,\)"):
        convert.from_cs231n(np.zeros((D, H)), np.zeros((H, H)), np.zeros(D))


# -- Keras -----------------------------------------------------------------------


# Keras 3's type promotion maps float64 to float32 (keras.backend.result_type("float64",
# "float64") is "float32"), so its float64 SimpleRNN multiplies in float32: compare at
# float32 precision.
KERAS_TOL = {"rtol": 1e-5, "atol": 1e-6}


def keras_layer(keras, activation, use_bias, rng):
    layer = keras.layers.SimpleRNN(H, activation=activation, use_bias=use_bias,
                                   return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, None, D))
    weights = [rng.uniform(-0.6, 0.6, w.shape) for w in layer.get_weights()]  # bias nonzero too
    layer.set_weights(weights)
    return layer, weights


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_matches_simple_rnn(keras, backend, rng, activation, use_bias):
    layer, weights = keras_layer(keras, activation, use_bias, rng)
    x, h0 = rng.standard_normal((B, T, D)), rng.standard_normal((B, H))
    as64 = lambda a: keras.ops.convert_to_tensor(a, dtype="float64")  # noqa: E731
    seq, state = layer(as64(x), initial_state=[as64(h0)])
    rnn = convert.from_keras(layer, xp=backend.xp, device=backend.device)
    assert (rnn.nonlinearity, rnn.bias, rnn.batch_first) == (activation, use_bias, True)
    out, h_n = rnn(backend.asarray(x), backend.asarray(h0[None]))
    assert_close(out, keras.ops.convert_to_numpy(seq), backend, "float64", **KERAS_TOL)
    assert_close(h_n, keras.ops.convert_to_numpy(state)[None], backend, "float64", **KERAS_TOL)
    # keras -> rnn_xp -> keras returns the very same arrays
    for got, want in zip(convert.to_keras(rnn), weights):
        assert_close(got, want, backend, "float64", rtol=0, atol=0)


def test_layer_into_keras(keras, rng):
    rnn = RNN(D, H, nonlinearity="relu", seed=9, dtype="float64")
    layer = keras.layers.SimpleRNN(H, activation="relu", return_sequences=True, dtype="float64")
    layer.build((None, None, D))
    layer.set_weights(convert.to_keras(rnn))
    x = rng.standard_normal((B, T, D))
    expected = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(x, dtype="float64")))
    out, _ = rnn(np.ascontiguousarray(np.moveaxis(x, 0, 1)))
    np.testing.assert_allclose(np.moveaxis(out, 0, 1), expected, **KERAS_TOL)


def test_keras_weights_list_and_errors(rng):
    kernel, rec, bias = rng.standard_normal((D, H)), rng.standard_normal((H, H)), rng.standard_normal(H)
    rnn = convert.from_keras([kernel, rec, bias], xp="torch")
    assert rnn.nonlinearity == "tanh" and rnn.dtype == torch.float64
    for got, want in zip(convert.to_keras(rnn), (kernel, rec, bias)):
        np.testing.assert_array_equal(to_numpy(got), want)
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \(H, H\)"):
        convert.from_keras([kernel, rec[:2]])
    with pytest.raises(ValueError, match="3 arrays|got 1 arrays"):
        convert.from_keras([kernel])
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional"):
        convert.to_keras(rnn, reverse=True)
    with pytest.raises(ValueError, match="layer must be"):
        convert.to_keras(rnn, layer=1)


def test_keras_environment_not_leaked(keras):
    assert os.environ.get("KERAS_BACKEND") in (None, "torch")
