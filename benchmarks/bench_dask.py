"""Scaling of rnn_forward on a dask.distributed cluster: 1 and 2 worker processes.

A fixed batch of sequences, chunked along the batch, is generated on the
workers and kept there (``persist``); then ``rnn_forward(...,
return_sequences=False)`` runs one task per batch chunk and only the final
states ``(B, H)`` come back. Throughput is sequences per second (B divided
by the wall time of one compute). Each worker is one process with one
thread and single-threaded BLAS, so "n workers" means n cores.

Run from the repository root::

    python benchmarks/bench_dask.py            # writes benchmarks/results/dask-scaling.json
    python benchmarks/bench_dask.py --quick    # a small smoke run, nothing written

The workers listen on loopback only (127.0.0.1), no dashboard.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"  # one core per worker process; set before NumPy loads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's rnn_xp, for this process and its workers

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
from dask.distributed import Client, LocalCluster, progress, wait  # noqa: E402

import rnn_xp  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "dask-scaling.json"


def run(n_workers, cfg, repeats):
    """Wall times (s) of ``repeats`` computes on a cluster of ``n_workers`` processes."""
    T, B, D, H, chunk = cfg["T"], cfg["batch"], cfg["D"], cfg["H"], cfg["chunk"]
    rng = np.random.default_rng(0)
    Wx = (rng.standard_normal((H, D)) / np.sqrt(D)).astype(np.float32)  # NumPy weights:
    Wh = (rng.standard_normal((H, H)) * 0.9 / np.sqrt(H)).astype(np.float32)  # one graph key each
    b = np.zeros(H, dtype=np.float32)

    with LocalCluster(
        n_workers=n_workers, processes=True, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, Client(cluster) as client:  # fmt: skip
        x = da.random.default_rng(1).standard_normal((T, B, D), chunks=(T, chunk, D), dtype=np.float32)
        x = client.persist(x)  # (T, B, D) generated on the workers, kept there
        wait(x)
        h_last = rnn_xp.rnn_forward(x, None, Wx, Wh, b, return_sequences=False)  # (B, H), lazy
        print(f"  {n_workers} worker(s): warm-up run, {h_last.numblocks[0]} tasks")
        fut = client.compute(h_last)
        progress(fut, notebook=False)
        print()
        fut.result()
        times, cores = [], []
        for i in range(repeats):
            cpu0 = sum(client.run(_cpu_seconds).values())
            t0 = time.perf_counter()
            result = client.compute(h_last).result()
            times.append(time.perf_counter() - t0)
            cores.append((sum(client.run(_cpu_seconds).values()) - cpu0) / times[-1])
            print(f"  {n_workers} worker(s): run {i + 1}/{repeats}: {times[-1]:.3f} s "
                  f"({B / times[-1]:,.0f} sequences/s, workers busy on {cores[-1]:.2f} cores)",
                  flush=True)
        assert result.shape == (B, H) and np.isfinite(result).all()
    return times, cores


def _cpu_seconds():
    """CPU time used so far by this worker process (runs on the worker)."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, write nothing")
    parser.add_argument("--repeats", type=int, default=3, help="timed computes per cluster")
    parser.add_argument("--rounds", type=int, default=2,
                        help="clusters per worker count, alternating 1, 2, 1, 2, ... so that "
                             "a change in the machine's load hits both alike")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    cfg = {"T": 100, "batch": 32768, "D": 16, "H": 64, "chunk": 2048, "dtype": "float32"}
    if args.quick:
        cfg.update(T=20, batch=2048, chunk=256)
        args.repeats, args.rounds = 2, 1
    print(f"rnn_forward on dask.distributed: T={cfg['T']}, batch={cfg['batch']}, D={cfg['D']}, "
          f"H={cfg['H']}, chunks of {cfg['chunk']} sequences, {cfg['dtype']}, "
          f"{os.cpu_count()} CPU cores on this machine")

    load_before = os.getloadavg()[0]
    pooled = {n: ([], []) for n in args.workers}
    for _ in range(args.rounds):
        for n in args.workers:
            times, cores = run(n, cfg, args.repeats)
            pooled[n][0].extend(times)
            pooled[n][1].extend(cores)
    rows = []
    for n, (times, cores) in pooled.items():
        best, median = min(times), statistics.median(times)
        rows.append({
            "workers": n, "times_s": [round(t, 4) for t in times],
            "cores_busy": [round(c, 2) for c in cores], "best_s": round(best, 4),
            "median_s": round(median, 4), "sequences_per_s_best": round(cfg["batch"] / best, 1),
            "sequences_per_s_median": round(cfg["batch"] / median, 1),
        })  # fmt: skip
    base = rows[0]["median_s"]
    for row in rows:
        row["speedup_median"] = round(base / row["median_s"], 3)

    print(f"\n{'workers':>7} {'median s':>9} {'best s':>8} {'seq/s (median)':>15} "
          f"{'speedup':>8} {'cores busy':>11}")
    for r in rows:
        print(f"{r['workers']:>7} {r['median_s']:>9.3f} {r['best_s']:>8.3f} "
              f"{r['sequences_per_s_median']:>15,.0f} {r['speedup_median']:>8.2f} "
              f"{statistics.median(r['cores_busy']):>11.2f}")

    if args.quick:
        return
    report = {
        "benchmark": "rnn_forward on dask.distributed LocalCluster, return_sequences=False",
        "config": {**cfg, "repeats": args.repeats, "rounds": args.rounds},
        "results": rows,
        "machine": {
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "dask": dask.__version__,
            "load_average_1min_before": round(load_before, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
        },  # fmt: skip
        "note": "one worker = one process, one thread, single-threaded BLAS; the machine's "
                "cores were shared with other running work, so times are noisy. cores_busy: "
                "CPU seconds the worker processes used during a run divided by its wall time "
                "(at most the number of workers; less when other work held the cores)",
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
