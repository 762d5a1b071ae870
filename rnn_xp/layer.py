"""``RNN``: a multi-layer, optionally bidirectional Elman RNN with ``torch.nn.RNN``'s interface.

The layer holds its parameters in one array library (``xp``), on one device,
in one dtype, under torch's names::

    weight_ih_l{k}[_reverse]   (H, D) for k = 0, (H, dirs * H) after
    weight_hh_l{k}[_reverse]   (H, H)
    bias_ih_l{k}[_reverse]     (H,)      (only with bias=True)
    bias_hh_l{k}[_reverse]     (H,)

and runs each layer and direction through the functional forward pass of
:mod:`rnn_xp.forward` (the two biases folded into one)::

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

import inspect
import math
import numbers
import warnings
from typing import NamedTuple

import numpy as np

from ._backends import (
    NAMES,
    BackendUnavailable,
    dtype_name,
    library_name,
    move,
    resolve_dtype,
    resolve_namespace,
)
from ._activations import check_activation, check_clip, check_nonlinearity
from ._checks import (
    check_bool,
    check_features,
    check_leak,
    check_lengths,
    check_mask,
    check_real_arrays,
    check_state,
    shape_str,
)
from ._compat import (
    array_namespace,
    device,
    is_array,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
    namespace_of,
    normalize_namespace,
    refuse_masked,
    to_device,
)
from ._params import (
    check_state_dict,
    direction_suffixes,
    direction_weights,
    param_count,
    read_torch,
)
from ._params import param_shapes as torch_param_shapes
from .backward import rnn_backward
from .forward import _forward

__all__ = ["RNN", "LayerCache", "LayerGrads"]


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
        The validated Keras-style mask ``(*batch, T)`` of ``forward(mask=...)``
        (the steps each sequence takes), or ``None``.
    """

    inputs: list
    h0: list
    h_seqs: list
    weights: list
    lengths: object
    batch_first: bool
    masks: list = None
    step_mask: object = None


