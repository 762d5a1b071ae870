"""The backward pass of an Elman RNN (backpropagation through time), written against the Array API.

Forward, one step (row convention, ``a`` the leak rate, 1.0 for a plain RNN)::

    z_t = x_t @ Wx.T + h_{t-1} @ Wh.T + b          # (*batch, H)
    h_t = (1 - a) * h_{t-1} + a * f(z_t)           # (*batch, H)

Backward, with ``g_t = dL/dh_t`` the gradient reaching the state ``h_t``
(from the output at step t and from step t+1)::

    dz_t      = g_t * a * f'(z_t)                   # (*batch, H)
    dx_t      = dz_t @ Wx                           # (*batch, D)
    g_{t-1}  += dz_t @ Wh + (1 - a) * g_t           # (*batch, H)
    dWx      += dz_t.T @ x_t,  dWh += dz_t.T @ h_{t-1},  db += sum(dz_t)

Only the line for ``g_{t-1}`` depends on the step before it, so it is the
only loop. ``f'(z_t)`` is read off the forward's output: ``f(z_t)`` is
``h_t`` itself when ``a = 1`` and ``(h_t - (1 - a) h_{t-1}) / a`` otherwise,
and ``_activations.derivative`` turns it into ``f'``. The states
``h_{t-1}`` come from ``h_seq`` shifted by one step, so nothing of the
forward is run again. Once every ``dz_t`` is known, ``dx``, ``dWx``,
``dWh`` and ``db`` are each one product over all steps and batch entries.

With ``lengths``, a sequence's carried state is frozen past its length (the
output there is zero): those steps take no gradient from ``dh`` and pass
the carried gradient through unchanged, so ``dh0`` of a length-0 sequence
is ``dh_n``.

With an activation other than tanh and relu, or with ``clip``, ``f'(z_t)``
cannot be read off ``h_t``: the portable loop recomputes ``z_t`` from
``x``, the states and ``b`` (one product over all steps) and takes ``f'``
there, zero where ``clip`` cut ``z_t``. With a Keras-style ``mask`` a masked
step passes the state's gradient through and sends its output's gradient
to the previous output (see ``kernels.portable``).
"""

from __future__ import annotations

from typing import NamedTuple

from ._activations import check_activation, check_clip, derivative, derivative_at, is_plain
from ._checks import (
    cast,
    check_bool,
    check_features,
    check_float_dtypes,
    check_same_device,
    check_state,
    check_weights,
    require,
    time_first,
)
from ._compat import array_namespace
from ._prepare import pair, prepare
from .cells import ElmanCell, ElmanWeights, GRUCell, GRUWeights, LSTMCell, LSTMWeights
from .kernels import backward, own_precision

__all__ = [
    "GRUGrads",
    "LSTMGrads",
    "RNNGrads",
    "gru_backward",
    "lstm_backward",
    "rnn_backward",
    "rnn_step_backward",
]


class RNNGrads(NamedTuple):
    """Gradients of a loss with respect to every input of ``rnn_forward``.

    Attributes
    ----------
    dx : array or list of arrays
        Same shape and layout as ``x`` (a list when ``x`` was a list).
    dh0 : array
        ``(*batch, H)``; returned also when ``h0`` was ``None`` (zeros).
    dWx, dWh : array
        ``(H, D)`` and ``(H, H)``.
    db : array or None
        ``(H,)``, or ``None`` when ``b`` was ``None``.
    """

    dx: object
    dh0: object
    dWx: object
    dWh: object
    db: object


