"""fusedopt.torch's cached kernel calls: ``fusedopt._core.TensorPlan`` (the arrays checked once,
the grads at each step, in C++) and the per-group ``_Plan`` that checks a step in bulk (skipped
where torch is absent).

Ground truths: the same steps through the general path (every param checked and viewed as a
NumPy array, as before plans existed) must give the same bits, over steps whose grads are kept
(``zero_grad(set_to_none=False)``) or made anew (torch's default); every event that a plan must
notice (a grad set to None, ``p.data = ...``, a state or the whole state replaced, a bad grad)
sends the group back to the general path, and a bad input raises naming the param with nothing
changed. ``TensorPlan`` itself is checked against ``fusedopt.ops`` on lists of arrays, and
fuzzed: every bad array or grad (dtype, size, shape, layout, device, alignment, aliasing, freed
storage, a raw pointer) is refused with nothing changed.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from cases import CASES, assert_same_bits

torch = pytest.importorskip("torch")

from fusedopt import _core, ops  # noqa: E402
import fusedopt.torch as ft  # noqa: E402
from fusedopt.torch import optimizers as fto  # noqa: E402

SIZES = [(7, 3), (1,), (0,), (5,), (2, 2, 3)]  # odd sizes, an empty tensor


def model_params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SIZES]


def two_groups(params):
    return [{"params": params[:3]}, {"params": params[3:], "weight_decay": 0.0}]


def set_grads(params, k, fresh):
    g = torch.Generator().manual_seed(100 + k)
    for p in params:
        v = torch.randn(p.shape, generator=g).to(p.dtype)
        if fresh or p.grad is None:
            p.grad = v
        else:
            p.grad.copy_(v)


def run(case, dtype, planned, fresh, steps=6, mw=False):
    params = model_params(dtype)
    cls = getattr(ft, case.cls.__name__)
    kw = dict(master_weights=True) if mw else {}
    opt = cls(two_groups(params), **case.options, **kw)
    for k in range(steps):
        set_grads(params, k, fresh)
        opt.step()
        assert bool(opt._plans) == planned, "the plan path was (not) taken"
    return params, opt


def assert_same(a, b):
    (pa, oa), (pb, ob) = a, b
    for i, (x, y) in enumerate(zip(pa, pb)):
        assert_same_bits(x.detach().float().numpy(), y.detach().float().numpy(), f"params[{i}]")
    for x, y in zip(pa, pb):
        sa, sb = oa.state[x], ob.state[y]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("fresh", [False, True], ids=["kept-grads", "fresh-grads"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_planned_steps_equal_the_general_path_bit_for_bit(case, fresh, monkeypatch):
    planned = run(case, torch.float32, True, fresh)
    with monkeypatch.context() as m:
        m.setattr(fto._FusedOptimizer, "_plan_of", lambda *a: None)
        general = run(case, torch.float32, False, fresh)
    assert_same(planned, general)


@pytest.mark.parametrize("mw", [False, True], ids=["plain", "master"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_planned_steps_other_dtypes(dtype, mw, monkeypatch):
    pytest.importorskip("ml_dtypes")
    case = next(c for c in CASES if c.id == "adamw-amsgrad-max")
    planned = run(case, dtype, True, True, mw=mw)
    with monkeypatch.context() as m:
        m.setattr(fto._FusedOptimizer, "_plan_of", lambda *a: None)
        general = run(case, dtype, False, True, mw=mw)
    assert_same(planned, general)


def test_the_fast_check_notices_every_change():
    """Each event below makes the next step take the general path once (the plan is dropped
    and made again), and the run stays equal to one without plans."""
    def events(params, opt):
        yield lambda: None                                   # nothing: the plan holds
        yield lambda: setattr(params[1], "grad", None)       # a param skipped (no plan)
        yield lambda: None                                   # all grads again: a new plan
        yield lambda: setattr(params[0], "data", params[0].detach().clone())
        yield lambda: opt.state[params[3]].__setitem__(
            "exp_avg", opt.state[params[3]]["exp_avg"].clone())
        yield lambda: opt.load_state_dict(opt.state_dict())
        yield lambda: opt.param_groups[1].__setitem__("amsgrad", True)   # new state keys
        yield lambda: opt.param_groups[0].__setitem__("lr", 0.003)       # read each step
        yield lambda: params[4].grad.copy_(torch.ones_like(params[4]))   # kept grad, in place

    def train(planned):
        params = model_params(torch.float32)
        opt = ft.Adam(two_groups(params), lr=0.01)
        set_grads(params, 99, fresh=True)
        opt.step()
        seen = []
        for k, event in enumerate(events(params, opt)):
            set_grads(params, k, fresh=k % 2 == 0)
            event()
            before = dict(opt._plans)
            opt.step()
            seen.append(all(before.get(n) is opt._plans.get(n) for n in (0, 1)))
        return params, opt, seen

    params, opt, seen = train(True)
    assert seen == [True, False, False, False, False, False, False, True, True]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fto._FusedOptimizer, "_plan_of", lambda *a: None)
        ref = train(False)
    assert_same((params, opt), ref[:2])


def test_bad_grads_on_the_planned_path_raise_naming_the_param_and_change_nothing():
    params = model_params(torch.float32)
    opt = ft.Adam(two_groups(params), lr=0.01)
    set_grads(params, 0, fresh=True)
    opt.step()
    assert set(opt._plans) == {0, 1}
    set_grads(params, 1, fresh=False)
    saved = [p.detach().clone() for p in params]
    state = {k: v.clone() for k, v in opt.state[params[3]].items()}

    def unchanged():
        for p, q in zip(params, saved):
            assert torch.equal(p, q)
        for k, v in state.items():
            assert torch.equal(opt.state[params[3]][k], v)

    good = params[3].grad
    params[3].grad = good.to_sparse()
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\].*sparse"):
        opt.step()
    unchanged()
    params[3].grad = good.clone()
    params[3].grad.data = torch.zeros(4)     # another shape behind torch's back
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\].*shape"):
        opt.step()
    unchanged()
    # a grad that is the param's own memory: refused by the plan's pointer check
    params[3].grad = params[3].detach()
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\].*grads\[0\] shares "
                                         r"memory with params\[0\]"):
        opt.step()
    unchanged()
    params[3].grad = good
    opt.step()
    assert not torch.equal(params[3], saved[3])


# ---------------------------------------------------------------------------------------------
# fusedopt._core.TensorPlan on NumPy arrays


def arrays(sizes, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for n in sizes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_plan_steps_as_the_lists_do(dtype):
    sizes = [5, 0, 16411, 3]
    lists = [arrays(sizes, dtype, s) for s in range(4)]
    lists[3] = [np.abs(v) for v in lists[3]]
    copies = [[a.copy() for a in x] for x in lists]
    p, g, m, v = lists
    plan = ops.tensor_plan(p, [m, v])
    for step in (1, 2, 3):
        plan.set_grads(g)
        ops.adam_(plan, plan, plan, plan, step=step, lr=0.01, weight_decay=0.1,
                  decoupled_weight_decay=True)
        cp, cg, cm, cv = copies
        ops.adam_(cp, cg, cm, cv, step=step, lr=0.01, weight_decay=0.1,
                  decoupled_weight_decay=True)
    for x, y in zip(lists, copies):
        for a, b in zip(x, y):
            assert_same_bits(a, b)


def test_a_plan_takes_torch_grads():
    """Grads given as torch CPU tensors: the same bits as their NumPy views."""
    sizes = [5, 16411, 3]
    p, g, m = (arrays(sizes, np.float32, s) for s in range(3))
    copies = [[a.copy() for a in x] for x in (p, g, m)]
    plan = ops.tensor_plan(p, [m])
    tg = [torch.from_numpy(a) for a in g]
    for step in (1, 2):
        plan.set_grads(tg)
        ops.sgd_(plan, plan, plan, step=step, lr=0.1, momentum=0.9)
        ops.sgd_(copies[0], copies[1], copies[2], step=step, lr=0.1, momentum=0.9)
    for x, y in zip((p, g, m), copies):
        for a, b in zip(x, y):
            assert_same_bits(a, b)


def test_a_plan_with_master_weights_and_mixed_dtypes():
    ml = pytest.importorskip("ml_dtypes")
    sizes = [9, 4]
    p = [np.linspace(-1, 1, 9).astype(ml.bfloat16), np.linspace(0, 1, 4).astype(np.float16)]
    g = [np.full(9, 0.5, ml.bfloat16), np.full(4, -0.25, np.float16)]
    m = [np.zeros(n, np.float32) for n in sizes]
    v = [np.zeros(n, np.float32) for n in sizes]
    w = [x.astype(np.float32) for x in p]
    ref = [[a.copy() for a in x] for x in (p, g, m, v, w)]
    plan = ops.tensor_plan(p, [m, v], w)
    plan.set_grads(g)
    ops.adam_(plan, plan, plan, plan, step=1, lr=0.1, master_params=plan)
    ops.adam_(*ref[:4], step=1, lr=0.1, master_params=ref[4])
    for x, y in zip((p, m, v, w), ref[:1] + ref[2:]):
        for a, b in zip(x, y):
            assert_same_bits(a, b)


def test_plan_checks():
    """The plan derives every pointer, dtype and size from the arrays and checks them as the
    kernels' lists are checked."""
    p, m, g = (arrays([4, 4], np.float32, s) for s in range(3))
    with pytest.raises(TypeError, match=r"params\[0\] has dtype int8"):
        ops.tensor_plan([np.zeros(4, np.int8), p[1]], [m])
    with pytest.raises(ValueError, match="slots must have 6"):
        from fusedopt import _core
        _core.TensorPlan([p, None, m, None, None])
    with pytest.raises(ValueError, match="grads.*must be None"):
        from fusedopt import _core
        _core.TensorPlan([p, g, m, None, None, None])
    with pytest.raises(ValueError, match="params.*required"):
        from fusedopt import _core
        _core.TensorPlan([None] * 6)
    with pytest.raises(ValueError, match="at most 3"):
        ops.tensor_plan(p, [m, m, m, m])
    with pytest.raises(ValueError, match=r"state0 has 1 arrays"):
        ops.tensor_plan(p, [m[:1]])
    with pytest.raises(ValueError, match=r"state0\[1\] shares memory with params\[1\]|"
                                         r"params\[1\] shares memory with state0\[1\]"):
        big = np.zeros(8, np.float32)
        ops.tensor_plan([p[0], big[:4]], [[m[0], big[2:6]]])
    with pytest.raises(ValueError, match=r"params\[0\] must be aligned"):
        raw = np.zeros(17, np.uint8)[1:].view(np.float32)
        ops.tensor_plan([raw, p[1]], [m])
    with pytest.raises(ValueError, match=r"params\[0\] must be C-contiguous"):
        ops.tensor_plan([np.zeros(8, np.float32)[::2], p[1]], [m])
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        ro = p[0].copy()
        ro.flags.writeable = False
        ops.tensor_plan([ro, p[1]], [m])
    with pytest.raises(ValueError, match=r"state0\[1\]: shape \(5,\) does not match"):
        ops.tensor_plan(p, [[m[0], np.zeros(5, np.float32)]])
    with pytest.raises(TypeError, match=r"state0\[1\] has dtype float64"):
        ops.tensor_plan(p, [[m[0], np.zeros(4)]])
    with pytest.raises(TypeError, match=r"state0\[0\] has dtype uint8"):  # 8-bit codes
        ops.tensor_plan(p, [[np.zeros(4, np.uint8), m[1]]])
    with pytest.raises(TypeError, match=r"master_params: float32 master weights belong"):
        ops.tensor_plan(p, [], m)
    with pytest.raises(TypeError, match=r"params\[0\] must be a numpy.ndarray, got int"):
        ops.tensor_plan([1234, 5678])
    with pytest.raises(TypeError, match=r"state0 must be a list or tuple"):
        ops.tensor_plan(p, [m[0]])
    plan = ops.tensor_plan(p, [m])
    assert len(plan) == 2
    before = [a.copy() for a in p + m]

    def unchanged():
        for a, b in zip(p + m, before):
            assert_same_bits(a, b)

    with pytest.raises(ValueError, match="set_grads"):   # no grads given yet
        ops.sgd_(plan, plan, plan, step=2, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="grads has 1 items"):
        plan.set_grads(g[:1])
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with state0\[1\]"):
        plan.set_grads([g[0], m[1]])
    plan.set_grads(g)
    with pytest.raises(TypeError, match="momentum_buffers: must be the TensorPlan"):
        ops.sgd_(plan, plan, m, step=2, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="holds params, grads, state0; this call takes "
                                         "params, grads, state0, state1"):
        ops.adam_(plan, plan, plan, plan, step=2, lr=0.1)
    unchanged()
    ops.sgd_(plan, plan, plan, step=2, lr=0.1, momentum=0.9)
    assert not np.array_equal(p[0], before[0])
    with pytest.raises(ValueError, match="set_grads"):   # each set_grads serves one call
        ops.sgd_(plan, plan, plan, step=3, lr=0.1, momentum=0.9)


