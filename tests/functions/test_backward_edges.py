"""The backward pass at its edges: non-finite padding, zero sizes, T = 0.

- NaN or Inf past a sequence's length (in ``x``, in the upstream gradient,
  in ``h0`` of a length-0 sequence) never reaches a gradient: torch's packed
  sequences, which never see the padding, are the reference.
- ``H = 0`` (and every other zero size) works backward as it does forward.
- ``T = 0`` returns a new array for ``dh0``, never the caller's ``dh_n``.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnn_xp
from rnn_xp import RNN
from support import assert_close, random_rnn, to_numpy, torch_packed

torch = pytest.importorskip("torch")

D, H, T = 3, 4, 6
LENGTHS = [6, 3, 0, 1]
TIGHT = {"rtol": 1e-9, "atol": 1e-12}


def _torch_packed_grads(module, x, lengths, d_out):
    """torch autograd through packed sequences (lengths >= 1 only), float64 NumPy."""
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    out, _ = torch_packed(module, xt, None, lengths)
    mask = torch.from_numpy(np.arange(x.shape[0])[:, None] < np.asarray(lengths)[None, :])[..., None]
    (out * torch.where(mask, torch.from_numpy(d_out), 0.0)).sum().backward()
    return xt.grad.numpy(), {name: p.grad.numpy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_non_finite_padding_never_reaches_a_gradient(backend, rng, bad, bidirectional):
    torch.manual_seed(0)
    lengths = [6, 3, 1, 2]  # torch packs no length 0
    module = torch.nn.RNN(D, H, num_layers=2, bidirectional=bidirectional, dtype=torch.float64)
    x = rng.standard_normal((T, len(lengths), D))
    d_out = rng.standard_normal((T, len(lengths), H * (2 if bidirectional else 1)))
    pad = np.arange(T)[:, None] >= np.asarray(lengths)[None, :]  # (T, B)
    x[pad] = bad
    d_out[pad] = bad  # an upstream gradient past the lengths is ignored too
    want_dx, want = _torch_packed_grads(module, x, lengths, d_out)
    assert all(np.isfinite(g).all() for g in want.values())

    rnn = RNN.from_torch(module).to(xp=backend.xp, device=backend.device, dtype="float64")
    output, _, cache = rnn.forward(backend.asarray(x), lengths=lengths, return_cache=True)
    grads = rnn.backward(cache, backend.asarray(d_out))
    for name, expected in want.items():
        assert_close(grads.params[name], expected, backend, "float64", **TIGHT)
    assert_close(grads.dx, np.where(pad[..., None], 0.0, want_dx), backend, "float64", **TIGHT)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("leak", [1.0, 0.5])
def test_nan_in_h0_of_a_length_zero_sequence_stays_in_it(backend, rng, reverse, leak):
    """A length-0 sequence's h0 is never used by a step: its NaN reaches its own dh0 at most."""
    x, h0, Wx, Wh, b = random_rnn(rng, T, (4,), D, H)
    clean_h0 = h0.copy()
    h0[2] = np.nan  # the sequence of length 0
    x[3:, 1] = np.nan  # and padding in another one
    dh = rng.standard_normal((T, 4, H))
    args = [backend.asarray(a) for a in (x, h0, Wx, Wh, b)]
    h_seq = rnn_xp.rnn_forward(*args, lengths=LENGTHS, reverse=reverse, leak=leak)
    got = rnn_xp.rnn_backward(backend.asarray(dh), *args, h_seq, lengths=LENGTHS, reverse=reverse, leak=leak)
    for name in ("dWx", "dWh", "db"):
        assert np.isfinite(to_numpy(getattr(got, name))).all(), name
    # the same gradients as with a finite h0 there and finite padding
    x[3:, 1] = 0.0
    clean = [backend.asarray(a) for a in (x, clean_h0, Wx, Wh, b)]
    h_clean = rnn_xp.rnn_forward(*clean, lengths=LENGTHS, reverse=reverse, leak=leak)
    want = rnn_xp.rnn_backward(backend.asarray(dh), *clean, h_clean, lengths=LENGTHS, reverse=reverse,
                               leak=leak)  # fmt: skip
    for name in ("dWx", "dWh", "db"):
        assert_close(getattr(got, name), to_numpy(getattr(want, name)), backend, "float64", **TIGHT)


ZERO_SIZES = [(2, 1, 3, 0), (0, 1, 3, 0), (3, 0, 2, 4), (3, 2, 0, 4), (0, 0, 0, 0)]


