"""rnn_xp inside PyTorch's machinery: autograd with rnn_xp's backward, torch.func, torch.compile, no_grad, autocast.

Every cell (Elman, LSTM, GRU: a ``cell`` parameter) runs one autograd node
whose backward is rnn_xp's (``kernels.torch``). References: torch autograd of
the portable loop (``kernels.portable.scan_portable`` and ``scan_cell`` on
torch tensors, ``cell_cases.portable``, or ``RNN_XP_AUTODIFF=framework``),
Python loops over examples, and the float64 NumPy loop of
``support.reference_rnn``. The in-place loops of ``kernels.torch`` are held
against the portable loops.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from cell_cases import CELLS, GRID as CELL_GRID, arrays, grid_id, portable, public, split
from support import optional_import, random_rnn, reference_rnn

import rnn_xp
from rnn_xp.kernels import torch as torch_kernel
from rnn_xp.kernels.portable import backward_portable, scan_portable

torch = optional_import("torch")
pytestmark = pytest.mark.skipif(torch is None, reason="torch not installed")
if torch is not None:
    import array_api_compat.torch as txp

RTOL, ATOL = 1e-10, 1e-12  # float64


def _inputs(rng, T=4, batch=(3,), D=2, H=5, requires_grad=True, dtype="float64"):
    arrays = [torch.asarray(a.astype(dtype)) for a in random_rnn(rng, T, batch, D, H)]
    return tuple(a.requires_grad_(requires_grad) for a in arrays)


def _close(actual, expected, rtol=RTOL, atol=ATOL):
    for a, e in zip(actual, expected):
        if e is None:
            assert a is None
            continue
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=True)


def _torch(a, options=None, requires_grad=True):
    """A call's arrays as float64 tensors (leaves needing gradients), and its options as tensors."""
    a = {k: torch.asarray(v).requires_grad_(requires_grad) for k, v in a.items()}
    options = {k: torch.asarray(v) if k in ("lengths", "mask") else v for k, v in (options or {}).items()}
    return a, options


def _cell_loss(outputs):
    """``cell_cases.weights_of`` in torch (no NumPy inside torch.compile)."""
    return sum((torch.sin(o) * torch.arange(1, o.shape[-1] + 1, dtype=o.dtype) / o.shape[-1]).sum()
               for o in outputs)  # fmt: skip


def _loss(h_seq, h_last):
    """A loss that weighs every state differently, so each gradient term counts."""
    total = torch.cos(h_last).sum()
    if h_seq is None:
        return total
    return total + (torch.sin(h_seq) * torch.arange(1, h_seq.shape[-1] + 1, dtype=h_seq.dtype)).sum()


# -- the gradient is rnn_xp's backward, equal to autograd of the portable loop --------------------

GRID = list(itertools.product([None, (4, 0, 2)], [False, True], [1.0, 0.6], [True, False]))


@pytest.mark.parametrize("lengths, reverse, leak, return_sequences", GRID)
def test_grad_equals_autograd_of_the_portable_loop(rng, lengths, reverse, leak, return_sequences):
    args = _inputs(rng)
    lens = None if lengths is None else torch.asarray(lengths)
    nonlinearity = "relu" if leak == 0.6 else "tanh"  # both activations, each with both leaks over the grid
    options = dict(nonlinearity=nonlinearity, lengths=lens, reverse=reverse, leak=leak,
                   return_sequences=return_sequences)  # fmt: skip
    out = rnn_xp.rnn_forward(*args, **options)
    assert "Recurrence" in type(out.grad_fn).__name__  # one node, not T steps of graph
    ours = torch.autograd.grad(_loss(out, out[-1]) if return_sequences else _loss(None, out), args)
    h_seq, h_last = scan_portable(txp, *args, **options)
    theirs = torch.autograd.grad(_loss(h_seq, h_seq[-1] if return_sequences else h_last), args)
    _close(ours, theirs)


