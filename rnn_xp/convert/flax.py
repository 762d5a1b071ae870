"""Flax's recurrent cells (NNX and Linen): ``SimpleCell``, ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``.

Flax keeps Keras's orientation, the transposes of torch's matrices, in
torch's gate orders, with its own parameter names and bias placements
(``x`` the input, ``h`` the previous state; the carry of an LSTM is
``(c, h)``)::

    SimpleCell  h' = f(x @ Ki + bi + h @ Kh)                    (+ h inside f with residual)
    LSTMCell    i, f, g, o = gate, gate, act, gate of  x @ K_i* + h @ K_h* + b_h*
                c' = f * c + i * g,   h' = o * act(c')       (OptimizedLSTMCell: the same)
    GRUCell     r, z = gate(x @ K_i[rz] + b_i[rz] + h @ K_h[rz])
                n = act(x @ K_in + b_in + r * (h @ K_hn + b_hn))  (NNX: no b_hn)
                h' = (1 - z) * n + z * h

=================  ===============================================  =====================================
cell               NNX parameters                                   Linen parameters
=================  ===============================================  =====================================
SimpleCell         ``dense_i {kernel (D, H), bias}``,               ``i {kernel, bias}``, ``h {kernel}``
                   ``dense_h {kernel (H, H)}``
LSTMCell           ``ii``, ``if_``, ``ig``, ``io {kernel (D, H)}``;  ``ii``, ``if``, ``ig``, ``io``;
                   ``hi``, ``hf``, ``hg``, ``ho {kernel, bias}``      ``hi``, ..., ``ho`` (both cells)
OptimizedLSTMCell  ``dense_i {kernel (D, 4H)}``,
                   ``dense_h {kernel (H, 4H), bias (4H,)}``
GRUCell            ``dense_i {kernel (D, 3H), bias (3H,)}``,          ``ir``, ``iz``, ``in {kernel, bias}``;
                   ``dense_h {kernel (H, 3H)}``                       ``hr``, ``hz {kernel}``, ``hn {kernel, bias}``
=================  ===============================================  =====================================

So a SimpleCell's bias is rnn_xp's ``bias_ih`` (``bias_hh = 0``), an
LSTM's the ``bias_hh`` (``bias_ih = 0``), a GRU's input biases
``bias_ih`` and Linen's ``hn`` bias the last block of ``bias_hh`` (its
other blocks, and all of NNX's, zero): a GRU with the reset after the
product, torch's.
"""

from __future__ import annotations

import numpy as np

from .._activations import check_activation
from .._checks import check_bool, check_real_arrays, shape_str
from .._compat import is_array, namespace_of
from ..layer import GRU, LSTM
from ._common import check_flag, from_transposed, layer_weights, param_name
from ._gated import (
    activation_options,
    all_zero,
    blocks,
    build_gated,
    check_any_layer,
    gated_weights,
    layer_activations,
    refuse_options,
)

# JAX function name -> (rnn_xp name, alpha, beta) with JAX's default parameters.
_JAX_ACTIVATIONS = {
    "tanh": ("tanh", None, None),
    "relu": ("relu", None, None),
    "sigmoid": ("sigmoid", None, None),
    "soft_sign": ("softsign", None, None),
    "softplus": ("softplus", None, None),
    "elu": ("elu", 1.0, None),
    "leaky_relu": ("leaky_relu", 0.01, None),
    "hard_sigmoid": ("hard_sigmoid", 1.0 / 6.0, 0.5),  # relu6(x + 3) / 6
}

# A Flax cell class -> its kind; each kind's parameter parts (NNX's names, Linen's names).
_CELLS = {"SimpleCell": "simple", "LSTMCell": "lstm", "OptimizedLSTMCell": "lstm", "GRUCell": "gru"}
_LSTM_NNX = ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho")
_LSTM_LINEN = ("ii", "if", "ig", "io", "hi", "hf", "hg", "ho")
_GRU_LINEN = ("ir", "iz", "in", "hr", "hz", "hn")
_PART_KEYS = {"i", "dense_i", "ii", "ir"}  # one of these marks the level that holds the parts

