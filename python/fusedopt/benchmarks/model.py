"""Section ``model`` of ``python -m fusedopt bench``: Adam over a model's many tensors against
one flat array of as many elements.

Layer: tools.
"""
from __future__ import annotations

from .registry import RULES_BY_NAME, Context, fused_step, make_arrays, make_grads, model_sizes, \
    probe_step, torch_step
from .table import format_table, gbs, us
from .timing import Timer

__all__ = ["bench_model", "section"]


def section(ctx: Context):
    """One block (title, then table): 1e7 elements (1e6 with --quick; the largest size with
    --sizes)."""
    total = max(ctx.sizes) if ctx.sizes_given else (10**6 if ctx.quick else 10**7)
    title, table = bench_model(max(total, 200), with_torch=ctx.with_torch, timer=ctx.timer)
    return [f"{title}\n{table}"]


def bench_model(total: int, *, with_torch: bool, timer: Timer):
    """Adam over a 200-tensor model vs the same number of elements in one flat array."""
    rule = RULES_BY_NAME["adam"]
    sizes = model_sizes(total)
    split = make_arrays(rule, make_grads(sizes, seed=1))
    flat = make_arrays(rule, make_grads([total], seed=1))
    fns = {"probe": probe_step(rule, [total]), "flat": fused_step(rule, flat),
           "split": fused_step(rule, split)}
    if with_torch:
        fns["torch split"] = torch_step(rule, split)
    t = timer(fns)
    nbytes = rule.nbytes(total)
    labels = {"split": f"{len(sizes)} tensors", "flat": "1 flat array", "probe": "probe (flat)",
              "torch split": f"{rule.torch_label}, {len(sizes)} tensors"}
    rows = [[labels[k], us(t[k]), gbs(nbytes, t[k]), f"{t[k] / t['flat']:.2f}"]
            for k in ("split", "flat", "probe", "torch split") if k in t]
    title = (f"model: Adam over {len(sizes)} tensors of {total} elements in total (sizes "
             f"{min(sizes)}..{max(sizes)}) vs one flat array; target: time / flat <= 1.10")
    return title, format_table(["layout", "us", "GB/s", "time / flat"], rows)
