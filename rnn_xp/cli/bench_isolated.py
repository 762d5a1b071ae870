"""``python -m rnn_xp bench --isolated``: every contender timed in a process of its own.

A user runs one library. Timed side by side in one process (``bench``'s
method), each library's idle thread pool still spins on the cores another
one is using; here each (contender, size) is a fresh ``python`` process that
imports only what that contender needs, sets the thread count, warms up,
and times ``rounds`` rounds of back-to-back calls (the median per call is
reported). The in-process method is run too, size by size in its own
process, so both ratios stand side by side.

Suites (``--suite``, all by default):

``cpu``           the CPU grid: torch.nn.RNN, JAX's lax.scan, and rnn_xp on NumPy as
                  each install runs it: the default install (the NumPy loop on
                  OpenBLAS), with the ``numba`` extra, with the ``mkl`` extra, with both.
``small-batch``   B in {1, 4, 8}, H in {256, 512, 1024}, T = 200, the same contenders.
``backward``      ``rnn_backward`` against torch autograd's backward through
                  torch.nn.RNN (the backward call alone), on the CPU grid.
``reservoir``     one long sequence (B = 1, leak 0.3, D = 8, T = 10^4 or ``--long``
                  10^5), H from 100 to 2000: reservoirpy's Reservoir (same dense
                  weights, same leak) against rnn_xp.

The results file records the CPU model, the BLAS libraries, threads and
library versions; each contender's process reports its own versions. Every
contender's final state (forward) or ``dh0`` (backward) is compared with the
default install's before its time counts (``agrees``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from . import bench as _bench

SUITES = ("cpu", "small-batch", "backward", "reservoir")
RESERVOIR_H = (100, 200, 500, 1000, 2000)
LEAK = 0.3

# contender -> (environment, what it runs); the environment selects the install it stands for
_INSTALLS = {
    "rnn_xp numpy: default install": {"RNN_XP_MKL": "0", "RNN_XP_NUMBA": "0"},
    "rnn_xp numpy: numba extra": {"RNN_XP_MKL": "0", "RNN_XP_NUMBA": "auto"},
    "rnn_xp numpy: mkl extra": {"RNN_XP_MKL": "auto", "RNN_XP_NUMBA": "0"},
    "rnn_xp numpy: numba + mkl extras": {"RNN_XP_MKL": "auto", "RNN_XP_NUMBA": "auto"},
}
REFERENCE = "rnn_xp numpy: default install"
FORWARD = {"torch.nn.RNN": {}, "rnn_xp jax (lax.scan)": {"RNN_XP_MKL": "0"}, **_INSTALLS}
BACKWARD = {"torch autograd (backward only)": {}, **_INSTALLS}
RESERVOIR = {"reservoirpy Reservoir": {"RNN_XP_MKL": "0"},
             "rnn_xp numpy: default install": _INSTALLS["rnn_xp numpy: default install"],
             "rnn_xp numpy: numba extra": _INSTALLS["rnn_xp numpy: numba extra"]}  # fmt: skip


# -- the worker: one contender, one size, in this process ----------------------------------------


def _limit_threads(threads):
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        pass


def _timed(fn, rounds, budget_s):
    """``(median, min)`` seconds per call over ``rounds`` rounds filling about ``budget_s`` in all."""
    fn()
    fn()  # warm: compiled, caches filled
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    n = max(1, min(500, int(budget_s / rounds / max(one, 1e-7))))
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t0) / n)
    return float(np.median(per)), float(np.min(per)), n


def _forward_fn(name, x, h0, Wx, Wh, b, leak):
    """``fn() -> final state of sequence 0`` (a NumPy vector) for one forward contender."""
    if name == "torch.nn.RNN":
        import torch

        rnn = _bench.torch_baseline(Wx, Wh, b)
        tx, th0 = torch.from_numpy(x), torch.from_numpy(h0)[None]

        def run():
            with torch.no_grad():
                return rnn(tx, th0)[0]

        return run, lambda r: r[-1, 0].numpy()
    if name == "reservoirpy Reservoir":
        from reservoirpy.nodes import Reservoir

        res = Reservoir(lr=leak, W=Wh, Win=Wx, bias=b, activation="tanh", dtype=np.float32)
        u = x[:, 0, :]  # (T, D): one sequence
        res.run(u[:1])  # initialises the node (reset needs its state)

        def run():
            res.reset()
            return res.run(u)

        return run, lambda r: np.asarray(r[-1], dtype=np.float32)
    import rnn_xp

    if name.startswith("rnn_xp jax"):
        import jax
        import jax.numpy as jnp

        args = [jnp.asarray(a) for a in (x, h0, Wx, Wh, b)]
        return (lambda: jax.block_until_ready(rnn_xp.rnn_forward(*args, leak=leak))), lambda r: np.asarray(r[-1, 0])
    return (lambda: rnn_xp.rnn_forward(x, h0, Wx, Wh, b, leak=leak)), lambda r: r[-1, 0]


def _backward_fn(name, x, h0, Wx, Wh, b, dh):
    if name.startswith("torch"):
        import torch

        rnn = _bench.torch_baseline(Wx, Wh, b)
        tx = torch.from_numpy(x).requires_grad_()
        th0 = torch.from_numpy(h0)[None].requires_grad_()
        out = rnn(tx, th0)[0]
        tdh = torch.from_numpy(dh)
        inputs = [tx, th0, *rnn.parameters()]

        def run():
            return torch.autograd.grad(out, inputs, tdh, retain_graph=True)

        return run, lambda r: r[1][0, 0].numpy()
    import rnn_xp

    h_seq = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)

    def run():
        return rnn_xp.rnn_backward(dh, x, h0, Wx, Wh, b, h_seq)

    return run, lambda r: r.dh0[0]


def worker(spec):
    """Time one contender at one size in this process; returns a JSON-able dict."""
    threads = spec["threads"]
    if spec["kind"] == "gemm":
        _limit_threads(threads)
        return {"gemm": _bench.gemm_rate(2048), "machine": _bench.machine_info(threads)}
    if spec["kind"] == "inprocess":  # bench's own method, one size, in this process
        return _inprocess(spec)
    B, T, D, H = spec["size"]
    name = spec["name"]
    if name not in {**FORWARD, **BACKWARD, **RESERVOIR}:
        raise ValueError(f"unknown contender {name!r}")
    leak = spec.get("leak", 1.0)
    if name.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
    _limit_threads(threads)
    x, h0, Wx, Wh, b = _bench._weights(B, T, D, H)
    if spec["kind"] == "backward":
        dh = np.random.default_rng(1).standard_normal((T, B, H), dtype=np.float32)
        fn, fingerprint = _backward_fn(name, x, h0, Wx, Wh, b, dh)
    else:
        fn, fingerprint = _forward_fn(name, x, h0, Wx, Wh, b, leak)
    seconds, seconds_min, n = _timed(fn, spec["rounds"], spec["budget_s"])
    info = {"seconds": seconds, "seconds_min": seconds_min, "calls_per_round": n,
            "fingerprint": [float(v) for v in np.asarray(fingerprint(fn()), dtype=np.float64)]}  # fmt: skip
    info["versions"] = {m: getattr(sys.modules[m], "__version__", "?") for m in
                        ("numpy", "torch", "jax", "numba", "reservoirpy") if m in sys.modules}  # fmt: skip
    from ..kernels import mkl, numba_cpu

    info["mkl"] = mkl.status()
    info["numba"] = "in use" if numba_cpu.available() and numba_cpu.mode() != "off" else \
        ("switched off" if numba_cpu.available() else numba_cpu.why_not())  # fmt: skip
    return info


def _inprocess(spec):
    """bench's method (contenders interleaved in one process, idle gaps) for one size: the ratios."""
    import random

    random.seed(0)
    try:
        import torch

        torch.set_num_threads(spec["threads"])
    except ImportError:
        pass
    _limit_threads(spec["threads"])
    backends = [b for b in ("numpy", "jax") if b in spec["backends"]]
    rec = _bench.bench_grid([tuple(spec["size"])], backends=backends, rounds=spec["rounds"],
                            budget_s=spec["budget_s"])[0]  # fmt: skip
    return {"results": {k: {"seconds": v["seconds"], "ratio_to_baseline": v["ratio_to_baseline"]}
                        for k, v in rec["results"].items()}}  # fmt: skip