@pytest.mark.parametrize("case", CELL_GRID, ids=grid_id)
def test_cell_grad_equals_autograd_of_the_portable_loop(rng, case):
    """Every cell: the node's backward against autograd of the portable loop, for every array."""
    cell, options = case
    a, options = _torch(*split(rng, cell, options))
    ours = public(cell, a, **options)
    assert all("Recurrence" in type(o.grad_fn).__name__ for o in ours)  # one node, not T steps of graph
    theirs = portable(txp, cell, a, **options)
    _close(ours, theirs)
    _close(torch.autograd.grad(_cell_loss(ours), list(a.values())),
           torch.autograd.grad(_cell_loss(theirs), list(a.values())))  # fmt: skip


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T, batch", [(0, (3,)), (4, (0,)), (3, ())])
def test_cell_empty_time_batch_and_unbatched(rng, cell, T, batch):
    a, _ = _torch(arrays(rng, cell, T=T, batch=batch))
    ours, theirs = public(cell, a, reverse=True), portable(txp, cell, a, reverse=True)
    _close(ours, theirs)
    wrt = list(a.values())
    loss = lambda outs: _cell_loss(outs) + sum(o.sum() for o in outs)  # noqa: E731
    reference = loss(theirs)  # (a GRU over T = 0 steps: a constant, no graph)
    want = torch.autograd.grad(reference, wrt, allow_unused=True) if reference.requires_grad else [None] * len(wrt)
    want = [torch.zeros_like(p) if g is None else g for p, g in zip(wrt, want)]  # None: no entry to reach
    _close(torch.autograd.grad(loss(ours), wrt), want)


def test_layer_grad_with_h_n_and_batch_first(rng, monkeypatch):
    """Both outputs of RNN (output and h_n) flow back to x, h0 and every parameter."""
    rnn = rnn_xp.RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True, leak=0.75,
                     xp=torch, dtype="float64", seed=1)  # fmt: skip
    for p in rnn.params.values():
        p.requires_grad_()
    x = torch.asarray(rng.standard_normal((3, 5, 3))).requires_grad_()  # (B, T, D)
    h0 = torch.asarray(rng.standard_normal((4, 3, 4)) * 0.5).requires_grad_()
    lens = torch.asarray([5, 0, 3])
    wrt = (x, h0, *rnn.params.values())

    def grads():
        output, h_n = rnn(x, h0, lengths=lens)
        return torch.autograd.grad(_loss(output, h_n), wrt)

    ours = grads()
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    _close(ours, grads())


@pytest.mark.parametrize("cell", CELLS)
def test_backward_runs_rnn_xps_backward(rng, monkeypatch, cell):
    calls = []
    real = torch_kernel._backward  # as the Function calls it
    monkeypatch.setattr(torch_kernel, "_backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, _ = _torch(arrays(rng, cell))
    _cell_loss(public(cell, a)).backward()
    assert len(calls) == 1
    grads = [p.grad for p in a.values()]
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    out = public(cell, a)
    assert "Recurrence" not in type(out[0].grad_fn).__name__
    _close(torch.autograd.grad(_cell_loss(out), list(a.values())), grads)
    assert len(calls) == 1  # autograd differentiated the loop itself


def test_double_backward_equals_autograd(rng, monkeypatch):
    x, h0, Wx, Wh, b = _inputs(rng)
    lens = torch.asarray([4, 0, 2])

    def second():
        out = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lens, leak=0.5)
        g = torch.autograd.grad(torch.tanh(out).sum(), (Wx, Wh, x), create_graph=True)
        return torch.autograd.grad(sum((gi ** 2).sum() for gi in g), (x, h0, Wx, Wh, b))

    ours = second()
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    _close(ours, second(), rtol=1e-9)


@pytest.mark.parametrize("cell, options", [("lstm", dict(lengths=[4, 0, 2], return_c_seq=True)),
                                           ("lstm", dict(mask=True, reverse=True, proj=3)),
                                           ("gru", dict(lengths=[4, 0, 2], reverse=True)),
                                           ("gru", dict(linear_before_reset=False))])  # fmt: skip
