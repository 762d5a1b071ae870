"""Weights of an RNN, LSTM or GRU in the layouts of torch, Keras, ONNX, Flax and CS231n.

Every format stores the same recurrence with different shapes and bias
conventions. For the Elman RNN, with ``D`` inputs, ``H`` units and rnn_xp's
(torch's) names:

=============  ===================  ========================  ==========================
format         input weights        recurrent weights         bias
=============  ===================  ========================  ==========================
torch, rnn_xp  weight_ih_l0 (H, D)  weight_hh_l0 (H, H)       bias_ih_l0 + bias_hh_l0
Keras          kernel (D, H)        recurrent_kernel (H, H)   bias (H,)
ONNX RNN       W [dirs, H, D]       R [dirs, H, H]            B [dirs, 2H] = [Wb, Rb]
CS231n         Wx (D, H)            Wh (H, H)                 b (H,)
=============  ===================  ========================  ==========================

Keras and CS231n hold the transposes of torch's matrices (``kernel =
weight_ih.T``, ``recurrent_kernel = weight_hh.T``) and one bias, which is
read into ``bias_ih`` with ``bias_hh = 0`` and written back as
``bias_ih + bias_hh``. ONNX keeps torch's orientation and both biases. So
``format -> RNN -> format`` returns the very same numbers, and ``RNN ->
format -> RNN`` gives a layer with the same outputs. The LSTM and GRU stack
their gates in each format's own order (torch's i, f, g, o and r, z, n;
Keras's i, f, c, o and z, r, h; ONNX's i, o, f, c and z, r, h; Flax's gates
as separate kernels): :doc:`/converters` and :doc:`/onnx` have the tables,
and every ``from_*`` returns an ``rnn_xp.LSTM`` or ``rnn_xp.GRU`` for them.

The ``to_*`` functions return arrays of the layer's own library, device
and dtype (``rnn.to("numpy")`` first for NumPy arrays); the ``from_*``
functions take arrays of any library and build a layer in ``xp``.

One module per format: ``convert.torch``, ``convert.keras``,
``convert.flax``, ``convert.cs231n``, ``convert.onnx`` (the operator),
``convert.onnx_read``, ``convert.onnx_graph``, ``convert.onnx_data`` and
``convert.onnx_write`` (model files); every ``from_*`` builds its layer
through one builder (``convert._common``, ``convert._gated`` for the gated
cells' per-gate blocks) that draws no weights. The functions are used from here: ``convert.from_keras``.
"""

from __future__ import annotations

from .cs231n import from_cs231n, to_cs231n
from .flax import from_flax, to_flax
from .keras import from_keras, keras_config, keras_merge, to_keras, to_keras_bidirectional
from .onnx import from_onnx, onnx_attributes, onnx_y_to_output, output_to_onnx_y, to_onnx
from .onnx_read import from_onnx_model
from .onnx_write import to_onnx_model
from .torch import from_torch, to_torch, torch_state_dict

# The other names the one-module rnn_xp.convert held, kept importable from here
# (tests/convert/test_convert_package.py holds the list).
from collections import OrderedDict  # noqa: E402, F401, I001
from .._activations import ONNX_NAMES, PARAMETERS, check_activation, check_nonlinearity  # noqa: F401
from .._backends import dtype_name, move, resolve_dtype, resolve_namespace, to_host  # noqa: F401
from .._checks import check_bool, check_mask, check_real_arrays, shape_str  # noqa: F401
from .._compat import is_array, namespace_of  # noqa: F401
from ..layer import RNN  # noqa: F401

__all__ = [
    "from_cs231n",
    "from_flax",
    "from_keras",
    "from_onnx",
    "from_onnx_model",
    "from_torch",
    "keras_config",
    "keras_merge",
    "onnx_attributes",
    "onnx_y_to_output",
    "output_to_onnx_y",
    "to_cs231n",
    "to_flax",
    "to_keras",
    "to_keras_bidirectional",
    "to_onnx",
    "to_onnx_model",
    "to_torch",
    "torch_state_dict",
]
