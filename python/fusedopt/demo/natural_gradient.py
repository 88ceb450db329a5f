"""Experiment 7: natural gradient vs gradient descent vs Adam, on Rosenbrock with a damped
Hessian metric and on logistic regression with its Fisher information as the metric.

Layer: tools.
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from .. import optim
from ..benchmarks.table import Table
from ..natural import LogisticRegression, natural_gradient
from .figures import contour, first_below, legend_outside, trajectory

__all__ = ["TITLE", "NEEDS", "units", "run", "logistic_problem", "TOL"]

TITLE = "natural gradient vs GD vs Adam"
NEEDS = None

#: Iterations are counted to ``f - f* < TOL``.
TOL = 1e-8


def units(cfg):
    """Progress units: one per problem."""
    return 2


def logistic_problem(seed=0, m=300):
    """Logistic regression on two features of very different scales (standard deviations 1
    and 0.1: an ill-conditioned loss) with noisy labels (not separable: a finite minimum)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 2)) * [1.0, 0.1]
    y = (X @ [1.5, -4.0] + rng.standard_normal(m) > 0).astype(float)
    return LogisticRegression(X, y)


def _logistic_values(model, W):
    """The mean negative log-likelihood at every point of ``W`` (..., 2)."""
    Z = np.asarray(W) @ model.X.T
    return np.mean(np.logaddexp(0.0, Z) - model.y * Z, axis=-1)


def _first_order(make, grad, x0, iters):
    """The iterates of a fusedopt.optim optimizer (``make(param)``) from ``x0``."""
    p = np.array(x0, dtype=np.float64)
    opt = make(p)
    path = np.empty((iters + 1, p.size))
    path[0] = p
    with np.errstate(all="ignore"):
        for t in range(iters):
            opt.step([grad(p)])
            path[t + 1] = p
    return path


def _gauss_newton(x):
    """``2 J^T J`` of Rosenbrock's residuals ``r = (10 (y - x^2), 1 - x)``, ``f = |r|^2``: the
    positive semidefinite part of the Hessian (the Fisher of a Gaussian model of r)."""
    J = np.array([[-20.0 * x[0], 10.0], [-1.0, 0.0]])
    return 2.0 * J.T @ J


