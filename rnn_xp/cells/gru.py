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
    h_t = n + z * (h_{t-1} - n)                         # (1 - z) n + z h_{t-1}, as torch writes it

Backward, with ``gh`` the gradient reaching ``h_t`` (``dn``, ``dz``, ``dr``
the gradients of the pre-activations)::

    dn = gh * (1 - z) * ga'(.)     dz = gh * (h_{t-1} - n) * fa'(.)
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
    MATMULS,
    CellBase,
    Sizes,
    activated,
    batch_sum,
    check_matrix,
    check_vector,
    gate_activations,
    rows_matmul,
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
    carried = (0,)  # pointwise reads h elementwise (and through the product)
    roles = ("fa", "ga")  # the activations by role, in ``activations``' order
    clipped = ("fa", "ga")
    separate_recurrent_grads = True  # pointwise_backward's dh differs from dx (the reset multiplies u_n)
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
        object.__setattr__(self, "_acts", acts)  # fa, ga

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

    # -- forward ---------------------------------------------------------------

    def input_weights(self, w):
        """``(W_ih, b_ih)``: ``project`` is ``x @ W_ih.T + b_ih`` (``b_hh`` is ``recurrent_bias``)."""
        return w.W_ih, w.b_ih

    def fixed(self, xp, w):
        H = w.W_hh.shape[1]
        if self.linear_before_reset:
            return w.W_hh.T, None  # (H, 3H)
        return w.W_hh[:2 * H, ...].T, w.W_hh[2 * H:, ...].T  # (H, 2H) for r and z, (H, H) for n

    def projection(self, w):
        """No projection: ``h_t`` is ``pointwise``'s result."""
        return None

    def extras(self, w):
        """What ``pointwise`` and ``pointwise_backward`` take after ``carry``: nothing."""
        return ()

    def recurrent_bias(self, w):
        """The bias added to the recurrent product before ``pointwise``: ``b_hh`` (``b_hn`` stays inside the reset)."""
        return w.b_hh

    def step(self, xp, xg_t, state, w, fixed):
        (h,) = state  # (*batch, H)
        ops = self.ops(xp)
        if self.linear_before_reset:
            u = h @ fixed[0]  # (*batch, 3H)
            if w.b_hh is not None:
                u = u + w.b_hh
            return self.pointwise(ops, split_gates(xg_t, 3), split_gates(u, 3), (h,))
        # The reset before the product: a product between the gates and the
        # candidate, so not one elementwise function; the same lines around it.
        a_r, a_z, a_n = split_gates(xg_t, 3)
        u = h @ fixed[0]  # (*batch, 2H)
        if w.b_hh is not None:
            u = u + w.b_hh[:2 * h.shape[-1]]
        u_r, u_z = split_gates(u, 2)
        r = ops.fa(a_r + u_r)
        z = ops.fa(a_z + u_z)
        zn = a_n + (r * h) @ fixed[1]
        if w.b_hh is not None:
            zn = zn + w.b_hh[2 * h.shape[-1]:]
        n = ops.ga(zn)
        return (n + z * (h - n),)

    @staticmethod
    def pointwise(ops, xg, hg, carry):
        """One step's elementwise part (the reset after the product), on whole arrays or one unit's numbers alike.

        ``xg`` holds the gate blocks r, z, n of the projected input (with
        ``b_ih``), ``hg`` those of ``h @ W_hh.T + b_hh``; ``carry`` is
        ``(h_{t-1},)``; ``ops`` the activations by role (``fa``, ``ga``).
        Returns ``(h_t,)``, written as torch writes it, ``n + z (h - n)``.
        Every kernel's step is this (the compiled loops compile it).
        """
        (h,) = carry
        r = ops.fa(xg[0] + hg[0])
        z = ops.fa(xg[1] + hg[1])
        n = ops.ga(xg[2] + r * hg[2])
        return (n + z * (h - n),)

    # -- backward --------------------------------------------------------------

    def saved(self, xp, x, prev, seqs, w, fixed, *, from_outputs, products=None):
        """Per step ``(r, z, n, dr, dz, dn, u_n)`` ``(T, *batch, H)``; ``u_n`` is ``r * h_{t-1}`` before the reset.

        ``products``: ``(xg, hg)``, the forward's ``project`` and
        ``h @ W_hh.T + b_hh`` (all three blocks) of every step (``None``:
        both computed here).
        """
        (h_prev,) = prev
        H = h_prev.shape[-1]
        fa, ga, = self._acts
        a_r, a_z, a_n = split_gates(self.project(xp, x, w) if products is None else products[0], 3)
        b_hh = w.b_hh
        if products is not None:
            u_r, u_z, u_n = split_gates(products[1], 3)  # u_n is replaced below without linear_before_reset
        elif self.linear_before_reset:
            u = rows_matmul(xp, h_prev, fixed[0])  # (T, *batch, 3H)
            if b_hh is not None:
                u = u + b_hh
            u_r, u_z, u_n = split_gates(u, 3)
        else:
            u = rows_matmul(xp, h_prev, fixed[0])  # (T, *batch, 2H)
            if b_hh is not None:
                u = u + b_hh[:2 * H]
            u_r, u_z = split_gates(u, 2)
        r, dr = activated(xp, fa, a_r + u_r, self.clip)
        z, dz = activated(xp, fa, a_z + u_z, self.clip)
        if self.linear_before_reset:
            zn = a_n + r * u_n
        else:
            u_n = r * h_prev  # the reset state, for dW_hn
            zn = a_n + rows_matmul(xp, u_n, fixed[1])
            if b_hh is not None:
                zn = zn + b_hh[2 * H:]
        n, dn = activated(xp, ga, zn, self.clip)
        return r, z, n, dr, dz, dn, u_n

    def step_backward(self, xp, saved_t, prev_t, g_t, w, fixed):
        (h_prev,), (gh,) = prev_t, g_t
        if self.linear_before_reset:
            da, du, (direct,) = self.pointwise_backward(self.ops(xp), saved_t, (h_prev,), (gh,))
            du = xp.concat(du, axis=-1)  # (*batch, 3H): dL/d(h W_hh.T + b_hh)
            return (xp.concat(da, axis=-1), du), (du @ w.W_hh + direct,)
        # The reset before the product (see step): its own lines.
        r, z, n, dr, dz, dn, u_n = saved_t
        H = h_prev.shape[-1]
        dzn = gh * (1 - z) * dn  # (*batch, H)
        dzz = gh * (h_prev - n) * dz
        d_rh = dzn @ w.W_hh[2 * H:, ...]  # (*batch, H): dL/d(r * h_{t-1})
        dzr = d_rh * h_prev * dr
        da = xp.concat([dzr, dzz, dzn], axis=-1)  # (*batch, 3H)
        g_prev = da[..., :2 * H] @ w.W_hh[:2 * H, ...] + d_rh * r + gh * z
        return (da,), (g_prev,)

    @staticmethod
    def pointwise_backward(ops, saved, carry, grads):
        """The elementwise part of one step's gradient (``pointwise``'s), on arrays or numbers alike.

        ``saved`` the step's entries of ``saved``; ``carry`` ``(h_{t-1},)``;
        ``grads`` ``(gh,)``, the gradient reaching ``h_t``. Returns ``(dx,
        dh, dcarry)``: the gradients of the gate blocks r, z, n of the
        projected input and of ``h @ W_hh.T + b_hh``, and ``(gh * z,)``, the
        part of ``dL/dh_{t-1}`` that does not go through the product
        (``dL/dh_{t-1} = concat(dh) @ W_hh + gh * z``). As torch's autograd
        takes it from ``h_t = n + z (h - n)``: ``dL/dn = gh (1 - z)``, ``1 - z`` as
        ``ops.complement(z)`` (in the compiled loops a float32 step stays float32;
        XLA's CPU compiler gave wrong gradients under ``jax.vmap`` for the
        spelling ``gh - gh z`` inside the backward ``lax.scan``, jax 0.10.2).
        """
        r, z, n, dr, dz, dn, u_n = saved
        (h_prev,) = carry
        (gh,) = grads
        dzn = gh * ops.complement(z) * dn
        dzz = gh * (h_prev - n) * dz
        dzr = dzn * u_n * dr
        return (dzr, dzz, dzn), (dzr, dzz, dzn * r), (gh * z,)

    def grads_input(self, dx, dh, gh):
        """``grads``'s ``d`` from every step's gate gradients ``dx`` and ``dh`` (``gh`` is not needed)."""
        return dx, dh

    def grads(self, xp, d, x, prev, saved, w, valid, matmuls=MATMULS):
        (h_prev,) = prev
        da = d[0]  # (T, *batch, 3H)
        x = zero_invalid(xp, x, valid)
        dx = matmuls.rows_matmul(xp, da, w.W_ih)  # (T, *batch, D)
        dW_ih = matmuls.outer_sum(xp, da, x)  # (3H, D)
        db_ih = batch_sum(xp, da)
        if self.linear_before_reset:
            du = d[1]
            dW_hh = matmuls.outer_sum(xp, du, h_prev, valid)  # (3H, H)
            db_hh = batch_sum(xp, du)
        else:
            H = h_prev.shape[-1]
            u_n = saved[6]  # r * h_{t-1}
            dW_hh = xp.concat([matmuls.outer_sum(xp, da[..., :2 * H], h_prev, valid),
                               matmuls.outer_sum(xp, da[..., 2 * H:], u_n, valid)], axis=0)  # fmt: skip
            db_hh = xp.asarray(db_ih, copy=True)
        return dx, GRUWeights(dW_ih, dW_hh, None if w.b_ih is None else db_ih,
                              None if w.b_hh is None else db_hh)  # fmt: skip
