"""``LSTM``: a multi-layer, optionally bidirectional LSTM with ``torch.nn.LSTM``'s interface.

Parameters under torch's names, shapes and gate order (i, f, g, o)::

    weight_ih_l{k}[_reverse]   (4H, D) for k = 0, (4H, dirs * P) after
    weight_hh_l{k}[_reverse]   (4H, P)
    bias_ih_l{k}[_reverse]     (4H,)      (only with bias=True)
    bias_hh_l{k}[_reverse]     (4H,)
    weight_hr_l{k}[_reverse]   (P, H)     (only with proj_size = P > 0; else P = H)
    peephole_l{k}[_reverse]    (3H,)      (only with peepholes=True: p_i, p_f, p_o; not a torch name)

``hx = (h0, c0)`` and ``(h_n, c_n)`` stack one state per layer and
direction, ``(L * dirs, B, P)`` and ``(L * dirs, B, H)``, in torch's order.
The cell is ``rnn_xp.cells.LSTMCell``.
"""

from __future__ import annotations

from .._activations import check_clip
from .._checks import check_bool
from ..cells import LSTMCell, LSTMWeights
from .._params import param_shapes, read_torch
from .._prepare import pair
from .base import LayerGrads, Recurrent, gate_options

__all__ = ["LSTM"]


