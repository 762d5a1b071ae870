"""Choose the recurrence kernels (forward and backward) for a namespace.

The portable kernels (``forward.scan_portable``, ``backward.backward_portable``)
run everywhere. A faster
kernel for one library sits in its own module and is imported only when
the caller's arrays come from that library.
"""

from __future__ import annotations


def forward_kernel(xp):
    """A kernel with ``scan_portable``'s signature for ``xp``, or ``None``."""
    from ._compat import is_cupy_namespace, is_dask_namespace, is_jax_namespace, is_numpy_namespace

    if is_numpy_namespace(xp):
        from ._inplace import scan_numpy

        return scan_numpy
    if is_jax_namespace(xp):
        from ._jax_scan import scan_jax

        return scan_jax
    if is_cupy_namespace(xp):
        from ._cupy_kernels import scan_cupy

        return scan_cupy
    if is_dask_namespace(xp):
        from ._dask import scan_dask

        return scan_dask
    return None


def backward_kernel(xp):
    """A kernel with ``backward_portable``'s signature for ``xp``, or ``None``."""
    from ._compat import is_numpy_namespace

    if is_numpy_namespace(xp):
        from ._inplace_backward import backward_numpy

        return backward_numpy
    return None
