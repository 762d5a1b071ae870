"""Every activation of the ONNX RNN operator, ``clip`` and Keras-style masks.

The forward pass is held against an independent float64 NumPy loop written
out here (``reference``); the backward pass against torch autograd of an
independent torch loop (``torch_reference``) and against ``jax.grad`` of
``rnn_forward`` itself. Both run on every backend (these options go to the
portable loop on each). The other projects' own implementations
(onnxruntime, Keras, Flax) are in ``test_onnx_operator.py``,
``test_keras_interop.py`` and ``test_flax_interop.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import BACKENDS, make_backend
from support import assert_close, optional_import, to_numpy

import rnn_xp
from rnn_xp import RNN, kernels
from rnn_xp._activations import NONLINEARITIES
from rnn_xp.kernels.portable import backward_portable, scan_portable

T, B, D, H = 5, 3, 3, 4

# Parameters away from the defaults, so that a default used by mistake shows.
PARAMS = {
    "affine": (0.7, -0.2),
    "leaky_relu": (0.3, None),
    "thresholded_relu": (0.1, None),
    "scaled_tanh": (1.5, 0.8),
    "hard_sigmoid": (0.3, 0.45),
    "elu": (0.8, None),
}
DEFAULTS = {"affine": (1.0, 0.0), "leaky_relu": (0.01, None), "thresholded_relu": (1.0, None),
            "scaled_tanh": (1.0, 1.0), "hard_sigmoid": (0.2, 0.5), "elu": (1.0, None)}

MASK = np.array([[True, False, True, True, False],
                 [False, False, True, False, True],
                 [True, True, True, True, True]])  # gaps, a masked start, a full row


def ref_f(name, z, a, b):
    """The activations as the ONNX operator's documentation writes them."""
    return {
        "tanh": lambda: np.tanh(z),
        "relu": lambda: np.maximum(z, 0.0),
        "sigmoid": lambda: 1.0 / (1.0 + np.exp(-z)),
        "affine": lambda: a * z + b,
        "leaky_relu": lambda: np.where(z >= 0, z, a * z),
        "thresholded_relu": lambda: np.where(z > a, z, 0.0),
        "scaled_tanh": lambda: a * np.tanh(b * z),
        "hard_sigmoid": lambda: np.minimum(np.maximum(a * z + b, 0.0), 1.0),
        "elu": lambda: np.where(z >= 0, z, a * (np.exp(np.minimum(z, 0.0)) - 1.0)),
        "softsign": lambda: z / (1.0 + np.abs(z)),
        "softplus": lambda: np.log1p(np.exp(z)),
    }[name]()


def reference(x, h0, Wx, Wh, b, name, a=None, bb=None, *, clip=None, mask=None, lengths=None,
              reverse=False, leak=1.0):
    """One sequence and one step at a time, float64: ``(h_seq (T, B, H), h_last (B, H))``."""
    Tn, Bn = x.shape[:2]
    out, last = np.zeros((Tn, Bn, H)), np.zeros((Bn, H))
    for n in range(Bn):
        h, prev_out = h0[n].copy(), np.zeros(H)
        L = Tn if lengths is None else lengths[n]
        for t in (range(L - 1, -1, -1) if reverse else range(L)):
            z = Wx @ x[t, n] + Wh @ h + b
            if clip is not None:
                z = np.clip(z, -clip, clip)
            h_new = (1 - leak) * h + leak * ref_f(name, z, a, bb)
            if mask is not None and not mask[n, t]:
                out[t, n] = prev_out  # a masked step repeats the previous output
                continue
            h = out[t, n] = prev_out = h_new
        last[n] = h
    return out, last


def torch_f(torch, name, z, a, b):
    F = torch.nn.functional
    return {
        "tanh": lambda: torch.tanh(z),
        "relu": lambda: torch.relu(z),
        "sigmoid": lambda: torch.sigmoid(z),
        "affine": lambda: a * z + b,
        "leaky_relu": lambda: F.leaky_relu(z, a),
        "thresholded_relu": lambda: F.threshold(z, a, 0.0),
        "scaled_tanh": lambda: a * torch.tanh(b * z),
        "hard_sigmoid": lambda: torch.clamp(a * z + b, 0.0, 1.0),
        "elu": lambda: F.elu(z, a),
        "softsign": lambda: F.softsign(z),
        "softplus": lambda: F.softplus(z),
    }[name]()


