"""The numba-compiled functions behind ``kernels.numba_cpu``, ``kernels.numba_backward`` and ``kernels.numba_cells``.

Importing this module imports numba (which is optional); nothing else here
imports it. Every function is compiled with ``cache=True``: numba writes the
machine code beside this file (or in its user cache directory when that is
read-only) and a new process loads it instead of compiling. Where no cache
can be used, ``numba_cpu`` loads a second copy of this module with
``CACHE = False`` (compiled in the process, never written).

Four things numba does not offer are written as LLVM intrinsics: a call to
``cblas_?gemm`` through its address (the BLAS of NumPy, found at run time,
so the address is an argument and the compiled code can be cached), an
atomic add and load for the per-step barrier of two threads, and a call to
NumPy's own inner loops of ``tanh`` and ``exp`` (``kernels._numpy_loops``),
through names registered with LLVM, so that the activations are NumPy's bit
for bit.

The fast-math flags are ``contract`` (fused multiply-adds) and ``reassoc``
(vectorised sums) only: NaN and infinities keep their IEEE meaning, which
the edge cases (NaN inputs, infinite weights) rely on. The gated cells'
elementwise steps and activations are compiled without them: the same IEEE
operations in the order NumPy runs them.

The gated cells' loops (``cell_loops``) are written once and compiled for
each cell from its own ``pointwise`` and ``pointwise_backward``.
"""

from __future__ import annotations

import hashlib as _hashlib
import marshal as _marshal
import types as _types

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import _numpy_loops

__all__ = ["CACHE", "FUNCTIONS"]

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


@njit(**_JIT)
def _own_product(o, cur, Wh, r0, r1, c0, c1, zero):
    """``o[r0:r1, c0:c1] += cur[r0:r1] @ Wh[c0:c1].T``: four columns at a time, sums in registers."""
    H = Wh.shape[1]
    for i in range(r0, r1):
        j = c0
        while j + 4 <= c1:
            a0 = a1 = a2 = a3 = zero
            for k in range(H):
                h = cur[i, k]
                a0 += h * Wh[j, k]
                a1 += h * Wh[j + 1, k]
                a2 += h * Wh[j + 2, k]
                a3 += h * Wh[j + 3, k]
            o[i, j] += a0
            o[i, j + 1] += a1
            o[i, j + 2] += a2
            o[i, j + 3] += a3
            j += 4
        while j < c1:
            a0 = zero
            for k in range(H):
                a0 += cur[i, k] * Wh[j, k]
            o[i, j] += a0
            j += 1


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
def recurrence(buf, s, e, k0, reverse, lens, S, Wh, r0, r1, c0, c1, flags, coef, gemm, ilp64, sync, nsync):
    """Steps ``s..e-1`` (run backwards with ``reverse``) of rows ``r0:r1`` and columns ``c0:c1``.

    ``buf`` ``(e - s, B, H)`` holds the input projection of those steps and
    is overwritten with the states (zeros past a sequence's length).
    ``S`` ``(2, B, H)`` is the double-buffered state: the k-th step run
    (counting from ``k0``) reads ``S[k % 2]`` and writes ``S[(k + 1) % 2]``.
    ``flags`` is ``(lengths given, relu, leak != 1)``, ``coef`` ``(leak, 1 - leak)``
    in the dtype. ``gemm`` is the address of ``cblas_?gemm``, and ``Wh`` is
    then the C-contiguous ``Wh.T`` (OpenBLAS multiplies a short matrix by it
    twice as fast as by ``Wh`` transposed); with ``gemm`` 0 the own product
    loop reads the rows of ``Wh`` itself. With ``nsync`` > 1 threads share the steps by columns and
    wait for each other after every step on the counter ``sync[0]`` (``sync[1]`` is
    the address of ``sched_yield``, or 0).
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
    for m in range(e - s):
        t = e - 1 - m if reverse else s + m
        k = k0 + m
        cur, nxt, o = S[k % 2], S[(k + 1) % 2], buf[t - s]
        if work:
            if gemm != 0:
                a_at = s_at + ((k % 2) * B * H + r0 * H) * size
                c_at = buf_at + ((t - s) * B * H + r0 * H + c0) * size
                _gemm(gemm, ilp64, _NO_TRANS, r1 - r0, c1 - c0, H, one, a_at, H, w_at + c0 * size, H, one, c_at, H)
            else:
                _own_product(o, cur, Wh, r0, r1, c0, c1, zero)
            for i in range(r0, r1):
                if has_lens and lens[i] <= t:  # past its length: the state is kept, the output is 0
                    _freeze(o[i, c0:c1], cur[i, c0:c1], nxt[i, c0:c1], zero)
                else:
                    _activate(o[i, c0:c1], cur[i, c0:c1], nxt[i, c0:c1], relu, leaky, lk, lk1, zero)
        if nsync > 1:
            _barrier(sync_at, nsync * (m + 1), sync[1])


# -- the backward recurrence -----------------------------------------------------------------


@njit(**_JIT)
def _own_product_nn(g, dz, Wh, r0, r1, c0, c1):
    """``g[r0:r1, c0:c1] += dz[r0:r1] @ Wh[:, c0:c1]``: a row of Wh at a time, sums in g."""
    H = Wh.shape[0]
    for i in range(r0, r1):
        grow = g[i, c0:c1]
        for k in range(H):
            d = dz[i, k]
            wrow = Wh[k, c0:c1]
            for j in range(grow.shape[0]):
                grow[j] += d * wrow[j]


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
def backward_recurrence(dz, dh, has_dh, G, Wh, lens, reverse, r0, r1, c0, c1, flags, coef, gemm, ilp64,
                        sync, nsync):  # fmt: skip
    """The gradient's loop, against the forward's direction, rows ``r0:r1`` and columns ``c0:c1``.

    ``dz`` ``(T, B, H)`` holds ``leak * f'(z_t)`` and is multiplied in place
    into ``dL/dz_t``. ``G`` ``(2, B, H)`` is the double-buffered gradient
    reaching the carried state (``G[0]`` holds ``dh_n`` or zeros): the k-th
    step run reads ``G[k % 2]`` and writes ``G[(k + 1) % 2]``. ``flags`` is
    ``(lengths given, leak != 1)``, ``coef`` ``(leak, 1 - leak)`` in the
    dtype. ``gemm``: the address of ``cblas_?gemm`` (0: the own loop).
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
            else:
                _own_product_nn(nxt, d, Wh, r0, r1, c0, c1)
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

