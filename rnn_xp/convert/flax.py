"""Flax's simple RNN cell (``flax.nnx.SimpleCell``, ``flax.linen.SimpleCell``): parameters both ways.

The cell computes ``h' = f(x @ Ki + bi + h @ Kh)`` (``+ h`` inside ``f`` when
``residual``): Keras's layout, the transposes of torch's matrices, under
NNX's ``dense_i``/``dense_h`` or Linen's ``i``/``h`` names.
"""

from __future__ import annotations

from .._activations import check_activation
from .._checks import check_bool
from .._compat import is_array
from ._common import check_flag, from_transposed, layer_weights

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
    check_flag("residual", residual)
    check_bool("batch_first", batch_first)
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
    rnn = from_transposed([weights], ("kernel", "recurrent_kernel", "bias"), [act], batch_first,
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
    Wx, Wh, b = layer_weights(rnn, layer, reverse)
    xp = rnn.xp
    if b is None:
        b = xp.zeros((rnn.hidden_size,), dtype=rnn.dtype, device=rnn.device)
    i = {"kernel": xp.permute_dims(Wx, (1, 0)), "bias": b}
    h = {"kernel": xp.permute_dims(Wh, (1, 0))}
    return {"params": {"i": i, "h": h}} if layout == "linen" else {"dense_i": i, "dense_h": h}
