"""The recurrence as one ``jax.lax.scan``, with rnn_xp's backward as its gradient.

A Python loop over JAX arrays dispatches a few small operations per step;
``lax.scan`` hands XLA the whole loop, which it compiles into one program.
``_scan`` is jitted with the options as static arguments, so ``jax.jit``
keeps one compiled program per (shapes, dtype, options) and reuses it.

With ``return_sequences=False`` each step projects its own input, so no
``(T, *batch, H)`` array is made. Every product asks for ``precision="highest"``:
on a GPU, float32 products default to TF32. JAX is imported only when JAX arrays
arrive here.

The gradient. ``scan_jax`` is a ``jax.custom_vjp``: ``jax.grad``,
``jax.vjp`` and everything built on them (``jax.value_and_grad``,
``jax.jacrev``, per-example gradients under ``jax.vmap``) call rnn_xp's
backward pass instead of differentiating the scan step by step::

    forward  (fwd):  h_seq, h_last = scan(x, h0, Wx, Wh, b)   keeps x, h0, Wx, Wh, h_seq
    backward (bwd):  dx, dh0, dWx, dWh, db = backward(dh, dh_n; x, h0, Wx, Wh, h_seq)

``backward_jax`` (the backward kernel, also behind ``rnn_backward`` on JAX
arrays) walks the steps in one reverse ``lax.scan`` carrying ``dL/dh`` and
then forms ``dx``, ``dWx``, ``dWh`` and ``db`` as one product each. Under
``jax.grad`` with ``return_sequences=False`` the forward still keeps
``h_seq``: the backward needs it. ``jax.jvp`` of a custom reverse-mode rule
is not defined; with ``RNN_XP_AUTODIFF=framework`` JAX differentiates the
scan itself, forward mode included (``kernels.autodiff``).

Options this module's scans do not name (an option a newer forward adds)
run the portable loops instead, under the same rule.
"""

from __future__ import annotations

import functools

from .._compat import is_array
from .autodiff import backward_options, framework_autodiff, split_options, takes, with_bias

__all__ = ["backward_jax", "scan_jax"]

_JITTED = None  # _scan, jitted
_JITTED_BACKWARD = None  # _backward, jitted

# The nonlinearities the scans below compute; any other runs the portable loops.
_NONLINEARITIES = ("tanh", "relu")

# Every product in full float32 (or float64) precision: on a GPU, JAX's default
# for float32 is TF32 (a 10-bit mantissa), about 1e-3 off the float32 answer.
_PRECISION = "highest"


def scan_jax(xp, x, h0, Wx, Wh, b, **options):
    """``scan_portable`` for JAX arrays, as one jitted ``lax.scan`` whose gradient is rnn_xp's backward."""
    if framework_autodiff() or not _traced(x, h0, Wx, Wh, b):
        # Concrete arrays: no transformation is looking, so there is no gradient to
        # register (and the custom_vjp wrapper would cost a millisecond per call).
        return _forward(x, h0, Wx, Wh, b, options)
    settings, data = split_options(options, is_array)
    try:
        return _differentiable(settings)(x, h0, Wx, Wh, b, data)
    except TypeError as exc:
        if "forward-mode" not in str(exc):
            raise
        raise TypeError(
            "rnn_xp registers its own reverse-mode gradient with JAX (jax.custom_vjp), which "
            "jax.jvp, jax.jacfwd and jax.hessian cannot differentiate; set the environment "
            "variable RNN_XP_AUTODIFF=framework to let JAX differentiate the loop itself "
            "(forward mode included)"
        ) from exc


def backward_jax(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options):
    """``backward_portable`` for JAX arrays, as one jitted reverse ``lax.scan``."""
    global _JITTED_BACKWARD
    if not _fits(_backward, options):
        from .portable import backward_portable

        return backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)
    if _JITTED_BACKWARD is None:
        import jax

        _JITTED_BACKWARD = jax.jit(_backward, static_argnames=_static_names(_backward))
    return _JITTED_BACKWARD(dh, x, h0, Wx, Wh, h_seq, dh_n, **options)


