"""The CUDA backend's Python side, without a GPU and without needing CuPy.

* importing fusedopt never imports CuPy, and NumPy work runs with CuPy unimportable;
* arrays of the wrong kind are refused with TypeError naming the argument;
* fusedopt._cuda, driven through the tests' CuPy double (tests/cuda_host/emulation.py, kernels
  recorded, not run), checks every list before launching,
  builds the device table the kernels read (csrc/cuda/multi_tensor.cuh) and requests only kernel
  instances that tests/test_cuda_build.py compiles, with explicitly typed scalars.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from fusedopt import _cuda, _scalars, ops
from cuda_host import emulation


def _run_python(code):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_import_does_not_import_cupy():
    out = _run_python(
        "import sys, numpy as np, fusedopt, fusedopt.ops, fusedopt.optim\n"
        "w = [np.zeros(5, np.float32)]\n"
        "fusedopt.optim.Adam(w, lr=0.1).step([np.ones(5, np.float32)])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cupy'), float(w[0][0]))\n")
    assert out.split() == ["[]", "-0.10000000149011612"]


def test_numpy_path_works_with_cupy_unimportable():
    out = _run_python(
        "import sys; sys.modules['cupy'] = None  # import cupy raises ImportError\n"
        "import numpy as np, fusedopt\n"
        "w = [np.ones(3)]\n"
        "fusedopt.ops.sgd_(w, [np.ones(3)], step=1, lr=0.5)\n"
        "print(w[0].tolist())\n")
    assert out.strip() == "[0.5, 0.5, 0.5]"


def test_cupy_arrays_without_cupy_say_so():
    out = _run_python(
        "import sys; sys.modules['cupy'] = None\n"
        "import numpy as np, fusedopt\n"
        "FakeCupy = type('ndarray', (), {'__module__': 'cupy'})\n"
        "try:\n"
        "    fusedopt.ops.sgd_([FakeCupy()], [np.ones(3)], step=1, lr=0.5)\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n")
    assert out.startswith("ImportError:") and "CuPy" in out, out


def _arr(shape, dtype, device=0):
    """A stand-in cupy.ndarray of zeros (tests/cuda_host/emulation.py) on ``device``."""
    return emulation.on_device(np.zeros(shape, dtype), device)


@pytest.fixture
def fake_cupy(monkeypatch):
    """fusedopt._cuda on the tests' CuPy double; launches are recorded, not run."""
    launches = []
    emulation.install(monkeypatch, blocks=4, kernels=emulation.not_run, record=launches)
    return launches


def _decode(table, nt):
    """(first chunk per tensor + total, [(pointers per slot, size)]) from a device table."""
    t = np.asarray(table, np.int64)
    first = t[: nt + 1].tolist()
    rows = t[nt + 1:].reshape(nt, _cuda.SLOTS + 1)
    return first, [(tuple(int(x) for x in r[:-1].view(np.uint64)), int(r[-1])) for r in rows]


def _adam_lists(shapes, dtypes, amsgrad=False):
    mk = [[_arr(s, d) for s, d in zip(shapes, dtypes)] for _ in range(5)]
    return mk if amsgrad else mk[:4] + [None]


def _adam(lists, amsgrad=False, **kw):
    ops.adam_(*lists, step=3, lr=0.01, amsgrad=amsgrad, **kw)


