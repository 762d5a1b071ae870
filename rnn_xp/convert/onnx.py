"""The ONNX ``RNN``, ``LSTM`` and ``GRU`` operators: their inputs, their attributes, their ``Y`` layout.

ONNX keeps torch's orientation and both biases, one row per direction, with
``G`` gate blocks of ``H`` rows (``G`` = 1 for ``RNN``, 4 for ``LSTM``, 3
for ``GRU``)::

    W [dirs, G*H, D]   R [dirs, G*H, H]   B [dirs, 2*G*H] = [Wb, Rb]   P [dirs, 3H] (LSTM)

but its gate blocks come in other orders than torch's (which rnn_xp keeps):

==========  ================  ================  ==========================
operator    ONNX blocks       torch / rnn_xp    peepholes (LSTM)
==========  ================  ================  ==========================
``LSTM``    ``i, o, f, c``    ``i, f, g, o``    ONNX ``P``: ``i, o, f``; rnn_xp
                                                ``peephole_l{k}``: ``p_i, p_f, p_o``
``GRU``     ``z, r, h``       ``r, z, n``
==========  ================  ================  ==========================

``Wb`` goes to ``bias_ih`` and ``Rb`` to ``bias_hh``, each reordered the
same way. The attributes name the activations (``"Tanh"``, ``"Sigmoid"``,
...; one per direction for ``RNN``, ``f, g, h`` per direction for ``LSTM``,
``f, g`` per direction for ``GRU``), their ``activation_alpha`` /
``activation_beta``, ``clip``, the ``direction``, the ``layout``, and
``input_forget`` (``LSTM``) or ``linear_before_reset`` (``GRU``). Whole
model files are read and written by ``onnx_read`` and ``onnx_write``.
"""

from __future__ import annotations

import numbers

from .._activations import ONNX_NAMES, PARAMETERS, check_activation
from .._checks import check_real_arrays, shape_str
from .._compat import is_array, namespace_of
from .._params import direction_suffixes
from ..layer import GRU, LSTM, RNN
from ..layer.base import gate_options
from ._common import build_gated, build_layer, check_layer, check_rnn, param_name

#: The recurrent operators and their gate blocks.
OPERATORS = {"RNN": 1, "GRU": 3, "LSTM": 4}
#: Block k of torch's (rnn_xp's) order is block ``TORCH_FROM_ONNX[op][k]`` of ONNX's.
TORCH_FROM_ONNX = {"RNN": (0,), "GRU": (1, 0, 2), "LSTM": (0, 2, 3, 1)}
#: Block k of ONNX's order is block ``ONNX_FROM_TORCH[op][k]`` of torch's.
ONNX_FROM_TORCH = {"RNN": (0,), "GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2)}
#: ONNX's ``P`` (i, o, f) and rnn_xp's peepholes (p_i, p_f, p_o): the same swap both ways.
PEEPHOLE_ORDER = (0, 2, 1)
#: The ONNX activations of a gated node, per direction, and their defaults.
GATE_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh")}
_LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}


def reorder(a, order):
    """``a``'s blocks of rows (axis 0, ``len(order)`` equal blocks) in ``order``, in ``a``'s library.

    ``order`` is ``TORCH_FROM_ONNX[op]`` (ONNX's rows to torch's),
    ``ONNX_FROM_TORCH[op]`` (back) or ``PEEPHOLE_ORDER``.
    """
    if tuple(order) == tuple(range(len(order))):
        return a
    xp = namespace_of(a)
    n = a.shape[0] // len(order)
    return xp.concat([a[k * n:(k + 1) * n, ...] for k in order], axis=0)


def operator_of(layer):
    """``"RNN"``, ``"LSTM"`` or ``"GRU"``: the ONNX operator of an rnn_xp layer, else ``TypeError``."""
    for op, cls in _LAYERS.items():
        if isinstance(layer, cls):
            return op
    raise TypeError(f"rnn must be an rnn_xp.RNN, LSTM or GRU; got {type(layer).__name__}")


