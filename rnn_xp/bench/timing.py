"""The timing protocol: seconds per call after the device finishes, idle time between batches, progress.

A contender is timed as ``time_per_call(fn, sync, n)``: one untimed call,
then ``n`` calls in a row, the clock read after ``sync`` has waited for the
last result (``block_until_ready``, a CUDA stream synchronisation, a Dask
``compute``). Before each timed batch the suite waits ``SETTLE_S`` seconds
(see below). ``Progress`` is the one-line progress bar on stderr that every
benchmark of the package shows.

>>> from rnn_xp.bench.timing import no_sync, time_per_call
>>> seconds = time_per_call(lambda: sum(range(100)), no_sync, 10)
>>> 0 < seconds < 1
True
"""

from __future__ import annotations

import sys
import time

__all__ = ["SETTLE_S", "Progress", "calls_per_round", "no_sync", "time_per_call"]

# Idle time before each timed batch. BLAS and OpenMP pools keep their worker
# threads spinning for a while after a call (OpenBLAS about 0.1 s); on a small
# machine the next contender would share the cores with them and be charged
# for another library's threads.
SETTLE_S = 0.2


def no_sync(result):
    """The ``sync`` of a library that computes before it returns (NumPy): the result itself."""
    return result


def time_per_call(fn, sync, n):
    """Seconds per call of ``fn`` over ``n`` calls after one untimed call, ``sync`` before each clock read."""
    sync(fn())
    t0 = time.perf_counter()
    for _ in range(n):
        r = fn()
    sync(r)
    return (time.perf_counter() - t0) / n


def calls_per_round(seconds_per_call, budget_s, rounds, *, most=200):
    """How many calls in a row fill a round: ``budget_s`` spread over ``rounds``, 1 to ``most``."""
    return max(1, min(most, int(budget_s / max(seconds_per_call, 1e-6) / rounds)))


class Progress:
    """A one-line progress bar on stderr (no dependency).

    ``step`` advances the bar; ``note`` only says what runs now (a warm-up, a
    contender of a round, the memory section), so that a long size still
    shows something new every second or so.
    """

    def __init__(self, total, stream=None):
        self.total, self.done, self.t0 = max(total, 1), 0, time.perf_counter()
        self.stream = sys.stderr if stream is None else stream  # the stream of now, not of import time
        self.label = ""

    def step(self, label):
        """One unit of work done; ``label`` says what comes next."""
        self.done += 1
        self.note(label)

    def note(self, label):
        """Say what runs now, without advancing the bar."""
        self.label = label
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"\r[{bar:<30}] {self.done}/{self.total} {elapsed:5.0f}s {label[:60]:<60}")
        self.stream.flush()

    def close(self):
        """End the bar's line."""
        self.stream.write("\n")
        self.stream.flush()
