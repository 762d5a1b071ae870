"""Print the tables of a results file as Markdown, for docs/performance.md.

    python benchmarks/results_markdown.py benchmarks/results/vm-epyc-cpu.json
"""

from __future__ import annotations

import json
import sys


def markdown(result):
    m = result["machine"]
    v = m["versions"]
    blas = sorted({p["internal_api"] + " " + str(p["version"]) + (f" ({p['architecture']})" if p.get("architecture") else "")
                   for p in m.get("threadpools") or [] if p["internal_api"] in ("openblas", "mkl")})  # fmt: skip
    mkl = m.get("mkl", {})
    gemm = ", ".join(f"{k} {g:.0f}" for k, g in result["gemm"]["gflops"].items())
    lines = [
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['threads']} threads; "
        f"NumPy {v.get('numpy')}, torch {v.get('torch')}, JAX {v.get('jax')}; BLAS: {', '.join(blas)}; "
        f"oneMKL {mkl.get('status', 'not recorded')}. Load average {m['load_average_at_start'][0]:.2f} "
        f"at the start and {m['load_average_at_end'][0]:.2f} at the end. float32 "
        f"{result['gemm']['n']}^3 GEMM, GFLOP/s: {gemm}.",
        "",
        "| (B, T, D, H) | contender | ms | ratio | GFLOP/s | % GEMM |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for rec in result["grid"]:
        size = f"({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']})"
        for name, r in rec["results"].items():
            pct = 100 * r["gflops"] / rec["gemm_gflops"]
            ratio = "-" if r.get("ratio_to_baseline") is None else f"{r['ratio_to_baseline']:.2f}"  # no torch
            lines.append(f"| {size} | {name} | {r['seconds'] * 1e3:.3f} | {ratio} | "
                         f"{r['gflops']:.1f} | {pct:.0f}% |")  # fmt: skip
            size = ""
    mem = result.get("memory")
    if mem:
        ls, ff = mem["last_state"], mem["full_forward"]
        lines += [
            "",
            f"Memory (NumPy, float32, `B` = {mem['B']}, `H` = {mem['H']}):",
            "",
            "| measurement | value |",
            "|---|---:|",
            f"| `return_sequences=False`, peak at T = {ls['T'][0]:,} | {ls['peak_bytes'][0] / 1e6:.3f} MB |",
            f"| `return_sequences=False`, peak at T = {ls['T'][1]:,} | {ls['peak_bytes'][1] / 1e6:.3f} MB |",
            f"| one `(T, B, H)` buffer at T = {ls['T'][1]:,} (for scale) | "
            f"{ls['one_TBH_buffer_bytes_at_large_T'] / 1e6:.0f} MB |",
            f"| full forward T = {ff['T']}: output | {ff['output_bytes'] / 1e6:.2f} MB |",
            f"| full forward: peak beyond the output, in-place loop | {ff['in_place_extra_bytes'] / 1e3:.1f} kB |",
            f"| full forward: peak beyond the output, portable loop | {ff['portable_extra_bytes'] / 1e6:.2f} MB |",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/results_markdown.py RESULTS.json")
    with open(sys.argv[1]) as fh:
        print(markdown(json.load(fh)))
