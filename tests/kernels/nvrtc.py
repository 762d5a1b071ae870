"""NVRTC through ``ctypes``: every NVRTC library installed here, for compile tests on the CPU.

NVRTC compiles CUDA C++ to PTX and to machine code (``-arch=sm_XX``, which
runs ptxas) without a GPU. The pip wheels put it at
``nvidia/cuda_nvrtc/lib/libnvrtc.so.12`` (``nvidia-cuda-nvrtc-cu12``) and
``nvidia/cu13/lib/libnvrtc.so.13`` (``nvidia-cuda-nvrtc`` 13.x); a CUDA
toolkit at ``/usr/local/cuda*/lib64``. ``libraries()`` finds them all, one per
major version, so one test compiles with what ``cupy-cuda12x`` and
``cupy-cuda13x`` would each load. Loaded with ``ctypes``, not through CuPy:
CuPy loads only the NVRTC of its own CUDA version.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys


class NvrtcError(RuntimeError):
    """NVRTC refused a program; ``log`` holds its messages."""

    def __init__(self, message, log=""):
        super().__init__(f"{message}\n{log}")
        self.log = log


class Nvrtc:
    """One NVRTC library: its version, the architectures it supports, and ``compile``."""

    def __init__(self, path):
        self.path = path
        self.lib = ctypes.CDLL(path)
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        n = ctypes.c_int()
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * n.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        self.archs = tuple(archs)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def __repr__(self):
        return f"NVRTC {self.version[0]}.{self.version[1]}"

    def _check(self, code, what, log=""):
        if code != 0:
            text = self.lib.nvrtcGetErrorString(code).decode() if hasattr(self, "version") else code
            raise NvrtcError(f"{what} failed: {text}", log)

    def compile(self, source, name, options):
        """``(code, log)``: PTX text for ``-arch=compute_XX``, else the cubin's bytes.

        Raises ``NvrtcError`` with NVRTC's log when the program does not compile.
        """
        prog = ctypes.c_void_p()
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(),
                                                0, None, None), "nvrtcCreateProgram")  # fmt: skip
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            code = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            self.lib.nvrtcGetProgramLog(prog, buf)
            log = buf.value.decode(errors="replace")
            self._check(code, f"compiling {name} with {' '.join(options)}", log)
            ptx = any(o.startswith(("-arch=compute_", "--gpu-architecture=compute_")) for o in options)
            get_size, get = ("nvrtcGetPTXSize", "nvrtcGetPTX") if ptx else ("nvrtcGetCUBINSize", "nvrtcGetCUBIN")
            getattr(self.lib, get_size)(prog, ctypes.byref(size))
            out = ctypes.create_string_buffer(size.value)
            self._check(getattr(self.lib, get)(prog, out), get)
            return (out.value.decode() if ptx else out.raw), log
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _candidates():
    for entry in sys.path:
        yield from glob.glob(os.path.join(entry, "nvidia", "*", "lib", "libnvrtc.so.*"))
    yield from glob.glob("/usr/local/cuda*/lib64/libnvrtc.so.*")


def libraries():
    """Every NVRTC found here, one per major version (the newest minor), oldest first."""
    found = {}
    for path in _candidates():
        base = os.path.basename(path)
        if "builtins" in base or ".alt." in base:
            continue
        try:
            lib = Nvrtc(path)
        except (OSError, NvrtcError, AttributeError):
            continue  # not loadable here (another CPU architecture, a broken install)
        if lib.version[0] not in found or lib.version > found[lib.version[0]].version:
            found[lib.version[0]] = lib
    return [found[k] for k in sorted(found)]
