"""The MPI cases of tests/test_mpi.py, run under ``mpiexec -n K python lbfgs_cases.py OUTDIR``.

Layer: tests. Every rank runs every case and pickles what it saw to OUTDIR/rank<r>.pkl; the
test compares the ranks with each other and with the one-process runs. A case that raises an
unexpected exception records its traceback (the test reports it) and the run goes on.
"""
from __future__ import annotations

import pickle
import sys
import traceback
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
import problems  # noqa: E402

import fusedopt  # noqa: E402
from fusedopt import _core  # noqa: E402
from fusedopt.lbfgs import local_slice, minimize  # noqa: E402
from fusedopt.lbfgs import mpi as lmpi  # noqa: E402

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
ROSEN_N = 3 * problems.BLOCK + 1002     # 4 blocks, the last one short; even
DIR_N = 3 * problems.BLOCK + 777        # odd


def summary(res):
    return {k: res[k] for k in ("x", "fun", "jac", "nit", "nfev", "status", "message")}


def case_logreg():
    """Data-parallel logistic regression (float64 and float32)."""
    out = {}
    for dt in (np.float64, np.float32):
        fun = problems.logreg_part(rank, size, dtype=dt)
        res = minimize(fun, np.zeros(40, dt), comm=comm, gtol=1e-6 if dt == np.float64 else 1e-3)
        out[np.dtype(dt).name] = summary(res)
    return out


def case_logreg_scatter():
    """Data-parallel with the ordered reduce-scatter + allgather (forced on every rank count):
    the same bits as the allgather of case_logreg (float64 and float32; 41 features: segments
    of unequal lengths)."""
    out = {}
    saved = lmpi.GATHER_MAX_RANKS
    try:
        for dt in (np.float64, np.float32):
            runs = []
            for limit in (saved, 0):
                lmpi.GATHER_MAX_RANKS = limit
                fun = problems.logreg_part(rank, size, n_features=41, dtype=dt)
                runs.append(summary(minimize(fun, np.zeros(41, dt), comm=comm, maxiter=30)))
            out[np.dtype(dt).name] = runs
    finally:
        lmpi.GATHER_MAX_RANKS = saved
    return out


def case_logreg_exact():
    """Data-parallel where f and g do not depend on the split: rank 0 returns the whole
    objective and the others exact zeros (the sums are exact): the one-process bits."""
    whole = problems.logreg_whole()

    def fun(w):
        if rank == 0:
            return whole(w)
        return 0.0, np.zeros_like(w)
    return summary(minimize(fun, np.zeros(40), comm=comm, gtol=1e-6))


def case_bounds():
    """Data-parallel L-BFGS-B: 0 <= w <= 0.3."""
    fun = problems.logreg_part(rank, size)
    return summary(minimize(fun, np.full(40, 0.1), comm=comm, bounds=(0.0, 0.3), gtol=1e-8))


def case_rosen():
    """Sharded extended Rosenbrock, twice (a run repeats bit for bit)."""
    sl = local_slice(ROSEN_N, comm)

    def fun(x):
        return problems.rosen(x)
    runs = [summary(minimize(fun, problems.rosen_x0(ROSEN_N)[sl], comm=comm, shard=True,
                             gtol=1e-6, ftol=0.0)) for _ in range(2)]
    return {"slice": (sl.start, sl.stop), "runs": runs}


def case_rosen_exact():
    """Sharded extended Rosenbrock where the ranks' parts of f add exactly: rank 0 returns f of
    the whole x (gathered inside fun) and the others 0.0; each gradient slice is elementwise
    (no pair is split), hence the one-process bits. With the direction, its g . d and every
    dot the one-process bits too, the run must be the one-process run bit for bit."""
    sl = local_slice(ROSEN_N, comm)

    def fun(x):
        f, g = problems.rosen(np.concatenate(comm.allgather(np.array(x))))
        return (f if rank == 0 else 0.0), g[sl].copy()
    return summary(minimize(fun, problems.rosen_x0(ROSEN_N)[sl], comm=comm, shard=True,
                            gtol=1e-6, ftol=0.0))


