"""The two notebook programs rnn_xp grew from, reproduced through rnn_xp."""

from __future__ import annotations

import pathlib
import runpy

import numpy as np

import rnn_xp
from rnn_xp import columns
from support import assert_close

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def seed_000_loop(x_seq, h0, Wx, Wh, b):
    """The seed-000 notebook's column loop, as written there."""
    h_seq = np.zeros((len(x_seq), h0.shape[0], 1))
    prev_h = h0
    for t in range(len(x_seq)):
        prev_h = np.tanh(np.dot(Wx, x_seq[t]) + np.dot(Wh, prev_h) + b)
        h_seq[t] = prev_h
    return h_seq


def seed_003_loop(inputs, state_t, W, U, b):
    """The seed-003 notebook's row loop, as written there."""
    successive_outputs = []
    for input_t in inputs:
        output_t = np.tanh(np.dot(W, input_t) + np.dot(U, state_t) + b)
        successive_outputs.append(output_t)
        state_t = output_t
    return np.stack(successive_outputs, axis=0)


def test_seed_000_columns(backend, dtype):
    rng = np.random.default_rng(0)
    Wx = rng.standard_normal((2, 3)) * 0.01
    Wh = rng.standard_normal((2, 2)) * 0.01
    b = np.zeros((2, 1))
    h0 = np.zeros((2, 1))
    x_seq = [rng.standard_normal((3, 1)) for _ in range(4)]
    expected = seed_000_loop(x_seq, h0, Wx, Wh, b)
    X = [backend.asarray(s, dtype) for s in x_seq]
    args = [backend.asarray(a, dtype) for a in (h0, Wx, Wh, b)]
    assert_close(columns.rnn_forward(X, *args), expected, backend, dtype)
    x_arr = backend.asarray(np.stack(x_seq), dtype)
    assert_close(columns.rnn_forward(x_arr, *args), expected, backend, dtype)
    step = columns.rnn_step_forward(X[0], *args)
    assert_close(step, expected[0], backend, dtype)


def test_seed_003_rows(backend, dtype):
    rng = np.random.default_rng(1)
    inputs = rng.random((42, 32))
    state_t = np.zeros((64,))
    W = rng.random((64, 32)) * 0.05
    U = rng.random((64, 64)) * 0.05
    b = rng.random((64,))
    expected = seed_003_loop(inputs, state_t, W, U, b)
    out = rnn_xp.rnn_forward(*(backend.asarray(a, dtype) for a in (inputs, state_t, W, U, b)))
    assert_close(out, expected, backend, dtype)


def test_seed_000_program_runs_on_rnn_xp(capsys):
    """The notebook program, its functions swapped for an import, prints the same numbers."""
    ns = runpy.run_path(str(EXAMPLES / "seed_000_columns.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.count("hidden state:") == 4
    expected = seed_000_loop(ns["x_seq"], ns["h0"], ns["Wx"], ns["Wh"], ns["b"])
    np.testing.assert_allclose(ns["hidden_states"], expected, rtol=1e-12, atol=1e-15)
    for t, h in enumerate(expected):
        assert f"Timestep {t} hidden state:\n{h.squeeze()}" in printed


def test_seed_003_program_runs_on_rnn_xp(capsys):
    ns = runpy.run_path(str(EXAMPLES / "seed_003_rows.py"), run_name="__main__")
    expected = seed_003_loop(ns["inputs"], np.zeros(64), ns["W"], ns["U"], ns["b"])
    assert ns["final_output_sequence"].shape == (42, 64)
    np.testing.assert_allclose(ns["final_output_sequence"], expected, rtol=1e-12, atol=1e-15)
