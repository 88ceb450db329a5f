"""The textbook optimization experiments, runnable: ``python -m fusedopt demo [--out DIR]``.

1. Learning rate on a quadratic (gradient descent, eigencomponents, preconditioning).
2. GD vs Adam (and Newton, L-BFGS) on Rosenbrock, Rastrigin and Ackley.
3. Eight optimizers training an MLP on scikit-learn's handwritten digits.
4. Learning-rate schedules, and their effect on item 3's SGD.
5. Exponentially weighted averages, with and without bias correction.
6. Multi-start L-BFGS from Latin-hypercube points on Rastrigin and Ackley in 2-D and 10-D.

Each experiment prints its tables (also written to ``DIR/tables.txt``) and writes PNG figures
to ``DIR`` (default ``demo_out/``). Needs the ``demo`` extra: matplotlib (figures; without it
the tables are still printed), scikit-learn (the digits, items 3-4), SciPy (Latin hypercube,
and L-BFGS-B where ``fusedopt.lbfgs`` is absent), tqdm (progress bar; a plain one otherwise).
``--quick`` runs everything with small iteration counts in seconds (used by the tests).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import functions as F
from . import init, optim, schedules
from .newton import newton, preconditioned_gd
from .sampling import default_minimizer, latin_hypercube, multistart

__all__ = ["main", "run", "Table", "EXPERIMENTS"]

EXPERIMENTS = {
    1: "learning rate on a quadratic",
    2: "GD vs Adam on Rosenbrock, Rastrigin, Ackley",
    3: "optimizers on an MLP (digits)",
    4: "learning-rate schedules",
    5: "exponentially weighted averages",
    6: "multi-start L-BFGS",
}


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    quick: bool
    seed: int = 0
    gd_steps: int = 50                 # item 1
    iters: int = 10_000                # item 2
    epochs: int = 30                   # items 3-4
    batch: int = 32
    eval_every: int = 5                # validation loss every this many iterations
    threshold: float = 0.15            # validation loss threshold of item 3's table
    ms_starts: tuple = ((2, 100), (10, 50))   # item 6: (dimension, starts per run)
    ms_runs: int = 5
    grid: int = 300                    # contour grid resolution
    dpi: int = 110

    @classmethod
    def make(cls, quick, seed=0):
        if quick:
            return cls(quick=True, seed=seed, iters=300, epochs=2, eval_every=5,
                       ms_starts=((2, 6), (10, 4)), ms_runs=1, grid=60, dpi=60)
        return cls(quick=False, seed=seed)


# -- tables ----------------------------------------------------------------------------------
def _fmt(v):
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == 0:
            return "0"
        return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(v, np.ndarray):
        return "(" + ", ".join(_fmt(float(t)) for t in v.ravel()) + ")"
    return str(v)


class Table:
    """A printed table: a title, column headers, rows of values (formatted on output)."""

    def __init__(self, title, headers, note=None):
        self.title, self.headers, self.rows, self.note = title, list(headers), [], note

    def add(self, *row):
        if len(row) != len(self.headers):
            raise ValueError(f"row has {len(row)} cells, table {self.title!r} has "
                             f"{len(self.headers)} columns")
        self.rows.append(list(row))

    def format(self):
        cells = [self.headers] + [[_fmt(v) for v in r] for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.headers))]
        line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w)      # noqa: E731
                                   for i, (c, w) in enumerate(zip(r, widths)))
        out = [self.title, "=" * len(self.title), line(self.headers),
               "  ".join("-" * w for w in widths)]
        out += [line(r) for r in cells[1:]]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def column(self, header):
        i = self.headers.index(header)
        return [r[i] for r in self.rows]


# -- progress bar ----------------------------------------------------------------------------
class _PlainBar:
    """A minimal stand-in for tqdm: one line on stderr, redrawn in place."""

    def __init__(self, total, desc):
        self.total, self.n, self.desc, self.t0 = total, 0, desc, time.perf_counter()
        self._draw()

    def set_description(self, desc):
        self.desc = desc
        self._draw()

    def update(self, k=1):
        self.n += k
        self._draw()

    def _draw(self):
        frac = self.n / self.total if self.total else 1.0
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r{self.desc[:40]:<40} [{bar:<30}] {self.n}/{self.total} "
                         f"{time.perf_counter() - self.t0:5.1f}s")
        sys.stderr.flush()

    def clear(self):
        sys.stderr.write("\r" + " " * 100 + "\r")

    def close(self):
        sys.stderr.write("\n")


class _NullBar(_PlainBar):
    """Counts, draws nothing (``--no-progress``)."""

    def _draw(self):
        pass

    def clear(self):
        pass

    def close(self):
        pass


def _progress(total, desc, enabled=True):
    if not enabled:
        return _NullBar(total, desc)
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(total, desc)
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True)


# -- figures ---------------------------------------------------------------------------------
class _Figures:
    """Writes PNGs with matplotlib's object-oriented API (no pyplot, no global backend)."""

    def __init__(self, out, dpi):
        self.out, self.dpi, self.written = out, dpi, []
        try:
            from matplotlib.figure import Figure
        except ImportError:
            self.Figure = None
        else:
            self.Figure = Figure

    @property
    def enabled(self):
        return self.Figure is not None

    def new(self, nrows=1, ncols=1, size=(6.4, 4.8)):
        fig = self.Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        return fig, axes

    def save(self, fig, name):
        path = os.path.join(self.out, name)
        fig.savefig(path, dpi=self.dpi)
        self.written.append(path)


