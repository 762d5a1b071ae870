"""The kernels' table (``rnn_xp.kernels``): which kernel runs a call, forward and backward.

The table is the one place that picks a kernel. These tests hold it to the
choice the kernels made before it was gathered there, written out here
independently (``_numpy_rule_before``, the CuPy paths' expected values):
the rows and their order, the NumPy size rules (the compiled loop, oneMKL
or NumPy's BLAS) over a grid of sizes, dtypes, activations and settings,
the CuPy path rule with made-up devices, the kernel each call then reaches
through ``rnn_forward`` and ``rnn_backward``, and the ``RNN_XP_*`` settings
(``kernels._settings``) with their messages.
"""

from __future__ import annotations

import itertools
import os

import array_api_compat.numpy as xp
import numpy as np
import pytest

import rnn_xp
from rnn_xp import kernels
from rnn_xp.kernels import _settings, _threads, mkl, numba_backward, numba_cells, numba_cpu, numpy_backward
from rnn_xp.kernels import cupy_persistent as persistent
from rnn_xp.kernels import numpy as numpy_kernel
from rnn_xp.kernels.portable import backward_portable, scan_portable
from support import made_up_gpu, optional_import, random_rnn, reference_rnn

H100, SMALL_GPU = made_up_gpu("h100"), made_up_gpu("small")


# -- the rows ----------------------------------------------------------------------------


def test_rows_in_order_forward_and_backward_side_by_side():
    assert [r.library for r in kernels.KERNELS] == ["jax", "torch", "numpy", "cupy", "dask"]
    # Dask's tasks run the portable loop of a chunk for the options only it knows
    assert [r.library for r in kernels.KERNELS if r.extended] == ["jax", "torch", "dask"]
    assert kernels.route("array_api_strict") is kernels.OTHERS and kernels.OTHERS.extended
    assert kernels.route("numpy").forward == ":numpy_row_forward"
    # the kernels of any cell: JAX's and torch's own, one task per chunk on Dask, fused steps on CuPy
    cells = {r.library: (r.cells_forward, r.cells_backward) for r in kernels.KERNELS}
    assert cells["dask"] == (":dask_cells_forward", ":dask_cells_backward")
    assert cells["cupy"] == (":cupy_cells_forward", "portable:backward_cell")


def test_numpy_rows_kernels_and_the_portable_loops():
    assert kernels.forward_kernel(xp) is kernels.numpy_row_forward
    assert kernels.backward_kernel(xp) is kernels.numpy_row_backward
    assert kernels.forward_kernel(xp, extended=True) is scan_portable
    assert kernels.backward_kernel(xp, extended=True) is backward_portable
    strict = optional_import("array_api_strict")
    if strict is not None:
        assert kernels.forward_kernel(strict) is scan_portable
        assert kernels.backward_kernel(strict) is backward_portable


@pytest.mark.parametrize("library", ["jax", "torch", "dask", "cupy"])
def test_other_rows_kernels(library):
    module = {"jax": "jax", "torch": "torch", "dask": "dask.array", "cupy": "cupy"}[library]
    if optional_import(module) is None:
        pytest.skip(f"{module} is not installed")
    if library == "jax":
        import jax.numpy as ns

        from rnn_xp.kernels.jax import backward_jax as back
        from rnn_xp.kernels.jax import scan_jax as fwd
    elif library == "torch":
        import array_api_compat.torch as ns

        from rnn_xp.kernels.torch import backward_torch as back
        from rnn_xp.kernels.torch import scan_torch as fwd
    elif library == "dask":
        import array_api_compat.dask.array as ns

        fwd, back = kernels.dask_row_forward, kernels.dask_row_backward
    else:
        import array_api_compat.cupy as ns

        fwd, back = kernels.cupy_row_forward, backward_portable
    assert kernels.forward_kernel(ns) is fwd and kernels.backward_kernel(ns) is back
    extended = library in ("jax", "torch", "dask")  # the rows whose kernels take every option
    assert kernels.forward_kernel(ns, extended=True) is (fwd if extended else scan_portable)
    assert kernels.backward_kernel(ns, extended=True) is (back if extended else backward_portable)