def case_rosen_bounds():
    """Sharded L-BFGS-B: extended Rosenbrock with every fifth variable bounded by 0.9 above and
    all by -2 below (each rank gives the bounds of its slice)."""
    sl = local_slice(ROSEN_N, comm)
    lo, hi = problems.rosen_bounds(ROSEN_N)
    res = minimize(problems.rosen, problems.rosen_x0(ROSEN_N)[sl], comm=comm, shard=True,
                   bounds=(lo[sl], hi[sl]), gtol=1e-6)
    return summary(res)


def case_rosen_bounds_bits():
    """Sharded L-BFGS-B on problems.rosen_bounds with an objective whose f does not depend on
    the split (rank 0 returns f of the whole x, the others 0; g is elementwise): the iterates
    are those of one process bit for bit (the Gram matrices over the fixed variables, whose
    list crosses the rank boundaries, summed by blocks of x in both)."""
    sl = local_slice(ROSEN_N, comm)
    lo, hi = problems.rosen_bounds(ROSEN_N)

    def fun(x):
        f, g = problems.rosen(np.concatenate(comm.allgather(x)))
        return (f if rank == 0 else 0.0), g[sl]
    res = minimize(fun, problems.rosen_x0(ROSEN_N)[sl], comm=comm, shard=True,
                   bounds=(lo[sl], hi[sl]), gtol=1e-6)
    return summary(res)


