"""Value checks for command-line flags, run by argparse before any work starts.

Each function is an argparse ``type=``: it returns the value or raises
``argparse.ArgumentTypeError``, which argparse reports on one line naming the
flag (``argument --batch: must be a positive integer; got '0'``), exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os

__all__ = ["non_negative_int", "out_folder", "plot_file", "positive_float", "positive_int", "thread_count"]


def _int(text):
    try:
        return int(text)
    except ValueError:
        return None


def positive_int(text) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def thread_count(text) -> int:
    """An integer from 1 to the number of CPUs this process may use (its affinity mask, else ``os.cpu_count()``)."""
    from ..bench.machine import usable_cpus

    value = positive_int(text)
    most = usable_cpus()
    if value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, the CPUs this process may use; got {text!r}")
    return value


def non_negative_int(text) -> int:
    """An integer >= 0 (a seed for ``numpy.random.default_rng``)."""
    value = _int(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer; got {text!r}")
    return value


def positive_float(text) -> float:
    """A finite number > 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0; got {text!r}")
    return value


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def out_folder(text) -> str:
    """A folder that exists or can be made, and can be written to."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"must be a folder; {text!r} is a file")
    existing = _nearest_existing(text)
    if not os.path.isdir(existing):
        raise argparse.ArgumentTypeError(f"cannot make the folder {text!r}: {existing!r} is a file")
    if not os.access(existing, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write to {existing!r}")
    return text


# The formats matplotlib writes without extra packages (Agg, PDF, PS, SVG backends).
PLOT_FORMATS = ("png", "pdf", "svg", "ps", "eps", "jpg", "jpeg", "webp", "tif", "tiff")


def plot_file(text) -> str:
    """``none``, or a file path whose folder exists or can be made, with a suffix matplotlib writes."""
    if text == "none":
        return text
    suffix = os.path.splitext(text)[1].lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"must end in one of {', '.join('.' + f for f in PLOT_FORMATS)} (or be 'none'); got {text!r}"
        )
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"must be a file name; {text!r} is a folder")
    folder = os.path.dirname(os.path.abspath(text))
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise argparse.ArgumentTypeError(f"cannot make the folder of {text!r}: {existing!r} is a file")
    if not os.access(existing, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write to the folder of {text!r}")
    return text
