"""One ``backend`` fixture over every array library the tests can reach.

An unavailable library or device is a skip with its reason, never a silent pass.
JAX runs with float64 enabled; torch keeps its float32 default (tests pass
dtypes explicitly).
"""

from __future__ import annotations

import pytest

from support import Backend, optional_import

BACKENDS = ["numpy", "numpy_readonly", "array_api_strict", "torch", "torch_cuda", "jax", "cupy", "dask"]


def make_backend(name):
    """The ``Backend`` for ``name``, or ``pytest.skip`` with the reason."""
    if name in ("numpy", "numpy_readonly"):
        import array_api_compat.numpy as xp

        return Backend(name, xp, "cpu", readonly=name == "numpy_readonly")
    if name == "array_api_strict":
        strict = optional_import("array_api_strict")
        if strict is None:
            pytest.skip("array-api-strict not installed")
        return Backend(name, strict, strict.Device("CPU_DEVICE"))
    if name.startswith("torch"):
        torch = optional_import("torch")
        if torch is None:
            pytest.skip("torch not installed")
        import array_api_compat.torch as xp

        if name == "torch_cuda":
            if not torch.cuda.is_available():
                pytest.skip("no CUDA device for torch")
            return Backend(name, xp, torch.device("cuda", 0))
        return Backend(name, xp, torch.device("cpu"))
    if name == "jax":
        jax = optional_import("jax")
        if jax is None:
            pytest.skip("jax not installed")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return Backend(name, jnp, jax.devices("cpu")[0])
    if name == "cupy":
        cupy = optional_import("cupy")
        if cupy is None:
            pytest.skip("cupy not installed")
        try:
            available = cupy.cuda.is_available()
        except Exception:
            available = False
        if not available:
            pytest.skip("no CUDA device")
        import array_api_compat.cupy as xp

        return Backend(name, xp, cupy.cuda.Device(0))
    if name == "dask":
        if optional_import("dask.array") is None:
            pytest.skip("dask not installed")
        import array_api_compat.dask.array as xp

        return Backend(name, xp, "cpu")
    raise ValueError(f"unknown backend {name}")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return make_backend(request.param)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)


# Hypothesis profiles for tests/test_properties.py: a quick default, and a larger
# one selected with RNN_XP_HYPOTHESIS=ci-large.
try:
    from hypothesis import HealthCheck
    from hypothesis import settings as _hyp_settings

    _HYP_COMMON = dict(
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    _hyp_settings.register_profile("rnn-xp-default", max_examples=6, **_HYP_COMMON)
    _hyp_settings.register_profile("ci-large", max_examples=150, **_HYP_COMMON)
except ImportError:  # hypothesis is a test extra; tests that need it skip
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "long: long-sequence tests (seconds; deselect with -m 'not long')")
    config.addinivalue_line(
        "markers",
        "wheel: builds the wheel and installs it in a fresh venv from the package index "
        "(deselect with -m 'not wheel')",
    )
