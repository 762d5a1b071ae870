"""PyTorch: any cell's recurrence as one autograd node whose backward is rnn_xp's, and Elman's in-place loops.

Left to itself, autograd records every operation of the portable loop: a few
nodes and saved tensors per time step, walked back one by one. When the
caller's tensors need gradients, ``scan_cell_torch`` runs the recurrence of
any cell (``rnn_xp.cells``: Elman, LSTM, GRU) inside one
``torch.autograd.Function`` instead::

    forward:   seqs, finals = loop(x, state0, w)              nothing recorded; keeps seqs
    backward:  dx, dstate0, dw = _backward(d_seqs, d_finals; x, state0, w, seqs)

``seqs`` (each part's states: ``h``, and an LSTM's ``c``) are the node's own
outputs, so it keeps no more than the states the caller gets back (with
``return_sequences=False`` it still keeps them: the backward reads them).
The Function has ``setup_context`` and ``generate_vmap_rule``, so
``torch.func.grad``, ``vjp``, ``jacrev`` and ``vmap`` run it too;
``create_graph=True`` (a double backward) works because a backward that
itself records runs the portable loop (``portable.backward_cell``), whose
operations autograd differentiates (the states it reads come from this
node, so the second derivative flows back through it as well).

The loops. Every cell runs ``portable.scan_cell`` and
``portable.backward_cell``, the loops that define rnn_xp's answer. The
plain Elman recurrence (tanh or relu, no ``clip``, no ``mask``) on plain
tensors, without a graph to record (``torch.no_grad``,
``torch.inference_mode``, tensors that need no gradient, the inside of the
Function), runs in place instead, like the NumPy kernels:

- forward: ``out (T, B, H)`` holds the input projection ``x @ Wx.T + b``
  (one product), and step t updates ``out[t]`` in place,
  ``out[t] += h @ Wh.T`` then ``f`` in place: two calls per step.
- backward, a block of time steps at a time (at most ``_BLOCK_ELEMENTS``
  elements, so its memory does not grow with T): ``dz (steps, B, H)`` first
  holds ``leak * f'(z_t)`` (read off ``h_seq``); step t multiplies ``dz[t]``
  by the gradient reaching ``h_t`` and writes ``dz[t] @ Wh + dh[t-1]`` (one
  ``addmm``) into a ``(B, H)`` buffer: two calls per step. The block then
  adds its share of ``dWx``, ``dWh`` and ``db`` and writes its ``dx``, one
  product or sum each.

Tensors that ``torch.func`` wraps (``vmap``'s batched tensors), tensor
subclasses, tracing under ``torch.compile`` and a backward that records run
the portable loops: they are plain out-of-place tensor code that every
transform understands.

``scan_torch`` and ``backward_torch`` are the Elman kernels' signatures
(``portable.scan_portable``'s) over these; an option no cell names (one a
newer forward adds) runs the portable Elman loops, under the same node.

``torch.autocast``: rnn_xp computes in its inputs' dtype, so the loops here
run with autocast turned off (``autocast_off``; ``kernels.own_precision``
does the same for the single-step functions).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .._compat import is_array, namespace_of
from ..cells import ElmanWeights
from .autodiff import backward_options, framework_autodiff, split_options, with_bias
from .portable import backward_cell, backward_portable, elman_options, per_part, scan_cell, scan_portable

__all__ = ["autocast_off", "backward_cell_torch", "backward_torch", "scan_cell_torch", "scan_torch"]

# The backward loop holds dz and the previous states for a block of time steps
# of at most this many elements (4 MiB in float32), and at least one step.
_BLOCK_ELEMENTS = 1 << 20


# -- any cell ----------------------------------------------------------------------------------


def scan_cell_torch(xp, cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None):
    """``portable.scan_cell`` for torch tensors: one autograd node with rnn_xp's backward, or a loop."""
    state0 = tuple(state0)
    with autocast_off(x):
        if not _records(x, *state0, *w):
            return _loop(xp, cell, x, state0, w, lengths, mask, reverse, return_sequences)
        if framework_autodiff():
            return scan_cell(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                             return_sequences=return_sequences, mask=mask)  # fmt: skip
        spec = _Spec(cell, bool(reverse), len(state0), type(w))
        out = _Recurrence.apply(spec, lengths, mask, x, *state0, *w)
        seqs, finals = tuple(out[:len(state0)]), tuple(out[len(state0):])
        return (seqs if return_sequences else None), finals


