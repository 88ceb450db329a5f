"""Bad input raises TypeError/ValueError naming the argument, and leaves every array untouched."""
import math

import numpy as np
import pytest

import fusedopt
from fusedopt import ops, reference
from cases import CASE_IDS, CASES, bits, make_params

MODULES = [pytest.param(ops, id="fused"), pytest.param(reference, id="reference")]


def snapshot(*lists):
    return [[bits(a).copy() for a in lst] for lst in lists if lst is not None]


def unchanged(before, *lists):
    after = snapshot(*lists)
    return all(np.array_equal(x, y) for bl, al in zip(before, after) for x, y in zip(bl, al))


def adam_lists(n=(5, 7), dtype=np.float32):
    p = make_params([(k,) for k in n], dtype)
    g = make_params([(k,) for k in n], dtype, seed=3)
    m = [np.full_like(x, 0.5) for x in p]
    v = [np.full_like(x, 0.25) for x in p]
    return p, g, m, v


def call_adam(mod, p, g, m, v, **kw):
    kw.setdefault("step", 1)
    kw.setdefault("lr", 1e-2)
    mod.adam_(p, g, m, v, **kw)


# (description, mutation of (p, g, m, v) -> new (p, g, m, v), exception, words in the message)
def _readonly(x):
    x = x.copy()
    x.flags.writeable = False
    return x


BAD_ARRAYS = [
    ("int grad", lambda p, g, m, v: (p, [g[0], g[1].astype(np.int32)], m, v), TypeError,
     "grads[1]"),
    ("float16 params", lambda p, g, m, v: ([p[0].astype(np.float16), p[1]], g, m, v),
     TypeError, "params[0]"),
    ("dtype mismatch", lambda p, g, m, v: (p, g, [m[0].astype(np.float64), m[1]], v),
     TypeError, "exp_avgs[0]"),
    ("shape mismatch", lambda p, g, m, v: (p, g, m, [v[0], np.zeros(8, np.float32)]),
     ValueError, "exp_avg_sqs[1]"),
    ("2-D vs 1-D", lambda p, g, m, v: (p, [g[0].reshape(5, 1), g[1]], m, v), ValueError,
     "grads[0]"),
    ("short list", lambda p, g, m, v: (p, g[:1], m, v), ValueError, "grads"),
    ("not a list", lambda p, g, m, v: (p, g[0], m, v), TypeError, "grads"),
    ("python list item", lambda p, g, m, v: (p, [list(g[0]), g[1]], m, v), TypeError,
     "grads[0]"),
    ("read-only param", lambda p, g, m, v: ([p[0], _readonly(p[1])], g, m, v), ValueError,
     "params[1]"),
    ("read-only state", lambda p, g, m, v: (p, g, [_readonly(m[0]), m[1]], v), ValueError,
     "exp_avgs[0]"),
    ("non-contiguous", lambda p, g, m, v: (p, [np.zeros(10, np.float32)[::2], g[1]], m, v),
     ValueError, "grads[0]"),
    ("byte-swapped", lambda p, g, m, v: ([p[0].astype(">f4"), p[1]], g, m, v), TypeError,
     "params[0]"),
    ("state aliases param", lambda p, g, m, v: (p, g, [p[0], m[1]], v), ValueError,
     "shares memory"),
    ("state aliases state", lambda p, g, m, v: (p, g, m, [m[0], v[1]]), ValueError,
     "shares memory"),
    ("grad aliases param", lambda p, g, m, v: (p, [p[0], g[1]], m, v), ValueError,
     "shares memory"),
]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("desc,mutate,exc,words", BAD_ARRAYS, ids=[b[0] for b in BAD_ARRAYS])
def test_bad_arrays_raise_and_change_nothing(mod, desc, mutate, exc, words):
    p, g, m, v = mutate(*adam_lists())
    # Everything that could be written is snapshotted, including the good arrays of the call.
    lists = [x for x in (p, g, m, v) if isinstance(x, list)]
    arrays = [[a for a in lst if isinstance(a, np.ndarray)] for lst in lists]
    before = snapshot(*arrays)
    with pytest.raises(exc) as info:
        call_adam(mod, p, g, m, v)
    assert words in str(info.value)
    assert unchanged(before, *arrays)


