"""The fast kernels agree with the portable loop and with the float64 reference.

Every kernel chosen by ``kernels.forward_kernel`` (the in-place NumPy loop,
the jitted ``lax.scan`` for JAX, the fused CuPy loop) is run directly and
through ``rnn_forward`` on every option, and compared with
``kernels.portable.scan_portable`` and with ``support.reference_rnn``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import make_backend
from support import assert_close, optional_import, random_rnn, reference_rnn, to_numpy

import rnn_xp
from rnn_xp import kernels
from rnn_xp.kernels.portable import scan_portable

FAST_BACKENDS = ["numpy", "numpy_readonly", "jax", "cupy"]

OPTIONS = [
    dict(nonlinearity="tanh"),
    dict(nonlinearity="relu"),
    dict(reverse=True),
    dict(leak=0.3),
    dict(lengths=[3, 7, 0, 1]),
    dict(lengths=[3, 7, 0, 1], reverse=True, leak=0.6, nonlinearity="relu"),
]


def _kernel_args(backend, dtype, x, h0, Wx, Wh, b, lengths):
    arrays = [None if a is None else backend.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    lens = None if lengths is None else backend.asarray(np.asarray(lengths, dtype=np.int64))
    return arrays, lens


def _run(kernel, backend, arrays, lens, opts, return_sequences):
    return kernel(
        backend.xp, *arrays, nonlinearity=opts.get("nonlinearity", "tanh"), lengths=lens,
        reverse=opts.get("reverse", False), leak=opts.get("leak", 1.0),
        return_sequences=return_sequences,
    )  # fmt: skip


@pytest.fixture(params=FAST_BACKENDS)
def fast(request):
    return make_backend(request.param)


def test_dispatch_picks_a_fast_kernel(fast):
    kernel = kernels.forward_kernel(fast.xp)
    assert kernel is not None and kernel is not scan_portable


def test_dispatch_leaves_other_backends_portable():
    strict = optional_import("array_api_strict")
    if strict is None:
        pytest.skip("array-api-strict not installed")
    assert kernels.forward_kernel(strict) is scan_portable


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("batch", [(), (4,), (2, 4)])
def test_kernel_matches_portable_and_reference(fast, dtype, rng, opts, batch):
    T, D, H = 7, 3, 5
    x, h0, Wx, Wh, b = random_rnn(rng, T, batch, D, H)
    lengths = opts.get("lengths")
    if lengths is not None:
        lengths = np.resize(np.asarray(lengths), batch)  # unsorted, with 0 and T
    kw = {k: v for k, v in opts.items() if k != "lengths"}
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, **kw)
    arrays, lens = _kernel_args(fast, dtype, x, h0, Wx, Wh, b, lengths)
    kernel = kernels.forward_kernel(fast.xp)
    for return_sequences in (True, False):
        got_seq, got_last = _run(kernel, fast, arrays, lens, opts, return_sequences)
        ref_seq, ref_last = _run(scan_portable, fast, arrays, lens, opts, return_sequences)
        assert_close(got_last, last, fast, dtype)
        assert_close(got_last, to_numpy(ref_last), fast, dtype)
        if return_sequences:
            assert_close(got_seq, expected, fast, dtype)
            assert_close(got_seq, to_numpy(ref_seq), fast, dtype)
        else:
            assert got_seq is None
    # and through the public function, batch_first included
    if lengths is not None:
        kw["lengths"] = lens
    out = rnn_xp.rnn_forward(*arrays, **kw)
    assert_close(out, expected, fast, dtype)
    if batch:
        x_bf = fast.asarray(np.moveaxis(x, 0, -2), dtype)
        out_bf = rnn_xp.rnn_forward(x_bf, *arrays[1:], batch_first=True, **kw)
        assert_close(out_bf, np.moveaxis(expected, 0, -2), fast, dtype)


@pytest.mark.parametrize("batch", [(3,), (0,), ()])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_empty_time_and_batch(fast, dtype, rng, batch, return_sequences):
    for T in (0, 2):
        x, h0, Wx, Wh, b = random_rnn(rng, T, batch, 3, 4)
        if x.size:
            expected, last = reference_rnn(x, h0, Wx, Wh, b)
        else:  # reference_rnn cannot reshape an empty x; the answer is known
            expected, last = np.zeros((T, *batch, 4)), h0
        arrays = [fast.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
        out = rnn_xp.rnn_forward(*arrays, return_sequences=return_sequences)
        assert_close(out, expected if return_sequences else last, fast, dtype)


def test_no_bias_no_h0(fast, dtype, rng):
    x, _, Wx, Wh, _ = random_rnn(rng, 5, (2,), 3, 4)
    expected, last = reference_rnn(x, None, Wx, Wh, None)
    arrays = [fast.asarray(a, dtype) for a in (x, Wx, Wh)]
    assert_close(rnn_xp.rnn_forward(arrays[0], None, *arrays[1:]), expected, fast, dtype)
    fin = rnn_xp.rnn_forward(arrays[0], None, *arrays[1:], return_sequences=False)
    assert_close(fin, last, fast, dtype)


def test_inputs_unchanged(fast, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (4,), 3, 5)
    arrays = [fast.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    lens = fast.asarray(np.array([6, 0, 2, 5]))
    before = [to_numpy(a).copy() for a in (*arrays, lens)]
    for rs in (True, False):
        rnn_xp.rnn_forward(*arrays, lengths=lens, reverse=True, leak=0.5, return_sequences=rs)
        rnn_xp.rnn_forward(*arrays, return_sequences=rs)
    for a, a0 in zip((*arrays, lens), before):
        np.testing.assert_array_equal(to_numpy(a), a0)


def test_relu_keeps_nan(fast, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 3, (2,), 2, 3)
    x[1, 0, 0] = np.nan
    out = to_numpy(rnn_xp.rnn_forward(*[fast.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)],
                                      nonlinearity="relu"))
    assert np.isnan(out[1, 0]).any() and not np.isnan(out[:, 1]).any()