_OPS_OF = {"sigmoid": _sigmoid_rows, "tanh": _tanh_rows}  # the activations the compiled loops take


@njit(**_JIT)
def _mm(A, a0, Bm, C, c0, n):
    """``C[c0:c0+n] = A[a0:a0+n] @ Bm``, a row of ``Bm`` at a time (the own product, for small steps)."""
    K, N = Bm.shape
    for i in range(n):
        crow = C[c0 + i]
        for j in range(N):
            crow[j] = 0
        for k in range(K):
            a = A[a0 + i, k]
            brow = Bm[k]
            for j in range(N):
                crow[j] += a * brow[j]


@njit(**_JIT)
def _mm_gates(A, W, HG, r0, n):
    """``HG[g, r0:r0+n] = A[r0:r0+n] @ W[:, g * H:(g + 1) * H]`` for every gate g (the own product)."""
    G, H = HG.shape[0], HG.shape[2]
    K = W.shape[0]
    for i in range(r0, r0 + n):
        for g in range(G):
            crow = HG[g, i]
            for j in range(H):
                crow[j] = 0
        for k in range(K):
            a = A[i, k]
            wrow = W[k]
            for g in range(G):
                crow = HG[g, i]
                for j in range(H):
                    crow[j] += a * wrow[g * H + j]


@njit(**_JIT)
def _put(dst, d0, src):
    """``dst[d0:d0+n] = src`` for 2-D ``src`` ``(n, m)`` (loops: quick to compile, whatever the layouts)."""
    for i in range(src.shape[0]):
        drow, srow = dst[d0 + i], src[i]
        for j in range(src.shape[1]):
            drow[j] = srow[j]


@njit(**_JIT)
def _put_at(dst, d0, c0, src):
    """``dst[d0:d0+n, c0:c0+m] = src`` for 2-D ``src`` ``(n, m)``."""
    for i in range(src.shape[0]):
        drow, srow = dst[d0 + i], src[i]
        for j in range(src.shape[1]):
            drow[c0 + j] = srow[j]


@njit(**_JIT)
def _add_into(dst, d0, src):
    """``dst[d0:d0+n] += src`` for 2-D ``src``."""
    for i in range(src.shape[0]):
        drow, srow = dst[d0 + i], src[i]
        for j in range(src.shape[1]):
            drow[j] += srow[j]