def _bad_grads():
    """(name, grads for a plan of two float32 (4,) params, error type, message): every way a
    grad can be wrong."""
    ok = torch.ones(4)
    freed = torch.ones(4)
    freed.untyped_storage().resize_(0)
    shrunk = torch.ones(4)
    shrunk.untyped_storage().resize_(8)   # two floats left under a (4,) tensor
    tail = torch.ones(8)[4:]              # elements 4..7 of its storage
    tail.untyped_storage().resize_(20)    # five floats left: the tail needs eight
    base = torch.ones(9)
    return [
        ("wrong dtype (numpy)", [np.ones(4), np.ones(4, np.float32)], TypeError,
         r"grads\[0\] has dtype float64"),
        ("wrong dtype (torch)", [ok, torch.ones(4, dtype=torch.float64)], TypeError,
         r"grads\[1\] has dtype torch.float64"),
        ("bfloat16 for float32", [torch.ones(4, dtype=torch.bfloat16), ok], TypeError,
         r"grads\[0\] has dtype torch.bfloat16"),
        ("too small (numpy)", [np.ones(3, np.float32), ok], ValueError,
         r"grads\[0\]: its shape does not match"),
        ("too large (torch)", [ok, torch.ones(5)], ValueError, r"grads\[1\]: its shape"),
        ("same size, other shape", [ok, torch.ones(2, 2)], ValueError, r"grads\[1\]: its shape"),
        ("not contiguous (torch)", [base[::2][:4], ok], ValueError,
         r"grads\[0\] must be contiguous"),
        ("not contiguous (numpy)", [np.ones(8, np.float32)[::2], ok], ValueError,
         r"grads\[0\] must be C-contiguous"),
        ("misaligned (numpy)", [np.zeros(17, np.uint8)[1:].view(np.float32), ok], ValueError,
         r"grads\[0\] must be aligned"),
        ("misaligned (torch)", [torch.from_numpy(np.zeros(17, np.uint8)[1:].view(np.float32)),
                                ok], ValueError, r"grads\[0\] must be aligned"),
        ("freed storage", [freed, ok], ValueError, r"grads\[0\]: holds no memory"),
        ("storage shrunk in place", [ok, shrunk], ValueError,
         r"grads\[1\]: its storage holds 8 bytes, fewer than the 16"),
        ("a view past its shrunk storage", [tail, ok], ValueError,
         r"grads\[0\]: its storage holds 20 bytes, fewer than the 32"),
        ("meta tensor", [torch.ones(4, device="meta"), ok], ValueError,
         r"grads\[0\]: not on the CPU"),
        ("sparse", [torch.ones(4).to_sparse(), ok], TypeError, r"grads\[0\]: only dense"),
        ("a list", [[1.0] * 4, ok], TypeError, r"grads\[0\] must be a numpy.ndarray or a "
                                               r"torch.Tensor, got list"),
        ("an int (a pointer)", [ok.data_ptr(), ok], TypeError, r"grads\[0\] must be"),
        ("a tensor subclass", [torch.ones(4).as_subclass(_Sub), ok], TypeError,
         r"grads\[0\] must be a numpy.ndarray or a torch.Tensor, got _Sub"),
        ("too few", [ok], ValueError, "grads has 1 items"),
        ("not a list", ok, TypeError, "grads must be a list or tuple"),
    ]


