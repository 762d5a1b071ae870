"""Dask arrays chunked along the batch: lazy results, one task per batch chunk.

Each batch chunk runs the in-memory NumPy forward pass, so a Dask result
must equal, bit for bit, ``rnn_forward`` run on the same NumPy chunks one
by one (and agree with the float64 reference loop within the dtype's
tolerance). Schedulers: synchronous, threads, and a two-process
``dask.distributed`` cluster on loopback.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import rnn_xp
from support import assert_close, random_rnn, reference_rnn

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from conftest import make_backend  # noqa: E402
from rnn_xp.kernels.dask import TOKEN  # noqa: E402

OPTIONS = [
    {},
    {"nonlinearity": "relu", "leak": 0.7},
    {"reverse": True, "lengths": True},
    {"return_sequences": False, "lengths": True},
    {"return_sequences": False, "reverse": True},
]


@pytest.fixture
def dask_backend():
    return make_backend("dask")


def _case(rng, dtype, *, T=6, B=10, D=3, H=5):
    """NumPy inputs in ``dtype`` and lengths ``(B,)`` with 0 and T among them."""
    x, h0, Wx, Wh, b = (a.astype(dtype) for a in random_rnn(rng, T, (B,), D, H))
    lengths = rng.integers(0, T + 1, size=B)
    lengths[:2] = (0, T)
    return x, h0, Wx, Wh, b, lengths


def _per_chunk(x, h0, Wx, Wh, b, lengths, chunks, opts):
    """NumPy ``rnn_forward`` over each batch chunk in turn, concatenated along the batch."""
    outs, start = [], 0
    for n in chunks:
        sl = slice(start, start + n)
        outs.append(rnn_xp.rnn_forward(
            np.ascontiguousarray(x[:, sl]), None if h0 is None else h0[sl], Wx, Wh, b,  # Dask chunks are contiguous copies
            lengths=None if lengths is None else lengths[sl], **opts,
        ))  # fmt: skip
        start += n
    return np.concatenate(outs, axis=0 if not opts.get("return_sequences", True) else 1)


def _run(x, h0, Wx, Wh, b, lengths, opts, chunks):
    """The Dask call: x and lengths chunked along the batch, NumPy weights and h0."""
    opts = dict(opts)
    use_lengths = opts.pop("lengths", False)
    xd = da.from_array(x, chunks=(-1, chunks, -1))
    ld = da.from_array(lengths, chunks=chunks) if use_lengths else None
    out = rnn_xp.rnn_forward(xd, h0, Wx, Wh, b, lengths=ld, **opts)
    ref = _per_chunk(x, h0, Wx, Wh, b, lengths if use_lengths else None, xd.chunks[1], opts)
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths if use_lengths else None,
                                   **{k: v for k, v in opts.items() if k != "return_sequences"})
    return out, ref, expected if opts.get("return_sequences", True) else last


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_equals_numpy_per_chunk(dask_backend, dtype, rng, scheduler, opts):
    x, h0, Wx, Wh, b, lengths = _case(rng, dtype)
    out, ref, expected = _run(x, h0, Wx, Wh, b, lengths, opts, chunks=4)
    assert isinstance(out, da.Array)
    assert out.chunks[-1] == (5,) and (4, 4, 2) in out.chunks
    with dask.config.set(scheduler=scheduler):
        np.testing.assert_array_equal(out.compute(), ref)
        assert_close(out, expected, dask_backend, dtype)


def test_distributed_local_cluster(rng):
    distributed = pytest.importorskip("dask.distributed")
    cases = [(dtype, opts) for dtype in ("float32", "float64") for opts in OPTIONS]
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        workers = set(client.scheduler_info()["workers"])
        assert len(workers) == 2
        with distributed.get_task_stream(client) as stream:
            for dtype, opts in cases:
                x, h0, Wx, Wh, b, lengths = _case(rng, dtype, B=12)
                out, ref, _ = _run(x, h0, Wx, Wh, b, lengths, opts, chunks=3)
                result = client.compute(out).result()
                np.testing.assert_array_equal(result, ref, err_msg=f"{dtype} {opts}")
    ran_on = {t["worker"] for t in stream.data if t["key"][0].startswith(TOKEN)}
    assert ran_on == workers, "the recurrence tasks did not use both worker processes"


def _forward_tasks(arr):
    """How many tasks of the graph run the recurrence."""
    graph = arr.__dask_graph__()
    return sum(len(layer) for name, layer in graph.layers.items() if name.startswith(TOKEN))


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("batch,chunks", [((12,), (3,)), ((4, 6), (2, 3)), ((), ())])
def test_one_task_per_batch_chunk(rng, batch, chunks, return_sequences):
    sizes = []
    for T in (3, 40):
        x, h0, Wx, Wh, b = random_rnn(rng, T, batch, 3, 4)
        xd = da.from_array(x, chunks=(-1, *chunks, -1))
        out = rnn_xp.rnn_forward(xd, h0, Wx, Wh, b, return_sequences=return_sequences)
        n_chunks = int(np.prod(xd.numblocks[1:-1]))
        assert _forward_tasks(out) == n_chunks
        assert out.chunks == ((T,),) * return_sequences + xd.chunks[1:-1] + ((4,),)
        sizes.append(len(out.__dask_graph__()))
        expected, last = reference_rnn(x, h0, Wx, Wh, b)
        assert_close(out, expected if return_sequences else last, make_backend("dask"), "float64")
    assert sizes[0] == sizes[1], f"graph grows with T: {sizes}"


def test_numpy_weights_once_in_graph(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (16,), 3, 96)  # Wh is (96, 96): 72 KiB
    sizes = {}
    for n in (2, 16):
        out = rnn_xp.rnn_forward(da.from_array(x, chunks=(-1, 16 // n, -1)), h0, Wx, Wh, b)
        graph = dict(out.__dask_graph__())
        big = [k for k, v in graph.items() if len(pickle.dumps(v)) >= Wh.nbytes]
        assert len(big) == 1, f"{n} chunks: Wh is in {len(big)} graph entries"
        sizes[n] = len(pickle.dumps(graph))
    # 14 more chunks must not cost 14 more copies of Wh (nor of Wx, b or h0)
    assert sizes[16] - sizes[2] < Wh.nbytes


@pytest.mark.parametrize("kind", ["dask", "numpy", "list"])
def test_lengths_kinds(rng, kind):
    x, h0, Wx, Wh, b, lengths = _case(rng, "float64", B=9)
    given = {
        "dask": da.from_array(lengths, chunks=2),  # chunked unlike x: aligned to x's chunks
        "numpy": lengths,
        "list": [int(v) for v in lengths],
    }[kind]
    xd = da.from_array(x, chunks=(-1, 4, -1))
    out = rnn_xp.rnn_forward(xd, h0, Wx, Wh, b, lengths=given)
    assert _forward_tasks(out) == 3 and out.chunks[1] == (4, 4, 1)
    np.testing.assert_array_equal(out.compute(), _per_chunk(x, h0, Wx, Wh, b, lengths, (4, 4, 1), {}))
    expected, _ = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths)
    assert_close(out, expected, make_backend("dask"), "float64")


def test_lengths_values_checked_at_compute(rng):
    x, h0, Wx, Wh, b, lengths = _case(rng, "float64")
    lengths[3] = 7  # > T = 6: cannot be seen while the graph is built
    out = rnn_xp.rnn_forward(da.from_array(x, chunks=(-1, 4, -1)), h0, Wx, Wh, b,
                             lengths=da.from_array(lengths, chunks=4))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        out.compute(scheduler="synchronous")


@pytest.mark.parametrize("return_sequences", [True, False])
def test_batch_first(rng, return_sequences):
    x, h0, Wx, Wh, b, lengths = _case(rng, "float32")
    x_bf = np.ascontiguousarray(np.moveaxis(x, 0, 1))  # (B, T, D)
    xd = da.from_array(x_bf, chunks=(4, -1, -1))
    out = rnn_xp.rnn_forward(xd, da.from_array(h0, chunks=(5, -1)), Wx, Wh, b, batch_first=True,
                             lengths=lengths, return_sequences=return_sequences)
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths)
    if return_sequences:
        assert out.chunks == ((4, 4, 2), (6,), (5,))
        expected = np.moveaxis(expected, 0, 1)
    else:
        expected = last
    assert _forward_tasks(out) == 3
    assert_close(out, expected, make_backend("dask"), "float32")


@pytest.mark.parametrize("split,axis_name", [((2, -1, -1), "time"), ((-1, -1, 2), "features")])
def test_rechunk_warning(rng, split, axis_name):
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (8,), 4, 5)
    xd = da.from_array(x, chunks=(split[0], 4, split[2]))
    with pytest.warns(da.PerformanceWarning, match=f"x is chunked along {axis_name}"):
        out = rnn_xp.rnn_forward(xd, h0, Wx, Wh, b)
    assert out.chunks == ((6,), (4, 4), (5,)) and _forward_tasks(out) == 2
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    assert_close(out, expected, make_backend("dask"), "float64")


def test_no_warning_when_chunked_along_batch_only(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (8,), 4, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rnn_xp.rnn_forward(da.from_array(x, chunks=(-1, 2, -1)), h0, Wx, Wh, b)


def test_dask_weights_and_h0(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (6,), 3, 4)
    args = [da.from_array(x, chunks=(-1, 2, -1)), da.from_array(h0, chunks=(3, 2))]
    args += [da.from_array(w, chunks=2) for w in (Wx, Wh, b)]  # chunked weights are merged
    with pytest.warns(da.PerformanceWarning, match="h0 is chunked along features"):
        out = rnn_xp.rnn_forward(*args)
    assert out.chunks == ((5,), (2, 2, 2), (4,))
    np.testing.assert_array_equal(out.compute(), _per_chunk(x, h0, Wx, Wh, b, None, (2, 2, 2), {}))


def test_dtype_promotion_like_numpy(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (6,), 3, 4)
    xd = da.from_array(x.astype("float32"), chunks=(-1, 3, -1))
    out = rnn_xp.rnn_forward(xd, None, Wx, Wh, b)  # float32 x, float64 NumPy weights
    numpy_out = rnn_xp.rnn_forward(x.astype("float32"), None, Wx, Wh, b)
    assert out.dtype == numpy_out.dtype == np.float64


def test_step_forward_chunks(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 1, (12,), 3, 4)
    xd = da.from_array(x[0], chunks=(4, -1))
    hd = da.from_array(h0, chunks=(4, -1))
    out = rnn_xp.rnn_step_forward(xd, hd, Wx, Wh, b)
    assert isinstance(out, da.Array) and out.chunks == ((4, 4, 4), (4,))
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    assert_close(out, expected[0], make_backend("dask"), "float64")


@pytest.mark.parametrize("other", ["torch", "jax", "array_api_strict"])
def test_other_mixes_stay_type_errors(rng, other):
    lib = make_backend(other)
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (6,), 3, 4)
    xd = da.from_array(x, chunks=(-1, 3, -1))
    with pytest.raises(TypeError, match="all arrays must come from one library"):
        rnn_xp.rnn_forward(xd, h0, lib.asarray(Wx), Wh, b)
    with pytest.raises(TypeError, match="all arrays must come from one library"):
        rnn_xp.rnn_forward(lib.asarray(x), None, da.from_array(Wx), Wh, b)
    with pytest.raises(TypeError, match="all arrays must come from one library"):
        rnn_xp.rnn_step_forward(xd[0], h0, Wx, lib.asarray(Wh), b)


def test_explicit_numpy_xp_refuses_dask(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (6,), 3, 4)
    with pytest.raises(TypeError, match="all arrays must come from one library"):
        rnn_xp.rnn_forward(da.from_array(x), h0, Wx, Wh, b, xp=np)


def test_cupy_chunks(rng):
    make_backend("cupy")  # skips: cupy not installed, or no CUDA device
    import cupy
    x, h0, Wx, Wh, b, lengths = _case(rng, "float32")
    xd = da.from_array(cupy.asarray(x), chunks=(-1, 4, -1))
    Wd = [da.from_array(cupy.asarray(w)) for w in (Wx, Wh, b)]
    out = rnn_xp.rnn_forward(xd, None, *Wd, lengths=[int(v) for v in lengths])  # NumPy-made h0, lengths
    assert isinstance(out._meta, cupy.ndarray)
    expected, _ = reference_rnn(x, None, Wx, Wh, b, lengths=lengths)
    np.testing.assert_allclose(out.compute().get(), expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_with_numpy_parameters_takes_dask_input(rng, bidirectional):
    """A NumPy-parameter RNN on a Dask batch: lazy, one chunk along features, NumPy's numbers."""
    import warnings

    rnn = rnn_xp.RNN(3, 5, num_layers=2, bidirectional=bidirectional, seed=0, dtype="float64")
    x = rng.standard_normal((6, 10, 3))
    h0 = rng.standard_normal((2 * (2 if bidirectional else 1), 10, 5))
    lengths = np.array([6, 1, 3, 0, 6, 2, 5, 4, 6, 6])
    expected_out, expected_h = rnn(x, h0, lengths=lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rechunk warning between layers
        out, h_n = rnn(da.from_array(x, chunks=(-1, 4, -1)), h0, lengths=lengths)
    assert isinstance(out, da.Array) and isinstance(h_n, da.Array)
    assert out.chunks[1] == (4, 4, 2) and len(out.chunks[2]) == 1
    np.testing.assert_allclose(out.compute(), expected_out, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(h_n.compute(), expected_h, rtol=1e-13, atol=1e-14)
