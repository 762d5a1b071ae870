"""Every kernel of this machine against the portable loop, forward and backward, every cell (hypothesis).

The portable loops (``rnn_xp.kernels.portable``) define rnn_xp's answer. Each
entry of ``KERNELS`` is a faster path that must give that answer to rounding
on every problem hypothesis can draw, for each cell it runs (``CELLS``: the
Elman cell, and the LSTM and GRU cells): shapes with zeros in them (T, batch,
D and H), float32 and float64, every option (``lengths`` with 0 and T,
``reverse``, ``return_sequences``, ``batch_first``; Elman's ``leak``, relu and
tanh; an LSTM's projection and peepholes, the biases there or not), the
initial state given or zeros, and values with NaN and Inf in the inputs, in
their padding past ``lengths``, in the initial state and in the upstream
gradients. NaN positions are part of the answer: a NaN where the portable
loop has a number (or the other way round) is a failure, as is an Inf of the
other sign.

Adding a kernel is one entry in ``KERNELS``: its name, the library its arrays
come from, its forward and backward functions for the Elman cell (the
signatures of ``scan_portable`` and ``backward_portable``) and for the gated
cells (those of ``scan_cell`` and ``backward_cell``), ``None`` for what it
does not implement, and, optionally, a context that selects it and a function
that says why it cannot run here. The JAX, Dask and torch entries take
whatever kernel the dispatch (``rnn_xp.kernels``) picks for their library, so
a new kernel there is covered without a new entry.

Profiles: the default (CI) draws ``DEFAULT_EXAMPLES`` problems per kernel and
direction (a ``share`` of them for the slow JAX and Dask entries), derandomized
so that a run is reproducible; ``RNN_XP_DIFFERENTIAL=large``
draws ``LARGE_EXAMPLES`` each, from a random seed (``RNN_XP_DIFFERENTIAL=<n>``:
``n`` each).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import array_api_compat.numpy as npx  # noqa: E402

from rnn_xp._backends import to_host  # noqa: E402
from rnn_xp.cells import GRUCell, GRUWeights, LSTMCell, LSTMWeights  # noqa: E402
from rnn_xp.kernels import _settings as kernel_settings  # noqa: E402
from rnn_xp.kernels import backward_kernel, forward_kernel, numba_cells, numpy_cells  # noqa: E402
from rnn_xp.kernels import backward as table_backward  # noqa: E402
from rnn_xp.kernels import scan as table_scan  # noqa: E402
from rnn_xp.kernels import mkl as mkl_module  # noqa: E402
from rnn_xp.kernels import numba_backward, numba_cpu  # noqa: E402
from rnn_xp.kernels import numpy as numpy_kernel  # noqa: E402
from rnn_xp.kernels.numpy_backward import backward_numpy  # noqa: E402
from rnn_xp.kernels.portable import backward_cell, backward_portable, scan_cell, scan_portable  # noqa: E402
from support import optional_import  # noqa: E402

DEFAULT_EXAMPLES = 30
LARGE_EXAMPLES = 400
_PROFILE = os.environ.get("RNN_XP_DIFFERENTIAL", "").strip()
LARGE = _PROFILE == "large" or _PROFILE.isdigit()
if _PROFILE.isdigit():  # RNN_XP_DIFFERENTIAL=<n>: n examples each, from a random seed
    LARGE_EXAMPLES = int(_PROFILE)


def _settings(kernel, cell="elman"):
    share = kernel.share if cell == "elman" else kernel.cells_share
    return settings(
        max_examples=LARGE_EXAMPLES if LARGE else max(5, round(DEFAULT_EXAMPLES * share)),
        derandomize=not LARGE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

# Agreement "to rounding": relative to the size of the portable answer.
TOL = {"float32": 2e-5, "float64": 1e-11}


# -- the libraries -------------------------------------------------------------


def _namespace(library):
    if library == "numpy":
        return npx
    if library == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 and int64 arrays, as in conftest
        import jax.numpy as jnp

        return jnp
    if library == "dask":
        import array_api_compat.dask.array as dxp

        return dxp
    if library == "torch":
        import array_api_compat.torch as txp

        return txp
    raise ValueError(library)


def _put(library, a, batch_axis=None):
    """NumPy array ``a`` as an array of ``library``.

    Dask arrays are split in two chunks along ``batch_axis`` (when it has two
    entries or more) and kept whole along every other axis, as rnn_xp's Dask
    kernel wants them.
    """
    if a is None:
        return None
    if library == "numpy":
        return a
    if library == "dask":
        import dask.array as da

        chunks = [-1] * a.ndim
        if batch_axis is not None and a.shape[batch_axis] > 1:
            chunks[batch_axis] = (a.shape[batch_axis] + 1) // 2
        return da.from_array(a, chunks=tuple(chunks))
    return _namespace(library).asarray(a)


def _library_missing(library):
    module = {"numpy": "numpy", "jax": "jax", "dask": "dask.array", "torch": "torch"}[library]
    return None if optional_import(module) is not None else f"{module} is not installed"


# -- the kernels -----------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """One path that must give the portable loop's answer."""

    name: str
    library: str  # where its arrays come from: "numpy", "jax", "dask", "torch", ...
    forward: Callable | None  # the Elman cell: scan_portable's signature, or None
    backward: Callable | None  # backward_portable's signature, or None
    selected: Callable = contextlib.nullcontext  # a context in which the kernel is the one that runs
    missing: Callable = lambda: None  # why it cannot run here, or None
    share: float = 1.0  # its share of DEFAULT_EXAMPLES in the default profile (slow ones draw fewer)
    cells_forward: Callable | None = None  # the gated cells: scan_cell's signature, or None
    cells_backward: Callable | None = None  # backward_cell's signature, or None
    cells_share: float = 0.5  # the share for each gated cell

    def __str__(self):
        return self.name

    def function(self, cell, direction):
        """The kernel's function for ``cell`` (a name of ``CELLS``) and ``direction``, or None."""
        if cell == "elman":
            return self.forward if direction == "forward" else self.backward
        return self.cells_forward if direction == "forward" else self.cells_backward


