"""The CUDA backend on device arrays: the same bits as the NumPy reference and the CPU kernels.

Every test runs twice, through the ``dev`` fixture:
* ``cuda``: CuPy arrays on a GPU. These carry the ``gpu`` marker; conftest.py skips them, with
  the reason, where CuPy or a CUDA device is missing.
* ``host``: the very kernel sources compiled for the host by g++ (tests/cuda_host), each CUDA
  thread a host thread, under a stand-in for CuPy whose arrays are NumPy arrays; fusedopt._cuda
  runs unchanged. This checks the kernels' logic (tables, chunks, vector and scalar paths, tails,
  slots, reductions' order) without a GPU; it cannot check NVRTC's code or the device itself.
The registry of tests/cases.py drives them: every rule and option, float32 and float64, odd
sizes, many tensors, unaligned views, any launch configuration.
"""
from __future__ import annotations

import numpy as np
import pytest

import fusedopt
from fusedopt import _core, _cuda, ops, optim, reference
from cuda_host.devices import dev  # noqa: F401 -- the fixture
from cases import (CASE_IDS, CASES, DTYPES, MULTI_SHAPES, SIZES, assert_same_bits, bits,
                   grad_stream, make_params)

STEPS = 10


def to_gpu(dev, arrays):
    return [dev.asarray(a) for a in arrays]


def assert_same_gpu_state(dev, gpu_opt, ref_opt):
    assert gpu_opt.state.keys() == ref_opt.state.keys()
    for i, (p, q) in enumerate(zip(gpu_opt.params, ref_opt.params)):
        assert isinstance(p, dev.ndarray)
        assert_same_bits(dev.asnumpy(p), q, f"params[{i}]")
    for name in gpu_opt.state:
        for i, (x, y) in enumerate(zip(gpu_opt.state[name], ref_opt.state[name])):
            assert isinstance(x, dev.ndarray), name
            assert_same_bits(dev.asnumpy(x), y, f"state[{name!r}][{i}]")


def run_gpu_and_reference(dev, case, params, steps=STEPS, wrap=None):
    """The case on device copies of ``params`` (made by ``wrap``) and on the NumPy reference."""
    shapes = [p.shape for p in params]
    gpu = case.make((wrap or (lambda a: to_gpu(dev, a)))(params))
    ref = case.make([p.copy() for p in params], backend="reference")
    grads = grad_stream(shapes, [p.dtype for p in params])
    for _ in range(steps):
        g = next(grads)
        gpu.step(to_gpu(dev, g))
        ref.step(g)
    dev.sync()
    return gpu, ref


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_equals_reference(dev, case, dtype, size):
    params = make_params([(size,)], dtype)
    gpu, ref = run_gpu_and_reference(dev, case, params)
    assert_same_gpu_state(dev, gpu, ref)
    if size:
        assert not np.array_equal(dev.asnumpy(gpu.params[0]), params[0])  # it moved


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_multi_tensor_equals_reference(dev, case, dtype):
    gpu, ref = run_gpu_and_reference(dev, case, make_params(MULTI_SHAPES, dtype))
    assert_same_gpu_state(dev, gpu, ref)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_many_tensors_mixed_dtypes(dev, case):
    """300 tensors of odd sizes, float32 and float64 interleaved: one launch per dtype."""
    rng = np.random.default_rng(5)
    shapes = [(int(n),) for n in rng.integers(0, 3000, size=300)] + [(278011,)]
    params = [p.astype(np.float32 if i % 3 else np.float64)
              for i, p in enumerate(make_params(shapes, np.float64))]
    launches = []
    real = _cuda.runtime.function

    def counting(file, name):
        fn = real(file, name)
        return lambda *a, **k: (launches.append(name), fn(*a, **k))

    _cuda.runtime.function = counting
    try:
        gpu, ref = run_gpu_and_reference(dev, case, params, steps=3)
    finally:
        _cuda.runtime.function = real
    assert_same_gpu_state(dev, gpu, ref)
    assert len(launches) == 3 * 2, launches  # 3 steps, a float32 and a float64 launch each


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_unaligned_views(dev, case):
    """Params, grads and state that start one element past a 16-byte boundary take the scalar
    path; the bits do not change."""
    sizes = [4097, 13, 1, 100000]

    def offset_views(arrays):
        out = []
        for a in arrays:
            buf = dev.xp.empty(a.size + 1, a.dtype)
            v = buf[1:].reshape(a.shape)
            v[...] = dev.asarray(a)
            assert v.data.ptr % 16
            out.append(v)
        return out

    params = make_params([(n,) for n in sizes], np.float32)
    gpu, ref = run_gpu_and_reference(dev, case, params, wrap=offset_views)
    assert_same_gpu_state(dev, gpu, ref)


