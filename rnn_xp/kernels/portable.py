"""The portable kernels: the recurrence and its gradient in plain Array API code.

These loops define rnn_xp's answer. They write nothing in place, so they run
on every array library (array-api-strict, torch, Dask's lazy arrays, JAX
tracers); every fast kernel of this package has the same signature and is
tested to agree with them. ``forward.rnn_forward`` and
``backward.rnn_backward`` validate the arguments and call a kernel with
time-major arrays of one dtype and device.

Forward, one step (``leak`` is 1.0 for a plain RNN)::

    z_t = x_t @ Wx.T + h_{t-1} @ Wh.T + b        # (*batch, H)
    h_t = (1 - leak) * h_{t-1} + leak * f(z_t)

Backward: see ``rnn_xp.backward`` for the derivation.

The options that only these loops run (the fast kernels take the plain
tanh/relu recurrence) come as keyword arguments that default to "off":
``activation_alpha``/``activation_beta`` (the other activations of
``_activations``), ``clip`` (``z_t`` clipped to ``[-clip, clip]`` before
``f``) and ``mask`` (time-major ``(T, *batch)`` booleans: a masked step
keeps the state and repeats the previous output, zeros before the first
valid step, as Keras does). The backward loop with any of them recomputes
``z_t`` from the states it started from (so it also takes ``b``) and takes
``f'`` at ``z_t``.
"""

from __future__ import annotations

import math

from .._activations import activation, derivative, derivative_at, is_plain
from .._compat import device

__all__ = ["backward_portable", "scan_portable"]


def scan_portable(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences,
                  activation_alpha=None, activation_beta=None, clip=None, mask=None):
    """The recurrence on validated, time-major arrays of one dtype and device.

    ``x`` is ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, ``lengths`` ``None``
    or an integer array ``(*batch,)``. Returns ``(h_seq, h_last)`` with
    ``h_seq`` ``(T, *batch, H)`` or ``None`` when ``return_sequences`` is
    False. Every fast kernel has this signature and these results.

    ``activation_alpha``, ``activation_beta``, ``clip`` and ``mask``
    (``(T, *batch)`` booleans, not with ``lengths``) are the options only
    the portable loop runs (see the module docstring).
    """
    f = activation(nonlinearity, activation_alpha, activation_beta)
    T = x.shape[0]
    xw = x @ Wx.T  # (T, *batch, H): the input projection, one product for all steps
    if b is not None:
        xw = xw + b
    WhT = Wh.T  # (H, H)
    zeros = xp.zeros_like(h0) if lengths is not None or mask is not None else None

    h = h0  # (*batch, H)
    prev_out = zeros  # (*batch, H): with a mask, the output a masked step repeats
    outputs = [None] * T if return_sequences else None
    for t in range(T - 1, -1, -1) if reverse else range(T):
        z = xw[t, ...] + h @ WhT  # (*batch, H)
        if clip is not None:
            z = xp.clip(z, min=-clip, max=clip)
        h_new = f(xp, z)  # (*batch, H)
        if leak != 1.0:
            h_new = (1.0 - leak) * h + leak * h_new
        if mask is not None:
            # A masked step keeps the state and repeats the previous output.
            valid = mask[t, ...][..., None]  # (*batch, 1)
            h = xp.where(valid, h_new, h)
            out = prev_out = xp.where(valid, h_new, prev_out)
        elif lengths is not None:
            # Past its length a sequence keeps its state and outputs zeros. Run
            # backwards, a sequence of length L starts from h0 at t = L - 1.
            valid = (lengths > t)[..., None]  # (*batch, 1)
            h = xp.where(valid, h_new, h)
            out = xp.where(valid, h_new, zeros)
        else:
            h = out = h_new
        if return_sequences:
            outputs[t] = out

    if not return_sequences:
        return None, h
    if T == 0:
        return xp.zeros((0, *h0.shape), dtype=h0.dtype, device=device(h0)), h
    return xp.stack(outputs, axis=0), h  # (T, *batch, H)


def backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak,
                      activation_alpha=None, activation_beta=None, clip=None, mask=None, b=None):
    """Backpropagation through time on validated, time-major arrays of one dtype and device.

    ``dh`` and ``h_seq`` are ``(T, *batch, H)`` (``dh`` may be ``None``),
    ``x`` ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, ``dh_n`` ``(*batch, H)``
    or ``None``, ``lengths`` ``None`` or an integer array ``(*batch,)``.
    Returns ``(dx (T, *batch, D), dh0, dWx, dWh, db)``.

    With ``activation_alpha``, ``activation_beta``, ``clip``, ``mask`` or an
    activation other than tanh and relu, ``z_t`` is recomputed with the
    forward's bias ``b`` (``(H,)`` or ``None``) and ``f'`` taken at it.
    """
    if not is_plain(nonlinearity, activation_alpha, activation_beta, clip) or mask is not None:
        return _backward_at_z(
            xp, dh, x, h0, Wx, Wh, h_seq, dh_n, b, nonlinearity=nonlinearity, lengths=lengths,
            reverse=reverse, leak=leak, alpha=activation_alpha, beta=activation_beta, clip=clip,
            mask=mask,
        )  # fmt: skip
    T = x.shape[0]
    if T == 0:
        return _empty_time(xp, x, h0, Wx, Wh, dh_n)
    g = xp.zeros_like(h0) if dh_n is None else dh_n  # (*batch, H): gradient reaching the carried state

    prev = _previous_states(xp, h_seq, h0, lengths, reverse=reverse)  # (T, *batch, H)
    # Padding never reaches a gradient: past a sequence's length the steps get
    # dz = 0 below, and the inputs and states there are zeroed too, so that
    # a NaN or Inf in them is not multiplied by that zero (0 * NaN = NaN).
    valid_all = None if lengths is None else _padding_mask(xp, lengths, T)  # (T, *batch, 1)
    if valid_all is not None:
        prev = xp.where(valid_all, prev, xp.zeros_like(prev))  # (T, *batch, H)

    # dh_t/dz_t = leak * f'(z_t), with f(z_t) read off the forward's output.
    if leak == 1.0:
        act = h_seq  # (T, *batch, H): f(z_t)
    else:
        act = (h_seq - (1.0 - leak) * prev) / leak  # (T, *batch, H): f(z_t)
    dh_dz = leak * derivative(nonlinearity)(xp, act)  # (T, *batch, H)

    zeros = xp.zeros_like(h0) if lengths is not None else None  # (*batch, H)
    dz = [None] * T
    for t in range(T) if reverse else range(T - 1, -1, -1):
        g_t = g if dh is None else g + dh[t, ...]  # (*batch, H): dL/dh_t
        dz_t = g_t * dh_dz[t, ...]  # (*batch, H): dL/dz_t
        if lengths is not None:
            valid = (lengths > t)[..., None]  # (*batch, 1)
            dz_t = xp.where(valid, dz_t, zeros)  # (*batch, H)
        g_prev = dz_t @ Wh  # (*batch, H): dL/dh_{t-1} through z_t
        if leak != 1.0:
            g_prev = g_prev + (1.0 - leak) * g_t  # (*batch, H): ... and through the leak
        # A frozen step passes the carried gradient through unchanged.
        g = g_prev if lengths is None else xp.where(valid, g_prev, g)  # (*batch, H)
        dz[t] = dz_t
    dz = xp.stack(dz, axis=0)  # (T, *batch, H)

    return _input_and_weight_gradients(xp, dz, x, prev, Wx, Wh, g, valid_all)


