"""One ``backend`` fixture over every array library the tests can reach.

An unavailable library or device is a skip with its reason, never a silent pass.
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

from support import Backend, optional_import

BACKENDS = ["numpy", "numpy_readonly", "array_api_strict", "torch", "torch_cuda", "jax", "cupy", "dask"]


def _no_gpu(reason):
    """Skip with ``reason``, or fail where a GPU is required (``RNN_XP_REQUIRE_GPU=1``)."""
    if os.environ.get("RNN_XP_REQUIRE_GPU", "") not in ("", "0"):
        pytest.fail(f"RNN_XP_REQUIRE_GPU is set, but {reason}", pytrace=False)
    pytest.skip(reason)


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
            (_no_gpu if name == "torch_cuda" else pytest.skip)("torch not installed")
        import array_api_compat.torch as xp

        if name == "torch_cuda":
            if not torch.cuda.is_available():
                _no_gpu("no CUDA device for torch")
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
            _no_gpu("cupy not installed")
        try:
            available, why = cupy.cuda.is_available(), ""
        except Exception as exc:  # a driver or runtime that fails to start: say so
            available, why = False, f" ({type(exc).__name__}: {exc})"
        if not available:
            _no_gpu(f"no CUDA device for cupy{why}")
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
    config.addinivalue_line("markers", "long: long-sequence tests (seconds; deselect with -m 'not long')")
    config.addinivalue_line(
        "markers",
        "wheel: builds the wheel and installs it in a fresh venv from the package index "
        "(deselect with -m 'not wheel')",
    )
