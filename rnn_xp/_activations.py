"""The nonlinearities of an Elman RNN, each with its derivative.

Two of them, ``tanh`` and ``relu``, are the plain RNN's: every kernel runs
them, and their derivative is written in terms of the activation's
*output* ``h = f(z)``, which is what backpropagation through time has at
hand::

    tanh:  f'(z) = 1 - h**2
    relu:  f'(z) = 1 if h > 0 else 0

The others are the rest of the ONNX ``RNN`` operator's list, several with
the parameters ``alpha`` and ``beta`` (``activation_alpha`` /
``activation_beta``), defaulting to the values of the ONNX operator of the
same name::

    name               f(z)                              defaults         ONNX name
    sigmoid            1 / (1 + exp(-z))                                   Sigmoid
    affine             alpha * z + beta                  alpha=1, beta=0  Affine
    leaky_relu         z if z >= 0 else alpha * z        alpha=0.01       LeakyRelu
    thresholded_relu   z if z > alpha else 0             alpha=1          ThresholdedRelu
    scaled_tanh        alpha * tanh(beta * z)            alpha=1, beta=1  ScaledTanh
    hard_sigmoid       min(max(alpha * z + beta, 0), 1)  alpha=0.2, beta=0.5  HardSigmoid
    elu                z if z >= 0 else alpha * (exp(z) - 1)  alpha=1     Elu
    softsign           z / (1 + |z|)                                       Softsign
    softplus           log(1 + exp(z))                                     Softplus

(ONNX gives no defaults for Affine and ScaledTanh, whose stand-alone
operators were experimental; rnn_xp takes the identity and plain tanh.)
These run in the portable kernels only, which take their derivative at the
pre-activation ``z`` (``derivative_at``): several of them cannot be
differentiated from their output alone, and ``clip`` cannot either.
"""

from __future__ import annotations

import math
import numbers

#: The two activations of the plain RNN, which every kernel runs.
PLAIN = ("tanh", "relu")

#: Every activation: name -> (default alpha, default beta); None where it takes none.
PARAMETERS = {
    "tanh": (None, None),
    "relu": (None, None),
    "sigmoid": (None, None),
    "affine": (1.0, 0.0),
    "leaky_relu": (0.01, None),
    "thresholded_relu": (1.0, None),
    "scaled_tanh": (1.0, 1.0),
    "hard_sigmoid": (0.2, 0.5),
    "elu": (1.0, None),
    "softsign": (None, None),
    "softplus": (None, None),
}

NONLINEARITIES = tuple(PARAMETERS)

#: rnn_xp's name -> the ONNX RNN operator's name.
ONNX_NAMES = {
    "tanh": "Tanh",
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "affine": "Affine",
    "leaky_relu": "LeakyRelu",
    "thresholded_relu": "ThresholdedRelu",
    "scaled_tanh": "ScaledTanh",
    "hard_sigmoid": "HardSigmoid",
    "elu": "Elu",
    "softsign": "Softsign",
    "softplus": "Softplus",
}


# -- the plain two, derivative from the output ------------------------------------


def _tanh(xp, z):
    return xp.tanh(z)


def _relu(xp, z):
    return xp.clip(z, min=0)  # keeps NaN, unlike where(z > 0, z, 0)


def _dtanh(xp, h):
    return 1 - h * h


def _drelu(xp, h):
    return xp.astype(h > 0, h.dtype)


def _dsigmoid(xp, s):
    return s * (1 - s)


_FORWARD = {"tanh": _tanh, "relu": _relu}
# The derivatives that can be read off the output: the plain RNN's two, and the
# sigmoid of the LSTM's and GRU's gates.
_DERIVATIVE = {"tanh": _dtanh, "relu": _drelu, "sigmoid": _dsigmoid}


# -- every activation, forward and derivative at z ------------------------------------
# Each maker takes (alpha, beta) and returns f(xp, z). NaN inputs stay NaN.


def _sigmoid(xp, z):
    e = xp.exp(-xp.abs(z))  # in (0, 1]: no overflow on either side
    # 1 / (1 + e) where z >= 0, e / (1 + e) elsewhere: one division (the compiled loops' formula, the same
    # bits). The numerator is max(e, [z >= 0]) (e <= 1; NaN stays NaN): NumPy's where() on a mask of
    # random signs mispredicts a branch per element (0.81 ms for 1600 x 128 float32 here, maximum 0.03)
    return xp.maximum(e, xp.astype(z >= 0, e.dtype)) / (1 + e)


