"""Layer: kernels (the CUDA backend). Launches: the table of a call's tensors, then one launch per
dtype.
"""
from __future__ import annotations

import numpy as np

from .. import _scalars
from . import runtime
from .checks import _CTYPES, _check, _check_device_scalar, _half_dtypes


def scalar_struct(record, math):
    """The kernel argument ``rules::XScalars<M>`` built from a ``fusedopt._scalars`` record: a
    one-element NumPy structured array whose fields are the record's scalar fields, by name and
    in order, each cast once to the math type ``M`` (bools stay bool), laid out as the C++
    compiler lays out the struct (``align=True``). CuPy passes a one-element NumPy array to a
    kernel by value (its bytes: the documented way to pass a struct)."""
    n = _scalars.n_scalars(record)
    key = (type(record), np.dtype(math))
    dt = _STRUCTS.get(key)
    if dt is None:
        dt = np.dtype([(name, np.bool_ if isinstance(v, bool) else math)
                       for name, v in zip(record._fields[:n], record)], align=True)
        _STRUCTS[key] = dt
    return np.array([tuple(record[:n])], dt)


_STRUCTS: dict = {}


def _flags(*values) -> str:
    return ", ".join(("true" if v else "false") if isinstance(v, (bool, np.bool_)) else str(v)
                     for v in values)


def _launch(kernel: str, record, lists, master_params=None, grad_scale=None,
            found_inf=None) -> None:
    """Check everything, then one launch per dtype of params of
    ``kernel<ctype, flags..., Master, Amp>(table..., scalars)``.

    ``record`` is the rule's ``fusedopt._scalars`` record: its flag fields give the template
    flags in order, its scalar fields the kernel argument (``scalar_struct``). ``lists`` =
    [(name, arrays, written, slot)], slots of fusedopt/slots.h: params (0), grads (1), the
    rule's states (2, 3, 4). float16/bfloat16 params ("mixed precision")
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
    cp = runtime.cupy()
    with cp.cuda.Device(dev):
        for dtype, ctype in (half if mixed else _CTYPES).items():
            rows = []
            for i, p in enumerate(params):
                if p.dtype == dtype and p.size:
                    ptrs = [0] * runtime.SLOTS
                    for s, seq in slots.items():
                        ptrs[s] = seq[i].data.ptr
                    rows.append((tuple(ptrs), p.size))
            if not rows:
                continue
            table, nchunks = runtime.table(rows, runtime.CHUNK)
            name = (f"fusedopt::cuda::{kernel}<{ctype}, "
                    f"{_flags(*_scalars.flags(record), master_params is not None, amp)}>")
            fn = runtime.function("optim.cu", name)
            math = np.float32 if mixed else dtype.type
            args = (table, np.int64(len(rows)), np.int64(nchunks), np.int64(runtime.CHUNK),
                    grad_scale if amp else table, found_inf if amp else table)  # unread if not amp
            fn((runtime.grid(nchunks, fn),), (runtime.THREADS,),
               args + (scalar_struct(record, math),))


def _param_rows(arrays, dtype):
    """Table rows of the non-empty arrays of `dtype`, each in the param slot only."""
    return [((a.data.ptr,) + (0,) * (runtime.SLOTS - 1), a.size) for a in arrays
            if a.dtype == dtype and a.size]


def _launch_per_dtype(kernel, arrays, dtypes, dev, extra, chunk=runtime.CHUNK,
                      file="optim.cu"):
    """``kernel<ctype>(table, nt, nchunks, chunk, *extra(table, dtype, at))`` once per dtype of
    `dtypes` present in `arrays`, in that order; `at` counts the chunks of earlier launches.
    Returns the number of chunks of each dtype."""
    counts = []
    with runtime.cupy().cuda.Device(dev):
        for dtype, ctype in dtypes.items():
            rows = _param_rows(arrays, dtype)
            table, nchunks = runtime.table(rows, chunk) if rows else (None, 0)
            if rows:
                fn = runtime.function(file, f"fusedopt::cuda::{kernel}<{ctype}>")
                fn((runtime.grid(nchunks, fn),), (runtime.THREADS,),
                    (table, np.int64(len(rows)), np.int64(nchunks), np.int64(chunk),
                     *extra(table, dtype, sum(counts))))
            counts.append(nchunks)
    return counts
