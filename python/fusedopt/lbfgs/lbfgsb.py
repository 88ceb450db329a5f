"""L-BFGS-B: limited-memory BFGS with bounds (Byrd, Lu, Nocedal & Zhu 1995; Morales & Nocedal
2011), one iteration over a flat vector.

Layer: algorithms (products over the history through ``CompactForm`` and ``CoreVec``; the
elementwise work on the box is NumPy).

An iteration (Byrd et al., section 2):

1. the generalized Cauchy point x^c: the first local minimizer of the quadratic model along the
   projected steepest-descent path x(t) = P(x - t g), its breakpoints taken in increasing order
   from binary heaps (one per block of x, built when the block's first breakpoint is passed,
   under a heap of the blocks by their smallest: never a sort of all n up front, and no heap at
   all when no breakpoint is passed, as in most iterations) and the model's slope and curvature
   updated per breakpoint in O(k^2) (section 4, Algorithm CP); the loop is the kernel
   ``_core.lbfgsb_cauchy_path``, whose last pass (x^c) also takes the fixed set for step 2;
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

from ._vector import CoreVec
from .compact import CompactForm
from .line_search import LineSearch, Point

__all__ = ["BoundedSolver", "first_evaluation", "cauchy_point", "subspace_step", "run"]


def first_evaluation(obj, x, g, vec=CoreVec) -> float:
    """f = obj(x, g) at the start point of a run (L-BFGS or L-BFGS-B); raises ValueError if f or
    the gradient is not finite."""
    f = obj(x, g)
    if not math.isfinite(f):
        raise ValueError(f"fun(x0) returned f = {f}; the starting point must have a finite value")
    if not math.isfinite(vec.amax(g)):
        raise ValueError("fun(x0) returned a non-finite gradient")
    return f


def _f64(a):
    """a as float64 (no copy when it already is)."""
    return np.asarray(a, dtype=np.float64)


def cauchy_point(x, g, box, cf, vec=CoreVec, with_wtd=False, work=None, start=None,
                 scratch=None, fixed=None):
    """The generalized Cauchy point (Byrd et al. 1995, Algorithm CP, as in SciPy's ``cauchy``).

    Returns ``(xc, c, t)``: x^c (a new array), c = W^T (x^c - x) (2k, float64) and t, whose
    entries are >= 0 at the variables free at x^c (the others: at a bound reached on the path,
    held at a bound by the gradient, or fixed by lo == hi). ``with_wtd``: ``(xc, c, t, W^T d)``
    with d the path's first direction (-g but 0 where held; None when the path is empty), for
    ``subspace_step``. Its pass also takes the newest pair's Gram dots (``CompactForm.wt_dots``):
    one pass over the history in all. ``work``: the buffers (d, t, xc) to use instead of new
    arrays; ``start``: (d . d, moving variables without a breakpoint) when d and t in ``work``
    already hold ``vec.cauchy_start_pg``'s output at (x, g) (``BoundedSolver`` takes it with the
    projected-gradient test). ``scratch``: an int64 array of x's size for the path's heap.
    ``fixed`` = (idx, q) (int64 and x's dtype, x's size; idx may be ``scratch``), with
    ``with_wtd``: a fifth item, the fixed set of ``subspace_step`` (``vec.fixed_set(idx, q, t,
    xc, x, g, theta, True)``'s list and q, (idx[:k], q[:k])) taken in the path's last pass, or
    None where the path was not run or the backend has no ``cauchy_path_fixed`` (then the
    caller takes it with ``fixed_set``).
    """
    lo, hi = box.kernel_lo, box.kernel_hi          # None: no finite bound on that side
    d, t, xc = (np.empty_like(x), np.empty_like(x), np.empty_like(x)) if work is None else work
    if start is None:
        dd, _, open_ = vec.cauchy_start_pg(d, t, x, g, lo, hi)   # one pass: d, breakpoints
    else:
        dd, open_ = start
    k2 = 2 * cf.count
    c = np.zeros(k2)
    five = fixed is not None and with_wtd             # the fixed set's item returned
    fused = five and getattr(vec, "cauchy_path_fixed", False)
    if dd == 0.0:                                  # t = -1: held at a bound (or lo == hi)
        vec.copy(xc, x)
        if five:
            return xc, c, t, None, None
        return (xc, c, t, None) if with_wtd else (xc, c, t)
    # SciPy's bnded: every moving variable has a breakpoint
    bounded_path = open_ == 0
    p = cf.wt_dot(d)
    wtd = p.copy()                                 # the path updates p in place
    theta = cf.theta
    mid = cf.middle()
    f1 = -dd
    f2 = -theta * f1 - float(p @ (mid @ p))
    path = (xc, d, t, x, lo, hi, cf.s, cf.y, cf.order(), theta, np.ascontiguousarray(mid),
            p.tolist(), c.tolist(), f1, f2, bounded_path)
    # the kernel marks each variable passed on the path: t = -1
    if fused:                    # the fixed set from the path's last pass (q 0 where held)
        idx, q = fixed
        _, p, c, k = vec.cauchy_path(*path, scratch=scratch, fixed=(idx, q, g, True))
        return xc, np.asarray(c), t, wtd, (idx[:k], q[:k])
    _, p, c = vec.cauchy_path(*path, scratch=scratch)
    if five:
        return xc, np.asarray(c), t, wtd, None
    return (xc, np.asarray(c), t, wtd) if with_wtd else (xc, np.asarray(c), t)


def subspace_step(x, g, box, cf, xc, c, t, vec=CoreVec, wtd=None, fixed=None, work=None,
                  fixed_q=None, xbar_needed=True):
    """The end point xbar of the search direction d = xbar - x: the minimizer of the model over
    the free variables from x^c (Byrd et al., section 5.1), projected on the box (Morales &
    Nocedal 2011); when the projected point is not a descent direction, the minimizer truncated
    to the box along the line from x^c instead. The free variables are those with t >= 0 (t as
    ``cauchy_point`` leaves it; None: all free). Returns a new array.

    With Z the free variables and A the fixed ones, the reduced gradient is
    r = Z^T (q - W M c), q = g + theta (x^c - x), and its products with W are assembled without a
    pass over the history: W^T Z Z^T q = W^T g + theta c - W_A^T q_A and W^T Z Z^T W = W^T W -
    W_A^T W_A, both over A from one gathered pass (``gram_w_at``); W^T g is one pass of its own,
    except after ``cauchy_point``, whose W^T d (``wtd``, d = -g but 0 on the variables H held at
    the start) gives W^T g = -W^T d + W_H^T g_H; on H, x^c = x and q = g, so the held part
    cancels: W^T Z Z^T q = -W^T d + theta c - W_A^T q' with q' = q but 0 where x^c = x (H), no
    pass and no cancellation over H. The step itself,
    du = -r / theta - W v / theta^2 = W (M c / theta - v / theta^2) - (g / theta + x^c - x) on the
    free variables, is one fused pass (``subspace_direct_d``), which also writes d = xbar - x.
    Returns ``(xbar, gd, tmax)``: gd = g . d (the bits of ``vec.dot``) and tmax the step from x
    to the box along d (``Box.max_step``'s bits), both from that pass, or ``(xbar, None, None)``
    when the point was truncated (d not written).

    ``fixed``: ``numpy.flatnonzero(t < 0)`` when the caller has it; ``fixed_q``: (that list, q
    over it, 0 where held) from ``vec.fixed_set`` instead. ``work``: the buffers (xbar, du, d)
    to use instead of new arrays. ``xbar_needed=False``: the pass writes d only, and xbar is
    returned (as None) only when the point was truncated."""
    theta = cf.theta
    mid = cf.middle()
    mc = mid @ c
    wtq = (cf.wt_dot(g) if wtd is None else -wtd) + theta * c
    gram = cf.gram_w()
    if t is not None:
        if fixed_q is not None:
            fixed, q = fixed_q
        elif fixed is None:
            fixed = np.flatnonzero(t < 0)
        if vec.any(fixed.size):                    # sharded: on any rank (a collective)
            if fixed_q is None:
                step = xc[fixed] - x[fixed]
                q = g[fixed] + x.dtype.type(theta) * step
                if wtd is not None:
                    q[step == 0] = 0               # held from the start: in -W^T d already
            gram_a, wtq_a = cf.gram_w_at(fixed, q)
            gram = gram - gram_a
            wtq = wtq - wtq_a
    wtr = wtq - gram @ mc
    k2 = gram.shape[0]
    # (theta I - A M A^T)^{-1} = I/theta + A (I - M A^T A / theta)^{-1} M A^T / theta^2
    v = np.linalg.solve(np.eye(k2) - (mid @ gram) / theta, mid @ wtr)
    a = mc / theta - v / (theta * theta)
    xbar, du, d = (np.empty_like(x), np.empty_like(x), np.empty_like(x)) if work is None \
        else work
    if xbar_needed:
        gd, tmax = cf.subspace_direct_d(xbar, du, d, a, xc, x, g, t, box)
    else:                                          # d only; xbar, du again if truncated
        gd, tmax = cf.subspace_direct_d(None, None, d, a, xc, x, g, t, box)
        if gd <= 0.0:
            return None, gd, tmax
        cf.subspace_direct_d(xbar, du, d, a, xc, x, g, t, box)
    if gd <= 0.0:
        return xbar, gd, tmax
    alpha = min(1.0, box.max_step(xc, du))
    box.step(xbar, xc, alpha, du)
    return xbar, None, None


class BoundedSolver:
    """The state of an L-BFGS-B run over a flat vector: x, f, g, the compact form.

    ``iterate()`` takes one iteration and returns None, or the message of a failure (after the
    one restart with the memory cleared). The box is a ``bounds.Box``. Trial points are written
    to one of two slots (x, g), so that the best point of a line search is never copied."""

    def __init__(self, objective, x, box, m, maxls=20, vec=CoreVec):
        self.obj = objective
        self.box = box
        self.vec = vec
        n, dt = x.size, x.dtype
        self.x = x
        self.g = vec.empty(n, dt)
        self.d = vec.empty(n, dt)
        self.slots = [(vec.empty(n, dt), vec.empty(n, dt)) for _ in range(2)]
        self.cf = CompactForm(n, m, dt, vec)
        self.nit = 0
        self.f = math.nan
        self.f_prev = math.nan
        self.skipped = 0
        self._search = LineSearch(self._evaluate)
        self._search.c1 = 1e-3                # SciPy's (dcsrch ftol)
        self._search.max_evals = maxls
        self._pgnorm = None                   # (key of the point, its projected-gradient norm)
        self._gd = None                       # g . d when the direction's pass took it
        self._tmax = None                     # the step to the box along d, when it took it
        # the Cauchy point's d and t (taken with the projected-gradient test), x^c, xbar, du
        self._work = [vec.empty(n, dt) for _ in range(5)]
        # the fixed set's index lists (two: the compact form keeps the last one it was given)
        # and q over it (``vec.fixed_set``), allocated at the first use
        self._fixed = None
        # f and g . d from one pass where the objective copies the gradient (one process)
        self._with_dot = getattr(objective, "evaluate_dot", None) if vec is CoreVec else None
        self._start = None                    # (key, d . d, unbounded count) in _work[0:2]

    def evaluate_start(self):
        self.f = first_evaluation(self.obj, self.x, self.g, self.vec)
        self._pgnorm = None

    def projected_gradient_norm(self) -> float:
        """max |P(x - g) - x| at the current point (taken once per iterate: the run's stopping
        test and its caller's both ask). With bounds, its pass is the next Cauchy point's start
        (``cauchy_start_pg``), kept for ``_direction``."""
        key = (self.nit, id(self.x), id(self.g))
        if self._pgnorm is None or self._pgnorm[0] != key:
            if self.box.constrained:
                d, t = self._work[0], self._work[1]
                dd, pg, open_ = self.vec.cauchy_start_pg(d, t, self.x, self.g,
                                                         self.box.kernel_lo, self.box.kernel_hi)
                self._start = (key, dd, open_)
            else:
                pg = self.box.projected_gradient_norm(self.x, self.g)
            self._pgnorm = (key, pg)
        return self._pgnorm[1]

    def _evaluate(self, t, slot):
        xt, gt = self.slots[slot]
        if self.box.constrained:              # projected: exact feasibility under rounding
            self.box.step(xt, self.x, t, self.d)
        else:
            self.vec.axpby(xt, 1.0, self.x, t, self.d)
        if self._with_dot is not None:        # the gradient's copy takes g . d
            f, dg = self._with_dot(xt, gt, self.d)
            dg = dg if math.isfinite(f) else math.nan
        else:
            f = self.obj(xt, gt)
            dg = self.vec.dot(gt, self.d) if math.isfinite(f) else math.nan
        return Point(t, f, dg, slot)

    def _index_buffer(self):
        """One of two kept int64 buffers of x's size: not the one whose list the compact form
        keeps from its last Gram call (the Cauchy path's heap, then the fixed set, use it)."""
        if self._fixed is None:
            n = self.x.size
            self._fixed = ([np.empty(n, np.int64), np.empty(n, np.int64)],
                           self.vec.empty(n, self.x.dtype))
        lists = self._fixed[0]
        return lists[1] if self.cf.keeps(lists[0]) else lists[0]

    def _fixed_set(self, t, xc, wtd):
        """(idx, q): the variables with t < 0 and q = g + theta (x^c - x) over them (0 where held
        from the start, with ``wtd``), one pass into kept buffers (``_index_buffer``)."""
        idx, q = self._index_buffer(), self._fixed[1]
        k = self.vec.fixed_set(idx, q, t, xc, self.x, self.g, self.cf.theta, wtd is not None)
        return idx[:k], q[:k]

    def _direction(self):
        """d = xbar - x (Cauchy point, then subspace minimization)."""
        cf, box, x, g, vec = self.cf, self.box, self.x, self.g, self.vec
        self._gd = self._tmax = None
        start, self._start = self._start, None     # d and t are rewritten by the path
        if start is not None and start[0] != (self.nit, id(x), id(g)):
            start = None
        fixed = None
        if not box.constrained and cf.count:
            xc, c, t, wtd = x, np.zeros(2 * cf.count), None, None
        else:
            buf = self._index_buffer()             # the heap's, then the fixed list's
            xc, c, t, wtd, fixed = cauchy_point(
                x, g, box, cf, vec, with_wtd=True, work=self._work[:3],
                start=None if start is None else start[1:], scratch=buf,
                fixed=(buf, self._fixed[1]))
        if cf.count:
            if t is not None and fixed is None:
                fixed = self._fixed_set(t, xc, wtd)
            if t is None or vec.any(fixed[0].size < t.size):   # a free variable (any rank)
                xbar, self._gd, self._tmax = subspace_step(
                    x, g, box, cf, xc, c, t, vec, wtd, fixed_q=fixed,
                    work=(self._work[3], self._work[4], self.d), xbar_needed=False)
                if self._gd is None:                # truncated: d not written by the pass
                    np.subtract(xbar, x, out=self.d)
                return
        np.subtract(xc, x, out=self.d)

    def _search_along(self):
        vec, d = self.vec, self.d
        dg0 = vec.dot(self.g, d) if self._gd is None else self._gd
        if not dg0 < 0.0:
            return None
        if not self.box.constrained:
            tmax = math.inf
        elif self._tmax is not None:
            tmax = self._tmax                 # from the direction's pass
        else:
            tmax = self.box.max_step(self.x, d)
        if self.nit == 0 and self.box.constrained:
            tmax = 1.0
        tmax = max(tmax, 1.0)        # x + d is in the box by construction (rounding aside)
        if self.nit == 0 and not self.box.boxed:
            t1 = min(1.0 / math.sqrt(vec.dot(d, d)), tmax)
        else:
            t1 = 1.0
        cache = []

        def tmin():
            """The step below which no component of x changes (computed only when needed)."""
            if not cache:
                eps = float(np.finfo(d.dtype).eps)
                cache.append(eps * max(1.0, vec.amax(self.x)) / max(vec.amax(d), 1e-300))
            return cache[0]

        return self._search.strong_wolfe(self.f, dg0, t1, tmin, tmax=tmax), dg0

    def iterate(self):
        """One iteration; None on success, else the message of the failure."""
        for _ in range(2):
            try:
                self._direction()
                found = self._search_along()
            except np.linalg.LinAlgError:
                found = None
            if found is not None and found[0] is not None:
                break
            if self.cf.count == 0:
                return ("the line search found no point of sufficient decrease along the "
                        "projected steepest descent (the objective may be non-smooth, noisy or "
                        "non-finite near x, its gradient wrong, or gtol too small for the "
                        "precision)")
            self.cf.clear()
        point, dg0 = found
        vec = self.vec
        xt, gt = self.slots[point.slot]
        # s = x_new - x, y = g_new - g: their dots first, then (accepted) written into the ring
        sy, yy = vec.pair_dots(xt, self.x, gt, self.g)
        eps = float(np.finfo(self.x.dtype).eps)
        if math.isfinite(sy) and math.isfinite(yy) and sy > eps * (-point.t * dg0) and sy > 0:
            self.cf.push_difference(xt, self.x, gt, self.g)
        else:
            self.skipped += 1
        self.slots[point.slot] = (self.x, self.g)
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
