"""The packed layout of a weight matrix for the compiled loops' packed product (``_numba_jit``).

A matrix ``W`` ``(N, K)`` (rows as ``W_hh`` keeps them: the product is
``a @ W.T``) is packed once per call into strips of ``strip_width`` columns
of ``W.T``: ``(ceil(N / S), K, S)``, C-contiguous, the last strip padded
with zeros. A tile of up to ``TILE_ROWS`` rows by one strip keeps its sums
in ``TILE_ROWS x STRIP_VECTORS`` vector registers of ``VECTOR_BYTES`` bytes
(AVX-512's 64; LLVM splits them on a machine with narrower ones) over all of
``K``, reading the strip in order.
"""

from __future__ import annotations

import numpy

__all__ = ["STRIP_VECTORS", "TILE_ROWS", "VECTOR_BYTES", "pack", "pack_columns", "strip_width"]

VECTOR_BYTES = 64
STRIP_VECTORS = 2
TILE_ROWS = 8


def strip_width(itemsize):
    """Columns per strip: ``STRIP_VECTORS`` vectors of ``VECTOR_BYTES`` bytes (32 float32, 16 float64)."""
    return STRIP_VECTORS * VECTOR_BYTES // itemsize


def pack(W):
    """``W`` ``(N, K)`` as strips of ``W.T``: ``(ceil(N / S), K, S)``, strip ``s`` holding ``W[s*S:(s+1)*S].T``
    (zeros past row ``N``)."""
    N, K = W.shape
    S = strip_width(W.dtype.itemsize)
    n = -(-N // S)
    padded = numpy.zeros((n * S, K), dtype=W.dtype)
    padded[:N] = W
    return numpy.ascontiguousarray(padded.reshape(n, S, K).transpose(0, 2, 1))


def pack_columns(a):
    """``a`` ``(N, F)`` as strips of its columns, the layout of ``pack(a.T)``: ``(ceil(F / S), N, S)``, strip ``s``
    holding ``a[:, s*S:(s+1)*S]`` (zeros past column ``F``), without a transposed copy of ``a``."""
    N, F = a.shape
    S = strip_width(a.dtype.itemsize)
    n, full = -(-F // S), F // S
    out = numpy.empty((n, N, S), dtype=a.dtype)
    if full:
        out[:full] = a[:, : full * S].reshape(N, full, S).transpose(1, 0, 2)
    if full < n:
        out[full, :, : F - full * S] = a[:, full * S :]
        out[full, :, F - full * S :] = 0
    return out
