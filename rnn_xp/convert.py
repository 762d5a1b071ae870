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

from ._activations import ONNX_NAMES, PARAMETERS, check_activation, check_nonlinearity
from ._backends import dtype_name, move, resolve_dtype, resolve_namespace, to_host
from ._checks import check_bool, check_mask, check_real_arrays, shape_str
from ._compat import device as _device_of
from ._compat import is_array, namespace_of
from .layer import RNN

__all__ = [
    "from_cs231n",
    "from_flax",
    "from_keras",
    "from_onnx",
    "from_onnx_model",
    "from_torch",
    "keras_config",
    "keras_merge",
    "onnx_attributes",
    "onnx_y_to_output",
    "output_to_onnx_y",
    "to_cs231n",
    "to_flax",
    "to_keras",
    "to_keras_bidirectional",
    "to_onnx",
    "to_onnx_model",
    "to_torch",
    "torch_state_dict",
]

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
    if rnn.nonlinearity not in ("tanh", "relu") or rnn.clip is not None or rnn.reverse:
        raise ValueError(
            "torch.nn.RNN runs tanh or relu, the same in both directions, without clip or a "
            f"reverse-only direction; this layer has nonlinearity={rnn.nonlinearity!r}, "
            f"clip={rnn.clip}, reverse={rnn.reverse}"
        )
    with _quiet_dropout_warning():
        module = torch.nn.RNN(
            rnn.input_size, rnn.hidden_size, rnn.num_layers, nonlinearity=rnn.nonlinearity,
            bias=rnn.bias, batch_first=rnn.batch_first, dropout=rnn.dropout,
            bidirectional=rnn.bidirectional, device=first.device, dtype=first.dtype,
        )  # fmt: skip
    module.load_state_dict(state)
    return module.train(rnn.training)


