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
at an upper bound, as SciPy), or SciPy's finite-difference schemes with a relative step
(``finite_diff_rel_step``, default sqrt(eps) for "2-point" and "cs", eps^(1/3) for "3-point"):
"2-point" (forward, n evaluations per gradient), "3-point" (central, 2n; one-sided second order
next to a bound) or "cs" (complex step, n evaluations of ``fun`` at complex x). The steps and
their adjustment to the bounds are SciPy's (``scipy.optimize._numdiff``), so the gradients are
SciPy's. Unknown option names warn (``OptimizeWarning`` "Unknown solver options: ...", as
SciPy), then are ignored. ``lbfgsb`` is the same solver in SciPy's custom-method protocol:
``scipy.optimize.minimize(fun, x0, method=fusedopt.optimize.lbfgsb, ...)``. The result's
``hess_inv`` is SciPy's ``LbfgsInvHessProduct`` of the stored pairs, or, without SciPy,
fusedopt's ``LbfgsInvHessProduct`` (the same operator and methods, NumPy only).
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

__all__ = ["minimize", "lbfgsb", "LbfgsInvHessProduct", "FD_METHODS"]

#: The finite-difference schemes of ``jac`` (SciPy's names).
FD_METHODS = ("2-point", "3-point", "cs")

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
            self.mode, self.method, self.abs_step = "fd", "2-point", eps
        elif isinstance(jac, str) and jac in FD_METHODS:
            self.mode, self.method, self.abs_step = "fd", jac, None
        else:
            raise ValueError("jac must be True, a callable, None or one of "
                             f"{', '.join(map(repr, FD_METHODS))}, got {jac!r}")
        self.rel_step = rel_step

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

    def _steps(self, x):
        """SciPy's steps h (``approx_derivative``): the absolute ``eps`` (jac None), or
        ``rel_step * sign(x) * |x|`` (given ``finite_diff_rel_step``) or ``r * sign(x) *
        max(1, |x|)`` (r = sqrt(eps) for "2-point"/"cs", eps^(1/3) for "3-point"; also where a
        step would not change x), sign(0) = 1; then, for "2-point" and "3-point", adjusted to
        the box."""
        sign = np.where(x >= 0, 1.0, -1.0)
        eps = np.finfo(np.float64).eps
        r = eps ** (1 / 3) if self.method == "3-point" else eps ** 0.5
        fallback = r * sign * np.maximum(1.0, np.abs(x))
        if self.abs_step is not None:
            h = np.broadcast_to(np.asarray(self.abs_step, np.float64), x.shape)
            h = np.where((x + h) - x == 0, fallback, h)
        elif self.rel_step is not None:
            h = self.rel_step * sign * np.abs(x)
            h = np.where((x + h) - x == 0, fallback, h)
        else:
            h = fallback
        if self.method == "3-point":
            return self._fit_central(x, h)
        return self._fit(x, h), None

    def _fit(self, x, h):
        """One-sided steps kept in the box: turned backwards where x + h leaves it and x - h
        fits, shortened to the farther bound where neither fits (SciPy's '1-sided')."""
        if self.box is None or self.method == "cs":
            return h
        lo, hi = self.box.lo.astype(np.float64), self.box.hi.astype(np.float64)
        lower_dist, upper_dist = x - lo, hi - x
        x1 = x + h
        violated = (x1 < lo) | (x1 > hi)
        fitting = np.abs(h) <= np.maximum(lower_dist, upper_dist)
        h = h.copy()
        h[violated & fitting] *= -1
        forward = (upper_dist >= lower_dist) & ~fitting
        h[forward] = upper_dist[forward]
        backward = (upper_dist < lower_dist) & ~fitting
        h[backward] = -lower_dist[backward]
        return h

    def _fit_central(self, x, h):
        """Central steps kept in the box (SciPy's '2-sided'): (h, one_sided). Where x - h or x + h
        leaves the box, a one-sided second-order step toward the farther bound (at most half
        the distance), or a shorter central step when that is not smaller."""
        h = np.abs(h)
        one_sided = np.zeros(x.shape, bool)
        if self.box is None:
            return h, one_sided
        lo, hi = self.box.lo.astype(np.float64), self.box.hi.astype(np.float64)
        lower_dist, upper_dist = x - lo, hi - x
        central = (lower_dist >= h) & (upper_dist >= h)
        out = h.copy()
        forward = (upper_dist >= lower_dist) & ~central
        out[forward] = np.minimum(h[forward], 0.5 * upper_dist[forward])
        one_sided[forward] = True
        backward = (upper_dist < lower_dist) & ~central
        out[backward] = -np.minimum(h[backward], 0.5 * lower_dist[backward])
        one_sided[backward] = True
        min_dist = np.minimum(upper_dist, lower_dist)
        shorter = ~central & (np.abs(out) <= min_dist)
        out[shorter] = min_dist[shorter]
        one_sided[shorter] = False
        return out, one_sided

    def _differences(self, x, f0, g_out):
        """The gradient by SciPy's scheme ``self.method`` with SciPy's steps (``_steps``):
        forward ``(f(x + h e_i) - f0) / dx``; central ``(f(x + h e_i) - f(x - h e_i)) / dx`` or,
        one-sided, ``(-3 f0 + 4 f(x + h e_i) - f(x + 2 h e_i)) / dx`` (dx the steps as
        rounded in x); complex step ``Im f(x + i h e_i) / h``. A variable fixed by its bounds
        gets 0 without an evaluation (SciPy evaluates and divides 0 by 0)."""
        h, one_sided = self._steps(x)
        xt = x.copy()
        if self.method == "cs":
            xc = x.astype(complex)
            for i in range(x.size):
                xc[i] = x[i] + h[i] * 1j
                self.nfev += 1
                fc = np.asarray(self.fun(xc.copy(), *self.args))
                if fc.size != 1:
                    raise ValueError("fun must return a scalar, got an array of shape "
                                     f"{fc.shape}")
                g_out[i] = np.imag(fc.reshape(())) / h[i]
                xc[i] = x[i]
            return
        for i in range(x.size):
            xi = x[i]
            if h[i] == 0.0:             # a fixed variable (lo == hi): no step, no evaluation
                g_out[i] = 0.0
            elif self.method == "2-point":
                xt[i] = xi + h[i]
                dx = xt[i] - xi
                g_out[i] = (self._f(xt) - f0) / dx if dx != 0 else 0.0
            elif one_sided[i]:
                xt[i] = xi + h[i]
                f1 = self._f(xt)
                xt[i] = xi + 2 * h[i]
                f2 = self._f(xt)
                dx = xt[i] - xi
                g_out[i] = (-3.0 * f0 + 4 * f1 - f2) / dx
            else:
                xt[i] = xi - h[i]
                f1 = self._f(xt)
                lo_x = xt[i]
                xt[i] = xi + h[i]
                f2 = self._f(xt)
                g_out[i] = (f2 - f1) / (xt[i] - lo_x)
            xt[i] = xi


