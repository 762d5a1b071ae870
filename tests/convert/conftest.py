"""Fixtures of the converter tests: Keras 3 on its torch backend, and a count of the weights drawn and decoded."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from support import optional_import


@pytest.fixture(scope="module")
def keras():
    """Keras 3 on its torch backend (the variable is set only if Keras is not loaded yet)."""
    with pytest.MonkeyPatch.context() as mp:
        if "keras" not in sys.modules:
            mp.setenv("KERAS_BACKEND", "torch")
        keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras already loaded with the {keras.backend.backend()} backend")
    return keras


@pytest.fixture
def counting(monkeypatch):
    """Counts the weights the layers draw and the tensors onnx decodes: ``{"draws": n, "decoded": n}``.

    ``np.random.default_rng`` as the layer module sees it gives generators that
    count each ``uniform`` draw (the layers' initial weights); where onnx is
    installed, ``onnx.numpy_helper.to_array`` counts the tensors it decodes.
    """
    from rnn_xp.layer import base as layer_module  # where the layers draw their weights

    counts = {"draws": 0, "decoded": 0}

    class Counting:
        def __init__(self, seed=None):
            self._rng = np.random.Generator(np.random.PCG64(seed))

        def uniform(self, *args, **kwargs):
            counts["draws"] += 1
            return self._rng.uniform(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._rng, name)

    monkeypatch.setattr(layer_module.np.random, "default_rng", Counting)
    numpy_helper = optional_import("onnx.numpy_helper")
    if numpy_helper is not None:
        to_array = numpy_helper.to_array

        def counting_to_array(tensor, *args, **kwargs):
            counts["decoded"] += 1
            return to_array(tensor, *args, **kwargs)

        monkeypatch.setattr(numpy_helper, "to_array", counting_to_array)
    return counts
