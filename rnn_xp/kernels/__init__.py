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
``mkl``               oneMKL's packed product for the NumPy loop (optional)
``jax``               the recurrence and its gradient, each one jitted ``lax.scan``
``torch``             one autograd.Function with rnn_xp's backward; in-place loops
``autodiff``          whose gradient runs inside JAX and torch (``RNN_XP_AUTODIFF``)
``cupy``              the CuPy path choice: fused loop or persistent kernel
``cupy_fused``        the in-place loop with one fused CUDA kernel per step
``cupy_persistent``   all steps in one cooperative CUDA launch (small batches)
``dask``              one task per batch chunk, each running an in-memory kernel
====================  ========================================================

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
from .portable import backward_portable, scan_portable

__all__ = [
    "backward_kernel",
    "backward_portable",
    "forward_kernel",
    "own_precision",
    "scan_portable",
]


def forward_kernel(xp):
    """The forward kernel for namespace ``xp`` (``scan_portable``'s signature)."""
    if is_numpy_namespace(xp):
        # NumPy arrays are mutable: preallocated buffers, matmul(out=), in-place
        # ufuncs, and oneMKL's packed product when it is installed and preferred.
        from .numpy import scan_numpy

        return scan_numpy
    if is_jax_namespace(xp):
        # A Python loop dispatches a few small XLA calls per step; lax.scan
        # compiles the whole loop once per shape and options, and jax.grad
        # of it runs rnn_xp's backward (a jax.custom_vjp).
        from .jax import scan_jax

        return scan_jax
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
    if is_torch_namespace(xp):
        # Autograd would record every step of a loop: when the tensors need
        # gradients, one autograd.Function whose backward is rnn_xp's; without
        # a graph, an in-place loop (two calls per step).
        from .torch import scan_torch

        return scan_torch
    # array-api-strict and anything else: the portable loop.
    return scan_portable


def backward_kernel(xp):
    """The backward kernel for namespace ``xp`` (``backward_portable``'s signature)."""
    if is_numpy_namespace(xp):
        # One (T, B, H) buffer for dz, two swapped (B, H) buffers, no stack.
        from .numpy_backward import backward_numpy

        return backward_numpy
    if is_jax_namespace(xp):
        # One reverse lax.scan, compiled once per shape and options (the
        # portable loop would trace T steps); also the gradient of scan_jax.
        from .jax import backward_jax

        return backward_jax
    if is_torch_namespace(xp):
        # In place like NumPy's; the portable loop when the backward itself is
        # recorded (create_graph=True) or the tensors are torch.func wrappers.
        from .torch import backward_torch

        return backward_torch
    # Everything else, Dask included: the portable loop on the caller's arrays.
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
