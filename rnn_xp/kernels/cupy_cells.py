"""Any cell on CuPy: cuBLAS products and ONE fused elementwise kernel per step, made from the cell.

The portable loop runs an LSTM step as a dozen CuPy operations (slices,
sigmoids, products, sums), each a kernel launch, and at the sizes where
recurrent networks live the launches take the time. The loop here keeps
the shape of the fused Elman loop (``kernels.cupy_fused``): the input
projection of every step at once (``cell.project``), then per step the
state's product with the recurrent weights on cuBLAS and everything else
of the step in one kernel::

    p  = h_{t-1} @ W_hh.T                      # cuBLAS (B, G*H)
    h_t, c_t, ... = the cell's elementwise rest # one kernel, lengths or mask included

The kernel's source is not written here, and not written per cell: it is
generated from the cell's own ``step``, which ``kernels._pointwise.trace``
runs on symbolic arrays to read off its products and its elementwise
expressions (the activations included). So the formula exists once, in
``rnn_xp.cells``; what runs on the GPU is that formula printed as CUDA C.

Per step, by cell:

====================================  ==============================================
LSTM, GRU (torch's), Elman            product, kernel
LSTM with a projection                product, kernel, product ``m @ W_hr.T`` (and,
                                      with ``lengths`` or a mask, a small kernel
                                      that keeps or writes the projected state)
GRU with the reset before the product product, kernel (``r * h``), product, kernel
====================================  ==============================================

``lengths`` (zeros past a length, the state kept) and masks (the state
kept, the previous output repeated) are handled inside the kernels, as
``portable.scan_cell`` defines them. The backward runs the portable loop
(``portable.backward_cell``), and the persistent kernel
(``kernels.cupy_persistent``) stays Elman's. A step that the tracer cannot
read (``_pointwise.TraceError``) runs the portable loop too.

``kernel_source(program, dtype_name)`` is the text NVRTC compiles; the
tests compile it and run it on the CPU through an interpreter of its C
(``tests/kernels/cuda_emulator.py``), with ``scan_cells`` run with NumPy in
CuPy's place (``mod``, ``launcher``), against the portable loop. CuPy is
imported only inside functions.
"""

from __future__ import annotations

import math

from ._blocks import block_steps
from ._pointwise import TraceError, blocks_of, nodes_in_order, trace

__all__ = ["Plan", "kernel_source", "plan", "scan_cells"]

_DTYPES = {"float32": "float", "float64": "double"}
_THREADS = 256  # threads per block
_MAX_GRID = 65535  # blocks along y (the batch rows); the kernels stride over the rest
# C functions per activation function and dtype (float32, float64)
_FUNCTIONS = {"tanh": ("tanhf", "tanh"), "exp": ("expf", "exp"), "expm1": ("expm1f", "expm1"),
              "log1p": ("log1pf", "log1p"), "abs": ("fabsf", "fabs")}  # fmt: skip
_BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "lt": "<", "le": "<=", "gt": ">",
           "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||"}  # fmt: skip

STAGE, LAST, SELECT = "rnn_xp_cell_stage{}", "rnn_xp_cell_last", "rnn_xp_cell_select"


class Plan:
    """A traced step and what its kernels read: the ``Program``, the products' roles, the vectors.

    ``mid`` the products read by a kernel (``(index, level)``), ``operands``
    the products whose operand a kernel writes, ``vectors`` the weight
    vectors the expressions read (sorted), ``stages`` the kernels before
    the last (products of level 1, 2, ...).
    """

    def __init__(self, program):
        self.program = program
        post = set(i for i in program.post if i is not None)
        self.mid = [i for i in range(len(program.products)) if i not in post]
        self.operands = [i for i, p in enumerate(program.products) if p.operand.op != "state"]
        roots = list(program.outputs) + [program.products[i].operand for i in self.operands]
        self.vectors = sorted({n.args[0] for n in nodes_in_order(roots) if n.op == "vec"})
        self.stages = program.levels


