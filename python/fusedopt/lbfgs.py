"""Limited-memory BFGS: a history ring buffer, the fused two-loop recursion and a minimizer.

    >>> import numpy as np
    >>> from fusedopt import lbfgs
    >>> def fun(x):
    ...     return float(x @ x), 2 * x
    >>> res = lbfgs.minimize(fun, np.ones(5))
    >>> res.success, bool(abs(res.x).max() < 1e-5)
    (True, True)

``minimize`` follows ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` (without bounds):
the same stopping rules (``gtol`` on the largest gradient component, ``ftol`` on the relative
reduction of f) and the same result fields. The array work of an iteration (the direction, dots,
the trial point) runs in the C++/OpenMP kernels of ``fusedopt._core`` through a handful of
backend helpers (``_NumpyVec``), with reductions that give the same bits for any thread count
and no BLAS call (two BLAS thread pools fighting over few cores can cost 100x on small vectors).

The history layout is shared with the kernels (and a future CUDA backend): ``History.s`` and
``History.y`` are C-contiguous ``(m, n)`` arrays, ``History.rho`` is float64 ``(m,)``; the pairs
oldest to newest are rows ``(head + k) % m`` for ``k in range(count)``.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks, _core, ops
from .newton import Result as _Result  # a dict readable by attribute, as SciPy's

__all__ = ["History", "two_loop", "minimize", "OptimizeResult", "LBFGS"]


def _float_dtype(name, dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


# ---------------------------------------------------------------------------------------------
# Backend helpers: every vector operation of the minimizer goes through one of these.


class _NumpyVec:
    """Vector operations on flat NumPy arrays, in the C++ kernels (no BLAS, deterministic)."""

    empty = staticmethod(np.empty)

    @staticmethod
    def dot(a, b) -> float:
        return _core.lbfgs_dot(a, b)

    @staticmethod
    def axpby(out, a, x, b, y):
        """out = a * x + b * y (out may be x or y)."""
        _core.lbfgs_axpby(out, a, x, b, y)

    @staticmethod
    def amax(a) -> float:
        return _core.lbfgs_amax(a)

    @staticmethod
    def scale(out, a, x):
        """out = a * x, with a cast to the dtype once (a = 1: an exact copy)."""
        _core.lbfgs_axpby(out, a, x)

    @staticmethod
    def copy(out, x):
        _core.lbfgs_axpby(out, 1.0, x)

    @staticmethod
    def sub_dots(out, a, b, c):
        """out = a - b (out may be a or b); returns (c . out, out . out)."""
        return _core.lbfgs_sub_dots(out, a, b, c)

    @staticmethod
    def direction(out, grad, history) -> float:
        """out = -H grad; returns grad . out."""
        return ops.lbfgs_direction_(out, grad, history)


# ---------------------------------------------------------------------------------------------
# The history


class History:
    """The last ``m`` curvature pairs ``(s, y)`` of L-BFGS in a ring buffer.

    Attributes
    ----------
    s, y : ndarray, shape (m, n), C-contiguous, of ``dtype``
        The pairs; oldest to newest they are rows ``(head + k) % m`` for ``k in range(count)``.
    rho : ndarray, float64, shape (m,)
        ``1 / (s . y)`` of each row (dots in float64).
    head, count : int
        Ring index of the oldest pair; number of valid pairs (``<= m``).
    skipped : int
        Pairs refused by the curvature condition ``s . y > eps_curv * y . y`` (or non-finite).
    """

    def __init__(self, n, m=10, dtype=np.float64, eps_curv=None):
        self.n = _checks.integer("n", n, minimum=1)
        self.m = _checks.integer("m", m, minimum=1)
        self.dtype = _float_dtype("dtype", dtype)
        if eps_curv is None:
            eps_curv = float(np.finfo(self.dtype).eps)
        self.eps_curv = _checks.nonneg("eps_curv", eps_curv)
        self.s = np.zeros((self.m, self.n), self.dtype)
        self.y = np.zeros((self.m, self.n), self.dtype)
        self.rho = np.zeros(self.m, np.float64)
        self.head = 0
        self.count = 0
        self.skipped = 0

    def clear(self):
        """Forget every pair (the arrays keep their memory)."""
        self.head = 0
        self.count = 0

    def pairs(self):
        """The valid pairs oldest to newest, as a list of (s, y) row views."""
        rows = [(self.head + k) % self.m for k in range(self.count)]
        return [(self.s[r], self.y[r]) for r in rows]

    def _flat(self, name, a):
        a = np.asarray(a)
        if a.size != self.n:
            raise ValueError(f"{name} has {a.size} elements, expected n = {self.n}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a real array, got dtype {a.dtype}")
        return np.ascontiguousarray(a.reshape(-1), dtype=self.dtype)

    def push(self, s, y) -> bool:
        """Append the pair ``(s, y)`` (dropping the oldest when full) if it satisfies the
        curvature condition ``s . y > eps_curv * y . y``; else count it in ``skipped``.
        Returns whether it was stored."""
        s = self._flat("s", s)
        y = self._flat("y", y)
        return self._store(s, y, _NumpyVec.dot(s, y), _NumpyVec.dot(y, y), _NumpyVec)

    def _store(self, s, y, sy, yy, vec, step=1.0) -> bool:
        """Stores ``(step * s, y)`` given its dots ``sy`` (of the stored pair) and ``yy``."""
        if not (math.isfinite(sy) and math.isfinite(yy) and yy > 0.0 and sy > self.eps_curv * yy):
            self.skipped += 1
            return False
        if self.count < self.m:
            row = (self.head + self.count) % self.m
            self.count += 1
        else:
            row = self.head
            self.head = (self.head + 1) % self.m
        if step == 1.0:
            vec.copy(self.s[row], s)
        else:
            vec.scale(self.s[row], step, s)
        vec.copy(self.y[row], y)
        self.rho[row] = 1.0 / sy
        return True

    def __repr__(self):
        return (f"History(n={self.n}, m={self.m}, dtype={self.dtype.name}, count={self.count}, "
                f"head={self.head}, skipped={self.skipped})")


def two_loop(grad, history):
    """The L-BFGS direction ``-H grad`` (a new array of grad's shape) by the fused kernel."""
    g = np.asarray(grad)
    if g.dtype != history.dtype:
        raise TypeError(f"grad has dtype {g.dtype} but history has dtype {history.dtype}")
    out = np.empty_like(g, order="C")
    ops.lbfgs_direction_(out, np.ascontiguousarray(g), history)
    return out


# ---------------------------------------------------------------------------------------------
# Result


class OptimizeResult(_Result):
    """The result of ``minimize``, with SciPy's field names, readable as attributes:
    ``x, fun, jac, nit, nfev, njev, success, status, message`` (and ``skipped``: curvature
    pairs refused). ``status``: 0 converged, 1 ``maxiter`` reached, 2 the line search failed."""


def _real_scalar(f, who):
    f = np.asarray(f)
    if f.size != 1 or not (np.issubdtype(f.dtype, np.floating)
                           or np.issubdtype(f.dtype, np.integer)):
        raise ValueError(f"{who} must return a real scalar, got an array of shape {f.shape} and "
                         f"dtype {f.dtype}")
    return float(f.reshape(()))


def _copy_gradient(out, g, shape, who):
    g = np.asarray(g)
    if g.shape != shape:
        raise ValueError(f"{who} returned a gradient of shape {g.shape}; expected {shape}")
    if not (np.issubdtype(g.dtype, np.floating) or np.issubdtype(g.dtype, np.integer)):
        raise TypeError(f"{who} returned a gradient of dtype {g.dtype}; expected a real dtype")
    if (g.dtype == out.dtype and g.flags.c_contiguous and g.flags.aligned
            and not np.may_share_memory(g, out)):
        _core.lbfgs_axpby(out, 1.0, g)  # the same bits as np.copyto, in parallel when large
    else:
        np.copyto(out.reshape(shape), g, casting="unsafe")


def _pair(out, who):
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"{who} must return a tuple (f, grad), got {type(out).__name__}")
    return out


