"""Second-order references: Newton's method and preconditioned gradient descent."""
import numpy as np
import pytest

from fusedopt import functions as F
from fusedopt import optim
from fusedopt.newton import newton, preconditioned_gd


def _spd(n, rng, cond=50.0):
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return U @ np.diag(np.geomspace(1, cond, n)) @ U.T


def test_inverse_preconditioner_solves_a_quadratic_in_one_step():
    rng = np.random.default_rng(0)
    for n in (2, 5, 20):
        Q = _spd(n, rng)
        f = F.quadratic(Q, scale=0.5)                 # gradient Q x, Hessian Q
        x0 = rng.uniform(-10, 10, n)
        r = preconditioned_gd(f.value_and_grad, x0, np.linalg.inv(Q), lr=1.0, maxiter=1,
                              gtol=0.0)
        assert r.nit == 1
        assert np.linalg.norm(r.x) <= 1e-12 * np.linalg.norm(x0)
        assert r.fun <= 1e-20 * f.value(x0)
        # one plain gradient-descent step (P = I) at its best constant lr does not get there
        lam = np.linalg.eigvalsh(Q)
        g = preconditioned_gd(f.value_and_grad, x0, None, lr=2 / (lam[0] + lam[-1]),
                              maxiter=1, gtol=0.0)
        assert np.linalg.norm(g.x) > 1e-2 * np.linalg.norm(x0)


def test_preconditioned_gd_paths():
    rng = np.random.default_rng(1)
    Q = _spd(3, rng, cond=5)
    f = F.quadratic(Q, scale=0.5)
    x0 = rng.standard_normal(3)
    # P = None is plain gradient descent: the same iterates as fusedopt.optim.SGD
    r = preconditioned_gd(f.value_and_grad, x0, lr=0.1, maxiter=20, gtol=0.0)
    x = x0.copy()
    opt = optim.SGD([x], lr=0.1)
    for k in range(20):
        opt.step([f.grad(x)])
        np.testing.assert_allclose(r.path[k + 1], x, rtol=1e-14, atol=1e-15)
    assert r.path.shape == (21, 3) and r.fvals.shape == (21,) and r.status == 1
    # a vector P is the diagonal matrix
    d = 1 / np.diag(Q)
    a = preconditioned_gd(f.value_and_grad, x0, d, lr=0.5, maxiter=10, gtol=0.0)
    b = preconditioned_gd(f.value_and_grad, x0, np.diag(d), lr=0.5, maxiter=10, gtol=0.0)
    np.testing.assert_allclose(a.path, b.path, rtol=1e-14)
    # and it converges, to the tolerance asked
    c = preconditioned_gd(f.value_and_grad, x0, d, lr=0.5, maxiter=10_000, gtol=1e-10)
    assert c.success and c.status == 0 and np.max(np.abs(c.jac)) <= 1e-10


def test_newton_is_exact_in_one_step_on_a_quadratic():
    rng = np.random.default_rng(2)
    for scale in (0.5, 1.0, 3.0):
        f = F.quadratic(_spd(6, rng, cond=1e4), scale=scale)
        x0 = rng.uniform(-5, 5, 6)
        r = newton(f.value_and_grad, x0, f.hess, gtol=1e-9)
        assert r.success
        assert r.nit == 1
        assert np.max(np.abs(r.x)) < 1e-10


def test_newton_converges_quadratically_on_rosenbrock():
    for fun, x0 in ((F.rosenbrock, [-1.2, 1.0]), (F.rosenbrock, [0.8, 0.7, 0.5, 0.3]),
                    (F.rosenbrock_extended, [-1.2, 1.0, 0.5, 0.2])):
        r = newton(fun.value_and_grad, x0, fun.hess, gtol=1e-12)
        assert r.success
        xs = fun.minimizer(len(x0))
        np.testing.assert_allclose(r.x, xs, atol=1e-12)
        err = np.linalg.norm(r.path - xs, axis=1)
        # Quadratic convergence: e_{k+1} <= C e_k^2 near the minimizer, C about
        # ||H^-1|| ||D^3 f|| / 2 (here up to ~50: the 4-D Hessian at x* has eigenvalues from
        # ~0.4 to ~1200). Take the steps with e_k < 0.1 whose successor is above rounding.
        ratios = [err[k + 1] / err[k] ** 2 for k in range(len(err) - 1)
                  if err[k] < 0.1 and err[k + 1] > 1e-14]
        assert ratios, err
        assert max(ratios) < 100.0, (ratios, err)
        # Superlinear, unlike gradient descent: the one-step factor e_{k+1}/e_k falls to 0.
        lin = [err[k + 1] / err[k] for k in range(len(err) - 1) if err[k + 1] > 1e-14]
        assert lin[-1] < 1e-3 and lin[-1] < lin[-2], err


def test_newton_damping_and_step_size():
    f = F.rosenbrock
    x0 = np.array([-1.2, 1.0])
    H, (_, g) = f.hess(x0), f.value_and_grad(x0)
    for lam, alpha in ((0.0, 1.0), (10.0, 1.0), (0.0, 0.5), (100.0, 0.3)):
        r = newton(f.value_and_grad, x0, f.hess, damping=lam, step_size=alpha, maxiter=1)
        expected = x0 - alpha * np.linalg.solve(H + lam * np.eye(2), g)
        np.testing.assert_allclose(r.x, expected, rtol=1e-14)
        assert r.status == 1 and r.nit == 1
    # damped Newton still reaches the minimum, more slowly
    r = newton(f.value_and_grad, x0, f.hess, damping=1.0, maxiter=500)
    assert r.success and np.allclose(r.x, 1.0, atol=1e-8) and r.nit > 7


def test_newton_stops_on_a_singular_hessian_and_on_callback():
    f = F.quadratic(np.diag([1.0, 0.0]))
    r = newton(f.value_and_grad, [1.0, 1.0], f.hess)
    assert not r.success and r.status == 2 and "singular" in r.message
    seen = []
    r = newton(F.rosenbrock.value_and_grad, [-1.2, 1.0], F.rosenbrock.hess,
               callback=lambda x: seen.append(x) or len(seen) == 2)
    assert r.status == 4 and r.nit == 2 and len(seen) == 2


def test_argument_checks():
    f = F.sphere
    with pytest.raises(ValueError, match="x0"):
        newton(f.value_and_grad, np.ones((2, 2)), f.hess)
    with pytest.raises(TypeError, match="hess"):
        newton(f.value_and_grad, np.ones(2), None)
    with pytest.raises(ValueError, match="damping"):
        newton(f.value_and_grad, np.ones(2), f.hess, damping=-1.0)
    with pytest.raises(ValueError, match="step_size"):
        newton(f.value_and_grad, np.ones(2), f.hess, step_size=0.0)
    with pytest.raises(TypeError, match="maxiter"):
        newton(f.value_and_grad, np.ones(2), f.hess, maxiter=1.5)
    with pytest.raises(ValueError, match="P"):
        preconditioned_gd(f.value_and_grad, np.ones(2), np.eye(3))
    with pytest.raises(TypeError, match="P"):
        preconditioned_gd(f.value_and_grad, np.ones(2), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="lr"):
        preconditioned_gd(f.value_and_grad, np.ones(2), lr=-0.1)
    with pytest.raises(TypeError, match="fun"):
        preconditioned_gd(f.value, np.ones(2))
