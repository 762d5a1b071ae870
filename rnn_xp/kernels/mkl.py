"""Intel oneMKL's packed matrix product for the NumPy recurrence (optional).

Every step of the recurrence multiplies by the same ``(H, H)`` matrix. A
plain GEMM re-packs that matrix into its internal layout on every call;
oneMKL's packed API (``cblas_?gemm_pack`` once, ``cblas_?gemm_compute`` per
step) packs it once, and its kernels are also faster than OpenBLAS's for a
short, wide left operand. For B=64, H=1024 float32 on a 2-core Xeon the
product takes about 0.41 ms packed against 0.62 ms with OpenBLAS
(``docs/performance.md``).

A single row (B = 1) skips the packing and uses ``cblas_?gemv`` on the matrix
as it is (``RowProduct``; ``step_product`` picks). ``StepThreads`` picks oneMKL's thread count step
by step: one thread for a while when its threads keep stalling at the
per-step barrier because another library's threads hold the cores.

oneMKL is loaded only when the ``mkl`` wheel is installed (``pip install
rnn_xp[mkl]``) and ``RNN_XP_MKL`` is not ``0``. It is reached through
``ctypes``: nothing is compiled, and NumPy keeps its own BLAS for everything
else. The NumPy loop takes it by default only on Intel CPUs (``preferred``):
elsewhere oneMKL runs slower generic kernels than OpenBLAS's (on a 2-core
AMD EPYC, a float32 2048^3 GEMM at 175 GFLOP/s against OpenBLAS's 246, and
the (64, 50, 512, 1024) forward in 68.8 ms against 49.7 ms).
``RNN_XP_MKL=1`` takes it on any CPU.

Two facts shape the loading:

- The threading layer is GNU OpenMP (``libgomp``). With Intel's OpenMP,
  oneMKL computes wrong products once PyTorch (which brings ``libgomp``) has
  been imported first: the two OpenMP runtimes answer each other's calls.
- If no ``libgomp`` can be loaded, or oneMKL fails a small self-check
  against NumPy, it is not used and the OpenBLAS path runs instead, with a
  ``RuntimeWarning`` (once) that says why: the wheel is installed, so a
  silent fallback would hide a broken fast path.
- GNU OpenMP's thread team does not survive ``fork()``: a forked child that
  calls oneMKL after its parent did waits forever for threads that only the
  parent had (``multiprocessing``'s fork start method, torch DataLoader
  workers, Dask's process scheduler). A fork handler switches oneMKL off in
  every child (``status()`` says so); the child runs the OpenBLAS path, which
  gives the same results to rounding.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import sysconfig
import threading
import time
import warnings
from pathlib import Path

from . import _settings

__all__ = ["PackedMatrix", "RowProduct", "StepThreads", "gemm", "library", "loaded", "preferred", "step_product"]

# CBLAS enumerations
_ROW_MAJOR, _NO_TRANS, _TRANS, _PACKED, _B_MATRIX = 101, 111, 112, 151, 162
_GNU_THREADING = 3

_LIB = None  # None: not tried yet; False: unavailable; else the ctypes library
_WHY = "not tried"
_PREFERRED = None  # None: not decided yet; else (bool, why not)
_FORCED = None  # set by ``preferring``: overrides the decision (benchmarks, tests)
_FORKED = False  # True in a child process made by fork(): oneMKL is never used there
_WARNED = False  # the fallback warning is given once per process

_FORK_WHY = ("in a process made by fork() (GNU OpenMP's threads do not survive fork, "
             "and oneMKL would wait for them forever)")


def _after_fork_in_child():
    """``os.register_at_fork`` handler: a forked child never calls oneMKL.

    A flag rather than a change of ``_LIB``: a ``suspended`` block that was
    open in the forking thread restores ``_LIB`` on exit, in the child too.
    """
    global _FORKED, _POOL_LOCK
    _FORKED = True
    _POOL_LOCK = threading.Lock()  # another thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

ENV_VAR = _settings.MKL


def library():
    """The loaded oneMKL runtime (a ``ctypes.CDLL``), or ``None`` if unusable.

    ``None`` also in a process made by ``fork()`` (module docstring). When
    the ``mkl`` wheel is installed, ``RNN_XP_MKL`` is not ``0`` and oneMKL
    still cannot be used (its self-check failed, no ``libgomp``, ...), the
    first call warns with the reason (``RuntimeWarning``, once).
    """
    global _LIB, _WHY
    if _FORKED:
        return None
    if _LIB is None:
        _LIB, _WHY = _load()
        if _LIB is False and installed() and _settings.mkl() != "off":
            _warn_fallback(_WHY)
    return _LIB or None


def loaded():
    """Whether oneMKL has been loaded in this process (``library()`` found it usable); loads nothing."""
    return bool(_LIB)


def installed():
    """Whether the ``mkl`` wheel's runtime is present (Linux only), whatever ``RNN_XP_MKL`` says."""
    return sys.platform.startswith("linux") and next(iter(_candidates()), None) is not None


