"""The LSTM and GRU benchmark (``rnn_xp.bench.gated``, ``bench --isolated --suite lstm/gru``, ``cells.SETS``).

Every contender of both cells, forward and forward+backward, against torch
in float64 on a tiny size; the suites through ``isolated.run`` with each
worker run in this process under its install's environment (the real
processes: one long test); the tables, the Markdown the docs print, a
library that is not installed.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from rnn_xp import bench
from rnn_xp.bench import gated
from rnn_xp.bench import isolated
from support import optional_import

SIZE = (2, 5, 3, 4)  # (B, T, D, H)
ROWS = [(cell, name) for cell, table in isolated.GATED.items() for name in table]


def _spec(cell, name, kind, size=SIZE):
    return {"kind": kind, "cell": cell, "name": name, "size": list(size), "threads": 1, "rounds": 1,
            "budget_s": 1e-3}  # fmt: skip


def _float64_torch(cell, size):
    """``{kind: fingerprint}`` from ``torch.nn.LSTM``/``GRU`` in float64 on the problem's arrays: the last step's
    output of batch entry 0, and (autograd, loss ``sum(output * d_output)``) ``dx[0, 0]`` then ``dW_hh[0]``."""
    import torch

    p = gated.problem(cell, *size)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(size[2], size[3], dtype=torch.float64)
    module.load_state_dict({"weight_ih_l0": t(p.W_ih), "weight_hh_l0": t(p.W_hh), "bias_ih_l0": t(p.b_ih),
                            "bias_hh_l0": t(p.b_hh)})  # fmt: skip
    x = t(p.x).requires_grad_()
    state = t(p.h0)[None] if p.c0 is None else (t(p.h0)[None], t(p.c0)[None])
    output = module(x, state)[0]
    (output * t(p.d_output)).sum().backward()
    return {"forward": output[-1, 0].detach().numpy(),
            "forward-backward": np.concatenate([x.grad[0, 0].numpy(), module.weight_hh_l0.grad[0].numpy()])}


def _needs(name):
    libs = ["torch"] + (["jax"] if "jax" in name or "flax" in name else []) + (["flax"] if "flax" in name else [])
    missing = [lib for lib in libs if optional_import(lib) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.mark.parametrize("cell, name", ROWS, ids=[f"{c}-{n}" for c, n in ROWS])
def test_every_contender_agrees_with_torch_in_float64(cell, name, monkeypatch):
    """Each row of the suites, forward and forward+backward, in this process under its install's environment."""
    _needs(name)
    want = _float64_torch(cell, SIZE)
    for key, value in isolated.GATED[cell][name].env.items():
        monkeypatch.setenv(key, value)
    with bench.thread_settings(1):  # the worker sets torch's and BLAS's threads: put back after
        for kind in gated.KINDS:
            got = isolated.worker(_spec(cell, name, kind))
            assert got["seconds"] > 0 and got["calls_per_round"] >= 1
            np.testing.assert_allclose(got["fingerprint"], want[kind], rtol=1e-4, atol=1e-5, err_msg=kind)
            assert ("note" in got) == (name == gated.FLAX["gru"])  # Flax's GRU form is said beside its row


def test_problem_and_flops():
    p = gated.problem("lstm", *SIZE)
    assert (p.W_ih.shape, p.W_hh.shape, p.c0.shape, p.d_output.shape) == ((16, 3), (16, 4), (2, 4), (5, 2, 4))
    assert all(a.dtype == np.float32 for a in p[1:])
    assert not np.any(gated.problem("gru", *SIZE).b_hh)  # Flax's GRUCell has no b_hn: zero for every row
    assert gated.flops("gru", 2, 5, 3, 4) == 2 * 5 * 2 * 12 * (3 + 4)
    assert gated.flops("lstm", 2, 5, 3, 4, "forward-backward") == 3 * 2 * 5 * 2 * 16 * (3 + 4)
    with pytest.raises(ValueError, match="cell must be one of"):
        gated.problem("elman", *SIZE)
    with pytest.raises(ValueError, match="kind must be one of"):
        gated.rnn_xp_numpy("backward", p)


def test_a_contender_whose_library_is_missing_is_left_out_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "flax", None)  # `from flax import nnx` raises ModuleNotFoundError
    got = isolated.worker(_spec("gru", gated.FLAX["gru"], "forward"))
    assert got == {"left_out": "flax is not installed"}
    assert bench.contenders(*SIZE, backends=["numpy", "jax"], cell=bench.SETS["gru"], names=[gated.FLAX["gru"]]) == {}
    result = _fake_result({gated.FLAX["gru"]: got})
    isolated.finish(result)
    text = io.StringIO()
    isolated.print_tables(result, text)
    assert f"{gated.FLAX['gru']:<36}  left out: flax is not installed" in text.getvalue()
    markdown = isolated.results_markdown(result)
    assert f"- {gated.FLAX['gru']}: left out: flax is not installed" in markdown
    assert "| left out | - |" in markdown


