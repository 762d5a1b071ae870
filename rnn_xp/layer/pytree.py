"""The layers as JAX pytrees, registered without importing JAX.

Every layer is a JAX pytree (``register_pytree``): its parameters are the
leaves, everything else is static, so ``jax.grad(loss)(layer)`` is a layer
of gradients and ``jax.jit``/``jax.vmap``/``jax.tree.map`` take layers.
"""

from __future__ import annotations

import functools
import sys
import threading

import numpy as np

__all__ = ["register_pytree", "staged"]


_PYTREES = set()  # the layer classes registered with JAX
_PYTREES_LOCK = threading.Lock()


def register_pytree(cls):
    """Make layer class ``cls`` a JAX pytree, once, when JAX is imported (else nothing).

    The leaves are the parameters in torch's order (``layer.params``'s);
    everything else (the configuration, ``xp``, ``device``, ``dtype``, the
    mode ``training`` and ``generator``) is static, compared for equality
    (the generator by identity). So ``jax.grad(loss)(layer)`` returns a
    layer of gradients, and ``jax.jit``/``jax.vmap``/``jax.tree.map`` take
    layers. Called when a layer is made, moved or unpickled: JAX is never
    imported here (``import rnn_xp`` imports no backend), and a class is
    registered as soon as any of its layers is made or moved with JAX
    loaded.
    """
    if cls in _PYTREES or "jax" not in sys.modules:
        return
    with _PYTREES_LOCK:
        if cls in _PYTREES:
            return
        from jax import tree_util

        unflatten = functools.partial(_unflatten, cls)
        tree_util.register_pytree_with_keys(cls, _flatten_with_keys, unflatten, flatten_func=_flatten)
        _PYTREES.add(cls)


class _Static:
    """What a layer's pytree keeps besides its leaves: the parameters' names and every other attribute.

    Equal when the class, the names and every attribute are equal (the
    generator, and anything unhashable, by identity), so that ``jax.jit``
    reuses a compiled program for a layer of the same configuration and
    mode, and ``jax.tree.map`` combines a layer with its gradients. Two
    layers made apart differ in their generators (a layer's state, never
    silently swapped for another's): ``jax.tree.map`` combines them once
    they share one.
    """

    __slots__ = ("names", "state", "_key")

    def __init__(self, cls, names, state):
        self.names = names
        self.state = {k: v for k, v in state.items() if k != "params"}
        self._key = (cls, names, tuple(sorted((k, _frozen(v)) for k, v in self.state.items())))

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        state = self.state
        return (f"static(params {', '.join(self.names)}; training={state.get('training')}, "
                f"generator at {id(state.get('generator')):#x})")


class _Identity:
    """A value compared by identity (a generator, an unhashable attribute)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self):
        return id(self.value)


def _frozen(value):
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, np.random.Generator):
        return _Identity(value)
    try:
        hash(value)
    except TypeError:
        return _Identity(value)
    return value


def _flatten(layer):
    names = tuple(layer.params)
    return tuple(layer.params[n] for n in names), _Static(type(layer), names, layer.__dict__)


def _flatten_with_keys(layer):
    from jax.tree_util import GetAttrKey

    leaves, static = _flatten(layer)
    return tuple((GetAttrKey(n), leaf) for n, leaf in zip(static.names, leaves)), static


def _unflatten(cls, static, leaves):
    layer = object.__new__(cls)
    layer.__dict__.update(static.state)  # a copy: the layer's own attributes
    layer.params = dict(zip(static.names, leaves))
    return layer


def staged(xp):
    """True inside a JAX trace that stages operations out (``jax.jit``, ``jax.checkpoint``, ``lax.scan``).

    There even an array made from constants is a tracer; under ``jax.grad``
    or ``jax.vmap`` alone it is concrete.
    """
    import jax

    return isinstance(xp.zeros(()), jax.core.Tracer)
