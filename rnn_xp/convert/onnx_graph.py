"""The graph of an ONNX model file, checked and walked: its nodes, data paths, states and outputs.

``GraphReader`` is what :func:`~rnn_xp.convert.from_onnx_model` (``onnx_read``)
reads a graph with: every node checked against its operator's schema, the
graph in the order it runs, the constants decoded once each, and the walks
that prove each node reads what the layer would feed it (``X``, the initial
states, ``sequence_lens``) and each graph output is what the layer returns.
"""

from __future__ import annotations

import numpy as np

from .._activations import check_clip
from .._checks import shape_str
from .onnx import (
    DIRECTIONS,
    OPERATORS,
    PEEPHOLE_ORDER,
    TORCH_FROM_ONNX,
    read_activations,
    read_gate_activations,
)
from .onnx_data import constant_tensor, declared, label, node_attributes, tensor_array

# Nodes that only move, cut or copy data: what may sit between RNN nodes.
GLUE = frozenset({"Cast", "Concat", "Constant", "ConstantOfShape", "Expand", "Gather", "Identity",
                  "Reshape", "Shape", "Slice", "Squeeze", "Transpose", "Unsqueeze"})
# What may sit on a data path (X, Y, Y_h): nodes that only reorder axes or merge directions.
_PATH = ("Identity", "Transpose", "Squeeze", "Reshape")


def y_axes(cfg):
    """The axes of a node's ``Y``: ``[T, dirs, B, H]``, or ``[B, T, dirs, H]`` with ``layout=1``."""
    return ["B", "T", "dir", "H"] if cfg["layout"] else ["T", "dir", "B", "H"]


