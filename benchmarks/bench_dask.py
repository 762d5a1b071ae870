"""rnn_xp on Dask: inference, training and reservoir computing on dask.distributed.

Five parts, each writing its own JSON file under ``benchmarks/results/``:

``forward`` (``dask-scaling.json``)
    ``rnn_forward(..., return_sequences=False)`` on a ``LocalCluster`` of 1
    and 2 worker processes: sequences per second and the speedup.
``backward`` (``dask-backward.json``)
    ``rnn_backward`` on Dask on one worker process against NumPy's
    ``rnn_backward`` in this process (both on one BLAS thread), at the
    forward's size; and the number of tasks of the backward's graph at
    T = 100 and T = 1,000 (equal: one task per batch chunk, whatever T is).
``scaling`` (``dask-fwd-bwd-scaling.json``)
    ``rnn_forward`` then ``rnn_backward`` in one graph on 1 and 2 worker
    processes: the speedup of a training pass.
``train`` (``dask-train.json``)
    ``python -m rnn_xp train`` at the tutorial's default size: the time per
    step on NumPy, on Dask's threads and on a two-process ``LocalCluster``.
``reservoir`` (``dask-reservoir.json``)
    A reservoir-computing fit: the states of a fixed random reservoir
    (an echo-state network, leak 0.3) over a batch of long sequences whose
    states do not fit in one worker's memory limit, and a ridge-regression
    read-out fitted with ``dask.array`` (tree-reduced ``tensordot`` and
    ``da.linalg.solve``) in one graph. It records the size of the states,
    each worker's memory limit and the peak memory (RSS) of each worker
    process, sampled every 0.1 s, and the fit's error on held-out sequences.

Every worker is one process with one thread and single-threaded BLAS, so
"n workers" means n cores; the data are generated on the workers and kept
there (``persist``), and only small results come back. Progress is printed
as it goes.

Run from the repository root::

    python benchmarks/bench_dask.py                      # every part, writes the JSON files
    python benchmarks/bench_dask.py --part backward train
    python benchmarks/bench_dask.py --quick              # small sizes, every part, nothing written

The workers listen on loopback only (127.0.0.1), no dashboard.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"  # one core per worker process and here; set before NumPy loads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's rnn_xp, for this process and its workers

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
from dask.distributed import Client, LocalCluster, progress, wait  # noqa: E402

import rnn_xp  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("forward", "backward", "scaling", "train", "reservoir")
NOTE = ("one worker = one process, one thread, single-threaded BLAS. cores_busy: CPU seconds "
        "the worker processes used during a run divided by its wall time (at most the number "
        "of workers; less when other work held the cores)")  # fmt: skip


# -- helpers -------------------------------------------------------------------


def cluster(n_workers, **options):
    """A ``LocalCluster`` of single-threaded worker processes on loopback, and its client."""
    cl = LocalCluster(
        n_workers=n_workers, processes=True, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=None, **options,
    )  # fmt: skip
    return cl, Client(cl)


def weights(D, H, seed=0):
    """NumPy float32 weights: one graph key each."""
    rng = np.random.default_rng(seed)
    Wx = (rng.standard_normal((H, D)) / np.sqrt(D)).astype(np.float32)
    Wh = (rng.standard_normal((H, H)) * 0.9 / np.sqrt(H)).astype(np.float32)
    return Wx, Wh, np.zeros(H, dtype=np.float32)


def on_workers(client, shape, chunks, seed):
    """A float32 standard normal Dask array generated on the workers and kept there."""
    a = da.random.default_rng(seed).standard_normal(shape, chunks=chunks, dtype=np.float32)
    a = client.persist(a)
    wait(a)
    return a


def _cpu_seconds():
    """CPU time used so far by this worker process (runs on the worker)."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _rss():
    """Resident memory of this worker process in bytes (runs on the worker)."""
    import psutil

    return psutil.Process().memory_info().rss


def _task_count(dask_scheduler=None):
    return len(dask_scheduler.tasks)


