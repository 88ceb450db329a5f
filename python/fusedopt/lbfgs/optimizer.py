"""``LBFGS``: L-BFGS over a list of NumPy arrays, in the style of ``torch.optim.LBFGS``.

Layer: algorithms (the same solver as ``minimize``, over the params gathered into one vector).
"""
from __future__ import annotations

import numpy as np

from .. import _checks
from .history import History
from .line_search import check_line_search
from .solver import Solver, _copy_gradient, _pair, _real_scalar

__all__ = ["LBFGS"]


class _ParamsObjective:
    """The objective of LBFGS: writes a flat x into the params, calls the closure, gathers the
    gradients into a flat buffer."""

    def __init__(self, params, closure=None):
        self.params = params
        self.closure = closure
        self.offsets = np.cumsum([0] + [p.size for p in params])
        self.nfev = 0

    def gather(self, out):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            np.copyto(out[lo:hi], p.reshape(-1))

    def scatter(self, x):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            np.copyto(p.reshape(-1), x[lo:hi])

    def __call__(self, x, g_out):
        self.scatter(x)
        f, grads = _pair(self.closure(), "closure")
        self.nfev += 1
        f = _real_scalar(f, "closure")
        if not isinstance(grads, (list, tuple)):
            grads = [grads]
        if len(grads) != len(self.params):
            raise ValueError(f"closure returned {len(grads)} gradients for "
                             f"{len(self.params)} params")
        for i, (p, g, lo, hi) in enumerate(zip(self.params, grads, self.offsets[:-1],
                                               self.offsets[1:])):
            _copy_gradient(g_out[lo:hi], g, p.shape, f"closure (grads[{i}])")
        return f


class LBFGS:
    """L-BFGS over a list of NumPy arrays, in the style of ``torch.optim.LBFGS``.

        >>> opt = LBFGS([w, b], m=10, line_search="strong_wolfe")
        >>> def closure():
        ...     return loss(w, b), [grad_w(w, b), grad_b(w, b)]
        >>> for epoch in range(5):
        ...     opt.step(closure)                    # w, b updated in place

    Differences from torch: ``closure()`` returns ``(loss, grads)`` (NumPy arrays carry no
    ``.grad``), evaluated at the params as they are when it is called (each evaluation writes
    the trial point into them); ``m`` is torch's ``history_size`` (default 10 as in SciPy, not
    100); ``line_search`` is ``"strong_wolfe"`` or ``"armijo"`` (torch's ``None``, a fixed step,
    is not offered); there is no ``lr`` (the line search chooses the step). ``step`` runs up to
    ``max_iter`` iterations of the same solver as ``minimize`` and stops early when the largest
    gradient component is ``<= tolerance_grad`` or the loss changes by less than
    ``tolerance_change``. It returns the loss at the start of the step. The history is kept
    between steps. Params must share one dtype (float32 or float64).
    """

    def __init__(self, params, m=10, line_search="strong_wolfe", *, max_iter=20,
                 tolerance_grad=1e-7, tolerance_change=1e-9):
        if isinstance(params, np.ndarray):
            params = [params]
        elif isinstance(params, (list, tuple)):
            params = list(params)
        else:
            raise TypeError(f"params must be a list of numpy arrays, got {type(params).__name__}")
        if not params:
            raise ValueError("params is an empty list")
        _checks.check_lists([("params", params, True)])
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError(f"params must share one dtype, got {sorted(d.name for d in dtypes)}")
        self.params = params
        self.m = _checks.integer("m", m, minimum=1)
        self.line_search = check_line_search(line_search)
        self.max_iter = _checks.integer("max_iter", max_iter, minimum=1)
        self.tolerance_grad = _checks.nonneg("tolerance_grad", tolerance_grad)
        self.tolerance_change = _checks.nonneg("tolerance_change", tolerance_change)
        self._obj = _ParamsObjective(params)
        n = int(self._obj.offsets[-1])
        self._solver = Solver(self._obj, np.empty(n, params[0].dtype), self.m, self.line_search)

    @property
    def history(self) -> History:
        return self._solver.history

    @property
    def nfev(self) -> int:
        """Closure evaluations so far."""
        return self._obj.nfev

    @property
    def nit(self) -> int:
        """Iterations so far."""
        return self._solver.nit

    def step(self, closure):
        """Up to ``max_iter`` L-BFGS iterations; returns the loss at the start."""
        _checks.function("closure", closure)
        solver, obj = self._solver, self._obj
        obj.closure = closure
        obj.gather(solver.x)
        solver.evaluate_start()
        loss0 = solver.f
        try:
            for _ in range(self.max_iter):
                if solver.gnorm_inf() <= self.tolerance_grad:
                    break
                if solver.iterate() is not None:
                    break
                if abs(solver.f - solver.f_prev) < self.tolerance_change:
                    break
        finally:
            obj.scatter(solver.x)  # the last evaluation may have been a rejected trial point
        return loss0
