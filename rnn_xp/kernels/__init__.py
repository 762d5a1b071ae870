"""The kernels wing: one module per array library, and the one table that picks between them.

A kernel runs the recurrence (or its gradient) on arrays that the public
layer (``forward``, ``backward``) has already validated: time-major, one
dtype, one device. Every forward kernel has the signature of
``portable.scan_portable`` and every backward kernel that of
``portable.backward_portable``; the portable loops define the answer and
every other kernel is tested against them.

Which kernel runs is decided here and nowhere else: ``KERNELS`` holds one
row per library (``Route``), its forward and backward side by side, each
with a comment saying why, and ``OTHERS`` the portable loops for any other
library. The rows whose choice depends on the sizes (NumPy: ``numpy_loop``,
and ``numpy_cells_loop`` for the gated cells; CuPy: ``cupy_path``) carry their
size rules below the table, with their numbers (``NUMBA_H_BELOW``,
``NUMBA_MAX_ROWS``, ``NUMBA_FORWARD_MAX_H``, ``NUMBA_FORWARD_MAX_ROWS``, ``NUMBA_BACKWARD_FEW_ROWS``,
``NUMBA_BACKWARD_FEW_ROWS_MAX_H``, ``MKL_MACS``, ``MKL_ROW_MACS``, ``CELLS_NUMBA_MACS``,
``CELLS_NUMBA_BACKWARD_MACS``, ``PERSISTENT_MAX_BATCH``). The kernel modules run what they
are given; the settings they are chosen by (``RNN_XP_*``) are read by
``_settings``.

====================  ========================================================
module                what it holds
====================  ========================================================
``portable``          the Array API loops, forward and backward (every library)
``numpy``             the in-place NumPy loop (``scan_inplace`` also serves CuPy)
``numpy_backward``    the in-place NumPy backward loop
``numpy_cells``       any plain cell's in-place NumPy loops, forward and backward
``numba_cpu``         the NumPy loop as one numba-compiled call (optional)
``numba_backward``    the NumPy backward loop as one numba-compiled call (optional)
``numba_cells``       any plain cell's loops as one compiled call each (optional)
``numba_products``    the backward's products over all steps, compiled (optional)
``_numba_jit``        the compiled functions of the Elman loops (with ``_numba_cells_jit``,
                      the only modules importing numba)
``_numba_cells_jit``  the gated cells' compiled loops, built on ``_numba_jit``
``_numpy_loops``      NumPy's own tanh and exp loops by address, for the compiled loops
``mkl``               oneMKL's packed product for the NumPy loop (optional)
``jax``               the recurrence and its gradient, each one jitted ``lax.scan``
``torch``             one autograd.Function with rnn_xp's backward; in-place loops
``autodiff``          whose gradient runs inside JAX and torch (``RNN_XP_AUTODIFF``)
``cupy``              runs the CuPy path chosen here: fused loop or persistent kernel
``cupy_fused``        the in-place loop with one fused CUDA kernel per step
``cupy_persistent``   all steps in one cooperative CUDA launch (small batches)
``cupy_cells``        any cell: products and one fused CUDA kernel per step,
                      the kernel generated from the cell's step
``_pointwise``        reads a cell's step off ``cell.step`` as products and
                      elementwise expressions (for ``cupy_cells``)
``dask``              one task per batch chunk, each running the kernel this
                      table picks for the chunk's library (forward and backward)
``_blocks``           what the in-place loops share: blocks of time steps, the
                      input projection, a transposed copy of ``Wh``
``_pages``            large work buffers on whole huge pages
``_threads``          BLAS on one thread for small steps; the compiled loops'
                      worker threads
``_settings``         the ``RNN_XP_*`` environment settings, read in one place
====================  ========================================================

The fast kernels run the plain recurrence: tanh or relu, no ``clip``, no
``mask``. A call with any of the other activations, ``clip`` or ``mask``
(``extended=True``) goes to the portable loop of its direction, which takes
them as extra keyword arguments, unless the row says its kernels take them
(JAX, torch); Dask arrays then run the portable loop lazily (a graph that
grows with T).

A kernel never imports a public module (``tests/test_layout.py`` checks it).
Library modules are imported here only when the caller's arrays come from
that library, so ``import rnn_xp`` imports no backend.

>>> import numpy as np
>>> route("numpy").forward, route("numpy").backward
(':numpy_row_forward', ':numpy_row_backward')
>>> route("numpy").cells_forward, route("numpy").cells_backward
(':numpy_row_cells_forward', ':numpy_row_cells_backward')
>>> numpy_loop(np.zeros((5, 4, 3), np.float16), np.zeros((4, 64), np.float16), "tanh")
'blas'
"""

