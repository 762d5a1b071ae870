"""Threads the CPU kernels hold: BLAS on one thread for small steps, and the compiled loops' workers.

BLAS on one thread (``blas_threads(1)``)
    A small product ``(B, H) @ (H, H)`` runs faster on one BLAS thread than
    on several (waking a second thread costs more than it saves), and the
    compiled loop's threads each call BLAS for their own rows: there, BLAS
    must not start threads of its own. BLAS thread counts are process-wide,
    so calls that overlap (several threads, Dask's worker threads) share one
    limit: the first block to enter saves the counts and sets one thread, the
    last to leave puts the saved counts back.

The compiled loops' worker threads (``run_parallel``)
    A pool of threads, made on first use, runs the compiled loops' blocks of
    rows or columns without the GIL. A process made by ``fork()`` has none of
    its parent's threads: it makes a pool of its own.

Both are made safe across ``fork()`` by an ``os.register_at_fork`` handler.
"""

from __future__ import annotations

import os
import threading

__all__ = ["SERIAL_MACS", "blas_threads", "run_parallel"]

# The recurrent product (B, H) @ (H, H) runs on one BLAS thread below this many
# multiply-adds: there, waking a second thread costs more than it saves.
SERIAL_MACS = 1 << 20


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- BLAS on one thread ----------------------------------------------------------------

_CONTROLLER = None
_LOCK = threading.Lock()
_HOLDERS = 0  # calls (in any thread) inside a one-thread BLAS block right now
_LIMITER = None  # threadpoolctl's limiter of the first of them: it holds the caller's settings


class _OneBlasThread:
    """BLAS on one thread while any call of the process is inside such a block.

    BLAS thread counts are process-wide. The first block to enter saves the
    caller's settings and sets one thread; the last one to leave restores
    them. Each call saving and restoring on its own (threadpoolctl's
    ``limit``) loses the caller's settings when calls overlap: a second call
    saves the 1 that the first one set, and restores it after the first has
    restored the original. Four threads (or Dask's worker threads) calling
    the forward at once then left NumPy's and SciPy's BLAS on one thread for
    the rest of the process.
    """

    def __enter__(self):
        global _HOLDERS, _LIMITER
        with _LOCK:
            if _HOLDERS == 0:
                _LIMITER = _CONTROLLER.limit(limits=1, user_api="blas")
            _HOLDERS += 1
        return self

    def __exit__(self, *exc):
        global _HOLDERS, _LIMITER
        with _LOCK:
            _HOLDERS -= 1
            if _HOLDERS == 0:
                _LIMITER.restore_original_limits()
                _LIMITER = None
        return False


def blas_threads(limit):
    """A context that runs BLAS on one thread (``limit=1``) or leaves it as is (``None``)."""
    global _CONTROLLER
    if limit is None:
        return _Null()
    if limit != 1:
        raise ValueError(f"only a limit of 1 BLAS thread is supported; got {limit}")
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # threadpoolctl is optional
            return _Null()
        with _LOCK:
            if _CONTROLLER is None:
                _CONTROLLER = ThreadpoolController()  # scanning loaded libraries is slow: once
    return _OneBlasThread()


# -- the compiled loops' worker threads ------------------------------------------------

_POOL = None
_POOL_LOCK = threading.Lock()


def run_parallel(fn, args):
    """``fn(*a)`` for each ``a`` of ``args``, the first on this thread, the others on pool threads."""
    if len(args) == 1:
        fn(*args[0])
        return
    pool = _pool()
    futures = [pool.submit(fn, *a) for a in args[1:]]
    try:
        fn(*args[0])
    finally:
        for f in futures:
            f.result()


def _pool():
    """The worker threads (created once per process); each runs compiled code without the GIL."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=3, thread_name_prefix="rnn_xp-numba")
        return _POOL


# -- fork ------------------------------------------------------------------------------


def _after_fork_in_child():
    """A process made by ``fork()`` has none of its parent's threads.

    The compiled loops get a pool of their own: the inherited one has no
    threads left, and a call would wait on it forever (a torch DataLoader's
    fork workers did). No one-thread block is open in the child (the threads
    inside one stayed in the parent), and the parent's locks may have been
    held at the fork: new locks, no holders, and the caller's thread counts
    back if the parent was inside a block.
    """
    global _LOCK, _HOLDERS, _LIMITER, _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()
    _LOCK = threading.Lock()
    if _HOLDERS and _LIMITER is not None:
        try:
            _LIMITER.restore_original_limits()
        except Exception:  # best effort: the child computes the same either way
            pass
    _HOLDERS, _LIMITER = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
