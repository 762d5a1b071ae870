"""Threads the CPU kernels hold: BLAS on one thread for small steps, and the compiled loops' workers.

BLAS on one thread (``blas_threads(1)``)
    A small product ``(B, H) @ (H, H)`` runs faster on one BLAS thread than
    on several (waking a second thread costs more than it saves), and the
    compiled loop's threads each call BLAS for their own rows: there, BLAS
    must not start threads of its own. Most BLAS thread counts are
    process-wide, so calls that overlap (several threads, Dask's worker
    threads) share one limit: the first block to enter saves the counts and
    sets one thread, the last to leave puts the saved counts back. Three facts
    shape it:

    - The libraries are those loaded when a block starts: a library loaded
      after the first call (oneMKL, which rnn_xp loads when it first needs
      it; SciPy's OpenBLAS, which numba loads) is held too.
    - threadpoolctl (from 3.8) lets one thread at a time change OpenBLAS's
      count, and the thread that saves the counts is often not the one that
      puts them back: each change is made as the controlling thread, and the
      control is given up at once.
    - oneMKL's count (and OpenBLAS's on OpenMP) is per thread: it is set in
      the thread that enters a block and put back as that thread had it (a
      Dask task runs oneMKL on one thread of its own, ``mkl.one_thread``).

The compiled loops' worker threads (``run_parallel``)
    A pool of threads, made on first use, runs the compiled loops' blocks of
    rows or columns without the GIL. A process made by ``fork()`` has none of
    its parent's threads: it makes a pool of its own.

Both are made safe across ``fork()`` by an ``os.register_at_fork`` handler.
"""

from __future__ import annotations

import os
import sys
import threading

from . import mkl

__all__ = ["CPUS", "SERIAL_MACS", "blas_threads", "run_parallel"]

# The recurrent product (B, H) @ (H, H) runs on one BLAS thread below this many
# multiply-adds: there, waking a second thread costs more than it saves.
SERIAL_MACS = 1 << 20

# The CPUs the kernels plan their threads for, read once: ``os.cpu_count()``
# asks the system each time (about 6 us here, a tenth of a whole forward call
# at (1, 200, 32, 64) besides the loop itself).
CPUS = os.cpu_count() or 1


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- BLAS on one thread ----------------------------------------------------------------

_LOCK = threading.Lock()
_LIBRARIES = None  # (loaded-library count, process-wide controllers, per-thread controllers)
_HOLDERS = 0  # calls (in any thread) inside a one-thread BLAS block right now
_SAVED = None  # [(controller, thread count)] of the process-wide libraries while a block holds them


def blas_threads(limit):
    """A context that runs BLAS on one thread (``limit=1``) or leaves it as is (``None``).

    Without threadpoolctl (optional) it leaves BLAS as it is.
    """
    if limit is None:
        return _Null()
    if limit != 1:
        raise ValueError(f"only a limit of 1 BLAS thread is supported; got {limit}")
    if _give_up_control() is None:  # threadpoolctl is optional
        return _Null()
    return _OneBlasThread()


class _OneBlasThread:
    """BLAS on one thread while any call of the process is inside such a block (module docstring).

    Libraries whose count is process-wide (OpenBLAS on its own threads, BLIS,
    FlexiBLAS) share one limit: each call saving and restoring on its own
    loses the caller's settings when calls overlap (a second call saves the
    1 that the first one set, and restores it after the first has restored
    the original; four threads, or Dask's worker threads, calling the forward
    at once left NumPy's and SciPy's BLAS on one thread for good). Libraries
    whose count is per thread (oneMKL, OpenBLAS on OpenMP) are set in the
    thread that enters and put back as that thread had them.
    """

    def __enter__(self):
        global _HOLDERS, _SAVED
        with _LOCK:
            shared, local = _blas_libraries(rescan=_HOLDERS == 0)
            if _HOLDERS == 0:
                _SAVED = [(lib, lib.num_threads) for lib in shared]
                for lib, _ in _SAVED:
                    _set_shared(lib, 1)
            _HOLDERS += 1
        self._local = [(lib, _set_local(lib, 1)) for lib in local]
        return self

    def __exit__(self, *exc):
        global _HOLDERS, _SAVED
        for lib, previous in reversed(self._local):
            _put_back_local(lib, previous)
        with _LOCK:
            _HOLDERS -= 1
            if _HOLDERS == 0:
                for lib, n in _SAVED:
                    _set_shared(lib, n)
                _SAVED = None  # only now: a fork in the middle of the loop restores them in the child
        return False


