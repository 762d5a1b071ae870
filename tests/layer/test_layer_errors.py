"""Bad input to the layer (``rnn_xp.RNN``): what its constructor, call, loaders and ``to()`` refuse, and odd input they take.

- The catalogue (as in ``tests/functions/test_forward_errors.py``): a caller
  per entry point (``RNN``, ``RNN.__call__``, ``RNN.load_state_dict``,
  ``RNN.from_torch``) that fills in valid defaults, and a table of cases
  ``(overrides, exception, match)`` in which the overrides make one argument
  bad. The error must be a ``ValueError`` (shape, value) or ``TypeError``
  (dtype, type, library) whose message names the argument and what it needs,
  and leave the layer as it was. A row with exception ``None`` is an odd but
  valid input: it must compute the float64 reference's answer (or, for the
  constructor, build the layer asked for).
- A failed ``load_state_dict`` keeps the old parameters; dropout with one
  layer warns; a known library without its device is a ``BackendUnavailable``.
- Arrays of another library than the layer's parameters: a ``TypeError`` that
  says what to move or convert.
- bfloat16 is kept through ``to()`` and state dicts where the library has it
  (torch, JAX) and refused with a clear error where it does not (NumPy); a
  narrowing conversion that would make ``inf`` is refused, naming the array.
- NumPy masked arrays are refused (their mask would be ignored); flags are
  bools, not truthy values; messages name the argument the caller passed.

The converters' errors (``rnn_xp.convert``, ``RNN.from_torch``'s state dicts
excepted) are in ``tests/convert/test_convert_errors.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from rnn_xp import RNN, convert
from support import (
    LIBRARY_NAMES,
    as_library,
    assert_layer_runs_its_weights,
    assert_catalogue_complete,
    catalogue_rows,
    check_catalogue_row,
    optional_import,
    params_kept,
    reference_layer,
    to_numpy,
)

torch = optional_import("torch")
jax = optional_import("jax")
if jax is not None:
    jax.config.update("jax_enable_x64", True)
cupy = optional_import("cupy")

V, T_ = ValueError, TypeError

_rng = np.random.default_rng(11)
X = _rng.standard_normal((5, 2, 3))  # (T, B, D)
LAYER = RNN(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)  # L * dirs = 4
H0 = _rng.standard_normal((4, 2, 4)) * 0.5  # (L * dirs, B, H)
STATE = RNN(3, 4, seed=1, dtype="float64").state_dict()  # one layer, one direction


# --- callers: valid defaults, one argument overridden -------------------------

def _construct(input_size=3, hidden_size=4, **options):
    return RNN(input_size, hidden_size, **options)


def _call(x=X, h0=H0, lengths=None):
    return LAYER(x, h0, lengths=lengths)


def _load(state_dict=STATE):
    return RNN(3, 4, seed=2).load_state_dict(state_dict)


def _from_torch(module_or_state_dict=STATE, **options):
    return RNN.from_torch(module_or_state_dict, **options)


ENTRY_POINTS = {
    "RNN": _construct,
    "RNN.__call__": _call,
    "RNN.load_state_dict": _load,
    "RNN.from_torch": _from_torch,
}

_SD = dict(STATE)
_SHAPE_PART = r"weight_hh_l0: got \(4, 5\), need \(4, 4\)"

CASES = {
    "RNN": [
        # sizes: 0, negative, float, bool, str, None
        ({"input_size": 0}, V, r"input_size must be a positive int; got 0"),
        ({"input_size": -3}, V, r"input_size must be a positive int; got -3"),
        ({"input_size": 3.0}, T_, r"input_size must be a positive int; got float"),
        ({"input_size": True}, T_, r"input_size must be a positive int; got bool"),
        ({"input_size": "3"}, T_, r"input_size must be a positive int; got str"),
        ({"hidden_size": 0}, V, r"hidden_size must be a positive int; got 0"),
        ({"hidden_size": -1}, V, r"hidden_size must be a positive int; got -1"),
        ({"hidden_size": 4.5}, T_, r"hidden_size must be a positive int; got float"),
        ({"hidden_size": False}, T_, r"hidden_size must be a positive int; got bool"),
        ({"hidden_size": None}, T_, r"hidden_size must be a positive int; got NoneType"),
        ({"num_layers": 0}, V, r"num_layers must be a positive int; got 0"),
        ({"num_layers": -2}, V, r"num_layers must be a positive int; got -2"),
        ({"num_layers": 2.0}, T_, r"num_layers must be a positive int; got float"),
        ({"num_layers": True}, T_, r"num_layers must be a positive int; got bool"),
        # options
        ({"nonlinearity": "gelu"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'gelu'"),
        ({"nonlinearity": "Tanh"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'Tanh'"),
        ({"nonlinearity": None}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got None"),
        ({"num_layers": 2, "dropout": 1.5}, V, r"dropout must be a probability in \[0, 1\]; got 1.5"),
        ({"num_layers": 2, "dropout": -0.1}, V, r"dropout must be a probability in \[0, 1\]; got -0.1"),
        ({"num_layers": 2, "dropout": float("nan")}, V, r"dropout must be a probability in \[0, 1\]; got nan"),
        ({"num_layers": 2, "dropout": "0.1"}, T_, r"dropout must be a number in \[0, 1\]; got str"),
        ({"num_layers": 2, "dropout": True}, T_, r"dropout must be a number in \[0, 1\]; got bool"),
        ({"leak": 0}, V, r"leak must be in \(0, 1\].*got 0.0"),
        ({"leak": 1.5}, V, r"leak must be in \(0, 1\].*got 1.5"),
        ({"leak": True}, T_, r"leak must be a real number in \(0, 1\]; got bool"),
        ({"leak": "0.5"}, T_, r"leak must be a real number in \(0, 1\]; got str"),
        ({"bias": 1}, T_, r"bias must be True or False; got 1"),
        ({"batch_first": "yes"}, T_, r"batch_first must be True or False; got 'yes'"),
        ({"bidirectional": None}, T_, r"bidirectional must be True or False; got None"),
        # where the parameters live
        ({"dtype": "float8"}, T_, r"dtype must be a real floating dtype such as 'float32' or 'float64'; got 'float8'"),
        ({"dtype": "int32"}, T_, r"dtype must be a real floating dtype .*; got 'int32'"),
        ({"dtype": np.int64}, T_, r"dtype must be a real floating dtype .*; got <class 'numpy.int64'>"),
        ({"dtype": np.complex64}, T_, r"dtype must be a real floating dtype .*complex64"),
        ({"xp": "tensorflow"}, V, r"xp must be an array namespace, a module or one of \['numpy', .*\]; got 'tensorflow'"),
        ({"xp": "NumPy"}, V, r"xp must be an array namespace, a module or one of .*; got 'NumPy'"),
        ({"xp": 3}, T_, r"xp must be an array namespace; got 3"),
        # valid
        ({"num_layers": np.int64(2), "dropout": 0.5}, None, None),
        ({"dtype": np.float64, "leak": np.float32(0.5)}, None, None),
    ],
    "RNN.__call__": [
        # ranks
        ({"x": X[0, 0]}, V, r"x must be 3-D \(T, B, D\) or unbatched 2-D \(T, D\); got shape \(3,\)"),
        ({"x": X[:, :, None]}, V, r"x must be 3-D \(T, B, D\) or unbatched 2-D \(T, D\); got shape \(5, 2, 1, 3\)"),
        ({"x": np.float64(1.0)}, V, r"x must be 3-D .*; got shape \(\)"),
        # the feature dimension
        ({"x": X[..., :2]}, V, r"x must have shape \(T, B, D\) with D = 3.*got shape \(5, 2, 2\)"),
        ({"x": X[:, 0, :2], "h0": None}, V, r"x must have shape \(T, D\) with D = 3.*got shape \(5, 2\)"),
        # h0: layers * dirs, batch, H, rank
        ({"h0": H0[:2]}, V, r"h0 must have shape \(num_layers \* num_directions, B, H\) = \(4, 2, 4\); got shape \(2, 2, 4\)"),
        ({"h0": np.zeros((4, 3, 4))}, V, r"h0 must have shape \(num_layers \* num_directions, B, H\) = \(4, 2, 4\); got shape \(4, 3, 4\)"),
        ({"h0": np.zeros((4, 2, 5))}, V, r"h0 must have shape .* = \(4, 2, 4\); got shape \(4, 2, 5\)"),
        ({"h0": H0[0]}, V, r"h0 must have shape .* = \(4, 2, 4\); got shape \(2, 4\)"),
        ({"x": X[:, 0]}, V, r"h0 must have shape \(num_layers \* num_directions, H\) = \(4, 4\); got shape \(4, 2, 4\)"),
        # dtypes
        ({"x": X.astype(np.int64)}, T_, r"x must have a real floating dtype.*got int64"),
        ({"x": X > 0}, T_, r"x must have a real floating dtype.*got bool"),
        ({"x": X.astype(np.complex64)}, T_, r"x must have a real floating dtype.*got complex64"),
        ({"h0": H0.astype(np.int32)}, T_, r"h0 must have a real floating dtype.*got int32"),
        ({"h0": H0.astype(np.complex128)}, T_, r"h0 must have a real floating dtype.*got complex128"),
        # not arrays
        ({"x": X.tolist()}, T_, r"x must be an array \(T, B, D\) or \(T, D\); got list"),
        ({"x": None}, T_, r"x must be an array \(T, B, D\) or \(T, D\); got NoneType"),
        ({"h0": H0.tolist()}, T_, r"h0 must be an array .*; got list"),
        # lengths
        ({"lengths": [-1, 2]}, V, r"lengths must lie in \[0, T\] = \[0, 5\]; got values from -1 to 2"),
        ({"lengths": np.array([6, 2])}, V, r"lengths must lie in \[0, T\] = \[0, 5\]; got values from 2 to 6"),
        ({"lengths": [1, 2, 3]}, V, r"lengths must have the batch shape \(\*batch,\) = \(2,\); got shape \(3,\)"),
        ({"lengths": np.array([[1, 2]])}, V, r"lengths must have the batch shape \(\*batch,\) = \(2,\); got shape \(1, 2\)"),
        ({"x": X[:, 0], "h0": None, "lengths": [3]}, V, r"lengths must have the batch shape \(\*batch,\) = \(\); got shape \(1,\)"),
        ({"lengths": np.array([1.0, 2.0])}, T_, r"lengths must have an integer dtype; got float64"),
        ({"lengths": [1.0, 2.0]}, T_, r"lengths must be an integer array or a list of ints"),
        ({"lengths": np.array([True, False])}, T_, r"lengths must have an integer dtype; got bool"),
        ({"lengths": 3}, T_, r"lengths must be an integer array of shape \(\*batch,\); got int"),
        # valid: other float dtypes promote, a view of unsigned lengths, unbatched, zero lengths
        ({"x": X.astype(np.float32), "h0": H0.astype(np.float16)}, None, None),
        ({"lengths": np.array([0, 5], dtype=np.uint8)[::-1]}, None, None),
        ({"x": X[:, 1], "h0": H0[:, 1], "lengths": np.array(2)}, None, None),
        ({"h0": None, "lengths": [0, 0]}, None, None),
    ],
    "RNN.load_state_dict": [
        ({"state_dict": {k: v for k, v in _SD.items() if k != "bias_hh_l0"}},
         V, r"state_dict does not fit RNN\(3, 4; .*\): missing keys \['bias_hh_l0'\]"),
        ({"state_dict": {**_SD, "weight_ih_l1": _SD["weight_ih_l0"]}},
         V, r"state_dict does not fit .*: unexpected keys \['weight_ih_l1'\]"),
        ({"state_dict": {**_SD, "weight_hh_l0": np.ones((4, 5))}}, V, r"state_dict does not fit .*: wrong shapes: " + _SHAPE_PART),
        ({"state_dict": {**_SD, "bias_ih_l0": np.ones((1, 4))}}, V, r"wrong shapes: bias_ih_l0: got \(1, 4\), need \(4,\)"),
        ({"state_dict": {"weight_ih_l0": np.ones((4, 2)), "weight_hh_l0": np.ones((4, 5)), "extra": np.ones(1)}},
         V, r"missing keys \['bias_ih_l0', 'bias_hh_l0'\], unexpected keys \['extra'\], wrong shapes: "
            r"weight_ih_l0: got \(4, 2\), need \(4, 3\); " + _SHAPE_PART),
        ({"state_dict": {**_SD, "weight_hh_l0": np.eye(4).tolist()}}, T_, r"state_dict\['weight_hh_l0'\] must be an array of shape \(4, 4\); got list"),
        ({"state_dict": {**_SD, "bias_ih_l0": 0.0}}, T_, r"state_dict\['bias_ih_l0'\] must be an array of shape \(4,\); got float"),
        ({"state_dict": {**_SD, "bias_hh_l0": None}}, T_, r"state_dict\['bias_hh_l0'\] must be an array of shape \(4,\); got NoneType"),
        ({"state_dict": {**_SD, "bias_ih_l0": np.ones(4, dtype=int)}}, T_, r"state_dict\['bias_ih_l0'\] must have a real floating dtype; got int64"),
        ({"state_dict": {**_SD, "weight_ih_l0": _SD["weight_ih_l0"].astype(complex)}}, T_, r"state_dict\['weight_ih_l0'\] must have a real floating dtype; got complex128"),
        ({"state_dict": list(_SD.items())}, T_, r"state_dict must be a mapping; got list"),
        ({"state_dict": None}, T_, r"state_dict must be a mapping; got NoneType"),
        # valid: float64 into a float32 layer (cast, like torch)
        ({}, None, None),
    ],
    "RNN.from_torch": [
        ({"module_or_state_dict": 3}, T_, r"module_or_state_dict must be a torch.nn.RNN or a mapping .*; got int"),
        ({"module_or_state_dict": None}, T_, r"module_or_state_dict must be a torch.nn.RNN or a mapping .*; got NoneType"),
        ({"module_or_state_dict": {}}, V, r"state dict must hold at least 'weight_ih_l0' and 'weight_hh_l0'; got keys \[\]"),
        ({"module_or_state_dict": {k: v for k, v in _SD.items() if k != "weight_hh_l0"}}, V, r"must hold at least .*'weight_hh_l0'"),
        ({"module_or_state_dict": {**_SD, "weight_ih_l0": np.ones(4)}}, V, r"state_dict\['weight_ih_l0'\] must have shape \(H, D\); got shape \(4,\)"),
        ({"module_or_state_dict": {**_SD, "weight_ih_l0": np.ones((4, 3)).tolist()}}, T_, r"state_dict\['weight_ih_l0'\] must be an array; got list"),
        ({"module_or_state_dict": {**_SD, "weight_hh_l0": np.ones((4, 4), dtype=np.int32)}}, T_, r"state_dict\['weight_hh_l0'\] must have a real floating dtype; got int32"),
        ({"module_or_state_dict": {**_SD, "weight_hh_l0": np.ones((4, 5))}}, V, r"wrong shapes: " + _SHAPE_PART),
        ({"nonlinearity": "gelu"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'gelu'"),
        ({}, None, None),
    ],
}

if torch is not None:
    CASES["RNN.from_torch"] += [
        ({"module_or_state_dict": torch.nn.LSTM(3, 4)}, T_, r"module_or_state_dict must be a torch.nn.RNN \(or a state dict\); got LSTM"),
        ({"module_or_state_dict": torch.nn.GRU(3, 4)}, T_, r"module_or_state_dict must be a torch.nn.RNN \(or a state dict\); got GRU"),
        ({"module_or_state_dict": torch.nn.Linear(3, 4)}, T_, r"must be a torch.nn.RNN .*; got Linear"),
        ({"module_or_state_dict": torch.nn.Sequential(torch.nn.RNN(3, 4))}, T_, r"must be a torch.nn.RNN .*; got Sequential"),
        ({"module_or_state_dict": torch.nn.RNN(3, 4), "nonlinearity": "relu"},
         V, r"nonlinearity='relu' disagrees with the module's nonlinearity='tanh'"),
        ({"module_or_state_dict": torch.nn.RNN(3, 4), "batch_first": True},
         V, r"batch_first=True disagrees with the module's batch_first=False"),
        ({"module_or_state_dict": torch.nn.RNN(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)}, None, None),
    ]


def _check_valid(entry, overrides, result):
    """An odd but valid input gives the independent reference's answer."""
    if entry == "RNN":
        assert isinstance(result, RNN) and result.num_layers == int(overrides.get("num_layers", 1))
        assert all(np.all(np.abs(to_numpy(p)) <= 0.5) for p in result.params.values())  # U(-1/sqrt(H), 1/sqrt(H))
        return
    if entry == "RNN.__call__":
        args = {"x": X, "h0": H0, "lengths": None, **overrides}
        output, h_n = result
        expected, expected_h = reference_layer(LAYER, args["x"], args["h0"], args["lengths"])
        assert output.dtype == np.result_type(args["x"], np.float64) and output.shape == expected.shape
        np.testing.assert_allclose(output, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h_n, expected_h, rtol=1e-10, atol=1e-12)
        return
    # a loader: the new layer runs the recurrence of the weights it was given
    given = (STATE["weight_ih_l0"], STATE["weight_hh_l0"])  # the weights handed in, in torch's layout
    if entry == "RNN.from_torch":
        module = overrides.get("module_or_state_dict")
        given = given if module is None else (module.weight_ih_l0.detach().numpy(), module.weight_hh_l0.detach().numpy())
    assert_layer_runs_its_weights(result, X, given)