def _flax_activation(fn):
    """``(name, alpha, beta)`` of an rnn_xp name or a JAX activation function."""
    if isinstance(fn, str):
        return check_activation(fn)
    name = getattr(fn, "__name__", None)
    module = getattr(fn, "__module__", "") or ""
    if name in _JAX_ACTIVATIONS and module.split(".")[0] in ("jax", "flax", "jaxlib"):
        return _JAX_ACTIVATIONS[name]
    raise ValueError(
        f"the activation {fn!r} has no rnn_xp equivalent; rnn_xp reads the JAX functions "
        f"{list(_JAX_ACTIVATIONS)} (jax.nn, jax.numpy, flax's re-exports)"
    )


def _unwrap(value):
    """An array from a Flax variable (``get_value()``, or ``.value`` in older Flax) or an array."""
    if is_array(value):
        return value
    if hasattr(value, "get_value"):
        return value.get_value()
    return getattr(value, "value", value)


def from_flax(cell_or_params, *, cell=None, nonlinearity=None, gate_fn=None, residual=None,
              batch_first=True, xp=None, device=None, dtype=None):
    """A one-layer :class:`~rnn_xp.RNN`, :class:`~rnn_xp.LSTM` or :class:`~rnn_xp.GRU` from a Flax cell.

    Flax's ``SimpleCell`` computes ``h' = f(x @ Ki + bi + h @ Kh)`` (``+ h``
    inside ``f`` with ``residual=True``), with ``Ki (D, H)``, ``bi (H,)`` and
    ``Kh (H, H)``; its ``LSTMCell``, ``OptimizedLSTMCell`` and ``GRUCell``
    are in the module docstring (``rnn_xp.convert.flax``).

    Parameters
    ----------
    cell_or_params : flax.nnx cell or mapping
        An NNX ``SimpleCell``, ``LSTMCell``, ``OptimizedLSTMCell`` or
        ``GRUCell`` (its parameters and activations are read), or
        parameters in NNX's or Linen's layout (arrays or ``nnx.Param``;
        with or without ``"params"``, or under ``"cell"`` as ``nn.RNN`` and
        ``nnx.RNN`` keep them): ``nnx.state(cell)`` or its pure dict,
        ``cell.init(...)`` or ``nn.RNN(cell).init(...)``. Their names and
        shapes tell the cell.
    cell : flax cell, optional
        For parameters: the Linen (or NNX) cell they go with, whose
        ``activation_fn``, ``gate_fn`` and ``residual`` are read.
    nonlinearity : str or callable, optional
        The cell's ``activation_fn``: an rnn_xp activation name, or a JAX
        function (``jax.nn.relu``, ``jax.nn.hard_sigmoid``, ... with JAX's
        parameters). Default: the cell's, else tanh.
    gate_fn : str or callable, optional
        An LSTM's or GRU's ``gate_fn``, as ``nonlinearity``. Default: the
        cell's, else sigmoid.
    residual : bool, optional
        A ``SimpleCell``'s: default the cell's, else False. A residual cell
        becomes ``weight_hh = Kh.T + I``.
    batch_first : bool, optional
        Default True: Flax's ``nn.RNN`` and ``nnx.RNN`` take ``(B, T, D)``.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the parameters'.

    Returns
    -------
    RNN, LSTM or GRU
        ``weight_ih = Ki.T``, ``weight_hh = Kh.T`` (per-gate kernels
        stacked in torch's order, which is Flax's), the biases where Flax
        adds them (see the module docstring). Flax's LSTM carry ``(c, h)``
        is rnn_xp's ``hx = (h0, c0)``.

    Raises
    ------
    ValueError
        Parameters in no Flax cell's layout, a shape that does not match,
        a bias where the cell has none, an activation with no rnn_xp
        equivalent, or an option that disagrees with the cell's.
    TypeError
        Neither a Flax cell nor a mapping (a Linen cell holds no
        parameters: pass its variables with ``cell=``).

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> params = {"params": {"i": {"kernel": np.ones((3, 4)), "bias": np.zeros(4)},
    ...                      "h": {"kernel": np.eye(4)}}}
    >>> rnn = convert.from_flax(params, nonlinearity="relu")
    >>> rnn.weight_ih_l0.shape, rnn.nonlinearity, rnn.batch_first
    ((4, 3), 'relu', True)
    >>> nnx_gru = {"dense_i": {"kernel": np.ones((3, 12)), "bias": np.zeros(12)},
    ...            "dense_h": {"kernel": np.ones((4, 12))}}
    >>> gru = convert.from_flax(nnx_gru)
    >>> type(gru).__name__, gru.linear_before_reset, gru.weight_hh_l0.shape
    ('GRU', True, (12, 4))
    """
    obj = cell_or_params
    check_flag("residual", residual)
    check_bool("batch_first", batch_first)
    kind = _cell_kind(obj)
    if kind is not None:  # a cell object
        if cell is not None:
            raise ValueError("cell= is for parameters; an NNX cell carries its own")
        params = _nnx_cell_params(obj, kind)
        if params is None:
            raise TypeError(f"a Linen {type(obj).__name__} holds no parameters: pass its variables "
                            "(cell.init(...) or nn.RNN(cell).init(...)), with cell= the cell")
        cell = obj
    elif hasattr(obj, "keys") and hasattr(obj, "__getitem__"):
        params = _levels(obj)
        kind = _params_kind(params)
        own = _cell_kind(cell) if cell is not None else kind
        if own is None:
            raise TypeError(f"cell must be a Flax SimpleCell, LSTMCell, OptimizedLSTMCell or GRUCell; "
                            f"got {type(cell).__name__}")
        if own != kind:
            raise ValueError(f"the parameters are a {_NAMES[kind]}'s but cell is a "
                             f"{type(cell).__name__}")
    else:
        raise TypeError("cell_or_params must be a flax.nnx SimpleCell, LSTMCell, OptimizedLSTMCell or "
                        f"GRUCell, or a mapping of its parameters; got {type(obj).__name__}")
    if kind != "simple":
        return _from_flax_gated(kind, params, cell, nonlinearity, gate_fn, residual, batch_first,
                                xp, device, dtype)  # fmt: skip
    if gate_fn is not None:
        raise ValueError("gate_fn is for an LSTM or GRU cell; a SimpleCell has none")
    kernel_i, bias_i, kernel_h = _flax_params(params)
    if cell is not None:
        for name, given, own in (("nonlinearity", nonlinearity, cell.activation_fn),
                                 ("residual", residual, bool(cell.residual))):
            if given is not None and (_flax_activation(given) != _flax_activation(own)
                                      if name == "nonlinearity" else given != own):
                raise ValueError(f"{name}={given!r} disagrees with the cell's {own!r}")
        nonlinearity, residual = cell.activation_fn, bool(cell.residual)
    act = _flax_activation("tanh" if nonlinearity is None else nonlinearity)
    residual = check_bool("residual", False if residual is None else residual)
    weights = {"kernel": kernel_i, "recurrent_kernel": kernel_h, "bias": bias_i}
    rnn = from_transposed([weights], ("kernel", "recurrent_kernel", "bias"), [act], batch_first,
                          xp, device, dtype)
    if residual:  # f(x Ki + b + h Kh + h): the recurrent matrix is Kh + I
        Wh = rnn.params["weight_hh_l0"]
        eye = rnn.xp.eye(rnn.hidden_size, dtype=rnn.dtype, device=rnn.device)
        rnn.params["weight_hh_l0"] = Wh + eye
    return rnn


