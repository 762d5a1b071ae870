"""The persistent CuPy kernel (``rnn_xp.kernels.cupy_persistent``): its source, sizes and path, and its results.

Without a GPU (these run everywhere):

- the generated CUDA source compiles with NVRTC for every (dtype, activation),
  to PTX and to sm_90 machine code without register spills;
- the launch plan, the path heuristic and ``RNN_XP_CUPY_PATH`` are checked
  with fake device properties;
- the host loop (``scan_persistent``: arguments, blocks of time, the state's
  double buffer) runs with NumPy and an emulation of the kernel that checks
  every argument against the kernel's parameter list, and is compared with
  the float64 reference.

With a CUDA device: the kernel, forced, against the float64 reference and the
fused path on every option; the self-check; the path choice. Without one they
skip with "no CUDA device".
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import rnn_xp
from rnn_xp.kernels import cupy_persistent as persistent
from rnn_xp.kernels import numpy as numpy_kernel
from support import assert_close, optional_import, random_rnn, reference_rnn, to_numpy

from conftest import make_backend

ACTIVATIONS = ["tanh", "relu"]

# An H100 SXM as CUDA reports it: 132 SMs, 227 KiB per block (opt-in), 228 KiB per SM.
H100 = persistent.DeviceProps(sm_count=132, smem_per_block_optin=232448, smem_per_sm=233472,
                              reserved_smem_per_block=1024, max_threads_per_block=1024,
                              cooperative_launch=True)  # fmt: skip
SMALL_GPU = persistent.DeviceProps(sm_count=4, smem_per_block_optin=49152, smem_per_sm=65536,
                                   reserved_smem_per_block=0, max_threads_per_block=1024,
                                   cooperative_launch=True)  # fmt: skip


# --- the CUDA source, compiled by NVRTC (no GPU needed) ------------------------------------


def _nvrtc():
    if optional_import("cupy") is None:
        pytest.skip("cupy not installed")
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # the library is loaded on first use
        pytest.skip(f"cupy.cuda.nvrtc cannot load libnvrtc: {exc}")
    return nvrtc


def _compile(dtype, act, options):
    """``(ptx, log)`` for one variant, or a test failure showing NVRTC's log."""
    nvrtc = _nvrtc()
    name = persistent.kernel_name(dtype, act)
    prog = nvrtc.createProgram(persistent.kernel_source(dtype, act), f"{name}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, ["-std=c++14", "-ftz=true", *options])
        except Exception:
            pytest.fail(f"NVRTC failed on {name}:\n{nvrtc.getProgramLog(prog)}")
        return nvrtc.getPTX(prog).decode(), nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)


@pytest.mark.parametrize("arch", ["compute_60", "compute_90"])  # cooperative launch: sm_60+
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_source_compiles_to_ptx(dtype, act, arch):
    ptx, _ = _compile(dtype, act, [f"-arch={arch}"])
    name = persistent.kernel_name(dtype, act)
    header = re.search(rf"\.visible \.entry {name}\((.*?)\)", ptx, re.S)
    assert header, "extern \"C\": the name must not be mangled"
    assert header.group(1).count(f"{name}_param_") == len(_kernel_params(dtype, act))
    assert "atom.global.add.u32" in ptx  # the barrier's arrival
    assert "ld.volatile.global.u32" in ptx  # the barrier's spin, not cached in L1
    assert "membar.gl" in ptx or "fence.sc.gpu" in ptx  # __threadfence
    assert "ld.global.cg" in ptx  # h_{t-1} read through L2
    assert "shfl.sync.bfly" in ptx  # warp reductions
    fma = "fma.rn.f64" if dtype == "float64" else "fma.rn.ftz.f32"
    assert fma in ptx, f"no {fma}: the dot products are not in {dtype}"
    other = "fma.rn.f64" if dtype == "float32" else "fma.rn.ftz.f32"
    if act == "relu":  # tanh's own code may use the other precision; relu must not
        assert other not in ptx


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_machine_code_for_h100_has_no_spills(dtype, act):
    _, log = _compile(dtype, act, ["-arch=sm_90", "--ptxas-options=-v"])
    assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in log, log
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    assert regs * persistent._THREADS <= 65536, log  # one block fits an SM's registers


def test_source_variants_differ_only_where_they_should():
    a = persistent.kernel_source("float32", "tanh")
    assert "typedef float real;" in a and "tanhf(z)" in a
    assert not re.search(r"^\s*#\s*include", a, re.M)  # no header: NVRTC here has none
    assert "typedef double real;" in persistent.kernel_source("float64", "relu")
    assert not re.search(r"\{(real|activate|name|maxb|threads)\}", a)  # every field filled
    with pytest.raises(ValueError, match="dtype"):
        persistent.kernel_source("float16", "tanh")
    with pytest.raises(ValueError, match="nonlinearity"):
        persistent.kernel_source("float32", "sigmoid")