@contextlib.contextmanager
def _openblas_only():
    """The NumPy in-place loop on NumPy's own BLAS (oneMKL off)."""
    with mkl_module.suspended():
        yield


@contextlib.contextmanager
def _mkl_loaded():
    """oneMKL loaded: the NumPy loop is given it for every size (the table gives it from a size on)."""
    assert mkl_module.library() is not None, mkl_module.status()  # installed and wanted: loaded, or a failure
    yield


def _mkl_missing():
    if not mkl_module.installed():
        return "the mkl package is not installed"
    if kernel_settings.mkl() == "off":
        return "RNN_XP_MKL=0"
    return None  # installed and wanted: a oneMKL that failed to load fails here, it does not skip


def _numba_missing():
    return None if numba_cpu.available() else f"numba cannot run here: {numba_cpu.why_not()}"


def _dispatched(library, direction):
    """The kernel the dispatch picks for ``library`` (looked up when called, so new kernels count)."""

    def kernel(xp, *args, **kwargs):
        pick = forward_kernel if direction == "forward" else backward_kernel
        return pick(xp)(xp, *args, **kwargs)

    kernel.__name__ = f"{library} {direction} (dispatch)"
    return kernel


def _dispatched_cells(library, direction):
    """The table's kernel of any cell for ``library``: ``kernels.scan`` / ``kernels.backward``, which read the row."""
    return table_scan if direction == "forward" else table_backward


KERNELS = [
    Kernel("numpy in-place", "numpy", numpy_kernel.scan_numpy, backward_numpy, selected=_openblas_only,
           cells_forward=numpy_cells.scan_cells_numpy, cells_backward=numpy_cells.backward_cells_numpy),
    Kernel("oneMKL", "numpy", functools.partial(numpy_kernel.scan_numpy, mkl=True), None, selected=_mkl_loaded,
           missing=_mkl_missing),
    # JAX compiles every new shape, Dask builds a graph per call: fewer examples in CI
    # (the gated cells' JAX scan, one compilation per shape, is held against JAX's autodiff of
    # the portable loop in tests/frameworks/test_frameworks_jax.py)
    Kernel("jax", "jax", _dispatched("jax", "forward"), _dispatched("jax", "backward"),
           missing=lambda: _library_missing("jax"), share=0.25),
    Kernel("dask", "dask", _dispatched("dask", "forward"), _dispatched("dask", "backward"),
           missing=lambda: _library_missing("dask"), share=0.6,
           cells_forward=_dispatched_cells("dask", "forward"), cells_backward=_dispatched_cells("dask", "backward"),
           cells_share=0.2),
    Kernel("torch", "torch", _dispatched("torch", "forward"), _dispatched("torch", "backward"),
           missing=lambda: _library_missing("torch"),
           cells_forward=_dispatched_cells("torch", "forward"), cells_backward=_dispatched_cells("torch", "backward"),
           cells_share=0.2),
    # the compiled NumPy loops: their own product on one thread, and BLAS's with two
    # threads over the columns (a barrier every step; the gated cells': over the rows)
    Kernel("numba (own product)", "numpy",
           functools.partial(numba_cpu.scan_numba, product="own", threads=1),
           functools.partial(numba_backward.backward_numba, product="own", threads=1),
           missing=_numba_missing, share=0.5,
           cells_forward=functools.partial(numba_cells.scan_cells_numba, product="own", threads=1),
           cells_backward=functools.partial(numba_cells.backward_cells_numba, product="own", threads=1)),
    Kernel("numba (BLAS, two threads)", "numpy",
           functools.partial(numba_cpu.scan_numba, product="blas", split="cols", threads=2),
           functools.partial(numba_backward.backward_numba, product="blas", split="cols", threads=2),
           missing=_numba_missing, share=0.5,
           cells_forward=functools.partial(numba_cells.scan_cells_numba, product="blas", threads=2),
           cells_backward=functools.partial(numba_cells.backward_cells_numba, product="blas", threads=2)),
]  # fmt: skip

