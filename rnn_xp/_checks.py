"""Argument checks shared by the forward pass, the backward pass and the layer.

Every check raises ``ValueError`` for a bad shape or value and ``TypeError``
for a bad dtype or type, and names the argument, the shape it got and the
shape it needs.
"""

from __future__ import annotations

import math
import numbers

from ._compat import (
    array_namespace,
    device,
    device_of,
    is_array,
    is_dask_namespace,
    is_numpy_namespace,
    known_array,
    namespace_of,
    refuse_masked,
)


def shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_float_dtypes(xp, named_arrays):
    """Check every array is real floating; return the promoted dtype."""
    arrays = []
    for name, arr in named_arrays.items():
        if arr is None:
            continue
        if not _real_floating(xp, arr.dtype):
            raise TypeError(
                f"{name} must have a real floating dtype (float32 or float64; float16 and bfloat16 where the "
                f"library has them); got {arr.dtype}"
            )
        arrays.append(arr)
    return xp.result_type(*arrays)


_REAL_FLOATING = set()  # (namespace, dtype) pairs found real floating: asked once each


def _real_floating(xp, dtype):
    """``xp.isdtype(dtype, "real floating")``, remembered for the dtypes that are (a dtype that
    cannot be a set's member is asked every time)."""
    try:
        if (xp, dtype) in _REAL_FLOATING:
            return True
    except TypeError:  # not hashable
        return xp.isdtype(dtype, "real floating")
    if not xp.isdtype(dtype, "real floating"):
        return False
    _REAL_FLOATING.add((xp, dtype))
    return True


def check_same_device(named_arrays):
    """All arrays on one device, else ``ValueError``; return that device.

    An array with no device yet (a JAX tracer under ``jax.jit``, ``jax.grad``
    or ``jax.vmap``, for which ``device`` is ``None``) is skipped: it cannot
    be checked, and it is not on a different device. The device returned is
    that of the first array that has one, or ``None`` when none has.
    ``torch.func`` wrappers report their tensor's device and are checked.
    """
    first = None
    for name, arr in named_arrays.items():
        if arr is None:
            continue
        dev = device_of(arr)
        if dev is None:  # a tracer: placed only when the traced program runs
            continue
        if first is None:
            first = (name, dev)
        elif dev != first[1]:
            raise ValueError(
                f"{name} is on device {dev} but {first[0]} is on device {first[1]}; "
                "move them to one device first"
            )
    return first[1] if first else None


def cast(xp, arr, dtype):
    """``arr`` in ``dtype`` (no copy when it already is); ``None`` passes through."""
    if arr is None or arr.dtype == dtype:
        return arr
    return xp.astype(arr, dtype)


def check_weights(Wx, Wh, b):
    """Check ``Wx (H, D)``, ``Wh (H, H)``, ``b (H,)``; return ``(H, D)``."""
    if Wx.ndim != 2:
        raise ValueError(f"Wx must be 2-D with shape (H, D); got shape {shape_str(Wx.shape)}")
    H, D = Wx.shape
    if tuple(Wh.shape) != (H, H):
        raise ValueError(
            f"Wh must have shape (H, H) = {shape_str((H, H))} to match Wx (H, D) = "
            f"{shape_str(Wx.shape)}; got shape {shape_str(Wh.shape)}"
        )
    if b is not None and tuple(b.shape) != (H,):
        raise ValueError(
            f"b must have shape (H,) = {shape_str((H,))} to match Wx (H, D) = "
            f"{shape_str(Wx.shape)}; got shape {shape_str(b.shape)}"
        )
    return H, D


def check_features(name, arr, D, layout, min_ndim):
    """Check ``arr`` has ``min_ndim`` or more dims and a last dim of ``D``."""
    if arr.ndim < min_ndim or arr.shape[-1] != D:
        raise ValueError(
            f"{name} must have shape {layout} with D = {D} (from Wx (H, D)); "
            f"got shape {shape_str(arr.shape)}"
        )


def check_state(name, arr, batch, H, layout="(*batch, H)"):
    need = tuple(batch) + (H,)
    if tuple(arr.shape) != need:
        raise ValueError(
            f"{name} must have shape {layout} = {shape_str(need)}; got shape {shape_str(arr.shape)}"
        )


def check_leak(leak) -> float:
    """The leak rate alpha must be a real number in (0, 1]."""
    if isinstance(leak, bool) or not isinstance(leak, numbers.Real):
        raise TypeError(f"leak must be a real number in (0, 1]; got {type(leak).__name__}")
    leak = float(leak)
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"leak must be in (0, 1] (1.0 is the plain RNN); got {leak}")
    return leak


