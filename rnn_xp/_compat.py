"""The one place that talks to ``array_api_compat``.

Everything else in rnn_xp asks this module for a namespace, a device or a
backend test, so that the rest of the code reads as plain Array API code.
Nothing here imports a backend library: ``array_api_compat`` checks
``sys.modules`` before touching torch, JAX, CuPy or Dask.
"""

from __future__ import annotations

import array_api_compat
from array_api_compat import (
    device,
    is_array_api_obj,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
    to_device,
)

__all__ = [
    "array_namespace",
    "device",
    "device_of",
    "is_array",
    "is_cupy_namespace",
    "is_dask_namespace",
    "is_jax_namespace",
    "is_numpy_namespace",
    "is_torch_namespace",
    "known_array",
    "namespace_of",
    "normalize_namespace",
    "outside_stacklevel",
    "refuse_masked",
    "to_device",
]


def is_array(obj) -> bool:
    """True for an array of any library that the Array API covers (a NumPy masked array is not one)."""
    return is_array_api_obj(obj) and not _is_masked(obj)


def _is_masked(obj) -> bool:
    """A ``numpy.ma.MaskedArray`` (told apart without importing NumPy)."""
    return any(cls.__name__ == "MaskedArray" and cls.__module__.startswith("numpy.ma")
               for cls in type(obj).__mro__)  # fmt: skip


def refuse_masked(name, obj):
    """``TypeError`` for a NumPy masked array: rnn_xp would compute on its data and ignore its mask."""
    if _is_masked(obj):
        raise TypeError(
            f"{name} is a NumPy masked array, whose mask rnn_xp would ignore; pass "
            f"{name}.filled(value) or numpy.ma.getdata({name}) for the data, and give the valid "
            "length of each sequence with lengths="
        )


def namespace_of(x):
    """The array-API namespace of a single array."""
    return array_api_compat.array_namespace(x)


# Array types whose namespace and device follow from the type alone, found
# once: NumPy's ndarray itself (not a subclass: a masked array is refused, a
# matrix is not an Array API array). Resolving the namespace of each of a
# call's five or so arrays took about 2 us each, a tenth of a small forward
# call's time besides its loop. {type: (namespace, device)}
_BY_TYPE = {}


def _remember(arr, arr_xp):
    """``arr_xp``, kept for ``type(arr)`` (with the array's device) when that type is NumPy's ndarray itself."""
    cls = type(arr)
    if cls.__module__ == "numpy" and cls.__name__ == "ndarray":
        _BY_TYPE[cls] = (arr_xp, device(arr))
    return arr_xp


def known_array(obj) -> bool:
    """True for an array whose type ``array_namespace`` has met and resolved by type alone (NumPy's
    ndarray): an array, not a masked one."""
    return type(obj) in _BY_TYPE


def device_of(arr):
    """``device(arr)``, without asking for the types whose arrays all live on one device (NumPy's)."""
    known = _BY_TYPE.get(type(arr))
    return device(arr) if known is None else known[1]


def array_namespace(named_arrays, *, xp=None):
    """Resolve one namespace for ``{name: array}``, or raise ``TypeError``.

    ``None`` values are skipped. A value that is not an array, and arrays
    from two different libraries, are ``TypeError`` naming the argument.
    One mix is allowed: Dask arrays with NumPy arrays resolve to Dask (a
    Dask array holds NumPy chunks), unless ``xp`` names NumPy.
    """
    first_name = None
    explicit = xp is not None
    if xp is not None:
        xp = normalize_namespace(xp)
    for name, arr in named_arrays.items():
        if arr is None:
            continue
        known = _BY_TYPE.get(type(arr))
        if known is not None:
            arr_xp = known[0]
        else:
            refuse_masked(name, arr)
            if not is_array(arr):
                raise TypeError(
                    f"{name} must be an array (NumPy, CuPy, PyTorch, JAX, Dask or "
                    f"array-api-strict); got {type(arr).__name__}"
                )
            arr_xp = _remember(arr, namespace_of(arr))
        if xp is None:
            xp, first_name = arr_xp, name
        elif arr_xp is not xp:
            if _dask_and_numpy(xp, arr_xp):
                if is_numpy_namespace(xp) and not explicit:
                    xp, first_name = arr_xp, name  # NumPy arrays join the Dask ones
                if is_dask_namespace(xp):
                    continue
            where = f"{first_name} is from {_library(xp)}" if first_name else f"xp is {_library(xp)}"
            raise TypeError(
                f"{name} is from {_library(arr_xp)} but {where}; all arrays must "
                "come from one library (convert them first)"
            )
    if xp is None:
        raise TypeError("no array given: cannot infer the array namespace (pass xp=)")
    return xp


def _dask_and_numpy(xp1, xp2) -> bool:
    """True when one namespace is Dask's and the other NumPy's."""
    return (is_dask_namespace(xp1) and is_numpy_namespace(xp2)) or (
        is_numpy_namespace(xp1) and is_dask_namespace(xp2)
    )


def normalize_namespace(xp):
    """Map a library module (``numpy``, ``torch``, ...) to its array-API namespace."""
    try:
        return namespace_of(xp.empty(0))
    except Exception as exc:  # a module that cannot make arrays
        raise TypeError(f"xp must be an array namespace; got {xp!r}") from exc


def _library(xp) -> str:
    name = getattr(xp, "__name__", repr(xp))
    return name.replace("array_api_compat.", "")


def outside_stacklevel():
    """The ``stacklevel`` for ``warnings.warn`` that points at the first caller outside rnn_xp.

    Counted from the function that calls ``warnings.warn`` (level 1), up the
    stack past every frame of the package, so that a warning names the
    user's line however many of rnn_xp's own calls lie between.
    """
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1  # the caller of this function: the one that warns
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
