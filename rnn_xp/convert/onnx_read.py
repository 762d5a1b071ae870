"""ONNX model files read into a layer: ``RNN``, ``LSTM`` or ``GRU`` nodes, the glue between them, their weights.

A model file is untrusted input (model hubs hand them out). The graph must be
in the order it runs (which rules out cycles), every node is checked against
its operator's schema (``onnx_data``), the layer must compute what the
graph's outputs hold, and the weights are decoded once each, after every
check and with their sizes known, into a layer that draws no weights of its
own.
"""

from __future__ import annotations

import math

from ..layer import GRU, LSTM
from ._common import build_gated, build_layer, param_name
from .onnx import DIRECTIONS, OPERATORS
from .onnx_data import FLOAT_TYPES, check_fits_in_memory, label, load_model, model_opset
from .onnx_graph import GraphReader, y_axes

# The state inputs and outputs of each operator: (input index, output index, layer's name).
_STATES = {"RNN": (("initial_h", 5, 1, "h_n"),), "GRU": (("initial_h", 5, 1, "h_n"),),
           "LSTM": (("initial_h", 5, 1, "h_n"), ("initial_c", 6, 2, "c_n"))}
_CONFIG_KEYS = ("hidden_size", "direction", "activations", "alpha", "beta", "clip", "input_forget",
                "linear_before_reset")


