"""Training on Dask (``python -m rnn_xp train --backend dask``): one task per batch chunk, one compute per step.

The batch is a set of NumPy chunks, one per worker thread; the weights stay
NumPy arrays in this process. ``OnDask`` runs a training step's loss and
gradients as one graph on Dask's threads, the synchronous scheduler, a
``LocalCluster`` of two worker processes, or a running cluster by its
address; reaching a cluster fails fast, in one line (``check_address``,
``SchedulerUnavailable``). ``rnn_xp.cli.train`` holds the model and the loop.
"""

from __future__ import annotations

import math
import os
import sys

__all__ = [
    "ADDRESS_SCHEMES", "CONNECT_TIMEOUT_S", "SCHEDULERS", "WORKERS_TIMEOUT_S", "OnDask", "SchedulerUnavailable",
    "check_address", "chunk_step",
]  # fmt: skip

SCHEDULERS = ("threads", "synchronous", "local-cluster")  # or a cluster's address, tcp://host:port
ADDRESS_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")  # dask.distributed's, but inproc (this process only)
CONNECT_TIMEOUT_S = 10.0  # to reach a scheduler's address
WORKERS_TIMEOUT_S = 60.0  # for the first worker of a cluster to join


class SchedulerUnavailable(RuntimeError):
    """The Dask scheduler cannot be reached, or no worker joined it in time; ``flag`` is the timeout's flag."""

    def __init__(self, message, flag):
        super().__init__(message)
        self.flag = flag


