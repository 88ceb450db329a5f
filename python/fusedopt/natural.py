"""Natural gradient descent: ``w <- w - lr * (G(w) + damping * I)^-1 grad f(w)``.

Layer: algorithms (plain NumPy: no kernels, no optional package).

The metric ``G(w)`` is symmetric positive (semi)definite: it measures how far a step moves the
model, not the parameters. The update multiplies the gradient by the *inverse* of the metric
(it solves ``(G + damping I) d = g``; it never forms an inverse). Where ``G`` is the Fisher
information of a probabilistic model, ``d`` is the steepest-descent direction of the loss when
step lengths are measured by the KL divergence between the model's distributions (Amari 1998);
where ``G`` is the Hessian, the step is Newton's.

The metric can be

* a matrix, or a callable ``metric(w)`` returning the (n, n) matrix ``G(w)``;
* a callable ``metric_vp(w, v)`` returning the product ``G(w) v`` (``G`` is never formed);
* a ``Metric`` (or a callable returning one): a product and, where it is cheap, the matrix.
  ``LogisticRegression.fisher`` and ``SoftmaxRegression.fisher`` give the exact Fisher of
  those models, ``empirical_fisher`` the empirical Fisher ``J^T J / m`` of per-sample
  gradients ``J``.

The system is solved by Cholesky where the matrix is at hand and ``n <= CHOLESKY_MAX_N``,
otherwise by conjugate gradient on metric-vector products (``conjugate_gradient``), which
never forms ``G``. ``damping`` (the Tikhonov/Levenberg term ``lambda I``) makes a singular
metric (the softmax Fisher always is) invertible and moves the step towards gradient descent
with step ``lr / damping`` as it grows.

    >>> import numpy as np
    >>> from fusedopt.natural import LogisticRegression, natural_gradient
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 3))
    >>> y = (X @ [1.0, -2.0, 0.5] + rng.standard_normal(200) > 0).astype(float)
    >>> model = LogisticRegression(X, y)
    >>> r = natural_gradient(model.value_and_grad, np.zeros(3), model.fisher, gtol=1e-10)
    >>> r.success, r.nit
    (True, 7)
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _checks
from .lbfgs.result import OptimizeResult
from .newton import _iterate, _x0

__all__ = ["Metric", "metric_from_matrix", "empirical_fisher", "LogisticRegression",
           "SoftmaxRegression", "natural_direction", "conjugate_gradient", "natural_gradient",
           "CHOLESKY_MAX_N", "METHODS"]

#: ``method="auto"`` solves by Cholesky up to this dimension (when the matrix is at hand), by
#: conjugate gradient above it.
CHOLESKY_MAX_N = 1000

#: The solvers of ``natural_direction``.
METHODS = ("auto", "cholesky", "cg")

_CG_MESSAGES = {
    0: "residual norm <= rtol * |b|",
    1: "maximum number of iterations reached",
    2: "the matrix is not positive definite (p^T A p <= 0)",
}


# -- the metric --------------------------------------------------------------------------------


def _real_array(name: str, a: Any) -> NDArray[np.float64]:
    """``a`` as a float64 array; TypeError naming ``name`` unless it is real numbers."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _vector(name: str, v: Any, n: int) -> NDArray[np.float64]:
    """``v`` as a finite float64 vector of shape (n,), else TypeError/ValueError."""
    arr = _real_array(name, v)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape {(n,)}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


