"""ONNX model files written from a layer: one ``RNN``, ``LSTM`` or ``GRU`` node per layer, weights as initializers."""

from __future__ import annotations

from .._backends import dtype_name, to_host
from .._checks import check_bool
from .onnx import onnx_attributes, operator_of, to_onnx

_ONNX_ELEM = {"float16": 10, "float32": 1, "float64": 11}  # onnx.TensorProto data types
FIRST_WRITTEN_OPSET = 7  # the operators' first version of today (7, 14, 22)


def to_onnx_model(rnn, f=None, *, opset=14, initial_state=False, lengths=False, layout=0):
    """A complete ONNX model of the layer: one ``RNN``, ``LSTM`` or ``GRU`` node per layer.

    Parameters
    ----------
    rnn : RNN, LSTM or GRU
        Any layer the operator can hold: an ``RNN`` without ``leak``, an
        ``LSTM`` without a projection (``proj_size=0``; peepholes,
        ``input_forget``, every activation and ``clip`` are written), any
        ``GRU``. Masks are call arguments, not part of a model (use
        ``lengths=True`` for padding).
    f : str, path or binary file object, optional
        Where to write the model; it is returned either way.
    opset : int, optional
        The ``ai.onnx`` opset, from 7 to what the installed ``onnx`` knows.
    initial_state : bool, optional
        Add the input ``h0 [num_layers * dirs, B, H]`` (and an LSTM's ``c0``,
        the same shape); else the nodes start from zeros.
    lengths : bool, optional
        Add the input ``lengths [B]`` (int32), every node's ``sequence_lens``.
    layout : {0, 1}, optional
        The nodes' ``layout``. 0: time-major nodes, with a ``Transpose`` at
        each end for a ``batch_first`` layer (onnxruntime runs these). 1: for
        a ``batch_first`` layer, batch-major nodes and no transposes (opset
        14 or later; ``onnx.reference`` runs them, onnxruntime's CPU kernels
        refuse ``layout=1``).

    Returns
    -------
    onnx.ModelProto
        Inputs ``input`` (``[T, B, D]``, ``[B, T, D]`` with ``batch_first``;
        ``T`` and ``B`` symbolic), then ``h0`` (and ``c0``) and ``lengths``
        when asked for; outputs ``output`` and ``h_n`` (and an LSTM's
        ``c_n``), the shapes and values of ``rnn(input, h0, lengths=lengths)``
        (``lstm(input, (h0, c0), lengths=lengths)``). Between layers each
        node's ``Y`` becomes the next ``X`` through ``Transpose`` and
        ``Reshape`` (``Reshape`` alone with ``layout=1``). The weights are
        initializers in the layer's dtype, in ONNX's gate order.

    Raises
    ------
    ValueError
        The layer has ``leak != 1`` or a projection, ``opset`` is out of
        range, or ``layout=1`` is asked of a time-major layer or below opset 14.
    TypeError
        ``rnn`` is not an ``RNN``, ``LSTM`` or ``GRU``.

    Notes
    -----
    onnxruntime runs float32 nodes (not float64); ``onnx.reference`` runs any
    dtype but only the ``RNN``'s Tanh and Affine activations, and for
    ``LSTM`` and ``GRU`` it ignores ``activations``, ``clip``,
    ``input_forget`` and ``sequence_lens`` (silently).

    Examples
    --------
    >>> from rnn_xp import LSTM, RNN, convert
    >>> model = convert.to_onnx_model(RNN(3, 4, num_layers=2, bidirectional=True, seed=0))
    >>> [n.op_type for n in model.graph.node if n.op_type == "RNN"]
    ['RNN', 'RNN']
    >>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    (['input'], ['output', 'h_n'])
    >>> model = convert.to_onnx_model(LSTM(3, 4, peepholes=True, seed=0), initial_state=True)
    >>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    (['input', 'h0', 'c0'], ['output', 'h_n', 'c_n'])
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    op = operator_of(rnn)
    attrs = onnx_attributes(rnn)  # the leak and projection checks
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not FIRST_WRITTEN_OPSET <= opset <= top:
        raise ValueError(f"opset must be an int from {FIRST_WRITTEN_OPSET} to {top}; got {opset!r}")
    check_bool("initial_state", initial_state)
    check_bool("lengths", lengths)
    name = dtype_name(rnn.xp, rnn.dtype)
    elem = _ONNX_ELEM[name]
    L, dirs, H, D = rnn.num_layers, rnn.num_directions, rnn.hidden_size, rnn.input_size
    if isinstance(layout, bool) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    if layout == 1 and not (rnn.batch_first and opset >= 14):
        raise ValueError(
            "layout=1 needs a batch_first layer and opset 14 or later; got "
            f"batch_first={rnn.batch_first}, opset={opset}"
        )
    use_layout = layout == 1
    if not use_layout:
        del attrs["layout"]  # 0, the default (and no such attribute before opset 14)
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    finals = ["h_n", "c_n"] if op == "LSTM" else ["h_n"]

    nodes, inits = [], []

    def node(op_type, inputs, outputs, **kwargs):
        nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **kwargs))
        return outputs[0]

    def const(tensor_name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), tensor_name))
        return tensor_name

    def rows(state, k):
        """Layer k's rows ``[dirs, B, H]`` of the input ``state`` (Slice takes attributes before opset 10)."""
        out = [f"{state}_l{k}"]
        if opset < 10:
            return node("Slice", [state], out, starts=[k * dirs], ends=[(k + 1) * dirs], axes=[0])
        return node("Slice", [state, const(f"{state}_start_l{k}", np.array([k * dirs])),
                              const(f"{state}_end_l{k}", np.array([(k + 1) * dirs])),
                              const(f"{state}_axis_l{k}", np.array([0]))], out)

    x = "input"
    if rnn.batch_first and not use_layout:
        x = node("Transpose", [x], ["input_time_major"], perm=[1, 0, 2])  # [T, B, D]
    merge = const("merge_directions", np.array([0, 0, -1], dtype=np.int64))
    outs = {key: [] for key in finals}
    for k in range(L):
        w = {key: to_host(a).astype(name) for key, a in to_onnx(rnn, layer=k).items()}
        inputs = [x, const(f"W_l{k}", w["W"]), const(f"R_l{k}", w["R"]),
                  const(f"B_l{k}", w["B"]) if "B" in w else "", "lengths" if lengths else "",
                  "", "", ""][:8 if op == "LSTM" else 6]
        if initial_state:
            for j, state in zip((5, 6), states):
                s_k = rows(state, k)  # [dirs, B, H]
                if use_layout:
                    s_k = node("Transpose", [s_k], [f"{state}_l{k}_batch_major"], perm=[1, 0, 2])
                inputs[j] = s_k
        if "P" in w:
            inputs[7] = const(f"P_l{k}", w["P"])
        while inputs[-1] == "":
            inputs.pop()
        Y, node_finals = f"Y_l{k}", [f"Y_h_l{k}", f"Y_c_l{k}"][:len(finals)]
        node(op, inputs, [Y, *node_finals], **attrs)
        if use_layout:  # Y [B, T, dirs, H], Y_h [B, dirs, H]
            x = node("Reshape", [Y, merge], [f"output_l{k}"])  # [B, T, dirs * H]
            node_finals = [node("Transpose", [f], [f"{key}_l{k}"], perm=[1, 0, 2])  # [dirs, B, H]
                           for f, key in zip(node_finals, finals)]
        else:  # Y [T, dirs, B, H], Y_h [dirs, B, H]
            Yt = node("Transpose", [Y], [f"Y_l{k}_time_batch"], perm=[0, 2, 1, 3])  # [T, B, dirs, H]
            x = node("Reshape", [Yt, merge], [f"output_l{k}"])  # [T, B, dirs * H]
        for key, f_k in zip(finals, node_finals):
            outs[key].append(f_k)
    if rnn.batch_first and not use_layout:
        node("Transpose", [x], ["output"], perm=[1, 0, 2])  # [B, T, dirs * H]
    else:
        node("Identity", [x], ["output"])
    for key in finals:
        node("Concat", outs[key], [key], axis=0)  # [L * dirs, B, H]

    seq = ["B", "T"] if rnn.batch_first else ["T", "B"]
    graph_inputs = [helper.make_tensor_value_info("input", elem, [*seq, D])]
    if initial_state:
        graph_inputs += [helper.make_tensor_value_info(s, elem, [L * dirs, "B", H]) for s in states]
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("lengths", 6, ["B"]))  # int32
    graph_outputs = [helper.make_tensor_value_info("output", elem, [*seq, dirs * H])]
    graph_outputs += [helper.make_tensor_value_info(key, elem, [L * dirs, "B", H]) for key in finals]
    graph = helper.make_graph(nodes, "rnn_xp", graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rnn_xp",
                              # IR 4 at least: initializers that are not graph inputs
                              ir_version=max(4, helper.find_min_ir_version_for(opsets)))
    onnx.checker.check_model(model)
    if f is not None:
        if hasattr(f, "write"):
            f.write(model.SerializeToString())
        else:
            onnx.save(model, f)
    return model
