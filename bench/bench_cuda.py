"""CUDA benchmarks: Adam float32 against the device's copy bandwidth, torch and naive CuPy.

    pytest bench/bench_cuda.py --benchmark-json=out.json     (skipped without CuPy or a GPU)

Each benchmark synchronizes the device before returning, so the times are whole steps. Bytes
moved per Adam step: params, grads, exp_avg, exp_avg_sq read and params, exp_avg, exp_avg_sq
written, 7 * 4 bytes per element; ``extra_info`` carries them and the element count, and the
copy benchmark (run first, in the same session) is marked ``extra_info['copy']``, so that
bench/report.py prints GB/s and the share of the copy bandwidth per row (bench/gpu_check.sh
runs it).

Groups: ``adam-f32-n=1e6`` / ``1e7`` / ``1e8`` (one tensor) and ``adam-f32-200tensors`` (a model
of 200 tensors, with the same elements as one flat buffer for comparison), and
``adam-state-n=1e7`` (issue 10: Adam with float32, bfloat16 and 8-bit state, float32 params and
grads, and bfloat16 params and grads with 8-bit state; csrc/cuda/compact.cu), each row's bytes
those of its own read/write pattern.
"""
from __future__ import annotations

import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
if not cupy.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from fusedopt import ops  # noqa: E402

try:
    import torch  # noqa: E402

    HAVE_TORCH_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAVE_TORCH_CUDA = False

BYTES_PER_ELEMENT = 7 * 4
SIZES = {"1e6": 10**6, "1e7": 10**7, "1e8": 10**8}
# A 200-tensor model: 100 weight matrices and 100 biases of assorted odd sizes, ~2.5e7 elements.
_rng = np.random.default_rng(0)
MODEL_SHAPES = [s for _ in range(100)
                for s in ((int(_rng.integers(300, 700)), int(_rng.integers(50, 90))),
                          (int(_rng.integers(1, 999)),))]
MODEL_N = int(sum(np.prod(s) for s in MODEL_SHAPES))

ROUNDS = 30


def _sync():
    """cudaDeviceSynchronize: waits for every stream, torch's included."""
    cupy.cuda.Device().synchronize()


def _time(benchmark, fn, *, group, nbytes, n, name):
    fn()  # compile / warm up outside the timing
    _sync()

    def step():
        fn()
        _sync()

    benchmark.group = group
    benchmark.name = name
    benchmark.extra_info.update(bytes=nbytes, elements=n,
                                device=cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=2)


def _adam_state(shapes, seed=0):
    rng = cupy.random.default_rng(seed)
    p = [rng.standard_normal(s, dtype=cupy.float32) for s in shapes]
    g = [rng.standard_normal(s, dtype=cupy.float32) * 1e-2 for s in shapes]
    return p, g, [cupy.zeros_like(x) for x in p], [cupy.zeros_like(x) for x in p]


def test_copy_bandwidth(benchmark):
    """Device-to-device copy of 2^28 float32 (1 GiB), counting bytes read and written."""
    n = 1 << 28
    src, dst = cupy.ones(n, cupy.float32), cupy.empty(n, cupy.float32)
    benchmark.extra_info["copy"] = True  # bench/report.py measures the others against it
    _time(benchmark, lambda: cupy.copyto(dst, src), group="copy", nbytes=2 * 4 * n, n=n,
          name="cupy.copyto")


def _fused(shapes):
    p, g, m, v = _adam_state(shapes)
    state = {"t": 0}

    def fn():
        state["t"] += 1
        ops.adam_(p, g, m, v, step=state["t"], lr=1e-3)
    return fn


def _naive(shapes):
    """Adam written as CuPy array expressions, one kernel per operator (what a user writes)."""
    p, g, m, v = _adam_state(shapes)
    state = {"t": 0}
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8

    def fn():
        state["t"] += 1
        t = state["t"]
        for pi, gi, mi, vi in zip(p, g, m, v):
            mi *= b1
            mi += (1 - b1) * gi
            vi *= b2
            vi += (1 - b2) * (gi * gi)
            pi -= lr * (mi / (1 - b1**t)) / (cupy.sqrt(vi / (1 - b2**t)) + eps)
    return fn


def _torch_fused(shapes):
    params = [torch.randn(s, device="cuda", dtype=torch.float32) for s in shapes]
    for q in params:
        q.grad = torch.randn_like(q) * 1e-2
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    return opt.step


IMPLS = {"fusedopt": _fused, "cupy-naive": _naive}
if HAVE_TORCH_CUDA:
    IMPLS["torch-fused"] = _torch_fused


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("size", sorted(SIZES, key=SIZES.get))
def test_adam_f32_one_tensor(benchmark, impl, size):
    n = SIZES[size]
    fn = IMPLS[impl]([(n,)])
    _time(benchmark, fn, group=f"adam-f32-n={size}", nbytes=BYTES_PER_ELEMENT * n, n=n,
          name=impl)


