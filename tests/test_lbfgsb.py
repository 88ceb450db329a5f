"""L-BFGS-B (``fusedopt.lbfgs.minimize(bounds=...)``) against SciPy's L-BFGS-B on bounded
problems, its parts against dense ground truths (the compact form against the BFGS recursion,
the Cauchy point against a segment-by-segment search of the projected path), the bound forms
and the input checks."""
import numpy as np
import pytest

from fusedopt import lbfgs
from fusedopt.lbfgs.bounds import parse_bounds
from fusedopt.lbfgs.compact import CompactForm
from fusedopt.lbfgs.lbfgsb import cauchy_point

so = pytest.importorskip("scipy.optimize")

# ---------------------------------------------------------------------------------------------
# Problems: fun(x) -> (f, grad), x0, bounds (pairs)


def box_quadratic(n=40, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.linspace(1.0, 100.0, n)) @ q.T
    b = 20 * rng.standard_normal(n)
    return (lambda x: (0.5 * x @ a @ x - b @ x, a @ x - b)), np.zeros(n), [(-1.0, 1.0)] * n


def rosenbrock_box(n=20):
    bounds = [(-2.0, 0.5) if i % 3 == 0 else (None, None) for i in range(n)]
    return (lambda x: (so.rosen(x), so.rosen_der(x))), np.full(n, -1.2), bounds


def nnls(m_rows=80, n=30, seed=2):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m_rows, n))
    b = rng.standard_normal(m_rows)

    def fun(x):
        r = a @ x - b
        return 0.5 * r @ r, a.T @ r

    return fun, np.ones(n), [(0.0, None)] * n


def logistic_nonneg():
    """test_lbfgs_minimize's logistic regression, its weights kept nonnegative."""
    from test_lbfgs_minimize import logistic_problem
    fun, _, _ = logistic_problem(n_samples=300, n_features=25, seed=3)
    return fun, np.full(25, 0.5), [(0.0, np.inf)] * 25


def fixed_variables():
    fun, x0, _ = box_quadratic(30, seed=4)
    bounds = [(0.25, 0.25)] * 6 + [(-1.0, 1.0)] * 24
    return fun, x0, bounds


def one_sided_and_infinite():
    fun, x0, _ = box_quadratic(30, seed=5)
    bounds = ([(None, 0.1)] * 8 + [(-0.1, None)] * 8 + [(-np.inf, np.inf)] * 7
              + [(-np.inf, 0.0)] * 7)
    return fun, x0, bounds


def outside_box():
    fun, _, bounds = rosenbrock_box(12)
    return fun, np.full(12, 3.0), [(-2.0, 0.5)] * 12


PROBLEMS = {
    "box_quadratic": box_quadratic,
    "rosenbrock_box": rosenbrock_box,
    "nnls": nnls,
    "logistic_nonneg": logistic_nonneg,
    "fixed_variables": fixed_variables,
    "one_sided_and_infinite": one_sided_and_infinite,
    "x0_outside_box": outside_box,
}

TIGHT = dict(gtol=1e-10, ftol=1e-14)   # both solvers run to the solution, not to ftol's stop


def active_set(x, bounds):
    lo = np.array([-np.inf if a is None else a for a, _ in bounds])
    hi = np.array([np.inf if b is None else b for _, b in bounds])
    return set(np.flatnonzero(x == lo)), set(np.flatnonzero(x == hi))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_against_scipy(name):
    fun, x0, bounds = PROBLEMS[name]()
    lo = np.array([-np.inf if a is None else a for a, _ in bounds])
    hi = np.array([np.inf if b is None else b for _, b in bounds])
    seen = []

    def checked(x):
        assert np.all(x >= lo) and np.all(x <= hi), "an evaluation left the box"
        seen.append(1)
        return fun(x)

    ref = so.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                      options=dict(gtol=TIGHT["gtol"], ftol=TIGHT["ftol"], maxiter=5000))
    res = lbfgs.minimize(checked, x0, bounds=bounds, **TIGHT, maxiter=5000)
    assert res.success, res.message
    scale = max(1.0, np.abs(ref.x).max())
    assert np.abs(res.x - ref.x).max() <= 1e-6 * scale
    assert abs(res.fun - ref.fun) <= 1e-9 * max(1.0, abs(ref.fun))
    assert active_set(res.x, bounds) == active_set(ref.x, bounds)
    assert res.nfev <= 1.5 * ref.nfev + 10, (res.nfev, ref.nfev)
    assert res.nfev == len(seen)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_default_tolerances_close_to_scipy(name):
    fun, x0, bounds = PROBLEMS[name]()
    ref = so.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    res = lbfgs.minimize(fun, x0, bounds=bounds)
    assert res.success and ref.success
    assert res.fun <= ref.fun + 1e-6 * max(1.0, abs(ref.fun))
    assert res.nfev <= 1.5 * ref.nfev + 10, (res.nfev, ref.nfev)


def test_fixed_variables_and_projection_are_exact():
    fun, x0, bounds = fixed_variables()
    x0 = x0.copy()
    x0[:6] = 7.0          # outside: projected onto the fixed value
    res = lbfgs.minimize(fun, x0, bounds=bounds)
    assert np.all(res.x[:6] == 0.25)
    assert np.all(np.abs(res.x[6:]) <= 1.0)


def test_bound_forms_agree():
    fun, x0, pairs = one_sided_and_infinite()
    lo = np.array([-np.inf if a is None else a for a, _ in pairs])
    hi = np.array([np.inf if b is None else b for _, b in pairs])
    forms = [pairs, so.Bounds(lo, hi), (lo, hi), np.stack([lo, hi]), list(zip(lo, hi))]
    results = [lbfgs.minimize(fun, x0, bounds=b) for b in forms]
    for r in results[1:]:
        assert np.array_equal(r.x, results[0].x) and r.nfev == results[0].nfev
    # scalars for every variable
    r1 = lbfgs.minimize(fun, x0, bounds=(-0.5, 0.5))
    r2 = lbfgs.minimize(fun, x0, bounds=[(-0.5, 0.5)] * x0.size)
    assert np.array_equal(r1.x, r2.x)


def test_any_shape():
    fun, x0, bounds = nnls()
    x2 = x0.reshape(5, 6)
    lo = np.zeros((5, 6))

    def fun2(x):
        assert x.shape == (5, 6)
        f, g = fun(x.ravel())
        return f, g.reshape(5, 6)

    r2 = lbfgs.minimize(fun2, x2, bounds=(lo, None))
    r1 = lbfgs.minimize(fun, x0, bounds=bounds)
    assert r2.x.shape == (5, 6)
    assert np.array_equal(r2.x.ravel(), r1.x)
    r3 = lbfgs.minimize(fun2, x2, bounds=so.Bounds(0.0, np.inf))
    assert np.array_equal(r3.x, r2.x)


def test_float32_native():
    fun, x0, bounds = nnls()

    def fun32(x):
        assert x.dtype == np.float32
        f, g = fun(x.astype(np.float64))
        return f, g.astype(np.float32)

    ref = lbfgs.minimize(fun, x0, bounds=bounds, gtol=1e-8)
    res = lbfgs.minimize(fun32, x0.astype(np.float32), bounds=bounds, gtol=1e-4)
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    assert res.success, res.message
    assert np.abs(res.x - ref.x).max() < 1e-3
    assert np.all(res.x >= 0)
    # float32 reaches the same active set
    assert set(np.flatnonzero(res.x == 0)) == set(np.flatnonzero(ref.x == 0))


def test_stopping_rules_and_status():
    fun, x0, bounds = rosenbrock_box()
    r = lbfgs.minimize(fun, x0, bounds=bounds, maxiter=3)
    assert r.status == 1 and r.nit == 3 and not r.success
    r = lbfgs.minimize(fun, x0, bounds=bounds, maxfun=5)
    assert r.status == 1 and r.nfev > 5 and "maxfun" in r.message
    # started at the solution of the box: converged at once on the projected gradient
    r = lbfgs.minimize(lambda x: (float(-x.sum()), -np.ones_like(x)), np.zeros(4),
                       bounds=(0.0, 1.0))
    assert r.success and np.all(r.x == 1.0)
    r0 = lbfgs.minimize(lambda x: (float(-x.sum()), -np.ones_like(x)), np.ones(4),
                        bounds=(0.0, 1.0))
    assert r0.success and r0.nit == 0 and r0.nfev == 1
    xs = []
    r = lbfgs.minimize(fun, x0, bounds=bounds, callback=xs.append)
    assert len(xs) == r.nit and np.array_equal(xs[-1], r.x)


@pytest.mark.parametrize("bounds, exc, match", [
    ([(1.0, 0.0)] * 4, ValueError, "lo > hi"),
    ([(0.0, 1.0)] * 3, ValueError, "pairs"),
    ([(0.0, np.nan)] * 4, ValueError, "NaN"),
    ((np.zeros(3), np.ones(3)), ValueError, "shape"),
    ((np.zeros((2, 2)), np.ones((4, 1))), ValueError, "shape"),
    ([(0.0, "a")] * 4, TypeError, "real number"),
    ([(0.0, 1.0, 2.0)] * 4, ValueError, "pair"),
    (5.0, TypeError, "bounds"),
    ([(np.inf, np.inf)] * 4, ValueError, "empty"),
])
def test_bad_bounds_refused_before_fun(bounds, exc, match):
    def fun(x):
        raise AssertionError("fun was called")

    with pytest.raises(exc, match=match):
        lbfgs.minimize(fun, np.zeros(4), bounds=bounds)


def test_bad_options_with_bounds():
    def fun(x):
        raise AssertionError("fun was called")

    with pytest.raises(ValueError, match="line_search"):
        lbfgs.minimize(fun, np.zeros(4), bounds=(0, 1), line_search="armijo")
    with pytest.raises(ValueError, match="maxls"):
        lbfgs.minimize(fun, np.zeros(4), bounds=(0, 1), maxls=0)
    with pytest.raises(TypeError, match="maxfun"):
        lbfgs.minimize(fun, np.zeros(4), bounds=(0, 1), maxfun=1.5)


# ---------------------------------------------------------------------------------------------
# The parts against dense ground truths


def push_noisy_pairs(cf, n, count, rng, dtype=np.float64):
    """``count`` pairs (s, 2 s + 0.1 noise) of ``dtype`` pushed into the compact form ``cf``, s . y
    in float64: a well-conditioned history for large n (random_pairs' dense Hessian is n x n)."""
    for _ in range(count):
        s = rng.standard_normal(n).astype(dtype)
        y = (2.0 * s + 0.1 * rng.standard_normal(n)).astype(dtype)
        cf.push(s, y, float(s.astype(np.float64) @ y.astype(np.float64)))


