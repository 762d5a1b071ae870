"""The whole ONNX RNN operator, against onnxruntime and onnx.reference.

Single ``RNN`` nodes are written here with ``onnx.helper`` (not by rnn_xp),
run by onnxruntime (float32, ``layout=0``: the only layout its CPU kernel
runs) for every activation and direction, with and without
``sequence_lens``, ``initial_h`` and ``clip``, a different activation per
direction in bidirectional nodes, and by ``onnx.reference`` (float64,
``layout`` 0 and 1; it knows Tanh and Affine only). ``convert.from_onnx``
must build a layer that gives the node's ``Y`` and ``Y_h``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close, to_numpy

from rnn_xp import convert
from rnn_xp._activations import NONLINEARITIES, ONNX_NAMES, PARAMETERS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

T, B, D, H = 5, 3, 3, 4
LENGTHS = np.array([5, 2, 1], dtype=np.int32)  # onnxruntime wants lengths in [1, T]
PARAMS = {"affine": (0.7, -0.2), "leaky_relu": (0.3, None), "thresholded_relu": (0.1, None),
          "scaled_tanh": (1.5, 0.8), "hard_sigmoid": (0.3, 0.45), "elu": (0.8, None)}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def node_model(dirs, attrs, *, bias=True, seq=False, h0=False, layout=0, elem=TensorProto.FLOAT,
               weights):
    """A model of one RNN node with initializer weights; inputs X (and sequence_lens, initial_h)."""
    W, R, Bias = weights
    inputs = ["X", "W", "R", "B" if bias else "", "sequence_lens" if seq else "",
              "initial_h" if h0 else ""]
    while inputs[-1] == "":
        inputs.pop()
    x_shape = [B, T, D] if layout else [T, B, D]
    graph_inputs = [helper.make_tensor_value_info("X", elem, x_shape)]
    if seq:
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
    if h0:
        graph_inputs.append(helper.make_tensor_value_info(
            "initial_h", elem, [B, dirs, H] if layout else [dirs, B, H]))
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    if bias:
        inits.append(numpy_helper.from_array(Bias, "B"))
    node = helper.make_node("RNN", inputs, ["Y", "Y_h"], hidden_size=H, **attrs)
    graph = helper.make_graph([node], "rnn", graph_inputs,
                              [helper.make_tensor_value_info("Y", elem, [None] * 4),
                               helper.make_tensor_value_info("Y_h", elem, [None] * 3)], inits)
    opsets = [helper.make_opsetid("", 14)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


def weights(rng, dirs, dtype, scale=0.8):
    W = rng.uniform(-scale, scale, (dirs, H, D)).astype(dtype)
    R = rng.uniform(-scale, scale, (dirs, H, H)).astype(dtype)
    Bias = rng.uniform(-0.5, 0.5, (dirs, 2 * H)).astype(dtype)
    return W, R, Bias


def attributes(direction, names, clip):
    """The node's attributes, alpha/beta consumed in order by the activations that take them."""
    attrs = {"direction": direction, "activations": [ONNX_NAMES[n] for n in names]}
    alphas = [PARAMS.get(n, (None, None))[0] for n in names if PARAMETERS[n][0] is not None]
    betas = [PARAMS.get(n, (None, None))[1] for n in names if PARAMETERS[n][1] is not None]
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if clip is not None:
        attrs["clip"] = clip
    return attrs


def from_attributes(weights_, attrs, *, bias=True, layout=0, **kw):
    W, R, Bias = weights_
    return convert.from_onnx(W, R, Bias if bias else None, direction=attrs["direction"],
                             activations=attrs["activations"],
                             activation_alpha=attrs.get("activation_alpha"),
                             activation_beta=attrs.get("activation_beta"), clip=attrs.get("clip"),
                             layout=layout, **kw)


OPTIONS = [
    dict(),
    dict(seq=True, h0=True),
    dict(clip=0.6, bias=False),
    dict(seq=True, h0=True, clip=0.9),
]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", NONLINEARITIES)
def test_every_activation_and_direction_matches_onnxruntime(rng, name, direction):
    dirs = DIRECTIONS[direction]
    # bidirectional: a different activation for the reverse direction
    names = [name] if dirs == 1 else [name, NONLINEARITIES[(NONLINEARITIES.index(name) + 3) % 11]]
    for opts in OPTIONS:
        w = weights(rng, dirs, np.float32)
        attrs = attributes(direction, names, opts.get("clip"))
        model = node_model(dirs, attrs, bias=opts.get("bias", True), seq=opts.get("seq", False),
                           h0=opts.get("h0", False), weights=w)
        x = rng.standard_normal((T, B, D)).astype(np.float32)
        feeds = {"X": x}
        h0 = rng.standard_normal((dirs, B, H)).astype(np.float32) if opts.get("h0") else None
        lengths = LENGTHS if opts.get("seq") else None
        if h0 is not None:
            feeds["initial_h"] = h0
        if lengths is not None:
            feeds["sequence_lens"] = lengths
        Y, Y_h = ort.InferenceSession(model.SerializeToString()).run(None, feeds)

        rnn = from_attributes(w, attrs, bias=opts.get("bias", True))
        assert rnn.activations == tuple(
            (n, *(p if p is not None else d for p, d in zip(PARAMS.get(n, (None, None)), PARAMETERS[n])))
            for n in names)  # fmt: skip
        out, h_n = rnn(x, h0, lengths=lengths)
        np.testing.assert_allclose(out, convert.onnx_y_to_output(Y), rtol=1e-5, atol=1e-6,
                                   err_msg=f"{names} {opts}")
        np.testing.assert_allclose(h_n, Y_h, rtol=1e-5, atol=1e-6, err_msg=f"{names} {opts}")
        assert convert.onnx_attributes(rnn) == {**attrs, "hidden_size": H, "layout": 0,
                                                **_padded(attrs, dirs)}


