"""Weights of an Elman RNN in the layouts of torch, Keras, ONNX and CS231n.

Every format stores the same recurrence with different shapes and bias
conventions. With ``D`` inputs, ``H`` units and rnn_xp's (torch's) names:

=============  ===================  ========================  ==========================
format         input weights        recurrent weights         bias
=============  ===================  ========================  ==========================
torch, rnn_xp  weight_ih_l0 (H, D)  weight_hh_l0 (H, H)       bias_ih_l0 + bias_hh_l0
Keras          kernel (D, H)        recurrent_kernel (H, H)   bias (H,)
ONNX RNN       W [dirs, H, D]       R [dirs, H, H]            B [dirs, 2H] = [Wb, Rb]
CS231n         Wx (D, H)            Wh (H, H)                 b (H,)
=============  ===================  ========================  ==========================

Keras and CS231n hold the transposes of torch's matrices (``kernel =
weight_ih.T``, ``recurrent_kernel = weight_hh.T``) and one bias, which is
read into ``bias_ih`` with ``bias_hh = 0`` and written back as
``bias_ih + bias_hh``. ONNX keeps torch's orientation and both biases. So
``format -> RNN -> format`` returns the very same numbers, and ``RNN ->
format -> RNN`` gives a layer with the same outputs.

The ``to_*`` functions return arrays of the layer's own library, device
and dtype (``rnn.to("numpy")`` first for NumPy arrays); the ``from_*``
functions take arrays of any library and build a layer in ``xp``.
"""

from __future__ import annotations

from collections import OrderedDict

from ._activations import check_nonlinearity
from ._backends import dtype_name, move, resolve_dtype, resolve_namespace, to_host
from ._checks import check_bool, check_real_arrays, shape_str
from ._compat import is_array, namespace_of
from .layer import RNN

__all__ = [
    "from_cs231n",
    "from_keras",
    "from_onnx",
    "from_torch",
    "onnx_attributes",
    "onnx_y_to_output",
    "output_to_onnx_y",
    "to_cs231n",
    "to_keras",
    "to_onnx",
    "to_torch",
    "torch_state_dict",
]

_ONNX_ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu"}


# -- torch ---------------------------------------------------------------------


def from_torch(module_or_state_dict, *, xp=None, device=None, dtype=None, nonlinearity=None,
               batch_first=None):
    """A :class:`~rnn_xp.RNN` from a ``torch.nn.RNN`` or its state dict.

    The same as :meth:`rnn_xp.RNN.from_torch`; see there for the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import RNN, convert
    >>> state = RNN(3, 4, bidirectional=True, seed=1).state_dict()   # any library's arrays
    >>> rnn = convert.from_torch(state, nonlinearity="relu")
    >>> rnn.bidirectional, rnn.nonlinearity, rnn.hidden_size
    (True, 'relu', 4)
    """
    return RNN.from_torch(module_or_state_dict, xp=xp, device=device, dtype=dtype,
                          nonlinearity=nonlinearity, batch_first=batch_first)


def torch_state_dict(rnn, *, device=None):
    """The layer's parameters as torch tensors, ready for ``nn.RNN.load_state_dict``.

    Parameters
    ----------
    rnn : RNN
    device : torch device or str, optional
        Default: the layer's device when it is a torch layer, else the CPU.

    Returns
    -------
    OrderedDict
        torch's names to tensors of the layer's dtype.
    """
    import torch

    _check_rnn(rnn)

    dtype = getattr(torch, dtype_name(rnn.xp, rnn.dtype))
    out = OrderedDict()
    for name, p in rnn.params.items():
        if type(p).__module__.split(".")[0] == "torch":
            t = p.detach().clone()
        else:
            t = torch.from_numpy(to_host(p).copy())
        out[name] = t.to(device=device if device is not None else t.device, dtype=dtype)
    return out


def to_torch(rnn, *, device=None):
    """A ``torch.nn.RNN`` with the layer's configuration and weights.

    Returns
    -------
    torch.nn.RNN
        On ``device`` (default as in :func:`torch_state_dict`), in the layer's dtype.
    """
    import torch

    state = torch_state_dict(rnn, device=device)
    first = next(iter(state.values()))
    if rnn.leak != 1.0:
        raise ValueError(f"torch.nn.RNN has no leak; this layer has leak={rnn.leak}")
    with _quiet_dropout_warning():
        module = torch.nn.RNN(
            rnn.input_size, rnn.hidden_size, rnn.num_layers, nonlinearity=rnn.nonlinearity,
            bias=rnn.bias, batch_first=rnn.batch_first, dropout=rnn.dropout,
            bidirectional=rnn.bidirectional, device=first.device, dtype=first.dtype,
        )  # fmt: skip
    module.load_state_dict(state)
    return module


