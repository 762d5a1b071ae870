"""The checks of a layer's constructor options: sizes, dropout, activations per direction."""

from __future__ import annotations

import numbers
import warnings

from .._activations import check_activation, check_nonlinearity
from .._compat import outside_stacklevel

__all__ = ["check_activations", "check_dropout", "check_size", "collapse", "gate_options", "per_direction"]


def per_direction(name, value, dirs):
    """``value`` once per direction: a tuple of ``dirs`` entries, or one value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != dirs:
            raise ValueError(
                f"{name} must be one value or one per direction ({dirs}); got {len(value)}: "
                f"{list(value)!r}"
            )
        return tuple(value)
    return (value,) * dirs


def collapse(values):
    """One value when every direction has the same, else the tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def check_activations(nonlinearity, alpha, beta, dirs):
    """``(nonlinearity, alpha, beta, activations)``: the attributes, and ``(name, alpha, beta)`` per direction."""
    names = per_direction("nonlinearity", nonlinearity, dirs)
    alphas = per_direction("activation_alpha", alpha, dirs)
    betas = per_direction("activation_beta", beta, dirs)
    for n in names:
        check_nonlinearity(n)
    activations = tuple(check_activation(n, a, b) for n, a, b in zip(names, alphas, betas))
    given = lambda vs: tuple(None if v is None else float(v) for v in vs)  # noqa: E731
    return collapse(names), collapse(given(alphas)), collapse(given(betas)), activations


def gate_options(activations, alpha, beta, dirs, n):
    """Per direction, the ``activations``, ``activation_alpha``, ``activation_beta`` of a gated cell.

    Each is ``None`` (the cell's defaults), one sequence of ``n`` entries
    (every direction), or ``dirs`` such sequences (ONNX's bidirectional
    nodes list ``2 * n`` activations: the forward direction's, then the
    reverse one's). Returns three tuples of ``dirs`` entries.
    """
    def split(name, value):
        if value is None:
            return (None,) * dirs
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a sequence of {n} entries (or one per direction); got {value!r}")
        value = tuple(value)
        if len(value) == n * dirs and dirs > 1:  # flat, as ONNX lists them
            return tuple(value[d * n:(d + 1) * n] for d in range(dirs))
        if len(value) == dirs and dirs > 1 and all(isinstance(v, (list, tuple)) for v in value):
            return tuple(tuple(v) for v in value)
        return (value,) * dirs  # the cell checks its length
    return split("activations", activations), split("activation_alpha", alpha), split("activation_beta", beta)


def check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def check_dropout(dropout, num_layers):
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1]; got {type(dropout).__name__}")
    dropout = float(dropout)
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1]; got {dropout}")
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout applies between stacked layers, so it has no effect with "
            f"num_layers=1 (got dropout={dropout}, num_layers=1)",
            UserWarning,
            stacklevel=outside_stacklevel(),  # the caller of the layer's constructor
        )
    return dropout
