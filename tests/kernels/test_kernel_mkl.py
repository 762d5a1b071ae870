"""The oneMKL path of the NumPy recurrence (``rnn_xp.kernels.mkl``).

oneMKL is optional. Where the ``mkl`` wheel is installed these tests force
every size onto it and compare it with the OpenBLAS path and the float64
reference on every option; where it is not (or ``RNN_XP_MKL=0``), they skip
and say why. An installed oneMKL that switched itself off (a failed
self-check) is a failure, never a skip: ``test_in_use_where_installed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import rnn_xp
from rnn_xp import kernels
from rnn_xp.kernels import _blocks, _settings, _threads, mkl
from support import random_rnn, reference_rnn

# Skip only where oneMKL cannot be expected: the wheel is absent or RNN_XP_MKL=0.
# An installed oneMKL that failed to load makes these tests fail, not skip.
MKL_EXPECTED = mkl.installed() and _settings.mkl() != "off"
needs_mkl = pytest.mark.skipif(
    not MKL_EXPECTED,
    reason="the mkl package is not installed" if not mkl.installed() else "RNN_XP_MKL=0",
)

OPTIONS = [
    dict(),
    dict(nonlinearity="relu"),
    dict(reverse=True),
    dict(leak=0.3),
    dict(lengths=[3, 7, 0, 1]),
    dict(lengths=[3, 7, 0, 1], reverse=True, leak=0.6, nonlinearity="relu"),
]
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-13)}


@pytest.fixture
def mkl_preferred(monkeypatch):
    """oneMKL preferred whatever the CPU vendor (as with ``RNN_XP_MKL=1``)."""
    monkeypatch.setattr(mkl, "_FORCED", True)


@pytest.fixture
def every_size_on_mkl(monkeypatch, mkl_preferred):
    """Send every size to oneMKL and count the packed products."""
    monkeypatch.setattr(_threads, "SERIAL_MACS", 0)
    monkeypatch.setattr(kernels, "MKL_MACS", 0)
    monkeypatch.setattr(kernels, "MKL_ROW_MACS", 0)
    calls = []
    real = mkl.PackedMatrix.matmul_add_at

    real_row = mkl.RowProduct.matmul_add_at

    def counting(self, a, out):
        calls.append(self.shape)
        return real(self, a, out)

    def counting_row(self, a, out):
        calls.append(self.shape)
        return real_row(self, a, out)

    monkeypatch.setattr(mkl.PackedMatrix, "matmul_add_at", counting)
    monkeypatch.setattr(mkl.RowProduct, "matmul_add_at", counting_row)
    return calls


def _forward(x, h0, Wx, Wh, b, dtype, opts, **kw):
    lengths = opts.get("lengths")
    lens = None if lengths is None else np.resize(np.asarray(lengths), x.shape[1:-1])
    args = [a.astype(dtype) for a in (x, h0, Wx, Wh, b)]
    rest = {k: v for k, v in opts.items() if k != "lengths"}
    return rnn_xp.rnn_forward(*args, lengths=lens, **rest, **kw), lens


@needs_mkl
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("batch", [(4,), (2, 4), ()])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_mkl_matches_reference_and_openblas(every_size_on_mkl, monkeypatch, rng, dtype, opts, batch,
                                            return_sequences):  # fmt: skip
    x, h0, Wx, Wh, b = random_rnn(rng, 7, batch, 3, 5)
    got, lens = _forward(x, h0, Wx, Wh, b, dtype, opts, return_sequences=return_sequences)
    assert len(every_size_on_mkl) > 0  # the packed product ran
    rest = {k: v for k, v in opts.items() if k != "lengths"}
    seq, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lens, **rest)
    np.testing.assert_allclose(got, seq if return_sequences else last, **TOL[dtype])
    assert got.dtype == np.dtype(dtype)

    monkeypatch.setattr(mkl, "library", lambda: None)  # the OpenBLAS path, same sizes
    n = len(every_size_on_mkl)
    other, _ = _forward(x, h0, Wx, Wh, b, dtype, opts, return_sequences=return_sequences)
    assert len(every_size_on_mkl) == n
    np.testing.assert_allclose(got, other, **TOL[dtype])


@needs_mkl
def test_mkl_batch_first_and_strided_inputs(every_size_on_mkl, rng, dtype):
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (3,), 4, 8)
    seq, _ = reference_rnn(x, h0, Wx, Wh, b)
    x_bf = np.moveaxis(x, 0, 1).astype(dtype)  # (B, T, D) C-contiguous; time-major view strided
    Wx_f = np.asfortranarray(Wx.astype(dtype))
    Wh_f = np.asfortranarray(Wh.astype(dtype))
    h0_s = np.repeat(h0.astype(dtype), 2, axis=-1)[:, ::2]  # a strided h0
    np.testing.assert_array_equal(h0_s, h0.astype(dtype))
    got = rnn_xp.rnn_forward(x_bf, h0_s, Wx_f, Wh_f, b.astype(dtype), batch_first=True)
    np.testing.assert_allclose(np.moveaxis(got, 1, 0), seq, **TOL[dtype])
    assert len(every_size_on_mkl) == 6


@needs_mkl
def test_default_sizes_choose_mkl_only_above_the_threshold(monkeypatch, rng):
    monkeypatch.setattr(mkl, "cpu_vendor", lambda: "GenuineIntel")  # the default choice on Intel
    monkeypatch.setattr(mkl, "_PREFERRED", None)
    calls = []
    real, real_row = mkl.PackedMatrix.matmul_add_at, mkl.RowProduct.matmul_add_at
    monkeypatch.setattr(mkl.PackedMatrix, "matmul_add_at", lambda s, a, o: (calls.append(1), real(s, a, o)))
    monkeypatch.setattr(mkl.RowProduct, "matmul_add_at", lambda s, a, o: (calls.append(1), real_row(s, a, o)))
    small = random_rnn(rng, 5, (2,), 3, 8)  # B * H * H = 128: OpenBLAS on one thread
    rnn_xp.rnn_forward(*[a.astype(np.float32) for a in small])
    below = random_rnn(rng, 5, (15,), 3, 256)  # 15 * 256**2, just below 1M: OpenBLAS on one thread
    rnn_xp.rnn_forward(*[a.astype(np.float32) for a in below])
    assert calls == []
    one_row = random_rnn(rng, 5, (), 3, 256)  # one sequence, H * H = 64K: OpenBLAS on one thread
    rnn_xp.rnn_forward(*[a.astype(np.float32) for a in one_row])
    assert calls == []
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (16,), 8, 256)  # 16 * 256**2 = 1M: oneMKL
    got = rnn_xp.rnn_forward(*[a.astype(np.float32) for a in (x, h0, Wx, Wh, b)])
    assert len(calls) == 5
    np.testing.assert_allclose(got, reference_rnn(x, h0, Wx, Wh, b)[0], **TOL["float32"])
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (), 3, 512)  # one sequence, 512**2 = 256K: oneMKL's gemv
    got = rnn_xp.rnn_forward(*[a.astype(np.float32) for a in (x, h0, Wx, Wh, b)])
    assert len(calls) == 10
    np.testing.assert_allclose(got, reference_rnn(x, h0, Wx, Wh, b)[0], **TOL["float32"])


@needs_mkl
@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 300, 129), (2, 300, 129), (37, 50, 70), (64, 300, 129)])
def test_packed_product_and_gemm(rng, dtype_, shape):
    M, N, K = shape
    a = rng.standard_normal((M, K)).astype(dtype_)
    w = rng.standard_normal((N, K)).astype(dtype_)
    c0 = rng.standard_normal((M, N)).astype(dtype_)
    want = a.astype(np.float64) @ w.T.astype(np.float64)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype_ == np.float32 else dict(rtol=1e-12, atol=1e-12)
    chosen = mkl.step_product(w, M)
    assert isinstance(chosen, mkl.RowProduct) == (M == 1)
    for packed in (chosen, mkl.PackedMatrix(w, M)):  # for one row: gemv, and the packed product too
        c = c0.copy()
        packed.matmul_add(a, c)
        np.testing.assert_allclose(c, want + c0, **tol)
        packed.matmul_add(a, c)  # reusable: the packed copy is not consumed
        np.testing.assert_allclose(c, 2 * want + c0, **tol)
    out = np.full((M, N), np.nan, dtype_)
    mkl.gemm(a, w, out)  # beta = 0 ignores the NaN already there
    np.testing.assert_allclose(out, want, **tol)


@needs_mkl
def test_threads_give_bitwise_equal_results(mkl_preferred, rng):
    x, h0, Wx, Wh, b = [a.astype(np.float32) for a in random_rnn(rng, 10, (32,), 16, 256)]
    want = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    results = [None] * 6

    def work(i):
        results[i] = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, want)


_ORDER_CHECK = """
import sys, numpy as np
if sys.argv[1] == "torch-first":
    import torch
