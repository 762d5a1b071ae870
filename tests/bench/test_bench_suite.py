"""The in-process suite (``rnn_xp.bench``, behind ``python -m rnn_xp bench``): its contenders agree with
torch.nn.RNN, its tables, charts, grids and results files, and the GEMM rates it compares with."""

from __future__ import annotations

import pytest
from support import optional_import


def test_bench_suite_runs_and_checks_agreement(tmp_path):
    """The benchmark machinery on a tiny size: every contender agrees with torch.nn.RNN."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    from rnn_xp import bench
    from rnn_xp.kernels import mkl

    grid = bench.bench_grid([(2, 5, 3, 4)], backends=["jax", "torch"], rounds=1, budget_s=1e-3,
                             settle_s=0.0)  # fmt: skip
    names = set(grid[0]["results"])
    assert {bench.BASELINE, bench.FAST, "seed loop (numpy)", "rnn_xp numpy (portable)"} <= names
    with_mkl = mkl.library() is not None  # then oneMKL and OpenBLAS are timed side by side
    assert (bench.FAST_OPENBLAS in names) == (with_mkl and mkl.preferred())  # the default is oneMKL
    assert (bench.FAST_MKL in names) == (with_mkl and not mkl.preferred())  # the default is OpenBLAS
    # the GEMM of every library that multiplies on its own: NumPy's BLAS, oneMKL, torch, XLA
    assert set(grid[0]["gemm_gflops_by_blas"]) == {"numpy", "torch", "jax"} | ({"mkl"} if with_mkl else set())
    assert grid[0]["gemm_gflops"] == max(grid[0]["gemm_gflops_by_blas"].values())
    assert all(r["agrees"] and r["seconds"] > 0 for r in grid[0]["results"].values())
    result = {"machine": {"cpu_model": "test"}, "gemm": {"n": 8, "gflops": {"numpy": 1.0}},
              "grid": grid}  # fmt: skip
    import io

    text = io.StringIO()
    bench.print_tables(result, text)
    assert "worst ratio" in text.getvalue()
    bench.chart(result, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_bench_command_line_parses():
    from rnn_xp import cli

    args = cli.build_parser().parse_args(["bench", "--quick", "--threads", "1"])
    assert args.quick and args.threads == 1 and not args.gpu and not args.small_batch
    assert cli.build_parser().parse_args(["bench", "--small-batch"]).small_batch


def test_bench_small_batch_grid(tmp_path, monkeypatch):
    """``--small-batch``: its own grid and results file, NumPy against torch, no memory section."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    import io
    import json

    from rnn_xp import bench

    assert bench.SMALL_BATCH_GRID == [(B, 200, H, H) for H in (256, 512, 1024) for B in (1, 4, 8)]
    assert set(bench.SMALL_BATCH_GRID) <= set(bench.GPU_GRID)
    from rnn_xp.bench import suite

    monkeypatch.setattr(suite, "SMALL_BATCH_GRID", [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)])
    result = bench.run(quick=True, small_batch=True, out_dir=str(tmp_path), backends=["numpy", "jax", "torch"],
                       gemm_n=64, stream=io.StringIO(), settle_s=0.0)  # fmt: skip
    assert [(r["B"], r["T"], r["D"], r["H"]) for r in result["grid"]] == [(1, 3, 4, 4), (2, 3, 4, 4)]
    names = set(result["grid"][0]["results"])
    assert bench.BASELINE in names and bench.FAST in names
    assert not any("jax" in n or "rnn_xp torch" in n for n in names)
    assert "memory" not in result
    (path,) = tmp_path.glob("*-cpu-small-batch-quick.json")
    assert path.name.endswith(f"-{bench.cpu_tag(result['machine']['cpu_model'])}-cpu-small-batch-quick.json")
    assert json.loads(path.read_text())["grid"] == json.loads(json.dumps(result["grid"]))


