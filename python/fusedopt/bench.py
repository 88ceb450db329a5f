"""``python -m fusedopt bench``: how close each fused kernel runs to the machine's bandwidth.

For every update rule and size it times, side by side in one run, interleaved so that drift in
the machine's bandwidth hits every column alike:

* the fused kernel (``fusedopt.ops``),
* the bandwidth probe ``fusedopt._core.stream`` for the same read/write pattern (the same
  threading as the kernels, plain loads, sums and stores, no math),
* the NumPy reference (``fusedopt.reference``),
* ``torch.optim`` (``fused=True`` where torch has a fused CPU kernel, else ``foreach=True``),
  only where torch is installed.

Effective GB/s counts the bytes the rule must move: ``(reads + writes) * n * itemsize``. Times
are medians of several repeats of ``time.perf_counter`` over back-to-back calls, after warm-up.

The registry ``RULES`` and the helpers that build one step of each implementation are also used
by the pytest-benchmark files in ``bench/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import math
import statistics
import time

import numpy as np

from . import _core, ops, optim, reference

__all__ = ["Rule", "RULES", "main", "make_arrays", "fused_step", "probe_step", "torch_step",
           "time_interleaved", "Timer", "call_time", "model_sizes", "format_table", "size_label"]

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

EXTRA_SECTIONS = ("model", "overhead", "lbfgs")


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


def probe_step(rule: Rule, sizes, dtype=np.float32):
    """A zero-argument callable running the bandwidth probe over fresh zero arrays of ``sizes``
    with ``rule``'s pattern: reads param, grad, states; writes param, states.

    The arrays are written with zeros (``np.full``), not left to ``np.zeros``: calloc'd pages
    that are never written all map the one zero page, and reading them would measure a cache,
    not memory. Zeros stay zeros under the probe's sums.
    """
    lists = [[np.full(int(n), 0, dtype) for n in sizes] for _ in range(rule.reads)]
    lists += [None] * (5 - rule.reads)
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


# -- timing ----------------------------------------------------------------------------------
def call_time(fn, *, cheap: float = 0.05) -> float:
    """Seconds one call of ``fn`` takes after a warm-up call (the warm-up's own time where that
    took longer than ``cheap`` seconds: a slow call needs no second warm-up)."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if dt < cheap:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    return max(dt, 1e-7)


def time_interleaved(fns: dict, *, budget: float = 0.3, min_repeats: int = 3,
                     max_repeats: int = 25, sample: float = 2e-3) -> dict:
    """Seconds per call of each zero-argument callable in ``fns``: ``{key: [one per repeat]}``.

    Each callable is warmed up, then called ``number`` times back to back per sample (enough
    for ``sample`` seconds). Samples are taken round-robin over all callables, so that a drift
    of the machine affects them alike, until ``min_repeats`` rounds are done and ``budget``
    seconds have passed (or ``max_repeats`` rounds).
    """
    numbers = {key: max(1, int(sample / call_time(fn))) for key, fn in fns.items()}
    samples = {key: [] for key in fns}
    start = time.perf_counter()
    for r in range(max_repeats):
        for key, fn in fns.items():
            number = numbers[key]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples[key].append((time.perf_counter() - t0) / number)
        if r + 1 >= min_repeats and time.perf_counter() - start >= budget:
            break
    return samples


class Timer:
    """Medians of ``time_interleaved`` with a fixed budget per call, remembering the largest
    spread seen (upper over lower quartile of one measurement's repeats): a busy machine shows
    there first."""

    def __init__(self, budget: float):
        self.budget = budget
        self.spread = 1.0

    def __call__(self, fns: dict, **kwargs) -> dict:
        samples = time_interleaved(fns, budget=self.budget, **kwargs)
        for v in samples.values():
            if len(v) >= 4:
                q1, _, q3 = statistics.quantiles(v, n=4)
                self.spread = max(self.spread, q3 / q1)
        return {key: statistics.median(v) for key, v in samples.items()}


