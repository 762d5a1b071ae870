"""The CuPy persistent kernel: the whole recurrence in one launch, for small batches.

For a small batch a step of the fused path (``kernels.cupy_fused``) is a cuBLAS
product and one elementwise kernel, two launches of a few microseconds each
that do almost no work: at B = 8, H = 1024 the product is 8 M multiply-adds,
a few tens of nanoseconds of an H100. Launch latency, not arithmetic, sets
the pace. The kernel here runs all T steps in ONE launch (with
``return_sequences=False``, one launch per block of 32 steps).

The kernel
----------
The grid has G blocks, each owning R consecutive hidden units (rows of
``Wh``), with G * R >= H and G at most the number of SMs (one block per SM).
At the start a block copies its R rows of ``Wh`` (``(R, H)``) into shared
memory, where they stay for every step. Step t is then, per block::

    hs  = h_{t-1}                        # (B, H) staged from global memory (L2)
    xs  = out[t, :, rows]                # (B, R) the input projection x_t @ Wx.T
    dot = hs @ Ws.T                      # (B, R) warp reductions over k
    z   = xs + dot + b[rows]
    h_t = (1 - leak) * h_{t-1}[rows] + leak * f(z)
    out[t, :, rows] = h_t ; state[next][:, rows] = h_t
    grid-wide barrier                    # every block has written its rows of h_t

A warp computes one (row, k-range) item for up to 8 batch rows at once (8
accumulators), so a row of ``Ws`` is read from shared memory once per 8
products; when a block has fewer rows than warps, the k range of a row is
split over several warps and the partial sums are added in shared memory.

The state lives in a ``(2, B, H)`` double buffer: step s reads buffer
``s & 1`` and writes buffer ``(s + 1) & 1``. One barrier per step then
suffices: a block may write step s+1's buffer only after every block has
passed the barrier at the end of step s, so after every block has finished
reading it. ``out[t]`` holds the projection on entry and h_t on exit; a block
only ever reads and writes its own rows of it, so ``out`` needs no barrier.

Exactly the fused path's semantics: z = (projection + h @ Wh.T) + b, then
``(1 - leak) * h + leak * f(z)`` (so leak = 1 gives 0 * h + f(z), as there);
relu keeps NaN; with ``lengths`` a step t >= length keeps the state and writes
zeros to the output; ``reverse`` runs each block of time backwards; with
``return_sequences=False`` the input is projected a block of time steps at a
time (``kernels.numpy._BLOCK_STEPS``) and the kernel runs once per block, the
state carried between launches in the double buffer (memory O(B * H)).
All options are supported; none falls back to the fused path.

Grid-wide barrier and co-residency
----------------------------------
A grid-wide barrier deadlocks unless every block of the grid is resident
at once. The barrier is hand-written (no CUDA header is needed: NVRTC here
has no ``cooperative_groups.h`` on its path, and ``cupy.RawKernel`` adds no
include path for it). It is the same algorithm as cooperative groups'
``grid.sync()``: after ``__syncthreads()``, thread 0 of each block does
``__threadfence()`` (release) and one ``atomicAdd`` on a 32-bit word (block 0
adds ``0x80000000 - (G - 1)``, the others 1, so the top bit flips exactly when
all G have arrived and the low bits return to their value: the word resets
itself), spins on a volatile read until the top bit flips, then
``__threadfence()`` (acquire) and ``__syncthreads()``. Reads of data other
blocks wrote use ``ld.global.cg`` (L2, never the SM's non-coherent L1) in a
volatile asm with a memory clobber: CUDA's own ``__ldcg`` is a plain asm that
the compiler may merge with the same load two steps earlier (the double
buffer's addresses repeat).

Co-residency is guaranteed twice:

1. The grid is sized to at most one block per SM (G <= SM count), and before
   the first launch ``cuOccupancyMaxActiveBlocksPerMultiprocessor`` for the
   compiled kernel, its block size and its shared memory must allow
   ``SMs * blocks_per_SM >= G``; otherwise the case is not eligible.
2. The launch is cooperative (``cuLaunchCooperativeKernel``), which refuses
   a grid that cannot be resident (``CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE``)
   instead of hanging, e.g. when MPS or a green context limits the SMs.

How the cooperative launch is asked for: ``cupy.RawKernel(...,
enable_cooperative_groups=True)`` changes the compile options in some CuPy
releases (older ones add ``--device-c``/``-rdc=true``, and a relocatable
module is then linked against ``libcudadevrt.a``, which the pip wheels lack
and which needs a CUDA toolkit); in CuPy 14 it changes no compile option.
The kernel uses nothing of cooperative groups, so it is compiled as a
plain ``RawKernel`` and its compiled ``cupy.cuda.function.Function`` is
called with ``enable_cooperative_groups=True``, which only selects
``cuLaunchCooperativeKernel`` (an argument of ``Function.__call__`` since
CuPy 8): no relocatable code, no cudadevrt, whatever the CuPy version. Some
CuPy releases shrink a too-large cooperative grid with a warning instead of
failing; since G is checked against the same occupancy call first, that
cannot happen here.

Eligibility and the path heuristic
----------------------------------
``plan`` is a pure function of (B, H, itemsize, device properties): it picks
R = ceil(H / SMs), G = ceil(H / R), 256 threads, and needs
``(R*H + B*H + (KP+1)*R*B) * itemsize`` bytes of shared memory per block,
which must fit the opt-in per-block limit and, with the per-block reserve, one
SM (on an H100 at B = 8: float32 up to H = 2244, float64 up to H = 1452).
``choose_path`` takes the persistent kernel when ``B <= PERSISTENT_MAX_BATCH``
and a plan exists; the fused path otherwise. ``RNN_XP_CUPY_PATH`` = ``auto``
(default) | ``fused`` | ``persistent`` forces a path (``persistent`` falls back
to the fused one, with a warning, when the case is not eligible), and
``forced_path(...)`` does the same for a block of code without touching the
environment (the benchmark uses it).

First-use self-check
--------------------
The first time the persistent kernel would run for a (device, dtype,
nonlinearity), ``self_check`` runs small cases (several blocks, so the
barrier is exercised; lengths, reverse, leak, both return modes) through both
paths and compares them. If they disagree or the kernel fails to compile or
launch, it warns once and that combination uses the fused path from then on.

CuPy is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings
from typing import NamedTuple

__all__ = [
    "DeviceProps",
    "Plan",
    "choose_path",
    "decide_path",
    "device_props",
    "forced_path",
    "kernel_name",
    "kernel_source",
    "path_setting",
    "plan",
    "scan_persistent",
    "self_check",
    "usable",
]

# The persistent kernel is chosen (path "auto") up to this batch size. Each
# step is then a grid barrier (about a microsecond, expected) plus B*H*H/SMs
# multiply-adds per SM from shared memory; the fused path pays two launches per
# step (a few microseconds) but its cuBLAS product scales better with B. The
# crossover is a guess until benchmarks/gpu_check.sh has measured it; 8 is the
# largest batch of the small-batch grid of issue #5.
PERSISTENT_MAX_BATCH = 8

# Threads per block: 8 warps. The kernel is compiled with
# __launch_bounds__(_THREADS), so it must not be launched with more.
_THREADS = 256

# Batch rows a warp accumulates at once (registers per lane); MAXB in the source.
_MAXB = 8

ENV_VAR = "RNN_XP_CUPY_PATH"
PATHS = ("auto", "fused", "persistent")

_FORCED = contextvars.ContextVar("rnn_xp_cupy_path", default=None)

_DTYPES = {"float32": "float", "float64": "double"}

_ACTIVATIONS = {
    "tanh": {"float32": "tanhf(z)", "float64": "tanh(z)"},
    # keeps NaN, as the fused kernel and clip(z, min=0) do
    "relu": {"float32": "((z) > 0.0f || (z) != (z) ? (z) : 0.0f)",
             "float64": "((z) > 0.0 || (z) != (z) ? (z) : 0.0)"},
}  # fmt: skip

# The CUDA source; {real}, {activate}, {name}, {maxb} and {threads} are filled in per variant.
_SOURCE = r"""
// rnn_xp: the persistent recurrence, all steps of a block of time in one launch.
// See rnn_xp/kernels/cupy_persistent.py for the design. No #include: NVRTC's built-ins only.
typedef {real} real;
#define MAXB {maxb}
#define ACTIVATE(z) {activate}