def _check_index(rnn, layer):
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < rnn.num_layers:
        raise ValueError(f"layer must be an int in [0, {rnn.num_layers - 1}]; got {layer!r}")


def to_onnx(rnn, *, layer=0):
    """One layer as the inputs ``W``, ``R``, ``B`` (and an LSTM's ``P``) of its ONNX operator.

    An :class:`~rnn_xp.RNN` gives the ``RNN`` operator's, an
    :class:`~rnn_xp.LSTM` the ``LSTM``'s, a :class:`~rnn_xp.GRU` the
    ``GRU``'s, with the gate blocks in ONNX's order (see the module
    docstring).

    Returns
    -------
    dict
        ``{"W": [dirs, G*H, D], "R": [dirs, G*H, H], "B": [dirs, 2*G*H]}``
        in the layer's library (``G`` = 1, 4, 3); ``B`` is ``[bias_ih,
        bias_hh]`` per direction and absent for a layer without bias; an
        LSTM with peepholes adds ``"P": [dirs, 3H]`` (ONNX's order ``i, o,
        f``). :func:`onnx_attributes` gives the node's attributes,
        :func:`to_onnx_model` a whole model.

    Raises
    ------
    TypeError
        ``rnn`` is not an ``RNN``, ``LSTM`` or ``GRU``.
    ValueError
        ``layer`` is not one of its layers, or an LSTM has a projection
        (``proj_size > 0``), which the ONNX operator has not.

    Examples
    --------
    >>> from rnn_xp import GRU, LSTM, RNN, convert
    >>> w = convert.to_onnx(RNN(3, 4, bidirectional=True, seed=0))
    >>> {k: v.shape for k, v in w.items()}
    {'W': (2, 4, 3), 'R': (2, 4, 4), 'B': (2, 8)}
    >>> {k: v.shape for k, v in convert.to_onnx(LSTM(3, 4, peepholes=True, seed=0)).items()}
    {'W': (1, 16, 3), 'R': (1, 16, 4), 'B': (1, 32), 'P': (1, 12)}
    >>> gru = GRU(3, 4, seed=0)
    >>> W = convert.to_onnx(gru)["W"]   # ONNX's z, r, h: torch's r, z, n reordered
    >>> bool((W[0, :4] == gru.weight_ih_l0[4:8]).all()), bool((W[0, 4:8] == gru.weight_ih_l0[:4]).all())
    (True, True)
    """
    op = operator_of(rnn)
    if op == "RNN":
        return _rnn_to_onnx(rnn, layer)
    _check_index(rnn, layer)
    _check_no_projection(rnn)
    xp, p = rnn.xp, rnn.params
    sfx = direction_suffixes(rnn.num_directions)
    order = ONNX_FROM_TORCH[op]
    get = lambda kind, s: p[f"{kind}_l{layer}{s}"]  # noqa: E731
    out = {
        "W": xp.stack([reorder(get("weight_ih", s), order) for s in sfx], axis=0),
        "R": xp.stack([reorder(get("weight_hh", s), order) for s in sfx], axis=0),
    }
    if rnn.bias:
        out["B"] = xp.stack([xp.concat([reorder(get("bias_ih", s), order),
                                        reorder(get("bias_hh", s), order)]) for s in sfx], axis=0)
    if op == "LSTM" and rnn.peepholes:
        out["P"] = xp.stack([reorder(get("peephole", s), PEEPHOLE_ORDER) for s in sfx], axis=0)
    return out


def _check_no_projection(rnn):
    if isinstance(rnn, LSTM) and rnn.proj_size:
        raise ValueError(f"the ONNX LSTM operator has no projection; this layer has "
                         f"proj_size={rnn.proj_size}")