def plan(cell, w, state_sizes, H):
    """The ``Plan`` of ``cell``'s step for weights ``w`` and state part sizes; ``TraceError`` if it cannot run fused."""
    weights = {f: tuple(blocks_of(n, H) for n in a.shape) for f, a in zip(w._fields, w) if a is not None}
    return Plan(trace(cell, weights, tuple(blocks_of(n, H) if n == H else "other" for n in state_sizes)))


# -- the CUDA source -----------------------------------------------------------------------


def _params(p, parts):
    """The parameters every kernel of a step takes (the same list, so one argument tuple serves all)."""
    out = ["const real* __restrict__ xg"]
    out += [f"real* s{j}" for j in range(parts)]  # the state, (B, H) for the parts a kernel writes
    out += [f"real* o{j}" for j in range(parts)]  # row t of each part's output sequence
    out += [f"real* q{j}" for j in range(parts)]  # each part's previous output (masks)
    out += [f"const real* __restrict__ p{i}" for i in p.mid]  # the products the kernels read
    out += [f"real* a{i}" for i in p.operands]  # the operands of the products of expressions
    out += [f"const real* __restrict__ v_{f}" for f in p.vectors]
    out += ["const long long* __restrict__ lengths", "const unsigned char* __restrict__ valid_t",
            "const int B", "const int H", "const long long t", "const int has_lengths",
            "const int has_mask", "const int write_seq"]  # fmt: skip
    return ",\n    ".join(out)


def _expressions(roots, p, gates, fn):
    """C declarations of every node ``roots`` read, and ``{id(node): C name or literal}``."""
    names, lines = {}, []
    widths = {i: p.program.products[i].rows[1] - p.program.products[i].rows[0] for i in p.mid}  # in blocks
    for k, node in enumerate(nodes_in_order(roots)):
        op, args = node.op, node.args
        a = [names.get(id(x)) for x in args]
        if op == "const":
            names[id(node)] = f"((real){args[0]!r})"
            continue
        if op == "xg":
            value = f"xg[((size_t)b * {gates} + {args[0]}) * H + u]"
        elif op == "state":
            value = f"s{args[0]}[(size_t)b * H + u]"
        elif op == "prod":
            value = f"p{args[0]}[((size_t)b * {widths[args[0]]} + {args[1]}) * H + u]"
        elif op == "vec":
            value = f"v_{args[0]}[{args[1]} * H + u]"
        elif op in _BINARY:
            value = f"({a[0]} {_BINARY[op]} {a[1]})"
        elif op == "neg":
            value = f"(-{a[0]})"
        elif op == "not":
            value = f"(!{a[0]})"
        elif op == "where":
            value = f"({a[0]} ? {a[1]} : {a[2]})"
        elif op == "isnan":
            value = f"({a[0]} != {a[0]})"
        elif op == "cast":
            value = f"({a[0]} ? (real)1 : (real)0)"
        elif op == "clip":
            lo, hi = args[1], args[2]
            value = a[0]
            if lo is not None:
                value = f"rnn_xp_clip_min({value}, (real){lo!r})"
            if hi is not None:
                value = f"rnn_xp_clip_max({value}, (real){hi!r})"
        elif op in ("max", "min"):
            value = f"rnn_xp_{op}({a[0]}, {a[1]})"
        elif op == "logaddexp":
            value = f"rnn_xp_logaddexp({a[0]}, {a[1]})"
        elif op in _FUNCTIONS:
            value = f"{fn(op)}({a[0]})"
        else:  # the tracer makes no other node
            raise TraceError(f"no C for {op}")
        name = f"n{k}"
        lines.append(f"const {'bool' if node.kind == 'bool' else 'real'} {name} = {value};")
        names[id(node)] = name
    return lines, names


