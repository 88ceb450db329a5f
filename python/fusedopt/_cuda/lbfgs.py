"""Layer: kernels (the CUDA backend). L-BFGS: the functions of ``_core``'s L-BFGS part for CuPy
arrays.
"""
from __future__ import annotations

import numpy as np

from .. import _checks, _core
from . import runtime
from .checks import _CTYPES, _index, _no_overlap, _one, _same_device


def lbfgs_direction(out, grad, s, y, rho, head, count):
    """out = -H grad by the two-loop recursion over the ring buffer (s, y, rho, head, count) of
    fusedopt.lbfgs.History, with the bits of ``_core.lbfgs_direction``: 2 * count + 1 launches,
    the scalars kept on the device, no host synchronization."""
    out = _one("out", out)
    grad = _one("grad", grad, dtype=out.dtype, like="out")
    if grad.shape != out.shape:
        raise ValueError(f"grad: shape {grad.shape} does not match out {out.shape}")
    s = _one("s", s, dtype=out.dtype, like="out")
    y = _one("y", y, dtype=out.dtype, like="out")
    if s.ndim != 2 or s.shape[1] != out.size or s.shape[0] < 1:
        raise ValueError(f"s must have shape (m, {out.size}) with m >= 1 (n = out.size), got "
                         f"{s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"y: shape {y.shape} does not match s {s.shape}")
    m, n = s.shape
    rho = _one("rho", rho, dtype=np.float64)
    if rho.shape != (m,):
        raise ValueError(f"rho must have shape ({m},) like s rows, got {rho.shape}")
    head = _index("head", head, 0, m - 1, f"[0, {m})")
    count = _index("count", count, 0, m, f"[0, {m}]")
    dev = _same_device([("out", out), ("grad", grad), ("s", s), ("y", y), ("rho", rho)])
    for name, a in (("grad", grad), ("s", s), ("y", y), ("rho", rho)):
        _no_overlap("out", out, name, a)
    if n == 0:
        return
    cp = runtime.cupy()
    ctype = _CTYPES[out.dtype]
    chunk = int(_core.reduce_block)
    nchunks = -(-n // chunk)
    with cp.cuda.Device(dev):
        if count == 0:
            fn = runtime.function("lbfgs.cu", f"fusedopt::cuda::lbfgs_negate<{ctype}>")
            fn((runtime.grid(-(-n // runtime.THREADS), fn),), (runtime.THREADS,),
               (out, grad, np.int64(n)))
            return
        D = cp.empty(2 * m + 1, np.float64)  # alpha_k, beta_k, gamma
        partial = cp.empty(3 * nchunks, np.float64)
        counter = cp.zeros(1, np.uint32)
        ring = lambda k: (head + k) % m  # noqa: E731 -- row of pair k, oldest first
        i64, f64 = np.int64, np.float64
        first = runtime.function("lbfgs.cu", f"fusedopt::cuda::lbfgs_first<{ctype}>")
        dot_pass = runtime.function("lbfgs.cu", f"fusedopt::cuda::lbfgs_pass<{ctype}, true>")
        last_pass = runtime.function("lbfgs.cu", f"fusedopt::cuda::lbfgs_pass<{ctype}, false>")
        grid = (runtime.grid(nchunks, dot_pass),)
        c, gamma = count, 2 * m
        first((runtime.grid(nchunks, first),), (runtime.THREADS,),
              (out, grad, s[ring(c - 1)], y[ring(c - 1)], i64(n), i64(chunk), D, rho,
               i64(ring(c - 1)), i64(c - 1), i64(gamma), partial, counter))

        def dot_step(x, w, ia, ib, a_sign, iscale, io, irho):
            dot_pass(grid, (runtime.THREADS,), (out, x, w, i64(n), i64(chunk), D, rho, i64(ia),
                                                i64(ib),
                                        f64(a_sign), i64(iscale), f64(1.0), i64(io), i64(irho),
                                        partial, counter))

        # First loop, newest to oldest: q -= alpha_k y_k, then alpha_{k-1} = rho (s_{k-1} . q).
        for k in range(c - 1, 0, -1):
            dot_step(y[ring(k)], s[ring(k - 1)], k, -1, -1.0, -1, k - 1, ring(k - 1))
        # r = gamma (q - alpha_0 y_0), beta_0 = rho (y_0 . r).
        dot_step(y[ring(0)], y[ring(0)], 0, -1, -1.0, gamma, m, ring(0))
        # Second loop: r += (alpha_k - beta_k) s_k, beta_{k+1} = rho (y_{k+1} . r); the last pass
        # writes -r.
        for k in range(c - 1):
            dot_step(s[ring(k)], y[ring(k + 1)], k, m + k, 1.0, -1, m + k + 1, ring(k + 1))
        last_pass((runtime.grid(-(-n // runtime.THREADS), last_pass),), (runtime.THREADS,),
                  (out, s[ring(c - 1)], out, i64(n), i64(chunk), D, rho, i64(c - 1),
                   i64(m + c - 1), f64(1.0), i64(-1), f64(-1.0), i64(0), i64(0), partial,
                   counter))


def lbfgs_dot(a, b) -> float:
    """sum(a * b) in float64 with the bits of ``_core.lbfgs_dot`` (one host sync: the result)."""
    a = _one("a", a)
    b = _one("b", b, dtype=a.dtype, like="a")
    if b.size != a.size:
        raise ValueError(f"b has {b.size} elements but a has {a.size}")
    dev = _same_device([("a", a), ("b", b)])
    n = a.size
    if n == 0:
        return 0.0
    cp = runtime.cupy()
    chunk = int(_core.reduce_block)
    nchunks = -(-n // chunk)
    with cp.cuda.Device(dev):
        partial = cp.empty(nchunks, np.float64)
        counter = cp.zeros(1, np.uint32)
        result = cp.empty(1, np.float64)
        fn = runtime.function("lbfgs.cu", f"fusedopt::cuda::lbfgs_dot<{_CTYPES[a.dtype]}>")
        fn((runtime.grid(nchunks, fn),), (runtime.THREADS,),
            (a, b, np.int64(n), np.int64(chunk), partial, counter, result))
        return float(result.item())


def lbfgs_axpby(out, a, x, b, y):
    """out = a * x + b * y with a and b cast to the arrays' dtype once (out may be x or y)."""
    out = _one("out", out)
    x = _one("x", x, dtype=out.dtype, like="out")
    y = _one("y", y, dtype=out.dtype, like="out")
    for name, v in (("x", x), ("y", y)):
        if v.size != out.size:
            raise ValueError(f"{name} has {v.size} elements but out has {out.size}")
    a, b = _checks.real("a", a), _checks.real("b", b)
    dev = _same_device([("out", out), ("x", x), ("y", y)])
    _no_overlap("out", out, "x", x, exact_ok=True)
    _no_overlap("out", out, "y", y, exact_ok=True)
    if not out.size:
        return
    cp = runtime.cupy()
    with cp.cuda.Device(dev):
        fn = runtime.function("lbfgs.cu", f"fusedopt::cuda::lbfgs_axpby<{_CTYPES[out.dtype]}>")
        fn((runtime.grid(-(-out.size // runtime.THREADS), fn),), (runtime.THREADS,),
            (out, np.float64(a), x, np.float64(b), y, np.int64(out.size)))


def lbfgs_amax(a) -> float:
    """max |a| as a float, NaN if any element is NaN (0.0 for an empty array)."""
    a = _one("a", a)
    if not a.size:
        return 0.0
    cp = runtime.cupy()
    with cp.cuda.Device(a.device.id):
        return float(cp.max(cp.abs(a)).item())