class Metric:
    """The metric ``G`` at one point: the product ``v -> G v`` and, optionally, the matrix.

    Parameters
    ----------
    n : int
        The dimension (>= 1).
    matvec : callable
        ``matvec(v) -> G v`` for a vector ``v`` of shape (n,).
    matrix : callable or None, default None
        ``matrix() -> G`` of shape (n, n), where forming it is cheap (small ``n``); None when
        only products are available. ``dense()`` then builds it from ``n`` products.

    Examples
    --------
    >>> m = Metric(2, lambda v: np.array([2.0, 3.0]) * v)
    >>> m.matvec(np.ones(2))
    array([2., 3.])
    >>> m.dense()
    array([[2., 0.],
           [0., 3.]])
    """

    def __init__(self, n: int, matvec: Callable, matrix: Callable | None = None) -> None:
        self.n = _checks.integer("n", n, minimum=1)
        self._matvec = _checks.function("matvec", matvec)
        self._matrix = _checks.function("matrix", matrix, optional=True)

    @property
    def has_matrix(self) -> bool:
        """Whether the matrix can be had without ``n`` products."""
        return self._matrix is not None

    def matvec(self, v: ArrayLike) -> NDArray[np.float64]:
        """``G v``, checked to be a finite vector of shape (n,)."""
        out = self._matvec(v)
        return _vector("metric-vector product G v", out, self.n)

    def dense(self) -> NDArray[np.float64]:
        """The matrix ``G`` (from ``matrix()``, else column by column from ``n`` products),
        checked to be square, finite and symmetric."""
        if self._matrix is not None:
            return _check_matrix("metric", self._matrix(), self.n)
        eye = np.eye(self.n)
        return _check_matrix("metric", np.column_stack([self.matvec(e) for e in eye]), self.n)

    def __repr__(self) -> str:
        return f"Metric(n={self.n}, matrix={'yes' if self.has_matrix else 'no'})"


def _check_matrix(name: str, G: Any, n: int | None = None) -> NDArray[np.float64]:
    """``G`` as a finite, symmetric float64 matrix of shape (n, n)."""
    G = _real_array(name, G)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {G.shape}")
    if n is not None and G.shape[0] != n:
        raise ValueError(f"{name} must have shape {(n, n)}, got {G.shape}")
    if not np.all(np.isfinite(G)):
        raise ValueError(f"{name} must be finite")
    scale = float(np.max(np.abs(G))) if G.size else 0.0
    if np.max(np.abs(G - G.T), initial=0.0) > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric (max |G - G^T| = "
                         f"{float(np.max(np.abs(G - G.T))):.3g})")
    return G


def metric_from_matrix(G: ArrayLike) -> Metric:
    """A ``Metric`` of a given matrix ``G`` (checked: square, finite, symmetric).

    Parameters
    ----------
    G : array_like, shape (n, n)
        The metric.

    Examples
    --------
    >>> metric_from_matrix([[2.0, 0.0], [0.0, 4.0]]).matvec([1.0, 1.0])
    array([2., 4.])
    """
    Gm = _check_matrix("metric", G)
    return Metric(Gm.shape[0], lambda v: Gm @ np.asarray(v, dtype=np.float64), lambda: Gm)


def empirical_fisher(per_sample_grads: ArrayLike) -> Metric:
    """The empirical Fisher ``F = J^T J / m`` of per-sample gradients ``J`` (m, n).

    ``F v = J^T (J v) / m`` costs two passes over ``J``; the matrix is formed only when asked
    for (``dense()``, or Cholesky). The empirical Fisher is the uncentered second moment of the
    observed gradients: it equals the Fisher only in expectation over the model's own labels
    (see ``LogisticRegression.fisher``), and it is not the covariance of the gradients.

    Parameters
    ----------
    per_sample_grads : array_like, shape (m, n)
        Row ``i`` is the gradient of sample ``i``'s loss.

    Examples
    --------
    >>> F = empirical_fisher([[1.0, 0.0], [1.0, 2.0]])
    >>> F.dense()
    array([[1., 1.],
           [1., 2.]])
    """
    J = _real_array("per_sample_grads", per_sample_grads)
    if J.ndim != 2 or J.shape[0] == 0 or J.shape[1] == 0:
        raise ValueError(f"per_sample_grads must be a non-empty (m, n) matrix, got shape "
                         f"{J.shape}")
    if not np.all(np.isfinite(J)):
        raise ValueError("per_sample_grads must be finite")
    m = J.shape[0]
    return Metric(J.shape[1], lambda v: J.T @ (J @ np.asarray(v, dtype=np.float64)) / m,
                  lambda: J.T @ J / m)


# -- models with their exact Fisher ------------------------------------------------------------


