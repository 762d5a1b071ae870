"""Both CuPy kernels compile with NVRTC, on the CPU, for every architecture NVRTC supports from sm_75.

``cupy-cuda12x`` loads NVRTC 12 and ``cupy-cuda13x`` NVRTC 13, which no
longer compiles for anything below sm_75 (``compute_60`` is refused). So the
kernels are compiled with every NVRTC installed here (``tests/kernels/nvrtc.py``
finds ``nvidia-cuda-nvrtc-cu12`` and ``nvidia-cuda-nvrtc`` 13.x, and a CUDA
toolkit), for every architecture each one reports from sm_75 up, to machine
code (so ptxas runs and checks the inline PTX for that architecture), with
both dtypes and both activations: the fused kernel and the persistent kernel
in one translation unit per architecture, each variant in its own namespace,
exactly the text the package hands to CuPy. ptxas must report no spills and
registers that let one block of the kernel's ``__launch_bounds__`` fit an SM.
The PTX is checked for what the kernels rely on (the barrier's atomics and
fences, loads through L2, vector loads to stage ``h_{t-1}``, warp shuffles,
arithmetic in the kernel's own dtype). Without NVRTC these skip with the reason.
"""

from __future__ import annotations

import functools
import re

import pytest

import nvrtc
from rnn_xp.kernels import cupy_fused as fused
from rnn_xp.kernels import cupy_persistent as persistent

VARIANTS = [(module, dtype, act) for module in (fused, persistent)
            for dtype in ("float32", "float64") for act in ("tanh", "relu")]  # fmt: skip
OPTIONS = ["-std=c++14"]  # what the package passes to cupy.RawKernel
MIN_ARCH = 75

LIBRARIES = nvrtc.libraries()
NO_NVRTC = pytest.mark.skip(reason="no NVRTC library found (pip install nvidia-cuda-nvrtc-cu12 or nvidia-cuda-nvrtc)")
TARGETS = [pytest.param(lib, arch, id=f"nvrtc{lib.version[0]}-sm_{arch}")
           for lib in LIBRARIES for arch in lib.archs if arch >= MIN_ARCH] or [
    pytest.param(None, None, marks=NO_NVRTC, id="no-nvrtc")]  # fmt: skip
LIBS = [pytest.param(lib, id=f"nvrtc{lib.version[0]}") for lib in LIBRARIES] or [
    pytest.param(None, marks=NO_NVRTC, id="no-nvrtc")]  # fmt: skip


@functools.lru_cache(maxsize=1)
def _unit():
    """Every variant of both kernels in one translation unit (a namespace each)."""
    parts = []
    for i, (module, dtype, act) in enumerate(VARIANTS):
        parts.append(f"namespace rnn_xp_variant_{i} {{\n{module.kernel_source(dtype, act)}\n}}\n")
        parts.append("".join(f"#undef {m}\n" for m in ("MAXB", "VEC", "UNROLL", "ACTIVATE")))
    return "".join(parts)


def _names():
    return [module.kernel_name(dtype, act) for module, dtype, act in VARIANTS]


def _threads(module):
    return module._THREADS


@pytest.mark.long  # about 2 s of CPU per architecture
@pytest.mark.parametrize("lib, arch", TARGETS)
def test_kernels_compile_to_machine_code(lib, arch):
    _, log = lib.compile(_unit(), "rnn_xp_kernels.cu", [*OPTIONS, f"-arch=sm_{arch}", "--ptxas-options=-v"])
    for (module, dtype, act), name in zip(VARIANTS, _names()):
        block = re.search(rf"Compiling entry function '{name}' for 'sm_{arch}'(.*?)(?:Compile time|\Z)", log, re.S)
        assert block, f"no machine code for {name}:\n{log}"
        info = block.group(1)
        assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in info, info
        regs = int(re.search(r"Used (\d+) registers", info).group(1))
        assert regs * _threads(module) <= 65536, f"{name}: {regs} registers x {_threads(module)} threads"


def test_every_nvrtc_supports_the_targets_that_matter():
    """sm_75 (Turing), sm_80 (A100), sm_90 (H100/H200) with every NVRTC found."""
    if not LIBRARIES:
        pytest.skip("no NVRTC library found")
    for lib in LIBRARIES:
        assert {75, 80, 90} <= set(lib.archs), (lib, lib.archs)


@functools.lru_cache(maxsize=None)
def _ptx(lib):
    ptx, _ = lib.compile(_unit(), "rnn_xp_kernels.cu", [*OPTIONS, f"-arch=compute_{MIN_ARCH}"])
    return ptx


def _entry(ptx, name):
    """The PTX of one kernel: from its ``.entry`` to the next one."""
    start = ptx.index(f".entry {name}(")
    nxt = ptx.find(".entry ", start + 1)
    return ptx[start : nxt if nxt > 0 else len(ptx)]


def _param_count(module, dtype, act):
    source = module.kernel_source(dtype, act)
    sig = re.search(rf"{module.kernel_name(dtype, act)}\((.*?)\)\s*\{{", source, re.S).group(1)
    return sig.count(",") + 1


