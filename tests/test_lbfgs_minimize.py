"""fusedopt.lbfgs.minimize against scipy.optimize.minimize(method="L-BFGS-B", jac=True), the
robustness cases (non-finite trial points, failed line searches, stopping rules), input checks,
shapes and dtypes, and the LBFGS optimizer class (against torch.optim.LBFGS where installed)."""
import numpy as np
import pytest

import fusedopt
from fusedopt import lbfgs
from fusedopt.benchmarks import lbfgs as lbfgs_bench
from fusedopt.optim import LBFGS

scipy_optimize = pytest.importorskip("scipy.optimize")


# ---------------------------------------------------------------------------------------------
# Problems: fun(x) -> (f, grad), x0, the known minimizer (or None).


def quadratic_problem(n=60, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.linspace(1.0, 100.0, n)) @ q.T
    b = rng.standard_normal(n)

    def fun(x):
        ax = a @ x
        return 0.5 * x @ ax - b @ x, ax - b

    return fun, np.zeros(n), np.linalg.solve(a, b)


def rosen_fun(x):
    return scipy_optimize.rosen(x), scipy_optimize.rosen_der(x)


ext_rosen = lbfgs_bench.ext_rosenbrock  # Extended Rosenbrock (More, Garbow & Hillstrom)
ext_rosen_x0 = lbfgs_bench.ext_rosenbrock_x0


def logistic_problem(n_samples=300, n_features=20, lam=1e-2, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    w_true = rng.standard_normal(n_features)
    labels = (rng.uniform(size=n_samples) < 1 / (1 + np.exp(-X @ w_true))).astype(float)

    def fun(w):
        z = X @ w
        f = np.sum(np.logaddexp(0.0, z) - labels * z) / n_samples + 0.5 * lam * (w @ w)
        p = 1.0 / (1.0 + np.exp(-z))
        return f, X.T @ (p - labels) / n_samples + lam * w

    return fun, np.zeros(n_features), None


PROBLEMS = {
    "quadratic": quadratic_problem,
    "rosenbrock_2d": lambda: (rosen_fun, np.array([-1.2, 1.0]), np.ones(2)),
    "ext_rosenbrock_1000": lambda: (ext_rosen, ext_rosen_x0(1000), np.ones(1000)),
    "logistic": logistic_problem,
}


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
@pytest.mark.parametrize("name", PROBLEMS)
def test_against_scipy(name, line_search):
    fun, x0, x_star = PROBLEMS[name]()
    ref = scipy_optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")
    res = lbfgs.minimize(fun, x0, line_search=line_search)
    assert ref.success, ref.message
    assert res.success, res.message
    assert res.status == 0
    # The same minimizer: both stop at gtol = 1e-5 or on ftol, so x agrees to ~1e-4.
    np.testing.assert_allclose(res.x, ref.x, atol=2e-4, rtol=0)
    if x_star is not None:
        np.testing.assert_allclose(res.x, x_star, atol=2e-4, rtol=0)
    assert res.fun <= ref.fun + 1e-8 * max(1.0, abs(ref.fun))
    if line_search == "strong_wolfe":
        assert res.nit <= 1.5 * ref.nit, (res.nit, ref.nit)
    fx, gx = fun(res.x)
    assert res.fun == fx
    np.testing.assert_array_equal(res.jac, gx)
    assert res.nfev == res.njev >= res.nit


def test_result_fields_and_stopping_rules():
    fun, x0, _ = PROBLEMS["rosenbrock_2d"]()
    res = lbfgs.minimize(fun, x0, maxiter=5)
    assert (res.status, res.nit, res.success) == (1, 5, False)
    assert "maxiter" in res.message
    assert set("x fun jac nit nfev njev success status message".split()) <= set(res)
    res = lbfgs.minimize(fun, x0, ftol=1e-2)
    assert res.status == 0 and "ftol" in res.message and res.nit < 20
    res = lbfgs.minimize(fun, np.ones(2))  # already optimal
    assert (res.status, res.nit, res.nfev) == (0, 0, 1) and "gtol" in res.message
    res = lbfgs.minimize(fun, x0, gtol=1e-3, ftol=0.0)
    assert res.status == 0 and "gtol" in res.message
    assert np.abs(res.jac).max() <= 1e-3


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
def test_nonfinite_trial_point_shrinks_step(line_search):
    # Finite only inside the box |x_i| < 0.5; the first trial step (length 1) leaves it.
    calls = []

    def fun(x):
        calls.append(np.abs(x).max())
        if np.abs(x).max() >= 0.5:
            return np.inf, np.full(x.shape, np.nan)
        return float(np.sum((x - 0.4) ** 2)), 2 * (x - 0.4)

    res = lbfgs.minimize(fun, np.zeros(3), line_search=line_search)
    assert res.success, res.message
    assert max(calls) >= 0.5  # a non-finite point was really met
    np.testing.assert_allclose(res.x, 0.4, atol=1e-5)
    assert np.isfinite(res.jac).all()


def test_nan_once_does_not_poison_state():
    fun0, x0, x_star = PROBLEMS["quadratic"]()
    count = [0]

    def fun(x):
        count[0] += 1
        if count[0] == 4:
            return np.nan, np.full(x.shape, np.nan)
        return fun0(x)

    res = lbfgs.minimize(fun, x0)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, x_star, atol=2e-4)


