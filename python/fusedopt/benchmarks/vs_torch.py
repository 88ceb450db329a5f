"""Section ``torch`` of ``python -m fusedopt bench`` (and ``deepspeed``, named only): fusedopt
against ``torch.optim.Adam(fused=True)`` and DeepSpeed's ``DeepSpeedCPUAdam`` on the same torch
tensors, side by side in one run, interleaved.

Layer: tools (torch, ml_dtypes and deepspeed are imported only here, and only when used).

fusedopt reaches the tensors through NumPy views (``Tensor.numpy()``; bfloat16 through an int16
view reinterpreted as ``ml_dtypes.bfloat16``), zero-copy; ``fusedopt.torch`` (issue 9) will be
the front door once merged. The cases:

* Adam, float32, 1e6 and 1e7 elements in one tensor;
* Adam, float32, a 200-tensor model of 1e7 elements (``registry.model_sizes``);
* Adam, bfloat16 params and grads with float32 master weights and states, 1e7 elements: 30 bytes
  per element (reads p 2, g 2, master 4, exp_avg 4, exp_avg_sq 4; writes all but g). torch has
  no master weights: ``Adam(fused=True)`` steps the bfloat16 params with bfloat16 states (18
  bytes per element, other rounding) -- the column shows what a torch user gets.

DeepSpeed (``pip install deepspeed``; its CPU op compiles at first use, minutes, cached by torch
under ``~/.cache/torch_extensions``) runs only in the ``deepspeed`` section, never by default.
``DeepSpeedCPUAdam`` steps the tensors themselves: in the bfloat16 case bfloat16 params with
float32 states and no master weights (its CPU op has none; 22 bytes per element), the setting
of the issue's DeepSpeed figure.
"""
from __future__ import annotations

import importlib

import numpy as np

from .. import _core, ops
from .registry import STEP, Context, model_sizes
from .table import format_table, gbs, us

__all__ = ["section", "section_deepspeed", "cases", "Case"]

ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


class Case:
    """One benchmark case: tensor sizes, whether the params are bfloat16 with float32 master
    weights, and the bytes one step must move."""

    def __init__(self, name: str, sizes, bf16: bool = False):
        self.name, self.sizes, self.bf16 = name, [int(n) for n in sizes], bf16

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def bytes_per_element(self) -> int:
        return 30 if self.bf16 else 28  # float32 Adam: 4 reads, 3 writes of 4 bytes

    def nbytes(self) -> int:
        return self.bytes_per_element * self.total


def cases(quick: bool = False, sizes=None):
    """The cases of the issue (1e5 for 1e6 and 1e6 for 1e7 with --quick; the smallest and the
    largest of ``sizes`` where given)."""
    if sizes:
        small, big = min(sizes), max(max(sizes), 200)
    else:
        small, big = (10**5, 10**6) if quick else (10**6, 10**7)
    return [Case(f"Adam float32, {small:.0e}", [small]),
            Case(f"Adam float32, {big:.0e}", [big]),
            Case(f"Adam float32, 200 tensors, {big:.0e}", model_sizes(big)),
            Case(f"Adam bf16 params + float32 master, {big:.0e}", [big], bf16=True)]


def _torch():
    return importlib.import_module("torch")