@pytest.mark.parametrize("size", ZERO_SIZES, ids=lambda s: "T%d-B%d-D%d-H%d" % s)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_zero_sizes_backward(backend, rng, size, with_lengths):
    T_, B, D_, H_ = size
    x, h0, Wx, Wh, b = random_rnn(rng, T_, (B,), D_, H_)
    dh = rng.standard_normal((T_, B, H_))
    dh_n = rng.standard_normal((B, H_))
    lengths = rng.integers(0, T_ + 1, size=B) if with_lengths else None
    args = [backend.asarray(a) for a in (x, h0, Wx, Wh, b)]
    h_seq = rnn_xp.rnn_forward(*args, lengths=lengths)
    got = rnn_xp.rnn_backward(backend.asarray(dh), *args, h_seq, dh_n=backend.asarray(dh_n), lengths=lengths)
    assert tuple(got.dx.shape) == (T_, B, D_)
    assert tuple(got.dh0.shape) == (B, H_)
    assert tuple(got.dWx.shape) == (H_, D_) and tuple(got.dWh.shape) == (H_, H_)
    assert tuple(got.db.shape) == (H_,)
    if T_ == 0 or H_ == 0 or B == 0:  # nothing flows: zeros, and dh_n straight through to dh0
        assert_close(got.dWx, np.zeros((H_, D_)), backend, "float64")
        assert_close(got.dh0, dh_n, backend, "float64")


def test_zero_hidden_units_numpy_at_two_steps():
    """H = 0 at T >= 2 on NumPy once failed in a reshape(-1, H)."""
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(0), 5, (2,), 3, 0)
    h = rnn_xp.rnn_forward(x, None, Wx, Wh, b)
    g = rnn_xp.rnn_backward(np.ones_like(h), x, None, Wx, Wh, b, h)
    np.testing.assert_array_equal(g.dx, np.zeros_like(x))


def test_empty_sequence_returns_a_new_dh0(backend, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 0, (2,), 3, 4)
    dh_n = backend.asarray(rng.standard_normal((2, 4)))
    args = [backend.asarray(a) for a in (x, h0, Wx, Wh, b)]
    h_seq = rnn_xp.rnn_forward(*args)
    got = rnn_xp.rnn_backward(None, *args, h_seq, dh_n=dh_n)
    assert got.dh0 is not dh_n
    assert_close(got.dh0, to_numpy(dh_n), backend, "float64")


def test_a_nan_state_meets_no_padding_step(backend):
    """The last valid state h_{L-1} is the previous state of the padding step L: no 0 * NaN there.

    Found by tests/kernels/test_differential.py: with no upstream gradient every dz is 0,
    so dWh is the sum over the valid steps of 0 * h_{t-1}; the NaN of h0 reaches
    the column it multiplies (step 0 is valid), and the all-NaN state h_0 must not
    (its only partner is the padding step 1).
    """
    h0 = np.array([0.0, np.nan])
    Wh = np.array([[0.04, -0.05], [0.23, 0.04]])
    args = [backend.asarray(a) for a in (np.zeros((3, 0)), h0, np.zeros((2, 0)), Wh, np.array([-0.27, 0.18]))]
    with np.errstate(invalid="ignore"):
        h_seq = rnn_xp.rnn_forward(*args, lengths=np.array(1), nonlinearity="relu")
        got = rnn_xp.rnn_backward(None, *args, h_seq, lengths=np.array(1), nonlinearity="relu")
        want = np.outer(np.zeros(2), h0)  # the one valid step: dz_0 = 0 against h0
    assert np.isnan(to_numpy(h_seq)[0]).all()  # the valid state is NaN
    assert_close(got.dWh, want, backend, "float64")


def test_zero_gradient_times_inf_is_nan_whatever_the_shapes(backend):
    """An Inf input saturates tanh (f' = 0): its step's dz is 0 and dWx gets 0 * Inf = NaN, on every path.

    Found by tests/kernels/test_differential.py: the portable loop summed the weight
    gradients with tensordot, and NumPy's dot runs a (1, 1) @ (1, D) product as
    a scaled vector that skips a zero scale, so one sequence with H = 1 (and
    Dask, whose chunks of one step make such products) gave 0 where every other
    shape gave NaN.
    """
    x = np.array([[0.13, -0.13], [0.64, np.inf]])  # (T, D) = (2, 2), one sequence
    h0, Wx, Wh = np.zeros(1), np.array([[-0.19, 0.13]]), np.array([[0.65]])
    args = [backend.asarray(a) for a in (x, h0, Wx, Wh)]
    with np.errstate(invalid="ignore"):
        h_seq = rnn_xp.rnn_forward(*args)
        got = rnn_xp.rnn_backward(None, *args, None, h_seq, dh_n=backend.asarray(np.ones(1)))
        # the float64 reference, elementwise: dz_1 = 1 * (1 - tanh(inf)^2) = 0, dz_0 from it
        h = to_numpy(h_seq).astype(np.float64)
        dz1 = 1.0 * (1 - h[1] ** 2)
        dz0 = (dz1 * Wh[0, 0]) * (1 - h[0] ** 2)
        want = dz0[:, None] * x[0][None, :] + dz1[:, None] * x[1][None, :]  # (1, 2): [finite, 0 * inf]
    assert np.isnan(want[0, 1]) and np.isfinite(want[0, 0])
    assert_close(got.dWx, want, backend, "float64")
