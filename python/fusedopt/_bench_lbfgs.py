"""L-BFGS benchmarks: the two-loop direction against the NumPy reference and a read-bandwidth
bound, and whole minimizations against SciPy's L-BFGS-B and torch.optim.LBFGS.

    python -c "from fusedopt import _bench_lbfgs; _bench_lbfgs.run(quick=True)"

``run(quick)`` prints the tables (``python -m fusedopt bench`` calls it); ``bench/bench_lbfgs.py``
times the same callables with pytest-benchmark.

The bound of one direction is two streams over the history, ``2 * 2 * m * n * itemsize`` bytes,
at the read bandwidth measured here by a float64 dot over two arrays as large as the history
(``_core.lbfgs_dot``, fixed blocks, OpenMP). The minimizations use one vectorized NumPy
objective for every solver; "outside f" is the wall time minus the time spent in the objective,
per iteration. SciPy's L-BFGS-B calls BLAS (OpenBLAS threads); fusedopt calls none.
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from . import _core, lbfgs, ops, reference

__all__ = ["run", "direction_case", "ext_rosenbrock", "ext_rosenbrock_x0", "chained_rosenbrock",
           "solvers", "timed_objective", "read_bandwidth"]


# ---------------------------------------------------------------------------------------------
# The two-loop


def direction_case(n, m=10, dtype=np.float64, seed=0):
    """A full, wrapped history of m pairs and a gradient: (history, grad, out)."""
    rng = np.random.default_rng(seed)
    h = lbfgs.History(n, m, dtype)
    for _ in range(m + 3):
        s = rng.standard_normal(n).astype(dtype)
        h.push(s, (1.5 * s + 0.01).astype(dtype))
    g = rng.standard_normal(n).astype(dtype)
    return h, g, np.empty(n, dtype)


def history_bytes(h) -> int:
    """Bytes of the bound: each of the 2m history rows read twice."""
    return 2 * 2 * h.m * h.n * h.dtype.itemsize


def reference_direction(h, g):
    pairs = h.pairs()
    return reference.lbfgs_direction(g, [p[0] for p in pairs], [p[1] for p in pairs])


def best_time(fn, reps, min_time=0.0):
    """Best of `reps` calls (more while the total is under min_time), after one warm-up."""
    fn()
    best, total, k = float("inf"), 0.0, 0
    while k < reps or total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, k = min(best, dt), total + dt, k + 1
        if k >= 10 * max(reps, 1):
            break
    return best


def read_bandwidth(h, reps=10) -> float:
    """Bytes/s of a float64-accumulating dot over the two history arrays (read only); the best
    of at least `reps` calls and 0.2 s, as one slow call on a shared machine is common."""
    s, y = h.s.reshape(-1), h.y.reshape(-1)
    t = best_time(lambda: _core.lbfgs_dot(s, y), max(reps, 10), min_time=0.2)
    return (s.nbytes + y.nbytes) / t


# ---------------------------------------------------------------------------------------------
# Objectives


def ext_rosenbrock(x):
    """Extended Rosenbrock (More, Garbow & Hillstrom 1981): n/2 independent pairs."""
    x1, x2 = x[0::2], x[1::2]
    t = x2 - x1 * x1
    u = 1.0 - x1
    g = np.empty_like(x)
    g[0::2] = -400.0 * t * x1 - 2.0 * u
    g[1::2] = 200.0 * t
    return float(np.sum(100.0 * t * t + u * u)), g


def ext_rosenbrock_x0(n, dtype=np.float64):
    x0 = np.empty(n, dtype)
    x0[0::2], x0[1::2] = -1.2, 1.0
    return x0


def chained_rosenbrock(x):
    """scipy.optimize.rosen and its gradient, written out (same formulas)."""
    a, b = x[:-1], x[1:]
    t = b - a * a
    f = float(np.sum(100.0 * t * t + (1.0 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] = -400.0 * t * a - 2.0 * (1.0 - a)
    g[1:] += 200.0 * t
    return f, g


class timed_objective:  # noqa: N801 -- used like a function
    """Wraps fun(x) -> (f, g), counting calls and the time spent inside."""

    def __init__(self, fun):
        self.fun, self.calls, self.seconds = fun, 0, 0.0

    def __call__(self, x):
        t0 = time.perf_counter()
        out = self.fun(x)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


# ---------------------------------------------------------------------------------------------
# Solvers: each returns (f, nit, nfev)


def run_fusedopt(fun, x0, maxiter, gtol, ftol, m=10):
    r = lbfgs.minimize(fun, x0, m=m, maxiter=maxiter, gtol=gtol, ftol=ftol)
    return r.fun, r.nit, r.nfev


def run_scipy(fun, x0, maxiter, gtol, ftol, m=10):
    from scipy.optimize import minimize  # noqa: PLC0415 -- optional

    r = minimize(fun, x0, jac=True, method="L-BFGS-B",
                 options={"maxcor": m, "maxiter": maxiter, "gtol": gtol, "ftol": ftol,
                          "maxfun": 100 * maxiter + 100})
    return float(r.fun), int(r.nit), int(r.nfev)


def run_torch(fun, x0, maxiter, gtol, ftol, m=10):
    import torch  # noqa: PLC0415 -- optional

    w = torch.from_numpy(x0.copy()).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=maxiter, max_eval=100 * maxiter + 100,
                            tolerance_grad=gtol, tolerance_change=ftol, history_size=m,
                            line_search_fn="strong_wolfe")
    last = [0.0]

    def closure():
        f, g = fun(w.detach().numpy())
        w.grad = torch.from_numpy(g)
        last[0] = f
        return torch.tensor(f, dtype=torch.float64)

    opt.step(closure)
    st = opt.state[w]
    return fun.fun(w.detach().numpy())[0], int(st["n_iter"]), int(st["func_evals"])


def solvers():
    """The solvers that can run here: name -> runner."""
    out = {"fusedopt": run_fusedopt}
    try:
        import scipy.optimize  # noqa: F401,PLC0415

        out["scipy L-BFGS-B"] = run_scipy
    except ImportError:
        pass
    try:
        import torch  # noqa: F401,PLC0415

        out["torch LBFGS"] = run_torch
    except ImportError:
        pass
    return out


def solve_timed(runner, objective, x0, maxiter, gtol, ftol):
    """(wall s, s outside the objective, f, nit, nfev)."""
    fun = timed_objective(objective)
    t0 = time.perf_counter()
    f, nit, nfev = runner(fun, x0, maxiter, gtol, ftol)
    wall = time.perf_counter() - t0
    return wall, wall - fun.seconds, f, nit, nfev


# ---------------------------------------------------------------------------------------------
# Tables


def _direction_table(sizes, reps):
    print("L-BFGS direction (two-loop, m=10, float64): bound = 2 streams over the history at "
          "the measured read bandwidth")
    print(f"{'n':>10} {'fused ms':>9} {'ref ms':>9} {'speedup':>8} {'GB/s':>7} "
          f"{'read GB/s':>10} {'bound ms':>9} {'of bound':>9}")
    for n in sizes:
        h, g, out = direction_case(n)
        t = best_time(lambda: ops.lbfgs_direction_(out, g, h), reps)
        tr = best_time(lambda: reference_direction(h, g), max(1, reps // 4))
        bw = read_bandwidth(h, reps)
        nbytes = history_bytes(h)
        print(f"{n:>10.0e} {t * 1e3:9.2f} {tr * 1e3:9.2f} {tr / t:7.1f}x {nbytes / t / 1e9:7.1f} "
              f"{bw / 1e9:10.1f} {nbytes / bw * 1e3:9.2f} {nbytes / bw / t:8.0%}")
        del h, g, out


def _warm_up():
    """One small run of each solver: torch's first call pays for its initialization."""
    for runner in solvers().values():
        runner(timed_objective(ext_rosenbrock), ext_rosenbrock_x0(100), 50, 1e-5, 2.2e-9)


