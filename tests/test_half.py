"""16-bit params on the CPU: float16 and bfloat16 params and grads, float32 states and math, with
and without float32 master weights; the C++ kernels against the NumPy reference, bit for bit.

The reference (``fusedopt.reference``) runs the float32 equations on the master weights (or on
the param widened) and rounds with NumPy's / ml_dtypes' ``astype``; the kernels convert with the
bit code of ``csrc/include/fusedopt/half.h``. Every case of the registry, odd sizes, several
steps, every ISA copy and thread counts 1, 2, 3.
"""
from __future__ import annotations

import numpy as np
import pytest
from cases import CASE_IDS, CASES, SIZES, assert_same_bits, assert_same_state, bits, dtypes16, \
    grad_stream, threads_and_isa

from fusedopt import _core, ops, optim, reference

pytest.importorskip("ml_dtypes")  # the reference rounds bfloat16 with it
DTYPES16 = dtypes16()
STEPS = 3




def make16(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in shapes]


def run_pair(case, dtype, master, shapes, steps=STEPS, seed=0):
    """The same case on the kernels and on the reference: (kernel optimizer, reference one)."""
    p = make16(shapes, dtype, seed)
    fused = case.make([x.copy() for x in p], master_weights=master)
    ref = case.make([x.copy() for x in p], master_weights=master, backend="reference")
    grads = grad_stream(shapes, np.float32, seed=seed + 1)
    for _ in range(steps):
        g = [x.astype(dtype) for x in next(grads)]
        fused.step(g)
        ref.step(g)
    return p, fused, ref


@pytest.mark.parametrize("master", [False, True], ids=["nomaster", "master"])
@pytest.mark.parametrize("dtype", list(DTYPES16), ids=list(DTYPES16))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_16bit_params_equal_the_reference(case, dtype, master):
    shapes = [(n,) for n in SIZES]
    p0, fused, ref = run_pair(case, DTYPES16[dtype], master, shapes)
    assert_same_state(fused, ref)  # params, every state, master_param
    for name, arrs in fused.state.items():
        assert all(a.dtype == np.float32 for a in arrs), name
    assert set(fused.state) >= ({"master_param"} if master else set())
    assert master == ("master_param" in fused.state)
    big = fused.params[-1]
    assert big.dtype == DTYPES16[dtype]
    assert not np.array_equal(bits(big), bits(p0[-1])), "the params did not change"


@pytest.mark.parametrize("isa", _core.available_isas())
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("master", [False, True], ids=["nomaster", "master"])
@pytest.mark.parametrize("dtype", list(DTYPES16), ids=list(DTYPES16))
@pytest.mark.parametrize("case", [c for c in CASES if c.id in (
    "adam-wd-amsgrad", "rmsprop-centered-momentum", "sgd-nesterov-wd", "adamax-wd-max")],
    ids=lambda c: c.id)
def test_16bit_params_same_bits_for_any_threads_and_isa(case, dtype, master, threads, isa):
    shapes = [(278011,), (7,), (4097,), (100003,)]
    with threads_and_isa(threads, isa):
        _, fused, ref = run_pair(case, DTYPES16[dtype], master, shapes, steps=2, seed=3)
    assert_same_state(fused, ref)


# ---- the conversions, through a step that changes nothing ---------------------------------------

def special_float32():
    """float32 bit patterns around every rounding boundary of float16 and bfloat16, NaNs with
    payloads (quiet and signalling), infinities, denormals, zeros, and random patterns."""
    rng = np.random.default_rng(7)
    exps = np.arange(256, dtype=np.uint32) << 23
    mants = np.array([0, 1, 0xfff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x7fff, 0x8000,
                      0x8001, 0x18000, 0x10000, 0x17fff, 0x200000, 0x400000, 0x7fe000,
                      0x7fefff, 0x7ff000, 0x7fffff], np.uint32)
    grid = (exps[:, None] | mants[None, :]).ravel()
    u = np.concatenate([grid, rng.integers(0, 2**32, 1 << 18, dtype=np.uint64).astype(np.uint32)])
    u = np.concatenate([u, u | np.uint32(0x80000000)])
    return u.view(np.float32)