class _Sub(torch.Tensor):
    pass


@pytest.mark.parametrize("case", range(20))
def test_set_grads_refuses_every_bad_grad_with_nothing_changed(case):
    name, grads, exc, msg = _bad_grads()[case]
    p, m = (arrays([4, 4], np.float32, s) for s in range(2))
    plan = ops.tensor_plan(p, [m])
    before = [a.copy() for a in p + m]
    read = _core._torch_shim()
    with pytest.raises(exc, match=msg):
        plan.set_grads(grads)
    assert _core._torch_shim() == read  # the shim took none of them: the look-ups named it
    with pytest.raises(ValueError, match="set_grads"):  # nothing was bound
        ops.sgd_(plan, plan, plan, step=1, lr=0.1, momentum=0.9)
    for a, b in zip(p + m, before):
        assert_same_bits(a, b)


def test_bad_grads_table_is_whole():
    assert len(_bad_grads()) == 20


def test_set_grads_takes_views_that_end_at_their_storage():
    """A grad that is a view at an offset, ending exactly at its storage's end, is taken (the
    storage check counts the offset), and steps as the same values as NumPy arrays."""
    p, m = (arrays([4, 4], np.float32, s) for s in range(2))
    q, n = [a.copy() for a in p], [a.copy() for a in m]
    base = torch.arange(9, dtype=torch.float32)
    grads = [base[5:], base[1:5]]
    plan = ops.tensor_plan(p, [m])
    plan.set_grads(grads)
    ops.sgd_(plan, plan, plan, step=1, lr=0.1, momentum=0.9)
    ops.sgd_(q, [g.numpy() for g in grads], n, step=1, lr=0.1, momentum=0.9)
    for a, b in zip(p + m, q + n):
        assert_same_bits(a, b)