def _previous_states(xp, h_seq, h0, lengths, *, reverse):
    """``(T, *batch, H)``: the state each step started from.

    Forward, ``h_{t-1}`` (``h0`` at t = 0); reverse, ``h_{t+1}`` (``h0`` at
    t = T - 1, or at t = L - 1 for a sequence of length L).
    """
    T = h_seq.shape[0]
    h0_ = xp.expand_dims(h0, axis=0)  # (1, *batch, H)
    # (T = 1: h0 alone, not a concat with an empty piece, whose zero-length chunk
    # Dask's tensordot cannot contract over)
    if not reverse:
        return h0_ if T == 1 else xp.concat([h0_, h_seq[:-1, ...]], axis=0)
    prev = h0_ if T == 1 else xp.concat([h_seq[1:, ...], h0_], axis=0)
    if lengths is not None:
        shape = (T,) + (1,) * lengths.ndim
        t_next = xp.reshape(xp.arange(1, T + 1, dtype=lengths.dtype, device=device(lengths)), shape)
        prev = xp.where((lengths == t_next)[..., None], h0_, prev)
    return prev


def _padding_mask(xp, lengths, T):
    """``(T, *batch, 1)`` booleans: True where step t is within the sequence's length."""
    shape = (T,) + (1,) * lengths.ndim
    steps = xp.reshape(xp.arange(T, dtype=lengths.dtype, device=device(lengths)), shape)
    return (lengths > steps)[..., None]


def _input_and_weight_gradients(xp, dz, x, prev, Wx, Wh, g, valid_all):
    """``(dx, g, dWx, dWh, db)`` from every ``dz_t`` ``(T, *batch, H)``.

    ``valid_all`` ``(T, *batch, 1)`` (or ``None``) marks the steps that count:
    elsewhere ``dz`` is zero, and the inputs and starting states there are
    zeroed too, so that padding never reaches a gradient (0 * NaN is NaN).
    """
    if valid_all is not None:
        x = xp.where(valid_all, x, xp.zeros_like(x))  # (T, *batch, D)
        prev = xp.where(valid_all, prev, xp.zeros_like(prev))  # (T, *batch, H)
    H = Wh.shape[0]
    dx = dz @ Wx  # (T, *batch, D)
    # The weight gradients sum over time and batch: one matmul over N = T * B rows.
    # (Not tensordot: NumPy's dot runs a (1, 1) @ (1, n) product as a scaled vector
    # and skips a zero scale, so 0 * Inf there gave 0 instead of NaN, and the answer
    # depended on the shapes and, on Dask, on the chunks.)
    N, D = math.prod(x.shape[:-1]), x.shape[-1]
    if N == 0:  # an empty batch: empty sums (and no reshape of an empty array, which Dask cannot do)
        return dx, g, xp.zeros_like(Wx), xp.zeros_like(Wh), xp.zeros((H,), dtype=Wh.dtype, device=device(Wh))
    dz2 = xp.reshape(dz, (N, H))  # (N, H)
    dz2T = xp.matrix_transpose(dz2)  # (H, N)
    dWx = dz2T @ xp.reshape(x, (N, D))  # (H, D)
    dWh = dz2T @ xp.reshape(prev, (N, H))  # (H, H)
    db = xp.sum(dz2, axis=0)  # (H,)
    return dx, g, dWx, dWh, db


def _empty_time(xp, x, h0, Wx, Wh, dh_n):
    """The gradients of a forward over T = 0 steps: ``dh0`` is ``dh_n`` (a new array)."""
    return (
        xp.zeros_like(x),
        xp.zeros_like(h0) if dh_n is None else xp.asarray(dh_n, copy=True),  # never the caller's array
        xp.zeros_like(Wx),
        xp.zeros_like(Wh),
        xp.zeros((Wh.shape[0],), dtype=Wh.dtype, device=device(Wh)),
    )


