"""Property-based tests (hypothesis) of the forward pass on every backend.

Shapes (zero-sized ones included), dtypes and options are drawn at random;
each test states one property that must hold for all of them:

- agreement with the float64 reference ``support.reference_rnn``, with the
  output in the inputs' namespace, device and promoted dtype;
- batch independence: changing one sequence never changes another's outputs;
- running a sequence in two chunks equals running it whole;
- ``reverse=True`` equals flipping the input and the output;
- an unbatched call equals a batch of one;
- inputs are never modified.

The default profile draws few examples so the file runs in well under a
minute; ``RNN_XP_HYPOTHESIS=ci-large`` selects a larger one (both are
registered in ``conftest.py``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnn_xp  # noqa: E402
from support import ATOL, RTOL, assert_close, reference_rnn, to_numpy  # noqa: E402

SETTINGS = hsettings.get_profile(os.environ.get("RNN_XP_HYPOTHESIS", "rnn-xp-default"))


def reference(x, h0, Wx, Wh, b, *, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0):
    """``reference_rnn`` for any shapes, zero-sized ones included."""
    T, batch, H = x.shape[0], x.shape[1:-1], Wx.shape[0]
    if T == 0 or math.prod(batch) == 0:
        h0 = np.zeros((*batch, H)) if h0 is None else h0
        return np.zeros((T, *batch, H)), np.array(h0, dtype=np.float64)
    if x.shape[-1] == 0:  # D = 0: one zero feature with a zero weight is the same RNN
        x, Wx = np.zeros((*x.shape[:-1], 1)), np.zeros((H, 1))
    return reference_rnn(x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
                         reverse=reverse, leak=leak)


@st.composite
def problems(draw, *, min_batch=0, min_T=0, batch_ndim=None):
    """A random RNN problem as float64 NumPy arrays plus options."""
    nd = draw(st.integers(0, 2)) if batch_ndim is None else batch_ndim
    batch = tuple(draw(st.integers(min_batch, 3)) for _ in range(nd))
    T = draw(st.integers(min_T, 6))
    D = draw(st.integers(0, 4))
    H = draw(st.integers(0, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, *batch, D))
    Wx = rng.standard_normal((H, D)) * 0.5 / np.sqrt(max(D, 1))
    Wh = rng.standard_normal((H, H)) * 0.5 / np.sqrt(max(H, 1))
    b = rng.standard_normal(H) * 0.1 if draw(st.booleans()) else None
    h0 = rng.standard_normal((*batch, H)) * 0.5 if draw(st.booleans()) else None
    lengths = rng.integers(0, T + 1, size=batch) if draw(st.booleans()) else None
    options = {
        "nonlinearity": draw(st.sampled_from(["tanh", "relu"])),
        "reverse": draw(st.booleans()),
        "leak": draw(st.sampled_from([1.0, 0.5, 0.125])),
    }
    return {"x": x, "h0": h0, "Wx": Wx, "Wh": Wh, "b": b, "lengths": lengths, **options}


def _dtypes(backend):
    return st.sampled_from(["float32", "float64"])


def _put(backend, a, dtype):
    return None if a is None else backend.asarray(a, dtype)


def _snapshot(arrays):
    return [None if a is None else to_numpy(a).copy() for a in arrays]


@SETTINGS
@given(data=st.data())
def test_agrees_with_reference(backend, data):
    p = data.draw(problems())
    names = ("x", "h0", "Wx", "Wh", "b")
    dtypes = {n: data.draw(_dtypes(backend), label=f"dtype of {n}") for n in names}
    out_dtype = "float64" if "float64" in [dtypes[n] for n in names if p[n] is not None] else "float32"
    batch_first = data.draw(st.booleans(), label="batch_first")
    return_sequences = data.draw(st.booleans(), label="return_sequences")
    args = {n: _put(backend, p[n], dtypes[n]) for n in names}
    x = p["x"]
    if batch_first and x.ndim >= 2:
        args["x"] = backend.asarray(np.moveaxis(x, 0, -2), dtypes["x"])
    else:
        batch_first = False
    lengths = None if p["lengths"] is None else backend.asarray(p["lengths"])
    before = _snapshot(args.values())
    out = rnn_xp.rnn_forward(
        *args.values(), nonlinearity=p["nonlinearity"], reverse=p["reverse"], leak=p["leak"],
        lengths=lengths, batch_first=batch_first, return_sequences=return_sequences,
    )  # fmt: skip
    # the reference sees the inputs as rounded to their dtypes; it then computes in float64
    r = {n: None if p[n] is None else p[n].astype(dtypes[n]).astype(np.float64) for n in names}
    seq, last = reference(r["x"], r["h0"], r["Wx"], r["Wh"], r["b"], nonlinearity=p["nonlinearity"],
                          lengths=p["lengths"], reverse=p["reverse"], leak=p["leak"])
    if batch_first:
        seq = np.moveaxis(seq, 0, -2)
    assert_close(out, seq if return_sequences else last, backend, out_dtype)
    for a, a0 in zip(args.values(), before):
        if a is not None:
            np.testing.assert_array_equal(to_numpy(a), a0)


@SETTINGS
@given(data=st.data())
def test_batch_independence(backend, data):
    p = data.draw(problems(min_batch=2, batch_ndim=1))
    dtype = data.draw(_dtypes(backend))
    B = p["x"].shape[1]
    j = data.draw(st.integers(0, B - 1), label="changed sequence")
    opts = {k: p[k] for k in ("nonlinearity", "reverse", "leak")}

    def run(x, h0, lengths):
        lens = None if lengths is None else backend.asarray(lengths)
        return to_numpy(rnn_xp.rnn_forward(
            _put(backend, x, dtype), _put(backend, h0, dtype), _put(backend, p["Wx"], dtype),
            _put(backend, p["Wh"], dtype), _put(backend, p["b"], dtype), lengths=lens, **opts))

    base = run(p["x"], p["h0"], p["lengths"])
    x2 = p["x"].copy()
    x2[:, j] = np.random.default_rng(j).standard_normal(x2[:, j].shape) * 3
    h02 = None if p["h0"] is None else p["h0"].copy()
    if h02 is not None:
        h02[j] = -h02[j] + 0.25
    lengths2 = None if p["lengths"] is None else p["lengths"].copy()
    if lengths2 is not None:
        lengths2[j] = p["x"].shape[0] - lengths2[j]
    changed = run(x2, h02, lengths2)
    others = [n for n in range(B) if n != j]
    np.testing.assert_array_equal(changed[:, others], base[:, others])


@SETTINGS
@given(data=st.data())
def test_chunked_equals_whole(backend, data):
    p = data.draw(problems(min_T=1))
    dtype = data.draw(_dtypes(backend))
    T = p["x"].shape[0]
    k = data.draw(st.integers(0, T), label="split")
    opts = {k_: p[k_] for k_ in ("nonlinearity", "leak")}
    reverse = p["reverse"]
    Wx, Wh, b = (_put(backend, p[n], dtype) for n in ("Wx", "Wh", "b"))
    x = backend.asarray(p["x"], dtype)
    h0 = _put(backend, p["h0"], dtype)
    whole = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, reverse=reverse, **opts)
    first, second = x[:k, ...], x[k:, ...]
    if reverse:  # the second chunk runs first
        out2 = rnn_xp.rnn_forward(second, h0, Wx, Wh, b, reverse=True, **opts)
        mid = rnn_xp.rnn_forward(second, h0, Wx, Wh, b, reverse=True, return_sequences=False, **opts)
        out1 = rnn_xp.rnn_forward(first, mid, Wx, Wh, b, reverse=True, **opts)
    else:
        out1 = rnn_xp.rnn_forward(first, h0, Wx, Wh, b, **opts)
        mid = rnn_xp.rnn_forward(first, h0, Wx, Wh, b, return_sequences=False, **opts)
        out2 = rnn_xp.rnn_forward(second, mid, Wx, Wh, b, **opts)
    joined = np.concatenate([to_numpy(out1), to_numpy(out2)], axis=0)
    np.testing.assert_allclose(joined, to_numpy(whole), rtol=RTOL[dtype], atol=ATOL[dtype])
    last = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, reverse=reverse, return_sequences=False, **opts)
    np.testing.assert_allclose(to_numpy(last), to_numpy(whole[0 if reverse else -1, ...]),
                               rtol=RTOL[dtype], atol=ATOL[dtype])


@SETTINGS
@given(data=st.data())
def test_reverse_is_flip(backend, data):
    p = data.draw(problems())
    dtype = data.draw(_dtypes(backend))
    xp = backend.xp
    opts = {k: p[k] for k in ("nonlinearity", "leak")}
    args = [_put(backend, p[n], dtype) for n in ("h0", "Wx", "Wh", "b")]
    x = backend.asarray(p["x"], dtype)
    rev = rnn_xp.rnn_forward(x, *args, reverse=True, **opts)
    fwd_of_flipped = rnn_xp.rnn_forward(xp.flip(x, axis=0), *args, **opts)
    assert_close(rev, to_numpy(xp.flip(fwd_of_flipped, axis=0)), backend, dtype)


@SETTINGS
@given(data=st.data())
def test_unbatched_is_batch_of_one(backend, data):
    p = data.draw(problems(batch_ndim=0))
    dtype = data.draw(_dtypes(backend))
    opts = {k: p[k] for k in ("nonlinearity", "reverse", "leak")}
    x, h0 = p["x"], p["h0"]
    Wx, Wh, b = (_put(backend, p[n], dtype) for n in ("Wx", "Wh", "b"))
    lengths = None if p["lengths"] is None else int(p["lengths"])
    single = rnn_xp.rnn_forward(backend.asarray(x, dtype), _put(backend, h0, dtype), Wx, Wh, b,
                                lengths=None if lengths is None else backend.asarray(np.array(lengths)),
                                **opts)
    one = rnn_xp.rnn_forward(backend.asarray(x[:, None], dtype),
                             None if h0 is None else backend.asarray(h0[None], dtype), Wx, Wh, b,
                             lengths=None if lengths is None else [lengths], **opts)
    assert_close(single, to_numpy(one)[:, 0], backend, dtype)
    if x.shape[0]:
        h = np.zeros(Wx.shape[0]) if h0 is None else h0
        step = rnn_xp.rnn_step_forward(backend.asarray(x[0], dtype), backend.asarray(h, dtype), Wx, Wh, b,
                                       nonlinearity=p["nonlinearity"])
        step1 = rnn_xp.rnn_step_forward(backend.asarray(x[:1], dtype), backend.asarray(h[None], dtype),
                                        Wx, Wh, b, nonlinearity=p["nonlinearity"])
        assert_close(step, to_numpy(step1)[0], backend, dtype)


@SETTINGS
@given(data=st.data())
def test_inputs_unchanged_list_and_step(backend, data):
    """List-of-steps input and the one-step function leave every input as it was."""
    p = data.draw(problems(min_T=1))
    dtype = data.draw(_dtypes(backend))
    steps = [backend.asarray(p["x"][t], dtype) for t in range(p["x"].shape[0])]
    rest = [_put(backend, p[n], dtype) for n in ("h0", "Wx", "Wh", "b")]
    lengths = None if p["lengths"] is None else backend.asarray(p["lengths"])
    before = _snapshot(steps + rest + [lengths])
    out = rnn_xp.rnn_forward(steps, *rest, lengths=lengths, nonlinearity=p["nonlinearity"],
                             reverse=p["reverse"], leak=p["leak"])
    h = rest[0] if rest[0] is not None else backend.asarray(np.zeros((*p["x"].shape[1:-1], p["Wx"].shape[0])), dtype)
    rnn_xp.rnn_step_forward(steps[0], h, *rest[1:])
    for a, a0 in zip(steps + rest + [lengths], before):
        if a is not None:
            np.testing.assert_array_equal(to_numpy(a), a0)
    seq, _ = reference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], nonlinearity=p["nonlinearity"],
                       lengths=p["lengths"], reverse=p["reverse"], leak=p["leak"])
    assert_close(out, seq, backend, dtype)
