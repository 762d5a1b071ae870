"""Shared test machinery: backends, a float64 reference, and one ``assert_close``.

Every test that computes takes the ``backend`` fixture (see ``conftest.py``),
builds its inputs in NumPy float64 from a seeded generator, moves them with
``backend.asarray``, and compares the result with ``reference_rnn`` through
``assert_close``, which checks namespace, shape, dtype and device before values.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from rnn_xp._backends import to_host
from rnn_xp._compat import device as device_of
from rnn_xp._compat import namespace_of

DTYPES = ("float32", "float64")
RTOL = {"float32": 2e-4, "float64": 1e-10}
ATOL = {"float32": 2e-5, "float64": 1e-12}


@dataclass
class Backend:
    """One array library on one device, as the tests see it."""

    name: str
    xp: object  # the array-API namespace (array_api_compat's wrapper where there is one)
    device: object = None
    readonly: bool = False
    extra: dict = field(default_factory=dict)

    def asarray(self, a, dtype=None):
        """A NumPy array (or scalar) as an array of this backend, in ``dtype`` (a name)."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype)
        if self.name.startswith("dask"):
            import dask.array as da

            return da.from_array(a, chunks=self.extra.get("chunks", "auto"))
        if self.readonly:
            a = a.copy()
            a.flags.writeable = False
            return a
        return self.xp.asarray(a, device=self.device)

    def dtype(self, name):
        if self.name.startswith("dask") and not hasattr(self.xp, name):
            return np.dtype(name)  # Dask's namespace lists no float16; its arrays use NumPy dtypes
        return getattr(self.xp, name)

    def __repr__(self):
        return self.name


to_numpy = to_host  # any backend's array as NumPy (computing Dask, copying off the GPU)


def assert_close(actual, expected, backend, dtype, *, rtol=None, atol=None):
    """Check namespace, shape, dtype and device of ``actual``, then its values."""
    assert namespace_of(actual) is backend.xp, f"namespace {namespace_of(actual)} != {backend.xp}"
    assert tuple(actual.shape) == tuple(expected.shape), f"shape {actual.shape} != {expected.shape}"
    assert actual.dtype == backend.dtype(dtype), f"dtype {actual.dtype} != {dtype}"
    if backend.device is not None:
        assert device_of(actual) == backend.device, f"device {device_of(actual)} != {backend.device}"
    np.testing.assert_allclose(
        to_numpy(actual),
        expected,
        rtol=RTOL[dtype] if rtol is None else rtol,
        atol=ATOL[dtype] if atol is None else atol,
    )


def random_rnn(rng, T, batch, D, H, *, scale=0.5):
    """Float64 NumPy inputs and weights: ``x (T, *batch, D)``, ``h0``, ``Wx``, ``Wh``, ``b``."""
    x = rng.standard_normal((T, *batch, D))
    h0 = rng.standard_normal((*batch, H)) * 0.5
    Wx = rng.standard_normal((H, D)) * scale / np.sqrt(max(D, 1))
    Wh = rng.standard_normal((H, H)) * scale / np.sqrt(max(H, 1))
    b = rng.standard_normal(H) * 0.1
    return x, h0, Wx, Wh, b


def random_backward_case(rng, T, batch, D, H, *, lengths=None, with_h0=True, with_b=True, with_dh_n=True):
    """``random_rnn``'s arrays (``scale=0.9``) and upstream gradients ``dh (T, *batch, H)``, ``dh_n (*batch, H)``.

    Returns ``x, h0, Wx, Wh, b, dh, dh_n``; ``h0``, ``b`` and ``dh_n`` are ``None`` where not asked for.
    """
    x, h0, Wx, Wh, b = random_rnn(rng, T, batch, D, H, scale=0.9)
    dh = rng.standard_normal((T, *batch, H))
    dh_n = rng.standard_normal((*batch, H)) if with_dh_n else None
    return x, h0 if with_h0 else None, Wx, Wh, b if with_b else None, dh, dh_n


