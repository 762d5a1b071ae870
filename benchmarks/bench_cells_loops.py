"""The gated cells' NumPy loops side by side: ``python benchmarks/bench_cells_loops.py [--quick] [--out FILE]``.

For the LSTM and the GRU, float32, one layer, one direction, at the sizes of
the CPU grid and a few between: the compiled loop (``numba_cells``) with one
caller and each step's product on BLAS's own threads (what the table runs),
the compiled loop with two callers on half the rows each and one BLAS thread
each (``threads=2``), and the in-place NumPy loop (``numpy_cells``), forward
and backward, in this one process. Best of ``--repeats`` rounds per cell;
the table on stdout, progress on stderr, JSON into ``--out``
(docs/cpu-kernels.md, "The gated cells' product and threads").
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

SIZES = [(1, 200, 32, 64), (16, 100, 64, 128), (32, 100, 128, 256), (64, 100, 64, 128), (8, 200, 256, 256),
         (64, 100, 256, 512), (64, 50, 512, 1024)]  # fmt: skip
QUICK = SIZES[:3]


def best(fn, repeats):
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def problem(name, B, T, D, H, seed=0):
    from rnn_xp.cells import GRUCell, GRUWeights, LSTMCell, LSTMWeights

    cell, Weights = (LSTMCell(), LSTMWeights) if name == "lstm" else (GRUCell(), GRUWeights)
    G = cell.gates
    rng = np.random.default_rng(seed)
    w = Weights((rng.standard_normal((G * H, D)) / np.sqrt(D)).astype(np.float32),
                (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(np.float32),
                (rng.standard_normal(G * H) / 10).astype(np.float32),
                (rng.standard_normal(G * H) / 10).astype(np.float32))  # fmt: skip
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    state0 = tuple(np.zeros((B, H), np.float32) for _ in cell.state_names)
    return cell, w, x, state0


def measure(name, size, repeats):
    import array_api_compat.numpy as xp

    from rnn_xp.kernels import numba_cells, numpy_cells

    cell, w, x, state0 = problem(name, *size)
    options = dict(lengths=None, reverse=False)
    seqs, finals = numpy_cells.scan_cells_numpy(xp, cell, x, state0, w, return_sequences=True, **options)
    rng = np.random.default_rng(1)
    d_out = tuple(rng.standard_normal(s.shape, dtype=np.float32) for s in seqs)
    d_out = d_out[0] if len(d_out) == 1 else d_out
    d_finals = tuple(np.zeros_like(f) for f in finals)
    loops = {
        "compiled, one caller": dict(threads=1),
        "compiled, two callers": dict(threads=2),
    }
    row = {}
    for label, extra in loops.items():
        row[f"forward: {label}"] = best(lambda: numba_cells.scan_cells_numba(
            xp, cell, x, state0, w, return_sequences=True, **options, **extra), repeats)  # fmt: skip
        row[f"backward: {label}"] = best(lambda: numba_cells.backward_cells_numba(
            xp, cell, d_out, x, state0, w, seqs, d_finals, **options, **extra), repeats)  # fmt: skip
    row["forward: in-place"] = best(lambda: numpy_cells.scan_cells_numpy(
        xp, cell, x, state0, w, return_sequences=True, **options), repeats)  # fmt: skip
    row["backward: in-place"] = best(lambda: numpy_cells.backward_cells_numpy(
        xp, cell, d_out, x, state0, w, seqs, d_finals, **options), repeats)  # fmt: skip
    return row


def blas():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")} for i in threadpool_info()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three sizes, three rounds")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per measurement (default 7, 3 with --quick)")
    parser.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    sizes = QUICK if args.quick else SIZES
    from rnn_xp.kernels import numba_cpu

    if not numba_cpu.available():
        sys.exit(f"the compiled loops are not available here: {numba_cpu.why_not()}")
    rows, n = [], 2 * len(sizes)
    for name in ("lstm", "gru"):
        for size in sizes:
            print(f"[{len(rows) + 1}/{n}] {name} {size}", file=sys.stderr, flush=True)
            times = measure(name, size, repeats if size[3] < 512 else max(2, repeats // 2))
            rows.append({"cell": name, "size": list(size), "ms": {k: round(v * 1e3, 3) for k, v in times.items()}})
    columns = list(rows[0]["ms"])
    print(f"\nBLAS: {blas()}\nbest of {repeats} rounds, ms; ratio: compiled (one caller) / in-place\n")
    print("| cell | (B, T, D, H) | " + " | ".join(columns) + " | forward ratio | backward ratio |")
    print("|---|---|" + "---:|" * (len(columns) + 2))
    for r in rows:
        ms = r["ms"]
        fwd = ms["forward: compiled, one caller"] / ms["forward: in-place"]
        bwd = ms["backward: compiled, one caller"] / ms["backward: in-place"]
        cells = " | ".join(f"{ms[c]:.3g}" for c in columns)
        print(f"| {r['cell']} | {tuple(r['size'])} | {cells} | {fwd:.2f} | {bwd:.2f} |")
    if args.out:
        report = {"benchmark": "the gated cells' NumPy loops: compiled (one caller, two callers) and in-place",
                  "dtype": "float32", "repeats": repeats, "rows": rows, "blas": blas(),
                  "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                              "processor": platform.processor(), "numpy": np.__version__}}  # fmt: skip
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
