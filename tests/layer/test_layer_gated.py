"""``rnn_xp.LSTM`` and ``rnn_xp.GRU`` against ``torch.nn.LSTM`` and ``torch.nn.GRU``, on every backend.

The torch modules are float64 with torch's seeded weights; the rnn_xp layer
loads their state dict and moves to the backend. torch's outputs (through
``pack_padded_sequence`` for variable lengths) and torch's autograd of its
own module are the references, float64 to 1e-10. One ``cell`` parameter
runs every check for both layers.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import rnn_xp
from support import assert_close, to_numpy

torch = pytest.importorskip("torch")

D, H, P, T, B = 3, 4, 2, 5, 3
LENGTHS = [3, 1, 5, 0]  # unsorted, with 0, 1 and the full length


def torch_module(cell, num_layers=1, bias=True, batch_first=False, bidirectional=False, proj=0, seed=0):
    torch.manual_seed(seed)
    kw = dict(bias=bias, batch_first=batch_first, bidirectional=bidirectional, dtype=torch.float64)
    if cell == "lstm":
        return torch.nn.LSTM(D, H, num_layers, proj_size=proj, **kw)
    return torch.nn.GRU(D, H, num_layers, **kw)


def layer_like(module, backend, dtype="float64"):
    cls = rnn_xp.LSTM if isinstance(module, torch.nn.LSTM) else rnn_xp.GRU
    kw = dict(bias=module.bias, batch_first=module.batch_first, bidirectional=module.bidirectional,
              dtype="float64", seed=1)
    if cls is rnn_xp.LSTM:
        kw["proj_size"] = module.proj_size
    layer = cls(D, H, module.num_layers, **kw).load_state_dict(module.state_dict())
    return layer.to(xp=backend.xp, device=backend.device, dtype=dtype)


def states(rng, module, batched=True):
    """The initial state as torch takes it: ``h0``, or ``(h0, c0)``."""
    dirs = 2 if module.bidirectional else 1
    batch = (B,) if batched else ()
    out = getattr(module, "proj_size", 0) or H
    h0 = rng.standard_normal((module.num_layers * dirs, *batch, out)) * 0.5
    if isinstance(module, torch.nn.LSTM):
        return h0, rng.standard_normal((module.num_layers * dirs, *batch, H)) * 0.5
    return h0


def torch_run(module, x, hx, lengths=None):
    """torch's output and final state(s) as float64 NumPy."""
    xt = torch.from_numpy(x)
    hxt = None if hx is None else (tuple(map(torch.from_numpy, hx)) if isinstance(hx, tuple)
                                   else torch.from_numpy(hx))  # fmt: skip
    with torch.no_grad():
        if lengths is None:
            out, fin = module(xt, hxt)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                xt, torch.as_tensor(lengths).clamp(min=1), batch_first=module.batch_first,
                enforce_sorted=False)  # fmt: skip
            out, fin = module(packed, hxt)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(
                out, batch_first=module.batch_first, total_length=T)
    fin = tuple(f.numpy() for f in fin) if isinstance(fin, tuple) else fin.numpy()
    return out.numpy(), fin


def on(backend, hx):
    if hx is None:
        return None
    return tuple(backend.asarray(a) for a in hx) if isinstance(hx, tuple) else backend.asarray(hx)


def close_states(got, want, backend, dtype="float64", **tol):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == 2
        for g, w in zip(got, want):
            assert_close(g, w, backend, dtype, **tol)
    else:
        assert_close(got, want, backend, dtype, **tol)


CELLS = ["lstm", "gru"]
# (cell, num_layers, bias, batch_first, bidirectional, with_hx, proj): every value of every
# option at least once with each cell, and the full combination (torch's own tests cover the rest)
GRID = [
    ("lstm", 1, True, False, False, False, 0),
    ("lstm", 2, True, True, True, True, P),
    ("lstm", 2, False, False, True, True, 0),
    ("lstm", 1, False, True, False, True, P),
    ("lstm", 2, True, False, False, False, P),
    ("gru", 1, True, False, False, False, 0),
    ("gru", 2, True, True, True, True, 0),
    ("gru", 2, False, False, True, True, 0),
    ("gru", 1, False, True, False, True, 0),
]


