"""global_norm and clip_by_global_norm_: fused vs reference, and the same bits for any threads."""
import math

import numpy as np
import pytest

import fusedopt
from fusedopt import _core, ops, reference
from cases import DTYPES, MULTI_SHAPES, bits, make_params


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shapes", [[(0,)], [(1,)], [(7,)], MULTI_SHAPES, [(278011,), (5,)]])
def test_global_norm_matches_reference(dtype, shapes):
    arrays = make_params(shapes, dtype)
    exact = math.sqrt(sum(float(np.sum(a.astype(np.longdouble) ** 2)) for a in arrays))
    got = ops.global_norm(arrays)
    ref = reference.global_norm(arrays)
    assert got == pytest.approx(ref, rel=1e-14, abs=0)
    assert got == pytest.approx(exact, rel=1e-14, abs=0)


def test_global_norm_is_the_same_bits_for_any_thread_count():
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(n).astype(np.float32) * 1e3 for n in (3_000_001, 17, 65537)]
    arrays.append(rng.standard_normal(400_000))
    norms = []
    for n in (1, 2, 3, 4):
        with fusedopt.num_threads(n):
            norms.append(ops.global_norm(arrays))
    assert len(set(norms)) == 1, norms
    # ... and for every instruction set.
    try:
        for isa in _core.available_isas():
            _core.set_isa(isa)
            assert ops.global_norm(arrays) == norms[0], isa
    finally:
        _core.set_isa("auto")


@pytest.mark.parametrize("mod", [ops, reference], ids=["fused", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_clip_by_global_norm(mod, dtype):
    arrays = make_params([(100,), (3, 7)], dtype)
    orig = [a.copy() for a in arrays]
    norm = reference.global_norm(arrays)
    got = mod.clip_by_global_norm_(arrays, max_norm=norm / 4)
    assert got == pytest.approx(norm, rel=1e-14)
    coef = dtype(norm / 4 / (got + 1e-6))  # from the norm the function itself computed
    for a, o in zip(arrays, orig):
        np.testing.assert_array_equal(a, o * coef)
    assert reference.global_norm(arrays) == pytest.approx(norm / 4, rel=1e-5)
    # Below the limit: untouched.
    before = [bits(a).copy() for a in arrays]
    mod.clip_by_global_norm_(arrays, max_norm=norm)
    assert all(np.array_equal(bits(a), b) for a, b in zip(arrays, before))


@pytest.mark.parametrize("mod", [ops, reference], ids=["fused", "reference"])
def test_clip_nonfinite(mod):
    a = [np.array([1.0, np.inf, 2.0])]
    with pytest.raises(ValueError, match="norm"):
        mod.clip_by_global_norm_(a, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(a[0], [1.0, np.inf, 2.0])
    assert mod.clip_by_global_norm_(a, 1.0) == math.inf  # as torch: scaled by 1/inf = 0
    assert np.isnan(a[0][1]) and a[0][0] == 0.0


@pytest.mark.parametrize("mod", [ops, reference], ids=["fused", "reference"])
def test_clip_bad_input(mod):
    a = [np.ones(3)]
    with pytest.raises(ValueError, match="max_norm"):
        mod.clip_by_global_norm_(a, -1.0)
    with pytest.raises(TypeError, match="arrays"):
        mod.clip_by_global_norm_([np.ones(3, np.int32)], 1.0)
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        mod.clip_by_global_norm_([ro * 10, ro], 1.0)
    np.testing.assert_array_equal(a[0], np.ones(3))


@pytest.mark.parametrize("mod", [ops, reference], ids=["fused", "reference"])
def test_clip_zero_norm_with_eps_zero(mod):
    """A zero norm needs no clipping: no ZeroDivisionError with eps=0, nothing scaled."""
    assert mod.clip_by_global_norm_([], 1.0, eps=0.0) == 0.0
    zeros = [np.zeros(4, np.float32), np.zeros(0)]
    assert mod.clip_by_global_norm_(zeros, 1.0, eps=0.0) == 0.0
    assert not zeros[0].any() and not np.signbit(zeros[0]).any()
    assert mod.clip_by_global_norm_([np.zeros(3)], 0.0, eps=0.0) == 0.0
    a = [np.array([3.0, 4.0])]
    assert mod.clip_by_global_norm_(a, 1.0, eps=0.0) == 5.0
    np.testing.assert_array_equal(a[0], [3.0 * 0.2, 4.0 * 0.2])


def test_lbfgs_direction_without_history_is_a_type_error():
    g = np.ones(3)
    with pytest.raises(TypeError, match="history"):
        ops.lbfgs_direction_(np.empty_like(g), g, None)