def backward_cell_torch(xp, cell, d_out, x, state0, w, seqs, d_finals, *, lengths, reverse, mask=None):
    """``portable.backward_cell`` for torch tensors: in place for plain Elman, recorded when autograd records."""
    with autocast_off(x):
        return _backward(xp, cell, d_out, x, tuple(state0), w, tuple(seqs), tuple(d_finals), lengths,
                         mask, reverse)  # fmt: skip


def _loop(xp, cell, x, state0, w, lengths, mask, reverse, return_sequences):
    """The forward without recording: in place for plain Elman on plain tensors, else the portable loop."""
    if _inplace(cell, mask) and _plain(x, *state0, *w):
        h_seq, h_last = _scan_inplace(x, state0[0], w.Wx, w.Wh, w.b, nonlinearity=cell.nonlinearity,
                                      lengths=lengths, reverse=reverse, leak=cell.leak,
                                      return_sequences=return_sequences)  # fmt: skip
        return (None if h_seq is None else (h_seq,)), (h_last,)
    return scan_cell(xp, cell, x, state0, w, lengths=lengths, reverse=reverse,
                     return_sequences=return_sequences, mask=mask)  # fmt: skip


def _backward(xp, cell, d_out, x, state0, w, seqs, d_finals, lengths, mask, reverse, need_dx=True):
    """``backward_cell``'s results; with ``need_dx=False`` the in-place loop leaves ``dx`` out (``None``)."""
    d_seqs = per_part(d_out, len(state0))
    arrays = (x, *state0, *w, *seqs, *d_seqs, *d_finals)
    if _inplace(cell, mask) and not _records(*arrays) and _plain(*arrays):
        dx, dh0, dWx, dWh, db = _backward_inplace(
            d_seqs[0], x, state0[0], w.Wx, w.Wh, seqs[0], d_finals[0], nonlinearity=cell.nonlinearity,
            lengths=lengths, reverse=reverse, leak=cell.leak, need_dx=need_dx,
        )  # fmt: skip
        return dx, (dh0,), type(w)(dWx, dWh, db)
    return backward_cell(xp, cell, d_seqs, x, state0, w, seqs, d_finals, lengths=lengths,
                         reverse=reverse, mask=mask)  # fmt: skip


def _inplace(cell, mask):
    """True when the in-place loops run the cell: plain Elman (tanh or relu, any leak), no mask."""
    return cell.name == "elman" and cell.plain and mask is None


def _records(*arrays):
    """True when autograd would record operations on these tensors."""
    import torch

    return torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in arrays)


def _plain(*arrays):
    """True for plain tensors outside ``torch.compile``'s tracing (no ``torch.func`` wrapper, no subclass)."""
    import torch

    if torch.compiler.is_compiling():
        return False
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if wrapped is None:  # a torch without it: take the portable loops
        return False
    return all(
        a is None or (type(a) in (torch.Tensor, torch.nn.Parameter) and not wrapped(a))
        for a in arrays
    )  # fmt: skip


def autocast_off(x):
    """A context with autocast off for ``x``'s device type (rnn_xp computes in its inputs' dtype)."""
    import contextlib

    import torch

    kind = x.device.type
    available = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))
    return torch.autocast(kind, enabled=False) if available(kind) else contextlib.nullcontext()


class _Spec(NamedTuple):
    """What the autograd node runs, besides its tensors.

    ``cell``, ``reverse``, the number of the state's ``parts`` and the
    ``weights`` type (the tensors come flat: ``x``, the state's parts, the
    weights). ``settings`` and ``names``: only for Elman with options no cell
    names (the portable Elman loops then run, with every option): the
    non-array options, and the names of the array ones that follow the
    weights.
    """

    cell: object
    reverse: bool
    parts: int
    weights: type
    settings: tuple = None
    names: tuple = ()


