"""The CuPy kernels' CUDA source, run on the CPU by ``tests/kernels/cuda_emulator.py``, against the portable loop.

No GPU is needed: the interpreter executes the very text NVRTC compiles
(``cupy_fused.kernel_source``, ``cupy_persistent.kernel_source``), thread by
thread in lockstep, block by block between grid barriers, with bounds, race
and deadlock checks, and the host loops (``scan_fused``, ``scan_persistent``)
run with NumPy around it. So a change to a formula in the CUDA text is run
here, and must give ``kernels.portable.scan_portable``'s answer on the edge
catalogue:

- infinite and NaN values: an infinite entry of ``h0`` (at leak = 1 the state
  is ``f(z)``, with no ``0 * inf`` term), NaN in one sequence's input, relu
  states that overflow to infinity;
- leak 1 and 0.3; ``lengths`` with 0 and T; ``reverse``;
  ``return_sequences=False`` over several blocks of time steps;
- relu and tanh, float32 and float64;
- B and H that are not multiples of the kernels' shapes (warps, 16-byte
  vectors, rows per block), k ranges split over warps, more batch rows than a
  warp's accumulators, a staging loop that runs twice.
"""

from __future__ import annotations

import collections
import functools
import warnings

import array_api_compat.numpy as nxp
import numpy as np
import pytest

from cuda_emulator import EmulatorError, Kernel
from rnn_xp.kernels import _blocks
from rnn_xp.kernels import cupy_fused as fused
from rnn_xp.kernels import cupy_persistent as persistent
from rnn_xp.kernels.portable import scan_portable

ACTIVATIONS = ["tanh", "relu"]
TOL = {"float32": dict(rtol=2e-4, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-12)}

# A device with 4 SMs: H = 37 gives 10 rows per block (the last has 7), two rounds
# of the warps over the rows, and B * H = 185 is no whole number of 16-byte vectors.
FOUR_SM = persistent.DeviceProps(sm_count=4, smem_per_block_optin=49152, smem_per_sm=65536,
                                 reserved_smem_per_block=0, max_threads_per_block=1024,
                                 cooperative_launch=True)  # fmt: skip


@functools.lru_cache(maxsize=None)
def _kernel(kind, dtype, act, source=None):
    """The interpreted kernel (parsed once per variant); for ``"cells"``, kernel ``act`` of ``source``."""
    if kind == "cells":
        return Kernel(source, act)
    module = fused if kind == "fused" else persistent
    return Kernel(source or module.kernel_source(dtype, act), module.kernel_name(dtype, act))


# --- the catalogue ------------------------------------------------------------------------

T, B, D, H = 7, 5, 3, 37
BLOCK_STEPS = 3  # return_sequences=False: blocks of 3, 3 and 1 steps

CASES = {
    # name: (leak, reverse, return_sequences, lengths)
    "leak1": (1.0, False, True, None),
    "leak1-reverse-last-lengths": (1.0, True, False, (T, 0, 3, T, 1)),
    "leak0.3-last-lengths": (0.3, False, False, (2, T, 0, 5, T)),
    "leak0.3-reverse": (0.3, True, True, None),
    "overflow": (1.0, False, True, (T, T, 4, 0, T)),
}


def _inputs(dtype, act, case):
    """Inputs with non-finite values: sequence 1 starts from an infinite unit, 2 reads a NaN."""
    rng = np.random.default_rng(20260601)
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((B, H)) * 0.5
    Wx = rng.standard_normal((H, D)) / np.sqrt(D)
    Wh = rng.standard_normal((H, H)) * 0.9 / np.sqrt(H)
    b = rng.standard_normal(H) * 0.1
    if case == "overflow":
        # every z_0 overflows (relu: the state becomes +inf, tanh: 1); all weights positive,
        # so inf * w stays inf and never meets -inf. With relu at leak = 1 the state is
        # then f(inf) = inf at every step; a 0 * inf term would make it NaN.
        h0 = np.full((B, H), np.finfo(dtype).max / 4)
        Wh = np.full((H, H), 10.0)
        Wx = np.abs(Wx)
        x = np.abs(x)
        b = np.abs(b)
    else:
        h0[1, 4] = np.inf  # z_0 of sequence 1 is +-inf at every unit: f(z) is finite
        x[3, 2, 1] = np.nan  # sequence 2 is NaN from t = 3 on
    with np.errstate(all="ignore"):
        return [a.astype(dtype) for a in (x, h0, Wx, Wh, b)]