class _quiet_dropout_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=".*dropout.*", category=UserWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# -- Keras SimpleRNN -----------------------------------------------------------


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

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> rnn = RNN(3, 4, seed=0)
    >>> [w.shape for w in convert.to_keras(rnn)]
    [(3, 4), (4, 4), (4,)]
    """
    Wx, Wh, b = _layer_weights(rnn, layer, reverse)
    xp = rnn.xp
    weights = [xp.permute_dims(Wx, (1, 0)), xp.permute_dims(Wh, (1, 0))]
    return weights if b is None else [*weights, b]


def from_keras(layer_or_weights, *, nonlinearity=None, batch_first=True, xp=None, device=None,
               dtype=None):
    """A one-layer :class:`~rnn_xp.RNN` from a Keras ``SimpleRNN`` or its weights.

    Parameters
    ----------
    layer_or_weights : keras.layers.SimpleRNN or sequence of array
        A built layer (its activation and ``use_bias`` are read), or
        ``[kernel (D, H), recurrent_kernel (H, H)]`` with an optional ``bias (H,)``.
    nonlinearity : {"tanh", "relu"}, optional
        Default: the layer's activation, or ``"tanh"`` (Keras' default) for weights.
    batch_first : bool, optional
        Default True: Keras feeds ``(B, T, D)``.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' dtype.

    Returns
    -------
    RNN
        ``weight_ih = kernel.T``, ``weight_hh = recurrent_kernel.T``,
        ``bias_ih = bias``, ``bias_hh = 0``.

    Raises
    ------
    ValueError
        A shape does not match, the activation is not tanh or relu, or the
        layer runs backwards (``go_backwards=True``).
    """
    obj = layer_or_weights
    if hasattr(obj, "get_weights") and hasattr(obj, "get_config"):
        if not any(cls.__name__ == "SimpleRNN" for cls in type(obj).__mro__):
            raise TypeError(
                f"layer_or_weights must be a keras SimpleRNN (or its weights); got {type(obj).__name__}, "
                "which is not a SimpleRNN and which rnn_xp cannot run"
            )
        config = obj.get_config()
        if config.get("go_backwards"):
            raise ValueError("a SimpleRNN with go_backwards=True has no rnn_xp equivalent")
        activation = config.get("activation", "tanh")
        activation = activation if isinstance(activation, str) else str(activation)
        if nonlinearity is None:
            nonlinearity = activation
        elif nonlinearity != activation:
            raise ValueError(
                f"nonlinearity={nonlinearity!r} disagrees with the layer's activation "
                f"{activation!r}"
            )
        weights = obj.get_weights()
    elif isinstance(obj, (list, tuple)):
        weights = list(obj)
    else:
        raise TypeError(
            "layer_or_weights must be a keras SimpleRNN or a list [kernel, recurrent_kernel"
            f"(, bias)]; got {type(obj).__name__}"
        )
    if len(weights) not in (2, 3):
        raise ValueError(
            "Keras SimpleRNN weights are [kernel, recurrent_kernel(, bias)]; "
            f"got {len(weights)} arrays"
        )
    nonlinearity = check_nonlinearity("tanh" if nonlinearity is None else nonlinearity)
    names = ("kernel", "recurrent_kernel", "bias")
    return _from_transposed(dict(zip(names, weights)), names, nonlinearity, batch_first,
                            xp, device, dtype)


# -- CS231n --------------------------------------------------------------------


def to_cs231n(rnn, *, layer=0, reverse=False):
    """One layer and direction as the CS231n assignment's ``Wx``, ``Wh``, ``b``.

    Returns
    -------
    dict
        ``{"Wx": (D, H), "Wh": (H, H), "b": (H,)}`` in the layer's library
        (``b`` is zeros for a layer without bias), for
        ``next_h = tanh(x @ Wx + prev_h @ Wh + b)`` with ``x (N, D)``.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> w = convert.to_cs231n(RNN(3, 4, seed=0))
    >>> w["Wx"].shape, w["Wh"].shape, w["b"].shape
    ((3, 4), (4, 4), (4,))
    """
    Wx, Wh, b = _layer_weights(rnn, layer, reverse)
    xp = rnn.xp
    if b is None:
        b = xp.zeros((rnn.hidden_size,), dtype=rnn.dtype, device=rnn.device)
    return {"Wx": xp.permute_dims(Wx, (1, 0)), "Wh": xp.permute_dims(Wh, (1, 0)), "b": b}


def from_cs231n(Wx, Wh, b=None, *, nonlinearity="tanh", batch_first=True, xp=None, device=None,
                dtype=None):
    """A one-layer :class:`~rnn_xp.RNN` from CS231n's ``Wx (D, H)``, ``Wh (H, H)``, ``b (H,)``.

    ``batch_first`` defaults to True, the assignment's ``x (N, T, D)``.
    ``dtype`` defaults to the weights' dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> rnn = convert.from_cs231n(np.ones((3, 4)), np.eye(4), np.zeros(4))
    >>> rnn.weight_ih_l0.shape, rnn.batch_first, rnn.dtype
    ((4, 3), True, dtype('float64'))
    """
    nonlinearity = check_nonlinearity(nonlinearity)
    weights = {"Wx": Wx, "Wh": Wh, "b": b}
    if b is None:
        del weights["b"]
    return _from_transposed(weights, ("Wx", "Wh", "b"), nonlinearity, batch_first,
                            xp, device, dtype)


# -- ONNX RNN ------------------------------------------------------------------


def to_onnx(rnn, *, layer=0):
    """One layer as the ONNX ``RNN`` operator's inputs ``W``, ``R``, ``B``.

    Returns
    -------
    dict
        ``{"W": [dirs, H, D], "R": [dirs, H, H], "B": [dirs, 2H]}`` in the
        layer's library; ``B`` is ``[bias_ih, bias_hh]`` per direction and
        absent for a layer without bias. :func:`onnx_attributes` gives the
        node's attributes.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> w = convert.to_onnx(RNN(3, 4, bidirectional=True, seed=0))
    >>> {k: v.shape for k, v in w.items()}
    {'W': (2, 4, 3), 'R': (2, 4, 4), 'B': (2, 8)}
    """
    _check_layer(rnn, layer)
    xp, p = rnn.xp, rnn.params
    sfx = ("", "_reverse")[: rnn.num_directions]
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
    """The ONNX ``RNN`` node attributes that match the layer (one layer of it).

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> convert.onnx_attributes(RNN(3, 4, nonlinearity="relu", bidirectional=True))
    {'hidden_size': 4, 'direction': 'bidirectional', 'activations': ['Relu', 'Relu'], 'layout': 0}
    """
    _check_rnn(rnn)
    if rnn.leak != 1.0:
        raise ValueError(f"the ONNX RNN operator has no leak; this layer has leak={rnn.leak}")
    name = {v: k for k, v in _ONNX_ACTIVATIONS.items()}[rnn.nonlinearity]
    return {
        "hidden_size": rnn.hidden_size,
        "direction": "bidirectional" if rnn.bidirectional else "forward",
        "activations": [name] * rnn.num_directions,
        "layout": 1 if rnn.batch_first else 0,
    }


def from_onnx(W, R, B=None, *, direction=None, activations=None, layout=0, xp=None,
              device=None, dtype=None):
    """A one-layer :class:`~rnn_xp.RNN` from the ONNX ``RNN`` operator's weights.

    Parameters
    ----------
    W, R, B : array
        ``W [dirs, H, D]``, ``R [dirs, H, H]`` and optionally ``B [dirs, 2H]``.
    direction : {"forward", "bidirectional"}, optional
        Default: from ``dirs``. ``"reverse"`` alone has no ``torch.nn.RNN``
        equivalent: run ``rnn_forward(..., reverse=True)`` with ``W[0]``,
        ``R[0]`` and ``B[0, :H] + B[0, H:]`` instead.
    activations : list of {"Tanh", "Relu"}, optional
        One per direction, all the same; default Tanh.
    layout : {0, 1}, optional
        The node's ``layout``: 1 means ``X [B, T, D]`` (``batch_first``).
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' dtype.

    Returns
    -------
    RNN
    """
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
    if dirs not in (1, 2):
        raise ValueError(f"W must have 1 or 2 directions on axis 0; got shape {shape_str(W.shape)}")
    if direction is None:
        direction = "forward" if dirs == 1 else "bidirectional"
    if direction == "reverse":
        raise ValueError(
            "direction='reverse' alone has no torch.nn.RNN equivalent; use "
            "rnn_forward(x, h0, W[0], R[0], B[0, :H] + B[0, H:], reverse=True)"
        )
    if direction not in ("forward", "bidirectional") or (direction == "bidirectional") != (
        dirs == 2
    ):
        raise ValueError(f"direction={direction!r} does not fit W with {dirs} direction(s)")
    if isinstance(activations, str):
        raise TypeError(f"activations must be a list of names, one per direction; got the string {activations!r}")
    if activations is not None and not isinstance(activations, (list, tuple)):
        raise TypeError(
            f"activations must be a list of names, one per direction; got {type(activations).__name__}"
        )
    activations = ["Tanh"] * dirs if activations is None else list(activations)
    same = len(set(activations)) == 1 and activations[0] in _ONNX_ACTIVATIONS
    if len(activations) != dirs or not same:
        raise ValueError(
            f"activations must be {dirs} equal names from {list(_ONNX_ACTIVATIONS)}; "
            f"got {activations}"
        )
    if isinstance(layout, bool) or not isinstance(layout, int) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    xp, device, dtype = _target(W, xp, device, dtype)
    Wt, Rt = move(W, xp, device, dtype, name="W"), move(R, xp, device, dtype, name="R")
    Bt = None if B is None else move(B, xp, device, dtype, name="B")
    rnn = RNN(D, H, nonlinearity=_ONNX_ACTIVATIONS[activations[0]], bias=B is not None,
              batch_first=layout == 1, bidirectional=dirs == 2, xp=xp, device=device,
              dtype=dtype, seed=0)
    state = {}
    for d, s in enumerate(("", "_reverse")[:dirs]):
        state[f"weight_ih_l0{s}"] = Wt[d, ...]
        state[f"weight_hh_l0{s}"] = Rt[d, ...]
        if Bt is not None:
            state[f"bias_ih_l0{s}"] = Bt[d, :H]
            state[f"bias_hh_l0{s}"] = Bt[d, H:]
    return rnn.load_state_dict(state)


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


# -- shared --------------------------------------------------------------------


def _check_rnn(rnn):
    if not isinstance(rnn, RNN):
        raise TypeError(f"rnn must be an rnn_xp.RNN; got {type(rnn).__name__}")


def _check_layer(rnn, layer):
    _check_rnn(rnn)
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < rnn.num_layers:
        raise ValueError(f"layer must be an int in [0, {rnn.num_layers - 1}]; got {layer!r}")


def _layer_weights(rnn, layer, reverse):
    """``(weight_ih, weight_hh, bias_ih + bias_hh or None)`` of one layer and direction."""
    _check_layer(rnn, layer)
    check_bool("reverse", reverse)
    if reverse and not rnn.bidirectional:
        raise ValueError("reverse=True needs a bidirectional layer")
    return rnn._weights(layer, "_reverse" if reverse else "")


def _target(first, xp, device, dtype):
    """``(xp, device, dtype)`` of a new layer: ``dtype`` defaults to ``first``'s."""
    xp, device = resolve_namespace(xp, device)
    if dtype is None and is_array(first):
        dtype = dtype_name(namespace_of(first), first.dtype)
    return xp, device, resolve_dtype(xp, dtype)


