"""Section ``RULE`` of ``python -m fusedopt bench``: one table per update rule, the fused
kernel against the bandwidth probe, the NumPy reference and torch.optim, per size.

Layer: tools.
"""
from __future__ import annotations

from .. import reference
from .registry import RULES_BY_NAME, Context, Rule, fused_step, make_arrays, probe_step, torch_step
from .table import format_table, gbs, ratio, us
from .timing import Timer

__all__ = ["bench_rule", "section"]


def section(ctx: Context, name: str):
    """The table of the rule ``name``, as a one-block list (title, then table)."""
    title, table = bench_rule(RULES_BY_NAME[name], ctx.sizes, with_torch=ctx.with_torch,
                              timer=ctx.timer, grads_by_size={n: ctx.grads(n) for n in ctx.sizes})
    return [f"{title}\n{table}"]


def bench_rule(rule: Rule, sizes, *, with_torch: bool, timer: Timer, grads_by_size: dict):
    """One table for ``rule``; returns ``(title, table_text)``."""
    headers = ["n", "fused us", "fused GB/s", "probe GB/s", "of probe", "reference us",
               "x reference"]
    if with_torch:
        headers += ["torch us", "x torch"]
    rows = []
    for n in sizes:
        arrays = make_arrays(rule, [grads_by_size[n]])
        fns = {"probe": probe_step(rule, [n]), "fused": fused_step(rule, arrays)}
        fns["reference"] = fused_step(rule, arrays, reference)
        if with_torch:
            fns["torch"] = torch_step(rule, arrays)
        t = timer(fns)
        nbytes = rule.nbytes(n)
        row = [n, us(t["fused"]), gbs(nbytes, t["fused"]), gbs(nbytes, t["probe"]),
               f"{t['probe'] / t['fused']:.0%}", us(t["reference"]),
               ratio(t["reference"], t["fused"])]
        if with_torch:
            row += [us(t["torch"]), ratio(t["torch"], t["fused"])]
        rows.append(row)
        del fns, arrays
    title = (f"{rule.name}: {rule.title} -- reads {rule.reads}, writes {rule.writes} float32 "
             f"arrays of n")
    if with_torch:
        title += f"; torch (optional): {rule.torch_label}"
    return title, format_table(headers, rows)
