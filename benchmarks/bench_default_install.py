"""An install of rnn_xp against torch or JAX, before and after a change (``--before DIR``).

Issue 29's third goal: the default install (NumPy + array-api-compat, the
NumPy loop on NumPy's own BLAS) at least as fast as torch.nn.RNN at every
size with B <= 16; and its second, with ``--install fast --baseline jax``:
the ``fast`` extras faster than JAX's ``lax.scan``. This VM's run-to-run
spread is as large as the effects, so the contenders run in rounds that
alternate, every figure in a process of its own (``rnn_xp.bench.isolated``'s
worker, 2 threads, float32): the baseline (``torch.nn.RNN``, or rnn_xp on
JAX), rnn_xp from this checkout, and rnn_xp from ``--before`` (another
checkout, for example a ``git worktree`` of the commit before). Each figure
is the median over ``--rounds`` of the worker's median time. ``--sizes``:
the CPU and small-batch grids' sizes with ``B <= 16`` (the default), or all
of them; ``--cell lstm`` or ``gru``: the gated cell's forward on the CPU
grid, against torch.nn.LSTM / GRU or rnn_xp on JAX (``--kind
forward-backward``: the forward and the backward of the gated suites). The table on stdout, progress on stderr, JSON into ``--out``
(docs/cpu-kernels.md, "The default install's product").
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)

BASELINES = {"torch": "torch.nn.RNN", "jax": "rnn_xp jax (lax.scan)"}
# --install: the names of rnn_xp.bench.isolated.INSTALLS, shortened
INSTALL_NAMES = {"default": "rnn_xp numpy: default install", "numba": "rnn_xp numpy: numba extra",
                 "mkl": "rnn_xp numpy: mkl extra", "fast": "rnn_xp numpy: numba + mkl extras"}  # fmt: skip


def _spawn(cwd, name, size, env, cell="rnn", kind="forward", budget_s=0.25):
    spec = {"kind": kind, "name": name, "size": list(size), "threads": 2, "rounds": 7, "budget_s": budget_s,
            "leak": 1.0, "cell": cell}  # fmt: skip
    env = dict(os.environ, PYTHONPATH=cwd, **env)
    proc = subprocess.run([sys.executable, "-m", "rnn_xp.bench", "--worker", json.dumps(spec)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600, check=True)  # fmt: skip
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])["seconds"] * 1e3


def main(argv=None):
    from rnn_xp.bench import CPU_GRID, SMALL_BATCH_GRID, gated
    from rnn_xp.bench.isolated import FORWARD, GATED, INSTALLS
    from rnn_xp.bench.report import table, write_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="another checkout of rnn_xp (left out if not given)")
    parser.add_argument("--install", choices=sorted(INSTALL_NAMES), default="default",
                        help="which install of rnn_xp: default, numba, mkl, or fast (numba + mkl)")
    parser.add_argument("--baseline", choices=sorted(BASELINES), default="torch")
    parser.add_argument("--sizes", choices=("b16", "all"), default="b16",
                        help="b16: the grids' sizes with B <= 16; all: every size of both grids")
    parser.add_argument("--cell", choices=("rnn", *gated.GATES), default="rnn",
                        help="rnn (both grids), or lstm / gru (the CPU grid; the baseline torch.nn.LSTM / GRU)")
    parser.add_argument("--kind", choices=("forward", "forward-backward"), default="forward",
                        help="forward-backward: the gated cells' forward and backward (with --cell lstm or gru)")
    parser.add_argument("--size", action="append", default=None, metavar="B,T,D,H",
                        help="time this size only (repeatable; instead of --sizes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.25,
                        help="seconds of calls each worker process times, after three warm-up calls (default 0.25)")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        chosen = None if args.size is None else [tuple(int(v) for v in s.split(",")) for s in args.size]
    except ValueError:
        parser.error(f"--size takes B,T,D,H as four integers; got {args.size}")
    if chosen is not None and any(len(s) != 4 or min(s) < 1 for s in chosen):
        parser.error(f"--size takes B,T,D,H as four positive integers; got {args.size}")
    if args.budget <= 0:
        parser.error(f"--budget must be positive; got {args.budget}")
    if args.kind != "forward" and args.cell == "rnn":
        parser.error("--kind forward-backward is timed for --cell lstm or gru")
    grid = CPU_GRID if args.cell != "rnn" else CPU_GRID + SMALL_BATCH_GRID
    sizes = chosen or [tuple(s) for s in grid if args.sizes == "all" or s[0] <= 16]
    table_ = FORWARD if args.cell == "rnn" else GATED[args.cell]
    base = BASELINES[args.baseline] if args.cell == "rnn" else \
        {"torch": gated.BASELINES[args.cell], "jax": gated.JAX}[args.baseline]  # fmt: skip
    install = INSTALL_NAMES[args.install]
    after, before = f"{args.install} install", f"{args.install} install, before"
    runs = [(base, ROOT, base, table_[base].env), (after, ROOT, install, INSTALLS[install])]
    if args.before:
        runs.append((before, os.path.abspath(args.before), install, INSTALLS[install]))
    times = {(s, label): [] for s in sizes for label, *_ in runs}
    n, total = 0, args.rounds * len(sizes) * len(runs)
    for _ in range(args.rounds):
        for size in sizes:
            for label, cwd, name, env in runs:
                n += 1
                print(f"[{n}/{total}] {size} {label}", file=sys.stderr, flush=True)
                times[size, label].append(_spawn(cwd, name, size, env, args.cell, args.kind, args.budget))
    rows = []
    for size in sizes:
        row = {"size": list(size), **{label: statistics.median(times[size, label]) for label, *_ in runs}}
        row["all"] = {label: times[size, label] for label, *_ in runs}
        rows.append(row)
    labels = [label for label, *_ in runs]
    short = args.baseline
    head = ["(B, T, D, H)", *(f"{k} ms" for k in labels), f"after / {short}"] + \
        ([f"before / {short}"] if args.before else [])  # fmt: skip
    print(table(head, [[str(tuple(r["size"]))] + [f"{r[k]:.3g}" for k in labels] + [f"{r[after] / r[base]:.2f}"]
                       + ([f"{r[before] / r[base]:.2f}"] if args.before else []) for r in rows]))  # fmt: skip
    if args.out:
        write_rows(args.out, "ms", rows, rounds=args.rounds, install=install, baseline=base, cell=args.cell,
                   kind=args.kind, budget_s=args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