def check_bool(name, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def check_lengths(xp, lengths, batch, T, dev):
    """Validate sequence lengths ``(*batch,)`` with values in ``[0, T]``.

    Accepts an integer array of the caller's library (moved to ``dev``), a
    NumPy integer array or a Python sequence of ints (host data, copied to
    ``dev``). An array of any other library is a ``TypeError``: converting
    it can silently reinterpret its bytes (``torch.asarray`` of a JAX array). Returns an integer array of ``xp`` on ``dev``.
    """
    if lengths is None:
        return None
    refuse_masked("lengths", lengths)
    if isinstance(lengths, (list, tuple)):
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in lengths):
            raise TypeError("lengths must be an integer array or a list of ints")
        if len(lengths) != math.prod(batch) or len(batch) != 1:
            raise ValueError(
                f"lengths must have the batch shape (*batch,) = {shape_str(batch)}; "
                f"got shape {shape_str((len(lengths),))}"
            )
        # The values, as Python ints, before any cast: an int32 array (JAX without
        # float64) would wrap 2**32 + 3 to 3, and 2**70 fits no integer dtype at all.
        _check_range([int(v) for v in lengths], T)
        lengths = xp.asarray([int(v) for v in lengths], dtype=xp.int64, device=dev)
    elif not is_array(lengths):
        raise TypeError(f"lengths must be an integer array of shape (*batch,); got {type(lengths).__name__}")
    else:
        src = namespace_of(lengths)
        if src is not xp and not is_numpy_namespace(src):
            raise TypeError(
                f"lengths is an array of another library ({type(lengths).__name__}); "
                "pass it in the same library as x, as a NumPy array or as a list of ints"
            )
        if not src.isdtype(lengths.dtype, "integral"):
            raise TypeError(f"lengths must have an integer dtype; got {lengths.dtype}")
        if tuple(lengths.shape) != tuple(batch):
            raise ValueError(
                f"lengths must have the batch shape (*batch,) = {shape_str(batch)}; "
                f"got shape {shape_str(lengths.shape)}"
            )
        if src is not xp:  # host data for another library: its values before the cast
            lo, hi = _concrete_min_max(src, lengths)
            if lo is not None:
                _check_range([lo, hi], T)
        try:
            if device(lengths) is not None:  # a tracer (jax.jit, jax.vmap) is placed with its program
                lengths = xp.asarray(lengths, device=dev)
        except Exception as exc:
            raise TypeError(
                f"lengths is an array of another library ({type(lengths).__name__}); "
                "pass it in the same library as x"
            ) from exc
    if not xp.isdtype(lengths.dtype, "integral"):
        raise TypeError(f"lengths must have an integer dtype; got {lengths.dtype}")
    if not is_dask_namespace(xp):  # Dask stays lazy: its values are not read here
        lo, hi = _concrete_min_max(xp, lengths)
        if lo is not None:
            _check_range([lo, hi], T)
    return lengths


def check_mask(xp, mask, batch, T, dev, *, lengths=None):
    """Validate a Keras-style mask ``(*batch, T)`` of booleans; return it time-major ``(T, *batch)``.

    Accepts a boolean array of the caller's library (moved to ``dev``), a
    NumPy boolean array or nested lists of bools (host data, copied to
    ``dev``). ``lengths`` and ``mask`` together are a ``ValueError``: they
    mean different things past a sequence's end (zeros, or the repeated
    last output). Returns a boolean array of ``xp`` on ``dev``, or ``None``.
    """
    if mask is None:
        return None
    if lengths is not None:
        raise ValueError(
            "give lengths or mask, not both: past its length a sequence outputs zeros, "
            "at a masked step it repeats its previous output"
        )
    need = (*batch, T)
    if isinstance(mask, (list, tuple)):
        import numpy as np  # host data the caller wrote out: a NumPy array to check, then move

        try:
            host = np.asarray(mask)
        except ValueError:  # rows of different lengths: NumPy's message names no argument
            raise ValueError(
                f"mask must be a rectangular nested list of bools of shape (*batch, T) = "
                f"{shape_str(need)}; got rows of different lengths"
            ) from None
        if host.dtype != np.bool_:
            raise TypeError(f"mask must hold booleans; got a list of {host.dtype}")
        mask = xp.asarray(host, device=dev)
    elif not is_array(mask):
        raise TypeError(f"mask must be a boolean array of shape (*batch, T); got {type(mask).__name__}")
    else:
        if namespace_of(mask) is not xp and not is_numpy_namespace(namespace_of(mask)):
            raise TypeError(
                f"mask is an array of another library ({type(mask).__name__}); "
                "pass it in the same library as x, as a NumPy array or as a list of bools"
            )
        if not namespace_of(mask).isdtype(mask.dtype, "bool"):
            raise TypeError(f"mask must have a boolean dtype; got {mask.dtype}")
        mask = xp.asarray(mask, device=dev)
    if tuple(mask.shape) != need:
        raise ValueError(
            f"mask must have shape (*batch, T) = {shape_str(need)}; got shape {shape_str(mask.shape)}"
        )
    nd = mask.ndim
    return xp.permute_dims(mask, (nd - 1, *range(nd - 1)))  # (T, *batch)


