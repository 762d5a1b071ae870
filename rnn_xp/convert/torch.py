"""``torch.nn.RNN``: its module and its state dict, both ways.

rnn_xp keeps torch's parameter names, shapes and order, so the conversion is
a copy between libraries. Reading a module or a state dict is
:meth:`rnn_xp.RNN.from_torch` (the rules live in ``rnn_xp._params``, which
the layer and the converters share).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

from .._backends import dtype_name, to_host
from ..layer import RNN
from ._common import check_rnn


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

    check_rnn(rnn)

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
    with warnings.catch_warnings():  # torch's warning that dropout needs num_layers > 1
        warnings.filterwarnings("ignore", message=".*dropout.*", category=UserWarning)
        module = torch.nn.RNN(
            rnn.input_size, rnn.hidden_size, rnn.num_layers, nonlinearity=rnn.nonlinearity,
            bias=rnn.bias, batch_first=rnn.batch_first, dropout=rnn.dropout,
            bidirectional=rnn.bidirectional, device=first.device, dtype=first.dtype,
        )  # fmt: skip
    module.load_state_dict(state)
    return module.train(rnn.training)
