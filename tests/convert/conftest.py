"""Fixtures of the converter tests: Keras 3 on its torch backend."""

from __future__ import annotations

import sys

import pytest


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