class _Objective:
    """Calls ``fun(x)`` at a flat buffer (seen as a read-only array of x0's shape), checks what
    it returns and copies the gradient into a flat buffer. Counts evaluations."""

    def __init__(self, fun, shape):
        self.fun = fun
        self.shape = shape
        self.nfev = 0

    def __call__(self, x, g_out):
        """f at x (a float); the gradient is written to g_out."""
        view = x.reshape(self.shape)
        view.flags.writeable = False
        f, g = _pair(self.fun(view), "fun")
        self.nfev += 1
        f = _real_scalar(f, "fun")
        _copy_gradient(g_out, g, self.shape, "fun (x0's shape)")
        return f


# ---------------------------------------------------------------------------------------------
# Line searches. phi(t) = f(x + t d); each evaluation is written to one of two trial slots so
# that the best point so far (the low end of the bracket) is never recomputed or copied.


class _Point:
    __slots__ = ("t", "f", "dg", "slot")

    def __init__(self, t, f, dg, slot):
        self.t, self.f, self.dg, self.slot = t, f, dg, slot

    @property
    def finite(self):
        return math.isfinite(self.f) and math.isfinite(self.dg)


def _cubic_min(a, b, lo, hi):
    """Minimizer of the cubic through two points (value and slope), clamped to [lo, hi]; the
    midpoint of [lo, hi] when the cubic has no minimizer (N&W eq. 3.59)."""
    if a.t == b.t:
        return 0.5 * (lo + hi)
    d1 = a.dg + b.dg - 3.0 * (a.f - b.f) / (a.t - b.t)
    sq = d1 * d1 - a.dg * b.dg
    if not (sq >= 0.0 and math.isfinite(sq)):
        return 0.5 * (lo + hi)
    d2 = math.copysign(math.sqrt(sq), b.t - a.t)
    denom = b.dg - a.dg + 2.0 * d2
    if denom == 0.0:
        return 0.5 * (lo + hi)
    t = b.t - (b.t - a.t) * ((b.dg + d2 - d1) / denom)
    if not math.isfinite(t):
        return 0.5 * (lo + hi)
    return min(max(t, lo), hi)