def _forward(x, h0, Wx, Wh, b, options):
    """The forward loop without a registered gradient: the jitted scan, or the portable loop."""
    global _JITTED
    if not _fits(_scan, options):
        import jax.numpy as jnp

        from .portable import scan_portable

        return scan_portable(jnp, x, h0, Wx, Wh, b, **options)
    if _JITTED is None:
        import jax

        _JITTED = jax.jit(_scan, static_argnames=_static_names(_scan))
    return _JITTED(x, h0, Wx, Wh, b, **options)


def _traced(*arrays):
    """True when an array is a tracer: a JAX transformation (grad, jit, vmap, ...) is running."""
    import jax

    tracer = getattr(jax.core, "Tracer", None)
    if tracer is None:  # a JAX that hides it: always register the gradient
        return True
    return any(isinstance(a, tracer) for a in arrays)


def _fits(kernel, options):
    return takes(kernel, options) and options.get("nonlinearity", "tanh") in _NONLINEARITIES


def _static_names(kernel):
    """The keyword-only parameters of a scan: its static options (compiled in)."""
    import inspect

    return tuple(
        name for name, p in inspect.signature(kernel).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )  # fmt: skip


@functools.lru_cache(maxsize=None)
def _differentiable(settings):
    """The forward as a ``jax.custom_vjp`` for one set of non-array options, with rnn_xp's backward."""
    import jax
    import jax.numpy as jnp

    settings = dict(settings)
    sequences = settings.get("return_sequences", True)

    @jax.custom_vjp
    def run(x, h0, Wx, Wh, b, data):
        return _forward(x, h0, Wx, Wh, b, {**settings, **data})

    def fwd(x, h0, Wx, Wh, b, data):
        # The backward reads every state, so they are kept even when not returned.
        h_seq, h_last = _forward(x, h0, Wx, Wh, b, {**settings, **data, "return_sequences": True})
        return (h_seq if sequences else None, h_last), (x, h0, Wx, Wh, b, h_seq, data)

    def bwd(residuals, cotangents):
        x, h0, Wx, Wh, b, h_seq, data = residuals
        dh, dh_n = cotangents  # (T, *batch, H) or None, (*batch, H)
        options = backward_options({**settings, **data})
        if _fits(_backward, options):
            grads = backward_jax(jnp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)
        else:  # options only the portable loop runs (it may need the bias)
            from .portable import backward_portable

            options = with_bias(backward_portable, options, b)
            grads = backward_portable(jnp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)
        dx, dh0, dWx, dWh, db = grads
        return dx, dh0, dWx, dWh, None if b is None else db, None  # data: no gradient

    run.defvjp(fwd, bwd)
    return run


def _scan(x, h0, Wx, Wh, b, lengths, *, nonlinearity, reverse, leak, return_sequences):
    import jax
    import jax.numpy as jnp

    f = jnp.tanh if nonlinearity == "tanh" else (lambda z: jnp.clip(z, min=0))
    T = x.shape[0]
    WxT, WhT = Wx.T, Wh.T  # (D, H), (H, H)

    def project(xt):  # (..., D) -> (..., H)
        z = jnp.matmul(xt, WxT, precision=_PRECISION)
        return z if b is None else z + b

    # With sequences: one product for all steps. Without: each step projects its own x_t.
    xs = project(x) if return_sequences else x  # (T, *batch, H) or (T, *batch, D)

    def step(h, inp):
        xt, t = inp
        zx = xt if return_sequences else project(xt)  # (*batch, H)
        h_new = f(zx + jnp.matmul(h, WhT, precision=_PRECISION))
        if leak != 1.0:
            h_new = (1.0 - leak) * h + leak * h_new
        if lengths is None:
            return h_new, (h_new if return_sequences else None)
        valid = (lengths > t)[..., None]  # (*batch, 1)
        out = jnp.where(valid, h_new, jnp.zeros_like(h_new)) if return_sequences else None
        return jnp.where(valid, h_new, h), out

    h_last, h_seq = jax.lax.scan(step, h0, (xs, jnp.arange(T)), reverse=reverse)
    if not return_sequences:
        return None, h_last
    if T == 0:  # lax.scan gives no outputs for an empty loop
        h_seq = jnp.zeros((0, *h0.shape), dtype=h0.dtype)
    return h_seq, h_last


