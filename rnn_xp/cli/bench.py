"""``python -m rnn_xp bench``: the arguments, checked, handed to ``rnn_xp.bench``.

``bench`` runs the in-process suite (``rnn_xp.bench.run``): the CPU grid,
``--small-batch`` or ``--gpu``; ``bench --isolated`` runs each contender in a
process of its own (``rnn_xp.bench.isolated.run``); ``bench --markdown FILE``
prints a results file of either kind as Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import _args

__all__ = ["add_arguments", "main_from_args"]

PROG = "python -m rnn_xp bench"
THREADS = 2
OUT = "rnn_xp_results"  # .gitignore covers it: a run in a checkout leaves nothing to commit by mistake
# The flags of one method only (dest: flag): given to the other, they are refused, never ignored.
ISOLATED_ONLY = {"suite": "--suite", "long": "--long", "no_inprocess": "--no-inprocess"}
IN_PROCESS_ONLY = {"gpu": "--gpu", "small_batch": "--small-batch", "no_memory": "--no-memory"}
RUN_FLAGS = {"quick": "--quick", "threads": "--threads", "out": "--out", "isolated": "--isolated",
             **ISOLATED_ONLY, **IN_PROCESS_ONLY}  # fmt: skip


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
    parser.add_argument("--threads", type=_args.thread_count, default=None,
                        help=f"BLAS and torch threads during the run, put back after it, at most the CPUs this "
                             f"process may use (default: {THREADS})")
    parser.add_argument("--out", type=_args.out_folder, default=None,
                        help=f"folder for the JSON and PNG, made if missing; benchmarks/results holds the "
                             f"committed ones (default: {OUT})")
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


def _given(args, dests):
    """The flags among ``dests`` (``{dest: flag}``) that the command line set."""
    return [flag for dest, flag in dests.items() if getattr(args, dest) not in (None, False)]


def check(args, parser):
    """Flags that do not go together: refused before any work, one line naming the flag (exit 2)."""
    if args.markdown is not None:
        given = _given(args, RUN_FLAGS)
        if given:
            parser.error(f"argument --markdown: prints a results file and runs nothing; not with {given[0]}")
    elif args.isolated:
        given = _given(args, IN_PROCESS_ONLY)
        if given:
            parser.error(f"argument {given[0]}: is for the in-process suite; not with --isolated")
    else:
        given = _given(args, ISOLATED_ONLY)
        if given:
            parser.error(f"argument {given[0]}: needs --isolated (each contender in a process of its own)")
        if args.gpu and args.small_batch:
            parser.error("argument --small-batch: is for the CPU; the GPU grid holds the small batches already")


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
    threads = THREADS if args.threads is None else args.threads
    out = OUT if args.out is None else args.out
    print(f"results go to {os.path.join(out, '')} (--out)", flush=True)
    if args.isolated:
        from ..bench import isolated

        result = isolated.run(suites=tuple(args.suite or isolated.SUITES), threads=threads, quick=args.quick,
                              long=args.long, out_dir=out, inprocess=not args.no_inprocess)  # fmt: skip
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
        result = bench.run(quick=args.quick, gpu=args.gpu, threads=threads, out_dir=out,
                           memory=not args.no_memory, small_batch=args.small_batch)  # fmt: skip
    except bench.Interrupted as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 130
    ok = all(r["agrees"] for rec in result["grid"] for r in rec["results"].values())
    return 0 if ok else 1
