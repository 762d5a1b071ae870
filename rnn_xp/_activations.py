"""The two nonlinearities of an Elman RNN, each with its derivative.

The derivative is written in terms of the activation's *output* ``h = f(z)``,
which is what backpropagation through time has at hand:

    tanh:  f'(z) = 1 - h**2
    relu:  f'(z) = 1 if h > 0 else 0
"""

from __future__ import annotations

NONLINEARITIES = ("tanh", "relu")


def _tanh(xp, z):
    return xp.tanh(z)


def _relu(xp, z):
    return xp.clip(z, min=0)  # keeps NaN, unlike where(z > 0, z, 0)


def _dtanh(xp, h):
    return 1 - h * h


def _drelu(xp, h):
    return xp.astype(h > 0, h.dtype)


_FORWARD = {"tanh": _tanh, "relu": _relu}
_DERIVATIVE = {"tanh": _dtanh, "relu": _drelu}


def check_nonlinearity(nonlinearity) -> str:
    """Return ``nonlinearity`` if it is one of the choices, else raise ``ValueError``."""
    if not isinstance(nonlinearity, str) or nonlinearity not in _FORWARD:
        raise ValueError(
            f"nonlinearity must be one of {list(NONLINEARITIES)}; got {nonlinearity!r}"
        )
    return nonlinearity


def activation(nonlinearity):
    """``f(xp, z)`` for the named nonlinearity."""
    return _FORWARD[check_nonlinearity(nonlinearity)]


def derivative(nonlinearity):
    """``f'(xp, h)``, the derivative as a function of the output ``h = f(z)``."""
    return _DERIVATIVE[check_nonlinearity(nonlinearity)]
