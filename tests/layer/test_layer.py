"""``rnn_xp.RNN`` against the real ``torch.nn.RNN``, on every backend.

The torch module is built in float64 from a seeded torch generator, its
weights are read with ``RNN.from_torch`` and moved to the backend with
``rnn.to``; torch's own outputs (through ``pack_padded_sequence`` /
``pad_packed_sequence`` for variable lengths) are the reference.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import rnn_xp
from rnn_xp import RNN
from rnn_xp._backends import load
from rnn_xp._compat import namespace_of
from support import (
    BACKENDS,
    assert_close,
    half_product,
    make_backend,
    reference_rnn,
    to_numpy,
    torch_packed,
    torch_rnn,
    uncovered,
)

torch = pytest.importorskip("torch")

D, H, T, B = 3, 4, 5, 3
# float32 runs against float64 torch: looser than support's float32 tolerance
LOOSE = {"rtol": 1e-4, "atol": 1e-5}


def tol(dtype):
    return LOOSE if dtype == "float32" else {}


def torch_module(*args, **kwargs):
    return torch_rnn(D, H, *args, **kwargs)


def run_torch(module, x, h0=None, lengths=None):
    """torch's ``(output, h_n)`` as float64 NumPy, packing when ``lengths`` is given."""
    xt = torch.from_numpy(x)
    h0t = None if h0 is None else torch.from_numpy(h0)
    with torch.no_grad():
        out, h_n = torch_packed(module, xt, h0t, lengths)
    return out.numpy(), h_n.numpy()


def layer_on(backend, module, dtype="float64"):
    return RNN.from_torch(module).to(xp=backend.xp, device=backend.device, dtype=dtype)


def inputs(rng, module, batched=True):
    dirs = 2 if module.bidirectional else 1
    batch = (B,) if batched else ()
    x = rng.standard_normal((T, *batch, D))
    if batched and module.batch_first:
        x = np.ascontiguousarray(np.moveaxis(x, 0, 1))
    h0 = rng.standard_normal((module.num_layers * dirs, *batch, H)) * 0.5
    return x, h0


# The backends that compile or build a graph for each configuration (JAX, Dask, and the GPU ones)
# run a covering array of the options, NumPy, array-api-strict and torch on the CPU the whole
# product (a fraction of a second for all of it).
SLOW = ("jax", "dask", "cupy", "torch_cuda")
LEVELS = [[1, 3], ["tanh", "relu"], [True, False], [False, True], [False, True], [False, True]]
GRID = list(itertools.product(*LEVELS))
# Every three of the six options meet in all eight of their combinations: 12 rows (the first
# six columns of the 12-run Plackett-Burman design) instead of 64.
PB12 = ["110111", "011011", "101101", "010110", "001011", "000101",
        "100010", "110001", "111000", "011100", "101110", "000000"]
COVERING = [tuple(levels[int(bit)] for levels, bit in zip(LEVELS, row)) for row in PB12]
GRID_ON_EACH = [(name, *row) for name in BACKENDS for row in (COVERING if name in SLOW else GRID)]


def test_the_covering_array_meets_every_three_options():
    assert len(COVERING) == 12 and not uncovered(COVERING, LEVELS, strength=3)


@pytest.mark.parametrize("backend_name,num_layers,nonlinearity,bias,batch_first,bidirectional,with_h0",
                         GRID_ON_EACH)
def test_matches_torch(backend_name, rng, num_layers, nonlinearity, bias, batch_first, bidirectional,
                       with_h0):
    backend = make_backend(backend_name)
    module = torch_module(num_layers, nonlinearity, bias, batch_first, bidirectional)
    x, h0 = inputs(rng, module)
    h0 = h0 if with_h0 else None
    expected_out, expected_hn = run_torch(module, x, h0)
    rnn = layer_on(backend, module)
    out, h_n = rnn(backend.asarray(x), None if h0 is None else backend.asarray(h0))
    assert_close(out, expected_out, backend, "float64")
    assert_close(h_n, expected_hn, backend, "float64")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_torch_in_each_dtype(backend, dtype, rng, bidirectional):
    module = torch_module(3, "tanh", True, True, bidirectional)
    x, h0 = inputs(rng, module)
    expected_out, expected_hn = run_torch(module, x, h0)
    rnn = layer_on(backend, module, dtype)
    out, h_n = rnn(backend.asarray(x, dtype), backend.asarray(h0, dtype))
    assert_close(out, expected_out, backend, dtype, **tol(dtype))
    assert_close(h_n, expected_hn, backend, dtype, **tol(dtype))


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_unbatched_matches_torch(backend, rng, num_layers, bidirectional, with_h0):
    module = torch_module(num_layers, "tanh", True, True, bidirectional)  # batch_first ignored
    x, h0 = inputs(rng, module, batched=False)
    h0 = h0 if with_h0 else None
    expected_out, expected_hn = run_torch(module, x, h0)
    out, h_n = layer_on(backend, module)(backend.asarray(x),
                                         None if h0 is None else backend.asarray(h0))
    assert_close(out, expected_out, backend, "float64")
    assert_close(h_n, expected_hn, backend, "float64")