def test_torch_grads_are_read_through_torchs_c_shim_where_it_exists():
    """Where this torch has the C shim (torch._C._aoti's handles, libtorch_cpu's
    aoti_torch_* functions), set_grads reads torch grads through it; elsewhere the attribute
    look-ups serve (the same checks, the same results)."""
    aoti = getattr(torch._C, "_aoti", None)
    if sys.platform == "linux" and hasattr(aoti, "unsafe_alloc_void_ptrs_from_tensors"):
        assert _core._torch_shim() is not None


def _shim_grads():
    """(name, param dtype, grads as torch tensors for params of sizes 5, 0, 3) that the shim
    must take."""
    base = torch.arange(9, dtype=torch.float32)
    pars = [torch.nn.Parameter(torch.ones(n)) for n in (5, 0, 3)]
    g = torch.ones(5)
    return [
        ("fresh float32", np.float32, [torch.full((5,), 0.5), torch.ones(0), torch.ones(3)]),
        ("float64", np.float64, [torch.ones(5, dtype=torch.float64),
                                 torch.ones(0, dtype=torch.float64),
                                 torch.ones(3, dtype=torch.float64)]),
        ("float16", np.float16, [torch.ones(5, dtype=torch.float16),
                                 torch.ones(0, dtype=torch.float16),
                                 torch.ones(3, dtype=torch.float16)]),
        ("views at offsets, one ending at its storage's end", np.float32,
         [base[4:], base[:0], base[1:4]]),
        ("Parameters as grads", np.float32, pars),
        ("one grad twice (read only)", np.float32, [g, torch.ones(0), g[:3]]),
    ]


