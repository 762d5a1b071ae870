"""What every converter shares: the one builder of a layer from given weights, and argument checks.

:func:`build_layer` makes an :class:`~rnn_xp.RNN` from per-layer,
per-direction weights under torch's names (``rnn_xp._params`` holds the
naming rules and the direction suffixes): the configuration and every shape
are checked first, no initial weights are drawn, and each given array is
copied once into the layer's library, device and dtype, under the name its
format gives it in error messages. :func:`from_transposed` is the step the
Keras, Flax and CS231n readers share: their matrices are torch's transposes.
"""

from __future__ import annotations

import numpy as np

from .._backends import dtype_name
from .._checks import check_bool, check_real_arrays, shape_str
from .._compat import is_array, namespace_of
from .._params import direction_suffixes, direction_weights, read_state_dict
from ..layer import RNN


def param_name(kind, layer, direction):
    """torch's name of one parameter: ``param_name("weight_ih", 1, 1)`` is ``weight_ih_l1_reverse``."""
    return f"{kind}_l{layer}{direction_suffixes(2)[direction]}"


def build_layer(state, names=None, *, xp=None, device=None, dtype=None, **config):
    """An :class:`~rnn_xp.RNN` holding ``state``: no weights drawn and thrown away.

    Parameters
    ----------
    state : dict
        torch's names to arrays of any library; the sizes, the number of
        layers and directions and the bias are read from the names and shapes.
    names : dict, optional
        What error messages call each array (``"W"``, ``"kernel"``, ...).
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to ``weight_ih_l0``'s.
    **config
        The rest of the configuration (``nonlinearity``, ``batch_first``,
        ``reverse``, ``clip``, ...), as :class:`~rnn_xp.RNN` takes it.
    """
    sizes, found = read_state_dict(state)
    first = state["weight_ih_l0"]
    if dtype is None and is_array(first):
        dtype = dtype_name(namespace_of(first), first.dtype)
    return RNN.from_params(state, *sizes, names=names, xp=xp, device=device, dtype=dtype, seed=0,
                           **found, **config)


def build_gated(cls, state, names=None, *, xp=None, device=None, dtype=None, **config):
    """An :class:`~rnn_xp.LSTM` or :class:`~rnn_xp.GRU` (``cls``) holding ``state``, as :func:`build_layer`.

    ``state`` holds torch's names (gates in torch's order); an LSTM's
    ``peephole_l{k}[_reverse]`` entries ``(3H,)`` (``p_i, p_f, p_o``) make
    a layer with ``peepholes=True``. The sizes, layers, directions, bias
    and ``proj_size`` are read from the names and shapes, every one checked
    before anything is copied; ``config`` is the rest of the configuration.
    """
    gates = {"LSTM": 4, "GRU": 3}[cls.__name__]
    torch_names = {k: v for k, v in state.items() if not k.startswith("peephole_")}
    sizes, found = read_state_dict(torch_names, module=cls.__name__, gates=gates,
                                   projection=cls.__name__ == "LSTM")
    if len(torch_names) < len(state):
        found["peepholes"] = True
    first = state["weight_ih_l0"]
    if dtype is None and is_array(first):
        dtype = dtype_name(namespace_of(first), first.dtype)
    return cls.from_params(state, *sizes, names=names, xp=xp, device=device, dtype=dtype, seed=0,
                           **found, **config)


def from_transposed(directions, keys, activations, batch_first, xp, device, dtype, *, reverse=False):
    """A one-layer RNN from ``(D, H)`` input and ``(H, H)`` recurrent weights and a bias.

    ``directions`` holds one mapping of ``keys`` (the format's names of the
    input matrix, the recurrent matrix and the bias) to arrays per direction
    (two: a bidirectional layer), ``activations`` one ``(name, alpha,
    beta)`` per direction. The bias becomes ``bias_ih``, with ``bias_hh``
    zero.
    """
    n_in, n_rec, n_b = keys
    dirs = len(directions)
    checked = []
    for weights in directions:
        weights = {k: v for k, v in weights.items() if v is not None or k != n_b}
        check_real_arrays(weights)
        kernel, recurrent = weights[n_in], weights[n_rec]
        if kernel.ndim != 2:
            raise ValueError(f"{n_in} must have shape (D, H); got {shape_str(kernel.shape)}")
        D, H = kernel.shape
        if tuple(recurrent.shape) != (H, H):
            raise ValueError(
                f"{n_rec} must have shape (H, H) = {shape_str((H, H))} to match {n_in} (D, H) = "
                f"{shape_str(kernel.shape)}; got {shape_str(recurrent.shape)}"
            )
        bias = weights.get(n_b)
        if bias is not None and tuple(bias.shape) != (H,):
            raise ValueError(
                f"{n_b} must have shape (H,) = {shape_str((H,))} to match {n_in} (D, H) = "
                f"{shape_str(kernel.shape)}; got {shape_str(bias.shape)}"
            )
        checked.append((kernel, recurrent, bias))
    if dirs == 2 and (checked[0][0].shape != checked[1][0].shape
                      or (checked[0][2] is None) != (checked[1][2] is None)):
        raise ValueError(
            f"the two directions have {n_in} {shape_str(checked[0][0].shape)} and "
            f"{shape_str(checked[1][0].shape)}, biases {checked[0][2] is not None} and "
            f"{checked[1][2] is not None}; they must match"
        )
    state, names = {}, {}
    for d, (kernel, recurrent, bias) in enumerate(checked):
        of = "" if dirs == 1 else (" of the forward direction", " of the reverse direction")[d]
        for kind, array, key in (("weight_ih", kernel, n_in), ("weight_hh", recurrent, n_rec),
                                 ("bias_ih", bias, n_b)):
            if array is not None:
                state[param_name(kind, 0, d)] = array.T if kind != "bias_ih" else array
                names[param_name(kind, 0, d)] = key + of
        if bias is not None:
            state[param_name("bias_hh", 0, d)] = np.zeros(bias.shape[0])  # moved into the dtype
    return build_layer(state, names, xp=xp, device=device, dtype=dtype, batch_first=batch_first,
                       reverse=reverse, nonlinearity=tuple(a[0] for a in activations),
                       activation_alpha=tuple(a[1] for a in activations),
                       activation_beta=tuple(a[2] for a in activations))


def check_flag(name, value):
    """``None`` or a bool, unchanged; anything else (``"no"``, ``1``, ``np.bool_``) a ``TypeError``."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None; got {value!r}")
    return value


def check_rnn(rnn):
    """``TypeError`` unless ``rnn`` is an :class:`~rnn_xp.RNN`."""
    if not isinstance(rnn, RNN):
        raise TypeError(f"rnn must be an rnn_xp.RNN; got {type(rnn).__name__}")


def check_layer(rnn, layer):
    """``rnn`` is an RNN and ``layer`` one of its layers' indices."""
    check_rnn(rnn)
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < rnn.num_layers:
        raise ValueError(f"layer must be an int in [0, {rnn.num_layers - 1}]; got {layer!r}")


def layer_weights(rnn, layer, reverse):
    """``(weight_ih, weight_hh, bias_ih + bias_hh or None)`` of one layer and direction."""
    check_layer(rnn, layer)
    check_bool("reverse", reverse)
    if reverse and not rnn.bidirectional:
        raise ValueError("reverse=True needs a bidirectional layer")
    return direction_weights(rnn.params, layer, direction_suffixes(2)[1 if reverse else 0])
