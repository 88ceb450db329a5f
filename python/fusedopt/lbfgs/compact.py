"""The limited-memory BFGS matrix in compact form, for L-BFGS-B.

Layer: algorithms (its products over the history run in the kernels through ``CoreVec``; the
small 2k x 2k algebra is NumPy in float64).

Byrd, Nocedal & Schnabel (1994), Theorem 2.3, as used by Byrd, Lu, Nocedal & Zhu (1995), eq.
(3.2)-(3.4): with the last k pairs as the columns of S and Y (n x k, oldest first),

    B = theta I - W M W^T,   W = [Y, theta S]  (n x 2k),
    M = K^{-1},              K = [[-D, L^T], [L, theta S^T S]],

D = diag(s_i . y_i), L the strictly lower triangle of S^T Y (L_ij = s_i . y_j, i > j) and
theta = y . y / s . y of the newest pair (1 with no pair). The pairs live in a ring buffer of
rows (``s``, ``y``: ``(m, n)``, C-contiguous); the Gram matrices S^T S, S^T Y, Y^T Y are kept
in ring order and updated by one row and column per new pair (4k dots), so no product over the
history is ever recomputed. A new pair's dots are taken in the next pass over the history
(``wt_dots``: the Cauchy point's W^T d and W^T g), not in a pass of their own; whatever reads the
Gram matrices or theta before that brings them up to date first (``_flush``).

The Gram matrices over a subset A of the variables (L-BFGS-B's fixed set, ``gram_w_at``) are
kept as per-block partials over the 16384-element blocks of x and updated as Byrd, Lu, Nocedal
& Zhu's ``formk`` does: a new pair adds one row and column in every block (taken over the last A
in the next pass over the history, ``wt_dots``, while each piece of the rows is in cache), and
only the blocks where A changed are summed again; W_A^T q then reads the entries with q != 0; the blocks are added in block order, so the result depends on
A and the pairs alone (not on the history of updates), and a sharded run, whose shards are whole
blocks, gets the same bits.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ._vector import CoreVec

__all__ = ["CompactForm", "changed_blocks"]

BLOCK = int(_core.reduce_block)   # the blocks of x of every reduction


def changed_blocks(old, new, nb):
    """uint8 flags over the nb blocks of x: 1 where the increasing index lists old and new
    differ (an index in one and not the other)."""
    flags = np.zeros(nb, np.uint8)
    if old.size != new.size or not np.array_equal(old, new):
        flags[np.setxor1d(old, new, assume_unique=True) // BLOCK] = 1
    return flags


class CompactForm:
    """B = theta I - W M W^T over the last ``m`` pairs (see the module docstring).

    Attributes
    ----------
    s, y : ndarray (m, n) of the iterate's dtype
        Ring buffer; the valid rows oldest to newest are ``order()``.
    ss, sy, yy : ndarray (m, m) float64
        Gram matrices in ring indexing: ``sy[i, j] = s_i . y_j``.
    theta : float
        The scaling of B's initial matrix (``y.y / s.y`` of the newest pair).
    head, count : int
        Ring index of the oldest pair (the next overwritten when full); number of pairs.
    """

    def __init__(self, n, m, dtype, vec=CoreVec):
        self.n, self.m, self.vec = n, m, vec
        self.s = np.zeros((m, n), dtype)
        self.y = np.zeros((m, n), dtype)
        self._ss = np.zeros((m, m))
        self._sy = np.zeros((m, m))
        self._yy = np.zeros((m, m))
        self._theta = 1.0
        self.head = 0       # 0 <= head < m: the row of the oldest pair
        self.count = 0      # 0 <= count <= m: valid rows head .. head + count - 1 (mod m)
        self._mid = None    # cached M (2k x 2k), None when stale
        self._pending = -1  # the row whose Gram row and column are not taken yet (-1: none)
        self._at = None     # (idx, parts, qparts): the Gram partials per block over idx (or None)
        self._at_new = []   # storage rows pushed since those partials were taken

    # The Gram matrices and theta, current (a pending pair's dots taken first).
    ss = property(lambda self: self._flush()._ss)
    sy = property(lambda self: self._flush()._sy)
    yy = property(lambda self: self._flush()._yy)
    theta = property(lambda self: self._flush()._theta)

    def clear(self):
        """Forget every pair (SciPy's "refresh the memory"): B = I."""
        self.head = self.count = 0
        self._theta = 1.0
        self._mid = None
        self._pending = -1
        self._at = None

    def order(self):
        """Ring rows of the valid pairs, oldest first."""
        return [(self.head + k) % self.m for k in range(self.count)]

    def push(self, s, y, sy):
        """Append the pair (s, y) with s . y = sy > 0 (the caller tests the curvature). Its Gram
        row and column (4k dots) are taken in the next pass over the history (``wt_dots``), or
        by ``_flush`` in a pass of their own when something needs them first."""
        r = self._next_row()
        self.vec.copy(self.s[r], s)
        self.vec.copy(self.y[r], y)

    def _next_row(self):
        """The ring row of a new pair (the oldest when full), marked pending."""
        self._flush()                      # at most one pair pending
        if self.count < self.m:
            r = (self.head + self.count) % self.m
            self.count += 1
        else:
            r = self.head
            self.head = (self.head + 1) % self.m
        self._pending = r
        self._mid = None
        self._at_new.append(r)
        return r

    def push_difference(self, xt, x, gt, g):
        """``push`` of the pair s = xt - x, y = gt - g, each written straight into its ring row
        (the bits of numpy.subtract); no copy of s or y is made."""
        r = self._next_row()
        self.vec.axpby(self.s[r], 1.0, xt, -1.0, x)
        self.vec.axpby(self.y[r], 1.0, gt, -1.0, g)

    def _take_gram(self, ds, dy):
        """Stores the pending row's dots: ds = (S s_r, Y s_r), dy = (S y_r, Y y_r) over the
        storage rows 0 .. k - 1 (k < m only while head == 0)."""
        r, k = self._pending, self.count
        self._ss[:k, r] = self._ss[r, :k] = ds[:k]
        self._sy[r, :k] = ds[k:]
        self._sy[:k, r] = dy[:k]
        self._yy[:k, r] = self._yy[r, :k] = dy[k:]
        self._theta = self._yy[r, r] / self._sy[r, r]
        self._pending = -1

    def _flush(self):
        """The pending pair's Gram row and column in a pass of their own (``rows_dots``)."""
        r = self._pending
        if r >= 0:
            both = self.vec.rows_dots(self.s, self.y, self.s[r], self.count, self.y[r])
            k2 = 2 * self.count
            self._take_gram(both[:k2], both[k2:])
        return self

    def wt_dots(self, *vs):
        """[W^T v for v in vs] (2k each, float64) in one pass over the history, which also takes
        the pending pair's Gram row and column, over every variable and (per block, for
        ``gram_w_at``) over the last fixed set."""
        k = self.count
        r = self._pending
        if r >= 0:
            gram = None
            if self._at is not None and self._at_new == [r]:
                # the Gram partials over the last fixed set get the new pair's row in this pass
                gram = (self._at[1], self._at[0], r)
                self._at_new = []
            d = self.vec.rows_dots_many(self.s, self.y, list(vs) + [self.s[r], self.y[r]], k,
                                        gram)
            n = 2 * k * len(vs)
            self._take_gram(d[n:n + 2 * k], d[n + 2 * k:])
        elif len(vs) == 1:
            d = self.vec.rows_dots(self.s, self.y, vs[0], k)
        else:
            d = self.vec.rows_dots_many(self.s, self.y, list(vs), k)
        return [self._w_order(d[2 * k * q:2 * k * (q + 1)]) for q in range(len(vs))]

    # --- the 2k x 2k algebra (chronological order) ---------------------------------------------

    def middle(self):
        """M = K^{-1} (2k x 2k, float64); raises numpy.linalg.LinAlgError if K is singular."""
        if self._mid is None:
            o = self.order()
            k = len(o)
            sy = self.sy[np.ix_(o, o)]
            low = np.tril(sy, -1)
            kk = np.empty((2 * k, 2 * k))
            kk[:k, :k] = -np.diag(np.diag(sy))
            kk[:k, k:] = low.T
            kk[k:, :k] = low
            kk[k:, k:] = self.theta * self.ss[np.ix_(o, o)]
            self._mid = np.linalg.inv(kk) if k else kk
            if not np.isfinite(self._mid).all():
                raise np.linalg.LinAlgError("the middle matrix of the compact form is singular")
        return self._mid

    def gram_w(self):
        """W^T W (2k x 2k)."""
        o = self.order()
        t = self.theta
        ys = self.sy[np.ix_(o, o)].T
        return np.block([[self.yy[np.ix_(o, o)], t * ys],
                         [t * ys.T, t * t * self.ss[np.ix_(o, o)]]])

    def keeps(self, a) -> bool:
        """Whether the index list kept from the last ``gram_w_at`` call is a view of the array
        a (a caller that reuses buffers must not write that one)."""
        return self._at is not None and self._at[0].base is a

    def gram_w_at(self, idx, q=None):
        """W_A^T W_A (2k x 2k) over the rows A = ``idx`` of W: the Gram matrices of the history
        at idx, from the per-block partials (``_gram_blocks``). With q (values at idx, the
        history's dtype): ``(W_A^T W_A, W_A^T q)`` from the same pass."""
        o, k, t = self.order(), self.count, self.theta
        got = self._gram_blocks(idx, q)
        (ss, sy, yy), dots = (got, None) if q is None else got
        ix = np.ix_(o, o)
        ys = sy[ix].T
        gram = np.block([[yy[ix], t * ys], [t * ys.T, t * t * ss[ix]]])
        return gram if q is None else (gram, self._w_order(dots))

    def _gram_blocks(self, idx, q):
        """The Gram matrices of the history over idx (increasing), summed by blocks of x from
        the partials kept since the last call: a block is summed again when its part of idx
        changed, or every block when more than one pair (or none known) is new; otherwise only
        the row and column of the new pair. One gathered pass over the blocks that need it."""
        n, m = self.n, self.m
        nb = -(-n // BLOCK)
        new = sorted(set(self._at_new))
        self._at_new = []
        if self._at is None or len(new) > 1:
            parts = self._at[1] if self._at is not None else np.zeros((nb, 3 * m * m))
            qparts = self._at[2] if self._at is not None else np.zeros((nb, 2 * m))
            redo, row = np.ones(nb, np.uint8), -1
        else:
            old, parts, qparts = self._at
            redo, row = changed_blocks(old, idx, nb), (new[0] if new else -1)
        self._at = (idx, parts, qparts)
        return self.vec.gram_blocks(parts, qparts, self.s, self.y, idx, self.count, redo, row, q)

    def w_row(self, i):
        """Row i of W (2k, float64): (y_1[i] .. y_k[i], theta s_1[i] .. theta s_k[i])."""
        o = self.order()
        return np.concatenate([self.y[o, i], self.theta * self.s[o, i]]).astype(np.float64)

    # --- products over the history (passes over n) ---------------------------------------------

    def _w_order(self, d):
        """The dots [S v] + [Y v] of the storage rows as W^T v in chronological order."""
        o, k = self.order(), self.count
        return np.concatenate([d[k:][o], self.theta * d[:k][o]])

    def _coefficients(self, a):
        """W a = S cs + Y cy over the storage rows: (cs, cy) for a chronological a (2k)."""
        o, k = self.order(), self.count
        cs = np.zeros(k)
        cy = np.zeros(k)
        cy[o] = a[:k]
        cs[o] = self.theta * np.asarray(a[k:], np.float64)
        return cs, cy

    def wt_dot(self, v):
        """W^T v (2k, float64): 2k dots in one pass (float64 blocked sums)."""
        return self.wt_dots(v)[0]

    def w_times(self, out, a):
        """out = W a for a of length 2k (out has the iterate's dtype), in one pass."""
        cs, cy = self._coefficients(a)
        self.vec.rows_axpy(out, self.s, self.y, cs, cy, self.count)
        return out

    def subspace_direct_d(self, xbar, du, d, a, xc, x, g, t, box):
        """du = Z^T (W a - (g / theta + (xc - x))), xbar = P(xc + du), d = xbar - x, in one pass
        over the history; returns (g . d, the step from x to the box along d)."""
        cs, cy = self._coefficients(a)
        return self.vec.subspace_direct_d(xbar, du, d, self.s, self.y, cs, cy, self.count, xc, x,
                                          g, t, box.kernel_lo, box.kernel_hi, self.theta)

    def pairs(self):
        """(S, Y) as (k, n) float64 copies, oldest first (for ``hess_inv``)."""
        o = self.order()
        return self.s[o].astype(np.float64), self.y[o].astype(np.float64)
