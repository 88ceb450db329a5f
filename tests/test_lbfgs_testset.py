"""The Moré-Garbow-Hillstrom test set (``fusedopt.testset``), the defaults of
``fusedopt.lbfgs.minimize`` chosen on it, its bench section, and the stopping rules added with
them: a problem unbounded below (status 3) and ``maxfun`` without bounds."""
from __future__ import annotations

import numpy as np
import pytest

from fusedopt import lbfgs, testset
from fusedopt.benchmarks import testset as testset_bench
from fusedopt.lbfgs import solver as lbfgs_solver

P = testset.PROBLEMS

# f(x0) as printed by Moré, Garbow & Hillstrom (1981), Table of results (5-6 digits).
F_X0 = {
    "rosenbrock": 24.2, "freudenstein_roth": 400.5, "brown_badly_scaled": 9.99998e11,
    "beale": 14.2031, "jennrich_sampson": 4171.31, "helical_valley": 2500.0,
    "bard": 41.6817, "gaussian": 3.88811e-6, "gulf": 12.1107, "box3d": 1031.15,
    "powell_singular": 215.0, "wood": 19192.0, "kowalik_osborne": 5.31317e-3,
    "brown_dennis": 7.92669e6, "biggs_exp6": 0.77907, "watson_6": 30.0, "watson_9": 30.0,
    "penalty1_10": 1.48033e5, "variably_dimensioned_10": 2.19855e6, "chebyquad_8": 3.86177e-2,
}

# Known minimizers with f = 0 (the paper's).
X_STAR = {
    "rosenbrock": [1.0, 1.0], "freudenstein_roth": [5.0, 4.0], "beale": [3.0, 0.5],
    "brown_badly_scaled": [1e6, 2e-6], "helical_valley": [1.0, 0.0, 0.0],
    "gulf": [50.0, 25.0, 1.5], "box3d": [1.0, 10.0, 1.0], "powell_singular": [0.0] * 4,
    "wood": [1.0] * 4, "ext_rosenbrock_10": [1.0] * 10, "ext_powell_12": [0.0] * 12,
    "variably_dimensioned_10": [1.0] * 10, "brown_almost_linear_10": [1.0] * 10,
}


@pytest.mark.parametrize("name", sorted(F_X0))
def test_value_at_x0_is_the_papers(name):
    assert P[name].value(P[name].x0) == pytest.approx(F_X0[name], rel=1e-5)


@pytest.mark.parametrize("name", list(P))
def test_gradient_matches_central_differences(name):
    p = P[name]
    x = p.x0 + 0.1 * np.random.default_rng(p.number).standard_normal(p.n)
    f, g = p(x)
    assert f == p.value(x) and g.shape == (p.n,) and g.dtype == np.float64
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    fd = np.array([(p.value(x + h[i] * e) - p.value(x - h[i] * e)) / (2 * h[i])
                   for i, e in enumerate(np.eye(p.n))])
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(g).max()))


@pytest.mark.parametrize("name", sorted(X_STAR))
def test_known_minimizers(name):
    p = P[name]
    f, g = p(np.array(X_STAR[name]))
    assert p.fstar == 0.0 and f <= 1e-20 and np.abs(g).max() <= 1e-8
    assert testset.solved(p, f) and not testset.solved(p, 1e-6)


def test_solved_counts_a_listed_local_minimum_only():
    p = P["freudenstein_roth"]
    assert testset.solved(p, 48.98425368) and not testset.solved(p, 48.99)
    assert not testset.solved(p, np.nan)


def _runs(**kw):
    out = {}
    for p in testset.problems():
        r = lbfgs.minimize(p, p.x0.copy(), **kw)
        out[p.name] = (testset.solved(p, r.fun), r.nfev)
    return out


def test_default_ftol_solves_what_scipys_rule_stops_short_on():
    # The claim of minimize's docstring: with SciPy's ftol = 2.2e-9 these three stop far from
    # the minimizer; with the default they are solved, every problem solved before still is,
    # and the problems solved by both cost at most 5% more evaluations in all.
    assert lbfgs_solver.FTOL == 1e-12
    new, old = _runs(), _runs(ftol=testset_bench.SCIPY_FTOL)
    short = {"powell_badly_scaled", "wood", "penalty1_10"}
    assert not any(old[k][0] for k in short) and all(new[k][0] for k in short)
    assert {k for k in old if old[k][0]} <= {k for k in new if new[k][0]}
    both = [k for k in new if new[k][0] and old[k][0]]
    assert len(both) >= 23
    assert sum(new[k][1] for k in both) <= 1.05 * sum(old[k][1] for k in both)