def _problems(cfg):
    """``(name, value over points, x0, f*, x*, box, [(method, metric label, lr,
    run() -> (path, metric evaluations, CG iterations))])``."""
    f = F.rosenbrock
    rosen_x0 = np.array([-1.2, 1.0])

    def ng(fun, x0, metric, **kw):
        def go():
            r = natural_gradient(fun, x0, metric, maxiter=200, gtol=1e-12, **kw)
            return r.path, r.nmev, r.ncg
        return go

    def first(make, grad, x0):
        return lambda: (_first_order(make, grad, x0, cfg.iters), None, None)

    rosen = [
        ("GD", "-", 1e-3, first(lambda p: optim.SGD([p], lr=1e-3), f.grad, rosen_x0)),
        ("Adam", "-", 1e-2, first(lambda p: optim.Adam([p], lr=1e-2), f.grad, rosen_x0)),
        ("NG", "H + 1e-3 I", 1.0, ng(f.value_and_grad, rosen_x0, f.hess, damping=1e-3)),
        ("NG", "H + 1 I", 1.0, ng(f.value_and_grad, rosen_x0, f.hess, damping=1.0)),
        ("NG", "2 J^T J + 1e-3 I", 1.0, ng(f.value_and_grad, rosen_x0, _gauss_newton,
                                           damping=1e-3)),
    ]
    model = logistic_problem(cfg.seed)
    w0 = np.array([-1.0, 3.0])
    L = float(np.linalg.eigvalsh(model.X.T @ model.X / len(model.y) / 4).max())

    def grad(w):
        return model.value_and_grad(w)[1]

    logistic = [
        ("GD", "-", 1 / L, first(lambda p: optim.SGD([p], lr=1 / L), grad, w0)),
        ("Adam", "-", 0.05, first(lambda p: optim.Adam([p], lr=0.05), grad, w0)),
        ("NG", "Fisher (Cholesky)", 1.0, ng(model.value_and_grad, w0, model.fisher)),
        ("NG", "Fisher (CG on F v)", 1.0, ng(model.value_and_grad, w0, model.fisher,
                                            method="cg")),
        ("NG", "empirical Fisher + 1e-4 I", 0.5, ng(model.value_and_grad, w0,
                                                    model.empirical_fisher, lr=0.5,
                                                    damping=1e-4)),
    ]
    ref = natural_gradient(model.value_and_grad, w0, model.fisher, gtol=1e-14)
    fstar, wstar = ref.fun, ref.x
    return [
        ("Rosenbrock", f.value, rosen_x0, 0.0, f.minimizer(2), ((-2, 2), (-4.2, 3)), rosen),
        ("logistic regression", lambda W: _logistic_values(model, W), w0, fstar, wstar,
         ((-2, 5), (-12, 4)), logistic),
    ]


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    tab = Table(f"7. Natural gradient (NG) w <- w - lr (G + lambda I)^-1 grad f vs GD and Adam: "
                f"iterations to f - f* < {TOL:g}",
                ["problem", "method", "metric G", "lr", f"iters to f-f*<{TOL:g}",
                 "final f - f*", "iters run", "metric evals", "CG iters"],
                note=f"Rosenbrock from (-1.2, 1): H its Hessian (positive definite along these "
                     f"paths), 2 J^T J its Gauss-Newton part. Logistic regression (300 points, "
                     f"features of scale 1 and 0.1, from (-1, 3)): the mean NLL is the KL "
                     f"divergence from the data to the model plus a constant, the Fisher F is "
                     f"the Hessian of the KL between nearby models (and, for this model, of "
                     f"the loss: NG with lr 1 is Fisher scoring). CG solves F d = g from "
                     f"products F v only, never forming F. GD's lr 1/L is its best constant "
                     f"step, L the largest Hessian eigenvalue bound. First-order methods run "
                     f"{cfg.iters} iterations; NG stops at max|grad| <= 1e-12.")
    shown = []
    for name, value, x0, fstar, xstar, box, methods in _problems(cfg):
        done = [(method, metric, lr) + go() for method, metric, lr, go in methods]
        with np.errstate(all="ignore"):
            values = [np.asarray(value(path), dtype=np.float64) for _, _, _, path, _, _ in done]
        # f* from the reference run, or lower where a run went lower (by rounding)
        fstar = min([fstar] + [float(np.nanmin(v)) for v in values])
        runs = []
        for (method, metric, lr, path, nmev, ncg), v in zip(done, values):
            gap = v - fstar
            tab.add(name, method, metric, lr, first_below(gap, TOL), gap[-1], len(path) - 1,
                    nmev, ncg)
            label = method if metric == "-" else f"{method}, G = {metric}"
            runs.append((f"{label}, lr={lr:.3g}", path, gap))
        shown.append((name, value, x0, xstar, box, runs))
        bar.update()
    if figs.enabled:
        fig, axes = figs.new(2, 2, (5.4, 4.6))
        for j, (name, value, x0, xstar, box, runs) in enumerate(shown):
            ax = axes[0, j]
            contour(ax, value, box, cfg.grid if j == 0 else min(cfg.grid, 150), log=True,
                    labels=("w1", "w2") if j else ("x", "y"))
            for k, (label, path, _) in enumerate(runs):
                if "CG" not in label:          # the same points as Cholesky's
                    # Adam a wide pale band under GD, which follows the same valley
                    style = ({"lw": 4.0, "alpha": 0.5} if label.startswith("Adam") else
                             {"lw": 1.6, "zorder": 3} if label.startswith("GD") else {"lw": 1.0})
                    trajectory(ax, path, label, color=f"C{k}", **style)
            ax.plot(*x0, "ko", ms=6)
            ax.plot(*xstar, "k*", ms=11)
            ax.set_title(f"{name}: paths from the dot to the star\n(colours: legend below)")
            ax = axes[1, j]
            for k, (label, path, gap) in enumerate(runs):
                it = np.arange(1, len(gap) + 1)
                cg = "CG" in label
                ax.loglog(it, np.maximum(gap, 1e-17), ":" if cg else "-", lw=2.2 if cg else 1.2,
                          color=f"C{k}", label=label)
            ax.axhline(TOL, color="0.3", lw=0.8, ls=(0, (6, 3)), label=f"tolerance {TOL:g}")
            ax.set_xlabel("iteration + 1")
            ax.set_ylabel("f - f*  (floored at 1e-17)")
            ax.set_title(f"{name}: f - f* (legend for both panels)")
            legend_outside(ax, where="below", fontsize=7)
        figs.save(fig, "07_natural_gradient.png")
    return [tab]