def _rnn_to_onnx(rnn, layer):
    check_layer(rnn, layer)
    xp, p = rnn.xp, rnn.params
    sfx = direction_suffixes(rnn.num_directions)
    out = {
        "W": xp.stack([p[f"weight_ih_l{layer}{s}"] for s in sfx], axis=0),
        "R": xp.stack([p[f"weight_hh_l{layer}{s}"] for s in sfx], axis=0),
    }
    if rnn.bias:
        out["B"] = xp.stack(
            [xp.concat([p[f"bias_ih_l{layer}{s}"], p[f"bias_hh_l{layer}{s}"]]) for s in sfx],
            axis=0,
        )
    return out


def onnx_attributes(rnn):
    """The attributes of the ONNX node (``RNN``, ``LSTM`` or ``GRU``) that match the layer (one layer of it).

    For an ``RNN``: ``activation_alpha`` and ``activation_beta`` are written
    when an activation takes them: the values of the activations that take
    the parameter, in direction order (how the ONNX specification and
    onnxruntime consume them), padded with 0.0 to one entry per direction
    (which ``onnx.reference`` requires). They are always written, because
    onnxruntime's RNN kernel does not fill in ONNX's defaults. ``clip`` is
    written when the layer clips.

    For an ``LSTM`` or a ``GRU``: ``activations`` lists ``f, g, h`` (LSTM)
    or ``f, g`` (GRU) per direction, forward first; ``activation_alpha`` /
    ``activation_beta`` the values of the activations that take the
    parameter, in that order (not padded: ``onnx.reference`` reads no
    activations of these operators), always written because onnxruntime
    fills in 0 for some (ThresholdedRelu, Affine, ScaledTanh); ``clip``
    when the layer clips; ``input_forget=1`` for an LSTM that couples its
    forget gate; ``linear_before_reset`` always for a GRU (ONNX's default,
    0, is not torch's).

    Examples
    --------
    >>> from rnn_xp import GRU, LSTM, RNN, convert
    >>> convert.onnx_attributes(RNN(3, 4, nonlinearity="relu", bidirectional=True))
    {'hidden_size': 4, 'direction': 'bidirectional', 'activations': ['Relu', 'Relu'], 'layout': 0}
    >>> convert.onnx_attributes(RNN(3, 4, nonlinearity="leaky_relu", clip=3.0, reverse=True))
    {'hidden_size': 4, 'direction': 'reverse', 'activations': ['LeakyRelu'], 'layout': 0, 'activation_alpha': [0.01], 'clip': 3.0}
    >>> convert.onnx_attributes(GRU(3, 4))["linear_before_reset"]   # ONNX's default is 0
    1
    >>> attrs = convert.onnx_attributes(LSTM(3, 4, activations=("hard_sigmoid", "tanh", "tanh"),
    ...                                      input_forget=True))
    >>> attrs["activations"], attrs["activation_alpha"], attrs["activation_beta"], attrs["input_forget"]
    (['HardSigmoid', 'Tanh', 'Tanh'], [0.2], [0.5], 1)
    """
    op = operator_of(rnn)
    if op != "RNN":
        return _gated_attributes(rnn, op)
    check_rnn(rnn)
    if rnn.leak != 1.0:
        raise ValueError(f"the ONNX RNN operator has no leak; this layer has leak={rnn.leak}")
    direction = "bidirectional" if rnn.bidirectional else "reverse" if rnn.reverse else "forward"
    attrs = {
        "hidden_size": rnn.hidden_size,
        "direction": direction,
        "activations": [ONNX_NAMES[name] for name, _, _ in rnn.activations],
        "layout": 1 if rnn.batch_first else 0,
    }
    for i, key in ((1, "activation_alpha"), (2, "activation_beta")):
        values = [act[i] for act in rnn.activations if act[i] is not None]  # the takers, in order
        if values:
            attrs[key] = values + [0.0] * (rnn.num_directions - len(values))
    if rnn.clip is not None:
        attrs["clip"] = rnn.clip
    return attrs


