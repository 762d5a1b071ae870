"""Random calls of each cell's public function, and the same call through the portable loop.

The frameworks' tests (``test_frameworks_jax.py``, ``test_frameworks_torch.py``)
differentiate both with the framework's own autodiff: ``public`` runs
``rnn_forward``/``lstm_forward``/``gru_forward`` (rnn_xp's kernels and their
registered backward), ``portable`` runs ``kernels.portable.scan_cell`` op by
op, which the framework then differentiates itself. Both return the public
function's outputs as one flat tuple of arrays.
"""

from __future__ import annotations

import numpy as np

import rnn_xp
from rnn_xp.cells import ElmanCell, ElmanWeights, GRUCell, GRUWeights, LSTMCell, LSTMWeights
from rnn_xp.kernels.portable import scan_cell

CELLS = ("elman", "lstm", "gru")


def arrays(rng, cell, *, T=4, batch=(3,), D=2, H=5, proj=0, peepholes=False, bias=True):
    """``{name: float64 NumPy array}`` of one call: ``x (T, *batch, D)``, the initial state, the weights."""
    P = proj or H
    normal = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    a = {"x": normal(T, *batch, D)}
    if cell == "elman":
        a.update(h0=0.5 * normal(*batch, H), Wx=0.5 * normal(H, D), Wh=0.5 * normal(H, H), b=0.2 * normal(H))
    elif cell == "lstm":
        a.update(h0=0.5 * normal(*batch, P), c0=0.5 * normal(*batch, H), W_ih=0.5 * normal(4 * H, D),
                 W_hh=0.5 * normal(4 * H, P), b_ih=0.2 * normal(4 * H), b_hh=0.2 * normal(4 * H))  # fmt: skip
        if proj:
            a["W_hr"] = 0.5 * normal(P, H)
        if peepholes:
            a["peepholes"] = 0.5 * normal(3 * H)
    else:
        a.update(h0=0.5 * normal(*batch, H), W_ih=0.5 * normal(3 * H, D), W_hh=0.5 * normal(3 * H, H),
                 b_ih=0.2 * normal(3 * H), b_hh=0.2 * normal(3 * H))  # fmt: skip
    if not bias:
        for name in ("b", "b_ih", "b_hh"):
            a.pop(name, None)
    return a


def random_mask(rng, batch, T):
    """``(*batch, T)`` booleans: the first step masked, one sequence all masked, the rest at random."""
    mask = rng.random((*batch, T)) > 0.35
    mask[..., 0] = False
    if batch:
        mask.reshape(-1, T)[0] = False
    return mask


def make_cell(cell, options):
    if cell == "elman":
        return ElmanCell(options.get("nonlinearity", "tanh"), options.get("activation_alpha"),
                         options.get("activation_beta"), options.get("clip"), options.get("leak", 1.0))  # fmt: skip
    gated = (options.get("activation_alpha"), options.get("activation_beta"), options.get("clip"))
    if cell == "lstm":
        return LSTMCell(options.get("activations") or ("sigmoid", "tanh", "tanh"), *gated,
                        options.get("input_forget", False))  # fmt: skip
    return GRUCell(options.get("activations") or ("sigmoid", "tanh"), *gated, options.get("linear_before_reset", True))


def public(cell, a, *, return_c_seq=False, **kw):
    """The public function's outputs for the arrays ``a`` (any library), flat."""
    if cell == "elman":
        return (rnn_xp.rnn_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a.get("b"), **kw),)
    if cell == "gru":
        return (rnn_xp.gru_forward(a["x"], a["h0"], a["W_ih"], a["W_hh"], a.get("b_ih"), a.get("b_hh"), **kw),)
    out = rnn_xp.lstm_forward(a["x"], (a["h0"], a["c0"]), a["W_ih"], a["W_hh"], a.get("b_ih"), a.get("b_hh"),
                              W_hr=a.get("W_hr"), peepholes=a.get("peepholes"), return_c_seq=return_c_seq,
                              **kw)  # fmt: skip
    if not kw.get("return_sequences", True):
        return tuple(out)  # (h_n, c_n)
    return (out[0], *out[1], *out[2:])  # output, h_n, c_n (, c_seq)


def portable(xp, cell, a, *, lengths=None, mask=None, reverse=False, return_sequences=True, return_c_seq=False,
             **options):  # fmt: skip
    """The same outputs from ``scan_cell`` (the mask ``(*batch, T)`` made time-major here)."""
    c = make_cell(cell, options)
    if cell == "elman":
        state0, w = (a["h0"],), ElmanWeights(a["Wx"], a["Wh"], a.get("b"))
    elif cell == "lstm":
        state0 = (a["h0"], a["c0"])
        w = LSTMWeights(a["W_ih"], a["W_hh"], a.get("b_ih"), a.get("b_hh"), a.get("W_hr"), a.get("peepholes"))
    else:
        state0, w = (a["h0"],), GRUWeights(a["W_ih"], a["W_hh"], a.get("b_ih"), a.get("b_hh"))
    if mask is not None:
        nd = mask.ndim
        mask = xp.permute_dims(mask, (nd - 1, *range(nd - 1)))  # (T, *batch)
    seqs, finals = scan_cell(xp, c, a["x"], state0, w, lengths=lengths, reverse=reverse, return_sequences=True,
                             mask=mask)  # fmt: skip
    if cell != "lstm":
        return (seqs[0],) if return_sequences else (finals[0],)
    if not return_sequences:
        return tuple(finals)
    return (seqs[0], *finals, *((seqs[1],) if return_c_seq else ()))


def weights_of(out):
    """Per output, a different weight for every feature, so that each gradient term counts."""
    return np.arange(1, out.shape[-1] + 1) / out.shape[-1]


# (cell, options): what each framework's gradient is held against its autodiff of the portable loop.
# lengths (4, 0, 2) are for batch (3,), T = 4.
GRID = [
    ("elman", dict(mask=True, nonlinearity="leaky_relu", clip=0.9)),
    ("elman", dict(lengths=(4, 0, 2), reverse=True, leak=0.6, return_sequences=False)),
    ("lstm", dict(lengths=(4, 0, 2), reverse=True, proj=3)),
    ("lstm", dict(mask=True, return_c_seq=True, peepholes=True)),
    ("lstm", dict(lengths=(4, 0, 2), return_sequences=False, clip=0.8, input_forget=True, bias=False)),
    ("gru", dict(lengths=(4, 0, 2), reverse=True)),
    ("gru", dict(mask=True, reverse=True, linear_before_reset=False)),
    ("gru", dict(return_sequences=False, activations=("hard_sigmoid", "tanh"), bias=False)),
]


def grid_id(case):
    cell, options = case
    return cell + ("-" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def split(rng, cell, options, batch=(3,), T=4):
    """``(arrays, call options)`` of a GRID entry: the shapes' options go to ``arrays``, ``mask=True`` is drawn."""
    options = dict(options)
    shape = {k: options.pop(k) for k in ("proj", "peepholes", "bias") if k in options}
    a = arrays(rng, cell, T=T, batch=batch, **shape)
    if options.pop("mask", False):
        options["mask"] = random_mask(rng, batch, T)
    return a, options
