"""``python -m fusedopt bench``: how close each fused kernel runs to the machine's bandwidth.

Layer: tools (the command line of ``fusedopt.benchmarks``; torch is imported only when used).

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
Then the sections ``model``, ``overhead``, ``lbfgs`` and ``torch`` (see their modules).
"""
from __future__ import annotations

import argparse
import importlib

from .. import _core
from .registry import RULES, RULES_BY_NAME, Context, torch_available
from .timing import Timer, stopwatch

__all__ = ["main", "parser", "SECTIONS"]

#: The sections after the per-rule tables, in order: name -> module (in this package) whose
#: ``section(ctx)`` returns text blocks. A new section is one module plus one entry here.
SECTIONS = {"model": "model", "overhead": "overhead", "lbfgs": "lbfgs", "torch": "vs_torch"}
#: Sections run only when named in ``--rules`` (they take long or load the machine on purpose,
#: or need an optional package that compiles at first use).
NAMED_SECTIONS = {"load": "load", "deepspeed": "vs_deepspeed", "state": "state"}


def _section(name):
    """The ``section`` callable of a section or of the per-rule tables (looked up at call
    time)."""
    if name in RULES_BY_NAME:
        module = importlib.import_module(f"{__package__}.elementwise")
        return lambda ctx: module.section(ctx, name)
    module = SECTIONS.get(name) or NAMED_SECTIONS[name]
    return importlib.import_module(f"{__package__}.{module}").section


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
    known = [r.name for r in RULES] + list(SECTIONS) + list(NAMED_SECTIONS)
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
                       [r.name for r in RULES] + list(SECTIONS)) + " (default: all of these); "
                   "named only: " + ", ".join(NAMED_SECTIONS))
    p.add_argument("--threads", type=_threads, default=None,
                   help="threads for fusedopt (and torch); default: as configured")
    p.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    p.add_argument("--full", action="store_true",
                   help="L-BFGS: add the long cases (directions at 1e7, Extended Rosenbrock at "
                   "1e6, the chained Rosenbrock at 1e6 for 500 iterations)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    sizes = args.sizes or ([10**5, 10**6] if args.quick else [10**5, 10**6, 10**7])
    names = args.rules or [r.name for r in RULES] + list(SECTIONS)
    with_torch = not args.no_torch and torch_available()
    ctx = Context(sizes=sizes, timer=Timer(0.1 if args.quick else 0.3), with_torch=with_torch,
                  quick=args.quick, full=args.full, sizes_given=args.sizes is not None)
    if args.threads is not None:
        _core.set_num_threads(args.threads)
    if with_torch:
        import torch  # noqa: PLC0415 -- optional

        torch.set_num_threads(_core.get_num_threads())
    start = stopwatch()
    print(f"fusedopt bench: {_core.get_num_threads()} threads, kernels {_core.isa()}, float32; "
          f"times are medians per step, GB/s = (reads + writes) * n * 4 bytes / time; probe = "
          f"fusedopt._core.stream with the same pattern, timed interleaved; torch "
          f"{'included (optional)' if with_torch else 'not installed or left out'}\n")
    rules_first = [n for n in names if n in RULES_BY_NAME] + [n for n in names if n not in
                                                              RULES_BY_NAME]
    for name in rules_first:
        if name == "lbfgs":
            ctx.grads_by_size.clear()           # the L-BFGS section needs the memory
        for block in _section(name)(ctx):
            print(block)
            print(flush=True)
    print(f"total {stopwatch() - start:.1f} s")
    if ctx.timer.spread > 1.25:
        print(f"note: repeats of one measurement differed by up to {ctx.timer.spread:.1f}x "
              "(upper/lower quartile): the machine was busy or its clock unsteady; rerun "
              "on a quiet machine before trusting these figures")
    return 0
