"""What the converters refuse, and how their messages name the argument or the weight.

- Boolean options (``go_backwards``, ``residual``, ``batch_first``,
  ``reverse``) take ``True``, ``False`` and, where they have no default of
  their own, ``None``; ``"no"``, ``"false"``, ``1`` or ``np.bool_`` are a
  ``TypeError`` naming the option (``go_backwards="no"`` used to give a
  reversed layer).
- A Keras layer that is not built yet, and Flax parameters whose parts are
  not mappings, get a ``ValueError`` that says what is expected.
- A narrowing conversion whose values overflow (float32 weights beyond
  float16's range) names the weight in the converter's own terms.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnn_xp import RNN, convert

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
