"""``GRU``: a multi-layer, optionally bidirectional GRU with ``torch.nn.GRU``'s interface.

Parameters under torch's names, shapes and gate order (r, z, n)::

    weight_ih_l{k}[_reverse]   (3H, D) for k = 0, (3H, dirs * H) after
    weight_hh_l{k}[_reverse]   (3H, H)
    bias_ih_l{k}[_reverse]     (3H,)      (only with bias=True)
    bias_hh_l{k}[_reverse]     (3H,)

The cell is ``rnn_xp.cells.GRUCell``.
"""

from __future__ import annotations

from .._activations import check_clip
from .._checks import check_bool
from ..cells import GRUCell, GRUWeights
from .._params import param_shapes, read_torch
from .base import LayerGrads, Recurrent, gate_options

__all__ = ["GRU"]


class GRU(Recurrent):
    """A multi-layer GRU with ``torch.nn.GRU``'s arguments, shapes and results.

    Parameters
    ----------
    input_size, hidden_size : int
        Features ``D`` of the input and ``H`` of the state.
    num_layers, bias, batch_first, dropout, bidirectional
        As for :class:`rnn_xp.LSTM` and torch.
    activations : sequence of 2 str, optional
        ``(f, g)``, the gates' and the candidate's activation (ONNX's
        ``activations`` in rnn_xp's names), or one pair per direction;
        default ``("sigmoid", "tanh")``.
    activation_alpha, activation_beta : sequence, optional
        Their parameters, laid out as ``activations``.
    clip : float, optional
        Clip every pre-activation to ``[-clip, clip]`` (ONNX's ``clip``).
    linear_before_reset : bool, optional
        True (torch; ONNX's ``linear_before_reset=1``; Keras's
        ``reset_after=True``): ``n = tanh(x W_in.T + b_in + r * (h W_hn.T + b_hn))``.
        False (ONNX's default; Keras's ``reset_after=False``): the reset
        multiplies ``h`` before the product.
    reverse : bool, optional
        With ``bidirectional=False``: the one direction runs backwards.
    xp, device, dtype, seed
        As for :class:`rnn_xp.RNN`.

    Notes
    -----
    For each layer and direction (see :func:`rnn_xp.gru_forward`)::

        r, z = sigmoid(x W_i[rz].T + b_i[rz] + h W_h[rz].T + b_h[rz])
        n    = tanh(x W_in.T + b_in + r * (h W_hn.T + b_hn))
        h'   = (1 - z) * n + z * h

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import GRU
    >>> gru = GRU(3, 5, num_layers=2, batch_first=True, seed=0)
    >>> output, h_n = gru(np.ones((4, 7, 3), dtype=np.float32))   # (B, T, D)
    >>> output.shape, h_n.shape
    ((4, 7, 5), (2, 4, 5))
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        *,
        activations=None,
        activation_alpha=None,
        activation_beta=None,
        clip=None,
        linear_before_reset=True,
        reverse=False,
        xp=None,
        device=None,
        dtype=None,
        seed=None,
    ):
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                    reverse)  # fmt: skip
        self.clip = check_clip(clip)
        self.linear_before_reset = check_bool("linear_before_reset", linear_before_reset)
        self.activations, self.activation_alpha, self.activation_beta = activations, activation_alpha, activation_beta
        self._cells  # every direction's cell made once here: its options are checked now
        self._init_params(xp, device, dtype, seed)

    _repr_defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                      "bidirectional": False, "activations": None, "activation_alpha": None,
                      "activation_beta": None, "clip": None, "linear_before_reset": True,
                      "reverse": False}

    @staticmethod
    def shapes(D, H, num_layers, num_directions, bias):
        """``{name: shape}`` of every parameter of a ``GRU`` of these sizes, in torch's order."""
        return param_shapes(D, H, num_layers, num_directions, bias, gates=3)

    def _shape_options(self):
        return {}

    # -- running -----------------------------------------------------------

    def __call__(self, x, h0=None, *, lengths=None, mask=None, return_cache=False):
        """Same as :meth:`forward`."""
        return self.forward(x, h0, lengths=lengths, mask=mask, return_cache=return_cache)

    def forward(self, x, h0=None, *, lengths=None, mask=None, return_cache=False):
        """Run every layer and direction over a batch of sequences.

        Parameters
        ----------
        x : array
            ``(T, B, D)``, ``(B, T, D)`` with ``batch_first``, or unbatched ``(T, D)``.
        h0 : array, optional
            ``(num_layers * dirs, B, H)`` (unbatched ``(num_layers * dirs, H)``);
            zeros when omitted.
        lengths, mask, return_cache
            As for :meth:`rnn_xp.LSTM.forward`.

        Returns
        -------
        output : array
            ``(T, B, dirs * H)`` (``(B, T, dirs * H)`` with ``batch_first``).
        h_n : array
            ``(num_layers * dirs, B, H)``.
        cache : LayerCache
            Only with ``return_cache=True``.

        Raises
        ------
        ValueError
            A shape does not match, a length is outside ``[0, T]``, or both
            ``lengths`` and ``mask`` are given.
        TypeError
            ``h0`` is not an array (an LSTM's ``(h0, c0)`` pair does not fit a
            GRU), or an array is not a real floating array of the layer's library.
        """
        check_bool("return_cache", return_cache)
        call = self._check_call(x, self._state_parts(h0), lengths, mask)
        output, finals, cache = self._run(call, return_cache)
        return (output, finals[0], cache) if return_cache else (output, finals[0])

    def backward(self, cache, d_output, d_h_n=None):
        """Backpropagation through time through every layer and direction.

        Parameters
        ----------
        cache : LayerCache
            From ``gru.forward(..., return_cache=True)``.
        d_output : array or None
            Gradient of the loss with respect to ``output``, or ``None``.
        d_h_n : array, optional
            Gradient with respect to ``h_n``; zeros when omitted.

        Returns
        -------
        LayerGrads
            ``(dx, dh0, params)``, as :meth:`rnn_xp.RNN.backward` returns.

        Raises
        ------
        ValueError
            A gradient has the wrong shape.
        TypeError
            ``cache`` is not a :class:`LayerCache`, or a gradient is not a real
            floating array of the layer's library.

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import GRU
        >>> gru = GRU(3, 4, bidirectional=True, dtype="float64", seed=0)
        >>> x = np.random.default_rng(0).standard_normal((5, 2, 3))
        >>> output, h_n, cache = gru.forward(x, return_cache=True)
        >>> grads = gru.backward(cache, np.ones_like(output))
        >>> grads.dh0.shape, grads.params["bias_hh_l0_reverse"].shape
        ((2, 2, 4), (12,))
        """
        return self._backprop(cache, d_output, (d_h_n,))

    # -- what the GRU layer tells the shared machinery ----------------------------

    def _state_parts(self, h0):
        if isinstance(h0, (tuple, list)):
            raise TypeError(
                "h0 must be an array (num_layers * num_directions, B, H) or None: a GRU carries one "
                f"state; got a {type(h0).__name__} (an LSTM's (h0, c0) pair?)"
            )
        return (h0,)

    def _state_sizes(self):
        return (self.hidden_size,)

    @property
    def _cells(self):
        """The cell of each direction (read at every call, from the layer's options)."""
        acts, alphas, betas = gate_options(self.activations, self.activation_alpha,
                                           self.activation_beta, self.num_directions, 2)  # fmt: skip
        return tuple(GRUCell(a or ("sigmoid", "tanh"), al, be, self.clip, self.linear_before_reset)
                     for a, al, be in zip(acts, alphas, betas))  # fmt: skip

    def _cell_weights(self, k, suffix):
        p = self.params
        get = lambda name: p.get(f"{name}_l{k}{suffix}")  # noqa: E731
        return GRUWeights(get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"))

    def _param_grads(self, xp, k, suffix, dw):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return {f"{n}_l{k}{suffix}": g for n, g in zip(names, dw) if g is not None}

    def _grads_result(self, dx, dstates, params):
        return LayerGrads(dx, dstates[0], params)

    # -- converting --------------------------------------------------------

    @classmethod
    def from_torch(cls, module_or_state_dict, *, xp=None, device=None, dtype=None, batch_first=None):
        """A layer with the configuration and weights of a ``torch.nn.GRU``.

        Parameters
        ----------
        module_or_state_dict : torch.nn.GRU or mapping
            A module (its configuration, ``dropout`` and training mode are
            copied too), or a state dict with torch's names.
        xp, device, dtype, batch_first : optional
            As for :meth:`rnn_xp.LSTM.from_torch`.

        Returns
        -------
        GRU

        Raises
        ------
        TypeError
            A module that is not a ``torch.nn.GRU``, or an object that is
            neither a module nor a mapping.
        ValueError
            The state dict has missing, unexpected or mis-shaped keys.

        Examples
        --------
        >>> import torch
        >>> from rnn_xp import GRU
        >>> gru = GRU.from_torch(torch.nn.GRU(3, 4, bidirectional=True))
        >>> gru.bidirectional, gru.params["weight_hh_l0_reverse"].shape
        (True, (12, 4))
        """
        if batch_first is not None:
            check_bool("batch_first", batch_first)
        return read_torch(cls, module_or_state_dict, module="GRU", gates=3,
                          options={"batch_first": batch_first}, defaults={"batch_first": False},
                          xp=xp, device=device, dtype=dtype)