class LbfgsInvHessProduct:
    """The L-BFGS inverse-Hessian approximation of the stored pairs as a linear operator, for
    ``hess_inv`` when SciPy is not installed: the operator of SciPy's ``LbfgsInvHessProduct``
    (the two-loop recursion of Nocedal (1980) with H_0 = I, in float64) with the methods a
    ``scipy.sparse.linalg.LinearOperator`` user calls on it.

    Parameters
    ----------
    sk, yk : ndarray, shape (n_corrs, n)
        The pairs s_k = x_{k+1} - x_k and y_k = g_{k+1} - g_k, oldest first.

    Attributes: ``sk``, ``yk``, ``n_corrs``, ``rho`` (1 / s_k . y_k), ``shape`` (n, n),
    ``dtype`` (float64). ``H @ v``, ``H.matvec(v)``, ``H.dot(v)``, ``H(v)`` (v of shape (n,) or
    (n, 1)); ``H @ X``, ``H.matmat(X)`` (X of shape (n, k)); ``H.rmatvec``, ``H.T`` and
    ``H.H`` (H is symmetric); ``H.todense()``.
    """

    ndim = 2

    def __init__(self, sk, yk):
        sk, yk = np.asarray(sk, np.float64), np.asarray(yk, np.float64)
        if sk.shape != yk.shape or sk.ndim != 2:
            raise ValueError("sk and yk must have matching shape, (n_corrs, n)")
        self.n_corrs, n = sk.shape
        self.sk, self.yk = sk, yk
        self.rho = 1 / np.einsum("ij,ij->i", sk, yk)
        self.shape = (n, n)
        self.dtype = np.dtype(np.float64)

    def matmat(self, X):
        """H X for X of shape (n, k) (the two-loop recursion over the columns)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] != self.shape[1]:
            raise ValueError(f"dimension mismatch: operator of shape {self.shape}, operand of "
                             f"shape {X.shape}")
        q = np.array(X, dtype=np.float64, copy=True)
        alpha = np.empty((self.n_corrs, q.shape[1]))
        for i in range(self.n_corrs - 1, -1, -1):
            alpha[i] = self.rho[i] * (self.sk[i] @ q)
            q -= alpha[i] * self.yk[i][:, None]
        for i in range(self.n_corrs):
            beta = self.rho[i] * (self.yk[i] @ q)
            q += self.sk[i][:, None] * (alpha[i] - beta)
        return q

    def matvec(self, x):
        """H x for x of shape (n,) or (n, 1) (the result has x's shape)."""
        x = np.asarray(x)
        if x.shape not in ((self.shape[1],), (self.shape[1], 1)):
            raise ValueError(f"dimension mismatch: operator of shape {self.shape}, vector of "
                             f"shape {x.shape}")
        return self.matmat(x.reshape(-1, 1)).reshape(x.shape)

    rmatvec = matvec        # H is symmetric

    def dot(self, x):
        x = np.asarray(x)
        return self.matvec(x) if x.ndim == 1 or x.shape[1:] == (1,) else self.matmat(x)

    __matmul__ = dot
    __call__ = dot

    def todense(self):
        """H as a dense (n, n) array."""
        return self.matmat(np.eye(self.shape[0]))

    @property
    def T(self):    # noqa: N802 -- LinearOperator's name
        return self

    H = T

    def transpose(self):
        return self

    adjoint = transpose

    def __repr__(self):
        return (f"<{self.shape[0]}x{self.shape[1]} fusedopt.optimize.LbfgsInvHessProduct with "
                f"{self.n_corrs} pairs, dtype=float64>")


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
        rel = np.asarray(finite_diff_rel_step)
        if rel.dtype.kind not in "fiu":
            raise TypeError("finite_diff_rel_step must be a real number or array, got "
                            f"{type(finite_diff_rel_step).__name__}")
        rel = rel.astype(np.float64)
        if rel.ndim and rel.size != x0.size or not (np.isfinite(rel).all() and (rel >= 0).all()):
            raise ValueError("finite_diff_rel_step must be a finite number >= 0 or an array of "
                             "x0's size")
        finite_diff_rel_step = rel
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
    s, y = solver.cf.pairs()
    res.hess_inv = (so.LbfgsInvHessProduct if so is not None else LbfgsInvHessProduct)(s, y)
    return res


def minimize(fun, x0, args=(), method="L-BFGS-B", jac=None, hess=None, hessp=None,
             bounds=None, constraints=(), tol=None, callback=None, options=None):
    """``scipy.optimize.minimize`` for ``method="L-BFGS-B"``, solved by fusedopt.

    Parameters are SciPy's: ``fun(x, *args) -> f`` (or ``(f, grad)`` with ``jac=True``);
    ``x0`` 1-D (integers converted to float64); ``jac`` True, a callable ``jac(x, *args)``, None
    (forward differences, absolute step ``options["eps"]``) or "2-point", "3-point", "cs"
    (relative steps, ``options["finite_diff_rel_step"]``); ``bounds`` a sequence
    of ``(lo, hi)`` (None: no bound), a ``scipy.optimize.Bounds`` or two arrays; ``tol`` sets
    ``ftol`` and ``gtol`` unless given in ``options``; ``callback(intermediate_result)`` or
    ``callback(xk)`` after each iteration, ``StopIteration`` from it ends the run with status
    99; ``options``: ``maxcor``, ``ftol``, ``gtol``, ``eps``, ``maxfun``, ``maxiter``,
    ``maxls``, ``finite_diff_rel_step`` (``disp``, ``iprint`` ignored; unknown names warn).
    ``method`` must be "L-BFGS-B" (any case) or None; ``hess``, ``hessp`` and ``constraints``
    warn as SciPy does and are ignored.

    Returns a ``scipy.optimize.OptimizeResult`` (fusedopt's own without SciPy) with ``x``,
    ``fun``, ``jac``, ``nit``, ``nfev``, ``njev``, ``status``, ``success``, ``message`` and
    ``hess_inv``, a linear operator of the stored pairs (oldest first): SciPy's
    ``LbfgsInvHessProduct``, or fusedopt's (``fusedopt.optimize.LbfgsInvHessProduct``, the
    same operator) without SciPy.
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
