"""The benchmark behind ``python -m rnn_xp bench`` and ``benchmarks/bench_rnn.py``.

For each size ``(B, T, D, H)`` of a grid it times, with the same float32
weights, ``torch.nn.RNN`` (the baseline), ``rnn_forward`` on every installed
backend (NumPy through its fast in-place kernel, and NumPy and JAX through the
portable loop too), and the plain per-step NumPy loop of the seed programs.
Every output is checked against torch's before it is timed.

Method: one warm-up call each, then ``rounds`` rounds; a round runs every
contender ``n`` times in a row, contenders in a shuffled order (interleaved,
so a slow spell of a shared machine hits all of them), each batch after
``SETTLE_S`` idle seconds and one untimed call; each time is per
call, read after the device has finished (``block_until_ready``, CUDA
synchronisation, Dask ``compute``); the result is the median over rounds.
The float32 matrix-product rate of the machine is measured in the same run.

Torch, JAX, Dask and CuPy are imported only when their backend is run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import sys
import time
import tracemalloc

import numpy as np

from ..kernels import mkl as _mkl

CPU_GRID = [(1, 200, 32, 64), (16, 100, 64, 128), (32, 100, 128, 256), (64, 50, 512, 1024)]
SMALL_BATCH_GRID = [(B, 200, H, H) for H in (256, 512, 1024) for B in (1, 4, 8)]
GPU_GRID = (
    [(B, 50, H, H) for H in (1760, 2048, 2560) for B in (16, 32, 64, 128)]  # DeepBench vanilla RNN
    + SMALL_BATCH_GRID
)  # fmt: skip
BASELINE = "torch.nn.RNN"
FAST = "rnn_xp numpy (in-place)"  # what rnn_forward does with NumPy arrays (oneMKL where preferred)
FAST_OPENBLAS = "rnn_xp numpy (OpenBLAS)"  # the same loop with oneMKL switched off
FAST_MKL = "rnn_xp numpy (oneMKL)"  # the same loop with oneMKL taken where it is not preferred


class Progress:
    """A one-line progress bar on stderr (no dependency).

    ``step`` advances the bar; ``note`` only says what runs now (a warm-up, a
    contender of a round, the memory section), so that a long size still
    shows something new every second or so.
    """

    def __init__(self, total, stream=None):
        self.total, self.done, self.t0 = max(total, 1), 0, time.perf_counter()
        self.stream = sys.stderr if stream is None else stream  # the stream of now, not of import time
        self.label = ""

    def step(self, label):
        self.done += 1
        self.note(label)

    def note(self, label):
        self.label = label
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"\r[{bar:<30}] {self.done}/{self.total} {elapsed:5.0f}s {label[:60]:<60}")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()


def machine_info(threads):
    """Host, CPU model, BLAS and thread pools, library versions."""
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {},
    }
    info["mkl"] = {"status": _mkl.status(), "version": _mkl.version()}  # loads it, if installed
    try:
        import threadpoolctl

        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "filepath")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = None
    for name in ("numpy", "torch", "jax", "jaxlib", "cupy", "dask", "array_api_strict", "array_api_compat"):
        mod = sys.modules.get(name)
        if mod is not None:
            info["versions"][name] = getattr(mod, "__version__", "?")
    import rnn_xp

    info["versions"]["rnn_xp"] = rnn_xp.__version__
    return info


def _cpu_model():
    return _mkl.cpuinfo("model name") or platform.processor() or "unknown"


def _time(fn, sync, n):
    """Seconds per call of ``fn`` over ``n`` calls, synchronised."""
    sync(fn())
    t0 = time.perf_counter()
    for _ in range(n):
        r = fn()
    sync(r)
    return (time.perf_counter() - t0) / n


def _nosync(r):
    return r


def gemm_rate(n=2048, rounds=5):
    """The machine's float32 matrix-product rate, GFLOP/s, NumPy (and torch if present)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    rates = {"numpy": 2 * n**3 / np.median([_time(lambda: np.matmul(a, b, out=out), _nosync, 2) for _ in range(rounds)]) / 1e9}
    if _mkl.library() is not None:
        bt = np.ascontiguousarray(b.T)
        rates["mkl"] = 2 * n**3 / np.median([_time(lambda: _mkl.gemm(a, bt, out), _nosync, 2) for _ in range(rounds)]) / 1e9
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        rates["torch"] = 2 * n**3 / np.median([_time(lambda: torch.mm(ta, tb), _nosync, 2) for _ in range(rounds)]) / 1e9
    except ImportError:
        pass
    return {"n": n, "gflops": rates}