def reference_rnn(x, h0, Wx, Wh, b=None, *, nonlinearity="tanh", lengths=None,
                  reverse=False, leak=1.0):
    """An independent float64 loop, one sequence and one step at a time.

    ``x`` is ``(T, *batch, D)``. Returns ``(h_seq (T, *batch, H), h_last (*batch, H))``
    with zeros past each sequence's length.
    """
    x = np.asarray(x, dtype=np.float64)
    T, batch, D = x.shape[0], x.shape[1:-1], x.shape[-1]
    H = Wx.shape[0]
    xs = x.reshape(T, -1, D)
    B = xs.shape[1]
    h0s = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64).reshape(B, H)
    lens = np.full(B, T) if lengths is None else np.asarray(lengths).reshape(B)
    bias = np.zeros(H) if b is None else np.asarray(b, np.float64)
    f = np.tanh if nonlinearity == "tanh" else (lambda z: np.maximum(z, 0.0))
    out = np.zeros((T, B, H))
    last = np.zeros((B, H))
    for n in range(B):
        h = h0s[n].copy()
        steps = range(lens[n] - 1, -1, -1) if reverse else range(lens[n])
        for t in steps:
            z = np.dot(Wx, xs[t, n]) + np.dot(Wh, h) + bias
            h = (1 - leak) * h + leak * f(z)
            out[t, n] = h
        last[n] = h
    return out.reshape(T, *batch, H), last.reshape(*batch, H)


def tree_order_sum(parts, every=4):
    """The order ``kernels.dask.tree_sum`` adds in, written out apart from it.

    Groups of ``every`` consecutive values (Dask's ``split_every``, 4 by
    default), each added left to right, level by level until one is left.
    """
    while len(parts) > 1:
        groups = [parts[i : i + every] for i in range(0, len(parts), every)]
        parts = []
        for group in groups:
            total = group[0]
            for g in group[1:]:
                total = total + g
            parts.append(total)
    return parts[0]


def made_up_gpu(name):
    """The device properties of a GPU as CUDA reports them, for the CuPy paths' rules without a GPU.

    ``"h100"``: an H100 SXM (132 SMs, 227 KiB of shared memory per block
    opted in, 228 KiB per SM); ``"small"``: 4 SMs with 48 KiB per block.
    """
    from rnn_xp.kernels.cupy_persistent import DeviceProps

    if name == "h100":
        return DeviceProps(sm_count=132, smem_per_block_optin=232448, smem_per_sm=233472,
                           reserved_smem_per_block=1024, max_threads_per_block=1024, cooperative_launch=True)  # fmt: skip
    if name == "small":
        return DeviceProps(sm_count=4, smem_per_block_optin=49152, smem_per_sm=65536, reserved_smem_per_block=0,
                           max_threads_per_block=1024, cooperative_launch=True)  # fmt: skip
    raise ValueError(f"no made-up GPU named {name!r}")


# Environment variables that set BLAS and OpenMP thread counts at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")  # fmt: skip


def thread_env(**extra):
    """``os.environ`` for a new process whose thread pools start as the machine gives them, plus ``extra``.

    Without the ``*_NUM_THREADS`` variables, which a CI runner (or a
    ``dask.distributed`` cluster started earlier in the process) may have set
    to 1: tests of thread counts need more than one thread to start with.
    """
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(extra)
    return env


