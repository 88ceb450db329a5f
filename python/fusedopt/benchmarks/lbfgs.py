"""Section ``lbfgs`` of ``python -m fusedopt bench``: the direction (the two-loop against the NumPy
reference, the compact form against the two-loop) against the read bandwidth, and whole
minimizations against SciPy's L-BFGS-B and
torch.optim.LBFGS (each where installed).

Layer: tools (SciPy, torch and threadpoolctl are imported only inside functions).

The bound of one direction is two streams over the history, ``2 * 2 * m * n * itemsize`` bytes,
at the read bandwidth measured, interleaved with the kernel, by a float64 dot over two arrays as
large as the history (``_core.lbfgs_dot``, fixed blocks, the worker pool). The kernels (two-loop,
compact form) and that probe are timed interleaved together; the NumPy reference in an
interleaving of its own, after them (timed among them, it slowed the kernels next to it). The
compact form reads the history twice plus g twice and writes the direction, (4m + 3) n items
against the bound's 4mn: at most 93% of the bound at m = 10. The minimizations use one
vectorized NumPy objective for every solver; the Extended Rosenbrock one (``ext_rosenbrock``)
writes its intermediates into work arrays reused from call to call and returns a fresh gradient,
as a large problem's user would write it (fresh temporaries cost more in page faults than in
arithmetic at n = 1e6). "outside f" is the wall time minus the time spent in the objective, per
iteration. SciPy's L-BFGS-B calls BLAS (OpenBLAS threads); fusedopt calls none.

By default the section fits the one-minute budget of ``python -m fusedopt bench`` on 2 cores:
directions at n = 1e5 and 1e6, Extended Rosenbrock at 1e4 and 1e5, the chained Rosenbrock at
1e5 for 100 iterations, the bound-constrained Extended Rosenbrock (L-BFGS-B: a fifth of the
variables end at an upper bound) at 1e4 and 1e5, and fusedopt's time per iteration on the
largest of them split into the phases of an L-BFGS-B iteration. ``--full`` adds the long cases (directions at
1e7, Extended Rosenbrock at 1e6, the chained Rosenbrock at 1e6 for 500 iterations, the bounded
problem at 1e6); ``--quick`` keeps the smallest.
``bench/bench_lbfgs.py`` times the same callables with pytest-benchmark.
"""
from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from .. import _core, ops, reference
from ..lbfgs import History, minimize
from .registry import Context
from .table import format_table
from .timing import Timer, stopwatch

__all__ = ["section", "run", "cases", "direction_case", "history_bytes", "reference_direction",
           "compact_step", "ext_rosenbrock", "ext_rosenbrock_objective", "ext_rosenbrock_x0",
           "chained_rosenbrock", "solvers",
           "timed_objective", "solve_timed", "ext_rosenbrock_bounds", "bounded_solvers",
           "bounded_phases"]


def cases(quick: bool = False, full: bool = False) -> dict:
    """The sizes of each table: ``direction`` (n), ``ext_rosenbrock`` (n) and ``chained``
    ((n, iterations))."""
    if quick:
        return dict(direction=(10**5,), ext_rosenbrock=(10**4,), chained=(10**4, 100),
                    bounded=(10**4,))
    if full:
        return dict(direction=(10**5, 10**6, 10**7), ext_rosenbrock=(10**4, 10**5, 10**6),
                    chained=(10**6, 500), bounded=(10**4, 10**5, 10**6))
    return dict(direction=(10**5, 10**6), ext_rosenbrock=(10**4, 10**5), chained=(10**5, 100),
                bounded=(10**4, 10**5))


# ---------------------------------------------------------------------------------------------
# The two-loop


def direction_case(n, m=10, dtype=np.float64, seed=0):
    """A full, wrapped history of m pairs and a gradient: (history, grad, out)."""
    rng = np.random.default_rng(seed)
    h = History(n, m, dtype)
    for _ in range(m + 3):
        s = rng.standard_normal(n).astype(dtype)
        h.push(s, (1.5 * s + 0.01).astype(dtype))
    g = rng.standard_normal(n).astype(dtype)
    return h, g, np.empty(n, dtype)


def history_bytes(h) -> int:
    """Bytes of the bound: each of the 2m history rows read twice."""
    return 2 * 2 * h.m * h.n * h.dtype.itemsize


