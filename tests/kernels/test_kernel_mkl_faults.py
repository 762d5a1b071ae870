"""The oneMKL path at its edges: fork, zero sizes, its pack buffers, a failed self-check.

Each test here once failed: a forked child hung in ``cblas_?gemm_pack``,
``D = 0`` handed CBLAS an invalid leading dimension and returned an
uninitialised buffer, every thread that ever packed kept its own pack buffer,
and a oneMKL that failed its self-check switched itself off in silence (so
that every oneMKL test skipped instead of failing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tracemalloc
import warnings

import numpy as np
import pytest

import rnn_xp
from rnn_xp import kernels
from rnn_xp.kernels import _settings, _threads, mkl
from support import random_rnn, reference_rnn

MKL_EXPECTED = mkl.installed() and _settings.mkl() != "off"
needs_mkl = pytest.mark.skipif(
    not MKL_EXPECTED,
    reason="the mkl package is not installed" if not mkl.installed() else "RNN_XP_MKL=0",
)
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-13)}


def test_in_use_where_installed():
    """With the wheel installed and RNN_XP_MKL not 0, oneMKL must load: a failed self-check fails here."""
    if not MKL_EXPECTED:
        pytest.skip("the mkl package is not installed" if not mkl.installed() else "RNN_XP_MKL=0")
    assert mkl.library() is not None, f"oneMKL {mkl.status()}"


@pytest.fixture
def fresh_load(monkeypatch):
    """oneMKL not loaded yet and no warning given yet (restored afterwards)."""
    monkeypatch.setattr(mkl, "_LIB", None)
    monkeypatch.setattr(mkl, "_WHY", "not tried")
    monkeypatch.setattr(mkl, "_WARNED", False)
    monkeypatch.delenv(mkl.ENV_VAR, raising=False)


@needs_mkl
@pytest.mark.parametrize("plant", ["gemv beta 0", "pack without transpose"])
def test_failed_self_check_warns_once(fresh_load, monkeypatch, plant):
    """The planted bugs that once passed the whole suite: the self-check catches them, and says so."""
    if plant == "gemv beta 0":

        def matmul_add_at(self, a_address, out_address):
            _, N, K = self.shape
            self._gemv(mkl._ROW_MAJOR, mkl._NO_TRANS, N, K, 1.0, self._W_at, K, a_address, 1, 0.0,
                       out_address, 1)  # fmt: skip

        monkeypatch.setattr(mkl.RowProduct, "matmul_add_at", matmul_add_at)
    else:
        monkeypatch.setattr(mkl, "_TRANS", mkl._NO_TRANS)  # the pack call reads W untransposed
    with pytest.warns(RuntimeWarning, match="oneMKL is not used .*self-check") as record:
        assert mkl.library() is None
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call does not warn again
        assert mkl.library() is None
    assert mkl.status() == "not used: oneMKL failed its self-check against NumPy"


def test_switched_off_by_environment_does_not_warn(fresh_load, monkeypatch):
    monkeypatch.setenv(mkl.ENV_VAR, "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mkl.library() is None


_FORK_CHECK = """
import multiprocessing as mp, sys
import numpy as np, rnn_xp
from rnn_xp.kernels import mkl

x, Wx, Wh = np.ones((5, 4, 8), "f4"), np.full((512, 8), 0.01, "f4"), np.full((512, 512), 1e-3, "f4")


def child(queue):
    queue.put((mkl.status(), rnn_xp.rnn_forward(x, None, Wx, Wh)))


if __name__ == "__main__":
    want = rnn_xp.rnn_forward(x, None, Wx, Wh)  # B * H * H = 1M: oneMKL's packed product, its threads
    print(mkl.status())
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        print("the child hung")
        sys.exit(1)
    status, got = queue.get(timeout=10)
    print(status)
    print("max diff", float(np.abs(got - want).max()))