@contextlib.contextmanager
def environ_kept():
    """``os.environ`` as it was, after the block (``dask.distributed`` sets ``*_NUM_THREADS=1`` in it)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def jax_float64():
    """JAX with float64 enabled for the block, and as it was after (the conftest enables it only with a JAX backend)."""
    import jax

    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", was)


def jax_dots(jaxpr, found=None):
    """Every ``dot_general`` equation of ``jaxpr`` and of the programs inside it (scan, jit, custom_vjp, ...)."""
    from jax.extend import core as jcore

    found = [] if found is None else found
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(sub, jcore.ClosedJaxpr):
                    jax_dots(sub.jaxpr, found)
                elif isinstance(sub, jcore.Jaxpr):
                    jax_dots(sub, found)
    return found

def keras_numpy(keras, a):
    """A Keras tensor (its torch backend's) as NumPy."""
    return keras.ops.convert_to_numpy(a)


def randomize_keras(layer, rng):
    """A built Keras layer's weights drawn from ``U(-0.6, 0.6)``, in their own dtype (set in place)."""
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in layer.get_weights()])

def optional_import(name):
    """The module, or ``None`` when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def torch_rnn(D, H, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
              bidirectional=False, seed=0):  # fmt: skip
    """A float64 ``torch.nn.RNN`` with torch's seeded initial weights: the parity tests' reference."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.RNN(D, H, num_layers, nonlinearity=nonlinearity, bias=bias,
                        batch_first=batch_first, bidirectional=bidirectional,
                        dtype=torch.float64)  # fmt: skip


def torch_packed(module, x, hx=None, lengths=None):
    """``module(x, hx)`` for a ``torch.nn.RNN``/``LSTM``/``GRU``: torch's own reference for variable lengths.

    With ``lengths`` the input goes through ``pack_padded_sequence`` (unsorted,
    the module's ``batch_first``) and the output comes back padded with zeros
    to ``x``'s length, so the module never sees the padding. Torch tensors in,
    ``(output, final state(s))`` out, in autograd's graph.
    """
    import torch

    if lengths is None:
        return module(x, hx)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=module.batch_first,
                                                     enforce_sorted=False)  # fmt: skip
    out, final = module(packed, hx)
    total = x.shape[1] if module.batch_first else x.shape[0]
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first, total_length=total)
    return out, final

LIBRARY_NAMES = {"numpy": "numpy", "torch": "torch", "jax": "jax.numpy"}  # as rnn_xp's messages name them


def as_library(lib, a):
    """NumPy array ``a`` as an array of ``lib``: ``"numpy"``, ``"torch"`` or ``"jax"``."""
    if lib == "torch":
        import torch

        return torch.asarray(a)
    if lib == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a)
    return a


# -- backends by name (the ``backend`` fixture of conftest.py runs them all) -----------

BACKENDS = ["numpy", "numpy_readonly", "array_api_strict", "torch", "torch_cuda", "jax", "cupy", "dask"]


def _no_gpu(reason):
    """Skip with ``reason``, or fail where a GPU is required (``RNN_XP_REQUIRE_GPU=1``)."""
    if os.environ.get("RNN_XP_REQUIRE_GPU", "") not in ("", "0"):
        pytest.fail(f"RNN_XP_REQUIRE_GPU is set, but {reason}", pytrace=False)
    pytest.skip(reason)


def make_backend(name):
    """The ``Backend`` for ``name``, or ``pytest.skip`` with the reason."""
    if name in ("numpy", "numpy_readonly"):
        import array_api_compat.numpy as xp

        return Backend(name, xp, "cpu", readonly=name == "numpy_readonly")
    if name == "array_api_strict":
        strict = optional_import("array_api_strict")
        if strict is None:
            pytest.skip("array-api-strict not installed")
        return Backend(name, strict, strict.Device("CPU_DEVICE"))
    if name.startswith("torch"):
        torch = optional_import("torch")
        if torch is None:
            (_no_gpu if name == "torch_cuda" else pytest.skip)("torch not installed")
        import array_api_compat.torch as xp

        if name == "torch_cuda":
            if not torch.cuda.is_available():
                _no_gpu("no CUDA device for torch")
            return Backend(name, xp, torch.device("cuda", 0))
        return Backend(name, xp, torch.device("cpu"))
    if name == "jax":
        jax = optional_import("jax")
        if jax is None:
            pytest.skip("jax not installed")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return Backend(name, jnp, jax.devices("cpu")[0])
    if name == "cupy":
        cupy = optional_import("cupy")
        if cupy is None:
            _no_gpu("cupy not installed")
        try:
            available, why = cupy.cuda.is_available(), ""
        except Exception as exc:  # a driver or runtime that fails to start: say so
            available, why = False, f" ({type(exc).__name__}: {exc})"
        if not available:
            _no_gpu(f"no CUDA device for cupy{why}")
        import array_api_compat.cupy as xp

        return Backend(name, xp, cupy.cuda.Device(0))
    if name == "dask":
        if optional_import("dask.array") is None:
            pytest.skip("dask not installed")
        import array_api_compat.dask.array as xp

        return Backend(name, xp, "cpu")
    raise ValueError(f"unknown backend {name}")