def _expected(arrays, act, case):
    leak, reverse, rs, lengths = CASES[case]
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    with np.errstate(all="ignore"):
        return scan_portable(nxp, *arrays, nonlinearity=act, lengths=lens, reverse=reverse, leak=leak,
                             return_sequences=rs)  # fmt: skip


def _check(got, want, dtype):
    for g, w, what in zip(got, want, ("states", "final state")):
        if w is None:
            assert g is None, what
            continue
        assert g.dtype == w.dtype and g.shape == w.shape, what
        np.testing.assert_allclose(g, w, err_msg=what, **TOL[dtype])  # NaN and inf where the loop has them


def _run_fused(arrays, act, case, kernel):
    leak, reverse, rs, lengths = CASES[case]
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    with np.errstate(all="ignore"):  # the host's products of infinite states
        return fused.scan_fused(*arrays, nonlinearity=act, lengths=lens, reverse=reverse, leak=leak,
                                return_sequences=rs, mod=np, launch=kernel.launch)  # fmt: skip


def _run_persistent(arrays, act, case, kernel, props=FOUR_SM):
    leak, reverse, rs, lengths = CASES[case]
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    x, h0 = arrays[0], arrays[1]
    pl = persistent.plan(h0.shape[0], h0.shape[1], h0.dtype.itemsize, props)
    assert pl is not None
    with np.errstate(all="ignore"):
        return persistent.scan_persistent(*arrays, nonlinearity=act, lengths=lens, reverse=reverse,
                                          leak=leak, return_sequences=rs, plan=pl, mod=np,
                                          launch=kernel.launch, count=False)  # fmt: skip


@pytest.fixture(autouse=True)
def _short_blocks(monkeypatch):
    monkeypatch.setattr(_blocks, "BLOCK_STEPS", BLOCK_STEPS)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_fused_kernel_source_gives_the_portable_answer(dtype, act, case):
    arrays = _inputs(dtype, act, case)
    kernel = _kernel("fused", dtype, act)
    before = len(kernel.launches)
    _check(_run_fused(arrays, act, case, kernel), _expected(arrays, act, case), dtype)
    assert len(kernel.launches) - before == T  # one launch per step, lengths or not


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_persistent_kernel_source_gives_the_portable_answer(dtype, act, case):
    arrays = _inputs(dtype, act, case)
    kernel = _kernel("persistent", dtype, act)
    before = len(kernel.launches)
    _check(_run_persistent(arrays, act, case, kernel), _expected(arrays, act, case), dtype)
    launches = kernel.launches[before:]
    rs = CASES[case][2]
    assert sorted(steps for _, _, steps in launches) == ([T - 1] if rs else [0, 2, 2])  # steps - 1 barriers
    assert {(g, nt) for g, nt, _ in launches} == {(4, 256)}


