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

import functools

from .._compat import device
from ..cells import ElmanCell, ElmanWeights

__all__ = ["backward_cell", "backward_portable", "elman_options", "padding_mask", "per_part", "previous_states", "scan_cell", "scan_portable"]

# The Elman kernels' keyword options that make its cell, with their defaults (ElmanCell's order).
ELMAN_CELL_OPTIONS = {"nonlinearity": "tanh", "activation_alpha": None, "activation_beta": None,
                      "clip": None, "leak": 1.0}  # fmt: skip
# Those that every kernel of any cell takes (scan_cell's and backward_cell's keywords).
RUN_OPTIONS = ("lengths", "mask", "reverse", "return_sequences")


def scan_portable(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences,
                  activation_alpha=None, activation_beta=None, clip=None, mask=None):
    """The Elman recurrence on validated, time-major arrays of one dtype and device.

    ``x`` is ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, ``lengths`` ``None``
    or an integer array ``(*batch,)``. Returns ``(h_seq, h_last)`` with
    ``h_seq`` ``(T, *batch, H)`` or ``None`` when ``return_sequences`` is
    False. Every fast Elman kernel has this signature and these results.

    ``activation_alpha``, ``activation_beta``, ``clip`` and ``mask``
    (``(T, *batch)`` booleans, not with ``lengths``) are the options only
    the portable loop runs (see the module docstring). This is
    ``scan_cell`` with an ``ElmanCell``.
    """
    cell = ElmanCell(nonlinearity, activation_alpha, activation_beta, clip, leak)
    seqs, finals = scan_cell(xp, cell, x, (h0,), ElmanWeights(Wx, Wh, b), lengths=lengths,
                             reverse=reverse, return_sequences=return_sequences, mask=mask)  # fmt: skip
    return (None if seqs is None else seqs[0]), finals[0]


def backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak,
                      activation_alpha=None, activation_beta=None, clip=None, mask=None, b=None):
    """Elman backpropagation through time on validated, time-major arrays of one dtype and device.

    ``dh`` and ``h_seq`` are ``(T, *batch, H)`` (``dh`` may be ``None``),
    ``x`` ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, ``dh_n`` ``(*batch, H)``
    or ``None``, ``lengths`` ``None`` or an integer array ``(*batch,)``.
    Returns ``(dx (T, *batch, D), dh0, dWx, dWh, db)``.

    With ``activation_alpha``, ``activation_beta``, ``clip``, ``mask`` or an
    activation other than tanh and relu, ``z_t`` is recomputed with the
    forward's bias ``b`` (``(H,)`` or ``None``) and ``f'`` taken at it. This
    is ``backward_cell`` with an ``ElmanCell``.
    """
    cell = ElmanCell(nonlinearity, activation_alpha, activation_beta, clip, leak)
    dx, (dh0,), dw = backward_cell(
        xp, cell, dh, x, (h0,), ElmanWeights(Wx, Wh, b), (h_seq,), (dh_n,),
        lengths=lengths, reverse=reverse, mask=mask,
    )  # fmt: skip
    db = dw.b if dw.b is not None else xp.zeros((Wh.shape[0],), dtype=Wh.dtype, device=device(Wh))
    return dx, dh0, dw.Wx, dw.Wh, db


def elman_options(options):
    """The Elman kernels' keyword options (``scan_portable``'s) as ``(cell, run, extra)``.

    ``cell`` the ``ElmanCell`` of ``nonlinearity``, ``activation_alpha``,
    ``activation_beta``, ``clip`` and ``leak``; ``run`` the options every
    cell's kernels take (``lengths``, ``mask``, ``reverse``,
    ``return_sequences``, those given); ``extra`` every other option (one
    that no cell names, which only the portable Elman loops may know).
    """
    values = tuple(options.get(k, d) for k, d in ELMAN_CELL_OPTIONS.items())
    try:
        cell = _elman_cell(*values)  # made once per set of options
    except TypeError:  # an unhashable value: the cell checks it
        cell = ElmanCell(*values)
    run = {k: options[k] for k in RUN_OPTIONS if k in options}
    extra = {k: v for k, v in options.items() if k not in ELMAN_CELL_OPTIONS and k not in run}
    return cell, run, extra


@functools.lru_cache(maxsize=256)
def _elman_cell(*options):
    return ElmanCell(*options)


