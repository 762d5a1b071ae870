"""The persistent CuPy kernel (``rnn_xp.kernels.cupy_persistent``): sizes, checks, guards and results.

Without a GPU (these run everywhere):

- the launch plan, with fake device properties (the path it is chosen by,
  and ``RNN_XP_CUPY_PATH``: ``tests/kernels/test_kernel_table.py``);
- the checks before use and the guard on every launch: a failure (a
  mismatch, a compile or launch error, an occupancy refusal) gives the fused
  path's result and one ``RuntimeWarning``, never an exception; every plan
  (B, H) is checked on first use; the launch count is thread-safe and leaves
  out the checks' own launches;
- the same end to end, with both kernels' CUDA source run by the
  interpreter of ``tests/kernels/cuda_emulator.py`` (a planted error in the source is
  caught by the check).

The kernel's arithmetic on the whole edge catalogue is in
``tests/kernels/test_kernel_cupy_emulated.py``, its compilation for every
architecture in ``tests/kernels/test_kernel_cupy_compile.py``.

With a CUDA device: the self-check on every class of plan, the kernel forced
against the float64 reference and the fused path on every option, the path
choice. Without one they skip with the reason ("no CUDA device ...").
"""

from __future__ import annotations

import re
import threading
import warnings

import array_api_compat.numpy as nxp
import numpy as np
import pytest

import rnn_xp
from rnn_xp import kernels
from cuda_emulator import Kernel
from rnn_xp.kernels import _blocks
from rnn_xp.kernels import cupy_fused as fused
from rnn_xp.kernels import cupy_persistent as persistent
from rnn_xp.kernels.portable import scan_portable
from support import assert_close, made_up_gpu, random_rnn, reference_rnn, to_numpy

from support import make_backend

ACTIVATIONS = ["tanh", "relu"]

H100, SMALL_GPU = made_up_gpu("h100"), made_up_gpu("small")


def test_source_variants_differ_only_where_they_should():
    a = persistent.kernel_source("float32", "tanh")
    assert "typedef float real;" in a and "tanhf(z)" in a and "#define VEC 4" in a
    assert "typedef double real;" in persistent.kernel_source("float64", "relu")
    assert "#define VEC 2" in persistent.kernel_source("float64", "relu")
    assert not re.search(r"^\s*#\s*include", a, re.M)  # no header: NVRTC here has none
    assert not re.search(r"\{(real|activate|name|maxb|threads|vec|unroll|step|load_batch)\}", a)
    with pytest.raises(ValueError, match="dtype"):
        persistent.kernel_source("float16", "tanh")
    with pytest.raises(ValueError, match="nonlinearity"):
        persistent.kernel_source("float32", "sigmoid")


def test_state_stride_is_whole_16_byte_vectors():
    assert persistent.state_stride(3, 37, 4) == 112 and persistent.state_stride(3, 37, 8) == 112
    assert persistent.state_stride(2, 8, 4) == 16 and persistent.state_stride(1, 1, 8) == 2


# --- the plan and the path: pure functions of numbers --------------------------------------


