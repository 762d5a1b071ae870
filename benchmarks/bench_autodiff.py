"""Training steps inside the frameworks: rnn_xp's registered backward against each framework's own RNN.

For each size of the CPU grid, float32, it times one training step, the
forward and the gradient of ``sum(output)`` with respect to the weights:

torch (``torch.set_num_threads(--threads)``)
    ``torch.nn.RNN``, the baseline; ``rnn_xp.RNN`` on torch tensors (its
    backward is rnn_xp's, one ``torch.autograd.Function``); and, for
    reference, ``rnn_xp.RNN`` with ``RNN_XP_AUTODIFF=framework`` (autograd
    records the loop step by step). All three hold the same weights.
JAX
    ``jax.jit(jax.grad(...))`` of a plain ``lax.scan`` RNN written the
    obvious way, the baseline; the same through ``rnn_xp.rnn_forward`` (its
    gradient is rnn_xp's backward, a ``jax.custom_vjp``); and, for reference,
    ``rnn_xp.rnn_forward`` with ``RNN_XP_AUTODIFF=framework``.

and the peak memory of one step at T = 1,000 for every (B, D, H) of the grid.

Every (contender, size) runs in a process of its own, so that one
contender's allocator state, caches and threads never meet another's. The
rounds are interleaved: each round starts one process per contender, in a
shuffled order, 0.2 s apart; the process times its step (after a warm-up
call, which also compiles) and reports seconds per step; the medians over
rounds are reported. Memory, torch: the rise of the process's peak resident
set (``VmHWM``, reset through ``/proc/self/clear_refs`` after the warm-up;
the ``ru_maxrss`` rise elsewhere) over its resident set before the step,
with glibc told to map every block from 64 KiB on its own
(``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident set.
Memory, JAX: the temporary and output bytes of the compiled step, from XLA's
buffer assignment (``memory_analysis``), as XLA's CPU runtime keeps that
arena between calls.
Gradients are checked against the baseline's before anything is timed.

Run from the repository root, on a quiet machine::

    python benchmarks/bench_autodiff.py            # writes benchmarks/results/autodiff-<cpu>.json
    python benchmarks/bench_autodiff.py --quick    # tiny sizes, 1 round, nothing written
    python benchmarks/bench_autodiff.py --markdown benchmarks/results/autodiff-<cpu>.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = [(1, 200, 32, 64), (16, 100, 64, 128), (32, 100, 128, 256), (64, 50, 512, 1024)]  # (B, T, D, H)
QUICK_GRID = [(2, 8, 3, 4), (4, 12, 8, 16)]
MEMORY_T = 1000
MIN_BASE_BYTES = 100_000  # a baseline's peak rise below this gives no memory ratio in the tables
SETTLE_S = 0.2

TORCH_BASE = "torch.nn.RNN"
TORCH_OURS = "rnn_xp.RNN (torch, rnn_xp backward)"
TORCH_FRAMEWORK = "rnn_xp.RNN (torch, autograd of the loop)"
JAX_BASE = "jax.grad of a plain lax.scan"
JAX_OURS = "jax.grad through rnn_xp (rnn_xp backward)"
JAX_FRAMEWORK = "jax.grad through rnn_xp (JAX autodiff of the scan)"
CONTENDERS = {  # name: (library, baseline)
    TORCH_BASE: ("torch", TORCH_BASE),
    TORCH_OURS: ("torch", TORCH_BASE),
    TORCH_FRAMEWORK: ("torch", TORCH_BASE),
    JAX_BASE: ("jax", JAX_BASE),
    JAX_OURS: ("jax", JAX_BASE),
    JAX_FRAMEWORK: ("jax", JAX_BASE),
}


# -- inside a worker process: one contender, one size ------------------------------------------


def _data(B, T, D, H):
    from rnn_xp.bench import problem

    return problem(B, T, D, H)  # float32 NumPy: x (T, B, D), h0, Wx, Wh, b


def _torch_step(name, B, T, D, H):
    """``step()`` (one forward and backward; returns the weight gradients as NumPy) for a torch contender."""
    import torch

    import rnn_xp
    from rnn_xp.bench import torch_baseline

    x, h0, Wx, Wh, b = _data(B, T, D, H)
    module = torch_baseline(Wx, Wh, b)
    tx, th0 = torch.from_numpy(x), torch.from_numpy(h0)[None]
    if name == TORCH_BASE:
        params = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0]

        def forward():
            return module(tx, th0)[0]
    else:
        layer = rnn_xp.RNN.from_torch(module, xp=torch)
        params = list(layer.params.values())  # weight_ih, weight_hh, bias_ih, bias_hh
        for p in params:
            p.requires_grad_()
        if name == TORCH_FRAMEWORK:
            os.environ["RNN_XP_AUTODIFF"] = "framework"

        def forward():
            return layer(tx, th0)[0]

    def step():
        for p in params:
            p.grad = None
        forward().sum().backward()
        return [p.grad.numpy() for p in params[:3]]

    return step, lambda r: r


def _jax_step(name, B, T, D, H):
    """``step()`` and a sync for a JAX contender: ``jax.jit(jax.grad(loss))`` of the weights."""
    import jax
    import jax.numpy as jnp

    import rnn_xp

    x, h0, Wx, Wh, b = (jnp.asarray(a) for a in _data(B, T, D, H))
    if name == JAX_BASE:

        def loss(params):
            Wx, Wh, b = params

            def cell(h, x_t):
                h = jnp.tanh(x_t @ Wx.T + h @ Wh.T + b)
                return h, h

            return jnp.sum(jax.lax.scan(cell, h0, x)[1])
    else:
        if name == JAX_FRAMEWORK:
            os.environ["RNN_XP_AUTODIFF"] = "framework"

        def loss(params):
            return jnp.sum(rnn_xp.rnn_forward(x, h0, *params))

    grad = jax.jit(jax.grad(loss))
    params = (Wx, Wh, b)
    step = lambda: grad(params)  # noqa: E731
    step.memory = lambda: _xla_bytes(grad, params)
    return step, jax.block_until_ready


def _xla_bytes(fn, *args):
    """Temporary plus output bytes of a jitted function's program (XLA's buffer assignment)."""
    m = fn.lower(*args).compile().memory_analysis()
    return m.temp_size_in_bytes + m.output_size_in_bytes


def _peak_rss_reset():
    """Reset the peak resident set (Linux); True if it could be."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def worker(name, B, T, D, H, mode, budget_s, threads):
    """Run in a fresh process: time one contender at one size, or measure its peak memory."""
    library = CONTENDERS[name][0]
    if library == "torch":
        import torch

        torch.set_num_threads(threads)
        step, sync = _torch_step(name, B, T, D, H)
    else:
        step, sync = _jax_step(name, B, T, D, H)
    out = {"name": name, "B": B, "T": T, "D": D, "H": H, "mode": mode}
    if mode == "memory" and library == "jax":  # XLA's buffer assignment: compiled, not run
        out["peak_rise_bytes"] = step.memory()
        out["tool"] = "XLA memory_analysis (temp + output)"
        print(json.dumps(out))
        return
    grads = sync(step())  # warm-up: compiles, allocates, imports
    if mode == "check":
        import numpy as np

        out["grads"] = [np.asarray(g).tolist() for g in grads]
    elif mode == "time":
        t0 = time.perf_counter()
        sync(step())
        once = time.perf_counter() - t0
        n = max(1, min(200, int(budget_s / max(once, 1e-6))))
        t0 = time.perf_counter()
        for _ in range(n):
            r = step()
        sync(r)
        out["seconds"] = (time.perf_counter() - t0) / n
        out["calls"] = n
    else:  # memory, torch: the peak resident set; large blocks are mmapped, so a free returns them
        import resource

        del grads
        before_kb = _status_kb("VmRSS")
        if _peak_rss_reset():
            sync(step())
            peak_kb, tool = _status_kb("VmHWM"), "VmHWM after clear_refs"
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            sync(step())
            peak_kb, tool = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
            before_kb = max(before_kb or 0, base)
        out["peak_rise_bytes"] = (peak_kb - before_kb) * 1024
        out["tool"] = tool
    print(json.dumps(out))


