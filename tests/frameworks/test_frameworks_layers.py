"""Training the layers (``RNN``, ``LSTM``, ``GRU``) inside JAX and PyTorch, as their users do.

JAX: a layer is a pytree (its parameters the leaves, in torch's order), so
``jax.grad(loss)(layer)`` is a layer of gradients and ``jax.jit``,
``jax.vmap``, ``jax.checkpoint`` and ``jax.tree.map`` take layers; and
``layer.apply(params, x)`` is the call as a pure function of a parameter
dict. torch: ``requires_grad_`` and a ``torch.optim`` optimizer, and
``torch.func.grad``/``vmap`` over ``apply``.

References: ``torch.nn.RNN``/``LSTM``/``GRU`` in float64 with the same
weights (their autograd, their double backward, the same optimizer's
steps, ``torch.func.functional_call`` of the module), Python loops over
examples; rtol 1e-10.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from support import optional_import, torch_packed

import rnn_xp

torch = optional_import("torch")
jax = optional_import("jax")
pytestmark = pytest.mark.skipif(torch is None, reason="torch not installed (the reference)")
if jax is not None:
    import jax.numpy as jnp

needs_jax = pytest.mark.skipif(jax is None, reason="jax not installed")
RTOL, ATOL = 1e-10, 1e-12
D, H, P, T, B = 3, 4, 2, 5, 3
LENGTHS = [5, 2, 3]  # packed sequences take no length 0 (rnn_xp's own rule, tested elsewhere)
CELLS = ["rnn", "lstm", "gru"]


@pytest.fixture
def be():
    from support import make_backend

    if jax is None:
        pytest.skip("jax not installed")
    return make_backend("jax")  # float64 enabled for the test process


def torch_module(cell, batch_first=True, seed=0):
    """Two layers, bidirectional, an LSTM with a projection: every parameter kind."""
    torch.manual_seed(seed)
    kw = dict(num_layers=2, batch_first=batch_first, bidirectional=True, dtype=torch.float64)
    if cell == "rnn":
        return torch.nn.RNN(D, H, **kw)
    if cell == "lstm":
        return torch.nn.LSTM(D, H, proj_size=P, **kw)
    return torch.nn.GRU(D, H, **kw)


def layer_like(module, xp):
    """The rnn_xp layer of ``module``'s configuration, its weights loaded, on ``xp``."""
    cls = {torch.nn.RNN: rnn_xp.RNN, torch.nn.LSTM: rnn_xp.LSTM, torch.nn.GRU: rnn_xp.GRU}[type(module)]
    kw = dict(batch_first=module.batch_first, bidirectional=module.bidirectional, dtype="float64", seed=1)
    if cls is rnn_xp.LSTM:
        kw["proj_size"] = module.proj_size
    layer = cls(D, H, module.num_layers, **kw).load_state_dict(module.state_dict())
    return layer.to(xp=xp)


def torch_forward(module, x, lengths=None):
    """The module's output and final states (a tuple), through a packed sequence with ``lengths``."""
    out, fin = torch_packed(module, x, None, lengths)
    return out, fin if isinstance(fin, tuple) else (fin,)


def finals(result):
    """A layer's final states as a tuple: ``h_n``, or ``(h_n, c_n)``."""
    return result if isinstance(result, tuple) else (result,)


def loss_of(lib, out, fins):
    """Every output and final state weighed differently (sin, cos, feature weights), so each term counts."""
    w = lib.arange(1, out.shape[-1] + 1, dtype=out.dtype) / out.shape[-1]
    return (lib.sin(out) * w).sum() + sum(lib.cos(f).sum() for f in fins)


def torch_grads(module, x, lengths=None):
    out, fin = torch_forward(module, x, lengths)
    return dict(zip([n for n, _ in module.named_parameters()],
                    torch.autograd.grad(loss_of(torch, out, fin), list(module.parameters()))))  # fmt: skip