@pytest.mark.parametrize("blocks", [1, 3, 64])
@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("adam-wd-amsgrad", "sgd-nesterov-wd",
                                                                 "rmsprop-centered-momentum")],
                         ids=lambda c: c.id)
def test_cuda_same_bits_for_any_grid(dev, case, blocks, monkeypatch):
    params = make_params([(278011,), (70001,), (5,)], np.float32)
    gpu_default, ref = run_gpu_and_reference(dev, case, params, steps=4)
    monkeypatch.setattr(_cuda.runtime, "launch_blocks", blocks)
    gpu_other, _ = run_gpu_and_reference(dev, case, params, steps=4)
    assert_same_gpu_state(dev, gpu_other, ref)
    assert_same_gpu_state(dev, gpu_default, ref)


# ---- reductions --------------------------------------------------------------------------------

NORM_SHAPES = [[(0,)], [(1,)], [(7,)], MULTI_SHAPES, [(278011,), (5,)], [(16384 * 3 + 5,)]]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shapes", NORM_SHAPES)
def test_cuda_sum_squares_has_the_cpu_bits(dev, dtype, shapes):
    """The CUDA reduction adds in the CPU kernel's order, so the float64 result is identical."""
    arrays = make_params(shapes, dtype)
    cpu = _core.sum_squares(arrays)
    assert _cuda.sum_squares(to_gpu(dev, arrays)) == cpu
    assert ops.global_norm(to_gpu(dev, arrays)) == ops.global_norm(arrays)
    assert ops.global_norm(to_gpu(dev, arrays)) == pytest.approx(reference.global_norm(arrays),
                                                            rel=1e-14, abs=0)


@pytest.mark.parametrize("blocks", [1, 2, 7, None])
def test_cuda_sum_squares_same_bits_any_grid_mixed_dtypes(dev, blocks, monkeypatch):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(n).astype(np.float32) * 1e3 for n in (3_000_001, 17, 65537)]
    arrays.insert(1, rng.standard_normal(400_000))
    monkeypatch.setattr(_cuda.runtime, "launch_blocks", blocks)
    assert _cuda.sum_squares(to_gpu(dev, arrays)) == _core.sum_squares(arrays)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_cuda_clip_by_global_norm(dev, dtype):
    arrays = make_params([(100,), (3, 7), (40000,)], dtype)
    gpu = to_gpu(dev, arrays)
    norm_cpu = ops.clip_by_global_norm_(arrays, max_norm=1.0)
    norm_gpu = ops.clip_by_global_norm_(gpu, max_norm=1.0)
    assert norm_gpu == norm_cpu
    for a, g in zip(arrays, gpu):
        assert_same_bits(dev.asnumpy(g), a)


# ---- bad input: TypeError/ValueError naming the argument, nothing modified ------------------------

def _adam_call(params, grads, m, v):
    ops.adam_(params, grads, m, v, step=1, lr=0.1)


def _fresh(dev, dtype=np.float32, n=10):
    p = [dev.xp.arange(n, dtype=dtype) + 1]
    return p, [dev.xp.ones(n, dtype)], [dev.xp.zeros(n, dtype)], [dev.xp.zeros(n, dtype)]


def _assert_untouched(dev, p, m, v, n=10):
    assert_same_bits(dev.asnumpy(p[0]), np.arange(n, dtype=p[0].dtype) + 1)
    assert not dev.asnumpy(m[0]).any() and not dev.asnumpy(v[0]).any()


def test_cuda_numpy_grad_for_cupy_param(dev):
    p, g, m, v = _fresh(dev)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a cupy\.ndarray, got numpy\.ndarray"):
        _adam_call(p, [np.ones(10, np.float32)], m, v)
    _assert_untouched(dev, p, m, v)


def test_cuda_wrong_dtype(dev):
    p, g, m, v = _fresh(dev)
    with pytest.raises(TypeError, match=r"exp_avg_sqs\[0\] has dtype float64"):
        _adam_call(p, g, m, [dev.xp.zeros(10, np.float64)])
    with pytest.raises(TypeError, match=r"params\[0\] has dtype int32"):
        _adam_call([dev.xp.zeros(10, np.int32)], g, m, v)
    _assert_untouched(dev, p, m, v)


def test_cuda_wrong_shape_alias_and_layout(dev):
    p, g, m, v = _fresh(dev)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\]: shape"):
        _adam_call(p, g, [dev.xp.zeros(11, np.float32)], v)
    with pytest.raises(ValueError, match=r"shares memory"):
        _adam_call(p, g, m, m)
    with pytest.raises(ValueError, match=r"grads\[0\] must be C-contiguous"):
        _adam_call(p, [dev.xp.ones(20, np.float32)[::2]], m, v)
    _assert_untouched(dev, p, m, v)