def _design(X: Any) -> NDArray[np.float64]:
    Xa = _real_array("X", X)
    if Xa.ndim != 2 or Xa.shape[0] == 0 or Xa.shape[1] == 0:
        raise ValueError(f"X must be a non-empty (m, n) matrix, got shape {Xa.shape}")
    if not np.all(np.isfinite(Xa)):
        raise ValueError("X must be finite")
    return Xa


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.exp(-np.logaddexp(0.0, -z))


class LogisticRegression:
    """Binary logistic regression ``p(y = 1 | x) = sigmoid(x . w)``: the mean negative
    log-likelihood, its gradient, per-sample gradients and the exact Fisher information.

    The Fisher of the model at ``w`` is ``F = X^T diag(p (1 - p)) X / m`` with
    ``p = sigmoid(X w)``: the expectation of ``g g^T`` over labels drawn from the model. For
    this model (a canonical-link GLM) it equals the Hessian of the loss, so natural gradient
    with ``lr = 1`` is Newton's method (Fisher scoring).

    Parameters
    ----------
    X : array_like, shape (m, n)
        The inputs, one row per sample (add a column of ones for a bias).
    y : array_like, shape (m,)
        The labels, 0 or 1.

    Examples
    --------
    >>> model = LogisticRegression([[1.0, 0.0], [0.0, 1.0]], [1, 0])
    >>> f, g = model.value_and_grad(np.zeros(2))
    >>> round(f, 6), g
    (0.693147, array([-0.25,  0.25]))
    >>> model.fisher(np.zeros(2)).dense()
    array([[0.125, 0.   ],
           [0.   , 0.125]])
    """

    def __init__(self, X: ArrayLike, y: ArrayLike) -> None:
        self.X = _design(X)
        ya = _real_array("y", y)
        if ya.shape != (self.X.shape[0],):
            raise ValueError(f"y must have shape {(self.X.shape[0],)} (one label per row of "
                             f"X), got {ya.shape}")
        if not np.all((ya == 0) | (ya == 1)):
            raise ValueError("y must hold labels 0 and 1 only")
        self.y = ya

    @property
    def n(self) -> int:
        """The number of parameters."""
        return self.X.shape[1]

    def _w(self, w: ArrayLike) -> NDArray[np.float64]:
        return _vector("w", w, self.n)

    def value_and_grad(self, w: ArrayLike) -> tuple[float, NDArray[np.float64]]:
        """The mean negative log-likelihood at ``w`` and its gradient ``X^T (p - y) / m``."""
        w = self._w(w)
        z = self.X @ w
        f = float(np.mean(np.logaddexp(0.0, z) - self.y * z))
        return f, self.X.T @ (_sigmoid(z) - self.y) / self.X.shape[0]

    def per_sample_grads(self, w: ArrayLike) -> NDArray[np.float64]:
        """Row ``i``: the gradient of sample ``i``'s loss, ``(p_i - y_i) x_i`` (m, n)."""
        w = self._w(w)
        return (_sigmoid(self.X @ w) - self.y)[:, None] * self.X

    def fisher(self, w: ArrayLike) -> Metric:
        """The exact Fisher at ``w``: products ``X^T (s * (X v)) / m`` with ``s = p (1 - p)``,
        and the matrix ``X^T diag(s) X / m``."""
        w = self._w(w)
        p = _sigmoid(self.X @ w)
        s = p * (1.0 - p) / self.X.shape[0]
        X = self.X
        return Metric(self.n, lambda v: X.T @ (s * (X @ np.asarray(v, dtype=np.float64))),
                      lambda: (X * s[:, None]).T @ X)

    def empirical_fisher(self, w: ArrayLike) -> Metric:
        """The empirical Fisher at ``w`` (``empirical_fisher`` of ``per_sample_grads(w)``)."""
        return empirical_fisher(self.per_sample_grads(w))


