"""Dask arrays chunked along the batch: lazy results, one task per batch chunk.

Each batch chunk runs the in-memory NumPy forward pass, so a Dask result
must equal, bit for bit, ``rnn_forward`` run on the same NumPy chunks one
by one (and agree with the float64 reference loop within the dtype's
tolerance). The backward pass likewise: ``dx`` and ``dh0`` equal NumPy's
``rnn_backward`` per chunk, the weight gradients the chunks' gradients
added in the documented tree order, bit for bit, and torch autograd's to
the dtype's tolerance. Schedulers: synchronous, threads, and a two-process
``dask.distributed`` cluster on loopback (one for the whole module), once
with a worker killed mid-computation.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import rnn_xp
from support import ATOL, RTOL, assert_close, environ_kept, random_rnn, reference_rnn, tree_order_sum

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from support import make_backend  # noqa: E402
from rnn_xp.kernels.dask import BACKWARD_TOKEN, SUM_TOKEN, TOKEN  # noqa: E402

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


@pytest.fixture(scope="module")
def cluster():
    """A two-process ``LocalCluster`` on loopback and its client, shared by the tests below."""
    distributed = pytest.importorskip("dask.distributed")
    with environ_kept(), distributed.LocalCluster(  # it sets OMP_NUM_THREADS=1 etc. for the whole process
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=None,
    ) as cl, distributed.Client(cl) as client:  # fmt: skip
        client.wait_for_workers(2, timeout=60)
        yield cl, client


def test_distributed_local_cluster(cluster, rng):
    distributed = pytest.importorskip("dask.distributed")
    _, client = cluster
    workers = set(client.scheduler_info()["workers"])
    outs, refs = [], []
    for dtype in ("float32", "float64"):
        for opts in OPTIONS:
            x, h0, Wx, Wh, b, lengths = _case(rng, dtype, B=12)
            out, ref, _ = _run(x, h0, Wx, Wh, b, lengths, opts, chunks=3)
            outs.append(out)
            refs.append((ref, f"{dtype} {opts}"))
    with distributed.get_task_stream(client) as stream:
        results = client.compute(outs, sync=True)  # every case in one call
    for result, (ref, case) in zip(results, refs):
        np.testing.assert_array_equal(result, ref, err_msg=case)
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


# ---------------------------------------------------------------- the backward pass
#
# Each batch chunk runs the in-memory NumPy backward, so dx and dh0 must equal,
# bit for bit, rnn_backward run on the same NumPy chunks one by one, and the
# weight gradients must equal those chunks' gradients added in the documented
# tree order (groups of split_every consecutive chunks, left to right).


BACKWARD_OPTIONS = [
    {},
    {"nonlinearity": "relu", "leak": 0.7},
    {"reverse": True, "lengths": True},
    {"reverse": True, "lengths": True, "leak": 0.5, "nonlinearity": "relu"},
    {"dh": False, "dh_n": True, "lengths": True},  # a loss on the final state only
    {"batch_first": True, "lengths": True},
]


def _backward_case(rng, dtype, *, T=6, B=10, D=3, H=5, opts=None):
    """NumPy inputs in ``dtype`` for a backward call: forward outputs, upstream gradients, lengths."""
    opts = dict(opts or {})
    x, h0, Wx, Wh, b, lengths = _case(rng, dtype, T=T, B=B, D=D, H=H)
    fwd = {k: opts[k] for k in ("nonlinearity", "reverse", "leak") if k in opts}
    lens = lengths if opts.get("lengths") else None
    h_seq = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lens, **fwd)
    dh = rng.standard_normal(h_seq.shape).astype(dtype) if opts.get("dh", True) else None
    dh_n = rng.standard_normal(h0.shape).astype(dtype) if opts.get("dh_n") else None
    return dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b, h_seq=h_seq, dh=dh, dh_n=dh_n, lengths=lens, fwd=fwd)


def _backward_per_chunk(c, chunks, every):
    """NumPy ``rnn_backward`` on each batch chunk in turn; weight gradients summed in tree order."""
    grads, start = [], 0
    cut = lambda a, sl: None if a is None else np.ascontiguousarray(a[sl])  # noqa: E731
    for n in chunks:
        sl, tsl = slice(start, start + n), (slice(None), slice(start, start + n))
        grads.append(rnn_xp.rnn_backward(
            cut(c["dh"], tsl), cut(c["x"], tsl), cut(c["h0"], sl), c["Wx"], c["Wh"], c["b"],
            cut(c["h_seq"], tsl), dh_n=cut(c["dh_n"], sl), lengths=cut(c["lengths"], sl), **c["fwd"],
        ))  # fmt: skip
        start += n
    return rnn_xp.RNNGrads(
        np.concatenate([g.dx for g in grads], axis=1),
        np.concatenate([g.dh0 for g in grads], axis=0),
        *(tree_order_sum([getattr(g, name) for g in grads], every) for name in ("dWx", "dWh", "db")),
    )  # fmt: skip


def _dask_backward(c, chunks, *, batch_first=False):
    """The Dask call: x, h_seq, dh and lengths chunked along the batch; NumPy weights, h0 and dh_n."""
    def chunked(a):
        if a is None:
            return None
        if batch_first:
            return da.from_array(np.moveaxis(a, 0, 1), chunks=(chunks, -1, -1))
        return da.from_array(a, chunks=(-1, chunks, -1))

    lengths = None if c["lengths"] is None else da.from_array(c["lengths"], chunks=chunks)
    return rnn_xp.rnn_backward(
        chunked(c["dh"]), chunked(c["x"]), c["h0"], c["Wx"], c["Wh"], c["b"], chunked(c["h_seq"]),
        dh_n=c["dh_n"], lengths=lengths, batch_first=batch_first, **c["fwd"],
    )  # fmt: skip


def _check_backward(got, want, *, batch_first=False, bitwise=True):
    check = np.testing.assert_array_equal if bitwise else (
        lambda a, b, err_msg="": np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=err_msg))
    dx = np.moveaxis(want.dx, 0, 1) if batch_first else want.dx
    for name, w in zip(("dx", "dh0", "dWx", "dWh", "db"), (dx, *want[1:])):
        check(getattr(got, name), w, err_msg=name)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
@pytest.mark.parametrize("opts", BACKWARD_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_backward_equals_numpy_per_chunk(dtype, rng, scheduler, opts):
    c = _backward_case(rng, dtype, opts=opts)
    batch_first = opts.get("batch_first", False)
    g = _dask_backward(c, 3, batch_first=batch_first)  # chunks (3, 3, 3, 1): a tree of two levels
    assert all(isinstance(a, da.Array) for a in g)
    assert g.dx.chunks == (((3, 3, 3, 1), (6,), (3,)) if batch_first else ((6,), (3, 3, 3, 1), (3,)))
    assert g.dh0.chunks == ((3, 3, 3, 1), (5,)) and g.dWh.chunks == ((5,), (5,))
    with dask.config.set(scheduler=scheduler):
        got = rnn_xp.RNNGrads(*dask.compute(*g))
    want = _backward_per_chunk(c, (3, 3, 3, 1), every=4)
    _check_backward(got, want, batch_first=batch_first)
    # and, to the dtype's rounding, the gradients of an independent float64 autograd loop
    from support import torch_grads

    ref = torch_grads(c["x"], c["h0"], c["Wx"], c["Wh"], c["b"],
                      np.zeros(c["h_seq"].shape) if c["dh"] is None else c["dh"], c["dh_n"],
                      lengths=c["lengths"], **c["fwd"])  # fmt: skip
    dx_ref = np.moveaxis(ref.dx, 0, 1) if batch_first else ref.dx
    for name, w in zip(("dx", "dh0", "dWx", "dWh", "db"), (dx_ref, *ref[1:])):
        assert getattr(g, name).dtype == getattr(got, name).dtype == np.dtype(dtype), name
        np.testing.assert_allclose(getattr(got, name), w, rtol=RTOL[dtype], atol=ATOL[dtype], err_msg=name)


@pytest.mark.parametrize("every,chunk", [(3, 1), (2, 2), (16, 1)])
def test_backward_tree_order(rng, every, chunk):
    """split_every sets the tree; the float32 sums are the tree's, bit for bit."""
    c = _backward_case(rng, "float32", B=10, opts={"lengths": True})
    with dask.config.set(split_every=every):
        g = _dask_backward(c, chunk)
    n = len(g.dx.chunks[1])
    sums = _tasks([g.dWh], SUM_TOKEN)
    width, tree_tasks = n, 0
    while width > 1:
        width = -(-width // every)
        tree_tasks += width
    assert sums == n + tree_tasks  # one getitem per chunk, then the tree
    got = rnn_xp.RNNGrads(*dask.compute(*g, scheduler="threads"))
    _check_backward(got, _backward_per_chunk(c, g.dx.chunks[1], every))


def _graph(arrays):
    """The graph of several arrays together, as built (before Dask's optimizations rename keys)."""
    from dask.highlevelgraph import HighLevelGraph

    return HighLevelGraph.merge(*(a.__dask_graph__() for a in arrays if a is not None))


def _tasks(arrays, prefix):
    return sum(len(layer) for name, layer in _graph(arrays).layers.items() if name.startswith(prefix))


@pytest.mark.parametrize("batch,chunks", [((12,), (3,)), ((4, 6), (2, 3)), ((), ())])
def test_backward_one_task_per_batch_chunk(rng, batch, chunks):
    sizes = []
    for T in (3, 40):
        x, h0, Wx, Wh, b = random_rnn(rng, T, batch, 3, 4)
        xd = da.from_array(x, chunks=(-1, *chunks, -1))
        h_seq = rnn_xp.rnn_forward(xd, h0, Wx, Wh, b)
        dh = da.from_array(rng.standard_normal(h_seq.shape), chunks=(-1, *chunks, -1))
        g = rnn_xp.rnn_backward(dh, xd, h0, Wx, Wh, b, h_seq)
        n_chunks = int(np.prod(xd.numblocks[1:-1]))
        assert _tasks(g, BACKWARD_TOKEN) == n_chunks
        assert _tasks(g, TOKEN) == n_chunks  # the forward, once, shared by every gradient
        assert g.dx.chunks == xd.chunks and g.dh0.chunks == (*xd.chunks[1:-1], (4,))
        sizes.append(len(_graph(g)))
        want = rnn_xp.rnn_backward(dh.compute(), x, h0, Wx, Wh, b, h_seq.compute())
        for got, w in zip(dask.compute(*g), want):
            np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-13)
    assert sizes[0] == sizes[1], f"graph grows with T: {sizes}"


