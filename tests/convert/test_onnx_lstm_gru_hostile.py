"""ONNX files of LSTM and GRU nodes as untrusted input: a clear error naming the problem, bounded memory.

What ``tests/convert/test_onnx_hostile.py`` holds for ``RNN`` nodes, for the
nodes of the two gated operators: wrong shapes (``W``, ``R``, ``B``, an
LSTM's ``P``), weights that are not stored in the model, unknown attributes
(an LSTM's ``linear_before_reset``, a GRU's ``input_forget``) and bad
attribute types or values, external data outside the model's folder, the
layer's size checked before anything is decoded, shared initializers
decoded (and put in torch's gate order) once; and what only these graphs
have: nodes of two operators, a ``c_n`` that is not every node's ``Y_c``,
layers that start from different states.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rnn_xp import convert

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

T, B, D, H = 4, 2, 3, 5
G = {"LSTM": 4, "GRU": 3}


def weights(op, dirs=1, *, peepholes=False, seed=0, D=D):
    rng = np.random.default_rng(seed)
    draw = lambda *shape: rng.uniform(-0.5, 0.5, shape).astype(np.float32)  # noqa: E731
    w = {"W": draw(dirs, G[op] * H, D), "R": draw(dirs, G[op] * H, H), "B": draw(dirs, 2 * G[op] * H)}
    if peepholes:
        w["P"] = draw(dirs, 3 * H)
    return w


def node(op, inputs=None, outputs=None, name=None, **attrs):
    attrs.setdefault("hidden_size", H)
    if inputs is None:
        inputs = ["X", "W", "R", "B"] + (["", "", "", "P"] if op == "LSTM" else [])
    if outputs is None:
        outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    return helper.make_node(op, list(inputs), list(outputs), name=name or op.lower(), **attrs)


def model(nodes, inits, *, inputs=("X",), outputs=("Y",), opset=14):
    tensors = [v if isinstance(v, TensorProto) else numpy_helper.from_array(v, k)
               for k, v in inits.items()]
    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_the_plain_models_read_back(op):
    """The models below differ from these only in what they do wrong."""
    w = weights(op, peepholes=op == "LSTM")
    layer = convert.from_onnx_model(model([node(op)], w, outputs=["Y", "Y_h"]))
    want = convert.from_onnx(w["W"], w["R"], w["B"], op_type=op, P=w.get("P"))
    x = np.random.default_rng(1).standard_normal((T, B, D)).astype(np.float32)
    np.testing.assert_array_equal(layer(x)[0], want(x)[0])


# -- shapes and stored weights ------------------------------------------------------------


@pytest.mark.parametrize("op, key, shape, message", [
    ("LSTM", "W", (1, 3 * H, D), r"node 'lstm' \(#0, LSTM\) has W \(1, 15, 3\), R \(1, 20, 5\), B \(1, 40\), "
                                 r"P \(1, 15\); its attributes need W \[1, 4\*5, D\], R \[1, 4\*5, 5\], "
                                 r"B \[1, 40\], P \[1, 15\]$"),
    ("LSTM", "R", (1, 4 * H, H + 1), r"has W \(1, 20, 3\), R \(1, 20, 6\)"),
    ("LSTM", "B", (1, 8 * H - 1), r"B \(1, 39\), P \(1, 15\); its attributes need"),
    ("LSTM", "P", (1, 4 * H), r"P \(1, 20\); its attributes need .*P \[1, 15\]"),
    ("LSTM", "P", (3 * H,), r"P \(15,\); its attributes need"),
    ("GRU", "W", (1, 4 * H, D), r"node 'gru' \(#0, GRU\) has W \(1, 20, 3\), R \(1, 15, 5\), B \(1, 30\); "
                                r"its attributes need W \[1, 3\*5, D\], R \[1, 3\*5, 5\], B \[1, 30\]$"),
    ("GRU", "B", (2, 6 * H), r"B \(2, 30\); its attributes need"),
], ids=["LSTM W of a GRU", "LSTM R", "LSTM B", "LSTM P of 4H", "LSTM P 1-D", "GRU W of an LSTM", "GRU B of two"])
def test_wrong_shapes_name_the_node_and_the_shapes_needed(op, key, shape, message):
    w = weights(op, peepholes=op == "LSTM")
    w[key] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=message):
        convert.from_onnx_model(model([node(op)], w))


@pytest.mark.parametrize("op, key", [("LSTM", "P"), ("LSTM", "W"), ("GRU", "R")])
def test_weights_that_are_not_stored_in_the_model(op, key):
    w = weights(op, peepholes=op == "LSTM")
    del w[key]
    with pytest.raises(ValueError, match=rf"{key} of node '{op.lower()}' \(#0, {op}\) \('{key}'\) is not an "
                                         r"initializer or a Constant"):
        convert.from_onnx_model(model([node(op)], w, inputs=("X", key)))
    with pytest.raises(ValueError, match=rf"node '{op.lower()}' \(#0, {op}\) reads '{key}' before any node "
                                         r"makes it"):
        convert.from_onnx_model(model([node(op)], w))  # neither an initializer nor an input


def test_a_node_without_its_input_R():
    w = weights("GRU")
    with pytest.raises(ValueError, match=r"node 'gru' \(#0, GRU\) \(GRU at opset 14, version 14\) lacks "
                                         r"its input R"):
        convert.from_onnx_model(model([node("GRU", ["X", "W", "", "B"])], w))


# -- attributes -------------------------------------------------------------------------------


@pytest.mark.parametrize("op, attrs, opset, message", [
    ("LSTM", {"linear_before_reset": 1}, 14, r"node 'lstm' \(#0, LSTM\) \(LSTM at opset 14, version 14\) has "
                                             r"the attribute 'linear_before_reset', which the operator does "
                                             r"not have; its attributes are \['activation_alpha', .*'input_forget'"),
    ("GRU", {"input_forget": 1}, 14, r"node 'gru' .* has the attribute 'input_forget', which the operator "
                                     r"does not have"),
    ("GRU", {"layout": 0}, 7, r"\(GRU at opset 7, version 7\) has the attribute 'layout'"),
    ("LSTM", {"input_forget": 1.0}, 14, r"attribute 'input_forget' of node 'lstm' .* is FLOAT; the operator "
                                        r"takes INT"),
    ("GRU", {"linear_before_reset": "1"}, 14, r"attribute 'linear_before_reset' .* is STRING; the "
                                              r"operator takes INT"),
    ("LSTM", {"input_forget": 2}, 14, r"node 'lstm' \(#0, LSTM\) has input_forget=2; it must be 0 or 1"),
    ("GRU", {"linear_before_reset": -1}, 14, r"node 'gru' \(#0, GRU\) has linear_before_reset=-1; it must be "
                                             r"0 or 1"),
    ("LSTM", {"activations": ["Sigmoid", "Tanh"]}, 14, r"node 'lstm' \(#0, LSTM\): activations of an LSTM "
                                                       r"node must be 3 names from"),
    ("GRU", {"activations": ["Sigmoid", "Gelu"]}, 14, r"node 'gru' \(#0, GRU\): activations of an GRU node "
                                                      r"must be 2 names"),
    ("LSTM", {"activation_alpha": [0.1] * 4}, 14, r"node 'lstm' .*: activation_alpha has 4 values for the 3 "
                                                  r"activations"),
    ("GRU", {"clip": float("nan")}, 14, r"node 'gru' \(#0, GRU\): clip must be a positive number .* got nan"),
    ("LSTM", {"hidden_size": 0}, 14, r"node 'lstm' \(#0, LSTM\) has hidden_size=0; it must be positive"),
    ("LSTM", {"direction": "sideways"}, 14, r"node 'lstm' \(#0, LSTM\) has direction='sideways'"),
    ("GRU", {"layout": 2}, 14, r"node 'gru' \(#0, GRU\) has layout=2; it must be 0 or 1"),
], ids=["LSTM linear_before_reset", "GRU input_forget", "GRU layout at opset 7", "input_forget 1.0",
        "linear_before_reset '1'", "input_forget 2", "linear_before_reset -1", "LSTM 2 activations",
        "GRU Gelu", "LSTM 4 alphas", "GRU clip nan", "LSTM hidden_size 0", "LSTM sideways", "GRU layout 2"])
def test_attributes_are_checked_against_the_operator(op, attrs, opset, message):
    with pytest.raises(ValueError, match=message):
        convert.from_onnx_model(model([node(op, **attrs)], weights(op, peepholes=op == "LSTM"), opset=opset))


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("opset", [6, 7, 14, 22])
def test_the_operators_opsets(op, opset):
    # LSTM and GRU have versions 7, 14 and 22 (before 7 other operators of these names)
    m = model([node(op)], weights(op, peepholes=op == "LSTM"), opset=opset)
    if opset < 7:
        with pytest.raises(ValueError, match=r"the model's ai.onnx opset is 6; rnn_xp reads ai.onnx opsets 7"):
            convert.from_onnx_model(m)
    else:
        assert convert.from_onnx_model(m).hidden_size == H


# -- what only these graphs have ------------------------------------------------------------


def test_nodes_of_two_operators_are_refused():
    lstm = weights("LSTM")
    gru = {k + "2": v for k, v in weights("GRU", D=H, seed=1).items()}
    nodes = [node("LSTM", ["X", "W", "R", "B"], ["Y1", "", ""], name="first"),
             helper.make_node("Squeeze", ["Y1", "axis1"], ["X2"], name="merge"),
             node("GRU", ["X2", "W2", "R2", "B2"], ["Y2", ""], name="second")]
    with pytest.raises(ValueError, match=r"node 'second' \(#2, GRU\) is an GRU node but node 'first' "
                                         r"\(#0, LSTM\) is an LSTM node: an rnn_xp layer has one cell"):
        convert.from_onnx_model(model(nodes, {**lstm, **gru, "axis1": np.array([1])}, outputs=["Y2"]))


def two_lstm_layers(**extra_inits):
    w1, w2 = weights("LSTM"), {k + "2": v for k, v in weights("LSTM", D=H, seed=1).items()}
    nodes = [node("LSTM", ["X", "W", "R", "B"], ["Y1", "Yh1", "Yc1"], name="lstm1"),
             helper.make_node("Squeeze", ["Y1", "axis1"], ["X2"], name="merge"),
             node("LSTM", ["X2", "W2", "R2", "B2"], ["Y2", "Yh2", "Yc2"], name="lstm2")]
    return nodes, {**w1, **w2, "axis1": np.array([1]), **extra_inits}


@pytest.mark.parametrize("outputs, extra, message", [
    (["Yc1", "Y2"], [], r"graph output 'Yc1' is the Y_c of node 'lstm1' \(#0, LSTM\) alone, one of 2 layers; "
                        r"a graph output must be the layer's output \(the last LSTM node's Y\) or its h_n .* or "
                        r"its c_n \(every LSTM node's Y_c, the same way\)"),
    (["c_n"], [helper.make_node("Concat", ["Yc1", "Yh2"], ["c_n"], name="cat", axis=0)],
     r"input 1 of node 'cat' .* is the Y_h of layer 1 with axes .*; c_n needs layer 1's Y_c"),
    (["c_n"], [helper.make_node("Concat", ["Yc2", "Yc1"], ["c_n"], name="cat", axis=0)],
     r"input 0 of node 'cat' .* is the Y_c of layer 1 .*; c_n needs layer 0's Y_c"),
    (["Y2", "c_n"], [helper.make_node("Concat", ["Yc1"], ["c_n"], name="cat", axis=0)],
     r"node 'cat' .* concatenates 1 tensors; c_n holds the 2 layers' Y_c"),
], ids=["one Y_c of two", "Y_c and Y_h mixed", "Y_c out of order", "one Y_c concatenated"])
def test_c_n_must_be_every_nodes_Y_c(outputs, extra, message):
    nodes, inits = two_lstm_layers()
    with pytest.raises(ValueError, match=message):
        convert.from_onnx_model(model(nodes + extra, inits, outputs=outputs))


def test_every_output_read():
    nodes, inits = two_lstm_layers()
    nodes += [helper.make_node("Concat", ["Yh1", "Yh2"], ["h_n"], axis=0),
              helper.make_node("Concat", ["Yc1", "Yc2"], ["c_n"], axis=0)]
    layer = convert.from_onnx_model(model(nodes, inits, outputs=["Y2", "h_n", "c_n"]))
    assert layer.num_layers == 2 and type(layer).__name__ == "LSTM"


def test_layers_that_start_from_different_states_are_refused():
    # layer 0 from its rows of h0, layer 1 from zeros: the layer has one h0, whose rows for
    # layer 1 the model would ignore. (The RNN nodes' reader accepted this before.)
    nodes, inits = two_lstm_layers(start=np.array([0]), end=np.array([1]), axis0=np.array([0]))
    nodes.insert(0, helper.make_node("Slice", ["h0", "start", "end", "axis0"], ["h0_rows"], name="rows"))
    nodes[1].input.extend(["", "h0_rows"])
    with pytest.raises(ValueError, match=r"the LSTM nodes disagree on initial_h: every layer must start "
                                         r"from its rows of one graph input, read the same way, or all "
                                         r"from zeros \(the layer has one h0\); got 'h0' \(\[L\*dirs, B, H\]\), zeros"):
        convert.from_onnx_model(model(nodes, inits, inputs=("X", "h0"), outputs=["Y2"]))


def test_a_nonzero_constant_initial_c_is_refused():
    w = weights("LSTM")
    m = model([node("LSTM", ["X", "W", "R", "B", "", "", "c"])], {**w, "c": np.ones((1, 1, H), np.float32)})
    with pytest.raises(ValueError, match=r"initial_c of node 'lstm' \(#0, LSTM\) is a constant that is not "
                                         r"zero; rnn_xp layers start from zeros or from c0"):
        convert.from_onnx_model(m)
    zeros = model([node("LSTM", ["X", "W", "R", "B", "", "", "c"])], {**w, "c": np.zeros((1, 1, H), np.float32)})
    assert convert.from_onnx_model(zeros).hidden_size == H


def test_a_cycle_through_initial_c_is_refused():
    nodes = [helper.make_node("Identity", ["c"], ["c"], name="loop"),
             node("LSTM", ["X", "W", "R", "B", "", "", "c"])]
    with pytest.raises(ValueError, match=r"node 'loop' \(#0, Identity\) reads 'c' before any node makes "
                                         r"it: the graph is not in the order it runs"):
        convert.from_onnx_model(model(nodes, weights("LSTM")))


# -- memory --------------------------------------------------------------------------------------


def test_the_layers_size_is_checked_before_anything_is_decoded():
    huge = 1 << 19  # R of 4 * 2**38 values: no machine holds them
    inits = {name: TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
             for name, dims in (("W", [1, 4 * huge, D]), ("R", [1, 4 * huge, huge]), ("P", [1, 3 * huge]))}
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"the weights of the model's 1 LSTM nodes need 4,398.1 GB, "
                                             r"more than this machine's .* GB of memory"):
            convert.from_onnx_model(model([node("LSTM", ["X", "W", "R", "", "", "", "", "P"],
                                                hidden_size=huge)], inits))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_a_shared_initializer_is_decoded_and_reordered_once(counting, op):
    # 30 nodes whose W and R are one [1, G*H, H] initializer and whose B is one more: each
    # decoded once and put in torch's gate order once (a second reordering would scramble it)
    rng = np.random.default_rng(0)
    w = rng.uniform(-0.3, 0.3, (1, G[op] * H, H)).astype(np.float32)
    b = rng.uniform(-0.3, 0.3, (1, 2 * G[op] * H)).astype(np.float32)
    p = rng.uniform(-0.3, 0.3, (1, 3 * H)).astype(np.float32)
    nodes, x = [], "X"
    for k in range(30):
        inputs = [x, "w", "w", "b"] + (["", "", "", "p"] if op == "LSTM" else [])
        nodes.append(node(op, inputs, [f"Y{k}"] + [""] * (2 if op == "LSTM" else 1), name=f"n{k}"))
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"X{k + 1}"], name=f"sq{k}"))
        x = f"X{k + 1}"
    m = model(nodes, {"w": w, "b": b, "p": p, "axis1": np.array([1])}, outputs=[x])
    counting.update(draws=0, decoded=0)
    layer = convert.from_onnx_model(m)
    assert layer.num_layers == 30 and counting["draws"] == 0
    assert counting["decoded"] == (4 if op == "LSTM" else 3)  # w, b (p), the Squeezes' axes
    once = convert.from_onnx(w, w, b, op_type=op, P=p if op == "LSTM" else None)  # one node, reordered once
    for k in (0, 1, 29):
        for name, value in once.params.items():
            np.testing.assert_array_equal(layer.params[name.replace("_l0", f"_l{k}")], value, err_msg=name)
    assert layer.params["weight_hh_l0"] is not layer.params["weight_hh_l1"]


# -- external data --------------------------------------------------------------------------------


def _external(tensor, location):
    raw = tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor, raw


@pytest.mark.parametrize("op, key", [("LSTM", "P"), ("GRU", "W")])
def test_external_data_only_from_inside_the_models_folder(tmp_path, op, key):
    folder = tmp_path / "model"
    folder.mkdir()
    w = weights(op, peepholes=op == "LSTM")
    for location, ok in (("data/w.bin", True), ("../secret.bin", False), (str(tmp_path / "abs.bin"), False)):
        tensor, raw = _external(numpy_helper.from_array(w[key], key), location)
        target = (folder / location).resolve() if not location.startswith("/") else tmp_path / "abs.bin"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        (folder / "m.onnx").write_bytes(model([node(op)], {**w, key: tensor}).SerializeToString())
        if ok:
            layer = convert.from_onnx_model(folder / "m.onnx")
            want = convert.from_onnx(w["W"], w["R"], w["B"], op_type=op, P=w.get("P"))
            for name, value in want.params.items():
                np.testing.assert_array_equal(layer.params[name], value)
        else:
            with pytest.raises(ValueError, match=rf"^{key} of node '{op.lower()}' \(#0, {op}\) \('{key}'\) "
                                                 r"points to the external file .* outside the model's folder"):
                convert.from_onnx_model(folder / "m.onnx")


def test_rnn_layers_that_start_from_different_states_are_refused_too():
    from rnn_xp import RNN

    m = convert.to_onnx_model(RNN(D, H, num_layers=2, seed=0), initial_state=True)
    rnn1 = next(n for n in m.graph.node if n.op_type == "RNN" and n.name == "Y_l1")
    rnn1.input[5] = ""  # layer 1 from zeros; the graph input h0 still holds two layers' rows
    with pytest.raises(ValueError, match=r"the RNN nodes disagree on initial_h: .*; got 'h0' "
                                         r"\(\[L\*dirs, B, H\]\), zeros"):
        convert.from_onnx_model(m)
