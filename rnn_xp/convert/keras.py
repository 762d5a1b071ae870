"""Keras 3's ``SimpleRNN``, ``LSTM``, ``GRU`` and ``Bidirectional``: weights, configuration, merge modes.

Keras keeps the transposes of torch's matrices, ``kernel (D, G * H)`` and
``recurrent_kernel (H, G * H)`` for ``G`` gate blocks, and its own biases.
A ``SimpleRNN`` ``(H,)`` and an ``LSTM`` ``(4H,)`` (gates i, f, c, o:
torch's i, f, g, o) have one, read into ``bias_ih`` with ``bias_hh = 0``
and written back as their sum. A ``GRU`` (gates z, r, h: torch's r, z, n
with the first two swapped) has two rows ``(2, 3H)``, ``bias_ih`` and
``bias_hh``, with ``reset_after=True`` (rnn_xp's ``linear_before_reset``),
and one ``(3H,)`` with ``reset_after=False``. Keras's
``recurrent_activation`` is the gates' activation (rnn_xp's first, ``f``),
its ``activation`` the candidate's (``g``) and an LSTM's cell output's (``h``).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_mask, check_real_arrays, shape_str
from .._compat import device as _device_of
from .._compat import is_array, namespace_of
from ..layer import GRU, LSTM
from ._common import check_flag, check_layer, check_rnn, from_transposed, layer_weights, param_name
from ._gated import (
    activation_options,
    build_gated,
    check_any_layer,
    check_columns,
    gated_weights,
    layer_activations,
    refuse_options,
    swap_first_blocks,
    type_name,
)

# Keras activation name -> (rnn_xp name, alpha, beta): the same function.
_KERAS_ACTIVATIONS = {
    "tanh": ("tanh", None, None),
    "relu": ("relu", None, None),
    "sigmoid": ("sigmoid", None, None),
    "softsign": ("softsign", None, None),
    "softplus": ("softplus", None, None),
    "elu": ("elu", 1.0, None),
    "linear": ("affine", 1.0, 0.0),
    "hard_sigmoid": ("hard_sigmoid", 1.0 / 6.0, 0.5),  # Keras 3: relu6(x + 3) / 6
    "leaky_relu": ("leaky_relu", 0.2, None),  # Keras 3's default negative_slope
}

# A Keras cell class -> the layer it makes; the gate blocks of each layer.
_CELLS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
_GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
_RUNS = ("rnn_xp runs SimpleRNN, LSTM and GRU (and keras.layers.RNN of one of their cells), alone or "
         "in a Bidirectional")


def _keras_activation(name, label="nonlinearity", layer=None):
    """``(name, alpha, beta)`` of a Keras activation name; ``layer`` names the layer it came from."""
    if not isinstance(name, str) or name not in _KERAS_ACTIVATIONS:
        if layer is not None:
            raise ValueError(f"the Keras {layer}'s {label} {name!r} has no rnn_xp equivalent; rnn_xp "
                             f"reads the Keras activations {list(_KERAS_ACTIVATIONS)}")
        raise ValueError(
            f"{label} must be one of {list(_KERAS_ACTIVATIONS)}; got {name!r} "
            "(Keras's activation names)"
        )
    return _KERAS_ACTIVATIONS[name]


def _keras_name(act):
    """The Keras name of rnn_xp's ``(name, alpha, beta)``, or ``None``."""
    for keras_name, ours in _KERAS_ACTIVATIONS.items():
        if ours[0] == act[0] and all(
                (a is None) == (b is None) and (a is None or abs(a - b) < 1e-7)
                for a, b in zip(ours[1:], act[1:])):  # fmt: skip
            return keras_name
    return None


