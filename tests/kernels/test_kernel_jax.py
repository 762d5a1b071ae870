"""The ``lax.scan`` kernel (``rnn_xp.kernels.jax``): one compiled program per shape and options, and inside ``jax.jit``."""

from __future__ import annotations

import numpy as np
import pytest
from support import make_backend
from support import assert_close, optional_import, random_rnn, reference_rnn, to_numpy

import rnn_xp


def test_jax_compiles_once_per_shape(rng):
    jax = optional_import("jax")
    if jax is None:
        pytest.skip("jax not installed")
    from rnn_xp.kernels import jax as jax_kernel

    be = make_backend("jax")
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (2,), 3, 4)
    arrays = [be.asarray(a, "float32") for a in (x, h0, Wx, Wh, b)]
    rnn_xp.rnn_forward(*arrays, leak=0.25)
    size = jax_kernel._JITTED._cache_size()
    x2 = be.asarray(rng.standard_normal((5, 2, 3)), "float32")
    out = rnn_xp.rnn_forward(x2, *arrays[1:], leak=0.25)  # same shapes and options
    assert jax_kernel._JITTED._cache_size() == size
    expected, _ = reference_rnn(to_numpy(x2), h0, Wx, Wh, b, leak=0.25)
    assert_close(out, expected, be, "float32")
    rnn_xp.rnn_forward(*arrays, leak=0.5)  # new options: one more program
    assert jax_kernel._JITTED._cache_size() == size + 1


def test_jax_inside_jit(rng):
    jax = optional_import("jax")
    if jax is None:
        pytest.skip("jax not installed")
    be = make_backend("jax")
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (3,), 2, 4)
    arrays = [be.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)]
    lens = be.asarray(np.array([6, 0, 2]))
    f = jax.jit(lambda *a: rnn_xp.rnn_forward(*a[:5], lengths=a[5], reverse=True))
    expected, _ = reference_rnn(x, h0, Wx, Wh, b, lengths=[6, 0, 2], reverse=True)
    assert_close(f(*arrays, lens), expected, be, "float64")
