"""Every thread pool is as the caller left it, after any rnn_xp call from any number of threads.

The NumPy loop runs small products on one BLAS thread; BLAS thread counts
are process-wide, so overlapping calls must not lose the caller's setting
(they once left NumPy's and SciPy's OpenBLAS on one thread for good), nor
may the thread that puts them back be another than the one that saved them
(Dask's tasks), nor may a library loaded after the first call escape the
limit. A process made by ``fork()`` neither hangs (the compiled loops' worker
threads, torch DataLoader workers) nor keeps one thread. The benchmark sets
torch's and the BLAS thread counts for its run and puts them back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import rnn_xp
from support import optional_import, thread_env

threadpoolctl = pytest.importorskip("threadpoolctl")


def pools():
    """``[(library, num_threads)]`` of every thread pool loaded in the process."""
    return sorted((p["internal_api"], p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info())


def small_forward():
    rnn_xp.rnn_forward(np.ones((30, 4, 8)), None, np.full((64, 8), 0.01), np.full((64, 64), 0.01))


def test_small_forward_uses_one_blas_thread_and_restores(monkeypatch):
    monkeypatch.setenv("RNN_XP_NUMBA", "0")  # the in-place NumPy loop (the compiled one: the tests below)
    small_forward()  # loads whatever is loaded lazily
    before = pools()
    seen = []
    from rnn_xp.kernels import numpy as numpy_kernel

    real = numpy_kernel.scan_inplace

    def spy(*args, **kwargs):  # every BLAS library loaded, as this thread sees it
        seen.append([p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"])
        return real(*args, **kwargs)

    monkeypatch.setattr(numpy_kernel, "scan_inplace", spy)
    small_forward()
    assert seen and set(seen[0]) == {1}  # one thread inside
    assert pools() == before


@pytest.mark.parametrize("run", range(3))
def test_four_threads_at_once_leave_the_pools_as_found(run):
    small_forward()
    before = pools()
    barrier = threading.Barrier(4)

    def work():
        barrier.wait()
        for _ in range(25):
            small_forward()
            rnn_xp.rnn_backward(np.ones((30, 4, 64)), np.ones((30, 4, 8)), None, np.full((64, 8), 0.01),
                                np.full((64, 64), 0.01), None, np.full((30, 4, 64), 0.1))  # fmt: skip

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pools() == before


def test_dask_tasks_leave_the_pools_as_found():
    da = pytest.importorskip("dask.array")
    small_forward()
    x = da.ones((200, 64, 8), chunks=(200, 4, 8))  # 16 tasks on Dask's worker threads
    h = rnn_xp.rnn_forward(x, None, np.full((64, 8), 0.01), np.full((64, 64), 0.01))
    h.compute(scheduler="threads", num_workers=8)
    before = pools()
    for _ in range(3):
        h.compute(scheduler="threads", num_workers=8)
        assert pools() == before


_AROUND_THE_BENCH = """
import io, json, sys, tempfile
import numpy as np, threadpoolctl, torch
import rnn_xp

try:  # the benchmark library
    from rnn_xp import bench
    tiny = dict(grid=[(1, 3, 4, 4)], settle_s=0.0, gemm_n=64)
except ImportError:  # the benchmark inside the command line
    from rnn_xp.cli import bench
    bench.CPU_GRID, bench.SETTLE_S, tiny = [(1, 3, 4, 4)], 0.0, {}

