"""The GPU two-loop recursion (fusedopt._cuda.lbfgs_*).

Without a GPU: the host side (argument checks, the sequence of launches and the device-scalar
indices they carry) runs against the tests' CuPy double (tests/cuda_host/emulation.py) with NumPy
models of csrc/cuda/lbfgs.cu's documented semantics; the direction it produces must be
the textbook two-loop recursion's. Then the kernels themselves, on a GPU (``gpu`` marker) and on
the host emulation (tests/cuda_host): the two-loop recursion to rounding, the same bits on any
grid, and the bits of the CPU kernels ``_core.lbfgs_*`` (when this build has them).
"""
from __future__ import annotations

import re
import types

import numpy as np
import pytest

from fusedopt import _core, _cuda
from cuda_host import emulation
from cuda_host.devices import dev  # noqa: F401 -- the fixture


def two_loop(g, s, y, rho, head, count):
    """Nocedal & Wright, Algorithm 7.4, float64, over the ring (head = oldest row)."""
    m = s.shape[0]
    q = g.astype(np.float64).ravel().copy()
    rows = [(head + k) % m for k in range(count)]
    if not count:
        return -q
    alpha = {}
    for k in reversed(range(count)):
        j = rows[k]
        alpha[k] = rho[j] * (s[j].astype(np.float64) @ q)
        q -= alpha[k] * y[j]
    sn, yn = s[rows[-1]].astype(np.float64), y[rows[-1]].astype(np.float64)
    r = (sn @ yn) / (yn @ yn) * q
    for k in range(count):
        j = rows[k]
        beta = rho[j] * (y[j].astype(np.float64) @ r)
        r += (alpha[k] - beta) * s[j]
    return -r


def _model(name):
    """NumPy models of the kernels of lbfgs.cu (float64 dots in NumPy's order)."""
    kind = re.match(r"fusedopt::cuda::(\w+)<(float|double)(, (true|false))?>", name)
    kernel, T = kind.group(1), {"float": np.float32, "double": np.float64}[kind.group(2)]
    dot = lambda a, b: float(np.dot(a.astype(np.float64), b.astype(np.float64)))  # noqa: E731

    def run(grid, block, args):
        assert block == (_cuda.THREADS,) and grid[0] >= 1
        if kernel == "lbfgs_negate":
            out, grad, n = args
            out[...] = -grad
        elif kernel == "lbfgs_first":
            out, grad, s, y, n, chunk, D, rho, irho, ia, ig, partial, counter = args
            assert all(type(v) is np.int64 for v in (n, chunk, irho, ia, ig))
            out[...] = grad
            D[ia] = rho[irho] * dot(s, grad)
            D[ig] = dot(s, y) / dot(y, y)
        elif kernel == "lbfgs_pass":
            (out, x, w, n, chunk, D, rho, ia, ib, sign, isc, sconst, io, irho, partial,
             counter) = args
            assert type(sign) is np.float64 and type(sconst) is np.float64
            a = T(sign * (D[ia] - D[ib] if ib >= 0 else D[ia]))
            scale = T(D[isc] if isc >= 0 else sconst)
            out[...] = (out + a * x) * scale
            if kind.group(4) == "true":
                D[io] = rho[irho] * dot(w, out)
        elif kernel == "lbfgs_dot":
            a, b, n, chunk, partial, counter, result = args
            result[0] = dot(a, b)
        elif kernel == "lbfgs_axpby":
            out, a, x, b, y, n = args
            out[...] = T(a) * x + T(b) * y
        else:
            raise AssertionError(name)
    return run


@pytest.fixture
def fake_cupy(monkeypatch):
    """fusedopt._cuda on the tests' CuPy double, its kernels the NumPy models above."""
    def models(file, name):
        assert file == "lbfgs.cu" and name in _cuda.name_expressions()["lbfgs.cu"], name
        return _model(name)

    launches = []
    emulation.install(monkeypatch, blocks=3, kernels=models, record=launches)
    wrap = lambda a: np.asarray(a).view(emulation.ndarray)  # noqa: E731 -- no copy
    return types.SimpleNamespace(wrap=wrap, launches=launches)