class SoftmaxRegression:
    """Multinomial (softmax) regression ``p(y = c | x) = softmax(x^T W)_c`` with ``W`` of shape
    (n, k), flattened row-major into the parameter vector ``w`` (``W = w.reshape(n, k)``): the
    mean negative log-likelihood, its gradient, per-sample gradients and the exact Fisher.

    The Fisher is ``F = sum_i (x_i x_i^T) kron (diag(p_i) - p_i p_i^T) / m``; its products
    ``F vec(V) = vec(X^T S) / m`` with ``U = X V``, ``S = P * U - P * rowsum(P * U)`` cost
    two passes over ``X``. ``F`` is singular (adding one vector to every column of ``W``
    leaves every ``p_i`` unchanged): natural gradient on this model needs ``damping > 0``.
    As for logistic regression, ``F`` equals the Hessian of the loss.

    Parameters
    ----------
    X : array_like, shape (m, n)
        The inputs, one row per sample.
    y : array_like, shape (m,)
        The class labels, integers in ``[0, k)``.
    k : int or None, default None
        The number of classes (None: ``max(y) + 1``).

    Examples
    --------
    >>> model = SoftmaxRegression([[1.0], [2.0]], [0, 2])
    >>> model.n, model.k
    (3, 3)
    >>> round(model.value_and_grad(np.zeros(3))[0], 6)           # log 3
    1.098612
    """

    def __init__(self, X: ArrayLike, y: ArrayLike, k: int | None = None) -> None:
        self.X = _design(X)
        ya = np.asarray(y)
        if ya.dtype.kind not in "iu":
            raise TypeError(f"y must hold integer class labels, got dtype {ya.dtype}")
        if ya.shape != (self.X.shape[0],):
            raise ValueError(f"y must have shape {(self.X.shape[0],)} (one label per row of "
                             f"X), got {ya.shape}")
        kk = int(ya.max()) + 1 if k is None else _checks.integer("k", k, minimum=2)
        if kk < 2:
            raise ValueError(f"k must be >= 2 classes, got {kk}")
        if ya.min() < 0 or ya.max() >= kk:
            raise ValueError(f"y must hold labels in [0, {kk}), got [{ya.min()}, {ya.max()}]")
        self.y, self.k = ya.astype(np.intp), kk
        self._onehot = np.eye(kk)[self.y]

    @property
    def n(self) -> int:
        """The number of parameters, ``X.shape[1] * k``."""
        return self.X.shape[1] * self.k

    def _probs(self, w: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        W = _vector("w", w, self.n).reshape(self.X.shape[1], self.k)
        Z = self.X @ W
        Z = Z - Z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(Z).sum(axis=1))
        return Z - lse[:, None], np.exp(Z - lse[:, None])       # log p, p

    def value_and_grad(self, w: ArrayLike) -> tuple[float, NDArray[np.float64]]:
        """The mean negative log-likelihood at ``w`` and its gradient ``vec(X^T (P - Y)) / m``
        (``Y`` the one-hot labels)."""
        logp, P = self._probs(w)
        m = self.X.shape[0]
        f = float(-np.mean(logp[np.arange(m), self.y]))
        return f, (self.X.T @ (P - self._onehot) / m).ravel()

    def per_sample_grads(self, w: ArrayLike) -> NDArray[np.float64]:
        """Row ``i``: the gradient of sample ``i``'s loss, ``vec(x_i (p_i - y_i)^T)``
        (m, n)."""
        _, P = self._probs(w)
        R = P - self._onehot
        return (self.X[:, :, None] * R[:, None, :]).reshape(self.X.shape[0], -1)

    def fisher(self, w: ArrayLike) -> Metric:
        """The exact Fisher at ``w``: products (two passes over ``X``, ``F`` never formed) and
        the matrix (``k^2`` products of size (n, m) x (m, n); for small problems)."""
        _, P = self._probs(w)
        X, m, d, k = self.X, self.X.shape[0], self.X.shape[1], self.k

        def matvec(v):
            U = X @ np.asarray(v, dtype=np.float64).reshape(d, k)
            PU = P * U
            S = PU - P * PU.sum(axis=1, keepdims=True)
            return (X.T @ S / m).ravel()

        def matrix():
            F = np.empty((d, k, d, k))
            for c in range(k):
                for e in range(k):
                    s = P[:, c] * ((c == e) - P[:, e]) / m
                    F[:, c, :, e] = (X * s[:, None]).T @ X
            return F.reshape(d * k, d * k)

        return Metric(self.n, matvec, matrix)

    def empirical_fisher(self, w: ArrayLike) -> Metric:
        """The empirical Fisher at ``w`` (``empirical_fisher`` of ``per_sample_grads(w)``)."""
        return empirical_fisher(self.per_sample_grads(w))