CELLS = ("elman", "lstm", "gru")

FORWARD = [pytest.param(k, c, id=f"{k}-{c}") for c in CELLS for k in KERNELS if k.function(c, "forward")]
BACKWARD = [pytest.param(k, c, id=f"{k}-{c}") for c in CELLS for k in KERNELS if k.function(c, "backward")]


# -- the problems ------------------------------------------------------------------

SPECIALS = (np.nan, np.inf, -np.inf)


@st.composite
def problems(draw):
    """A random problem: float64 NumPy arrays, options, and where NaN and Inf go."""
    batch = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    T = draw(st.integers(0, 6))
    D = draw(st.integers(0, 4))
    H = draw(st.integers(0, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.5, 1.0, 3.0]))  # 3.0: saturating tanh, large relu states
    p = {
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "x": rng.standard_normal((T, *batch, D)),
        "h0": rng.standard_normal((*batch, H)) * 0.5 if draw(st.booleans()) else np.zeros((*batch, H)),
        "Wx": rng.standard_normal((H, D)) * scale / math.sqrt(max(D, 1)),
        "Wh": rng.standard_normal((H, H)) * scale / math.sqrt(max(H, 1)),
        "b": rng.standard_normal(H) * 0.5 if draw(st.booleans()) else None,
        "dh": rng.standard_normal((T, *batch, H)) if draw(st.booleans()) else None,
        "dh_n": rng.standard_normal((*batch, H)) if draw(st.booleans()) else None,
        "lengths": None,
        "nonlinearity": draw(st.sampled_from(["tanh", "relu"])),
        "reverse": draw(st.booleans()),
        "leak": draw(st.sampled_from([1.0, 1.0, 0.5, 0.125])),
        "return_sequences": draw(st.booleans()),
        "batch_first": draw(st.booleans()) and len(batch) > 0,
    }
    if draw(st.booleans()):  # lengths with 0 and T among them
        p["lengths"] = rng.choice(np.array([0, T, *range(T + 1)]), size=batch).astype(np.int64)
    # NaN and Inf: anywhere in x, h0 and the upstream gradients, and in x's padding
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["x", "x padding", "h0", "dh", "dh_n"]))
        value = draw(st.sampled_from(SPECIALS))
        target = p["x" if where == "x padding" else where]
        if target is None or target.size == 0:
            continue
        if where == "x padding":
            if p["lengths"] is None:
                continue
            pad = np.arange(T).reshape((T,) + (1,) * len(batch)) >= p["lengths"]  # (T, *batch)
            cells = np.argwhere(pad)
            if len(cells) == 0:
                continue
            target[tuple(cells[rng.integers(len(cells))])] = value  # a whole feature row of that step
        else:
            target[np.unravel_index(rng.integers(target.size), target.shape)] = value
    return p


