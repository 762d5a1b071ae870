"""ONNX model files of LSTM and GRU nodes: ``convert.to_onnx_model`` and ``convert.from_onnx_model``.

``LSTM``/``GRU -> to_onnx_model -> onnxruntime`` (and ``onnx.reference`` for
float64 and ``layout=1``) must give the layer's ``output``, ``h_n`` and
``c_n``; ``torch.nn.LSTM``/``GRU -> torch.onnx.export -> from_onnx_model``
must give torch's, with both exporters (``dynamo=True`` needs onnxscript:
without it the models it wrote with torch 2.13 and onnxscript 0.7.2, kept
in ``data/``, are read and run by onnxruntime). A ``layout=1`` model whose
initial states are graph inputs in the nodes' own ``[B, dirs, H]`` layout
is read, for ``RNN`` nodes too.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from test_onnx_lstm_gru import run_ort

from rnn_xp import GRU, LSTM, RNN, convert

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

T, B, D, H = 5, 3, 3, 4
DATA = os.path.join(os.path.dirname(__file__), "data")


def feeds_for(layer, rng, dtype, *, state=False, lengths=False):
    shape = (B, T, D) if layer.batch_first else (T, B, D)
    feeds = {"input": rng.standard_normal(shape).astype(dtype)}
    if state:
        rows = (layer.num_layers * layer.num_directions, B, H)
        feeds["h0"] = rng.standard_normal(rows).astype(dtype)
        if isinstance(layer, LSTM):
            feeds["c0"] = rng.standard_normal(rows).astype(dtype)
    if lengths:
        feeds["lengths"] = np.array([T, 2, 1], dtype=np.int32)
    return feeds


def expected(layer, feeds):
    """The layer's ``(output, h_n[, c_n])`` for a model's feeds."""
    if isinstance(layer, LSTM):
        output, (h_n, c_n) = layer(feeds["input"], (feeds.get("h0"), feeds.get("c0")),
                                   lengths=feeds.get("lengths"))
        return output, h_n, c_n
    output, h_n = layer(feeds["input"], feeds.get("h0"), lengths=feeds.get("lengths"))
    return output, h_n


def assert_results(got, want, rtol=1e-5, atol=1e-6):
    assert len(got) == len(want)
    for name, a, b in zip(("output", "h_n", "c_n"), got, want):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)


LAYERS = [
    (LSTM, dict()),
    (LSTM, dict(num_layers=2, bidirectional=True, batch_first=True, peepholes=True, input_forget=True,
                clip=0.9, activations=(("hard_sigmoid", "elu", "softsign"), ("sigmoid", "tanh", "scaled_tanh")),
                activation_alpha=((0.3, 0.8, None), (None, None, 1.2)))),
    (LSTM, dict(reverse=True, bias=False, activations=("sigmoid", "relu", "tanh"))),
    (GRU, dict(num_layers=3, bidirectional=True)),
    (GRU, dict(batch_first=True, reverse=True, linear_before_reset=False, clip=1.2,
               activations=("sigmoid", "leaky_relu"), activation_alpha=(None, 0.2))),
    (GRU, dict(num_layers=2, bias=False, linear_before_reset=False, activations=("hard_sigmoid", "tanh"))),
]


@pytest.mark.parametrize("cls, kw", LAYERS,
                         ids=lambda v: v.__name__ if isinstance(v, type) else ",".join(map(str, v)) or "plain")
def test_to_onnx_model_runs_on_onnxruntime_and_reads_back(rng, cls, kw):
    layer = cls(D, H, seed=1, **kw)
    for opset, state, lengths in ((14, False, False), (7, True, True), (22, True, False)):
        model = convert.to_onnx_model(layer, opset=opset, initial_state=state, lengths=lengths)
        assert sum(n.op_type == cls.__name__ for n in model.graph.node) == layer.num_layers
        feeds = feeds_for(layer, rng, np.float32, state=state, lengths=lengths)
        want = expected(layer, feeds)
        assert_results(run_ort(model, feeds), want)
        again = convert.from_onnx_model(model)  # and back: the very same weights
        assert type(again) is cls
        for key in ("num_layers", "bidirectional", "batch_first", "reverse", "bias", "clip",
                    "input_forget", "peepholes", "linear_before_reset"):
            if hasattr(layer, key):
                assert getattr(again, key) == pytest.approx(getattr(layer, key)), key
        assert list(again.params) == list(layer.params)
        for name, p in layer.params.items():
            np.testing.assert_array_equal(again.params[name], p, err_msg=name)
        assert_results(expected(again, feeds), want)  # alpha, beta, clip: float32 attributes


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("cls, kw", [(LSTM, dict(peepholes=True)), (GRU, dict(linear_before_reset=False))],
                         ids=["LSTM", "GRU"])
def test_float64_and_layout_1_on_onnx_reference(rng, cls, kw, layout):
    from onnx.reference import ReferenceEvaluator

    layer = cls(D, H, num_layers=2, bidirectional=True, batch_first=True, dtype="float64", seed=2, **kw)
    model = convert.to_onnx_model(layer, initial_state=True, layout=layout)
    nodes = [n for n in model.graph.node if n.op_type == cls.__name__]
    assert [dict((a.name, a.i) for a in n.attribute).get("layout", 0) for n in nodes] == [layout] * 2
    feeds = feeds_for(layer, rng, np.float64, state=True)
    assert_results(ReferenceEvaluator(model).run(None, feeds), expected(layer, feeds), 1e-12, 1e-13)
    again = convert.from_onnx_model(model)
    assert again.dtype == np.float64
    assert_results(expected(again, feeds), expected(layer, feeds), 0, 0)


# -- torch.onnx exports -------------------------------------------------------------------


TORCH_CASES = [
    ("LSTM", dict(), False),
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True), True),
    ("GRU", dict(num_layers=2), True),
    ("GRU", dict(bidirectional=True, batch_first=True, bias=False), False),
]


def _torch_case(kind, kw, with_state):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(D, H, **kw)
    x = torch.randn((B, T, D) if kw.get("batch_first") else (T, B, D))
    rows = module.num_layers * (2 if module.bidirectional else 1)
    state = (torch.randn(rows, B, H), torch.randn(rows, B, H)) if kind == "LSTM" else torch.randn(rows, B, H)
    args = (x, state) if with_state else (x,)
    names = ["input", "h0", "c0"] if kind == "LSTM" else ["input", "h0"]
    outputs = ["output", "h_n", "c_n"] if kind == "LSTM" else ["output", "h_n"]
    return torch, module, args, names if with_state else ["input"], outputs


def _check_torch(torch, module, layer, args):
    assert type(layer).__name__ == type(module).__name__
    assert (layer.num_layers, layer.bidirectional, layer.batch_first, layer.bias) == (
        module.num_layers, module.bidirectional, module.batch_first, module.bias)
    if isinstance(layer, GRU):
        assert layer.linear_before_reset  # torch's GRU
    with torch.no_grad():
        want = module(*args)
    got = layer(*args)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(got[1] if isinstance(got[1], tuple) else (got[1],),
                    want[1] if isinstance(want[1], tuple) else (want[1],)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for name, t in module.state_dict().items():
        assert torch.equal(layer.params[name], t), name


@pytest.mark.parametrize("kind, kw, with_state", TORCH_CASES,
                         ids=lambda v: (v if isinstance(v, str) else ",".join(map(str, v))
                                        if isinstance(v, dict) else f"state={v}"))
def test_torch_onnx_export_reads_back_to_torchs_numbers(kind, kw, with_state):
    torch, module, args, names, outputs = _torch_case(kind, kw, with_state)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and batch-size notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=names, output_names=outputs)
    layer = convert.from_onnx_model(buffer.getvalue(), xp="torch")
    _check_torch(torch, module, layer, args)
    # onnxruntime runs the export to the same numbers
    feeds = dict(zip(names, [args[0].numpy()] + ([s.numpy() for s in args[1]] if kind == "LSTM" and with_state
                                                  else [args[1].numpy()] if with_state else [])))
    got = run_ort(onnx.load_from_string(buffer.getvalue()), feeds)
    layer.to("numpy")
    assert_results(got, expected(layer, {"input": feeds["input"], **{k: v for k, v in feeds.items() if k != "input"}}))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_dynamo_export_reads_back_to_torchs_numbers(kind):
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    kw = dict(num_layers=2, bidirectional=True, batch_first=True) if kind == "LSTM" else dict(num_layers=2)
    torch, module, args, names, outputs = _torch_case(kind, kw, kind == "LSTM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, input_names=names, output_names=outputs,
                                    verbose=False)
    layer = convert.from_onnx_model(program.model_proto, xp="torch")
    _check_torch(torch, module, layer, args)


@pytest.mark.parametrize("name, cls, config", [
    ("torch_dynamo_lstm.onnx", LSTM, dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("torch_dynamo_gru.onnx", GRU, dict(num_layers=2, bidirectional=False, batch_first=False,
                                         linear_before_reset=True)),
])
def test_what_the_dynamo_exporter_wrote_reads_back(rng, name, cls, config):
    # torch 2.13 + onnxscript 0.7.2, torch.onnx.export(module, args, dynamo=True): LSTM and GRU
    # nodes (the GRU with linear_before_reset=1, torch's), Slice of the states' graph inputs,
    # Transpose + Reshape between layers, zeros as initializers for a missing state
    path = os.path.join(DATA, name)
    model = onnx.load(path)
    assert model.producer_name == "pytorch"
    layer = convert.from_onnx_model(path)
    assert type(layer) is cls
    assert {k: getattr(layer, k) for k in config} == config
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    feeds = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in inputs.items()}
    assert_results(run_ort(model, feeds), expected(layer, feeds))


# -- initial states in the nodes' own layout (layout=1) -------------------------------


def _batch_major_state_model(op, layers, dirs, layout, *, sliced):
    """``layers`` nodes of ``op`` (float64, layout ``layout``) whose initial states are graph inputs
    ``[B, layers * dirs, H]`` (each node's rows sliced on axis 1) or, for one layer unsliced,
    ``[B, dirs, H]`` read as they are."""
    G = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    rng = np.random.default_rng(7)
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    nodes, inits, x = [], [], "X"
    for k in range(layers):
        D_k = D if k == 0 else dirs * H
        w = {f"W{k}": rng.uniform(-0.5, 0.5, (dirs, G * H, D_k)),
             f"R{k}": rng.uniform(-0.5, 0.5, (dirs, G * H, H)),
             f"B{k}": rng.uniform(-0.5, 0.5, (dirs, 2 * G * H))}
        inits += [numpy_helper.from_array(v, n) for n, v in w.items()]
        inputs = [x, f"W{k}", f"R{k}", f"B{k}", ""]
        for s in states:
            if sliced:
                ends = [numpy_helper.from_array(np.array([v]), f"{s}_{n}{k}")
                        for n, v in (("start", k * dirs), ("end", (k + 1) * dirs), ("axis", 1))]
                inits += ends
                nodes.append(helper.make_node("Slice", [s] + [t.name for t in ends], [f"{s}_{k}"]))
                inputs.append(f"{s}_{k}")
            else:
                inputs.append(s)
        outputs = [f"Y{k}", f"Y_h{k}", f"Y_c{k}"][:len(states) + 1]
        direction = "bidirectional" if dirs == 2 else "forward"
        attrs = {"linear_before_reset": 1} if op == "GRU" else {}
        nodes.append(helper.make_node(op, inputs, outputs, hidden_size=H, direction=direction,
                                      layout=layout, **attrs))
        x = f"X{k + 1}"
        merge = numpy_helper.from_array(np.array([0, 0, -1]), f"merge{k}")
        inits.append(merge)
        nodes.append(helper.make_node("Reshape", [f"Y{k}", merge.name], [x]))  # [B, T, dirs * H]
    rows = [B, layers * dirs, H]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [B, T, D])]
    graph_inputs += [helper.make_tensor_value_info(s, TensorProto.DOUBLE, rows) for s in states]
    graph = helper.make_graph(nodes, "batch_major", graph_inputs,
                              [helper.make_tensor_value_info(x, TensorProto.DOUBLE, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("layers, dirs, sliced", [(1, 2, False), (2, 2, True), (2, 1, True)])
def test_layout_1_initial_states_in_the_nodes_own_layout(rng, op, layers, dirs, sliced):
    # The layer's h0 is [L * dirs, B, H]; the model's graph input is [B, L * dirs, H]: the
    # layer takes it with its first two axes swapped (docs/onnx.md)
    from onnx.reference import ReferenceEvaluator

    model = _batch_major_state_model(op, layers, dirs, 1, sliced=sliced)
    layer = convert.from_onnx_model(model)
    assert type(layer).__name__ == op and layer.batch_first and layer.num_layers == layers
    x = rng.standard_normal((B, T, D))
    states = {s: rng.standard_normal((B, layers * dirs, H)) for s in (["h0", "c0"] if op == "LSTM" else ["h0"])}
    (Y,) = ReferenceEvaluator(model).run(None, {"X": x, **states})
    swapped = [np.swapaxes(s, 0, 1) for s in states.values()]
    output = layer(x, tuple(swapped) if op == "LSTM" else swapped[0])[0]
    np.testing.assert_allclose(output, Y, rtol=1e-12, atol=1e-13)


def test_a_slice_of_another_axis_is_refused():
    model = _batch_major_state_model("LSTM", 2, 2, 1, sliced=True)
    axis = next(t for t in model.graph.initializer if t.name == "c0_axis1")
    axis.CopyFrom(numpy_helper.from_array(np.array([2]), "c0_axis1"))
    with pytest.raises(ValueError, match=r"initial_c of node #\d+ \(LSTM\): node #\d+ \(Slice\) slices "
                                         r"axis 2 \(step 1\), not the layers' axis of the graph input "
                                         r"'c0', read as \[L\*dirs, B, H\] or \[B, L\*dirs, H\]"):
        convert.from_onnx_model(model)
