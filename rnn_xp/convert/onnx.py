"""The ONNX ``RNN`` operator: its inputs ``W``, ``R``, ``B``, its attributes, its ``Y`` layout.

ONNX keeps torch's orientation and both biases, one row per direction:
``W [dirs, H, D]``, ``R [dirs, H, H]``, ``B [dirs, 2H] = [Wb, Rb]``. The
attributes name the activations (``"Tanh"``, ``"Relu"``, ...), their
``activation_alpha``/``activation_beta``, ``clip``, the ``direction`` and
the ``layout``. Whole model files are read and written by ``onnx_read`` and
``onnx_write``.
"""

from __future__ import annotations

from .._activations import ONNX_NAMES, PARAMETERS
from .._checks import check_real_arrays, shape_str
from .._compat import is_array, namespace_of
from .._params import direction_suffixes
from ._common import build_layer, check_layer, check_rnn, param_name

def to_onnx(rnn, *, layer=0):
    """One layer as the ONNX ``RNN`` operator's inputs ``W``, ``R``, ``B``.

    Returns
    -------
    dict
        ``{"W": [dirs, H, D], "R": [dirs, H, H], "B": [dirs, 2H]}`` in the
        layer's library; ``B`` is ``[bias_ih, bias_hh]`` per direction and
        absent for a layer without bias. :func:`onnx_attributes` gives the
        node's attributes, :func:`to_onnx_model` a whole model.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> w = convert.to_onnx(RNN(3, 4, bidirectional=True, seed=0))
    >>> {k: v.shape for k, v in w.items()}
    {'W': (2, 4, 3), 'R': (2, 4, 4), 'B': (2, 8)}
    """
    check_layer(rnn, layer)
    xp, p = rnn.xp, rnn.params
    sfx = direction_suffixes(rnn.num_directions)
    out = {
        "W": xp.stack([p[f"weight_ih_l{layer}{s}"] for s in sfx], axis=0),
        "R": xp.stack([p[f"weight_hh_l{layer}{s}"] for s in sfx], axis=0),
    }
    if rnn.bias:
        out["B"] = xp.stack(
            [xp.concat([p[f"bias_ih_l{layer}{s}"], p[f"bias_hh_l{layer}{s}"]]) for s in sfx],
            axis=0,
        )
    return out


def onnx_attributes(rnn):
    """The ONNX ``RNN`` node attributes that match the layer (one layer of it).

    ``activation_alpha`` and ``activation_beta`` are written when an
    activation takes them: the values of the activations that take the
    parameter, in direction order (how the ONNX specification and
    onnxruntime consume them), padded with 0.0 to one entry per direction
    (which ``onnx.reference`` requires). They are always written, because
    onnxruntime's RNN kernel does not fill in ONNX's defaults. ``clip`` is
    written when the layer clips.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> convert.onnx_attributes(RNN(3, 4, nonlinearity="relu", bidirectional=True))
    {'hidden_size': 4, 'direction': 'bidirectional', 'activations': ['Relu', 'Relu'], 'layout': 0}
    >>> convert.onnx_attributes(RNN(3, 4, nonlinearity="leaky_relu", clip=3.0, reverse=True))
    {'hidden_size': 4, 'direction': 'reverse', 'activations': ['LeakyRelu'], 'layout': 0, 'activation_alpha': [0.01], 'clip': 3.0}
    """
    check_rnn(rnn)
    if rnn.leak != 1.0:
        raise ValueError(f"the ONNX RNN operator has no leak; this layer has leak={rnn.leak}")
    direction = "bidirectional" if rnn.bidirectional else "reverse" if rnn.reverse else "forward"
    attrs = {
        "hidden_size": rnn.hidden_size,
        "direction": direction,
        "activations": [ONNX_NAMES[name] for name, _, _ in rnn.activations],
        "layout": 1 if rnn.batch_first else 0,
    }
    for i, key in ((1, "activation_alpha"), (2, "activation_beta")):
        values = [act[i] for act in rnn.activations if act[i] is not None]  # the takers, in order
        if values:
            attrs[key] = values + [0.0] * (rnn.num_directions - len(values))
    if rnn.clip is not None:
        attrs["clip"] = rnn.clip
    return attrs


