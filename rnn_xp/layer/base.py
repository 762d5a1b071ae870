"""What every recurrent layer of rnn_xp shares: parameters, modes, moving, and the run over layers.

``Recurrent`` holds the parameters under torch's names in one library,
device and dtype, torch's module habits (``train``/``eval``, ``to``,
``parameters``, ``state_dict``) and the machinery that runs every layer and
direction of a call: the call is checked once (``_check_call``: ``x``, the
initial state, ``lengths``, ``mask``), then each layer and direction runs
through the kernels' entry (``kernels.scan``), which trusts it; the
backward walks the layers back through ``kernels.backward``.

A layer class (``RNN``, ``LSTM``, ``GRU``) tells the machinery what differs:
its parameters' shapes (``shapes``), its cell for each direction
(``_cells``), a layer and direction's weights as the cell takes them
(``_cell_weights``), the parts of its state (``_state_labels``,
``_state_parts``, ``_state_sizes``), how the weight gradients map back to
its parameters (``_param_grads``) and the shape of its results.

Every layer is also a JAX pytree (``register_pytree``, done without
importing JAX): its parameters are the leaves, everything else is static,
so ``jax.grad(loss)(layer)`` is a layer of gradients. ``Recurrent.apply``
runs a call with other parameters, as a pure function of them.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
import threading
import warnings
from typing import NamedTuple

import numpy as np

from .._activations import check_activation, check_nonlinearity
from .._backends import dtype_name, library_name, move, resolve_dtype, resolve_namespace
from .._checks import (
    cast,
    check_bool,
    check_features,
    check_float_dtypes,
    check_lengths,
    check_mask,
    check_real_arrays,
    check_same_device,
    check_state,
    shape_str,
)
from .._compat import (
    array_namespace,
    device,
    is_array,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    namespace_of,
    outside_stacklevel,
    refuse_masked,
)
from .._devices import dtype_arg, family, target, to_kind, where
from .._params import check_state_dict, direction_suffixes as suffixes, param_count
from ..kernels import backward, scan

__all__ = [
    "LayerCache",
    "LayerGrads",
    "Recurrent",
    "check_activations",
    "check_dropout",
    "check_size",
    "collapse",
    "gate_options",
    "per_direction",
    "register_pytree",
    "suffixes",
]


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


class _Call(NamedTuple):
    """A forward call of a layer, checked once (``Recurrent._check_call``)."""

    xp: object
    x: object  # (T, *batch, D), in dtype
    parts: tuple  # the initial state's parts, each (L*dirs, *batch, S_k) or None
    lengths: object
    mask: object  # (T, *batch) or None
    batch: tuple
    dtype: object
    batch_first: bool



class Recurrent:
    """The base of ``RNN``, ``LSTM`` and ``GRU`` (see the module docstring); not made directly."""

    _state_labels = ("h0",)

    def _setup(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
               bidirectional, reverse):
        """Check and keep the options every layer has."""
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.dropout = check_dropout(dropout, self.num_layers)
        self.reverse = check_bool("reverse", reverse)
        if self.reverse and self.bidirectional:
            raise ValueError(
                "reverse=True is a single direction that runs backwards; a bidirectional "
                "layer already has one (bidirectional=True, reverse=False)"
            )

    def _init_params(self, xp, dev, dtype, seed):
        """Draw the initial weights ``U(-1/sqrt(H), 1/sqrt(H))`` as torch does, or load the given ones.

        The draws are float64 NumPy numbers, then moved, so one seed gives
        the same weights on every backend. A layer made by ``from_params``
        draws nothing: it loads the given arrays, and its generator is
        advanced to where the draws would have left it.
        """
        xp, dev = resolve_namespace(xp, dev)
        dtype = resolve_dtype(xp, dtype)
        rng = np.random.default_rng(seed)
        given = self.__dict__.pop("_given_params", None)  # set by from_params: load, draw nothing
        self.xp, self.device, self.dtype = xp, dev, dtype
        if given is None:
            k = 1.0 / math.sqrt(self.hidden_size)
            params = {
                name: rng.uniform(-k, k, size=shape)  # float64 draws, in torch's order
                for name, shape in self.param_shapes().items()
            }
            self.params = {name: move(p, xp, dev, dtype) for name, p in params.items()}
        else:
            self._load(*given)
            # the stream where the draws would have left it: the same dropout masks as
            # cls(..., seed=seed).load_state_dict(params)
            rng.bit_generator.advance(param_count(self.param_shapes()))
        self.device, self.dtype = where(self.params)
        self.training = True
        self.generator = rng  # after the weights, the same stream draws the dropout masks
        register_pytree(type(self))

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
            The configuration, as the layer's constructor takes it.
        names : mapping, optional
            What error messages call each array (a converter's own names,
            such as ``"kernel"``); default ``state_dict['weight_ih_l0']``, ...

        Returns
        -------
        layer
            Of the class it is called on.

        Raises
        ------
        ValueError, TypeError
            As the constructor and :meth:`load_state_dict` raise them.

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

    @property
    def num_directions(self):
        """2 for a bidirectional layer, else 1."""
        return 2 if self.bidirectional else 1

    def param_shapes(self):
        """``{name: shape}`` for every parameter, in torch's order."""
        return self.shapes(self.input_size, self.hidden_size, self.num_layers, self.num_directions,
                           self.bias, **self._shape_options())  # fmt: skip

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

    # -- running with other parameters: a pure function of them ------------------

    def apply(self, params, x, hx=None, *, lengths=None, mask=None):
        """Run the layer with the parameters ``params`` in place of its own; the layer is not changed.

        The call ``layer(x, hx, lengths=lengths, mask=mask)`` as a pure
        function of the parameters: what ``jax.grad`` with respect to a dict
        of parameters, ``jax.vmap`` over stacked parameters and
        ``torch.func.grad`` (``torch.func.functional_call``-style code) take.

        Parameters
        ----------
        params : mapping
            Every parameter under its name in :attr:`params` (torch's names),
            with that parameter's shape: arrays of the layer's library, of any
            real floating dtype (the call computes in the promotion of the
            parameters' and the input's dtypes). They are used as given,
            neither copied nor moved: JAX tracers and ``torch.func`` tensors
            stay in their transformation.
        x : array
            As for :meth:`forward`.
        hx : array or pair of arrays, optional
            The initial state as :meth:`forward` takes it: ``h0`` for
            ``RNN`` and ``GRU``, ``(h0, c0)`` for ``LSTM``.
        lengths, mask : optional
            As for :meth:`forward`.

        Returns
        -------
        tuple
            What :meth:`forward` returns without a cache: ``(output, h_n)``
            for ``RNN`` and ``GRU``, ``(output, (h_n, c_n))`` for ``LSTM``.

        Raises
        ------
        ValueError
            A name of ``params`` is missing or unexpected, or a shape is
            wrong (one message lists them all); what :meth:`forward` raises.
        TypeError
            ``params`` is not a mapping, or a value is not a real floating
            array of the layer's library; what :meth:`forward` raises.

        Notes
        -----
        The layer lends its configuration and mode: in training mode with
        ``dropout > 0`` the masks are drawn from :attr:`generator` as a call
        draws them (the generator advances, and inside ``jax.jit`` that is a
        ``ValueError``, see :doc:`/frameworks`); in eval mode or with
        ``dropout=0`` nothing else of the layer is read.

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import GRU
        >>> gru = GRU(3, 4, seed=0)
        >>> x = np.ones((5, 2, 3), dtype=np.float32)
        >>> bool(np.array_equal(gru.apply(gru.params, x)[0], gru(x)[0]))
        True
        >>> doubled = {name: 2 * p for name, p in gru.params.items()}
        >>> output, h_n = gru.apply(doubled, x)
        >>> bool(np.array_equal(output, gru(x)[0]))      # other weights; the layer keeps its own
        False
        """
        return self._with_params(params)(x, hx, lengths=lengths, mask=mask)

    def _with_params(self, params):
        """A shallow copy of the layer holding ``params`` (checked: names, shapes, library, dtype)."""
        shapes = self.param_shapes()
        check_state_dict(params, shapes, repr(self), label="params")
        for name in shapes:
            library = namespace_of(params[name])
            if family(library) != family(self.xp):
                raise TypeError(
                    f"params[{name!r}] is from {library_name(library)} but the layer runs in "
                    f"{library_name(self.xp)}; move the layer with layer.to(xp=...) or convert params"
                )
        layer = object.__new__(type(self))
        layer.__dict__.update(self.__dict__)
        layer.params = {name: params[name] for name in shapes}  # torch's order
        layer.dtype = check_float_dtypes(self.xp, layer.params)
        return layer

    def __getattr__(self, name):  # rnn.weight_ih_l0, as on a torch module
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self):
        options = [f"{self.input_size}", f"{self.hidden_size}"]
        for name, default in self._repr_defaults.items():
            if getattr(self, name) != default:
                options.append(f"{name}={getattr(self, name)!r}")
        library = getattr(self.xp, "__name__", repr(self.xp)).replace("array_api_compat.", "")
        dtype = dtype_name(self.xp, self.dtype)
        return f"{type(self).__name__}({', '.join(options)}; {library}, {dtype}, device={self.device})"

    # -- pickling: the library travels by name ----------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state["xp"] = family(self.xp) or library_name(self.xp)
        del state["device"], state["dtype"]  # read off the parameters again
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.xp, _ = resolve_namespace(state["xp"], None)
        self.device, self.dtype = where(self.params)
        register_pytree(type(self))

    # -- the machinery every recurrent layer shares ------------------------------

    def _check_call(self, x, parts, lengths, mask):
        """Check a forward call once: ``x``, the initial state's parts, ``lengths``, ``mask``.

        Returns a ``_Call``: the namespace, ``x`` time-major, the parts (each
        ``(L*dirs, *batch, S_k)`` or ``None``), the validated ``lengths`` and
        time-major ``mask``, the batch shape and the dtype every array of the
        call computes in. Nothing below this checks again (the kernels'
        entry trusts it), so ``lengths`` is read to the host once per call.
        """
        xp = self.xp
        refuse_masked("x", x)
        if not is_array(x):
            raise TypeError(f"x must be an array (T, B, D) or (T, D); got {type(x).__name__}")
        if is_numpy_namespace(xp) and is_dask_namespace(namespace_of(x)):
            xp = namespace_of(x)  # Dask input, NumPy parameters: the result is a lazy Dask array
        labels = self._state_labels
        named = {"x": x, **dict(zip(labels, parts))}
        for name, arr in named.items():
            if arr is None or not is_array(arr) or namespace_of(arr) is xp:
                continue
            if not (is_dask_namespace(xp) and is_numpy_namespace(namespace_of(arr))):
                library = library_name(namespace_of(arr))
                if name != "x":  # x already matches the layer: the state is the one to convert
                    raise TypeError(
                        f"{name} is from {library} but x and the layer's parameters are in "
                        f"{library_name(self.xp)}; convert {name} to {library_name(self.xp)} first "
                        f"({library_name(self.xp)}.asarray({name}))"
                    )
                raise TypeError(
                    f"{name} is from {library} but the layer's parameters "
                    f"are in {library_name(self.xp)}; move the layer with rnn.to(xp=...) first"
                )
        array_namespace(named, xp=xp)  # a state that is not an array: TypeError naming it
        L, dirs = self.num_layers, self.num_directions
        layouts = {2: "(T, D)", 3: "(B, T, D)" if self.batch_first else "(T, B, D)"}
        if x.ndim not in layouts:
            raise ValueError(
                f"x must be 3-D {layouts[3]} or unbatched 2-D (T, D); "
                f"got shape {shape_str(x.shape)}"
            )
        check_features("x", x, self.input_size, layouts[x.ndim], x.ndim)
        batch_first = self.batch_first and x.ndim == 3
        given = {k: v for k, v in named.items() if v is not None}
        dtype = check_float_dtypes(xp, given)
        dtype = xp.result_type(dtype, self.dtype)  # a float32 layer given float64 x computes float64
        check_same_device({**given, "the layer's parameters": next(iter(self.params.values()))})
        if batch_first:
            x = xp.permute_dims(x, (1, 0, 2))  # (T, B, D)
        T, batch = x.shape[0], tuple(x.shape[1:-1])
        for label, part, size in zip(labels, parts, self._state_sizes()):
            if part is not None:
                layout = "(num_layers * num_directions" + (f", B, {label[0].upper()})" if batch
                                                           else f", {label[0].upper()})")  # fmt: skip
                check_state(label, part, (L * dirs, *batch), size, layout)
        dev = device(x)
        lengths = check_lengths(xp, lengths, batch, T, dev)
        mask = check_mask(xp, mask, batch, T, dev, lengths=lengths)  # (T, *batch)
        x = cast(xp, x, dtype)
        parts = tuple(None if q is None else cast(xp, q, dtype) for q in parts)
        return _Call(xp, x, parts, lengths, mask, batch, dtype, batch_first)

    def _run(self, call, return_cache):
        """Every layer and direction over a checked call: ``(output, finals, cache or None)``.

        ``finals`` stacks each part's final states ``(L*dirs, *batch, S_k)``.
        """
        xp, dtype = call.xp, call.dtype
        L, dirs = self.num_layers, self.num_directions
        p = self.dropout if self.training else 0.0
        layer_in = call.x
        finals = [[] for _ in self._state_labels]
        inputs, starts, seqs, weights, masks = [], [], [], [], []
        for k in range(L):
            drop = None
            if k > 0 and p > 0:  # dropout on layer k - 1's output
                drop = self._dropout_mask(layer_in, p)  # (T, *batch, dirs * H)
                layer_in = layer_in * drop
            masks.append(drop)
            inputs.append(layer_in)  # (T, *batch, D_k)
            outputs = []
            for d, suffix in enumerate(suffixes(dirs)):
                i = k * dirs + d
                w = self._cell_weights(k, suffix)
                w = type(w)(*(cast(xp, a, dtype) for a in w))
                state0 = tuple(
                    xp.zeros((*call.batch, size), dtype=dtype, device=device(call.x)) if q is None
                    else q[i, ...]
                    for q, size in zip(call.parts, self._state_sizes())
                )  # each (*batch, S_k)
                run_seqs, run_finals = scan(
                    xp, self._cells[d], layer_in, state0, w, lengths=call.lengths,
                    reverse=d == 1 or self.reverse, return_sequences=True, mask=call.mask,
                )  # fmt: skip
                outputs.append(run_seqs[0])  # (T, *batch, H_out)
                for k_part, f in enumerate(run_finals):
                    finals[k_part].append(f)  # (*batch, S_k)
                starts.append(state0)
                seqs.append(run_seqs)
                weights.append(w)
            # (T, *batch, dirs * H): forward states, then reverse
            layer_in = outputs[0] if dirs == 1 else xp.concat(outputs, axis=-1)
            if dirs == 2 and is_dask_namespace(xp):  # one chunk along features, as the next layer needs
                layer_in = layer_in.rechunk({layer_in.ndim - 1: -1})

        output = xp.permute_dims(layer_in, (1, 0, 2)) if call.batch_first else layer_in
        finals = tuple(xp.stack(f, axis=0) for f in finals)  # each (L*dirs, *batch, S_k)
        cache = None
        if return_cache:
            cache = LayerCache(inputs, [s[0] for s in starts], [q[0] for q in seqs], weights,
                               call.lengths, call.batch_first, masks, step_mask=call.mask,
                               states=starts, seqs=seqs)  # fmt: skip
        return output, finals, cache

    def _dropout_mask(self, like, p):
        """``0`` or ``1 / (1 - p)`` per entry of ``like``, drawn from :attr:`generator`.

        The draws are float64 NumPy numbers, then moved: one generator state
        gives the same mask on every backend and in every dtype.
        """
        xp = namespace_of(like)
        if is_jax_namespace(xp) and _staged(xp):
            raise ValueError(
                f"dropout={self.dropout} in training mode draws its masks from layer.generator (NumPy) "
                "each time the layer runs; inside jax.jit (or jax.checkpoint, lax.scan) it would draw "
                "them once, while tracing, and every call of the compiled function would reuse them. "
                "Inside jax.jit call layer.eval() (no dropout), or take the gradient with jax.grad "
                "outside jax.jit, where each call draws new masks"
            )
        keep = self.generator.random(tuple(like.shape)) >= p  # (T, *batch, dirs * H) bool
        host = keep * (1.0 / (1.0 - p)) if p < 1 else np.zeros(keep.shape)
        if is_dask_namespace(xp):  # chunked as the output it multiplies
            return xp.asarray(host, dtype=like.dtype).rechunk(like.chunks)
        return xp.asarray(host, dtype=like.dtype, device=device(like))

    def _backprop(self, cache, d_output, d_finals):
        """``LayerGrads`` of a ``LayerCache``, ``d_output`` and the final states' gradients (a tuple)."""
        xp = self.xp
        if not isinstance(cache, LayerCache):
            raise TypeError(
                f"cache must be the LayerCache from {type(self).__name__.lower()}.forward(..., "
                f"return_cache=True); got {type(cache).__name__}"
            )
        L, dirs = self.num_layers, self.num_directions
        if len(cache.h_seqs) != L * dirs or cache.seqs is None:
            raise ValueError(
                f"cache holds {len(cache.h_seqs)} layer directions but the layer has "
                f"num_layers * num_directions = {L * dirs}"
            )
        x0 = cache.inputs[0]  # (T, *batch, D)
        if is_numpy_namespace(xp) and is_array(x0) and is_dask_namespace(namespace_of(x0)):
            xp = namespace_of(x0)  # a Dask batch, NumPy parameters: lazy Dask gradients
        final_labels = tuple(f"d_{n[0]}_n" for n in self._state_labels)  # d_h_n, d_c_n
        named = {"d_output": d_output, **dict(zip(final_labels, d_finals))}
        for name, arr in named.items():
            if arr is None or not is_array(arr) or namespace_of(arr) is xp:
                continue
            if not (is_dask_namespace(xp) and is_numpy_namespace(namespace_of(arr))):
                raise TypeError(
                    f"{name} is from {library_name(namespace_of(arr))} but the layer's parameters "
                    f"are in {library_name(self.xp)}"
                )
        array_namespace(named, xp=xp)  # not an array: TypeError naming it
        given = {k: v for k, v in named.items() if v is not None}
        check_real_arrays(given)  # named here, not as dh
        H_out = self._state_sizes()[0]
        T, batch = x0.shape[0], tuple(x0.shape[1:-1])
        if d_output is not None:
            if cache.batch_first:
                check_state("d_output", d_output, (*batch, T), dirs * H_out,
                            "(B, T, num_directions * H), the shape of output")
                d_output = xp.permute_dims(d_output, (1, 0, 2))  # (T, B, dirs * H)
            else:
                layout = "(T, B, num_directions * H)" if batch else "(T, num_directions * H)"
                check_state("d_output", d_output, (T, *batch), dirs * H_out,
                            layout + ", the shape of output")
        for label, arr, size in zip(final_labels, d_finals, self._state_sizes()):
            if arr is not None:
                name = label[2:]  # h_n, c_n
                layout = "(num_layers * num_directions" + (f", B, {name[0].upper()})" if batch
                                                           else f", {name[0].upper()})")  # fmt: skip
                check_state(label, arr, (L * dirs, *batch), size, layout + f", the shape of {name}")
        dtype = x0.dtype
        if given:
            dtype = xp.result_type(check_float_dtypes(xp, given), dtype)
        d_output = cast(xp, d_output, dtype)
        d_finals = tuple(cast(xp, a, dtype) for a in d_finals)

        d_out, dstate0, grads = d_output, [None] * (L * dirs), {}
        for k in range(L - 1, -1, -1):
            d_in = None
            x_k = cast(xp, cache.inputs[k], dtype)
            for d, suffix in enumerate(suffixes(dirs)):
                i = k * dirs + d
                w = cache.weights[i]
                w = type(w)(*(cast(xp, a, dtype) for a in w))
                state0 = tuple(cast(xp, q, dtype) for q in cache.states[i])
                seqs = tuple(cast(xp, q, dtype) for q in cache.seqs[i])
                dx, dstate0[i], dw = backward(
                    xp, self._cells[d],
                    None if d_out is None else d_out[..., d * H_out:(d + 1) * H_out],
                    x_k, state0, w, seqs, tuple(None if a is None else a[i, ...] for a in d_finals),
                    lengths=cache.lengths, reverse=d == 1 or self.reverse, mask=cache.step_mask,
                )  # fmt: skip
                d_in = dx if d_in is None else d_in + dx  # (T, *batch, D_k)
                grads.update(self._param_grads(xp, k, suffix, dw))
            mask = cache.masks[k] if cache.masks is not None else None
            if mask is not None:  # layer k read mask * (layer k - 1's output)
                d_in = d_in * mask
            d_out = d_in  # gradient reaching layer k - 1's output (T, *batch, dirs * H)

        dx = xp.permute_dims(d_out, (1, 0, 2)) if cache.batch_first else d_out
        params = {name: grads[name] for name in self.param_shapes()}  # torch's order
        dstates = tuple(xp.stack([ds[part] for ds in dstate0], axis=0)
                        for part in range(len(self._state_labels)))  # fmt: skip
        return self._grads_result(dx, dstates, params)


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
            kind = to_kind(arg)
            if given[kind] is not None:
                raise TypeError(f"rnn.to got two {kind} arguments: {given[kind]!r} and {arg!r}")
            given[kind] = arg
        xp, dev = target(self.xp, self.device, given["xp"], given["device"])
        dtype = given["dtype"]
        dtype = dtype_name(self.xp, self.dtype) if dtype is None else dtype_arg(dtype)
        dtype = resolve_dtype(xp, dtype)
        self.params = {name: move(p, xp, dev, dtype, name=name) for name, p in self.params.items()}
        self.xp = xp
        self.device, self.dtype = where(self.params)
        register_pytree(type(self))
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
        xp, dev = target(self.xp, self.device, xp, device)
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