from __future__ import annotations

import importlib
import math
from typing import Callable, NamedTuple

from .._compat import (
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)
from . import _settings, _threads
from ..cells import ElmanCell, ElmanWeights
from .portable import backward_cell, backward_portable, scan_cell, scan_portable

# The table (KERNELS, OTHERS) and the size rules' numbers (NUMBA_H_BELOW,
# NUMBA_MAX_ROWS, NUMBA_FORWARD_MAX_H, NUMBA_FORWARD_MAX_ROWS, NUMBA_BACKWARD_FEW_ROWS,
# NUMBA_BACKWARD_FEW_ROWS_MAX_H, MKL_MACS, MKL_ROW_MACS, CELLS_NUMBA_MACS,
# CELLS_NUMBA_BACKWARD_MACS, PERSISTENT_MAX_BATCH) are public
# too; __all__ lists the functions and classes (the API pages show those).
__all__ = [
    "Route",
    "backward",
    "backward_kernel",
    "backward_portable",
    "cupy_cells_forward",
    "cupy_row_forward",
    "cupy_path",
    "dask_cells_backward",
    "dask_cells_forward",
    "dask_row_backward",
    "dask_row_forward",
    "forward_kernel",
    "numpy_cells_loop",
    "numpy_row_backward",
    "numpy_row_cells_backward",
    "numpy_row_cells_forward",
    "numpy_row_forward",
    "numpy_loop",
    "own_precision",
    "route",
    "scan",
    "scan_portable",
]


def scan(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None, keep=False):
    """Run ``cell``'s recurrence with the kernel the table picks for ``xp``; ``scan_cell``'s arguments and results.

    The arrays are validated, time-major, of one dtype and device (see
    ``_prepare.prepare``). The row of ``xp``'s library names two kernels:
    one for the Elman cell (``Route.forward``, with Elman's own signature,
    where the library has a kernel written for it) and one for any cell
    (``Route.cells_forward``). ``keep``: ``(seqs, finals, kept)``, ``kept``
    what the kernel kept for ``backward(..., kept=)`` (a row's
    ``cells_keep``), else ``None``.
    """
    row = _route_of(xp)
    if keep:
        if row.cells_keep and not (cell.name == "elman" and not row.cells_run_elman):
            return _function(row.cells_forward)(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                                                return_sequences=return_sequences, mask=mask, keep=True)  # fmt: skip
        return (*scan(xp, cell, x, state0, w, lengths=lengths, reverse=reverse, return_sequences=return_sequences,
                      mask=mask), None)  # fmt: skip
    if cell.name == "elman" and not row.cells_run_elman:
        extended = not cell.plain or mask is not None
        kernel = forward_kernel(xp, extended=extended)
        options = {}
        if extended:
            options = {"activation_alpha": cell.alpha, "activation_beta": cell.beta,
                       "clip": cell.clip, "mask": mask}  # fmt: skip
        h_seq, h_last = kernel(
            xp, x, state0[0], w.Wx, w.Wh, w.b, nonlinearity=cell.nonlinearity, lengths=lengths,
            reverse=reverse, leak=cell.leak, return_sequences=return_sequences, **options,
        )  # fmt: skip
        return (None if h_seq is None else (h_seq,)), (h_last,)
    return _function(row.cells_forward)(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                                        return_sequences=return_sequences, mask=mask)  # fmt: skip


