"""The LSTM cell: four gate blocks (torch's order i, f, g, o), the state ``(h, c)``.

Forward, one step (``fa``, ``ga``, ``ha`` the gate, cell-input and
cell-output activations, sigmoid/tanh/tanh by default; ``p_i``, ``p_f``,
``p_o`` the optional peepholes; each gate's pre-activation clipped to
``[-clip, clip]`` when ``clip`` is given, as ONNX and onnxruntime do)::

    z   = x_t @ W_ih.T + b_ih + b_hh + h_{t-1} @ W_hh.T     # (*batch, 4H)
    i   = fa(z_i + p_i * c_{t-1})                           # (*batch, H)
    f   = fa(z_f + p_f * c_{t-1})      (1 - i with input_forget)
    g   = ga(z_g)
    c_t = f * c_{t-1} + i * g                               # (*batch, H)
    o   = fa(z_o + p_o * c_t)
    m   = o * ha(c_t)                                       # (*batch, H)
    h_t = m @ W_hr.T    (m without a projection)            # (*batch, P)

Backward, with ``gh``, ``gc`` the gradients reaching ``h_t`` and ``c_t``::

    dm   = gh @ W_hr  (gh without a projection)
    do   = dm * ha(c_t) * fa'(.)
    dc   = gc + dm * o * ha'(c_t) + do * p_o
    di   = dc * g * fa'(.),  df = dc * c_{t-1} * fa'(.),  dg = dc * i * ga'(.)
    gh_{t-1} = [di, df, dg, do] @ W_hh,   gc_{t-1} = dc * f + di * p_i + df * p_f

(with ``input_forget``, ``f = 1 - i``: ``df`` is zero and ``di`` takes
``-dc * c_{t-1}`` more). The gates are recomputed for all steps at once
from the input and the states each step started from (two products), so
the forward keeps nothing but its states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .._checks import check_bool
from .._activations import check_clip
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

__all__ = ["LSTMCell", "LSTMWeights"]

_DEFAULTS = ("sigmoid", "tanh", "tanh")


class LSTMWeights(NamedTuple):
    """An LSTM's weights under torch's names (per layer and direction).

    ``W_ih (4H, D)``, ``W_hh (4H, P)``, ``b_ih (4H,)``, ``b_hh (4H,)``,
    ``W_hr (P, H)`` (the projection, ``None`` without one: then ``P = H``)
    and ``peepholes (3H,)``, the peephole weights of the gates i, f, o in
    that order (``None`` without them). Gates in torch's order i, f, g, o.
    """

    W_ih: object
    W_hh: object
    b_ih: object = None
    b_hh: object = None
    W_hr: object = None
    peepholes: object = None


@dataclass(frozen=True)
class LSTMCell(CellBase):
    """The LSTM step (see the module docstring), with ONNX's options.

    Parameters
    ----------
    activations : sequence of 3 str, optional
        ``(f, g, h)``: the gates' activation, the cell input's and the cell
        output's (ONNX's ``activations``); default ``("sigmoid", "tanh", "tanh")``.
    activation_alpha, activation_beta : sequence of 3, optional
        Their parameters (``None`` entries for the defaults).
    clip : float, optional
        Bound of every gate's pre-activation.
    input_forget : bool, optional
        Couple the forget gate to the input gate, ``f = 1 - i`` (ONNX's
        ``input_forget=1``).
    """

    activations: tuple = _DEFAULTS
    activation_alpha: tuple = None
    activation_beta: tuple = None
    clip: object = None
    input_forget: bool = False

    name = "lstm"
    gates = 4
    state_names = ("h", "c")
    carried = (1,)  # pointwise reads c elementwise (h only through the product)
    roles = ("fa", "ga", "ha")  # the activations by role, in ``activations``' order
    clipped = ("fa", "ga")  # clip bounds the gates' pre-activations, not c
    separate_recurrent_grads = False  # pointwise_backward's dx and dh are the same
    Weights = LSTMWeights
    required = ("W_ih", "W_hh")

    def __post_init__(self):
        acts = gate_activations("an LSTM", self.activations, self.activation_alpha,
                                self.activation_beta, _DEFAULTS)  # fmt: skip
        object.__setattr__(self, "activations", tuple(a.name for a in acts))
        given = lambda vs: None if vs is None else tuple(None if v is None else float(v) for v in vs)  # noqa: E731
        object.__setattr__(self, "activation_alpha", given(self.activation_alpha))
        object.__setattr__(self, "activation_beta", given(self.activation_beta))
        object.__setattr__(self, "clip", check_clip(self.clip))
        object.__setattr__(self, "input_forget", check_bool("input_forget", self.input_forget))
        object.__setattr__(self, "_acts", acts)  # fa, ga, ha

    @property
    def plain(self):
        """Default activations without parameters, no clip, no input_forget."""
        return (self.activations == _DEFAULTS and self.activation_alpha is None
                and self.activation_beta is None and self.clip is None and not self.input_forget)  # fmt: skip

    def check_weights(self, w):
        W_ih, W_hh, b_ih, b_hh, W_hr, peep = w
        check_matrix("W_ih", W_ih, None, None, "(4 * H, D)")
        rows, D = W_ih.shape
        if rows % 4:
            raise ValueError(
                f"W_ih must have shape (4 * H, D): its rows hold the gates i, f, g, o; got shape "
                f"({rows}, {D}), whose {rows} rows are not a multiple of 4"
            )
        H = rows // 4
        P = H
        if W_hr is not None:
            check_matrix("W_hr", W_hr, None, H, f"(P, H) with H = {H} (from W_ih (4 * H, D))")
            P = W_hr.shape[0]
        check_matrix("W_hh", W_hh, 4 * H, P,
                     f"(4 * H, P) with H = {H} (from W_ih) and P = {P} "
                     + ("(from W_hr (P, H))" if W_hr is not None else "(= H, no projection W_hr)"))  # fmt: skip
        for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
            check_vector(name, b, 4 * H, f"(4 * H,) with H = {H}")
        check_vector("peepholes", peep, 3 * H, f"(3 * H,) with H = {H} (p_i, p_f, p_o)")
        return Sizes(H, D, (P, H))

    # -- forward ---------------------------------------------------------------

    def input_weights(self, w):
        """``(W_ih, b_ih + b_hh)``: ``project`` is ``x @ W_ih.T + b_ih + b_hh`` (both biases enter every gate alike)."""
        return w.W_ih, _bias(w)

    def fixed(self, xp, w):
        peep = None if w.peepholes is None else split_gates(w.peepholes, 3)  # p_i, p_f, p_o
        return w.W_hh.T, None if w.W_hr is None else w.W_hr.T, peep

    def step(self, xp, xg_t, state, w, fixed):
        h, c = state  # (*batch, P), (*batch, H)
        W_hhT, W_hrT, peep = fixed
        m, c_new = self.pointwise(self.ops(xp), split_gates(xg_t, 4), split_gates(h @ W_hhT, 4), (c,),
                                  peep, 1 if self.input_forget else None)  # fmt: skip
        return (m if W_hrT is None else m @ W_hrT), c_new

    @staticmethod
    def pointwise(ops, xg, hg, carry, peep=None, coupled=None):
        """One step's elementwise part, on whole arrays or on one unit's numbers alike.

        ``xg`` and ``hg`` hold the gates i, f, g, o of the projected input
        (``project``, both biases in it) and of the recurrent product
        ``h @ W_hh.T``; ``carry`` is ``(c_{t-1},)``; ``ops`` the activations
        by role (``fa``, ``ga``, ``ha``: ``ops``). ``peep`` the peepholes
        ``(p_i, p_f, p_o)`` or ``None``; ``coupled`` ``None``, or 1 for ONNX's
        ``input_forget`` (``f = 1 - i``). Returns ``(m, c_t)``: ``h_t`` before
        its projection, and the new cell state. Every kernel's step is this
        (the compiled loops compile it), so the formula is written here only.
        """
        (c,) = carry
        zi = xg[0] + hg[0]
        zf = xg[1] + hg[1]
        if peep is not None:
            zi = zi + peep[0] * c
            zf = zf + peep[1] * c
        i = ops.fa(zi)
        f = coupled - i if coupled is not None else ops.fa(zf)
        g = ops.ga(xg[2] + hg[2])
        c = f * c + i * g
        zo = xg[3] + hg[3]
        if peep is not None:
            zo = zo + peep[2] * c
        o = ops.fa(zo)
        return o * ops.ha(c), c

    def projection(self, w):
        """The projection ``W_hr`` ``(P, H)`` of ``h_t = m_t @ W_hr.T``, or ``None``."""
        return w.W_hr

    def extras(self, w):
        """What ``pointwise`` and ``pointwise_backward`` take after ``carry`` in a plain run: the peepholes or ``None``."""
        return (None if w.peepholes is None else split_gates(w.peepholes, 3),)

    def recurrent_bias(self, w):
        """The bias added to the recurrent product before ``pointwise``: none (both are in ``project``)."""
        return None

    # -- backward --------------------------------------------------------------

    def saved(self, xp, x, prev, seqs, w, fixed, *, from_outputs, products=None):
        """Per step: the gates, their derivatives, ``ha(c_t)`` and its derivative, ``c_t``.

        ``(i, f, g, o, di, df, dg, do, hc, dhc, c)``, each ``(T, *batch, H)``;
        a derivative is zero where ``clip`` cut the pre-activation.
        ``products``: ``(xg, hg)``, the forward's ``project`` and recurrent
        product of every step (``None``: both computed here).
        """
        W_hhT, W_hrT, peep = fixed
        h_prev, c_prev = prev
        c = seqs[1]  # (T, *batch, H): c_t
        if products is None:  # (both products freed once summed: the peak memory stays that of one)
            z = self.project(xp, x, w) + rows_matmul(xp, h_prev, W_hhT)
        else:
            z = products[0] + products[1]
        zi, zf, zg, zo = split_gates(z, 4)
        if peep is not None:
            zi = zi + peep[0] * c_prev
            zf = zf + peep[1] * c_prev
            zo = zo + peep[2] * c
        fa, ga, ha = self._acts
        i, di = activated(xp, fa, zi, self.clip)
        if self.input_forget:
            f, df = 1 - i, xp.zeros_like(i)
        else:
            f, df = activated(xp, fa, zf, self.clip)
        g, dg = activated(xp, ga, zg, self.clip)
        o, do = activated(xp, fa, zo, self.clip)
        hc, dhc = activated(xp, ha, c, None)
        return i, f, g, o, di, df, dg, do, hc, dhc, c

    def step_backward(self, xp, saved_t, prev_t, g_t, w, fixed):
        W_hhT, W_hrT, peep = fixed
        gh, gc = g_t  # (*batch, P), (*batch, H)
        dm = gh if w.W_hr is None else gh @ w.W_hr  # (*batch, H)
        dz, _, (gc_prev,) = self.pointwise_backward(self.ops(xp), saved_t, (prev_t[1],), (dm, gc), peep,
                                                     1 if self.input_forget else None)  # fmt: skip
        dz = xp.concat(dz, axis=-1)  # (*batch, 4H)
        gh_prev = dz @ w.W_hh  # (*batch, P)
        return (dz, gh), (gh_prev, gc_prev)

    @staticmethod
    def pointwise_backward(ops, saved, carry, grads, peep=None, coupled=None):
        """The elementwise part of one step's gradient (``pointwise``'s), on arrays or numbers alike.

        ``saved`` the step's entries of ``saved``; ``carry`` ``(c_{t-1},)``;
        ``grads`` ``(dm, gc)``, the gradients reaching ``m_t`` (``h_t`` before
        its projection) and ``c_t``. Returns ``(dx, dh, dcarry)``: the
        gradients of the four gate pre-activations through the input's and
        the recurrent product's side (the same for an LSTM), and
        ``(dL/dc_{t-1},)``. ``dL/dh_{t-1}`` is ``concat(dh) @ W_hh``.
        """
        i, f, g, o, di, df, dg, do, hc, dhc, c = saved
        (c_prev,) = carry
        dm, gc = grads
        dzo = dm * hc * do
        dc = gc + dm * o * dhc  # dL/dc_t
        if peep is not None:
            dc = dc + dzo * peep[2]
        d_i = dc * g
        if coupled is not None:
            d_i = d_i - dc * c_prev
            dzf = ops.zeros_like(dc)
        else:
            dzf = dc * c_prev * df
        dzi = d_i * di
        dzg = dc * i * dg
        gc_prev = dc * f
        if peep is not None:
            gc_prev = gc_prev + dzi * peep[0] + dzf * peep[1]
        dz = (dzi, dzf, dzg, dzo)
        return dz, dz, (gc_prev,)

    def grads_input(self, dx, dh, gh):
        """``grads``'s ``d`` from every step's gate gradients ``dx`` (``dh`` is the same) and ``gh``, dL/dh_t."""
        return dx, gh

    def grads(self, xp, d, x, prev, saved, w, valid, matmuls=MATMULS):
        dz, gh = d  # (T, *batch, 4H), (T, *batch, P)
        h_prev, c_prev = prev
        x = zero_invalid(xp, x, valid)
        dx = matmuls.rows_matmul(xp, dz, w.W_ih)  # (T, *batch, D)
        dW_ih = matmuls.outer_sum(xp, dz, x)  # (4H, D)
        dW_hh = matmuls.outer_sum(xp, dz, h_prev, valid)  # (4H, P)
        db = batch_sum(xp, dz)  # (4H,)
        dW_hr = None
        if w.W_hr is not None:
            i, f, g, o, di, df, dg, do, hc, dhc, c = saved
            dW_hr = matmuls.outer_sum(xp, gh, o * hc, valid)  # (P, H): h_t = m_t @ W_hr.T
        dpeep = None
        if w.peepholes is not None:
            c = saved[10]
            dzi, dzf, _, dzo = split_gates(dz, 4)
            dpeep = xp.concat([batch_sum(xp, dzi * zero_invalid(xp, c_prev, valid)),
                               batch_sum(xp, dzf * zero_invalid(xp, c_prev, valid)),
                               batch_sum(xp, dzo * zero_invalid(xp, c, valid))], axis=0)  # fmt: skip
        db_ih = None if w.b_ih is None else db
        db_hh = None if w.b_hh is None else (db if db_ih is None else xp.asarray(db, copy=True))
        return dx, LSTMWeights(dW_ih, dW_hh, db_ih, db_hh, dW_hr, dpeep)


def _bias(w):
    """``b_ih + b_hh`` (either may be ``None``): both enter every gate the same way."""
    if w.b_ih is None:
        return w.b_hh
    return w.b_ih if w.b_hh is None else w.b_ih + w.b_hh