def _fake_result(rows=None, size=(16, 100, 64, 128)):
    """A results dict of the gru sections as ``isolated.run`` saves it: made-up times, agreeing fingerprints."""
    seconds = {"torch.nn.GRU": 4e-3, gated.JAX: 2e-3, gated.FLAX["gru"]: 5e-3, **{n: 1e-3 for n in isolated.INSTALLS}}
    res = {n: {"seconds": s, "fingerprint": [0.5, 0.25]} for n, s in seconds.items()}
    res.update(rows or {})
    rec = {"B": size[0], "T": size[1], "D": size[2], "H": size[3], "gflop": 0.4, "results": res,
           "in_process": {"results": {"torch.nn.GRU": {"ratio_to_baseline": 1.0},
                                      gated.NUMPY: {"ratio_to_baseline": 0.3}, gated.JAX: {"ratio_to_baseline": 0.6}}}}
    return {"method": "isolated", "machine": {"cpu_model": "test"}, "threads": 2,
            "gemm": {"n": 2048, "gflops": {"numpy": 100.0}},
            "suites": {"gru": [rec], "gru-forward-backward": [json.loads(json.dumps(rec))]}}  # fmt: skip


def test_tables_goals_and_markdown_of_the_gated_sections():
    result = _fake_result({gated.FLAX["gru"]: {"seconds": 5e-3, "fingerprint": [0.5, 0.25],
                                               "note": gated.NOTES[gated.FLAX["gru"]]}})  # fmt: skip
    big = _fake_result(size=bench.CPU_GRID[-1])["suites"]["gru"][0]
    result["suites"]["gru"].append(big)
    isolated.finish(result)
    res = result["suites"]["gru"][0]["results"]
    assert res["rnn_xp numpy: default install"]["ratio_to_baseline"] == pytest.approx(0.25)
    assert res["rnn_xp numpy: default install"]["gflops"] == pytest.approx(400)
    assert res["rnn_xp numpy: default install"]["percent_of_gemm"] == pytest.approx(400)
    assert all(r["agrees"] for r in res.values())
    text = io.StringIO()
    isolated.print_tables(result, text)
    out = text.getvalue()
    assert "[gru-forward-backward] ratio = time / torch.nn.GRU" in out
    assert "in one process (bench method):       rnn_xp numpy 0.30, jax 0.60 of torch" in out
    assert f"note: {gated.FLAX['gru']}: Flax's GRUCell has no bias inside the reset product" in out
    default = "rnn_xp numpy: default install"
    assert f"gru                   (16, 100, 64, 128)    {default:<36} ratio 0.25 (goal < 1), vs JAX 0.50, " \
           "vs Flax 0.20" in out
    assert f"{str(bench.CPU_GRID[-1]):<22}{default:<36} ratio 0.25 (goal <= 1.1)" in out
    assert "rnn_xp numpy: numba + mkl extras     ratio 0.25 (goal < 1, and below JAX's)" in out
    lines = isolated.results_markdown(result).splitlines()
    assert "**gru-forward-backward** (ratio: time / torch.nn.GRU; below 1 is faster)" in lines
    head = next(line for line in lines if line.startswith("| (B, T, D, H)"))
    row = next(line for line in lines if line.startswith("| (16, 100, 64, 128)"))
    cells = head.split(" | ")
    assert cells[1:4] == ["torch.nn.GRU ms", "jax (lax.scan) ms", "ratio"]
    assert row.split(" | ")[1:4] == ["4", "2", "0.50"] and row.endswith("| 400% | 0.30 |")
    assert sum(line.startswith(f"- {gated.FLAX['gru']}: Flax's GRUCell") for line in lines) == 2  # both sections


def test_in_process_sets_time_every_row_beside_the_baseline():
    """``cells.SETS`` holds the gated cells' sets: ``bench_grid`` runs them as the RNN's, every row agreeing."""
    _needs("flax jax")
    for name in ("lstm", "gru-forward-backward"):
        (rec,) = bench.bench_grid([SIZE], backends=["numpy", "jax"], rounds=1, budget_s=1e-3, settle_s=0.0,
                                  gemm_n=64, cell=bench.SETS[name])  # fmt: skip
        cell = name.split("-")[0]
        assert list(rec["results"]) == [gated.BASELINES[cell], gated.NUMPY, gated.JAX, gated.FLAX[cell]]
        assert rec["baseline"] == gated.BASELINES[cell]
        assert rec["gflop"] == gated.flops(cell, *SIZE, "forward" if name == cell else "forward-backward") / 1e9
        assert all(r["agrees"] and r["seconds"] > 0 for r in rec["results"].values()), rec["results"]
    with pytest.raises(ValueError, match="'lstm' contender set has no GPU rows"):
        bench.run(gpu=True, cell=bench.SETS["lstm"])


