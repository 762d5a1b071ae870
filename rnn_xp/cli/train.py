"""Train a small RNN with the hand-written backward pass, on any array library.

The model is ``rnn_forward`` followed by a linear read-out ``y = h @ Wy.T + by``;
its gradients come from ``rnn_backward``, and plain SGD or Adam update the
weights, all written in the array namespace of the chosen backend (so it
trains on NumPy and CuPy, which have no autograd, as well as on torch or JAX).

Two tasks with a known answer:

``sine``
    Next-step prediction of a noisy sine: ``s_t = sin(w t + phase) + noise``
    with a random phase per sequence, the input is ``s_t`` and the target
    ``s_{t+1}``. Predicting 0 costs about ``0.5 + sigma**2``; no model can go
    below ``sigma**2`` (the target's own noise).
``adding``
    The adding problem: inputs are pairs (a number in [0, 1), a marker); two
    steps are marked, one in each half, and the target at the end is the sum
    of the two marked numbers. Always answering 1 costs 1/6; a model that
    adds costs 0. The loss is on the final state only, so the gradient
    enters through ``dh_n``.

On Dask (``backend="dask"``) the training batch is a Dask array chunked
along the batch, one chunk per worker thread, and the weights stay NumPy
arrays in this process: each step builds the graph of the loss and of every
gradient (``rnn_forward`` and ``rnn_backward`` run one task per batch
chunk), computes it in one ``dask.compute`` call on the chosen scheduler,
and updates the weights in NumPy. ``scheduler`` picks Dask's threads, the
synchronous scheduler, a ``LocalCluster`` of two worker processes on
127.0.0.1, or an existing cluster by its address (``rnn_xp.cli.train_dask``).

Run it with ``python -m rnn_xp train --help``.
"""

from __future__ import annotations

import math
import os
import time
from typing import NamedTuple

import numpy as np

from .._backends import jax_float64, jax_x64_enabled, load
from .._compat import is_dask_namespace
from ..backward import rnn_backward
from ..forward import rnn_forward
from .train_dask import CONNECT_TIMEOUT_S, SCHEDULERS, WORKERS_TIMEOUT_S, OnDask, SchedulerUnavailable, check_address

__all__ = [
    "CONNECT_TIMEOUT_S", "DEFAULTS", "SCHEDULERS", "TASKS", "WORKERS_TIMEOUT_S", "SchedulerUnavailable",
    "TrainResult", "check_address", "make_batch", "memory_needed", "train",
]  # fmt: skip

TASKS = ("sine", "adding")
SINE_PERIOD = 16.0  # steps per period of the sine
SINE_NOISE = 0.1  # standard deviation of the noise on the sine


class TrainResult(NamedTuple):
    """What ``train`` returns."""

    losses: list  # training loss (float) at every step
    initial_loss: float  # loss of the untrained model on the evaluation batch
    final_loss: float  # loss of the trained model on the same evaluation batch
    baselines: dict  # name -> loss of a simple predictor on the evaluation batch
    params: dict  # name -> trained array (Wx, Wh, b, Wy, by), in the backend's namespace
    seconds: float