def rnn_step_backward(dnext_h, x, prev_h, Wx, Wh, next_h, *, nonlinearity="tanh",
                      activation_alpha=None, activation_beta=None, clip=None, b=None, xp=None):
    """Backward of one plain step ``next_h = f(x @ Wx.T + prev_h @ Wh.T + b)``.

    Parameters
    ----------
    dnext_h : array
        Upstream gradient of ``next_h``, ``(*batch, H)``.
    x : array
        Input of the step, ``(*batch, D)``.
    prev_h : array
        State the step started from, ``(*batch, H)``.
    Wx, Wh : array
        Weights ``(H, D)`` and ``(H, H)``.
    next_h : array
        Output of the step (from ``rnn_step_forward``), ``(*batch, H)``.
    nonlinearity : str, optional
        The activation ``f`` used in the forward step (any of
        ``rnn_step_forward``'s).
    activation_alpha, activation_beta, clip : optional
        The forward step's activation parameters and clip.
    b : array, optional
        The forward step's bias ``(H,)``. Only read with an activation other
        than tanh and relu, or with ``clip``: ``f'`` is then taken at the
        recomputed pre-activation, which needs it (pass it whenever the
        forward step had one).
    xp : namespace, optional
        Array namespace; inferred from the arrays when omitted.

    Returns
    -------
    dx : array
        ``(*batch, D)``.
    dprev_h : array
        ``(*batch, H)``.
    dWx, dWh, db : array
        ``(H, D)``, ``(H, H)`` and ``(H,)``, summed over the batch.

    Raises
    ------
    ValueError
        A shape does not match, or ``nonlinearity`` is unknown.
    TypeError
        An input is not a real floating array, or arrays come from two libraries.

    Notes
    -----
    ``dz = dnext_h * f'(z)`` with ``f'`` read off ``next_h`` (tanh, relu)
    or taken at ``z = x @ Wx.T + prev_h @ Wh.T + b`` (the other activations,
    ``clip``); then ``dx = dz @ Wx``, ``dprev_h = dz @ Wh``,
    ``dWx = dz.T @ x``, ``dWh = dz.T @ prev_h``, ``db = sum(dz)``.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import rnn_step_forward, rnn_step_backward
    >>> x, h, Wx, Wh = np.array([0.5]), np.zeros(1), np.eye(1), np.eye(1)
    >>> h1 = rnn_step_forward(x, h, Wx, Wh)
    >>> dx, dprev_h, dWx, dWh, db = rnn_step_backward(np.ones(1), x, h, Wx, Wh, h1)
    >>> np.round(dx, 6)                     # 1 - tanh(0.5)**2
    array([0.786448])
    """
    nonlinearity, alpha, beta = check_activation(nonlinearity, activation_alpha, activation_beta)
    clip = check_clip(clip)
    named = {"dnext_h": dnext_h, "x": x, "prev_h": prev_h, "Wx": Wx, "Wh": Wh, "next_h": next_h}
    require(named, tuple(named))
    named["b"] = b
    xp = array_namespace(named, xp=xp)
    H, D = check_weights(Wx, Wh, b)
    check_features("x", x, D, "(*batch, D)", 1)
    batch = tuple(x.shape[:-1])
    for name in ("prev_h", "next_h", "dnext_h"):
        check_state(name, named[name], batch, H)
    dtype = check_float_dtypes(xp, named)
    check_same_device(named)
    dnext_h, x, prev_h, Wx, Wh, next_h, b = (
        cast(xp, a, dtype) for a in (dnext_h, x, prev_h, Wx, Wh, next_h, b)
    )

    axes = list(range(x.ndim - 1))  # the batch axes, summed over by the weight gradients
    with own_precision(xp, x):  # in the inputs' dtype, torch.autocast or not
        if is_plain(nonlinearity, alpha, beta, clip):
            dz = dnext_h * derivative(nonlinearity)(xp, next_h)  # (*batch, H)
        else:
            z = x @ Wx.T + prev_h @ Wh.T  # (*batch, H): the pre-activation, recomputed
            if b is not None:
                z = z + b
            df = derivative_at(nonlinearity, alpha, beta)
            if clip is None:
                dz = dnext_h * df(xp, z)  # (*batch, H)
            else:
                inside = (z >= -clip) & (z <= clip)  # (*batch, H)
                dz = xp.where(inside, dnext_h * df(xp, xp.clip(z, min=-clip, max=clip)),
                              xp.zeros_like(z))  # fmt: skip
        dx = dz @ Wx  # (*batch, D)
        dprev_h = dz @ Wh  # (*batch, H)
        dWx = xp.tensordot(dz, x, axes=(axes, axes))  # (H, D)
        dWh = xp.tensordot(dz, prev_h, axes=(axes, axes))  # (H, H)
        db = xp.sum(dz, axis=tuple(axes))  # (H,)
    return dx, dprev_h, dWx, dWh, db


