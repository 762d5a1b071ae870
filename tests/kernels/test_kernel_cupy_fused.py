"""The fused CuPy path (``rnn_xp.kernels.cupy_fused``): its source, and its results on a GPU.

Its arithmetic is checked on the CPU by running the CUDA source itself
(``tests/kernels/test_kernel_cupy_emulated.py``) and its compilation by NVRTC
(``tests/kernels/test_kernel_cupy_compile.py``). Here: the generated source, and with
a CUDA device the path against the float64 reference on every option,
forced with ``RNN_XP_CUPY_PATH=fused`` semantics (``forced_path``). Without
a device the GPU tests skip with "no CUDA device".
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from support import make_backend
from support import assert_close, random_rnn, reference_rnn

import rnn_xp
from rnn_xp.kernels import cupy_fused as fused
from rnn_xp.kernels import cupy_persistent as persistent


def test_source_variants():
    a = fused.kernel_source("float32", "tanh")
    assert "typedef float real;" in a and "tanhf(z)" in a
    assert "typedef double real;" in fused.kernel_source("float64", "relu")
    assert not re.search(r"^\s*#\s*include", a, re.M)  # no header: NVRTC's built-ins only
    assert not re.search(r"\{(real|activate|name|step|threads)\}", a)  # every field filled
    assert f"{fused.kernel_name('float32', 'tanh')}(" in a
    with pytest.raises(ValueError, match="dtype"):
        fused.kernel_source("float16", "tanh")
    with pytest.raises(ValueError, match="nonlinearity"):
        fused.kernel_source("float32", "sigmoid")


def test_one_step_formula_for_both_kernels():
    """The fused and the persistent kernel call the same ``rnn_xp_state``, once each."""
    for dtype in ("float32", "float64"):
        for act in ("tanh", "relu"):
            for module in (fused, persistent):
                source = module.kernel_source(dtype, act)
                assert source.count(fused.STEP_SOURCE) == 1
                assert len(re.findall(r"\brnn_xp_state\(", source)) >= 2  # defined, then called
                assert "leak *" not in source.replace(fused.STEP_SOURCE, "")  # no second formula


# --- on a CUDA device ----------------------------------------------------------------------


@pytest.fixture
def gpu():
    return make_backend("cupy")  # skips with the reason where there is no CUDA device


@pytest.mark.parametrize(
    "opts",
    [dict(), dict(nonlinearity="relu"), dict(reverse=True, leak=0.3), dict(lengths=True),
     dict(lengths=True, reverse=True, leak=0.6, nonlinearity="relu")],
    ids=["plain", "relu", "reverse-leak", "lengths", "lengths-reverse-leak-relu"],
)  # fmt: skip
@pytest.mark.parametrize("B, H", [(1, 5), (3, 300), (33, 70)])
def test_gpu_fused_matches_reference(gpu, dtype, rng, opts, B, H):
    T, D = 37, 4
    x, h0, Wx, Wh, b = random_rnn(rng, T, (B,), D, H)
    kw = dict(opts)
    lengths = np.resize(np.array([T, 0, T // 2, 1]), B) if kw.pop("lengths", False) else None
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, **kw)
    arrays = [gpu.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    if lengths is not None:
        kw["lengths"] = gpu.asarray(lengths)
    before = persistent.launches()
    with persistent.forced_path("fused"):
        got = rnn_xp.rnn_forward(*arrays, **kw)
        fin = rnn_xp.rnn_forward(*arrays, return_sequences=False, **kw)
    assert persistent.launches() == before
    assert_close(got, expected, gpu, dtype)
    assert_close(fin, last, gpu, dtype)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_gpu_fused_leak_1_keeps_an_infinite_state_out_of_nan(gpu, act):
    """leak = 1 with an infinite unit of h0: f(z) at every unit, never 0 * inf (issue 14, #1)."""
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(3), 4, (2,), 3, 6)
    h0[0, 1] = np.inf
    with np.errstate(all="ignore"):
        expected = np.tanh if act == "tanh" else (lambda z: np.maximum(z, 0))
        z0 = x[0] @ Wx.T + h0 @ Wh.T + b
    arrays = [gpu.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)]
    with persistent.forced_path("fused"):
        out = rnn_xp.rnn_forward(*arrays, nonlinearity=act)
    np.testing.assert_array_equal(np.isnan(out.get()[0]), np.isnan(expected(z0)))


# --- any cell on a CUDA device: the kernels generated from the cell (kernels.cupy_cells) -----

GATED_GPU = {
    "lstm": ("lstm", {}, {}),
    "lstm-proj-peepholes": ("lstm", {"proj": 3, "peepholes": True}, {"clip": 2.0}),
    "gru": ("gru", {}, {}),
    "gru-reset-before": ("gru", {}, {"linear_before_reset": False, "activations": ("hard_sigmoid", "tanh")}),
}


@pytest.mark.parametrize("run", [{}, {"lengths": True, "reverse": True, "return_sequences": False}, {"mask": True}],
                         ids=["plain", "lengths-reverse-last", "mask"])  # fmt: skip
@pytest.mark.parametrize("name", list(GATED_GPU))
def test_gpu_cells_match_the_portable_loop(gpu, dtype, rng, name, run):
    import array_api_compat.numpy as npx

    from cell_cases import arrays, portable, public, random_mask
    from rnn_xp.kernels import cupy_cells

    cell, shape, options = GATED_GPU[name]
    T, B = 23, 5
    a = arrays(rng, cell, T=T, batch=(B,), D=4, H=40, **shape)
    kw = dict(options, reverse=run.get("reverse", False), return_sequences=run.get("return_sequences", True))
    if run.get("lengths"):
        kw["lengths"] = np.array([T, 0, 7, 1, T])
    if run.get("mask"):
        kw["mask"] = random_mask(rng, (B,), T)
    want = portable(npx, cell, a, **kw)
    before = len(cupy_cells._MODULES)
    got = public(cell, {k: gpu.asarray(v, dtype) for k, v in a.items()},
                 **{k: (gpu.asarray(v) if k in ("lengths", "mask") else v) for k, v in kw.items()})  # fmt: skip
    assert cupy_cells._MODULES and len(cupy_cells._MODULES) >= before  # the generated kernels ran
    for g, w in zip(got, want):
        assert_close(g, w, gpu, dtype)
