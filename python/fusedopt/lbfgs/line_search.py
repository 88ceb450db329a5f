"""The line searches of the L-BFGS solver: strong Wolfe (bracketing and zoom with cubic
interpolation) and backtracking Armijo (quadratic interpolation).

Layer: algorithms (scalar logic only; the caller's ``evaluate`` does the array work).

``phi(t) = f(x + t d)``; each evaluation is written by the caller to one of two trial slots so
that the best point so far (the low end of the bracket) is never recomputed or copied.
"""
from __future__ import annotations

import math

__all__ = ["Point", "LineSearch", "cubic_min", "LINE_SEARCHES", "check_line_search"]

LINE_SEARCHES = ("strong_wolfe", "armijo")


def check_line_search(line_search):
    if line_search not in LINE_SEARCHES:
        raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
    return line_search


class Point:
    """One evaluation of phi: the step ``t``, ``f = phi(t)``, the slope ``dg = phi'(t)`` and
    the trial ``slot`` holding x + t d and its gradient (None for the start point, t = 0)."""

    __slots__ = ("t", "f", "dg", "slot")

    def __init__(self, t, f, dg, slot):
        self.t, self.f, self.dg, self.slot = t, f, dg, slot

    @property
    def finite(self):
        return math.isfinite(self.f) and math.isfinite(self.dg)


def cubic_min(a, b, lo, hi):
    """Minimizer of the cubic through two points (value and slope), clamped to [lo, hi]; the
    midpoint of [lo, hi] when the cubic has no minimizer (Nocedal & Wright, eq. 3.59)."""
    if a.t == b.t:
        return 0.5 * (lo + hi)
    d1 = a.dg + b.dg - 3.0 * (a.f - b.f) / (a.t - b.t)
    sq = d1 * d1 - a.dg * b.dg
    if not (sq >= 0.0 and math.isfinite(sq)):
        return 0.5 * (lo + hi)
    d2 = math.copysign(math.sqrt(sq), b.t - a.t)
    denom = b.dg - a.dg + 2.0 * d2
    if denom == 0.0:
        return 0.5 * (lo + hi)
    t = b.t - (b.t - a.t) * ((b.dg + d2 - d1) / denom)
    if not math.isfinite(t):
        return 0.5 * (lo + hi)
    return min(max(t, lo), hi)


class LineSearch:
    """The line searches of the solver. ``evaluate(t, slot)`` returns a finite or non-finite
    Point; a non-finite point is treated as too long a step. ``tmin()`` is the step below
    which x no longer changes (no resolution left).

    After each search ``unbounded`` tells whether it ran out of evaluations while still
    extrapolating: every trial step (each increment 1.1 to 4 times the last one)
    decreased f sufficiently with a slope still steeper than ``c2 phi'(0)``, so no
    minimizer of phi was bracketed; the minimizer counts such searches to detect a problem
    unbounded below."""

    c1 = 1e-4       # sufficient decrease: phi(t) <= phi(0) + c1 t phi'(0)
    c2 = 0.9        # curvature (strong Wolfe): |phi'(t)| <= c2 |phi'(0)|
    max_evals = 20  # evaluations of phi per search, bracketing and zoom together

    def __init__(self, evaluate):
        self.evaluate = evaluate
        self.unbounded = False

    def strong_wolfe(self, f0, dg0, t1, tmin, tmax=math.inf):
        """Nocedal & Wright, Algorithm 3.5 (bracketing; the zoom is Algorithm 3.6), the trial
        steps extrapolated by cubic interpolation and kept <= tmax (L-BFGS-B: the step to the
        box). A point at tmax that decreases f sufficiently with a negative slope is accepted
        (SciPy's "STP = STPMAX"). Returns the accepted Point or None."""
        c1, c2 = self.c1, self.c2
        self.unbounded = False
        prev = Point(0.0, f0, dg0, None)
        t = min(t1, tmax)
        for i in range(self.max_evals):
            cur = self.evaluate(t, 0 if prev.slot != 0 else 1)
            if (not cur.finite or cur.f > f0 + c1 * cur.t * dg0
                    or (i > 0 and cur.f >= prev.f)):
                return self._zoom(prev, cur, f0, dg0, self.max_evals - i - 1, tmin)
            if abs(cur.dg) <= -c2 * dg0:
                return cur
            if cur.dg >= 0.0:
                return self._zoom(cur, prev, f0, dg0, self.max_evals - i - 1, tmin)
            if cur.t >= tmax:
                return cur
            width = cur.t - prev.t
            t = min(cubic_min(prev, cur, cur.t + 1.1 * width, cur.t + 4.0 * width), tmax)
            prev = cur
        self.unbounded = prev.slot is not None
        return prev if prev.slot is not None else None

    def _zoom(self, lo, hi, f0, dg0, evals, tmin):
        """Nocedal & Wright, Algorithm 3.6 (zoom), cubic interpolation kept 10% inside the
        bracket. lo: the best point (sufficient decrease, finite); hi: the other end of a
        bracket that holds a strong-Wolfe point."""
        c1, c2 = self.c1, self.c2
        for _ in range(evals):
            a, b = min(lo.t, hi.t), max(lo.t, hi.t)
            if b - a <= tmin():
                break
            margin = 0.1 * (b - a)
            if hi.finite:
                t = cubic_min(lo, hi, a + margin, b - margin)
            else:
                # No slope to interpolate at a non-finite point: shrink hard toward lo.
                t = lo.t + 0.25 * (hi.t - lo.t)
            cur = self.evaluate(t, 0 if lo.slot != 0 else 1)
            if not cur.finite or cur.f > f0 + c1 * cur.t * dg0 or cur.f >= lo.f:
                hi = cur
            else:
                if abs(cur.dg) <= -c2 * dg0:
                    return cur
                if cur.dg * (hi.t - lo.t) >= 0.0:
                    hi = lo
                lo = cur
        # Out of evaluations or of resolution: lo still decreases f sufficiently.
        return lo if lo.slot is not None else None

    def armijo(self, f0, dg0, t1, tmin):
        """Backtracking until f(t) <= f0 + c1 t dg0 (Nocedal & Wright, Algorithm 3.1); each
        new trial step is the minimizer of the quadratic through f0, dg0 and f(t) (eq. 3.58),
        kept in [0.1 t, 0.5 t] (0.25 t after a non-finite value)."""
        self.unbounded = False
        t = t1
        for _ in range(self.max_evals):
            cur = self.evaluate(t, 0)
            if cur.finite and cur.f <= f0 + self.c1 * t * dg0:
                return cur
            if t <= tmin():
                break
            if cur.finite:
                q = -dg0 * t * t / (2.0 * (cur.f - f0 - dg0 * t))
                t = min(max(q, 0.1 * t), 0.5 * t)
            else:
                t = 0.25 * t
        return None