def test_cell_double_backward_equals_autograd(rng, monkeypatch, cell, options):
    """create_graph=True through the node: the recorded portable backward, differentiated again."""
    a, options = _torch(*split(rng, cell, options))
    first = ["x", "W_hh", "h0"]

    def second():
        g = torch.autograd.grad(_cell_loss(public(cell, a, **options)), [a[k] for k in first], create_graph=True)
        return torch.autograd.grad(sum((gi ** 2).sum() for gi in g), list(a.values()))

    ours = second()
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    _close(ours, second(), rtol=1e-9)


def test_float32_gradient_against_float64(rng):
    args = _inputs(rng, dtype="float32")
    args64 = tuple(a.detach().double().requires_grad_() for a in args)
    g32 = torch.autograd.grad(torch.sin(rnn_xp.rnn_forward(*args, reverse=True)).sum(), args)
    g64 = torch.autograd.grad(torch.sin(rnn_xp.rnn_forward(*args64, reverse=True)).sum(), args64)
    assert all(g.dtype == torch.float32 for g in g32)
    _close(g32, [g.float() for g in g64], rtol=2e-4, atol=2e-5)


# -- torch.func, torch.compile, no_grad / inference_mode, autocast --------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_func_grad_and_vmap_per_example_gradients(rng, cell):
    a, _ = _torch(arrays(rng, cell, batch=(4,), proj=3 if cell == "lstm" else 0), requires_grad=False)
    lens = torch.asarray([4, 0, 1, 3])
    states = [k for k in ("h0", "c0") if k in a]
    params = {k: v for k, v in a.items() if k != "x" and k not in states}

    def loss(params, xi, si, li):  # one example: xi (T, D), si the state's parts (S_k,)
        return _cell_loss(public(cell, {**params, "x": xi, **si}, lengths=li, reverse=cell == "gru"))

    s = {k: a[k] for k in states}
    per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 1, 0, 0))(params, a["x"], s, lens)
    for i in range(4):
        si = {k: v[i] for k, v in s.items()}
        one = torch.func.grad(loss)(params, a["x"][:, i], si, lens[i])
        p = {k: q.clone().requires_grad_() for k, q in params.items()}
        autograd = torch.autograd.grad(loss(p, a["x"][:, i], si, lens[i]), list(p.values()))
        _close(list(one.values()), autograd)
        _close([g[i] for g in per_example.values()], list(one.values()))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func's own
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_func_jacrev_of_cells(rng, monkeypatch, cell):
    a, _ = _torch(arrays(rng, cell, T=3, batch=(2,), H=3), requires_grad=False)
    f = lambda W, x: public(cell, {**a, "W_hh": W, "x": x}, reverse=True)[0]  # noqa: E731
    jac = torch.func.jacrev(f, argnums=(0, 1))(a["W_hh"], a["x"])
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    _close(jac, torch.func.jacrev(f, argnums=(0, 1))(a["W_hh"], a["x"]))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func's own
def test_func_jacrev(rng, monkeypatch):
    x, h0, Wx, Wh, b = _inputs(rng, T=3, batch=(2,), D=2, H=3, requires_grad=False)
    f = lambda W, x: rnn_xp.rnn_forward(x, h0, W, Wh, b, reverse=True)  # noqa: E731
    jac = torch.func.jacrev(f, argnums=(0, 1))(Wx, x)
    assert jac[0].shape == (3, 2, 3, 3, 2) and jac[1].shape == (3, 2, 3, 3, 2, 2)
    monkeypatch.setenv("RNN_XP_AUTODIFF", "framework")
    _close(jac, torch.func.jacrev(f, argnums=(0, 1))(Wx, x))
    # forward mode: torch.func.jvp needs the framework's autodiff (documented)
    _, tangent = torch.func.jvp(lambda W: f(W, x), (Wx,), (torch.ones_like(Wx),))
    _close([tangent], [torch.einsum("tbhij,ij->tbh", jac[0], torch.ones_like(Wx))])