@pytest.mark.parametrize("master", [False, True], ids=["nomaster", "master"])
@pytest.mark.parametrize("dtype", list(DTYPES16), ids=list(DTYPES16))
def test_conversions_equal_numpy_and_ml_dtypes(dtype, master):
    """SGD with lr 0 and zero grads: p - 0 * 0 (a NaN comes out quiet, on both sides). Without
    master weights every 16-bit pattern is widened and narrowed again; with them every special
    float32 is rounded to the 16-bit dtype."""
    dt = DTYPES16[dtype]
    if master:
        w = special_float32()
        p = np.zeros(w.shape, dt)
    else:
        p = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(dt)
        w = None
    g = np.zeros(p.shape, dt)
    results = []
    for impl in (ops, reference):
        pp = [p.copy()]
        mw = [w.copy()] if master else None
        with np.errstate(invalid="ignore", over="ignore"):
            impl.sgd_(pp, [g], step=1, lr=0.0, master_params=mw)
        results.append((pp[0], mw))
    (pk, mk), (pr, mr) = results
    assert_same_bits(pk, pr, "params")
    if master:
        assert_same_bits(mk[0], mr[0], "master_params")
        finite = np.isfinite(w)
        with np.errstate(invalid="ignore", over="ignore"):
            direct = w.astype(dt)  # the rounding itself, for every number (NaNs are quieted)
        assert_same_bits(pk[finite], direct[finite], "params (finite)")
    else:
        keep = ~np.isnan(p.astype(np.float32))
        assert_same_bits(pk[keep], p[keep], "round trip")  # exact widening, then exact narrowing


def test_conversion_edge_cases():
    """A few values by hand: ties to even, overflow to infinity, subnormals kept."""
    f16 = np.float16
    w = np.array([65519.0, 65520.0, 2.0**-25, 2.0**-25 * 1.0000001, 2.0**-24 * 1.5, 1e-45,
                  np.float32(1.0) + np.float32(2.0**-11), -0.0], np.float32)
    p = [np.zeros(w.shape, f16)]
    ops.sgd_(p, [np.zeros(w.shape, f16)], step=1, lr=0.0, master_params=[w.copy()])
    expect = np.array([0x7bff, 0x7c00, 0x0000, 0x0001, 0x0002, 0x0000, 0x3c00, 0x8000],
                      np.uint16)
    np.testing.assert_array_equal(p[0].view(np.uint16), expect)
    bf = DTYPES16["bfloat16"]
    wb = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 3.4e38, 1e-40, np.nan], np.float32)
    pb = [np.zeros(wb.shape, bf)]
    with np.errstate(invalid="ignore"):
        ops.sgd_(pb, [np.zeros(wb.shape, bf)], step=1, lr=0.0, master_params=[wb.copy()])
    np.testing.assert_array_equal(pb[0].view(np.uint16)[:4],
                                  np.array([0x3f80, 0x3f82, 0x7f80, 0x0001], np.uint16))
    assert pb[0].view(np.uint16)[4] & 0x7fff == 0x7fc0


# ---- AMP and found_inf_ -------------------------------------------------------------------------

@pytest.mark.parametrize("master", [False, True], ids=["nomaster", "master"])
@pytest.mark.parametrize("dtype", list(DTYPES16), ids=list(DTYPES16))
def test_amp_with_16bit_params(dtype, master):
    dt = DTYPES16[dtype]
    shapes = [(4097,), (13,)]
    out = []
    for impl in (ops, reference):
        p = make16(shapes, dt, 5)
        m = [np.zeros(s, np.float32) for s in shapes]
        v = [np.zeros(s, np.float32) for s in shapes]
        w = [x.astype(np.float32) for x in p] if master else None
        grads = grad_stream(shapes, np.float32, seed=6)
        for step in (1, 2):
            g = [(x * 1024).astype(dt) for x in next(grads)]
            impl.adam_(p, g, m, v, step=step, lr=0.01, master_params=w,
                       grad_scale=np.array([1024.0], np.float32),
                       found_inf=np.zeros(1, np.float32))
        out.append(p + m + v + (w or []))
    for a, b in zip(*out):
        assert_same_bits(a, b)


@pytest.mark.parametrize("dtype", list(DTYPES16), ids=list(DTYPES16))
@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
def test_found_inf_of_16bit_arrays(dtype, bad):
    dt = DTYPES16[dtype]
    arrays = make16([(4097,), (3,), (70001,)], dt)
    if bad is not None:
        arrays[2][-1] = bad
    for impl in (ops, reference):
        found = np.zeros(1, np.float32)
        impl.found_inf_(arrays, found)
        assert found[0] == (0.0 if bad is None else 1.0)


# ---- bad input: raises naming the argument, nothing changed -------------------------------------

def _adam_lists(dt, n=5):
    p = [np.ones(n, dt), np.ones(3, dt)]
    return dict(p=p, g=[np.ones(n, dt), np.ones(3, dt)],
                m=[np.zeros(n, np.float32), np.zeros(3, np.float32)],
                v=[np.zeros(n, np.float32), np.zeros(3, np.float32)],
                w=[np.ones(n, np.float32), np.ones(3, np.float32)])


