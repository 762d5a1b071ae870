"""The ``RNN_XP_*`` environment settings of the kernels, read in one place.

Each is read when the kernels ask for it, a value that is none of those
listed being a ``ValueError`` naming the variable, whatever the arrays are:
``RNN_XP_NUMBA``, ``RNN_XP_AUTODIFF`` and ``RNN_XP_CUPY_PATH`` at every call
(a process, or a test, may change them between calls), ``RNN_XP_MKL`` when
oneMKL is first loaded (``kernels.mkl``: once per process).

======================  =============================  ==========================================
variable                values (default first)         what it chooses
======================  =============================  ==========================================
``RNN_XP_NUMBA``        ``auto`` (or empty), ``1``,    the compiled NumPy loop: by size, always
                        ``0``                          (numba installed), never
``RNN_XP_MKL``          ``auto`` (or empty), ``1``,    oneMKL for the NumPy loop: on Intel CPUs
                        ``0``                          above a size, on any CPU, never (not loaded)
``RNN_XP_AUTODIFF``     ``rnn_xp``, ``framework``      whose gradient JAX and torch autodiff run
``RNN_XP_CUPY_PATH``    ``auto``, ``fused``,           the CuPy path: by size, always the fused
                        ``persistent``                 loop, the persistent kernel where eligible
======================  =============================  ==========================================

Case and surrounding spaces do not matter. ``forced_cupy_path`` overrides
``RNN_XP_CUPY_PATH`` for a block of code without touching the environment.
What each setting selects is decided in ``kernels/__init__.py``'s table.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

__all__ = [
    "AUTODIFF",
    "AUTODIFF_CHOICES",
    "CUPY_PATH",
    "CUPY_PATHS",
    "MKL",
    "NUMBA",
    "autodiff",
    "cupy_path",
    "forced_cupy_path",
    "mkl",
    "numba",
]

NUMBA = "RNN_XP_NUMBA"
MKL = "RNN_XP_MKL"
AUTODIFF = "RNN_XP_AUTODIFF"
CUPY_PATH = "RNN_XP_CUPY_PATH"

AUTODIFF_CHOICES = ("rnn_xp", "framework")
CUPY_PATHS = ("auto", "fused", "persistent")

# RNN_XP_NUMBA and RNN_XP_MKL: a switch with an automatic default
_SWITCH = {"": "auto", "auto": "auto", "1": "on", "0": "off"}

_FORCED_CUPY_PATH = contextvars.ContextVar("rnn_xp_cupy_path", default=None)


def numba():
    """``RNN_XP_NUMBA`` as ``"auto"`` (unset, empty or ``auto``), ``"on"`` (``1``) or ``"off"`` (``0``)."""
    return _switch(NUMBA)


def mkl():
    """``RNN_XP_MKL`` as ``"auto"`` (unset, empty or ``auto``), ``"on"`` (``1``) or ``"off"`` (``0``)."""
    return _switch(MKL)


def _switch(name):
    value = os.environ.get(name, "")
    try:
        return _SWITCH[value.strip().lower()]
    except KeyError:
        raise ValueError(f"{name} must be 0, 1 or auto; got {value!r}") from None


def autodiff():
    """``RNN_XP_AUTODIFF``: ``"rnn_xp"`` (unset or empty) or ``"framework"``."""
    value = os.environ.get(AUTODIFF, "rnn_xp").strip().lower() or "rnn_xp"
    if value not in AUTODIFF_CHOICES:
        raise ValueError(f"{AUTODIFF} must be one of {list(AUTODIFF_CHOICES)} (default rnn_xp); got {value!r}")
    return value


def cupy_path():
    """The requested CuPy path: ``forced_cupy_path``'s if one is active, else ``RNN_XP_CUPY_PATH`` (``auto``)."""
    forced = _FORCED_CUPY_PATH.get()
    if forced is not None:
        return forced
    value = os.environ.get(CUPY_PATH, "auto").strip().lower() or "auto"
    if value not in CUPY_PATHS:
        raise ValueError(f"{CUPY_PATH} must be one of {', '.join(CUPY_PATHS)}; got {value!r}")
    return value


@contextlib.contextmanager
def forced_cupy_path(path):
    """Within the ``with`` block (this thread / context only), CuPy uses ``path``.

    ``path`` is ``"auto"``, ``"fused"`` or ``"persistent"``; it takes
    precedence over ``RNN_XP_CUPY_PATH``. The environment is not touched.
    """
    if path not in CUPY_PATHS:
        raise ValueError(f"path must be one of {', '.join(CUPY_PATHS)}; got {path!r}")
    token = _FORCED_CUPY_PATH.set(path)
    try:
        yield
    finally:
        _FORCED_CUPY_PATH.reset(token)