def _history(n, m, count, head, dtype, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((m, n)).astype(dtype)
    y = (s * rng.uniform(0.5, 2.0, size=(m, n)) + 0.01 * rng.standard_normal((m, n))).astype(dtype)
    rho = np.array([1.0 / float(s[j].astype(np.float64) @ y[j].astype(np.float64))
                    for j in range(m)])
    g = rng.standard_normal(n).astype(dtype)
    return g, s, y, rho


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-4), (np.float64, 1e-11)],
                         ids=["f32", "f64"])
@pytest.mark.parametrize("m, count, head", [(1, 1, 0), (5, 0, 2), (5, 3, 4), (6, 6, 2),
                                            (10, 10, 0)])
def test_direction_launch_sequence_computes_the_two_loop_recursion(fake_cupy, dtype, rtol, m,
                                                                   count, head):
    n = 1000
    g, s, y, rho = _history(n, m, count, head, dtype)
    out = fake_cupy.wrap(np.zeros(n, dtype))
    _cuda.lbfgs_direction(out, fake_cupy.wrap(g), fake_cupy.wrap(s), fake_cupy.wrap(y),
                          fake_cupy.wrap(rho), head, count)
    expect = two_loop(g, s, y, rho, head, count)
    np.testing.assert_allclose(np.asarray(out, np.float64), expect, rtol=rtol,
                               atol=rtol * np.abs(expect).max())
    assert len(fake_cupy.launches) == (2 * count + 1 if count else 1)
    assert np.abs(expect).max() > 0


def test_dot_and_axpby_and_amax(fake_cupy):
    w = fake_cupy.wrap
    a, b = np.arange(5.0), np.ones(5)
    assert _cuda.lbfgs_dot(w(a), w(b)) == 10.0
    out = w(np.zeros(5))
    _cuda.lbfgs_axpby(out, 2.0, w(a), -1.0, w(b))
    assert np.asarray(out).tolist() == [-1.0, 1.0, 3.0, 5.0, 7.0]
    _cuda.lbfgs_axpby(out, 1.0, out, 1.0, w(b))  # out may be x itself
    assert np.asarray(out).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert _cuda.lbfgs_amax(w(np.array([1.0, -3.0, 2.0]))) == 3.0
    assert _cuda.lbfgs_amax(w(np.zeros(0))) == 0.0


@pytest.mark.parametrize("change, exc, match", [
    (dict(grad=np.zeros(10, np.float32)), TypeError,
     r"grad must be a cupy\.ndarray, got numpy\.ndarray"),
    (dict(grad=np.zeros(10, np.float64)), TypeError, r"grad has dtype float64; expected float32"),
    (dict(grad=np.zeros(11, np.float32)), ValueError, r"grad: shape \(11,\) does not match"),
    (dict(s=np.zeros((3, 9), np.float32)), ValueError, r"s must have shape \(m, 10\)"),
    (dict(y=np.zeros((2, 10), np.float32)), ValueError, r"y: shape \(2, 10\) does not match s"),
    (dict(rho=np.zeros(3, np.float32)), TypeError, r"rho has dtype float32; expected float64"),
    (dict(rho=np.zeros(4)), ValueError, r"rho must have shape \(3,\)"),
    (dict(head=3), ValueError, r"head must be in \[0, 3\)"),
    (dict(count=4), ValueError, r"count must be in \[0, 3\]"),
    (dict(count=1.0), TypeError, r"count must be an int"),
    (dict(out="grad"), ValueError, r"out shares memory with grad"),
])
def test_direction_bad_input(fake_cupy, change, exc, match):
    args = dict(out=np.zeros(10, np.float32), grad=np.ones(10, np.float32),
                s=np.ones((3, 10), np.float32), y=np.ones((3, 10), np.float32),
                rho=np.ones(3), head=0, count=2)
    args.update(change)
    if isinstance(args["out"], str):
        args["out"] = args["grad"]
    for k in ("out", "grad", "s", "y", "rho"):
        if k not in change or not isinstance(change[k], np.ndarray) or \
                not match.startswith(k + " must be a cupy"):
            args[k] = fake_cupy.wrap(args[k])
    before = np.asarray(args["out"]).copy()
    with pytest.raises(exc, match=match):
        _cuda.lbfgs_direction(**args)
    assert fake_cupy.launches == []
    assert np.array_equal(np.asarray(args["out"]), before)


