"""Inputs a hostile user would try, and what rnn_xp must do with them.

- bfloat16 is kept through the layer, every converter and ``to()`` where the library has it
  (torch, JAX), and refused with a clear error where it does not (NumPy); a narrowing
  conversion that would make ``inf`` is refused, naming the array.
- A state dict is validated (keys, shapes, dtypes) before anything is allocated.
- ``lengths`` values are checked before any cast (JAX without float64 holds int32).
- NumPy masked arrays are refused (their mask would be ignored).
- Flags are bools, not truthy values; messages name the argument the caller passed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import rnn_xp
from rnn_xp import RNN, convert
from support import optional_import

# -- bfloat16 ------------------------------------------------------------------


@pytest.fixture
def torch():
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


def test_bfloat16_state_dict_loads_into_a_float32_layer_exactly(torch):
    state = convert.torch_state_dict(RNN(3, 4, xp="torch", dtype="bfloat16", seed=1))
    rnn = RNN(3, 4, seed=0).load_state_dict(state)  # NumPy float32: every bfloat16 value exactly
    for name, t in state.items():
        np.testing.assert_array_equal(rnn.params[name], t.float().numpy())


def test_bfloat16_on_jax_and_between_torch_and_jax(torch):
    jnp = pytest.importorskip("jax.numpy")
    rnn = RNN(3, 4, xp="torch", dtype=torch.bfloat16, seed=2)
    j = RNN(3, 4, xp="torch", dtype=torch.bfloat16, seed=2).to(xp="jax")
    assert j.dtype == jnp.bfloat16 and "bfloat16" in repr(j)
    out, _ = j(jnp.ones((5, 2, 3), dtype=jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    back = j.to(xp="torch")  # in place, like torch's Module.to
    assert back.dtype == torch.bfloat16
    for name, p in back.params.items():
        assert torch.equal(p, rnn.params[name]), name


def test_bfloat16_refused_where_the_library_has_none(torch):
    with pytest.raises(TypeError, match="bfloat16 is not available in numpy.*dtype='float32'"):
        RNN(3, 4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 is not available in numpy"):
        RNN(3, 4, xp="torch", dtype="bfloat16").to(xp="numpy")
    with pytest.raises(TypeError, match="bfloat16 is not available in numpy"):
        convert.from_torch(convert.torch_state_dict(RNN(3, 4, xp="torch", dtype="bfloat16")))


@pytest.mark.parametrize("how", ["to", "load_state_dict", "from_onnx"])
def test_narrowing_that_overflows_is_refused_naming_the_array(how):
    big = RNN(2, 3, dtype="float32", seed=0)
    big.params["bias_ih_l0"][1] = 99840.0  # beyond float16's 65504
    if how == "to":
        call, name = (lambda: big.to(dtype="float16")), "bias_ih_l0"
    elif how == "load_state_dict":
        call, name = (lambda: RNN(2, 3, dtype="float16").load_state_dict(big.state_dict())), "bias_ih_l0"
    else:
        w = convert.to_onnx(big)
        call, name = (lambda: convert.from_onnx(w["W"], w["R"], w["B"], dtype="float16")), "B"
    with pytest.raises(ValueError, match=f"{name}.* values up to 99840, beyond float16's largest"):
        call()
    assert big.dtype == np.float32  # unchanged


def test_narrowing_that_fits_is_fine():
    rnn = RNN(2, 3, seed=0).to(dtype="float16")
    assert rnn.dtype == np.float16 and all(np.isfinite(p).all() for p in rnn.params.values())


# -- hostile state dicts ---------------------------------------------------------


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


# -- lengths before any cast ------------------------------------------------------

_JAX_INT32 = """
import numpy as np, jax.numpy as jnp, rnn_xp
assert jnp.asarray(np.array([2**32 + 3])).dtype == jnp.int32  # float64 (and int64) off
x, Wx, Wh = jnp.ones((5, 2, 1), jnp.float32), jnp.ones((3, 1), jnp.float32), jnp.eye(3, dtype=jnp.float32)
for lengths in (np.array([2**32 + 3, 5]), np.array([2**31, 1]), [2**70, 1], [-1, 2]):
    try:
        rnn_xp.rnn_forward(x, None, Wx, Wh, lengths=lengths)
    except ValueError as exc:
        print(exc)
    else:
        print("accepted")
