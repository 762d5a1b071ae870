"""torch's parameter names of a recurrent layer, and the reader of a torch module or state dict.

A recurrent layer keeps its parameters under ``torch.nn``'s names, for each
layer ``k`` and direction (suffix ``""`` forward, ``"_reverse"`` reverse)::

    weight_ih_l{k}{sfx}   (G * H, D_k)     D_0 = D, D_k = dirs * H_out after
    weight_hh_l{k}{sfx}   (G * H, H_out)
    bias_ih_l{k}{sfx}     (G * H,)         only with bias=True
    bias_hh_l{k}{sfx}     (G * H,)
    weight_hr_l{k}{sfx}   (P, H)           only with proj_size P > 0 (torch's LSTM)

where ``G`` is the number of gates stacked in the rows (1 for the Elman
``RNN``, 4 for an LSTM, 3 for a GRU) and ``H_out`` is ``P`` with a
projection, else ``H``. This module holds these rules once, for the layer
(``rnn_xp.layer``) and the converters (``rnn_xp.convert``) alike: the
direction suffixes, the shapes, the check of a state dict against them, and
:func:`read_torch`, which builds a layer class from a ``torch.nn`` module or
its state dict. It imports no other floor: ``layer`` and ``convert`` both
use it without a circle.
"""

from __future__ import annotations

import math

from ._backends import dtype_name
from ._checks import check_real_arrays, shape_str
from ._compat import is_array, namespace_of, refuse_masked

SUFFIXES = ("", "_reverse")  # the parameter-name suffix of each direction, forward first


def direction_suffixes(num_directions):
    """The suffixes of ``num_directions`` directions: ``("",)`` or ``("", "_reverse")``."""
    return SUFFIXES[:num_directions]


def param_shapes(D, H, num_layers, num_directions, bias, *, gates=1, proj_size=0):
    """``{name: shape}`` of every parameter, in torch's order.

    Parameters
    ----------
    D, H, num_layers, num_directions : int
        Input features, hidden units, stacked layers, directions (1 or 2).
    bias : bool
        With ``bias_ih`` and ``bias_hh``.
    gates : int, optional
        Row blocks of ``H`` in ``weight_ih``/``weight_hh``/the biases: 1 for
        an Elman RNN, 4 for an LSTM, 3 for a GRU.
    proj_size : int, optional
        torch's LSTM projection ``P``: adds ``weight_hr (P, H)`` and makes
        the recurrent input and the layer's output ``P`` wide.

    Examples
    --------
    >>> param_shapes(3, 4, 1, 2, False)
    {'weight_ih_l0': (4, 3), 'weight_hh_l0': (4, 4), 'weight_ih_l0_reverse': (4, 3), 'weight_hh_l0_reverse': (4, 4)}
    >>> param_shapes(3, 4, 1, 1, True, gates=4, proj_size=2)["weight_hh_l0"]
    (16, 2)
    """
    out_size = proj_size or H
    shapes = {}
    for k in range(num_layers):
        D_k = D if k == 0 else out_size * num_directions
        for suffix in direction_suffixes(num_directions):
            shapes[f"weight_ih_l{k}{suffix}"] = (gates * H, D_k)
            shapes[f"weight_hh_l{k}{suffix}"] = (gates * H, out_size)
            if bias:
                shapes[f"bias_ih_l{k}{suffix}"] = (gates * H,)
                shapes[f"bias_hh_l{k}{suffix}"] = (gates * H,)
            if proj_size:
                shapes[f"weight_hr_l{k}{suffix}"] = (proj_size, H)
    return shapes


def param_count(shapes):
    """The number of values the parameters of ``shapes`` hold together."""
    return sum(math.prod(shape) for shape in shapes.values())


def direction_weights(params, k, suffix):
    """``(weight_ih, weight_hh, bias_ih + bias_hh or None)`` of layer ``k`` and one direction.

    ``params`` maps torch's names to arrays; without ``bias_ih_l{k}{suffix}``
    the layer has no bias. The two biases are folded into one, as the
    recurrence adds them both.
    """
    b = None
    if f"bias_ih_l{k}{suffix}" in params:
        b = params[f"bias_ih_l{k}{suffix}"] + params[f"bias_hh_l{k}{suffix}"]  # (H,)
    return params[f"weight_ih_l{k}{suffix}"], params[f"weight_hh_l{k}{suffix}"], b


