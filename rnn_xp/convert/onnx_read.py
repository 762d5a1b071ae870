"""ONNX model files read into a layer: ``RNN`` nodes, the glue between them, their weights.

The file is untrusted input (model hubs hand them out): the graph is walked
with every step checked, weights are read only from the model or from
files inside its folder, and nothing is allocated before the sizes are known.
"""

from __future__ import annotations

from .._checks import shape_str
from ._common import build_layer, param_name
from .onnx import DIRECTIONS, read_activations

# Nodes that only move, cut or copy data: what may sit between RNN nodes.
_GLUE = frozenset({"Cast", "Concat", "Constant", "ConstantOfShape", "Expand", "Gather", "Identity",
                   "Reshape", "Shape", "Slice", "Squeeze", "Transpose", "Unsqueeze"})


def from_onnx_model(model_or_path, *, xp=None, device=None, dtype=None):
    """An :class:`~rnn_xp.RNN` from an ONNX model of ``RNN`` nodes with initializer weights.

    Reads the models :func:`to_onnx_model` and ``torch.onnx.export(...,
    dynamo=False)`` write for a ``torch.nn.RNN``: one ``RNN`` node per layer
    (stacked layers chained through ``Transpose``/``Reshape``/``Squeeze``),
    weights as initializers or ``Constant`` nodes, ``initial_h`` absent,
    zeros or sliced from a graph input, ``sequence_lens`` absent or a graph
    input.

    Parameters
    ----------
    model_or_path : onnx.ModelProto, bytes, str, path or binary file object
        The model. External data is read only from a path's folder, and only
        from files inside it.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights'.

    Returns
    -------
    RNN
        With the nodes' configuration; ``rnn(x, h0, lengths=lengths)`` gives
        the layer's ``output`` and ``h_n`` for the model's inputs (``h0`` and
        ``lengths`` where the model has them).

    Raises
    ------
    ValueError
        A node that is neither an ``RNN`` node nor one that reshapes data,
        nodes that disagree on their configuration, weights that are not
        constants, an ``initial_h`` that is neither zeros nor a graph input, a
        layer not fed by the previous one's ``Y``, or external data outside
        the model's folder. The message names the node and what it lacks.
    TypeError
        ``model_or_path`` is none of the accepted types.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import RNN, convert
    >>> rnn = RNN(3, 4, num_layers=2, batch_first=True, nonlinearity="relu", seed=0)
    >>> again = convert.from_onnx_model(convert.to_onnx_model(rnn))
    >>> again.num_layers, again.batch_first, again.nonlinearity
    (2, True, 'relu')
    >>> all(np.array_equal(again.params[k], v) for k, v in rnn.params.items())
    True
    """
    model, base_dir = _load_onnx(model_or_path)
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    producer = {}
    for i, nd in enumerate(graph.node):
        if nd.domain not in ("", "ai.onnx") or (nd.op_type != "RNN" and nd.op_type not in _GLUE):
            raise ValueError(
                f"node {_label(nd, i)} is {nd.domain + '.' if nd.domain else ''}{nd.op_type}: "
                "from_onnx_model reads graphs of RNN nodes joined only by nodes that reshape "
                f"data ({', '.join(sorted(_GLUE))})"
            )
        for out in nd.output:
            producer[out] = (i, nd)
        if nd.op_type == "Constant":
            consts[nd.output[0]] = _constant_tensor(nd, i)
    rnns = [(i, nd) for i, nd in enumerate(graph.node) if nd.op_type == "RNN"]
    if not rnns:
        raise ValueError(
            "the graph has no RNN node; its nodes are "
            f"{[nd.op_type for nd in graph.node]}"
        )
    inputs = [v.name for v in graph.input if v.name not in consts]
    reader = _GraphReader(consts, producer, base_dir)

    configs, weights = [], []
    for i, nd in rnns:
        configs.append(reader.config(nd, i))
        weights.append(reader.weights(nd, i, configs[-1]))
    first = configs[0]
    for k, ((i, nd), cfg) in enumerate(zip(rnns, configs)):
        for key in ("hidden_size", "direction", "activations", "alpha", "beta", "clip"):
            if cfg[key] != first[key]:
                raise ValueError(
                    f"node {_label(nd, i)} has {key}={cfg[key]!r} but the first RNN node has "
                    f"{first[key]!r}: an rnn_xp layer has one configuration for every layer"
                )
        if (weights[k]["B"] is None) != (weights[0]["B"] is None):
            raise ValueError(f"node {_label(nd, i)} has a bias B and the first RNN node has not, "
                             "or the other way round")
    dirs, H = DIRECTIONS[first["direction"]], first["hidden_size"]

    # The data path: the graph input into node 0, each Y into the next X.
    used, seq_sources = set(), []
    batch_first = None
    for k, (i, nd) in enumerate(rnns):
        want = ["B", "T", "D"] if configs[k]["layout"] else ["T", "B", "D"]
        if k == 0:
            source, labels = reader.trace(nd.input[0], f"X of node {_label(nd, i)}",
                                          lambda name: name in inputs, ["x0", "x1", "x2"])
            where = dict(zip(labels, want)) if sorted(labels) == ["x0", "x1", "x2"] else {}
            order = [where.get(f"x{j}") for j in range(3)]
            if order not in (["T", "B", "D"], ["B", "T", "D"]):
                raise ValueError(f"X of node {_label(nd, i)} is not the graph input {source!r} "
                                 "or its transpose (T, B) <-> (B, T)")
            batch_first = order[0] == "B"
            used.add(source)
        else:
            prev_i, prev = rnns[k - 1]
            start = ["B", "T", "dir", "H"] if configs[k - 1]["layout"] else ["T", "dir", "B", "H"]
            _, labels = reader.trace(nd.input[0], f"X of node {_label(nd, i)}",
                                     lambda name, p=prev: name == p.output[0], start, dirs=dirs, H=H)
            if labels != [w if w != "D" else "dirH" for w in want]:
                raise ValueError(
                    f"X of node {_label(nd, i)} is not the Y of node {_label(prev, prev_i)} with its "
                    f"directions merged into the features (got axes {labels})"
                )
        seq = nd.input[4] if len(nd.input) > 4 else ""
        h_init = nd.input[5] if len(nd.input) > 5 else ""
        seq_sources.append(reader.sequence_lens(seq, nd, i, inputs))
        used.update(seq_sources[-1])
        used.update(reader.initial_h(h_init, nd, i, k, configs[k]["layout"], dirs, len(rnns), inputs))
    if any(src != seq_sources[0] for src in seq_sources):
        raise ValueError("the RNN nodes disagree on sequence_lens: all of them or none must "
                         "read the same graph input")
    extra = [name for name in inputs if name not in used]
    if extra:
        raise ValueError(f"the graph inputs {extra} feed no RNN node's X, initial_h or sequence_lens")

    state, names = {}, {}
    for k, ((i, nd), w) in enumerate(zip(rnns, weights)):
        for d in range(dirs):
            parts = [("weight_ih", w["W"][d], "W"), ("weight_hh", w["R"][d], "R")]
            if w["B"] is not None:
                parts += [("bias_ih", w["B"][d, :H], "B"), ("bias_hh", w["B"][d, H:], "B")]
            for kind, array, key in parts:
                state[param_name(kind, k, d)] = array
                names[param_name(kind, k, d)] = f"{key} of node {_label(nd, i)}"
    try:
        return build_layer(state, names, nonlinearity=first["activations"], batch_first=batch_first,
                           activation_alpha=first["alpha"], activation_beta=first["beta"],
                           clip=first["clip"], reverse=first["direction"] == "reverse", xp=xp,
                           device=device, dtype=dtype)
    except ValueError as exc:
        if "state_dict does not fit" not in str(exc):
            raise
        raise ValueError(f"the RNN nodes' weights do not chain into one layer: {exc}") from None


