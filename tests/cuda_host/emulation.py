"""Run fusedopt's CUDA kernels on the host: csrc/cuda/*.cu compiled by g++ with cuda_host.h, and
a stand-in for CuPy whose arrays are NumPy arrays, so that fusedopt._cuda runs unchanged (checks,
tables, launches) and its kernels' results can be compared with the reference without a GPU.
This is the tests' one CuPy double: ``install`` can also record the launches and run NumPy models
of the kernels, or nothing, in place of the host build.

Kernel arguments are passed as the CUDA driver takes them, one pointer to each value; the
launcher accepts only what CuPy would pass with the intended C type (a device array, np.int64,
np.float32, np.float64, a one-element aligned structured NumPy array for a struct) and refuses
Python numbers, so a wrongly typed argument fails here.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import types

import numpy as np

from fusedopt import _cuda

HERE = pathlib.Path(__file__).resolve().parent
FILES = ("optim.cu", "reduce.cu", "lbfgs.cu", "compact.cu")
GXX = shutil.which("g++")


class ndarray(np.ndarray):  # noqa: N801 -- named as what it stands in for
    """A NumPy array that fusedopt._cuda takes for a cupy.ndarray (on device 0, or the one
    ``on_device`` gives it; views keep their base's device)."""

    _device = 0

    def __array_finalize__(self, obj):
        self._device = getattr(obj, "_device", 0)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    @property
    def device(self):
        return types.SimpleNamespace(id=self._device)


ndarray.__module__ = "cupy"


def asarray(a, dtype=None):
    return np.array(a, dtype=dtype).view(ndarray)


def asnumpy(a):
    return np.array(a).view(np.ndarray)


def on_device(a, device):
    """``a`` (copied) as an array of device ``device``: for the checks that refuse a mix."""
    out = asarray(a)
    out._device = int(device)
    return out


_CURRENT = [0]  # the current device, as ``with cupy.cuda.Device(i):`` sets it


class _Device:
    """cupy.cuda.Device of a host whose 'devices' have 4 'multiprocessors' each."""

    attributes = {"MultiProcessorCount": 4}

    def __init__(self, i=None):
        self.id = _CURRENT[0] if i is None else int(i)

    def __enter__(self):
        self._previous = _CURRENT[0]
        _CURRENT[0] = self.id
        return self

    def __exit__(self, *exc):
        _CURRENT[0] = self._previous
        return False


xp = types.SimpleNamespace(
    ndarray=ndarray, asarray=asarray, asnumpy=asnumpy,
    empty=lambda shape, dtype=np.float64: np.full(shape, np.nan, dtype).view(ndarray),
    zeros=lambda shape, dtype=np.float64: np.zeros(shape, dtype).view(ndarray),
    ones=lambda shape, dtype=np.float64: np.ones(shape, dtype).view(ndarray),
    arange=lambda n, dtype=None: np.arange(n, dtype=dtype).view(ndarray),
    abs=np.abs, max=np.max,
    cuda=types.SimpleNamespace(Device=_Device))

_LIBS: dict = {}


def _headers_text() -> str:
    """Every header the kernel files include (csrc/include/fusedopt and csrc/cuda/*.cuh)."""
    root = _cuda._csrc()
    files = sorted([*(root / "include" / "fusedopt").rglob("*.h"), *(root / "cuda").glob("*.cuh")])
    return "\0".join(f"{f.relative_to(root)}\0{f.read_text()}" for f in files)


def _file_library(file: str) -> dict:
    """{name expression: launcher} of the shared library of one kernel file's instances, built
    once per version of that file and the headers (cached in the temp directory), so that a
    change in one file rebuilds only its library."""
    if file in _LIBS:
        return _LIBS[file]
    names = _cuda.name_expressions()[file]
    text = "\n".join(
        ['#include "cuda_host.h"', f'#include "{file}"']
        + [f'extern "C" void fo_run_{i}(unsigned g, unsigned b, void** a) '
           f"{{ fusedopt_emulation::launch(&{n}, g, b, a); }}" for i, n in enumerate(names)]) + "\n"
    cmd = [GXX, "-std=c++20", "-O1", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
           "-pthread", f"-I{HERE}", *(f"-I{d}" for d in _cuda.include_dirs())]
    key = hashlib.sha256("\0".join([text, (HERE / "cuda_host.h").read_text(), _headers_text(),
                                    (_cuda._csrc() / "cuda" / file).read_text(),
                                    *cmd[1:]]).encode()).hexdigest()
    out = pathlib.Path(tempfile.gettempdir()) / "fusedopt-cuda-host" / f"{key[:32]}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src = pathlib.Path(tmp) / "kernels.cpp"
            src.write_text(text)
            r = subprocess.run(cmd + [str(src), "-o", str(pathlib.Path(tmp) / "k.so")],
                               capture_output=True, text=True, check=False)
            if r.returncode:
                raise RuntimeError(f"host build of {file} failed:\n{r.stderr[-4000:]}")
            os.replace(pathlib.Path(tmp) / "k.so", out)
    dll = ctypes.CDLL(str(out))
    _LIBS[file] = {n: getattr(dll, f"fo_run_{i}") for i, n in enumerate(names)}
    return _LIBS[file]


def library():
    """{name expression: launcher} of every kernel instance (one shared library per file)."""
    return {n: fn for f in FILES for n, fn in _file_library(f).items()}


def _c_value(a):
    if isinstance(a, ndarray):  # a device array: its pointer
        return ctypes.c_void_p(a.__array_interface__["data"][0])
    if type(a) is np.ndarray and a.size == 1 and a.dtype.isalignedstruct:
        # A one-element host array goes by value, as CuPy passes it: here a struct.
        return ctypes.create_string_buffer(a.tobytes(), a.dtype.itemsize)
    for t, c in ((np.int64, ctypes.c_longlong), (np.float32, ctypes.c_float),
                 (np.float64, ctypes.c_double)):
        if type(a) is t:
            return c(a)
    raise TypeError(f"kernel argument of type {type(a).__name__}: CuPy would not pass it as the "
                    "kernel's C type")


def _function(file, name):
    fn = _file_library(file)[name]

    def launch(grid, block, args):
        held = [_c_value(a) for a in args]
        ptrs = (ctypes.c_void_p * len(held))(*[ctypes.addressof(h) for h in held])
        fn(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), ptrs)
    return launch