def pools():
    return sorted((p["internal_api"], p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info())

torch.set_num_threads(1)
rnn_xp.rnn_forward(np.ones((30, 4, 8)), None, np.full((64, 8), 0.01), np.full((64, 64), 0.01))  # loads what it uses
from rnn_xp.kernels import mkl
mkl.library()  # oneMKL where installed (on a CPU where the loop does not take it, only the bench loads it)
before = pools()
bench.run(quick=True, threads=2, out_dir=tempfile.mkdtemp(), backends=["numpy", "torch"], memory=False,
          stream=io.StringIO(), **tiny)
after = [p for p in pools() if p[:2] in {q[:2] for q in before}]  # a pool the bench loaded is new
print(json.dumps({"before": before, "after": after, "torch": torch.get_num_threads()}))
"""


@pytest.fixture(scope="module")
def around_the_bench(tmp_path_factory):
    """The pools before and after a tiny bench run from torch on one thread, in a new process (its state alone)."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    script = tmp_path_factory.mktemp("bench") / "around_the_bench.py"
    script.write_text(_AROUND_THE_BENCH)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=thread_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_puts_torch_and_blas_threads_back(around_the_bench):
    run = around_the_bench
    assert run["torch"] == 1
    assert [p for p in run["after"] if p[0] != "mkl"] == [p for p in run["before"] if p[0] != "mkl"]


def test_bench_puts_onemkls_thread_count_back(around_the_bench):
    run = around_the_bench
    if not any(p[0] == "mkl" for p in run["before"]):
        pytest.skip("oneMKL is not loaded here")
    assert [p for p in run["after"] if p[0] == "mkl"] == [p for p in run["before"] if p[0] == "mkl"]


_FORK_WHILE_LIMITED = """
import multiprocessing as mp, sys, threading
import numpy as np, threadpoolctl, rnn_xp

def small():
    rnn_xp.rnn_forward(np.ones((200, 4, 8)), None, np.full((64, 8), 0.01), np.full((64, 64), 0.01))

def blas():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas")

def child(queue):
    small()
    queue.put(blas())

if __name__ == "__main__":
    small()
    before = blas()
    stop = threading.Event()
    def busy():  # a thread that is inside a one-thread block most of the time
        while not stop.is_set():
            small()
    worker = threading.Thread(target=busy)
    worker.start()
    ctx = mp.get_context("fork")
    results = []
    for _ in range(4):
        queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(queue,))
        proc.start()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            print("a child hung")
            sys.exit(1)
        results.append(queue.get(timeout=10))
    stop.set()
    worker.join()
    print("ok" if all(r == before for r in results) and blas() == before else f"changed: {before} {results}")
"""


def test_forked_children_start_with_the_callers_thread_counts(tmp_path):
    """A fork while another thread holds the one-thread limit: the child neither hangs nor keeps one thread."""
    script = tmp_path / "fork_limited.py"
    script.write_text(_FORK_WHILE_LIMITED)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=thread_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


_FORK_AFTER_TWO_THREADS = """
import os, signal, sys, time
import numpy as np
import array_api_compat.numpy as xp
import rnn_xp
from rnn_xp.kernels import numba_cpu

rng = np.random.default_rng(0)
x = rng.standard_normal((20, 8, 16)).astype(np.float32)
Wx = (rng.standard_normal((128, 16)) / 4).astype(np.float32)
Wh = (rng.standard_normal((128, 128)) / 12).astype(np.float32)
h0 = np.zeros((8, 128), np.float32)

def compiled():  # two threads over the rows: the pool's threads start in the parent
    return numba_cpu.scan_numba(xp, x, h0, Wx, Wh, None, nonlinearity="tanh", lengths=None, reverse=False,
                                leak=1.0, return_sequences=True, threads=2)[0]

def public():  # whatever the size rule picks for B = 8, H = 128 (the compiled loop, two threads on 2 cores)
    return rnn_xp.rnn_forward(x, h0, Wx, Wh)

want = compiled(), public()
pid = os.fork()
if pid == 0:
    same = np.array_equal(compiled(), want[0]) and np.array_equal(public(), want[1])
    os._exit(0 if same else 3)
deadline = time.monotonic() + 60
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("the child hung")
        sys.exit(1)
    time.sleep(0.05)
code = os.waitstatus_to_exitcode(status)
print("ok" if code == 0 else f"the child exited with {code}")
"""


def test_a_forked_child_runs_the_compiled_loop_with_two_threads(tmp_path):
    """After a two-thread compiled call the child has none of the pool's threads: it makes its own."""
    pytest.importorskip("numba", reason="numba is not installed (pip install rnn_xp[numba])")
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    script = tmp_path / "fork_two_threads.py"
    script.write_text(_FORK_AFTER_TWO_THREADS)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=thread_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


_DATALOADER = """
import sys
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
import rnn_xp

layer = rnn_xp.RNN(16, 300, seed=0, dtype="float32")  # a NumPy layer
rng = np.random.default_rng(1)
xs = rng.standard_normal((8, 20, 1, 16)).astype(np.float32)


class Sequences(Dataset):
    def __len__(self):
        return len(xs)

    def __getitem__(self, i):
        return layer(xs[i])[1]  # (1, 1, 300): the final state


want = np.stack([layer(x)[1] for x in xs])  # in the parent first: its threads exist only here
loader = DataLoader(Sequences(), batch_size=2, num_workers=2, multiprocessing_context="fork", timeout=60)
got = torch.cat([batch for batch in loader]).numpy()
print("ok" if np.allclose(got, want, rtol=1e-6, atol=1e-6) else "different")
"""


def test_fork_dataloader_workers_run_a_numpy_layer(tmp_path):
    """torch DataLoader workers made by fork() run a NumPy layer the parent ran before (B = 1, H = 300: two threads)."""
    pytest.importorskip("torch")
    pytest.importorskip("numba", reason="numba is not installed (pip install rnn_xp[numba])")
    script = tmp_path / "dataloader_fork.py"
    script.write_text(_DATALOADER)
    env = thread_env(RNN_XP_NUMBA="1")  # the compiled loop at H = 300, B = 1: two threads over the columns
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


_HANDOVER = """
import threading
import numpy as np, threadpoolctl
from rnn_xp.kernels import _threads, mkl

def blas():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas")

mkl.library()  # oneMKL too, where it is installed
before = blas()
assert any(n > 1 for _, n in before), f"BLAS starts on one thread here: {before}"
inside, seen_by_second = [], []
a_in, b_in, a_out, b_out = threading.Event(), threading.Event(), threading.Event(), threading.Event()

def first():  # enters first and leaves first: it saves the counts, the other one puts them back
    with mkl.one_thread(), _threads.blas_threads(1):  # as in a Dask task: oneMKL on one thread here
        a_in.set()
        b_in.wait()
        inside.append(blas())
    a_out.set()
    b_out.wait()  # alive until the other one is out (as a Dask worker thread stays)

def second():
    a_in.wait()
    with _threads.blas_threads(1):
        b_in.set()
        a_out.wait()
    seen_by_second.append(blas())  # oneMKL's count is per thread: this one's is back too
    b_out.set()

threads = [threading.Thread(target=first), threading.Thread(target=second)]
for t in threads:
    t.start()
for t in threads:
    t.join()
after = blas()
ones = all(n == 1 for _, n in inside[0])
back = after == before and seen_by_second[0] == before
print("ok" if ones and back else f"inside {inside[0]}, before {before}, after {after} and {seen_by_second[0]}")
"""


def test_counts_come_back_when_another_thread_leaves_last(tmp_path):
    """The thread that saves the counts is not the one that puts them back (threadpoolctl lets one
    thread at a time change OpenBLAS's), and oneMKL's count of a Dask task's thread is its own."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU core here: BLAS runs one thread anyway")
    script = tmp_path / "handover.py"
    script.write_text(_HANDOVER)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=thread_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


_DASK_COMPILED = """
import numpy as np, threadpoolctl, dask, dask.array as da, rnn_xp

def blas():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas")

rng = np.random.default_rng(0)
x = da.from_array(rng.standard_normal((15000, 16, 1)).astype(np.float32), chunks=(15000, 4, 1))
H = 64  # B = 4, H = 64 per chunk: the compiled loop with BLAS's product, one BLAS thread per task
h = rnn_xp.rnn_forward(x, None, np.full((H, 1), 0.1, np.float32), np.full((H, H), 0.01, np.float32))
from rnn_xp.kernels import mkl, numba_cpu
numba_cpu.available(), mkl.library()  # every library loaded (numba brings SciPy's BLAS), none called yet
before = blas()
assert any(n > 1 for _, n in before), f"BLAS starts on one thread here: {before}"
changed = []
for _ in range(6):
    h.compute(scheduler="threads", num_workers=4)
    if blas() != before:
        changed.append(blas())
print("ok" if not changed else f"before {before}, after {changed}")
"""


def test_dask_tasks_running_the_compiled_loop_leave_the_pools_as_found(tmp_path):
    """Chunks of (15000, 4, 1), H = 64: each task runs the compiled loop with one BLAS thread (issue 25)."""
    pytest.importorskip("dask.array")
    pytest.importorskip("numba", reason="numba is not installed (pip install rnn_xp[numba])")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU core here: BLAS runs one thread anyway")
    script = tmp_path / "dask_compiled.py"
    script.write_text(_DASK_COMPILED)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=thread_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


_LOADED_LATER = """
import numpy as np, threadpoolctl
from rnn_xp.kernels import _threads

def blas():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas")

with _threads.blas_threads(1):  # the first block: the libraries loaded so far
    pass
first = blas()
import scipy.linalg  # SciPy's own BLAS, loaded after the first block
before = blas()
assert all(n > 1 for _, n in before), f"BLAS starts on one thread here: {before}"
if len(before) == len(first):
    print("skip: SciPy brings no BLAS of its own here")
else:
    with _threads.blas_threads(1):
        inside = blas()
    after = blas()
    print("ok" if all(n == 1 for _, n in inside) and after == before else f"inside {inside}, after {after}")
"""


def test_a_library_loaded_after_the_first_call_is_held_too(tmp_path):
    """The one-thread limit covers the BLAS libraries loaded when a block starts, not only the first block's."""
    pytest.importorskip("scipy")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU core here: BLAS runs one thread anyway")
    script = tmp_path / "loaded_later.py"
    script.write_text(_LOADED_LATER)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=thread_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    if proc.stdout.startswith("skip:"):
        pytest.skip(proc.stdout.strip()[6:])
    assert proc.stdout.strip() == "ok"


_FORK_WHILE_CLOSING = """
import numpy as np, threadpoolctl
from rnn_xp.kernels import _threads

def blas():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas")

before = blas()
assert any(n > 1 for _, n in before), f"BLAS starts on one thread here: {before}"
block = _threads.blas_threads(1)
block.__enter__()
_threads._HOLDERS = 0  # as the last block out leaves it while it puts the counts back, one library at a time
_threads._after_fork_in_child()  # what a fork() at that moment runs in the child
print("ok" if blas() == before else f"before {before}, in the child {blas()}")
"""


def test_a_fork_while_the_last_block_closes_puts_the_counts_back_in_the_child(tmp_path):
    """The counts are restored one library at a time; a fork in between leaves the child none at one thread."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU core here: BLAS runs one thread anyway")
    script = tmp_path / "fork_while_closing.py"
    script.write_text(_FORK_WHILE_CLOSING)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=thread_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"
