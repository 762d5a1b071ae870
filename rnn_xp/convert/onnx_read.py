"""ONNX model files read into a layer: ``RNN`` nodes, the glue between them, their weights.

A model file is untrusted input (model hubs hand them out). The graph must be
in the order it runs (which rules out cycles), every node is checked against
its operator's schema (``onnx_data``), the layer must compute what the
graph's outputs hold, and the weights are decoded once each, after every
check and with their sizes known, into a layer that draws no weights of its
own.
"""

from __future__ import annotations

import math

from .._activations import check_clip
from .._checks import shape_str
from ._common import build_layer, param_name
from .onnx import DIRECTIONS, read_activations
from .onnx_data import (
    FLOAT_TYPES,
    check_fits_in_memory,
    constant_tensor,
    declared,
    label,
    load_model,
    model_opset,
    node_attributes,
    tensor_array,
)

# Nodes that only move, cut or copy data: what may sit between RNN nodes.
_GLUE = frozenset({"Cast", "Concat", "Constant", "ConstantOfShape", "Expand", "Gather", "Identity",
                   "Reshape", "Shape", "Slice", "Squeeze", "Transpose", "Unsqueeze"})
# What may sit on a data path (X, Y, Y_h): nodes that only reorder axes or merge directions.
_PATH = ("Identity", "Transpose", "Squeeze", "Reshape")