// A load through L2 (never the SM's non-coherent L1) for data other blocks write.
// CUDA's __ldcg is a non-volatile asm without a memory clobber, which the compiler may
// merge or move across the grid barrier (the address of h_{{t-1}} repeats every 2 steps).
__device__ __forceinline__ float load_l2(const float* p)
{{
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
    return v;
}}
__device__ __forceinline__ double load_l2(const double* p)
{{
    double v;
    asm volatile("ld.global.cg.f64 %0, [%1];" : "=d"(v) : "l"(p) : "memory");
    return v;
}}

// All 32 lanes take part: call only from warp-uniform control flow.
__device__ __forceinline__ real warp_sum(real v)
{{
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}}

// Grid-wide barrier over gridDim.x blocks that are all resident (cooperative launch).
// Block 0 adds 0x80000000 - (G - 1), every other block 1: the top bit of *word flips
// exactly when all G blocks have arrived, and the low bits come back to their value.
__device__ __forceinline__ void grid_barrier(unsigned int* word)
{{
    __syncthreads();                      // this block's writes are done
    if (threadIdx.x == 0) {{
        const unsigned int add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1u) : 1u;
        __threadfence();                  // release: our writes before the arrival
        const unsigned int old = atomicAdd(word, add);
        while (((old ^ *((volatile unsigned int*)word)) & 0x80000000u) == 0u) {{ }}
        __threadfence();                  // acquire: the others' writes after the wait
    }}
    __syncthreads();
}}

