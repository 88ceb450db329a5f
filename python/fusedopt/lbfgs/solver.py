"""The L-BFGS solver: one iteration over a flat vector, and ``minimize``.

Layer: algorithms.

``minimize`` follows ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)``: without bounds
the two-loop L-BFGS below, with ``bounds`` the L-BFGS-B of ``lbfgsb``; SciPy's kinds of stopping
rule (``gtol`` on the largest gradient component, ``ftol`` on the relative reduction of f) with
a smaller default ``ftol`` (see ``minimize``), and the same result fields. Nocedal & Wright,
Algorithm 7.5 (L-BFGS): the direction by the two-loop recursion (``History``, the fused kernel),
a line search (``line_search``), the new pair stored if it satisfies the curvature condition.
The array work of an iteration runs in the kernels through ``CoreVec`` (NumPy x0) or
``_device.CupyVec`` (CuPy x0: the CUDA kernels, only scalars reach the host).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks
from ._vector import CoreVec
from . import lbfgsb
from .bounds import parse_bounds
from .history import History
from .line_search import LineSearch, Point, check_line_search
from .result import OptimizeResult

__all__ = ["minimize", "Solver"]


def _real_scalar(f, who):
    f = np.asarray(f)
    if f.size != 1 or not (np.issubdtype(f.dtype, np.floating)
                           or np.issubdtype(f.dtype, np.integer)):
        raise ValueError(f"{who} must return a real scalar, got an array of shape {f.shape} and "
                         f"dtype {f.dtype}")
    return float(f.reshape(()))


def _copy_gradient(out, g, shape, who, d=None):
    """out = the gradient g (checked; cast to out's dtype). With d: returns out . d
    (``CoreVec.dot``'s bits), from the copy's pass when g needs no conversion."""
    g = np.asarray(g)
    if g.shape != shape:
        raise ValueError(f"{who} returned a gradient of shape {g.shape}; expected {shape}")
    if not (np.issubdtype(g.dtype, np.floating) or np.issubdtype(g.dtype, np.integer)):
        raise TypeError(f"{who} returned a gradient of dtype {g.dtype}; expected a real dtype")
    if (g.dtype == out.dtype and g.flags.c_contiguous and g.flags.aligned
            and not np.may_share_memory(g, out)):
        # the same bits as np.copyto, in parallel when large
        if d is not None and not np.may_share_memory(g, d):
            return CoreVec.copy_dot(out, g, d)
        CoreVec.copy(out, g)
    else:
        np.copyto(out.reshape(shape), g, casting="unsafe")
    return None if d is None else CoreVec.dot(out, d)


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
        return self.evaluate_dot(x, g_out, None)[0]

    def evaluate_dot(self, x, g_out, d):
        """``(f, g . d)`` at x, the gradient written to g_out as by the call, g . d (``CoreVec
        .dot``'s bits) taken in the copy's pass (L-BFGS-B's line search needs both); d None:
        ``(f, None)``."""
        view = x.reshape(self.shape)
        view.flags.writeable = False
        f, g = _pair(self.fun(view), "fun")
        self.nfev += 1
        f = _real_scalar(f, "fun")
        return f, _copy_gradient(g_out, g, self.shape, "fun (x0's shape)", d)


class Solver:
    """The state of an L-BFGS run over a flat vector: x, f, g, the history and the buffers.

    ``iterate()`` takes one iteration: the direction, a line search (retried once along the
    steepest descent, with the history cleared, when it fails), the new pair. It returns None
    on success or the message of a failure.
    """

    def __init__(self, objective, x, m, line_search, vec=CoreVec, maxls=20, history=None):
        self.obj = objective
        self.vec = vec
        self.line_search = line_search
        n, dt = x.size, x.dtype
        self.x = x
        self.g = vec.empty(n, dt)
        self.d = vec.empty(n, dt)
        self.slots = [(vec.empty(n, dt), vec.empty(n, dt)) for _ in range(2)]
        if history is None:  # CuPy: the device's history (mpi passes a History)
            history = History(n, m, dt) if vec is CoreVec else vec.history(n, m, dt)
        self.history = history
        self.nit = 0
        self.f = math.nan
        self.f_prev = math.nan
        self.unbounded_searches = 0   # consecutive line searches that ran out extrapolating
        self._search = LineSearch(self._evaluate)
        self._search.max_evals = maxls

    def evaluate_start(self):
        """f and g at x; raises ValueError if either is not finite."""
        self.f = lbfgsb.first_evaluation(self.obj, self.x, self.g, self.vec)

    def gnorm_inf(self) -> float:
        return self.vec.amax(self.g)

    def _evaluate(self, t, slot):
        xt, gt = self.slots[slot]
        self.vec.axpby(xt, 1.0, self.x, t, self.d)
        f = self.obj(xt, gt)
        dg = self.vec.dot(gt, self.d) if math.isfinite(f) else math.nan
        return Point(t, f, dg, slot)

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
        """One iteration of Nocedal & Wright, Algorithm 7.5."""
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
        self.unbounded_searches = self.unbounded_searches + 1 if self._search.unbounded else 0
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
    except Exception as e:  # not convertible (and not a CuPy array: those are taken before)
        raise TypeError(f"x0 must be a NumPy or CuPy array of float32 or float64: {e}") from None
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x0 must have dtype float32 or float64, got {x.dtype}")
    if x.size == 0:
        raise ValueError("x0 is empty")
    if not np.isfinite(x).all():
        raise ValueError("x0 has non-finite values")
    return x


#: The default ``ftol``: chosen on the Moré-Garbow-Hillstrom test set (``fusedopt.testset``,
#: ``python -m fusedopt bench --rules testset``), see ``minimize``.
FTOL = 1e-12
#: f below ``-F_UNBOUNDED * max(1, |f(x0)|)`` ends a run as unbounded below (status 3).
F_UNBOUNDED = 1e30
#: This many consecutive line searches that ran out of evaluations while still extrapolating
#: (``LineSearch.unbounded``) end a run as unbounded below (status 3).
UNBOUNDED_SEARCHES = 3

_UNBOUNDED = (3, "UNBOUNDED: {}; the problem looks unbounded below (f = {:.6g})")


def _unbounded(solver, f0):
    """The status and message of a run unbounded below, or None (checked after an iteration)."""
    if solver.f < -F_UNBOUNDED * max(1.0, abs(f0)):
        why = f"f fell below -{F_UNBOUNDED:g} * max(1, |f(x0)|)"
    elif solver.unbounded_searches >= UNBOUNDED_SEARCHES:
        why = (f"{UNBOUNDED_SEARCHES} line searches in a row ran out of evaluations while f "
               "still decreased steeply along ever longer steps")
    else:
        return None
    return _UNBOUNDED[0], _UNBOUNDED[1].format(why, solver.f)


def check_options(m, maxiter, gtol, ftol, line_search, callback, maxfun, maxls):
    """minimize's options checked (TypeError/ValueError naming each), as
    ``(m, maxiter, gtol, ftol, line_search, maxfun, maxls)``; maxfun None becomes inf."""
    m = _checks.integer("m", m, minimum=1)
    maxiter = _checks.integer("maxiter", maxiter, minimum=0)
    gtol = _checks.nonneg("gtol", gtol)
    ftol = _checks.nonneg("ftol", ftol)
    line_search = check_line_search(line_search)
    _checks.function("callback", callback, optional=True)
    maxfun = math.inf if maxfun is None else _checks.integer("maxfun", maxfun, minimum=0)
    maxls = _checks.integer("maxls", maxls, minimum=1)
    return m, maxiter, gtol, ftol, line_search, maxfun, maxls


def minimize(fun, x0, *, bounds=None, m=10, maxiter=15000, gtol=1e-5, ftol=FTOL,
             line_search="strong_wolfe", callback=None, maxfun=None, maxls=20, comm=None,
             shard=False):
    """Minimize ``fun`` by L-BFGS from ``x0`` (by L-BFGS-B within ``bounds``).

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (f, grad)``: ``x`` has the shape and dtype of ``x0`` and is read-only (a
        view of the solver's buffer: copy it to keep it); ``grad`` must have ``x0``'s shape.
        With a CuPy ``x0``, ``x`` is a CuPy array (do not write to it), ``grad`` must be a CuPy
        array and ``f`` a number or a CuPy scalar.
    x0 : ndarray (NumPy or CuPy), float32 or float64, any shape, finite, not empty
        The computation runs in x0's dtype (dots in float64). Projected on the box if
        outside it. A CuPy x0 keeps x, the gradient, the history and the direction on its
        device (the CUDA kernels of ``fusedopt._cuda``; only f and the line search's and the
        stopping tests' scalars come to the host); bounds are not supported there yet.
    bounds : optional
        ``lo <= x <= hi`` elementwise, as SciPy takes them: a sequence of ``(lo, hi)`` pairs
        (one per element of x0 in C order, None for no bound), a ``scipy.optimize.Bounds``,
        or two arrays (or scalars) ``(lo, hi)`` of x0's shape; ±inf for no bound, ``lo == hi``
        fixes a variable. Checked before ``fun`` is called. With bounds the solver is L-BFGS-B
        (``fusedopt.lbfgs.lbfgsb``: generalized Cauchy point, subspace minimization, a line
        search kept in the box) and ``gtol`` applies to the projected gradient.
    m : int
        Number of curvature pairs kept.
    maxiter : int
        Most iterations.
    gtol : float
        Stop when ``max |grad_i| <= gtol`` (SciPy's ``pgtol``; SciPy's default).
    ftol : float
        Stop when ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`` (SciPy's test). The
        default, 1e-12, is smaller than SciPy's 2.2e-9 (``factr = 1e7``): SciPy's value stops
        badly scaled problems far from their minimizer after one iteration of little progress
        (on the 30 problems of Moré, Garbow & Hillstrom in ``fusedopt.testset``, SciPy's
        L-BFGS-B leaves Powell's badly scaled function, Jennrich-Sampson, Wood and Penalty I
        unsolved, with ``max |grad|`` 1e-5 to 4e+3, and this solver with SciPy's value all but
        Jennrich-Sampson), while with 1e-12 these are solved and the problems that SciPy's
        rule solves cost about the same evaluations (most stop on ``gtol`` first). The
        table: ``python -m fusedopt bench --rules testset``. ``fusedopt.optimize`` keeps
        SciPy's 2.2e-9. In float32 the test fires only when f stops decreasing.
    line_search : "strong_wolfe" or "armijo"
        Strong-Wolfe conditions with c1 = 1e-4, c2 = 0.9 (Nocedal & Wright Alg. 3.5/3.6,
        cubic interpolation), or backtracking until sufficient decrease. The first trial step
        is 1, or ``1 / ||grad||`` when there is no history (first iteration, after a reset).
    callback : callable, optional
        ``callback(xk)`` after each iteration, with a copy of x.
    maxfun : int, optional
        Stop (status 1) after the iteration in which the evaluations pass maxfun (default: no
        limit), with or without bounds, as SciPy.
    maxls : int
        Most evaluations per line search (SciPy's ``maxls``).
    comm : mpi4py communicator, optional
        Run on MPI (``fusedopt.lbfgs.mpi``; the ``mpi`` extra): every rank calls minimize with
        the same options. ``shard=False``: data-parallel, ``fun`` returns the rank's part of f
        and of the gradient, summed over the ranks in rank order. ``shard=True``: x0 is the
        rank's slice ``x[fusedopt.lbfgs.local_slice(n, comm)]`` and ``fun`` returns the rank's
        part of f and its slice of the gradient.
    shard : bool
        With ``comm``: shard x, g and the history over the ranks (see ``comm``).

    Returns
    -------
    OptimizeResult with ``x`` (x0's shape, dtype and array type), ``fun``, ``jac``, ``nit``,
    ``nfev``, ``njev``, ``success``, ``status`` (0 converged, 1 ``maxiter`` or ``maxfun``, 2
    line search failure, 3 unbounded below), ``message``.

    A non-finite f or gradient at a trial point shortens the step. When the line search fails
    the history is cleared and the steepest descent is tried once before stopping (status 2).

    A problem unbounded below ends with status 3 and a message starting "UNBOUNDED" in a
    bounded number of evaluations, when f falls below ``-1e30 * max(1, |f(x0)|)`` (no
    problem with a finite minimum of ordinary size gets there), or when 3 line searches in a
    row run out of their ``maxls`` evaluations still extrapolating (f decreasing steeply
    along steps growing geometrically: by 1e10 and more in one search of 20 evaluations):
    ``f = sum(x)`` stops after 3 iterations and ``3 * maxls + 1`` evaluations. The second
    rule needs the strong-Wolfe search (the one that extrapolates): with "armijo" only the
    threshold applies, and ``maxiter`` or ``maxfun`` bounds the run.
    """
    if comm is not None:  # MPI: fusedopt.lbfgs.mpi (imports mpi4py)
        from . import mpi
        return mpi.minimize(fun, x0, comm=comm, shard=shard, bounds=bounds, m=m,
                            maxiter=maxiter, gtol=gtol, ftol=ftol, line_search=line_search,
                            callback=callback, maxfun=maxfun, maxls=maxls)
    if shard is not False:
        raise ValueError(f"shard={shard!r} needs comm (an mpi4py communicator)")
    _checks.function("fun", fun)
    device = type(x0).__module__.startswith("cupy")     # as ops.backend_of decides
    if device:
        from . import _device  # noqa: PLC0415 -- CuPy's path, imported on demand (as ops does)

        shape = tuple(x0.shape)
        on_device = _device.xp().cuda.Device(x0.device.id)   # x0's device for the whole run
        with on_device:
            x0 = _device.device_x0(x0)      # a flat copy
    else:
        x0 = _check_x0(x0)
        shape = x0.shape
    m, maxiter, gtol, ftol, line_search, maxfun, maxls = check_options(
        m, maxiter, gtol, ftol, line_search, callback, maxfun, maxls)
    if bounds is not None:
        if device:
            raise TypeError("bounds are not supported with a CuPy x0 (L-BFGS-B runs on the "
                            "host): pass a NumPy x0, or no bounds")
        if line_search != "strong_wolfe":
            raise ValueError("line_search must be 'strong_wolfe' with bounds (L-BFGS-B keeps "
                             f"its steps in the box by a strong-Wolfe search), got {line_search!r}")
        return _minimize_bounded(fun, x0, parse_bounds(bounds, shape, x0.dtype), m, maxiter,
                                 gtol, ftol, callback, maxfun, maxls)

    if device:
        with on_device:
            solver = Solver(_device.DeviceObjective(fun, shape), x0, m, line_search,
                            vec=_device.CupyVec, maxls=maxls)
            return _run(solver, shape, maxiter, gtol, ftol, callback, maxfun)
    solver = Solver(_Objective(fun, shape), x0.ravel().copy(), m, line_search, maxls=maxls)
    return _run(solver, shape, maxiter, gtol, ftol, callback, maxfun)


def _run(solver, shape, maxiter, gtol, ftol, callback, maxfun):
    """``minimize`` without bounds: iterate ``solver`` from x0 until a stopping rule holds."""
    obj = solver.obj
    solver.evaluate_start()
    f0 = solver.f

    status, message = None, None
    if solver.gnorm_inf() <= gtol:
        status, message = 0, "CONVERGENCE: max |grad| <= gtol"
    while status is None:
        if solver.nit >= maxiter:
            status, message = 1, "STOP: the number of iterations reached maxiter"
            break
        searches = solver.unbounded_searches
        failure = solver.iterate()
        if failure is not None and searches:
            # x ran off so far that no step changes it any more (float32 soon)
            status, message = _UNBOUNDED[0], _UNBOUNDED[1].format(
                "a line search ran out of evaluations still extrapolating, then no step "
                "decreased f at the resolution of x", solver.f)
            break
        if failure is not None:
            status, message = 2, "ABNORMAL: " + failure
            break
        if callback is not None:
            callback(solver.x.reshape(shape).copy())
        if solver.gnorm_inf() <= gtol:
            status, message = 0, "CONVERGENCE: max |grad| <= gtol"
        elif (unbounded := _unbounded(solver, f0)) is not None:
            status, message = unbounded
        elif solver.f_prev - solver.f <= ftol * max(abs(solver.f_prev), abs(solver.f), 1.0):
            status, message = 0, "CONVERGENCE: relative reduction of f <= ftol"
        elif obj.nfev > maxfun:
            status, message = 1, "STOP: the number of evaluations exceeded maxfun"
    return OptimizeResult(
        x=solver.x.reshape(shape).copy(), fun=solver.f,
        jac=solver.g.reshape(shape).copy(), nit=solver.nit, nfev=obj.nfev, njev=obj.nfev,
        success=status == 0, status=status, message=message,
        skipped=solver.history.skipped)


_BOUNDED_MESSAGES = {
    "pgtol": (0, "CONVERGENCE: max |projected grad| <= gtol"),
    "ftol": (0, "CONVERGENCE: relative reduction of f <= ftol"),
    "maxiter": (1, "STOP: the number of iterations reached maxiter"),
    "maxfun": (1, "STOP: the number of evaluations exceeded maxfun"),
}


def run_bounded(solver, maxiter, maxfun, gtol, ftol, after):
    """``lbfgsb.run`` with this module's ``maxiter = 0``: no iteration (SciPy's drop-in, which
    calls ``lbfgsb.run`` itself, still takes one); returns ``(reason, failure)``."""
    if maxiter == 0:
        return ("pgtol" if solver.projected_gradient_norm() <= gtol else "maxiter"), None
    return lbfgsb.run(solver, maxiter=maxiter, maxfun=maxfun, gtol=gtol, ftol=ftol,
                      after_iteration=after)


def _minimize_bounded(fun, x0, box, m, maxiter, gtol, ftol, callback, maxfun, maxls):
    """``minimize`` with bounds: L-BFGS-B (``lbfgsb.BoundedSolver``)."""
    obj = _Objective(fun, x0.shape)
    x = box.project(np.empty(x0.size, x0.dtype), x0.reshape(-1))
    solver = lbfgsb.BoundedSolver(obj, x, box, m, maxls)
    solver.evaluate_start()
    f0 = solver.f
    unbounded = []
    solver.unbounded_searches = 0

    def after(s):
        if callback is not None:
            callback(s.x.reshape(x0.shape).copy())
        s.unbounded_searches = s.unbounded_searches + 1 if s._search.unbounded else 0
        if s.projected_gradient_norm() > gtol:      # the gradient test comes first
            unbounded.append(_unbounded(s, f0))
        return unbounded and unbounded[-1] is not None

    reason, failure = run_bounded(solver, maxiter, maxfun, gtol, ftol, after)
    if failure:
        status, message = 2, "ABNORMAL: " + failure
    elif reason == "callback":
        status, message = unbounded[-1]
    else:
        status, message = _BOUNDED_MESSAGES[reason]
    return OptimizeResult(
        x=solver.x.reshape(x0.shape).copy(), fun=solver.f,
        jac=solver.g.reshape(x0.shape).copy(), nit=solver.nit, nfev=obj.nfev, njev=obj.nfev,
        success=status == 0, status=status, message=message, skipped=solver.skipped)
