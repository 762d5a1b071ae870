"""rnn_xp: a simple (Elman) recurrent network for every Array API library.

The same functions run on NumPy, CuPy, PyTorch, JAX, Dask and
array-api-strict, and return arrays of the caller's library, device and
dtype. See ``rnn_xp.forward`` for the recurrence, ``rnn_xp.backward`` for
its gradient and ``rnn_xp.layer`` for the ``torch.nn.RNN``-style layer.
"""

from . import columns, convert
from .backward import GRUGrads, LSTMGrads, RNNGrads, gru_backward, lstm_backward, rnn_backward, rnn_step_backward
from .forward import gru_forward, lstm_forward, rnn_forward, rnn_step_forward
from .layer import GRU, LSTM, RNN, LayerCache, LayerGrads

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUGrads",
    "LSTM",
    "LSTMGrads",
    "RNN",
    "LayerCache",
    "LayerGrads",
    "RNNGrads",
    "__version__",
    "columns",
    "convert",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
    "rnn_step_backward",
    "rnn_step_forward",
]