def rnn_backward(
    dh,
    x,
    h0,
    Wx,
    Wh,
    b,
    h_seq,
    *,
    nonlinearity="tanh",
    dh_n=None,
    lengths=None,
    reverse=False,
    leak=1.0,
    batch_first=False,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    mask=None,
    xp=None,
):
    """Backpropagation through time for ``rnn_forward``.

    Parameters
    ----------
    dh : array or None
        Upstream gradient of every output state, the shape of ``h_seq``:
        ``(T, *batch, H)``, or ``(*batch, T, H)`` with ``batch_first=True``.
        ``None`` means zeros (only ``dh_n`` flows back).
    x : array or list of arrays
        The forward's input, in the forward's layout.
    h0 : array or None
        The forward's initial state ``(*batch, H)``; ``None`` means zeros.
    Wx, Wh, b : array
        Weights ``(H, D)``, ``(H, H)`` and bias ``(H,)`` or ``None``.
    h_seq : array
        The forward's output, from ``rnn_forward`` with the same options.
    nonlinearity : str, optional
        The forward's activation (any of ``rnn_forward``'s).
    dh_n : array, optional
        Extra upstream gradient of the final state ``(*batch, H)`` (the state
        at each sequence's last valid step, ``return_sequences=False``).
    lengths, reverse, leak, batch_first
        The forward's options, with the same meaning and checks.
    activation_alpha, activation_beta, clip, mask
        The forward's options, with the same meaning and checks. With an
        activation other than tanh and relu, or with ``clip``, ``b`` is read
        to recompute the pre-activation.
    xp : namespace, optional
        Array namespace; inferred from the arrays when omitted.

    Returns
    -------
    RNNGrads
        ``(dx, dh0, dWx, dWh, db)``: ``dx`` in the layout of ``x`` (a list
        when ``x`` was a list), ``dh0 (*batch, H)`` (also when ``h0`` is
        ``None``), ``dWx (H, D)``, ``dWh (H, H)``, ``db (H,)`` or ``None``
        when ``b`` is ``None``. All in the inputs' namespace, device and
        promoted dtype.

    Raises
    ------
    ValueError
        A shape does not match, ``nonlinearity``, ``leak``, ``clip`` or
        ``lengths`` is out of range, a parameter does not apply to the
        activation, or both ``lengths`` and ``mask`` are given.
    TypeError
        An input is not a real floating array, ``lengths`` is not integer,
        ``mask`` is not boolean, or arrays come from two libraries.

    Notes
    -----
    Walking the steps in the opposite order to the forward, with
    ``g = dh_n`` at the start::

        g      = g + dh_t                       # gradient reaching h_t
        dz_t   = g * leak * f'(z_t)
        g      = dz_t @ Wh + (1 - leak) * g     # gradient reaching h_{t-1}

    then ``dx = dz @ Wx``, ``dWx = sum_t dz_t.T @ x_t``,
    ``dWh = sum_t dz_t.T @ h_{t-1}``, ``db = sum_t sum(dz_t)``, and
    ``dh0`` is the final ``g``. ``f'(z_t)`` and ``h_{t-1}`` are read off
    ``h_seq``; with ``leak < 1`` and relu, a unit whose ``f(z_t)`` is below
    the rounding of ``h_{t-1}`` counts as inactive.

    A layer calls this once per layer and direction, with that direction's
    ``h_seq``, ``dh`` and ``dh_n``; ``dx`` of both directions adds up to the
    gradient of the layer's input.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import rnn_forward, rnn_backward
    >>> rng = np.random.default_rng(0)
    >>> x, Wx, Wh = rng.standard_normal((5, 2, 3)), np.eye(4, 3), 0.5 * np.eye(4)
    >>> h = rnn_forward(x, None, Wx, Wh)
    >>> g = rnn_backward(np.ones_like(h), x, None, Wx, Wh, None, h)
    >>> g.dx.shape, g.dh0.shape, g.dWx.shape, g.dWh.shape, g.db
    ((5, 2, 3), (2, 4), (4, 3), (4, 4), None)
    """
    cell = ElmanCell(nonlinearity, activation_alpha, activation_beta, clip, leak)
    check_bool("reverse", reverse)
    require({"h_seq": h_seq}, ("h_seq",))
    p, seqs, d_out, d_finals = prepare_backward(
        cell, x, (h0,), ElmanWeights(Wx, Wh, b), ("h0",), {"h_seq": h_seq}, dh, {"dh_n": dh_n},
        batch_first=batch_first, lengths=lengths, mask=mask, xp=xp,
    )  # fmt: skip
    dx, (dh0,), dw = backward(p.xp, cell, d_out, p.x, p.state0, p.w, seqs, d_finals,
                              lengths=p.lengths, reverse=reverse, mask=p.mask)  # fmt: skip
    return RNNGrads(input_layout(p.xp, x, dx, batch_first), dh0, dw.Wx, dw.Wh,
                    None if b is None else dw.b)  # fmt: skip