def _label(nd, i):
    return f"{nd.name!r} (#{i}, {nd.op_type})" if nd.name else f"#{i} ({nd.op_type})"


def _load_onnx(model_or_path):
    """``(ModelProto, folder of its external data or None)``, external data not loaded."""
    import os

    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, None
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model_or_path)), None
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        return onnx.load(path, load_external_data=False), os.path.dirname(os.path.abspath(path))
    if hasattr(model_or_path, "read"):
        return onnx.load_from_string(model_or_path.read()), None
    raise TypeError(
        "model_or_path must be an onnx.ModelProto, bytes, a path or a binary file object; "
        f"got {type(model_or_path).__name__}"
    )


def _constant_tensor(nd, i):
    from onnx import helper, numpy_helper

    for attr in nd.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            return value
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            import numpy as np

            kind = np.float32 if "float" in attr.name else np.int64
            return numpy_helper.from_array(np.asarray(value, dtype=kind), nd.output[0])
    raise ValueError(f"node {_label(nd, i)} holds a constant rnn_xp cannot read "
                     f"({[a.name for a in nd.attribute]})")


class _GraphReader:
    """Reads RNN nodes, their constants and the data paths between them."""

    def __init__(self, consts, producer, base_dir):
        self.consts, self.producer, self.base_dir = consts, producer, base_dir

    def array(self, name, what):
        """The constant ``name`` as a NumPy array, else ``None`` (not a constant)."""
        from onnx import TensorProto, numpy_helper

        tensor = self.consts.get(name)
        if tensor is None:
            return None
        if tensor.data_location == TensorProto.EXTERNAL:
            tensor = _read_external(tensor, self.base_dir, what)
        return numpy_helper.to_array(tensor)

    def config(self, nd, i):
        from onnx import helper

        a = {attr.name: helper.get_attribute_value(attr) for attr in nd.attribute}
        text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
        direction = text(a.get("direction", b"forward"))
        if direction not in DIRECTIONS:
            raise ValueError(f"node {_label(nd, i)} has direction={direction!r}")
        dirs = DIRECTIONS[direction]
        if "hidden_size" not in a:
            raise ValueError(f"node {_label(nd, i)} lacks the attribute hidden_size")
        activations = [text(v) for v in a["activations"]] if "activations" in a else None
        try:
            names, alphas, betas = read_activations(
                activations, a.get("activation_alpha"), a.get("activation_beta"), dirs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"node {_label(nd, i)}: {exc}") from None
        clip = a.get("clip")
        return {"hidden_size": int(a["hidden_size"]), "direction": direction,
                "activations": names, "alpha": alphas, "beta": betas,
                "clip": None if clip is None else float(clip), "layout": int(a.get("layout", 0))}

    def weights(self, nd, i, cfg):
        out = {}
        for j, key in enumerate(("W", "R", "B"), start=1):  # inputs X, W, R, B, sequence_lens, initial_h
            name = nd.input[j] if len(nd.input) > j else ""
            if name == "":
                if key != "B":
                    raise ValueError(f"node {_label(nd, i)} lacks the input {key}")
                out[key] = None
                continue
            arr = self.array(name, f"{key} of node {_label(nd, i)}")
            if arr is None:
                raise ValueError(
                    f"{key} of node {_label(nd, i)} ({name!r}) is not an initializer or a Constant: "
                    "from_onnx_model reads weights that are stored in the model"
                )
            out[key] = arr
        dirs, H = DIRECTIONS[cfg["direction"]], cfg["hidden_size"]
        W, R, B = out["W"], out["R"], out["B"]
        if W.ndim != 3 or W.shape[:2] != (dirs, H) or R.shape != (dirs, H, H) or (
                B is not None and B.shape != (dirs, 2 * H)):
            raise ValueError(
                f"node {_label(nd, i)} has W {shape_str(W.shape)}, R {shape_str(R.shape)}"
                + ("" if B is None else f", B {shape_str(B.shape)}")
                + f"; its attributes need W [{dirs}, {H}, D], R [{dirs}, {H}, {H}], B [{dirs}, {2 * H}]"
            )
        return out

    def trace(self, name, what, is_source, labels, *, dirs=None, H=None):
        """Walk back from ``name`` to a source; return ``(source, axes at name)``.

        ``labels`` names the source's axes; the nodes on the way (Identity,
        Transpose, Squeeze of a one-direction axis, Reshape that merges the
        directions into the features) map them forward.
        """
        chain = []
        while not is_source(name):
            if name not in self.producer:
                raise ValueError(f"{what} comes from {name!r}, which is not where it should come from")
            i, nd = self.producer[name]
            if nd.op_type not in ("Identity", "Transpose", "Squeeze", "Reshape"):
                raise ValueError(f"{what} passes through node {_label(nd, i)}, which is not an "
                                 "Identity, Transpose, Squeeze or Reshape")
            chain.append((i, nd))
            name = nd.input[0]
        source = name
        labels = list(labels)
        for i, nd in reversed(chain):
            labels = self._apply(nd, i, labels, what, dirs, H)
        return source, labels

    def _apply(self, nd, i, labels, what, dirs, H):
        from onnx import helper

        a = {attr.name: helper.get_attribute_value(attr) for attr in nd.attribute}
        if nd.op_type == "Identity":
            return labels
        if nd.op_type == "Transpose":
            perm = list(a.get("perm", range(len(labels) - 1, -1, -1)))
            return [labels[p] for p in perm]
        if nd.op_type == "Squeeze":
            axes = a.get("axes")
            if axes is None and len(nd.input) > 1 and nd.input[1]:
                axes = self.array(nd.input[1], what)
            axes = [] if axes is None else [int(v) % len(labels) for v in list(axes)]
            if dirs == 1 and [labels[j] for j in axes] == ["dir"]:
                return [("dirH" if lab == "H" else lab) for j, lab in enumerate(labels) if j not in axes]
        if nd.op_type == "Reshape" and len(labels) == 4 and labels[2:] == ["dir", "H"]:
            shape = self.array(nd.input[1], what) if len(nd.input) > 1 else None
            if shape is not None and shape.shape == (3,):
                s = [int(v) for v in shape]
                ok_last = s[2] == -1 and -1 not in s[:2] or s[2] == dirs * H and s[:2].count(-1) <= 1
                if ok_last and all(v in (0, -1) or v > 0 for v in s[:2]):
                    return labels[:2] + ["dirH"]
        raise ValueError(f"{what} passes through node {_label(nd, i)}, which does not only "
                         "reorder axes or merge the directions into the features")

    def sequence_lens(self, name, nd, i, inputs):
        """The graph input that feeds ``sequence_lens`` (through Cast/Identity), as a set."""
        if name == "":
            return set()
        while name not in inputs:
            if name not in self.producer or self.producer[name][1].op_type not in ("Cast", "Identity"):
                raise ValueError(f"sequence_lens of node {_label(nd, i)} ({name!r}) is not a graph input")
            name = self.producer[name][1].input[0]
        return {name}

    def initial_h(self, name, nd, i, k, layout, dirs, L, inputs):
        """Check ``initial_h`` is zeros or this layer's slice of a graph input; return that input, as a set."""
        import numpy as np

        if name == "":
            return set()
        what = f"initial_h of node {_label(nd, i)}"
        start, chain = name, []
        while name not in inputs:
            arr = self.array(name, what)
            if arr is not None:
                if np.any(arr != 0):
                    raise ValueError(f"{what} is a constant that is not zero; rnn_xp layers start "
                                     "from zeros or from h0")
                return set()
            if name not in self.producer:
                raise ValueError(f"{what} ({start!r}) is neither zeros nor a graph input")
            j, prod = self.producer[name]
            if prod.op_type == "ConstantOfShape":
                value = self.array_attr(prod)
                if value is not None and np.any(value != 0):
                    raise ValueError(f"{what} is ConstantOfShape of a value that is not zero")
                return set()
            if prod.op_type not in ("Identity", "Transpose", "Slice", "Cast", "Expand"):
                raise ValueError(f"{what} passes through node {_label(prod, j)}")
            chain.append((j, prod))
            name = prod.input[0]
        labels = ["LD", "B", "H"]
        for j, prod in reversed(chain):
            if prod.op_type == "Slice" and labels[0] == "LD":
                s = [self.array(n, what) if n else None for n in list(prod.input[1:4]) + [""] * 3][:3]
                if any(v is None for v in s) or [int(v) for v in s[2]] != [0]:
                    raise ValueError(f"{what}: node {_label(prod, j)} must slice axis 0 with constants")
                lo, hi = int(s[0][0]), int(s[1][0])
                if (lo, min(hi, L * dirs)) != (k * dirs, (k + 1) * dirs):
                    raise ValueError(f"{what} takes rows {lo}:{hi} of {name!r}; layer {k} needs rows "
                                     f"{k * dirs}:{(k + 1) * dirs}")
                labels = ["dir"] + labels[1:]
            elif prod.op_type == "Transpose":
                perm = list(self._attr(prod, "perm") or [2, 1, 0])
                labels = [labels[p] for p in perm]
            elif prod.op_type not in ("Identity", "Cast"):
                raise ValueError(f"{what} passes through node {_label(prod, j)}")
        if labels[0] == "LD" and L == 1:
            labels[0] = "dir"  # the whole h0 of a one-layer model
        need = ["B", "dir", "H"] if layout else ["dir", "B", "H"]
        if labels != need:
            raise ValueError(f"{what} is not layer {k}'s rows of the graph input {name!r} "
                             f"(axes {labels}, need {need})")
        return {name}

    @staticmethod
    def _attr(nd, key):
        from onnx import helper

        for attr in nd.attribute:
            if attr.name == key:
                return helper.get_attribute_value(attr)
        return None

    def array_attr(self, nd):
        from onnx import numpy_helper

        value = self._attr(nd, "value")
        return None if value is None else numpy_helper.to_array(value)


def _read_external(tensor, base_dir, what):
    """A copy of ``tensor`` with its external data read, from inside ``base_dir`` only."""
    import os

    from onnx import TensorProto

    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if base_dir is None:
        raise ValueError(f"{what} is stored in the external file {location!r}: pass the model's "
                         "path, so that it is read from the model's folder")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.isabs(location) or os.path.commonpath([root, path]) != root or not location:
        raise ValueError(f"{what} points to the external file {location!r}, outside the model's "
                         f"folder {root!r}; rnn_xp reads external data only from inside it")
    if not os.path.isfile(path):
        raise ValueError(f"{what}: the external file {location!r} is missing from {root!r}")
    offset, length = int(info.get("offset", 0)), info.get("length")
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(-1 if length is None else int(length))
    out = TensorProto()
    out.CopyFrom(tensor)
    del out.external_data[:]
    out.data_location = TensorProto.DEFAULT
    out.raw_data = data
    return out
