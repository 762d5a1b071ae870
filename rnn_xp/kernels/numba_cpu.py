"""The recurrence as one compiled call, for NumPy on the CPU (numba, optional).

``kernels.numpy.scan_numpy`` runs a Python loop: per step a matrix product,
an add and a tanh, each a separate NumPy call, so a small step costs a few
microseconds of dispatch on top of its arithmetic. Here the whole time loop
is one function compiled by numba (``_numba_jit.recurrence``), which the
table of ``kernels/__init__.py`` picks by size (``kernels.numpy_loop``):

1. The input projection ``x @ Wx.T + b``: with the packed product (the
   default) the compiled call adds it first, for its rows and columns of
   every step of a block, into the bias (the steps share a read of each
   strip of ``Wx``); with BLAS's product it is one GEMM over all steps
   (``_blocks.project``) with every BLAS thread.
2. One compiled call then runs every step for a block of rows and columns::

       o[rows, cols] += S_k[rows] @ Wh[cols].T    # the packed product (or BLAS)
       o[rows, cols]  = (1 - leak) * S_k + leak * f(o)      # vectorised tanh / relu
       S_{k+1}[rows, cols] = o  (frozen rows: S_k, and o = 0)

   ``S`` is a ``(2, B, H)`` double-buffered state: step k reads ``S[k % 2]``
   and writes ``S[(k + 1) % 2]``. The product is the packed product
   (``_numba_jit``, ``_packed``): ``Wh`` packed once per call into strips
   of 32 columns (16 in float64), a tile of up to eight rows by one strip
   keeping its sums in vector registers (AVX-512's where the CPU has them)
   over all of ``H``, each step one value of the state broadcast times a
   row of the strip; the strips are the outer loop, so each stays in cache
   while every row uses it. ``product="blas"`` calls the ``cblas_?gemm`` of
   NumPy's own BLAS through its address instead.
3. Threads (``plan``): the batch rows are independent, so two threads each
   run the whole sequence on half the rows, with no synchronisation at all.
   With fewer rows than that pays for (one sequence), two threads split the
   output columns instead and meet at a spin barrier once per step (an
   atomic counter), each keeping its half of ``Wh`` in its own cache.

tanh is NumPy's own: the compiled function calls NumPy's inner loop of
``tanh`` (its SIMD loop where NumPy has one) on each row, found by address
and checked against ``numpy.tanh`` first (``kernels._numpy_loops``), so the
compiled and the NumPy loop compute the same tanh bit for bit
(``tests/kernels/test_kernel_numba.py`` checks it over the whole float range,
sub-normals, signed zeros, infinities and NaN included). Where NumPy's
loops cannot be found that way, the NumPy loop runs instead.

The compiled functions are cached on disk (numba's ``cache=True``, in
``__pycache__`` beside this file or numba's user cache directory), so a new
process loads them instead of compiling (``docs/cpu-kernels.md`` has the
numbers). A cache that cannot be used (no writable folder, a full disk, a
corrupted file) costs a compilation in the process and one ``RuntimeWarning``,
never a failed call (``compiled``, ``run_compiled``). numba is imported only when NumPy arrays reach this kernel; when
it is not installed, or NumPy's BLAS cannot be found by address, the kernel
falls back (``kernels.numpy.scan_numpy`` for the first, its own product loop
for the second).
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
import threading
import warnings

from . import _numpy_loops, _settings, _threads
from ._blocks import project, time_blocks, transposed_copy
from ._packed import pack
from ._threads import blas_threads, run_parallel
from .numpy import scan_numpy

__all__ = ["CompileAgain", "available", "barrier_words", "blas_gemm", "blas_status", "compiled", "mode", "plan",
           "require_one_dtype", "run_compiled", "scan_numba", "why_not", "work_plan"]

# The product: the compiled loop's own at every size, now the packed product
# (Wh packed once per call, tiles of eight rows by 32 columns in vector
# registers); the register-blocked product before it (four rows by four
# columns, panels of Wh kept in cache) ran 1.3 to 4x faster than the
# cblas_sgemm of OpenBLAS (AVX2 kernels there) on the 2-core AMD VM from
# B = 1 to 64 and H = 64 to 1024, and neither leaves a BLAS thread spinning
# beside the loop's own threads. "blas" stays for tests and benchmarks.

# Two threads over halves of the batch rows from this many multiply-adds per
# step (rows x H x H), with at least _ROW_SPLIT_MIN_ROWS rows (four each: the
# own product's row block); below, waking a second thread costs more than it saves.
_THREAD_ROW_MACS = 1 << 17
_ROW_SPLIT_MIN_ROWS = 8

# With fewer rows, two threads split the columns (a barrier each step) from
# this many multiply-adds per step (H >= 256 for one sequence), where reading
# Wh is what a step costs.
_THREAD_COL_MACS = 1 << 16

# The backward (numba_backward) takes the same packed product (of Wh.T,
# packed); its threads split the rows from four rows, never the columns (one
# sequence at H = 256 and 512 took 1.5x the one-thread time on the EPYC VM:
# the barrier waits for the weight gradients' BLAS threads).
_BACKWARD_ROW_SPLIT_MIN_ROWS = 4

_JIT = None  # the compiled functions, once numba is imported: a dict (False: numba cannot run)
_WHY = "not tried"
_CACHED = True  # whether _JIT's functions keep their machine code in numba's on-disk cache
_CACHE_WARNED = False  # an unusable cache warns once per process
_CACHE_LOCK = threading.Lock()
_BLAS = {}  # dtype name -> (address of cblas_?gemm, 64-bit integers, why not) or (0, False, why not)
_BLAS_WARNED = False  # a failed self-check of NumPy's BLAS warns once per process


def available():
    """Whether numba is installed and the compiled kernel can run."""
    return compiled() is not None


def why_not():
    """Why the compiled kernel is not available ("" when it is)."""
    return "" if available() else _WHY


ENV_VAR = _settings.NUMBA


def mode():
    """``RNN_XP_NUMBA`` as ``"auto"`` (unset, empty or ``auto``), ``"on"`` (``1``) or ``"off"`` (``0``)."""
    return _settings.numba()


def plan(B, H, threads=None, backward=False):
    """``(product, split, n)``: the product (``"own"`` or ``"blas"``), the split and thread count.

    ``split`` is ``"rows"`` (each thread runs the whole sequence on its rows,
    no synchronisation) or ``"cols"`` (each thread computes its columns of
    every row, a barrier per step); ``n`` is 1 or 2.
    """
    threads = min(2, _threads.CPUS) if threads is None else threads
    macs = B * H * H
    product = "own"
    min_rows = _BACKWARD_ROW_SPLIT_MIN_ROWS if backward else _ROW_SPLIT_MIN_ROWS
    if threads >= 2 and B >= min_rows and macs >= _THREAD_ROW_MACS:
        return product, "rows", 2
    if threads >= 2 and not backward and B >= 1 and H >= 64 and macs >= _THREAD_COL_MACS:
        return product, "cols", 2
    return product, "rows", 1


def scan_numba(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences,
               product=None, split=None, threads=None):  # fmt: skip
    """``scan_portable`` for float32/float64 NumPy arrays, as one compiled call (module docstring).

    ``product`` (``"own"``, ``"blas"``), ``split`` (``"rows"``, ``"cols"``)
    and ``threads`` (1, 2) override ``plan``'s choice (for tests and
    benchmarks); every choice gives the same results to rounding.
    """
    require_one_dtype(h0.dtype, x=x, Wx=Wx, Wh=Wh, b=b)
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak,
                   return_sequences=return_sequences)  # fmt: skip
    try:
        return _scan(xp, x, h0, Wx, Wh, b, product, split, threads, **options)
    except CompileAgain:  # numba's on-disk cache failed: once more, compiled anew (or the NumPy loop)
        return _scan(xp, x, h0, Wx, Wh, b, product, split, threads, **options)


def _scan(xp, x, h0, Wx, Wh, b, product, split, threads, *, nonlinearity, lengths, reverse, leak,
          return_sequences):  # fmt: skip
    import numpy

    jit = compiled()
    T, D = x.shape[0], x.shape[-1]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)
    dtype = h0.dtype
    if jit is None or T == 0 or B == 0 or H == 0 or nonlinearity not in ("tanh", "relu") \
            or dtype not in (numpy.float32, numpy.float64):  # fmt: skip
        return scan_numpy(xp, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                          leak=leak, return_sequences=return_sequences)  # fmt: skip

    gemm, ilp64, bounds, nsync = work_plan(B, H, dtype, product, split, threads)

    x3 = x.reshape(T, B, D)  # (T, B, D): a view for time-major and batch_first inputs
    WxT = Wx.T  # (D, H)
    # BLAS multiplies by a C-contiguous Wh.T (H, H); the packed product reads Wh packed
    W = transposed_copy(numpy, Wh) if gemm else numpy.empty((1, 1), dtype=dtype)
    WK = numpy.empty((1, 1, 1), dtype=dtype) if gemm else pack(Wh)
    S = numpy.empty((2, B, H), dtype=dtype)  # (2, B, H): the double-buffered state
    S[0] = h0.reshape(B, H)
    lens = numpy.zeros(B, dtype=numpy.int64) if lengths is None else \
        numpy.ascontiguousarray(lengths.reshape(B), dtype=numpy.int64)  # fmt: skip
    coef = numpy.array([leak, 1.0 - leak], dtype=dtype)  # (2,): in the dtype, as the portable loop rounds
    flags = (int(lengths is not None), int(nonlinearity == "relu"), int(leak != 1.0))
    sync = barrier_words()  # the barrier's counter and sched_yield

    out, buf, blocks = time_blocks(numpy, T, B, H, dtype, reverse=reverse, return_sequences=return_sequences)
    # the packed product projects inside the loop (Wx packed, the bias in buf): no BLAS call
    Wx_rows = pack(Wx) if not gemm else numpy.empty((1, 1, 1), dtype=dtype)
    no_x = numpy.empty((0, B, D), dtype=dtype)
    k0 = 0  # steps run so far, in the loop's order
    for s, e in blocks:
        block = buf[: e - s]  # (n, B, H)
        if gemm:
            project(numpy, x3[s:e], WxT, b, block)  # every BLAS thread
            xs = no_x
        else:
            block[...] = 0 if b is None else b
            xs = numpy.ascontiguousarray(x3[s:e])  # (n, B, D): a view unless batch_first
        with blas_threads(1 if gemm else None):  # the steps: one BLAS thread per caller
            sync[0] = 0
            args = [(block, s, e, k0, int(reverse), lens, S, W, WK, r0, r1, c0, c1, flags, coef,
                     gemm, int(ilp64), sync, nsync, xs, Wx_rows)
                    for r0, r1, c0, c1 in bounds]  # fmt: skip
            run_compiled("recurrence", args, one_blas_thread=bool(gemm))
        k0 += e - s
    h_last = S[T % 2].reshape(*batch, H).copy()  # (*batch, H)
    if out is None:
        return None, h_last
    return out.reshape(T, *batch, H), h_last


def work_plan(B, H, dtype, product=None, split=None, threads=None, backward=False):
    """``(gemm, ilp64, bounds, nsync)`` for a compiled loop over ``B`` rows of ``H`` units.

    ``plan``'s choice, with ``product``, ``split`` and ``threads`` overriding
    it: the BLAS product's address (0 for the own loop) and integer width, one
    ``(r0, r1, c0, c1)`` block of rows and columns per thread, and how many
    threads meet at the barrier each step (1 when they split the rows).
    """
    auto = plan(B, H, threads, backward)
    product = product or auto[0]
    split = split or auto[1]
    n = auto[2] if threads is None else max(1, min(int(threads), B if split == "rows" else H))
    if split == "rows":
        n = min(n, B)
    gemm, ilp64 = (0, False) if product == "own" else blas_gemm(dtype)
    if n > 1 and split == "rows":
        bounds = [(B * i // n, B * (i + 1) // n, 0, H) for i in range(n)]
    elif n > 1:  # column bounds at multiples of four (any bound gives every element the same sums)
        cut = [0, *(H * i // n // 4 * 4 for i in range(1, n)), H]
        bounds = [(0, B, cut[i], cut[i + 1]) for i in range(n)]
    else:
        bounds = [(0, B, 0, H)]
    return gemm, ilp64, bounds, len(bounds) if split == "cols" else 1


def require_one_dtype(dtype, **arrays):
    """Raise ``TypeError`` unless every array given is of ``dtype`` (``None`` is skipped).

    The compiled loops read the arrays through raw addresses in ``dtype``'s
    width; an array of another dtype would be read (or written) past its end.
    ``forward`` and ``backward`` cast everything to one dtype first; this
    guards calls that reach the kernel another way.
    """
    for name, a in arrays.items():
        if a is not None and a.dtype != dtype:
            raise TypeError(f"the compiled loop needs one dtype: {name} is {a.dtype}, the state is {dtype}")


def barrier_words():
    """``(16,)`` int64: ``[0]`` the barrier's counter (on its own cache line), ``[1]`` ``sched_yield``'s address."""
    import numpy

    sync = numpy.zeros(16, dtype=numpy.int64)
    sync[1] = _sched_yield()
    return sync


_YIELD = None


def _sched_yield():
    """The address of the C library's ``sched_yield`` (0 where there is none)."""
    global _YIELD
    if _YIELD is None:
        try:
            _YIELD = ctypes.cast(ctypes.CDLL(None).sched_yield, ctypes.c_void_p).value or 0
        except (OSError, AttributeError, TypeError):
            _YIELD = 0
    return _YIELD