def _make_recurrence():
    import torch

    class Recurrence(torch.autograd.Function):
        """``(*seqs, *finals)`` of a cell's recurrence, with rnn_xp's backward as its gradient."""

        generate_vmap_rule = True  # vmap runs forward and backward on batched tensors

        @staticmethod
        def forward(spec, lengths, mask, *tensors):
            x, state0, w, data = _unflatten(spec, tensors)
            xp = namespace_of(x)
            with autocast_off(x):
                if spec.settings is None:
                    seqs, finals = _loop(xp, spec.cell, x, state0, w, lengths, mask, spec.reverse, True)
                else:
                    options = {**dict(spec.settings), **dict(zip(spec.names, data)), "return_sequences": True}
                    h_seq, h_last = scan_portable(xp, x, *state0, *w, **options)
                    seqs, finals = (h_seq,), (h_last,)
            # T = 0 (or a state no step changed): an output must not be an input
            finals = tuple(f.clone() if any(f is t for t in tensors) else f for f in finals)
            return (*seqs, *finals)

        @staticmethod
        def setup_context(ctx, inputs, output):
            spec, lengths, mask, *tensors = inputs
            ctx.spec = spec
            ctx.save_for_backward(lengths, mask, *tensors, *output[:spec.parts])
            ctx.set_materialize_grads(False)  # an unused output's gradient stays None

        @staticmethod
        def backward(ctx, *grads):
            spec = ctx.spec
            lengths, mask, *saved = ctx.saved_tensors
            tensors, seqs = saved[:len(saved) - spec.parts], tuple(saved[len(saved) - spec.parts:])
            x, state0, w, data = _unflatten(spec, tensors)
            d_seqs, d_finals = tuple(grads[:spec.parts]), tuple(grads[spec.parts:])
            need_dx = ctx.needs_input_grad[3]
            xp = namespace_of(x)
            with autocast_off(x):
                if spec.settings is None:
                    dx, dstate0, dw = _backward(xp, spec.cell, d_seqs, x, state0, w, seqs, d_finals,
                                                lengths, mask, spec.reverse, need_dx)  # fmt: skip
                else:
                    options = backward_options({**dict(spec.settings), **dict(zip(spec.names, data))})
                    options = with_bias(backward_portable, options, w.b)
                    dx, dh0, dWx, dWh, db = backward_portable(xp, d_seqs[0], x, state0[0], w.Wx, w.Wh, seqs[0],
                                                              d_finals[0], **options)  # fmt: skip
                    dstate0, dw = (dh0,), type(w)(dWx, dWh, db)
            dw = tuple(None if a is None else g for a, g in zip(w, dw))  # none for a weight not given
            return (None, None, None, dx if need_dx else None, *dstate0, *dw, *(None for _ in data))

    return Recurrence


def _unflatten(spec, tensors):
    """``(x, state0, w, data)`` from the node's flat tensors."""
    n, m = spec.parts, len(spec.weights._fields)
    x, state0 = tensors[0], tuple(tensors[1:1 + n])
    w = spec.weights(*tensors[1 + n:1 + n + m])
    return x, state0, w, tuple(tensors[1 + n + m:])


class _Lazy:
    """The autograd.Function class, defined on first use (torch is imported only then)."""

    cls = None

    def apply(self, *args):
        if self.cls is None:
            type(self).cls = _make_recurrence()
        return self.cls.apply(*args)


_Recurrence = _Lazy()


# -- the Elman kernels' signatures ---------------------------------------------------------------


def scan_torch(xp, x, h0, Wx, Wh, b, **options):
    """``scan_portable`` for torch tensors: ``scan_cell_torch`` with the Elman cell of the options."""
    cell, run, extra = elman_options(options)
    if extra:
        return _extended(xp, x, h0, Wx, Wh, b, options)
    seqs, finals = scan_cell_torch(xp, cell, x, (h0,), ElmanWeights(Wx, Wh, b), lengths=run.get("lengths"),
                                   reverse=run.get("reverse", False), mask=run.get("mask"),
                                   return_sequences=run.get("return_sequences", True))  # fmt: skip
    return (None if seqs is None else seqs[0]), finals[0]


def backward_torch(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, **options):
    """``backward_portable`` for torch tensors: in place for plain Elman, unless the backward itself is recorded."""
    b = options.pop("b", None)  # the forward's bias, for a cell that recomputes z_t
    cell, run, extra = elman_options(options)
    with autocast_off(x):
        if extra:
            return backward_portable(xp, dh, x, h0, Wx, Wh, h_seq, dh_n, b=b, **options)
        dx, (dh0,), dw = _backward(xp, cell, dh, x, (h0,), ElmanWeights(Wx, Wh, b), (h_seq,), (dh_n,),
                                   run.get("lengths"), run.get("mask"), run.get("reverse", False))  # fmt: skip
    db = dw.b if dw.b is not None else xp.zeros((Wh.shape[0],), dtype=Wh.dtype, device=Wh.device)
    return dx, dh0, dw.Wx, dw.Wh, db


def _extended(xp, x, h0, Wx, Wh, b, options):
    """Elman with an option no cell names: the portable Elman loops, inside the same node when recording."""
    with autocast_off(x):
        if not _records(x, h0, Wx, Wh, b) or framework_autodiff():
            return scan_portable(xp, x, h0, Wx, Wh, b, **options)
        settings, data = split_options(options, is_array)
        spec = _Spec(None, False, 1, ElmanWeights, settings, tuple(data))
        h_seq, h_last = _Recurrence.apply(spec, None, None, x, h0, Wx, Wh, b, *data.values())
        return (h_seq if options.get("return_sequences", True) else None), h_last


