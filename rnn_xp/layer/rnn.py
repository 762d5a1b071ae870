"""``RNN``: a multi-layer, optionally bidirectional Elman RNN with ``torch.nn.RNN``'s interface.

The layer holds its parameters in one array library (``xp``), on one device,
in one dtype, under torch's names::

    weight_ih_l{k}[_reverse]   (H, D) for k = 0, (H, dirs * H) after
    weight_hh_l{k}[_reverse]   (H, H)
    bias_ih_l{k}[_reverse]     (H,)      (only with bias=True)
    bias_hh_l{k}[_reverse]     (H,)

and runs each layer and direction through the Elman cell (the two biases
folded into one)::

    x (T, *batch, D) --layer 0--> (T, *batch, dirs * H) --layer 1--> ... --> output
                       forward and reverse states concatenated on the last axis

``h0`` and ``h_n`` stack one ``(*batch, H)`` state per layer and direction,
in torch's order ``[l0, l0_reverse, l1, l1_reverse, ...]``.

As in torch, a layer is in training mode until ``rnn.eval()``: then (and
only with ``dropout > 0``) each layer's output is multiplied by a dropout
mask before the next layer reads it, and the masks are kept in the cache
for :meth:`RNN.backward`.

Beyond torch's options the layer takes every activation of the ONNX ``RNN``
operator (one per direction if wanted, with ``activation_alpha`` /
``activation_beta``), ``clip``, a single direction that runs backwards
(``reverse=True``: ONNX's ``direction="reverse"``, Keras's
``go_backwards``) and Keras-style masks (``mask=`` in ``forward``).
"""

from __future__ import annotations

from .._activations import check_clip, check_nonlinearity
from .._checks import check_bool, check_leak
from .._params import direction_weights, param_shapes, read_torch
from ..cells import ElmanCell, ElmanWeights
from .base import LayerGrads, Recurrent, check_activations

__all__ = ["RNN"]