_HELPERS = r"""
// NumPy's semantics: a NaN stays NaN (clip, maximum, minimum), logaddexp as npy_logaddexp.
__device__ __forceinline__ real rnn_xp_clip_min(const real x, const real lo) {{ return x < lo ? lo : x; }}
__device__ __forceinline__ real rnn_xp_clip_max(const real x, const real hi) {{ return x > hi ? hi : x; }}
__device__ __forceinline__ real rnn_xp_max(const real a, const real b) {{ return (a > b || a != a) ? a : b; }}
__device__ __forceinline__ real rnn_xp_min(const real a, const real b) {{ return (a < b || a != a) ? a : b; }}
__device__ __forceinline__ real rnn_xp_logaddexp(const real a, const real b)
{{
    if (a == b)
        return a + (real)0.6931471805599453;  // equal infinities too: a + log(2)
    const real d = a - b;
    if (d > 0)
        return a + {log1p}({exp}(-d));
    if (d <= 0)
        return b + {log1p}({exp}(d));
    return d;  // NaN
}}
"""

_KERNEL = r"""
extern "C" __global__ void __launch_bounds__({threads}) {name}(
    {params})
{{
    // blockIdx.y strides over the batch rows, the x dimension over the hidden units
    for (int b = blockIdx.y; b < B; b += gridDim.y) {{
        // step t counts for row b: within its length, or not masked
        const bool valid = has_mask ? valid_t[b] != 0 : (!has_lengths || t < lengths[b]);
        for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < H; u += gridDim.x * blockDim.x) {{
            const size_t r = (size_t)b * H + u;
            {body}
        }}
    }}
}}
"""

_SELECT = r"""
// A new state part computed by a product after the last kernel (an LSTM's projection):
// kept past a length or at a masked step, written to the output row (0 past a length,
// the previous output at a masked step).
extern "C" __global__ void __launch_bounds__({threads}) {name}(
    const real* __restrict__ fresh, real* state, real* out, real* prev,
    const long long* __restrict__ lengths, const unsigned char* __restrict__ valid_t,
    const int B, const int W, const long long t, const int has_lengths, const int has_mask,
    const int write_seq)
{{
    for (int b = blockIdx.y; b < B; b += gridDim.y) {{
        const bool valid = has_mask ? valid_t[b] != 0 : (!has_lengths || t < lengths[b]);
        for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < W; u += gridDim.x * blockDim.x) {{
            const size_t r = (size_t)b * W + u;
            const real v = fresh[r];
            const real o = valid ? v : (has_mask ? prev[r] : (real)0);
            state[r] = valid ? v : state[r];
            if (write_seq)
                out[r] = o;
            if (has_mask)
                prev[r] = o;
        }}
    }}
}}
"""


def kernel_source(p, dtype_name, gates):
    """The CUDA source of a step's kernels for ``Plan`` ``p``: ``STAGE.format(k)`` (k = 1..), ``LAST``, ``SELECT``.

    ``gates``: the cell's ``G`` (blocks of the projected input).
    """
    if dtype_name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype_name!r}")
    single = dtype_name == "float32"
    fn = lambda op: _FUNCTIONS[op][0 if single else 1]  # noqa: E731
    prog = p.program
    params = _params(p, prog.parts)
    kernels = []
    for k in range(1, p.stages + 1):
        ops = [i for i in p.operands if i in p.mid and prog.products[i].level == k]
        lines, names = _expressions([prog.products[i].operand for i in ops], p, gates, fn)
        lines += [f"a{i}[r] = {names[id(prog.products[i].operand)]};" for i in ops]
        kernels.append((STAGE.format(k), lines))
    lines, names = _expressions(list(prog.outputs), p, gates, fn)
    for j, (node, i) in enumerate(zip(prog.outputs, prog.post)):
        v = names[id(node)]
        if i is not None:  # the operand of the product that makes this part
            lines.append(f"a{i}[r] = {v};")
            continue
        lines += [
            "{",
            f"    const real o = valid ? {v} : (has_mask ? q{j}[r] : (real)0);",
            f"    const real s = s{j}[r];",
            f"    s{j}[r] = valid ? {v} : s;  // kept past a length, at a masked step",
            f"    if (write_seq) o{j}[r] = o;",
            f"    if (has_mask) q{j}[r] = o;",
            "}",
        ]  # fmt: skip
    kernels.append((LAST, lines))
    text = [
        "// rnn_xp: one step of a recurrent cell after its products, generated from the cell's step",
        "// (rnn_xp/kernels/cupy_cells.py, rnn_xp/kernels/_pointwise.py). No #include.",
        f"typedef {_DTYPES[dtype_name]} real;",
        _HELPERS.format(log1p=fn("log1p"), exp=fn("exp")),
    ]
    for name, body in kernels:
        text.append(_KERNEL.format(threads=_THREADS, name=name, params=params,
                                   body="\n            ".join(body)))  # fmt: skip
    text.append(_SELECT.format(threads=_THREADS, name=SELECT))
    return "\n".join(text)