def _make(name, alpha, beta):
    if name == "tanh":
        return _tanh
    if name == "relu":
        return _relu
    if name == "sigmoid":
        return _sigmoid
    if name == "affine":
        return lambda xp, z: alpha * z + beta
    if name == "leaky_relu":
        return lambda xp, z: xp.where(z >= 0, z, alpha * z)
    if name == "thresholded_relu":
        return lambda xp, z: xp.where((z > alpha) | xp.isnan(z), z, xp.zeros_like(z))
    if name == "scaled_tanh":
        return lambda xp, z: alpha * xp.tanh(beta * z)
    if name == "hard_sigmoid":
        return lambda xp, z: xp.clip(alpha * z + beta, min=0.0, max=1.0)
    if name == "elu":  # expm1 of min(z, 0): no overflow in the branch not taken
        return lambda xp, z: xp.where(z >= 0, z, alpha * xp.expm1(xp.clip(z, max=0.0)))
    if name == "softsign":
        return lambda xp, z: z / (1 + xp.abs(z))
    if name == "softplus":
        return lambda xp, z: xp.logaddexp(z, xp.zeros_like(z))
    raise AssertionError(name)


def _make_derivative(name, alpha, beta):
    """``f'(xp, z)`` at the pre-activation ``z``."""
    if name == "tanh":
        return lambda xp, z: 1 - xp.tanh(z) ** 2
    if name == "relu":
        return lambda xp, z: xp.astype(z > 0, z.dtype)
    if name == "sigmoid":

        def dsigmoid(xp, z):
            s = _sigmoid(xp, z)
            return s * (1 - s)

        return dsigmoid
    if name == "affine":
        return lambda xp, z: xp.full_like(z, alpha)
    if name == "leaky_relu":
        return lambda xp, z: xp.where(z >= 0, xp.ones_like(z), xp.full_like(z, alpha))
    if name == "thresholded_relu":
        return lambda xp, z: xp.astype(z > alpha, z.dtype)
    if name == "scaled_tanh":
        return lambda xp, z: (alpha * beta) * (1 - xp.tanh(beta * z) ** 2)
    if name == "hard_sigmoid":

        def dhard_sigmoid(xp, z):
            u = alpha * z + beta
            return xp.where((u > 0) & (u < 1), xp.full_like(z, alpha), xp.zeros_like(z))

        return dhard_sigmoid
    if name == "elu":
        return lambda xp, z: xp.where(z >= 0, xp.ones_like(z), alpha * xp.exp(xp.clip(z, max=0.0)))
    if name == "softsign":
        return lambda xp, z: 1 / (1 + xp.abs(z)) ** 2
    if name == "softplus":
        return _sigmoid
    raise AssertionError(name)


# -- checks and lookups ----------------------------------------------------------------


def check_nonlinearity(nonlinearity) -> str:
    """Return ``nonlinearity`` if it is one of the choices, else raise ``ValueError``."""
    if not isinstance(nonlinearity, str) or nonlinearity not in PARAMETERS:
        raise ValueError(
            f"nonlinearity must be one of {list(NONLINEARITIES)}; got {nonlinearity!r}"
        )
    return nonlinearity


def _check_parameter(label, value, name, default):
    if value is None:
        return default
    if default is None:
        raise ValueError(f"{label} does not apply to nonlinearity={name!r}; got {value!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{label} must be finite; got {value}")
    return value


def check_activation(nonlinearity, alpha=None, beta=None):
    """``(name, alpha, beta)`` with the defaults filled in; ``None`` where it takes none.

    Raises ``ValueError`` for an unknown name, for a parameter the activation
    does not take, or a parameter that is not finite; ``TypeError`` for one that
    is not a real number.
    """
    name = check_nonlinearity(nonlinearity)
    default_alpha, default_beta = PARAMETERS[name]
    alpha = _check_parameter("activation_alpha", alpha, name, default_alpha)
    beta = _check_parameter("activation_beta", beta, name, default_beta)
    return name, alpha, beta


def check_clip(clip):
    """``None`` (no clipping) or a positive real number, as a float."""
    if clip is None:
        return None
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real):
        raise TypeError(f"clip must be a positive number or None; got {type(clip).__name__}")
    clip = float(clip)
    if not clip > 0:  # NaN fails too
        raise ValueError(f"clip must be a positive number (the pre-activation bound) or None; got {clip}")
    return clip


def is_plain(nonlinearity, alpha=None, beta=None, clip=None):
    """True when every kernel runs this activation: tanh or relu, no parameters, no clip."""
    return nonlinearity in PLAIN and alpha is None and beta is None and clip is None


def activation(nonlinearity, alpha=None, beta=None):
    """``f(xp, z)`` for the named nonlinearity with its parameters (defaults when ``None``)."""
    name, alpha, beta = check_activation(nonlinearity, alpha, beta)
    if name in _FORWARD:
        return _FORWARD[name]
    return _make(name, alpha, beta)


def derivative(nonlinearity):
    """``f'(xp, h)``, the derivative of tanh, relu or sigmoid as a function of the output ``h = f(z)``."""
    name = check_nonlinearity(nonlinearity)
    if name not in _DERIVATIVE:
        raise ValueError(
            f"the derivative of {name!r} is taken at the pre-activation: use derivative_at"
        )
    return _DERIVATIVE[name]


def derivative_at(nonlinearity, alpha=None, beta=None):
    """``f'(xp, z)``, the derivative at the pre-activation ``z``, for every activation."""
    name, alpha, beta = check_activation(nonlinearity, alpha, beta)
    return _make_derivative(name, alpha, beta)
