"""What every cell uses: sizes, gate blocks, shape checks, products summed over steps."""

from __future__ import annotations

import math
from typing import NamedTuple

from .._activations import activation, check_activation, check_clip, derivative, derivative_at
from .._checks import shape_str
from .._compat import device, is_jax_namespace, is_numpy_namespace

__all__ = [
    "ArrayOps",
    "MATMULS",
    "Matmuls",
    "activated",
    "GateActivation",
    "Sizes",
    "check_matrix",
    "check_vector",
    "clipped",
    "gate_activations",
    "outer_sum",
    "rows_matmul",
    "split_gates",
    "zero_invalid",
    "CellBase",
    "batch_sum",
]


class Sizes(NamedTuple):
    """The sizes a cell's weights imply.

    ``H`` is the hidden size (rows per gate block), ``D`` the input
    features, ``state`` the feature count of each part of the state
    (``(H,)`` for Elman and GRU, ``(P, H)`` for an LSTM with ``h`` of size
    ``P``, the projection size or ``H``).
    """

    H: int
    D: int
    state: tuple


def split_gates(z, n):
    """The ``n`` gate blocks of ``z`` ``(..., n * H)``: a tuple of ``(..., H)`` views."""
    H = z.shape[-1] // n
    return tuple(z[..., k * H:(k + 1) * H] for k in range(n))


def check_matrix(name, W, rows, cols, what):
    """``W`` is ``(rows, cols)``, else ``ValueError`` saying which and why; ``None`` for a free size."""
    shape = tuple(W.shape)
    ok = len(shape) == 2 and (rows is None or shape[0] == rows) and (cols is None or shape[1] == cols)
    if not ok:
        need = shape_str(tuple("?" if n is None else n for n in (rows, cols)))
        raise ValueError(f"{name} must have shape {what} = {need}; got shape {shape_str(shape)}")


def check_vector(name, v, n, what):
    if v is not None and tuple(v.shape) != (n,):
        raise ValueError(f"{name} must have shape {what} = {shape_str((n,))}; got shape {shape_str(tuple(v.shape))}")


class GateActivation(NamedTuple):
    """One activation of a gate: its name and parameters (``None`` where it takes none)."""

    name: str
    alpha: object = None
    beta: object = None

    def f(self):
        return activation(self.name, self.alpha, self.beta)

    def derivative(self):
        """``f'(xp, out)`` from the activation's output where it can be, else ``None``."""
        if self.alpha is None and self.beta is None and self.name in ("tanh", "sigmoid", "relu"):
            return derivative(self.name)
        return None

    def derivative_at(self):
        """``f'(xp, z)`` at the pre-activation."""
        return derivative_at(self.name, self.alpha, self.beta)


def gate_activations(label, names, alphas, betas, defaults):
    """Validated ``GateActivation`` per gate activation of a cell (ONNX's ``activations`` list).

    ``names``, ``alphas``, ``betas`` are ``None`` (the defaults) or one entry
    per activation; ``label`` names the cell in messages.
    """
    n = len(defaults)
    names = defaults if names is None else names
    alphas = (None,) * n if alphas is None else alphas
    betas = (None,) * n if betas is None else betas
    for what, values in (("activations", names), ("activation_alpha", alphas), ("activation_beta", betas)):
        if isinstance(values, str) or not isinstance(values, (list, tuple)) or len(values) != n:
            raise ValueError(
                f"{what} of {label} must be a sequence of {n} entries (one per activation, "
                f"defaults {list(defaults)}); got {values!r}"
            )
    return tuple(GateActivation(*check_activation(nm, a, b)) for nm, a, b in zip(names, alphas, betas))


def clipped(xp, z, clip):
    """``(z clipped to [-clip, clip], inside)``; ``inside`` is ``None`` without a clip."""
    if clip is None:
        return z, None
    return xp.clip(z, min=-clip, max=clip), (z >= -clip) & (z <= clip)


def outer_sum(xp, d, a, valid=None):
    """``sum over steps and batch of d_t.T @ a_t``: ``(F_d, F_a)``, one product over N = T * B rows.

    ``d`` ``(T, *batch, F_d)``, ``a`` ``(T, *batch, F_a)``. Where ``valid``
    ``(T, *batch, 1)`` is False ``a`` is zeroed first (``d`` is zero there).
    Not tensordot: NumPy runs a (1, 1) @ (1, n) product as a scaled vector
    and skips a zero scale, so 0 * Inf there gave 0 instead of NaN.
    """
    if valid is not None:
        a = xp.where(valid, a, xp.zeros_like(a))
    if is_jax_namespace(xp):
        # XLA's CPU product contracts the (T, *batch) axes of the arrays as they are
        # faster than the reshaped (N, F) matrices (about 1.2x at (100, 32, 256) x (100, 32, 128)).
        axes = list(range(d.ndim - 1))
        return xp.tensordot(d, a, axes=(axes, axes))
    N, Fd, Fa = math.prod(d.shape[:-1]), d.shape[-1], a.shape[-1]
    if N == 0:  # an empty batch (and no reshape of an empty array, which Dask cannot do)
        return xp.zeros((Fd, Fa), dtype=d.dtype, device=device(d))
    return xp.matrix_transpose(xp.reshape(d, (N, Fd))) @ xp.reshape(a, (N, Fa))