@st.composite
def cell_problems(draw, cell):
    """A random problem of a gated cell (``"lstm"``, ``"gru"``): float64 NumPy arrays, options, NaN and Inf."""
    batch = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    T = draw(st.integers(0, 6))
    D = draw(st.integers(0, 4))
    H = draw(st.integers(0, 5))
    G = 4 if cell == "lstm" else 3
    P = draw(st.sampled_from([0, 0, 1, 3])) if cell == "lstm" and H > 0 else 0  # an LSTM's projection
    S = P or H  # h's size
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.5, 1.0, 3.0]))  # 3.0: saturating gates
    maybe = lambda a: a if draw(st.booleans()) else None  # noqa: E731
    given = lambda shape: rng.standard_normal(shape) * 0.5 if draw(st.booleans()) else np.zeros(shape)  # noqa: E731
    w = {"W_ih": rng.standard_normal((G * H, D)) * scale / math.sqrt(max(D, 1)),
         "W_hh": rng.standard_normal((G * H, S)) * scale / math.sqrt(max(S, 1)),
         "b_ih": maybe(rng.standard_normal(G * H) * 0.5), "b_hh": maybe(rng.standard_normal(G * H) * 0.5)}  # fmt: skip
    states = {"h0": given((*batch, S))}
    if cell == "lstm":
        w["W_hr"] = rng.standard_normal((P, H)) * scale / math.sqrt(max(H, 1)) if P else None
        w["peepholes"] = maybe(rng.standard_normal(3 * H) * 0.5)
        states["c0"] = given((*batch, H))
    p = {
        "cell": cell,
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "x": rng.standard_normal((T, *batch, D)),
        "w": w,
        "states": states,
        "lengths": None,
        "reverse": draw(st.booleans()),
        "return_sequences": draw(st.booleans()),
        "batch_first": draw(st.booleans()) and len(batch) > 0,
        # the upstream gradients: each output's (h's, and an LSTM's c's) or none, each final state's or none
        "d_out": {k: maybe(rng.standard_normal((T, *batch, v.shape[-1]))) for k, v in states.items()},
        "d_finals": {k: maybe(rng.standard_normal(v.shape)) for k, v in states.items()},
    }
    if draw(st.booleans()):  # lengths with 0 and T among them
        p["lengths"] = rng.choice(np.array([0, T, *range(T + 1)]), size=batch).astype(np.int64)
    for _ in range(draw(st.integers(0, 3))):  # NaN and Inf: in x, its padding, the states, the gradients
        where = draw(st.sampled_from(["x", "x padding", "h0", "c0", "d_out", "d_finals"]))
        value = draw(st.sampled_from(SPECIALS))
        if where in ("d_out", "d_finals"):
            target = p[where][draw(st.sampled_from(sorted(p[where])))]
        else:
            target = p["x"] if where.startswith("x") else states.get(where)
        if target is None or target.size == 0:
            continue
        if where == "x padding":
            if p["lengths"] is None:
                continue
            pad = np.arange(T).reshape((T,) + (1,) * len(batch)) >= p["lengths"]  # (T, *batch)
            cells = np.argwhere(pad)
            if len(cells) == 0:
                continue
            target[tuple(cells[rng.integers(len(cells))])] = value
        else:
            target[np.unravel_index(rng.integers(target.size), target.shape)] = value
    return p


def _cell_arrays(p, library):
    """``(xp, cell, x, state0, w, lengths, d_out, d_finals)`` of a gated cell's problem, as the table hands them over.

    ``d_out`` is the tuple of the outputs' gradients (``backward_cell``'s),
    ``seqs`` (when in ``p``) the forward's outputs, laid out as ``x``.
    """
    dtype = p["dtype"]
    xp = _namespace(library)
    batched = p["x"].ndim > 2

    def sequence(a):
        if a is None:
            return None
        a = a.astype(dtype)
        if p["batch_first"]:
            a = np.ascontiguousarray(np.moveaxis(a, 0, -2))  # (*batch, T, F)
        arr = _put(library, a, (0 if p["batch_first"] else 1) if batched else None)
        if p["batch_first"]:
            nd = arr.ndim
            arr = xp.permute_dims(arr, (nd - 2, *range(nd - 2), nd - 1))  # (T, *batch, F), a view
        return arr

    def state(a):
        return None if a is None else _put(library, a.astype(dtype), 0 if batched else None)

    if p["cell"] == "lstm":
        cell, Weights, names = LSTMCell(), LSTMWeights, ("h0", "c0")
    else:
        cell, Weights, names = GRUCell(), GRUWeights, ("h0",)
    w = Weights(**{k: None if v is None else _put(library, v.astype(dtype)) for k, v in p["w"].items()})
    lengths = None if p["lengths"] is None else _put(library, p["lengths"], 0 if batched else None)
    out = dict(xp=xp, cell=cell, x=sequence(p["x"]), state0=tuple(state(p["states"][k]) for k in names), w=w,
               lengths=lengths, d_out=tuple(sequence(p["d_out"][k]) for k in names),
               d_finals=tuple(state(p["d_finals"][k]) for k in names))  # fmt: skip
    if "seqs" in p:
        out["seqs"] = tuple(sequence(q) for q in p["seqs"])
    return out


