"""Experiment 2: gradient descent and Adam (and Newton, L-BFGS) on the 2-D Rosenbrock,
Rastrigin and Ackley functions.

Layer: tools.
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from .. import optim
from ..benchmarks.table import Table
from ..lbfgs import minimize
from ..newton import newton
from .figures import contour, first_below, legend_outside, trajectory

__all__ = ["TITLE", "NEEDS", "units", "run", "PROBLEMS"]

TITLE = "GD vs Adam on Rosenbrock, Rastrigin, Ackley"
NEEDS = None


PROBLEMS = (
    (F.rosenbrock, ((0.0, 0.0), (3.0, 0.0), (5.0, 0.0)), ((-2.5, 6), (-3, 30)), True),
    (F.rastrigin, ((-5.0, -5.0), (-1.0, -1.0)), ((-5.5, 5.5), (-5.5, 5.5)), False),
    (F.ackley, ((-4.0, -4.0),), ((-5, 5), (-5, 5)), False),
)


def _first_configs():
    yield "GD lr=1e-3", lambda p: optim.SGD([p], lr=1e-3)
    for lr, betas in ((0.01, (0.9, 0.999)), (0.1, (0.9, 0.999)), (1.0, (0.9, 0.999)),
                      (0.1, (0.5, 0.9)), (0.1, (0.0, 0.999))):
        yield (f"Adam lr={lr:g} b={betas[0]:g},{betas[1]:g}",
               lambda p, lr=lr, betas=betas: optim.Adam([p], lr=lr, betas=betas, eps=1e-7))


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    tab = Table(f"2. First-order methods ({cfg.iters} iterations, float64, eps 1e-7) vs Newton "
                f"and L-BFGS on 2-D test functions",
                ["function", "start", "method", "final x", "final f", "iters", "first f<1e-6",
                 "diverged at"],
                note=f"L-BFGS: fusedopt.lbfgs. 'iters' is the iteration count run (first-order "
                     f"methods) or used (Newton, L-BFGS); 'first f<1e-6' the first iteration "
                     f"(L-BFGS: function evaluation) below 1e-6; 'diverged at' the first "
                     f"iteration whose value overflowed. Newton is undamped: it goes to the "
                     f"nearest stationary point, minimum or not.")
    for fun, starts, box, log in PROBLEMS:
        X0 = np.array(starts, dtype=np.float64)
        paths = {}
        for name, make in _first_configs():
            # The optimizers are elementwise, so one (k, 2) array runs the k starts at once,
            # exactly as k separate runs would.
            P = X0.copy()
            opt = make(P)
            traj = np.empty((cfg.iters + 1,) + P.shape)
            traj[0] = P
            with np.errstate(all="ignore"):
                for t in range(cfg.iters):
                    opt.step([fun.grad(P)])
                    traj[t + 1] = P
                fv = fun.value(traj)                     # (iters + 1, k)
            for j, x0 in enumerate(X0):
                bad = np.flatnonzero(~np.isfinite(fv[:, j]))
                tab.add(fun.name, x0, name, traj[-1, j], fv[-1, j], cfg.iters,
                        first_below(fv[:, j], 1e-6), int(bad[0]) if bad.size else None)
            paths[name] = traj
            bar.update()
        for j, x0 in enumerate(X0):
            with np.errstate(all="ignore"):
                r = newton(fun.value_and_grad, x0, fun.hess, maxiter=100)
            tab.add(fun.name, x0, "Newton", r.x, r.fun, r.nit, first_below(r.fvals, 1e-6),
                    r.nit if r.status == 3 else None)
            paths.setdefault("Newton", []).append(r.path)
            seen = []                          # every point L-BFGS evaluates, line search too

            def recorded(x, seen=seen):
                f, g = fun.value_and_grad(x)
                seen.append((np.array(x, dtype=np.float64), float(f)))
                return f, g

            with np.errstate(all="ignore"):
                r = minimize(recorded, x0.copy())
            first = first_below([f for _, f in seen], 1e-6)
            tab.add(fun.name, x0, "L-BFGS", np.asarray(r.x), float(r.fun), int(r.nit),
                    None if first is None else f"eval {first + 1}",
                    None if np.isfinite(r.fun) else "yes")
            paths.setdefault("L-BFGS (evaluations)", []).append(np.array([x for x, _ in seen]))
        bar.update()
        if figs.enabled:
            fig, axes = figs.new(1, len(X0), (4.6, 5.4))
            for j, x0 in enumerate(X0):
                ax = axes[0, j]
                contour(ax, fun, box, cfg.grid, log=log)
                for name, traj in paths.items():
                    trajectory(ax, traj[j] if isinstance(traj, list) else traj[:, j], name)
                ax.plot(*x0, "ko", ms=6, mfc="none", mew=1.5, label="start")
                ax.plot(*fun.minimizer(2), "k*", ms=10, label="global minimum")
                ax.set_title(f"{fun.name} from {tuple(float(v) for v in x0)}")
                legend_outside(ax, where="below", ncol=2, fontsize=6.5)
            figs.save(fig, f"02_{fun.name}.png")
    return [tab]




def units(cfg):
    """Progress units: every first-order configuration, and Newton with L-BFGS, per function."""
    return sum(sum(1 for _ in _first_configs()) + 1 for _ in PROBLEMS)
