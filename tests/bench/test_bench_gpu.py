"""``bench --gpu`` on the CPU: its report code on synthetic GPU results, TF32 off, no GPU at all.

- The tables and the chart take a grid where a contender has a row at some
  sizes only (the persistent kernel's plan fits at B = 16, H = 1760 on an
  H200, not at B = 32) and a persistent row that fell back to the fused
  path: a missing row is a gap, never a ``KeyError``; a chart that fails
  anyway never fails the run nor loses its results.
- ``tf32_off`` turns torch's TF32 off for cuDNN's RNNs and CUDA products and
  restores the flags exactly.
- Without a GPU, ``bench --gpu`` says why in one line and exits with 2.
- The GPU grid times the rows that may run the persistent kernel last, in a
  pass of their own: a hang there keeps every other row.
- ``benchmarks/gpu_check.sh`` (read through its dry run) runs what it names:
  its test files exist, its phase without the persistent kernel forces the
  fused path, pytest names each test (``-vv``) and stops a hung one
  (pytest-timeout, carried by ``gpu_wheels.sh``), the phases fit the budget.
"""

from __future__ import annotations

import io
import json
import pathlib
import re
import sys

import pytest
from support import optional_import

from rnn_xp import bench
from rnn_xp.bench import suite

ROOT = pathlib.Path(__file__).resolve().parents[2]

BASE = "torch.nn.RNN (cuDNN)"
PERSISTENT = "rnn_xp cupy (persistent)"


def _synthetic(fell_back=False):
    """A GPU results dict as ``bench --gpu`` writes it, times made up; the persistent row
    exists at (16, 50, 1760) and the small batches, not at (32, 50, 1760)."""
    sizes = [(16, 50, 1760, 1760), (32, 50, 1760, 1760), (1, 200, 256, 256), (8, 200, 1024, 1024)]
    grid = []
    for i, (B, T, D, H) in enumerate(sizes):
        base = 1e-3 * (i + 1)
        results = {BASE: 1.0, "rnn_xp torch cuda": 1.5, "rnn_xp cupy (fused)": 1.2}
        if B != 32:
            results[PERSISTENT] = 0.4
        results["rnn_xp cupy (auto)"] = 0.4 if B <= 8 else 1.2
        rec = {"B": B, "T": T, "D": D, "H": H, "gflop": 1.0, "gemm_gflops": 10.0, "results": {}}
        for name, ratio in results.items():
            rec["results"][name] = {"seconds": ratio * base, "ratio_to_baseline": ratio, "gflops": 1.0,
                                    "agrees": True, "max_abs_diff_vs_baseline": 1e-6}  # fmt: skip
        if PERSISTENT in rec["results"]:
            rec["results"][PERSISTENT]["persistent_kernel_ran"] = not (fell_back and B == 8)
        grid.append(rec)
    machine = {"cpu_model": "test CPU", "gpu_name": "Test GPU", "tf32": {"cudnn.rnn.fp32_precision": "ieee"}}
    return {"machine": machine, "gemm": {"n": 8, "gflops": {"numpy": 1.0}}, "grid": grid}


def test_tables_show_rows_missing_at_some_sizes():
    out = io.StringIO()
    bench.print_tables(_synthetic(), out)
    text = out.getvalue()
    rows = [line for line in text.splitlines() if PERSISTENT in line]
    assert len(rows) == 3  # every size but (32, 50, 1760, 1760)
    assert "(32, 50, 1760, 1760)" in text  # the size itself is still reported
    assert "DeepBench grid (2 of 12 sizes): 1.20" in text and "small-batch grid (2 of 9 sizes): 0.40" in text


def test_tables_warn_about_a_persistent_row_that_fell_back():
    out = io.StringIO()
    bench.print_tables(_synthetic(fell_back=True), out)
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "(8, 200, 1024, 1024)" in warnings[0] and "did not run" in warnings[0]


def test_chart_leaves_a_gap_for_a_missing_row(tmp_path):
    if optional_import("matplotlib") is None:
        pytest.skip("matplotlib not installed")
    result = _synthetic()
    # the first size lacks a row the later ones have: the legend comes from every size
    del result["grid"][0]["results"]["rnn_xp cupy (fused)"]
    bench.chart(result, tmp_path / "gpu.png")
    assert (tmp_path / "gpu.png").stat().st_size > 0
    assert bench.contender_names(result["grid"]) == [BASE, "rnn_xp torch cuda", PERSISTENT,
                                                     "rnn_xp cupy (auto)", "rnn_xp cupy (fused)"]  # fmt: skip