def _numpy_view(t):
    """A zero-copy NumPy view of a CPU tensor (bfloat16 as ml_dtypes.bfloat16)."""
    torch = _torch()
    if t.dtype == torch.bfloat16:
        ml_dtypes = importlib.import_module("ml_dtypes")
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def make_tensors(case: Case, seed: int = 0):
    """(params, grads) as torch tensors: float32, or bfloat16 for the bf16 case."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if case.bf16 else torch.float32
    params = [torch.randn(n, generator=g).to(dtype) for n in case.sizes]
    grads = [torch.randn(n, generator=g).to(dtype) for n in case.sizes]
    return params, grads


def fusedopt_step(case: Case, params, grads):
    """One fusedopt Adam step over NumPy views of the tensors (float32 states; float32 master
    weights for the bf16 case), alternating maximize as the other columns do."""
    p = [_numpy_view(t) for t in params]
    g = [_numpy_view(t) for t in grads]
    m = [np.full(t.numel(), 0.01, np.float32) for t in params]
    v = [np.full(t.numel(), 0.01, np.float32) for t in params]
    master = [x.astype(np.float32) for x in p] if case.bf16 else None
    flip = [False]

    def step():
        flip[0] = not flip[0]
        ops.adam_(p, g, m, v, step=STEP, **ADAM, maximize=flip[0], master_params=master)

    return step


def torch_step(case: Case, params, grads):
    """One ``torch.optim.Adam(fused=True)`` step on the tensors themselves (bfloat16 states for
    bfloat16 params: torch's own behaviour)."""
    torch = _torch()
    tparams = [torch.nn.Parameter(t) for t in params]
    for t, g in zip(tparams, grads):
        t.grad = g
    opt = torch.optim.Adam(tparams, fused=True, **ADAM)
    group = opt.param_groups[0]

    def step():
        group["maximize"] = not group["maximize"]
        opt.step()

    return step


def deepspeed_available() -> bool:
    try:
        importlib.import_module("deepspeed.ops.adam")
    except Exception:  # noqa: BLE001 -- absent, or broken in this environment: skipped alike
        return False
    return True


def deepspeed_step(case: Case, params, grads):
    """One ``DeepSpeedCPUAdam`` step on the tensors themselves (float32 states; bfloat16 params
    are read and written in place, without master weights: DeepSpeed's CPU op has no master
    slot). Compiles DeepSpeed's op on first use."""
    torch = _torch()
    from deepspeed.ops.adam import DeepSpeedCPUAdam  # noqa: PLC0415 -- optional

    tparams = [torch.nn.Parameter(t) for t in params]
    for t, g in zip(tparams, grads):
        t.grad = g
    opt = DeepSpeedCPUAdam(tparams, adamw_mode=False, **ADAM)
    return opt.step


def probe_step(case: Case):
    """The bandwidth probe for the case's byte count: 4 float32 reads and 3 writes per element
    over ``nbytes / 28`` elements (28 bytes each), so that it moves what the rule must."""
    n = max(1, round(case.nbytes() / 28))
    lists = [[np.full(n, 0, np.float32)] for _ in range(4)] + [None]
    return lambda: _core.stream(*lists, 4, 3)


def compare(case: Case, timer, with_deepspeed: bool):
    """Times of every column (seconds per step), interleaved."""
    params, grads = make_tensors(case)
    fns = {"fusedopt": fusedopt_step(case, params, grads), "probe": probe_step(case)}
    tp, tg = make_tensors(case)  # torch gets its own tensors: it may not share fusedopt's
    fns["torch"] = torch_step(case, tp, tg)
    if with_deepspeed:
        dp, dg = make_tensors(case)
        fns["deepspeed"] = deepspeed_step(case, dp, dg)
    return timer(fns)


def _block(ctx: Context, with_deepspeed: bool):
    torch = _torch()
    torch.set_num_threads(_core.get_num_threads())
    labels = {"fusedopt": "fusedopt.ops.adam_ (NumPy views)", "torch": "torch Adam(fused=True)",
              "deepspeed": "DeepSpeedCPUAdam", "probe": "bandwidth probe (same bytes)"}
    blocks = []
    for case in cases(ctx.quick, ctx.sizes if ctx.sizes_given else None):
        t = compare(case, ctx.timer, with_deepspeed)
        rows = []
        for k in ("fusedopt", "torch", "deepspeed", "probe"):
            if k in t:
                rows.append([labels[k], us(t[k]), gbs(case.nbytes(), t[k]),
                             f"{t['probe'] / t[k]:.0%}", f"{t[k] / t['fusedopt']:.2f}"])
        plural = "s" if len(case.sizes) > 1 else ""
        title = (f"torch: {case.name} ({len(case.sizes)} tensor{plural}, "
                 f"{case.bytes_per_element} bytes/element for fusedopt)")
        blocks.append(f"{title}\n" + format_table(
            ["implementation", "us", "GB/s (fusedopt's bytes)", "% of probe", "time / fusedopt"],
            rows))
    return blocks


def section(ctx: Context):
    """fusedopt vs torch.optim.Adam(fused=True), one table per case; nothing without torch."""
    if not ctx.with_torch:
        return ["torch: skipped (torch is not installed, or --no-torch)"]
    return _block(ctx, with_deepspeed=False)


def section_deepspeed(ctx: Context):
    """As ``section``, with DeepSpeedCPUAdam (named only: ``--rules deepspeed``)."""
    if not ctx.with_torch:
        return ["deepspeed: skipped (torch is not installed, or --no-torch)"]
    if not deepspeed_available():
        return ["deepspeed: skipped (deepspeed is not importable; pip install deepspeed)"]
    return _block(ctx, with_deepspeed=True)
