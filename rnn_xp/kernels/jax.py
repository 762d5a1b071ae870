"""The recurrence as one ``jax.lax.scan``, compiled once per shape and options.

A Python loop over JAX arrays dispatches a few small operations per step;
``lax.scan`` hands XLA the whole loop, which it compiles into one program.
``_scan`` is jitted with the options as static arguments, so ``jax.jit``
keeps one compiled program per (shapes, dtype, options) and reuses it.

With ``return_sequences=False`` each step projects its own input, so no
``(T, *batch, H)`` array is made. Every product asks for ``precision="highest"``:
on a GPU, float32 products default to TF32. JAX is imported only when JAX arrays
arrive here.
"""

from __future__ import annotations

__all__ = ["scan_jax"]

_JITTED = None

# Every product in full float32 (or float64) precision: on a GPU, JAX's default
# for float32 is TF32 (a 10-bit mantissa), about 1e-3 off the float32 answer.
_PRECISION = "highest"


def scan_jax(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """``scan_portable`` for JAX arrays, as one jitted ``lax.scan``."""
    global _JITTED
    if _JITTED is None:
        import jax

        _JITTED = jax.jit(
            _scan, static_argnames=("nonlinearity", "reverse", "leak", "return_sequences")
        )
    return _JITTED(
        x, h0, Wx, Wh, b, lengths, nonlinearity=nonlinearity, reverse=reverse, leak=leak,
        return_sequences=return_sequences,
    )  # fmt: skip


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
