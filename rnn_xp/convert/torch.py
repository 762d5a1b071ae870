"""``torch.nn.RNN``, ``LSTM`` and ``GRU``: their modules and state dicts, both ways.

rnn_xp keeps torch's parameter names, shapes and order, so the conversion is
a copy between libraries. Reading a module or a state dict is the layer's
``from_torch`` (:meth:`rnn_xp.RNN.from_torch`, :meth:`rnn_xp.LSTM.from_torch`,
:meth:`rnn_xp.GRU.from_torch`; the rules live in ``rnn_xp._params``, which
the layers and the converters share).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

from .._backends import dtype_name, to_host
from .._params import is_torch_module
from ..layer import GRU, LSTM, RNN


def from_torch(module_or_state_dict, *, xp=None, device=None, dtype=None, nonlinearity=None,
               batch_first=None):
    """An :class:`~rnn_xp.RNN`, :class:`~rnn_xp.LSTM` or :class:`~rnn_xp.GRU` from a torch module or state dict.

    A ``torch.nn.RNN``, ``LSTM`` or ``GRU`` gives the layer of the same
    kind (its ``from_torch``; see there for the parameters). A state dict's
    kind is read from its shapes: ``weight_hh_l0`` ``(G * H, H)`` stacks
    ``G`` = 1, 4 or 3 gates (an LSTM also when it holds ``weight_hr_l0``).
    ``nonlinearity`` applies to an ``RNN`` only.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import LSTM, RNN, convert
    >>> state = RNN(3, 4, bidirectional=True, seed=1).state_dict()   # any library's arrays
    >>> rnn = convert.from_torch(state, nonlinearity="relu")
    >>> rnn.bidirectional, rnn.nonlinearity, rnn.hidden_size
    (True, 'relu', 4)
    >>> type(convert.from_torch(LSTM(3, 4, proj_size=2, seed=1).state_dict())).__name__
    'LSTM'
    """
    cls = _layer_class(module_or_state_dict)
    if cls is RNN:
        return RNN.from_torch(module_or_state_dict, xp=xp, device=device, dtype=dtype,
                              nonlinearity=nonlinearity, batch_first=batch_first)
    if nonlinearity is not None:
        raise ValueError(
            f"nonlinearity is an option of an RNN; this is an {cls.__name__} (its gates' "
            f"activations are fixed by torch); got nonlinearity={nonlinearity!r}"
        )
    return cls.from_torch(module_or_state_dict, xp=xp, device=device, dtype=dtype,
                          batch_first=batch_first)


def _layer_class(obj):
    """``RNN``, ``LSTM`` or ``GRU``: the layer a torch module or state dict holds (``RNN`` when unsure,
    whose reader then says what is wrong)."""
    if is_torch_module(obj):
        import torch

        for cls in (LSTM, GRU):
            if isinstance(obj, getattr(torch.nn, cls.__name__)):
                return cls
        return RNN
    try:
        if "weight_hr_l0" in obj:
            return LSTM
        rows, cols = (int(n) for n in obj["weight_hh_l0"].shape)
    except Exception:  # not a mapping of arrays: RNN.from_torch's checks say what is wrong
        return RNN
    gates = rows // cols if cols and rows % cols == 0 else 1
    return {4: LSTM, 3: GRU}.get(gates, RNN)


def torch_state_dict(rnn, *, device=None):
    """The layer's parameters as torch tensors, ready for ``nn.RNN.load_state_dict``.

    Parameters
    ----------
    rnn : RNN, LSTM or GRU
    device : torch device or str, optional
        Default: the layer's device when it is a torch layer, else the CPU.

    Returns
    -------
    OrderedDict
        torch's names to tensors of the layer's dtype.
    """
    import torch

    if not isinstance(rnn, (RNN, LSTM, GRU)):
        raise TypeError(f"rnn must be an rnn_xp.RNN, LSTM or GRU; got {type(rnn).__name__}")

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
    """A ``torch.nn.RNN``, ``LSTM`` or ``GRU`` with the layer's configuration and weights.

    Returns
    -------
    torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU
        On ``device`` (default as in :func:`torch_state_dict`), in the layer's dtype.
    """
    import torch

    state = torch_state_dict(rnn, device=device)
    first = next(iter(state.values()))
    if isinstance(rnn, (LSTM, GRU)):
        return _gated_to_torch(rnn, state, first)
    if rnn.leak != 1.0:
        raise ValueError(f"torch.nn.RNN has no leak; this layer has leak={rnn.leak}")
    if rnn.nonlinearity not in ("tanh", "relu") or rnn.clip is not None or rnn.reverse:
        raise ValueError(
            "torch.nn.RNN runs tanh or relu, the same in both directions, without clip or a "
            f"reverse-only direction; this layer has nonlinearity={rnn.nonlinearity!r}, "
            f"clip={rnn.clip}, reverse={rnn.reverse}"
        )
    with warnings.catch_warnings():  # torch's warning that dropout needs num_layers > 1
        warnings.filterwarnings("ignore", message=".*dropout.*", category=UserWarning)
        module = torch.nn.RNN(
            rnn.input_size, rnn.hidden_size, rnn.num_layers, nonlinearity=rnn.nonlinearity,
            bias=rnn.bias, batch_first=rnn.batch_first, dropout=rnn.dropout,
            bidirectional=rnn.bidirectional, device=first.device, dtype=first.dtype,
        )  # fmt: skip
    module.load_state_dict(state)
    return module.train(rnn.training)


def _gated_to_torch(layer, state, first):
    """``to_torch`` of an LSTM or a GRU: torch's module, when the layer uses only what torch has."""
    import torch

    name = type(layer).__name__
    extras = {"activations": layer.activations, "activation_alpha": layer.activation_alpha,
              "activation_beta": layer.activation_beta, "clip": layer.clip, "reverse": layer.reverse,
              "input_forget": getattr(layer, "input_forget", False),
              "peepholes": getattr(layer, "peepholes", False),
              "linear_before_reset": getattr(layer, "linear_before_reset", True)}
    defaults = {"reverse": False, "input_forget": False, "peepholes": False, "linear_before_reset": True}
    used = {k: v for k, v in extras.items() if v != defaults.get(k)}
    if used:
        raise ValueError(f"torch.nn.{name} has none of rnn_xp's cell options; this layer has {used}")
    kw = dict(bias=layer.bias, batch_first=layer.batch_first, dropout=layer.dropout,
              bidirectional=layer.bidirectional, device=first.device, dtype=first.dtype)
    if name == "LSTM":
        kw["proj_size"] = layer.proj_size
    with warnings.catch_warnings():  # torch's warning that dropout needs num_layers > 1
        warnings.filterwarnings("ignore", message=".*dropout.*", category=UserWarning)
        module = getattr(torch.nn, name)(layer.input_size, layer.hidden_size, layer.num_layers, **kw)
    module.load_state_dict(state)
    return module.train(layer.training)