def reference_direction(h, g):
    """The NumPy two-loop of ``fusedopt.reference`` over the history's pairs."""
    pairs = h.pairs()
    return reference.lbfgs_direction(g, [p[0] for p in pairs], [p[1] for p in pairs])


def compact_step(h, g, out):
    """The compact-form direction as the solver runs it: the newest pair's Gram column computed
    in the first pass (``History.direction`` with that column stale), the second pass writing
    out. Returns the callable."""
    newest = (h.head + h.count - 1) % h.m
    h.direction(out, g, method="compact")          # brings the Gram up to date once

    def step():
        return _core.lbfgs_compact_direction(out, g, h.s, h.y, h.sy, h.yy, h.head, h.count,
                                             newest)
    return step


def _direction_tables(sizes, timer):
    """Two tables from one interleaved run per size: the two-loop against the NumPy reference,
    and the compact form (the solver's default) next to the two-loop, each against the same-run
    read probe. The reference is timed after the kernels and the probe, not among them: its
    BLAS calls leave OpenBLAS's threads spinning, which slowed the kernels timed next to them
    (the compact direction at 1e6: 13.9 ms interleaved with it, 10.1 ms without, on the 2-core
    VM)."""
    rows, crows = [], []
    for n in sizes:
        h, g, out = direction_case(n)
        s, y = h.s.reshape(-1), h.y.reshape(-1)
        compact = compact_step(h, g, np.empty_like(out))
        t = timer({"fused": lambda: ops.lbfgs_direction_(out, g, h),
                   "compact": compact,
                   "read": lambda: _core.lbfgs_dot(s, y)})
        t.update(timer({"reference": lambda: reference_direction(h, g)}))
        nbytes, bw = history_bytes(h), (s.nbytes + y.nbytes) / t["read"]
        bound = nbytes / bw
        rows.append([f"{n:.0e}", f"{t['fused'] * 1e3:.2f}", f"{t['reference'] * 1e3:.2f}",
                     f"{t['reference'] / t['fused']:.1f}x", f"{nbytes / t['fused'] / 1e9:.1f}",
                     f"{bw / 1e9:.1f}", f"{bound * 1e3:.2f}",
                     f"{bound / t['fused']:.0%}"])
        crows.append([f"{n:.0e}", f"{t['compact'] * 1e3:.2f}", f"{t['fused'] * 1e3:.2f}",
                      f"{t['fused'] / t['compact']:.2f}x", f"{bw / 1e9:.1f}",
                      f"{bound * 1e3:.2f}", f"{bound / t['compact']:.0%}",
                      f"{bound / t['fused']:.0%}"])
        del h, g, out, s, y, compact
    bound_note = ("bound = 2 streams over the history at the read bandwidth measured in the same"
                  " run (kernels and read interleaved; the reference timed apart)")
    title = ("lbfgs direction: the two-loop, m=10, float64, fused vs fusedopt.reference; "
             + bound_note)
    ctitle = ("lbfgs direction, compact form (the solver's default: 2 passes, the new Gram column"
              " in the first) vs the two-loop, m=10, float64; " + bound_note)
    return [(title, format_table(["n", "fused ms", "reference ms", "speed-up", "GB/s",
                                  "read GB/s", "bound ms", "of bound"], rows)),
            (ctitle, format_table(["n", "compact ms", "two-loop ms", "speed-up", "read GB/s",
                                   "bound ms", "compact of bound", "two-loop of bound"], crows))]


# ---------------------------------------------------------------------------------------------
# Objectives


