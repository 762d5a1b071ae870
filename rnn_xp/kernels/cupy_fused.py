"""The fused CuPy loop: one cuBLAS product and one fused CUDA kernel per step.

On a GPU each elementwise operation is a kernel launch, and at small sizes
the launches, not the arithmetic, take the time. The loop here keeps the
buffers of ``kernels.numpy`` (the input projection of all steps written
straight into the output, ``matmul(..., out=)`` for ``h @ Wh.T``) and does
the rest of a step in ONE kernel launch, ``lengths`` included::

    tmp = h_{t-1} @ Wh.T                                # cuBLAS, (B, H)
    z   = (out[t] + tmp) + b                            # out[t] holds x_t @ Wx.T
    h_t = f(z)                          if leak == 1    # no (1 - leak) * h term
        = (1 - leak) * h_{t-1} + leak * f(z)  otherwise
    with lengths: t < length ? (h_t, out h_t) : (h_{t-1} kept, out 0)

so a step is two launches with or without ``lengths``.

The CUDA source
---------------
``STEP_SOURCE`` is the step formula as a device function, ``rnn_xp_state``;
the fused kernel here and the persistent kernel (``kernels.cupy_persistent``)
both call it, so the formula exists once on the GPU. At ``leak == 1`` it
takes a branch without the leak term (the flag ``leaky`` is the same for
every thread): ``(1 - leak) * h`` would be ``0 * inf = NaN`` for an infinite
state, where the portable loop gives ``f(z)``.

``kernel_source(dtype_name, nonlinearity)`` is the whole text NVRTC compiles;
the tests compile it for every architecture NVRTC supports from sm_75 and run
it on the CPU through an interpreter of its C (``tests/kernels/cuda_emulator.py``),
against the portable loop. ``scan_fused`` takes ``mod`` and ``launch`` for
that: the host loop then runs with NumPy and the launches go to the emulator.
CuPy is imported only inside functions.
"""

from __future__ import annotations

import math

from ._blocks import project, time_blocks, transposed_copy

__all__ = ["STEP_SOURCE", "activation_source", "kernel_name", "kernel_source", "scan_fused"]

_DTYPES = {"float32": "float", "float64": "double"}

# f(z) as a C expression of z, per activation and dtype; relu keeps NaN, as clip(z, min=0) does.
_ACTIVATIONS = {
    "tanh": {"float32": "tanhf(z)", "float64": "tanh(z)"},
    "relu": {"float32": "((z) > 0.0f || (z) != (z) ? (z) : 0.0f)",
             "float64": "((z) > 0.0 || (z) != (z) ? (z) : 0.0)"},
}  # fmt: skip

# The step formula, shared with the persistent kernel. Needs `real` and ACTIVATE(z).
STEP_SOURCE = r"""
// h_t from z_t and h_{t-1}. leaky = 0 (leak == 1): f(z) alone, since (1 - leak) * h_{t-1}
// would be 0 * inf = NaN for an infinite state. leaky is the same for every thread.
__device__ __forceinline__ real rnn_xp_state(const real z, const real hp, const int leaky,
                                             const real leak, const real one_minus_leak)
{
    const real a = ACTIVATE(z);
    if (!leaky)
        return a;
    return one_minus_leak * hp + leak * a;
}
"""

_THREADS = 256  # threads per block of the fused kernel
_MAX_GRID = 65535  # blocks along y (the batch rows); the kernel strides over the rest

_SOURCE = r"""
// rnn_xp: one step of the recurrence after the cuBLAS product, every element in one launch.
// See rnn_xp/kernels/cupy_fused.py. No #include: NVRTC's built-ins only.
typedef {real} real;
#define ACTIVATE(z) {activate}
{step}
// o        (B, H)  x_t @ Wx.T on entry; h_t (or 0 past a sequence's length) on exit
// tmp      (B, H)  h_{{t-1}} @ Wh.T
// h        (B, H)  h_{{t-1}}, read only without lengths
// bias     (H,)    read only when has_bias
// state    (B, H)  with lengths: h_{{t-1}} on entry, h_t on exit (kept past a length)
// lengths  (B,)    int64, read only when has_lengths
extern "C" __global__ void __launch_bounds__({threads}) {name}(
    real* __restrict__ o, const real* __restrict__ tmp, const real* h,
    const real* __restrict__ bias, real* state, const long long* __restrict__ lengths,
    const int B, const int H, const long long t,
    const int has_bias, const int has_lengths, const int leaky,
    const real leak, const real one_minus_leak)
{{
    // blockIdx.y strides over the batch rows, the x dimension over the hidden units: no division
    for (int b = blockIdx.y; b < B; b += gridDim.y) {{
        const bool valid = has_lengths && t < lengths[b];
        for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < H; u += gridDim.x * blockDim.x) {{
            const size_t i = (size_t)b * H + u;
            real z = o[i] + tmp[i];             // (x_t @ Wx.T + h_{{t-1}} @ Wh.T) + b
            if (has_bias)
                z += bias[u];
            if (has_lengths) {{
                const real hp = state[i];
                const real hn = rnn_xp_state(z, hp, leaky, leak, one_minus_leak);
                state[i] = valid ? hn : hp;     // past its length a sequence keeps its state
                o[i] = valid ? hn : (real)0;    // ... and outputs zeros
            }} else {{
                o[i] = rnn_xp_state(z, h[i], leaky, leak, one_minus_leak);
            }}
        }}
    }}
}}
"""


