"""L-BFGS-B: limited-memory BFGS with bounds (Byrd, Lu, Nocedal & Zhu 1995; Morales & Nocedal
2011), one iteration over a flat vector.

Layer: algorithms (products over the history through ``CompactForm`` and ``CoreVec``; the
elementwise work on the box is NumPy).

An iteration (Byrd et al., section 2):

1. the generalized Cauchy point x^c: the first local minimizer of the quadratic model along the
   projected steepest-descent path x(t) = P(x - t g), its breakpoints taken in increasing order
   (``Breakpoints``: chunks selected with ``argpartition``, never a sort of all n up front) and
   the model's slope and curvature updated per breakpoint in O(k^2) (section 4, Algorithm CP);
2. subspace minimization over the variables still free at x^c (section 5.1, the direct primal
   method, through the Sherman-Morrison-Woodbury form of the reduced matrix), the minimizer
   projected on the box (Morales & Nocedal 2011) and, if that is not a descent direction,
   truncated to the box instead (the 1995 rule);
3. a strong-Wolfe line search along d = xbar - x, its steps limited to the box (``max_step``),
   the first trial step 1 (1 / ||d|| at the first iteration of an unboxed problem);
4. the pair (s, y) stored unless s . y <= eps * (-t g . d) (SciPy's test); a failed line search
   clears the memory and restarts from the Cauchy point of B = I, once.

With no finite bound and pairs in memory the Cauchy step is skipped (x^c = x, all variables
free), as SciPy does: the iteration is then plain L-BFGS in compact form.
"""
from __future__ import annotations

import math

import numpy as np

from .compact import CompactForm
from .line_search import LineSearch, Point

__all__ = ["BoundedSolver", "Breakpoints", "cauchy_point", "subspace_step", "run"]


class Breakpoints:
    """The breakpoints t_i of the path, handed out in increasing order: each chunk is the
    ``size`` smallest left (``np.argpartition``, O(n)), sorted; the chunk size doubles, so k
    breakpoints cost O(n log k) and no full sort of n happens unless the path crosses them all.
    """

    def __init__(self, t, idx, size=64):
        self.t, self.idx = t, idx    # candidate times and their variable indices
        self.size = size
        self._chunk = []             # (t, index) pairs, ascending, popped from the end reversed

    def __len__(self):
        return len(self._chunk) + self.t.size

    def pop(self):
        """(t_b, b), the smallest breakpoint left."""
        if not self._chunk:
            k = min(self.size, self.t.size)
            if k < self.t.size:
                part = np.argpartition(self.t, k - 1)
                take, rest = part[:k], part[k:]
            else:
                take, rest = np.arange(self.t.size), np.empty(0, np.intp)
            order = take[np.argsort(self.t[take], kind="stable")]
            self._chunk = list(zip(self.t[order].tolist(), self.idx[order].tolist()))[::-1]
            self.t, self.idx = self.t[rest], self.idx[rest]
            self.size *= 2
        return self._chunk.pop()


def cauchy_point(x, g, box, cf):
    """The generalized Cauchy point (Byrd et al. 1995, Algorithm CP, as in SciPy's ``cauchy``).

    Returns ``(xc, c, free)``: x^c (a new array), c = W^T (x^c - x) (2k, float64) and the boolean
    mask of the variables free at x^c (not at a bound reached on the path, not held at a bound
    by the gradient, not fixed by lo == hi).
    """
    theta = cf.theta
    lo, hi = box.lo, box.hi
    at_lo = box.has_lo & (x <= lo)
    at_hi = box.has_hi & (x >= hi)
    held = (at_lo & (g >= 0)) | (at_hi & (g <= 0)) | (lo == hi)
    d = np.where(held, 0, -g).astype(x.dtype)
    xc = x.copy()
    free = ~held
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where((d < 0) & box.has_lo, (x - lo) / g,
                     np.where((d > 0) & box.has_hi, (x - hi) / g, np.inf))
    moving = d != 0
    cand = moving & np.isfinite(t)
    bounded_path = not bool((moving & ~cand).any())   # SciPy's bnded
    idx = np.flatnonzero(cand)
    bp = Breakpoints(t[idx].astype(np.float64), idx)
    k2 = 2 * cf.count
    c = np.zeros(k2)
    if not moving.any():
        return xc, c, free
    mid = cf.middle()
    p = cf.wt_dot(d)
    d64 = d.astype(np.float64)
    f1 = -float(d64 @ d64)
    f2 = -theta * f1 - float(p @ (mid @ p))
    f2_org = f2
    eps = float(np.finfo(np.float64).eps)
    dtm = -f1 / f2
    t_old = 0.0
    while len(bp):
        tj, b = bp.pop()
        dt = tj - t_old
        if dtm < dt:
            break
        db = float(d[b])
        if db > 0:
            zb = float(hi[b]) - float(x[b])
            xc[b] = hi[b]
        else:
            zb = float(lo[b]) - float(x[b])
            xc[b] = lo[b]
        d[b] = 0
        free[b] = False
        f1 = f1 + dt * f2 + db * db - theta * db * zb
        f2 = f2 - theta * db * db
        if k2:
            c += dt * p
            wb = cf.w_row(b)
            v = mid @ wb
            wmc, wmp, wmw = float(c @ v), float(p @ v), float(wb @ v)
            p -= db * wb
            f1 += db * wmc
            f2 += 2.0 * db * wmp - db * db * wmw
        f2 = max(eps * f2_org, f2)
        t_old = tj
        if len(bp):
            dtm = -f1 / f2
        elif bounded_path:
            dtm = 0.0
        else:
            dtm = -f1 / f2
    dtm = max(dtm, 0.0)
    tsum = t_old + dtm
    rest = d != 0
    xc[rest] = x[rest] + (tsum * d[rest].astype(np.float64)).astype(x.dtype)
    box.project(xc, xc)
    if k2:
        c += dtm * p
    return xc, c, free


