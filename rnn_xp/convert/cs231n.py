"""The CS231n assignment's ``Wx (D, H)``, ``Wh (H, H)``, ``b (H,)``: both ways.

``next_h = tanh(x @ Wx + prev_h @ Wh + b)``: the transposes of torch's
matrices and one bias, as in Keras.
"""

from __future__ import annotations

from .._activations import check_activation, check_nonlinearity
from ._common import from_transposed, layer_weights

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
    Wx, Wh, b = layer_weights(rnn, layer, reverse)
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
    return from_transposed([weights], ("Wx", "Wh", "b"), [check_activation(nonlinearity)],
                            batch_first, xp, device, dtype)