# -- NumPy: the compiled loop, oneMKL or NumPy's BLAS --------------------------------------


def _numpy_rule_before(T, B, H, dtype, nonlinearity, setting, preferred, available, backward=True):
    """The choice as ``numba_cpu._picks`` and ``kernels.numpy.scan_numpy`` made it before the table, written out
    (the backward's rule, and 2 to 8 rows up to H = 512 besides; the forward's takes the compiled loop up
    to H = 1024 and 256 rows)."""
    floats = dtype in ("float32", "float64")
    on_mkl = preferred and B * H * H >= ((1 << 18) if B == 1 else (1 << 20))
    picks = setting != "off" and nonlinearity in ("tanh", "relu") and floats and available
    if picks and setting == "auto":
        if backward:
            picks = ((H < 256 and B <= 32) or (2 <= B <= 8 and H <= 512)) and not on_mkl
        else:
            picks = H <= 1024 and B <= 256 and not on_mkl
    if picks:
        return "numba"
    return "mkl" if on_mkl and min(T, B, H) > 0 and floats else "blas"


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("setting", ["auto", "on", "off"])
@pytest.mark.parametrize("preferred", [False, True])
@pytest.mark.parametrize("available", [False, True])
def test_numpy_choice_is_the_choice_made_before(monkeypatch, setting, preferred, available, backward):
    monkeypatch.setenv("RNN_XP_NUMBA", {"auto": "auto", "on": "1", "off": "0"}[setting])
    monkeypatch.setattr(mkl, "preferred", lambda: preferred)
    monkeypatch.setattr(numba_cpu, "available", lambda: available)
    grid = itertools.product((0, 3), (0, 1, 2, 8, 9, 16, 32, 33, 64, 256, 257), (0, 8, 255, 256, 512, 513, 1024, 1025),
                             ("float16", "float32", "float64"), ("tanh", "relu"))  # fmt: skip
    for T, B, H, dtype, act in grid:
        x, h0 = np.zeros((T, B, 2), dtype), np.zeros((B, H), dtype)
        want = _numpy_rule_before(T, B, H, dtype, act, setting, preferred, available, backward)
        assert kernels.numpy_loop(x, h0, act, backward=backward) == want, (T, B, H, dtype, act)
    # batch axes count as rows: (2, 16) is 32 rows, (3, 11) 33; (16, 16) 256, (3, 86) 258
    cases = (((2, 16), "numba"), ((3, 11), "blas")) if backward else (((16, 16), "numba"), ((3, 86), "blas"))
    for batch, want in cases:
        x, h0 = np.zeros((3, *batch, 2), np.float32), np.zeros((*batch, 64), np.float32)
        if setting == "auto" and available and not preferred:
            assert kernels.numpy_loop(x, h0, "tanh", backward=backward) == want