def _minimize_table(title, objective, x0, maxiter, gtol, ftol):
    print(title)
    print(f"{'solver':>16} {'wall s':>8} {'outside f ms/it':>16} {'nit':>6} {'nfev':>6} "
          f"{'f':>12}")
    for name, runner in solvers().items():
        wall, outside, f, nit, nfev = solve_timed(runner, objective, x0, maxiter, gtol, ftol)
        print(f"{name:>16} {wall:8.3f} {outside / max(nit, 1) * 1e3:16.2f} {nit:6d} {nfev:6d} "
              f"{f:12.4e}")


@contextlib.contextmanager
def _same_threads(n):
    """Every solver on n threads: fusedopt's OpenMP, torch's intra-op pool and, where
    threadpoolctl is installed, the BLAS pools (SciPy's and NumPy's OpenBLAS)."""
    old = _core.get_num_threads()
    _core.set_num_threads(n)
    stack = contextlib.ExitStack()
    try:
        try:
            import torch  # noqa: PLC0415 -- optional

            told = torch.get_num_threads()
            torch.set_num_threads(n)
            stack.callback(torch.set_num_threads, told)
        except ImportError:
            pass
        try:
            from threadpoolctl import threadpool_limits  # noqa: PLC0415 -- optional

            stack.enter_context(threadpool_limits(n))
        except ImportError:
            pass
        yield
    finally:
        stack.close()
        _core.set_num_threads(old)


def _blas_note():
    try:
        import threadpoolctl  # noqa: F401,PLC0415

        return "BLAS pools limited by threadpoolctl"
    except ImportError:
        return "threadpoolctl not installed: BLAS pools at their defaults"


def run(quick: bool = False, threads: int | None = None, full: bool = False) -> None:
    """Print the direction and minimization tables (quick: smaller sizes, ~10 s on 2 cores;
    default ~35 s; full: the chained Rosenbrock for 500 iterations instead of 100, ~70 s).

    ``threads`` sets the thread count of every solver (fusedopt, torch, BLAS where threadpoolctl
    is installed); default: fusedopt's current count. On a machine shared with other work,
    ``threads=1`` avoids OpenMP barriers waiting for descheduled threads."""
    threads = _core.get_num_threads() if threads is None else int(threads)
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"L-BFGS benchmarks: {threads} thread(s) per solver, {os.cpu_count()} CPUs{load}; "
          f"{_blas_note()}")
    with _same_threads(threads):
        _run(quick, full)


def _run(quick, full):
    sizes = (10**5, 10**6) if quick else (10**5, 10**6, 10**7)
    _direction_table(sizes, reps=5)
    print()
    _warm_up()
    for n in ((10**4, 10**5) if quick else (10**4, 10**5, 10**6)):
        _minimize_table(f"Extended Rosenbrock n={n:.0e} from (-1.2, 1, ...), gtol=1e-5, "
                        "ftol=2.2e-9, m=10", ext_rosenbrock, ext_rosenbrock_x0(n), 15000, 1e-5,
                        2.2e-9)
        print()
    # Fixed iterations compare the cost per iteration; 100 show it as well as 500 (--full).
    n, iters = (10**5, 100) if quick else (10**6, 500 if full else 100)
    _minimize_table(f"Chained Rosenbrock (scipy.optimize.rosen) n={n:.0e}, {iters} fixed "
                    "iterations (gtol = ftol = 0)", chained_rosenbrock, ext_rosenbrock_x0(n),
                    iters, 0.0, 0.0)