def random_pairs(n, count, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    hess = a @ a.T / n + np.eye(n)
    pairs = []
    for _ in range(count):
        s = rng.standard_normal(n)
        pairs.append((s, hess @ s))
    return pairs


def dense_bfgs(pairs, theta):
    """B_k by the BFGS update (Nocedal & Wright eq. 6.19) from B_0 = theta I."""
    b = theta * np.eye(pairs[0][0].size)
    for s, y in pairs:
        bs = b @ s
        b = b - np.outer(bs, bs) / (s @ bs) + np.outer(y, y) / (y @ s)
    return b


def compact_dense(cf):
    n = cf.n
    w = np.stack([cf.w_row(i) for i in range(n)])
    return cf.theta * np.eye(n) - w @ cf.middle() @ w.T


@pytest.mark.parametrize("count", [1, 3, 5, 9])
def test_compact_form_equals_bfgs_recursion(count):
    n, m = 12, 5
    pairs = random_pairs(n, count, seed=count)
    cf = CompactForm(n, m, np.float64)
    for s, y in pairs:
        cf.push(s, y, float(s @ y))
    kept = pairs[-m:]
    theta = kept[-1][1] @ kept[-1][1] / (kept[-1][0] @ kept[-1][1])
    assert cf.theta == pytest.approx(theta, rel=1e-14)
    ref = dense_bfgs(kept, theta)
    assert np.allclose(compact_dense(cf), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    # the products over the history against dense W
    w = np.stack([cf.w_row(i) for i in range(n)])
    v = np.random.default_rng(0).standard_normal(n)
    assert np.allclose(cf.wt_dot(v), w.T @ v, rtol=1e-12, atol=1e-12)
    a = np.random.default_rng(1).standard_normal(w.shape[1])
    assert np.allclose(cf.w_times(np.empty(n), a), w @ a, rtol=1e-12, atol=1e-12)
    assert np.allclose(cf.gram_w(), w.T @ w, rtol=1e-12, atol=1e-12)
    idx = np.array([0, 3, 7])
    assert np.allclose(cf.gram_w_at(idx), w[idx].T @ w[idx], rtol=1e-12, atol=1e-12)


def model(g, b_dense, x, z):
    dz = z - x
    return g @ dz + 0.5 * dz @ b_dense @ dz


def path_first_minimizer(x, g, lo, hi, b_dense):
    """The first local minimizer of the model along P(x - t g), segment by segment (dense)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tb = np.where(g > 0, (x - lo) / g, np.where(g < 0, (x - hi) / g, np.inf))
    tb = np.where(np.isnan(tb), np.inf, tb)
    knots = np.unique(np.concatenate([[0.0], tb[np.isfinite(tb)], [np.inf]]))
    for t0, t1 in zip(knots[:-1], knots[1:]):
        z0 = np.clip(x - t0 * g, lo, hi)
        d = np.where(tb > t0, -g, 0.0)
        slope = g @ d + (z0 - x) @ b_dense @ d
        curv = d @ b_dense @ d
        if slope >= 0:
            return z0
        tstar = -slope / curv if curv > 0 else np.inf
        if tstar < t1 - t0:
            return z0 + tstar * d
    raise AssertionError("unbounded model")


@pytest.mark.parametrize("count, n", [(0, 12), (2, 12), (6, 12), (0, 200), (4, 200)])
def test_cauchy_point_against_dense_path_search(count, n):
    """Many breakpoints (n = 200, ties included) come off the heap in order."""
    rng = np.random.default_rng(10 + count + n)
    cf = CompactForm(n, 5, np.float64)
    for s, y in random_pairs(n, count, seed=20 + count):
        cf.push(s, y, float(s @ y))
    lo = np.where(rng.uniform(size=n) < 0.8, -rng.uniform(0, 0.5, n), -np.inf)
    hi = np.where(rng.uniform(size=n) < 0.8, rng.uniform(0, 0.5, n), np.inf)
    lo[0] = hi[0] = 0.1                            # a fixed variable
    box = parse_bounds((lo, hi), (n,), np.float64)
    x = np.clip(rng.uniform(-0.3, 0.3, n), lo, hi)
    x[1] = lo[1] if np.isfinite(lo[1]) else x[1]   # one at its bound
    g = 5 * rng.standard_normal(n)
    if n > 12:                                     # ties: equal breakpoints
        lo[10:20], hi[10:20], x[10:20], g[10:20] = -0.5, 0.5, 0.0, 2.0
        box = parse_bounds((lo, hi), (n,), np.float64)
    b_dense = compact_dense(cf) if count else np.eye(n)
    xc, c, t = cauchy_point(x, g, box, cf)
    free = t >= 0
    g_eff = np.where((lo == hi), 0.0, g)
    ref = path_first_minimizer(x, g_eff, lo, hi, b_dense)
    assert np.allclose(xc, ref, rtol=1e-10, atol=1e-12)
    assert np.all(xc >= lo) and np.all(xc <= hi)
    if count:
        w = np.stack([cf.w_row(i) for i in range(n)])
        assert np.allclose(c, w.T @ (xc - x), rtol=1e-9, atol=1e-12)
    assert not free[0]
    # every variable that reached a bound on the path is not free
    at_bound = (xc == lo) | (xc == hi)
    moved = xc != x
    assert not np.any(free & at_bound & moved)


def test_subspace_step_against_dense_minimizer():
    """xbar = P(x^c + du), du the minimizer of the model over the free variables (dense solve),
    when that is a descent direction (Morales & Nocedal); else x^c + alpha du in the box."""
    from fusedopt.lbfgs.lbfgsb import subspace_step
    n = 14
    rng = np.random.default_rng(3)
    cf = CompactForm(n, 5, np.float64)
    for s, y in random_pairs(n, 4, seed=8):
        cf.push(s, y, float(s @ y))
    b_dense = compact_dense(cf)
    projected = truncated = 0
    for trial in range(30):
        lo = -rng.uniform(0.05, 0.5, n)
        hi = rng.uniform(0.05, 0.5, n)
        box = parse_bounds((lo, hi), (n,), np.float64)
        x = rng.uniform(lo, hi)
        g = 3 * rng.standard_normal(n)
        xc, c, t = cauchy_point(x, g, box, cf)
        free = t >= 0
        if not free.any():
            continue
        r = g + b_dense @ (xc - x)
        f_idx = np.flatnonzero(free)
        du = np.zeros(n)
        du[f_idx] = -np.linalg.solve(b_dense[np.ix_(f_idx, f_idx)], r[f_idx])
        got = subspace_step(x, g, box, cf, xc, c, t)[0]
        # the solver's way: W^T g through the Cauchy pass's W^T d (held part cancelled)
        xc2, c2, t2, wtd = cauchy_point(x, g, box, cf, with_wtd=True)
        assert xc2.tobytes() == xc.tobytes() and np.array_equal(t2, t)
        assert np.allclose(subspace_step(x, g, box, cf, xc2, c2, t2, wtd=wtd)[0], got,
                           rtol=1e-12, atol=1e-14)
        # the solver's pass writes d only; xbar (and du) only when the point is truncated
        full = subspace_step(x, g, box, cf, xc2, c2, t2, wtd=wtd)
        work = (np.full(n, 5.0), np.full(n, 5.0), np.full(n, 5.0))
        xb, gd, tm = subspace_step(x, g, box, cf, xc2, c2, t2, wtd=wtd, work=work,
                                   xbar_needed=False)
        if full[1] is None:                      # truncated: the same xbar from a second pass
            assert xb.tobytes() == full[0].tobytes() and gd is None and tm is None
        else:
            assert xb is None and (gd, tm) == full[1:]
            assert work[2].tobytes() == (full[0] - x).tobytes()
        cand = np.clip(xc + du, lo, hi)
        if g @ (cand - x) <= 0:
            projected += 1
            assert np.allclose(got, cand, rtol=1e-9, atol=1e-12)
        else:
            truncated += 1
            with np.errstate(divide="ignore"):
                ratios = np.where(du > 0, (hi - xc) / du, np.where(du < 0, (lo - xc) / du,
                                                                    np.inf))
            alpha = min(1.0, ratios.min())
            assert np.allclose(got, xc + alpha * du, rtol=1e-9, atol=1e-12)
    assert projected > 0


def test_truncated_point_when_the_pass_wrote_d_only(monkeypatch):
    """subspace_step(xbar_needed=False): when g . d > 0 (forced here: it is rare) the point is
    truncated from xbar and du of a second pass, the bits of the pass that wrote them at once."""
    from fusedopt.lbfgs.lbfgsb import subspace_step
    n = 3 * 16384 + 21
    rng = np.random.default_rng(4)
    cf = CompactForm(n, 5, np.float64)
    push_noisy_pairs(cf, n, 4, rng)
    lo, hi = -rng.uniform(0.05, 0.5, n), rng.uniform(0.05, 0.5, n)
    box = parse_bounds((lo, hi), (n,), np.float64)
    x = rng.uniform(lo, hi)
    g = 3 * rng.standard_normal(n)
    xc, c, t, wtd = cauchy_point(x, g, box, cf, with_wtd=True)
    orig = CompactForm.subspace_direct_d
    monkeypatch.setattr(CompactForm, "subspace_direct_d",
                        lambda self, *a: (abs(orig(self, *a)[0]) + 1.0, 0.0))
    full = subspace_step(x, g, box, cf, xc, c, t, wtd=wtd)
    work = (np.full(n, 5.0), np.full(n, 5.0), np.full(n, 5.0))
    xb, gd, tm = subspace_step(x, g, box, cf, xc, c, t, wtd=wtd, work=work, xbar_needed=False)
    assert full[1] is None and gd is None and tm is None
    assert xb is work[0] and xb.tobytes() == full[0].tobytes()
    assert not np.array_equal(xb, xc)            # a step was taken from x^c


# ---------------------------------------------------------------------------------------------
# The kernels of L-BFGS-B (_core.lbfgsb_*): NumPy ground truths, same bits for any thread count

N_PAR = (1 << 18) + 12345        # above lbfgs_parallel_min: the loops run on the pool


def _threads(fn, counts=(1, 2, 3)):
    from fusedopt import _core
    old = _core.get_num_threads()
    try:
        out = []
        for t in counts:
            _core.set_num_threads(t)
            out.append(fn())
        return out
    finally:
        _core.set_num_threads(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_kernels_against_numpy_any_thread_count(dtype):
    from fusedopt import _core
    rng = np.random.default_rng(0)
    m, rows, n = 6, 4, N_PAR
    s = rng.standard_normal((m, n)).astype(dtype)
    y = rng.standard_normal((m, n)).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    runs = _threads(lambda: _core.lbfgsb_rows_dots(s, y, v, rows))
    for r in runs[1:]:
        assert r.tobytes() == runs[0].tobytes()
    ref = np.concatenate([s[:rows].astype(np.float64) @ v.astype(np.float64),
                          y[:rows].astype(np.float64) @ v.astype(np.float64)])
    assert np.allclose(runs[0], ref, rtol=1e-12, atol=1e-9)
    a = rng.standard_normal(m)
    b = rng.standard_normal(m)

    def axpy():
        out = np.empty(n, dtype)
        _core.lbfgsb_rows_axpy(out, s, y, a, b, rows)
        return out

    idx = np.flatnonzero(rng.uniform(size=n) < 0.6)
    grams = _threads(lambda: _core.lbfgsb_rows_gram_at(s, y, idx, rows))
    for gm in grams[1:]:
        assert gm.tobytes() == grams[0].tobytes()
    s64, y64 = s[:rows, idx].astype(np.float64), y[:rows, idx].astype(np.float64)
    for got, ref in zip(grams[0], (s64 @ s64.T, s64 @ y64.T, y64 @ y64.T)):
        assert np.allclose(got, ref, rtol=1e-12, atol=1e-9)
    # gathered block by block: the bits of the kernel over the gathered arrays
    sa, ya = np.ascontiguousarray(s[:, idx]), np.ascontiguousarray(y[:, idx])
    whole = _core.lbfgsb_rows_gram_at(sa, ya, np.arange(idx.size), rows)
    assert whole.tobytes() == grams[0].tobytes()
    runs = _threads(axpy)
    expect = np.zeros(n, dtype)
    for j in range(rows):          # the kernel's order, in the array's dtype
        expect = (expect + dtype(a[j]) * s[j]) + dtype(b[j]) * y[j]
    for r in runs:
        assert r.tobytes() == expect.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_kernels_against_numpy(dtype):
    from fusedopt import _core
    rng = np.random.default_rng(1)
    n = N_PAR
    lo = np.where(rng.uniform(size=n) < 0.7, -rng.uniform(0, 1, n), -np.inf).astype(dtype)
    hi = np.where(rng.uniform(size=n) < 0.7, rng.uniform(0, 1, n), np.inf).astype(dtype)
    hi[:100] = lo[:100] = dtype(0.25)
    x = np.clip(rng.uniform(-1, 1, n), lo, hi).astype(dtype)
    x[100:200] = np.where(np.isfinite(lo[100:200]), lo[100:200], x[100:200])
    x[200:300] = np.where(np.isfinite(hi[200:300]), hi[200:300], x[200:300])
    g = rng.standard_normal(n).astype(dtype)
    g[300:310] = 0

    def start():
        d, t = np.empty(n, dtype), np.empty(n, dtype)
        dd = _core.lbfgsb_cauchy_start(d, t, x, g, lo, hi)
        return d, t, dd

    runs = _threads(start)
    for d, t, dd in runs[1:]:
        assert d.tobytes() == runs[0][0].tobytes() and t.tobytes() == runs[0][1].tobytes()
        assert dd == runs[0][2]
    d, t, dd = runs[0]
    held = ((x <= lo) & (g >= 0)) | ((x >= hi) & (g <= 0)) | (lo == hi)
    assert np.array_equal(d, np.where(held, 0, -g).astype(dtype))
    with np.errstate(divide="ignore", invalid="ignore"):
        tref = np.where(held, -1, np.where((g > 0) & np.isfinite(lo), (x - lo) / g,
                                           np.where((g < 0) & np.isfinite(hi), (x - hi) / g,
                                                    np.inf))).astype(dtype)
    assert np.array_equal(t, tref)
    assert dd == pytest.approx(float(d.astype(np.float64) @ d.astype(np.float64)), rel=1e-12)
    pg = np.where(g < 0, np.maximum(x - hi, g), np.minimum(x - lo, g))
    got = _threads(lambda: _core.lbfgsb_projected_amax(x, g, lo, hi))
    assert got == [float(np.abs(pg).max())] * 3
    dvec = -g
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = np.concatenate([((lo.astype(np.float64) - x) / dvec)[(dvec < 0) & np.isfinite(lo)],
                             ((hi.astype(np.float64) - x) / dvec)[(dvec > 0) & np.isfinite(hi)]])
    got = _threads(lambda: _core.lbfgsb_max_step(x, dvec, lo, hi))
    assert got == [max(float(ts.min()), 0.0)] * 3
    assert _core.lbfgsb_max_step(x, dvec, np.full(n, -np.inf, dtype),
                                 np.full(n, np.inf, dtype)) == np.inf


# max_step's branch-free term on special values: signed zeros, infinite and NaN steps and bounds,
# x outside the box (negative terms), each side absent.
MAX_STEP_SIDES = {"both": (True, True), "lo only": (True, False), "hi only": (False, True),
                  "none": (False, False)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sides", list(MAX_STEP_SIDES))
def test_max_step_special_values(dtype, sides):
    from fusedopt import _core
    rng = np.random.default_rng(7)
    n = N_PAR + 13
    vals = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -3.0, 1e-30, np.inf, -np.inf, np.nan], dtype)
    x, d, lo, hi = (rng.choice(vals, n) for _ in range(4))
    has_lo, has_hi = MAX_STEP_SIDES[sides]
    klo, khi = (lo if has_lo else None), (hi if has_hi else None)
    lo = lo if has_lo else np.full(n, -np.inf, dtype)
    hi = hi if has_hi else np.full(n, np.inf, dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = np.concatenate([((lo.astype(np.float64) - x) / d)[(d < 0) & (lo > -np.inf)],
                             ((hi.astype(np.float64) - x) / d)[(d > 0) & (hi < np.inf)],
                             [np.inf]])
    expect = max(float(np.nanmin(ts)), 0.0)        # a NaN term is never the minimum
    got = _threads(lambda: _core.lbfgsb_max_step(x, d, klo, khi))
    assert got == [expect] * 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pair_dots_are_sub_dots_without_the_stores(dtype):
    """lbfgs_pair_dots(xt, x, gt, g): (s . y, y . y) with the bits of lbfgs_sub_dots after
    s = xt - x, on any thread count; CompactForm.push_difference stores numpy's s and y."""
    from fusedopt import _core, reference
    rng = np.random.default_rng(6)
    n = N_PAR + 13
    xt, x, gt, g = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    s = xt - x
    y = np.empty(n, dtype)
    want = _core.lbfgs_sub_dots(y, gt, g, s)
    assert y.tobytes() == (gt - g).tobytes()
    for got in _threads(lambda: _core.lbfgs_pair_dots(xt, x, gt, g)):
        assert got == want
    assert want[0] == reference.blocked_dot(s, y) and want[1] == reference.blocked_dot(y, y)
    cf = CompactForm(n, 2, dtype)
    for _ in range(3):                       # the third wraps the ring
        cf.push_difference(xt, x, gt, g)
    for r in range(2):
        assert cf.s[r].tobytes() == s.tobytes() and cf.y[r].tobytes() == y.tobytes()
    assert cf.count == 2 and cf.head == 1
    with pytest.raises(ValueError, match="gt"):
        _core.lbfgs_pair_dots(xt, x, gt[:-1], g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [N_PAR + 13, 3 * 16384 + 5, 7])
def test_copy_dot_is_a_copy_and_the_dot(dtype, n):
    """lbfgs_copy_dot(out, g, d): out = g exactly and lbfgs_dot(g, d)'s bits (the reference's
    blocked dot), on any thread count; NaN and inf copied as they are."""
    from fusedopt import _core, reference
    rng = np.random.default_rng(21)
    g, d = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    g[n // 2] = np.inf if n > 7 else g[n // 2]
    g[1] = -0.0

    def run():
        out = np.full(n, 7, dtype)
        return out, _core.lbfgs_copy_dot(out, g, d)
    for out, gd in _threads(run):
        assert out.tobytes() == g.tobytes()
        assert gd == _core.lbfgs_dot(g, d) and (gd == reference.blocked_dot(g, d) or n > 7)
    g[0] = np.nan
    out = np.empty(n, dtype)
    assert np.isnan(_core.lbfgs_copy_dot(out, g, d)) and np.isnan(out[0])
    with pytest.raises(ValueError, match="out shares memory with g"):
        _core.lbfgs_copy_dot(g, g, d)
    with pytest.raises(ValueError, match="d"):
        _core.lbfgs_copy_dot(out, g, d[:-1])
    with pytest.raises(TypeError, match="g"):
        _core.lbfgs_copy_dot(out, g.astype(np.float16), d)


def _fixed_set_numpy(t, xc, x, g, theta, zero_held):
    """lbfgsb.subspace_step's NumPy lines: the list and q."""
    fixed = np.flatnonzero(t < 0)
    step = xc[fixed] - x[fixed]
    q = g[fixed] + x.dtype.type(theta) * step
    if zero_held:
        q[step == 0] = 0
    return fixed, q


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, p", [(N_PAR + 13, 0.2), (3 * 16384 + 777, 0.5), (9, 0.5),
                                  (16385, 0.0), (16385, 1.0)])
def test_fixed_set_is_numpys_list_and_q(dtype, n, p):
    """lbfgsb_fixed_set: numpy.flatnonzero(t < 0) and q = g + theta (xc - x) over it (0 where
    xc == x with zero_held), NumPy's bits, on 1/2/3 threads; empty and full lists."""
    from fusedopt import _core
    rng = np.random.default_rng(22)
    x = rng.uniform(-1, 1, n).astype(dtype)
    xc = np.where(rng.uniform(size=n) < 0.5, x, x + rng.uniform(-0.1, 0.1, n)).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    t = np.where(rng.uniform(size=n) < p, -1, rng.uniform(0, 2, n)).astype(dtype)
    t[rng.uniform(size=n) < 0.05] = np.inf
    for zero_held in (False, True):
        want_idx, want_q = _fixed_set_numpy(t, xc, x, g, 1.7, zero_held)

        def run():
            idx, q = np.full(n, -5, np.int64), np.full(n, 9, dtype)
            k = _core.lbfgsb_fixed_set(idx, q, t, xc, x, g, 1.7, zero_held)
            return idx[:k], q[:k]
        for idx, q in _threads(run):
            assert np.array_equal(idx, want_idx) and q.tobytes() == want_q.tobytes()
    idx, q = np.empty(n, np.int64), np.empty(n, dtype)
    with pytest.raises(TypeError, match="idx"):
        _core.lbfgsb_fixed_set(idx.astype(np.int32), q, t, xc, x, g, 1.7, True)
    with pytest.raises(ValueError, match="idx"):
        _core.lbfgsb_fixed_set(idx[:-1], q, t, xc, x, g, 1.7, True)
    with pytest.raises(ValueError, match="q shares memory with g"):
        _core.lbfgsb_fixed_set(idx, g, t, xc, x, g, 1.7, True)
    with pytest.raises(TypeError, match="xc"):
        _core.lbfgsb_fixed_set(idx, q, t, xc.astype(np.float16), x, g, 1.7, True)


def test_solver_fixed_buffers_never_overwrite_the_kept_list():
    """BoundedSolver's fixed lists alternate between two buffers, never the one whose view the
    compact form keeps for its next Gram update, and its runs give the same iterates as the
    NumPy lines of subspace_step (fixed_q=None)."""
    from fusedopt.benchmarks import lbfgs as lbfgs_bench
    from fusedopt.lbfgs import lbfgsb
    n = 3 * 16384 + 12
    x0 = lbfgs_bench.ext_rosenbrock_x0(n)
    hi = lbfgs_bench.ext_rosenbrock_bounds(n)[1]       # every fifth ends at its bound
    fun = lbfgs_bench.ext_rosenbrock

    fast = lbfgs.minimize(fun, x0, bounds=(np.full(n, -np.inf), hi), maxiter=25)
    orig = lbfgsb.BoundedSolver._fixed_set
    step = lbfgsb.subspace_step
    seen = []

    def spy(x, g, box, cf, *a, **k):       # the list given to the step (from the Cauchy path's
        fixed = k["fixed_q"][0]           # last pass, or _fixed_set)
        assert not cf.keeps(fixed.base)
        seen.append(fixed.base)
        return step(x, g, box, cf, *a, **k)
    lbfgsb.subspace_step = spy
    try:
        again = lbfgs.minimize(fun, x0, bounds=(np.full(n, -np.inf), hi), maxiter=25)
    finally:
        lbfgsb.subspace_step = step
    assert len({id(b) for b in seen}) == 2 and len(seen) >= 20
    assert again.x.tobytes() == fast.x.tobytes() and again.fun == fast.fun
    # the former lines: the list and q in NumPy, xbar and du written by the pass, the line
    # search's g . d a dot of its own after the gradient's copy
    # (the fixed set not taken in the Cauchy path's last pass: _fixed_set, here NumPy's)
    from fusedopt.lbfgs.solver import _Objective
    from fusedopt.lbfgs._vector import CoreVec
    lbfgsb.BoundedSolver._fixed_set = lambda self, t, xc, wtd: _fixed_set_numpy(
        t, xc, self.x, self.g, self.cf.theta, wtd is not None)
    lbfgsb.subspace_step = lambda *a, **k: step(*a, **dict(k, xbar_needed=True))
    CoreVec.cauchy_path_fixed = False
    try:
        box = parse_bounds((np.full(n, -np.inf), hi), x0.shape, x0.dtype)
        slow = lbfgsb.BoundedSolver(_Objective(fun, x0.shape), box.project(np.empty(n), x0),
                                    box, 10, 20)
        slow._with_dot = None
        slow.evaluate_start()
        lbfgsb.run(slow, maxiter=25, maxfun=np.inf, gtol=1e-5, ftol=1e-12)
    finally:
        lbfgsb.BoundedSolver._fixed_set = orig
        lbfgsb.subspace_step = step
        CoreVec.cauchy_path_fixed = True
    assert slow.x.tobytes() == fast.x.tobytes() and slow.f == fast.fun
    assert (slow.nit, slow.obj.nfev) == (fast.nit, fast.nfev) and fast.nit > 10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cauchy_start_pg_is_start_and_projected_norm_in_one_pass(dtype):
    """lbfgsb_cauchy_start_pg: the d, t and d . d of lbfgsb_cauchy_start, the projected-gradient
    norm of lbfgsb_projected_amax and the count of moving variables without a breakpoint, bit
    for bit, on any thread count; NaN in g gives a NaN norm."""
    from fusedopt import _core
    rng = np.random.default_rng(5)
    n = N_PAR + 7
    lo = np.where(rng.uniform(size=n) < 0.6, -rng.uniform(0, 1, n), -np.inf).astype(dtype)
    hi = np.where(rng.uniform(size=n) < 0.6, rng.uniform(0, 1, n), np.inf).astype(dtype)
    hi[:50] = lo[:50] = dtype(0.5)
    x = np.clip(rng.uniform(-1, 1, n), lo, hi).astype(dtype)
    x[60:90] = np.where(np.isfinite(lo[60:90]), lo[60:90], x[60:90])
    g = rng.standard_normal(n).astype(dtype)
    g[100:120] = 0

    def fused():
        d, t = np.empty(n, dtype), np.empty(n, dtype)
        return d, t, _core.lbfgsb_cauchy_start_pg(d, t, x, g, lo, hi)

    d0, t0 = np.empty(n, dtype), np.empty(n, dtype)
    dd0 = _core.lbfgsb_cauchy_start(d0, t0, x, g, lo, hi)
    pg0 = _core.lbfgsb_projected_amax(x, g, lo, hi)
    open0 = int((np.isinf(t0) & (d0 != 0)).sum())
    assert open0 > 0
    for d, t, (dd, pg, open_) in _threads(fused):
        assert d.tobytes() == d0.tobytes() and t.tobytes() == t0.tobytes()
        assert (dd, pg, open_) == (dd0, pg0, open0)
    both = np.full(n, 0.5, dtype)                      # every moving variable bounded
    assert _core.lbfgsb_cauchy_start_pg(np.empty(n, dtype), np.empty(n, dtype), x, g, -both,
                                        both)[2] == 0
    g[N_PAR - 3] = np.nan
    _, _, (_, pg, _) = fused()
    assert np.isnan(pg) and np.isnan(_core.lbfgsb_projected_amax(x, g, lo, hi))
    with pytest.raises(TypeError):
        _core.lbfgsb_cauchy_start_pg(np.zeros(10), np.zeros(10, np.float32), np.zeros(10),
                                     np.zeros(10), np.zeros(10), np.zeros(10))


def test_kernel_argument_checks():
    from fusedopt import _core
    s = np.zeros((3, 10))
    with pytest.raises(ValueError, match="rows"):
        _core.lbfgsb_rows_dots(s, s, np.zeros(10), 4)
    with pytest.raises(ValueError, match="idx"):
        _core.lbfgsb_rows_gram_at(s, s, np.array([0, 10]), 2)
    with pytest.raises(ValueError, match="shape"):
        _core.lbfgsb_rows_dots(s, s, np.zeros(11), 1)
    with pytest.raises(TypeError, match="a has dtype float32"):
        _core.lbfgsb_rows_axpy(np.zeros(10), s, s, np.zeros(3, np.float32), np.zeros(3), 1)
    with pytest.raises(ValueError, match="alias|shares"):
        _core.lbfgsb_rows_axpy(s[0], s, s, np.zeros(3), np.zeros(3), 1)
    with pytest.raises(TypeError):
        _core.lbfgsb_cauchy_start(np.zeros(10), np.zeros(10, np.float32), np.zeros(10),
                                  np.zeros(10), np.zeros(10), np.zeros(10))


def test_cauchy_point_same_bits_any_thread_count():
    n = N_PAR
    rng = np.random.default_rng(5)
    cf = CompactForm(n, 4, np.float64)
    push_noisy_pairs(cf, n, 3, rng)
    lo, hi = np.full(n, -0.5), np.full(n, 0.5)
    hi[::5] = np.inf
    box = parse_bounds((lo, hi), (n,), np.float64)
    x = rng.uniform(-0.4, 0.4, n)
    g = rng.standard_normal(n)
    runs = _threads(lambda: cauchy_point(x, g, box, cf))
    for xc, c, t in runs[1:]:
        assert xc.tobytes() == runs[0][0].tobytes() and np.array_equal(t, runs[0][2])
        assert c.tobytes() == runs[0][1].tobytes()
    assert (runs[0][2] < 0).sum() > 0      # the path passed breakpoints


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [N_PAR + 7, 3 * 16384 + 5, 11])
def test_cauchy_path_heap_in_scratch_has_the_same_bits(dtype, n):
    """The Cauchy path's heap in the caller's int64 scratch: x^c, c, t (the breakpoints passed,
    ties in t included) the bits of the path without it, on 1/2/3 threads; the scratch
    checked (dtype, size, aliasing) before anything is written."""
    from fusedopt import _core
    rng = np.random.default_rng(23)
    cf = CompactForm(n, 4, dtype)
    push_noisy_pairs(cf, n, 3, rng, dtype)
    lo, hi = np.full(n, -0.5), np.full(n, 0.5)
    hi[::5] = np.inf
    hi[1::7] = 0.25                          # equal breakpoints: ties broken by the index
    box = parse_bounds((lo, hi), (n,), dtype)
    x = np.round(rng.uniform(-0.4, 0.4, n), 1).astype(dtype)
    g = np.round(rng.standard_normal(n), 1).astype(dtype)
    want = cauchy_point(x, g, box, cf)

    def run():
        scratch = np.full(n, -3, np.int64)
        return cauchy_point(x, g, box, cf, scratch=scratch)
    for xc, c, t in _threads(run):
        assert xc.tobytes() == want[0].tobytes() and t.tobytes() == want[2].tobytes()
        assert c.tobytes() == want[1].tobytes()
    assert (want[2] < 0).sum() > 0
    d, t = np.empty(n, dtype), np.empty(n, dtype)
    _core.lbfgsb_cauchy_start(d, t, x, g, box.lo, box.hi)
    args = (x, box.lo, box.hi, cf.s, cf.y, cf.order(), cf.theta,
            np.ascontiguousarray(cf.middle()), [0.0] * 6, [0.0] * 6, -1.0, 1.0, False)
    for bad, exc, match in [(np.empty(n, np.int32), TypeError, "scratch"),
                            (np.empty(n - 1, np.int64), ValueError, "scratch"),
                            (t.view(np.int64) if dtype == np.float64 else None, ValueError,
                             "scratch shares memory with t")]:
        if bad is None:
            continue
        before = t.copy()
        with pytest.raises(exc, match=match):
            _core.lbfgsb_cauchy_path(np.empty(n, dtype), d, t, *args, scratch=bad)
        assert t.tobytes() == before.tobytes()


