"""One preparation of a recurrence's arguments, shared by the forward and backward functions.

``prepare`` checks a call once — the arrays' library, dtype and device, the
weights against the cell, the input's layout, the states, ``lengths`` and
``mask`` — and returns a ``Prepared``: the arrays time-major, in one dtype,
on one device, ready for a kernel. The public functions
(``rnn_forward``, ``lstm_forward``, ``gru_backward``, ...) call it; the
layers check a whole call once and then run each layer and direction
through the kernels' entry (``forward.run``), which trusts what it is given.
"""

from __future__ import annotations

from typing import NamedTuple

from ._checks import (
    cast,
    check_bool,
    check_features,
    check_float_dtypes,
    check_lengths,
    check_mask,
    check_same_device,
    check_state,
    require,
    shape_str,
    time_first,
)
from ._compat import array_namespace, is_dask_namespace

__all__ = ["Prepared", "pair", "prepare"]


class Prepared(NamedTuple):
    """A checked call: what the kernels take.

    Attributes
    ----------
    xp : namespace
    x : array
        ``(T, *batch, D)``, time-major, in ``dtype``.
    state0 : tuple
        Each part of the initial state ``(*batch, S_k)`` (zeros where none
        was given), in ``dtype``.
    w : cell.Weights
        The weights in ``dtype`` (``None`` entries stay ``None``).
    lengths : array or None
        Integer ``(*batch,)``, values checked in ``[0, T]``.
    mask : array or None
        Booleans ``(T, *batch)``, time-major.
    sizes : cells.Sizes
        ``H``, ``D`` and the state parts' sizes.
    batch : tuple
        The batch shape.
    dtype, device
        Of every array above.
    arrays : dict
        The other arrays the caller named (``extra``), checked for
        library, dtype and device and cast, not reshaped.
    """

    xp: object
    x: object
    state0: tuple
    w: object
    lengths: object
    mask: object
    sizes: object
    batch: tuple
    dtype: object
    device: object
    arrays: dict


def prepare(cell, x, state0, w, *, state_labels, batch_first, lengths=None, mask=None, xp=None,
            extra=None):
    """Check one call of a recurrence; return a ``Prepared``.

    Parameters
    ----------
    cell
        The cell (its options are checked when it is made).
    x : array or list of arrays
        ``(T, *batch, D)``, ``(*batch, T, D)`` with ``batch_first``, or a list
        of T arrays ``(*batch, D)``.
    state0 : tuple
        Each part of the initial state or ``None`` (zeros).
    w : cell.Weights
        The weights, under the names messages use.
    state_labels : tuple of str
        The argument names of the state's parts (``("h0",)``, ``("h0", "c0")``).
    batch_first, lengths, mask, xp
        As the public functions take them.
    extra : dict, optional
        Other arrays of the call (``{"dh": ..., "h_seq": ...}``): same library,
        real floating, same device, cast to the promoted dtype.

    Raises
    ------
    TypeError, ValueError
        As the public functions document (every message names the argument).
    """
    check_bool("batch_first", batch_first)
    weights = dict(zip(w._fields, w))
    require(weights, cell.required)
    steps = None
    if isinstance(x, (list, tuple)):
        steps = list(x)
        if any(s is None for s in steps):
            raise TypeError("x must not contain None")
        named = {f"x[{i}]": s for i, s in enumerate(steps)}
    elif x is None:
        raise TypeError("x must be an array (T, *batch, D) or a list of T arrays; got None")
    else:
        named = {"x": x}
    named.update(dict(zip(state_labels, state0)))
    named.update(weights)
    named.update(extra or {})
    xp = array_namespace(named, xp=xp)
    sizes = cell.check_weights(w)
    D = sizes.D
    dtype = check_float_dtypes(xp, named)
    dev = check_same_device(named)

    if steps is not None:  # a list of T arrays (*batch, D), time-ordered
        for i, s in enumerate(steps):
            check_features(f"x[{i}]", s, D, "(*batch, D)", 1)
            if s.shape != steps[0].shape:
                raise ValueError(
                    f"x[{i}] has shape {shape_str(s.shape)} but x[0] has shape "
                    f"{shape_str(steps[0].shape)}; every step must have the same shape"
                )
        if steps:
            x_tm = xp.stack([cast(xp, s, dtype) for s in steps], axis=0)  # (T, *batch, D)
            if is_dask_namespace(xp):  # one chunk per step came from the stack, not from the caller
                x_tm = x_tm.rechunk({0: -1})
        else:
            given = [(s, n) for s, n in zip(state0, sizes.state) if s is not None]
            batch = tuple(given[0][0].shape[:-1]) if given else ()
            x_tm = xp.zeros((0, *batch, D), dtype=dtype, device=dev)
    elif batch_first:
        check_features("x", x, D, "(*batch, T, D) with batch_first=True", 2)
        x_tm = time_first(xp, x)  # (T, *batch, D)
    else:
        check_features("x", x, D, "(T, *batch, D)", 2)
        x_tm = x
    x_tm = cast(xp, x_tm, dtype)
    T, batch = x_tm.shape[0], tuple(x_tm.shape[1:-1])

    states = []
    for label, s, size in zip(state_labels, state0, sizes.state):
        if s is None:
            states.append(xp.zeros((*batch, size), dtype=dtype, device=dev))
        else:
            check_state(label, s, batch, size)
            states.append(cast(xp, s, dtype))
    lengths = check_lengths(xp, lengths, batch, T, dev)
    mask = check_mask(xp, mask, batch, T, dev, lengths=lengths)  # (T, *batch)
    w = type(w)(*(cast(xp, a, dtype) for a in w))
    arrays = {k: cast(xp, a, dtype) for k, a in (extra or {}).items()}
    return Prepared(xp, x_tm, tuple(states), w, lengths, mask, sizes, batch, dtype, dev, arrays)


def pair(name, value, labels):
    """``value`` as a pair ``(a, b)`` (``None``: both ``None``), else ``TypeError`` naming it.

    An LSTM's state ``hx = (h0, c0)`` and its gradient ``d_hx = (d_h_n, d_c_n)``;
    ``labels`` name the two entries in the message.
    """
    if value is None:
        return (None, None)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = (f"a {type(value).__name__} of {len(value)} entries" if isinstance(value, (tuple, list))
               else type(value).__name__)  # fmt: skip
        raise TypeError(f"{name} must be None or a pair ({', '.join(labels)}) (either may be None); got {got}")
    return tuple(value)
