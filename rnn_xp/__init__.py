"""rnn_xp: a simple (Elman) recurrent network for every Array API library.

The same functions run on NumPy, CuPy, PyTorch, JAX, Dask and
array-api-strict, and return arrays of the caller's library, device and
dtype. See ``rnn_xp.forward`` for the recurrence.
"""

from . import columns
from .backward import RNNGrads, rnn_backward, rnn_step_backward
from .forward import rnn_forward, rnn_step_forward

__version__ = "0.1.0"

__all__ = ["__version__", "columns", "rnn_forward", "rnn_step_forward"]
__all__ += ["RNNGrads", "rnn_backward", "rnn_step_backward"]