def _contour(ax, fun, box, grid, *, log=False, levels=30):
    (x0, x1), (y0, y1) = box
    X, Y = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    Z = fun.value(np.stack([X, Y], axis=-1))
    if log:
        Z = np.log10(Z - Z.min() + 1e-3)
    ax.contour(X, Y, Z, levels=levels, linewidths=0.6, cmap="viridis")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _path(ax, path, label, **kw):
    """Draw a trajectory up to its first non-finite (diverged) point; long ones thinned to
    their first 500 points and 1500 more spread evenly (the picture is the same)."""
    p = np.asarray(path)
    ok = np.all(np.isfinite(p), axis=1) & np.all(np.abs(p) < 1e6, axis=1)
    p = p[: np.argmin(ok) if not ok.all() else len(p)]
    if len(p) > 2000:
        p = p[np.unique(np.r_[np.arange(500), np.linspace(0, len(p) - 1, 1500).astype(int)])]
    if len(p):
        ax.plot(p[:, 0], p[:, 1], ".-" if len(p) <= 200 else "-", ms=2, lw=0.8, label=label,
                **kw)


def _first_below(values, level, every=1):
    """``every`` times the index of the first value below ``level`` (the iteration count when
    ``values[i]`` was taken after ``i * every`` iterations), else None."""
    hit = np.flatnonzero(np.asarray(values) < level)
    return int(hit[0]) * every if hit.size else None


# -- 1. learning rate on a quadratic ---------------------------------------------------------
def quadratic_problem():
    """``f = 1/2 x^T Q x``, ``Q = R diag(1, 6) R^T``, R the rotation by pi/16 (Hessian Q)."""
    t = math.pi / 16
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    Q = R @ np.diag([1.0, 6.0]) @ R.T
    return F.quadratic(Q, scale=0.5), R, np.array([1.0, 6.0])


