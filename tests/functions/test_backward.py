"""The backward pass against torch autograd, central differences and truncated BPTT.

The reference gradients come from an independent float64 torch loop (one
sequence and one step at a time, like ``support.reference_rnn``) differentiated
by autograd. The loss is ``sum(dh * h_seq) + sum(dh_n * h_last)``, so its
gradient is exactly what ``rnn_backward`` computes for upstream ``dh``, ``dh_n``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnn_xp
from support import assert_close, random_backward_case, to_numpy, torch_grads, torch_packed

torch = pytest.importorskip("torch")

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def run_backward(backend, x, h0, Wx, Wh, b, dh, dh_n, *, batch_first=False, **opts):
    """Forward then backward on ``backend`` in float64; ``x`` and ``dh`` time-major NumPy."""
    if batch_first:
        x, dh = np.moveaxis(x, 0, -2), np.moveaxis(dh, 0, -2)
    to = lambda a: None if a is None else backend.asarray(a, "float64")  # noqa: E731
    xa, h0a, Wxa, Wha, ba = (to(a) for a in (x, h0, Wx, Wh, b))
    fwd_opts = {k: v for k, v in opts.items() if k != "nonlinearity"}
    lengths = opts.get("lengths")
    if lengths is not None:
        fwd_opts["lengths"] = backend.asarray(lengths)
    h_seq = rnn_xp.rnn_forward(xa, h0a, Wxa, Wha, ba, nonlinearity=opts.get("nonlinearity", "tanh"),
                               batch_first=batch_first, **fwd_opts)
    return rnn_xp.rnn_backward(to(dh), xa, h0a, Wxa, Wha, ba, h_seq, dh_n=to(dh_n),
                               batch_first=batch_first, **opts)


def check_grads(got, want, backend, *, batch_first=False):
    dx_want = np.moveaxis(want.dx, 0, -2) if batch_first else want.dx
    assert_close(got.dx, dx_want, backend, "float64", **TIGHT)
    assert_close(got.dh0, want.dh0, backend, "float64", **TIGHT)
    assert_close(got.dWx, want.dWx, backend, "float64", **TIGHT)
    assert_close(got.dWh, want.dWh, backend, "float64", **TIGHT)
    if want.db is None:
        assert got.db is None
    else:
        assert_close(got.db, want.db, backend, "float64", **TIGHT)


LENGTHS = {
    "none": None,
    "unsorted": [3, 6, 1, 5],  # one of length 1 in the middle
    "zero": [0, 6, 2, 0],
    "one": [1, 1, 1, 1],
}

# Each option on its own and a few mixed, run on every backend.
CONFIGS = {
    "plain": {},
    "relu": {"nonlinearity": "relu"},
    "no_bias": {"with_b": False},
    "no_h0": {"with_h0": False},
    "no_dh_n": {"with_dh_n": False},
    "lengths": {"lengths": "unsorted"},
    "lengths_zero": {"lengths": "zero"},
    "reverse": {"reverse": True},
    "reverse_lengths": {"reverse": True, "lengths": "zero"},
    "leak": {"leak": 0.3},
    "relu_leak_lengths": {"nonlinearity": "relu", "leak": 0.6, "lengths": "unsorted"},
    "batch_first": {"batch_first": True, "lengths": "unsorted", "reverse": True},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_torch_autograd(backend, rng, name):
    cfg = dict(CONFIGS[name])
    case_opts = {k: cfg.pop(k) for k in ("with_h0", "with_b", "with_dh_n") if k in cfg}
    lengths = LENGTHS[cfg.pop("lengths", "none")]
    batch_first = cfg.pop("batch_first", False)
    case = random_backward_case(rng, 6, (4,), 3, 5, **case_opts)
    want = torch_grads(*case, lengths=lengths, **cfg)
    got = run_backward(backend, *case, lengths=lengths, batch_first=batch_first, **cfg)
    check_grads(got, want, backend, batch_first=batch_first)


@pytest.mark.parametrize(
    "nonlinearity, reverse, lengths, leak",
    list(itertools.product(["tanh", "relu"], [False, True], list(LENGTHS), [1.0, 0.45])),
)
def test_option_grid_numpy(rng, nonlinearity, reverse, lengths, leak):
    from support import make_backend

    backend = make_backend("numpy")
    case = random_backward_case(rng, 6, (4,), 3, 5)
    opts = dict(nonlinearity=nonlinearity, reverse=reverse, lengths=LENGTHS[lengths], leak=leak)
    check_grads(run_backward(backend, *case, **opts), torch_grads(*case, **opts), backend)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_batch_dims(backend, rng, batch, batch_first):
    case = random_backward_case(rng, 5, batch, 3, 4)
    lengths = rng.integers(0, 6, size=batch)
    want = torch_grads(*case, lengths=lengths, leak=0.8)
    got = run_backward(backend, *case, lengths=lengths, leak=0.8, batch_first=batch_first)
    check_grads(got, want, backend, batch_first=batch_first)


def test_list_of_steps_and_no_dh(backend, rng):
    x, h0, Wx, Wh, b, dh, dh_n = random_backward_case(rng, 4, (3,), 2, 5)
    want = torch_grads(x, h0, Wx, Wh, b, np.zeros_like(dh), dh_n)
    to = lambda a: backend.asarray(a, "float64")  # noqa: E731
    steps = [to(x[t]) for t in range(4)]
    h0a, Wxa, Wha, ba = (to(a) for a in (h0, Wx, Wh, b))
    h_seq = rnn_xp.rnn_forward(steps, h0a, Wxa, Wha, ba)
    got = rnn_xp.rnn_backward(None, steps, h0a, Wxa, Wha, ba, h_seq, dh_n=to(dh_n))
    assert isinstance(got.dx, list) and len(got.dx) == 4
    for t in range(4):
        assert_close(got.dx[t], want.dx[t], backend, "float64", **TIGHT)
    check_grads(got._replace(dx=backend.xp.stack(got.dx, axis=0)), want, backend)


def test_empty_sequence(backend, rng):
    x, h0, Wx, Wh, b, dh, dh_n = random_backward_case(rng, 0, (2,), 3, 4)
    got = run_backward(backend, x, h0, Wx, Wh, b, dh, dh_n)
    assert_close(got.dx, np.zeros((0, 2, 3)), backend, "float64")
    assert_close(got.dh0, dh_n, backend, "float64")
    assert_close(got.dWx, np.zeros((4, 3)), backend, "float64")
    assert_close(got.dWh, np.zeros((4, 4)), backend, "float64")
    assert_close(got.db, np.zeros(4), backend, "float64")


def test_float32_inputs(backend, rng):
    case = random_backward_case(rng, 5, (3,), 2, 4)
    want = torch_grads(*case, nonlinearity="relu")
    to = lambda a: backend.asarray(a, "float32")  # noqa: E731
    x, h0, Wx, Wh, b, dh, dh_n = (to(a) for a in case)
    h_seq = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, nonlinearity="relu")
    got = rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, h_seq, dh_n=dh_n, nonlinearity="relu")
    for g, w in zip(got, want):
        assert_close(g, w, backend, "float32", rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_step_backward_matches_torch(backend, rng, batch, nonlinearity):
    x, h0, Wx, Wh, b, dh, _ = random_backward_case(rng, 1, batch, 3, 4)
    want = torch_grads(x, h0, Wx, Wh, b, dh, None, nonlinearity=nonlinearity)
    to = lambda a: backend.asarray(a, "float64")  # noqa: E731
    xa, h0a, Wxa, Wha, ba = (to(a) for a in (x[0], h0, Wx, Wh, b))
    next_h = rnn_xp.rnn_step_forward(xa, h0a, Wxa, Wha, ba, nonlinearity=nonlinearity)
    dx, dprev_h, dWx, dWh, db = rnn_xp.rnn_step_backward(
        to(dh[0]), xa, h0a, Wxa, Wha, next_h, nonlinearity=nonlinearity
    )
    assert_close(dx, want.dx[0], backend, "float64", **TIGHT)
    assert_close(dprev_h, want.dh0, backend, "float64", **TIGHT)
    assert_close(dWx, want.dWx, backend, "float64", **TIGHT)
    assert_close(dWh, want.dWh, backend, "float64", **TIGHT)
    assert_close(db, want.db, backend, "float64", **TIGHT)


# ---------------------------------------------------------------- central differences


def _loss(backend, params, dh, dh_n, opts):
    """``sum(dh * h_seq) + sum(dh_n * h_last)`` computed by ``rnn_forward`` on ``backend``, as a float."""
    x, h0, Wx, Wh, b = params
    h_seq = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, **opts)
    h_last = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, return_sequences=False, **opts)
    xp = backend.xp
    return float(to_numpy(xp.sum(dh * h_seq) + xp.sum(dh_n * h_last)))


@pytest.mark.parametrize("nonlinearity, reverse", [("tanh", False), ("relu", True)])
def test_central_differences(backend, rng, nonlinearity, reverse):
    x, h0, Wx, Wh, b, dh, dh_n = random_backward_case(rng, 3, (2,), 2, 3)
    b = b + 0.3  # keeps relu units away from the kink for a finite step
    to = lambda a: backend.asarray(a, "float64")  # noqa: E731
    params = [to(a) for a in (x, h0, Wx, Wh, b)]
    dha, dh_na = to(dh), to(dh_n)
    opts = dict(nonlinearity=nonlinearity, reverse=reverse, leak=0.7, lengths=backend.asarray([3, 1]))
    h_seq = rnn_xp.rnn_forward(*params, **opts)
    grads = rnn_xp.rnn_backward(dha, *params, h_seq, dh_n=dh_na, **opts)
    eps = 1e-6
    for i, p in enumerate(params):
        numeric = np.zeros(p.shape)
        for idx in np.ndindex(*p.shape):
            bump = np.zeros(p.shape)
            bump[idx] = eps
            up = [q + to(bump) if j == i else q for j, q in enumerate(params)]  # new arrays, no writes
            down = [q - to(bump) if j == i else q for j, q in enumerate(params)]
            numeric[idx] = (_loss(backend, up, dha, dh_na, opts) - _loss(backend, down, dha, dh_na, opts)) / (2 * eps)
        got = (grads.dx, grads.dh0, grads.dWx, grads.dWh, grads.db)[i]
        assert_close(got, numeric, backend, "float64", rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- truncated BPTT


@pytest.mark.parametrize("reverse", [False, True])
def test_truncated_bptt_chunks_equal_full(backend, rng, reverse):
    """Chunks with the state carried forward and the gradient carried back give the full gradient."""
    T, cuts = 9, [0, 3, 4, 9]  # chunks of 3, 1 and 5 steps
    x, h0, Wx, Wh, b, dh, dh_n = random_backward_case(rng, T, (4,), 3, 5)
    lengths = np.array([9, 2, 5, 0])
    to = lambda a: backend.asarray(a, "float64")  # noqa: E731
    xa, h0a, Wxa, Wha, ba, dha, dh_na = (to(a) for a in (x, h0, Wx, Wh, b, dh, dh_n))
    opts = dict(reverse=reverse, leak=0.9)
    full_h = rnn_xp.rnn_forward(xa, h0a, Wxa, Wha, ba, lengths=backend.asarray(lengths), **opts)
    full = rnn_xp.rnn_backward(dha, xa, h0a, Wxa, Wha, ba, full_h, dh_n=dh_na,
                               lengths=backend.asarray(lengths), **opts)

    chunks = list(zip(cuts[:-1], cuts[1:]))
    if reverse:
        chunks = chunks[::-1]  # the state runs from the end of the sequence to its start
    # Forward through the chunks in running order, carrying the state.
    state, saved = h0a, []
    for lo, hi in chunks:
        lens = backend.asarray(np.clip(lengths - lo, 0, hi - lo))
        h_seq = rnn_xp.rnn_forward(xa[lo:hi, ...], state, Wxa, Wha, ba, lengths=lens, **opts)
        saved.append((lo, hi, state, lens, h_seq))
        state = rnn_xp.rnn_forward(xa[lo:hi, ...], state, Wxa, Wha, ba, lengths=lens,
                                   return_sequences=False, **opts)
    # Backward through them in the opposite order, carrying the gradient.
    g_state, dx, dWx, dWh, db = dh_na, {}, 0, 0, 0
    for lo, hi, start, lens, h_seq in saved[::-1]:
        g = rnn_xp.rnn_backward(dha[lo:hi, ...], xa[lo:hi, ...], start, Wxa, Wha, ba, h_seq,
                                dh_n=g_state, lengths=lens, **opts)
        g_state, dx[lo] = g.dh0, g.dx
        dWx, dWh, db = dWx + g.dWx, dWh + g.dWh, db + g.db
    xp = backend.xp
    dx = xp.concat([dx[lo] for lo in cuts[:-1]], axis=0)

    tight = {"rtol": 1e-12, "atol": 1e-13}
    for got, want in [(dx, full.dx), (g_state, full.dh0), (dWx, full.dWx), (dWh, full.dWh), (db, full.db)]:
        assert_close(got, to_numpy(want), backend, "float64", **tight)
    # and the full gradient is the autograd one
    check_grads(full, torch_grads(x, h0, Wx, Wh, b, dh, dh_n, lengths=lengths, **opts), backend)


# ---------------------------------------------------------------- inputs


def test_inputs_not_modified(rng):
    from support import make_backend

    backend = make_backend("numpy_readonly")
    case = random_backward_case(rng, 5, (3,), 2, 4)
    copies = [None if c is None else c.copy() for c in case]
    run_backward(backend, *case, lengths=np.array([5, 0, 2]), leak=0.5)
    for c, k in zip(case, copies):
        np.testing.assert_array_equal(c, k)


# ---------------------------------------------------------------- composing a layer


def test_bidirectional_torch_rnn_per_direction(backend, rng):
    """torch.nn.RNN (bidirectional, packed lengths) gradients from one rnn_backward per direction."""
    T, B, D, H = 6, 4, 3, 5
    lengths = np.array([6, 2, 4, 1])
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((2, B, H))
    dout = rng.standard_normal((T, B, 2 * H))
    dh_n = rng.standard_normal((2, B, H))

    torch.manual_seed(0)
    rnn = torch.nn.RNN(D, H, bidirectional=True, dtype=torch.float64)
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    out, h_n = torch_packed(rnn, xt, h0t, lengths)
    ((torch.tensor(dout) * out).sum() + (torch.tensor(dh_n) * h_n).sum()).backward()

    to = lambda a: backend.asarray(a, "float64")  # noqa: E731
    w = {k: v.detach().numpy() for k, v in rnn.named_parameters()}
    xa, La = to(x), backend.asarray(lengths)
    dx = 0
    for d, sfx in enumerate(["", "_reverse"]):
        Wx, Wh = to(w[f"weight_ih_l0{sfx}"]), to(w[f"weight_hh_l0{sfx}"])
        b = to(w[f"bias_ih_l0{sfx}"] + w[f"bias_hh_l0{sfx}"])
        h0d = to(h0[d])
        h_seq = rnn_xp.rnn_forward(xa, h0d, Wx, Wh, b, lengths=La, reverse=bool(d))
        g = rnn_xp.rnn_backward(to(dout[..., d * H:(d + 1) * H]), xa, h0d, Wx, Wh, b, h_seq,
                                dh_n=to(dh_n[d]), lengths=La, reverse=bool(d))
        params = dict(rnn.named_parameters())
        assert_close(g.dWx, params[f"weight_ih_l0{sfx}"].grad.numpy(), backend, "float64", **TIGHT)
        assert_close(g.dWh, params[f"weight_hh_l0{sfx}"].grad.numpy(), backend, "float64", **TIGHT)
        assert_close(g.db, params[f"bias_ih_l0{sfx}"].grad.numpy(), backend, "float64", **TIGHT)
        assert_close(g.db, params[f"bias_hh_l0{sfx}"].grad.numpy(), backend, "float64", **TIGHT)
        assert_close(g.dh0, h0t.grad.numpy()[d], backend, "float64", **TIGHT)
        dx = dx + g.dx
    assert_close(dx, xt.grad.numpy(), backend, "float64", **TIGHT)
