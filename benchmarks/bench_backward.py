"""The backward pass (BPTT) on the CPU grid: rnn_xp's NumPy loop against torch autograd.

For each size of the CPU grid, with the same float32 weights and upstream
gradient ``dh``, it times:

- ``torch.nn.RNN`` backward: ``torch.autograd.grad`` of the forward's output
  with respect to the input, ``h0`` and the weights, on a graph kept from one
  forward (``retain_graph=True``), so only the backward is timed;
- ``rnn_backward`` on NumPy (the in-place loop, ``_inplace_backward``);
- ``backward_portable`` on NumPy (the Array API loop every other library runs);
- forward + backward, rnn_xp (NumPy) and torch, for a training step's cost.

Every gradient is checked against torch's before timing. Rounds are
interleaved and shuffled, each batch after 0.2 s idle time, medians reported
(as in ``python -m rnn_xp bench``). Run from the repository root::

    python benchmarks/bench_backward.py           # writes benchmarks/results/backward-<cpu>.json
    python benchmarks/bench_backward.py --quick   # two sizes, fewer rounds, nothing written
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import rnn_xp  # noqa: E402
from rnn_xp import bench  # noqa: E402
from rnn_xp.kernels.portable import backward_portable  # noqa: E402

TORCH_BWD = "torch.nn.RNN backward"
FAST = "rnn_xp rnn_backward (numpy)"
PORTABLE = "rnn_xp backward (portable, numpy)"
TORCH_STEP = "torch.nn.RNN forward + backward"
FAST_STEP = "rnn_xp forward + backward (numpy)"


def contenders(B, T, D, H):
    """``{name: fn}`` and the torch gradients ``(dx, dWx, dWh, db)`` to check against."""
    import array_api_compat.numpy as xp

    x, h0, Wx, Wh, b = bench.problem(B, T, D, H)
    dh = np.random.default_rng(1).standard_normal((T, B, H), dtype=np.float32)
    rnn = bench.torch_baseline(Wx, Wh, b)
    tx = torch.from_numpy(x).clone().requires_grad_(True)
    th0 = torch.from_numpy(h0)[None].clone().requires_grad_(True)
    tdh = torch.from_numpy(dh)
    inputs = [tx, th0, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0]
    out, _ = rnn(tx, th0)

    def torch_backward():
        return torch.autograd.grad(out, inputs, tdh, retain_graph=True)

    def torch_step():
        o, _ = rnn(tx, th0)
        return torch.autograd.grad(o, inputs, tdh)

    h = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)

    def fast():
        return rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, h)

    def portable():
        return backward_portable(xp, dh, x, h0, Wx, Wh, h, None, nonlinearity="tanh", lengths=None,
                                 reverse=False, leak=1.0)  # fmt: skip

    def fast_step():
        hh = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
        return rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, hh)

    want = [g.detach().numpy() for g in torch_backward()]
    want = [want[0], want[1][0], want[2], want[3], want[4]]  # dx, dh0, dWx, dWh, db
    for name, fn in ((FAST, fast), (PORTABLE, portable), (FAST_STEP, fast_step)):
        for got, w, what in zip(fn(), want, ("dx", "dh0", "dWx", "dWh", "db")):
            scale = float(np.max(np.abs(w))) or 1.0
            err = float(np.max(np.abs(np.asarray(got) - w))) / scale
            assert err < 1e-3, f"{name}: {what} differs from torch by {err:.2e} (relative to its largest value)"
    return {TORCH_BWD: torch_backward, FAST: fast, PORTABLE: portable, TORCH_STEP: torch_step,
            FAST_STEP: fast_step}  # fmt: skip


def measure(grid, rounds, budget_s, progress):
    records = []
    for B, T, D, H in grid:
        cands = contenders(B, T, D, H)
        n = {name: bench.calls_per_round(bench.time_per_call(fn, bench.no_sync, 1), budget_s, rounds, most=100)
             for name, fn in cands.items()}  # fmt: skip
        times = {name: [] for name in cands}
        for _ in range(rounds):
            order = list(cands)
            random.shuffle(order)
            for name in order:
                time.sleep(bench.SETTLE_S)
                times[name].append(bench.time_per_call(cands[name], bench.no_sync, n[name]))
            progress.step(f"(B,T,D,H)=({B},{T},{D},{H})")
        med = {name: float(np.median(ts)) for name, ts in times.items()}
        records.append({"B": B, "T": T, "D": D, "H": H, "results": {
            name: {"seconds": med[name], "calls_per_round": n[name],
                   "ratio_to_torch": med[name] / med[TORCH_STEP if "forward" in name else TORCH_BWD]}
            for name in cands}})  # fmt: skip
    return records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two sizes, 3 rounds, nothing written")
    ap.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (default 2)")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    limiter = threadpool_limits(limits=args.threads, user_api="blas")
    grid = bench.CPU_GRID[:2] if args.quick else bench.CPU_GRID
    rounds, budget = (3, 0.05) if args.quick else (7, 0.25)
    random.seed(0)
    info = bench.machine_info(args.threads)
    progress = bench.Progress(len(grid) * rounds)
    records = measure(grid, rounds, budget, progress)
    progress.close()
    limiter.restore_original_limits()
    print(f"\n{'(B, T, D, H)':<22}{'contender':<36}{'ms':>10}{'ratio to torch':>16}")
    for rec in records:
        size = f"({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']})"
        for name, r in rec["results"].items():
            print(f"{size:<22}{name:<36}{r['seconds'] * 1e3:>10.3f}{r['ratio_to_torch']:>16.2f}")
            size = ""
    print("(ratio: backward rows to torch's backward, forward + backward rows to torch's forward + backward)")
    if not args.quick:
        path = ROOT / "benchmarks" / "results" / f"backward-{bench.cpu_tag(info['cpu_model'])}.json"
        path.write_text(json.dumps({"machine": info, "rounds": rounds, "grid": records}, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
