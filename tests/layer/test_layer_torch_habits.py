"""The habits torch users bring to ``rnn_xp.RNN``: train()/eval() and dropout,
``.to(...)`` as torch calls it, ``parameters()``, state dicts for torch, and
the messages and dtype rules they run into.

Dropout's reference is torch autograd: the module's layers run one at a time
(one single-layer ``torch.nn.RNN`` each, with the module's weights), and the
masks that rnn_xp drew (read from its cache) multiply each layer's input, so
the forward and every gradient can be compared exactly in float64.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnn_xp import RNN, convert
from rnn_xp._backends import BackendUnavailable
from rnn_xp._compat import namespace_of
from support import assert_close, optional_import, reference_rnn, to_numpy, torch_packed, torch_rnn

torch = pytest.importorskip("torch")
jax = optional_import("jax")
cupy = optional_import("cupy")

D, H, T, B = 3, 4, 6, 4
LENGTHS = [6, 2, 4, 1]
TIGHT = {"rtol": 1e-9, "atol": 1e-12}


def _cuda_for_cupy():
    try:
        return cupy is not None and cupy.cuda.is_available()
    except Exception:
        return False


# --- dropout: torch autograd with the same masks ---------------------------------


def torch_layers_with_masks(module, x, h0, lengths, masks, d_out, d_hn):
    """``(output, h_n, dx, dh0, {name: grad})`` of ``module`` run layer by layer.

    ``masks[k]`` (NumPy, time-major ``(T, B, dirs * H)``, or ``None``)
    multiplies layer ``k``'s input; the loss is
    ``sum(output * d_out) + sum(h_n * d_hn)``.
    """
    dirs = 2 if module.bidirectional else 1
    L, bf = module.num_layers, module.batch_first
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    params = dict(module.named_parameters())
    layer_in, finals, subs = xt, [], []
    for k in range(L):
        if masks[k] is not None:
            m = torch.from_numpy(np.array(masks[k]))  # a writable copy
            layer_in = layer_in * (m.transpose(0, 1) if bf else m)
        sub = torch.nn.RNN(layer_in.shape[-1], H, 1, nonlinearity=module.nonlinearity,
                           bias=module.bias, batch_first=bf, bidirectional=module.bidirectional,
                           dtype=torch.float64)
        with torch.no_grad():
            for name, p in sub.named_parameters():  # weight_ih_l0[_reverse] <- weight_ih_l{k}[_reverse]
                p.copy_(params[name.replace("_l0", f"_l{k}")])
        subs.append(sub)
        h0_k = h0t[k * dirs:(k + 1) * dirs]
        out, h_n = torch_packed(sub, layer_in, h0_k, lengths)
        finals.append(h_n)
        layer_in = out
    h_n = torch.cat(finals)
    loss = (layer_in * torch.from_numpy(d_out)).sum() + (h_n * torch.from_numpy(d_hn)).sum()
    loss.backward()
    grads = {}
    for k, sub in enumerate(subs):
        for name, p in sub.named_parameters():
            grads[name.replace("_l0", f"_l{k}")] = p.grad.numpy()
    grads = {name: grads[name] for name in params}  # torch's order
    return (layer_in.detach().numpy(), h_n.detach().numpy(), xt.grad.numpy(), h0t.grad.numpy(),
            grads)


def dropout_case(rng, module):
    dirs = 2 if module.bidirectional else 1
    x = rng.standard_normal((B, T, D) if module.batch_first else (T, B, D))
    h0 = 0.5 * rng.standard_normal((module.num_layers * dirs, B, H))
    d_out = rng.standard_normal((*x.shape[:-1], dirs * H))
    d_hn = rng.standard_normal((module.num_layers * dirs, B, H))
    return x, h0, d_out, d_hn


def check_dropout_against_torch(backend, rng, *, num_layers, bidirectional, batch_first,
                                with_lengths, p=0.4, nonlinearity="tanh"):  # fmt: skip
    module = torch_rnn(D, H, num_layers, nonlinearity, True, batch_first, bidirectional)
    x, h0, d_out, d_hn = dropout_case(rng, module)
    lengths = LENGTHS if with_lengths else None
    rnn = RNN.from_torch(module).to(xp=backend.xp, device=backend.device, dtype="float64")
    rnn.dropout = p
    rnn.generator = np.random.default_rng(7)
    assert rnn.training
    output, h_n, cache = rnn(backend.asarray(x), backend.asarray(h0), lengths=lengths,
                             return_cache=True)
    grads = rnn.backward(cache, backend.asarray(d_out), backend.asarray(d_hn))

    assert cache.masks[0] is None and all(m is not None for m in cache.masks[1:])
    masks = [None if m is None else to_numpy(m) for m in cache.masks]
    t_out, t_hn, dx, dh0, dparams = torch_layers_with_masks(
        module, x, h0, lengths, masks, d_out, d_hn)
    assert_close(output, t_out, backend, "float64", **TIGHT)
    assert_close(h_n, t_hn, backend, "float64", **TIGHT)
    assert_close(grads.dx, dx, backend, "float64", **TIGHT)
    assert_close(grads.dh0, dh0, backend, "float64", **TIGHT)
    assert list(grads.params) == list(dparams)
    for name, expected in dparams.items():
        assert_close(grads.params[name], expected, backend, "float64", **TIGHT)


def test_layer_by_layer_reference_is_the_module():
    """Without masks the layer-by-layer torch reference is ``torch.nn.RNN`` itself."""
    rng = np.random.default_rng(0)
    module = torch_rnn(D, H, 3, "tanh", True, False, True)
    x, h0, d_out, d_hn = dropout_case(rng, module)
    out, h_n, *_ = torch_layers_with_masks(module, x, h0, LENGTHS, [None] * 3, d_out, d_hn)
    with torch.no_grad():
        ref, ref_hn = torch_packed(module, torch.from_numpy(x), torch.from_numpy(h0), LENGTHS)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, ref_hn.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bidirectional,batch_first,with_lengths",
                         list(itertools.product([False, True], repeat=3)))
def test_dropout_gradients_match_torch_autograd_on_numpy(rng, bidirectional, batch_first,
                                                          with_lengths):
    from support import make_backend

    check_dropout_against_torch(make_backend("numpy"), rng, num_layers=3,
                                bidirectional=bidirectional, batch_first=batch_first,
                                with_lengths=with_lengths)


def test_dropout_gradients_match_torch_autograd_on_every_backend(backend, rng):
    check_dropout_against_torch(backend, rng, num_layers=2, bidirectional=True,
                                batch_first=False, with_lengths=True, nonlinearity="relu")


def test_dropout_one_drops_everything(rng):
    from support import make_backend

    check_dropout_against_torch(make_backend("numpy"), rng, num_layers=2, bidirectional=False,
                                batch_first=False, with_lengths=False, p=1.0)


def test_mask_statistics_match_torch_dropout():
    p = 0.3
    rnn = RNN(D, 64, num_layers=3, dropout=p, seed=0)  # float32, training mode
    x = np.random.default_rng(1).standard_normal((50, 8, D)).astype(np.float32)
    _, _, cache = rnn(x, return_cache=True)
    scale = torch.nn.functional.dropout(torch.ones(10_000), p)  # torch's kept value, float32
    kept_value = float(scale[scale != 0][0])
    n = 50 * 8 * 64
    for k, mask in enumerate(cache.masks[1:], start=1):
        assert mask.shape == (50, 8, 64) and mask.dtype == np.float32
        values = np.unique(mask)
        assert values[0] == 0 and values.size == 2
        np.testing.assert_allclose(values[1], kept_value, rtol=1e-7)
        dropped = np.mean(mask == 0)
        assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n), (k, dropped)
        assert abs(mask.mean() - 1) < 0.03  # inverted dropout keeps the expectation
        # the cache's input of layer k is the mask times layer k - 1's states
        np.testing.assert_array_equal(cache.inputs[k], cache.h_seqs[k - 1] * mask)
    assert not np.array_equal(cache.masks[1], cache.masks[2])


def test_masks_are_new_each_call_and_reproducible_from_the_seed():
    x = np.ones((T, B, D), dtype=np.float32)
    first = RNN(D, H, 2, dropout=0.5, seed=3)
    second = RNN(D, H, 2, dropout=0.5, seed=3)
    a1, a2 = first(x), first(x)
    b1 = second(x)
    np.testing.assert_array_equal(a1[0], b1[0])  # same seed: same weights and masks
    assert not np.array_equal(a1[0], a2[0])  # a new mask every call
    first.generator = np.random.default_rng(11)
    second.generator = np.random.default_rng(11)
    np.testing.assert_array_equal(first(x)[0], second(x)[0])


def test_same_seed_same_masks_on_every_backend(backend):
    x = np.random.default_rng(2).standard_normal((T, B, D))
    ref = RNN(D, H, 3, dropout=0.5, seed=4, dtype="float64")
    rnn = RNN(D, H, 3, dropout=0.5, seed=4, dtype="float64", xp=backend.xp, device=backend.device)
    _, _, ref_cache = ref(x, return_cache=True)
    out, _, cache = rnn(backend.asarray(x), return_cache=True)
    for mask, expected in zip(cache.masks[1:], ref_cache.masks[1:]):
        assert_close(mask, expected, backend, "float64", rtol=0, atol=0)
    assert_close(out, ref_cache.h_seqs[-1], backend, "float64")


def test_eval_mode_has_no_dropout_and_matches_torch_eval():
    module = torch_rnn(D, H, 3)
    module.dropout = 0.5
    module.eval()
    rnn = RNN.from_torch(module)
    assert rnn.dropout == 0.5 and rnn.training is False  # the module's mode comes along
    x = np.random.default_rng(3).standard_normal((T, B, D))
    out, h_n, cache = rnn(x, return_cache=True)
    assert cache.masks == [None, None, None]
    with torch.no_grad():
        ref, ref_hn = module(torch.from_numpy(x))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, ref_hn.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(rnn(x)[0], out)
    assert RNN.from_torch(module.train()).training is True
    assert convert.to_torch(rnn).training is False and convert.to_torch(rnn.train()).training


def test_train_and_eval_return_the_layer_and_check_the_mode():
    rnn = RNN(D, H, 2, dropout=0.2, seed=0)
    assert rnn.training is True
    assert rnn.eval() is rnn and rnn.training is False
    assert rnn.train() is rnn and rnn.training is True
    assert rnn.train(False).training is False
    with pytest.raises(TypeError, match="mode must be True or False"):
        rnn.train("no")


# --- .to as torch users call it ---------------------------------------------------


def _names(rnn):
    return namespace_of(rnn.weight_ih_l0).__name__.replace("array_api_compat.", "")


def test_to_cpu_keeps_the_library_and_values():
    rnn = RNN(D, H, seed=0, dtype="float64")
    before = rnn.weight_hh_l0.copy()
    assert rnn.to("cpu") is rnn and _names(rnn) == "numpy" and rnn.device == "cpu"
    np.testing.assert_array_equal(rnn.weight_hh_l0, before)
    rnn.to("torch").to("cpu")
    assert _names(rnn) == "torch" and rnn.device == torch.device("cpu")
    np.testing.assert_array_equal(to_numpy(rnn.weight_hh_l0), before)


def test_to_a_torch_device_moves_a_numpy_layer_to_torch():
    rnn = RNN(D, H, seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((T, B, D))
    expected, _ = rnn(x)
    rnn.to(torch.device("cpu"))
    assert _names(rnn) == "torch" and rnn.device == torch.device("cpu")
    out, _ = rnn(torch.from_numpy(x))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make_dtype,name", [
    (lambda: torch.float64, "float64"), (lambda: torch.float32, "float32"),
    (lambda: np.float64, "float64"), (lambda: np.dtype("float32"), "float32"),
    (lambda: "float64", "float64"),
    pytest.param(lambda: jax.numpy.float32, "float32",
                 marks=pytest.mark.skipif(jax is None, reason="jax not installed")),
    pytest.param(lambda: jax.numpy.float64, "float64",
                 marks=pytest.mark.skipif(jax is None, reason="jax not installed")),
])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_to_a_dtype_of_any_library_changes_only_the_dtype(make_dtype, name, library):
    rnn = RNN(D, H, seed=0, dtype="float32" if name == "float64" else "float64", xp=library)
    rnn.to(make_dtype())
    assert _names(rnn) == library
    assert all(str(p.dtype).endswith(name) for p in rnn.parameters())
    assert str(rnn.dtype).endswith(name)


def test_to_device_and_dtype_together_and_keywords():
    rnn = RNN(D, H, seed=0).to("cpu", torch.float64)
    assert rnn.dtype == np.float64 and rnn.device == "cpu"
    rnn.to("torch", "cpu", "float32")
    assert _names(rnn) == "torch" and rnn.dtype == torch.float32
    rnn.to(xp="numpy", device="cpu", dtype=np.float64)
    assert _names(rnn) == "numpy" and rnn.dtype == np.float64


@pytest.mark.skipif(jax is None, reason="jax not installed")
def test_to_cpu_on_jax_is_a_jax_device():
    rnn = RNN(D, H, seed=0, dtype="float64").to("jax", "cpu")
    assert _names(rnn) == "jax.numpy" and rnn.device == jax.devices("cpu")[0]
    rnn.to("numpy").to(jax.devices("cpu")[0])  # a JAX device object moves the layer to JAX
    assert _names(rnn) == "jax.numpy"


def test_to_array_api_strict_cpu():
    strict = pytest.importorskip("array_api_strict")
    rnn = RNN(D, H, seed=0).to("array_api_strict").to("cpu")
    assert _names(rnn) == "array_api_strict" and rnn.device == strict.Device("CPU_DEVICE")


@pytest.mark.parametrize("args,error,match", [
    (("numpy", "torch"), TypeError, r"rnn.to got two xp arguments: 'numpy' and 'torch'"),
    (("float32", np.float64), TypeError, r"two dtype arguments"),
    (("tpu",), ValueError, r"'tpu' is neither a library .* a device .* nor a dtype"),
    (("cuda:x",), ValueError, r"device must be 'cpu', 'cuda', 'cuda:N' or 'gpu'; got 'cuda:x'"),
    (("mps",), ValueError, r"'mps' is a torch device; numpy has none"),
    ((3,), TypeError, r"rnn.to takes a library, a device or a dtype; got int 3"),
    (("int32",), ValueError, r"neither a library"),
])
def test_to_bad_arguments(args, error, match):
    rnn = RNN(D, H, seed=0)
    with pytest.raises(error, match=match):
        rnn.to(*args)
    assert _names(rnn) == "numpy" and rnn.dtype == np.float32  # unchanged


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_to_cuda_without_a_device_says_so():
    with pytest.raises(BackendUnavailable, match=r"torch finds no CUDA device for device='cuda'"):
        RNN(D, H, xp="torch").to("cuda")
    if not _cuda_for_cupy():
        with pytest.raises(BackendUnavailable, match=r"moves a numpy layer to CuPy"):
            RNN(D, H).to("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device for torch")
def test_to_cuda_on_torch():
    rnn = RNN(D, H, seed=0, dtype="float64", xp="torch")
    x = np.random.default_rng(0).standard_normal((T, B, D))
    expected, _ = rnn(torch.from_numpy(x))
    rnn.to("cuda")
    assert rnn.device.type == "cuda"
    out, _ = rnn(torch.from_numpy(x).to("cuda"))
    np.testing.assert_allclose(out.cpu().numpy(), expected.numpy(), rtol=1e-12, atol=1e-14)
    assert rnn.to("cpu").device == torch.device("cpu")


@pytest.mark.skipif(not _cuda_for_cupy(), reason="no CUDA device for CuPy")
def test_to_cuda_moves_a_numpy_layer_to_cupy_and_cpu_back():
    rnn = RNN(D, H, seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((T, B, D))
    expected, _ = rnn(x)
    rnn.to("cuda")
    assert _names(rnn) == "cupy"
    out, _ = rnn(cupy.asarray(x))
    np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=1e-12, atol=1e-14)
    assert _names(rnn.to("cpu")) == "numpy"


# --- parameters and state dicts -----------------------------------------------------


@pytest.mark.parametrize("num_layers,bias,bidirectional",
                         list(itertools.product([1, 2], [True, False], [False, True])))
def test_parameters_and_named_parameters_as_torch(num_layers, bias, bidirectional):
    module = torch.nn.RNN(D, H, num_layers, bias=bias, bidirectional=bidirectional)
    rnn = RNN(D, H, num_layers, bias=bias, bidirectional=bidirectional, seed=0)
    names = [name for name, _ in module.named_parameters()]
    assert [name for name, _ in rnn.named_parameters()] == names
    assert [n for n, _ in rnn.named_parameters("rnn")] == [f"rnn.{n}" for n in names]
    assert [tuple(p.shape) for p in rnn.parameters()] == [tuple(p.shape) for p in module.parameters()]
    assert all(p is rnn.params[n] for (n, _), p in zip(rnn.named_parameters(), rnn.parameters()))
    with pytest.raises(TypeError, match="prefix must be a str"):
        rnn.named_parameters(1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_dict_for_torch_loads_into_a_module(dtype):
    rnn = RNN(D, H, 2, bidirectional=True, seed=0, dtype=dtype)
    module = torch.nn.RNN(D, H, 2, bidirectional=True, dtype=getattr(torch, dtype))
    state = rnn.state_dict(xp="torch")
    assert all(isinstance(t, torch.Tensor) and t.dtype == getattr(torch, dtype)
               for t in state.values())
    module.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((T, B, D)).astype(dtype)
    with torch.no_grad():
        ref, _ = module(torch.from_numpy(x))
    out, _ = rnn.eval()(x)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5 if dtype == "float32" else 1e-12,
                               atol=1e-6 if dtype == "float32" else 1e-14)
    assert rnn.state_dict()["weight_ih_l0"] is rnn.weight_ih_l0  # default: the layer's own arrays
    # torch refuses NumPy arrays in load_state_dict: the reason state_dict(xp="torch") exists
    with pytest.raises(RuntimeError, match="expected torch.Tensor"):
        module.load_state_dict(rnn.state_dict())


# --- messages and dtype rules -----------------------------------------------------------


def test_numpy_x_with_torch_h0_says_to_convert_h0():
    rnn = RNN(D, H, 2, seed=0, dtype="float64")
    x = np.zeros((T, B, D))
    h0 = torch.zeros((2, B, H), dtype=torch.float64)
    with pytest.raises(TypeError, match=r"h0 is from torch but x and the layer's parameters are "
                                        r"in numpy; convert h0 to numpy first \(numpy.asarray\(h0\)\)"):
        rnn(x, h0)
    out, _ = rnn(x, np.asarray(h0))  # as the message says
    assert out.shape == (T, B, H)


def test_float64_input_to_a_float32_layer_promotes_where_torch_refuses():
    rnn = RNN(D, H, seed=0)  # float32
    x = np.random.default_rng(0).standard_normal((T, B, D))  # float64
    out, h_n = rnn(x)
    assert out.dtype == np.float64 and h_n.dtype == np.float64
    p = rnn.state_dict()  # float32; the layer folds its two biases in its own dtype
    expected, _ = reference_rnn(x, None, p["weight_ih_l0"].astype(np.float64),
                                p["weight_hh_l0"].astype(np.float64),
                                (p["bias_ih_l0"] + p["bias_hh_l0"]).astype(np.float64))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    module = convert.to_torch(rnn)
    with pytest.raises((ValueError, RuntimeError), match="dtype|type"):
        module(torch.from_numpy(x))