def backward(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None, kept=None):
    """Backpropagate through ``cell``'s recurrence with the kernel the table picks; ``backward_cell``'s arguments and results.

    ``kept``: what ``scan(..., keep=True)`` returned for this call's forward, or ``None``.
    """
    row = _route_of(xp)
    if cell.name == "elman" and not row.cells_run_elman:
        extended = not cell.plain or mask is not None
        kernel = backward_kernel(xp, extended=extended)
        options = {}
        if extended:
            options = {"activation_alpha": cell.alpha, "activation_beta": cell.beta,
                       "clip": cell.clip, "mask": mask, "b": w.b}  # fmt: skip
        dx, dh0, dWx, dWh, db = kernel(
            xp, d_out, x, state0[0], w.Wx, w.Wh, seqs[0], d_finals[0],
            nonlinearity=cell.nonlinearity, lengths=lengths, reverse=reverse, leak=cell.leak,
            **options,
        )  # fmt: skip
        return dx, (dh0,), type(w)(dWx, dWh, db)
    options = {"kept": kept} if kept is not None and row.cells_keep else {}
    return _function(row.cells_backward)(xp, cell, d_out, x, state0, w, seqs, d_finals,
                                         lengths=lengths, reverse=reverse, mask=mask, **options)  # fmt: skip


class Route(NamedTuple):
    """One row of the table: the kernels that run one library's arrays.

    ``forward`` and ``backward`` name a function of this package as
    ``"module:function"`` (``":function"`` for one defined here), imported
    only when the row is chosen: the Elman cell's kernels, with Elman's
    signature. ``extended``: those kernels take the options only the
    portable loops know (other activations, ``clip``, ``mask``) themselves.
    ``cells_forward`` and ``cells_backward`` run any cell
    (``portable.scan_cell``'s and ``portable.backward_cell``'s signatures);
    with ``cells_run_elman`` they run the Elman cell too. ``cells_keep``:
    ``cells_forward`` takes ``keep`` and ``cells_backward`` ``kept`` (the
    forward's products, kept for the backward's ``cell.saved``).
    """

    library: str
    is_library: Callable  # the namespace test
    forward: str  # the Elman cell, Elman's signature (scan_portable's)
    backward: str  # (backward_portable's)
    extended: bool = False
    cells_forward: str = "portable:scan_cell"  # any cell, scan_cell's signature
    cells_backward: str = "portable:backward_cell"  # (backward_cell's)
    cells_run_elman: bool = False  # the cells' kernels also run Elman (no Elman kernels of their own)
    cells_keep: bool = False  # the cells' forward keeps its products for their backward (keep=, kept=)


# One row per library, tried in this order; the first whose test takes the
# namespace runs the call. Each row names the Elman cell's kernels and the
# kernels that run any cell (a cell is defined once in rnn_xp.cells; those
# kernels take it as an argument).
KERNELS = (
    # JAX: a Python loop dispatches a few small XLA calls per step; lax.scan
    # compiles the whole loop once per shape and options, and jax.grad of it
    # runs rnn_xp's backward (a jax.custom_vjp). The backward is one reverse
    # lax.scan too. Options the scans do not know run the portable loops under
    # the same custom_vjp (with the bias for the backward).
    # Every cell, Elman included, runs the same scan (the cell a static argument).
    Route("jax", is_jax_namespace, "jax:scan_jax", "jax:backward_jax", extended=True,
          cells_forward="jax:scan_cell_jax", cells_backward="jax:backward_cell_jax", cells_run_elman=True),
    # torch: one autograd.Function whose backward is rnn_xp's when the tensors
    # need gradients, an in-place loop otherwise; the backward in place like
    # NumPy's. The portable loops where the backward itself is recorded
    # (create_graph=True), for torch.func wrappers, and for options the
    # in-place loops do not know.
    # Every cell runs the same autograd.Function; without a graph to record,
    # plain Elman takes its in-place loops (measured faster), the others the
    # portable loop.
    Route("torch", is_torch_namespace, "torch:scan_torch", "torch:backward_torch", extended=True,
          cells_forward="torch:scan_cell_torch", cells_backward="torch:backward_cell_torch",
          cells_run_elman=True),
    # NumPy: arrays are mutable, so preallocated buffers, matmul(out=) and
    # in-place ufuncs; with numba installed the whole loop as one compiled
    # call, with oneMKL installed and preferred its packed product: picked per
    # call by size (numpy_loop). The backward follows the forward's choice
    # (the compiled loop or the in-place loop; oneMKL has no backward).
    # The gated cells (numpy_cells_loop): the in-place loop of numpy_cells, or
    # with numba its compiled loop (numba_cells) below a size; both run the
    # cell's own pointwise step. They fall back to the portable loops for
    # what they do not take: a cell that is not plain (other activations,
    # clip, an LSTM's input_forget, a GRU's reset before the product), a
    # mask, a size of zero (numpy_cells.runs); the compiled loop also for
    # dtypes other than float32 and float64.
    # With return_cache, the layer asks the compiled loop to keep its products
    # (the projection and each step's h @ W_hh.T) for the backward's cell.saved.
    Route("numpy", is_numpy_namespace, ":numpy_row_forward", ":numpy_row_backward",
          cells_forward=":numpy_row_cells_forward", cells_backward=":numpy_row_cells_backward", cells_keep=True),
    # CuPy: kernel launches dominate on a GPU: one fused launch per step, or
    # one launch for all steps (the persistent kernel) for small batches
    # (cupy_path). Other dtypes than float32 and float64 (float16), which the
    # CUDA kernels are not written for, run the portable loop; so does the
    # backward (no CUDA backward).
    # Any other cell: cuBLAS products and one fused kernel per step, its CUDA
    # generated from the cell's step (cupy_cells); the backward portable.
    Route("cupy", is_cupy_namespace, ":cupy_row_forward", "portable:backward_portable",
          cells_forward=":cupy_cells_forward"),
    # Dask: the portable loop on lazy arrays builds a graph that grows with T;
    # one task per batch chunk runs this table's kernel for the chunk's library
    # over the whole sequence, and for the backward a tree of tasks adds the
    # chunks' weight gradients. Every cell alike (the tasks call scan and
    # backward for the chunk's library); Elman's options that its own kernels
    # do not know (other activations, clip, mask) run in such tasks too.
    Route("dask", is_dask_namespace, ":dask_row_forward", ":dask_row_backward", extended=True,
          cells_forward=":dask_cells_forward", cells_backward=":dask_cells_backward"),
)