@pytest.mark.parametrize("props", [H100, SMALL_GPU], ids=["h100", "small"])
@pytest.mark.parametrize("itemsize", [4, 8])
def test_plan_covers_every_row_once_and_fits(props, itemsize):
    for B in (1, 3, 8, 16):
        for H in (1, 5, 31, 64, 131, 132, 133, 256, 1000, 1024, 2048):
            pl = persistent.plan(B, H, itemsize, props)
            if pl is None:
                continue
            R, G = pl.rows, pl.blocks
            assert G * R >= H and (G - 1) * R < H, (B, H, pl)  # every row, no empty block
            assert G <= props.sm_count  # one block per SM: co-resident
            assert pl.threads % 32 == 0 and 32 <= pl.threads <= persistent._THREADS
            assert pl.kparts == max(1, pl.threads // 32 // R)
            need = (R * H + B * H + B * R + pl.kparts * R * B) * itemsize
            assert pl.smem_bytes == need  # the source's shared-memory layout
            assert need <= props.smem_per_block_optin
            assert need + props.reserved_smem_per_block <= props.smem_per_sm


# --- the checks before use and the guard on every launch (no GPU: the CUDA side is replaced) ---


@pytest.fixture
def fresh(monkeypatch):
    """Empty tables of checked plans and switched-off kernels, and a device 7 of 4 SMs."""
    monkeypatch.setattr(persistent, "_PLANS", {})
    monkeypatch.setattr(persistent, "_OFF", {})
    monkeypatch.setattr(persistent, "_PROPS", {7: SMALL_GPU})
    monkeypatch.setattr(persistent, "_occupancy_problem", lambda *a: None)


def _runtime_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_each_plan_is_checked_once_and_a_failure_warns_once(monkeypatch, fresh):
    calls = []

    def compare(dtype_name, nonlinearity, B, H, pl, mod):
        calls.append((dtype_name, nonlinearity, B, H))
        assert pl == persistent.plan(B, H, np.dtype(dtype_name).itemsize, SMALL_GPU)  # the very plan
        return None if B == 3 else f"B={B}, H={H}: states differ by up to 0.5"

    monkeypatch.setattr(persistent, "_compare", compare)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert persistent.self_check(7, "float32", "relu", 3, 10, mod=np) is True
        assert persistent.self_check(7, "float32", "relu", 3, 10, mod=np) is True  # remembered
        assert persistent.self_check(7, "float32", "relu", 3, 20, mod=np) is True  # a new plan: checked
        assert persistent.self_check(7, "float32", "relu", 4, 10, mod=np) is False  # fails: off
        assert persistent.self_check(7, "float32", "relu", 3, 10, mod=np) is False  # off for all plans
        assert persistent.self_check(7, "float32", "relu", 5, 10, mod=np) is False
        assert persistent.self_check(7, "float64", "relu", 3, 10, mod=np) is True  # another dtype
    assert calls == [("float32", "relu", 3, 10), ("float32", "relu", 3, 20), ("float32", "relu", 4, 10),
                     ("float64", "relu", 3, 10)]  # fmt: skip
    (message,) = _runtime_warnings(caught)
    assert "float32, relu" in message and "device 7" in message and "B=4, H=10" in message
    assert "0.5" in message and "fused path" in message


@pytest.mark.parametrize("where", ["occupancy", "compile"])
def test_a_check_that_cannot_run_switches_the_kernel_off_with_a_warning(monkeypatch, fresh, where):
    if where == "occupancy":
        monkeypatch.setattr(persistent, "_occupancy_problem", lambda *a: "the occupancy API allows 0 block(s)")
    else:
        def compare(*a):
            raise RuntimeError("nvrtc: error: CUDA_ERROR_INVALID_PTX")

        monkeypatch.setattr(persistent, "_compare", compare)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert persistent.self_check(7, "float32", "tanh", 3, 10, mod=np) is False
        assert persistent.self_check(7, "float32", "tanh", 3, 10, mod=np) is False
    (message,) = _runtime_warnings(caught)
    assert {"occupancy": "occupancy API", "compile": "INVALID_PTX"}[where] in message


def test_a_size_without_a_plan_is_no_failure_of_the_kernel(monkeypatch, fresh):
    """No plan (h does not fit on chip): False, no warning, the kernel stays on for other sizes."""
    monkeypatch.setattr(persistent, "_compare", lambda *a: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert persistent.self_check(7, "float32", "tanh", 64, 4096, mod=np) is False
        assert persistent.self_check(7, "float32", "tanh", 3, 10, mod=np) is True


def _small_problem(B=3, H=10, T=4, dtype="float32"):
    return [a.astype(dtype) for a in random_rnn(np.random.default_rng(5), T, (B,), 2, H)]


def _run_checked(arrays, **kw):
    opts = dict(nonlinearity="tanh", lengths=None, reverse=False, leak=1.0, return_sequences=True)
    opts.update(kw)
    return persistent.run_checked(*arrays, device_id=7, mod=np, **opts)


def test_a_launch_error_on_the_callers_data_gives_none_and_one_warning(monkeypatch, fresh):
    """``run_checked`` returns None (the caller runs the fused path), warns once, stays off."""
    monkeypatch.setattr(persistent, "_compare", lambda *a: None)
    runs = []

    def failing(*args, **kw):
        runs.append(kw["plan"])
        raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED: unspecified launch failure")

    monkeypatch.setattr(persistent, "scan_persistent", failing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _run_checked(_small_problem()) is None
        assert _run_checked(_small_problem()) is None
    assert len(runs) == 1  # not tried again
    (message,) = _runtime_warnings(caught)
    assert "a launch failed" in message and "LAUNCH_FAILED" in message


def test_launch_count_is_thread_safe_and_leaves_out_the_checks(monkeypatch, fresh):
    """Launches made while another thread runs a check all count (issue 14, #10)."""
    arrays = _small_problem()
    pl = persistent.plan(3, 10, 4, SMALL_GPU)
    noop = lambda *a: None  # noqa: E731
    started, others_done = threading.Event(), threading.Event()

    def compare(dtype_name, nonlinearity, B, H, pl_, mod):
        persistent.scan_persistent(*arrays, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
                                   return_sequences=True, plan=pl_, mod=np, launch=noop, count=False)  # fmt: skip
        started.set()
        assert others_done.wait(10)
        return None

    monkeypatch.setattr(persistent, "_compare", compare)
    before = persistent.launches()
    checker = threading.Thread(target=persistent.self_check, args=(7, "float32", "tanh", 3, 10),
                               kwargs=dict(mod=np))  # fmt: skip
    checker.start()
    assert started.wait(10)

    def callers():
        for _ in range(25):
            persistent.scan_persistent(*arrays, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
                                       return_sequences=True, plan=pl, mod=np, launch=noop)  # fmt: skip

    threads = [threading.Thread(target=callers) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    others_done.set()
    checker.join()
    assert persistent.launches() - before == 4 * 25  # every caller launch, none of the check's


# --- end to end on the CPU: both kernels' CUDA source run by the interpreter ----------------


@pytest.fixture
def interpreted(monkeypatch, fresh):
    """The CUDA side of ``run_checked``: both kernels run by ``tests/kernels/cuda_emulator.py``; short checks."""
    kernels = {}

    def launcher(module):
        def make(dtype_name, nonlinearity):
            key = (module.__name__, dtype_name, nonlinearity)
            if key not in kernels:
                kernels[key] = Kernel(module.kernel_source(dtype_name, nonlinearity),
                                      module.kernel_name(dtype_name, nonlinearity))  # fmt: skip
            return kernels[key].launch

        return make

    monkeypatch.setattr(persistent, "_cooperative_launch", launcher(persistent))
    monkeypatch.setattr(fused, "_launch", launcher(fused))
    monkeypatch.setattr(persistent, "_CHECK_SIZES", dict(T=5, D=2))
    monkeypatch.setattr(persistent, "_CHECK_CASES", (dict(lengths=(5, 2, 0), reverse=True, leak=0.6),
                                                     dict(return_sequences=False, leak=0.3)))  # fmt: skip
    monkeypatch.setattr(_blocks, "BLOCK_STEPS", 3)
    return kernels


def test_run_checked_end_to_end(interpreted):
    arrays = _small_problem(B=3, H=10, T=7)
    lens = np.array([7, 0, 4])
    before = persistent.launches()
    got = _run_checked(arrays, lengths=lens, reverse=True, return_sequences=False)
    want = scan_portable(nxp, *arrays, nonlinearity="tanh", lengths=lens, reverse=True, leak=1.0,
                         return_sequences=False)  # fmt: skip
    assert got[0] is None
    np.testing.assert_allclose(got[1], want[1], rtol=2e-4, atol=2e-5)
    assert persistent.launches() - before == 3  # 7 steps in blocks of 3: the caller's launches only
    launched = interpreted[(persistent.__name__, "float32", "tanh")].launches
    pl = persistent.plan(3, 10, 4, SMALL_GPU)
    assert {(g, nt) for g, nt, _ in launched} == {(pl.blocks, pl.threads)}  # the check ran this plan
    assert len(launched) == 1 + 2 + 3  # the check's two cases (5 steps: 1 and 2 launches), then ours
    again = _run_checked(arrays, lengths=lens, reverse=True, return_sequences=False)
    np.testing.assert_array_equal(again[1], got[1])
    assert len(launched) == 6 + 3  # no second check


def test_a_wrong_kernel_is_caught_by_the_check(monkeypatch, interpreted):
    """A persistent kernel that computes the wrong thing: the fused path, one warning."""
    swapped = persistent.kernel_source("float32", "tanh").replace(
        "real z = xs[i] + dot;", "real z = xs[i] - dot;")  # fmt: skip
    wrong = Kernel(swapped, persistent.kernel_name("float32", "tanh"))
    monkeypatch.setattr(persistent, "_cooperative_launch", lambda *a: wrong.launch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _run_checked(_small_problem()) is None
        assert _run_checked(_small_problem()) is None
    (message,) = _runtime_warnings(caught)
    assert "differ by up to" in message and "B=3, H=10" in message


def test_host_loop_no_bias_and_batch_dims(rng):
    x, h0, Wx, Wh, _ = random_rnn(rng, 6, (2, 3), 4, 9)
    expected, last = reference_rnn(x, h0, Wx, Wh, None)
    pl = persistent.plan(6, 9, 8, SMALL_GPU)
    kernel = Kernel(persistent.kernel_source("float64", "tanh"), persistent.kernel_name("float64", "tanh"))
    seq, fin = persistent.scan_persistent(
        x, h0, Wx, Wh, None, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
        return_sequences=True, plan=pl, mod=np, launch=kernel.launch, count=False,
    )  # fmt: skip
    np.testing.assert_allclose(seq, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fin, last, rtol=1e-10, atol=1e-12)
    assert fin.shape == (2, 3, 9) and not np.shares_memory(fin, seq)


# --- on a CUDA device ----------------------------------------------------------------------


@pytest.fixture
def gpu():
    return make_backend("cupy")  # skips with the reason: "no CUDA device ..." or "cupy not installed"


def _lengths(B, T):
    return np.resize(np.array([T, T // 2, 0, 1, T - 1, 5, T, 12]), B)


def _ids(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "plain"


GPU_OPTIONS = [
    dict(),
    dict(nonlinearity="relu"),
    dict(reverse=True, leak=0.3),
    dict(lengths=True),
    dict(lengths=True, reverse=True, leak=0.6, nonlinearity="relu"),
]


def _forward(arrays, path, **kw):
    """``rnn_forward`` with ``path`` forced; returns (result, persistent launches it made)."""
    before = persistent.launches()
    with persistent.forced_path(path), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback must not pass unseen
        out = rnn_xp.rnn_forward(*arrays, **kw)
    return out, persistent.launches() - before


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gpu_self_check_passes_on_every_class_of_plan(gpu, dtype, act, monkeypatch):
    """Small, above 48 KiB of shared memory (the opt-in), a grid on every SM, k split, B > MAXB."""
    monkeypatch.setattr(persistent, "_PLANS", {})
    monkeypatch.setattr(persistent, "_OFF", {})
    props = persistent.device_props(0)
    itemsize = np.dtype(dtype).itemsize
    sizes = [(3, 300), (8, 1024), (2, 2 * props.sm_count), (4, 64), (12, 256), (1, 1)]
    plans = {}
    for B, H in sizes:
        pl = persistent.plan(B, H, itemsize, props)
        if pl is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert persistent.self_check(0, dtype, act, B, H) is True, (B, H, pl)
        plans[(B, H)] = pl
    assert any(pl.smem_bytes > 48 * 1024 for pl in plans.values()), plans
    assert any(pl.blocks == props.sm_count for pl in plans.values()), plans
    assert any(pl.kparts > 1 for pl in plans.values()), plans


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gpu_leak_1_keeps_an_infinite_state_out_of_nan(gpu, act):
    """leak = 1 with an infinite unit of h0: f(z), never 0 * inf (issue 14, #1), on the kernel."""
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(3), 4, (2,), 3, 6)
    h0[0, 1] = np.inf
    arrays = [gpu.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)]
    got, launches = _forward(arrays, "persistent", nonlinearity=act)
    assert launches == 1
    with np.errstate(all="ignore"):
        want = scan_portable(nxp, x, h0, Wx, Wh, b, nonlinearity=act, lengths=None, reverse=False,
                             leak=1.0, return_sequences=True)[0]  # fmt: skip
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opts", GPU_OPTIONS, ids=_ids)
@pytest.mark.parametrize("H", [64, 256, 1024])
@pytest.mark.parametrize("B", [1, 4, 8])
def test_gpu_persistent_matches_reference_and_fused(gpu, dtype, rng, opts, B, H):
    T, D = 37, 16  # 37 > _blocks.BLOCK_STEPS: return_sequences=False takes two launches
    x, h0, Wx, Wh, b = random_rnn(rng, T, (B,), D, H)
    kw = dict(opts)
    lengths = _lengths(B, T) if kw.pop("lengths", False) else None
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, **kw)
    arrays = [gpu.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    if lengths is not None:
        kw["lengths"] = gpu.asarray(lengths)
    for rs in (True, False):
        got, launches = _forward(arrays, "persistent", return_sequences=rs, **kw)
        assert launches == (1 if rs else 2), "the persistent kernel did not run"
        fused, none = _forward(arrays, "fused", return_sequences=rs, **kw)
        assert none == 0
        assert_close(got, expected if rs else last, gpu, dtype)
        assert_close(got, to_numpy(fused), gpu, dtype)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gpu_long_sequence(gpu, dtype, rng, act):
    T, B, D, H = 200, 8, 64, 1024
    x, h0, Wx, Wh, b = random_rnn(rng, T, (B,), D, H)
    lengths = _lengths(B, T)
    expected, last = reference_rnn(x, h0, Wx, Wh, b, nonlinearity=act, lengths=lengths,
                                   reverse=True, leak=0.8)  # fmt: skip
    arrays = [gpu.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    kw = dict(nonlinearity=act, lengths=gpu.asarray(lengths), reverse=True, leak=0.8)
    got, launches = _forward(arrays, "persistent", **kw)
    assert launches == 1
    assert_close(got, expected, gpu, dtype)
    fin, launches = _forward(arrays, "persistent", return_sequences=False, **kw)
    assert launches == 7  # 200 steps in blocks of 32
    assert_close(fin, last, gpu, dtype)


def test_gpu_batch_dims_and_batch_first(gpu, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 9, (2, 3), 5, 70)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    arrays = [gpu.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)]
    got, launches = _forward(arrays, "persistent")
    assert launches == 1
    assert_close(got, expected, gpu, "float64")
    x_bf = gpu.asarray(np.moveaxis(x, 0, -2), "float64")
    got, launches = _forward([x_bf, *arrays[1:]], "persistent", batch_first=True)
    assert launches == 1
    assert_close(got, np.moveaxis(expected, 0, -2), gpu, "float64")


def test_gpu_auto_path_follows_the_batch_size(gpu, rng):
    for B, runs in ((4, 1), (kernels.PERSISTENT_MAX_BATCH + 1, 0)):
        x, h0, Wx, Wh, b = random_rnn(rng, 5, (B,), 3, 256)
        arrays = [gpu.asarray(a, "float32") for a in (x, h0, Wx, Wh, b)]
        got, launches = _forward(arrays, "auto")
        assert launches == runs, B
        assert_close(got, reference_rnn(x, h0, Wx, Wh, b)[0], gpu, "float32")


def test_gpu_forced_but_not_eligible_warns_and_is_right(gpu, rng):
    """h (B, H) alone exceeds any GPU's shared memory per block: the fused path runs."""
    x, h0, Wx, Wh, b = random_rnn(rng, 3, (64,), 4, 2048)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    arrays = [gpu.asarray(a, "float32") for a in (x, h0, Wx, Wh, b)]
    before = persistent.launches()
    with persistent.forced_path("persistent"), pytest.warns(RuntimeWarning, match="not eligible"):
        got = rnn_xp.rnn_forward(*arrays)
    assert persistent.launches() == before
    assert_close(got, expected, gpu, "float32")