def prepare_backward(cell, x, state0, w, state_labels, seqs, d_out, d_finals, *, batch_first,
                     lengths, mask, xp):
    """Check a backward call once: ``(Prepared, seqs, d_out, d_finals)``, all time-major.

    ``seqs`` maps the names of the forward's state sequences (``h_seq``,
    ``c_seq``) to them, ``d_out`` is the output's gradient (``dh``, shaped
    like the first of them, or ``None``), ``d_finals`` maps the names of
    the final states' gradients (``dh_n``, ``dc_n``) to them.
    """
    extra = {**seqs, **({} if d_out is None else {"dh": d_out}), **d_finals}
    p = prepare(cell, x, state0, w, state_labels=state_labels, batch_first=batch_first,
                lengths=lengths, mask=mask, xp=xp,
                extra={k: v for k, v in extra.items() if v is not None})  # fmt: skip
    T, batch = p.x.shape[0], p.batch
    if batch_first:
        seq_shape, layout = (*batch, T), "(*batch, T, {}) (batch_first=True, from x)"
    else:
        seq_shape, layout = (T, *batch), "(T, *batch, {}) (from x)"
    names = list(seqs)
    for (name, _), size in zip(seqs.items(), p.sizes.state):
        check_state(name, p.arrays[name], seq_shape, size, layout.format(_feature(size, p.sizes)))
    if d_out is not None:
        check_state("dh", p.arrays["dh"], seq_shape, p.sizes.state[0],
                    layout.format(_feature(p.sizes.state[0], p.sizes)) + f", the shape of {names[0]}")  # fmt: skip
    for (name, _), size in zip(d_finals.items(), p.sizes.state):
        if name in p.arrays:
            check_state(name, p.arrays[name], batch, size)
    tm = (lambda a: time_first(p.xp, a)) if batch_first else (lambda a: a)
    out_seqs = tuple(tm(p.arrays[name]) for name in seqs)
    d_out = tm(p.arrays["dh"]) if d_out is not None else None
    return p, out_seqs, d_out, tuple(p.arrays.get(name) for name in d_finals)


def _feature(size, sizes):
    return "H" if size == sizes.H else "P"


def input_layout(xp, x, dx, batch_first):
    """``dx`` ``(T, *batch, D)`` in the layout of ``x``: a list, batch-first or time-major."""
    if isinstance(x, (list, tuple)):
        return [dx[t, ...] for t in range(dx.shape[0])]  # T arrays (*batch, D)
    if batch_first:
        nd = dx.ndim
        return xp.permute_dims(dx, (*range(1, nd - 1), 0, nd - 1))  # (*batch, T, D)
    return dx