class RNN:
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
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.num_layers = _check_size("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        (self.nonlinearity, self.activation_alpha, self.activation_beta,
         self.activations) = _check_activations(nonlinearity, activation_alpha, activation_beta,
                                                self.num_directions)  # fmt: skip
        self.dropout = _check_dropout(dropout, self.num_layers)
        self.leak = check_leak(leak)
        self.clip = check_clip(clip)
        self.reverse = check_bool("reverse", reverse)
        if self.reverse and self.bidirectional:
            raise ValueError(
                "reverse=True is a single direction that runs backwards; a bidirectional "
                "layer already has one (bidirectional=True, reverse=False)"
            )

        xp, device = resolve_namespace(xp, device)
        dtype = resolve_dtype(xp, dtype)
        rng = np.random.default_rng(seed)
        given = self.__dict__.pop("_given_params", None)  # set by from_params: load, draw nothing
        self.xp, self.device, self.dtype = xp, device, dtype
        if given is None:
            k = 1.0 / math.sqrt(self.hidden_size)
            params = {
                name: rng.uniform(-k, k, size=shape)  # float64 draws, in torch's order
                for name, shape in self.param_shapes().items()
            }
            self.params = {name: move(p, xp, device, dtype) for name, p in params.items()}
        else:
            self._load(*given)
            # the stream where the draws would have left it: the same dropout masks as
            # RNN(..., seed=seed).load_state_dict(params)
            rng.bit_generator.advance(param_count(self.param_shapes()))
        self.device, self.dtype = _where(self.params)
        self.training = True
        self.generator = rng  # after the weights, the same stream draws the dropout masks

    @classmethod
    def from_params(cls, params, *args, names=None, **kwargs):
        """A layer made as ``cls(*args, **kwargs)`` that holds ``params`` instead of drawn weights.

        The same layer as ``cls(*args, **kwargs).load_state_dict(params)``
        (its ``generator`` too, when ``seed`` is given), without drawing the
        initial weights first: the configuration and every key and shape of
        ``params`` are checked before anything is allocated, and only the
        given arrays are copied. The converters build their layers this way.

        Parameters
        ----------
        params : mapping
            torch's names to arrays of any library, as in :meth:`load_state_dict`.
        *args, **kwargs
            The configuration, as in :class:`RNN`.
        names : mapping, optional
            What error messages call each array (a converter's own names,
            such as ``"kernel"``); default ``state_dict['weight_ih_l0']``, ...

        Returns
        -------
        RNN

        Raises
        ------
        ValueError, TypeError
            As :class:`RNN` and :meth:`load_state_dict` raise them.

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import RNN
        >>> params = RNN(3, 4, seed=1).state_dict()
        >>> rnn = RNN.from_params(params, 3, 4, dtype="float64")
        >>> rnn.dtype, bool(np.array_equal(rnn.weight_hh_l0, params["weight_hh_l0"]))
        (dtype('float64'), True)
        """
        layer = cls.__new__(cls)
        layer._given_params = (params, names)  # read (and removed) by __init__
        layer.__init__(*args, **kwargs)
        return layer

    # -- structure ---------------------------------------------------------

    @property
    def num_directions(self):
        """2 for a bidirectional layer, else 1."""
        return 2 if self.bidirectional else 1

    def param_shapes(self):
        """``{name: shape}`` for every parameter, in torch's order."""
        return torch_param_shapes(self.input_size, self.hidden_size, self.num_layers,
                                  self.num_directions, self.bias)  # fmt: skip

    def parameters(self):
        """An iterator over the parameter arrays, in torch's order (as ``torch.nn.Module``).

        Examples
        --------
        >>> from rnn_xp import RNN
        >>> [tuple(p.shape) for p in RNN(3, 5, seed=0).parameters()]
        [(5, 3), (5, 5), (5,), (5,)]
        """
        return iter(list(self.params.values()))

    def named_parameters(self, prefix=""):
        """An iterator over ``(name, array)`` pairs, in torch's order (as ``torch.nn.Module``).

        Parameters
        ----------
        prefix : str, optional
            Put before every name, followed by a dot (torch's ``prefix``).

        Examples
        --------
        >>> from rnn_xp import RNN
        >>> [name for name, p in RNN(3, 5, bias=False, seed=0).named_parameters("rnn")]
        ['rnn.weight_ih_l0', 'rnn.weight_hh_l0']
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str; got {type(prefix).__name__}")
        lead = prefix + "." if prefix else ""
        return iter([(lead + name, p) for name, p in self.params.items()])

    # -- training mode -----------------------------------------------------

    def train(self, mode=True):
        """Set training mode (dropout applied) or, with ``mode=False``, eval mode; return ``self``.

        As ``torch.nn.Module.train``. A new layer is in training mode. Only
        dropout depends on the mode: with ``dropout=0`` (the default) both
        modes compute the same thing.

        Parameters
        ----------
        mode : bool, optional
            ``True`` for training mode, ``False`` for eval mode.

        Returns
        -------
        RNN
            This layer.

        Examples
        --------
        >>> from rnn_xp import RNN
        >>> rnn = RNN(3, 5, num_layers=2, dropout=0.5, seed=0)
        >>> rnn.training, rnn.eval().training, rnn.train().training
        (True, False, True)
        """
        self.training = check_bool("mode", mode)
        return self

    def eval(self):
        """Set eval mode (no dropout); return ``self``. Same as ``train(False)``.

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import RNN
        >>> rnn = RNN(3, 5, num_layers=2, dropout=0.5, seed=0).eval()
        >>> x = np.ones((4, 2, 3), dtype=np.float32)
        >>> bool(np.array_equal(rnn(x)[0], rnn(x)[0]))   # no dropout: the same output each time
        True
        """
        return self.train(False)

    def __getattr__(self, name):  # rnn.weight_ih_l0, as on a torch module
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self):
        options = [f"{self.input_size}", f"{self.hidden_size}"]
        defaults = {"num_layers": 1, "nonlinearity": "tanh", "bias": True,
                    "batch_first": False, "dropout": 0.0, "bidirectional": False, "leak": 1.0,
                    "activation_alpha": None, "activation_beta": None, "clip": None,
                    "reverse": False}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                options.append(f"{name}={getattr(self, name)!r}")
        library = getattr(self.xp, "__name__", repr(self.xp)).replace("array_api_compat.", "")
        dtype = dtype_name(self.xp, self.dtype)
        return f"RNN({', '.join(options)}; {library}, {dtype}, device={self.device})"

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
        xp = self.xp
        check_bool("return_cache", return_cache)
        refuse_masked("x", x)
        if not is_array(x):
            raise TypeError(f"x must be an array (T, B, D) or (T, D); got {type(x).__name__}")
        if is_numpy_namespace(xp) and is_dask_namespace(namespace_of(x)):
            xp = namespace_of(x)  # Dask input, NumPy parameters: the result is a lazy Dask array
        named = {"x": x, "h0": h0}
        for name, arr in named.items():
            if arr is None or not is_array(arr) or namespace_of(arr) is xp:
                continue
            if not (is_dask_namespace(xp) and is_numpy_namespace(namespace_of(arr))):
                library = library_name(namespace_of(arr))
                if name == "h0":  # x already matches the layer: h0 is the one to convert
                    raise TypeError(
                        f"h0 is from {library} but x and the layer's parameters are in "
                        f"{library_name(self.xp)}; convert h0 to {library_name(self.xp)} first "
                        f"({library_name(self.xp)}.asarray(h0))"
                    )
                raise TypeError(
                    f"{name} is from {library} but the layer's parameters "
                    f"are in {library_name(self.xp)}; move the layer with rnn.to(xp=...) first"
                )
        array_namespace(named, xp=xp)  # h0 not an array: TypeError naming it
        L, dirs, H = self.num_layers, self.num_directions, self.hidden_size
        layouts = {2: "(T, D)", 3: "(B, T, D)" if self.batch_first else "(T, B, D)"}
        if x.ndim not in layouts:
            raise ValueError(
                f"x must be 3-D {layouts[3]} or unbatched 2-D (T, D); "
                f"got shape {shape_str(x.shape)}"
            )
        check_features("x", x, self.input_size, layouts[x.ndim], x.ndim)
        batch_first = self.batch_first and x.ndim == 3
        if batch_first:
            x = xp.permute_dims(x, (1, 0, 2))  # (T, B, D)
        T, batch = x.shape[0], tuple(x.shape[1:-1])
        if h0 is not None:
            layout = "(num_layers * num_directions" + (", B, H)" if batch else ", H)")
            check_state("h0", h0, (L * dirs, *batch), H, layout)
        lengths = check_lengths(xp, lengths, batch, T, device(x))
        step_mask = check_mask(xp, mask, batch, T, device(x), lengths=lengths)  # (T, *batch)
        if step_mask is not None:
            step_mask = xp.permute_dims(step_mask, (*range(1, step_mask.ndim), 0))  # (*batch, T)

        p = self.dropout if self.training else 0.0
        layer_in, finals = x, []
        inputs, starts, h_seqs, weights, masks = [], [], [], [], []
        for k in range(L):
            outputs = []
            drop = None
            if k > 0 and p > 0:  # dropout on layer k - 1's output
                drop = self._dropout_mask(layer_in, p)  # (T, *batch, dirs * H)
                layer_in = layer_in * drop
            masks.append(drop)
            inputs.append(layer_in)  # (T, *batch, D_k)
            for d, suffix in enumerate(_suffixes(dirs)):
                Wx, Wh, b = self._weights(k, suffix)
                h0_kd = None if h0 is None else h0[k * dirs + d, ...]  # (*batch, H)
                name, alpha, beta = self.activations[d]
                h_seq, h_last = _forward(
                    layer_in, h0_kd, Wx, Wh, b,
                    nonlinearity=name, batch_first=False, lengths=lengths,
                    reverse=d == 1 or self.reverse, leak=self.leak, return_sequences=True, xp=xp,
                    activation_alpha=alpha, activation_beta=beta, clip=self.clip, mask=step_mask,
                )  # fmt: skip
                outputs.append(h_seq)  # (T, *batch, H)
                finals.append(h_last)  # (*batch, H)
                starts.append(h0_kd)
                h_seqs.append(h_seq)
                weights.append((Wx, Wh, b))
            # (T, *batch, dirs * H): forward states, then reverse
            layer_in = outputs[0] if dirs == 1 else xp.concat(outputs, axis=-1)
            if dirs == 2 and is_dask_namespace(xp):  # one chunk along features, as the next layer needs
                layer_in = layer_in.rechunk({layer_in.ndim - 1: -1})

        output = xp.permute_dims(layer_in, (1, 0, 2)) if batch_first else layer_in
        h_n = xp.stack(finals, axis=0)  # (L*dirs, *batch, H)
        if not return_cache:
            return output, h_n
        cache = LayerCache(inputs, starts, h_seqs, weights, lengths, batch_first, masks,
                           step_mask=step_mask)
        return output, h_n, cache

    def _dropout_mask(self, like, p):
        """``0`` or ``1 / (1 - p)`` per entry of ``like``, drawn from :attr:`generator`.

        The draws are float64 NumPy numbers, then moved: one generator state
        gives the same mask on every backend and in every dtype.
        """
        xp = namespace_of(like)
        keep = self.generator.random(tuple(like.shape)) >= p  # (T, *batch, dirs * H) bool
        host = keep * (1.0 / (1.0 - p)) if p < 1 else np.zeros(keep.shape)
        if is_dask_namespace(xp):  # chunked as the output it multiplies
            return xp.asarray(host, dtype=like.dtype).rechunk(like.chunks)
        return xp.asarray(host, dtype=like.dtype, device=device(like))

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
        xp = self.xp
        if not isinstance(cache, LayerCache):
            raise TypeError(
                "cache must be the LayerCache from rnn.forward(..., return_cache=True); "
                f"got {type(cache).__name__}"
            )
        if len(cache.h_seqs) != self.num_layers * self.num_directions:
            raise ValueError(
                f"cache holds {len(cache.h_seqs)} layer directions but the layer has "
                f"num_layers * num_directions = {self.num_layers * self.num_directions}"
            )
        x0 = cache.inputs[0]  # (T, *batch, D)
        if is_numpy_namespace(xp) and is_array(x0) and is_dask_namespace(namespace_of(x0)):
            xp = namespace_of(x0)  # a Dask batch, NumPy parameters: lazy Dask gradients
        named = {"d_output": d_output, "d_h_n": d_h_n}
        for name, arr in named.items():
            if arr is None or not is_array(arr) or namespace_of(arr) is xp:
                continue
            if not (is_dask_namespace(xp) and is_numpy_namespace(namespace_of(arr))):
                raise TypeError(
                    f"{name} is from {library_name(namespace_of(arr))} but the layer's parameters "
                    f"are in {library_name(self.xp)}"
                )
        array_namespace(named, xp=xp)  # not an array: TypeError naming it
        check_real_arrays({k: v for k, v in named.items() if v is not None})  # named here, not as dh
        L, dirs, H = self.num_layers, self.num_directions, self.hidden_size
        T, batch = x0.shape[0], tuple(x0.shape[1:-1])
        if d_output is not None:
            if cache.batch_first:
                check_state("d_output", d_output, (*batch, T), dirs * H,
                            "(B, T, num_directions * H), the shape of output")
                d_output = xp.permute_dims(d_output, (1, 0, 2))  # (T, B, dirs * H)
            else:
                layout = "(T, B, num_directions * H)" if batch else "(T, num_directions * H)"
                check_state("d_output", d_output, (T, *batch), dirs * H,
                            layout + ", the shape of output")
        if d_h_n is not None:
            layout = "(num_layers * num_directions" + (", B, H)" if batch else ", H)")
            check_state("d_h_n", d_h_n, (L * dirs, *batch), H, layout + ", the shape of h_n")

        d_out, dh0, grads = d_output, [None] * (L * dirs), {}
        for k in range(L - 1, -1, -1):
            d_in = None
            for d, suffix in enumerate(_suffixes(dirs)):
                i = k * dirs + d
                Wx, Wh, b = cache.weights[i]
                name, alpha, beta = self.activations[d]
                g = rnn_backward(
                    None if d_out is None else d_out[..., d * H:(d + 1) * H],
                    cache.inputs[k], cache.h0[i], Wx, Wh, b, cache.h_seqs[i],
                    nonlinearity=name, activation_alpha=alpha, activation_beta=beta,
                    clip=self.clip, mask=cache.step_mask,
                    dh_n=None if d_h_n is None else d_h_n[i, ...],
                    lengths=cache.lengths, reverse=d == 1 or self.reverse, leak=self.leak, xp=xp,
                )  # fmt: skip
                d_in = g.dx if d_in is None else d_in + g.dx  # (T, *batch, D_k)
                dh0[i] = g.dh0  # (*batch, H)
                grads[f"weight_ih_l{k}{suffix}"] = g.dWx
                grads[f"weight_hh_l{k}{suffix}"] = g.dWh
                if b is not None:
                    grads[f"bias_ih_l{k}{suffix}"] = g.db
                    grads[f"bias_hh_l{k}{suffix}"] = xp.asarray(g.db, copy=True)
            mask = cache.masks[k] if cache.masks is not None else None
            if mask is not None:  # layer k read mask * (layer k - 1's output)
                d_in = d_in * mask
            d_out = d_in  # gradient reaching layer k - 1's output (T, *batch, dirs * H)

        dx = xp.permute_dims(d_out, (1, 0, 2)) if cache.batch_first else d_out
        params = {name: grads[name] for name in self.param_shapes()}  # torch's order
        return LayerGrads(dx, xp.stack(dh0, axis=0), params)

    def _weights(self, k, suffix):
        """``(Wx, Wh, b)`` of layer ``k`` and a direction, with the biases folded."""
        return direction_weights(self.params, k, suffix)

    # -- moving and converting ---------------------------------------------

    def to(self, *args, xp=None, device=None, dtype=None):
        """Move the parameters to another library, device or dtype; return ``self``.

        Called as ``torch.nn.Module.to`` is: ``rnn.to("cuda")``,
        ``rnn.to(torch.device("cpu"))``, ``rnn.to(torch.float64)``,
        ``rnn.to("cpu", "float64")``, or with keywords. Each positional
        argument is read as a library, a device or a dtype by what it is.

        Parameters
        ----------
        *args : library, device or dtype
            A library: a module (``numpy``, ``torch``, ``jax.numpy``, ...) or a
            name (``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``,
            ``"array_api_strict"``, ``"dask"``). A device: a string
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"gpu"``) or a device object.
            A dtype: a name (``"float64"``) or a dtype of any library
            (``torch.float64``, ``jnp.float32``, ``np.float64``).
        xp : namespace, module or str, optional
            The library; the current one when omitted, except that a device
            object of another library (``torch.device("cpu")`` on a NumPy
            layer) moves the layer to that library.
        device : str or device, optional
            The device. A string is read in the target library: ``"cpu"``
            and ``"cuda:N"`` for torch, ``"cpu"`` and ``"gpu"`` (or
            ``"cuda"``) for JAX. NumPy, array-api-strict and Dask have only
            the CPU: ``"cuda"`` moves such a layer to CuPy, NumPy's
            interface on the GPU (and ``"cpu"`` a CuPy layer back to NumPy).
            When omitted: the current device (same library) or the
            library's default.
        dtype : str or dtype, optional
            The target dtype; the current one when omitted. A dtype changes
            the dtype only, never the library: ``rnn.to(torch.float64)``
            keeps a NumPy layer in NumPy.

        Returns
        -------
        RNN
            This layer, changed in place (like ``torch.nn.Module.to``).

        Raises
        ------
        TypeError
            An argument is none of a library, a device or a dtype, or two
            arguments give the same thing.
        ValueError
            A string names no library, device or dtype that rnn_xp knows.
        rnn_xp._backends.BackendUnavailable
            The library is not installed or has no such device (``"cuda"``
            without a CUDA device).

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import RNN
        >>> rnn = RNN(2, 3, seed=0).to(np.float64)
        >>> rnn.weight_hh_l0.dtype
        dtype('float64')
        >>> rnn.to("cpu", "float32").device, rnn.dtype
        ('cpu', dtype('float32'))
        """
        given = {"xp": xp, "device": device, "dtype": dtype}
        for arg in args:
            kind = _to_kind(arg)
            if given[kind] is not None:
                raise TypeError(f"rnn.to got two {kind} arguments: {given[kind]!r} and {arg!r}")
            given[kind] = arg
        xp, dev = _target(self.xp, self.device, given["xp"], given["device"])
        dtype = given["dtype"]
        dtype = dtype_name(self.xp, self.dtype) if dtype is None else _dtype_arg(dtype)
        dtype = resolve_dtype(xp, dtype)
        self.params = {name: move(p, xp, dev, dtype, name=name) for name, p in self.params.items()}
        self.xp = xp
        self.device, self.dtype = _where(self.params)
        return self

    def state_dict(self, *, xp=None, device=None):
        """The parameters under torch's names, in torch's order (a new dict).

        Parameters
        ----------
        xp : namespace, module or str, optional
            Return copies as arrays of this library, in the layer's dtype:
            ``xp="torch"`` gives tensors that ``torch.nn.RNN.load_state_dict``
            takes (:func:`rnn_xp.convert.torch_state_dict` does the same).
            Default: the layer's own arrays (not copies).
        device : str or device, optional
            The device of the copies, read as in :meth:`to`.

        Returns
        -------
        dict
            ``{name: array}``.

        Examples
        --------
        >>> import torch
        >>> from rnn_xp import RNN
        >>> rnn = RNN(3, 4, num_layers=2, seed=0)
        >>> module = torch.nn.RNN(3, 4, num_layers=2)
        >>> module.load_state_dict(rnn.state_dict(xp="torch"))
        <All keys matched successfully>
        """
        if xp is None and device is None:
            return dict(self.params)
        xp, dev = _target(self.xp, self.device, xp, device)
        dtype = resolve_dtype(xp, dtype_name(self.xp, self.dtype))
        return {name: move(p, xp, dev, dtype) for name, p in self.params.items()}

    def load_state_dict(self, state_dict):
        """Replace every parameter from a mapping with torch's names; return ``self``.

        The values may be arrays of any library (torch tensors included); they
        are copied into the layer's library, device and dtype.

        Raises
        ------
        ValueError
            Keys are missing or unexpected, or a value has the wrong shape; the
            message lists all of them.
        TypeError
            ``state_dict`` is not a mapping, or a value is not a real floating array.
        """
        self._load(state_dict)
        return self

    def _load(self, state_dict, names=None):
        """``load_state_dict``; ``names`` maps parameter names to what messages call the arrays."""
        shapes = self.param_shapes()
        check_state_dict(state_dict, shapes, repr(self))
        names = {} if names is None else names
        self.params = {
            name: move(state_dict[name], self.xp, self.device, self.dtype,
                       name=names.get(name, f"state_dict[{name!r}]"))
            for name in shapes
        }

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


# -- helpers -----------------------------------------------------------------


def _per_direction(name, value, dirs):
    """``value`` once per direction: a tuple of ``dirs`` entries, or one value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != dirs:
            raise ValueError(
                f"{name} must be one value or one per direction ({dirs}); got {len(value)}: "
                f"{list(value)!r}"
            )
        return tuple(value)
    return (value,) * dirs


