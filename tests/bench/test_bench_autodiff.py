"""benchmarks/bench_autodiff.py's tables: ratios to each library's own RNN, none against a baseline too small to measure."""

from __future__ import annotations

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _module():
    return runpy.run_path(str(ROOT / "benchmarks" / "bench_autodiff.py"), run_name="bench_autodiff")


def _memory(mod, base_bytes, ours_bytes):
    names = {mod["TORCH_BASE"]: base_bytes, mod["TORCH_OURS"]: ours_bytes}
    return {"B": 2, "T": 1000, "D": 3, "H": 4, "results": {
        n: {"peak_rise_bytes": b, "ratio_to_baseline": b / max(base_bytes, 1)} for n, b in names.items()}}


def test_markdown_gives_no_memory_ratio_against_an_unmeasurable_baseline():
    mod = _module()
    result = {"machine": {"cpu_model": "test", "logical_cpus": 2, "threads": 2, "versions": {}},
              "rounds": 5, "memory_T": 1000,
              "time": [{"B": 2, "T": 5, "D": 3, "H": 4, "results": {
                  mod["TORCH_BASE"]: {"seconds": 4e-3, "ratio_to_baseline": 1.0},
                  mod["TORCH_OURS"]: {"seconds": 1e-3, "ratio_to_baseline": 0.25}}}],
              "memory": [_memory(mod, 0, 700_000), _memory(mod, 20_000_000, 5_000_000)]}  # fmt: skip
    lines = mod["markdown"](result).splitlines()
    ours = [line for line in lines if line.startswith("|") and mod["TORCH_OURS"] in line]
    assert ours[0].endswith("| 1.000 | 0.25 |")  # time: 1 ms, a quarter of torch's
    assert ours[1].endswith("| 0.7 | - |")  # the baseline rose by 0 bytes: no ratio
    assert ours[2].endswith("| 5.0 | 0.25 |")
    assert any(line.startswith("-: no ratio") for line in lines)