def test_backward_mixed_inputs_are_aligned(rng):
    """dh chunked unlike x, h_seq as NumPy, Dask weights: all follow x's batch chunks."""
    c = _backward_case(rng, "float64", B=9, opts={"lengths": True})
    xd = da.from_array(c["x"], chunks=(-1, 4, -1))
    g = rnn_xp.rnn_backward(
        da.from_array(c["dh"], chunks=(-1, 2, -1)), xd, da.from_array(c["h0"], chunks=(3, -1)),
        da.from_array(c["Wx"]), da.from_array(c["Wh"]), c["b"], c["h_seq"],
        lengths=[int(v) for v in c["lengths"]], **c["fwd"],
    )  # fmt: skip
    assert g.dx.chunks[1] == (4, 4, 1) and _tasks(g, BACKWARD_TOKEN) == 3
    _check_backward(rnn_xp.RNNGrads(*dask.compute(*g)), _backward_per_chunk(c, (4, 4, 1), 4))


def test_forward_rechunk_warning_points_at_caller(rng):
    x = da.from_array(rng.standard_normal((6, 8, 3)), chunks=(2, 4, -1))  # chunked along time
    with pytest.warns(da.PerformanceWarning, match="x is chunked along time") as record:
        h = rnn_xp.rnn_forward(x, None, np.full((5, 3), 0.1), np.full((5, 5), 0.1))
    assert record[0].filename == __file__
    assert h.chunks[1] == (4, 4)