def to_keras(rnn, *, layer=0, reverse=False):
    """One layer and direction as the weights of a Keras ``SimpleRNN``, ``LSTM`` or ``GRU``.

    Parameters
    ----------
    rnn : RNN, LSTM or GRU
    layer : int, optional
        Which layer.
    reverse : bool, optional
        The reverse direction of a bidirectional layer (the backward layer of
        a Keras ``Bidirectional`` wrapper).

    Returns
    -------
    list of array
        The order of ``get_weights()``: ``[kernel, recurrent_kernel, bias]``
        (no ``bias`` when ``rnn.bias`` is False). An ``RNN`` gives
        ``(D, H)``, ``(H, H)``, ``(H,)``; an ``LSTM`` ``(D, 4H)``, ``(H,
        4H)``, ``(4H,)``; a ``GRU`` ``(D, 3H)``, ``(H, 3H)`` in Keras's gate
        order z, r, h and a bias ``(2, 3H)`` (its rows ``bias_ih`` and
        ``bias_hh``: ``reset_after=True``) or ``(3H,)`` (their sum, with
        ``linear_before_reset=False``: ``reset_after=False``).
        :func:`keras_config` gives the layer's arguments that go with them (a
        layer with ``reverse=True`` is a ``go_backwards=True`` one).

    Raises
    ------
    ValueError
        For an ``LSTM`` or ``GRU``, what a Keras layer cannot compute (see
        :func:`keras_config`).

    Examples
    --------
    >>> from rnn_xp import GRU, RNN, convert
    >>> [w.shape for w in convert.to_keras(RNN(3, 4, seed=0))]
    [(3, 4), (4, 4), (4,)]
    >>> [w.shape for w in convert.to_keras(GRU(3, 4, seed=0))]
    [(3, 12), (4, 12), (2, 12)]
    """
    if isinstance(rnn, (LSTM, GRU)):
        return _to_keras_gated(rnn, layer, reverse)
    Wx, Wh, b = layer_weights(rnn, layer, reverse)
    xp = rnn.xp
    weights = [xp.permute_dims(Wx, (1, 0)), xp.permute_dims(Wh, (1, 0))]
    return weights if b is None else [*weights, b]


def _to_keras_gated(rnn, layer, reverse):
    check_any_layer(rnn, layer, reverse)
    _gated_config(rnn, reverse)  # refuses what a Keras layer cannot compute
    W_ih, W_hh, b_ih, b_hh = gated_weights(rnn, layer, reverse)
    xp = rnn.xp
    kernel, recurrent = xp.permute_dims(W_ih, (1, 0)), xp.permute_dims(W_hh, (1, 0))  # (D, GH), (H, GH)
    if isinstance(rnn, LSTM):  # i, f, g, o: Keras's i, f, c, o
        return [kernel, recurrent] if b_ih is None else [kernel, recurrent, b_ih + b_hh]
    kernel, recurrent = swap_first_blocks(kernel, 3, axis=1), swap_first_blocks(recurrent, 3, axis=1)
    if b_ih is None:
        return [kernel, recurrent]
    if rnn.linear_before_reset:  # reset_after=True: (2, 3H), input and recurrent biases
        return [kernel, recurrent, xp.stack([swap_first_blocks(b_ih, 3), swap_first_blocks(b_hh, 3)])]
    return [kernel, recurrent, swap_first_blocks(b_ih + b_hh, 3)]  # both enter every gate alike


def to_keras_bidirectional(rnn, *, layer=0):
    """One bidirectional layer as the weights of a Keras ``Bidirectional``.

    Returns
    -------
    list of array
        The forward layer's ``to_keras`` weights, then the backward layer's:
        the order of ``Bidirectional.get_weights()`` (of a ``SimpleRNN``,
        ``LSTM`` or ``GRU``, as ``rnn`` is).

    Examples
    --------
    >>> from rnn_xp import LSTM, RNN, convert
    >>> [w.shape for w in convert.to_keras_bidirectional(RNN(3, 4, bidirectional=True))]
    [(3, 4), (4, 4), (4,), (3, 4), (4, 4), (4,)]
    >>> len(convert.to_keras_bidirectional(LSTM(3, 4, bias=False, bidirectional=True)))
    4
    """
    if isinstance(rnn, (LSTM, GRU)):
        check_any_layer(rnn, layer, False)
    else:
        check_layer(rnn, layer)
    if not rnn.bidirectional:
        raise ValueError("to_keras_bidirectional needs a bidirectional layer")
    return to_keras(rnn, layer=layer) + to_keras(rnn, layer=layer, reverse=True)