def _backward_at_z(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, b, *, nonlinearity, lengths, reverse, leak,
                   alpha, beta, clip, mask):
    """``backward_portable`` with ``f'`` taken at the recomputed ``z_t``; masks too.

    With a mask, two gradients travel back: ``g`` reaching the carried state
    and ``go`` reaching the previous output, which a masked step repeats::

        valid step:   gh = g + go + dh_t,  dz_t = gh * leak * f'(z_t),
                      g = dz_t @ Wh + (1 - leak) * gh,  go = 0
        masked step:  g unchanged,  go = go + dh_t,  dz_t = 0

    (``go`` reaching the zeros before the first valid step goes nowhere.)
    """
    T = x.shape[0]
    if T == 0:
        return _empty_time(xp, x, h0, Wx, Wh, dh_n)
    g = xp.zeros_like(h0) if dh_n is None else dh_n  # (*batch, H): gradient reaching the carried state
    steps = list(range(T - 1, -1, -1) if reverse else range(T))  # the forward's order

    # The state each step started from.
    if mask is not None:
        # Outputs repeat the state after the first valid step, not before it:
        # carry the state along the forward's order.
        prev, state = [None] * T, h0
        for t in steps:
            prev[t] = state
            state = xp.where(mask[t, ...][..., None], h_seq[t, ...], state)  # (*batch, H)
        prev = xp.stack(prev, axis=0)  # (T, *batch, H)
    else:
        prev = _previous_states(xp, h_seq, h0, lengths, reverse=reverse)  # (T, *batch, H)
    # Past a sequence's length, and at masked steps, dz = 0 below, so the
    # values of `prev` and `z` there never count (and the weight gradients
    # see zeros there, not the padding).
    if mask is not None:
        valid_all = mask[..., None]  # (T, *batch, 1)
    else:
        valid_all = None if lengths is None else _padding_mask(xp, lengths, T)

    z = x @ Wx.T + prev @ Wh.T  # (T, *batch, H): the pre-activation, recomputed
    if b is not None:
        z = z + b
    df = derivative_at(nonlinearity, alpha, beta)
    if clip is not None:
        inside = (z >= -clip) & (z <= clip)  # (T, *batch, H): clipping passes no gradient outside
        dh_dz = xp.where(inside, leak * df(xp, xp.clip(z, min=-clip, max=clip)), xp.zeros_like(z))
    else:
        dh_dz = leak * df(xp, z)  # (T, *batch, H)

    zeros = xp.zeros_like(h0)  # (*batch, H)
    go = zeros  # (*batch, H): gradient reaching the previous output (masks only)
    dz = [None] * T
    for t in reversed(steps):
        if mask is not None:
            valid = mask[t, ...][..., None]  # (*batch, 1)
            go_t = go if dh is None else go + dh[t, ...]  # (*batch, H): dL/d(output_t)
            gh = g + go_t  # (*batch, H): dL/dh_t at a valid step
            dz_t = xp.where(valid, gh * dh_dz[t, ...], zeros)  # (*batch, H)
            g_prev = dz_t @ Wh  # (*batch, H)
            if leak != 1.0:
                g_prev = g_prev + (1.0 - leak) * gh
            g = xp.where(valid, g_prev, g)  # (*batch, H)
            go = xp.where(valid, zeros, go_t)  # (*batch, H)
        else:
            g_t = g if dh is None else g + dh[t, ...]  # (*batch, H): dL/dh_t
            dz_t = g_t * dh_dz[t, ...]  # (*batch, H)
            if lengths is not None:
                valid = (lengths > t)[..., None]  # (*batch, 1)
                dz_t = xp.where(valid, dz_t, zeros)
            g_prev = dz_t @ Wh  # (*batch, H)
            if leak != 1.0:
                g_prev = g_prev + (1.0 - leak) * g_t
            g = g_prev if lengths is None else xp.where(valid, g_prev, g)  # (*batch, H)
        dz[t] = dz_t
    dz = xp.stack(dz, axis=0)  # (T, *batch, H)
    return _input_and_weight_gradients(xp, dz, x, prev, Wx, Wh, g, valid_all)