// out      (n, B, H)  the input projection on entry; the states on exit (write_seq)
// Wh       (H, H)     C-contiguous; this block keeps rows [row0, row0 + R) in shared memory
// bias     (H,)       read only when has_bias
// state    (2, B, H)  double buffer: step s reads (parity0 + s) & 1, writes the other
// lengths  (B,)       int64, read only when has_lengths; global time t0 + t is valid if < length
// barrier  one zeroed word (self-resetting)
extern "C" __global__ void __launch_bounds__({threads}) {name}(
    real* __restrict__ out, const real* __restrict__ Wh, const real* __restrict__ bias,
    real* state, const long long* __restrict__ lengths, unsigned int* barrier,
    const int n, const int B, const int H, const int R, const int KP,
    const int parity0, const long long t0, const int reverse,
    const int has_bias, const int has_lengths, const int write_seq,
    const real leak, const real one_minus_leak)
{{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    real* Ws = (real*)smem_raw;                 // (R, H)  this block's rows of Wh
    real* hs = Ws + (size_t)R * H;              // (B, H)  h_{{t-1}}
    real* xs = hs + (size_t)B * H;              // (B, R)  this block's projection at t
    real* red = xs + (size_t)B * R;             // (KP, R, B) partial dot products

    const int tid = threadIdx.x, nt = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5, nwarps = nt >> 5;
    const int row0 = blockIdx.x * R;
    int rows = H - row0;                        // the last block may have fewer than R
    rows = rows < R ? rows : R;
    rows = rows > 0 ? rows : 0;                 // never return early: every block meets every barrier
    const size_t BH = (size_t)B * H;
    const int Hc = (H + KP - 1) / KP;           // k range of one of the KP parts of a row

    for (int i = tid; i < rows * H; i += nt)    // rows of Wh are contiguous
        Ws[i] = Wh[(size_t)row0 * H + i];

    for (int s = 0; s < n; ++s) {{
        const int t = reverse ? n - 1 - s : s;
        const real* h_prev = state + (size_t)((parity0 + s) & 1) * BH;
        real* h_next = state + (size_t)((parity0 + s + 1) & 1) * BH;

        // 1. stage h_{{t-1}} (written by every block: through L2) and our projection
        for (size_t i = tid; i < BH; i += nt)
            hs[i] = load_l2(h_prev + i);
        for (int i = tid; i < rows * B; i += nt) {{
            const int b = i / rows, r = i - b * rows;
            xs[i] = load_l2(out + ((size_t)t * B + b) * H + row0 + r);
        }}
        __syncthreads();                        // (also orders the Ws copy on step 0)

        // 2. dot[b, r] = sum_k hs[b, k] * Ws[r, k]: item = (row r, k part kp), one per warp
        for (int item = warp; item < R * KP; item += nwarps) {{
            const int r = item % R, kp = item / R;
            if (r >= rows) continue;            // warp-uniform
            const int k0 = kp * Hc;
            const int k1 = k0 + Hc < H ? k0 + Hc : H;
            const real* w = Ws + (size_t)r * H;
            for (int b0 = 0; b0 < B; b0 += MAXB) {{
                real acc[MAXB];
                #pragma unroll
                for (int j = 0; j < MAXB; ++j) acc[j] = (real)0;
                for (int k = k0 + lane; k < k1; k += 32) {{
                    const real wk = w[k];
                    #pragma unroll
                    for (int j = 0; j < MAXB; ++j)
                        if (b0 + j < B) acc[j] += wk * hs[(size_t)(b0 + j) * H + k];
                }}
                #pragma unroll
                for (int j = 0; j < MAXB; ++j) {{
                    if (b0 + j < B) {{                // warp-uniform
                        const real v = warp_sum(acc[j]);
                        if (lane == 0) red[((size_t)kp * R + r) * B + b0 + j] = v;
                    }}
                }}
            }}
        }}
        __syncthreads();

        // 3. bias, activation, leak, lengths; write h_t
        for (int i = tid; i < rows * B; i += nt) {{
            const int b = i / rows, r = i - b * rows;
            real dot = (real)0;
            for (int kp = 0; kp < KP; ++kp) dot += red[((size_t)kp * R + r) * B + b];
            const int u = row0 + r;             // the hidden unit
            real z = xs[i] + dot;               // (o + tmp) + bias, as the fused kernel
            if (has_bias) z += bias[u];
            const real hp = hs[(size_t)b * H + u];
            const real hn = one_minus_leak * hp + leak * ACTIVATE(z);
            const bool valid = !has_lengths || t0 + t < lengths[b];
            h_next[(size_t)b * H + u] = valid ? hn : hp;   // past its length: keep the state
            if (write_seq) out[((size_t)t * B + b) * H + u] = valid ? hn : (real)0;
        }}
        if (s + 1 < n) grid_barrier(barrier);  // h_t complete before anyone stages it
    }}
}}
"""


def kernel_name(dtype_name, nonlinearity):
    """The kernel's (unmangled) name for ``dtype_name`` ("float32"/"float64") and ``nonlinearity``."""
    return f"rnn_xp_persistent_{nonlinearity}_{dtype_name}"


