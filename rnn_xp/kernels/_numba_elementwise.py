"""A cell's elementwise formula with its arithmetic written out as loops, for the compiled loops (numba).

numba compiles an expression of arrays such as ``f * c + i * g`` into one
fused loop, and its code generator leaves that loop scalar when the
expression reads three arrays or more (numba 0.68, float32 on the 2-core
VM: 0.65 us for ``(a + b) + c`` on 1024 values, against 0.09 us written out
as a loop); a lone operator on 2-D arrays is scalar too (0.39 against 0.09
us for ``8 x 128`` values). ``written_out(fn)`` compiles a cell's
``pointwise`` or ``pointwise_backward`` anew with each binary ``+``, ``-``,
``*`` and ``/`` a call of ``add``, ``sub``, ``mul`` or ``truediv`` below:
on two arrays of one dtype, one number type and one shape, a loop over
their rows that the compiler vectorises; on anything else the operator as
numba has it. The same operations in the same order on the same values, so
the same bits (no fast-math in either), NaN for NaN (which operand's NaN an
operation passes on, its sign included, is the compiler's choice in both). The formula itself stays where it
is written, in the cell.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import operator
import textwrap

import numpy as np
from numba import types
from numba.extending import overload

__all__ = ["DIGEST", "OPERATORS", "add", "mul", "sub", "truediv", "written_out"]

OPERATORS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv"}


def _same_arrays(a, b):
    """Two arrays of one float dtype and one number of dimensions (1 or 2): the loop's case."""
    return (isinstance(a, types.Array) and isinstance(b, types.Array) and a.dtype == b.dtype
            and isinstance(a.dtype, types.Float) and a.ndim == b.ndim and a.ndim in (1, 2))  # fmt: skip


def _binary(op):
    """A Python function applying ``op``, with a numba overload that writes it out as a loop on arrays."""

    def apply(a, b):
        return op(a, b)

    apply.__name__ = op.__name__

    @overload(apply, inline="always")
    def _apply(a, b):
        if not _same_arrays(a, b):
            return lambda a, b: op(a, b)
        if a.ndim == 1:

            def one(a, b):
                if a.shape != b.shape:  # broadcasting: numba's own
                    return op(a, b)
                out = np.empty(a.shape, a.dtype)
                for j in range(a.shape[0]):
                    out[j] = op(a[j], b[j])
                return out

            return one

        def rows(a, b):
            if a.shape != b.shape:
                return op(a, b)
            out = np.empty(a.shape, a.dtype)
            for i in range(a.shape[0]):
                ai, bi, oi = a[i], b[i], out[i]
                for j in range(a.shape[1]):
                    oi[j] = op(ai[j], bi[j])
            return out

        return rows

    return apply


add, sub, mul, truediv = (_binary(op) for op in (operator.add, operator.sub, operator.mul, operator.truediv))
_CALLS = {"add": add, "sub": sub, "mul": mul, "truediv": truediv}


class _WriteOut(ast.NodeTransformer):
    """Each binary ``+ - * /`` as a call of the module's function of that name (innermost first)."""

    def visit_BinOp(self, node):
        self.generic_visit(node)
        name = OPERATORS.get(type(node.op))
        if name is None:
            return node
        call = ast.Call(func=ast.Name(id=f"_rnn_xp_{name}", ctx=ast.Load()), args=[node.left, node.right],
                        keywords=[])  # fmt: skip
        return ast.copy_location(call, node)


def written_out(fn):
    """``fn`` (a cell's ``pointwise`` or ``pointwise_backward``) compiled anew from its source with every
    binary operator a call of ``add``, ``sub``, ``mul`` or ``truediv``: a Python function for numba to
    compile (module docstring). Without its source (a cell defined in ``python -c``), ``fn`` itself."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return fn
    tree = ast.parse(textwrap.dedent(source))
    (node,) = tree.body
    node.decorator_list = []  # @staticmethod
    tree = ast.fix_missing_locations(_WriteOut().visit(tree))
    ast.increment_lineno(tree, fn.__code__.co_firstlineno - 1)  # the cell's own line numbers
    namespace = dict(fn.__globals__, **{f"_rnn_xp_{k}": v for k, v in _CALLS.items()})
    exec(compile(tree, inspect.getsourcefile(fn) or "<cell>", "exec"), namespace)  # noqa: S102
    made = namespace[node.name]
    made.__qualname__ = fn.__qualname__
    return made


# What the compiled loops' cache digest takes from this module: its code.
DIGEST = hashlib.sha256(inspect.getsource(inspect.getmodule(written_out)).encode()).hexdigest()
