"""Layer: kernels (the CUDA backend). Run-time state of the process: CuPy (imported on first use),
the compiled kernels memoized per device, the grid of a launch, the device tables of tensors.

Everything a test replaces lives here and is reached as ``runtime.<name>`` by the other
modules, so that one ``monkeypatch.setattr(runtime, ...)`` takes effect everywhere: ``cupy``
(a stand-in), ``function`` (host kernels), ``launch_blocks`` (a fixed grid), ``TABLES`` and
``RESIDENT`` (fresh caches).
"""
from __future__ import annotations

import numpy as np

from .. import _core
from . import compiler

THREADS = int(_core.THREADS)  # threads per block (fusedopt/slots.h, kCudaThreads)
CHUNK = 8192  # elements per chunk of the elementwise kernels (a multiple of every vector width)
BLOCKS_PER_SM = 8  # at most, per SM (fewer where registers or shared memory run out)
SLOTS = int(_core.SLOTS)  # param, grad, state0, state1, state2, master (fusedopt/slots.h)

# Tests set this to an int to run every kernel with that many blocks (the bits must not change).
launch_blocks = None


def cupy():
    """The cupy module (imported on first use: it is optional)."""
    try:
        import cupy  # noqa: PLC0415 -- optional dependency, imported on first use
    except ImportError as e:
        raise ImportError("fusedopt was given CuPy arrays but CuPy cannot be imported "
                          "(pip install 'fusedopt[cuda]')") from e
    return cupy


FUNCTIONS: dict = {}


def function(file: str, name: str):
    """The kernel of a name expression on the current device, compiled once per device."""
    cp = cupy()
    dev = cp.cuda.Device().id
    fn = FUNCTIONS.get((dev, file, name))
    if fn is None:
        path, lowered = compiler._cached_binary(file, name, *compiler._target(cp))
        module = cp.RawModule(path=path)
        fn = (module, module.get_function(lowered))
        FUNCTIONS[(dev, file, name)] = fn
    return fn[1]


def grid(work: int, fn=None) -> int:
    """Blocks for a launch of `fn` over `work` units (chunks, or blocks' worth of elements): at
    most the blocks the device holds at once (from the kernel's registers and shared memory), so
    that the blocks looping over the units run as one wave, not one and a bit."""
    if launch_blocks is not None:
        return int(launch_blocks)
    cp = cupy()
    dev = cp.cuda.Device().id
    key = (dev, id(fn))
    if key not in RESIDENT:
        attrs = cp.cuda.Device(dev).attributes
        per_sm = BLOCKS_PER_SM
        regs = getattr(fn, "num_regs", 0)
        if regs:  # registers are given to warps in units of 256
            per_block = -(-regs * 32 // 256) * 256 * (THREADS // 32)
            per_sm = min(per_sm, attrs.get("MaxRegistersPerMultiprocessor", 65536) // per_block)
        smem = getattr(fn, "shared_size_bytes", 0)
        if smem:  # plus 1 KiB the runtime reserves per block
            per_sm = min(per_sm,
                         attrs.get("MaxSharedMemoryPerMultiprocessor", 0) // (smem + 1024))
        RESIDENT[key] = (fn, attrs["MultiProcessorCount"] * max(1, per_sm))
    return max(1, min(work, RESIDENT[key][1]))


# (device, id(kernel)) -> (the kernel, kept so that its id is not reused; blocks resident at once)
RESIDENT: dict = {}


TABLES: dict = {}
TABLES_MAX = 256


def cached(key, build):
    """``TABLES[key]``, made by ``build()`` on a miss (the oldest entry dropped when full). A
    device table is a pure function of its key, so a hit is always right."""
    hit = TABLES.get(key)
    if hit is None:
        if len(TABLES) >= TABLES_MAX:
            TABLES.pop(next(iter(TABLES)))
        hit = TABLES[key] = build()
    return hit


def tensor_table(key, fields, units, width: int):
    """A multi-tensor kernel's device table, cached under ``key`` (with the device id): entry k
    (k < nt) the first work unit of tensor k, entry nt their total, then ``width`` int64 fields
    per tensor (``fields[k]``, pointers as their bits). Returns (table, total units)."""
    cp = cupy()

    def build():
        nt = len(fields)
        host = np.zeros(nt + 1 + nt * width, np.int64)
        host[1:nt + 1] = np.cumsum(units, dtype=np.int64)
        for k, f in enumerate(fields):
            base = nt + 1 + k * width
            host[base:base + len(f)] = np.array(f, np.uint64).view(np.int64)
        return cp.asarray(host), int(host[nt])

    return cached((cp.cuda.Device().id, *key), build)


def table(rows, chunk: int):
    """The device table of multi_tensor.cuh for ``rows`` = [(pointers per slot, size)] of
    non-empty tensors (``tensor_table``: work units of ``chunk`` elements); returns (table,
    nchunks)."""
    return tensor_table((chunk, tuple(rows)), [(*ptrs, size) for ptrs, size in rows],
                        [-(-size // chunk) for _, size in rows], SLOTS + 1)
    nt = len(rows)
    host = np.zeros(nt + 1 + nt * (SLOTS + 1), np.int64)
    first = 0
    for k, (ptrs, size) in enumerate(rows):
        host[k] = first
        first += -(-size // chunk)
        base = nt + 1 + k * (SLOTS + 1)
        host[base:base + SLOTS] = np.array(ptrs, np.uint64).view(np.int64)
        host[base + SLOTS] = size
    host[nt] = first
    if len(TABLES) >= TABLES_MAX:
        TABLES.pop(next(iter(TABLES)))
    TABLES[key] = hit = (cp.asarray(host), first)
    return hit
