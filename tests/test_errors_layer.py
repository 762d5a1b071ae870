"""The bad-input catalogue, continued: the layer ``RNN`` and the converters.

Same structure as ``tests/test_errors.py``: each entry point has a caller
that fills in valid defaults, and a table of cases ``(overrides, exception,
match)`` in which the overrides make one argument bad. The error must be a
``ValueError`` (shape, value) or ``TypeError`` (dtype, type, library) whose
message names the argument and what it needs. A row with exception ``None``
is an odd but valid input: it must compute the float64 reference's answer
(or, for the constructors, build the layer asked for).
"""

from __future__ import annotations

import numpy as np
import pytest

from rnn_xp import RNN, convert
from support import as_library, optional_import, reference_rnn, to_numpy

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
KERNEL, RKERNEL, KBIAS = _rng.standard_normal((3, 4)), np.eye(4) * 0.5, np.zeros(4)  # Keras / CS231n
W_ONNX = _rng.standard_normal((1, 4, 3))  # [dirs, H, D]
R_ONNX = _rng.standard_normal((1, 4, 4)) * 0.3  # [dirs, H, H]
B_ONNX = np.zeros((1, 8))  # [dirs, 2H]


def _reference_layer(rnn, x, h0=None, lengths=None):
    """The float64 loop of ``support.reference_rnn``, stacked by hand over layers and directions."""
    p = {k: to_numpy(v).astype(np.float64) for k, v in rnn.params.items()}
    dirs, batch = rnn.num_directions, x.shape[1:-1]
    lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    layer_in, finals = np.asarray(x, np.float64), []
    for k in range(rnn.num_layers):
        outs = []
        for d, s in enumerate(("", "_reverse")[:dirs]):
            b = p[f"bias_ih_l{k}{s}"] + p[f"bias_hh_l{k}{s}"] if rnn.bias else None
            h_init = None if h0 is None else h0[k * dirs + d]
            out, last = reference_rnn(layer_in, h_init, p[f"weight_ih_l{k}{s}"], p[f"weight_hh_l{k}{s}"], b,
                                      nonlinearity=rnn.nonlinearity, lengths=lengths, reverse=d == 1, leak=rnn.leak)
            outs.append(out)
            finals.append(last)
        layer_in = np.concatenate(outs, axis=-1)
    return layer_in, np.stack(finals).reshape(rnn.num_layers * dirs, *batch, rnn.hidden_size)


# --- callers: valid defaults, one argument overridden -------------------------

def _construct(input_size=3, hidden_size=4, **options):
    return RNN(input_size, hidden_size, **options)


def _call(x=X, h0=H0, lengths=None):
    return LAYER(x, h0, lengths=lengths)


def _load(state_dict=STATE):
    return RNN(3, 4, seed=2).load_state_dict(state_dict)


def _from_torch(module_or_state_dict=STATE, **options):
    return RNN.from_torch(module_or_state_dict, **options)


def _from_keras(kernel=KERNEL, recurrent_kernel=RKERNEL, bias=KBIAS, weights=None, **options):
    return convert.from_keras([kernel, recurrent_kernel, bias] if weights is None else weights, **options)


def _from_cs231n(Wx=KERNEL, Wh=RKERNEL, b=KBIAS, **options):
    return convert.from_cs231n(Wx, Wh, b, **options)


def _from_onnx(W=W_ONNX, R=R_ONNX, B=B_ONNX, **options):
    return convert.from_onnx(W, R, B, **options)


def _to_format(rnn=LAYER, fmt="to_keras", **options):
    return getattr(convert, fmt)(rnn, **options)


