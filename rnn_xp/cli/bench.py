"""``python -m rnn_xp bench``: the arguments, checked, handed to ``rnn_xp.bench``.

``bench`` runs the in-process suite (``rnn_xp.bench.run``): the CPU grid,
``--small-batch`` or ``--gpu``; ``bench --isolated`` runs each contender in a
process of its own (``rnn_xp.bench.isolated.run``); ``bench --markdown FILE``
prints a results file of either kind as Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import _args

__all__ = ["add_arguments", "main_from_args"]

PROG = "python -m rnn_xp bench"


def _results_file(text) -> str:
    """A results file that ``bench`` or ``bench --isolated`` wrote (JSON with a grid or suites)."""
    try:
        with open(text) as fh:
            result = json.load(fh)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON: {exc}") from None
    if not isinstance(result, dict) or not ({"grid", "suites"} & set(result)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a results file of bench (no 'grid' or 'suites')")
    return text


def add_arguments(parser):
    """The flags of ``bench`` (both methods), each help naming its default."""
    from ..bench.isolated import SUITES

    parser.add_argument("--quick", action="store_true",
                        help="3 rounds instead of 7, shorter calls, no Dask (default: off)")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU grid: CuPy and torch on CUDA (default: off, the CPU grid)")
    parser.add_argument("--threads", type=_args.positive_int, default=2,
                        help="BLAS and torch threads during the run, put back after it (default: %(default)s)")
    parser.add_argument("--out", type=_args.out_folder, default="benchmarks/results",
                        help="folder for the JSON and PNG, made if missing (default: %(default)s)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory section (default: off)")
    parser.add_argument("--small-batch", action="store_true",
                        help="CPU: B in {1, 4, 8}, H in {256, 512, 1024}, T = 200, NumPy against torch "
                             "(default: off)")
    parser.add_argument("--isolated", action="store_true",
                        help="each contender in a process of its own, for every install (see docs/cpu-kernels.md); "
                             "default: off, the in-process suite")
    parser.add_argument("--suite", action="append", choices=SUITES,
                        help="with --isolated: which suite (repeatable; default: all of them)")
    parser.add_argument("--long", action="store_true",
                        help="with --isolated: the reservoir suite with T = 10^5 (default: off, T = 10^4)")
    parser.add_argument("--no-inprocess", action="store_true",
                        help="with --isolated: skip the in-process method's ratios (default: off, both methods)")
    parser.add_argument("--markdown", metavar="RESULTS", type=_results_file, default=None,
                        help="print the tables of a results file (of bench or bench --isolated) as Markdown "
                             "and run nothing (default: none, run the benchmark)")


def _markdown(path) -> int:
    from ..bench import markdown
    from ..bench.isolated import finish, results_markdown

    with open(path) as fh:
        result = json.load(fh)
    if "suites" in result:
        finish(result)  # ratios again (a partial file has none yet)
        print(results_markdown(result))
    else:
        print(markdown(result))
    return 0


def main_from_args(args) -> int:
    """Run what the parsed arguments ask for; the exit code (1 if a contender disagreed)."""
    if args.markdown is not None:
        return _markdown(args.markdown)
    if args.isolated:
        from ..bench import isolated

        result = isolated.run(suites=tuple(args.suite or isolated.SUITES), threads=args.threads, quick=args.quick,
                              long=args.long, out_dir=args.out, inprocess=not args.no_inprocess)  # fmt: skip
        ok = all(r.get("agrees", True) for recs in result["suites"].values() for rec in recs
                 for r in rec["results"].values())  # fmt: skip
        return 0 if ok else 1
    from .. import bench

    if args.gpu:
        problem = bench.gpu_problem()
        if problem is not None:
            print(f"{PROG}: error: --gpu needs a CUDA device: {problem}", file=sys.stderr)
            return 2
    try:
        result = bench.run(quick=args.quick, gpu=args.gpu, threads=args.threads, out_dir=args.out,
                           memory=not args.no_memory, small_batch=args.small_batch)  # fmt: skip
    except bench.Interrupted as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 130
    ok = all(r["agrees"] for rec in result["grid"] for r in rec["results"].values())
    return 0 if ok else 1