def ext_rosenbrock(x, work=None):
    """Extended Rosenbrock (More, Garbow & Hillstrom 1981): n/2 independent pairs; (f, g).

    With x1 = x[0::2], x2 = x[1::2], t = x2 - x1 x1, u = 1 - x1: f = sum(100 t t + u u),
    g[0::2] = -400 t x1 - 2 u, g[1::2] = 200 t. Written as a large problem's user would: every
    intermediate goes into ``work`` (four rows of n/2, reused from call to call: see
    ``ext_rosenbrock_objective``; fresh ones when None), and only the gradient is a new array
    per call (SciPy's L-BFGS-B keeps a reference to the previous one). The operations are those
    of the plain NumPy expressions, in the same order, so the bits are theirs; at n = 1e6 the
    expressions' dozen fresh temporaries of n/2 cost more in page faults than in arithmetic."""
    x1, x2 = x[0::2], x[1::2]
    t, u, a, c = np.empty((4, x1.size), x.dtype) if work is None else work
    np.subtract(x2, np.multiply(x1, x1, out=t), out=t)
    np.subtract(1.0, x1, out=u)
    g = np.empty_like(x)
    np.subtract(np.multiply(np.multiply(t, -400.0, out=a), x1, out=a),
                np.multiply(u, 2.0, out=c), out=g[0::2])
    np.multiply(t, 200.0, out=g[1::2])
    np.add(np.multiply(np.multiply(t, 100.0, out=a), t, out=a), np.multiply(u, u, out=c), out=a)
    return float(np.sum(a)), g


