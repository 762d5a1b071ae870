"""``RNN.backward`` against torch autograd, on every backend.

The reference is ``torch.nn.RNN`` in float64 with autograd (through
``pack_padded_sequence`` / ``pad_packed_sequence`` for variable lengths); the
layer gets the module's weights with ``RNN.from_torch`` and is moved to the
backend with ``rnn.to``. The loss is ``sum(output * d_output) + sum(h_n * d_h_n)``
with random ``d_output`` and ``d_h_n``, so the gradients of ``output`` and
``h_n`` are exactly those two arrays.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnn_xp
from rnn_xp import RNN, LayerCache, LayerGrads
from support import BACKENDS, assert_close, to_numpy, torch_packed, torch_rnn

torch = pytest.importorskip("torch")

from support import make_backend  # noqa: E402

D, H, T, B = 3, 4, 5, 4
LENGTHS = [3, 1, 5, 2]  # unsorted, with a 1 and a full-length sequence (T = 5)
TIGHT = {"rtol": 1e-9, "atol": 1e-12}
SLOW = ("jax", "dask", "cupy", "torch_cuda")  # a call compiles or builds a graph


def torch_module(*args, **kwargs):
    return torch_rnn(D, H, *args, **kwargs)


def torch_grads(module, x, h0, lengths, d_out, d_hn):
    """torch autograd's ``(dx, dh0, {name: grad})`` as float64 NumPy.

    ``h0=None`` runs from zeros that require grad, which is torch's default
    state, so its gradient is the one ``RNN.backward`` returns for ``h0=None``.
    """
    dirs = 2 if module.bidirectional else 1
    batch = x.shape[:-2] if module.batch_first else x.shape[1:-1]
    if h0 is None:
        h0 = np.zeros((module.num_layers * dirs, *batch, H))
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    out, h_n = torch_packed(module, xt, h0t, lengths)
    loss = (out * torch.from_numpy(d_out)).sum()
    if d_hn is not None:
        loss = loss + (h_n * torch.from_numpy(d_hn)).sum()
    loss.backward()
    params = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return xt.grad.numpy(), h0t.grad.numpy(), params


def case(rng, module, *, batched=True, with_h0=True, with_lengths=False, with_d_hn=True):
    """Random ``x, h0, lengths, d_out, d_hn`` (float64 NumPy) for ``module``."""
    dirs = 2 if module.bidirectional else 1
    batch = (B,) if batched else ()
    x = rng.standard_normal((T, *batch, D))
    if batched and module.batch_first:
        x = np.ascontiguousarray(np.moveaxis(x, 0, 1))
    h0 = 0.5 * rng.standard_normal((module.num_layers * dirs, *batch, H)) if with_h0 else None
    lengths = LENGTHS if with_lengths else None
    d_out = rng.standard_normal((*x.shape[:-1], dirs * H))  # also past the lengths: ignored
    d_hn = rng.standard_normal((module.num_layers * dirs, *batch, H)) if with_d_hn else None
    return x, h0, lengths, d_out, d_hn


def check_against_torch(backend, module, x, h0, lengths, d_out, d_hn):
    rnn = RNN.from_torch(module).to(xp=backend.xp, device=backend.device, dtype="float64")
    asarray = backend.asarray
    output, h_n, cache = rnn.forward(
        asarray(x), None if h0 is None else asarray(h0), lengths=lengths, return_cache=True)
    assert isinstance(cache, LayerCache)
    grads = rnn.backward(cache, asarray(d_out), None if d_hn is None else asarray(d_hn))
    assert isinstance(grads, LayerGrads)

    dx, dh0, dparams = torch_grads(module, x, h0, lengths, d_out, d_hn)
    assert_close(grads.dx, dx, backend, "float64", **TIGHT)
    assert_close(grads.dh0, dh0, backend, "float64", **TIGHT)
    assert list(grads.params) == list(dparams)  # torch's names, in torch's order
    for name, expected in dparams.items():
        assert_close(grads.params[name], expected, backend, "float64", **TIGHT)


# num_layers, nonlinearity, bias, batch_first, bidirectional, with_h0, with_lengths, with_d_hn
GRID = list(itertools.product([1, 3], ["tanh", "relu"], [True, False], [False, True],
                              [False, True], [False, True], [False, True], [False, True]))
FIELDS = "num_layers,nonlinearity,bias,batch_first,bidirectional,with_h0,with_lengths,with_d_hn"


@pytest.mark.parametrize(FIELDS, GRID)
def test_full_grid_matches_torch_autograd_on_numpy(
        rng, num_layers, nonlinearity, bias, batch_first, bidirectional, with_h0,
        with_lengths, with_d_hn):  # fmt: skip
    module = torch_module(num_layers, nonlinearity, bias, batch_first, bidirectional)
    check_against_torch(make_backend("numpy"), module,
                        *case(rng, module, with_h0=with_h0, with_lengths=with_lengths,
                              with_d_hn=with_d_hn))


SUBSET = [
    (1, "tanh", True, False, False, True, False, True),
    (3, "tanh", True, True, True, False, True, False),   # deep, bidirectional, packed
    (3, "relu", False, False, True, True, True, True),   # relu, no bias, packed
    (1, "relu", True, True, True, True, False, False),
    (3, "tanh", False, False, False, False, False, True),
]


@pytest.mark.parametrize(FIELDS, SUBSET)
def test_subset_matches_torch_autograd_on_every_backend(
        backend, rng, num_layers, nonlinearity, bias, batch_first, bidirectional, with_h0,
        with_lengths, with_d_hn):  # fmt: skip
    module = torch_module(num_layers, nonlinearity, bias, batch_first, bidirectional)
    check_against_torch(backend, module,
                        *case(rng, module, with_h0=with_h0, with_lengths=with_lengths,
                              with_d_hn=with_d_hn))


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_unbatched_matches_torch_autograd(backend, rng, num_layers, bidirectional, with_h0):
    module = torch_module(num_layers, "tanh", True, True, bidirectional)  # batch_first ignored
    check_against_torch(backend, module, *case(rng, module, batched=False, with_h0=with_h0))


def test_zero_length_sequence_passes_d_h_n_to_dh0(rng):
    """torch cannot pack a length 0: the other sequences are checked against it alone."""
    module = torch_module(2, "tanh", True, False, True)
    x, h0, _, d_out, d_hn = case(rng, module)
    lengths, keep = [5, 0, 2, 1], [0, 2, 3]
    rnn = RNN.from_torch(module)
    _, _, cache = rnn.forward(x, h0, lengths=lengths, return_cache=True)
    g = rnn.backward(cache, d_out, d_hn)
    np.testing.assert_array_equal(g.dh0[:, 1], d_hn[:, 1])  # nothing ran: h_n = h0
    np.testing.assert_array_equal(g.dx[:, 1], 0.0)
    dx, dh0, dparams = torch_grads(module, x[:, keep], h0[:, keep], [lengths[i] for i in keep],
                                   d_out[:, keep], d_hn[:, keep])
    np.testing.assert_allclose(g.dx[:, keep], dx, **TIGHT)
    np.testing.assert_allclose(g.dh0[:, keep], dh0, **TIGHT)
    for name, expected in dparams.items():  # a length-0 sequence adds nothing
        np.testing.assert_allclose(g.params[name], expected, err_msg=name, **TIGHT)


@pytest.mark.parametrize("leak", [0.3, 1.0])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_leak_matches_torch_autograd_through_the_forward(rng, leak, nonlinearity):
    """torch has no leak: autograd runs through rnn_xp's own forward on torch tensors."""
    rnn = RNN(D, H, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
              batch_first=True, leak=leak, dtype="float64", seed=1)
    x = rng.standard_normal((B, T, D))
    h0 = 0.5 * rng.standard_normal((4, B, H))
    d_out, d_hn = rng.standard_normal((B, T, 2 * H)), rng.standard_normal((4, B, H))
    out, h_n, cache = rnn.forward(x, h0, lengths=LENGTHS, return_cache=True)
    grads = rnn.backward(cache, d_out, d_hn)

    trnn = RNN(D, H, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
               batch_first=True, leak=leak, xp="torch", dtype="float64")
    tparams = {name: torch.tensor(p, requires_grad=True) for name, p in rnn.params.items()}
    trnn.params = dict(tparams)
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    out_t, h_n_t = trnn(xt, h0t, lengths=LENGTHS)
    np.testing.assert_allclose(out_t.detach().numpy(), out, rtol=1e-12, atol=1e-14)
    ((out_t * torch.from_numpy(d_out)).sum() + (h_n_t * torch.from_numpy(d_hn)).sum()).backward()
    np.testing.assert_allclose(grads.dx, xt.grad.numpy(), **TIGHT)
    np.testing.assert_allclose(grads.dh0, h0t.grad.numpy(), **TIGHT)
    for name, p in tparams.items():
        np.testing.assert_allclose(grads.params[name], p.grad.numpy(), err_msg=name, **TIGHT)


