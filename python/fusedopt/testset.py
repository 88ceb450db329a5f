"""Unconstrained test problems of Moré, Garbow & Hillstrom (1981), with their standard starting
points and known minima: the test set on which the stopping rules of ``fusedopt.lbfgs.minimize``
were chosen, and which ``python -m fusedopt bench --rules testset`` runs against SciPy's
L-BFGS-B and torch.optim.LBFGS.

Layer: tools (NumPy only).

Each problem is a sum of squares f(x) = sum_i r_i(x)^2 (MGH's form), written from the paper's
definitions (J. J. Moré, B. S. Garbow, K. E. Hillstrom, "Testing unconstrained optimization
software", ACM TOMS 7 (1981) 17-41; problem numbers are the paper's). The residuals are written
once, for real and complex arguments, and the gradient is the complex-step derivative
``g_j = Im f(x + i h e_j) / h`` with h = 1e-100 (Squire & Trapp 1998): exact to rounding (no
difference is taken, so no cancellation), at the cost of one vectorized complex evaluation of
the n points. The sizes are small (n <= 40), so this costs little next to the solver.

    >>> from fusedopt import testset
    >>> p = testset.PROBLEMS["beale"]
    >>> f, g = p(p.x0)
    >>> round(f, 4), p.fstar
    (14.2031, 0.0)

A run *solves* a problem when its final f is within ``1e-8 * max(1, |f_min|)`` of one of the
problem's minimum values ``fmins``: the global one, or a local one at a finite point that the
literature lists (MGH count a run that ends at a local minimizer as a success, as do we; minima
"at infinity" are not counted). For the zero-residual problems (f* = 0) that is f <= 1e-8, about
x within 1e-4 of the minimizer on a well-scaled problem. Minimum values that are not exact were
recomputed to 10-13 digits (BFGS with gtol = 1e-12 from the point each solver reaches).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Problem", "PROBLEMS", "problems", "solved"]

_H = 1e-100


def _sq(x):
    """x * x (works on complex for the complex step)."""
    return x * x


def _cabs(x):
    """|x| for real x, continued analytically for the complex step: x * sign(Re x)."""
    return x * np.where(np.real(x) < 0, -1.0, 1.0)


class Problem:
    """One test problem: ``residuals(x) -> r`` on x of shape (..., n) (complex allowed), the
    start point ``x0``, the global minimum value ``fstar`` and the other minimum values
    ``fmins`` a run may end at (local minima the paper lists). ``problem(x) -> (f, grad)``."""

    def __init__(self, name, number, x0, residuals, fstar, local=(), note=""):
        self.name = name
        self.number = number
        self.x0 = np.asarray(x0, dtype=np.float64)
        self.n = self.x0.size
        self._residuals = residuals
        self.fstar = float(fstar)
        self.fmins = (self.fstar,) + tuple(float(v) for v in local)
        self.note = note

    def residuals(self, x):
        return self._residuals(x)

    def value(self, x) -> float:
        r = self._residuals(np.asarray(x, dtype=np.float64))
        return float(np.sum(r * r))

    def gradient(self, x):
        """The complex-step gradient (exact to rounding)."""
        x = np.asarray(x, dtype=np.float64)
        pts = x + 1j * _H * np.eye(self.n)
        r = self._residuals(pts)
        return np.imag(np.sum(r * r, axis=-1)) / _H

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        return self.value(x), self.gradient(x)

    def __repr__(self):
        return f"Problem({self.name!r}, MGH #{self.number}, n={self.n}, f*={self.fstar:g})"


def solved(problem, f, rtol=1e-8) -> bool:
    """Whether f is within ``rtol * max(1, |f_min|)`` of one of the problem's minimum values."""
    return bool(math.isfinite(f)) and any(
        abs(f - v) <= rtol * max(1.0, abs(v)) for v in problem.fmins)


# -- the problems ------------------------------------------------------------------------------
def _c(x, i):
    return x[..., i]


def rosenbrock(x):                                   # 1
    return np.stack([10 * (_c(x, 1) - _sq(_c(x, 0))), 1 - _c(x, 0)], -1)