def _blas_libraries(rescan):
    """``(process-wide, per-thread)``: threadpoolctl's controllers of the BLAS libraries loaded now.

    Scanning the loaded libraries costs about a millisecond, so the scan is
    kept until a library may have been loaded since (``loaded_count``; it is
    only redone with ``rescan``, no block being open).
    """
    global _LIBRARIES
    seen = loaded_count()
    if _LIBRARIES is None or (rescan and _LIBRARIES[0] != seen):
        from threadpoolctl import ThreadpoolController

        libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        local = [lib for lib in libraries if _per_thread(lib)]
        _LIBRARIES = (seen, [lib for lib in libraries if not _per_thread(lib)], local)
    return _LIBRARIES[1], _LIBRARIES[2]


def _per_thread(lib):
    """Whether a BLAS library's thread count is set per thread: oneMKL's, and OpenBLAS's on OpenMP."""
    openmp_openblas = lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) == "openmp"
    return lib.internal_api == "mkl" or openmp_openblas  # (OpenBLAS on OpenMP sets OpenMP's per-thread count)


def _set_shared(lib, n):
    """Set a process-wide thread count, as threadpoolctl's controlling thread for the moment only.

    threadpoolctl (from version 3.8) lets one thread at a time change
    OpenBLAS's count and ignores the others; the thread that saves the count
    is often not the one that puts it back. Control is given up at once
    (threadpoolctl's documented ``clear_controlling_thread``); a thread of the
    caller's that keeps control keeps it, and rnn_xp's change is then ignored.
    """
    lib.set_num_threads(n)
    _give_up_control()()  # only when this thread has the control


_GIVE_UP = None  # threadpoolctl's clear_controlling_thread (a no-op before 3.8), False without threadpoolctl


def _give_up_control():
    """``clear_controlling_thread`` of threadpoolctl's OpenBLAS, a no-op before 3.8, ``None`` without threadpoolctl."""
    global _GIVE_UP
    if _GIVE_UP is None:
        try:
            import threadpoolctl
        except ImportError:
            _GIVE_UP = False
        else:
            controller = getattr(threadpoolctl, "OpenBLASController", None)
            _GIVE_UP = getattr(controller, "clear_controlling_thread", None) or (lambda: None)
    return _GIVE_UP or None


def _set_local(lib, n):
    """Set this thread's count of a per-thread library; returns what puts it back."""
    if lib.internal_api == "mkl":
        return lib.dynlib.MKL_Set_Num_Threads_Local(n)  # the thread's own setting before (0: none)
    previous = lib.num_threads
    lib.set_num_threads(n)
    return previous


def _put_back_local(lib, previous):
    if lib.internal_api == "mkl":
        lib.dynlib.MKL_Set_Num_Threads_Local(previous)  # 0: back to the process's count
    else:
        lib.set_num_threads(previous)


def loaded_count():
    """A value that changes when the process may have loaded a BLAS library since it was last read.

    A library comes with a module (NumPy's, SciPy's, torch's) or is loaded by
    rnn_xp itself (oneMKL): the number of imported modules, and whether
    oneMKL is loaded. (Asking the loader, ``dl_iterate_phdr``, would need a
    ctypes callback for the life of the process, which some libffi builds do
    not carry across ``fork()``.)
    """
    return len(sys.modules), mkl.loaded()


# -- the compiled loops' worker threads ------------------------------------------------

_POOL = None
_POOL_LOCK = threading.Lock()


def run_parallel(fn, args, one_blas_thread=False):
    """``fn(*a)`` for each ``a`` of ``args``, the first on this thread, the others on pool threads.

    ``one_blas_thread``: ``fn`` calls BLAS, which must not start threads of
    its own: the caller holds ``blas_threads(1)``, and each pool thread does
    too (for the libraries whose count is per thread).
    """
    if len(args) == 1:
        fn(*args[0])
        return
    pool = _pool()
    task = _one_blas_thread_call if one_blas_thread else _call
    futures = [pool.submit(task, fn, a) for a in args[1:]]
    try:
        fn(*args[0])
    finally:
        for f in futures:
            f.result()


def _call(fn, a):
    return fn(*a)


def _one_blas_thread_call(fn, a):
    with blas_threads(1):
        return fn(*a)


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
    global _LOCK, _HOLDERS, _SAVED, _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()
    _LOCK = threading.Lock()
    saved, _SAVED = _SAVED, None
    for lib, n in saved or ():  # a block was open, or being opened or closed, in another thread
        try:
            _set_shared(lib, n)
        except Exception:  # best effort: the child computes the same either way
            pass
    _HOLDERS = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