def test_bench_bounded_table():
    from fusedopt.benchmarks import lbfgs as lbfgs_bench
    lo, hi = lbfgs_bench.ext_rosenbrock_bounds(1000)
    assert (hi == 0.5).sum() == 200 and np.isinf(lo).all()
    title, table = lbfgs_bench._bounded_table(1000)
    assert "bound-constrained Extended Rosenbrock n=1e+03" in title
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["solver", "wall", "s"]
    names = [ln.split("  ")[0].strip() for ln in lines[2:]]
    assert names == list(lbfgs_bench.bounded_solvers())
    fs = [float(ln.split()[-1]) for ln in lines[2:]]
    assert max(fs) - min(fs) <= 1e-3 * max(fs)     # the same minimum for every solver


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [N_PAR + 7, 3 * 16384 + 5, 11])
def test_cauchy_path_fixed_set_from_its_last_pass(dtype, n):
    """lbfgsb_cauchy_path(..., idx, q, g, zero_held): x^c, c, t the bits of the path without
    them, and idx[:k], q[:k] the bits of lbfgsb_fixed_set after that path (both zero_held),
    with idx the heap's scratch itself or its own array, on 1/2/3 threads;
    the new arguments checked before anything is written."""
    from fusedopt import _core
    rng = np.random.default_rng(29)
    cf = CompactForm(n, 4, dtype)
    push_noisy_pairs(cf, n, 3, rng, dtype)
    lo, hi = np.full(n, -np.inf), np.full(n, 0.5)
    hi[::5] = np.inf
    hi[1::7] = 0.25                          # equal breakpoints
    lo[2::9] = -0.3
    lo[3::11] = hi[3::11] = 0.1              # fixed variables (held: t = -1 from the start)
    x = np.clip(np.round(rng.uniform(-0.4, 0.4, n), 1), lo, hi).astype(dtype)
    g = np.round(rng.standard_normal(n), 1).astype(dtype)
    lo, hi = lo.astype(dtype), hi.astype(dtype)
    d0, t0 = np.empty(n, dtype), np.empty(n, dtype)
    dd = _core.lbfgsb_cauchy_start(d0, t0, x, g, lo, hi)
    k2 = 2 * cf.count
    p = cf.wt_dot(d0)
    mid = np.ascontiguousarray(cf.middle())
    args = (cf.s, cf.y, cf.order(), cf.theta, mid, p.tolist(), [0.0] * k2, -dd,
            cf.theta * dd - float(p @ (mid @ p)), False)

    def path(lo_, fixed=None, own_idx=False):
        d, t, xc = d0.copy(), t0.copy(), np.empty(n, dtype)
        scratch = np.full(n, -3, np.int64)
        if fixed is None:
            out = _core.lbfgsb_cauchy_path(xc, d, t, x, lo_, hi, *args, scratch=scratch)
            return xc, d, t, out
        idx = np.full(n, -4, np.int64) if own_idx else scratch
        q = np.full(n, 7, dtype)
        out = _core.lbfgsb_cauchy_path(xc, d, t, x, lo_, hi, *args, scratch=scratch, idx=idx,
                                       q=q, g=g, zero_held=fixed)
        return xc, d, t, out[:3], idx[:out[3]], q[:out[3]]

    xc, d, t, out = path(lo)
    assert (t < 0).sum() > (t0 < 0).sum() > 0          # variables passed and held
    for zero_held in (False, True):
        idx, q = np.empty(n, np.int64), np.empty(n, dtype)
        k = _core.lbfgsb_fixed_set(idx, q, t, xc, x, g, cf.theta, zero_held)
        for own in (False, True):
            for got in _threads(lambda: path(lo, zero_held, own)):
                assert got[0].tobytes() == xc.tobytes() and got[2].tobytes() == t.tobytes()
                assert got[1].tobytes() == d.tobytes() and got[3][0] == out[0]
                assert got[3][1] == out[1] and got[3][2] == out[2]
                assert np.array_equal(got[4], idx[:k]) and got[5].tobytes() == q[:k].tobytes()
    before = t0.copy()
    ok = dict(scratch=np.empty(n, np.int64), idx=np.empty(n, np.int64), q=np.empty(n, dtype),
              g=g)
    for bad, exc, match in [(dict(idx=None), TypeError, "q and g"),
                            (dict(q=None), TypeError, "idx needs"),
                            (dict(idx=np.empty(n, np.int32)), TypeError, "idx"),
                            (dict(q=np.empty(n - 1, dtype)), ValueError, "q"),
                            (dict(q=x), ValueError, "q shares memory with x"),
                            (dict(g=g[:-1]), ValueError, "g"),
                            (dict(q=g), ValueError, "q shares memory with g")]:
        t = t0.copy()
        with pytest.raises(exc, match=match):
            _core.lbfgsb_cauchy_path(np.empty(n, dtype), d0.copy(), t, x, lo, hi, *args,
                                     **dict(ok, **bad))
        assert t.tobytes() == before.tobytes()


