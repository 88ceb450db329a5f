"""Second-order references for small problems, in plain NumPy: Newton's method and
preconditioned gradient descent.

Both take ``fun(x) -> (f, grad)`` (as ``fusedopt.lbfgs.minimize`` and SciPy's ``jac=True`` do)
and return an ``OptimizeResult`` (``fusedopt.lbfgs.OptimizeResult``: SciPy's fields ``x, fun,
jac, nit, nfev, success, status, message``, readable as attributes) that also holds ``path``,
the iterates ``x_0 .. x_k`` as rows, and ``fvals``, their values, for plotting trajectories
and measuring convergence rates::

    >>> from fusedopt.functions import rosenbrock
    >>> r = newton(rosenbrock.value_and_grad, [-1.2, 1.0], rosenbrock.hess)
    >>> r.x, r.nit
    (array([1., 1.]), 7)

Status codes: 0 gradient norm (inf-norm) <= gtol, 1 maxiter reached, 2 the Newton system is
singular, 3 a value or gradient became non-finite, 4 ``callback(x)`` returned True.

Layer: algorithms (plain NumPy references; no kernels).
"""
from __future__ import annotations

import numpy as np

from . import _checks
from ._checks import nonneg, real
from .lbfgs.result import OptimizeResult

__all__ = ["newton", "preconditioned_gd"]

_MESSAGES = {
    0: "gradient norm <= gtol",
    1: "maximum number of iterations reached",
    2: "the Newton system is singular",
    3: "non-finite value or gradient",
    4: "stopped by the callback",
}


def _x0(x0):
    x = np.array(x0, dtype=np.float64, copy=True)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 must be finite")
    return x


def _eval(fun, x):
    out = fun(x)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("fun must return a tuple (value, gradient)")
    f, g = out
    g = np.asarray(g, dtype=np.float64)
    if g.shape != x.shape:
        raise ValueError(f"fun returned a gradient of shape {g.shape} for x of shape {x.shape}")
    return float(f), g


def _iterate(fun, x, direction, *, step, maxiter, gtol, callback):
    """The common loop: x <- x + step * direction(x, g) until the gradient is small."""
    f, g = _eval(fun, x)
    path, fvals = [x.copy()], [f]
    nfev, status, nit = 1, 1, 0
    while True:
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            status = 3
            break
        if np.max(np.abs(g)) <= gtol:
            status = 0
            break
        if nit >= maxiter:
            status = 1
            break
        d = direction(x, g)
        if d is None:
            status = 2
            break
        x = x + step * d
        nit += 1
        f, g = _eval(fun, x)
        nfev += 1
        path.append(x.copy())
        fvals.append(f)
        if callback is not None and callback(x.copy()) is True:
            status = 4
            break
    return OptimizeResult(x=x, fun=f, jac=g, nit=nit, nfev=nfev, status=status, success=status == 0,
                  message=_MESSAGES[status], path=np.array(path), fvals=np.array(fvals))


def newton(fun, x0, hess, *, damping=0.0, step_size=1.0, maxiter=100, gtol=1e-10,
           callback=None):
    """Newton's method: ``x <- x - step_size * (H(x) + damping * I)^-1 grad(x)``.

    ``fun(x) -> (f, grad)``; ``hess(x) -> H`` (n, n). ``damping`` (>= 0) is the Levenberg
    shift that keeps the system solvable and the step a descent direction when H is
    indefinite or nearly singular; 0 is the pure Newton step, which converges quadratically
    near a minimizer with a nonsingular Hessian (and lands on the minimizer of a quadratic
    in one step). ``step_size`` < 1 shortens every step (the other common damping).
    Stops when ``max |grad| <= gtol``, after ``maxiter`` steps, or when ``callback(x)``
    returns True. Returns an ``OptimizeResult`` with the iterates in ``path``."""
    _checks.function("fun", fun)
    _checks.function("hess", hess)
    x = _x0(x0)
    damping = nonneg("damping", damping)
    step_size = real("step_size", step_size)
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    gtol = nonneg("gtol", gtol)
    maxiter = _checks.integer("maxiter", maxiter, minimum=0)
    n = x.size
    counter = {"njev": 0}

    def direction(x, g):
        H = np.asarray(hess(x), dtype=np.float64)
        counter["njev"] += 1
        if H.shape != (n, n):
            raise ValueError(f"hess returned shape {H.shape}, expected {(n, n)}")
        if damping:
            H = H + damping * np.eye(n)
        if not np.all(np.isfinite(H)):
            return None
        try:
            return -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            return None

    r = _iterate(fun, x, direction, step=step_size, maxiter=maxiter, gtol=gtol,
                 callback=callback)
    r.nhev = counter["njev"]
    return r


def preconditioned_gd(fun, x0, P=None, *, lr=1.0, maxiter=1000, gtol=1e-10, callback=None):
    """Preconditioned gradient descent: ``x <- x - lr * P grad(x)``.

    ``P``: an (n, n) matrix, an (n,) vector (a diagonal preconditioner), or None (the
    identity: plain gradient descent). For ``f = 1/2 x^T Q x`` the choice ``P = Q^-1``,
    ``lr = 1`` is Newton's step and lands on the minimum in one step; ``P = diag(Q)^-1`` is
    Jacobi (diagonal) preconditioning. ``gtol=0`` runs all ``maxiter`` steps (unless the
    gradient is exactly zero). Returns an ``OptimizeResult`` with the iterates in ``path``."""
    _checks.function("fun", fun)
    x = _x0(x0)
    n = x.size
    lr = nonneg("lr", lr)
    gtol = nonneg("gtol", gtol)
    maxiter = _checks.integer("maxiter", maxiter, minimum=0)
    if P is None:
        def direction(x, g):
            return -g
    else:
        Pm = np.asarray(P)
        if Pm.dtype.kind not in "iuf":
            raise TypeError(f"P must be a real matrix or vector, got dtype {Pm.dtype}")
        Pm = Pm.astype(np.float64)
        if Pm.shape not in ((n, n), (n,)):
            raise ValueError(f"P must have shape {(n, n)} or {(n,)} for x0 of size {n}, "
                             f"got {Pm.shape}")
        if not np.all(np.isfinite(Pm)):
            raise ValueError("P must be finite")

        def direction(x, g):
            return -(Pm @ g if Pm.ndim == 2 else Pm * g)

    return _iterate(fun, x, direction, step=lr, maxiter=maxiter, gtol=gtol, callback=callback)
