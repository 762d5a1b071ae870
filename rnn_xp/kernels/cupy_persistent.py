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
    h_t = rnn_xp_state(z, h_{t-1}[rows]) # the fused kernel's formula (kernels.cupy_fused)
    out[t, :, rows] = h_t ; state[next][:, rows] = h_t
    grid-wide barrier                    # every block has written its rows of h_t

Staging ``h_{t-1}`` is a copy of B * H values from L2 into every block, and
an L2 round trip is long: with one load in flight per thread it would take
B * H / 256 round trips per step (32 at B = 8, H = 1024). Each thread
therefore issues ``_UNROLL`` 16-byte loads (``ld.global.cg.v4.f32`` or
``.v2.f64``) in ONE asm statement before its first shared-memory store, so
that B = 8, H = 1024 takes two round trips; the state buffer's rows are
padded to 16 bytes for it, and a tail that is not a whole vector is loaded
one value at a time.

A warp computes one (row, k-range) item for up to 8 batch rows at once (8
accumulators), so a row of ``Ws`` is read from shared memory once per 8
products; when a block has fewer rows than warps, the k range of a row is
split over several warps and the partial sums are added in shared memory.

The state lives in a ``(2, B, H)`` double buffer (each half padded to 16 bytes): step s reads buffer
``s & 1`` and writes buffer ``(s + 1) & 1``. One barrier per step then
suffices: a block may write step s+1's buffer only after every block has
passed the barrier at the end of step s, so after every block has finished
reading it. ``out[t]`` holds the projection on entry and h_t on exit; a block
only ever reads and writes its own rows of it, so ``out`` needs no barrier.

Exactly the fused path's semantics: z = (projection + h @ Wh.T) + b, then
the fused kernel's own ``rnn_xp_state`` (``(1 - leak) * h + leak * f(z)``,
and ``f(z)`` alone at leak = 1, so an infinite state gives no ``0 * inf``);
relu keeps NaN; with ``lengths`` a step t >= length keeps the state and writes
zeros to the output; ``reverse`` runs each block of time backwards; with
``return_sequences=False`` the input is projected a block of time steps at a
time (``_blocks.BLOCK_STEPS``) and the kernel runs once per block, the
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