def gate_activations_of(rnn, op):
    """Per direction, the ``(name, alpha, beta)`` of each activation of a gated layer, defaults filled in."""
    n = len(GATE_ACTIVATIONS[op])
    defaults = tuple(FROM_ONNX_NAMES[a] for a in GATE_ACTIVATIONS[op])
    names, alphas, betas = gate_options(rnn.activations, rnn.activation_alpha, rnn.activation_beta,
                                        rnn.num_directions, n)
    return [tuple(check_activation(*t) for t in zip(nm or defaults, al or (None,) * n, be or (None,) * n))
            for nm, al, be in zip(names, alphas, betas)]


def _gated_attributes(rnn, op):
    _check_no_projection(rnn)
    direction = "bidirectional" if rnn.bidirectional else "reverse" if rnn.reverse else "forward"
    acts = [a for per_direction in gate_activations_of(rnn, op) for a in per_direction]
    attrs = {
        "hidden_size": rnn.hidden_size,
        "direction": direction,
        "activations": [ONNX_NAMES[name] for name, _, _ in acts],
        "layout": 1 if rnn.batch_first else 0,
    }
    for i, key in ((1, "activation_alpha"), (2, "activation_beta")):
        values = [act[i] for act in acts if act[i] is not None]  # the takers, in order
        if values:
            attrs[key] = values
    if rnn.clip is not None:
        attrs["clip"] = rnn.clip
    if op == "LSTM" and rnn.input_forget:
        attrs["input_forget"] = 1
    if op == "GRU":
        attrs["linear_before_reset"] = int(rnn.linear_before_reset)
    return attrs


