"""Section ``overhead`` of ``python -m fusedopt bench``: the fixed cost of ``Adam.step`` on
tiny tensors (validation and dispatch).

Layer: tools.
"""
from __future__ import annotations

import numpy as np

from .. import optim
from .registry import RULES_BY_NAME, Context, make_grads, torch_step
from .table import format_table, us
from .timing import Timer

__all__ = ["bench_overhead", "section"]


def section(ctx: Context):
    """One block (title, then table)."""
    title, table = bench_overhead(with_torch=ctx.with_torch, timer=ctx.timer)
    return [f"{title}\n{table}"]


def bench_overhead(*, with_torch: bool, timer: Timer):
    """The fixed cost of ``opt.step`` (validation and dispatch) on tiny tensors."""
    rows = []
    for count in (1, 200):
        params = [np.ones(4, np.float32) for _ in range(count)]
        grads = make_grads([4] * count, seed=2)
        opt = optim.Adam(params, lr=1e-3)
        fns = {"fused": lambda opt=opt, g=grads: opt.step(g)}
        if with_torch:
            fns["torch"] = torch_step(RULES_BY_NAME["adam"],
                                      ([p.copy() for p in params], grads, []))
        t = timer(fns, max_repeats=50)
        target = 20e-6 + 0.5e-6 * count
        row = [count, us(t["fused"]), us(target), "yes" if t["fused"] <= target else "NO"]
        if with_torch:
            row.append(us(t["torch"]))
        rows.append(row)
    headers = ["tensors", "Adam.step us", "target us", "met"]
    if with_torch:
        headers.append("torch fused us")
    title = ("overhead: fusedopt.optim.Adam.step on tensors of 4 elements; target "
             "<= 20 us + 0.5 us per tensor")
    return title, format_table(headers, rows)