def uncovered(rows, levels, strength=3):
    """What a covering design misses: ``(columns, values)`` of every ``strength`` options that no row of ``rows`` has.

    ``levels`` holds each column's values. A design that misses nothing runs every
    combination of every ``strength`` options (all pairs, all triples) in far
    fewer rows than the full product of ``levels``.
    """
    missing = []
    for columns in itertools.combinations(range(len(levels)), strength):
        seen = {tuple(row[c] for c in columns) for row in rows}
        missing += [(columns, values) for values in itertools.product(*(levels[c] for c in columns))
                    if values not in seen]
    return missing


def half_product(*levels):
    """The rows of ``itertools.product(*levels)`` (two values each) with an even number of second values.

    Any one column is fixed by the others' parity, so every combination of any
    ``len(levels) - 1`` columns appears once: all triples of four options in 8
    rows instead of 16.
    """
    assert all(len(values) == 2 for values in levels)
    return [row for row in itertools.product(*levels)
            if sum(value == values[1] for value, values in zip(row, levels)) % 2 == 0]

# -- the bad-input catalogues (tests/*/test_*_errors.py) -------------------------------


def catalogue_rows(cases):
    """``cases`` (``{entry: [(overrides, exception, match), ...]}``) as parameters ``entry-i``.

    A catalogue has a caller per entry point that fills in valid defaults;
    each row's overrides make one argument bad, and the call must raise
    ``exception`` with a message matching ``match`` (``None``: an odd but valid
    input, which must compute the right answer).
    """
    return [
        pytest.param(entry, overrides, exc, match, id=f"{entry}-{i}")
        for entry, rows in cases.items()
        for i, (overrides, exc, match) in enumerate(rows)
    ]


def check_catalogue_row(call, overrides, exc, match, check_valid):
    """One row: ``call(**overrides)`` raises ``exc`` matching ``match``, or (``exc is None``) gives a result ``check_valid`` accepts."""
    if exc is None:  # a valid input next to the bad ones: it must compute
        check_valid(call(**overrides))
        return
    with pytest.raises(exc, match=match):
        call(**overrides)


def assert_catalogue_complete(cases, entry_points, errors_at_least):
    """Every entry point has rows, and at least ``errors_at_least`` of the rows are errors."""
    errors = sum(1 for rows in cases.values() for row in rows if row[1] is not None)
    assert errors >= errors_at_least, errors
    assert set(cases) == set(entry_points)


