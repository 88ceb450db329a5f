"""AMP-style steps on the CPU: ``grad_scale``/``found_inf`` for NumPy arrays and ``ops.found_inf_``.

Table-driven over every case of tests/cases.py: with ``found_inf == 0`` the fused step sees
``g / grad_scale`` and equals the reference (which implements the same semantics) bit for bit;
with ``found_inf != 0`` neither changes anything.
"""
from __future__ import annotations


import numpy as np
import pytest

from fusedopt import ops, reference
from cases import (CASE_IDS, CASES, DTYPES, MULTI_SHAPES, assert_same_bits, assert_same_state,
                   bits, grad_stream, make_params)

RULES = ("sgd_", "adagrad_", "rmsprop_", "adam_", "adamax_")
AMP = ("grad_scale", "found_inf")


def amp_pair(scale, found=0.0):
    return np.array([scale], np.float32), np.array([found], np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_scaled_step_equals_reference(case, dtype):
    fused = case.make(make_params(MULTI_SHAPES, dtype))
    ref = case.make(make_params(MULTI_SHAPES, dtype), backend="reference")
    scale = 1024.0
    stream = grad_stream(MULTI_SHAPES, dtype)
    for _ in range(3):
        grads = [g * dtype(scale) for g in next(stream)]
        fused.step([g.copy() for g in grads], **dict(zip(AMP, amp_pair(scale))))
        ref.step(grads, **dict(zip(AMP, amp_pair(scale))))
    assert_same_state(fused, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_found_inf_skips_the_step(case, dtype):
    for backend in ("auto", "reference"):
        opt = case.make(make_params(MULTI_SHAPES, dtype), backend=backend)
        stream = grad_stream(MULTI_SHAPES, dtype)
        opt.step(next(stream))  # states exist and are non-zero
        before = ([bits(p).copy() for p in opt.params],
                  {k: [bits(x).copy() for x in v] for k, v in opt.state.items()})
        grads = next(stream)
        grads[0].reshape(-1)[0] = np.nan
        opt.step(grads, **dict(zip(AMP, amp_pair(1.0, found=1.0))))
        assert opt.step_count == 1, backend
        for p, b in zip(opt.params, before[0]):
            assert np.array_equal(bits(p), b), backend
        for k, v in opt.state.items():
            for x, b in zip(v, before[1][k]):
                assert np.array_equal(bits(x), b), (backend, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_found_inf_check_numpy(dtype):
    arrays = make_params([(5,), (0,), (100_003,), (3, 4)], dtype)
    found = np.zeros(1, np.float32)
    ops.found_inf_(arrays, found)
    assert found[0] == 0.0
    for bad in (np.inf, -np.inf, np.nan):
        for where in ((2, -1), (0, 0), (3, 5)):
            a = [x.copy() for x in arrays]
            a[where[0]].reshape(-1)[where[1]] = bad
            found[0] = 0.0
            ops.found_inf_(a, found)
            assert found[0] == 1.0, (bad, where)
            found_ref = np.zeros(1, np.float32)
            reference.found_inf_(a, found_ref)
            assert found_ref[0] == 1.0
    found[0] = 1.0
    ops.found_inf_(arrays, found)  # left as it is
    assert found[0] == 1.0


def test_found_inf_mixed_dtypes_and_threads():
    import fusedopt

    arrays = [np.ones(200_000, np.float32), np.ones(300_001, np.float64)]
    arrays[1][-1] = np.inf
    n = fusedopt._core.get_num_threads()
    try:
        for t in (1, 2, 3):
            fusedopt._core.set_num_threads(t)
            found = np.zeros(1, np.float32)
            ops.found_inf_(arrays, found)
            assert found[0] == 1.0
    finally:
        fusedopt._core.set_num_threads(n)


@pytest.mark.parametrize("module", [ops, reference], ids=["fused", "reference"])
@pytest.mark.parametrize("kw,exc,words", [
    (dict(grad_scale=np.ones(1, np.float32)), ValueError, "go together"),
    (dict(found_inf=np.zeros(1, np.float32)), ValueError, "go together"),
    (dict(grad_scale=np.ones(1, np.float64), found_inf=np.zeros(1, np.float32)), TypeError,
     "grad_scale"),
    (dict(grad_scale=np.ones(1, np.float32), found_inf=np.zeros(2, np.float32)), TypeError,
     "found_inf"),
    (dict(grad_scale=1.0, found_inf=np.zeros(1, np.float32)), TypeError, "grad_scale"),
])
def test_bad_amp_arguments(module, kw, exc, words):
    p = [np.ones(4, np.float32)]
    g = [np.ones(4, np.float32)]
    m, v = [np.zeros(4, np.float32)], [np.zeros(4, np.float32)]
    with pytest.raises(exc, match=words):
        module.adam_(p, g, m, v, step=1, **kw)
    assert (p[0] == 1).all() and not m[0].any()


def test_found_inf_bad_arguments():
    a = [np.ones(3, np.float32)]
    with pytest.raises(TypeError, match="found_inf"):
        ops.found_inf_(a, np.zeros(1, np.float64))
    with pytest.raises(TypeError, match="arrays"):
        ops.found_inf_(np.ones(3), np.zeros(1, np.float32))
    found = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match="found_inf"):
        ops.found_inf_([found], found)


def test_scaled_grads_are_not_modified():
    p, g = [np.ones(5, np.float32)], [np.full(5, 8.0, np.float32)]
    ops.sgd_(p, g, step=1, lr=0.5, grad_scale=np.array([4.0], np.float32),
             found_inf=np.zeros(1, np.float32))
    assert_same_bits(p[0], np.full(5, 0.0, np.float32))
    assert (g[0] == 8.0).all()
