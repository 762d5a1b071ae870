"""The recurrent cells: each defined once, every kernel takes one.

A cell is the part of a recurrent network that differs from one kind of
network to another: how many gate blocks its weights hold, what state it
carries, one step of the recurrence and that step's derivative. Everything
else (the time loop, variable lengths, masks, reverse runs, stacking the
outputs, the weight gradients' products over all steps) is the kernels'
work, written once for every cell (``kernels.portable.scan_cell`` and
``kernels.portable.backward_cell`` define the answer).

====================  ======  ==========  =====================================
cell                  gates   state       step (row convention, ``@`` a product)
====================  ======  ==========  =====================================
``ElmanCell``         1       ``(h,)``    ``h' = (1 - a) h + a f(x Wx' + h Wh' + b)``
``LSTMCell``          4       ``(h, c)``  gates i, f, g, o (torch's order), optional
                                          projection ``h' = (o * h(c')) W_hr'``
                                          and peepholes
``GRUCell``           3       ``(h,)``    gates r, z, n (torch's order),
                                          reset after (torch) or before (ONNX's
                                          ``linear_before_reset=0``) the product
====================  ======  ==========  =====================================

The protocol (see ``ElmanCell`` for the smallest example). A cell is a
frozen dataclass of its options (hashable, so a jitted program can take it
as a static argument) with these members:

``name``, ``gates``, ``state_names``
    ``"elman"``/``"lstm"``/``"gru"``; ``G``, the number of ``H``-row blocks
    in the input weights; the names of the state's parts (``("h", "c")``).
``Weights``
    A ``NamedTuple`` type of the cell's weights; ``required`` names the
    fields that may not be ``None``. Gradients come in the same type.
``check_weights(w)``
    Shapes, or a ``ValueError`` naming the weight; returns ``Sizes``.
``plain``
    True when the cell runs with the options every fast kernel knows.
``project(xp, x, w)``
    The input projection for all steps at once, ``(T, *batch, G * H)``.
``fixed(xp, w)``
    What every step reads (transposed weights), computed once per run.
``step(xp, xg_t, state, w, fixed)``
    The new state (a tuple) from the step's projected input and the state.
``saved(xp, x, prev, seqs, w, fixed, *, from_outputs)``
    Everything the backward needs at every step, computed for all steps at
    once from the input, the states each step started from (``prev``) and
    the states it produced (``seqs``): a tuple of ``(T, *batch, .)`` arrays.
    A cell with ``pointwise`` (below) also takes ``products=(xg, hg)``
    (``None``: computed here): the projected input and the recurrent
    product with ``recurrent_bias`` of every step, ``(T, *batch, G * H)``,
    as the forward computed them (the compiled forward keeps them for
    the layer's backward), instead of both products again.
``step_backward(xp, saved_t, prev_t, g_t, w, fixed)``
    From the gradient ``g_t`` reaching the state after step t: ``(d_t,
    g_prev)``, the step's gradients that the weight gradients sum over
    (a tuple) and the gradient reaching the state before it.
``grads(xp, d, x, prev, saved, w, valid, matmuls=MATMULS)``
    ``(dx, dw)`` from every step's ``d`` (stacked), with ``dw`` a
    ``Weights`` of gradients; ``valid`` ``(T, *batch, 1)`` or ``None`` marks
    the steps that count (elsewhere the arrays multiplied are zeroed, so
    that padding never reaches a gradient: ``0 * NaN`` is NaN). Its
    products over all steps go through ``matmuls`` (``outer_sum`` and
    ``rows_matmul``, ``_base.Matmuls``): the array library's by default, a
    kernel's own where it passes them (``kernels.numba_products``).

What the fast loops need (the gated cells; Elman has kernels of its own).
A step is a product, ``h @ W_hh.T``, and an elementwise function of the
result: the fast loops make the product themselves (into a preallocated
buffer, one BLAS call) and run the cell's elementwise function, written
once and run by every kernel, the portable loop's ``step`` included:

``pointwise(ops, xg, hg, carry, *extras)`` (a static method)
    The new value of each part of the state (an LSTM's ``h`` before its
    projection) from the gate blocks of the step's projected input ``xg``
    and of the recurrent product ``hg`` (with ``recurrent_bias``), and the
    parts of the state it reads elementwise, ``carry``. Only arithmetic and
    ``ops``: it runs on whole arrays (of any library: ``ops(xp)``) and on one
    unit's numbers alike, and numba compiles it as written.
``pointwise_backward(ops, saved, carry, grads, *extras)`` (a static method)
    ``(dx, dh, dcarry)``: from the step's ``saved`` entries, ``carry`` before
    the step and the gradients reaching each part of ``pointwise``'s result,
    the gradients of the gate blocks on the input's side and on the
    product's side, and of ``carry``. The gradient reaching ``h`` before
    the step is ``concat(dh) @ W_hh`` (plus ``dcarry``'s where ``h`` is carried).
``ops(xp)``, ``roles``, ``clipped``
    The activations by role (``fa``, ``ga``, ...: ``ArrayOps``) on arrays of
    ``xp``, and ``zeros_like`` and ``complement`` (``1 - z``); the compiled
    loops give each its own function. ``pointwise`` writes no number literal
    (``1 - z`` is ``ops.complement(z)``): numba would widen a float32 step to
    float64 for one.
``carried``, ``separate_recurrent_grads``
    The indices of the state's parts that ``pointwise`` reads; whether
    ``pointwise_backward``'s ``dh`` differs from ``dx``.
``input_weights(w)``
    ``(W, b)`` with ``project(xp, x, w) == x @ W.T + b`` (``b`` may be
    ``None``): the fast loops project the input into buffers of their own
    layout, gate block by gate block.
``recurrent_bias(w)``, ``projection(w)``, ``extras(w)``, ``grads_input(dx, dh, gh)``
    The bias added to ``h @ W_hh.T``; the projection ``P`` of ``h = m @ P.T``
    (``None``: none); what ``pointwise`` takes after ``carry`` in a plain run
    (an LSTM's peepholes); ``grads``' ``d`` from the stacked gate gradients
    and each step's gradient reaching ``h``.

A new cell is one module here that defines these, plus its tests; the
kernels and the public functions need no change to run it.
"""

from __future__ import annotations

from ._base import ArrayOps, Sizes, batch_sum, outer_sum, split_gates, zero_invalid
from .elman import ElmanCell, ElmanWeights
from .gru import GRUCell, GRUWeights
from .lstm import LSTMCell, LSTMWeights

__all__ = [
    "ArrayOps",
    "ElmanCell",
    "ElmanWeights",
    "GRUCell",
    "GRUWeights",
    "LSTMCell",
    "LSTMWeights",
    "Sizes",
    "batch_sum",
    "outer_sum",
    "split_gates",
    "zero_invalid",
]