def torch_reference(arrays, name, a, bb, *, clip=None, mask=None, reverse=False, leak=1.0):
    """The recurrence in torch ops on float64 leaf tensors: ``(h_seq, h_last)``, differentiable."""
    torch = pytest.importorskip("torch")
    x, h0, Wx, Wh, b = arrays
    h, prev_out = h0, torch.zeros_like(h0)
    outs = [None] * x.shape[0]
    for t in (range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])):
        z = x[t] @ Wx.T + h @ Wh.T + b
        if clip is not None:
            z = torch.clamp(z, -clip, clip)
        h_new = (1 - leak) * h + leak * torch_f(torch, name, z, a, bb)
        if mask is None:
            h = outs[t] = h_new
        else:
            m = torch.as_tensor(mask[:, t])[:, None]
            h = torch.where(m, h_new, h)
            outs[t] = prev_out = torch.where(m, h_new, prev_out)
    return torch.stack(outs), h


def draw(rng, scale=1.2):
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((B, H)) * 0.5
    Wx = rng.standard_normal((H, D)) * scale / np.sqrt(D)
    Wh = rng.standard_normal((H, H)) * scale / np.sqrt(H)
    b = rng.standard_normal(H) * 0.3
    return x, h0, Wx, Wh, b


# Every activation on the in-memory backends; on JAX and Dask, whose portable loop
# dispatches op by op (seconds per call), the three that branch, clip and use logaddexp.
SLOW = ("jax", "dask", "cupy", "torch_cuda")
SUBSET = ("elu", "hard_sigmoid", "softplus")
GRID = [pytest.param(b, n, id=f"{b}-{n}") for b in BACKENDS for n in NONLINEARITIES
        if b not in SLOW or n in SUBSET]


def params(name):
    return PARAMS.get(name, (None, None))


# -- forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name, name", GRID)
def test_forward_matches_the_reference_on_every_backend(backend_name, name, rng):
    backend = make_backend(backend_name)
    x, h0, Wx, Wh, b = draw(rng)
    a, bb = params(name)
    args = [backend.asarray(v, "float64") for v in (x, h0, Wx, Wh, b)]
    cases = [
        dict(),
        dict(clip=0.6, reverse=True, leak=0.7),
        dict(mask=MASK),
        dict(mask=MASK, reverse=True, clip=0.9),
        dict(lengths=[5, 0, 2], reverse=True),
    ]
    for opts in cases:
        want_seq, want_last = reference(x, h0, Wx, Wh, b, name, a, bb, **opts)
        kw = dict(opts)
        if "lengths" in kw:  # the option zeroes outputs past each length
            kw["lengths"] = np.asarray(kw["lengths"])
        if "mask" in kw:
            kw["mask"] = backend.asarray(kw["mask"])
        seq = rnn_xp.rnn_forward(*args, nonlinearity=name, activation_alpha=a, activation_beta=bb,
                                 **kw)
        last = rnn_xp.rnn_forward(*args, nonlinearity=name, activation_alpha=a,
                                  activation_beta=bb, return_sequences=False, **kw)
        assert_close(seq, want_seq, backend, "float64")
        assert_close(last, want_last, backend, "float64")


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_omitted_parameters_are_onnx_defaults(name, rng):
    x, h0, Wx, Wh, b = draw(rng)
    want, _ = reference(x, h0, Wx, Wh, b, name, *DEFAULTS[name])
    np.testing.assert_allclose(rnn_xp.rnn_forward(x, h0, Wx, Wh, b, nonlinearity=name), want,
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_forward_matches_the_reference(backend, dtype, rng):
    x, h0, Wx, Wh, b = draw(rng)
    for name in ("hard_sigmoid", "softplus", "elu"):
        a, bb = params(name)
        want = ref_f(name, np.clip(x[0] @ Wx.T + h0 @ Wh.T + b, -0.8, 0.8), a, bb)
        got = rnn_xp.rnn_step_forward(*(backend.asarray(v, dtype) for v in (x[0], h0, Wx, Wh, b)),
                                      nonlinearity=name, activation_alpha=a, activation_beta=bb,
                                      clip=0.8)
        assert_close(got, want, backend, dtype)


def test_mask_with_batch_first_and_extra_batch_axes(rng):
    x, h0, Wx, Wh, b = draw(rng)
    want, _ = reference(x, h0, Wx, Wh, b, "tanh", mask=MASK)
    got = rnn_xp.rnn_forward(np.moveaxis(x, 0, 1), h0, Wx, Wh, b, mask=MASK.tolist(),
                             batch_first=True)  # (B, T, H)
    np.testing.assert_allclose(np.moveaxis(got, 1, 0), want, rtol=1e-12, atol=1e-14)
    # two batch axes: (T, 1, B, D) with a mask (1, B, T)
    got = rnn_xp.rnn_forward(x[:, None], h0[None], Wx, Wh, b, mask=MASK[None])
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12, atol=1e-14)