def from_onnx_model(model_or_path, *, xp=None, device=None, dtype=None):
    """An ``RNN``, ``LSTM`` or ``GRU`` from an ONNX model of such nodes with initializer weights.

    Reads the models :func:`to_onnx_model` and ``torch.onnx.export`` write
    for a ``torch.nn.RNN``, ``LSTM`` or ``GRU`` (the TorchScript exporter's,
    ``dynamo=False``, and the ``dynamo=True`` exporter's): one node per
    layer, all of one operator (stacked layers chained through
    ``Transpose``/``Reshape``/``Squeeze``), weights as initializers or
    ``Constant`` nodes, ``initial_h`` (and an LSTM's ``initial_c``) absent,
    zeros, or sliced from a graph input, ``sequence_lens`` absent or a graph
    input, and graph outputs that hold the layer's ``output`` (the last
    node's ``Y``), ``h_n`` (every node's ``Y_h``, concatenated) and an
    LSTM's ``c_n`` (every ``Y_c``), any of them, their axes reordered at
    most. The ``ai.onnx`` opset must be from 7 (the operators' versions are
    7, 14 and 22) to the newest the installed ``onnx`` knows.

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
    RNN, LSTM or GRU
        With the nodes' configuration; ``rnn(x, h0, lengths=lengths)`` (an
        LSTM's ``lstm(x, (h0, c0), lengths=lengths)``) gives the layer's
        ``output`` and ``h_n`` (and ``c_n``) for the model's inputs (``h0``,
        ``c0`` and ``lengths`` where the model has them). The layer's ``h0``
        is ``[num_layers * dirs, B, H]``: where the model's graph input is
        batch-major, ``[B, num_layers * dirs, H]`` (read by ``layout=1``
        nodes as it is), pass it with its first two axes swapped.

    Raises
    ------
    ValueError
        A node that is neither an ``RNN``/``LSTM``/``GRU`` node nor one that
        reshapes data, nodes of two operators, a graph not in the order it
        runs (or with a cycle), a node, input, output or attribute its
        operator does not have at the model's opset, nodes that disagree on
        their configuration, weights that are not float constants or whose
        data disagrees with their dims, an ``initial_h``/``initial_c`` that
        is neither zeros nor a graph input, a layer not fed by the previous
        one's ``Y``, a node or a graph output that is not part of the
        layer's ``output``, ``h_n`` and ``c_n``, or external data outside the
        model's folder or beyond its declared size. The message names the
        node, tensor or attribute and what is wrong with it.
    TypeError
        ``model_or_path`` is none of the accepted types.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import GRU, RNN, convert
    >>> rnn = RNN(3, 4, num_layers=2, batch_first=True, nonlinearity="relu", seed=0)
    >>> again = convert.from_onnx_model(convert.to_onnx_model(rnn))
    >>> again.num_layers, again.batch_first, again.nonlinearity
    (2, True, 'relu')
    >>> all(np.array_equal(again.params[k], v) for k, v in rnn.params.items())
    True
    >>> gru = convert.from_onnx_model(convert.to_onnx_model(GRU(3, 4, bidirectional=True, seed=0)))
    >>> type(gru).__name__, gru.bidirectional, gru.linear_before_reset
    ('GRU', True, True)
    """
    model, base_dir = load_model(model_or_path)
    graph = model.graph
    reader = GraphReader(graph, model_opset(model), base_dir)
    rnns = [(i, nd) for i, nd in enumerate(graph.node) if nd.op_type in OPERATORS]
    if not rnns:
        raise ValueError(
            "the graph has no RNN node (nor an LSTM or GRU node); its nodes are "
            f"{[nd.op_type for nd in graph.node]}"
        )
    op = rnns[0][1].op_type
    for i, nd in rnns:
        if nd.op_type != op:
            raise ValueError(
                f"node {label(nd, i)} is an {nd.op_type} node but node {label(rnns[0][1], rnns[0][0])} "
                f"is an {op} node: an rnn_xp layer has one cell for every layer"
            )
    reader.check_live(rnns)
    configs = [reader.config(nd, i) for i, nd in rnns]
    first = configs[0]
    for (i, nd), cfg in zip(rnns, configs):
        for key in _CONFIG_KEYS:
            if cfg[key] != first[key]:
                raise ValueError(
                    f"node {label(nd, i)} has {key}={cfg[key]!r} but the first {op} node has "
                    f"{first[key]!r}: an rnn_xp layer has one configuration for every layer"
                )
    dirs, H = DIRECTIONS[first["direction"]], first["hidden_size"]
    tensors = [reader.weight_tensors(nd, i, cfg, k) for k, ((i, nd), cfg)
               in enumerate(zip(rnns, configs))]  # fmt: skip
    for (i, nd), w in zip(rnns, tensors):
        for key, what in (("B", "a bias B"), ("P", "peepholes P")):
            if (w.get(key) is None) != (tensors[0].get(key) is None):
                raise ValueError(f"node {label(nd, i)} has {what} and the first {op} node has not, "
                                 "or the other way round")
    # The layer's size from the dims alone, before anything is decoded or copied: an
    # initializer shared by many nodes is one tensor in the file but one copy per layer.
    held = [reader.consts[name] for w in tensors for name in w.values() if name is not None]
    wide = any(FLOAT_TYPES[t.data_type] == "float64" for t in held)
    check_fits_in_memory(sum(math.prod(t.dims) for t in held), 8 if wide else 4,
                         f"the weights of the model's {len(rnns)} {op} nodes")

    # The data path: the graph input into node 0, each Y into the next X.
    inputs = reader.inputs
    used, seq_sources = set(), []
    states = {key: [] for key, *_ in _STATES[op]}
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
                                     y_axes(configs[k - 1]), dirs=dirs, H=H)
            if labels != [w if w != "D" else "dirH" for w in want]:
                raise ValueError(
                    f"X of node {label(nd, i)} is not the Y of node {label(prev, prev_i)} with its "
                    f"directions merged into the features (got axes {labels})"
                )
        seq = nd.input[4] if len(nd.input) > 4 else ""
        seq_sources.append(reader.sequence_lens(seq, nd, i, inputs))
        used.update(seq_sources[-1])
        for key, j, _, _ in _STATES[op]:
            name = nd.input[j] if len(nd.input) > j else ""
            source = reader.initial_state(name, key, nd, i, k, configs[k]["layout"], dirs, len(rnns),
                                          inputs)
            states[key].append(source)
            if source is not None:
                used.add(source[0])
    if any(src != seq_sources[0] for src in seq_sources):
        raise ValueError(f"the {op} nodes disagree on sequence_lens: all of them or none must "
                         "read the same graph input")
    for key, sources in states.items():
        if any(src != sources[0] for src in sources):
            got = ", ".join("zeros" if s is None else f"{s[0]!r} ({s[1]})" for s in sources)
            raise ValueError(
                f"the {op} nodes disagree on {key}: every layer must start from its rows of one "
                f"graph input, read the same way, or all from zeros (the layer has one "
                f"{'h0' if key == 'initial_h' else 'c0'}); got {got}"
            )
    extra = [name for name in inputs if name not in used]
    if extra:
        states_read = ", ".join(key for key, *_ in _STATES[op])
        raise ValueError(f"the graph inputs {extra} feed no {op} node's X, {states_read} or "
                         "sequence_lens")
    reader.check_outputs(rnns, configs, dirs, H, op)

    # Every check passed: decode each weight tensor once, and build the layer from them.
    G = OPERATORS[op]
    state, names = {}, {}
    for k, ((i, nd), w) in enumerate(zip(rnns, tensors)):
        where = f" of node {label(nd, i)}"
        arrays = {key: None if name is None else reader.gate_array(name, key + where, key, op)
                  for key, name in w.items()}
        for d in range(dirs):  # views of the decoded tensors, copied once into the layer
            parts = [("weight_ih", arrays["W"][d], "W"), ("weight_hh", arrays["R"][d], "R")]
            if arrays["B"] is not None:
                parts += [("bias_ih", arrays["B"][d, :G * H], "B"),
                          ("bias_hh", arrays["B"][d, G * H:], "B")]
            if arrays.get("P") is not None:
                parts.append(("peephole", arrays["P"][d], "P"))
            for kind, array, key in parts:
                state[param_name(kind, k, d)] = array
                names[param_name(kind, k, d)] = key + where
    if dtype is None:  # the weights' own, bfloat16 included (decoded as float32)
        dtype = reader.dtypes[tensors[0]["W"]]
    common = dict(batch_first=batch_first, clip=first["clip"], reverse=first["direction"] == "reverse",
                  xp=xp, device=device, dtype=dtype)
    if op == "RNN":
        return build_layer(state, names, nonlinearity=first["activations"],
                           activation_alpha=first["alpha"], activation_beta=first["beta"], **common)
    options = ({"input_forget": first["input_forget"]} if op == "LSTM"
               else {"linear_before_reset": first["linear_before_reset"]})
    return build_gated(LSTM if op == "LSTM" else GRU, state, names, activations=first["activations"],
                       activation_alpha=first["alpha"], activation_beta=first["beta"], **common,
                       **options)