import rnn_xp
from rnn_xp.kernels import mkl
print(mkl.status())
if sys.argv[1] == "torch-last":
    import torch
rng = np.random.default_rng(0)
x = rng.standard_normal((20, 64, 512)).astype(np.float32)
Wx = (rng.standard_normal((1024, 512)) / 23).astype(np.float32)
Wh = (rng.standard_normal((1024, 1024)) / 32).astype(np.float32)
h = np.zeros((64, 1024), np.float32)
got = rnn_xp.rnn_forward(x, h, Wx, Wh)
h = h.astype(np.float64)
for t in range(20):
    h = np.tanh(x[t].astype(np.float64) @ Wx.T.astype(np.float64) + h @ Wh.T.astype(np.float64))
    err = np.abs(got[t] - h).max()
    assert err < 1e-4, (t, err)
rt = torch.nn.RNN(512, 1024, bias=False)
with torch.no_grad():
    rt.weight_ih_l0.copy_(torch.from_numpy(Wx)); rt.weight_hh_l0.copy_(torch.from_numpy(Wh))
    tout = rt(torch.from_numpy(x))[0].numpy()
assert np.abs(tout - got).max() < 1e-4
print("ok")
"""


@needs_mkl
@pytest.mark.parametrize("order", ["torch-first", "torch-last"])
def test_correct_beside_torch_in_either_import_order(order):
    """Two OpenMP runtimes in one process once made oneMKL's products wrong; not with libgomp."""
    pytest.importorskip("torch")
    env = dict(os.environ, RNN_XP_MKL="1")  # oneMKL on any CPU vendor
    proc = subprocess.run([sys.executable, "-c", _ORDER_CHECK, order], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["in", "use", "ok"]


@pytest.mark.parametrize("mode", ["auto", "on"])
@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD", "HygonGenuine", None])
def test_preferred_by_cpu_vendor_unless_forced(mode, vendor):
    use, why = mkl._decide(mode, vendor)
    assert use == (mode == "on" or vendor == "GenuineIntel")
    assert (why == "") == use
    if not use:
        assert (vendor or "unknown vendor") in why and "RNN_XP_MKL=1" in why


@needs_mkl
@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_default_forward_takes_mkl_on_intel_only(monkeypatch, rng, vendor):
    monkeypatch.setattr(mkl, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(mkl, "_PREFERRED", None)  # decide again, with this vendor
    monkeypatch.delenv("RNN_XP_MKL", raising=False)
    calls = []
    real = mkl.PackedMatrix.matmul_add_at
    monkeypatch.setattr(mkl.PackedMatrix, "matmul_add_at", lambda s, a, o: (calls.append(1), real(s, a, o)))
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (16,), 8, 256)  # 1M multiply-adds per step: oneMKL's size
    got = rnn_xp.rnn_forward(*[a.astype(np.float32) for a in (x, h0, Wx, Wh, b)])
    assert len(calls) == (4 if vendor == "GenuineIntel" else 0)
    if vendor == "GenuineIntel":
        assert mkl.status() == "in use"
    else:
        assert mkl.status().startswith("loaded, not used by default: the CPU is AuthenticAMD")
    np.testing.assert_allclose(got, reference_rnn(x, h0, Wx, Wh, b)[0], **TOL["float32"])


def test_cpu_vendor_is_read_on_linux():
    vendor = mkl.cpu_vendor()
    if sys.platform.startswith("linux") and os.path.exists("/proc/cpuinfo"):
        assert vendor and vendor.strip() == vendor
    else:
        assert vendor is None


_MODE_CHECK = """
import numpy as np, rnn_xp
from rnn_xp.kernels import mkl
try:
    rnn_xp.rnn_forward(np.zeros((2, 1, 3), np.float32), None, np.zeros((4, 3), np.float32),
                       np.zeros((4, 4), np.float32))
except ValueError as exc:
    print("ValueError:", exc)
else:
    print(mkl.preferred(), mkl.status())
"""


@pytest.mark.parametrize("value", ["1", "0", "auto", "yes"])
def test_environment_variable_modes(value):
    env = dict(os.environ, RNN_XP_MKL=value)
    proc = subprocess.run([sys.executable, "-c", _MODE_CHECK], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    if value == "yes":
        assert out == "ValueError: RNN_XP_MKL must be 0, 1 or auto; got 'yes'"
    elif value == "0":
        assert out == "False not used: RNN_XP_MKL=0"
    elif not mkl.installed():
        assert out.startswith("False not used:")
    elif value == "1":
        assert out == "True in use"
    else:
        intel = mkl.cpu_vendor() == "GenuineIntel"
        assert out.startswith("True in use" if intel else "False loaded, not used by default:")


def test_switched_off_by_environment():
    code = "from rnn_xp.kernels import mkl; print(mkl.library() is None, mkl.status())"
    env = dict(os.environ, RNN_XP_MKL="0")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True not used: RNN_XP_MKL=0"


@needs_mkl
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [11, 4, 0]])
def test_mkl_blocks_of_time_steps(every_size_on_mkl, monkeypatch, rng, reverse, lengths):
    """return_sequences=False reuses a block buffer; the packed product follows it across blocks."""
    monkeypatch.setattr(_blocks, "BLOCK_STEPS", 3)
    x, h0, Wx, Wh, b = random_rnn(rng, 11, (3,), 2, 6)
    _, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, reverse=reverse, leak=0.8)
    lens = None if lengths is None else np.asarray(lengths)
    got = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lens, reverse=reverse, leak=0.8, return_sequences=False)
    np.testing.assert_allclose(got, last, **TOL["float64"])
    assert len(every_size_on_mkl) == 11