class LSTMGrads(NamedTuple):
    """Gradients of a loss with respect to every input of ``lstm_forward``.

    Attributes
    ----------
    dx : array or list of arrays
        Same shape and layout as ``x``.
    dh0, dc0 : array
        ``(*batch, P)`` and ``(*batch, H)``; returned also when ``hx`` was ``None``.
    dW_ih, dW_hh : array
        ``(4H, D)`` and ``(4H, P)``.
    db_ih, db_hh : array or None
        ``(4H,)`` each (equal: both enter every gate the same way), or
        ``None`` for a bias that was ``None``.
    dW_hr, dpeepholes : array or None
        ``(P, H)`` and ``(3H,)``, or ``None`` when the forward had none.
    """

    dx: object
    dh0: object
    dc0: object
    dW_ih: object
    dW_hh: object
    db_ih: object
    db_hh: object
    dW_hr: object
    dpeepholes: object


class GRUGrads(NamedTuple):
    """Gradients of a loss with respect to every input of ``gru_forward``.

    Attributes
    ----------
    dx : array or list of arrays
        Same shape and layout as ``x``.
    dh0 : array
        ``(*batch, H)``; returned also when ``h0`` was ``None``.
    dW_ih, dW_hh : array
        ``(3H, D)`` and ``(3H, H)``.
    db_ih, db_hh : array or None
        ``(3H,)`` each, or ``None`` for a bias that was ``None``. They
        differ in the last block when the reset follows the product.
    """

    dx: object
    dh0: object
    dW_ih: object
    dW_hh: object
    db_ih: object
    db_hh: object


def lstm_backward(
    dh,
    x,
    hx,
    W_ih,
    W_hh,
    b_ih,
    b_hh,
    h_seq,
    c_seq,
    *,
    W_hr=None,
    peepholes=None,
    dh_n=None,
    dc_n=None,
    lengths=None,
    reverse=False,
    batch_first=False,
    mask=None,
    activations=None,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    input_forget=False,
    xp=None,
):
    """Backpropagation through time for :func:`lstm_forward`.

    Parameters
    ----------
    dh : array or None
        Upstream gradient of every output state, the shape of ``h_seq``;
        ``None`` means zeros.
    x, hx, W_ih, W_hh, b_ih, b_hh
        The forward's arguments (``hx`` ``None`` or ``(h0, c0)``).
    h_seq, c_seq : array
        The forward's ``output`` and ``c_seq`` (``lstm_forward(...,
        return_c_seq=True)``), in the forward's layout.
    W_hr, peepholes, lengths, reverse, batch_first, mask, activations,
    activation_alpha, activation_beta, clip, input_forget, xp
        The forward's options.
    dh_n, dc_n : array, optional
        Extra upstream gradients of the final states ``(*batch, P)`` and
        ``(*batch, H)``.

    Returns
    -------
    LSTMGrads
        ``(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr, dpeepholes)``.

    Notes
    -----
    The gates are recomputed for every step from ``x`` and the states each
    step started from (read off ``h_seq`` and ``c_seq``); the only loop
    carries the gradients of ``h`` and ``c`` back through the steps (see
    ``rnn_xp.cells.lstm``); each weight gradient is then one product over
    all steps.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import lstm_forward, lstm_backward
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((5, 2, 3))
    >>> W_ih, W_hh = rng.standard_normal((16, 3)), rng.standard_normal((16, 4))
    >>> out, (h_n, c_n), c_seq = lstm_forward(x, None, W_ih, W_hh, return_c_seq=True)
    >>> g = lstm_backward(np.ones_like(out), x, None, W_ih, W_hh, None, None, out, c_seq)
    >>> g.dx.shape, g.dh0.shape, g.dW_hh.shape, g.db_ih
    ((5, 2, 3), (2, 4), (16, 4), None)
    """
    cell = LSTMCell(activations or ("sigmoid", "tanh", "tanh"), activation_alpha, activation_beta,
                    clip, input_forget)  # fmt: skip
    check_bool("reverse", reverse)
    require({"h_seq": h_seq, "c_seq": c_seq}, ("h_seq", "c_seq"))
    w = LSTMWeights(W_ih, W_hh, b_ih, b_hh, W_hr, peepholes)
    p, seqs, d_out, d_finals = prepare_backward(
        cell, x, pair("hx", hx, ("h0", "c0")), w, ("h0", "c0"), {"h_seq": h_seq, "c_seq": c_seq}, dh,
        {"dh_n": dh_n, "dc_n": dc_n}, batch_first=batch_first, lengths=lengths, mask=mask, xp=xp,
    )  # fmt: skip
    dx, (dh0, dc0), dw = backward(p.xp, cell, d_out, p.x, p.state0, p.w, seqs, d_finals,
                                  lengths=p.lengths, reverse=reverse, mask=p.mask)  # fmt: skip
    return LSTMGrads(input_layout(p.xp, x, dx, batch_first), dh0, dc0, *dw)


