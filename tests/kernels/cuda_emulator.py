"""An interpreter of rnn_xp's CUDA kernels, in NumPy: the kernels' own source, run on the CPU.

The CuPy kernels (``rnn_xp.kernels.cupy_fused``, ``rnn_xp.kernels.cupy_persistent``)
cannot run here, and a hand-written NumPy copy of their formulas would test the
copy, not the CUDA text. This module reads the CUDA source the package compiles
and executes it:

- the C subset the kernels use: ``typedef``, ``#define`` (object- and
  function-like), ``__device__`` functions, one ``__global__`` kernel,
  declarations, ``for``/``if``/``else``/``continue``/``return``, the C
  operators with C's precedence and its usual arithmetic conversions (``int``,
  ``unsigned``, ``long long``, ``size_t``, ``float``, ``double``: a float32
  kernel computes in float32), pointers into global, shared and local memory;
- SIMT execution: the threads of a block run in lockstep as NumPy vectors,
  with a mask of active threads for divergent loops and branches (``?:``,
  ``&&`` and ``||`` evaluate a side only for the threads that need it, so a
  read that the GPU would skip is skipped here too);
- the grid: each block is a generator that stops at every grid barrier;
  between barriers the blocks run one after another, in a random order;
- CUDA built-ins: ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``,
  ``__syncthreads`` and ``__shfl_xor_sync`` (which require every thread of the
  block, or of the warp, to take part), ``tanh``, ``exp``, ``expm1``,
  ``log1p``, ``fabs`` and their ``float`` forms (``tanhf``...). A device function
  whose body is inline PTX (``load_l2``, ``load_l2_batch``) or the grid
  barrier is replaced by a Python function of the same meaning (``BUILTINS``);
  the tests check the PTX of those separately.

And it checks what the GPU would not report: every access in bounds and
aligned, every block reaching the same number of grid barriers (else the GPU
deadlocks), no data race (a value read or written by two blocks between two
grid barriers, or by two threads of a block between two ``__syncthreads``,
when one of them writes), and each kernel argument of the C type of its
parameter (a Python ``int`` where the kernel takes an ``int`` would be
passed as 64 bits).

Floating-point results follow the kernel's order of operations in its dtype;
the GPU may contract ``a * b + c`` to one rounding (FMA), so results agree to
rounding, not to the bit. Usage::

    kernel = Kernel(source, name)
    kernel.launch(grid, block, args, smem_bytes)   # args: NumPy arrays and scalars
"""

from __future__ import annotations

import re

import numpy as np

# --- C types ------------------------------------------------------------------------------

