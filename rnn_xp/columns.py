"""The column-vector convention of the CS231n-style notebook.

States and inputs are columns: ``x`` is ``(D, N)``, ``prev_h`` ``(H, N)``,
``b`` ``(H, 1)`` or ``(H,)``, and one step is::

    next_h = tanh(Wx @ x + Wh @ prev_h + b)       # (H, N)

This is the row convention of :mod:`rnn_xp.forward` transposed, so these
functions only check shapes, transpose, and call the core.
"""

from __future__ import annotations

from . import forward as _core
from ._checks import check_real_arrays, shape_str
from ._compat import array_namespace

__all__ = ["rnn_forward", "rnn_step_forward"]


def rnn_step_forward(x, prev_h, Wx, Wh, b=None, *, nonlinearity="tanh", xp=None):
    """One RNN step on column vectors.

    Parameters
    ----------
    x : array
        Input columns, ``(D, N)``.
    prev_h : array
        Previous state columns, ``(H, N)``.
    Wx, Wh : array
        Weights ``(H, D)`` and ``(H, H)``.
    b : array or None
        Bias ``(H, 1)`` or ``(H,)``.
    nonlinearity : {"tanh", "relu"}, optional
    xp : namespace, optional

    Returns
    -------
    next_h : array
        ``(H, N)``.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp.columns import rnn_step_forward
    >>> rnn_step_forward(np.ones((3, 1)), np.zeros((2, 1)), np.full((2, 3), 0.1),
    ...                  np.zeros((2, 2)), np.zeros((2, 1))).round(4)
    array([[0.2913],
           [0.2913]])
    """
    xp = array_namespace({"x": x, "prev_h": prev_h, "Wx": Wx, "Wh": Wh, "b": b}, xp=xp)
    _check_column("x", x, Wx, "D")
    _check_column("prev_h", prev_h, Wx, "H", x.shape[1])
    h_rows = _core.rnn_step_forward(
        x.T, prev_h.T, Wx, Wh, _bias_row(xp, b, Wx), nonlinearity=nonlinearity, xp=xp
    )  # (N, H)
    return h_rows.T  # (H, N)


def rnn_forward(x_seq, h0, Wx, Wh, b=None, *, nonlinearity="tanh", xp=None):
    """Run an RNN over a sequence of column vectors.

    Parameters
    ----------
    x_seq : array or list of arrays
        ``(T, D, N)``, or a list of T arrays ``(D, N)``.
    h0 : array or None
        Initial state ``(H, N)``; ``None`` means zeros.
    Wx, Wh : array
        Weights ``(H, D)`` and ``(H, H)``.
    b : array or None
        Bias ``(H, 1)`` or ``(H,)``.
    nonlinearity : {"tanh", "relu"}, optional
    xp : namespace, optional

    Returns
    -------
    h_seq : array
        ``(T, H, N)``.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp.columns import rnn_forward
    >>> x_seq = [np.ones((3, 1)) for _ in range(4)]
    >>> rnn_forward(x_seq, np.zeros((2, 1)), np.full((2, 3), 0.1), np.zeros((2, 2))).shape
    (4, 2, 1)
    """
    named = {"h0": h0, "Wx": Wx, "Wh": Wh, "b": b}
    if isinstance(x_seq, (list, tuple)):
        named.update({f"x_seq[{i}]": s for i, s in enumerate(x_seq)})
        xp = array_namespace(named, xp=xp)
        for i, s in enumerate(x_seq):
            _check_column(f"x_seq[{i}]", s, Wx, "D", None if i == 0 else x_seq[0].shape[1])
        check_real_arrays({f"x_seq[{i}]": s for i, s in enumerate(x_seq)})  # named as given, not x[i]
        if not x_seq and h0 is None:
            raise ValueError("x_seq is an empty list and h0 is None: pass h0 (H, N) to give N")
        x_rows = [s.T for s in x_seq]  # T arrays (N, D)
    else:
        xp = array_namespace({"x_seq": x_seq, **named}, xp=xp)
        if x_seq is None:
            raise TypeError("x_seq is required: an array (T, D, N) or a list of T arrays (D, N); got None")
        if x_seq.ndim != 3:
            raise ValueError(f"x_seq must have shape (T, D, N); got {shape_str(x_seq.shape)}")
        check_real_arrays({"x_seq": x_seq})  # named as given: the core would call it x
        if Wx is not None and Wx.ndim == 2 and x_seq.shape[1] != Wx.shape[1]:
            raise ValueError(
                f"x_seq must have shape (T, D, N) with D = {Wx.shape[1]} (from Wx (H, D) = "
                f"{shape_str(Wx.shape)}); got shape {shape_str(x_seq.shape)}"
            )
        x_rows = xp.permute_dims(x_seq, (0, 2, 1))  # (T, N, D)
    if h0 is not None:
        steps = isinstance(x_seq, (list, tuple))
        N = (x_seq[0].shape[1] if x_seq else None) if steps else x_seq.shape[2]
        _check_column("h0", h0, Wx, "H", N)
        h0 = h0.T  # (N, H)
    h_rows = _core.rnn_forward(
        x_rows, h0, Wx, Wh, _bias_row(xp, b, Wx), nonlinearity=nonlinearity, xp=xp
    )  # (T, N, H)
    return xp.permute_dims(h_rows, (0, 2, 1))  # (T, H, N)


def _check_column(name, arr, Wx, rows, N=None):
    """``arr`` must be ``(rows, N)`` columns, ``rows`` ("D" or "H") read from ``Wx (H, D)``."""
    if arr is None:
        raise TypeError(f"{name} is required: an array ({rows}, N); got None")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D columns ({rows}, N); got shape {shape_str(arr.shape)}")
    if Wx is None or Wx.ndim != 2:
        return  # the core reports a missing or malformed Wx
    need = (Wx.shape[0] if rows == "H" else Wx.shape[1], arr.shape[1] if N is None else N)
    if tuple(arr.shape) != need:
        raise ValueError(
            f"{name} must have shape ({rows}, N) = {shape_str(need)} (from Wx (H, D) = "
            f"{shape_str(Wx.shape)}); got shape {shape_str(arr.shape)}"
        )


def _bias_row(xp, b, Wx):
    """``b`` as ``(H,)``: accepts the column ``(H, 1)`` or the row ``(H,)``."""
    if b is None or b.ndim == 1:
        return b
    if b.ndim == 2 and b.shape[1] == 1 and (Wx is None or Wx.ndim != 2 or b.shape[0] == Wx.shape[0]):
        return xp.reshape(b, (b.shape[0],))
    H = Wx.shape[0] if Wx is not None and Wx.ndim == 2 else "H"
    raise ValueError(f"b must have shape (H, 1) or (H,) with H = {H}; got shape {shape_str(b.shape)}")