BAD = [
    ("master-dtype", lambda L, dt: L["w"].__setitem__(1, np.ones(3, dt)),
     r"master_params\[1\] has dtype (float16|bfloat16); expected float32", TypeError),
    ("master-shape", lambda L, dt: L["w"].__setitem__(0, np.ones(6, np.float32)),
     r"master_params\[0\]: shape \(6,\) does not match params\[0\] \(5,\)", ValueError),
    ("master-length", lambda L, dt: L["w"].pop(),
     r"master_params has 1 arrays but params has 2", ValueError),
    ("master-float32-params", lambda L, dt: (L["p"].__setitem__(1, np.ones(3, np.float32)),
                                             L["g"].__setitem__(1, np.ones(3, np.float32))),
     r"master_params: float32 master weights belong to float16 or bfloat16 params; "
     r"params\[1\] has dtype float32", TypeError),
    ("state-dtype", lambda L, dt: L["v"].__setitem__(1, np.zeros(3, dt)),
     r"exp_avg_sqs\[1\] has dtype (float16|bfloat16); expected float32", TypeError),
    ("grad-dtype", lambda L, dt: L["g"].__setitem__(0, np.ones(5, np.float32)),
     r"grads\[0\] has dtype float32", TypeError),
    ("master-aliases-state", lambda L, dt: L["w"].__setitem__(0, L["m"][0]),
     r"shares memory", ValueError),
    ("master-read-only", lambda L, dt: L["w"][1].setflags(write=False),
     r"master_params\[1\] is read-only", ValueError),
]


@pytest.mark.parametrize("impl", [ops, reference], ids=["ops", "reference"])
@pytest.mark.parametrize("dtype", list(DTYPES16), ids=list(DTYPES16))
@pytest.mark.parametrize("bad", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_and_changes_nothing(bad, dtype, impl):
    _, spoil, msg, exc = bad
    dt = DTYPES16[dtype]
    L = _adam_lists(dt)
    spoil(L, dt)
    before = [a.copy() for k in "pgmvw" for a in L[k]]
    with pytest.raises(exc, match=msg):
        impl.adam_(L["p"], L["g"], L["m"], L["v"], step=1, lr=0.1, master_params=L["w"])
    after = [a for k in "pgmvw" for a in L[k]]
    for a, b in zip(before, after):
        assert_same_bits(b, a)


def test_16bit_arrays_refused_where_not_taken():
    """The norm and the scaling take float32/float64 only: a 16-bit array is refused, not
    skipped."""
    a = [np.ones(3, np.float16)]
    with pytest.raises(TypeError, match=r"arrays\[0\] has dtype float16; expected float32 or "
                                        r"float64"):
        ops.global_norm(a)
    with pytest.raises(TypeError, match=r"arrays\[0\] has dtype float16"):
        ops.clip_by_global_norm_(a, 0.5)
    assert np.all(a[0] == 1)


# ---- the optimizer classes ----------------------------------------------------------------------

def test_master_weights_option():
    with pytest.raises(TypeError, match=r"master_weights: float32 master weights belong to "
                                        r"float16 or bfloat16 params; params\[0\] has dtype "
                                        r"float32"):
        optim.Adam([np.zeros(3, np.float32)], master_weights=True)
    with pytest.raises(TypeError, match=r"master_weights must be a bool"):
        optim.Adam([np.zeros(3, np.float16)], master_weights=1)
    p = np.array([1.0, 2.0, 3.0], np.float16)
    opt = optim.AdamW([p], lr=0.1, master_weights=True)
    assert opt.state["master_param"][0].dtype == np.float32
    assert opt.state["exp_avg"][0].dtype == np.float32
    opt.step([np.ones(3, np.float16)])
    sd = opt.state_dict()
    opt2 = optim.AdamW([p.copy()], lr=0.1, master_weights=True)
    opt2.load_state_dict(sd)
    g = [np.full(3, 0.5, np.float16)]
    opt.step(g)
    opt2.step(g)
    assert_same_state(opt, opt2)
    bad = dict(sd, state=dict(sd["state"], master_param=[np.zeros(3, np.float16)]))
    with pytest.raises(ValueError, match=r"master_param'\]\[0\] must have shape \(3,\) and "
                                         r"dtype float32"):
        opt2.load_state_dict(bad)


# ---- the torch section of the benchmarks (a smoke run: tiny sizes) ------------------------------

def test_bench_torch_section_runs(capsys):
    pytest.importorskip("torch")
    from fusedopt.benchmarks import cli  # noqa: PLC0415

    assert cli.main(["--quick", "--sizes", "1000,3000", "--rules", "torch"]) == 0
    out = capsys.readouterr().out
    for title in ("Adam float32, 1e+03 (1 tensor,", "Adam float32, 3e+03 (1 tensor,",
                  "Adam float32, 200 tensors, 3e+03 (200 tensors,",
                  "Adam bf16 params + float32 master, 3e+03 (1 tensor, 30 bytes/element"):
        assert f"torch: {title}" in out, out
    assert out.count("torch Adam(fused=True)") == 4
    assert out.count("bandwidth probe (same bytes)") == 4