Eligibility (the path is chosen in the kernels' table)
------------------------------------------------------
``plan`` is a pure function of (B, H, itemsize, device properties): it picks
R = ceil(H / SMs), G = ceil(H / R), 256 threads, and needs
``(R*H + B*H + (KP+1)*R*B) * itemsize`` bytes of shared memory per block,
which must fit the opt-in per-block limit and, with the per-block reserve, one
SM (on an H100 at B = 8: float32 up to H = 2244, float64 up to H = 1452).
The table of ``kernels/__init__.py`` (``kernels.cupy_path``) takes the
persistent kernel when ``B <= kernels.PERSISTENT_MAX_BATCH`` and a plan
exists; the fused path otherwise. ``RNN_XP_CUPY_PATH`` = ``auto``
(default) | ``fused`` | ``persistent`` forces a path (``persistent`` falls back
to the fused one, with a warning, when the case is not eligible), and
``forced_path(...)`` does the same for a block of code without touching the
environment (the benchmark uses it).

Checks before use, and a guard on every launch
----------------------------------------------
Before a plan (a batch size and hidden size, so every class of plan: above
48 KiB of shared memory, a grid on every SM, a k range split over warps,
more batch rows than a warp's accumulators) first runs on a device, for a
dtype and activation, ``self_check`` runs small cases with that very B and H
(T = 40: several blocks of time; lengths, reverse, leak, both return modes)
through both paths and compares them; the occupancy API must also allow the
grid. Every launch of the user's own calls is guarded too. Any failure (a
mismatch, a compile or launch error, a grid the occupancy API refuses) warns
once (``RuntimeWarning``) and switches the persistent kernel off for that
(device, dtype, activation): the call, and every later one, gets the fused
path's result. The warning is never repeated and never silent. ``launches()``
counts the persistent launches of the callers (the checks' own are not
counted), thread-safely.

The tests run this kernel on the CPU: ``tests/kernels/cuda_emulator.py`` interprets
its C source (the staging, the reductions in the kernel's order, the double
buffer, the step formula) block by block between grid barriers, with bounds
and race checks, against the portable loop.

CuPy is imported only inside functions.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import NamedTuple

from . import _settings
from ._blocks import project, time_blocks
from .cupy_fused import STEP_SOURCE, activation_source, raw_kernel

__all__ = [
    "DeviceProps",
    "Plan",
    "device_props",
    "forced_path",
    "kernel_name",
    "kernel_source",
    "launches",
    "path_setting",
    "plan",
    "run_checked",
    "scan_persistent",
    "self_check",
]

# Threads per block: 8 warps. The kernel is compiled with
# __launch_bounds__(_THREADS, 1), so it must not be launched with more; the 1
# (one block per SM, as the plan runs it) lets ptxas use the registers it needs
# (without it, float64 spills on sm_75 with NVRTC 13).
_THREADS = 256

# Batch rows a warp accumulates at once (registers per lane); MAXB in the source.
_MAXB = 8

# 16-byte loads each thread has in flight while it stages h_{t-1}; UNROLL in the source.
_UNROLL = 4
_VEC_BYTES = 16

ENV_VAR = _settings.CUPY_PATH
PATHS = _settings.CUPY_PATHS

# The requested path: forced_path's if one is active, else $RNN_XP_CUPY_PATH (auto).
path_setting = _settings.cupy_path
# Within the `with` block (this thread / context only), CuPy uses the path given
# (RNN_XP_CUPY_PATH's values); the environment is not touched.
forced_path = _settings.forced_cupy_path

_DTYPES = {"float32": ("float", "f32", "f"), "float64": ("double", "f64", "d")}  # C, PTX, asm constraint

# The CUDA source; {real}, {activate}, {step}, {name}, {maxb}, {vec}, {unroll},
# {load_batch} and {threads} are filled in per variant.
_SOURCE = r"""
// rnn_xp: the persistent recurrence, all steps of a block of time in one launch.
// See rnn_xp/kernels/cupy_persistent.py for the design. No #include: NVRTC's built-ins only.
typedef {real} real;
#define MAXB {maxb}
#define VEC {vec}
#define UNROLL {unroll}
#define ACTIVATE(z) {activate}
{step}
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
{load_batch}
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
// state    (2, BHp)   double buffer of h (B, H), each half padded to whole 16-byte vectors:
//                     step s reads half (parity0 + s) & 1, writes the other
// lengths  (B,)       int64, read only when has_lengths; global time t0 + t is valid if < length
// barrier  one zeroed word (self-resetting)
// One block per SM (the grid is co-resident): ptxas may give each thread up to 255 registers.
extern "C" __global__ void __launch_bounds__({threads}, 1) {name}(
    real* __restrict__ out, const real* __restrict__ Wh, const real* __restrict__ bias,
    real* state, const long long* __restrict__ lengths, unsigned int* barrier,
    const int n, const int B, const int H, const int R, const int KP,
    const int parity0, const long long t0, const int reverse,
    const int has_bias, const int has_lengths, const int write_seq, const int leaky,
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
    const size_t BHp = (BH + VEC - 1) / VEC * VEC;  // a half of state, in whole vectors
    const size_t nvec = BH / VEC;               // whole vectors of h; the rest is the tail
    const int Hc = (H + KP - 1) / KP;           // k range of one of the KP parts of a row

    for (int i = tid; i < rows * H; i += nt)    // rows of Wh are contiguous
        Ws[i] = Wh[(size_t)row0 * H + i];

    for (int s = 0; s < n; ++s) {{
        const int t = reverse ? n - 1 - s : s;
        const real* h_prev = state + (size_t)((parity0 + s) & 1) * BHp;
        real* h_next = state + (size_t)((parity0 + s + 1) & 1) * BHp;

        // 1. stage h_{{t-1}} (written by every block: through L2), UNROLL vectors in flight
        //    per thread, then our projection
        for (size_t q0 = tid; q0 < nvec; q0 += (size_t)UNROLL * nt) {{
            real v[UNROLL * VEC];
            load_l2_batch(h_prev, q0, nt, nvec - 1, v);
            #pragma unroll
            for (int j = 0; j < UNROLL; ++j) {{
                const size_t q = q0 + (size_t)j * nt;
                if (q < nvec) {{
                    #pragma unroll
                    for (int e = 0; e < VEC; ++e)
                        hs[q * VEC + e] = v[j * VEC + e];
                }}
            }}
        }}
        for (size_t i = nvec * VEC + tid; i < BH; i += nt)
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

        // 3. bias, the step formula (rnn_xp_state, as in the fused kernel), lengths; write h_t
        for (int i = tid; i < rows * B; i += nt) {{
            const int b = i / rows, r = i - b * rows;
            real dot = (real)0;
            for (int kp = 0; kp < KP; ++kp) dot += red[((size_t)kp * R + r) * B + b];
            const int u = row0 + r;             // the hidden unit
            real z = xs[i] + dot;               // (o + tmp) + bias, as the fused kernel
            if (has_bias) z += bias[u];
            const real hp = hs[(size_t)b * H + u];
            const real hn = rnn_xp_state(z, hp, leaky, leak, one_minus_leak);
            const bool valid = !has_lengths || t0 + t < lengths[b];
            h_next[(size_t)b * H + u] = valid ? hn : hp;   // past its length: keep the state
            if (write_seq) out[((size_t)t * B + b) * H + u] = valid ? hn : (real)0;
        }}
        if (s + 1 < n) grid_barrier(barrier);  // h_t complete before anyone stages it
    }}
}}
"""


def _load_batch_source(dtype_name):
    """``load_l2_batch``: ``_UNROLL`` 16-byte loads through L2 in one asm statement."""
    ctype, ptx, con = _DTYPES[dtype_name]
    vec = _VEC_BYTES // (4 if dtype_name == "float32" else 8)
    loads = "\n".join(
        f'        "ld.global.cg.v{vec}.{ptx} {{' + ", ".join(f"%{j * vec + e}" for e in range(vec))
        + f'}}, [%{_UNROLL * vec + j}];\\n\\t"'
        for j in range(_UNROLL)
    )  # fmt: skip
    outputs = ", ".join(f'"={con}"(v[{i}])' for i in range(_UNROLL * vec))
    qs = ", ".join(f"q{j} = first + {j} * stride" for j in range(_UNROLL))
    inputs = ", ".join(f'"l"(base + (q{j} < last ? q{j} : last) * VEC)' for j in range(_UNROLL))
    return f"""
// UNROLL 16-byte loads through L2 in ONE asm statement, so all are in flight before the
// first value is used (one volatile load per statement waits a whole L2 round trip each).
// Vector j is first + j * stride, clamped to last (a clamped load repeats one, in bounds).
// base must be 16-byte aligned; v gets UNROLL * VEC values, vector j at v[j * VEC].
__device__ __forceinline__ void load_l2_batch(const real* base, const size_t first,
                                              const size_t stride, const size_t last, real* v)
{{
    const size_t {qs};
    asm volatile(
{loads}
        : {outputs}
        : {inputs}
        : "memory");
}}
"""


def kernel_name(dtype_name, nonlinearity):
    """The kernel's (unmangled) name for ``dtype_name`` ("float32"/"float64") and ``nonlinearity``."""
    return f"rnn_xp_persistent_{nonlinearity}_{dtype_name}"


def kernel_source(dtype_name, nonlinearity):
    """The CUDA source of the persistent kernel for one dtype and activation."""
    activate = activation_source(dtype_name, nonlinearity)  # checks both names
    ctype = _DTYPES[dtype_name][0]
    return _SOURCE.format(
        real=ctype, activate=activate, step=STEP_SOURCE, load_batch=_load_batch_source(dtype_name),
        name=kernel_name(dtype_name, nonlinearity), maxb=_MAXB, threads=_THREADS,
        vec=_VEC_BYTES // (4 if dtype_name == "float32" else 8), unroll=_UNROLL,
    )  # fmt: skip


def state_stride(B, H, itemsize):
    """Elements of one half of the state's double buffer: ``B * H`` rounded up to 16 bytes."""
    vec = _VEC_BYTES // itemsize
    return -(-B * H // vec) * vec


# --- sizes: pure functions of numbers -----------------------------------------------------


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


# --- on the GPU ----------------------------------------------------------------------------

_PROPS = {}  # device id -> DeviceProps
_KERNELS = {}  # (dtype name, nonlinearity) -> cupy.RawKernel
_LOCK = threading.RLock()  # guards the tables below and the launch count
_PLANS = {}  # (device id, dtype name, nonlinearity, B, H) -> True: checked and ready
_OFF = {}  # (device id, dtype name, nonlinearity) -> why the persistent kernel is off there
_LAUNCH_COUNT = 0  # persistent launches of the callers (never the checks' own)


def launches():
    """How many times the persistent kernel has been launched for callers so far (all threads).

    The self-check's own launches are not counted, so a caller (the tests, the
    benchmark) can tell whether its call ran the kernel.
    """
    return _LAUNCH_COUNT


def _count_launch():
    global _LAUNCH_COUNT
    with _LOCK:
        _LAUNCH_COUNT += 1


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


def _kernel(dtype_name, nonlinearity):
    """The ``RawKernel`` for one variant (compiled on first use, per device)."""
    return raw_kernel(_KERNELS, kernel_source, kernel_name, dtype_name, nonlinearity)


def _occupancy_problem(device_id, dtype_name, nonlinearity, pl):
    """``None`` if the grid of ``pl`` can be resident at once here, else why not.

    Compiles the kernel, opts in to ``pl.smem_bytes`` of dynamic shared memory
    (beyond 48 KiB a kernel must ask), and asks the occupancy API.
    """
    from cupy.cuda import driver

    kernel = _kernel(dtype_name, nonlinearity)
    props = device_props(device_id)
    if kernel.max_dynamic_shared_size_bytes < pl.smem_bytes:
        kernel.max_dynamic_shared_size_bytes = props.smem_per_block_optin
    per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, pl.threads, pl.smem_bytes)
    if per_sm * props.sm_count < pl.blocks:
        return (f"the occupancy API allows {per_sm} block(s) of {pl.threads} threads and "
                f"{pl.smem_bytes} bytes of shared memory per SM, {per_sm * props.sm_count} in all, "
                f"and the grid has {pl.blocks}")  # fmt: skip
    return None


def _switch_off(key, problem):
    """The persistent kernel is off for ``key`` = (device, dtype, activation): warn, once."""
    with _LOCK:
        if key in _OFF:
            return
        _OFF[key] = problem
    device_id, dtype_name, nonlinearity = key
    warnings.warn(
        f"rnn_xp: the persistent CuPy kernel ({dtype_name}, {nonlinearity}) is switched off on "
        f"device {device_id}: {problem}. The fused path gives the results instead.",
        RuntimeWarning,
        stacklevel=4,
    )


def self_check(device_id, dtype_name, nonlinearity, B, H, *, mod=None):
    """Whether the persistent kernel may run batch ``B``, hidden size ``H`` here (checked once).

    The first time for a (device, dtype, activation, B, H): the occupancy API
    must allow the plan's grid, and the kernel must agree with the fused path on
    small cases of that B and H. Any failure (a mismatch, a compile or launch
    error, an occupancy refusal) switches the kernel off for the (device,
    dtype, activation) with one ``RuntimeWarning``; later calls return False
    at once. A size with no plan (``plan`` is None) is False, and no failure.
    """
    key = (device_id, dtype_name, nonlinearity)
    with _LOCK:
        if key in _OFF:
            return False
        if _PLANS.get(key + (B, H)):
            return True
    if mod is None:
        import cupy as mod
    pl = plan(B, H, mod.dtype(dtype_name).itemsize, device_props(device_id))
    if pl is None:  # no plan to check (kernels.cupy_path keeps such sizes on the fused path)
        return False
    try:
        problem = _occupancy_problem(device_id, dtype_name, nonlinearity, pl)
        problem = problem or _compare(dtype_name, nonlinearity, B, H, pl, mod)
    except Exception as exc:  # compile or launch failure: no persistent kernel here
        problem = f"B={B}, H={H}: {type(exc).__name__}: {exc}"
    if problem is not None:
        _switch_off(key, problem)
        return False
    with _LOCK:
        _PLANS[key + (B, H)] = True
    return True


def run_checked(x, h0, Wx, Wh, b, *, device_id, nonlinearity, lengths, reverse, leak,
                return_sequences, mod=None):  # fmt: skip
    """The persistent kernel's results, or ``None`` where the fused path must run instead.

    ``None`` when the kernel is off on this device for this dtype and
    activation, when ``self_check`` fails for this B and H, or when the launch
    raises (which switches the kernel off, with one warning). Runs on the
    current device; the caller has chosen the persistent path.
    """
    if mod is None:
        import cupy as mod
    dtype_name = mod.dtype(h0.dtype).name
    B, H = math.prod(h0.shape[:-1]), h0.shape[-1]
    if not self_check(device_id, dtype_name, nonlinearity, B, H, mod=mod):
        return None
    pl = plan(B, H, mod.dtype(dtype_name).itemsize, device_props(device_id))
    try:
        return scan_persistent(x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
                               reverse=reverse, leak=leak, return_sequences=return_sequences,
                               plan=pl, mod=mod)  # fmt: skip
    except Exception as exc:  # a launch error on the caller's own data: fused from now on
        _switch_off((device_id, dtype_name, nonlinearity), f"a launch failed: {type(exc).__name__}: {exc}")
        return None


def scan_persistent(x, h0, Wx, Wh, b, *, nonlinearity, lengths, reverse, leak,
                    return_sequences, plan, mod=None, launch=None, count=True):  # fmt: skip
    """``scan_portable``'s results for CuPy arrays, each block of time in one launch.

    ``x`` ``(T, *batch, D)``, ``h0`` ``(*batch, H)``, validated, one dtype
    (float32 or float64), on the current device; ``plan`` from ``plan``.
    Returns ``(h_seq or None, h_last)``. ``count=False`` leaves the launches
    out of ``launches()`` (the self-check's).

    ``mod`` (default ``cupy``) and ``launch(grid, block, args, smem_bytes)``
    (default: a cooperative launch of the compiled kernel) exist for the
    tests, which run this loop on the CPU with NumPy and an interpreter of
    the kernel's source.
    """
    import numpy  # only for typed kernel arguments (scalars), never on the caller's arrays

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
    BHp = state_stride(B, H, numpy.dtype(dtype).itemsize)
    state = mod.zeros((2, BHp), dtype=dtype)  # (2, BHp): the double-buffered state (B, H), padded
    state[0, : B * H] = h0.reshape(B * H)
    if lengths is None:
        lens = mod.zeros(1, dtype=mod.int64)  # a placeholder, never read
    else:
        lens = mod.ascontiguousarray(lengths.reshape(B).astype(mod.int64, copy=False))  # (B,)
    barrier = mod.zeros(1, dtype=mod.uint32)  # the grid barrier's word

    out, buf, blocks = time_blocks(mod, T, B, H, dtype, reverse=reverse, return_sequences=return_sequences)

    parity = 0  # state[parity] holds the current state
    for s, e in blocks:
        block = buf[: e - s]  # (n, B, H)
        project(mod, x3[s:e], WxT, None, block)  # the bias is added in the kernel
        # In the order of the kernel's parameters; ints typed to match (a Python int
        # would be passed as 64 bits).
        args = (
            block, Whc, bias, state, lens, barrier,
            numpy.int32(e - s), numpy.int32(B), numpy.int32(H), numpy.int32(pl.rows),
            numpy.int32(pl.kparts), numpy.int32(parity), numpy.int64(s), numpy.int32(reverse),
            numpy.int32(b is not None), numpy.int32(lengths is not None),
            numpy.int32(return_sequences), numpy.int32(leak != 1.0), real(leak), real(1.0 - leak),
        )  # fmt: skip
        launch((pl.blocks,), (pl.threads,), args, pl.smem_bytes)
        if count:
            _count_launch()
        parity = (parity + e - s) & 1

    h_last = mod.array(state[parity, : B * H], copy=True).reshape(*batch, H)  # (*batch, H)
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


# The self-check's cases, run with the caller's B and H (so on the very plan that
# will run): T = 40 is two launches of 32 and 8 steps with return_sequences=False.
_CHECK_SIZES = dict(T=40, D=5)
_CHECK_CASES = (
    dict(),
    dict(lengths=(40, 17, 0), reverse=True, leak=0.6),
    dict(lengths=(3, 40, 25), return_sequences=False),
    dict(reverse=True, return_sequences=False, leak=0.3),
)
_TOL = {"float32": (1e-4, 1e-4), "float64": (1e-9, 1e-9)}


def _compare(dtype_name, nonlinearity, B, H, pl, mod):
    """``None`` if both paths agree on the check cases at this B and H, else a description."""
    import numpy

    from .cupy_fused import scan_fused

    T, D = _CHECK_SIZES["T"], _CHECK_SIZES["D"]
    rng = numpy.random.default_rng(20240605)
    host = dict(
        x=rng.standard_normal((T, B, D)),
        h0=rng.standard_normal((B, H)) * 0.5,
        Wx=rng.standard_normal((H, D)) / math.sqrt(D),
        Wh=rng.standard_normal((H, H)) * 0.9 / math.sqrt(H),
        b=rng.standard_normal(H) * 0.1,
    )
    a = {k: mod.asarray(v.astype(dtype_name)) for k, v in host.items()}
    rtol, atol = _TOL[dtype_name]
    for case in _CHECK_CASES:
        lens = case.get("lengths")
        kw = dict(nonlinearity=nonlinearity, reverse=case.get("reverse", False),
                  leak=case.get("leak", 1.0), return_sequences=case.get("return_sequences", True),
                  lengths=None if lens is None else mod.asarray(numpy.resize(lens, B).astype(numpy.int64)))  # fmt: skip
        want = scan_fused(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], mod=mod, **kw)
        got = scan_persistent(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"], plan=pl, mod=mod, count=False, **kw)
        for g, w, what in zip(got, want, ("states", "final state")):
            if (g is None) != (w is None):
                return f"B={B}, H={H}: {what}: one path returned None ({case})"
            if g is not None and not bool(mod.allclose(g, w, rtol=rtol, atol=atol)):
                err = float(mod.max(mod.abs(g - w)))
                return f"B={B}, H={H}: {what} differ by up to {err:.3g} ({case})"
    return None
