"""``bench --gpu`` on the CPU: its report code on synthetic GPU results, TF32 off, no GPU at all.

- The tables and the chart take a grid where a contender has a row at some
  sizes only (the persistent kernel's plan fits at B = 16, H = 1760 on an
  H200, not at B = 32) and a persistent row that fell back to the fused
  path: a missing row is a gap, never a ``KeyError``; a chart that fails
  anyway never fails the run nor loses its results.
- ``tf32_off`` turns torch's TF32 off for cuDNN's RNNs and CUDA products and
  restores the flags exactly.
- Without a GPU, ``bench --gpu`` says why in one line and exits with 2.
- ``benchmarks/gpu_check.sh`` runs what it names: its test files exist, its
  phase without the persistent kernel forces the fused path.
"""

from __future__ import annotations

import io
import json
import pathlib
import re
import sys

import pytest
from support import optional_import

from rnn_xp.cli import bench

ROOT = pathlib.Path(__file__).resolve().parents[1]

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

    monkeypatch.setattr(bench, "chart", broken)
    monkeypatch.setattr(bench, "CPU_GRID", [(1, 3, 4, 4)])
    monkeypatch.setattr(bench, "SETTLE_S", 0.0)
    out = io.StringIO()
    result = bench.run(quick=True, out_dir=str(tmp_path), backends=["numpy", "torch"], memory=False, stream=out)
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


def _phases(text):
    """``{log file: command}`` of each ``phase`` line of the script (continuations joined)."""
    joined = text.replace("\\\n", " ")
    return {m.group(2): m.group(0) for m in re.finditer(r"^\s*(\w+=\S+\s+)*phase \d+ (\S+) (.*)$", joined, re.M)}


def test_gpu_check_names_test_files_that_exist():
    text = _script().replace("\\\n", " ")
    paths = set(re.findall(r"tests/[\w/]+\.py", text))
    assert paths, "the script names no test file"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"gpu_check.sh names test files that do not exist: {missing}"


def test_gpu_check_keeps_the_persistent_kernel_out_of_phase_2():
    """Phase 2 must not reach the grid barrier: the fused path is forced there (issue 14, #5)."""
    phases = _phases(_script())
    safe = phases["gpu-tests.log"]
    assert "RNN_XP_CUPY_PATH=fused" in safe
    assert "--ignore=tests/kernels/test_kernel_cupy_persistent.py" in safe
    assert "RNN_XP_REQUIRE_GPU=1" in _script()  # a skip for "no CUDA device" fails there
    assert "tests/kernels/test_kernel_cupy_persistent.py" in phases["gpu-tests-persistent.log"]


def test_a_required_gpu_that_is_missing_fails_instead_of_skipping(monkeypatch):
    """``RNN_XP_REQUIRE_GPU=1``: "no CUDA device" is a failure, with the reason (issue 15, #13)."""
    from conftest import make_backend

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