def test_all_true_mask_is_the_plain_recurrence_and_edges(rng):
    x, h0, Wx, Wh, b = draw(rng)
    plain = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    masked = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, mask=np.ones((B, T), dtype=bool))
    np.testing.assert_allclose(masked, plain, rtol=1e-13, atol=1e-15)
    # an all-False row outputs zeros and keeps h0
    mask = np.ones((B, T), dtype=bool)
    mask[1] = False
    seq = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, mask=mask, nonlinearity="softsign")
    last = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, mask=mask, nonlinearity="softsign",
                              return_sequences=False)
    assert np.all(seq[:, 1] == 0) and np.array_equal(last[1], h0[1])
    # T = 0, and NaN stays NaN through the activations that branch on z
    empty = rnn_xp.rnn_forward(x[:0], h0, Wx, Wh, b, nonlinearity="elu", mask=np.ones((B, 0), bool))
    assert empty.shape == (0, B, H)
    bad = x.copy()
    bad[2, 0, 0] = np.nan
    for name in ("elu", "thresholded_relu", "leaky_relu", "hard_sigmoid", "sigmoid"):
        out = rnn_xp.rnn_forward(bad, h0, Wx, Wh, b, nonlinearity=name)
        assert np.all(np.isnan(out[2:, 0])) and np.all(np.isfinite(out[:, 1:])), name


def test_dispatch_sends_the_new_options_to_the_portable_loops():
    import array_api_compat.numpy as xnp

    assert kernels.forward_kernel(xnp) is not scan_portable  # the plain call keeps its fast kernel
    assert kernels.forward_kernel(xnp, extended=True) is scan_portable
    assert kernels.backward_kernel(xnp, extended=True) is backward_portable
    jnp = optional_import("jax.numpy")
    if jnp is not None:  # JAX keeps its kernel: it runs the portable loop under its custom_vjp
        from rnn_xp.kernels.jax import backward_jax, scan_jax

        assert kernels.forward_kernel(jnp, extended=True) is scan_jax
        assert kernels.backward_kernel(jnp, extended=True) is backward_jax


def test_plain_options_keep_the_fast_kernels_result_bit_for_bit(rng):
    # tanh/relu with clip=None and mask=None are the very same call as before
    x, h0, Wx, Wh, b = draw(rng)
    for name in ("tanh", "relu"):
        fast = kernels.forward_kernel(np)(np, x, h0, Wx, Wh, b, nonlinearity=name, lengths=None,
                                          reverse=False, leak=1.0, return_sequences=True)[0]
        np.testing.assert_array_equal(rnn_xp.rnn_forward(x, h0, Wx, Wh, b, nonlinearity=name,
                                                         clip=None, mask=None), fast)


# -- backward -----------------------------------------------------------------------------


def _grads_torch(x, h0, Wx, Wh, b, dh, dh_n, name, a, bb, **opts):
    torch = pytest.importorskip("torch")
    leaves = [torch.tensor(v, requires_grad=True) for v in (x, h0, Wx, Wh, b)]
    seq, last = torch_reference(leaves, name, a, bb, **opts)
    loss = (seq * torch.tensor(dh)).sum() + (last * torch.tensor(dh_n)).sum()
    return [g.numpy() for g in torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize("backend_name, name", GRID)
def test_backward_matches_torch_autograd_on_every_backend(backend_name, name, rng):
    pytest.importorskip("torch")
    backend = make_backend(backend_name)
    x, h0, Wx, Wh, b = draw(rng)
    dh, dh_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    a, bb = params(name)
    cases = [dict(mask=MASK, reverse=True, clip=0.9), dict(clip=0.7, leak=0.6), dict(mask=MASK)]
    if backend_name in SLOW:
        cases = cases[:1]
    args = [backend.asarray(v, "float64") for v in (x, h0, Wx, Wh, b)]
    for opts in cases:
        want = _grads_torch(x, h0, Wx, Wh, b, dh, dh_n, name, a, bb, **opts)
        kw = {k: backend.asarray(v) if k == "mask" else v for k, v in opts.items()}
        common = dict(nonlinearity=name, activation_alpha=a, activation_beta=bb, **kw)
        h_seq = rnn_xp.rnn_forward(*args, **common)
        g = rnn_xp.rnn_backward(backend.asarray(dh, "float64"), *args, h_seq,
                                dh_n=backend.asarray(dh_n, "float64"), **common)
        for got, ref in zip(g, want):
            assert_close(got, ref, backend, "float64", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["hard_sigmoid", "scaled_tanh"])
def test_backward_matches_jax_grad_of_the_forward(name, rng):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    x, h0, Wx, Wh, b = (jnp.asarray(v) for v in draw(rng))
    dh = jnp.asarray(rng.standard_normal((T, B, H)))
    a, bb = params(name)
    opts = dict(nonlinearity=name, activation_alpha=a, activation_beta=bb, clip=0.8,
                mask=jnp.asarray(MASK), leak=0.9)

    def loss(*arrays):
        return jnp.sum(rnn_xp.rnn_forward(*arrays, **opts) * dh)

    want = jax.grad(loss, argnums=(0, 1, 2, 3, 4))(x, h0, Wx, Wh, b)
    g = rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, rnn_xp.rnn_forward(x, h0, Wx, Wh, b, **opts),
                            **opts)
    for got, ref in zip(g, want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-9, atol=1e-11)