def test_backward_rechunk_warning_points_at_caller(rng):
    c = _backward_case(rng, "float64", B=8)
    dh = da.from_array(c["dh"], chunks=(2, 4, -1))  # chunked along time
    with pytest.warns(da.PerformanceWarning, match="dh is chunked along time") as record:
        g = rnn_xp.rnn_backward(dh, da.from_array(c["x"], chunks=(-1, 4, -1)), c["h0"], c["Wx"],
                                c["Wh"], c["b"], c["h_seq"])  # fmt: skip
    assert record[0].filename == __file__
    _check_backward(rnn_xp.RNNGrads(*dask.compute(*g)), _backward_per_chunk(c, (4, 4), 4))


def test_backward_lengths_values_checked_at_compute(rng):
    c = _backward_case(rng, "float64")
    lengths = c["x"].shape[0] + np.zeros(10, dtype=int)
    lengths[7] = -1  # cannot be seen while the graph is built
    g = rnn_xp.rnn_backward(c["dh"], da.from_array(c["x"], chunks=(-1, 4, -1)), None, c["Wx"],
                            c["Wh"], None, c["h_seq"], lengths=da.from_array(lengths, chunks=4))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        g.dWh.compute(scheduler="synchronous")


@pytest.mark.parametrize("T,B", [(0, 6), (5, 0)])
def test_backward_empty(rng, T, B):
    x, h0, Wx, Wh, b = random_rnn(rng, T, (B,), 3, 4)
    h_seq = np.zeros((T, B, 4))
    g = rnn_xp.rnn_backward(np.ones_like(h_seq), da.from_array(x, chunks=(-1, 4, -1)), h0, Wx, Wh,
                            b, h_seq, dh_n=np.ones((B, 4)))  # fmt: skip
    want = rnn_xp.rnn_backward(np.ones_like(h_seq), x, h0, Wx, Wh, b, h_seq, dh_n=np.ones((B, 4)))
    for got, w in zip(g, want):
        assert isinstance(got, da.Array)
        np.testing.assert_array_equal(got.compute(), w)


def test_backward_list_input_and_h0_none(rng):
    c = _backward_case(rng, "float64", T=4)
    xs = [da.from_array(c["x"][t], chunks=(5, -1)) for t in range(4)]  # stacked, one chunk per step
    with warnings.catch_warnings():  # stacking the steps is rnn_xp's doing: no warning about time chunks
        warnings.simplefilter("error", da.PerformanceWarning)
        g = rnn_xp.rnn_backward(c["dh"], xs, None, c["Wx"], c["Wh"], None, c["h_seq"])
    want = rnn_xp.rnn_backward(c["dh"], c["x"], None, c["Wx"], c["Wh"], None, c["h_seq"])
    assert isinstance(g.dx, list) and len(g.dx) == 4 and g.db is None
    for got, w in zip((np.stack(dask.compute(*g.dx)), *dask.compute(*g[1:4])), want[:4]):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-13)


