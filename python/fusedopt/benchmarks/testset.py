"""Section ``testset`` of ``python -m fusedopt bench`` (run when named: ``--rules testset``): the
stopping rules of ``fusedopt.lbfgs.minimize`` on the Moré-Garbow-Hillstrom test set
(``fusedopt.testset``), against SciPy's L-BFGS-B and torch.optim.LBFGS (each where installed).

Layer: tools (SciPy and torch are imported only inside functions).

Every solver starts from the paper's x0 with its own defaults (memory 10), except the iteration
limits, set to 15000 for all (torch's ``max_iter`` is 20 per ``step`` by default; here one
``step`` with ``max_iter=15000``, ``line_search_fn="strong_wolfe"``, float64). One column runs
fusedopt with SciPy's ``ftol = 2.2e-9``, to separate the effect of the default from that of the
solver. A cell is "evaluations" when the run solved the problem (``fusedopt.testset.solved``:
f within 1e-8 * max(1, |f_min|) of a known minimum) and "-" with the evaluations and the final
max |grad| otherwise. The last rows count the problems solved, the evaluations over all
problems, and the evaluations over the problems every solver solved.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import testset
from ..lbfgs import minimize
from .registry import Context
from .table import format_table

__all__ = ["section", "run", "solvers", "SCIPY_FTOL"]

#: SciPy's default ``ftol`` (``factr = 1e7`` times float64's epsilon).
SCIPY_FTOL = 2.2204460492503131e-09
MAXITER = 15000


def _fusedopt(problem, **kw):
    r = minimize(problem, problem.x0.copy(), maxiter=MAXITER, **kw)
    return r.fun, r.nfev, float(np.abs(r.jac).max())


def _scipy(problem):
    from scipy.optimize import minimize as scipy_minimize  # noqa: PLC0415 -- optional

    r = scipy_minimize(problem, problem.x0.copy(), jac=True, method="L-BFGS-B",
                       options={"maxiter": MAXITER})
    return r.fun, r.nfev, float(np.abs(r.jac).max())


def _torch(problem):
    import torch  # noqa: PLC0415 -- optional

    x = torch.tensor(problem.x0.copy(), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=MAXITER, history_size=10,
                            line_search_fn="strong_wolfe")
    calls = [0]
    last = {}

    def closure():
        calls[0] += 1
        f, g = problem(x.detach().numpy())
        x.grad = torch.from_numpy(np.array(g))
        last["g"] = g
        return torch.tensor(f, dtype=torch.float64)

    opt.step(closure)
    xf = x.detach().numpy()
    return problem.value(xf), calls[0], float(np.abs(problem.gradient(xf)).max())


def solvers(with_scipy=True, with_torch=True) -> dict:
    """label -> run(problem) -> (f, evaluations, final max |grad|)."""
    out = {"fusedopt": _fusedopt,
           "fusedopt ftol=2.2e-9": lambda p: _fusedopt(p, ftol=SCIPY_FTOL)}
    if with_scipy:
        out["scipy L-BFGS-B"] = _scipy
    if with_torch:
        out["torch LBFGS"] = _torch
    return out


def _available(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def run(with_scipy=None, with_torch=None, problems=None) -> list:
    """The section's text blocks: one table, a row per problem, a column per solver."""
    with_scipy = _available("scipy") if with_scipy is None else with_scipy
    with_torch = _available("torch") if with_torch is None else with_torch
    runs = solvers(with_scipy, with_torch)
    problems = testset.problems() if problems is None else problems
    results = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")     # overflow on wild trial points is expected
        for p in problems:
            for label, solve in runs.items():
                f, nfev, gmax = solve(p)
                results[p.name, label] = (testset.solved(p, f), nfev, gmax)
    rows = []
    for p in problems:
        row = [p.name, p.number, p.n]
        for label in runs:
            ok, nfev, gmax = results[p.name, label]
            row.append(str(nfev) if ok else f"- ({nfev}, |g| {gmax:.0e})")
        rows.append(row)
    every = [p for p in problems if all(results[p.name, lab][0] for lab in runs)]
    rows.append(["solved", "", ""] + [
        f"{sum(results[p.name, lab][0] for p in problems)} / {len(problems)}" for lab in runs])
    rows.append(["evaluations, all problems", "", ""] + [
        str(sum(results[p.name, lab][1] for p in problems)) for lab in runs])
    rows.append([f"evaluations, the {len(every)} solved by all", "", ""] + [
        str(sum(results[p.name, lab][1] for p in every)) for lab in runs])
    title = ("testset: Moré, Garbow & Hillstrom (1981) from their x0; evaluations to stop, "
             "'-' = not solved (f not within 1e-8 max(1, |f*|) of a known minimum)")
    return [title + "\n" + format_table(["problem", "MGH #", "n", *runs], rows)]


def section(ctx: Context):
    """``python -m fusedopt bench``'s hook."""
    return run(with_torch=ctx.with_torch and _available("torch"))