def reference_layer(rnn, x, h0=None, lengths=None):
    """The float64 loop of ``reference_rnn``, stacked by hand over an ``RNN``'s layers and directions.

    ``x`` is time-major ``(T, *batch, D)``; returns ``(output, h_n)`` as float64 NumPy.
    """
    p = {k: to_numpy(v).astype(np.float64) for k, v in rnn.params.items()}
    dirs, batch = rnn.num_directions, x.shape[1:-1]
    lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    layer_in, finals = np.asarray(x, np.float64), []
    for k in range(rnn.num_layers):
        outs = []
        for d, s in enumerate(("", "_reverse")[:dirs]):
            b = p[f"bias_ih_l{k}{s}"] + p[f"bias_hh_l{k}{s}"] if rnn.bias else None
            h_init = None if h0 is None else h0[k * dirs + d]
            out, last = reference_rnn(layer_in, h_init, p[f"weight_ih_l{k}{s}"], p[f"weight_hh_l{k}{s}"], b,
                                      nonlinearity=rnn.nonlinearity, lengths=lengths, reverse=d == 1, leak=rnn.leak)
            outs.append(out)
            finals.append(last)
        layer_in = np.concatenate(outs, axis=-1)
    return layer_in, np.stack(finals).reshape(rnn.num_layers * dirs, *batch, rnn.hidden_size)


@contextlib.contextmanager
def params_kept(layer):
    """The block leaves ``layer``'s parameters as they were (compared bit for bit after it)."""
    before = {k: to_numpy(v).copy() for k, v in layer.params.items()}
    yield
    for k, v in layer.params.items():
        np.testing.assert_array_equal(to_numpy(v), before[k])

def assert_layer_runs_its_weights(result, x, given):
    """A layer built by a loader or a converter runs the recurrence of the weights it was given.

    ``result`` must be an ``RNN`` whose output on time-major ``x`` is
    ``reference_layer``'s, and whose first layer's weights are ``given``
    (``(weight_ih_l0, weight_hh_l0)`` in torch's layout).
    """
    from rnn_xp import RNN

    assert isinstance(result, RNN)
    xin = x if not result.batch_first else np.moveaxis(x, 0, 1)
    output, _ = result(xin.astype(result.dtype))
    expected, _ = reference_layer(result, x)
    if result.batch_first:
        expected = np.moveaxis(expected, 0, 1)
    tol = 1e-10 if result.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(output, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(to_numpy(result.weight_ih_l0), given[0], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(result.weight_hh_l0), given[1], rtol=1e-6)


def torch_grads(x, h0, Wx, Wh, b, dh, dh_n, *, nonlinearity="tanh", lengths=None,
                reverse=False, leak=1.0):
    """Autograd gradients of ``sum(dh * h_seq) + sum(dh_n * h_last)``; time-major NumPy in and out.

    An independent float64 torch loop (one sequence and one step at a time).
    """
    import torch

    import rnn_xp

    T, batch, D = x.shape[0], x.shape[1:-1], x.shape[-1]
    H = Wx.shape[0]
    B = int(np.prod(batch, dtype=int))
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    xt, Wxt, Wht = t(x), t(Wx), t(Wh)
    h0t = t(np.zeros((*batch, H)) if h0 is None else h0)
    bt = t(np.zeros(H) if b is None else b)
    f = torch.tanh if nonlinearity == "tanh" else torch.relu
    lens = np.full(B, T) if lengths is None else np.asarray(lengths).reshape(B)
    xs, h0s = xt.reshape(T, B, D), h0t.reshape(B, H)
    outs, lasts = [], []
    for n in range(B):
        h = h0s[n]
        out = [torch.zeros(H, dtype=torch.float64)] * T
        for s in range(lens[n] - 1, -1, -1) if reverse else range(lens[n]):
            h = (1 - leak) * h + leak * f(Wxt @ xs[s, n] + Wht @ h + bt)
            out[s] = h
        outs.append(torch.stack(out) if T else torch.zeros((0, H), dtype=torch.float64))
        lasts.append(h)
    h_seq = torch.stack(outs, dim=1).reshape(T, *batch, H)
    h_last = torch.stack(lasts).reshape(*batch, H)
    loss = (torch.tensor(dh) * h_seq).sum()
    if dh_n is not None:
        loss = loss + (torch.tensor(dh_n) * h_last).sum()
    loss.backward()
    g = lambda a: a.grad.numpy()  # noqa: E731
    return rnn_xp.RNNGrads(g(xt), g(h0t), g(Wxt), g(Wht), None if b is None else g(bt))
