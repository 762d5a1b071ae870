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
    short run, ``--gpu`` for the GPU grid).
"""

from __future__ import annotations

import argparse
import sys

from .. import _backends

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _demo(args) -> int:
    from .demo import run  # imported only for this subcommand

    return run(backend=args.backend, seed=args.seed)


def _train(args) -> int:
    from . import train  # imported only for this subcommand

    try:
        train.train(
            args.task, backend=args.backend, steps=args.steps, batch=args.batch,
            seq_len=args.seq_len, hidden=args.hidden, optimizer=args.optimizer, lr=args.lr,
            dtype=args.dtype, seed=args.seed, log_every=args.log_every,
            plot=None if args.plot == "none" else args.plot, scheduler=args.scheduler,
        )  # fmt: skip
    except _backends.BackendUnavailable as exc:
        print(f"python -m rnn_xp train: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # options that do not go together (--scheduler without dask)
        print(f"python -m rnn_xp train: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _scheduler(text) -> str:
    """A Dask scheduler for ``train``: a name, or a scheduler's address."""
    from .train import SCHEDULERS

    if text in SCHEDULERS or "://" in text:
        return text
    raise argparse.ArgumentTypeError(
        f"must be one of {', '.join(SCHEDULERS)} or an address such as tcp://host:8786; got {text!r}"
    )


def _seed(text) -> int:
    """A seed for ``numpy.random.default_rng``: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer; got {text!r}")
    return value


def _add_bench_arguments(parser):
    from . import bench, bench_isolated

    bench.add_arguments(parser)
    parser.add_argument("--isolated", action="store_true",
                        help="each contender in a process of its own, for every install (see docs/cpu-kernels.md)")
    bench_isolated.add_arguments(parser)


def _bench_main(args) -> int:
    if args.isolated:
        from . import bench_isolated

        return bench_isolated.main_from_args(args)
    from . import bench

    return bench.main_from_args(args)


def build_parser():
    parser = _Parser(prog="python -m rnn_xp", description="rnn_xp: a simple RNN on every Array API library")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="run the seed programs on every installed backend")
    demo.add_argument("--backend", default="all", choices=("all", *_backends.NAMES))
    demo.add_argument("--seed", type=_seed, default=0)
    demo.set_defaults(func=_demo)
    tr = sub.add_parser("train", help="train a small RNN with the hand-written backward pass")
    tr.add_argument("--task", default="sine", choices=("sine", "adding"))
    tr.add_argument("--backend", default="numpy", choices=_backends.NAMES)
    tr.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    tr.add_argument("--steps", type=int, default=None, help="default: 600 (sine), 4000 (adding)")
    tr.add_argument("--lr", type=float, default=None, help="default: per task and optimizer")
    tr.add_argument("--batch", type=int, default=32)
    tr.add_argument("--seq-len", type=int, default=None, help="default: 40 (sine), 20 (adding)")
    tr.add_argument("--hidden", type=int, default=32)
    tr.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    tr.add_argument("--seed", type=_seed, default=0)
    tr.add_argument("--log-every", type=int, default=50)
    tr.add_argument("--plot", default="rnn_xp_loss.png", help="PNG path for the loss curve, or 'none'")
    tr.add_argument(
        "--scheduler", type=_scheduler, default=None,
        help="with --backend dask: threads (the default), synchronous, local-cluster (two worker "
             "processes on 127.0.0.1) or a running scheduler's address tcp://host:port",
    )  # fmt: skip
    tr.set_defaults(func=_train)
    bench = sub.add_parser("bench", help="time the forward pass against torch.nn.RNN")
    _add_bench_arguments(bench)
    bench.set_defaults(func=_bench_main)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