def test_backward_cupy_chunks(rng):
    make_backend("cupy")  # skips: cupy not installed, or no CUDA device
    import cupy

    c = _backward_case(rng, "float32", opts={"lengths": True})
    cp = lambda a: da.from_array(cupy.asarray(a), chunks=(-1, 4, -1))  # noqa: E731
    Wd = [da.from_array(cupy.asarray(w)) for w in (c["Wx"], c["Wh"])]
    g = rnn_xp.rnn_backward(cp(c["dh"]), cp(c["x"]), None, *Wd, None, cp(c["h_seq"]),
                            lengths=[int(v) for v in c["lengths"]])  # NumPy-made h0 and lengths
    assert isinstance(g.dWh._meta, cupy.ndarray)
    want = rnn_xp.rnn_backward(c["dh"], c["x"], None, c["Wx"], c["Wh"], None, c["h_seq"],
                               lengths=c["lengths"])  # fmt: skip
    for got, w in zip(g[:4], want[:4]):
        np.testing.assert_allclose(got.compute().get(), w, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------- the backward pass on a cluster


def test_backward_local_cluster(cluster, rng):
    distributed = pytest.importorskip("dask.distributed")
    _, client = cluster
    workers = set(client.scheduler_info()["workers"])
    grads, refs = [], []
    for dtype in ("float32", "float64"):
        for opts in BACKWARD_OPTIONS[1:5]:
            c = _backward_case(rng, dtype, B=12, opts=opts)
            grads.append(list(_dask_backward(c, 2)))  # 6 chunks: a tree of two levels
            refs.append(_backward_per_chunk(c, (2,) * 6, 4))
    with distributed.get_task_stream(client) as stream:
        results = client.compute(grads, sync=True)  # every case in one call
    for got, want in zip(results, refs):
        _check_backward(rnn_xp.RNNGrads(*got), want)
    ran_on = {t["worker"] for t in stream.data if t["key"][0].startswith(BACKWARD_TOKEN)}
    assert ran_on == workers, "the backward tasks did not use both worker processes"


def _slow(block, seconds, block_info=None):
    """Runs on a worker: ``block`` after a pause; the first batch chunk waits ``seconds / 10``, the others ``seconds``,
    so that the first chunk's backward finishes while the other chunks are still running."""
    import time

    first = block_info is not None and block_info[0]["chunk-location"][1] == 0
    time.sleep(seconds / 10 if first else seconds)
    return block


def _run_chunk(x, h0, Wx, Wh, b, lengths, dh, dh_n):
    """Runs on a worker: one chunk's forward and backward, so that its kernels are compiled (or loaded) there."""
    h_seq = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lengths)
    rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, h_seq, dh_n=dh_n, lengths=lengths)
    return True


try:
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError:  # the tests that use it skip without dask.distributed
    SchedulerPlugin = object


class _Finished(SchedulerPlugin):
    """On the scheduler: ``{key: worker}`` of every task whose key starts with ``prefix`` that finished on a worker.

    A transition seen by a plugin cannot be missed the way a poll of ``scheduler.tasks`` can: a chunk's result
    stays in memory only until the tasks that read it have run, which may be milliseconds."""

    name = "rnn-xp-finished"

    def __init__(self, prefix):
        self.prefix, self.seen = prefix, {}

    def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs):
        name = str(key[0] if isinstance(key, tuple) else key)
        if finish == "memory" and name.startswith(self.prefix) and "worker" in kwargs:
            self.seen[str(key)] = kwargs["worker"]


def _add_finished(prefix, dask_scheduler=None):
    """Runs on the scheduler: starts recording the finished tasks of ``prefix`` (see ``_Finished``)."""
    dask_scheduler.add_plugin(_Finished(prefix), name=_Finished.name)


def _finished(dask_scheduler=None):
    """Runs on the scheduler: what ``_Finished`` has recorded so far."""
    return dict(dask_scheduler.plugins[_Finished.name].seen)


def _remove_finished(dask_scheduler=None):
    """Runs on the scheduler: stops recording."""
    dask_scheduler.remove_plugin(name=_Finished.name)


def test_backward_survives_a_killed_worker(cluster, rng):
    """A worker process killed mid-computation: its tasks run again elsewhere, same bits."""
    import os
    import signal
    import time

    _, client = cluster
    c = _backward_case(rng, "float64", B=12, opts={"lengths": True, "dh_n": True})
    # Each worker compiles its kernels first (numba's cache may be cold): the 60 s below are for the run
    rows = slice(0, 2)
    client.run(_run_chunk, c["x"][:, rows], c["h0"][rows], c["Wx"], c["Wh"], c["b"], c["lengths"][rows],
               c["dh"][:, rows], c["dh_n"][rows])  # fmt: skip
    xd = da.from_array(c["x"], chunks=(-1, 2, -1)).map_blocks(_slow, 0.4, dtype=c["x"].dtype)
    lengths = da.from_array(c["lengths"], chunks=2)
    h_seq = rnn_xp.rnn_forward(xd, c["h0"], c["Wx"], c["Wh"], c["b"], lengths=lengths)
    g = rnn_xp.rnn_backward(c["dh"], xd, c["h0"], c["Wx"], c["Wh"], c["b"], h_seq, dh_n=c["dh_n"],
                            lengths=lengths)  # fmt: skip
    pids = client.run(os.getpid)  # {worker address: process id}
    client.run_on_scheduler(_add_finished, BACKWARD_TOKEN)
    try:
        futures = client.compute(list(g), optimize_graph=False)  # keep the task names visible
        deadline = time.monotonic() + 60
        while not (done := client.run_on_scheduler(_finished)):
            assert time.monotonic() < deadline, "no backward task finished within 60 s"
            time.sleep(0.05)
    finally:
        client.run_on_scheduler(_remove_finished)
    victim = next(iter(done.values()))  # a worker that ran a chunk's backward and holds its dx chunk
    assert not all(f.done() for f in futures), "the computation ended before a worker could be killed"
    os.kill(pids[victim], signal.SIGKILL)
    got = rnn_xp.RNNGrads(*client.gather(futures))
    _check_backward(got, _backward_per_chunk(c, (2,) * 6, 4))
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker
    assert pids[victim] not in client.run(os.getpid).values()


# ---------------------------------------------------------------- the layer's backward on Dask


LAYER_CASES = [  # (cell, params, bidirectional, batch_first): every combination for RNN, fewer for the others
    ("rnn", "numpy", False, False), ("rnn", "numpy", True, True), ("rnn", "dask", False, False),
    ("rnn", "dask", True, True), ("lstm", "dask", True, True), ("gru", "numpy", False, False),
]  # fmt: skip


