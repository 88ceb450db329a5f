"""Bounds of L-BFGS-B: every form SciPy accepts, checked and turned into two flat arrays.

Layer: algorithms (``scipy.optimize.Bounds`` is recognized by its attributes, so SciPy is never
imported; the one-pass reductions over the box run in the kernels through ``CoreVec``).

Accepted: a sequence of ``(lo, hi)`` pairs, one per element of x0 in C order, with None for
"no bound"; an object with ``lb`` and ``ub`` attributes (``scipy.optimize.Bounds``), each a
scalar or an array broadcastable to x0's shape; a pair of arrays ``(lo, hi)`` of x0's shape or
size (or scalars). ``-inf`` / ``+inf`` mean no bound; ``lo == hi`` fixes a variable.
"""
from __future__ import annotations

import numpy as np

from ._vector import CoreVec

__all__ = ["Box", "parse_bounds"]


class Box:
    """The box lo <= x <= hi over the flat x (arrays of the iterate's dtype, ±inf allowed).

    ``has_lo`` / ``has_hi``: the finite bounds; ``constrained``: any finite bound at all;
    ``boxed``: every variable bounded on both sides (SciPy's ``boxed``). ``kernel_lo`` /
    ``kernel_hi``: what the kernels get for each side, the array, or None where that side has no
    finite bound at all (the kernels then read no array, with the bits of the infinities: at
    n = 1e6 in float64 that is 8 MB less per pass over the box)."""

    def __init__(self, lo, hi):
        self.lo, self.hi = np.ascontiguousarray(lo), np.ascontiguousarray(hi)
        self.has_lo = np.isfinite(lo)
        self.has_hi = np.isfinite(hi)
        self.constrained = bool(self.has_lo.any() or self.has_hi.any())
        self.boxed = bool(self.has_lo.all() and self.has_hi.all())
        self.kernel_lo = self.lo if self.has_lo.any() else None
        self.kernel_hi = self.hi if self.has_hi.any() else None

    def project(self, out, x):
        """out = the projection of x on the box."""
        np.clip(x, self.lo, self.hi, out=out)
        return out

    def step(self, out, x, t, d):
        """out = the projection of x + t d on the box, one pass (the bits of ``axpby``, then
        ``project``)."""
        return CoreVec.step_in_box(out, x, t, d, self.kernel_lo, self.kernel_hi)

    def projected_gradient_norm(self, x, g) -> float:
        """max_i |P(x - g)_i - x_i| in SciPy's form (``projgr``): a negative g_i is cut at
        x_i - hi_i, a positive one at x_i - lo_i (NaN if any is NaN)."""
        return CoreVec.projected_amax(x, g, self.kernel_lo, self.kernel_hi)

    def max_step(self, x, d) -> float:
        """The largest t with x + t d in the box (inf when no bound limits d)."""
        return CoreVec.max_step(x, d, self.kernel_lo, self.kernel_hi)


def _as_bound_array(name, value, shape, size, fill):
    """One side of the bounds as a float64 array of ``size`` (None -> ``fill``)."""
    if value is None:
        return np.full(size, fill)
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"bounds: {name} must be real numbers or None: {e}") from None
    if a.ndim == 0:
        return np.full(size, float(a))
    if a.size == size and a.shape in (shape, (size,)):
        return a.reshape(size).copy()
    try:
        return np.broadcast_to(a, shape).reshape(size).copy()
    except ValueError:
        raise ValueError(f"bounds: {name} has shape {a.shape}; x0 has shape {shape} "
                         f"({size} elements)") from None


def _pairs(bounds, size):
    """A sequence of (lo, hi) pairs -> two float64 arrays (None -> -inf / +inf)."""
    if len(bounds) != size:
        raise ValueError(f"bounds has {len(bounds)} (lo, hi) pairs; x0 has {size} elements")
    lo = np.empty(size)
    hi = np.empty(size)
    for i, pair in enumerate(bounds):
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise ValueError(f"bounds[{i}] must be a pair (lo, hi), got {pair!r}") from None
        try:
            lo[i] = -np.inf if a is None else float(a)
            hi[i] = np.inf if b is None else float(b)
        except (TypeError, ValueError):
            raise TypeError(f"bounds[{i}] = {pair!r}: each bound must be a real number or "
                            "None") from None
    return lo, hi


def parse_bounds(bounds, shape, dtype):
    """``bounds`` (any accepted form) for an x0 of ``shape`` -> a ``Box`` of ``dtype`` over the
    flat x, or None for no bounds. Raises ValueError / TypeError naming ``bounds``."""
    if bounds is None:
        return None
    size = int(np.prod(shape, dtype=np.int64))
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):      # scipy.optimize.Bounds
        lo = _as_bound_array("lb", bounds.lb, shape, size, -np.inf)
        hi = _as_bound_array("ub", bounds.ub, shape, size, np.inf)
    elif isinstance(bounds, np.ndarray) and bounds.ndim >= 1 and bounds.shape[0] == 2 \
            and size != 2:
        lo = _as_bound_array("lo", bounds[0], shape, size, -np.inf)
        hi = _as_bound_array("hi", bounds[1], shape, size, np.inf)
    elif isinstance(bounds, (list, tuple, np.ndarray)):
        if len(bounds) == 2 and size != 2 and not any(
                isinstance(b, (tuple, list)) and len(b) == 2 and size == 1 for b in bounds):
            # two arrays (or scalars): (lo, hi)
            lo = _as_bound_array("lo", bounds[0], shape, size, -np.inf)
            hi = _as_bound_array("hi", bounds[1], shape, size, np.inf)
        else:
            lo, hi = _pairs(bounds, size)
    else:
        raise TypeError("bounds must be a sequence of (lo, hi) pairs, a scipy.optimize.Bounds "
                        f"or a pair of arrays, got {type(bounds).__name__}")
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise ValueError("bounds contain NaN")
    if (lo > hi).any():
        i = int(np.argmax(lo > hi))
        raise ValueError(f"bounds: lo > hi at element {i} ({lo[i]} > {hi[i]})")
    if (lo == np.inf).any() or (hi == -np.inf).any():
        raise ValueError("bounds: a lower bound of +inf or an upper bound of -inf is empty")
    dt = np.dtype(dtype)
    return Box(lo.astype(dt, copy=False), hi.astype(dt, copy=False))   # lo, hi: our own