def subspace_step(x, g, box, cf, xc, c, free):
    """The end point xbar of the search direction d = xbar - x: the minimizer of the model over
    the free variables from x^c (Byrd et al., section 5.1), projected on the box (Morales &
    Nocedal 2011); when the projected point is not a descent direction, the minimizer truncated
    to the box along the line from x^c instead. Returns a new array."""
    theta = cf.theta
    mid = cf.middle()
    wmc = cf.w_times(np.empty_like(x), mid @ c)
    # reduced gradient of the model at x^c: Z^T (g + theta (x^c - x) - W M c)
    r = (g.astype(np.float64) + theta * (xc.astype(np.float64) - x) - wmc)
    r[~free] = 0.0
    fixed = np.flatnonzero(~free)
    gram = cf.gram_w()
    if fixed.size:
        wa = cf.w_rows(fixed)
        gram = gram - wa.T @ wa
    k2 = gram.shape[0]
    # (theta I - A M A^T)^{-1} = I/theta + A (I - M A^T A / theta)^{-1} M A^T / theta^2
    v = mid @ cf.wt_dot(r.astype(x.dtype))
    v = np.linalg.solve(np.eye(k2) - (mid @ gram) / theta, v)
    wv = cf.w_times(np.empty_like(x), v).astype(np.float64)
    du = -r / theta - wv / theta ** 2
    du[~free] = 0.0
    xbar = box.project(np.empty_like(x), xc + du.astype(x.dtype))
    if float(g.astype(np.float64) @ (xbar.astype(np.float64) - x)) <= 0.0:
        return xbar
    alpha = min(1.0, box.max_step(xc, du.astype(x.dtype)))
    out = xc + (alpha * du).astype(x.dtype)
    return box.project(out, out)


