"""Experiment 6: multi-start L-BFGS from Latin-hypercube points on Rastrigin and Ackley in 2-D
and 10-D.

Layer: tools (SciPy draws the Latin hypercube, imported by ``fusedopt.sampling`` when used).
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ..benchmarks.table import Table
from ..benchmarks.timing import stopwatch
from ..lbfgs import minimize
from ..sampling import DEFAULT_MINIMIZER, latin_hypercube, multistart
from .figures import contour, legend_outside

__all__ = ["TITLE", "NEEDS", "units", "run", "MULTISTART_PROBLEMS"]

TITLE = "multi-start L-BFGS"
NEEDS = "scipy"


def units(cfg):
    """Progress units: one per function and dimension."""
    return len(MULTISTART_PROBLEMS) * len(cfg.ms_starts)


MULTISTART_PROBLEMS = ((F.rastrigin, 5.12), (F.ackley, 32.768))


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    tab = Table("6. Multi-start: Latin-hypercube starts + L-BFGS in the standard box",
                ["function", "dim", "box", "starts/run", "runs", "starts reaching x*",
                 "runs finding x*", "median best f", "time [s]"],
                note=f"Local minimizer: {DEFAULT_MINIMIZER}. 'Reaching x*': final "
                     "max|x - x*| < 1e-3.")
    shown = None
    latin_hypercube(1, [(0.0, 1.0)])           # imports SciPy before the clock starts
    minimize(F.sphere.value_and_grad, np.ones(2))
    for fun, h in MULTISTART_PROBLEMS:
        for d, n in cfg.ms_starts:
            t0 = stopwatch()
            hits, found, best = 0, 0, []
            for rep in range(cfg.ms_runs):
                r = multistart(fun.value_and_grad, [(-h, h)] * d, n, minimize,
                               rng=cfg.seed * 1000 + rep)
                ok = np.max(np.abs(r.xs - fun.minimizer(d)), axis=1) < 1e-3
                hits += int(ok.sum())
                found += int(ok[r.index])
                best.append(r.fun)
                if d == 2 and fun is F.rastrigin and rep == 0:
                    shown = r
            tab.add(fun.name, d, f"[-{h:g}, {h:g}]^{d}", n, cfg.ms_runs,
                    f"{hits}/{n * cfg.ms_runs} ({100 * hits / (n * cfg.ms_runs):.1f}%)",
                    f"{found}/{cfg.ms_runs}", float(np.median(best)),
                    stopwatch() - t0)
            bar.update()
    if figs.enabled and shown is not None:
        fig, ax = figs.new(1, 1, (7.6, 5.5))
        ax = ax[0, 0]
        contour(ax, F.rastrigin, ((-5.12, 5.12), (-5.12, 5.12)), cfg.grid, levels=20,
                labels=("x1", "x2"))
        for a, b in zip(shown.starts, shown.xs):
            ax.plot([a[0], b[0]], [a[1], b[1]], "-", color="0.5", lw=0.6)
        ax.plot(*shown.starts.T, "o", ms=3, label="Latin-hypercube starts")
        ax.plot(*shown.xs.T, "x", ms=5, label="local minima found")
        ax.plot(0, 0, "k*", ms=12, label="global minimum")
        ax.set_title(f"Multi-start on Rastrigin 2-D ({len(shown.starts)} starts)")
        legend_outside(ax)
        figs.save(fig, "06_multistart_rastrigin.png")
    return [tab]