def _warn_fallback(why):
    global _WARNED
    if _WARNED:
        return
    _WARNED = True
    warnings.warn(
        f"rnn_xp: the mkl package is installed but oneMKL is not used ({why}); the NumPy "
        f"loop runs on NumPy's own BLAS instead (same results, other speed). Set {ENV_VAR}=0 "
        "to choose this without the warning.",
        RuntimeWarning,
        stacklevel=3,
    )


def preferred():
    """Whether the NumPy loop takes oneMKL (above its size thresholds) rather than NumPy's BLAS.

    Either ``RNN_XP_MKL=1`` or the CPU is an Intel one (``/proc/cpuinfo``'s
    ``vendor_id`` is ``GenuineIntel``), and it loads (``library()``).
    oneMKL picks its fastest kernels by CPU vendor; on other CPUs it runs
    generic ones, slower than OpenBLAS's (module docstring). Where it is not
    taken it is not loaded either: a loaded oneMKL and its OpenMP runtime are
    two more libraries whose threads every one-thread block sets and puts
    back (``_threads.blas_threads``), which cost the compiled loops' small
    calls on the AMD VM about 70 us each (the Elman backward at (1, 200, 32,
    64) took 0.21 ms with the ``fast`` extras against 0.14 with ``numba``
    alone).
    """
    global _PREFERRED
    if _FORCED is not None:
        return bool(_FORCED) and library() is not None
    if _PREFERRED is None:
        _PREFERRED = _decide(_settings.mkl(), cpu_vendor())
    return _PREFERRED[0] and library() is not None


def _decide(mode, vendor):
    """``(use oneMKL, why not)`` from ``RNN_XP_MKL``'s mode and the CPU vendor, oneMKL being loaded."""
    if mode == "on" or vendor == "GenuineIntel":
        return True, ""
    return False, (f"the CPU is {vendor or 'of an unknown vendor'}, where oneMKL runs generic kernels, "
                   f"slower than OpenBLAS's ({ENV_VAR}=1 takes oneMKL anyway)")  # fmt: skip


def cpu_vendor():
    """The CPU vendor from ``/proc/cpuinfo`` (``GenuineIntel``, ``AuthenticAMD``, ...), or ``None``."""
    return cpuinfo("vendor_id")


def cpuinfo(field):
    """The first value of ``field`` in ``/proc/cpuinfo`` (``vendor_id``, ``model name``, ...), or ``None``."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


class preferring:
    """A context in which ``preferred()`` is ``value`` (when oneMKL is loaded); for benchmarks and tests.

    Not thread-safe: it changes a module setting for the whole process.
    """

    def __init__(self, value):
        self._value = bool(value)

    def __enter__(self):
        global _FORCED
        self._saved, _FORCED = _FORCED, self._value
        return self

    def __exit__(self, *exc):
        global _FORCED
        _FORCED = self._saved
        return False


def status():
    """A one-line account of whether the NumPy loop uses oneMKL, and why (for benchmarks)."""
    if library() is None:
        return f"not used: {_FORK_WHY if _FORKED else _WHY}"
    if preferred():
        return "in use"
    why = _decide(_settings.mkl(), cpu_vendor())[1] or "switched off (preferring(False))"
    return f"loaded, not used by default: {why}"


def version():
    """oneMKL's version string, or ``None``."""
    lib = library()
    if lib is None:
        return None
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, len(buf))
    return buf.value.decode(errors="replace").strip()


class suspended:
    """A context in which oneMKL is not used (for side-by-side benchmarks; not thread-safe)."""

    def __enter__(self):
        global _LIB, _WHY
        library()
        self._saved, _LIB, _WHY = (_LIB, _WHY), False, "suspended"
        return self

    def __exit__(self, *exc):
        global _LIB, _WHY
        _LIB, _WHY = self._saved
        return False


