"""``python -m rnn_xp``: the command line.

Subcommands:

``demo``
    Runs the two seed programs (the column-vector CS231n-style step and the
    row loop) through rnn_xp on every installed backend and shows that each
    gives the numbers of a plain float64 NumPy loop.

``train``
    Trains a small RNN with the hand-written backward pass on one backend
    (see ``rnn_xp.train``) and writes the loss curve as a PNG.

``bench``
    Times the forward pass against ``torch.nn.RNN`` and the seed loop on
    every installed backend; writes JSON and a chart (``--quick`` for a
    short run, ``--gpu`` for the GPU grid).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import _backends

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _demo(args) -> int:
    from . import columns, rnn_forward

    names = _backends.NAMES if args.backend == "all" else (args.backend,)
    rng = np.random.default_rng(args.seed)

    # Seed 000: column vectors, x (D, 1), a list of T steps.
    D, H, T = 3, 2, 4
    Wx = rng.standard_normal((H, D)) * 0.01
    Wh = rng.standard_normal((H, H)) * 0.01
    b = np.zeros((H, 1))
    h0 = np.zeros((H, 1))
    x_seq = [rng.standard_normal((D, 1)) for _ in range(T)]
    ref0 = np.zeros((T, H, 1))
    prev = h0
    for t in range(T):
        prev = np.tanh(np.dot(Wx, x_seq[t]) + np.dot(Wh, prev) + b)
        ref0[t] = prev
    hidden_states = columns.rnn_forward(x_seq, h0, Wx, Wh, b)
    print("seed 000: rnn_xp.columns.rnn_forward on NumPy")
    for t, h in enumerate(hidden_states):
        print(f"Timestep {t} hidden state:\n{h.squeeze()}")

    # Seed 003: rows, inputs (T, D) -> (T, H).
    inputs = rng.random((42, 32))
    W = rng.random((64, 32)) * 0.05
    U = rng.random((64, 64)) * 0.05
    b3 = rng.random(64)
    ref3, state = [], np.zeros(64)
    for input_t in inputs:
        state = np.tanh(np.dot(W, input_t) + np.dot(U, state) + b3)
        ref3.append(state)
    ref3 = np.stack(ref3)
    print("\nseed 003: rnn_xp.rnn_forward(inputs (42, 32), state (64,), W, U, b) -> (42, 64)")
    print(f"last output (first 4 of 64): {rnn_forward(inputs, np.zeros(64), W, U, b3)[-1, :4]}")

    print(f"\n{'backend':<18}{'device':<22}{'dtype':<9}{'seed 000 max|diff|':>20}{'seed 003 max|diff|':>20}")
    failures = 0
    for name in names:
        try:
            xp, dev = _backends.load(name)
        except _backends.BackendUnavailable as exc:
            print(f"{name:<18}skipped: {exc}")
            continue
        for dtype in ("float32", "float64"):
            cast = lambda a: xp.asarray(np.asarray(a, dtype=dtype), device=dev)  # noqa: E731
            out0 = columns.rnn_forward([cast(s) for s in x_seq], cast(h0), cast(Wx), cast(Wh), cast(b))
            out3 = rnn_forward(cast(inputs), cast(np.zeros(64)), cast(W), cast(U), cast(b3))
            d0 = float(np.max(np.abs(_backends.to_host(out0) - ref0)))
            d3 = float(np.max(np.abs(_backends.to_host(out3) - ref3)))
            tol = 1e-5 if dtype == "float32" else 1e-12
            ok = d0 <= tol and d3 <= tol
            failures += not ok
            print(f"{name:<18}{str(dev)[:20]:<22}{dtype:<9}{d0:>20.2e}{d3:>20.2e}  {'ok' if ok else 'MISMATCH'}")
    return 1 if failures else 0


def _train(args) -> int:
    from . import train  # imported only for this subcommand

    try:
        train.train(
            args.task, backend=args.backend, steps=args.steps, batch=args.batch,
            seq_len=args.seq_len, hidden=args.hidden, optimizer=args.optimizer, lr=args.lr,
            dtype=args.dtype, seed=args.seed, log_every=args.log_every,
            plot=None if args.plot == "none" else args.plot,
        )  # fmt: skip
    except _backends.BackendUnavailable as exc:
        print(f"python -m rnn_xp train: error: {exc}", file=sys.stderr)
        return 1
    return 0


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
    from . import _bench

    _bench.add_arguments(parser)


def _bench_main(args) -> int:
    from . import _bench

    return _bench.main_from_args(args)


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
