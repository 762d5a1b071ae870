"""The in-process benchmark: every contender of a cell timed side by side, size by size.

For each size ``(B, T, D, H)`` of a grid, ``bench_grid`` takes the rows of
a ``ContenderSet`` (``rnn_xp.bench.cells``), checks every output
against the first row's (on the GPU, against float64) and times them.

Method: one warm-up call each, then ``rounds`` rounds; a round runs every
contender ``n`` times in a row, contenders in a shuffled order (interleaved,
so a slow spell of a shared machine hits all of them), each batch after
``SETTLE_S`` idle seconds and one untimed call; each time is per call, read
after the device has finished; the result is the median over rounds. The
float32 matrix-product rate of every library that multiplies on its own is
measured in the same rounds (the yardstick of "% GEMM").

``run`` is the whole suite behind ``python -m rnn_xp bench``: the machine's
facts, the grid, the memory section, the tables, the JSON file (written
once, complete) and the chart. Torch, JAX, Dask and CuPy are imported only
when their rows are run.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time

import numpy as np

from . import cells
from .cells import CPU_GRID, GPU_GRID, PERSISTENT_ROWS, RNN, SMALL_BATCH_GRID, persistent_launches
from .machine import cpu_tag, gemm_calls, gemm_rate, gpu_name, machine_info, slug, tf32_off, thread_settings
from .memory import memory_section
from .report import chart, print_tables, write_json
from .timing import SETTLE_S, Progress, calls_per_round, time_per_call

__all__ = ["REFERENCE_GPU", "Interrupted", "bench_grid", "bench_passes", "gpu_passes", "results_stem", "run"]

REFERENCE_GPU = "torch.nn.RNN in float64 on the GPU (no TF32 in float64)"
GEMM_N_CPU, GEMM_N_GPU = 1024, 4096  # the GEMM timed in the rounds
HEADER_GEMM_N, HEADER_GEMM_N_QUICK = 2048, 1024  # the GEMM rate measured before the grid


def bench_grid(grid, *, backends, rounds, budget_s, gpu=False, progress=None, settle_s=None, on_record=None,
               cell=RNN, gemm_n=None, names=None):  # fmt: skip
    """Time every contender of ``cell`` on every size of ``grid``; returns a list of per-size records.

    ``budget_s`` is about how long each contender's calls take over all
    rounds of a size; ``names``, if given, keeps only those rows.
    ``on_record(records)`` is called after each size (the caller saves what
    has been measured so far: a run cut short keeps its finished sizes).
    """
    settle_s = SETTLE_S if settle_s is None else settle_s
    gemm_n = (GEMM_N_GPU if gpu else GEMM_N_CPU) if gemm_n is None else gemm_n
    note = (lambda label: None) if progress is None else progress.note  # noqa: E731
    records = []
    for B, T, D, H in grid:
        size = f"(B,T,D,H)=({B},{T},{D},{H})"
        cands = cells.contenders(B, T, D, H, backends=backends, gpu=gpu, cell=cell, names=names)
        flops = cell.flops(B, T, D, H)
        first_name = next(iter(cands))
        # torch.nn.RNN is the baseline; without torch there is none, and no ratio
        base_name = first_name if first_name == (cell.gpu if gpu else cell.cpu)[0].name else None
        note(f"{size} warm-up: {first_name}")
        first = cands[first_name]
        ref = first.to_numpy(first.sync(first.fn()))  # also a warm-up
        if gpu:  # the baseline is a contender too: every row against float64
            ref = cell.reference_gpu(cell.problem(B, T, D, H))
        rec = {"B": B, "T": T, "D": D, "H": H, "gflop": flops / 1e9, "results": {},
               "baseline": base_name, "agreement_reference": first_name, "gemm_n": gemm_n}  # fmt: skip
        n = {}
        for name, (fn, sync, to_np) in cands.items():
            note(f"{size} warm-up: {name}")
            launches = persistent_launches()
            got = to_np(sync(fn()))  # warm-up (compiles JAX and CUDA kernels) and the agreement check
            err = float(np.max(np.abs(got - ref))) if got.size else 0.0
            rec["results"][name] = {"max_abs_diff_vs_baseline": err, "agrees": err <= 1e-3}
            if name.endswith("(persistent)"):  # did the kernel run, or did its self-check fall back?
                rec["results"][name]["persistent_kernel_ran"] = persistent_launches() > launches
            n[name] = calls_per_round(time_per_call(fn, sync, 1), budget_s, rounds)  # a warm call sets n
        times = {name: [] for name in cands}
        gemms = gemm_calls(gemm_n, gpu=gpu, backends=backends)  # in the same rounds (the load may drift)
        gemm = {name: [] for name in gemms}
        for i in range(rounds):
            order = list(cands) + list(gemms)
            random.shuffle(order)
            for name in order:
                note(f"{size} round {i + 1}/{rounds}: {name if name in cands else name + ' GEMM'}")
                time.sleep(settle_s)
                if name in gemms:
                    gemm_fn, gemm_sync = gemms[name]
                    gemm[name].append(2 * gemm_n**3 / time_per_call(gemm_fn, gemm_sync, 3) / 1e9)
                    continue
                fn, sync, _ = cands[name]
                times[name].append(time_per_call(fn, sync, n[name]))
            if progress is not None:
                progress.step(f"(B,T,D,H)=({B},{T},{D},{H})")
        base = None if base_name is None else float(np.median(times[base_name]))
        rec["gemm_gflops_by_blas"] = {k: float(np.median(v)) for k, v in gemm.items()}
        rec["gemm_gflops"] = max(rec["gemm_gflops_by_blas"].values())  # the fastest float32 n^3 GEMM
        for name, ts in times.items():
            med = float(np.median(ts))
            rec["results"][name].update(
                seconds=med, seconds_min=float(np.min(ts)), calls_per_round=n[name], rounds=rounds,
                gflops=flops / med / 1e9, ratio_to_baseline=None if base is None else med / base,
            )  # fmt: skip
        records.append(rec)
        if on_record is not None:
            on_record(records)
    return records


def gpu_passes(cell=RNN):
    """The GPU grid's passes: every row but those that may run the persistent kernel, then those rows
    beside the baseline. A hang in the persistent kernel's grid barrier then loses only its own rows."""
    baseline = cell.gpu[0].name
    return [[c.name for c in cell.gpu if c.name not in PERSISTENT_ROWS],
            [baseline, *(c.name for c in cell.gpu if c.name in PERSISTENT_ROWS)]]  # fmt: skip