@pytest.mark.parametrize("lib", LIBS)
def test_ptx_has_what_the_kernels_rely_on(lib):
    ptx = _ptx(lib)
    for (module, dtype, act), name in zip(VARIANTS, _names()):
        body = _entry(ptx, name)
        header = re.match(rf"\.entry {name}\((.*?)\)", body, re.S)
        assert ".visible .entry " + name in ptx, f'{name}: extern "C", the name must not be mangled'
        assert header.group(1).count(f"{name}_param_") == _param_count(module, dtype, act)
        suffix = "f64" if dtype == "float64" else "f32"
        fma = re.findall(r"fma\.rn(?:\.ftz)?\.(f32|f64)", body)
        assert suffix in fma, f"{name}: no fma in {dtype}"
        if act == "relu" and dtype == "float32":  # tanh's own code may use doubles; relu must not
            assert "f64" not in fma, f"{name}: float64 arithmetic in a float32 kernel"
        if module is persistent:
            assert "atom.global.add.u32" in body  # the barrier's arrival
            assert "ld.volatile.global.u32" in body  # the barrier's spin, never cached in L1
            assert "membar.gl" in body or "fence.sc.gpu" in body or "fence.acq_rel.gpu" in body
            assert "shfl.sync.bfly" in body  # warp reductions
            vec = "v4.f32" if dtype == "float32" else "v2.f64"
            loads = re.findall(rf"ld\.global\.cg\.{vec}", body)
            assert len(loads) >= persistent._UNROLL, f"{name}: h_(t-1) is not staged with vector loads"
            assert re.search(rf"ld\.global\.cg\.{suffix}", body)  # the tail and the projection


def test_batched_load_asm_numbers_its_operands_right():
    """``load_l2_batch``'s asm: load j fills outputs j*VEC .. j*VEC+VEC-1 from input j.

    The interpreter of ``tests/kernels/cuda_emulator.py`` runs this function as a
    Python built-in with that meaning, so the asm itself is read here.
    """
    for dtype, vec, ptx in (("float32", 4, "v4.f32"), ("float64", 2, "v2.f64")):
        source = persistent.kernel_source(dtype, "tanh")
        fn = re.search(r"void load_l2_batch\(.*?\n\}", source, re.S).group(0)
        loads = re.findall(rf'"ld\.global\.cg\.{ptx} \{{([^}}]*)\}}, \[%(\d+)\];', fn)
        assert len(loads) == persistent._UNROLL
        n_out = persistent._UNROLL * vec
        for j, (outs, addr) in enumerate(loads):
            assert [int(o.strip().lstrip("%")) for o in outs.split(",")] == list(range(j * vec, j * vec + vec))
            assert int(addr) == n_out + j
        outputs = re.findall(r'"=([fd])"\(v\[(\d+)\]\)', fn)
        assert [int(i) for _, i in outputs] == list(range(n_out))
        assert {c for c, _ in outputs} == {"f" if dtype == "float32" else "d"}
        inputs = re.findall(r'"l"\(base \+ \(q(\d+) < last \? q\1 : last\) \* VEC\)', fn)
        assert [int(q) for q in inputs] == list(range(persistent._UNROLL))
        for j in range(persistent._UNROLL):
            assert f"q{j} = first + {j} * stride" in fn
        assert '"memory"' in fn and "asm volatile" in fn


# --- the kernels generated from the cells' steps (kernels.cupy_cells) -----------------------


@functools.lru_cache(maxsize=1)
def _cells_unit():
    """Every generated step of the emulated tests' cells, both dtypes, one namespace (and kernel names) each."""
    from test_kernel_cupy_emulated import CELL_H, GATED, GATED_RUNS, _cell_inputs

    from rnn_xp.kernels import cupy_cells

    parts, names = [], []
    for i, (cell, dtype) in enumerate((c, d) for c in GATED for d in ("float32", "float64")):
        c, x, state0, w, _ = _cell_inputs(cell, dtype, next(iter(GATED_RUNS)))
        p = cupy_cells.plan(c, w, tuple(s.shape[-1] for s in state0), CELL_H)
        source = cupy_cells.kernel_source(p, dtype, c.gates).replace("rnn_xp_cell_", f"rnn_xp_cell_v{i}_")
        parts.append(f"namespace rnn_xp_cells_{i} {{\n{source}\n}}\n")
        names += re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)\(", source)
    return "".join(parts), names


@pytest.mark.parametrize("lib", LIBS)
def test_cell_kernels_compile_to_machine_code(lib):
    """The generated CUDA compiles to sm_90 machine code (ptxas runs), without spills, extern "C" names kept.

    (One architecture: the generated kernels use nothing an architecture adds.)
    """
    from rnn_xp.kernels import cupy_cells

    unit, names = _cells_unit()
    assert len(names) == len(set(names)) > 20
    for arch in (90,):
        _, log = lib.compile(unit, "rnn_xp_cells.cu", [*OPTIONS, f"-arch=sm_{arch}", "--ptxas-options=-v"])
        for name in names:
            block = re.search(rf"Compiling entry function '{name}' for 'sm_{arch}'(.*?)(?:Compile time|\Z)", log, re.S)
            assert block, f"no machine code for {name}:\n{log}"
            info = block.group(1)
            assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in info, info
            regs = int(re.search(r"Used (\d+) registers", info).group(1))
            assert regs * cupy_cells._THREADS <= 65536, f"{name}: {regs} registers"
