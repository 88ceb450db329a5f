"""The CUDA backend: ``fusedopt._core``'s functions for CuPy arrays.

Every function here has the positional signature of its ``_core`` twin, so ``fusedopt.ops`` and
``fusedopt.optim`` call either one unchanged. Each checks all arrays (CuPy type, one device,
dtype, shape, contiguity, aliasing) before anything is launched, then runs one kernel launch per
dtype present for the whole list of tensors. CUDA's own additions: the update functions take
keyword-only ``master_params``, ``grad_scale`` and ``found_inf`` (mixed precision and AMP, see
``fusedopt.ops``); ``found_inf_`` is AMP's non-finite check; ``lbfgs_direction``, ``lbfgs_dot``,
``lbfgs_axpby`` and ``lbfgs_amax`` mirror ``_core``'s L-BFGS kernels.

Each call costs some Python time per array for the checks (about a microsecond), which a
synchronized step of a model of many small tensors can notice.

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

from . import _checks, _core
from ._checks import check_lists

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "adamax", "sum_squares", "scale_", "found_inf_",
           "lbfgs_direction", "lbfgs_dot", "lbfgs_axpby", "lbfgs_amax", "OPTIONS",
           "cache_dir", "compile_instances", "name_expressions", "source_text"]

# Exact IEEE arithmetic as on the CPU: no FMA contraction, no flush to zero, correctly rounded
# division and square root (NVRTC's defaults, spelled out), no fast math.
OPTIONS = ("--std=c++17", "--fmad=false", "-ftz=false", "-prec-div=true", "-prec-sqrt=true")

THREADS = 256  # kThreads in csrc/cuda/multi_tensor.cuh
CHUNK = 8192  # elements per chunk of the elementwise kernels (a multiple of every vector width)
BLOCKS_PER_SM = 8  # at most, per SM (fewer where registers or shared memory run out)
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


def _target(cupy) -> tuple:
    """(arch, ptx) for the current device: a cubin for its compute capability when NVRTC knows
    it, else PTX for the newest architecture NVRTC knows below it (the driver JIT-compiles it),
    as CuPy does."""
    from cupy.cuda import nvrtc  # noqa: PLC0415

    cc = int(cupy.cuda.Device().compute_capability)
    known = [a for a in nvrtc.getSupportedArchs() if a <= cc]
    if cc in known:
        return cc, False
    if not known:
        raise RuntimeError(f"NVRTC {nvrtc.getVersion()} supports no architecture at or below "
                           f"this device's compute capability {cc}")
    return known[-1], True


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


def _cached_binary(file: str, name: str, arch: int, ptx: bool):
    from cupy.cuda import nvrtc  # noqa: PLC0415

    key = hashlib.sha256("\0".join(
        [source_text(file), *nvrtc_options(), str(arch), str(ptx), repr(nvrtc.getVersion()),
         name]).encode())
    stem = cache_dir() / key.hexdigest()
    meta, binary = stem.with_suffix(".json"), stem.with_suffix(".ptx" if ptx else ".cubin")
    if meta.is_file() and binary.is_file():
        return str(binary), json.loads(meta.read_text())["lowered"]
    code, mapping = compile_instances(file, [name], arch, ptx=ptx)
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
        path, lowered = _cached_binary(file, name, *_target(cupy))
        module = cupy.RawModule(path=path)
        fn = (module, module.get_function(lowered))
        _FUNCTIONS[(dev, file, name)] = fn
    return fn[1]


def _grid(work: int, fn=None) -> int:
    """Blocks for a launch of `fn` over `work` units (chunks, or blocks' worth of elements): at
    most the blocks the device holds at once (from the kernel's registers and shared memory), so
    that the blocks looping over the units run as one wave, not one and a bit."""
    if launch_blocks is not None:
        return int(launch_blocks)
    cupy = _cupy()
    dev = cupy.cuda.Device().id
    key = (dev, id(fn))
    if key not in _RESIDENT:
        attrs = cupy.cuda.Device(dev).attributes
        per_sm = BLOCKS_PER_SM
        regs = getattr(fn, "num_regs", 0)
        if regs:  # registers are given to warps in units of 256
            per_block = -(-regs * 32 // 256) * 256 * (THREADS // 32)
            per_sm = min(per_sm, attrs.get("MaxRegistersPerMultiprocessor", 65536) // per_block)
        smem = getattr(fn, "shared_size_bytes", 0)
        if smem:  # plus 1 KiB the runtime reserves per block
            per_sm = min(per_sm,
                         attrs.get("MaxSharedMemoryPerMultiprocessor", 0) // (smem + 1024))
        _RESIDENT[key] = (fn, attrs["MultiProcessorCount"] * max(1, per_sm))
    return max(1, min(work, _RESIDENT[key][1]))


# (device, id(kernel)) -> (the kernel, kept so that its id is not reused; blocks resident at once)
_RESIDENT: dict = {}


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

_HALF_CTYPES = {"float16": "fusedopt::cuda::half_t", "bfloat16": "fusedopt::cuda::bf16_t"}


def _half_dtypes() -> dict:
    """{dtype: C++ type} of the 16-bit float params: float16, and ml_dtypes' bfloat16 when that
    package is installed (CuPy takes its dtype)."""
    out = {np.dtype(np.float16): _HALF_CTYPES["float16"]}
    try:
        import ml_dtypes  # noqa: PLC0415 -- optional

        out[np.dtype(ml_dtypes.bfloat16)] = _HALF_CTYPES["bfloat16"]
    except ImportError:
        pass
    return out


def _check(lists, dtypes=tuple(_CTYPES)):
    """check_lists for CuPy arrays, plus: every array on the device of params[0]. Returns that
    device's id (None for an empty call)."""
    cupy = _cupy()
    check_lists(lists, array_type=cupy.ndarray, dtypes=dtypes)
    params = lists[0][1]
    if not params:
        return None
    dev = params[0].device.id
    for name, seq, *_ in lists:
        for i, a in enumerate(seq):
            if a.device.id != dev:
                raise TypeError(f"{name}[{i}] is on device {a.device.id} but "
                                f"{lists[0][0]}[0] is on device {dev}")
    return dev


def _check_device_scalar(name, a, dev):
    cupy = _cupy()
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"{name} must be a cupy.ndarray (one float32 on the device), got "
                        f"{type(a).__module__}.{type(a).__name__}")
    if a.dtype != np.float32 or a.size != 1:
        raise TypeError(f"{name} must hold one float32, got dtype {a.dtype} and size {a.size}")
    if dev is not None and a.device.id != dev:
        raise TypeError(f"{name} is on device {a.device.id} but params[0] is on device {dev}")


def _decay_mode(weight_decay: float, decoupled: bool) -> int:
    if weight_decay == 0.0:
        return 0  # rules::kNone
    return 2 if decoupled else 1  # rules::kDecoupled, rules::kL2


def _flags(*values) -> str:
    return ", ".join(("true" if v else "false") if isinstance(v, (bool, np.bool_)) else str(v)
                     for v in values)


def _launch(kernel: str, flags: tuple, lists, scalars: tuple, master_params=None,
            grad_scale=None, found_inf=None) -> None:
    """Check everything, then one launch per dtype of params of
    ``kernel<ctype, flags..., Master, Amp>``.

    ``lists`` = [(name, arrays, written, slot)]: params (slot 0), grads (1), the rule's states
    (2, 3, 4) in the order of multi_tensor.cuh. ``scalars`` are float64 values, cast once to the
    dtype of each group's math (bools go as int64). float16/bfloat16 params ("mixed precision")
    take float32 states, optional float32 ``master_params``, and compute in float32.
    ``grad_scale``/``found_inf`` (one float32 each, on the device) turn on the AMP instance.
    """
    params = lists[0][1]
    half = _half_dtypes()
    first = params[0] if isinstance(params, (list, tuple)) and params else None
    mixed = getattr(first, "dtype", None) in half
    checks = [(name, seq, written, np.float32 if mixed and slot >= 2 else None)
              for name, seq, written, slot in lists]
    slots = {slot: seq for _, seq, _, slot in lists}
    if master_params is not None:
        if not mixed:
            raise TypeError("master_params are float32 master weights of float16/bfloat16 "
                            f"params; params[0] has dtype {getattr(first, 'dtype', None)}")
        checks.append(("master_params", master_params, True, np.float32))
        slots[5] = master_params
    amp = grad_scale is not None or found_inf is not None
    if amp and (grad_scale is None or found_inf is None):
        raise ValueError("grad_scale and found_inf go together: give both or neither")
    dev = _check(checks, dtypes=tuple(half) if mixed else tuple(_CTYPES))
    if amp:
        _check_device_scalar("grad_scale", grad_scale, dev)
        _check_device_scalar("found_inf", found_inf, dev)
    if dev is None:
        return
    cupy = _cupy()
    with cupy.cuda.Device(dev):
        for dtype, ctype in (half if mixed else _CTYPES).items():
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
            name = (f"fusedopt::cuda::{kernel}<{ctype}, "
                    f"{_flags(*flags, master_params is not None, amp)}>")
            fn = _function("optim.cu", name)
            math = np.float32 if mixed else dtype.type
            args = (table, np.int64(len(rows)), np.int64(nchunks), np.int64(CHUNK),
                    grad_scale if amp else table, found_inf if amp else table)  # unread if not amp
            fn((_grid(nchunks, fn),), (THREADS,),
               args + tuple(np.int64(v) if isinstance(v, bool) else math(v) for v in scalars))


# ---- the functions of _core -------------------------------------------------------------------
# Each takes _core's positional arguments; the keyword-only ones are CUDA's own:
#   master_params  float32 master weights of float16/bfloat16 params (updated; params receive
#                  the rounded result)
#   grad_scale, found_inf  one float32 each on the device: the step is skipped when
#                  found_inf != 0, and the grads are divided by grad_scale (AMP's loss scaling)

def sgd(params, grads, momentum_buffers, lr, momentum, one_minus_dampening, weight_decay,
        first_step, nesterov, maximize, *, master_params=None, grad_scale=None, found_inf=None):
    mom = momentum != 0.0
    lists = [("params", params, True, 0), ("grads", grads, False, 1)]
    if mom:
        lists.append(("momentum_buffers", momentum_buffers, True, 2))
    _launch("sgd_kernel",
            (bool(maximize), _decay_mode(weight_decay, False), mom, bool(nesterov)), lists,
            (lr, momentum, one_minus_dampening, weight_decay, bool(first_step)),
            master_params, grad_scale, found_inf)


def adagrad(params, grads, state_sums, clr, eps, eps_root, weight_decay, maximize, *,
            master_params=None, grad_scale=None, found_inf=None):
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("state_sums", state_sums, True, 2)]
    _launch("adagrad_kernel", (bool(maximize), _decay_mode(weight_decay, False)), lists,
            (clr, eps, eps_root, weight_decay), master_params, grad_scale, found_inf)


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha,
            one_minus_alpha, eps, eps_root, weight_decay, momentum, centered, maximize, *,
            master_params=None, grad_scale=None, found_inf=None):
    mom = momentum != 0.0
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("square_avgs", square_avgs, True, 2)]
    if centered:
        lists.append(("grad_avgs", grad_avgs, True, 3))
    if mom:
        lists.append(("momentum_buffers", momentum_buffers, True, len(lists)))
    _launch("rmsprop_kernel",
            (bool(maximize), _decay_mode(weight_decay, False), bool(centered), mom), lists,
            (lr, alpha, one_minus_alpha, eps, eps_root, weight_decay, momentum),
            master_params, grad_scale, found_inf)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr, beta1, one_minus_beta1,
         beta2, one_minus_beta2, bias_correction1, bias_correction2, eps, eps_root,
         weight_decay, decay, decoupled, amsgrad, maximize, *, master_params=None,
         grad_scale=None, found_inf=None):
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("exp_avgs", exp_avgs, True, 2), ("exp_avg_sqs", exp_avg_sqs, True, 3)]
    if amsgrad:
        lists.append(("max_exp_avg_sqs", max_exp_avg_sqs, True, 4))
    _launch("adam_kernel",
            (bool(maximize), _decay_mode(weight_decay, bool(decoupled)), bool(amsgrad)), lists,
            (lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1,
             bias_correction2, eps, eps_root, weight_decay, decay),
            master_params, grad_scale, found_inf)