LENGTHS = [3, 1, 5, 2]  # unsorted, with a 1 and a full-length sequence (T = 5)


# with_h0, batch_first, bidirectional, num_layers: the slow backends run half the product, in which
# every three of the four meet in all their combinations
LENGTHS_LEVELS = [[False, True], [False, True], [False, True], [1, 3]]
LENGTHS_GRID = [(name, *row) for name in BACKENDS
                for row in (half_product if name in SLOW else itertools.product)(*LENGTHS_LEVELS)]


@pytest.mark.parametrize("backend_name,with_h0,batch_first,bidirectional,num_layers", LENGTHS_GRID)
def test_lengths_match_pack_padded(backend_name, rng, num_layers, bidirectional, batch_first, with_h0):
    backend = make_backend(backend_name)
    module = torch_module(num_layers, "tanh", True, batch_first, bidirectional)
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((T, len(LENGTHS), D))
    x = np.ascontiguousarray(np.moveaxis(x, 0, 1)) if batch_first else x
    h0 = rng.standard_normal((num_layers * dirs, len(LENGTHS), H)) if with_h0 else None
    expected_out, expected_hn = run_torch(module, x, h0, LENGTHS)
    rnn = layer_on(backend, module)
    out, h_n = rnn(backend.asarray(x), None if h0 is None else backend.asarray(h0),
                   lengths=backend.asarray(np.array(LENGTHS)))
    assert_close(out, expected_out, backend, "float64")
    assert_close(h_n, expected_hn, backend, "float64")
    # a list of ints works too
    out_list, _ = rnn(backend.asarray(x), None if h0 is None else backend.asarray(h0),
                      lengths=LENGTHS)
    assert_close(out_list, expected_out, backend, "float64")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_zero_length_sequences(backend, rng, bidirectional):
    """torch refuses length 0: the others must match torch, the empty one keeps h0."""
    module = torch_module(2, "relu", True, False, bidirectional)
    dirs = 2 if bidirectional else 1
    lengths = np.array([3, 0, 5, 1])
    x = rng.standard_normal((T, 4, D))
    h0 = rng.standard_normal((2 * dirs, 4, H))
    keep = lengths > 0
    sub_out, sub_hn = run_torch(module, x[:, keep], h0[:, keep], lengths[keep])
    expected_out = np.zeros((T, 4, dirs * H))
    expected_out[:, keep] = sub_out
    expected_hn = h0.copy()
    expected_hn[:, keep] = sub_hn
    out, h_n = layer_on(backend, module)(backend.asarray(x), backend.asarray(h0),
                                         lengths=backend.asarray(lengths))
    assert_close(out, expected_out, backend, "float64")
    assert_close(h_n, expected_hn, backend, "float64")


@pytest.mark.parametrize(
    "lengths,match",
    [([3, -1, 2], r"\[0, T\] = \[0, 5\]"), ([3, 6, 2], r"\[0, T\] = \[0, 5\]"),
     ([3, 2], r"\(3,\)"), ([[1, 2, 3]], r"\(3,\)")],
)
def test_bad_lengths_are_value_errors(backend, rng, lengths, match):
    rnn = RNN(D, H, seed=0, xp=backend.xp, device=backend.device)
    x = backend.asarray(rng.standard_normal((T, 3, D)), "float32")
    with pytest.raises(ValueError, match=match):
        output, h_n = rnn(x, lengths=backend.asarray(np.array(lengths)))
        if backend.name == "dask":  # Dask reads the values of lengths only when computing
            output.compute()


def test_float_lengths_are_type_errors(backend, rng):
    rnn = RNN(D, H, seed=0, xp=backend.xp, device=backend.device)
    x = backend.asarray(rng.standard_normal((T, 3, D)), "float32")
    with pytest.raises(TypeError, match="lengths"):
        rnn(x, lengths=backend.asarray(np.array([1.0, 2.0, 3.0])))


