"""``train --backend dask``: one task per batch chunk, one compute per step, NumPy's numbers.

Each chunk's task runs ``loss_and_grads`` in NumPy with the whole batch's
mean, and ``kernels.dask.tree_sum`` adds the chunks' losses and gradients in
a fixed order, so the step's results must equal those chunks' NumPy results
added in that order (bit for bit), match the Dask-array path through
``rnn_forward``/``rnn_backward`` on Dask arrays and NumPy on the whole batch
(to rounding), and be the same bits on every scheduler.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import array_api_compat.numpy as np_xp  # noqa: E402

from rnn_xp.cli import main  # noqa: E402
from rnn_xp.cli import train as tr  # noqa: E402
from support import tree_order_sum  # noqa: E402


def _batch(task, B, T=7, H=6, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    params = tr.init_params(rng, 1 if task == "sine" else 2, H, np_xp, dtype, "cpu")
    x, y = tr.make_batch(rng, task, B, T)
    return params, x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("task", ["sine", "adding"])
@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_step_equals_chunks_in_tree_order(task, scheduler):
    params, x, y = _batch(task, B=11)
    with tr._OnDask("float64", scheduler) as run:
        run._threads = 6  # six chunks (2, 2, 2, 2, 2, 1): a tree of two levels
        xs, ys = run.data(x), run.data(y)
        assert [c.shape[1] for c in xs] == [2, 2, 2, 2, 2, 1] and len(ys) == 6
        loss, grads = run.loss_and_grads(task, params, xs, ys)
    n = y.size
    per_chunk = [tr.loss_and_grads(np_xp, task, params, xc, yc, count=n) for xc, yc in zip(xs, ys)]
    assert loss == tree_order_sum([p[0] for p in per_chunk])
    for k in params:
        np.testing.assert_array_equal(grads[k], tree_order_sum([p[1][k] for p in per_chunk]), err_msg=k)
    # NumPy on the whole batch, and the Dask-array path (rnn_backward on Dask arrays): to rounding
    whole_loss, whole = tr.loss_and_grads(np_xp, task, params, x, y)
    import array_api_compat.dask.array as dask_xp

    chunked = lambda a: da.from_array(a, chunks=(-1,) * (a.ndim - 2) + (3, -1))  # noqa: E731
    lazy_loss, lazy = dask.compute(tr.loss_and_grads(dask_xp, task, params, chunked(x), chunked(y)))[0]
    np.testing.assert_allclose(loss, whole_loss, rtol=1e-13)
    np.testing.assert_allclose(loss, lazy_loss, rtol=1e-13)
    for k in params:
        np.testing.assert_allclose(grads[k], whole[k], rtol=1e-11, atol=1e-14, err_msg=k)
        np.testing.assert_allclose(grads[k], lazy[k], rtol=1e-11, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_train_follows_numpy(scheduler):
    """The same run as on NumPy, to rounding (the chunks' sums are added in another order)."""
    kw = dict(steps=12, seq_len=8, hidden=6, batch=9, dtype="float64", quiet=True)
    run = tr.train("sine", backend="dask", scheduler=scheduler, **kw)
    numpy_run = tr.train("sine", backend="numpy", **kw)
    np.testing.assert_allclose(run.losses, numpy_run.losses, rtol=1e-9)
    np.testing.assert_allclose(run.final_loss, numpy_run.final_loss, rtol=1e-9)
    assert isinstance(run.params["Wh"], np.ndarray)  # the weights stay NumPy arrays


def test_one_compute_per_step(monkeypatch):
    calls = []
    original = tr._OnDask.loss_and_grads

    def counted(self, *args, **kwargs):
        get = self._get
        self._get = lambda dsk, key: calls.append(key) or get(dsk, key)
        try:
            return original(self, *args, **kwargs)
        finally:
            self._get = get

    monkeypatch.setattr(tr._OnDask, "loss_and_grads", counted)
    r = tr.train("sine", backend="dask", steps=5, seq_len=6, hidden=4, quiet=True)
    assert len(calls) == 5 + 2  # one per step, and the evaluation before and after
    assert r.final_loss < r.initial_loss


def test_cli_local_cluster(capsys):
    pytest.importorskip("dask.distributed")
    assert main(["train", "--backend", "dask", "--scheduler", "local-cluster", "--steps", "4",
                 "--seq-len", "6", "--hidden", "4", "--log-every", "2", "--plot", "none"]) == 0
    out = capsys.readouterr().out
    assert "Dask scheduler local-cluster, 2 worker threads, one task per batch chunk" in out
    assert "step      4/4" in out and "final loss" in out


def test_cluster_address_gives_the_threaded_numbers():
    distributed = pytest.importorskip("dask.distributed")
    kw = dict(steps=3, seq_len=6, hidden=4, batch=8, dtype="float64", quiet=True)
    with distributed.LocalCluster(
        n_workers=1, processes=False, threads_per_worker=2, protocol="tcp", host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        remote = tr.train("sine", backend="dask", scheduler=cluster.scheduler_address, **kw)
    local = tr.train("sine", backend="dask", scheduler="threads", **kw)
    if (os.cpu_count() or 1) == 2:  # two worker threads either way: the same chunks, the same bits
        assert remote.losses == local.losses
    np.testing.assert_allclose(remote.losses, local.losses, rtol=1e-12)


@pytest.mark.parametrize("argv,message", [
    (["--scheduler", "threads"], "--scheduler: is for --backend dask"),
    (["--backend", "dask", "--scheduler", "gpu"], "--scheduler: must be one of threads, synchronous"),
])  # fmt: skip
def test_cli_scheduler_errors(capsys, argv, message):
    try:
        code = main(["train", "--steps", "1", "--plot", "none", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