class _FakeThreadsLib:
    """The two oneMKL thread calls ``StepThreads`` makes, recorded."""

    def __init__(self, most):
        self.most, self.local, self.calls = most, 0, []

    def MKL_Get_Max_Threads(self):
        return self.local or self.most

    def MKL_Set_Num_Threads_Local(self, n):
        self.calls.append(n)
        previous, self.local = self.local, n
        return previous


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(mkl, "_now", clock)
    monkeypatch.setattr(mkl, "_STALLS", {"last": float("-inf"), "hold_until": float("-inf")})
    return clock


def _step(threads, clock, seconds):
    threads.start()
    clock.now += seconds
    threads.stop()


STALL = 30e-6 + 1.5 * mkl.StepThreads.STALL_S  # a step that lost a time slice


def test_step_threads_drop_to_one_after_two_stalls_and_come_back(clock):
    lib = _FakeThreadsLib(most=2)
    threads = mkl.StepThreads(lib)
    for _ in range(3):
        _step(threads, clock, 30e-6)  # quick steps: all threads
    assert threads._threads == 2
    _step(threads, clock, STALL)  # one stall: a hiccup, perhaps
    _step(threads, clock, 40e-6)
    assert threads._threads == 2
    _step(threads, clock, STALL)  # a second one within WINDOW_S: one thread from now on
    _step(threads, clock, 40e-6)
    assert threads._threads == 1 and lib.local == 1
    _step(threads, clock, 0.5 * mkl.StepThreads.HOLD_S)  # slow, but one thread: not a stall
    assert threads._threads == 1
    clock.now += mkl.StepThreads.HOLD_S
    _step(threads, clock, 30e-6)  # the hold is over
    assert threads._threads == 2
    threads.close()
    assert lib.local == 0  # the caller's setting (none) is back