# -- Elman's in-place loops ----------------------------------------------------------------------


def _scan_inplace(x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences):
    """The forward loop in place on plain tensors (see the module docstring)."""
    import torch

    T, D = x.shape[0], x.shape[-1]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)
    if T == 0 or B == 0 or H == 0:
        return scan_portable(namespace_of(x), x, h0, Wx, Wh, b, nonlinearity=nonlinearity,
                             lengths=lengths, reverse=reverse, leak=leak,
                             return_sequences=return_sequences)  # fmt: skip
    out = torch.empty((T, B, H), dtype=h0.dtype, device=h0.device)  # (T, B, H)
    x2, out2 = x.reshape(T * B, D), out.view(T * B, H)
    if b is None:
        torch.mm(x2, Wx.T, out=out2)  # the input projection, all steps at once
    else:
        torch.addmm(b, x2, Wx.T, out=out2)
    WhT = Wh.T  # (H, H): a transposed view, no copy
    steps = out.unbind(0)  # T views (B, H)
    if lengths is not None:
        t = torch.arange(T, device=out.device)[:, None]  # (T, 1)
        valid = (t < lengths.reshape(1, B)).unsqueeze(-1)  # (T, B, 1)
        valid_t, invalid_t = valid.unbind(0), (~valid).unbind(0)

    h = h0.reshape(B, H)  # (B, H)
    for t in range(T - 1, -1, -1) if reverse else range(T):
        o = steps[t]  # (B, H): holds x_t @ Wx.T + b
        o.addmm_(h, WhT)  # z_t
        if nonlinearity == "tanh":
            o.tanh_()
        else:
            o.clamp_(min=0)  # keeps NaN, as the portable loop's clip
        if leak != 1.0:
            o.mul_(leak).add_(h, alpha=1.0 - leak)
        if lengths is None:
            h = o
        else:  # past its length a sequence keeps its state and outputs zeros
            h = torch.where(valid_t[t], o, h)
            o.masked_fill_(invalid_t[t], 0)
    h_last = h.reshape(*batch, H).clone()  # not a view of the states
    if not return_sequences:
        return None, h_last
    return out.view(T, *batch, H), h_last