@pytest.mark.parametrize("mod", MODULES)
def test_param_passed_twice_is_rejected(mod):
    p, g, m, v = adam_lists((5, 5))
    p = [p[0], p[0]]
    before = snapshot(p, m, v)
    with pytest.raises(ValueError, match=r"params\[[01]\] shares memory with params\[[01]\]"):
        call_adam(mod, p, g, m, v)
    assert unchanged(before, p, m, v)


def test_overlapping_views_of_one_buffer_are_rejected():
    buf = np.zeros(20, np.float32)
    p, g, m, v = adam_lists((10, 10))
    p = [buf[:10], buf[5:15]]  # overlap by 5 elements
    before = bits(buf).copy()
    with pytest.raises(ValueError, match="shares memory"):
        ops.adam_(p, g, m, v, step=1)
    assert np.array_equal(bits(buf), before)


def test_disjoint_views_of_one_buffer_are_fine():
    buf = np.ones(20, np.float32)
    p = [buf[:10], buf[10:]]
    g = [np.ones(10, np.float32)] * 2  # one read-only grad used twice is allowed
    ops.sgd_(p, g, step=1, lr=0.5)
    np.testing.assert_array_equal(buf, np.full(20, 0.5, np.float32))


BAD_HYPER = [
    ("lr", -1.0, ValueError), ("lr", math.nan, ValueError), ("lr", math.inf, ValueError),
    ("lr", "0.1", TypeError), ("lr", True, TypeError),
    ("betas", (1.0, 0.999), ValueError), ("betas", (0.9, -0.1), ValueError),
    ("betas", (0.9,), TypeError), ("betas", 0.9, TypeError),
    ("eps", -1e-8, ValueError), ("eps_root", -1.0, ValueError),
    ("weight_decay", -0.1, ValueError), ("weight_decay", math.nan, ValueError),
    ("amsgrad", 1, TypeError), ("maximize", "yes", TypeError),
    ("step", 0, ValueError), ("step", 1.5, TypeError),
]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("name,value,exc", BAD_HYPER, ids=[f"{b[0]}={b[1]!r}" for b in BAD_HYPER])
def test_bad_hyperparameters_raise_and_change_nothing(mod, name, value, exc):
    p, g, m, v = adam_lists()
    before = snapshot(p, m, v)
    with pytest.raises(exc, match=name.split("[")[0]):
        call_adam(mod, p, g, m, v, **{name: value})
    assert unchanged(before, p, m, v)


@pytest.mark.parametrize("mod", MODULES)
def test_amsgrad_needs_its_state_list(mod):
    p, g, m, v = adam_lists()
    with pytest.raises(TypeError, match="max_exp_avg_sqs"):
        call_adam(mod, p, g, m, v, amsgrad=True)