def _from_transposed(weights, names, nonlinearity, batch_first, xp, device, dtype):
    """A one-layer RNN from ``(D, H)`` input and ``(H, H)`` recurrent weights and a bias."""
    n_in, n_rec, n_b = names
    check_real_arrays(weights)
    kernel, recurrent = weights[n_in], weights[n_rec]
    if kernel.ndim != 2:
        raise ValueError(f"{n_in} must have shape (D, H); got {shape_str(kernel.shape)}")
    D, H = kernel.shape
    if tuple(recurrent.shape) != (H, H):
        raise ValueError(
            f"{n_rec} must have shape (H, H) = {shape_str((H, H))} to match {n_in} (D, H) = "
            f"{shape_str(kernel.shape)}; got {shape_str(recurrent.shape)}"
        )
    bias = weights.get(n_b)
    if bias is not None and tuple(bias.shape) != (H,):
        raise ValueError(
            f"{n_b} must have shape (H,) = {shape_str((H,))} to match {n_in} (D, H) = "
            f"{shape_str(kernel.shape)}; got {shape_str(bias.shape)}"
        )
    xp, device, dtype = _target(kernel, xp, device, dtype)
    rnn = RNN(D, H, nonlinearity=nonlinearity, bias=bias is not None, batch_first=batch_first,
              xp=xp, device=device, dtype=dtype, seed=0)
    state = {
        "weight_ih_l0": xp.permute_dims(move(kernel, xp, device, dtype, name=n_in), (1, 0)),
        "weight_hh_l0": xp.permute_dims(move(recurrent, xp, device, dtype, name=n_rec), (1, 0)),
    }
    if bias is not None:
        b = move(bias, xp, device, dtype, name=n_b)
        state["bias_ih_l0"] = b
        state["bias_hh_l0"] = xp.zeros_like(b)
    return rnn.load_state_dict(state)