ENTRY_POINTS = {
    "RNN": _construct,
    "RNN.__call__": _call,
    "RNN.load_state_dict": _load,
    "RNN.from_torch": _from_torch,
    "convert.from_keras": _from_keras,
    "convert.from_cs231n": _from_cs231n,
    "convert.from_onnx": _from_onnx,
    "convert.to_*": _to_format,
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
    "convert.from_keras": [
        ({"kernel": np.ones(3)}, V, r"kernel must have shape \(D, H\); got \(3,\)"),
        ({"kernel": np.ones((3, 4, 1))}, V, r"kernel must have shape \(D, H\); got \(3, 4, 1\)"),
        ({"recurrent_kernel": np.eye(5)}, V, r"recurrent_kernel must have shape \(H, H\) = \(4, 4\) to match kernel \(D, H\) = \(3, 4\); got \(5, 5\)"),
        ({"recurrent_kernel": np.ones(4)}, V, r"recurrent_kernel must have shape \(H, H\) = \(4, 4\).*; got \(4,\)"),
        ({"bias": np.zeros(5)}, V, r"bias must have shape \(H,\) = \(4,\) to match kernel \(D, H\) = \(3, 4\); got \(5,\)"),
        ({"bias": np.zeros((1, 4))}, V, r"bias must have shape \(H,\) = \(4,\).*; got \(1, 4\)"),
        ({"kernel": KERNEL.T}, V, r"recurrent_kernel must have shape \(H, H\) = \(3, 3\) to match kernel \(D, H\) = \(4, 3\)"),
        ({"weights": [KERNEL]}, V, r"Keras SimpleRNN weights are \[kernel, recurrent_kernel\(, bias\)\] \(twice that for a Bidirectional\); got 1 arrays"),
        ({"weights": [KERNEL, RKERNEL, KBIAS, KBIAS, KBIAS]}, V, r"Keras SimpleRNN weights are .*; got 5 arrays"),
        ({"weights": [KERNEL, RKERNEL, KBIAS, KBIAS]}, V, r"kernel must have shape \(D, H\); got \(4,\)"),
        ({"weights": KERNEL}, T_, r"layer_or_weights must be a keras SimpleRNN, a Bidirectional\(SimpleRNN\) or a list .*; got ndarray"),
        ({"kernel": KERNEL.astype(np.int64)}, T_, r"kernel must have a real floating dtype; got int64"),
        ({"recurrent_kernel": RKERNEL.astype(complex)}, T_, r"recurrent_kernel must have a real floating dtype; got complex128"),
        ({"bias": KBIAS > 0}, T_, r"bias must have a real floating dtype; got bool"),
        ({"kernel": KERNEL.tolist()}, T_, r"kernel must be an array; got list"),
        ({"recurrent_kernel": None}, T_, r"recurrent_kernel must be an array; got NoneType"),
        ({"nonlinearity": "gelu"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'gelu'"),
        ({"batch_first": "yes"}, T_, r"batch_first must be True or False; got 'yes'"),
        ({"dtype": "int8"}, T_, r"dtype must be a real floating dtype .*; got 'int8'"),
        ({"weights": [KERNEL, RKERNEL]}, None, None),  # valid: no bias
    ],
    "convert.from_cs231n": [
        ({"Wx": np.ones(3)}, V, r"Wx must have shape \(D, H\); got \(3,\)"),
        ({"Wh": np.ones((4, 3))}, V, r"Wh must have shape \(H, H\) = \(4, 4\) to match Wx \(D, H\) = \(3, 4\); got \(4, 3\)"),
        ({"Wh": np.ones((4, 4, 1))}, V, r"Wh must have shape \(H, H\) = \(4, 4\).*; got \(4, 4, 1\)"),
        ({"b": np.zeros((4, 1))}, V, r"b must have shape \(H,\) = \(4,\) to match Wx \(D, H\) = \(3, 4\); got \(4, 1\)"),
        ({"Wx": None}, T_, r"Wx must be an array; got NoneType"),
        ({"Wh": RKERNEL.astype(np.int32)}, T_, r"Wh must have a real floating dtype; got int32"),
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
    CASES["convert.to_*"] += [
        ({"fmt": "to_torch", "rnn": RNN(3, 4, leak=0.5)}, V, r"torch.nn.RNN has no leak; this layer has leak=0.5"),
        ({"fmt": "to_torch", "rnn": [1]}, T_, r"rnn must be an rnn_xp\.RNN, LSTM or GRU; got list"),
    ]

_ROWS = [
    pytest.param(entry, overrides, exc, match, id=f"{entry}-{i}")
    for entry, rows in CASES.items()
    for i, (overrides, exc, match) in enumerate(rows)
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
        expected, expected_h = _reference_layer(LAYER, args["x"], args["h0"], args["lengths"])
        assert output.dtype == np.result_type(args["x"], np.float64) and output.shape == expected.shape
        np.testing.assert_allclose(output, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h_n, expected_h, rtol=1e-10, atol=1e-12)
        return
    if entry.startswith("convert.to_"):
        kernel, rkernel, bias = result  # the reverse direction of layer 1, in Keras' layout
        np.testing.assert_array_equal(kernel, LAYER.params["weight_ih_l1_reverse"].T)
        np.testing.assert_array_equal(rkernel, LAYER.params["weight_hh_l1_reverse"].T)
        np.testing.assert_array_equal(bias, LAYER.params["bias_ih_l1_reverse"] + LAYER.params["bias_hh_l1_reverse"])
        return
    # a converter or a loader: the new layer runs the recurrence of the weights it was given
    assert isinstance(result, RNN)
    x = X if not result.batch_first else np.moveaxis(X, 0, 1)
    output, _ = result(x.astype(result.dtype))
    expected, _ = _reference_layer(result, X)
    if result.batch_first:
        expected = np.moveaxis(expected, 0, 1)
    tol = 1e-10 if result.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(output, expected, rtol=tol, atol=tol)
    given = {  # the weights handed in, in torch's layout, for the first layer
        "convert.from_keras": (KERNEL.T, RKERNEL.T),
        "convert.from_cs231n": (KERNEL.T, RKERNEL.T),
        "convert.from_onnx": (W_ONNX[0], R_ONNX[0]),
        "RNN.load_state_dict": (STATE["weight_ih_l0"], STATE["weight_hh_l0"]),
    }.get(entry)
    if entry == "RNN.from_torch":
        module = overrides.get("module_or_state_dict")
        given = (STATE["weight_ih_l0"], STATE["weight_hh_l0"]) if module is None else (
            module.weight_ih_l0.detach().numpy(), module.weight_hh_l0.detach().numpy())
    np.testing.assert_allclose(to_numpy(result.weight_ih_l0), given[0], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(result.weight_hh_l0), given[1], rtol=1e-6)


@pytest.mark.parametrize("entry, overrides, exc, match", _ROWS)
@pytest.mark.filterwarnings("error::UserWarning")
def test_catalogue(entry, overrides, exc, match):
    call = ENTRY_POINTS[entry]
    if exc is None:
        _check_valid(entry, overrides, call(**overrides))
        return
    before = {k: to_numpy(v).copy() for k, v in LAYER.params.items()}
    with pytest.raises(exc, match=match):
        call(**overrides)
    for k, v in LAYER.params.items():  # a rejected call leaves the layer as it was
        np.testing.assert_array_equal(to_numpy(v), before[k])


def test_catalogue_is_large_enough():
    errors = sum(1 for rows in CASES.values() for row in rows if row[1] is not None)
    assert errors >= 40 * 2, errors
    assert set(CASES) == set(ENTRY_POINTS)


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


_LIB_NAME = {"numpy": "numpy", "torch": "torch", "jax": "jax.numpy"}


@pytest.mark.parametrize("layer_lib, array_lib", _layer_libs())
@pytest.mark.parametrize("which", ["x", "h0"])
def test_layer_and_arrays_of_two_libraries(layer_lib, array_lib, which):
    rnn = RNN(3, 4, num_layers=2, bidirectional=True, seed=0, dtype="float64", xp=layer_lib)
    args = {"x": X, "h0": H0}
    args = {k: as_library(array_lib if k == which else layer_lib, v) for k, v in args.items()}
    if which == "x":
        match = (rf"x is from {_LIB_NAME[array_lib]} but the layer's parameters are in "
                 rf"{_LIB_NAME[layer_lib]}; move the layer with rnn.to\(xp=...\) first")
    else:  # x matches the layer: h0 is the one to convert
        match = (rf"h0 is from {_LIB_NAME[array_lib]} but x and the layer's parameters are in "
                 rf"{_LIB_NAME[layer_lib]}; convert h0 to {_LIB_NAME[layer_lib]} first "
                 rf"\({_LIB_NAME[layer_lib]}.asarray\(h0\)\)")
    with pytest.raises(TypeError, match=match):
        rnn(args["x"], args["h0"])
    # moving the layer, as the message says, makes the call work and agree with the reference
    if which == "x":
        output, _ = rnn.to(xp=array_lib)(args["x"])
        np.testing.assert_allclose(to_numpy(output), _reference_layer(rnn, X)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer_lib, array_lib", [p for p in _layer_libs() if p[1] != "numpy"])
def test_lengths_of_a_third_library(layer_lib, array_lib):
    """NumPy lengths are host data, accepted with every layer; another library's are not."""
    rnn = RNN(3, 4, seed=0, dtype="float64", xp=layer_lib)
    with pytest.raises(TypeError, match=r"lengths is an array of another library .*pass it in the same library as x"):
        rnn(as_library(layer_lib, X), lengths=as_library(array_lib, np.array([1, 2])))


def test_converters_take_weights_of_any_library():
    """The ``from_*`` converters copy arrays of any library (mixed too) into the target library."""
    if torch is None:
        pytest.skip("torch not installed")
    rnn = convert.from_cs231n(KERNEL, torch.asarray(RKERNEL), KBIAS)
    assert type(rnn.weight_hh_l0) is np.ndarray
    np.testing.assert_array_equal(rnn.weight_hh_l0, RKERNEL.T)
    with pytest.raises(TypeError, match=r"Wh must have a real floating dtype; got torch.int64"):
        convert.from_cs231n(KERNEL, torch.asarray(RKERNEL).long(), KBIAS)
