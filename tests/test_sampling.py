"""Latin-hypercube sampling and multi-start minimization."""
import numpy as np
import pytest

pytest.importorskip("scipy.stats")

from fusedopt import functions as F               # noqa: E402
from fusedopt.sampling import DEFAULT_MINIMIZER, latin_hypercube, multistart  # noqa: E402


def test_latin_hypercube_is_stratified():
    bounds = [(-5.0, 5.0), (0.0, 1.0), (10.0, 30.0)]
    for n in (1, 7, 64):
        X = latin_hypercube(n, bounds, rng=3)
        assert X.shape == (n, 3)
        for j, (lo, hi) in enumerate(bounds):
            assert np.all((X[:, j] >= lo) & (X[:, j] < hi))
            cells = np.floor((X[:, j] - lo) / (hi - lo) * n).astype(int)
            # each of the n slices of the axis holds exactly one point
            np.testing.assert_array_equal(np.sort(cells), np.arange(n))


def test_latin_hypercube_seeding_and_centres():
    b = [(0.0, 1.0)] * 2
    np.testing.assert_array_equal(latin_hypercube(10, b, rng=1), latin_hypercube(10, b, rng=1))
    assert not np.array_equal(latin_hypercube(10, b, rng=1), latin_hypercube(10, b, rng=2))
    g = np.random.default_rng(5)
    assert latin_hypercube(4, b, rng=g).shape == (4, 2)
    X = latin_hypercube(5, b, rng=0, scramble=False)
    np.testing.assert_allclose(np.sort(X[:, 0]), (np.arange(5) + 0.5) / 5)


def test_latin_hypercube_checks():
    with pytest.raises(ValueError, match="low < high"):
        latin_hypercube(3, [(1.0, 0.0)])
    with pytest.raises(ValueError, match="bounds"):
        latin_hypercube(3, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="n must be"):
        latin_hypercube(0, [(0.0, 1.0)])
    with pytest.raises(TypeError, match="rng"):
        latin_hypercube(3, [(0.0, 1.0)], rng="seed")


def test_multistart_finds_the_rastrigin_global_minimum_in_2d():
    # In [-5.12, 5.12]^2 a local run reaches x* = 0 from about 1% of the box; 200 stratified
    # starts find it, while most runs stop at one of the ~100 local minima.
    r = multistart(F.rastrigin.value_and_grad, [(-5.12, 5.12)] * 2, n_starts=200, rng=0)
    assert r.success
    assert r.fun < 1e-10
    assert np.max(np.abs(r.x)) < 1e-5
    assert r.starts.shape == (200, 2) and r.xs.shape == (200, 2) and len(r.results) == 200
    assert r.funs[r.index] == r.fun == np.min(r.funs)
    assert np.mean(r.funs < 1e-10) < 0.2                   # the problem is genuinely multimodal
    assert r.minimizer == DEFAULT_MINIMIZER == "fusedopt.lbfgs"


def test_multistart_with_a_given_minimizer_and_starts():
    calls = []

    def gd(fun, x0):
        from fusedopt.newton import preconditioned_gd
        calls.append(x0.copy())
        return preconditioned_gd(fun, x0, lr=0.1, maxiter=500, gtol=1e-10)

    starts = np.array([[1.0, 2.0], [-3.0, 0.5], [0.2, 0.2]])
    r = multistart(F.sphere.value_and_grad, [(-4, 4)] * 2, 3, gd, starts=starts)
    np.testing.assert_array_equal(np.array(calls), starts)
    assert r.minimizer == "gd" and r.fun < 1e-18
    with pytest.raises(ValueError, match="starts"):
        multistart(F.sphere.value_and_grad, [(-4, 4)] * 2, 2, gd, starts=starts)
    with pytest.raises(TypeError, match="minimizer"):
        multistart(F.sphere.value_and_grad, [(-4, 4)] * 2, 2, "L-BFGS")
    with pytest.raises(TypeError, match="n_starts"):
        multistart(F.sphere.value_and_grad, [(-4, 4)] * 2, 2.0)


def test_default_minimizer_is_fusedopt_lbfgs(monkeypatch):
    # The default is fusedopt.lbfgs.minimize, which always ships (no SciPy fallback).
    import fusedopt.lbfgs
    from fusedopt.lbfgs import OptimizeResult

    calls = []

    def spy(fun, x0):
        calls.append(x0.copy())
        return real(fun, x0)

    real = fusedopt.lbfgs.minimize
    monkeypatch.setattr(fusedopt.lbfgs, "minimize", spy)
    r = multistart(F.sphere.value_and_grad, [(-4, 4)] * 2, 3, rng=0)
    assert len(calls) == 3 and r.minimizer == "fusedopt.lbfgs"
    assert isinstance(r, OptimizeResult) and all(isinstance(x, OptimizeResult) for x in r.results)
    assert r.fun < 1e-10
