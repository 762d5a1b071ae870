"""``train --backend dask``: one task per batch chunk, one compute per step, NumPy's numbers.

Each chunk's task runs ``loss_and_grads`` in NumPy with the whole batch's
mean, and ``kernels.dask.tree_sum`` adds the chunks' losses and gradients in
a fixed order, so the step's results must equal those chunks' NumPy results
added in that order (bit for bit), match the Dask-array path through
``rnn_forward``/``rnn_backward`` on Dask arrays and NumPy on the whole batch
(to rounding), and be the same bits on every scheduler.

A scheduler that cannot be used fails fast in one line: a malformed address
before any connection (exit 2), a refused port, a port where something else
answers, a scheduler without workers after ``--workers-timeout`` (exit 1),
each checked in a process of its own within a time bound. The tests that
start processes are marked ``long`` (the README's command runs them).
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
from rnn_xp.cli.train_dask import OnDask  # noqa: E402
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
    with OnDask("float64", scheduler, tr.loss_and_grads) as run:
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
    original = OnDask.loss_and_grads

    def counted(self, *args, **kwargs):
        get = self._get
        self._get = lambda dsk, key: calls.append(key) or get(dsk, key)
        try:
            return original(self, *args, **kwargs)
        finally:
            self._get = get

    monkeypatch.setattr(OnDask, "loss_and_grads", counted)
    r = tr.train("sine", backend="dask", steps=5, seq_len=6, hidden=4, quiet=True)
    assert len(calls) == 5 + 2  # one per step, and the evaluation before and after
    assert r.final_loss < r.initial_loss


@pytest.mark.long  # two worker processes start
def test_cli_local_cluster(capsys, monkeypatch):
    pytest.importorskip("dask.distributed")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    assert main(["train", "--backend", "dask", "--scheduler", "local-cluster", "--steps", "4",
                 "--seq-len", "6", "--hidden", "4", "--log-every", "2", "--plot", "none"]) == 0
    out = capsys.readouterr().out
    assert "Dask scheduler local-cluster, 2 worker threads, one task per batch chunk" in out
    assert "step      4/4" in out and "final loss" in out
    # the cluster's workers run on one BLAS thread each; the caller's environment is left as it was
    assert dict(os.environ) == before


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
    (["--scheduler", "synchronous"], "--scheduler: is for --backend dask (with another backend only its "
                                     "default, threads, is accepted); got --backend numpy"),
    (["--backend", "dask", "--scheduler", "gpu"], "--scheduler: must be one of threads, synchronous"),
])  # fmt: skip
def test_cli_scheduler_errors(capsys, argv, message):
    try:
        code = main(["train", "--steps", "1", "--plot", "none", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


# -- a scheduler that cannot be used: fail fast, one line (issue 25, #2) ------------------------


def _train_cli(*argv, timeout=90):
    """``python -m rnn_xp train --backend dask ARGV`` in a process of its own: (exit code, stderr, seconds)."""
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rnn_xp", "train", "--backend", "dask", "--steps", "1",
                           "--plot", "none", *argv], capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return proc.returncode, proc.stderr, time.perf_counter() - t0


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.long  # a process of its own, importing dask.distributed
def test_a_refused_connection_fails_fast_in_one_line():
    pytest.importorskip("dask.distributed")
    address = f"tcp://127.0.0.1:{_free_port()}"
    code, err, seconds = _train_cli("--scheduler", address, "--connect-timeout", "3")
    assert code == 1, err
    assert err.strip().splitlines() == [f"python -m rnn_xp train: error: cannot reach the Dask scheduler at "
                                        f"{address}: connection refused (--connect-timeout 3)"], err  # fmt: skip
    assert seconds < 30  # the interpreter and dask's imports; the connection itself fails at once


@pytest.mark.long  # a process of its own; the half-made client takes seconds to close
def test_a_port_that_is_no_dask_scheduler_fails_fast_in_one_line():
    """A web server's answer read as a Dask message asked for exabytes: one line, no client left behind."""
    pytest.importorskip("dask.distributed")
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed
                return
            with conn:
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello" * 4)

    threading.Thread(target=answer, daemon=True).start()
    try:
        code, err, seconds = _train_cli("--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "3")
    finally:
        server.close()
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m rnn_xp train: error: cannot reach the Dask "
                                                   f"scheduler at tcp://127.0.0.1:{port}: "), err  # fmt: skip
    assert "__del__" not in err and seconds < 40


@pytest.mark.long  # a process of its own, and the 2 s wait
def test_a_scheduler_without_workers_gives_up_after_the_wait_in_one_line():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:  # fmt: skip
        code, err, seconds = _train_cli("--scheduler", cluster.scheduler_address, "--workers-timeout", "2")
    assert code == 1, err
    assert err.strip().splitlines() == [f"python -m rnn_xp train: error: no worker joined the Dask scheduler at "
                                        f"{cluster.scheduler_address} within 2 s (--workers-timeout)"], err  # fmt: skip
    assert seconds < 30


@pytest.mark.parametrize("address, message", [
    ("foo://bar", "unknown address scheme 'foo' (known: tcp, tls, ws, wss, ucx)"),
    ("tcp://", "needs a host and a port, tcp://host:port"),
    ("tcp://127.0.0.1", "needs a host and a port, tcp://host:port"),
    ("tcp://:8786", "needs a host and a port, tcp://host:port"),
    ("tcp://127.0.0.1:abc", "the port must be an integer from 1 to 65535, not 'abc'"),
    ("tcp://127.0.0.1:70000", "the port must be an integer from 1 to 65535, not '70000'"),
])  # fmt: skip
def test_a_bad_address_is_a_usage_error_naming_the_flag(capsys, address, message):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--backend", "dask", "--scheduler", address])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"python -m rnn_xp train: error: argument --scheduler: {message}; got {address!r} (see --help)"


def test_a_bad_address_leaves_no_client_behind():
    """In a process of its own: one line at once, and no ``Client.__del__`` traceback at exit."""
    pytest.importorskip("dask.distributed")
    code, err, seconds = _train_cli("--scheduler", "foo://bar")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "__del__" not in err, err
    assert seconds < 30


@pytest.mark.parametrize("argv, message", [
    (["--connect-timeout", "5"], "argument --connect-timeout: is for --backend dask with --scheduler "
                                 "local-cluster or a scheduler's address"),
    (["--backend", "dask", "--workers-timeout", "5"], "argument --workers-timeout: is for --backend dask with "
                                                      "--scheduler local-cluster or a scheduler's address"),
    (["--backend", "dask", "--scheduler", "local-cluster", "--workers-timeout", "0"],
     "argument --workers-timeout: must be a finite number above 0; got '0'"),
])  # fmt: skip
def test_timeouts_need_a_cluster(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_timeouts_help_names_the_defaults_train_uses():
    from rnn_xp.cli import build_parser

    train_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    helps = {a.dest: a.help for a in train_parser._actions}
    assert f"(default: {tr.CONNECT_TIMEOUT_S:g})" in helps["connect_timeout"]
    assert f"(default: {tr.WORKERS_TIMEOUT_S:g})" in helps["workers_timeout"]


def test_train_function_checks_the_address():
    with pytest.raises(ValueError, match=r"scheduler: unknown address scheme 'foo'"):
        tr.train("sine", backend="dask", scheduler="foo://bar", quiet=True)
    with pytest.raises(ValueError, match=r"connect_timeout must be a finite number above 0; got -1"):
        tr.train("sine", backend="dask", scheduler="tcp://127.0.0.1:8786", connect_timeout=-1, quiet=True)