def _weights(B, T, D, H, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    h0 = (rng.standard_normal((B, H), dtype=np.float32) * 0.5).astype(np.float32)
    Wx = (rng.standard_normal((H, D)) / math.sqrt(D)).astype(np.float32)
    Wh = (rng.standard_normal((H, H)) * 0.9 / math.sqrt(H)).astype(np.float32)
    b = (rng.standard_normal(H) * 0.1).astype(np.float32)
    return x, h0, Wx, Wh, b


def seed_loop(x, h0, Wx, Wh, b):
    """The seed programs' loop: one ``np.dot`` pair per step, the states stacked."""
    h, states = h0, []
    for x_t in x:
        h = np.tanh(np.dot(x_t, Wx.T) + np.dot(h, Wh.T) + b)
        states.append(h)
    return np.stack(states)


def torch_baseline(Wx, Wh, b):
    """``torch.nn.RNN`` (one layer, tanh, CPU) with these float32 NumPy weights; ``b`` is its
    ``bias_ih`` and ``bias_hh`` is zero (torch adds the two)."""
    import torch

    H, D = Wx.shape
    rnn = torch.nn.RNN(D, H)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(Wx))
        rnn.weight_hh_l0.copy_(torch.from_numpy(Wh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b))
        rnn.bias_hh_l0.zero_()
    return rnn


def contenders(B, T, D, H, *, backends, gpu=False):
    """``{name: (fn, sync, to_numpy)}`` for one size, all with the same weights."""
    import rnn_xp
    from ..kernels.portable import scan_portable

    x, h0, Wx, Wh, b = _weights(B, T, D, H)
    out = {}

    def portable(xp, *arrays):
        def fn():
            return scan_portable(xp, *arrays, nonlinearity="tanh", lengths=None, reverse=False,
                                 leak=1.0, return_sequences=True)[0]  # fmt: skip

        return fn

    try:
        import torch

        dev = torch.device("cuda" if gpu else "cpu")
        rnn = torch_baseline(Wx, Wh, b).to(dev)
        tx, th0 = torch.from_numpy(x).to(dev), torch.from_numpy(h0).to(dev)[None]
        tsync = torch.cuda.synchronize if gpu else (lambda: None)

        def torch_rnn():
            with torch.no_grad():
                return rnn(tx, th0)[0]

        def sync_t(r):
            tsync()
            return r

        label = "torch.nn.RNN (cuDNN)" if gpu else BASELINE
        out[label] = (torch_rnn, sync_t, lambda r: r.cpu().numpy())
        if "torch" in backends:
            targs = [torch.from_numpy(a).to(dev) for a in (x, h0, Wx, Wh, b)]
            out["rnn_xp torch" + (" cuda" if gpu else "")] = (
                lambda: rnn_xp.rnn_forward(*targs), sync_t, lambda r: r.cpu().numpy())
    except ImportError:
        pass

    if gpu:
        if "cupy" in backends:
            import cupy

            cargs = [cupy.asarray(a) for a in (x, h0, Wx, Wh, b)]

            def csync(r):
                cupy.cuda.get_current_stream().synchronize()
                return r

            from ..kernels import cupy_persistent as persistent

            def on_path(path):  # rnn_forward with the CuPy path forced (no environment change)
                def fn():
                    with persistent.forced_path(path):
                        return rnn_xp.rnn_forward(*cargs)

                return fn

            out["rnn_xp cupy (fused)"] = (on_path("fused"), csync, cupy.asnumpy)
            props = persistent.device_props(cupy.cuda.Device().id)
            if persistent.plan(B, H, 4, props) is not None:  # float32 weights, eligible size
                out["rnn_xp cupy (persistent)"] = (on_path("persistent"), csync, cupy.asnumpy)
            out["rnn_xp cupy (auto)"] = (on_path("auto"), csync, cupy.asnumpy)
        return out

    import array_api_compat.numpy as nxp

    out[FAST] = (lambda: rnn_xp.rnn_forward(x, h0, Wx, Wh, b), _nosync, np.asarray)
    if _mkl.library() is not None:  # the other BLAS of the same loop, side by side
        if _mkl.preferred():

            def openblas_only():
                with _mkl.suspended():
                    return rnn_xp.rnn_forward(x, h0, Wx, Wh, b)

            out[FAST_OPENBLAS] = (openblas_only, _nosync, np.asarray)
        else:

            def mkl_anyway():
                with _mkl.preferring(True):
                    return rnn_xp.rnn_forward(x, h0, Wx, Wh, b)

            out[FAST_MKL] = (mkl_anyway, _nosync, np.asarray)
    out["rnn_xp numpy (portable)"] = (portable(nxp, x, h0, Wx, Wh, b), _nosync, np.asarray)
    out["seed loop (numpy)"] = (lambda: seed_loop(x, h0, Wx, Wh, b), _nosync, np.asarray)
    if "jax" in backends:
        import jax
        import jax.numpy as jnp

        jargs = [jnp.asarray(a) for a in (x, h0, Wx, Wh, b)]

        def jsync(r):
            return jax.block_until_ready(r)

        out["rnn_xp jax (lax.scan)"] = (lambda: rnn_xp.rnn_forward(*jargs), jsync, np.asarray)
        out["rnn_xp jax (portable)"] = (portable(jnp, *jargs), jsync, np.asarray)
    if "array_api_strict" in backends:
        import array_api_strict as strict

        sargs = [strict.asarray(a) for a in (x, h0, Wx, Wh, b)]
        out["rnn_xp array_api_strict"] = (lambda: rnn_xp.rnn_forward(*sargs), _nosync,
                                          lambda r: np.from_dlpack(r))  # fmt: skip
    if "dask" in backends:
        import dask.array as da

        dargs = [da.from_array(a) for a in (x, h0, Wx, Wh, b)]

        def dask_fn():
            # oneMKL off: a Dask worker thread that has called oneMKL keeps state in
            # the libgomp it shares with torch, and torch's own loops then ran ~40%
            # slower on 2 cores; the baseline must not pay for another contender.
            with _mkl.suspended():
                return rnn_xp.rnn_forward(*dargs).compute()

        out["rnn_xp dask"] = (dask_fn, _nosync, np.asarray)
    return out