def test_step_backward_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x, h0, Wx, Wh, b = draw(rng)
    d = rng.standard_normal((B, H))
    for name in ("elu", "softsign", "tanh"):
        a, bb = params(name)
        leaves = [torch.tensor(v, requires_grad=True) for v in (x[0], h0, Wx, Wh, b)]
        z = torch.clamp(leaves[0] @ leaves[2].T + leaves[1] @ leaves[3].T + leaves[4], -0.7, 0.7)
        want = torch.autograd.grad((torch_f(torch, name, z, a, bb) * torch.tensor(d)).sum(), leaves)
        nxt = rnn_xp.rnn_step_forward(x[0], h0, Wx, Wh, b, nonlinearity=name, activation_alpha=a,
                                      activation_beta=bb, clip=0.7)
        got = rnn_xp.rnn_step_backward(d, x[0], h0, Wx, Wh, nxt, nonlinearity=name,
                                       activation_alpha=a, activation_beta=bb, clip=0.7, b=b)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-10, atol=1e-12)


def test_lengths_backward_with_a_new_activation_matches_autograd(rng):
    # lengths with the z-recomputing backward: the padding is never read
    torch = pytest.importorskip("torch")
    x, h0, Wx, Wh, b = draw(rng)
    lengths = np.array([5, 3, 0])
    dh = rng.standard_normal((T, B, H))
    leaves = [torch.tensor(v, requires_grad=True) for v in (x, h0, Wx, Wh, b)]
    from array_api_compat import torch as txp

    from rnn_xp.kernels import scan_portable

    # torch's autograd through the portable loop: an independent gradient
    seq, last = scan_portable(txp, *leaves, nonlinearity="elu", lengths=torch.asarray(lengths),
                              reverse=True, leak=1.0, return_sequences=True, clip=0.9)
    want = torch.autograd.grad((seq * torch.tensor(dh)).sum() + last.sum(), leaves)
    padded = x.copy()
    padded[3:, 1] = 1e6  # past the second sequence's length: must not reach any gradient
    padded[:, 2] = -1e6
    h_seq = rnn_xp.rnn_forward(padded, h0, Wx, Wh, b, nonlinearity="elu", lengths=lengths,
                               reverse=True, clip=0.9)
    g = rnn_xp.rnn_backward(dh, padded, h0, Wx, Wh, b, h_seq, dh_n=np.ones((B, H)),
                            nonlinearity="elu", lengths=lengths, reverse=True, clip=0.9)
    for got, ref in zip(g, want):
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-10, atol=1e-12)