@pytest.mark.parametrize("mod", MODULES)
def test_other_rules_check_their_hyperparameters(mod):
    p = [np.ones(3)]
    g = [np.ones(3)]
    s = [np.zeros(3)]
    with pytest.raises(ValueError, match="nesterov"):
        mod.sgd_(p, g, s, step=1, lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        mod.sgd_(p, g, s, step=1, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="dampening"):
        mod.sgd_(p, g, s, step=1, lr=0.1, momentum=0.9, dampening=1.5)
    with pytest.raises(ValueError, match="momentum"):
        mod.sgd_(p, g, s, step=1, lr=0.1, momentum=-0.9)
    with pytest.raises(ValueError, match="lr_decay"):
        mod.adagrad_(p, g, s, step=1, lr_decay=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        mod.rmsprop_(p, g, s, step=1, alpha=1.5)
    with pytest.raises(TypeError, match="centered"):
        mod.rmsprop_(p, g, s, step=1, centered=None)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        mod.adamax_(p, g, s, s, step=1, betas=(0.9, 1.0))
    np.testing.assert_array_equal(p[0], np.ones(3))


# --- the classes --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_optimizer_step_with_bad_grads_changes_nothing(case):
    params = make_params([(4,), (6,)], np.float64)
    opt = case.make(params)
    opt.step([np.ones(4), np.ones(6)])
    before = snapshot(opt.params, *opt.state.values())
    bad = [
        [np.ones(4)],  # too few
        [np.ones(4), np.ones(5)],  # wrong shape
        [np.ones(4, np.float32), np.ones(6)],  # wrong dtype
        [np.ones(4), np.ones(12)[::2]],  # non-contiguous
        "grads",
    ]
    for grads in bad:
        with pytest.raises((TypeError, ValueError)):
            opt.step(grads)
    assert opt.step_count == 1
    assert unchanged(before, opt.params, *opt.state.values())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_schedule_returning_bad_lr_changes_nothing(case):
    opt = case.make(make_params([(4,)], np.float64))
    opt.lr = lambda t: -1.0
    before = snapshot(opt.params, *opt.state.values())
    with pytest.raises(ValueError, match="lr"):
        opt.step([np.ones(4)])
    assert opt.step_count == 0
    assert unchanged(before, opt.params, *opt.state.values())


def test_constructor_checks():
    good = [np.zeros(3)]
    with pytest.raises(ValueError, match="empty"):
        fusedopt.optim.Adam([])
    with pytest.raises(TypeError, match="params"):
        fusedopt.optim.Adam([np.zeros(3, np.int64)])
    with pytest.raises(TypeError, match="params"):
        fusedopt.optim.Adam(["a"])
    with pytest.raises(ValueError, match="params"):
        fusedopt.optim.Adam([good[0], good[0]])  # the same array twice
    with pytest.raises(ValueError, match="lr"):
        fusedopt.optim.Adam(good, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        fusedopt.optim.Adam(good, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="backend"):
        fusedopt.optim.Adam(good, backend="gpu")
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        fusedopt.optim.Adagrad(good, initial_accumulator_value=-1)
    with pytest.raises(ValueError, match="nesterov"):
        fusedopt.optim.SGD(good, lr=0.1, nesterov=True)


def test_load_state_dict_checks_everything_first():
    opt = fusedopt.optim.Adam(make_params([(4,), (6,)], np.float32), amsgrad=True)
    opt.step([np.ones(4, np.float32), np.ones(6, np.float32)])
    good = opt.state_dict()
    before = snapshot(opt.params, *opt.state.values())

    def broken(**changes):
        sd = {**good, "state": {k: list(v) for k, v in good["state"].items()}}
        for k, v in changes.items():
            if k.startswith("state."):
                sd["state"][k[6:]] = v
            else:
                sd[k] = v
        return sd

    bads = [
        "not a dict",
        {k: v for k, v in good.items() if k != "state"},
        broken(step=-1),
        broken(step=1.5),
        broken(lr=math.nan),
        broken(hyperparams={**good["hyperparams"], "betas": (2.0, 0.9)}),
        broken(hyperparams={"lr": 1}),
        broken(**{"state.exp_avg": good["state"]["exp_avg"][:1]}),
        broken(**{"state.exp_avg_sq": [np.zeros(4, np.float64), np.zeros(6, np.float32)]}),
        broken(**{"state.max_exp_avg_sq": [np.zeros(5, np.float32), np.zeros(6, np.float32)]}),
        broken(state={"exp_avg": good["state"]["exp_avg"]}),
    ]
    for sd in bads:
        with pytest.raises((TypeError, ValueError)):
            opt.load_state_dict(sd)
        assert opt.step_count == 1
        assert unchanged(before, opt.params, *opt.state.values())