class RNN(Recurrent):
    """A multi-layer Elman RNN with ``torch.nn.RNN``'s arguments, shapes and results.

    Parameters
    ----------
    input_size : int
        Features ``D`` of the input.
    hidden_size : int
        Features ``H`` of the state.
    num_layers : int, optional
        Stacked layers; layer ``k > 0`` reads layer ``k - 1``'s output.
    nonlinearity : str or sequence of str, optional
        The activation ``f``: ``"tanh"`` (default), ``"relu"``, or any other
        of :func:`rnn_xp.rnn_forward`'s (the ONNX ``RNN`` operator's list); or
        one name per direction, ``(forward, reverse)``, as an ONNX
        bidirectional node may have.
    bias : bool, optional
        Keep the biases ``bias_ih`` and ``bias_hh`` (else no bias at all).
    batch_first : bool, optional
        ``x`` and ``output`` are ``(B, T, ...)`` instead of ``(T, B, ...)``
        (``h0`` and ``h_n`` are not affected; nor is unbatched input).
    dropout : float, optional
        Dropout probability on the outputs of every layer but the last, in
        ``[0, 1]``, applied in training mode only (see :meth:`train`) as
        torch does: inverted dropout, each kept entry scaled by
        ``1 / (1 - dropout)``. As in torch, a non-zero value with
        ``num_layers=1`` warns.
    bidirectional : bool, optional
        Run a second, reverse direction per layer.
    leak : float, optional
        Leak rate alpha in ``(0, 1]`` of an echo-state network,
        ``h_t = (1 - alpha) * h_{t-1} + alpha * f(...)``; 1.0 is the plain RNN.
    activation_alpha, activation_beta : float or sequence, optional
        The activation's parameters (ONNX's defaults when omitted), or one
        per direction (``None`` entries for the defaults).
    clip : float, optional
        Clip every pre-activation to ``[-clip, clip]`` (ONNX's ``clip``).
    reverse : bool, optional
        With ``bidirectional=False``: the one direction runs from each
        sequence's last step to its first (ONNX ``direction="reverse"``,
        Keras ``go_backwards=True`` but with outputs in the original time
        order). Its parameters keep the names without ``_reverse``.
    xp : namespace, module or str, optional
        Array library of the parameters: a module (``numpy``, ``torch``,
        ``jax.numpy``, ``array_api_strict``, ...) or a name accepted by
        ``rnn_xp._backends.load`` (``"numpy"``, ``"torch"``, ``"jax"``,
        ``"cupy"``, ``"array_api_strict"``, ``"dask"``). Default NumPy.
    device : device, optional
        Device of the parameters; the library's default when omitted.
    dtype : str or dtype, optional
        ``"float32"`` (the default, like torch), ``"float64"``, or a real
        floating dtype of ``xp``.
    seed : int or None, optional
        Seed of the ``numpy.random.default_rng`` that draws the initial
        weights, ``U(-1/sqrt(H), 1/sqrt(H))`` as in torch, and then the
        dropout masks. The draws are made in float64 NumPy and then moved, so
        one seed gives the same weights and masks on every backend.

    Attributes
    ----------
    params : dict
        Parameter name (torch's) to array, in torch's order.
    xp, device, dtype
        Where the parameters live.
    training : bool
        Training mode (``True`` for a new layer, as in torch): dropout is
        applied. :meth:`train` and :meth:`eval` set it.
    generator : numpy.random.Generator
        Draws the dropout masks; assign a new one to reseed them.
    activations : tuple
        ``(name, alpha, beta)`` of each direction, the defaults filled in
        (``None`` where the activation takes no such parameter).

    Notes
    -----
    For each layer and direction::

        h_t = (1 - leak) * h_{t-1} + leak * f(clip(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh))

    The fast kernels run tanh and relu without ``clip`` or ``mask``; the
    other options fall back to the portable loop.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import RNN
    >>> rnn = RNN(3, 5, num_layers=2, bidirectional=True, seed=0)
    >>> output, h_n = rnn(np.ones((7, 2, 3), dtype=np.float32))   # (T, B, D)
    >>> output.shape, h_n.shape
    ((7, 2, 10), (4, 2, 5))
    >>> list(rnn.params)[:4]
    ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0']
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        nonlinearity="tanh",
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        *,
        leak=1.0,
        activation_alpha=None,
        activation_beta=None,
        clip=None,
        reverse=False,
        xp=None,
        device=None,
        dtype=None,
        seed=None,
    ):
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                    reverse)  # fmt: skip
        (self.nonlinearity, self.activation_alpha, self.activation_beta,
         self.activations) = check_activations(nonlinearity, activation_alpha, activation_beta,
                                               self.num_directions)  # fmt: skip
        self.leak = check_leak(leak)
        self.clip = check_clip(clip)
        self._init_params(xp, device, dtype, seed)

    _repr_defaults = {"num_layers": 1, "nonlinearity": "tanh", "bias": True, "batch_first": False,
                      "dropout": 0.0, "bidirectional": False, "leak": 1.0, "activation_alpha": None,
                      "activation_beta": None, "clip": None, "reverse": False}

    @staticmethod
    def shapes(D, H, num_layers, num_directions, bias):
        """``{name: shape}`` of every parameter of an ``RNN`` of these sizes, in torch's order."""
        return param_shapes(D, H, num_layers, num_directions, bias)

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
            ``(T, B, D)``, ``(B, T, D)`` with ``batch_first``, or unbatched
            ``(T, D)``; from the layer's library and device.
        h0 : array, optional
            ``(num_layers * dirs, B, H)`` (unbatched ``(num_layers * dirs, H)``);
            zeros when omitted.
        lengths : int array or list of int, optional
            Valid length of each sequence, ``(B,)`` (``()`` unbatched), in
            ``[0, T]``, in any order. Outputs past a length are zero, ``h_n``
            is the state after the last valid step (``h0`` for length 0), and
            the reverse direction starts at each sequence's own last step.
        mask : bool array or nested list of bool, optional
            ``(B, T)`` (``(T,)`` unbatched), whatever ``batch_first`` is, as
            in Keras: a False step keeps each state and repeats the previous
            output (zeros before the first valid step). Not with ``lengths``.
        return_cache : bool, optional
            Also return a :class:`LayerCache` for :meth:`backward` (it keeps
            the dropout masks of this call).

        Returns
        -------
        output : array
            ``(T, B, dirs * H)`` (``(B, T, dirs * H)`` with ``batch_first``,
            ``(T, dirs * H)`` unbatched): the last layer's states, forward
            then reverse on the last axis.
        h_n : array
            ``(num_layers * dirs, B, H)``: every layer and direction's final state.
        cache : LayerCache
            Only with ``return_cache=True``: the per-layer inputs, states and
            weights of this call, for :meth:`backward`.

        Raises
        ------
        ValueError
            A shape does not match, a length is outside ``[0, T]``, or both
            ``lengths`` and ``mask`` are given.
        TypeError
            ``x`` or ``h0`` is not a real floating array of the layer's
            library, or ``mask`` is not boolean.

        Notes
        -----
        In training mode (:attr:`training`, the default, as in torch) with
        ``dropout > 0``, the input of every layer ``k > 0`` is layer
        ``k - 1``'s output times a fresh mask drawn from :attr:`generator`:
        each entry is 0 with probability ``dropout``, else
        ``1 / (1 - dropout)``. Call :meth:`eval` for inference.

        The dtype of the result is the promotion of the inputs' and the
        parameters' dtypes: a float32 layer given float64 ``x`` computes and
        returns float64 (the weights are promoted, not the input rounded).
        ``torch.nn.RNN`` refuses that call instead (a ``ValueError`` asking
        to convert the input or the module).
        """
        check_bool("return_cache", return_cache)
        call = self._check_call(x, self._state_parts(h0), lengths, mask)
        output, finals, cache = self._run(call, return_cache)
        h_n = finals[0]  # (L*dirs, *batch, H)
        if not return_cache:
            return output, h_n
        return output, h_n, cache

    def backward(self, cache, d_output, d_h_n=None):
        """Backpropagation through time through every layer and direction.

        Parameters
        ----------
        cache : LayerCache
            From ``rnn.forward(x, h0, lengths=..., return_cache=True)``. The
            gradients are those of that call, with the weights it used (a
            parameter replaced or updated since does not change them).
        d_output : array or None
            Gradient of the loss with respect to ``output``, the shape of
            ``output``; ``None`` means zeros (a loss on ``h_n`` only).
            Entries past a sequence's length are ignored (the output there
            is a constant zero).
        d_h_n : array, optional
            Gradient with respect to ``h_n``, ``(num_layers * dirs, B, H)``
            (``(num_layers * dirs, H)`` unbatched); zeros when omitted.

        Returns
        -------
        LayerGrads
            ``(dx, dh0, params)``: the gradient of ``x`` (its layout), of
            ``h0`` (also when it was omitted) and ``{name: gradient}`` for every
            parameter under torch's names. Arrays of the layer's library and
            device.

        Raises
        ------
        ValueError
            ``d_output`` or ``d_h_n`` has the wrong shape.
        TypeError
            ``cache`` is not a :class:`LayerCache`, or a gradient is not a
            real floating array of the layer's library.

        Notes
        -----
        Layer by layer from the last, one :func:`rnn_xp.rnn_backward` per
        direction (``reverse=True`` for the reverse one) with that
        direction's half of the gradient reaching the layer's output; the
        ``dx`` of both directions add up to the gradient reaching the layer
        below's output. ``bias_ih`` and ``bias_hh`` both get the ``db`` of
        their direction.

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import RNN
        >>> rnn = RNN(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)
        >>> x = np.random.default_rng(0).standard_normal((5, 2, 3))
        >>> output, h_n, cache = rnn.forward(x, return_cache=True)
        >>> grads = rnn.backward(cache, np.ones_like(output))   # loss = output.sum()
        >>> grads.dx.shape, grads.dh0.shape, grads.params["weight_ih_l1_reverse"].shape
        ((5, 2, 3), (4, 2, 4), (4, 8))
        """
        return self._backprop(cache, d_output, (d_h_n,))

    _state_labels = ("h0",)

    def _state_parts(self, h0):
        return (h0,)

    def _state_sizes(self):
        return (self.hidden_size,)

    @property
    def _cells(self):
        """The cell of each direction (read at every call, from the layer's options)."""
        return tuple(ElmanCell(name, alpha, beta, self.clip, self.leak)
                     for name, alpha, beta in self.activations)  # fmt: skip

    def _cell_weights(self, k, suffix):
        return ElmanWeights(*self._weights(k, suffix))

    def _param_grads(self, xp, k, suffix, dw):
        grads = {f"weight_ih_l{k}{suffix}": dw.Wx, f"weight_hh_l{k}{suffix}": dw.Wh}
        if self.bias:  # both biases enter the same sum: equal gradients, separate arrays
            grads[f"bias_ih_l{k}{suffix}"] = dw.b
            grads[f"bias_hh_l{k}{suffix}"] = xp.asarray(dw.b, copy=True)
        return grads

    def _grads_result(self, dx, dstates, params):
        return LayerGrads(dx, dstates[0], params)

    def _weights(self, k, suffix):
        """``(Wx, Wh, b)`` of layer ``k`` and a direction, with the biases folded."""
        return direction_weights(self.params, k, suffix)

    # -- converting --------------------------------------------------------

    @classmethod
    def from_torch(cls, module_or_state_dict, *, xp=None, device=None, dtype=None,
                   nonlinearity=None, batch_first=None):
        """A layer with the configuration and weights of a ``torch.nn.RNN``.

        Parameters
        ----------
        module_or_state_dict : torch.nn.RNN or mapping
            A module (its configuration, ``dropout`` and training mode are
            copied too), or a state dict with
            torch's names (the configuration is read from the names and shapes;
            ``nonlinearity`` and ``batch_first`` default to torch's defaults).
        xp, device : optional
            Where the new layer's parameters live (default NumPy).
        dtype : str or dtype, optional
            Default: the dtype of the weights given.
        nonlinearity, batch_first : optional
            For a state dict, which holds neither. For a module, they must
            agree with it when given.

        Returns
        -------
        RNN

        Raises
        ------
        TypeError
            A module that is not a ``torch.nn.RNN`` (an ``LSTM``, a ``GRU``, ...),
            or an object that is neither a module nor a mapping.
        ValueError
            The state dict has missing, unexpected or mis-shaped keys.
        """
        if nonlinearity is not None:
            check_nonlinearity(nonlinearity)
        if batch_first is not None:
            check_bool("batch_first", batch_first)
        return read_torch(cls, module_or_state_dict, module="RNN", gates=1,
                          options={"nonlinearity": nonlinearity, "batch_first": batch_first},
                          defaults={"nonlinearity": "tanh", "batch_first": False},
                          xp=xp, device=device, dtype=dtype)