def exp_quadratic(cfg, figs, bar):
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
        runs.append((f"GD lr={lr:.4g}", path))
        bar.update()
    # Preconditioning: Jacobi (diagonal) and the exact inverse.
    d = 1 / np.diag(f.Q)
    mu = np.linalg.eigvals(np.diag(d) @ f.Q).real
    lr_d = 2 / (mu.min() + mu.max())
    pre = [("GD, P = diag(Q)^-1", d, lr_d, np.abs(1 - lr_d * np.sort(mu))),
           ("GD, P = Q^-1", np.linalg.inv(f.Q), 1.0, np.zeros(2))]
    for name, P, lr, rates in pre:
        r = preconditioned_gd(f.value_and_grad, x0, P, lr=lr, maxiter=cfg.gd_steps, gtol=0.0)
        first = _first_below(r.fvals, 1e-20)
        tab.add(name, lr, rates[0], rates[1], f.value(x0), r.fun, np.linalg.norm(r.x),
                f"f < 1e-20 after {first} step(s)" if first is not None else "converges")
        runs.append((name, r.path))
        bar.update()
    if figs.enabled:
        fig, ax = figs.new(1, 1, (7, 5))
        ax = ax[0, 0]
        _contour(ax, f, ((-10, 10), (-6, 6)), cfg.grid, levels=np.geomspace(0.05, 300, 25))
        for name, p in runs:
            _path(ax, p, name)
        ax.set_title("Gradient descent on 1/2 x^T Q x: trajectories")
        ax.legend(fontsize=7)
        figs.save(fig, "01_quadratic_trajectories.png")
        fig, axes = figs.new(1, 2, (5.5, 4))
        for (name, p), style in zip(runs[:5], ("-", "--", "-.", ":", "-")):
            z = p @ R                         # coordinates in the eigenbasis
            for k, (ax, l) in enumerate(zip(axes[0], lam)):
                ax.semilogy(0.5 * l * z[:, k] ** 2 + 1e-300, style, label=name)
        for k, (ax, l) in enumerate(zip(axes[0], lam)):
            ax.set_title(f"loss of eigencomponent {k + 1} (lambda = {l:g})")
            ax.set_xlabel("step")
            ax.set_ylim(1e-30, 1e6)
            ax.legend(fontsize=7)
        figs.save(fig, "01_quadratic_eigencomponents.png")
    return [tab]


# -- 2. GD vs Adam on the test functions -----------------------------------------------------
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


def exp_testfunctions(cfg, figs, bar):
    minimize, mlabel = default_minimizer()
    tab = Table(f"2. First-order methods ({cfg.iters} iterations, float64, eps 1e-7) vs Newton "
                f"and L-BFGS on 2-D test functions",
                ["function", "start", "method", "final x", "final f", "iters", "first f<1e-6",
                 "diverged at"],
                note=f"L-BFGS: {mlabel}. 'iters' is the iteration count run (first-order "
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
                        _first_below(fv[:, j], 1e-6), int(bad[0]) if bad.size else None)
            paths[name] = traj
            bar.update()
        for j, x0 in enumerate(X0):
            with np.errstate(all="ignore"):
                r = newton(fun.value_and_grad, x0, fun.hess, maxiter=100)
            tab.add(fun.name, x0, "Newton", r.x, r.fun, r.nit, _first_below(r.fvals, 1e-6),
                    r.nit if r.status == 3 else None)
            paths.setdefault("Newton", []).append(r.path)
            seen = []                          # every point L-BFGS evaluates, line search too

            def recorded(x, seen=seen):
                f, g = fun.value_and_grad(x)
                seen.append((np.array(x, dtype=np.float64), float(f)))
                return f, g

            with np.errstate(all="ignore"):
                r = minimize(recorded, x0.copy())
            first = _first_below([f for _, f in seen], 1e-6)
            tab.add(fun.name, x0, "L-BFGS", np.asarray(r.x), float(r.fun), int(r.nit),
                    None if first is None else f"eval {first + 1}",
                    None if np.isfinite(r.fun) else "yes")
            paths.setdefault("L-BFGS (evaluations)", []).append(np.array([x for x, _ in seen]))
        bar.update()
        if figs.enabled:
            fig, axes = figs.new(1, len(X0), (5, 4.2))
            for j, x0 in enumerate(X0):
                ax = axes[0, j]
                _contour(ax, fun, box, cfg.grid, log=log)
                for name, traj in paths.items():
                    _path(ax, traj[j] if isinstance(traj, list) else traj[:, j], name)
                ax.plot(*fun.minimizer(2), "k*", ms=10)
                ax.set_title(f"{fun.name} from {tuple(float(v) for v in x0)}")
                ax.legend(fontsize=6)
            figs.save(fig, f"02_{fun.name}.png")
    return [tab]