class one_thread:
    """A context in which oneMKL runs on the calling thread alone (``MKL_Set_Num_Threads_Local``).

    For tasks that are already run in parallel (Dask chunks): no nested
    threads, and a long-lived worker thread keeps no OpenMP team of its own.
    On a 2-core machine such an idle team made every later OpenMP region in
    the process (PyTorch's too, as they share ``libgomp``) about 40% slower.
    """

    def __enter__(self):
        lib = library()
        self._previous = None if lib is None else lib.MKL_Set_Num_Threads_Local(1)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            library().MKL_Set_Num_Threads_Local(self._previous)  # 0: back to the global setting
        return False


_now = time.perf_counter  # the clock StepThreads reads (a module name, for tests)
# _now() at the last stalled step, and until when oneMKL runs on one thread (every loop)
_STALLS = {"last": float("-inf"), "hold_until": float("-inf")}


class StepThreads:
    """oneMKL's thread count for each step of a loop: all threads, or one after a stall.

    A step of the recurrence takes tens of microseconds, and oneMKL's threads
    meet at a barrier in every one. When another library's idle threads still
    spin on the same cores (OpenBLAS's do for about 0.1 s after each call, so
    a NumPy matmul just before the forward is enough), the scheduler now and
    then takes a core from one of oneMKL's threads for a whole time slice, and
    that step takes milliseconds instead of microseconds. One thread never
    waits for another. So the loop times its steps. A stall is a step that
    took ``STALL_S`` longer than the fastest one (a time slice is a few
    milliseconds; smaller hiccups are not stalls). After two stalls within
    ``WINDOW_S`` it runs on one thread for ``HOLD_S`` seconds (the spinning
    lasts about that long), in this loop and the next ones, then tries all
    threads again. One stall alone is not enough: on a quiet machine a 1 ms
    hiccup now and then (about one a second here at B=64, H=1024) would
    otherwise halve the speed for 0.1 s each time.

    oneMKL's packed product gives bitwise-identical results on one thread or
    several (tested), so the choice changes the time, never the result. Call
    ``start()`` before a step's work, ``stop()`` after it, and ``close()`` at
    the end (back to the caller's thread count).
    """

    STALL_S = 1e-3
    WINDOW_S = 0.05
    HOLD_S = 0.1

    def __init__(self, lib=None):
        self._lib = lib or library()
        self._most = self._lib.MKL_Get_Max_Threads()  # honours limits set by the caller
        self._threads = self._most
        self._previous = None
        self._best = float("inf")  # the fastest step so far, seconds
        self._t0 = 0.0
        if self._most > 1 and self._wanted(_now()) == 1:
            self._set(1)  # the projection too runs on one thread, after a recent stall

    def start(self):
        if self._most > 1:
            self._t0 = now = _now()
            want = self._wanted(now)
            if want != self._threads:
                self._set(want)

    def stop(self):
        if self._most > 1:
            now = _now()
            dt = now - self._t0
            if self._threads > 1 and dt > self._best + self.STALL_S:
                if now - _STALLS["last"] < self.WINDOW_S:
                    _STALLS["hold_until"] = now + self.HOLD_S
                _STALLS["last"] = now
            self._best = min(self._best, dt)

    def close(self):
        if self._previous is not None:
            self._lib.MKL_Set_Num_Threads_Local(self._previous)  # 0: back to the global setting
            self._previous = None

    def _wanted(self, now):
        return 1 if now < _STALLS["hold_until"] else self._most

    def _set(self, threads):
        previous = self._lib.MKL_Set_Num_Threads_Local(threads)
        if self._previous is None:
            self._previous = previous
        self._threads = threads


def _candidates():
    names = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so")
    dirs = [Path(sys.prefix) / "lib", Path(sysconfig.get_config_var("LIBDIR") or sys.prefix)]
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                yield str(d / n)
    found = ctypes.util.find_library("mkl_rt")
    if found:
        yield found


