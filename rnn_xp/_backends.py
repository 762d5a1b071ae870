"""Backends by name, for the command line, the benchmarks and the layer.

``load("torch")`` returns ``(xp, device)`` for a library name, importing the
library only then. The library code of rnn_xp never calls this: it takes
the namespace from the caller's arrays.
"""

from __future__ import annotations

import importlib

NAMES = ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask")


class BackendUnavailable(RuntimeError):
    """The named backend is not installed, or has no usable device."""


def load(name):
    """``(xp, default_device)`` for a backend name; ``BackendUnavailable`` if missing."""
    if name not in NAMES:
        raise ValueError(f"backend must be one of {list(NAMES)}; got {name!r}")
    try:
        if name == "numpy":
            xp = importlib.import_module("array_api_compat.numpy")
            return xp, "cpu"
        if name == "array_api_strict":
            xp = importlib.import_module("array_api_strict")
            return xp, xp.Device("CPU_DEVICE")
        if name == "torch":
            importlib.import_module("torch")
            xp = importlib.import_module("array_api_compat.torch")
            return xp, "cpu"
        if name == "jax":
            jax = importlib.import_module("jax")
            jax.config.update("jax_enable_x64", True)
            return importlib.import_module("jax.numpy"), jax.devices()[0]
        if name == "cupy":
            cupy = importlib.import_module("cupy")
            if not cupy.cuda.is_available():
                raise BackendUnavailable("cupy is installed but finds no CUDA device")
            return importlib.import_module("array_api_compat.cupy"), cupy.cuda.Device(0)
        if name == "dask":
            importlib.import_module("dask.array")
            return importlib.import_module("array_api_compat.dask.array"), "cpu"
    except ImportError as exc:
        raise BackendUnavailable(f"{name} is not installed ({exc})") from exc
    except BackendUnavailable:
        raise
    except Exception as exc:  # e.g. a CUDA runtime that fails to initialise
        raise BackendUnavailable(f"{name} cannot be used here ({exc})") from exc


def to_host(a):
    """Any library's array as a NumPy array on the host (a conversion, never a computation).

    For reporting and for moving weights between libraries; Dask arrays are computed.
    """
    import numpy as np

    library = type(a).__module__.split(".")[0]
    if library == "torch":
        return a.detach().cpu().numpy()
    if library == "cupy":
        return a.get()
    if library == "dask":
        return np.asarray(a.compute())
    if library == "array_api_strict":
        return np.from_dlpack(a)
    return np.asarray(a)


def available():
    """Names of the backends that load on this machine."""
    names = []
    for name in NAMES:
        try:
            load(name)
        except BackendUnavailable:
            continue
        names.append(name)
    return names