# -- 3. an MLP on the digits -----------------------------------------------------------------
def load_digits_split(seed=0, dtype=np.float32):
    """scikit-learn's 8x8 digits (1797 images, shipped with it), scaled to [0, 1] and split
    80/20 into train and validation sets, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    return train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)


def mlp_init(rng, sizes=(64, 64, 32, 10), dtype=np.float32):
    """He-normal weights, zero biases: [W1, b1, W2, b2, W3, b3]."""
    params = []
    for m, n in zip(sizes[:-1], sizes[1:]):
        params += [init.he_normal(rng, (m, n), dtype=dtype), np.zeros(n, dtype)]
    return params


def mlp_loss_and_grads(params, X, y):
    """Mean softmax cross-entropy of the ReLU MLP and the gradients of every param."""
    n_layers = len(params) // 2
    acts, pre = [X], []
    for i in range(n_layers):
        W, b = params[2 * i], params[2 * i + 1]
        z = acts[-1] @ W + b
        pre.append(z)
        if i < n_layers - 1:
            acts.append(np.maximum(z, 0))
    z = pre[-1]
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    m = X.shape[0]
    loss = float(np.mean(lse - z[np.arange(m), y]))
    dz = np.exp(z - lse[:, None])
    dz[np.arange(m), y] -= 1
    dz /= m
    grads = [None] * len(params)
    for i in reversed(range(n_layers)):
        grads[2 * i] = acts[i].T @ dz
        grads[2 * i + 1] = dz.sum(axis=0)
        if i:
            dz = (dz @ params[2 * i].T) * (pre[i - 1] > 0)
    return loss, grads


def mlp_predict(params, X):
    a = X
    for i in range(len(params) // 2):
        a = a @ params[2 * i] + params[2 * i + 1]
        if i < len(params) // 2 - 1:
            a = np.maximum(a, 0)
    return a.argmax(axis=1)


def _blas_one_thread():
    """Matrices this small run fastest on one BLAS thread (threads only add overhead, and
    much more on a busy machine). threadpoolctl comes with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _train(cfg, data, make_opt, params0, order):
    with _blas_one_thread():
        return _train_loop(cfg, data, make_opt, params0, order)


def _train_loop(cfg, data, make_opt, params0, order):
    Xtr, Xva, ytr, yva = data
    params = [p.copy() for p in params0]
    opt = make_opt(params)
    train_loss, val_loss = [], [mlp_loss_and_grads(params, Xva, yva)[0]]
    it = 0
    with np.errstate(all="ignore"):
        for idx in order:
            for s in range(0, len(idx), cfg.batch):
                b = idx[s:s + cfg.batch]
                loss, grads = mlp_loss_and_grads(params, Xtr[b], ytr[b])
                opt.step(grads)
                train_loss.append(loss)
                it += 1
                if it % cfg.eval_every == 0:
                    val_loss.append(mlp_loss_and_grads(params, Xva, yva)[0])
    acc = float(np.mean(mlp_predict(params, Xva) == yva))
    return np.array(train_loss), np.array(val_loss), acc


