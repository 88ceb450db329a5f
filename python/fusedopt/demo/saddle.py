"""Experiment 8: escaping saddle points. GD, momentum, Nesterov, Adagrad, RMSprop and Adam
started next to the saddle of ``x^2 - y^2`` and of the monkey saddle ``x^3 - 3 x y^2``, all
with the same learning rate: trajectories, steps to escape, and an animated GIF.

Layer: tools (the GIF needs Pillow, imported by matplotlib's writer when present).
"""
from __future__ import annotations

import numpy as np

from .. import optim
from ..benchmarks.table import Table
from .figures import contour, legend_outside

__all__ = ["TITLE", "NEEDS", "units", "run", "SADDLES", "SADDLE_OPTIMIZERS", "LR",
           "MAX_STEPS", "escape"]

TITLE = "escaping saddle points"
NEEDS = None

#: The one learning rate of every optimizer, and the step budget.
LR = 0.01
MAX_STEPS = 3000


def units(cfg):
    """Progress units: one per saddle, one for the figures."""
    return len(SADDLES) + 1


def _hyperbolic(p):
    x, y = p[..., 0], p[..., 1]
    return x * x - y * y


def _hyperbolic_grad(p):
    return np.array([2.0 * p[0], -2.0 * p[1]])


def _monkey(p):
    x, y = p[..., 0], p[..., 1]
    return x ** 3 - 3.0 * x * y * y


def _monkey_grad(p):
    x, y = p
    return np.array([3.0 * (x * x - y * y), -6.0 * x * y])


#: ``(name, f, grad f, start, escaped(point), what escape means, name in mathtext)``. The start is
#: next to the saddle at 0 in the direction of descent (y = 1e-3): exactly on the ridge
#: (y = 0) no gradient method would ever leave it.
SADDLES = (
    ("x^2 - y^2", _hyperbolic, _hyperbolic_grad, (1.0, 1e-3),
     lambda p: abs(p[1]) > 1.0, "|y| > 1", r"$x^2 - y^2$"),
    ("monkey saddle x^3 - 3xy^2", _monkey, _monkey_grad, (0.3, 1e-3),
     lambda p: np.hypot(p[0], p[1]) > 1.0, "|(x, y)| > 1", r"monkey saddle $x^3 - 3xy^2$"),
)

#: ``(name, make(param))``, every one with ``lr = LR``.
SADDLE_OPTIMIZERS = (
    ("GD", lambda p: optim.SGD([p], lr=LR)),
    ("momentum 0.9", lambda p: optim.SGD([p], lr=LR, momentum=0.9)),
    ("Nesterov 0.9", lambda p: optim.SGD([p], lr=LR, momentum=0.9, nesterov=True)),
    ("Adagrad", lambda p: optim.Adagrad([p], lr=LR)),
    ("RMSprop", lambda p: optim.RMSprop([p], lr=LR)),
    ("Adam", lambda p: optim.Adam([p], lr=LR)),
)


def escape(make, grad, x0, escaped, max_steps=MAX_STEPS):
    """Run ``make(param)`` from ``x0`` until ``escaped(point)`` or ``max_steps``: the path
    (rows: iterates) and the step of escape (None if it never escaped)."""
    p = np.array(x0, dtype=np.float64)
    opt = make(p)
    path = [p.copy()]
    for t in range(1, max_steps + 1):
        opt.step([grad(p)])
        path.append(p.copy())
        if escaped(p):
            return np.array(path), t
    return np.array(path), None


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    tab = Table(f"8. Escaping a saddle point: steps until escape, lr = {LR:g} for all, at most "
                f"{MAX_STEPS} steps",
                ["function", "start", "escape when", "optimizer", "steps to escape",
                 "point at escape", "f at escape"],
                note="Near the saddle the gradient is tiny, so GD's step is tiny too: on "
                     "x^2 - y^2, y grows by (1 + 2 lr) per step. Momentum accumulates the "
                     "steps (up to 1/(1 - 0.9) = 10 x). Adagrad, RMSprop and Adam divide by a "
                     "running size of the gradient, so their first steps have length ~lr "
                     "(Adam) or more (RMSprop's average starts at 0 without Adam's bias "
                     "correction: its first steps are ~10 lr) however small the gradient; "
                     "Adagrad's sum of squares only grows, so its steps keep shrinking. The "
                     "monkey saddle is flat to second order (zero Hessian): GD crawls.")
    results = []
    for name, f, grad, x0, escaped, when, tex in SADDLES:
        runs = []
        for opt_name, make in SADDLE_OPTIMIZERS:
            path, steps = escape(make, grad, x0, escaped)
            tab.add(name, np.array(x0), when, opt_name, steps if steps else f">{MAX_STEPS}",
                    path[-1], float(f(path[-1])))
            runs.append((opt_name, path, steps))
        results.append((tex, f, x0, when, runs))
        bar.update()
    if figs.enabled:
        _figure(figs, cfg, results)
        _animation(figs, cfg, results[0])
    bar.update()
    return [tab]