@pytest.mark.parametrize("cell,num_layers,bias,batch_first,bidirectional,with_hx,proj", GRID)
def test_matches_torch(backend, rng, cell, num_layers, bias, batch_first, bidirectional, with_hx, proj):
    module = torch_module(cell, num_layers, bias, batch_first, bidirectional, proj)
    x = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    hx = states(rng, module) if with_hx else None
    want_out, want_fin = torch_run(module, x, hx)
    out, fin = layer_like(module, backend)(backend.asarray(x), on(backend, hx))
    assert_close(out, want_out, backend, "float64")
    close_states(fin, want_fin, backend)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_torch(backend, rng, cell):
    module = torch_module(cell, 2, bidirectional=True, proj=P if cell == "lstm" else 0)
    x = rng.standard_normal((T, B, D))
    want_out, want_fin = torch_run(module, x, None)
    layer = layer_like(module, backend, "float32")
    out, fin = layer(backend.asarray(x, "float32"))
    assert_close(out, want_out, backend, "float32", rtol=1e-4, atol=1e-5)
    close_states(fin, want_fin, backend, "float32", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_matches_torch(backend, rng, cell, bidirectional):
    module = torch_module(cell, 2, bidirectional=bidirectional)
    x = rng.standard_normal((T, D))
    hx = states(rng, module, batched=False)
    want_out, want_fin = torch_run(module, x, hx)
    out, fin = layer_like(module, backend)(backend.asarray(x), on(backend, hx))
    assert_close(out, want_out, backend, "float64")
    close_states(fin, want_fin, backend)


@pytest.mark.parametrize("cell,bidirectional,batch_first,proj",
                         [("lstm", False, False, 0), ("lstm", True, True, P), ("lstm", True, False, 0),
                          ("gru", False, True, 0), ("gru", True, False, 0)])  # fmt: skip
def test_lengths_match_pack_padded(backend, rng, cell, bidirectional, batch_first, proj):
    module = torch_module(cell, 2, batch_first=batch_first, bidirectional=bidirectional, proj=proj)
    lengths = [3, 1, 5]
    x = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    hx = states(rng, module)
    want_out, want_fin = torch_run(module, x, hx, lengths)
    out, fin = layer_like(module, backend)(backend.asarray(x), on(backend, hx), lengths=lengths)
    assert_close(out, want_out, backend, "float64")
    close_states(fin, want_fin, backend)


@pytest.mark.parametrize("cell", CELLS)
def test_length_zero_keeps_the_initial_state_and_outputs_zeros(backend, rng, cell):
    # torch refuses a length of 0 in a packed sequence: the rule is rnn_xp's own
    module = torch_module(cell, 1, bidirectional=True)
    x = rng.standard_normal((T, 4, D))
    hx = tuple(np.concatenate([s, s[:, :1]], axis=1) for s in states(rng, module)) if cell == "lstm" \
        else np.concatenate([states(rng, module)] * 2, axis=1)[:, :4]  # fmt: skip
    layer = layer_like(module, backend)
    out, fin = layer(backend.asarray(x), on(backend, hx), lengths=LENGTHS)
    out = to_numpy(out)
    assert np.all(out[:, 3] == 0)  # every step of the length-0 sequence
    assert np.all(out[3:, 0] == 0) and np.all(out[1:, 1] == 0)  # past the other lengths
    for got, start in zip(fin if cell == "lstm" else (fin,), hx if cell == "lstm" else (hx,)):
        np.testing.assert_array_equal(to_numpy(got)[:, 3], start[:, 3])


def torch_grads(module, x, hx, d_out, d_fin, lengths=None):
    """torch autograd of its own module: ``{name: grad}`` for x, the state(s) and every parameter."""
    xt = torch.tensor(x, requires_grad=True)
    if isinstance(hx, tuple):
        hxt = tuple(torch.tensor(a, requires_grad=True) for a in hx)
        leaves_h = list(hxt)
    else:
        hxt = torch.tensor(hx, requires_grad=True)
        leaves_h = [hxt]
    if lengths is None:
        out, fin = module(xt, hxt)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths),
                                                         batch_first=module.batch_first,
                                                         enforce_sorted=False)  # fmt: skip
        out, fin = module(packed, hxt)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first,
                                                        total_length=T)  # fmt: skip
    fins = fin if isinstance(fin, tuple) else (fin,)
    loss = (out * torch.from_numpy(d_out)).sum() + sum((f * torch.from_numpy(d)).sum()
                                                      for f, d in zip(fins, d_fin))  # fmt: skip
    names = [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(loss, [xt, *leaves_h, *module.parameters()])
    return {"x": grads[0].numpy(), "states": [g.numpy() for g in grads[1:1 + len(leaves_h)]],
            **{n: g.numpy() for n, g in zip(names, grads[1 + len(leaves_h):])}}


@pytest.mark.parametrize("cell,bidirectional,batch_first,proj,lengths", [
    ("lstm", False, False, 0, None),
    ("lstm", True, True, P, [3, 1, 5]),
    ("lstm", True, False, 0, [3, 1, 5]),
    ("lstm", False, True, P, None),
    ("gru", False, False, 0, None),
    ("gru", True, True, 0, [3, 1, 5]),
    ("gru", False, True, 0, [3, 1, 5]),
])
def test_backward_matches_torch_autograd(backend, rng, cell, bidirectional, batch_first, proj, lengths):
    module = torch_module(cell, 2, batch_first=batch_first, bidirectional=bidirectional, proj=proj)
    x = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    hx = states(rng, module)
    want_out, want_fin = torch_run(module, x, hx, lengths)
    d_out = rng.standard_normal(want_out.shape)
    fins = want_fin if isinstance(want_fin, tuple) else (want_fin,)
    d_fin = tuple(rng.standard_normal(f.shape) for f in fins)
    want = torch_grads(module, x, hx, d_out, d_fin, lengths)
    layer = layer_like(module, backend)
    out, fin, cache = layer.forward(backend.asarray(x), on(backend, hx), lengths=lengths,
                                    return_cache=True)  # fmt: skip
    d_hx = tuple(backend.asarray(d) for d in d_fin)
    grads = layer.backward(cache, backend.asarray(d_out), d_hx if cell == "lstm" else d_hx[0])
    assert_close(grads.dx, want["x"], backend, "float64")
    dstates = grads.dh0 if cell == "lstm" else (grads.dh0,)
    for got, ref in zip(dstates, want["states"]):
        assert_close(got, ref, backend, "float64")
    assert list(grads.params) == list(layer.params)
    for name, g in grads.params.items():
        assert_close(g, want[name], backend, "float64")


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_between_layers_matches_torch_autograd_of_the_layer(rng, cell):
    # the masks are rnn_xp's: the reference is torch's autograd through the same layer on torch
    cls = rnn_xp.LSTM if cell == "lstm" else rnn_xp.GRU
    layer = cls(D, H, 3, dropout=0.4, bidirectional=True, dtype="float64", seed=2)
    x = rng.standard_normal((T, B, D))
    layer.generator = np.random.default_rng(7)
    out, fin, cache = layer.forward(x, return_cache=True)
    d_out = rng.standard_normal(out.shape)
    grads = layer.backward(cache, d_out)
    tlayer = cls(D, H, 3, dropout=0.4, bidirectional=True, dtype="float64", seed=2, xp="torch")
    for p in tlayer.params.values():
        p.requires_grad_(True)
    tlayer.generator = np.random.default_rng(7)
    xt = torch.tensor(x, requires_grad=True)
    tout = tlayer(xt)[0]
    np.testing.assert_allclose(tout.detach().numpy(), out, rtol=1e-12, atol=1e-14)
    want = torch.autograd.grad((tout * torch.from_numpy(d_out)).sum(), [xt, *tlayer.params.values()])
    np.testing.assert_allclose(grads.dx, want[0].numpy(), rtol=1e-10, atol=1e-12)
    for g, w in zip(grads.params.values(), want[1:]):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", *CELLS])
def test_layers_pickle_and_deepcopy(backend, rng, cell):
    cls = {"rnn": rnn_xp.RNN, "lstm": rnn_xp.LSTM, "gru": rnn_xp.GRU}[cell]
    layer = cls(D, H, 2, bidirectional=True, seed=0, dtype="float64").to(xp=backend.xp,
                                                                       device=backend.device)
    x = backend.asarray(rng.standard_normal((T, B, D)))
    want = to_numpy(layer(x)[0])
    for copied in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert type(copied) is cls and copied.xp is layer.xp and copied.device == layer.device
        got = copied(x)[0]
        assert_close(got, want, backend, "float64", rtol=0, atol=0)
        assert copied.params is not layer.params


def test_bad_states_and_options_name_the_argument(rng):
    lstm = rnn_xp.LSTM(D, H, 2, proj_size=P, dtype="float64")
    gru = rnn_xp.GRU(D, H, 2, dtype="float64")
    x = rng.standard_normal((T, B, D))
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(2, 3, 2\); got shape \(2, 3, 4\)"):
        lstm(x, (np.zeros((2, B, H)), None))
    with pytest.raises(ValueError, match=r"c0 must have shape .* = \(2, 3, 4\); got shape \(2, 3, 2\)"):
        lstm(x, (None, np.zeros((2, B, P))))
    with pytest.raises(TypeError, match=r"hx must be None or a pair \(h0, c0\)"):
        lstm(x, np.zeros((2, B, P)))
    with pytest.raises(TypeError, match="a GRU carries one state"):
        gru(x, (np.zeros((2, B, H)), np.zeros((2, B, H))))
    with pytest.raises(ValueError, match=r"proj_size must be in \[0, hidden_size\) = \[0, 4\)"):
        rnn_xp.LSTM(D, H, proj_size=H)
    with pytest.raises(ValueError, match="activations of an LSTM must be a sequence of 3"):
        rnn_xp.LSTM(D, H, activations=("sigmoid", "tanh"))
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        rnn_xp.GRU(D, H, activations=("sigmoid", "swish"))
    _, _, cache = lstm.forward(x, return_cache=True)
    with pytest.raises(TypeError, match=r"d_hx must be None or a pair \(d_h_n, d_c_n\)"):
        lstm.backward(cache, None, np.zeros((2, B, P)))
    with pytest.raises(ValueError, match=r"d_c_n must have shape"):
        lstm.backward(cache, None, (None, np.zeros((2, B, P))))


@pytest.mark.parametrize("cell", ["rnn", *CELLS])
def test_one_host_read_of_lengths_per_call(cell):
    # a layer checks a call once: lengths reach the host once (one GPU synchronisation),
    # not once per layer and direction, and the backward reads nothing back
    from torch.overrides import TorchFunctionMode

    class HostReads(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.reads = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in ("item", "tolist", "numpy", "__int__", "__float__", "__bool__", "__index__"):
                self.reads.append(name)
            return func(*args, **(kwargs or {}))

    cls = {"rnn": rnn_xp.RNN, "lstm": rnn_xp.LSTM, "gru": rnn_xp.GRU}[cell]
    layer = cls(D, H, 3, bidirectional=True, xp="torch", dtype="float64", seed=0)
    x = torch.randn(T, 6, D, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 0, 2, 1, 4])
    with HostReads() as forward:
        out, _, cache = layer(x, lengths=lengths, return_cache=True)
    with HostReads() as backward:
        layer.backward(cache, torch.ones_like(out))
    assert forward.reads == ["tolist"] and backward.reads == []


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("module_dtype", ["float32", "float64"])
def test_from_torch_and_back(rng, cell, module_dtype):
    torch.manual_seed(3)
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, dropout=0.25,
              dtype=getattr(torch, module_dtype))
    module = (torch.nn.LSTM(D, H, proj_size=P, **kw) if cell == "lstm" else torch.nn.GRU(D, H, **kw)).eval()
    cls = rnn_xp.LSTM if cell == "lstm" else rnn_xp.GRU
    for layer in (cls.from_torch(module), rnn_xp.convert.from_torch(module)):
        assert type(layer) is cls and layer.dtype == np.dtype(module_dtype)  # the module's dtype kept
        assert (layer.batch_first, layer.bidirectional, layer.dropout, layer.training) == (True, True, 0.25, False)
        assert getattr(layer, "proj_size", 0) == getattr(module, "proj_size", 0)
    from_state = rnn_xp.convert.from_torch(module.state_dict())  # the kind read off the shapes
    assert type(from_state) is cls and not from_state.batch_first
    x = rng.standard_normal((B, T, D)).astype(module_dtype)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(layer(x)[0], want, rtol=1e-5 if module_dtype == "float32" else 1e-12)
    back = rnn_xp.convert.to_torch(layer)
    assert type(back) is type(module) and not back.training
    fresh = type(module)(D, H, **{**kw, "dtype": torch.float64},
                         **({"proj_size": P} if cell == "lstm" else {}))  # fmt: skip
    fresh.load_state_dict(layer.state_dict(xp="torch"))  # the names torch's module takes
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(x))[0].numpy(), want, rtol=1e-6)


def test_to_torch_refuses_what_torch_cannot_run():
    for layer in (rnn_xp.LSTM(D, H, peepholes=True), rnn_xp.GRU(D, H, linear_before_reset=False),
                  rnn_xp.LSTM(D, H, clip=2.0)):
        with pytest.raises(ValueError, match=r"torch\.nn\.(LSTM|GRU) has none of rnn_xp's cell options"):
            rnn_xp.convert.to_torch(layer)
    with pytest.raises(TypeError, match=r"rnn_xp\.LSTM\.from_torch \(or rnn_xp\.convert\.from_torch\) reads it"):
        rnn_xp.RNN.from_torch(torch.nn.LSTM(D, H))
    with pytest.raises(ValueError, match="nonlinearity is an option of an RNN; this is an GRU"):
        rnn_xp.convert.from_torch(torch.nn.GRU(D, H), nonlinearity="relu")