def test_size_rules_are_the_named_constants(monkeypatch):
    monkeypatch.setenv("RNN_XP_NUMBA", "auto")
    monkeypatch.setattr(numba_cpu, "available", lambda: True)
    monkeypatch.setattr(mkl, "preferred", lambda: True)
    f32 = np.float32
    H, B = kernels.NUMBA_H_BELOW, kernels.NUMBA_MAX_ROWS
    # oneMKL takes B * H * H from MKL_MACS multiply-adds (one sequence: from MKL_ROW_MACS)
    assert kernels.numpy_loop(np.zeros((1, B, 1), f32), np.zeros((B, H - 1), f32), "tanh") == "mkl"
    monkeypatch.setattr(kernels, "MKL_MACS", B * (H - 1) ** 2 + 1)
    assert kernels.numpy_loop(np.zeros((1, B, 1), f32), np.zeros((B, H - 1), f32), "tanh") == "numba"
    assert kernels.numpy_loop(np.zeros((1, 1, 1), f32), np.zeros((1, 512), f32), "tanh") == "mkl"
    monkeypatch.setattr(kernels, "MKL_ROW_MACS", 512 * 512 + 1)
    assert kernels.numpy_loop(np.zeros((1, 1, 1), f32), np.zeros((1, 512), f32), "tanh", backward=True) == "blas"
    assert kernels.numpy_loop(np.zeros((1, 1, 1), f32), np.zeros((1, 512), f32), "tanh") == "numba"
    monkeypatch.setattr(kernels, "MKL_MACS", 1 << 40)
    # the backward: the compiled loop below NUMBA_H_BELOW and up to NUMBA_MAX_ROWS rows
    back = dict(backward=True)
    assert kernels.numpy_loop(np.zeros((1, 1, 1), f32), np.zeros((1, H - 1), f32), "tanh", **back) == "numba"
    assert kernels.numpy_loop(np.zeros((1, 1, 1), f32), np.zeros((1, H), f32), "tanh", **back) == "blas"
    assert kernels.numpy_loop(np.zeros((1, B, 1), f32), np.zeros((B, 8), f32), "tanh", **back) == "numba"
    assert kernels.numpy_loop(np.zeros((1, B + 1, 1), f32), np.zeros((B + 1, 8), f32), "tanh", **back) == "blas"
    # ... and 2 to NUMBA_BACKWARD_FEW_ROWS rows up to NUMBA_BACKWARD_FEW_ROWS_MAX_H units
    R, M = kernels.NUMBA_BACKWARD_FEW_ROWS, kernels.NUMBA_BACKWARD_FEW_ROWS_MAX_H
    assert kernels.numpy_loop(np.zeros((1, R, 1), f32), np.zeros((R, M), f32), "tanh", **back) == "numba"
    assert kernels.numpy_loop(np.zeros((1, R + 1, 1), f32), np.zeros((R + 1, M), f32), "tanh", **back) == "blas"
    assert kernels.numpy_loop(np.zeros((1, R, 1), f32), np.zeros((R, M + 1), f32), "tanh", **back) == "blas"
    # the forward: up to NUMBA_FORWARD_MAX_H units and NUMBA_FORWARD_MAX_ROWS rows
    monkeypatch.setattr(kernels, "MKL_ROW_MACS", 1 << 40)
    H, B = kernels.NUMBA_FORWARD_MAX_H, kernels.NUMBA_FORWARD_MAX_ROWS
    assert kernels.numpy_loop(np.zeros((1, 1, 1), f32), np.zeros((1, H), f32), "tanh") == "numba"
    assert kernels.numpy_loop(np.zeros((1, 1, 1), f32), np.zeros((1, H + 1), f32), "tanh") == "blas"
    assert kernels.numpy_loop(np.zeros((1, B, 1), f32), np.zeros((B, 8), f32), "tanh") == "numba"
    assert kernels.numpy_loop(np.zeros((1, B + 1, 1), f32), np.zeros((B + 1, 8), f32), "tanh") == "blas"


def test_an_unknown_setting_is_an_error_whatever_the_arrays(monkeypatch):
    small = np.zeros((1, 2, 8), np.float16), np.zeros((2, 8), np.float16)
    monkeypatch.setenv("RNN_XP_NUMBA", "yes")
    with pytest.raises(ValueError, match="RNN_XP_NUMBA must be 0, 1 or auto; got 'yes'"):
        kernels.numpy_loop(*small, "tanh")
    with pytest.raises(ValueError, match="RNN_XP_NUMBA must be 0, 1 or auto; got 'yes'"):
        rnn_xp.rnn_forward(np.zeros((2, 1, 3), np.float32), None, np.zeros((2, 3), np.float32),
                           np.zeros((2, 2), np.float32))  # fmt: skip
    # RNN_XP_MKL is read when oneMKL is first loaded: tests/kernels/test_kernel_mkl.py, in new processes


def _spies(monkeypatch):
    """Record which NumPy kernel each call reaches (and whether the NumPy loop was given oneMKL)."""
    seen = []
    for module, name in ((numba_cpu, "scan_numba"), (numba_backward, "backward_numba"),
                         (numpy_kernel, "scan_numpy"), (numpy_backward, "backward_numpy")):  # fmt: skip
        real = getattr(module, name)

        def spy(*a, _real=real, _name=name, **k):
            seen.append(_name + (":mkl" if k.get("mkl") else ""))
            return _real(*a, **k)

        monkeypatch.setattr(module, name, spy)
    return seen


