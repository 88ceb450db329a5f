"""``OptimizeResult``: what every minimizer of fusedopt returns (``lbfgs.minimize``,
``newton.newton``, ``newton.preconditioned_gd``, ``sampling.multistart``).

Layer: algorithms (a plain container; imports nothing of fusedopt).
"""
from __future__ import annotations

import numpy as np

__all__ = ["OptimizeResult"]

#: Fields shown first by ``repr``, in SciPy's order; the others follow as inserted.
_FIRST = ("message", "success", "status", "fun", "x", "nit", "nfev", "njev")


def _short(value) -> str:
    """``repr`` of a field, with bulky values (iterate paths, lists of runs) summarized."""
    if isinstance(value, np.ndarray) and value.size > 10:
        return f"<array of shape {value.shape}, dtype {value.dtype}>"
    if isinstance(value, (list, tuple)) and len(value) > 3:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, OptimizeResult):
        return f"<OptimizeResult: fun={value.get('fun')!r}, success={value.get('success')!r}>"
    return repr(value)


class OptimizeResult(dict):
    """The result of a minimization, with SciPy's field names and behaviour: a dict whose keys
    are also attributes (``r.x``, ``r["x"]``), listed by ``dir`` and shown one per line by
    ``repr``.

    Fields (as ``scipy.optimize.OptimizeResult``): ``x`` the solution, ``fun`` its value,
    ``jac`` its gradient, ``nit`` iterations, ``nfev``/``njev`` evaluations, ``success``,
    ``status`` (a code; each minimizer documents its own), ``message``. A minimizer may add
    fields of its own (``path``, ``skipped``, ``results``...).

        >>> r = OptimizeResult(x=np.zeros(2), fun=0.0, success=True)
        >>> r.fun, r["success"]
        (0.0, True)
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

    def __repr__(self):
        if not self:
            return f"{type(self).__name__}()"
        keys = [k for k in _FIRST if k in self] + [k for k in self if k not in _FIRST]
        width = max(len(str(k)) for k in keys)
        return "\n".join(f"{str(k):>{width}}: {_short(self[k])}" for k in keys)

    def __dir__(self):
        return list(self.keys())

    def __reduce__(self):     # pickles as a dict of its class (the dict's own reduce would do)
        return type(self), (dict(self),)