def test_failed_line_search_retries_steepest_then_stops():
    # The gradient has the wrong sign: every "descent" direction goes uphill.
    def fun(x):
        return float(x @ x), -2 * x

    res = lbfgs.minimize(fun, np.ones(4))
    assert res.status == 2 and not res.success
    assert "line search" in res.message and "steepest descent" in res.message
    assert res.nit == 0
    np.testing.assert_array_equal(res.x, np.ones(4))  # x is the last accepted point


def test_failed_search_with_history_retries_steepest_descent():
    # An anisotropic quadratic whose gradient turns wrong (negated) after 6 evaluations: the
    # L-BFGS direction then goes uphill, its search fails, the history is cleared and the
    # steepest descent (of the reported gradient) is tried before stopping.
    c = np.logspace(0, 2, 5)
    points = []

    def fun(x):
        points.append(x.copy())
        f, g = float(np.sum(c * (x - 3.0) ** 2)), 2 * c * (x - 3.0)
        return f, (-g if len(points) > 6 else g)

    x0 = np.arange(5.0)
    res = lbfgs.minimize(fun, x0)
    assert res.status == 2 and "L-BFGS direction nor, with the history cleared" in res.message
    assert res.nit >= 2  # there was a history to clear
    xk = res.x
    tried = points[max(k for k, p in enumerate(points) if np.array_equal(p, xk)) + 1:]
    steepest = 2 * c * (xk - 3.0)  # minus the gradient reported at xk (it is negated there)
    cosines = [float((p - xk) @ steepest) / (np.linalg.norm(p - xk) * np.linalg.norm(steepest))
               for p in tried if np.linalg.norm(p - xk) > 0]
    assert max(cosines) > 1 - 1e-9  # a trial point along the steepest descent
    assert fun(xk)[0] < fun(x0)[0]


@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (2, 3, 2)])
def test_any_shape(shape):
    rng = np.random.default_rng(0)
    target = rng.standard_normal(shape)

    def fun(x):
        assert x.shape == shape
        assert not x.flags.writeable
        return float(np.sum((x - target) ** 2)), 2 * (x - target)

    res = lbfgs.minimize(fun, np.zeros(shape))
    assert res.x.shape == shape and res.jac.shape == shape
    np.testing.assert_allclose(res.x, target, atol=1e-6)


def test_float32():
    fun64, x0, x_star = PROBLEMS["quadratic"]()

    def fun(x):
        f, g = fun64(x.astype(np.float64))
        return f, g.astype(np.float32)

    res = lbfgs.minimize(fun, x0.astype(np.float32), gtol=1e-3)
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    assert res.success, res.message
    np.testing.assert_allclose(res.x, x_star, atol=1e-3)

    res = lbfgs.minimize(ext_rosen, ext_rosen_x0(100).astype(np.float32), gtol=1e-3)
    assert res.success and res.x.dtype == np.float32
    np.testing.assert_allclose(res.x, 1.0, atol=2e-3)