@pytest.mark.parametrize("batch, H", [((4,), 16), ((64,), 16), ((2,), 300), ((16,), 256), ((), 512)])
def test_calls_reach_the_chosen_kernel(monkeypatch, rng, batch, H):
    """rnn_forward and rnn_backward run the kernel ``numpy_loop`` names, and the answer is the reference's."""
    seen = _spies(monkeypatch)
    x, h0, Wx, Wh, b = [a.astype(np.float32) for a in random_rnn(rng, 3, batch, 4, H)]
    loop, back = kernels.numpy_loop(x, h0, "tanh"), kernels.numpy_loop(x, h0, "tanh", backward=True)
    h = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    rnn_xp.rnn_backward(np.ones_like(h), x, h0, Wx, Wh, b, h)
    forward = {"numba": "scan_numba", "mkl": "scan_numpy:mkl", "blas": "scan_numpy"}[loop]
    assert seen == [forward, "backward_numba" if back == "numba" else "backward_numpy"]
    np.testing.assert_allclose(h, reference_rnn(x, h0, Wx, Wh, b)[0], rtol=2e-4, atol=2e-5)


def test_oneMKL_is_chosen_where_it_is_preferred(monkeypatch, rng):
    """On an Intel CPU (or RNN_XP_MKL=1) the table gives the NumPy loop oneMKL from its size on."""
    if mkl.library() is None:
        pytest.skip(f"oneMKL is not loaded here: {mkl.status()}")
    seen = _spies(monkeypatch)
    x, h0, Wx, Wh, b = [a.astype(np.float32) for a in random_rnn(rng, 3, (16,), 4, 256)]
    with mkl.preferring(True):
        assert kernels.numpy_loop(x, h0, "tanh") == "mkl"
        got = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    assert seen == ["scan_numpy:mkl"]
    np.testing.assert_allclose(got, reference_rnn(x, h0, Wx, Wh, b)[0], rtol=2e-4, atol=2e-5)


# -- NumPy, the gated cells: the compiled loop, the in-place loop or the portable loop -------------


def test_numpy_row_runs_the_cells_on_its_own_kernels():
    row = kernels.route("numpy")
    assert (row.cells_forward, row.cells_backward) == (":numpy_row_cells_forward", ":numpy_row_cells_backward")
    assert not row.cells_run_elman  # Elman keeps its own kernels


def _cell_call(cell, B, H, dtype="float32", T=3, P=None):
    from rnn_xp.cells import GRUWeights, LSTMWeights

    P = P or H
    x = np.zeros((T, B, 2), dtype)
    if cell.name == "lstm":
        return x, (np.zeros((B, P), dtype), np.zeros((B, H), dtype)), LSTMWeights(np.zeros((4 * H, 2), dtype),
                                                                                 np.zeros((4 * H, P), dtype))
    return x, (np.zeros((B, H), dtype),), GRUWeights(np.zeros((3 * H, 2), dtype), np.zeros((3 * H, H), dtype))


