"""``fusedopt.optimize``: the SciPy drop-in against ``scipy.optimize.minimize(method="L-BFGS-B")``
(results, status codes and messages, callbacks, options, finite differences) and through SciPy's
custom-method protocol."""
import warnings

import numpy as np
import pytest

from fusedopt import optimize as fo
from fusedopt.lbfgs.result import OptimizeResult as OwnResult

so = pytest.importorskip("scipy.optimize")

X0 = np.array([-1.2, 1.0, 0.5, -0.3])
BOX = [(-2.0, 0.5), (None, None), (-1.0, 2.0), (0.0, None)]


def rosen_pair(x):
    return so.rosen(x), so.rosen_der(x)


@pytest.mark.parametrize("jac", ["pair", "callable", None, "2-point", "3-point", "cs"])
@pytest.mark.parametrize("bounds", [None, BOX])
def test_same_solution_as_scipy(jac, bounds):
    fun, j = (rosen_pair, True) if jac == "pair" else (
        so.rosen, so.rosen_der if jac == "callable" else jac)
    ref = so.minimize(fun, X0, method="L-BFGS-B", jac=j, bounds=bounds)
    res = fo.minimize(fun, X0, jac=j, bounds=bounds)
    assert isinstance(res, so.OptimizeResult)
    assert res.success and ref.success and res.status == 0
    assert res.message in ("CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL",
                           "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH")
    assert np.abs(res.x - ref.x).max() < 1e-4
    assert res.fun <= ref.fun + 1e-8
    assert res.x.dtype == np.float64 and res.jac.shape == X0.shape
    assert res.nfev <= 1.5 * ref.nfev + 10 * (X0.size + 1)
    if jac in (None, "2-point", "cs"):
        assert res.nfev == res.njev * (X0.size + 1)     # SciPy's count: fun calls
    elif jac == "3-point":
        assert res.nfev == res.njev * (2 * X0.size + 1)
    else:
        assert res.nfev == res.njev


def test_custom_method_protocol():
    for kw in (dict(jac=True), dict(jac=so.rosen_der), dict()):
        fun = rosen_pair if kw.get("jac") is True else so.rosen
        direct = fo.minimize(fun, X0, bounds=BOX, **kw)
        via = so.minimize(fun, X0, method=fo.lbfgsb, bounds=BOX, **kw)
        assert np.array_equal(via.x, direct.x) and via.nfev == direct.nfev
        assert via.status == 0 and via.nit == direct.nit
    # tol reaches the solver through the protocol (as options["tol"])
    loose = so.minimize(rosen_pair, X0, method=fo.lbfgsb, jac=True, tol=1e-2)
    tight = so.minimize(rosen_pair, X0, method=fo.lbfgsb, jac=True, tol=1e-12)
    assert loose.nit < tight.nit
    assert np.array_equal(loose.x, fo.minimize(rosen_pair, X0, jac=True, tol=1e-2).x)
    # so does StopIteration (SciPy leaves the status of a custom method as it is)
    def halt(intermediate_result):
        raise StopIteration

    res = so.minimize(rosen_pair, X0, method=fo.lbfgsb, jac=True, callback=halt)
    assert res.status == 99 and not res.success


def test_status_codes_and_messages_as_scipy():
    for options in (dict(maxiter=3), dict(maxfun=5)):
        ref = so.minimize(rosen_pair, X0, method="L-BFGS-B", jac=True, options=options)
        res = fo.minimize(rosen_pair, X0, jac=True, options=options)
        assert (res.status, res.message, res.success) == (ref.status, ref.message, False)
        if "maxiter" in options:
            assert res.nit == ref.nit == 3
        else:
            assert res.nfev > 5


def test_callbacks():
    seen = []

    def new_style(intermediate_result):
        seen.append((intermediate_result.x.copy(), intermediate_result.fun))

    res = fo.minimize(rosen_pair, X0, jac=True, callback=new_style)
    assert len(seen) == res.nit and np.array_equal(seen[-1][0], res.x)
    assert seen[-1][1] == res.fun
    assert isinstance(res, so.OptimizeResult)
    xs = []
    res = fo.minimize(rosen_pair, X0, jac=True, callback=lambda xk: xs.append(xk))
    assert len(xs) == res.nit and isinstance(xs[0], np.ndarray)
    assert np.array_equal(xs[-1], res.x)

    calls = []

    def stop(intermediate_result):
        calls.append(1)
        if len(calls) == 2:
            raise StopIteration

    res = fo.minimize(rosen_pair, X0, jac=True, callback=stop)
    assert (res.status, res.success, res.message) == (99, False,
                                                      "`callback` raised `StopIteration`.")
    assert res.nit == 2
    calls.clear()
    ref = so.minimize(rosen_pair, X0, method="L-BFGS-B", jac=True, callback=stop)
    assert (ref.status, ref.message, ref.nit) == (res.status, res.message, res.nit)