def bench_passes(grid, passes, *, on_record=None, **kwargs):
    """``bench_grid`` over the whole grid once per pass (a list of row names, or None for all rows).

    The records of one size are merged: a later pass adds its rows, whose
    ratio is to the baseline timed in the same pass (its time and the GEMM
    rate of that pass are under ``later_passes``). ``on_record(records)`` is
    called after each size of each pass with every size measured so far.
    """
    merged = {}

    def absorb(records):
        rec = records[-1]
        key = (rec["B"], rec["T"], rec["D"], rec["H"])
        first = merged.setdefault(key, rec)
        if first is not rec:
            rows = {k: v for k, v in rec["results"].items() if k not in first["results"]}
            first["results"].update(rows)
            base = rec["results"].get(rec["baseline"], {}).get("seconds")
            first.setdefault("later_passes", []).append(
                {"rows": list(rows), "baseline": rec["baseline"], "baseline_seconds": base,
                 "gemm_gflops": rec["gemm_gflops"]})  # fmt: skip
        if on_record is not None:
            on_record(list(merged.values()))

    for names in passes:
        bench_grid(grid, names=names, on_record=absorb, **kwargs)
    return list(merged.values())


class Interrupted(Exception):
    """A run stopped by Ctrl-C: how far it got, and where the finished sizes are kept."""

    def __init__(self, done, total, partial, final, what="sizes"):
        super().__init__(done, total, partial, final)
        self.done, self.total, self.partial, self.final, self.what = done, total, partial, final, what

    def __str__(self):
        kept = f"kept in {self.partial}" if self.partial else "nothing to keep"
        return (f"interrupted after {self.done} of {self.total} {self.what} ({kept}); "
                f"{self.final} is unchanged")  # fmt: skip


def results_stem(machine, *, gpu=False, small_batch=False, quick=False, cell=RNN):
    """The results file's name without ``.json``: ``<host>-<cpu>-cpu`` or the GPU's name, then the variant
    (a cell other than the RNN adds its name: ``-lstm``)."""
    stem = slug(machine.get("gpu_name") if gpu else f"{machine['host']}-{cpu_tag(machine['cpu_model'])}-cpu")
    stem += "" if cell is RNN else f"-{slug(cell.name)}"
    return stem + ("-small-batch" if small_batch else "") + ("-quick" if quick else "")