@njit(**_JIT)
def _sum_rows(a, b, r0, r1, with_b):
    """A new ``(r1 - r0, m)`` array: ``a[r0:r1] + b[r0:r1]`` (``a[r0:r1]`` without ``with_b``)."""
    out = np.empty((r1 - r0, a.shape[1]), a.dtype)
    for i in range(r1 - r0):
        orow, arow = out[i], a[r0 + i]
        if with_b:
            brow = b[r0 + i]
            for j in range(a.shape[1]):
                orow[j] = arow[j] + brow[j]
        else:
            for j in range(a.shape[1]):
                orow[j] = arow[j]
    return out


@njit(**_JIT)
def _copy_row(dst, src):
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(**_JIT)
def _zero_row(dst):
    for j in range(dst.shape[0]):
        dst[j] = 0


def _gate_views(X, r0, r1, n):
    """``(X[0, r0:r1], ..., X[n - 1, r0:r1])``: each a C-contiguous 2-D view (``n`` a constant)."""


@overload(_gate_views)
def _gate_views_impl(X, r0, r1, n):
    if not isinstance(n, types.IntegerLiteral):
        return None
    return _tuple_maker("X, r0, r1, n", [f"X[{k}, r0:r1]" for k in range(n.literal_value)])


def _step_views(arrays, t, r0, r1):
    """``(a[t, r0:r1] for a in arrays)`` as a tuple of C-contiguous 2-D views (``arrays`` a tuple)."""


@overload(_step_views)
def _step_views_impl(arrays, t, r0, r1):
    if not isinstance(arrays, types.BaseTuple):
        return None
    return _tuple_maker("arrays, t, r0, r1", [f"arrays[{k}][t, r0:r1]" for k in range(len(arrays))])


def _tuple_maker(args, items):
    """A function of ``args`` returning the tuple of ``items`` (numba builds no tuple of a length it cannot see)."""
    namespace = {}
    exec(f"def make({args}):\n    return ({''.join(i + ', ' for i in items)})\n", namespace)  # noqa: S102
    return namespace["make"]