# -- the parent: one process per (contender, size) -----------------------------------------------


def _spawn(spec, env_extra, timeout_s):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-m", "rnn_xp.cli.bench_isolated", "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout_s)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[-300:]}
    return json.loads(lines[-1])


def _grid(suite, long):
    if suite == "cpu" or suite == "backward":
        return list(_bench.CPU_GRID)
    if suite == "small-batch":
        return list(_bench.SMALL_BATCH_GRID)
    return [(1, 100_000 if long else 10_000, 8, H) for H in RESERVOIR_H]


def _contenders(suite):
    return {"cpu": FORWARD, "small-batch": FORWARD, "backward": BACKWARD, "reservoir": RESERVOIR}[suite]


def run(*, suites=SUITES, threads=2, quick=False, long=False, out_dir="benchmarks/results", inprocess=True,
        stream=None, progress_stream=None):  # fmt: skip
    """Run the suites, print the tables, write the JSON (and a PNG per suite); return the result."""
    stream = sys.stdout if stream is None else stream
    rounds, budget = (3, 0.3) if quick else (7, 2.0)
    plan = []
    for suite in suites:
        for size in _grid(suite, long):
            if quick and suite != "reservoir":
                size = size if size[3] <= 256 else None
            if quick and suite == "reservoir":
                size = (1, 2000, 8, size[3]) if size[3] <= 500 else None
            if size is None:
                continue
            for name, env in _contenders(suite).items():
                plan.append((suite, tuple(size), name, env))
            if inprocess and suite in ("cpu", "small-batch"):
                plan.append((suite, tuple(size), "in-process", {}))
    progress = _bench.Progress(len(plan) + 1, progress_stream)
    gemm = _spawn({"kind": "gemm", "threads": threads}, {}, 600)
    progress.step("GEMM rate")
    machine = gemm.get("machine", _bench.machine_info(threads))
    result = {"method": "isolated: one process per contender and size", "machine": machine,
              "gemm": gemm.get("gemm"), "threads": threads, "quick": quick, "suites": {}}  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    stem = _bench._slug(f"{machine['host']}-{_bench.cpu_tag(machine['cpu_model'])}-isolated") + ("-quick" if quick else "")
    path = os.path.join(out_dir, stem + ".json")
    for suite, size, name, env in plan:
        kind = "backward" if suite == "backward" else "forward"
        if name == "in-process":
            spec = {"kind": "inprocess", "size": size, "threads": threads, "rounds": 3 if quick else 5,
                    "budget_s": 0.05 if quick else 0.25, "backends": ["numpy", "jax"]}  # fmt: skip
        else:
            spec = {"kind": kind, "name": name, "size": size, "threads": threads, "rounds": rounds,
                    "budget_s": budget, "leak": LEAK if suite == "reservoir" else 1.0, "env": env}  # fmt: skip
        try:
            got = _spawn(spec, env, 1800)
        except subprocess.TimeoutExpired:
            got = {"error": "timed out"}
        records = result["suites"].setdefault(suite, [])
        rec = next((r for r in records if (r["B"], r["T"], r["D"], r["H"]) == size), None)
        if rec is None:
            B, T, D, H = size
            flops = 2.0 * T * B * H * (D + H) * (2 if kind == "backward" else 1)  # backward: about twice
            rec = {"B": B, "T": T, "D": D, "H": H, "gflop": flops / 1e9, "results": {}}
            records.append(rec)
        if name == "in-process":
            rec["in_process"] = got
        else:
            rec["results"][name] = got
        progress.step(f"{suite} {size} {name}")
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)
    progress.close()
    _finish(result)
    print_tables(result, stream)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    for suite, records in result["suites"].items():
        try:
            _bench.chart({"grid": records, "machine": machine}, os.path.join(out_dir, f"{stem}-{suite}.png"))
        except (ImportError, KeyError, IndexError):
            pass
    print(f"\nwrote {path}", file=stream)
    return result


