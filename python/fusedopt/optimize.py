"""A drop-in for ``scipy.optimize.minimize(method="L-BFGS-B")``: switching is one import line.

Layer: algorithms (builds on ``fusedopt.lbfgs``; SciPy is imported lazily, only to return its
own ``OptimizeResult`` and ``LbfgsInvHessProduct`` and to warn with its ``OptimizeWarning``).

    >>> import numpy as np
    >>> from fusedopt.optimize import minimize
    >>> res = minimize(lambda x: float(((x - 2) ** 2).sum()), np.zeros(3), bounds=[(0, 1)] * 3)
    >>> res.success, np.allclose(res.x, 1.0)
    (True, True)

``minimize`` has SciPy's signature, option names and defaults (``maxcor=10``,
``ftol=2.2204460492503131e-09``, ``gtol=1e-05``, ``eps=1e-08``, ``maxfun=15000``,
``maxiter=15000``, ``maxls=20``; ``disp`` and ``iprint`` are accepted and ignored), SciPy's
stopping rules in SciPy's order, its status codes (0 converged, 1 ``maxiter`` / ``maxfun``, 2
abnormal, 99 ``StopIteration`` from the callback) and messages. The differences: the solver is
fusedopt's L-BFGS-B (``fusedopt.lbfgs.lbfgsb``; its products over the history in the
fused kernels), whose line search is Nocedal & Wright's strong-Wolfe search (SciPy: Moré &
Thuente's ``dcsrch``), so evaluation counts are close to SciPy's but not equal; ``jac`` may be
True, a callable, None (forward differences with the absolute step ``eps``, stepping backwards
at an upper bound, as SciPy) or "2-point" (relative step); "3-point" and "cs" are refused.
Unknown option names warn (``OptimizeWarning`` "Unknown solver options: ...", as SciPy), then
are ignored. ``lbfgsb`` is the same solver in SciPy's custom-method protocol:
``scipy.optimize.minimize(fun, x0, method=fusedopt.optimize.lbfgsb, ...)``.
"""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np

from . import _checks
from .lbfgs import lbfgsb as _lbfgsb
from .lbfgs.bounds import Box, parse_bounds
from .lbfgs.result import OptimizeResult as _OwnResult

__all__ = ["minimize", "lbfgsb"]

_MESSAGES = {
    "pgtol": (0, "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL"),
    "ftol": (0, "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH"),
    "maxiter": (1, "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT"),
    "maxfun": (1, "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT"),
    "callback": (99, "`callback` raised `StopIteration`."),
}


def _scipy_optimize():
    try:
        import scipy.optimize as so
    except ImportError:
        return None
    return so


class _FunAndGrad:
    """``fun`` and ``jac`` in SciPy's conventions as one ``(x_flat, g_out) -> f`` evaluation for
    the solver, counting SciPy's ``nfev`` (calls of fun, finite differences included) and
    ``njev`` (gradients)."""

    def __init__(self, fun, jac, args, eps, rel_step, box):
        self.fun, self.args, self.box = fun, args, box
        self.nfev = 0
        self.njev = 0
        if jac is True:
            self.mode = "pair"
        elif callable(jac):
            self.mode, self.jac = "callable", jac
        elif jac is None or jac is False:
            self.mode, self.step = "abs", eps
        elif jac == "2-point":
            self.mode, self.step = "rel", rel_step
        else:
            raise ValueError(f"jac must be True, a callable, None or '2-point', got {jac!r}")

    def _f(self, x):
        self.nfev += 1
        f = np.asarray(self.fun(x, *self.args))
        if f.size != 1:
            raise ValueError(f"fun must return a scalar, got an array of shape {f.shape}")
        return float(f.reshape(()))

    def __call__(self, x, g_out):
        self.njev += 1
        if self.mode == "pair":
            self.nfev += 1
            out = self.fun(x.copy(), *self.args)
            if not isinstance(out, tuple) or len(out) != 2:
                raise TypeError("with jac=True, fun must return a tuple (f, grad)")
            f = np.asarray(out[0])
            if f.size != 1:
                raise ValueError(f"fun must return a scalar, got an array of shape {f.shape}")
            _set_grad(g_out, out[1])
            return float(f.reshape(()))
        f = self._f(x.copy())
        if self.mode == "callable":
            _set_grad(g_out, self.jac(x.copy(), *self.args))
        else:
            self._differences(x, f, g_out)
        return f

    def _differences(self, x, f0, g_out):
        """Forward differences as SciPy's ``approx_derivative(method="2-point")``: the step
        h_i (absolute ``eps``, or ``rel_step * sign(x_i) * max(1, |x_i|)``) turned backwards
        where x + h leaves the box, shortened where neither direction fits."""
        if self.mode == "abs":
            h = np.broadcast_to(np.asarray(self.step, np.float64), x.shape).copy()
        else:
            rel = math.sqrt(np.finfo(np.float64).eps) if self.step is None else self.step
            sign = np.where(x >= 0, 1.0, -1.0)
            h = rel * sign * np.maximum(1.0, np.abs(x))
        if self.box is not None:
            lo, hi = self.box.lo.astype(np.float64), self.box.hi.astype(np.float64)
            lower_dist, upper_dist = x - lo, hi - x
            x1 = x + h
            violated = (x1 < lo) | (x1 > hi)
            fitting = np.abs(h) <= np.maximum(lower_dist, upper_dist)
            h[violated & fitting] *= -1
            forward = (upper_dist >= lower_dist) & ~fitting
            h[forward] = upper_dist[forward]
            backward = (upper_dist < lower_dist) & ~fitting
            h[backward] = -lower_dist[backward]
        xt = x.copy()
        for i in range(x.size):
            xi = x[i]
            xt[i] = xi + h[i]
            dx = xt[i] - xi
            g_out[i] = (self._f(xt) - f0) / dx if dx != 0 else 0.0
            xt[i] = xi