@pytest.mark.parametrize("cell,params,bidirectional,batch_first", LAYER_CASES)
def test_layer_backward_one_task_per_chunk(rng, cell, params, bidirectional, batch_first):
    """forward(return_cache=True) and backward of RNN, LSTM and GRU on a Dask batch: lazy, per chunk, NumPy's numbers."""
    L, dirs = 2, 2 if bidirectional else 1
    lengths = np.array([6, 1, 3, 0, 6, 2, 5, 4, 6, 6])
    layer_type = {"rnn": rnn_xp.RNN, "lstm": rnn_xp.LSTM, "gru": rnn_xp.GRU}[cell]
    sizes = []
    for T in (6, 30):
        layer = layer_type(3, 5, num_layers=L, bidirectional=bidirectional, batch_first=batch_first,
                           seed=0, dtype="float64")  # fmt: skip
        x = rng.standard_normal((10, T, 3) if batch_first else (T, 10, 3))
        h0 = rng.standard_normal((L * dirs, 10, 5))
        hx = (h0, rng.standard_normal((L * dirs, 10, 5))) if cell == "lstm" else h0
        lens = np.minimum(lengths, T)
        out, h_n, cache = layer.forward(x, hx, lengths=lens, return_cache=True)
        d_out = rng.standard_normal(out.shape)
        d_h_n = tuple(rng.standard_normal(a.shape) for a in h_n) if cell == "lstm" else rng.standard_normal(h_n.shape)
        want = layer.backward(cache, d_out, d_h_n)

        if params == "dask":
            layer.to(xp="dask")
        xd = da.from_array(x, chunks=(4, -1, -1) if batch_first else (-1, 4, -1))
        outd, h_nd, cached = layer.forward(xd, hx, lengths=lens, return_cache=True)
        d_outd = da.from_array(d_out, chunks=(3, -1, -1) if batch_first else (-1, 3, -1))  # rechunked to x's
        got = layer.backward(cached, d_outd, d_h_n)  # NumPy d_h_n with a Dask cache
        dstates = got.dh0 if cell == "lstm" else (got.dh0,)
        arrays = [got.dx, *dstates, *got.params.values()]
        assert all(isinstance(a, da.Array) for a in arrays)
        assert got.dx.chunks == xd.chunks and all(d.chunks[1] == (4, 4, 2) for d in dstates)
        assert _tasks(arrays, BACKWARD_TOKEN) == L * dirs * 3  # per layer and direction, one per chunk
        assert _tasks(arrays, TOKEN) == L * dirs * 3
        sizes.append(len(_graph(arrays)))
        computed = dask.compute(got)[0]
        np.testing.assert_allclose(computed.dx, want.dx, rtol=1e-12, atol=1e-13)
        want_dstates = want.dh0 if cell == "lstm" else (want.dh0,)
        for a, b in zip(computed.dh0 if cell == "lstm" else (computed.dh0,), want_dstates):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        for name, w in want.params.items():
            np.testing.assert_allclose(computed.params[name], w, rtol=1e-12, atol=1e-13, err_msg=name)
    assert sizes[0] == sizes[1], f"graph grows with T: {sizes}"


def test_layer_backward_refuses_other_libraries(rng):
    torch = pytest.importorskip("torch")
    rnn = rnn_xp.RNN(3, 5, seed=0, dtype="float64")
    out, _, cache = rnn.forward(da.from_array(rng.standard_normal((4, 6, 3)), chunks=(-1, 3, -1)),
                                return_cache=True)  # fmt: skip
    with pytest.raises(TypeError, match="d_output is from torch but the layer's parameters are in numpy"):
        rnn.backward(cache, torch.zeros(out.shape, dtype=torch.float64))


# ---------------------------------------------------------------- any cell
#
# LSTM, GRU and the Elman options its own kernels do not know (other activations,
# clip, mask) run through the cells' tasks: each batch chunk runs the kernel the
# table picks for NumPy and the cell (kernels.scan / kernels.backward), so the
# results equal, bit for bit, those kernels run on each chunk in turn, with the
# weight gradients added in the tree's order.

import array_api_compat.numpy as npx  # noqa: E402
import array_api_compat.dask.array as dxp  # noqa: E402

from cell_cases import arrays as cell_arrays  # noqa: E402
from cell_cases import random_mask  # noqa: E402
from rnn_xp.cells import ElmanCell, ElmanWeights, GRUCell, GRUWeights, LSTMCell, LSTMWeights  # noqa: E402
from rnn_xp.kernels import backward as kernel_backward  # noqa: E402
from rnn_xp.kernels import scan as kernel_scan  # noqa: E402

CELLS = {
    "lstm": (LSTMCell(), dict(proj=3, peepholes=True)),  # a projection: h (P = 3) and c (H = 5) differ
    "gru": (GRUCell(), {}),
    "gru-reset-before": (GRUCell(linear_before_reset=False), {}),
    "elman-options": (ElmanCell("leaky_relu", clip=0.9, leak=0.7), {}),  # the portable loop per chunk
}


def _cell_problem(rng, name, *, T=6, B=10, dtype="float64"):
    """``(cell, x, state0, w)``: NumPy arrays of ``dtype``, time-major, as the kernels take them."""
    cell, shape = CELLS[name]
    a = {k: v.astype(dtype) for k, v in cell_arrays(rng, cell.name, T=T, batch=(B,), D=3, H=5, **shape).items()}
    if cell.name == "lstm":
        state0 = (a["h0"], a["c0"])
        w = LSTMWeights(a["W_ih"], a["W_hh"], a["b_ih"], a["b_hh"], a.get("W_hr"), a.get("peepholes"))
    elif cell.name == "gru":
        state0, w = (a["h0"],), GRUWeights(a["W_ih"], a["W_hh"], a["b_ih"], a["b_hh"])
    else:
        state0, w = (a["h0"],), ElmanWeights(a["Wx"], a["Wh"], a["b"])
    return cell, a["x"], state0, w