def from_onnx(W, R, B=None, *, direction=None, activations=None, activation_alpha=None,
              activation_beta=None, clip=None, layout=0, xp=None, device=None, dtype=None):
    """A one-layer :class:`~rnn_xp.RNN` from the ONNX ``RNN`` operator's weights and attributes.

    Parameters
    ----------
    W, R, B : array
        ``W [dirs, H, D]``, ``R [dirs, H, H]`` and optionally ``B [dirs, 2H]``.
    direction : {"forward", "reverse", "bidirectional"}, optional
        Default: ``"forward"`` for one direction, ``"bidirectional"`` for two.
        ``"reverse"`` gives a layer with ``reverse=True``.
    activations : list of str, optional
        ONNX names (``"Tanh"``, ``"Relu"``, ``"Sigmoid"``, ``"Affine"``,
        ``"LeakyRelu"``, ``"ThresholdedRelu"``, ``"ScaledTanh"``,
        ``"HardSigmoid"``, ``"Elu"``, ``"Softsign"``, ``"Softplus"``), one per
        direction; default Tanh. Two names for one direction (ONNX's old
        default ``["Tanh", "Tanh"]``) use the first, as onnxruntime does.
    activation_alpha, activation_beta : list of float, optional
        The node's attributes, consumed in order by the activations that take
        the parameter (as the ONNX specification says and onnxruntime does;
        values past those are ignored, as long as there are at most one per
        direction). Missing values take ONNX's defaults.
    clip : float, optional
        The node's ``clip``.
    layout : {0, 1}, optional
        The node's ``layout``: 1 means ``X [B, T, D]`` (``batch_first``).
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' dtype.

    Returns
    -------
    RNN

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> W, R = np.ones((2, 4, 3)), np.zeros((2, 4, 4))
    >>> rnn = convert.from_onnx(W, R, activations=["LeakyRelu", "Tanh"], activation_alpha=[0.1, 0.0])
    >>> rnn.activations
    (('leaky_relu', 0.1, None), ('tanh', None, None))
    """
    check_real_arrays({"W": W, "R": R} if B is None else {"W": W, "R": R, "B": B})
    for name, arr, dims in (("W", W, "[dirs, H, D]"), ("R", R, "[dirs, H, H]"),
                            ("B", B, "[dirs, 2H]")):
        ndim = dims.count(",") + 1
        if arr is not None and arr.ndim != ndim:
            raise ValueError(f"{name} must be a {ndim}-D array {dims}; "
                             f"got shape {shape_str(arr.shape)}")
    dirs, H, D = W.shape
    need = {"W": (dirs, H, D), "R": (dirs, H, H), "B": (dirs, 2 * H)}
    for name, arr in (("R", R), ("B", B)):
        if arr is not None and tuple(arr.shape) != need[name]:
            raise ValueError(
                f"{name} must have shape {shape_str(need[name])} to match W [dirs, H, D] = "
                f"{shape_str(W.shape)}; got {shape_str(arr.shape)}"
            )
    if dirs not in (1, 2):
        raise ValueError(f"W must have 1 or 2 directions on axis 0; got shape {shape_str(W.shape)}")
    if direction is None:
        direction = "forward" if dirs == 1 else "bidirectional"
    if direction not in DIRECTIONS or DIRECTIONS[direction] != dirs:
        raise ValueError(f"direction={direction!r} does not fit W with {dirs} direction(s)")
    activation_names, alphas, betas = read_activations(activations, activation_alpha, activation_beta, dirs)
    if isinstance(layout, bool) or not isinstance(layout, int) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    state, names = {}, {}
    for d in range(dirs):  # each direction's rows, copied once into the layer
        parts = [("weight_ih", W[d, ...], "W"), ("weight_hh", R[d, ...], "R")]
        if B is not None:
            parts += [("bias_ih", B[d, :H], "B"), ("bias_hh", B[d, H:], "B")]
        for kind, array, label in parts:
            state[param_name(kind, 0, d)], names[param_name(kind, 0, d)] = array, label
    return build_layer(state, names, nonlinearity=activation_names, batch_first=layout == 1,
                       activation_alpha=alphas, activation_beta=betas, clip=clip,
                       reverse=direction == "reverse", xp=xp, device=device, dtype=dtype)


DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
FROM_ONNX_NAMES = {onnx: name for name, onnx in ONNX_NAMES.items()}


def read_activations(activations, alpha, beta, dirs):
    """rnn_xp names and per-direction ``alpha``/``beta`` lists (``None``: the default)."""
    if isinstance(activations, str):
        raise TypeError(
            f"activations must be a list of names, one per direction; got the string {activations!r}"
        )
    if activations is not None and not isinstance(activations, (list, tuple)):
        raise TypeError(
            f"activations must be a list of names, one per direction; got {type(activations).__name__}"
        )
    activations = ["Tanh"] * dirs if activations is None else list(activations)
    if dirs == 1 and len(activations) == 2:
        activations = activations[:1]  # ONNX's old default ["Tanh", "Tanh"]; onnxruntime takes the first
    if len(activations) != dirs or any(a not in FROM_ONNX_NAMES for a in activations):
        raise ValueError(
            f"activations must be {dirs} name(s) from {list(FROM_ONNX_NAMES)}, one per "
            f"direction; got {activations}"
        )
    names = [FROM_ONNX_NAMES[a] for a in activations]
    per_direction = []
    for key, values, slot in (("activation_alpha", alpha, 0), ("activation_beta", beta, 1)):
        takes = [PARAMETERS[n][slot] is not None for n in names]
        if values is None:
            values = []
        if isinstance(values, str) or not hasattr(values, "__len__"):
            raise TypeError(f"{key} must be a list of floats; got {type(values).__name__}")
        values = [float(v) for v in values]
        if len(values) > max(dirs, sum(takes)):
            raise ValueError(
                f"{key} has {len(values)} values for activations {activations}; "
                f"at most one per direction ({dirs})"
            )
        it = iter(values)  # consumed in order by the activations that take it
        per_direction.append([next(it, None) if t else None for t in takes])
    return tuple(names), tuple(per_direction[0]), tuple(per_direction[1])


def onnx_y_to_output(Y):
    """ONNX's ``Y [T, dirs, B, H]`` as rnn_xp's (torch's) ``output (T, B, dirs * H)``.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> convert.onnx_y_to_output(np.zeros((5, 2, 3, 4))).shape
    (5, 3, 8)
    """
    if not is_array(Y) or Y.ndim != 4:
        got = shape_str(Y.shape) if is_array(Y) else type(Y).__name__
        raise ValueError(f"Y must have shape [T, dirs, B, H]; got {got}")
    xp = namespace_of(Y)
    T, dirs, B, H = Y.shape
    return xp.reshape(xp.permute_dims(Y, (0, 2, 1, 3)), (T, B, dirs * H))


def output_to_onnx_y(output, num_directions):
    """rnn_xp's ``output (T, B, dirs * H)`` in ONNX's ``Y [T, dirs, B, H]`` layout.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import convert
    >>> convert.output_to_onnx_y(np.zeros((5, 3, 8)), 2).shape
    (5, 2, 3, 4)
    """
    if num_directions not in (1, 2):
        raise ValueError(f"num_directions must be 1 or 2; got {num_directions!r}")
    if not is_array(output) or output.ndim != 3 or output.shape[-1] % num_directions:
        got = shape_str(output.shape) if is_array(output) else type(output).__name__
        raise ValueError(f"output must have shape (T, B, dirs * H); got {got}")
    xp = namespace_of(output)
    T, B, DH = output.shape
    Y = xp.reshape(output, (T, B, num_directions, DH // num_directions))
    return xp.permute_dims(Y, (0, 2, 1, 3))