def from_onnx_model(model_or_path, *, xp=None, device=None, dtype=None):
    """An :class:`~rnn_xp.RNN` from an ONNX model of ``RNN`` nodes with initializer weights.

    Reads the models :func:`to_onnx_model` and ``torch.onnx.export(...,
    dynamo=False)`` write for a ``torch.nn.RNN``: one ``RNN`` node per layer
    (stacked layers chained through ``Transpose``/``Reshape``/``Squeeze``),
    weights as initializers or ``Constant`` nodes, ``initial_h`` absent,
    zeros or sliced from a graph input, ``sequence_lens`` absent or a graph
    input, and graph outputs that hold the layer's ``output`` (the last
    node's ``Y``) and ``h_n`` (every node's ``Y_h``, concatenated), either or
    both, their axes reordered at most. The ``ai.onnx`` opset must be from 7 (the
    ``RNN`` operator's versions are 7, 14 and 22) to the newest the installed
    ``onnx`` knows.

    Parameters
    ----------
    model_or_path : onnx.ModelProto, bytes, str, path or binary file object
        The model, at most 2 GiB (protobuf's limit). External data is read
        only from a path's folder, only from files inside it, and never more
        bytes than a tensor's dims and type declare.
    xp, device, dtype : optional
        Where the layer lives; ``dtype`` defaults to the weights' (bfloat16
        weights give a bfloat16 layer, which needs ``xp="torch"`` or
        ``"jax"``, or ``dtype="float32"``, which holds them exactly).

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
        a graph not in the order it runs (or with a cycle), a node, input,
        output or attribute its operator does not have at the model's opset,
        nodes that disagree on their configuration, weights that are not
        float constants or whose data disagrees with their dims, an
        ``initial_h`` that is neither zeros nor a graph input, a layer not
        fed by the previous one's ``Y``, an RNN node or a graph output that
        is not part of the layer's ``output`` and ``h_n``, or external data
        outside the model's folder or beyond its declared size. The message
        names the node, tensor or attribute and what is wrong with it.
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
    model, base_dir = load_model(model_or_path)
    graph = model.graph
    reader = GraphReader(graph, model_opset(model), base_dir)
    rnns = [(i, nd) for i, nd in enumerate(graph.node) if nd.op_type == "RNN"]
    if not rnns:
        raise ValueError(
            "the graph has no RNN node; its nodes are "
            f"{[nd.op_type for nd in graph.node]}"
        )
    reader.check_live(rnns)
    configs = [reader.config(nd, i) for i, nd in rnns]
    first = configs[0]
    for (i, nd), cfg in zip(rnns, configs):
        for key in ("hidden_size", "direction", "activations", "alpha", "beta", "clip"):
            if cfg[key] != first[key]:
                raise ValueError(
                    f"node {label(nd, i)} has {key}={cfg[key]!r} but the first RNN node has "
                    f"{first[key]!r}: an rnn_xp layer has one configuration for every layer"
                )
    dirs, H = DIRECTIONS[first["direction"]], first["hidden_size"]
    tensors = [reader.weight_tensors(nd, i, cfg, k) for k, ((i, nd), cfg)
               in enumerate(zip(rnns, configs))]  # fmt: skip
    for (i, nd), w in zip(rnns, tensors):
        if (w["B"] is None) != (tensors[0]["B"] is None):
            raise ValueError(f"node {label(nd, i)} has a bias B and the first RNN node has not, "
                             "or the other way round")
    # The layer's size from the dims alone, before anything is decoded or copied: an
    # initializer shared by many nodes is one tensor in the file but one copy per layer.
    held = [reader.consts[name] for w in tensors for name in w.values() if name is not None]
    wide = any(FLOAT_TYPES[t.data_type] == "float64" for t in held)
    check_fits_in_memory(sum(math.prod(t.dims) for t in held), 8 if wide else 4,
                         f"the weights of the model's {len(rnns)} RNN nodes")

    # The data path: the graph input into node 0, each Y into the next X.
    inputs = reader.inputs
    used, seq_sources = set(), []
    batch_first = None
    for k, (i, nd) in enumerate(rnns):
        want = ["B", "T", "D"] if configs[k]["layout"] else ["T", "B", "D"]
        if k == 0:
            source, labels = reader.trace(nd.input[0], f"X of node {label(nd, i)}",
                                          lambda name: name in inputs, ["x0", "x1", "x2"])
            where = dict(zip(labels, want)) if sorted(labels) == ["x0", "x1", "x2"] else {}
            order = [where.get(f"x{j}") for j in range(3)]
            if order not in (["T", "B", "D"], ["B", "T", "D"]):
                raise ValueError(f"X of node {label(nd, i)} is not the graph input {source!r} "
                                 "or its transpose (T, B) <-> (B, T)")
            batch_first = order[0] == "B"
            used.add(source)
        else:
            prev_i, prev = rnns[k - 1]
            _, labels = reader.trace(nd.input[0], f"X of node {label(nd, i)}",
                                     lambda name, p=prev: name == p.output[0],
                                     _y_axes(configs[k - 1]), dirs=dirs, H=H)
            if labels != [w if w != "D" else "dirH" for w in want]:
                raise ValueError(
                    f"X of node {label(nd, i)} is not the Y of node {label(prev, prev_i)} with its "
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
    reader.check_outputs(rnns, configs, dirs, H)

    # Every check passed: decode each weight tensor once, and build the layer from them.
    state, names = {}, {}
    for k, ((i, nd), w) in enumerate(zip(rnns, tensors)):
        arrays = {key: None if name is None else reader.array(name, f"{key} of node {label(nd, i)}")
                  for key, name in w.items()}
        for d in range(dirs):
            parts = [("weight_ih", arrays["W"][d], "W"), ("weight_hh", arrays["R"][d], "R")]
            if arrays["B"] is not None:
                parts += [("bias_ih", arrays["B"][d, :H], "B"), ("bias_hh", arrays["B"][d, H:], "B")]
            for kind, array, key in parts:
                state[param_name(kind, k, d)] = array
                names[param_name(kind, k, d)] = f"{key} of node {label(nd, i)}"
    if dtype is None:  # the weights' own, bfloat16 included (decoded as float32)
        dtype = reader.dtypes[tensors[0]["W"]]
    return build_layer(state, names, nonlinearity=first["activations"], batch_first=batch_first,
                       activation_alpha=first["alpha"], activation_beta=first["beta"],
                       clip=first["clip"], reverse=first["direction"] == "reverse", xp=xp,
                       device=device, dtype=dtype)


def _y_axes(cfg):
    """The axes of a node's ``Y``: ``[T, dirs, B, H]``, or ``[B, T, dirs, H]`` with ``layout=1``."""
    return ["B", "T", "dir", "H"] if cfg["layout"] else ["T", "dir", "B", "H"]


def _y_h_axes(cfg):
    """The axes of a node's ``Y_h``: ``[dirs, B, H]``, or ``[B, dirs, H]`` with ``layout=1``."""
    return ["B", "dir", "H"] if cfg["layout"] else ["dir", "B", "H"]