def _cell_templates(key):
    """The loops' code; ``key`` (the cell's digest) is their one free variable."""

    def cell_forward(XG, s, e, k0, reverse, lens, has_lens, HS, CS, O0, O1, has_out, HG, W, bias, has_bias,
                     WP, has_proj, extras, r0, r1, gemm, ilp64):  # fmt: skip
        """Steps ``s..e-1`` of rows ``r0:r1`` of the cell's recurrence (run backwards with ``reverse``).

        ``XG`` ``(e - s, G, B, H)`` the input projection of those steps, gate
        by gate; ``HS`` ``(2, B, P)`` the double-buffered ``h`` (the k-th
        step run, counting from ``k0``, reads ``[k % 2]`` and writes the
        other), ``CS`` ``(2, B, H)`` the carried part of the state (an LSTM's
        ``c``; ``HS`` itself for a cell that carries ``h``); ``O0``, ``O1``
        the outputs ``(T, B, .)`` (``has_out``); ``HG`` ``(G, B, H)`` scratch
        for ``h @ W`` gate by gate, ``W`` = ``W_hh.T`` ``(P, G*H)``
        (C-contiguous), plus ``bias``; ``WP`` = ``W_hr.T`` ``(H, P)``
        (``has_proj``). ``gemm`` the address of ``cblas_?gemm`` (0: the own
        product). Gate by gate, every block ``pointwise`` reads is
        C-contiguous (its loops vectorise).
        """
        key  # noqa: B018  (the cell's digest: one cache entry per cell code)
        B, P = HS.shape[1], HS.shape[2]
        H = CS.shape[2]
        GH = G * H
        rows = r1 - r0
        one, zero = HG.dtype.type(1), HG.dtype.type(0)
        size = HG.itemsize
        hs_at, hg_at, w_at = np.int64(HS.ctypes.data), np.int64(HG.ctypes.data), np.int64(W.ctypes.data)
        for m in range(e - s):
            t = e - 1 - m if reverse else s + m
            cur = (k0 + m) % 2
            nxt = 1 - cur
            for g in range(G):  # HG[g, rows] = HS[cur, rows] @ W[:, gate g]
                if gemm != 0:
                    _gemm(gemm, ilp64, _NO_TRANS, rows, H, P, one, hs_at + (cur * B * P + r0 * P) * size, P,
                          w_at + g * H * size, GH, zero, hg_at + (g * B * H + r0 * H) * size, H)  # fmt: skip
            if gemm == 0:
                _mm_gates(HS[cur], W, HG, r0, rows)
            if has_bias:
                for g in range(G):
                    for i in range(r0, r1):
                        row = HG[g, i]
                        for j in range(H):
                            row[j] += bias[g * H + j]
            new = POINT(OPS, _gate_views(XG[t - s], r0, r1, G), _gate_views(HG, r0, r1, G), (CS[cur, r0:r1],),
                        *extras)  # fmt: skip
            if has_proj:  # HS[nxt, rows] = m0 @ W_hr.T
                m0 = np.ascontiguousarray(new[0])  # (rows, H): h_t before the projection
                if gemm != 0:
                    _gemm(gemm, ilp64, _NO_TRANS, rows, P, H, one, np.int64(m0.ctypes.data), H,
                          np.int64(WP.ctypes.data), P, zero, hs_at + (nxt * B * P + r0 * P) * size, P)  # fmt: skip
                else:
                    _mm(m0, 0, WP, HS[nxt], r0, rows)
            else:
                _put(HS[nxt], r0, new[0])
            if NPARTS == 2:
                _put(CS[nxt], r0, new[1])
            for i in range(r0, r1):
                if has_lens and lens[i] <= t:  # past its length a row keeps its state and outputs 0
                    _copy_row(HS[nxt, i], HS[cur, i])
                    if NPARTS == 2:
                        _copy_row(CS[nxt, i], CS[cur, i])
                    if has_out:
                        _zero_row(O0[t, i])
                        if NPARTS == 2:
                            _zero_row(O1[t, i])
                elif has_out:
                    _copy_row(O0[t, i], HS[nxt, i])
                    if NPARTS == 2:
                        _copy_row(O1[t, i], CS[nxt, i])

    def cell_backward(SV, PC, D0, has_d0, D1, has_d1, G0, GC, DX, DH, GHS, has_gh, W, WPn, has_proj,
                      DM, lens, has_lens, extras, reverse, r0, r1, gemm, ilp64):  # fmt: skip
        """The gradient's loop of rows ``r0:r1``, against the forward's direction.

        ``SV`` the cell's ``saved`` entries, a tuple of ``(T, B, H)`` arrays;
        ``PC`` ``(T, B, H)`` the carried part of the state each step started
        from; ``D0``, ``D1`` the gradients reaching the outputs (``has_d0``,
        ``has_d1``); ``G0`` ``(2, B, P)`` and ``GC`` ``(2, B, H)`` the
        double-buffered gradients reaching ``h`` and the carried part
        (``[0]`` holds the final states' gradients); ``DX``, ``DH``
        ``(T, B, G*H)`` the gates' gradients (``DH`` is ``DX`` unless the
        cell's ``separate_recurrent_grads``); ``GHS`` ``(T, B, P)`` each step's gradient reaching
        ``h`` (``has_gh``, for ``W_hr``'s); ``W`` = ``W_hh`` ``(G*H, P)``,
        ``WPn`` = ``W_hr`` ``(P, H)``, ``DM`` ``(B, H)`` scratch.
        """
        key  # noqa: B018
        T, B, H = PC.shape[0], PC.shape[1], PC.shape[2]
        P = G0.shape[2]
        GH = DX.shape[2]
        G = GH // H
        rows = r1 - r0
        one, zero = DX.dtype.type(1), DX.dtype.type(0)
        size = DX.itemsize
        g0_at, dm_at = np.int64(G0.ctypes.data), np.int64(DM.ctypes.data)
        dh_at = np.int64(DH.ctypes.data)
        for m in range(T):
            t = m if reverse else T - 1 - m
            cur = m % 2
            nxt = 1 - cur
            gh = _sum_rows(G0[cur], D0[t], r0, r1, has_d0)  # (rows, P): dL/dh_t
            if has_proj:  # DM[rows] = gh @ W_hr: dL/dm_t
                if gemm != 0:
                    _gemm(gemm, ilp64, _NO_TRANS, rows, H, P, one, np.int64(gh.ctypes.data), P,
                          np.int64(WPn.ctypes.data), H, zero, dm_at + r0 * H * size, H)  # fmt: skip
                else:
                    _mm(gh, 0, WPn, DM, r0, rows)
                dm = DM[r0:r1]
            else:
                dm = gh
            if NPARTS == 2:
                gc = _sum_rows(GC[cur], D1[t], r0, r1, has_d1)  # (rows, H)
                dx, dh, dcarry = POINT_BACK(OPS, _step_views(SV, t, r0, r1), (PC[t, r0:r1],), (dm, gc), *extras)
            else:
                dx, dh, dcarry = POINT_BACK(OPS, _step_views(SV, t, r0, r1), (PC[t, r0:r1],), (dm,), *extras)
            for j in range(G):
                _put_at(DX[t], r0, j * H, dx[j])
                if SEPARATE:
                    _put_at(DH[t], r0, j * H, dh[j])
            if has_gh:
                _put(GHS[t], r0, gh)
            if has_lens:  # a frozen step takes no gradient
                for i in range(r0, r1):
                    if lens[i] <= t:
                        _zero_row(DX[t, i])
                        _zero_row(DH[t, i])
                        if has_gh:
                            _zero_row(GHS[t, i])
            if gemm != 0:  # G0[nxt, rows] = DH[t, rows] @ W_hh: dL/dh_{t-1} through the product
                _gemm(gemm, ilp64, _NO_TRANS, rows, P, GH, one, dh_at + (t * B * GH + r0 * GH) * size, GH,
                      np.int64(W.ctypes.data), P, zero, g0_at + (nxt * B * P + r0 * P) * size, P)  # fmt: skip
            else:
                _mm(DH[t], r0, W, G0[nxt], r0, rows)
            if CARRIED0 == 0:
                _add_into(G0[nxt], r0, dcarry[0])
            else:
                _put(GC[nxt], r0, dcarry[0])
            if has_lens:  # ... and passes the carried gradients through unchanged
                for i in range(r0, r1):
                    if lens[i] <= t:
                        _copy_row(G0[nxt, i], G0[cur, i])
                        if NPARTS == 2:
                            _copy_row(GC[nxt, i], GC[cur, i])

    return cell_forward, cell_backward