# array-api-strict and any other library: the portable loops, which take every option.
OTHERS = Route("any other", lambda xp: True, "portable:scan_portable", "portable:backward_portable", extended=True)


def route(library):
    """The row of ``KERNELS`` for a library's name (``"numpy"``, ...); ``OTHERS`` for any other name."""
    return next((r for r in KERNELS if r.library == library), OTHERS)


def _route_of(xp):
    return next((r for r in KERNELS if r.is_library(xp)), OTHERS)


def forward_kernel(xp, *, extended=False):
    """The forward kernel for namespace ``xp`` (``scan_portable``'s signature).

    ``extended``: the call uses an activation other than tanh/relu, ``clip``
    or ``mask``, options only ``scan_portable`` takes (and the kernels of a
    row marked ``extended``).
    """
    row = _route_of(xp)
    return scan_portable if extended and not row.extended else _function(row.forward)


def backward_kernel(xp, *, extended=False):
    """The backward kernel for namespace ``xp`` (``backward_portable``'s signature).

    ``extended``: as for ``forward_kernel``; the portable loop then also takes ``b``.
    """
    row = _route_of(xp)
    return backward_portable if extended and not row.extended else _function(row.backward)


def _function(where):
    """The function ``"module:function"`` of this package names (``":function"``: defined here)."""
    module, name = where.split(":")
    if not module:
        return globals()[name]
    return getattr(importlib.import_module(f".{module}", __name__), name)


# -- the size rules ---------------------------------------------------------------------

# NumPy, numba installed and RNN_XP_NUMBA=auto: the compiled loop only for H
# below NUMBA_H_BELOW and at most NUMBA_MAX_ROWS rows. Beyond, the NumPy loop
# (one BLAS call per step with every BLAS thread on the whole batch) was the
# faster one on the measured grid (docs/cpu-kernels.md, "Which kernel runs").
NUMBA_H_BELOW = 256
NUMBA_MAX_ROWS = 32

# The forward alone: the compiled loop's own register-blocked product (four
# rows by four columns, AVX-512 where the CPU has it) up to NUMBA_FORWARD_MAX_H
# units and NUMBA_FORWARD_MAX_ROWS rows, the sizes measured on the 2-core AMD
# VM, where it took 0.3 to 0.8 of the NumPy loop's time (docs/cpu-kernels.md,
# "The own product"). The backward: the rule above, and besides from 2 to
# NUMBA_BACKWARD_FEW_ROWS rows up to NUMBA_BACKWARD_FEW_ROWS_MAX_H units,
# where its own product took 0.61 to 0.73 of the NumPy backward's time at
# (4, 200, 256, 256), (8, 200, 256, 256), (8, 200, 512, 512) (one sequence
# of 512 units: 1.5x, a matrix-vector product).
NUMBA_FORWARD_MAX_H = 1024
NUMBA_FORWARD_MAX_ROWS = 256
NUMBA_BACKWARD_FEW_ROWS = 8
NUMBA_BACKWARD_FEW_ROWS_MAX_H = 512