def _run_options(rng, variant, T, B):
    """``lengths`` (with 0 and T), a mask (time-major) or neither, and ``reverse``."""
    lengths = mask = None
    if "lengths" in variant:
        lengths = rng.integers(0, T + 1, size=B)
        lengths[:2] = (0, T)
    if "mask" in variant:
        mask = np.ascontiguousarray(random_mask(rng, (B,), T).T)  # (T, B)
    return dict(lengths=lengths, mask=mask, reverse="reverse" in variant)


def _chunk_slices(chunks):
    start = 0
    for n in chunks:
        yield slice(start, start + n)
        start += n


def _cells_per_chunk_forward(cell, x, state0, w, run, chunks, return_sequences=True):
    """NumPy's kernel (the table's) over each batch chunk in turn, concatenated along the batch."""
    seqs, finals = [], []
    for sl in _chunk_slices(chunks):
        s, f = kernel_scan(npx, cell, np.ascontiguousarray(x[:, sl]), tuple(q[sl] for q in state0), w,
                           lengths=None if run["lengths"] is None else run["lengths"][sl],
                           mask=None if run["mask"] is None else np.ascontiguousarray(run["mask"][:, sl]),
                           reverse=run["reverse"], return_sequences=return_sequences)  # fmt: skip
        seqs.append(s)
        finals.append(f)
    cat = lambda parts, axis: tuple(np.concatenate(p, axis=axis) for p in zip(*parts))  # noqa: E731
    return (cat(seqs, 1) if return_sequences else None), cat(finals, 0)


def _cells_per_chunk_backward(cell, d_out, x, state0, w, seqs, d_finals, run, chunks, every=4):
    """NumPy's backward per chunk: dx and dstate0 concatenated, the weights' gradients added in tree order."""
    dxs, dstates, dws = [], [], []
    for sl in _chunk_slices(chunks):
        seq = lambda q: None if q is None else np.ascontiguousarray(q[:, sl])  # noqa: E731
        d = tuple(seq(q) for q in d_out)
        dx, ds, dw = kernel_backward(
            npx, cell, d if len(d) > 1 else d[0], seq(x), tuple(q[sl] for q in state0), w,
            tuple(seq(q) for q in seqs), tuple(None if q is None else q[sl] for q in d_finals),
            lengths=None if run["lengths"] is None else run["lengths"][sl],
            mask=None if run["mask"] is None else np.ascontiguousarray(run["mask"][:, sl]), reverse=run["reverse"],
        )  # fmt: skip
        dxs.append(dx)
        dstates.append(ds)
        dws.append(dw)
    dw = type(w)(*(None if a is None else tree_order_sum([g[i] for g in dws], every) for i, a in enumerate(w)))
    return np.concatenate(dxs, axis=1), tuple(np.concatenate(p, axis=0) for p in zip(*dstates)), dw