# -- printing --------------------------------------------------------------------------------
def format_table(headers, rows) -> str:
    """A plain text table, columns right-aligned (the first left-aligned)."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def size_label(n: int) -> str:
    """``1e7`` for powers of ten from 100 up, else the number."""
    e = len(str(n)) - 1
    return f"1e{e}" if n == 10**e and e > 1 else str(n)


def _us(seconds):
    return f"{seconds * 1e6:.1f}"


def _gbs(nbytes, seconds):
    return f"{nbytes / seconds / 1e9:.2f}"


def _x(a, b):
    return f"{a / b:.2f}x"


# -- the sections ----------------------------------------------------------------------------
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
        row = [n, _us(t["fused"]), _gbs(nbytes, t["fused"]), _gbs(nbytes, t["probe"]),
               f"{t['probe'] / t['fused']:.0%}", _us(t["reference"]),
               _x(t["reference"], t["fused"])]
        if with_torch:
            row += [_us(t["torch"]), _x(t["torch"], t["fused"])]
        rows.append(row)
        del fns, arrays
    title = (f"{rule.name}: {rule.title} -- reads {rule.reads}, writes {rule.writes} float32 "
             f"arrays of n")
    if with_torch:
        title += f"; torch (optional): {rule.torch_label}"
    return title, format_table(headers, rows)


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
    rows = [[labels[k], _us(t[k]), _gbs(nbytes, t[k]), f"{t[k] / t['flat']:.2f}"]
            for k in ("split", "flat", "probe", "torch split") if k in t]
    title = (f"model: Adam over {len(sizes)} tensors of {total} elements in total (sizes "
             f"{min(sizes)}..{max(sizes)}) vs one flat array; target: time / flat <= 1.10")
    return title, format_table(["layout", "us", "GB/s", "time / flat"], rows)


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
        row = [count, _us(t["fused"]), _us(target), "yes" if t["fused"] <= target else "NO"]
        if with_torch:
            row.append(_us(t["torch"]))
        rows.append(row)
    headers = ["tensors", "Adam.step us", "target us", "met"]
    if with_torch:
        headers.append("torch fused us")
    title = ("overhead: fusedopt.optim.Adam.step on tensors of 4 elements; target "
             "<= 20 us + 0.5 us per tensor")
    return title, format_table(headers, rows)


def _print_lbfgs(quick: bool, full: bool = False) -> None:
    name = f"{__package__}._bench_lbfgs"
    try:
        _bench_lbfgs = importlib.import_module(name)   # written separately, may be absent
    except ImportError as exc:
        if getattr(exc, "name", None) != name:
            raise
        print("lbfgs: fusedopt._bench_lbfgs is not available; skipped\n")
        return
    out = _bench_lbfgs.run(quick=quick, full=full)
    if isinstance(out, str):
        print(out)
    elif out is not None:
        for table in out:
            print(table)
            print()


# -- command line ----------------------------------------------------------------------------
def _sizes(text):
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be numbers like 1e5,1e6: {text!r}") \
            from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive: {text!r}")
    return sizes


def _rules(text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    known = [r.name for r in RULES] + list(EXTRA_SECTIONS)
    bad = [s for s in names if s not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown rule(s) {bad}; choose from {known}")
    return names


def _threads(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"threads must be an integer >= 1: {text!r}")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fusedopt bench",
        description=__doc__.split("\n\n")[0] + " One table per update rule: time per step, "
        "effective GB/s, the measured bandwidth for the same read/write pattern, the fraction "
        "of it reached, and the speed-up over the NumPy reference (and over torch.optim where "
        "torch is installed).")
    p.add_argument("--quick", action="store_true",
                   help="sizes 1e5,1e6 (unless --sizes), shorter timing, smaller model")
    p.add_argument("--sizes", type=_sizes, default=None,
                   help="comma-separated element counts (default 1e5,1e6,1e7)")
    p.add_argument("--rules", type=_rules, default=None,
                   help="comma-separated subset of: " + ", ".join(
                       [r.name for r in RULES] + list(EXTRA_SECTIONS)) + " (default: all)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="OpenMP threads for fusedopt (and torch); default: as configured")
    p.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    p.add_argument("--full", action="store_true",
                   help="L-BFGS: run the chained Rosenbrock for 500 iterations (not 100)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    sizes = args.sizes or ([10**5, 10**6] if args.quick else [10**5, 10**6, 10**7])
    names = args.rules or [r.name for r in RULES] + list(EXTRA_SECTIONS)
    timer = Timer(0.1 if args.quick else 0.3)
    with_torch = not args.no_torch and torch_available()
    if args.threads is not None:
        _core.set_num_threads(args.threads)
    if with_torch:
        import torch  # noqa: PLC0415 -- optional

        torch.set_num_threads(_core.get_num_threads())
    start = time.perf_counter()
    print(f"fusedopt bench: {_core.get_num_threads()} threads, kernels {_core.isa()}, float32; "
          f"times are medians per step, GB/s = (reads + writes) * n * 4 bytes / time; probe = "
          f"fusedopt._core.stream with the same pattern, timed interleaved; torch "
          f"{'included (optional)' if with_torch else 'not installed or left out'}\n")
    grads_by_size = {}
    for name in names:
        if name in RULES_BY_NAME:
            for n in sizes:
                if n not in grads_by_size:
                    grads_by_size[n] = make_grads([n])[0]
            title, table = bench_rule(RULES_BY_NAME[name], sizes, with_torch=with_torch,
                                      timer=timer, grads_by_size=grads_by_size)
        elif name == "model":
            total = max(sizes) if args.sizes else (10**6 if args.quick else 10**7)
            title, table = bench_model(max(total, 200), with_torch=with_torch, timer=timer)
        elif name == "overhead":
            title, table = bench_overhead(with_torch=with_torch, timer=timer)
        else:
            continue
        print(title)
        print(table)
        print(flush=True)
    grads_by_size.clear()
    if "lbfgs" in names:
        _print_lbfgs(args.quick, args.full)
    print(f"total {time.perf_counter() - start:.1f} s")
    if timer.spread > 1.25:
        print(f"note: repeats of one measurement differed by up to {timer.spread:.1f}x "
              "(upper/lower quartile): the machine was busy or its clock unsteady; rerun "
              "on a quiet machine before trusting these figures")
    return 0