def keras_config(rnn, *, reverse=False):
    """The Keras layer arguments of one direction of the layer: ``SimpleRNN``, ``LSTM`` or ``GRU``.

    Returns
    -------
    dict
        ``units``, ``activation`` (a Keras name), ``use_bias`` and
        ``go_backwards`` (True for the reverse direction, and for a layer
        with ``reverse=True``); an ``LSTM`` or ``GRU`` adds
        ``recurrent_activation`` (its gates' activation), a ``GRU``
        ``reset_after`` (its ``linear_before_reset``). With ``to_keras``
        weights, a Keras layer made with them computes the same function.

    Raises
    ------
    ValueError
        What the Keras layer cannot compute: an activation with no Keras
        equivalent (thresholded_relu, scaled_tanh, parameters other than
        Keras's), ``clip``; an RNN's ``leak``; an LSTM's ``proj_size``,
        ``peepholes``, ``input_forget``, or cell input and output
        activations that differ (Keras's ``activation`` is both).

    Examples
    --------
    >>> from rnn_xp import GRU, RNN, convert
    >>> convert.keras_config(RNN(3, 4, nonlinearity="relu", reverse=True))
    {'units': 4, 'activation': 'relu', 'use_bias': True, 'go_backwards': True}
    >>> config = convert.keras_config(GRU(3, 4, linear_before_reset=False))
    >>> config["recurrent_activation"], config["activation"], config["reset_after"]
    ('sigmoid', 'tanh', False)
    """
    if isinstance(rnn, (LSTM, GRU)):
        return _gated_config(rnn, reverse)
    check_rnn(rnn)
    if check_bool("reverse", reverse) and not rnn.bidirectional:
        raise ValueError("reverse=True needs a bidirectional layer")
    if rnn.clip is not None or rnn.leak != 1.0:
        raise ValueError(f"a Keras SimpleRNN has no clip or leak; this layer has clip={rnn.clip}, "
                         f"leak={rnn.leak}")
    act = rnn.activations[1 if reverse else 0]
    keras_name = _keras_name(act)
    if keras_name is None:
        raise ValueError(f"the activation {act} has no Keras equivalent")
    return {"units": rnn.hidden_size, "activation": keras_name, "use_bias": rnn.bias,
            "go_backwards": bool(reverse or rnn.reverse)}


def _gated_config(rnn, reverse):
    """``keras_config`` of an LSTM or GRU, refusing what Keras cannot compute."""
    if check_bool("reverse", reverse) and not rnn.bidirectional:
        raise ValueError("reverse=True needs a bidirectional layer")
    kind = type_name(rnn)
    refuse_options(rnn, f"a Keras {kind}")
    acts = layer_activations(rnn)[1 if reverse else 0]  # LSTM (f, g, h), GRU (f, g)
    if kind == "LSTM" and acts[1] != acts[2]:
        raise ValueError(f"a Keras LSTM has one activation for the cell input and the cell output; "
                         f"this LSTM has {acts[1]} and {acts[2]}")
    names = {}
    for option, act in (("activation", acts[1]), ("recurrent_activation", acts[0])):
        names[option] = _keras_name(act)
        if names[option] is None:
            raise ValueError(f"the {kind}'s {'gate' if option[0] == 'r' else 'candidate'} activation "
                             f"{act} has no Keras equivalent (Keras's {option})")
    config = {"units": rnn.hidden_size, "activation": names["activation"], "use_bias": rnn.bias,
              "go_backwards": bool(reverse or rnn.reverse),
              "recurrent_activation": names["recurrent_activation"]}
    if kind == "GRU":
        config["reset_after"] = rnn.linear_before_reset
    return config


