"""Benchmark rnn_xp's forward pass against torch.nn.RNN and the seed loop.

Run from the repository root::

    python benchmarks/bench_rnn.py            # the CPU grid, about 5 minutes
    python benchmarks/bench_rnn.py --quick    # a shorter run
    python benchmarks/bench_rnn.py --gpu      # the GPU grid (CuPy, torch CUDA)

(the same as ``python -m rnn_xp bench``). Prints the tables and writes
``benchmarks/results/<host>-cpu.json`` (or ``<gpu-name>.json``) and a PNG
chart. See ``docs/performance.md`` and ``rnn_xp/bench.py`` for the method.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rnn_xp.cli import bench  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    sys.exit(bench.main_from_args(parser.parse_args()))