def _figure(figs, cfg, results):
    fig, axes = figs.new(2, 2, (5.2, 4.4))
    for j, (name, f, x0, when, runs) in enumerate(results):
        ax = axes[0, j]
        contour(ax, f, ((-1.5, 1.5), (-1.5, 1.5)), cfg.grid, levels=np.linspace(-3, 3, 25))
        ax.plot(0, 0, "k+", ms=12, mew=2)
        for k, (opt_name, path, steps) in enumerate(runs):
            ax.plot(path[:, 0], path[:, 1], "-", lw=1.2, color=f"C{k}")
            ax.plot(*path[-1], "o", ms=4, color=f"C{k}")
        ax.plot(*x0, "ks", ms=5)
        if j == 0:
            ax.axhline(1.0, color="0.3", lw=0.8, ls=(0, (6, 3)))
            ax.axhline(-1.0, color="0.3", lw=0.8, ls=(0, (6, 3)))
        else:
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(t), np.sin(t), color="0.3", lw=0.8, ls=(0, (6, 3)))
        ax.set_title(f"{name}\npaths from {tuple(x0)} (square) to escape (dots)\n"
                     f"dashed: {when}; colours: legend below", fontsize=9.5)
        ax.set_aspect("equal")
        ax = axes[1, j]
        for k, (opt_name, path, steps) in enumerate(runs):
            size = np.abs(path[:, 1]) if j == 0 else np.hypot(path[:, 0], path[:, 1])
            ax.semilogy(np.arange(len(path)), size, color=f"C{k}",
                        label=f"{opt_name}: {steps if steps else f'>{MAX_STEPS}'} steps")
        ax.axhline(1.0, color="0.3", lw=0.8, ls=(0, (6, 3)), label=f"escape: {when}")
        ax.set_xlabel("step")
        ax.set_ylabel("|y|" if j == 0 else "|(x, y)|, distance from the saddle")
        ax.set_title(f"{name}: steps to escape (lr = {LR:g})", fontsize=10)
        legend_outside(ax, where="below", ncol=2, fontsize=7)
    figs.save(fig, "08_saddle.png")


def _animation(figs, cfg, result):
    """08_saddle.gif: the runs on x^2 - y^2 moving together, frames at steps spaced
    geometrically (the fast ones escape in tens of steps, Adagrad in over a thousand)."""
    name, f, x0, when, runs = result
    fig, axes = figs.new(1, 1, (6.4, 4.6))
    ax = axes[0, 0]
    contour(ax, f, ((-1.5, 1.5), (-1.5, 1.5)), min(cfg.grid, 120),
            levels=np.linspace(-3, 3, 25))
    ax.plot(0, 0, "k+", ms=12, mew=2)
    for y in (1.0, -1.0):
        ax.axhline(y, color="0.3", lw=0.8, ls=(0, (6, 3)))
    lines, dots = [], []
    for k, (opt_name, path, steps) in enumerate(runs):
        lines.append(ax.plot([], [], "-", lw=1.2, color=f"C{k}",
                             label=f"{opt_name} (escapes at step "
                                   f"{steps if steps else f'>{MAX_STEPS}'})")[0])
        dots.append(ax.plot([], [], "o", ms=5, color=f"C{k}")[0])
    legend_outside(ax, fontsize=7)
    last = max(len(path) for _, path, _ in runs) - 1
    frames = np.unique(np.geomspace(1, last, 8 if cfg.quick else 24).astype(int))

    def draw(i):
        t = frames[i]
        for line, dot, (_, path, _) in zip(lines, dots, runs):
            p = path[: t + 1]
            line.set_data(p[:, 0], p[:, 1])
            dot.set_data(p[-1:, 0], p[-1:, 1])
        ax.set_title(f"{name}, lr = {LR:g}: step {t}")

    figs.animate(fig, "08_saddle.gif", len(frames), draw, fps=6)