def kernel_source(dtype_name, nonlinearity):
    """The CUDA source of the persistent kernel for one dtype and activation."""
    if dtype_name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype_name!r}")
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(f"nonlinearity must be one of {sorted(_ACTIVATIONS)}; got {nonlinearity!r}")
    return _SOURCE.format(
        real=_DTYPES[dtype_name], activate=_ACTIVATIONS[nonlinearity][dtype_name],
        name=kernel_name(dtype_name, nonlinearity), maxb=_MAXB, threads=_THREADS,
    )  # fmt: skip


# --- sizes and the path heuristic: pure functions of numbers ------------------------------


class DeviceProps(NamedTuple):
    """What the plan needs to know of a GPU (``device_props`` reads them from CUDA)."""

    sm_count: int
    smem_per_block_optin: int  # bytes of shared memory one block may opt in to
    smem_per_sm: int  # bytes of shared memory per SM
    reserved_smem_per_block: int  # bytes the system reserves per resident block
    max_threads_per_block: int
    cooperative_launch: bool


class Plan(NamedTuple):
    """A launch configuration: ``blocks`` blocks of ``threads`` threads, ``rows`` hidden units each."""

    rows: int  # R
    blocks: int  # G = ceil(H / R) <= SMs
    threads: int
    kparts: int  # KP: warps that share one row's k range
    smem_bytes: int


