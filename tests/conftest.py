"""One ``backend`` fixture over every array library the tests can reach.

An unavailable library or device is a skip with its reason, never a silent pass
(``support.make_backend`` makes each; a test module imports it from ``support``,
not from here: under tests/convert/ ``conftest`` is that folder's own).
With ``RNN_XP_REQUIRE_GPU=1`` (``benchmarks/gpu_check.sh`` sets it) a CuPy or
torch-CUDA backend that cannot run is a failure instead: on a GPU machine a
test that skips for "no CUDA device" hides a broken install. JAX runs with
float64 enabled; torch keeps its float32 default (tests pass dtypes explicitly).
"""

from __future__ import annotations

import pytest

from support import BACKENDS, make_backend


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