def from_onnx(W, R, B=None, *, op_type="RNN", P=None, direction=None, activations=None,
              activation_alpha=None, activation_beta=None, clip=None, layout=0, input_forget=0,
              linear_before_reset=0, xp=None, device=None, dtype=None):
    """A one-layer ``RNN``, ``LSTM`` or ``GRU`` from an ONNX node's weights and attributes.

    Parameters
    ----------
    W, R, B : array
        ``W [dirs, G*H, D]``, ``R [dirs, G*H, H]`` and optionally ``B [dirs,
        2*G*H]``, with ``G`` = 1 (``RNN``), 4 (``LSTM``, gates ``i, o, f,
        c``) or 3 (``GRU``, gates ``z, r, h``): ONNX's orders, which the
        layer holds in torch's (``i, f, g, o`` and ``r, z, n``).
    op_type : {"RNN", "LSTM", "GRU"}, optional
        The node's operator, which sets the layer's class; default ``"RNN"``.
    P : array, optional
        An ``LSTM``'s peepholes ``[dirs, 3H]`` (ONNX's order ``i, o, f``):
        a layer with ``peepholes=True``.
    direction : {"forward", "reverse", "bidirectional"}, optional
        Default: ``"forward"`` for one direction, ``"bidirectional"`` for two.
        ``"reverse"`` gives a layer with ``reverse=True``.
    activations : list of str, optional
        ONNX names (``"Tanh"``, ``"Relu"``, ``"Sigmoid"``, ``"Affine"``,
        ``"LeakyRelu"``, ``"ThresholdedRelu"``, ``"ScaledTanh"``,
        ``"HardSigmoid"``, ``"Elu"``, ``"Softsign"``, ``"Softplus"``). For an
        ``RNN`` one per direction, default Tanh; two names for one
        direction (ONNX's old default ``["Tanh", "Tanh"]``) use the first,
        as onnxruntime does. For an ``LSTM`` ``f, g, h`` per direction
        (default ``["Sigmoid", "Tanh", "Tanh"]`` each), for a ``GRU`` ``f,
        g`` per direction (default ``["Sigmoid", "Tanh"]`` each), forward
        first, exactly that many (onnxruntime refuses other counts).
    activation_alpha, activation_beta : list of float, optional
        The node's attributes, consumed in order by the activations that take
        the parameter (as the ONNX specification says and onnxruntime does;
        values past those are ignored, as long as there are at most one per
        activation). Missing values take ONNX's defaults.
    clip : float, optional
        The node's ``clip``: every gate's pre-activation is clipped to
        ``[-clip, clip]`` (an LSTM's cell state is not, as in onnxruntime).
    layout : {0, 1}, optional
        The node's ``layout``: 1 means ``X [B, T, D]`` (``batch_first``).
    input_forget : {0, 1}, optional
        An ``LSTM``'s ``input_forget``: 1 couples the forget gate, ``f = 1 - i``.
    linear_before_reset : {0, 1}, optional
        A ``GRU``'s ``linear_before_reset``; ONNX's default 0 resets ``h``
        before the product (``(r * h) @ R_h.T + Rb_h``), 1 after it, as
        torch does (``r * (h @ R_h.T + Rb_h)``).
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' dtype.

    Returns
    -------
    RNN, LSTM or GRU

    Raises
    ------
    ValueError
        A shape that does not fit ``W`` or the operator, an unknown
        ``op_type``, an attribute the operator has not (``P`` or
        ``input_forget`` without ``LSTM``, ``linear_before_reset`` without
        ``GRU``) or a value it does not take.
    TypeError
        A weight that is not a real floating array, ``activations`` that is
        not a list.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> W, R = np.ones((2, 4, 3)), np.zeros((2, 4, 4))
    >>> rnn = convert.from_onnx(W, R, activations=["LeakyRelu", "Tanh"], activation_alpha=[0.1, 0.0])
    >>> rnn.activations
    (('leaky_relu', 0.1, None), ('tanh', None, None))
    >>> W, R, P = np.zeros((1, 16, 3)), np.zeros((1, 16, 4)), np.arange(12.0).reshape(1, 12)
    >>> lstm = convert.from_onnx(W, R, op_type="LSTM", P=P, input_forget=1, clip=3.0)
    >>> type(lstm).__name__, lstm.input_forget, lstm.clip
    ('LSTM', True, 3.0)
    >>> lstm.peephole_l0.reshape(3, 4)[:, 0]   # ONNX's i, o, f as rnn_xp's p_i, p_f, p_o
    array([0., 8., 4.])
    >>> gru = convert.from_onnx(np.zeros((1, 12, 3)), np.zeros((1, 12, 4)), op_type="GRU")
    >>> gru.linear_before_reset   # ONNX's default, 0
    False
    """
    if op_type not in OPERATORS:
        raise ValueError(f"op_type must be one of {list(OPERATORS)}; got {op_type!r}")
    for name, value, owner in (("P", P, "LSTM"), ("input_forget", input_forget, "LSTM"),
                               ("linear_before_reset", linear_before_reset, "GRU")):
        if op_type != owner and not (value is None or (name != "P" and _flag(name, value) == 0)):
            raise ValueError(f"{name} is an input or attribute of the ONNX {owner} operator; "
                             f"this is op_type={op_type!r}")
    if op_type != "RNN":
        return _gated_from_onnx(op_type, W, R, B, P, direction, activations, activation_alpha,
                                activation_beta, clip, layout, input_forget, linear_before_reset,
                                xp, device, dtype)
    check_real_arrays({"W": W, "R": R} if B is None else {"W": W, "R": R, "B": B})
    for name, arr, dims in (("W", W, "[dirs, H, D]"), ("R", R, "[dirs, H, H]"),
                            ("B", B, "[dirs, 2H]")):
        ndim = dims.count(",") + 1
        if arr is not None and arr.ndim != ndim:
            raise ValueError(f"{name} must be a {ndim}-D array {dims}; "
                             f"got shape {shape_str(arr.shape)}")
    dirs, H, D = W.shape
    need = {"W": (dirs, H, D), "R": (dirs, H, H), "B": (dirs, 2 * H)}
    for name, arr in (("R", R), ("B", B)):
        if arr is not None and tuple(arr.shape) != need[name]:
            raise ValueError(
                f"{name} must have shape {shape_str(need[name])} to match W [dirs, H, D] = "
                f"{shape_str(W.shape)}; got {shape_str(arr.shape)}"
            )
    direction = _direction(direction, W)
    activation_names, alphas, betas = read_activations(activations, activation_alpha, activation_beta, dirs)
    if isinstance(layout, bool) or not isinstance(layout, int) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    state, names = {}, {}
    for d in range(dirs):  # each direction's rows, copied once into the layer
        parts = [("weight_ih", W[d, ...], "W"), ("weight_hh", R[d, ...], "R")]
        if B is not None:
            parts += [("bias_ih", B[d, :H], "B"), ("bias_hh", B[d, H:], "B")]
        for kind, array, label in parts:
            state[param_name(kind, 0, d)], names[param_name(kind, 0, d)] = array, label
    return build_layer(state, names, nonlinearity=activation_names, batch_first=layout == 1,
                       activation_alpha=alphas, activation_beta=betas, clip=clip,
                       reverse=direction == "reverse", xp=xp, device=device, dtype=dtype)


