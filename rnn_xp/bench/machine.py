"""What a benchmark records about the machine, and the settings it runs under.

- ``machine_info``: host, CPU model, CPUs this process may use, memory, the
  BLAS and OpenMP thread pools (threadpoolctl), oneMKL's status, library
  versions, the load average.
- ``gemm_calls`` / ``gemm_rate``: the float32 n x n matrix-product rate of
  every library that multiplies on its own (NumPy's BLAS, oneMKL, torch,
  XLA; CuPy on a GPU): the yardstick of "% GEMM".
- ``thread_settings``: torch's and the BLAS libraries' thread counts for a
  run, put back after it; ``tf32_off``: torch's CUDA products in true float32.
- ``usable_cpus`` and ``available_memory``: the limits the command line checks
  its values against.

>>> from rnn_xp.bench.machine import cpu_tag, slug, usable_cpus
>>> cpu_tag("AMD EPYC 9B45 128-Core Processor"), slug("NVIDIA H100 80GB HBM3")
('epyc', 'NVIDIA-H100-80GB-HBM3')
>>> usable_cpus() >= 1
True
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys

import numpy as np

from ..kernels import mkl
from .timing import no_sync, time_per_call

__all__ = [
    "available_memory", "cpu_model", "cpu_tag", "gemm_calls", "gemm_rate", "gpu_name", "gpu_problem",
    "machine_info", "slug", "tf32_off", "thread_settings", "total_memory", "usable_cpus",
]  # fmt: skip


def usable_cpus():
    """The CPUs this process may run on: its affinity mask where the system has one, else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _meminfo(field):
    """A field of ``/proc/meminfo`` in bytes, or None (not Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room():
    """Bytes this process's cgroup (v2) may still take, or None where it sets no limit."""
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as fh:
            return max(0, int(limit) - int(fh.read().strip()))
    except (OSError, ValueError):
        return None


def available_memory():
    """Bytes a new allocation can take without swapping, or None where the system does not say.

    psutil's ``available`` when psutil is installed, else Linux's
    ``MemAvailable``, else the free pages (``os.sysconf``); the room left
    under a cgroup's memory limit if that is less.
    """
    found = None
    try:
        import psutil

        found = int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no answer on this system
        found = _meminfo("MemAvailable")
        if found is None:
            try:
                found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (AttributeError, ValueError, OSError):
                found = None
    room = _cgroup_room()
    if room is not None:
        found = room if found is None else min(found, room)
    return found


def total_memory():
    """The machine's memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return _meminfo("MemTotal")


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``), or ``unknown``."""
    return mkl.cpuinfo("model name") or platform.processor() or "unknown"


def cpu_tag(model):
    """A short name for a CPU model in results file names: ``xeon``, ``epyc``, ``ryzen``, ... (else ``cpu``)."""
    words = model.lower().replace("(r)", " ").replace("(tm)", " ").split()
    skip = {"intel", "amd", "genuine", "processor", "cpu"}
    word = next((w for w in words if w not in skip and w.isalpha()), "")
    return word or "cpu"


def slug(text):
    """``text`` as a file name: letters, digits, ``-``, ``_`` and ``.`` kept, anything else ``-``."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def machine_info(threads):
    """Host, CPU model, memory, BLAS and thread pools, library versions (a JSON-able dict)."""
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "memory_bytes": total_memory(),
        "memory_available_bytes_at_start": available_memory(),
        "threads": threads,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {},
    }
    info["mkl"] = {"status": mkl.status(), "version": mkl.version()}  # loads it, if installed
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


def gemm_calls(n, *, gpu=False, backends=()):
    """``{library: (fn, sync)}``: one float32 ``n x n`` product of every library that multiplies on its own.

    NumPy's BLAS and oneMKL (when installed) on the CPU, torch when it can be
    imported (the baseline multiplies with its kernels), XLA when ``"jax"``
    is among ``backends``; CuPy on a GPU. "% GEMM" is of the fastest of them,
    so that a library with faster matrix kernels than NumPy's BLAS is not put
    above 100%.
    """
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in "ab")
    if gpu:
        import cupy

        ca, cb = cupy.asarray(a), cupy.asarray(b)
        cout = cupy.empty_like(ca)

        def sync(r):
            cupy.cuda.get_current_stream().synchronize()
            return r

        return {"cupy": ((lambda: cupy.matmul(ca, cb, out=cout)), sync)}
    out = np.empty_like(a)
    calls = {"numpy": ((lambda: np.matmul(a, b, out=out)), no_sync)}
    if mkl.library() is not None:
        bt = np.ascontiguousarray(b.T)
        calls["mkl"] = ((lambda: mkl.gemm(a, bt, out)), no_sync)
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        calls["torch"] = ((lambda: torch.mm(ta, tb)), no_sync)
    except ImportError:
        pass
    if "jax" in backends:
        import jax
        import jax.numpy as jnp

        ja, jb = jnp.asarray(a), jnp.asarray(b)
        calls["jax"] = ((lambda: ja @ jb), jax.block_until_ready)
    return calls


def gemm_rate(n=2048, rounds=5, *, gpu=False, backends=()):
    """The float32 ``n x n`` product rate (GFLOP/s) of each library of ``gemm_calls``: ``{"n": n, "gflops": {}}``."""
    rates = {}
    for name, (fn, sync) in gemm_calls(n, gpu=gpu, backends=backends).items():
        rates[name] = 2 * n**3 / float(np.median([time_per_call(fn, sync, 2) for _ in range(rounds)])) / 1e9
    return {"n": n, "gflops": rates}


class thread_settings:
    """torch's and the BLAS libraries' thread counts set to ``threads`` for a run, then put back."""

    def __init__(self, threads):
        self.threads = threads

    def __enter__(self):
        # The BLAS counts are saved first: torch's count is OpenMP's, which oneMKL
        # reads as its own, so saving them after setting torch's would keep the
        # bench's count as the one to put back.
        self._torch = self._limiter = None
        try:
            from threadpoolctl import threadpool_limits

            self._limiter = threadpool_limits(limits=self.threads, user_api="blas")
        except ImportError:
            pass
        try:
            import torch

            self._torch = (torch, torch.get_num_threads())
            torch.set_num_threads(self.threads)
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        if self._torch is not None:  # in the reverse order of __enter__
            torch, saved = self._torch
            torch.set_num_threads(saved)
        if self._limiter is not None:
            self._limiter.restore_original_limits()
        return False


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


def gpu_name():
    """The name of CUDA device 0, from torch or else CuPy."""
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