class _LineSearch:
    """The line searches of the minimizer. ``evaluate(t, slot)`` returns a finite or
    non-finite _Point; a non-finite point is treated as too long a step."""

    c1 = 1e-4
    c2 = 0.9
    max_evals = 20

    def __init__(self, evaluate):
        self.evaluate = evaluate

    def strong_wolfe(self, f0, dg0, t1, tmin):
        """Nocedal & Wright, Algorithms 3.5 (bracketing) and 3.6 (zoom), cubic interpolation.
        Returns the accepted _Point or None."""
        c1, c2 = self.c1, self.c2
        prev = _Point(0.0, f0, dg0, None)
        t = t1
        for i in range(self.max_evals):
            cur = self.evaluate(t, 0 if prev.slot != 0 else 1)
            if (not cur.finite or cur.f > f0 + c1 * cur.t * dg0
                    or (i > 0 and cur.f >= prev.f)):
                return self._zoom(prev, cur, f0, dg0, self.max_evals - i - 1, tmin)
            if abs(cur.dg) <= -c2 * dg0:
                return cur
            if cur.dg >= 0.0:
                return self._zoom(cur, prev, f0, dg0, self.max_evals - i - 1, tmin)
            width = cur.t - prev.t
            t = _cubic_min(prev, cur, cur.t + 1.1 * width, cur.t + 4.0 * width)
            prev = cur
        return prev if prev.slot is not None else None

    def _zoom(self, lo, hi, f0, dg0, evals, tmin):
        """lo: the best point (sufficient decrease, finite); hi: the other end of a bracket
        that holds a strong-Wolfe point."""
        c1, c2 = self.c1, self.c2
        for _ in range(evals):
            a, b = min(lo.t, hi.t), max(lo.t, hi.t)
            if b - a <= tmin():
                break
            margin = 0.1 * (b - a)
            if hi.finite:
                t = _cubic_min(lo, hi, a + margin, b - margin)
            else:
                # No slope to interpolate at a non-finite point: shrink hard toward lo.
                t = lo.t + 0.25 * (hi.t - lo.t)
            cur = self.evaluate(t, 0 if lo.slot != 0 else 1)
            if not cur.finite or cur.f > f0 + c1 * cur.t * dg0 or cur.f >= lo.f:
                hi = cur
            else:
                if abs(cur.dg) <= -c2 * dg0:
                    return cur
                if cur.dg * (hi.t - lo.t) >= 0.0:
                    hi = lo
                lo = cur
        # Out of evaluations or of resolution: lo still decreases f sufficiently.
        return lo if lo.slot is not None else None

    def armijo(self, f0, dg0, t1, tmin):
        """Backtracking until f(t) <= f0 + c1 t dg0; each new trial step is the minimizer of
        the quadratic through f0, dg0 and f(t), kept in [0.1 t, 0.5 t] (0.25 t after a
        non-finite value)."""
        t = t1
        for _ in range(self.max_evals):
            cur = self.evaluate(t, 0)
            if cur.finite and cur.f <= f0 + self.c1 * t * dg0:
                return cur
            if t <= tmin():
                break
            if cur.finite:
                q = -dg0 * t * t / (2.0 * (cur.f - f0 - dg0 * t))
                t = min(max(q, 0.1 * t), 0.5 * t)
            else:
                t = 0.25 * t
        return None