@pytest.mark.parametrize("num_layers", [1, 3])
def test_streaming_chunks_equal_whole(backend, dtype, rng, num_layers):
    rnn = RNN(D, H, num_layers, seed=7, xp=backend.xp, device=backend.device, dtype=dtype)
    x = backend.asarray(rng.standard_normal((11, 2, D)), dtype)
    whole, whole_hn = rnn(x)
    h, parts = None, []
    for start, stop in [(0, 4), (4, 5), (5, 11)]:
        part, h = rnn(x[start:stop, ...], h)
        parts.append(part)
    expected = to_numpy(whole)
    assert_close(backend.xp.concat(parts, axis=0), expected, backend, dtype)
    assert_close(h, to_numpy(whole_hn), backend, dtype)


def reference_layer(rnn, x, h0, lengths=None):
    """A stacked, bidirectional RNN from ``support.reference_rnn`` calls, in float64 NumPy."""
    p = {k: to_numpy(v).astype(np.float64) for k, v in rnn.state_dict().items()}
    dirs, finals, layer_in = rnn.num_directions, [], x
    for k in range(rnn.num_layers):
        outs = []
        for d, s in enumerate(["", "_reverse"][:dirs]):
            b = p[f"bias_ih_l{k}{s}"] + p[f"bias_hh_l{k}{s}"] if rnn.bias else None
            out, last = reference_rnn(layer_in, h0[k * dirs + d], p[f"weight_ih_l{k}{s}"],
                                      p[f"weight_hh_l{k}{s}"], b, nonlinearity=rnn.nonlinearity,
                                      lengths=lengths, reverse=d == 1, leak=rnn.leak)
            outs.append(out)
            finals.append(last)
        layer_in = np.concatenate(outs, axis=-1)
    return layer_in, np.stack(finals)


@pytest.mark.parametrize("leak", [0.3, 1.0])
def test_leak_matches_reference(backend, dtype, rng, leak):
    rnn = RNN(D, H, 2, bidirectional=True, leak=leak, seed=3, xp=backend.xp,
              device=backend.device, dtype=dtype)
    x = rng.standard_normal((T, 4, D))
    h0 = rng.standard_normal((4, 4, H))
    lengths = np.array([5, 0, 2, 4])
    expected_out, expected_hn = reference_layer(rnn, x, h0, lengths)
    out, h_n = rnn(backend.asarray(x, dtype), backend.asarray(h0, dtype),
                   lengths=backend.asarray(lengths))
    assert_close(out, expected_out, backend, dtype)
    assert_close(h_n, expected_hn, backend, dtype)


@pytest.mark.parametrize("leak", [0.0, 1.5, -0.2])
def test_bad_leak(leak):
    with pytest.raises(ValueError, match="leak"):
        RNN(D, H, leak=leak)


def test_dropout_is_identity_in_eval_mode_and_warns_like_torch():
    with pytest.warns(UserWarning, match="dropout"):
        RNN(D, H, 1, dropout=0.5)
    with pytest.warns(UserWarning, match="dropout"):
        torch.nn.RNN(D, H, 1, dropout=0.5)  # torch warns in the same case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with_dropout = RNN(D, H, 2, dropout=0.5, seed=1, dtype="float64")
    plain = RNN(D, H, 2, seed=1, dtype="float64")
    x = np.random.default_rng(0).standard_normal((T, B, D))
    trained, _ = with_dropout(x)  # training mode, as a new torch module: dropout applies
    assert not np.array_equal(trained, plain(x)[0])
    for a, b in zip(with_dropout.eval()(x), plain(x)):
        np.testing.assert_array_equal(a, b)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout"):
            RNN(D, H, 2, dropout=bad)


def test_seed_gives_same_weights_on_every_backend(backend, dtype):
    ref = RNN(D, H, 2, bidirectional=True, seed=11, dtype=dtype)
    rnn = RNN(D, H, 2, bidirectional=True, seed=11, xp=backend.xp, device=backend.device,
              dtype=dtype)
    assert list(rnn.params) == list(ref.params)
    bound = 1 / np.sqrt(H)
    for name, p in rnn.params.items():
        assert_close(p, to_numpy(ref.params[name]), backend, dtype, rtol=0, atol=0)
        assert np.all(np.abs(to_numpy(p)) <= bound)
    other = RNN(D, H, 2, bidirectional=True, seed=12, dtype=dtype)
    assert not np.array_equal(to_numpy(other.weight_hh_l1), to_numpy(ref.weight_hh_l1))


def test_parameter_names_and_shapes_match_torch():
    for L, bias, bidirectional in itertools.product([1, 3], [True, False], [False, True]):
        module = torch.nn.RNN(D, H, L, bias=bias, bidirectional=bidirectional)
        rnn = RNN(D, H, L, bias=bias, bidirectional=bidirectional)
        assert list(rnn.state_dict()) == list(module.state_dict())
        for name, t in module.state_dict().items():
            assert tuple(rnn.state_dict()[name].shape) == tuple(t.shape)