@pytest.mark.parametrize("setting", ["auto", "on", "off"])
@pytest.mark.parametrize("available", [False, True])
def test_numpy_cells_choice(monkeypatch, setting, available):
    """The portable loop for what the fast loops do not take; else the compiled loop by size (and setting)."""
    from rnn_xp.cells import GRUCell, LSTMCell

    monkeypatch.setenv("RNN_XP_NUMBA", {"auto": "auto", "on": "1", "off": "0"}[setting])
    monkeypatch.setattr(numba_cpu, "available", lambda: available)
    for cell, B, H, dtype in itertools.product((LSTMCell(), GRUCell()), (1, 16, 64), (8, 64, 256, 1024),
                                               ("float16", "float32", "float64")):  # fmt: skip
        x, state0, w = _cell_call(cell, B, H, dtype)
        fast = setting != "off" and available and dtype != "float16"
        for backward, limit in ((False, kernels.CELLS_NUMBA_MACS), (True, kernels.CELLS_NUMBA_BACKWARD_MACS)):
            small = B * H * cell.gates * H <= limit
            if backward:  # and where its reverse loop takes two callers
                small = small or (B >= numba_cells.BACKWARD_TWO_CALLERS_ROWS and _threads.CPUS >= 2
                                  and B * H * cell.gates * H >= numba_cells.BACKWARD_TWO_CALLERS_MACS)  # fmt: skip
            want = "numba" if fast and (setting == "on" or small) else "inplace"
            got = kernels.numpy_cells_loop(cell, x, state0, w, backward=backward)
            assert got == want, (cell.name, B, H, dtype, backward)
        assert kernels.numpy_cells_loop(cell, x, state0, w, mask=np.ones((3, B), bool)) == "portable"
    for other in (LSTMCell(input_forget=True), LSTMCell(clip=1.0), LSTMCell(("hard_sigmoid", "tanh", "tanh")),
                  GRUCell(linear_before_reset=False)):  # not plain: the portable loop
        x, state0, w = _cell_call(other, 2, 8)
        assert kernels.numpy_cells_loop(other, x, state0, w) == "portable", other
    for T, B, H in ((0, 2, 8), (3, 0, 8), (3, 2, 0)):  # a size of zero: the portable loop
        x, state0, w = _cell_call(LSTMCell(), B, H, T=T)
        assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w) == "portable", (T, B, H)


def test_numpy_cells_rule_is_the_named_constant(monkeypatch):
    from rnn_xp.cells import LSTMCell

    monkeypatch.setenv("RNN_XP_NUMBA", "auto")
    monkeypatch.setattr(numba_cpu, "available", lambda: True)
    x, state0, w = _cell_call(LSTMCell(), 4, 16, P=8)  # B * P * 4H = 4 * 8 * 64 = 2048 per step
    monkeypatch.setattr(kernels, "CELLS_NUMBA_MACS", 2048)
    monkeypatch.setattr(kernels, "CELLS_NUMBA_BACKWARD_MACS", 2047)
    assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w) == "numba"
    assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w, backward=True) == "inplace"
    monkeypatch.setattr(kernels, "CELLS_NUMBA_MACS", 2047)
    monkeypatch.setattr(kernels, "CELLS_NUMBA_BACKWARD_MACS", 2048)
    assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w) == "inplace"
    assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w, backward=True) == "numba"
    monkeypatch.setattr(kernels, "CELLS_NUMBA_BACKWARD_MACS", 2047)  # beyond: where two callers take it
    monkeypatch.setattr(_threads, "CPUS", 2)
    monkeypatch.setattr(numba_cells, "BACKWARD_TWO_CALLERS_ROWS", 4)
    monkeypatch.setattr(numba_cells, "BACKWARD_TWO_CALLERS_MACS", 2048)
    assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w, backward=True) == "numba"
    monkeypatch.setattr(numba_cells, "BACKWARD_TWO_CALLERS_MACS", 2049)
    assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w, backward=True) == "inplace"
    monkeypatch.setattr(numba_cells, "BACKWARD_TWO_CALLERS_MACS", 2048)
    monkeypatch.setattr(numba_cells, "BACKWARD_TWO_CALLERS_ROWS", 5)
    assert kernels.numpy_cells_loop(LSTMCell(), x, state0, w, backward=True) == "inplace"
    monkeypatch.setenv("RNN_XP_NUMBA", "yes")
    with pytest.raises(ValueError, match="RNN_XP_NUMBA must be 0, 1 or auto; got 'yes'"):
        kernels.numpy_cells_loop(LSTMCell(), x, state0, w)