def timed_runs(client, build, repeats, label):
    """Wall times and busy cores of ``repeats`` computes of ``build()``, results left on the workers.

    Each run computes every array ``build()`` returns, waits for all of them
    on the workers (nothing large comes back), then releases them and waits
    until the scheduler has forgotten them, so that the next run starts
    from the same state.
    """
    baseline = client.run_on_scheduler(_task_count)
    futures = client.compute(build())  # warm-up: imports and first allocations on the workers
    print(f"  {label}: warm-up run")
    progress(futures, notebook=False)
    print()
    wait(futures)
    _release(client, futures, baseline)
    times, cores = [], []
    for i in range(repeats):
        arrays = build()
        cpu0 = sum(client.run(_cpu_seconds).values())
        t0 = time.perf_counter()
        futures = client.compute(arrays)
        wait(futures)
        times.append(time.perf_counter() - t0)
        cores.append((sum(client.run(_cpu_seconds).values()) - cpu0) / times[-1])
        errors = [f for f in futures if f.status != "finished"]
        if errors:
            errors[0].result()  # raises the task's error
        _release(client, futures, baseline)
        print(f"  {label}: run {i + 1}/{repeats}: {times[-1]:.3f} s, workers busy on "
              f"{cores[-1]:.2f} cores", flush=True)
    return times, cores


def _release(client, futures, baseline, timeout=30):
    """Drop ``futures`` and wait until the scheduler holds ``baseline`` tasks again."""
    futures.clear()
    gc.collect()
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(_task_count) > baseline and time.monotonic() < deadline:
        time.sleep(0.02)


def summary(times):
    return {"times_s": [round(t, 4) for t in times], "best_s": round(min(times), 4),
            "median_s": round(statistics.median(times), 4)}  # fmt: skip