def _check_range(values, T):
    """Python ints ``values`` in ``[0, T]``, else ``ValueError`` quoting the smallest and largest."""
    if values and (min(values) < 0 or max(values) > T):
        raise ValueError(
            f"lengths must lie in [0, T] = [0, {T}]; got values from {min(values)} to {max(values)}"
        )


def _concrete_min_max(xp, lengths):
    """``(min, max)`` of ``lengths`` as Python ints, read to the host once; ``(None, None)`` for a traced array.

    Both are computed where the array lives and brought over in one read (on a
    GPU, one synchronisation per call rather than two).
    """
    if lengths.size == 0:
        return None, None
    try:
        both = xp.stack([xp.min(lengths), xp.max(lengths)])
        values = both.tolist() if hasattr(both, "tolist") else [both[0], both[1]]
        return int(values[0]), int(values[1])
    except Exception:  # a traced value (jax.jit): cannot be read, not checked
        return None, None


def time_first(xp, a):
    """``(*batch, T, F)`` -> ``(T, *batch, F)``."""
    nd = a.ndim
    return xp.permute_dims(a, (nd - 2, *range(nd - 2), nd - 1))


def check_sequence(x, arrays, *, batch_first, xp=None):
    """Check a sequence input and the arrays that go with it.

    ``x`` is ``(T, *batch, D)``, ``(*batch, T, D)`` with ``batch_first``, or a
    list of T arrays ``(*batch, D)``; ``arrays`` maps names to the other
    arguments and must hold ``Wx``, ``Wh``, ``b`` and ``h0``. Returns
    ``(xp, x_tm, H, D, dtype, device)`` with ``x_tm`` time-major in ``dtype``.
    """
    steps = None
    if isinstance(x, (list, tuple)):
        steps = list(x)
        if any(s is None for s in steps):
            raise TypeError("x must not contain None")
        named = {f"x[{i}]": s for i, s in enumerate(steps)}
    elif x is None:
        raise TypeError("x must be an array (T, *batch, D) or a list of T arrays; got None")
    else:
        named = {"x": x}
    named.update(arrays)
    xp = array_namespace(named, xp=xp)
    H, D = check_weights(arrays["Wx"], arrays["Wh"], arrays["b"])
    dtype = check_float_dtypes(xp, named)
    dev = check_same_device(named)

    if steps is not None:  # a list of T arrays (*batch, D), time-ordered
        for i, s in enumerate(steps):
            check_features(f"x[{i}]", s, D, "(*batch, D)", 1)
            if s.shape != steps[0].shape:
                raise ValueError(
                    f"x[{i}] has shape {shape_str(s.shape)} but x[0] has shape "
                    f"{shape_str(steps[0].shape)}; every step must have the same shape"
                )
        if steps:
            x_tm = xp.stack([cast(xp, s, dtype) for s in steps], axis=0)  # (T, *batch, D)
            if is_dask_namespace(xp):  # one chunk per step came from the stack, not from the caller
                x_tm = x_tm.rechunk({0: -1})
        else:
            h0 = arrays["h0"]
            batch = tuple(h0.shape[:-1]) if h0 is not None else ()
            x_tm = xp.zeros((0, *batch, D), dtype=dtype, device=dev)
    elif batch_first:
        check_features("x", x, D, "(*batch, T, D) with batch_first=True", 2)
        x_tm = time_first(xp, x)  # (T, *batch, D)
    else:
        check_features("x", x, D, "(T, *batch, D)", 2)
        x_tm = x
    return xp, cast(xp, x_tm, dtype), H, D, dtype, dev


def require(named, names):
    """Each of ``names`` in ``named`` is given (not ``None``) and is an array, else ``TypeError``."""
    for name in names:
        if named[name] is None:
            raise TypeError(f"{name} is required; got None")
        if known_array(named[name]):
            continue
        refuse_masked(name, named[name])
        if not is_array(named[name]):
            raise TypeError(f"{name} must be an array; got {type(named[name]).__name__}")


def check_real_arrays(named):
    """Each value is an array of a real floating dtype (any library), else ``TypeError``."""
    for name, arr in named.items():
        refuse_masked(name, arr)
        if not is_array(arr):
            raise TypeError(f"{name} must be an array; got {type(arr).__name__}")
        if not namespace_of(arr).isdtype(arr.dtype, "real floating"):
            raise TypeError(f"{name} must have a real floating dtype; got {arr.dtype}")
