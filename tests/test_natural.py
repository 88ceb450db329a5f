"""fusedopt.natural: natural gradient with a user metric, the exact and empirical Fisher,
damping, Cholesky and CG; bad input."""
import doctest
import inspect

import numpy as np
import pytest

from fusedopt import natural
from fusedopt.lbfgs import OptimizeResult
from fusedopt.natural import (CHOLESKY_MAX_N, LogisticRegression, Metric, SoftmaxRegression,
                              conjugate_gradient, empirical_fisher, metric_from_matrix,
                              natural_direction, natural_gradient)
from fusedopt.newton import preconditioned_gd


def spd(rng, n, cond=100.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return Q @ np.diag(np.geomspace(1.0, cond, n)) @ Q.T


def logistic_data(seed=1, m=300):
    """Two features of very different scales (an ill-conditioned loss), labels with noise (not
    separable, so the minimum is finite)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 2)) * [1.0, 0.1]
    y = (X @ [1.5, -4.0] + rng.standard_normal(m) > 0).astype(float)
    return X, y


def softmax_model(seed=2, m=120, d=4, k=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = rng.integers(0, k, m)
    return SoftmaxRegression(X, y, k), rng.standard_normal(d * k)


def fd_hessian(fun, w, h=1e-6):
    """Central differences of the gradient."""
    H = np.empty((w.size, w.size))
    for j in range(w.size):
        e = np.zeros(w.size)
        e[j] = h
        H[:, j] = (fun(w + e)[1] - fun(w - e)[1]) / (2 * h)
    return H


# -- the update: one step on a quadratic, fewer iterations than GD -----------------------------


@pytest.mark.parametrize("how", ["matrix", "callable", "metric_vp", "cg", "Metric"])
def test_quadratic_with_metric_Q_lands_on_the_minimum_in_one_step(how):
    rng = np.random.default_rng(0)
    n = 6
    Q = spd(rng, n, cond=1e4)
    b = rng.standard_normal(n)
    xstar = np.linalg.solve(Q, b)

    def fun(x):
        return 0.5 * x @ Q @ x - b @ x, Q @ x - b

    kw = {"matrix": dict(metric=Q), "callable": dict(metric=lambda x: Q),
          "metric_vp": dict(metric_vp=lambda x, v: Q @ v),
          "cg": dict(metric=Q, method="cg"), "Metric": dict(metric=metric_from_matrix(Q))}[how]
    r = natural_gradient(fun, 10 * rng.standard_normal(n), gtol=1e-8, **kw)
    assert isinstance(r, OptimizeResult)
    assert r.success and r.status == 0 and r.nit == 1
    np.testing.assert_allclose(r.x, xstar, rtol=1e-9)
    assert r.path.shape == (2, n) and r.fvals[1] < r.fvals[0]
    assert (r.ncg > 0) == (how in ("metric_vp", "cg"))
    # the INVERSE metric: with G = Q^-1 instead, one step does not land on the minimum
    bad = natural_gradient(fun, r.path[0], np.linalg.inv(Q), maxiter=1)
    assert np.linalg.norm(bad.x - xstar) > 1e-3


def test_logistic_regression_needs_fewer_iterations_than_gradient_descent():
    X, y = logistic_data()
    model = LogisticRegression(X, y)
    tol = 1e-6
    ng = natural_gradient(model.value_and_grad, np.zeros(2), model.fisher, gtol=tol)
    # gradient descent with its best constant step 1/L, L >= the largest Hessian eigenvalue
    L = np.linalg.eigvalsh(X.T @ X / len(y) / 4).max()
    gd = preconditioned_gd(model.value_and_grad, np.zeros(2), lr=1 / L, gtol=tol,
                           maxiter=100_000)
    assert ng.success and gd.success
    assert ng.nit <= 10 and gd.nit > 10 * ng.nit
    np.testing.assert_allclose(ng.x, gd.x, rtol=1e-3)
    # the empirical Fisher is a usable metric too, but not Newton: more steps than the Fisher
    emp = natural_gradient(model.value_and_grad, np.zeros(2), model.empirical_fisher,
                           gtol=tol, lr=0.5, damping=1e-4, maxiter=5000)
    assert emp.success and gd.nit > emp.nit > ng.nit
    np.testing.assert_allclose(emp.x, ng.x, rtol=1e-3)


def test_softmax_regression_natural_gradient_with_damping_by_cg():
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((3, 5)) * 0.7          # overlapping classes: finite minimum
    y = rng.integers(0, 3, 300)
    X = centers[y] + rng.standard_normal((300, 5))
    model = SoftmaxRegression(X, y)
    r = natural_gradient(model.value_and_grad, np.zeros(model.n), model.fisher, damping=1e-3,
                         method="cg", gtol=1e-6, maxiter=200)
    gd = preconditioned_gd(model.value_and_grad, np.zeros(model.n), lr=1.0, gtol=1e-6,
                           maxiter=r.nit)
    assert r.success and r.ncg > 0 and r.nmev == r.nit
    assert r.fun < gd.fun                 # the same number of GD steps gets less far


# -- the exact and the empirical Fisher ---------------------------------------------------------


def test_logistic_fisher_is_the_hessian_and_the_expected_outer_product():
    X, y = logistic_data(m=50)
    model = LogisticRegression(X, y)
    w = np.array([0.7, -2.0])
    F = model.fisher(w).dense()
    np.testing.assert_allclose(F, fd_hessian(model.value_and_grad, w), rtol=1e-6, atol=1e-9)
    # E over labels drawn from the model of g g^T, exactly: labels 1 (prob p) and 0 (1 - p)
    p = 1 / (1 + np.exp(-X @ w))
    g1, g0 = (p - 1)[:, None] * X, p[:, None] * X
    expected = (np.einsum("i,ia,ib->ab", p, g1, g1) +
                np.einsum("i,ia,ib->ab", 1 - p, g0, g0)) / len(y)
    np.testing.assert_allclose(F, expected, rtol=1e-12)
    v = np.array([0.3, -1.1])
    np.testing.assert_allclose(model.fisher(w).matvec(v), F @ v, rtol=1e-12)
    # per-sample gradients average to the gradient; the empirical Fisher is their J^T J / m
    J = model.per_sample_grads(w)
    np.testing.assert_allclose(J.mean(axis=0), model.value_and_grad(w)[1], rtol=1e-12)
    np.testing.assert_allclose(model.empirical_fisher(w).dense(), J.T @ J / len(y),
                               rtol=1e-12)
    assert not np.allclose(model.empirical_fisher(w).dense(), F, rtol=1e-2)


def test_softmax_fisher_matrix_products_and_hessian():
    model, w = softmax_model()
    M = model.fisher(w)
    F = M.dense()
    assert F.shape == (model.n, model.n)
    np.testing.assert_allclose(F, fd_hessian(model.value_and_grad, w), rtol=1e-5, atol=1e-8)
    v = np.random.default_rng(5).standard_normal(model.n)
    np.testing.assert_allclose(M.matvec(v), F @ v, rtol=1e-10, atol=1e-14)
    # singular: shifting every column of W by one vector changes no probability
    shift = np.tile(np.array([1.0, -2.0, 0.5, 3.0])[:, None], (1, model.k)).ravel()
    np.testing.assert_allclose(F @ shift, 0.0, atol=1e-12)
    assert np.linalg.eigvalsh(F).min() > -1e-12
    J = model.per_sample_grads(w)
    np.testing.assert_allclose(J.mean(axis=0), model.value_and_grad(w)[1], rtol=1e-10,
                               atol=1e-14)
    np.testing.assert_allclose(empirical_fisher(J).matvec(v), J.T @ (J @ v) / J.shape[0],
                               rtol=1e-12)


# -- the solvers ---------------------------------------------------------------------------------


def test_cg_and_cholesky_agree():
    rng = np.random.default_rng(7)
    for n in (1, 5, 40):
        G = spd(rng, n, cond=1e3)
        g = rng.standard_normal(n)
        a = natural_direction(G, g, method="cholesky")
        b = natural_direction(G, g, method="cg", rtol=1e-13)
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(G @ a, g, rtol=1e-9, atol=1e-12)
    model, w = softmax_model()
    g = model.value_and_grad(w)[1]
    a = natural_direction(model.fisher(w), g, damping=1e-2, method="cholesky")
    b = natural_direction(model.fisher(w), g, damping=1e-2, method="cg", rtol=1e-13)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_cg_never_forms_the_metric():
    n = CHOLESKY_MAX_N + 1
    diag = np.linspace(1.0, 10.0, n)

    def no_matrix():
        raise AssertionError("G was formed")

    M = Metric(n, lambda v: diag * v, no_matrix)
    g = np.ones(n)
    d = natural_direction(M, g)                    # auto: n is large, so CG
    np.testing.assert_allclose(d, 1 / diag, rtol=1e-8)
    d = natural_direction(Metric(5, lambda v: 2 * v, no_matrix), np.ones(5), method="cg")
    np.testing.assert_allclose(d, 0.5)
    with pytest.raises(AssertionError, match="formed"):           # small n: Cholesky forms it
        natural_direction(Metric(5, lambda v: 2 * v, no_matrix), np.ones(5))
    # products only: Cholesky builds G column by column
    only = Metric(3, lambda v: np.array([1.0, 2.0, 4.0]) * v)
    assert not only.has_matrix
    np.testing.assert_allclose(natural_direction(only, np.ones(3), method="cholesky"),
                               [1.0, 0.5, 0.25])


def test_conjugate_gradient_result():
    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    r = conjugate_gradient(lambda p: A @ p, [1.0, 2.0])
    assert isinstance(r, OptimizeResult) and r.success and r.status == 0 and r.nit <= 2
    np.testing.assert_allclose(A @ r.x, [1.0, 2.0], rtol=1e-12)
    r = conjugate_gradient(lambda p: A @ p, [1.0, 2.0], maxiter=1)
    assert r.status == 1 and not r.success and r.nit == 1 and r.residual > 0
    r = conjugate_gradient(lambda p: np.array([1.0, -1.0]) * p, [0.0, 1.0])
    assert r.status == 2 and "not positive definite" in r.message
    r = conjugate_gradient(lambda p: A @ p, [0.0, 0.0])
    assert r.success and r.nit == 0 and not r.x.any()


def test_damping():
    G = np.diag([0.0, 4.0])                           # singular
    g = np.array([1.0, 1.0])
    with pytest.raises(ValueError, match="not positive definite.*increase damping"):
        natural_direction(G, g)
    with pytest.raises(ValueError, match="not positive definite"):
        natural_direction(G, g, method="cg")
    for method in ("cholesky", "cg"):
        d = natural_direction(G, g, damping=0.5, method=method)
        np.testing.assert_allclose((G + 0.5 * np.eye(2)) @ d, g, rtol=1e-12)
    # a large damping turns the step into gradient descent with step lr / damping
    d = natural_direction(G, g, damping=1e8)
    np.testing.assert_allclose(d * 1e8, g, rtol=1e-7)
    # the softmax Fisher is singular: Cholesky fails without damping, works with it
    model, w = softmax_model()
    with pytest.raises(ValueError, match="not positive definite"):
        natural_direction(model.fisher(w), model.value_and_grad(w)[1], method="cholesky")


# -- bad input -----------------------------------------------------------------------------------


def test_bad_metrics_raise_clear_errors():
    g = np.ones(2)
    with pytest.raises(ValueError, match="metric must be a square matrix"):
        natural_direction(np.ones((2, 3)), g)
    with pytest.raises(ValueError, match=r"metric must have shape \(2, 2\)"):
        natural_direction(np.eye(3), g)
    with pytest.raises(ValueError, match="metric must be symmetric"):
        natural_direction([[1.0, 0.5], [0.0, 1.0]], g)
    with pytest.raises(ValueError, match="metric must be finite"):
        natural_direction([[1.0, np.nan], [np.nan, 1.0]], g)
    with pytest.raises(ValueError, match="not positive definite"):
        natural_direction(np.diag([1.0, -1.0]), g)
    with pytest.raises(ValueError, match="not positive definite"):
        natural_direction(np.diag([1.0, -1.0]), g, method="cg")
    with pytest.raises(TypeError, match="metric must be an array of real numbers"):
        natural_direction(np.eye(2, dtype=complex), g)
    with pytest.raises(ValueError, match="G v"):
        natural_direction(Metric(2, lambda v: np.ones(3)), g, method="cg")
    with pytest.raises(ValueError, match="dimension 3"):
        natural_direction(Metric(3, lambda v: v), g)
    with pytest.raises(TypeError, match="matvec must be callable"):
        Metric(2, "not callable")
    with pytest.raises(ValueError, match="n must be >= 1"):
        Metric(0, lambda v: v)


def test_bad_arguments_raise_before_anything_is_evaluated():
    calls = []

    def fun(x):
        calls.append(x)
        return float(x @ x), 2 * x

    x0 = np.ones(2)
    bad = [
        (dict(metric=np.eye(2), lr=0.0), ValueError, "lr must be > 0"),
        (dict(metric=np.eye(2), damping=-1.0), ValueError, "damping must be >= 0"),
        (dict(metric=np.eye(2), method="qr"), ValueError, "method must be one of"),
        (dict(metric=np.eye(2), method=1), TypeError, "method must be a str"),
        (dict(metric=np.eye(2), maxiter=-1), ValueError, "maxiter must be >= 0"),
        (dict(metric=np.eye(2), gtol=float("nan")), ValueError, "gtol must be finite"),
        (dict(metric=np.eye(2), cg_rtol=0.0), ValueError, "cg_rtol must be > 0"),
        (dict(metric=np.eye(2), callback=3), TypeError, "callback must be callable"),
        (dict(), TypeError, "exactly one of metric and metric_vp"),
        (dict(metric=np.eye(2), metric_vp=lambda x, v: v), TypeError, "exactly one"),
        (dict(metric="eye"), TypeError, "metric must be a callable, a Metric or a matrix"),
        (dict(metric=np.eye(3)), ValueError, r"metric must have shape \(2, 2\)"),
        (dict(metric=np.ones((2, 3))), ValueError, "metric must be a square matrix"),
        (dict(metric_vp=5), TypeError, "metric_vp must be callable"),
    ]
    for kw, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            natural_gradient(fun, x0, **kw)
    with pytest.raises(TypeError, match="fun must be callable"):
        natural_gradient(None, x0, np.eye(2))
    with pytest.raises(ValueError, match="x0 must be a non-empty 1-D array"):
        natural_gradient(fun, np.ones((2, 2)), np.eye(2))
    assert calls == [] and np.array_equal(x0, np.ones(2))
    # a metric callable returning the wrong shape, or a non-SPD matrix at an iterate
    with pytest.raises(ValueError, match=r"metric must have shape \(2, 2\)"):
        natural_gradient(fun, x0, lambda x: np.eye(3))
    with pytest.raises(ValueError, match="not positive definite"):
        natural_gradient(fun, x0, lambda x: np.diag([1.0, -x[0]]))
    assert np.array_equal(x0, np.ones(2))          # x0 itself is never written


def test_bad_direction_and_model_arguments():
    with pytest.raises(ValueError, match=r"g must be a non-empty vector"):
        natural_direction(np.eye(2), np.ones((2, 1)))
    with pytest.raises(ValueError, match="g must be finite"):
        natural_direction(np.eye(2), [1.0, np.inf])
    with pytest.raises(TypeError, match="metric must be a Metric or a matrix"):
        natural_direction(lambda x: np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match="rtol must be > 0"):
        natural_direction(np.eye(2), np.ones(2), rtol=-1.0)
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        LogisticRegression(np.ones((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="y must hold labels 0 and 1"):
        LogisticRegression(np.ones((2, 2)), [0, 2])
    with pytest.raises(ValueError, match="X must be a non-empty"):
        LogisticRegression(np.ones(3), [0, 1, 1])
    with pytest.raises(ValueError, match="X must be finite"):
        LogisticRegression([[np.nan]], [0])
    with pytest.raises(ValueError, match=r"w must have shape \(2,\)"):
        LogisticRegression(np.ones((2, 2)), [0, 1]).fisher(np.ones(3))
    with pytest.raises(TypeError, match="y must hold integer class labels"):
        SoftmaxRegression(np.ones((2, 2)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\)"):
        SoftmaxRegression(np.ones((2, 2)), [0, 2], k=2)
    with pytest.raises(ValueError, match="k must be >= 2"):
        SoftmaxRegression(np.ones((2, 2)), [0, 0])
    with pytest.raises(ValueError, match="per_sample_grads must be a non-empty"):
        empirical_fisher(np.ones(3))
    with pytest.raises(ValueError, match="b must be a non-empty vector"):
        conjugate_gradient(lambda p: p, np.ones((2, 2)))


# -- documentation -------------------------------------------------------------------------------


def test_docstring_examples_run():
    globs = {"np": np, **vars(natural)}
    result = doctest.testmod(natural, globs=globs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize("name", ["Metric", "metric_from_matrix", "empirical_fisher",
                                  "LogisticRegression", "SoftmaxRegression",
                                  "natural_direction", "conjugate_gradient",
                                  "natural_gradient"])
def test_numpydoc_parameters_and_defaults(name):
    obj = getattr(natural, name)
    doc = inspect.getdoc(obj)
    assert "Parameters\n----------" in doc and "Examples\n--------" in doc and ">>>" in doc
    for p in inspect.signature(obj).parameters.values():
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"{p.name} : ")), None)
        assert line is not None, f"{name}: {p.name} undocumented"
        if p.default is not p.empty:
            text = line.split("default ", 1)[1]
            assert eval(text) == p.default, f"{name}: {p.name} default {text}"
    if name == "natural_gradient":
        assert "(G(x_k) + damping I)^-1" in doc
