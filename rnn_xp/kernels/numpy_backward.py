"""Backpropagation through time as an in-place loop, for NumPy.

``portable.backward_portable`` allocates a few arrays at every step, stacks
the ``dz_t`` at the end and builds a ``(T, B, H)`` copy of the previous
states. Here (same signature, same results):

1. ``dz`` ``(T, B, H)`` is allocated once and first holds
   ``leak * f'(z_t)``, computed in place from ``h_seq`` (with ``leak < 1``,
   ``f(z_t) = (h_t - (1 - leak) h_{t-1}) / leak`` is formed in ``dz`` too).
2. Step t, walking against the forward's direction, multiplies ``dz[t]`` in
   place by the gradient reaching ``h_t`` and writes ``dz[t] @ Wh`` into a
   ``(B, H)`` buffer: two ``(B, H)`` buffers are swapped, nothing is allocated.
   For a few rows of many units (``numpy.wh_first``) the product is
   ``Wh.T @ dz[t].T`` with a contiguous copy of ``Wh.T``, and both buffers
   are transposed views of ``(H, B)`` arrays.
3. ``dx``, ``dWx`` and ``db`` are each one product or sum over all steps. ``dWh``
   is ``dz[t].T @ h_{t-1}`` summed over t, read straight from ``h_seq``
   shifted by one step (two products: the steps that start from ``h0`` and
   the rest), without a copy of the previous states.

Beyond its results the loop holds ``dz`` and a few ``(B, H)`` buffers. The
caller's arrays are never written to (they may be read-only). The step's
product runs on one BLAS thread below ``_threads.SERIAL_MACS`` multiply-adds,
as in the forward loop.
"""

from __future__ import annotations

import math

import numpy as np

from . import _threads
from ._blocks import transposed_copy
from ._threads import blas_threads
from .numpy import wh_first
from ..cells._base import MATMULS

__all__ = ["backward_numpy", "derivative_buffer", "weight_gradients", "without_padding"]


def backward_numpy(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak):
    """``portable.backward_portable`` for NumPy arrays, in place (see the module docstring)."""
    T, D = x.shape[0], x.shape[-1]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)
    dtype = h0.dtype
    if T == 0 or B == 0:
        from .portable import backward_portable

        return backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, nonlinearity=nonlinearity,
                                 lengths=lengths, reverse=reverse, leak=leak)  # fmt: skip

    hs = h_seq.reshape(T, B, H)  # (T, B, H): the forward's states (a view when contiguous)
    h0_2 = h0.reshape(B, H)  # (B, H)
    x3 = x.reshape(T, B, D)  # (T, B, D)
    lens = None if lengths is None else np.asarray(lengths).reshape(B)  # (B,)
    x3, hs, h0_2, pad = without_padding(x3, hs, h0_2, lens)
    dz = derivative_buffer(hs, h0_2, lens, nonlinearity=nonlinearity, reverse=reverse, leak=leak)  # step 1

    # 2. The loop, against the forward's direction.
    left = wh_first(B, H, backward=True)  # Wh.T @ dz_t.T into (H, B) buffers; g and tmp are their (B, H) views
    WhT = transposed_copy(np, Wh) if left else None  # (H, H)
    g = np.zeros((H, B), dtype=dtype).T if left else np.zeros((B, H), dtype=dtype)
    if dh_n is not None:
        g[...] = dh_n.reshape(B, H)
    tmp = np.empty((H, B), dtype=dtype).T if left else np.empty((B, H), dtype=dtype)  # dz_t @ Wh, then the next g
    gt_buf = np.empty((B, H), dtype=dtype) if (dh is not None and lens is not None) else None
    leak_buf = np.empty((B, H), dtype=dtype) if leak != 1.0 else None
    if lens is not None:
        invalid = np.empty((B, 1), dtype=bool)  # (B, 1): the step is past the sequence's length
        lens_col = lens.reshape(B, 1)
    with blas_threads(1 if B * H * H < _threads.SERIAL_MACS else None):
        for t in range(T) if reverse else range(T - 1, -1, -1):
            dz_t = dz[t]  # (B, H): holds leak * f'(z_t), becomes dL/dz_t
            if dh is None:
                gt = g  # dL/dh_t
            elif lens is None:
                gt = g
                gt += dh[t].reshape(B, H)
            else:
                gt = np.add(g, dh[t].reshape(B, H), out=gt_buf)  # g itself is kept for frozen steps
            dz_t *= gt
            if lens is not None:
                np.less_equal(lens_col, t, out=invalid)
                np.copyto(dz_t, 0, where=invalid)  # frozen steps take no gradient (not even 0 * inf)
            if left:
                np.matmul(WhT, dz_t.T, out=tmp.T)  # dL/dh_{t-1} through z_t, transposed
            else:
                np.matmul(dz_t, Wh, out=tmp)  # dL/dh_{t-1} through z_t
            if leak != 1.0:
                np.multiply(gt, 1.0 - leak, out=leak_buf)
                tmp += leak_buf  # ... and through the leak
            if lens is None:
                g, tmp = tmp, g
            else:
                np.copyto(g, tmp, where=~invalid)  # a frozen step passes g through unchanged

    dx, dWx, dWh, db = weight_gradients(dz, x3, hs, h0_2, Wx, lens, reverse=reverse, batch=batch, pad=pad)  # step 3
    return dx, np.ascontiguousarray(g).reshape(*batch, H), dWx, dWh, db