def _direction(direction, W):
    """The node's ``direction`` (``None``: what W's directions say), checked against ``W`` ``[dirs, ., .]``."""
    dirs = W.shape[0]
    if dirs not in (1, 2):
        raise ValueError(f"W must have 1 or 2 directions on axis 0; got shape {shape_str(W.shape)}")
    if direction is None:
        direction = "forward" if dirs == 1 else "bidirectional"
    if direction not in DIRECTIONS or DIRECTIONS[direction] != dirs:
        raise ValueError(f"direction={direction!r} does not fit W with {dirs} direction(s)")
    return direction


def _flag(name, value):
    """An ONNX int flag: 0, 1 (or False, True), as an int; else ``ValueError``."""
    if not isinstance(value, numbers.Integral) or value not in (0, 1):
        raise ValueError(f"{name} must be 0 or 1 (the node's attribute); got {value!r}")
    return int(value)


def _gated_from_onnx(op, W, R, B, P, direction, activations, alpha, beta, clip, layout,
                     input_forget, linear_before_reset, xp, device, dtype):
    G = OPERATORS[op]
    given = {"W": W, "R": R, "B": B, "P": P}
    check_real_arrays({k: v for k, v in given.items() if v is not None})
    dims = {"W": f"[dirs, {G}*H, D]", "R": f"[dirs, {G}*H, H]", "B": f"[dirs, {2 * G}*H]",
            "P": "[dirs, 3*H]"}
    for name, arr in given.items():
        ndim = dims[name].count(",") + 1
        if arr is not None and arr.ndim != ndim:
            raise ValueError(f"{name} of an ONNX {op} node must be a {ndim}-D array {dims[name]}; "
                             f"got shape {shape_str(arr.shape)}")
    dirs, rows, D = W.shape
    if rows % G or rows == 0:
        raise ValueError(f"W of an ONNX {op} node must have shape {dims['W']}, its {G} gate blocks "
                         f"in ONNX's order; got shape {shape_str(W.shape)}, whose {rows} rows are not "
                         f"{G} blocks")
    H = rows // G
    need = {"R": (dirs, G * H, H), "B": (dirs, 2 * G * H), "P": (dirs, 3 * H)}
    for name in ("R", "B", "P"):
        arr = given[name]
        if arr is not None and tuple(arr.shape) != need[name]:
            raise ValueError(
                f"{name} must have shape {shape_str(need[name])} to match W {dims['W']} = "
                f"{shape_str(W.shape)}; got {shape_str(arr.shape)}"
            )
    direction = _direction(direction, W)
    acts = read_gate_activations(op, activations, alpha, beta, dirs)
    if isinstance(layout, bool) or not isinstance(layout, int) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    options = {"input_forget": bool(_flag("input_forget", input_forget))} if op == "LSTM" else {
        "linear_before_reset": bool(_flag("linear_before_reset", linear_before_reset))}
    state, names = gated_state(op, 0, dirs, H, W, R, B, P)
    return build_gated(_LAYERS[op], state, names, batch_first=layout == 1, clip=clip,
                       reverse=direction == "reverse", xp=xp, device=device, dtype=dtype,
                       **acts, **options)