# NumPy, oneMKL installed and preferred (an Intel CPU, or RNN_XP_MKL=1): the
# NumPy loop's products go through oneMKL from MKL_MACS multiply-adds per step
# (B * H * H), where they run on its threads; below, one OpenBLAS thread
# (_threads.SERIAL_MACS, the same size) is faster than a ctypes call. Its
# threads meet at a barrier every step, which stalls when another library's
# idle threads still spin on the same cores (OpenBLAS's do for about 0.1 s
# after each call): mkl.StepThreads then falls back to one thread for a while
# (benchmarks/bench_interference.py measures both cases).
MKL_MACS = _threads.SERIAL_MACS

# One sequence (B = 1) takes oneMKL's matrix-vector product from MKL_ROW_MACS
# multiply-adds per step (H >= 512): reading Wh is the cost there, and two
# threads read it twice as fast (B=1, H=512, T=200: 2.8 ms against 4.8 ms on
# one OpenBLAS thread). Where oneMKL takes a size, the compiled loop does not.
MKL_ROW_MACS = 1 << 18

# NumPy, the gated cells, numba installed and RNN_XP_NUMBA=auto: the
# compiled loop (numba_cells) for at most CELLS_NUMBA_MACS multiply-adds per
# step (B * P * G * H, the recurrent product) forward, the largest step
# measured (B = 64, H = 1024, an LSTM), and CELLS_NUMBA_BACKWARD_MACS
# backward; beyond, the in-place loop (numpy_cells). On the grid of
# docs/cpu-kernels.md ("The gated cells' product and threads") the compiled
# forward took 0.10 to 0.99 of the in-place loop's time at every size; the
# compiled backward 0.30 to 0.99 up to 2M multiply-adds per step and 0.97 to
# 1.11 beyond (most of a backward is the same GEMMs either way); the compiled
# backward also from numba_cells.BACKWARD_TWO_CALLERS_MACS with as many rows,
# where its reverse loop runs on two callers (0.88 to 0.93 of the in-place
# loop's time at (64, 50, 512, 1024)).
CELLS_NUMBA_MACS = 1 << 28
CELLS_NUMBA_BACKWARD_MACS = 1 << 21

# CuPy, RNN_XP_CUPY_PATH=auto: the persistent kernel up to this batch size.
# Each step is then a grid barrier (about a microsecond, expected) plus
# B*H*H/SMs multiply-adds per SM from shared memory; the fused path pays two
# launches per step (a few microseconds) but its cuBLAS product scales better
# with B. The crossover is a guess until benchmarks/gpu_check.sh has measured
# it; 8 is the largest batch of the small-batch grid of issue #5.
PERSISTENT_MAX_BATCH = 8


