"""What the converters (``rnn_xp.convert``) refuse, and how their messages name the argument or the weight.

- The catalogue (as in ``tests/functions/test_forward_errors.py``): a caller
  per converter (``from_keras``, ``from_cs231n``, ``from_onnx``, the ``to_*``
  functions and the ONNX layout helpers) that fills in valid defaults, and a
  table of cases ``(overrides, exception, match)`` whose overrides make one
  argument bad: a ``ValueError`` (shape, value) or ``TypeError`` (dtype, type)
  naming the argument and what it needs, the layer handed in left as it was.
  A row with exception ``None`` is an odd but valid input: the layer built
  must run the weights it was given (the float64 reference of
  ``support.reference_layer``). The converters take weights of any library.
- Boolean options (``go_backwards``, ``residual``, ``batch_first``,
  ``reverse``) take ``True``, ``False`` and, where they have no default of
  their own, ``None``; ``"no"``, ``"false"``, ``1`` or ``np.bool_`` are a
  ``TypeError`` naming the option (``go_backwards="no"`` used to give a
  reversed layer).
- A Keras layer that is not built yet, a Keras layer rnn_xp has no
  equivalent of, and Flax parameters whose parts are not mappings, get an
  error that says what is expected.
- bfloat16 is kept through the torch converters, and refused where the
  target library has none (NumPy); a narrowing conversion whose values
  overflow (float32 weights beyond float16's range) names the weight in the
  converter's own terms.
- A torch state dict is validated (keys, shapes, dtypes) before anything is
  allocated.

ONNX model files as untrusted input are in ``test_onnx_hostile.py`` and
``test_onnx_lstm_gru_hostile.py``; the layer's own errors in
``tests/layer/test_layer_errors.py``.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from rnn_xp import RNN, convert
from support import (
    assert_catalogue_complete,
    assert_layer_runs_its_weights,
    catalogue_rows,
    check_catalogue_row,
    optional_import,
    params_kept,
)

torch = optional_import("torch")

D, H = 3, 4
RNG = np.random.default_rng(0)
KERNEL, RKERNEL, BIAS = RNG.uniform(-0.5, 0.5, (D, H)), RNG.uniform(-0.5, 0.5, (H, H)), np.zeros(H)
NOT_BOOLS = ["no", "false", 1, 0, np.bool_(True)]

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_go_backwards_takes_a_bool_or_none(value):
    with pytest.raises(TypeError, match=r"go_backwards must be True, False or None; got "):
        convert.from_keras([KERNEL, RKERNEL, BIAS], go_backwards=value)
    assert convert.from_keras([KERNEL, RKERNEL, BIAS], go_backwards=None).reverse is False
    assert convert.from_keras([KERNEL, RKERNEL, BIAS], go_backwards=True).reverse is True


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_the_other_converter_flags_take_bools(value):
    flax_params = {"i": {"kernel": KERNEL, "bias": BIAS}, "h": {"kernel": RKERNEL}}
    with pytest.raises(TypeError, match=r"residual must be True, False or None; got "):
        convert.from_flax(flax_params, residual=value)
    with pytest.raises(TypeError, match=r"batch_first must be True or False; got "):
        convert.from_flax(flax_params, batch_first=value)
    with pytest.raises(TypeError, match=r"batch_first must be True or False; got "):
        convert.from_keras([KERNEL, RKERNEL, BIAS], batch_first=value)
    both = RNN(D, H, bidirectional=True, seed=0)
    with pytest.raises(TypeError, match=r"reverse must be True or False; got "):
        convert.keras_config(both, reverse=value)
    with pytest.raises(TypeError, match=r"batch_first must be True or False; got "):
        convert.keras_merge(np.zeros((2, 5, 2 * H)), "sum", batch_first=value)


def test_an_unbuilt_keras_layer_says_to_build_it(keras):
    for layer in (keras.layers.SimpleRNN(H, name="later"),
                  keras.layers.Bidirectional(keras.layers.SimpleRNN(H), name="later")):
        with pytest.raises(ValueError, match=r"the Keras \w+ 'later' is not built: it holds no weights "
                                             r"yet. Build it \(layer.build\(\(None, None, D\)\)\) or "
                                             r"call it on an input first"):
            convert.from_keras(layer)


def test_flax_parts_that_are_not_mappings_name_the_expected_keys():
    with pytest.raises(ValueError, match=r"the parameters' 'i' must be a mapping \{'kernel', 'bias'\}; "
                                         r"got ndarray"):
        convert.from_flax({"i": KERNEL, "h": RKERNEL})
    with pytest.raises(ValueError, match=r"the parameters' 'dense_h' must be a mapping \{'kernel'\}; "
                                         r"got list"):
        convert.from_flax({"dense_i": {"kernel": KERNEL, "bias": BIAS}, "dense_h": [RKERNEL]})


BIG = np.full(H, 99840.0)  # beyond float16's 65504


@pytest.mark.parametrize("convert_, name", [
    (lambda: convert.from_keras([KERNEL, RKERNEL, BIG], dtype="float16"), "bias"),
    (lambda: convert.from_keras([KERNEL, RKERNEL, BIAS, KERNEL, RKERNEL * 1e6, BIAS], dtype="float16"),
     "recurrent_kernel of the reverse direction"),
    (lambda: convert.from_cs231n(KERNEL * 1e6, RKERNEL, BIAS, dtype="float16"), "Wx"),
    (lambda: convert.from_flax({"i": {"kernel": KERNEL, "bias": BIG}, "h": {"kernel": RKERNEL}},
                               dtype="float16"), "bias"),
], ids=["keras bias", "keras reverse kernel", "cs231n Wx", "flax bias"])
def test_a_float16_overflow_names_the_weight(convert_, name):
    with pytest.raises(ValueError, match=rf"^{name} has values up to .* beyond float16's largest"):
        convert_()


def test_a_float16_overflow_in_a_model_file_names_the_node():
    pytest.importorskip("onnx")
    big = RNN(D, H, num_layers=2, seed=0)
    big.params["bias_hh_l1"][0] = 99840.0
    with pytest.raises(ValueError, match=r"^B of node 'Y_l1' \(#\d+, RNN\) has values up to 99840"):
        convert.from_onnx_model(convert.to_onnx_model(big), dtype="float16")


# --- the catalogue ------------------------------------------------------------

V, T_ = ValueError, TypeError

_rng = np.random.default_rng(11)
X = _rng.standard_normal((5, 2, 3))  # (T, B, D)
LAYER = RNN(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)  # L * dirs = 4
STATE = RNN(3, 4, seed=1, dtype="float64").state_dict()  # one layer, one direction
CAT_KERNEL, CAT_RKERNEL, CAT_BIAS = _rng.standard_normal((3, 4)), np.eye(4) * 0.5, np.zeros(4)  # Keras / CS231n
W_ONNX = _rng.standard_normal((1, 4, 3))  # [dirs, H, D]
R_ONNX = _rng.standard_normal((1, 4, 4)) * 0.3  # [dirs, H, H]
B_ONNX = np.zeros((1, 8))  # [dirs, 2H]


def _from_keras(kernel=CAT_KERNEL, recurrent_kernel=CAT_RKERNEL, bias=CAT_BIAS, weights=None, **options):
    return convert.from_keras([kernel, recurrent_kernel, bias] if weights is None else weights, **options)


def _from_cs231n(Wx=CAT_KERNEL, Wh=CAT_RKERNEL, b=CAT_BIAS, **options):
    return convert.from_cs231n(Wx, Wh, b, **options)


def _from_onnx(W=W_ONNX, R=R_ONNX, B=B_ONNX, **options):
    return convert.from_onnx(W, R, B, **options)


def _to_format(rnn=LAYER, fmt="to_keras", **options):
    return getattr(convert, fmt)(rnn, **options)


ENTRY_POINTS = {
    "convert.from_keras": _from_keras,
    "convert.from_cs231n": _from_cs231n,
    "convert.from_onnx": _from_onnx,
    "convert.to_*": _to_format,
}

CASES = {
    "convert.from_keras": [
        ({"kernel": np.ones(3)}, V, r"kernel must have shape \(D, H\); got \(3,\)"),
        ({"kernel": np.ones((3, 4, 1))}, V, r"kernel must have shape \(D, H\); got \(3, 4, 1\)"),
        ({"recurrent_kernel": np.eye(5)}, V, r"recurrent_kernel must have shape \(H, H\) = \(4, 4\) to match kernel \(D, H\) = \(3, 4\); got \(5, 5\)"),
        ({"recurrent_kernel": np.ones(4)}, V, r"recurrent_kernel must have shape \(H, H\) = \(4, 4\).*; got \(4,\)"),
        ({"bias": np.zeros(5)}, V, r"bias must have shape \(H,\) = \(4,\) to match kernel \(D, H\) = \(3, 4\); got \(5,\)"),
        ({"bias": np.zeros((1, 4))}, V, r"bias must have shape \(H,\) = \(4,\).*; got \(1, 4\)"),
        ({"kernel": CAT_KERNEL.T}, V, r"recurrent_kernel must have shape \(H, H\) = \(3, 3\) to match kernel \(D, H\) = \(4, 3\)"),
        ({"weights": [CAT_KERNEL]}, V, r"Keras SimpleRNN weights are \[kernel, recurrent_kernel\(, bias\)\] \(twice that for a Bidirectional\); got 1 arrays"),
        ({"weights": [CAT_KERNEL, CAT_RKERNEL, CAT_BIAS, CAT_BIAS, CAT_BIAS]}, V, r"Keras SimpleRNN weights are .*; got 5 arrays"),
        ({"weights": [CAT_KERNEL, CAT_RKERNEL, CAT_BIAS, CAT_BIAS]}, V, r"kernel must have shape \(D, H\); got \(4,\)"),
        ({"weights": CAT_KERNEL}, T_, r"layer_or_weights must be a keras SimpleRNN, a Bidirectional\(SimpleRNN\) or a list .*; got ndarray"),
        ({"kernel": CAT_KERNEL.astype(np.int64)}, T_, r"kernel must have a real floating dtype; got int64"),
        ({"recurrent_kernel": CAT_RKERNEL.astype(complex)}, T_, r"recurrent_kernel must have a real floating dtype; got complex128"),
        ({"bias": CAT_BIAS > 0}, T_, r"bias must have a real floating dtype; got bool"),
        ({"kernel": CAT_KERNEL.tolist()}, T_, r"kernel must be an array; got list"),
        ({"recurrent_kernel": None}, T_, r"recurrent_kernel must be an array; got NoneType"),
        ({"nonlinearity": "gelu"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'gelu'"),
        ({"batch_first": "yes"}, T_, r"batch_first must be True or False; got 'yes'"),
        ({"dtype": "int8"}, T_, r"dtype must be a real floating dtype .*; got 'int8'"),
        ({"weights": [CAT_KERNEL, CAT_RKERNEL]}, None, None),  # valid: no bias
    ],
    "convert.from_cs231n": [
        ({"Wx": np.ones(3)}, V, r"Wx must have shape \(D, H\); got \(3,\)"),
        ({"Wh": np.ones((4, 3))}, V, r"Wh must have shape \(H, H\) = \(4, 4\) to match Wx \(D, H\) = \(3, 4\); got \(4, 3\)"),
        ({"Wh": np.ones((4, 4, 1))}, V, r"Wh must have shape \(H, H\) = \(4, 4\).*; got \(4, 4, 1\)"),
        ({"b": np.zeros((4, 1))}, V, r"b must have shape \(H,\) = \(4,\) to match Wx \(D, H\) = \(3, 4\); got \(4, 1\)"),
        ({"Wx": None}, T_, r"Wx must be an array; got NoneType"),
        ({"Wh": CAT_RKERNEL.astype(np.int32)}, T_, r"Wh must have a real floating dtype; got int32"),
        ({"b": 0.0}, T_, r"b must be an array; got float"),
        ({"nonlinearity": "Tanh"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'Tanh'"),
        ({"b": None}, None, None),  # valid: no bias
    ],
    "convert.from_onnx": [
        ({"W": W_ONNX[0]}, V, r"W must be a 3-D array \[dirs, H, D\]; got shape \(4, 3\)"),
        ({"R": R_ONNX[0]}, V, r"R must be a 3-D array \[dirs, H, H\]; got shape \(4, 4\)"),
        ({"B": B_ONNX[0]}, V, r"B must be a 2-D array \[dirs, 2H\]; got shape \(8,\)"),
        ({"R": np.ones((1, 5, 5))}, V, r"R must have shape \(1, 4, 4\) to match W \[dirs, H, D\] = \(1, 4, 3\); got \(1, 5, 5\)"),
        ({"R": np.ones((2, 4, 4))}, V, r"R must have shape \(1, 4, 4\) to match W .*; got \(2, 4, 4\)"),
        ({"B": np.zeros((1, 4))}, V, r"B must have shape \(1, 8\) to match W \[dirs, H, D\] = \(1, 4, 3\); got \(1, 4\)"),
        ({"W": np.ones((3, 4, 3)), "R": np.ones((3, 4, 4)), "B": None}, V, r"W must have 1 or 2 directions on axis 0; got shape \(3, 4, 3\)"),
        ({"W": W_ONNX.tolist()}, T_, r"W must be an array; got list"),
        ({"W": None}, T_, r"W must be an array; got NoneType"),
        ({"R": None}, T_, r"R must be an array; got NoneType"),
        ({"W": W_ONNX.astype(np.int64)}, T_, r"W must have a real floating dtype; got int64"),
        ({"B": B_ONNX > 0}, T_, r"B must have a real floating dtype; got bool"),
        ({"direction": "bidirectional"}, V, r"direction='bidirectional' does not fit W with 1 direction\(s\)"),
        ({"direction": "backward"}, V, r"direction='backward' does not fit W with 1 direction\(s\)"),
        ({"W": np.ones((2, 4, 3)), "R": np.ones((2, 4, 4)), "B": None, "direction": "reverse"}, V, r"direction='reverse' does not fit W with 2 direction\(s\)"),
        ({"activations": ["Gelu"]}, V, r"activations must be 1 name\(s\) from \['Tanh', 'Relu', .*\], one per direction; got \['Gelu'\]"),
        ({"activations": ["tanh"]}, V, r"activations must be 1 name\(s\) from .*; got \['tanh'\]"),
        ({"activations": ["Tanh", "Relu", "Tanh"]}, V, r"activations must be 1 name\(s\) from .*; got \['Tanh', 'Relu', 'Tanh'\]"),
        ({"activations": "Tanh"}, T_, r"activations must be a list of names, one per direction; got the string 'Tanh'"),
        ({"layout": 2}, V, r"layout must be 0 or 1; got 2"),
        ({"layout": True}, V, r"layout must be 0 or 1; got True"),
        ({"layout": 1.0}, V, r"layout must be 0 or 1; got 1.0"),
        ({"layout": 1, "activations": ["Relu"]}, None, None),
    ],
    "convert.to_*": [
        ({"fmt": "to_keras", "layer": 2}, V, r"layer must be an int in \[0, 1\]; got 2"),
        ({"fmt": "to_keras", "layer": -1}, V, r"layer must be an int in \[0, 1\]; got -1"),
        ({"fmt": "to_cs231n", "layer": True}, V, r"layer must be an int in \[0, 1\]; got True"),
        ({"fmt": "to_onnx", "layer": 1.0}, V, r"layer must be an int in \[0, 1\]; got 1.0"),
        ({"fmt": "to_keras", "rnn": RNN(3, 4), "reverse": True}, V, r"reverse=True needs a bidirectional layer"),
        ({"fmt": "to_keras", "rnn": "rnn"}, T_, r"rnn must be an rnn_xp.RNN; got str"),
        ({"fmt": "to_onnx", "rnn": STATE}, T_, r"rnn must be an rnn_xp.RNN, LSTM or GRU; got dict"),
        ({"fmt": "onnx_attributes", "rnn": None}, T_, r"rnn must be an rnn_xp.RNN, LSTM or GRU; got NoneType"),
        ({"fmt": "onnx_attributes", "rnn": RNN(3, 4, leak=0.5)}, V, r"the ONNX RNN operator has no leak; this layer has leak=0.5"),
        ({"fmt": "onnx_y_to_output", "rnn": np.zeros((5, 2, 3))}, V, r"Y must have shape \[T, dirs, B, H\]; got \(5, 2, 3\)"),
        ({"fmt": "output_to_onnx_y", "rnn": np.zeros((5, 2, 5)), "num_directions": 2},
         V, r"output must have shape \(T, B, dirs \* H\); got \(5, 2, 5\)"),
        ({"fmt": "output_to_onnx_y", "rnn": np.zeros((5, 2, 6)), "num_directions": 3}, V, r"num_directions must be 1 or 2; got 3"),
        ({"fmt": "to_keras", "layer": 1, "reverse": True}, None, None),
    ],
}

if torch is not None:
    CASES["convert.to_*"] += [
        ({"fmt": "to_torch", "rnn": RNN(3, 4, leak=0.5)}, V, r"torch.nn.RNN has no leak; this layer has leak=0.5"),
        ({"fmt": "to_torch", "rnn": [1]}, T_, r"rnn must be an rnn_xp\.RNN, LSTM or GRU; got list"),
    ]


def _check_valid(entry, overrides, result):
    """An odd but valid input gives the independent reference's answer."""
    if entry.startswith("convert.to_"):
        kernel, rkernel, bias = result  # the reverse direction of layer 1, in Keras' layout
        np.testing.assert_array_equal(kernel, LAYER.params["weight_ih_l1_reverse"].T)
        np.testing.assert_array_equal(rkernel, LAYER.params["weight_hh_l1_reverse"].T)
        np.testing.assert_array_equal(bias, LAYER.params["bias_ih_l1_reverse"] + LAYER.params["bias_hh_l1_reverse"])
        return
    # a converter: the new layer runs the recurrence of the weights it was given
    given = {  # the weights handed in, in torch's layout, for the first layer
        "convert.from_keras": (CAT_KERNEL.T, CAT_RKERNEL.T),
        "convert.from_cs231n": (CAT_KERNEL.T, CAT_RKERNEL.T),
        "convert.from_onnx": (W_ONNX[0], R_ONNX[0]),
    }[entry]
    assert_layer_runs_its_weights(result, X, given)