def test_step_threads_hold_carries_over_to_the_next_loop(clock):
    lib = _FakeThreadsLib(most=2)
    first = mkl.StepThreads(lib)
    _step(first, clock, 30e-6)
    _step(first, clock, STALL)
    _step(first, clock, STALL)
    first.close()
    second = mkl.StepThreads(lib)  # within HOLD_S: starts on one thread (its projection too)
    assert lib.local == 1
    second.close()
    assert lib.local == 0


def test_step_threads_leave_a_one_thread_caller_alone(clock):
    lib = _FakeThreadsLib(most=2)
    lib.local = 1  # as under mkl.one_thread() in a Dask task
    threads = mkl.StepThreads(lib)
    _step(threads, clock, 30e-6)
    _step(threads, clock, 1.0)
    threads.close()
    assert lib.calls == [] and lib.local == 1


def test_small_hiccups_are_not_stalls(clock):
    lib = _FakeThreadsLib(most=2)
    threads = mkl.StepThreads(lib)
    _step(threads, clock, 30e-6)
    for _ in range(3):
        _step(threads, clock, 0.5 * mkl.StepThreads.STALL_S)  # 10x slower, yet shorter than a time slice
    _step(threads, clock, 30e-6)
    assert threads._threads == 2


def test_stalls_far_apart_do_not_hold(clock):
    lib = _FakeThreadsLib(most=2)
    threads = mkl.StepThreads(lib)
    _step(threads, clock, 30e-6)
    for _ in range(3):
        _step(threads, clock, STALL)
        clock.now += 2 * mkl.StepThreads.WINDOW_S  # one stall now and then, as on a quiet machine
        _step(threads, clock, 30e-6)
        assert threads._threads == 2


