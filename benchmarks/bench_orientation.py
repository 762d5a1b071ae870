"""The NumPy loop's per-step product, one way round or the other: ``python benchmarks/bench_orientation.py``.

The default install's steps multiply a few rows by ``Wh`` through NumPy's
BLAS. For each ``(B, H)`` (float32), side by side in one process, best of
``--repeats`` rounds of 50 products, on the BLAS threads the loop gives a step
(one below ``numpy._STEP_THREADS_MACS`` multiply-adds forward and
``_threads.SERIAL_MACS`` backward, else all):

- forward: ``h @ WhT`` (a contiguous copy of ``Wh.T``, below 16 rows),
  ``h @ Wh.T`` (the transposed view, from 16 rows) and ``Wh @ h.T`` into an
  ``(H, B)`` buffer, each followed by the add into the step's ``(B, H)`` rows;
- backward: ``dz @ Wh`` and ``WhT @ dz.T`` into an ``(H, B)`` buffer.

``speedup, Wh left`` is the best right-hand form's time over the left-hand
form's (above 1: Wh on the left is faster); ``rule`` is where the loops put
Wh there, forward and backward (``kernels.numpy.wh_first``). The table on stdout,
progress on stderr, JSON into ``--out`` (docs/cpu-kernels.md, "The default
install's product").
"""

import argparse
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

BATCHES = [1, 2, 4, 8, 16, 32, 64]
UNITS = [128, 256, 512, 1024]


def _best(fn, repeats, steps=50):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def _row(B, H, repeats):
    import numpy as np

    from rnn_xp.kernels import _threads
    from rnn_xp.kernels import numpy as numpy_loop
    from rnn_xp.kernels.numpy import wh_first

    rng = np.random.default_rng(0)
    h = rng.standard_normal((B, H), dtype=np.float32)
    o = rng.standard_normal((B, H), dtype=np.float32)
    Wh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    WhT = np.ascontiguousarray(Wh.T)
    tmp, tmp_t = np.empty((B, H), np.float32), np.empty((H, B), np.float32)
    forms = {
        "h @ WhT": lambda: (np.matmul(h, WhT, out=tmp), np.add(o, tmp, out=o)),
        "h @ Wh.T": lambda: (np.matmul(h, Wh.T, out=tmp), np.add(o, tmp, out=o)),
        "Wh @ h.T": lambda: (np.matmul(Wh, h.T, out=tmp_t), np.add(o, tmp_t.T, out=o)),
        "dz @ Wh": lambda: np.matmul(h, Wh, out=tmp),
        "WhT @ dz.T": lambda: np.matmul(WhT, h.T, out=tmp_t),
    }
    row = {}
    for name, fn in forms.items():
        limit = _threads.SERIAL_MACS if "dz" in name else numpy_loop._STEP_THREADS_MACS  # backward, forward
        with _threads.blas_threads(1 if B * H * H < limit else None):
            row[name] = _best(fn, repeats) * 1e6
    row["forward speedup, Wh left"] = min(row["h @ WhT"], row["h @ Wh.T"]) / row["Wh @ h.T"]
    row["backward speedup, Wh left"] = row["dz @ Wh"] / row["WhT @ dz.T"]
    row["rule"] = [bool(wh_first(B, H)), bool(wh_first(B, H, backward=True))]
    return row


def main(argv=None):
    from rnn_xp.bench.report import table, write_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="H = 512 only")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    units = [512] if args.quick else UNITS
    rows, n, total = [], 0, len(units) * len(BATCHES)
    for H in units:
        for B in BATCHES:
            n += 1
            print(f"[{n}/{total}] B={B} H={H}", file=sys.stderr, flush=True)
            rows.append({"B": B, "H": H, **_row(B, H, args.repeats)})
    names = ["h @ WhT", "h @ Wh.T", "Wh @ h.T", "dz @ Wh", "WhT @ dz.T"]
    head = ["B", "H", *(f"{k} (us)" for k in names), "forward speedup, Wh left", "backward speedup, Wh left",
            "rule (forward/backward)"]
    cells = [[str(r["B"]), str(r["H"])] + [f"{r[k]:.1f}" for k in names]
             + [f"{r['forward speedup, Wh left']:.2f}", f"{r['backward speedup, Wh left']:.2f}",
                "/".join("left" if k else "right" for k in r["rule"])] for r in rows]  # fmt: skip
    print(table(head, cells))
    if args.out:
        write_rows(args.out, "us per step", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
