"""The Elman cell: one gate block, the state ``h``, an activation and a leak.

Forward, one step (``a`` the leak rate, 1.0 for a plain RNN; ``f`` tanh,
relu or any activation of the ONNX ``RNN`` operator, applied to ``z``
clipped to ``[-clip, clip]`` when ``clip`` is given)::

    z_t = x_t @ Wx.T + h_{t-1} @ Wh.T + b          # (*batch, H)
    h_t = (1 - a) * h_{t-1} + a * f(z_t)           # (*batch, H)

Backward, with ``g_t = dL/dh_t``::

    dz_t     = g_t * a * f'(z_t)                    # (*batch, H)
    g_{t-1}  = dz_t @ Wh + (1 - a) * g_t            # (*batch, H)
    dx_t = dz_t @ Wx,  dWx = sum dz_t.T @ x_t,  dWh = sum dz_t.T @ h_{t-1},  db = sum dz_t

For tanh and relu (no clip, no parameters) ``f'(z_t)`` is read off the
forward's output, ``f(z_t) = h_t`` at ``a = 1`` and ``(h_t - (1 - a)
h_{t-1}) / a`` otherwise; for the others, and with a mask, ``z_t`` is
recomputed (one product over all steps) and ``f'`` taken there, zero where
``clip`` cut it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .._activations import activation, check_activation, check_clip, derivative, derivative_at, is_plain
from .._checks import check_leak, check_weights
from ._base import MATMULS, CellBase, Sizes, batch_sum, rows_matmul, zero_invalid

__all__ = ["ElmanCell", "ElmanWeights"]


class ElmanWeights(NamedTuple):
    """``Wx (H, D)``, ``Wh (H, H)``, ``b (H,)`` or ``None`` (``rnn_forward``'s names)."""

    Wx: object
    Wh: object
    b: object = None


@dataclass(frozen=True)
class ElmanCell(CellBase):
    """The Elman step ``h' = (1 - leak) h + leak f(clip(x Wx.T + h Wh.T + b))``.

    Parameters
    ----------
    nonlinearity : str
        ``f``, any of ``rnn_forward``'s activations.
    alpha, beta : float or None
        The activation's parameters (``None``: ONNX's defaults).
    clip : float or None
        Bound of the pre-activation.
    leak : float
        Leak rate in ``(0, 1]``.
    """

    nonlinearity: str = "tanh"
    alpha: object = None
    beta: object = None
    clip: object = None
    leak: float = 1.0

    name = "elman"
    gates = 1
    state_names = ("h",)
    Weights = ElmanWeights
    required = ("Wx", "Wh")

    def __post_init__(self):
        name, alpha, beta = check_activation(self.nonlinearity, self.alpha, self.beta)
        object.__setattr__(self, "nonlinearity", name)
        object.__setattr__(self, "clip", check_clip(self.clip))
        object.__setattr__(self, "leak", check_leak(self.leak))
        # the parameters as given (None for the defaults): the fast kernels take only those
        object.__setattr__(self, "alpha", None if self.alpha is None else alpha)
        object.__setattr__(self, "beta", None if self.beta is None else beta)
        object.__setattr__(self, "_f", activation(name, alpha, beta))  # f(xp, z), made once

    @property
    def plain(self):
        """tanh or relu, no parameters, no clip: what every fast kernel runs."""
        return is_plain(self.nonlinearity, self.alpha, self.beta, self.clip)

    def check_weights(self, w):
        H, D = check_weights(*w)
        return Sizes(H, D, (H,))

    # -- forward ---------------------------------------------------------------

    def input_weights(self, w):
        """``(Wx, b)``: ``project`` is ``x @ Wx.T + b``."""
        return w.Wx, w.b

    def fixed(self, xp, w):
        return w.Wh.T  # (H, H)

    def step(self, xp, xg_t, state, w, WhT):
        (h,) = state
        z = xg_t + h @ WhT  # (*batch, H)
        if self.clip is not None:
            z = xp.clip(z, min=-self.clip, max=self.clip)
        h_new = self._f(xp, z)  # (*batch, H)
        if self.leak != 1.0:
            h_new = (1.0 - self.leak) * h + self.leak * h_new
        return (h_new,)

    # -- backward --------------------------------------------------------------

    def saved(self, xp, x, prev, seqs, w, WhT, *, from_outputs):
        """``(dh_dz,)``: ``leak * f'(z_t)`` for every step ``(T, *batch, H)``."""
        leak = self.leak
        if from_outputs and self.plain:
            (h_seq,), (h_prev,) = seqs, prev
            if self.nonlinearity == "relu":
                # f(z_t) > 0 exactly when h_t > (1 - leak) h_{t-1}: a comparison, because a
                # compiler (XLA) may fuse h_t - (1 - leak) h_{t-1} into one multiply-add, which
                # leaves a rounding residue where f(z_t) = 0 (and would count the unit as active).
                active = h_seq > 0 if leak == 1.0 else h_seq > (1.0 - leak) * h_prev
                return (leak * xp.astype(active, h_seq.dtype),)
            act = h_seq if leak == 1.0 else (h_seq - (1.0 - leak) * h_prev) / leak  # f(z_t)
            return (leak * derivative(self.nonlinearity)(xp, act),)
        z = rows_matmul(xp, x, w.Wx.T) + rows_matmul(xp, prev[0], WhT)  # (T, *batch, H): the pre-activation, recomputed
        if w.b is not None:
            z = z + w.b
        df = derivative_at(self.nonlinearity, self.alpha, self.beta)
        if self.clip is None:
            return (leak * df(xp, z),)
        clip = self.clip
        inside = (z >= -clip) & (z <= clip)  # clipping passes no gradient outside
        return (xp.where(inside, leak * df(xp, xp.clip(z, min=-clip, max=clip)), xp.zeros_like(z)),)

    def step_backward(self, xp, saved_t, prev_t, g_t, w, WhT):
        (dh_dz,), (g,) = saved_t, g_t
        dz = g * dh_dz  # (*batch, H): dL/dz_t
        g_prev = dz @ w.Wh  # (*batch, H): dL/dh_{t-1} through z_t
        if self.leak != 1.0:
            g_prev = g_prev + (1.0 - self.leak) * g  # ... and through the leak
        return (dz,), (g_prev,)

    def grads(self, xp, d, x, prev, saved, w, valid, matmuls=MATMULS):
        (dz,) = d
        x = zero_invalid(xp, x, valid)
        dx = matmuls.rows_matmul(xp, dz, w.Wx)  # (T, *batch, D)
        dWx = matmuls.outer_sum(xp, dz, x)  # (H, D)
        dWh = matmuls.outer_sum(xp, dz, prev[0], valid)  # (H, H)
        return dx, ElmanWeights(dWx, dWh, batch_sum(xp, dz))