def _load():
    if _settings.mkl() == "off":
        return False, f"{ENV_VAR}=0"
    if not sys.platform.startswith("linux"):
        return False, "only loaded on Linux"
    path = next(iter(_candidates()), None)
    if path is None:
        return False, "the mkl package is not installed"
    # oneMKL exits the process when it cannot load its threading layer: check first.
    if not any(Path(path).parent.glob("libmkl_gnu_thread.so*")):
        return False, "libmkl_gnu_thread is missing"
    try:
        ctypes.CDLL(ctypes.util.find_library("gomp") or "libgomp.so.1")
    except OSError:
        return False, "no libgomp (GNU OpenMP) to run oneMKL's threads"
    try:
        lib = ctypes.CDLL(path)
        if lib.MKL_Set_Threading_Layer(_GNU_THREADING) != _GNU_THREADING:
            return False, "oneMKL's threading layer is already set to another runtime"
        _declare(lib)
        if not _self_check(lib):
            return False, "oneMKL failed its self-check against NumPy"
    except (OSError, AttributeError) as exc:
        return False, f"oneMKL could not be loaded ({exc})"
    return lib, "in use"


def _declare(lib):
    i, p, size = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    for prefix, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
        f = getattr(lib, f"cblas_{prefix}gemm")
        f.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
        f.restype = None
        f = getattr(lib, f"cblas_{prefix}gemm_pack_get_size")
        f.argtypes = [i, i, i, i]
        f.restype = size
        f = getattr(lib, f"cblas_{prefix}gemm_pack")
        f.argtypes = [i, i, i, i, i, i, real, p, i, p]
        f.restype = None
        f = getattr(lib, f"cblas_{prefix}gemm_compute")
        f.argtypes = [i, i, i, i, i, i, p, i, p, i, real, p, i]
        f.restype = None
        f = getattr(lib, f"cblas_{prefix}gemv")
        f.argtypes = [i, i, i, i, real, p, i, p, i, real, p, i]
        f.restype = None


def _self_check(lib):
    import numpy as np

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((37, 70)).astype(dtype)
        w = rng.standard_normal((50, 70)).astype(dtype)
        c = np.ones((37, 50), dtype)
        _gemm(lib, a, w, c, beta=1.0)
        packed = PackedMatrix(w, 37, lib)
        d = np.ones((37, 50), dtype)
        packed.matmul_add(a, d)
        packed.close()
        row = np.ones((1, 50), dtype)
        RowProduct(w, lib).matmul_add(a[:1], row)  # one row: the matrix-vector product
        want = a.astype(np.float64) @ w.T.astype(np.float64) + 1
        tol = 1e-3 if dtype == np.float32 else 1e-10
        if not all(np.allclose(got, want[: len(got)], rtol=tol, atol=tol) for got in (c, d, row)):
            return False
    return True


def _prefix(dtype):
    import numpy as np

    return {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}[np.dtype(dtype)]


def gemm(a, w, out, beta=0.0):
    """``out = a @ w.T + beta * out`` for C-contiguous 2-D NumPy arrays of one float dtype.

    Any size may be zero: ``k = 0`` (``D = 0`` in the input projection) gives
    ``beta * out`` (zeros for ``beta = 0``), as the empty sum; CBLAS itself
    refuses the leading dimension 0 that such an array has.
    """
    _gemm(library(), a, w, out, beta)


def _gemm(lib, a, w, out, beta):
    (m, k), n = a.shape, w.shape[0]
    if m == 0 or n == 0:
        return
    if k == 0:
        if beta == 0.0:
            out[...] = 0  # not beta * out: out may hold NaN, which beta = 0 ignores
        else:
            out *= beta
        return
    f = getattr(lib, f"cblas_{_prefix(out.dtype)}gemm")
    f(_ROW_MAJOR, _NO_TRANS, _TRANS, m, n, k, 1.0, a.ctypes.data, k, w.ctypes.data, k,
      beta, out.ctypes.data, n)  # fmt: skip


# Pack buffers are reused: oneMKL asks for about 8 MB even for a small matrix,
# and allocating that anew on every call costs more in page faults than packing
# does. Idle buffers are kept in one pool for the process, at most _KEEP_BYTES
# of them in all, whatever the number of threads that ever packed (a per-thread
# cache kept 86 MB per pool thread at H = 4096). A buffer in use belongs to
# its PackedMatrix until ``close()``.
_KEEP_BYTES = 32 << 20
_POOL = []  # idle uint8 buffers, smallest first
_POOL_LOCK = threading.Lock()


def _take_buffer(nbytes):
    """A buffer of at least ``nbytes + 64`` bytes (for 64-byte alignment): from the pool, else new."""
    import numpy as np

    with _POOL_LOCK:
        for i, buf in enumerate(_POOL):
            if buf.nbytes >= nbytes + 64:
                return _POOL.pop(i)
    return np.empty(nbytes + 64, dtype=np.uint8)


