"""The NumPy forward right after a NumPy matrix product: thread pools that get in each other's way.

After each call, OpenBLAS (NumPy's BLAS) keeps its worker threads spinning
for about 0.1 s. A forward that starts meanwhile and runs its own thread
team (oneMKL's or PyTorch's OpenMP threads) has more busy threads than
cores, and every step that waits at a barrier for a descheduled thread
loses a scheduler time slice. This script times each contender twice,
side by side in the same rounds:

- alone: 0.2 s idle, then calls back to back;
- after a NumPy matmul: every call preceded by a 512 x 512 float32 product
  (as a readout layer between forwards would be); the product's own time,
  measured alone in the same rounds, is subtracted.

Contenders: ``torch.nn.RNN``; the NumPy loop with oneMKL as shipped (it
drops to one thread for 0.1 s after two stalled steps, ``mkl.StepThreads``);
the same with that choice switched off (all threads on every step); and
the loop on OpenBLAS alone (oneMKL suspended).

Run from the repository root::

    python benchmarks/bench_interference.py           # writes benchmarks/results/interference-<cpu>.json
    python benchmarks/bench_interference.py --quick   # one size, fewer rounds, nothing written
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import rnn_xp  # noqa: E402
from rnn_xp import bench  # noqa: E402
from rnn_xp.kernels import mkl  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / f"interference-{bench.cpu_tag(bench.cpu_model())}.json"
SIZES = [(32, 100, 128, 256), (64, 50, 512, 1024)]  # (B, T, D, H): where oneMKL may run
SHIPPED = "rnn_xp numpy (oneMKL, shipped)"
ALL_THREADS = "rnn_xp numpy (oneMKL, all threads every step)"
OPENBLAS = "rnn_xp numpy (OpenBLAS)"


class _forced_mkl:
    """Send this size to oneMKL (whatever the threshold), optionally without the stall hold."""

    def __init__(self, hold):
        self.hold = hold

    def __enter__(self):
        from rnn_xp import kernels

        self._saved = kernels.MKL_MACS, mkl.StepThreads.HOLD_S
        self._prefer = mkl.preferring(True)  # on any CPU vendor
        self._prefer.__enter__()
        kernels.MKL_MACS = 0  # the table's size rule for oneMKL
        if not self.hold:
            mkl.StepThreads.HOLD_S = 0.0  # a hold ends as it starts: all threads on every step
        return self

    def __exit__(self, *exc):
        from rnn_xp import kernels

        kernels.MKL_MACS, mkl.StepThreads.HOLD_S = self._saved
        self._prefer.__exit__(*exc)
        return False


def contenders(B, T, D, H):
    x, h0, Wx, Wh, b = bench.problem(B, T, D, H)
    rnn = bench.torch_baseline(Wx, Wh, b)
    xt, h0t = torch.from_numpy(x), torch.from_numpy(h0)[None]

    def torch_rnn():
        with torch.no_grad():
            return rnn(xt, h0t)[0].numpy()

    def forward():
        return rnn_xp.rnn_forward(x, h0, Wx, Wh, b)

    def with_context(make):
        def run():
            with make():
                return forward()

        return run

    out = {bench.BASELINE: torch_rnn, OPENBLAS: with_context(mkl.suspended)}
    if mkl.library() is not None:
        out[SHIPPED] = with_context(lambda: _forced_mkl(hold=True))
        out[ALL_THREADS] = with_context(lambda: _forced_mkl(hold=False))
    want = torch_rnn()
    for name, fn in out.items():
        np.testing.assert_allclose(fn(), want, rtol=1e-3, atol=1e-4, err_msg=name)
    return out


def measure(sizes, rounds, calls, progress):
    a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
    out = np.empty_like(a)

    def matmul():
        np.matmul(a, a, out=out)

    rows = []
    for B, T, D, H in sizes:
        cands = contenders(B, T, D, H)
        times = {(name, s): [] for name in cands for s in ("alone", "after")}
        mm = []
        for _ in range(rounds):
            time.sleep(0.2)
            mm.append(bench.time_per_call(lambda: matmul(), bench.no_sync, calls))
            for name, fn in cands.items():
                time.sleep(0.2)  # the spinning threads of the last contender settle
                times[name, "alone"].append(bench.time_per_call(fn, bench.no_sync, calls))

                def after(fn=fn):
                    matmul()
                    return fn()

                times[name, "after"].append(bench.time_per_call(after, bench.no_sync, calls))
            progress.step(f"({B}, {T}, {D}, {H})")
        mm_s = statistics.median(mm)
        base = {s: statistics.median(times[bench.BASELINE, s]) - (mm_s if s == "after" else 0) for s in ("alone", "after")}
        for name in cands:
            alone = statistics.median(times[name, "alone"])
            after = statistics.median(times[name, "after"]) - mm_s
            rows.append({"B": B, "T": T, "D": D, "H": H, "contender": name,
                         "alone_ms": alone * 1e3, "after_matmul_ms": after * 1e3,
                         "ratio_alone": alone / base["alone"], "ratio_after_matmul": after / base["after"],
                         "matmul_ms": mm_s * 1e3})  # fmt: skip
    return rows


def print_table(rows, stream=None):
    p = lambda s="": print(s, file=stream)  # noqa: E731
    p("| (B, T, D, H) | contender | alone, ms | ratio | after a NumPy matmul, ms | ratio |")
    p("|---|---|---:|---:|---:|---:|")
    last = None
    for r in rows:
        size = (r["B"], r["T"], r["D"], r["H"])
        p(f"| {size if size != last else ''} | {r['contender']} | {r['alone_ms']:.2f} | {r['ratio_alone']:.2f} "
          f"| {r['after_matmul_ms']:.2f} | {r['ratio_after_matmul']:.2f} |")
        last = size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one size, 2 rounds, nothing written")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes, rounds = (SIZES[:1], 2) if args.quick else (SIZES, args.rounds)
    progress = bench.Progress(len(sizes) * rounds)
    info = bench.machine_info(args.threads)
    pools = ", ".join(f"{p['internal_api']} {p['version']} ({p['num_threads']} threads)"
                      for p in info["threadpools"] or [])  # fmt: skip
    print(f"{info['cpu_model']}, {info['logical_cpus']} logical CPUs; torch threads {args.threads}; "
          f"thread pools: {pools}; oneMKL: {info['mkl']['status']}")
    rows = measure(sizes, rounds, calls=5 if args.quick else 10, progress=progress)
    progress.close()
    print_table(rows)
    if not args.quick:
        RESULTS.write_text(json.dumps({"machine": info, "rounds": rounds, "rows": rows}, indent=1) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