def machine():
    import distributed

    return {
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__,
        "dask": dask.__version__, "distributed": distributed.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def write(name, report, quick):
    if quick:
        return
    path = RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def table(header, rows):
    """Print rows (lists of strings) as a Markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


# -- forward: inference scaling ------------------------------------------------


def part_forward(cfg, args):
    """rnn_forward, return_sequences=False, on 1 and 2 workers, alternating."""
    T, B, D, H, chunk = cfg["T"], cfg["batch"], cfg["D"], cfg["H"], cfg["chunk"]
    Wx, Wh, b = weights(D, H)
    print(f"\n== forward: rnn_forward(return_sequences=False), T={T}, batch={B}, D={D}, H={H}, "
          f"chunks of {chunk} sequences, float32")
    pooled = {n: ([], []) for n in args.workers}
    for _ in range(args.rounds):
        for n in args.workers:
            cl, client = cluster(n)
            with cl, client:
                x = on_workers(client, (T, B, D), (T, chunk, D), 1)
                build = lambda: [rnn_xp.rnn_forward(x, None, Wx, Wh, b, return_sequences=False)]  # noqa: E731
                times, cores = timed_runs(client, build, args.repeats, f"{n} worker(s)")
            pooled[n][0].extend(times)
            pooled[n][1].extend(cores)
    rows = _scaling_rows(pooled, B)
    table(["workers", "median s", "best s", "sequences / s", "speedup", "cores busy"],
          [[str(r["workers"]), f"{r['median_s']:.3f}", f"{r['best_s']:.3f}",
            f"{r['sequences_per_s_median']:,.0f}", f"{r['speedup_median']:.2f}",
            f"{statistics.median(r['cores_busy']):.2f}"] for r in rows])  # fmt: skip
    write("dask-scaling.json", {
        "benchmark": "rnn_forward on dask.distributed LocalCluster, return_sequences=False",
        "config": {**cfg, "dtype": "float32", "repeats": args.repeats, "rounds": args.rounds},
        "results": rows, "machine": machine(), "note": NOTE,
    }, args.quick)  # fmt: skip


def _scaling_rows(pooled, B):
    rows = []
    for n, (times, cores) in pooled.items():
        s = summary(times)
        rows.append({"workers": n, **s, "cores_busy": [round(c, 2) for c in cores],
                     "sequences_per_s_best": round(B / s["best_s"], 1),
                     "sequences_per_s_median": round(B / s["median_s"], 1)})  # fmt: skip
    base = rows[0]["median_s"]
    for row in rows:
        row["speedup_median"] = round(base / row["median_s"], 3)
    return rows


# -- backward: one worker against NumPy, task counts ------------------------------


def backward_tasks(T, B, D, H, chunk):
    """Tasks of the graph of every gradient of ``rnn_backward`` (inputs excluded), and per kind."""
    from dask.highlevelgraph import HighLevelGraph

    x = da.zeros((T, B, D), chunks=(T, chunk, D), dtype=np.float32)
    h_seq = da.zeros((T, B, H), chunks=(T, chunk, H), dtype=np.float32)
    dh = da.zeros((T, B, H), chunks=(T, chunk, H), dtype=np.float32)
    inputs = set(HighLevelGraph.merge(*(a.__dask_graph__() for a in (x, h_seq, dh))).layers)
    g = rnn_xp.rnn_backward(dh, x, None, *weights(D, H), h_seq)
    graph = HighLevelGraph.merge(*(a.__dask_graph__() for a in g if a is not None))
    counts = {}
    for name, layer in graph.layers.items():
        if name not in inputs:
            kind = name.rsplit("-", 1)[0]
            counts[kind] = counts.get(kind, 0) + len(layer)
    return sum(counts.values()), counts


def part_backward(cfg, args):
    T, B, D, H, chunk = cfg["T"], cfg["batch"], cfg["D"], cfg["H"], cfg["chunk"]
    Wx, Wh, b = weights(D, H)
    print(f"\n== backward: rnn_backward, T={T}, batch={B}, D={D}, H={H}, chunks of {chunk} "
          "sequences, float32; NumPy here against Dask on one worker process")
    # NumPy in this process, one BLAS thread
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    h_seq = rnn_xp.rnn_forward(x, None, Wx, Wh, b)
    dh = rng.standard_normal((T, B, H), dtype=np.float32)
    rnn_xp.rnn_backward(dh, x, None, Wx, Wh, b, h_seq)  # warm-up
    numpy_times, numpy_cpu = [], []
    for i in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        rnn_xp.rnn_backward(dh, x, None, Wx, Wh, b, h_seq)
        numpy_times.append(time.perf_counter() - t0)
        numpy_cpu.append(time.process_time() - c0)
        print(f"  NumPy: run {i + 1}/{args.repeats}: {numpy_times[-1]:.3f} s "
              f"({numpy_cpu[-1]:.3f} CPU seconds)", flush=True)
    del x, h_seq, dh
    gc.collect()

    cl, client = cluster(1)
    with cl, client:
        x = on_workers(client, (T, B, D), (T, chunk, D), 1)
        dh = on_workers(client, (T, B, H), (T, chunk, H), 2)
        h_seq = client.persist(rnn_xp.rnn_forward(x, None, Wx, Wh, b))
        wait(h_seq)
        build = lambda: list(rnn_xp.rnn_backward(dh, x, None, Wx, Wh, b, h_seq))  # noqa: E731
        dask_times, cores = timed_runs(client, build, args.repeats, "Dask, 1 worker")
    ratio = statistics.median(dask_times) / statistics.median(numpy_times)
    dask_cpu = [t * c for t, c in zip(dask_times, cores)]  # CPU seconds of the worker per run
    cpu_ratio = statistics.median(dask_cpu) / statistics.median(numpy_cpu)

    counts = {t: backward_tasks(t, B, D, H, chunk) for t in (T, 10 * T)}
    print(f"\n  ratio Dask / NumPy (medians): {ratio:.2f} (target <= 1.3); in CPU seconds "
          f"{cpu_ratio:.2f} (the same unless other work held the cores)")
    for t, (total, kinds) in counts.items():
        print(f"  T = {t}: {total} tasks in the backward's graph: {kinds}")
    print()
    table(["", "median s", "best s", "median CPU s"], [
        ["NumPy rnn_backward (this process)", f"{statistics.median(numpy_times):.3f}",
         f"{min(numpy_times):.3f}", f"{statistics.median(numpy_cpu):.3f}"],
        ["Dask rnn_backward, 1 worker", f"{statistics.median(dask_times):.3f}",
         f"{min(dask_times):.3f}", f"{statistics.median(dask_cpu):.3f}"],
    ])  # fmt: skip
    write("dask-backward.json", {
        "benchmark": "rnn_backward on Dask (one worker process) against NumPy (this process)",
        "config": {**cfg, "dtype": "float32", "repeats": args.repeats},
        "numpy": {**summary(numpy_times), "cpu_s": [round(c, 4) for c in numpy_cpu]},
        "dask_one_worker": {**summary(dask_times), "cores_busy": [round(c, 2) for c in cores],
                            "cpu_s": [round(c, 4) for c in dask_cpu]},
        "ratio_median": round(ratio, 3),
        "cpu_ratio_median": round(cpu_ratio, 3),
        "target": "ratio <= 1.3; task count the same at T and 10 T",
        "tasks": {str(t): {"total": total, "by_kind": kinds} for t, (total, kinds) in counts.items()},
        "machine": machine(),
        "note": NOTE + ". Both sides compute every gradient and keep it in memory: the Dask "
                "results stay on the worker.",
    }, args.quick)  # fmt: skip


# -- scaling: forward + backward -------------------------------------------------


def part_scaling(cfg, args):
    T, B, D, H, chunk = cfg["T"], cfg["batch"], cfg["D"], cfg["H"], cfg["chunk"]
    Wx, Wh, b = weights(D, H)
    print(f"\n== scaling: rnn_forward then rnn_backward in one graph, T={T}, batch={B}, D={D}, "
          f"H={H}, chunks of {chunk} sequences, float32")
    pooled = {n: ([], []) for n in args.workers}
    for _ in range(args.rounds):
        for n in args.workers:
            cl, client = cluster(n)
            with cl, client:
                x = on_workers(client, (T, B, D), (T, chunk, D), 1)
                dh = on_workers(client, (T, B, H), (T, chunk, H), 2)

                def build():
                    h_seq = rnn_xp.rnn_forward(x, None, Wx, Wh, b)
                    return list(rnn_xp.rnn_backward(dh, x, None, Wx, Wh, b, h_seq))

                times, cores = timed_runs(client, build, args.repeats, f"{n} worker(s)")
            pooled[n][0].extend(times)
            pooled[n][1].extend(cores)
    rows = _scaling_rows(pooled, B)
    table(["workers", "median s", "best s", "sequences / s", "speedup", "cores busy"],
          [[str(r["workers"]), f"{r['median_s']:.3f}", f"{r['best_s']:.3f}",
            f"{r['sequences_per_s_median']:,.0f}", f"{r['speedup_median']:.2f}",
            f"{statistics.median(r['cores_busy']):.2f}"] for r in rows])  # fmt: skip
    write("dask-fwd-bwd-scaling.json", {
        "benchmark": "rnn_forward + rnn_backward on dask.distributed LocalCluster",
        "config": {**cfg, "dtype": "float32", "repeats": args.repeats, "rounds": args.rounds},
        "target": "speedup >= 1.6 from 1 to 2 workers",
        "results": rows, "machine": machine(), "note": NOTE,
    }, args.quick)  # fmt: skip


# -- train: the tutorial's step ---------------------------------------------------


def part_train(cfg, args):
    from rnn_xp.cli.train import train

    steps = cfg["train_steps"]
    print(f"\n== train: python -m rnn_xp train at the tutorial's default size (sine, batch 32, "
          f"T=40, hidden 32, float32, Adam), {steps} steps per run")
    runs = [("numpy", None), ("dask", "threads"), ("dask", "local-cluster")]
    per_step = {f"{backend}" + (f" ({s})" if s else ""): [] for backend, s in runs}
    for r in range(args.rounds):
        for backend, scheduler in runs:
            label = f"{backend}" + (f" ({scheduler})" if scheduler else "")
            result = train("sine", backend=backend, scheduler=scheduler, steps=steps, quiet=True)
            per_step[label].append(result.seconds / steps)
            print(f"  {label}, round {r + 1}/{args.rounds}: {1e3 * per_step[label][-1]:.2f} ms per "
                  f"step, final loss {result.final_loss:.4f}", flush=True)
    base = statistics.median(per_step["numpy"])
    rows = {k: {"ms_per_step": [round(1e3 * v, 3) for v in vals],
                "median_ms": round(1e3 * statistics.median(vals), 3),
                "ratio_to_numpy": round(statistics.median(vals) / base, 2)}
            for k, vals in per_step.items()}  # fmt: skip
    table(["run", "median ms per step", "ratio to NumPy"],
          [[k, f"{v['median_ms']:.2f}", f"{v['ratio_to_numpy']:.2f}"] for k, v in rows.items()])
    write("dask-train.json", {
        "benchmark": "python -m rnn_xp train, time per step (the loop, not the start-up)",
        "config": {"task": "sine", "batch": 32, "seq_len": 40, "hidden": 32, "dtype": "float32",
                   "optimizer": "adam", "steps": steps, "rounds": args.rounds},
        "target": "Dask's step within 3x of NumPy's",
        "results": rows, "machine": machine(),
        "note": "NumPy on one BLAS thread; Dask: one task per batch chunk and one compute per step",
    }, args.quick)  # fmt: skip


# -- reservoir: echo-state states and a ridge read-out ----------------------------


def sequences(block_info=None, *, T, horizon, seed):
    """Runs on a worker: one chunk ``(T, b, 2)`` of inputs and targets, seeded by its position.

    ``s_t = sin(0.2 t + p) cos(0.031 t + 2 p)`` with a random phase ``p`` per
    sequence; the input is ``s_t``, the target ``s_{t + horizon}``.
    """
    (start, stop) = block_info[None]["array-location"][1]
    rng = np.random.default_rng([seed, start])
    phase = rng.uniform(0, 2 * np.pi, size=(1, stop - start))
    t = np.arange(T + horizon)[:, None]
    s = (np.sin(0.2 * t + phase) * np.cos(0.031 * t + 2 * phase)).astype(np.float32)
    return np.stack([s[:T], s[horizon:]], axis=-1)  # (T, b, 2): input, target


def reservoir(H, seed=0, radius=0.9):
    """Fixed random reservoir weights: ``Win (H, 1)`` and ``W (H, H)`` of spectral radius ``radius``."""
    rng = np.random.default_rng(seed)
    Win = rng.uniform(-0.5, 0.5, size=(H, 1))
    W = rng.standard_normal((H, H))
    W *= radius / max(abs(np.linalg.eigvals(W)))
    return Win.astype(np.float32), W.astype(np.float32)


def ridge_graph(data, Win, W, *, leak, washout, ridge):
    """The read-out ``w (H + 1, 1)``, lazy: states, features and the normal equations in one graph.

    The states are float32; the normal equations are summed in float64 (a
    float32 ``S^T S`` over millions of rows loses the digits the solve needs).
    """
    H = W.shape[0]
    u, y = data[..., :1], data[..., 1:]  # (T, B, 1) each
    states = rnn_xp.rnn_forward(u, None, Win, W, leak=leak)[washout:]  # (T', B, H) float32
    S = da.concatenate([states, da.ones_like(states[..., :1])], axis=-1)  # (T', B, H + 1): a bias
    S = S.rechunk({2: -1}).astype(np.float64)
    StS = da.tensordot(S, S, axes=([0, 1], [0, 1]))  # (H + 1, H + 1), a tree of partial sums
    Sty = da.tensordot(S, y[washout:].astype(np.float64), axes=([0, 1], [0, 1]))  # (H + 1, 1)
    return da.linalg.solve(StS + ridge * da.eye(H + 1, dtype=StS.dtype), Sty), states.nbytes


def part_reservoir(cfg, args):
    T, B, H, chunk = cfg["res_T"], cfg["res_batch"], cfg["res_H"], cfg["res_chunk"]
    leak, washout, ridge, horizon = 0.3, 100 if not args.quick else 10, 1e-4, 10
    Win, W = reservoir(H)
    print(f"\n== reservoir: echo-state states (T={T}, batch={B}, H={H}, leak {leak}, chunks of "
          f"{chunk} sequences, float32) and a ridge read-out, {args.res_workers} workers, memory "
          f"limit {args.memory_limit} each")
    cl, client = cluster(args.res_workers, memory_limit=args.memory_limit)
    with cl, client:
        limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
        data = da.map_blocks(sequences, T=T, horizon=horizon, seed=1, chunks=((T,), (chunk,) * (B // chunk), (2,)),
                             dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))  # fmt: skip
        w, states_bytes = ridge_graph(data, Win, W, leak=leak, washout=washout, ridge=ridge)
        print(f"  the states: {states_bytes / 2**30:.2f} GiB in all, {states_bytes / (B // chunk) / 2**20:.1f} "
              f"MiB per chunk; each worker's memory limit: {min(limits) / 2**30:.2f} GiB")  # fmt: skip
        peaks = {}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for addr, rss in client.run(_rss).items():
                    peaks[addr] = max(peaks.get(addr, 0), rss)
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = sum(client.run(_cpu_seconds).values())
        t0 = time.perf_counter()
        future = client.compute(w)
        progress(future, notebook=False)
        print()
        w = future.result()
        seconds = time.perf_counter() - t0
        cores = (sum(client.run(_cpu_seconds).values()) - cpu0) / seconds
        stop.set()
        sampler.join()

    # held-out sequences, in NumPy here
    held = sequences({None: {"array-location": [(0, T), (0, 256), (0, 2)]}}, T=T, horizon=horizon, seed=2)
    h = rnn_xp.rnn_forward(held[..., :1], None, Win, W, leak=leak)[washout:]
    pred = np.concatenate([h, np.ones_like(h[..., :1])], axis=-1) @ w
    target = held[washout:, :, 1:]
    nrmse = float(np.sqrt(np.mean((pred - target) ** 2)) / target.std())
    peak = max(peaks.values()) if peaks else float("nan")
    print(f"  {seconds:.1f} s, workers busy on {cores:.2f} cores; peak worker memory "
          f"{peak / 2**30:.2f} GiB (limit {min(limits) / 2**30:.2f} GiB, states "
          f"{states_bytes / 2**30:.2f} GiB); held-out NRMSE {nrmse:.4f}\n")
    table(["states (GiB)", "worker memory limit (GiB)", "peak worker RSS (GiB)", "time (s)", "sequences / s", "held-out NRMSE"],
          [[f"{states_bytes / 2**30:.2f}", f"{min(limits) / 2**30:.2f}", f"{peak / 2**30:.2f}",
            f"{seconds:.1f}", f"{B / seconds:,.0f}", f"{nrmse:.4f}"]])  # fmt: skip
    write("dask-reservoir.json", {
        "benchmark": "echo-state reservoir states on Dask and a ridge read-out fitted with dask.array",
        "config": {"T": T, "batch": B, "D": 1, "H": H, "chunk": chunk, "dtype": "float32",
                   "leak": leak, "spectral_radius": 0.9, "washout": washout, "ridge": ridge,
                   "horizon": horizon, "workers": args.res_workers,
                   "memory_limit": args.memory_limit},
        "states_bytes": states_bytes,
        "worker_memory_limit_bytes": limits,
        "peak_worker_rss_bytes": peaks,
        "seconds": round(seconds, 3), "cores_busy": round(cores, 2),
        "held_out_nrmse": round(nrmse, 5),
        "machine": machine(),
        "note": "peak RSS sampled every 0.1 s from each worker process; the states are never "
                "all in memory: each chunk's states feed two tensordot partial sums and are freed",
    }, args.quick)  # fmt: skip


# -- main ------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=(*PARTS, "all"), default=["all"],
                        help="which parts to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, write nothing")
    parser.add_argument("--repeats", type=int, default=3, help="timed computes per cluster")
    parser.add_argument("--rounds", type=int, default=2,
                        help="clusters per worker count, alternating 1, 2, 1, 2, ... so that "
                             "a change in the machine's load hits both alike")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--res-workers", type=int, default=2, help="workers of the reservoir part")
    parser.add_argument("--memory-limit", default="4GiB",
                        help="each worker's memory limit in the reservoir part (default 4GiB)")
    args = parser.parse_args(argv)
    parts = PARTS if "all" in args.part else tuple(p for p in PARTS if p in args.part)

    cfg = {"T": 100, "batch": 32768, "D": 16, "H": 64, "chunk": 2048, "train_steps": 300,
           "res_T": 500, "res_batch": 65536, "res_H": 100, "res_chunk": 1024}  # fmt: skip
    if args.quick:
        cfg.update(T=20, batch=2048, chunk=256, train_steps=20, res_T=60, res_batch=2048,
                   res_H=20, res_chunk=256)  # fmt: skip
        args.repeats, args.rounds = 2, 1
        if args.memory_limit == "4GiB":
            args.memory_limit = "1GiB"
    print(f"rnn_xp on Dask: parts {', '.join(parts)}; {os.cpu_count()} CPU cores on this machine, "
          f"load average {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    for part in parts:
        t0 = time.perf_counter()
        globals()[f"part_{part}"](cfg, args)
        print(f"   ({part}: {time.perf_counter() - t0:.0f} s)")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