def test_d_output_none_is_a_loss_on_h_n_only(rng):
    module = torch_module(2, "tanh", True, False, True)
    x, h0, lengths, d_out, d_hn = case(rng, module, with_lengths=True)
    rnn = RNN.from_torch(module)
    _, _, cache = rnn.forward(x, h0, lengths=lengths, return_cache=True)
    g = rnn.backward(cache, None, d_hn)
    dx, dh0, dparams = torch_grads(module, x, h0, lengths, np.zeros_like(d_out), d_hn)
    np.testing.assert_allclose(g.dx, dx, **TIGHT)
    np.testing.assert_allclose(g.dh0, dh0, **TIGHT)
    for name, expected in dparams.items():
        np.testing.assert_allclose(g.params[name], expected, err_msg=name, **TIGHT)


def test_return_cache_false_is_the_old_forward(rng):
    rnn = RNN(D, H, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    x = rng.standard_normal((T, B, D))
    plain = rnn.forward(x)
    assert len(plain) == 2 and len(rnn(x)) == 2
    output, h_n, _ = rnn.forward(x, return_cache=True)
    np.testing.assert_array_equal(plain[0], output)
    np.testing.assert_array_equal(plain[1], h_n)


def test_backward_uses_the_forwards_weights(rng):
    """Parameters replaced after the forward do not change its gradients."""
    rnn = RNN(D, H, num_layers=2, dtype="float64", seed=0)
    x = rng.standard_normal((T, B, D))
    output, _, cache = rnn.forward(x, return_cache=True)
    before = rnn.backward(cache, np.ones_like(output))
    rnn.params = {name: 2.0 * p for name, p in rnn.params.items()}
    after = rnn.backward(cache, np.ones_like(output))
    np.testing.assert_array_equal(before.dx, after.dx)
    for name in before.params:
        np.testing.assert_array_equal(before.params[name], after.params[name])


# long where a step is a compile or a graph (seconds in all): each backend's gradients are held against
# torch's by test_subset_matches_torch_autograd_on_every_backend, the descent itself on NumPy
@pytest.mark.parametrize("backend_name", [pytest.param(name, marks=pytest.mark.long) if name in SLOW else name
                                          for name in BACKENDS])
def test_sgd_steps_with_the_layers_gradients_reduce_the_loss(backend_name, rng):
    """Plain SGD on ``mean((output - y)**2)`` with the layer's gradients lowers the loss."""
    backend = make_backend(backend_name)
    rnn = RNN(D, H, num_layers=2, bidirectional=True, batch_first=True, dtype="float64",
              seed=3).to(xp=backend.xp, device=backend.device)
    xp = backend.xp
    x = backend.asarray(rng.standard_normal((B, T, D)))
    y = backend.asarray(0.5 * np.tanh(rng.standard_normal((B, T, 2 * H))))

    def loss_and_grads():
        output, _, cache = rnn.forward(x, lengths=LENGTHS, return_cache=True)
        diff = output - y
        loss = float(to_numpy(xp.mean(diff * diff)))
        return loss, rnn.backward(cache, 2.0 * diff / (B * T * 2 * H))  # d mean / d output

    losses = []
    for _ in range(30):
        loss, grads = loss_and_grads()
        losses.append(loss)
        rnn.params = {name: p - 0.5 * grads.params[name] for name, p in rnn.params.items()}
    losses.append(loss_and_grads()[0])
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0], losses
    # a step up the gradient raises the loss: the sign is right, not only the size
    _, grads = loss_and_grads()
    rnn.params = {name: p + 0.5 * grads.params[name] for name, p in rnn.params.items()}
    assert loss_and_grads()[0] > losses[-1]