@pytest.mark.parametrize("case", range(6))
def test_set_grads_through_the_shim_steps_as_numpy_views_do(case):
    name, dtype, grads = _shim_grads()[case]
    if _core._torch_shim() is None:
        pytest.skip("this torch has no C shim (the look-ups serve; tested above)")
    p, m = (arrays([5, 0, 3], dtype, s) for s in range(2))
    sdt = np.float64 if dtype == np.float64 else np.float32  # (float16 params: float32 states)
    m = [a.astype(sdt) for a in m]
    q, n = [a.copy() for a in p], [a.copy() for a in m]
    plan = ops.tensor_plan(p, [m])
    read = _core._torch_shim()
    plan.set_grads(grads)
    assert _core._torch_shim() == read + 3, name
    ops.sgd_(plan, plan, plan, step=1, lr=0.1, momentum=0.9)
    ops.sgd_(q, [t.detach().numpy() for t in grads], n, step=1, lr=0.1, momentum=0.9)
    for a, b in zip(p + m, q + n):
        assert_same_bits(a, b)


def test_shim_grads_table_is_whole():
    assert len(_shim_grads()) == 6


def test_set_grads_overlapping_the_plan_refused():
    """A grad aliasing a param, a state or straddling two arrays of the plan; a read-only
    overlap among grads themselves is allowed (they are only read)."""
    buf = np.zeros(16, np.float32)
    p = [buf[0:4], buf[8:12]]
    m = [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    plan = ops.tensor_plan(p, [m])
    t = torch.from_numpy(buf)
    for grads, who in [([t[0:4], t[12:16]], r"params\[0\]"), ([t[12:16], t[6:10]], r"params\[1\]"),
                       ([torch.from_numpy(m[1]), t[12:16]], r"state0\[1\]")]:
        with pytest.raises(ValueError, match=r"grads\[\d\] shares memory with " + who):
            plan.set_grads(grads)
    g = torch.ones(4)
    plan.set_grads([g, g])  # the same grad twice: read only
    ops.sgd_(plan, plan, plan, step=1, lr=0.5, momentum=0.9)
    assert np.array_equal(buf[0:4], np.full(4, -0.5, np.float32))


def test_a_plan_outlives_the_callers_references():
    """The plan holds its arrays: dropping every other reference frees nothing it uses."""
    import gc

    p = [torch.zeros(5).numpy(), torch.zeros(3).numpy()]
    m = [np.zeros(5, np.float32), np.zeros(3, np.float32)]
    plan = ops.tensor_plan(p, [m])
    view = [a[:] for a in p]
    del p, m
    gc.collect()
    plan.set_grads([torch.ones(5), torch.ones(3)])
    ops.sgd_(plan, plan, plan, step=1, lr=1.0, momentum=0.5)
    assert np.array_equal(view[0], -np.ones(5, np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_tensor_plan(seed):
    """Random lists of arrays of random dtypes, sizes, offsets and aliasing: the plan is either
    refused (TypeError/ValueError) or steps exactly as the lists do, never crashes, and a refused
    set_grads changes nothing."""
    rng = np.random.default_rng(seed)
    dtypes = [np.float32, np.float64, np.float16, np.int32, np.uint8]
    made = refused = 0
    for _ in range(60):
        n = int(rng.integers(1, 4))
        pool = np.zeros(64, np.float64).view(np.uint8)

        def arr(size):
            if rng.random() < 0.15:  # carved from a shared buffer: may alias or misalign
                dt = np.dtype(dtypes[int(rng.integers(0, 3))])
                off = int(rng.integers(0, 64))
                take = min(size, (512 - off) // dt.itemsize)
                return pool[off:off + take * dt.itemsize].view(dt)
            dt = dtypes[int(rng.integers(0, len(dtypes)))] if rng.random() < 0.1 else np.float32
            return rng.standard_normal(size).astype(dt)

        sizes = [int(rng.integers(0, 40)) for _ in range(n)]
        p = [arr(s) for s in sizes]
        m = [arr(s) for s in sizes]
        try:
            plan = ops.tensor_plan(p, [m])
        except (TypeError, ValueError):
            refused += 1
            continue
        made += 1
        g = [arr(s) if rng.random() < 0.3 else torch.from_numpy(arr(s)) for s in sizes]
        before = [a.copy() for a in p + m]
        try:
            plan.set_grads(g)
        except (TypeError, ValueError):
            for a, b in zip(p + m, before):
                assert_same_bits(a, b)
            continue
        gn = [x.numpy() if isinstance(x, torch.Tensor) else x for x in g]
        cp, cm = [a.copy() for a in p], [a.copy() for a in m]
        ops.sgd_(plan, plan, plan, step=1, lr=0.1, momentum=0.9)
        ops.sgd_(cp, [a.copy() for a in gn], cm, step=1, lr=0.1, momentum=0.9)
        for a, b in zip(p + m, cp + cm):
            assert_same_bits(a, b)
    assert made and refused  # both outcomes were exercised


# ---------------------------------------------------------------------------------------------
# The step's hooks (fusedopt.torch's own wrapper of step, as torch's profile_hook_step)


def test_step_hooks_run_as_torchs_and_the_profiler_sees_the_step():
    params = model_params(torch.float32)
    set_grads(params, 0, fresh=True)
    opt = ft.Adam(params, lr=0.01)
    assert getattr(type(opt).step, "hooked", False)      # torch did not wrap it again
    seen = []
    h1 = opt.register_step_pre_hook(lambda o, a, kw: seen.append(("pre", o is opt, len(a))))
    h2 = opt.register_step_post_hook(lambda o, a, kw: seen.append(("post", o is opt, len(a))))
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    h3 = register_optimizer_step_pre_hook(
        lambda o, a, kw: seen.append(("global-pre", o is opt, len(a))))
    try:
        opt.step()
    finally:
        for h in (h1, h2, h3):
            h.remove()
    assert seen == [("global-pre", True, 1), ("pre", True, 1), ("post", True, 1)]
    # a pre-hook may replace the arguments: here the closure
    calls = []
    h = opt.register_step_pre_hook(lambda o, a, kw: ((o,), {"closure": lambda: calls.append(1)}))
    opt.step()
    h.remove()
    assert calls == [1]
    bad = opt.register_step_pre_hook(lambda o, a, kw: 3)
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step()
    bad.remove()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert any(e.name == "Optimizer.step#Adam.step" for e in prof.events())


def test_the_plan_keeps_no_grad_alive_between_steps():
    """zero_grad() (set_to_none) must free last step's grads: a plan holds them weakly."""
    import weakref

    params = model_params(torch.float32)
    opt = ft.Adam(two_groups(params), lr=0.01)
    for k in range(3):
        set_grads(params, k, fresh=True)
        refs = [weakref.ref(p.grad) for p in params]
        opt.step()
        assert opt._plans
        opt.zero_grad()
        assert all(r() is None for r in refs), k


def test_a_master_weight_replaced_in_a_mixed_group_is_seen():
    """A group of float32 and bfloat16 params with master weights: two kernel calls (parts) in
    one plan; replacing the master of the bfloat16 param drops the plan, and the new master is
    the one updated."""
    pytest.importorskip("ml_dtypes")
    a = torch.nn.Parameter(torch.ones(5))
    b = torch.nn.Parameter(torch.ones(7, dtype=torch.bfloat16))
    opt = ft.SGD([a, b], lr=0.5, momentum=0.5, master_weights=True)
    a.grad, b.grad = torch.ones(5), torch.ones(7, dtype=torch.bfloat16)
    opt.step()
    plan = opt._plans[0]
    assert len(plan.parts) == 2
    opt.step()
    assert opt._plans[0] is plan
    fresh = torch.full((7,), 4.0)
    opt.state[b]["master_param"] = fresh
    opt.step()
    assert opt._plans[0] is not plan
    assert torch.equal(b.float(), fresh) and fresh.lt(4.0).all()
