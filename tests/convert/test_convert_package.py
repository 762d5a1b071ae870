"""The ``rnn_xp.convert`` package: its names, its one builder, and the torch reader it shares.

- Every name the one-module ``rnn_xp.convert`` held is still importable from
  the package (its ``dir()``, frozen here when it was split).
- The converters build their layer from the given weights: no initial
  weights are drawn (a counting generator sees no draw), and the layer's
  ``generator`` is where ``RNN(..., seed=0)`` would leave it.
- No module of the package reaches for another module's private names.
"""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import rnn_xp
from rnn_xp import RNN, convert

# dir() of rnn_xp/convert.py before the split, without the underscored names
OLD_NAMES = [
    "ONNX_NAMES", "OrderedDict", "PARAMETERS", "RNN", "annotations", "check_activation",
    "check_bool", "check_mask", "check_nonlinearity", "check_real_arrays", "dtype_name",
    "from_cs231n", "from_flax", "from_keras", "from_onnx", "from_onnx_model", "from_torch",
    "is_array", "keras_config", "keras_merge", "move", "namespace_of", "onnx_attributes",
    "onnx_y_to_output", "output_to_onnx_y", "resolve_dtype", "resolve_namespace", "shape_str",
    "to_cs231n", "to_flax", "to_host", "to_keras", "to_keras_bidirectional", "to_onnx",
    "to_onnx_model", "to_torch", "torch_state_dict",
]  # fmt: skip

PACKAGE = pathlib.Path(rnn_xp.__file__).parent


def test_every_old_name_is_still_importable():
    missing = [name for name in OLD_NAMES if not hasattr(convert, name)]
    assert not missing
    for name in convert.__all__:
        assert callable(getattr(convert, name)) and name in OLD_NAMES
    namespace = {}
    exec("from rnn_xp.convert import *", namespace)
    assert set(convert.__all__) <= set(namespace)


def test_one_module_per_format_none_over_600_lines():
    modules = sorted(p.name for p in (PACKAGE / "convert").glob("*.py"))
    assert {"torch.py", "keras.py", "flax.py", "cs231n.py", "onnx.py", "onnx_read.py",
            "onnx_write.py"} <= set(modules)
    long = {p.name: n for p in (PACKAGE / "convert").glob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long


def _converter(which):
    """A call that converts weights made beforehand (their making may draw) in format ``which``."""
    rng = np.random.default_rng(0)
    a = lambda *shape: rng.uniform(-0.5, 0.5, shape)  # noqa: E731
    if which == "torch":
        state = RNN(3, 4, num_layers=2, bidirectional=True, seed=1).state_dict()
        return lambda: convert.from_torch(state)
    if which == "keras":
        weights = [a(3, 4), a(4, 4), a(4), a(3, 4), a(4, 4), a(4)]
        return lambda: convert.from_keras(weights)
    if which == "flax":
        params = {"i": {"kernel": a(3, 4), "bias": a(4)}, "h": {"kernel": a(4, 4)}}
        return lambda: convert.from_flax(params, residual=True)
    if which == "cs231n":
        Wx, Wh, b = a(3, 4), a(4, 4), a(4)
        return lambda: convert.from_cs231n(Wx, Wh, b)
    if which == "onnx":
        W, R, B = a(2, 4, 3), a(2, 4, 4), a(2, 8)
        return lambda: convert.from_onnx(W, R, B)
    if which == "onnx_model":
        pytest.importorskip("onnx")
        model = convert.to_onnx_model(RNN(3, 4, num_layers=2, seed=1))
        return lambda: convert.from_onnx_model(model)
    raise AssertionError(which)


FORMATS = ["torch", "keras", "flax", "cs231n", "onnx", "onnx_model"]


@pytest.mark.parametrize("which", FORMATS)
def test_converters_draw_no_weights(counting, which):
    call = _converter(which)
    # with the counting generator in place, a layer made the usual way draws (the check works) ...
    counting["draws"] = 0
    RNN(3, 4, seed=0)
    assert counting["draws"] == 4
    counting["draws"] = 0
    # ... and a converted one draws none
    rnn = call()
    assert counting["draws"] == 0
    # its dropout stream is where RNN(..., seed=0) leaves it after drawing the same weights
    same = RNN(rnn.input_size, rnn.hidden_size, rnn.num_layers, bias=rnn.bias,
               bidirectional=rnn.bidirectional, seed=0)
    np.testing.assert_array_equal(rnn.generator.random(5), same.generator.random(5))


def test_from_params_is_load_state_dict_without_the_draws(counting):
    params = RNN(3, 4, num_layers=2, bias=False, seed=5).state_dict()
    want = RNN(3, 4, 2, bias=False, seed=9, dtype="float64").load_state_dict(params)
    counting["draws"] = 0
    got = RNN.from_params(params, 3, 4, 2, bias=False, seed=9, dtype="float64")
    assert counting["draws"] == 0
    assert repr(got) == repr(want)
    for name in want.params:
        assert got.params[name] is not params[name]  # copied
        np.testing.assert_array_equal(got.params[name], want.params[name])
    np.testing.assert_array_equal(got.generator.random(3), want.generator.random(3))
    with pytest.raises(ValueError, match=r"missing keys \['weight_hh_l1'\]"):
        RNN.from_params({k: v for k, v in params.items() if k != "weight_hh_l1"}, 3, 4, 2,
                        bias=False)


def test_the_state_dict_reader_is_shared_with_the_layer():
    """``RNN.from_torch`` and ``convert.from_torch`` are one reader (``rnn_xp._params``)."""
    from rnn_xp import _params

    state = RNN(3, 4, bidirectional=True, seed=1).state_dict()
    sizes, config = _params.read_state_dict(state)
    assert sizes == (3, 4, 1) and config == {"bias": True, "bidirectional": True}
    # a cell with gates stacked in the rows (an LSTM's 4H) is read by the same code
    lstm = {name: np.zeros((4 * s[0], *s[1:])) for name, s in _params.param_shapes(
        3, 4, 1, 1, True).items()}  # fmt: skip
    assert _params.read_state_dict(lstm, module="LSTM", gates=4)[0] == (3, 4, 1)
    with pytest.raises(ValueError, match=r"weight_hh_l0: got \(16, 4\), need \(16, 16\)"):
        _params.read_state_dict(lstm)


def _private_uses(path, own):
    """``from X import _name`` and ``obj._name`` (``obj`` not ``self``/``cls``) in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            found += [f"from {node.module} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                not node.attr.startswith("__") and node.attr not in own:
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_no_private_name_crosses_a_module():
    paths = sorted((PACKAGE / "convert").glob("*.py")) + [PACKAGE / "_params.py"]
    bad = {}
    for path in paths:
        tree = ast.parse(path.read_text())
        own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        own |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
        if uses := _private_uses(path, own):
            bad[path.name] = uses
    assert not bad


def test_the_private_name_check_sees_a_planted_use(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from ..layer import _helper\n\ndef f(rnn):\n    return rnn._weights(0, '')\n")
    assert _private_uses(planted, set()) == ["from layer import _helper", "rnn._weights (line 4)"]
