"""Latin-hypercube sampling in a box, and multi-start local minimization.

    >>> from fusedopt.functions import rastrigin
    >>> r = multistart(rastrigin.value_and_grad, [(-5.12, 5.12)] * 2, n_starts=50, rng=0)
    >>> r.x, r.fun            # the best local minimum found (here the global one, 0 at 0)
    >>> r.results             # every local run, in the order of r.starts

Needs SciPy (``scipy.stats.qmc`` draws the Latin hypercube; imported when sampling).

``minimizer(fun, x0) -> result`` is any local minimizer taking ``fun(x) -> (f, grad)`` and
returning an object with ``.x`` and ``.fun``; the default is ``fusedopt.lbfgs.minimize``.

Layer: tools (built on the algorithms layer: ``lbfgs``).
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _checks, lbfgs
from .lbfgs.result import OptimizeResult

__all__ = ["latin_hypercube", "multistart", "DEFAULT_MINIMIZER"]

#: The label ``multistart`` reports for its default local minimizer, ``fusedopt.lbfgs.minimize``.
DEFAULT_MINIMIZER = "fusedopt.lbfgs"


def _bounds(bounds):
    b = np.asarray(bounds)
    if b.dtype.kind not in "iuf":
        raise TypeError(f"bounds must be real (low, high) pairs, got dtype {b.dtype}")
    b = b.astype(np.float64)
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] == 0:
        raise ValueError(f"bounds must be a sequence of (low, high) pairs, one per dimension, "
                         f"got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("bounds must be finite")
    if np.any(b[:, 0] >= b[:, 1]):
        raise ValueError("bounds must have low < high in every dimension")
    return b


def latin_hypercube(n, bounds, *, rng=None, scramble=True, optimization=None):
    """``n`` Latin-hypercube points in the box ``bounds`` (a sequence of (low, high) pairs, one
    per dimension), shape (n, d): in every dimension each of the n equal slices of
    [low, high) holds exactly one point. ``rng``: a seed or a ``numpy.random.Generator``.
    ``scramble=False`` puts the points at the centres of their cells; ``optimization``
    ("random-cd" or "lloyd") improves the space filling (see ``scipy.stats.qmc``)."""
    from scipy.stats import qmc

    n = _checks.integer("n", n, minimum=1)
    b = _bounds(bounds)
    if not isinstance(scramble, (bool, np.bool_)):
        raise TypeError(f"scramble must be a bool, got {type(scramble).__name__}")
    if rng is not None and not isinstance(rng, (numbers.Integral, np.random.Generator)):
        raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got "
                        f"{type(rng).__name__}")
    try:
        engine = qmc.LatinHypercube(b.shape[0], scramble=bool(scramble),
                                    optimization=optimization, rng=rng)
    except TypeError:        # SciPy < 1.15 calls it seed
        engine = qmc.LatinHypercube(b.shape[0], scramble=bool(scramble),
                                    optimization=optimization, seed=rng)
    return qmc.scale(engine.random(n), b[:, 0], b[:, 1])


def multistart(fun, bounds, n_starts, minimizer=None, *, rng=None, starts=None):
    """Run a local minimizer from ``n_starts`` Latin-hypercube points in ``bounds``.

    ``fun(x) -> (f, grad)``. ``minimizer(fun, x0)`` returns an object with ``.x`` and
    ``.fun`` (default: ``fusedopt.lbfgs.minimize``). ``starts`` (n_starts, d) replaces the
    sampled points. Returns an ``OptimizeResult``: ``x`` and ``fun`` of the best run (the lowest
    finite ``fun``), ``best`` (that run's result), ``index`` (its position), ``results``
    (every run's result), ``starts`` (n_starts, d), ``xs`` (n_starts, d) and ``funs``
    (n_starts,) of the local minima, and ``minimizer`` (a label)."""
    _checks.function("fun", fun)
    b = _bounds(bounds)
    n_starts = _checks.integer("n_starts", n_starts, minimum=1)
    if minimizer is None:
        minimizer, label = lbfgs.minimize, DEFAULT_MINIMIZER
    else:
        _checks.function("minimizer", minimizer)
        label = getattr(minimizer, "__name__", type(minimizer).__name__)
    if starts is None:
        starts = latin_hypercube(n_starts, b, rng=rng)
    else:
        starts = np.array(starts, dtype=np.float64)
        if starts.shape != (n_starts, b.shape[0]):
            raise ValueError(f"starts must have shape {(n_starts, b.shape[0])}, got "
                             f"{starts.shape}")
    results = [minimizer(fun, x0.copy()) for x0 in starts]
    xs = np.array([np.asarray(r.x, dtype=np.float64) for r in results])
    funs = np.array([float(r.fun) for r in results])
    finite = np.where(np.isfinite(funs), funs, np.inf)
    i = int(np.argmin(finite))
    return OptimizeResult(x=xs[i].copy(), fun=funs[i], best=results[i], index=i, results=results,
                  starts=starts, xs=xs, funs=funs, minimizer=label,
                  success=bool(np.isfinite(funs[i])))
