"""``kernels._pages.empty``: large work buffers on whole huge pages, and the gated loops that use them."""

from __future__ import annotations

import numpy as np
import pytest

from rnn_xp.kernels import _pages


@pytest.mark.parametrize("shape, dtype", [((2, 3, 5, 7), "float32"), ((1 << 20,), "float64"), ((3, 0, 4), "float32"),
                                          ((700, 1000), "float32")])  # fmt: skip
def test_empty_is_an_array_of_that_shape_and_dtype(shape, dtype):
    a = _pages.empty(shape, dtype)
    assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable
    a[...] = np.arange(a.size, dtype=dtype).reshape(shape)  # every element its own, none shared
    np.testing.assert_array_equal(a.ravel(), np.arange(a.size, dtype=dtype))


def test_empty_starts_large_buffers_on_a_huge_page_boundary():
    """From ``HUGE_FROM`` bytes the array starts on a 2 MiB boundary and its block holds it whole; below, an
    ordinary array of its own."""
    for size in (_pages.HUGE_FROM, _pages.HUGE_FROM + 4, 3 * _pages.HUGE_PAGE + 8, 5 << 20):
        a = _pages.empty((size // 4,), np.float32)
        assert a.ctypes.data % _pages.HUGE_PAGE == 0
        block = a.base
        while getattr(block, "base", None) is not None:
            block = block.base
        assert block.ctypes.data <= a.ctypes.data
        assert a.ctypes.data + a.nbytes <= block.ctypes.data + block.nbytes
    small = _pages.empty(((_pages.HUGE_FROM - 4) // 4,), np.float32)
    assert small.base is None
