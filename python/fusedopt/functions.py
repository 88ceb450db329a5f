"""Classic test functions for optimizers: value, gradient and Hessian, over a batch of points.

Layer: tools (pure NumPy: no kernels).

Every function object works on an array ``x`` of shape ``(..., n)``: the last axis is the point,
the leading axes are a batch (a contour grid, a set of starts). ``value`` returns shape ``(...)``,
``grad`` shape ``(..., n)`` and ``hess`` shape ``(..., n, n)``. ``value_and_grad`` returns
``(f, g)``, the form minimizers take (``fusedopt.lbfgs.minimize``, SciPy's ``jac=True``)::

    >>> from fusedopt.functions import rosenbrock
    >>> float(rosenbrock.value([1.0, 1.0, 1.0]))
    0.0
    >>> xx, yy = np.meshgrid(np.linspace(-2, 2, 200), np.linspace(-1, 3, 200))
    >>> zz = rosenbrock.value(np.stack([xx, yy], axis=-1))       # (200, 200) for a contour plot

Float32 and float64 inputs are computed in their own dtype; integer inputs in float64.
``minimizer(n)`` is the known global minimizer in ``n`` dimensions and ``minimum`` its value.

Also here: ``quadratic(Q)`` (``x^T Q x``), and the Gabor model of a 1-D regression, with its
least-squares loss and gradient in the parameters ``phi``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["TestFunction", "Sphere", "Quadratic", "Rosenbrock", "Rastrigin", "Ackley",
           "sphere", "quadratic", "rosenbrock", "rosenbrock_extended", "rastrigin", "ackley",
           "gabor", "gabor_loss", "gabor_loss_and_grad"]


def _as_float_array(name, x):
    """``x`` as a float32/float64 array (integers become float64); TypeError naming ``name``
    for anything else (bool, complex, object, strings)."""
    a = np.asarray(x)
    if a.dtype.kind == "i" or a.dtype.kind == "u":
        return a.astype(np.float64)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be a real float or integer array, got dtype {a.dtype}")
    return a


def _points(x, *, min_n=1, even=False, name="x"):
    a = _as_float_array(name, x)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (the point), got a scalar")
    n = a.shape[-1]
    if n < min_n:
        raise ValueError(f"{name} must have at least {min_n} coordinates on its last axis, "
                         f"got {n}")
    if even and n % 2:
        raise ValueError(f"{name} must have an even number of coordinates, got {n}")
    return a


def _dim(n, *, min_n=1, even=False):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < min_n or (even and n % 2):
        raise ValueError(f"n must be {'an even int ' if even else 'an int '}>= {min_n}, got {n}")
    return int(n)


def _scalar_out(v):
    """Unwrap 0-d results into Python-like NumPy scalars (as ``np.sum`` returns)."""
    return v[()] if isinstance(v, np.ndarray) and v.ndim == 0 else v


class TestFunction:
    """Base class of the test functions: ``value`` (also the call), ``grad``, ``hess`` and
    ``value_and_grad`` over points ``x`` of shape ``(..., n)``, and ``minimizer(n)``,
    ``minimum``.

    Subclasses implement ``_value``, ``_grad`` and ``_hess`` on a checked float array of shape
    ``(..., n)``.

    Examples
    --------
    >>> f, g = sphere.value_and_grad(np.array([[1.0, 2.0], [0.0, 0.0]]))
    >>> f, g
    (array([5., 0.]), array([[2., 4.],
           [0., 0.]]))
    """

    __test__ = False          # not a pytest test class despite the name
    name = "function"
    minimum = 0.0
    _min_n = 1
    _even = False

    def _check(self, x):
        return _points(x, min_n=self._min_n, even=self._even)

    def _value(self, x: NDArray[np.floating]) -> Any:
        raise NotImplementedError

    def _grad(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        raise NotImplementedError

    def _hess(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        raise NotImplementedError

    def value(self, x: ArrayLike) -> Any:
        """f(x), shape ``x.shape[:-1]`` (a NumPy scalar for one point)."""
        return _scalar_out(self._value(self._check(x)))

    __call__ = value

    def grad(self, x: ArrayLike) -> NDArray[np.floating]:
        """The gradient, shape ``x.shape``."""
        return self._grad(self._check(x))

    def hess(self, x: ArrayLike) -> NDArray[np.floating]:
        """The Hessian, shape ``x.shape + (n,)``. Dense: meant for n up to a few hundred."""
        return self._hess(self._check(x))

    def value_and_grad(self, x: ArrayLike) -> tuple[Any, NDArray[np.floating]]:
        """``(f(x), grad f(x))``, the ``fun`` a minimizer takes."""
        a = self._check(x)
        return _scalar_out(self._value(a)), self._grad(a)

    def minimizer(self, n: int) -> NDArray[np.float64]:
        """The global minimizer in ``n`` dimensions (float64)."""
        return np.zeros(_dim(n, min_n=self._min_n, even=self._even))

    def __repr__(self) -> str:
        return self.name


class Sphere(TestFunction):
    """``f(x) = sum x_i^2``; minimum 0 at 0. The instance is ``sphere``.

    Examples
    --------
    >>> sphere([3.0, 4.0])
    np.float64(25.0)
    """

    name = "sphere"

    def _value(self, x):
        return np.sum(x * x, axis=-1)

    def _grad(self, x):
        return 2 * x

    def _hess(self, x):
        n = x.shape[-1]
        return np.broadcast_to(2 * np.eye(n, dtype=x.dtype), x.shape + (n,)).copy()


class Quadratic(TestFunction):
    """``f(x) = scale * x^T Q x`` with Q symmetric: gradient ``2 scale Q x``, Hessian
    ``2 scale Q``. ``scale=0.5`` gives the form ``1/2 x^T Q x`` whose Hessian is Q itself (so
    gradient descent is stable for ``lr < 2 / lambda_max(Q)`` and ``lr = 1`` with the
    preconditioner ``Q^-1`` reaches the minimum in one step). The minimizer is 0 when Q is
    positive semidefinite; with a negative eigenvalue the function has no minimum.

    Parameters
    ----------
    Q : array_like, shape (n, n)
        Symmetric, finite (stored symmetrized, as float64; ``eigenvalues`` holds its spectrum).
    scale : float, default 1.0
        > 0.

    Examples
    --------
    >>> f = Quadratic(np.diag([1.0, 4.0]), scale=0.5)
    >>> f([1.0, 1.0]), f.grad([1.0, 1.0])
    (np.float64(2.5), array([1., 4.]))
    """

    def __init__(self, Q: ArrayLike, scale: float = 1.0) -> None:
        q = _as_float_array("Q", Q).astype(np.float64)
        if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
            raise ValueError(f"Q must be a non-empty square matrix, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError("Q must be finite")
        if not np.allclose(q, q.T, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(q).max())):
            raise ValueError("Q must be symmetric")
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale!r}")
        self.Q: NDArray[np.float64] = 0.5 * (q + q.T)
        self.scale = float(scale)
        self.eigenvalues: NDArray[np.float64] = np.linalg.eigvalsh(self.Q)
        self.name = f"quadratic(n={q.shape[0]}, scale={self.scale:g})"
        self._min_n = q.shape[0]

    def _check(self, x):
        a = _points(x)
        if a.shape[-1] != self.Q.shape[0]:
            raise ValueError(f"x must have {self.Q.shape[0]} coordinates on its last axis "
                             f"(the size of Q), got {a.shape[-1]}")
        return a

    def _value(self, x):
        Q = self.Q.astype(x.dtype)
        return x.dtype.type(self.scale) * np.einsum("...i,ij,...j->...", x, Q, x)

    def _grad(self, x):
        return x.dtype.type(2 * self.scale) * (x @ self.Q.astype(x.dtype))

    def _hess(self, x):
        H = (2 * self.scale * self.Q).astype(x.dtype)
        return np.broadcast_to(H, x.shape + (x.shape[-1],)).copy()

    def minimizer(self, n: int | None = None) -> NDArray[np.float64]:
        if n is not None and n != self.Q.shape[0]:
            raise ValueError(f"n must be {self.Q.shape[0]} (the size of Q), got {n!r}")
        if self.eigenvalues[0] < -1e-12 * max(1.0, abs(self.eigenvalues[-1])):
            raise ValueError("Q has a negative eigenvalue: x^T Q x is unbounded below")
        return np.zeros(self.Q.shape[0])


class Rosenbrock(TestFunction):
    """Rosenbrock's function in n dimensions; minimum 0 at (1, ..., 1).

    ``form="chained"`` (``scipy.optimize.rosen``, n >= 2):
    ``sum_{i<n-1} 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2``.
    ``form="extended"`` (Moré, Garbow & Hillstrom 1981, even n): the same term on the
    independent pairs ``(x[0], x[1]), (x[2], x[3]), ...``.

    The instances are ``rosenbrock`` and ``rosenbrock_extended``.

    Parameters
    ----------
    form : {"chained", "extended"}, default "chained"

    Examples
    --------
    >>> rosenbrock([0.0, 0.0]), rosenbrock.grad([0.0, 0.0])
    (np.float64(1.0), array([-2.,  0.]))
    """

    def __init__(self, form: str = "chained") -> None:
        if form not in ("chained", "extended"):
            raise ValueError(f"form must be 'chained' or 'extended', got {form!r}")
        self.form = form
        self.name = "rosenbrock" if form == "chained" else "rosenbrock_extended"
        self._min_n = 2
        self._even = form == "extended"

    def _pairs(self, x):
        if self.form == "chained":
            return x[..., :-1], x[..., 1:]
        return x[..., 0::2], x[..., 1::2]

    def _value(self, x):
        u, v = self._pairs(x)
        return np.sum(100 * (v - u * u) ** 2 + (1 - u) ** 2, axis=-1)

    def _grad(self, x):
        u, v = self._pairs(x)
        r = v - u * u
        du = -400 * r * u - 2 * (1 - u)       # d/du of the term
        dv = 200 * r                          # d/dv of the term
        g = np.zeros_like(x)
        if self.form == "chained":
            g[..., :-1] += du
            g[..., 1:] += dv
        else:
            g[..., 0::2] = du
            g[..., 1::2] = dv
        return g

    def _hess(self, x):
        n = x.shape[-1]
        u, v = self._pairs(x)
        huu = 1200 * u * u - 400 * v + 2
        huv = -400 * u
        H = np.zeros(x.shape + (n,), x.dtype)
        iu = np.arange(n - 1) if self.form == "chained" else np.arange(0, n, 2)
        iv = iu + 1
        H[..., iu, iu] += huu
        H[..., iv, iv] += 200
        H[..., iu, iv] = huv
        H[..., iv, iu] = huv
        return H

    def minimizer(self, n):
        return np.ones(_dim(n, min_n=2, even=self._even))


class Rastrigin(TestFunction):
    """``f(x) = A n + sum(x_i^2 - A cos(2 pi x_i))``, A = 10; minimum 0 at 0, a local minimum
    near every integer point. The usual search box is [-5.12, 5.12]^n. The instance with
    A = 10 is ``rastrigin``.

    Parameters
    ----------
    A : float, default 10.0
        The height of the ripples, >= 0.

    Examples
    --------
    >>> float(rastrigin([0.0, 0.0])), float(Rastrigin(A=0.0)([1.0, 2.0]))
    (0.0, 5.0)
    """

    def __init__(self, A: float = 10.0) -> None:
        if isinstance(A, bool) or not isinstance(A, numbers.Real) or not math.isfinite(A):
            raise TypeError(f"A must be a finite real number, got {A!r}")
        if A < 0:
            raise ValueError(f"A must be >= 0, got {A}")
        self.A = float(A)
        self.name = "rastrigin" if A == 10 else f"rastrigin(A={A:g})"

    def _value(self, x):
        A, t = x.dtype.type(self.A), x.dtype.type(2 * math.pi)
        return A * x.shape[-1] + np.sum(x * x - A * np.cos(t * x), axis=-1)

    def _grad(self, x):
        t = x.dtype.type(2 * math.pi)
        return 2 * x + x.dtype.type(self.A) * t * np.sin(t * x)

    def _hess(self, x):
        n = x.shape[-1]
        t = x.dtype.type(2 * math.pi)
        d = 2 + x.dtype.type(self.A) * t * t * np.cos(t * x)
        H = np.zeros(x.shape + (n,), x.dtype)
        i = np.arange(n)
        H[..., i, i] = d
        return H


class Ackley(TestFunction):
    """``f(x) = -a exp(-b sqrt(mean x_i^2)) - exp(mean cos(c x_i)) + a + e``, with a = 20,
    b = 0.2, c = 2 pi; minimum 0 at 0. The usual box is [-32.768, 32.768]^n.

    At x = 0 the first term is a cone (not differentiable): ``grad`` returns 0 there (0 is in
    the subdifferential) and ``hess`` returns NaN (the Hessian is unbounded nearby). The
    instance with the defaults is ``ackley``.

    Parameters
    ----------
    a : float, default 20.0
    b : float, default 0.2
    c : float, default 2 * math.pi
        Finite real numbers.

    Examples
    --------
    >>> float(ackley([0.0, 0.0])), ackley.grad([0.0, 0.0])
    (0.0, array([0., 0.]))
    """

    def __init__(self, a: float = 20.0, b: float = 0.2, c: float = 2 * math.pi) -> None:
        for k, v in (("a", a), ("b", b), ("c", c)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise TypeError(f"{k} must be a finite real number, got {v!r}")
        self.a, self.b, self.c = float(a), float(b), float(c)
        default = (a, b, c) == (20.0, 0.2, 2 * math.pi)
        self.name = "ackley" if default else f"ackley(a={a:g}, b={b:g}, c={c:g})"

    def _parts(self, x):
        n = x.shape[-1]
        r = np.sqrt(np.sum(x * x, axis=-1) / n)
        E = np.exp(-x.dtype.type(self.b) * r)
        C = np.exp(np.mean(np.cos(x.dtype.type(self.c) * x), axis=-1))
        return n, r, E, C

    def _value(self, x):
        a, b, c = (x.dtype.type(v) for v in (self.a, self.b, self.c))
        r = np.sqrt(np.mean(x * x, axis=-1))
        M = np.mean(np.cos(c * x), axis=-1)
        # a (1 - exp(-b r)) + e (1 - exp(M - 1)): exactly 0 at x = 0 in either dtype, without
        # the cancellation of a + e against the two exponentials.
        return -a * np.expm1(-b * r) - x.dtype.type(math.e) * np.expm1(M - 1)

    def _grad(self, x):
        a, b, c = (x.dtype.type(v) for v in (self.a, self.b, self.c))
        n, r, E, C = self._parts(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(r > 0, a * b * E / (n * r), 0)
        return w[..., None] * x + (C * c / n)[..., None] * np.sin(c * x)

    def _hess(self, x):
        a, b, c = (x.dtype.type(v) for v in (self.a, self.b, self.c))
        n, r, E, C = self._parts(x)
        eye = np.eye(n, dtype=x.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = a * b * E / (n * r)
            k = a * b * E * (b + 1 / r) / (n * n * r * r)
            H = w[..., None, None] * eye - k[..., None, None] * (x[..., :, None] * x[..., None, :])
        H[r == 0] = np.nan
        s = np.sin(c * x)
        H += C[..., None, None] * (eye * (c * c / n * np.cos(c * x))[..., None, :]
                                   - (c * c / (n * n)) * (s[..., :, None] * s[..., None, :]))
        return H


sphere = Sphere()
rosenbrock = Rosenbrock("chained")
rosenbrock_extended = Rosenbrock("extended")
rastrigin = Rastrigin()
ackley = Ackley()


def quadratic(Q: ArrayLike, scale: float = 1.0) -> Quadratic:
    """The function ``scale * x^T Q x`` for a symmetric matrix Q (see ``Quadratic``).

    Parameters
    ----------
    Q : array_like, shape (n, n)
        Symmetric and finite.
    scale : float, default 1.0
        > 0.

    Examples
    --------
    >>> quadratic(np.eye(2))([1.0, 2.0])
    np.float64(5.0)
    """
    return Quadratic(Q, scale)


# -- the Gabor model -------------------------------------------------------------------------
_GABOR_K = 0.06


def _gabor_args(phi, x, y=None):
    phi = _points(phi, min_n=2, name="phi")
    if phi.shape[-1] != 2:
        raise ValueError(f"phi must have 2 parameters on its last axis, got {phi.shape[-1]}")
    x = _as_float_array("x", x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x must be a non-empty 1-D array of inputs, got shape {x.shape}")
    if y is not None:
        y = _as_float_array("y", y)
        if y.shape != x.shape:
            raise ValueError(f"y has shape {y.shape} but x has shape {x.shape}")
    dt = np.result_type(phi, x, y if y is not None else phi)
    return phi.astype(dt, copy=False), x.astype(dt, copy=False), (
        None if y is None else y.astype(dt, copy=False))


def _gabor_u(phi, x):
    return phi[..., 0, None] + _GABOR_K * phi[..., 1, None] * x     # shape (..., m)


def gabor(x: ArrayLike, phi: ArrayLike) -> NDArray[np.floating]:
    """The Gabor model ``f(x, phi) = sin(u) exp(-u^2 / 8)`` with ``u = phi0 + 0.06 phi1 x``.

    Parameters
    ----------
    x : array_like, shape (m,)
        The inputs.
    phi : array_like, shape (..., 2)
        The parameters ``(phi0, phi1)``, or a batch of them.

    Returns
    -------
    ndarray, shape (..., m)

    Examples
    --------
    >>> gabor([0.0, 10.0], [0.0, 0.0])
    array([0., 0.])
    """
    p, xs, _ = _gabor_args(phi, x)
    u = _gabor_u(p, xs)
    return np.sin(u) * np.exp(-u * u / 8)


def gabor_loss_and_grad(phi: ArrayLike, x: ArrayLike,
                        y: ArrayLike) -> tuple[Any, NDArray[np.floating]]:
    """The least-squares loss ``L(phi) = mean_i (f(x_i, phi) - y_i)^2`` of the Gabor model
    and its gradient in ``phi``.

    Parameters
    ----------
    phi : array_like, shape (..., 2)
        The parameters, or a batch of them.
    x, y : array_like, shape (m,)
        The inputs and the targets.

    Returns
    -------
    loss : float or ndarray, shape (...)
    grad : ndarray, shape (..., 2)

    Examples
    --------
    >>> x = np.linspace(-5, 5, 11)
    >>> loss, grad = gabor_loss_and_grad([0.5, 1.0], x, gabor(x, [0.5, 1.0]))
    >>> float(loss), grad
    (0.0, array([0., 0.]))
    """
    p, xs, ys = _gabor_args(phi, x, y)
    u = _gabor_u(p, xs)
    e = np.exp(-u * u / 8)
    s = np.sin(u)
    r = s * e - ys
    dfdu = (np.cos(u) - u * s / 4) * e
    m = xs.shape[0]
    w = (2 / m) * r * dfdu
    grad = np.stack([np.sum(w, axis=-1), _GABOR_K * np.sum(w * xs, axis=-1)], axis=-1)
    return _scalar_out(np.mean(r * r, axis=-1)), grad


def gabor_loss(phi: ArrayLike, x: ArrayLike, y: ArrayLike) -> Any:
    """The least-squares loss of the Gabor model.

    Parameters
    ----------
    phi, x, y : array_like
        As in ``gabor_loss_and_grad``.

    Examples
    --------
    >>> float(gabor_loss([0.0, 0.0], [1.0, 2.0], [1.0, 1.0]))
    1.0
    """
    return gabor_loss_and_grad(phi, x, y)[0]
