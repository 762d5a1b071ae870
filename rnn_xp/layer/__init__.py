"""The layers: ``RNN``, ``LSTM`` and ``GRU`` with torch's interface.

Each holds its parameters in one array library, on one device, in one dtype,
under torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), and runs
every layer and direction of a call through its cell (``rnn_xp.cells``):

==========  ====================  ============================================
layer       like                  its module
==========  ====================  ============================================
``RNN``     ``torch.nn.RNN``      ``rnn_xp.layer.rnn`` (Elman; every ONNX activation, leak)
``LSTM``    ``torch.nn.LSTM``     ``rnn_xp.layer.lstm`` (projection, peepholes)
``GRU``     ``torch.nn.GRU``      ``rnn_xp.layer.gru`` (reset before or after the product)
==========  ====================  ============================================

What they share: ``rnn_xp.layer.base`` (the parameters, modes, the run over
layers and directions and the backward through them), ``moving`` (``to``,
state dicts, ``from_params``, pickling), ``pytree`` (the layers as JAX
pytrees), ``options`` (the constructor's checks) and ``results``
(``LayerCache``, ``LayerGrads``).
"""

from __future__ import annotations

from .base import LayerCache, LayerGrads
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN

__all__ = ["GRU", "LSTM", "LayerCache", "LayerGrads", "RNN"]
