"""The GRU cell: three gate blocks (torch's order r, z, n), the state ``h``.

Forward, one step (``fa``, ``ga`` the gate and candidate activations,
sigmoid and tanh by default; each pre-activation clipped to ``[-clip,
clip]`` when ``clip`` is given)::

    a   = x_t @ W_ih.T + b_ih                           # (*batch, 3H): a_r, a_z, a_n
    u   = h_{t-1} @ W_hh.T + b_hh                       # (*batch, 3H): u_r, u_z, u_n
    r   = fa(a_r + u_r),   z = fa(a_z + u_z)
    n   = ga(a_n + r * u_n)                             # reset after the product (torch)
    n   = ga(a_n + (r * h_{t-1}) @ W_hn.T + b_hn)       # reset before it (ONNX's default,
                                                        # linear_before_reset=0; Keras's reset_after=False)
    h_t = (1 - z) * n + z * h_{t-1}

Backward, with ``gh`` the gradient reaching ``h_t`` (``dn``, ``dz``, ``dr``
the gradients of the pre-activations)::

    dn = gh * (1 - z) * ga'(.)       dz = gh * (h_{t-1} - n) * fa'(.)
    after:  dr = dn * u_n * fa'(.);  d(u) = [dr, dz, dn * r]
            gh_{t-1} = d(u) @ W_hh + gh * z
    before: d(rh) = dn @ W_hn;  dr = d(rh) * h_{t-1} * fa'(.)
            gh_{t-1} = [dr, dz] @ W_h[rz] + d(rh) * r + gh * z

The gates are recomputed for all steps at once from the input and the
states each step started from, so the forward keeps nothing but ``h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .._activations import check_clip
from .._checks import check_bool
from ._base import (
    CellBase,
    Sizes,
    activated,
    batch_sum,
    check_matrix,
    check_vector,
    gate_activations,
    outer_sum,
    split_gates,
    zero_invalid,
)

__all__ = ["GRUCell", "GRUWeights"]

_DEFAULTS = ("sigmoid", "tanh")


class GRUWeights(NamedTuple):
    """A GRU's weights under torch's names: ``W_ih (3H, D)``, ``W_hh (3H, H)``, ``b_ih``, ``b_hh (3H,)``.

    Gates in torch's order r, z, n. ``b_hh``'s last block ``b_hn`` stays
    inside the reset (``r * (h W_hn.T + b_hn)``) when the reset comes after
    the product.
    """

    W_ih: object
    W_hh: object
    b_ih: object = None
    b_hh: object = None


@dataclass(frozen=True)
class GRUCell(CellBase):
    """The GRU step (see the module docstring), with ONNX's options.

    Parameters
    ----------
    activations : sequence of 2 str, optional
        ``(f, g)``: the gates' activation and the candidate's (ONNX's
        ``activations``); default ``("sigmoid", "tanh")``.
    activation_alpha, activation_beta : sequence of 2, optional
        Their parameters (``None`` entries for the defaults).
    clip : float, optional
        Bound of every pre-activation.
    linear_before_reset : bool, optional
        True (torch's GRU, ONNX's ``linear_before_reset=1``, Keras's
        ``reset_after=True``): the reset gate multiplies ``h @ W_hn.T +
        b_hn``. False (ONNX's default, Keras's ``reset_after=False``): it
        multiplies ``h`` before the product.
    """

    activations: tuple = _DEFAULTS
    activation_alpha: tuple = None
    activation_beta: tuple = None
    clip: object = None
    linear_before_reset: bool = True

    name = "gru"
    gates = 3
    state_names = ("h",)
    Weights = GRUWeights
    required = ("W_ih", "W_hh")

    def __post_init__(self):
        acts = gate_activations("a GRU", self.activations, self.activation_alpha,
                                self.activation_beta, _DEFAULTS)  # fmt: skip
        object.__setattr__(self, "activations", tuple(a.name for a in acts))
        given = lambda vs: None if vs is None else tuple(None if v is None else float(v) for v in vs)  # noqa: E731
        object.__setattr__(self, "activation_alpha", given(self.activation_alpha))
        object.__setattr__(self, "activation_beta", given(self.activation_beta))
        object.__setattr__(self, "clip", check_clip(self.clip))
        object.__setattr__(self, "linear_before_reset",
                           check_bool("linear_before_reset", self.linear_before_reset))  # fmt: skip
        object.__setattr__(self, "_acts", acts)
        object.__setattr__(self, "_fns", tuple(a.f() for a in acts))  # fa, ga: f(xp, z)

    @property
    def plain(self):
        """Default activations without parameters, no clip, the reset after the product (torch's GRU)."""
        return (self.activations == _DEFAULTS and self.activation_alpha is None
                and self.activation_beta is None and self.clip is None
                and self.linear_before_reset)  # fmt: skip

    def check_weights(self, w):
        W_ih, W_hh, b_ih, b_hh = w
        check_matrix("W_ih", W_ih, None, None, "(3 * H, D)")
        rows, D = W_ih.shape
        if rows % 3:
            raise ValueError(
                f"W_ih must have shape (3 * H, D): its rows hold the gates r, z, n; got shape "
                f"({rows}, {D}), whose {rows} rows are not a multiple of 3"
            )
        H = rows // 3
        check_matrix("W_hh", W_hh, 3 * H, H, f"(3 * H, H) with H = {H} (from W_ih (3 * H, D))")
        for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
            check_vector(name, b, 3 * H, f"(3 * H,) with H = {H}")
        return Sizes(H, D, (H,))

    def _clip(self, xp, z):
        return z if self.clip is None else xp.clip(z, min=-self.clip, max=self.clip)

    # -- forward ---------------------------------------------------------------

    def project(self, xp, x, w):
        xg = x @ w.W_ih.T  # (T, *batch, 3H): one product for all steps
        return xg if w.b_ih is None else xg + w.b_ih

    def fixed(self, xp, w):
        H = w.W_hh.shape[1]
        if self.linear_before_reset:
            return w.W_hh.T, None  # (H, 3H)
        return w.W_hh[:2 * H, ...].T, w.W_hh[2 * H:, ...].T  # (H, 2H) for r and z, (H, H) for n

    def step(self, xp, xg_t, state, w, fixed):
        (h,) = state  # (*batch, H)
        fa, ga = self._fns
        a_r, a_z, a_n = split_gates(xg_t, 3)
        if self.linear_before_reset:
            u = h @ fixed[0]  # (*batch, 3H)
            if w.b_hh is not None:
                u = u + w.b_hh
            u_r, u_z, u_n = split_gates(u, 3)
        else:
            u = h @ fixed[0]  # (*batch, 2H)
            if w.b_hh is not None:
                u = u + w.b_hh[:2 * h.shape[-1]]
            u_r, u_z = split_gates(u, 2)
        r = fa(xp, self._clip(xp, a_r + u_r))
        z = fa(xp, self._clip(xp, a_z + u_z))
        if self.linear_before_reset:
            zn = a_n + r * u_n
        else:
            zn = a_n + (r * h) @ fixed[1]
            if w.b_hh is not None:
                zn = zn + w.b_hh[2 * h.shape[-1]:]
        n = ga(xp, self._clip(xp, zn))
        return ((1 - z) * n + z * h,)

    # -- backward --------------------------------------------------------------

    def saved(self, xp, x, prev, seqs, w, fixed, *, from_outputs):
        """Per step ``(r, z, n, dr, dz, dn, u_n)`` ``(T, *batch, H)``; ``u_n`` is ``r * h_{t-1}`` before the reset."""
        (h_prev,) = prev
        H = h_prev.shape[-1]
        fa, ga, = self._acts
        a_r, a_z, a_n = split_gates(self.project(xp, x, w), 3)
        b_hh = w.b_hh
        if self.linear_before_reset:
            u = h_prev @ fixed[0]  # (T, *batch, 3H)
            if b_hh is not None:
                u = u + b_hh
            u_r, u_z, u_n = split_gates(u, 3)
        else:
            u = h_prev @ fixed[0]  # (T, *batch, 2H)
            if b_hh is not None:
                u = u + b_hh[:2 * H]
            u_r, u_z = split_gates(u, 2)
        r, dr = activated(xp, fa, a_r + u_r, self.clip)
        z, dz = activated(xp, fa, a_z + u_z, self.clip)
        if self.linear_before_reset:
            zn = a_n + r * u_n
        else:
            u_n = r * h_prev  # the reset state, for dW_hn
            zn = a_n + u_n @ fixed[1]
            if b_hh is not None:
                zn = zn + b_hh[2 * H:]
        n, dn = activated(xp, ga, zn, self.clip)
        return r, z, n, dr, dz, dn, u_n

    def step_backward(self, xp, saved_t, prev_t, g_t, w, fixed):
        r, z, n, dr, dz, dn, u_n = saved_t
        (h_prev,), (gh,) = prev_t, g_t
        H = h_prev.shape[-1]
        dzn = gh * (1 - z) * dn  # (*batch, H)
        dzz = gh * (h_prev - n) * dz
        direct = gh * z  # through h_t = ... + z * h_{t-1}
        if self.linear_before_reset:
            dzr = dzn * u_n * dr
            da = xp.concat([dzr, dzz, dzn], axis=-1)  # (*batch, 3H): dL/d(x W_ih.T + b_ih)
            du = xp.concat([dzr, dzz, dzn * r], axis=-1)  # dL/d(h W_hh.T + b_hh)
            return (da, du), (du @ w.W_hh + direct,)
        d_rh = dzn @ w.W_hh[2 * H:, ...]  # (*batch, H): dL/d(r * h_{t-1})
        dzr = d_rh * h_prev * dr
        da = xp.concat([dzr, dzz, dzn], axis=-1)  # (*batch, 3H)
        g_prev = da[..., :2 * H] @ w.W_hh[:2 * H, ...] + d_rh * r + direct
        return (da,), (g_prev,)

    def grads(self, xp, d, x, prev, saved, w, valid):
        (h_prev,) = prev
        da = d[0]  # (T, *batch, 3H)
        x = zero_invalid(xp, x, valid)
        dx = da @ w.W_ih  # (T, *batch, D)
        dW_ih = outer_sum(xp, da, x)  # (3H, D)
        db_ih = batch_sum(xp, da)
        if self.linear_before_reset:
            du = d[1]
            dW_hh = outer_sum(xp, du, h_prev, valid)  # (3H, H)
            db_hh = batch_sum(xp, du)
        else:
            H = h_prev.shape[-1]
            u_n = saved[6]  # r * h_{t-1}
            dW_hh = xp.concat([outer_sum(xp, da[..., :2 * H], h_prev, valid),
                               outer_sum(xp, da[..., 2 * H:], u_n, valid)], axis=0)  # fmt: skip
            db_hh = xp.asarray(db_ih, copy=True)
        return dx, GRUWeights(dW_ih, dW_hh, None if w.b_ih is None else db_ih,
                              None if w.b_hh is None else db_hh)  # fmt: skip