def test_a_chart_that_fails_never_fails_the_run(tmp_path, monkeypatch):
    """The results are saved first; a chart error is a note, not an exit status."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")

    def broken(result, path):
        raise KeyError("rnn_xp cupy (persistent)")

    monkeypatch.setattr(suite, "chart", broken)
    out = io.StringIO()
    result = bench.run(quick=True, out_dir=str(tmp_path), backends=["numpy", "torch"], memory=False, stream=out,
                       gemm_n=64, grid=[(1, 3, 4, 4)], settle_s=0.0)  # fmt: skip
    (path,) = tmp_path.glob("*.json")
    assert json.loads(path.read_text())["complete"] is True
    assert len(result["grid"]) == 1
    assert "no chart: KeyError" in out.getvalue()


def test_tf32_off_and_restored_exactly():
    torch = optional_import("torch")
    if torch is None:
        pytest.skip("torch not installed")
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    new_api = hasattr(cudnn, "rnn") and hasattr(matmul, "fp32_precision")

    def flags():
        if new_api:
            return cudnn.rnn.fp32_precision, matmul.fp32_precision
        return cudnn.allow_tf32, matmul.allow_tf32

    before = flags()
    with pytest.raises(RuntimeError, match="inside"), bench.tf32_off() as setting:
        assert flags() == (("ieee", "ieee") if new_api else (False, False))
        assert "CUPY_TF32" in setting and (setting.get("cudnn.rnn.fp32_precision") == "ieee"
                                           or setting.get("cudnn.allow_tf32") is False)  # fmt: skip
        raise RuntimeError("inside")
    assert flags() == before


def test_bench_gpu_without_a_gpu_is_one_line_and_exit_2(capsys, monkeypatch):
    from rnn_xp import cli

    if bench.gpu_problem() is None:
        pytest.skip("this machine has a GPU")
    assert cli.main(["bench", "--gpu", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("python -m rnn_xp bench: error: --gpu needs a CUDA device: ")
    monkeypatch.setitem(sys.modules, "cupy", None)  # not installed at all
    assert cli.main(["bench", "--gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cupy is not installed" in err


def test_gpu_problem_names_the_missing_baseline(monkeypatch):
    torch = optional_import("torch")
    if torch is None:
        pytest.skip("torch not installed")
    from rnn_xp import _backends

    monkeypatch.setattr(_backends, "load", lambda name: (None, None))  # CuPy with a device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "torch finds no CUDA device" in bench.gpu_problem()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.gpu_problem() is None


# --- benchmarks/gpu_check.sh ---------------------------------------------------------------


def _script():
    return (ROOT / "benchmarks" / "gpu_check.sh").read_text()


def _dry_run(tmp_path, **env):
    """``DRY_RUN=1 bash gpu_check.sh``: ``[(command, limit in s)]`` of its phases, and everything it printed."""
    import os
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path),
                                            "DRY_RUN": "1", **env})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    phases = [(m.group(1), int(m.group(2))) for m in re.finditer(r"^=== (.*) \(limit (\d+)s\)$", proc.stdout, re.M)]
    return phases, proc.stdout


def _fake_pytest_timeout(folder):
    """A distribution that registers the plugin ``pytest_timeout`` as pytest's entry points do (not importable)."""
    info = folder / "pytest_timeout-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pytest-timeout\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[pytest11]\ntimeout = pytest_timeout\n")
    return str(folder)


def test_gpu_check_names_test_files_that_exist():
    names = set(re.findall(r"test_file (\w+\.py)", _script()))
    assert len(names) >= 6, "the script names too few test files"
    for name in sorted(names):
        found = list((ROOT / "tests").rglob(name))
        assert len(found) == 1, f"gpu_check.sh names {name}: found {found} under tests/"


def test_gpu_check_keeps_the_persistent_kernel_out_of_phase_2(tmp_path):
    """Phase 2 must not reach the grid barrier: the fused path is forced there (issue 14, #5)."""
    (safe, _), (persistent, _), (bench_run, _) = _dry_run(tmp_path)[0]
    persistent_file = next((ROOT / "tests").rglob("test_kernel_cupy_persistent.py")).relative_to(ROOT)
    assert "RNN_XP_CUPY_PATH=fused" in safe and f"--ignore={persistent_file}" in safe
    assert "RNN_XP_REQUIRE_GPU=1" in _script()  # a skip for "no CUDA device" fails there
    assert "RNN_XP_CUPY_PATH=persistent" in persistent and str(persistent_file) in persistent
    assert bench_run.endswith(f"-m rnn_xp bench --gpu --out {tmp_path}")  # the benchmark last


def test_gpu_check_names_each_test_and_stops_a_hung_one(tmp_path):
    """-vv puts each test's name in the log before it runs; with pytest-timeout installed a hung test is
    stopped by its thread method (stacks, the test's name), not by the phase's SIGKILL (issue 25, #18)."""
    phases, out = _dry_run(tmp_path, PYTHONPATH="")
    tests = [command for command, _ in phases if " -m pytest " in command]
    assert len(tests) == 2 and all(" -vv " in command for command in tests)
    if "pytest-timeout is not installed" in out:
        assert not any("--timeout" in command for command in tests)
    phases, out = _dry_run(tmp_path, PYTHONPATH=_fake_pytest_timeout(tmp_path / "site"))
    assert "pytest-timeout is not installed" not in out
    assert all("--timeout=90 --timeout-method=thread" in command for command, _ in phases if " -m pytest " in command)
    wheels = (ROOT / "benchmarks" / "gpu_wheels.sh").read_text()
    assert re.search(r"^WHEELS=\(.*\bpytest-timeout\b.*\)$", wheels, re.M)  # carried to a GPU machine without network