def case_cauchy():
    """The sharded generalized Cauchy point against the one-process kernel (the test
    recomputes it): a box, a history of 3 pairs; first batch 3 and the default."""
    from fusedopt.lbfgs import lbfgsb
    from fusedopt.lbfgs.compact import CompactForm
    sl = local_slice(DIR_N, comm)
    out = {}
    for batch in (3, lmpi.CAUCHY_BATCH):
        saved, lmpi.CAUCHY_BATCH = lmpi.CAUCHY_BATCH, batch
        try:
            for dt in (np.float64, np.float32):
                x, g, lo, hi, pairs = problems.cauchy_case(DIR_N, dt)
                vec = lmpi.ShardVec(lmpi._Net(comm))
                vec.net.setup({}, lambda k, v: None, -(-(sl.stop - sl.start) // lmpi.BLOCK))
                cf = CompactForm(sl.stop - sl.start, 4, dt, vec)
                for s, y in pairs:
                    s, y = s[sl].copy(), y[sl].copy()
                    cf.push(s, y, vec.dot(s, y))
                box = lmpi.ShardBox(lo[sl].copy(), hi[sl].copy(), vec)
                xc, c, t = lbfgsb.cauchy_point(x[sl].copy(), g[sl].copy(), box, cf, vec)
                out[(batch, np.dtype(dt).name)] = {
                    "xc": comm.allgather(xc), "t": comm.allgather(t), "c": c}
        finally:
            lmpi.CAUCHY_BATCH = saved
    return out


def bounded_direction(comm, dt):
    """The direction d = xbar - x of ``lbfgsb.BoundedSolver`` (Cauchy point, then subspace
    step) over this rank's slice of problems.cauchy_case, with a pair still pending (its Gram
    row taken in the Cauchy pass, ``wt_dots``); also W^T [g, x] by ``rows_dots_many``. Shared
    with tests/test_mpi.py, which runs it in one process on ``MPI.COMM_SELF``."""
    from fusedopt.lbfgs import lbfgsb
    sl = local_slice(DIR_N, comm)
    x, g, lo, hi, pairs = problems.cauchy_case(DIR_N, dt)
    empty = lo == -np.inf                      # lo == hi == -inf: x (0) outside; fix it at 0
    empty &= hi == -np.inf
    lo[empty] = hi[empty] = 0
    vec = lmpi.ShardVec(lmpi._Net(comm))
    vec.net.setup({}, lambda k, v: None, -(-(sl.stop - sl.start) // lmpi.BLOCK))
    box = lmpi.ShardBox(lo[sl].copy(), hi[sl].copy(), vec)
    solver = lbfgsb.BoundedSolver(None, x[sl].copy(), box, 4, vec=vec)
    solver.g[:] = g[sl]
    for s, y in pairs:
        s, y = s[sl].copy(), y[sl].copy()
        solver.cf.push(s, y, vec.dot(s, y))
    solver._direction()
    cf = solver.cf
    many = vec.rows_dots_many(cf.s, cf.y, [solver.g, solver.x], cf.count)
    return {"d": comm.allgather(solver.d), "many": many}


def case_bounded_direction():
    """L-BFGS-B's sharded direction (``bounded_direction``), float64 and float32."""
    return {np.dtype(dt).name: bounded_direction(comm, dt) for dt in (np.float64, np.float32)}


def case_unbounded():
    """Sharded f = sum(x), unbounded below: without bounds and with x <= 1 (status 3)."""
    sl = local_slice(DIR_N, comm)
    x0 = np.zeros(sl.stop - sl.start)
    out = {}
    for name, bounds in (("free", None), ("upper", (np.full_like(x0, -np.inf), np.ones_like(x0)))):
        res = minimize(problems.linear, x0, comm=comm, shard=True, bounds=bounds)
        out[name] = {k: res[k] for k in ("fun", "nit", "nfev", "status", "message")}
    return out


def _pairs(n, count, dtype, seed):
    rng = np.random.default_rng(seed)
    diag = 0.5 + rng.random(n)
    out = []
    for _ in range(count):
        s = rng.standard_normal(n)
        out.append((s.astype(dtype), (diag * s + 0.01 * rng.standard_normal(n)).astype(dtype)))
    return out, rng.standard_normal(n).astype(dtype)


def case_direction():
    """The sharded dots and compact direction (``History.direction`` over ``ShardVec``)
    against the one-process kernels (the test recomputes them on the whole vectors): ring of
    m = 4 after 6 pairs, then one more pair."""
    from fusedopt.lbfgs import History
    sl = local_slice(DIR_N, comm)
    out = {}
    for dt in (np.float64, np.float32):
        pairs, g = _pairs(DIR_N, 7, dt, seed=3)
        vec = lmpi.ShardVec(lmpi._Net(comm))
        vec.net.setup({}, lambda k, v: None, -(-(sl.stop - sl.start) // lmpi.BLOCK))
        h = History(sl.stop - sl.start, 4, dt)
        for s, y in pairs[:6]:
            s, y = s[sl].copy(), y[sl].copy()
            h._store(s, y, vec.dot(s, y), vec.dot(y, y), vec)
        gl = g[sl].copy()
        d1 = np.empty_like(gl)
        gd1 = vec.direction(d1, gl, h)
        s, y = pairs[6][0][sl].copy(), pairs[6][1][sl].copy()
        h._store(s, y, vec.dot(s, y), vec.dot(y, y), vec)
        d2 = np.empty_like(gl)
        gd2 = vec.direction(d2, gl, h)
        a = gl.copy()
        dy = vec.sub_dots(a, gl, s, y)
        out[np.dtype(dt).name] = {
            "d1": comm.allgather(d1), "d2": comm.allgather(d2), "gd1": gd1, "gd2": gd2,
            "dot": vec.dot(gl, d2), "amax": vec.amax(d2), "sub_dots": dy,
            "sub": comm.allgather(a), "sy": h.sy.copy(), "yy": h.yy.copy()}
    return out


def _catch(run):
    try:
        run()
    except (lmpi.RankError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def case_fail():
    """fun raises on the last rank at its third evaluation: every rank raises RankError."""
    def make(base):
        calls = [0]

        def fun(x):
            calls[0] += 1
            if rank == size - 1 and calls[0] == 3:
                raise ZeroDivisionError("boom on purpose")
            return base(x)
        return fun
    dp = _catch(lambda: minimize(make(problems.logreg_part(rank, size)), np.zeros(40),
                                 comm=comm))
    sl = local_slice(ROSEN_N, comm)
    sh = _catch(lambda: minimize(make(problems.rosen), problems.rosen_x0(ROSEN_N)[sl],
                                 comm=comm, shard=True))
    bad = _catch(lambda: minimize(lambda x: (0.0, np.zeros(3 if rank == size - 1 else 40)),
                                  np.zeros(40), comm=comm))
    return {"dp": dp, "shard": sh, "bad_return": bad}


def case_mismatch():
    """Options, x0 and split sizes that differ between ranks: ValueError on every rank."""
    last = rank == size - 1
    fun = problems.logreg_part(rank, size)
    m = _catch(lambda: minimize(fun, np.zeros(40), comm=comm, m=7 if last else 10))
    x0 = _catch(lambda: minimize(fun, np.full(40, 0.5 if last else 0.0), comm=comm))
    n = _catch(lambda: minimize(fun, np.zeros(41 if last else 40), comm=comm))
    sl = local_slice(ROSEN_N, comm)
    x = problems.rosen_x0(ROSEN_N)[sl]
    # rank 0 short of its blocks: not the split local_slice gives (on one rank it is: n - 2)
    split = _catch(lambda: minimize(problems.rosen, x[:-2] if rank == 0 else x, comm=comm,
                                    shard=True, maxiter=2))
    sbounds = _catch(lambda: minimize(problems.rosen, x, comm=comm, shard=True, maxiter=2,
                                      bounds=(0.0, 1.0) if last else None))
    nan = _catch(lambda: minimize(fun, np.full(40, np.nan if last else 0.0), comm=comm))
    dtype = _catch(lambda: minimize(fun, np.zeros(40, np.float32 if last else np.float64),
                                    comm=comm))
    sdtype = _catch(lambda: minimize(problems.rosen, x.astype(np.float32) if last else x,
                                     comm=comm, shard=True, maxiter=2))
    bvals = _catch(lambda: minimize(fun, np.zeros(40), comm=comm,
                                    bounds=(-1.0, 0.5 if last else 1.0)))
    gtol = _catch(lambda: minimize(fun, np.zeros(40), comm=comm, gtol=1e-3 if last else 1e-5))
    cb = _catch(lambda: minimize(fun, np.zeros(40), comm=comm,
                                 callback=(lambda xk: None) if last else None))
    return {"m": m, "x0": x0, "n": n, "split": split, "shard_bounds": sbounds, "nan": nan,
            "dtype": dtype, "shard_dtype": sdtype, "bounds_values": bvals, "gtol": gtol,
            "callback": cb}


def _catch_any(run):
    """As _catch, for any exception or BaseException (KeyboardInterrupt)."""
    try:
        run()
    except BaseException as e:  # noqa: BLE001 -- what the rank saw is the result
        return f"{type(e).__name__}: {e}"
    return "no error"


def case_callback_fail():
    """callback raises on the last rank after its second iteration (data-parallel without and
    with bounds, sharded without and with bounds): every rank raises; a KeyboardInterrupt
    there ends its rank as itself and the others with RankError."""
    def make(exc):
        calls = [0]

        def callback(xk):
            calls[0] += 1
            if rank == size - 1 and calls[0] == 2:
                raise exc
        return callback
    fun = problems.logreg_part(rank, size)
    sl = local_slice(ROSEN_N, comm)
    x = problems.rosen_x0(ROSEN_N)[sl]
    lo, hi = problems.rosen_bounds(ROSEN_N)
    boom = ValueError("callback boom")
    return {
        "dp": _catch_any(lambda: minimize(fun, np.zeros(40), comm=comm,
                                          callback=make(boom))),
        "dp_bounds": _catch_any(lambda: minimize(fun, np.full(40, 0.1), comm=comm,
                                                 bounds=(0.0, 0.3), callback=make(boom))),
        "shard": _catch_any(lambda: minimize(problems.rosen, x, comm=comm, shard=True,
                                             callback=make(boom))),
        "shard_bounds": _catch_any(lambda: minimize(problems.rosen, x, comm=comm, shard=True,
                                                    bounds=(lo[sl], hi[sl]),
                                                    callback=make(boom))),
        "interrupt": _catch_any(lambda: minimize(fun, np.zeros(40), comm=comm,
                                                 callback=make(KeyboardInterrupt("ctrl-c")))),
        # and the runs go on afterwards: the communicator is left in step
        "after": summary(minimize(fun, np.zeros(40), comm=comm, maxiter=3)),
    }


def case_fun_returns():
    """fun on the last rank returns what one process refuses (f an array, a complex
    gradient) or raises KeyboardInterrupt: every rank ends. And a NaN: not an error; it
    reaches every rank in the sum (see test_mpi)."""
    last = rank == size - 1
    fun = problems.logreg_part(rank, size)
    sl = local_slice(ROSEN_N, comm)
    x = problems.rosen_x0(ROSEN_N)[sl]

    def bad_f(w):
        f, g = fun(w)
        return (np.array([f, f]) if last else f), g

    def bad_dtype(w):
        f, g = fun(w)
        return f, (g.astype(np.complex128) if last else g)

    def interrupt(xs):
        if last:
            raise KeyboardInterrupt("ctrl-c in fun")
        return problems.rosen(xs)
    whole = problems.logreg_whole()
    calls = [0]

    def nan_at_3(w):
        """logreg_exact's split (rank 0 the whole objective, the others exact zeros) with f
        NaN on the last rank at its third evaluation: every sum is exact, so the run is the
        one-process run of the whole objective with that NaN (test_mpi.nan_reference)."""
        calls[0] += 1
        f, g = whole(w) if rank == 0 else (0.0, np.zeros_like(w))
        return (f + np.nan if last and calls[0] == 3 else f), g
    return {"bad_f": _catch_any(lambda: minimize(bad_f, np.zeros(40), comm=comm)),
            "bad_dtype": _catch_any(lambda: minimize(bad_dtype, np.zeros(40), comm=comm)),
            "interrupt": _catch_any(lambda: minimize(interrupt, x, comm=comm, shard=True)),
            "nan": summary(minimize(nan_at_3, np.zeros(40), comm=comm, gtol=1e-6))}


def case_iterates():
    """Every iterate of every rank, as crc32 of its bytes (data-parallel: the whole x; sharded:
    the rank's slice), two runs each: the ranks agree at every iteration (data-parallel) and a
    run repeats bit for bit (both)."""
    import zlib

    def run(**kw):
        seen = []
        res = minimize(callback=lambda xk: seen.append(zlib.crc32(xk.tobytes())), comm=comm,
                       **kw)
        return {"crc": seen, "x": zlib.crc32(res.x.tobytes()), "nit": res.nit,
                "fun": res.fun}
    sl = local_slice(ROSEN_N, comm)
    lo, hi = problems.rosen_bounds(ROSEN_N)
    dp = dict(fun=problems.logreg_part(rank, size), x0=np.zeros(40), gtol=1e-6)
    sh = dict(fun=problems.rosen, x0=problems.rosen_x0(ROSEN_N)[sl], shard=True, maxiter=25)
    shb = dict(sh, bounds=(lo[sl], hi[sl]))
    return {name: [run(**kw), run(**kw)] for name, kw in (("dp", dp), ("shard", sh),
                                                          ("shard_bounds", shb))}


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}


def main():
    outdir = Path(sys.argv[1])
    only = sys.argv[2:] or list(CASES)
    results = {"size": size, "isa": fusedopt.isa(), "block": int(_core.reduce_block)}
    for name in only:
        try:
            results[name] = CASES[name]()
        except Exception:
            results[name] = {"traceback": traceback.format_exc()}
    with open(outdir / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(results, f)


if __name__ == "__main__":
    main()