class BoundedSolver:
    """The state of an L-BFGS-B run over a flat vector: x, f, g, the compact form.

    ``iterate()`` takes one iteration and returns None, or the message of a failure (after the
    one restart with the memory cleared). The box is a ``bounds.Box``."""

    def __init__(self, objective, x, box, m, maxls=20):
        self.obj = objective
        self.box = box
        self.x = x
        self.g = np.empty_like(x)
        self.cf = CompactForm(x.size, m, x.dtype)
        self.nit = 0
        self.f = math.nan
        self.f_prev = math.nan
        self.skipped = 0
        self._search = LineSearch(self._evaluate)
        self._search.c1 = 1e-3                # SciPy's (dcsrch ftol)
        self._search.max_evals = maxls
        self._trial = None

    def evaluate_start(self):
        self.f = self.obj(self.x, self.g)
        if not math.isfinite(self.f):
            raise ValueError(f"fun(x0) returned f = {self.f}; the starting point must have a "
                             "finite value")
        if not np.isfinite(self.g).all():
            raise ValueError("fun(x0) returned a non-finite gradient")

    def projected_gradient_norm(self) -> float:
        return self.box.projected_gradient_norm(self.x, self.g)

    def _evaluate(self, t, slot):
        xt = self.x + (t * self.d.astype(np.float64)).astype(self.x.dtype) \
            if self.x.dtype != np.float64 else self.x + t * self.d
        self.box.project(xt, xt)
        gt = np.empty_like(self.x)
        f = self.obj(xt, gt)
        self._slots[slot] = (xt, gt)
        dg = float(gt.astype(np.float64) @ self.d) if math.isfinite(f) and \
            np.isfinite(gt).all() else math.nan
        return Point(t, f, dg, slot)

    def _direction(self):
        """d = xbar - x (Cauchy point, then subspace minimization)."""
        cf, box, x, g = self.cf, self.box, self.x, self.g
        if not box.constrained and cf.count:
            xc, c, free = x, np.zeros(2 * cf.count), np.ones(x.size, bool)
        else:
            xc, c, free = cauchy_point(x, g, box, cf)
        if cf.count and free.any():
            xbar = subspace_step(x, g, box, cf, xc, c, free)
        else:
            xbar = xc
        return xbar - x

    def _search_along(self):
        d64 = self.d.astype(np.float64)
        dg0 = float(self.g.astype(np.float64) @ d64)
        if not dg0 < 0.0:
            return None
        tmax = self.box.max_step(self.x, self.d) if self.box.constrained else math.inf
        if self.nit == 0 and self.box.constrained:
            tmax = 1.0
        tmax = max(tmax, 1.0)        # x + d is in the box by construction (rounding aside)
        if self.nit == 0 and not self.box.boxed:
            t1 = min(1.0 / math.sqrt(float(d64 @ d64)), tmax)
        else:
            t1 = 1.0
        eps = float(np.finfo(self.x.dtype).eps)
        dmax = float(np.max(np.abs(d64)))

        def tmin():
            return eps * max(1.0, float(np.max(np.abs(self.x)))) / max(dmax, 1e-300)

        self._slots = [None, None]
        return self._search.strong_wolfe(self.f, dg0, t1, tmin, tmax=tmax), dg0

    def iterate(self):
        """One iteration; None on success, else the message of the failure."""
        for attempt in range(2):
            try:
                self.d = self._direction()
            except np.linalg.LinAlgError:
                self.d = None
            found = self._search_along() if self.d is not None else None
            if found is not None and found[0] is not None:
                break
            if self.cf.count == 0:
                return ("the line search found no point of sufficient decrease along the "
                        "projected steepest descent (the objective may be non-smooth, noisy or "
                        "non-finite near x, its gradient wrong, or gtol too small for the "
                        "precision)")
            self.cf.clear()
        point, dg0 = found
        xt, gt = self._slots[point.slot]
        s = xt.astype(np.float64) - self.x
        y = gt.astype(np.float64) - self.g
        sy = float(s @ y)
        eps = float(np.finfo(self.x.dtype).eps)
        if sy > eps * (-point.t * dg0) and math.isfinite(sy) and sy > 0.0:
            self.cf.push(s.astype(self.x.dtype), y.astype(self.x.dtype), sy)
        else:
            self.skipped += 1
        self.x, self.g = xt, gt
        self.f_prev, self.f = self.f, point.f
        self.nit += 1
        return None


def run(solver, *, maxiter, maxfun, gtol, ftol, after_iteration=None):
    """Iterate ``solver`` (already at its start point) until a stopping rule holds, in SciPy's
    order: the projected gradient at the start; then after each iteration the callback
    (``after_iteration(solver)`` returns True to stop), ``maxiter``, ``maxfun`` (evaluations
    beyond it end the run after the iteration, as SciPy), the projected gradient
    (``max |proj g_i| <= gtol``), the relative reduction
    (``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol``).

    Returns ``(reason, failure)``: reason one of "pgtol", "ftol", "callback", "maxiter",
    "maxfun", "abnormal"; failure the message of an abnormal end (else None).
    """
    if solver.projected_gradient_norm() <= gtol:
        return "pgtol", None
    while True:
        failure = solver.iterate()
        if failure is not None:
            return "abnormal", failure
        if after_iteration is not None and after_iteration(solver):
            return "callback", None
        if solver.nit >= maxiter:
            return "maxiter", None
        if solver.obj.nfev > maxfun:
            return "maxfun", None
        if solver.projected_gradient_norm() <= gtol:
            return "pgtol", None
        if solver.f_prev - solver.f <= ftol * max(abs(solver.f_prev), abs(solver.f), 1.0):
            return "ftol", None
