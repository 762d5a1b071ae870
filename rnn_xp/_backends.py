"""Backends by name, and copies of arrays between them (the layer, the converters, the CLI).

``load("torch")`` returns ``(xp, device)`` for a library name, importing the
library only then, and changing none of its settings (JAX keeps its float32
default: ``jax_enable_x64`` is the caller's choice, see ``jax_float64``). The functions of rnn_xp never call it: they take the
namespace from the caller's arrays. The layer (``RNN(..., xp="torch")``),
the converters and the command line name libraries, and use ``load``,
``resolve_namespace``, ``resolve_dtype`` and ``move`` from here.
"""

from __future__ import annotations

import contextlib
import importlib

from ._compat import device, is_array, is_jax_namespace, namespace_of, normalize_namespace, to_device

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

    For reporting and for moving weights between libraries; Dask arrays are
    computed. bfloat16 (torch, JAX) comes back as float32, which holds every
    bfloat16 value exactly (NumPy itself has no bfloat16).
    """
    import numpy as np

    library = type(a).__module__.split(".")[0]
    if library == "torch":
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bfloat16":
            a = a.float()  # exact; torch cannot hand a bfloat16 tensor to NumPy
        return a.numpy()
    if library in ("jax", "jaxlib"):
        host = np.asarray(a)
        return host.astype(np.float32) if host.dtype.name == "bfloat16" else host
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


# -- namespaces, dtypes and copies between libraries (the layer and the converters) --


def library_name(xp):
    """The library of a namespace as users know it: ``numpy``, ``torch``, ``jax.numpy``, ..."""
    return getattr(xp, "__name__", repr(xp)).replace("array_api_compat.", "")


def resolve_namespace(xp, device):
    """``(namespace, device)`` for ``xp`` given as None, a name or a module."""
    if xp is None:
        xp = "numpy"
    if isinstance(xp, str):
        if xp not in NAMES:
            raise ValueError(
                f"xp must be an array namespace, a module or one of {list(NAMES)}; "
                f"got {xp!r}"
            )
        namespace, default_device = load(xp)
        return namespace, default_device if device is None else device
    return normalize_namespace(xp), device


FLOAT_NAMES = ("bfloat16", "float16", "float32", "float64")


def dtype_name(xp, dtype):
    """``"float32"``-style name of a real floating dtype of ``xp`` (``"bfloat16"`` included)."""
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):  # torch.float32, jnp.bfloat16 (a type), ...
        try:
            import numpy as np

            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype).rsplit(".", 1)[-1]
    if name in FLOAT_NAMES:
        return name
    return f"float{xp.finfo(dtype).bits}"


def resolve_dtype(xp, dtype):
    """A real floating dtype of ``xp`` from ``None``, a name, or a dtype (of any library).

    ``None`` is float32. Scalar types count as their dtype (``jnp.float64``,
    ``np.float32``). ``bfloat16`` where ``xp`` has it (torch, JAX); elsewhere a
    ``TypeError`` that says so: a dtype is never changed silently. float64 on
    JAX needs ``jax_enable_x64``: without it the answer is a ``TypeError``
    that says how to enable it (rnn_xp never turns it on itself).
    """
    if dtype is None:
        return xp.float32
    name = dtype if isinstance(dtype, str) else None
    if name is None:
        try:
            native = xp.isdtype(dtype, "real floating")
        except Exception:  # a dtype of another library, or a scalar type (jnp.float64)
            native = False
        if native:
            return _check_x64(xp, dtype_name(xp, dtype), dtype)
        if isinstance(dtype, type):  # np.float32, jnp.float64
            name = getattr(dtype, "__name__", None)
        if name not in FLOAT_NAMES:
            name = dtype_name(xp, dtype) if _is_float_dtype(dtype) else str(getattr(dtype, "name", dtype))
    if name == "bfloat16" and not hasattr(xp, "bfloat16"):
        raise TypeError(
            f"dtype bfloat16 is not available in {library_name(xp)}; use torch or JAX for bfloat16, "
            "or dtype='float32', which holds every bfloat16 value exactly"
        )
    if name not in FLOAT_NAMES or not hasattr(xp, name):
        raise TypeError(
            f"dtype must be a real floating dtype such as 'float32' or 'float64'; got {dtype!r}"
        )
    return _check_x64(xp, name, getattr(xp, name))


def _check_x64(xp, name, dtype):
    """``dtype``, unless it is float64 on JAX with 64-bit mode off: then ``TypeError``."""
    if name == "float64" and is_jax_namespace(xp) and not jax_x64_enabled():
        raise TypeError(
            "dtype float64 on JAX needs 64-bit mode, which is off (JAX's default); " + X64_HINT
        )
    return dtype


X64_HINT = (
    "for float64 on JAX enable 64-bit mode yourself: jax.config.update('jax_enable_x64', True) "
    "at startup, JAX_ENABLE_X64=1 in the environment, or a scoped `with jax.enable_x64(True):` "
    "(rnn_xp never changes JAX's configuration)"
)


def jax_x64_enabled():
    """True when JAX makes float64 arrays here (``jax_enable_x64``, globally or in a scope)."""
    import jax
    import numpy as np

    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


@contextlib.contextmanager
def jax_float64():
    """JAX's 64-bit mode for the ``with`` block only (this thread), restored after.

    For the command line, which runs float64 on every backend; the library's
    functions never call it.
    """
    import jax

    scoped = getattr(jax, "enable_x64", None)  # a thread-local config context (newer JAX)
    if scoped is None:  # older JAX
        from jax.experimental import enable_x64 as scoped
    with scoped(True):
        yield


def _is_float_dtype(dtype):
    try:
        return str(dtype).rsplit(".", 1)[-1] in FLOAT_NAMES or getattr(dtype, "name", None) in FLOAT_NAMES
    except Exception:
        return False


def move(a, xp, dev, dtype, *, name=None):
    """A copy of ``a`` as an array of ``xp`` on ``dev`` in ``dtype``.

    A narrowing conversion whose values do not fit (float32 weights beyond
    float16's range) is a ``ValueError`` naming ``name``: it would turn them
    into ``inf`` silently.
    """
    import numpy as np

    with np.errstate(over="ignore"):  # an overflow is reported below, naming the array
        if is_array(a) and namespace_of(a) is xp:
            out = xp.asarray(a, copy=True)
            if dev is not None and device(out) != dev:
                out = to_device(out, dev)
            out = out if out.dtype == dtype else xp.astype(out, dtype)
        else:
            host = to_host(a)
            target = dtype_name(xp, dtype)
            if target == "bfloat16":  # NumPy has no bfloat16: the library rounds from float32
                out = xp.asarray(xp.asarray(host.astype("float32"), device=dev, copy=True), dtype=dtype)
            else:
                out = xp.asarray(host.astype(target), dtype=dtype, device=dev, copy=True)
    if out.dtype != dtype:  # e.g. JAX without float64
        raise TypeError(
            f"{library_name(xp)} made {out.dtype} instead of {dtype}; " + X64_HINT
        )
    _check_fits(a, out, xp, dtype, name)
    return out


def _check_fits(a, out, xp, dtype, name):
    """``ValueError`` when the conversion made ``inf`` out of finite values (a narrowing overflow)."""
    import numpy as np

    if type(a).__module__.split(".")[0] == "dask" or type(out).__module__.split(".")[0] == "dask":
        return  # lazy: checking would compute the weights
    try:
        got = to_host(out)
    except Exception:  # a traced value: nothing to read
        return
    if not np.isinf(got).any():
        return
    src = to_host(a)
    overflow = np.isinf(got) & np.isfinite(src)
    if overflow.any():
        biggest = float(np.max(np.abs(src[overflow])))
        limit = float(xp.finfo(dtype).max)
        what = "a value" if name is None else name
        raise ValueError(
            f"{what} has values up to {biggest:g}, beyond {dtype_name(xp, dtype)}'s largest "
            f"({limit:g}); converting would make them inf. Keep a wider dtype, or scale the weights"
        )