def scan_cell(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None):
    """Any cell's recurrence on validated, time-major arrays of one dtype and device.

    ``x`` ``(T, *batch, D)``; ``state0`` a tuple of the state's parts
    ``(*batch, S_k)`` (``cell.state_names``); ``w`` the cell's ``Weights``;
    ``lengths`` ``None`` or an integer array ``(*batch,)``; ``mask`` ``None``
    or time-major ``(T, *batch)`` booleans (not with ``lengths``).

    Returns ``(seqs, finals)``: ``seqs`` a tuple with every part's states
    ``(T, *batch, S_k)`` (``None`` when ``return_sequences`` is False), the
    first of them the output; ``finals`` each part's state after each
    sequence's last valid step. Past a sequence's length a part's state is
    frozen and its entry in ``seqs`` is zero; at a masked step the state is
    kept and ``seqs`` repeats the previous entry (zeros before the first
    valid step), as Keras does.
    """
    T = x.shape[0]
    xg = cell.project(xp, x, w)  # (T, *batch, G * H): one product for all steps
    fixed = cell.fixed(xp, w)
    zeros = tuple(xp.zeros_like(s) for s in state0) if lengths is not None or mask is not None else None

    state = tuple(state0)  # each (*batch, S_k)
    prev_out = zeros  # with a mask: what a masked step repeats
    outputs = [[None] * T for _ in state] if return_sequences else None
    for t in range(T - 1, -1, -1) if reverse else range(T):
        new = cell.step(xp, xg[t, ...], state, w, fixed)
        if mask is not None:
            # A masked step keeps the state and repeats the previous output.
            valid = mask[t, ...][..., None]  # (*batch, 1)
            state = tuple(xp.where(valid, n, s) for n, s in zip(new, state))
            out = prev_out = tuple(xp.where(valid, n, p) for n, p in zip(new, prev_out))
        elif lengths is not None:
            # Past its length a sequence keeps its state and outputs zeros. Run
            # backwards, a sequence of length L starts from state0 at t = L - 1.
            valid = (lengths > t)[..., None]  # (*batch, 1)
            state = tuple(xp.where(valid, n, s) for n, s in zip(new, state))
            out = tuple(xp.where(valid, n, z) for n, z in zip(new, zeros))
        else:
            state = out = new
        if return_sequences:
            for k, o in enumerate(out):
                outputs[k][t] = o

    if not return_sequences:
        return None, state
    if T == 0:
        return tuple(xp.zeros((0, *s.shape), dtype=s.dtype, device=device(s)) for s in state0), state
    return tuple(xp.stack(o, axis=0) for o in outputs), state  # each (T, *batch, S_k)


