"""rnn_xp's benchmark library: what ``python -m rnn_xp bench`` and ``benchmarks/*.py`` are made of.

It sits above the public API (it times ``rnn_forward``, the layer and the
kernels; nothing of the package imports it), one module per job:

``cells``
    What is timed: for each cell a ``ContenderSet`` (the problem of a size,
    its FLOP count, the contenders on the CPU and on the GPU, baseline
    first) and the grids of sizes. A new cell is a new entry of ``SETS``.
``timing``
    The protocol: seconds per call after the device finishes, the idle time
    between batches, calls per round, the progress bar.
``machine``
    The machine's facts (CPU, usable CPUs, memory, thread pools through
    threadpoolctl, oneMKL, versions), the GEMM rate, thread settings, TF32.
``suite``
    The in-process suite: every contender of a size side by side in
    interleaved rounds (``bench_grid``), and the whole run (``run``).
``memory``
    Peak memory of the NumPy kernels (tracemalloc).
``report``
    Tables, the chart, the atomic JSON file, Markdown for the docs.
``gated``
    The LSTM's and the GRU's contenders (torch, rnn_xp on JAX and NumPy,
    Flax's cells), forward and forward+backward, for ``cells.SETS`` and the
    isolated suites ``lstm`` and ``gru``.
``isolated``
    Each contender in a process of its own, per install (``bench --isolated``).

The names below are the public surface; everything else is private to its
module. See ``docs/performance-method.md`` for the method.

>>> from rnn_xp import bench
>>> bench.CPU_GRID[0], bench.cpu_tag("Intel(R) Xeon(R) Platinum 8488C")
((1, 200, 32, 64), 'xeon')
"""

from .cells import (
    BASELINE, CPU_GRID, FAST, FAST_MKL, FAST_OPENBLAS, GPU_GRID, PERSISTENT_ROWS, RNN, SETS, SMALL_BATCH_GRID,
    Contender, ContenderSet, Problem, Run, contenders, problem, seed_loop, torch_baseline,
)  # fmt: skip
from .machine import (
    available_memory, cpu_model, cpu_tag, gemm_rate, gpu_problem, machine_info, slug, tf32_off, thread_settings,
    usable_cpus,
)  # fmt: skip
from .memory import memory_section
from .report import chart, contender_names, markdown, print_tables, write_json
from .suite import Interrupted, bench_grid, run
from .timing import SETTLE_S, Progress, calls_per_round, no_sync, time_per_call

__all__ = [
    "BASELINE", "CPU_GRID", "FAST", "FAST_MKL", "FAST_OPENBLAS", "GPU_GRID", "PERSISTENT_ROWS", "RNN", "SETS",
    "SETTLE_S", "SMALL_BATCH_GRID", "Contender", "ContenderSet", "Interrupted", "Problem", "Progress", "Run",
    "available_memory", "bench_grid", "calls_per_round", "chart", "contender_names", "contenders", "cpu_model",
    "cpu_tag", "gemm_rate", "gpu_problem", "machine_info", "markdown", "memory_section", "no_sync",
    "print_tables", "problem", "run", "seed_loop", "slug", "tf32_off", "thread_settings", "time_per_call",
    "torch_baseline", "usable_cpus", "write_json",
]  # fmt: skip