def adamax(params, grads, exp_avgs, exp_infs, clr, beta1, one_minus_beta1, beta2, eps,
           weight_decay, maximize, *, master_params=None, grad_scale=None, found_inf=None):
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("exp_avgs", exp_avgs, True, 2), ("exp_infs", exp_infs, True, 3)]
    _launch("adamax_kernel", (bool(maximize), _decay_mode(weight_decay, False)), lists,
            (clr, beta1, one_minus_beta1, beta2, eps, weight_decay),
            master_params, grad_scale, found_inf)


def _param_rows(arrays, dtype):
    """Table rows of the non-empty arrays of `dtype`, each in the param slot only."""
    return [((a.data.ptr,) + (0,) * (SLOTS - 1), a.size) for a in arrays
            if a.dtype == dtype and a.size]


def _launch_per_dtype(kernel, arrays, dtypes, dev, extra, chunk=CHUNK, file="optim.cu"):
    """``kernel<ctype>(table, nt, nchunks, chunk, *extra(table, dtype, at))`` once per dtype of
    `dtypes` present in `arrays`, in that order; `at` counts the chunks of earlier launches.
    Returns the number of chunks of each dtype."""
    counts = []
    with _cupy().cuda.Device(dev):
        for dtype, ctype in dtypes.items():
            rows = _param_rows(arrays, dtype)
            table, nchunks = _table(rows, chunk) if rows else (None, 0)
            if rows:
                fn = _function(file, f"fusedopt::cuda::{kernel}<{ctype}>")
                fn((_grid(nchunks, fn),), (THREADS,),
                    (table, np.int64(len(rows)), np.int64(nchunks), np.int64(chunk),
                     *extra(table, dtype, sum(counts))))
            counts.append(nchunks)
    return counts


