"""Limited-memory BFGS: a history ring buffer, the fused two-loop recursion and a minimizer.

Layer: algorithms (its vector operations run in the kernels: ``ops`` and ``_core``).

    >>> import numpy as np
    >>> from fusedopt import lbfgs
    >>> def fun(x):
    ...     return float(x @ x), 2 * x
    >>> res = lbfgs.minimize(fun, np.ones(5))
    >>> res.success, bool(abs(res.x).max() < 1e-5)
    (True, True)

One concept per module:

* ``history``: ``History``, the last m curvature pairs in a ring buffer shared with the kernels,
  and ``two_loop``, the direction ``-H g`` by the fused kernel;
* ``line_search``: strong Wolfe (Nocedal & Wright Alg. 3.5/3.6) and backtracking Armijo;
* ``solver``: one L-BFGS iteration (``Solver``) and ``minimize`` (SciPy's L-BFGS-B stopping
  rules and result fields);
* ``optimizer``: ``LBFGS``, the same solver over a list of params, torch-style;
* ``result``: ``OptimizeResult``, the result of every minimizer of fusedopt;
* ``_vector``: the solver's vector operations, each one call into ``_core``.
"""
from __future__ import annotations

from .history import History, two_loop
from .optimizer import LBFGS
from .result import OptimizeResult
from .solver import minimize

__all__ = ["History", "two_loop", "minimize", "OptimizeResult", "LBFGS"]
