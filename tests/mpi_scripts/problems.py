"""The problems of the MPI tests and benchmark, each in its split (per-rank) and whole form.

Layer: tests (no fusedopt import; NumPy only).

Data-parallel: ``logreg_part(rank, size)`` returns the rank's part of a regularized logistic
regression (its rows of the data; the regularizer on rank 0). Sharded: ``rosen_part(sl)`` is
the extended Rosenbrock function restricted to the slice ``sl`` of x (slices start at even
indices, so no pair of variables is split).
"""
from __future__ import annotations

import numpy as np

BLOCK = 16384


def logreg_data(n_features=40, n_samples=303, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_samples, n_features)).astype(dtype)
    w_true = rng.standard_normal(n_features)
    b = np.where(a @ w_true + 0.5 * rng.standard_normal(n_samples) > 0, 1.0, -1.0).astype(dtype)
    return a, b


def logreg_fun(a, b, lam):
    """f(w) = sum log(1 + exp(-b_i a_i . w)) + lam / 2 |w|^2 (lam = 0: no regularizer)."""
    def fun(w):
        z = -b * (a @ w)
        f = float(np.logaddexp(0.0, z).sum())
        g = a.T @ (-b / (1.0 + np.exp(-z)))
        if lam:
            f += 0.5 * lam * float(w @ w)
            g = g + lam * w
        return f, g.astype(w.dtype)
    return fun


def logreg_part(rank, size, lam=1e-2, **kw):
    """The rank's part: its rows (np.array_split) and, on rank 0, the regularizer."""
    a, b = logreg_data(**kw)
    rows = np.array_split(np.arange(a.shape[0]), size)[rank]
    return logreg_fun(a[rows], b[rows], lam if rank == 0 else 0.0)


def logreg_whole(lam=1e-2, **kw):
    a, b = logreg_data(**kw)
    return logreg_fun(a, b, lam)


def rosen_x0(n, dtype=np.float64):
    x = np.ones(n, dtype)
    x[0::2] = -1.2
    return x


def rosen(x):
    """Extended Rosenbrock: sum over pairs (x_{2i}, x_{2i+1}) of 100 (x_{2i+1} - x_{2i}^2)^2
    + (1 - x_{2i})^2, and its gradient (x of even length)."""
    u, v = x[0::2], x[1::2]
    r = v - u * u
    f = float((100.0 * r * r + (1.0 - u) ** 2).sum())
    g = np.empty_like(x)
    g[0::2] = -400.0 * u * r - 2.0 * (1.0 - u)
    g[1::2] = 200.0 * r
    return f, g


def rosen_bounds(n):
    """-2 <= x, and x_i <= 0.9 for every fifth i (about a fifth end at the upper bound)."""
    lo = np.full(n, -2.0)
    hi = np.full(n, np.inf)
    hi[0::5] = 0.9
    return lo, hi


def cauchy_case(n, dtype, seed=5):
    """x, g, lo, hi and 3 curvature pairs for a generalized Cauchy point with many
    breakpoints, some variables held at a bound and some fixed (lo == hi)."""
    rng = np.random.default_rng(seed)
    lo = -rng.random(n)
    hi = rng.random(n)
    lo[::7] = -np.inf
    hi[3::11] = np.inf
    hi[5::13] = lo[5::13]
    x = np.clip(rng.standard_normal(n) * 0.5, lo, hi)
    x[1::17] = hi[1::17]
    x[2::19] = lo[2::19]
    x = np.where(np.isfinite(x), x, 0.0)
    g = rng.standard_normal(n) * 3.0
    pairs = []
    for _ in range(3):
        s = rng.standard_normal(n) * 0.1
        pairs.append((s.astype(dtype), (s * (1.0 + rng.random(n))).astype(dtype)))
    return (x.astype(dtype), g.astype(dtype), lo.astype(dtype), hi.astype(dtype), pairs)


def linear(x):
    """f = sum(x), g = 1: unbounded below (a rank's part of f is the sum of its slice)."""
    return float(x.sum()), np.ones_like(x)
