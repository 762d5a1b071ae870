"""NumPy's own inner loops of ``tanh`` and ``exp``, found by address, for the compiled loops.

The compiled loops (``kernels._numba_jit``) call these functions on their
rows instead of an activation of their own, so that their ``tanh`` and
sigmoid give NumPy's numbers bit for bit, on every CPU NumPy dispatches
for (its SIMD loops included): the compiled and the NumPy loop then agree
to the last bits. A ufunc keeps its inner loops in the ``functions`` array
of NumPy's public C structure ``PyUFuncObject``; the loop for one dtype is
``void loop(char **args, npy_intp const *dims, npy_intp const *steps, void *data)``.

The addresses are used only after a self-check: the structure's name and
arity read back as expected, the loop takes no ``data``, and calling it
through ``ctypes`` gives ``numpy.tanh``'s (``numpy.exp``'s) results bit for
bit on specials (signed zeros, sub-normals, infinities, NaN) and a range of
values. Where that fails the compiled loops are not used (``status`` says
why) and the NumPy loops run instead.
"""

from __future__ import annotations

import ctypes

import numpy

__all__ = ["NAMES", "address", "status", "symbol"]

NAMES = ("tanh", "exp")
_TYPES = {"float32": 11, "float64": 12}  # NPY_FLOAT, NPY_DOUBLE

_FOUND = None  # {(name, dtype name): address} once looked up, or a str saying why not


class _UFunc(ctypes.Structure):
    """The head of NumPy's ``PyUFuncObject`` (``numpy/ufuncobject.h``), up to ``types``."""

    _fields_ = [
        ("ob_refcnt", ctypes.c_ssize_t),
        ("ob_type", ctypes.c_void_p),
        ("nin", ctypes.c_int),
        ("nout", ctypes.c_int),
        ("nargs", ctypes.c_int),
        ("identity", ctypes.c_int),
        ("functions", ctypes.POINTER(ctypes.c_void_p)),
        ("data", ctypes.POINTER(ctypes.c_void_p)),
        ("ntypes", ctypes.c_int),
        ("reserved1", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("types", ctypes.POINTER(ctypes.c_char)),
    ]


_LOOP = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_ssize_t),
                         ctypes.POINTER(ctypes.c_ssize_t), ctypes.c_void_p)  # fmt: skip


def symbol(name, dtype):
    """The name under which the compiled code calls NumPy's loop ``name`` for ``dtype``."""
    return f"rnn_xp_numpy_{name}_{numpy.dtype(dtype).name}"


def address(name, dtype):
    """The address of NumPy's inner loop of ``name`` (``"tanh"``, ``"exp"``) for ``dtype``; 0 where not usable."""
    found = _lookup()
    return 0 if isinstance(found, str) else found[(name, numpy.dtype(dtype).name)]


def status():
    """Why NumPy's loops cannot be called by address ("" when they can)."""
    found = _lookup()
    return found if isinstance(found, str) else ""


def _lookup():
    global _FOUND
    if _FOUND is None:
        try:
            _FOUND = {(name, dt): _find(name, dt) for name in NAMES for dt in _TYPES}
        except Exception as exc:  # any surprise in NumPy's structure: not used
            _FOUND = f"NumPy's {exc}"
    return _FOUND


def _find(name, dtype):
    ufunc = getattr(numpy, name)
    head = _UFunc.from_address(id(ufunc))
    if head.name != name.encode() or (head.nin, head.nout) != (1, 1) or not 0 < head.ntypes < 64:
        raise RuntimeError(f"ufunc structure did not read back as {name}'s (NumPy {numpy.__version__})")
    code = _TYPES[dtype]
    for k in range(head.ntypes):  # the first loop of the dtype is the one numpy.<name> runs
        if ord(head.types[2 * k]) == code and ord(head.types[2 * k + 1]) == code:
            if head.data[k]:
                raise RuntimeError(f"{name} loop for {dtype} takes data")
            fn = head.functions[k]
            if not fn or not _agrees(ufunc, fn, dtype):
                raise RuntimeError(f"{name} loop for {dtype} failed the self-check against numpy.{name}")
            return fn
    raise RuntimeError(f"{name} has no {dtype} loop")


def _agrees(ufunc, fn, dtype):
    """Whether the loop at ``fn`` gives ``ufunc``'s results bit for bit (contiguous, strided, in place)."""
    info = numpy.finfo(dtype)
    x = numpy.concatenate([
        [0.0, -0.0, numpy.inf, -numpy.inf, numpy.nan, float(info.smallest_subnormal), -float(info.tiny),
         float(info.max), -float(info.max)],
        numpy.linspace(-30, 30, 1001), numpy.geomspace(float(info.smallest_subnormal), 2.0, 200),
    ]).astype(dtype)  # fmt: skip
    with numpy.errstate(all="ignore"):
        want = ufunc(x)
    loop = _LOOP(fn)
    for stride in (1, 3):
        src = numpy.repeat(x, stride)[::stride].copy() if stride == 1 else numpy.repeat(x, stride)
        out = numpy.empty_like(x)
        _call(loop, src, out, x.size, src.itemsize * stride, out.itemsize)
        if not numpy.array_equal(out.view(f"u{out.itemsize}"), want.view(f"u{out.itemsize}")):
            return False
    inplace = x.copy()
    _call(loop, inplace, inplace, x.size, x.itemsize, x.itemsize)
    return bool(numpy.array_equal(inplace.view(f"u{x.itemsize}"), want.view(f"u{x.itemsize}")))


def _call(loop, src, out, n, in_step, out_step):
    args = (ctypes.c_void_p * 2)(src.ctypes.data, out.ctypes.data)
    with numpy.errstate(all="ignore"):
        loop(args, (ctypes.c_ssize_t * 1)(n), (ctypes.c_ssize_t * 2)(in_step, out_step), None)