@pytest.mark.parametrize("setting", ["auto", "0"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_cells_calls_reach_the_chosen_kernel(monkeypatch, rng, setting, name):
    """lstm_forward/gru_forward and their backward run the kernels ``numpy_cells_loop`` names."""
    from rnn_xp.kernels import numba_cells, numpy_cells

    monkeypatch.setenv("RNN_XP_NUMBA", setting)
    seen = []
    for module, fn in ((numba_cells, "scan_cells_numba"), (numba_cells, "backward_cells_numba"),
                       (numpy_cells, "scan_cells_numpy"), (numpy_cells, "backward_cells_numpy")):  # fmt: skip
        real = getattr(module, fn)
        monkeypatch.setattr(module, fn, lambda *a, _real=real, _fn=fn, **k: (seen.append(_fn), _real(*a, **k))[1])
    G = 4 if name == "lstm" else 3
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    W_ih = (rng.standard_normal((G * 5, 4)) / 3).astype(np.float32)
    W_hh = (rng.standard_normal((G * 5, 5)) / 3).astype(np.float32)
    if name == "lstm":
        out, _, c_seq = rnn_xp.lstm_forward(x, None, W_ih, W_hh, return_c_seq=True)
        rnn_xp.lstm_backward(np.ones_like(out), x, None, W_ih, W_hh, None, None, out, c_seq)
        masked = rnn_xp.lstm_forward(x, None, W_ih, W_hh, mask=np.ones((2, 3), bool))[0]
    else:
        out = rnn_xp.gru_forward(x, None, W_ih, W_hh)
        rnn_xp.gru_backward(np.ones_like(out), x, None, W_ih, W_hh, None, None, out)
        masked = rnn_xp.gru_forward(x, None, W_ih, W_hh, mask=np.ones((2, 3), bool))
    fast = setting == "auto" and numba_cpu.available()  # small: the compiled loop where numba runs
    kind = "numba" if fast else "numpy"
    assert seen == [f"scan_cells_{kind}", f"backward_cells_{kind}"]  # the masked call: the portable loop
    np.testing.assert_allclose(masked, out, rtol=1e-5, atol=1e-6)


def test_cells_backward_rule_of_its_own(monkeypatch, rng):
    """A forward on the compiled loop and a backward on the in-place loop (the backward's own rule): the gradients
    of the compiled backward, to rounding."""
    pytest.importorskip("numba")
    from rnn_xp.kernels import numpy_cells

    if not numba_cpu.available():
        pytest.skip(f"the compiled loops do not run here: {numba_cpu.why_not()}")
    monkeypatch.setenv("RNN_XP_NUMBA", "auto")
    seen = []
    real = numpy_cells.backward_cells_numpy
    monkeypatch.setattr(numpy_cells, "backward_cells_numpy", lambda *a, **k: (seen.append(1), real(*a, **k))[1])
    x = rng.standard_normal((4, 3, 2))
    W_ih, W_hh = rng.standard_normal((20, 2)) / 2, rng.standard_normal((20, 5)) / 2
    out, _, c_seq = rnn_xp.lstm_forward(x, None, W_ih, W_hh, return_c_seq=True)
    d_out = rng.standard_normal(out.shape)
    compiled = rnn_xp.lstm_backward(d_out, x, None, W_ih, W_hh, None, None, out, c_seq)
    assert not seen
    monkeypatch.setattr(kernels, "CELLS_NUMBA_BACKWARD_MACS", 0)
    inplace = rnn_xp.lstm_backward(d_out, x, None, W_ih, W_hh, None, None, out, c_seq)
    assert seen == [1]
    for name in ("dx", "dh0", "dc0", "dW_ih", "dW_hh"):
        np.testing.assert_allclose(getattr(inplace, name), getattr(compiled, name), rtol=1e-12, atol=1e-12)


# -- CuPy: the fused loop or the persistent kernel ------------------------------------------


@pytest.mark.parametrize(
    "B, H, itemsize, props, expected",
    [
        (1, 256, 4, H100, "persistent"),  # the small-batch grid of issue #5
        (4, 512, 4, H100, "persistent"),
        (8, 1024, 4, H100, "persistent"),
        (8, 1024, 8, H100, "persistent"),
        (8, 2048, 4, H100, "persistent"),  # 16 rows of Wh per SM: 128 KiB + h 64 KiB
        (8, 2560, 4, H100, "fused"),  # Wh does not fit on chip
        (8, 2048, 8, H100, "fused"),
        (16, 256, 4, H100, "fused"),  # above PERSISTENT_MAX_BATCH
        (128, 1760, 4, H100, "fused"),  # DeepBench
        (8, 1024, 4, SMALL_GPU, "fused"),  # 4 SMs: 256 rows each do not fit 48 KiB
        (8, 64, 4, SMALL_GPU, "persistent"),
        (8, 1024, 2, H100, "fused"),  # float16: no kernel
        (0, 1024, 4, H100, "fused"),
        (4, 256, 4, H100._replace(cooperative_launch=False), "fused"),
    ],
)  # fmt: skip
def test_cupy_path_auto(B, H, itemsize, props, expected):
    assert kernels.cupy_path("auto", B, H, itemsize, props) == (expected, None)


def test_cupy_batch_limit_is_the_named_constant():
    limit = kernels.PERSISTENT_MAX_BATCH
    assert kernels.cupy_path("auto", limit, 64, 4, H100)[0] == "persistent"
    assert kernels.cupy_path("auto", limit + 1, 64, 4, H100)[0] == "fused"


def test_cupy_path_forced():
    assert kernels.cupy_path("fused", 1, 64, 4, H100) == ("fused", None)
    # forced: any eligible size, even a large batch
    assert kernels.cupy_path("persistent", 64, 64, 4, H100) == ("persistent", None)
    path, note = kernels.cupy_path("persistent", 8, 4096, 4, H100)
    assert path == "fused" and "RNN_XP_CUPY_PATH=persistent" in note and "H=4096" in note


def test_cupy_row_runs_only_float32_and_float64_on_the_cuda_kernels(monkeypatch, rng):
    """Other dtypes (float16) run the portable loop: the CUDA kernels' source is written for these two.

    NumPy arrays stand in for CuPy's; the CUDA path is replaced by a recorder.
    """
    from rnn_xp.kernels import cupy as cupy_kernel
    from rnn_xp.kernels import cupy_fused

    with pytest.raises(ValueError, match="dtype must be one of"):
        cupy_fused.kernel_source("float16", "tanh")  # what float16 met on the fused path
    ran = []
    monkeypatch.setattr(cupy_kernel, "scan_cupy", lambda *a, path, **k: (ran.append(path), (None, None))[1])
    monkeypatch.setenv("RNN_XP_CUPY_PATH", "fused")  # no device to ask for the persistent kernel's plan
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (3,), 2, 5)
    opts = dict(nonlinearity="tanh", lengths=None, reverse=False, leak=1.0, return_sequences=True)
    half = [a.astype(np.float16) for a in (x, h0, Wx, Wh, b)]
    got_seq, got_last = kernels.cupy_row_forward(xp, *half, **opts)
    assert ran == [] and got_seq.dtype == np.float16
    want_seq, want_last = scan_portable(xp, *half, **opts)
    np.testing.assert_array_equal(got_seq, want_seq)
    np.testing.assert_array_equal(got_last, want_last)
    for dtype in ("float32", "float64"):
        kernels.cupy_row_forward(xp, *[a.astype(dtype) for a in (x, h0, Wx, Wh, b)], **opts)
    assert ran == ["fused", "fused"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cupy_cells_row_runs_the_fused_loop_where_it_can(monkeypatch, rng, cell):
    """float16, empty runs and steps the tracer cannot read run the portable loop; the rest the fused loop.

    NumPy arrays stand in for CuPy's; the fused loop is replaced by a recorder.
    """
    from rnn_xp.cells import GRUCell, GRUWeights, LSTMCell, LSTMWeights
    from rnn_xp.kernels import _pointwise, cupy_cells
    from rnn_xp.kernels.portable import scan_cell

    ran = []
    monkeypatch.setattr(cupy_cells, "scan_cells", lambda *a, **k: ran.append(a[0]) or (None, None))
    G, H = (4, 5) if cell == "lstm" else (3, 5)
    c = LSTMCell() if cell == "lstm" else GRUCell()
    Weights = LSTMWeights if cell == "lstm" else GRUWeights
    w = Weights(rng.standard_normal((G * H, 2)), rng.standard_normal((G * H, H)), rng.standard_normal(G * H))
    as_ = lambda dtype: Weights(*(None if a is None else a.astype(dtype) for a in w))  # noqa: E731
    x, state0 = rng.standard_normal((4, 3, 2)), tuple(rng.standard_normal((3, H)) for _ in c.state_names)
    opts = dict(lengths=None, reverse=False, return_sequences=True)
    half = (x.astype(np.float16), tuple(s.astype(np.float16) for s in state0), as_(np.float16))
    got = kernels.cupy_cells_forward(xp, c, *half, **opts)
    want = scan_cell(xp, c, *half, **opts)
    assert ran == [] and got[0][0].dtype == np.float16
    np.testing.assert_array_equal(got[0][0], want[0][0])
    kernels.cupy_cells_forward(xp, c, x[:0], state0, w, **opts)  # no step: nothing to launch
    assert ran == []
    monkeypatch.setattr(cupy_cells, "plan", lambda *a: (_ for _ in ()).throw(_pointwise.TraceError("no")))
    got = kernels.cupy_cells_forward(xp, c, x, state0, w, **opts)  # a step the tracer cannot read
    np.testing.assert_array_equal(got[0][0], scan_cell(xp, c, x, state0, w, **opts)[0][0])
    assert ran == []
    monkeypatch.undo()
    monkeypatch.setattr(cupy_cells, "scan_cells", lambda *a, **k: ran.append(a[0]) or (None, None))
    for dtype in ("float32", "float64"):
        kernels.cupy_cells_forward(xp, c, x.astype(dtype), state0, as_(dtype), **opts)
    assert ran == [c, c]


# -- the settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [(None, "auto"), ("auto", "auto"), ("fused", "fused"), ("persistent", "persistent"),
     (" Persistent ", "persistent"), ("FUSED", "fused"), ("", "auto")],
)  # fmt: skip
def test_cupy_path_setting(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(_settings.CUPY_PATH, raising=False)
    else:
        monkeypatch.setenv(_settings.CUPY_PATH, value)
    assert _settings.cupy_path() == expected
    assert persistent.path_setting() == expected  # the name the benchmark knows


def test_cupy_path_setting_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv(_settings.CUPY_PATH, "fast")
    with pytest.raises(ValueError, match="RNN_XP_CUPY_PATH.*auto, fused, persistent.*'fast'"):
        _settings.cupy_path()


def test_forced_cupy_path_overrides_the_setting_and_restores(monkeypatch):
    monkeypatch.setenv(_settings.CUPY_PATH, "fused")
    with persistent.forced_path("persistent"):
        assert _settings.cupy_path() == "persistent"
        with _settings.forced_cupy_path("auto"):
            assert _settings.cupy_path() == "auto"
        assert _settings.cupy_path() == "persistent"
    assert _settings.cupy_path() == "fused"
    with pytest.raises(RuntimeError), _settings.forced_cupy_path("persistent"):
        raise RuntimeError
    assert _settings.cupy_path() == "fused"
    with pytest.raises(ValueError, match="path"), _settings.forced_cupy_path("cudnn"):
        pass
    assert os.environ[_settings.CUPY_PATH] == "fused"  # never written


@pytest.mark.parametrize("name", ["NUMBA", "MKL"])
@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), (" AUTO ", "auto"), ("1", "on"),
                                             ("0", "off"), ("on", None), ("yes", None)])  # fmt: skip
def test_switches(monkeypatch, name, value, expected):
    variable = getattr(_settings, name)
    read = getattr(_settings, name.lower())
    if value is None:
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, value)
    if expected is None:
        with pytest.raises(ValueError, match=f"{variable} must be 0, 1 or auto; got {value!r}"):
            read()
    else:
        assert read() == expected


@pytest.mark.parametrize("value, expected", [(None, "rnn_xp"), ("", "rnn_xp"), ("Framework", "framework"),
                                             ("rnn_xp", "rnn_xp"), ("torch", None)])  # fmt: skip
def test_autodiff_setting(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(_settings.AUTODIFF, raising=False)
    else:
        monkeypatch.setenv(_settings.AUTODIFF, value)
    if expected is None:
        with pytest.raises(ValueError, match=r"RNN_XP_AUTODIFF must be one of \['rnn_xp', 'framework'\] "
                                             r"\(default rnn_xp\); got 'torch'"):  # fmt: skip
            _settings.autodiff()
    else:
        assert _settings.autodiff() == expected
