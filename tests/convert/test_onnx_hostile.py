"""ONNX model files as untrusted input: hostile models get a clear error, never a hang or a crash.

Every model here is written with ``onnx.helper`` (not by rnn_xp), as a model
hub could hand it out, and ``convert.from_onnx_model`` must refuse it with a
``ValueError`` (or ``TypeError``) naming the node, tensor or attribute:

- cycles (an ``Identity`` feeding ``X`` from its own output; cycles through
  ``Cast``/``Identity`` on ``sequence_lens`` and ``initial_h``), run in a
  child process with a time and memory limit, since they looped forever;
- 400 RNN nodes sharing one 512 x 512 initializer: decoded once, no weights
  drawn, the peak memory about the layer's own size (a child process);
- external data: a ``ConstantOfShape`` value read like every other tensor
  (from the model's folder, never from the current one), reads bounded by
  the tensor's declared size, hostile offsets and lengths; files over
  protobuf's 2 GiB refused before they are read;
- graph outputs: the layer must compute what the graph returns;
- attribute types, unknown attributes and opsets (the RNN operator exists
  at opsets 7, 14 and 22);
- crashes: integer or string weights, bfloat16 models, nodes without their
  inputs or outputs, list-valued attributes, ``clip=nan``, dims that
  disagree with the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

import rnn_xp
from rnn_xp import RNN, convert

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

T, B, D, H = 4, 2, 3, 5
ROOT = os.path.dirname(os.path.dirname(rnn_xp.__file__))


def weights(dirs=1, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    draw = lambda *shape: rng.uniform(-0.5, 0.5, shape).astype(dtype)  # noqa: E731
    return {"W": draw(dirs, H, D), "R": draw(dirs, H, H), "B": draw(dirs, 2 * H)}


def bare_tensor(name, dims, **data):
    """A float32 TensorProto with ``data`` as given, unchecked (``helper.make_tensor`` checks)."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    for field, value in data.items():
        if field == "raw_data":
            tensor.raw_data = value
        else:
            getattr(tensor, field).extend(value)
    return tensor


def rnn_node(inputs=("X", "W", "R", "B"), outputs=("Y", "Y_h"), name="rnn", **attrs):
    attrs.setdefault("hidden_size", H)
    return helper.make_node("RNN", list(inputs), list(outputs), name=name, **attrs)


def model(nodes, inits=None, *, inputs=("X",), outputs=("Y", "Y_h"), opset=14):
    """A model of ``nodes``; ``inits`` maps names to arrays or TensorProtos (default: weights())."""
    inits = weights() if inits is None else inits
    tensors = [v if isinstance(v, TensorProto) else numpy_helper.from_array(v, k)
               for k, v in inits.items()]
    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], tensors)
    opsets = [] if opset is None else [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets)


def test_the_plain_model_reads_back():
    """The models below differ from this one only in what they do wrong."""
    w = weights()
    rnn = convert.from_onnx_model(model([rnn_node()], w))
    x = np.random.default_rng(1).standard_normal((T, B, D)).astype(np.float32)
    want = convert.from_onnx(w["W"], w["R"], w["B"])
    np.testing.assert_array_equal(rnn(x)[0], want(x)[0])


# -- cycles (item 4) ------------------------------------------------------------------


def _in_a_child(script, *args, timeout=60, memory=2 << 30):
    """Run ``script`` in a child Python with a time and an address-space limit; its stdout as JSON."""
    code = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
    """) + textwrap.dedent(script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    try:
        run = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                             text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no answer in {timeout} s (a loop that never ends?)")
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


_READ_EACH = """
    from rnn_xp import convert
    out = {}
    for path in sys.argv[1:]:
        try:
            convert.from_onnx_model(path)
            out[path] = "accepted"
        except Exception as exc:
            out[path] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))