def _give_buffer(buf):
    """Return ``buf`` to the pool; the largest idle buffers are dropped beyond ``_KEEP_BYTES``."""
    with _POOL_LOCK:
        _POOL.append(buf)
        _POOL.sort(key=lambda b: b.nbytes)
        while _POOL and sum(b.nbytes for b in _POOL) > _KEEP_BYTES:
            _POOL.pop()


def _pool_bytes():
    """Bytes held by idle pack buffers (for tests)."""
    with _POOL_LOCK:
        return sum(b.nbytes for b in _POOL)


def step_product(W, M, lib=None):
    """The per-step product ``out += a @ W.T`` for ``a`` of ``M`` rows: packed, or for one row ``?gemv``."""
    return RowProduct(W, lib) if M == 1 else PackedMatrix(W, M, lib)


class PackedMatrix:
    """``W`` ``(N, K)`` packed once as the right operand ``W.T`` of ``(M, K) @ (K, N)``.

    The packed copy lives in a buffer of the shared pool, valid until
    ``close()`` gives the buffer back (or the object is dropped). ``M``,
    ``N`` and ``K`` must be positive.
    """

    def __init__(self, W, M, lib=None):
        import numpy as np

        self._lib = lib or library()
        self.dtype = W.dtype
        p = _prefix(W.dtype)
        N, K = W.shape
        self.shape = (M, N, K)
        if min(M, N, K) < 1:
            raise ValueError(f"PackedMatrix needs positive sizes; got (M, N, K) = {(M, N, K)}")
        size = getattr(self._lib, f"cblas_{p}gemm_pack_get_size")(_B_MATRIX, M, N, K)
        self._buf = _take_buffer(size)
        self._ptr = self._buf.ctypes.data + (-self._buf.ctypes.data % 64)  # 64-byte aligned
        W = np.ascontiguousarray(W)
        getattr(self._lib, f"cblas_{p}gemm_pack")(
            _ROW_MAJOR, _B_MATRIX, _TRANS, M, N, K, 1.0, W.ctypes.data, K, self._ptr
        )
        self._compute = getattr(self._lib, f"cblas_{p}gemm_compute")

    def matmul_add(self, a, out):
        """``out += a @ W.T``, in place; ``a`` ``(M, K)``, ``out`` ``(M, N)``, C-contiguous."""
        self.matmul_add_at(a.ctypes.data, out.ctypes.data)

    def matmul_add_at(self, a_address, out_address):
        """``matmul_add`` on raw addresses of C-contiguous arrays (for the per-step loop)."""
        M, N, K = self.shape
        self._compute(_ROW_MAJOR, _NO_TRANS, _PACKED, M, N, K, a_address, K, self._ptr, N,
                      1.0, out_address, N)  # fmt: skip

    def close(self):
        """Give the pack buffer back to the pool; the object is unusable afterwards."""
        if self._buf is not None:
            _give_buffer(self._buf)
            self._buf = self._ptr = None


class RowProduct:
    """``PackedMatrix``'s product for one row (M = 1): oneMKL's ``?gemv`` on ``W`` as it is.

    Nothing is packed. The packed layout of ``W`` is about 3.5 times its size
    (14 MB for H = 1024 float32), and with one row the step is bound by
    reading the matrix: at B = 1, H = 1024 a step took about 48 us with
    ``?gemv`` against 99 us packed on a 2-core Xeon.
    """

    def __init__(self, W, lib=None):
        import numpy as np

        self._lib = lib or library()
        self.dtype = W.dtype
        N, K = W.shape
        self.shape = (1, N, K)
        self._W = np.ascontiguousarray(W)  # kept alive: gemv reads it at every step
        self._W_at = self._W.ctypes.data
        self._gemv = getattr(self._lib, f"cblas_{_prefix(W.dtype)}gemv")

    def matmul_add(self, a, out):
        """``out += a @ W.T``, in place; ``a`` ``(1, K)``, ``out`` ``(1, N)``, C-contiguous."""
        self.matmul_add_at(a.ctypes.data, out.ctypes.data)

    def matmul_add_at(self, a_address, out_address):
        """``out (N,) += W (N, K) @ a (K,)`` on raw addresses."""
        _, N, K = self.shape
        self._gemv(_ROW_MAJOR, _NO_TRANS, N, K, 1.0, self._W_at, K, a_address, 1, 1.0, out_address, 1)

    def close(self):
        """Nothing to give back (``PackedMatrix``'s interface)."""
