"""Layer: kernels (the CUDA backend). Argument checks: every CuPy array argument is checked (type,
one device, dtype, shape, contiguity, aliasing) before anything is launched.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_lists
from ..quant import QuantizedState
from . import runtime


_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


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
    """check_lists for CuPy arrays, plus: every array on the device of params[0] (a
    QuantizedState's codes and absmax too). Returns that device's id (None for an empty call)."""
    cp = runtime.cupy()
    check_lists(lists, array_type=cp.ndarray, dtypes=dtypes)
    params = lists[0][1]
    if not params:
        return None
    dev = params[0].device.id
    for name, seq, *_ in lists:
        for i, a in enumerate(seq):
            parts = (("codes", a.codes), ("absmax", a.absmax)) \
                if isinstance(a, QuantizedState) else (("", a),)
            for part, x in parts:
                if x.device.id != dev:
                    raise TypeError(f"{name}[{i}]{'.' + part if part else ''} is on device "
                                    f"{x.device.id} but {lists[0][0]}[0] is on device {dev}")
    return dev


def _check_device_scalar(name, a, dev):
    cp = runtime.cupy()
    if not isinstance(a, cp.ndarray):
        raise TypeError(f"{name} must be a cupy.ndarray (one float32 on the device), got "
                        f"{type(a).__module__}.{type(a).__name__}")
    if a.dtype != np.float32 or a.size != 1:
        raise TypeError(f"{name} must hold one float32, got dtype {a.dtype} and size {a.size}")
    if dev is not None and a.device.id != dev:
        raise TypeError(f"{name} is on device {a.device.id} but params[0] is on device {dev}")


def _one(name, a, *, dtype=None, like=""):
    """One CuPy array argument: type, dtype (float32/float64, or `dtype`), C-contiguity."""
    cp = runtime.cupy()
    if not isinstance(a, cp.ndarray):
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