def _kernel_params(dtype, act):
    """``[(C type, name), ...]`` of the kernel, read from its source."""
    src = persistent.kernel_source(dtype, act)
    sig = re.search(rf"{persistent.kernel_name(dtype, act)}\((.*?)\)\s*\{{", src, re.S).group(1)
    params = []
    for p in sig.split(","):
        ctype, name = p.strip().replace("__restrict__", "").rsplit(None, 1)
        params.append((" ".join(ctype.split()), name.strip("*")))
    return params


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


@pytest.mark.parametrize(
    "B, H, itemsize, props, expected",
    [
        (1, 256, 4, H100, "persistent"),  # the small-batch grid of issue #5
        (4, 512, 4, H100, "persistent"),
        (8, 1024, 4, H100, "persistent"),
        (8, 1024, 8, H100, "persistent"),
        (8, 2048, 4, H100, "persistent"),  # 16 rows of Wh per SM: 128 KiB + h 64 KiB
        (8, 2560, 4, H100, "fused"),  # Wh does not fit on chip
        (8, 2048, 8, H100, "fused"),
        (16, 256, 4, H100, "fused"),  # above PERSISTENT_MAX_BATCH
        (128, 1760, 4, H100, "fused"),  # DeepBench
        (8, 1024, 4, SMALL_GPU, "fused"),  # 4 SMs: 256 rows each do not fit 48 KiB
        (8, 64, 4, SMALL_GPU, "persistent"),
        (8, 1024, 2, H100, "fused"),  # float16: no kernel
        (0, 1024, 4, H100, "fused"),
        (4, 256, 4, H100._replace(cooperative_launch=False), "fused"),
    ],
)  # fmt: skip
def test_choose_path(B, H, itemsize, props, expected):
    assert persistent.choose_path(B, H, itemsize, props) == expected


def test_batch_limit_is_the_named_constant():
    limit = persistent.PERSISTENT_MAX_BATCH
    assert persistent.choose_path(limit, 64, 4, H100) == "persistent"
    assert persistent.choose_path(limit + 1, 64, 4, H100) == "fused"