def make_batch(rng, task, batch, T):
    """NumPy float64 ``(x (T, batch, D), y)`` for ``task``; ``y`` is ``(T, batch, 1)`` or ``(batch, 1)``."""
    if task == "sine":
        w = 2 * math.pi / SINE_PERIOD
        phase = rng.uniform(0, 2 * math.pi, size=(1, batch))
        s = np.sin(w * np.arange(T + 1)[:, None] + phase)  # (T + 1, batch)
        s = s + SINE_NOISE * rng.standard_normal(s.shape)
        return s[:-1, :, None], s[1:, :, None]  # (T, batch, 1) each
    if task == "adding":
        u = rng.uniform(0, 1, size=(T, batch))
        first = rng.integers(0, T // 2, size=batch)
        second = rng.integers(T // 2, T, size=batch)
        mark = np.zeros((T, batch))
        mark[first, np.arange(batch)] = 1.0
        mark[second, np.arange(batch)] = 1.0
        y = (u * mark).sum(axis=0)[:, None]  # (batch, 1)
        return np.stack([u, mark], axis=-1), y  # (T, batch, 2), (batch, 1)
    raise ValueError(f"task must be one of {list(TASKS)}; got {task!r}")


def baselines(task, x, y):
    """Losses of simple predictors on a NumPy batch: the levels a trained model must beat."""
    if task == "sine":
        return {
            "predict 0": float(np.mean(y**2)),
            "repeat the input": float(np.mean((y - x) ** 2)),
            "noise floor": SINE_NOISE**2,
        }
    return {"predict 1": float(np.mean((y - 1.0) ** 2)), "exact sum": 0.0}


def init_params(rng, D, H, xp, dtype, device):
    """Seeded NumPy draws moved to the backend: the same seed gives the same start everywhere."""
    raw = {
        "Wx": rng.standard_normal((H, D)) / math.sqrt(D),
        "Wh": rng.standard_normal((H, H)) * 0.9 / math.sqrt(H),
        "b": np.zeros(H),
        "Wy": rng.standard_normal((1, H)) * 0.1 / math.sqrt(H),
        "by": np.zeros(1),
    }
    return {k: xp.asarray(v.astype(dtype), device=device) for k, v in raw.items()}


def loss_and_grads(xp, task, p, x, y, *, with_grads=True, count=None):
    """Mean squared error of the model on ``(x, y)``, and its gradient for every parameter.

    ``count`` is the number of terms the mean divides by, all of ``(x, y)``'s
    by default; a chunk of a larger batch passes the whole batch's, so that
    the chunks' losses and gradients add up to the batch's.
    """
    h = rnn_forward(x, None, p["Wx"], p["Wh"], p["b"])  # (T, B, H)
    if task == "sine":
        feats = h  # (T, B, H): a prediction at every step
    else:
        feats = h[-1, ...]  # (B, H): one prediction, at the end
    pred = feats @ p["Wy"].T + p["by"]  # (T, B, 1) or (B, 1)
    err = pred - y  # same shape
    loss = xp.mean(err * err) if count is None else xp.sum(err * err) / count  # ()
    if not with_grads:
        return loss, None

    dpred = (2.0 / (math.prod(err.shape) if count is None else count)) * err  # (T, B, 1) or (B, 1)
    axes = list(range(err.ndim - 1))
    dWy = xp.tensordot(dpred, feats, axes=(axes, axes))  # (1, H)
    dby = xp.sum(dpred, axis=tuple(axes))  # (1,)
    dfeats = dpred @ p["Wy"]  # (T, B, H) or (B, H)
    if task == "sine":
        g = rnn_backward(dfeats, x, None, p["Wx"], p["Wh"], p["b"], h)
    else:
        g = rnn_backward(None, x, None, p["Wx"], p["Wh"], p["b"], h, dh_n=dfeats)
    return loss, {"Wx": g.dWx, "Wh": g.dWh, "b": g.db, "Wy": dWy, "by": dby}


def clip_by_norm(xp, grads, max_norm):
    """Scale all gradients together so that their joint norm is at most ``max_norm`` (no branching)."""
    norm = xp.sqrt(sum(xp.sum(g * g) for g in grads.values()))  # ()
    scale = max_norm / xp.maximum(norm, max_norm)  # () in (0, 1]
    return {k: g * scale for k, g in grads.items()}


class SGD:
    """Plain gradient descent: ``p <- p - lr * g``."""

    def __init__(self, xp, params, lr):
        self.lr = lr

    def step(self, params, grads):
        return {k: p - self.lr * grads[k] for k, p in params.items()}


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction, written with array operations only."""

    def __init__(self, xp, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.xp, self.lr, self.beta1, self.beta2, self.eps = xp, lr, beta1, beta2, eps
        self.m = {k: xp.zeros_like(p) for k, p in params.items()}
        self.v = {k: xp.zeros_like(p) for k, p in params.items()}
        self.t = 0

    def step(self, params, grads):
        xp, b1, b2 = self.xp, self.beta1, self.beta2
        self.t += 1
        lr_t = self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)  # bias correction, a Python float
        new = {}
        for k, p in params.items():
            g = grads[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * (g * g)
            new[k] = p - lr_t * self.m[k] / (xp.sqrt(self.v[k]) + self.eps)
        return new


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
DEFAULTS = {
    "sine": {"steps": 600, "seq_len": 40, "lr_adam": 0.01, "lr_sgd": 0.1},
    "adding": {"steps": 4000, "seq_len": 20, "lr_adam": 0.003, "lr_sgd": 0.05},
}


def train(
    task="sine",
    *,
    backend="numpy",
    steps=None,
    batch=32,
    seq_len=None,
    hidden=32,
    optimizer="adam",
    lr=None,
    clip=1.0,
    dtype="float32",
    seed=0,
    log_every=50,
    plot=None,
    scheduler=None,
    connect_timeout=CONNECT_TIMEOUT_S,
    workers_timeout=WORKERS_TIMEOUT_S,
    quiet=False,
):
    """Train an RNN plus linear read-out on ``task`` and return a ``TrainResult``.

    Parameters
    ----------
    task : {"sine", "adding"}
        The problem (see the module docstring).
    backend : str
        An installed backend name of ``rnn_xp._backends.NAMES``.
    steps, batch, seq_len, hidden : int
        Optimizer steps, sequences per step, steps per sequence and hidden
        size; ``steps`` and ``seq_len`` default to the task's entry in
        ``DEFAULTS``.
    optimizer : {"adam", "sgd"}
        The update rule; ``lr`` defaults to the task's entry in ``DEFAULTS``.
    clip : float
        Gradients are scaled down together to this joint norm at most.
    dtype : {"float32", "float64"}
    seed : int
        Seeds the weights, the training data and the evaluation batch.
    log_every : int
        Print a progress line every this many steps, and at least every
        ``PROGRESS_S`` seconds (unless ``quiet``).
    plot : str or path, optional
        Write the loss curve to this PNG file (needs matplotlib).
    scheduler : str, optional
        Dask only (``backend="dask"``): ``"threads"`` (the default),
        ``"synchronous"``, ``"local-cluster"`` (two single-threaded worker
        processes on 127.0.0.1, started and closed here) or the address of
        a running scheduler (``"tcp://host:8786"``). The batch is split into
        one chunk per worker thread, and the weights (``params`` of the
        result too) are NumPy arrays.
    connect_timeout, workers_timeout : float
        Seconds to reach a scheduler's address, and for the first worker of
        a cluster to join; past them ``SchedulerUnavailable`` is raised
        (``CONNECT_TIMEOUT_S`` and ``WORKERS_TIMEOUT_S`` by default).

    Raises
    ------
    ValueError
        A value out of range or a malformed scheduler address, before any work.
    SchedulerUnavailable
        The scheduler cannot be reached, or no worker joined it in time.

    Examples
    --------
    >>> from rnn_xp.cli.train import train
    >>> r = train("sine", steps=30, seq_len=10, hidden=8, quiet=True)
    >>> r.final_loss < r.initial_loss
    True
    """
    if backend == "jax" and dtype == "float64" and not jax_x64_enabled():
        # JAX's 64-bit mode for this run only: rnn_xp leaves JAX's configuration alone
        with jax_float64():
            return train(**locals())  # every argument, unchanged
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}; got {task!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}; got {optimizer!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    if scheduler is not None and backend != "dask":
        raise ValueError(f"scheduler applies to backend='dask' only; got backend={backend!r}")
    if scheduler is not None and scheduler not in SCHEDULERS and "://" not in str(scheduler):
        raise ValueError(
            f"scheduler must be one of {list(SCHEDULERS)} or an address such as "
            f"'tcp://host:8786'; got {scheduler!r}"
        )
    if scheduler is not None and scheduler not in SCHEDULERS:
        try:
            check_address(scheduler)
        except ValueError as exc:
            raise ValueError(f"scheduler: {exc}") from None
    for name, value in (("connect_timeout", connect_timeout), ("workers_timeout", workers_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number above 0; got {value!r}")
    defaults = DEFAULTS[task]
    steps = defaults["steps"] if steps is None else steps
    seq_len = defaults["seq_len"] if seq_len is None else seq_len
    lr = defaults[f"lr_{optimizer}"] if lr is None else lr
    _check_values(task, steps=steps, batch=batch, seq_len=seq_len, hidden=hidden, log_every=log_every, lr=lr)
    data_xp, dev = load(backend)
    say = (lambda *a: None) if quiet else print
    with _runner(data_xp, dev, dtype, scheduler, (connect_timeout, workers_timeout)) as run:
        xp = run.xp  # the weights' namespace: NumPy's when the data are Dask arrays
        rng = np.random.default_rng(seed)
        D = 1 if task == "sine" else 2
        params = init_params(rng, D, hidden, xp, dtype, run.device)
        opt = OPTIMIZERS[optimizer](xp, params, lr)
        x_eval, y_eval = make_batch(np.random.default_rng(seed + 1), task, EVAL_BATCH, seq_len)
        base = baselines(task, x_eval, y_eval)
        x_eval, y_eval = run.data(x_eval), run.data(y_eval)
        initial = float(run.loss_and_grads(task, params, x_eval, y_eval, with_grads=False)[0])

        say(f"training on {backend} ({dev}, {dtype}{run.describe()}): task {task}, T={seq_len}, "
            f"batch {batch}, hidden {hidden}, {optimizer} lr {lr}, {steps} steps")
        say(f"untrained loss {initial:.4f}; " + ", ".join(f"{k} {v:.4f}" for k, v in base.items()))
        losses, start = [], time.perf_counter()
        said = start  # when the last progress line was printed
        for step in range(1, steps + 1):
            x, y = make_batch(rng, task, batch, seq_len)
            loss, grads = run.loss_and_grads(task, params, run.data(x), run.data(y))
            params = opt.step(params, clip_by_norm(xp, grads, clip))
            losses.append(float(loss))
            now = time.perf_counter()
            if step % log_every == 0 or step == steps or now - said >= PROGRESS_S:  # slow backends too
                say(_progress(step, steps, np.mean(losses[-log_every:]), now - start))
                said = now
        seconds = time.perf_counter() - start
        final = float(run.loss_and_grads(task, params, x_eval, y_eval, with_grads=False)[0])
    say(f"final loss {final:.4f} on the evaluation batch (untrained {initial:.4f}) in {seconds:.1f} s")
    if plot is not None:
        write_plot(plot, losses, base, title=f"{task} on {backend}, {optimizer}")
        say(f"loss curve written to {plot}")
    return TrainResult(losses, initial, final, base, params, seconds)


PROGRESS_S = 2.0  # a progress line at least this often, however slow the steps
EVAL_BATCH = 256  # sequences of the evaluation batch


def memory_needed(task, *, steps, batch, seq_len, hidden, dtype="float32", optimizer="adam"):
    """Bytes that a run holds at once for sure, in one process: a lower bound of its peak.

    The larger of two moments, counting only arrays alive together: a
    training step's backward (the weights and the optimizer's moments, the
    evaluation batch, the step's batch as drawn in float64 and as cast, the
    states ``(T, B, H)``, their gradient and ``dWh``) and the final
    evaluation (the weights, the evaluation batch and its states), plus the
    loss of every step (a Python float each). The command line refuses a run
    whose need exceeds the memory available before any work starts.

    >>> from rnn_xp.cli.train import memory_needed
    >>> memory_needed("sine", steps=600, batch=32, seq_len=40, hidden=32)  # the defaults: 1.4 MB
    1425292
    >>> memory_needed("sine", steps=600, batch=10**12, seq_len=40, hidden=32) > 10**15
    True
    """
    s = 8 if dtype == "float64" else 4
    T, B, H = seq_len, batch, hidden
    D = 1 if task == "sine" else 2
    y_len = T if task == "sine" else 1  # targets per sequence
    params = (H * H + H * D + 2 * H + 1) * s * (3 if optimizer == "adam" else 1)  # + Adam's m and v
    eval_data = EVAL_BATCH * (T * D + y_len) * s
    losses = 32 * steps  # a list entry and a float object per step
    step = (params + eval_data + B * (T * D + y_len) * (8 + s)  # the batch: drawn in float64, then cast
            + (T * B * H + (T * B * H if task == "sine" else B * H) + H * H) * s)  # states, their gradient, dWh
    evaluation = params + eval_data + T * EVAL_BATCH * H * s + losses
    return max(step, evaluation)


def _check_values(task, *, steps, batch, seq_len, hidden, log_every, lr):
    """Every size a positive int and ``lr`` a positive finite number, before any work."""
    for name, value in (("steps", steps), ("batch", batch), ("seq_len", seq_len), ("hidden", hidden),
                        ("log_every", log_every)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if task == "adding" and seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 for the adding task (one marked step per half); got {seq_len}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number above 0; got {lr!r}")


class _InMemory:
    """Data and weights in the backend's namespace, the step as written in ``loss_and_grads``."""

    def __init__(self, xp, dev, dtype):
        self.xp, self.device, self._dtype = xp, dev, dtype

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def data(self, a):
        return self.xp.asarray(a.astype(self._dtype), device=self.device)

    def loss_and_grads(self, task, params, x, y, *, with_grads=True):
        return loss_and_grads(self.xp, task, params, x, y, with_grads=with_grads)

    def describe(self):
        return ""


def _runner(xp, dev, dtype, scheduler, timeouts=(CONNECT_TIMEOUT_S, WORKERS_TIMEOUT_S)):
    """How the loop runs: in memory, or on Dask (``train_dask.OnDask``)."""
    if is_dask_namespace(xp):
        return OnDask(dtype, scheduler, loss_and_grads, timeouts)
    return _InMemory(xp, dev, dtype)


def _progress(step, steps, loss, seconds, width=24):
    done = round(width * step / steps)
    return f"step {step:>6}/{steps} [{'#' * done}{'.' * (width - done)}] loss {loss:.4f}  {seconds:6.1f} s"


def write_plot(path, losses, base, *, title=""):
    """The training loss per step (log scale) with the baselines, as a PNG; the folder is made if missing."""
    from matplotlib.figure import Figure  # imported only when a plot is asked for

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1, label="training loss")
    for (name, value), style in zip(base.items(), ("--", ":", "-.")):
        if value > 0:
            ax.axhline(value, ls=style, color="gray", lw=1, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean squared error")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