"""


@needs_mkl
def test_forked_child_runs_after_the_parent_used_mkl(tmp_path):
    script = tmp_path / "fork_check.py"
    script.write_text(_FORK_CHECK)
    env = dict(os.environ, RNN_XP_MKL="1")  # oneMKL in the parent on any CPU vendor
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    parent, child, diff = proc.stdout.strip().splitlines()
    assert parent == "in use"
    assert child.startswith("not used: in a process made by fork()")
    assert float(diff.split()[-1]) < 1e-5  # the OpenBLAS path in the child, the same numbers


@pytest.fixture
def every_size_on_mkl(monkeypatch):
    monkeypatch.setattr(mkl, "_FORCED", True)
    monkeypatch.setattr(_threads, "SERIAL_MACS", 0)
    monkeypatch.setattr(kernels, "MKL_MACS", 0)
    monkeypatch.setattr(kernels, "MKL_ROW_MACS", 0)


def _zero_reference(x, h0, Wx, Wh, b):
    """The float64 reference for any sizes, zero ones included."""
    T, batch, H = x.shape[0], x.shape[1:-1], Wx.shape[0]
    if T == 0 or 0 in batch:
        return np.zeros((T, *batch, H)), np.array(h0, dtype=np.float64)
    if x.shape[-1] == 0:  # D = 0: one zero feature with a zero weight is the same RNN
        x, Wx = np.zeros((*x.shape[:-1], 1)), np.zeros((H, 1))
    return reference_rnn(x, h0, Wx, Wh, b)


ZERO_SIZES = [(0, 3, 2, 4), (3, 0, 2, 4), (3, 2, 0, 4), (3, 2, 4, 0), (0, 0, 0, 0), (3, 1, 0, 4)]


@pytest.mark.parametrize("path", ["openblas", pytest.param("mkl", marks=needs_mkl)])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("size", ZERO_SIZES, ids=lambda s: "T%d-B%d-D%d-H%d" % s)
def test_zero_sizes_on_the_numpy_paths(monkeypatch, request, rng, dtype, path, size, return_sequences):
    T, B, D, H = size
    if path == "mkl":
        request.getfixturevalue("every_size_on_mkl")
    else:
        monkeypatch.setattr(mkl, "library", lambda: None)
    x, h0, Wx, Wh, b = random_rnn(rng, T, (B,), D, H)
    b = b + 0.5
    got = rnn_xp.rnn_forward(*[a.astype(dtype) for a in (x, h0, Wx, Wh, b)],
                             return_sequences=return_sequences)  # fmt: skip
    seq, last = _zero_reference(x, h0, Wx, Wh, b)
    want = seq if return_sequences else last
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, **TOL[dtype])


@needs_mkl
def test_no_input_features_at_the_default_sizes(monkeypatch, dtype):
    """D = 0 at H = 512: oneMKL's size by default; CBLAS refused lda = 0 and left the buffer as it was."""
    monkeypatch.setattr(mkl, "_FORCED", True)
    H = 512
    got = rnn_xp.rnn_forward(np.zeros((4, 1, 0), dtype), None, np.zeros((H, 0), dtype),
                             np.zeros((H, H), dtype), np.full(H, 0.5, dtype))  # fmt: skip
    np.testing.assert_allclose(got, np.full((4, 1, H), np.tanh(0.5)), **TOL[dtype])


@needs_mkl
@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_gemm_with_an_empty_inner_dimension(beta):
    out = np.full((3, 5), np.nan if beta == 0.0 else 1.5)
    mkl.gemm(np.zeros((3, 0)), np.zeros((5, 0)), out, beta=beta)
    np.testing.assert_array_equal(out, np.zeros((3, 5)) if beta == 0.0 else np.full((3, 5), 3.0))


@needs_mkl
def test_pack_buffers_kept_are_bounded_whatever_the_threads(every_size_on_mkl, rng):
    """Eight threads that each packed once keep at most mkl._KEEP_BYTES of pack buffers between them."""
    x, h0, Wx, Wh, b = [a.astype(np.float32) for a in random_rnn(rng, 3, (16,), 8, 256)]
    barrier = threading.Barrier(8)
    done = threading.Event()
    finished = threading.Barrier(9)  # the eight workers and this test

    def work():
        barrier.wait()
        rnn_xp.rnn_forward(x, h0, Wx, Wh, b)  # packs Wh: about 8 MB of buffer
        finished.wait()
        done.wait()  # alive while the memory is measured: a per-thread cache would still hold its buffer

    rnn_xp.rnn_forward(x, h0, Wx, Wh, b)  # one-time allocations outside the measurement
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        finished.wait()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        done.set()
        tracemalloc.stop()
        for t in threads:
            t.join()
    assert kept <= mkl._KEEP_BYTES + (1 << 20), f"{kept / 1e6:.1f} MB kept"
    assert mkl._pool_bytes() <= mkl._KEEP_BYTES


@needs_mkl
def test_packed_matrices_in_use_are_not_shared(rng):
    """Two live PackedMatrix objects in one thread each keep their own packed copy."""
    a = rng.standard_normal((4, 6))
    w1, w2 = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    p1, p2 = mkl.PackedMatrix(w1, 4), mkl.PackedMatrix(w2, 4)
    out1, out2 = np.zeros((4, 5)), np.zeros((4, 5))
    p1.matmul_add(a, out1)
    p2.matmul_add(a, out2)
    p1.close()
    p2.close()
    np.testing.assert_allclose(out1, a @ w1.T, rtol=1e-12)
    np.testing.assert_allclose(out2, a @ w2.T, rtol=1e-12)