# Plans of other shapes, float32 and float64: (B, H, device, what it exercises).
PLANS = {
    "k-split": (3, 14, FOUR_SM._replace(sm_count=7), "2 rows per block, 4 warps per row's k range"),
    "batch-above-accumulators": (10, 9, FOUR_SM, "B > MAXB: two rounds of accumulators"),
    "two-staging-rounds": (3, 180, FOUR_SM._replace(sm_count=64, max_threads_per_block=32),
                           "one warp per block: h_{t-1} takes several rounds of UNROLL vectors, clamped"),
    "one-unit": (2, 1, FOUR_SM, "H = 1: one block, one row"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(PLANS))
def test_persistent_kernel_plans(dtype, name):
    Bp, Hp, props, _ = PLANS[name]
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s).astype(dtype) * 0.5
              for s in ((5, Bp, 2), (Bp, Hp), (Hp, 2), (Hp, Hp), (Hp,))]  # fmt: skip
    pl = persistent.plan(Bp, Hp, np.dtype(dtype).itemsize, props)
    assert pl is not None
    kernel = _kernel("persistent", dtype, "tanh")
    lens = np.resize(np.array([5, 0, 3]), Bp).astype(np.int64)
    for reverse, rs in ((False, True), (True, False)):
        kw = dict(nonlinearity="tanh", lengths=lens, reverse=reverse, leak=0.7, return_sequences=rs)
        got = persistent.scan_persistent(*arrays, plan=pl, mod=np, launch=kernel.launch, count=False, **kw)
        _check(got, scan_portable(nxp, *arrays, **kw), dtype)
    assert kernel.launches[-1][:2] == (pl.blocks, pl.threads)


def test_plans_exercise_what_they_say():
    """The plan shapes above are what their names claim (so the kernel's branches all run)."""
    k = persistent.plan(*PLANS["k-split"][:2], 4, PLANS["k-split"][2])
    assert k.kparts > 1
    assert PLANS["batch-above-accumulators"][0] > persistent._MAXB
    Bs, Hs, props, _ = PLANS["two-staging-rounds"]
    pl = persistent.plan(Bs, Hs, 4, props)
    assert pl.threads == 32 and Bs * Hs // 4 > persistent._UNROLL * pl.threads  # float32 vectors
    four = persistent.plan(B, H, 4, FOUR_SM)
    assert four.rows * four.blocks > H and four.rows > four.threads // 32 and (B * H) % 4


def test_fused_kernel_strides_over_a_small_grid(monkeypatch, dtype):
    """One block of one warp: the kernel's loops over units and over batch rows both stride."""
    monkeypatch.setattr(fused, "_THREADS", 32)
    monkeypatch.setattr(fused, "_MAX_GRID", 1)
    kernel = Kernel(fused.kernel_source(dtype, "relu"), fused.kernel_name(dtype, "relu"))
    for case in ("leak0.3-last-lengths", "leak1"):
        arrays = _inputs(dtype, "relu", case)
        _check(_run_fused(arrays, "relu", case, kernel), _expected(arrays, "relu", case), dtype)
    assert {(g, nt) for g, nt, _ in kernel.launches} == {(1, 32)}


# --- the host loop of the fused path: two launches per step, lengths or not -----------------


