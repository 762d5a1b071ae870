"""The training example: short runs whose loss must fall below a bound the untrained model does not reach."""

from __future__ import annotations

import numpy as np
import pytest

from rnn_xp import _backends
from rnn_xp.cli import main
from rnn_xp.cli.train import make_batch, train


def need(name):
    try:
        _backends.load(name)
    except _backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax", "array_api_strict"])
def test_sine_loss_falls_below_bound(backend):
    need(backend)
    bound = 0.08  # below "repeat the input" (about 0.1) and far below "predict 0" (about 0.5)
    r = train("sine", backend=backend, steps=60, seq_len=20, hidden=16, quiet=True)
    assert r.initial_loss > bound, f"untrained loss {r.initial_loss} already below {bound}"
    assert r.final_loss < bound, f"trained loss {r.final_loss} not below {bound}"
    assert r.baselines["repeat the input"] > bound
    assert len(r.losses) == 60 and np.all(np.isfinite(r.losses))


def test_adding_problem_beats_constant_answer():
    r = train("adding", steps=1200, seq_len=10, hidden=16, quiet=True)
    bound = 0.1  # answering 1 always costs about 1/6
    assert r.baselines["predict 1"] > bound
    assert r.initial_loss > bound, f"untrained loss {r.initial_loss} already below {bound}"
    assert r.final_loss < bound, f"trained loss {r.final_loss} not below {bound}"


def test_sgd_trains():
    r = train("sine", optimizer="sgd", steps=150, seq_len=20, hidden=16, quiet=True)
    assert r.final_loss < 0.08 < r.initial_loss


def test_same_seed_same_run_on_two_backends():
    need("torch")
    a = train("sine", backend="numpy", steps=15, seq_len=8, hidden=6, dtype="float64", quiet=True)
    b = train("sine", backend="torch", steps=15, seq_len=8, hidden=6, dtype="float64", quiet=True)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-10)
    assert type(b.params["Wh"]).__module__.startswith("torch")


def test_adding_batch_has_known_answer():
    x, y = make_batch(np.random.default_rng(3), "adding", 5, 12)
    assert x.shape == (12, 5, 2) and y.shape == (5, 1)
    np.testing.assert_array_equal(x[..., 1].sum(axis=0), 2.0)  # two marked steps per sequence
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * x[..., 1]).sum(axis=0))


def test_cli_train_writes_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    assert main(["train", "--steps", "4", "--seq-len", "6", "--log-every", "2", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "step      4/4" in out and "final loss" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_rejects_bad_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--optimizer", "rmsprop"])
    assert exc.value.code == 2
    assert "rmsprop" in capsys.readouterr().err
