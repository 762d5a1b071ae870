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

Every layer is also a JAX pytree (``layer.pytree``), moves between
libraries with torch's ``to`` (``layer.moving``), and hands back a
``LayerCache`` and ``LayerGrads`` (``layer.results``); ``Recurrent.apply``
runs a call with other parameters, as a pure function of them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

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
    refuse_masked,
)
from .._devices import family, where
from .._params import check_state_dict, direction_suffixes as suffixes, param_count
from ..kernels import backward, scan
from .moving import Moving
from .options import (
    check_activations,
    check_dropout,
    check_size,
    collapse,
    gate_options,
    per_direction,
)
from .pytree import register_pytree, staged
from .results import LayerCache, LayerGrads

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



class Recurrent(Moving):
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
        inputs, starts, seqs, weights, masks, kept = [], [], [], [], [], []
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
                run_seqs, run_finals, *run_kept = scan(
                    xp, self._cells[d], layer_in, state0, w, lengths=call.lengths,
                    reverse=d == 1 or self.reverse, return_sequences=True, mask=call.mask, keep=return_cache,
                )  # fmt: skip
                kept.append(run_kept[0] if run_kept else None)
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
                               states=starts, seqs=seqs, kept=kept)  # fmt: skip
        return output, finals, cache

    def _dropout_mask(self, like, p):
        """``0`` or ``1 / (1 - p)`` per entry of ``like``, drawn from :attr:`generator`.

        The draws are float64 NumPy numbers, then moved: one generator state
        gives the same mask on every backend and in every dtype.
        """
        xp = namespace_of(like)
        if is_jax_namespace(xp) and staged(xp):
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
                    kept=None if cache.kept is None else cache.kept[i],
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