def _backward(dh, x, h0, Wx, Wh, h_seq, dh_n, lengths=None, *, nonlinearity, reverse, leak):
    """``backward_portable`` as one reverse ``lax.scan`` (see ``rnn_xp.backward`` for the math)."""
    import jax
    import jax.numpy as jnp

    hp = _PRECISION  # full float32 products on a GPU too
    T = x.shape[0]
    g0 = jnp.zeros_like(h0) if dh_n is None else dh_n  # (*batch, H): dL/dh reaching the carried state
    if T == 0:
        return jnp.zeros_like(x), g0, jnp.zeros_like(Wx), jnp.zeros_like(Wh), jnp.zeros(Wh.shape[:1], dtype=Wh.dtype)

    # The state each step started from (as in backward_portable): forward h_{t-1},
    # reverse h_{t+1}; h0 at the first step (reverse: at t = L - 1 of a length-L sequence).
    h0_ = h0[None]  # (1, *batch, H)
    if reverse:
        prev = jnp.concatenate([h_seq[1:], h0_], axis=0)  # (T, *batch, H)
        if lengths is not None:
            t_next = jnp.arange(1, T + 1).reshape((T,) + (1,) * lengths.ndim)
            prev = jnp.where((lengths == t_next)[..., None], h0_, prev)
    else:
        prev = jnp.concatenate([h0_, h_seq[:-1]], axis=0)  # (T, *batch, H)
    if nonlinearity == "tanh":
        act = h_seq if leak == 1.0 else (h_seq - (1.0 - leak) * prev) / leak  # f(z_t)
        dh_dz = leak * (1 - act * act)  # (T, *batch, H)
    else:
        # f(z_t) > 0 exactly when h_t > (1 - leak) h_{t-1}: a comparison, because XLA
        # may fuse h_t - (1 - leak) h_{t-1} into one multiply-add, which leaves a
        # rounding residue where f(z_t) = 0 (and would count the unit as active).
        active = h_seq > 0 if leak == 1.0 else h_seq > (1.0 - leak) * prev
        dh_dz = leak * active.astype(h_seq.dtype)

    def step(g, inp):  # g: dL/dh_t from the later steps
        dh_t, d_t, t = inp
        g_t = g if dh_t is None else g + dh_t  # (*batch, H)
        dz_t = g_t * d_t  # (*batch, H): dL/dz_t
        if lengths is not None:
            valid = (lengths > t)[..., None]  # (*batch, 1)
            dz_t = jnp.where(valid, dz_t, jnp.zeros_like(dz_t))
        g_prev = jnp.matmul(dz_t, Wh, precision=hp)  # (*batch, H)
        if leak != 1.0:
            g_prev = g_prev + (1.0 - leak) * g_t
        g_new = g_prev if lengths is None else jnp.where(valid, g_prev, g)
        return g_new, dz_t

    # Against the forward's direction: a forward run goes back from T - 1.
    g, dz = jax.lax.scan(step, g0, (dh, dh_dz, jnp.arange(T)), reverse=not reverse)
    if lengths is not None:
        # Padding never reaches a gradient: its dz is 0, and its inputs and
        # starting states are zeroed too (0 * NaN would be NaN).
        valid_all = (lengths > jnp.arange(T).reshape((T,) + (1,) * lengths.ndim))[..., None]
        x = jnp.where(valid_all, x, jnp.zeros_like(x))  # (T, *batch, D)
        prev = jnp.where(valid_all, prev, jnp.zeros_like(prev))  # (T, *batch, H)
    axes = list(range(x.ndim - 1))  # time and batch
    dx = jnp.matmul(dz, Wx, precision=hp)  # (T, *batch, D)
    dWx = jnp.tensordot(dz, x, axes=(axes, axes), precision=hp)  # (H, D)
    dWh = jnp.tensordot(dz, prev, axes=(axes, axes), precision=hp)  # (H, H)
    db = jnp.sum(dz, axis=tuple(axes))  # (H,)
    return dx, g, dWx, dWh, db
