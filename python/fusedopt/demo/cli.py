"""``python -m fusedopt demo``: runs the experiments of the registry, prints their tables
(also written to ``DIR/tables.txt``) and writes their figures.

Layer: tools.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..benchmarks.timing import stopwatch
from .config import Config, Context
from .figures import Figures
from .progress import progress as make_progress

__all__ = ["main", "run", "EXPERIMENTS", "MODULES", "experiment"]

DESCRIPTION = "The textbook optimization experiments, runnable."

#: The registry: experiment number -> its module in this package. Each module defines
#: ``TITLE``, ``NEEDS`` (the optional package it cannot run without, or None),
#: ``units(cfg)`` (its progress units) and ``run(ctx) -> [Table]``. A new experiment is one
#: module plus one entry here.
MODULES = {
    1: "quadratic",
    2: "testfunctions",
    3: "mlp",
    4: "lr_schedules",
    5: "averages",
    6: "multistart",
    7: "natural_gradient",
    8: "saddle",
    9: "lowbit",
}


def experiment(k):
    """The module of experiment ``k``."""
    return importlib.import_module(f"{__package__}.{MODULES[k]}")


#: Experiment number -> title.
EXPERIMENTS = {k: experiment(k).TITLE for k in MODULES}

_PIP_NAMES = {"sklearn": "scikit-learn"}


def _missing(k):
    """The package experiment ``k`` needs and cannot import, else None."""
    needs = experiment(k).NEEDS
    if needs is None:
        return None
    try:
        importlib.import_module(needs)
    except ImportError:
        return _PIP_NAMES.get(needs, needs)
    return None


def run(out="demo_out", *, quick=False, only=None, seed=0, progress=True, stream=None):
    """Run the experiments ``only`` (default all: the numbers of ``EXPERIMENTS``), print their
    tables to ``stream`` (default stdout), write the figures and ``tables.txt`` into ``out``. An
    experiment whose package (scikit-learn, SciPy) is missing is skipped with a note on
    stderr. Returns ``{"tables": {number: [Table, ...]}, "figures": [paths],
    "seconds": {number: s}, "skipped": {number: package}, "progress": (done, total)}``."""
    stream = sys.stdout if stream is None else stream
    which = sorted(set(only)) if only else sorted(EXPERIMENTS)
    bad = [k for k in which if k not in EXPERIMENTS]
    if bad:
        raise ValueError(f"only must name experiments {list(EXPERIMENTS)}, got {bad}")
    cfg = Config.make(quick, seed)
    os.makedirs(out, exist_ok=True)
    figs = Figures(out, cfg.dpi)
    if not figs.enabled:
        print("matplotlib is not installed: tables only, no figures "
              "(pip install 'fusedopt[demo]')", file=sys.stderr)
    skipped = {k: m for k in which if (m := _missing(k)) is not None}
    for k, m in skipped.items():
        print(f"skipping {k}. {EXPERIMENTS[k]}: it needs {m} (pip install 'fusedopt[demo]')",
              file=sys.stderr)
    which = [k for k in which if k not in skipped]
    bar = make_progress(sum(experiment(k).units(cfg) for k in which), "fusedopt demo",
                        enabled=progress)
    ctx = Context(cfg, figs, bar)
    tables, seconds = {}, {}
    try:
        for k in which:
            bar.set_description(f"{k}. {EXPERIMENTS[k]}")
            t0 = stopwatch()
            tables[k] = experiment(k).run(ctx)
            seconds[k] = stopwatch() - t0
            text = "\n\n".join(t.format() for t in tables[k])
            bar.clear()
            print("\n" + text + f"\n[{k}. {EXPERIMENTS[k]}: {seconds[k]:.1f} s]", file=stream,
                  flush=True)
    finally:
        bar.close()
    with open(os.path.join(out, "tables.txt"), "w") as fh:
        for k in which:
            fh.write("\n\n".join(t.format() for t in tables[k]) + "\n\n")
    return {"tables": tables, "figures": list(figs.written), "seconds": seconds,
            "skipped": skipped, "progress": (bar.n, bar.total)}


def main(argv=None) -> int:
    """``python -m fusedopt demo [--out DIR] [--quick] [--only 1,3] [--seed N]``."""
    p = argparse.ArgumentParser(
        prog="python -m fusedopt demo", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(f"  {k}. {v}" for k, v in EXPERIMENTS.items()))
    p.add_argument("--out", default="demo_out", metavar="DIR",
                   help="folder for the PNG figures and tables.txt (default: demo_out/)")
    p.add_argument("--quick", action="store_true", help="small iteration counts (seconds)")
    p.add_argument("--only", default=None, metavar="LIST",
                   help="comma-separated experiment numbers, e.g. 1,3")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    only = None
    if args.only:
        try:
            only = [int(s) for s in args.only.split(",") if s.strip()]
        except ValueError:
            p.error(f"--only must be comma-separated experiment numbers, got {args.only!r}")
        if any(k not in EXPERIMENTS for k in only):
            p.error(f"--only must name experiments {list(EXPERIMENTS)}, got {args.only!r}")
    t0 = stopwatch()
    res = run(args.out, quick=args.quick, only=only, seed=args.seed,
              progress=not args.no_progress)
    print(f"\nWrote {len(res['figures'])} figures and tables.txt to {args.out}/ in "
          f"{stopwatch() - t0:.1f} s")
    return 0
