"""The CUDA backend: ``fusedopt._core``'s functions for CuPy arrays.

Every function here has the positional signature of its ``_core`` twin, so ``fusedopt.ops`` and
``fusedopt.optim`` call either one unchanged. Each checks all arrays (CuPy type, one device,
dtype, shape, contiguity, aliasing) before anything is launched, then runs one kernel launch per
dtype present for the whole list of tensors.

Kernels are the ``csrc/cuda/*.cu`` files (shipped in the wheel under ``fusedopt/csrc``, or read
from the source tree of a development checkout), compiled at first use by NVRTC for the current
device and memoized per device; the compiled code is also kept on disk (see ``cache_dir``).

Compilation, and why not ``cupy.RawModule(code=...)``
------------------------------------------------------
``RawModule(code=..., options=...)`` appends ``-ftz=true`` *after* the caller's options
(cupy/cuda/compiler.py, ``_compile_with_cache_cuda``), and NVRTC takes the last of repeated
options, so a caller's ``-ftz=false`` loses: float32 denormals would be flushed to zero and the
results would differ from NumPy's. Its disk cache key also ignores the headers pulled in with
``-I``. So the source goes to NVRTC through CuPy's binding (``cupy.cuda.nvrtc``) with
``OPTIONS``, the architecture and ``--device-as-default-execution-space`` (as CuPy adds it), is
cached on disk under a key that covers the source text (which carries a hash of every kernel
file and header), the options, the architecture and the NVRTC version, and is loaded with
``cupy.RawModule(path=...)``. Template instances are named with NVRTC name expressions and looked
up through the lowered names NVRTC reports. ``tests/test_cuda_build.py`` compiles every instance
without a device and checks the PTX for ``.ftz`` and FMA.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile

import numpy as np

from . import _core
from ._checks import check_lists

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "adamax", "sum_squares", "scale_", "OPTIONS",
           "cache_dir", "compile_instances", "name_expressions", "source_text"]

# Exact IEEE arithmetic as on the CPU: no FMA contraction, no flush to zero, correctly rounded
# division and square root (NVRTC's defaults, spelled out), no fast math.
OPTIONS = ("--std=c++17", "--fmad=false", "-ftz=false", "-prec-div=true", "-prec-sqrt=true")

THREADS = 256  # kThreads in csrc/cuda/multi_tensor.cuh
CHUNK = 8192  # elements per chunk of the elementwise kernels (a multiple of every vector width)
BLOCKS_PER_SM = 8  # the grid is min(chunks, SMs * BLOCKS_PER_SM); blocks loop over chunks
SLOTS = 6  # param, grad, state0, state1, state2, master (multi_tensor.cuh)

# Tests set this to an int to run every kernel with that many blocks (the bits must not change).
launch_blocks = None

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _cupy():
    try:
        import cupy  # noqa: PLC0415 -- optional dependency, imported on first use
    except ImportError as e:
        raise ImportError("fusedopt was given CuPy arrays but CuPy cannot be imported "
                          "(pip install 'fusedopt[cuda]')") from e
    return cupy


# ---- sources ------------------------------------------------------------------------------------

def _csrc() -> pathlib.Path:
    """The kernel sources: installed in the package, else the source tree of a checkout."""
    pkg = pathlib.Path(__file__).resolve().parent
    for root in (pkg / "csrc", pkg.parent.parent / "csrc"):
        if (root / "cuda" / "optim.cu").is_file() and (root / "include" / "fusedopt").is_dir():
            return root
    raise FileNotFoundError(
        f"fusedopt's CUDA sources were found neither in {pkg / 'csrc'} nor in "
        f"{pkg.parent.parent / 'csrc'}; reinstall fusedopt")


def include_dirs() -> tuple:
    root = _csrc()
    return (str(root / "include"), str(root / "cuda"))


_SOURCES_HASH = None


def sources_hash() -> str:
    """sha256 of every kernel file and header (names and contents)."""
    global _SOURCES_HASH
    if _SOURCES_HASH is None:
        root = _csrc()
        h = hashlib.sha256()
        for base in (root / "cuda", root / "include" / "fusedopt"):
            for f in sorted(p for p in base.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
        _SOURCES_HASH = h.hexdigest()
    return _SOURCES_HASH


def source_text(file: str) -> str:
    """The text given to NVRTC: the hash of all sources (so that a changed header changes the
    text, hence every cache key), then ``#line 1`` so that errors name the real file."""
    path = _csrc() / "cuda" / file
    return (f"// fusedopt kernel sources sha256 {sources_hash()}\n"
            f'#line 1 "{path.as_posix()}"\n' + path.read_text())