def test_hess_inv_is_scipys_operator():
    res = fo.minimize(rosen_pair, X0, jac=True)
    h = res.hess_inv
    assert isinstance(h, so.LbfgsInvHessProduct)
    assert h.shape == (4, 4) and 1 <= h.sk.shape[0] <= 10
    # the secant equation of the newest pair: H y = s
    assert np.allclose(h.matvec(h.yk[-1]), h.sk[-1], rtol=1e-8, atol=1e-12)
    dense = h.todense()
    assert np.allclose(dense, dense.T, atol=1e-10)
    assert np.all(np.linalg.eigvalsh(dense) > 0)
    # pairs oldest first: the newest pair is x_k - x_{k-1}
    xs = []
    fo.minimize(rosen_pair, X0, jac=True, callback=lambda xk: xs.append(xk))
    assert np.allclose(h.sk[-1], xs[-1] - xs[-2], rtol=1e-12, atol=1e-15)


def test_integer_x0_args_and_tol():
    res = fo.minimize(lambda x, a, b: float(((x - a) ** 2).sum() * b), np.array([3, 4]),
                      args=(1.0, 2.0))
    assert res.x.dtype == np.float64 and np.allclose(res.x, 1.0, atol=1e-5)
    res = fo.minimize(lambda x, a: (float(((x - a) ** 2).sum()), 2 * (x - a)), [0, 0],
                      args=2.0, jac=True)   # a single non-tuple arg, as SciPy wraps it
    assert np.allclose(res.x, 2.0)
    res = fo.minimize(lambda x: (float(x @ x), 2 * x), 3.0, jac=True)   # a scalar x0
    assert res.x.shape == (1,)
    # tol sets ftol and gtol unless options give them
    a = fo.minimize(rosen_pair, X0, jac=True, tol=1e-3)
    b = fo.minimize(rosen_pair, X0, jac=True, options=dict(ftol=1e-3, gtol=1e-3))
    c = fo.minimize(rosen_pair, X0, jac=True, tol=1e-3, options=dict(ftol=1e-12,
                                                                      gtol=1e-12))
    assert np.array_equal(a.x, b.x) and c.nit > a.nit


def test_finite_differences_stay_in_the_box():
    lo, hi = np.array([0.0, -1.0, 0.3]), np.array([1.0, 0.2, 0.3])

    def fun(x):
        assert np.all(x >= lo) and np.all(x <= hi), x
        return float(((x - 2.0) ** 2).sum())

    x0 = hi.copy()          # at the upper bounds: the forward step turns backwards
    res = fo.minimize(fun, x0, bounds=list(zip(lo, hi)))
    ref = so.minimize(fun, x0, method="L-BFGS-B", bounds=list(zip(lo, hi)))
    assert np.allclose(res.x, ref.x, atol=1e-7) and np.array_equal(res.x, hi)
    # eps as an array, as SciPy allows
    res2 = fo.minimize(fun, x0, bounds=list(zip(lo, hi)), options=dict(eps=np.full(3, 1e-7)))
    assert np.allclose(res2.x, hi)


def test_unknown_and_ignored_options():
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options: foo, bar"):
        fo.minimize(rosen_pair, X0, jac=True, options=dict(foo=1, bar=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fo.minimize(rosen_pair, X0, jac=True, options=dict(iprint=5, disp=True))
    with pytest.warns(RuntimeWarning, match="Hessian"):
        fo.minimize(rosen_pair, X0, jac=True, hess=lambda x: np.eye(4))


def test_without_scipy_the_result_is_fusedopts(monkeypatch):
    monkeypatch.setattr(fo, "_scipy_optimize", lambda: None)
    res = fo.minimize(rosen_pair, X0, jac=True, bounds=BOX)
    assert type(res) is OwnResult and res.success
    # hess_inv: fusedopt's operator, the same as SciPy's of the same pairs
    h = res.hess_inv
    assert type(h) is fo.LbfgsInvHessProduct and h.shape == (4, 4) and h.dtype == np.float64
    ref = so.LbfgsInvHessProduct(h.sk, h.yk)
    v, V = np.arange(4.0) - 1.5, np.arange(12.0).reshape(4, 3)
    for got, want in ((h.matvec(v), ref.matvec(v)), (h @ v, ref @ v), (h.dot(V), ref.dot(V)),
                      (h.matmat(V), ref.matmat(V)), (h.todense(), ref.todense()),
                      (h.rmatvec(v), ref.matvec(v)), (h.T @ v, ref @ v),   # symmetric
                      (h(v[:, None]), ref(v[:, None]))):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="dimension mismatch"):
        h.matvec(np.ones(3))
    with pytest.warns(RuntimeWarning, match="Unknown solver options"):
        fo.minimize(rosen_pair, X0, jac=True, options=dict(foo=1))


def _never(x):
    raise AssertionError("fun was called")


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(method="BFGS"), ValueError, "method"),
    (dict(options=[("maxiter", 3)]), TypeError, "options"),
    (dict(options=dict(maxcor=0)), ValueError, "maxcor"),
    (dict(options=dict(maxls=0)), ValueError, "maxls"),
    (dict(options=dict(maxiter=2.5)), TypeError, "maxiter"),
    (dict(options=dict(ftol=-1.0)), ValueError, "ftol"),
    (dict(options=dict(gtol="a")), TypeError, "gtol"),
    (dict(options=dict(eps=-1.0)), ValueError, "eps"),
    (dict(options=dict(x0=1)), TypeError, "options"),
    (dict(bounds=[(1.0, 0.0)] * 4), ValueError, "lo > hi"),
    (dict(bounds=[(0.0, 1.0)] * 3), ValueError, "pairs"),
    (dict(bounds=[(0.0, np.nan)] * 4), ValueError, "NaN"),
    (dict(jac="4-point"), ValueError, "jac"),
    (dict(jac=3), ValueError, "jac"),
    (dict(options=dict(finite_diff_rel_step=-1e-3)), ValueError, "finite_diff_rel_step"),
    (dict(options=dict(finite_diff_rel_step=np.ones(3))), ValueError, "finite_diff_rel_step"),
    (dict(options=dict(finite_diff_rel_step="a")), TypeError, "finite_diff_rel_step"),
    (dict(x0=np.zeros((2, 2))), ValueError, "one dimension"),
    (dict(x0=np.array([np.nan, 0.0])), ValueError, "x0"),
    (dict(callback=3), TypeError, "callback"),
])
def test_bad_input_before_fun(kwargs, exc, match):
    kwargs = dict(kwargs)
    x0 = kwargs.pop("x0", np.zeros(4))
    with pytest.raises(exc, match=match):
        fo.minimize(_never, x0, **kwargs)


