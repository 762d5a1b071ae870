"""``python -m rnn_xp bench --isolated`` (``rnn_xp.bench.isolated``): one process per contender.

The full suite takes minutes; these tests run its pieces on tiny sizes: a
worker in this process and in a process of its own, the agreement check
against the default install, the tables and the command line.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import rnn_xp
from rnn_xp import bench
from rnn_xp.bench import isolated as bench_isolated
from support import optional_import


def _spec(name, kind="forward", size=(2, 5, 3, 4), leak=1.0):
    return {"kind": kind, "name": name, "size": list(size), "threads": 1, "rounds": 1, "budget_s": 1e-3,
            "leak": leak}  # fmt: skip


def test_worker_times_rnn_forward_and_reports_its_final_state():
    got = bench_isolated.worker(_spec("rnn_xp numpy: default install", leak=0.5))
    x, h0, Wx, Wh, b = bench.problem(2, 5, 3, 4)
    want = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, leak=0.5)[-1, 0]
    assert got["seconds"] > 0 and got["calls_per_round"] >= 1
    np.testing.assert_allclose(got["fingerprint"], want, rtol=1e-6)


def test_worker_backward_fingerprint_is_dh0():
    got = bench_isolated.worker(_spec("rnn_xp numpy: default install", kind="backward"))
    x, h0, Wx, Wh, b = bench.problem(2, 5, 3, 4)
    dh = np.random.default_rng(1).standard_normal((5, 2, 4), dtype=np.float32)
    h = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    np.testing.assert_allclose(got["fingerprint"], rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, h).dh0[0], rtol=1e-5)


def test_jax_backward_contender_is_the_vjp_of_the_forward():
    """The JAX row of the backward suite times rnn_xp's BPTT as JAX runs it; its dh0 is NumPy's."""
    if optional_import("jax") is None:
        pytest.skip("jax not installed")
    got = bench_isolated.worker(_spec("rnn_xp jax (vjp, backward only)", kind="backward"))
    x, h0, Wx, Wh, b = bench.problem(2, 5, 3, 4)
    dh = np.random.default_rng(1).standard_normal((5, 2, 4), dtype=np.float32)
    h = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    assert got["seconds"] > 0
    np.testing.assert_allclose(got["fingerprint"], rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, h).dh0[0], rtol=1e-5)


@pytest.mark.long  # two processes, each importing its library
def test_torch_contender_agrees_in_a_process_of_its_own():
    """A worker process for torch.nn.RNN and one for the default install give the same final state."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    table = bench_isolated.FORWARD
    runs = {name: bench_isolated.spawn(_spec(name), table[name].env, 300)
            for name in ("torch.nn.RNN", "rnn_xp numpy: default install")}  # fmt: skip
    for got in runs.values():
        assert "error" not in got, got
    assert runs["rnn_xp numpy: default install"]["mkl"].startswith("not used")  # RNN_XP_MKL=0 there
    np.testing.assert_allclose(runs["torch.nn.RNN"]["fingerprint"],
                               runs["rnn_xp numpy: default install"]["fingerprint"], atol=1e-5)  # fmt: skip


def test_a_failing_worker_is_reported_not_raised():
    got = bench_isolated.spawn(_spec("no such contender", size=(1, 2, 3, 0)), {}, 120)
    assert "error" in got


def _result(seconds, fingerprints):
    res = {name: {"seconds": s, "fingerprint": fp} for name, s, fp in zip(bench_isolated.FORWARD, seconds,
                                                                          fingerprints)}  # fmt: skip
    rec = {"B": 16, "T": 100, "D": 64, "H": 128, "gflop": 0.079, "results": res}
    return {"method": "isolated", "machine": {"cpu_model": "test"}, "threads": 2,
            "gemm": {"n": 2048, "gflops": {"numpy": 300.0}}, "suites": {"cpu": [rec]}}  # fmt: skip


def test_ratios_agreement_and_goal_lines():
    fps = [[0.5, 0.25]] * 5 + [[0.5, 0.75]]  # the last contender disagrees with the default install
    result = _result([2e-3, 1.5e-3, 1e-3, 0.5e-3, 0.6e-3, 0.4e-3], fps)
    bench_isolated.finish(result)
    res = result["suites"]["cpu"][0]["results"]
    assert res["rnn_xp numpy: numba extra"]["ratio_to_baseline"] == pytest.approx(0.25)
    assert res["rnn_xp numpy: numba extra"]["gflops"] == pytest.approx(0.079 / 0.5e-3)
    assert res["rnn_xp numpy: numba extra"]["agrees"] is True
    assert res["rnn_xp numpy: numba + mkl extras"]["agrees"] is False
    text = io.StringIO()
    bench_isolated.print_tables(result, text)
    out = text.getvalue()
    assert "(16, 100, 64, 128)    rnn_xp numpy: numba extra            ratio 0.25 (goal <= 0.35), vs JAX 0.33" in out
    assert out.count("  NO") == 1


def test_markdown_tables_from_a_results_file(tmp_path, capsys):
    result = _result([2e-3, 1.5e-3, 1e-3, 0.5e-3, 0.6e-3, 0.4e-3], [[0.5]] * 6)  # no ratios yet: a partial file
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    from rnn_xp.cli import main

    assert main(["bench", "--markdown", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(line for line in lines if line.startswith("| (B, T, D, H)"))
    row = next(line for line in lines if line.startswith("| (16, 100, 64, 128)"))
    cells = dict(zip(head.split(" | "), row.split(" | ")))
    assert cells["torch.nn.RNN ms"] == "2"  # the baseline, no ratio of its own
    assert cells["default install ms"] == "1" and row.count("| 0.50 |") == 1  # 1 ms / 2 ms
    assert cells["numba extra ms"] == "0.5" and "| 0.25 |" in row
    gemm = 100 * 0.079 / 0.4e-3 / 300.0  # the fastest install's GFLOP/s over the GEMM rate
    assert row.split(" | ")[-2] == f"{gemm:.0f}%" and row.endswith("| - |")  # no in-process record


def test_command_line_takes_isolated_and_its_options(monkeypatch):
    from rnn_xp import cli

    seen = {}
    monkeypatch.setattr(bench_isolated, "run", lambda **kw: (seen.update(kw), {"suites": {}})[1])
    args = cli.build_parser().parse_args(["bench", "--isolated", "--suite", "reservoir", "--long", "--quick"])
    assert args.func(args) == 0
    assert seen["suites"] == ("reservoir",) and seen["long"] and seen["quick"]
    assert json.dumps(bench_isolated._grid("reservoir", True)[0]) == "[1, 100000, 8, 100]"
