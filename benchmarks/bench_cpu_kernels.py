"""Every contender in a process of its own: ``python benchmarks/bench_cpu_kernels.py [--quick] [--suite ...]``.

The same as ``python -m rnn_xp bench --isolated``: the CPU grid, the
small-batch grid, the backward pass and the reservoir grid, with torch.nn.RNN,
JAX's lax.scan, reservoirpy and rnn_xp as each install runs it (default,
``numba`` extra, ``mkl`` extra, both). Tables on stdout, progress on stderr,
JSON and PNGs under benchmarks/results/ (see docs/cpu-kernels.md).
"""

import sys

from rnn_xp.cli.bench_isolated import main

if __name__ == "__main__":
    sys.exit(main())