@pytest.mark.parametrize("model, tag", [
    ("Intel(R) Xeon(R) Processor", "xeon"), ("Intel(R) Xeon(R) Platinum 8488C", "xeon"),
    ("AMD EPYC", "epyc"), ("AMD EPYC 9B45 128-Core Processor", "epyc"), ("AMD Ryzen 9 7950X", "ryzen"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "core"), ("", "cpu"), ("12345", "cpu"),
])  # fmt: skip
def test_results_files_are_named_by_cpu(model, tag):
    from rnn_xp import bench

    assert bench.cpu_tag(model) == tag


def test_results_file_prints_as_markdown_tables():
    """benchmarks/results_markdown.py: one table row per contender and size, memory rows."""
    import json
    import pathlib
    import runpy

    root = pathlib.Path(__file__).resolve().parents[2]
    markdown = runpy.run_path(str(root / "benchmarks" / "results_markdown.py"))["markdown"]
    result = json.loads((root / "benchmarks" / "results" / "vm-xeon-cpu.json").read_text())
    text = markdown(result)
    rows = [line for line in text.splitlines() if line.startswith("| ") and " ms " not in line]
    contenders = sum(len(rec["results"]) for rec in result["grid"])
    assert len(rows) == contenders + 6 + 1  # + memory rows + the memory header
    big = next(r for r in result["grid"] if r["H"] == 1024)["results"]["torch.nn.RNN"]
    assert f"| (64, 50, 512, 1024) | torch.nn.RNN | {big['seconds'] * 1e3:.3f} |" in text


def _fake_gpu_result(persistent_ran=True):
    """A GPU results dict as ``bench --gpu`` writes it, with made-up times (for the printing code)."""
    from rnn_xp import bench

    grid = []
    for i, (B, T, D, H) in enumerate([bench.GPU_GRID[0], bench.GPU_GRID[1], bench.SMALL_BATCH_GRID[0]]):
        base = 1e-3 * (i + 1)
        results = {"torch.nn.RNN (cuDNN)": {"seconds": base, "ratio_to_baseline": 1.0},
                   "rnn_xp cupy (fused)": {"seconds": 1.2 * base, "ratio_to_baseline": 1.2},
                   "rnn_xp cupy (auto)": {"seconds": (0.9 + 0.2 * i) * base, "ratio_to_baseline": 0.9 + 0.2 * i}}
        if B <= 8:
            results["rnn_xp cupy (persistent)"] = {"seconds": base, "ratio_to_baseline": 1.0,
                                                   "persistent_kernel_ran": persistent_ran}
        for r in results.values():
            r.update(gflops=1.0, agrees=True)
        grid.append({"B": B, "T": T, "D": D, "H": H, "gemm_gflops": 10.0, "results": results})
    return {"machine": {"cpu_model": "test", "gpu_name": "Test GPU"}, "gemm": {"n": 8, "gflops": {"numpy": 1.0}},
            "grid": grid}


@pytest.mark.parametrize("persistent_ran", [True, False])
def test_gpu_tables_report_the_targets_and_a_fallback(persistent_ran):
    import io

    from rnn_xp import bench

    text = io.StringIO()
    bench.print_tables(_fake_gpu_result(persistent_ran), text)
    out = text.getvalue()
    # DeepBench rows have ratios 0.9 and 1.1, the small-batch row 1.3
    assert "on the DeepBench grid (2 of 12 sizes): 1.10 (target <= 1.0)" in out
    assert "on the small-batch grid (1 of 9 sizes): 1.30 (target <= 0.5)" in out
    assert ("WARNING" in out and "the persistent kernel did not run" in out) == (not persistent_ran)