def _finish(result):
    """Ratios to the suite's baseline (its first contender), GFLOP/s, % of GEMM, agreement."""
    peak = max((result.get("gemm") or {}).get("gflops", {"none": float("nan")}).values())
    for suite, records in result["suites"].items():
        base_name = next(iter(_contenders(suite)))
        for rec in records:
            res = rec["results"]
            base = res.get(base_name, {}).get("seconds")
            ref = res.get(REFERENCE, {}).get("fingerprint")
            ordered = {base_name: res.pop(base_name)} if base_name in res else {}
            ordered.update(res)
            rec["results"] = ordered
            for r in ordered.values():
                if "seconds" not in r:
                    continue
                r["ratio_to_baseline"] = r["seconds"] / base if base else float("nan")
                r["gflops"] = rec["gflop"] / r["seconds"]
                r["percent_of_gemm"] = 100 * r["gflops"] / peak
                fp = r.get("fingerprint")
                if ref is not None and fp is not None and len(fp) == len(ref):
                    diff = float(np.max(np.abs(np.asarray(fp) - np.asarray(ref)))) if fp else 0.0
                    r["max_abs_diff_vs_default"] = diff
                    r["agrees"] = diff <= (1e-2 if suite == "backward" else 1e-3)


def print_tables(result, stream=None):
    """One table per suite: ms, ratio to its baseline, GFLOP/s, % of the GEMM rate, agreement."""
    stream = sys.stdout if stream is None else stream
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    m = result["machine"]
    p(f"\nCPU {m.get('cpu_model')}, {result['threads']} threads; method: {result['method']}")
    gemm = (result.get("gemm") or {}).get("gflops", {})
    p("float32 2048^3 GEMM: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gemm.items()))
    for suite, records in result["suites"].items():
        base = next(iter(_contenders(suite)))
        p(f"\n[{suite}] ratio = time / {base} (below 1 is faster)")
        p(f"{'(B, T, D, H)':<24}{'contender':<36}{'ms':>11}{'ratio':>8}{'GFLOP/s':>9}{'% GEMM':>8}  agrees")
        for rec in records:
            size = f"({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']})"
            for name, r in rec["results"].items():
                if "seconds" not in r:
                    p(f"{size:<24}{name:<36}  not run: {r.get('error', '?')[:60]}")
                else:
                    agrees = {True: "yes", False: "NO"}.get(r.get("agrees"), "-")
                    p(f"{size:<24}{name:<36}{r['seconds'] * 1e3:>11.3f}{r['ratio_to_baseline']:>8.2f}"
                      f"{r['gflops']:>9.1f}{r['percent_of_gemm']:>7.0f}%  {agrees}")  # fmt: skip
                size = ""
            inp = rec.get("in_process", {}).get("results")
            if inp:
                fast = inp.get(_bench.FAST, {}).get("ratio_to_baseline")
                jax = inp.get("rnn_xp jax (lax.scan)", {}).get("ratio_to_baseline")
                p(f"{'':<24}{'in one process (bench method):':<36} rnn_xp numpy {fast:.2f}"
                  + (f", jax {jax:.2f}" if jax is not None else "") + " of torch")  # fmt: skip
    _print_goals(result, p)


def _print_goals(result, p):
    """The issue's goals, checked against what was measured (no goal is asserted: the table says)."""
    targets = {(1, 200, 32, 64): 0.35, (16, 100, 64, 128): 0.35, (32, 100, 128, 256): 0.7,
               (64, 50, 512, 1024): 0.95}  # fmt: skip
    p("\ngoals (float32, each contender in its own process):")
    for suite in ("cpu", "small-batch"):
        for rec in result["suites"].get(suite, []):
            size = (rec["B"], rec["T"], rec["D"], rec["H"])
            res = rec["results"]
            jax = res.get("rnn_xp jax (lax.scan)", {}).get("seconds")
            for name in _INSTALLS:
                r = res.get(name, {})
                if "seconds" not in r:
                    continue
                t = targets.get(size) if suite == "cpu" else 1.0
                line = f"  {str(size):<22}{name:<36} ratio {r['ratio_to_baseline']:.2f}"
                line += f" (goal <= {t})" if t else ""
                line += f", vs JAX {r['seconds'] / jax:.2f}" if jax else ""
                line += f", {r['percent_of_gemm']:.0f}% of GEMM"
                p(line)
    for rec in result["suites"].get("backward", []):
        for name in _INSTALLS:
            r = rec["results"].get(name, {})
            if "seconds" in r:
                p(f"  backward {str((rec['B'], rec['T'], rec['D'], rec['H'])):<22}{name:<36} "
                  f"ratio {r['ratio_to_baseline']:.2f} (goal <= 0.7 at the small and middle sizes)")  # fmt: skip
    for rec in result["suites"].get("reservoir", []):
        rp = rec["results"].get("reservoirpy Reservoir", {}).get("seconds")
        for name in ("rnn_xp numpy: default install", "rnn_xp numpy: numba extra"):
            r = rec["results"].get(name, {})
            if rp and "seconds" in r:
                p(f"  reservoir H={rec['H']:<5} T={rec['T']:<7}{name:<36} {rp / r['seconds']:.1f}x reservoirpy's speed "
                  f"(goal >= 3x at H <= 500, never below 1x)")  # fmt: skip


def results_markdown(result):
    """The results as Markdown tables (the docs' pages): one per suite, times in ms.

    Every contender of a suite is a column, then its ratio to the suite's
    baseline (its first contender); for the forward suites also the best
    rnn_xp install's share of the measured GEMM rate and the in-process ratio.
    """
    m = result["machine"]
    gemm = (result.get("gemm") or {}).get("gflops", {})
    lines = [f"CPU: {m.get('cpu_model')}, {result['threads']} threads, float32; "
             + "GEMM 2048^3: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in gemm.items())]  # fmt: skip
    for suite, records in result["suites"].items():
        if not records:
            continue
        names = list(records[0]["results"])
        base = names[0]
        short = [n.replace("rnn_xp numpy: ", "").replace("rnn_xp ", "") for n in names]
        head = ["(B, T, D, H)", short[0] + " ms"]
        for n in short[1:]:
            head += [n + " ms", "ratio"]
        fwd = suite in ("cpu", "small-batch")
        if fwd:
            head += ["best rnn_xp % of GEMM", "in one process: numpy / torch"]
        lines += ["", f"**{suite}** (ratio: time / {base}; below 1 is faster)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]  # fmt: skip
        for rec in records:
            res = rec["results"]
            row = [f"({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']})"]
            for i, n in enumerate(names):
                r = res.get(n, {})
                ms = f"{r['seconds'] * 1e3:.3g}" if "seconds" in r else "not run"
                row += [ms] if i == 0 else [ms, f"{r['ratio_to_baseline']:.2f}" if "seconds" in r else "-"]
            if fwd:
                pct = [r["percent_of_gemm"] for n, r in res.items() if n in _INSTALLS and "percent_of_gemm" in r]
                row.append(f"{max(pct):.0f}%" if pct else "-")
                inp = rec.get("in_process", {}).get("results", {})
                fast = inp.get(_bench.FAST, {}).get("ratio_to_baseline")
                row.append(f"{fast:.2f}" if fast is not None else "-")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("--suite", action="append", choices=SUITES,
                        help="with --isolated: which suite (repeatable; default: all of them)")
    parser.add_argument("--long", action="store_true",
                        help="with --isolated: the reservoir suite with T = 10^5 (default: off, T = 10^4)")
    parser.add_argument("--no-inprocess", action="store_true",
                        help="with --isolated: skip the in-process method's ratios (default: off, both methods)")


def main_from_args(args) -> int:
    """``python -m rnn_xp bench --isolated ...``: run, and return 1 if a contender disagreed."""
    result = run(suites=tuple(args.suite or SUITES), threads=args.threads, quick=args.quick, long=args.long,
                 out_dir=args.out, inprocess=not args.no_inprocess)  # fmt: skip
    ok = all(r.get("agrees", True) for recs in result["suites"].values() for rec in recs
             for r in rec["results"].values())  # fmt: skip
    return 0 if ok else 1


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rnn_xp.cli.bench_isolated", description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, the smaller sizes only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--markdown", metavar="RESULTS", help="print a results file's tables as Markdown")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as f:
            result = json.load(f)
        _finish(result)  # ratios again (a partial file has none yet)
        print(results_markdown(result))
        return 0
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    return main_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
