"""Experiment 1: the learning rate of gradient descent on a quadratic (stability, the rate
of each eigencomponent, preconditioning).

Layer: tools.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functions as F
from .. import optim
from ..benchmarks.table import Table
from ..newton import preconditioned_gd
from .figures import contour, first_below, legend_outside, trajectory

__all__ = ["TITLE", "NEEDS", "units", "run", "quadratic_problem"]

TITLE = "learning rate on a quadratic"
NEEDS = None


def units(cfg):
    """Progress units: five learning rates and two preconditioners."""
    return 7


def quadratic_problem():
    """``f = 1/2 x^T Q x``, ``Q = R diag(1, 6) R^T``, R the rotation by pi/16 (Hessian Q)."""
    t = math.pi / 16
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    Q = R @ np.diag([1.0, 6.0]) @ R.T
    return F.quadratic(Q, scale=0.5), R, np.array([1.0, 6.0])


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    f, R, lam = quadratic_problem()
    x0 = np.array([9.5, -1.0])
    lr_opt = 2 / (lam[0] + lam[-1])
    tab = Table(f"1. Gradient descent on f = 1/2 x^T Q x, Q = R diag(1, 6) R^T (R: pi/16), "
                f"x0 = (9.5, -1), {cfg.gd_steps} steps",
                ["method", "lr", "rate |1-lr*l1|", "rate |1-lr*l2|", "f(x0)", "f(final)",
                 "|x_final|", "outcome"],
                note=f"Stable for lr < 2/lambda_max = {2 / lam[-1]:.4g}; the optimal constant "
                     f"lr 2/(lambda_min+lambda_max) = {lr_opt:.4g} gives the rate (k-1)/(k+1) "
                     f"= {(lam[-1] - lam[0]) / (lam[-1] + lam[0]):.4g} (k = 6).")
    runs = []
    for lr in (0.02, 0.1, lr_opt, 0.325, 0.34):
        x = x0.copy()
        opt = optim.SGD([x], lr=lr)
        path = [x.copy()]
        for _ in range(cfg.gd_steps):
            opt.step([f.grad(x)])
            path.append(x.copy())
        path = np.array(path)
        rates = np.abs(1 - lr * lam)
        fin = f.value(path[-1])
        outcome = ("diverges" if rates.max() > 1 else
                   "converged (f < 1e-6)" if fin < 1e-6 else "not yet converged")
        name = "GD" if lr != lr_opt else "GD (optimal lr)"
        tab.add(name, lr, rates[0], rates[1], f.value(x0), fin, np.linalg.norm(path[-1]),
                outcome)
        runs.append((f"GD lr={lr:.4g}", path, bool(rates.max() > 1)))
        bar.update()
    # Preconditioning: Jacobi (diagonal) and the exact inverse.
    d = 1 / np.diag(f.Q)
    mu = np.linalg.eigvals(np.diag(d) @ f.Q).real
    lr_d = 2 / (mu.min() + mu.max())
    pre = [("GD, P = diag(Q)^-1", d, lr_d, np.abs(1 - lr_d * np.sort(mu))),
           ("GD, P = Q^-1", np.linalg.inv(f.Q), 1.0, np.zeros(2))]
    for name, P, lr, rates in pre:
        r = preconditioned_gd(f.value_and_grad, x0, P, lr=lr, maxiter=cfg.gd_steps, gtol=0.0)
        first = first_below(r.fvals, 1e-20)
        tab.add(name, lr, rates[0], rates[1], f.value(x0), r.fun, np.linalg.norm(r.x),
                f"f < 1e-20 after {first} step(s)" if first is not None else "converges")
        runs.append((name, r.path, False))
        bar.update()
    if figs.enabled:
        fig, ax = figs.new(1, 1, (8.4, 5))
        ax = ax[0, 0]
        contour(ax, f, ((-10, 10), (-6, 6)), cfg.grid, levels=np.geomspace(0.05, 300, 25),
                labels=("x1", "x2"))
        for name, p, diverges in runs:
            # a rate above 1 grows without bound: drawn until it leaves the plot, marked
            trajectory(ax, p, name, diverges=diverges)
        ax.plot(0, 0, "k*", ms=10, label="minimum")
        ax.set_title("Gradient descent on 1/2 x^T Q x: trajectories")
        legend_outside(ax)
        figs.save(fig, "01_quadratic_trajectories.png")
        fig, axes = figs.new(1, 2, (5.2, 4))
        for (name, p, diverges), style in zip(runs[:5], ("-", "--", "-.", ":", "-")):
            z = p @ R                         # coordinates in the eigenbasis
            for k, (ax, l) in enumerate(zip(axes[0], lam)):
                ax.semilogy(0.5 * l * z[:, k] ** 2 + 1e-300, style,
                            label=name + (" (diverges)" if diverges else ""))
        for k, (ax, l) in enumerate(zip(axes[0], lam)):
            ax.set_title(f"eigencomponent {k + 1} (lambda = {l:g})")
            ax.set_xlabel("step")
            ax.set_ylabel(rf"loss of the component, $\frac{{1}}{{2}}\lambda_{k + 1} z_{k + 1}^2$"
                          r"  ($z = R^T x$)")
            ax.set_ylim(1e-30, 1e6)
        legend_outside(axes[0, 1])
        figs.save(fig, "01_quadratic_eigencomponents.png")
    return [tab]
