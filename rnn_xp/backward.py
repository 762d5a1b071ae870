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
    check_leak,
    check_lengths,
    check_mask,
    check_same_device,
    check_sequence,
    check_state,
    check_weights,
    require,
    time_first,
)
from ._compat import array_namespace
from .kernels import backward_kernel, own_precision

__all__ = ["RNNGrads", "rnn_backward", "rnn_step_backward"]


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
    nonlinearity, alpha, beta = check_activation(nonlinearity, activation_alpha, activation_beta)
    clip = check_clip(clip)
    check_bool("batch_first", batch_first)
    check_bool("reverse", reverse)
    leak = check_leak(leak)
    require({"Wx": Wx, "Wh": Wh, "h_seq": h_seq}, ("Wx", "Wh", "h_seq"))

    xp, x_tm, H, D, dtype, dev = check_sequence(
        x,
        {"h0": h0, "Wx": Wx, "Wh": Wh, "b": b, "h_seq": h_seq, "dh": dh, "dh_n": dh_n},
        batch_first=batch_first,
        xp=xp,
    )
    T, batch = x_tm.shape[0], tuple(x_tm.shape[1:-1])
    if batch_first:
        seq_shape, layout = (*batch, T), "(*batch, T, H) (batch_first=True, from x)"
    else:
        seq_shape, layout = (T, *batch), "(T, *batch, H) (from x)"
    check_state("h_seq", h_seq, seq_shape, H, layout)
    if dh is not None:
        check_state("dh", dh, seq_shape, H, layout + ", the shape of h_seq")
    if batch_first:
        h_seq = time_first(xp, h_seq)  # (T, *batch, H)
        dh = None if dh is None else time_first(xp, dh)  # (T, *batch, H)
    if h0 is None:
        h0 = xp.zeros((*batch, H), dtype=dtype, device=dev)
    else:
        check_state("h0", h0, batch, H)
    if dh_n is not None:
        check_state("dh_n", dh_n, batch, H)
    lengths = check_lengths(xp, lengths, batch, T, dev)
    mask = check_mask(xp, mask, batch, T, dev, lengths=lengths)  # (T, *batch)
    dh, x_tm, h0, Wx, Wh, h_seq, dh_n = (
        cast(xp, a, dtype) for a in (dh, x_tm, h0, Wx, Wh, h_seq, dh_n)
    )

    options = {}  # the portable loop's own options, only when used
    if not is_plain(nonlinearity, alpha, beta, clip) or mask is not None:
        options = {"activation_alpha": alpha, "activation_beta": beta, "clip": clip,
                   "mask": mask, "b": cast(xp, b, dtype)}  # fmt: skip
    kernel = backward_kernel(xp, extended=bool(options))
    dx, dh0, dWx, dWh, db = kernel(
        xp, dh, x_tm, h0, Wx, Wh, h_seq, dh_n,
        nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak, **options,
    )  # fmt: skip
    if isinstance(x, (list, tuple)):
        dx = [dx[t, ...] for t in range(T)]  # T arrays (*batch, D)
    elif batch_first:
        nd = dx.ndim
        dx = xp.permute_dims(dx, (*range(1, nd - 1), 0, nd - 1))  # (*batch, T, D)
    return RNNGrads(dx, dh0, dWx, dWh, None if b is None else db)