def activation_source(dtype_name, nonlinearity):
    """``f(z)`` as a C expression for ``dtype_name`` and ``nonlinearity`` (checked)."""
    if dtype_name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype_name!r}")
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(f"nonlinearity must be one of {sorted(_ACTIVATIONS)}; got {nonlinearity!r}")
    return _ACTIVATIONS[nonlinearity][dtype_name]


def kernel_name(dtype_name, nonlinearity):
    """The fused kernel's (unmangled) name for ``dtype_name`` and ``nonlinearity``."""
    return f"rnn_xp_fused_{nonlinearity}_{dtype_name}"


def kernel_source(dtype_name, nonlinearity):
    """The CUDA source of the fused step for one dtype (``"float32"``/``"float64"``) and activation."""
    activate = activation_source(dtype_name, nonlinearity)
    return _SOURCE.format(real=_DTYPES[dtype_name], activate=activate, step=STEP_SOURCE,
                          name=kernel_name(dtype_name, nonlinearity), threads=_THREADS)  # fmt: skip


_KERNELS = {}  # (dtype name, nonlinearity) -> cupy.RawKernel (compiled on first use, per device)


def _kernel(dtype_name, nonlinearity):
    return raw_kernel(_KERNELS, kernel_source, kernel_name, dtype_name, nonlinearity)


def raw_kernel(cache, source, name, dtype_name, nonlinearity):
    """The ``cupy.RawKernel`` of ``source(dtype_name, nonlinearity)`` named ``name(...)``, kept in ``cache``.

    Compiled on first use (per device, by CuPy); both CUDA kernel modules keep theirs this way.
    """
    key = (dtype_name, nonlinearity)
    if key not in cache:
        import cupy

        cache[key] = cupy.RawKernel(
            source(dtype_name, nonlinearity), name(dtype_name, nonlinearity), options=("-std=c++14",)
        )  # fmt: skip
    return cache[key]


def _launch(dtype_name, nonlinearity):
    """``launch(grid, block, args, smem_bytes)``: the compiled fused kernel on the current device."""
    kernel = _kernel(dtype_name, nonlinearity)

    def launch(grid, block, args, smem_bytes):
        kernel(grid, block, args, shared_mem=smem_bytes)

    return launch


def scan_fused(x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak, return_sequences,
               mod=None, launch=None):  # fmt: skip
    """``scan_portable``'s results for CuPy arrays: a cuBLAS product and one fused launch per step.

    ``x`` ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, validated, one dtype
    (float32 or float64), on the current device. Returns
    ``(h_seq or None, h_last)``. ``mod`` (default ``cupy``) and
    ``launch(grid, block, args, smem_bytes)`` (default: the compiled kernel)
    let the tests run this loop with NumPy and an emulation of the kernel.
    """
    import numpy  # only for typed kernel arguments (scalars), never on the caller's arrays

    if mod is None:
        import cupy as mod
    dtype = h0.dtype
    dtype_name = mod.dtype(dtype).name
    if launch is None:
        launch = _launch(dtype_name, nonlinearity)
    real = numpy.dtype(dtype).type
    T, D = x.shape[0], x.shape[-1]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)

    x3 = x.reshape(T, B, D)  # (T, B, D)
    WxT = Wx.T  # (D, H)
    WhT = transposed_copy(mod, Wh)  # (H, H): h @ WhT is a no-transpose GEMM
    bias = WhT if b is None else mod.ascontiguousarray(b)  # (H,); a placeholder when unused
    out, buf, blocks = time_blocks(mod, T, B, H, dtype, reverse=reverse, return_sequences=return_sequences)
    tmp = mod.empty((B, H), dtype=dtype)  # (B, H) h @ Wh.T
    state = mod.array(h0.reshape(B, H), dtype=dtype, copy=True)  # (B, H) the carried state
    if lengths is None:
        lens = mod.zeros(1, dtype=mod.int64)  # a placeholder, never read
    else:
        lens = mod.ascontiguousarray(lengths.reshape(B).astype(mod.int64, copy=False))  # (B,)
    grid = (max(1, min(-(-H // _THREADS), _MAX_GRID)), max(1, min(B, _MAX_GRID)))  # (units, rows)
    # In the order of the kernel's parameters; typed to match (a Python int would be 64 bits).
    fixed = (numpy.int32(B), numpy.int32(H))
    flags = (numpy.int32(b is not None), numpy.int32(lengths is not None), numpy.int32(leak != 1.0),
             real(leak), real(1.0 - leak))  # fmt: skip

    h = state  # (B, H): h_{t-1}; without lengths, a view of the previous step's output
    for s, e in blocks:
        block = buf[: e - s]  # (n, B, H)
        project(mod, x3[s:e], WxT, None, block)  # the bias is added in the kernel
        for t in range(e - 1, s - 1, -1) if reverse else range(s, e):
            o = block[t - s]  # (B, H): x_t @ Wx.T, becomes the output at t
            mod.matmul(h, WhT, out=tmp)
            launch(grid, (_THREADS,), (o, tmp, h, bias, state, lens, *fixed, numpy.int64(t), *flags), 0)
            if lengths is None:
                h = o
        if h is not state:  # h lives in buf, which the next block reuses
            mod.copyto(state, h)
            h = state

    h_last = mod.array(state, copy=True).reshape(*batch, H)  # (*batch, H)
    if out is None:
        return None, h_last
    return out.reshape(T, *batch, H), h_last