@pytest.mark.parametrize("entry, overrides, exc, match", catalogue_rows(CASES))
@pytest.mark.filterwarnings("error::UserWarning")
def test_catalogue(entry, overrides, exc, match):
    with params_kept(LAYER):  # a call, rejected or not, leaves the layer as it was
        check_catalogue_row(ENTRY_POINTS[entry], overrides, exc, match,
                            lambda result: _check_valid(entry, overrides, result))


def test_catalogue_is_large_enough():
    assert_catalogue_complete(CASES, ENTRY_POINTS, errors_at_least=40 * 2)


def test_load_state_dict_failure_keeps_the_old_parameters():
    rnn = RNN(3, 4, seed=3)
    before = {k: v.copy() for k, v in rnn.params.items()}
    for bad in ({**STATE, "weight_hh_l0": np.ones((4, 5))}, {**STATE, "bias_ih_l0": np.ones(4, dtype=int)}):
        with pytest.raises((ValueError, TypeError), match=r"weight_hh_l0|bias_ih_l0"):
            rnn.load_state_dict(bad)
        for k, v in rnn.params.items():
            np.testing.assert_array_equal(v, before[k])


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match=r"dropout applies between stacked layers.*dropout=0.5, num_layers=1"):
        rnn = RNN(3, 4, dropout=0.5, seed=0)
    assert rnn.dropout == 0.5


