"""The L-BFGS history: the last ``m`` curvature pairs in a ring buffer, and the direction.

Layer: algorithms (the two-loop recursion itself runs in the kernels, ``ops.lbfgs_direction_``;
its NumPy ground truth is ``fusedopt.reference.lbfgs_direction``).

The layout is shared with the kernels (C++ and CUDA): ``History.s`` and ``History.y`` are
C-contiguous ``(m, n)`` arrays, ``History.rho`` is float64 ``(m,)``; the pairs oldest to newest
are rows ``(head + k) % m`` for ``k in range(count)``.

Two kernels give the direction ``-H g``: the two-loop recursion (``two_loop``,
``ops.lbfgs_direction_``: 2 count + 1 passes, each also reading and writing the output) and the
compact form of Byrd, Nocedal & Schnabel (1994) (``_core.lbfgs_compact_direction``: one pass for
``[S Y]^T g``, a 2m x 2m solve in float64, one pass for ``-gamma g + [S Y] c``). The compact
form needs ``S^T Y`` and ``Y^T Y``, kept here in ring indexing (``History.sy``, ``History.yy``)
and updated by one column per new pair inside the direction's first pass. It reads about half
the memory of the two-loop and is the default (``History.method``); the two agree to rounding,
and ``fusedopt.reference.lbfgs_compact_direction`` has the compact kernel's bits.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks, ops
from ._vector import CoreVec

__all__ = ["History", "two_loop"]


def _float_dtype(name, dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


class History:
    """The last ``m`` curvature pairs ``(s, y)`` of L-BFGS in a ring buffer (Nocedal & Wright,
    section 7.2: the pairs that define the inverse-Hessian approximation H).

    Attributes
    ----------
    s, y : ndarray, shape (m, n), C-contiguous, of ``dtype``
        The pairs; oldest to newest they are rows ``(head + k) % m`` for ``k in range(count)``.
    rho : ndarray, float64, shape (m,)
        ``1 / (s . y)`` of each row (dots in float64).
    head, count : int
        Ring index of the oldest pair; number of valid pairs (``<= m``).
    sy, yy : ndarray, float64, shape (m, m)
        The compact form's ``S^T Y`` (``sy[i, j] = s_i . y_j``, kept for i not newer than j)
        and ``Y^T Y`` in ring indexing, current after each ``direction``. Change the pairs
        through ``push`` and ``clear`` only: rows written directly are not seen by the Gram.
    skipped : int
        Pairs refused by the curvature condition ``s . y > eps_curv * y . y`` (or non-finite).
    """

    def __init__(self, n, m=10, dtype=np.float64, eps_curv=None):
        self.n = _checks.integer("n", n, minimum=1)
        self.m = _checks.integer("m", m, minimum=1)
        self.dtype = _float_dtype("dtype", dtype)
        if eps_curv is None:
            eps_curv = float(np.finfo(self.dtype).eps)
        self.eps_curv = _checks.nonneg("eps_curv", eps_curv)
        self.s = np.zeros((self.m, self.n), self.dtype)   # rows outside the valid ones: stale
        self.y = np.zeros((self.m, self.n), self.dtype)
        self.rho = np.zeros(self.m, np.float64)          # rho[r] = 1 / (s[r] . y[r]) > 0
        self.head = 0       # 0 <= head < m: the row of the oldest pair (the next overwritten)
        self.count = 0      # 0 <= count <= m: valid rows are head .. head + count - 1 (mod m)
        self.skipped = 0    # pairs refused since construction (clear() keeps the count)
        # The compact form's Gram matrices in ring indexing: sy[i, j] = s_i . y_j, valid for
        # every pair i not newer than j; yy[i, j] = y_i . y_j, symmetric. A row in _stale has
        # its column still to compute (pushed since the last compact direction).
        self.sy = np.zeros((self.m, self.m))
        self.yy = np.zeros((self.m, self.m))
        self._stale = set()

    def clear(self):
        """Forget every pair (the arrays keep their memory)."""
        self.head = 0
        self.count = 0
        self._stale.clear()

    def pairs(self):
        """The valid pairs oldest to newest, as a list of (s, y) row views."""
        rows = [(self.head + k) % self.m for k in range(self.count)]
        return [(self.s[r], self.y[r]) for r in rows]

    def _flat(self, name, a):
        a = np.asarray(a)
        if a.size != self.n:
            raise ValueError(f"{name} has {a.size} elements, expected n = {self.n}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a real array, got dtype {a.dtype}")
        return np.ascontiguousarray(a.reshape(-1), dtype=self.dtype)

    def push(self, s, y) -> bool:
        """Append the pair ``(s, y)`` (dropping the oldest when full) if it satisfies the
        curvature condition ``s . y > eps_curv * y . y``; else count it in ``skipped``.
        Returns whether it was stored."""
        s = self._flat("s", s)
        y = self._flat("y", y)
        return self._store(s, y, CoreVec.dot(s, y), CoreVec.dot(y, y), CoreVec)

    def _store(self, s, y, sy, yy, vec, step=1.0) -> bool:
        """Stores ``(step * s, y)`` given its dots ``sy`` (of the stored pair) and ``yy``."""
        if not (math.isfinite(sy) and math.isfinite(yy) and yy > 0.0 and sy > self.eps_curv * yy):
            self.skipped += 1
            return False
        if self.count < self.m:
            row = (self.head + self.count) % self.m
            self.count += 1
        else:
            row = self.head
            self.head = (self.head + 1) % self.m
        if step == 1.0:
            vec.copy(self.s[row], s)
        else:
            vec.scale(self.s[row], step, s)
        vec.copy(self.y[row], y)
        self.rho[row] = 1.0 / sy
        self._stale.add(row)
        return True

    #: The kernel of ``direction``: "compact" (the default: two passes over the history) or
    #: "two_loop" (Nocedal & Wright, Algorithm 7.4: 2 count + 1 passes).
    method = "compact"

    def _gram_row(self, vec):
        """Brings sy, yy up to date but for the newest pair's column, which the compact
        direction computes in its first pass: returns that row, or -1 if it is current. Pairs
        pushed with no direction in between get their columns from ``rows_dots`` (the same
        blocked dots, so the same bits as inside the direction)."""
        if not self._stale:
            return -1
        newest = (self.head + self.count - 1) % self.m
        rows = self.count if self.count < self.m else self.m   # head == 0 while count < m
        for r in sorted(self._stale - {newest}):
            d = vec.rows_dots(self.s, self.y, self.y[r], rows)
            self.sy[:rows, r] = d[:rows]
            self.yy[:rows, r] = d[rows:]
            self.yy[r, :rows] = d[rows:]
        gram_row = newest if newest in self._stale else -1
        self._stale.clear()
        return gram_row

    def direction(self, out, grad, method=None, vec=CoreVec) -> float:
        """``out = -H grad`` (out and grad flat, C-contiguous, of the history's dtype); returns
        ``grad . out`` (float64). ``method``: "compact" or "two_loop" (default
        ``History.method``); with no pair, ``out = -grad``."""
        method = self.method if method is None else method
        if method == "two_loop":
            return ops.lbfgs_direction_(out, grad, self)
        if method != "compact":
            raise ValueError(f"method must be 'compact' or 'two_loop', got {method!r}")
        gram_row = self._gram_row(vec) if self.count else -1
        return vec.compact_direction(out, grad, self.s, self.y, self.sy, self.yy, self.head,
                                     self.count, gram_row)

    def __repr__(self):
        return (f"History(n={self.n}, m={self.m}, dtype={self.dtype.name}, count={self.count}, "
                f"head={self.head}, skipped={self.skipped})")


def two_loop(grad, history):
    """The L-BFGS direction ``-H grad`` (a new array of grad's shape) by the fused kernel:
    the two-loop recursion of Nocedal & Wright, Algorithm 7.4, with ``H_0 = gamma I``,
    ``gamma = s.y / y.y`` of the newest pair (eq. 7.20). Its NumPy ground truth is
    ``fusedopt.reference.lbfgs_direction``."""
    g = np.asarray(grad)
    if g.dtype != history.dtype:
        raise TypeError(f"grad has dtype {g.dtype} but history has dtype {history.dtype}")
    out = np.empty_like(g, order="C")
    ops.lbfgs_direction_(out, np.ascontiguousarray(g), history)
    return out