# ---------------------------------------------------------------------------------------------
# The iteration, shared by minimize and LBFGS


_LINE_SEARCHES = ("strong_wolfe", "armijo")


def _check_line_search(line_search):
    if line_search not in _LINE_SEARCHES:
        raise ValueError(f"line_search must be one of {_LINE_SEARCHES}, got {line_search!r}")
    return line_search


class _Solver:
    """The state of an L-BFGS run over a flat vector: x, f, g, the history and the buffers.

    ``iterate()`` takes one iteration: the direction, a line search (retried once along the
    steepest descent, with the history cleared, when it fails), the new pair. It returns None
    on success or the message of a failure.
    """

    def __init__(self, objective, x, m, line_search, vec=_NumpyVec):
        self.obj = objective
        self.vec = vec
        self.line_search = line_search
        n, dt = x.size, x.dtype
        self.x = x
        self.g = vec.empty(n, dt)
        self.d = vec.empty(n, dt)
        self.slots = [(vec.empty(n, dt), vec.empty(n, dt)) for _ in range(2)]
        self.history = History(n, m, dt)
        self.nit = 0
        self.f = math.nan
        self.f_prev = math.nan
        self._search = _LineSearch(self._evaluate)

    def evaluate_start(self):
        """f and g at x; raises ValueError if either is not finite."""
        self.f = self.obj(self.x, self.g)
        if not math.isfinite(self.f):
            raise ValueError(f"fun(x0) returned f = {self.f}; the starting point must have a "
                             "finite value")
        if not math.isfinite(self.vec.amax(self.g)):
            raise ValueError("fun(x0) returned a non-finite gradient")

    def gnorm_inf(self) -> float:
        return self.vec.amax(self.g)

    def _evaluate(self, t, slot):
        xt, gt = self.slots[slot]
        self.vec.axpby(xt, 1.0, self.x, t, self.d)
        f = self.obj(xt, gt)
        dg = self.vec.dot(gt, self.d) if math.isfinite(f) else math.nan
        return _Point(t, f, dg, slot)

    def _search_along(self, dg0, d_is_steepest):
        vec, d = self.vec, self.d
        if d_is_steepest or self.history.count == 0:
            t1 = min(1.0, 1.0 / math.sqrt(-dg0))  # ||d|| = ||g||: the first step is scaled
        else:
            t1 = 1.0
        cache = []

        def tmin():
            """The step below which no component of x changes: no resolution left (computed
            only when a search backtracks or zooms)."""
            if not cache:
                eps = float(np.finfo(d.dtype).eps)
                cache.append(eps * max(1.0, vec.amax(self.x)) / max(vec.amax(d), 1e-300))
            return cache[0]

        search = self._search.strong_wolfe if self.line_search == "strong_wolfe" \
            else self._search.armijo
        return search(self.f, dg0, t1, tmin)

    def _steepest(self):
        """d = -g; returns g.d."""
        self.vec.scale(self.d, -1.0, self.g)
        return -self.vec.dot(self.g, self.g)

    def iterate(self):
        vec, h = self.vec, self.history
        steepest = h.count == 0
        if not steepest:
            dg0 = vec.direction(self.d, self.g, h)
            if not dg0 < 0.0:  # not a descent direction (or NaN): start again from -g
                h.clear()
                steepest = True
        if steepest:
            dg0 = self._steepest()
        point = self._search_along(dg0, steepest)
        along = "the steepest descent"
        if point is None and not steepest:
            h.clear()
            point = self._search_along(self._steepest(), True)
            along = "the L-BFGS direction nor, with the history cleared, along " + along
        if point is None:
            return (f"the line search found no point of sufficient decrease along {along} "
                    "(the objective may be non-smooth, noisy or non-finite near x, its "
                    "gradient wrong, or gtol too small for the precision)")
        xt, gt = self.slots[point.slot]
        # y = g_new - g, written over the old gradient; s = t d is written by the history.
        y = self.g
        dy, yy = vec.sub_dots(y, gt, self.g, self.d)
        h._store(self.d, y, point.t * dy, yy, vec, step=point.t)
        self.slots[point.slot] = (self.x, self.g)
        self.x, self.g = xt, gt
        self.f_prev, self.f = self.f, point.f
        self.nit += 1
        return None


