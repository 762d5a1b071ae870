"""A cell's step as products and elementwise expressions, read off the cell's own ``step``.

A fused loop (``kernels.cupy_cells``) runs each step as a few matrix
products and one elementwise kernel between them. It must not spell out a
cell's formula a second time: the cell is defined once, in ``rnn_xp.cells``.
So ``trace`` runs ``cell.step`` (and ``cell.fixed``) once on symbolic
arrays instead of real ones and records what the step does:

- a product ``a @ W[rows].T`` of a state, or of an elementwise expression,
  with a weight matrix (``Product``);
- everything else, elementwise: the operators, ``where``, ``clip``, the
  activations' functions (``exp``, ``tanh``, ...) of the namespace the cell
  is given, on the step's projected input ``xg_t``, the states, the
  products' results and the weight vectors (biases, peepholes);
- the new state, part by part: an elementwise expression, or a product of
  one (an LSTM's projection ``h = m @ W_hr.T``).

Sizes are counted in blocks of ``H`` (the hidden size): ``split_gates``
of a ``(*batch, 4H)`` value gives four one-block values, and the symbolic
arrays have shapes in those units (``H`` reads as 1). A value of another
width (an LSTM's projected ``h``, ``P`` wide) is one block of its own
unit, which only a product may read.

What is not one of these (a concatenation, a reduction, a slice that is not
whole blocks, a product of a value several blocks wide...) raises
``TraceError``: the loop then runs the portable loop instead. The program
is the same for every ``H`` and batch size; it depends on the cell and on
which weights are given (``trace`` is cached on both).

>>> from rnn_xp.cells import GRUCell
>>> p = trace(GRUCell(), {"W_ih": (3, "D"), "W_hh": (3, 1), "b_ih": (3,), "b_hh": (3,)}, (1,))
>>> [(q.field, q.rows, q.level) for q in p.products], p.post
([('W_hh', (0, 3), 0)], (None,))
"""

from __future__ import annotations

import functools
import math
import threading
from typing import NamedTuple

__all__ = ["Node", "Product", "Program", "TraceError", "nodes_in_order", "trace"]


class TraceError(ValueError):
    """The step does something the fused loop cannot run (the portable loop runs it)."""


class Node:
    """One element of an elementwise expression: ``op`` applied to ``args``; ``kind`` "real" or "bool".

    Leaves: ``("xg", k)`` block ``k`` of the step's projected input,
    ``("state", j)`` part ``j`` of the state, ``("prod", i, k)`` block ``k``
    of product ``i``, ``("vec", field, k)`` block ``k`` of a weight vector,
    ``("const", value)``. Nodes are compared by identity: one node is one
    value, computed once.
    """

    __slots__ = ("op", "args", "kind")

    def __init__(self, op, args, kind="real"):
        self.op, self.args, self.kind = op, args, kind

    def __repr__(self):
        return f"Node({self.op}, {self.args!r})"


class Product(NamedTuple):
    """``operand @ W[rows].T``: ``operand`` a state part (``("state", j)``) or an elementwise ``Node``.

    ``field`` names the weight matrix in the cell's ``Weights``; ``rows``
    its row blocks ``(a, b)``; ``level`` 0 for a state's product (runs
    before the step's first kernel), ``n`` for one whose operand needs the
    products of level ``n - 1``.
    """

    operand: object
    field: str
    rows: tuple
    level: int


class Program(NamedTuple):
    """What one step does (see the module docstring).

    ``products`` in the order they were met; ``outputs`` per part of the
    state, the ``Node`` of its new value, or of the operand of its product
    when ``post[j]`` names that product (an index into ``products``).
    """

    products: tuple
    outputs: tuple
    post: tuple
    parts: int

    @property
    def levels(self):
        """How many elementwise kernels a step runs before its last one (products of level >= 1)."""
        return max((p.level for i, p in enumerate(self.products) if i not in self.post), default=0)


@functools.lru_cache(maxsize=128)
def _trace_cached(cell, weights, state_blocks):
    return _Tracer(cell, dict(weights), state_blocks).run()


def trace(cell, weights, state_blocks):
    """The ``Program`` of ``cell.step``; ``TraceError`` where it is not products and elementwise work.

    ``weights``: ``{field: shape in blocks}`` of the weights given (a shape
    entry is ``n`` for ``n`` blocks of ``H``, any other value for a size that
    is not a multiple of ``H``); ``state_blocks``: per part of the state, 1
    where it is ``H`` wide, else any other value.
    """
    key = tuple(sorted((k, tuple(v)) for k, v in weights.items()))
    return _trace_cached(cell, key, tuple(state_blocks))