@pytest.mark.parametrize("entry, overrides, exc, match", catalogue_rows(CASES))
@pytest.mark.filterwarnings("error::UserWarning")
def test_catalogue(entry, overrides, exc, match):
    with params_kept(LAYER):  # a call, rejected or not, leaves the layer as it was
        check_catalogue_row(ENTRY_POINTS[entry], overrides, exc, match,
                            lambda result: _check_valid(entry, overrides, result))


def test_catalogue_is_large_enough():
    assert_catalogue_complete(CASES, ENTRY_POINTS, errors_at_least=40)


def test_converters_take_weights_of_any_library():
    """The ``from_*`` converters copy arrays of any library (mixed too) into the target library."""
    if torch is None:
        pytest.skip("torch not installed")
    rnn = convert.from_cs231n(CAT_KERNEL, torch.asarray(CAT_RKERNEL), CAT_BIAS)
    assert type(rnn.weight_hh_l0) is np.ndarray
    np.testing.assert_array_equal(rnn.weight_hh_l0, CAT_RKERNEL.T)
    with pytest.raises(TypeError, match=r"Wh must have a real floating dtype; got torch.int64"):
        convert.from_cs231n(CAT_KERNEL, torch.asarray(CAT_RKERNEL).long(), CAT_BIAS)


