"""ONNX model files written from a layer: one ``RNN`` node per layer, weights as initializers."""

from __future__ import annotations

from .._backends import dtype_name, to_host
from .._checks import check_bool
from ._common import check_rnn
from .onnx import onnx_attributes, to_onnx

_ONNX_ELEM = {"float16": 10, "float32": 1, "float64": 11}  # onnx.TensorProto data types


def to_onnx_model(rnn, f=None, *, opset=14, initial_state=False, lengths=False, layout=0):
    """A complete ONNX model of the layer: one ``RNN`` node per layer.

    Parameters
    ----------
    rnn : RNN
        Any layer without ``leak`` (the operator has none); masks are call
        arguments, not part of a model (use ``lengths=True`` for padding).
    f : str, path or binary file object, optional
        Where to write the model; it is returned either way.
    opset : int, optional
        The ``ai.onnx`` opset, from 10 to what the installed ``onnx`` knows.
    initial_state : bool, optional
        Add the input ``h0 [num_layers * dirs, B, H]`` (else the nodes start
        from zeros).
    lengths : bool, optional
        Add the input ``lengths [B]`` (int32), every node's ``sequence_lens``.
    layout : {0, 1}, optional
        The nodes' ``layout``. 0: time-major nodes, with a ``Transpose`` at
        each end for a ``batch_first`` layer (onnxruntime runs these). 1: for
        a ``batch_first`` layer, batch-major nodes and no transposes (opset
        14 or later; ``onnx.reference`` runs them, onnxruntime's CPU ``RNN``
        kernel refuses ``layout=1``).

    Returns
    -------
    onnx.ModelProto
        Inputs ``input`` (``[T, B, D]``, ``[B, T, D]`` with ``batch_first``;
        ``T`` and ``B`` symbolic), then ``h0`` and ``lengths`` when asked for;
        outputs ``output`` and ``h_n``, the shapes and values of ``rnn(input,
        h0, lengths=lengths)``. Between layers each node's ``Y`` becomes the
        next ``X`` through ``Transpose`` and ``Reshape`` (``Reshape`` alone with
        ``layout=1``). The weights are initializers in the layer's dtype.

    Raises
    ------
    ValueError
        The layer has ``leak != 1``, ``opset`` is out of range, or
        ``layout=1`` is asked of a time-major layer or below opset 14.

    Notes
    -----
    onnxruntime runs float32 ``RNN`` nodes only; ``onnx.reference`` runs any
    dtype but only the Tanh and Affine activations, without ``clip`` or
    ``sequence_lens``.

    Examples
    --------
    >>> from rnn_xp import RNN, convert
    >>> model = convert.to_onnx_model(RNN(3, 4, num_layers=2, bidirectional=True, seed=0))
    >>> [n.op_type for n in model.graph.node if n.op_type == "RNN"]
    ['RNN', 'RNN']
    >>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    (['input'], ['output', 'h_n'])
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    check_rnn(rnn)
    attrs = onnx_attributes(rnn)  # the leak check
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 10 <= opset <= top:
        raise ValueError(f"opset must be an int from 10 to {top}; got {opset!r}")
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

    nodes, inits = [], []

    def node(op, inputs, outputs, **kwargs):
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **kwargs))
        return outputs[0]

    def const(tensor_name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), tensor_name))
        return tensor_name

    x = "input"
    if rnn.batch_first and not use_layout:
        x = node("Transpose", [x], ["input_time_major"], perm=[1, 0, 2])  # [T, B, D]
    merge = const("merge_directions", np.array([0, 0, -1], dtype=np.int64))
    finals = []
    for k in range(L):
        w = {key: to_host(a).astype(name) for key, a in to_onnx(rnn, layer=k).items()}
        inputs = [x, const(f"W_l{k}", w["W"]), const(f"R_l{k}", w["R"]),
                  const(f"B_l{k}", w["B"]) if "B" in w else "", "lengths" if lengths else "", ""]
        if initial_state:
            h0_k = node("Slice", ["h0", const(f"h0_start_l{k}", np.array([k * dirs])),
                                  const(f"h0_end_l{k}", np.array([(k + 1) * dirs])),
                                  const(f"h0_axis_l{k}", np.array([0]))], [f"h0_l{k}"])  # [dirs, B, H]
            if use_layout:
                h0_k = node("Transpose", [h0_k], [f"h0_l{k}_batch_major"], perm=[1, 0, 2])
            inputs[5] = h0_k
        while inputs[-1] == "":
            inputs.pop()
        Y, Y_h = f"Y_l{k}", f"Y_h_l{k}"
        node("RNN", inputs, [Y, Y_h], **attrs)
        if use_layout:  # Y [B, T, dirs, H], Y_h [B, dirs, H]
            x = node("Reshape", [Y, merge], [f"output_l{k}"])  # [B, T, dirs * H]
            Y_h = node("Transpose", [Y_h], [f"h_n_l{k}"], perm=[1, 0, 2])  # [dirs, B, H]
        else:  # Y [T, dirs, B, H], Y_h [dirs, B, H]
            Yt = node("Transpose", [Y], [f"Y_l{k}_time_batch"], perm=[0, 2, 1, 3])  # [T, B, dirs, H]
            x = node("Reshape", [Yt, merge], [f"output_l{k}"])  # [T, B, dirs * H]
        finals.append(Y_h)
    if rnn.batch_first and not use_layout:
        node("Transpose", [x], ["output"], perm=[1, 0, 2])  # [B, T, dirs * H]
    else:
        node("Identity", [x], ["output"])
    node("Concat", finals, ["h_n"], axis=0)  # [L * dirs, B, H]

    seq = ["B", "T"] if rnn.batch_first else ["T", "B"]
    graph_inputs = [helper.make_tensor_value_info("input", elem, [*seq, D])]
    if initial_state:
        graph_inputs.append(helper.make_tensor_value_info("h0", elem, [L * dirs, "B", H]))
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("lengths", 6, ["B"]))  # int32
    graph_outputs = [helper.make_tensor_value_info("output", elem, [*seq, dirs * H]),
                     helper.make_tensor_value_info("h_n", elem, [L * dirs, "B", H])]
    graph = helper.make_graph(nodes, "rnn_xp", graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rnn_xp",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    if f is not None:
        if hasattr(f, "write"):
            f.write(model.SerializeToString())
        else:
            onnx.save(model, f)
    return model