def plan(B, H, dtype_itemsize, device_props):
    """The launch plan for batch ``B``, hidden size ``H``, or ``None`` when not eligible.

    One block per SM owns R = ceil(H / SMs) rows of ``Wh``; its shared memory
    holds those rows, the whole ``h_{t-1}`` ``(B, H)``, the projection
    ``(B, R)`` and the partial sums ``(KP, R, B)``. Not eligible: an empty
    batch, a dtype other than float32/float64, a device without cooperative
    launch, or shared memory that does not fit one block on one SM.
    """
    p = device_props
    if B < 1 or H < 1 or dtype_itemsize not in (4, 8) or not p.cooperative_launch:
        return None
    if p.sm_count < 1:
        return None
    threads = min(_THREADS, p.max_threads_per_block) // 32 * 32
    if threads < 32:
        return None
    rows = math.ceil(H / p.sm_count)
    blocks = math.ceil(H / rows)
    kparts = max(1, (threads // 32) // rows)
    smem = (rows * H + B * H + B * rows + kparts * rows * B) * dtype_itemsize
    if smem > p.smem_per_block_optin or smem + p.reserved_smem_per_block > p.smem_per_sm:
        return None
    return Plan(rows, blocks, threads, kparts, smem)


def choose_path(B, H, dtype_itemsize, device_props):
    """``"persistent"`` for a small batch whose weights fit on chip, else ``"fused"``."""
    if B <= PERSISTENT_MAX_BATCH and plan(B, H, dtype_itemsize, device_props) is not None:
        return "persistent"
    return "fused"


def path_setting():
    """The requested path: ``forced_path``'s if one is active, else ``$RNN_XP_CUPY_PATH`` (``auto``)."""
    forced = _FORCED.get()
    if forced is not None:
        return forced
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in PATHS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(PATHS)}; got {value!r}")
    return value


@contextlib.contextmanager
def forced_path(path):
    """Within the ``with`` block (this thread / context only), CuPy uses ``path``.

    ``path`` is ``"auto"``, ``"fused"`` or ``"persistent"``; it takes
    precedence over ``$RNN_XP_CUPY_PATH``. The environment is not touched.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}; got {path!r}")
    token = _FORCED.set(path)
    try:
        yield
    finally:
        _FORCED.reset(token)


def decide_path(setting, B, H, dtype_itemsize, device_props):
    """``(path, warning or None)`` for a setting from ``path_setting``; no GPU needed."""
    if setting == "fused":
        return "fused", None
    if setting == "persistent":
        if plan(B, H, dtype_itemsize, device_props) is None:
            return "fused", (
                f"{ENV_VAR}=persistent, but B={B}, H={H} with {dtype_itemsize}-byte floats is "
                "not eligible for the persistent kernel (shared memory, dtype or device); "
                "using the fused path"
            )
        return "persistent", None
    return choose_path(B, H, dtype_itemsize, device_props), None


# --- on the GPU ----------------------------------------------------------------------------

_PROPS = {}  # device id -> DeviceProps
_KERNELS = {}  # (dtype name, nonlinearity) -> cupy.RawKernel
_READY = {}  # (device id, dtype name, nonlinearity, plan) -> bool: occupancy allows the grid
_CHECKED = {}  # (device id, dtype name, nonlinearity) -> bool: the self-check passed
_LAUNCHES = 0  # persistent kernel launches so far (the tests read it)


def device_props(device_id):
    """``DeviceProps`` of CUDA device ``device_id`` (read once)."""
    if device_id not in _PROPS:
        from cupy.cuda import runtime

        def attr(name):
            return runtime.deviceGetAttribute(getattr(runtime, name), device_id)

        _PROPS[device_id] = DeviceProps(
            sm_count=attr("cudaDevAttrMultiProcessorCount"),
            smem_per_block_optin=attr("cudaDevAttrMaxSharedMemoryPerBlockOptin"),
            smem_per_sm=attr("cudaDevAttrMaxSharedMemoryPerMultiprocessor"),
            reserved_smem_per_block=attr("cudaDevAttrReservedSharedMemoryPerBlock"),
            max_threads_per_block=attr("cudaDevAttrMaxThreadsPerBlock"),
            cooperative_launch=bool(attr("cudaDevAttrCooperativeLaunch")),
        )
    return _PROPS[device_id]


def _dtype_name(dtype):
    import cupy

    return cupy.dtype(dtype).name


def _kernel(dtype_name, nonlinearity):
    """The ``RawKernel`` for one variant (compiled on first use, per device)."""
    key = (dtype_name, nonlinearity)
    if key not in _KERNELS:
        import cupy

        _KERNELS[key] = cupy.RawKernel(
            kernel_source(dtype_name, nonlinearity), kernel_name(dtype_name, nonlinearity),
            options=("-std=c++14",),
        )  # fmt: skip
    return _KERNELS[key]


def _ready(device_id, dtype_name, nonlinearity, pl):
    """Compile, allow ``pl.smem_bytes`` of dynamic shared memory, check the occupancy."""
    key = (device_id, dtype_name, nonlinearity, pl)
    if key not in _READY:
        from cupy.cuda import driver

        kernel = _kernel(dtype_name, nonlinearity)
        props = device_props(device_id)
        if kernel.max_dynamic_shared_size_bytes < pl.smem_bytes:
            kernel.max_dynamic_shared_size_bytes = props.smem_per_block_optin
        per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(
            kernel.kernel.ptr, pl.threads, pl.smem_bytes)
        _READY[key] = per_sm * props.sm_count >= pl.blocks
    return _READY[key]


def usable(device_id, dtype, nonlinearity, B, H):
    """The plan if the persistent kernel can run this case on this device now, else ``None``.

    Eligible (``plan``), compiled, co-resident by the occupancy API, and the
    first-use self-check passed for (device, dtype, nonlinearity).
    """
    import cupy

    name = _dtype_name(dtype)
    pl = plan(B, H, cupy.dtype(dtype).itemsize, device_props(device_id))
    if pl is None or not self_check(device_id, name, nonlinearity):
        return None
    return pl if _ready(device_id, name, nonlinearity, pl) else None


def scan_persistent(x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak,
                    return_sequences, plan, mod=None, launch=None):  # fmt: skip
    """``scan_portable``'s results for CuPy arrays, each block of time in one launch.

    ``x`` ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, validated, one dtype
    (float32 or float64), on the current device; ``plan`` from ``plan`` and
    checked by ``usable``. Returns ``(h_seq or None, h_last)``.

    ``mod`` (default ``cupy``) and ``launch(grid, block, args, smem_bytes)``
    (default: a cooperative launch of the compiled kernel) exist for the
    tests, which run this loop on the CPU with NumPy and an emulation of the
    kernel, to check the host side (arguments, blocks of time, parity).
    """
    global _LAUNCHES
    import numpy  # only for typed kernel arguments (scalars), never on the caller's arrays

    from .numpy import _project, time_blocks

    if mod is None:
        import cupy as mod
    if launch is None:
        launch = _cooperative_launch(mod.dtype(h0.dtype).name, nonlinearity)
    T, D = x.shape[0], x.shape[-1]
    batch, H = tuple(h0.shape[:-1]), h0.shape[-1]
    B = math.prod(batch)
    dtype = h0.dtype
    real = numpy.dtype(dtype).type
    pl = plan

    x3 = x.reshape(T, B, D)  # (T, B, D)
    WxT = Wx.T  # (D, H)
    Whc = mod.ascontiguousarray(Wh)  # (H, H): rows are copied to shared memory
    bias = Whc if b is None else mod.ascontiguousarray(b)  # (H,); a placeholder when unused
    state = mod.empty((2, B, H), dtype=dtype)  # (2, B, H) the double-buffered state
    state[0] = h0.reshape(B, H)
    if lengths is None:
        lens = mod.zeros(1, dtype=mod.int64)  # a placeholder, never read
    else:
        lens = mod.ascontiguousarray(lengths.reshape(B).astype(mod.int64, copy=False))  # (B,)
    barrier = mod.zeros(1, dtype=mod.uint32)  # the grid barrier's word

    out, buf, blocks = time_blocks(mod, T, B, H, dtype, reverse=reverse, return_sequences=return_sequences)

    parity = 0  # state[parity] holds the current state
    for s, e in blocks:
        block = buf[: e - s]  # (n, B, H)
        _project(mod, x3[s:e], WxT, None, block)  # the bias is added in the kernel
        # In the order of the kernel's parameters; ints typed to match (a Python int
        # would be passed as 64 bits).
        args = (
            block, Whc, bias, state, lens, barrier,
            numpy.int32(e - s), numpy.int32(B), numpy.int32(H), numpy.int32(pl.rows),
            numpy.int32(pl.kparts), numpy.int32(parity), numpy.int64(s), numpy.int32(reverse),
            numpy.int32(b is not None), numpy.int32(lengths is not None),
            numpy.int32(return_sequences), real(leak), real(1.0 - leak),
        )  # fmt: skip
        launch((pl.blocks,), (pl.threads,), args, pl.smem_bytes)
        _LAUNCHES += 1
        parity = (parity + e - s) & 1

    h_last = mod.array(state[parity], copy=True).reshape(*batch, H)  # (*batch, H)
    if out is None:
        return None, h_last
    return out.reshape(T, *batch, H), h_last


def _cooperative_launch(dtype_name, nonlinearity):
    """``launch(grid, block, args, smem_bytes)``: the compiled kernel, cooperatively launched."""
    function = _kernel(dtype_name, nonlinearity).kernel  # cupy.cuda.function.Function

    def launch(grid, block, args, smem_bytes):
        # cuLaunchCooperativeKernel: fails rather than hangs if the grid cannot be resident
        function(grid, block, args, shared_mem=smem_bytes, enable_cooperative_groups=True)

    return launch


# The self-check's cases: several blocks of rows (H = 300: R = 3 on a 132-SM
# H100, 100 blocks, 2 warps per row), batch 3, T = 40 (two launches of 32 and
# 8 steps with return_sequences=False), every option.
_CHECK_SIZES = dict(T=40, B=3, D=5, H=300)
_CHECK_CASES = (
    dict(),
    dict(lengths=(40, 17, 0), reverse=True, leak=0.6),
    dict(lengths=(3, 40, 25), return_sequences=False),
    dict(reverse=True, return_sequences=False, leak=0.3),
)
_TOL = {"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}


def self_check(device_id, dtype_name, nonlinearity):
    """Whether the persistent kernel agrees with the fused path here (run once, then cached).

    On disagreement, or any error compiling or launching it, warn once and
    return False from then on: the caller uses the fused path.
    """
    global _LAUNCHES
    key = (device_id, dtype_name, nonlinearity)
    if key in _CHECKED:
        return _CHECKED[key]
    launches = _LAUNCHES  # _LAUNCHES counts the callers' launches, not the check's
    try:
        problem = _compare(device_id, dtype_name, nonlinearity)
    except Exception as exc:  # compile or launch failure: no persistent kernel here
        problem = f"it failed: {type(exc).__name__}: {exc}"
    finally:
        _LAUNCHES = launches
    _CHECKED[key] = problem is None
    if problem is not None:
        warnings.warn(
            f"rnn_xp: the persistent CuPy kernel ({dtype_name}, {nonlinearity}) is not used "
            f"on device {device_id}: {problem}. The fused path is used instead.",
            RuntimeWarning,
            stacklevel=3,
        )
    return _CHECKED[key]


def _compare(device_id, dtype_name, nonlinearity):
    """``None`` if both paths agree on the check cases, else a description."""
    import cupy
    import numpy

    from .cupy_fused import scan_fused

    n = _CHECK_SIZES
    rng = numpy.random.default_rng(20240605)
    host = dict(
        x=rng.standard_normal((n["T"], n["B"], n["D"])),
        h0=rng.standard_normal((n["B"], n["H"])) * 0.5,
        Wx=rng.standard_normal((n["H"], n["D"])) / math.sqrt(n["D"]),
        Wh=rng.standard_normal((n["H"], n["H"])) * 0.9 / math.sqrt(n["H"]),
        b=rng.standard_normal(n["H"]) * 0.1,
    )
    with cupy.cuda.Device(device_id):
        a = {k: cupy.asarray(v, dtype=dtype_name) for k, v in host.items()}
        pl = plan(n["B"], n["H"], cupy.dtype(dtype_name).itemsize, device_props(device_id))
        if pl is None or not _ready(device_id, dtype_name, nonlinearity, pl):
            return "the check's own size is not eligible on this device"  # fail closed
        rtol, atol = _TOL[dtype_name]
        for case in _CHECK_CASES:
            lens = case.get("lengths")
            kw = dict(nonlinearity=nonlinearity, reverse=case.get("reverse", False),
                      leak=case.get("leak", 1.0),
                      return_sequences=case.get("return_sequences", True),
                      lengths=None if lens is None else cupy.asarray(lens, dtype=cupy.int64))
            want = scan_fused(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], **kw)
            got = scan_persistent(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], plan=pl, **kw)
            for g, w, what in zip(got, want, ("states", "final state")):
                if (g is None) != (w is None):
                    return f"{what}: one path returned None ({case})"
                if g is not None and not bool(cupy.allclose(g, w, rtol=rtol, atol=atol)):
                    err = float(cupy.max(cupy.abs(g - w)))
                    return f"{what} differ by up to {err:.3g} ({case})"
    return None