def test_default_dtype_is_float32_numpy():
    rnn = RNN(D, H)
    assert rnn.dtype == np.float32
    out, h_n = rnn(np.zeros((T, B, D), dtype=np.float32))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and h_n.dtype == np.float32


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "array_api_strict"])
def test_to_by_name_and_back_is_exact(name, rng):
    rnn = RNN(D, H, 2, bidirectional=True, seed=5, dtype="float64")
    before = {k: v.copy() for k, v in rnn.state_dict().items()}
    x = rng.standard_normal((T, B, D))
    expected, _ = rnn(x)
    rnn.to(name)
    assert rnn.xp is load(name)[0]
    assert all(namespace_of(v) is rnn.xp for v in rnn.params.values())
    assert rnn.weight_ih_l0.dtype == getattr(rnn.xp, "float64")
    out, _ = rnn(rnn.xp.asarray(x, device=rnn.device))
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-12, atol=1e-14)
    rnn.to(np, dtype="float32").to(dtype="float64")
    for k, v in rnn.state_dict().items():
        assert isinstance(v, np.ndarray) and v.dtype == np.float64
        np.testing.assert_array_equal(v, before[k].astype(np.float32).astype(np.float64))


def test_to_module_and_device(backend):
    rnn = RNN(D, H, seed=0).to(xp=backend.xp, device=backend.device, dtype="float64")
    assert rnn.xp is backend.xp and rnn.dtype == backend.dtype("float64")
    for p in rnn.params.values():
        assert_close(p, to_numpy(p), backend, "float64")


def test_state_dict_is_a_copy_of_the_mapping():
    rnn = RNN(D, H, seed=0)
    state = rnn.state_dict()
    state.pop("weight_ih_l0")
    assert "weight_ih_l0" in rnn.params


@pytest.mark.parametrize(
    "make_x,match",
    [(lambda: np.zeros((T, B, D + 1)), r"D = 3"),
     (lambda: np.zeros((B, D)), None),
     (lambda: np.zeros((1, T, B, D)), r"3-D"),
     (lambda: np.zeros(D), r"3-D")],
)
def test_bad_x_shape(make_x, match):
    rnn = RNN(D, H, seed=0, dtype="float64")
    x = make_x()
    if match is None:  # (B, D) is read as unbatched (T=B, D): not an error
        out, h_n = rnn(x)
        assert out.shape == (B, H) and h_n.shape == (1, H)
        return
    with pytest.raises(ValueError, match=match):
        rnn(x)


def test_bad_h0_shape():
    rnn = RNN(D, H, 2, bidirectional=True, seed=0, dtype="float64")
    need = r"\(num_layers \* num_directions, B, H\) = \(4, 3, 4\); got shape \(2, 3, 4\)"
    with pytest.raises(ValueError, match="h0 must have shape " + need):
        rnn(np.zeros((T, B, D)), np.zeros((2, B, H)))


def test_x_from_another_library_is_a_type_error():
    rnn = RNN(D, H, seed=0)
    with pytest.raises(TypeError, match=r"rnn\.to"):
        rnn(torch.zeros((T, B, D)))
    with pytest.raises(TypeError, match="x must be an array"):
        rnn([[0.0] * D] * T)


@pytest.mark.parametrize(
    "kwargs,error",
    [({"nonlinearity": "gelu"}, ValueError), ({"hidden_size": 0}, ValueError),
     ({"num_layers": 0}, ValueError), ({"input_size": 2.5}, TypeError),
     ({"bias": 1}, TypeError), ({"dtype": "int32"}, TypeError), ({"xp": "nope"}, ValueError)],
)
def test_bad_constructor_arguments(kwargs, error):
    args = {"input_size": D, "hidden_size": H, **kwargs}
    with pytest.raises(error):
        RNN(**args)


def test_exports():
    assert rnn_xp.RNN is RNN
    assert "RNN" in rnn_xp.__all__ and "convert" in rnn_xp.__all__


def test_unbatched_lengths_is_a_scalar(backend, rng):
    """Unbatched input takes a 0-d length: the first L steps, then zeros."""
    module = torch_module(2, "tanh", True, False, True)
    x, h0 = inputs(rng, module, batched=False)
    expected_out, expected_hn = run_torch(module, x[:3], h0)
    out, h_n = layer_on(backend, module)(backend.asarray(x), backend.asarray(h0),
                                         lengths=backend.asarray(np.asarray(3)))
    assert_close(out, np.concatenate([expected_out, np.zeros((T - 3, 2 * H))]), backend, "float64")
    assert_close(h_n, expected_hn, backend, "float64")
