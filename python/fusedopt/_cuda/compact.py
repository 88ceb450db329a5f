"""Layer: kernels (the CUDA backend). Compact state (issue 10): ``compact_step``, the twin of
``_core.compact_step`` for CuPy arrays -- bfloat16 and 8-bit blockwise state
(``fusedopt.quant.QuantizedState`` whose codes and absmax are CuPy arrays), stochastic rounding
of bfloat16 params -- with csrc/cuda/compact.cu, one launch per param dtype present.
"""
from __future__ import annotations

import numpy as np

from .. import _checks, _scalars, quant
from . import runtime
from .checks import _check, _check_device_scalar, _half_dtypes
from .launch import _flags, scalar_struct

#: fields per tensor of the table of compact.cu (CompactField) and the bits of its `mode`
STRIDE = 16
MODE_MASTER, MODE_SR, MODE_AMP = 1, 2, 4
_KIND = {"plain": 0, "bfloat16": 1, "uint8": 2}

#: the kernel of each scalar record
KERNELS = {"SgdScalars": "sgd_compact", "AdagradScalars": "adagrad_compact",
           "RmspropScalars": "rmsprop_compact", "AdamScalars": "adam_compact",
           "AdamaxScalars": "adamax_compact"}


def param_ctypes() -> dict:
    """{dtype: C++ type} of the params compact state takes (float32 math): float32, float16 and,
    with ml_dtypes, bfloat16."""
    return {np.dtype(np.float32): "float", **_half_dtypes()}


def quant_tables():
    """The format's tables of fusedopt.quant on the current device (maps, thresholds, encoding
    tables; unsigned then signed), copied once per device."""
    cp = runtime.cupy()

    def build():
        maps = np.concatenate([quant.dynamic_map(False), quant.dynamic_map(True)])
        thr = np.concatenate([quant.thresholds(False), quant.thresholds(True)])
        enc = np.concatenate([quant.encode_table(False), quant.encode_table(True)]).astype(np.int32)
        return tuple(cp.asarray(a) for a in (maps, thr, enc))

    return runtime.cached(("quant", cp.cuda.Device().id), build)


def _ptr(a) -> int:
    return int(a.data.ptr) if a.size else 0


def compact_step(scalars, params, grads, states, *, master_params=None, grad_scale=None,
                 found_inf=None, step, seed, stochastic_rounding):
    """A rule's step with compact state or stochastic rounding (``_core.compact_step``'s
    arguments): ``states`` three (name, list) pairs or None, the slots of fusedopt/slots.h.
    Everything is checked before anything is launched."""
    cp = runtime.cupy()
    kernel = KERNELS.get(type(scalars).__name__)
    if kernel is None:
        raise TypeError(f"scalars must be a fusedopt._scalars record, got "
                        f"{type(scalars).__name__}")
    states = list(states)
    if len(states) != 3:
        raise ValueError("states must hold three (name, list) pairs or None")
    lists = [("params", params, True, None), ("grads", grads, False, None)]
    lists += [(n, seq, True, _checks.SIGNEDNESS[n]) for n, seq in
              (s for s in states if s is not None)]
    if master_params is not None:
        lists.append(("master_params", master_params, True, _checks.MASTER))
    dev = _check(lists, dtypes=_checks.PARAM_DTYPES)
    ctypes = param_ctypes()
    for i, p in enumerate(params):
        if p.dtype not in ctypes:
            raise TypeError(f"params[{i}]: compact state needs float32 math (float32, float16 "
                            f"or bfloat16 params), got {p.dtype}")
        if stochastic_rounding and p.dtype.name != "bfloat16":
            raise ValueError(f"stochastic_rounding=True needs bfloat16 params; params[{i}] has "
                             f"dtype {p.dtype}")
    amp = grad_scale is not None or found_inf is not None
    if amp and (grad_scale is None or found_inf is None):
        raise ValueError("grad_scale and found_inf go together: give both or neither")
    if amp:
        _check_device_scalar("grad_scale", grad_scale, dev)
        _check_device_scalar("found_inf", found_inf, dev)
    if dev is None:
        return
    mode = (MODE_MASTER if master_params is not None else 0) | \
        (MODE_SR if stochastic_rounding else 0) | (MODE_AMP if amp else 0)
    with cp.cuda.Device(dev):
        maps, thr, enc = quant_tables()
        for dtype, ctype in ctypes.items():
            rows = [_row(i, params, grads, states, master_params, step, seed)
                    for i, p in enumerate(params) if p.dtype == dtype and p.size]
            if not rows:
                continue
            table, nblocks = _table(rows)
            name = f"fusedopt::cuda::{kernel}<{ctype}, {_flags(*_scalars.flags(scalars))}>"
            fn = runtime.function("compact.cu", name)
            fn((runtime.grid(nblocks, fn),), (runtime.THREADS,),
               (scalar_struct(scalars, np.float32), table, np.int64(len(rows)),
                np.int64(nblocks), maps, thr, enc,
                grad_scale if amp else maps, found_inf if amp else maps,  # unread if not amp
                np.int64(mode)))


def _row(i, params, grads, states, master_params, step, seed) -> tuple:
    """Tensor i's fields of the table (compact.cu's CompactField), without its first block."""
    p = params[i]
    ptrs, absmax, kinds = [0, 0, 0], [0, 0, 0], 0
    for k, slot in enumerate(states):
        if slot is None:
            continue
        a = slot[1][i]
        kind = _checks.state_kind(a)
        kinds |= _KIND[kind] << (2 * k)
        if kind == "uint8":
            ptrs[k], absmax[k] = _ptr(a.codes), _ptr(a.absmax)
            kinds |= int(a.signed) << (8 + k)
        else:
            ptrs[k] = _ptr(a)
    master = _ptr(master_params[i]) if master_params is not None else 0
    key = quant.sr_key(int(seed), int(step), i)
    return (_ptr(p), _ptr(grads[i]), master, *ptrs, *absmax, kinds, key, p.size)


def _table(rows):
    """The device table of compact.cu for `rows` (runtime.tensor_table: work units of one
    quantization block); returns (table, number of quantization blocks)."""
    return runtime.tensor_table(("compact", tuple(rows)), rows,
                                [quant.blocks(row[-1]) for row in rows], STRIDE)
