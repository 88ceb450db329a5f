"""The benchmark registry: every benchmarked update rule, and the callables that take one step
of each implementation (fused kernel, bandwidth probe, NumPy reference, torch.optim) over the
same memory. ``python -m fusedopt bench`` and the pytest-benchmark files in ``bench/`` time
the same callables.

Layer: tools (calls the kernels through ``ops`` and the bandwidth probe ``_core.stream``;
torch is imported only by ``torch_step``/``torch_available``).
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from .. import _core, ops

__all__ = ["Rule", "RULES", "RULES_BY_NAME", "STEP", "make_grads", "make_arrays", "fused_step",
           "probe_arrays", "probe_step", "torch_available", "torch_step", "model_sizes", "Context"]

#: The 1-based step every timed call takes (past the first, so SGD's momentum is in its
#: steady-state form).
STEP = 10

TORCH_FUSED = frozenset({"Adam", "AdamW", "SGD", "Adagrad"})  # fused CPU kernels in torch


@dataclasses.dataclass(frozen=True)
class Rule:
    """One benchmarked configuration of an update rule.

    ``states`` names the state lists in the order the op takes them after ``grads``.
    ``kwargs`` are the op's hyperparameters; the torch optimizer ``torch_cls`` gets the same
    ones (the names are torch's) except those in ``torch_drop``.
    """

    name: str
    title: str
    op: str
    states: tuple
    kwargs: dict
    torch_cls: str
    torch_drop: tuple = ()

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def reads(self) -> int:
        return 2 + self.n_states      # param, grad, every state

    @property
    def writes(self) -> int:
        return 1 + self.n_states      # param, every state

    def nbytes(self, n: int, itemsize: int = 4) -> int:
        return (self.reads + self.writes) * n * itemsize

    @property
    def torch_kwargs(self) -> dict:
        kw = {k: v for k, v in self.kwargs.items() if k not in self.torch_drop}
        kw["fused" if self.torch_cls in TORCH_FUSED else "foreach"] = True
        return kw

    @property
    def torch_label(self) -> str:
        how = "fused" if self.torch_cls in TORCH_FUSED else "foreach"
        return f"torch.optim.{self.torch_cls}({how}=True)"


RULES = (
    Rule("sgd", "SGD", "sgd_", (), dict(lr=1e-3), "SGD"),
    Rule("sgd_momentum", "SGD momentum=0.9", "sgd_", ("momentum_buffer",),
         dict(lr=1e-3, momentum=0.9), "SGD"),
    Rule("sgd_nesterov", "SGD momentum=0.9 nesterov", "sgd_", ("momentum_buffer",),
         dict(lr=1e-3, momentum=0.9, nesterov=True), "SGD"),
    Rule("adagrad", "Adagrad", "adagrad_", ("sum",), dict(lr=1e-2), "Adagrad"),
    Rule("rmsprop", "RMSprop", "rmsprop_", ("square_avg",), dict(lr=1e-2), "RMSprop"),
    Rule("rmsprop_centered_momentum", "RMSprop centered momentum=0.9", "rmsprop_",
         ("square_avg", "grad_avg", "momentum_buffer"),
         dict(lr=1e-2, centered=True, momentum=0.9), "RMSprop"),
    Rule("adam", "Adam", "adam_", ("exp_avg", "exp_avg_sq"), dict(lr=1e-3), "Adam"),
    Rule("adamw", "AdamW weight_decay=1e-2", "adam_", ("exp_avg", "exp_avg_sq"),
         dict(lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True), "AdamW",
         ("decoupled_weight_decay",)),
    Rule("amsgrad", "Adam amsgrad", "adam_", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
         dict(lr=1e-3, amsgrad=True), "Adam"),
    Rule("adamax", "Adamax", "adamax_", ("exp_avg", "exp_inf"), dict(lr=2e-3), "Adamax"),
)
RULES_BY_NAME = {r.name: r for r in RULES}

# -- building one step of each implementation ------------------------------------------------
def make_grads(sizes, dtype=np.float32, seed=0):
    """A list of standard-normal gradient arrays (read only by every rule, so shareable)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(n), dtype=dtype) for n in sizes]


def make_arrays(rule: Rule, grads):
    """``(params, grads, states)`` for ``rule``: params of ones, each state list filled with a
    small positive value (a steady state of sorts: no division by zero, no denormals)."""
    params = [np.ones_like(g) for g in grads]
    states = [[np.full_like(g, 0.01) for g in grads] for _ in range(rule.n_states)]
    return params, grads, states