MLP_OPTIMIZERS = (
    ("SGD", 0.1, lambda p: optim.SGD(p, lr=0.1)),
    ("momentum", 0.05, lambda p: optim.SGD(p, lr=0.05, momentum=0.9)),
    ("Nesterov", 0.05, lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    ("Adagrad", 0.05, lambda p: optim.Adagrad(p, lr=0.05)),
    ("RMSprop", 1e-3, lambda p: optim.RMSprop(p, lr=1e-3)),
    ("Adam", 1e-3, lambda p: optim.Adam(p, lr=1e-3)),
    ("AdamW", 1e-3, lambda p: optim.AdamW(p, lr=1e-3, weight_decay=1e-2)),
    ("Adamax", 2e-3, lambda p: optim.Adamax(p, lr=2e-3)),
)


def _mlp_setup(cfg):
    data = load_digits_split(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    params0 = mlp_init(rng)
    order = [rng.permutation(len(data[0])) for _ in range(cfg.epochs)]
    return data, params0, order


def _mlp_row(tab, cfg, name, lr, res):
    tl, vl, acc = res
    tab.add(name, lr, _first_below(vl, cfg.threshold, cfg.eval_every), float(tl[-1]),
            float(vl[-1]), acc)


def exp_mlp(cfg, figs, bar, setup):
    data, params0, order = setup
    n_iter = sum(math.ceil(len(o) / cfg.batch) for o in order)
    tab = Table(f"3. MLP 64-64-32-10 (ReLU, He init) on the digits: {len(data[0])} train / "
                f"{len(data[1])} validation, batch {cfg.batch}, {cfg.epochs} epochs = "
                f"{n_iter} iterations, same init and batches for all",
                ["optimizer", "lr", f"first iter val loss < {cfg.threshold:g}",
                 "final train loss", "final val loss", "val accuracy"],
                note=f"Validation loss evaluated every {cfg.eval_every} iterations; "
                     f"momentum/Nesterov: SGD with momentum 0.9; AdamW: weight decay 1e-2.")
    curves = {}
    for name, lr, make in MLP_OPTIMIZERS:
        res = _train(cfg, data, make, params0, order)
        _mlp_row(tab, cfg, name, lr, res)
        curves[name] = res
        bar.update()
    if figs.enabled:
        fig, axes = figs.new(1, 2, (6, 4.2))
        for name, (tl, vl, _) in curves.items():
            k = max(1, len(tl) // 100)
            smooth = np.convolve(tl, np.ones(k) / k, mode="valid")
            axes[0, 0].semilogy(np.arange(len(smooth)) + k, smooth, label=name)
            axes[0, 1].semilogy(np.arange(len(vl)) * cfg.eval_every, vl, label=name)
        axes[0, 0].set_title("training loss (moving average)")
        axes[0, 1].set_title("validation loss")
        axes[0, 1].axhline(cfg.threshold, color="k", lw=0.6, ls="--")
        for ax in axes[0]:
            ax.set_xlabel("iteration")
            ax.legend(fontsize=7)
        figs.save(fig, "03_digits_mlp.png")
    return [tab]


# -- 4. learning-rate schedules --------------------------------------------------------------
def epoch_schedules(epochs):
    """The schedules of item 4, as functions of the epoch (lr0 = 0.2)."""
    w = min(3, max(1, epochs - 1))
    return (
        ("constant", schedules.constant(0.2)),
        ("inverse time (decay 1)", schedules.inverse_time_decay(0.2, 1.0)),
        ("exponential (0.9/epoch)", schedules.exponential_decay(0.2, 0.9)),
        ("inverse sqrt", schedules.inverse_sqrt_decay(0.2)),
        ("step (x0.5 every 10)", schedules.step_decay(0.2, 0.5, 10)),
        ("cosine", schedules.cosine_decay(0.2, epochs)),
        (f"warmup {w} + cosine", schedules.join([schedules.linear_warmup(0.2, w),
                                                 schedules.cosine_decay(0.2, epochs - w)],
                                                [w])),
    )


def exp_schedules(cfg, figs, bar, setup):
    data, params0, order = setup
    iters_per_epoch = math.ceil(len(order[0]) / cfg.batch)
    sch = epoch_schedules(cfg.epochs)
    inv = schedules.inverse_time_decay(0.2, 1.0)
    t1 = Table("4a. Inverse-time decay lr = lr0 / (1 + decay * epoch), lr0 = 0.2, decay 1",
               ["epoch", "lr"])
    for e in range(1, 5):
        t1.add(e, inv(e))
    shown = [e for e in (0, 1, 2, 3, 4, 5, 10, 20, 29) if e < max(cfg.epochs, 5)]
    t2 = Table("4b. Learning rate per epoch (schedules of the epoch count, lr0 = 0.2)",
               ["schedule"] + [f"e={e}" for e in shown])
    for name, s in sch:
        t2.add(name, *[s(e) for e in shown])
    t3 = Table(f"4c. SGD on item 3's MLP with each schedule (lr fixed within an epoch), "
               f"{cfg.epochs} epochs",
               ["schedule", "lr0", f"first iter val loss < {cfg.threshold:g}",
                "final train loss", "final val loss", "val accuracy"])
    curves = {}
    for name, s in sch:
        lr = (lambda t, s=s: s(t // iters_per_epoch))
        res = _train(cfg, data, lambda p, lr=lr: optim.SGD(p, lr=lr), params0, order)
        _mlp_row(t3, cfg, name, 0.2, res)
        curves[name] = res
        bar.update()
    if figs.enabled:
        fig, axes = figs.new(1, 2, (6, 4.2))
        e = np.arange(cfg.epochs + 1)
        for name, s in sch:
            axes[0, 0].plot(e, [s(v) for v in e], ".-", label=name)
            vl = curves[name][1]
            axes[0, 1].semilogy(np.arange(len(vl)) * cfg.eval_every, vl, label=name)
        axes[0, 0].set_title("learning rate by epoch")
        axes[0, 0].set_xlabel("epoch")
        axes[0, 1].set_title("SGD validation loss")
        axes[0, 1].set_xlabel("iteration")
        for ax in axes[0]:
            ax.legend(fontsize=7)
        figs.save(fig, "04_schedules.png")
    return [t1, t2, t3]


# -- 5. exponentially weighted averages ------------------------------------------------------
def ewa(series, beta, bias_correction=False):
    """``v_t = beta v_{t-1} + (1 - beta) theta_t`` from ``v_0 = 0``; with bias correction
    ``v_t / (1 - beta^t)`` (Adam's correction of its moment estimates)."""
    v, out = 0.0, np.empty(len(series))
    for t, x in enumerate(series, start=1):
        v = beta * v + (1 - beta) * x
        out[t - 1] = v / (1 - beta ** t) if bias_correction else v
    return out


def exp_ewa(cfg, figs, bar):
    rng = np.random.default_rng(cfg.seed)
    days = np.arange(1, 366)
    truth = 15 + 10 * np.sin(2 * np.pi * (days - 110) / 365)
    temp = truth + 4 * rng.standard_normal(days.size)
    tab = Table("5. Exponentially weighted averages of a noisy daily series (365 days, "
                "seasonal signal + N(0, 4^2) noise)",
                ["beta", "window 1/(1-beta)", "bias corr.", "v day 1", "v day 5",
                 "RMS err days 1-10", "RMS err days 1-50", "RMS err days 200-365"],
                note=f"RMS error against the noise-free signal; the raw series has "
                     f"{float(np.sqrt(np.mean((temp - truth) ** 2))):.3f}. Day 1 value "
                     f"{temp[0]:.3f} (signal {truth[0]:.3f}). Without correction the average "
                     f"starts near 0 and needs ~1/(1-beta) days to catch up; the correction "
                     f"removes that bias, and once beta^t is small the two agree. beta = 0.98 "
                     f"averages ~50 days: smoother, but it lags the seasonal signal.")
    series = {}
    for beta in (0.9, 0.98):
        for bc in (False, True):
            v = ewa(temp, beta, bc)
            series[(beta, bc)] = v
            rms = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))   # noqa: E731
            tab.add(beta, 1 / (1 - beta), bc, v[0], v[4], rms(v[:10], truth[:10]),
                    rms(v[:50], truth[:50]), rms(v[199:], truth[199:]))
    bar.update()
    if figs.enabled:
        fig, ax = figs.new(1, 1, (9, 4.5))
        ax = ax[0, 0]
        ax.plot(days, temp, ".", ms=3, color="0.6", label="daily values")
        ax.plot(days, truth, "k-", lw=0.8, label="signal")
        for (beta, bc), v in series.items():
            ax.plot(days, v, "-" if bc else "--", label=f"beta={beta}" + (" corrected" if bc
                                                                          else ""))
        ax.set_xlabel("day")
        ax.legend(fontsize=7)
        ax.set_title("Exponentially weighted averages")
        figs.save(fig, "05_ewa.png")
    return [tab]


# -- 6. multi-start --------------------------------------------------------------------------
MULTISTART_PROBLEMS = ((F.rastrigin, 5.12), (F.ackley, 32.768))


def exp_multistart(cfg, figs, bar):
    minimize, mlabel = default_minimizer()
    tab = Table("6. Multi-start: Latin-hypercube starts + L-BFGS in the standard box",
                ["function", "dim", "box", "starts/run", "runs", "starts reaching x*",
                 "runs finding x*", "median best f", "time [s]"],
                note=f"Local minimizer: {mlabel}. 'Reaching x*': final max|x - x*| < 1e-3.")
    shown = None
    latin_hypercube(1, [(0.0, 1.0)])           # imports SciPy before the clock starts
    minimize(F.sphere.value_and_grad, np.ones(2))
    for fun, h in MULTISTART_PROBLEMS:
        for d, n in cfg.ms_starts:
            t0 = time.perf_counter()
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
                    time.perf_counter() - t0)
            bar.update()
    if figs.enabled and shown is not None:
        fig, ax = figs.new(1, 1, (6, 5.5))
        ax = ax[0, 0]
        _contour(ax, F.rastrigin, ((-5.12, 5.12), (-5.12, 5.12)), cfg.grid, levels=20)
        for a, b in zip(shown.starts, shown.xs):
            ax.plot([a[0], b[0]], [a[1], b[1]], "-", color="0.5", lw=0.6)
        ax.plot(*shown.starts.T, "o", ms=3, label="Latin-hypercube starts")
        ax.plot(*shown.xs.T, "x", ms=5, label="local minima found")
        ax.plot(0, 0, "k*", ms=12, label="global minimum")
        ax.set_title(f"Multi-start on Rastrigin 2-D ({len(shown.starts)} starts)")
        ax.legend(fontsize=7, loc="upper right")
        figs.save(fig, "06_multistart_rastrigin.png")
    return [tab]


# -- driver ----------------------------------------------------------------------------------
def _units(cfg, which):
    n = {1: 7, 2: sum(sum(1 for _ in _first_configs()) + 1 for _ in PROBLEMS),
         3: len(MLP_OPTIMIZERS), 4: len(epoch_schedules(cfg.epochs)), 5: 1,
         6: len(MULTISTART_PROBLEMS) * len(cfg.ms_starts)}
    return sum(n[k] for k in which)


def _missing(k):
    """The package experiment ``k`` needs and cannot import, else None."""
    import importlib

    needs = {3: "sklearn", 4: "sklearn", 6: "scipy"}.get(k)
    if k == 2 and "fallback" in default_minimizer()[1]:
        needs = "scipy"                     # L-BFGS rows: SciPy's, as fusedopt.lbfgs is absent
    if needs is None:
        return None
    try:
        importlib.import_module(needs)
    except ImportError:
        return {"sklearn": "scikit-learn"}.get(needs, needs)
    return None


def run(out="demo_out", *, quick=False, only=None, seed=0, progress=True, stream=None):
    """Run the experiments ``only`` (default all, numbers 1-6), print their tables to
    ``stream`` (default stdout), write the figures and ``tables.txt`` into ``out``. An
    experiment whose package (scikit-learn, SciPy) is missing is skipped with a note on
    stderr. Returns ``{"tables": {number: [Table, ...]}, "figures": [paths],
    "seconds": {number: s}, "skipped": {number: package}, "progress": (done, total)}``."""
    stream = sys.stdout if stream is None else stream
    which = sorted(set(only)) if only else sorted(EXPERIMENTS)
    bad = [k for k in which if k not in EXPERIMENTS]
    if bad:
        raise ValueError(f"only must name experiments 1-6, got {bad}")
    cfg = Config.make(quick, seed)
    os.makedirs(out, exist_ok=True)
    figs = _Figures(out, cfg.dpi)
    if not figs.enabled:
        print("matplotlib is not installed: tables only, no figures "
              "(pip install 'fusedopt[demo]')", file=sys.stderr)
    skipped = {k: m for k in which if (m := _missing(k)) is not None}
    for k, m in skipped.items():
        print(f"skipping {k}. {EXPERIMENTS[k]}: it needs {m} (pip install 'fusedopt[demo]')",
              file=sys.stderr)
    which = [k for k in which if k not in skipped]
    bar = _progress(_units(cfg, which), "fusedopt demo", enabled=progress)
    tables, seconds, setup = {}, {}, None
    try:
        for k in which:
            bar.set_description(f"{k}. {EXPERIMENTS[k]}")
            t0 = time.perf_counter()
            if k in (3, 4) and setup is None:
                setup = _mlp_setup(cfg)
            fn = {1: exp_quadratic, 2: exp_testfunctions, 3: exp_mlp, 4: exp_schedules,
                  5: exp_ewa, 6: exp_multistart}[k]
            tables[k] = fn(cfg, figs, bar, setup) if k in (3, 4) else fn(cfg, figs, bar)
            seconds[k] = time.perf_counter() - t0
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
    p = argparse.ArgumentParser(prog="python -m fusedopt demo", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
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
            p.error(f"--only must be comma-separated numbers 1-6, got {args.only!r}")
        if any(k not in EXPERIMENTS for k in only):
            p.error(f"--only must name experiments 1-6, got {args.only!r}")
    t0 = time.perf_counter()
    res = run(args.out, quick=args.quick, only=only, seed=args.seed,
              progress=not args.no_progress)
    print(f"\nWrote {len(res['figures'])} figures and tables.txt to {args.out}/ in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