class _Counting:
    """A stand-in for ``cupy`` that counts the calls of its functions."""

    def __init__(self, mod):
        self._mod, self.calls = mod, collections.Counter()

    def __getattr__(self, name):
        attr = getattr(self._mod, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_fused_loop_costs_one_product_and_one_launch_per_step(with_lengths, return_sequences):
    """Each extra step adds one ``matmul`` and one kernel launch, nothing else (issue #9)."""
    costs = []
    for steps in (4, 9):
        rng = np.random.default_rng(1)
        arrays = [rng.standard_normal(s) for s in ((steps, 3, 2), (3, 4), (4, 2), (4, 4), (4,))]
        lens = np.array([steps, 0, 2]) if with_lengths else None
        mod = _Counting(np)
        launches = []
        fused.scan_fused(*arrays, nonlinearity="tanh", lengths=lens, reverse=False, leak=1.0,
                         return_sequences=return_sequences, mod=mod,
                         launch=lambda *a: launches.append(a))  # fmt: skip
        costs.append((mod.calls, len(launches)))
    (calls4, launches4), (calls9, launches9) = costs
    assert launches9 - launches4 == 5
    extra = {k: calls9[k] - calls4[k] for k in calls9 if calls9[k] != calls4[k]}
    if return_sequences:
        assert extra == {"matmul": 5}, extra
    else:  # 4 steps are 2 blocks of BLOCK_STEPS, 9 are 3: one more projection, and without
        # lengths one more copy of the state out of the reused block buffer
        assert extra == ({"matmul": 6} if with_lengths else {"matmul": 6, "copyto": 1}), extra


# --- the emulation reads the source: a planted change is seen --------------------------------


def _plant(source, old, new):
    assert source.count(old) == 1, old
    return source.replace(old, new)


SWAPPED = ("return one_minus_leak * hp + leak * a;", "return leak * hp + one_minus_leak * a;")
NO_BRANCH = ("    if (!leaky)\n        return a;\n", "")  # the leak = 1 defect: 0 * inf


@pytest.mark.parametrize("kind", ["fused", "persistent"])
@pytest.mark.parametrize("plant, case", [(SWAPPED, "leak0.3-reverse"), (NO_BRANCH, "leak1")],
                         ids=["leak-weights-swapped", "no-leak-1-branch"])  # fmt: skip
def test_a_formula_changed_in_the_cuda_text_fails(kind, plant, case):
    """The catalogue compares what the CUDA text computes: a planted change must not pass."""
    module = fused if kind == "fused" else persistent
    source = _plant(module.kernel_source("float64", "tanh"), *plant)
    kernel = Kernel(source, module.kernel_name("float64", "tanh"))
    arrays = _inputs("float64", "tanh", case)
    run = _run_fused if kind == "fused" else _run_persistent
    with pytest.raises(AssertionError, match="Mismatch|nan"):
        _check(run(arrays, "tanh", case, kernel), _expected(arrays, "tanh", case), "float64")


# --- the interpreter's own checks fail where they should --------------------------------------

_TINY = r"""
typedef float real;
extern "C" __global__ void __launch_bounds__(64) k(real* out, const real* in, const int n, const int mode)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    real* s = (real*)smem_raw;
    const int t = threadIdx.x;
    s[t] = in[blockIdx.x * blockDim.x + t];
    if (mode != 1 && mode != 2) __syncthreads();
    if (mode == 2 && t < 32) __syncthreads();
    const int u = mode == 3 ? t + 1 : (t + 1) % blockDim.x;
    out[blockIdx.x * blockDim.x + t] = s[u] + (mode == 4 ? in[0] : (real)0) * (real)n;
    if (mode == 5) out[0] = (real)1;
}
"""


@pytest.mark.parametrize(
    "mode, error",
    [(1, "race on shared"), (2, "not reached by every thread"), (3, "out of bounds"), (5, "race on global")],
)  # fmt: skip
def test_emulator_reports_what_a_gpu_would_not(mode, error):
    kernel = Kernel(_TINY, "k")
    src = np.arange(128, dtype=np.float32)
    kernel.launch((2,), (64,), (np.zeros(128, np.float32), src, np.int32(1), np.int32(0)), 64 * 4)  # fine
    with pytest.raises(EmulatorError, match=error):
        kernel.launch((2,), (64,), (np.zeros(128, np.float32), src, np.int32(1), np.int32(mode)), 64 * 4)


def test_emulator_runs_the_tiny_kernel_right():
    kernel = Kernel(_TINY, "k")
    src = np.arange(128, dtype=np.float32)
    out = np.zeros(128, np.float32)
    kernel.launch((2,), (64,), (out, src, np.int32(3), np.int32(4)), 64 * 4)
    np.testing.assert_array_equal(out, np.roll(src.reshape(2, 64), -1, axis=1).reshape(-1))


def _tiny_args():
    return [np.zeros(128, np.float32), np.arange(128, dtype=np.float32), np.int32(1), np.int32(0)]


@pytest.mark.parametrize(
    "i, bad, error",
    [(0, np.zeros(128, np.float64), "float32"), (0, np.zeros(256, np.float32)[::2], "C-contiguous"),
     (2, 1, "numpy.int32"), (3, np.int64(0), "numpy.int32")],
)  # fmt: skip
def test_emulator_checks_argument_types(i, bad, error):
    args = _tiny_args()
    args[i] = bad
    with pytest.raises(EmulatorError, match=error):
        Kernel(_TINY, "k").launch((2,), (64,), tuple(args), 64 * 4)


def test_emulator_refuses_too_many_threads():
    with pytest.raises(EmulatorError, match="launch_bounds"):
        Kernel(_TINY, "k").launch((1,), (128,), (np.zeros(128, np.float32), np.zeros(128, np.float32),
                                                 np.int32(1), np.int32(0)), 128 * 4)  # fmt: skip


def test_persistent_kernel_without_its_barrier_races():
    """Without the grid barrier a block would stage h_{t-1} before the others wrote it."""
    source = _plant(persistent.kernel_source("float32", "tanh"),
                    "if (s + 1 < n) grid_barrier(barrier);", "")  # fmt: skip
    kernel = Kernel(source, persistent.kernel_name("float32", "tanh"))
    with warnings.catch_warnings(), pytest.raises(EmulatorError, match="race on global 'state'"):
        warnings.simplefilter("ignore")
        _run_persistent(_inputs("float32", "tanh", "leak1"), "tanh", "leak1", kernel)


def test_persistent_kernel_with_one_state_buffer_races():
    """Reading and writing one buffer in a step (no double buffer) is a race between blocks."""
    source = _plant(persistent.kernel_source("float32", "tanh"),
                    "real* h_next = state + (size_t)((parity0 + s + 1) & 1) * BHp;",
                    "real* h_next = state + (size_t)((parity0 + s) & 1) * BHp;")  # fmt: skip
    kernel = Kernel(source, persistent.kernel_name("float32", "tanh"))
    with pytest.raises(EmulatorError, match="race on global 'state'"):
        _run_persistent(_inputs("float32", "tanh", "leak1"), "tanh", "leak1", kernel)


# --- any cell: the kernels generated from the cell's step (kernels.cupy_cells) ----------------
#
# The host loop of scan_cells runs with NumPy in CuPy's place and its kernels through the
# interpreter; the answer is portable.scan_cell's. Between them the cases run every
# activation's C (sigmoid, tanh, relu, hard_sigmoid, elu, softsign, softplus,
# thresholded_relu, leaky_relu, scaled_tanh, affine), clip, peepholes, input_forget, an
# LSTM's projection (a product after the kernel) and a GRU's reset before its product (two
# kernels a step).

from dataclasses import dataclass  # noqa: E402

from rnn_xp.cells import ElmanCell, ElmanWeights, GRUCell, GRUWeights, LSTMCell, LSTMWeights  # noqa: E402
from rnn_xp.kernels import cupy_cells  # noqa: E402
from rnn_xp.kernels.portable import scan_cell  # noqa: E402

GATED = {
    "lstm": (LSTMCell(), {}),
    "lstm-options": (LSTMCell(("hard_sigmoid", "elu", "softsign"), (0.3, 0.7, None), (0.4, None, None), clip=2.5,
                              input_forget=True), {"proj": 3, "peepholes": True}),
    "lstm-relu-thresholded": (LSTMCell(("sigmoid", "relu", "thresholded_relu"), (None, None, 0.1)),
                              {"peepholes": True}),
    "gru": (GRUCell(), {}),
    "gru-reset-before": (GRUCell(("leaky_relu", "softplus"), (0.2, None), clip=3.0, linear_before_reset=False),
                         {}),
    "gru-affine-scaled-tanh": (GRUCell(("affine", "scaled_tanh"), (0.25, 1.3), (0.45, 0.8)), {}),
    "elman-elu-clip-leak": (ElmanCell("elu", 0.8, clip=1.5, leak=0.6), {}),  # any cell: Elman's options too
}  # fmt: skip
GATED_RUNS = {
    # name: (reverse, return_sequences, lengths, mask)
    "plain": (False, True, None, None),
    "lengths-reverse-last": (True, False, (T, 0, 3, T, 1), None),  # three blocks of time steps
    "mask": (False, True, None, True),
}
CELL_H = 6


def _cell_inputs(name, dtype, run):
    """Time-major NumPy arrays; sequence 1 starts from an infinite unit, sequence 2 reads a NaN."""
    cell, shape = GATED[name]
    rng = np.random.default_rng(20260602)
    G, Hc = cell.gates, CELL_H
    P = shape.get("proj", Hc)
    x = rng.standard_normal((T, B, D))
    w = {"W_ih": rng.standard_normal((G * Hc, D)) * 0.8, "W_hh": rng.standard_normal((G * Hc, P)) * 0.6,
         "b_ih": rng.standard_normal(G * Hc) * 0.3, "b_hh": rng.standard_normal(G * Hc) * 0.3}  # fmt: skip
    if cell.name == "elman":
        w = {"Wx": w["W_ih"], "Wh": w["W_hh"], "b": w["b_ih"]}
        state0 = [rng.standard_normal((B, Hc)) * 0.5]
        state0[0][1, 2] = np.inf
        Weights = ElmanWeights
    elif cell.name == "lstm":
        w["W_hr"] = rng.standard_normal((P, Hc)) * 0.7 if "proj" in shape else None
        w["peepholes"] = rng.standard_normal(3 * Hc) * 0.5 if shape.get("peepholes") else None
        state0 = [rng.standard_normal((B, P)) * 0.5, rng.standard_normal((B, Hc)) * 0.5]
        state0[1][1, 2] = np.inf
        Weights = LSTMWeights
    else:
        state0 = [rng.standard_normal((B, Hc)) * 0.5]
        state0[0][1, 2] = np.inf
        Weights = GRUWeights
    x[3, 2, 1] = np.nan
    reverse, rs, lengths, mask = GATED_RUNS[run]
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    if mask is not None:
        mask = rng.random((T, B)) > 0.4
        mask[0, 0] = mask[:, 3] = False  # a masked first step; a sequence masked throughout
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    opts = dict(lengths=lens, mask=mask, reverse=reverse, return_sequences=rs)
    return cell, cast(x), tuple(cast(s) for s in state0), Weights(**{k: cast(v) for k, v in w.items()}), opts


def _launcher(launched):
    """``scan_cells``'s launcher with the interpreter: each kernel of the source parsed once."""

    def launcher(source):
        def launch(name):
            kernel = _kernel("cells", None, name, source)
            return lambda grid, block, args: (launched.append(name), kernel.launch(grid, block, args, 0))

        return launch

    return launcher


@pytest.mark.parametrize("run", list(GATED_RUNS))
@pytest.mark.parametrize("cell", list(GATED))
def test_cell_kernels_give_the_portable_answer(dtype, cell, run):
    c, x, state0, w, opts = _cell_inputs(cell, dtype, run)
    launched = []
    with np.errstate(all="ignore"):
        got = cupy_cells.scan_cells(c, x, state0, w, mod=np, launcher=_launcher(launched), **opts)
        want = scan_cell(nxp, c, x, state0, w, **opts)
    for part, (g, ww) in enumerate(zip((got[0] or ()) + got[1], (want[0] or ()) + want[1])):
        assert g.dtype == ww.dtype and g.shape == ww.shape, part
        np.testing.assert_allclose(g, ww, err_msg=f"part {part}", **TOL[dtype])  # NaN and inf alike
    p = cupy_cells.plan(c, w, tuple(s.shape[-1] for s in state0), CELL_H)
    post = [i for i in p.program.post if i is not None]
    per_step = p.stages + 1 + (len(post) if opts["lengths"] is not None or opts["mask"] is not None else 0)
    assert len(launched) == T * per_step  # one kernel a step (two for the reset before the product)
    assert per_step == {"lstm-options": 2 if run != "plain" else 1, "gru-reset-before": 2}.get(cell, 1)


@dataclass(frozen=True)
class _HalfStepGRU(GRUCell):
    """A cell the package does not know: a GRU whose state moves half way to the GRU's new state."""

    def step(self, xp, xg_t, state, w, fixed):
        (new,) = super().step(xp, xg_t, state, w, fixed)
        return (0.5 * (new + state[0]),)


def test_cell_kernels_follow_the_cells_definition():
    """A new cell's step is read off its own definition: no formula of the fused loop to change."""
    _, x, state0, w, opts = _cell_inputs("gru", "float64", "mask")
    c = _HalfStepGRU()
    launched = []
    with np.errstate(all="ignore"):
        got = cupy_cells.scan_cells(c, x, state0, w, mod=np, launcher=_launcher(launched), **opts)
        want = scan_cell(nxp, c, x, state0, w, **opts)
        plain = scan_cell(nxp, GRUCell(), x, state0, w, **opts)
    np.testing.assert_allclose(got[0][0], want[0][0], **TOL["float64"])
    assert not np.allclose(got[0][0], plain[0][0], equal_nan=True)
    assert launched == [cupy_cells.LAST] * T


@pytest.mark.parametrize(
    "cell, run, old, new",
    [("lstm", "plain", "tanhf(", "expf("), ("gru", "lengths-reverse-last", "s0[r] = valid ? ", "s0[r] = 1 ? "),
     ("lstm-options", "mask", "prev[r] = o;", "prev[r] = v;")],
    ids=["an-activation", "the-state-kept-past-a-length", "the-projection's-repeated-output"],
)  # fmt: skip
def test_a_change_in_the_generated_cuda_fails(cell, run, old, new):
    """The catalogue runs the generated text: a planted change in it must not pass."""
    c, x, state0, w, opts = _cell_inputs(cell, "float32", run)

    def planted(source):
        assert old in source, old
        return _launcher([])(source.replace(old, new))

    with np.errstate(all="ignore"), pytest.raises(AssertionError, match="Mismatch|nan"):
        got = cupy_cells.scan_cells(c, x, state0, w, mod=np, launcher=planted, **opts)
        want = scan_cell(nxp, c, x, state0, w, **opts)
        for g, ww in zip((got[0] or ()) + got[1], (want[0] or ()) + want[1]):
            np.testing.assert_allclose(g, ww, **TOL["float32"])


@dataclass(frozen=True)
class _ConcatGRU(GRUCell):
    """A step the fused loop cannot read: it concatenates (the state doubled, then its halves added)."""

    def step(self, xp, xg_t, state, w, fixed):
        (new,) = super().step(xp, xg_t, state, w, fixed)
        both = xp.concat([new, new], axis=-1)
        H = new.shape[-1]
        return (0.5 * (both[..., :H] + both[..., H:]),)


def test_a_step_the_tracer_cannot_read_runs_the_portable_loop():
    from rnn_xp import kernels
    from rnn_xp.kernels._pointwise import TraceError

    _, x, state0, w, opts = _cell_inputs("gru", "float64", "plain")
    c = _ConcatGRU()
    with pytest.raises(TraceError, match="concat"):
        cupy_cells.plan(c, w, (CELL_H,), CELL_H)
    with np.errstate(all="ignore"):  # the CuPy row, NumPy arrays standing in: the portable loop, no CUDA
        got = kernels.cupy_cells_forward(nxp, c, x, state0, w, **opts)
        want = scan_cell(nxp, c, x, state0, w, **opts)
    np.testing.assert_array_equal(got[0][0], want[0][0])