@needs_mkl
@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 32])  # the matrix-vector and the packed product
def test_thread_changes_mid_loop_give_bitwise_equal_results(every_size_on_mkl, two_blas_threads, monkeypatch, rng,
                                                            dtype_, B):  # fmt: skip
    """Every step counted as a stall: the loop alternates 2 and 1 threads; the result must not move."""
    x, h0, Wx, Wh, b = [a.astype(dtype_) for a in random_rnn(rng, 40, (B,), 64, 1024 if B == 1 else 256)]
    monkeypatch.setattr(mkl, "_STALLS", {"last": float("-inf"), "hold_until": float("-inf")})
    want = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    used = []
    real_set = mkl.StepThreads._set

    def record(self, n):
        used.append(n)
        real_set(self, n)

    monkeypatch.setattr(mkl.StepThreads, "_set", record)
    # a fresh record: the forward above, on the real clock, may have seen stalls of its own
    monkeypatch.setattr(mkl, "_STALLS", {"last": float("-inf"), "hold_until": float("-inf")})
    ticks = iter(range(10**6))
    monkeypatch.setattr(mkl, "_now", lambda: float(next(ticks)))  # one tick per reading
    monkeypatch.setattr(mkl.StepThreads, "STALL_S", -1.0)  # every multi-thread step "stalls"
    monkeypatch.setattr(mkl.StepThreads, "WINDOW_S", 10.0)  # and any two are close enough
    monkeypatch.setattr(mkl.StepThreads, "HOLD_S", 1.5)  # the hold is over after one step
    got = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    assert 1 in used and 2 in used
    np.testing.assert_array_equal(got, want)
    assert mkl.library().MKL_Get_Max_Threads() >= 2  # the caller's count is back


_NOT_TAKEN_CHECK = """
import sys
import numpy as np, rnn_xp
from rnn_xp.kernels import mkl
mkl.cpu_vendor = lambda: sys.argv[1]
x = np.ones((3, 16, 8), np.float32)
h = rnn_xp.rnn_forward(x, np.zeros((16, 256), np.float32), np.full((256, 8), 0.01, np.float32),
                       np.full((256, 256), 0.001, np.float32))
rnn_xp.rnn_backward(np.ones_like(h), x, np.zeros((16, 256), np.float32), np.full((256, 8), 0.01, np.float32),
                    np.full((256, 256), 0.001, np.float32), None, h)
print(mkl.preferred(), mkl.loaded())
"""


@needs_mkl
@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_oneMKL_is_loaded_only_where_it_is_taken(vendor):
    """With ``RNN_XP_MKL=auto`` on a CPU where oneMKL is not taken, a forward and a backward leave it unloaded
    (a loaded one's threads would be set and put back around every small call); on Intel it is loaded."""
    env = dict(os.environ, RNN_XP_MKL="auto")
    proc = subprocess.run([sys.executable, "-c", _NOT_TAKEN_CHECK, vendor], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    intel = vendor == "GenuineIntel"
    assert proc.stdout.split() == [str(intel), str(intel)]
