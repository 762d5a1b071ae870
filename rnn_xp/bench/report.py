"""The in-process benchmark's results: the tables it prints, its chart, its JSON file, its Markdown.

A results dict (``rnn_xp.bench.run`` returns and saves it) holds
``machine`` (``machine_info``), ``gemm`` (the rate measured before the grid)
and ``grid``: one record per size ``(B, T, D, H)`` with each contender's
median seconds, ratio to the baseline, GFLOP/s and agreement, and the GEMM
rates measured in the same rounds.

>>> from rnn_xp.bench.report import write_json
>>> import json, os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "r.json")
>>> write_json(path, {"grid": []})
>>> json.load(open(path))
{'grid': []}
"""

from __future__ import annotations

import json
import os
import sys

from .cells import BASELINE, FAST, GPU_TARGETS, PERSISTENT_ROWS

__all__ = ["chart", "contender_names", "markdown", "print_tables", "table", "write_json", "write_rows"]


def write_json(path, obj):
    """Write ``obj`` to ``path`` through a temporary file and a rename: never a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def table(head, cells):
    """A Markdown table: the ``head`` names, then one line per list of ``cells`` (strings).

    >>> print(table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def write_rows(path, unit, rows, **extra):
    """A benchmark script's results: ``{"unit", "meta", **extra, "rows"}``, ``meta`` this machine's
    ``machine_info`` (NumPy's BLAS among its thread pools) and its architecture."""
    import platform

    from .machine import machine_info

    meta = machine_info(os.cpu_count())
    meta["arch"] = platform.machine()
    write_json(path, {"unit": unit, "meta": meta, **extra, "rows": rows})


def contender_names(grid):
    """The contenders of every size, in order of first appearance (the baseline first)."""
    names = []
    for rec in grid:
        names.extend(n for n in rec["results"] if n not in names)
    return names


def print_tables(result, stream=None):
    """The ratio table (time / baseline; below 1 is faster) and GFLOP/s beside the GEMM rate."""
    stream = sys.stdout if stream is None else stream
    gemm = result["gemm"]["gflops"]
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    mkl = result["machine"].get("mkl")
    if mkl:
        p(f"\noneMKL: {mkl['status']}" + (f" ({mkl['version']})" if mkl.get("version") else ""))
    p(f"\nfloat32 GEMM rate ({result['gemm']['n']}^3): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gemm.items()))
    names = contender_names(result["grid"])  # of every size: a row may exist at some sizes only
    with_baseline = any(r.get("ratio_to_baseline") is not None
                        for rec in result["grid"] for r in rec["results"].values())  # fmt: skip
    if result["grid"] and not with_baseline:
        ref = result["grid"][0].get("agreement_reference", names[0])
        p(f"\nno baseline: torch is not installed, so {BASELINE} was not timed and there is no ratio "
          f"column; 'agrees' compares with {ref} (pip install torch for the baseline)")  # fmt: skip
    libs = sorted({k for rec in result["grid"] for k in rec.get("gemm_gflops_by_blas", {})})
    ns = sorted({rec["gemm_n"] for rec in result["grid"] if "gemm_n" in rec})
    size = " or ".join(f"{n}^3" for n in ns) if ns else "1024^3 on the CPU, 4096^3 on a GPU"  # older files: no n
    p(f"(% GEMM: of the fastest float32 GEMM measured in the same rounds ({', '.join(libs) or 'NumPy'}; "
      f"{size}); 'agrees': max |diff| <= 1e-3 against the first row of each size)")
    ratio_head = f"{'ratio':>8}" if with_baseline else ""
    p(f"\n{'(B, T, D, H)':<22}{'contender':<28}{'ms':>10}{ratio_head}{'GFLOP/s':>9}{'% GEMM':>8}  agrees")
    above = []
    for rec in result["grid"]:
        size = f"({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']})"
        for name in names:
            r = rec["results"].get(name)
            if r is None:
                continue
            pct = 100 * r["gflops"] / rec["gemm_gflops"]
            mark = "*" if pct > 100 else " "
            if pct > 100:
                above.append(name)
            ratio = f"{r['ratio_to_baseline']:>8.2f}" if with_baseline else ""
            p(f"{size:<22}{name:<28}{r['seconds'] * 1e3:>10.3f}{ratio}"
              f"{r['gflops']:>9.1f}{pct:>7.0f}%{mark} {'yes' if r['agrees'] else 'NO'}")  # fmt: skip
            size = ""
    later = sorted({row for rec in result["grid"] for lp in rec.get("later_passes", []) for row in lp["rows"]})
    if later:
        p(f"({', '.join(later)}: timed after every other row, in a pass of their own beside the baseline, "
          "which was timed again there; their ratio is to that time)")
    if above:
        p("* above 100% of the GEMM rate: this contender's products ran faster than the reference GEMM "
          "did in the same rounds: its library has its own thread pool or kernels (XLA's is not limited "
          "by --threads), or a shared machine slowed the GEMM's turn; not a faster-than-peak recurrence")
    if FAST in names and with_baseline:
        worst = max(rec["results"][FAST]["ratio_to_baseline"] for rec in result["grid"] if FAST in rec["results"])
        p(f"\nworst ratio {FAST} / {BASELINE}: {worst:.2f}")
    if FAST in names:
        big = [r for r in result["grid"] if (r["B"], r["T"], r["D"], r["H"]) == (64, 50, 512, 1024)]
        if big:
            r = big[0]
            p(f"{FAST} on (64, 50, 512, 1024): {r['results'][FAST]['gflops']:.1f} GFLOP/s = "
              f"{100 * r['results'][FAST]['gflops'] / r['gemm_gflops']:.0f}% of the GEMM rate "
              f"({r['gemm_gflops']:.1f} GFLOP/s)")
    auto = PERSISTENT_ROWS[1]  # what rnn_forward does with CuPy arrays
    if auto in names:
        for label, (sizes, target) in GPU_TARGETS.items():
            ratios = [rec["results"][auto]["ratio_to_baseline"] for rec in result["grid"]
                      if (rec["B"], rec["T"], rec["D"], rec["H"]) in sizes and auto in rec["results"]]  # fmt: skip
            if ratios and with_baseline:
                p(f"worst ratio {auto} / {names[0]} on the {label} grid ({len(ratios)} of {len(sizes)} sizes): "
                  f"{max(ratios):.2f} (target <= {target})")  # fmt: skip
    for rec in result["grid"]:
        for name, r in rec["results"].items():
            if r.get("persistent_kernel_ran") is False:
                p(f"WARNING: at (B, T, D, H) = ({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']}) the row "
                  f"'{name}' timed the fused path: the persistent kernel did not run (self-check or launch failed)")
    mem = result.get("memory")
    if mem:
        ls = mem["last_state"]
        p(f"\nreturn_sequences=False peak memory (B={mem['B']}, H={mem['H']}): "
          f"T={ls['T'][0]}: {ls['peak_bytes'][0] / 1e6:.3f} MB, T={ls['T'][1]}: {ls['peak_bytes'][1] / 1e6:.3f} MB "
          f"(ratio {ls['ratio_large_to_small']:.2f}; one (T, B, H) buffer would be "
          f"{ls['one_TBH_buffer_bytes_at_large_T'] / 1e6:.0f} MB)")  # fmt: skip
        ff = mem["full_forward"]
        p(f"full forward T={ff['T']}: output {ff['output_bytes'] / 1e6:.2f} MB; peak extra beyond it: "
          f"in-place {ff['in_place_extra_bytes'] / 1e3:.1f} kB (B*H = {ff['B_H_bytes'] / 1e3:.1f} kB), "
          f"portable {ff['portable_extra_bytes'] / 1e6:.2f} MB")  # fmt: skip


def chart(result, path, *, title=None):
    """A bar chart of the ratio to the baseline, one group per size (log scale).

    A contender without a row at some size (the persistent CuPy kernel where
    its plan does not fit), or without a time there (left out, failed), leaves
    a gap there. ``title`` says what was timed (default ``"rnn_xp forward"``);
    the machine and the dtype follow it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = result["grid"]
    if not grid:
        return
    bases = {rec.get("baseline") for rec in grid} - {None}  # each size's baseline: 1.0 by definition
    names = [n for n in contender_names(grid) if n not in bases and not n.startswith(BASELINE)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        at = [k for k, rec in enumerate(grid) if rec["results"].get(name, {}).get("ratio_to_baseline") is not None]
        vals = [grid[k]["results"][name]["ratio_to_baseline"] for k in at]
        ax.bar([k + i * width for k in at], vals, width, label=name)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_yscale("log")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(grid))])
    ax.set_xticklabels([f"B={r['B']} T={r['T']}\nD={r['D']} H={r['H']}" for r in grid], fontsize=8)
    ax.set_ylabel(f"time / {next(iter(grid[0]['results']))} (lower is faster)")
    machine = result["machine"].get("gpu_name") or result["machine"]["cpu_model"]
    ax.set_title(f"{title or 'rnn_xp forward'}, float32, {machine}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result):
    """The in-process results as Markdown (the docs' performance pages): the machine, one row per
    contender and size, and the memory section."""
    m = result["machine"]
    v = m["versions"]
    blas = sorted({p["internal_api"] + " " + str(p["version"])
                   + (f" ({p['architecture']})" if p.get("architecture") else "")
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
