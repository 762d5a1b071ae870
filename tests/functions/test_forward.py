"""The forward pass against the float64 reference, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import rnn_xp
from support import assert_close, random_rnn, reference_rnn


def to(backend, dtype, *arrays):
    return [None if a is None else backend.asarray(a, dtype) for a in arrays]


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_forward_matches_reference(backend, dtype, rng, batch, nonlinearity):
    x, h0, Wx, Wh, b = random_rnn(rng, 6, batch, 4, 5)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b, nonlinearity=nonlinearity)
    out = rnn_xp.rnn_forward(*to(backend, dtype, x, h0, Wx, Wh, b), nonlinearity=nonlinearity)
    assert_close(out, expected, backend, dtype)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_step_matches_reference(backend, dtype, rng, batch):
    x, h0, Wx, Wh, b = random_rnn(rng, 1, batch, 4, 5)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b, nonlinearity="relu")
    out = rnn_xp.rnn_step_forward(*to(backend, dtype, x[0], h0, Wx, Wh, b), nonlinearity="relu")
    assert_close(out, expected[0], backend, dtype)


def test_no_bias_and_no_h0(backend, dtype, rng):
    x, _, Wx, Wh, _ = random_rnn(rng, 5, (2,), 3, 4)
    expected, _ = reference_rnn(x, None, Wx, Wh, None)
    out = rnn_xp.rnn_forward(*to(backend, dtype, x, None, Wx, Wh, None))
    assert_close(out, expected, backend, dtype)


def test_batch_first(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (2, 3), 3, 4)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    x_bf = np.moveaxis(x, 0, -2)  # (2, 3, T, D)
    out = rnn_xp.rnn_forward(*to(backend, dtype, x_bf, h0, Wx, Wh, b), batch_first=True)
    assert_close(out, np.moveaxis(expected, 0, -2), backend, dtype)


def test_list_of_steps(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (3,), 2, 5)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    steps = [backend.asarray(x[t], dtype) for t in range(4)]
    out = rnn_xp.rnn_forward(steps, *to(backend, dtype, h0, Wx, Wh, b))
    assert_close(out, expected, backend, dtype)


def test_chunks_equal_whole(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 9, (2,), 3, 4)
    xa, h0a, Wxa, Wha, ba = to(backend, dtype, x, h0, Wx, Wh, b)
    whole = rnn_xp.rnn_forward(xa, h0a, Wxa, Wha, ba)
    first = rnn_xp.rnn_forward(xa[:4, ...], h0a, Wxa, Wha, ba)
    second = rnn_xp.rnn_forward(xa[4:, ...], first[-1, ...], Wxa, Wha, ba)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    assert_close(first, expected[:4], backend, dtype)
    assert_close(second, expected[4:], backend, dtype)
    assert_close(whole, expected, backend, dtype)


@pytest.mark.parametrize("batch", [(), (3,), (0,)])
def test_empty_sequence(backend, dtype, rng, batch):
    x, h0, Wx, Wh, b = random_rnn(rng, 0, batch, 3, 4)
    out = rnn_xp.rnn_forward(*to(backend, dtype, x, h0, Wx, Wh, b))
    assert_close(out, np.zeros((0, *batch, 4)), backend, dtype)
    last = rnn_xp.rnn_forward(*to(backend, dtype, x, h0, Wx, Wh, b), return_sequences=False)
    assert_close(last, h0, backend, dtype)


def test_empty_list_of_steps(backend, dtype, rng):
    _, h0, Wx, Wh, b = random_rnn(rng, 0, (2,), 3, 4)
    out = rnn_xp.rnn_forward([], *to(backend, dtype, h0, Wx, Wh, b))
    assert_close(out, np.zeros((0, 2, 4)), backend, dtype)


def test_zero_batch(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 3, (0,), 3, 4)
    out = rnn_xp.rnn_forward(*to(backend, dtype, x, h0, Wx, Wh, b))
    assert_close(out, np.zeros((3, 0, 4)), backend, dtype)


def test_inputs_not_modified(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (2,), 3, 4)
    arrays = to(backend, dtype, x, h0, Wx, Wh, b)
    from support import to_numpy

    before = [to_numpy(a).copy() for a in arrays]
    rnn_xp.rnn_forward(*arrays, lengths=[4, 2], reverse=True, leak=0.5)
    rnn_xp.rnn_step_forward(arrays[0][0, ...], *arrays[1:])
    for a, a0 in zip(arrays, before):
        np.testing.assert_array_equal(to_numpy(a), a0)


def test_mixed_precision_promotes(backend, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 3, (2,), 3, 4)
    out = rnn_xp.rnn_forward(
        backend.asarray(x, "float32"), backend.asarray(h0, "float32"),
        backend.asarray(Wx, "float64"), backend.asarray(Wh, "float32"), None,
    )  # fmt: skip
    expected, _ = reference_rnn(x.astype(np.float32), h0.astype(np.float32), Wx,
                                Wh.astype(np.float32))
    assert_close(out, expected, backend, "float64", rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("leak", [1.0, 0.3])
def test_lengths_reverse_leak(backend, dtype, rng, reverse, leak):
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (4,), 3, 5)
    lengths = np.array([3, 6, 0, 1])
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, reverse=reverse, leak=leak)
    args = to(backend, dtype, x, h0, Wx, Wh, b)
    lens = backend.asarray(lengths)
    out = rnn_xp.rnn_forward(*args, lengths=lens, reverse=reverse, leak=leak)
    assert_close(out, expected, backend, dtype)
    fin = rnn_xp.rnn_forward(*args, lengths=lens, reverse=reverse, leak=leak,
                             return_sequences=False)
    assert_close(fin, last, backend, dtype)


def test_reverse_is_flip(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (2,), 3, 4)
    rev = rnn_xp.rnn_forward(*to(backend, dtype, x, h0, Wx, Wh, b), reverse=True)
    fwd, _ = reference_rnn(x[::-1], h0, Wx, Wh, b)
    assert_close(rev, fwd[::-1], backend, dtype)


def test_return_sequences_false_is_last_state(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 7, (3,), 2, 4)
    _, last = reference_rnn(x, h0, Wx, Wh, b)
    out = rnn_xp.rnn_forward(*to(backend, dtype, x, h0, Wx, Wh, b), return_sequences=False)
    assert_close(out, last, backend, dtype)


def test_explicit_xp(backend, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 3, (2,), 3, 4)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    out = rnn_xp.rnn_forward(*to(backend, dtype, x, h0, Wx, Wh, b), xp=backend.xp)
    assert_close(out, expected, backend, dtype)
