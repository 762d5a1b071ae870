"""Bad input to the column-vector functions (``rnn_xp.columns``): a clear ValueError or TypeError naming the argument.

The catalogue (as in ``test_forward_errors.py``): a caller per entry point
that fills in valid defaults, and a table of cases ``(overrides, exception,
match)`` whose overrides make one argument bad; the error must name the
argument and the column layout it needs (``(D, N)``, ``(H, N)``, ``(T, D, N)``).
Then the first cases, written out one by one, and messages that name the
argument the caller passed (``x_seq``, ``x_seq[0]``), not an internal one.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnn_xp import columns
from support import assert_catalogue_complete, catalogue_rows, check_catalogue_row

_rng = np.random.default_rng(7)
WX = _rng.standard_normal((4, 3))  # (H, D)
WH = _rng.standard_normal((4, 4)) * 0.3  # (H, H)
B = np.zeros(4)  # (H,)
XC = _rng.standard_normal((3, 2))  # (D, N) columns
HC = np.zeros((4, 2))  # (H, N)
XSEQ = _rng.standard_normal((5, 3, 2))  # (T, D, N)


def _col_step(x=XC, prev_h=HC, Wx=WX, Wh=WH, b=B[:, None], **options):
    return columns.rnn_step_forward(x, prev_h, Wx, Wh, b, **options)


def _col_fwd(x_seq=XSEQ, h0=HC, Wx=WX, Wh=WH, b=B[:, None], **options):
    return columns.rnn_forward(x_seq, h0, Wx, Wh, b, **options)


def _computes(out):
    assert np.all(np.isfinite(out))


ENTRY_POINTS = {
    "columns.rnn_step_forward": _col_step,
    "columns.rnn_forward": _col_fwd,
}

V, T_ = ValueError, TypeError

CASES = {
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


@pytest.mark.parametrize("entry, overrides, exc, match", catalogue_rows(CASES))
def test_catalogue(entry, overrides, exc, match):
    check_catalogue_row(ENTRY_POINTS[entry], overrides, exc, match, _computes)


def test_catalogue_is_large_enough():
    assert_catalogue_complete(CASES, ENTRY_POINTS, errors_at_least=20)


def test_columns_errors():
    with pytest.raises(ValueError, match=r"x_seq must have shape \(T, D, N\)"):
        columns.rnn_forward(np.ones((3, 1)), None, WX, WH)
    with pytest.raises(ValueError, match=r"b must have shape \(H, 1\) or \(H,\) with H = 4"):
        columns.rnn_step_forward(np.ones((3, 1)), np.zeros((4, 1)), WX, WH, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"prev_h must be 2-D columns \(H, N\)"):
        columns.rnn_step_forward(np.ones((3, 1)), np.zeros(4), WX, WH)


def test_messages_name_the_argument_given():
    with pytest.raises(TypeError, match="^x_seq must have a real floating dtype"):
        columns.rnn_forward(np.ones((3, 2, 1), int), np.zeros((3, 1)), np.ones((3, 2)), np.eye(3))
    with pytest.raises(TypeError, match=r"^x_seq\[0\] must have a real floating dtype"):
        columns.rnn_forward([np.ones((2, 1), int)], np.zeros((3, 1)), np.ones((3, 2)), np.eye(3))
