"""The numba-compiled functions behind ``kernels.numba_cpu`` and ``kernels.numba_backward``, and what
``kernels._numba_cells_jit`` (the gated cells' loops) builds on.

Importing this module imports numba (which is optional); besides it only
``_numba_cells_jit`` imports numba. Every function is compiled with ``cache=True``: numba writes the
machine code beside this file (or in its user cache directory when that is
read-only) and a new process loads it instead of compiling. Where no cache
can be used, ``numba_cpu`` loads a second copy of this module with
``CACHE = False`` (compiled in the process, never written).

Five things numba does not offer are written as LLVM intrinsics: a call to
``cblas_?gemm`` through its address (the BLAS of NumPy, found at run time,
so the address is an argument and the compiled code can be cached), an
atomic add and load for the per-step barrier of two threads, a call to
NumPy's own inner loops of ``tanh`` and ``exp`` (``kernels._numpy_loops``),
through names registered with LLVM, so that the activations are NumPy's bit
for bit, and the packed product's tile (its sums in vector registers, which
numba's loops do not keep there: ``_packed_tile_intrinsic``).

The fast-math flags are ``contract`` (fused multiply-adds) and ``reassoc``
(vectorised sums) only: NaN and infinities keep their IEEE meaning, which
the edge cases (NaN inputs, infinite weights) rely on. The gated cells'
elementwise steps and activations are compiled without them: the same IEEE
operations in the order NumPy runs them.

The gated cells' loops are in ``_numba_cells_jit``, which takes from here,
by public names: ``JIT``, ``EXACT`` (the compile options), ``gemm`` and
``NO_TRANS``, the activations by row (``sigmoid_rows``, ``tanh_rows``),
``zeros_like``, ``complement_rows`` and the packed product ``packed_product_into``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _numpy_loops
from ._packed import STRIP_VECTORS, TILE_ROWS, VECTOR_BYTES

__all__ = ["CACHE", "EXACT", "FUNCTIONS", "JIT", "NO_TRANS", "complement_rows", "gemm", "sigmoid_rows",
           "tanh_rows", "zeros_like"]

_FM = {"contract", "reassoc"}
# Whether numba keeps the machine code in its on-disk cache: yes, unless the
# module was loaded with CACHE = False set beforehand (numba_cpu does, where the
# cache cannot be used).
CACHE = globals().get("CACHE", True)
_JIT = dict(nogil=True, cache=CACHE, fastmath=_FM, error_model="numpy")  # numpy: x / 0 is inf, no check

# CBLAS enumerations: row-major, A as it is, B transposed (C += A @ B.T)
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _gemm_intrinsic(int_bits):
    """``gemm(fn, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``: ``C = alpha A @ op(B) + beta C``.

    Row-major; ``op(B)`` is ``B.T`` when ``transb`` is ``_TRANS`` and ``B``
    when it is ``_NO_TRANS``. ``fn``, ``a``, ``b``, ``c`` are addresses
    (int64); the BLAS integers are ``int_bits`` wide (64 for an ILP64
    OpenBLAS); ``alpha``'s type picks float or double.
    """

    @intrinsic
    def gemm(typingctx, fn, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        sig = types.void(fn, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

        def codegen(context, builder, signature, args):
            fn_, tb_, m_, n_, k_, alpha_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args
            ity, i32 = ir.IntType(int_bits), ir.IntType(32)
            fty = context.get_value_type(signature.args[5])
            ptr = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, ity, ity, ity, fty, ptr, ity, ptr, ity,
                                                   fty, ptr, ity])  # fmt: skip
            f = builder.inttoptr(fn_, fnty.as_pointer())

            def i(v):
                return builder.trunc(v, ity) if int_bits < 64 else v

            def p(v):
                return builder.inttoptr(v, ptr)

            builder.call(f, [i32(_ROW_MAJOR), i32(_NO_TRANS), builder.trunc(tb_, i32), i(m_), i(n_), i(k_), alpha_, p(a_),
                             i(lda_), p(b_), i(ldb_), beta_, p(c_), i(ldc_)])  # fmt: skip
            return context.get_dummy_value()

        return sig, codegen

    return gemm


_gemm64 = _gemm_intrinsic(64)
_gemm32 = _gemm_intrinsic(32)


@intrinsic
def _atomic_add(typingctx, address, value):
    """``*address += value`` atomically (int64); returns the old value."""
    sig = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        p = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", p, args[1], "seq_cst")

    return sig, codegen


@intrinsic
def _atomic_load(typingctx, address):
    """``*address`` read atomically (int64, acquire)."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        p = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(p, "acquire", 8)

    return sig, codegen


@intrinsic
def _call_void(typingctx, fn):
    """Call the C function ``void fn(void)`` at address ``fn`` (``sched_yield``: its int result is dropped)."""
    sig = types.void(types.int64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return context.get_dummy_value()

    return sig, codegen


# Spins at the barrier before each yield of the core: a few microseconds of
# spinning catch the other thread's step; past that it has likely lost its
# core (more runnable threads than cores) and spinning would keep it off.
_SPINS = 4096


@njit(**_JIT)
def _barrier(address, target, yield_fn):
    """Count this thread in, then wait until ``target`` threads-steps have been counted.

    Spins, and every ``_SPINS`` reads gives the core away (``sched_yield`` at
    ``yield_fn``; 0: never).
    """
    _atomic_add(address, 1)
    spins = 0
    while _atomic_load(address) < target:
        spins += 1
        if spins == _SPINS:
            spins = 0
            if yield_fn != 0:
                _call_void(yield_fn)


@njit(**_JIT)
def _gemm(fn, ilp64, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    if ilp64:
        _gemm64(fn, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        _gemm32(fn, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


@njit(**_JIT)
def gemm_nt(fn, ilp64, a, w, c):
    """``c += a @ w.T`` through the BLAS at ``fn`` (C-contiguous arrays): the self-check's product."""
    one = c.dtype.type(1.0)
    _gemm(fn, ilp64, _TRANS, a.shape[0], w.shape[0], a.shape[1], one, np.int64(a.ctypes.data), a.shape[1],
          np.int64(w.ctypes.data), w.shape[1], one, np.int64(c.ctypes.data), c.shape[1])  # fmt: skip


# -- NumPy's own tanh and exp, called by address ---------------------------------------------
# The compiled loops' activations are NumPy's: its inner loops of tanh and exp
# (kernels._numpy_loops finds and checks them), called on a row at a time
# through names registered with LLVM here, so that the cached machine code
# finds them again in a new process (where their addresses differ).

for _name in _numpy_loops.NAMES:
    for _dt in ("float32", "float64"):
        llvm.add_symbol(_numpy_loops.symbol(_name, _dt), _numpy_loops.address(_name, _dt))


def _numpy_loop_intrinsic(name):
    """``call(like, src, dst, n, src_step, dst_step)``: NumPy's loop of ``name`` on ``n`` values.

    ``src``, ``dst`` addresses, the steps in bytes (``src == dst``: in place);
    ``like``, an array whose dtype picks the loop.
    """

    @intrinsic
    def call(typingctx, like, src, dst, n, src_step, dst_step):
        sig = types.void(like, src, dst, n, src_step, dst_step)

        def codegen(context, builder, signature, args):
            _, src_, dst_, n_, s1, s2 = args
            i8p, i64, i32 = ir.IntType(8).as_pointer(), ir.IntType(64), ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p.as_pointer(), i64.as_pointer(), i64.as_pointer(), i8p])
            dtype = str(signature.args[0].dtype)
            fn = cgutils.get_or_insert_function(builder.module, fnty, _numpy_loops.symbol(name, dtype))
            argv = cgutils.alloca_once(builder, i8p, size=2)
            builder.store(builder.inttoptr(src_, i8p), builder.gep(argv, [i32(0)]))
            builder.store(builder.inttoptr(dst_, i8p), builder.gep(argv, [i32(1)]))
            dims = cgutils.alloca_once(builder, i64)
            builder.store(n_, dims)
            steps = cgutils.alloca_once(builder, i64, size=2)
            builder.store(s1, builder.gep(steps, [i32(0)]))
            builder.store(s2, builder.gep(steps, [i32(1)]))
            builder.call(fn, [argv, dims, steps, ir.Constant(i8p, None)])
            return context.get_dummy_value()

        return sig, codegen

    return call


_tanh_loop = _numpy_loop_intrinsic("tanh")
_exp_loop = _numpy_loop_intrinsic("exp")

# The activations of the gated cells' compiled loops: NumPy's numbers bit for bit,
# compiled without fast-math (the IEEE operations in the order NumPy runs them).
_EXACT = dict(nogil=True, cache=CACHE, error_model="numpy")


@njit(**_EXACT)
def _tanh_rows(z):
    """``numpy.tanh(z)`` of a 2-D array (rows of any stride), a new C-contiguous array."""
    out = np.empty(z.shape, z.dtype)
    for i in range(z.shape[0]):
        _tanh_loop(z, z[i].ctypes.data, out[i].ctypes.data, z.shape[1], z.strides[1], out.strides[1])
    return out


@njit(**_EXACT)
def _sigmoid_rows(z):
    """``_activations``' sigmoid of a 2-D array as NumPy computes it: ``e = exp(-|z|)``, then
    ``1 / (1 + e)`` where ``z >= 0`` and ``e / (1 + e)`` elsewhere; a new C-contiguous array."""
    out = np.empty(z.shape, z.dtype)
    one = z.dtype.type(1)
    n = z.shape[1]
    for i in range(z.shape[0]):
        zi, oi = z[i], out[i]
        for j in range(n):
            oi[j] = -abs(zi[j])
        _exp_loop(z, oi.ctypes.data, oi.ctypes.data, n, oi.strides[0], oi.strides[0])
        for j in range(n):
            e = oi[j]
            oi[j] = (one if zi[j] >= 0 else e) / (one + e)  # 1 / (1 + e) or e / (1 + e): one division
    return out


@njit(**_EXACT)
def _zeros_like(z):
    return np.zeros_like(z)


@njit(**_EXACT)
def _complement_rows(z):
    """``1 - z`` of a 2-D array in its own dtype (a float32 ``z`` stays float32), a new C-contiguous array."""
    out = np.empty(z.shape, z.dtype)
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        zi, oi = z[i], out[i]
        for j in range(z.shape[1]):
            oi[j] = one - zi[j]
    return out


@njit(**_JIT)
def tanh_into(x, out):
    """``out[:] = tanh(x)`` as the compiled loops compute it (1-D arrays of one dtype; for tests)."""
    _tanh_loop(x, x.ctypes.data, out.ctypes.data, x.shape[0], x.strides[0], out.strides[0])


@njit(**_JIT)
def sigmoid_into(x, out):
    """``out[:] = sigmoid(x)`` as the gated cells' compiled loops compute it (1-D arrays; for tests)."""
    out[:] = _sigmoid_rows(x.reshape(1, x.shape[0]))[0]


# -- the forward recurrence ------------------------------------------------------------------


# Bytes of ``Wh``'s rows that ``_own_product`` keeps for every row of ``cur``
# before it moves on: a block that stays in a core's L2 cache.
_PANEL_BYTES = 1 << 17


@njit(**_JIT)
def _own_product(o, cur, Wh, r0, r1, c0, c1, zero):
    """``o[r0:r1, c0:c1] += cur[r0:r1] @ Wh[c0:c1].T``: four rows by four columns at a time.

    Sixteen sums stay in registers along ``k`` (the compiler vectorises each
    over ``k``): every row of ``Wh`` read serves four rows, every row of
    ``cur`` four columns. The columns go in panels of about ``_PANEL_BYTES``
    of ``Wh``, each used by every row while it is in cache.

    Every element is summed by the same code whatever the rows around it:
    the last group of fewer than four rows repeats its last row, every tile
    writes all its sums to ``acc`` (so the compiler cannot drop the unused
    ones and vectorise the rest another way), and only the group's own rows
    are added to ``o``; the columns past the last multiple of four (counted
    from 0: ``c0`` is a multiple of four or ``c1`` the end) take the
    one-column tile. A row's result is then the same bits in any batch and
    on any thread split (Dask's chunks, the two threads' rows).
    """
    acc = np.empty((4, 4), dtype=o.dtype)
    panel = max(4, (_PANEL_BYTES // max(1, Wh.shape[1] * Wh.itemsize)) // 4 * 4)
    for p0 in range(c0, c1, panel):
        p1 = min(p0 + panel, c1)
        for i in range(r0, r1, 4):
            n = min(4, r1 - i)
            i1, i2, i3 = i + min(1, n - 1), i + min(2, n - 1), i + min(3, n - 1)
            j = p0
            while j < p1:
                w = 4 if j + 4 <= p1 else 1
                if w == 4:
                    _tile_4x4(acc, cur, Wh, i, i1, i2, i3, j, zero)
                else:
                    _tile_4x1(acc, cur, Wh, i, i1, i2, i3, j, zero)
                for r in range(n):
                    for q in range(w):
                        o[i + r, j + q] += acc[r, q]
                j += w


@njit(**_JIT)
def _tile_4x4(acc, cur, Wh, i0, i1, i2, i3, j, zero):
    """``acc = cur[[i0, i1, i2, i3]] @ Wh[j:j+4].T`` with sixteen sums in registers."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
    for k in range(Wh.shape[1]):
        h0, h1, h2, h3 = cur[i0, k], cur[i1, k], cur[i2, k], cur[i3, k]
        w0, w1, w2, w3 = Wh[j, k], Wh[j + 1, k], Wh[j + 2, k], Wh[j + 3, k]
        a00 += h0 * w0
        a01 += h0 * w1
        a02 += h0 * w2
        a03 += h0 * w3
        a10 += h1 * w0
        a11 += h1 * w1
        a12 += h1 * w2
        a13 += h1 * w3
        a20 += h2 * w0
        a21 += h2 * w1
        a22 += h2 * w2
        a23 += h2 * w3
        a30 += h3 * w0
        a31 += h3 * w1
        a32 += h3 * w2
        a33 += h3 * w3
    acc[0, 0], acc[0, 1], acc[0, 2], acc[0, 3] = a00, a01, a02, a03
    acc[1, 0], acc[1, 1], acc[1, 2], acc[1, 3] = a10, a11, a12, a13
    acc[2, 0], acc[2, 1], acc[2, 2], acc[2, 3] = a20, a21, a22, a23
    acc[3, 0], acc[3, 1], acc[3, 2], acc[3, 3] = a30, a31, a32, a33


@njit(**_JIT)
def _tile_4x1(acc, cur, Wh, i0, i1, i2, i3, j, zero):
    """``acc[:, 0] = cur[[i0, i1, i2, i3]] @ Wh[j]``."""
    a0 = a1 = a2 = a3 = zero
    for k in range(Wh.shape[1]):
        w = Wh[j, k]
        a0 += cur[i0, k] * w
        a1 += cur[i1, k] * w
        a2 += cur[i2, k] * w
        a3 += cur[i3, k] * w
    acc[0, 0], acc[1, 0], acc[2, 0], acc[3, 0] = a0, a1, a2, a3


# -- the packed product ----------------------------------------------------------------------
# ``W`` packed once per call (``_packed.pack``): a tile of up to TILE_ROWS rows by one
# strip keeps its sums in vector registers over all of K, each step one input value
# broadcast times the strip's row (no horizontal sums, the strip read in order).
# The strips are the outer loop: one strip stays in cache for every row.


def _packed_tile_intrinsic(rows, strips=1, a_columns=False):
    """``tile(like, o, ldo, a, lda, w, K)``: ``o[r, :strips*S] += sum_k a[r, k] * W_k`` for ``r < rows``.

    ``o``, ``a``, ``w`` addresses (int64), ``ldo``, ``lda`` their rows'
    strides in elements, ``w`` the first of ``strips`` consecutive packed
    strips ``(K, S)`` (``W_k`` their rows ``k`` side by side); ``like`` an
    array whose dtype is the numbers'. Each sum starts at zero and takes
    ``k`` in order by a multiply-add (``llvm.fmuladd``), then is added to
    ``o``: the same operations for an element whatever ``rows`` and
    ``strips`` (more strips only give a tile of few rows more independent
    sums, to hide the multiply-add's latency). ``a_columns``: ``a`` is held
    transposed, ``a[r, k]`` at ``a + k * lda + r`` (the weight gradients'
    ``d.T @ a``, ``outer_packed``).
    """

    @intrinsic
    def tile(typingctx, like, o, ldo, a, lda, w, K):
        sig = types.void(like, o, ldo, a, lda, w, K)

        def codegen(context, builder, signature, args):
            _, o_, ldo_, a_, lda_, w_, K_ = args
            fty = context.get_value_type(signature.args[0].dtype)
            size = context.get_abi_sizeof(fty)
            lanes = VECTOR_BYTES // size
            vectors = strips * STRIP_VECTORS  # per row: every strip's vectors side by side
            vty, i64, i32 = ir.VectorType(fty, lanes), ir.IntType(64), ir.IntType(32)
            fp, vp = fty.as_pointer(), vty.as_pointer()
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                                 f"llvm.fmuladd.v{lanes}f{size * 8}")  # fmt: skip
            zero = ir.Constant(vty, [0.0] * lanes)
            sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)] for _ in range(rows)]
            o_p, a_p, w_p = (builder.inttoptr(v, fp) for v in (o_, a_, w_))
            splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
            width = i64(STRIP_VECTORS * lanes)
            strip_size = builder.mul(K_, width)  # elements from one strip to the next
            with cgutils.for_range(builder, K_) as loop:
                k = loop.index
                ws = []
                for m in range(strips):
                    w_row = builder.gep(w_p, [builder.add(builder.mul(i64(m), strip_size), builder.mul(k, width))])
                    ws += [builder.load(builder.bitcast(builder.gep(w_row, [i64(v * lanes)]), vp), align=size)
                           for v in range(STRIP_VECTORS)]  # fmt: skip
                for r in range(rows):
                    at = builder.add(builder.mul(k, lda_), i64(r)) if a_columns else \
                        builder.add(builder.mul(i64(r), lda_), k)  # fmt: skip
                    x = builder.load(builder.gep(a_p, [at]))
                    x = builder.insert_element(ir.Constant(vty, ir.Undefined), x, i32(0))
                    x = builder.shuffle_vector(x, ir.Constant(vty, ir.Undefined), splat)
                    for v in range(vectors):
                        builder.store(builder.call(fma, [x, ws[v], builder.load(sums[r][v])]), sums[r][v])
            for r in range(rows):
                o_row = builder.gep(o_p, [builder.mul(i64(r), ldo_)])
                for v in range(vectors):
                    p = builder.bitcast(builder.gep(o_row, [i64(v * lanes)]), vp)
                    builder.store(builder.fadd(builder.load(p, align=size), builder.load(sums[r][v])), p, align=size)
            return context.get_dummy_value()

        return sig, codegen

    return tile


# Tiles of one to three rows over several strips at once (eight sums or more in flight)
_tile1x4, _tile1x2 = _packed_tile_intrinsic(1, 4), _packed_tile_intrinsic(1, 2)
_tile2x2, _tile3x2 = _packed_tile_intrinsic(2, 2), _packed_tile_intrinsic(3, 2)


@njit(**_JIT)
def _packed_tile_strips(n, m, like, o, ldo, a, lda, w, K):
    """``n`` rows (1 to 3) by ``m`` consecutive whole strips: 1 x 4, 1 x 2, 2 x 2 or 3 x 2."""
    if n == 1:
        if m == 4:
            _tile1x4(like, o, ldo, a, lda, w, K)
        else:
            _tile1x2(like, o, ldo, a, lda, w, K)
    elif n == 2:
        _tile2x2(like, o, ldo, a, lda, w, K)
    else:
        _tile3x2(like, o, ldo, a, lda, w, K)


_tile1, _tile2, _tile3, _tile4, _tile5, _tile6, _tile7, _tile8 = (_packed_tile_intrinsic(r) for r in range(1, 9))


@njit(**_JIT)
def _packed_tile(n, like, o, ldo, a, lda, w, K):
    """``_tile<n>``: a tile of ``n`` rows (1 to ``TILE_ROWS``)."""
    if n == 8:
        _tile8(like, o, ldo, a, lda, w, K)
    elif n == 7:
        _tile7(like, o, ldo, a, lda, w, K)
    elif n == 6:
        _tile6(like, o, ldo, a, lda, w, K)
    elif n == 5:
        _tile5(like, o, ldo, a, lda, w, K)
    elif n == 4:
        _tile4(like, o, ldo, a, lda, w, K)
    elif n == 3:
        _tile3(like, o, ldo, a, lda, w, K)
    elif n == 2:
        _tile2(like, o, ldo, a, lda, w, K)
    else:
        _tile1(like, o, ldo, a, lda, w, K)


@njit(**_JIT)
def _packed_product(o, cur, WP, r0, r1, c0, c1, scratch):
    """``o[r0:r1, c0:c1] += cur[r0:r1] @ W[c0:c1].T`` for ``W`` ``(N, K)`` packed into ``WP`` (``_packed.pack``).

    ``o`` and ``cur`` have rows of unit stride; ``scratch`` ``(TILE_ROWS,
    S)`` takes a strip that ``c0:c1`` covers in part (``o``'s values of those
    columns in, ``o`` plus the sums out). One to three rows take whole strips
    several at a time (one row four, then two; two or three rows two: four
    to twelve sums in flight, where one strip alone has two to six). Every
    element is ``o`` plus the same
    multiply-adds in the same order whatever its tile, rows or columns
    around it: a row's result is the same bits in any batch and on any split
    of the rows or columns.
    """
    K, S = WP.shape[1], WP.shape[2]
    size = o.itemsize
    ldo, lda = o.strides[0] // size, cur.strides[0] // size
    o_at, a_at, w_at, s_at = (np.int64(o.ctypes.data), np.int64(cur.ctypes.data), np.int64(WP.ctypes.data),
                              np.int64(scratch.ctypes.data))  # fmt: skip
    first = c0 // S
    if 0 < r1 - r0 <= 3 and first * S == c0:  # few rows: whole strips several at a time, the rest below
        n = r1 - r0
        m = 4 if n == 1 else 2
        while m >= 2:
            while (first + m) * S <= c1:
                _packed_tile_strips(n, m, o, o_at + (r0 * ldo + first * S) * size, ldo, a_at + r0 * lda * size,
                                    lda, w_at + first * K * S * size, K)  # fmt: skip
                first += m
            m = 2 if n == 1 and m == 4 else 0  # one row: two strips at a time for what is left
    for s in range(first, (c1 + S - 1) // S):
        j0 = s * S
        lo, hi = max(j0, c0), min(j0 + S, c1)
        w = w_at + s * K * S * size
        for i in range(r0, r1, TILE_ROWS):
            n = min(TILE_ROWS, r1 - i)
            if lo == j0 and hi == j0 + S:
                _packed_tile(n, o, o_at + (i * ldo + j0) * size, ldo, a_at + i * lda * size, lda, w, K)
            else:  # the strip's columns in c0:c1 through the scratch: o's values in, o + sums out
                for r in range(n):
                    orow, srow = o[i + r], scratch[r]
                    for j in range(S):
                        srow[j] = orow[j0 + j] if lo <= j0 + j < hi else 0
                _packed_tile(n, o, s_at, S, a_at + i * lda * size, lda, w, K)
                for r in range(n):
                    orow, srow = o[i + r], scratch[r]
                    for j in range(lo, hi):
                        orow[j] = srow[j - j0]


@njit(**_JIT)
def packed_product(o, cur, WP, r0, r1, c0, c1):
    """``_packed_product`` with its own scratch (C-contiguous ``o``, ``cur``; for tests and ``project_packed``)."""
    _packed_product(o, cur, WP, r0, r1, c0, c1, np.empty((TILE_ROWS, WP.shape[2]), o.dtype))


_ctile1, _ctile2, _ctile3, _ctile4, _ctile5, _ctile6, _ctile7, _ctile8 = (
    _packed_tile_intrinsic(r, a_columns=True) for r in range(1, 9))


@njit(**_JIT)
def _packed_tile_columns(n, like, o, ldo, a, lda, w, K):
    """``_ctile<n>``: a tile of ``n`` rows (1 to ``TILE_ROWS``) of an ``a`` held transposed."""
    if n == 8:
        _ctile8(like, o, ldo, a, lda, w, K)
    elif n == 7:
        _ctile7(like, o, ldo, a, lda, w, K)
    elif n == 6:
        _ctile6(like, o, ldo, a, lda, w, K)
    elif n == 5:
        _ctile5(like, o, ldo, a, lda, w, K)
    elif n == 4:
        _ctile4(like, o, ldo, a, lda, w, K)
    elif n == 3:
        _ctile3(like, o, ldo, a, lda, w, K)
    elif n == 2:
        _ctile2(like, o, ldo, a, lda, w, K)
    else:
        _ctile1(like, o, ldo, a, lda, w, K)


@njit(**_JIT)
def outer_packed(o, d, AP, r0, r1, steps):
    """``o[r0:r1] += d[:, r0:r1].T @ A`` for ``A`` ``(N, F)`` packed by strips of columns into ``AP`` ``(ceil(F /
    S), N, S)`` (``_packed.pack_columns``); ``o`` ``(F_d, ceil(F / S) * S)`` C-contiguous, ``d`` ``(N, F_d)`` with
    rows of unit stride.

    The sum over the ``N`` rows runs ``steps`` rows at a time (``d``'s block
    for every tile of ``o`` then stays in this core's caches): each element is
    ``o`` plus one sum per block, each in order of the rows, whatever
    ``r0:r1``.
    """
    N, S = AP.shape[1], AP.shape[2]
    size = o.itemsize
    ldo, ldd = o.strides[0] // size, d.strides[0] // size
    o_at, d_at, w_at = np.int64(o.ctypes.data), np.int64(d.ctypes.data), np.int64(AP.ctypes.data)
    for k0 in range(0, N, steps):
        kn = min(steps, N - k0)
        for s in range(AP.shape[0]):
            w = w_at + (s * N + k0) * S * size
            for i in range(r0, r1, TILE_ROWS):
                _packed_tile_columns(min(TILE_ROWS, r1 - i), o, o_at + (i * ldo + s * S) * size, ldo,
                                     d_at + (k0 * ldd + i) * size, ldd, w, kn)  # fmt: skip


@njit(**_JIT)
def _project(buf, xs, WxK, r0, r1, c0, c1, scratch):
    """``buf[:, r0:r1, c0:c1] += xs[:, r0:r1] @ Wx[c0:c1].T`` (``buf``, ``xs`` C-contiguous; ``WxK`` is ``Wx``
    packed, ``_packed.pack``).

    With every row, one product over all ``n * B`` rows (the steps share a
    read of each strip of ``Wx``); with some rows, one per step.
    """
    n, B = xs.shape[0], xs.shape[1]
    if r0 == 0 and r1 == B:
        _packed_product(buf.reshape(n * B, buf.shape[2]), xs.reshape(n * B, xs.shape[2]), WxK, 0, n * B, c0, c1,
                        scratch)  # fmt: skip
    else:
        for t in range(n):
            _packed_product(buf[t], xs[t], WxK, r0, r1, c0, c1, scratch)


@njit(**_JIT)
def project_rows(out, x, W, r0, r1):
    """``out[r0:r1] += x[r0:r1] @ W.T`` with the own product (2-D, C-contiguous; the gated cells' projection)."""
    _own_product(out, x, W, r0, r1, 0, W.shape[0], out.dtype.type(0))


@njit(**_JIT)
def _activate(o, cur, nxt, relu, leaky, lk, lk1, zero):
    """``o = (1 - leak) * cur + leak * f(o)`` and ``nxt = o`` on 1-D rows of one length.

    Loops count from 0 over row views: numba then knows the index is not
    negative, and the compiler vectorises them.
    """
    n = o.shape[0]
    if relu:
        for j in range(n):
            z = o[j]
            o[j] = zero if z < zero else z  # NaN stays NaN
    else:
        _tanh_loop(o, o.ctypes.data, o.ctypes.data, n, o.strides[0], o.strides[0])  # NumPy's tanh, in place
    if leaky:
        for j in range(n):
            o[j] = lk1 * cur[j] + lk * o[j]
    for j in range(n):
        nxt[j] = o[j]


@njit(**_JIT)
def _freeze(o, cur, nxt, zero):
    """A step past the sequence's length: ``nxt = cur``, ``o = 0`` (1-D rows)."""
    for j in range(o.shape[0]):
        nxt[j] = cur[j]
        o[j] = zero


@njit(**_JIT)
def recurrence(buf, s, e, k0, reverse, lens, S, Wh, WK, r0, r1, c0, c1, flags, coef, gemm, ilp64, sync, nsync, xs,
               WxK):  # fmt: skip
    """Steps ``s..e-1`` (run backwards with ``reverse``) of rows ``r0:r1`` and columns ``c0:c1``.

    ``buf`` ``(e - s, B, H)`` holds the input projection of those steps and
    is overwritten with the states (zeros past a sequence's length). With
    ``xs`` ``(e - s, B, D)`` not empty, ``buf`` holds only the bias, and the
    function first adds ``xs @ Wx.T`` (``WxK``: ``Wx`` ``(H, D)`` packed) to
    its rows and columns of every step with the packed product: no BLAS
    runs, and no thread waits for another before its steps.
    ``S`` ``(2, B, H)`` is the double-buffered state: the k-th step run
    (counting from ``k0``) reads ``S[k % 2]`` and writes ``S[(k + 1) % 2]``.
    ``flags`` is ``(lengths given, relu, leak != 1)``, ``coef`` ``(leak, 1 - leak)``
    in the dtype. ``gemm`` is the address of ``cblas_?gemm``, and ``Wh`` is
    then the C-contiguous ``Wh.T`` (OpenBLAS multiplies a short matrix by it
    twice as fast as by ``Wh`` transposed); with ``gemm`` 0 the packed
    product reads ``WK``, ``Wh`` packed (``_packed.pack``). With ``nsync`` > 1 threads share the steps by columns and
    wait for each other before every step but the first on the counter ``sync[0]``
    (``sync[1]`` is the address of ``sched_yield``, or 0).
    """
    has_lens, relu, leaky = flags
    B, H = S.shape[1], S.shape[2]
    lk, lk1 = coef[0], coef[1]
    one = lk - lk + lk1 + lk  # 1 in the dtype (lk + lk1 is 1 in any dtype: exact)
    zero = lk - lk
    size = S.itemsize
    s_at, buf_at, w_at = np.int64(S.ctypes.data), np.int64(buf.ctypes.data), np.int64(Wh.ctypes.data)
    sync_at = np.int64(sync.ctypes.data)
    work = r1 > r0 and c1 > c0
    scratch = np.empty((TILE_ROWS, WK.shape[2]), S.dtype)  # the packed product's partial strips
    if xs.shape[0] > 0 and work:
        _project(buf, xs, WxK, r0, r1, c0, c1, scratch)
    for m in range(e - s):
        t = e - 1 - m if reverse else s + m
        k = k0 + m
        cur, nxt, o = S[k % 2], S[(k + 1) % 2], buf[t - s]
        if nsync > 1 and m > 0:  # the other thread's previous step is written
            _barrier(sync_at, nsync * m, sync[1])
        if work:
            if gemm != 0:
                a_at = s_at + ((k % 2) * B * H + r0 * H) * size
                c_at = buf_at + ((t - s) * B * H + r0 * H + c0) * size
                _gemm(gemm, ilp64, _NO_TRANS, r1 - r0, c1 - c0, H, one, a_at, H, w_at + c0 * size, H, one, c_at, H)
            else:
                _packed_product(o, cur, WK, r0, r1, c0, c1, scratch)
            for i in range(r0, r1):
                if has_lens and lens[i] <= t:  # past its length: the state is kept, the output is 0
                    _freeze(o[i, c0:c1], cur[i, c0:c1], nxt[i, c0:c1], zero)
                else:
                    _activate(o[i, c0:c1], cur[i, c0:c1], nxt[i, c0:c1], relu, leaky, lk, lk1, zero)


# -- the backward recurrence -----------------------------------------------------------------


@njit(**_JIT)
def _grad_row(d, cur, dh, nxt, has_dh, leaky, lk1, zero):
    """One row: ``d *= g_t`` with ``g_t = cur + dh``; ``nxt = (1 - leak) * g_t`` (or 0)."""
    for j in range(d.shape[0]):
        gt = cur[j] + dh[j] if has_dh else cur[j]
        d[j] *= gt
        nxt[j] = lk1 * gt if leaky else zero


@njit(**_JIT)
def _copy_zero(d, cur, nxt, zero):
    """A frozen row: ``d = 0``, ``nxt = cur``."""
    for j in range(d.shape[0]):
        d[j] = zero
        nxt[j] = cur[j]


@njit(**_JIT)
def backward_recurrence(dz, dh, has_dh, G, Wh, WK, lens, reverse, r0, r1, c0, c1, flags, coef, gemm, ilp64,
                        sync, nsync):  # fmt: skip
    """The gradient's loop, against the forward's direction, rows ``r0:r1`` and columns ``c0:c1``.

    ``dz`` ``(T, B, H)`` holds ``leak * f'(z_t)`` and is multiplied in place
    into ``dL/dz_t``. ``G`` ``(2, B, H)`` is the double-buffered gradient
    reaching the carried state (``G[0]`` holds ``dh_n`` or zeros): the k-th
    step run reads ``G[k % 2]`` and writes ``G[(k + 1) % 2]``. ``flags`` is
    ``(lengths given, leak != 1)``, ``coef`` ``(leak, 1 - leak)`` in the
    dtype. ``gemm``: the address of ``cblas_?gemm`` with ``Wh``; 0: the
    packed product with ``WK``, ``Wh.T`` packed (``_packed.pack``).
    With ``nsync`` > 1 threads split the columns and meet after each step
    (``sync`` as in ``recurrence``).
    """
    has_lens, leaky = flags
    T, B, H = dz.shape[0], dz.shape[1], dz.shape[2]
    lk1 = coef[1]
    zero = lk1 - lk1
    one = coef[0] + lk1
    size = dz.itemsize
    g_at, dz_at, w_at = np.int64(G.ctypes.data), np.int64(dz.ctypes.data), np.int64(Wh.ctypes.data)
    sync_at = np.int64(sync.ctypes.data)
    work = r1 > r0 and c1 > c0
    scratch = np.empty((TILE_ROWS, WK.shape[2]), dz.dtype)  # the packed product's partial strips
    for m in range(T):
        t = m if reverse else T - 1 - m
        cur, nxt, d = G[m % 2], G[(m + 1) % 2], dz[t]
        if work:
            # dz_t = (g + dh_t) * leak f'(z_t) on this thread's block (frozen rows: 0);
            # nxt starts as (1 - leak) * (g + dh_t), the gradient through the leak.
            for i in range(r0, r1):
                if has_lens and lens[i] <= t:  # a frozen step: no gradient, g passes through
                    _copy_zero(d[i, c0:c1], cur[i, c0:c1], nxt[i, c0:c1], zero)
                else:
                    dh_row = dh[t, i, c0:c1] if has_dh else cur[i, c0:c1]
                    _grad_row(d[i, c0:c1], cur[i, c0:c1], dh_row, nxt[i, c0:c1], has_dh, leaky, lk1, zero)
        if nsync > 1:  # every column of dz_t is needed before the product
            _barrier(sync_at, nsync * (m + 1), sync[1])
        if work:
            if gemm != 0:
                a_at = dz_at + (t * B * H + r0 * H) * size
                c_at = g_at + (((m + 1) % 2) * B * H + r0 * H + c0) * size
                _gemm(gemm, ilp64, _NO_TRANS, r1 - r0, c1 - c0, H, one, a_at, H, w_at + c0 * size, H, one, c_at, H)
            else:  # nxt += d @ Wh by the packed product (WK: Wh.T packed)
                _packed_product(nxt, d, WK, r0, r1, c0, c1, scratch)
            if has_lens:  # a frozen step passes g through exactly (0 @ Wh is NaN where Wh is infinite)
                for i in range(r0, r1):
                    if lens[i] <= t:
                        _copy_zero(d[i, c0:c1], cur[i, c0:c1], nxt[i, c0:c1], zero)


# -- the gated cells' loops ------------------------------------------------------------------
# One forward and one backward loop for every cell, compiled from the cell's own
# pointwise and pointwise_backward (njit-compiled as they are, with the activations
# of _OPS_OF by role). The loops are written once here; each cell gets its own
# compiled copy (cell_loops), whose globals hold the cell's functions and whose
# closure holds a digest of the cell's code: numba's cache keeps one entry per
# digest, so editing a cell compiles its loops anew instead of loading stale code.


# What _numba_cells_jit builds on, under public names (that module reads them off this one).
JIT, EXACT, NO_TRANS = _JIT, _EXACT, _NO_TRANS
gemm, sigmoid_rows, tanh_rows, zeros_like, complement_rows = _gemm, _sigmoid_rows, _tanh_rows, _zeros_like, _complement_rows
packed_product_into = _packed_product

FUNCTIONS = {
    "recurrence": recurrence,
    "backward_recurrence": backward_recurrence,
    "gemm_nt": gemm_nt,
    "project_rows": project_rows,
    "packed_product": packed_product,
    "outer_packed": outer_packed,
    "tanh_into": tanh_into,
    "sigmoid_into": sigmoid_into,
}