def freudenstein_roth(x):                            # 2
    x1, x2 = _c(x, 0), _c(x, 1)
    return np.stack([-13 + x1 + ((5 - x2) * x2 - 2) * x2,
                     -29 + x1 + ((x2 + 1) * x2 - 14) * x2], -1)


def powell_badly_scaled(x):                          # 3
    x1, x2 = _c(x, 0), _c(x, 1)
    return np.stack([1e4 * x1 * x2 - 1, np.exp(-x1) + np.exp(-x2) - 1.0001], -1)


def brown_badly_scaled(x):                           # 4
    x1, x2 = _c(x, 0), _c(x, 1)
    return np.stack([x1 - 1e6, x2 - 2e-6, x1 * x2 - 2], -1)


def beale(x):                                        # 5
    x1, x2 = _c(x, 0), _c(x, 1)
    y = (1.5, 2.25, 2.625)
    return np.stack([y[i] - x1 * (1 - x2 ** (i + 1)) for i in range(3)], -1)


def jennrich_sampson(x):                             # 6, m = 10
    i = np.arange(1, 11)
    x1, x2 = _c(x, 0)[..., None], _c(x, 1)[..., None]
    return 2 + 2 * i - (np.exp(i * x1) + np.exp(i * x2))


def helical_valley(x):                               # 7
    x1, x2, x3 = _c(x, 0), _c(x, 1), _c(x, 2)
    theta = np.arctan(x2 / x1) / (2 * np.pi) + np.where(np.real(x1) < 0, 0.5, 0.0)
    return np.stack([10 * (x3 - 10 * theta), 10 * (np.sqrt(_sq(x1) + _sq(x2)) - 1), x3], -1)


_BARD_Y = np.array([0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96,
                    1.34, 2.10, 4.39])


def bard(x):                                         # 8
    u = np.arange(1, 16, dtype=np.float64)
    v = 16 - u
    w = np.minimum(u, v)
    x1, x2, x3 = (_c(x, k)[..., None] for k in range(3))
    return _BARD_Y - (x1 + u / (v * x2 + w * x3))


_GAUSS_Y = np.array([0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989, 0.3521,
                     0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009])


def gaussian(x):                                     # 9
    t = (8 - np.arange(1, 16)) / 2
    x1, x2, x3 = (_c(x, k)[..., None] for k in range(3))
    return x1 * np.exp(-x2 * _sq(t - x3) / 2) - _GAUSS_Y


def gulf(x, m=99):                                   # 11
    i = np.arange(1, m + 1)
    t = i / 100
    y = 25 + (-50 * np.log(t)) ** (2 / 3)
    x1, x2, x3 = (_c(x, k)[..., None] for k in range(3))
    return np.exp(-(_cabs(y - x2) ** x3) / x1) - t


def box3d(x, m=10):                                  # 12
    t = 0.1 * np.arange(1, m + 1)
    x1, x2, x3 = (_c(x, k)[..., None] for k in range(3))
    return np.exp(-t * x1) - np.exp(-t * x2) - x3 * (np.exp(-t) - np.exp(-10 * t))


def powell_singular(x):                              # 13 (extended: 22)
    x1, x2, x3, x4 = (x[..., k::4] for k in range(4))
    r = np.stack([x1 + 10 * x2, math.sqrt(5) * (x3 - x4), _sq(x2 - 2 * x3),
                  math.sqrt(10) * _sq(x1 - x4)], -1)
    return r.reshape(r.shape[:-2] + (-1,))


def wood(x):                                         # 14
    x1, x2, x3, x4 = (_c(x, k) for k in range(4))
    return np.stack([10 * (x2 - _sq(x1)), 1 - x1, math.sqrt(90) * (x4 - _sq(x3)), 1 - x3,
                     math.sqrt(10) * (x2 + x4 - 2), (x2 - x4) / math.sqrt(10)], -1)


_KO_Y = np.array([0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323,
                  0.0235, 0.0246])
_KO_U = np.array([4, 2, 1, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])


def kowalik_osborne(x):                              # 15
    x1, x2, x3, x4 = (_c(x, k)[..., None] for k in range(4))
    u = _KO_U
    return _KO_Y - x1 * (u * u + u * x2) / (u * u + u * x3 + x4)


