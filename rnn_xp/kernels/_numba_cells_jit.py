"""The gated cells' loops, compiled by numba for each cell (behind ``kernels.numba_cells``).

``cell_loops(cell)`` compiles the forward and the backward loop of a plain
gated cell from its own ``pointwise`` and ``pointwise_backward`` (the
templates below are written once; each cell's loops are cached on disk
under a digest of its code). The products, the activations by row and the
compile options come from ``kernels._numba_jit`` (``BASE``); where numba's
on-disk cache cannot be used, ``numba_cpu`` loads a second copy of both
modules with ``CACHE = False``, this one with ``BASE`` the uncached copy of
``_numba_jit``.
"""

from __future__ import annotations

import hashlib as _hashlib
import marshal as _marshal
import types as _types

import numpy as np
from numba import njit, types
from numba.extending import overload

__all__ = ["CACHE", "FUNCTIONS", "cell_loops"]

# Whether numba keeps the machine code on disk, and the module of the shared
# pieces: as loaded (numba_cpu sets both beforehand for the uncached copy).
CACHE = globals().get("CACHE", True)
BASE = globals().get("BASE")
if BASE is None:
    from . import _numba_jit as BASE
from . import _numba_elementwise as _elementwise
from ._packed import TILE_ROWS

_JIT = dict(BASE.JIT, cache=CACHE)
_EXACT = dict(BASE.EXACT, cache=CACHE)
_NO_TRANS = BASE.NO_TRANS
_gemm = BASE.gemm
_sigmoid_rows, _tanh_rows = BASE.sigmoid_rows, BASE.tanh_rows
_zeros_like, _complement_rows = BASE.zeros_like, BASE.complement_rows
_packed_product = BASE.packed_product_into


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

    def cell_forward(XG, XS, HF, s, e, k0, reverse, lens, has_lens, HS, CS, O0, O1, has_out, HG, W, WK, bias,
                     has_bias, WP, has_proj, extras, HK, has_keep, r0, r1, gemm, ilp64):  # fmt: skip
        """Steps ``s..e-1`` of rows ``r0:r1`` of the cell's recurrence (run backwards with ``reverse``).

        ``XG`` ``(n, B, G*H)`` the input projection of those steps (the first
        ``e - s`` of ``n``), copied gate by gate into the scratch ``XS``
        ``(G, B, H)`` at each step; ``HS`` ``(2, B, P)`` the double-buffered ``h`` (the k-th
        step run, counting from ``k0``, reads ``[k % 2]`` and writes the
        other), ``CS`` ``(2, B, H)`` the carried part of the state (an LSTM's
        ``c``; ``HS`` itself for a cell that carries ``h``); ``O0``, ``O1``
        the outputs ``(T, B, .)`` (``has_out``); ``HG`` ``(G, B, H)`` scratch
        for ``h @ W`` gate by gate (``HF`` ``(B, G*H)`` the product as BLAS
        writes it), ``W`` = ``W_hh.T`` ``(P, G*H)`` for BLAS (C-contiguous),
        ``WK`` = ``W_hh`` packed (``_packed.pack``) for the packed product,
        plus ``bias``; ``WP`` = ``W_hr.T`` ``(H, P)`` (``has_proj``); ``HK``
        ``(T, B, G*H)`` keeps every step's ``h @ W_hh.T + b`` (``has_keep``). ``gemm``
        the address of ``cblas_?gemm`` (0: the packed product). Gate by
        gate, every block ``pointwise`` reads is C-contiguous (its loops vectorise).
        """
        key  # noqa: B018  (the cell's digest: one cache entry per cell code)
        B, P = HS.shape[1], HS.shape[2]
        H = CS.shape[2]
        GH = G * H
        rows = r1 - r0
        one, zero = HG.dtype.type(1), HG.dtype.type(0)
        size = HG.itemsize
        hs_at, hf_at, w_at = np.int64(HS.ctypes.data), np.int64(HF.ctypes.data), np.int64(W.ctypes.data)
        scratch = np.empty((TILE_ROWS, WK.shape[2]), HG.dtype)  # the packed product's partial strips
        for m in range(e - s):
            t = e - 1 - m if reverse else s + m
            cur = (k0 + m) % 2
            nxt = 1 - cur
            if gemm != 0:  # HF[rows] = HS[cur, rows] @ W: one product for every gate, then HG gate by gate
                _gemm(gemm, ilp64, _NO_TRANS, rows, GH, P, one, hs_at + (cur * B * P + r0 * P) * size, P,
                      w_at, GH, zero, hf_at + r0 * GH * size, GH)  # fmt: skip
            else:  # the same with the packed product: WK is W_hh packed in strips of its columns
                for i in range(r0, r1):
                    frow = HF[i]
                    for j in range(GH):
                        frow[j] = zero
                _packed_product(HF, HS[cur], WK, r0, r1, 0, GH, scratch)
            for i in range(r0, r1):
                frow = HF[i]
                for g in range(G):
                    grow = HG[g, i]
                    for j in range(H):
                        grow[j] = frow[g * H + j]
            for i in range(r0, r1):  # XS[:, rows] = the step's projection, gate by gate
                xrow = XG[t - s, i]
                for g in range(G):
                    srow = XS[g, i]
                    for j in range(H):
                        srow[j] = xrow[g * H + j]
            if has_bias:
                for g in range(G):
                    for i in range(r0, r1):
                        row = HG[g, i]
                        for j in range(H):
                            row[j] += bias[g * H + j]
            if has_keep:  # the step's recurrent product, as pointwise reads it, for the backward
                for i in range(r0, r1):
                    krow = HK[t, i]
                    for g in range(G):
                        grow = HG[g, i]
                        for j in range(H):
                            krow[g * H + j] = grow[j]
            new = POINT(OPS, _gate_views(XS, r0, r1, G), _gate_views(HG, r0, r1, G), (CS[cur, r0:r1],),
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

    def cell_backward(SV, PC, D0, has_d0, D1, has_d1, G0, GC, DX, DH, GHS, has_gh, W, WK, WPn, has_proj,
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
        ``h`` (``has_gh``, for ``W_hr``'s); ``W`` = ``W_hh`` ``(G*H, P)`` for
        BLAS, ``WK`` = ``W_hh.T`` packed (``_packed.pack``) for the packed
        product (``gemm`` 0), ``WPn`` = ``W_hr`` ``(P, H)``, ``DM`` ``(B, H)`` scratch.
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
        scratch = np.empty((TILE_ROWS, WK.shape[2]), DX.dtype)  # the packed product's partial strips
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
            else:  # the same with the packed product
                for i in range(r0, r1):
                    _zero_row(G0[nxt, i])
                _packed_product(G0[nxt], DH[t], WK, r0, r1, 0, P, scratch)
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
    code = (point.__code__, back.__code__, tuple(sorted(names.items())), nparts, carried0, separate, cell.gates,
            _elementwise.DIGEST)
    digest = _hashlib.sha256(_marshal.dumps(_code_bytes(code))).hexdigest()
    namespace = dict(globals(), POINT=njit(**_EXACT_NOCACHE)(_elementwise.written_out(point)),
                     POINT_BACK=njit(**_EXACT_NOCACHE)(_elementwise.written_out(back)),
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


FUNCTIONS = {"cell_loops": cell_loops}