@pytest.mark.skipif(cupy is not None and cupy.cuda.is_available(), reason="a CUDA device is present")
def test_xp_cupy_without_a_device():
    """A known backend that cannot run here is a RuntimeError saying why, not a bad-input error."""
    from rnn_xp._backends import BackendUnavailable

    with pytest.raises(BackendUnavailable, match=r"cupy is (installed but finds no CUDA device|not installed)"):
        RNN(3, 4, xp="cupy")


# --- arrays of another library than the layer's parameters -------------------

def _layer_libs():
    libs = ["numpy"] + (["torch"] if torch is not None else []) + (["jax"] if jax is not None else [])
    return [(a, b) for a in libs for b in libs if a != b]


@pytest.mark.parametrize("layer_lib, array_lib", _layer_libs())
@pytest.mark.parametrize("which", ["x", "h0"])
def test_layer_and_arrays_of_two_libraries(layer_lib, array_lib, which):
    rnn = RNN(3, 4, num_layers=2, bidirectional=True, seed=0, dtype="float64", xp=layer_lib)
    args = {"x": X, "h0": H0}
    args = {k: as_library(array_lib if k == which else layer_lib, v) for k, v in args.items()}
    if which == "x":
        match = (rf"x is from {LIBRARY_NAMES[array_lib]} but the layer's parameters are in "
                 rf"{LIBRARY_NAMES[layer_lib]}; move the layer with rnn.to\(xp=...\) first")
    else:  # x matches the layer: h0 is the one to convert
        match = (rf"h0 is from {LIBRARY_NAMES[array_lib]} but x and the layer's parameters are in "
                 rf"{LIBRARY_NAMES[layer_lib]}; convert h0 to {LIBRARY_NAMES[layer_lib]} first "
                 rf"\({LIBRARY_NAMES[layer_lib]}.asarray\(h0\)\)")
    with pytest.raises(TypeError, match=match):
        rnn(args["x"], args["h0"])
    # moving the layer, as the message says, makes the call work and agree with the reference
    if which == "x":
        output, _ = rnn.to(xp=array_lib)(args["x"])
        np.testing.assert_allclose(to_numpy(output), reference_layer(rnn, X)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer_lib, array_lib", [p for p in _layer_libs() if p[1] != "numpy"])
def test_lengths_of_a_third_library(layer_lib, array_lib):
    """NumPy lengths are host data, accepted with every layer; another library's are not."""
    rnn = RNN(3, 4, seed=0, dtype="float64", xp=layer_lib)
    with pytest.raises(TypeError, match=r"lengths is an array of another library .*pass it in the same library as x"):
        rnn(as_library(layer_lib, X), lengths=as_library(array_lib, np.array([1, 2])))


# --- bfloat16, and conversions that narrow -------------------------------------


@pytest.fixture(name="torch")
def _torch():
    return pytest.importorskip("torch")


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


@pytest.mark.parametrize("how", ["to", "load_state_dict"])  # from_onnx: tests/convert/test_convert_errors.py
def test_narrowing_that_overflows_is_refused_naming_the_array(how):
    big = RNN(2, 3, dtype="float32", seed=0)
    big.params["bias_ih_l0"][1] = 99840.0  # beyond float16's 65504
    if how == "to":
        call, name = (lambda: big.to(dtype="float16")), "bias_ih_l0"
    else:
        call, name = (lambda: RNN(2, 3, dtype="float16").load_state_dict(big.state_dict())), "bias_ih_l0"
    with pytest.raises(ValueError, match=f"{name}.* values up to 99840, beyond float16's largest"):
        call()
    assert big.dtype == np.float32  # unchanged


def test_narrowing_that_fits_is_fine():
    rnn = RNN(2, 3, seed=0).to(dtype="float16")
    assert rnn.dtype == np.float16 and all(np.isfinite(p).all() for p in rnn.params.values())


# --- masked arrays, flags, and messages naming the argument given ---------------


@pytest.mark.parametrize("where", ["layer x", "state dict"])  # the functions': tests/functions/test_forward_errors.py
def test_masked_arrays_are_refused(where):
    masked = np.ma.array(np.ones((2, 1, 1)), mask=[[[0]], [[1]]])
    if where == "layer x":
        call, name = (lambda: RNN(1, 1)(masked.astype("f4"))), "x"
    else:
        state = RNN(1, 1).state_dict()
        state["weight_hh_l0"] = np.ma.array(state["weight_hh_l0"], mask=True)
        call, name = (lambda: RNN(1, 1).load_state_dict(state)), "state_dict['weight_hh_l0']"
    with pytest.raises(TypeError, match=re.escape(name) + r" is a NumPy masked array.*\.filled\(value\)"):
        call()


def test_flags_must_be_bools():
    rnn = RNN(2, 3, bidirectional=True, seed=0)
    x = np.ones((4, 1, 2), "f4")
    with pytest.raises(TypeError, match="return_cache must be True or False; got 1"):
        rnn.forward(x, return_cache=1)


def test_messages_name_the_argument_given():
    rnn = RNN(2, 3, dtype="float64", seed=0)
    out, _, cache = rnn.forward(np.ones((4, 1, 2)), return_cache=True)
    with pytest.raises(TypeError, match="^d_output must have a real floating dtype"):
        rnn.backward(cache, np.ones(out.shape, int))