def test_bench_section_table():
    blocks = testset_bench.run(with_scipy=True, with_torch=False,
                               problems=[P["rosenbrock"], P["wood"]])
    lines = blocks[0].splitlines()
    assert lines[0].startswith("testset: Moré, Garbow & Hillstrom")
    assert lines[1].split() == ["problem", "MGH", "#", "n", "fusedopt", "fusedopt",
                                "ftol=2.2e-9", "scipy", "L-BFGS-B"]
    rows = {ln.split()[0]: ln for ln in lines[3:]}
    assert rows["rosenbrock"].split()[1:3] == ["1", "2"]
    wood = rows["wood"].split()
    assert wood[3].isdigit() and wood[4] == "-"      # solved by default, not by SciPy's ftol
    assert rows["solved"].split()[1:] == ["2", "/", "2", "1", "/", "2", "1", "/", "2"]


# -- unbounded below, maxfun -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, maxls", [(1, 20), (17, 20), (1001, 7)])
def test_unbounded_below_stops_after_three_searches(n, maxls, dtype):
    calls = []

    def fun(x):
        calls.append(1)
        return float(x.sum()), np.ones_like(x)

    res = lbfgs.minimize(fun, np.zeros(n, dtype), maxls=maxls)
    assert (res.status, res.success) == (3, False) and res.fun < -1e3
    if dtype == np.float64:
        assert res.nit == 3 and res.message.startswith("UNBOUNDED: 3 line searches in a row")
        assert res.nfev == len(calls) == 3 * maxls + 1
    else:   # float32 at |x| ~ 1e9 after a long search: the next steps may not change x
        assert res.message.startswith("UNBOUNDED: ")
        assert res.nfev == len(calls) <= 3 * maxls + 1


def test_unbounded_below_concave_and_with_one_sided_bounds():
    res = lbfgs.minimize(lambda x: (float(-(x @ x)), -2 * x), np.full(5, 0.1))
    assert res.status == 3 and res.nfev <= 3 * 20 + 1
    res = lbfgs.minimize(lambda x: (float(x.sum()), np.ones_like(x)), np.zeros(6),
                         bounds=[(None, 1.0)] * 6)
    assert res.status == 3 and res.message.startswith("UNBOUNDED")
    assert res.nit <= 4 and res.nfev <= 4 * 20 + 1   # the first search stops at the bound
    # A bound that holds f below: converges at the bound instead.
    res = lbfgs.minimize(lambda x: (float(x.sum()), np.ones_like(x)), np.zeros(6),
                         bounds=[(-1e3, None)] * 6)
    assert res.status == 0 and np.all(res.x == -1e3)


def test_unbounded_below_by_the_threshold(monkeypatch):
    monkeypatch.setattr(lbfgs_solver, "F_UNBOUNDED", 1e3)
    res = lbfgs.minimize(lambda x: (float(x.sum()), np.ones_like(x)), np.zeros(4))
    assert res.status == 3 and "f fell below -1000 * max(1, |f(x0)|)" in res.message
    assert res.nit == 1


def test_a_bowl_far_away_is_not_unbounded():
    # Long extrapolations with curvature at the end: found, not declared unbounded.
    res = lbfgs.minimize(lambda x: (float((x - 1e12) @ (x - 1e12)), 2 * (x - 1e12)),
                         np.zeros(3))
    assert res.status == 0, res.message
    np.testing.assert_allclose(res.x, 1e12, rtol=1e-9)


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
def test_maxfun_without_bounds(line_search):
    p = P["ext_rosenbrock_10"]
    full = lbfgs.minimize(p, p.x0.copy(), line_search=line_search)
    res = lbfgs.minimize(p, p.x0.copy(), maxfun=10, line_search=line_search)
    assert full.nfev > 20
    assert (res.status, res.success) == (1, False) and "maxfun" in res.message
    assert 10 < res.nfev <= 10 + 20
    res0 = lbfgs.minimize(p, p.x0.copy(), maxfun=0)
    assert res0.status == 1 and res0.nit == 1


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"maxfun": -1}, ValueError, "maxfun must be >= 0"),
    ({"maxfun": 2.5}, TypeError, "maxfun must be an int"),
    ({"maxls": 0}, ValueError, "maxls must be >= 1"),
])
def test_maxfun_maxls_checked_before_fun(kwargs, exc, match):
    calls = []
    with pytest.raises(exc, match=match):
        lbfgs.minimize(lambda x: calls.append(1) or (0.0, x), np.zeros(3), **kwargs)
    assert not calls


def test_bench_cli_runs_the_section_when_named(capsys, monkeypatch):
    from fusedopt.benchmarks import cli

    monkeypatch.setattr(testset, "problems", lambda: [P["beale"], P["powell_badly_scaled"]])
    assert cli.main(["--rules", "testset", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "testset: Moré, Garbow & Hillstrom" in out and "torch LBFGS" not in out
    solved = next(ln for ln in out.splitlines() if ln.startswith("solved"))
    assert solved.split()[1:4] == ["2", "/", "2"]          # fusedopt solves both
    assert "testset" not in cli.SECTIONS and "testset" in cli.NAMED_SECTIONS