"""


def test_lengths_checked_before_the_cast_on_jax_without_float64():
    if optional_import("jax") is None:
        pytest.skip("jax not installed")
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    proc = subprocess.run([sys.executable, "-c", _JAX_INT32], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "lengths must lie in [0, T] = [0, 5]; got values from 5 to 4294967299",
        "lengths must lie in [0, T] = [0, 5]; got values from 1 to 2147483648",
        "lengths must lie in [0, T] = [0, 5]; got values from 1 to 1180591620717411303424",
        "lengths must lie in [0, T] = [0, 5]; got values from -1 to 2",
    ]


def test_huge_python_int_lengths_are_a_value_error(backend):
    x = backend.asarray(np.ones((3, 2, 1)))
    W = [backend.asarray(a) for a in (np.ones((2, 1)), np.eye(2))]
    with pytest.raises(ValueError, match="got values from 1 to 1180591620717411303424"):
        rnn_xp.rnn_forward(x, None, *W, lengths=[2**70, 1])


# -- masked arrays ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["x", "h0", "Wh", "lengths", "layer x", "state dict"])
def test_masked_arrays_are_refused(where):
    x = np.ones((2, 1, 1))
    args = {"x": x, "h0": np.zeros((1, 1)), "Wx": np.ones((1, 1)), "Wh": np.zeros((1, 1))}
    masked = np.ma.array(np.ones((2, 1, 1)), mask=[[[0]], [[1]]])
    if where == "layer x":
        call, name = (lambda: RNN(1, 1)(masked.astype("f4"))), "x"
    elif where == "state dict":
        state = RNN(1, 1).state_dict()
        state["weight_hh_l0"] = np.ma.array(state["weight_hh_l0"], mask=True)
        call, name = (lambda: RNN(1, 1).load_state_dict(state)), "state_dict['weight_hh_l0']"
    elif where == "lengths":
        lengths = np.ma.array([2], mask=[True])
        call, name = (lambda: rnn_xp.rnn_forward(*args.values(), lengths=lengths)), "lengths"
    else:
        args[where] = np.ma.array(args[where], mask=np.zeros(args[where].shape, bool))
        if where == "x":
            args["x"] = masked
        call, name = (lambda: rnn_xp.rnn_forward(*args.values())), where
    with pytest.raises(TypeError, match=re.escape(name) + r" is a NumPy masked array.*\.filled\(value\)"):
        call()


# -- bools, and messages naming the argument given ----------------------------------


def test_flags_must_be_bools(torch):
    rnn = RNN(2, 3, bidirectional=True, seed=0)
    x = np.ones((4, 1, 2), "f4")
    with pytest.raises(TypeError, match="return_cache must be True or False; got 1"):
        rnn.forward(x, return_cache=1)
    with pytest.raises(TypeError, match="reverse must be True or False; got 1"):
        convert.to_keras(rnn, reverse=1)
    with pytest.raises(TypeError, match="batch_first must be True or False; got 1"):
        convert.from_torch(torch.nn.RNN(2, 3, batch_first=True), batch_first=1)


def test_messages_name_the_argument_given():
    rnn = RNN(2, 3, dtype="float64", seed=0)
    out, _, cache = rnn.forward(np.ones((4, 1, 2)), return_cache=True)
    with pytest.raises(TypeError, match="^d_output must have a real floating dtype"):
        rnn.backward(cache, np.ones(out.shape, int))
    from rnn_xp import columns

    with pytest.raises(TypeError, match="^x_seq must have a real floating dtype"):
        columns.rnn_forward(np.ones((3, 2, 1), int), np.zeros((3, 1)), np.ones((3, 2)), np.eye(3))
    with pytest.raises(TypeError, match=r"^x_seq\[0\] must have a real floating dtype"):
        columns.rnn_forward([np.ones((2, 1), int)], np.zeros((3, 1)), np.ones((3, 2)), np.eye(3))
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