_NAMES = {"simple": "SimpleCell", "lstm": "LSTMCell (or OptimizedLSTMCell)", "gru": "GRUCell"}


def _cell_kind(obj):
    """``"simple"``, ``"lstm"`` or ``"gru"`` for a Flax cell (NNX or Linen), else ``None``."""
    for cls in type(obj).__mro__:
        if cls.__name__ in _CELLS and cls.__module__.split(".")[0] == "flax":
            return _CELLS[cls.__name__]
    return None


def _nnx_cell_params(cell, kind):
    """An NNX cell's parameters as a mapping of parts, or ``None`` for a Linen cell (which has none)."""
    names = (_LSTM_NNX if hasattr(cell, "ii") else ("dense_i", "dense_h")) if kind == "lstm" else \
        ("dense_i", "dense_h")
    if not all(hasattr(cell, n) for n in names):
        return None
    parts = {}
    for n in names:
        sub = getattr(cell, n)
        parts[n] = {k: getattr(sub, k) for k in ("kernel", "bias") if getattr(sub, k, None) is not None}
    return parts


def _levels(params):
    """The mapping that holds the parts, under ``"params"`` and ``"cell"`` when they are there."""
    p = params
    for key in ("params", "cell"):
        if hasattr(p, "keys") and key in p and not _PART_KEYS & set(p.keys()):
            p = p[key]
    return p