def nvrtc_options() -> tuple:
    return OPTIONS + tuple("-I" + d for d in include_dirs())


# ---- compilation and memoization -----------------------------------------------------------------

def cache_dir() -> pathlib.Path:
    env = os.environ.get("FUSEDOPT_CUDA_CACHE_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / \
        "fusedopt" / "cuda"


def _arch(cupy) -> int:
    """The device's compute capability, capped at the newest one NVRTC knows."""
    from cupy.cuda import nvrtc  # noqa: PLC0415

    cc = int(cupy.cuda.Device().compute_capability)
    known = [a for a in nvrtc.getSupportedArchs() if a <= cc]
    return known[-1] if known else cc


def compile_instances(file: str, names, arch: int, *, ptx: bool = False):
    """NVRTC-compile name expressions of ``csrc/cuda/<file>`` for compute capability ``arch``.

    Returns (cubin, or PTX when ``ptx``; {name expression: lowered name}). Needs CuPy's NVRTC
    binding and the NVRTC library, not a device. Options: ``nvrtc_options()``, the
    architecture, and ``--device-as-default-execution-space`` as CuPy adds it; nothing else.
    """
    from cupy.cuda import nvrtc  # noqa: PLC0415

    opts = nvrtc_options() + (f"-arch={'compute' if ptx else 'sm'}_{arch}",
                              "--device-as-default-execution-space")
    prog = nvrtc.createProgram(source_text(file), file, (), ())
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as e:
            raise RuntimeError(f"NVRTC failed on {file} ({' '.join(opts)}):\n"
                               f"{nvrtc.getProgramLog(prog)}") from e
        code = nvrtc.getPTX(prog) if ptx else nvrtc.getCUBIN(prog)
        return code, {name: nvrtc.getLoweredName(prog, name) for name in names}
    finally:
        nvrtc.destroyProgram(prog)


def _cached_binary(file: str, name: str, arch: str):
    from cupy.cuda import nvrtc  # noqa: PLC0415

    key = hashlib.sha256("\0".join(
        [source_text(file), *nvrtc_options(), str(arch), repr(nvrtc.getVersion()), name]).encode())
    stem = cache_dir() / key.hexdigest()
    meta, binary = stem.with_suffix(".json"), stem.with_suffix(".bin")
    if meta.is_file() and binary.is_file():
        return str(binary), json.loads(meta.read_text())["lowered"]
    code, mapping = compile_instances(file, [name], arch)
    lowered = mapping[name]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((binary, code if isinstance(code, bytes) else code.encode()),
                         (meta, json.dumps({"name": name, "lowered": lowered}).encode())):
        fd, tmp = tempfile.mkstemp(dir=stem.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # atomic: a concurrent reader sees a whole file or none
    return str(binary), lowered


_FUNCTIONS: dict = {}


def _function(file: str, name: str):
    """The kernel of a name expression on the current device, compiled once per device."""
    cupy = _cupy()
    dev = cupy.cuda.Device().id
    fn = _FUNCTIONS.get((dev, file, name))
    if fn is None:
        path, lowered = _cached_binary(file, name, _arch(cupy))
        module = cupy.RawModule(path=path)
        fn = (module, module.get_function(lowered))
        _FUNCTIONS[(dev, file, name)] = fn
    return fn[1]


_SM_COUNT: dict = {}


def _grid(nchunks: int) -> int:
    if launch_blocks is not None:
        return int(launch_blocks)
    cupy = _cupy()
    dev = cupy.cuda.Device().id
    if dev not in _SM_COUNT:
        _SM_COUNT[dev] = cupy.cuda.Device(dev).attributes["MultiProcessorCount"]
    return max(1, min(nchunks, _SM_COUNT[dev] * BLOCKS_PER_SM))


# ---- the table of tensors ----------------------------------------------------------------------

_TABLES: dict = {}
_TABLES_MAX = 256


def _table(rows, chunk: int):
    """The device table of multi_tensor.cuh for ``rows`` = [(pointers per slot, size)] of
    non-empty tensors. Cached by content (a table is a pure function of its key, so a hit is
    always right); returns (table, nchunks)."""
    cupy = _cupy()
    key = (cupy.cuda.Device().id, chunk, tuple(rows))
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
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
    if len(_TABLES) >= _TABLES_MAX:
        _TABLES.pop(next(iter(_TABLES)))
    _TABLES[key] = hit = (cupy.asarray(host), first)
    return hit


# ---- checks and launches -----------------------------------------------------------------------

def _check(lists):
    """check_lists for CuPy arrays, plus: every array on the device of params[0]. Returns that
    device's id (None for an empty call)."""
    cupy = _cupy()
    check_lists(lists, array_type=cupy.ndarray)
    params = lists[0][1]
    if not params:
        return None
    dev = params[0].device.id
    for name, seq, _ in lists:
        for i, a in enumerate(seq):
            if a.device.id != dev:
                raise TypeError(f"{name}[{i}] is on device {a.device.id} but "
                                f"{lists[0][0]}[0] is on device {dev}")
    return dev


def _decay_mode(weight_decay: float, decoupled: bool) -> int:
    if weight_decay == 0.0:
        return 0  # rules::kNone
    return 2 if decoupled else 1  # rules::kDecoupled, rules::kL2


def _flags(*values) -> str:
    return ", ".join(("true" if v else "false") if isinstance(v, (bool, np.bool_)) else str(v)
                     for v in values)


def _launch(kernel: str, flags: tuple, slots: dict, scalars: tuple, lists) -> None:
    """One launch per dtype of params: ``kernel<ctype, flags..., Master=false, Amp=false>``.

    ``slots`` maps a slot number of multi_tensor.cuh to a list of arrays aligned with params.
    ``scalars`` are float64 values, cast once to the dtype of each group's math.
    """
    dev = _check(lists)
    if dev is None:
        return
    cupy = _cupy()
    params = slots[0]
    with cupy.cuda.Device(dev):
        for dtype, ctype in _CTYPES.items():
            rows = []
            for i, p in enumerate(params):
                if p.dtype == dtype and p.size:
                    ptrs = [0] * SLOTS
                    for s, seq in slots.items():
                        ptrs[s] = seq[i].data.ptr
                    rows.append((tuple(ptrs), p.size))
            if not rows:
                continue
            table, nchunks = _table(rows, CHUNK)
            name = f"fusedopt::cuda::{kernel}<{ctype}, {_flags(*flags, False, False)}>"
            fn = _function("optim.cu", name)
            args = (table, np.int64(len(rows)), np.int64(nchunks), np.int64(CHUNK),
                    table, table)  # grad_scale, found_inf: not read without Amp
            fn((_grid(nchunks),), (THREADS,),
               args + tuple(dtype.type(v) if not isinstance(v, bool) else np.int64(v)
                            for v in scalars))


# ---- the functions of _core -------------------------------------------------------------------

def sgd(params, grads, momentum_buffers, lr, momentum, one_minus_dampening, weight_decay,
        first_step, nesterov, maximize):
    mom = momentum != 0.0
    lists = [("params", params, True), ("grads", grads, False)]
    slots = {0: params, 1: grads}
    if mom:
        lists.append(("momentum_buffers", momentum_buffers, True))
        slots[2] = momentum_buffers
    _launch("sgd_kernel",
            (bool(maximize), _decay_mode(weight_decay, False), mom, bool(nesterov)), slots,
            (lr, momentum, one_minus_dampening, weight_decay, bool(first_step)), lists)


def adagrad(params, grads, state_sums, clr, eps, eps_root, weight_decay, maximize):
    lists = [("params", params, True), ("grads", grads, False), ("state_sums", state_sums, True)]
    _launch("adagrad_kernel", (bool(maximize), _decay_mode(weight_decay, False)),
            {0: params, 1: grads, 2: state_sums}, (clr, eps, eps_root, weight_decay), lists)


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha,
            one_minus_alpha, eps, eps_root, weight_decay, momentum, centered, maximize):
    mom = momentum != 0.0
    lists = [("params", params, True), ("grads", grads, False),
             ("square_avgs", square_avgs, True)]
    slots = {0: params, 1: grads, 2: square_avgs}
    if centered:
        lists.append(("grad_avgs", grad_avgs, True))
        slots[3] = grad_avgs
    if mom:
        lists.append(("momentum_buffers", momentum_buffers, True))
        slots[len(slots)] = momentum_buffers
    _launch("rmsprop_kernel",
            (bool(maximize), _decay_mode(weight_decay, False), bool(centered), mom), slots,
            (lr, alpha, one_minus_alpha, eps, eps_root, weight_decay, momentum), lists)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr, beta1, one_minus_beta1,
         beta2, one_minus_beta2, bias_correction1, bias_correction2, eps, eps_root,
         weight_decay, decay, decoupled, amsgrad, maximize):
    lists = [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True),
             ("exp_avg_sqs", exp_avg_sqs, True)]
    slots = {0: params, 1: grads, 2: exp_avgs, 3: exp_avg_sqs}
    if amsgrad:
        lists.append(("max_exp_avg_sqs", max_exp_avg_sqs, True))
        slots[4] = max_exp_avg_sqs
    _launch("adam_kernel",
            (bool(maximize), _decay_mode(weight_decay, bool(decoupled)), bool(amsgrad)), slots,
            (lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1,
             bias_correction2, eps, eps_root, weight_decay, decay), lists)