class _quiet_dropout_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=".*dropout.*", category=UserWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# -- Keras SimpleRNN -----------------------------------------------------------

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
    Wx, Wh, b = _layer_weights(rnn, layer, reverse)
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
    _check_layer(rnn, layer)
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
    _check_rnn(rnn)
    if reverse and not rnn.bidirectional:
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
        A shape does not match, the activation has no rnn_xp equivalent, or
        a ``Bidirectional`` whose forward layer runs backwards.
    TypeError
        Neither a Keras layer nor a list of arrays.
    """
    obj = layer_or_weights
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
        weights = [list(fwd.get_weights()), list(bwd.get_weights())]
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
        weights = [list(obj.get_weights())]
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
        reverse = bool(go_backwards)
    else:
        raise TypeError(
            "layer_or_weights must be a keras SimpleRNN, a Bidirectional(SimpleRNN) or a list "
            f"[kernel, recurrent_kernel(, bias)]; got {type(obj).__name__}"
        )
    names = ("kernel", "recurrent_kernel", "bias")
    return _from_transposed([dict(zip(names, w)) for w in weights], names, acts, batch_first,
                            xp, device, dtype, reverse=reverse)


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
        ``(T, B, 2H)``; only read with ``mask``.

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
    if mask is not None:
        check_bool("batch_first", batch_first)
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


# -- Flax SimpleCell -------------------------------------------------------------

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


def from_flax(cell_or_params, *, cell=None, nonlinearity=None, residual=None, batch_first=True,
              xp=None, device=None, dtype=None):
    """A one-layer :class:`~rnn_xp.RNN` from a Flax simple RNN cell (NNX or Linen).

    Flax's ``SimpleCell`` computes ``h' = f(x @ Ki + bi + h @ Kh)`` (``+ h``
    inside ``f`` with ``residual=True``), with ``Ki (D, H)``, ``bi (H,)`` and
    ``Kh (H, H)``.

    Parameters
    ----------
    cell_or_params : flax.nnx.SimpleCell or mapping
        An NNX cell (its parameters, ``activation_fn`` and ``residual`` are
        read), or parameters in either layout: NNX's
        ``{"dense_i": {"kernel", "bias"}, "dense_h": {"kernel"}}`` (arrays or
        ``nnx.Param``), Linen's ``{"params": {"i": {"kernel", "bias"}, "h":
        {"kernel"}}}`` (with or without ``"params"``, or under ``"cell"`` as
        ``nn.RNN`` keeps them).
    cell : flax.linen.SimpleCell or flax.nnx.SimpleCell, optional
        For parameters: the cell whose ``activation_fn`` and ``residual``
        they go with.
    nonlinearity : str or callable, optional
        An rnn_xp activation name, or a JAX function (``jax.nn.relu``,
        ``jax.nn.hard_sigmoid``, ... with JAX's parameters). Default: the
        cell's ``activation_fn``, else tanh.
    residual : bool, optional
        Default: the cell's, else False. A residual cell becomes
        ``weight_hh = Kh.T + I``.
    batch_first : bool, optional
        Default True: Flax's ``nn.RNN`` takes ``(B, T, D)``.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the parameters'.

    Returns
    -------
    RNN
        ``weight_ih = Ki.T``, ``weight_hh = Kh.T``, ``bias_ih = bi``,
        ``bias_hh = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> params = {"params": {"i": {"kernel": np.ones((3, 4)), "bias": np.zeros(4)},
    ...                      "h": {"kernel": np.eye(4)}}}
    >>> rnn = convert.from_flax(params, nonlinearity="relu")
    >>> rnn.weight_ih_l0.shape, rnn.nonlinearity, rnn.batch_first
    ((4, 3), 'relu', True)
    """
    obj = cell_or_params
    if hasattr(obj, "activation_fn") and hasattr(obj, "dense_i"):  # an NNX SimpleCell (not its State)
        if cell is not None:
            raise ValueError("cell= is for parameters; an NNX cell carries its own")
        cell, params = obj, {"dense_i": {"kernel": obj.dense_i.kernel, "bias": obj.dense_i.bias},
                             "dense_h": {"kernel": obj.dense_h.kernel}}
    elif hasattr(obj, "keys") and hasattr(obj, "__getitem__"):
        params = obj
    else:
        raise TypeError("cell_or_params must be a flax.nnx.SimpleCell or a mapping of its "
                        f"parameters; got {type(obj).__name__}")
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
    rnn = _from_transposed([weights], ("kernel", "recurrent_kernel", "bias"), [act], batch_first,
                           xp, device, dtype)
    if residual:  # f(x Ki + b + h Kh + h): the recurrent matrix is Kh + I
        Wh = rnn.params["weight_hh_l0"]
        eye = rnn.xp.eye(rnn.hidden_size, dtype=rnn.dtype, device=rnn.device)
        rnn.params["weight_hh_l0"] = Wh + eye
    return rnn


def _flax_params(params):
    """``(Ki, bi, Kh)`` from NNX's or Linen's parameter layout."""
    p = params
    for key in ("params", "cell"):
        if hasattr(p, "keys") and key in p and not {"i", "dense_i"} & set(p.keys()):
            p = p[key]
    if "dense_i" in p and "dense_h" in p:
        i, h = p["dense_i"], p["dense_h"]
    elif "i" in p and "h" in p:
        i, h = p["i"], p["h"]
    else:
        raise ValueError(
            "the parameters must hold NNX's {'dense_i', 'dense_h'} or Linen's {'i', 'h'} "
            f"(optionally under 'params' and 'cell'); got keys {list(p.keys())}"
        )
    try:
        kernel_i, bias_i, kernel_h = (_unwrap(i["kernel"]), _unwrap(i["bias"]), _unwrap(h["kernel"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the input part needs 'kernel' and 'bias', the recurrent part 'kernel'; "
                         f"missing {exc}") from None
    if "bias" in h:
        raise ValueError("the recurrent part has a bias; Flax's SimpleCell has none there")
    return kernel_i, bias_i, kernel_h


def to_flax(rnn, *, layer=0, reverse=False, layout="linen"):
    """One layer and direction as a Flax ``SimpleCell``'s parameters.

    Parameters
    ----------
    rnn : RNN
    layer : int, optional
    reverse : bool, optional
        The reverse direction of a bidirectional layer.
    layout : {"linen", "nnx"}, optional
        ``"linen"``: ``{"params": {"i": {"kernel", "bias"}, "h": {"kernel"}}}``,
        the variables of ``flax.linen.SimpleCell`` (``cell.apply(variables,
        carry, x)``; under ``{"params": {"cell": ...}}`` for ``nn.RNN``).
        ``"nnx"``: ``{"dense_i": {"kernel", "bias"}, "dense_h": {"kernel"}}``,
        the pure dict of ``nnx.state(flax.nnx.SimpleCell(...))``.

    Returns
    -------
    dict
        Arrays of the layer's library (``rnn.to("jax")`` first for JAX
        arrays): ``kernel = weight_ih.T``, ``recurrent kernel = weight_hh.T``,
        ``bias = bias_ih + bias_hh`` (zeros without bias). The cell must be
        made with the matching ``activation_fn`` and ``residual=False``.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> p = convert.to_flax(RNN(3, 4, seed=0), layout="nnx")
    >>> p["dense_i"]["kernel"].shape, p["dense_h"]["kernel"].shape
    ((3, 4), (4, 4))
    """
    if layout not in ("linen", "nnx"):
        raise ValueError(f"layout must be 'linen' or 'nnx'; got {layout!r}")
    Wx, Wh, b = _layer_weights(rnn, layer, reverse)
    xp = rnn.xp
    if b is None:
        b = xp.zeros((rnn.hidden_size,), dtype=rnn.dtype, device=rnn.device)
    i = {"kernel": xp.permute_dims(Wx, (1, 0)), "bias": b}
    h = {"kernel": xp.permute_dims(Wh, (1, 0))}
    return {"params": {"i": i, "h": h}} if layout == "linen" else {"dense_i": i, "dense_h": h}



def _is_simple_rnn(layer):
    """A Keras ``SimpleRNN`` (or a subclass of it)."""
    return any(cls.__name__ == "SimpleRNN" for cls in type(layer).__mro__)


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
    return _from_transposed([weights], ("Wx", "Wh", "b"), [check_activation(nonlinearity)],
                            batch_first, xp, device, dtype)


# -- ONNX RNN ------------------------------------------------------------------


def to_onnx(rnn, *, layer=0):
    """One layer as the ONNX ``RNN`` operator's inputs ``W``, ``R``, ``B``.

    Returns
    -------
    dict
        ``{"W": [dirs, H, D], "R": [dirs, H, H], "B": [dirs, 2H]}`` in the
        layer's library; ``B`` is ``[bias_ih, bias_hh]`` per direction and
        absent for a layer without bias. :func:`onnx_attributes` gives the
        node's attributes, :func:`to_onnx_model` a whole model.

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

    ``activation_alpha`` and ``activation_beta`` are written when an
    activation takes them: the values of the activations that take the
    parameter, in direction order (how the ONNX specification and
    onnxruntime consume them), padded with 0.0 to one entry per direction
    (which ``onnx.reference`` requires). They are always written, because
    onnxruntime's RNN kernel does not fill in ONNX's defaults. ``clip`` is
    written when the layer clips.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> convert.onnx_attributes(RNN(3, 4, nonlinearity="relu", bidirectional=True))
    {'hidden_size': 4, 'direction': 'bidirectional', 'activations': ['Relu', 'Relu'], 'layout': 0}
    >>> convert.onnx_attributes(RNN(3, 4, nonlinearity="leaky_relu", clip=3.0, reverse=True))
    {'hidden_size': 4, 'direction': 'reverse', 'activations': ['LeakyRelu'], 'layout': 0, 'activation_alpha': [0.01], 'clip': 3.0}
    """
    _check_rnn(rnn)
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


def from_onnx(W, R, B=None, *, direction=None, activations=None, activation_alpha=None,
              activation_beta=None, clip=None, layout=0, xp=None, device=None, dtype=None):
    """A one-layer :class:`~rnn_xp.RNN` from the ONNX ``RNN`` operator's weights and attributes.

    Parameters
    ----------
    W, R, B : array
        ``W [dirs, H, D]``, ``R [dirs, H, H]`` and optionally ``B [dirs, 2H]``.
    direction : {"forward", "reverse", "bidirectional"}, optional
        Default: ``"forward"`` for one direction, ``"bidirectional"`` for two.
        ``"reverse"`` gives a layer with ``reverse=True``.
    activations : list of str, optional
        ONNX names (``"Tanh"``, ``"Relu"``, ``"Sigmoid"``, ``"Affine"``,
        ``"LeakyRelu"``, ``"ThresholdedRelu"``, ``"ScaledTanh"``,
        ``"HardSigmoid"``, ``"Elu"``, ``"Softsign"``, ``"Softplus"``), one per
        direction; default Tanh. Two names for one direction (ONNX's old
        default ``["Tanh", "Tanh"]``) use the first, as onnxruntime does.
    activation_alpha, activation_beta : list of float, optional
        The node's attributes, consumed in order by the activations that take
        the parameter (as the ONNX specification says and onnxruntime does;
        values past those are ignored, as long as there are at most one per
        direction). Missing values take ONNX's defaults.
    clip : float, optional
        The node's ``clip``.
    layout : {0, 1}, optional
        The node's ``layout``: 1 means ``X [B, T, D]`` (``batch_first``).
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' dtype.

    Returns
    -------
    RNN

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> W, R = np.ones((2, 4, 3)), np.zeros((2, 4, 4))
    >>> rnn = convert.from_onnx(W, R, activations=["LeakyRelu", "Tanh"], activation_alpha=[0.1, 0.0])
    >>> rnn.activations
    (('leaky_relu', 0.1, None), ('tanh', None, None))
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
    if direction not in _DIRECTIONS or _DIRECTIONS[direction] != dirs:
        raise ValueError(f"direction={direction!r} does not fit W with {dirs} direction(s)")
    names, alphas, betas = _onnx_activations(activations, activation_alpha, activation_beta, dirs)
    if isinstance(layout, bool) or not isinstance(layout, int) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    xp, device, dtype = _target(W, xp, device, dtype)
    Wt, Rt = move(W, xp, device, dtype, name="W"), move(R, xp, device, dtype, name="R")
    Bt = None if B is None else move(B, xp, device, dtype, name="B")
    rnn = RNN(D, H, nonlinearity=names, bias=B is not None, batch_first=layout == 1,
              bidirectional=dirs == 2, activation_alpha=alphas, activation_beta=betas, clip=clip,
              reverse=direction == "reverse", xp=xp, device=device, dtype=dtype, seed=0)
    state = {}
    for d, s in enumerate(("", "_reverse")[:dirs]):
        state[f"weight_ih_l0{s}"] = Wt[d, ...]
        state[f"weight_hh_l0{s}"] = Rt[d, ...]
        if Bt is not None:
            state[f"bias_ih_l0{s}"] = Bt[d, :H]
            state[f"bias_hh_l0{s}"] = Bt[d, H:]
    return rnn.load_state_dict(state)