# Idle time before each timed batch. BLAS and OpenMP pools keep their worker
# threads spinning for a while after a call (OpenBLAS about 0.1 s); on a small
# machine the next contender would share the cores with them and be charged
# for another library's threads.
SETTLE_S = 0.2


def bench_grid(grid, *, backends, rounds, budget_s, gpu=False, progress=None, settle_s=None, on_record=None):
    """Time every contender on every size; returns a list of per-size records.

    ``on_record(records)`` is called after each size (the caller saves what
    has been measured so far: a run cut short keeps its finished sizes).
    """
    settle_s = SETTLE_S if settle_s is None else settle_s
    note = (lambda label: None) if progress is None else progress.note  # noqa: E731
    records = []
    for B, T, D, H in grid:
        size = f"(B,T,D,H)=({B},{T},{D},{H})"
        cands = contenders(B, T, D, H, backends=backends, gpu=gpu)
        flops = 2.0 * T * B * H * (D + H)
        first_name = next(iter(cands))
        # torch.nn.RNN is the baseline; without torch there is none, and no ratio
        base_name = first_name if first_name.startswith(BASELINE) else None
        note(f"{size} warm-up: {first_name}")
        ref = cands[first_name][2](cands[first_name][1](cands[first_name][0]()))  # also a warm-up
        if gpu:  # the baseline is a contender too: every row against float64
            ref = gpu_reference(B, T, D, H)
        rec = {"B": B, "T": T, "D": D, "H": H, "gflop": flops / 1e9, "results": {},
               "baseline": base_name, "agreement_reference": first_name}  # fmt: skip
        n = {}
        for name, (fn, sync, to_np) in cands.items():
            note(f"{size} warm-up: {name}")
            launches = _persistent_launches()
            got = to_np(sync(fn()))  # warm-up (compiles JAX and CUDA kernels) and the agreement check
            err = float(np.max(np.abs(got - ref))) if got.size else 0.0
            rec["results"][name] = {"max_abs_diff_vs_baseline": err, "agrees": err <= 1e-3}
            if name.endswith("(persistent)"):  # did the kernel run, or did its self-check fall back?
                rec["results"][name]["persistent_kernel_ran"] = _persistent_launches() > launches
            first = _time(fn, sync, 1)  # a warm call sets how many calls fill a round
            n[name] = max(1, min(200, int(budget_s / max(first, 1e-6) / rounds)))
        times = {name: [] for name in cands}
        gemms = _gemm_calls(gpu, backends)  # the GEMM rate, measured in the same rounds (the load may drift)
        gemm = {name: [] for name in gemms}
        for i in range(rounds):
            order = list(cands) + list(gemms)
            random.shuffle(order)
            for name in order:
                note(f"{size} round {i + 1}/{rounds}: {name if name in cands else name + ' GEMM'}")
                time.sleep(settle_s)
                if name in gemms:
                    gemm_fn, gemm_sync, gemm_n = gemms[name]
                    gemm[name].append(2 * gemm_n**3 / _time(gemm_fn, gemm_sync, 3) / 1e9)
                    continue
                fn, sync, _ = cands[name]
                times[name].append(_time(fn, sync, n[name]))
            if progress is not None:
                progress.step(f"(B,T,D,H)=({B},{T},{D},{H})")
        base = None if base_name is None else float(np.median(times[base_name]))
        rec["gemm_gflops_by_blas"] = {k: float(np.median(v)) for k, v in gemm.items()}
        rec["gemm_gflops"] = max(rec["gemm_gflops_by_blas"].values())  # the fastest float32 n^3 GEMM
        for name, ts in times.items():
            med = float(np.median(ts))
            rec["results"][name].update(
                seconds=med, seconds_min=float(np.min(ts)), calls_per_round=n[name], rounds=rounds,
                gflops=flops / med / 1e9, ratio_to_baseline=None if base is None else med / base,
            )  # fmt: skip
        records.append(rec)
        if on_record is not None:
            on_record(records)
    return records


