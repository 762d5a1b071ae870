"""Every product of the JAX path asks for full precision (issue 14, #8).

On a GPU JAX computes float32 products in TF32 by default (a 10-bit
mantissa: results about 1e-3 off). No CPU computes in TF32, so the check here
reads the compiled program instead: every ``dot_general`` of
``rnn_forward`` on JAX arrays, of every forward option and of its gradient,
must carry ``Precision.HIGHEST``. Skips without JAX.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import jax_dots, optional_import, random_rnn

import rnn_xp

OPTIONS = [
    dict(),
    dict(return_sequences=False),
    dict(lengths=True, reverse=True, leak=0.5),
    dict(lengths=True, return_sequences=False, nonlinearity="relu"),
]


def _highest(eqn):
    from jax import lax

    precision = eqn.params.get("precision")
    values = precision if isinstance(precision, (list, tuple)) else [precision]
    return all(p == lax.Precision.HIGHEST for p in values)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "gradient"])
def test_every_jax_product_is_full_precision(opts, grad):
    jax = optional_import("jax")
    if jax is None:
        pytest.skip("jax not installed")
    import jax.numpy as jnp

    arrays = [jnp.asarray(a, dtype=jnp.float32) for a in random_rnn(np.random.default_rng(0), 5, (3,), 2, 4)]
    kw = dict(opts)
    lengths = jnp.asarray(np.array([5, 0, 2])) if kw.pop("lengths", False) else None

    def loss(x, h0, Wx, Wh, b, lengths):  # every array traced (a mix of traced and concrete is refused)
        return jnp.sum(rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lengths, **kw))

    program = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2, 3, 4)) if grad else loss)(*arrays, lengths)
    dots = jax_dots(program.jaxpr)
    assert dots, "no product found: the walk over the program is broken"
    low = [str(eqn) for eqn in dots if not _highest(eqn)]
    assert not low, f"{len(low)} of {len(dots)} products without Precision.HIGHEST:\n" + "\n".join(low[:3])