_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
_FROM_ONNX_NAMES = {onnx: name for name, onnx in ONNX_NAMES.items()}


def _onnx_activations(activations, alpha, beta, dirs):
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
    if len(activations) != dirs or any(a not in _FROM_ONNX_NAMES for a in activations):
        raise ValueError(
            f"activations must be {dirs} name(s) from {list(_FROM_ONNX_NAMES)}, one per "
            f"direction; got {activations}"
        )
    names = [_FROM_ONNX_NAMES[a] for a in activations]
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


# -- ONNX model files ------------------------------------------------------------

_ONNX_ELEM = {"float16": 10, "float32": 1, "float64": 11}  # onnx.TensorProto data types


def to_onnx_model(rnn, f=None, *, opset=14, initial_state=False, lengths=False, layout=0):
    """A complete ONNX model of the layer: one ``RNN`` node per layer.

    Parameters
    ----------
    rnn : RNN
        Any layer without ``leak`` (the operator has none); masks are call
        arguments, not part of a model (use ``lengths=True`` for padding).
    f : str, path or binary file object, optional
        Where to write the model; it is returned either way.
    opset : int, optional
        The ``ai.onnx`` opset, from 10 to what the installed ``onnx`` knows.
    initial_state : bool, optional
        Add the input ``h0 [num_layers * dirs, B, H]`` (else the nodes start
        from zeros).
    lengths : bool, optional
        Add the input ``lengths [B]`` (int32), every node's ``sequence_lens``.
    layout : {0, 1}, optional
        The nodes' ``layout``. 0: time-major nodes, with a ``Transpose`` at
        each end for a ``batch_first`` layer (onnxruntime runs these). 1: for
        a ``batch_first`` layer, batch-major nodes and no transposes (opset
        14 or later; ``onnx.reference`` runs them, onnxruntime's CPU ``RNN``
        kernel refuses ``layout=1``).

    Returns
    -------
    onnx.ModelProto
        Inputs ``input`` (``[T, B, D]``, ``[B, T, D]`` with ``batch_first``;
        ``T`` and ``B`` symbolic), then ``h0`` and ``lengths`` when asked for;
        outputs ``output`` and ``h_n``, the shapes and values of ``rnn(input,
        h0, lengths=lengths)``. Between layers each node's ``Y`` becomes the
        next ``X`` through ``Transpose`` and ``Reshape`` (``Reshape`` alone with
        ``layout=1``). The weights are initializers in the layer's dtype.

    Raises
    ------
    ValueError
        The layer has ``leak != 1``, ``opset`` is out of range, or
        ``layout=1`` is asked of a time-major layer or below opset 14.

    Notes
    -----
    onnxruntime runs float32 ``RNN`` nodes only; ``onnx.reference`` runs any
    dtype but only the Tanh and Affine activations, without ``clip`` or
    ``sequence_lens``.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> model = convert.to_onnx_model(RNN(3, 4, num_layers=2, bidirectional=True, seed=0))
    >>> [n.op_type for n in model.graph.node if n.op_type == "RNN"]
    ['RNN', 'RNN']
    >>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    (['input'], ['output', 'h_n'])
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    _check_rnn(rnn)
    attrs = onnx_attributes(rnn)  # the leak check
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 10 <= opset <= top:
        raise ValueError(f"opset must be an int from 10 to {top}; got {opset!r}")
    check_bool("initial_state", initial_state)
    check_bool("lengths", lengths)
    name = dtype_name(rnn.xp, rnn.dtype)
    elem = _ONNX_ELEM[name]
    L, dirs, H, D = rnn.num_layers, rnn.num_directions, rnn.hidden_size, rnn.input_size
    if isinstance(layout, bool) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    if layout == 1 and not (rnn.batch_first and opset >= 14):
        raise ValueError(
            "layout=1 needs a batch_first layer and opset 14 or later; got "
            f"batch_first={rnn.batch_first}, opset={opset}"
        )
    use_layout = layout == 1
    if not use_layout:
        del attrs["layout"]  # 0, the default (and no such attribute before opset 14)

    nodes, inits = [], []

    def node(op, inputs, outputs, **kwargs):
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **kwargs))
        return outputs[0]

    def const(tensor_name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), tensor_name))
        return tensor_name

    x = "input"
    if rnn.batch_first and not use_layout:
        x = node("Transpose", [x], ["input_time_major"], perm=[1, 0, 2])  # [T, B, D]
    merge = const("merge_directions", np.array([0, 0, -1], dtype=np.int64))
    finals = []
    for k in range(L):
        w = {key: to_host(a).astype(name) for key, a in to_onnx(rnn, layer=k).items()}
        inputs = [x, const(f"W_l{k}", w["W"]), const(f"R_l{k}", w["R"]),
                  const(f"B_l{k}", w["B"]) if "B" in w else "", "lengths" if lengths else "", ""]
        if initial_state:
            h0_k = node("Slice", ["h0", const(f"h0_start_l{k}", np.array([k * dirs])),
                                  const(f"h0_end_l{k}", np.array([(k + 1) * dirs])),
                                  const(f"h0_axis_l{k}", np.array([0]))], [f"h0_l{k}"])  # [dirs, B, H]
            if use_layout:
                h0_k = node("Transpose", [h0_k], [f"h0_l{k}_batch_major"], perm=[1, 0, 2])
            inputs[5] = h0_k
        while inputs[-1] == "":
            inputs.pop()
        Y, Y_h = f"Y_l{k}", f"Y_h_l{k}"
        node("RNN", inputs, [Y, Y_h], **attrs)
        if use_layout:  # Y [B, T, dirs, H], Y_h [B, dirs, H]
            x = node("Reshape", [Y, merge], [f"output_l{k}"])  # [B, T, dirs * H]
            Y_h = node("Transpose", [Y_h], [f"h_n_l{k}"], perm=[1, 0, 2])  # [dirs, B, H]
        else:  # Y [T, dirs, B, H], Y_h [dirs, B, H]
            Yt = node("Transpose", [Y], [f"Y_l{k}_time_batch"], perm=[0, 2, 1, 3])  # [T, B, dirs, H]
            x = node("Reshape", [Yt, merge], [f"output_l{k}"])  # [T, B, dirs * H]
        finals.append(Y_h)
    if rnn.batch_first and not use_layout:
        node("Transpose", [x], ["output"], perm=[1, 0, 2])  # [B, T, dirs * H]
    else:
        node("Identity", [x], ["output"])
    node("Concat", finals, ["h_n"], axis=0)  # [L * dirs, B, H]

    seq = ["B", "T"] if rnn.batch_first else ["T", "B"]
    graph_inputs = [helper.make_tensor_value_info("input", elem, [*seq, D])]
    if initial_state:
        graph_inputs.append(helper.make_tensor_value_info("h0", elem, [L * dirs, "B", H]))
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("lengths", 6, ["B"]))  # int32
    graph_outputs = [helper.make_tensor_value_info("output", elem, [*seq, dirs * H]),
                     helper.make_tensor_value_info("h_n", elem, [L * dirs, "B", H])]
    graph = helper.make_graph(nodes, "rnn_xp", graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rnn_xp",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    if f is not None:
        if hasattr(f, "write"):
            f.write(model.SerializeToString())
        else:
            onnx.save(model, f)
    return model


# Nodes that only move, cut or copy data: what may sit between RNN nodes.
_GLUE = frozenset({"Cast", "Concat", "Constant", "ConstantOfShape", "Expand", "Gather", "Identity",
                   "Reshape", "Shape", "Slice", "Squeeze", "Transpose", "Unsqueeze"})


def from_onnx_model(model_or_path, *, xp=None, device=None, dtype=None):
    """An :class:`~rnn_xp.RNN` from an ONNX model of ``RNN`` nodes with initializer weights.

    Reads the models :func:`to_onnx_model` and ``torch.onnx.export(...,
    dynamo=False)`` write for a ``torch.nn.RNN``: one ``RNN`` node per layer
    (stacked layers chained through ``Transpose``/``Reshape``/``Squeeze``),
    weights as initializers or ``Constant`` nodes, ``initial_h`` absent,
    zeros or sliced from a graph input, ``sequence_lens`` absent or a graph
    input.

    Parameters
    ----------
    model_or_path : onnx.ModelProto, bytes, str, path or binary file object
        The model. External data is read only from a path's folder, and only
        from files inside it.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights'.

    Returns
    -------
    RNN
        With the nodes' configuration; ``rnn(x, h0, lengths=lengths)`` gives
        the layer's ``output`` and ``h_n`` for the model's inputs (``h0`` and
        ``lengths`` where the model has them).

    Raises
    ------
    ValueError
        A node that is neither an ``RNN`` node nor one that reshapes data,
        nodes that disagree on their configuration, weights that are not
        constants, an ``initial_h`` that is neither zeros nor a graph input, a
        layer not fed by the previous one's ``Y``, or external data outside
        the model's folder. The message names the node and what it lacks.
    TypeError
        ``model_or_path`` is none of the accepted types.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import RNN, convert
    >>> rnn = RNN(3, 4, num_layers=2, batch_first=True, nonlinearity="relu", seed=0)
    >>> again = convert.from_onnx_model(convert.to_onnx_model(rnn))
    >>> again.num_layers, again.batch_first, again.nonlinearity
    (2, True, 'relu')
    >>> all(np.array_equal(again.params[k], v) for k, v in rnn.params.items())
    True
    """
    model, base_dir = _load_onnx(model_or_path)
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    producer = {}
    for i, nd in enumerate(graph.node):
        if nd.domain not in ("", "ai.onnx") or (nd.op_type != "RNN" and nd.op_type not in _GLUE):
            raise ValueError(
                f"node {_label(nd, i)} is {nd.domain + '.' if nd.domain else ''}{nd.op_type}: "
                "from_onnx_model reads graphs of RNN nodes joined only by nodes that reshape "
                f"data ({', '.join(sorted(_GLUE))})"
            )
        for out in nd.output:
            producer[out] = (i, nd)
        if nd.op_type == "Constant":
            consts[nd.output[0]] = _constant_tensor(nd, i)
    rnns = [(i, nd) for i, nd in enumerate(graph.node) if nd.op_type == "RNN"]
    if not rnns:
        raise ValueError(
            "the graph has no RNN node; its nodes are "
            f"{[nd.op_type for nd in graph.node]}"
        )
    inputs = [v.name for v in graph.input if v.name not in consts]
    reader = _GraphReader(consts, producer, base_dir)

    configs, weights = [], []
    for i, nd in rnns:
        configs.append(reader.config(nd, i))
        weights.append(reader.weights(nd, i, configs[-1]))
    first = configs[0]
    for k, ((i, nd), cfg) in enumerate(zip(rnns, configs)):
        for key in ("hidden_size", "direction", "activations", "alpha", "beta", "clip"):
            if cfg[key] != first[key]:
                raise ValueError(
                    f"node {_label(nd, i)} has {key}={cfg[key]!r} but the first RNN node has "
                    f"{first[key]!r}: an rnn_xp layer has one configuration for every layer"
                )
        if (weights[k]["B"] is None) != (weights[0]["B"] is None):
            raise ValueError(f"node {_label(nd, i)} has a bias B and the first RNN node has not, "
                             "or the other way round")
    dirs, H = _DIRECTIONS[first["direction"]], first["hidden_size"]

    # The data path: the graph input into node 0, each Y into the next X.
    used, seq_sources = set(), []
    batch_first = None
    for k, (i, nd) in enumerate(rnns):
        want = ["B", "T", "D"] if configs[k]["layout"] else ["T", "B", "D"]
        if k == 0:
            source, labels = reader.trace(nd.input[0], f"X of node {_label(nd, i)}",
                                          lambda name: name in inputs, ["x0", "x1", "x2"])
            where = dict(zip(labels, want)) if sorted(labels) == ["x0", "x1", "x2"] else {}
            order = [where.get(f"x{j}") for j in range(3)]
            if order not in (["T", "B", "D"], ["B", "T", "D"]):
                raise ValueError(f"X of node {_label(nd, i)} is not the graph input {source!r} "
                                 "or its transpose (T, B) <-> (B, T)")
            batch_first = order[0] == "B"
            used.add(source)
        else:
            prev_i, prev = rnns[k - 1]
            start = ["B", "T", "dir", "H"] if configs[k - 1]["layout"] else ["T", "dir", "B", "H"]
            _, labels = reader.trace(nd.input[0], f"X of node {_label(nd, i)}",
                                     lambda name, p=prev: name == p.output[0], start, dirs=dirs, H=H)
            if labels != [w if w != "D" else "dirH" for w in want]:
                raise ValueError(
                    f"X of node {_label(nd, i)} is not the Y of node {_label(prev, prev_i)} with its "
                    f"directions merged into the features (got axes {labels})"
                )
        seq = nd.input[4] if len(nd.input) > 4 else ""
        h_init = nd.input[5] if len(nd.input) > 5 else ""
        seq_sources.append(reader.sequence_lens(seq, nd, i, inputs))
        used.update(seq_sources[-1])
        used.update(reader.initial_h(h_init, nd, i, k, configs[k]["layout"], dirs, len(rnns), inputs))
    if any(src != seq_sources[0] for src in seq_sources):
        raise ValueError("the RNN nodes disagree on sequence_lens: all of them or none must "
                         "read the same graph input")
    extra = [name for name in inputs if name not in used]
    if extra:
        raise ValueError(f"the graph inputs {extra} feed no RNN node's X, initial_h or sequence_lens")

    W0 = weights[0]["W"]
    xp, device, dtype = _target(W0, xp, device, dtype)
    rnn = RNN(W0.shape[2], H, len(rnns), nonlinearity=first["activations"],
              bias=weights[0]["B"] is not None, batch_first=batch_first,
              bidirectional=dirs == 2, activation_alpha=first["alpha"], activation_beta=first["beta"],
              clip=first["clip"], reverse=first["direction"] == "reverse", xp=xp, device=device,
              dtype=dtype, seed=0)
    state = {}
    for k, w in enumerate(weights):
        for d, s in enumerate(("", "_reverse")[:dirs]):
            state[f"weight_ih_l{k}{s}"] = w["W"][d]
            state[f"weight_hh_l{k}{s}"] = w["R"][d]
            if w["B"] is not None:
                state[f"bias_ih_l{k}{s}"] = w["B"][d, :H]
                state[f"bias_hh_l{k}{s}"] = w["B"][d, H:]
    try:
        return rnn.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"the RNN nodes' weights do not chain into one layer: {exc}") from None


def _label(nd, i):
    return f"{nd.name!r} (#{i}, {nd.op_type})" if nd.name else f"#{i} ({nd.op_type})"


def _load_onnx(model_or_path):
    """``(ModelProto, folder of its external data or None)``, external data not loaded."""
    import os

    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, None
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model_or_path)), None
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        return onnx.load(path, load_external_data=False), os.path.dirname(os.path.abspath(path))
    if hasattr(model_or_path, "read"):
        return onnx.load_from_string(model_or_path.read()), None
    raise TypeError(
        "model_or_path must be an onnx.ModelProto, bytes, a path or a binary file object; "
        f"got {type(model_or_path).__name__}"
    )


def _constant_tensor(nd, i):
    from onnx import helper, numpy_helper

    for attr in nd.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            return value
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            import numpy as np

            kind = np.float32 if "float" in attr.name else np.int64
            return numpy_helper.from_array(np.asarray(value, dtype=kind), nd.output[0])
    raise ValueError(f"node {_label(nd, i)} holds a constant rnn_xp cannot read "
                     f"({[a.name for a in nd.attribute]})")


class _GraphReader:
    """Reads RNN nodes, their constants and the data paths between them."""

    def __init__(self, consts, producer, base_dir):
        self.consts, self.producer, self.base_dir = consts, producer, base_dir

    def array(self, name, what):
        """The constant ``name`` as a NumPy array, else ``None`` (not a constant)."""
        from onnx import TensorProto, numpy_helper

        tensor = self.consts.get(name)
        if tensor is None:
            return None
        if tensor.data_location == TensorProto.EXTERNAL:
            tensor = _read_external(tensor, self.base_dir, what)
        return numpy_helper.to_array(tensor)

    def config(self, nd, i):
        from onnx import helper

        a = {attr.name: helper.get_attribute_value(attr) for attr in nd.attribute}
        text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
        direction = text(a.get("direction", b"forward"))
        if direction not in _DIRECTIONS:
            raise ValueError(f"node {_label(nd, i)} has direction={direction!r}")
        dirs = _DIRECTIONS[direction]
        if "hidden_size" not in a:
            raise ValueError(f"node {_label(nd, i)} lacks the attribute hidden_size")
        activations = [text(v) for v in a["activations"]] if "activations" in a else None
        try:
            names, alphas, betas = _onnx_activations(
                activations, a.get("activation_alpha"), a.get("activation_beta"), dirs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"node {_label(nd, i)}: {exc}") from None
        clip = a.get("clip")
        return {"hidden_size": int(a["hidden_size"]), "direction": direction,
                "activations": names, "alpha": alphas, "beta": betas,
                "clip": None if clip is None else float(clip), "layout": int(a.get("layout", 0))}

    def weights(self, nd, i, cfg):
        out = {}
        for j, key in enumerate(("W", "R", "B"), start=1):  # inputs X, W, R, B, sequence_lens, initial_h
            name = nd.input[j] if len(nd.input) > j else ""
            if name == "":
                if key != "B":
                    raise ValueError(f"node {_label(nd, i)} lacks the input {key}")
                out[key] = None
                continue
            arr = self.array(name, f"{key} of node {_label(nd, i)}")
            if arr is None:
                raise ValueError(
                    f"{key} of node {_label(nd, i)} ({name!r}) is not an initializer or a Constant: "
                    "from_onnx_model reads weights that are stored in the model"
                )
            out[key] = arr
        dirs, H = _DIRECTIONS[cfg["direction"]], cfg["hidden_size"]
        W, R, B = out["W"], out["R"], out["B"]
        if W.ndim != 3 or W.shape[:2] != (dirs, H) or R.shape != (dirs, H, H) or (
                B is not None and B.shape != (dirs, 2 * H)):
            raise ValueError(
                f"node {_label(nd, i)} has W {shape_str(W.shape)}, R {shape_str(R.shape)}"
                + ("" if B is None else f", B {shape_str(B.shape)}")
                + f"; its attributes need W [{dirs}, {H}, D], R [{dirs}, {H}, {H}], B [{dirs}, {2 * H}]"
            )
        return out

    def trace(self, name, what, is_source, labels, *, dirs=None, H=None):
        """Walk back from ``name`` to a source; return ``(source, axes at name)``.

        ``labels`` names the source's axes; the nodes on the way (Identity,
        Transpose, Squeeze of a one-direction axis, Reshape that merges the
        directions into the features) map them forward.
        """
        chain = []
        while not is_source(name):
            if name not in self.producer:
                raise ValueError(f"{what} comes from {name!r}, which is not where it should come from")
            i, nd = self.producer[name]
            if nd.op_type not in ("Identity", "Transpose", "Squeeze", "Reshape"):
                raise ValueError(f"{what} passes through node {_label(nd, i)}, which is not an "
                                 "Identity, Transpose, Squeeze or Reshape")
            chain.append((i, nd))
            name = nd.input[0]
        source = name
        labels = list(labels)
        for i, nd in reversed(chain):
            labels = self._apply(nd, i, labels, what, dirs, H)
        return source, labels

    def _apply(self, nd, i, labels, what, dirs, H):
        from onnx import helper

        a = {attr.name: helper.get_attribute_value(attr) for attr in nd.attribute}
        if nd.op_type == "Identity":
            return labels
        if nd.op_type == "Transpose":
            perm = list(a.get("perm", range(len(labels) - 1, -1, -1)))
            return [labels[p] for p in perm]
        if nd.op_type == "Squeeze":
            axes = a.get("axes")
            if axes is None and len(nd.input) > 1 and nd.input[1]:
                axes = self.array(nd.input[1], what)
            axes = [] if axes is None else [int(v) % len(labels) for v in list(axes)]
            if dirs == 1 and [labels[j] for j in axes] == ["dir"]:
                return [("dirH" if lab == "H" else lab) for j, lab in enumerate(labels) if j not in axes]
        if nd.op_type == "Reshape" and len(labels) == 4 and labels[2:] == ["dir", "H"]:
            shape = self.array(nd.input[1], what) if len(nd.input) > 1 else None
            if shape is not None and shape.shape == (3,):
                s = [int(v) for v in shape]
                ok_last = s[2] == -1 and -1 not in s[:2] or s[2] == dirs * H and s[:2].count(-1) <= 1
                if ok_last and all(v in (0, -1) or v > 0 for v in s[:2]):
                    return labels[:2] + ["dirH"]
        raise ValueError(f"{what} passes through node {_label(nd, i)}, which does not only "
                         "reorder axes or merge the directions into the features")

    def sequence_lens(self, name, nd, i, inputs):
        """The graph input that feeds ``sequence_lens`` (through Cast/Identity), as a set."""
        if name == "":
            return set()
        while name not in inputs:
            if name not in self.producer or self.producer[name][1].op_type not in ("Cast", "Identity"):
                raise ValueError(f"sequence_lens of node {_label(nd, i)} ({name!r}) is not a graph input")
            name = self.producer[name][1].input[0]
        return {name}

    def initial_h(self, name, nd, i, k, layout, dirs, L, inputs):
        """Check ``initial_h`` is zeros or this layer's slice of a graph input; return that input, as a set."""
        import numpy as np

        if name == "":
            return set()
        what = f"initial_h of node {_label(nd, i)}"
        start, chain = name, []
        while name not in inputs:
            arr = self.array(name, what)
            if arr is not None:
                if np.any(arr != 0):
                    raise ValueError(f"{what} is a constant that is not zero; rnn_xp layers start "
                                     "from zeros or from h0")
                return set()
            if name not in self.producer:
                raise ValueError(f"{what} ({start!r}) is neither zeros nor a graph input")
            j, prod = self.producer[name]
            if prod.op_type == "ConstantOfShape":
                value = self.array_attr(prod)
                if value is not None and np.any(value != 0):
                    raise ValueError(f"{what} is ConstantOfShape of a value that is not zero")
                return set()
            if prod.op_type not in ("Identity", "Transpose", "Slice", "Cast", "Expand"):
                raise ValueError(f"{what} passes through node {_label(prod, j)}")
            chain.append((j, prod))
            name = prod.input[0]
        labels = ["LD", "B", "H"]
        for j, prod in reversed(chain):
            if prod.op_type == "Slice" and labels[0] == "LD":
                s = [self.array(n, what) if n else None for n in list(prod.input[1:4]) + [""] * 3][:3]
                if any(v is None for v in s) or [int(v) for v in s[2]] != [0]:
                    raise ValueError(f"{what}: node {_label(prod, j)} must slice axis 0 with constants")
                lo, hi = int(s[0][0]), int(s[1][0])
                if (lo, min(hi, L * dirs)) != (k * dirs, (k + 1) * dirs):
                    raise ValueError(f"{what} takes rows {lo}:{hi} of {name!r}; layer {k} needs rows "
                                     f"{k * dirs}:{(k + 1) * dirs}")
                labels = ["dir"] + labels[1:]
            elif prod.op_type == "Transpose":
                perm = list(self._attr(prod, "perm") or [2, 1, 0])
                labels = [labels[p] for p in perm]
            elif prod.op_type not in ("Identity", "Cast"):
                raise ValueError(f"{what} passes through node {_label(prod, j)}")
        if labels[0] == "LD" and L == 1:
            labels[0] = "dir"  # the whole h0 of a one-layer model
        need = ["B", "dir", "H"] if layout else ["dir", "B", "H"]
        if labels != need:
            raise ValueError(f"{what} is not layer {k}'s rows of the graph input {name!r} "
                             f"(axes {labels}, need {need})")
        return {name}

    @staticmethod
    def _attr(nd, key):
        from onnx import helper

        for attr in nd.attribute:
            if attr.name == key:
                return helper.get_attribute_value(attr)
        return None

    def array_attr(self, nd):
        from onnx import numpy_helper

        value = self._attr(nd, "value")
        return None if value is None else numpy_helper.to_array(value)


