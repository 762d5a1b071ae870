"""Any cell's recurrence as one ``jax.lax.scan``, with rnn_xp's backward as its gradient.

A Python loop over JAX arrays dispatches a few small operations per step;
``lax.scan`` hands XLA the whole loop, which it compiles into one program.
The scan runs the cell's step (``rnn_xp.cells``: Elman, LSTM, GRU, any cell
of the protocol) with the lengths, mask and reverse logic of
``portable.scan_cell``. A cell is a frozen, hashable dataclass, so ``_scan``
is jitted with the cell and the options as static arguments: ``jax.jit``
keeps one compiled program per (cell, shapes, dtype, options) and reuses it.

With ``return_sequences=False`` each step projects its own input, so no
``(T, *batch, G * H)`` array is made. Every product asks for full precision
(the traced bodies run under ``jax.default_matmul_precision("highest")``):
on a GPU, float32 products default to TF32. JAX is imported only when JAX
arrays arrive here.

The gradient. ``scan_cell_jax`` is a ``jax.custom_vjp``: ``jax.grad``,
``jax.vjp`` and everything built on them (``jax.value_and_grad``,
``jax.jacrev``, per-example gradients under ``jax.vmap``) call rnn_xp's
backward pass instead of differentiating the scan step by step::

    forward  (fwd):  seqs, finals = scan(x, state0, w)   keeps x, state0, w, seqs
    backward (bwd):  dx, dstate0, dw = backward(d_seqs, d_finals; x, state0, w, seqs)

``backward_cell_jax`` (the backward kernel, also behind ``rnn_backward``,
``lstm_backward`` and ``gru_backward`` on JAX arrays) computes what every
step needs at once (``cell.saved``), walks the steps in one reverse
``lax.scan`` over ``cell.step_backward`` carrying the gradient reaching the
state, and then forms ``dx`` and the weight gradients as one product each
(``cell.grads``): ``portable.backward_cell``, as a scan. Under ``jax.grad``
with ``return_sequences=False`` the forward still keeps every state: the
backward needs them. ``jax.jvp`` of a custom reverse-mode rule is not
defined; with ``RNN_XP_AUTODIFF=framework`` JAX differentiates the scan
itself, forward mode included (``kernels.autodiff``).

``scan_jax`` and ``backward_jax`` are the Elman kernels' signatures
(``portable.scan_portable``'s) over these. An option no cell names (an
option a newer forward adds) runs the portable Elman loops instead, under
the same rule.
"""

from __future__ import annotations

import functools

from .._compat import is_array
from ..cells import ElmanWeights
from .autodiff import backward_options, framework_autodiff, split_options, with_bias
from .portable import padding_mask, previous_states, elman_options, per_part

__all__ = ["backward_cell_jax", "backward_jax", "scan_cell_jax", "scan_jax"]

_JITTED = None  # _scan, jitted
_JITTED_BACKWARD = None  # _backward, jitted

# Every product in full float32 (or float64) precision: on a GPU, JAX's default
# for float32 is TF32 (a 10-bit mantissa), about 1e-3 off the float32 answer.
_PRECISION = "highest"


# -- any cell ----------------------------------------------------------------------------------


def scan_cell_jax(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None):
    """``portable.scan_cell`` for JAX arrays: one jitted ``lax.scan`` whose gradient is rnn_xp's backward."""
    state0 = tuple(state0)
    reverse, return_sequences = bool(reverse), bool(return_sequences)
    if framework_autodiff() or not _traced(x, *state0, *w):
        # Concrete arrays: no transformation is looking, so there is no gradient to
        # register (and the custom_vjp wrapper would cost a millisecond per call).
        return _forward(cell, x, state0, w, lengths, mask, reverse, return_sequences)
    try:
        return _differentiable(cell, reverse, return_sequences)(x, state0, w, lengths, mask)
    except TypeError as exc:
        _forward_mode_error(exc)