# -- helpers ---------------------------------------------------------------------


def per_direction(name, value, dirs):
    """``value`` once per direction: a tuple of ``dirs`` entries, or one value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != dirs:
            raise ValueError(
                f"{name} must be one value or one per direction ({dirs}); got {len(value)}: "
                f"{list(value)!r}"
            )
        return tuple(value)
    return (value,) * dirs


def collapse(values):
    """One value when every direction has the same, else the tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def check_activations(nonlinearity, alpha, beta, dirs):
    """``(nonlinearity, alpha, beta, activations)``: the attributes, and ``(name, alpha, beta)`` per direction."""
    names = per_direction("nonlinearity", nonlinearity, dirs)
    alphas = per_direction("activation_alpha", alpha, dirs)
    betas = per_direction("activation_beta", beta, dirs)
    for n in names:
        check_nonlinearity(n)
    activations = tuple(check_activation(n, a, b) for n, a, b in zip(names, alphas, betas))
    given = lambda vs: tuple(None if v is None else float(v) for v in vs)  # noqa: E731
    return collapse(names), collapse(given(alphas)), collapse(given(betas)), activations


def gate_options(activations, alpha, beta, dirs, n):
    """Per direction, the ``activations``, ``activation_alpha``, ``activation_beta`` of a gated cell.

    Each is ``None`` (the cell's defaults), one sequence of ``n`` entries
    (every direction), or ``dirs`` such sequences (ONNX's bidirectional
    nodes list ``2 * n`` activations: the forward direction's, then the
    reverse one's). Returns three tuples of ``dirs`` entries.
    """
    def split(name, value):
        if value is None:
            return (None,) * dirs
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a sequence of {n} entries (or one per direction); got {value!r}")
        value = tuple(value)
        if len(value) == n * dirs and dirs > 1:  # flat, as ONNX lists them
            return tuple(value[d * n:(d + 1) * n] for d in range(dirs))
        if len(value) == dirs and dirs > 1 and all(isinstance(v, (list, tuple)) for v in value):
            return tuple(tuple(v) for v in value)
        return (value,) * dirs  # the cell checks its length
    return split("activations", activations), split("activation_alpha", alpha), split("activation_beta", beta)


