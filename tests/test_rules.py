"""Fused kernels against the NumPy reference: bit for bit, params and state, over many steps."""
import numpy as np
import pytest

import fusedopt
from fusedopt import _core
from cases import (CASE_IDS, CASES, DTYPES, MULTI_SHAPES, SIZES, assert_same_state, grad_stream,
                   make_params)

STEPS = 25


def run_pair(case, shapes, dtype, steps=STEPS, dtypes=None):
    """The same case on both backends, from the same params, with the same gradients."""
    params = make_params(shapes, dtype)
    if dtypes is not None:
        params = [p.astype(d) for p, d in zip(params, dtypes)]
    fused = case.make([p.copy() for p in params])
    ref = case.make([p.copy() for p in params], backend="reference")
    grads = grad_stream(shapes, dtypes or dtype)
    for _ in range(steps):
        g = next(grads)
        fused.step(g)
        ref.step(g)
    return fused, ref


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fused_equals_reference(case, dtype, size):
    fused, ref = run_pair(case, [(size,)], dtype)
    assert fused.step_count == ref.step_count == STEPS
    assert_same_state(fused, ref)
    if size:
        # The run really moved the parameters (a no-op kernel would pass the comparison above
        # only if the reference were a no-op too; this rules both out).
        start = make_params([(size,)], dtype)[0]
        assert not np.array_equal(fused.params[0], start)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_multi_tensor_equals_reference(case, dtype):
    fused, ref = run_pair(case, MULTI_SHAPES, dtype)
    assert_same_state(fused, ref)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_mixed_dtypes_in_one_call(case):
    dtypes = [np.float32, np.float64] * (len(MULTI_SHAPES) // 2) + [np.float32]
    fused, ref = run_pair(case, MULTI_SHAPES, np.float64, dtypes=dtypes[: len(MULTI_SHAPES)])
    assert [p.dtype for p in fused.params] == [np.dtype(d) for d in dtypes[: len(MULTI_SHAPES)]]
    assert_same_state(fused, ref)


def _run_fused(case, shapes, dtype, steps=STEPS):
    opt = case.make(make_params(shapes, dtype))
    grads = grad_stream(shapes, dtype)
    for _ in range(steps):
        opt.step(next(grads))
    return opt


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_same_bits_for_any_thread_count(case):
    shapes = [(278011,), (100003,), (5,)]
    with fusedopt.num_threads(1):
        one = _run_fused(case, shapes, np.float32, steps=10)
    with fusedopt.num_threads(2):
        two = _run_fused(case, shapes, np.float32, steps=10)
    with fusedopt.num_threads(3):  # more threads than cores: other slicing, same bits
        three = _run_fused(case, shapes, np.float32, steps=10)
    assert_same_state(one, two)
    assert_same_state(one, three)


ISAS = [i for i in _core.available_isas() if i != "generic"]


@pytest.mark.skipif(not ISAS, reason="this CPU runs only the generic kernels")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_instruction_set_gives_the_same_bits(case, dtype):
    """The loops compiled for generic x86-64, AVX2 and AVX-512 (where the CPU has them)."""
    shapes = [(4097,), (13,), (1000003,)]
    results = {}
    try:
        for isa in ["generic", *ISAS]:
            _core.set_isa(isa)
            assert fusedopt.isa() == isa
            results[isa] = _run_fused(case, shapes, dtype, steps=8)
    finally:
        _core.set_isa("auto")
    for isa in ISAS:
        assert_same_state(results["generic"], results[isa])


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_resume_from_state_dict_is_bit_identical(case, backend):
    shapes = [(7,), (4097,)]
    grads = list(zip(range(20), grad_stream(shapes, np.float32)))
    straight = case.make(make_params(shapes, np.float32), backend=backend)
    for _, g in grads:
        straight.step(g)

    first = case.make(make_params(shapes, np.float32), backend=backend)
    for _, g in grads[:10]:
        first.step(g)
    saved = first.state_dict()
    params = [p.copy() for p in first.params]
    for _, g in grads[10:12]:  # the saved copy must not follow later steps
        first.step(g)
    resumed = case.make(params, backend=backend)
    resumed.load_state_dict(saved)
    assert resumed.step_count == 10
    for _, g in grads[10:]:
        resumed.step(g)
    assert_same_state(straight, resumed)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_dict_is_a_copy(case):
    opt = case.make(make_params([(5,)], np.float64))
    opt.step([np.ones(5)])
    sd = opt.state_dict()
    for name, arrs in sd["state"].items():
        for a, b in zip(arrs, opt.state[name]):
            assert a is not b and not np.shares_memory(a, b)


def test_schedule_drives_lr():
    """lr as a callable of the number of steps taken: the same as a float lr changed by hand."""
    from fusedopt import schedules

    sched = schedules.inverse_time_decay(0.2, 1.0)
    p1, p2 = [np.ones(10, np.float32)], [np.ones(10, np.float32)]
    a = fusedopt.optim.SGD(p1, lr=sched, momentum=0.9)
    b = fusedopt.optim.SGD(p2, lr=0.2, momentum=0.9)
    for t in range(5):
        g = [np.full(10, t + 1.0, np.float32)]
        b.lr = sched(t)
        assert a.current_lr() == b.lr
        a.step(g)
        b.step(g)
    assert_same_state(a, b)


def test_ops_direct_call_matches_reference_for_each_rule():
    """The functional API on its own (no class), including optional state lists left None."""
    rng = np.random.default_rng(5)
    n = 1031
    for dtype in DTYPES:
        p0 = rng.standard_normal(n).astype(dtype)
        g = rng.standard_normal(n).astype(dtype)
        for mod_a, mod_b in [(fusedopt.ops, fusedopt.reference)]:
            pa, pb = p0.copy(), p0.copy()
            mod_a.sgd_([pa], [g], None, step=1, lr=0.1)
            mod_b.sgd_([pb], [g], None, step=1, lr=0.1)
            np.testing.assert_array_equal(pa, pb)
            np.testing.assert_array_equal(pa, p0 - dtype(0.1) * g)


def test_scalar_records_match_the_cpp_structs():
    """Each fusedopt._scalars record names the fields of rules::XScalars then rules::XFlags, in
    the same order, as the C++ structs list them (csrc/include/fusedopt/rules/*.h): a field
    added, dropped or swapped on one side only fails here."""
    from fusedopt import _scalars

    cpp = _core.scalar_fields()
    assert set(cpp) == {r.__name__ for r in _scalars.RECORDS}
    for record in _scalars.RECORDS:
        assert list(record._fields) == cpp[record.__name__], record.__name__
        n = record._fields.index("maximize")
        assert 0 < n < len(record._fields)
        # The flags come last and are what _scalars computes them to be (no backend derives).
        assert record._fields[n:][:2] == ("maximize", "weight_decay_mode")


def test_core_refuses_a_wrong_record():
    from fusedopt import _scalars

    p, g = [np.ones(3)], [np.ones(3)]
    s = _scalars.sgd(step=1, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0,
                     nesterov=False, maximize=False)
    with pytest.raises(TypeError, match="SgdScalars"):
        _core.adam(p, g, [np.zeros(3)], [np.zeros(3)], None, s)
    with pytest.raises(TypeError, match="SgdScalars"):
        _core.sgd(p, g, None, tuple(s))
    with pytest.raises(TypeError, match="lr"):
        _core.sgd(p, g, None, s._replace(lr="x"))
    assert (p[0] == 1).all()


def test_weight_decay_mode_is_set_once_in_scalars():
    from fusedopt import _scalars

    kw = dict(step=1, lr=0.1, betas=(0.9, 0.99), eps=1e-8, eps_root=0.0, amsgrad=False,
              maximize=False)
    for wd, decoupled, mode in ((0.0, True, 0), (0.1, False, 1), (0.1, True, 2)):
        s = _scalars.adam(weight_decay=wd, decoupled_weight_decay=decoupled, **kw)
        assert s.weight_decay_mode == mode


def test_slots_and_threads_come_from_the_module():
    from fusedopt import _cuda

    assert _cuda.SLOTS == _core.SLOTS == 6
    assert _cuda.THREADS == _core.THREADS == 256