# --- bfloat16, and conversions that narrow -------------------------------------


@pytest.fixture(name="torch")
def _torch():
    return pytest.importorskip("torch")


def test_bfloat16_layer_keeps_its_dtype_through_torch_converters(torch):
    rnn = RNN(3, 4, xp="torch", dtype=torch.bfloat16, seed=0)
    assert "bfloat16" in repr(rnn) and rnn.dtype == torch.bfloat16
    with torch.no_grad():
        rnn.params["bias_ih_l0"][0] = 99840.0  # fits bfloat16 (8-bit exponent), not float16
    state = convert.torch_state_dict(rnn)
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    assert float(state["bias_ih_l0"][0]) == 99840.0
    module = convert.to_torch(rnn)
    assert module.weight_hh_l0.dtype == torch.bfloat16 and float(module.bias_ih_l0.detach()[0]) == 99840.0
    assert rnn.to(xp="torch").dtype == torch.bfloat16
    again = convert.from_torch(module, xp="torch")
    assert again.dtype == torch.bfloat16
    for name, p in again.params.items():
        assert torch.equal(p, rnn.params[name]), name


def test_bfloat16_refused_where_the_library_has_none(torch):
    with pytest.raises(TypeError, match="bfloat16 is not available in numpy"):
        convert.from_torch(convert.torch_state_dict(RNN(3, 4, xp="torch", dtype="bfloat16")))


