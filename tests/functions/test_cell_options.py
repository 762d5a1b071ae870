"""The gated cells' options (ONNX's), forward and backward, against torch's autograd of the portable loop.

``lstm_forward``/``gru_forward`` with every cell option (peepholes,
``input_forget``, ``clip``, other activations with their parameters, a
projection, the reset before the product), with ``lengths``, a mask and
``reverse``; their gradients from rnn_xp's hand-written backward against
torch's autograd through the portable loop (``kernels.portable.scan_cell``
run on torch tensors: the same forward, an independent derivative), float64
to 1e-10. The forward against hand-written NumPy loops of the equations is
in docs/lstm.md and docs/gru.md.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnn_xp
from rnn_xp.cells import GRUCell, GRUWeights, LSTMCell, LSTMWeights
from rnn_xp.kernels.portable import scan_cell

torch = pytest.importorskip("torch")
from array_api_compat import torch as txp  # noqa: E402

T, B, D, H, P = 6, 3, 3, 4, 2
LENGTHS = np.array([6, 2, 0])
MASK = np.array([[1, 1, 0, 1, 0, 1], [0, 1, 1, 0, 1, 1], [1, 0, 0, 0, 1, 0]], dtype=bool)  # (B, T)

LSTM_OPTIONS = [
    dict(),
    dict(peepholes=True),
    dict(input_forget=True, peepholes=True),
    dict(clip=0.6),
    dict(activations=("hard_sigmoid", "softsign", "elu"), activation_alpha=(0.3, None, 0.7),
         activation_beta=(0.4, None, None)),
    dict(proj=True, peepholes=True, clip=1.5),
]
GRU_OPTIONS = [
    dict(),
    dict(linear_before_reset=False),
    dict(clip=0.5),
    dict(activations=("hard_sigmoid", "scaled_tanh"), activation_alpha=(0.25, 1.3),
         activation_beta=(0.45, 0.8), linear_before_reset=False),
]
CASES = [("lstm", o) for o in LSTM_OPTIONS] + [("gru", o) for o in GRU_OPTIONS]


def draw(rng, cell, options):
    """Float64 NumPy arrays: x, the state(s) and the weights (large enough for the clip to bite)."""
    G = 4 if cell == "lstm" else 3
    Pout = P if options.get("proj") else H
    x = rng.standard_normal((T, B, D))
    w = {"W_ih": rng.standard_normal((G * H, D)), "W_hh": rng.standard_normal((G * H, Pout)) * 0.8,
         "b_ih": rng.standard_normal(G * H) * 0.5, "b_hh": rng.standard_normal(G * H) * 0.5}
    if cell == "lstm":
        if options.get("proj"):
            w["W_hr"] = rng.standard_normal((P, H)) * 0.7
        if options.get("peepholes"):
            w["peepholes"] = rng.standard_normal(3 * H) * 0.5
        states = (rng.standard_normal((B, Pout)) * 0.5, rng.standard_normal((B, H)) * 0.5)
    else:
        states = (rng.standard_normal((B, H)) * 0.5,)
    return x, states, w


def cell_and_kwargs(cell, options):
    opts = {k: v for k, v in options.items() if k not in ("proj", "peepholes")}
    if cell == "lstm":
        c = LSTMCell(opts.get("activations", ("sigmoid", "tanh", "tanh")), opts.get("activation_alpha"),
                     opts.get("activation_beta"), opts.get("clip"), opts.get("input_forget", False))
    else:
        c = GRUCell(opts.get("activations", ("sigmoid", "tanh")), opts.get("activation_alpha"),
                    opts.get("activation_beta"), opts.get("clip"), opts.get("linear_before_reset", True))
    return c, opts


@pytest.mark.parametrize("cell,options", CASES)
@pytest.mark.parametrize("variant", ["plain", "lengths", "mask-reverse"])
def test_gradients_equal_torch_autograd_of_the_portable_loop(rng, cell, options, variant):
    x, states, w = draw(rng, cell, options)
    c, opts = cell_and_kwargs(cell, options)
    lengths = LENGTHS if variant == "lengths" else None
    mask = MASK if variant == "mask-reverse" else None
    reverse = variant == "mask-reverse"
    dh = rng.standard_normal((T, B, P if options.get("proj") else H))
    d_fin = tuple(rng.standard_normal(s.shape) for s in states)

    # the reference: torch differentiates the portable loop
    t = lambda a: torch.tensor(a, requires_grad=True)  # noqa: E731
    xt, st = t(x), tuple(t(s) for s in states)
    wt = {k: t(v) for k, v in w.items()}
    Weights = LSTMWeights if cell == "lstm" else GRUWeights
    seqs, finals = scan_cell(txp, c, xt, st, Weights(**wt), reverse=reverse, return_sequences=True,
                             lengths=None if lengths is None else torch.as_tensor(lengths),
                             mask=None if mask is None else torch.as_tensor(mask.T.copy()))  # fmt: skip
    loss = (seqs[0] * torch.from_numpy(dh)).sum() + sum((f * torch.from_numpy(d)).sum()
                                                       for f, d in zip(finals, d_fin))  # fmt: skip
    leaves = [xt, *st, *wt.values()]
    want = [g.numpy() for g in torch.autograd.grad(loss, leaves)]

    kw = dict(lengths=lengths, mask=mask, reverse=reverse, **opts)
    if cell == "lstm":
        extra = {k: w[k] for k in ("W_hr", "peepholes") if k in w}
        out, (h_n, c_n), c_seq = rnn_xp.lstm_forward(x, states, w["W_ih"], w["W_hh"], w["b_ih"],
                                                      w["b_hh"], return_c_seq=True, **extra, **kw)
        np.testing.assert_allclose(out, seqs[0].detach().numpy(), rtol=1e-12, atol=1e-14)
        g = rnn_xp.lstm_backward(dh, x, states, w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"], out, c_seq,
                                 dh_n=d_fin[0], dc_n=d_fin[1], **extra, **kw)
        got = [g.dx, g.dh0, g.dc0, g.dW_ih, g.dW_hh, g.db_ih, g.db_hh]
        got += [g.dW_hr] if "W_hr" in w else []
        got += [g.dpeepholes] if "peepholes" in w else []
    else:
        out = rnn_xp.gru_forward(x, states[0], w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"], **kw)
        np.testing.assert_allclose(out, seqs[0].detach().numpy(), rtol=1e-12, atol=1e-14)
        g = rnn_xp.gru_backward(dh, x, states[0], w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"], out,
                                dh_n=d_fin[0], **kw)
        got = list(g)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell,options", CASES)
def test_the_layer_runs_the_options_of_its_functions(rng, cell, options):
    # a one-layer layer with an option is the function with that option and its weights
    x, states, w = draw(rng, cell, options)
    c, opts = cell_and_kwargs(cell, options)
    if cell == "lstm":
        layer = rnn_xp.LSTM(D, H, proj_size=P if options.get("proj") else 0,
                            peepholes=bool(options.get("peepholes")), dtype="float64", **opts)
        names = dict(weight_ih_l0="W_ih", weight_hh_l0="W_hh", bias_ih_l0="b_ih", bias_hh_l0="b_hh",
                     weight_hr_l0="W_hr", peephole_l0="peepholes")
        layer.load_state_dict({n: w[k] for n, k in names.items() if n in layer.params})
        out, (h_n, c_n) = layer(x, tuple(s[None] for s in states), lengths=LENGTHS)
        extra = {k: w[k] for k in ("W_hr", "peepholes") if k in w}
        want, (wh, wc) = rnn_xp.lstm_forward(x, states, w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"],
                                             lengths=LENGTHS, **extra, **opts)
        np.testing.assert_array_equal(c_n[0], wc)
    else:
        layer = rnn_xp.GRU(D, H, dtype="float64", **opts)
        layer.load_state_dict(dict(weight_ih_l0=w["W_ih"], weight_hh_l0=w["W_hh"], bias_ih_l0=w["b_ih"],
                                   bias_hh_l0=w["b_hh"]))  # fmt: skip
        out, h_n = layer(x, states[0][None], lengths=LENGTHS)
        want = rnn_xp.gru_forward(x, states[0], w["W_ih"], w["W_hh"], w["b_ih"], w["b_hh"],
                                  lengths=LENGTHS, **opts)
    np.testing.assert_array_equal(out, want)