@pytest.mark.parametrize("impl", sorted(IMPLS) + ["fusedopt-flat"])
def test_adam_f32_200_tensors(benchmark, impl):
    if impl == "fusedopt-flat":
        fn = _fused([(MODEL_N,)])
    else:
        fn = IMPLS[impl](MODEL_SHAPES)
    assert len(MODEL_SHAPES) == 200
    _time(benchmark, fn, group="adam-f32-200tensors", nbytes=BYTES_PER_ELEMENT * MODEL_N,
          n=MODEL_N, name=impl)


def test_lbfgs_direction_1e7_m10(benchmark):
    """The two-loop recursion, n = 1e7 float32, m = 10 full pairs. Bytes: the first pass reads
    grad, s, y and writes out; each of the 2m - 1 dot passes reads out and two history rows and
    writes out; the last reads out and a row and writes out."""
    from fusedopt import _cuda  # noqa: PLC0415

    n, m = 10**7, 10
    rng = cupy.random.default_rng(1)
    s = rng.standard_normal((m, n), dtype=cupy.float32)
    y = s * 1.5 + rng.standard_normal((m, n), dtype=cupy.float32) * 0.01
    rho = 1.0 / cupy.sum(s.astype(cupy.float64) * y, axis=1)
    g = rng.standard_normal(n, dtype=cupy.float32)
    out = cupy.empty_like(g)
    nbytes = 4 * n * (4 + 4 * (2 * m - 1) + 3)
    _time(benchmark, lambda: _cuda.lbfgs_direction(out, g, s, y, rho, 3, m),
          group="lbfgs-direction-f32-n=1e7-m=10", nbytes=nbytes, n=n, name="fusedopt")


def test_first_call_after_cached_compile(benchmark):
    """Time to the first finished step in a fresh process state whose kernels are on disk:
    the in-memory memo is cleared, the disk cache is warm."""
    from fusedopt import _cuda  # noqa: PLC0415

    fn = _fused([(1000,)])
    fn()
    _sync()

    def first():
        _cuda.runtime.FUNCTIONS.clear()
        _cuda.runtime.TABLES.clear()
        fn()
        _sync()

    benchmark.group = "first-call"
    benchmark.name = "adam after cached compile"
    benchmark.pedantic(first, rounds=5, iterations=1)


# issue 10: bytes per element read + written by an Adam step: params and grads, exp_avg and
# exp_avg_sq (the absmax of 8-bit state, 4 bytes per 256 elements each, is left out).
STATE_CONFIGS = {"f32-state": (np.float32, "float32"), "bf16-state": (np.float32, "bfloat16"),
                 "u8-state": (np.float32, "uint8"), "bf16-params-u8-state": ("bfloat16", "uint8")}


def _state_bytes(param, state):
    pb = 2 if param == "bfloat16" else 4
    sb = {"float32": 4, "bfloat16": 2, "uint8": 1}[state]
    return 3 * pb + 4 * sb  # params read/written, grads read; two states read/written


@pytest.mark.parametrize("config", list(STATE_CONFIGS))
def test_adam_state_dtypes_1e7(benchmark, config):
    from fusedopt import quant  # noqa: PLC0415

    param, state = STATE_CONFIGS[config]
    if param == "bfloat16" or state == "bfloat16":
        import ml_dtypes  # noqa: PLC0415

        bf16 = np.dtype(ml_dtypes.bfloat16)
        try:
            cupy.asarray(np.zeros(2, bf16))
        except Exception as e:  # noqa: BLE001 -- a CuPy without bfloat16 arrays
            pytest.skip(f"this CuPy cannot hold bfloat16 arrays: {e!r}")
    n = SIZES["1e7"]
    rng = np.random.default_rng(0)
    p32 = rng.standard_normal(n).astype(np.float32)
    g32 = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    pdt = bf16 if param == "bfloat16" else np.float32
    p, g = [cupy.asarray(p32.astype(pdt))], [cupy.asarray(g32.astype(pdt))]

    def zeros(signed):
        if state == "uint8":
            q = quant.zeros(n, signed)
            return quant.QuantizedState(cupy.asarray(q.codes), cupy.asarray(q.absmax), signed)
        return cupy.asarray(np.zeros(n, bf16 if state == "bfloat16" else np.float32))

    m, v = [zeros(True)], [zeros(False)]
    t = {"t": 0}

    def fn():
        t["t"] += 1
        ops.adam_(p, g, m, v, step=t["t"], lr=1e-3)

    _time(benchmark, fn, group="adam-state-n=1e7", nbytes=_state_bytes(param, state) * n, n=n,
          name=config)
