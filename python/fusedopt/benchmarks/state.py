"""Section ``state`` of ``python -m fusedopt bench`` (named only: ``--rules state``): Adam with
compact state (issue 10) -- float32, bfloat16 and 8-bit blockwise state with float32 params,
and bfloat16 params and grads with 8-bit state (no master weights) -- each against the
bandwidth probe of its own read/write pattern, and bitsandbytes' CPU ``Adam8bit`` where it
imports.

Layer: tools (calls the kernels through ``ops`` and the probe ``_core.stream``; ml_dtypes,
torch and bitsandbytes are imported only when this section runs).

The probe of a pattern that moves R bytes read and W bytes written per element runs
``_core.stream`` over float32 arrays with the same ratio R : W (k arrays read, j of them
written, k : j = R : W) and the same total bytes, so "of probe" compares each kernel with a
plain stream of its own bytes. Bytes per element count the absmax arrays (8 bytes per 256
elements per 8-bit state, read and written).
"""
from __future__ import annotations

import itertools
from typing import Any, cast

import numpy as np

from .. import _core, ops, quant
from .registry import Context, make_grads
from .table import format_table, gbs, ratio, us
from .timing import Timer

__all__ = ["section", "CONFIGS", "state_bytes"]

#: (name, param and grad dtype, state kind) of each timed Adam step
CONFIGS = (
    ("float32 state", "float32", "float32"),
    ("bfloat16 state", "float32", "bfloat16"),
    ("8-bit state", "float32", "uint8"),
    ("bf16 params+grads, 8-bit state", "bfloat16", "uint8"),
)
_ITEM = {"float32": 4, "bfloat16": 2, "uint8": 1}


def state_bytes(param: str, state: str) -> tuple:
    """(bytes read, bytes written) per element of one Adam step (two states, no master)."""
    extra = 2 * 4 / quant.BLOCK if state == "uint8" else 0.0  # absmax of two states
    p, s = _ITEM[param], _ITEM[state]
    return 2 * p + 2 * s + extra, p + 2 * s + extra


def _probe(read: float, written: float, n: int):
    """A probe moving ``read`` and ``written`` bytes per element over n elements: float32
    streams, k read and j written with k : j as read : written."""
    for k, j in ((4, 3), (3, 2), (5, 3), (2, 1), (5, 4), (4, 1)):
        if abs(read / written - k / j) < 0.02:
            break
    else:
        k, j = 4, 3
    m = max(1, int(round(read * n / (4 * k))))
    lists = [[np.full(m, 0, np.float32)] for _ in range(k)] + [None] * (5 - k)
    return lambda: _core.stream(*lists, k, j)


def _fused(param: str, state: str, g32):
    if param == "bfloat16" or state == "bfloat16":
        import ml_dtypes  # noqa: PLC0415 -- optional

        bf16 = np.dtype(ml_dtypes.bfloat16)
    pdt = np.float32 if param == "float32" else bf16
    params = [np.ones(g32.size, pdt)]
    grads = [g32.astype(pdt)]
    m: list[Any]
    v: list[Any]
    if state == "uint8":
        m = [quant.quantize(np.full(g32.size, 0.01, np.float32), True)]
        v = [quant.quantize(np.full(g32.size, 0.01, np.float32), False)]
    else:
        sdt = np.float32 if state == "float32" else bf16
        m, v = [np.full(g32.size, 0.01, sdt)], [np.full(g32.size, 0.01, sdt)]
    calls = itertools.cycle([True, False])  # the grad's sign alternates, as in registry

    def step():
        ops.adam_(params, grads, m, v, step=10, lr=1e-3, maximize=next(calls))

    return step


def _bitsandbytes(g32):
    """bitsandbytes' CPU Adam8bit over the same float32 param and grad, or None."""
    try:
        import bitsandbytes as bnb  # noqa: PLC0415 -- optional
        import torch  # noqa: PLC0415 -- optional
    except Exception:  # ImportError, or a broken install raising at import
        return None
    p = torch.nn.Parameter(torch.ones(g32.size))
    p.grad = torch.from_numpy(g32)
    opt = bnb.optim.Adam8bit([p], lr=1e-3, min_8bit_size=4096)
    opt.step()
    return opt.step


def section(ctx: Context):
    sizes = ctx.sizes if ctx.sizes_given else ([10**6] if ctx.quick else [10**6, 10**7])
    headers = ["n", "Adam", "bytes/elem", "us", "GB/s", "probe GB/s", "of probe",
               "x float32 state"]
    rows = []
    have_bnb = True
    for n in sizes:
        g32 = make_grads([n])[0]
        fns: dict[str, Any] = {}
        nbytes: dict[str, float] = {}
        for name, param, state in CONFIGS:
            r, w = state_bytes(param, state)
            fns[name] = _fused(param, state, g32)
            fns["probe " + name] = _probe(r, w, n)
            nbytes[name] = (r + w) * n
        t = cast(Timer, ctx.timer)(fns)
        # bitsandbytes runs torch's ops, whose OpenMP threads spin after each one and take the
        # 2 cores from fusedopt's pool workers: interleaved with fusedopt's columns it slowed
        # them (float32 state at 1e6: 1.21 ms against 0.68 alone). It is timed on its own,
        # after them.
        bnb_step = _bitsandbytes(g32)
        have_bnb = bnb_step is not None
        if have_bnb:
            t["bitsandbytes Adam8bit"] = cast(Timer, ctx.timer)({"bnb": bnb_step})["bnb"]
            nbytes["bitsandbytes Adam8bit"] = nbytes["8-bit state"]
        for name in nbytes:
            probe = t.get("probe " + name, t["probe 8-bit state"])
            rows.append([n, name, f"{nbytes[name] / n:.2f}", us(t[name]),
                         gbs(nbytes[name], t[name]), gbs(nbytes[name], probe),
                         f"{probe / t[name]:.0%}", ratio(t["float32 state"], t[name])])
        del fns
    title = ("state: Adam (lr=1e-3) with float32, bfloat16 and 8-bit blockwise state "
             "(fusedopt.quant); probe = _core.stream moving the same bytes per element; "
             "bitsandbytes (optional): " + ("bnb.optim.Adam8bit on torch CPU tensors, timed after "
                                           "fusedopt's columns" if have_bnb
                                           else "not importable, left out"))
    return [f"{title}\n{format_table(headers, rows)}"]