"""


def test_cycles_are_refused_not_followed_forever(tmp_path):
    cycles = {
        "x": [helper.make_node("Identity", ["Xc"], ["Xc"], name="loop"), rnn_node(["Xc", "W", "R", "B"])],
        "seq": [helper.make_node("Cast", ["s2"], ["s"], name="cast", to=TensorProto.INT32),
                helper.make_node("Identity", ["s"], ["s2"], name="back"),
                rnn_node(["X", "W", "R", "B", "s"])],
        "h0": [helper.make_node("Identity", ["h"], ["h"], name="loop"),
               rnn_node(["X", "W", "R", "B", "", "h"])],
        "h0_cast": [helper.make_node("Cast", ["h2"], ["h"], name="cast", to=TensorProto.FLOAT),
                    helper.make_node("Identity", ["h"], ["h2"], name="back"),
                    rnn_node(["X", "W", "R", "B", "", "h"])],
    }
    paths = []
    for key, nodes in cycles.items():
        path = tmp_path / f"{key}.onnx"
        path.write_bytes(model(nodes).SerializeToString())
        paths.append(str(path))
    answers = _in_a_child(_READ_EACH, *paths)
    for path in paths:
        assert answers[path].startswith("ValueError: node "), answers[path]
        assert "not in the order it runs (ONNX requires it), or it holds a cycle" in answers[path]


# -- 400 nodes sharing one initializer (item 5) ---------------------------------------


def chain_model(layers, size, dtype=np.float32):
    """``layers`` RNN nodes whose W and R are all one ``[1, size, size]`` initializer."""
    w = np.random.default_rng(0).uniform(-0.1, 0.1, (1, size, size)).astype(dtype)
    nodes, x = [], "X"
    for k in range(layers):
        nodes.append(rnn_node([x, "w", "w"], [f"Y{k}", ""], name=f"rnn{k}", hidden_size=size))
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"X{k + 1}"], name=f"sq{k}"))
        x = f"X{k + 1}"
    return model(nodes, {"w": w, "axis1": np.array([1], np.int64)}, outputs=[x]), w


def test_shared_initializer_is_decoded_once_and_no_weights_are_drawn(counting):
    m, w = chain_model(400, 8)
    counting.update(draws=0, decoded=0)  # the model's own making drew and decoded
    rnn = convert.from_onnx_model(m)
    assert rnn.num_layers == 400
    assert counting["draws"] == 0
    assert counting["decoded"] == 2  # "w" once, the Squeezes' axes once: not 800 times
    for k in (0, 399):
        np.testing.assert_array_equal(rnn.params[f"weight_hh_l{k}"], w[0])
    assert rnn.params["weight_ih_l0"] is not rnn.params["weight_ih_l1"]  # each layer its own copy


def test_400_nodes_of_one_512_square_initializer_peak_near_the_layers_size(tmp_path):
    m, _ = chain_model(400, 512)
    path = tmp_path / "chain.onnx"
    path.write_bytes(m.SerializeToString())
    assert path.stat().st_size < 1.5e6  # a 1 MB file ...
    layer_bytes = 400 * 2 * 512 * 512 * 4  # ... for an 839 MB float32 layer
    got = _in_a_child("""
        from rnn_xp import convert
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rnn = convert.from_onnx_model(sys.argv[1])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"layers": rnn.num_layers, "grew": (after - before) * 1024}))
    """, path, timeout=300, memory=6 << 30)
    assert got["layers"] == 400
    # before: the nodes' weights decoded 800 times and a random float64 layer drawn first,
    # over 4 times the layer's size; now the layer and a few of its arrays in passing
    assert got["grew"] < 1.25 * layer_bytes, f"{got['grew'] / 1e9:.2f} GB"


def test_the_layers_size_is_checked_before_anything_is_decoded():
    huge = 1 << 20  # W and R of 2**40 values each: no machine holds them
    inits = {name: bare_tensor(name, dims) for name, dims in (("W", [1, huge, D]), ("R", [1, huge, huge]))}
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"the weights of the model's 1 RNN nodes need 4,398.1 GB, "
                                             r"more than this machine's .* GB of memory"):
            convert.from_onnx_model(model([rnn_node(["X", "W", "R"], hidden_size=huge)], inits))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


# -- external data (items 6 and 7) ----------------------------------------------------


def external(tensor, location, **entries):
    """``tensor`` with its data moved to the external ``location`` (its raw bytes returned too)."""
    raw = tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), *entries.items()):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor, raw


def constant_of_shape_model(location):
    """One node whose ``initial_h`` is ConstantOfShape with its value in an external file."""
    value, raw = external(numpy_helper.from_array(np.zeros(1, np.float32), "zero"), location)
    nodes = [helper.make_node("ConstantOfShape", ["h_shape"], ["h0"], name="zeros", value=value),
             rnn_node(["X", "W", "R", "B", "", "h0"])]
    return model(nodes, {**weights(), "h_shape": np.array([1, B, H], np.int64)}), raw


def test_constant_of_shape_value_is_read_only_from_the_models_folder(tmp_path, monkeypatch):
    folder, elsewhere = tmp_path / "model", tmp_path / "cwd"
    folder.mkdir()
    elsewhere.mkdir()
    m, raw = constant_of_shape_model("zero.bin")
    (elsewhere / "zero.bin").write_bytes(raw)  # in the current folder, not the model's
    monkeypatch.chdir(elsewhere)
    (folder / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(ValueError, match=r"value of node 'zeros' .*\('zero'\): the external file "
                                         r"'zero.bin' is missing from"):
        convert.from_onnx_model(folder / "m.onnx")
    with pytest.raises(ValueError, match="pass the model's path"):
        convert.from_onnx_model(m)
    (folder / "zero.bin").write_bytes(raw)  # where it belongs: read
    assert convert.from_onnx_model(folder / "m.onnx").hidden_size == H


def external_w_model(tmp_path, data=None, location="w.bin", **entries):
    w = weights()
    tensor, raw = external(numpy_helper.from_array(w["W"], "W"), location, **entries)
    (tmp_path / "w.bin").write_bytes(raw if data is None else data)
    path = tmp_path / "m.onnx"
    path.write_bytes(model([rnn_node()], {**w, "W": tensor}).SerializeToString())
    return path, w["W"], raw


def test_external_reads_stop_at_the_declared_size(tmp_path):
    w = weights()["W"]
    path, _, raw = external_w_model(tmp_path, data=w.tobytes() + b"\xff" * (8 << 20), offset="0")
    tracemalloc.start()
    try:
        rnn = convert.from_onnx_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(rnn.weight_ih_l0, w[0])
    assert peak < 2 << 20, f"{peak / 1e6:.1f} MB: the 8 MB after the tensor were read"


@pytest.mark.parametrize("entries, message", [
    ({"length": str(2**33)}, r"declares an external length of 8589934592 bytes; its dims \[1, 5, 3\] "
                             r"and type need 60"),
    ({"offset": "-1"}, r"has the external data offset '-1'; it must be a whole number of bytes"),
    ({"offset": "1e3"}, r"has the external data offset '1e3'"),
    ({"length": "abc"}, r"has the external data length 'abc'"),
    ({"length": " 60"}, r"has the external data length ' 60'"),
    ({"offset": "100"}, r"needs 60 bytes at offset 100 of the external file 'w.bin', which holds 60"),
    ({"location": "w.bin\x00../../etc/passwd"}, r"has the external data location .* which names no file"),
], ids=["length 2**33", "negative offset", "float offset", "word length", "spaced length",
        "offset past the end", "NUL in location"])
def test_hostile_external_entries_name_the_tensor(tmp_path, entries, message):
    location = entries.pop("location", "w.bin")
    path, _, _ = external_w_model(tmp_path, location=location, **entries)
    with pytest.raises(ValueError, match=r"^W of node 'rnn' \(#0, RNN\) \('W'\) " + message):
        convert.from_onnx_model(path)


def test_a_file_beyond_protobufs_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as fh:
        fh.truncate(2**31 + 16)  # sparse: no disk is used
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=r"holds 2147483664 bytes, more than protobuf's limit"):
            convert.from_onnx_model(path)
        with open(path, "rb") as fh, pytest.raises(ValueError, match="the file object holds 2147483664"):
            convert.from_onnx_model(fh)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20 and time.perf_counter() - start < 10
    path.write_bytes(b"\x0a\xff\xff")  # a truncated message: protobuf's error, named
    with pytest.raises(ValueError, match=r"the file .*huge.onnx' is not an ONNX model"):
        convert.from_onnx_model(path)


# -- graph outputs (item 8) -----------------------------------------------------------


def two_layer_nodes():
    """Two RNN nodes without bias, the second reading the first's Y; no graph output chosen yet."""
    return [rnn_node(["X", "W", "R"], ["Y1", "Yh1"], name="rnn1"),
            helper.make_node("Squeeze", ["Y1", "axis1"], ["X2"], name="merge"),
            rnn_node(["X2", "W2", "R2"], ["Y2", "Yh2"], name="rnn2")]