def _dask_seq(a, chunks):
    return None if a is None else da.from_array(a, chunks=(-1, chunks, -1))


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
@pytest.mark.parametrize("variant", ["lengths-reverse", "mask"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cells_equal_numpy_per_chunk(rng, cell, variant, scheduler):
    """Forward and backward of every cell: the table's NumPy kernel per chunk, bit for bit, weight sums in tree order."""
    dtype = "float32"  # rounding shows: the sums' order is checked, not only the values
    T, B = 6, 10
    c, x, state0, w = _cell_problem(rng, cell, T=T, B=B, dtype=dtype)
    run = _run_options(rng, variant, T, B)
    dask_run = dict(run, lengths=None if run["lengths"] is None else da.from_array(run["lengths"], chunks=2),
                    mask=None if run["mask"] is None else da.from_array(run["mask"], chunks=(-1, 5)))  # fmt: skip
    xd = da.from_array(x, chunks=(-1, 3, -1))  # chunks (3, 3, 3, 1): the tree has two levels
    seqs, finals = kernel_scan(dxp, c, xd, state0, w, return_sequences=True, **dask_run)
    assert all(isinstance(a, da.Array) and a.chunks[-2] == (3, 3, 3, 1) for a in (*seqs, *finals))
    want_seqs, want_finals = _cells_per_chunk_forward(c, x, state0, w, run, (3, 3, 3, 1))
    with dask.config.set(scheduler=scheduler):
        for got, want in zip((*seqs, *finals), (*want_seqs, *want_finals)):
            np.testing.assert_array_equal(got.compute(), want)

        # the backward, from the NumPy forward's states; a gradient reaching every part of the state
        np_seqs, _ = kernel_scan(npx, c, x, state0, w, return_sequences=True, **run)
        d_out = tuple(rng.standard_normal(q.shape).astype(dtype) for q in np_seqs)
        d_finals = (rng.standard_normal(state0[0].shape).astype(dtype),) + (None,) * (len(state0) - 1)
        d = tuple(_dask_seq(q, 4) for q in d_out)  # an array for one part (Elman's kernels take no tuple)
        g = kernel_backward(dxp, c, d if len(d) > 1 else d[0], xd, state0, w,
                            tuple(_dask_seq(q, 5) for q in np_seqs), d_finals, **dask_run)  # aligned to x
        dx, dstate0, dw = dask.compute(*g)
    want_dx, want_dstate0, want_dw = _cells_per_chunk_backward(c, d_out, x, state0, w, np_seqs, d_finals, run,
                                                               (3, 3, 3, 1))  # fmt: skip
    assert g[0].chunks == xd.chunks and all(q.chunks[0] == (3, 3, 3, 1) for q in g[1])
    np.testing.assert_array_equal(dx, want_dx)
    for got, want in zip(dstate0, want_dstate0):
        np.testing.assert_array_equal(got, want)
    for name, got, want in zip(w._fields, dw, want_dw):
        if want is None:
            assert got is None, name
        else:
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)


def _public(cell, x, state0, w, **kw):
    """``lstm_forward``/``gru_forward`` (``rnn_forward`` for Elman) with the cell's weights; the output first."""
    if cell.name == "lstm":
        out, finals, c_seq = rnn_xp.lstm_forward(x, state0, w.W_ih, w.W_hh, w.b_ih, w.b_hh, W_hr=w.W_hr,
                                                 peepholes=w.peepholes, return_c_seq=True, **kw)  # fmt: skip
        return (out, c_seq), finals
    if cell.name == "gru":
        return (rnn_xp.gru_forward(x, state0[0], *w, **kw),), None
    return (rnn_xp.rnn_forward(x, state0[0], *w, nonlinearity=cell.nonlinearity, clip=cell.clip, leak=cell.leak,
                               **kw),), None  # fmt: skip


def _public_backward(cell, d_out, x, state0, w, seqs, **kw):
    if cell.name == "lstm":
        return rnn_xp.lstm_backward(d_out, x, state0, w.W_ih, w.W_hh, w.b_ih, w.b_hh, *seqs, W_hr=w.W_hr,
                                    peepholes=w.peepholes, **kw)  # fmt: skip
    if cell.name == "gru":
        return rnn_xp.gru_backward(d_out, x, state0[0], *w, seqs[0], **kw)
    return rnn_xp.rnn_backward(d_out, x, state0[0], *w, seqs[0], nonlinearity=cell.nonlinearity, clip=cell.clip,
                               leak=cell.leak, **kw)  # fmt: skip


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman-options"])
def test_cells_tasks_independent_of_T(rng, cell):
    """lstm_forward/gru_forward and their backward on a Dask batch: one task per batch chunk at T = 10 and 100."""
    sizes = []
    for T in (10, 100):
        c, x, state0, w = _cell_problem(rng, cell, T=T, B=12)
        lengths = rng.integers(0, T + 1, size=12)
        xd = da.from_array(x, chunks=(-1, 3, -1))  # 4 chunks
        seqs, _ = _public(c, xd, state0, w, lengths=da.from_array(lengths, chunks=3))
        d_out = da.from_array(rng.standard_normal(seqs[0].shape), chunks=(-1, 3, -1))
        g = _public_backward(c, d_out, xd, state0, w, seqs, lengths=lengths)
        arrays = [a for a in g if a is not None]
        assert all(isinstance(a, da.Array) for a in arrays)
        assert _tasks(arrays, TOKEN) == 4, "one forward task per batch chunk, shared by every gradient"
        assert _tasks(arrays, BACKWARD_TOKEN) == 4
        sizes.append(len(_graph(arrays)))
        np_seqs, _ = _public(c, x, state0, w, lengths=lengths)
        want = _public_backward(c, d_out.compute(), x, state0, w, np_seqs, lengths=lengths)
        for name, got, ref in zip(g._fields, dask.compute(*arrays), [a for a in want if a is not None]):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13, err_msg=name)
    assert sizes[0] == sizes[1], f"graph grows with T: {sizes}"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("edge", ["T=0", "B=0", "nan-padding", "no-state"])
def test_cells_edges_give_the_portable_answer(rng, cell, edge):
    """The edge catalogue on Dask against the portable loop on NumPy: sizes 0, NaN past a length, no initial state."""
    T, B = (0, 6) if edge == "T=0" else (5, 0) if edge == "B=0" else (5, 6)
    c, x, state0, w = _cell_problem(rng, cell, T=T, B=B)
    lengths = np.resize(np.array([0, T, min(2, T)]), B)
    if edge == "nan-padding":
        x[T - 1, 0, :] = np.nan  # past the length of sequence 0 (0): reaches nothing
        x[3:, 2, :] = np.inf  # past the length of sequence 2 (2)
    if edge == "no-state":
        state0 = tuple(np.zeros_like(s) for s in state0)
    xd = da.from_array(x, chunks=(-1, 4, -1))
    given = (None,) * len(state0) if edge == "no-state" else state0  # the public functions make the zeros
    with np.errstate(invalid="ignore"):  # NaN and Inf in the padding's products
        _edges_check(c, x, xd, state0, given, w, lengths, rng)


