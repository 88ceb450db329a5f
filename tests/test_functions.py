"""Test functions: finite-difference gradients and Hessians, known minima, batching, checks."""
import math

import numpy as np
import pytest

from fusedopt import functions as F

RNG = np.random.default_rng(1234)

# (function, dimensions to test, scale of the random test points)
CASES = [
    (F.sphere, (1, 3, 7), 2.0),
    (F.quadratic(np.array([[2.0, 0.5], [0.5, 1.0]])), (2,), 2.0),
    (F.rosenbrock, (2, 3, 6), 1.5),
    (F.rosenbrock_extended, (2, 4, 6), 1.5),
    (F.rastrigin, (1, 2, 5), 3.0),
    (F.ackley, (1, 2, 5), 3.0),
]
IDS = [c[0].name for c in CASES]


def _points(n, scale, batch=(4,)):
    return scale * RNG.uniform(-1, 1, size=batch + (n,))


def _fd_grad(fun, x, h=1e-6):
    """Central differences of fun.value at each point of the batch x (..., n)."""
    e = np.eye(x.shape[-1])
    return np.stack([(fun.value(x + h * ei) - fun.value(x - h * ei)) / (2 * h) for ei in e],
                    axis=-1)


def _fd_hess(fun, x, h=1e-5):
    e = np.eye(x.shape[-1])
    return np.stack([(fun.grad(x + h * ei) - fun.grad(x - h * ei)) / (2 * h) for ei in e],
                    axis=-1)


@pytest.mark.parametrize("fun, dims, scale", CASES, ids=IDS)
def test_gradient_matches_finite_differences(fun, dims, scale):
    for n in dims:
        x = _points(n, scale)
        g = fun.grad(x)
        assert g.shape == x.shape and g.dtype == np.float64
        fd = _fd_grad(fun, x)
        # central differences: error ~ h^2 f''' + eps f / h; relative to the gradient's size
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * (1 + np.abs(g).max()))


@pytest.mark.parametrize("fun, dims, scale", CASES, ids=IDS)
def test_hessian_matches_finite_differences(fun, dims, scale):
    for n in dims:
        x = _points(n, scale)
        H = fun.hess(x)
        assert H.shape == x.shape + (n,)
        np.testing.assert_allclose(H, np.swapaxes(H, -1, -2), rtol=0, atol=1e-12)
        fd = _fd_hess(fun, x)
        np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-5 * (1 + np.abs(H).max()))


@pytest.mark.parametrize("fun, dims, scale", CASES, ids=IDS)
def test_known_minimum(fun, dims, scale):
    for n in dims:
        xs = fun.minimizer(n)
        assert xs.shape == (n,)
        assert fun.value(xs) == pytest.approx(fun.minimum, abs=1e-14)
        np.testing.assert_array_equal(fun.grad(xs), np.zeros(n))
        # and it is a minimum: nearby points are higher
        for _ in range(5):
            assert fun.value(xs + 1e-3 * RNG.standard_normal(n)) > fun.minimum


