"""L-BFGS benchmarks (pytest-benchmark): the direction (the fused two-loop, the compact form, the
NumPy reference, the read-bandwidth probe) and whole minimizations (fusedopt, SciPy L-BFGS-B, torch.optim.LBFGS).

    PYTHONPATH=python python -m pytest bench/bench_lbfgs.py --benchmark-only \\
        --benchmark-json=lbfgs.json

Each benchmark of one size shares a ``group``; ``extra_info`` carries n, m and ``bytes``, the
bytes of the bandwidth bound of one direction (two streams over the history,
``2 * 2 * m * n * itemsize``), or for a minimization its iterations, evaluations, final f and
the seconds spent inside the objective. The callables are those of ``fusedopt.benchmarks.lbfgs``
(the tables of ``python -m fusedopt bench``).

Sizes: the direction at n = 1e5 and 1e6, the minimizations at n = 1e4 and 1e5 by default (a few
seconds each); ``FUSEDOPT_BENCH_BIG=1`` adds the direction at 1e7 and the minimizations at 1e6
(1.6 GB of history at 1e7; minutes in all on 2 cores).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from fusedopt.benchmarks import lbfgs as bl
from fusedopt import _core, ops

BIG = os.environ.get("FUSEDOPT_BENCH_BIG", "") not in ("", "0")
big = pytest.mark.skipif(not BIG, reason="large size: set FUSEDOPT_BENCH_BIG=1")

DIRECTION_SIZES = [10**5, 10**6, pytest.param(10**7, marks=big)]
MINIMIZE_SIZES = [10**4, 10**5, pytest.param(10**6, marks=big)]
M = 10


def label(n):
    return f"1e{len(str(n)) - 1}"


@pytest.fixture(scope="module")
def cases():
    """One history per size, shared by the implementations (largest last: memory)."""
    store = {}

    def get(n):
        if n not in store:
            store.clear()
            store[n] = bl.direction_case(n, M)
        return store[n]

    return get


@pytest.mark.parametrize("impl", ["fused", "compact", "reference", "read probe"])
@pytest.mark.parametrize("n", DIRECTION_SIZES, ids=label)
def test_direction(benchmark, cases, n, impl):
    h, g, out = cases(n)
    benchmark.group = f"lbfgs direction n={label(n)}"
    benchmark.extra_info.update(impl=impl, n=n, m=M, itemsize=8, bytes=bl.history_bytes(h),
                                threads=_core.get_num_threads())
    if impl == "fused":
        benchmark.pedantic(ops.lbfgs_direction_, args=(out, g, h), rounds=10, warmup_rounds=1)
        np.testing.assert_allclose(out, bl.reference_direction(h, g), rtol=0,
                                   atol=1e-12 * np.abs(out).max())
    elif impl == "compact":
        # The solver's default: the compact form, the new pair's Gram column in the first pass.
        benchmark.pedantic(bl.compact_step(h, g, out), rounds=10, warmup_rounds=1)
        np.testing.assert_allclose(out, bl.reference_direction(h, g), rtol=0,
                                   atol=1e-11 * np.abs(out).max())
    elif impl == "reference":
        benchmark.pedantic(bl.reference_direction, args=(h, g), rounds=3, warmup_rounds=0)
    else:
        # Reads the two history arrays once: half the bytes of the bound.
        s, y = h.s.reshape(-1), h.y.reshape(-1)
        benchmark.extra_info["bytes"] = s.nbytes + y.nbytes
        benchmark.pedantic(_core.lbfgs_dot, args=(s, y), rounds=10, warmup_rounds=1)


SOLVERS = ["fusedopt", "scipy L-BFGS-B", "torch LBFGS"]


def _solve(benchmark, solver, objective, x0, maxiter, gtol, ftol):
    runners = bl.solvers()
    if solver not in runners:
        pytest.skip(f"{solver} is not installed")
    stats = {}

    def once():
        stats["r"] = bl.solve_timed(runners[solver], objective, x0, maxiter, gtol, ftol)

    benchmark.pedantic(once, rounds=1, iterations=1)
    wall, outside, f, nit, nfev = stats["r"]
    benchmark.extra_info.update(solver=solver, n=x0.size, nit=nit, nfev=nfev, f=f,
                                objective_s=wall - outside, outside_s=outside,
                                outside_ms_per_it=outside / max(nit, 1) * 1e3)
    return f, nit


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n", MINIMIZE_SIZES, ids=label)
def test_minimize_ext_rosenbrock(benchmark, n, solver):
    benchmark.group = f"lbfgs ext. Rosenbrock n={label(n)}"
    f, nit = _solve(benchmark, solver, bl.ext_rosenbrock_objective(n), bl.ext_rosenbrock_x0(n),
                    15000, 1e-5, 2.2e-9)
    assert f < 1e-6 and nit > 10


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n, iters", [(10**5, 100), pytest.param(10**6, 500, marks=big)],
                         ids=["1e5x100", "1e6x500"])
def test_fixed_iterations_chained_rosenbrock(benchmark, n, iters, solver):
    benchmark.group = f"lbfgs chained Rosenbrock n={label(n)} {iters} iterations"
    f, nit = _solve(benchmark, solver, bl.chained_rosenbrock, bl.ext_rosenbrock_x0(n), iters,
                    0.0, 0.0)
    assert nit == iters and np.isfinite(f)