def backward_cell(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None):
    """Backpropagation through time for ``scan_cell``, any cell.

    ``d_out`` ``(T, *batch, S_0)`` or ``None``: the gradient reaching the
    output (``seqs[0]``); or a tuple with the gradient reaching each part's
    entry of ``seqs`` (``None`` entries for zeros: an LSTM's cell states
    ``c_seq`` may take one too); ``seqs`` the forward's ``seqs``; ``d_finals`` a
    tuple with the gradient reaching each part's final state (``None``
    entries for zeros). Returns ``(dx (T, *batch, D), dstate0, dw)``:
    ``dstate0`` a tuple like ``state0``, ``dw`` a ``Weights`` of gradients
    (an entry for every weight, ``None`` ones included; the caller drops
    those it was not given).

    Walking the steps in the opposite order to the forward: the gradient
    reaching the output at step t joins the one carried to the state, the
    cell turns it into the step's gradients ``d_t`` and the gradient
    reaching the state before the step; a step past a sequence's length (or
    masked) takes nothing and passes the carried gradient through. The
    weight gradients are then one product each over all steps
    (``cell.grads``).
    """
    T = x.shape[0]
    d_seqs = per_part(d_out, len(state0))
    g = tuple(xp.zeros_like(s) if d is None else d for s, d in zip(state0, d_finals))
    if T == 0:
        return _empty_time(xp, cell, x, state0, w, d_finals)
    steps = list(range(T - 1, -1, -1) if reverse else range(T))  # the forward's order

    # The state each step started from.
    if mask is not None:
        # Outputs repeat the state after the first valid step, not before it:
        # carry the state along the forward's order.
        prev = [[None] * T for _ in state0]
        state = tuple(state0)
        for t in steps:
            valid = mask[t, ...][..., None]
            for k, s in enumerate(state):
                prev[k][t] = s
            state = tuple(xp.where(valid, q[t, ...], s) for q, s in zip(seqs, state))
        prev = tuple(xp.stack(p, axis=0) for p in prev)  # each (T, *batch, S_k)
        valid_all = mask[..., None]  # (T, *batch, 1)
    else:
        prev = tuple(previous_states(xp, q, s0, lengths, reverse=reverse) for q, s0 in zip(seqs, state0))
        valid_all = None if lengths is None else padding_mask(xp, lengths, T)  # (T, *batch, 1)
    # Padding never reaches a gradient: past a sequence's length (and at masked
    # steps) the steps get d_t = 0 below, and the states there are zeroed too,
    # so that a NaN or Inf in them is not multiplied by that zero (0 * NaN = NaN).
    if valid_all is not None:
        prev = tuple(xp.where(valid_all, p, xp.zeros_like(p)) for p in prev)

    fixed = cell.fixed(xp, w)
    saved = cell.saved(xp, x, prev, seqs, w, fixed, from_outputs=mask is None)
    if mask is not None:
        # Per part, the gradient reaching the previous entry of seqs (None: none reaches it).
        zeros = tuple(xp.zeros_like(s) for s in state0)  # each (*batch, S_k)
        go = tuple(None if q is None else z for q, z in zip(d_seqs, zeros))
    d = None  # per part of d_t: a list of T steps
    for t in reversed(steps):
        if mask is not None:
            valid = mask[t, ...][..., None]  # (*batch, 1)
            go_t = tuple(None if o is None else o + q[t, ...] for o, q in zip(go, d_seqs))  # dL/d(seqs_t)
            g_t = tuple(s if o is None else s + o for s, o in zip(g, go_t))  # at a valid step seqs_t is the state
        else:
            valid = None if lengths is None else (lengths > t)[..., None]  # (*batch, 1)
            g_t = tuple(s if q is None else s + q[t, ...] for s, q in zip(g, d_seqs))  # dL/d(state_t)
        d_t, g_prev = cell.step_backward(xp, tuple(s[t, ...] for s in saved),
                                         tuple(p[t, ...] for p in prev), g_t, w, fixed)  # fmt: skip
        if valid is not None:
            d_t = tuple(xp.where(valid, q, xp.zeros_like(q)) for q in d_t)
            # A frozen (or masked) step passes the carried gradient through unchanged.
            g = tuple(xp.where(valid, n, o) for n, o in zip(g_prev, g))
        else:
            g = g_prev
        if mask is not None:
            go = tuple(None if o is None else xp.where(valid, z, o) for o, z in zip(go_t, zeros))
        if d is None:
            d = [[None] * T for _ in d_t]
        for k, q in enumerate(d_t):
            d[k][t] = q
    d = tuple(xp.stack(q, axis=0) for q in d)  # each (T, *batch, .)
    dx, dw = cell.grads(xp, d, x, prev, saved, w, valid_all)
    return dx, g, dw


def per_part(d_out, parts):
    """``backward_cell``'s ``d_out`` as a tuple of ``parts`` entries: an array (or ``None``) is the first part's."""
    if isinstance(d_out, tuple):
        if len(d_out) != parts:
            raise ValueError(f"d_out must hold one entry per part of the state ({parts}); got {len(d_out)}")
        return d_out
    return (d_out,) + (None,) * (parts - 1)


def previous_states(xp, h_seq, h0, lengths, *, reverse):
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


def padding_mask(xp, lengths, T):
    """``(T, *batch, 1)`` booleans: True where step t is within the sequence's length."""
    shape = (T,) + (1,) * lengths.ndim
    steps = xp.reshape(xp.arange(T, dtype=lengths.dtype, device=device(lengths)), shape)
    return (lengths > steps)[..., None]


def _empty_time(xp, cell, x, state0, w, d_finals):
    """The gradients of a forward over T = 0 steps: each part's ``dstate0`` is its ``d_final`` (a new array)."""
    dstate0 = tuple(
        xp.zeros_like(s) if d is None else xp.asarray(d, copy=True)  # never the caller's array
        for s, d in zip(state0, d_finals)
    )
    dw = type(w)(*(None if a is None else xp.zeros_like(a) for a in w))
    return xp.zeros_like(x), dstate0, dw
