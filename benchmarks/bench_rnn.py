"""Benchmark rnn_xp's forward pass against torch.nn.RNN and the seed loop.

Run from the repository root::

    python benchmarks/bench_rnn.py            # the CPU grid, about 5 minutes
    python benchmarks/bench_rnn.py --quick    # a shorter run
    python benchmarks/bench_rnn.py --gpu      # the GPU grid (CuPy, torch CUDA)

The same as ``python -m rnn_xp bench`` (every flag of it works here): prints
the tables and writes ``<host>-<cpu>-cpu.json`` (or ``<gpu-name>.json``) and
a PNG chart into ``--out``. The benchmark is the library ``rnn_xp.bench``
(``rnn_xp/bench/``); ``docs/performance-method.md`` describes the method.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rnn_xp.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