def adamax(params, grads, exp_avgs, exp_infs, clr, beta1, one_minus_beta1, beta2, eps,
           weight_decay, maximize):
    lists = [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True),
             ("exp_infs", exp_infs, True)]
    _launch("adamax_kernel", (bool(maximize), _decay_mode(weight_decay, False)),
            {0: params, 1: grads, 2: exp_avgs, 3: exp_infs},
            (clr, beta1, one_minus_beta1, beta2, eps, weight_decay), lists)


def scale_(arrays, factor):
    dev = _check([("arrays", arrays, True)])
    if dev is None:
        return
    cupy = _cupy()
    with cupy.cuda.Device(dev):
        for dtype, ctype in _CTYPES.items():
            rows = [((a.data.ptr,) + (0,) * (SLOTS - 1), a.size) for a in arrays
                    if a.dtype == dtype and a.size]
            if not rows:
                continue
            table, nchunks = _table(rows, CHUNK)
            fn = _function("optim.cu", f"fusedopt::cuda::scale_kernel<{ctype}>")
            fn((_grid(nchunks),), (THREADS,),
               (table, np.int64(len(rows)), np.int64(nchunks), np.int64(CHUNK), table, table,
                dtype.type(float(factor))))


def sum_squares(arrays) -> float:
    """Sum of squares of every element, float64, with the bits of ``_core.sum_squares``."""
    dev = _check([("arrays", arrays, False)])
    if dev is None:
        return 0.0
    cupy = _cupy()
    chunk = int(_core.reduce_block)
    with cupy.cuda.Device(dev):
        groups = []
        for dtype, ctype in _CTYPES.items():
            rows = [((a.data.ptr,) + (0,) * (SLOTS - 1), a.size) for a in arrays
                    if a.dtype == dtype and a.size]
            groups.append((ctype, _table(rows, chunk) if rows else (None, 0), len(rows)))
        counts = [g[1][1] for g in groups]
        partial = cupy.empty(max(1, sum(counts)), np.float64)
        out = cupy.empty(1, np.float64)
        at = 0
        for ctype, (table, nchunks), nt in groups:
            if nchunks:
                fn = _function("reduce.cu", f"fusedopt::cuda::sum_squares_partial<{ctype}>")
                blocks = _grid(-(-nchunks * 8 // THREADS))
                fn((blocks,), (THREADS,),
                   (table, np.int64(nt), np.int64(nchunks), np.int64(chunk), partial[at:]))
            at += nchunks
        fin = _function("reduce.cu", "fusedopt::cuda::sum_squares_finish")
        fin((1,), (1,), (partial, np.int64(counts[0]), np.int64(counts[1]), out))
        return float(out.item())


# ---- every instance, for the build test -----------------------------------------------------------

def name_expressions() -> dict:
    """Every kernel instance this module can request, by file: {file: [name expression]}."""
    import itertools  # noqa: PLC0415

    def names(kernel, *choices):
        out = []
        for ctype in _CTYPES.values():
            for flags in itertools.product(*choices):
                out.append(f"fusedopt::cuda::{kernel}<{ctype}, {_flags(*flags, False, False)}>")
        return out

    tf, wd = (False, True), (0, 1, 2)
    optim = (names("sgd_kernel", tf, wd, tf, tf) + names("adagrad_kernel", tf, wd)
             + names("rmsprop_kernel", tf, wd, tf, tf) + names("adam_kernel", tf, wd, tf)
             + names("adamax_kernel", tf, wd)
             + [f"fusedopt::cuda::scale_kernel<{c}>" for c in _CTYPES.values()])
    reduce = ([f"fusedopt::cuda::sum_squares_partial<{c}>" for c in _CTYPES.values()]
              + ["fusedopt::cuda::sum_squares_finish"])
    return {"optim.cu": optim, "reduce.cu": reduce}