DTYPES = {
    "bool": np.dtype(np.bool_),
    "unsigned char": np.dtype(np.uint8),
    "int": np.dtype(np.int32),
    "unsigned int": np.dtype(np.uint32),
    "long long": np.dtype(np.int64),
    "unsigned long long": np.dtype(np.uint64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
}
_RANK = {"int": 1, "unsigned int": 1, "long long": 2, "unsigned long long": 2}
_TYPE_WORDS = {"const", "volatile", "unsigned", "signed", "int", "long", "char", "float", "double",
               "bool", "void", "size_t", "short", "__restrict__"}  # fmt: skip


def _canonical(words):
    """A C arithmetic type from its words (``const`` and ``volatile`` dropped)."""
    w = [x for x in words if x not in ("const", "volatile", "__restrict__", "signed")]
    if w == ["size_t"]:
        return "unsigned long long"
    unsigned = "unsigned" in w
    w = [x for x in w if x != "unsigned"]
    if w.count("long") >= 1:
        base = "long long"  # LP64: long is 64 bits, as long long
    elif w in (["char"],):
        base = "char"
    elif w in ([], ["int"]):
        base = "int"
    elif len(w) == 1 and w[0] in ("float", "double", "bool", "void", "short"):
        base = w[0]
    else:
        raise EmulatorError(f"unsupported type {' '.join(words)!r}")
    if base == "char":
        return "unsigned char" if unsigned else "char"
    return f"unsigned {base}" if unsigned else base


class EmulatorError(AssertionError):
    """The kernel did something the GPU would not do right: out of bounds, a race, a deadlock..."""


class Type:
    """A C type: ``base`` (arithmetic type or ``void``) and ``ptr`` levels of pointer."""

    __slots__ = ("base", "ptr")

    def __init__(self, base, ptr=0):
        self.base, self.ptr = base, ptr

    def __repr__(self):
        return self.base + "*" * self.ptr

    @property
    def dtype(self):
        return DTYPES[self.base]


# --- values -------------------------------------------------------------------------------


class Memory:
    """A buffer of bytes (global, or the grid's shared memory), with a shadow for race detection.

    Shared memory holds ``blocks`` equal parts, one per block: a thread's
    offsets are into its own block's part (``block_bytes`` each).
    """

    def __init__(self, name, raw, space, blocks=1):
        self.name, self.raw, self.space = name, raw, space  # raw: a uint8 view
        self.block_bytes = raw.size // blocks
        n = raw.size
        self.w_agent = np.full(n, -1, np.int64)
        self.w_epoch = np.full(n, -1, np.int64)
        self.r_agent = np.full(n, -1, np.int64)
        self.r_epoch = np.full(n, -1, np.int64)
        self.epoch = 0  # bumped by the barrier that separates accesses
        self._views = {}

    def view(self, dtype):
        if dtype not in self._views:
            usable = self.raw.size // dtype.itemsize * dtype.itemsize
            self._views[dtype] = self.raw[:usable].view(dtype)
        return self._views[dtype]

    def _absolute(self, byte, block, dtype, what):
        """Byte offsets into ``raw``, checked: in bounds (of the block's part) and aligned."""
        limit = self.block_bytes if self.space == "shared" else self.raw.size
        bad = (byte < 0) | (byte + dtype.itemsize > limit)
        if np.any(bad):
            raise EmulatorError(f"{what} {self.space} '{self.name}' out of bounds: byte offsets "
                                f"{byte[bad][:4]} of {limit}")  # fmt: skip
        if np.any(byte % dtype.itemsize):
            raise EmulatorError(f"{what} {self.space} '{self.name}': misaligned {dtype} access")
        return byte + block * self.block_bytes if self.space == "shared" else byte

    def _who(self):
        return "block" if self.space == "global" else "thread"

    def read(self, byte, block, dtype, agents, races):
        byte = self._absolute(byte, block, dtype, "read of")
        if races and byte.size:
            e = self.epoch
            agents = np.broadcast_to(agents, byte.shape)
            if np.any((self.w_epoch[byte] == e) & (self.w_agent[byte] != agents)):
                raise EmulatorError(f"race on {self.space} '{self.name}': a read of a value another "
                                    f"{self._who()} wrote since the last barrier")  # fmt: skip
            fresh = self.r_epoch[byte] != e
            prior = np.where(fresh, agents, self.r_agent[byte])  # the reader on record (or this one)
            several = prior != agents
            order = np.lexsort((agents, byte))  # one address read by several agents at once
            b_sorted, a_sorted = byte[order], agents[order]
            differ = (b_sorted[1:] == b_sorted[:-1]) & (a_sorted[1:] != a_sorted[:-1])
            several[order[1:][differ]] = True
            several[order[:-1][differ]] = True
            self.r_agent[byte] = prior
            self.r_agent[byte[several]] = -2  # read by several
            self.r_epoch[byte] = e
        return self.view(dtype)[byte // dtype.itemsize]

    def write(self, byte, block, dtype, values, agents, races):
        byte = self._absolute(byte, block, dtype, "write to")
        if byte.size > 1 and np.unique(byte).size != byte.size:
            raise EmulatorError(f"race on {self.space} '{self.name}': two threads write one address at once")
        if races and byte.size:
            e = self.epoch
            agents = np.broadcast_to(agents, byte.shape)
            if np.any((self.w_epoch[byte] == e) & (self.w_agent[byte] != agents)):
                raise EmulatorError(f"race on {self.space} '{self.name}': two writers since the last barrier")
            if np.any((self.r_epoch[byte] == e) & (self.r_agent[byte] != agents)):
                raise EmulatorError(f"race on {self.space} '{self.name}': a write to a value another "
                                    f"{self._who()} read since the last barrier")  # fmt: skip
            self.w_epoch[byte] = e
            self.w_agent[byte] = agents
        self.view(dtype)[byte // dtype.itemsize] = values


class Ptr:
    """A pointer: memory, byte offset (a scalar or one per thread) and the pointee type."""

    __slots__ = ("mem", "off", "type")

    def __init__(self, mem, off, type_):
        self.mem, self.off, self.type = mem, off, type_


class Local:
    """A thread-local array ``T a[n]``: ``n`` values per thread."""

    __slots__ = ("data", "type")

    def __init__(self, n, type_, nthreads):
        self.data = np.zeros((n, nthreads), dtype=type_.dtype)
        self.type = type_


class Val:
    """An arithmetic value: a NumPy scalar (the same for every thread) or one per thread."""

    __slots__ = ("v", "type")

    def __init__(self, v, type_):
        self.v, self.type = v, type_


def _cast(v, base):
    """``v`` (a NumPy scalar or array) converted to the C type ``base``, as C converts."""
    dt = DTYPES[base]
    if isinstance(v, np.ndarray):
        return v if v.dtype == dt else v.astype(dt)
    if type(v) is dt.type:
        return v
    return dt.type(v != 0) if base == "bool" else dt.type(v)


def _lanes(v, n):
    """``v`` as one value per lane."""
    return v if isinstance(v, np.ndarray) and v.shape == (n,) else np.full(n, v)


def _arith(a, b):
    """The common type of C's usual arithmetic conversions."""
    if "double" in (a, b):
        return "double"
    if "float" in (a, b):
        return "float"
    a, b = _promote(a), _promote(b)
    if a == b:
        return a
    ua, ub = a.startswith("unsigned"), b.startswith("unsigned")
    if ua == ub:
        return a if _RANK[a] >= _RANK[b] else b
    u, s = (a, b) if ua else (b, a)
    if _RANK[u] >= _RANK[s]:
        return u
    return s  # a wider signed type holds every value of the unsigned one


def _promote(t):
    return "int" if t in ("bool", "char", "unsigned char", "short") else t


# --- source to tokens ---------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<num>0[xX][0-9a-fA-F]+[uUlL]*|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fFuUlL]*)
  | (?P<id>[A-Za-z_]\w*)
  | (?P<op><<=|>>=|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||\+=|-=|\*=|/=|%=|&=|\|=|\^=|->|::|[-+*/%<>=!&|^~?:;,.()\[\]{}])
""", re.X)  # fmt: skip


def _strip(source):
    """Comments and ``#pragma`` lines out; ``#define``s collected; line continuations joined."""
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    source = re.sub(r"//[^\n]*", "", source)
    source = source.replace("\\\n", " ")
    macros, lines = {}, []
    for line in source.split("\n"):
        s = line.strip()
        if s.startswith("#"):
            m = re.match(r"#\s*define\s+(\w+)(\(([^)]*)\))?\s*(.*)$", s)
            if m:
                params = None if m.group(2) is None else [p.strip() for p in m.group(3).split(",") if p.strip()]
                macros[m.group(1)] = (params, _tokens(m.group(4)))
            elif not re.match(r"#\s*(pragma|undef)\b", s):
                raise EmulatorError(f"unsupported preprocessor line: {s}")
            lines.append("")
        else:
            lines.append(line)
    return "\n".join(lines), macros


def _tokens(text):
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise EmulatorError(f"cannot read the source at {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append(m.group())
    return out


def _expand(tokens, macros, depth=0):
    """Macro expansion (object- and function-like), repeated until none is left."""
    if depth > 20:
        raise EmulatorError("macro expansion does not end")
    out, i, changed = [], 0, False
    while i < len(tokens):
        tok = tokens[i]
        if tok in macros:
            params, body = macros[tok]
            if params is None:
                out.extend(body)
                i += 1
                changed = True
                continue
            if i + 1 < len(tokens) and tokens[i + 1] == "(":
                args, cur, level, j = [], [], 0, i + 2
                while True:
                    t = tokens[j]
                    if t == "(" :
                        level += 1
                    elif t == ")":
                        if level == 0:
                            break
                        level -= 1
                    if t == "," and level == 0:
                        args.append(cur)
                        cur = []
                    else:
                        cur.append(t)
                    j += 1
                args.append(cur)
                if len(args) != len(params):
                    raise EmulatorError(f"macro {tok} takes {len(params)} arguments")
                sub = dict(zip(params, args))
                for t in body:
                    out.extend(sub.get(t, [t]))
                i = j + 1
                changed = True
                continue
        out.append(tok)
        i += 1
    return _expand(out, macros, depth + 1) if changed else out


# --- tokens to a syntax tree --------------------------------------------------------------

_BINARY = [
    ("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="),
    ("<<", ">>"), ("+", "-"), ("*", "/", "%"),
]  # fmt: skip
_PREC = {op: i for i, ops in enumerate(_BINARY) for op in ops}
_ASSIGN = {"=", "+=", "-=", "*=", "/=", "%=", "<<=", ">>=", "&=", "|=", "^="}


class _Parser:
    def __init__(self, tokens, typedefs):
        self.t, self.i, self.typedefs = tokens, 0, typedefs

    def peek(self, k=0):
        return self.t[self.i + k] if self.i + k < len(self.t) else None

    def take(self, want=None):
        tok = self.peek()
        if want is not None and tok != want:
            context = " ".join(self.t[max(0, self.i - 8): self.i + 8])
            raise EmulatorError(f"expected {want!r}, got {tok!r} near: {context}")
        self.i += 1
        return tok

    def is_type(self, k=0):
        tok = self.peek(k)
        return tok in _TYPE_WORDS or tok in self.typedefs

    # types and declarations
    def base_type(self):
        words = []
        while self.is_type():
            tok = self.take()
            words.extend(self.typedefs[tok].split() if tok in self.typedefs else [tok])
        return _canonical(words)

    def pointer_levels(self):
        n = 0
        while self.peek() in ("*", "__restrict__", "const", "volatile"):
            n += self.take() == "*"
        return n

    # top level
    def unit(self):
        functions, kernels = {}, {}
        while self.peek() is not None:
            if self.peek() == "typedef":
                self.take()
                base = self.base_type()
                name = self.take()
                self.take(";")
                self.typedefs[name] = base
                continue
            is_kernel, bounds = False, None
            ret = None
            while ret is None or self.peek() == "__launch_bounds__":
                while self.peek() in ("extern", '"C"', "__global__", "__device__", "__forceinline__",
                                      "static", "inline", "__launch_bounds__"):  # fmt: skip
                    tok = self.take()
                    is_kernel |= tok == "__global__"
                    if tok == "__launch_bounds__":  # (max threads per block[, min blocks per SM])
                        bounds = int(_number(self.peek(1)).v)
                        self.skip_parens()
                if ret is None:
                    ret = Type(self.base_type(), self.pointer_levels())
            name = self.take()
            params = self.params()
            body = self.block()
            if is_kernel:
                kernels.setdefault(name, []).append((bounds, params, body))
            else:
                functions.setdefault(name, []).append((ret, params, body))
        return functions, kernels

    def skip_parens(self):
        self.take("(")
        level = 1
        while level:
            tok = self.take()
            level += {"(": 1, ")": -1}.get(tok, 0)

    def params(self):
        self.take("(")
        params = []
        while self.peek() != ")":
            base = self.base_type()
            ptr = self.pointer_levels()
            params.append((Type(base, ptr), self.take()))
            if self.peek() == ",":
                self.take()
        self.take(")")
        return params

    # statements
    def block(self):
        self.take("{")
        stmts = []
        while self.peek() != "}":
            stmts.append(self.statement())
        self.take("}")
        return ("block", stmts)

    def statement(self):
        tok = self.peek()
        if tok == "{":
            return self.block()
        if tok == ";":
            self.take()
            return ("block", [])
        if tok == "for":
            self.take()
            self.take("(")
            init = self.statement() if self.peek() != ";" else ("block", [])
            if init == ("block", []):
                self.take(";")
            cond = self.expr() if self.peek() != ";" else None
            self.take(";")
            step = self.expr() if self.peek() != ")" else None
            self.take(")")
            return ("for", init, cond, step, self.statement())
        if tok == "while":
            self.take()
            self.take("(")
            cond = self.expr()
            self.take(")")
            return ("for", ("block", []), cond, None, self.statement())
        if tok == "if":
            self.take()
            self.take("(")
            cond = self.expr()
            self.take(")")
            then = self.statement()
            other = None
            if self.peek() == "else":
                self.take()
                other = self.statement()
            return ("if", cond, then, other)
        if tok in ("continue", "break"):
            self.take()
            self.take(";")
            return (tok,)
        if tok == "return":
            self.take()
            value = None if self.peek() == ";" else self.expr()
            self.take(";")
            return ("return", value)
        if tok in ("asm", "__asm__"):
            self.take()
            while self.peek() in ("volatile", "__volatile__"):
                self.take()
            self.skip_parens()
            self.take(";")
            return ("asm",)
        if tok in ("extern", "__shared__") or self.is_type():
            return self.declaration()
        e = self.expr()
        self.take(";")
        return ("expr", e)

    def declaration(self):
        shared = False
        while self.peek() in ("extern", "__shared__", "__align__"):
            tok = self.take()
            shared |= tok == "__shared__"
            if tok == "__align__":
                self.skip_parens()
        base = self.base_type()
        while self.peek() == "__align__":
            self.take()
            self.skip_parens()
        decls = []
        while True:
            ptr = self.pointer_levels()
            name = self.take()
            size = None
            if self.peek() == "[":
                self.take()
                size = self.expr() if self.peek() != "]" else None
                self.take("]")
            init = None
            if self.peek() == "=":
                self.take()
                init = self.assignment()
            decls.append((Type(base, ptr), name, size, init))
            if self.peek() != ",":
                break
            self.take()
        self.take(";")
        return ("decl", decls, shared)

    # expressions
    def expr(self):
        return self.assignment()

    def assignment(self):
        left = self.conditional()
        if self.peek() in _ASSIGN:
            op = self.take()
            return ("assign", op, left, self.assignment())
        return left

    def conditional(self):
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            a = self.assignment()
            self.take(":")
            b = self.conditional()
            return ("?:", cond, a, b)
        return cond

    def binary(self, level):
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in _BINARY[level]:
            op = self.take()
            left = ("bin", op, left, self.binary(level + 1))
        return left

    def unary(self):
        tok = self.peek()
        if tok in ("!", "-", "+", "~", "*", "&"):
            self.take()
            return ("unary", tok, self.unary())
        if tok in ("++", "--"):
            self.take()
            return ("assign", tok[0] + "=", self.unary(), ("const", _number("1")))
        if tok == "(" and self.is_type(1):
            self.take()
            base = self.base_type()
            ptr = self.pointer_levels()
            self.take(")")
            return ("cast", Type(base, ptr), self.unary())
        return self.postfix()

    def postfix(self):
        e = self.primary()
        while True:
            tok = self.peek()
            if tok == "[":
                self.take()
                idx = self.expr()
                self.take("]")
                e = ("index", e, idx)
            elif tok == "(":
                self.take()
                args = []
                while self.peek() != ")":
                    args.append(self.assignment())
                    if self.peek() == ",":
                        self.take()
                self.take(")")
                e = ("call", e, args)
            elif tok == ".":
                self.take()
                e = ("member", e, self.take())
            elif tok in ("++", "--"):
                self.take()
                e = ("post", tok, e)
            else:
                return e

    def primary(self):
        tok = self.take()
        if tok == "(":
            e = self.expr()
            self.take(")")
            return e
        if re.match(r"[\d.]", tok):
            return ("const", _number(tok))
        if re.match(r"[A-Za-z_]", tok):
            return ("name", tok)
        raise EmulatorError(f"unexpected {tok!r}")


def _number(text):
    t = text.lower()
    if t.startswith("0x") or re.fullmatch(r"\d+[ul]*", t):
        digits = t.rstrip("ul")
        value = int(digits, 16) if digits.startswith("0x") else int(digits)
        unsigned, longs = "u" in t[len(digits):], t[len(digits):].count("l")
        if longs or value > 0xFFFFFFFF or (value > 0x7FFFFFFF and not (unsigned or t.startswith("0x"))):
            base = "long long"
        else:
            base = "int" if value <= 0x7FFFFFFF and not unsigned else "unsigned int"
        if unsigned and not base.startswith("unsigned"):
            base = "unsigned " + base
        return Val(DTYPES[base].type(value), Type(base))
    if t.endswith("f"):
        return Val(np.float32(float(t[:-1])), Type("float"))
    return Val(np.float64(float(t)), Type("double"))


# --- execution ----------------------------------------------------------------------------


class _Frame:
    """One function call: the threads that have returned and the value they returned."""

    def __init__(self, n):
        self.returned = np.zeros(n, bool)
        self.value = None


class _Loop:
    def __init__(self, n):
        self.broken = np.zeros(n, bool)


_ONE = Val(np.int32(1), Type("int"))
_ZERO = Val(np.int64(0), Type("long long"))


class _Grid:
    """Every thread of the grid, in lockstep: one NumPy lane per thread, ``G * nt`` lanes.

    Lane ``g`` is thread ``g % nt`` of block ``g // nt``. A mask says which
    lanes are active; shared memory is one buffer in per-block parts.
    """

    def __init__(self, kernel, grid, nt, shared, races):
        gx, gy = grid
        self.k, self.G, self.nt, self.n = kernel, gx * gy, nt, gx * gy * nt
        lane = np.arange(self.n, dtype=np.int64)
        self.lane = lane
        self.block_of = lane // nt  # int64, for shared-memory offsets; block = x + gx * y
        u32 = np.uint32
        self.builtin_vars = {
            ("threadIdx", "x"): (lane % nt).astype(u32), ("threadIdx", "y"): u32(0),
            ("blockIdx", "x"): (self.block_of % gx).astype(u32), ("blockIdx", "y"): (self.block_of // gx).astype(u32),
            ("blockDim", "x"): u32(nt), ("blockDim", "y"): u32(1),
            ("gridDim", "x"): u32(gx), ("gridDim", "y"): u32(gy),
        }  # fmt: skip
        self.shared, self.races = shared, races
        self.scopes, self.frames, self.loops = [], [], []
        self.barriers = 0
        self.globals_ = []

    # variables
    def lookup(self, name):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise EmulatorError(f"unknown name {name!r}")

    def set_var(self, name, value, mask):
        for scope in reversed(self.scopes):
            if name in scope:
                scope[name] = self._merge(scope[name], value, mask)
                return
        raise EmulatorError(f"assignment to unknown name {name!r}")

    def _merge(self, old, new, mask):
        """``new`` on the active lanes, ``old`` elsewhere."""
        if old is None or mask.all():
            return new
        if isinstance(new, Ptr):
            if np.ndim(old.off) == 0 and np.ndim(new.off) == 0 and old.off == new.off:
                return new
            return Ptr(new.mem, np.where(mask, new.off, old.off), new.type)
        v = _cast(new.v, old.type.base)
        if np.ndim(v) == 0 and np.ndim(old.v) == 0 and v == old.v:
            return Val(v, old.type)
        return Val(np.where(mask, v, old.v).astype(old.type.dtype), old.type)

    # statements
    def run(self, stmt, mask):
        """Execute ``stmt`` on the lanes of ``mask``; return the lanes that go on after it."""
        kind = stmt[0]
        if kind == "block":
            self.scopes.append({})
            try:
                for s in stmt[1]:
                    if not mask.any():
                        break
                    mask = self.run(s, mask)
            finally:
                self.scopes.pop()
            return mask
        if kind == "expr":
            self.eval(stmt[1], mask)
            return mask
        if kind == "decl":
            scope = self.scopes[-1]
            for type_, name, size, init in stmt[1]:
                if stmt[2]:  # extern __shared__: the dynamic shared memory
                    scope[name] = Ptr(self.shared, 0, Type(type_.base))
                elif size is not None:
                    n = self.eval(size, mask)
                    if np.ndim(n.v):
                        raise EmulatorError(f"local array {name} of a size that differs between threads")
                    scope[name] = Local(int(n.v), type_, self.n)
                elif init is None:
                    scope[name] = None if type_.ptr else Val(type_.dtype.type(0), type_)
                else:
                    scope[name] = self.convert(self.eval(init, mask), type_)
            return mask
        if kind == "if":
            c = self.truth(self.eval(stmt[1], mask))
            if np.ndim(c) == 0:
                branch = stmt[2] if c else stmt[3]
                return mask if branch is None else self.run(branch, mask)
            m1, m2 = mask & c, mask & ~c
            r1 = self.run(stmt[2], m1) if m1.any() else m1
            r2 = self.run(stmt[3], m2) if stmt[3] is not None and m2.any() else m2
            return r1 | r2
        if kind == "for":
            _, init, cond, step, body = stmt
            self.scopes.append({})
            loop = _Loop(self.n)
            self.loops.append(loop)
            try:
                mask = self.run(init, mask)
                active = mask
                while True:
                    if cond is not None:
                        c = self.truth(self.eval(cond, active))
                        active = active & c
                    if not active.any():
                        break
                    self.run(body, active)  # lanes that `continue` come back for the step
                    active = active & ~loop.broken & ~self._returned()
                    if step is not None and active.any():
                        self.eval(step, active)
            finally:
                self.loops.pop()
                self.scopes.pop()
            return mask & ~self._returned()
        if kind == "continue":
            return mask & False
        if kind == "break":
            self.loops[-1].broken |= mask
            return mask & False
        if kind == "return":
            frame = self.frames[-1]
            if stmt[1] is not None:
                v = self.eval(stmt[1], mask)
                frame.value = v if frame.value is None else self._merge(frame.value, v, mask)
            frame.returned = frame.returned | mask
            return mask & False
        if kind == "asm":
            raise EmulatorError("inline PTX must sit in a function listed in BUILTINS")
        raise EmulatorError(f"unsupported statement {kind}")

    def _returned(self):
        return self.frames[-1].returned if self.frames else np.zeros(self.n, bool)

    # expressions
    def truth(self, v):
        if not isinstance(v, Val):
            raise EmulatorError("a pointer or an array used as a condition")
        x = v.v
        return (np.asarray(x) != 0) if np.ndim(x) else bool(x)

    def convert(self, value, type_):
        if type_.ptr:
            if isinstance(value, Local):
                return value
            if not isinstance(value, Ptr):
                raise EmulatorError(f"{type_} from a non-pointer")
            return Ptr(value.mem, value.off, Type(type_.base, type_.ptr - 1))
        if not isinstance(value, Val):
            raise EmulatorError(f"{type_} from a pointer")
        return Val(_cast(value.v, type_.base), type_)

    def eval(self, e, mask):
        kind = e[0]
        if kind == "const":
            return e[1]
        if kind == "name":
            v = self.lookup(e[1])
            if v is None:
                raise EmulatorError(f"{e[1]} read before it is set")
            return v
        if kind == "bin":
            return self.binary(e[1], e[2], e[3], mask)
        if kind == "index":
            return self.load(self.eval(e[1], mask), self.eval(e[2], mask), mask)
        if kind == "assign":
            return self.assign(e[1], e[2], self.eval(e[3], mask), mask)
        if kind == "call":
            return self.call(e[1][1], [self.eval(a, mask) for a in e[2]], mask)
        if kind == "?:":
            c = self.truth(self.eval(e[1], mask))
            if np.ndim(c) == 0:
                return self.eval(e[2] if c else e[3], mask)
            ma, mb = mask & c, mask & ~c
            a = self.eval(e[2], ma) if ma.any() else None
            b = self.eval(e[3], mb) if mb.any() else None
            if a is None or b is None:
                return b if a is None else a
            base = _arith(a.type.base, b.type.base)
            return Val(np.where(c, _cast(a.v, base), _cast(b.v, base)), Type(base))
        if kind == "cast":
            return self.convert(self.eval(e[2], mask), e[1])
        if kind == "member":
            key = (e[1][1], e[2]) if e[1][0] == "name" else None
            if key not in self.builtin_vars:
                raise EmulatorError(f"unsupported member access {e}")
            return Val(self.builtin_vars[key], Type("unsigned int"))
        if kind == "unary":
            op, x = e[1], e[2]
            if op == "*":
                return self.load(self.eval(x, mask), _ZERO, mask)
            if op == "&":
                raise EmulatorError("& (address of) is not supported")
            v = self.eval(x, mask)
            if op == "!":
                t = self.truth(v)
                return Val(~t if np.ndim(t) else not t, Type("bool"))
            base = _promote(v.type.base)
            x = _cast(v.v, base)
            return Val(-x if op == "-" else (~x if op == "~" else x), Type(base))
        if kind == "post":
            old = self.eval(e[2], mask)
            self.assign(e[1][0] + "=", e[2], _ONE, mask)
            return old
        raise EmulatorError(f"unsupported expression {kind}")

    def binary(self, op, x, y, mask):
        if op in ("&&", "||"):  # the right side only where the left does not decide
            a = self.truth(self.eval(x, mask))
            if np.ndim(a) == 0:
                if (op == "&&") != a:
                    return Val(a, Type("bool"))
                return Val(self.truth(self.eval(y, mask)), Type("bool"))
            need = mask & (a if op == "&&" else ~a)
            b = self.truth(self.eval(y, need)) if need.any() else False
            return Val((a & b) if op == "&&" else (a | b), Type("bool"))
        return self.operate(op, self.eval(x, mask), self.eval(y, mask))

    def operate(self, op, a, b):
        """``a op b`` for two values, with C's conversions."""
        if isinstance(a, Ptr) or isinstance(b, Ptr):
            if op == "+" and isinstance(b, Ptr) and isinstance(a, Val):
                a, b = b, a
            if op in ("+", "-") and isinstance(a, Ptr) and isinstance(b, Val):
                step = np.asarray(b.v).astype(np.int64) * a.type.dtype.itemsize
                return Ptr(a.mem, a.off + step if op == "+" else a.off - step, a.type)
            raise EmulatorError(f"unsupported pointer arithmetic {op}")
        if op in ("<<", ">>"):
            base = _promote(a.type.base)
            av, bv = _cast(a.v, base), _cast(b.v, base)
            return Val(av << bv if op == "<<" else av >> bv, Type(base))
        base = _arith(a.type.base, b.type.base)
        av, bv = _cast(a.v, base), _cast(b.v, base)
        if op in _COMPARE:
            return Val(_COMPARE[op](av, bv), Type("bool"))
        if op in ("/", "%") and base not in ("float", "double"):
            safe = np.where(bv == 0, 1, bv).astype(bv.dtype) if np.ndim(bv) else (bv or bv.dtype.type(1))
            q = av // safe
            if not base.startswith("unsigned"):  # C truncates toward zero
                q = q + ((av % safe != 0) & ((av < 0) != (safe < 0))).astype(np.asarray(q).dtype)
            return Val(_cast(q if op == "/" else av - q * safe, base), Type(base))
        return Val(_cast(_ARITH[op](av, bv), base), Type(base))

    def _address(self, p, idx):
        dt = p.type.dtype
        off = np.asarray(p.off, np.int64) + np.asarray(idx.v).astype(np.int64) * dt.itemsize
        return _lanes(off, self.n), dt

    def _agents(self, mem, active):
        return self.lane[active] if mem.space == "shared" else self.block_of[active]

    def load(self, p, idx, mask):
        if isinstance(p, Local):
            i = np.asarray(idx.v).astype(np.int64)
            if np.any((i < 0) | (i >= p.data.shape[0])):
                raise EmulatorError("local array index out of bounds")
            return Val(p.data[i, self.lane] if np.ndim(i) else p.data[int(i)].copy(), p.type)
        if not isinstance(p, Ptr) or p.type.ptr:
            raise EmulatorError("indexing something other than a pointer to numbers")
        byte, dt = self._address(p, idx)
        active = np.nonzero(mask)[0]
        values = p.mem.read(byte[active], self.block_of[active], dt, self._agents(p.mem, active), self.races)
        if np.ndim(p.off) == 0 and np.ndim(idx.v) == 0 and p.mem.space == "global":
            return Val(dt.type(values[0]) if values.size else dt.type(0), p.type)  # the same for all
        out = np.zeros(self.n, dt)
        out[active] = values
        return Val(out, p.type)

    def store(self, p, idx, value, mask):
        if isinstance(p, Local):
            i = np.asarray(idx.v).astype(np.int64)
            v = _lanes(_cast(value.v, p.type.base), self.n)
            if np.ndim(i):
                sel = np.nonzero(mask)[0]
                p.data[i[sel], sel] = v[sel]
            else:
                p.data[int(i)] = np.where(mask, v, p.data[int(i)])
            return
        if not isinstance(p, Ptr) or p.type.ptr:
            raise EmulatorError("a store through something other than a pointer to numbers")
        byte, dt = self._address(p, idx)
        v = _lanes(_cast(value.v, p.type.base), self.n)
        active = np.nonzero(mask)[0]
        p.mem.write(byte[active], self.block_of[active], dt, v[active], self._agents(p.mem, active), self.races)

    def assign(self, op, target, value, mask):
        if op != "=":
            value = self.operate(op[:-1], self.eval(target, mask), value)
        if target[0] == "name":
            old = self.lookup(target[1])
            if isinstance(old, Val):
                value = Val(_cast(value.v, old.type.base), old.type)
            self.set_var(target[1], value, mask)
            return value
        if target[0] == "index":
            self.store(self.eval(target[1], mask), self.eval(target[2], mask), value, mask)
            return value
        if target[0] == "unary" and target[1] == "*":
            self.store(self.eval(target[2], mask), _ZERO, value, mask)
            return value
        raise EmulatorError(f"unsupported assignment target {target[0]}")

    def call(self, name, args, mask):
        if name in BUILTINS:
            return BUILTINS[name](self, args, mask)
        overloads = self.k.functions.get(name)
        if not overloads:
            raise EmulatorError(f"unknown function {name!r}")
        ret, params, body = overloads[0]
        if len(params) != len(args):
            raise EmulatorError(f"{name} takes {len(params)} arguments, got {len(args)}")
        scope = {pname: self.convert(a, type_) for (type_, pname), a in zip(params, args)}
        frame = _Frame(self.n)
        saved, self.scopes = self.scopes, [scope]
        self.frames.append(frame)
        try:
            self.run(body, mask)
        finally:
            self.frames.pop()
            self.scopes = saved
        if ret.base == "void" and not ret.ptr:
            return None
        if frame.value is None or not (frame.returned | ~mask).all():
            raise EmulatorError(f"{name} did not return a value on every path")
        return self.convert(frame.value, ret)


_COMPARE = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
            ">": np.greater, ">=": np.greater_equal}  # fmt: skip
_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "&": np.bitwise_and,
          "|": np.bitwise_or, "^": np.bitwise_xor}  # fmt: skip


# --- built-ins ----------------------------------------------------------------------------


def _everyone(grid, mask, what):
    if not mask.all():
        blocks = np.unique(grid.block_of[~mask])
        raise EmulatorError(f"{what} is not reached by every thread (blocks {blocks[:8]} lack some): "
                            "on a GPU that deadlocks or is undefined")  # fmt: skip


def _syncthreads(grid, args, mask):
    _everyone(grid, mask, "__syncthreads()")
    grid.shared.epoch += 1


def _grid_barrier(grid, args, mask):
    """The kernel's grid-wide barrier (its body is atomics and a spin: tested apart)."""
    _everyone(grid, mask, "grid_barrier()")
    grid.shared.epoch += 1
    for mem in grid.globals_:
        mem.epoch += 1
    grid.barriers += 1


def _shfl_xor(grid, args, mask):
    lanes, v, off = args
    if int(lanes.v) != 0xFFFFFFFF:
        raise EmulatorError("__shfl_xor_sync with a partial lane mask")
    per_warp = mask.reshape(-1, 32)
    if np.any(per_warp.any(axis=1) & ~per_warp.all(axis=1)):
        raise EmulatorError("__shfl_xor_sync(0xffffffff, ...) in a divergent warp")
    offs = np.unique(_lanes(off.v, grid.n)[mask])
    if offs.size != 1:
        raise EmulatorError("__shfl_xor_sync with a lane offset that differs between threads")
    src = grid.lane ^ np.int64(offs[0])
    return Val(_lanes(v.v, grid.n)[src], v.type)


def _math(fn):
    def call(grid, args, mask):
        (x,) = args
        return Val(fn(x.v), x.type)

    return call


def _single(fn):
    """``fn`` of a C ``float`` function (``tanhf``, ``expf``...): computed in float32."""
    return lambda x: fn(np.asarray(x, np.float32)) if np.ndim(x) else fn(np.float32(x))


def _load_l2(grid, args, mask):
    (p,) = args
    return grid.load(p, _ZERO, mask)


def _load_l2_batch(grid, args, mask):
    """``load_l2_batch(base, first, stride, last, v)``: vector j = min(first + j*stride, last)."""
    base, first, stride, last, v = args
    unroll, vec = grid.k.macro_int("UNROLL"), grid.k.macro_int("VEC")
    if not isinstance(v, Local) or v.data.shape[0] != unroll * vec:
        raise EmulatorError("load_l2_batch needs a local array of UNROLL * VEC values")
    if vec * base.type.dtype.itemsize != 16:
        raise EmulatorError("load_l2_batch: VEC values must make 16 bytes")
    if np.any(_lanes(base.off, grid.n)[mask] % 16):
        raise EmulatorError("load_l2_batch from an address that is not 16-byte aligned")
    f, s, last = (np.asarray(a.v).astype(np.int64) for a in (first, stride, last))
    for j in range(unroll):
        q = np.minimum(f + j * s, last)
        for e in range(vec):
            value = grid.load(base, Val(q * vec + e, Type("long long")), mask)
            grid.store(v, Val(np.int64(j * vec + e), Type("long long")), value, mask)


BUILTINS = {
    "__syncthreads": _syncthreads,
    "__shfl_xor_sync": _shfl_xor,
    "__threadfence": lambda grid, args, mask: None,
    "grid_barrier": _grid_barrier,
    "tanh": _math(np.tanh),
    "tanhf": _math(_single(np.tanh)),
    "exp": _math(np.exp),
    "expf": _math(_single(np.exp)),
    "expm1": _math(np.expm1),
    "expm1f": _math(_single(np.expm1)),
    "log1p": _math(np.log1p),
    "log1pf": _math(_single(np.log1p)),
    "fabs": _math(np.abs),
    "fabsf": _math(_single(np.abs)),
    "load_l2": _load_l2,
    "load_l2_batch": _load_l2_batch,
}


# --- kernels ------------------------------------------------------------------------------


class Kernel:
    """A ``__global__`` function of ``source``, run with ``launch`` on NumPy arrays."""

    def __init__(self, source, name, *, races=True):
        text, self.macros = _strip(source)
        tokens = _expand(_tokens(text), self.macros)
        self.functions, kernels = _Parser(tokens, {}).unit()
        if name not in kernels:
            raise EmulatorError(f"no kernel {name!r} in the source (has {sorted(kernels)})")
        ((self.launch_bounds, self.params, self.body),) = kernels[name]
        self.name, self.races = name, races
        self.launches = []  # (grid, block, grid barriers reached) of each launch

    def macro_int(self, name):
        params, body = self.macros[name]
        return int(_number("".join(body)).v)

    def check_args(self, args):
        """Each argument against its parameter: pointer or scalar, C type, contiguity."""
        if len(args) != len(self.params):
            raise EmulatorError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        for (type_, name), a in zip(self.params, args):
            if type_.ptr:
                if not isinstance(a, np.ndarray):
                    raise EmulatorError(f"{name}: an array is needed for {type_}, got {type(a).__name__}")
                if a.dtype != type_.dtype:
                    raise EmulatorError(f"{name}: {type_} needs {type_.dtype}, got {a.dtype}")
                if not a.flags.c_contiguous:
                    raise EmulatorError(f"{name} must be C-contiguous")
            elif type(a) is not type_.dtype.type:
                raise EmulatorError(f"{name}: {type_} needs numpy.{type_.dtype.name}, got {type(a).__name__}")

    def launch(self, grid, block, args, smem_bytes):
        """Run the kernel over ``grid`` blocks of ``block`` threads; arrays are written in place."""
        self.check_args(args)
        grid = tuple(grid) + (1,) * (2 - len(grid))
        if len(grid) != 2 or len(tuple(block)) != 1:
            raise EmulatorError("grids of one or two dimensions and blocks of one are supported")
        (nt,) = tuple(block)
        G = grid[0] * grid[1]
        if self.launch_bounds is not None and nt > self.launch_bounds:
            raise EmulatorError(f"{nt} threads per block, above __launch_bounds__({self.launch_bounds})")
        if nt % 32:
            raise EmulatorError(f"{nt} threads per block: not whole warps")
        shared = Memory("dynamic shared memory", np.zeros(G * smem_bytes, np.uint8), "shared", blocks=G)
        g = _Grid(self, grid, nt, shared, self.races)
        scope = {}
        for (type_, name), a in zip(self.params, args):
            if type_.ptr:
                mem = Memory(name, a.reshape(-1).view(np.uint8), "global")
                g.globals_.append(mem)
                scope[name] = Ptr(mem, 0, Type(type_.base))
            else:
                scope[name] = Val(a, type_)
        g.scopes = [scope]
        with np.errstate(all="ignore"):
            g.run(self.body, np.ones(g.n, bool))
        self.launches.append((grid if grid[1] > 1 else grid[0], nt, g.barriers))