def test_cuda_arrays_on_two_devices(dev):
    if dev.name != "cuda" or dev.xp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    p, g, m, v = _fresh(dev)
    with dev.xp.cuda.Device(1):
        v1 = [dev.xp.zeros(10, np.float32)]
    with pytest.raises(TypeError, match=r"exp_avg_sqs\[0\] is on device 1"):
        _adam_call(p, g, m, v1)
    _assert_untouched(dev, p, m, v)


def test_cuda_optimizer_class_end_to_end(dev):
    """optim.Adam on CuPy arrays: state on the device, same bits as NumPy's fused path."""
    params = make_params([(1000,), (3, 3)], np.float32)
    gpu = optim.AdamW(to_gpu(dev, params), lr=1e-2, weight_decay=0.1)
    cpu = optim.AdamW([p.copy() for p in params], lr=1e-2, weight_decay=0.1)
    grads = grad_stream([p.shape for p in params], np.float32)
    for _ in range(5):
        g = next(grads)
        gpu.step(to_gpu(dev, g))
        cpu.step(g)
    for a, b in zip(gpu.params, cpu.params):
        assert np.array_equal(bits(dev.asnumpy(a)), bits(b))
    assert all(isinstance(s, dev.ndarray) for v in gpu.state.values() for s in v)
    assert fusedopt.ops.backend_of(gpu.params) is _cuda


# ---- mixed precision and AMP ---------------------------------------------------------------------
# The expected bits come from the float32 reference: the kernels widen float16/bfloat16 exactly,
# compute in float32 with the float32-cast scalars, and round the params to nearest even (as
# NumPy's and ml_dtypes' astype do).

MIXED = [
    ("adam_", dict(lr=0.01, weight_decay=0.1, amsgrad=True), 3),
    ("adam_", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True), 2),
    ("sgd_", dict(lr=0.05, momentum=0.9, nesterov=True), 1),
    ("adagrad_", dict(lr=0.1, eps_root=1e-8), 1),
    ("rmsprop_", dict(lr=0.01, centered=True, momentum=0.9), 3),
    ("adamax_", dict(lr=0.01, weight_decay=0.01), 2),
]
MIXED_IDS = [f"{name}{i}" for i, (name, _, _) in enumerate(MIXED)]


def _dtype16(dev, name):
    if name == "float16":
        return np.dtype(np.float16)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    try:
        dev.asarray(np.zeros(2, ml_dtypes.bfloat16))
    except Exception as e:  # noqa: BLE001 -- a CuPy without bfloat16 arrays
        pytest.skip(f"this CuPy cannot hold bfloat16 arrays: {e!r}")
    return np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("amp", [False, True], ids=["noamp", "amp"])