def _collapse(values):
    """One value when every direction has the same, else the tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def _check_activations(nonlinearity, alpha, beta, dirs):
    """``(nonlinearity, alpha, beta, activations)``: the attributes, and ``(name, alpha, beta)`` per direction."""
    names = _per_direction("nonlinearity", nonlinearity, dirs)
    alphas = _per_direction("activation_alpha", alpha, dirs)
    betas = _per_direction("activation_beta", beta, dirs)
    for n in names:
        check_nonlinearity(n)
    activations = tuple(check_activation(n, a, b) for n, a, b in zip(names, alphas, betas))
    given = lambda vs: tuple(None if v is None else float(v) for v in vs)  # noqa: E731
    return _collapse(names), _collapse(given(alphas)), _collapse(given(betas)), activations


_suffixes = direction_suffixes  # the direction suffixes, as forward() and backward() name them


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def _check_dropout(dropout, num_layers):
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1]; got {type(dropout).__name__}")
    dropout = float(dropout)
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1]; got {dropout}")
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout applies between stacked layers, so it has no effect with "
            f"num_layers=1 (got dropout={dropout}, num_layers=1)",
            UserWarning,
            stacklevel=3,
        )
    return dropout


_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
_DEVICE_KINDS = ("cpu", "cuda", "gpu", "mps")


def _to_kind(arg):
    """``"xp"``, ``"device"`` or ``"dtype"``: what a positional argument of ``RNN.to`` is."""
    if isinstance(arg, str):
        if arg in NAMES:
            return "xp"
        if arg in _FLOAT_NAMES:
            return "dtype"
        if arg.partition(":")[0] in _DEVICE_KINDS:
            return "device"
        raise ValueError(
            f"rnn.to: {arg!r} is neither a library {list(NAMES)}, a device ('cpu', 'cuda', "
            "'cuda:1', 'gpu') nor a dtype ('float32', 'float64')"
        )
    if inspect.ismodule(arg):
        return "xp"
    if type(arg).__name__.lower().endswith("device"):  # torch.device, jax's, CuPy's, array-api-strict's
        return "device"
    if isinstance(arg, type) or isinstance(_dtype_arg(arg), str):
        return "dtype"
    raise TypeError(
        "rnn.to takes a library, a device or a dtype; got "
        f"{type(arg).__name__} {arg!r}"
    )


def _dtype_arg(dtype):
    """A dtype of any library (``torch.float64``, ``jnp.float32``, ``np.float64``) as
    its name, which ``resolve_dtype`` takes for every library; anything else as given,
    for ``resolve_dtype``'s message."""
    name = dtype
    if isinstance(dtype, type):
        if issubclass(dtype, np.generic):
            name = np.dtype(dtype).name
        else:
            inner = getattr(dtype, "dtype", None)  # jnp.float32 and the like
            if inner is not None and not inspect.isdatadescriptor(inner):
                name = str(getattr(inner, "name", inner))
    elif not isinstance(dtype, str):
        name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
    return name if name in _FLOAT_NAMES else dtype