# -- the layer ------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [True, False])
def test_layer_backward_with_every_new_option_matches_torch_autograd(rng, bidirectional):
    torch = pytest.importorskip("torch")
    kw = dict(num_layers=2, bidirectional=bidirectional, clip=1.1, batch_first=True,
              dtype="float64", seed=3)
    if bidirectional:
        kw.update(nonlinearity=("elu", "hard_sigmoid"), activation_alpha=(0.5, None))
    else:
        kw.update(nonlinearity="softplus", reverse=True)
    rnn = RNN(D, H, **kw)
    x = rng.standard_normal((B, T, D))
    out, h_n, cache = rnn.forward(x, mask=MASK, return_cache=True)
    d_out, d_hn = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    grads = rnn.backward(cache, d_out, d_hn)

    trnn = RNN(D, H, xp="torch", **kw)
    params = {k: torch.tensor(to_numpy(v), requires_grad=True) for k, v in rnn.params.items()}
    trnn.params = dict(params)
    xt = torch.tensor(x, requires_grad=True)
    tout, th_n = trnn(xt, mask=torch.asarray(MASK))
    np.testing.assert_allclose(tout.detach().numpy(), out, rtol=1e-12, atol=1e-14)
    loss = (tout * torch.tensor(d_out)).sum() + (th_n * torch.tensor(d_hn)).sum()
    want = torch.autograd.grad(loss, [xt, *params.values()])
    np.testing.assert_allclose(grads.dx, want[0].numpy(), rtol=1e-9, atol=1e-11)
    for (name, g), w in zip(grads.params.items(), want[1:]):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_layer_per_direction_activations_match_the_functions(rng):
    rnn = RNN(D, H, bidirectional=True, nonlinearity=("leaky_relu", "tanh"),
              activation_alpha=(0.25, None), clip=2.0, dtype="float64", seed=1)
    assert rnn.activations == (("leaky_relu", 0.25, None), ("tanh", None, None))
    x = rng.standard_normal((T, B, D))
    out, h_n = rnn(x)
    fwd = rnn_xp.rnn_forward(x, None, *rnn._weights(0, ""), nonlinearity="leaky_relu",
                             activation_alpha=0.25, clip=2.0)
    bwd = rnn_xp.rnn_forward(x, None, *rnn._weights(0, "_reverse"), clip=2.0, reverse=True)
    np.testing.assert_array_equal(out, np.concatenate([fwd, bwd], axis=-1))
    assert "nonlinearity=('leaky_relu', 'tanh')" in repr(rnn) and "clip=2.0" in repr(rnn)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(activation_alpha=0.5), ValueError, r"activation_alpha does not apply to nonlinearity='tanh'"),
    (dict(nonlinearity="elu", activation_beta=0.5), ValueError, r"activation_beta does not apply to nonlinearity='elu'"),
    (dict(nonlinearity="elu", activation_alpha="1"), TypeError, r"activation_alpha must be a real number; got str"),
    (dict(nonlinearity="affine", activation_alpha=float("nan")), ValueError, r"activation_alpha must be finite"),
    (dict(clip=0.0), ValueError, r"clip must be a positive number"),
    (dict(clip=float("nan")), ValueError, r"clip must be a positive number"),
    (dict(clip=True), TypeError, r"clip must be a positive number or None; got bool"),
    (dict(mask=np.ones((B, T), dtype=bool), lengths=[1, 2, 3]), ValueError, r"give lengths or mask, not both"),
    (dict(mask=np.ones((T, B), dtype=bool)), ValueError, r"mask must have shape \(\*batch, T\) = \(3, 5\); got shape \(5, 3\)"),
    (dict(mask=np.ones((B, T))), TypeError, r"mask must have a boolean dtype; got float64"),
    (dict(mask=[[1, 0]]), TypeError, r"mask must hold booleans"),
    (dict(mask="yes"), TypeError, r"mask must be a boolean array of shape \(\*batch, T\); got str"),
])
def test_bad_options(rng, kwargs, exc, match):
    x, h0, Wx, Wh, b = draw(rng)
    with pytest.raises(exc, match=match):
        rnn_xp.rnn_forward(x, h0, Wx, Wh, b, **kwargs)
    if "lengths" not in kwargs:
        with pytest.raises(exc, match=match):
            rnn_xp.rnn_backward(None, x, h0, Wx, Wh, b, np.zeros((T, B, H)), **kwargs)


def test_bad_layer_options():
    with pytest.raises(ValueError, match=r"nonlinearity must be one value or one per direction \(2\); got 3"):
        RNN(D, H, bidirectional=True, nonlinearity=("tanh", "relu", "elu"))
    with pytest.raises(ValueError, match="reverse=True is a single direction"):
        RNN(D, H, bidirectional=True, reverse=True)
    with pytest.raises(ValueError, match=r"activation_alpha does not apply to nonlinearity='relu'"):
        RNN(D, H, bidirectional=True, nonlinearity=("elu", "relu"), activation_alpha=0.5)
    with pytest.raises(ValueError, match="give lengths or mask"):
        RNN(D, H)(np.zeros((T, B, D), np.float32), lengths=[1, 2, 3], mask=MASK)
    torch = optional_import("torch")
    if torch is not None:
        from rnn_xp import convert

        with pytest.raises(ValueError, match="torch.nn.RNN runs tanh or relu"):
            convert.to_torch(RNN(D, H, nonlinearity="elu"))
