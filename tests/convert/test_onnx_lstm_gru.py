"""The whole ONNX LSTM and GRU operators, against onnxruntime and onnx.reference.

Single ``LSTM``/``GRU`` nodes are written here with ``onnx.helper`` (not by
rnn_xp), their weights in ONNX's gate orders (LSTM ``i, o, f, c`` and
peepholes ``i, o, f``; GRU ``z, r, h``), and run by onnxruntime (float32,
``layout=0``: the only layout its CPU kernels run) for every activation in
every slot, every direction, ``clip``, ``input_forget``, peepholes,
``linear_before_reset`` 0 and 1, ``sequence_lens``, ``initial_h`` and
``initial_c``; and by ``onnx.reference`` (float64, ``layout`` 0 and 1; it
runs the default activations only and ignores ``clip``, ``input_forget``
and ``sequence_lens``). ``convert.from_onnx`` must build the layer that
gives the node's ``Y``, ``Y_h`` (and ``Y_c``), and ``to_onnx`` /
``onnx_attributes`` must give the node back.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close

from rnn_xp import GRU, LSTM, RNN, convert
from rnn_xp._activations import NONLINEARITIES, ONNX_NAMES, PARAMETERS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

T, B, D, H = 5, 3, 3, 4
LENGTHS = np.array([5, 2, 1], dtype=np.int32)  # onnxruntime gives Y_h = 0 for a length 0
PARAMS = {"affine": (0.7, -0.2), "leaky_relu": (0.3, None), "thresholded_relu": (0.1, None),
          "scaled_tanh": (1.5, 0.8), "hard_sigmoid": (0.3, 0.45), "elu": (0.8, None)}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
GATES = {"LSTM": 4, "GRU": 3}
SLOTS = {"LSTM": 3, "GRU": 2}  # activations per direction: f, g, h / f, g


def gated_model(op, dirs, attrs, w, *, seq=False, h0=False, c0=False, layout=0,
                elem=TensorProto.FLOAT, opset=14):
    """A model of one ``op`` node with initializer weights ``w`` (``W``, ``R``, ``B``, ``P``; ``None`` left out).

    Graph inputs ``X`` (and ``sequence_lens``, ``initial_h``, ``initial_c``);
    outputs ``Y``, ``Y_h`` (and ``Y_c``).
    """
    inputs = ["X", "W", "R", "B" if w.get("B") is not None else "", "sequence_lens" if seq else "",
              "initial_h" if h0 else ""]
    if op == "LSTM":
        inputs += ["initial_c" if c0 else "", "P" if w.get("P") is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    graph_inputs = [helper.make_tensor_value_info("X", elem, [B, T, D] if layout else [T, B, D])]
    if seq:
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
    for name, given in (("initial_h", h0), ("initial_c", c0)):
        if given:
            graph_inputs.append(helper.make_tensor_value_info(
                name, elem, [B, dirs, H] if layout else [dirs, B, H]))
    inits = [numpy_helper.from_array(v, k) for k, v in w.items() if v is not None]
    outputs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, inputs, outputs, hidden_size=H, **attrs)
    graph = helper.make_graph([node], "gated", graph_inputs,
                              [helper.make_tensor_value_info(o, elem, [None] * (4 if o == "Y" else 3))
                               for o in outputs], inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=max(4, helper.find_min_ir_version_for(opsets)))
    onnx.checker.check_model(model)
    return model


def gated_weights(rng, op, dirs, dtype=np.float32, *, bias=True, peepholes=False, scale=0.5):
    G = GATES[op]
    draw = lambda *shape: rng.uniform(-scale, scale, shape).astype(dtype)  # noqa: E731
    return {"W": draw(dirs, G * H, D), "R": draw(dirs, G * H, H),
            "B": draw(dirs, 2 * G * H) if bias else None,
            "P": draw(dirs, 3 * H) if peepholes else None}


def attributes(op, direction, names, *, clip=None, **flags):
    """The node's attributes for rnn_xp names ``names`` (every slot of every direction, in ONNX's
    order), alpha/beta consumed in order by the activations that take them."""
    attrs = {"direction": direction, "activations": [ONNX_NAMES[n] for n in names]}
    alphas = [PARAMS.get(n, (None, None))[0] for n in names if PARAMETERS[n][0] is not None]
    betas = [PARAMS.get(n, (None, None))[1] for n in names if PARAMETERS[n][1] is not None]
    # every value written (onnxruntime takes 0 for some that are missing); the defaults where
    # PARAMS has none
    alphas = [PARAMETERS[n][0] if a is None else a for n, a in
              zip([n for n in names if PARAMETERS[n][0] is not None], alphas)]
    betas = [PARAMETERS[n][1] if b is None else b for n, b in
             zip([n for n in names if PARAMETERS[n][1] is not None], betas)]
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if clip is not None:
        attrs["clip"] = clip
    attrs.update({k: int(v) for k, v in flags.items()})
    return attrs


def from_attributes(op, w, attrs, *, layout=0, **kw):
    return convert.from_onnx(w["W"], w["R"], w.get("B"), op_type=op, P=w.get("P"),
                             direction=attrs["direction"], activations=attrs.get("activations"),
                             activation_alpha=attrs.get("activation_alpha"),
                             activation_beta=attrs.get("activation_beta"), clip=attrs.get("clip"),
                             layout=layout, **{k: attrs[k] for k in ("input_forget", "linear_before_reset")
                                               if k in attrs}, **kw)


def run_ort(model, feeds):
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def call(layer, x, h0=None, c0=None, lengths=None):
    """The layer's ``(output, h_n[, c_n])`` for the node's inputs (zeros for a missing state)."""
    if isinstance(layer, LSTM):
        output, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
        return output, h_n, c_n
    output, h_n = layer(x, h0, lengths=lengths)
    return output, h_n


def check_against(got, want, what, rtol=1e-5, atol=1e-6):
    """``got`` the node's ``(Y, Y_h[, Y_c])``, ``want`` the layer's ``(output, h_n[, c_n])``."""
    Y, *finals = got
    np.testing.assert_allclose(want[0], convert.onnx_y_to_output(Y), rtol=rtol, atol=atol,
                               err_msg=f"output {what}")
    for name, a, b in zip(("h_n", "c_n"), want[1:], finals):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{name} {what}")


# The options cycled through as the activations rotate: each is met with several activations.
OPTIONS = [
    dict(),
    dict(seq=True, h0=True, c0=True, peepholes=True),
    dict(clip=0.6, bias=False, input_forget=True),
    dict(seq=True, h0=True, clip=0.9, peepholes=True, input_forget=True),
]


def rotated(k, n, dirs):
    """Activations ``k, k+1, ...`` for the ``n`` slots of the forward direction, ``k+5, ...`` for the reverse one."""
    return [NONLINEARITIES[(k + 5 * d + s) % len(NONLINEARITIES)] for d in range(dirs) for s in range(n)]


@pytest.mark.parametrize("op, flag", [("LSTM", None), ("GRU", 0), ("GRU", 1)],
                         ids=["LSTM", "GRU-linear_before_reset=0", "GRU-linear_before_reset=1"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_activation_in_every_slot_matches_onnxruntime(rng, op, flag, direction):
    dirs, n = DIRECTIONS[direction], SLOTS[op]
    for k in range(len(NONLINEARITIES)):  # every activation in every slot, a different one per direction
        names = rotated(k, n, dirs)
        opts = OPTIONS[k % len(OPTIONS)]
        flags = ({"input_forget": opts.get("input_forget", False)} if op == "LSTM"
                 else {"linear_before_reset": flag})
        attrs = attributes(op, direction, names, clip=opts.get("clip"), **flags)
        w = gated_weights(rng, op, dirs, bias=opts.get("bias", True),
                          peepholes=op == "LSTM" and opts.get("peepholes", False))
        c0_given = op == "LSTM" and opts.get("c0", False)
        model = gated_model(op, dirs, attrs, w, seq=opts.get("seq", False), h0=opts.get("h0", False),
                            c0=c0_given)
        x = rng.standard_normal((T, B, D)).astype(np.float32)
        feeds = {"X": x}
        h0 = rng.standard_normal((dirs, B, H)).astype(np.float32) if opts.get("h0") else None
        c0 = rng.standard_normal((dirs, B, H)).astype(np.float32) if c0_given else None
        lengths = LENGTHS if opts.get("seq") else None
        for key, value in (("initial_h", h0), ("initial_c", c0), ("sequence_lens", lengths)):
            if value is not None:
                feeds[key] = value
        layer = from_attributes(op, w, attrs)
        assert type(layer).__name__ == op
        assert layer.bidirectional == (dirs == 2) and layer.reverse == (direction == "reverse")
        check_against(run_ort(model, feeds), call(layer, x, h0, c0, lengths), f"{names} {opts}")
        # and back: the node's inputs and attributes
        back = convert.to_onnx(layer)
        assert set(back) == {k for k, v in w.items() if v is not None}
        for key, value in back.items():
            np.testing.assert_array_equal(value, w[key], err_msg=key)
        want = {**attrs, "hidden_size": H, "layout": 0}
        if op == "LSTM" and not want["input_forget"]:
            del want["input_forget"]  # written when set
        assert convert.onnx_attributes(layer) == want


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_clip_bounds_each_gates_pre_activation_not_the_cell_state(rng, op):
    # onnxruntime clips what enters each gate's activation; an LSTM's c_t (which enters
    # h(c_t)) is not clipped: c0 far beyond the bound shows it
    dirs, clip = 2, 0.5
    w = gated_weights(rng, op, dirs, scale=1.0, peepholes=op == "LSTM")
    attrs = {"direction": "bidirectional", "clip": clip,
             **({"linear_before_reset": 1} if op == "GRU" else {})}
    x = 3 * rng.standard_normal((T, B, D)).astype(np.float32)
    h0 = rng.standard_normal((dirs, B, H)).astype(np.float32)
    c0 = 4 + rng.standard_normal((dirs, B, H)).astype(np.float32)
    feeds = {"X": x, "initial_h": h0, **({"initial_c": c0} if op == "LSTM" else {})}
    got = run_ort(gated_model(op, dirs, attrs, w, h0=True, c0=op == "LSTM"), feeds)
    layer = from_attributes(op, w, attrs)
    check_against(got, call(layer, x, h0, c0 if op == "LSTM" else None), "clip")
    unclipped = call(from_attributes(op, w, {**attrs, "clip": None}), x, h0,
                     c0 if op == "LSTM" else None)
    assert np.abs(unclipped[0] - call(layer, x, h0, c0 if op == "LSTM" else None)[0]).max() > 1e-2
    if op == "LSTM":  # the cell state after the first step is far past the bound
        assert np.abs(call(layer, x[:1], h0, c0)[2]).max() > 3 * clip


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_missing_alpha_and_beta(rng, op):
    # Read as ONNX's defaults (LeakyRelu 0.01, HardSigmoid 0.2/0.5, Elu 1, ThresholdedRelu 1;
    # Affine and ScaledTanh have none: rnn_xp takes the identity and tanh). onnxruntime takes
    # the defaults of the first three but 0 for the others, so a model should write them all,
    # as onnx_attributes does.
    n = SLOTS[op]
    w = gated_weights(rng, op, 1, scale=1.0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    flags = {"linear_before_reset": 1} if op == "GRU" else {}
    for name, onnxruntime_fills in (("leaky_relu", True), ("hard_sigmoid", True), ("elu", True),
                                    ("thresholded_relu", False), ("affine", False),
                                    ("scaled_tanh", False)):
        slot = 0 if name == "hard_sigmoid" else 1
        names = ["sigmoid", "tanh", "tanh"][:n]
        names[slot] = name
        bare = {"direction": "forward", "activations": [ONNX_NAMES[a] for a in names], **flags}
        (Y, *_) = run_ort(gated_model(op, 1, bare, w), {"X": x})
        layer = from_attributes(op, w, bare)
        assert convert.onnx_attributes(layer)["activation_alpha"] == [PARAMETERS[name][0]]
        ours = layer(x)[0]
        zeros = [(0.0 if PARAMETERS[a][0] is not None else None) for a in names]
        zeros_b = [(0.0 if PARAMETERS[a][1] is not None else None) for a in names]
        theirs = from_attributes(op, w, {**bare, "activation_alpha": [v for v in zeros if v is not None],
                                         "activation_beta": [v for v in zeros_b if v is not None]})(x)[0]
        if onnxruntime_fills:
            np.testing.assert_allclose(ours, Y[:, 0], rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_allclose(theirs, Y[:, 0], rtol=1e-5, atol=1e-6, err_msg=name)
            assert np.abs(ours - Y[:, 0]).max() > 1e-3, name
        written = gated_model(op, 1, {**bare, **{k: v for k, v in convert.onnx_attributes(layer).items()
                                                if k.startswith("activation_")}}, w)
        np.testing.assert_allclose(ours, run_ort(written, {"X": x})[0][:, 0], rtol=1e-5, atol=1e-6)


def test_alpha_and_beta_are_consumed_in_order_across_directions(rng):
    # [Sigmoid, Tanh, Tanh, HardSigmoid, LeakyRelu, Tanh] with alpha [0.3, 0.05], beta [0.4]:
    # the HardSigmoid takes 0.3 and 0.4, the LeakyRelu 0.05 (what onnxruntime does)
    w = gated_weights(rng, "LSTM", 2)
    attrs = {"direction": "bidirectional", "activations": ["Sigmoid", "Tanh", "Tanh", "HardSigmoid",
                                                           "LeakyRelu", "Tanh"],
             "activation_alpha": [0.3, 0.05], "activation_beta": [0.4]}
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    layer = from_attributes("LSTM", w, attrs)
    assert layer.activations == (("sigmoid", "tanh", "tanh"), ("hard_sigmoid", "leaky_relu", "tanh"))
    assert layer.activation_alpha == ((None, None, None), (0.3, 0.05, None))
    check_against(run_ort(gated_model("LSTM", 2, attrs, w), {"X": x}), call(layer, x), "alpha order")


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op, flags", [("LSTM", {}), ("GRU", {"linear_before_reset": 0}),
                                       ("GRU", {"linear_before_reset": 1})],
                         ids=["LSTM", "GRU-0", "GRU-1"])
def test_onnx_reference_with_both_layouts(rng, op, flags, direction, layout):
    from onnx.reference import ReferenceEvaluator

    dirs = DIRECTIONS[direction]
    w = gated_weights(rng, op, dirs, np.float64, scale=1.0, peepholes=op == "LSTM")
    attrs = {"direction": direction, "layout": layout, **flags}
    lstm = op == "LSTM"
    model = gated_model(op, dirs, attrs, w, h0=True, c0=lstm, layout=layout, elem=TensorProto.DOUBLE)
    x = rng.standard_normal((B, T, D) if layout else (T, B, D))
    h0, c0 = rng.standard_normal((dirs, B, H)), rng.standard_normal((dirs, B, H))
    node_state = (lambda s: np.swapaxes(s, 0, 1)) if layout else (lambda s: s)  # [B, dirs, H]
    feeds = {"X": x, "initial_h": node_state(h0), **({"initial_c": node_state(c0)} if lstm else {})}
    got = ReferenceEvaluator(model).run(None, feeds)
    if layout:  # Y [B, T, dirs, H], Y_h [B, dirs, H]
        got = [np.transpose(got[0], (1, 2, 0, 3))] + [np.swapaxes(s, 0, 1) for s in got[1:]]
    layer = from_attributes(op, w, attrs, layout=layout)
    assert layer.batch_first == bool(layout) and layer.dtype == np.float64
    want = list(call(layer, x, h0, c0 if lstm else None))
    if layout:
        want[0] = np.swapaxes(want[0], 0, 1)
    check_against(got, want, f"{op} {flags} {direction} layout={layout}", rtol=1e-12, atol=1e-13)


def test_layout_1_with_the_options_onnx_reference_ignores(rng):
    # onnxruntime refuses layout=1 and onnx.reference runs no activations, clip or
    # input_forget: the layout=1 node is the layout=0 node on the transposed input
    w = gated_weights(rng, "LSTM", 2, peepholes=True)
    names = ["hard_sigmoid", "elu", "softsign", "sigmoid", "tanh", "leaky_relu"]
    attrs = attributes("LSTM", "bidirectional", names, clip=0.8, input_forget=True)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 2, B, H)).astype(np.float32)
    got = run_ort(gated_model("LSTM", 2, attrs, w, h0=True, c0=True),
                  {"X": x, "initial_h": h0, "initial_c": c0})
    batch_first = from_attributes("LSTM", w, attrs, layout=1)
    assert batch_first.batch_first
    output, (h_n, c_n) = batch_first(np.swapaxes(x, 0, 1), (h0, c0))
    check_against(got, (np.swapaxes(output, 0, 1), h_n, c_n), "layout=1")
    assert convert.onnx_attributes(batch_first)["layout"] == 1


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_onnxruntime_refuses_layout_1(rng, op):
    # A fact the docs state (onnxruntime 1.32's CPU kernels): models for onnxruntime keep
    # layout=0, as to_onnx_model writes by default
    layer = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}[op](D, H, batch_first=True, seed=0)
    model = convert.to_onnx_model(layer, layout=1)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    with pytest.raises(Exception, match=r"layout == 1\) are not supported"):
        run_ort(model, {"input": x})


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_onnxruntime_ends_a_length_0_row_at_zeros_not_at_the_initial_state(rng, op):
    # A fact the docs state: for a sequence of length 0 onnxruntime's Y_h (and Y_c) are 0;
    # rnn_xp's h_n is h0, the state after the last (here: no) valid step, as for every length
    w = gated_weights(rng, op, 1)
    attrs = {"direction": "forward", **({"linear_before_reset": 1} if op == "GRU" else {})}
    lstm = op == "LSTM"
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 1, B, H)).astype(np.float32)
    lengths = np.array([5, 0, 3], dtype=np.int32)
    got = run_ort(gated_model(op, 1, attrs, w, seq=True, h0=True, c0=lstm),
                  {"X": x, "sequence_lens": lengths, "initial_h": h0, **({"initial_c": c0} if lstm else {})})
    want = call(from_attributes(op, w, attrs), x, h0, c0 if lstm else None, lengths)
    rows = lengths > 0
    np.testing.assert_allclose(want[0], convert.onnx_y_to_output(got[0]), rtol=1e-5, atol=1e-6)
    for ours, theirs, start in zip(want[1:], got[1:], (h0, c0)):
        np.testing.assert_allclose(ours[:, rows], theirs[:, rows], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(theirs[:, ~rows], 0.0)
        np.testing.assert_array_equal(ours[:, ~rows], start[:, ~rows])


def test_a_bidirectional_node_on_every_backend(backend, rng):
    # an LSTM with every option (the GRU's cell runs through the same kernels)
    names = ["hard_sigmoid", "elu", "tanh", "sigmoid", "softsign", "tanh"]
    attrs = attributes("LSTM", "bidirectional", names, clip=0.8, input_forget=True)
    w = gated_weights(rng, "LSTM", 2, peepholes=True)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 2, B, H)).astype(np.float32)
    got = run_ort(gated_model("LSTM", 2, attrs, w, seq=True, h0=True, c0=True),
                  {"X": x, "initial_h": h0, "initial_c": c0, "sequence_lens": LENGTHS})
    layer = from_attributes("LSTM", w, attrs, xp=backend.xp, device=backend.device)
    output, finals = layer(backend.asarray(x), (backend.asarray(h0), backend.asarray(c0)),
                           lengths=LENGTHS)
    assert_close(output, convert.onnx_y_to_output(got[0]), backend, "float32", rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(finals, got[1:]):
        assert_close(ours, theirs, backend, "float32", rtol=1e-5, atol=1e-6)
    assert_close(convert.to_onnx(layer)["P"], w["P"], backend, "float32", rtol=0, atol=0)


# -- what the operator cannot hold, and bad arguments --------------------------------


def test_from_onnx_refusals(rng):
    w = gated_weights(rng, "LSTM", 1, peepholes=True)
    g = gated_weights(rng, "GRU", 2)
    cases = [
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="lstm"), ValueError,
         r"op_type must be one of \['RNN', 'GRU', 'LSTM'\]; got 'lstm'"),
        (lambda: convert.from_onnx(g["W"], g["R"], op_type="GRU", P=w["P"]), ValueError,
         r"P is an input or attribute of the ONNX LSTM operator; this is op_type='GRU'"),
        (lambda: convert.from_onnx(g["W"], g["R"], op_type="GRU", input_forget=1), ValueError,
         r"input_forget is an input or attribute of the ONNX LSTM operator"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", linear_before_reset=1), ValueError,
         r"linear_before_reset is an input or attribute of the ONNX GRU operator; this is op_type='LSTM'"),
        (lambda: convert.from_onnx(w["W"][:, :3 * H], w["R"][:, :3 * H], op_type="RNN"), ValueError,
         r"R must have shape \(1, 12, 12\) to match W"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", input_forget=2), ValueError,
         r"input_forget must be 0 or 1 \(the node's attribute\); got 2"),
        (lambda: convert.from_onnx(w["W"][:, :15], w["R"][:, :15], op_type="LSTM"), ValueError,
         r"W of an ONNX LSTM node must have shape \[dirs, 4\*H, D\], its 4 gate blocks in ONNX's "
         r"order; got shape \(1, 15, 3\)"),
        (lambda: convert.from_onnx(w["W"], w["R"][:, :, :3], op_type="LSTM"), ValueError,
         r"R must have shape \(1, 16, 4\) to match W \[dirs, 4\*H, D\] = \(1, 16, 3\); got \(1, 16, 3\)"),
        (lambda: convert.from_onnx(w["W"], w["R"], w["B"][:, :16], op_type="LSTM"), ValueError,
         r"B must have shape \(1, 32\) to match W"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", P=w["P"][:, :8]), ValueError,
         r"P must have shape \(1, 12\) to match W"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", P=w["P"][0]), ValueError,
         r"P of an ONNX LSTM node must be a 2-D array \[dirs, 3\*H\]; got shape \(12,\)"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", P=w["P"].astype(int)), TypeError,
         r"P must have a real floating dtype"),
        (lambda: convert.from_onnx(g["W"], g["R"], op_type="GRU", direction="forward"), ValueError,
         r"direction='forward' does not fit W with 2 direction\(s\)"),
        (lambda: convert.from_onnx(g["W"], g["R"], op_type="GRU", activations=["Sigmoid", "Tanh"]),
         ValueError, r"activations of an GRU node must be 4 names from .*: f, g for each of its 2 "
                     r"direction\(s\), forward first; got \['Sigmoid', 'Tanh'\]"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", activations=["Sigmoid", "Tanh", "Gelu"]),
         ValueError, r"activations of an LSTM node must be 3 names"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", activations="Sigmoid"), TypeError,
         r"activations must be a list of names, 3 per direction; got the string 'Sigmoid'"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", activation_alpha=[0.1] * 4),
         ValueError, r"activation_alpha has 4 values for the 3 activations .*; at most one per activation"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", layout=True), ValueError,
         r"layout must be 0 or 1; got True"),
        (lambda: convert.from_onnx(w["W"], w["R"], op_type="LSTM", clip=-1.0), ValueError,
         r"clip must be a positive number"),
    ]
    for fn, kind, message in cases:
        with pytest.raises(kind, match=message):
            fn()


def test_to_onnx_refusals():
    with pytest.raises(ValueError, match=r"the ONNX LSTM operator has no projection; this layer has "
                                         r"proj_size=2"):
        convert.to_onnx(LSTM(D, H, proj_size=2))
    with pytest.raises(ValueError, match="the ONNX LSTM operator has no projection"):
        convert.onnx_attributes(LSTM(D, H, proj_size=2))
    with pytest.raises(ValueError, match="the ONNX LSTM operator has no projection"):
        convert.to_onnx_model(LSTM(D, H, proj_size=2))
    with pytest.raises(TypeError, match=r"rnn must be an rnn_xp.RNN, LSTM or GRU; got dict"):
        convert.to_onnx({})
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 1\]; got 2"):
        convert.to_onnx(GRU(D, H, num_layers=2), layer=2)


def test_gate_orders_by_hand(rng):
    # the blocks, named: ONNX's LSTM rows i, o, f, c are torch's i, f, g, o; GRU z, r, h are r, z, n
    W = np.repeat(np.arange(4.0), H)[None, :, None] * np.ones((1, 4 * H, D))
    lstm = convert.from_onnx(W, np.zeros((1, 4 * H, H)), op_type="LSTM",
                             P=np.repeat([10.0, 11.0, 12.0], H)[None])
    assert lstm.weight_ih_l0[::H, 0].tolist() == [0.0, 2.0, 3.0, 1.0]  # i, f, g, o <- ONNX 0, 2, 3, 1
    assert lstm.peephole_l0[::H].tolist() == [10.0, 12.0, 11.0]  # p_i, p_f, p_o <- ONNX i, f, o
    W = np.repeat(np.arange(3.0), H)[None, :, None] * np.ones((1, 3 * H, D))
    Bias = np.repeat(np.arange(6.0), H)[None]
    gru = convert.from_onnx(W, np.zeros((1, 3 * H, H)), Bias, op_type="GRU")
    assert gru.weight_ih_l0[::H, 0].tolist() == [1.0, 0.0, 2.0]  # r, z, n <- ONNX 1, 0, 2
    assert gru.bias_ih_l0[::H].tolist() == [1.0, 0.0, 2.0]  # Wb
    assert gru.bias_hh_l0[::H].tolist() == [4.0, 3.0, 5.0]  # Rb: b_hn = Rbh, inside the reset
