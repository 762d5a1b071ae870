"""Where the compiled Elman forward's time goes: ``python benchmarks/bench_own_product.py [--quick] [--out FILE]``.

For each size of the CPU and small-batch grids (float32), every figure in a
process of its own (no BLAS thread of one figure spinning beside the next):

- ``numpy``: the NumPy loop (the default install's forward);
- ``blas``: the compiled loop with the per-step product of NumPy's BLAS
  (``product="blas"``, the input projection one BLAS GEMM);
- ``own``: the compiled loop as the table runs it (its own product, the
  packed product, with the projection inside the compiled call, the plan's
  threads);
- ``own 1 thread``: the same on one thread, and its parts on one thread:
  ``product``, the T per-step products ``h @ Wh.T`` alone (the packed
  product, ``Wh`` packed once), and ``projection``, ``x @ Wx.T`` over all
  steps alone; ``rest`` = the one-thread loop less both (tanh, the copies,
  the loop);
- ``blocked product``: the same T products by the register-blocked product
  the loop ran before the packed one (four rows by four columns, sums along
  ``k``), one thread;
- ``blas product``: the T per-step products by ``numpy.matmul`` (OpenBLAS, its
  own threads) alone.

Best of ``--repeats`` rounds; the table on stdout, progress on stderr, JSON
into ``--out`` (docs/cpu-kernels.md, "The own product: before and after",
"The packed product").
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

SIZES = [(1, 200, 32, 64), (16, 100, 64, 128), (32, 100, 128, 256), (64, 50, 512, 1024),
         (1, 200, 256, 256), (4, 200, 256, 256), (8, 200, 256, 256), (1, 200, 512, 512), (4, 200, 512, 512),
         (8, 200, 512, 512), (1, 200, 1024, 1024), (4, 200, 1024, 1024), (8, 200, 1024, 1024)]  # fmt: skip
QUICK = SIZES[:3]
FIGURES = ["numpy", "blas", "own", "own 1 thread", "product", "projection", "blocked product", "blas product"]


def _arrays(B, T, D, H):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    Wx = (rng.standard_normal((H, D)) / np.sqrt(D)).astype(np.float32)
    Wh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    b = np.zeros(H, np.float32)
    return x, h0, Wx, Wh, b


def _figure(name, B, T, D, H, repeats):
    """Seconds of one figure (best of ``repeats``), in this process."""
    import array_api_compat.numpy as xp
    import numpy as np

    from rnn_xp.kernels import numba_cpu
    from rnn_xp.kernels.numpy import scan_numpy

    x, h0, Wx, Wh, b = _arrays(B, T, D, H)
    opts = dict(nonlinearity="tanh", lengths=None, reverse=False, leak=1.0, return_sequences=True)
    if name == "numpy":
        fn = lambda: scan_numpy(xp, x, h0, Wx, Wh, b, **opts)  # noqa: E731
    elif name in ("blas", "own", "own 1 thread"):
        kw = {"blas": dict(product="blas"), "own": {}, "own 1 thread": dict(product="own", threads=1)}[name]
        fn = lambda: numba_cpu.scan_numba(xp, x, h0, Wx, Wh, b, **opts, **kw)  # noqa: E731
    elif name in ("product", "projection"):
        from rnn_xp.kernels._packed import pack

        packed = numba_cpu.compiled()["packed_product"]  # out[r0:r1, c0:c1] += a[r0:r1] @ W[c0:c1].T
        if name == "product":
            hs, out, WK = np.ones((B, H), np.float32) * 0.01, np.zeros((B, H), np.float32), pack(Wh)

            def fn():
                for _ in range(T):
                    packed(out, hs, WK, 0, B, 0, H)
        else:
            x2, out, WxK = x.reshape(T * B, D), np.zeros((T * B, H), np.float32), pack(Wx)
            fn = lambda: packed(out, x2, WxK, 0, T * B, 0, H)  # noqa: E731
    elif name == "blocked product":
        blocked = numba_cpu.compiled()["project_rows"]  # out[r0:r1] += a[r0:r1] @ W.T, register-blocked
        hs, out = np.ones((B, H), np.float32) * 0.01, np.zeros((B, H), np.float32)

        def fn():
            for _ in range(T):
                blocked(out, hs, Wh, 0, B)
    else:  # the per-step products on OpenBLAS's threads
        hs, out, WhT = np.ones((B, H), np.float32) * 0.01, np.zeros((B, H), np.float32), np.ascontiguousarray(Wh.T)

        def fn():
            for _ in range(T):
                np.matmul(hs, WhT, out=out)

    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first three sizes")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="JSON file to write")
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)  # name B T D H repeats: one figure, in a child
    args = parser.parse_args(argv)
    if args.one:
        name, *nums = args.one
        print(_figure(name.replace("_", " "), *map(int, nums)))
        return 0
    from rnn_xp.bench.report import table, write_rows

    sizes = QUICK if args.quick else SIZES
    rows, n, total = [], 0, len(sizes) * len(FIGURES)
    for size in sizes:
        row = {"size": list(size)}
        for name in FIGURES:
            n += 1
            print(f"[{n}/{total}] {size} {name}", file=sys.stderr, flush=True)
            cmd = [sys.executable, os.path.abspath(__file__), "--one", name.replace(" ", "_"), *map(str, size),
                   str(args.repeats)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row[name] = float(out.stdout.strip().splitlines()[-1]) * 1e3
        row["rest"] = row["own 1 thread"] - row["product"] - row["projection"]
        B, T, D, H = size
        flops = 2 * T * B * H * H  # the per-step products, in GFLOP/s below (ms -> 1e-3 s)
        row["product GFLOP/s"] = flops / row["product"] / 1e6
        row["blocked GFLOP/s"] = flops / row["blocked product"] / 1e6
        rows.append(row)
    rates = ["product GFLOP/s", "blocked GFLOP/s"]
    head = ["(B, T, D, H)", *FIGURES, "rest", *rates, "own / numpy", "own / blas"]
    print(table(head, [[str(tuple(r["size"]))] + [f"{r[k]:.3g}" for k in (*FIGURES, "rest")]
                       + [f"{r[k]:.0f}" for k in rates]
                       + [f"{r['own'] / r['numpy']:.2f}", f"{r['own'] / r['blas']:.2f}"] for r in rows]))  # fmt: skip
    if args.out:
        write_rows(args.out, "ms", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
