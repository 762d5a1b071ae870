"""``python -m rnn_xp``: the command line.

Subcommands:

``demo``
    Runs the two seed programs (the column-vector CS231n-style step and the
    row loop) through rnn_xp on every installed backend and shows that each
    gives the numbers of a plain float64 NumPy loop.

``train``
    Trains a small RNN with the hand-written backward pass on one backend
    (see ``rnn_xp.cli.train``) and writes the loss curve as a PNG.

``bench``
    Times the forward pass against ``torch.nn.RNN`` and the seed loop on
    every installed backend; writes JSON and a chart (``--quick`` for a
    short run, ``--gpu`` for the GPU grid, ``--isolated`` for one process
    per contender). The benchmark itself is the library ``rnn_xp.bench``.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import _backends
from . import _args

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _demo(args) -> int:
    from .demo import run  # imported only for this subcommand

    return run(backend=args.backend, seed=args.seed)


def _check_train(args, parser):
    """Checks that need more than one flag, or an optional package: before any training."""
    from .train import DEFAULTS

    seq_len = DEFAULTS[args.task]["seq_len"] if args.seq_len is None else args.seq_len
    if args.task == "adding" and seq_len < 2:
        parser.error(f"argument --seq-len: the adding task marks one step in each half, so it needs "
                     f"at least 2 steps; got {seq_len}")  # fmt: skip
    for dest, flag in (("connect_timeout", "--connect-timeout"), ("workers_timeout", "--workers-timeout")):
        if getattr(args, dest) is not None and (args.backend != "dask" or args.scheduler in (None, *LOCAL)):
            parser.error(f"argument {flag}: is for --backend dask with --scheduler local-cluster or a "
                         f"scheduler's address")  # fmt: skip
    if args.scheduler is not None and args.backend != "dask":
        if args.scheduler != "threads":
            parser.error(f"argument --scheduler: is for --backend dask (with another backend only its default, "
                         f"threads, is accepted); got --backend {args.backend}")  # fmt: skip
        args.scheduler = None  # the default of a Dask run, and no Dask here: nothing to do
    _check_memory(args, parser)
    try:
        _backends.load(args.backend)  # imports the library: a missing one is a bad value, before any work
    except _backends.BackendUnavailable as exc:
        parser.error(f"argument --backend: {exc}")
    if args.plot != "none":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"{parser.prog}: matplotlib is not installed, so no loss plot will be written "
                  "(pip install matplotlib, or --plot none)", file=sys.stderr)  # fmt: skip
            args.plot = "none"


def _check_memory(args, parser):
    """A run whose arrays cannot fit in the memory available is refused, naming the flag that weighs most."""
    from ..bench import machine
    from .train import DEFAULTS, memory_needed

    available = machine.available_memory()
    if available is None:  # the system does not say
        return
    defaults = DEFAULTS[args.task]
    sizes = {"steps": defaults["steps"] if args.steps is None else args.steps, "batch": args.batch,
             "seq_len": defaults["seq_len"] if args.seq_len is None else args.seq_len,
             "hidden": args.hidden}  # fmt: skip
    need = memory_needed(args.task, dtype=args.dtype, optimizer=args.optimizer, **sizes)
    if need <= available:
        return
    usual = {"steps": defaults["steps"], "batch": 32, "seq_len": defaults["seq_len"], "hidden": 32}
    saved = {name: need - memory_needed(args.task, dtype=args.dtype, optimizer=args.optimizer,
                                        **{**sizes, name: min(usual[name], sizes[name])})
             for name in sizes}  # fmt: skip
    flag = max(saved, key=saved.get)
    run = ", ".join(f"{name.replace('_', '-')} {value}" for name, value in sizes.items())
    parser.error(f"argument --{flag.replace('_', '-')}: a run of {run} ({args.dtype}) needs at least "
                 f"{_bytes(need)} of memory; {_bytes(available)} is available")  # fmt: skip


def _bytes(n):
    """``n`` bytes in the unit that reads best: ``512 B``, ``3.2 GB``, ``1.6e+07 TB``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _train(args) -> int:
    from . import train  # imported only for this subcommand

    timeouts = {k: v for k, v in (("connect_timeout", args.connect_timeout),
                                  ("workers_timeout", args.workers_timeout)) if v is not None}  # fmt: skip
    try:
        train.train(
            args.task, backend=args.backend, steps=args.steps, batch=args.batch,
            seq_len=args.seq_len, hidden=args.hidden, optimizer=args.optimizer, lr=args.lr,
            dtype=args.dtype, seed=args.seed, log_every=args.log_every,
            plot=None if args.plot == "none" else args.plot, scheduler=args.scheduler, **timeouts,
        )  # fmt: skip
    except train.SchedulerUnavailable as exc:  # the address was fine: the cluster is not there
        print(f"python -m rnn_xp train: error: {exc} ({exc.flag})", file=sys.stderr)
        return 1
    except _backends.BackendUnavailable as exc:  # checked before, but a device can vanish
        print(f"python -m rnn_xp train: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # options that do not go together (--scheduler without dask)
        print(f"python -m rnn_xp train: error: {exc}", file=sys.stderr)
        return 2
    return 0


LOCAL = ("threads", "synchronous")  # Dask's schedulers in this process: no cluster, no timeout


def _scheduler(text) -> str:
    """A Dask scheduler for ``train``: a name, or a scheduler's address ``scheme://host:port``."""
    from .train import SCHEDULERS, check_address

    if text in SCHEDULERS:
        return text
    if "://" not in text:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(SCHEDULERS)} or an address such as tcp://host:8786; got {text!r}"
        )
    try:
        check_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seed(text) -> int:
    """A seed for ``numpy.random.default_rng``: a non-negative integer."""
    return _args.non_negative_int(text)


