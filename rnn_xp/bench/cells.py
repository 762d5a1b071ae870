"""What the in-process benchmark times: a table of contenders for each cell.

A ``ContenderSet`` is one cell's comparison: how to draw a problem of size
``(B, T, D, H)`` (the same float32 arrays for every contender), how many
floating-point operations a forward pass of it is, the float64 reference of
the GPU grid, and two tuples of ``Contender`` (the CPU's and the GPU's), the
baseline first. A ``Contender`` is a name, the backends it needs, and a
function that turns the problem into a ``Run``: the call to time, the
``sync`` that waits for its device, and the conversion of its result to
NumPy for the agreement check. ``make`` returns None where the contender
does not apply to this size or this machine (no oneMKL, a persistent-kernel
plan that does not fit); an ``ImportError`` leaves the row out too (torch not
installed: no baseline). The timing code (``rnn_xp.bench.suite``) knows
nothing of cells, so a new cell is a new ``ContenderSet`` in ``SETS``:
``rnn_xp.LSTM`` against ``torch.nn.LSTM``, rnn_xp on JAX and Flax's cell is
a problem function, a FLOP count and four ``Contender`` entries (the makers
of ``rnn_xp.bench.gated``), one set for the forward and one for
forward+backward (CPU rows only).

>>> from rnn_xp.bench.cells import RNN, contenders
>>> [c.name for c in RNN.cpu][:3]
['torch.nn.RNN', 'rnn_xp torch', 'rnn_xp numpy (in-place)']
>>> runs = contenders(2, 5, 3, 4, backends=["numpy"], names=["rnn_xp numpy (in-place)", "seed loop (numpy)"])
>>> list(runs)
['rnn_xp numpy (in-place)', 'seed loop (numpy)']
>>> run = runs["rnn_xp numpy (in-place)"]
>>> run.to_numpy(run.sync(run.fn())).shape
(5, 2, 4)
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from ..kernels import mkl
from . import gated
from .timing import no_sync

__all__ = [
    "BASELINE", "CPU_GRID", "DEEPBENCH_GRID", "FAST", "FAST_MKL", "FAST_OPENBLAS", "GPU_GRID", "GPU_TARGETS",
    "PERSISTENT_ROWS", "RNN", "SETS", "SMALL_BATCH_GRID",
    "Contender", "ContenderSet", "Problem", "Run", "contenders", "gpu_reference", "persistent_launches",
    "problem", "rnn_flops", "seed_loop", "torch_baseline",
]  # fmt: skip

# The sizes (B, T, D, H) of each grid.
CPU_GRID = [(1, 200, 32, 64), (16, 100, 64, 128), (32, 100, 128, 256), (64, 50, 512, 1024)]
SMALL_BATCH_GRID = [(B, 200, H, H) for H in (256, 512, 1024) for B in (1, 4, 8)]
DEEPBENCH_GRID = [(B, 50, H, H) for H in (1760, 2048, 2560) for B in (16, 32, 64, 128)]  # DeepBench vanilla RNN
GPU_GRID = DEEPBENCH_GRID + SMALL_BATCH_GRID
# The GPU goals the table checks: the worst ratio of rnn_xp cupy (auto) to cuDNN on each grid.
GPU_TARGETS = {"DeepBench": (DEEPBENCH_GRID, 1.0), "small-batch": (SMALL_BATCH_GRID, 0.5)}

BASELINE = "torch.nn.RNN"
FAST = "rnn_xp numpy (in-place)"  # what rnn_forward does with NumPy arrays (oneMKL where preferred)
FAST_OPENBLAS = "rnn_xp numpy (OpenBLAS)"  # the same loop with oneMKL switched off
FAST_MKL = "rnn_xp numpy (oneMKL)"  # the same loop with oneMKL taken where it is not preferred
PERSISTENT_ROWS = ("rnn_xp cupy (persistent)", "rnn_xp cupy (auto)")  # the rows that may run the persistent kernel


class Problem(NamedTuple):
    """One size's float32 NumPy arrays: ``x (T, B, D)``, ``h0 (B, H)``, ``Wx (H, D)``, ``Wh (H, H)``, ``b (H,)``."""

    x: Any
    h0: Any
    Wx: Any
    Wh: Any
    b: Any


class Run(NamedTuple):
    """A contender ready to time: ``fn()`` is one call, ``sync(r)`` waits for ``r`` and returns it."""

    fn: Callable[[], Any]
    sync: Callable[[Any], Any]
    to_numpy: Callable[[Any], Any]


@dataclass(frozen=True)
class Contender:
    """A row of the benchmark: its name, the backends it needs, and ``make(problem) -> Run or None``."""

    name: str
    make: Callable[[Any], Optional[Run]]  # the problem of its set -> a Run
    needs: tuple = ()  # rnn_xp._backends names that must be among the run's backends