# ---- the kernels themselves: on a GPU and on the host emulation -------------------------------------

needs_cpu_lbfgs = pytest.mark.skipif(not hasattr(_core, "lbfgs_direction"),
                                     reason="this build's _core has no L-BFGS kernels")
CONFIGS = [(1, 1, 1, 0), (7, 3, 2, 2), (16384 * 3 + 5, 5, 5, 3), (278011, 10, 7, 9),
           (100000, 4, 0, 1)]


def _direction(dev, n, m, count, head, dtype):
    g, s, y, rho = _history(n, m, count, head, dtype)
    out = dev.xp.empty(n, dtype)
    args = [dev.asarray(a) for a in (g, s, y, rho)]
    _cuda.lbfgs_direction(out, *args, head, count)
    return (g, s, y, rho), args, dev.asnumpy(out)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-4), (np.float64, 1e-11)],
                         ids=["f32", "f64"])
@pytest.mark.parametrize("n, m, count, head", CONFIGS)
def test_kernels_compute_the_two_loop_recursion(dev, dtype, rtol, n, m, count, head):
    (g, s, y, rho), _, out = _direction(dev, n, m, count, head, dtype)
    expect = two_loop(g, s, y, rho, head, count)
    np.testing.assert_allclose(out.astype(np.float64), expect, rtol=rtol,
                               atol=rtol * np.abs(expect).max())


@pytest.mark.parametrize("n, m, count, head", CONFIGS[1:4])
def test_kernels_same_bits_on_any_grid(dev, n, m, count, head, monkeypatch):
    _, args, first = _direction(dev, n, m, count, head, np.float32)
    for blocks in (1, 5):
        monkeypatch.setattr(_cuda.runtime, "launch_blocks", blocks)
        _, _, again = _direction(dev, n, m, count, head, np.float32)
        assert np.array_equal(again.view(np.uint32), first.view(np.uint32))
    assert _cuda.lbfgs_dot(args[1][0], args[2][0]) == _cuda.lbfgs_dot(args[1][0], args[2][0])


@needs_cpu_lbfgs
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n, m, count, head", CONFIGS)
def test_kernels_have_the_cpu_bits(dev, dtype, n, m, count, head):
    (g, s, y, rho), args, out = _direction(dev, n, m, count, head, dtype)
    cpu = np.empty(n, dtype)
    _core.lbfgs_direction(cpu, g, s, y, rho, head, count)
    assert np.array_equal(out.view(np.uint8), cpu.view(np.uint8))
    assert _cuda.lbfgs_dot(args[0], args[1][0]) == _core.lbfgs_dot(g, s[0])


@needs_cpu_lbfgs
def test_axpby_and_amax_have_the_cpu_bits(dev):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(100003).astype(np.float32)
    y = rng.standard_normal(100003).astype(np.float32)
    cpu, gpu = np.empty_like(x), dev.xp.empty(x.shape, x.dtype)
    _core.lbfgs_axpby(cpu, 0.3, x, -1.7, y)
    _cuda.lbfgs_axpby(gpu, 0.3, dev.asarray(x), -1.7, dev.asarray(y))
    assert np.array_equal(dev.asnumpy(gpu), cpu)
    assert _cuda.lbfgs_amax(dev.asarray(x)) == _core.lbfgs_amax(x)
