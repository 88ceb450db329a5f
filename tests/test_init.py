"""Initializers: bounds, moments, shapes, fans, reproducibility and checks."""
import math

import numpy as np
import pytest

from fusedopt import init


def _rng(seed=0):
    return np.random.default_rng(seed)


def _check_moments(w, mean, var):
    """Sample mean and variance within 6 standard errors (for the uniform and normal laws
    used here the variance of s^2 is at most 2 var^2 / N)."""
    n = w.size
    assert abs(w.mean() - mean) < 6 * math.sqrt(var / n)
    assert abs(w.var() - var) < 6 * var * math.sqrt(2 / n)


def test_fans():
    assert init.fans((64, 128)) == (64, 128)
    assert init.fans(7) == (7, 7)
    assert init.fans((3, 3, 16, 32)) == (3 * 3 * 16, 3 * 3 * 32)
    with pytest.raises(ValueError, match="shape"):
        init.fans((3, 0))


@pytest.mark.parametrize("shape", [(200, 300), (3, 5, 40, 60)])
def test_glorot_uniform(shape):
    fi, fo = init.fans(shape)
    limit = math.sqrt(6 / (fi + fo))
    w = init.glorot_uniform(_rng(), shape)
    assert w.shape == shape and w.dtype == np.float64
    assert np.all(np.abs(w) <= limit)
    assert np.abs(w).max() > 0.999 * limit           # fills the interval
    _check_moments(w, 0.0, limit ** 2 / 3)
    w2 = init.glorot_uniform(_rng(), shape, gain=2.0)
    np.testing.assert_allclose(w2, 2 * w, rtol=1e-15)  # same draws, scaled


def test_he_uniform_and_normal():
    shape = (300, 200)
    lim = math.sqrt(6 / 300)
    w = init.he_uniform(_rng(1), shape)
    assert np.all(np.abs(w) <= lim) and np.abs(w).max() > 0.999 * lim
    _check_moments(w, 0.0, lim ** 2 / 3)             # = 2 / fan_in
    w = init.he_normal(_rng(2), shape)
    _check_moments(w, 0.0, 2 / 300)
    # a normal's tails: some values beyond 3 sigma (a truncated law would have none)
    assert np.any(np.abs(w) > 3 * math.sqrt(2 / 300))
    w = init.glorot_normal(_rng(3), shape)
    _check_moments(w, 0.0, 2 / 500)


def test_explicit_fans_and_dtype():
    w = init.he_normal(_rng(), (10, 4000), fan_in=4000)      # torch's (out, in) layout
    _check_moments(w, 0.0, 2 / 4000)
    w32 = init.glorot_uniform(_rng(5), (30, 40), dtype=np.float32)
    w64 = init.glorot_uniform(_rng(5), (30, 40))
    assert w32.dtype == np.float32
    np.testing.assert_array_equal(w32, w64.astype(np.float32))


def test_reproducible_given_the_generator():
    a = init.he_normal(_rng(7), (5, 6))
    b = init.he_normal(_rng(7), (5, 6))
    c = init.he_normal(_rng(8), (5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_checks():
    with pytest.raises(TypeError, match="rng"):
        init.glorot_uniform(np.random.RandomState(0), (2, 2))
    with pytest.raises(TypeError, match="rng"):
        init.he_normal(0, (2, 2))
    with pytest.raises(TypeError, match="dtype"):
        init.he_normal(_rng(), (2, 2), dtype=np.int32)
    with pytest.raises(TypeError, match="shape"):
        init.he_normal(_rng(), (2.0, 2))
    with pytest.raises(ValueError, match="fan_in"):
        init.he_normal(_rng(), (2, 2), fan_in=0)
    with pytest.raises(ValueError, match="gain"):
        init.glorot_uniform(_rng(), (2, 2), gain=-1.0)
