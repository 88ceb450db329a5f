"""Section ``overhead`` of ``python -m fusedopt bench``: the fixed cost of ``Adam.step`` on
tiny tensors (validation and dispatch), through ``fusedopt.optim`` (NumPy) and, where torch is
installed, through ``fusedopt.torch`` against ``torch.optim.Adam(fused=True)``.

Layer: tools (torch imported only inside ``bench_torch_overhead``).

The ``fusedopt.torch`` table times ``opt.step()`` on 1 and 200 tensors of 4 elements with the
grads kept between steps (``zero_grad(set_to_none=False)``) and with fresh grad tensors at each
step (torch's default: ``zero_grad()`` sets them to None and backward makes new ones); the
fresh-grads time is the step's alone (the time of assigning the grads, measured in the same
run, is subtracted). The issue's target: 30 us + 1 us per tensor.
"""
from __future__ import annotations

import numpy as np

from .. import optim
from .registry import RULES_BY_NAME, Context, make_grads, torch_step
from .table import format_table, us
from .timing import Timer

__all__ = ["bench_overhead", "section"]


def section(ctx: Context):
    """One block (title, then table), and one for fusedopt.torch where torch is installed."""
    title, table = bench_overhead(with_torch=ctx.with_torch, timer=ctx.timer)
    blocks = [f"{title}\n{table}"]
    if ctx.with_torch:
        title, table = bench_torch_overhead(timer=ctx.timer)
        blocks.append(f"{title}\n{table}")
    return blocks


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


def _torch_model(torch, cls, count: int, fresh: bool):
    """(step, assign): ``opt.step`` of ``cls`` on ``count`` tensors of 4 elements, and the
    assignment of fresh grads that precedes it when ``fresh`` (else a no-op)."""
    params = [torch.nn.Parameter(torch.ones(4)) for _ in range(count)]
    grads = [[torch.full((4,), 0.5) for _ in params] for _ in range(2)]
    for p, g in zip(params, grads[0]):
        p.grad = g
    opt = cls(params, lr=1e-3, **({"fused": True} if cls is torch.optim.Adam else {}))
    flip = [0]

    def assign():
        if fresh:
            flip[0] ^= 1
            for p, g in zip(params, grads[flip[0]]):
                p.grad = g

    def step():
        assign()
        opt.step()

    return step, assign


def bench_torch_overhead(*, timer: Timer):
    """The fixed cost of ``fusedopt.torch.Adam.step`` (kept and fresh grads) against torch's
    fused Adam, on tiny tensors, interleaved in one timing per tensor count."""
    import torch  # noqa: PLC0415 -- optional

    import fusedopt.torch as ft  # noqa: PLC0415 -- imports torch

    rows = []
    for count in (1, 200):
        fns = {}
        for fresh in (False, True):
            fns[("fusedopt", fresh)], assign = _torch_model(torch, ft.Adam, count, fresh)
            if fresh:
                fns["assign"] = assign
        fns[("torch", False)], _ = _torch_model(torch, torch.optim.Adam, count, False)
        t = timer(fns, max_repeats=50)
        target = 30e-6 + 1e-6 * count
        kept, fresh = t[("fusedopt", False)], t[("fusedopt", True)] - t["assign"]
        rows.append([count, us(kept), us(fresh), us(target),
                     "yes" if max(kept, fresh) <= target else "NO", us(t[("torch", False)])])
    headers = ["tensors", "kept grads us", "fresh grads us", "target us", "met",
               "torch fused us"]
    title = ("overhead fusedopt.torch: Adam.step on tensors of 4 elements (fresh grads: new "
             "grad tensors each step, their assignment's time subtracted); target <= 30 us + "
             "1 us per tensor")
    return title, format_table(headers, rows)