def test_gpu_check_fits_in_its_budget(tmp_path):
    """The phases fit in 9 minutes with 40 s for the wheels and the machine check (the device lends 10 minutes
    per command and 15 in all); no phase runs past the budget, so the whole check ends by 540 s plus the
    last phase's 20 s of grace between SIGINT and SIGKILL; a smaller budget shrinks the phases."""
    phases, _ = _dry_run(tmp_path)
    limits = [limit for _, limit in phases]
    assert limits[0] >= 200  # collecting the tests took 59 s cold on a GPU machine
    assert sum(limits) <= 540 - 40
    phases, _ = _dry_run(tmp_path, RNN_XP_GPU_CHECK_S="200")
    first, *rest = [limit for _, limit in phases]
    assert 170 <= first <= 180 and rest == [100, 170]  # capped by what is left (the dry run's seconds gone)


def test_a_required_gpu_that_is_missing_fails_instead_of_skipping(monkeypatch):
    """``RNN_XP_REQUIRE_GPU=1``: "no CUDA device" is a failure, with the reason (issue 15, #13)."""
    from support import make_backend

    if bench.gpu_problem() is None:
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("RNN_XP_REQUIRE_GPU", raising=False)
    for name in ("cupy", "torch_cuda"):
        with pytest.raises(pytest.skip.Exception, match="no CUDA device|not installed"):
            make_backend(name)
    monkeypatch.setenv("RNN_XP_REQUIRE_GPU", "1")
    for name in ("cupy", "torch_cuda"):
        with pytest.raises(pytest.fail.Exception, match="RNN_XP_REQUIRE_GPU is set, but"):
            make_backend(name)
    assert make_backend("numpy").name == "numpy"  # CPU backends are not affected


# --- the GPU grid's passes: the rows that may run the persistent kernel come last ------------------


def _fake_cell(calls, hang=None):
    """A cell whose rows are NumPy functions named like the GPU rows; ``hang`` raises Ctrl-C in that row."""
    import numpy as np

    from rnn_xp.bench import cells

    def row(name):
        def make(p):
            def fn():
                calls.append(name)
                if name == hang:
                    raise KeyboardInterrupt
                return p.x[..., :1] * 0.0

            return cells.Run(fn, bench.no_sync, np.asarray)

        return cells.Contender(name, make)

    rows = tuple(row(n) for n in (BASE, "rnn_xp cupy (fused)", *cells.PERSISTENT_ROWS))
    return cells.ContenderSet("fake", cells.problem, cells.rnn_flops, cpu=rows, gpu=rows)


def test_gpu_passes_time_the_persistent_rows_after_every_other_row():
    from rnn_xp.bench import cells

    assert suite.gpu_passes() == [[BASE, "rnn_xp torch cuda", "rnn_xp cupy (fused)"],
                                  [BASE, *cells.PERSISTENT_ROWS]]  # fmt: skip
    calls, saved = [], []
    cell = _fake_cell(calls)
    grid = [(1, 3, 2, 2), (2, 3, 2, 2)]
    records = suite.bench_passes(grid, suite.gpu_passes(cell), backends=[], rounds=2, budget_s=1e-4, settle_s=0.0,
                                 cell=cell, gemm_n=8, on_record=lambda r: saved.append(len(r)))  # fmt: skip
    first_persistent = min(calls.index(n) for n in cells.PERSISTENT_ROWS)
    assert max(i for i, n in enumerate(calls) if n == "rnn_xp cupy (fused)") < first_persistent
    assert [list(r["results"]) for r in records] == [[BASE, "rnn_xp cupy (fused)", *cells.PERSISTENT_ROWS]] * 2
    assert all(r["later_passes"][0]["rows"] == list(cells.PERSISTENT_ROWS) for r in records)
    assert saved == [1, 2, 2, 2]  # after each size of each pass, every size so far
    out = io.StringIO()
    bench.print_tables({"machine": {"cpu_model": "test"}, "gemm": {"n": 8, "gflops": {"numpy": 1.0}},
                        "grid": records}, out)  # fmt: skip
    assert "timed after every other row, in a pass of their own" in out.getvalue()


def test_a_hang_in_the_persistent_rows_keeps_every_other_row():
    """Ctrl-C (or a phase's time limit) in the persistent kernel's first call: every size's other rows
    were saved already."""
    from rnn_xp.bench import cells

    calls, saved = [], []
    cell = _fake_cell(calls, hang=cells.PERSISTENT_ROWS[0])
    grid = [(1, 3, 2, 2), (2, 3, 2, 2)]
    with pytest.raises(KeyboardInterrupt):
        suite.bench_passes(grid, suite.gpu_passes(cell), backends=[], rounds=1, budget_s=1e-4, settle_s=0.0,
                           cell=cell, gemm_n=8,
                           on_record=lambda r: saved.append(json.loads(json.dumps(r))))  # fmt: skip
    assert len(saved[-1]) == len(grid)
    assert all("rnn_xp cupy (fused)" in rec["results"] for rec in saved[-1])