def _family(xp):
    """The library of a namespace as a backend name of ``rnn_xp._backends``."""
    for name, test in (("torch", is_torch_namespace), ("jax", is_jax_namespace),
                       ("cupy", is_cupy_namespace), ("dask", is_dask_namespace),
                       ("numpy", is_numpy_namespace)):
        if test(xp):
            return name
    return "array_api_strict" if "array_api_strict" in library_name(xp) else None


def _target(cur_xp, cur_device, xp, dev):
    """``(namespace, device)`` that ``RNN.to(xp=xp, device=dev)`` moves a layer to."""
    if xp is not None:
        namespace, default = resolve_namespace(xp, None)
        if dev is None:
            return namespace, cur_device if namespace is cur_xp else default
    elif dev is None:
        return cur_xp, cur_device
    elif isinstance(dev, str):
        namespace, default = cur_xp, cur_device
    else:  # a device object: its library
        library = type(dev).__module__.split(".")[0].replace("jaxlib", "jax")
        if library in NAMES and library != _family(cur_xp):
            namespace, _ = resolve_namespace(library, None)
        else:
            namespace = cur_xp
        return namespace, dev
    if not isinstance(dev, str):
        return namespace, dev
    return _named_device(namespace, default, dev)


def _named_device(xp, default, name):
    """``(namespace, device)`` for a device string read in library ``xp``."""
    kind, _, index = name.partition(":")
    if kind not in _DEVICE_KINDS or not (index == "" or index.isdigit()):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'gpu'; got {name!r}")
    family = _family(xp)
    if family == "torch":
        import torch

        dev = torch.device(name)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailable(f"torch finds no CUDA device for device={name!r}")
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
        return xp, dev
    if family == "jax":
        import jax

        platform = "cpu" if kind == "cpu" else "gpu"
        try:
            devices = jax.devices(platform)
        except RuntimeError as exc:
            raise BackendUnavailable(f"jax has no {platform} device for device={name!r}") from exc
        number = int(index or 0)
        if number >= len(devices):
            raise ValueError(f"device {name!r}: jax has {len(devices)} {platform} device(s)")
        return xp, devices[number]
    if kind == "mps":
        raise ValueError(f"device 'mps' is a torch device; {library_name(xp)} has none")
    if kind == "cpu":
        if family == "cupy":  # off the GPU: NumPy
            return resolve_namespace("numpy", None)
        return xp, default
    try:  # CPU libraries move to the GPU as CuPy
        namespace, dev = resolve_namespace("cupy", None)
    except BackendUnavailable as exc:
        raise BackendUnavailable(
            f"device={name!r} moves a {library_name(xp)} layer to CuPy, NumPy's interface on "
            f"the GPU, and {exc}"
        ) from exc
    if index:
        import cupy

        dev = cupy.cuda.Device(int(index))
    return namespace, dev


def _where(params):
    """``(device, dtype)`` of the parameters (the dtype as the arrays report it)."""
    first = next(iter(params.values()))
    return device(first), first.dtype