# -- the host loop -----------------------------------------------------------------------------

_MODULES = {}  # (source) -> cupy.RawModule, compiled on first use (per device, by CuPy)


def _cupy_launcher(source):
    """``launcher(name)(grid, block, args)`` with the compiled kernels of ``source``."""
    import cupy

    if source not in _MODULES:
        _MODULES[source] = cupy.RawModule(code=source, options=("-std=c++14",))
    module = _MODULES[source]

    def launcher(name):
        kernel = module.get_function(name)
        return lambda grid, block, args: kernel(grid, block, args)

    return launcher


def scan_cells(cell, x, state0, w, *, lengths, reverse, return_sequences, mask=None, mod=None, launcher=None):
    """``portable.scan_cell``'s results for CuPy arrays (float32/float64): products and one fused kernel per step.

    ``x`` ``(T, *batch, D)``, ``state0`` a tuple ``(*batch, S_j)``, ``w`` the
    cell's ``Weights``, validated, one dtype, on the current device, with
    ``T``, the batch and ``H`` not zero. Raises ``TraceError`` (before any
    work) where the step cannot run fused. ``mod`` (default ``cupy``) and
    ``launcher(source)`` (default: CuPy's compiled kernels; it returns
    ``launch(name)`` giving ``f(grid, block, args)``) let the tests run this
    loop with NumPy and an interpreter of the kernels.
    """
    if mod is None:
        import cupy

        with x.device:  # new buffers and kernels on the inputs' device
            return _scan(cell, x, state0, w, lengths, reverse, return_sequences, mask, cupy, launcher)
    return _scan(cell, x, state0, w, lengths, reverse, return_sequences, mask, mod, launcher)


