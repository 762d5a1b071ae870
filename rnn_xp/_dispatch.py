"""Choose the recurrence kernel for a namespace.

The portable kernel (``forward.scan_portable``) runs everywhere. A faster
kernel for one library sits in its own module and is imported only when
the caller's arrays come from that library.
"""

from __future__ import annotations


def forward_kernel(xp):
    """A kernel with ``scan_portable``'s signature for ``xp``, or ``None``."""
    from ._compat import is_dask_namespace

    if is_dask_namespace(xp):
        from ._dask import scan_dask

        return scan_dask
    return None