def _edges_check(c, x, xd, state0, given, w, lengths, rng):
    from rnn_xp.kernels.portable import backward_cell, scan_cell

    seqs, finals = _public(c, xd, given, w, lengths=lengths)
    want_seqs, want_finals = scan_cell(npx, c, x, state0, w, lengths=lengths, reverse=False, return_sequences=True)
    np.testing.assert_allclose(seqs[0].compute(), want_seqs[0], rtol=1e-12, atol=1e-13)
    d_out = rng.standard_normal(want_seqs[0].shape)
    g = _public_backward(c, d_out, xd, given, w, seqs, lengths=lengths)
    want = backward_cell(npx, c, d_out, x, state0, w, want_seqs, (None,) * len(state0), lengths=lengths,
                         reverse=False)  # fmt: skip
    got = [a for a in dask.compute(*g) if a is not None]
    flat = [want[0], *want[1], *(a for a in want[2] if a is not None)]
    assert len(got) == len(flat)
    for a, b in zip(got, flat):
        assert np.all(np.isfinite(a)), "padding reached a gradient"
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_cells_rechunk_warnings(rng):
    """An LSTM's inputs chunked along time or features: rechunked, with a warning naming each."""
    c, x, state0, w = _cell_problem(rng, "lstm", T=6, B=8)
    xd = da.from_array(x, chunks=(2, 4, -1))  # along time
    c0 = da.from_array(state0[1], chunks=(4, 2))  # along features
    with pytest.warns(da.PerformanceWarning) as record:
        seqs, finals = _public(c, xd, (state0[0], c0), w)
    messages = [str(r.message) for r in record]
    assert any("x is chunked along time" in m for m in messages), messages
    assert any("c0 is chunked along features" in m for m in messages), messages
    assert record[0].filename == __file__
    assert seqs[0].chunks[1] == (4, 4) and _tasks(list(seqs), TOKEN) == 2
    c_seq = seqs[1].rechunk((2, 4, -1))
    with pytest.warns(da.PerformanceWarning, match="c_seq is chunked along time"):
        g = _public_backward(c, np.ones(seqs[0].shape), da.from_array(x, chunks=(-1, 4, -1)), state0, w,
                             (seqs[0], c_seq))  # fmt: skip
    want = _public_backward(c, np.ones(seqs[0].shape), x, state0, w, tuple(q.compute() for q in seqs))
    np.testing.assert_allclose(g.dW_hh.compute(), want.dW_hh, rtol=1e-12, atol=1e-13)


def test_cells_local_cluster(cluster, rng):
    """LSTM and GRU forward and backward on two worker processes (the cells travel pickled): NumPy's bits per chunk."""
    distributed = pytest.importorskip("dask.distributed")
    _, client = cluster
    run = {"lengths": None, "mask": None, "reverse": True}
    lazy, refs = [], []
    for cell in ("lstm", "gru-reset-before"):
        c, x, state0, w = _cell_problem(rng, cell, T=5, B=12, dtype="float32")
        run["lengths"] = rng.integers(0, 6, size=12)
        xd = da.from_array(x, chunks=(-1, 2, -1))  # 6 chunks: a tree of two levels
        seqs, finals = kernel_scan(dxp, c, xd, state0, w, return_sequences=True, **run)
        np_seqs, _ = kernel_scan(npx, c, x, state0, w, return_sequences=True, **run)
        d_out = rng.standard_normal(np_seqs[0].shape).astype("float32")
        dx, dstate0, dw = kernel_backward(dxp, c, d_out, xd, state0, w, np_seqs, (None,) * len(state0), **run)
        lazy.append([*seqs, *finals, dx, *dstate0, *(a for a in dw if a is not None)])
        want_seqs, want_finals = _cells_per_chunk_forward(c, x, state0, w, run, (2,) * 6)
        want_dx, want_dstate0, want_dw = _cells_per_chunk_backward(
            c, (d_out,) + (None,) * (len(state0) - 1), x, state0, w, np_seqs, (None,) * len(state0), run, (2,) * 6,
        )  # fmt: skip
        refs.append([*want_seqs, *want_finals, want_dx, *want_dstate0, *(a for a in want_dw if a is not None)])
    with distributed.get_task_stream(client) as stream:
        results = client.compute(lazy, sync=True)  # every case in one call
    for got, want in zip(results, refs):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    workers = set(client.scheduler_info()["workers"])
    ran_on = {t["worker"] for t in stream.data if t["key"][0].startswith(BACKWARD_TOKEN)}
    assert ran_on == workers, "the backward tasks did not use both worker processes"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cells_cupy_chunks(rng, cell):
    """Dask arrays of CuPy chunks: each task runs CuPy's kernels for the cell (the fused steps, the portable backward)."""
    make_backend("cupy")  # skips: cupy not installed, or no CUDA device
    import cupy

    c, x, state0, w = _cell_problem(rng, cell, T=6, B=10, dtype="float32")
    lengths = rng.integers(0, 7, size=10)
    xd = da.from_array(cupy.asarray(x), chunks=(-1, 4, -1))
    wd = type(w)(*(None if a is None else da.from_array(cupy.asarray(a)) for a in w))
    seqs, finals = _public(c, xd, (None,) * len(state0), wd, lengths=[int(v) for v in lengths])  # NumPy-made states
    assert isinstance(seqs[0]._meta, cupy.ndarray)
    want, _ = _public(c, x, (None,) * len(state0), w, lengths=lengths)
    np.testing.assert_allclose(seqs[0].compute().get(), want[0], rtol=2e-4, atol=2e-5)
    g = _public_backward(c, xd.map_blocks(lambda b: cupy.ones((b.shape[0], b.shape[1], want[0].shape[-1]),
                                                              b.dtype), chunks=(6, (4, 4, 2), want[0].shape[-1])),
                         xd, (None,) * len(state0), wd, seqs, lengths=lengths)  # fmt: skip
    g_want = _public_backward(c, np.ones(want[0].shape, "float32"), x, (None,) * len(state0), w, want, lengths=lengths)
    np.testing.assert_allclose(g.dW_hh.compute().get(), g_want.dW_hh, rtol=2e-3, atol=2e-4)