def close(got, want, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


# -- JAX: layers are pytrees -------------------------------------------------------------------
# Every test of one cell uses the same configuration and shapes, so that the compiled
# programs of the kernels (one per cell, direction and shape) serve them all.


@needs_jax
@pytest.mark.parametrize("cell", CELLS)
def test_jax_grad_of_a_layer_is_a_layer_of_torchs_gradients(be, rng, cell):
    module = torch_module(cell)
    layer = layer_like(module, "jax")
    x = rng.standard_normal((B, T, D))
    want = torch_grads(module, torch.asarray(x), LENGTHS)

    def loss(layer, x):
        out, fin = layer(x, lengths=jnp.asarray(LENGTHS))
        return loss_of(jnp, out, finals(fin))

    grads = jax.grad(loss)(layer, jnp.asarray(x))  # under jax.jit: the tests below
    assert type(grads) is type(layer) and list(grads.params) == list(want) == list(layer.params)
    for name, g in want.items():
        close(grads.params[name], g.numpy())
    # the leaves are the parameters in torch's order, under their names
    paths = jax.tree_util.tree_flatten_with_path(layer)[0]
    assert [jax.tree_util.keystr(p) for p, _ in paths] == ["." + n for n in want]
    assert all(leaf is layer.params[n] for (_, leaf), n in zip(paths, want))
    # the layer keeps its own (concrete) parameters: no tracer stays behind
    assert not any(isinstance(p, jax.core.Tracer) for p in layer.params.values())
    # one gradient step, as an optimizer does it (tree_map over the layer and its gradients)
    step = jax.tree.map(lambda p, g: p - 0.1 * g, layer, grads)
    assert type(step) is type(layer) and step.training == layer.training and step.generator is layer.generator
    with torch.no_grad():
        for p, g in zip(module.parameters(), want.values()):
            p -= 0.1 * g
    out, fin = step(jnp.asarray(x), lengths=jnp.asarray(LENGTHS))
    want_out, want_fin = torch_forward(module, torch.asarray(x), LENGTHS)
    close(out, want_out.detach().numpy())
    for f, w in zip(finals(fin), want_fin):
        close(f, w.detach().numpy())


@needs_jax
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_apply_is_pure_under_jax_grad(be, rng, cell):
    """jax.grad over a params dict through apply: the layer's gradient, and the layer untouched."""
    layer = layer_like(torch_module(cell), "jax")
    before = dict(layer.params)
    x = jnp.asarray(rng.standard_normal((B, T, D)))

    def loss(params):
        out, fin = layer.apply(params, x, lengths=jnp.asarray(LENGTHS))
        return loss_of(jnp, out, finals(fin))

    grads = jax.grad(loss)(dict(layer.params))
    pytree = jax.grad(lambda l: loss(l.params))(layer)
    for name in before:
        close(grads[name], pytree.params[name])
        assert layer.params[name] is before[name]
    with pytest.raises(ValueError, match="params does not fit .*missing keys \\['bias_hh_l1_reverse'\\]"):
        layer.apply({k: v for k, v in before.items() if k != "bias_hh_l1_reverse"}, x)
    with pytest.raises(TypeError, match="params\\['weight_ih_l0'\\] is from numpy"):
        layer.apply({**before, "weight_ih_l0": np.asarray(before["weight_ih_l0"])}, x)


@needs_jax
def test_vmap_per_example_layer_gradients_checkpoint_and_stacked_layers(be, rng):
    layer = rnn_xp.LSTM(D, H, proj_size=P, xp="jax", dtype="float64", seed=0)
    x = jnp.asarray(rng.standard_normal((T, B, D)))
    lens = jnp.asarray(LENGTHS)

    def loss(layer, xi, li):  # one unbatched example (T, D)
        out, fin = layer(xi, lengths=li)
        return loss_of(jnp, out, finals(fin))

    per_example = jax.vmap(jax.grad(loss), in_axes=(None, 1, 0))(layer, x, lens)
    assert type(per_example) is type(layer)
    for i in range(B):
        one = jax.grad(loss)(layer, x[:, i], lens[i])
        for name in layer.params:
            close(per_example.params[name][i], one.params[name])
        if i == 0:  # rematerialized under jax.checkpoint: the same gradient
            again = jax.jit(jax.grad(jax.checkpoint(loss)))(layer, x[:, i], lens[i])
            for name in layer.params:
                close(again.params[name], one.params[name])
    # an ensemble: layers stacked leaf by leaf, run under vmap
    other = jax.tree.map(lambda p: 0.5 * p, layer)
    stacked = jax.tree.map(lambda *p: jnp.stack(p), layer, other)
    outs = jax.vmap(lambda l: l(x)[0])(stacked)
    close(outs[0], layer(x)[0])
    close(outs[1], other(x)[0])
    # a layer made apart has a generator of its own: combined once they share one
    apart = rnn_xp.LSTM(D, H, proj_size=P, xp="jax", dtype="float64", seed=1)
    with pytest.raises(ValueError, match="generator at"):
        jax.tree.map(lambda *p: jnp.stack(p), layer, apart)
    apart.generator = layer.generator
    close(jax.tree.map(lambda *p: jnp.stack(p), layer, apart).weight_hh_l0[1], apart.weight_hh_l0)


@needs_jax
def test_jit_keeps_one_program_per_configuration_and_mode(be, rng):
    layer = rnn_xp.GRU(D, H, xp="jax", dtype="float64", seed=0)
    x = jnp.asarray(rng.standard_normal((T, B, D)))
    traces = []

    @jax.jit
    def step(layer, x):
        traces.append(1)
        grads = jax.grad(lambda l: jnp.sum(l(x)[0] ** 2))(layer)
        return jax.tree.map(lambda p, g: p - 0.01 * g, layer, grads)

    for _ in range(3):
        layer = step(layer, x)
    assert len(traces) == 1 and type(layer) is rnn_xp.GRU
    step(layer.eval(), x)  # the mode is static: another program
    assert len(traces) == 2


@needs_jax
def test_dropout_inside_jit_is_a_clear_error(be, rng):
    """The masks come from a NumPy generator: inside jax.jit they would be drawn once, at tracing."""
    layer = rnn_xp.GRU(D, H, num_layers=2, dropout=0.5, xp="jax", dtype="float64", seed=0)
    x = jnp.asarray(rng.standard_normal((T, B, D)))
    loss = lambda l: jnp.sum(l(x)[0] ** 2)  # noqa: E731
    with pytest.raises(ValueError, match="inside jax.jit .*layer.eval\\(\\)"):
        jax.jit(jax.grad(loss))(layer)
    # outside jit every call draws new masks (a different gradient each time)
    g1, g2 = jax.grad(loss)(layer), jax.grad(loss)(layer)
    assert not np.allclose(g1.params["weight_ih_l1"], g2.params["weight_ih_l1"])
    # in eval mode nothing is drawn: jit runs it
    layer.eval()
    close(jax.jit(loss)(layer), loss(layer))


@needs_jax
def test_an_optax_optimizer_takes_a_layer(be, rng):
    optax = pytest.importorskip("optax")
    layer = rnn_xp.GRU(D, H, xp="jax", dtype="float64", seed=0)
    x = jnp.asarray(rng.standard_normal((T, B, D)))
    loss = lambda l: jnp.mean(l(x)[0] ** 2)  # noqa: E731
    optimizer = optax.sgd(0.1)
    state = optimizer.init(layer)
    grads = jax.grad(loss)(layer)
    updates, state = optimizer.update(grads, state, layer)
    new = optax.apply_updates(layer, updates)
    assert type(new) is rnn_xp.GRU
    for name, p in layer.params.items():
        close(new.params[name], p - 0.1 * grads.params[name])


def test_pytree_registration_is_lazy():
    """import rnn_xp and NumPy layers import no JAX; a class registers when a layer is made or moved with JAX loaded."""
    code = r"""
import json, sys
import numpy as np, rnn_xp
early = [rnn_xp.RNN(2, 3, seed=0), rnn_xp.LSTM(2, 3, seed=0), rnn_xp.GRU(2, 3, seed=0)]
report = {"before": [m for m in ("jax", "torch") if m in sys.modules]}
import jax
report["early"] = [len(jax.tree.leaves(l)) for l in early]          # not registered yet: one leaf each
report["moved"] = [len(jax.tree.leaves(l.to("jax"))) for l in early]  # registered when moved
class Mine(rnn_xp.GRU):
    pass
report["subclass"] = len(jax.tree.leaves(Mine(2, 3, seed=0)))
print(json.dumps(report))
"""
    if jax is None:
        pytest.skip("jax not installed")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"before": [], "early": [1, 1, 1], "moved": [4, 4, 4], "subclass": 4}