def _scan(cell, x, state0, w, lengths, reverse, return_sequences, mask, mod, launcher):
    import numpy  # typed scalar arguments only, never the caller's arrays

    sizes = cell.check_weights(w)
    H, G = sizes.H, cell.gates
    sizes_s = tuple(s.shape[-1] for s in state0)
    p = plan(cell, w, sizes_s, H)  # TraceError: the caller runs the portable loop
    prog = p.program
    dtype = x.dtype
    dtype_name = mod.dtype(dtype).name
    source = kernel_source(p, dtype_name, G)
    launch = (launcher or _cupy_launcher)(source)
    T, D = x.shape[0], x.shape[-1]
    batch = tuple(x.shape[1:-1])
    B = math.prod(batch)

    x3 = x.reshape(T, B, D)
    states = [mod.array(s.reshape(B, S), dtype=dtype, copy=True) for s, S in zip(state0, sizes_s)]  # (B, S_j)
    outs = [mod.empty((T, B, S), dtype=dtype) for S in sizes_s] if return_sequences else None
    prev = [mod.zeros((B, S), dtype=dtype) for S in sizes_s] if mask is not None else None
    # the products' matrices, C-contiguous (K, N) for a no-transpose GEMM, and their results
    mats, results = {}, {}
    for i, q in enumerate(prog.products):
        W = getattr(w, q.field)
        unit = H if isinstance(blocks_of(W.shape[0], H), int) else W.shape[0]
        mats[i] = mod.ascontiguousarray(W[q.rows[0] * unit:q.rows[1] * unit, ...].T)  # (K, N)
        results[i] = mod.empty((B, mats[i].shape[1]), dtype=dtype)  # (B, N)
    operands = {i: mod.empty((B, H), dtype=dtype) for i in p.operands}  # (B, H)
    vectors = [mod.ascontiguousarray(getattr(w, f)) for f in p.vectors]
    lens = mod.zeros(1, dtype=mod.int64) if lengths is None else \
        mod.ascontiguousarray(lengths.reshape(B).astype(mod.int64, copy=False))  # fmt: skip
    valid = None if mask is None else mod.ascontiguousarray(mask.reshape(T, B)).view(mod.uint8)  # (T, B)
    placeholder8 = mod.zeros(1, dtype=mod.uint8)
    flags = (numpy.int32(lengths is not None), numpy.int32(mask is not None), numpy.int32(return_sequences))
    grid = (max(1, min(-(-H // _THREADS), _MAX_GRID)), max(1, min(B, _MAX_GRID)))
    kernels = [launch(STAGE.format(k)) for k in range(1, p.stages + 1)] + [launch(LAST)]
    select = launch(SELECT)
    spare = {j: mod.empty((B, sizes_s[j]), dtype=dtype) for j, i in enumerate(prog.post)
             if i is not None and lengths is None and mask is None}  # fmt: skip

    Tb = T if return_sequences else block_steps(T, B, G * H)
    starts = range(0, T, Tb)
    for s in reversed(starts) if reverse else starts:
        e = min(s + Tb, T)
        xg = mod.ascontiguousarray(cell.project(mod, x3[s:e], w))  # (n, B, G*H): the cell's own projection
        for t in range(e - 1, s - 1, -1) if reverse else range(s, e):
            rows = [o[t] for o in outs] if return_sequences else states  # placeholders without sequences
            qs = prev if prev is not None else states
            args = (xg[t - s], *states, *rows, *qs, *(results[i] for i in p.mid),
                    *(operands[i] for i in p.operands), *vectors, lens,
                    placeholder8 if valid is None else valid[t], numpy.int32(B), numpy.int32(H),
                    numpy.int64(t), *flags)  # fmt: skip
            for i in p.mid:  # the states' products (level 0)
                q = prog.products[i]
                if q.level == 0:
                    mod.matmul(states[q.operand.args[0]], mats[i], out=results[i])
            for k, kernel in enumerate(kernels, start=1):
                kernel(grid, (_THREADS,), args)
                for i in p.mid:  # the products whose operands this kernel wrote
                    if prog.products[i].level == k:
                        mod.matmul(operands[i], mats[i], out=results[i])
            for j, i in enumerate(prog.post):  # the parts that are a product of the last kernel's values
                if i is None:
                    continue
                if spare:  # no lengths, no mask: the product is the new state
                    target = outs[j][t] if return_sequences else spare[j]
                    mod.matmul(operands[i], mats[i], out=target)
                    if not return_sequences:
                        spare[j] = states[j]
                    states[j] = target
                    continue
                mod.matmul(operands[i], mats[i], out=results[i])
                W_ = sizes_s[j]
                sel_grid = (max(1, min(-(-W_ // _THREADS), _MAX_GRID)), grid[1])
                select(sel_grid, (_THREADS,), (
                    results[i], states[j], outs[j][t] if return_sequences else states[j],
                    prev[j] if prev is not None else states[j], lens,
                    placeholder8 if valid is None else valid[t], numpy.int32(B), numpy.int32(W_),
                    numpy.int64(t), *flags))  # fmt: skip
    finals = tuple(mod.array(s, copy=True).reshape(*batch, S) for s, S in zip(states, sizes_s))
    if not return_sequences:
        return None, finals
    return tuple(o.reshape(T, *batch, S) for o, S in zip(outs, sizes_s)), finals