def check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def check_dropout(dropout, num_layers):
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
            stacklevel=outside_stacklevel(),  # the caller of the layer's constructor
        )
    return dropout


# -- the layers as JAX pytrees ----------------------------------------------------------


_PYTREES = set()  # the layer classes registered with JAX
_PYTREES_LOCK = threading.Lock()


def register_pytree(cls):
    """Make layer class ``cls`` a JAX pytree, once, when JAX is imported (else nothing).

    The leaves are the parameters in torch's order (``layer.params``'s);
    everything else (the configuration, ``xp``, ``device``, ``dtype``, the
    mode ``training`` and ``generator``) is static, compared for equality
    (the generator by identity). So ``jax.grad(loss)(layer)`` returns a
    layer of gradients, and ``jax.jit``/``jax.vmap``/``jax.tree.map`` take
    layers. Called when a layer is made, moved or unpickled: JAX is never
    imported here (``import rnn_xp`` imports no backend), and a class is
    registered as soon as any of its layers is made or moved with JAX
    loaded.
    """
    if cls in _PYTREES or "jax" not in sys.modules:
        return
    with _PYTREES_LOCK:
        if cls in _PYTREES:
            return
        from jax import tree_util

        unflatten = functools.partial(_unflatten, cls)
        tree_util.register_pytree_with_keys(cls, _flatten_with_keys, unflatten, flatten_func=_flatten)
        _PYTREES.add(cls)