def gated_state(op, k, dirs, H, W, R, B, P, label=""):
    """Layer ``k``'s parameters under torch's names and orders from a node's ``W``, ``R``, ``B``, ``P``.

    Returns ``(state, names)``: the arrays (reordered copies in the
    weights' library) and what messages call each (``"W"``, ``"B of node
    'lstm' (#3, LSTM)"`` with ``label``).
    """
    G = OPERATORS[op]
    order = TORCH_FROM_ONNX[op]
    state, names = {}, {}
    for d in range(dirs):
        parts = [("weight_ih", W[d, ...], "W", order), ("weight_hh", R[d, ...], "R", order)]
        if B is not None:
            parts += [("bias_ih", B[d, :G * H], "B", order), ("bias_hh", B[d, G * H:], "B", order)]
        if P is not None:
            parts.append(("peephole", P[d, ...], "P", PEEPHOLE_ORDER))
        for kind, array, key, blocks in parts:
            state[param_name(kind, k, d)] = reorder(array, blocks)
            names[param_name(kind, k, d)] = key + label
    return state, names


def read_gate_activations(op, activations, alpha, beta, dirs):
    """An LSTM's or GRU's ``activations``, ``activation_alpha``, ``activation_beta`` as the layer takes them.

    The ONNX lists (``f, g[, h]`` per direction, forward first; the values
    consumed in order by the activations that take them) become a dict of
    the layer's keywords: ``None`` for the defaults, one tuple of rnn_xp
    names (or values) when every direction has the same, else one tuple
    per direction.
    """
    defaults = GATE_ACTIVATIONS[op]
    n = len(defaults)
    if isinstance(activations, str) or (activations is not None
                                        and not isinstance(activations, (list, tuple))):
        got = f"the string {activations!r}" if isinstance(activations, str) else type(activations).__name__
        raise TypeError(f"activations must be a list of names, {n} per direction; got {got}")
    activations = list(defaults) * dirs if activations is None else list(activations)
    if len(activations) != n * dirs or any(a not in FROM_ONNX_NAMES for a in activations):
        raise ValueError(
            f"activations of an {op} node must be {n * dirs} names from {list(FROM_ONNX_NAMES)}: "
            f"{', '.join('fgh'[:n])} for each of its {dirs} direction(s), forward first; got {activations}"
        )
    names = [FROM_ONNX_NAMES[a] for a in activations]
    values = {}
    for key, given, slot in (("activation_alpha", alpha, 0), ("activation_beta", beta, 1)):
        takes = [PARAMETERS[nm][slot] is not None for nm in names]
        given = [] if given is None else given
        if isinstance(given, str) or not hasattr(given, "__len__"):
            raise TypeError(f"{key} must be a list of floats; got {type(given).__name__}")
        given = [float(v) for v in given]
        if len(given) > n * dirs:
            raise ValueError(f"{key} has {len(given)} values for the {n * dirs} activations "
                             f"{activations}; at most one per activation")
        it = iter(given)  # consumed in order by the activations that take it
        values[key] = [next(it, None) if t else None for t in takes]
    rnn_defaults = tuple(FROM_ONNX_NAMES[a] for a in defaults)
    out = {}
    for key, flat, default in (("activations", names, rnn_defaults),
                               ("activation_alpha", values["activation_alpha"], (None,) * n),
                               ("activation_beta", values["activation_beta"], (None,) * n)):
        per = [tuple(flat[d * n:(d + 1) * n]) for d in range(dirs)]
        out[key] = (None if all(p == default for p in per) else per[0] if len(set(per)) == 1
                    else tuple(per))
    return out


DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
FROM_ONNX_NAMES = {onnx: name for name, onnx in ONNX_NAMES.items()}


def read_activations(activations, alpha, beta, dirs):
    """rnn_xp names and per-direction ``alpha``/``beta`` lists (``None``: the default)."""
    if isinstance(activations, str):
        raise TypeError(
            f"activations must be a list of names, one per direction; got the string {activations!r}"
        )
    if activations is not None and not isinstance(activations, (list, tuple)):
        raise TypeError(
            f"activations must be a list of names, one per direction; got {type(activations).__name__}"
        )
    activations = ["Tanh"] * dirs if activations is None else list(activations)
    if dirs == 1 and len(activations) == 2:
        activations = activations[:1]  # ONNX's old default ["Tanh", "Tanh"]; onnxruntime takes the first
    if len(activations) != dirs or any(a not in FROM_ONNX_NAMES for a in activations):
        raise ValueError(
            f"activations must be {dirs} name(s) from {list(FROM_ONNX_NAMES)}, one per "
            f"direction; got {activations}"
        )
    names = [FROM_ONNX_NAMES[a] for a in activations]
    per_direction = []
    for key, values, slot in (("activation_alpha", alpha, 0), ("activation_beta", beta, 1)):
        takes = [PARAMETERS[n][slot] is not None for n in names]
        if values is None:
            values = []
        if isinstance(values, str) or not hasattr(values, "__len__"):
            raise TypeError(f"{key} must be a list of floats; got {type(values).__name__}")
        values = [float(v) for v in values]
        if len(values) > max(dirs, sum(takes)):
            raise ValueError(
                f"{key} has {len(values)} values for activations {activations}; "
                f"at most one per direction ({dirs})"
            )
        it = iter(values)  # consumed in order by the activations that take it
        per_direction.append([next(it, None) if t else None for t in takes])
    return tuple(names), tuple(per_direction[0]), tuple(per_direction[1])


def onnx_y_to_output(Y):
    """ONNX's ``Y [T, dirs, B, H]`` as rnn_xp's (torch's) ``output (T, B, dirs * H)``.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> convert.onnx_y_to_output(np.zeros((5, 2, 3, 4))).shape
    (5, 3, 8)
    """
    if not is_array(Y) or Y.ndim != 4:
        got = shape_str(Y.shape) if is_array(Y) else type(Y).__name__
        raise ValueError(f"Y must have shape [T, dirs, B, H]; got {got}")
    xp = namespace_of(Y)
    T, dirs, B, H = Y.shape
    return xp.reshape(xp.permute_dims(Y, (0, 2, 1, 3)), (T, B, dirs * H))


def output_to_onnx_y(output, num_directions):
    """rnn_xp's ``output (T, B, dirs * H)`` in ONNX's ``Y [T, dirs, B, H]`` layout.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> convert.output_to_onnx_y(np.zeros((5, 3, 8)), 2).shape
    (5, 2, 3, 4)
    """
    if num_directions not in (1, 2):
        raise ValueError(f"num_directions must be 1 or 2; got {num_directions!r}")
    if not is_array(output) or output.ndim != 3 or output.shape[-1] % num_directions:
        got = shape_str(output.shape) if is_array(output) else type(output).__name__
        raise ValueError(f"output must have shape (T, B, dirs * H); got {got}")
    xp = namespace_of(output)
    T, B, DH = output.shape
    Y = xp.reshape(output, (T, B, num_directions, DH // num_directions))
    return xp.permute_dims(Y, (0, 2, 1, 3))