@pytest.mark.parametrize("how", ["from_onnx"])  # to and load_state_dict: tests/layer/test_layer_errors.py
def test_narrowing_that_overflows_is_refused_naming_the_array(how):
    big = RNN(2, 3, dtype="float32", seed=0)
    big.params["bias_ih_l0"][1] = 99840.0  # beyond float16's 65504
    w = convert.to_onnx(big)
    call, name = (lambda: convert.from_onnx(w["W"], w["R"], w["B"], dtype="float16")), "B"
    with pytest.raises(ValueError, match=f"{name}.* values up to 99840, beyond float16's largest"):
        call()
    assert big.dtype == np.float32  # unchanged


# --- torch state dicts -----------------------------------------------------------


@pytest.mark.parametrize("rows", [3000, 40_000])
def test_state_dict_shapes_are_checked_before_anything_is_allocated(rows):
    state = {"weight_ih_l0": np.zeros((rows, 1), "f4"), "weight_hh_l0": np.zeros((1, 1), "f4")}
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=r"weight_hh_l0: got \(1, 1\), need \(%d, %d\)" % (rows, rows)):
            convert.from_torch(state)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak / 1e6:.0f} MB allocated before the error"  # not rows**2 random draws
    assert time.perf_counter() - start < 5


def test_state_dict_missing_bias_and_bad_dtype_named_before_building():
    state = RNN(3, 4, seed=0).state_dict()
    state["bias_hh_l0"] = state["bias_hh_l0"].astype(int)
    with pytest.raises(TypeError, match=r"state_dict\['bias_hh_l0'\] must have a real floating dtype"):
        convert.from_torch(state)


# --- flags, other layers, and messages naming the argument given -------------------


def test_flags_must_be_bools(torch):
    rnn = RNN(2, 3, bidirectional=True, seed=0)
    with pytest.raises(TypeError, match="reverse must be True or False; got 1"):
        convert.to_keras(rnn, reverse=1)
    with pytest.raises(TypeError, match="batch_first must be True or False; got 1"):
        convert.from_torch(torch.nn.RNN(2, 3, batch_first=True), batch_first=1)


def test_messages_name_the_argument_given():
    with pytest.raises(TypeError, match="^activations must be a list of names, one per direction; got int"):
        convert.from_onnx(np.ones((1, 4, 3)), np.ones((1, 4, 4)), activations=5)


def test_from_keras_refuses_other_layers():
    class LSTM:  # the shape of a Keras layer: get_weights and get_config
        def get_weights(self):
            return [np.ones((3, 16)), np.ones((4, 16)), np.ones(16)]

        def get_config(self):
            return {"activation": "tanh"}

    with pytest.raises(TypeError, match="a Keras LSTM has no rnn_xp equivalent; rnn_xp runs SimpleRNN"):
        convert.from_keras(LSTM())