@needs_jax
def test_a_pickled_layer_is_still_a_pytree(be):
    layer = pickle.loads(pickle.dumps(rnn_xp.LSTM(D, H, proj_size=P, xp="jax", seed=0)))
    assert len(jax.tree.leaves(layer)) == 5


# -- torch: requires_grad_ and torch.optim; torch.func over apply -----------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_torch_optim_trains_the_layer_as_torch_trains_its_module(rng, cell):
    """The optimizer updates layer.params in place, and the next call reads them."""
    module = torch_module(cell)
    layer = layer_like(module, "torch")
    params = {name: p.requires_grad_() for name, p in layer.params.items()}
    ours = torch.optim.Adam(layer.parameters(), lr=0.05)
    theirs = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(3):
        x = torch.asarray(rng.standard_normal((B, T, D)))
        for optimizer, run in ((ours, lambda: layer(x, lengths=LENGTHS)),
                               (theirs, lambda: torch_forward(module, x, LENGTHS))):  # fmt: skip
            optimizer.zero_grad()
            out, fin = run()
            loss_of(torch, out, finals(fin)).backward()
            optimizer.step()
        for (name, p), q in zip(layer.named_parameters(), module.parameters()):
            assert p is params[name]  # in place
            close(p.detach(), q.detach())


@pytest.mark.parametrize("cell", CELLS)
def test_torch_func_over_apply_equals_functional_call(rng, cell):
    """torch.func.grad and per-example vmap through apply against torch.func.functional_call of the module."""
    module = torch_module(cell, batch_first=False)
    layer = layer_like(module, "torch")
    params = {name: p.detach() for name, p in module.named_parameters()}
    x = torch.asarray(rng.standard_normal((T, B, D)))

    def ours(params, x):
        out, fin = layer.apply(params, x)
        return loss_of(torch, out, finals(fin))

    def theirs(params, x):
        out, fin = torch.func.functional_call(module, params, (x,))
        return loss_of(torch, out, finals(fin))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.func's own deprecation notices
        got = torch.func.grad(ours)(params, x)
        for name, g in torch.func.grad(theirs)(params, x).items():
            close(got[name], g)
        per_example = torch.func.vmap(torch.func.grad(ours), in_dims=(None, 1))(params, x)
        for i in range(B):
            for name, g in torch.func.grad(theirs)(params, x[:, i]).items():
                close(per_example[name][i], g)
    assert all(p is layer.params[n] for n, p in layer.named_parameters())  # untouched


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_double_backward_equals_torch_nn(rng, cell):
    """create_graph=True through the layer; torch.nn's CPU modules differentiate twice too."""
    module = torch_module(cell)
    layer = layer_like(module, "torch")
    for p in layer.parameters():
        p.requires_grad_()
    x = rng.standard_normal((B, T, D))

    def second(run, params):
        xt = torch.asarray(x).requires_grad_()
        out, fin = run(xt)
        first = torch.autograd.grad(loss_of(torch, out, finals(fin)), [xt, params[1]], create_graph=True)
        return torch.autograd.grad(sum((g ** 2).sum() for g in first), params)

    got = second(lambda xt: layer(xt, lengths=LENGTHS), list(layer.parameters()))
    want = second(lambda xt: torch_forward(module, xt, LENGTHS), list(module.parameters()))
    for g, w in zip(got, want):
        close(g, w, rtol=1e-9)


def test_torch_compile_of_a_layer_call(rng):
    layer = rnn_xp.GRU(D, H, batch_first=True, xp="torch", dtype="float64", seed=0)
    for p in layer.parameters():
        p.requires_grad_()
    x = torch.asarray(rng.standard_normal((B, T, D)))

    def loss(x):
        out, fin = layer(x)
        return loss_of(torch, out, finals(fin))

    eager = torch.autograd.grad(loss(x), list(layer.parameters()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # graph-break notices
        compiled = torch.compile(loss, backend="aot_eager")(x)
    close(compiled.detach(), loss(x).detach())
    for g, w in zip(torch.autograd.grad(compiled, list(layer.parameters())), eager):
        close(g, w)