def run(*, quick=False, gpu=False, threads=2, out_dir="rnn_xp_results", backends=None,
        memory=True, small_batch=False, stream=None, grid=None, settle_s=None, gemm_n=None, cell=RNN):  # fmt: skip
    """Run the suite, print the tables, write JSON and a PNG; return the result dict.

    ``small_batch`` (CPU only): the GPU grid's small batches instead, B in {1, 4, 8},
    H in {256, 512, 1024}, T = 200, NumPy against torch only, no memory section.
    ``grid`` replaces the sizes of the chosen grid; ``settle_s`` the idle time
    before each timed batch (``SETTLE_S``); ``gemm_n`` the size of every GEMM
    timed (``HEADER_GEMM_N`` before the grid, ``GEMM_N_CPU`` or ``GEMM_N_GPU``
    in its rounds); ``cell`` the ``ContenderSet`` to time (``rnn_xp.bench.cells.SETS``;
    with ``gpu=True`` one that has GPU rows, else ``ValueError``).

    The results file ``<stem>.json`` is written once, when the run is complete
    (through a temporary file and a rename). Meanwhile the finished sizes are
    saved after each one in ``<stem>.partial.json``, which a complete run
    removes: an interrupted run never replaces a complete results file. Ctrl-C
    raises ``Interrupted``, which says how far the run got. torch's and the
    BLAS thread counts are set to ``threads`` for the run and put back after.
    """
    from .. import _backends

    stream = sys.stdout if stream is None else stream
    if gpu and not cell.gpu:
        raise ValueError(f"gpu=True: the {cell.name!r} contender set has no GPU rows (it runs on the CPU only)")
    if backends is None:
        backends = _backends.available()
    os.makedirs(out_dir, exist_ok=True)  # before any measurement: a bad folder fails at once
    with thread_settings(threads):
        return _run(quick=quick, gpu=gpu, threads=threads, out_dir=out_dir, backends=backends, memory=memory,
                    small_batch=small_batch, stream=stream, grid=grid, settle_s=settle_s, gemm_n=gemm_n,
                    cell=cell)  # fmt: skip


def _run(*, quick, gpu, threads, out_dir, backends, memory, small_batch, stream, grid, settle_s, gemm_n, cell):
    sizes = GPU_GRID if gpu else CPU_GRID
    small_batch = small_batch and not gpu
    if small_batch:
        sizes, backends, memory = SMALL_BATCH_GRID, [b for b in backends if b == "numpy"], False
    if quick:
        sizes = sizes[:2] if gpu or small_batch else sizes
    if grid is not None:
        sizes = list(grid)
    rounds, budget = (3, 0.05) if quick else (7, 0.25)
    if gpu:  # GPU times are steady and no CPU thread pool is involved: shorter, no idle time
        rounds, budget = (3, 0.05) if quick else (5, 0.1)
        settle_s = 0.0 if settle_s is None else settle_s
    if quick:
        backends = [b for b in backends if b != "dask"]
    random.seed(0)
    passes = gpu_passes(cell) if gpu else [None]  # on the GPU the persistent kernel's rows come last
    progress = Progress(len(sizes) * rounds * len(passes))
    progress.note("machine information and the GEMM rate")
    # the same libraries as the GEMM of the rounds (gemm_calls), so that the header names what % GEMM is of
    result = {"machine": machine_info(threads), "quick": quick, "device": "cuda" if gpu else "cpu",
              "gemm": gemm_rate(gemm_n or (HEADER_GEMM_N_QUICK if quick else HEADER_GEMM_N), gpu=gpu,
                                backends=backends)}  # fmt: skip
    if gpu:
        result["machine"]["gpu_name"] = gpu_name()
    stem = results_stem(result["machine"], gpu=gpu, small_batch=small_batch, quick=quick, cell=cell)
    path = os.path.join(out_dir, stem + ".json")
    partial = os.path.join(out_dir, stem + ".partial.json")
    done = []  # one entry per size measured, in every pass

    def save(records, complete=False):
        result["grid"], result["complete"] = records, complete
        write_json(path if complete else partial, result)
        done.append(len(records))

    try:
        with tf32_off() if gpu else contextlib.nullcontext() as tf32:
            if gpu:
                result["machine"]["tf32"] = tf32  # what the torch and CuPy contenders ran with
                result["reference"] = REFERENCE_GPU
                result["passes"] = passes
            result["grid"] = bench_passes(sizes, passes, backends=backends, rounds=rounds, budget_s=budget,
                                          gpu=gpu, progress=progress, settle_s=settle_s, on_record=save,
                                          gemm_n=gemm_n, cell=cell)  # fmt: skip
        if memory and not gpu and cell is RNN:  # the memory section measures the RNN's NumPy kernels
            result["memory"] = memory_section(T_large=20_000 if quick else 100_000, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        what = "sizes" if len(passes) == 1 else f"sizes in {len(passes)} passes"
        raise Interrupted(len(done), len(sizes) * len(passes), partial if done else None, path, what) from None
    progress.close()
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    print_tables(result, stream)
    save(result["grid"], complete=True)
    if os.path.exists(partial):
        os.remove(partial)
    print(f"\nwrote {path}", file=stream)
    png = os.path.join(out_dir, stem + ".png")
    if not any(r.get("ratio_to_baseline") is not None for rec in result["grid"] for r in rec["results"].values()):
        print(f"no PNG written: the chart shows times relative to {cell.cpu[0].name}, and torch is not installed",
              file=stream)  # fmt: skip
    else:
        try:
            chart(result, png, **({} if cell is RNN else {"title": cell.name}))  # the RNN's: "rnn_xp forward"
        except ImportError:
            print("no PNG written: matplotlib is not installed (pip install matplotlib)", file=stream)
        except Exception as exc:  # the results are saved: a chart problem never fails the run
            print(f"no chart: {type(exc).__name__}: {exc} (no PNG written; the results are saved)", file=stream)
        else:
            print(f"wrote {png}", file=stream)
    return result