def _read_external(tensor, base_dir, what):
    """A copy of ``tensor`` with its external data read, from inside ``base_dir`` only."""
    import os

    from onnx import TensorProto

    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if base_dir is None:
        raise ValueError(f"{what} is stored in the external file {location!r}: pass the model's "
                         "path, so that it is read from the model's folder")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.isabs(location) or os.path.commonpath([root, path]) != root or not location:
        raise ValueError(f"{what} points to the external file {location!r}, outside the model's "
                         f"folder {root!r}; rnn_xp reads external data only from inside it")
    if not os.path.isfile(path):
        raise ValueError(f"{what}: the external file {location!r} is missing from {root!r}")
    offset, length = int(info.get("offset", 0)), info.get("length")
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(-1 if length is None else int(length))
    out = TensorProto()
    out.CopyFrom(tensor)
    del out.external_data[:]
    out.data_location = TensorProto.DEFAULT
    out.raw_data = data
    return out




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


def _from_transposed(directions, names, activations, batch_first, xp, device, dtype, *,
                     reverse=False):
    """A one-layer RNN from ``(D, H)`` input and ``(H, H)`` recurrent weights and a bias.

    ``directions`` holds one mapping of ``names`` to arrays per direction
    (two: a bidirectional layer), ``activations`` one ``(name, alpha, beta)``
    per direction.
    """
    n_in, n_rec, n_b = names
    dirs = len(directions)
    checked = []
    for weights in directions:
        weights = {k: v for k, v in weights.items() if v is not None or k != n_b}
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
        checked.append((kernel, recurrent, bias))
    if dirs == 2 and (checked[0][0].shape != checked[1][0].shape
                      or (checked[0][2] is None) != (checked[1][2] is None)):
        raise ValueError(
            f"the two directions have {n_in} {shape_str(checked[0][0].shape)} and "
            f"{shape_str(checked[1][0].shape)}, biases {checked[0][2] is not None} and "
            f"{checked[1][2] is not None}; they must match"
        )
    kernel, _, bias = checked[0]
    D, H = kernel.shape
    xp, device, dtype = _target(kernel, xp, device, dtype)
    rnn = RNN(D, H, nonlinearity=tuple(a[0] for a in activations), bias=bias is not None,
              batch_first=batch_first, bidirectional=dirs == 2,
              activation_alpha=tuple(a[1] for a in activations),
              activation_beta=tuple(a[2] for a in activations), reverse=reverse,
              xp=xp, device=device, dtype=dtype, seed=0)
    state = {}
    for (kernel, recurrent, bias), s in zip(checked, ("", "_reverse")):
        state[f"weight_ih_l0{s}"] = xp.permute_dims(move(kernel, xp, device, dtype), (1, 0))
        state[f"weight_hh_l0{s}"] = xp.permute_dims(move(recurrent, xp, device, dtype), (1, 0))
        if bias is not None:
            b = move(bias, xp, device, dtype)
            state[f"bias_ih_l0{s}"] = b
            state[f"bias_hh_l0{s}"] = xp.zeros_like(b)
    return rnn.load_state_dict(state)
