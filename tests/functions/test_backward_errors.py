"""Bad input to the backward functions (``rnn_backward``, ``rnn_step_backward``): a clear ValueError or TypeError naming the argument.

Each upstream gradient, saved state and weight of the wrong shape, and each
option out of its range, is a ``ValueError`` naming the argument and the shape
it needs; a wrong dtype, an array of another library, a missing ``h_seq`` and
a flag that is not a bool are a ``TypeError``. The layer's ``RNN.backward`` is in
``tests/layer/test_layer_errors.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnn_xp
from support import random_backward_case, reference_rnn

torch = pytest.importorskip("torch")


def _args(rng, T=4, batch=(2,), D=3, H=5):
    x, h0, Wx, Wh, b, dh, dh_n = random_backward_case(rng, T, batch, D, H)
    h_seq, _ = reference_rnn(x, h0, Wx, Wh, b)
    return dict(dh=dh, x=x, h0=h0, Wx=Wx, Wh=Wh, b=b, h_seq=h_seq), dh_n


def _call(a, **kw):
    return rnn_xp.rnn_backward(a["dh"], a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], a["h_seq"], **kw)


def test_errors_shapes(rng):
    a, dh_n = _args(rng)
    with pytest.raises(ValueError, match=r"dh must have shape .*\(4, 2, 5\).*got shape \(4, 2, 4\)"):
        _call({**a, "dh": a["dh"][..., :4]})
    with pytest.raises(ValueError, match=r"h_seq must have shape .*\(4, 2, 5\).*got shape \(3, 2, 5\)"):
        _call({**a, "h_seq": a["h_seq"][:3]})
    with pytest.raises(ValueError, match=r"dh_n must have shape .*\(2, 5\).*got shape \(5,\)"):
        _call(a, dh_n=dh_n[0])
    with pytest.raises(ValueError, match=r"h0 must have shape"):
        _call({**a, "h0": a["h0"][:1]})
    with pytest.raises(ValueError, match=r"Wh must have shape"):
        _call({**a, "Wh": a["Wh"][:, :2]})
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        _call(a, lengths=[1, 7])
    with pytest.raises(ValueError, match="leak"):
        _call(a, leak=0.0)
    with pytest.raises(ValueError, match="nonlinearity"):
        _call(a, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"dnext_h must have shape .*\(2, 5\)"):
        rnn_xp.rnn_step_backward(a["dh"][0, :1], a["x"][0], a["h0"], a["Wx"], a["Wh"], a["h_seq"][0])


def test_errors_types(rng):
    a, _ = _args(rng)
    with pytest.raises(TypeError, match="dh must have a real floating dtype"):
        _call({**a, "dh": a["dh"].astype(np.int64)})
    with pytest.raises(TypeError, match="h_seq is from .*torch.* but x is from .*numpy"):
        _call({**a, "h_seq": torch.from_numpy(a["h_seq"])})
    with pytest.raises(TypeError, match="h_seq is required"):
        _call({**a, "h_seq": None})
    with pytest.raises(TypeError, match="reverse must be True or False"):
        _call(a, reverse=1)