def rows_matmul(xp, a, W):
    """``a @ W`` for ``a`` ``(..., K)`` and a 2-D ``W``: on NumPy one product over the rows of every leading axis.

    NumPy's ``matmul`` of a 3-D ``a`` calls BLAS once per leading index (T
    small products); the same numbers as one ``(N, K) @ (K, M)`` product took
    0.17 to 0.83 of its time (float32 on the 2-core VM: 0.36 at (100, 16, 64)
    @ (64, 512), 0.83 at (50, 64, 512) @ (512, 4096)). Other libraries fold the
    leading axes themselves.
    """
    if a.ndim <= 2 or not is_numpy_namespace(xp):
        return a @ W
    lead, K, M = tuple(a.shape[:-1]), a.shape[-1], W.shape[-1]
    return xp.reshape(xp.reshape(a, (math.prod(lead), K)) @ W, (*lead, M))


class Matmuls(NamedTuple):
    """The two products ``grads`` sums over all steps: ``outer_sum`` and ``rows_matmul`` (``xp`` first, as above).

    ``MATMULS`` holds this module's (one product of the array's library
    each); a kernel may hand ``grads`` others of the same contract
    (``kernels.numba_products.MATMULS``: compiled for NumPy).
    """

    outer_sum: object
    rows_matmul: object


def batch_sum(xp, d):
    """``d`` ``(T, *batch, F)`` summed over steps and batch: ``(F,)``."""
    N, F = math.prod(d.shape[:-1]), d.shape[-1]
    if N == 0:
        return xp.zeros((F,), dtype=d.dtype, device=device(d))
    return xp.sum(xp.reshape(d, (N, F)), axis=0)


MATMULS = Matmuls(outer_sum, rows_matmul)


def zero_invalid(xp, a, valid):
    """``a`` with the steps where ``valid`` is False set to zero (``valid`` ``None``: ``a``)."""
    return a if valid is None else xp.where(valid, a, xp.zeros_like(a))


def check_clip_option(clip):
    return check_clip(clip)


class ArrayOps:
    """A cell's activations on arrays of ``xp``, by role: the ``ops`` that ``pointwise`` takes.

    ``roles`` names the cell's activations in order (``("fa", "ga", "ha")``
    for an LSTM: its gates', its cell input's and its cell output's), ``acts``
    their ``GateActivation``; the roles in ``clipped`` apply them to their
    argument clipped to ``[-clip, clip]`` (with a ``clip``). Each is a pure
    function of one array. ``zeros_like`` is ``xp``'s; ``complement(z)`` is ``1 - z``.
    """

    def __init__(self, xp, roles, acts, clip, clipped):
        for role, act in zip(roles, acts):
            setattr(self, role, _role_function(xp, act.f(), clip if role in clipped else None))
        self.zeros_like = xp.zeros_like
        self.complement = _complement


def _complement(z):
    return 1 - z


def _role_function(xp, f, clip):
    if clip is None:
        return lambda z: f(xp, z)
    return lambda z: f(xp, xp.clip(z, min=-clip, max=clip))


class CellBase:
    """Pickling for the frozen dataclasses of the cells: the options travel, what is derived from them is made again.

    ``ops(xp)`` is the cell's ``ArrayOps`` for ``xp`` (made once per library).
    """

    def ops(self, xp):
        """The activations by role on arrays of ``xp`` (``pointwise``'s ``ops``), made once per library."""
        made = self.__dict__.get("_ops")
        if made is None:
            made = {}
            object.__setattr__(self, "_ops", made)
        ops = made.get(id(xp))
        if ops is None:
            ops = made[id(xp)] = (xp, ArrayOps(xp, self.roles, self._acts, self.clip, self.clipped))
        return ops[1]

    def project(self, xp, x, w):
        """The input projection of every step at once: ``x @ W.T + b`` with ``(W, b) = input_weights(w)``."""
        W, b = self.input_weights(w)
        xg = rows_matmul(xp, x, W.T)  # (T, *batch, G * H): one product for all steps
        return xg if b is None else xg + b

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)
        self.__post_init__()


def activated(xp, act, z, clip):
    """``(a(clip(z)), a'(clip(z)))``, the derivative zero where ``clip`` cut ``z``."""
    zc = z if clip is None else xp.clip(z, min=-clip, max=clip)
    out = act.f()(xp, zc)
    from_out = act.derivative()
    d = from_out(xp, out) if from_out is not None else act.derivative_at()(xp, zc)
    if clip is not None:
        d = xp.where((z >= -clip) & (z <= clip), d, xp.zeros_like(d))
    return out, d