# -- NumPy's BLAS by address ------------------------------------------------------------

_SYMBOLS = (  # (name pattern, 64-bit integers)
    ("scipy_cblas_{p}gemm64_", True),
    ("cblas_{p}gemm64_", True),
    ("scipy_cblas_{p}gemm", False),
    ("cblas_{p}gemm", False),
)


def blas_gemm(dtype):
    """``(address, ilp64)`` of ``cblas_sgemm`` / ``cblas_dgemm`` in NumPy's own BLAS, or ``(0, False)``.

    The library is the OpenBLAS that NumPy's wheels ship (``numpy.libs``) or,
    failing that, the BLAS that threadpoolctl finds loaded. The address is
    used only after a small product through it matched NumPy's; a symbol
    that is exported but fails that check is a ``RuntimeWarning`` (once), and
    the compiled loop runs its own product (``blas_status`` says why).
    """
    import numpy

    name = numpy.dtype(dtype).name
    if name not in _BLAS:
        _BLAS[name] = _find_gemm(numpy.dtype(dtype))
    return _BLAS[name][:2]


def blas_status(dtype):
    """Why ``blas_gemm(dtype)`` found no address ("" when it found one that agrees with NumPy)."""
    import numpy

    blas_gemm(dtype)
    return _BLAS[numpy.dtype(dtype).name][2]