def gru_backward(
    dh,
    x,
    h0,
    W_ih,
    W_hh,
    b_ih,
    b_hh,
    h_seq,
    *,
    dh_n=None,
    lengths=None,
    reverse=False,
    batch_first=False,
    mask=None,
    activations=None,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    linear_before_reset=True,
    xp=None,
):
    """Backpropagation through time for :func:`gru_forward`.

    Parameters
    ----------
    dh : array or None
        Upstream gradient of every output state, the shape of ``h_seq``;
        ``None`` means zeros.
    x, h0, W_ih, W_hh, b_ih, b_hh
        The forward's arguments.
    h_seq : array
        The forward's output, in the forward's layout.
    dh_n : array, optional
        Extra upstream gradient of the final state ``(*batch, H)``.
    lengths, reverse, batch_first, mask, activations, activation_alpha,
    activation_beta, clip, linear_before_reset, xp
        The forward's options.

    Returns
    -------
    GRUGrads
        ``(dx, dh0, dW_ih, dW_hh, db_ih, db_hh)``.

    Notes
    -----
    The gates are recomputed for every step from ``x`` and the states each
    step started from (read off ``h_seq``); the only loop carries the
    gradient of ``h`` back through the steps (see ``rnn_xp.cells.gru``).

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import gru_forward, gru_backward
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((5, 2, 3))
    >>> W_ih, W_hh, b = rng.standard_normal((12, 3)), rng.standard_normal((12, 4)), np.zeros(12)
    >>> h = gru_forward(x, None, W_ih, W_hh, b, b)
    >>> g = gru_backward(np.ones_like(h), x, None, W_ih, W_hh, b, b, h)
    >>> g.dx.shape, g.dW_ih.shape, g.db_hh.shape
    ((5, 2, 3), (12, 3), (12,))
    """
    if isinstance(h0, (tuple, list)):
        raise TypeError(
            "h0 must be an array (*batch, H) or None: a GRU carries one state; got a "
            f"{type(h0).__name__} (an LSTM's (h0, c0) pair?)"
        )
    cell = GRUCell(activations or ("sigmoid", "tanh"), activation_alpha, activation_beta, clip,
                   linear_before_reset)  # fmt: skip
    check_bool("reverse", reverse)
    require({"h_seq": h_seq}, ("h_seq",))
    p, seqs, d_out, d_finals = prepare_backward(
        cell, x, (h0,), GRUWeights(W_ih, W_hh, b_ih, b_hh), ("h0",), {"h_seq": h_seq}, dh,
        {"dh_n": dh_n}, batch_first=batch_first, lengths=lengths, mask=mask, xp=xp,
    )  # fmt: skip
    dx, (dh0,), dw = backward(p.xp, cell, d_out, p.x, p.state0, p.w, seqs, d_finals,
                              lengths=p.lengths, reverse=reverse, mask=p.mask)  # fmt: skip
    return GRUGrads(input_layout(p.xp, x, dx, batch_first), dh0, *dw)
