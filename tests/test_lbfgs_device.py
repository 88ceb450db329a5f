"""``fusedopt.lbfgs.minimize`` with a CuPy x0: the history, the direction and the updates on the
device (``fusedopt.lbfgs._device``: the CUDA kernels of ``fusedopt._cuda``).

Each test runs on a GPU (``gpu`` marker) and on the host emulation of CuPy and the CUDA kernels
(tests/cuda_host). The CUDA kernels give the bits of their ``_core`` twins, so on the host
emulation, where the test objective is NumPy's arithmetic too, a run on the device must be the
CPU run exactly: the same iterates, f, evaluations and iterations. On a GPU the objective itself
is CuPy's (its sums reduce in another order and its kernels may contract a * b + c into an FMA),
so there the run must reach the same minimizer in about as many iterations.
"""
from __future__ import annotations

import numpy as np
import pytest

from fusedopt import lbfgs
from fusedopt.lbfgs.history import History
from cuda_host.devices import dev  # noqa: F401 -- the fixture


def chained_rosenbrock(xp):
    """f and grad of the chained Rosenbrock function along the last axis, for xp's arrays."""
    def fun(x):
        a, b = x[..., :-1], x[..., 1:]
        r = b - a * a
        f = (100 * r * r + (1 - a) ** 2).sum()
        g = xp.zeros(x.shape, x.dtype)
        g[..., :-1] = -400 * a * r - 2 * (1 - a)
        g[..., 1:] += 200 * r
        return f, g
    return fun


def _x0(shape, dtype):
    x0 = np.empty(shape, dtype)
    x0[..., 0::2], x0[..., 1::2] = -1.2, 1.0
    return x0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, m, line_search", [((7, 13), 10, "strong_wolfe"),
                                                  ((51,), 3, "strong_wolfe"),
                                                  ((5, 9), 5, "armijo")])
def test_device_run_is_the_cpu_run(dev, dtype, shape, m, line_search, monkeypatch):  # noqa: F811
    x0 = _x0(shape, dtype)
    # The device direction is the CUDA two-loop kernel: compare with the CPU's two-loop (the
    # CPU default is the compact form, equal to rounding).
    with monkeypatch.context() as mp:
        mp.setattr(History, "method", "two_loop")
        cpu = lbfgs.minimize(chained_rosenbrock(np), x0, m=m, line_search=line_search)
    seen = []

    def fun(x):
        seen.append(type(x))
        return chained_rosenbrock(dev.xp)(x)

    steps = []
    res = lbfgs.minimize(fun, dev.asarray(x0), m=m, line_search=line_search,
                         callback=lambda xk: steps.append(xk))
    assert set(seen) == {dev.ndarray}            # fun saw device arrays only
    assert isinstance(res.x, dev.ndarray) and isinstance(res.jac, dev.ndarray)
    assert res.x.shape == shape and res.x.dtype == dtype and res.jac.shape == shape
    if dtype == np.float64:   # (float32 may end on a line search failure at its resolution)
        assert cpu.success, cpu.message
    assert len(steps) == res.nit and all(isinstance(s, dev.ndarray) for s in steps)
    np.testing.assert_array_equal(dev.asnumpy(steps[-1]), dev.asnumpy(res.x))
    if dev.name == "host":
        assert (res.status, res.nit, res.nfev, res.skipped) == \
            (cpu.status, cpu.nit, cpu.nfev, cpu.skipped)
        assert res.fun == cpu.fun and res.message == cpu.message
        np.testing.assert_array_equal(dev.asnumpy(res.x), cpu.x)
        np.testing.assert_array_equal(dev.asnumpy(res.jac), cpu.jac)
    elif dtype == np.float64:
        assert res.success, res.message
        np.testing.assert_allclose(dev.asnumpy(res.x), cpu.x, atol=1e-4, rtol=0)
        assert abs(res.nit - cpu.nit) <= 0.25 * cpu.nit + 5, (res.nit, cpu.nit)
    np.testing.assert_allclose(cpu.x, 1.0, atol=2e-2 if dtype == np.float32 else 1e-4)


def test_device_x0_is_not_modified_and_f_may_be_a_device_scalar(dev, monkeypatch):  # noqa: F811
    x0 = dev.asarray(_x0((4, 6), np.float64))
    before = dev.asnumpy(x0).copy()
    fun = chained_rosenbrock(dev.xp)

    def fun_device_f(x):
        f, g = fun(x)
        return dev.xp.asarray(np.float64(f)) if not isinstance(f, dev.ndarray) else f, g

    res = lbfgs.minimize(fun_device_f, x0)
    with monkeypatch.context() as mp:   # the device's direction is the two-loop kernel
        mp.setattr(History, "method", "two_loop")
        ref = lbfgs.minimize(chained_rosenbrock(np), before.copy())
    np.testing.assert_array_equal(dev.asnumpy(x0), before)
    assert res.success, res.message
    if dev.name == "host":
        assert res.nfev == ref.nfev and res.fun == ref.fun
    np.testing.assert_allclose(dev.asnumpy(res.x), ref.x, atol=1e-4, rtol=0)


@pytest.mark.gpu
def test_runs_on_x0s_device():
    # With another device current, the run allocates and launches on x0's device. (Not on the
    # host emulation: its arrays are all on device 0, whatever is current.)
    cp = pytest.importorskip("cupy")
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    x0 = _x0((3, 8), np.float64)
    with cp.cuda.Device(1):
        x0_dev = cp.asarray(x0)
    with cp.cuda.Device(0):
        res = lbfgs.minimize(chained_rosenbrock(cp), x0_dev)
    assert res.success and res.x.device.id == 1 and res.jac.device.id == 1
    np.testing.assert_allclose(cp.asnumpy(res.x), 1.0, atol=1e-4)


def test_device_unbounded_below(dev):  # noqa: F811
    res = lbfgs.minimize(lambda x: (x.sum(), dev.xp.ones(x.shape, x.dtype)),
                         dev.asarray(np.zeros(9)))
    assert res.status == 3 and not res.success and res.message.startswith("UNBOUNDED")
    assert res.nfev == 3 * 20 + 1


@pytest.mark.parametrize("case, exc, match", [
    ("numpy grad", TypeError, "gradient of type numpy"),
    ("grad shape", ValueError, "gradient of shape"),
    ("bounds", TypeError, "bounds are not supported with a CuPy x0"),
    ("int x0", TypeError, "float32 or float64"),
    ("nan x0", ValueError, "non-finite"),
    ("empty x0", ValueError, "empty"),
])
def test_device_bad_input(dev, case, exc, match):  # noqa: F811
    calls = []
    x0 = dev.asarray(np.ones(5))
    kwargs = {}

    def fun(x):
        calls.append(1)
        if case == "numpy grad":
            return 1.0, np.ones(5)
        if case == "grad shape":
            return 1.0, dev.xp.ones(4)
        return (x * x).sum(), 2 * x

    if case == "bounds":
        kwargs["bounds"] = [(0, 1)] * 5
    elif case == "int x0":
        x0 = dev.asarray(np.ones(5, np.int64))
    elif case == "nan x0":
        x0 = dev.asarray(np.array([1.0, np.nan]))
    elif case == "empty x0":
        x0 = dev.asarray(np.ones(0))
    with pytest.raises(exc, match=match):
        lbfgs.minimize(fun, x0, **kwargs)
    if case not in ("numpy grad", "grad shape"):
        assert not calls                           # refused before fun is called
