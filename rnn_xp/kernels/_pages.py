"""Large work buffers placed on whole huge pages.

A fresh block of memory costs a page fault at the first touch of each page:
on the 2-core VM about 1.6 us per 4 KiB page, so a 5 MB buffer made afresh
at every call costs 2 ms before any arithmetic. From 4 MiB NumPy asks Linux
for transparent huge pages (2 MiB, one fault each) over its whole block, but
malloc places the block anywhere, and only the 2 MiB-aligned ranges inside
it get them: a 4.9 MB buffer kept about 2.6 MB on small pages (657 faults
a call, measured in a GRU's forward). ``empty`` starts an array on a 2 MiB
boundary of a block rounded up to whole huge pages, so every page of it is
a huge one where the system gives them (``madvise`` mode, or ``always``);
elsewhere it is an ordinary array. The memory past the array's end, up to
the next 2 MiB, is part of its last page; the unaligned head is never touched.
"""

from __future__ import annotations

import numpy

__all__ = ["HUGE_FROM", "HUGE_PAGE", "empty"]

HUGE_PAGE = 1 << 21  # x86-64's transparent huge page
# From this many bytes (NumPy's own threshold for asking for huge pages); a
# smaller buffer would hold up to twice its size in whole pages.
HUGE_FROM = 1 << 22


def empty(shape, dtype):
    """``numpy.empty(shape, dtype)``, from ``HUGE_FROM`` bytes on whole huge pages (a C-contiguous view
    that starts on a ``HUGE_PAGE`` boundary of a larger block)."""
    dtype = numpy.dtype(dtype)
    count = 1
    for n in shape:
        count *= int(n)
    size = count * dtype.itemsize
    if size < HUGE_FROM:
        return numpy.empty(shape, dtype=dtype)
    whole = -(-size // HUGE_PAGE) * HUGE_PAGE
    block = numpy.empty(whole + HUGE_PAGE, dtype=numpy.uint8)
    start = -block.ctypes.data % HUGE_PAGE
    return block[start : start + size].view(dtype).reshape(shape)
