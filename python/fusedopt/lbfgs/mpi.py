"""L-BFGS across processes on MPI (``mpi4py``): data-parallel and sharded, bit-reproducible.

Layer: algorithms (the per-block partial sums run in the kernels, ``_core.block_dots``; mpi4py
is imported only here, and only when ``minimize`` is given a communicator).

``fusedopt.lbfgs.minimize(fun, x0, ..., comm=comm, shard=False | True)`` comes here.

Data-parallel (``shard=False``; Spark MLlib's L-BFGS): every rank holds the whole x and runs the
whole iteration; ``fun(x)`` returns the rank's part of f and of the gradient (its slice of the
data). One collective per evaluation: an allgather of every rank's ``(status, f, g)``, then the
parts added in rank order (never an ``MPI_SUM``, whose order is the implementation's), so every
rank holds the same f and g, hence the same bits at every iteration. Bounds work as in one
process (each rank runs the same L-BFGS-B on the same numbers).

Sharded (``shard=True``; the vector-free L-BFGS of Chen, Wang & Zhou 2014): rank r holds the
contiguous slice ``local_slice(n, comm)`` of x, of g and of every history vector; ``fun(x_r)``
returns the rank's part of f and its slice of the gradient. The direction is the compact form of
the inverse Hessian (Byrd, Nocedal & Schnabel 1994; Nocedal & Wright eq. 7.24),

    H = gamma I + [S, gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]] [S; gamma Y]^T

computed by the one-process kernels of ``History.direction`` on the rank's slices, in two
collectives (``ShardVec.compact_direction``): the first pass's per-block partials of
S^T g, Y^T g and the new column of S^T Y, Y^T Y (the pair stored at the previous iteration),
2m or 4m sums; then the 2m x 2m algebra on every rank on identical numbers
(``_core.lbfgs_compact_coefficients``, fixed loops, no LAPACK) and the second pass locally,
whose partials of g . d are the second collective. So d and g . d have the bits of the
one-process direction on the whole vectors, on any number of ranks. Each trial point of the
line search is one collective (f, max |g| and the block partials of g . d together), and the
new pair's s . y, y . y one more.

Every reduction of fusedopt's own is a sum of per-block partials: each rank computes the
blocked sums of its blocks of 16384 elements (``_core.block_dots``, the very block sums of the
one-process kernels), the partials are gathered (allgatherv, rank order = block order, since
``local_slice`` cuts on block boundaries) and added in block order from 0.0 on every rank. The
result is the bits of ``_core.lbfgs_dot`` on the whole vector, on 1, 2, 3 or any number of
ranks. A max (``max |g|``) is exact in any order. What ``fun`` returns is the user's: its parts
of f are added in rank order, so a run on k ranks repeats bit for bit and every rank holds the
same scalars, while runs on different rank counts agree to rounding (exactly where f does not
depend on the split).

Errors: an exception in ``fun`` on any rank (or a wrong return value; also a
KeyboardInterrupt or another BaseException) is sent in the next collective as a status; every
rank then raises ``RankError`` with that rank's message (the failing rank chained to its own
exception; a BaseException that is not an Exception is re-raised as itself on its rank): no
rank waits forever. The same holds for ``callback``, whose outcome is exchanged in one
collective after each call. A NaN in f or g is no error: it reaches every rank in the sums, so
every rank takes the same (one-process) way with it. Sizes, dtypes, options and,
data-parallel, x0 and the bounds are compared at the first collective; a mismatch raises
ValueError on every rank naming what differs.

Bounds with ``shard=True`` (each rank gives the bounds of its slice): ``lbfgsb.BoundedSolver``
itself over ``ShardVec`` and ``ShardBox``. Its products over the history (``rows_dots_many``:
the Cauchy pass's W^T d with the new pair's Gram dots; ``subspace_direct_d``'s g . d and step
to the box) and its reductions (projected-gradient norm, step to the box) combine across ranks
as above, and the tests "any variable free / fixed" (``vec.any``) are taken over every rank. The
generalized Cauchy point must take the breakpoints of all n variables in increasing order;
``sharded_cauchy_path`` does it in rounds: each rank offers its next smallest breakpoints (with
t, d_b, z_b and its row of W), every rank merges the offers in (t, global index) order, exactly
the order of the one-process heap, and processes them up to the smallest last offer of a rank
that has more, then asks again. Its arithmetic is that of the one-process kernel step for
step, so the Cauchy point has the one-process bits (its loop over the breakpoints passed is
Python here, O(m^2) each: slower than the kernel's C++). The Gram matrices over the fixed
variables, and W_A^T q of the subspace step, are kept per block of x (``CompactForm.gram_w_at``,
the same in one process): each rank updates the partials of its own blocks, and they are
gathered and added in block order (``gram_blocks``). Hence the sharded direction has the bits
of the one-process direction on any number of ranks. L-BFGS-B's 2m x 2m
algebra is ``compact``'s NumPy/LAPACK, identical on ranks of one machine type.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from .. import _checks, _core
from . import lbfgsb
from ._vector import CoreVec
from .bounds import Box
from .history import History
from .line_search import Point
from .result import OptimizeResult
from .solver import (_BOUNDED_MESSAGES, _UNBOUNDED, FTOL, Solver, _check_x0, _copy_gradient,
                     check_options, run_bounded,
                     _pair, _real_scalar, _unbounded, minimize as _one_process)

__all__ = ["local_slice", "minimize", "RankError", "ShardVec"]

#: The block of every blocked sum (``_core.reduce_block``): shards start on multiples of it.
BLOCK = int(_core.reduce_block)


class RankError(RuntimeError):
    """Raised on every rank when ``fun`` failed on one of them (the message names the rank)."""


def _rank_size(comm):
    return int(comm.Get_rank()), int(comm.Get_size())


def local_slice(n, comm) -> slice:
    """The contiguous part of ``range(n)`` that rank ``comm.Get_rank()`` holds in sharded mode:
    the ``ceil(n / 16384)`` blocks of the blocked sums dealt out in order, rank r getting blocks
    ``[nb r // size, nb (r + 1) // size)`` (sizes differ by at most one block; a rank gets none
    when there are fewer blocks than ranks). ``comm=None``: ``slice(0, n)``."""
    n = _checks.integer("n", n, minimum=0)
    if comm is None:
        return slice(0, n)
    rank, size = _rank_size(comm)
    nb = -(-n // BLOCK)
    lo, hi = nb * rank // size, nb * (rank + 1) // size
    return slice(min(n, lo * BLOCK), min(n, hi * BLOCK))


# --- the collectives ---------------------------------------------------------------------------


class _Net:
    """The collectives of a run over ``comm``: every message starts with a status word, so that
    a failure on one rank reaches every rank at the next collective (no hang)."""

    def __init__(self, comm):
        try:
            from mpi4py import MPI  # the mpi extra; only when a communicator is given
        except ImportError as e:
            raise ImportError("comm= needs mpi4py: pip install 'fusedopt[mpi]'") from e

        self.MPI = MPI
        self.comm = comm
        self.rank, self.size = _rank_size(comm)
        self.nb = None          # blocks per rank (sharded), set by ``setup``
        self.collectives = 0    # counters for the benchmark's split of the time
        self.seconds = 0.0

    def _timed(self, fn, *args):
        t0 = self.MPI.Wtime()
        out = fn(*args)
        self.seconds += self.MPI.Wtime() - t0
        self.collectives += 1
        return out

    def setup(self, signature, compare, nb_local, error=None):
        """The first collective: every rank's signature (a dict), compared field by field with
        ``compare(name, values)`` -> an error text or None; ValueError on every rank if any.
        A rank whose arguments were refused (``error``, also ``signature["error"]``) raises it,
        the others a ValueError naming that rank."""
        sigs = self._timed(self.comm.allgather, (signature, nb_local))
        self.nb = [int(s[1]) for s in sigs]
        if error is not None:
            raise error
        bad = [(r, s[0]["error"]) for r, s in enumerate(sigs) if s[0].get("error")]
        if bad:
            raise ValueError(f"fusedopt.lbfgs.minimize refused the arguments of rank {bad[0][0]}:"
                             f" {bad[0][1]}")
        errors = []
        for key in signature:
            text = compare(key, [s[0].get(key) for s in sigs])
            if text:
                errors.append(text)
        if errors:
            raise ValueError("fusedopt.lbfgs.minimize on MPI: the ranks disagree: "
                             + "; ".join(errors))
        return [s[0] for s in sigs]

    def fail_if_any(self, status, error, who="fun"):
        """After a collective: if any rank's status is nonzero, every rank raises RankError
        with the failing ranks' messages (one more collective, on this path only); see
        ``_raise_failure``."""
        if not np.any(status):
            return
        texts = self.comm.allgather(None if error is None else
                                    f"{type(error).__name__}: {error}")
        _raise_failure(texts, error, who)

    def relay_callback(self, callback, xk):
        """``callback(xk)`` on this rank, then one collective of every rank's outcome: if the
        callback raised on any rank (any exception, KeyboardInterrupt included), every rank
        raises (``_raise_failure``). Without it a rank whose callback raised would leave the
        others waiting at their next collective."""
        error = None
        try:
            callback(xk)
        except BaseException as e:  # noqa: BLE001 -- sent to every rank, raised there
            error = e
        texts = self._timed(self.comm.allgather,
                            None if error is None else f"{type(error).__name__}: {error}")
        if any(t is not None for t in texts):
            _raise_failure(texts, error, "callback")

    def gather_blocks(self, head, parts):
        """Allgatherv of ``head`` (H float64 per rank: status first) and the rank's block
        partials ``parts`` (nb_local x P). Returns (heads (size x H), sums (P,)): the partials of
        all blocks added in block order from 0.0 (bits of the one-process blocked sum)."""
        head = np.asarray(head, np.float64)
        hn, p = head.size, parts.shape[1]
        send = np.concatenate([head, parts.reshape(-1)])
        counts = [hn + nb * p for nb in self.nb]
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
        recv = np.empty(sum(counts))
        MPI = self.MPI
        self._timed(self.comm.Allgatherv, [send, MPI.DOUBLE], [recv, (counts, displs), MPI.DOUBLE])
        heads = np.stack([recv[d:d + hn] for d in displs])
        if p == 0:
            return heads, np.zeros(0)
        blocks = np.concatenate([recv[d + hn:d + c].reshape(-1, p)
                                 for d, c in zip(displs, counts)])
        return heads, _in_block_order(blocks)

    def gather_rows(self, send):
        """Allgather of equal-length byte rows; returns (size x len) uint8."""
        recv = np.empty((self.size, send.size), np.uint8)
        MPI = self.MPI
        self._timed(self.comm.Allgather, [send, MPI.BYTE], [recv, MPI.BYTE])
        return recv


def _raise_failure(texts, error, who):
    """The end of a run where ``who`` (fun or callback) failed on the ranks whose ``texts``
    are not None: RankError naming each (the failing rank's chained to its own exception); a
    rank whose own failure was not an ``Exception`` (KeyboardInterrupt, SystemExit) re-raises
    that one instead, so that an interrupt stays an interrupt where it happened."""
    msg = "; ".join(f"rank {r}: {t}" for r, t in enumerate(texts) if t is not None)
    if error is not None and not isinstance(error, Exception):
        raise error
    raise RankError(f"{who} failed on {msg}") from error


def _in_block_order(blocks):
    """Column sums of (nb x P) block partials, added in block order from 0.0: t = t + part[b]
    (``np.add.accumulate`` is that sequential recurrence; ``np.sum`` would pair them)."""
    if blocks.shape[0] == 0:
        return np.zeros(blocks.shape[1])
    return np.add.accumulate(np.vstack([np.zeros((1, blocks.shape[1])), blocks]), axis=0)[-1]


def _max_of(values):
    """The max of the ranks' max |.|: NaN if any is NaN (a max is exact in any order)."""
    values = np.asarray(values, np.float64)
    return math.nan if np.isnan(values).any() else float(values.max())


# --- data-parallel -----------------------------------------------------------------------------


#: Data-parallel: up to this many ranks the ranks' gradients are summed from one allgather
#: (one collective; each rank receives (N - 1) n numbers); beyond it by an ordered
#: reduce-scatter (alltoallv: rank j receives every rank's j-th segment and adds them in rank
#: order) and an allgatherv of the sums: two collectives, each rank receiving about 2 n
#: numbers whatever N. Both add in rank order: the same bits.
GATHER_MAX_RANKS = 4


class _SummedObjective:
    """``fun`` of the data-parallel mode: each rank's (f, g) sent with its status, then added
    in rank order (f in float64, g in x0's dtype) on every rank; see ``GATHER_MAX_RANKS``."""

    def __init__(self, fun, net, shape, dtype):
        self.fun, self.net, self.shape, self.dtype = fun, net, shape, np.dtype(dtype)
        self.n = int(np.prod(shape, dtype=np.int64))
        self.send = np.zeros(16 + self.n * self.dtype.itemsize, np.uint8)
        self.g = np.empty(self.n, self.dtype)
        self.fun_seconds = 0.0
        size, it = net.size, self.dtype.itemsize
        cuts = [self.n * j // size for j in range(size + 1)]  # segment j: [cuts[j], cuts[j+1])
        self.segments = list(zip(cuts[:-1], cuts[1:]))
        self.scatter = size > GATHER_MAX_RANKS
        if self.scatter:
            lens = [b - a for a, b in self.segments]
            self.sendcounts = [16 + ln * it for ln in lens]
            self.senddispls = np.concatenate([[0], np.cumsum(self.sendcounts)[:-1]]).tolist()
            self.sendbuf = np.zeros(sum(self.sendcounts), np.uint8)
            mine = 16 + lens[net.rank] * it
            self.recvbuf = np.zeros(size * mine, np.uint8)
            self.recvcount = mine
            self.gcounts = [ln * it for ln in lens]
            self.gdispls = [a * it for a, _ in self.segments]

    def __call__(self, x):
        head = self.send[:16].view(np.float64)
        g_part = self.send[16:].view(self.dtype)
        error = None
        t0 = self.net.MPI.Wtime()
        try:
            f, g = _pair(self.fun(x), "fun")
            head[1] = _real_scalar(f, "fun")
            _copy_gradient(g_part, g, self.shape, "fun (x0's shape)")
            head[0] = 0.0
        except BaseException as e:  # noqa: BLE001 -- sent to every rank at this collective, raised there
            error = e
            head[:] = (1.0, math.nan)
        self.fun_seconds += self.net.MPI.Wtime() - t0
        heads, pieces = self._scatter(g_part) if self.scatter else self._gather()
        self.net.fail_if_any(heads[:, 0], error)
        f = 0.0
        for r in range(self.net.size):  # rank order
            f = f + float(heads[r, 1])
        a, b = self.segments[self.net.rank] if self.scatter else (0, self.n)
        g = self.g[a:b]
        CoreVec.copy(g, pieces[0])
        for piece in pieces[1:]:
            CoreVec.axpby(g, 1.0, g, 1.0, piece)  # exactly g + g_r, in rank order
        if self.scatter:
            MPI = self.net.MPI
            mine = self.g[a:b].view(np.uint8).copy()
            self.net._timed(self.net.comm.Allgatherv, [mine, MPI.BYTE],
                            [self.g.view(np.uint8), (self.gcounts, self.gdispls), MPI.BYTE])
        return f, self.g.reshape(self.shape)

    def _gather(self):
        """One allgather: every rank's header and whole gradient."""
        rows = self.net.gather_rows(self.send)
        heads = rows[:, :16].copy().view(np.float64)
        return heads, [rows[r, 16:].view(self.dtype) for r in range(self.net.size)]

    def _scatter(self, g_part):
        """Alltoallv: every rank's header and its piece of this rank's segment."""
        it = self.dtype.itemsize
        for j, (a, b) in enumerate(self.segments):
            at = self.senddispls[j]
            self.sendbuf[at:at + 16] = self.send[:16]
            self.sendbuf[at + 16:at + 16 + (b - a) * it] = g_part[a:b].view(np.uint8)
        MPI = self.net.MPI
        self.net._timed(self.net.comm.Alltoallv,
                        [self.sendbuf, (self.sendcounts, self.senddispls), MPI.BYTE],
                        [self.recvbuf, self.recvcount, MPI.BYTE])
        rows = self.recvbuf.reshape(self.net.size, self.recvcount)
        heads = rows[:, :16].copy().view(np.float64)
        return heads, [rows[r, 16:].view(self.dtype) for r in range(self.net.size)]


# --- sharded: vector operations with gathered block partials -----------------------------------


class ShardVec:
    """The solver's vector operations on the rank's slices: elementwise work local
    (``CoreVec``), every dot from gathered block partials in block order, max |.| from the
    ranks' maxima; the direction in compact form (``compact_direction``: the one-process
    kernels' bits)."""

    empty = staticmethod(np.empty)
    copy = staticmethod(CoreVec.copy)
    scale = staticmethod(CoreVec.scale)
    axpby = staticmethod(CoreVec.axpby)

    def __init__(self, net):
        self.net = net

    def dots(self, pairs, head=(0.0,)):
        """The global dots of ``pairs`` [(a, b), ...] of local slices, in one collective;
        returns (heads, sums)."""
        parts = _core.block_dots([a for a, _ in pairs], [b for _, b in pairs])
        return self.net.gather_blocks(head, parts)

    def dot(self, a, b) -> float:
        return float(self.dots([(a, b)])[1][0])

    def amax(self, a) -> float:
        local = np.zeros((self.net.nb[self.net.rank], 0))
        heads, _ = self.net.gather_blocks([0.0, CoreVec.amax(a)], local)
        return _max_of(heads[:, 1])

    def sub_dots(self, out, a, b, c):
        """out = a - b (out may be a or b; exactly a - b); returns (c . out, out . out)."""
        CoreVec.axpby(out, 1.0, a, -1.0, b)
        s = self.dots([(c, out), (out, out)])[1]
        return float(s[0]), float(s[1])

    def pair_dots(self, xt, x, gt, g):
        """(s . y, y . y), s = xt - x, y = gt - g, over every rank (``sub_dots``'s bits)."""
        sv = np.subtract(xt, x)
        yv = np.subtract(gt, g)
        s = self.dots([(sv, yv), (yv, yv)])[1]
        return float(s[0]), float(s[1])

    def direction(self, out, grad, history) -> float:
        """``History.direction`` over the rank's slices (the compact form): the bits of the
        one-process direction on the whole vectors (``compact_direction``)."""
        return history.direction(out, grad, vec=self)

    def compact_direction(self, out, grad, s, y, sy, yy, head, count, gram_row) -> float:
        """``_core.lbfgs_compact_direction`` over the rank's slices, with its bits on the whole
        vectors, in two collectives: the first pass's per-block partials (S^T g, Y^T g and the
        newest pair's Gram column: 2 or 4 count sums) gathered and added in block order; the
        2m x 2m algebra (``lbfgs_compact_coefficients``, the kernel's own) on every rank on the
        same numbers; the second pass local, its partials of g . out gathered in the second."""
        parts = _core.lbfgs_compact_dots(s, y, grad, head, count, gram_row, True)
        dots = self.net.gather_blocks([0.0], parts)[1]
        if gram_row >= 0:  # as the kernel writes the new column
            m = sy.shape[0]
            rows = [(head + j) % m for j in range(count)]
            sy[rows, gram_row] = dots[2 * count:3 * count]
            yy[rows, gram_row] = dots[3 * count:4 * count]
            yy[gram_row, rows] = dots[3 * count:4 * count]
        cs, cy, gamma = _core.lbfgs_compact_coefficients(dots, sy, yy, head, count)
        part = _core.lbfgs_compact_combine(out, grad, s, y, head, count, cs, cy, gamma, True)
        return float(self.net.gather_blocks([0.0], part.reshape(-1, 1))[1][0])

    def gather(self, values):
        """Every rank's ``values`` (a few floats) as a (size x len) array, one collective."""
        local = np.zeros((self.net.nb[self.net.rank], 0))
        return self.net.gather_blocks([0.0] + list(values), local)[0][:, 1:]

    def any(self, flag) -> bool:
        """Whether ``flag`` holds on any rank."""
        return bool(self.gather([float(bool(flag))]).any())

    # --- L-BFGS-B (the products of ``CompactForm`` and ``lbfgsb``) ------------------------------

    rows_axpy = staticmethod(CoreVec.rows_axpy)
    fixed_set = staticmethod(CoreVec.fixed_set)     # elementwise: local indices of the slice

    def rows_dots_many(self, s, y, vs, rows, gram=None):
        """[s_j . v] + [y_j . v] for each v in ``vs``, one collective: the bits of
        ``_core.lbfgsb_rows_dots_many`` on the whole vectors (its dots are ``lbfgs_dot``'s).
        With gram = (parts, idx, row): the rank's Gram partials updated in that row (local,
        ``CoreVec.gram_blocks``: the bits of the one-process fused pass)."""
        if gram is not None:
            parts, idx, row = gram
            CoreVec.gram_blocks(parts, None, s, y, idx, rows, np.zeros(parts.shape[0], np.uint8),
                                row)
        pairs = [(a[j], v) for v in vs for a in (s, y) for j in range(rows)]
        return self.dots(pairs)[1] if pairs else np.zeros(0)

    def rows_dots(self, s, y, v, rows, w=None):
        return self.rows_dots_many(s, y, [v] if w is None else [v, w], rows)

    def subspace_direct_d(self, xbar, du, d, s, y, a, b, rows, xc, x, g, t, lo, hi, theta):
        """The local pass (``CoreVec.subspace_direct_d``, d = xbar - x written); g . d and the
        step to the box over every rank in one collective (the bits of one process: the dot's
        block partials added in block order, the minimum of the ranks' steps)."""
        _, tmax = CoreVec.subspace_direct_d(xbar, du, d, s, y, a, b, rows, xc, x, g, t, lo, hi,
                                            theta)
        heads, sums = self.net.gather_blocks([0.0, tmax], _core.block_dots([g], [d]))
        return float(sums[0]), float(heads[:, 1].min())

    def gram_blocks(self, parts, qparts, s, y, idx, rows, redo, row=-1, q=None):
        """``CoreVec.gram_blocks`` on the rank's blocks (idx: local indices, increasing), whose
        partials (the Gram matrices, and with q [S q] + [Y q], per block of x) are gathered and
        added in block order: the bits of the one-process kernel, which sums by the same blocks,
        on any number of ranks."""
        CoreVec.gram_blocks(parts, qparts, s, y, idx, rows, redo, row, q)
        m = s.shape[0]
        nb = parts.shape[0]
        mine = parts.reshape(nb, 3, m, m)[:, :, :rows, :rows].reshape(nb, -1)
        if q is not None:
            mine = np.hstack([mine, qparts[:, :rows], qparts[:, m:m + rows]])
        sums = self.net.gather_blocks([0.0], np.ascontiguousarray(mine))[1]
        kk = 3 * rows * rows
        gram = sums[:kk].reshape(3, rows, rows)
        return gram if q is None else (gram, sums[kk:])

    def cauchy_start_pg(self, d, t, x, g, lo, hi):
        """``CoreVec.cauchy_start_pg`` on the rank's slices; d . d, the projected-gradient norm
        and the count of moving variables without a breakpoint over every rank, one
        collective."""
        _, pg, open_ = CoreVec.cauchy_start_pg(d, t, x, g, lo, hi)
        heads, sums = self.net.gather_blocks([0.0, pg, float(open_)],
                                             _core.block_dots([d], [d]))
        return float(sums[0]), _max_of(heads[:, 1]), int(heads[:, 2].sum())

    def cauchy_path(self, xc, d, t, x, lo, hi, s, y, order, theta, mid, p, c, f1, f2, bounded,
                    scratch=None):
        """``sharded_cauchy_path`` (scratch, the one-process kernel's heap storage, unused)."""
        return sharded_cauchy_path(self, xc, d, t, x, lo, hi, s, y, order, theta, mid, p, c,
                                   f1, f2, bounded)


class _ShardedSolver(Solver):
    """``Solver`` (the iteration of one process) over the rank's slices: ``ShardVec`` for the
    vector work (the compact direction of ``History`` included), and each evaluation one collective
    (the ranks' f, max |g| and the block partials of g . d)."""

    def __init__(self, obj, x, m, line_search, maxls, net):
        super().__init__(obj, x, m, line_search, vec=ShardVec(net), maxls=maxls,
                         history=History(x.size, m, x.dtype))
        self.net = net
        self._gmax = {}        # id(g buffer) -> global max |g| of the point it holds

    def _point(self, x, g, d):
        """f (summed in rank order), max |g| and g . d (None: no d) at x, one collective."""
        status, f, error = self.obj.local(x, g)
        gmax = CoreVec.amax(g) if error is None else math.nan
        pairs = [(g, d)] if d is not None else []
        parts = _core.block_dots([a for a, _ in pairs], [b for _, b in pairs]) if pairs \
            else np.zeros((self.net.nb[self.net.rank], 0))
        heads, sums = self.net.gather_blocks([status, f, gmax], parts)
        self.net.fail_if_any(heads[:, 0], error)
        total = 0.0
        for r in range(self.net.size):
            total = total + float(heads[r, 1])
        self._gmax[id(g)] = _max_of(heads[:, 2])
        return total, (float(sums[0]) if d is not None else None)

    def evaluate_start(self):
        self.f, _ = self._point(self.x, self.g, None)
        if not math.isfinite(self.f):
            raise ValueError(f"fun(x0) returned f = {self.f}; the starting point must have a "
                             "finite value")
        if not math.isfinite(self._gmax[id(self.g)]):
            raise ValueError("fun(x0) returned a non-finite gradient")

    def gnorm_inf(self) -> float:
        return self._gmax[id(self.g)]

    projected_gradient_norm = gnorm_inf   # for lbfgsb.run: no bounds, the gradient itself

    def _evaluate(self, t, slot):
        xt, gt = self.slots[slot]
        self.vec.axpby(xt, 1.0, self.x, t, self.d)
        f, dg = self._point(xt, gt, self.d)
        return Point(t, f, dg if math.isfinite(f) else math.nan, slot)


# --- sharded L-BFGS-B ----------------------------------------------------------------------------

#: Breakpoints each rank offers in the first round of the sharded Cauchy path (doubled each
#: round after).
CAUCHY_BATCH = 256


def _next_batch(rem_i, rem_t, size):
    """Positions (into rem_i / rem_t) of the ``size`` smallest remaining candidates by
    (t, index), in that order; all of them when fewer remain."""
    if rem_t.size > size:
        tb = rem_t[np.argpartition(rem_t, size - 1)[size - 1]]
        pos = np.flatnonzero(rem_t <= tb)           # ties at tb: the smaller indices first
    else:
        pos = np.arange(rem_t.size)
    pos = pos[np.lexsort((rem_i[pos], rem_t[pos]))]
    return pos[:size]


def sharded_cauchy_path(vec, xc, d, t, x, lo, hi, s, y, order, theta, mid, p, c, f1, f2,
                        bounded):
    """The path of the generalized Cauchy point over the ranks' slices: the loop of
    ``_core.lbfgsb_cauchy_path`` (Byrd et al. 1995, Algorithm CP), with the same arithmetic
    in the same order, so the same bits as that kernel on the whole vector.

    The breakpoints must be taken in increasing (t, global index) order over all ranks. In
    rounds: each rank offers its next smallest breakpoints (``CAUCHY_BATCH``, doubled each
    round) with what the update needs (t, index, d_b, z_b and the row of W), in one
    collective; every rank merges the offers identically and processes them in order, but only
    up to the smallest last offer of a rank that has more (its next one could be smaller than
    the others' later ones); the rest is offered again next round. The loop ends where the
    one-process loop ends: the model's minimizer before the next breakpoint, or no breakpoint
    left anywhere. Then each rank sets its own slice of x^c."""
    net = vec.net
    bounded = not bool((vec.gather([0.0 if bounded else 1.0]) != 0).any())
    offset = sum(net.nb[:net.rank]) * BLOCK
    order = list(order)
    k, k2 = len(order), 2 * len(order)
    mid = np.asarray(mid, np.float64).reshape(k2, k2).tolist()
    p, c = list(p), list(c)
    cand = np.flatnonzero((t >= 0) & (t < np.inf) & (d != 0))
    rem_i, rem_t = cand, t[cand].astype(np.float64)
    hits = []
    f2_org = f2
    dtm, t_old = -f1 / f2, 0.0
    batch, done = int(CAUCHY_BATCH), False
    eps = float(np.finfo(np.float64).eps)
    while not done:
        pos = _next_batch(rem_i, rem_t, batch)
        b = rem_i[pos]
        db = d[b].astype(np.float64)
        zb = np.where(db > 0.0, hi[b].astype(np.float64), lo[b].astype(np.float64)) \
            - x[b].astype(np.float64)
        wb = np.concatenate([y[np.ix_(order, b)].astype(np.float64),
                             theta * s[np.ix_(order, b)].astype(np.float64)]).T \
            if k else np.zeros((b.size, 0))
        rec = np.column_stack([rem_t[pos], (b + offset).astype(np.float64), db, zb, wb])
        offers = net._timed(net.comm.allgather, (bool(pos.size == rem_t.size), rec))
        batch *= 2
        all_done = all(e for e, _ in offers)
        limit = min(((r[-1, 0], r[-1, 1]) for e, r in offers if not e and len(r)),
                    default=(math.inf, math.inf))
        merged = np.concatenate([r for _, r in offers])
        merged = merged[np.lexsort((merged[:, 1], merged[:, 0]))]
        used = 0            # this rank's offers processed (a prefix of its batch)
        stop = len(merged) == 0
        for j in range(len(merged)):
            tj, gi = float(merged[j, 0]), float(merged[j, 1])
            if (tj, gi) > limit:
                break
            dt = tj - t_old
            if dtm < dt:
                stop = True
                break
            bd, bz = float(merged[j, 2]), float(merged[j, 3])
            w = merged[j, 4:].tolist()
            if offset <= gi < offset + x.size:
                hits.append(int(gi) - offset)
                used += 1
            f1 = f1 + dt * f2 + bd * bd - theta * bd * bz
            f2 = f2 - theta * bd * bd
            if k2:
                v = [0.0] * k2
                for r in range(k2):
                    c[r] = c[r] + dt * p[r]
                    vr = 0.0
                    row = mid[r]
                    for q in range(k2):
                        vr = vr + row[q] * w[q]
                    v[r] = vr
                wmc = wmp = wmw = 0.0
                for r in range(k2):
                    wmc = wmc + c[r] * v[r]
                    wmp = wmp + p[r] * v[r]
                    wmw = wmw + w[r] * v[r]
                for r in range(k2):
                    p[r] = p[r] - bd * w[r]
                f1 = f1 + bd * wmc
                f2 = f2 + 2.0 * bd * wmp - bd * bd * wmw
            f2 = max(eps * f2_org, f2)
            t_old = tj
            empty = all_done and j == len(merged) - 1
            dtm = 0.0 if (empty and bounded) else -f1 / f2
            if empty:
                stop = True
        keep = np.ones(rem_t.size, bool)
        keep[pos[:used]] = False
        rem_i, rem_t = rem_i[keep], rem_t[keep]
        # not stopped: the limit was reached and a rank has more to offer
        done = stop
    dtm = max(dtm, 0.0)
    tsum = t_old + dtm
    ts = x.dtype.type(tsum)
    h = np.asarray(hits, np.int64)
    at = np.where(d[h] > 0, hi[h], lo[h])
    d[h] = 0
    t[h] = -1
    np.multiply(d, ts, out=xc)
    np.add(x, xc, out=xc)
    np.maximum(xc, lo, out=xc)
    np.minimum(xc, hi, out=xc)
    xc[h] = at
    for r in range(k2):
        c[r] = c[r] + dtm * p[r]
    return tsum, p, c


class ShardBox(Box):
    """The box over the rank's slice: projections local, ``constrained`` / ``boxed`` and the
    reductions (projected-gradient norm, step to the box) over every rank."""

    def __init__(self, lo, hi, vec):
        super().__init__(lo, hi)
        self.vec = vec
        flags = vec.gather([float(self.constrained), float(self.boxed)])
        self.constrained = bool(flags[:, 0].any())
        self.boxed = bool(flags[:, 1].all())
        # the arrays always: sharded_cauchy_path reads the bounds it passes by index
        self.kernel_lo, self.kernel_hi = self.lo, self.hi

    def projected_gradient_norm(self, x, g) -> float:
        return _max_of(self.vec.gather([super().projected_gradient_norm(x, g)])[:, 0])

    def max_step(self, x, d) -> float:
        steps = self.vec.gather([super().max_step(x, d)])[:, 0]
        return math.nan if np.isnan(steps).any() else float(steps.min())


class _ShardObjective:
    """``fun`` at the rank's slice: f summed over the ranks in rank order (one collective, the
    status of every rank with it), the gradient's slice written to ``g_out``."""

    def __init__(self, fun, shape, net):
        self.fun, self.shape, self.net = fun, shape, net
        self.nfev = 0
        self.fun_seconds = 0.0

    def local(self, x, g_out):
        """fun at the local slice x, nothing sent: (status, f_part, error)."""
        view = x.reshape(self.shape)
        view.flags.writeable = False
        t0 = self.net.MPI.Wtime()
        try:
            f, g = _pair(self.fun(view), "fun")
            f = _real_scalar(f, "fun")
            _copy_gradient(g_out, g, self.shape, "fun (x0's shape)")
            return 0.0, f, None
        except BaseException as e:  # noqa: BLE001 -- sent to every rank at the next collective, raised there
            return 1.0, math.nan, e
        finally:
            self.fun_seconds += self.net.MPI.Wtime() - t0
            self.nfev += 1

    def __call__(self, x, g_out):
        status, f, error = self.local(x, g_out)
        heads, _ = self.net.gather_blocks([status, f], np.zeros((self.net.nb[self.net.rank], 0)))
        self.net.fail_if_any(heads[:, 0], error)
        total = 0.0
        for r in range(self.net.size):
            total = total + float(heads[r, 1])
        return total


_MESSAGES = {"pgtol": (0, "CONVERGENCE: max |grad| <= gtol"),
             "ftol": _BOUNDED_MESSAGES["ftol"], "maxiter": _BOUNDED_MESSAGES["maxiter"],
             "maxfun": _BOUNDED_MESSAGES["maxfun"]}


def _run_sharded(fun, x0, box, net, m, maxiter, gtol, ftol, line_search, callback, maxfun,
                 maxls):
    """Sharded L-BFGS (box None) or L-BFGS-B, to the stopping rules of ``lbfgsb.run``."""
    obj = _ShardObjective(fun, x0.shape, net)
    if box is None:
        solver = _ShardedSolver(obj, x0.ravel().copy(), m, line_search, maxls, net)
        messages = _MESSAGES
    else:
        vec = ShardVec(net)
        box = ShardBox(box.lo, box.hi, vec)
        x = box.project(np.empty(x0.size, x0.dtype), x0.reshape(-1))
        solver = lbfgsb.BoundedSolver(obj, x, box, m, maxls, vec)
        messages = _BOUNDED_MESSAGES
        solver.unbounded_searches = 0   # Solver counts its own; here as _minimize_bounded
    solver.evaluate_start()
    f0 = solver.f
    unbounded = []

    def after(sv):
        """The callback, then the stop "unbounded below" (status 3) of one process: f and the
        line searches are the same on every rank, so every rank stops together."""
        if callback is not None:
            net.relay_callback(callback, sv.x.reshape(x0.shape).copy())
        if box is not None:
            sv.unbounded_searches = sv.unbounded_searches + 1 if sv._search.unbounded else 0
        why = _unbounded(sv, f0)
        if why is not None and sv.projected_gradient_norm() > gtol:  # the gradient test first
            unbounded.append(why)
            return True
        return False

    reason, failure = run_bounded(solver, maxiter, maxfun, gtol, ftol, after)
    if failure and box is None and solver.unbounded_searches:
        # as one process: x ran off so far that no step changes it any more (float32 soon)
        status, message = _UNBOUNDED[0], _UNBOUNDED[1].format(
            "a line search ran out of evaluations still extrapolating, then no step "
            "decreased f at the resolution of x", solver.f)
    elif failure:
        status, message = 2, "ABNORMAL: " + failure
    else:
        status, message = unbounded[-1] if reason == "callback" else messages[reason]
    skipped = solver.history.skipped if box is None else solver.skipped
    return OptimizeResult(
        x=solver.x.reshape(x0.shape).copy(), fun=solver.f,
        jac=solver.g.reshape(x0.shape).copy(), nit=solver.nit, nfev=obj.nfev, njev=obj.nfev,
        success=status == 0, status=status, message=message, skipped=skipped,
        comm_seconds=net.seconds, collectives=net.collectives, fun_seconds=obj.fun_seconds)


# --- the front door ----------------------------------------------------------------------------


def _compare(key, values):
    if key in ("n_local", "error"):
        return None
    if any(v != values[0] for v in values):
        ranks = [r for r, v in enumerate(values) if v != values[0]]
        return f"{key} differs: rank 0 has {values[0]!r}, rank {ranks[0]} has {values[ranks[0]]!r}"
    return None


def minimize(fun, x0, *, comm, shard=False, bounds=None, m=10, maxiter=15000, gtol=1e-5,
             ftol=FTOL, line_search="strong_wolfe", callback=None, maxfun=None, maxls=20):
    """``fusedopt.lbfgs.minimize`` with ``comm`` (see the module docstring and that function;
    every rank calls it with the same options).

    Data-parallel: returns the same result on every rank. Sharded: ``x0`` is the rank's slice
    ``x[local_slice(n, comm)]`` of the whole x, ``fun(x_r)`` returns (the rank's part of f, the
    gradient's slice); the result's ``x`` and ``jac`` are the rank's slices, ``fun`` the total.
    The result also has ``comm_seconds``, ``collectives`` and ``fun_seconds`` (this rank).
    The stopping rules are those of one process, "unbounded below" (status 3) included.

    ``callback(xk)`` runs on every rank (data-parallel: the whole x; sharded: the rank's
    slice), followed by one collective (only when a callback is given): an exception in it on
    any rank ends every rank with ``RankError`` naming that rank and its message, as one in
    ``fun`` does; a KeyboardInterrupt (any BaseException) is re-raised on its own rank and
    ends the others with RankError.
    """
    shard = _checks.flag("shard", shard)
    for name in ("Get_rank", "Get_size", "allgather", "Allgatherv"):
        if not hasattr(comm, name):
            raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
    net = _Net(comm)
    try:  # a bad argument on one rank is raised on every rank, at the first collective
        _checks.function("fun", fun)
        if shard and getattr(x0, "size", 1) == 0:
            raise ValueError(f"x0 is empty: shard=True needs at least one {BLOCK}-element "
                             "block per rank (local_slice gave this rank none)")
        x0 = _check_x0(x0)
        m, maxiter, gtol, ftol, line_search, maxfun, maxls = check_options(
            m, maxiter, gtol, ftol, line_search, callback, maxfun, maxls)
        box = None
        if bounds is not None:
            if line_search != "strong_wolfe":
                raise ValueError("line_search must be 'strong_wolfe' with bounds, got "
                                 f"{line_search!r}")
            from .bounds import parse_bounds
            box = parse_bounds(bounds, x0.shape, x0.dtype)
        error = None
    except (TypeError, ValueError) as e:
        error = e
    if error is not None:
        net.setup({"error": f"{type(error).__name__}: {error}"}, _compare, 0, error)
    sig = {"error": None, "shard": shard, "dtype": x0.dtype.str, "m": m, "maxiter": maxiter,
           "gtol": gtol, "ftol": ftol, "line_search": line_search, "maxfun": maxfun,
           "maxls": maxls, "bounds": bounds is not None,
           "callback": callback is not None}  # a callback adds a collective per iteration
    if shard:
        sig["n_local"] = x0.size
        sizes = [s["n_local"] for s in net.setup(sig, _compare, -(-x0.size // BLOCK))]
        n = int(sum(sizes))
        want = [local_slice(n, _FixedRank(r, net.size)) for r in range(net.size)]
        bad = [r for r in range(net.size) if want[r].stop - want[r].start != sizes[r]]
        if bad:
            r = bad[0]
            raise ValueError(f"x0 on rank {r} has {sizes[r]} elements; local_slice({n}, comm) "
                             f"gives that rank {want[r].stop - want[r].start} (slices on "
                             f"{BLOCK}-element blocks)")
        if min(sizes) == 0:
            raise ValueError(f"shard=True needs at least one {BLOCK}-element block per rank: "
                             f"n = {n} on {net.size} ranks")
        return _run_sharded(fun, x0, box, net, m, maxiter, gtol, ftol, line_search, callback,
                            maxfun, maxls)
    sig["shape"] = x0.shape
    sig["x0 (crc32)"] = zlib.crc32(np.ascontiguousarray(x0).view(np.uint8))
    if box is not None:
        sig["bounds (crc32)"] = (zlib.crc32(box.lo.view(np.uint8)),
                                 zlib.crc32(box.hi.view(np.uint8)))
    net.setup(sig, _compare, 0)
    summed = _SummedObjective(fun, net, x0.shape, x0.dtype)
    res = _one_process(summed, x0, bounds=bounds, m=m, maxiter=maxiter, gtol=gtol, ftol=ftol,
                      line_search=line_search,
                      callback=None if callback is None else
                      (lambda xk: net.relay_callback(callback, xk)),
                      maxfun=None if maxfun == math.inf else maxfun, maxls=maxls)
    res["comm_seconds"], res["collectives"] = net.seconds, net.collectives
    res["fun_seconds"] = summed.fun_seconds
    return res


class _FixedRank:
    """A stand-in communicator of a given rank and size (for ``local_slice`` of other ranks)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size
