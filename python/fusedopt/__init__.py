"""fusedopt: fused, bit-exact optimizer kernels for NumPy (C++/OpenMP) and CuPy (CUDA).

Layer: package (the front door): re-exports the public modules and a few functions;
``dir(fusedopt)`` lists exactly ``__all__``.

    >>> import numpy as np, fusedopt
    >>> w = np.zeros(1000, np.float32)
    >>> opt = fusedopt.optim.Adam([w], lr=1e-2)
    >>> opt.step([2 * (w - 1)])                      # w updated in place

Modules: ``ops`` (in-place multi-tensor kernels), ``optim`` (optimizer classes), ``reference``
(the NumPy ground truth), ``schedules`` (learning-rate schedules), ``lbfgs`` (the fused two-loop
recursion and an L-BFGS minimizer); loaded on first use: ``functions`` (test functions),
``init`` (weight initializers), ``sampling`` (Latin hypercube, multistart), ``newton``
(second-order references), ``natural`` (natural gradient), ``optimize`` (a drop-in for
``scipy.optimize.minimize(method="L-BFGS-B")``), ``demo`` (the demonstrations),
``benchmarks`` (the benchmark behind ``python -m fusedopt bench``), ``testset`` (the
Moré-Garbow-Hillstrom test problems).
"""
from __future__ import annotations

import importlib as _importlib
import os as _os

from . import _core, lbfgs, ops, optim, reference, schedules
from ._core import (get_num_threads, get_pool_spin, get_threading, set_num_threads,
                    set_pool_spin, set_threading)
from .ops import clip_by_global_norm_, global_norm, num_threads

__version__ = "0.1.0"

_LAZY = ("functions", "init", "sampling", "newton", "natural", "optimize", "demo",
         "benchmarks", "testset")

__all__ = ["ops", "optim", "reference", "schedules", "lbfgs", *_LAZY, "global_norm",
           "clip_by_global_norm_",
           "get_num_threads", "set_num_threads", "num_threads", "get_pool_spin", "set_pool_spin",
           "get_threading", "set_threading",
           "isa", "__version__"]


def _pool_spin_from_the_environment() -> None:
    """FUSEDOPT_POOL_SPIN_US (microseconds, 0..1000000): the pool's idle spin (set_pool_spin)."""
    value = _os.environ.get("FUSEDOPT_POOL_SPIN_US")
    if value is None:
        return
    try:
        set_pool_spin(int(value) if value.isdecimal() else -1)
    except ValueError:
        raise ValueError("FUSEDOPT_POOL_SPIN_US must be an integer 0..1000000 (microseconds), "
                         f"got {value!r}") from None


_pool_spin_from_the_environment()


def _threading_from_the_environment() -> None:
    """FUSEDOPT_THREADING ('auto', 'pool' or 'openmp'): whose threads run the chunks
    (set_threading)."""
    value = _os.environ.get("FUSEDOPT_THREADING")
    if value is None:
        return
    try:
        set_threading(value)
    except ValueError:
        raise ValueError("FUSEDOPT_THREADING must be 'auto', 'pool' or 'openmp', "
                         f"got {value!r}") from None


_threading_from_the_environment()


def isa() -> str:
    """The instruction set of the CPU kernels in use: 'avx512', 'avx2' or 'generic' (the same
    bits; the best one the CPU runs is picked at import, or set FUSEDOPT_ISA)."""
    return _core.isa()


def __getattr__(name: str):
    """Submodules that need SciPy or matplotlib are imported on first access only."""
    if name in _LAZY:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API only (``__all__``): no private modules, no imported helpers."""
    return sorted(__all__)