def _arrays(p, library):
    """The problem's arrays in ``library`` and ``p["dtype"]``, laid out as ``rnn_forward`` hands them over.

    With ``batch_first`` the time-major arrays are views of ``(*batch, T, ...)``
    arrays (strided, as the public functions make them).
    """
    dtype = p["dtype"]
    xp = _namespace(library)
    batched = p["x"].ndim > 2
    out = {}
    for name in ("x", "h0", "Wx", "Wh", "b", "dh", "dh_n", "h_seq", "lengths"):
        a = p.get(name)
        if a is None:
            out[name] = None
            continue
        if name != "lengths":
            a = a.astype(dtype)
        sequence = name in ("x", "dh", "h_seq")
        if sequence and p["batch_first"]:
            a = np.ascontiguousarray(np.moveaxis(a, 0, -2))  # (*batch, T, F)
        if name in ("Wx", "Wh", "b") or not batched:
            axis = None
        else:
            axis = 1 if sequence and not p["batch_first"] else 0
        arr = _put(library, a, axis)
        if sequence and p["batch_first"]:
            nd = arr.ndim
            arr = xp.permute_dims(arr, (nd - 2, *range(nd - 2), nd - 1))  # (T, *batch, F), a view
        out[name] = arr
    return xp, out


def _options(p, *names):
    return {k: p[k] for k in names}


def _assert_agrees(name, got, want, dtype):
    """``got`` equals ``want`` to rounding, with NaN and Inf at the same places."""
    got = None if got is None else np.asarray(to_host(got), dtype=np.float64)
    if want is None or got is None:
        assert got is None and want is None, f"{name}: {got!r} against {want!r}"
        return
    assert got.shape == want.shape, f"{name}: shape {got.shape}, the portable loop {want.shape}"
    finite = want[np.isfinite(want)]
    scale = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale, equal_nan=True,
                               err_msg=f"{name} differs from the portable loop")  # fmt: skip


def _check_available(kernel):
    why = kernel.missing()
    if why is not None:
        pytest.skip(f"{kernel.name}: {why}")


# -- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize("kernel, cell", FORWARD)
def test_forward_gives_the_portable_answer(kernel, cell):
    _check_available(kernel)
    if cell != "elman":
        return _check_cell_forward(kernel, cell)

    @_settings(kernel)
    @given(p=problems())
    def check(p):
        opts = _options(p, "nonlinearity", "reverse", "leak", "return_sequences")
        _, ref = _arrays(p, "numpy")
        want_seq, want_last = scan_portable(npx, *(ref[k] for k in ("x", "h0", "Wx", "Wh", "b")),
                                            lengths=ref["lengths"], **opts)  # fmt: skip
        xp, a = _arrays(p, kernel.library)
        with np.errstate(all="ignore"), kernel.selected():
            got_seq, got_last = kernel.forward(xp, *(a[k] for k in ("x", "h0", "Wx", "Wh", "b")),
                                               lengths=a["lengths"], **opts)  # fmt: skip
        _assert_agrees(f"{kernel.name}: h_seq", got_seq, None if want_seq is None else np.asarray(want_seq, float),
                       p["dtype"])  # fmt: skip
        _assert_agrees(f"{kernel.name}: h_last", got_last, np.asarray(want_last, float), p["dtype"])

    with np.errstate(all="ignore"):
        check()


@pytest.mark.parametrize("kernel, cell", BACKWARD)
def test_backward_gives_the_portable_answer(kernel, cell):
    _check_available(kernel)
    if cell != "elman":
        return _check_cell_backward(kernel, cell)

    @_settings(kernel)
    @given(p=problems())
    def check(p):
        opts = _options(p, "nonlinearity", "reverse", "leak")
        _, ref = _arrays(p, "numpy")
        # the forward's states, from the portable loop, for every kernel alike
        h_seq, _ = scan_portable(npx, *(ref[k] for k in ("x", "h0", "Wx", "Wh", "b")), lengths=ref["lengths"],
                                 return_sequences=True, **opts)  # fmt: skip
        p = dict(p, h_seq=np.asarray(h_seq, dtype=np.float64))  # exact: h_seq is float32 or float64
        want = backward_portable(npx, ref["dh"], ref["x"], ref["h0"], ref["Wx"], ref["Wh"], h_seq, ref["dh_n"],
                                 lengths=ref["lengths"], **opts)  # fmt: skip
        xp, a = _arrays(p, kernel.library)
        with np.errstate(all="ignore"), kernel.selected():
            got = kernel.backward(xp, a["dh"], a["x"], a["h0"], a["Wx"], a["Wh"], a["h_seq"], a["dh_n"],
                                  lengths=a["lengths"], **opts)  # fmt: skip
        for name, g, w in zip(("dx", "dh0", "dWx", "dWh", "db"), got, want):
            _assert_agrees(f"{kernel.name}: {name}", g, np.asarray(w, float), p["dtype"])

    with np.errstate(all="ignore"):
        check()