def not_run(file, name):
    """Kernels that do nothing: for tests that only look at what was launched."""
    return lambda grid, block, args: None


def install(monkeypatch, blocks=2, kernels=None, record=None):
    """Point fusedopt._cuda at the host: the stand-in cupy, a small grid, and as kernels the host
    build of csrc/cuda (default), or ``kernels(file, name) -> run(grid, block, args)`` (a model
    of the kernels, or ``not_run``). With a list ``record``, every launch is appended to it as
    ``dict(file, name, grid, block, args, device)`` before it runs. This is the tests' one CuPy
    double."""
    if kernels is None:
        kernels = _function  # each file's library is built (or found) at its first launch

    def function(file, name):
        run = kernels(file, name)

        def launch(grid, block, args):
            if record is not None:
                record.append(dict(file=file, name=name, grid=grid, block=block, args=args,
                                   device=_CURRENT[0]))
            run(grid, block, args)
        return launch

    monkeypatch.setattr(_cuda.runtime, "cupy", lambda: xp)
    monkeypatch.setattr(_cuda.runtime, "function", function)
    monkeypatch.setattr(_cuda.runtime, "launch_blocks", blocks)
    monkeypatch.setattr(_cuda.runtime, "TABLES", {})
    monkeypatch.setattr(_cuda.runtime, "RESIDENT", {})