def scale_(arrays, factor):
    dev = _check([("arrays", arrays, True)])
    if dev is not None:  # grad_scale, found_inf: not read by scale_kernel
        _launch_per_dtype("scale_kernel", arrays, _CTYPES, dev,
                          lambda table, dtype, _: (table, table, dtype.type(float(factor))))


def found_inf_(arrays, found_inf):
    """Set ``found_inf`` (one float32 on the device) to 1 if any element of ``arrays`` (float16,
    bfloat16, float32 or float64) is infinite or NaN; leave it as it is otherwise. With the
    optimizers' ``grad_scale``/``found_inf`` this is AMP's check, without a host sync: zero
    ``found_inf``, call this on the scaled grads, then step (the step is skipped on the device).
    One launch per dtype present."""
    dtypes = {**_CTYPES, **_half_dtypes()}
    dev = _check([("arrays", arrays, False)], dtypes=tuple(dtypes))
    _check_device_scalar("found_inf", found_inf, dev)
    if dev is not None:
        _launch_per_dtype("found_inf_kernel", arrays, dtypes, dev, lambda *_: (found_inf,))


def sum_squares(arrays) -> float:
    """Sum of squares of every element, float64, with the bits of ``_core.sum_squares``."""
    dev = _check([("arrays", arrays, False)])
    if dev is None:
        return 0.0
    cupy = _cupy()
    with cupy.cuda.Device(dev):
        nchunks = sum(-(-a.size // int(_core.reduce_block)) for a in arrays)
        partial = cupy.empty(max(1, nchunks), np.float64)
        out = cupy.empty(1, np.float64)
        n32, n64 = _launch_per_dtype("sum_squares_partial", arrays, _CTYPES, dev,
                                     lambda table, dtype, at: (partial[at:],),
                                     chunk=int(_core.reduce_block), file="reduce.cu")
        fin = _function("reduce.cu", "fusedopt::cuda::sum_squares_finish")
        fin((1,), (1,), (partial, np.int64(n32), np.int64(n64), out))
        return float(out.item())


# ---- L-BFGS (the functions of _core's L-BFGS part) ----------------------------------------------

def _one(name, a, *, dtype=None, like=""):
    """One CuPy array argument: type, dtype (float32/float64, or `dtype`), C-contiguity."""
    cupy = _cupy()
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"{name} must be a cupy.ndarray, got {type(a).__module__}."
                        f"{type(a).__name__}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype}; expected {np.dtype(dtype)}"
                        + (f" like {like}" if like else ""))
    if dtype is None and a.dtype not in _CTYPES:
        raise TypeError(f"{name} has dtype {a.dtype}; expected float32 or float64")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _same_device(named):
    dev = named[0][1].device.id
    for name, a in named[1:]:
        if a.device.id != dev:
            raise TypeError(f"{name} is on device {a.device.id} but {named[0][0]} is on device "
                            f"{dev}")
    return dev


def _no_overlap(out_name, out, in_name, a, exact_ok=False):
    if not out.size or not a.size:
        return
    lo, hi = out.data.ptr, out.data.ptr + out.nbytes
    alo, ahi = a.data.ptr, a.data.ptr + a.nbytes
    if exact_ok and (lo, hi) == (alo, ahi):
        return
    if lo < ahi and alo < hi:
        raise ValueError(f"{out_name} shares memory with {in_name}; the output must not alias "
                         "an input")


def _index(name, v, lo, hi, what):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {what}, got {v}")
    return int(v)


def lbfgs_direction(out, grad, s, y, rho, head, count):
    """out = -H grad by the two-loop recursion over the ring buffer (s, y, rho, head, count) of
    fusedopt.lbfgs.History, with the bits of ``_core.lbfgs_direction``: 2 * count + 1 launches,
    the scalars kept on the device, no host synchronization."""
    out = _one("out", out)
    grad = _one("grad", grad, dtype=out.dtype, like="out")
    if grad.shape != out.shape:
        raise ValueError(f"grad: shape {grad.shape} does not match out {out.shape}")
    s = _one("s", s, dtype=out.dtype, like="out")
    y = _one("y", y, dtype=out.dtype, like="out")
    if s.ndim != 2 or s.shape[1] != out.size or s.shape[0] < 1:
        raise ValueError(f"s must have shape (m, {out.size}) with m >= 1 (n = out.size), got "
                         f"{s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"y: shape {y.shape} does not match s {s.shape}")
    m, n = s.shape
    rho = _one("rho", rho, dtype=np.float64)
    if rho.shape != (m,):
        raise ValueError(f"rho must have shape ({m},) like s rows, got {rho.shape}")
    head = _index("head", head, 0, m - 1, f"[0, {m})")
    count = _index("count", count, 0, m, f"[0, {m}]")
    dev = _same_device([("out", out), ("grad", grad), ("s", s), ("y", y), ("rho", rho)])
    for name, a in (("grad", grad), ("s", s), ("y", y), ("rho", rho)):
        _no_overlap("out", out, name, a)
    if n == 0:
        return
    cupy = _cupy()
    ctype = _CTYPES[out.dtype]
    chunk = int(_core.reduce_block)
    nchunks = -(-n // chunk)
    with cupy.cuda.Device(dev):
        if count == 0:
            fn = _function("lbfgs.cu", f"fusedopt::cuda::lbfgs_negate<{ctype}>")
            fn((_grid(-(-n // THREADS), fn),), (THREADS,), (out, grad, np.int64(n)))
            return
        D = cupy.empty(2 * m + 1, np.float64)  # alpha_k, beta_k, gamma
        partial = cupy.empty(3 * nchunks, np.float64)
        counter = cupy.zeros(1, np.uint32)
        ring = lambda k: (head + k) % m  # noqa: E731 -- row of pair k, oldest first
        i64, f64 = np.int64, np.float64
        first = _function("lbfgs.cu", f"fusedopt::cuda::lbfgs_first<{ctype}>")
        dot_pass = _function("lbfgs.cu", f"fusedopt::cuda::lbfgs_pass<{ctype}, true>")
        last_pass = _function("lbfgs.cu", f"fusedopt::cuda::lbfgs_pass<{ctype}, false>")
        grid = (_grid(nchunks, dot_pass),)
        c, gamma = count, 2 * m
        first((_grid(nchunks, first),), (THREADS,),
              (out, grad, s[ring(c - 1)], y[ring(c - 1)], i64(n), i64(chunk), D, rho,
               i64(ring(c - 1)), i64(c - 1), i64(gamma), partial, counter))

        def dot_step(x, w, ia, ib, a_sign, iscale, io, irho):
            dot_pass(grid, (THREADS,), (out, x, w, i64(n), i64(chunk), D, rho, i64(ia), i64(ib),
                                        f64(a_sign), i64(iscale), f64(1.0), i64(io), i64(irho),
                                        partial, counter))

        # First loop, newest to oldest: q -= alpha_k y_k, then alpha_{k-1} = rho (s_{k-1} . q).
        for k in range(c - 1, 0, -1):
            dot_step(y[ring(k)], s[ring(k - 1)], k, -1, -1.0, -1, k - 1, ring(k - 1))
        # r = gamma (q - alpha_0 y_0), beta_0 = rho (y_0 . r).
        dot_step(y[ring(0)], y[ring(0)], 0, -1, -1.0, gamma, m, ring(0))
        # Second loop: r += (alpha_k - beta_k) s_k, beta_{k+1} = rho (y_{k+1} . r); the last pass
        # writes -r.
        for k in range(c - 1):
            dot_step(s[ring(k)], y[ring(k + 1)], k, m + k, 1.0, -1, m + k + 1, ring(k + 1))
        last_pass((_grid(-(-n // THREADS), last_pass),), (THREADS,),
                  (out, s[ring(c - 1)], out, i64(n), i64(chunk), D, rho, i64(c - 1),
                   i64(m + c - 1), f64(1.0), i64(-1), f64(-1.0), i64(0), i64(0), partial,
                   counter))


def lbfgs_dot(a, b) -> float:
    """sum(a * b) in float64 with the bits of ``_core.lbfgs_dot`` (one host sync: the result)."""
    a = _one("a", a)
    b = _one("b", b, dtype=a.dtype, like="a")
    if b.size != a.size:
        raise ValueError(f"b has {b.size} elements but a has {a.size}")
    dev = _same_device([("a", a), ("b", b)])
    n = a.size
    if n == 0:
        return 0.0
    cupy = _cupy()
    chunk = int(_core.reduce_block)
    nchunks = -(-n // chunk)
    with cupy.cuda.Device(dev):
        partial = cupy.empty(nchunks, np.float64)
        counter = cupy.zeros(1, np.uint32)
        result = cupy.empty(1, np.float64)
        fn = _function("lbfgs.cu", f"fusedopt::cuda::lbfgs_dot<{_CTYPES[a.dtype]}>")
        fn((_grid(nchunks, fn),), (THREADS,),
            (a, b, np.int64(n), np.int64(chunk), partial, counter, result))
        return float(result.item())


def lbfgs_axpby(out, a, x, b, y):
    """out = a * x + b * y with a and b cast to the arrays' dtype once (out may be x or y)."""
    out = _one("out", out)
    x = _one("x", x, dtype=out.dtype, like="out")
    y = _one("y", y, dtype=out.dtype, like="out")
    for name, v in (("x", x), ("y", y)):
        if v.size != out.size:
            raise ValueError(f"{name} has {v.size} elements but out has {out.size}")
    a, b = _checks.real("a", a), _checks.real("b", b)
    dev = _same_device([("out", out), ("x", x), ("y", y)])
    _no_overlap("out", out, "x", x, exact_ok=True)
    _no_overlap("out", out, "y", y, exact_ok=True)
    if not out.size:
        return
    cupy = _cupy()
    with cupy.cuda.Device(dev):
        fn = _function("lbfgs.cu", f"fusedopt::cuda::lbfgs_axpby<{_CTYPES[out.dtype]}>")
        fn((_grid(-(-out.size // THREADS), fn),), (THREADS,),
            (out, np.float64(a), x, np.float64(b), y, np.int64(out.size)))


def lbfgs_amax(a) -> float:
    """max |a| as a float, NaN if any element is NaN (0.0 for an empty array)."""
    a = _one("a", a)
    if not a.size:
        return 0.0
    cupy = _cupy()
    with cupy.cuda.Device(a.device.id):
        return float(cupy.max(cupy.abs(a)).item())


# ---- every instance, for the build test -----------------------------------------------------------

def name_expressions(cover: bool = False) -> dict:
    """Every kernel instance this module can request, by file: {file: [name expression]}.

    With ``cover``, a subset in which every value of every template parameter appears, next to
    both the first and the last value of every other one (for quick compile checks).
    """
    import itertools  # noqa: PLC0415

    def combos(domains):
        if not cover:
            return list(itertools.product(*domains))
        out = []
        for base in ([d[0] for d in domains], [d[-1] for d in domains]):
            for i, d in enumerate(domains):
                for v in d:
                    c = tuple(base[:i] + [v] + base[i + 1:])
                    if c not in out:
                        out.append(c)
        return out

    def names(kernel, *choices):
        tf = (False, True)
        exact = combos([tuple(_CTYPES.values()), *choices, (False,), tf])  # no master weights
        half = combos([tuple(_HALF_CTYPES.values()), *choices, tf, tf])
        return [f"fusedopt::cuda::{kernel}<{c[0]}, {_flags(*c[1:])}>" for c in exact + half]

    tf, wd = (False, True), (0, 1, 2)
    optim = (names("sgd_kernel", tf, wd, tf, tf) + names("adagrad_kernel", tf, wd)
             + names("rmsprop_kernel", tf, wd, tf, tf) + names("adam_kernel", tf, wd, tf)
             + names("adamax_kernel", tf, wd)
             + [f"fusedopt::cuda::scale_kernel<{c}>" for c in _CTYPES.values()]
             + [f"fusedopt::cuda::found_inf_kernel<{c}>"
                for c in (*_CTYPES.values(), *_HALF_CTYPES.values())])
    reduce = ([f"fusedopt::cuda::sum_squares_partial<{c}>" for c in _CTYPES.values()]
              + ["fusedopt::cuda::sum_squares_finish"])
    lbfgs = [f"fusedopt::cuda::{k}" for c in _CTYPES.values()
             for k in (f"lbfgs_first<{c}>", f"lbfgs_pass<{c}, true>", f"lbfgs_pass<{c}, false>",
                       f"lbfgs_negate<{c}>", f"lbfgs_dot<{c}>", f"lbfgs_axpby<{c}>")]
    return {"optim.cu": optim, "reduce.cu": reduce, "lbfgs.cu": lbfgs}