def _cauchy_path_numpy(x, d, t, lo, hi, dd, theta, bounded):
    """The Cauchy path without pairs (k = 0) in NumPy and Python floats: every breakpoint
    candidate sorted by (t_i, i) up front (numpy.lexsort), then Algorithm CP's loop in the
    kernel's arithmetic. Returns (xc, d, t, number passed)."""
    d, t = d.copy(), t.copy()
    cand = np.flatnonzero((t >= 0) & (t < np.inf) & (d != 0))
    order = cand[np.lexsort((cand, t[cand]))]
    f1, f2 = -dd, theta * dd
    f2_org, dtm, t_old, size = f2, -f1 / f2, 0.0, order.size
    hits = []
    for b in order:
        tj = float(t[b])
        dt = tj - t_old
        if dtm < dt:
            break
        size -= 1
        db = float(d[b])
        at = hi[b] if db > 0 else lo[b]
        zb = float(at) - float(x[b])
        hits.append((b, at))
        d[b], t[b] = 0, -1
        f1 = f1 + dt * f2 + db * db - theta * db * zb
        f2 = f2 - theta * db * db
        f2 = max(np.finfo(np.float64).eps * f2_org, f2)
        t_old = tj
        dtm = 0.0 if (size == 0 and bounded) else -f1 / f2
    tsum = t_old + max(dtm, 0.0)
    xc = np.clip(x + x.dtype.type(tsum) * d, lo, hi)
    for b, at in hits:
        xc[b] = at
    return xc, d, t, len(hits)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [N_PAR + 7, 3 * 16384 + 5])