def two_layer_inits():
    w = weights()
    rng = np.random.default_rng(3)
    return {"W": w["W"], "R": w["R"], "W2": rng.uniform(-0.5, 0.5, (1, H, H)).astype(np.float32),
            "R2": w["R"], "axis1": np.array([1], np.int64)}


def test_an_rnn_node_that_reaches_no_output_is_not_a_layer():
    nodes, inits = two_layer_nodes(), two_layer_inits()
    with pytest.raises(ValueError, match=r"node 'rnn2' \(#2, RNN\) reaches no graph output "
                                         r"\(\['Y1', 'Yh1'\]\)"):
        convert.from_onnx_model(model(nodes, inits, outputs=["Y1", "Yh1"]))


@pytest.mark.parametrize("outputs, extra, message", [
    (["picked"], [helper.make_node("Gather", ["Y2", "zero"], ["picked"], name="pick")],
     r"graph output 'picked' passes through node 'pick' \(#\d, Gather\)"),
    (["Y1", "Y2"], [], r"graph output 'Y1' is the Y of node 'rnn1' \(#0, RNN\), layer 0 of 2"),
    (["Y2", "Yh2"], [], r"graph output 'Yh2' is the Y_h of node 'rnn2' .* alone, one of 2 layers"),
    (["h_n"], [helper.make_node("Concat", ["Yh2", "Yh1"], ["h_n"], name="cat", axis=0)],
     r"input 0 of node 'cat' .* is the Y_h of layer 1 .*; h_n needs layer 0's"),
    (["h_n"], [helper.make_node("Concat", ["Yh1", "Yh2"], ["h_n"], name="cat", axis=2)],
     r"node 'cat' .* concatenates on axis 2, not on the Y_h's directions' axis 0"),
], ids=["gather", "layer 0's Y", "one Y_h of two", "Y_h out of order", "Y_h on the wrong axis"])
def test_graph_outputs_must_be_what_the_layer_computes(outputs, extra, message):
    nodes, inits = two_layer_nodes(), {**two_layer_inits(), "zero": np.array(0, np.int64)}
    with pytest.raises(ValueError, match=message):
        convert.from_onnx_model(model(nodes + extra, inits, outputs=outputs))