def _padded(attrs, dirs):
    """onnx_attributes pads alpha and beta with zeros to one entry per direction."""
    out = {}
    for key in ("activation_alpha", "activation_beta"):
        if key in attrs:
            out[key] = list(attrs[key]) + [0.0] * (dirs - len(attrs[key]))
    return out


def test_a_bidirectional_node_on_every_backend(backend, rng):
    names = ["hard_sigmoid", "elu"]
    w = weights(rng, 2, np.float32)
    attrs = attributes("bidirectional", names, 0.8)
    model = node_model(2, attrs, seq=True, h0=True, weights=w)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    h0 = rng.standard_normal((2, B, H)).astype(np.float32)
    Y, Y_h = ort.InferenceSession(model.SerializeToString()).run(
        None, {"X": x, "initial_h": h0, "sequence_lens": LENGTHS})
    rnn = from_attributes(w, attrs, xp=backend.xp, device=backend.device)
    out, h_n = rnn(backend.asarray(x), backend.asarray(h0), lengths=LENGTHS)
    assert_close(out, convert.onnx_y_to_output(Y), backend, "float32", rtol=1e-5, atol=1e-6)
    assert_close(h_n, Y_h, backend, "float32", rtol=1e-5, atol=1e-6)
    assert_close(convert.output_to_onnx_y(out, 2), Y, backend, "float32", rtol=1e-5, atol=1e-6)


def test_defaults_when_the_attributes_are_absent(rng):
    # ONNX's defaults (LeakyRelu 0.01, HardSigmoid 0.2/0.5, ...) fill the gaps; onnxruntime
    # needs them written, so the model gets them and the converter gets none.
    for name in ("leaky_relu", "hard_sigmoid", "elu", "thresholded_relu"):
        w = weights(rng, 1, np.float32)
        written = {"direction": "forward", "activations": [ONNX_NAMES[name]]}
        defaults = [v for v in PARAMETERS[name] if v is not None]
        written["activation_alpha"] = defaults[:1]
        if len(defaults) > 1:
            written["activation_beta"] = defaults[1:]
        x = rng.standard_normal((T, B, D)).astype(np.float32)
        Y, _ = ort.InferenceSession(node_model(1, written, weights=w).SerializeToString()).run(
            None, {"X": x})
        rnn = convert.from_onnx(*w, activations=[ONNX_NAMES[name]])  # no alpha, no beta
        np.testing.assert_allclose(rnn(x)[0], Y[:, 0], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", ["tanh", "affine"])
def test_onnx_reference_with_both_layouts(rng, name, direction, layout):
    from onnx.reference import ReferenceEvaluator

    dirs = DIRECTIONS[direction]
    w = weights(rng, dirs, np.float64)
    attrs = attributes(direction, [name] * dirs, None)
    if name == "affine":  # onnx.reference reads one value per direction
        attrs["activation_alpha"], attrs["activation_beta"] = [0.75] * dirs, [-0.25] * dirs  # exact in float32, as attributes are
    model = node_model(dirs, {**attrs, "layout": layout}, h0=True, layout=layout,
                       elem=TensorProto.DOUBLE, weights=w)
    x = rng.standard_normal((B, T, D) if layout else (T, B, D))
    h0 = rng.standard_normal((dirs, B, H))
    h0_node = np.swapaxes(h0, 0, 1) if layout else h0  # [B, dirs, H] with layout 1
    Y, Y_h = ReferenceEvaluator(model).run(None, {"X": x, "initial_h": h0_node})
    rnn = from_attributes(w, attrs, layout=layout)
    assert rnn.batch_first == bool(layout) and rnn.reverse == (direction == "reverse")
    out, h_n = rnn(x, h0)
    if layout:  # Y [B, T, dirs, H], Y_h [B, dirs, H]
        Y, Y_h = np.transpose(Y, (1, 2, 0, 3)), np.swapaxes(Y_h, 0, 1)
        out = np.swapaxes(out, 0, 1)
    np.testing.assert_allclose(out, convert.onnx_y_to_output(Y), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-12, atol=1e-13)


def test_alpha_and_beta_lists_are_read_in_onnxruntimes_order(rng):
    # [Tanh, LeakyRelu] with activation_alpha=[0.3]: the LeakyRelu takes 0.3; with one value
    # per direction, [0.3, 0.0], the trailing value goes unused (onnxruntime does the same).
    w = weights(rng, 2, np.float32)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    for alpha in ([0.3], [0.3, 0.0]):
        attrs = {"direction": "bidirectional", "activations": ["Tanh", "LeakyRelu"],
                 "activation_alpha": alpha}
        Y, _ = ort.InferenceSession(node_model(2, attrs, weights=w).SerializeToString()).run(
            None, {"X": x})
        rnn = from_attributes(w, attrs)
        assert rnn.activations[1] == ("leaky_relu", pytest.approx(0.3), None)
        np.testing.assert_allclose(rnn(x)[0], convert.onnx_y_to_output(Y), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="activation_alpha has 3 values"):
        from_attributes(w, {"direction": "bidirectional", "activations": ["Tanh", "LeakyRelu"],
                            "activation_alpha": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match=r"activations must be 2 name\(s\)"):
        from_attributes(w, {"direction": "bidirectional", "activations": ["Tanh"]})


def test_old_two_name_default_for_one_direction(rng):
    w = weights(rng, 1, np.float32)
    rnn = convert.from_onnx(*w, activations=["Relu", "Tanh"])
    assert rnn.activations == (("relu", None, None),)
    assert to_numpy(rnn.weight_ih_l0).shape == (H, D)