def test_cauchy_path_blocks_pop_the_sorted_order(dtype, n):
    """The path's per-block heaps (built where a breakpoint is passed) pop the breakpoints in
    the order of a sort of all of them by (t_i, i): many passed, in every block, ties in t
    included, against the sorted NumPy loop; the same bits on 1/2/3 threads, with and without
    the heaps' scratch."""
    from fusedopt import _core
    rng = np.random.default_rng(37)
    lo, hi = np.full(n, -np.inf, dtype), np.full(n, 0.5, dtype)
    hi[::5] = np.inf
    lo[1::3] = -0.5
    x = np.clip(np.round(rng.uniform(-0.5, 0.5, n), 2), lo, hi).astype(dtype)
    g = np.round(rng.standard_normal(n), 1).astype(dtype)      # rounded: equal breakpoints
    d0, t0 = np.empty(n, dtype), np.empty(n, dtype)
    dd = _core.lbfgsb_cauchy_start(d0, t0, x, g, lo, hi)
    theta = 1.3
    want = _cauchy_path_numpy(x, d0, t0, lo, hi, dd, theta, False)
    assert want[3] > 1000 and len(np.unique(np.flatnonzero(want[2] != t0) // 16384)) > 2

    def run(scratch):
        d, t, xc = d0.copy(), t0.copy(), np.empty(n, dtype)
        _core.lbfgsb_cauchy_path(xc, d, t, x, lo, hi, np.zeros((1, n), dtype),
                                 np.zeros((1, n), dtype), [], theta, np.zeros((0, 0)), [], [],
                                 -dd, theta * dd, False,
                                 scratch=np.empty(n, np.int64) if scratch else None)
        return xc, d, t
    for scratch in (True, False):
        for xc, d, t in _threads(lambda: run(scratch)):
            assert t.tobytes() == want[2].tobytes() and d.tobytes() == want[1].tobytes()
            assert xc.tobytes() == want[0].tobytes()


def subspace_inputs(rng, m, n, dtype):
    """Coefficients a, b (m), x, xc near x, g, t (a fifth fixed), the box and theta."""
    a, b = rng.standard_normal(m), rng.standard_normal(m)
    x = rng.uniform(-1, 1, n).astype(dtype)
    xc = (x + rng.uniform(-0.1, 0.1, n)).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    t = np.where(rng.uniform(size=n) < 0.2, -1, 1).astype(dtype)
    lo, hi = np.full(n, -0.9, dtype), np.full(n, 0.9, dtype)
    return a, b, x, xc, g, t, lo, hi, 1.7


def rows_combination(s, y, a, b, rows):
    """sum_j a_j s_j + b_j y_j in the kernels' order, in the arrays' dtype."""
    dtype = s.dtype.type
    wa = np.zeros(s.shape[1], s.dtype)
    for j in range(rows):
        wa = (wa + dtype(a[j]) * s[j]) + dtype(b[j]) * y[j]
    return wa


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subspace_kernels_against_numpy_any_thread_count(dtype):
    from fusedopt import _core
    rng = np.random.default_rng(7)
    m, rows, n = 5, 3, N_PAR
    s = rng.standard_normal((m, n)).astype(dtype)
    y = rng.standard_normal((m, n)).astype(dtype)
    a, b, x, xc, g, t, lo, hi, theta = subspace_inputs(rng, m, n, dtype)
    # the second vector of rows_dots
    both = _core.lbfgsb_rows_dots(s, y, x, rows, g)
    assert both[:2 * rows].tobytes() == _core.lbfgsb_rows_dots(s, y, x, rows).tobytes()
    assert both[2 * rows:].tobytes() == _core.lbfgsb_rows_dots(s, y, g, rows).tobytes()

    wa = rows_combination(s, y, a, b, rows)
    r_ref = np.where(t >= 0, (g + dtype(theta) * (xc - x)) - wa, 0).astype(dtype)

    def reduced():
        r = np.empty(n, dtype)
        dots = _core.lbfgsb_reduced_gradient(r, s, y, a, b, rows, xc, x, g, t, theta)
        return r, dots

    runs = _threads(reduced)
    for r, dots in runs:
        assert r.tobytes() == r_ref.tobytes()
        assert dots.tobytes() == runs[0][1].tobytes()
        assert dots.tobytes() == _core.lbfgsb_rows_dots(s, y, r, rows).tobytes()
    r = runs[0][0]
    r_all = np.empty(n, dtype)
    _core.lbfgsb_reduced_gradient(r_all, s, y, a, b, rows, xc, x, g, None, theta)
    assert np.array_equal(r_all, ((g + dtype(theta) * (xc - x)) - wa).astype(dtype))

    def point():
        xbar, du = np.empty(n, dtype), np.empty(n, dtype)
        gd = _core.lbfgsb_subspace_point(xbar, du, s, y, a, b, rows, r, xc, x, g, t, lo, hi,
                                         theta)
        return xbar, du, gd

    runs = _threads(point)
    du_ref = np.where(t >= 0, dtype(-1 / theta) * r + dtype(-1 / theta ** 2) * wa, 0)
    du_ref = du_ref.astype(dtype)
    xbar_ref = np.clip(xc + du_ref, lo, hi)
    for xbar, du, gd in runs:
        assert du.tobytes() == du_ref.tobytes() and xbar.tobytes() == xbar_ref.tobytes()
        assert gd == runs[0][2]
    assert runs[0][2] == pytest.approx(float(g.astype(np.float64) @ (xbar_ref - x)
                                             .astype(np.float64)), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merged_pass_kernels_against_numpy_any_thread_count(dtype):
    """The kernels of the two-pass iteration: rows_dots_many (the bits of rows_dots for every
    vector), rows_gram_at with q (the Gram blocks unchanged, q's dots the bits of rows_dots over
    the gathered columns), subspace_direct (NumPy in the array dtype, bit for bit)."""
    from fusedopt import _core, reference
    rng = np.random.default_rng(12)
    m, rows, n = 5, 4, N_PAR
    s = rng.standard_normal((m, n)).astype(dtype)
    y = rng.standard_normal((m, n)).astype(dtype)
    vs = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    runs = _threads(lambda: _core.lbfgsb_rows_dots_many(s, y, vs, rows))
    want = np.concatenate([_core.lbfgsb_rows_dots(s, y, v, rows) for v in vs])
    for r in runs:
        assert r.tobytes() == want.tobytes()
    assert want[0] == reference.blocked_dot(s[0], vs[0])
    with pytest.raises(ValueError, match="vs"):
        _core.lbfgsb_rows_dots_many(s, y, [], rows)
    with pytest.raises(TypeError, match="vs"):
        _core.lbfgsb_rows_dots_many(s, y, [vs[0], vs[1].astype(np.float16)], rows)

    idx = np.flatnonzero(rng.uniform(size=n) < 0.3)
    q = rng.standard_normal(idx.size).astype(dtype)
    got = _threads(lambda: _core.lbfgsb_rows_gram_at(s, y, idx, rows, q))
    plain = _core.lbfgsb_rows_gram_at(s, y, idx, rows)
    sa, ya = np.ascontiguousarray(s[:, idx]), np.ascontiguousarray(y[:, idx])
    for gram, dots in got:
        assert gram.tobytes() == plain.tobytes()
        assert dots.tobytes() == _core.lbfgsb_rows_dots(sa, ya, q, rows).tobytes()
    with pytest.raises(ValueError, match="q"):
        _core.lbfgsb_rows_gram_at(s, y, idx, rows, q[:-1])

    a, b, x, xc, g, t, lo, hi, theta = subspace_inputs(rng, m, n, dtype)
    wa = rows_combination(s, y, a, b, rows)
    du_ref = np.where(t >= 0, wa - (g * dtype(1 / theta) + (xc - x)), 0).astype(dtype)
    xbar_ref = np.clip(xc + du_ref, lo, hi)

    def direct(tt):
        xbar, du = np.empty(n, dtype), np.empty(n, dtype)
        gd = _core.lbfgsb_subspace_direct(xbar, du, s, y, a, b, rows, xc, x, g, tt, lo, hi,
                                          theta)
        return xbar, du, gd

    for xbar, du, gd in _threads(lambda: direct(t)):
        assert du.tobytes() == du_ref.tobytes() and xbar.tobytes() == xbar_ref.tobytes()
        assert gd == reference.blocked_dot(g, xbar_ref - x)

    def direct_d(tt):
        xbar, du, d = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype)
        gd, tmax = _core.lbfgsb_subspace_direct_d(xbar, du, d, s, y, a, b, rows, xc, x, g, tt,
                                                  lo, hi, theta)
        return xbar, du, d, gd, tmax

    for tt in (t, None):     # d = xbar - x, g . d and the step to the box from the same pass
        xbar0, du0, gd0 = direct(tt)
        d0 = xbar0 - x
        for xbar, du, d, gd, tmax in _threads(lambda: direct_d(tt)):
            assert xbar.tobytes() == xbar0.tobytes() and du.tobytes() == du0.tobytes()
            assert d.tobytes() == d0.tobytes() and gd == gd0
            assert tmax == _core.lbfgsb_max_step(x, d0, lo, hi)

        def d_only():                          # xbar = du = None: d alone, the same bits
            d = np.empty(n, dtype)
            return (d, *_core.lbfgsb_subspace_direct_d(None, None, d, s, y, a, b, rows, xc, x,
                                                       g, tt, lo, hi, theta))
        for d, gd, tmax in _threads(d_only):
            assert d.tobytes() == d0.tobytes() and gd == gd0
            assert tmax == _core.lbfgsb_max_step(x, d0, lo, hi)
    with pytest.raises(TypeError, match="both"):
        _core.lbfgsb_subspace_direct_d(None, np.empty(n, dtype), np.empty(n, dtype), s, y, a, b,
                                       rows, xc, x, g, t, lo, hi, theta)
    with pytest.raises(ValueError, match="d shares memory with x"):
        _core.lbfgsb_subspace_direct_d(None, None, x, s, y, a, b, rows, xc, x, g, t, lo, hi,
                                       theta)
    with pytest.raises(ValueError, match="d shares memory with du"):
        bad = np.empty(n, dtype)
        _core.lbfgsb_subspace_direct_d(np.empty(n, dtype), bad, bad, s, y, a, b, rows, xc, x, g,
                                       t, lo, hi, theta)
    xbar, du, _ = direct(None)                 # every variable free
    assert du.tobytes() == (wa - (g * dtype(1 / theta) + (xc - x))).astype(dtype).tobytes()
    with pytest.raises(ValueError, match="xbar"):
        direct_bad = np.empty(n, dtype)
        _core.lbfgsb_subspace_direct(direct_bad, direct_bad, s, y, a, b, rows, xc, x, g, t, lo,
                                     hi, theta)


def test_deferred_gram_has_the_bits_of_the_eager_one():
    """A pair's Gram dots taken inside the Cauchy pass (wt_dots) equal those of a pass of their
    own (_flush), bit for bit; several pushes in a row keep every column."""
    rng = np.random.default_rng(4)
    n = 3 * 16384 + 11
    a = rng.uniform(0.5, 3.0, n)
    pairs = []
    for _ in range(7):
        s = rng.standard_normal(n)
        pairs.append((s, a * s + 0.1 * rng.standard_normal(n)))
    merged, eager = CompactForm(n, 4, np.float64), CompactForm(n, 4, np.float64)
    d, g = rng.standard_normal(n), rng.standard_normal(n)
    for step, (s, y) in enumerate(pairs):
        for cf in (merged, eager):
            cf.push(s, y, float(s @ y))
        if step == 2:
            continue                           # two pushes in a row
        wd, wg = merged.wt_dots(d, g)
        assert merged._pending == -1
        eager._flush()
        assert eager._pending == -1
        for name in ("_ss", "_sy", "_yy"):
            assert getattr(merged, name).tobytes() == getattr(eager, name).tobytes(), name
        assert merged.theta == eager.theta
        assert wd.tobytes() == eager.wt_dot(d).tobytes()
        assert wg.tobytes() == eager.wt_dot(g).tobytes()
    o = merged.order()
    s_rows, y_rows = merged.s[o], merged.y[o]
    np.testing.assert_allclose(merged.ss[np.ix_(o, o)], s_rows @ s_rows.T, rtol=1e-12)
    np.testing.assert_allclose(merged.yy[np.ix_(o, o)], y_rows @ y_rows.T, rtol=1e-12)
    np.testing.assert_allclose(merged.sy[np.ix_(o, o)], s_rows @ y_rows.T, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# The Gram matrices over the fixed variables, per block of x and updated (formk)

def _gram_case(rng, dtype, m=5, n=3 * 16384 + 777, p=0.3):
    s = rng.standard_normal((m, n)).astype(dtype)
    y = rng.standard_normal((m, n)).astype(dtype)
    idx = np.flatnonzero(rng.uniform(size=n) < p)
    return s, y, idx


def _gram_tables(n, m):
    nb = -(-n // 16384)
    return np.zeros((nb, 3 * m * m)), np.zeros((nb, 2 * m)), nb


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, p", [(3 * 16384 + 777, 0.3), (N_PAR, 0.2), (16383, 1.0), (9, 0.5)])
def test_gram_blocks_against_reference_any_thread_count(dtype, n, p):
    """lbfgsb_gram_blocks from scratch: the bits of reference.lbfgsb_gram_at (per block of x,
    in block order) for 1, 2, 3 threads; the partials left in parts/qparts are the blocks'."""
    from fusedopt import _core, reference
    rng = np.random.default_rng(21)
    m, rows = 5, 4
    s, y, idx = _gram_case(rng, dtype, m, n, p)
    q = rng.standard_normal(idx.size).astype(dtype)

    def run():
        parts, qparts, nb = _gram_tables(n, m)
        got = _core.lbfgsb_gram_blocks(parts, qparts, s, y, idx, rows, np.ones(nb, np.uint8),
                                       -1, q)
        return got, parts, qparts
    runs = _threads(run)
    want, want_q = reference.lbfgsb_gram_at(s, y, idx, rows, q)
    for (gram, dots), parts, qparts in runs:
        assert gram.tobytes() == want.tobytes()
        assert dots.tobytes() == want_q.tobytes()
        assert parts.tobytes() == runs[0][1].tobytes() and qparts.tobytes() == runs[0][2].tobytes()
    plain = _core.lbfgsb_gram_blocks(*_gram_tables(n, m)[:2], s, y, idx, rows,
                                     np.ones(_gram_tables(n, m)[2], np.uint8))
    assert plain.tobytes() == want.tobytes()
    s64, y64 = s[:rows, idx].astype(np.float64), y[:rows, idx].astype(np.float64)
    for got, ref in zip(want, (s64 @ s64.T, s64 @ y64.T, y64 @ y64.T)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_blocks_updates_have_the_bits_of_a_fresh_sum(dtype):
    """The formk update: a row of the history new or overwritten (row = r) and the list changed
    in some blocks (redo there) gives the bits of a sum from scratch, over a sequence of updates;
    ``changed_blocks`` flags exactly the blocks where the lists differ."""
    from fusedopt import _core, reference
    from fusedopt.lbfgs.compact import changed_blocks
    rng = np.random.default_rng(22)
    m, n = 4, 4 * 16384 + 5
    s, y, idx = _gram_case(rng, dtype, m, n)
    parts, qparts, nb = _gram_tables(n, m)
    _core.lbfgsb_gram_blocks(parts, qparts, s, y, idx, 3, np.ones(nb, np.uint8))
    rows = 4
    for step, r in enumerate([3, 0, 1, 2, 3]):   # rows grows 3 -> 4 with row 3 new, then a ring
        s[r] = rng.standard_normal(n).astype(dtype)
        y[r] = rng.standard_normal(n).astype(dtype)
        mask = np.zeros(n, bool)
        mask[idx] = True
        blk = (2 * step) % nb
        lo = blk * 16384
        mask[lo:lo + 16384] = rng.uniform(size=min(16384, n - lo)) < 0.5   # one block changes
        new = np.flatnonzero(mask)
        flags = changed_blocks(idx, new, nb)
        assert flags.tolist() == [int(b == blk) for b in range(nb)]
        q = rng.standard_normal(new.size).astype(dtype)
        q[rng.uniform(size=q.size) < 0.7] = 0                    # zeros: skipped, same bits
        gram, dots = _core.lbfgsb_gram_blocks(parts, qparts, s, y, new, rows, flags, r, q)
        want, want_q = reference.lbfgsb_gram_at(s, y, new, rows, q)
        assert gram.tobytes() == want.tobytes(), step
        assert dots.tobytes() == want_q.tobytes(), step
        # nothing new: only q's dots (from the entries with q != 0), the Gram unchanged
        q2 = np.where(rng.uniform(size=q.size) < 0.5, 0, q).astype(dtype)
        gram2, dots2 = _core.lbfgsb_gram_blocks(parts, qparts, s, y, new, rows,
                                                np.zeros(nb, np.uint8), -1, q2)
        assert gram2.tobytes() == want.tobytes(), step
        assert dots2.tobytes() == reference.lbfgsb_gram_at(s, y, new, rows, q2)[1].tobytes()
        idx = new
    assert changed_blocks(idx, idx.copy(), nb).tolist() == [0] * nb


def test_gram_w_at_incremental_equals_fresh():
    """CompactForm.gram_w_at, kept up to date through pushes (growing, then a full ring that
    overwrites its oldest row), two pushes between calls, a changing fixed set and clear(),
    has the bits of a new CompactForm with the same pairs computing it from scratch."""
    rng = np.random.default_rng(23)
    n, m = 2 * 16384 + 99, 3
    a = rng.uniform(0.5, 3.0, n)
    cf = CompactForm(n, m, np.float64)
    idx = np.flatnonzero(rng.uniform(size=n) < 0.25)
    wrapped = False
    for step in range(9):
        s = rng.standard_normal(n)
        cf.push(s, a * s, float(s @ (a * s)))
        if step == 4:
            continue                            # two pushes before the next call
        if step == 6:
            cf.clear()
            cf.push(s, a * s, float(s @ (a * s)))
        if step % 3 == 2:                       # the set changes in block 1 only
            mask = np.zeros(n, bool)
            mask[idx] = True
            mask[16384:16384 + 500] = ~mask[16384:16384 + 500]
            idx = np.flatnonzero(mask)
        q = rng.standard_normal(idx.size)
        q[::3] = 0.0                            # held from the start: no term
        if step % 2:
            cf.wt_dots(rng.standard_normal(n))  # the new pair's row in the first pass
        fresh = CompactForm(n, m, np.float64)
        for r in cf.order():
            fresh.push(cf.s[r], cf.y[r], float(cf.s[r] @ cf.y[r]))
        got, got_q = cf.gram_w_at(idx, q)
        want, want_q = fresh.gram_w_at(idx, q)
        # the same pairs in other ring rows once the ring wrapped: gram_w_at is chronological
        assert got.tobytes() == want.tobytes(), step
        assert got_q.tobytes() == want_q.tobytes(), step
        wrapped = wrapped or cf.head != 0
    assert wrapped                              # the ring did overwrite rows (before clear())


def test_gram_blocks_argument_checks():
    """Bad input is refused by name before parts or qparts are written."""
    from fusedopt import _core
    s = np.ones((3, 20))
    idx = np.array([1, 4, 7])
    parts, qparts, nb = _gram_tables(20, 3)
    redo = np.ones(nb, np.uint8)
    for args, exc, match in [
            ((parts, qparts, s, s, np.array([4, 1]), 2, redo), ValueError, "idx"),
            ((parts, qparts, s, s, np.array([1, 20]), 2, redo), ValueError, "idx"),
            ((parts, qparts, s, s, idx, 4, redo), ValueError, "rows"),
            ((parts, qparts, s, s, idx, 2, redo, 2), ValueError, "row"),
            ((parts, qparts, s, s, idx, 2, np.ones(nb + 1, np.uint8)), ValueError, "redo"),
            ((parts[:, :-1], qparts, s, s, idx, 2, redo), ValueError, "parts"),
            ((parts.astype(np.float32), qparts, s, s, idx, 2, redo), TypeError, "parts"),
            ((parts, qparts[:, :-1], s, s, idx, 2, redo, -1, np.ones(3)), ValueError, "qparts"),
            ((parts, qparts, s, s, idx, 2, redo, -1, np.ones(2)), ValueError, "q"),
            ((parts, qparts, s, s.astype(np.float32), idx, 2, redo), TypeError, "y")]:
        with pytest.raises(exc, match=match):
            _core.lbfgsb_gram_blocks(*args)
        assert not parts.any() and not qparts.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_in_box_is_axpby_then_clip(dtype):
    """lbfgsb_step_in_box: the bits of x + t d (lbfgs_axpby) then numpy.clip, signed zeros at
    a zero bound, NaN, infinite bounds and lo == hi included, for any thread count; in place."""
    from fusedopt import _core
    rng = np.random.default_rng(24)
    n = N_PAR
    x = rng.uniform(-2, 2, n).astype(dtype)
    d = rng.standard_normal(n).astype(dtype)
    lo = np.where(rng.uniform(size=n) < 0.5, -1.0, -np.inf).astype(dtype)
    hi = np.where(rng.uniform(size=n) < 0.5, 1.0, np.inf).astype(dtype)
    lo[:40] = hi[:40] = 0.0
    x[:20], d[:20] = -0.0, -0.0                 # x + t d = -0.0 against the bounds 0.0
    lo[40:60] = -0.0
    x[40:60], d[40:60] = 0.0, 0.0               # +0.0 against lo = -0.0
    x[60:70] = np.nan
    d[70:80] = np.inf
    t = 0.37
    want = np.empty(n, dtype)
    _core.lbfgs_axpby(want, 1.0, x, t, d)
    want = np.clip(want, lo, hi)
    assert not np.signbit(want[:20]).any() and np.signbit(want[40:60]).all()   # the ties
    assert np.isnan(want[60:70]).all() and (want[70:80] >= 1).all()

    def run():
        out = np.empty(n, dtype)
        _core.lbfgsb_step_in_box(out, x, t, d, lo, hi)
        return out
    for got in _threads(run):
        assert got.tobytes() == want.tobytes()
    inplace = x.copy()
    _core.lbfgsb_step_in_box(inplace, inplace, t, d, lo, hi)
    assert inplace.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="d"):
        _core.lbfgsb_step_in_box(np.empty(n, dtype), x, t, d[:-1], lo, hi)
    with pytest.raises(ValueError, match="alias|shares"):
        _core.lbfgsb_step_in_box(d, x, t, d, lo, hi)


def test_direction_pass_gd_is_the_dot_of_g_and_d():
    """g . d taken in the subspace pass (reused by the line search) has the bits of
    ``lbfgs_dot(g, d)``; the projected-gradient norm kept per iterate is the kernel's."""
    from fusedopt import _core
    from fusedopt.benchmarks.lbfgs import ext_rosenbrock, ext_rosenbrock_bounds, ext_rosenbrock_x0
    from fusedopt.lbfgs import lbfgsb
    from fusedopt.lbfgs.bounds import Box
    from fusedopt.lbfgs.solver import _Objective
    n = 3 * 16384 + 10
    lo, hi = ext_rosenbrock_bounds(n)
    box = Box(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    solver = lbfgsb.BoundedSolver(_Objective(ext_rosenbrock, (n,)), box.project(
        np.empty(n), ext_rosenbrock_x0(n)), box, 5)
    solver.evaluate_start()
    reused = 0
    for _ in range(12):
        solver._direction()
        if solver._gd is not None:
            reused += 1
            assert solver._gd == _core.lbfgs_dot(solver.g, solver.d)
        assert solver.iterate() is None
        pg = solver.projected_gradient_norm()
        assert pg == _core.lbfgsb_projected_amax(solver.x, solver.g, box.lo, box.hi)
    assert reused >= 6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, p", [(3 * 16384 + 777, 0.3), (N_PAR, 0.2), (9, 0.5)])
def test_rows_dots_many_gram_row_is_the_gram_blocks_update(dtype, n, p):
    """The new pair's Gram row taken in the first pass (lbfgsb_rows_dots_many with parts, idx,
    row) leaves the partials of lbfgsb_gram_blocks(..., redo = 0, row), bit for bit, for any
    thread count, and the dots of the pass unchanged."""
    from fusedopt import _core
    rng = np.random.default_rng(25)
    m, rows = 4, 4
    s, y, idx = _gram_case(rng, dtype, m, n, p)
    vs = [rng.standard_normal(n).astype(dtype) for _ in range(2)]
    parts0, _, nb = _gram_tables(n, m)
    _core.lbfgsb_gram_blocks(parts0, None, s, y, idx, rows, np.ones(nb, np.uint8))
    for row in (0, 2):
        s[row] = rng.standard_normal(n).astype(dtype)
        y[row] = rng.standard_normal(n).astype(dtype)
        want = parts0.copy()
        _core.lbfgsb_gram_blocks(want, None, s, y, idx, rows, np.zeros(nb, np.uint8), row)
        assert not np.array_equal(want, parts0)

        def run():
            parts = parts0.copy()
            dots = _core.lbfgsb_rows_dots_many(s, y, vs, rows, parts, idx, row)
            return dots, parts
        plain = _core.lbfgsb_rows_dots_many(s, y, vs, rows)
        for dots, parts in _threads(run):
            assert dots.tobytes() == plain.tobytes()
            assert parts.tobytes() == want.tobytes()
        parts0 = want
    with pytest.raises(ValueError, match="row"):
        _core.lbfgsb_rows_dots_many(s, y, vs, rows, parts0, idx, rows)
    with pytest.raises(ValueError, match="idx"):
        _core.lbfgsb_rows_dots_many(s, y, vs, rows, parts0, idx[::-1], 0)
    with pytest.raises(ValueError, match="parts"):
        _core.lbfgsb_rows_dots_many(s, y, vs, rows, parts0[:-1], idx, 0)


def test_bench_bounded_phases():
    """The per-phase table of the bounded bench: every phase timed (the Cauchy point and both
    history passes every iteration), the phases and the rest add up to the total, and the
    timers are removed afterwards."""
    from fusedopt.benchmarks import lbfgs as lbfgs_bench
    from fusedopt.lbfgs._vector import CoreVec
    from fusedopt.lbfgs.compact import CompactForm
    before = [CompactForm.__dict__["wt_dots"], CoreVec.__dict__["cauchy_start_pg"]]
    title, table = lbfgs_bench.bounded_phases(3000)
    assert "per phase" in title and "n=3e+03" in title
    rows = {ln.rsplit(None, 1)[0].strip(): float(ln.rsplit(None, 1)[1])
            for ln in table.splitlines()[2:]}
    assert len(rows) == len(lbfgs_bench._PHASES) + 3
    for label, _, _ in lbfgs_bench._PHASES[:3]:
        assert rows[label] > 0, label
    parts = sum(v for k, v in rows.items() if k not in ("objective (f and g)", "total outside f"))
    assert parts == pytest.approx(rows["total outside f"], abs=0.02 * len(rows))
    assert [CompactForm.__dict__["wt_dots"], CoreVec.__dict__["cauchy_start_pg"]] == before


# The box kernels with a side given as None (no bound on that side: nothing read), table-driven:
# each entry runs one kernel with (lo, hi) and returns its outputs; with None for a side they
# must be the bits of the same call with that side an array of infinities.

def _box_kernel_case(rng, n, dtype, m=4):
    x = np.round(rng.uniform(-0.9, 0.9, n), 2).astype(dtype)
    g = np.round(rng.standard_normal(n), 2).astype(dtype)
    g[:7] = 0.0
    x[7:11] = np.nan if n > 20 else x[7:11]
    lo = np.where(rng.uniform(size=n) < 0.6, -0.5, -np.inf).astype(dtype)
    hi = np.where(rng.uniform(size=n) < 0.6, 0.5, np.inf).astype(dtype)
    x = np.where(np.isnan(x), x, np.clip(x, lo, hi)).astype(dtype)
    lo[11:13] = hi[11:13] = 0.25                 # fixed variables
    s = rng.standard_normal((m, n)).astype(dtype)
    y = (s + 0.1 * rng.standard_normal((m, n))).astype(dtype)
    return x, g, lo, hi, s, y


def _run_step_in_box(c, lo, hi):
    out = np.empty_like(c["x"])
    c["k"].lbfgsb_step_in_box(out, c["x"], 0.37, c["g"], lo, hi)
    return (out,)


def _run_cauchy_start_pg(c, lo, hi):
    d, t = np.empty_like(c["x"]), np.empty_like(c["x"])
    res = c["k"].lbfgsb_cauchy_start_pg(d, t, c["x"], c["g"], lo, hi)
    return d, t, res, c["k"].lbfgsb_cauchy_start(d, t, c["x"], c["g"], lo, hi)


def _run_amax_and_step(c, lo, hi):
    return (c["k"].lbfgsb_projected_amax(c["x"], c["g"], lo, hi),
            c["k"].lbfgsb_max_step(c["x"], c["g"], lo, hi),
            c["k"].lbfgsb_max_step(c["x"], -c["g"], lo, hi))


def _run_cauchy_path(c, lo, hi):
    x, g, k = c["x"], c["g"], c["k"]
    xf = np.where(np.isnan(x), 0, x).astype(x.dtype)    # a path from a finite point
    d, t, xc = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    dd = k.lbfgsb_cauchy_start(d, t, xf, g, c["lo"], c["hi"])   # breakpoints of the real box
    rows = c["s"].shape[0]
    mid = np.eye(2 * rows) * 0.01
    out = k.lbfgsb_cauchy_path(xc, d, t, xf, lo, hi, c["s"], c["y"], list(range(rows)), 1.3,
                               mid, [0.0] * (2 * rows), [0.0] * (2 * rows), -dd, dd, False,
                               scratch=np.empty(x.size, np.int64))
    return xc, d, t, out[0], np.array(out[1]), np.array(out[2])


def _run_subspace(c, lo, hi):
    x, g, k, s, y = c["x"], c["g"], c["k"], c["s"], c["y"]
    rows = s.shape[0]
    a, b = np.linspace(-1, 1, rows), np.linspace(0.5, -0.3, rows)
    xf = np.where(np.isnan(x), 0, x).astype(x.dtype)
    xc = (xf + x.dtype.type(0.01) * g).astype(x.dtype)
    t = np.where(np.arange(x.size) % 5 == 0, -1, 1).astype(x.dtype)
    outs = [np.empty_like(x) for _ in range(8)]
    r1 = k.lbfgsb_subspace_point(outs[0], outs[1], s, y, a, b, rows, g, xc, xf, g, t, lo, hi,
                                 1.7)
    r2 = k.lbfgsb_subspace_direct(outs[2], outs[3], s, y, a, b, rows, xc, xf, g, None, lo, hi,
                                  1.7)
    r3 = k.lbfgsb_subspace_direct_d(outs[4], outs[5], outs[6], s, y, a, b, rows, xc, xf, g, t,
                                    lo, hi, 1.7)
    r4 = k.lbfgsb_subspace_direct_d(None, None, outs[7], s, y, a, b, rows, xc, xf, g, t, lo, hi,
                                    1.7)
    return (*outs, r1, r2, r3, r4)


BOX_KERNELS = {"step_in_box": _run_step_in_box, "cauchy_start_pg": _run_cauchy_start_pg,
               "projected_amax, max_step": _run_amax_and_step, "cauchy_path": _run_cauchy_path,
               "subspace": _run_subspace}


def _bits(outs):
    return [np.asarray(o).tobytes() if isinstance(o, np.ndarray) else repr(o) for o in outs]


@pytest.mark.parametrize("kernel", sorted(BOX_KERNELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [N_PAR + 13, 3 * 16384 + 777, 21])
def test_box_kernels_with_a_side_none_have_the_bits_of_infinities(kernel, dtype, n):
    """Every lbfgsb_ kernel with lo and hi: lo = None, hi = None or both give the bits of the
    same call with that side an array of -inf / +inf (which is then not read), on 1/2/3
    threads; with both sides arrays nothing changed. A finite lower or upper side is kept."""
    from fusedopt import _core
    rng = np.random.default_rng(31)
    x, g, lo, hi, s, y = _box_kernel_case(rng, n, dtype)
    ninf, pinf = np.full(n, -np.inf, dtype), np.full(n, np.inf, dtype)
    run = BOX_KERNELS[kernel]
    for lo_c, hi_c in [(lo, pinf), (ninf, hi), (ninf, pinf)]:   # the real box's breakpoints
        c = dict(k=_core, x=x, g=g, lo=lo_c, hi=hi_c, s=s, y=y)
        want = _bits(run(c, lo_c, hi_c))
        lo_n = None if lo_c is ninf else lo_c
        hi_n = None if hi_c is pinf else hi_c
        for got in _threads(lambda: _bits(run(c, lo_n, hi_n))):
            assert got == want, (kernel, lo_n is None, hi_n is None)


def test_box_sides_none_in_the_solver_and_the_checks(monkeypatch):
    """Box gives None to the kernels for a side without a finite bound (ShardBox keeps the
    arrays); a bounded run has the bits of the run with both arrays given; a None side is
    still checked against the other arguments, and a bad side is named."""
    from fusedopt import _core
    from fusedopt.lbfgs.bounds import Box
    n = 3 * 16384 + 12
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    hi[::5] = 0.5
    box = Box(lo, hi)
    assert box.kernel_lo is None and box.kernel_hi is box.hi and box.constrained
    assert Box(-hi, -lo).kernel_hi is None and Box(-hi, -lo).kernel_lo is not None
    assert Box(np.zeros(n), np.ones(n)).kernel_lo is not None

    def fun(x):
        a, b = x[0::2], x[1::2]
        f = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
        gr = np.empty_like(x)
        gr[0::2] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
        gr[1::2] = 200.0 * (b - a * a)
        return f, gr
    x0 = np.tile([-1.2, 1.0], n // 2)
    runs = [lbfgs.minimize(fun, x0, bounds=(lo, hi), maxiter=15)]
    orig = Box.__init__

    def arrays_always(self, lo_, hi_):          # the former behaviour: both arrays streamed
        orig(self, lo_, hi_)
        self.kernel_lo, self.kernel_hi = self.lo, self.hi
    monkeypatch.setattr(Box, "__init__", arrays_always)
    runs.append(lbfgs.minimize(fun, x0, bounds=(lo, hi), maxiter=15))
    a, b = runs
    assert a.x.tobytes() == b.x.tobytes() and a.fun == b.fun
    assert (a.nit, a.nfev) == (b.nit, b.nfev) and a.nit == 15
    x = np.zeros(n)
    with pytest.raises(ValueError, match="hi"):
        _core.lbfgsb_step_in_box(np.empty(n), x, 1.0, x, None, hi[:-1])
    with pytest.raises(TypeError, match="lo"):
        _core.lbfgsb_max_step(x, x, np.zeros(n, np.float32), None)
    with pytest.raises(ValueError, match="d"):
        _core.lbfgsb_step_in_box(np.empty(n), x, 1.0, x[:-1], None, None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [N_PAR + 13, 3 * 16384 + 777, 21])
def test_rows_combination_any_row_count(dtype, n):
    """W a (lbfgsb_rows_axpy, the loop of the subspace pass and the reduced gradient, which
    takes two rows per sweep) for every row count 1..5, odd and even: the bits of the row by
    row sum in NumPy, on 1/2/3 threads; and the subspace pass's du with it."""
    from fusedopt import _core
    rng = np.random.default_rng(41)
    m = 5
    s, y = rng.standard_normal((m, n)).astype(dtype), rng.standard_normal((m, n)).astype(dtype)
    a, b = rng.standard_normal(m), rng.standard_normal(m)
    x = rng.uniform(-1, 1, n).astype(dtype)
    xc = (x + dtype(0.01)).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    for rows in range(1, m + 1):
        want = rows_combination(s, y, a, b, rows)

        def run():
            out, xbar, du = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype)
            _core.lbfgsb_rows_axpy(out, s, y, a, b, rows)
            _core.lbfgsb_subspace_direct(xbar, du, s, y, a, b, rows, xc, x, g, None, None,
                                         None, 1.7)
            return out, du
        for out, du in _threads(run):
            assert out.tobytes() == want.tobytes(), rows
            assert du.tobytes() == (want - (g * dtype(1 / 1.7) + (xc - x))).tobytes(), rows