@pytest.mark.parametrize("outputs", [["Y2"], ["h_n"], ["Y2", "h_n"], ["h_n", "Y2"]])
def test_either_output_or_both_are_read(outputs):
    nodes = two_layer_nodes() + [helper.make_node("Concat", ["Yh1", "Yh2"], ["h_n"], name="cat", axis=0)]
    rnn = convert.from_onnx_model(model(nodes, two_layer_inits(), outputs=outputs))
    assert rnn.num_layers == 2 and not rnn.bias


# -- attributes and opsets (item 9) ---------------------------------------------------


@pytest.mark.parametrize("attrs, opset, message", [
    ({"hidden_size": 4.7}, 14, r"attribute 'hidden_size' of node 'rnn' \(#0, RNN\) \(RNN at opset 14, "
                               r"version 14\) is FLOAT; the operator takes INT"),
    ({"clip": "1.5"}, 14, r"attribute 'clip' .* is STRING; the operator takes FLOAT"),
    ({"layout": 2}, 14, r"node 'rnn' \(#0, RNN\) has layout=2; it must be 0 or 1"),
    ({"layout": -1}, 14, r"has layout=-1; it must be 0 or 1"),
    ({"layout": 1.0}, 14, r"attribute 'layout' .* is FLOAT; the operator takes INT"),
    ({"layout": "1"}, 14, r"attribute 'layout' .* is STRING; the operator takes INT"),
    ({"directon": "reverse"}, 14, r"has the attribute 'directon', which the operator does not have; "
                                  r"its attributes are \['activation_alpha', .*'direction'"),
    ({"layout": 1}, 7, r"\(RNN at opset 7, version 7\) has the attribute 'layout', which the operator "
                       r"does not have"),
    ({"hidden_size": [H]}, 14, r"attribute 'hidden_size' .* is INTS; the operator takes INT"),
    ({"direction": ["forward"]}, 14, r"attribute 'direction' .* is STRINGS; the operator takes STRING"),
    ({"activations": "Tanh"}, 14, r"attribute 'activations' .* is STRING; the operator takes STRINGS"),
    ({"clip": float("nan")}, 14, r"node 'rnn' \(#0, RNN\): clip must be a positive number .* got nan"),
    ({"hidden_size": 0}, 14, r"node 'rnn' \(#0, RNN\) has hidden_size=0; it must be positive"),
], ids=["hidden_size 4.7", "clip '1.5'", "layout 2", "layout -1", "layout 1.0", "layout '1'",
        "typo directon", "layout at opset 7", "hidden_size [5]", "direction list",
        "activations string", "clip nan", "hidden_size 0"])