def test_the_gru_suite_through_run_writes_what_the_docs_read(tmp_path, monkeypatch):
    """``isolated.run(suites=("gru",))`` on a tiny grid, each worker in this process under its environment
    (Flax made missing: its row is left out): the JSON, a chart per section, the Markdown of the docs."""
    _needs("jax")
    from rnn_xp.bench import suite

    def in_this_process(spec, env_extra, timeout_s):
        if spec["kind"] == "gemm":
            return {"gemm": bench.gemm_rate(64), "machine": bench.machine_info(spec["threads"])}
        with monkeypatch.context() as m:
            for key, value in env_extra.items():
                m.setenv(key, value)
            return isolated.worker(spec)

    monkeypatch.setattr(isolated, "spawn", in_this_process)
    monkeypatch.setattr(suite, "SETTLE_S", 0.0)  # the in-process figure: no idle time, a small GEMM
    monkeypatch.setattr(suite, "GEMM_N_CPU", 64)
    monkeypatch.setitem(sys.modules, "flax", None)
    progress = io.StringIO()
    with bench.thread_settings(1):
        result = isolated.run(suites=("gru",), threads=1, quick=True, grid=[SIZE], out_dir=str(tmp_path),
                              stream=io.StringIO(), progress_stream=progress)  # fmt: skip
    assert list(result["suites"]) == ["gru", "gru-forward-backward"]
    (path,) = tmp_path.glob("*-isolated-quick.json")
    saved = json.loads(path.read_text())
    assert saved["suites"].keys() == result["suites"].keys()
    for section, records in saved["suites"].items():
        (rec,) = records
        assert (rec["B"], rec["T"], rec["D"], rec["H"]) == SIZE and rec["baseline"] == "torch.nn.GRU"
        res = rec["results"]
        assert list(res) == list(isolated.GATED["gru"])  # the baseline first, every row
        assert res[gated.FLAX["gru"]] == {"left_out": "flax is not installed"}
        timed = {n: r for n, r in res.items() if n != gated.FLAX["gru"]}
        for r in timed.values():
            assert {"seconds", "ratio_to_baseline", "gflops", "percent_of_gemm", "agrees", "fingerprint"} <= set(r)
            assert r["agrees"] is True
        assert set(rec["in_process"]["results"]) == {"torch.nn.GRU", gated.NUMPY, gated.JAX}
        assert (tmp_path / f"{path.stem}-{section}.png").stat().st_size > 0
    assert progress.getvalue().count("gru-forward-backward (2, 5, 3, 4)") == len(isolated.GATED["gru"]) + 1
    markdown = isolated.results_markdown(saved)
    assert markdown.count("| (2, 5, 3, 4) |") == 2 and "**gru-forward-backward**" in markdown


def test_command_line_takes_the_gated_suites(monkeypatch):
    from rnn_xp import cli

    seen = {}
    monkeypatch.setattr(isolated, "run", lambda **kw: (seen.update(kw), {"suites": {}})[1])
    args = cli.build_parser().parse_args(["bench", "--isolated", "--suite", "lstm", "--suite", "gru"])
    assert args.func(args) == 0
    assert seen["suites"] == ("lstm", "gru")
    assert isolated._grid("lstm", False) == list(bench.CPU_GRID)


@pytest.mark.long  # four processes, each importing its library
def test_gated_contenders_agree_in_processes_of_their_own():
    """torch.nn.GRU, Flax's GRU and the numba + mkl install, each in a worker process, give the default
    install's gradients."""
    _needs("flax jax")
    table = isolated.GATED["gru"]
    names = ("torch.nn.GRU", gated.FLAX["gru"], "rnn_xp numpy: numba + mkl extras", isolated.REFERENCE)
    runs = {n: isolated.spawn(_spec("gru", n, "forward-backward"), table[n].env, 300) for n in names}
    for got in runs.values():
        assert "error" not in got, got
    for name in names[:-1]:
        np.testing.assert_allclose(runs[name]["fingerprint"], runs[isolated.REFERENCE]["fingerprint"], atol=1e-5)
    assert runs[gated.FLAX["gru"]]["versions"]["flax"]