def numpy_loop(x, h0, nonlinearity, *, backward=False):
    """Which loop runs a NumPy call: ``"numba"``, ``"mkl"`` or ``"blas"``.

    - ``"numba"``, the compiled loop (``numba_cpu``), when numba is installed
      and can run, for float32/float64 with tanh or relu: with
      ``RNN_XP_NUMBA=1`` always, with ``auto`` (the default) for H up to
      ``NUMBA_FORWARD_MAX_H`` and at most ``NUMBA_FORWARD_MAX_ROWS`` rows (the
      ``backward``: H below ``NUMBA_H_BELOW`` and at most ``NUMBA_MAX_ROWS``
      rows, or 2 to ``NUMBA_BACKWARD_FEW_ROWS`` rows of at most
      ``NUMBA_BACKWARD_FEW_ROWS_MAX_H`` units), unless oneMKL takes the size;
    - ``"mkl"``, the NumPy loop on oneMKL's products, when oneMKL is loaded
      and preferred (``mkl.preferred``: an Intel CPU, or ``RNN_XP_MKL=1``)
      for float32/float64 from ``MKL_MACS`` multiply-adds per step
      (``MKL_ROW_MACS`` for one sequence), nothing of size 0;
    - ``"blas"``, the NumPy loop on NumPy's own BLAS, otherwise.

    ``x`` ``(T, *batch, D)`` and ``h0`` ``(*batch, H)`` as the kernels get
    them; an unknown ``RNN_XP_NUMBA`` or ``RNN_XP_MKL`` is a ``ValueError``
    whatever the arrays.
    """
    import numpy

    from . import mkl, numba_cpu

    setting = _settings.numba()  # first: an unknown value is an error whatever the arrays
    preferred = mkl.preferred()  # also reads RNN_XP_MKL, whatever the size
    T, B, H = x.shape[0], math.prod(h0.shape[:-1]), h0.shape[-1]
    floats = h0.dtype in (numpy.float32, numpy.float64)
    on_mkl = preferred and B * H * H >= (MKL_ROW_MACS if B == 1 else MKL_MACS)
    if setting != "off" and nonlinearity in ("tanh", "relu") and floats and numba_cpu.available():
        if backward:
            fits = (H < NUMBA_H_BELOW and B <= NUMBA_MAX_ROWS) or \
                (2 <= B <= NUMBA_BACKWARD_FEW_ROWS and H <= NUMBA_BACKWARD_FEW_ROWS_MAX_H)  # fmt: skip
        else:
            fits = H <= NUMBA_FORWARD_MAX_H and B <= NUMBA_FORWARD_MAX_ROWS
        if setting == "on" or (fits and not on_mkl):
            return "numba"
    return "mkl" if on_mkl and floats and min(T, B, H) > 0 else "blas"


def numpy_cells_loop(cell, x, state0, w, mask=None, *, backward=False):
    """Which loop runs a gated cell's NumPy call: ``"numba"``, ``"inplace"`` or ``"portable"``.

    - ``"portable"`` (``portable.scan_cell``) for what the fast loops do not
      take (``numpy_cells.runs``: a cell that is not plain, a mask, a size of
      zero);
    - ``"numba"``, the compiled loop (``numba_cells``), when it takes the
      call (``numba_cells.takes``: numba installed and able to run,
      float32/float64, the cell's activations compiled): with
      ``RNN_XP_NUMBA=1`` always, with ``auto`` (the default) up to
      ``CELLS_NUMBA_MACS`` multiply-adds per step (``B * P * G * H``), or
      ``CELLS_NUMBA_BACKWARD_MACS`` for the ``backward`` (and beyond, where
      its reverse loop takes two callers: ``numba_cells.backward_on_two_callers``);
    - ``"inplace"``, the in-place loop (``numpy_cells``), otherwise.

    ``x`` ``(T, *batch, D)`` and ``state0`` as the kernels get them; an
    unknown ``RNN_XP_NUMBA`` is a ``ValueError`` whatever the arrays.
    """
    from . import numba_cells, numpy_cells

    setting = _settings.numba()  # first: an unknown value is an error whatever the arrays
    if not numpy_cells.runs(cell, x, state0, mask):
        return "portable"
    B, P = math.prod(state0[0].shape[:-1]), state0[0].shape[-1]
    if setting != "off" and numba_cells.takes(cell, x, state0, mask):
        limit = CELLS_NUMBA_BACKWARD_MACS if backward else CELLS_NUMBA_MACS
        GH = w.W_hh.shape[0]
        if setting == "on" or B * P * GH <= limit or (backward and numba_cells.backward_on_two_callers(B, P, GH)):
            return "numba"
    return "inplace"


def cupy_path(setting, B, H, itemsize, props):
    """``(path, warning or None)``: the CuPy path for a ``RNN_XP_CUPY_PATH`` setting; no GPU needed.

    ``"persistent"`` (``auto``) for a batch of at most ``PERSISTENT_MAX_BATCH``
    rows whose weights fit on chip (``cupy_persistent.plan`` has a plan for
    ``B``, ``H``, the dtype's ``itemsize`` and the device's properties
    ``props``), else ``"fused"``. ``fused`` forces the fused loop;
    ``persistent`` forces the persistent kernel, and falls back to the fused
    loop with a warning where no plan exists.

    >>> from rnn_xp.kernels.cupy_persistent import DeviceProps
    >>> h100 = DeviceProps(132, 232448, 233472, 1024, 1024, True)
    >>> cupy_path("auto", 8, 1024, 4, h100), cupy_path("auto", 32, 1024, 4, h100)
    (('persistent', None), ('fused', None))
    """
    from .cupy_persistent import plan

    if setting == "fused":
        return "fused", None
    eligible = plan(B, H, itemsize, props) is not None
    if setting == "persistent":
        if not eligible:
            return "fused", (
                f"{_settings.CUPY_PATH}=persistent, but B={B}, H={H} with {itemsize}-byte floats is "
                "not eligible for the persistent kernel (shared memory, dtype or device); "
                "using the fused path"
            )
        return "persistent", None
    return ("persistent" if B <= PERSISTENT_MAX_BATCH and eligible else "fused"), None


