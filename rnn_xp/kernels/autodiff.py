"""Whose gradient runs inside a framework's autodiff: rnn_xp's backward, or the framework's own.

JAX (``jax.grad``, ``jax.vjp``, ...) and PyTorch (autograd, ``torch.func``)
differentiate whatever they run. Left alone, they would record every step of
the forward loop and differentiate it op by op. The JAX and torch kernels
instead register rnn_xp's backward pass (``rnn_xp.rnn_backward``'s kernels)
as the gradient of the whole recurrence: ``jax.custom_vjp`` in
``kernels.jax``, a ``torch.autograd.Function`` in ``kernels.torch``. The
forward then records nothing step by step, and the backward needs only the
forward's states ``h_seq``.

The environment variable ``RNN_XP_AUTODIFF`` chooses, read at every call:

============  ================================================================
``rnn_xp``    the default: rnn_xp's backward is the gradient
``framework`` the framework differentiates the forward loop itself (also the
              way to take ``jax.jvp`` / ``torch.func.jvp``, which a custom
              reverse-mode gradient does not support)
============  ================================================================

Any other value is a ``ValueError``. Both give the same gradients to rounding.

Kernel options travel through the wrappers untouched (``**options``): an
option whose value is an array (``lengths``) is data, passed along with the
arrays and given no gradient; any other value (``nonlinearity``, ``leak``,
...) is a setting, fixed for a compiled program. Every forward option but
``return_sequences`` is also an option of the backward kernels, and a
backward that names ``b`` gets the forward's bias (``with_bias``).
"""

from __future__ import annotations

import inspect

from . import _settings

__all__ = ["VARIABLE", "backward_options", "framework_autodiff", "split_options", "takes", "with_bias"]

VARIABLE = _settings.AUTODIFF
CHOICES = _settings.AUTODIFF_CHOICES

# Options of the forward kernels that the backward kernels do not take.
FORWARD_ONLY = ("return_sequences",)


def framework_autodiff() -> bool:
    """True when ``RNN_XP_AUTODIFF=framework``: the framework differentiates the loop itself."""
    return _settings.autodiff() == "framework"


def backward_options(options):
    """The forward's options that its backward takes (all but ``return_sequences``)."""
    return {name: value for name, value in options.items() if name not in FORWARD_ONLY}


def split_options(options, is_array):
    """``(settings, data)``: a sorted tuple of ``(name, value)`` for the non-array options
    (lists as tuples, so that the settings can key a cache), and a dict of the array ones."""
    settings = tuple(sorted(
        (k, tuple(v) if isinstance(v, list) else v) for k, v in options.items() if not is_array(v)
    ))  # fmt: skip
    data = {k: v for k, v in options.items() if is_array(v)}
    return settings, data


def with_bias(kernel, options, b):
    """``options``, plus the forward's bias ``b`` when the backward ``kernel`` takes one.

    A backward that recomputes ``z_t`` (rather than reading ``f(z_t)`` off
    ``h_seq``) needs the bias; the fast backward kernels do not take it.
    """
    if "b" in inspect.signature(kernel).parameters and "b" not in options:
        return {**options, "b": b}
    return options


def takes(kernel, options) -> bool:
    """True when ``kernel``'s signature names every option (a fast kernel that knows them all)."""
    params = inspect.signature(kernel).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return all(name in params for name in options)