def test_callback_and_same_bits_for_any_thread_count():
    n = fusedopt._core.lbfgs_parallel_min + 2  # large enough for the parallel loops
    seen = []
    runs = []
    for nt in (1, 2):
        with fusedopt.num_threads(nt):
            runs.append(lbfgs.minimize(ext_rosen, ext_rosen_x0(n), maxiter=15,
                                       callback=lambda xk: seen.append(xk)))
    assert runs[0].nit == runs[1].nit == 15
    assert runs[0].x.tobytes() == runs[1].x.tobytes()
    assert runs[0].fun == runs[1].fun
    assert len(seen) == 30 and seen[14].tobytes() == runs[0].x.tobytes()


class Counter:
    def __init__(self, fun):
        self.fun, self.calls = fun, 0

    def __call__(self, x):
        self.calls += 1
        return self.fun(x)


@pytest.mark.parametrize("x0, kwargs, exc, match", [
    (np.arange(3), {}, TypeError, "x0 must have dtype float32 or float64"),
    (np.zeros(3, np.float16), {}, TypeError, "x0 must have dtype"),
    (np.zeros(3, complex), {}, TypeError, "x0 must have dtype"),
    (np.array([1.0, np.nan]), {}, ValueError, "x0 has non-finite"),
    (np.zeros(0), {}, ValueError, "x0 is empty"),
    (np.zeros(3), {"m": 0}, ValueError, "m must be >= 1"),
    (np.zeros(3), {"m": 2.5}, TypeError, "m must be an int"),
    (np.zeros(3), {"maxiter": -1}, ValueError, "maxiter must be >= 0"),
    (np.zeros(3), {"gtol": -1.0}, ValueError, "gtol must be >= 0"),
    (np.zeros(3), {"ftol": np.nan}, ValueError, "ftol must be finite"),
    (np.zeros(3), {"line_search": "exact"}, ValueError, "line_search must be one of"),
    (np.zeros(3), {"callback": 3}, TypeError, "callback must be callable"),
])
def test_bad_input_before_any_work(x0, kwargs, exc, match):
    fun = Counter(lambda x: (float(x @ x), 2 * x))
    with pytest.raises(exc, match=match):
        lbfgs.minimize(fun, x0, **kwargs)
    assert fun.calls == 0


@pytest.mark.parametrize("ret, exc, match", [
    (lambda x: (1.0, np.zeros(4)), ValueError, r"gradient of shape \(4,\); expected \(3,\)"),
    (lambda x: (1.0, np.zeros((3, 1))), ValueError, "gradient of shape"),
    (lambda x: 1.0, TypeError, r"fun must return a tuple \(f, grad\)"),
    (lambda x: (np.ones(2), np.zeros(3)), ValueError, "fun must return a real scalar"),
    (lambda x: (1.0, np.zeros(3, complex)), TypeError, "gradient of dtype complex128"),
    (lambda x: (np.inf, np.zeros(3)), ValueError, r"fun\(x0\) returned f = inf"),
    (lambda x: (1.0, np.full(3, np.nan)), ValueError, "non-finite gradient"),
])
def test_bad_fun(ret, exc, match):
    with pytest.raises(exc, match=match):
        lbfgs.minimize(ret, np.zeros(3))
    with pytest.raises(TypeError, match="fun must be callable"):
        lbfgs.minimize(None, np.zeros(3))


# ---------------------------------------------------------------------------------------------
# The optimizer class


def test_lbfgs_class_shares_the_solver():
    # With the tolerances off, max_iter iterations of LBFGS.step are the very iterations of
    # minimize(maxiter=...): the same bits.
    x0 = ext_rosen_x0(40)
    res = lbfgs.minimize(ext_rosen, x0, maxiter=12, gtol=0.0, ftol=0.0)
    a, b = x0[:25].copy(), x0[25:].copy().reshape(3, 5)

    def closure():
        f, g = ext_rosen(np.concatenate([a, b.ravel()]))
        return f, [g[:25], g[25:].reshape(3, 5)]

    opt = LBFGS([a, b], m=10, max_iter=12, tolerance_grad=0.0, tolerance_change=0.0)
    loss0 = opt.step(closure)
    assert loss0 == ext_rosen(x0)[0]
    assert opt.nit == res.nit == 12 and opt.nfev == res.nfev
    np.testing.assert_array_equal(np.concatenate([a, b.ravel()]), res.x)
    # Keeps going from there with its history, to the minimizer.
    for _ in range(20):
        opt.step(closure)
    np.testing.assert_allclose(np.concatenate([a, b.ravel()]), 1.0, atol=1e-5)