def brown_dennis(x, m=20):                           # 16
    t = np.arange(1, m + 1) / 5
    x1, x2, x3, x4 = (_c(x, k)[..., None] for k in range(4))
    return _sq(x1 + t * x2 - np.exp(t)) + _sq(x3 + x4 * np.sin(t) - np.cos(t))


def biggs_exp6(x, m=13):                             # 18
    t = 0.1 * np.arange(1, m + 1)
    y = np.exp(-t) - 5 * np.exp(-10 * t) + 3 * np.exp(-4 * t)
    x1, x2, x3, x4, x5, x6 = (_c(x, k)[..., None] for k in range(6))
    return x3 * np.exp(-t * x1) - x4 * np.exp(-t * x2) + x6 * np.exp(-t * x5) - y


def watson(x):                                       # 20
    n = x.shape[-1]
    t = np.arange(1, 30) / 29
    j = np.arange(n)
    powers = t[:, None] ** j                                    # (29, n): t^(j-1), j = 1..n
    dpow = np.zeros_like(powers)
    dpow[:, 1:] = j[1:] * t[:, None] ** (j[1:] - 1)             # (j-1) t^(j-2)
    s1 = x @ dpow.T
    s2 = x @ powers.T
    r = s1 - _sq(s2) - 1
    x1, x2 = _c(x, 0)[..., None], _c(x, 1)[..., None]
    return np.concatenate([r, x1, x2 - _sq(x1) - 1], -1)


def ext_rosenbrock(x):                               # 21
    odd, even = x[..., 0::2], x[..., 1::2]
    r = np.stack([10 * (even - _sq(odd)), 1 - odd], -1)
    return r.reshape(r.shape[:-2] + (-1,))


def penalty1(x):                                     # 23
    a = math.sqrt(1e-5)
    return np.concatenate([a * (x - 1), (np.sum(_sq(x), -1) - 0.25)[..., None]], -1)


def penalty2(x):                                     # 24
    n = x.shape[-1]
    a = math.sqrt(1e-5)
    i = np.arange(2, n + 1)
    y = np.exp(i / 10) + np.exp((i - 1) / 10)
    e = np.exp(x / 10)
    mid = a * (e[..., 1:] + e[..., :-1] - y)
    tail = a * (e[..., 1:] - math.exp(-0.1))
    last = np.sum((n - np.arange(n)) * _sq(x), -1) - 1
    return np.concatenate([x[..., :1] - 0.2, mid, tail, last[..., None]], -1)


def variably_dimensioned(x):                         # 25
    n = x.shape[-1]
    s = np.sum(np.arange(1, n + 1) * (x - 1), -1)[..., None]
    return np.concatenate([x - 1, s, _sq(s)], -1)


def trigonometric(x):                                # 26
    n = x.shape[-1]
    i = np.arange(1, n + 1)
    return n - np.sum(np.cos(x), -1)[..., None] + i * (1 - np.cos(x)) - np.sin(x)


def brown_almost_linear(x):                          # 27
    n = x.shape[-1]
    s = np.sum(x, -1)[..., None]
    return np.concatenate([x[..., :-1] + s - (n + 1), (np.prod(x, -1) - 1)[..., None]], -1)


def discrete_boundary(x):                            # 28
    n = x.shape[-1]
    h = 1 / (n + 1)
    t = h * np.arange(1, n + 1)
    pad = np.zeros(x.shape[:-1] + (1,))
    xp = np.concatenate([pad, x, pad], -1)
    return 2 * x - xp[..., :-2] - xp[..., 2:] + h * h * (x + t + 1) ** 3 / 2


def broyden_tridiagonal(x):                          # 30
    pad = np.zeros(x.shape[:-1] + (1,))
    xp = np.concatenate([pad, x, pad], -1)
    return (3 - 2 * x) * x - xp[..., :-2] - 2 * xp[..., 2:] + 1


def broyden_banded(x):                               # 31
    n = x.shape[-1]
    band = np.zeros((n, n))
    for i in range(n):
        for j in range(max(0, i - 5), min(n, i + 2)):
            if j != i:
                band[i, j] = 1.0
    return x * (2 + 5 * _sq(x)) + 1 - (x * (1 + x)) @ band.T


