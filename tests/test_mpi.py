"""fusedopt.lbfgs.minimize on MPI (mpi4py): data-parallel and sharded, under ``mpiexec``.

Each rank count K in (1, 2, 3) is one ``mpiexec -n K`` run of tests/mpi_scripts/lbfgs_cases.py
(every case, about 10 s), and K = 4 one run of the cases about the rank count
(``FOUR_RANK_CASES``), whose ranks pickle what they saw; the tests here compare the ranks
with each other (bit for bit) and with one-process runs in this process:

* the sharded dots, max |.|, sub_dots, the compact direction, its g . d and its Gram matrices
  equal the one-process kernels (``_core.lbfgs_dot``, ``History.direction`` etc. on the whole
  vectors) bit for bit, on every K;
* data-parallel logistic regression: every rank's iterate identical; equal to the one-process
  run within the tolerance below (the ranks' f and g are added in rank order, which rounds
  differently from one sum over all samples); bit for bit where the sum is exact;
* sharded extended Rosenbrock: a run repeats bit for bit; equal to the 1-rank run and to the
  one-process two-loop L-BFGS within the tolerance below (f is summed in rank order);
* bounds: data-parallel and sharded L-BFGS-B reach the one-process solution and active set;
  the sharded generalized Cauchy point has the one-process kernel's bits; the sharded
  direction (Cauchy point and subspace step) the same bits on any number of ranks, the
  one-process solver's to rounding (the Gram over the fixed variables is summed by blocks of x);
* every rank holds the same iterate at every iteration (data-parallel), and a run repeats bit
  for bit at every iteration (data-parallel, sharded, sharded with bounds);
* a failing rank (fun or callback raising, KeyboardInterrupt included, fun returning a bad
  value), mismatched options / sizes / dtypes / bounds: every rank raises, none hangs; a NaN
  from one rank is no error and reaches every rank as in one process.

Skipped where mpi4py or ``mpiexec`` is absent.
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fusedopt
from fusedopt import _core
from fusedopt.lbfgs import local_slice, minimize
from fusedopt.lbfgs import mpi as lmpi
from fusedopt.lbfgs._vector import CoreVec

pytest.importorskip("mpi4py")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "mpi_scripts"))
import problems  # noqa: E402

# mpiexec of the MPI that mpi4py was built against: the one next to this Python (a venv with
# the mpi extra), else on PATH.
MPIEXEC = next((str(p) for p in [Path(sys.executable).parent / "mpiexec"] if p.exists()),
               shutil.which("mpiexec"))
if MPIEXEC is None:
    pytest.skip("mpiexec not found (pip install 'fusedopt[mpi]')", allow_module_level=True)

RANKS = (1, 2, 3, 4)
#: The cases of the 4-rank run (on 2 cores the 4 ranks are oversubscribed: only the cases whose
#: claims are about the rank count -- bits equal to one process, replicas, failures -- to keep
#: the MPI tests' time small; .ci/run runs them twice).
FOUR_RANK_CASES = ("direction", "cauchy", "bounded_direction", "iterates", "logreg_exact",
                   "rosen_exact", "rosen_bounds_bits",
                   "fail", "callback_fail", "fun_returns", "mismatch")
TIMEOUT = 300  # seconds for one mpiexec run of every case (about 10 s here)
PYTHON_DIR = Path(fusedopt.__file__).resolve().parents[1]  # the ranks import this fusedopt
#: Data-parallel vs one process: x to 1e-6 relative to max |x|, f to 1e-10 (float64); the
#: solutions agree to about gtol / (smallest Hessian eigenvalue) ~ 1e-4 for float32 at gtol 1e-3.
TOL = {"float64": dict(x=1e-6, f=1e-10), "float32": dict(x=2e-2, f=1e-4)}


@pytest.fixture(scope="module", params=RANKS, ids=[f"n{k}" for k in RANKS])
def ranks(request, tmp_path_factory):
    """{rank: results} of one mpiexec run of every case on K ranks."""
    k = request.param
    out = tmp_path_factory.mktemp(f"mpi{k}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PYTHON_DIR)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        OMP_NUM_THREADS="1", FUSEDOPT_NUM_THREADS="1")
    cmd = [MPIEXEC, "-n", str(k), sys.executable, str(HERE / "mpi_scripts" / "lbfgs_cases.py"),
           str(out), *(FOUR_RANK_CASES if k == 4 else ())]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    res = {}
    for r in range(k):
        with open(out / f"rank{r}.pkl", "rb") as f:
            res[r] = pickle.load(f)
    assert res[0]["size"] == k and res[0]["block"] == lmpi.BLOCK
    return res


def case(ranks, name):
    """The case's results of every rank (fails with the rank's traceback if it raised)."""
    if name not in ranks[0]:
        pytest.skip(f"case {name} is not in the {len(ranks)}-rank run (FOUR_RANK_CASES)")
    out = []
    for r, res in sorted(ranks.items()):
        got = res[name]
        if isinstance(got, dict) and "traceback" in got:
            pytest.fail(f"rank {r}, case {name}:\n{got['traceback']}")
        out.append(got)
    return out


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_replicas(results, keys=("x", "fun", "jac", "nit", "nfev", "status")):
    for r, got in enumerate(results[1:], 1):
        for k in keys:
            assert same_bits(got[k], results[0][k]), f"rank {r} differs from rank 0 in {k}"


# --- local_slice -------------------------------------------------------------------------------


_Comm = lmpi._FixedRank   # a communicator of a given rank and size, for local_slice


@pytest.mark.parametrize("n", [1, 16384, 16385, 5 * 16384 + 3, 10 ** 6 + 1])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_local_slice_tiles_on_blocks(n, size):
    sl = [local_slice(n, _Comm(r, size)) for r in range(size)]
    assert sl[0].start == 0 and sl[-1].stop == n
    for a, b in zip(sl, sl[1:]):
        assert a.stop == b.start
    for s in sl:
        assert s.start % lmpi.BLOCK == 0 and s.step is None
        assert s.stop == n or s.stop % lmpi.BLOCK == 0
    lens = [s.stop - s.start for s in sl]
    nb = [-(-x // lmpi.BLOCK) for x in lens]
    assert max(nb) - min(nb) <= 1
    assert local_slice(n, None) == slice(0, n)


def test_local_slice_and_minimize_refuse_bad_arguments():
    with pytest.raises(ValueError, match="n"):
        local_slice(-1, None)
    with pytest.raises(TypeError, match="comm"):
        minimize(problems.rosen, np.zeros(4), comm=object())
    with pytest.raises(ValueError, match="shard"):
        minimize(problems.rosen, np.zeros(4), shard=True)


# --- the sharded kernels against the one-process kernels ---------------------------------------


def _direction_reference(dt):
    """What lbfgs_cases.case_direction computes, in one process: ``History.direction`` (the
    ``_core`` compact-form kernel) on the whole vectors."""
    pairs, g = _make_pairs(dt)
    h = fusedopt.lbfgs.History(g.size, 4, dt)
    for s, y in pairs[:6]:
        h._store(s, y, _core.lbfgs_dot(s, y), _core.lbfgs_dot(y, y), CoreVec)
    d1 = np.empty_like(g)
    gd1 = h.direction(d1, g)
    s, y = pairs[6]
    h._store(s, y, _core.lbfgs_dot(s, y), _core.lbfgs_dot(y, y), CoreVec)
    d2 = np.empty_like(g)
    gd2 = h.direction(d2, g)
    return h, d1, gd1, d2, gd2, s, y, g


def _make_pairs(dt):
    rng = np.random.default_rng(3)
    n = 3 * lmpi.BLOCK + 777
    diag = 0.5 + rng.random(n)
    out = []
    for _ in range(7):
        s = rng.standard_normal(n)
        out.append((s.astype(dt), (diag * s + 0.01 * rng.standard_normal(n)).astype(dt)))
    return out, rng.standard_normal(n).astype(dt)


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_sharded_direction_and_dots_equal_one_process_kernels(ranks, dt):
    results = case(ranks, "direction")
    name = np.dtype(dt).name
    h, d1, gd1, d2, gd2, s, y, g = _direction_reference(dt)
    for r, res in enumerate(results):
        got = res[name]
        assert same_bits(np.concatenate(got["d1"]), d1), f"rank {r}: direction (ring wrapped)"
        assert same_bits(np.concatenate(got["d2"]), d2), f"rank {r}: direction (one more pair)"
        assert got["gd1"] == gd1 and got["gd2"] == gd2
        assert same_bits(got["sy"], h.sy) and same_bits(got["yy"], h.yy), f"rank {r}: Gram"
        assert got["dot"] == _core.lbfgs_dot(g, d2)
        assert got["amax"] == _core.lbfgs_amax(d2)
        a = np.empty_like(g)
        assert got["sub_dots"] == _core.lbfgs_sub_dots(a, g, s, y)
        assert same_bits(np.concatenate(got["sub"]), a)
    # The Gram matrices the direction used are those of the one-process kernel rows_dots.
    k = h.count
    rd = _core.lbfgsb_rows_dots(h.s, h.y, g, k)
    assert same_bits(rd[:k], np.array([_core.lbfgs_dot(h.s[j], g) for j in range(k)]))
    # And the compact form is the two-loop recursion's H (to rounding).
    hist = fusedopt.lbfgs.History(g.size, 4, dt)
    for j in [(h.head + i) % h.m for i in range(k)]:
        hist.push(h.s[j], h.y[j])
    ref = fusedopt.lbfgs.two_loop(g, hist)
    tol = 1e-10 if dt == np.float64 else 2e-4
    np.testing.assert_allclose(d2, ref, rtol=tol, atol=tol * np.abs(ref).max())


# --- data-parallel -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["float64", "float32"])
def test_data_parallel_logreg_matches_one_process(ranks, name):
    results = [c[name] for c in case(ranks, "logreg")]
    assert_replicas(results)
    dt = np.dtype(name)
    ref = minimize(problems.logreg_whole(dtype=dt), np.zeros(40, dt),
                   gtol=1e-6 if dt == np.float64 else 1e-3)
    got = results[0]
    assert got["status"] == 0 and ref.status == 0, (got["message"], ref.message)
    assert got["x"].dtype == dt
    tol = TOL[name]
    np.testing.assert_allclose(got["x"], ref.x, rtol=0, atol=tol["x"] * np.abs(ref.x).max())
    assert abs(got["fun"] - ref.fun) <= tol["f"] * abs(ref.fun)


@pytest.mark.parametrize("name", ["float64", "float32"])
def test_data_parallel_reduce_scatter_gives_the_allgather_bits(ranks, name):
    results = [c[name] for c in case(ranks, "logreg_scatter")]
    assert_replicas([r[0] for r in results])
    assert_replicas([r[1] for r in results])
    gathered, scattered = results[0]
    assert gathered["nit"] == 30
    for k in ("x", "fun", "jac", "nit", "nfev"):
        assert same_bits(gathered[k], scattered[k]), k


def test_data_parallel_exact_sums_give_the_one_process_bits(ranks):
    results = case(ranks, "logreg_exact")
    assert_replicas(results)
    ref = minimize(problems.logreg_whole(), np.zeros(40), gtol=1e-6)
    for k in ("x", "fun", "jac", "nit", "nfev"):
        assert same_bits(results[0][k], ref[k]), k


def test_data_parallel_bounds_match_one_process(ranks):
    results = case(ranks, "bounds")
    assert_replicas(results)
    ref = minimize(problems.logreg_whole(), np.full(40, 0.1), bounds=(0.0, 0.3), gtol=1e-8)
    got = results[0]
    assert got["status"] == 0 and ref.status == 0, (got["message"], ref.message)
    assert (got["x"] >= 0).all() and (got["x"] <= 0.3).all()
    assert ((got["x"] == 0) == (ref.x == 0)).all() and ((got["x"] == 0.3) == (ref.x == 0.3)).all()
    assert 0 < (ref.x == 0).sum() and 0 < (ref.x == 0.3).sum()   # both bounds active
    np.testing.assert_allclose(got["x"], ref.x, rtol=0, atol=1e-6)


# --- sharded -----------------------------------------------------------------------------------


def test_sharded_rosenbrock_repeats_and_matches_one_process(ranks):
    results = case(ranks, "rosen")
    n = 3 * lmpi.BLOCK + 1002
    for r, got in enumerate(results):
        a, b = got["runs"]
        assert all(same_bits(a[k], b[k]) for k in a if k != "message"), \
            f"rank {r}: a second run differs"
        assert got["slice"] == (local_slice(n, _Comm(r, len(results))).start,
                                local_slice(n, _Comm(r, len(results))).stop)
    runs = [got["runs"][0] for got in results]
    for k in ("fun", "nit", "nfev", "status"):   # the replicated scalars: identical
        assert all(same_bits(run[k], runs[0][k]) for run in runs), k
    x = np.concatenate([run["x"] for run in runs])
    assert runs[0]["status"] == 0, runs[0]["message"]
    ref = minimize(problems.rosen, problems.rosen_x0(n), gtol=1e-6, ftol=0.0)
    assert ref.status == 0
    # Both converge to x* = 1 (max |g| <= 1e-6): x within 1e-5 of each other.
    np.testing.assert_allclose(x, ref.x, rtol=0, atol=1e-5)
    np.testing.assert_allclose(x, 1.0, rtol=0, atol=1e-5)


def test_sharded_run_with_exact_sums_is_the_one_process_run(ranks):
    """Where the ranks' parts of f add exactly (case rosen_exact), the sharded run on any K is
    the one-process run bit for bit: x, f, g, iterations and evaluations (every reduction of
    fusedopt's own, the direction and g . d included, has the one-process bits)."""
    results = case(ranks, "rosen_exact")
    n = 3 * lmpi.BLOCK + 1002
    ref = minimize(problems.rosen, problems.rosen_x0(n), gtol=1e-6, ftol=0.0)
    assert ref.status == 0 and ref.nit > 20
    assert same_bits(np.concatenate([got["x"] for got in results]), ref.x)
    assert same_bits(np.concatenate([got["jac"] for got in results]), ref.jac)
    for got in results:
        assert (got["fun"], got["nit"], got["nfev"], got["status"]) == \
            (ref.fun, ref.nit, ref.nfev, ref.status)


def test_sharded_direction_takes_two_collectives(monkeypatch):
    """The sharded compact direction costs two collectives per iteration whatever m (the
    first pass's 2m or 4m block partials, then those of g . d), not 2m sequential ones; here
    on one rank (``MPI.COMM_SELF``, in this process)."""
    from mpi4py import MPI
    counts = []
    original = lmpi.ShardVec.compact_direction

    def counting(self, *args):
        before = self.net.collectives
        out = original(self, *args)
        counts.append(self.net.collectives - before)
        return out
    monkeypatch.setattr(lmpi.ShardVec, "compact_direction", counting)
    n = 3 * lmpi.BLOCK + 1002
    res = minimize(problems.rosen, problems.rosen_x0(n), comm=MPI.COMM_SELF, shard=True,
                   m=10, maxiter=15)
    assert res.nit == 15 and len(counts) == res.nit - 1     # the first step is steepest descent
    assert set(counts) == {2}


def test_sharded_cauchy_point_equals_one_process_kernel(ranks):
    """The Cauchy point merged across ranks (first offers of 3 breakpoints, then the default)
    has the bits of lbfgsb.cauchy_point on the whole vector (the kernel's heap)."""
    from fusedopt.lbfgs import lbfgsb
    from fusedopt.lbfgs.bounds import Box
    from fusedopt.lbfgs.compact import CompactForm
    results = case(ranks, "cauchy")
    n = 3 * lmpi.BLOCK + 777
    for dt in (np.float64, np.float32):
        x, g, lo, hi, pairs = problems.cauchy_case(n, dt)
        cf = CompactForm(n, 4, dt)
        for s, y in pairs:
            cf.push(s, y, _core.lbfgs_dot(s, y))
        xc, c, t = lbfgsb.cauchy_point(x, g, Box(lo, hi), cf)
        d0, t0 = np.empty_like(x), np.empty_like(x)
        CoreVec.cauchy_start_pg(d0, t0, x, g, lo, hi)
        passed = ((t == -1) & (t0 != -1)).sum()
        left = ((t >= 0) & (t < np.inf) & (d0 != 0)).sum()
        assert passed > 100 and left > 100, (passed, left)  # many breakpoints passed, not all
        for r, res in enumerate(results):
            for batch in (3, lmpi.CAUCHY_BATCH):
                got = res[(batch, np.dtype(dt).name)]
                where = f"rank {r}, {np.dtype(dt).name}, batch {batch}"
                assert same_bits(np.concatenate(got["xc"]), xc), where
                assert same_bits(np.concatenate(got["t"]), t), where
                assert same_bits(got["c"], c), where


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_sharded_bounded_direction_is_rank_count_independent(ranks, dt):
    """L-BFGS-B's direction (Cauchy point, subspace step, a pair pending) over K ranks has the
    bits of the same code on one rank (this process, ``MPI.COMM_SELF``), whatever K; its
    rows_dots_many has the one-process kernel's bits. It also has the bits of the one-process
    solver (issue 14): the Gram matrices and W^T q over the fixed variables, whose list crosses
    the rank boundaries, are summed by blocks of x in both (``CompactForm.gram_w_at``)."""
    from mpi4py import MPI

    import lbfgs_cases
    from fusedopt.lbfgs import lbfgsb
    from fusedopt.lbfgs.bounds import Box
    name = np.dtype(dt).name
    one_rank = lbfgs_cases.bounded_direction(MPI.COMM_SELF, dt)
    d1 = np.concatenate(one_rank["d"])
    for r, res in enumerate(case(ranks, "bounded_direction")):
        assert same_bits(np.concatenate(res[name]["d"]), d1), f"rank {r}: d"
        assert same_bits(res[name]["many"], one_rank["many"]), f"rank {r}: rows_dots_many"
    x, g, lo, hi, pairs = problems.cauchy_case(lbfgs_cases.DIR_N, dt)
    empty = (lo == -np.inf) & (hi == -np.inf)
    lo[empty] = hi[empty] = 0
    solver = lbfgsb.BoundedSolver(None, x.copy(), Box(lo, hi), 4)
    solver.g[:] = g
    for s, y in pairs:
        solver.cf.push(s, y, _core.lbfgs_dot(s, y))
    solver._direction()
    d, cf = solver.d, solver.cf
    assert same_bits(one_rank["many"], _core.lbfgsb_rows_dots_many(cf.s, cf.y, [g, x], 3))
    assert np.isfinite(d).all() and 1000 < (d == 0).sum() < d.size - 1000  # fixed and free
    assert ((d == 0) == (d1 == 0)).all()
    assert ((x + d == lo) == (x + d1 == lo)).all() and ((x + d == hi) == (x + d1 == hi)).all()
    tol = 1e-13 if dt == np.float64 else 1e-6
    np.testing.assert_allclose(d1, d, rtol=0, atol=tol * np.abs(d).max())
    assert same_bits(d1, d)


def test_sharded_bounds_rosenbrock_matches_one_process(ranks):
    results = case(ranks, "rosen_bounds")
    for k in ("fun", "nit", "nfev", "status"):
        assert all(same_bits(got[k], results[0][k]) for got in results), k
    n = 3 * lmpi.BLOCK + 1002
    lo, hi = problems.rosen_bounds(n)
    ref = minimize(problems.rosen, problems.rosen_x0(n), bounds=(lo, hi), gtol=1e-6)
    x = np.concatenate([got["x"] for got in results])
    assert results[0]["status"] == 0 and ref.status == 0, (results[0]["message"], ref.message)
    assert ((x == hi) == (ref.x == hi)).all() and ((x == lo) == (ref.x == lo)).all()
    assert (ref.x == hi).sum() >= n // 10
    np.testing.assert_allclose(x, ref.x, rtol=0, atol=1e-5)
    assert abs(results[0]["fun"] - ref.fun) <= 1e-8 * abs(ref.fun)


def test_sharded_unbounded_below_stops_with_status_3(ranks):
    """Sharded L-BFGS and L-BFGS-B (x <= 1) on f = sum(x) stop as one process does: status 3
    after the same iterations and evaluations, every rank alike."""
    results = case(ranks, "unbounded")
    n = 3 * lmpi.BLOCK + 777
    refs = {"free": minimize(problems.linear, np.zeros(n)),
            "upper": minimize(problems.linear, np.zeros(n), bounds=(-np.inf, 1.0))}
    for name, ref in refs.items():
        got = [res[name] for res in results]
        assert all(g == got[0] for g in got), name
        assert ref.status == 3 and ref.message.startswith("UNBOUNDED"), ref.message
        assert got[0]["status"] == 3, got[0]["message"]
        assert got[0]["message"].split(";")[0] == ref.message.split(";")[0]
        assert (got[0]["nit"], got[0]["nfev"]) == (ref.nit, ref.nfev), name
        assert got[0]["fun"] < -1e3


# --- failures ----------------------------------------------------------------------------------


def test_failing_rank_raises_on_every_rank(ranks):
    results = case(ranks, "fail")
    last = len(results) - 1
    for got in results:
        for mode in ("dp", "shard"):
            assert got[mode].startswith("RankError: fun failed on rank"), got[mode]
            assert f"rank {last}: ZeroDivisionError: boom on purpose" in got[mode]
        assert got["bad_return"].startswith("RankError"), got["bad_return"]
        assert "gradient of shape (3,)" in got["bad_return"]


def test_mismatched_ranks_are_detected_at_the_first_collective(ranks):
    results = case(ranks, "mismatch")
    last = len(results) - 1
    for r, got in enumerate(results):
        if len(results) == 1:
            assert all(got[k] == "no error" for k in ("m", "x0", "split", "shard_bounds")), got
            assert got["nan"] == "ValueError: x0 has non-finite values"
            continue
        assert "bounds differs" in got["shard_bounds"], got["shard_bounds"]
        if r == last:  # the rank whose argument is bad raises its own error
            assert got["nan"] == "ValueError: x0 has non-finite values"
        else:
            assert got["nan"] == (f"ValueError: fusedopt.lbfgs.minimize refused the arguments"
                                  f" of rank {last}: ValueError: x0 has non-finite values")
        assert "m differs" in got["m"], got["m"]
        assert "x0 (crc32) differs" in got["x0"], got["x0"]
        assert "shape differs" in got["n"], got["n"]
        assert "local_slice" in got["split"], got["split"]


def test_failing_callback_raises_on_every_rank(ranks):
    """A callback raising on the last rank (data-parallel / sharded, with and without bounds)
    ends every rank with RankError naming it, as a raising fun does; a KeyboardInterrupt there
    stays a KeyboardInterrupt on its rank and ends the others with RankError; the ranks stay in
    step for the next run."""
    results = case(ranks, "callback_fail")
    last = len(results) - 1
    for r, got in enumerate(results):
        for mode in ("dp", "dp_bounds", "shard", "shard_bounds"):
            assert got[mode] == (f"RankError: callback failed on rank {last}: ValueError: "
                                 "callback boom"), (r, mode, got[mode])
        if r == last:
            assert got["interrupt"] == "KeyboardInterrupt: ctrl-c", got["interrupt"]
        else:
            assert got["interrupt"] == (f"RankError: callback failed on rank {last}: "
                                        "KeyboardInterrupt: ctrl-c"), got["interrupt"]
        assert got["after"]["nit"] == 3 and got["after"]["status"] == 1
    assert_replicas([got["after"] for got in results])


def nan_reference():
    """The one-process run of case_fun_returns' ``nan``: the whole objective, f NaN at the
    third evaluation."""
    whole, calls = problems.logreg_whole(), [0]

    def fun(w):
        calls[0] += 1
        f, g = whole(w)
        return (f + np.nan if calls[0] == 3 else f), g
    return minimize(fun, np.zeros(40), gtol=1e-6)


def test_bad_return_values_end_every_rank(ranks):
    """fun returning an array for f, a complex gradient, or raising KeyboardInterrupt on the
    last rank ends every rank; a NaN f on one rank is summed into every rank's f, and the run
    is the one-process run with that NaN, bit for bit (the other sums are exact here)."""
    results = case(ranks, "fun_returns")
    last = len(results) - 1
    for r, got in enumerate(results):
        assert got["bad_f"].startswith(f"RankError: fun failed on rank {last}: ValueError: fun "
                                       "must return a real scalar"), got["bad_f"]
        assert got["bad_dtype"].startswith(f"RankError: fun failed on rank {last}: TypeError:"), \
            got["bad_dtype"]
        assert "dtype complex128" in got["bad_dtype"]
        want = ("KeyboardInterrupt: ctrl-c in fun" if r == last else
                f"RankError: fun failed on rank {last}: KeyboardInterrupt: ctrl-c in fun")
        assert got["interrupt"] == want, got["interrupt"]
    nans = [got["nan"] for got in results]
    assert_replicas(nans)
    ref = nan_reference()
    assert ref.nfev > 3 and ref.status == 0, ref.message    # the NaN was met and passed
    for k in ("x", "fun", "jac", "nit", "nfev", "status"):
        assert same_bits(nans[0][k], ref[k]), k


def test_every_rank_holds_the_same_iterate_and_runs_repeat(ranks):
    """Data-parallel: every rank's iterate has the same bits at every iteration. Data-parallel,
    sharded and sharded with bounds: a second run repeats the first at every iteration."""
    results = case(ranks, "iterates")
    for name in ("dp", "shard", "shard_bounds"):
        for r, got in enumerate(results):
            first, second = got[name]
            assert len(first["crc"]) == first["nit"] > 5, (name, first["nit"])
            assert first == second, f"rank {r}, {name}: a second run differs"
            assert got[name][0]["nit"] == results[0][name][0]["nit"]
            assert got[name][0]["fun"] == results[0][name][0]["fun"]
    for got in results:
        assert got["dp"][0]["crc"] == results[0]["dp"][0]["crc"]


def test_mismatched_dtypes_bounds_options_callback(ranks):
    results = case(ranks, "mismatch")
    for got in results:
        if len(results) == 1:
            assert all(got[k] == "no error" for k in ("dtype", "shard_dtype", "bounds_values",
                                                      "gtol", "callback")), got
            continue
        assert "dtype differs" in got["dtype"], got["dtype"]
        assert "dtype differs" in got["shard_dtype"], got["shard_dtype"]
        assert "bounds (crc32) differs" in got["bounds_values"], got["bounds_values"]
        assert "gtol differs" in got["gtol"], got["gtol"]
        assert "callback differs" in got["callback"], got["callback"]
        for k in ("dtype", "shard_dtype", "bounds_values", "gtol", "callback"):
            assert got[k].startswith("ValueError: fusedopt.lbfgs.minimize on MPI: the ranks "
                                     "disagree"), got[k]


def test_sharded_bounds_iterates_have_one_process_bits(ranks):
    """Issue 14: sharded L-BFGS-B on the bounded extended Rosenbrock (a fifth of the variables
    end at a bound, the fixed ones on every rank), with an f that does not depend on the split,
    gives the one-process run bit for bit: x, f, g, iterations, evaluations."""
    import lbfgs_cases
    results = case(ranks, "rosen_bounds_bits")
    n = lbfgs_cases.ROSEN_N
    lo, hi = problems.rosen_bounds(n)
    ref = minimize(problems.rosen, problems.rosen_x0(n), bounds=(lo, hi), gtol=1e-6)
    assert ref.status == 0 and (ref.x == hi).sum() >= n // 10
    for r, got in enumerate(results):
        assert same_bits(got["x"], ref.x[local_slice(n, _Comm(r, len(results)))]), f"rank {r}: x"
        assert same_bits(got["jac"], ref.jac[local_slice(n, _Comm(r, len(results)))]), f"rank {r}: g"
        for k in ("fun", "nit", "nfev", "status"):
            assert got[k] == getattr(ref, k), (r, k)