def check_address(address):
    """``(scheme, host, port)`` of a Dask scheduler's address ``scheme://host:port``, or a ``ValueError``.

    Checked before any connection, so that a typo fails at once rather than
    after the client's own timeouts.

    >>> from rnn_xp.cli.train import check_address
    >>> check_address("tcp://127.0.0.1:8786"), check_address("tls://[::1]:8786")
    (('tcp', '127.0.0.1', 8786), ('tls', '::1', 8786))
    >>> check_address("tcp://127.0.0.1")
    Traceback (most recent call last):
        ...
    ValueError: needs a host and a port, tcp://host:port; got 'tcp://127.0.0.1'
    """
    scheme, sep, rest = str(address).partition("://")
    if not sep or scheme not in ADDRESS_SCHEMES:
        known = ", ".join(ADDRESS_SCHEMES)
        raise ValueError(f"unknown address scheme {scheme if sep else ''!r} (known: {known}); got {address!r}")
    host, sep, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
    if not sep or not host or not port:
        raise ValueError(f"needs a host and a port, {scheme}://host:port; got {address!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"the port must be an integer from 1 to 65535, not {port!r}; got {address!r}")
    return scheme, host, int(port)


class OnDask:
    """Dask: one task per batch chunk, NumPy weights here, one compute per step.

    The batch is cut along its batch axis into one chunk per worker thread.
    Each step is one graph: a task per chunk runs ``step`` (the model's
    ``rnn_xp.cli.train.loss_and_grads``) on the
    chunk (``rnn_forward`` and ``rnn_backward`` on NumPy arrays, the mean
    taken over the whole batch), and ``kernels.dask.tree_sum`` adds the
    chunks' losses and gradients in a fixed order. Only the weights travel
    to the workers and only the gradients come back. (The read-out and the
    loss are a few small products per chunk: as Dask array operations they
    would cost a graph of dozens of tasks per step, more than the math at
    the tutorial's size.)

    ``scheduler`` is a name of ``SCHEDULERS`` or a scheduler's address; a
    ``LocalCluster`` is started on entry and closed on exit. An address is
    first reached with a plain TCP connection, so that a refused or silent
    port fails within ``connect_timeout`` seconds; then the client waits
    ``workers_timeout`` seconds at most for a worker.
    """

    def __init__(self, dtype, scheduler, step, timeouts=(CONNECT_TIMEOUT_S, WORKERS_TIMEOUT_S)):
        import array_api_compat.numpy as np_xp

        self.xp, self.device, self._dtype, self._step = np_xp, "cpu", dtype, step
        self._name = scheduler or "threads"
        self._connect_timeout, self._workers_timeout = timeouts
        self._client = self._cluster = self._environ = None
        self._steps = 0

    def __enter__(self):
        import dask.local
        import dask.threaded

        if self._name in ("threads", "synchronous"):
            self._get = dask.threaded.get if self._name == "threads" else dask.local.get_sync
            self._threads = (os.cpu_count() or 1) if self._name == "threads" else 1
            return self
        from dask.distributed import Client, LocalCluster  # only for a cluster

        try:
            if self._name == "local-cluster":
                # distributed's nanny writes OMP/MKL/OPENBLAS_NUM_THREADS=1 into this
                # process's environment to start its workers; __exit__ puts it back
                self._environ = dict(os.environ)
                self._cluster = LocalCluster(
                    n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                    dashboard_address=None,
                )  # fmt: skip
            else:
                self._reach(self._name)
            self._client = _client(Client, self._cluster or self._name, self._connect_timeout)
            try:
                self._client.wait_for_workers(1, timeout=self._workers_timeout)
            except TimeoutError:
                raise SchedulerUnavailable(
                    f"no worker joined the Dask scheduler at {self._address()} within "
                    f"{self._workers_timeout:g} s", "--workers-timeout",
                ) from None  # fmt: skip
        except BaseException:
            self.__exit__()
            raise
        self._get = self._client.get
        workers = self._client.scheduler_info()["workers"].values()
        self._threads = sum(w["nthreads"] for w in workers)
        return self

    def _address(self):
        return self._cluster.scheduler_address if self._cluster is not None else self._name

    def _reach(self, address):
        """A TCP connection to the scheduler's port: refused or unanswered, fail within the connect timeout."""
        import socket

        _, host, port = check_address(address)
        try:
            socket.create_connection((host, port), timeout=self._connect_timeout).close()
        except OSError as exc:
            if isinstance(exc, ConnectionRefusedError):
                why = "connection refused"
            elif isinstance(exc, (socket.timeout, TimeoutError)):
                why = f"no answer within {self._connect_timeout:g} s"
            else:
                why = exc.strerror or str(exc)
            raise SchedulerUnavailable(f"cannot reach the Dask scheduler at {address}: {why}",
                                       f"--connect-timeout {self._connect_timeout:g}") from None  # fmt: skip

    def __exit__(self, *exc):
        for resource in (self._client, self._cluster):
            if resource is not None:
                resource.close()
        if self._environ is not None:
            _restore_environ(self._environ)
            self._environ = None
        self._client = self._cluster = None
        return False

    def data(self, a):
        """A NumPy batch ``(T, B, F)`` or ``(B, F)`` cut into one chunk per worker thread."""
        axis = a.ndim - 2  # the batch axis
        n = a.shape[axis]
        size = -(-n // max(1, min(self._threads, n)))  # ceil(n / chunks)
        a = a.astype(self._dtype)
        return tuple(a[(slice(None),) * axis + (slice(i, i + size),)] for i in range(0, n, size))

    def loss_and_grads(self, task, params, x, y, *, with_grads=True):
        """The batch's loss and gradients (NumPy), from one graph computed in one call."""
        from ..kernels.dask import tree_sum

        self._steps += 1
        name = f"rnn_xp-train-{os.getpid()}-{self._steps}"
        count = sum(math.prod(c.shape) for c in y)  # terms of the whole batch's mean
        dsk = {(name, "params"): params}
        chunks = []
        for i, (xc, yc) in enumerate(zip(x, y)):
            dsk[(name, 0, i)] = (chunk_step, self._step, task, (name, "params"), xc, yc, with_grads, count)
            chunks.append((name, 0, i))
        sums, root = tree_sum(chunks, name)
        dsk.update(sums)
        return self._get(dsk, root)

    def describe(self):
        threads = f"{self._threads} worker thread" + "s" * (self._threads != 1)
        return f", Dask scheduler {self._name}, {threads}, one task per batch chunk"


def chunk_step(step, task, params, x, y, with_grads, count):
    """One task: ``step`` (``loss_and_grads``) on one batch chunk, in NumPy, the mean over ``count`` terms."""
    import array_api_compat.numpy as np_xp

    return step(np_xp, task, params, x, y, with_grads=with_grads, count=count)


def _client(Client, address, timeout):
    """A ``dask.distributed.Client`` of ``address``, or ``SchedulerUnavailable`` in one line.

    A client whose start fails is half made, and its ``__del__`` prints a
    traceback when it is collected: it is collected here, quietly. Whatever
    else answers on a port (a web server) makes the client read a length of
    exabytes from its first bytes: a ``MemoryError`` that says only that.
    """
    import gc

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except MemoryError:
        message = f"cannot reach the Dask scheduler at {address}: what answers there is no Dask scheduler"
    except Exception as exc:  # OSError (TimeoutError among them), ValueError, a protocol error...
        message = f"cannot reach the Dask scheduler at {address}: {exc or type(exc).__name__}"
    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise SchedulerUnavailable(message, f"--connect-timeout {timeout:g}")


def _restore_environ(saved):
    """``os.environ`` as ``saved``: the names added since removed, the values changed since put back."""
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