def _check_x0(x0):
    try:
        x = np.asarray(x0)
    except Exception as e:  # e.g. a CuPy array (no implicit conversion)
        raise TypeError(f"x0 must be a NumPy array of float32 or float64: {e}") from None
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x0 must have dtype float32 or float64, got {x.dtype}")
    if x.size == 0:
        raise ValueError("x0 is empty")
    if not np.isfinite(x).all():
        raise ValueError("x0 has non-finite values")
    return x


def minimize(fun, x0, *, m=10, maxiter=15000, gtol=1e-5, ftol=2.2e-9,
             line_search="strong_wolfe", callback=None):
    """Minimize ``fun`` by L-BFGS from ``x0``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (f, grad)``: ``x`` has the shape and dtype of ``x0`` and is read-only (a
        view of the solver's buffer: copy it to keep it); ``grad`` must have ``x0``'s shape.
    x0 : ndarray, float32 or float64, any shape, finite, not empty
        The computation runs in x0's dtype (dots in float64).
    m : int
        Number of curvature pairs kept.
    maxiter : int
        Most iterations.
    gtol : float
        Stop when ``max |grad_i| <= gtol`` (SciPy's ``pgtol``).
    ftol : float
        Stop when ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`` (SciPy's test).
    line_search : "strong_wolfe" or "armijo"
        Strong-Wolfe conditions with c1 = 1e-4, c2 = 0.9 (Nocedal & Wright Alg. 3.5/3.6,
        cubic interpolation), or backtracking until sufficient decrease. The first trial step
        is 1, or ``1 / ||grad||`` when there is no history (first iteration, after a reset).
    callback : callable, optional
        ``callback(xk)`` after each iteration, with a copy of x.

    Returns
    -------
    OptimizeResult with ``x`` (x0's shape and dtype), ``fun``, ``jac``, ``nit``, ``nfev``,
    ``njev``, ``success``, ``status`` (0 converged, 1 maxiter, 2 line search failure),
    ``message``.

    A non-finite f or gradient at a trial point shortens the step. When the line search fails
    the history is cleared and the steepest descent is tried once before stopping (status 2).
    """
    _checks.function("fun", fun)
    x0 = _check_x0(x0)
    m = _checks.integer("m", m, minimum=1)
    maxiter = _checks.integer("maxiter", maxiter, minimum=0)
    gtol = _checks.nonneg("gtol", gtol)
    ftol = _checks.nonneg("ftol", ftol)
    line_search = _check_line_search(line_search)
    _checks.function("callback", callback, optional=True)

    obj = _Objective(fun, x0.shape)
    solver = _Solver(obj, x0.ravel().copy(), m, line_search)
    solver.evaluate_start()

    status, message = None, None
    if solver.gnorm_inf() <= gtol:
        status, message = 0, "CONVERGENCE: max |grad| <= gtol"
    while status is None:
        if solver.nit >= maxiter:
            status, message = 1, "STOP: the number of iterations reached maxiter"
            break
        failure = solver.iterate()
        if failure is not None:
            status, message = 2, "ABNORMAL: " + failure
            break
        if callback is not None:
            callback(solver.x.reshape(x0.shape).copy())
        if solver.gnorm_inf() <= gtol:
            status, message = 0, "CONVERGENCE: max |grad| <= gtol"
        elif solver.f_prev - solver.f <= ftol * max(abs(solver.f_prev), abs(solver.f), 1.0):
            status, message = 0, "CONVERGENCE: relative reduction of f <= ftol"
    return OptimizeResult(
        x=solver.x.reshape(x0.shape).copy(), fun=solver.f,
        jac=solver.g.reshape(x0.shape).copy(), nit=solver.nit, nfev=obj.nfev, njev=obj.nfev,
        success=status == 0, status=status, message=message,
        skipped=solver.history.skipped)


# ---------------------------------------------------------------------------------------------
# The optimizer class


