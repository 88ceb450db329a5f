"""bfloat16 and 8-bit optimizer state, and stochastic rounding, through ``fusedopt.optim``.

Every case of the registry x state dtype x param dtype: the optimizer class gives the bits of
``fusedopt.ops`` called directly on the same inputs with states made by hand (``quant.zeros``
for tensors of at least ``quant.MIN_SIZE`` elements, float32 for smaller ones); state_dicts
carry codes, absmax and the seed and resume bit for bit, through ``np.savez`` too; a checkpoint
of one state dtype loads into an optimizer of another (quantized, dequantized, rounded or
widened); bad input is refused naming the argument before anything changes.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from cases import CASE_IDS, CASES, assert_same_bits, assert_same_state, dtypes16, grad_stream, \
    make_params, refused_centered_8bit
from cases import assert_same_stored as same

from fusedopt import ops, optim, quant

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
PARAM_DTYPES = {"float32": np.dtype(np.float32), **dtypes16()}
# Around the 8-bit threshold (4096) and the block (256), an empty one, a 2-d one.
SHAPES = [(7,), (0,), (4095,), (4096,), (4097,), (3, 2000)]
STEPS = 6
PACKED = ["bfloat16", "uint8"]


def hand_made(name, p, state_dtype, init=0.0):
    """The state the classes are documented to make, made by hand."""
    if state_dtype == "uint8" and p.size >= quant.MIN_SIZE:
        signed = name in ("exp_avg", "momentum_buffer", "grad_avg")
        return quant.zeros(p.shape, signed) if init == 0.0 else \
            quant.quantize(np.full(p.shape, init, np.float32), signed)
    dtype = BF16 if state_dtype == "bfloat16" else np.float32
    return np.full(p.shape, init, dtype)


#: The kernel of each class and the state lists it takes, in order.
OPS = {
    optim.SGD: (ops.sgd_, ("momentum_buffer",)),
    optim.Adagrad: (ops.adagrad_, ("sum",)),
    optim.RMSprop: (ops.rmsprop_, ("square_avg", "grad_avg", "momentum_buffer")),
    optim.Adam: (ops.adam_, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    optim.AdamW: (ops.adam_, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    optim.Adamax: (ops.adamax_, ("exp_avg", "exp_inf")),
}


def ops_step(opt, params, grads, states, step, **extra):
    """One ``fusedopt.ops`` call with ``opt``'s hyperparameters (its class's kernel)."""
    fn, names = OPS[type(opt)]
    hp = dict(opt.hyperparams)
    if isinstance(opt, optim.Adam):
        hp["decoupled_weight_decay"] = isinstance(opt, optim.AdamW)
    fn(params, grads, *[states.get(n) for n in names], step=step, lr=opt.lr, **hp, **extra)


def run(case, dtype, state_dtype, shapes=SHAPES, steps=STEPS, seed=0, **kw):
    """The case's optimizer and the same steps through ``ops`` by hand: (opt, params, states,
    grads used)."""
    p0 = [p.astype(dtype) for p in make_params(shapes, np.float32, seed)]
    refused_centered_8bit(case, state_dtype, lambda: case.make(
        [p.copy() for p in p0], state_dtype=state_dtype, seed=77, **kw))
    opt = case.make([p.copy() for p in p0], state_dtype=state_dtype, seed=77, **kw)
    init = case.options.get("initial_accumulator_value", 0.0)
    params = [p.copy() for p in p0]
    states = {n: [hand_made(n, p, state_dtype, init if n == "sum" else 0.0) for p in params]
              for n in opt.state if n != "master_param"}
    extra = {}
    if kw.get("master_weights"):
        extra["master_params"] = [p.astype(np.float32) for p in params]
    if kw.get("stochastic_rounding"):
        extra |= {"stochastic_rounding": True, "seed": optim.group_seed(77, 0)}
    stream = grad_stream(shapes, np.float32, seed + 1)
    for step in range(1, steps + 1):
        g = [x.astype(dtype) for x in next(stream)]
        opt.step(g)
        ops_step(opt, params, g, states, step, **extra)
    return opt, params, states, extra


@pytest.mark.parametrize("pdt", list(PARAM_DTYPES))
@pytest.mark.parametrize("state_dtype", PACKED)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_classes_equal_ops_on_the_same_inputs(case, state_dtype, pdt):
    opt, params, states, _ = run(case, PARAM_DTYPES[pdt], state_dtype)
    for i, (p, q) in enumerate(zip(opt.params, params)):
        assert_same_bits(p, q, f"params[{i}]")
    for name, arrs in states.items():
        for i, (a, b) in enumerate(zip(opt.state[name], arrs)):
            same(a, b, f"{name}[{i}]")
            p = params[i]
            if state_dtype == "uint8" and p.size >= quant.MIN_SIZE:
                assert isinstance(a, quant.QuantizedState)
            else:
                assert a.dtype == (BF16 if state_dtype == "bfloat16" else np.float32)


@pytest.mark.parametrize("state_dtype", PACKED)
@pytest.mark.parametrize("case", [c for c in CASES if c.cls in (optim.Adam, optim.SGD)],
                         ids=lambda c: c.id)
def test_bf16_params_with_master_and_stochastic_rounding_equal_ops(case, state_dtype):
    for kw in (dict(master_weights=True), dict(stochastic_rounding=True),
               dict(master_weights=True, stochastic_rounding=True)):
        opt, params, states, extra = run(case, BF16, state_dtype, **kw)
        for i, (p, q) in enumerate(zip(opt.params, params)):
            assert_same_bits(p, q, f"{kw} params[{i}]")
        if "master_params" in extra:
            for a, b in zip(opt.state["master_param"], extra["master_params"]):
                assert_same_bits(a, b, "master_param")
        for name, arrs in states.items():
            for i, (a, b) in enumerate(zip(opt.state[name], arrs)):
                same(a, b, f"{kw} {name}[{i}]")


def test_stochastic_rounding_depends_on_the_seed_and_differs_from_nearest():
    p0 = make_params([(5000,)], np.float32)[0].astype(BF16)
    g = [np.full(5000, 1e-3, BF16)]
    runs = {}
    for key, kw in {"rne": {}, "a": dict(stochastic_rounding=True, seed=1),
                    "a2": dict(stochastic_rounding=True, seed=1),
                    "b": dict(stochastic_rounding=True, seed=2)}.items():
        opt = optim.SGD([p0.copy()], lr=0.1, **kw)
        for _ in range(3):
            opt.step(g)
        runs[key] = opt.params[0].view(np.uint16)
    assert np.array_equal(runs["a"], runs["a2"])
    assert not np.array_equal(runs["a"], runs["b"])
    assert not np.array_equal(runs["a"], runs["rne"])
    # without a seed, one is drawn from the OS: two optimizers differ
    seeds = {optim.SGD([p0.copy()], stochastic_rounding=True).seed for _ in range(4)}
    assert len(seeds) > 1 and all(0 <= s < 2**63 for s in seeds)


def test_groups_with_their_own_state_dtype_equal_one_optimizer_each():
    shapes = [(4097,), (5000,), (9,)]
    for sr in (False, True):
        p = [x.astype(BF16) for x in make_params(shapes, np.float32)]
        both = optim.Adam([{"params": [p[0].copy()], "state_dtype": "uint8"},
                           {"params": [p[1].copy(), p[2].copy()], "state_dtype": "bfloat16",
                            "stochastic_rounding": sr}], lr=0.01, seed=5)
        one = optim.Adam([p[0].copy()], lr=0.01, state_dtype="uint8", seed=5)
        two = optim.Adam([p[1].copy(), p[2].copy()], lr=0.01, state_dtype="bfloat16",
                         stochastic_rounding=sr, seed=optim.group_seed(5, 1))
        stream = grad_stream(shapes, np.float32, 3)
        for _ in range(5):
            g = [x.astype(BF16) for x in next(stream)]
            both.step(g)
            one.step(g[:1])
            two.step(g[1:])
        for name in both.state:
            same(both.state[name][0], one.state[name][0], name)
            for i in (1, 2):
                same(both.state[name][i], two.state[name][i - 1], name)
        for a, b in zip(both.params, one.params + two.params):
            assert_same_bits(a, b)
        assert isinstance(both.state["exp_avg"][0], quant.QuantizedState)
        assert both.state["exp_avg"][1].dtype == BF16 == both.state["exp_avg"][2].dtype


def test_small_tensors_keep_float32_state():
    opt = optim.Adam(make_params([(4095,), (4096,), (7,)], np.float32), state_dtype="uint8",
                     amsgrad=True)
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        small, big, tiny = opt.state[name]
        assert small.dtype == np.float32 and tiny.dtype == np.float32
        assert isinstance(big, quant.QuantizedState) and big.absmax.shape == (16,)
        assert big.signed == (name == "exp_avg")


def test_8bit_adam_state_takes_at_most_2_05_bytes_per_param():
    n = 1 << 20
    p = [np.zeros(n, np.float32)]
    for sd, limit in (("uint8", 2.05), ("bfloat16", 4), ("float32", 8)):
        opt = optim.Adam(p, state_dtype=sd)
        nbytes = sum(a.nbytes for v in opt.state.values() for a in v)
        assert nbytes / n <= limit, (sd, nbytes / n)
    assert nbytes / n == 8


# ---- checkpoints ------------------------------------------------------------------------------
def _continue(a, b, shapes, pdt, seed=9, steps=4):
    stream = grad_stream(shapes, np.float32, seed)
    for _ in range(steps):
        g = [x.astype(pdt) for x in next(stream)]
        a.step(g)
        b.step(g)


@pytest.mark.parametrize("state_dtype", PACKED)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_savez_round_trip_resumes_bit_identically(case, state_dtype, tmp_path):
    sr = case.cls in (optim.Adam, optim.SGD)
    pdt = BF16 if sr else np.dtype(np.float32)
    opt, *_ = run(case, pdt, state_dtype, stochastic_rounding=sr)
    sd = opt.state_dict()
    assert sd.get("seed") == (77 if sr else None)      # only where it matters
    for name in opt.state:
        quantized = [isinstance(a, quant.QuantizedState) for a in opt.state[name]]
        assert (f"{name}_absmax" in sd["state"]) == any(quantized)
        for i, (a, q) in enumerate(zip(sd["state"][name], quantized)):
            assert a.dtype == (np.uint8 if q else BF16 if state_dtype == "bfloat16" and
                               name != "master_param" else np.float32)
            if q:
                assert sd["state"][f"{name}_absmax"][i].dtype == np.float32
            elif f"{name}_absmax" in sd["state"]:
                assert sd["state"][f"{name}_absmax"][i] is None
    np.savez(tmp_path / "ckpt.npz", **optim.flatten_state_dict(sd))
    with np.load(tmp_path / "ckpt.npz") as f:
        flat = optim.unflatten_state_dict(f)
    twin = case.make([p.copy() for p in opt.params], state_dtype=state_dtype,
                     stochastic_rounding=sr)          # another seed, drawn from the OS
    twin.load_state_dict(flat)
    assert (twin.seed == 77) == sr
    assert_same_state(opt, twin)
    _continue(opt, twin, SHAPES, pdt)
    assert_same_state(opt, twin)


@pytest.mark.parametrize("src, dst", [("float32", "uint8"), ("uint8", "float32"),
                                      ("float32", "bfloat16"), ("bfloat16", "float32"),
                                      ("uint8", "bfloat16"), ("bfloat16", "uint8")])
def test_a_checkpoint_loads_into_another_state_dtype(src, dst):
    shapes = [(4097,), (300,)]
    opt = optim.Adam(make_params(shapes, np.float32), lr=0.01, amsgrad=True, state_dtype=src)
    _continue(opt, optim.Adam(make_params(shapes, np.float32)), shapes, np.float32)
    sd = opt.state_dict()
    other = optim.Adam(make_params(shapes, np.float32, seed=3), lr=0.5, amsgrad=True,
                       state_dtype=dst)
    other.load_state_dict(sd)
    for name, arrs in opt.state.items():
        for i, a in enumerate(arrs):
            b = other.state[name][i]
            x = quant.dequantize(a) if isinstance(a, quant.QuantizedState) else \
                a.astype(np.float32)           # the saved values, in float32
            if dst == "uint8" and a.size >= quant.MIN_SIZE:
                same(b, quant.quantize(x, name == "exp_avg"), name)
            elif dst == "bfloat16":
                assert_same_bits(b, x.astype(BF16), name)
            else:
                assert_same_bits(b, x, name)
    # and it trains on, equal to an optimizer that was given those states
    same_start = copy.deepcopy(other)
    _continue(other, same_start, shapes, np.float32)
    assert_same_state(other, same_start)


def test_a_float32_checkpoint_without_seed_keeps_ours_and_old_ones_load():
    opt = optim.Adam(make_params(SHAPES, np.float32), lr=0.01)
    sd = opt.state_dict()
    assert "seed" not in sd                       # no stochastic rounding: no seed
    new = optim.Adam(make_params(SHAPES, np.float32), lr=0.01, state_dtype="uint8", seed=3)
    new.load_state_dict(sd)
    assert new.seed == 3 and isinstance(new.state["exp_avg"][3], quant.QuantizedState)
    # groups: the saved state_dtype of a group does not replace ours
    g = optim.Adam([{"params": make_params([(4097,)], np.float32), "state_dtype": "float32"}])
    g8 = optim.Adam([{"params": make_params([(4097,)], np.float32), "state_dtype": "uint8"}])
    g8.load_state_dict(g.state_dict())
    assert g8.param_groups[0]["state_dtype"] == "uint8"
    assert isinstance(g8.state["exp_avg"][0], quant.QuantizedState)


# ---- bad input --------------------------------------------------------------------------------
BAD_ARGS = [
    (dict(state_dtype="int8"), np.float32, ValueError, r"state_dtype must be one of"),
    (dict(state_dtype=8), np.float32, ValueError, r"state_dtype must be one of"),
    (dict(state_dtype="uint8"), np.float64, ValueError,
     r"state_dtype='uint8' needs float32, float16 or bfloat16 params .* params\[0\] is "
     r"float64"),
    (dict(state_dtype="bfloat16"), np.float64, ValueError, r"state_dtype='bfloat16' needs"),
    (dict(stochastic_rounding=True), np.float32, ValueError,
     r"stochastic_rounding rounds bfloat16 params; params\[0\] has dtype float32"),
    (dict(stochastic_rounding=True), np.float16, ValueError, r"stochastic_rounding rounds"),
    (dict(stochastic_rounding=1), BF16, TypeError, r"stochastic_rounding must be a bool"),
    (dict(seed=-1), BF16, ValueError, r"seed"),
    (dict(seed=2**63), BF16, ValueError, r"seed must be < 2\*\*63"),
    (dict(seed=1.5), BF16, TypeError, r"seed"),
]


@pytest.mark.parametrize("kw, dtype, exc, match", BAD_ARGS)
@pytest.mark.parametrize("cls", list(OPS), ids=lambda c: c.__name__)
def test_bad_options_are_refused_naming_the_argument(cls, kw, dtype, exc, match):
    with pytest.raises(exc, match=match):
        cls([np.zeros(5000, dtype)], **kw)
    with pytest.raises(exc, match=r"params\[1\]" if "seed" not in kw else match):
        if "seed" in kw:
            cls([{"params": [np.zeros(3, dtype)]}], **kw)
        else:
            cls([{"params": [np.zeros(3, np.float32)]}, {"params": [np.zeros(5000, dtype)],
                                                          **kw}])


def _eight_bit(groups=False):
    p = [x.astype(BF16) for x in make_params([(4097,), (5,)], np.float32)]
    if groups:
        p = [{"params": [p[0]]}, {"params": [p[1]], "state_dtype": "bfloat16"}]
    opt = optim.Adam(p, lr=0.01, state_dtype="uint8", stochastic_rounding=True, seed=1)
    opt.step([np.ones(4097, BF16), np.ones(5, BF16)])
    return opt


@pytest.mark.parametrize("spoil, match", [
    (lambda sd: sd["state"].pop("exp_avg_absmax"),
     r"state_dict\['state'\]\['exp_avg'\]\[0\] holds 8-bit codes: its absmax"),
    (lambda sd: sd["state"]["exp_avg_sq_absmax"].__setitem__(0, np.zeros(3, np.float32)),
     r"\['exp_avg_sq'\]\[0\] holds 8-bit codes: its absmax .* 17 blocks"),
    (lambda sd: sd["state"]["exp_avg_absmax"].__setitem__(0, np.zeros(17, np.float64)),
     r"absmax .* must be a float32 array of 17 blocks"),
    (lambda sd: sd["state"]["exp_avg"].__setitem__(1, np.zeros(5, np.uint8)),
     r"\['exp_avg'\]\[1\] holds 8-bit codes"),
    (lambda sd: sd["state"]["exp_avg"].__setitem__(0, np.zeros(4097, np.int8)),
     r"\['exp_avg'\]\[0\] must have shape \(4097,\) and dtype float32 \(or bfloat16, or "
     r"uint8 codes"),
    (lambda sd: sd["state"]["exp_avg"].__setitem__(0, np.zeros(4096, np.uint8)),
     r"\['exp_avg'\]\[0\] must have shape \(4097,\)"),
    (lambda sd: sd.__setitem__("seed", -3), r"state_dict\['seed'\]"),
    (lambda sd: sd["state"].__setitem__("exp_inf", sd["state"]["exp_avg"]),
     r"state_dict\['state'\] must have the arrays"),
])
def test_a_bad_checkpoint_is_refused_and_changes_nothing(spoil, match):
    opt = _eight_bit()
    sd = opt.state_dict()
    spoil(sd)
    keep = copy.deepcopy(opt)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.load_state_dict(sd)
    assert_same_state(opt, keep)
    assert opt.seed == keep.seed == 1
    g = [np.ones(4097, BF16), np.ones(5, BF16)]
    opt.step(g)
    keep.step(g)
    assert_same_state(opt, keep)


@pytest.mark.parametrize("groups", [False, True], ids=["one-group", "groups"])
def test_a_replaced_state_is_refused_at_the_step_and_changes_nothing(groups):
    """A state may be replaced by any state the kernels take (a float32 one for an 8-bit
    one, say); anything else is refused at the step, before anything changes."""
    g = [np.ones(4097, BF16), np.ones(5, BF16)]
    for spoil in (lambda s: s["exp_avg"].__setitem__(0, np.zeros(4096, np.float32)),
                  lambda s: s["exp_avg_sq"].__setitem__(1, np.zeros(5, np.float16)),
                  lambda s: s["exp_avg"].__setitem__(0, s["exp_avg"][0].codes),
                  lambda s: s["exp_avg_sq"].__setitem__(
                      0, quant.QuantizedState(np.zeros(4096, np.uint8),
                                              np.zeros(16, np.float32), False))):
        opt = _eight_bit(groups)
        spoil(opt.state)
        spoiled = copy.deepcopy(opt)
        with pytest.raises((TypeError, ValueError), match=r"exp_avg"):
            opt.step(g)
        assert opt.step_count == 1
        for i, (p, q) in enumerate(zip(opt.params, spoiled.params)):
            assert_same_bits(p, q, f"params[{i}]")
        for name in opt.state:
            for i, (a, b) in enumerate(zip(opt.state[name], spoiled.state[name])):
                if isinstance(a, quant.QuantizedState) or a.shape == b.shape:
                    same(a, b, f"{name}[{i}]")
    # a float32 state in place of an 8-bit one is a state the kernels take
    opt, twin = _eight_bit(groups), _eight_bit(groups)
    opt.state["exp_avg"][0] = quant.dequantize(opt.state["exp_avg"][0])
    twin.state["exp_avg"][0] = quant.dequantize(twin.state["exp_avg"][0])
    opt.step(g)
    twin.step(g)
    assert_same_state(opt, twin)
    assert opt.state["exp_avg"][0].dtype == np.float32