def from_keras(layer_or_weights, *, nonlinearity=None, recurrent_activation=None, reset_after=None,
               go_backwards=None, batch_first=True, xp=None, device=None, dtype=None):
    """A one-layer :class:`~rnn_xp.RNN`, :class:`~rnn_xp.LSTM` or :class:`~rnn_xp.GRU` from Keras.

    Parameters
    ----------
    layer_or_weights : keras layer or sequence of array
        A built ``SimpleRNN``, ``LSTM`` or ``GRU`` (or ``keras.layers.RNN``
        of one ``SimpleRNNCell``, ``LSTMCell`` or ``GRUCell``): its
        activations, ``use_bias``, ``reset_after`` and ``go_backwards`` are
        read. A built ``Bidirectional`` of two such layers of one kind (both
        directions, each with its own activations). Or weights:
        ``[kernel, recurrent_kernel(, bias)]`` for one direction, twice that
        (4 or 6 arrays, forward first) for a ``Bidirectional``; the kind
        comes from ``recurrent_kernel``'s shape: ``(H, H)`` a ``SimpleRNN``,
        ``(H, 4H)`` an ``LSTM``, ``(H, 3H)`` a ``GRU``.
    nonlinearity : str, optional
        Keras's ``activation`` (of a ``SimpleRNN``, or an ``LSTM``'s or
        ``GRU``'s candidate): a Keras name, ``"tanh"``, ``"relu"``,
        ``"sigmoid"``, ``"softsign"``, ``"softplus"``, ``"elu"``,
        ``"linear"``, ``"hard_sigmoid"`` or ``"leaky_relu"``, with Keras's
        parameters. Default: the layer's, or ``"tanh"`` (Keras's default)
        for weights.
    recurrent_activation : str, optional
        An ``LSTM``'s or ``GRU``'s gate activation, a Keras name as above.
        Default: the layer's, or ``"sigmoid"`` for weights.
    reset_after : bool, optional
        A ``GRU``'s: its weights' ``bias`` tells (``(2, 3H)`` True, ``(3H,)``
        False), else Keras's default True. For a layer it must agree with
        the layer's.
    go_backwards : bool, optional
        For one direction's weights: the layer ran backwards. For a layer it
        must agree with the layer's.
    batch_first : bool, optional
        Default True: Keras feeds ``(B, T, D)``.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' dtype.

    Returns
    -------
    RNN, LSTM or GRU
        ``weight_ih = kernel.T``, ``weight_hh = recurrent_kernel.T`` (a
        GRU's first two gate blocks swapped: Keras's z, r, h are rnn_xp's r,
        z, n), a single bias in ``bias_ih`` with ``bias_hh = 0``; a GRU's
        ``(2, 3H)`` bias rows are ``bias_ih`` and ``bias_hh``, and
        ``linear_before_reset`` is ``reset_after``. A ``go_backwards=True``
        layer becomes ``reverse=True``: rnn_xp keeps the outputs in the
        original time order, where Keras returns them in the order it ran
        (flip the time axis to compare). A ``Bidirectional`` becomes
        ``bidirectional=True``, whose output is Keras's
        ``merge_mode="concat"``; :func:`keras_merge` gives the other merge
        modes. The layer computes Keras's inference (``training=False``)
        numbers: ``dropout`` and ``recurrent_dropout`` are not applied, and
        ``unroll``, ``stateful`` and ``use_cudnn`` change nothing in the
        weights (a stateful layer's carried state is the ``h0`` to pass).

    Raises
    ------
    ValueError
        A shape does not match, an activation has no rnn_xp equivalent, a
        ``Bidirectional`` whose forward layer runs backwards or whose GRUs
        differ in ``reset_after``, an option that disagrees with the
        layer's, or a layer that is not built yet (it holds no weights).
    TypeError
        Neither a Keras layer of these kinds nor a list of arrays, or
        ``go_backwards``, ``reset_after`` or ``batch_first`` not a bool.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> kernel, recurrent, bias = np.ones((3, 12)), np.ones((4, 12)), np.zeros((2, 12))
    >>> gru = convert.from_keras([kernel, recurrent, bias])       # Keras GRU weights
    >>> type(gru).__name__, gru.linear_before_reset, gru.weight_hh_l0.shape
    ('GRU', True, (12, 4))
    """
    obj = layer_or_weights
    check_flag("go_backwards", go_backwards)
    check_flag("reset_after", reset_after)
    check_bool("batch_first", batch_first)
    configs = None
    if hasattr(obj, "forward_layer") and hasattr(obj, "backward_layer"):  # Bidirectional
        if go_backwards is not None:
            raise ValueError("go_backwards is for one layer; a Bidirectional has both directions")
        fwd, bwd = obj.forward_layer, obj.backward_layer
        kinds = [_layer_kind(part) for part in (fwd, bwd)]
        for part, kind in zip((fwd, bwd), kinds):
            if kind is None:
                raise TypeError(f"a Keras Bidirectional of {type(part).__name__} has no rnn_xp "
                                f"equivalent; {_RUNS}")
        if kinds[0] != kinds[1]:
            raise TypeError(f"a Keras Bidirectional of a {kinds[0]} and a {kinds[1]} has no rnn_xp "
                            "equivalent; both directions must be the same kind of layer")
        if _go_backwards(fwd) or not _go_backwards(bwd):
            raise ValueError("a Bidirectional whose forward layer runs backwards (or whose backward "
                             "layer runs forwards) has no rnn_xp equivalent")
        kind, configs = kinds[0], [_cell_config(part) for part in (fwd, bwd)]
        weights = [_built_weights(fwd, obj), _built_weights(bwd, obj)]
        reverse = False
    elif hasattr(obj, "get_weights") and hasattr(obj, "get_config"):
        kind = _layer_kind(obj)
        if kind is None:
            cell = getattr(obj, "cell", None)
            of = "" if cell is None else f" of {type(cell).__name__}"
            raise TypeError(f"a Keras {type(obj).__name__}{of} has no rnn_xp equivalent; {_RUNS}")
        configs = [_cell_config(obj)]
        reverse = _go_backwards(obj)
        if go_backwards is not None and go_backwards != reverse:
            raise ValueError(f"go_backwards={go_backwards!r} disagrees with the layer's "
                             f"go_backwards={reverse!r}")
        weights = [_built_weights(obj, obj)]
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        if n not in (2, 3, 4, 6):
            raise ValueError(
                "Keras SimpleRNN weights are [kernel, recurrent_kernel(, bias)] (twice that for a "
                f"Bidirectional); got {n} arrays (LSTM and GRU weights are the same three)"
            )
        weights = [list(obj)] if n in (2, 3) else [list(obj[: n // 2]), list(obj[n // 2:])]
        if len(weights) == 2 and go_backwards is not None:
            raise ValueError("go_backwards is for one direction's weights; a Bidirectional's "
                             "second half is its backward layer")
        kind = _weights_kind(weights[0])
        reverse = bool(go_backwards)  # None: a layer's default, forwards
    else:
        raise TypeError(
            "layer_or_weights must be a keras SimpleRNN, a Bidirectional(SimpleRNN) or a list "
            "[kernel, recurrent_kernel(, bias)] (or an LSTM, a GRU, a Bidirectional of them, their "
            f"weights); got {type(obj).__name__}"
        )
    if kind != "SimpleRNN":
        return _from_keras_gated(kind, weights, configs, nonlinearity, recurrent_activation,
                                 reset_after, reverse, batch_first, xp, device, dtype)  # fmt: skip
    if recurrent_activation is not None or reset_after is not None:
        raise ValueError("recurrent_activation and reset_after are for an LSTM or a GRU; a "
                         "SimpleRNN has neither")
    if configs is None:
        acts = [_keras_activation("tanh" if nonlinearity is None else nonlinearity)] * len(weights)
    else:
        acts = [_activation(config, "activation", nonlinearity, kind) for config in configs]
    names = ("kernel", "recurrent_kernel", "bias")
    return from_transposed([dict(zip(names, w)) for w in weights], names, acts, batch_first,
                           xp, device, dtype, reverse=reverse)


def _from_keras_gated(kind, weights, configs, nonlinearity, recurrent_activation, reset_after,
                      reverse, batch_first, xp, device, dtype):
    """An LSTM or GRU from one or two directions' Keras weights (and the layers' configurations)."""
    G, dirs = _GATES[kind], len(weights)
    state, names, acts, resets = {}, {}, [], []
    for d, w in enumerate(weights):
        of = "" if dirs == 1 else (" of the forward direction", " of the reverse direction")[d]
        config = {} if configs is None else configs[d]
        act = _activation(config, "activation", nonlinearity, kind, "tanh")
        gate = _activation(config, "recurrent_activation", recurrent_activation, kind, "sigmoid")
        acts.append((gate, act, act) if kind == "LSTM" else (gate, act))
        check_real_arrays({key + of: a for key, a in zip(("kernel", "recurrent_kernel", "bias"), w)})
        kernel, recurrent, bias = w[0], w[1], (w[2] if len(w) > 2 else None)
        if recurrent.ndim != 2 or recurrent.shape[1] != G * recurrent.shape[0]:
            raise ValueError(f"recurrent_kernel{of} must have shape (H, {G}H) for a Keras {kind}; got "
                             f"{shape_str(recurrent.shape)}")
        H = recurrent.shape[0]
        check_columns("kernel" + of, kernel, None, G * H,
                      f"(D, {G}H) with H = {H} (from recurrent_kernel (H, {G}H))")  # fmt: skip
        if d == 1 and (kernel.shape != weights[0][0].shape or (bias is None) != (len(weights[0]) < 3)):
            raise ValueError(f"the two directions have kernel {shape_str(weights[0][0].shape)} and "
                             f"{shape_str(kernel.shape)}, biases {len(weights[0]) > 2} and "
                             f"{bias is not None}; they must match")
        after = _reset_after(config, reset_after, bias) if kind == "GRU" else None
        resets.append(after)
        if kind == "GRU" and bias is not None:
            need = (2, 3 * H) if after else (3 * H,)
            if tuple(bias.shape) != need:
                raise ValueError(f"bias{of} must have shape {shape_str(need)} for a Keras GRU with "
                                 f"reset_after={after} and H = {H}; got {shape_str(bias.shape)}")
        elif bias is not None and tuple(bias.shape) != (4 * H,):
            raise ValueError(f"bias{of} must have shape (4H,) = {shape_str((4 * H,))} for a Keras "
                             f"LSTM with H = {H}; got {shape_str(bias.shape)}")
        W_ih, W_hh = kernel.T, recurrent.T  # (GH, D), (GH, H)
        b_ih, b_hh, key_ih, key_hh = bias, None, "bias", "bias"
        if kind == "GRU":  # Keras's z, r, h -> r, z, n
            W_ih, W_hh = swap_first_blocks(W_ih, 3), swap_first_blocks(W_hh, 3)
            if bias is not None and after:
                b_ih, b_hh, key_ih, key_hh = bias[0], bias[1], "bias[0]", "bias[1]"
            b_ih = None if b_ih is None else swap_first_blocks(b_ih, 3)
            b_hh = None if b_hh is None else swap_first_blocks(b_hh, 3)
        if bias is not None and b_hh is None:
            b_hh = np.zeros(G * H)  # moved into the layer's dtype
        for name, array, key in (("weight_ih", W_ih, "kernel"), ("weight_hh", W_hh, "recurrent_kernel"),
                                 ("bias_ih", b_ih, key_ih), ("bias_hh", b_hh, key_hh)):
            if array is not None:
                state[param_name(name, 0, d)] = array
                names[param_name(name, 0, d)] = key + of
    config = {"batch_first": batch_first, "reverse": reverse, **activation_options(acts, kind)}
    if kind == "GRU":
        if resets[0] != resets[-1]:
            raise ValueError("a Bidirectional whose GRUs differ in reset_after has no rnn_xp "
                             "equivalent (one linear_before_reset per layer)")
        config["linear_before_reset"] = resets[0]
    return build_gated(LSTM if kind == "LSTM" else GRU, state, names, xp=xp, device=device,
                       dtype=dtype, **config)


def _activation(config, option, given, kind, default="tanh"):
    """``(name, alpha, beta)`` of a layer's ``option`` (``config`` its cell's), or of ``given``."""
    label = "nonlinearity" if option == "activation" else option
    if option not in config:
        return _keras_activation(default if given is None else given, label)
    own = config[option]
    own = own if isinstance(own, str) else str(own)
    if given is not None and given != own:
        raise ValueError(f"{label}={given!r} disagrees with the layer's {option} {own!r}")
    return _keras_activation(own, option, layer=kind)


def _reset_after(config, given, bias):
    """A GRU's ``reset_after``: the layer's, else ``given``, else the bias's shape, else True."""
    own = config.get("reset_after")
    if own is not None and given is not None and bool(own) != given:
        raise ValueError(f"reset_after={given!r} disagrees with the layer's reset_after={own!r}")
    if own is not None:
        return bool(own)
    if given is not None:
        return given
    return bias is None or bias.ndim == 2


def _layer_kind(layer):
    """``"SimpleRNN"``, ``"LSTM"`` or ``"GRU"``: the layer's kind, read from its cell; else ``None``."""
    if _is_simple_rnn(layer):
        return "SimpleRNN"
    for cls in type(getattr(layer, "cell", None)).__mro__:
        if cls.__name__ in _CELLS:
            return _CELLS[cls.__name__]
    return None


def _cell_config(layer):
    """The activations (Keras names) and ``reset_after`` of a layer, read off its cell.

    A Keras cell's own functions are read (a lambda or another library's
    function is named by where it comes from); an object without them gives
    its ``get_config()``.
    """
    cell = getattr(layer, "cell", None)
    source = cell if hasattr(cell, "get_config") else layer
    if not callable(getattr(source, "activation", None)):
        return source.get_config()
    config = {"activation": _function_name(source.activation)}
    if callable(getattr(source, "recurrent_activation", None)):
        config["recurrent_activation"] = _function_name(source.recurrent_activation)
    if hasattr(source, "reset_after"):
        config["reset_after"] = bool(source.reset_after)
    return config


def _function_name(fn):
    """A Keras function's name (``"tanh"``), or another function's module and name."""
    name, module = getattr(fn, "__name__", None), getattr(fn, "__module__", None) or ""
    if name and module.split(".")[0] == "keras":
        return name
    return f"{module}.{getattr(fn, '__qualname__', None) or type(fn).__name__}".lstrip(".")


def _go_backwards(layer):
    """A Keras layer's ``go_backwards`` (its attribute, else its configuration's)."""
    value = getattr(layer, "go_backwards", None)
    return value if isinstance(value, bool) else bool(layer.get_config().get("go_backwards", False))


def _weights_kind(weights):
    """The kind of one direction's weights, from ``recurrent_kernel``: ``(H, 4H)`` LSTM, ``(H, 3H)`` GRU."""
    recurrent = weights[1] if len(weights) > 1 else None
    if is_array(recurrent) and recurrent.ndim == 2 and recurrent.shape[0] > 0:
        H, cols = recurrent.shape
        if cols == 4 * H:
            return "LSTM"
        if cols == 3 * H:
            return "GRU"
    return "SimpleRNN"


def _built_weights(layer, outer):
    """``layer.get_weights()``, which must hold the kernels: ``outer`` must have been built."""
    weights = list(layer.get_weights())
    if len(weights) < 2:
        raise ValueError(
            f"the Keras {type(outer).__name__} {getattr(outer, 'name', '')!r} is not built: it holds "
            "no weights yet. Build it (layer.build((None, None, D))) or call it on an input first"
        )
    return weights


def keras_merge(output, merge_mode="concat", *, mask=None, batch_first=True):
    """A bidirectional layer's ``output`` merged as Keras's ``Bidirectional`` does.

    Parameters
    ----------
    output : array
        ``(..., 2H)``: the forward states then the reverse ones, as a
        bidirectional :class:`~rnn_xp.RNN` returns them (or the two rows of
        ``h_n`` concatenated, for ``return_sequences=False``).
    merge_mode : {"concat", "sum", "ave", "mul", None}, optional
        Keras's ``merge_mode``.
    mask : bool array or nested list of bool, optional
        ``(B, T)``: the mask the layer ran with. ``Bidirectional`` with
        ``return_sequences=True`` outputs zeros at masked steps (it sets
        ``zero_output_for_mask``), where rnn_xp repeats the previous output;
        this zeroes them first.
    batch_first : bool, optional
        ``output`` is ``(B, T, 2H)`` (default, Keras's layout) rather than
        ``(T, B, 2H)``; used with ``mask`` only (True or False always).

    Returns
    -------
    array or tuple of two arrays
        ``(..., 2H)`` for concat, ``(..., H)`` for sum, ave and mul, the two
        halves for ``None``; in ``output``'s library.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> convert.keras_merge(np.array([[1.0, 2.0, 3.0, 4.0]]), "sum")
    array([[4., 6.]])
    """
    if merge_mode not in ("concat", "sum", "ave", "mul", None):
        raise ValueError(f"merge_mode must be 'concat', 'sum', 'ave', 'mul' or None; got {merge_mode!r}")
    if not is_array(output) or output.ndim < 1 or output.shape[-1] % 2:
        got = shape_str(output.shape) if is_array(output) else type(output).__name__
        raise ValueError(f"output must have shape (..., 2H); got {got}")
    xp = namespace_of(output)
    check_bool("batch_first", batch_first)
    if mask is not None:
        if output.ndim != 3:
            raise ValueError(f"output must be (B, T, 2H) or (T, B, 2H) with a mask; got "
                             f"{shape_str(output.shape)}")
        batch = output.shape[0] if batch_first else output.shape[1]
        T = output.shape[1] if batch_first else output.shape[0]
        m = check_mask(xp, mask, (batch,), T, _device_of(output))  # (T, B)
        if batch_first:
            m = xp.permute_dims(m, (1, 0))  # (B, T)
        output = xp.where(m[..., None], output, xp.zeros_like(output))
    H = output.shape[-1] // 2
    fwd, bwd = output[..., :H], output[..., H:]
    if merge_mode == "concat":
        return output
    if merge_mode == "sum":
        return fwd + bwd
    if merge_mode == "ave":
        return (fwd + bwd) / 2
    if merge_mode == "mul":
        return fwd * bwd
    return fwd, bwd


def _is_simple_rnn(layer):
    """A Keras ``SimpleRNN`` (or a subclass of it)."""
    return any(cls.__name__ == "SimpleRNN" for cls in type(layer).__mro__)