def _text(value, what):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not UTF-8 text: {value!r}") from None
    return value


class GraphReader:
    """The nodes of a graph, checked, and the walks along its data paths.

    Made from a graph: every node must be an ``RNN`` or a glue node of the
    ``ai.onnx`` domain, fit its operator's schema at ``opset``, and read
    only names made before it (graph inputs, initializers, earlier nodes'
    outputs), each made once: the order the graph runs in, which ONNX
    requires and which leaves no room for a cycle.
    """

    def __init__(self, graph, opset, base_dir):
        self.graph, self.opset, self.base_dir = graph, opset, base_dir
        self.consts = {t.name: t for t in graph.initializer}
        self.inputs = [v.name for v in graph.input if v.name not in self.consts]
        self.producer, self.attrs, self.decoded, self.dtypes = {}, {}, {}, {}
        made = set(self.consts) | {v.name for v in graph.input}
        for i, nd in enumerate(graph.node):
            if nd.domain not in ("", "ai.onnx") or (nd.op_type != "RNN" and nd.op_type not in _GLUE):
                raise ValueError(
                    f"node {label(nd, i)} is {nd.domain + '.' if nd.domain else ''}{nd.op_type}: "
                    "from_onnx_model reads graphs of RNN nodes joined only by nodes that reshape "
                    f"data ({', '.join(sorted(_GLUE))})"
                )
            self.attrs[i] = node_attributes(nd, i, opset)
            for name in nd.input:
                if name and name not in made:
                    raise ValueError(
                        f"node {label(nd, i)} reads {name!r} before any node makes it: the graph "
                        "is not in the order it runs (ONNX requires it), or it holds a cycle"
                    )
            for out in nd.output:
                if not out:
                    continue
                if out in made:
                    raise ValueError(f"node {label(nd, i)} makes {out!r}, which the graph already has")
                made.add(out)
                self.producer[out] = (i, nd)
            if nd.op_type == "Constant":
                self.consts[nd.output[0]] = constant_tensor(nd, i, self.attrs[i])
        self.made = made

    def check_live(self, rnns):
        """Every RNN node reaches a graph output: else the layer would have a layer too many."""
        for out in self.graph.output:
            if out.name not in self.made:
                raise ValueError(f"the graph output {out.name!r} is made by no node")
        needed = {out.name for out in self.graph.output}
        live = set()
        for i in range(len(self.graph.node) - 1, -1, -1):
            nd = self.graph.node[i]
            if any(out in needed for out in nd.output if out):
                live.add(i)
                needed.update(name for name in nd.input if name)
        for i, nd in rnns:
            if i not in live:
                raise ValueError(
                    f"node {label(nd, i)} reaches no graph output "
                    f"({[out.name for out in self.graph.output]}): it would be a layer whose "
                    "results the graph never returns"
                )

    def array(self, name, what, kinds="float"):
        """The constant ``name`` as a NumPy array (decoded once), else ``None`` (not a constant)."""
        tensor = self.consts.get(name)
        if tensor is None:
            return None
        if (name, kinds) not in self.decoded:
            array, dtype = tensor_array(tensor, self.base_dir, what, kinds=kinds)
            self.decoded[name, kinds], self.dtypes[name] = array, dtype
        return self.decoded[name, kinds]

    def config(self, nd, i):
        a = self.attrs[i]
        where = f"node {label(nd, i)}"
        direction = _text(a.get("direction", b"forward"), f"direction of {where}")
        if direction not in DIRECTIONS:
            raise ValueError(f"{where} has direction={direction!r}")
        dirs = DIRECTIONS[direction]
        if "hidden_size" not in a:
            raise ValueError(f"{where} lacks the attribute hidden_size")
        if a["hidden_size"] < 1:
            raise ValueError(f"{where} has hidden_size={a['hidden_size']}; it must be positive")
        activations = None
        if "activations" in a:
            activations = [_text(v, f"activations of {where}") for v in a["activations"]]
        try:
            names, alphas, betas = read_activations(
                activations, a.get("activation_alpha"), a.get("activation_beta"), dirs)
            clip = check_clip(a.get("clip"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        layout = a.get("layout", 0)
        if layout not in (0, 1):
            raise ValueError(f"{where} has layout={layout}; it must be 0 or 1")
        return {"hidden_size": a["hidden_size"], "direction": direction, "activations": names,
                "alpha": alphas, "beta": betas, "clip": clip, "layout": layout}

    def weight_tensors(self, nd, i, cfg, k):
        """``{"W", "R", "B": tensor name or None}`` of node ``i``, layer ``k``: dims and types checked.

        Nothing is decoded. ``W`` of layer ``k > 0`` must read the previous
        layer's ``dirs * H`` features.
        """
        out, dims = {}, {}
        for j, key in enumerate(("W", "R", "B"), start=1):  # inputs X, W, R, B, sequence_lens, initial_h
            name = nd.input[j] if len(nd.input) > j else ""
            if name == "":
                out[key] = None  # only B: W and R are required inputs (node_attributes)
                continue
            tensor = self.consts.get(name)
            if tensor is None:
                raise ValueError(
                    f"{key} of node {label(nd, i)} ({name!r}) is not an initializer or a Constant: "
                    "from_onnx_model reads weights that are stored in the model"
                )
            dims[key], _, _ = declared(tensor, f"{key} of node {label(nd, i)}", kinds="float")
            out[key] = name
        dirs, H = DIRECTIONS[cfg["direction"]], cfg["hidden_size"]
        W, R, B = (tuple(dims[key]) if key in dims else None for key in ("W", "R", "B"))
        if len(W) != 3 or W[:2] != (dirs, H) or R != (dirs, H, H) or (
                B is not None and B != (dirs, 2 * H)):
            raise ValueError(
                f"node {label(nd, i)} has W {shape_str(W)}, R {shape_str(R)}"
                + ("" if B is None else f", B {shape_str(B)}")
                + f"; its attributes need W [{dirs}, {H}, D], R [{dirs}, {H}, {H}], B [{dirs}, {2 * H}]"
            )
        if k > 0 and W[2] != dirs * H:
            raise ValueError(f"node {label(nd, i)} has W {shape_str(W)}: as layer {k} it reads the "
                             f"previous layer's dirs * H = {dirs * H} features")
        return out

    def trace(self, name, what, is_source, labels, *, dirs=None, H=None):
        """Walk back from ``name`` to a source; return ``(source, axes at name)``.

        ``labels`` names the source's axes (or is a function of the source
        that does); the nodes on the way (Identity, Transpose, Squeeze of a
        one-direction axis, Reshape that merges the directions into the
        features) map them forward. The graph is in the order it runs, so
        every step goes to an earlier node and the walk ends.
        """
        chain = []
        while not is_source(name):
            if name not in self.producer:
                raise ValueError(f"{what} comes from {name!r}, which is not where it should come from")
            i, nd = self.producer[name]
            if nd.op_type not in _PATH:
                raise ValueError(f"{what} passes through node {label(nd, i)}, which is not an "
                                 "Identity, Transpose, Squeeze or Reshape")
            chain.append((i, nd))
            name = nd.input[0]
        source = name
        labels = list(labels(source) if callable(labels) else labels)
        for i, nd in reversed(chain):
            labels = self._apply(nd, i, labels, what, dirs, H)
        return source, labels

    def _apply(self, nd, i, labels, what, dirs, H):
        a = self.attrs[i]
        if nd.op_type == "Identity":
            return labels
        if nd.op_type == "Transpose":
            return [labels[p] for p in self._perm(nd, i, labels, what)]
        if nd.op_type == "Squeeze":
            axes = a.get("axes")
            if axes is None and len(nd.input) > 1 and nd.input[1]:
                axes = self._ints(nd.input[1], f"axes of node {label(nd, i)}")
            axes = [] if axes is None else list(axes)
            if any(not -len(labels) <= v < len(labels) for v in axes):
                raise ValueError(f"{what}: node {label(nd, i)} squeezes axes {axes} of a "
                                 f"{len(labels)}-axis tensor")
            axes = [v % len(labels) for v in axes]
            if dirs == 1 and [labels[j] for j in axes] == ["dir"]:
                return [("dirH" if lab == "H" else lab) for j, lab in enumerate(labels) if j not in axes]
        if nd.op_type == "Reshape" and len(labels) == 4 and labels[2:] == ["dir", "H"]:
            shape = self._ints(nd.input[1], f"shape of node {label(nd, i)}")
            if shape is not None and shape.shape == (3,):
                s = [int(v) for v in shape]
                ok_last = s[2] == -1 and -1 not in s[:2] or s[2] == dirs * H and s[:2].count(-1) <= 1
                if ok_last and all(v in (0, -1) or v > 0 for v in s[:2]):
                    return labels[:2] + ["dirH"]
        raise ValueError(f"{what} passes through node {label(nd, i)}, which does not only "
                         "reorder axes or merge the directions into the features")

    def _perm(self, nd, i, labels, what):
        """A Transpose node's ``perm`` (default: the axes reversed), a permutation of ``labels``'s axes."""
        perm = list(self.attrs[i].get("perm", range(len(labels) - 1, -1, -1)))
        if sorted(perm) != list(range(len(labels))):
            raise ValueError(f"{what}: node {label(nd, i)} has perm={perm}, which is not an order "
                             f"of the {len(labels)} axes it transposes")
        return perm

    def _ints(self, name, what):
        """The integer constant ``name`` (None where it is not a constant)."""
        return self.array(name, what, kinds="int")

    def sequence_lens(self, name, nd, i, inputs):
        """The graph input that feeds ``sequence_lens`` (through Cast/Identity), as a set."""
        if name == "":
            return set()
        while name not in inputs:
            if name not in self.producer or self.producer[name][1].op_type not in ("Cast", "Identity"):
                raise ValueError(f"sequence_lens of node {label(nd, i)} ({name!r}) is not a graph input")
            j, prod = self.producer[name]
            if prod.op_type == "Cast" and self.attrs[j].get("to") not in (6, 7):  # int32, int64
                raise ValueError(f"sequence_lens of node {label(nd, i)} passes through node "
                                 f"{label(prod, j)}, which casts to a type that is not an integer")
            name = prod.input[0]
        return {name}

    def initial_h(self, name, nd, i, k, layout, dirs, L, inputs):
        """Check ``initial_h`` is zeros or this layer's slice of a graph input; return that input, as a set."""
        import numpy as np

        if name == "":
            return set()
        what = f"initial_h of node {label(nd, i)}"
        start, chain = name, []
        while name not in inputs:
            arr = self.array(name, what, kinds="number")
            if arr is not None:
                if np.any(arr != 0):
                    raise ValueError(f"{what} is a constant that is not zero; rnn_xp layers start "
                                     "from zeros or from h0")
                return set()
            if name not in self.producer:
                raise ValueError(f"{what} ({start!r}) is neither zeros nor a graph input")
            j, prod = self.producer[name]
            if prod.op_type == "ConstantOfShape":
                value = self.attrs[j].get("value")
                if value is not None:
                    value, _ = tensor_array(value, self.base_dir, f"value of node {label(prod, j)}",
                                            kinds="number")
                    if np.any(value != 0):
                        raise ValueError(f"{what} is ConstantOfShape of a value that is not zero")
                return set()
            if prod.op_type not in ("Identity", "Transpose", "Slice", "Cast", "Expand"):
                raise ValueError(f"{what} passes through node {label(prod, j)}")
            chain.append((j, prod))
            name = prod.input[0]
        labels = ["LD", "B", "H"]
        for j, prod in reversed(chain):
            if prod.op_type == "Slice" and labels[0] == "LD":
                s = [self._ints(n, what) if n else None for n in list(prod.input[1:4]) + [""] * 3][:3]
                if any(v is None or v.shape != (1,) for v in s) or int(s[2][0]) != 0:
                    raise ValueError(f"{what}: node {label(prod, j)} must slice axis 0 with constants")
                lo, hi = int(s[0][0]), int(s[1][0])
                if (lo, min(hi, L * dirs)) != (k * dirs, (k + 1) * dirs):
                    raise ValueError(f"{what} takes rows {lo}:{hi} of {name!r}; layer {k} needs rows "
                                     f"{k * dirs}:{(k + 1) * dirs}")
                labels = ["dir"] + labels[1:]
            elif prod.op_type == "Transpose":
                labels = [labels[p] for p in self._perm(prod, j, labels, what)]
            elif prod.op_type not in ("Identity", "Cast"):
                raise ValueError(f"{what} passes through node {label(prod, j)}")
        if labels[0] == "LD" and L == 1:
            labels[0] = "dir"  # the whole h0 of a one-layer model
        need = ["B", "dir", "H"] if layout else ["dir", "B", "H"]
        if labels != need:
            raise ValueError(f"{what} is not layer {k}'s rows of the graph input {name!r} "
                             f"(axes {labels}, need {need})")
        return {name}

    def check_outputs(self, rnns, configs, dirs, H):
        """Each graph output holds the layer's ``output`` or its ``h_n``: what the layer computes.

        ``output`` is the last node's ``Y`` (directions merged into the
        features or not); ``h_n`` is one node's ``Y_h`` for a one-layer
        model, else the ``Y_h`` of every node in order, concatenated on their
        directions' axis. Either may reach the graph output through nodes
        that only reorder axes, so the values are the layer's, possibly
        arranged another way (ONNX's ``Y [T, dirs, B, H]`` for instance).
        """
        L = len(rnns)
        ys = {nd.output[0]: k for k, (i, nd) in enumerate(rnns) if len(nd.output) > 0 and nd.output[0]}
        hs = {nd.output[1]: k for k, (i, nd) in enumerate(rnns) if len(nd.output) > 1 and nd.output[1]}
        concat = lambda name: name in self.producer and self.producer[name][1].op_type == "Concat"  # noqa: E731
        starts = lambda source: (_y_axes(configs[ys[source]]) if source in ys  # noqa: E731
                                 else _y_h_axes(configs[hs[source]]) if source in hs else ["LD", "B", "H"])
        hint = ("; a graph output must be the layer's output (the last RNN node's Y) or its h_n "
                "(every RNN node's Y_h, concatenated in order on the directions' axis), with their "
                "axes reordered at most")
        for out in self.graph.output:
            what = f"graph output {out.name!r}"
            try:
                source, _ = self.trace(out.name, what, lambda n: n in ys or n in hs or concat(n),
                                       starts, dirs=dirs, H=H)
            except ValueError as exc:
                raise ValueError(f"{exc}{hint}") from None
            if source in ys and ys[source] != L - 1:
                raise ValueError(f"{what} is the Y of node {label(*reversed(self.producer[source]))}, "
                                 f"layer {ys[source]} of {L}{hint}")
            if source in hs and L != 1:
                raise ValueError(f"{what} is the Y_h of node {label(*reversed(self.producer[source]))} "
                                 f"alone, one of {L} layers{hint}")
            if source not in ys and source not in hs:
                self._check_h_n(source, what, hint, L, hs, configs, dirs, H)

    def _check_h_n(self, name, what, hint, L, hs, configs, dirs, H):
        """The Concat that makes ``h_n``: every node's ``Y_h``, in order, on the directions' axis."""
        j, nd = self.producer[name]
        where = f"node {label(nd, j)} ({what})"
        parts = list(nd.input)
        if len(parts) != L:
            raise ValueError(f"{where} concatenates {len(parts)} tensors; h_n holds the {L} "
                             f"layers' Y_h{hint}")
        axes = None
        for k, part in enumerate(parts):
            source, labels = self.trace(part, f"input {k} of {where}", lambda n: n in hs,
                                        lambda s: _y_h_axes(configs[hs[s]]), dirs=dirs, H=H)
            if hs[source] != k or (axes is not None and labels != axes):
                raise ValueError(f"input {k} of {where} is the Y_h of layer {hs[source]} with axes "
                                 f"{labels}; h_n needs layer {k}'s, as the other inputs have it{hint}")
            axes = labels
        axis = self.attrs[j].get("axis")
        if axis is None or not -3 <= axis < 3 or axes[axis % 3] != "dir":
            raise ValueError(f"{where} concatenates on axis {axis}, not on the Y_h's directions' "
                             f"axis {axes.index('dir')}{hint}")