def backward_cell_jax(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None):
    """``portable.backward_cell`` for JAX arrays: one jitted reverse ``lax.scan``.

    ``d_out`` as ``backward_cell`` takes it: the gradient reaching the
    output, or a tuple with one for each part's states.
    """
    global _JITTED_BACKWARD
    if _JITTED_BACKWARD is None:
        import jax

        _JITTED_BACKWARD = jax.jit(_backward, static_argnames=("cell", "reverse"))
    d_seqs = per_part(d_out, len(state0))
    return _JITTED_BACKWARD(d_seqs, x, tuple(state0), w, tuple(seqs), tuple(d_finals), lengths, mask,
                            cell=cell, reverse=bool(reverse))  # fmt: skip


def _forward(cell, x, state0, w, lengths, mask, reverse, return_sequences):
    """The jitted scan, without a registered gradient."""
    global _JITTED
    if _JITTED is None:
        import jax

        _JITTED = jax.jit(_scan, static_argnames=("cell", "reverse", "return_sequences"))
    return _JITTED(x, state0, w, lengths, mask, cell=cell, reverse=reverse,
                   return_sequences=return_sequences)  # fmt: skip


@functools.lru_cache(maxsize=None)
def _differentiable(cell, reverse, return_sequences):
    """The forward as a ``jax.custom_vjp`` for one cell and options, with rnn_xp's backward."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def run(x, state0, w, lengths, mask):
        return _forward(cell, x, state0, w, lengths, mask, reverse, return_sequences)

    def fwd(x, state0, w, lengths, mask):
        # The backward reads every state, so they are kept even when not returned.
        seqs, finals = _forward(cell, x, state0, w, lengths, mask, reverse, True)
        return (seqs if return_sequences else None, finals), (x, state0, w, seqs, lengths, mask)

    def bwd(residuals, cotangents):
        x, state0, w, seqs, lengths, mask = residuals
        d_seqs, d_finals = cotangents  # a tuple per part (or None), a tuple per part
        dx, dstate0, dw = backward_cell_jax(jnp, cell, d_seqs, x, state0, w, seqs, d_finals,
                                            lengths=lengths, reverse=reverse, mask=mask)  # fmt: skip
        dw = type(w)(*(None if a is None else g for a, g in zip(w, dw)))  # none for a weight not given
        return dx, dstate0, dw, None, None  # lengths, mask: no gradient

    run.defvjp(fwd, bwd)
    return run


def _traced(*arrays):
    """True when an array is a tracer: a JAX transformation (grad, jit, vmap, ...) is running."""
    import jax

    tracer = getattr(jax.core, "Tracer", None)
    if tracer is None:  # a JAX that hides it: always register the gradient
        return True
    return any(isinstance(a, tracer) for a in arrays)


def _forward_mode_error(exc):
    if "forward-mode" not in str(exc):
        raise exc
    raise TypeError(
        "rnn_xp registers its own reverse-mode gradient with JAX (jax.custom_vjp), which "
        "jax.jvp, jax.jacfwd and jax.hessian cannot differentiate; set the environment "
        "variable RNN_XP_AUTODIFF=framework to let JAX differentiate the loop itself "
        "(forward mode included)"
    ) from exc


def _scan(x, state0, w, lengths, mask, *, cell, reverse, return_sequences):
    """``portable.scan_cell`` as one ``lax.scan`` (traced once per cell, shapes and options)."""
    import jax
    import jax.numpy as jnp

    with jax.default_matmul_precision(_PRECISION):
        T = x.shape[0]
        fixed = cell.fixed(jnp, w)
        # With sequences: one product for all steps. Without: each step projects its own x_t.
        xs = cell.project(jnp, x, w) if return_sequences else x  # (T, *batch, G * H) or (T, *batch, D)
        zeros = tuple(jnp.zeros_like(s) for s in state0)  # each (*batch, S_k)

        def step(carry, inp):
            state, prev_out = carry
            xt, t, m = inp
            new = cell.step(jnp, xt if return_sequences else cell.project(jnp, xt, w), state, w, fixed)
            if mask is not None:
                # A masked step keeps the state and repeats the previous output.
                valid = m[..., None]  # (*batch, 1)
                state = tuple(jnp.where(valid, n, s) for n, s in zip(new, state))
                out = prev_out = tuple(jnp.where(valid, n, p) for n, p in zip(new, prev_out))
            elif lengths is not None:
                # Past its length a sequence keeps its state and outputs zeros; run
                # backwards, a sequence of length L starts from state0 at t = L - 1.
                valid = (lengths > t)[..., None]  # (*batch, 1)
                state = tuple(jnp.where(valid, n, s) for n, s in zip(new, state))
                out = tuple(jnp.where(valid, n, z) for n, z in zip(new, zeros))
            else:
                state = out = new
            return (state, prev_out), (out if return_sequences else None)

        carry = (tuple(state0), zeros if mask is not None else None)
        (finals, _), seqs = jax.lax.scan(step, carry, (xs, jnp.arange(T), mask), reverse=reverse)
        if not return_sequences:
            return None, finals
        if T == 0:  # no step ran
            seqs = tuple(jnp.zeros((0, *s.shape), dtype=s.dtype) for s in state0)
        return seqs, finals


def _backward(d_seqs, x, state0, w, seqs, d_finals, lengths, mask, *, cell, reverse):
    """``portable.backward_cell`` with its loop as one reverse ``lax.scan``."""
    import jax
    import jax.numpy as jnp

    with jax.default_matmul_precision(_PRECISION):
        T = x.shape[0]
        g0 = tuple(jnp.zeros_like(s) if d is None else d for s, d in zip(state0, d_finals))
        if T == 0:
            return jnp.zeros_like(x), g0, type(w)(*(None if a is None else jnp.zeros_like(a) for a in w))

        # The state each step started from.
        if mask is not None:
            # seqs repeats the state after the last valid step, zeros before the
            # first: a step with no valid step before it (in the run's order) starts from state0.
            m = mask
            counts = jnp.cumsum(m[::-1] if reverse else m, axis=0, dtype=jnp.int32)
            counts = counts[::-1] if reverse else counts  # valid steps up to t, in the run's order
            before = (counts - m.astype(jnp.int32) > 0)[..., None]  # (T, *batch, 1)
            prev = tuple(jnp.where(before, _shifted(jnp, q, s0, reverse), s0[None])
                         for q, s0 in zip(seqs, state0))  # fmt: skip
            valid_all = m[..., None]  # (T, *batch, 1)
        else:
            prev = tuple(previous_states(jnp, q, s0, lengths, reverse=reverse) for q, s0 in zip(seqs, state0))
            valid_all = None if lengths is None else padding_mask(jnp, lengths, T)  # (T, *batch, 1)
        if valid_all is not None:
            # Padding never reaches a gradient (0 * NaN would be NaN).
            prev = tuple(jnp.where(valid_all, p, jnp.zeros_like(p)) for p in prev)

        fixed = cell.fixed(jnp, w)
        saved = cell.saved(jnp, x, prev, seqs, w, fixed, from_outputs=mask is None)

        def step(carry, inp):
            g, go = carry  # the gradient reaching the state after step t; with a mask, the previous seqs entry
            saved_t, prev_t, d_t_seqs, valid = inp
            if mask is not None:
                go_t = tuple(None if o is None else o + q for o, q in zip(go, d_t_seqs))
                g_t = tuple(s if o is None else s + o for s, o in zip(g, go_t))
            else:
                g_t = tuple(s if q is None else s + q for s, q in zip(g, d_t_seqs))
            d_t, g_prev = cell.step_backward(jnp, saved_t, prev_t, g_t, w, fixed)
            if valid is not None:
                d_t = tuple(jnp.where(valid, q, jnp.zeros_like(q)) for q in d_t)
                # A frozen (or masked) step passes the carried gradient through unchanged.
                g = tuple(jnp.where(valid, n, o) for n, o in zip(g_prev, g))
            else:
                g = g_prev
            if mask is not None:
                go = tuple(None if o is None else jnp.where(valid, jnp.zeros_like(o), o) for o in go_t)
            return (g, go), d_t

        go0 = None
        if mask is not None:
            go0 = tuple(None if q is None else jnp.zeros_like(s) for q, s in zip(d_seqs, state0))
        # Against the forward's direction: a forward run goes back from T - 1.
        (g, _), d = jax.lax.scan(step, (g0, go0), (saved, prev, tuple(d_seqs), valid_all),
                                 reverse=not reverse)  # fmt: skip
        dx, dw = cell.grads(jnp, d, x, prev, saved, w, valid_all)
        return dx, g, dw


def _shifted(jnp, seq, s0, reverse):
    """``seq`` one step later in the run's order, ``s0`` first: ``seq[t - 1]`` (reverse ``seq[t + 1]``)."""
    if reverse:
        return jnp.concatenate([seq[1:], s0[None]], axis=0)
    return jnp.concatenate([s0[None], seq[:-1]], axis=0)