class _Static:
    """What a layer's pytree keeps besides its leaves: the parameters' names and every other attribute.

    Equal when the class, the names and every attribute are equal (the
    generator, and anything unhashable, by identity), so that ``jax.jit``
    reuses a compiled program for a layer of the same configuration and
    mode, and ``jax.tree.map`` combines a layer with its gradients. Two
    layers made apart differ in their generators (a layer's state, never
    silently swapped for another's): ``jax.tree.map`` combines them once
    they share one.
    """

    __slots__ = ("names", "state", "_key")

    def __init__(self, cls, names, state):
        self.names = names
        self.state = {k: v for k, v in state.items() if k != "params"}
        self._key = (cls, names, tuple(sorted((k, _frozen(v)) for k, v in self.state.items())))

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        state = self.state
        return (f"static(params {', '.join(self.names)}; training={state.get('training')}, "
                f"generator at {id(state.get('generator')):#x})")


class _Identity:
    """A value compared by identity (a generator, an unhashable attribute)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self):
        return id(self.value)


def _frozen(value):
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, np.random.Generator):
        return _Identity(value)
    try:
        hash(value)
    except TypeError:
        return _Identity(value)
    return value


def _flatten(layer):
    names = tuple(layer.params)
    return tuple(layer.params[n] for n in names), _Static(type(layer), names, layer.__dict__)


def _flatten_with_keys(layer):
    from jax.tree_util import GetAttrKey

    leaves, static = _flatten(layer)
    return tuple((GetAttrKey(n), leaf) for n, leaf in zip(static.names, leaves)), static


def _unflatten(cls, static, leaves):
    layer = object.__new__(cls)
    layer.__dict__.update(static.state)  # a copy: the layer's own attributes
    layer.params = dict(zip(static.names, leaves))
    return layer


def _staged(xp):
    """True inside a JAX trace that stages operations out (``jax.jit``, ``jax.checkpoint``, ``lax.scan``).

    There even an array made from constants is a tracer; under ``jax.grad``
    or ``jax.vmap`` alone it is concrete.
    """
    import jax

    return isinstance(xp.zeros(()), jax.core.Tracer)
