"""The kernels wing: one module per array library, and the dispatch between them.

A kernel runs the recurrence (or its gradient) on arrays that the public
layer (``forward``, ``backward``) has already validated: time-major, one
dtype, one device. Every forward kernel has the signature of
``portable.scan_portable`` and every backward kernel that of
``portable.backward_portable``; the portable loops define the answer and
every other kernel is tested against them.

====================  ========================================================
module                what it holds
====================  ========================================================
``portable``          the Array API loops, forward and backward (every library)
``numpy``             the in-place NumPy loop (``scan_inplace`` also serves CuPy)
``numpy_backward``    the in-place NumPy backward loop
``numba_cpu``         the NumPy loop as one numba-compiled call (optional), picked by size
``numba_backward``    the NumPy backward loop as one numba-compiled call (optional)
``_numba_jit``        the compiled functions of both (the only module importing numba)
``mkl``               oneMKL's packed product for the NumPy loop (optional)
``jax``               the recurrence and its gradient, each one jitted ``lax.scan``
``torch``             one autograd.Function with rnn_xp's backward; in-place loops
``autodiff``          whose gradient runs inside JAX and torch (``RNN_XP_AUTODIFF``)
``cupy``              the CuPy path choice: fused loop or persistent kernel
``cupy_fused``        the in-place loop with one fused CUDA kernel per step
``cupy_persistent``   all steps in one cooperative CUDA launch (small batches)
``dask``              one task per batch chunk, each running an in-memory kernel
                      (forward and backward)
====================  ========================================================

The fast kernels run the plain recurrence: tanh or relu, no ``clip``, no
``mask``. A call with any of the other activations, ``clip`` or ``mask``
(``extended=True``) falls back to the portable loop of its direction,
which takes them as extra keyword arguments; so do Dask arrays, which run
the portable loop lazily (a graph that grows with T).

A kernel never imports a public module (``tests/test_layout.py`` checks it).
Library modules are imported here only when the caller's arrays come from
that library, so ``import rnn_xp`` imports no backend.
"""

from __future__ import annotations

from .._compat import (
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)
from .portable import backward_cell, backward_portable, scan_cell, scan_portable

__all__ = [
    "backward",
    "backward_kernel",
    "backward_portable",
    "forward_kernel",
    "own_precision",
    "scan",
    "scan_portable",
]


def scan(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None):
    """Run ``cell``'s recurrence with the kernel for ``xp``; ``scan_cell``'s arguments and results.

    The arrays are validated, time-major, of one dtype and device (see
    ``_prepare.prepare``). On JAX and torch every cell runs their generic
    kernel (a ``lax.scan``, an ``autograd.Function``, each with rnn_xp's
    backward as its gradient); elsewhere Elman runs the kernel
    ``forward_kernel`` picks (every library has a fast one) and the other
    cells the portable loop.
    """
    if is_jax_namespace(xp) or is_torch_namespace(xp):
        return _generic(xp)[0](xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                               return_sequences=return_sequences, mask=mask)  # fmt: skip
    if cell.name == "elman":
        extended = not cell.plain or mask is not None
        kernel = forward_kernel(xp, extended=extended)
        options = {}
        if extended:
            options = {"activation_alpha": cell.alpha, "activation_beta": cell.beta,
                       "clip": cell.clip, "mask": mask}  # fmt: skip
        h_seq, h_last = kernel(
            xp, x, state0[0], w.Wx, w.Wh, w.b, nonlinearity=cell.nonlinearity, lengths=lengths,
            reverse=reverse, leak=cell.leak, return_sequences=return_sequences, **options,
        )  # fmt: skip
        return (None if h_seq is None else (h_seq,)), (h_last,)
    return scan_cell(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                     return_sequences=return_sequences, mask=mask)  # fmt: skip


def backward(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None):
    """Backpropagate through ``cell``'s recurrence with the kernel for ``xp``; ``backward_cell``'s arguments and results."""
    if is_jax_namespace(xp) or is_torch_namespace(xp):
        return _generic(xp)[1](xp, cell, d_out, x, state0, w, seqs, d_finals, lengths=lengths,
                               reverse=reverse, mask=mask)  # fmt: skip
    if cell.name == "elman":
        extended = not cell.plain or mask is not None
        kernel = backward_kernel(xp, extended=extended)
        options = {}
        if extended:
            options = {"activation_alpha": cell.alpha, "activation_beta": cell.beta,
                       "clip": cell.clip, "mask": mask, "b": w.b}  # fmt: skip
        dx, dh0, dWx, dWh, db = kernel(
            xp, d_out, x, state0[0], w.Wx, w.Wh, seqs[0], d_finals[0],
            nonlinearity=cell.nonlinearity, lengths=lengths, reverse=reverse, leak=cell.leak,
            **options,
        )  # fmt: skip
        return dx, (dh0,), type(w)(dWx, dWh, db)
    return backward_cell(xp, cell, d_out, x, state0, w, seqs, d_finals, lengths=lengths,
                         reverse=reverse, mask=mask)  # fmt: skip