@pytest.mark.parametrize("options", [dict(maxiter=0), dict(maxfun=0), dict(maxiter=1), {}])
def test_edge_limits_as_scipy(options):
    """SciPy checks maxiter and maxfun after an iteration (maxiter=0 still takes one), and the
    projected gradient at the start (x0 = the minimizer: no iteration)."""
    x0 = X0[:3] if options else np.ones(3)
    ref = so.minimize(so.rosen, x0, jac=so.rosen_der, method="L-BFGS-B", options=options)
    res = fo.minimize(so.rosen, x0, jac=so.rosen_der, options=options)
    assert (res.nit, res.nfev, res.status, res.message) == (ref.nit, ref.nfev, ref.status,
                                                            ref.message)


@pytest.mark.parametrize("method", ["2-point", "3-point", "cs", None])
@pytest.mark.parametrize("rel_step", [None, 1e-4])
@pytest.mark.parametrize("bounded", [False, True])
def test_finite_difference_gradients_are_scipys(method, rel_step, bounded):
    """The gradient of each scheme is SciPy's ``approx_derivative`` bit for bit: the same
    steps, turned or shortened at the bounds the same way (x0 on, near and off the bounds),
    except at a fixed variable."""
    from scipy.optimize._numdiff import approx_derivative

    from fusedopt.lbfgs.bounds import parse_bounds

    lo = np.array([-2.0, -np.inf, 0.0, 0.5, -1.0, 1.0])
    hi = np.array([2.0, 1.0, 1e-9, np.inf, 1.0 + 1e-10, 1.0])
    x = np.array([1.5, 1.0, 0.0, 0.5, 1.0, 1.0]) if bounded else \
        np.array([1.5, -3.0, 0.0, 2e5, -1e-3, 7.0])
    fun = lambda x: np.sum(np.cos(x) * x ** 3) + x[0] * x[1]     # noqa: E731
    f0 = float(fun(x))
    box = parse_bounds(list(zip(lo, hi)), x.shape, np.float64) if bounded else None
    fg = fo._FunAndGrad(fun, method, (), 1e-8, rel_step, box)
    g = np.empty_like(x)
    fg._differences(x, f0, g)
    kw = dict(bounds=(lo, hi)) if bounded else {}
    with np.errstate(invalid="ignore", divide="ignore"):    # SciPy's 0 / 0 at lo == hi
        if method is None:
            want = approx_derivative(fun, x, method="2-point", abs_step=1e-8, f0=f0, **kw)
        else:
            want = approx_derivative(fun, x, method=method, rel_step=rel_step, f0=f0,
                                     **({} if method == "cs" else kw))
    if bounded and method != "cs":   # a fixed variable (lo == hi): 0, where SciPy gets 0 / 0
        assert g[-1] == 0.0
        g, want = g[:-1], want[:-1]
    np.testing.assert_array_equal(g, want)
    moving = x.size - (bounded and method != "cs")
    assert fg.nfev == (2 if method == "3-point" else 1) * moving


def test_maxfun_without_bounds_as_scipy():
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="L-BFGS-B",
                      options=dict(maxfun=12))
    res = fo.minimize(so.rosen, X0, jac=so.rosen_der, options=dict(maxfun=12))
    assert (res.status, res.message) == (ref.status, ref.message) == \
        (1, "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT")
    assert 12 < res.nfev <= 12 + 20