def check_state_dict(state_dict, shapes, target, label="state_dict"):
    """Every key, type, shape and dtype of ``state_dict`` against ``shapes``, before anything is made.

    One ``ValueError`` lists every missing key, unexpected key and wrong shape;
    a value that is not an array, a masked array or not real floating is a
    ``TypeError`` naming its key. ``target`` describes the layer in messages,
    ``label`` names the mapping (``state_dict``, ``params``).
    """
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"{label} must be a mapping; got {type(state_dict).__name__}")
    for name in shapes:
        if name in state_dict:
            refuse_masked(f"{label}[{name!r}]", state_dict[name])
            if not is_array(state_dict[name]):
                raise TypeError(
                    f"{label}[{name!r}] must be an array of shape {shape_str(shapes[name])}; "
                    f"got {type(state_dict[name]).__name__}"
                )
    missing = [name for name in shapes if name not in state_dict]
    unexpected = [name for name in state_dict if name not in shapes]
    wrong = [
        f"{name}: got {shape_str(tuple(state_dict[name].shape))}, need {shape_str(shape)}"
        for name, shape in shapes.items()
        if name in state_dict and tuple(state_dict[name].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong))
    if problems:
        raise ValueError(f"{label} does not fit {target}: " + ", ".join(problems))
    for name in shapes:
        value = state_dict[name]
        if not namespace_of(value).isdtype(value.dtype, "real floating"):
            raise TypeError(f"{label}[{name!r}] must have a real floating dtype; got {value.dtype}")


def is_torch_module(obj):
    """A ``torch.nn.Module`` (torch is imported only when ``obj`` comes from it)."""
    if not type(obj).__module__.startswith("torch"):
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def read_torch(cls, module_or_state_dict, *, module="RNN", gates=1, options=None, defaults=None,
               projection=False, xp=None, device=None, dtype=None):
    """A layer of class ``cls`` with the configuration and weights of a ``torch.nn`` module or state dict.

    What the recurrent layers share: the reading of sizes, directions, bias,
    dropout and training mode from a module, or of the configuration from a
    state dict's names and shapes (every key and shape checked before
    anything is allocated), then ``cls.from_params`` with the weights. What
    differs between cells comes as arguments.

    Parameters
    ----------
    cls : type
        The layer class; it has ``from_params(params, input_size,
        hidden_size, num_layers, *, **config)``.
    module_or_state_dict : torch.nn.Module or mapping
    module : str, optional
        The ``torch.nn`` class the layer mirrors (``"RNN"``, ``"LSTM"``,
        ``"GRU"``); a module of another class is a ``TypeError``.
    gates : int, optional
        Row blocks of ``H`` in torch's weights (see :func:`param_shapes`).
    options : dict, optional
        The options a state dict does not hold (``nonlinearity``,
        ``batch_first``, ...), name to the value given or ``None``. For a
        module, each is read from the module, and a value given must agree.
        For a state dict, ``None`` takes ``defaults[name]``.
    defaults : dict, optional
        torch's defaults of ``options``.
    projection : bool, optional
        The layer takes ``proj_size`` (torch's LSTM): read it from the
        module or from ``weight_hr_l0``. Else a module with ``proj_size``
        is a ``ValueError``.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights'.
    """
    obj = module_or_state_dict
    options = dict(options or {})
    defaults = dict(defaults or {})
    if is_torch_module(obj):
        import torch

        if not isinstance(obj, getattr(torch.nn, module)):
            kind = type(obj).__name__
            hint = (f"rnn_xp.{kind}.from_torch (or rnn_xp.convert.from_torch) reads it"
                    if kind in ("RNN", "LSTM", "GRU") else "which rnn_xp cannot run")  # fmt: skip
            raise TypeError(
                f"module_or_state_dict must be a torch.nn.{module} (or a state dict); got {kind}, {hint}"
            )
        proj_size = getattr(obj, "proj_size", 0)
        if proj_size and not projection:
            raise ValueError(f"proj_size must be 0; got {obj.proj_size}")
        config = {name: getattr(obj, name) for name in options}
        for name, given in options.items():
            if given is not None and given != config[name]:
                raise ValueError(f"{name}={given!r} disagrees with the module's {name}={config[name]!r}")
        config.update(bias=obj.bias, bidirectional=obj.bidirectional)
        if projection:
            config["proj_size"] = proj_size
        state = obj.state_dict()
        sizes = (obj.input_size, obj.hidden_size, obj.num_layers)
        dropout = obj.dropout
    elif hasattr(obj, "keys") and hasattr(obj, "__getitem__"):
        state = obj
        sizes, config = read_state_dict(state, module=module, gates=gates, projection=projection)
        config.update({name: defaults.get(name) if given is None else given
                       for name, given in options.items()})
        dropout = 0.0
    else:
        raise TypeError(
            f"module_or_state_dict must be a torch.nn.{module} or a mapping of torch's parameter "
            f"names to arrays; got {type(obj).__name__}"
        )
    first = state["weight_ih_l0"]
    if dtype is None and is_array(first):
        dtype = dtype_name(namespace_of(first), first.dtype)
    layer = cls.from_params(state, *sizes, dropout=dropout, xp=xp, device=device, dtype=dtype,
                            seed=0, **config)
    if is_torch_module(obj):
        layer.train(obj.training)  # the module's mode, as its dropout goes with it
    return layer


