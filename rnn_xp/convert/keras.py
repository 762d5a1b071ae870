"""Keras ``SimpleRNN`` and ``Bidirectional(SimpleRNN)``: weights, configuration, merge modes.

Keras keeps the transposes of torch's matrices, ``kernel (D, H)`` and
``recurrent_kernel (H, H)``, and one bias ``(H,)``, which is read into
``bias_ih`` with ``bias_hh = 0`` and written back as their sum.
"""

from __future__ import annotations

from .._checks import check_bool, check_mask, shape_str
from .._compat import device as _device_of
from .._compat import is_array, namespace_of
from ._common import check_flag, check_layer, check_rnn, from_transposed, layer_weights

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


def _keras_activation(name):
    if not isinstance(name, str) or name not in _KERAS_ACTIVATIONS:
        raise ValueError(
            f"nonlinearity must be one of {list(_KERAS_ACTIVATIONS)}; got {name!r} "
            "(Keras's activation names)"
        )
    return _KERAS_ACTIVATIONS[name]


def to_keras(rnn, *, layer=0, reverse=False):
    """One layer and direction as Keras ``SimpleRNN`` weights.

    Parameters
    ----------
    rnn : RNN
    layer : int, optional
        Which layer.
    reverse : bool, optional
        The reverse direction of a bidirectional layer (the backward layer of
        a Keras ``Bidirectional`` wrapper).

    Returns
    -------
    list of array
        ``[kernel (D, H), recurrent_kernel (H, H), bias (H,)]`` (no ``bias``
        when ``rnn.bias`` is False), the order of ``SimpleRNN.get_weights()``.
        :func:`keras_config` gives the ``SimpleRNN`` arguments that go with
        them (a layer with ``reverse=True`` is a ``go_backwards=True`` one).

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> rnn = RNN(3, 4, seed=0)
    >>> [w.shape for w in convert.to_keras(rnn)]
    [(3, 4), (4, 4), (4,)]
    """
    Wx, Wh, b = layer_weights(rnn, layer, reverse)
    xp = rnn.xp
    weights = [xp.permute_dims(Wx, (1, 0)), xp.permute_dims(Wh, (1, 0))]
    return weights if b is None else [*weights, b]


def to_keras_bidirectional(rnn, *, layer=0):
    """One bidirectional layer as the weights of a Keras ``Bidirectional(SimpleRNN)``.

    Returns
    -------
    list of array
        The forward layer's ``to_keras`` weights, then the backward layer's:
        the order of ``Bidirectional.get_weights()``.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> [w.shape for w in convert.to_keras_bidirectional(RNN(3, 4, bidirectional=True))]
    [(3, 4), (4, 4), (4,), (3, 4), (4, 4), (4,)]
    """
    check_layer(rnn, layer)
    if not rnn.bidirectional:
        raise ValueError("to_keras_bidirectional needs a bidirectional layer")
    return to_keras(rnn, layer=layer) + to_keras(rnn, layer=layer, reverse=True)


def keras_config(rnn, *, reverse=False):
    """The ``keras.layers.SimpleRNN`` arguments of one direction of the layer.

    Returns
    -------
    dict
        ``units``, ``activation`` (a Keras name), ``use_bias`` and
        ``go_backwards`` (True for the reverse direction, and for a layer
        with ``reverse=True``). With ``to_keras`` weights, a ``SimpleRNN``
        made with them computes the same function.

    Raises
    ------
    ValueError
        The activation has no Keras equivalent (thresholded_relu,
        scaled_tanh, and parameters other than Keras's), or the layer has
        ``clip`` or ``leak``.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> convert.keras_config(RNN(3, 4, nonlinearity="relu", reverse=True))
    {'units': 4, 'activation': 'relu', 'use_bias': True, 'go_backwards': True}
    """
    check_rnn(rnn)
    if check_bool("reverse", reverse) and not rnn.bidirectional:
        raise ValueError("reverse=True needs a bidirectional layer")
    if rnn.clip is not None or rnn.leak != 1.0:
        raise ValueError(f"a Keras SimpleRNN has no clip or leak; this layer has clip={rnn.clip}, "
                         f"leak={rnn.leak}")
    act = rnn.activations[1 if reverse else 0]
    for keras_name, ours in _KERAS_ACTIVATIONS.items():
        if ours[0] == act[0] and all(
                (a is None) == (b is None) and (a is None or abs(a - b) < 1e-7)
                for a, b in zip(ours[1:], act[1:])):  # fmt: skip
            break
    else:
        raise ValueError(f"the activation {act} has no Keras equivalent")
    return {"units": rnn.hidden_size, "activation": keras_name, "use_bias": rnn.bias,
            "go_backwards": bool(reverse or rnn.reverse)}