@dataclass(frozen=True)
class ContenderSet:
    """One cell's comparison: its problem, its FLOP count, its contenders (baseline first)."""

    name: str
    problem: Callable[..., Any]  # (B, T, D, H) -> the arrays every contender gets (a Problem for the RNN)
    flops: Callable[[int, int, int, int], float]  # of one forward pass
    cpu: tuple
    gpu: tuple  # empty: no GPU rows (the gated cells' sets)
    reference_gpu: Optional[Callable[[Problem], Any]] = None  # the float64 answer on the GPU grid


def problem(B, T, D, H, seed=0):
    """The RNN problem of a size: seeded float32 arrays, the recurrent weights scaled to a stable run."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    h0 = (rng.standard_normal((B, H), dtype=np.float32) * 0.5).astype(np.float32)
    Wx = (rng.standard_normal((H, D)) / math.sqrt(D)).astype(np.float32)
    Wh = (rng.standard_normal((H, H)) * 0.9 / math.sqrt(H)).astype(np.float32)
    b = (rng.standard_normal(H) * 0.1).astype(np.float32)
    return Problem(x, h0, Wx, Wh, b)


def rnn_flops(B, T, D, H):
    """Floating-point operations of an RNN forward: ``2 T B H (D + H)`` (the two products per step)."""
    return 2.0 * T * B * H * (D + H)


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


def persistent_launches():
    """Launches of the persistent CuPy kernel so far (0 where it was never imported)."""
    mod = sys.modules.get("rnn_xp.kernels.cupy_persistent")
    return 0 if mod is None else mod.launches()


# -- the RNN's contenders ------------------------------------------------------------------------


def _torch_rnn(p, device):
    import torch

    dev = torch.device(device)
    rnn = torch_baseline(p.Wx, p.Wh, p.b).to(dev)
    tx, th0 = torch.from_numpy(p.x).to(dev), torch.from_numpy(p.h0).to(dev)[None]

    def fn():
        with torch.no_grad():
            return rnn(tx, th0)[0]

    return Run(fn, _torch_sync(device), lambda r: r.cpu().numpy())


def _torch_sync(device):
    import torch

    if device == "cpu":
        return no_sync

    def sync(r):
        torch.cuda.synchronize()
        return r

    return sync


def _rnn_xp_torch(p, device):
    import torch

    import rnn_xp

    args = [torch.from_numpy(a).to(torch.device(device)) for a in p]
    return Run(lambda: rnn_xp.rnn_forward(*args), _torch_sync(device), lambda r: r.cpu().numpy())


def _numpy_fast(p):
    import rnn_xp

    return Run(lambda: rnn_xp.rnn_forward(*p), no_sync, np.asarray)


def _numpy_other_blas(p, *, openblas):
    """The in-place loop on the BLAS that the default does not take: timed side by side with it."""
    import rnn_xp

    if mkl.library() is None or mkl.preferred() != openblas:
        return None
    if openblas:

        def fn():
            with mkl.suspended():
                return rnn_xp.rnn_forward(*p)
    else:

        def fn():
            with mkl.preferring(True):
                return rnn_xp.rnn_forward(*p)

    return Run(fn, no_sync, np.asarray)


def _portable(xp, arrays, sync):
    from ..kernels.portable import scan_portable

    def fn():
        return scan_portable(xp, *arrays, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
                             return_sequences=True)[0]  # fmt: skip

    return Run(fn, sync, np.asarray)


def _numpy_portable(p):
    import array_api_compat.numpy as nxp

    return _portable(nxp, p, no_sync)


def _jax_args(p):
    import jax.numpy as jnp

    return [jnp.asarray(a) for a in p]


def _jax_scan(p):
    import jax

    import rnn_xp

    args = _jax_args(p)
    return Run(lambda: rnn_xp.rnn_forward(*args), jax.block_until_ready, np.asarray)


def _jax_portable(p):
    import jax
    import jax.numpy as jnp

    return _portable(jnp, _jax_args(p), jax.block_until_ready)


def _strict(p):
    import array_api_strict as strict

    import rnn_xp

    args = [strict.asarray(a) for a in p]
    return Run(lambda: rnn_xp.rnn_forward(*args), no_sync, lambda r: np.from_dlpack(r))


def _dask(p):
    import dask.array as da

    import rnn_xp

    args = [da.from_array(a) for a in p]

    def fn():
        # oneMKL off: a Dask worker thread that has called oneMKL keeps state in
        # the libgomp it shares with torch, and torch's own loops then ran ~40%
        # slower on 2 cores; the baseline must not pay for another contender.
        with mkl.suspended():
            return rnn_xp.rnn_forward(*args).compute()

    return Run(fn, no_sync, np.asarray)


def _cupy_path(path):
    """``rnn_forward`` on CuPy arrays with its path forced (no environment change); None where it cannot run."""

    def make(p):
        import cupy

        import rnn_xp

        from ..kernels import cupy_persistent as persistent

        if path == "persistent":  # float32 weights: only where the plan fits this device
            props = persistent.device_props(cupy.cuda.Device().id)
            if persistent.plan(p.h0.shape[0], p.Wh.shape[0], 4, props) is None:
                return None
        args = [cupy.asarray(a) for a in p]

        def fn():
            with persistent.forced_path(path):
                return rnn_xp.rnn_forward(*args)

        def sync(r):
            cupy.cuda.get_current_stream().synchronize()
            return r

        return Run(fn, sync, cupy.asnumpy)

    return make


def gpu_reference(p):
    """The float32 problem ``p`` computed by ``torch.nn.RNN`` in float64 on the GPU, as NumPy."""
    import torch

    rnn = torch_baseline(p.Wx, p.Wh, p.b).double().cuda()
    with torch.no_grad():
        out = rnn(torch.from_numpy(p.x).double().cuda(), torch.from_numpy(p.h0).double().cuda()[None])[0]
    return out.cpu().numpy()


RNN = ContenderSet(
    name="rnn",
    problem=problem,
    flops=rnn_flops,
    cpu=(
        Contender(BASELINE, lambda p: _torch_rnn(p, "cpu")),
        Contender("rnn_xp torch", lambda p: _rnn_xp_torch(p, "cpu"), needs=("torch",)),
        Contender(FAST, _numpy_fast),
        Contender(FAST_OPENBLAS, lambda p: _numpy_other_blas(p, openblas=True)),
        Contender(FAST_MKL, lambda p: _numpy_other_blas(p, openblas=False)),
        Contender("rnn_xp numpy (portable)", _numpy_portable),
        Contender("seed loop (numpy)", lambda p: Run(lambda: seed_loop(*p), no_sync, np.asarray)),
        Contender("rnn_xp jax (lax.scan)", _jax_scan, needs=("jax",)),
        Contender("rnn_xp jax (portable)", _jax_portable, needs=("jax",)),
        Contender("rnn_xp array_api_strict", _strict, needs=("array_api_strict",)),
        Contender("rnn_xp dask", _dask, needs=("dask",)),
    ),
    gpu=(
        Contender("torch.nn.RNN (cuDNN)", lambda p: _torch_rnn(p, "cuda")),
        Contender("rnn_xp torch cuda", lambda p: _rnn_xp_torch(p, "cuda"), needs=("torch",)),
        Contender("rnn_xp cupy (fused)", _cupy_path("fused"), needs=("cupy",)),
        # last: the rows that may run the persistent kernel (a hang there loses the least)
        Contender(PERSISTENT_ROWS[0], _cupy_path("persistent"), needs=("cupy",)),
        Contender(PERSISTENT_ROWS[1], _cupy_path("auto"), needs=("cupy",)),
    ),
    reference_gpu=gpu_reference,
)


# -- the LSTM's and the GRU's contenders (rnn_xp.bench.gated's makers) ----------------------------


def _gated_row(make, kind):
    def run(p):
        fn, fingerprint = make(kind, p, 1.0, p.d_output)  # fn returns when its result is computed
        return Run(fn, no_sync, fingerprint)

    return run


def _gated_set(cell, kind):
    """The in-process set of a gated cell for one measurement: torch's module (the baseline), the layer on
    NumPy as this process runs it, rnn_xp on JAX and Flax's cell; each row's result is its fingerprint."""
    rows = ((gated.BASELINES[cell], gated.torch_layer, ()), (gated.NUMPY, gated.rnn_xp_numpy, ()),
            (gated.JAX, gated.rnn_xp_jax, ("jax",)), (gated.FLAX[cell], gated.flax_rnn, ("jax",)))  # fmt: skip
    return ContenderSet(
        name=cell if kind == "forward" else f"{cell}-{kind}",
        problem=functools.partial(gated.problem, cell),
        flops=functools.partial(gated.flops, cell, kind=kind),
        cpu=tuple(Contender(name, _gated_row(make, kind), needs) for name, make, needs in rows),
        gpu=(),
    )


# Every cell's contender set, by name: the RNN's, and the LSTM's and the GRU's for
# the forward ("lstm") and for forward+backward ("lstm-forward-backward").
SETS = {"rnn": RNN, **{s.name: s for s in (_gated_set(c, k) for c in gated.GATES for k in gated.KINDS)}}


def contenders(B, T, D, H, *, backends, gpu=False, cell=RNN, names=None):
    """``{name: Run}`` for one size, all on the same problem, in the table's order (the baseline first).

    ``backends`` are the installed backends to run; ``names``, if given,
    keeps only those rows. A row whose library is missing is left out.
    """
    p = cell.problem(B, T, D, H)
    out = {}
    for c in cell.gpu if gpu else cell.cpu:
        if (names is not None and c.name not in names) or not all(b in backends for b in c.needs):
            continue
        try:
            run = c.make(p)
        except ImportError:
            continue
        if run is not None:
            out[c.name] = run
    return out