@pytest.mark.parametrize(
    "value, expected",
    [(None, "auto"), ("auto", "auto"), ("fused", "fused"), ("persistent", "persistent"),
     (" Persistent ", "persistent"), ("FUSED", "fused"), ("", "auto")],
)  # fmt: skip
def test_env_var(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(persistent.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(persistent.ENV_VAR, value)
    assert persistent.path_setting() == expected


def test_env_var_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv(persistent.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="RNN_XP_CUPY_PATH.*auto, fused, persistent.*'fast'"):
        persistent.path_setting()


def test_forced_path_overrides_the_env_var_and_restores(monkeypatch):
    monkeypatch.setenv(persistent.ENV_VAR, "fused")
    with persistent.forced_path("persistent"):
        assert persistent.path_setting() == "persistent"
        with persistent.forced_path("auto"):
            assert persistent.path_setting() == "auto"
        assert persistent.path_setting() == "persistent"
    assert persistent.path_setting() == "fused"
    with pytest.raises(RuntimeError), persistent.forced_path("persistent"):
        raise RuntimeError
    assert persistent.path_setting() == "fused"
    with pytest.raises(ValueError, match="path"), persistent.forced_path("cudnn"):
        pass
    import os

    assert os.environ[persistent.ENV_VAR] == "fused"  # never written


def test_decide_path():
    assert persistent.decide_path("fused", 1, 64, 4, H100) == ("fused", None)
    assert persistent.decide_path("auto", 1, 64, 4, H100) == ("persistent", None)
    assert persistent.decide_path("auto", 64, 64, 4, H100) == ("fused", None)
    # forced: any eligible size, even a large batch
    assert persistent.decide_path("persistent", 64, 64, 4, H100) == ("persistent", None)
    path, note = persistent.decide_path("persistent", 8, 4096, 4, H100)
    assert path == "fused" and "RNN_XP_CUPY_PATH=persistent" in note and "H=4096" in note


@pytest.mark.parametrize("outcome", ["agree", "disagree", "raise"])
def test_self_check_warns_once_and_remembers(monkeypatch, outcome):
    """The first-use guard, with the comparison itself replaced (it needs a GPU)."""
    calls = []

    def compare(device_id, dtype_name, nonlinearity):
        calls.append((device_id, dtype_name, nonlinearity))
        persistent._LAUNCHES += 4  # the check's own launches
        if outcome == "raise":
            raise RuntimeError("CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE")
        return None if outcome == "agree" else "states differ by up to 0.5"

    monkeypatch.setattr(persistent, "_compare", compare)
    monkeypatch.setattr(persistent, "_CHECKED", {})
    before = persistent._LAUNCHES
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = persistent.self_check(7, "float32", "relu")
        second = persistent.self_check(7, "float32", "relu")
    assert first is second is (outcome == "agree")
    assert calls == [(7, "float32", "relu")]  # run once per (device, dtype, activation)
    assert persistent._LAUNCHES == before  # the check's launches are not counted
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if outcome == "agree":
        assert messages == []
    else:
        assert len(messages) == 1 and "fused path" in messages[0] and "device 7" in messages[0]
        assert ("0.5" if outcome == "disagree" else "COOPERATIVE_LAUNCH") in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        persistent.self_check(7, "float64", "relu")
    assert len(calls) == 2  # another dtype is checked on its own


# --- the host loop on the CPU, with an emulation of the kernel -----------------------------

_CTYPES = {"int": np.int32, "long long": np.int64}


def _emulator(dtype, act, seed=0):
    """``launch(grid, block, args, smem)`` that runs the kernel's algorithm with NumPy.

    It checks each argument against the kernel's parameter list (count, array
    or scalar, dtype, contiguity), then follows the kernel: block by block (in
    a random order) for each step, with the same rows, k parts and state
    double buffer, and checks that every hidden unit is written each step.
    """
    params = _kernel_params(dtype, act)
    real = np.dtype(dtype)
    elem = {"real": real, "long long": np.dtype(np.int64), "unsigned int": np.dtype(np.uint32)}
    rng = np.random.default_rng(seed)
    f = np.tanh if act == "tanh" else (lambda z: np.where((z > 0) | (z != z), z, 0))

    def launch(grid, block, args, smem):
        assert len(args) == len(params), (len(args), params)
        a = {}
        for (ctype, name), v in zip(params, args):
            base = ctype.replace("const", "").replace("*", "").strip()
            if "*" in ctype:
                assert isinstance(v, np.ndarray) and v.dtype == elem[base], (name, ctype, v.dtype)
                assert v.flags.c_contiguous, f"{name} must be C-contiguous"
            else:
                want = real.type if base == "real" else _CTYPES[base]
                assert type(v) is want, (name, ctype, type(v))
            a[name] = v
        (G,), (NT,) = grid, block
        n, B, H, R, KP = (int(a[k]) for k in ("n", "B", "H", "R", "KP"))
        assert NT % 32 == 0 and NT <= persistent._THREADS
        assert smem == (R * H + B * H + B * R + KP * R * B) * real.itemsize
        out, Wh, state = a["out"], a["Wh"], a["state"]  # (n, B, H), (H, H), (2, B, H)
        assert out.shape == (n, B, H) and state.shape == (2, B, H) and a["barrier"][0] == 0
        Hc = -(-H // KP)
        for s in range(n):
            t = n - 1 - s if a["reverse"] else s
            hs = state[(a["parity0"] + s) & 1].copy()  # what every block staged
            h_next = state[(a["parity0"] + s + 1) & 1]
            written = np.zeros(H, dtype=bool)
            for blk in rng.permutation(G):
                row0 = int(blk) * R
                rows = max(0, min(R, H - row0))
                u = slice(row0, row0 + rows)
                red = np.zeros((KP, B, rows), dtype=real)
                for kp in range(KP):
                    k = slice(kp * Hc, min(H, kp * Hc + Hc))
                    red[kp] = hs[:, k] @ Wh[u, k].T
                z = out[t, :, u] + red.sum(axis=0)
                if a["has_bias"]:
                    z = z + a["bias"][u]
                hn = a["one_minus_leak"] * hs[:, u] + a["leak"] * f(z)
                valid = (a["t0"] + t < a["lengths"][:B])[:, None] if a["has_lengths"] else True
                h_next[:, u] = np.where(valid, hn, hs[:, u])
                if a["write_seq"]:
                    out[t, :, u] = np.where(valid, hn, 0)
                assert not written[u].any()
                written[u] = True
            assert written.all(), "some hidden units belong to no block"

    return launch


OPTIONS = [
    dict(),
    dict(nonlinearity="relu"),
    dict(reverse=True),
    dict(leak=0.3),
    dict(lengths=[20, 7, 0, 1, 13]),
    dict(lengths=[3, 20, 0, 19, 8], reverse=True, leak=0.6, nonlinearity="relu"),
]


def _ids(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "plain"


@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
@pytest.mark.parametrize("props", [SMALL_GPU, SMALL_GPU._replace(sm_count=16)], ids=["4sm", "16sm"])
@pytest.mark.parametrize("B, H", [(1, 5), (5, 37), (3, 16)])
def test_host_loop_with_emulated_kernel(monkeypatch, dtype, rng, opts, props, B, H):
    """Blocks of 7 steps (return_sequences=False), k split over warps, a short last block."""
    monkeypatch.setattr(numpy_kernel, "_BLOCK_STEPS", 7)
    T, D = 20, 3
    x, h0, Wx, Wh, b = random_rnn(rng, T, (B,), D, H)
    act = opts.get("nonlinearity", "tanh")
    lengths = opts.get("lengths")
    lengths = None if lengths is None else np.resize(np.asarray(lengths), B)
    kw = {k: v for k, v in opts.items() if k not in ("lengths", "nonlinearity")}
    expected, last = reference_rnn(x, h0, Wx, Wh, b, nonlinearity=act, lengths=lengths, **kw)
    pl = persistent.plan(B, H, np.dtype(dtype).itemsize, props)
    assert pl is not None
    arrays = [a.astype(dtype) for a in (x, h0, Wx, Wh, b)]
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    for return_sequences in (True, False):
        before = persistent._LAUNCHES
        seq, fin = persistent.scan_persistent(
            *arrays, nonlinearity=act, lengths=lengths, reverse=kw.get("reverse", False),
            leak=kw.get("leak", 1.0), return_sequences=return_sequences, plan=pl, mod=np,
            launch=_emulator(dtype, act),
        )  # fmt: skip
        launches = persistent._LAUNCHES - before
        assert launches == (1 if return_sequences else 3)  # 20 steps in blocks of 7
        assert fin.dtype == np.dtype(dtype) and fin.shape == (B, H)
        np.testing.assert_allclose(fin, last, **tol)
        if return_sequences:
            assert seq.dtype == np.dtype(dtype) and seq.shape == (T, B, H)
            np.testing.assert_allclose(seq, expected, **tol)
        else:
            assert seq is None


def test_host_loop_no_bias_and_batch_dims(rng):
    x, h0, Wx, Wh, _ = random_rnn(rng, 6, (2, 3), 4, 9)
    expected, last = reference_rnn(x, h0, Wx, Wh, None)
    pl = persistent.plan(6, 9, 8, SMALL_GPU)
    seq, fin = persistent.scan_persistent(
        x, h0, Wx, Wh, None, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
        return_sequences=True, plan=pl, mod=np, launch=_emulator("float64", "tanh"),
    )  # fmt: skip
    np.testing.assert_allclose(seq, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fin, last, rtol=1e-10, atol=1e-12)
    assert fin.shape == (2, 3, 9) and not np.shares_memory(fin, seq)


# --- on a CUDA device ----------------------------------------------------------------------


@pytest.fixture
def gpu():
    return make_backend("cupy")  # skips with "no CUDA device" (or "cupy not installed")


def _lengths(B, T):
    return np.resize(np.array([T, T // 2, 0, 1, T - 1, 5, T, 12]), B)


GPU_OPTIONS = [
    dict(),
    dict(nonlinearity="relu"),
    dict(reverse=True, leak=0.3),
    dict(lengths=True),
    dict(lengths=True, reverse=True, leak=0.6, nonlinearity="relu"),
]


def _forward(arrays, path, **kw):
    """``rnn_forward`` with ``path`` forced; returns (result, persistent launches it made)."""
    before = persistent._LAUNCHES
    with persistent.forced_path(path), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback must not pass unseen
        out = rnn_xp.rnn_forward(*arrays, **kw)
    return out, persistent._LAUNCHES - before


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gpu_self_check_passes(gpu, dtype, act):
    persistent._CHECKED.pop((0, dtype, act), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert persistent.self_check(0, dtype, act) is True


@pytest.mark.parametrize("opts", GPU_OPTIONS, ids=_ids)
@pytest.mark.parametrize("H", [64, 256, 1024])
@pytest.mark.parametrize("B", [1, 4, 8])
def test_gpu_persistent_matches_reference_and_fused(gpu, dtype, rng, opts, B, H):
    T, D = 37, 16  # 37 > _BLOCK_STEPS: return_sequences=False takes two launches
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
    for B, runs in ((4, 1), (persistent.PERSISTENT_MAX_BATCH + 1, 0)):
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
    before = persistent._LAUNCHES
    with persistent.forced_path("persistent"), pytest.warns(RuntimeWarning, match="not eligible"):
        got = rnn_xp.rnn_forward(*arrays)
    assert persistent._LAUNCHES == before
    assert_close(got, expected, gpu, "float32")
