"""What the Keras and Flax converters share for the gated cells (``LSTM``, ``GRU``).

Both frameworks keep torch's transposes (``kernel (D, gates * H)``) and
their own gate orders and bias placements; their readers turn them into
torch's names and order here and build the layer with
:func:`build_gated`, which draws no weights (``from_params``). Their
writers read one layer and direction back with :func:`gated_weights` and
refuse, with :func:`refuse_options`, what the framework's cell cannot
compute.
"""

from __future__ import annotations

from .._activations import check_activation
from .._backends import dtype_name, to_host
from .._checks import check_bool, shape_str
from .._compat import is_array, namespace_of
from .._params import direction_suffixes, read_state_dict
from ..layer import GRU, LSTM, RNN
from ..layer.base import gate_options

#: The cell defaults, in rnn_xp's (ONNX's) activation order: LSTM (f, g, h), GRU (f, g).
DEFAULTS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh")}


def build_gated(cls, state, names=None, *, xp=None, device=None, dtype=None, **config):
    """An :class:`~rnn_xp.LSTM` or :class:`~rnn_xp.GRU` (``cls``) holding ``state``, nothing drawn.

    ``state`` maps torch's names to arrays of any library (in torch's gate
    order); sizes, layers, directions and bias come from its names and
    shapes, checked before anything is allocated; ``names`` says what error
    messages call each array; ``dtype`` defaults to ``weight_ih_l0``'s.
    """
    module = cls.__name__
    sizes, found = read_state_dict(state, module=module, gates=4 if module == "LSTM" else 3,
                                   projection=module == "LSTM")
    first = state["weight_ih_l0"]
    if dtype is None and is_array(first):
        dtype = dtype_name(namespace_of(first), first.dtype)
    return cls.from_params(state, *sizes, names=names, xp=xp, device=device, dtype=dtype, seed=0,
                           **found, **config)


def activation_options(per_direction, kind):
    """The ``activations``/``activation_alpha``/``activation_beta`` arguments of a layer.

    ``per_direction`` holds, for each direction, one ``(name, alpha, beta)``
    per gate activation. The defaults without parameters give ``None`` (a
    plain cell, which the fast kernels run).
    """
    plain = tuple((n, None, None) for n in DEFAULTS[kind])
    if all(tuple(acts) == plain for acts in per_direction):
        return {}
    pick = lambda i: tuple(tuple(a[i] for a in acts) for acts in per_direction)  # noqa: E731
    names, alphas, betas = pick(0), pick(1), pick(2)
    if len(set(per_direction)) == 1:  # one set for every direction
        names, alphas, betas = names[0], alphas[0], betas[0]
    return {"activations": names, "activation_alpha": alphas, "activation_beta": betas}


def layer_activations(rnn):
    """Per direction, ``(name, alpha, beta)`` of each gate activation of a gated layer, defaults filled."""
    kind = type_name(rnn)
    n = len(DEFAULTS[kind])
    acts, alphas, betas = gate_options(rnn.activations, rnn.activation_alpha, rnn.activation_beta,
                                       rnn.num_directions, n)  # fmt: skip
    out = []
    for names, al, be in zip(acts, alphas, betas):
        names = DEFAULTS[kind] if names is None else names
        al, be = (None,) * n if al is None else al, (None,) * n if be is None else be
        out.append(tuple(check_activation(*t) for t in zip(names, al, be)))
    return tuple(out)


def type_name(rnn):
    """``"RNN"``, ``"LSTM"`` or ``"GRU"``; ``TypeError`` for anything else."""
    for cls in (LSTM, GRU, RNN):
        if isinstance(rnn, cls):
            return cls.__name__
    raise TypeError(f"rnn must be an rnn_xp.RNN, LSTM or GRU; got {type(rnn).__name__}")


def check_any_layer(rnn, layer, reverse):
    """``rnn`` a layer, ``layer`` one of its indices, ``reverse`` only for a bidirectional one."""
    type_name(rnn)
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < rnn.num_layers:
        raise ValueError(f"layer must be an int in [0, {rnn.num_layers - 1}]; got {layer!r}")
    if check_bool("reverse", reverse) and not rnn.bidirectional:
        raise ValueError("reverse=True needs a bidirectional layer")


def gated_weights(rnn, layer, reverse):
    """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer and direction (``None`` biases without bias)."""
    check_any_layer(rnn, layer, reverse)
    suffix = f"_l{layer}{direction_suffixes(2)[1 if reverse else 0]}"
    p = rnn.params
    return tuple(p.get(name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def refuse_options(rnn, target):
    """``ValueError`` naming the first option of a gated layer that ``target``'s cell does not have."""
    kind = type_name(rnn)
    given = []
    if kind == "LSTM":
        given += [("proj_size", rnn.proj_size, 0), ("peepholes", rnn.peepholes, False),
                  ("input_forget", rnn.input_forget, False)]  # fmt: skip
    given.append(("clip", rnn.clip, None))
    for name, value, default in given:
        if value != default:
            raise ValueError(f"{target} has no {name}; this {kind} has {name}={value!r}")


def swap_first_blocks(a, n, axis=0):
    """``a`` with its first two of ``n`` gate blocks along ``axis`` swapped (GRU: z, r, h <-> r, z, n).

    In ``a``'s own library; the swap is its own inverse.
    """
    xp = namespace_of(a)
    H = a.shape[axis] // n
    take = lambda lo, hi: a[lo:hi] if axis == 0 else a[:, lo:hi]  # noqa: E731
    return xp.concat([take(H, 2 * H), take(0, H), take(2 * H, n * H)], axis=axis)


def blocks(a, n, axis=0):
    """The ``n`` gate blocks of ``a`` along ``axis`` (views)."""
    H = a.shape[axis] // n
    return [a[k * H:(k + 1) * H] if axis == 0 else a[:, k * H:(k + 1) * H] for k in range(n)]


def all_zero(a):
    """Whether every entry of ``a`` (any library) is zero: read on the host, for a writer's check."""
    return not bool((to_host(a) != 0).any())


def check_columns(name, a, rows, cols, what):
    """``a`` 2-D of shape ``(rows, cols)`` (``None`` for free), else ``ValueError`` with ``what`` the layout."""
    shape = tuple(a.shape)
    if len(shape) != 2 or (rows is not None and shape[0] != rows) or shape[1] != cols:
        need = shape_str(("D" if rows is None else rows, cols))
        raise ValueError(f"{name} must have shape {what} = {need}; got {shape_str(shape)}")