# -- the Elman kernels' signatures ---------------------------------------------------------------


def scan_jax(xp, x, h0, Wx, Wh, b, **options):
    """``scan_portable`` for JAX arrays: ``scan_cell_jax`` with the Elman cell of the options."""
    cell, run, extra = elman_options(options)
    if extra:
        return _extended(x, h0, Wx, Wh, b, options)
    seqs, finals = scan_cell_jax(xp, cell, x, (h0,), ElmanWeights(Wx, Wh, b), lengths=run.get("lengths"),
                                 reverse=run.get("reverse", False), mask=run.get("mask"),
                                 return_sequences=run.get("return_sequences", True))  # fmt: skip
    return (None if seqs is None else seqs[0]), finals[0]


def backward_jax(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options):
    """``backward_portable`` for JAX arrays: ``backward_cell_jax`` with the Elman cell of the options."""
    b = options.pop("b", None)  # the forward's bias, for a cell that recomputes z_t
    cell, run, extra = elman_options(options)
    if extra:
        from .portable import backward_portable

        return backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, b=b, **options)
    dx, (dh0,), dw = backward_cell_jax(xp, cell, dh, x, (h0,), ElmanWeights(Wx, Wh, b), (h_seq,), (dh_n,),
                                       lengths=run.get("lengths"), reverse=run.get("reverse", False),
                                       mask=run.get("mask"))  # fmt: skip
    db = dw.b
    if db is None:  # T = 0 without a bias
        import jax.numpy as jnp

        db = jnp.zeros(Wh.shape[:1], dtype=Wh.dtype)
    return dx, dh0, dw.Wx, dw.Wh, db


