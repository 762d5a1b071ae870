"""One ``backend`` fixture over every array library the tests can reach.

An unavailable library or device is a skip with its reason, never a silent pass
(``support.make_backend`` makes each; a test module imports it from ``support``,
not from here: under tests/convert/ ``conftest`` is that folder's own).
With ``RNN_XP_REQUIRE_GPU=1`` (``benchmarks/gpu_check.sh`` sets it) a CuPy or
torch-CUDA backend that cannot run is a failure instead: on a GPU machine a
test that skips for "no CUDA device" hides a broken install. JAX runs with
float64 enabled; torch keeps its float32 default (tests pass dtypes explicitly).
``RNN_XP_TEST_ORDER=reverse`` runs the collected tests in reverse order, to
show a test that needs an earlier one's state (``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import os

import pytest

from support import BACKENDS, make_backend


@pytest.fixture(params=BACKENDS)
def backend(request):
    return make_backend(request.param)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def two_blas_threads():
    """Every BLAS library on two threads for the test, and as it was after.

    Tests of how the kernels hold BLAS threads need more than one to start
    with, whatever earlier tests (or the environment) left. It skips only on a
    machine with one CPU core, where BLAS runs one thread anyway.
    """
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU core here: BLAS runs one thread")
    controller = getattr(threadpoolctl, "OpenBLASController", None)
    if hasattr(controller, "clear_controlling_thread"):  # threadpoolctl >= 3.8: one thread at a time sets OpenBLAS
        controller.clear_controlling_thread(force=True)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        counts = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}
        assert set(counts.values()) == {2}, f"BLAS did not take two threads: {counts}"
        yield


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)


@pytest.fixture
def compiled_products(monkeypatch):
    """``kernels.numba_products`` at every size, on two callers (its thresholds at zero)."""
    _all_compiled(monkeypatch)
    return monkeypatch


def _all_compiled(monkeypatch):
    from rnn_xp.kernels import numba_products

    monkeypatch.setattr(numba_products, "MACS_FROM", 0)
    monkeypatch.setattr(numba_products, "WIDTH_FROM", 0)
    monkeypatch.setattr(numba_products, "TWO_CALLERS_FROM", 0)


@pytest.fixture(params=["compiled", "blas-on-two-callers"])
def backward_products(request, monkeypatch):
    """``kernels.numba_products`` at every size: compiled, or BLAS's on two callers (one BLAS thread each)."""
    from rnn_xp.kernels import numba_products

    if request.param == "compiled":
        _all_compiled(monkeypatch)
    else:
        monkeypatch.setattr(numba_products, "SPLIT_FROM", 0)
        monkeypatch.setattr(numba_products, "SPLIT_BELOW", 1 << 62)
    return request.param


# Hypothesis profiles for tests/functions/test_properties.py: a quick default, and a larger
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


def pytest_collection_modifyitems(session, config, items):
    """``RNN_XP_TEST_ORDER=reverse`` runs the tests in reverse order (``forward``, the default: as collected).

    A test must pass whatever ran before it: a reversed run (of one file or
    the suite) shows a test that leans on state an earlier one left.
    """
    order = os.environ.get("RNN_XP_TEST_ORDER", "forward").strip().lower() or "forward"
    if order not in ("forward", "reverse"):
        raise pytest.UsageError(f"RNN_XP_TEST_ORDER must be forward or reverse; got {order!r}")
    if order == "reverse":
        items.reverse()


def pytest_configure(config):
    config.addinivalue_line("markers", "long: tests of seconds each (CI runs them; deselect with -m 'not long' "
                                       "for a quick local run)")
    config.addinivalue_line(
        "markers",
        "wheel: builds the wheel and installs it in a fresh venv from the package index "
        "(deselect with -m 'not wheel')",
    )