_CELL_LOOPS = {}  # cell -> {"cell_forward": ..., "cell_backward": ...}


def cell_loops(cell):
    """The compiled loops of a plain gated cell (made once per cell): see ``_cell_templates``.

    Only the ``carried`` part and the activations of ``_OPS_OF`` are taken
    (``ValueError`` otherwise: the caller runs the NumPy loop).
    """
    loops = _CELL_LOOPS.get(cell)
    if loops is not None:
        return loops
    names = dict(zip(cell.roles, cell.activations))
    if len(cell.carried) != 1 or not set(names.values()) <= set(_OPS_OF):
        raise ValueError(f"the compiled loops take one carried part and {sorted(_OPS_OF)}; got {cell!r}")
    ops = _types.ModuleType(f"rnn_xp_{cell.name}_ops")
    for role, name in names.items():
        setattr(ops, role, _OPS_OF[name])
    ops.zeros_like = _zeros_like
    ops.complement = _complement_rows
    point, back = cell.pointwise, cell.pointwise_backward
    nparts, carried0, separate = len(cell.state_names), cell.carried[0], bool(cell.separate_recurrent_grads)
    code = (point.__code__, back.__code__, tuple(sorted(names.items())), nparts, carried0, separate, cell.gates)
    digest = _hashlib.sha256(_marshal.dumps(_code_bytes(code))).hexdigest()
    namespace = dict(globals(), POINT=njit(**_EXACT_NOCACHE)(point), POINT_BACK=njit(**_EXACT_NOCACHE)(back),
                     OPS=ops, NPARTS=nparts, CARRIED0=carried0, SEPARATE=separate, G=cell.gates)  # fmt: skip
    loops = {}
    for template in _cell_templates(None):
        fn = _types.FunctionType(template.__code__, namespace, template.__name__, None,
                                 (_types.CellType(digest),))  # fmt: skip
        fn.__qualname__, fn.__doc__ = template.__qualname__, template.__doc__
        loops[template.__name__] = njit(**_JIT)(fn)
    _CELL_LOOPS[cell] = loops
    return loops


_EXACT_NOCACHE = dict(_EXACT, cache=False)  # linked into the loops, which numba caches


def _code_bytes(item):
    """``item`` with its code objects as marshal bytes (marshal takes nested tuples of those)."""
    if isinstance(item, tuple):
        return tuple(_code_bytes(i) for i in item)
    return _marshal.dumps(item) if isinstance(item, _types.CodeType) else item



FUNCTIONS = {
    "recurrence": recurrence,
    "backward_recurrence": backward_recurrence,
    "gemm_nt": gemm_nt,
    "tanh_into": tanh_into,
    "sigmoid_into": sigmoid_into,
    "cell_loops": cell_loops,
}