def test_bench_saves_each_size_as_it_goes(tmp_path, monkeypatch):
    """A run cut short keeps the sizes it finished, in a separate partial file rewritten after each one;
    the results file itself is written once, complete, and the partial file is then removed."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    import io
    import json

    from rnn_xp import bench

    from rnn_xp.bench import suite

    seen = []
    real = suite.bench_grid

    def spy(*args, on_record, **kw):
        def record(records):
            on_record(records)
            (path,) = tmp_path.glob("*-cpu-quick.partial.json")
            saved = json.loads(path.read_text())
            seen.append((len(saved["grid"]), saved["complete"], len(list(tmp_path.glob("*-cpu-quick.json")))))

        return real(*args, on_record=record, **kw)

    monkeypatch.setattr(suite, "bench_grid", spy)
    bench.run(quick=True, out_dir=str(tmp_path), backends=["numpy", "torch"], memory=False, stream=io.StringIO(),
              gemm_n=64, grid=[(1, 3, 4, 4), (2, 3, 4, 4)], settle_s=0.0)  # fmt: skip
    assert seen == [(1, False, 0), (2, False, 0)]
    (path,) = tmp_path.glob("*-cpu-quick.json")
    assert json.loads(path.read_text())["complete"] is True
    assert not list(tmp_path.glob("*.partial.json")) and not list(tmp_path.glob("*.tmp*"))


def test_the_header_names_the_gemm_rates_the_percentages_are_of(tmp_path):
    """The GEMM rates printed before the table and the libraries '% GEMM' compares with are the same
    (JAX's was in the rounds but not in the header: issue 25, #21)."""
    if optional_import("torch") is None or optional_import("jax") is None:
        pytest.skip("torch and jax are needed")
    import io
    import re

    from rnn_xp import bench

    out = io.StringIO()
    result = bench.run(quick=True, out_dir=str(tmp_path), backends=["numpy", "jax", "torch"], memory=False,
                       gemm_n=64, stream=out, grid=[(1, 3, 4, 4)], settle_s=0.0)  # fmt: skip
    text = out.getvalue()
    header = re.search(r"^float32 GEMM rate \(\d+\^3\): (.*)$", text, re.M).group(1)
    in_header = {part.split()[0] for part in header.split(", ")}
    in_rounds = set(re.search(r"measured in the same rounds \(([^;]*);", text).group(1).split(", "))
    assert in_header == in_rounds == set(result["grid"][0]["gemm_gflops_by_blas"]) == set(result["gemm"]["gflops"])
    assert "jax" in in_header


def test_a_new_cell_is_a_table_entry(tmp_path):
    """Another cell (here a made-up one: two NumPy rows) runs through the same suite, tables and files,
    without a line of timing code of its own: what an LSTM or GRU contender set will be."""
    import io
    import json

    import numpy as np

    from rnn_xp import bench

    def problem(B, T, D, H, seed=0):
        x = np.random.default_rng(seed).standard_normal((T, B, D), dtype=np.float32)
        return bench.Problem(x, np.zeros((B, H), np.float32), np.ones((4 * H, D), np.float32) / D,
                             np.zeros((4 * H, H), np.float32), np.zeros(4 * H, np.float32))  # fmt: skip

    def loop(p):  # a stand-in cell: the state is the running mean of the input's first feature
        return np.cumsum(p.x[..., :1], axis=0) / np.arange(1, p.x.shape[0] + 1)[:, None, None]

    rows = (bench.Contender("reference loop", lambda p: bench.Run(lambda: loop(p), bench.no_sync, np.asarray)),
            bench.Contender("other loop", lambda p: bench.Run(lambda: loop(p) + 0.0, bench.no_sync, np.asarray)))
    cell = bench.ContenderSet("toy", problem, lambda B, T, D, H: 8.0 * T * B * H * (D + H), cpu=rows, gpu=rows)
    out = io.StringIO()
    result = bench.run(quick=True, out_dir=str(tmp_path), backends=["numpy"], stream=out, grid=[(2, 5, 3, 4)],
                       settle_s=0.0, gemm_n=64, cell=cell)  # fmt: skip
    (path,) = tmp_path.glob("*-cpu-toy-quick.json")
    assert json.loads(path.read_text())["complete"] is True and "memory" not in result
    (rec,) = result["grid"]
    assert list(rec["results"]) == ["reference loop", "other loop"] and rec["baseline"] == "reference loop"
    assert rec["results"]["other loop"]["agrees"] and rec["gflop"] == 8.0 * 5 * 2 * 4 * (3 + 4) / 1e9
    assert "other loop" in out.getvalue()