def _set_grad(g_out, g):
    g = np.asarray(g, dtype=np.float64)
    if g.size != g_out.size:
        raise ValueError(f"the gradient has {g.size} elements; x0 has {g_out.size}")
    g_out[...] = g.reshape(-1)


class _Objective:
    """The solver's view of ``_FunAndGrad`` (``obj(x, g_out) -> f``, ``obj.nfev``)."""

    def __init__(self, fg):
        self.fg = fg

    @property
    def nfev(self):
        return self.fg.nfev

    def __call__(self, x, g_out):
        return self.fg(x, g_out)


def _callback_caller(callback):
    """SciPy's rule: a callback whose only parameter is ``intermediate_result`` gets an
    ``OptimizeResult(x, fun)``; any other gets a copy of x."""
    if callback is None:
        return None
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        params = set()
    if params == {"intermediate_result"}:
        return lambda x, f: callback(intermediate_result=_result_type()(x=x.copy(), fun=f))
    return lambda x, f: callback(np.copy(x))


def _result_type():
    so = _scipy_optimize()
    return so.OptimizeResult if so is not None else _OwnResult


def _positive_int(name, v, minimum):
    return _checks.integer(name, v, minimum=minimum)


def lbfgsb(fun, x0, args=(), jac=None, bounds=None, callback=None, *, hess=None, hessp=None,
           constraints=(), tol=None, maxcor=10, ftol=None, gtol=None, eps=1e-8, maxfun=15000,
           maxiter=15000, maxls=20, disp=None, iprint=None, finite_diff_rel_step=None,
           **unknown_options):
    """fusedopt's L-BFGS-B with SciPy's option names, in SciPy's custom-method protocol
    (``scipy.optimize.minimize(..., method=fusedopt.optimize.lbfgsb)``); see ``minimize``."""
    if unknown_options:
        so = _scipy_optimize()
        category = so.OptimizeWarning if so is not None else RuntimeWarning
        warnings.warn("Unknown solver options: " + ", ".join(map(str, unknown_options)),
                      category, stacklevel=3)
    if hess is not None or hessp is not None:
        warnings.warn("Method L-BFGS-B does not use Hessian information (hess).",
                      RuntimeWarning, stacklevel=3)
    if constraints is not None and np.any(constraints):
        warnings.warn("Method L-BFGS-B cannot handle constraints.", RuntimeWarning,
                      stacklevel=3)
    _checks.function("fun", fun)
    if not isinstance(args, tuple):
        args = (args,)
    x0 = np.atleast_1d(np.asarray(x0))
    if x0.ndim != 1:
        raise ValueError("'x0' must only have one dimension.")
    if not (np.issubdtype(x0.dtype, np.floating) or np.issubdtype(x0.dtype, np.integer)):
        raise TypeError(f"x0 must be real, got dtype {x0.dtype}")
    x0 = np.array(x0, dtype=np.float64)     # SciPy computes in float64 (integers converted)
    if not np.isfinite(x0).all():
        raise ValueError("x0 has non-finite values")
    if tol is not None:
        tol = _checks.nonneg("tol", tol)
    ftol = _checks.nonneg("ftol", ftol) if ftol is not None else (
        tol if tol is not None else 2.2204460492503131e-09)
    gtol = _checks.nonneg("gtol", gtol) if gtol is not None else (
        tol if tol is not None else 1e-5)
    m = _positive_int("maxcor", maxcor, 1)
    maxfun = _positive_int("maxfun", maxfun, 0)
    maxiter = _positive_int("maxiter", maxiter, 0)
    maxls = _positive_int("maxls", maxls, 1)
    eps_arr = np.asarray(eps, dtype=np.float64)
    if eps_arr.ndim and eps_arr.size != x0.size or not (np.isfinite(eps_arr).all()
                                                        and (eps_arr > 0).all()):
        raise ValueError("eps must be a positive finite float or an array of x0's size")
    if finite_diff_rel_step is not None:
        finite_diff_rel_step = _checks.nonneg("finite_diff_rel_step", finite_diff_rel_step)
    _checks.function("callback", callback, optional=True)
    box = parse_bounds(bounds, x0.shape, np.float64)
    fg = _FunAndGrad(fun, jac, args, eps_arr, finite_diff_rel_step, box)
    call_back = _callback_caller(callback)

    if box is None:
        box = Box(np.full(x0.size, -np.inf), np.full(x0.size, np.inf))
    x = box.project(np.empty_like(x0), x0)
    solver = _lbfgsb.BoundedSolver(_Objective(fg), x, box, m, maxls)
    solver.evaluate_start()

    def after(s):
        if call_back is None:
            return False
        try:
            call_back(s.x, s.f)
        except StopIteration:
            return True
        return False

    reason, failure = _lbfgsb.run(solver, maxiter=maxiter, maxfun=maxfun, gtol=gtol,
                                  ftol=ftol, after_iteration=after)
    status, message = (2, "ABNORMAL: " + failure) if failure else _MESSAGES[reason]
    res = _result_type()(
        fun=solver.f, jac=solver.g.copy(), nfev=fg.nfev, njev=fg.njev, nit=solver.nit,
        status=status, message=message, x=solver.x.copy(), success=status == 0)
    so = _scipy_optimize()
    if so is not None:
        s, y = solver.cf.pairs()
        res.hess_inv = so.LbfgsInvHessProduct(s, y)
    return res