class LSTM(Recurrent):
    """A multi-layer LSTM with ``torch.nn.LSTM``'s arguments, shapes and results.

    Parameters
    ----------
    input_size, hidden_size : int
        Features ``D`` of the input and ``H`` of the cell state.
    num_layers : int, optional
        Stacked layers; layer ``k > 0`` reads layer ``k - 1``'s output.
    bias : bool, optional
        Keep the biases ``bias_ih`` and ``bias_hh``.
    batch_first : bool, optional
        ``x`` and ``output`` are ``(B, T, ...)`` (the states are not).
    dropout : float, optional
        Dropout on the outputs of every layer but the last, in training mode
        (torch's rule; see :class:`rnn_xp.RNN`).
    bidirectional : bool, optional
        A second, reverse direction per layer.
    proj_size : int, optional
        ``P`` in ``[0, hidden_size)``: with ``P > 0`` the hidden state is
        projected, ``h_t = (o * tanh(c_t)) @ weight_hr.T`` (torch's ``proj_size``).
    activations : sequence of 3 str, optional
        ``(f, g, h)``, the gates', cell input's and cell output's activation
        (ONNX's ``activations``; rnn_xp's names: ``"sigmoid"``, ``"tanh"``,
        ``"relu"``, ``"hard_sigmoid"``, ...); or one such triple per
        direction. Default ``("sigmoid", "tanh", "tanh")``.
    activation_alpha, activation_beta : sequence, optional
        Their parameters, laid out as ``activations``.
    clip : float, optional
        Clip every gate's pre-activation to ``[-clip, clip]`` (ONNX's ``clip``).
    input_forget : bool, optional
        ``f = 1 - i`` (ONNX's ``input_forget``).
    peepholes : bool, optional
        Add the peephole weights ``peephole_l{k}`` ``(3H,)`` (ONNX's ``P``).
    reverse : bool, optional
        With ``bidirectional=False``: the one direction runs backwards
        (ONNX's ``direction="reverse"``, Keras's ``go_backwards``, outputs in
        the original order).
    xp, device, dtype, seed
        As for :class:`rnn_xp.RNN`: the library, device and dtype of the
        parameters (float32 by default), and the seed of the initial draws
        ``U(-1/sqrt(H), 1/sqrt(H))`` (torch's).

    Attributes
    ----------
    params : dict
        Parameter name (torch's) to array, in torch's order.
    xp, device, dtype, training, generator
        As for :class:`rnn_xp.RNN`.

    Notes
    -----
    For each layer and direction (see :func:`rnn_xp.lstm_forward`)::

        i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of x_t W_ih.T + b_ih + h_{t-1} W_hh.T + b_hh
        c_t = f * c_{t-1} + i * g,   h_t = (o * tanh(c_t)) @ W_hr.T

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import LSTM
    >>> lstm = LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=0)
    >>> output, (h_n, c_n) = lstm(np.ones((7, 4, 3), dtype=np.float32))   # (T, B, D)
    >>> output.shape, h_n.shape, c_n.shape
    ((7, 4, 4), (4, 4, 2), (4, 4, 5))
    >>> list(lstm.params)[:5]
    ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', 'weight_hr_l0']
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
        proj_size=0,
        *,
        activations=None,
        activation_alpha=None,
        activation_beta=None,
        clip=None,
        input_forget=False,
        peepholes=False,
        reverse=False,
        xp=None,
        device=None,
        dtype=None,
        seed=None,
    ):
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                    reverse)  # fmt: skip
        self.proj_size = check_proj_size(proj_size, self.hidden_size)
        self.clip = check_clip(clip)
        self.input_forget = check_bool("input_forget", input_forget)
        self.peepholes = check_bool("peepholes", peepholes)
        self.activations, self.activation_alpha, self.activation_beta = activations, activation_alpha, activation_beta
        self._cells  # every direction's cell made once here: its options are checked now
        self._init_params(xp, device, dtype, seed)

    _state_labels = ("h0", "c0")
    _repr_defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                      "bidirectional": False, "proj_size": 0, "activations": None,
                      "activation_alpha": None, "activation_beta": None, "clip": None,
                      "input_forget": False, "peepholes": False, "reverse": False}

    @staticmethod
    def shapes(D, H, num_layers, num_directions, bias, proj_size=0, peepholes=False):
        """``{name: shape}`` of every parameter of an ``LSTM`` of these sizes, in torch's order."""
        shapes = param_shapes(D, H, num_layers, num_directions, bias, gates=4, proj_size=proj_size)
        if not peepholes:
            return shapes
        out = {}  # each layer and direction's peepholes after its torch parameters
        for name, shape in shapes.items():
            out[name] = shape
            k, suffix = _layer_of(name)
            last = f"weight_hr_l{k}{suffix}" if proj_size else (f"bias_hh_l{k}{suffix}" if bias
                                                              else f"weight_hh_l{k}{suffix}")  # fmt: skip
            if name == last:
                out[f"peephole_l{k}{suffix}"] = (3 * H,)
        return out

    def _shape_options(self):
        return {"proj_size": self.proj_size, "peepholes": self.peepholes}

    # -- running -----------------------------------------------------------

    def __call__(self, x, hx=None, *, lengths=None, mask=None, return_cache=False):
        """Same as :meth:`forward`."""
        return self.forward(x, hx, lengths=lengths, mask=mask, return_cache=return_cache)

    def forward(self, x, hx=None, *, lengths=None, mask=None, return_cache=False):
        """Run every layer and direction over a batch of sequences.

        Parameters
        ----------
        x : array
            ``(T, B, D)``, ``(B, T, D)`` with ``batch_first``, or unbatched
            ``(T, D)``; from the layer's library and device.
        hx : pair of arrays, optional
            ``(h0, c0)``: ``(num_layers * dirs, B, P)`` and
            ``(num_layers * dirs, B, H)`` (unbatched without ``B``); zeros
            when omitted (or for a ``None`` entry).
        lengths : int array or list of int, optional
            Valid length of each sequence ``(B,)``, in ``[0, T]``, in any order:
            outputs past a length are zero, ``h_n``/``c_n`` are the states after
            the last valid step, and the reverse direction starts at each
            sequence's own last step (what torch computes from a packed
            sequence, without packing).
        mask : bool array or nested list of bool, optional
            ``(B, T)``, as in Keras: a False step keeps each state and repeats
            the previous output. Not with ``lengths``.
        return_cache : bool, optional
            Also return a :class:`LayerCache` for :meth:`backward`.

        Returns
        -------
        output : array
            ``(T, B, dirs * P)`` (``(B, T, dirs * P)`` with ``batch_first``).
        (h_n, c_n) : pair of arrays
            ``(num_layers * dirs, B, P)`` and ``(num_layers * dirs, B, H)``.
        cache : LayerCache
            Only with ``return_cache=True``.

        Raises
        ------
        ValueError
            A shape does not match (the message names ``x``, ``h0`` or ``c0``
            and the shape needed), a length is outside ``[0, T]``, or both
            ``lengths`` and ``mask`` are given.
        TypeError
            ``hx`` is not a pair, or an array is not a real floating array of
            the layer's library.
        """
        check_bool("return_cache", return_cache)
        call = self._check_call(x, self._state_parts(hx), lengths, mask)
        output, finals, cache = self._run(call, return_cache)
        return (output, finals, cache) if return_cache else (output, finals)

    def backward(self, cache, d_output, d_hx=None):
        """Backpropagation through time through every layer and direction.

        Parameters
        ----------
        cache : LayerCache
            From ``lstm.forward(..., return_cache=True)``.
        d_output : array or None
            Gradient of the loss with respect to ``output`` (its shape), or
            ``None`` for zeros.
        d_hx : pair, optional
            ``(d_h_n, d_c_n)``, the gradients of ``h_n`` and ``c_n`` (either may
            be ``None``); zeros when omitted.

        Returns
        -------
        LayerGrads
            ``(dx, (dh0, dc0), params)``: the gradient of ``x`` in its layout,
            of ``h0`` and ``c0`` (also when ``hx`` was omitted), and
            ``{name: gradient}`` for every parameter under torch's names.

        Raises
        ------
        ValueError
            A gradient has the wrong shape.
        TypeError
            ``cache`` is not a :class:`LayerCache`, ``d_hx`` is not a pair, or
            a gradient is not a real floating array of the layer's library.

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import LSTM
        >>> lstm = LSTM(3, 4, num_layers=2, dtype="float64", seed=0)
        >>> x = np.random.default_rng(0).standard_normal((5, 2, 3))
        >>> output, (h_n, c_n), cache = lstm.forward(x, return_cache=True)
        >>> grads = lstm.backward(cache, np.ones_like(output))   # loss = output.sum()
        >>> grads.dx.shape, grads.dh0[1].shape, grads.params["weight_hh_l1"].shape
        ((5, 2, 3), (2, 2, 4), (16, 4))
        """
        return self._backprop(cache, d_output, pair("d_hx", d_hx, ("d_h_n", "d_c_n")))

    # -- what the LSTM layer tells the shared machinery ---------------------------

    def _state_parts(self, hx):
        return pair("hx", hx, ("h0", "c0"))

    def _state_sizes(self):
        return (self.proj_size or self.hidden_size, self.hidden_size)

    @property
    def _cells(self):
        """The cell of each direction (read at every call, from the layer's options)."""
        acts, alphas, betas = gate_options(self.activations, self.activation_alpha,
                                           self.activation_beta, self.num_directions, 3)  # fmt: skip
        return tuple(LSTMCell(a or ("sigmoid", "tanh", "tanh"), al, be, self.clip, self.input_forget)
                     for a, al, be in zip(acts, alphas, betas))  # fmt: skip

    def _cell_weights(self, k, suffix):
        p = self.params
        get = lambda name: p.get(f"{name}_l{k}{suffix}")  # noqa: E731
        return LSTMWeights(get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"),
                           get("weight_hr"), get("peephole"))  # fmt: skip

    def _param_grads(self, xp, k, suffix, dw):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "peephole")
        return {f"{n}_l{k}{suffix}": g for n, g in zip(names, dw) if g is not None}

    def _grads_result(self, dx, dstates, params):
        return LayerGrads(dx, tuple(dstates), params)

    # -- converting --------------------------------------------------------

    @classmethod
    def from_torch(cls, module_or_state_dict, *, xp=None, device=None, dtype=None, batch_first=None):
        """A layer with the configuration and weights of a ``torch.nn.LSTM``.

        Parameters
        ----------
        module_or_state_dict : torch.nn.LSTM or mapping
            A module (its configuration, ``proj_size``, ``dropout`` and
            training mode are copied too), or a state dict with torch's names
            (the configuration is read from the names and shapes, ``proj_size``
            from ``weight_hr_l0``).
        xp, device : optional
            Where the new layer's parameters live (default NumPy).
        dtype : str or dtype, optional
            Default: the dtype of the weights given (the module's).
        batch_first : bool, optional
            For a state dict, which does not hold it (default False); for a
            module it must agree when given.

        Returns
        -------
        LSTM

        Raises
        ------
        TypeError
            A module that is not a ``torch.nn.LSTM``, or an object that is
            neither a module nor a mapping.
        ValueError
            The state dict has missing, unexpected or mis-shaped keys.

        Examples
        --------
        >>> import torch
        >>> from rnn_xp import LSTM
        >>> module = torch.nn.LSTM(3, 4, num_layers=2, proj_size=2, dtype=torch.float64)
        >>> lstm = LSTM.from_torch(module)
        >>> lstm.proj_size, lstm.dtype, lstm.params["weight_hr_l1"].shape
        (2, dtype('float64'), (2, 4))
        """
        if batch_first is not None:
            check_bool("batch_first", batch_first)
        return read_torch(cls, module_or_state_dict, module="LSTM", gates=4, projection=True,
                          options={"batch_first": batch_first}, defaults={"batch_first": False},
                          xp=xp, device=device, dtype=dtype)


def _layer_of(name):
    """``(k, suffix)`` of a parameter name such as ``weight_hh_l2_reverse``."""
    tail = name.rsplit("_l", 1)[1]  # "2_reverse"
    k, _, rest = tail.partition("_")
    return int(k), ("_" + rest if rest else "")


def check_proj_size(proj_size, hidden_size):
    """``proj_size`` an int in ``[0, hidden_size)`` (torch's rule), else ``TypeError``/``ValueError``."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, int):
        raise TypeError(f"proj_size must be an int in [0, hidden_size); got {type(proj_size).__name__}")
    if not 0 <= proj_size < hidden_size:
        raise ValueError(
            f"proj_size must be in [0, hidden_size) = [0, {hidden_size}) (0: no projection); got {proj_size}"
        )
    return proj_size