def chebyquad(x):                                    # 35, m = n
    n = x.shape[-1]
    z = 2 * x - 1
    t_prev, t = np.ones_like(z), z
    rows = []
    for i in range(1, n + 1):
        y = 0.0 if i % 2 else -1.0 / (i * i - 1)
        rows.append(np.mean(t, -1) - y)
        t_prev, t = t, 2 * z * t - t_prev
    return np.stack(rows, -1)


_T10 = np.arange(1, 11) / 11                         # problem 28's x0 is t (t - 1)


def _problems():
    ps = [
        Problem("rosenbrock", 1, [-1.2, 1.0], rosenbrock, 0.0),
        Problem("freudenstein_roth", 2, [0.5, -2.0], freudenstein_roth, 0.0, [48.9842536792400]),
        Problem("powell_badly_scaled", 3, [0.0, 1.0], powell_badly_scaled, 0.0),
        Problem("brown_badly_scaled", 4, [1.0, 1.0], brown_badly_scaled, 0.0),
        Problem("beale", 5, [1.0, 1.0], beale, 0.0),
        Problem("jennrich_sampson", 6, [0.3, 0.4], jennrich_sampson, 124.362182355),
        Problem("helical_valley", 7, [-1.0, 0.0, 0.0], helical_valley, 0.0),
        Problem("bard", 8, [1.0, 1.0, 1.0], bard, 8.21487730657e-3),
        Problem("gaussian", 9, [0.4, 1.0, 0.0], gaussian, 1.12793276961e-8),
        Problem("gulf", 11, [5.0, 2.5, 0.15], gulf, 0.0),
        Problem("box3d", 12, [0.0, 10.0, 20.0], box3d, 0.0),
        Problem("powell_singular", 13, [3.0, -1.0, 0.0, 1.0], powell_singular, 0.0),
        Problem("wood", 14, [-3.0, -1.0, -3.0, -1.0], wood, 0.0),
        Problem("kowalik_osborne", 15, [0.25, 0.39, 0.415, 0.39], kowalik_osborne,
                3.07505603849e-4),
        Problem("brown_dennis", 16, [25.0, 5.0, -5.0, -1.0], brown_dennis, 85822.2016263),
        Problem("biggs_exp6", 18, [1.0, 2.0, 1.0, 1.0, 1.0, 1.0], biggs_exp6, 0.0,
                [5.6556499255e-3]),
        Problem("watson_6", 20, np.zeros(6), watson, 2.28767005355e-3),
        Problem("watson_9", 20, np.zeros(9), watson, 1.399760138e-6),
        Problem("ext_rosenbrock_10", 21, np.tile([-1.2, 1.0], 5), ext_rosenbrock, 0.0),
        Problem("ext_powell_12", 22, np.tile([3.0, -1.0, 0.0, 1.0], 3), powell_singular, 0.0),
        Problem("penalty1_10", 23, np.arange(1.0, 11.0), penalty1, 7.08765146709e-5),
        Problem("penalty2_10", 24, np.full(10, 0.5), penalty2, 2.936605374567e-4),
        Problem("variably_dimensioned_10", 25, 1 - np.arange(1, 11) / 10, variably_dimensioned,
                0.0),
        Problem("trigonometric_10", 26, np.full(10, 0.1), trigonometric, 0.0, [2.795056121878e-5]),
        Problem("brown_almost_linear_10", 27, np.full(10, 0.5), brown_almost_linear, 0.0,
                [1.0]),
        Problem("discrete_boundary_10", 28, _T10 * (_T10 - 1), discrete_boundary, 0.0),
        Problem("broyden_tridiagonal_10", 30, np.full(10, -1.0), broyden_tridiagonal, 0.0),
        Problem("broyden_banded_10", 31, np.full(10, -1.0), broyden_banded, 0.0),
        Problem("chebyquad_8", 35, np.arange(1, 9) / 9, chebyquad, 3.516873725678e-3),
        Problem("chebyquad_10", 35, np.arange(1, 11) / 11, chebyquad, 6.503954800882e-3),
    ]
    return {p.name: p for p in ps}


#: name -> Problem, in the paper's order.
PROBLEMS = _problems()


def problems():
    """The problems, in the paper's order."""
    return list(PROBLEMS.values())
