"""The vector operations of the L-BFGS solver, each one call into the C++/OpenMP kernels.

Layer: algorithms (touches ``_core`` directly: the only L-BFGS module that does).

Every array operation of an iteration (the direction, the dots, the trial point) goes through
``CoreVec``: reductions give the same bits for any thread count, and no BLAS is called (two
BLAS thread pools fighting over few cores can cost 100x on small vectors). The solver takes the
backend as an argument, so a CuPy backend with the same five methods can drive the same
iteration. There is no NumPy copy of the direction here: ``direction`` is a fused kernel (the
compact form or the two-loop, ``History.direction``), whose ground truths are
``fusedopt.reference.lbfgs_compact_direction`` (bits) and ``lbfgs_direction`` (the two-loop).
"""
from __future__ import annotations

import numpy as np

from .. import _core, ops

__all__ = ["CoreVec"]


class CoreVec:
    """Vector operations on flat, C-contiguous NumPy arrays, in ``fusedopt._core``."""

    empty = staticmethod(np.empty)

    @staticmethod
    def dot(a, b) -> float:
        """sum(a * b), accumulated in float64 by fixed blocks."""
        return _core.lbfgs_dot(a, b)

    @staticmethod
    def axpby(out, a, x, b, y):
        """out = a * x + b * y (out may be x or y)."""
        _core.lbfgs_axpby(out, a, x, b, y)

    @staticmethod
    def amax(a) -> float:
        """max |a_i| (NaN if any is NaN)."""
        return _core.lbfgs_amax(a)

    @staticmethod
    def scale(out, a, x):
        """out = a * x, with a cast to the dtype once (a = 1: an exact copy)."""
        _core.lbfgs_axpby(out, a, x)

    @staticmethod
    def copy(out, x):
        _core.lbfgs_axpby(out, 1.0, x)

    @staticmethod
    def copy_dot(out, g, d) -> float:
        """out = g (an exact copy); returns g . d (``dot``'s bits), one pass."""
        return _core.lbfgs_copy_dot(out, g, d)

    @staticmethod
    def any(flag) -> bool:
        """bool(flag). A test that decides whether a reduction follows goes through it, so that
        a backend over several processes can take it over all of them (``mpi.ShardVec``)."""
        return bool(flag)

    @staticmethod
    def sub_dots(out, a, b, c):
        """out = a - b (out may be a or b); returns (c . out, out . out)."""
        return _core.lbfgs_sub_dots(out, a, b, c)

    @staticmethod
    def pair_dots(xt, x, gt, g):
        """(s . y, y . y) with s = xt - x, y = gt - g, stored nowhere (the bits of ``sub_dots``
        after s = xt - x), one pass."""
        return _core.lbfgs_pair_dots(xt, x, gt, g)

    @staticmethod
    def rows_dots(s, y, v, rows, w=None):
        """[s_j . v] + [y_j . v] (+ [s_j . w] + [y_j . w]) (float64) over the first ``rows``
        rows, one pass."""
        return _core.lbfgsb_rows_dots(s, y, v, rows, w)

    @staticmethod
    def step_in_box(out, x, t, d, lo, hi):
        """out = numpy.clip(x + t d, lo, hi) in one pass (the bits of axpby, then clip)."""
        _core.lbfgsb_step_in_box(out, x, t, d, lo, hi)
        return out

    @staticmethod
    def gram_blocks(parts, qparts, s, y, idx, rows, redo, row=-1, q=None):
        """``rows_gram_at`` summed by the blocks of x from the per-block partials ``parts``
        (and ``qparts`` with q), which it brings up to date: the blocks flagged in ``redo``
        whole, the others in row and column ``row`` (``_core.lbfgsb_gram_blocks``)."""
        return _core.lbfgsb_gram_blocks(parts, qparts, s, y, idx, rows, redo, row, q)

    @staticmethod
    def rows_dots_many(s, y, vs, rows, gram=None):
        """[s_j . v] + [y_j . v] for each v in vs, over the first ``rows`` rows, one pass; with
        gram = (parts, idx, row), the same pass updates ``gram_blocks``'s partials in row and
        column ``row``."""
        if gram is None:
            return _core.lbfgsb_rows_dots_many(s, y, vs, rows)
        return _core.lbfgsb_rows_dots_many(s, y, vs, rows, *gram)

    @staticmethod
    def subspace_direct_d(xbar, du, d, s, y, a, b, rows, xc, x, g, t, lo, hi, theta):
        """L-BFGS-B: du = (t >= 0) ? (W a) - (g/theta + (xc - x)) : 0, xbar = clip(xc + du),
        d = xbar - x; returns (g . d, the largest t >= 0 with x + t d in the box:
        ``max_step``'s bits), one pass. xbar = du = None: only d is written."""
        return _core.lbfgsb_subspace_direct_d(xbar, du, d, s, y, a, b, rows, xc, x, g, t, lo, hi,
                                              theta)

    @staticmethod
    def fixed_set(idx, q, t, xc, x, g, theta, zero_held):
        """L-BFGS-B's fixed variables and the subspace step's q over them, one pass (elementwise:
        local on a shard): ``idx[:k] = numpy.flatnonzero(t < 0)``, ``q[:k] = g + theta (xc -
        x)`` there in x's dtype (0 where ``zero_held`` and xc == x); returns k."""
        return _core.lbfgsb_fixed_set(idx, q, t, xc, x, g, theta, zero_held)

    @staticmethod
    def rows_axpy(out, s, y, a, b, rows):
        """out = sum_j a[j] s_j + b[j] y_j over the first ``rows`` rows, one pass."""
        _core.lbfgsb_rows_axpy(out, s, y, a, b, rows)

    @staticmethod
    def cauchy_start_pg(d, t, x, g, lo, hi):
        """L-BFGS-B: d = -g (0 where held at a bound), t = breakpoints (inf none, -1 held) and,
        from the same pass, ``projected_amax(x, g, lo, hi)`` and the number of moving variables
        without a breakpoint: (d . d, pg norm, count)."""
        return _core.lbfgsb_cauchy_start_pg(d, t, x, g, lo, hi)

    # cauchy_path takes `fixed` (the fixed set from the path's last pass): a backend without
    # it leaves the fixed set to fixed_set
    cauchy_path_fixed = True

    @staticmethod
    def cauchy_path(xc, d, t, x, lo, hi, s, y, order, theta, mid, p, c, f1, f2, bounded,
                    scratch=None, fixed=None):
        """L-BFGS-B: the Cauchy point's path, breakpoints from a heap; (tsum, p, c). scratch:
        an int64 array of x's size to hold the heap (else the kernel allocates one). fixed =
        (idx, q, g, zero_held): also ``fixed_set(idx, q, t, xc, x, g, theta, zero_held)`` after
        the path, from its last pass (idx may be scratch); then (tsum, p, c, k)."""
        if fixed is None:
            return _core.lbfgsb_cauchy_path(xc, d, t, x, lo, hi, s, y, order, theta, mid, p, c,
                                            f1, f2, bounded, scratch)
        idx, q, g, zero_held = fixed
        return _core.lbfgsb_cauchy_path(xc, d, t, x, lo, hi, s, y, order, theta, mid, p, c,
                                        f1, f2, bounded, scratch, idx, q, g, zero_held)

    @staticmethod
    def projected_amax(x, g, lo, hi) -> float:
        """L-BFGS-B's projected-gradient norm (SciPy's ``projgr``), one pass."""
        return _core.lbfgsb_projected_amax(x, g, lo, hi)

    @staticmethod
    def max_step(x, d, lo, hi) -> float:
        """The largest t >= 0 with lo <= x + t d <= hi (inf if unlimited), one pass."""
        return _core.lbfgsb_max_step(x, d, lo, hi)

    @staticmethod
    def direction(out, grad, history) -> float:
        """out = -H grad by the history's kernel (``History.direction``: the compact form by
        default, or the two-loop); returns grad . out."""
        return history.direction(out, grad)

    @staticmethod
    def two_loop(out, grad, history) -> float:
        """out = -H grad by the two-loop recursion; returns grad . out."""
        return ops.lbfgs_direction_(out, grad, history)

    @staticmethod
    def compact_direction(out, grad, s, y, sy, yy, head, count, gram_row) -> float:
        """out = -H grad through the compact form (the Gram column of ``gram_row`` computed in
        the first pass and written into sy, yy); returns grad . out."""
        return _core.lbfgs_compact_direction(out, grad, s, y, sy, yy, head, count, gram_row)