# -- the rows' kernels that choose per call ---------------------------------------------


def numpy_row_forward(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """The NumPy row's forward: the compiled loop, or the in-place loop on oneMKL or NumPy's BLAS (``numpy_loop``)."""
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak,
                   return_sequences=return_sequences)  # fmt: skip
    loop = numpy_loop(x, h0, nonlinearity)
    if loop == "numba":
        from .numba_cpu import scan_numba

        return scan_numba(xp, x, h0, Wx, Wh, b, **options)
    from .numpy import scan_numpy

    return scan_numpy(xp, x, h0, Wx, Wh, b, mkl=loop == "mkl", **options)


def numpy_row_backward(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak):
    """The NumPy row's backward: the compiled loop where the forward takes it, else the in-place loop."""
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak)
    if numpy_loop(x, h0, nonlinearity, backward=True) == "numba":
        from .numba_backward import backward_numba

        return backward_numba(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)
    from .numpy_backward import backward_numpy

    return backward_numpy(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options)


def numpy_row_cells_forward(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None, keep=False):
    """The NumPy row's forward of any cell: the compiled, in-place or portable loop (``numpy_cells_loop``).

    ``keep``: ``(seqs, finals, kept)``, the compiled loop's kept products or ``None`` (``scan``).
    """
    options = dict(lengths=lengths, reverse=reverse, return_sequences=return_sequences, mask=mask)
    loop = numpy_cells_loop(cell, x, state0, w, mask)
    if loop == "numba":
        from .numba_cells import scan_cells_numba

        return scan_cells_numba(xp, cell, x, state0, w, keep=keep, **options)
    if loop == "inplace":
        from .numpy_cells import scan_cells_numpy

        result = scan_cells_numpy(xp, cell, x, state0, w, **options)
    else:
        result = scan_cell(xp, cell, x, state0, w, **options)
    return (*result, None) if keep else result


def numpy_row_cells_backward(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None,
                             kept=None):  # fmt: skip
    """The NumPy row's backward of any cell: the loop ``numpy_cells_loop(..., backward=True)`` names.

    Either loop takes what the other's forward returned (the same arrays), ``kept`` included.
    """
    options = dict(lengths=lengths, reverse=reverse, mask=mask)
    loop = numpy_cells_loop(cell, x, state0, w, mask, backward=True)
    if loop == "numba":
        from .numba_cells import backward_cells_numba

        return backward_cells_numba(xp, cell, d_out, x, state0, w, seqs, d_finals, kept=kept, **options)
    if loop == "inplace":
        from .numpy_cells import backward_cells_numpy

        return backward_cells_numpy(xp, cell, d_out, x, state0, w, seqs, d_finals, kept=kept, **options)
    return backward_cell(xp, cell, d_out, x, state0, w, seqs, d_finals, **options)


def cupy_row_forward(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """The CuPy row's forward: float32/float64 on the path ``cupy_path`` picks, other dtypes on the portable loop."""
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse, leak=leak,
                   return_sequences=return_sequences)  # fmt: skip
    setting = _settings.cupy_path()  # first: an unknown value is an error whatever the arrays
    if h0.dtype.name not in ("float32", "float64"):  # the CUDA kernels are written for these two
        return scan_portable(xp, x, h0, Wx, Wh, b, **options)
    T, B, H = x.shape[0], math.prod(h0.shape[:-1]), h0.shape[-1]
    path, note = "fused", None
    if setting != "fused" and T > 0 and B > 0:  # nothing to run otherwise
        from .cupy_persistent import device_props

        path, note = cupy_path(setting, B, H, h0.dtype.itemsize, device_props(x.device.id))
    from .cupy import scan_cupy

    return scan_cupy(xp, x, h0, Wx, Wh, b, path=path, note=note, insist=setting == "persistent", **options)


