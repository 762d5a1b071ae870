"""ONNX model files: ``convert.to_onnx_model`` and ``convert.from_onnx_model``.

``RNN -> to_onnx_model -> onnxruntime`` (and ``onnx.reference`` for float64
and ``layout=1``) must give the layer's ``output`` and ``h_n``;
``torch.nn.RNN -> torch.onnx.export -> from_onnx_model`` must give torch's.
Graphs that are not RNN nodes with stored weights are refused with the
node named, and external data is read only from inside the model's folder.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from support import to_numpy

from rnn_xp import RNN, convert

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

T, B, D, H = 5, 3, 3, 4


def run_ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString()).run(None, feeds)


def feeds_for(rnn, rng, dtype, *, h0=False, lengths=False):
    shape = (B, T, D) if rnn.batch_first else (T, B, D)
    feeds = {"input": rng.standard_normal(shape).astype(dtype)}
    if h0:
        feeds["h0"] = rng.standard_normal((rnn.num_layers * rnn.num_directions, B, H)).astype(dtype)
    if lengths:
        feeds["lengths"] = np.array([T, 2, 1], dtype=np.int32)
    return feeds


def expected(rnn, feeds):
    return rnn(feeds["input"], feeds.get("h0"), lengths=feeds.get("lengths"))


LAYERS = [
    dict(),
    dict(num_layers=3, bidirectional=True),
    dict(num_layers=2, batch_first=True, bidirectional=True, nonlinearity="relu"),
    dict(reverse=True, nonlinearity="elu", clip=0.8, bias=False),
    dict(num_layers=2, bidirectional=True, nonlinearity=("softsign", "hard_sigmoid"),
         activation_beta=(None, 0.25)),
]


@pytest.mark.parametrize("kw", LAYERS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_to_onnx_model_runs_on_onnxruntime_to_the_same_numbers(rng, kw):
    rnn = RNN(D, H, seed=1, **kw)
    for opset, h0, lengths in ((14, False, False), (11, True, True), (20, True, False)):
        model = convert.to_onnx_model(rnn, opset=opset, initial_state=h0, lengths=lengths)
        assert sum(n.op_type == "RNN" for n in model.graph.node) == rnn.num_layers
        feeds = feeds_for(rnn, rng, np.float32, h0=h0, lengths=lengths)
        output, h_n = run_ort(model, feeds)
        want_out, want_hn = expected(rnn, feeds)
        np.testing.assert_allclose(output, want_out, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h_n, want_hn, rtol=1e-5, atol=1e-6)
        # and back: the very same layer
        again = convert.from_onnx_model(model)
        assert (again.num_layers, again.bidirectional, again.batch_first, again.reverse) == (
            rnn.num_layers, rnn.bidirectional, rnn.batch_first, rnn.reverse)
        approx = lambda v: None if v is None else pytest.approx(v)  # attributes are float32  # noqa: E731
        assert again.activations == tuple((n, approx(a), approx(b)) for n, a, b in rnn.activations)
        for name, p in rnn.params.items():
            np.testing.assert_array_equal(again.params[name], p)


@pytest.mark.parametrize("layout", [0, 1])
def test_float64_and_layout_1_on_onnx_reference(rng, layout):
    from onnx.reference import ReferenceEvaluator

    rnn = RNN(D, H, num_layers=2, bidirectional=True, batch_first=True, dtype="float64", seed=2)
    model = convert.to_onnx_model(rnn, initial_state=True, layout=layout)
    rnn_nodes = [n for n in model.graph.node if n.op_type == "RNN"]
    assert all(dict((a.name, a.i) for a in n.attribute if a.name == "layout").get("layout", 0)
               == layout for n in rnn_nodes)
    feeds = feeds_for(rnn, rng, np.float64, h0=True)
    output, h_n = ReferenceEvaluator(model).run(None, feeds)
    want_out, want_hn = expected(rnn, feeds)
    np.testing.assert_allclose(output, want_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n, want_hn, rtol=1e-12, atol=1e-13)
    again = convert.from_onnx_model(model, xp="torch")
    np.testing.assert_allclose(to_numpy(again(*(again.xp.asarray(v) for v in feeds.values()))[0]),
                               want_out, rtol=1e-12, atol=1e-13)


def test_writes_to_a_path_and_a_file_object(tmp_path, rng):
    rnn = RNN(D, H, seed=0)
    path = tmp_path / "rnn.onnx"
    model = convert.to_onnx_model(rnn, path)
    buffer = io.BytesIO()
    convert.to_onnx_model(rnn, buffer)
    assert path.read_bytes() == buffer.getvalue() == model.SerializeToString()
    for source in (path, str(path), buffer.getvalue(), io.BytesIO(buffer.getvalue())):
        again = convert.from_onnx_model(source)
        np.testing.assert_array_equal(again.weight_hh_l0, rnn.weight_hh_l0)


TORCH_CASES = [
    dict(),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=3, nonlinearity="relu", bias=False),
]


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("kw", TORCH_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_torch_onnx_export_reads_back_to_torchs_numbers(kw, with_h0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.RNN(D, H, **kw)
    x = torch.randn((B, T, D) if kw.get("batch_first") else (T, B, D))
    h0 = torch.randn(module.num_layers * (2 if module.bidirectional else 1), B, H)
    args = (x, h0) if with_h0 else (x,)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and batch-size notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False,
                          input_names=["input", "h0"][: len(args)], output_names=["output", "h_n"])
    rnn = convert.from_onnx_model(buffer.getvalue(), xp="torch")
    assert (rnn.num_layers, rnn.bidirectional, rnn.batch_first, rnn.nonlinearity, rnn.bias) == (
        module.num_layers, module.bidirectional, module.batch_first, module.nonlinearity, module.bias)
    with torch.no_grad():
        want_out, want_hn = module(*args)
    out, h_n = rnn(*args)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_n, want_hn, rtol=1e-5, atol=1e-6)
    for name, t in module.state_dict().items():
        assert torch.equal(rnn.params[name], t), name


# -- refusals ---------------------------------------------------------------------------


def _edit(model, fn):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    fn(model.graph)
    return model


def test_refuses_graphs_that_are_not_rnn_nodes():
    model = convert.to_onnx_model(RNN(D, H, num_layers=2, seed=0), initial_state=True)

    def add_a_tanh(graph):  # a computation between the two layers
        i = next(j for j, n in enumerate(graph.node) if n.name == "output_l0")
        graph.node.insert(i + 1, helper.make_node("Tanh", ["output_l0"], ["squashed"], name="squash"))
        rnn1 = next(n for n in graph.node if n.op_type == "RNN" and n.name == "Y_l1")
        rnn1.input[0] = "squashed"

    with pytest.raises(ValueError, match=r"node 'squash' \(#\d+, Tanh\) is Tanh: from_onnx_model reads graphs of RNN nodes"):
        convert.from_onnx_model(_edit(model, add_a_tanh))

    def weights_as_inputs(graph):
        init = next(t for t in graph.initializer if t.name == "R_l1")
        graph.initializer.remove(init)
        graph.input.append(helper.make_tensor_value_info("R_l1", TensorProto.FLOAT, [1, H, H]))

    with pytest.raises(ValueError, match=r"R of node 'Y_l1' \(#\d+, RNN\) \('R_l1'\) is not an initializer or a Constant"):
        convert.from_onnx_model(_edit(model, weights_as_inputs))

    def skip_layer_0(graph):
        next(n for n in graph.node if n.name == "Y_l1").input[0] = "input"

    with pytest.raises(ValueError, match=r"X of node 'Y_l1' .* comes from 'input'"):
        convert.from_onnx_model(_edit(model, skip_layer_0))

    def disagree(graph):
        rnn1 = next(n for n in graph.node if n.name == "Y_l1")
        rnn1.attribute.append(helper.make_attribute("clip", 2.0))

    with pytest.raises(ValueError, match=r"node 'Y_l1' .* has clip=2.0 but the first RNN node has None"):
        convert.from_onnx_model(_edit(model, disagree))

    def wrong_rows(graph):
        start = next(t for t in graph.initializer if t.name == "h0_start_l1")
        start.CopyFrom(numpy_helper.from_array(np.array([0]), "h0_start_l1"))

    with pytest.raises(ValueError, match=r"initial_h of node 'Y_l1' .* takes rows 0:2 .*; layer 1 needs rows 1:2"):
        convert.from_onnx_model(_edit(model, wrong_rows))

    def no_rnn(graph):
        del graph.node[:]

    with pytest.raises(ValueError, match="the graph has no RNN node"):
        convert.from_onnx_model(_edit(model, no_rnn))
    with pytest.raises(TypeError, match="model_or_path must be an onnx.ModelProto"):
        convert.from_onnx_model(42)


def test_refuses_a_nonzero_constant_initial_state():
    model = convert.to_onnx_model(RNN(D, H, seed=0))

    def constant_h0(graph):
        graph.initializer.append(numpy_helper.from_array(np.ones((1, 1, H), np.float32), "h0_const"))
        rnn = next(n for n in graph.node if n.op_type == "RNN")
        while len(rnn.input) < 6:
            rnn.input.append("")
        rnn.input[5] = "h0_const"

    with pytest.raises(ValueError, match=r"initial_h of node 'Y_l0' .* is a constant that is not zero"):
        convert.from_onnx_model(_edit(model, constant_h0))


def _external(model, tmp_path, location):
    """The model with its W_l0 stored in the external file ``location`` (relative to tmp_path)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    tensor = next(t for t in model.graph.initializer if t.name == "W_l0")
    data = numpy_helper.to_array(tensor).tobytes()
    target = os.path.normpath(os.path.join(tmp_path, location))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as fh:
        fh.write(data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


def test_external_data_only_from_inside_the_models_folder(tmp_path):
    rnn = RNN(D, H, seed=0)
    folder = tmp_path / "model"
    folder.mkdir()
    inside = _external(convert.to_onnx_model(rnn), folder, "weights/W_l0.bin")
    onnx.save(inside, folder / "rnn.onnx")
    again = convert.from_onnx_model(folder / "rnn.onnx")
    np.testing.assert_array_equal(again.weight_ih_l0, rnn.weight_ih_l0)

    for location in ("../secret.bin", str(tmp_path / "secret.bin")):
        outside = _external(convert.to_onnx_model(rnn), folder, location)
        onnx.save(outside, folder / "escape.onnx")
        with pytest.raises(ValueError, match="outside the model's folder"):
            convert.from_onnx_model(folder / "escape.onnx")
    # a link inside the folder that points out of it is outside too
    (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    onnx.save(_external(convert.to_onnx_model(rnn), folder, "link.bin"), folder / "link.onnx")
    with pytest.raises(ValueError, match="outside the model's folder"):
        convert.from_onnx_model(folder / "link.onnx")
    # no folder to read from: a ModelProto with external data
    with pytest.raises(ValueError, match="pass the model's path"):
        convert.from_onnx_model(inside)


def test_to_onnx_model_errors():
    with pytest.raises(ValueError, match="the ONNX RNN operator has no leak"):
        convert.to_onnx_model(RNN(D, H, leak=0.5))
    with pytest.raises(ValueError, match="opset must be an int from 7 to"):
        convert.to_onnx_model(RNN(D, H), opset=6)
    with pytest.raises(ValueError, match="layout=1 needs a batch_first layer and opset 14"):
        convert.to_onnx_model(RNN(D, H), layout=1)
    with pytest.raises(TypeError, match="initial_state must be True or False"):
        convert.to_onnx_model(RNN(D, H), initial_state="yes")