def without_padding(x3, hs, h0_2, lens):
    """``(x3, hs, h0_2, pad)`` with the inputs and states past each sequence's length zeroed.

    Padding never reaches a gradient: the steps past a sequence's length get
    ``dz = 0``, and the inputs and states there are zeroed too (copies), so
    that a NaN or Inf in them is not multiplied by that zero in the products.
    ``pad`` ``(T, B, 1)`` is True past the length (``None`` without ``lens``).
    """
    if lens is None:
        return x3, hs, h0_2, None
    T, dtype = hs.shape[0], hs.dtype
    pad = (np.arange(T)[:, None] >= lens[None, :])[..., None]  # (T, B, 1)
    x3 = np.where(pad, 0, x3).astype(dtype, copy=False)  # (T, B, D)
    hs = np.where(pad, 0, hs).astype(dtype, copy=False)  # (T, B, H)
    h0_2 = np.where((lens == 0)[:, None], 0, h0_2).astype(dtype, copy=False)  # (B, H): unused at length 0
    return x3, hs, h0_2, pad


def derivative_buffer(hs, h0_2, lens, *, nonlinearity, reverse, leak):
    """Step 1: a new ``(T, B, H)`` array holding ``leak * f'(z_t)``, computed in place.

    ``hs`` ``(T, B, H)`` are the forward's states, ``h0_2`` ``(B, H)`` its
    initial state, ``lens`` ``None`` or ``(B,)`` (NumPy).
    """
    T, B, H = hs.shape
    dz = np.empty((T, B, H), dtype=hs.dtype)  # (T, B, H)
    if leak == 1.0:
        act = hs  # f(z_t) is the state itself
    else:
        _previous_states(hs, h0_2, reverse, dz)  # dz = h_{t-1}
        if reverse and lens is not None:
            starts, start_t = _reverse_starts(lens, T)
            dz[start_t, starts] = h0_2[starts]
        dz *= -(1.0 - leak)
        dz += hs
        dz /= leak  # f(z_t)
        act = dz
    if nonlinearity == "tanh":
        np.multiply(act, act, out=dz)
        np.subtract(1, dz, out=dz)  # 1 - f(z)^2
    else:
        np.greater(act, 0, out=dz)  # 1 where f(z) > 0, else 0 (NaN too)
    if leak != 1.0:
        dz *= leak
    return dz


def weight_gradients(dz, x3, hs, h0_2, Wx, lens, *, reverse, batch=None, pad=None, matmuls=MATMULS):
    """Step 3: ``(dx, dWx, dWh, db)`` from ``dz = dL/dz`` ``(T, B, H)``, each over all steps at once.

    ``x3`` ``(T, B, D)``; ``dx`` comes back ``(T, *batch, D)``. ``pad``
    (from ``without_padding``) marks the padding steps, whose starting state
    is kept out of ``dWh``. ``matmuls``: the products over all steps
    (``cells._base.MATMULS``: one NumPy product each; ``numba_products.MATMULS``).
    """
    T, B, H = dz.shape
    D = x3.shape[-1]
    batch = (B,) if batch is None else tuple(batch)
    dz2 = dz.reshape(T * B, H)  # (T*B, H)
    dx = matmuls.rows_matmul(np, dz2, Wx).reshape(T, *batch, D)  # (T, *batch, D)
    dWx = matmuls.outer_sum(np, dz2, x3.reshape(T * B, D))  # (H, D)
    db = dz2.sum(axis=0)  # (H,)
    if T > 1:  # the steps that start from a previous state: forward h_{t-1}, reverse h_{t+1}
        n = (T - 1) * B  # explicit sizes: reshape(-1, H) fails for H = 0
        if reverse:
            dWh = matmuls.outer_sum(np, dz[:-1].reshape(n, H), hs[1:].reshape(n, H))  # (H, H)
        else:
            prev = hs[:-1]  # (T - 1, B, H): the state step t = 1.. started from
            if pad is not None:
                # the last valid state h_{L-1} is the previous state of step L, a padding
                # step: zeroed for this product, so that its NaN meets no 0 * NaN there
                prev = np.where(pad[1:], 0, prev).astype(hs.dtype, copy=False)
            dWh = matmuls.outer_sum(np, dz[1:].reshape(n, H), prev.reshape(n, H))  # (H, H)
    else:
        dWh = np.zeros((H, H), dtype=dz.dtype)
    first = dz[-1] if reverse else dz[0]  # (B, H): the step that starts from h0 ...
    if reverse and lens is not None:
        starts, start_t = _reverse_starts(lens, T)
        first = first.copy()
        first[starts] = dz[start_t, starts]  # ... at t = L - 1 for a shorter sequence
        # (hs[L] there is the zero output past the length: that step added nothing above)
    dWh += first.T @ h0_2  # (H, H)
    if reverse and lens is not None and T > 1:
        # The product above paired step L - 1 with hs[L], the output past the
        # sequence's length (zeros from rnn_forward): take that pairing out.
        dWh -= dz[start_t, starts].T @ hs[start_t + 1, starts]  # (H, H)
    return dx, dWx, dWh, db


def _reverse_starts(lens, T):
    """Run in reverse, a sequence of length L starts from h0 at step L - 1: ``(rows, L - 1)`` where L < T."""
    starts = np.nonzero((lens >= 1) & (lens < T))[0]  # (n,) sequences not starting at T - 1
    return starts, lens[starts] - 1


def _previous_states(hs, h0_2, reverse, out):
    """``out[t]`` = the state step t started from: ``h_{t-1}`` (forward) or ``h_{t+1}`` (reverse), ``h0`` at the end."""
    if reverse:
        out[:-1] = hs[1:]
        out[-1] = h0_2
    else:
        out[1:] = hs[:-1]
        out[0] = h0_2