def minimize(fun, x0, args=(), method="L-BFGS-B", jac=None, hess=None, hessp=None,
             bounds=None, constraints=(), tol=None, callback=None, options=None):
    """``scipy.optimize.minimize`` for ``method="L-BFGS-B"``, solved by fusedopt.

    Parameters are SciPy's: ``fun(x, *args) -> f`` (or ``(f, grad)`` with ``jac=True``);
    ``x0`` 1-D (integers converted to float64); ``jac`` True, a callable ``jac(x, *args)``, None
    (forward differences, absolute step ``options["eps"]``) or "2-point"; ``bounds`` a sequence
    of ``(lo, hi)`` (None: no bound), a ``scipy.optimize.Bounds`` or two arrays; ``tol`` sets
    ``ftol`` and ``gtol`` unless given in ``options``; ``callback(intermediate_result)`` or
    ``callback(xk)`` after each iteration, ``StopIteration`` from it ends the run with status
    99; ``options``: ``maxcor``, ``ftol``, ``gtol``, ``eps``, ``maxfun``, ``maxiter``,
    ``maxls``, ``finite_diff_rel_step`` (``disp``, ``iprint`` ignored; unknown names warn).
    ``method`` must be "L-BFGS-B" (any case) or None; ``hess``, ``hessp`` and ``constraints``
    warn as SciPy does and are ignored.

    Returns a ``scipy.optimize.OptimizeResult`` (fusedopt's own without SciPy) with ``x``,
    ``fun``, ``jac``, ``nit``, ``nfev``, ``njev``, ``status``, ``success``, ``message`` and,
    with SciPy, ``hess_inv`` (a ``LbfgsInvHessProduct`` of the stored pairs, oldest first).
    """
    if method is not None and (not isinstance(method, str) or method.lower() != "l-bfgs-b"):
        raise ValueError(f"method must be 'L-BFGS-B' (fusedopt.optimize solves only that), "
                         f"got {method!r}")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    for key in options:
        if not isinstance(key, str):
            raise TypeError(f"options keys must be strings, got {key!r}")
    clash = {"fun", "x0", "args", "jac", "bounds", "callback", "hess", "hessp",
             "constraints", "tol"} & set(options)
    if clash:
        raise TypeError(f"options must not contain {sorted(clash)}")
    return lbfgsb(fun, x0, args=args, jac=jac, bounds=bounds, callback=callback, hess=hess,
                  hessp=hessp, constraints=constraints, tol=tol, **options)