def _check_cell_forward(kernel, cell):
    @_settings(kernel, cell)
    @given(p=cell_problems(cell))
    def check(p):
        opts = dict(reverse=p["reverse"], return_sequences=p["return_sequences"])
        r = _cell_arrays(p, "numpy")
        want_seqs, want_finals = scan_cell(npx, r["cell"], r["x"], r["state0"], r["w"], lengths=r["lengths"], **opts)
        a = _cell_arrays(p, kernel.library)
        with np.errstate(all="ignore"), kernel.selected():
            got_seqs, got_finals = kernel.cells_forward(a["xp"], a["cell"], a["x"], a["state0"], a["w"],
                                                        lengths=a["lengths"], **opts)  # fmt: skip
        if want_seqs is None:
            assert got_seqs is None, f"{kernel.name}: outputs without return_sequences"
        else:
            assert len(got_seqs) == len(want_seqs)
            for k, (g, w) in enumerate(zip(got_seqs, want_seqs)):
                _assert_agrees(f"{kernel.name} {cell}: seqs[{k}]", g, np.asarray(w, float), p["dtype"])
        assert len(got_finals) == len(want_finals)
        for k, (g, w) in enumerate(zip(got_finals, want_finals)):
            _assert_agrees(f"{kernel.name} {cell}: finals[{k}]", g, np.asarray(w, float), p["dtype"])

    with np.errstate(all="ignore"):
        check()


def _check_cell_backward(kernel, cell):
    @_settings(kernel, cell)
    @given(p=cell_problems(cell))
    def check(p):
        r = _cell_arrays(p, "numpy")
        # the forward's outputs, from the portable loop, for every kernel alike
        seqs, _ = scan_cell(npx, r["cell"], r["x"], r["state0"], r["w"], lengths=r["lengths"], reverse=p["reverse"],
                            return_sequences=True)  # fmt: skip
        p = dict(p, seqs=[np.asarray(q, dtype=np.float64) for q in seqs])  # exact: float32 or float64
        r = _cell_arrays(p, "numpy")
        args = lambda a: (a["xp"], a["cell"], a["d_out"], a["x"], a["state0"], a["w"], a["seqs"], a["d_finals"])  # noqa: E731
        want = backward_cell(*args(r), lengths=r["lengths"], reverse=p["reverse"])
        a = _cell_arrays(p, kernel.library)
        with np.errstate(all="ignore"), kernel.selected():
            got = kernel.cells_backward(*args(a), lengths=a["lengths"], reverse=p["reverse"])
        _assert_agrees(f"{kernel.name} {cell}: dx", got[0], np.asarray(want[0], float), p["dtype"])
        for k, (g, w) in enumerate(zip(got[1], want[1], strict=True)):
            _assert_agrees(f"{kernel.name} {cell}: dstate0[{k}]", g, np.asarray(w, float), p["dtype"])
        for name, g, w in zip(want[2]._fields, got[2], want[2]):
            if w is None:  # a weight the call had not: no gradient
                assert g is None, f"{kernel.name} {cell}: a gradient of {name}, which the call had not"
                continue
            _assert_agrees(f"{kernel.name} {cell}: d{name}", g, np.asarray(w, float), p["dtype"])

    with np.errstate(all="ignore"):
        check()


def test_every_kernel_is_listed_once():
    names = [k.name for k in KERNELS]
    assert len(names) == len(set(names))
    assert {"numpy in-place", "oneMKL", "jax", "dask"} <= set(names)
    # every gated cell's fast NumPy loop is held against the portable loop, forward and backward
    for name in ("numpy in-place", "numba (own product)", "numba (BLAS, two threads)"):
        kernel = next(k for k in KERNELS if k.name == name)
        assert kernel.cells_forward is not None and kernel.cells_backward is not None