def test_attributes_are_checked_against_the_operator(attrs, opset, message):
    with pytest.raises(ValueError, match=message):
        convert.from_onnx_model(model([rnn_node(**attrs)], opset=opset))


@pytest.mark.parametrize("opset, message", [
    (1, r"the model's ai.onnx opset is 1; rnn_xp reads ai.onnx opsets 7 to \d+ \(the RNN operator's "
        r"versions 7, 14 and 22; opsets before 7 had another RNN\)"),
    (6, r"the model's ai.onnx opset is 6; rnn_xp reads ai.onnx opsets 7 to"),
    (99, r"the model's ai.onnx opset is 99; rnn_xp reads ai.onnx opsets 7 to"),
    (None, r"the model must import the ai.onnx opset once; it imports none"),
])
def test_opsets_outside_the_operators_versions_are_refused(opset, message):
    with pytest.raises(ValueError, match=message):
        convert.from_onnx_model(model([rnn_node()], opset=opset))


@pytest.mark.parametrize("opset", [7, 13, 14, 21, 22, "newest"])
def test_every_opset_of_the_operator_reads(opset):
    opset = onnx.defs.onnx_opset_version() if opset == "newest" else opset
    layout = {"layout": 0} if opset >= 14 else {}
    rnn = convert.from_onnx_model(model([rnn_node(**layout)], opset=opset))
    assert rnn.hidden_size == H


# -- crashes and unclear errors (item 10) ---------------------------------------------


@pytest.mark.parametrize("tensor, message", [
    (numpy_helper.from_array(np.ones((1, H, D), np.int32), "W"), r"holds INT32 values; it must hold one "
                                                                 r"of float16, bfloat16, float32, float64"),
    (helper.make_tensor("W", TensorProto.STRING, [1, H, D], [b"x"] * (H * D)), r"holds STRING values"),
    (bare_tensor("W", [1, H, D], raw_data=np.zeros(H * D - 1, np.float32).tobytes()),
     r"has dims \[1, 5, 3\], which need 60 bytes; its data holds 56"),
    (bare_tensor("W", [1, H, D], float_data=[0.0] * (H * D + 2)),
     r"has dims \[1, 5, 3\], which need 15 values; its data holds 17"),
], ids=["int32", "string", "raw data short", "float_data long"])
def test_weights_that_are_not_float_or_disagree_with_their_dims(tensor, message):
    inits = {**weights(), "W": tensor}
    with pytest.raises(ValueError, match=r"^W of node 'rnn' \(#0, RNN\) \('W'\) " + message):
        convert.from_onnx_model(model([rnn_node()], inits))