def _blas_libraries():
    import numpy

    root = os.path.dirname(os.path.dirname(numpy.__file__))
    paths = sorted(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))
    try:
        from threadpoolctl import threadpool_info

        paths += [p["filepath"] for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        pass
    return list(dict.fromkeys(os.path.realpath(path) for path in paths))  # each library once


def _find_gemm(dtype):
    """``(address, ilp64, why not)`` of the first ``cblas_?gemm`` that agrees with NumPy's product."""
    p = "s" if dtype.itemsize == 4 else "d"
    paths, failed = _blas_libraries(), []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern, ilp64 in _SYMBOLS:
            try:
                fn = getattr(lib, pattern.format(p=p))
            except AttributeError:
                continue
            address = ctypes.cast(fn, ctypes.c_void_p).value
            if _gemm_agrees(address, ilp64, dtype):
                return address, ilp64, ""
            failed.append(f"{pattern.format(p=p)} of {os.path.basename(path)}")
    if failed:
        why = f"{', '.join(failed)} disagreed with NumPy's product in the self-check"
        global _BLAS_WARNED
        if compiled() is not None and not _BLAS_WARNED:
            _BLAS_WARNED = True
            warnings.warn(
                f"rnn_xp: NumPy's BLAS, called by address from the compiled loop, failed its self-check ({why}); "
                "the compiled loop uses its own product instead (same results, slower for large steps).",
                RuntimeWarning, stacklevel=2,
            )  # fmt: skip
        return 0, False, why
    where = ", ".join(os.path.basename(path) for path in paths) or "no BLAS library found"
    return 0, False, f"NumPy's BLAS exports no cblas_{p}gemm ({where})"


def _gemm_agrees(address, ilp64, dtype):
    """Whether a (3, 5) += (3, 7) @ (5, 7).T product through ``address`` matches NumPy's."""
    import numpy

    if compiled() is None:
        return False
    rng = numpy.random.default_rng(0)
    a = rng.standard_normal((3, 7)).astype(dtype)
    w = rng.standard_normal((5, 7)).astype(dtype)
    c = rng.standard_normal((3, 5)).astype(dtype)
    want = c + a @ w.T
    run_compiled("gemm_nt", [(address, int(ilp64), a, w, c)])
    return bool(numpy.allclose(c, want, rtol=1e-5, atol=1e-5))


# -- the compiled functions ------------------------------------------------------------------


def compiled():
    """The compiled functions by name (numba imported and the module compiled once), or ``None``.

    They keep their machine code in numba's on-disk cache. Where that cache
    cannot be used (no writable folder for it: ``RuntimeError: cannot cache
    function``), they are compiled in this process without it, with one
    ``RuntimeWarning``; where numba cannot be imported at all, ``None``
    (``why_not`` says why) and the NumPy loop runs.
    """
    global _JIT, _WHY
    if _JIT is None and _numpy_loops.status():
        _JIT, _WHY = False, f"NumPy's tanh and exp cannot be called by address: {_numpy_loops.status()}"
    if _JIT is None:
        try:
            from . import _numba_cells_jit, _numba_jit
        except ImportError as exc:  # numba is optional
            _JIT, _WHY = False, f"numba is not installed ({exc})"
        except Exception as exc:  # numba is installed, its on-disk cache is not usable
            _without_cache(exc)
        else:
            _JIT, _WHY = {**_numba_jit.FUNCTIONS, **_numba_cells_jit.FUNCTIONS}, ""
    return _JIT or None


class CompileAgain(Exception):
    """A compiled function of numba's on-disk cache failed to load or save: the call runs once more.

    By then ``compiled()`` gives the functions compiled in this process
    without the cache, or ``None`` (the NumPy loop runs).
    """


def run_compiled(name, args, one_blas_thread=False, cell=None):
    """``run_parallel`` of the compiled function ``name`` (``args``: one tuple per thread).

    With a ``cell``, ``name`` is one of that cell's compiled loops
    (``_numba_cells_jit.cell_loops``).

    A corrupted cache (a truncated index, unreadable machine code) or one that
    cannot be written (a full disk) fails the first call of a function: the
    functions are then compiled anew without the cache (one
    ``RuntimeWarning``) and ``CompileAgain`` asks the caller to run again.
    The same failure without the cache is no cache's: it is raised.
    """
    try:
        functions = compiled()
        fn = functions[name] if cell is None else functions["cell_loops"](cell)[name]
        run_parallel(fn, args, one_blas_thread=one_blas_thread)
    except Exception as exc:
        if not _CACHED:
            raise
        _without_cache(exc)
        raise CompileAgain(f"numba's on-disk cache failed: {type(exc).__name__}: {exc}") from exc


def _without_cache(exc):
    """The compiled functions without numba's on-disk cache, after it failed with ``exc``; one warning."""
    with _CACHE_LOCK:  # threads (Dask's tasks) that met the failure at once switch once
        if _CACHED:
            _switch_without_cache(exc)


def _switch_without_cache(exc):
    global _JIT, _WHY, _CACHED
    _CACHED = False
    cause = f"{type(exc).__name__}: {exc}"
    try:
        functions = _load_uncached()
    except Exception as again:
        _JIT, _WHY = False, f"numba cannot compile the loops here ({type(again).__name__}: {again})"
        _warn_once(f"rnn_xp: numba cannot compile the NumPy loops here ({type(again).__name__}: {again}; "
                   f"its on-disk cache failed first: {cause}); the NumPy loop runs instead (same results, "
                   f"other speed). Set {ENV_VAR}=0 to choose this without the warning.")  # fmt: skip
        return
    _JIT, _WHY = functions, ""
    _warn_once(f"rnn_xp: numba's on-disk cache cannot be used ({cause}); the compiled NumPy loops are compiled "
               "in this process instead (seconds, once per process). A writable NUMBA_CACHE_DIR, or deleting a "
               "corrupted cache there, lets new processes load them from disk again.")  # fmt: skip


def _load_uncached():
    """Second copies of ``_numba_jit`` and ``_numba_cells_jit`` whose functions numba compiles without its
    on-disk cache (the second built on the first)."""
    base = _load_copy("_numba_jit", CACHE=False)
    cells = _load_copy("_numba_cells_jit", CACHE=False, BASE=base)
    return {**base.FUNCTIONS, **cells.FUNCTIONS}


def _load_copy(name, **given):
    """A second copy of the module ``name`` of this package, run with the globals ``given`` set beforehand."""
    import importlib.util
    import sys

    origin = importlib.util.find_spec(f"{__package__}.{name}").origin
    spec = importlib.util.spec_from_file_location(f"{__package__}.{name}_uncached", origin)
    module = importlib.util.module_from_spec(spec)
    for key, value in given.items():  # read by the module as it runs
        setattr(module, key, value)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def _warn_once(message):
    global _CACHE_WARNED
    if not _CACHE_WARNED:
        _CACHE_WARNED = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)