def _persistent_launches():
    """Launches of the persistent CuPy kernel so far (0 where it was never imported)."""
    mod = sys.modules.get("rnn_xp.kernels.cupy_persistent")
    return 0 if mod is None else mod.launches()


def _gemm_calls(gpu, backends=()):
    """``{library: (fn, sync, n)}``: one float32 n x n GEMM of every library that multiplies on its own.

    NumPy's BLAS (and oneMKL) on the CPU, and torch's and XLA's (JAX) where
    they are contenders: "% GEMM" is of the fastest of them, so that a
    library with faster matrix kernels than NumPy's BLAS is not put above
    100%. CuPy on a GPU.
    """
    rng = np.random.default_rng(1)
    n = 4096 if gpu else 1024
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in "ab")
    if gpu:
        import cupy

        a, b = cupy.asarray(a), cupy.asarray(b)
        out = cupy.empty_like(a)

        def sync(r):
            cupy.cuda.get_current_stream().synchronize()
            return r

        return {"cupy": ((lambda: cupy.matmul(a, b, out=out)), sync, n)}
    out = np.empty_like(a)
    calls = {"numpy": ((lambda: np.matmul(a, b, out=out)), _nosync, n)}
    if _mkl.library() is not None:
        bt = np.ascontiguousarray(b.T)
        calls["mkl"] = ((lambda: _mkl.gemm(a, bt, out)), _nosync, n)
    if "torch" in sys.modules:  # torch.nn.RNN and rnn_xp on torch multiply with torch's own kernels
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        calls["torch"] = ((lambda: torch.mm(ta, tb)), _nosync, n)
    if "jax" in backends:
        import jax
        import jax.numpy as jnp

        ja, jb = jnp.asarray(a), jnp.asarray(b)
        calls["jax"] = ((lambda: ja @ jb), jax.block_until_ready, n)
    return calls


def _peak_bytes(fn):
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, result


def memory_section(B=8, D=8, H=128, T_small=1000, T_large=100_000, T_full=2000, progress=None):
    """Peak memory (tracemalloc) of the NumPy kernels; the input is made before tracing."""
    import rnn_xp

    note = (lambda label: None) if progress is None else progress.note  # noqa: E731

    out = {"B": B, "D": D, "H": H, "tool": "tracemalloc (NumPy registers its buffers)"}
    x, h0, Wx, Wh, b = _weights(B, 3, D, H)
    rnn_xp.rnn_forward(x, h0, Wx, Wh, b, return_sequences=False)  # warm-up: one-time imports and caches
    last = {}
    for T in (T_small, T_large):
        note(f"memory: return_sequences=False, T={T}")
        x, h0, Wx, Wh, b = _weights(B, T, D, H)
        peak, _ = _peak_bytes(lambda: rnn_xp.rnn_forward(x, h0, Wx, Wh, b, return_sequences=False))
        last[T] = peak
        del x
    out["last_state"] = {
        "T": [T_small, T_large], "peak_bytes": [last[T_small], last[T_large]],
        "ratio_large_to_small": last[T_large] / max(last[T_small], 1),
        "one_TBH_buffer_bytes_at_large_T": T_large * B * H * 4,
    }  # fmt: skip
    note(f"memory: the full forward, T={T_full}")
    x, h0, Wx, Wh, b = _weights(B, T_full, D, H)
    full = {"T": T_full, "output_bytes": T_full * B * H * 4, "B_H_bytes": B * H * 4}
    peak, _ = _peak_bytes(lambda: rnn_xp.rnn_forward(x, h0, Wx, Wh, b))
    full["in_place_extra_bytes"] = peak - full["output_bytes"]
    import array_api_compat.numpy as nxp

    from ..kernels.portable import scan_portable

    peak, _ = _peak_bytes(lambda: scan_portable(nxp, x, h0, Wx, Wh, b, nonlinearity="tanh", lengths=None,
                                                reverse=False, leak=1.0, return_sequences=True))  # fmt: skip
    full["portable_extra_bytes"] = peak - full["output_bytes"]
    out["full_forward"] = full
    return out