def _generic(xp):
    """``(scan, backward)``: the kernels of JAX or torch that run any cell (imported on first use)."""
    if is_jax_namespace(xp):
        from .jax import backward_cell_jax, scan_cell_jax

        return scan_cell_jax, backward_cell_jax
    from .torch import backward_cell_torch, scan_cell_torch

    return scan_cell_torch, backward_cell_torch


def forward_kernel(xp, *, extended=False):
    """The forward kernel for namespace ``xp`` (``scan_portable``'s signature).

    ``extended``: the call uses an activation other than tanh/relu, ``clip``
    or ``mask``, options only ``scan_portable`` takes.
    """
    if is_jax_namespace(xp):
        # A Python loop dispatches a few small XLA calls per step; lax.scan
        # compiles the whole loop once per shape and options, and jax.grad
        # of it runs rnn_xp's backward (a jax.custom_vjp). Options the scan
        # does not know run the portable loop under the same custom_vjp.
        from .jax import scan_jax

        return scan_jax
    if is_torch_namespace(xp):
        # One autograd.Function whose backward is rnn_xp's when the tensors need
        # gradients; an in-place loop otherwise (the portable loop for options
        # it does not know).
        from .torch import scan_torch

        return scan_torch
    if extended:
        # Only the portable loop has the other activations, clip and masks; it
        # runs on every library (Dask lazily).
        return scan_portable
    if is_numpy_namespace(xp):
        # NumPy arrays are mutable: preallocated buffers, matmul(out=), in-place
        # ufuncs, and oneMKL's packed product when it is installed and preferred.
        # With numba installed, the whole loop as one compiled call, picked by size.
        from .numba_cpu import scan_cpu

        return scan_cpu
    if is_cupy_namespace(xp):
        # Kernel launches dominate on a GPU: one fused launch per step, or one
        # launch for all steps (the persistent kernel) for small batches.
        from .cupy import scan_cupy

        return scan_cupy
    if is_dask_namespace(xp):
        # The portable loop on lazy arrays builds a graph that grows with T;
        # one task per batch chunk runs an in-memory kernel over the whole sequence.
        from .dask import scan_dask

        return scan_dask
    # array-api-strict and anything else: the portable loop.
    return scan_portable


def backward_kernel(xp, *, extended=False):
    """The backward kernel for namespace ``xp`` (``backward_portable``'s signature).

    ``extended``: as for ``forward_kernel``; the portable loop then also takes ``b``.
    """
    if is_jax_namespace(xp):
        # One reverse lax.scan, compiled once per shape and options (the
        # portable loop would trace T steps); also the gradient of scan_jax.
        # Options the scan does not know run the portable loop (with the bias).
        from .jax import backward_jax

        return backward_jax
    if is_torch_namespace(xp):
        # In place like NumPy's; the portable loop when the backward itself is
        # recorded (create_graph=True), the tensors are torch.func wrappers, or
        # the options are ones only the portable loop knows.
        from .torch import backward_torch

        return backward_torch
    if extended:
        # f' at the recomputed pre-activation, and masks: the portable loop only.
        return backward_portable
    if is_numpy_namespace(xp):
        # One (T, B, H) buffer for dz, two swapped (B, H) buffers, no stack;
        # with numba installed, the loop as one compiled call where the forward takes it.
        from .numba_backward import backward_cpu

        return backward_cpu
    if is_dask_namespace(xp):
        # The portable loop on lazy arrays builds a graph that grows with T; one
        # task per batch chunk runs the chunk library's in-memory backward, and
        # a tree of tasks adds the chunks' weight gradients.
        from .dask import backward_dask

        return backward_dask
    # CuPy, array-api-strict and anything else: the portable loop.
    return backward_portable


def own_precision(xp, x):
    """A context in which ``xp``'s operations on ``x``'s device run in their inputs' dtype.

    For torch, ``torch.autocast`` turned off on the device type of ``x`` for
    the ``with`` block (rnn_xp computes in the dtype of its arrays, autocast
    or not); for every other library, nothing.
    """
    if is_torch_namespace(xp):
        from .torch import autocast_off

        return autocast_off(x)
    import contextlib

    return contextlib.nullcontext()