# -- the driver --------------------------------------------------------------------------------


def _spawn(name, size, mode, budget_s, threads):
    B, T, D, H = size
    cmd = [sys.executable, __file__, "--worker", name, str(B), str(T), str(D), str(H), mode,
           str(budget_s), str(threads)]  # fmt: skip
    env = dict(os.environ)
    env.pop("RNN_XP_AUTODIFF", None)  # each contender sets its own
    if mode == "memory":  # glibc: every block from 64 KiB is its own mapping, unmapped when freed
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} at {size} ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(grid, names, threads):
    """Each contender's weight gradients against its baseline's, at the first size of ``grid``."""
    import numpy as np

    size = grid[0]
    grads = {name: _spawn(name, size, "check", 0, threads)["grads"] for name in names}
    for name in names:
        base = grads[CONTENDERS[name][1]]
        for g, w, what in zip(grads[name], base, ("dWx", "dWh", "db")):
            g, w = np.asarray(g), np.asarray(w)
            err = float(np.max(np.abs(g - w))) / (float(np.max(np.abs(w))) or 1.0)
            assert err < 1e-3, f"{name}: {what} differs from {CONTENDERS[name][1]} by {err:.2e}"


def measure(grid, names, rounds, budget_s, threads, memory_T):
    records = []
    for size in grid:
        times = {name: [] for name in names}
        for r in range(rounds):
            order = list(names)
            random.shuffle(order)
            for name in order:
                time.sleep(SETTLE_S)
                times[name].append(_spawn(name, size, "time", budget_s, threads)["seconds"])
            print(f"  {size} round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
        B, T, D, H = size
        records.append({"B": B, "T": T, "D": D, "H": H, "results": {
            name: {"seconds": med[name], "all_seconds": times[name],
                   "ratio_to_baseline": med[name] / med[CONTENDERS[name][1]]}
            for name in names}})  # fmt: skip
    memory = []
    for B, _, D, H in grid:
        size = (B, memory_T, D, H)
        peaks = {}
        for name in names:
            res = _spawn(name, size, "memory", 0, threads)
            peaks[name] = {"peak_rise_bytes": res["peak_rise_bytes"], "tool": res["tool"]}
        for name in names:
            peaks[name]["ratio_to_baseline"] = peaks[name]["peak_rise_bytes"] / max(
                peaks[CONTENDERS[name][1]]["peak_rise_bytes"], 1)
        memory.append({"B": B, "T": memory_T, "D": D, "H": H, "results": peaks})
        print(f"  memory {size} done", file=sys.stderr, flush=True)
    return records, memory


def markdown(result):
    """The time and memory tables of a results file, as Markdown (for docs/frameworks.md)."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, torch on {m['threads']} threads; "
        f"torch {m['versions'].get('torch')}, JAX {m['versions'].get('jax')}; float32; "
        f"medians of {result['rounds']} rounds, one process per contender and round.",
        "",
        "| (B, T, D, H) | contender | ms per step | ratio |",
        "|---|---|---:|---:|",
    ]
    for rec in result["time"]:
        size = f"({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']})"
        for name, r in rec["results"].items():
            lines.append(f"| {size} | {name} | {r['seconds'] * 1e3:.3f} | {r['ratio_to_baseline']:.2f} |")
            size = ""
    lines += ["", f"Peak memory of one step at T = {result['memory_T']:,} (torch: rise of the peak resident "
              "set; JAX: XLA's temporary and output buffers):", "",
              "| (B, D, H) | contender | MB | ratio |", "|---|---|---:|---:|"]  # fmt: skip
    tiny = False
    for rec in result["memory"]:
        size = f"({rec['B']}, {rec['D']}, {rec['H']})"
        for name, r in rec["results"].items():
            base = rec["results"].get(CONTENDERS.get(name, (None, name))[1], r)["peak_rise_bytes"]
            ratio = f"{r['ratio_to_baseline']:.2f}" if base >= MIN_BASE_BYTES else "-"
            tiny |= base < MIN_BASE_BYTES
            lines.append(f"| {size} | {name} | {r['peak_rise_bytes'] / 1e6:.1f} | {ratio} |")
            size = ""
    if tiny:
        lines += ["", f"-: no ratio where the baseline's peak rose by less than {MIN_BASE_BYTES / 1e6:.1f} MB "
                  "(within what the resident set's reuse of freed memory hides)."]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 round, nothing written")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--rounds", type=int, default=5, help="processes per contender and size (default 5)")
    ap.add_argument("--only", choices=["torch", "jax"], help="one library's contenders only")
    ap.add_argument("--markdown", metavar="RESULTS", help="print a results file's tables as Markdown")
    ap.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        name, B, T, D, H, mode, budget, threads = args.worker
        worker(name, int(B), int(T), int(D), int(H), mode, float(budget), int(threads))
        return 0
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0

    from rnn_xp import bench

    names = [n for n, (lib, _) in CONTENDERS.items() if args.only in (None, lib)]
    grid = QUICK_GRID if args.quick else GRID
    rounds, budget = (1, 0.02) if args.quick else (args.rounds, 1.0)
    memory_T = 20 if args.quick else MEMORY_T
    random.seed(0)
    import jax  # noqa: F401  (recorded in the machine's versions)
    import torch  # noqa: F401

    info = bench.machine_info(args.threads)
    start = time.perf_counter()
    check(grid, names, args.threads)
    records, memory = measure(grid, names, rounds, budget, args.threads, memory_T)
    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {"machine": info, "rounds": rounds, "memory_T": memory_T, "time": records, "memory": memory,
              "wall_seconds": time.perf_counter() - start}  # fmt: skip
    print(markdown(result))
    print(f"\n(ratio: to {TORCH_BASE} for torch rows, to {JAX_BASE} for JAX rows; "
          f"{result['wall_seconds']:.0f} s in all)")
    if not args.quick:
        path = ROOT / "benchmarks" / "results" / f"autodiff-{bench.cpu_tag(info['cpu_model'])}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