class _ParamsObjective:
    """The objective of LBFGS: writes a flat x into the params, calls the closure, gathers the
    gradients into a flat buffer."""

    def __init__(self, params, closure=None):
        self.params = params
        self.closure = closure
        self.offsets = np.cumsum([0] + [p.size for p in params])
        self.nfev = 0

    def gather(self, out):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            np.copyto(out[lo:hi], p.reshape(-1))

    def scatter(self, x):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            np.copyto(p.reshape(-1), x[lo:hi])

    def __call__(self, x, g_out):
        self.scatter(x)
        f, grads = _pair(self.closure(), "closure")
        self.nfev += 1
        f = _real_scalar(f, "closure")
        if not isinstance(grads, (list, tuple)):
            grads = [grads]
        if len(grads) != len(self.params):
            raise ValueError(f"closure returned {len(grads)} gradients for "
                             f"{len(self.params)} params")
        for i, (p, g, lo, hi) in enumerate(zip(self.params, grads, self.offsets[:-1],
                                               self.offsets[1:])):
            _copy_gradient(g_out[lo:hi], g, p.shape, f"closure (grads[{i}])")
        return f


class LBFGS:
    """L-BFGS over a list of NumPy arrays, in the style of ``torch.optim.LBFGS``.

        >>> opt = LBFGS([w, b], m=10, line_search="strong_wolfe")
        >>> def closure():
        ...     return loss(w, b), [grad_w(w, b), grad_b(w, b)]
        >>> for epoch in range(5):
        ...     opt.step(closure)                    # w, b updated in place

    Differences from torch: ``closure()`` returns ``(loss, grads)`` (NumPy arrays carry no
    ``.grad``), evaluated at the params as they are when it is called (each evaluation writes
    the trial point into them); ``m`` is torch's ``history_size`` (default 10 as in SciPy, not
    100); ``line_search`` is ``"strong_wolfe"`` or ``"armijo"`` (torch's ``None``, a fixed step,
    is not offered); there is no ``lr`` (the line search chooses the step). ``step`` runs up to
    ``max_iter`` iterations of the same solver as ``minimize`` and stops early when the largest
    gradient component is ``<= tolerance_grad`` or the loss changes by less than
    ``tolerance_change``. It returns the loss at the start of the step. The history is kept
    between steps. Params must share one dtype (float32 or float64).
    """

    def __init__(self, params, m=10, line_search="strong_wolfe", *, max_iter=20,
                 tolerance_grad=1e-7, tolerance_change=1e-9):
        if isinstance(params, np.ndarray):
            params = [params]
        elif isinstance(params, (list, tuple)):
            params = list(params)
        else:
            raise TypeError(f"params must be a list of numpy arrays, got {type(params).__name__}")
        if not params:
            raise ValueError("params is an empty list")
        _checks.check_lists([("params", params, True)])
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError(f"params must share one dtype, got {sorted(d.name for d in dtypes)}")
        self.params = params
        self.m = _checks.integer("m", m, minimum=1)
        self.line_search = _check_line_search(line_search)
        self.max_iter = _checks.integer("max_iter", max_iter, minimum=1)
        self.tolerance_grad = _checks.nonneg("tolerance_grad", tolerance_grad)
        self.tolerance_change = _checks.nonneg("tolerance_change", tolerance_change)
        self._obj = _ParamsObjective(params)
        n = int(self._obj.offsets[-1])
        self._solver = _Solver(self._obj, np.empty(n, params[0].dtype), self.m, self.line_search)

    @property
    def history(self) -> History:
        return self._solver.history

    @property
    def nfev(self) -> int:
        """Closure evaluations so far."""
        return self._obj.nfev

    @property
    def nit(self) -> int:
        """Iterations so far."""
        return self._solver.nit

    def step(self, closure):
        """Up to ``max_iter`` L-BFGS iterations; returns the loss at the start."""
        _checks.function("closure", closure)
        solver, obj = self._solver, self._obj
        obj.closure = closure
        obj.gather(solver.x)
        solver.evaluate_start()
        loss0 = solver.f
        try:
            for _ in range(self.max_iter):
                if solver.gnorm_inf() <= self.tolerance_grad:
                    break
                if solver.iterate() is not None:
                    break
                if abs(solver.f - solver.f_prev) < self.tolerance_change:
                    break
        finally:
            obj.scatter(solver.x)  # the last evaluation may have been a rejected trial point
        return loss0