def fused_step(rule: Rule, arrays, module=ops):
    """A zero-argument callable taking one step of ``rule`` with ``module`` (``fusedopt.ops`` or
    ``fusedopt.reference``).

    The gradient's sign flips from call to call, so that over thousands of timed steps with one
    fixed gradient no state runs off or collapses (centered RMSprop's variance would reach zero
    and round below it). The fused kernels get ``maximize`` toggled (free there); the reference
    gets a negated copy of the gradients instead (``maximize`` costs it an extra pass).
    """
    params, grads, states = arrays
    fn = getattr(module, rule.op)
    kwargs = dict(rule.kwargs, step=STEP)
    if module is ops:
        calls = [((params, grads, *states), dict(kwargs, maximize=m)) for m in (True, False)]
    else:
        calls = [((params, gs, *states), kwargs) for gs in (grads, [-g for g in grads])]
    calls = itertools.cycle(calls)

    def step():
        args, kw = next(calls)
        fn(*args, **kw)

    return step


def probe_arrays(sizes, reads: int, dtype=np.float32) -> list:
    """The five array lists of ``_core.stream`` for ``reads`` streams over arrays of ``sizes``
    (``None`` for the unused ones): every array 1 but the grad (the second), which is
    ``2 - reads``, so that the probe's sum of the reads is 1 again and each call moves the same
    values forever (small integers: exact, never inf, never subnormal).

    Not zeros: on this project's Zen 4 VM the probe over all-zero arrays ran 2-5% faster at 1e7
    than over nonzero ones (constant or random), which the kernels it bounds never see. And
    written (``np.full``), not ``np.zeros``: calloc'd pages that are never written all map the one
    zero page, and reading them would measure a cache, not memory.
    """
    lists = [[np.full(int(n), 2 - reads if r == 1 else 1, dtype) for n in sizes]
             for r in range(reads)]
    return lists + [None] * (5 - reads)


def probe_step(rule: Rule, sizes, dtype=np.float32):
    """A zero-argument callable running the bandwidth probe over fresh arrays of ``sizes``
    (``probe_arrays``) with ``rule``'s pattern: reads param, grad, states; writes param, states.
    """
    lists = probe_arrays(sizes, rule.reads, dtype)
    reads, writes = rule.reads, rule.writes
    return lambda: _core.stream(*lists, reads, writes)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401, PLC0415 -- optional
    except ImportError:
        return False
    return True


def torch_step(rule: Rule, arrays):
    """A zero-argument callable taking one ``torch.optim`` step on the same memory as
    ``arrays`` (params and grads shared through ``torch.from_numpy``; torch keeps its own
    state). Raises ImportError without torch."""
    import torch  # noqa: PLC0415 -- optional

    params, grads, _ = arrays
    tparams = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for t, g in zip(tparams, grads):
        t.grad = torch.from_numpy(g)
    opt = getattr(torch.optim, rule.torch_cls)(tparams, **rule.torch_kwargs)
    group = opt.param_groups[0]

    def step():                     # the gradient's sign alternates, as in fused_step
        group["maximize"] = not group["maximize"]
        opt.step()

    return step


def model_sizes(total: int, count: int = 200, seed: int = 0):
    """``count`` tensor sizes (log-uniform between 1 and 1000 in relative weight) summing to
    exactly ``total``: a stand-in for a model's mix of biases, norms and large matrices."""
    count = max(1, min(count, total))
    w = np.exp(np.random.default_rng(seed).uniform(0, math.log(1000.0), count))
    sizes = np.maximum(1, np.floor(w / w.sum() * total)).astype(np.int64)
    sizes[np.argmax(sizes)] += total - sizes.sum()
    return [int(s) for s in sizes]


@dataclasses.dataclass
class Context:
    """What every section of ``python -m fusedopt bench`` is given: the element counts, the
    options, and the shared timer."""

    sizes: list
    timer: object              # timing.Timer
    with_torch: bool = False
    quick: bool = False
    full: bool = False
    sizes_given: bool = False  # --sizes was passed (the model section then uses max(sizes))
    grads_by_size: dict = dataclasses.field(default_factory=dict)

    def grads(self, n: int):
        """The standard-normal float32 gradient of size n, made once per run."""
        if n not in self.grads_by_size:
            self.grads_by_size[n] = make_grads([n])[0]
        return self.grads_by_size[n]