def test_one_launch_per_dtype_with_the_table_and_typed_scalars(fake_cupy):
    shapes = [(3, 5), (0,), (8193,), (7,), (100000,)]
    dtypes = [np.float32, np.float64, np.float32, np.float64, np.float32]
    lists = _adam_lists(shapes, dtypes, amsgrad=True)
    _adam(lists, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)
    assert [x["name"] for x in fake_cupy] == [
        "fusedopt::cuda::adam_kernel<float, true, 2, true, false, false>",
        "fusedopt::cuda::adam_kernel<double, true, 2, true, false, false>"]
    every = set(_cuda.name_expressions()["optim.cu"])
    s = _scalars.adam(step=3, lr=0.01, betas=(0.9, 0.999), eps=1e-8, eps_root=0.0,
                      weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True,
                      maximize=True)
    for launch, dtype in zip(fake_cupy, (np.float32, np.float64)):
        assert launch["name"] in every  # compiled by test_cuda_build.py
        assert launch["file"] == "optim.cu" and launch["block"] == (_cuda.THREADS,)
        table, nt, nchunks, chunk = launch["args"][:4]
        assert all(type(x) is np.int64 for x in (nt, nchunks, chunk))
        # One struct argument, rules::AdamScalars<M>: the record's scalar fields by name and in
        # order, each cast once to the dtype.
        (scalars,) = launch["args"][6:]
        n = _scalars.n_scalars(s)
        assert type(scalars) is np.ndarray and scalars.shape == (1,)  # by value, as CuPy does
        assert scalars.dtype.isalignedstruct
        scalars = scalars[0]
        assert scalars.dtype.names == s._fields[:n]
        assert [scalars.dtype[k].type for k in range(n)] == [dtype] * n
        assert [float(scalars[k]) for k in range(n)] == [float(dtype(v)) for v in s[:n]]
        # The table: only this dtype's non-empty tensors, in list order, every slot in place.
        idx = [i for i, (sh, d) in enumerate(zip(shapes, dtypes))
               if d == dtype and np.prod(sh) > 0]
        first, rows = _decode(table, int(nt))
        assert len(rows) == len(idx)
        expect_first = np.concatenate([[0], np.cumsum(
            [-(-int(np.prod(shapes[i])) // int(chunk)) for i in idx])]).tolist()
        assert first == expect_first and first[-1] == nchunks
        for (ptrs, size), i in zip(rows, idx):
            assert size == int(np.prod(shapes[i]))
            assert ptrs == tuple(lists[k][i].data.ptr for k in range(5)) + (0,)


def test_table_is_cached_by_content(fake_cupy):
    lists = _adam_lists([(10,), (20,)], [np.float32] * 2)
    _adam(lists)
    _adam(lists)
    assert fake_cupy[0]["args"][0] is fake_cupy[1]["args"][0]
    other = _adam_lists([(10,), (20,)], [np.float32] * 2)
    _adam(other)
    assert fake_cupy[2]["args"][0] is not fake_cupy[0]["args"][0]


def test_rmsprop_and_sgd_slots(fake_cupy):
    mk = lambda: [_arr((9,), np.float64)]  # noqa: E731
    p, g, sq, ga, buf = mk(), mk(), mk(), mk(), mk()
    ops.rmsprop_(p, g, sq, ga, buf, step=1, momentum=0.9, centered=True)
    ops.rmsprop_(p, g, sq, None, buf, step=1, momentum=0.9)
    ops.sgd_(p, g, buf, step=1, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    names = [x["name"] for x in fake_cupy]
    assert names == ["fusedopt::cuda::rmsprop_kernel<double, false, 0, true, true, false, false>",
                     "fusedopt::cuda::rmsprop_kernel<double, false, 0, false, true, false, false>",
                     "fusedopt::cuda::sgd_kernel<double, false, 1, true, true, false, false>"]
    ptr = lambda a: a[0].data.ptr  # noqa: E731
    assert _decode(fake_cupy[0]["args"][0], 1)[1][0][0][:5] == tuple(map(ptr, (p, g, sq, ga, buf)))
    # One RMSprop state layout on both backends (fusedopt/slots.h): the momentum buffer keeps
    # state slot 2 when grad_avgs is unused.
    assert _decode(fake_cupy[1]["args"][0], 1)[1][0][0][:5] == (ptr(p), ptr(g), ptr(sq), 0,
                                                               ptr(buf))
    assert _decode(fake_cupy[2]["args"][0], 1)[1][0][0][:3] == (ptr(p), ptr(g), ptr(buf))
    sgd_scalars = fake_cupy[2]["args"][-1]  # rules::SgdScalars<double>, first_step a C++ bool
    assert sgd_scalars.dtype["first_step"] == np.bool_ and sgd_scalars["first_step"][0]


def test_sum_squares_launches_partials_then_one_finish(fake_cupy):
    arrays = [_arr((40000,), np.float64), _arr((5,), np.float32),
              _arr((16384,), np.float32)]
    _cuda.sum_squares(arrays)  # the fake 'out' holds garbage; only the launches are checked
    names = [x["name"] for x in fake_cupy]
    assert names == ["fusedopt::cuda::sum_squares_partial<float>",
                     "fusedopt::cuda::sum_squares_partial<double>",
                     "fusedopt::cuda::sum_squares_finish"]
    assert set(names) <= set(_cuda.name_expressions()["reduce.cu"])
    f32, f64, fin = fake_cupy
    assert int(f32["args"][2]) == 2 and int(f64["args"][2]) == 3  # chunks of 16384
    assert int(f32["args"][3]) == 16384
    assert fin["grid"] == (1,) and [int(x) for x in fin["args"][1:3]] == [2, 3]


@pytest.mark.parametrize("bad, match, exc", [
    (lambda L: L[1].__setitem__(0, np.ones((10,), np.float32)),
     r"grads\[0\] must be a cupy\.ndarray, got numpy\.ndarray", TypeError),
    (lambda L: L[3].__setitem__(1, _arr((20,), np.float32, device=1)),
     r"exp_avg_sqs\[1\] is on device 1 but params\[0\] is on device 0", TypeError),
    (lambda L: L[2].__setitem__(0, _arr((10,), np.float64)),
     r"exp_avgs\[0\] has dtype float64 but params\[0\] has dtype float32", TypeError),
    (lambda L: L[2].__setitem__(1, _arr((21,), np.float32)),
     r"exp_avgs\[1\]: shape \(21,\) does not match params\[1\] \(20,\)", ValueError),
    (lambda L: L[3].__setitem__(0, L[2][0]),
     r"shares memory", ValueError),
])
def test_bad_input_is_refused_before_any_launch(fake_cupy, bad, match, exc):
    lists = _adam_lists([(10,), (20,)], [np.float32] * 2)
    bad(lists)
    with pytest.raises(exc, match=match):
        _adam(lists)
    assert fake_cupy == []


def test_numpy_param_with_a_cupy_grad_is_refused_by_the_cpu_path():
    class ndarray:  # noqa: N801 -- looks like cupy.ndarray from outside
        __module__ = "cupy"

    p = [np.zeros(4, np.float32)]
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        ops.sgd_(p, [ndarray()], step=1, lr=0.1)
    assert not p[0].any()


# ---- mixed precision and AMP ---------------------------------------------------------------------

def _mixed_lists(dtype=np.float16, n=(12, 5)):
    p = [_arr((k,), dtype) for k in n]
    g = [_arr((k,), dtype) for k in n]
    m, v, w = ([_arr((k,), np.float32) for k in n] for _ in range(3))
    return p, g, m, v, w


def test_mixed_precision_master_weights_and_amp_launch(fake_cupy):
    p, g, m, v, w = _mixed_lists()
    gs, fi = _arr((1,), np.float32), _arr((1,), np.float32)
    ops.adam_(p, g, m, v, step=2, lr=0.01, master_params=w, grad_scale=gs, found_inf=fi)
    (launch,) = fake_cupy
    assert launch["name"] == \
        "fusedopt::cuda::adam_kernel<fusedopt::cuda::half_t, false, 0, false, true, true>"
    assert launch["name"] in _cuda.name_expressions()["optim.cu"]
    assert launch["args"][4] is gs and launch["args"][5] is fi
    (scalars,) = launch["args"][6:]  # rules::AdamScalars<float>: float32 math
    assert type(scalars) is np.ndarray and scalars.shape == (1,)
    assert all(scalars.dtype[k].type is np.float32 for k in range(len(scalars.dtype)))
    _, rows = _decode(launch["args"][0], 2)
    for i, (ptrs, size) in enumerate(rows):
        assert ptrs == (p[i].data.ptr, g[i].data.ptr, m[i].data.ptr, v[i].data.ptr, 0,
                        w[i].data.ptr)


def test_mixed_precision_without_master_or_amp(fake_cupy):
    p, g, m, v, _ = _mixed_lists()
    ops.adam_(p, g, m, v, step=1, lr=0.01)
    assert fake_cupy[0]["name"] == \
        "fusedopt::cuda::adam_kernel<fusedopt::cuda::half_t, false, 0, false, false, false>"
    assert fake_cupy[0]["args"][4] is fake_cupy[0]["args"][0]  # not read without Amp


def test_bfloat16_when_ml_dtypes_is_there(fake_cupy):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p, g, m, v, _ = _mixed_lists(ml_dtypes.bfloat16)
    ops.adamax_(p, g, m, v, step=1)
    assert fake_cupy[0]["name"] == \
        "fusedopt::cuda::adamax_kernel<fusedopt::cuda::bf16_t, false, 0, false, false>"


def test_amp_with_float32_params(fake_cupy):
    p, g, m, v, _ = _mixed_lists(np.float32)
    gs, fi = _arr((1,), np.float32), _arr((1,), np.float32)
    ops.sgd_(p, g, m, step=3, lr=0.1, momentum=0.9, grad_scale=gs, found_inf=fi)
    assert fake_cupy[0]["name"] == \
        "fusedopt::cuda::sgd_kernel<float, false, 0, true, false, false, true>"


@pytest.mark.parametrize("change, match, exc", [
    (lambda L: L.update(m=[_arr((12,), np.float16), L["m"][1]]),
     r"exp_avgs\[0\] has dtype float16; expected float32", TypeError),
    (lambda L: L.update(g=[_arr((12,), np.float32), L["g"][1]]),
     r"grads\[0\] has dtype float32 but params\[0\] has dtype float16", TypeError),
    (lambda L: L.update(w=[L["w"][0], _arr((5,), np.float16)]),
     r"master_params\[1\] has dtype float16; expected float32", TypeError),
    (lambda L: L.update(w=[L["w"][0], L["m"][1]]), r"shares memory", ValueError),
    (lambda L: L.update(gs=None), r"grad_scale and found_inf go together", ValueError),
    (lambda L: L.update(gs=_arr((2,), np.float32)),
     r"grad_scale must hold one float32", TypeError),
    (lambda L: L.update(fi=np.zeros(1, np.float32)), r"found_inf must be a cupy\.ndarray",
     TypeError),
    (lambda L: L.update(fi=_arr((1,), np.float32, device=3)),
     r"found_inf is on device 3", TypeError),
])
def test_mixed_precision_bad_input(fake_cupy, change, match, exc):
    p, g, m, v, w = _mixed_lists()
    L = dict(p=p, g=g, m=m, v=v, w=w, gs=_arr((1,), np.float32),
             fi=_arr((1,), np.float32))
    change(L)
    with pytest.raises(exc, match=match):
        ops.adam_(L["p"], L["g"], L["m"], L["v"], step=1, master_params=L["w"],
                  grad_scale=L["gs"], found_inf=L["fi"])
    assert fake_cupy == []


def test_master_weights_need_16_bit_params(fake_cupy):
    p, g, m, v, w = _mixed_lists(np.float32)
    with pytest.raises(TypeError, match=r"master_params .*float16/bfloat16"):
        ops.adam_(p, g, m, v, step=1, master_params=w)
    assert fake_cupy == []


def test_found_inf_of_numpy_arrays_runs_on_the_cpu(fake_cupy):
    """Issue 8: found_inf_ has a CPU kernel now (it used to need CuPy arrays); NumPy arrays
    never reach the CUDA backend."""
    found = np.zeros(1, np.float32)
    ops.found_inf_([np.ones(3, np.float32), np.array([np.nan])], found)
    assert found[0] == 1.0
    assert fake_cupy == []


def test_master_params_refused_for_float32_numpy_params():
    """Issue 9: the CPU takes master_params too, for float16/bfloat16 params only."""
    p = [np.zeros(4, np.float32)]
    with pytest.raises(TypeError, match=r"master_params: float32 master weights belong to "
                                        r"float16 or bfloat16 params; params\[0\] has dtype "
                                        r"float32"):
        ops.sgd_(p, [np.ones(4, np.float32)], step=1, lr=0.1,
                 master_params=[np.zeros(4, np.float32)])
    assert not p[0].any()


def test_grid_is_one_wave_of_resident_blocks(monkeypatch):
    """The grid is what the device holds at once: registers (granted per warp in units of 256)
    and shared memory (plus 1 KiB per block) limit the blocks per SM, at most BLOCKS_PER_SM."""
    attrs = {"MultiProcessorCount": 132, "MaxRegistersPerMultiprocessor": 65536,
             "MaxSharedMemoryPerMultiprocessor": 233472}

    class Device:
        def __init__(self, i=None):
            self.id, self.attributes = 0, attrs

    monkeypatch.setattr(_cuda.runtime, "cupy", lambda: types.SimpleNamespace(
        cuda=types.SimpleNamespace(Device=Device)))
    monkeypatch.setattr(_cuda.runtime, "RESIDENT", {})
    monkeypatch.setattr(_cuda.runtime, "launch_blocks", None)
    kernel = lambda regs, smem: types.SimpleNamespace(num_regs=regs,  # noqa: E731
                                                      shared_size_bytes=smem)
    adam = kernel(50, 0)  # 7 * 256 registers a warp, 8 warps: 4 blocks of 14336 in 65536
    assert _cuda.runtime.grid(10**6, adam) == 132 * 4
    assert _cuda.runtime.grid(17, adam) == 17  # fewer units than blocks
    assert _cuda.runtime.grid(10**6, kernel(24, 0)) == 132 * 8  # capped at BLOCKS_PER_SM
    assert _cuda.runtime.grid(10**6, kernel(32, 60000)) == 132 * 3  # 233472 // 61024
    assert _cuda.runtime.grid(10**6, None) == 132 * 8  # nothing known about the kernel


REPORT = pathlib.Path(__file__).resolve().parent.parent / "bench" / "report.py"


@pytest.mark.skipif(not REPORT.exists(), reason="bench/report.py is not in this tree")
def test_report_measures_cuda_benchmarks_against_the_copy_bandwidth():
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)

    def entry(group, name, seconds, nbytes, **extra):
        return {"group": group, "name": f"test[{name}]", "stats": {"median": seconds},
                "extra_info": dict(bytes=nbytes, device="GPU X", **extra)}

    data = {"benchmarks": [
        entry("copy", "cupy.copyto", 1e-3, 3e9, copy=True),
        entry("adam-f32-n=1e8", "fusedopt", 1e-3, 2.8e9),
        entry("adam-f32-n=1e8", "torch-fused", 2e-3, 2.8e9)]}
    text = report.report(data)
    assert "on GPU X; device copy bandwidth 3000 GB/s" in text
    assert re.search(r"adam-f32-n=1e8\s+fusedopt\s+1000\.0\s+2800\.00\s+1\.00\s+93%", text), text
    assert re.search(r"torch-fused\s+2000\.0\s+1400\.00\s+2\.00\s+47%", text), text


def test_mixed_precision_params_are_all_16_bit(fake_cupy):
    p, g, m, v, _ = _mixed_lists()
    p[1], g[1] = _arr((5,), np.float32), _arr((5,), np.float32)
    with pytest.raises(TypeError, match=r"params\[1\] has dtype float32; expected float16"):
        ops.adam_(p, g, m, v, step=1)
    assert fake_cupy == []