def blocks_of(n, H):
    """A size as ``trace`` takes it: ``n // H`` blocks when ``H`` divides it, else ``"other"``."""
    return n // H if H and n % H == 0 else "other"


# -- the symbolic arrays -------------------------------------------------------------------


def _const(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TraceError(f"a constant {v!r} in the step")
    return Node("const", (float(v),))


class Sym:
    """A symbolic ``(*batch, n blocks)`` array: one ``Node`` per block (``unit`` "H", or "other")."""

    __array_priority__ = 1000
    __hash__ = object.__hash__

    def __init__(self, blocks, unit="H", kind="real"):
        self.blocks, self.unit, self.kind = tuple(blocks), unit, kind

    @property
    def shape(self):
        return (1, len(self.blocks))

    @property
    def ndim(self):
        return 2

    @property
    def dtype(self):
        return self.kind

    # elementwise
    def _binary(self, other, op, kind="real", reflected=False):
        a, b = self, _sym(other)
        if reflected:
            a, b = b, a
        if a.unit != "H" or b.unit != "H":
            raise TraceError("an elementwise operation on a value that is not H wide")
        if len(a.blocks) != len(b.blocks):
            if len(b.blocks) == 1:
                b = Sym(b.blocks * len(a.blocks), b.unit, b.kind)
            elif len(a.blocks) == 1:
                a = Sym(a.blocks * len(b.blocks), a.unit, a.kind)
            else:
                raise TraceError(f"{op} of values of {len(a.blocks)} and {len(b.blocks)} blocks")
        want = "bool" if op in ("and", "or") else "real"
        if a.kind != want or b.kind != want:
            raise TraceError(f"{op} of {a.kind} and {b.kind} values")
        return Sym([Node(op, (x, y), kind) for x, y in zip(a.blocks, b.blocks)], "H", kind)

    def __add__(self, o):
        return self._binary(o, "add")

    def __radd__(self, o):
        return self._binary(o, "add", reflected=True)

    def __sub__(self, o):
        return self._binary(o, "sub")

    def __rsub__(self, o):
        return self._binary(o, "sub", reflected=True)

    def __mul__(self, o):
        return self._binary(o, "mul")

    def __rmul__(self, o):
        return self._binary(o, "mul", reflected=True)

    def __truediv__(self, o):
        return self._binary(o, "div")

    def __rtruediv__(self, o):
        return self._binary(o, "div", reflected=True)

    def __neg__(self):
        return _map("neg", self)

    def __pow__(self, p):
        if p == 2:
            return self * self
        raise TraceError(f"a power {p!r} in the step")

    def __lt__(self, o):
        return self._binary(o, "lt", "bool")

    def __le__(self, o):
        return self._binary(o, "le", "bool")

    def __gt__(self, o):
        return self._binary(o, "gt", "bool")

    def __ge__(self, o):
        return self._binary(o, "ge", "bool")

    def __eq__(self, o):
        return self._binary(o, "eq", "bool")

    def __ne__(self, o):
        return self._binary(o, "ne", "bool")

    def __and__(self, o):
        return self._binary(o, "and", "bool")

    def __or__(self, o):
        return self._binary(o, "or", "bool")

    def __invert__(self):
        if self.kind != "bool":
            raise TraceError("~ of a real value")
        return Sym([Node("not", (b,), "bool") for b in self.blocks], self.unit, "bool")

    def __getitem__(self, key):
        return Sym(_block_slice(key, self.blocks), self.unit, self.kind)

    def __matmul__(self, W):
        if not isinstance(W, WeightSym) or not W.transposed:
            raise TraceError("a product that is not a value times a weight matrix's transpose")
        if len(self.blocks) != 1:
            raise TraceError(f"a product of a value {len(self.blocks)} blocks wide")
        return _tracer().product(self.blocks[0], W)

    def __bool__(self):
        raise TraceError("the step's control flow depends on array values")


def _sym(v):
    if isinstance(v, Sym):
        return v
    if isinstance(v, (WeightSym,)):
        raise TraceError("a weight matrix in an elementwise operation")
    return Sym([_const(v)])


def _map(op, s, *extra, kind="real"):
    if s.unit != "H":
        raise TraceError(f"{op} of a value that is not H wide")
    if s.kind != ("bool" if op in ("not", "cast") else "real"):
        raise TraceError(f"{op} of a {s.kind} value")
    return Sym([Node(op, (b, *extra), kind) for b in s.blocks], "H", kind)


def _block_slice(key, blocks):
    """The blocks ``key`` (``[..., a:b]``, ``[a:b]`` or ``[a:b, ...]`` in block units) selects."""
    if isinstance(key, tuple):
        rest = [k for k in key if k is not Ellipsis and k != slice(None)]
        if len(rest) != 1 or len(key) != 2:
            raise TraceError(f"an index {key!r} in the step")
        key = rest[0]
    if not isinstance(key, slice) or key.step not in (None, 1):
        raise TraceError(f"an index {key!r} in the step")
    a, b, _ = key.indices(len(blocks))
    if a >= b:
        raise TraceError(f"an empty slice {key!r} in the step")
    return blocks[a:b]


class WeightSym:
    """A weight matrix, row blocks ``rows`` of ``field``, maybe transposed; shape in blocks."""

    def __init__(self, field, shape, rows=None, transposed=False):
        self.field, self.full, self.transposed = field, shape, transposed
        self.rows = (0, shape[0] if isinstance(shape[0], int) else 1) if rows is None else rows

    @property
    def shape(self):
        n = self.rows[1] - self.rows[0] if isinstance(self.full[0], int) else 1
        cols = self.full[1] if isinstance(self.full[1], int) else 1
        return (cols, n) if self.transposed else (n, cols)

    @property
    def ndim(self):
        return 2

    @property
    def T(self):
        return WeightSym(self.field, self.full, self.rows, not self.transposed)

    @property
    def mT(self):
        return self.T

    def __getitem__(self, key):
        if self.transposed or not isinstance(self.full[0], int):
            raise TraceError(f"an index {key!r} of a weight matrix in the step")
        picked = _block_slice(key, tuple(range(self.rows[0], self.rows[1])))
        return WeightSym(self.field, self.full, (picked[0], picked[-1] + 1))

    def __rmatmul__(self, a):
        return _sym(a) @ self


class _Ops:
    """The namespace ``cell.step`` is given: the functions the cells and activations call."""

    def tanh(self, x):
        return _map("tanh", x)

    def exp(self, x):
        return _map("exp", x)

    def expm1(self, x):
        return _map("expm1", x)

    def log1p(self, x):
        return _map("log1p", x)

    def abs(self, x):
        return _map("abs", x)

    def isnan(self, x):
        return _map("isnan", x, kind="bool")

    def logaddexp(self, a, b):
        return _sym(a)._binary(b, "logaddexp")

    def maximum(self, a, b):
        return _sym(a)._binary(b, "max")

    def minimum(self, a, b):
        return _sym(a)._binary(b, "min")

    def where(self, c, a, b):
        c, a, b = _sym(c), _sym(a), _sym(b)
        n = max(len(c.blocks), len(a.blocks), len(b.blocks))
        parts = []
        for s in (c, a, b):
            if s.unit != "H" or len(s.blocks) not in (1, n):
                raise TraceError("where() of values of different widths")
            parts.append(s.blocks * (n // len(s.blocks)))
        if c.kind != "bool" or a.kind != "real" or b.kind != "real":
            raise TraceError("where() needs a boolean condition and real values")
        return Sym([Node("where", t) for t in zip(*parts)])

    def clip(self, x, min=None, max=None):
        lo = None if min is None else _const(min).args[0]
        hi = None if max is None else _const(max).args[0]
        return _map("clip", x, lo, hi)

    def zeros_like(self, x):
        return Sym([_const(0.0)] * len(x.blocks))

    def ones_like(self, x):
        return Sym([_const(1.0)] * len(x.blocks))

    def full_like(self, x, v):
        return Sym([_const(v)] * len(x.blocks))

    def astype(self, x, dtype, copy=True):
        if x.kind == "bool" and dtype == "real":
            return _map("cast", x)
        if x.kind == dtype:
            return x
        raise TraceError(f"astype({x.kind} -> {dtype!r}) in the step")

    def __getattr__(self, name):
        raise TraceError(f"the step calls {name}(), which the fused loop does not know")


_ACTIVE = []  # the tracer running (trace holds _LOCK)
_LOCK = threading.RLock()  # one trace at a time (the products find their tracer in _ACTIVE)


def _tracer():
    if not _ACTIVE:
        raise TraceError("a product outside a trace")
    return _ACTIVE[-1]


class _Tracer:
    def __init__(self, cell, weights, state_blocks):
        self.cell, self.weights, self.state_blocks = cell, weights, state_blocks
        self.products, self.level = [], {}

    def product(self, operand, W):
        if W.rows[1] - W.rows[0] < 1:
            raise TraceError("a product with an empty weight")
        if operand.op == "state":
            level = 0
        else:
            level = self._depth(operand)
            if level is None:
                level = 0
            level += 0 if level else 1  # an expression of no product runs in kernel 1
        i = len(self.products)
        self.products.append(Product(operand, W.field, W.rows, level))
        rows = W.rows[1] - W.rows[0] if isinstance(W.full[0], int) else None
        unit = "H" if rows is not None else "other"
        blocks = [Node("prod", (i, k)) for k in range(rows or 1)]
        return Sym(blocks, unit)

    def _depth(self, node, memo=None):
        """``1 + max(level)`` of the products ``node`` reads, 0 without any (as the operand's level)."""
        memo = {} if memo is None else memo
        key = id(node)
        if key in memo:
            return memo[key]
        if node.op == "prod":
            d = self.products[node.args[0]].level + 1
        elif node.op in ("xg", "state", "vec", "const"):
            d = 0
        else:
            d = max((self._depth(a, memo) for a in node.args if isinstance(a, Node)), default=0)
        memo[key] = d
        return d

    def run(self):
        cell = self.cell
        G = cell.gates
        ws = {}
        for field in cell.Weights._fields:
            shape = self.weights.get(field)
            if shape is None:
                ws[field] = None
            elif len(shape) == 1:
                if not isinstance(shape[0], int):
                    raise TraceError(f"{field} is not a whole number of H blocks")
                ws[field] = Sym([Node("vec", (field, k)) for k in range(shape[0])])
            else:
                ws[field] = WeightSym(field, shape)
        w = cell.Weights(**ws)
        state = tuple(Sym([Node("state", (j,))], "H" if n == 1 else "other")
                      for j, n in enumerate(self.state_blocks))  # fmt: skip
        xg = Sym([Node("xg", (k,)) for k in range(G)])
        ops = _Ops()
        with _LOCK:
            _ACTIVE.append(self)
            try:
                fixed = cell.fixed(ops, w)
                new = cell.step(ops, xg, state, w, fixed)
            except (TypeError, AttributeError, IndexError) as e:  # a use of the arrays a Sym does not support
                raise TraceError(f"the step does what the fused loop cannot run: {e}") from e
            finally:
                _ACTIVE.pop()
        if not isinstance(new, tuple) or len(new) != len(state):
            raise TraceError("the step does not return one value per part of the state")
        outputs, post = [], []
        for j, s in enumerate(new):
            if not isinstance(s, Sym) or len(s.blocks) != 1 or s.kind != "real":
                raise TraceError(f"part {j} of the new state is not one block of reals")
            node = s.blocks[0]
            if node.op == "prod" and self.products[node.args[0]].operand.op != "state":
                # a product of an expression is the new state: computed after the last kernel
                i = node.args[0]
                outputs.append(self.products[i].operand)
                post.append(i)
            elif s.unit != "H":
                raise TraceError(f"part {j} of the new state is not H wide and no product")
            else:
                outputs.append(node)
                post.append(None)
        for j, n in enumerate(self.state_blocks):
            if post[j] is None and n != 1:
                raise TraceError(f"part {j} of the state is not H wide")
        used = [p for i, p in enumerate(self.products) if i not in post]
        for p in used:  # a product read elementwise must be H blocks
            if not isinstance(self.weights[p.field][0], int):
                raise TraceError(f"a product with {p.field} read elementwise is not H wide")
        for i in post:  # a product that is a new state is read by nothing else
            if i is not None and any(_reads(o, i) for o in outputs):
                raise TraceError("a product that is a new state is also read by the step")
        return Program(tuple(self.products), tuple(outputs), tuple(post), len(state))


def _reads(node, i, memo=None):
    memo = set() if memo is None else memo
    if id(node) in memo:
        return False
    memo.add(id(node))
    if node.op == "prod":
        return node.args[0] == i
    return any(_reads(a, i, memo) for a in node.args if isinstance(a, Node))


def nodes_in_order(roots):
    """Every node ``roots`` read, each once, an argument before the node that reads it."""
    order, seen = [], set()
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for a in reversed(node.args):
            if isinstance(a, Node) and id(a) not in seen:
                stack.append((a, False))
    return order