@pytest.mark.parametrize("master", [False, True], ids=["nomaster", "master"])
@pytest.mark.parametrize("dtype16", ["float16", "bfloat16"])
@pytest.mark.parametrize("rule", MIXED, ids=MIXED_IDS)
def test_cuda_mixed_precision_equals_float32_reference(dev, rule, dtype16, master, amp):
    name, kw, nstates = rule
    dt = _dtype16(dev, dtype16)
    shapes = [(4097,), (13,), (1,), (70001,)]
    p16 = [x.astype(dt) for x in make_params(shapes, np.float32)]
    ref_p = [x.astype(np.float32) for x in p16]
    ref_states = [[np.zeros(s, np.float32) for s in shapes] for _ in range(nstates)]
    gpu_p = to_gpu(dev, p16)
    gpu_states = [to_gpu(dev, s) for s in ref_states]
    gpu_master = to_gpu(dev, ref_p) if master else None
    scale = np.float32(1024.0)
    extra = dict(master_params=gpu_master)
    if amp:
        extra.update(grad_scale=dev.asarray([scale]), found_inf=dev.xp.zeros(1, np.float32))
    grads = grad_stream(shapes, np.float32)
    for step in range(1, STEPS + 1):
        g16 = [((x * scale) if amp else x).astype(dt) for x in next(grads)]
        getattr(ops, name)(gpu_p, to_gpu(dev, g16), *gpu_states, step=step, **kw, **extra)
        g_ref = [g.astype(np.float32) / scale if amp else g.astype(np.float32) for g in g16]
        if not master:  # the kernel reads the rounded params back
            ref_p = [x.astype(dt).astype(np.float32) for x in ref_p]
        getattr(reference, name)(ref_p, g_ref, *ref_states, step=step, **kw)
    for i in range(len(shapes)):
        assert_same_bits(dev.asnumpy(gpu_p[i]), ref_p[i].astype(dt), f"params[{i}]")
        if master:
            assert_same_bits(dev.asnumpy(gpu_master[i]), ref_p[i], f"master_params[{i}]")
        for k in range(nstates):
            assert_same_bits(dev.asnumpy(gpu_states[k][i]), ref_states[k][i], f"state{k}[{i}]")
    assert not np.array_equal(dev.asnumpy(gpu_p[3]).view(np.uint16), p16[3].view(np.uint16))


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["f16", "f32"])
def test_cuda_found_inf_skips_the_step_on_device(dev, dtype):
    shapes = [(4097,), (3,)]
    p = to_gpu(dev, [x.astype(dtype) for x in make_params(shapes, np.float32)])
    m, v = ([dev.xp.zeros(s, np.float32) for s in shapes] for _ in range(2))
    master = [x.astype(np.float32) for x in p] if dtype == np.float16 else None
    before = [dev.asnumpy(x) for x in p + m + v + (master or [])]
    g = to_gpu(dev, [np.full(s, np.inf if i == 0 else 1.0, np.float32).astype(dtype)
                for i, s in enumerate(shapes)])
    scale, found = dev.asarray([np.float32(8.0)]), dev.xp.ones(1, np.float32)
    ops.adam_(p, g, m, v, step=1, lr=0.1, master_params=master, grad_scale=scale,
              found_inf=found)
    after = [dev.asnumpy(x) for x in p + m + v + (master or [])]
    for a, b in zip(before, after):
        assert_same_bits(b, a)
    found[...] = 0  # the same call now takes the step
    ops.adam_(p, g, m, v, step=1, lr=0.1, master_params=master, grad_scale=scale,
              found_inf=found)
    assert not np.array_equal(dev.asnumpy(m[1]), before[len(shapes) + 1])


@pytest.mark.parametrize("dtype16", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
def test_cuda_found_inf_check(dev, dtype16, bad):
    """found_inf_ flags a non-finite element anywhere in the list (one at the very end of the
    longest tensor too), and leaves found_inf alone when all are finite."""
    dt = _dtype16(dev, dtype16) if dtype16 in ("float16", "bfloat16") else np.dtype(dtype16)
    shapes = [(4097,), (3,), (70001,)]
    grads = [(x * 100).astype(dt) for x in make_params(shapes, np.float32)]
    if bad is not None:
        grads[2][-1] = bad
    found = dev.xp.zeros(1, np.float32)
    ops.found_inf_(to_gpu(dev, grads), found)
    assert float(dev.asnumpy(found)[0]) == (0.0 if bad is None else 1.0)
    found[...] = 1.0  # left as it is when every value is finite
    _cuda.found_inf_(to_gpu(dev, grads[:2]), found)
    assert float(dev.asnumpy(found)[0]) == 1.0
    with pytest.raises(TypeError, match=r"found_inf must hold one float32"):
        _cuda.found_inf_(to_gpu(dev, grads), dev.xp.zeros(1, np.float64))


def test_cuda_64_bit_indexing(dev):
    """A tensor of more than 2**31 elements: the elements around 2**31 and at the very end are
    updated as the reference updates them (SGD with weight decay: params and grads, 17 GB)."""
    if dev.name != "cuda":
        pytest.skip("needs a GPU with 20 GB free (too large for the host emulation)")
    n = 2**31 + 4099
    if dev.xp.cuda.Device().mem_info[0] < 20 * 2**30:
        pytest.skip("needs 20 GB of free device memory")
    p = dev.xp.full(n, 0.25, np.float32)
    g = dev.xp.full(n, 0.125, np.float32)
    windows = [slice(0, 1000), slice(2**31 - 600, 2**31 + 600), slice(n - 1000, n)]
    rng = np.random.default_rng(0)
    for w in windows:  # distinct values where the indices cross 2**31 and at the end
        p[w] = dev.asarray(rng.standard_normal(w.stop - w.start).astype(np.float32))
        g[w] = dev.asarray(rng.standard_normal(w.stop - w.start).astype(np.float32))
    before = [(dev.asnumpy(p[w]), dev.asnumpy(g[w])) for w in windows]
    ops.sgd_([p], [g], step=1, lr=0.1, weight_decay=0.01)
    for w, (p0, g0) in zip(windows, before):
        reference.sgd_([p0], [g0], step=1, lr=0.1, weight_decay=0.01)
        assert_same_bits(dev.asnumpy(p[w]), p0, f"params[{w.start}:{w.stop}]")
    del p, g
    dev.xp.get_default_memory_pool().free_all_blocks()
