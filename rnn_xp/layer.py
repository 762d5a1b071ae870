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
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import NamedTuple

import numpy as np

from ._backends import dtype_name, library_name, move, resolve_dtype, resolve_namespace
from ._activations import check_nonlinearity
from ._checks import (
    check_bool,
    check_features,
    check_leak,
    check_lengths,
    check_real_arrays,
    check_state,
    shape_str,
)
from ._compat import (
    array_namespace,
    device,
    is_array,
    is_dask_namespace,
    is_numpy_namespace,
    namespace_of,
    normalize_namespace,
    refuse_masked,
    to_device,
)
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
    """

    inputs: list
    h0: list
    h_seqs: list
    weights: list
    lengths: object
    batch_first: bool


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
    nonlinearity : {"tanh", "relu"}, optional
        The activation ``f``.
    bias : bool, optional
        Keep the biases ``bias_ih`` and ``bias_hh`` (else no bias at all).
    batch_first : bool, optional
        ``x`` and ``output`` are ``(B, T, ...)`` instead of ``(T, B, ...)``
        (``h0`` and ``h_n`` are not affected; nor is unbatched input).
    dropout : float, optional
        Dropout probability on the outputs of every layer but the last, in
        ``[0, 1]``. A training-time option: rnn_xp only runs inference, where
        dropout is the identity, so it is stored and has no effect. As in
        torch, a non-zero value with ``num_layers=1`` warns.
    bidirectional : bool, optional
        Run a second, reverse direction per layer.
    leak : float, optional
        Leak rate alpha in ``(0, 1]`` of an echo-state network,
        ``h_t = (1 - alpha) * h_{t-1} + alpha * f(...)``; 1.0 is the plain RNN.
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
        weights, ``U(-1/sqrt(H), 1/sqrt(H))`` as in torch. The draws are made
        in float64 NumPy and then moved, so one seed gives the same weights on
        every backend.

    Attributes
    ----------
    params : dict
        Parameter name (torch's) to array, in torch's order.
    xp, device, dtype
        Where the parameters live.

    Notes
    -----
    For each layer and direction::

        h_t = (1 - leak) * h_{t-1} + leak * f(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)

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
        xp=None,
        device=None,
        dtype=None,
        seed=None,
    ):
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.num_layers = _check_size("num_layers", num_layers)
        self.nonlinearity = check_nonlinearity(nonlinearity)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.dropout = _check_dropout(dropout, self.num_layers)
        self.leak = check_leak(leak)

        xp, device = resolve_namespace(xp, device)
        dtype = resolve_dtype(xp, dtype)
        k = 1.0 / math.sqrt(self.hidden_size)
        rng = np.random.default_rng(seed)
        params = {
            name: rng.uniform(-k, k, size=shape)  # float64 draws, in torch's order
            for name, shape in self.param_shapes().items()
        }
        self.xp, self.device, self.dtype = xp, device, dtype
        self.params = {name: move(p, xp, device, dtype) for name, p in params.items()}
        self.device, self.dtype = _where(self.params)

    # -- structure ---------------------------------------------------------

    @property
    def num_directions(self):
        """2 for a bidirectional layer, else 1."""
        return 2 if self.bidirectional else 1

    def param_shapes(self):
        """``{name: shape}`` for every parameter, in torch's order."""
        return _param_shapes(self.input_size, self.hidden_size, self.num_layers, self.num_directions,
                             self.bias)  # fmt: skip

    def __getattr__(self, name):  # rnn.weight_ih_l0, as on a torch module
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self):
        options = [f"{self.input_size}", f"{self.hidden_size}"]
        defaults = {"num_layers": 1, "nonlinearity": "tanh", "bias": True,
                    "batch_first": False, "dropout": 0.0, "bidirectional": False, "leak": 1.0}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                options.append(f"{name}={getattr(self, name)!r}")
        library = getattr(self.xp, "__name__", repr(self.xp)).replace("array_api_compat.", "")
        dtype = dtype_name(self.xp, self.dtype)
        return f"RNN({', '.join(options)}; {library}, {dtype}, device={self.device})"

    # -- running -----------------------------------------------------------

    def __call__(self, x, h0=None, *, lengths=None, return_cache=False):
        """Same as :meth:`forward`."""
        return self.forward(x, h0, lengths=lengths, return_cache=return_cache)

    def forward(self, x, h0=None, *, lengths=None, return_cache=False):
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
        return_cache : bool, optional
            Also return a :class:`LayerCache` for :meth:`backward`.

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
            A shape does not match, or a length is outside ``[0, T]``.
        TypeError
            ``x`` or ``h0`` is not a real floating array of the layer's library.
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
                raise TypeError(
                    f"{name} is from {library_name(namespace_of(arr))} but the layer's parameters "
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

        layer_in, finals = x, []
        inputs, starts, h_seqs, weights = [], [], [], []
        for k in range(L):
            outputs = []
            inputs.append(layer_in)  # (T, *batch, D_k)
            for d, suffix in enumerate(_suffixes(dirs)):
                Wx, Wh, b = self._weights(k, suffix)
                h0_kd = None if h0 is None else h0[k * dirs + d, ...]  # (*batch, H)
                h_seq, h_last = _forward(
                    layer_in, h0_kd, Wx, Wh, b,
                    nonlinearity=self.nonlinearity, batch_first=False, lengths=lengths,
                    reverse=d == 1, leak=self.leak, return_sequences=True, xp=xp,
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
            # dropout between layers is a training-time option: identity here

        output = xp.permute_dims(layer_in, (1, 0, 2)) if batch_first else layer_in
        h_n = xp.stack(finals, axis=0)  # (L*dirs, *batch, H)
        if not return_cache:
            return output, h_n
        cache = LayerCache(inputs, starts, h_seqs, weights, lengths, batch_first)
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
        named = {"d_output": d_output, "d_h_n": d_h_n}
        for name, arr in named.items():
            if arr is not None and is_array(arr) and namespace_of(arr) is not xp:
                raise TypeError(
                    f"{name} is from {library_name(namespace_of(arr))} but the layer's parameters "
                    f"are in {library_name(xp)}"
                )
        array_namespace(named, xp=xp)  # not an array: TypeError naming it
        check_real_arrays({k: v for k, v in named.items() if v is not None})  # named here, not as dh
        L, dirs, H = self.num_layers, self.num_directions, self.hidden_size
        x0 = cache.inputs[0]  # (T, *batch, D)
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
                g = rnn_backward(
                    None if d_out is None else d_out[..., d * H:(d + 1) * H],
                    cache.inputs[k], cache.h0[i], Wx, Wh, b, cache.h_seqs[i],
                    nonlinearity=self.nonlinearity,
                    dh_n=None if d_h_n is None else d_h_n[i, ...],
                    lengths=cache.lengths, reverse=d == 1, leak=self.leak, xp=xp,
                )  # fmt: skip
                d_in = g.dx if d_in is None else d_in + g.dx  # (T, *batch, D_k)
                dh0[i] = g.dh0  # (*batch, H)
                grads[f"weight_ih_l{k}{suffix}"] = g.dWx
                grads[f"weight_hh_l{k}{suffix}"] = g.dWh
                if b is not None:
                    grads[f"bias_ih_l{k}{suffix}"] = g.db
                    grads[f"bias_hh_l{k}{suffix}"] = xp.asarray(g.db, copy=True)
            d_out = d_in  # gradient reaching layer k - 1's output (T, *batch, dirs * H)

        dx = xp.permute_dims(d_out, (1, 0, 2)) if cache.batch_first else d_out
        params = {name: grads[name] for name in self.param_shapes()}  # torch's order
        return LayerGrads(dx, xp.stack(dh0, axis=0), params)

    def _weights(self, k, suffix):
        """``(Wx, Wh, b)`` of layer ``k`` and a direction, with the biases folded."""
        p = self.params
        b = None
        if self.bias:
            b = p[f"bias_ih_l{k}{suffix}"] + p[f"bias_hh_l{k}{suffix}"]  # (H,)
        return p[f"weight_ih_l{k}{suffix}"], p[f"weight_hh_l{k}{suffix}"], b

    # -- moving and converting ---------------------------------------------

    def to(self, xp=None, device=None, dtype=None):
        """Move the parameters to another library, device or dtype; return ``self``.

        Parameters
        ----------
        xp : namespace, module or str, optional
            As in the constructor; the current library when omitted.
        device : device, optional
            The target device; the current one (same library) or the library's
            default (another library) when omitted.
        dtype : str or dtype, optional
            The target dtype; the current one when omitted.

        Returns
        -------
        RNN
            This layer, changed in place (like ``torch.nn.Module.to``).

        Examples
        --------
        >>> from rnn_xp import RNN
        >>> rnn = RNN(2, 3, seed=0).to(dtype="float64")
        >>> rnn.weight_hh_l0.dtype
        dtype('float64')
        """
        if xp is None:
            xp, default_device = self.xp, self.device
        else:
            xp, default_device = resolve_namespace(xp, None)
            if xp is self.xp and default_device is None:
                default_device = self.device
        device = default_device if device is None else device
        dtype = resolve_dtype(xp, dtype_name(self.xp, self.dtype) if dtype is None else dtype)
        self.params = {name: move(p, xp, device, dtype, name=name) for name, p in self.params.items()}
        self.xp = xp
        self.device, self.dtype = _where(self.params)
        return self

    def state_dict(self):
        """The parameters under torch's names, in torch's order (a new dict).

        The arrays are the layer's own (its library, device and dtype); use
        :func:`rnn_xp.convert.torch_state_dict` for torch tensors.
        """
        return dict(self.params)

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
        shapes = self.param_shapes()
        _check_state_dict(state_dict, shapes, repr(self))
        self.params = {
            name: move(state_dict[name], self.xp, self.device, self.dtype, name=f"state_dict[{name!r}]")
            for name in shapes
        }
        return self

    @classmethod
    def from_torch(cls, module_or_state_dict, *, xp=None, device=None, dtype=None,
                   nonlinearity=None, batch_first=None):
        """A layer with the configuration and weights of a ``torch.nn.RNN``.

        Parameters
        ----------
        module_or_state_dict : torch.nn.RNN or mapping
            A module (its configuration is copied too), or a state dict with
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
        obj = module_or_state_dict
        if nonlinearity is not None:
            check_nonlinearity(nonlinearity)
        if batch_first is not None:
            check_bool("batch_first", batch_first)
        if _is_torch_module(obj):
            import torch

            if not isinstance(obj, torch.nn.RNN):
                raise TypeError(
                    f"module_or_state_dict must be a torch.nn.RNN (or a state dict); got "
                    f"{type(obj).__name__}, which rnn_xp cannot run"
                )
            if getattr(obj, "proj_size", 0):
                raise ValueError(f"proj_size must be 0; got {obj.proj_size}")
            config = {
                "nonlinearity": obj.nonlinearity,
                "bias": obj.bias,
                "batch_first": obj.batch_first,
                "bidirectional": obj.bidirectional,
            }
            for name, given in (("nonlinearity", nonlinearity), ("batch_first", batch_first)):
                if given is not None and given != config[name]:
                    raise ValueError(
                        f"{name}={given!r} disagrees with the module's {name}={config[name]!r}"
                    )
            state = obj.state_dict()
            sizes = (obj.input_size, obj.hidden_size, obj.num_layers)
            dropout = obj.dropout
        elif hasattr(obj, "keys") and hasattr(obj, "__getitem__"):
            state = obj
            if "weight_ih_l0" not in state or "weight_hh_l0" not in state:
                raise ValueError(
                    "state dict must hold at least 'weight_ih_l0' and 'weight_hh_l0'; got keys "
                    f"{list(state.keys())}"
                )
            check_real_arrays({"state_dict['weight_ih_l0']": state["weight_ih_l0"],
                               "state_dict['weight_hh_l0']": state["weight_hh_l0"]})
            if state["weight_ih_l0"].ndim != 2:
                raise ValueError(
                    "state_dict['weight_ih_l0'] must have shape (H, D); got shape "
                    f"{shape_str(state['weight_ih_l0'].shape)}"
                )
            num_layers = 1
            while f"weight_ih_l{num_layers}" in state:
                num_layers += 1
            H, D = tuple(state["weight_ih_l0"].shape)
            sizes = (D, H, num_layers)
            config = {
                "nonlinearity": "tanh" if nonlinearity is None else nonlinearity,
                "bias": "bias_ih_l0" in state or "bias_hh_l0" in state,
                "batch_first": False if batch_first is None else batch_first,
                "bidirectional": "weight_ih_l0_reverse" in state,
            }
            dropout = 0.0
            # Every key, shape and dtype before the layer is made: a hostile state dict
            # (weight_ih_l0 of 40,000 rows) must fail at once, not after drawing 40,000^2
            # random initial weights.
            dirs = 2 if config["bidirectional"] else 1
            _check_state_dict(state, _param_shapes(D, H, num_layers, dirs, config["bias"]),
                              f"an RNN({D}, {H}, num_layers={num_layers}, bias={config['bias']}, "
                              f"bidirectional={config['bidirectional']}) read from weight_ih_l0 "
                              f"{shape_str((H, D))} and the keys")  # fmt: skip
        else:
            raise TypeError(
                "module_or_state_dict must be a torch.nn.RNN or a mapping of torch's parameter "
                f"names to arrays; got {type(obj).__name__}"
            )
        first = state["weight_ih_l0"]
        if dtype is None and is_array(first):
            dtype = dtype_name(namespace_of(first), first.dtype)
        rnn = cls(*sizes, dropout=dropout, xp=xp, device=device, dtype=dtype, seed=0, **config)
        return rnn.load_state_dict(state)


# -- helpers -----------------------------------------------------------------


def _param_shapes(D, H, num_layers, num_directions, bias):
    """``{name: shape}`` of every parameter, in torch's order (``RNN.param_shapes`` without a layer)."""
    shapes = {}
    for k in range(num_layers):
        D_k = D if k == 0 else H * num_directions
        for suffix in _suffixes(num_directions):
            shapes[f"weight_ih_l{k}{suffix}"] = (H, D_k)
            shapes[f"weight_hh_l{k}{suffix}"] = (H, H)
            if bias:
                shapes[f"bias_ih_l{k}{suffix}"] = (H,)
                shapes[f"bias_hh_l{k}{suffix}"] = (H,)
    return shapes


def _check_state_dict(state_dict, shapes, target):
    """Every key, type, shape and dtype of ``state_dict`` against ``shapes``, before anything is made.

    One ``ValueError`` lists every missing key, unexpected key and wrong shape;
    a value that is not an array, a masked array or not real floating is a
    ``TypeError`` naming its key. ``target`` describes the layer in messages.
    """
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"state_dict must be a mapping; got {type(state_dict).__name__}")
    for name in shapes:
        if name in state_dict:
            refuse_masked(f"state_dict[{name!r}]", state_dict[name])
            if not is_array(state_dict[name]):
                raise TypeError(
                    f"state_dict[{name!r}] must be an array of shape {shape_str(shapes[name])}; "
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
        raise ValueError(f"state_dict does not fit {target}: " + ", ".join(problems))
    for name in shapes:
        value = state_dict[name]
        if not namespace_of(value).isdtype(value.dtype, "real floating"):
            raise TypeError(f"state_dict[{name!r}] must have a real floating dtype; got {value.dtype}")


def _is_torch_module(obj):
    if not type(obj).__module__.startswith("torch"):
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def _suffixes(num_directions):
    return ("", "_reverse")[:num_directions]


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


def _where(params):
    """``(device, dtype)`` of the parameters (the dtype as the arrays report it)."""
    first = next(iter(params.values()))
    return device(first), first.dtype
