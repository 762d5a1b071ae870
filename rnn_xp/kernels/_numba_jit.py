"""The numba-compiled functions behind ``kernels.numba_cpu`` and ``kernels.numba_backward``.

Importing this module imports numba (which is optional); nothing else here
imports it. Every function is compiled with ``cache=True``: numba writes the
machine code beside this file (or in its user cache directory when that is
read-only) and a new process loads it instead of compiling. Where no cache
can be used, ``numba_cpu`` loads a second copy of this module with
``CACHE = False`` (compiled in the process, never written).

Three things numba does not offer are written as LLVM intrinsics: a call to
``cblas_?gemm`` through its address (the BLAS of NumPy, found at run time,
so the address is an argument and the compiled code can be cached), and an
atomic add and load for the per-step barrier of two threads.

The fast-math flags are ``contract`` (fused multiply-adds) and ``reassoc``
(vectorised sums) only: NaN and infinities keep their IEEE meaning, which
the edge cases (NaN inputs, infinite weights) rely on.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

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


# -- tanh, vectorisable ---------------------------------------------------------------------
# Odd Taylor coefficients of tanh (from the Bernoulli numbers): x, x^3, ..., x^17.
_T = (1.0, -0.3333333333333333, 0.13333333333333333, -0.05396825396825397, 0.021869488536155203,
      -0.008863235529902197, 0.003592128036572481, -0.0014558343870513183, 0.000590027440945586)  # fmt: skip
_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2 = hi + lo, hi with 32 bits
_LN2_HI32, _LN2_LO32 = 0.693145751953125, 1.428606765330187e-06  # ln 2 = hi + lo, hi with 16 bits

f4 = np.float32
_S32 = tuple(f4(c) for c in _T[1:5])  # x^3 .. x^9: below 0.25 the next term is under 2^-27 of x
_E32 = tuple(f4(1.0 / v) for v in (1, 1, 2, 6, 24, 120, 720, 5040))  # exp on [-ln2/2, ln2/2]: 1 + r + ... + r^7/7!
_SMALL32, _CLAMP32 = f4(0.25), f4(10.0)  # tanh(10) rounds to 1 in float32 (tanh(9) does not)
_LOG2E32, _HI32, _LO32 = f4(_LOG2E), f4(_LN2_HI32), f4(_LN2_LO32)
_ONE32, _TWO32, _HALF32 = f4(1.0), f4(2.0), f4(0.5)
_S64 = _T[1:]  # x^3 .. x^17: below 0.15 the next term is under 2^-60 of x
_F = (1, 1, 2, 6, 24, 120, 720, 5040, 40320, 362880, 3628800, 39916800, 479001600, 6227020800)
_E64 = tuple(1.0 / v for v in _F)  # 1 + r + ... + r^13/13!
_SMALL64, _CLAMP64 = 0.15, 20.0  # tanh(20) rounds to 1 in float64


@njit(inline="always", **_JIT)
def _tanh32(x):
    """tanh of a float32, branch-free so that a loop of it vectorises."""
    x2 = x * x
    small = x + x * x2 * (_S32[0] + x2 * (_S32[1] + x2 * (_S32[2] + x2 * _S32[3])))
    a = abs(x)
    a = a if a < _CLAMP32 else _CLAMP32  # NaN and infinities too: the last line puts them back
    y = a + a
    ni = np.int32(y * _LOG2E32 + _HALF32)  # round(y / ln 2), y >= 0
    n = f4(ni)
    r = (y - n * _HI32) - n * _LO32  # |r| <= ln2 / 2
    p = _E32[0] + r * (_E32[1] + r * (_E32[2] + r * (_E32[3] + r * (_E32[4] + r * (_E32[5] + r * (
        _E32[6] + r * _E32[7]))))))  # fmt: skip
    e = p * f4(np.int32(1) << ni)  # exp(2|x|)
    big = _ONE32 - _TWO32 / (e + _ONE32)
    big = big if x >= 0 else -big
    t = small if abs(x) < _SMALL32 else big
    return t if x == x and x != 0 else x  # NaN, and zeros with their sign


@njit(inline="always", **_JIT)
def _tanh64(x):
    """tanh of a float64, branch-free so that a loop of it vectorises."""
    x2 = x * x
    s = _S64
    small = x + x * x2 * (s[0] + x2 * (s[1] + x2 * (s[2] + x2 * (s[3] + x2 * (s[4] + x2 * (s[5] + x2 * (
        s[6] + x2 * s[7])))))))  # fmt: skip
    a = abs(x)
    a = a if a < _CLAMP64 else _CLAMP64
    y = a + a
    ni = np.int64(y * _LOG2E + 0.5)
    n = float(ni)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    c = _E64
    p = c[0] + r * (c[1] + r * (c[2] + r * (c[3] + r * (c[4] + r * (c[5] + r * (c[6] + r * (c[7] + r * (
        c[8] + r * (c[9] + r * (c[10] + r * (c[11] + r * (c[12] + r * c[13]))))))))))))  # fmt: skip
    e = p * float(np.int64(1) << ni)
    big = 1.0 - 2.0 / (e + 1.0)
    big = big if x >= 0 else -big
    t = small if abs(x) < _SMALL64 else big
    return t if x == x and x != 0 else x  # NaN, and zeros with their sign


@njit(**_JIT)
def tanh_into(x, out):
    """``out[:] = tanh(x)`` with the compiled tanh (1-D arrays of one dtype; for tests)."""
    if x.itemsize == 4:
        for j in range(x.shape[0]):
            out[j] = _tanh32(x[j])
    else:
        for j in range(x.shape[0]):
            out[j] = _tanh64(x[j])


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
    elif o.itemsize == 4:
        for j in range(n):
            o[j] = _tanh32(o[j])
    else:
        for j in range(n):
            o[j] = _tanh64(o[j])
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


FUNCTIONS = {
    "recurrence": recurrence,
    "backward_recurrence": backward_recurrence,
    "gemm_nt": gemm_nt,
    "tanh_into": tanh_into,
}
