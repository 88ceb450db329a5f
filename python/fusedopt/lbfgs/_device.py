"""L-BFGS on CuPy arrays: the solver's vector operations and its history on the device.

Layer: algorithms (the array work runs in the CUDA kernels of ``fusedopt._cuda``; CuPy is
reached only through ``fusedopt._cuda.runtime.cupy()``, so the tests' host emulation of CuPy
drives the same code).

``CupyVec`` has the methods of ``CoreVec`` that ``solver.Solver`` calls, each a kernel of
``fusedopt._cuda`` (the two-loop recursion, the float64 dot in fixed blocks, ``a x + b y``,
``max |x|``) with the bits of its ``_core`` twin; ``DeviceHistory`` is ``History`` with its ring
buffer (s, y, rho) in device memory. What reaches the host per iteration: f (from ``fun``), the
dots and norms the line search and the stopping tests need (one float each), never a vector.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _cuda, ops
from .history import History

__all__ = ["CupyVec", "DeviceHistory", "DeviceObjective", "is_device_array"]


def is_device_array(a) -> bool:
    """Whether ``a`` is a CuPy array (by its type's module, as ``ops.backend_of`` decides)."""
    return type(a).__module__.startswith("cupy")


def xp():
    """The cupy module (or the tests' stand-in)."""
    return _cuda.runtime.cupy()


class CupyVec:
    """Vector operations on flat, C-contiguous CuPy arrays, in ``fusedopt._cuda``: ``dot``
    (sum(a * b), float64 in fixed blocks), ``axpby`` (out = a x + b y) and ``amax`` (max |a_i|,
    NaN if any is NaN) are the kernels themselves, with the bits of their ``_core`` twins."""

    dot = staticmethod(_cuda.lbfgs_dot)
    axpby = staticmethod(_cuda.lbfgs_axpby)
    amax = staticmethod(_cuda.lbfgs_amax)

    @staticmethod
    def empty(n, dtype):
        return xp().empty(n, dtype)

    @staticmethod
    def history(n, m, dtype):
        return DeviceHistory(n, m, dtype)

    @staticmethod
    def scale(out, a, x):
        """out = a * x (out = 1 * x + 0 * x: exact for finite x)."""
        _cuda.lbfgs_axpby(out, a, x, 0.0, x)

    @staticmethod
    def copy(out, x):
        out[...] = x

    @staticmethod
    def sub_dots(out, a, b, c):
        """out = a - b (as ``1 * a + (-1) * b``: the same rounding); returns (c . out,
        out . out)."""
        _cuda.lbfgs_axpby(out, 1.0, a, -1.0, b)
        return _cuda.lbfgs_dot(c, out), _cuda.lbfgs_dot(out, out)

    @staticmethod
    def direction(out, grad, history) -> float:
        """out = -H grad on the device; returns grad . out."""
        ops.lbfgs_direction_(out, grad, history)
        return _cuda.lbfgs_dot(grad, out)


class DeviceHistory(History):
    """``History`` whose ring buffer (``s``, ``y``: ``(m, n)``; ``rho``: float64 ``(m,)``) is in
    device memory, laid out as the host one (``_cuda.lbfgs_direction`` reads it)."""

    def __init__(self, n, m, dtype):      # noqa: D107 -- the attributes of History, on device
        cp = xp()
        self.n, self.m, self.dtype = n, m, np.dtype(dtype)
        self.eps_curv = float(np.finfo(self.dtype).eps)
        self.s = cp.zeros((m, n), self.dtype)
        self.y = cp.zeros((m, n), self.dtype)
        self.rho = cp.zeros(m, np.float64)
        self.head = 0
        self.count = 0
        self.skipped = 0
        # History's compact-form bookkeeping (the device direction is the two-loop kernel, so
        # sy, yy stay unread there; _stale holds at most m rows).
        self.sy = np.zeros((m, m))
        self.yy = np.zeros((m, m))
        self._stale = set()


class DeviceObjective:
    """``fun(x)`` at a flat device buffer (seen in x0's shape), f brought to the host as a
    float, the gradient (a CuPy array of x0's shape) copied into a flat device buffer."""

    def __init__(self, fun, shape):
        self.fun = fun
        self.shape = shape
        self.nfev = 0

    def __call__(self, x, g_out):
        out = self.fun(x.reshape(self.shape))
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"fun must return a tuple (f, grad), got {type(out).__name__}")
        self.nfev += 1
        f, g = out
        if is_device_array(f):
            if f.size != 1 or f.dtype.kind not in "fiu":
                raise ValueError(f"fun must return a real scalar, got an array of shape "
                                 f"{f.shape} and dtype {f.dtype}")
            f = f.reshape(()).item()
        f = float(np.asarray(f).reshape(()))
        if not is_device_array(g):
            raise TypeError(f"fun returned a gradient of type {type(g).__module__}."
                            f"{type(g).__name__}; with a CuPy x0 it must be a CuPy array")
        if g.shape != self.shape:
            raise ValueError(f"fun returned a gradient of shape {g.shape}; expected {self.shape}")
        if g.dtype.kind not in "fiu":
            raise TypeError(f"fun returned a gradient of dtype {g.dtype}; expected a real dtype")
        g_out[...] = g.reshape(-1).astype(g_out.dtype, copy=False)
        return f


def device_x0(x0):
    """A flat C-contiguous float32/float64 device copy of a CuPy x0 (checked: dtype, empty,
    finite)."""
    if x0.dtype not in (np.float32, np.float64):
        raise TypeError(f"x0 must have dtype float32 or float64, got {x0.dtype}")
    if x0.size == 0:
        raise ValueError("x0 is empty")
    flat = x0.reshape(-1)
    x = CupyVec.empty(x0.size, x0.dtype)
    x[...] = flat
    if not math.isfinite(CupyVec.amax(x)):
        raise ValueError("x0 has non-finite values")
    return x