# -- solving (G + damping I) d = g -------------------------------------------------------------


def conjugate_gradient(matvec: Callable, b: ArrayLike, *, rtol: float = 1e-10,
                       maxiter: int | None = None) -> OptimizeResult:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` given by its products.

    The conjugate gradient method (Nocedal & Wright, *Numerical Optimization*, Algorithm 5.2)
    from ``x_0 = 0``: at most ``n`` iterations in exact arithmetic, one product ``A p`` each;
    ``A`` is never formed.

    Parameters
    ----------
    matvec : callable
        ``matvec(p) -> A p``.
    b : array_like, shape (n,)
        The right-hand side (finite).
    rtol : float, default 1e-10
        Stop when ``|r| <= rtol * |b|`` (``r = b - A x``, Euclidean norms); > 0.
    maxiter : int or None, default None
        At most this many iterations (None: ``10 * n``).

    Returns
    -------
    OptimizeResult
        ``x`` the solution, ``nit`` iterations (= products), ``residual`` ``|r|``,
        ``success``, ``status`` (0 converged, 1 ``maxiter`` reached, 2 a direction with
        ``p^T A p <= 0``: ``A`` is not positive definite; ``x`` is then the last iterate),
        ``message``.

    Examples
    --------
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> r = conjugate_gradient(lambda p: A @ p, [1.0, 2.0])
    >>> r.x, r.nit
    (array([0.09090909, 0.63636364]), 2)
    """
    _checks.function("matvec", matvec)
    bb = _real_array("b", b)
    if bb.ndim != 1 or bb.size == 0:
        raise ValueError(f"b must be a non-empty vector, got shape {bb.shape}")
    bb = _vector("b", bb, bb.size)
    rtol = _checks.real("rtol", rtol)
    if rtol <= 0:
        raise ValueError(f"rtol must be > 0, got {rtol}")
    n = bb.size
    maxiter = 10 * n if maxiter is None else _checks.integer("maxiter", maxiter, minimum=0)
    x = np.zeros(n)
    r = bb.copy()                       # r = b - A x, with x = 0
    p = r.copy()
    rr = float(r @ r)
    stop = (rtol * float(np.linalg.norm(bb))) ** 2
    status, nit = 1, 0
    while True:
        if rr <= stop:
            status = 0
            break
        if nit >= maxiter:
            break
        Ap = _vector("matvec(p)", matvec(p), n)
        pAp = float(p @ Ap)
        if not pAp > 0.0:
            status = 2
            break
        alpha = rr / pAp
        x += alpha * p
        r -= alpha * Ap
        nit += 1
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return OptimizeResult(x=x, nit=nit, nfev=nit, residual=float(np.sqrt(rr)),
                          success=status == 0, status=status, message=_CG_MESSAGES[status])


def _as_metric(metric: Any, n: int) -> Metric:
    """A ``Metric`` of dimension ``n`` from a ``Metric`` or a matrix."""
    if isinstance(metric, Metric):
        if metric.n != n:
            raise ValueError(f"metric has dimension {metric.n}, the gradient {n}")
        return metric
    if callable(metric):
        raise TypeError("metric must be a Metric or a matrix here; pass a callable metric(w) "
                        "to natural_gradient")
    Gm = _check_matrix("metric", metric, n)
    return Metric(n, lambda v: Gm @ v, lambda: Gm)


def _method(method: Any) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _solve(M: Metric, g, damping, method, rtol, maxiter):
    """``((G + damping I)^-1 g, CG iterations)``; ValueError if ``G + damping I`` is not
    positive definite."""
    if method == "auto":
        method = "cholesky" if M.has_matrix and M.n <= CHOLESKY_MAX_N else "cg"
    if method == "cholesky":
        A = M.dense() + damping * np.eye(M.n)
        try:
            L = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            raise ValueError(f"metric + damping * I is not positive definite (damping = "
                             f"{damping:g}; Cholesky failed): increase damping") from None
        return np.linalg.solve(L.T, np.linalg.solve(L, g)), 0
    if damping:
        def matvec(v):
            return M.matvec(v) + damping * v
    else:
        matvec = M.matvec
    r = conjugate_gradient(matvec, g, rtol=rtol, maxiter=maxiter)
    if r.status == 2:
        raise ValueError(f"metric + damping * I is not positive definite (damping = "
                         f"{damping:g}; conjugate gradient found p^T G p <= 0 at iteration "
                         f"{r.nit + 1}): increase damping")
    return r.x, r.nit


def natural_direction(metric: Metric | ArrayLike, g: ArrayLike, *, damping: float = 0.0,
                      method: str = "auto", rtol: float = 1e-10,
                      maxiter: int | None = None) -> NDArray[np.float64]:
    """The natural-gradient direction ``d = (G + damping I)^-1 g`` (the step is ``-lr d``).

    Parameters
    ----------
    metric : Metric or array_like, shape (n, n)
        ``G``: symmetric, and positive definite once ``damping`` is added.
    g : array_like, shape (n,)
        The gradient.
    damping : float, default 0.0
        ``lambda >= 0`` added to the diagonal.
    method : str, default "auto"
        ``"cholesky"`` (forms ``G``: from ``n`` products if the metric has no matrix),
        ``"cg"`` (conjugate gradient on products, never forms ``G``), or ``"auto"``
        (Cholesky when the matrix is at hand and ``n <= CHOLESKY_MAX_N``, else CG).
    rtol : float, default 1e-10
        CG's relative residual tolerance (> 0).
    maxiter : int or None, default None
        CG's iteration limit (None: ``10 n``); the last iterate is used if it is reached.

    Returns
    -------
    ndarray, shape (n,)
        ``d``, the solution of ``(G + damping I) d = g``.

    Raises
    ------
    ValueError
        If ``G + damping I`` is not positive definite, or on bad shapes and values;
        TypeError on arguments of the wrong type. Nothing is evaluated before the checks.

    Examples
    --------
    >>> natural_direction([[2.0, 0.0], [0.0, 8.0]], [2.0, 2.0])
    array([1.  , 0.25])
    >>> natural_direction([[0.0, 0.0], [0.0, 8.0]], [2.0, 2.0], damping=1.0, method="cg")
    array([2.        , 0.22222222])
    """
    gg = _real_array("g", g)
    if gg.ndim != 1 or gg.size == 0:
        raise ValueError(f"g must be a non-empty vector, got shape {gg.shape}")
    gg = _vector("g", gg, gg.size)
    M = _as_metric(metric, gg.size)
    damping = _checks.nonneg("damping", damping)
    method = _method(method)
    rtol = _checks.real("rtol", rtol)
    if rtol <= 0:
        raise ValueError(f"rtol must be > 0, got {rtol}")
    if maxiter is not None:
        _checks.integer("maxiter", maxiter, minimum=0)
    return _solve(M, gg, damping, method, rtol, maxiter)[0]


# -- the minimizer -----------------------------------------------------------------------------


def natural_gradient(fun: Callable, x0: ArrayLike, metric: Any = None, *,
                     metric_vp: Callable | None = None, lr: float = 1.0, damping: float = 0.0,
                     method: str = "auto", maxiter: int = 1000, gtol: float = 1e-8,
                     cg_rtol: float = 1e-10, cg_maxiter: int | None = None,
                     callback: Callable | None = None) -> OptimizeResult:
    """Minimize ``f`` by natural gradient descent.

    ``x_{k+1} = x_k - lr * (G(x_k) + damping I)^-1 grad f(x_k)``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (f, grad)``.
    x0 : array_like, shape (n,)
        The start (finite).
    metric : callable, Metric or array_like, default None
        ``G``: a callable ``metric(x)`` returning the (n, n) matrix or a ``Metric`` (for
        instance ``LogisticRegression(X, y).fisher``), or a fixed ``Metric`` or matrix. Give
        exactly one of ``metric`` and ``metric_vp``.
    metric_vp : callable or None, default None
        ``metric_vp(x, v) -> G(x) v``: the metric by its products only (solved by CG unless
        ``method="cholesky"``, which forms ``G`` from ``n`` products).
    lr : float, default 1.0
        The step length (> 0); 1 is the Newton-like full step.
    damping : float, default 0.0
        ``lambda >= 0`` added to the diagonal of ``G``.
    method : str, default "auto"
        The solver of ``(G + damping I) d = g``: ``"auto"``, ``"cholesky"`` or ``"cg"``
        (see ``natural_direction``).
    maxiter : int, default 1000
        At most this many steps (>= 0).
    gtol : float, default 1e-8
        Stop when ``max |grad f| <= gtol`` (>= 0).
    cg_rtol : float, default 1e-10
        CG's relative residual tolerance (> 0).
    cg_maxiter : int or None, default None
        CG's iteration limit per step (None: ``10 n``).
    callback : callable or None, default None
        ``callback(x)`` after every step; returning True stops.

    Returns
    -------
    OptimizeResult
        ``x``, ``fun``, ``jac``, ``nit``, ``nfev``, ``success``, ``status`` (0 gradient norm
        <= gtol, 1 ``maxiter`` reached, 3 a non-finite value or gradient, 4 stopped by the
        callback), ``message``, ``path`` (the iterates as rows), ``fvals`` (their values),
        ``nmev`` (metric evaluations), ``ncg`` (CG iterations in all, 0 for Cholesky).

    Raises
    ------
    ValueError
        If ``G + damping I`` is not positive definite at an iterate, or the metric has the
        wrong shape; TypeError/ValueError on bad arguments, before ``fun`` is called.

    Examples
    --------
    On a quadratic ``f = 1/2 x^T Q x - b^T x`` with ``G = Q`` one step lands on the minimum:

    >>> Q, b = np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([1.0, 1.0])
    >>> r = natural_gradient(lambda x: (0.5 * x @ Q @ x - b @ x, Q @ x - b), [5.0, -3.0], Q)
    >>> r.nit, r.x
    (1, array([0.2, 0.4]))
    """
    _checks.function("fun", fun)
    x = _x0(x0)
    n = x.size
    if (metric is None) == (metric_vp is None):
        raise TypeError("give exactly one of metric and metric_vp")
    if metric_vp is not None:
        _checks.function("metric_vp", metric_vp)
        fixed = None
    elif callable(metric):
        fixed = None
    elif isinstance(metric, Metric) or isinstance(metric, (np.ndarray, list, tuple)):
        fixed = _as_metric(metric, n)
    else:
        raise TypeError(f"metric must be a callable, a Metric or a matrix, got "
                        f"{type(metric).__name__}")
    lr = _checks.real("lr", lr)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    damping = _checks.nonneg("damping", damping)
    method = _method(method)
    maxiter = _checks.integer("maxiter", maxiter, minimum=0)
    gtol = _checks.nonneg("gtol", gtol)
    cg_rtol = _checks.real("cg_rtol", cg_rtol)
    if cg_rtol <= 0:
        raise ValueError(f"cg_rtol must be > 0, got {cg_rtol}")
    if cg_maxiter is not None:
        _checks.integer("cg_maxiter", cg_maxiter, minimum=0)
    _checks.function("callback", callback, optional=True)
    counts = {"nmev": 0, "ncg": 0}

    def metric_at(x):
        counts["nmev"] += 1
        if fixed is not None:
            return fixed
        if metric_vp is not None:
            return Metric(n, lambda v: metric_vp(x, v))
        G = metric(x)
        return G if isinstance(G, Metric) else _as_metric(G, n)

    def direction(x, g):
        M = metric_at(x)
        if M.n != n:
            raise ValueError(f"metric has dimension {M.n}, x0 {n}")
        d, k = _solve(M, g, damping, method, cg_rtol, cg_maxiter)
        counts["ncg"] += k
        return -d

    r = _iterate(fun, x, direction, step=lr, maxiter=maxiter, gtol=gtol, callback=callback)
    r.nmev, r.ncg = counts["nmev"], counts["ncg"]
    return r