@pytest.mark.parametrize("fun, dims, scale", CASES, ids=IDS)
def test_batch_matches_pointwise(fun, dims, scale):
    n = dims[-1]
    x = _points(n, scale, batch=(3, 5))
    v, g, H = fun.value(x), fun.grad(x), fun.hess(x)
    assert v.shape == (3, 5)
    fv, fg = fun.value_and_grad(x)
    np.testing.assert_array_equal(fv, v)
    np.testing.assert_array_equal(fg, g)
    for i in range(3):
        for j in range(5):
            assert v[i, j] == pytest.approx(fun.value(x[i, j]), rel=1e-14, abs=1e-14)
            np.testing.assert_allclose(g[i, j], fun.grad(x[i, j]), rtol=1e-14, atol=1e-14)
            np.testing.assert_allclose(H[i, j], fun.hess(x[i, j]), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("fun, dims, scale", CASES, ids=IDS)
def test_float32_in_float32_out(fun, dims, scale):
    n = dims[-1]
    x64 = _points(n, scale)
    x32 = x64.astype(np.float32)
    assert fun.value(x32).dtype == np.float32
    assert fun.grad(x32).dtype == np.float32
    np.testing.assert_allclose(fun.value(x32), fun.value(x32.astype(np.float64)), rtol=1e-4,
                               atol=1e-4)
    # integer points are evaluated in float64
    assert fun.value(np.ones(n, dtype=np.int64)).dtype == np.float64


def test_rosenbrock_chained_is_scipy_rosen():
    opt = pytest.importorskip("scipy.optimize")
    for n in (2, 5, 9):
        x = _points(n, 2.0, batch=())
        assert F.rosenbrock.value(x) == pytest.approx(opt.rosen(x), rel=1e-14)
        np.testing.assert_allclose(F.rosenbrock.grad(x), opt.rosen_der(x), rtol=1e-13)
        np.testing.assert_allclose(F.rosenbrock.hess(x), opt.rosen_hess(x), rtol=1e-13)


def test_rosenbrock_forms_differ_and_agree_in_2d():
    x = np.array([0.3, -0.7, 1.2, 0.4])
    # extended: two independent pairs
    pair = lambda u, v: 100 * (v - u * u) ** 2 + (1 - u) ** 2   # noqa: E731
    assert F.rosenbrock_extended.value(x) == pytest.approx(pair(0.3, -0.7) + pair(1.2, 0.4))
    assert F.rosenbrock.value(x) == pytest.approx(
        pair(0.3, -0.7) + pair(-0.7, 1.2) + pair(1.2, 0.4))
    y = x[:2]
    assert F.rosenbrock.value(y) == F.rosenbrock_extended.value(y)


def test_closed_forms():
    x = np.array([0.5, -1.5, 2.0])
    assert F.sphere.value(x) == pytest.approx(0.25 + 2.25 + 4)
    assert F.rastrigin.value(x) == pytest.approx(
        30 + sum(t * t - 10 * math.cos(2 * math.pi * t) for t in x))
    r = math.sqrt(np.mean(x * x))
    assert F.ackley.value(x) == pytest.approx(
        -20 * math.exp(-0.2 * r) - math.exp(np.mean(np.cos(2 * math.pi * x))) + 20 + math.e)
    Q = np.array([[3.0, 1.0], [1.0, 2.0]])
    q = F.quadratic(Q)
    y = np.array([1.0, -2.0])
    assert q.value(y) == pytest.approx(y @ Q @ y)
    np.testing.assert_allclose(q.hess(y), 2 * Q)
    np.testing.assert_allclose(F.quadratic(Q, scale=0.5).hess(y), Q)
    np.testing.assert_allclose(F.quadratic(Q, scale=0.5).grad(y), Q @ y)


def test_ackley_at_its_kink():
    # not differentiable at 0: 0 is returned as the gradient (a subgradient), NaN as Hessian
    np.testing.assert_array_equal(F.ackley.grad(np.zeros(3)), np.zeros(3))
    assert np.all(np.isnan(F.ackley.hess(np.zeros(3))))
    H = F.ackley.hess(np.array([[0.0, 0.0], [0.5, 0.5]]))
    assert np.all(np.isnan(H[0])) and np.all(np.isfinite(H[1]))


def test_local_minima_of_rastrigin_are_near_integers():
    # one coordinate: the stationary point near 1 is a local minimum with f > 0
    from fusedopt.newton import newton
    r = newton(F.rastrigin.value_and_grad, [1.1, 0.0], F.rastrigin.hess)
    assert r.success and abs(r.x[0] - 1) < 0.01 and r.fun > 0.9
    assert np.all(np.linalg.eigvalsh(F.rastrigin.hess(r.x)) > 0)


def test_input_checks():
    with pytest.raises(TypeError, match="x"):
        F.sphere.value(np.array([1 + 2j]))
    with pytest.raises(TypeError, match="x"):
        F.sphere.value(np.array([True, False]))
    with pytest.raises(TypeError, match="x"):
        F.sphere.value(["a", "b"])
    with pytest.raises(ValueError, match="x"):
        F.sphere.value(3.0)
    with pytest.raises(ValueError, match="at least 2"):
        F.rosenbrock.value([1.0])
    with pytest.raises(ValueError, match="even"):
        F.rosenbrock_extended.grad(np.ones(3))
    with pytest.raises(ValueError, match="n must be an even"):
        F.rosenbrock_extended.minimizer(3)
    with pytest.raises(TypeError, match="n must be an int"):
        F.sphere.minimizer(2.0)
    with pytest.raises(ValueError, match="symmetric"):
        F.quadratic([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="square"):
        F.quadratic(np.ones((2, 3)))
    with pytest.raises(ValueError, match="scale"):
        F.quadratic(np.eye(2), scale=0.0)
    with pytest.raises(ValueError, match="coordinates"):
        F.quadratic(np.eye(2)).value(np.ones(3))
    with pytest.raises(ValueError, match="unbounded"):
        F.quadratic(np.diag([1.0, -1.0])).minimizer()
    with pytest.raises(ValueError, match="form"):
        F.Rosenbrock("banana")


# -- Gabor ---------------------------------------------------------------------------------
def _gabor_data(m=40):
    x = np.linspace(-30, 30, m)
    y = F.gabor(x, np.array([0.3, 1.7])) + 0.05 * RNG.standard_normal(m)
    return x, y


def test_gabor_model_formula():
    x = np.array([-10.0, 0.0, 7.0])
    phi = np.array([0.5, 2.0])
    u = 0.5 + 0.06 * 2.0 * x
    np.testing.assert_allclose(F.gabor(x, phi), np.sin(u) * np.exp(-u * u / 8), rtol=1e-15)


def test_gabor_loss_gradient_matches_finite_differences():
    x, y = _gabor_data()
    for phi in ([0.3, 1.7], [-1.0, 4.0], [2.0, -3.0]):
        phi = np.array(phi)
        L, g = F.gabor_loss_and_grad(phi, x, y)
        assert L == pytest.approx(np.mean((F.gabor(x, phi) - y) ** 2), rel=1e-14)
        h = 1e-6
        fd = [(F.gabor_loss(phi + h * e, x, y) - F.gabor_loss(phi - h * e, x, y)) / (2 * h)
              for e in np.eye(2)]
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_gabor_loss_batched_over_phi():
    x, y = _gabor_data()
    P = RNG.uniform(-3, 3, size=(4, 6, 2))
    L, G = F.gabor_loss_and_grad(P, x, y)
    assert L.shape == (4, 6) and G.shape == (4, 6, 2)
    for i, j in [(0, 0), (3, 5), (2, 1)]:
        l1, g1 = F.gabor_loss_and_grad(P[i, j], x, y)
        assert L[i, j] == pytest.approx(l1, rel=1e-13)
        np.testing.assert_allclose(G[i, j], g1, rtol=1e-12, atol=1e-15)


def test_gabor_checks():
    x, y = _gabor_data()
    with pytest.raises(ValueError, match="phi"):
        F.gabor_loss(np.ones(3), x, y)
    with pytest.raises(ValueError, match="y"):
        F.gabor_loss(np.ones(2), x, y[:-1])
    with pytest.raises(ValueError, match="x"):
        F.gabor(np.ones((2, 2)), np.ones(2))