def _add_bench_arguments(parser):
    from . import bench

    bench.add_arguments(parser)


def _bench_main(args) -> int:
    from . import bench

    return bench.main_from_args(args)


def _check_bench(args, parser):
    from . import bench

    bench.check(args, parser)


def build_parser():
    parser = _Parser(prog="python -m rnn_xp", description="rnn_xp: a simple RNN on every Array API library")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser(
        "demo", help="run the seed programs on every installed backend",
        description="Runs seed program 000 (the CS231n-style column-vector step, through "
        "rnn_xp.columns) and seed program 003 (the row loop tanh(W @ x_t + U @ h + b), through "
        "rnn_xp.rnn_forward) on every installed backend in float32 and float64, and compares each "
        "result with a plain float64 NumPy loop.",
    )  # fmt: skip
    demo.add_argument("--backend", default="all", choices=("all", *_backends.NAMES),
                      help="the backend to run, or all of them (default: %(default)s)")
    demo.add_argument("--seed", type=_seed, default=0,
                      help="seed of the random inputs and weights (default: %(default)s)")
    demo.set_defaults(func=_demo)
    tr = sub.add_parser("train", help="train a small RNN with the hand-written backward pass")
    tr.add_argument("--task", default="sine", choices=("sine", "adding"),
                    help="next-step prediction of a noisy sine, or the adding problem (default: %(default)s)")
    tr.add_argument("--backend", default="numpy", choices=_backends.NAMES,
                    help="the array library to train with (default: %(default)s)")
    tr.add_argument("--optimizer", default="adam", choices=("adam", "sgd"),
                    help="the update rule (default: %(default)s)")
    tr.add_argument("--steps", type=_args.positive_int, default=None,
                    help="optimizer steps (default: 600 for sine, 4000 for adding)")
    tr.add_argument("--lr", type=_args.positive_float, default=None,
                    help="learning rate (default: 0.01 for sine and 0.003 for adding with adam; "
                         "0.1 and 0.05 with sgd)")
    tr.add_argument("--batch", type=_args.positive_int, default=32,
                    help="sequences per step (default: %(default)s)")
    tr.add_argument("--seq-len", type=_args.positive_int, default=None,
                    help="time steps per sequence (default: 40 for sine, 20 for adding; at least 2 for adding)")
    tr.add_argument("--hidden", type=_args.positive_int, default=32,
                    help="hidden units H (default: %(default)s)")
    tr.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                    help="floating dtype of the weights and data (default: %(default)s)")
    tr.add_argument("--seed", type=_seed, default=0,
                    help="seed of the weights, the training data and the evaluation batch (default: %(default)s)")
    tr.add_argument("--log-every", type=_args.positive_int, default=50,
                    help="print a progress line every this many steps, and at least every 2 seconds "
                         "(default: %(default)s)")
    tr.add_argument("--plot", type=_args.plot_file, default="rnn_xp_results/loss.png",
                    help="file for the loss curve (.png, .pdf, .svg, ...; needs matplotlib; its folder is made "
                         "if missing), or 'none' (default: %(default)s)")
    tr.add_argument(
        "--scheduler", type=_scheduler, default=None,
        help="with --backend dask: threads, synchronous, local-cluster (two worker processes on 127.0.0.1) "
             "or a running scheduler's address tcp://host:port (default: threads, which any backend accepts)",
    )  # fmt: skip
    tr.add_argument("--connect-timeout", type=_args.positive_float, default=None, metavar="SECONDS",
                    help="with --scheduler local-cluster or an address: seconds to reach the scheduler "
                         "(default: 10)")
    tr.add_argument("--workers-timeout", type=_args.positive_float, default=None, metavar="SECONDS",
                    help="with --scheduler local-cluster or an address: seconds to wait for a first worker "
                         "(default: 60)")
    tr.set_defaults(func=_train, check=_check_train, subparser=tr)
    bench = sub.add_parser("bench", help="time the forward pass against torch.nn.RNN")
    _add_bench_arguments(bench)
    bench.set_defaults(func=_bench_main, check=_check_bench, subparser=bench)
    return parser


def main(argv=None) -> int:
    """The ``rnn-xp`` command: parse, check every value, run; the exit code.

    Usage errors exit with 2 (one line naming the flag), Ctrl-C with 130 (one
    line), a closed output pipe (``rnn-xp demo | head -3``) ends quietly, and
    output that cannot be written (``rnn-xp demo > /dev/full``) or any other
    failure of the system is one line and exit code 1.
    """
    args = build_parser().parse_args(argv)
    command = f"python -m rnn_xp {args.command}"
    stdout, sys.stdout = sys.stdout, _GuardedOutput(sys.stdout)
    try:
        check = getattr(args, "check", None)
        if check is not None:
            check(args, args.subparser)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\n{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be written.
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by the pipe
    except MemoryError as exc:  # what the checks before the run could not foresee
        print(f"{command}: error: out of memory{': ' + str(exc) if str(exc) else ''} (try smaller sizes)",
              file=sys.stderr)  # fmt: skip
        return 1
    except _OutputError as exc:  # `> /dev/full`, a full disk, a terminal gone
        _silence_stdout()
        print(f"{command}: error: cannot write the output: {exc.args[0].strerror or exc.args[0]}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file the command reads or writes, a socket...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout


class _OutputError(Exception):
    """Standard output could not be written (other than a closed pipe); ``args[0]`` is the ``OSError``."""


class _GuardedOutput:
    """Standard output, with a failed write told apart from any other ``OSError`` of the command."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputError(exc) from exc

    def flush(self):
        try:
            return self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputError(exc) from exc

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _silence_stdout():
    """Point stdout at /dev/null, so that the interpreter's final flush raises nothing either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