@pytest.mark.parametrize("cell", ["elman", "lstm"])  # a GRU layer: test_frameworks_layers.py
def test_torch_compile_agrees_with_eager(rng, cell):
    a, _ = _torch(arrays(rng, cell, T=3))
    lens = torch.asarray([3, 0, 2])
    name = "Wx" if cell == "elman" else "W_ih"
    x, Wx = a["x"], a[name]

    def f(x, Wx):
        return _cell_loss(public(cell, {**a, "x": x, name: Wx}, lengths=lens, reverse=True))

    eager = f(x, Wx)
    eager_grads = torch.autograd.grad(eager, (x, Wx))
    _close(eager_grads, torch.autograd.grad(_cell_loss(portable(txp, cell, a, lengths=lens, reverse=True)), (x, Wx)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # graph-break notices
        compiled = torch.compile(f, backend="aot_eager")(x, Wx)
    _close([compiled], [eager])
    _close(torch.autograd.grad(compiled, (x, Wx)), eager_grads)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cells_under_no_grad_and_inference_mode(rng, mode, cell):
    a, _ = _torch(arrays(rng, cell))
    with getattr(torch, mode)():
        outs = public(cell, a, lengths=torch.asarray([4, 0, 2]))
    assert all(o.grad_fn is None and not o.requires_grad for o in outs)
    with torch.no_grad():
        _close(outs, portable(txp, cell, a, lengths=torch.asarray([4, 0, 2])))


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_no_grad_and_inference_mode(rng, mode):
    x, h0, Wx, Wh, b = _inputs(rng)
    expected, _ = reference_rnn(*(a.detach().numpy() for a in (x, h0, Wx, Wh, b)), leak=0.5)
    with getattr(torch, mode)():
        out = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, leak=0.5)
        rnn = rnn_xp.RNN(2, 5, xp=torch, dtype="float64", seed=0)
        layer_out, _ = rnn(x.detach())
    assert out.grad_fn is None and not out.requires_grad
    _close([out], [torch.asarray(expected)])
    assert layer_out.shape == (4, 3, 5)


def test_autocast_runs_in_the_inputs_dtype(rng):
    """Under torch.autocast rnn_xp computes in its inputs' dtype: float32 in, float32 out, same values."""
    x, h0, Wx, Wh, b = _inputs(rng, dtype="float32")
    plain = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    plain_grads = torch.autograd.grad(plain.sum(), (x, Wx))
    step = rnn_xp.rnn_step_forward(x[0], h0, Wx, Wh, b)
    step_back = rnn_xp.rnn_step_backward(torch.ones_like(step), x[0], h0, Wx, Wh, step)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
        grads = torch.autograd.grad(out.sum(), (x, Wx))
        step_out = rnn_xp.rnn_step_forward(x[0], h0, Wx, Wh, b)
        back_out = rnn_xp.rnn_step_backward(torch.ones_like(step), x[0], h0, Wx, Wh, step)
        assert (x[0] @ Wx.T).dtype == torch.bfloat16  # autocast is on around rnn_xp
    assert out.dtype == step_out.dtype == torch.float32
    _close([out, *grads, step_out, *back_out], [plain, *plain_grads, step, *step_back], rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cells_under_autocast_run_in_the_inputs_dtype(rng, cell):
    a, _ = _torch({k: v.astype("float32") for k, v in arrays(rng, cell).items()})
    plain = public(cell, a)
    plain_grads = torch.autograd.grad(_cell_loss(plain), (a["x"], a["W_ih"]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = public(cell, a)
        grads = torch.autograd.grad(_cell_loss(outs), (a["x"], a["W_ih"]))
    assert all(o.dtype == torch.float32 for o in (*outs, *grads))
    _close([*outs, *grads], [*plain, *plain_grads], rtol=0, atol=0)


# -- devices -----------------------------------------------------------------------------------


def test_a_genuinely_different_device_still_raises(rng):
    x, h0, Wx, Wh, b = _inputs(rng, requires_grad=False)
    with pytest.raises(ValueError, match="is on device meta but x is on device cpu"):
        rnn_xp.rnn_forward(x, None, Wx.to("meta"), Wh, b)
    # all on one device that has no autocast (meta: shapes only) still runs
    out = rnn_xp.rnn_forward(*(a.to("meta") for a in (x, h0, Wx, Wh, b)), reverse=True)
    assert out.device.type == "meta" and out.shape == (4, 3, 5)


# -- the in-place loops against the portable loops, on the edge catalogue --------------------------

EDGES = [  # (T, batch, D, H, lengths, reverse, leak, nonlinearity)
    (0, (2,), 3, 4, None, False, 1.0, "tanh"),
    (4, (0,), 3, 4, None, True, 1.0, "tanh"),
    (3, (), 2, 3, None, False, 0.3, "relu"),
    (5, (2, 3), 2, 3, None, True, 1.0, "tanh"),
    (5, (3,), 2, 4, (0, 5, 2), True, 0.5, "tanh"),
    (5, (3,), 2, 4, (0, 5, 2), False, 0.5, "relu"),
    (5, (3,), 2, 4, (5, 5, 5), True, 1.0, "relu"),
    (1, (3,), 2, 4, (1, 0, 1), False, 1.0, "tanh"),
]


@pytest.mark.parametrize("T, batch, D, H, lengths, reverse, leak, nonlinearity", EDGES)
def test_inplace_loops_against_portable(rng, monkeypatch, T, batch, D, H, lengths, reverse, leak, nonlinearity):
    if T >= 4:  # the backward in blocks of two steps (and a last, shorter one for T = 5)
        monkeypatch.setattr(torch_kernel, "_BLOCK_ELEMENTS", 2 * int(np.prod(batch, dtype=int)) * H)
    x, h0, Wx, Wh, b = _inputs(rng, T, batch, D, H, requires_grad=False)
    if x.numel():  # NaN and Inf travel as in the portable loop
        x.view(-1)[0] = float("nan")
        x.view(-1)[-1] = float("inf")
    options = dict(nonlinearity=nonlinearity, reverse=reverse, leak=leak,
                   lengths=None if lengths is None else torch.asarray(lengths))  # fmt: skip
    for sequences in (True, False):
        got = torch_kernel.scan_torch(txp, x, h0, Wx, Wh, b, return_sequences=sequences, **options)
        want = scan_portable(txp, x, h0, Wx, Wh, b, return_sequences=sequences, **options)
        _close(got, want)
    h_seq = scan_portable(txp, x, h0, Wx, Wh, b, return_sequences=True, **options)[0]
    dh = torch.asarray(rng.standard_normal(tuple(h_seq.shape)))
    dh_n = torch.asarray(rng.standard_normal(tuple(h0.shape)))
    for upstream in ((dh, dh_n), (None, dh_n), (dh, None)):
        got = torch_kernel.backward_torch(txp, upstream[0], x, h0, Wx, Wh, h_seq, upstream[1], **options)
        want = backward_portable(txp, upstream[0], x, h0, Wx, Wh, h_seq, upstream[1], **options)
        _close(got, want)


def test_options_the_loops_do_not_know_travel_to_the_portable_loops(rng, monkeypatch):
    """A newer option (here a setting and an array) reaches the portable forward and backward, with the bias."""
    seen = {}

    def scan(xp, *args, extra_setting, extra_data, **options):
        seen["forward"] = (extra_setting, extra_data)
        return scan_portable(xp, *args, **options)

    def backward(xp, *args, extra_setting, extra_data, b=None, **options):
        seen["backward"] = (extra_setting, extra_data, b)
        return backward_portable(xp, *args, **options)

    x, h0, Wx, Wh, b = _inputs(rng)
    options = dict(nonlinearity="tanh", lengths=None, reverse=True, leak=0.6, return_sequences=True)
    want = torch.autograd.grad(torch.sin(rnn_xp.rnn_forward(x, h0, Wx, Wh, b, **options)).sum(), (x, Wx, b))
    monkeypatch.setattr(torch_kernel, "scan_portable", scan)
    monkeypatch.setattr(torch_kernel, "backward_portable", backward)
    extra = torch.ones(3)
    h_seq, _ = torch_kernel.scan_torch(txp, x, h0, Wx, Wh, b, extra_setting=0.5, extra_data=extra, **options)
    assert "Recurrence" in type(h_seq.grad_fn).__name__
    _close(torch.autograd.grad(torch.sin(h_seq).sum(), (x, Wx, b)), want)
    assert seen["forward"][0] == 0.5 and seen["forward"][1] is extra
    assert seen["backward"][0] == 0.5 and seen["backward"][1] is extra and seen["backward"][2] is b
