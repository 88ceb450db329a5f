"""Limited-memory BFGS: a history ring buffer, the fused two-loop recursion and a minimizer,
with bounds (L-BFGS-B).

Layer: algorithms (its vector operations run in the kernels: ``ops`` and ``_core``).

    >>> import numpy as np
    >>> from fusedopt import lbfgs
    >>> def fun(x):
    ...     return float(x @ x), 2 * x
    >>> res = lbfgs.minimize(fun, np.ones(5))
    >>> res.success, bool(abs(res.x).max() < 1e-5)
    (True, True)
    >>> res = lbfgs.minimize(lambda x: (float((x - 2) @ (x - 2)), 2 * (x - 2)), np.zeros(3),
    ...                      bounds=[(None, 1.0)] * 3)
    >>> res.x.tolist()
    [1.0, 1.0, 1.0]

One concept per module:

* ``history``: ``History``, the last m curvature pairs in a ring buffer shared with the kernels,
  and ``two_loop``, the direction ``-H g`` by the fused kernel;
* ``line_search``: strong Wolfe (Nocedal & Wright Alg. 3.5/3.6) and backtracking Armijo;
* ``solver``: one L-BFGS iteration (``Solver``) and ``minimize`` (SciPy's L-BFGS-B stopping
  rules and result fields; ``bounds=`` runs L-BFGS-B);
* ``bounds``: the forms of bounds SciPy accepts, checked, as a ``Box``;
* ``compact``: ``CompactForm``, the limited-memory matrix B = theta I - W M W^T of L-BFGS-B;
* ``lbfgsb``: one L-BFGS-B iteration (``BoundedSolver``: generalized Cauchy point, subspace
  minimization, a line search kept in the box) and its stopping rules (``run``);
* ``mpi``: ``minimize(..., comm=)`` on MPI, data-parallel or sharded, and ``local_slice``;
* ``optimizer``: ``LBFGS``, the same solver over a list of params, torch-style;
* ``result``: ``OptimizeResult``, the result of every minimizer of fusedopt;
* ``_vector``: the solver's vector operations, each one call into ``_core``.
* ``_device``: the same operations and the history on CuPy arrays (the CUDA kernels of
  ``fusedopt._cuda``), for ``minimize`` with a CuPy x0.
"""
from __future__ import annotations

from .history import History, two_loop
from .mpi import local_slice
from .optimizer import LBFGS
from .result import OptimizeResult
from .solver import minimize

__all__ = ["History", "two_loop", "minimize", "OptimizeResult", "LBFGS", "local_slice"]
