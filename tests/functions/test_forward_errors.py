"""Bad input to the forward functions: a clear ValueError or TypeError naming the argument."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import rnn_xp
from rnn_xp import columns

rng = np.random.default_rng(0)
X = rng.standard_normal((5, 2, 3))  # (T, B, D)
H0 = np.zeros((2, 4))
WX = rng.standard_normal((4, 3))
WH = rng.standard_normal((4, 4))
B = np.zeros(4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"Wx": np.ones((4, 3, 1))}, r"Wx must be 2-D .* got shape \(4, 3, 1\)"),
        ({"Wh": np.ones((4, 5))}, r"Wh must have shape \(H, H\) = \(4, 4\).*got shape \(4, 5\)"),
        ({"b": np.ones(5)}, r"b must have shape \(H,\) = \(4,\).*got shape \(5,\)"),
        ({"x": np.ones((5, 2, 7))}, r"x must have shape \(T, \*batch, D\) with D = 3.*\(5, 2, 7\)"),
        ({"x": np.ones(3)}, r"x must have shape \(T, \*batch, D\).*got shape \(3,\)"),
        ({"h0": np.ones((3, 4))}, r"h0 must have shape \(\*batch, H\) = \(2, 4\); got shape \(3, 4\)"),
        ({"h0": np.ones((2, 5))}, r"h0 must have shape .* = \(2, 4\)"),
        ({"lengths": [1, 2, 3]}, r"lengths must have the batch shape .* \(2,\).*\(3,\)"),
        ({"lengths": [1, 6]}, r"lengths must lie in \[0, T\] = \[0, 5\]"),
        ({"lengths": [-1, 2]}, r"lengths must lie in"),
        ({"leak": 0.0}, r"leak must be in \(0, 1\]"),
        ({"leak": 1.5}, r"leak must be in \(0, 1\]"),
        ({"nonlinearity": "gelu"}, r"nonlinearity must be one of \['tanh', 'relu', "),
    ],
)
def test_value_errors(kwargs, match):
    args = {"x": X, "h0": H0, "Wx": WX, "Wh": WH, "b": B}
    options = {k: kwargs.pop(k) for k in ("lengths", "leak", "nonlinearity") if k in kwargs}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        rnn_xp.rnn_forward(*args.values(), **options)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": X.astype(np.int64)}, r"x must have a real floating dtype.*int64"),
        ({"Wh": WH > 0}, r"Wh must have a real floating dtype.*bool"),
        ({"b": B.astype(np.complex128)}, r"b must have a real floating dtype.*complex128"),
        ({"x": X.tolist()}, r"x\[0\] must be an array.*list"),
        ({"Wx": None}, r"Wx is required; got None"),
        ({"x": None}, r"x must be an array"),
        ({"lengths": np.array([1.0, 2.0])}, r"lengths must have an integer dtype"),
        ({"leak": "0.5"}, r"leak must be a real number"),
        ({"batch_first": 1}, r"batch_first must be True or False"),
    ],
)
def test_type_errors(kwargs, match):
    args = {"x": X, "h0": H0, "Wx": WX, "Wh": WH, "b": B}
    options = {k: kwargs.pop(k) for k in ("lengths", "leak", "batch_first") if k in kwargs}
    args.update(kwargs)
    with pytest.raises(TypeError, match=match):
        rnn_xp.rnn_forward(*args.values(), **options)


def test_mixed_libraries_is_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"Wx is from numpy but x is from torch"):
        rnn_xp.rnn_forward(torch.asarray(X), None, WX, WH, B)
    with pytest.raises(TypeError, match=r"from torch"):
        rnn_xp.rnn_step_forward(X[0], H0, WX, torch.asarray(WH), B)


def test_step_errors():
    with pytest.raises(ValueError, match=r"prev_h must have shape \(\*batch, H\) = \(2, 4\)"):
        rnn_xp.rnn_step_forward(X[0], np.zeros((4,)), WX, WH, B)
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, D\) with D = 3"):
        rnn_xp.rnn_step_forward(X[0, :, :2], H0, WX, WH, B)
    with pytest.raises(ValueError, match=r"nonlinearity must be one of"):
        rnn_xp.rnn_step_forward(X[0], H0, WX, WH, B, nonlinearity="gelu")


def test_list_steps_of_different_shapes():
    with pytest.raises(ValueError, match=r"x\[1\] has shape \(3, 3\) but x\[0\] has shape \(2, 3\)"):
        rnn_xp.rnn_forward([X[0], np.ones((3, 3))], None, WX, WH, B)


def test_columns_errors():
    with pytest.raises(ValueError, match=r"x_seq must have shape \(T, D, N\)"):
        columns.rnn_forward(np.ones((3, 1)), None, WX, WH)
    with pytest.raises(ValueError, match=r"b must have shape \(H, 1\) or \(H,\) with H = 4"):
        columns.rnn_step_forward(np.ones((3, 1)), np.zeros((4, 1)), WX, WH, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"prev_h must be 2-D columns \(H, N\)"):
        columns.rnn_step_forward(np.ones((3, 1)), np.zeros(4), WX, WH)


def test_import_touches_no_backend():
    code = (
        "import sys, rnn_xp, rnn_xp.columns\n"
        "bad = [m for m in ('torch', 'jax', 'cupy', 'dask') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "import numpy as np\n"
        "rnn_xp.rnn_forward(np.ones((2, 1)), None, np.ones((1, 1)), np.ones((1, 1)))\n"
        "bad = [m for m in ('torch', 'jax', 'cupy', 'dask') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