def test_bad_arguments():
    rnn = RNN(D, H, num_layers=2, dtype="float64", seed=0)
    x = np.zeros((T, B, D))
    output, _, cache = rnn.forward(x, return_cache=True)
    with pytest.raises(TypeError, match="cache must be the LayerCache"):
        rnn.backward((output,), np.ones_like(output))
    with pytest.raises(ValueError, match=r"d_output must have shape .* = \(5, 4, 4\); got shape \(5, 4, 3\)"):
        rnn.backward(cache, np.ones((T, B, 3)))
    with pytest.raises(ValueError, match=r"d_h_n must have shape .* = \(2, 4, 4\); got shape \(1, 4, 4\)"):
        rnn.backward(cache, output, np.ones((1, B, H)))
    with pytest.raises(TypeError, match="d_output is from torch"):
        rnn.backward(cache, torch.ones(T, B, H, dtype=torch.float64))
    other = RNN(D, H, num_layers=3, dtype="float64", seed=0)
    with pytest.raises(ValueError, match="cache holds 2 layer directions"):
        other.backward(cache, output)


def test_exports():
    assert rnn_xp.LayerGrads is LayerGrads and "LayerGrads" in rnn_xp.__all__
    assert rnn_xp.LayerCache is LayerCache and "LayerCache" in rnn_xp.__all__
