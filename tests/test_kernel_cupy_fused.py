"""The fused CuPy loop's contract (``rnn_xp.kernels.cupy_fused``), checked on the CPU with NumPy.

The fused kernel leaves the bias to its per-step ``combine``; ``scan_inplace``
with ``bias_in_step=True`` and a NumPy stand-in of that step must give the
reference's numbers on every option.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import random_rnn, reference_rnn
from test_kernels import OPTIONS

from rnn_xp.kernels import numpy as numpy_kernel


def _numpy_fused(nonlinearity, leak):
    """NumPy stand-in for the fused CuPy step: the same contract, bias added per step."""

    def combine(o, tmp, h, b):
        z = o + tmp + (0.0 if b is None else b)
        f = np.tanh(z) if nonlinearity == "tanh" else np.where((z > 0) | (z != z), z, 0.0)
        o[...] = (1.0 - leak) * h + leak * f

    return combine


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bias_in_step_contract(rng, opts, return_sequences):
    """The loop the CuPy path runs (bias left to ``combine``), checked with NumPy."""
    x, h0, Wx, Wh, b = random_rnn(rng, 7, (4,), 3, 5)
    lengths = opts.get("lengths")
    kw = {k: v for k, v in opts.items() if k != "lengths"}
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, **kw)
    seq, fin = numpy_kernel.scan_inplace(
        np, x, h0, Wx, Wh, b, nonlinearity=kw.get("nonlinearity", "tanh"),
        lengths=None if lengths is None else np.asarray(lengths), reverse=kw.get("reverse", False),
        leak=kw.get("leak", 1.0), return_sequences=return_sequences,
        combine=_numpy_fused(kw.get("nonlinearity", "tanh"), kw.get("leak", 1.0)),
        bias_in_step=True,
    )  # fmt: skip
    np.testing.assert_allclose(fin, last, rtol=1e-10, atol=1e-12)
    if return_sequences:
        np.testing.assert_allclose(seq, expected, rtol=1e-10, atol=1e-12)