def print_tables(result, stream=None):
    """The ratio table (time / baseline; below 1 is faster) and GFLOP/s beside the GEMM rate."""
    stream = sys.stdout if stream is None else stream
    gemm = result["gemm"]["gflops"]
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    mkl = result["machine"].get("mkl")
    if mkl:
        p(f"\noneMKL: {mkl['status']}" + (f" ({mkl['version']})" if mkl.get("version") else ""))
    p(f"\nfloat32 GEMM rate ({result['gemm']['n']}^3): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gemm.items()))
    names = contender_names(result["grid"])  # of every size: a row may exist at some sizes only
    with_baseline = any(r.get("ratio_to_baseline") is not None
                        for rec in result["grid"] for r in rec["results"].values())  # fmt: skip
    if result["grid"] and not with_baseline:
        ref = result["grid"][0].get("agreement_reference", names[0])
        p(f"\nno baseline: torch is not installed, so {BASELINE} was not timed and there is no ratio "
          f"column; 'agrees' compares with {ref} (pip install torch for the baseline)")  # fmt: skip
    libs = sorted({k for rec in result["grid"] for k in rec.get("gemm_gflops_by_blas", {})})
    p(f"(% GEMM: of the fastest float32 GEMM measured in the same rounds ({', '.join(libs) or 'NumPy'}; "
      "1024^3 on the CPU, 4096^3 on a GPU); 'agrees': max |diff| <= 1e-3 against the first row of each size)")
    ratio_head = f"{'ratio':>8}" if with_baseline else ""
    p(f"\n{'(B, T, D, H)':<22}{'contender':<28}{'ms':>10}{ratio_head}{'GFLOP/s':>9}{'% GEMM':>8}  agrees")
    above = []
    for rec in result["grid"]:
        size = f"({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']})"
        for name in names:
            r = rec["results"].get(name)
            if r is None:
                continue
            pct = 100 * r["gflops"] / rec["gemm_gflops"]
            mark = "*" if pct > 100 else " "
            if pct > 100:
                above.append(name)
            ratio = f"{r['ratio_to_baseline']:>8.2f}" if with_baseline else ""
            p(f"{size:<22}{name:<28}{r['seconds'] * 1e3:>10.3f}{ratio}"
              f"{r['gflops']:>9.1f}{pct:>7.0f}%{mark} {'yes' if r['agrees'] else 'NO'}")  # fmt: skip
            size = ""
    if above:
        p("* above 100% of the GEMM rate: this contender's products ran faster than the reference GEMM "
          "did in the same rounds: its library has its own thread pool or kernels (XLA's is not limited "
          "by --threads), or a shared machine slowed the GEMM's turn; not a faster-than-peak recurrence")
    if FAST in names and with_baseline:
        worst = max(rec["results"][FAST]["ratio_to_baseline"] for rec in result["grid"] if FAST in rec["results"])
        p(f"\nworst ratio {FAST} / {BASELINE}: {worst:.2f}")
    if FAST in names:
        big = [r for r in result["grid"] if (r["B"], r["T"], r["D"], r["H"]) == (64, 50, 512, 1024)]
        if big:
            r = big[0]
            p(f"{FAST} on (64, 50, 512, 1024): {r['results'][FAST]['gflops']:.1f} GFLOP/s = "
              f"{100 * r['results'][FAST]['gflops'] / r['gemm_gflops']:.0f}% of the GEMM rate "
              f"({r['gemm_gflops']:.1f} GFLOP/s)")
    auto = "rnn_xp cupy (auto)"  # what rnn_forward does with CuPy arrays
    if auto in names:
        for label, sizes, target in (("DeepBench", GPU_GRID[:-len(SMALL_BATCH_GRID)], 1.0),
                                     ("small-batch", SMALL_BATCH_GRID, 0.5)):  # fmt: skip
            ratios = [rec["results"][auto]["ratio_to_baseline"] for rec in result["grid"]
                      if (rec["B"], rec["T"], rec["D"], rec["H"]) in sizes and auto in rec["results"]]  # fmt: skip
            if ratios and with_baseline:
                p(f"worst ratio {auto} / {names[0]} on the {label} grid ({len(ratios)} of {len(sizes)} sizes): "
                  f"{max(ratios):.2f} (target <= {target})")  # fmt: skip
    for rec in result["grid"]:
        for name, r in rec["results"].items():
            if r.get("persistent_kernel_ran") is False:
                p(f"WARNING: at (B, T, D, H) = ({rec['B']}, {rec['T']}, {rec['D']}, {rec['H']}) the row "
                  f"'{name}' timed the fused path: the persistent kernel did not run (self-check or launch failed)")
    mem = result.get("memory")
    if mem:
        ls = mem["last_state"]
        p(f"\nreturn_sequences=False peak memory (B={mem['B']}, H={mem['H']}): "
          f"T={ls['T'][0]}: {ls['peak_bytes'][0] / 1e6:.3f} MB, T={ls['T'][1]}: {ls['peak_bytes'][1] / 1e6:.3f} MB "
          f"(ratio {ls['ratio_large_to_small']:.2f}; one (T, B, H) buffer would be "
          f"{ls['one_TBH_buffer_bytes_at_large_T'] / 1e6:.0f} MB)")  # fmt: skip
        ff = mem["full_forward"]
        p(f"full forward T={ff['T']}: output {ff['output_bytes'] / 1e6:.2f} MB; peak extra beyond it: "
          f"in-place {ff['in_place_extra_bytes'] / 1e3:.1f} kB (B*H = {ff['B_H_bytes'] / 1e3:.1f} kB), "
          f"portable {ff['portable_extra_bytes'] / 1e6:.2f} MB")  # fmt: skip


def contender_names(grid):
    """The contenders of every size, in order of first appearance (the baseline first)."""
    names = []
    for rec in grid:
        names.extend(n for n in rec["results"] if n not in names)
    return names


def chart(result, path):
    """A bar chart of the ratio to the baseline, one group per size (log scale).

    A contender without a row at some size (the persistent CuPy kernel where
    its plan does not fit) leaves a gap there.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = result["grid"]
    if not grid:
        return
    names = [n for n in contender_names(grid) if not n.startswith("torch.nn.RNN")]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        at = [k for k, rec in enumerate(grid) if name in rec["results"]]
        vals = [grid[k]["results"][name]["ratio_to_baseline"] for k in at]
        ax.bar([k + i * width for k in at], vals, width, label=name)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_yscale("log")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(grid))])
    ax.set_xticklabels([f"B={r['B']} T={r['T']}\nD={r['D']} H={r['H']}" for r in grid], fontsize=8)
    ax.set_ylabel(f"time / {next(iter(grid[0]['results']))} (lower is faster)")
    machine = result["machine"].get("gpu_name") or result["machine"]["cpu_model"]
    ax.set_title(f"rnn_xp forward, float32, {machine}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Interrupted(Exception):
    """A run stopped by Ctrl-C: how far it got, and where the finished sizes are kept."""

    def __init__(self, done, total, partial, final):
        super().__init__(done, total, partial, final)
        self.done, self.total, self.partial, self.final = done, total, partial, final

    def __str__(self):
        kept = f"kept in {self.partial}" if self.partial else "nothing to keep"
        return (f"interrupted after {self.done} of {self.total} sizes ({kept}); "
                f"{self.final} is unchanged")  # fmt: skip


class _thread_settings:
    """torch's and the BLAS libraries' thread counts set to ``threads`` for a run, then put back."""

    def __init__(self, threads):
        self.threads = threads

    def __enter__(self):
        self._torch = self._limiter = None
        try:
            import torch

            self._torch = (torch, torch.get_num_threads())
            torch.set_num_threads(self.threads)
        except ImportError:
            pass
        try:
            from threadpoolctl import threadpool_limits

            self._limiter = threadpool_limits(limits=self.threads, user_api="blas")
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        if self._limiter is not None:
            self._limiter.restore_original_limits()
        if self._torch is not None:
            torch, saved = self._torch
            torch.set_num_threads(saved)
        return False


def _write_json(path, obj):
    """Write ``obj`` to ``path`` through a temporary file and a rename: never a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run(*, quick=False, gpu=False, threads=2, out_dir="benchmarks/results", backends=None,
        memory=True, small_batch=False, stream=None):  # fmt: skip
    """Run the suite, print the tables, write JSON and a PNG; return the result dict.

    ``small_batch`` (CPU only): the GPU grid's small batches instead, B in {1, 4, 8},
    H in {256, 512, 1024}, T = 200, NumPy against torch only, no memory section.

    The results file ``<stem>.json`` is written once, when the run is complete
    (through a temporary file and a rename). Meanwhile the finished sizes are
    saved after each one in ``<stem>.partial.json``, which a complete run
    removes: an interrupted run never replaces a complete results file. Ctrl-C
    raises ``Interrupted``, which says how far the run got. torch's and the
    BLAS thread counts are set to ``threads`` for the run and put back after.
    """
    from .. import _backends

    stream = sys.stdout if stream is None else stream
    if backends is None:
        backends = _backends.available()
    os.makedirs(out_dir, exist_ok=True)  # before any measurement: a bad folder fails at once
    with _thread_settings(threads):
        return _run(quick=quick, gpu=gpu, threads=threads, out_dir=out_dir, backends=backends,
                    memory=memory, small_batch=small_batch, stream=stream)  # fmt: skip


def _run(*, quick, gpu, threads, out_dir, backends, memory, small_batch, stream):
    grid = GPU_GRID if gpu else CPU_GRID
    small_batch = small_batch and not gpu
    if small_batch:
        grid, backends, memory = SMALL_BATCH_GRID, [b for b in backends if b == "numpy"], False
    if quick:
        grid = grid[:2] if gpu or small_batch else grid
    rounds, budget = (3, 0.05) if quick else (7, 0.25)
    settle = None
    if gpu:  # GPU times are steady and no CPU thread pool is involved: shorter, no idle time
        rounds, budget, settle = (3, 0.05, 0.0) if quick else (5, 0.1, 0.0)
    if quick:
        backends = [b for b in backends if b != "dask"]
    random.seed(0)
    progress = Progress(len(grid) * rounds)
    progress.note("machine information and the GEMM rate")
    result = {"machine": machine_info(threads), "quick": quick, "device": "cuda" if gpu else "cpu",
              "gemm": gemm_rate(1024 if quick else 2048)}  # fmt: skip  (CPU, NumPy/torch)
    if gpu:
        result["machine"]["gpu_name"] = _gpu_name()
    stem = _slug(result["machine"].get("gpu_name") if gpu else
                 f"{platform.node()}-{cpu_tag(result['machine']['cpu_model'])}-cpu")  # fmt: skip
    if small_batch:
        stem += "-small-batch"
    if quick:
        stem += "-quick"
    path = os.path.join(out_dir, stem + ".json")
    partial = os.path.join(out_dir, stem + ".partial.json")
    done = []

    def save(records, complete=False):
        result["grid"], result["complete"] = records, complete
        _write_json(path if complete else partial, result)
        done[:] = records

    try:
        with tf32_off() if gpu else contextlib.nullcontext() as tf32:
            if gpu:
                result["machine"]["tf32"] = tf32  # what the torch and CuPy contenders ran with
                result["reference"] = REFERENCE_GPU
            result["grid"] = bench_grid(grid, backends=backends, rounds=rounds, budget_s=budget, gpu=gpu,
                                        progress=progress, settle_s=settle, on_record=save)  # fmt: skip
        if memory and not gpu:
            result["memory"] = memory_section(T_large=20_000 if quick else 100_000, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        raise Interrupted(len(done), len(grid), partial if done else None, path) from None
    progress.close()
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    print_tables(result, stream)
    save(result["grid"], complete=True)
    if os.path.exists(partial):
        os.remove(partial)
    print(f"\nwrote {path}", file=stream)
    png = os.path.join(out_dir, stem + ".png")
    if not any(r.get("ratio_to_baseline") is not None for rec in result["grid"] for r in rec["results"].values()):
        print(f"no PNG written: the chart shows times relative to {BASELINE}, and torch is not installed",
              file=stream)  # fmt: skip
    else:
        try:
            chart(result, png)
        except ImportError:
            print("no PNG written: matplotlib is not installed (pip install matplotlib)", file=stream)
        except Exception as exc:  # the results are saved: a chart problem never fails the run
            print(f"no chart: {type(exc).__name__}: {exc} (no PNG written; the results are saved)", file=stream)
        else:
            print(f"wrote {png}", file=stream)
    return result


REFERENCE_GPU = "torch.nn.RNN in float64 on the GPU (no TF32 in float64)"


@contextlib.contextmanager
def tf32_off():
    """torch's cuDNN RNNs and CUDA products in true float32 (no TF32) inside the block; yields the setting.

    ``torch.backends.cudnn.allow_tf32`` is True by default, and TF32 (a 10-bit
    mantissa) puts a float32 RNN about 2e-3 off: the baseline must not run
    faster for being less exact. The flags are restored exactly afterwards.
    CuPy uses TF32 only when ``CUPY_TF32=1``; that is recorded, not changed.
    """
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    rnn = getattr(cudnn, "rnn", None)
    if rnn is not None and hasattr(matmul, "fp32_precision"):  # torch >= 2.9: per-operator precision
        saved = (rnn.fp32_precision, matmul.fp32_precision)
        rnn.fp32_precision, matmul.fp32_precision = "ieee", "ieee"
        setting = {"cudnn.rnn.fp32_precision": "ieee", "cuda.matmul.fp32_precision": "ieee"}
    else:
        saved = (cudnn.allow_tf32, matmul.allow_tf32)
        cudnn.allow_tf32, matmul.allow_tf32 = False, False
        setting = {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False}
    setting["CUPY_TF32"] = os.environ.get("CUPY_TF32", "")
    try:
        yield setting
    finally:
        if rnn is not None and hasattr(matmul, "fp32_precision"):
            rnn.fp32_precision, matmul.fp32_precision = saved
        else:
            cudnn.allow_tf32, matmul.allow_tf32 = saved


def gpu_reference(B, T, D, H):
    """The benchmark's float32 problem computed by ``torch.nn.RNN`` in float64 on the GPU, as NumPy."""
    import torch

    x, h0, Wx, Wh, b = _weights(B, T, D, H)
    rnn = torch_baseline(Wx, Wh, b).double().cuda()
    with torch.no_grad():
        out = rnn(torch.from_numpy(x).double().cuda(), torch.from_numpy(h0).double().cuda()[None])[0]
    return out.cpu().numpy()


def gpu_problem():
    """``None`` when CuPy and torch both see a CUDA device, else why not (one line)."""
    from .. import _backends

    try:
        _backends.load("cupy")
    except _backends.BackendUnavailable as exc:
        return str(exc)
    try:
        import torch
    except ImportError:
        return "torch is not installed (the cuDNN baseline)"
    try:
        if not torch.cuda.is_available():
            return "torch finds no CUDA device (the cuDNN baseline)"
    except Exception as exc:  # a CUDA runtime that fails to start
        return f"torch cannot use CUDA ({type(exc).__name__}: {exc})"
    return None


def _gpu_name():
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


def cpu_tag(model):
    """A short name for a CPU model in results file names: ``xeon``, ``epyc``, ``ryzen``, ... (else ``cpu``)."""
    words = model.lower().replace("(r)", " ").replace("(tm)", " ").split()
    skip = {"intel", "amd", "genuine", "processor", "cpu"}
    word = next((w for w in words if w not in skip and w.isalpha()), "")
    return word or "cpu"


def _slug(s):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in s).strip("-")


def add_arguments(parser):
    from . import _args

    parser.add_argument("--quick", action="store_true",
                        help="3 rounds instead of 7, shorter calls, no Dask (default: off)")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU grid: CuPy and torch on CUDA (default: off, the CPU grid)")
    parser.add_argument("--threads", type=_args.positive_int, default=2,
                        help="BLAS and torch threads during the run, put back after it (default: %(default)s)")
    parser.add_argument("--out", type=_args.out_folder, default="benchmarks/results",
                        help="folder for the JSON and PNG, made if missing (default: %(default)s)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory section (default: off)")
    parser.add_argument("--small-batch", action="store_true",
                        help="CPU: B in {1, 4, 8}, H in {256, 512, 1024}, T = 200, NumPy against torch "
                             "(default: off)")


def main_from_args(args) -> int:
    if args.gpu:
        problem = gpu_problem()
        if problem is not None:
            print(f"python -m rnn_xp bench: error: --gpu needs a CUDA device: {problem}", file=sys.stderr)
            return 2
    try:
        result = run(quick=args.quick, gpu=args.gpu, threads=args.threads, out_dir=args.out,
                     memory=not args.no_memory, small_batch=args.small_batch)  # fmt: skip
    except Interrupted as exc:
        print(f"python -m rnn_xp bench: {exc}", file=sys.stderr)
        return 130
    ok = all(r["agrees"] for rec in result["grid"] for r in rec["results"].values())
    return 0 if ok else 1
