"""The bad-input catalogue: every public entry point, every way to get it wrong.

Each entry point has a caller that fills in valid defaults, and a table of
cases ``(overrides, exception, match)``: the overrides make one argument bad,
and the error must be a ``ValueError`` (shape, value) or ``TypeError`` (dtype,
type, library) whose message names the argument and what it needs. To cover
a new entry point, add a caller to ``ENTRY_POINTS`` and its rows to ``CASES``.

Input that is odd but valid (float16, big-endian, views, zero-sized
dimensions, tensors that require grad) is computed and checked against the
float64 reference here too. ``tests/functions/test_forward_errors.py`` holds the first
cases for ``rnn_forward``; this file does not repeat them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import rnn_xp
from rnn_xp import columns
from support import as_library, assert_close, optional_import, random_rnn, reference_rnn

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
XC = _rng.standard_normal((3, 2))  # (D, N) columns
HC = np.zeros((4, 2))  # (H, N)
XSEQ = _rng.standard_normal((5, 3, 2))  # (T, D, N)


def _matrix(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(a)


def _fwd(x=X, h0=H0, Wx=WX, Wh=WH, b=B, **options):
    return rnn_xp.rnn_forward(x, h0, Wx, Wh, b, **options)


def _step(x=X[0], prev_h=H0, Wx=WX, Wh=WH, b=B, **options):
    return rnn_xp.rnn_step_forward(x, prev_h, Wx, Wh, b, **options)


def _col_step(x=XC, prev_h=HC, Wx=WX, Wh=WH, b=B[:, None], **options):
    return columns.rnn_step_forward(x, prev_h, Wx, Wh, b, **options)


def _col_fwd(x_seq=XSEQ, h0=HC, Wx=WX, Wh=WH, b=B[:, None], **options):
    return columns.rnn_forward(x_seq, h0, Wx, Wh, b, **options)


ENTRY_POINTS = {
    "rnn_forward": _fwd,
    "rnn_step_forward": _step,
    "columns.rnn_step_forward": _col_step,
    "columns.rnn_forward": _col_fwd,
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
    "columns.rnn_step_forward": [
        ({"x": None}, T_, r"x is required: an array \(D, N\); got None"),
        ({"prev_h": None}, T_, r"prev_h is required: an array \(H, N\); got None"),
        ({"x": np.ones((3, 2, 1))}, V, r"x must be 2-D columns \(D, N\); got shape \(3, 2, 1\)"),
        ({"x": np.ones((5, 2))}, V, r"x must have shape \(D, N\) = \(3, 2\).*got shape \(5, 2\)"),
        ({"prev_h": np.zeros((4, 3))}, V, r"prev_h must have shape \(H, N\) = \(4, 2\).*got shape \(4, 3\)"),
        ({"prev_h": np.zeros((2, 4))}, V, r"prev_h must have shape \(H, N\) = \(4, 2\).*got shape \(2, 4\)"),
        ({"b": np.zeros((5, 1))}, V, r"b must have shape \(H, 1\) or \(H,\) with H = 4; got shape \(5, 1\)"),
        ({"b": np.zeros((1, 4))}, V, r"b must have shape \(H, 1\) or \(H,\) with H = 4; got shape \(1, 4\)"),
        ({"Wh": np.zeros((4, 5))}, V, r"Wh must have shape \(H, H\) = \(4, 4\).*got shape \(4, 5\)"),
        ({"Wx": None}, T_, r"Wx is required; got None"),
        ({"x": np.ones((3, 2), dtype=int)}, T_, r"x must have a real floating dtype.*int64"),
        ({"x": XC.tolist()}, T_, r"x must be an array .*; got list"),
        ({"nonlinearity": "gelu"}, V, r"nonlinearity must be one of"),
    ],
    "columns.rnn_forward": [
        ({"x_seq": None}, T_, r"x_seq is required: an array \(T, D, N\) or a list of T arrays \(D, N\); got None"),
        ({"x_seq": XSEQ.tolist()}, T_, r"x_seq\[0\] must be an array .*; got list"),
        ({"x_seq": [np.ones(3)]}, V, r"x_seq\[0\] must be 2-D columns \(D, N\); got shape \(3,\)"),
        ({"x_seq": np.ones((5, 2, 2))}, V, r"x_seq must have shape \(T, D, N\) with D = 3.*got shape \(5, 2, 2\)"),
        ({"x_seq": [XC, np.ones((5, 2))]}, V, r"x_seq\[1\] must have shape \(D, N\) = \(3, 2\).*got shape \(5, 2\)"),
        ({"x_seq": [XC, np.ones((3, 1))]}, V, r"x_seq\[1\] must have shape \(D, N\) = \(3, 2\).*got shape \(3, 1\)"),
        ({"h0": np.zeros((4, 3))}, V, r"h0 must have shape \(H, N\) = \(4, 2\).*got shape \(4, 3\)"),
        ({"h0": np.zeros((5, 2))}, V, r"h0 must have shape \(H, N\) = \(4, 2\).*got shape \(5, 2\)"),
        ({"x_seq": [], "h0": None}, V, r"x_seq is an empty list and h0 is None: pass h0 \(H, N\)"),
        ({"b": np.zeros((4, 1, 1))}, V, r"b must have shape \(H, 1\) or \(H,\) with H = 4; got shape \(4, 1, 1\)"),
        ({"Wh": None}, T_, r"Wh is required; got None"),
        ({"x_seq": XSEQ > 0}, T_, r"x_seq must have a real floating dtype.*bool"),
    ],
}

_ROWS = [
    pytest.param(entry, overrides, exc, match, id=f"{entry}-{i}")
    for entry, rows in CASES.items()
    for i, (overrides, exc, match) in enumerate(rows)
]


@pytest.mark.parametrize("entry, overrides, exc, match", _ROWS)
def test_catalogue(entry, overrides, exc, match):
    call = ENTRY_POINTS[entry]
    if exc is None:  # a valid input next to the bad ones: it must compute
        out = call(**overrides)
        assert np.all(np.isfinite(out))
        return
    with pytest.raises(exc, match=match):
        call(**overrides)


def test_catalogue_is_large_enough():
    errors = sum(1 for rows in CASES.values() for row in rows if row[1] is not None)
    assert errors >= 40, errors
    assert set(CASES) == set(ENTRY_POINTS)


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


_LIB_NAME = {"numpy": "numpy", "torch": "torch", "jax": "jax.numpy"}


@pytest.mark.parametrize("first, second", _libs())
@pytest.mark.parametrize("which", ["h0", "Wx", "Wh", "b"])
def test_two_libraries(first, second, which):
    args = {"x": X, "h0": H0, "Wx": WX, "Wh": WH, "b": B}
    args = {k: as_library(second if k == which else first, v) for k, v in args.items()}
    match = rf"{which} is from {_LIB_NAME[second]} but x is from {_LIB_NAME[first]}; all arrays must come from one library"
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


# --- the command line --------------------------------------------------------

@pytest.mark.parametrize(
    "argv, match",
    [
        (["demo", "--bogus"], r"unrecognized arguments: --bogus"),
        (["demo", "--backend", "tensorflow"], r"argument --backend: invalid choice: 'tensorflow' \(choose from 'all', 'numpy'"),
        (["demo", "--backend"], r"argument --backend: expected one argument"),
        (["frobnicate"], r"argument command: invalid choice: 'frobnicate'"),
        ([], r"the following arguments are required: command"),
        (["demo", "--seed", "abc"], r"argument --seed: must be a non-negative integer; got 'abc'"),
        (["demo", "--seed", "-1"], r"argument --seed: must be a non-negative integer; got '-1'"),
    ],
)
def test_cli_usage_errors(argv, match):
    proc = subprocess.run([sys.executable, "-m", "rnn_xp", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("python -m rnn_xp")
    assert re.search(match, lines[0]), lines[0]