def bfloat16_model():
    w = weights(dtype=np.float32)
    tensors = {k: helper.make_tensor(k, TensorProto.BFLOAT16, v.shape, v.ravel().tolist())
               for k, v in w.items()}
    exact = {k: numpy_helper.to_array(t).astype(np.float32) for k, t in tensors.items()}
    return model([rnn_node()], tensors, opset=22), exact


def test_a_bfloat16_model_is_kept_in_bfloat16_where_the_library_has_it():
    torch = pytest.importorskip("torch")
    m, exact = bfloat16_model()
    rnn = convert.from_onnx_model(m, xp="torch")
    assert rnn.dtype == torch.bfloat16
    np.testing.assert_array_equal(rnn.weight_hh_l0.float().numpy(), exact["R"][0])
    as32 = convert.from_onnx_model(m, dtype="float32")  # NumPy: every bfloat16 value exactly
    np.testing.assert_array_equal(as32.bias_hh_l0, exact["B"][0, H:])
    with pytest.raises(TypeError, match=r"bfloat16 is not available in numpy.*dtype='float32'"):
        convert.from_onnx_model(m)


def test_a_bfloat16_model_on_jax():
    jnp = pytest.importorskip("jax.numpy")
    m, exact = bfloat16_model()
    rnn = convert.from_onnx_model(m, xp="jax")
    assert rnn.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(rnn.weight_ih_l0, np.float32), exact["W"][0])


@pytest.mark.parametrize("nodes, message", [
    ([helper.make_node("Constant", [], [], name="nothing", value_float=0.0), rnn_node()],
     r"node 'nothing' \(#0, Constant\) \(Constant at opset 14, version \d+\) has 0 outputs; the "
     r"operator has 1 to 1"),
    ([helper.make_node("Transpose", [], ["Xt"], name="empty"), rnn_node(["Xt", "W", "R", "B"])],
     r"node 'empty' \(#0, Transpose\) .* lacks its input data"),
    ([rnn_node(["X", "W", ""])], r"node 'rnn' \(#0, RNN\) .* lacks its input R"),
    ([helper.make_node("Transpose", ["X"], ["Xt"], name="bad", perm=[0, 0, 1]),
      rnn_node(["Xt", "W", "R", "B"])], r"X of node 'rnn' .*: node 'bad' .* has perm=\[0, 0, 1\], "
                                        r"which is not an order of the 3 axes"),
    ([helper.make_node("Transpose", ["X"], ["Xt"], name="bad", perm=[0, 5, 1]),
      rnn_node(["Xt", "W", "R", "B"])], r"has perm=\[0, 5, 1\], which is not an order"),
    ([rnn_node(), helper.make_node("Constant", [], ["c"], name="two", value_float=0.0,
                                   value_int=1)], r"node 'two' .* must hold one value"),
], ids=["Constant without output", "Transpose without input", "RNN without R", "perm repeats",
        "perm out of range", "Constant with two values"])
def test_nodes_without_their_inputs_or_outputs(nodes, message):
    with pytest.raises(ValueError, match=message):
        convert.from_onnx_model(model(nodes))


def test_a_constant_read_as_an_index_must_be_an_integer():
    nodes = [rnn_node(), helper.make_node("Squeeze", ["Y", "axes"], ["out"], name="sq")]
    with pytest.raises(ValueError, match=r"axes of node 'sq' .*\('axes'\) holds FLOAT values; it must "
                                         r"hold one of int32, int64"):
        convert.from_onnx_model(model(nodes, {**weights(), "axes": np.array([1.0], np.float32)},
                                      outputs=["out"]))