def y_h_axes(cfg):
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

    Made from a graph: every node must be an ``RNN``, ``LSTM`` or ``GRU`` or a glue node of the
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
        self.reordered = {}  # tensor name -> the role its rows were put in torch's order for
        made = set(self.consts) | {v.name for v in graph.input}
        for i, nd in enumerate(graph.node):
            if nd.domain not in ("", "ai.onnx") or (nd.op_type not in OPERATORS
                                                     and nd.op_type not in GLUE):
                raise ValueError(
                    f"node {label(nd, i)} is {nd.domain + '.' if nd.domain else ''}{nd.op_type}: "
                    "from_onnx_model reads graphs of RNN nodes (or of LSTM or GRU nodes) joined "
                    f"only by nodes that reshape data ({', '.join(sorted(GLUE))})"
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

    def gate_array(self, name, what, key, op):
        """The weight ``name`` (input ``key`` of an ``op`` node) decoded once, its rows in torch's order.

        An LSTM's or GRU's gate blocks (and an LSTM's peepholes) are put in
        torch's order once per tensor, replacing the decoded copy (one
        tensor's worth of memory in passing), so that nodes sharing a tensor
        share the reordered one and every layer's weights are views of it.
        """
        array = self.array(name, what)
        if op == "RNN":
            return array
        G = OPERATORS[op]
        order = PEEPHOLE_ORDER if key == "P" else TORCH_FROM_ONNX[op]
        if key == "B":  # [Wb, Rb]: each half's blocks
            order = tuple(order) + tuple(G + o for o in order)
        role = "P" if key == "P" else "B" if key == "B" else "W"
        done = self.reordered.get(name)
        if done is None:
            n = array.shape[1] // len(order)
            array = np.concatenate([array[:, o * n:(o + 1) * n, ...] for o in order], axis=1)
            self.decoded[name, "float"] = array
            self.reordered[name] = role
        elif done != role:  # the dims tell the roles apart; a tensor cannot hold two
            raise ValueError(f"{what} ({name!r}) is also read as another kind of weight")
        return array

    def config(self, nd, i):
        a = self.attrs[i]
        op = nd.op_type
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
            if op == "RNN":
                names, alphas, betas = read_activations(
                    activations, a.get("activation_alpha"), a.get("activation_beta"), dirs)
            else:
                acts = read_gate_activations(op, activations, a.get("activation_alpha"),
                                             a.get("activation_beta"), dirs)
                names, alphas, betas = (acts[key] for key in
                                        ("activations", "activation_alpha", "activation_beta"))
            clip = check_clip(a.get("clip"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        layout = a.get("layout", 0)
        if layout not in (0, 1):
            raise ValueError(f"{where} has layout={layout}; it must be 0 or 1")
        flags = {}
        for key, owner in (("input_forget", "LSTM"), ("linear_before_reset", "GRU")):
            value = a.get(key, 0)  # the schema allows the attribute to its operator only
            if value not in (0, 1):
                raise ValueError(f"{where} has {key}={value}; it must be 0 or 1")
            flags[key] = bool(value) if op == owner else None
        return {"hidden_size": a["hidden_size"], "direction": direction, "activations": names,
                "alpha": alphas, "beta": betas, "clip": clip, "layout": layout, **flags}

    def weight_tensors(self, nd, i, cfg, k):
        """``{"W", "R", "B"[, "P"]: tensor name or None}`` of node ``i``, layer ``k``: dims and types checked.

        Nothing is decoded. ``W`` of layer ``k > 0`` must read the previous
        layer's ``dirs * H`` features. ``P`` is an LSTM's only.
        """
        op = nd.op_type
        keys = {1: "W", 2: "R", 3: "B"}  # inputs X, W, R, B, sequence_lens, initial_h[, initial_c, P]
        if op == "LSTM":
            keys[7] = "P"
        out, dims = {}, {}
        for j, key in keys.items():
            name = nd.input[j] if len(nd.input) > j else ""
            if name == "":
                out[key] = None  # only B and P: W and R are required inputs (node_attributes)
                continue
            tensor = self.consts.get(name)
            if tensor is None:
                raise ValueError(
                    f"{key} of node {label(nd, i)} ({name!r}) is not an initializer or a Constant: "
                    "from_onnx_model reads weights that are stored in the model"
                )
            dims[key], _, _ = declared(tensor, f"{key} of node {label(nd, i)}", kinds="float")
            out[key] = name
        dirs, H, G = DIRECTIONS[cfg["direction"]], cfg["hidden_size"], OPERATORS[op]
        W, R, B, P = (tuple(dims[key]) if key in dims else None for key in ("W", "R", "B", "P"))
        if len(W) != 3 or W[:2] != (dirs, G * H) or R != (dirs, G * H, H) or (
                B is not None and B != (dirs, 2 * G * H)) or (P is not None and P != (dirs, 3 * H)):
            rows = "" if G == 1 else f"{G}*"
            raise ValueError(
                f"node {label(nd, i)} has W {shape_str(W)}, R {shape_str(R)}"
                + ("" if B is None else f", B {shape_str(B)}")
                + ("" if P is None else f", P {shape_str(P)}")
                + f"; its attributes need W [{dirs}, {rows}{H}, D], R [{dirs}, {rows}{H}, {H}], "
                + f"B [{dirs}, {2 * G * H}]" + (f", P [{dirs}, {3 * H}]" if op == "LSTM" else "")
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

    def initial_state(self, name, key, nd, i, k, layout, dirs, L, inputs):
        """Check ``initial_h`` (``key``; an LSTM's ``initial_c`` too) is zeros or layer ``k``'s rows of a graph input.

        Returns ``None`` (zeros) or ``(graph input, how it is read)``: the
        input holds every layer's state ``[L * dirs, B, H]`` (``"[L*dirs, B,
        H]"``, the layer's own ``h0``) or ``[B, L * dirs, H]`` (``"[B, L*dirs,
        H]"``: what ``layout=1`` nodes read as it is; the layer's ``h0`` is
        its transpose). Each node takes its rows through ``Slice`` (on the
        layers' axis), ``Transpose``, ``Identity`` and ``Cast``.
        """
        if name == "":
            return None
        state = "h0" if key == "initial_h" else "c0"
        what = f"{key} of node {label(nd, i)}"
        start, chain = name, []
        while name not in inputs:
            arr = self.array(name, what, kinds="number")
            if arr is not None:
                if np.any(arr != 0):
                    raise ValueError(f"{what} is a constant that is not zero; rnn_xp layers start "
                                     f"from zeros or from {state}")
                return None
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
                return None
            if prod.op_type not in ("Identity", "Transpose", "Slice", "Cast", "Expand"):
                raise ValueError(f"{what} passes through node {label(prod, j)}")
            chain.append((j, prod))
            name = prod.input[0]
        need = ["B", "dir", "H"] if layout else ["dir", "B", "H"]
        # The graph input's axes are read both ways; the reading that explains the most of the
        # chain tells what is wrong when neither fits.
        tried = []
        for axes, how in ((["LD", "B", "H"], "[L*dirs, B, H]"), (["B", "LD", "H"], "[B, L*dirs, H]")):
            labels, reached, problem = self._state_axes(chain, axes, what, name, k, dirs, L)
            if problem is None:
                if labels == need:
                    return name, how
                reached += 1
                problem = (f"{what} is not layer {k}'s rows of the graph input {name!r} "
                           f"(axes {labels}, need {need})")
            tried.append((reached, problem))
        raise ValueError(max(tried, key=lambda t: t[0])[1])  # the first of equals: [L*dirs, B, H]

    def _state_axes(self, chain, labels, what, name, k, dirs, L):
        """``(axes at the node, nodes applied, problem or None)`` of a state read through ``chain``."""
        labels = list(labels)
        for applied, (j, prod) in enumerate(reversed(chain)):
            if prod.op_type == "Slice" and "LD" in labels:
                s = self._slice(prod, j, what)
                if s is None:
                    return labels, applied, (f"{what}: node {label(prod, j)} must slice one axis "
                                             "with constants")
                lo, hi, axis, step = s
                if not -3 <= axis < 3 or labels[axis % 3] != "LD" or step != 1:
                    return labels, applied, (f"{what}: node {label(prod, j)} slices axis {axis} "
                                             f"(step {step}), not the layers' axis of the graph input "
                                             f"{name!r}, read as [L*dirs, B, H] or [B, L*dirs, H]")
                if (lo, min(hi, L * dirs)) != (k * dirs, (k + 1) * dirs):
                    return labels, applied, (f"{what} takes rows {lo}:{hi} of {name!r}; layer {k} "
                                             f"needs rows {k * dirs}:{(k + 1) * dirs}")
                labels = ["dir" if lab == "LD" else lab for lab in labels]
            elif prod.op_type == "Transpose":
                labels = [labels[p] for p in self._perm(prod, j, labels, what)]
            elif prod.op_type not in ("Identity", "Cast"):
                return labels, applied, f"{what} passes through node {label(prod, j)}"
        if L == 1:
            labels = ["dir" if lab == "LD" else lab for lab in labels]  # the whole h0 of one layer
        return labels, len(chain), None

    def _slice(self, prod, j, what):
        """``(start, end, axis, step)`` of a Slice of one axis by constants, else ``None``.

        Before opset 10 they are the node's attributes, then its inputs.
        """
        a = self.attrs[j]
        if self.opset < 10:
            parts = [a.get("starts"), a.get("ends"), a.get("axes", [0]), [1]]
        else:
            names = list(prod.input[1:5]) + [""] * 4
            parts = [self._ints(n, what) if n else None for n in names[:4]]
            parts[3] = [1] if not names[3] else parts[3]
        if any(v is None or len(v) != 1 for v in parts):
            return None
        return tuple(int(v[0]) for v in parts)

    def check_outputs(self, rnns, configs, dirs, H, op="RNN"):
        """Each graph output holds the layer's ``output``, its ``h_n`` or an LSTM's ``c_n``: what the layer computes.

        ``output`` is the last node's ``Y`` (directions merged into the
        features or not); ``h_n`` is one node's ``Y_h`` for a one-layer
        model, else the ``Y_h`` of every node in order, concatenated on their
        directions' axis; ``c_n`` the same of the ``Y_c``. Each may reach the
        graph output through nodes that only reorder axes, so the values are
        the layer's, possibly arranged another way (ONNX's ``Y [T, dirs, B,
        H]`` for instance).
        """
        L = len(rnns)
        ys = {nd.output[0]: k for k, (i, nd) in enumerate(rnns) if len(nd.output) > 0 and nd.output[0]}
        finals = {}  # a Y_h or Y_c -> (layer, "Y_h" or "Y_c")
        for j, (name, _) in ((1, ("Y_h", "h_n")), (2, ("Y_c", "c_n"))):
            for k, (i, nd) in enumerate(rnns):
                if len(nd.output) > j and nd.output[j]:
                    finals[nd.output[j]] = (k, name)
        concat = lambda name: name in self.producer and self.producer[name][1].op_type == "Concat"  # noqa: E731
        starts = lambda source: (y_axes(configs[ys[source]]) if source in ys  # noqa: E731
                                 else y_h_axes(configs[finals[source][0]]) if source in finals
                                 else ["LD", "B", "H"])
        c_n = (" or its c_n (every LSTM node's Y_c, the same way)" if op == "LSTM" else "")
        hint = (f"; a graph output must be the layer's output (the last {op} node's Y) or its h_n "
                f"(every {op} node's Y_h, concatenated in order on the directions' axis){c_n}, with "
                "their axes reordered at most")
        for out in self.graph.output:
            what = f"graph output {out.name!r}"
            try:
                source, _ = self.trace(out.name, what, lambda n: n in ys or n in finals or concat(n),
                                       starts, dirs=dirs, H=H)
            except ValueError as exc:
                raise ValueError(f"{exc}{hint}") from None
            if source in ys and ys[source] != L - 1:
                raise ValueError(f"{what} is the Y of node {label(*reversed(self.producer[source]))}, "
                                 f"layer {ys[source]} of {L}{hint}")
            if source in finals and L != 1:
                raise ValueError(f"{what} is the {finals[source][1]} of node "
                                 f"{label(*reversed(self.producer[source]))} alone, one of {L} "
                                 f"layers{hint}")
            if source not in ys and source not in finals:
                self._check_finals(source, what, hint, L, finals, configs, dirs, H)

    def _check_finals(self, name, what, hint, L, finals, configs, dirs, H):
        """The Concat that makes ``h_n`` (``c_n``): every node's ``Y_h`` (``Y_c``), in order, on their directions."""
        j, nd = self.producer[name]
        where = f"node {label(nd, j)} ({what})"
        parts = list(nd.input)
        axes, kind = None, None
        for k, part in enumerate(parts):
            source, labels = self.trace(part, f"input {k} of {where}", lambda n: n in finals,
                                        lambda s: y_h_axes(configs[finals[s][0]]), dirs=dirs, H=H)
            layer, got = finals[source]
            kind = kind or got
            if len(parts) != L:
                state = "h_n" if kind == "Y_h" else "c_n"
                raise ValueError(f"{where} concatenates {len(parts)} tensors; {state} holds the {L} "
                                 f"layers' {kind}{hint}")
            if layer != k or got != kind or (axes is not None and labels != axes):
                state = "h_n" if kind == "Y_h" else "c_n"
                raise ValueError(f"input {k} of {where} is the {got} of layer {layer} with axes "
                                 f"{labels}; {state} needs layer {k}'s {kind}, as the other inputs "
                                 f"have it{hint}")
            axes = labels
        axis = self.attrs[j].get("axis")
        if axis is None or not -3 <= axis < 3 or axes[axis % 3] != "dir":
            raise ValueError(f"{where} concatenates on axis {axis}, not on the {kind}'s directions' "
                             f"axis {axes.index('dir')}{hint}")
