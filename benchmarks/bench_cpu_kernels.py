"""Every contender in a process of its own: ``python benchmarks/bench_cpu_kernels.py [--quick] [--suite ...]``.

The same as ``python -m rnn_xp bench --isolated`` (every flag of it works
here): the CPU grid, the small-batch grid, the backward pass and the
reservoir grid, with torch.nn.RNN, JAX's lax.scan, reservoirpy and rnn_xp as
each install runs it (default, ``numba`` extra, ``mkl`` extra, both); the
LSTM and the GRU (``--suite lstm``, ``--suite gru``), forward and
forward+backward, against torch.nn.LSTM/GRU, rnn_xp on JAX and Flax. Tables
on stdout, progress on stderr, JSON and PNGs into ``--out`` (see
docs/cpu-kernels.md); ``rnn_xp.bench.isolated`` is the runner.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rnn_xp.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "--isolated", *sys.argv[1:]]))