def _extended(x, h0, Wx, Wh, b, options):
    """Elman with an option no cell names: the portable Elman loops, their gradient registered alike."""
    import jax.numpy as jnp

    from . import portable

    if framework_autodiff() or not _traced(x, h0, Wx, Wh, b):
        return portable.scan_portable(jnp, x, h0, Wx, Wh, b, **options)
    settings, data = split_options(options, is_array)
    try:
        return _extended_differentiable(settings)(x, h0, Wx, Wh, b, data)
    except TypeError as exc:
        _forward_mode_error(exc)


@functools.lru_cache(maxsize=None)
def _extended_differentiable(settings):
    import jax
    import jax.numpy as jnp

    from . import portable

    settings = dict(settings)
    sequences = settings.get("return_sequences", True)

    @jax.custom_vjp
    def run(x, h0, Wx, Wh, b, data):
        return portable.scan_portable(jnp, x, h0, Wx, Wh, b, **settings, **data)

    def fwd(x, h0, Wx, Wh, b, data):
        h_seq, h_last = portable.scan_portable(jnp, x, h0, Wx, Wh, b, **{**settings, **data, "return_sequences": True})
        return (h_seq if sequences else None, h_last), (x, h0, Wx, Wh, b, h_seq, data)

    def bwd(residuals, cotangents):
        x, h0, Wx, Wh, b, h_seq, data = residuals
        dh, dh_n = cotangents
        options = with_bias(portable.backward_portable, backward_options({**settings, **data}), b)
        dx, dh0, dWx, dWh, db = portable.backward_portable(jnp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)
        return dx, dh0, dWx, dWh, None if b is None else db, None  # data: no gradient

    run.defvjp(fwd, bwd)
    return run