def _backward_inplace(dh, x, h0, Wx, Wh, h_seq, dh_n, *, nonlinearity, lengths, reverse, leak,
                      need_dx=True):  # fmt: skip
    """The backward loop in place on plain tensors, a block of time steps at a time.

    ``dz`` and the previous states are held for one block of at most
    ``_BLOCK_ELEMENTS`` elements (at least one step): beyond its results the
    loop holds two such blocks and a few ``(B, H)`` buffers, whatever T is.
    With ``need_dx=False`` the gradient of ``x`` is not formed (``None``).
    """
    import torch

    T, D = x.shape[0], x.shape[-1]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)
    if T == 0 or B == 0:
        grads = backward_portable(namespace_of(x), dh, x, h0, Wx, Wh, h_seq, dh_n,
                                  nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                                  leak=leak)  # fmt: skip
        return grads if need_dx else (None, *grads[1:])
    dtype, dev = h0.dtype, h0.device
    hs = h_seq.reshape(T, B, H)  # (T, B, H): the forward's states
    h0_2 = h0.reshape(B, H)  # (B, H)
    x3 = x.reshape(T, B, D)  # (T, B, D)
    dhs = None if dh is None else dh.reshape(T, B, H)  # (T, B, H)
    lens = None if lengths is None else lengths.reshape(B)  # (B,)
    steps = max(1, min(T, _BLOCK_ELEMENTS // max(B * H, 1)))  # time steps per block
    dz_buf = torch.empty((steps, B, H), dtype=dtype, device=dev)  # dL/dz of one block
    prev_buf = torch.empty((steps, B, H), dtype=dtype, device=dev)  # the states its steps started from
    tmp = torch.empty((B, H), dtype=dtype, device=dev)
    g = torch.zeros((B, H), dtype=dtype, device=dev) if dh_n is None else dh_n.reshape(B, H).clone()
    dx = torch.empty((T, B, D), dtype=dtype, device=dev) if need_dx else None
    dWx = torch.zeros((H, D), dtype=dtype, device=dev)
    dWh = torch.zeros((H, H), dtype=dtype, device=dev)
    db = torch.zeros((H,), dtype=dtype, device=dev)
    if lens is not None:
        gt_buf = torch.empty((B, H), dtype=dtype, device=dev)

    if lens is None and dhs is not None:
        g.add_(dhs[0 if reverse else T - 1])  # the first step's own output gradient
    # Blocks in the backward's order: a forward run is walked back from T - 1.
    starts = range(0, T, steps)
    for t0 in starts if reverse else reversed(starts):
        t1 = min(T, t0 + steps)
        n = t1 - t0
        dz, prev = dz_buf[:n], prev_buf[:n]  # (n, B, H)
        # The state step t started from: forward h_{t-1} (h0 at t = 0); reverse
        # h_{t+1} (h0 at T - 1, and at L - 1 for a sequence of length L).
        if reverse:
            m = min(t1, T - 1) - t0  # steps whose successor is in h_seq
            prev[:m] = hs[t0 + 1:t0 + 1 + m]
            prev[m:] = h0_2
            if lens is not None:
                t = torch.arange(t0 + 1, t1 + 1, device=dev)[:, None, None]  # (n, 1, 1)
                torch.where(lens[None, :, None] == t, h0_2, prev, out=prev)
        else:
            k = 1 if t0 == 0 else 0
            prev[k:] = hs[t0 - 1 + k:t1 - 1]
            prev[:k] = h0_2
        # dz = leak * f'(z_t), f(z_t) read off the states
        if leak == 1.0:
            act = hs[t0:t1]
        else:
            torch.mul(prev, -(1.0 - leak), out=dz)
            dz.add_(hs[t0:t1]).div_(leak)  # f(z_t)
            act = dz
        if nonlinearity == "tanh":
            torch.mul(act, act, out=dz)
            dz.neg_().add_(1)  # 1 - f(z)^2
        else:
            dz.copy_(act > 0)  # 1 where f(z) > 0, else 0 (NaN too)
        if leak != 1.0:
            dz.mul_(leak)

        # The loop over the block's steps, against the forward's direction.
        dzs = dz.unbind(0)
        order = range(t0, t1) if reverse else range(t1 - 1, t0 - 1, -1)
        if lens is None:
            # g is dL/dh_t, dh[t] included, as step t begins: each step's product
            # adds the output gradient of the step after it (addmm), two calls a step.
            for t in order:
                dz_t = dzs[t - t0].mul_(g)  # (B, H): dL/dz_t
                t_next = t + 1 if reverse else t - 1
                dh_next = dhs[t_next] if dhs is not None and 0 <= t_next < T else None
                if leak == 1.0:
                    if dh_next is None:
                        torch.mm(dz_t, Wh, out=g)  # dL/dh_{t-1} through z_t
                    else:
                        torch.addmm(dh_next, dz_t, Wh, out=g)  # ... and from its own output
                else:
                    torch.addmm(g, dz_t, Wh, beta=1.0 - leak, out=tmp)  # ... and through the leak
                    g, tmp = tmp, g
                    if dh_next is not None:
                        g.add_(dh_next)
        else:
            t = torch.arange(t0, t1, device=dev)[:, None, None]  # (n, 1, 1)
            valid = t < lens[None, :, None]  # (n, B, 1)
            valid_t, invalid_t = valid.unbind(0), (~valid).unbind(0)
            for t in order:
                i = t - t0
                gt = g if dhs is None else torch.add(g, dhs[t], out=gt_buf)  # dL/dh_t; g kept for frozen steps
                dz_t = dzs[i].mul_(gt)
                dz_t.masked_fill_(invalid_t[i], 0)  # frozen steps take no gradient (not even 0 * inf)
                if leak == 1.0:
                    torch.mm(dz_t, Wh, out=tmp)  # dL/dh_{t-1} through z_t
                else:
                    torch.addmm(gt, dz_t, Wh, beta=1.0 - leak, out=tmp)  # ... and through the leak
                g = torch.where(valid_t[i], tmp, g)  # a frozen step passes g through unchanged

        # The block's share of the weight gradients and dx: one product each.
        xb = x3[t0:t1]  # (n, B, D)
        if lens is not None:
            # Padding never reaches a gradient: its dz is 0, and its inputs and
            # starting states are zeroed too (0 * NaN would be NaN).
            xb = torch.where(valid, xb, 0)
            prev.masked_fill_(~valid, 0)
        dz2 = dz.view(n * B, H)  # (n*B, H)
        dWx.addmm_(dz2.T, xb.reshape(n * B, D))
        dWh.addmm_(dz2.T, prev.view(n * B, H))
        db.add_(dz2.sum(dim=0))
        if need_dx:
            torch.mm(dz2, Wx, out=dx[t0:t1].view(n * B, D))
    return (None if dx is None else dx.view(T, *batch, D)), g.reshape(*batch, H), dWx, dWh, db