def test_lbfgs_class_float32():
    w = np.zeros((4, 5), np.float32)
    target = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
    opt = LBFGS(w, line_search="armijo")
    for _ in range(3):
        opt.step(lambda: (float(np.sum((w - target) ** 2)), 2 * (w - target)))
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, target, atol=1e-5)
    assert opt.history.dtype == np.float32 and opt.nit >= 1


def test_lbfgs_class_checks():
    w = np.zeros(3)
    with pytest.raises(TypeError, match="params must share one dtype"):
        LBFGS([w, np.zeros(2, np.float32)])
    with pytest.raises(ValueError, match="params is an empty list"):
        LBFGS([])
    with pytest.raises(ValueError, match="line_search must be one of"):
        LBFGS([w], line_search=None)
    with pytest.raises(ValueError, match="m must be >= 1"):
        LBFGS([w], m=0)
    opt = LBFGS([w])
    with pytest.raises(ValueError, match="closure returned 2 gradients for 1 params"):
        opt.step(lambda: (1.0, [w, w]))
    with pytest.raises(ValueError, match=r"closure \(grads\[0\]\) returned a gradient of shape"):
        opt.step(lambda: (1.0, [np.zeros(4)]))
    with pytest.raises(TypeError, match="closure must be callable"):
        opt.step(None)
    assert (w == 0).all()


def test_lbfgs_class_against_torch():
    torch = pytest.importorskip("torch")
    fun, x0, x_star = PROBLEMS["logistic"]()
    w = x0.copy()
    opt = LBFGS([w], m=10)

    def closure():
        return fun(w)

    for _ in range(5):
        opt.step(closure)

    wt = torch.tensor(x0, requires_grad=True)
    topt = torch.optim.LBFGS([wt], history_size=10, line_search_fn="strong_wolfe")

    def tclosure():
        topt.zero_grad()
        f, g = fun(wt.detach().numpy().copy())
        wt.grad = torch.tensor(g)
        return torch.tensor(f)

    for _ in range(5):
        topt.step(tclosure)
    # Both reach the minimizer (scipy at a tight tolerance); torch stops on its own
    # tolerance_change, so the two agree to that accuracy.
    tight = scipy_optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                                    options={"gtol": 1e-12, "ftol": 1e-15})
    np.testing.assert_allclose(w, tight.x, atol=1e-6)
    np.testing.assert_allclose(wt.detach().numpy(), w, atol=1e-4)
    assert fun(w)[0] <= fun(wt.detach().numpy())[0] + 1e-12


def test_one_optimize_result_with_scipy_behaviour():
    import pickle

    from fusedopt import newton, sampling
    from fusedopt.functions import sphere
    from fusedopt.lbfgs import OptimizeResult

    r = lbfgs.minimize(lambda x: (float(x @ x), 2 * x), np.ones(3))
    rn = newton.newton(sphere.value_and_grad, np.ones(2), sphere.hess)
    rg = newton.preconditioned_gd(sphere.value_and_grad, np.ones(2), lr=0.1)
    assert all(type(x) is OptimizeResult for x in (r, rn, rg))
    assert not hasattr(newton, "Result") and not hasattr(sampling, "Result")
    # a dict readable by attribute, with SciPy's field names
    assert r.x is r["x"] and r.fun == r["fun"] and r.success is True and r.status == 0
    for key in ("x", "fun", "jac", "nit", "nfev", "njev", "success", "status", "message"):
        assert key in r and key in dir(r)
    with pytest.raises(AttributeError, match="nope"):
        r.nope
    r.extra = 5
    assert r["extra"] == 5
    del r.extra
    assert "extra" not in r
    # repr: one field per line, the message first, bulky arrays summarized
    text = repr(rg)
    lines = text.splitlines()
    assert lines[0].strip().startswith("message:") and "success: True" in text
    assert "path: <array of shape (" in text and len(lines) == len(rg)
    assert repr(OptimizeResult()) == "OptimizeResult()"
    back = pickle.loads(pickle.dumps(r))
    assert type(back) is OptimizeResult and back.keys() == r.keys()
    np.testing.assert_array_equal(back.x, r.x)