def _params_kind(p):
    """The kind of cell whose parameters ``p`` holds, from the names (and NNX's ``dense_h`` shape)."""
    keys = set(p.keys()) if hasattr(p, "keys") else set()
    if keys >= set(_LSTM_NNX) or keys >= set(_LSTM_LINEN):
        return "lstm"
    if keys >= set(_GRU_LINEN):
        return "gru"
    if {"dense_i", "dense_h"} <= keys:
        h = p["dense_h"]
        kernel = _unwrap(h["kernel"]) if hasattr(h, "keys") and "kernel" in h else None
        if is_array(kernel) and kernel.ndim == 2 and kernel.shape[0] > 0:
            H, cols = kernel.shape
            return {4 * H: "lstm", 3 * H: "gru"}.get(cols, "simple")
    return "simple"  # _flax_params names what is missing


def _flax_params(params):
    """``(Ki, bi, Kh)`` from NNX's or Linen's parameter layout."""
    p = _levels(params)
    if "dense_i" in p and "dense_h" in p:
        i, h = p["dense_i"], p["dense_h"]
    elif "i" in p and "h" in p:
        i, h = p["i"], p["h"]
    else:
        raise ValueError(
            "the parameters must hold NNX's {'dense_i', 'dense_h'} or Linen's {'i', 'h'} "
            f"(optionally under 'params' and 'cell'); got keys {list(p.keys())}"
        )
    names = ("dense_i", "dense_h") if "dense_i" in p else ("i", "h")
    for part, key, need in ((i, names[0], "{'kernel', 'bias'}"), (h, names[1], "{'kernel'}")):
        if not (hasattr(part, "keys") and hasattr(part, "__getitem__")):
            raise ValueError(f"the parameters' {key!r} must be a mapping {need}; got "
                             f"{type(part).__name__}")
    try:
        kernel_i, bias_i, kernel_h = (_unwrap(i["kernel"]), _unwrap(i["bias"]), _unwrap(h["kernel"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the input part needs 'kernel' and 'bias', the recurrent part 'kernel'; "
                         f"missing {exc}") from None
    if "bias" in h:
        raise ValueError("the recurrent part has a bias; Flax's SimpleCell has none there")
    return kernel_i, bias_i, kernel_h


def _from_flax_gated(kind, p, cell, nonlinearity, gate_fn, residual, batch_first, xp, device, dtype):
    """An LSTM or GRU from Flax parameters ``p`` (the level holding the parts) and its cell."""
    if residual is not None:
        raise ValueError("residual is for a SimpleCell; Flax's LSTM and GRU cells have none")
    fns = {}
    for name, given, attr, default in (("nonlinearity", nonlinearity, "activation_fn", "tanh"),
                                       ("gate_fn", gate_fn, "gate_fn", "sigmoid")):
        own = None if cell is None else getattr(cell, attr)
        if given is not None and own is not None and _flax_activation(given) != _flax_activation(own):
            raise ValueError(f"{name}={given!r} disagrees with the cell's {attr} {own!r}")
        fns[name] = _flax_activation(own if own is not None else default if given is None else given)
    act, gate = fns["nonlinearity"], fns["gate_fn"]
    if kind == "lstm":
        W_ih, W_hh, b_ih, b_hh, names = _lstm_arrays(p)
        acts = (gate, act, act)
    else:
        W_ih, W_hh, b_ih, b_hh, names = _gru_arrays(p)
        acts = (gate, act)
    state = {param_name(n, 0, 0): a for n, a in
             (("weight_ih", W_ih), ("weight_hh", W_hh), ("bias_ih", b_ih), ("bias_hh", b_hh))}
    names = {param_name(n, 0, 0): label for n, label in names.items()}
    cls = LSTM if kind == "lstm" else GRU
    return build_gated(cls, state, names, xp=xp, device=device, dtype=dtype, batch_first=batch_first,
                       **activation_options([acts], cls.__name__))


def _arrays(p, names, fields):
    """``{(part, field): array}`` for each part and field, checked to be real arrays; missing ones named."""
    got = {}
    for part in names:
        sub = p[part]
        if not (hasattr(sub, "keys") and hasattr(sub, "__getitem__")):
            raise ValueError(f"the parameters' {part!r} must be a mapping {set(fields[part])}; got "
                             f"{type(sub).__name__}")
        extra = set(sub.keys()) - set(fields[part])
        if extra:
            raise ValueError(f"the parameters' {part!r} hold {sorted(extra)}: a Flax cell has "
                             f"{sorted(fields[part])} there")
        for field in fields[part]:
            if field not in sub:
                raise ValueError(f"the parameters' {part!r} need {sorted(fields[part])}; missing "
                                 f"{field!r}")
            got[part, field] = _unwrap(sub[field])
    check_real_arrays({f"{part}.{field}": a for (part, field), a in got.items()})
    return got


def _need(label, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{label} must have shape {shape_str(shape)}; got {shape_str(a.shape)}")


def _stack(arrays, axis=0):
    """Gate blocks joined along ``axis``, in their own library."""
    return namespace_of(arrays[0]).concat(list(arrays), axis=axis)


def _lstm_arrays(p):
    """``(W_ih, W_hh, b_ih, b_hh, names)`` in torch's layout from an LSTM's NNX or Linen parameters."""
    if "dense_i" in p:  # NNX OptimizedLSTMCell: (D, 4H), (H, 4H) + (4H,)
        got = _arrays(p, ("dense_i", "dense_h"), {"dense_i": ("kernel",), "dense_h": ("kernel", "bias")})
        Ki, Kh, bh = got["dense_i", "kernel"], got["dense_h", "kernel"], got["dense_h", "bias"]
        H = Kh.shape[0]
        _need("dense_i.kernel", Ki, (Ki.shape[0] if Ki.ndim == 2 else "D", 4 * H))
        _need("dense_h.bias", bh, (4 * H,))
        names = {"weight_ih": "dense_i.kernel", "weight_hh": "dense_h.kernel", "bias_hh": "dense_h.bias"}
        return Ki.T, Kh.T, np.zeros(4 * H), bh, names
    inputs = list((_LSTM_NNX if "if_" in p else _LSTM_LINEN)[:4])
    hidden = list(_LSTM_LINEN[4:])
    fields = {**{n: ("kernel",) for n in inputs}, **{n: ("kernel", "bias") for n in hidden}}
    got = _arrays(p, inputs + hidden, fields)
    first = got[inputs[0], "kernel"]
    if first.ndim != 2:
        raise ValueError(f"{inputs[0]}.kernel must have shape (D, H); got {shape_str(first.shape)}")
    D, H = first.shape
    for n in inputs:
        _need(f"{n}.kernel", got[n, "kernel"], (D, H))
    for n in hidden:
        _need(f"{n}.kernel", got[n, "kernel"], (H, H))
        _need(f"{n}.bias", got[n, "bias"], (H,))
    W_ih = _stack([got[n, "kernel"] for n in inputs], axis=1).T  # (4H, D), gates i, f, g, o
    W_hh = _stack([got[n, "kernel"] for n in hidden], axis=1).T
    b_hh = _stack([got[n, "bias"] for n in hidden])
    names = {"weight_ih": "/".join(inputs) + ".kernel", "weight_hh": "/".join(hidden) + ".kernel",
             "bias_hh": "/".join(hidden) + ".bias"}  # fmt: skip
    return W_ih, W_hh, np.zeros(4 * H), b_hh, names


def _gru_arrays(p):
    """``(W_ih, W_hh, b_ih, b_hh, names)`` in torch's layout from a GRU's NNX or Linen parameters."""
    if "dense_i" in p:  # NNX GRUCell: (D, 3H) + (3H,), (H, 3H) without a bias
        got = _arrays(p, ("dense_i", "dense_h"), {"dense_i": ("kernel", "bias"), "dense_h": ("kernel",)})
        Ki, bi, Kh = got["dense_i", "kernel"], got["dense_i", "bias"], got["dense_h", "kernel"]
        H = Kh.shape[0]
        _need("dense_i.kernel", Ki, (Ki.shape[0] if Ki.ndim == 2 else "D", 3 * H))
        _need("dense_i.bias", bi, (3 * H,))
        names = {"weight_ih": "dense_i.kernel", "weight_hh": "dense_h.kernel", "bias_ih": "dense_i.bias"}
        return Ki.T, Kh.T, bi, np.zeros(3 * H), names
    fields = {"ir": ("kernel", "bias"), "iz": ("kernel", "bias"), "in": ("kernel", "bias"),
              "hr": ("kernel",), "hz": ("kernel",), "hn": ("kernel", "bias")}
    got = _arrays(p, _GRU_LINEN, fields)
    first = got["ir", "kernel"]
    if first.ndim != 2:
        raise ValueError(f"ir.kernel must have shape (D, H); got {shape_str(first.shape)}")
    D, H = first.shape
    for n in _GRU_LINEN:
        _need(f"{n}.kernel", got[n, "kernel"], (D if n[0] == "i" else H, H))
        if "bias" in fields[n]:
            _need(f"{n}.bias", got[n, "bias"], (H,))
    W_ih = _stack([got[n, "kernel"] for n in ("ir", "iz", "in")], axis=1).T  # (3H, D): r, z, n
    W_hh = _stack([got[n, "kernel"] for n in ("hr", "hz", "hn")], axis=1).T
    b_ih = _stack([got[n, "bias"] for n in ("ir", "iz", "in")])
    b_hn = got["hn", "bias"]
    zero = namespace_of(b_hn).zeros_like(b_hn)
    names = {"weight_ih": "ir/iz/in.kernel", "weight_hh": "hr/hz/hn.kernel", "bias_ih": "ir/iz/in.bias",
             "bias_hh": "hn.bias"}  # fmt: skip
    return W_ih, W_hh, b_ih, _stack([zero, zero, b_hn]), names


def to_flax(rnn, *, layer=0, reverse=False, layout="linen", optimized=False):
    """One layer and direction as a Flax cell's parameters: ``SimpleCell``, ``LSTMCell`` or ``GRUCell``.

    Parameters
    ----------
    rnn : RNN, LSTM or GRU
    layer : int, optional
    reverse : bool, optional
        The reverse direction of a bidirectional layer.
    layout : {"linen", "nnx"}, optional
        ``"linen"``: ``{"params": {...}}``, the variables of the Linen cell
        (``cell.apply(variables, carry, x)``; under ``{"params": {"cell":
        ...}}`` for ``nn.RNN``): ``SimpleCell``'s ``i``, ``h``; ``LSTMCell``'s
        and ``OptimizedLSTMCell``'s ``ii``, ..., ``ho``; ``GRUCell``'s
        ``ir``, ..., ``hn``. ``"nnx"``: the pure dict of ``nnx.state(cell)``
        for the NNX cell (``nnx.replace_by_pure_dict``).
    optimized : bool, optional
        For an LSTM with ``layout="nnx"``: ``nnx.OptimizedLSTMCell``'s
        ``{"dense_i", "dense_h"}`` rather than ``nnx.LSTMCell``'s per-gate
        parts (Linen's two cells share theirs).

    Returns
    -------
    dict
        Arrays of the layer's library (``rnn.to("jax")`` first for JAX
        arrays), Flax's ``kernel (D, ...)`` being torch's transposes. The
        biases go where Flax adds them: an RNN's ``bias_ih + bias_hh`` into
        the input part, an LSTM's into the recurrent parts, a GRU's
        ``bias_ih + bias_hh`` of the r and z gates and ``bias_ih`` of n into
        the input parts and ``bias_hh`` of n into Linen's ``hn`` (zeros
        without bias). The cell must be made with the matching
        ``activation_fn`` (and ``gate_fn``), an RNN's with ``residual=False``.

    Raises
    ------
    ValueError
        What the Flax cell cannot compute: ``clip``, an RNN's ``leak``, an
        LSTM's ``proj_size``, ``peepholes``, ``input_forget`` or different
        cell input and output activations, a GRU with
        ``linear_before_reset=False``, or, for NNX's ``GRUCell`` (no
        recurrent bias), a GRU whose ``bias_hh`` of n is not zero.

    Examples
    --------
    >>> from rnn_xp import GRU, LSTM, RNN, convert
    >>> p = convert.to_flax(RNN(3, 4, seed=0), layout="nnx")
    >>> p["dense_i"]["kernel"].shape, p["dense_h"]["kernel"].shape
    ((3, 4), (4, 4))
    >>> sorted(convert.to_flax(LSTM(3, 4, seed=0))["params"])
    ['hf', 'hg', 'hi', 'ho', 'if', 'ig', 'ii', 'io']
    >>> sorted(convert.to_flax(GRU(3, 4, seed=0))["params"])
    ['hn', 'hr', 'hz', 'in', 'ir', 'iz']
    >>> convert.to_flax(GRU(3, 4, bias=False), layout="nnx")["dense_i"]["bias"].shape
    (12,)
    """
    if layout not in ("linen", "nnx"):
        raise ValueError(f"layout must be 'linen' or 'nnx'; got {layout!r}")
    check_bool("optimized", optimized)
    if optimized and not isinstance(rnn, LSTM):
        raise ValueError("optimized=True is for an LSTM (nnx.OptimizedLSTMCell's parameters)")
    if isinstance(rnn, (LSTM, GRU)):
        parts = _to_flax_gated(rnn, layer, reverse, layout, optimized)
        return {"params": parts} if layout == "linen" else parts
    Wx, Wh, b = layer_weights(rnn, layer, reverse)
    xp = rnn.xp
    if b is None:
        b = xp.zeros((rnn.hidden_size,), dtype=rnn.dtype, device=rnn.device)
    i = {"kernel": xp.permute_dims(Wx, (1, 0)), "bias": b}
    h = {"kernel": xp.permute_dims(Wh, (1, 0))}
    return {"params": {"i": i, "h": h}} if layout == "linen" else {"dense_i": i, "dense_h": h}


def _to_flax_gated(rnn, layer, reverse, layout, optimized):
    """The parts of an LSTM's or GRU's Flax cell (without Linen's ``"params"`` level)."""
    check_any_layer(rnn, layer, reverse)
    kind = type(rnn).__name__
    refuse_options(rnn, f"a Flax {kind} cell")
    acts = layer_activations(rnn)[1 if reverse else 0]
    if kind == "LSTM" and acts[1] != acts[2]:
        raise ValueError(f"a Flax LSTM cell has one activation_fn for the cell input and the cell "
                         f"output; this LSTM has {acts[1]} and {acts[2]}")
    if kind == "GRU" and not rnn.linear_before_reset:
        raise ValueError("a Flax GRUCell resets after the product (linear_before_reset=True); this "
                         "GRU has linear_before_reset=False")
    W_ih, W_hh, b_ih, b_hh = gated_weights(rnn, layer, reverse)
    xp, H = rnn.xp, rnn.hidden_size
    G = 4 if kind == "LSTM" else 3
    if b_ih is None:
        b_ih = b_hh = xp.zeros((G * H,), dtype=rnn.dtype, device=rnn.device)
    Ki, Kh = xp.permute_dims(W_ih, (1, 0)), xp.permute_dims(W_hh, (1, 0))  # (D, GH), (H, GH)
    if kind == "LSTM":
        b = b_ih + b_hh  # Flax adds its one bias in the recurrent parts
        if layout == "nnx" and optimized:
            return {"dense_i": {"kernel": Ki}, "dense_h": {"kernel": Kh, "bias": b}}
        names = _LSTM_NNX if layout == "nnx" else _LSTM_LINEN
        parts = {n: {"kernel": k} for n, k in zip(names[:4], blocks(Ki, 4, axis=1))}
        for n, k, bias in zip(names[4:], blocks(Kh, 4, axis=1), blocks(b, 4)):
            parts[n] = {"kernel": k, "bias": bias}
        return parts
    b_r, b_z, b_n = blocks(b_ih, 3)
    h_r, h_z, h_n = blocks(b_hh, 3)
    bias_i = [b_r + h_r, b_z + h_z, b_n]  # r and z add both biases; n's recurrent one is inside r * (.)
    if layout == "nnx":
        if not all_zero(h_n):
            raise ValueError(f"NNX's GRUCell has no recurrent bias (its dense_h has none) but this GRU's "
                             f"bias_hh_l{layer}{'_reverse' if reverse else ''} holds a nonzero n block; "
                             "use layout='linen', whose hn has one")
        return {"dense_i": {"kernel": Ki, "bias": xp.concat(bias_i, axis=0)}, "dense_h": {"kernel": Kh}}
    ki, kh = blocks(Ki, 3, axis=1), blocks(Kh, 3, axis=1)
    parts = {n: {"kernel": k, "bias": b} for n, k, b in zip(("ir", "iz", "in"), ki, bias_i)}
    parts.update({"hr": {"kernel": kh[0]}, "hz": {"kernel": kh[1]}, "hn": {"kernel": kh[2], "bias": h_n}})
    return parts