def read_state_dict(state, *, module="RNN", gates=1, projection=False):
    """``((D, H, num_layers), config)`` read from a state dict's names and shapes, all checked.

    ``config`` holds ``bias`` and ``bidirectional`` (and ``proj_size`` with
    ``projection``). Every key, shape and dtype is checked against them
    before the caller allocates anything; ``module`` names the layer in the
    messages, ``gates`` and ``projection`` are as in :func:`read_torch`.
    """
    if "weight_ih_l0" not in state or "weight_hh_l0" not in state:
        raise ValueError(
            "state dict must hold at least 'weight_ih_l0' and 'weight_hh_l0'; got keys "
            f"{list(state.keys())}"
        )
    check_real_arrays({"state_dict['weight_ih_l0']": state["weight_ih_l0"],
                       "state_dict['weight_hh_l0']": state["weight_hh_l0"]})
    rows = "(H, D)" if gates == 1 else f"({gates}H, D)"
    shape = tuple(state["weight_ih_l0"].shape)
    if len(shape) != 2 or shape[0] % gates:
        raise ValueError(f"state_dict['weight_ih_l0'] must have shape {rows}; got shape "
                         f"{shape_str(shape)}")
    num_layers = 1
    while f"weight_ih_l{num_layers}" in state:
        num_layers += 1
    H, D = shape[0] // gates, shape[1]
    config = {"bias": "bias_ih_l0" in state or "bias_hh_l0" in state,
              "bidirectional": "weight_ih_l0_reverse" in state}
    proj_size = 0
    if projection and "weight_hr_l0" in state and is_array(state["weight_hr_l0"]) and \
            state["weight_hr_l0"].ndim == 2:
        proj_size = int(state["weight_hr_l0"].shape[0])
    if projection:
        config["proj_size"] = proj_size
    # Every key, shape and dtype before the layer is made: a hostile state dict
    # (weight_ih_l0 of 40,000 rows) must fail at once, not after allocating the layer.
    dirs = 2 if config["bidirectional"] else 1
    shapes = param_shapes(D, H, num_layers, dirs, config["bias"], gates=gates, proj_size=proj_size)
    extra = f", proj_size={proj_size}" if proj_size else ""
    check_state_dict(state, shapes,
                     f"an {module}({D}, {H}, num_layers={num_layers}, bias={config['bias']}, "
                     f"bidirectional={config['bidirectional']}{extra}) read from weight_ih_l0 "
                     f"{shape_str(shape)} and the keys")  # fmt: skip
    return (D, H, num_layers), config