def ext_rosenbrock_objective(n, dtype=np.float64):
    """``ext_rosenbrock`` bound to work arrays of its own for x of size n: the objective of the
    Extended Rosenbrock tables."""
    return functools.partial(ext_rosenbrock, work=np.empty((4, n // 2), dtype))


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


def ext_rosenbrock_bounds(n, dtype=np.float64):
    """(lo, hi) for the bound-constrained Extended Rosenbrock: every fifth variable at most 0.5
    (each ends at that bound: the unconstrained minimizer is all ones), the others free."""
    lo = np.full(n, -np.inf, dtype)
    hi = np.full(n, np.inf, dtype)
    hi[::5] = 0.5
    return lo, hi


#: How the Extended Rosenbrock tables' objective is written (their titles say it).
_OBJECTIVE_NOTE = "objective: NumPy ufuncs into reused work arrays, a fresh g per call"


class timed_objective:  # noqa: N801 -- used like a function
    """Wraps fun(x) -> (f, g), counting calls and the time spent inside."""

    def __init__(self, fun):
        self.fun, self.calls, self.seconds = fun, 0, 0.0

    def __call__(self, x):
        t0 = stopwatch()
        out = self.fun(x)
        self.seconds += stopwatch() - t0
        self.calls += 1
        return out


# ---------------------------------------------------------------------------------------------
# Solvers: each returns (f, nit, nfev)


def run_fusedopt(fun, x0, maxiter, gtol, ftol, m=10):
    r = minimize(fun, x0, m=m, maxiter=maxiter, gtol=gtol, ftol=ftol)
    return r.fun, r.nit, r.nfev


def run_scipy(fun, x0, maxiter, gtol, ftol, m=10):
    from scipy.optimize import minimize as scipy_minimize  # noqa: PLC0415 -- optional

    r = scipy_minimize(fun, x0, jac=True, method="L-BFGS-B",
                       options={"maxcor": m, "maxiter": maxiter, "gtol": gtol, "ftol": ftol,
                                "maxfun": 100 * maxiter + 100})
    return float(r.fun), int(r.nit), int(r.nfev)


def run_torch(fun, x0, maxiter, gtol, ftol, m=10):
    import torch  # noqa: PLC0415 -- optional

    w = torch.from_numpy(x0.copy()).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=maxiter, max_eval=100 * maxiter + 100,
                            tolerance_grad=gtol, tolerance_change=ftol, history_size=m,
                            line_search_fn="strong_wolfe")

    def closure():
        f, g = fun(w.detach().numpy())
        w.grad = torch.from_numpy(g)
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


def run_fusedopt_bounded(fun, x0, bounds, maxiter, gtol, ftol, m=10):
    r = minimize(fun, x0, bounds=bounds, m=m, maxiter=maxiter, gtol=gtol, ftol=ftol)
    return r.fun, r.nit, r.nfev


def run_scipy_bounded(fun, x0, bounds, maxiter, gtol, ftol, m=10):
    from scipy.optimize import Bounds  # noqa: PLC0415 -- optional
    from scipy.optimize import minimize as scipy_minimize  # noqa: PLC0415 -- optional

    r = scipy_minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=Bounds(*bounds),
                       options={"maxcor": m, "maxiter": maxiter, "gtol": gtol, "ftol": ftol,
                                "maxfun": 100 * maxiter + 100})
    return float(r.fun), int(r.nit), int(r.nfev)


def bounded_solvers():
    """The bound-constrained solvers that can run here (torch's LBFGS has no bounds)."""
    out = {"fusedopt L-BFGS-B": run_fusedopt_bounded}
    try:
        import scipy.optimize  # noqa: F401,PLC0415

        out["scipy L-BFGS-B"] = run_scipy_bounded
    except ImportError:
        pass
    return out


def _bounded_table(n):
    rows = []
    x0, bounds = ext_rosenbrock_x0(n), ext_rosenbrock_bounds(n)
    for name, runner in bounded_solvers().items():
        wall, outside, f, nit, nfev = solve_timed(
            lambda fun, x, *a: runner(fun, x, bounds, *a), ext_rosenbrock_objective(n), x0,
            15000, 1e-5, 2.2e-9)
        rows.append([name, f"{wall:.3f}", f"{outside / max(nit, 1) * 1e3:.2f}", nit, nfev,
                     f"{f:.4e}"])
    title = (f"lbfgs bound-constrained Extended Rosenbrock n={n:.0e} (x_i <= 0.5 for every fifth"
             f" i), gtol=1e-5, ftol=2.2e-9, m=10; {_OBJECTIVE_NOTE}")
    return title, format_table(["solver", "wall s", "outside f ms/it", "nit", "nfev", "f"], rows)


#: The phases of an L-BFGS-B iteration that ``bounded_phases`` times: (label, owner, name).
_PHASES = [("history pass 1: W^T d + new pair's Gram", "compact", "wt_dots"),
           ("Cauchy start (d, breakpoints) + projected-gradient test", "vec", "cauchy_start_pg"),
           ("Cauchy path (breakpoints passed, x^c + fixed set and q)", "vec", "cauchy_path"),
           ("fixed set and q at x^c (where the path did not run)", "vec", "fixed_set"),
           ("Gram over the fixed set (formk) + W_A^T q", "compact", "gram_w_at"),
           ("history pass 2: subspace step (d, step to the box)", "compact",
            "subspace_direct_d"),
           ("trial points x + t d in the box", "vec", "step_in_box"),
           ("gradient copied + line search's g . d", "vec", "copy_dot"),
           ("new pair: s . y, y . y", "vec", "pair_dots"),
           ("new pair stored", "compact", "push_difference")]


@contextlib.contextmanager
def _phase_timers(seconds):
    """Wraps the methods of ``_PHASES`` so that each adds its time to ``seconds[label]``;
    restores them on exit."""
    from ..lbfgs._vector import CoreVec  # noqa: PLC0415
    from ..lbfgs.compact import CompactForm  # noqa: PLC0415

    owners = {"compact": CompactForm, "vec": CoreVec}
    saved = []
    for label, owner, name in _PHASES:
        cls = owners[owner]
        raw = cls.__dict__[name]
        fn = raw.__func__ if isinstance(raw, staticmethod) else raw

        def timed(*a, _fn=fn, _label=label, **k):
            t0 = stopwatch()
            try:
                return _fn(*a, **k)
            finally:
                seconds[_label] = seconds.get(_label, 0.0) + stopwatch() - t0
        setattr(cls, name, staticmethod(timed) if isinstance(raw, staticmethod) else timed)
        saved.append((cls, name, raw))
    try:
        yield seconds
    finally:
        for cls, name, raw in saved:
            setattr(cls, name, raw)


def bounded_phases(n):
    """(title, table): fusedopt's L-BFGS-B on the bounded Extended Rosenbrock at n, its time
    per iteration split into the phases of an iteration (the objective, the passes over the
    history, the Cauchy point, the Gram matrices over the fixed set, the rest: line search
    updates, the projected-gradient test, the 2k x 2k algebra, Python)."""
    x0, bounds = ext_rosenbrock_x0(n), ext_rosenbrock_bounds(n)
    with _phase_timers({}) as seconds:
        wall, outside, f, nit, nfev = solve_timed(
            lambda fun, x, *a: run_fusedopt_bounded(fun, x, bounds, *a),
            ext_rosenbrock_objective(n), x0, 15000, 1e-5, 2.2e-9)
    it = max(nit, 1)
    rows = [["objective (f and g)", f"{(wall - outside) / it * 1e3:.2f}"]]
    rows += [[label, f"{seconds.get(label, 0.0) / it * 1e3:.2f}"] for label, _, _ in _PHASES]
    rest = outside - sum(seconds.values())
    rows += [["the rest (line search, tests, small algebra)", f"{rest / it * 1e3:.2f}"],
             ["total outside f", f"{outside / it * 1e3:.2f}"]]
    title = (f"lbfgs fusedopt L-BFGS-B per phase, bounded Extended Rosenbrock n={n:.0e}: "
             f"{nit} iterations, {nfev} evaluations, wall {wall:.3f} s (the timers add a "
             "little)")
    return title, format_table(["phase", "ms/it"], rows)


def solve_timed(runner, objective, x0, maxiter, gtol, ftol):
    """(wall s, s outside the objective, f, nit, nfev)."""
    fun = timed_objective(objective)
    t0 = stopwatch()
    f, nit, nfev = runner(fun, x0, maxiter, gtol, ftol)
    wall = stopwatch() - t0
    return wall, wall - fun.seconds, f, nit, nfev


def _warm_up():
    """One small run of each solver: torch's first call pays for its initialization."""
    for runner in solvers().values():
        runner(timed_objective(ext_rosenbrock), ext_rosenbrock_x0(100), 50, 1e-5, 2.2e-9)


def _minimize_table(title, objective, x0, maxiter, gtol, ftol):
    rows = []
    for name, runner in solvers().items():
        wall, outside, f, nit, nfev = solve_timed(runner, objective, x0, maxiter, gtol, ftol)
        rows.append([name, f"{wall:.3f}", f"{outside / max(nit, 1) * 1e3:.2f}", nit, nfev,
                     f"{f:.4e}"])
    return title, format_table(["solver", "wall s", "outside f ms/it", "nit", "nfev", "f"], rows)


# ---------------------------------------------------------------------------------------------
# The section


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


def run(quick: bool = False, full: bool = False, threads: int | None = None,
        timer: Timer | None = None) -> list:
    """The direction and minimization tables as text blocks (title, then table).

    ``threads`` sets the thread count of every solver (fusedopt, torch, BLAS where threadpoolctl
    is installed); default: fusedopt's current count. On a machine shared with other work,
    ``threads=1`` avoids OpenMP barriers waiting for descheduled threads."""
    threads = _core.get_num_threads() if threads is None else int(threads)
    timer = Timer(0.1 if quick else 0.3) if timer is None else timer
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    note = (f"lbfgs: {threads} thread(s) per solver, {os.cpu_count()} CPUs{load}; "
            f"{_blas_note()}" + ("" if full else "; --full adds the long cases"))
    size = cases(quick, full)
    blocks = [note]
    with _same_threads(threads):
        for title, table in _direction_tables(size["direction"], timer):
            blocks.append(f"{title}\n{table}")
        _warm_up()
        for n in size["ext_rosenbrock"]:
            title, table = _minimize_table(
                f"lbfgs Extended Rosenbrock n={n:.0e} from (-1.2, 1, ...), gtol=1e-5, "
                f"ftol=2.2e-9, m=10; {_OBJECTIVE_NOTE}", ext_rosenbrock_objective(n),
                ext_rosenbrock_x0(n), 15000, 1e-5, 2.2e-9)
            blocks.append(f"{title}\n{table}")
        # Fixed iterations compare the cost per iteration.
        n, iters = size["chained"]
        title, table = _minimize_table(
            f"lbfgs Chained Rosenbrock (scipy.optimize.rosen) n={n:.0e}, {iters} fixed "
            "iterations (gtol = ftol = 0)", chained_rosenbrock, ext_rosenbrock_x0(n), iters,
            0.0, 0.0)
        blocks.append(f"{title}\n{table}")
        for n in size["bounded"]:
            title, table = _bounded_table(n)
            blocks.append(f"{title}\n{table}")
        title, table = bounded_phases(size["bounded"][-1])
        blocks.append(f"{title}\n{table}")
    return blocks


def section(ctx: Context):
    """``python -m fusedopt bench``'s hook: the blocks of ``run`` with the run's options."""
    return run(quick=ctx.quick, full=ctx.full, timer=ctx.timer)