def cupy_cells_forward(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None):
    """The CuPy row's kernel for any cell: products and one fused kernel per step (``cupy_cells``).

    float16, an empty run (no step, row or unit) and a step the fused loop
    cannot read (``_pointwise.TraceError``) run the portable loop.
    """
    options = dict(lengths=lengths, reverse=reverse, return_sequences=return_sequences, mask=mask)
    H = cell.check_weights(w).H
    if x.dtype.name not in ("float32", "float64") or min(x.shape[0], math.prod(x.shape[1:-1]), H) == 0:
        return scan_cell(xp, cell, x, state0, w, **options)
    from ._pointwise import TraceError
    from .cupy_cells import plan, scan_cells

    try:
        plan(cell, w, tuple(s.shape[-1] for s in state0), H)
    except TraceError:
        return scan_cell(xp, cell, x, state0, w, **options)
    return scan_cells(cell, x, state0, w, **options)


def dask_row_forward(xp, x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences,
                     activation_alpha=None, activation_beta=None, clip=None, mask=None):  # fmt: skip
    """The Dask row's forward: one task per batch chunk, running this table's forward for the chunk's library.

    With any of the options only the portable loop knows, the tasks run the
    Elman cell through ``dask_cells_forward`` (``scan`` per chunk).
    """
    cell = ElmanCell(nonlinearity, activation_alpha, activation_beta, clip, leak)
    if not cell.plain or mask is not None:
        seqs, finals = dask_cells_forward(xp, cell, x, (h0,), ElmanWeights(Wx, Wh, b), lengths=lengths,
                                          reverse=reverse, return_sequences=return_sequences, mask=mask)  # fmt: skip
        return (None if seqs is None else seqs[0]), finals[0]
    from .dask import scan_dask

    return scan_dask(xp, x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                     leak=leak, return_sequences=return_sequences, chunk_kernel=forward_kernel)  # fmt: skip


def dask_row_backward(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak,
                      activation_alpha=None, activation_beta=None, clip=None, mask=None, b=None):  # fmt: skip
    """The Dask row's backward: one task per batch chunk, running this table's backward for the chunk's library.

    With the options only the portable loop knows, as ``dask_row_forward``
    (``b``, the forward's bias, is then read; ``db`` is zeros without one,
    as ``backward_portable`` gives).
    """
    cell = ElmanCell(nonlinearity, activation_alpha, activation_beta, clip, leak)
    if not cell.plain or mask is not None:
        dx, (dh0,), dw = dask_cells_backward(xp, cell, dh, x, (h0,), ElmanWeights(Wx, Wh, b), (h_seq,),
                                             (dh_n,), lengths=lengths, reverse=reverse, mask=mask)  # fmt: skip
        db = dw.b if dw.b is not None else xp.zeros((Wh.shape[0],), dtype=dw.Wh.dtype)
        return dx, dh0, dw.Wx, dw.Wh, db
    from .dask import backward_dask

    return backward_dask(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, nonlinearity=nonlinearity, lengths=lengths,
                         reverse=reverse, leak=leak, chunk_kernel=backward_kernel)  # fmt: skip


def dask_cells_forward(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None):
    """The Dask row's kernel for any cell: one task per batch chunk, each running ``scan`` for the chunk's library."""
    from .dask import scan_cell_dask

    return scan_cell_dask(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                          return_sequences=return_sequences, mask=mask, chunk_scan=scan)  # fmt: skip


def dask_cells_backward(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None):
    """The Dask row's backward for any cell: one task per batch chunk running ``backward``, the weights' shares added by a tree."""
    from .dask import backward_cell_dask

    return backward_cell_dask(xp, cell, d_out, x, state0, w, seqs, d_finals, lengths=lengths, reverse=reverse,
                              mask=mask, chunk_backward=backward)  # fmt: skip


def own_precision(xp, x):
    """A context in which ``xp``'s operations on ``x``'s device run in their inputs' dtype.

    For torch, ``torch.autocast`` turned off on the device type of ``x`` for
    the ``with`` block (rnn_xp computes in the dtype of its arrays, autocast
    or not); for every other library, nothing.
    """
    if is_torch_namespace(xp):
        from .torch import autocast_off

        return autocast_off(x)
    import contextlib

    return contextlib.nullcontext()
