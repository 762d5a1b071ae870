"""Bad input to the forward functions (``rnn_forward``, ``rnn_step_forward``): what each refuses, and odd input each takes.

- The catalogue: a caller per entry point that fills in valid defaults, and a
  table of cases ``(overrides, exception, match)``: the overrides make one
  argument bad, and the error must be a ``ValueError`` (shape, value) or
  ``TypeError`` (dtype, type, library) whose message names the argument and
  what it needs. To cover a new entry point, add a caller to ``ENTRY_POINTS``
  and its rows to ``CASES``; the first cases, written out one by one, come
  before it.
- Arrays of two libraries (a ``TypeError`` naming both), ``lengths`` of another
  library, checked before any cast (JAX without float64 holds int32) and
  never as a Python int past int64; NumPy masked arrays are refused (their mask
  would be ignored).
- Input that is odd but valid (float16, big-endian, views, zero-sized
  dimensions, tensors that require grad) is computed and checked against the
  float64 reference.
- Importing rnn_xp (and calling it on NumPy) loads no other array library.

The backward functions' errors are in ``test_backward_errors.py``, the
column-vector functions' in ``test_columns_errors.py``, the layer's in
``tests/layer/test_layer_errors.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import rnn_xp
from support import (
    LIBRARY_NAMES,
    as_library,
    assert_close,
    assert_catalogue_complete,
    catalogue_rows,
    check_catalogue_row,
    optional_import,
    random_rnn,
    reference_rnn,
)

torch = optional_import("torch")
jax = optional_import("jax")
if jax is not None:
    jax.config.update("jax_enable_x64", True)

_rng = np.random.default_rng(7)
X = _rng.standard_normal((5, 2, 3))  # (T, B, D)
H0 = np.zeros((2, 4))  # (B, H)
WX = _rng.standard_normal((4, 3))  # (H, D)
WH = _rng.standard_normal((4, 4)) * 0.3  # (H, H)
B = np.zeros(4)  # (H,)


# --- the first cases, one by one ----------------------------------------------

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


# --- the catalogue ------------------------------------------------------------

def _matrix(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(a)


def _fwd(x=X, h0=H0, Wx=WX, Wh=WH, b=B, **options):
    return rnn_xp.rnn_forward(x, h0, Wx, Wh, b, **options)


def _step(x=X[0], prev_h=H0, Wx=WX, Wh=WH, b=B, **options):
    return rnn_xp.rnn_step_forward(x, prev_h, Wx, Wh, b, **options)


def _computes(out):
    assert np.all(np.isfinite(out))


ENTRY_POINTS = {
    "rnn_forward": _fwd,
    "rnn_step_forward": _step,
}

V, T_ = ValueError, TypeError

CASES = {
    "rnn_forward": [
        # wrong ranks
        ({"Wx": np.ones(3)}, V, r"Wx must be 2-D with shape \(H, D\); got shape \(3,\)"),
        ({"Wx": np.float64(1.0)}, V, r"Wx must be 2-D with shape \(H, D\); got shape \(\)"),
        ({"Wh": np.ones((4, 4, 1))}, V, r"Wh must have shape \(H, H\) = \(4, 4\).*got shape \(4, 4, 1\)"),
        ({"x": np.float64(1.0)}, V, r"x must have shape \(T, \*batch, D\) with D = 3.*got shape \(\)"),
        ({"x": np.moveaxis(X, 0, 1), "batch_first": True, "h0": np.zeros((5, 4))},
         V, r"h0 must have shape \(\*batch, H\) = \(2, 4\); got shape \(5, 4\)"),
        ({"x": np.ones(3), "batch_first": True}, V, r"x must have shape \(\*batch, T, D\) with batch_first=True"),
        ({"h0": np.zeros((2, 1, 4))}, V, r"h0 must have shape \(\*batch, H\) = \(2, 4\); got shape \(2, 1, 4\)"),
        ({"h0": np.zeros(4)}, V, r"h0 must have shape \(\*batch, H\) = \(2, 4\); got shape \(4,\)"),
        ({"x": X[:, 0], "h0": H0}, V, r"h0 must have shape \(\*batch, H\) = \(4,\); got shape \(2, 4\)"),
        # each mismatched dimension, Wh not square, bias length
        ({"x": X[..., :2]}, V, r"x must have shape \(T, \*batch, D\) with D = 3.*got shape \(5, 2, 2\)"),
        ({"x": np.moveaxis(X, 0, 1)[..., :2], "batch_first": True},
         V, r"x must have shape \(\*batch, T, D\) with batch_first=True with D = 3.*\(2, 5, 2\)"),
        ({"Wh": np.ones((5, 4))}, V, r"Wh must have shape \(H, H\) = \(4, 4\).*got shape \(5, 4\)"),
        ({"Wh": np.ones((3, 3))}, V, r"Wh must have shape \(H, H\) = \(4, 4\).*got shape \(3, 3\)"),
        ({"Wx": np.ones((4, 2))}, V, r"x must have shape \(T, \*batch, D\) with D = 2"),
        ({"b": np.ones(3)}, V, r"b must have shape \(H,\) = \(4,\).*got shape \(3,\)"),
        ({"b": np.ones((4, 1))}, V, r"b must have shape \(H,\) = \(4,\).*got shape \(4, 1\)"),
        ({"b": np.float64(0.0)}, V, r"b must have shape \(H,\) = \(4,\).*got shape \(\)"),
        ({"x": [X[0], X[1][:, :2]]}, V, r"x\[1\] must have shape \(\*batch, D\) with D = 3.*\(2, 2\)"),
        # dtypes
        ({"h0": H0.astype(np.int32)}, T_, r"h0 must have a real floating dtype.*int32"),
        ({"x": X > 0}, T_, r"x must have a real floating dtype.*bool"),
        ({"Wx": WX.astype(np.complex64)}, T_, r"Wx must have a real floating dtype.*complex64"),
        ({"b": B.astype(np.uint8)}, T_, r"b must have a real floating dtype.*uint8"),
        ({"x": X.astype(">i4")}, T_, r"x must have a real floating dtype.*>i4"),
        ({"x": [X[0], X[1].astype(np.int64)]}, T_, r"x\[1\] must have a real floating dtype.*int64"),
        # Python containers, None, non-arrays
        ({"Wx": WX.tolist()}, T_, r"Wx must be an array; got list"),
        ({"h0": H0.tolist()}, T_, r"h0 must be an array .*; got list"),
        ({"b": 0.0}, T_, r"b must be an array .*; got float"),
        ({"Wh": None}, T_, r"Wh is required; got None"),
        ({"x": [X[0], None]}, T_, r"x must not contain None"),
        ({"Wx": _matrix(WX)}, T_, r"Wx must be an array; got matrix"),
        ({"xp": "numpy"}, T_, r"xp must be an array namespace; got 'numpy'"),
        # lengths
        ({"lengths": [[1, 2]]}, T_, r"lengths must be an integer array or a list of ints"),
        ({"lengths": 3}, T_, r"lengths must be an integer array of shape \(\*batch,\); got int"),
        ({"lengths": [True, 2]}, T_, r"lengths must be an integer array or a list of ints"),
        ({"lengths": [1.0, 2.0]}, T_, r"lengths must be an integer array or a list of ints"),
        ({"lengths": np.array([[1, 2]])}, V, r"lengths must have the batch shape \(\*batch,\) = \(2,\); got shape \(1, 2\)"),
        ({"x": X[:, 0], "h0": None, "lengths": [3]},
         V, r"lengths must have the batch shape \(\*batch,\) = \(\); got shape \(1,\)"),
        ({"lengths": np.array([6, 2], dtype=np.int32)}, V, r"lengths must lie in \[0, T\] = \[0, 5\]; got values from 2 to 6"),
        ({"lengths": np.array([1, 2], dtype=np.uint8)[::-1]}, None, None),  # valid: a view, unsigned ints
        # leak
        ({"leak": float("nan")}, V, r"leak must be in \(0, 1\].*got nan"),
        ({"leak": -0.1}, V, r"leak must be in \(0, 1\].*got -0.1"),
        ({"leak": True}, T_, r"leak must be a real number in \(0, 1\]; got bool"),
        ({"leak": np.array(0.5)}, T_, r"leak must be a real number in \(0, 1\]; got ndarray"),
        ({"leak": None}, T_, r"leak must be a real number in \(0, 1\]; got NoneType"),
        ({"leak": 0.5j}, T_, r"leak must be a real number in \(0, 1\]; got complex"),
        ({"leak": np.float32(0.5)}, None, None),  # valid: a NumPy scalar is a real number
        # nonlinearity and flags
        ({"nonlinearity": None}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got None"),
        ({"nonlinearity": "TANH"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'TANH'"),
        ({"nonlinearity": ""}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got ''"),
        ({"reverse": "yes"}, T_, r"reverse must be True or False; got 'yes'"),
        ({"reverse": np.bool_(True)}, T_, r"reverse must be True or False; got np.True_"),
        ({"return_sequences": 0}, T_, r"return_sequences must be True or False; got 0"),
        ({"batch_first": None}, T_, r"batch_first must be True or False; got None"),
    ],
    "rnn_step_forward": [
        ({"x": np.float64(1.0)}, V, r"x must have shape \(\*batch, D\) with D = 3.*got shape \(\)"),
        ({"Wx": np.ones((4, 3, 1))}, V, r"Wx must be 2-D with shape \(H, D\); got shape \(4, 3, 1\)"),
        ({"Wh": np.ones((4, 3))}, V, r"Wh must have shape \(H, H\) = \(4, 4\).*got shape \(4, 3\)"),
        ({"b": np.ones(5)}, V, r"b must have shape \(H,\) = \(4,\).*got shape \(5,\)"),
        ({"prev_h": np.zeros((3, 4))}, V, r"prev_h must have shape \(\*batch, H\) = \(2, 4\); got shape \(3, 4\)"),
        ({"prev_h": np.zeros((2, 5))}, V, r"prev_h must have shape \(\*batch, H\) = \(2, 4\); got shape \(2, 5\)"),
        ({"x": None}, T_, r"x is required; got None"),
        ({"prev_h": None}, T_, r"prev_h is required; got None"),
        ({"Wx": None}, T_, r"Wx is required; got None"),
        ({"x": X[0].tolist()}, T_, r"x must be an array; got list"),
        ({"prev_h": H0.astype(np.int64)}, T_, r"prev_h must have a real floating dtype.*int64"),
        ({"Wh": WH.astype(np.complex128)}, T_, r"Wh must have a real floating dtype.*complex128"),
        ({"nonlinearity": "gelu"}, V, r"nonlinearity must be one of \['tanh', 'relu', .*\]; got 'gelu'"),
    ],
}


@pytest.mark.parametrize("entry, overrides, exc, match", catalogue_rows(CASES))
def test_catalogue(entry, overrides, exc, match):
    check_catalogue_row(ENTRY_POINTS[entry], overrides, exc, match, _computes)


def test_catalogue_is_large_enough():
    assert_catalogue_complete(CASES, ENTRY_POINTS, errors_at_least=40)


# --- arrays of two libraries -------------------------------------------------

def _libs():
    pairs = []
    if torch is not None:
        pairs.append(("numpy", "torch"))
    if jax is not None:
        pairs.append(("numpy", "jax"))
    if torch is not None and jax is not None:
        pairs.append(("torch", "jax"))
    return pairs


@pytest.mark.parametrize("first, second", _libs())
@pytest.mark.parametrize("which", ["h0", "Wx", "Wh", "b"])
def test_two_libraries(first, second, which):
    args = {"x": X, "h0": H0, "Wx": WX, "Wh": WH, "b": B}
    args = {k: as_library(second if k == which else first, v) for k, v in args.items()}
    match = rf"{which} is from {LIBRARY_NAMES[second]} but x is from {LIBRARY_NAMES[first]}; all arrays must come from one library"
    with pytest.raises(TypeError, match=match):
        rnn_xp.rnn_forward(*args.values())
    with pytest.raises(TypeError, match=r"is from .* but .* is from"):
        rnn_xp.rnn_step_forward(args["x"][0], *(args[k] for k in ("h0", "Wx", "Wh", "b")))


@pytest.mark.parametrize("first, second", _libs() + [(b, a) for a, b in _libs() if a != "numpy"])
def test_lengths_of_another_library(first, second):
    args = [as_library(first, a) for a in (X, H0, WX, WH, B)]
    with pytest.raises(TypeError, match=r"lengths is an array of another library .*pass it in the same library as x"):
        rnn_xp.rnn_forward(*args, lengths=as_library(second, np.array([1, 2])))


def test_numpy_lengths_are_accepted_with_every_backend(backend):
    """NumPy integer arrays (host data, like a list) work as ``lengths`` everywhere."""
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(1), 5, (3,), 2, 4)
    lengths = np.array([5, 0, 2], dtype=np.int32)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths)
    out = rnn_xp.rnn_forward(*(backend.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)), lengths=lengths)
    assert_close(out, expected, backend, "float64")


def test_xp_of_another_library():
    if torch is None:
        pytest.skip("torch not installed")
    with pytest.raises(TypeError, match=r"x is from numpy but xp is torch"):
        rnn_xp.rnn_forward(X, H0, WX, WH, B, xp=torch)


# --- float16: computed where the backend has it ------------------------------

FLOAT16 = {  # does the backend have float16 arrays (and so compute in float16)?
    "numpy": True, "numpy_readonly": True, "dask": True, "torch": True, "torch_cuda": True, "jax": True, "cupy": True,
    "array_api_strict": False,  # the strict namespace has no float16 dtype at all
}


def test_float16(backend):
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(2), 6, (3,), 4, 5)
    if not FLOAT16[backend.name]:
        assert not hasattr(backend.xp, "float16")
        # a float16 array can only come from another library: a clear TypeError
        with pytest.raises(TypeError, match=r"h0 is from array_api_strict but x is from numpy"):
            rnn_xp.rnn_forward(x.astype(np.float16), *(backend.asarray(a, "float32") for a in (h0, Wx, Wh, b)))
        return
    args = [backend.asarray(a, "float16") for a in (x, h0, Wx, Wh, b)]
    for nonlinearity in ("tanh", "relu"):
        expected, _ = reference_rnn(x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=[6, 2, 0], leak=0.5)
        out = rnn_xp.rnn_forward(*args, nonlinearity=nonlinearity, lengths=[6, 2, 0], leak=0.5)
        assert_close(out, expected, backend, "float16", rtol=2e-2, atol=2e-2)
    step = rnn_xp.rnn_step_forward(args[0][0, ...], *args[1:])
    assert_close(step, reference_rnn(x[:1], h0, Wx, Wh, b)[0][0], backend, "float16", rtol=2e-2, atol=2e-2)
    # float16 with float32 promotes to float32
    mixed = rnn_xp.rnn_forward(args[0], *(backend.asarray(a, "float32") for a in (h0, Wx, Wh, b)))
    assert mixed.dtype == backend.dtype("float32")


# --- odd but valid inputs ----------------------------------------------------

def _numpy_views(a):
    """The same values as ``a`` in several memory layouts."""
    return {
        "fortran": np.asfortranarray(a),
        "negative-stride": np.flip(np.flip(a, axis=0).copy(), axis=0),
        "transposed": np.ascontiguousarray(a.T).T,
        "strided": np.repeat(a, 2, axis=-1)[..., ::2],
        "big-endian": a.astype(a.dtype.newbyteorder(">")),
    }


@pytest.mark.parametrize("layout", ["fortran", "negative-stride", "transposed", "strided", "big-endian"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_layouts(layout, dtype):
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(3), 5, (2, 3), 3, 4)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    args = [_numpy_views(a.astype(dtype))[layout] for a in (x, h0, Wx, Wh, b)]
    before = [a.copy() for a in args]
    out = rnn_xp.rnn_forward(*args)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_allclose(out, expected, rtol=2e-4 if dtype == "float32" else 1e-10, atol=2e-5 if dtype == "float32" else 1e-12)
    for a, a0 in zip(args, before):
        np.testing.assert_array_equal(a, a0)
    step = rnn_xp.rnn_step_forward(args[0][0], *args[1:])
    np.testing.assert_allclose(step, expected[0], rtol=2e-4, atol=2e-5)


def test_big_endian_mixed_with_native():
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(4), 4, (2,), 3, 4)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    out = rnn_xp.rnn_forward(x.astype(">f4"), h0, Wx.astype(">f8"), Wh, b.astype("<f4"))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=2e-7)


def test_torch_non_contiguous_views():
    if torch is None:
        pytest.skip("torch not installed")
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(5), 5, (2, 3), 3, 4)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    xt = torch.asarray(np.ascontiguousarray(np.moveaxis(x, 0, 2))).permute(2, 0, 1, 3)  # (T, 2, 3, D), strided
    Wht = torch.asarray(np.ascontiguousarray(Wh.T)).T
    flipped = torch.asarray(x[::-1].copy()).flip(0)  # torch copies on flip (no negative strides)
    assert not xt.is_contiguous() and not Wht.is_contiguous()
    for xin in (xt, flipped):
        out = rnn_xp.rnn_forward(xin, torch.asarray(h0), torch.asarray(Wx), Wht, torch.asarray(b))
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    out = rnn_xp.rnn_forward(torch.asarray(x).transpose(0, 2).transpose(0, 2)[:, :, ::2],
                             torch.asarray(h0)[:, ::2], torch.asarray(Wx), Wht, torch.asarray(b))
    np.testing.assert_allclose(out.numpy(), expected[:, :, ::2], rtol=1e-10, atol=1e-12)


def test_torch_requires_grad():
    """Tensors that require grad: the result stays in torch's autograd graph.

    rnn_xp uses only differentiable torch operations, so ``backward()`` gives
    the gradients real ``torch.nn.RNN`` gives; under ``torch.no_grad()`` the
    result does not require grad. Inputs and their ``.grad`` are untouched
    by the forward call.
    """
    if torch is None:
        pytest.skip("torch not installed")
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(6), 5, (2,), 3, 4)
    xt, h0t, Wxt, Wht, bt = (torch.asarray(a).requires_grad_() for a in (x, h0, Wx, Wh, b))
    out = rnn_xp.rnn_forward(xt, h0t, Wxt, Wht, bt)
    assert out.requires_grad and all(t.grad is None for t in (xt, Wxt))
    np.testing.assert_allclose(out.detach().numpy(), reference_rnn(x, h0, Wx, Wh, b)[0], rtol=1e-10, atol=1e-12)
    (out * torch.asarray(np.arange(out.numel()).reshape(out.shape) % 3 - 1.0)).sum().backward()

    rnn = torch.nn.RNN(3, 4, nonlinearity="tanh", dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.asarray(Wx))
        rnn.weight_hh_l0.copy_(torch.asarray(Wh))
        rnn.bias_ih_l0.copy_(torch.asarray(b))
        rnn.bias_hh_l0.zero_()
    xr = torch.asarray(x).requires_grad_()
    ref, _ = rnn(xr, torch.asarray(h0)[None])
    (ref * torch.asarray(np.arange(ref.numel()).reshape(ref.shape) % 3 - 1.0)).sum().backward()
    for ours, theirs in ((Wxt, rnn.weight_ih_l0), (Wht, rnn.weight_hh_l0), (bt, rnn.bias_ih_l0), (xt, xr)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)

    with torch.no_grad():
        assert not rnn_xp.rnn_forward(xt, h0t, Wxt, Wht, bt).requires_grad
    one = rnn_xp.rnn_step_forward(xt[0], h0t, Wxt, Wht, bt)
    assert one.requires_grad


# --- zero-sized dimensions, on every backend ---------------------------------

@pytest.mark.parametrize("T, batch, D, H", [(4, (0,), 3, 5), (4, (2, 0), 3, 5), (4, (2,), 0, 5),
                                            (4, (2,), 3, 0), (0, (2,), 0, 0)])
def test_zero_sized(backend, dtype, T, batch, D, H):
    x = np.random.default_rng(8).standard_normal((T, *batch, D))
    Wx = np.full((H, D), 0.1)
    Wh = np.eye(H) * 0.5
    b = np.full(H, 0.2)
    h0 = np.full((*batch, H), 0.3)
    # the expected values, by hand: the input term is zero when D = 0
    expected = np.zeros((T, *batch, H))
    h = h0
    for t in range(T):
        h = np.tanh(x[t] @ Wx.T + h @ Wh.T + b)
        expected[t] = h
    args = [backend.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    assert_close(rnn_xp.rnn_forward(*args), expected, backend, dtype)
    assert_close(rnn_xp.rnn_forward(*args, return_sequences=False), h, backend, dtype)
    if T:
        assert_close(rnn_xp.rnn_step_forward(args[0][0, ...], *args[1:]), expected[0], backend, dtype)


def test_zero_batch_with_lengths(backend):
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(9), 3, (0,), 2, 4)
    args = [backend.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)]
    out = rnn_xp.rnn_forward(*args, lengths=[], reverse=True)
    assert_close(out, np.zeros((3, 0, 4)), backend, "float64")
    with pytest.raises(ValueError, match=r"lengths must have the batch shape \(\*batch,\) = \(0,\); got shape \(1,\)"):
        rnn_xp.rnn_forward(*args, lengths=[1])


def test_list_of_lists_for_every_backend(backend):
    """Python lists are never converted: the error says which argument to convert."""
    args = [backend.asarray(a, "float64") for a in (X, H0, WX, WH, B)]
    with pytest.raises(TypeError, match=r"x\[0\] must be an array"):
        rnn_xp.rnn_forward(X.tolist(), *args[1:])
    with pytest.raises(TypeError, match=r"Wh must be an array; got list"):
        rnn_xp.rnn_forward(args[0], args[1], args[2], WH.tolist())


# --- lengths before any cast ---------------------------------------------------

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


# --- masked arrays -------------------------------------------------------------

@pytest.mark.parametrize("where", ["x", "h0", "Wh", "lengths"])  # the layer's: tests/layer/test_layer_errors.py
def test_masked_arrays_are_refused(where):
    x = np.ones((2, 1, 1))
    args = {"x": x, "h0": np.zeros((1, 1)), "Wx": np.ones((1, 1)), "Wh": np.zeros((1, 1))}
    masked = np.ma.array(np.ones((2, 1, 1)), mask=[[[0]], [[1]]])
    if where == "lengths":
        lengths = np.ma.array([2], mask=[True])
        call, name = (lambda: rnn_xp.rnn_forward(*args.values(), lengths=lengths)), "lengths"
    else:
        args[where] = np.ma.array(args[where], mask=np.zeros(args[where].shape, bool))
        if where == "x":
            args["x"] = masked
        call, name = (lambda: rnn_xp.rnn_forward(*args.values())), where
    with pytest.raises(TypeError, match=re.escape(name) + r" is a NumPy masked array.*\.filled\(value\)"):
        call()


def test_what_is_remembered_by_type_still_refuses():
    """NumPy's ndarray namespace and the dtypes found floating are remembered after the first call: a masked
    array, an integer array and a subclass are still each checked in full after many plain calls."""
    from rnn_xp import _compat

    x, Wx = np.ones((2, 1, 1), np.float32), np.ones((1, 1), np.float32)
    h0, Wh = np.zeros((1, 1), np.float32), np.full((1, 1), 0.5, np.float32)
    want = rnn_xp.rnn_forward(x, h0, Wx, Wh)
    for _ in range(3):
        np.testing.assert_array_equal(rnn_xp.rnn_forward(x, h0, Wx, Wh), want)
    assert _compat.known_array(Wh)
    masked = np.ma.array(Wh, mask=np.zeros((1, 1), bool))
    assert not _compat.known_array(masked)
    with pytest.raises(TypeError, match=r"Wh is a NumPy masked array"):
        rnn_xp.rnn_forward(x, h0, Wx, masked)
    with pytest.raises(TypeError, match=r"Wh must have a real floating dtype .*got int32"):
        rnn_xp.rnn_forward(x, h0, Wx, np.zeros((1, 1), np.int32))
    with pytest.raises(TypeError, match=r"h0 must be an array .*got list"):
        rnn_xp.rnn_forward(x, [[0.0]], Wx, Wh)

    class Sub(np.ndarray):
        pass

    assert not _compat.known_array(Wh.view(Sub))  # the exact type only
    assert _compat.device_of(Wh) == _compat.device(Wh)


@pytest.mark.parametrize("fn", ["rnn", "gru"])
def test_a_ragged_mask_list_names_mask_and_the_shape_it_needs(fn):
    """Rows of different lengths: a ValueError naming ``mask`` and ``(*batch, T)`` (NumPy's own message named nothing)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 1))  # T = 3, B = 2
    ragged = [[True, True, True], [True, False]]
    if fn == "rnn":
        call = lambda: rnn_xp.rnn_forward(x, None, np.ones((2, 1)), np.eye(2), mask=ragged)  # noqa: E731
    else:
        call = lambda: rnn_xp.gru_forward(x, None, np.ones((6, 1)), np.ones((6, 2)), mask=ragged)  # noqa: E731
    with pytest.raises(ValueError, match=re.escape("mask must be a rectangular nested list of bools of shape "
                                                   "(*batch, T) = (2, 3); got rows of different lengths")):
        call()


# --- importing ------------------------------------------------------------------

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