def from_keras(layer_or_weights, *, nonlinearity=None, go_backwards=None, batch_first=True,
               xp=None, device=None, dtype=None):
    """A one-layer :class:`~rnn_xp.RNN` from a Keras ``SimpleRNN``, ``Bidirectional`` or weights.

    Parameters
    ----------
    layer_or_weights : keras layer or sequence of array
        A built ``SimpleRNN`` (its activation, ``use_bias`` and
        ``go_backwards`` are read), a built ``Bidirectional(SimpleRNN)``
        (both directions, each with its own activation), or weights:
        ``[kernel (D, H), recurrent_kernel (H, H)(, bias (H,))]`` for one
        direction, twice that (4 or 6 arrays, forward first) for a
        ``Bidirectional``.
    nonlinearity : str, optional
        A Keras activation name (``"tanh"``, ``"relu"``, ``"sigmoid"``,
        ``"softsign"``, ``"softplus"``, ``"elu"``, ``"linear"``,
        ``"hard_sigmoid"``, ``"leaky_relu"``, with Keras's parameters).
        Default: the layer's, or ``"tanh"`` (Keras's default) for weights.
    go_backwards : bool, optional
        For one direction's weights: the ``SimpleRNN`` ran backwards. For a
        layer it must agree with the layer's.
    batch_first : bool, optional
        Default True: Keras feeds ``(B, T, D)``.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' dtype.

    Returns
    -------
    RNN
        ``weight_ih = kernel.T``, ``weight_hh = recurrent_kernel.T``,
        ``bias_ih = bias``, ``bias_hh = 0``. A ``go_backwards=True`` layer
        becomes ``reverse=True``: rnn_xp keeps the outputs in the original
        time order, where Keras returns them in the order it ran (flip the
        time axis to compare). A ``Bidirectional`` becomes
        ``bidirectional=True``, whose output is Keras's ``merge_mode="concat"``;
        :func:`keras_merge` gives the other merge modes.

    Raises
    ------
    ValueError
        A shape does not match, the activation has no rnn_xp equivalent, a
        ``Bidirectional`` whose forward layer runs backwards, or a layer that
        is not built yet (it holds no weights).
    TypeError
        Neither a Keras layer nor a list of arrays, or ``go_backwards`` or
        ``batch_first`` not a bool.
    """
    obj = layer_or_weights
    check_flag("go_backwards", go_backwards)
    check_bool("batch_first", batch_first)
    if hasattr(obj, "forward_layer") and hasattr(obj, "backward_layer"):  # Bidirectional
        if go_backwards is not None:
            raise ValueError("go_backwards is for a SimpleRNN; a Bidirectional has both directions")
        fwd, bwd = obj.forward_layer, obj.backward_layer
        for part in (fwd, bwd):
            if not _is_simple_rnn(part):
                raise TypeError(f"a Keras Bidirectional of {type(part).__name__} has no rnn_xp "
                                "equivalent; rnn_xp runs SimpleRNN")
        if fwd.get_config().get("go_backwards") or not bwd.get_config().get("go_backwards"):
            raise ValueError("a Bidirectional whose forward layer runs backwards (or whose backward "
                             "layer runs forwards) has no rnn_xp equivalent")
        acts = [_keras_layer_activation(part, nonlinearity) for part in (fwd, bwd)]
        weights = [_built_weights(fwd, obj), _built_weights(bwd, obj)]
        reverse = False
    elif hasattr(obj, "get_weights") and hasattr(obj, "get_config"):
        if not _is_simple_rnn(obj):
            raise TypeError(f"a Keras {type(obj).__name__} has no rnn_xp equivalent; rnn_xp runs "
                            "SimpleRNN and Bidirectional(SimpleRNN)")
        acts = [_keras_layer_activation(obj, nonlinearity)]
        reverse = bool(obj.get_config().get("go_backwards", False))
        if go_backwards is not None and go_backwards != reverse:
            raise ValueError(f"go_backwards={go_backwards!r} disagrees with the layer's "
                             f"go_backwards={reverse!r}")
        weights = [_built_weights(obj, obj)]
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        if n not in (2, 3, 4, 6):
            raise ValueError(
                "Keras SimpleRNN weights are [kernel, recurrent_kernel(, bias)] (twice that for a "
                f"Bidirectional); got {n} arrays"
            )
        weights = [list(obj)] if n in (2, 3) else [list(obj[: n // 2]), list(obj[n // 2:])]
        if len(weights) == 2 and go_backwards is not None:
            raise ValueError("go_backwards is for one direction's weights; a Bidirectional's "
                             "second half is its backward layer")
        acts = [_keras_activation("tanh" if nonlinearity is None else nonlinearity)] * len(weights)
        reverse = bool(go_backwards)  # None: a SimpleRNN's default, forwards
    else:
        raise TypeError(
            "layer_or_weights must be a keras SimpleRNN, a Bidirectional(SimpleRNN) or a list "
            f"[kernel, recurrent_kernel(, bias)]; got {type(obj).__name__}"
        )
    names = ("kernel", "recurrent_kernel", "bias")
    return from_transposed([dict(zip(names, w)) for w in weights], names, acts, batch_first,
                            xp, device, dtype, reverse=reverse)


def _built_weights(layer, outer):
    """``layer.get_weights()``, which must hold the kernels: ``outer`` must have been built."""
    weights = list(layer.get_weights())
    if len(weights) < 2:
        raise ValueError(
            f"the Keras {type(outer).__name__} {getattr(outer, 'name', '')!r} is not built: it holds "
            "no weights yet. Build it (layer.build((None, None, D))) or call it on an input first"
        )
    return weights


def _keras_layer_activation(layer, nonlinearity):
    activation = layer.get_config().get("activation", "tanh")
    activation = activation if isinstance(activation, str) else str(activation)
    if nonlinearity is not None and nonlinearity != activation:
        raise ValueError(
            f"nonlinearity={nonlinearity!r} disagrees with the layer's activation {activation!r}"
        )
    return _keras_activation(activation)


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
