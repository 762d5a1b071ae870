"""What a layer's call hands back: ``LayerCache`` (forward to backward) and ``LayerGrads``."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LayerCache", "LayerGrads"]


class LayerGrads(NamedTuple):
    """Gradients of a loss with respect to the inputs and parameters of an :class:`RNN`.

    Attributes
    ----------
    dx : array
        Gradient of ``x``, in the layout of ``x`` (``(T, B, D)``, ``(B, T, D)``
        with ``batch_first``, or unbatched ``(T, D)``).
    dh0 : array
        Gradient of ``h0``, ``(num_layers * dirs, B, H)`` (``(num_layers * dirs, H)``
        unbatched); returned also when ``h0`` was ``None``.
    params : dict
        Parameter name (torch's: ``weight_ih_l0``, ``bias_hh_l1_reverse``, ...)
        to its gradient, the parameter's shape, in torch's order (the keys of
        ``rnn.params``). ``bias_ih`` and ``bias_hh`` of a layer and direction
        get equal gradients (separate arrays), as both enter the sum
        ``x @ W_ih.T + b_ih + h @ W_hh.T + b_hh`` the same way.
    """

    dx: object
    dh0: object
    params: dict


class LayerCache(NamedTuple):
    """What :meth:`RNN.backward` needs from one :meth:`RNN.forward` call.

    Made by ``rnn.forward(..., return_cache=True)``; treat it as opaque.
    It holds references to the forward's arrays (nothing is copied):

    Attributes
    ----------
    inputs : list of arrays
        The time-major input ``(T, *batch, D_k)`` of every layer ``k``.
    h0 : list
        The initial state ``(*batch, H)`` of every layer and direction, in
        ``h0``'s order, or ``None`` entries when ``h0`` was omitted.
    h_seqs : list of arrays
        The time-major states ``(T, *batch, H)`` of every layer and direction.
    weights : list of tuples
        ``(Wx, Wh, b)`` of every layer and direction as used by the forward
        (``b`` the two biases folded, or ``None``).
    lengths : array or None
        The validated lengths ``(*batch,)``.
    batch_first : bool
        Whether ``x`` and ``output`` were ``(B, T, ...)``.
    masks : list
        The dropout mask ``(T, *batch, dirs * H)`` applied to the input of
        every layer ``k`` (``0`` or ``1 / (1 - dropout)`` per entry), or
        ``None`` where no dropout was applied (layer 0, eval mode,
        ``dropout=0``). ``inputs[k]`` is the input after its mask.
    step_mask : array or None
        The validated Keras-style mask of ``forward(mask=...)`` (the steps
        each sequence takes), time-major ``(T, *batch)``, or ``None``.
    states : list of tuples
        The initial state of every layer and direction, each part
        ``(*batch, S_k)`` (``(h0,)``, or ``(h0, c0)`` for an LSTM; zeros where
        none was given).
    seqs : list of tuples
        The time-major states ``(T, *batch, S_k)`` of every part, every layer
        and direction (``h_seqs`` holds the first part).
    kept : list or None
        What the forward's kernel kept of every layer and direction for the
        backward (the compiled NumPy loop of an LSTM or a GRU keeps the
        input projection and every step's recurrent product, each
        ``(T, *batch, G * H)``, so that the backward does not compute them
        again), ``None`` entries where it kept nothing.
    """

    inputs: list
    h0: list
    h_seqs: list
    weights: list
    lengths: object
    batch_first: bool
    masks: list = None
    step_mask: object = None
    states: list = None
    seqs: list = None
    kept: list = None
