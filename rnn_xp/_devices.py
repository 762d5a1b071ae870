"""Reading the library, device and dtype arguments of a layer's ``to``, ``state_dict`` and constructor.

``rnn.to("cuda")``, ``rnn.to(torch.float64)``, ``rnn.to(jax.devices("cpu")[0])``:
each positional argument of ``to`` is read as a library, a device or a dtype
by what it is (``to_kind``), a dtype of any library becomes its name
(``dtype_arg``), and ``target`` says which namespace and device a layer
moves to (a device string is read in the target library: ``named_device``).
"""

from __future__ import annotations

import inspect

import numpy as np

from ._backends import NAMES, BackendUnavailable, library_name, resolve_namespace
from ._compat import (
    device,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = ["DEVICE_KINDS", "FLOAT_NAMES", "dtype_arg", "family", "named_device", "target", "to_kind", "where"]


FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
DEVICE_KINDS = ("cpu", "cuda", "gpu", "mps")


def to_kind(arg):
    """``"xp"``, ``"device"`` or ``"dtype"``: what a positional argument of ``RNN.to`` is."""
    if isinstance(arg, str):
        if arg in NAMES:
            return "xp"
        if arg in FLOAT_NAMES:
            return "dtype"
        if arg.partition(":")[0] in DEVICE_KINDS:
            return "device"
        raise ValueError(
            f"rnn.to: {arg!r} is neither a library {list(NAMES)}, a device ('cpu', 'cuda', "
            "'cuda:1', 'gpu') nor a dtype ('float32', 'float64')"
        )
    if inspect.ismodule(arg):
        return "xp"
    if type(arg).__name__.lower().endswith("device"):  # torch.device, jax's, CuPy's, array-api-strict's
        return "device"
    if isinstance(arg, type) or isinstance(dtype_arg(arg), str):
        return "dtype"
    raise TypeError(
        "rnn.to takes a library, a device or a dtype; got "
        f"{type(arg).__name__} {arg!r}"
    )


def dtype_arg(dtype):
    """A dtype of any library (``torch.float64``, ``jnp.float32``, ``np.float64``) as
    its name, which ``resolve_dtype`` takes for every library; anything else as given,
    for ``resolve_dtype``'s message."""
    name = dtype
    if isinstance(dtype, type):
        if issubclass(dtype, np.generic):
            name = np.dtype(dtype).name
        else:
            inner = getattr(dtype, "dtype", None)  # jnp.float32 and the like
            if inner is not None and not inspect.isdatadescriptor(inner):
                name = str(getattr(inner, "name", inner))
    elif not isinstance(dtype, str):
        name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
    return name if name in FLOAT_NAMES else dtype


def family(xp):
    """The library of a namespace as a backend name of ``rnn_xp._backends``."""
    for name, test in (("torch", is_torch_namespace), ("jax", is_jax_namespace),
                       ("cupy", is_cupy_namespace), ("dask", is_dask_namespace),
                       ("numpy", is_numpy_namespace)):
        if test(xp):
            return name
    return "array_api_strict" if "array_api_strict" in library_name(xp) else None


def target(cur_xp, cur_device, xp, dev):
    """``(namespace, device)`` that ``RNN.to(xp=xp, device=dev)`` moves a layer to."""
    if xp is not None:
        namespace, default = resolve_namespace(xp, None)
        if dev is None:
            return namespace, cur_device if namespace is cur_xp else default
    elif dev is None:
        return cur_xp, cur_device
    elif isinstance(dev, str):
        namespace, default = cur_xp, cur_device
    else:  # a device object: its library
        library = type(dev).__module__.split(".")[0].replace("jaxlib", "jax")
        if library in NAMES and library != family(cur_xp):
            namespace, _ = resolve_namespace(library, None)
        else:
            namespace = cur_xp
        return namespace, dev
    if not isinstance(dev, str):
        return namespace, dev
    return named_device(namespace, default, dev)


def named_device(xp, default, name):
    """``(namespace, device)`` for a device string read in library ``xp``."""
    kind, _, index = name.partition(":")
    if kind not in DEVICE_KINDS or not (index == "" or index.isdigit()):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'gpu'; got {name!r}")
    lib = family(xp)
    if lib == "torch":
        import torch

        dev = torch.device(name)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailable(f"torch finds no CUDA device for device={name!r}")
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
        return xp, dev
    if lib == "jax":
        import jax

        platform = "cpu" if kind == "cpu" else "gpu"
        try:
            devices = jax.devices(platform)
        except RuntimeError as exc:
            raise BackendUnavailable(f"jax has no {platform} device for device={name!r}") from exc
        number = int(index or 0)
        if number >= len(devices):
            raise ValueError(f"device {name!r}: jax has {len(devices)} {platform} device(s)")
        return xp, devices[number]
    if kind == "mps":
        raise ValueError(f"device 'mps' is a torch device; {library_name(xp)} has none")
    if kind == "cpu":
        if lib == "cupy":  # off the GPU: NumPy
            return resolve_namespace("numpy", None)
        return xp, default
    try:  # CPU libraries move to the GPU as CuPy
        namespace, dev = resolve_namespace("cupy", None)
    except BackendUnavailable as exc:
        raise BackendUnavailable(
            f"device={name!r} moves a {library_name(xp)} layer to CuPy, NumPy's interface on "
            f"the GPU, and {exc}"
        ) from exc
    if index:
        import cupy

        dev = cupy.cuda.Device(int(index))
    return namespace, dev


def where(params):
    """``(device, dtype)`` of the parameters (the dtype as the arrays report it)."""
    first = next(iter(params.values()))
    return device(first), first.dtype
