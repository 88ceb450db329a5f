"""bfloat16 and 8-bit state, and stochastic rounding, through ``fusedopt.torch``.

The ground truth is ``fusedopt.optim`` with the same ``state_dtype`` (itself bit-equal to
``fusedopt.ops`` on hand-made states, tests/test_optim_state_dtypes.py), one NumPy optimizer
per torch parameter group with that group's seed: params, codes, absmax and bfloat16 states
bit for bit. Checkpoints: torch's keys, the codes under the state's name and the absmax under
``<name>_absmax``; resumed bit for bit; a float32 checkpoint (torch.optim's too) loads into an
8-bit or bfloat16 optimizer quantized or rounded, and back. GradScaler, master weights and
parameter groups work with the new states; bad options are refused naming the argument.
"""
from __future__ import annotations

import copy

import pytest
from cases import CASES, assert_same_bits, refused_centered_8bit

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("ml_dtypes")

import fusedopt.torch as ft  # noqa: E402
from fusedopt import optim, quant  # noqa: E402
from fusedopt.torch import _bridge  # noqa: E402
from test_torch_optim import digits, roundtrip  # noqa: E402 -- the same data and round trip

STEPS = 8
PDTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def mlp(dtype, seed=0):
    """64-72-10: the first weight (4608 elements) has 8-bit state, the rest float32."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 72), torch.nn.Tanh(),
                               torch.nn.Linear(72, 10)).to(dtype)


def groups(model):
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n.endswith("weight")]},
            {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}]


def train(model, opt, x, y, options, steps=STEPS, each=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        (-loss if options.get("maximize") else loss).backward()
        if each is not None:
            each()
        opt.step()


def arr(t):
    return _bridge.array(t.detach()).copy()


def assert_state_equal(state, name, a, what):
    """The torch state ``state[name]`` (with ``name_absmax``) bit-equal to the NumPy state a."""
    if isinstance(a, quant.QuantizedState):
        assert state[name].dtype == torch.uint8, what
        assert_same_bits(state[name].numpy(), a.codes, f"{what} codes")
        assert_same_bits(state[f"{name}_absmax"].numpy(), a.absmax, f"{what} absmax")
    else:
        assert f"{name}_absmax" not in state, what
        assert_same_bits(arr(state[name]), a, what)


def run_against_numpy(case, dtype, state_dtype, **kw):
    x, y = digits(dtype)
    model = mlp(dtype)
    refused_centered_8bit(case, state_dtype, lambda: getattr(ft, case.cls.__name__)(
        groups(model), state_dtype=state_dtype, seed=11, **case.options, **kw))
    opt = getattr(ft, case.cls.__name__)(groups(model), state_dtype=state_dtype, seed=11,
                                         **case.options, **kw)
    refs = []
    for j, g in enumerate(opt.param_groups):
        opts = dict(case.options, weight_decay=g["weight_decay"])
        refs.append(case.cls([arr(p) for p in g["params"]], state_dtype=state_dtype,
                             seed=optim.group_seed(11, j), **opts, **kw))

    def numpy_step():
        for ref, g in zip(refs, opt.param_groups):
            ref.step([arr(p.grad) for p in g["params"]])

    train(model, opt, x, y, case.options, each=numpy_step)
    return opt, refs


@pytest.mark.parametrize("dt", PDTYPES)
@pytest.mark.parametrize("state_dtype", ["bfloat16", "uint8"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mlp_equals_fusedopt_optim_bit_for_bit(case, state_dtype, dt):
    opt, refs = run_against_numpy(case, PDTYPES[dt], state_dtype)
    for ref, g in zip(refs, opt.param_groups):
        for i, (a, p) in enumerate(zip(ref.params, g["params"])):
            assert_same_bits(arr(p), a, f"params[{i}]")
            for name, arrs in ref.state.items():
                assert_state_equal(opt.state[p], name, arrs[i], f"{name}[{i}]")
    w = opt.param_groups[0]["params"][0]
    name = opt._state_keys(opt.param_groups[0])
    if name:
        t = opt.state[w][name[0]]
        assert t.dtype == (torch.uint8 if state_dtype == "uint8" else torch.bfloat16)


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "uint8"])
@pytest.mark.parametrize("kw", [dict(stochastic_rounding=True), dict(master_weights=True),
                                dict(master_weights=True, stochastic_rounding=True)],
                         ids=["sr", "master", "master-sr"])
def test_bf16_params_with_stochastic_rounding_and_master_weights(kw, state_dtype):
    case = next(c for c in CASES if c.id == "adamw-amsgrad-max")
    opt, refs = run_against_numpy(case, torch.bfloat16, state_dtype, **kw)
    for ref, g in zip(refs, opt.param_groups):
        for i, (a, p) in enumerate(zip(ref.params, g["params"])):
            assert_same_bits(arr(p), a, f"params[{i}]")
            for name, arrs in ref.state.items():
                assert_state_equal(opt.state[p], name, arrs[i], f"{name}[{i}]")
    assert opt.param_groups[0]["seed"] == 11


def test_stochastic_rounding_moves_what_nearest_rounding_loses():
    p0 = torch.ones(5000, dtype=torch.bfloat16)
    moved = {}
    for sr in (False, True):
        p = torch.nn.Parameter(p0.clone())
        opt = ft.SGD([p], lr=1e-3, stochastic_rounding=sr, seed=3)
        for _ in range(10):
            p.grad = torch.ones_like(p)
            opt.step()
        moved[sr] = float(1 - p.detach().float().mean())
    assert moved[False] == 0.0                       # 1 - 1e-3 rounds back to 1 every time
    assert moved[True] == pytest.approx(0.01, rel=0.2)   # on average, the ten updates


@pytest.mark.parametrize("state_dtype", ["bfloat16", "uint8"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resume_is_bit_identical(case, state_dtype):
    dtype = torch.bfloat16 if case.cls.__name__ in ("Adam", "AdamW") else torch.float32
    kw = dict(stochastic_rounding=dtype == torch.bfloat16, state_dtype=state_dtype)
    x, y = digits(dtype)
    cls = getattr(ft, case.cls.__name__)
    straight = mlp(dtype)
    refused_centered_8bit(case, state_dtype,
                          lambda: cls(groups(straight), seed=5, **case.options, **kw))
    opt = cls(groups(straight), seed=5, **case.options, **kw)
    train(straight, opt, x, y, case.options, steps=12)
    model = mlp(dtype)
    opt_a = cls(groups(model), seed=5, **case.options, **kw)
    train(model, opt_a, x, y, case.options, steps=6)
    saved_model, saved_opt = roundtrip(model.state_dict()), roundtrip(opt_a.state_dict())
    w = next(iter(saved_opt["state"].values()), {})
    if state_dtype == "uint8" and w:
        k = next(k for k in w if k != "step" and not k.endswith("_absmax"))
        assert w[k].dtype == torch.uint8 and w[f"{k}_absmax"].dtype == torch.float32
    resumed = mlp(dtype, seed=2)
    resumed.load_state_dict(saved_model)
    opt_b = cls(groups(resumed), **case.options, **kw)         # another seed: the saved one wins
    opt_b.load_state_dict(saved_opt)
    assert [g["seed"] for g in opt_b.param_groups] == [5, 5]
    train(resumed, opt_b, x, y, case.options, steps=6)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert_same_bits(arr(p), arr(q), "param")
        assert opt.state[p].keys() == opt_b.state[q].keys()
        for k in opt.state[p]:
            assert_same_bits(arr(opt.state[p][k]), arr(opt_b.state[q][k]), k)


@pytest.mark.parametrize("src", ["torch.optim", "float32", "uint8", "bfloat16"])
@pytest.mark.parametrize("dst", ["float32", "uint8", "bfloat16"])
def test_a_checkpoint_loads_into_another_state_dtype(src, dst):
    x, y = digits(torch.float32)
    model = mlp(torch.float32)
    first = torch.optim.AdamW(model.parameters(), lr=1e-2) if src == "torch.optim" else \
        ft.AdamW(model.parameters(), lr=1e-2, state_dtype=src)
    train(model, first, x, y, {}, steps=4)
    saved = roundtrip(first.state_dict())
    resumed = mlp(torch.float32, seed=1)
    resumed.load_state_dict(model.state_dict())
    opt = ft.AdamW(resumed.parameters(), lr=1e-2, state_dtype=dst)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["state_dtype"] == dst
    train(resumed, opt, x, y, {}, steps=1)      # the conversion happens at the first step
    ref = optim.AdamW([arr(p) for p in model.parameters()], lr=1e-2, state_dtype=dst)
    sd = ref.state_dict()
    for i, (p, q) in enumerate(zip(model.parameters(), resumed.parameters())):
        st = first.state[p]
        for name in ("exp_avg", "exp_avg_sq"):
            sd["state"][name][i] = arr(st[name])
            if f"{name}_absmax" in st:
                sd["state"].setdefault(f"{name}_absmax", [None] * 4)[i] = arr(
                    st[f"{name}_absmax"])
    sd["step"] = 4
    ref.load_state_dict(sd)                     # the NumPy class converts the same way
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    ref.step([arr(p.grad) for p in model.parameters()])
    for i, q in enumerate(resumed.parameters()):
        assert_same_bits(arr(q), ref.params[i], f"params[{i}]")
        for name in ("exp_avg", "exp_avg_sq"):
            assert_state_equal(opt.state[q], name, ref.state[name][i], f"{name}[{i}]")


def test_grad_scaler_and_param_groups_with_8bit_state():
    x, y = digits(torch.float32)
    runs = []
    for scaled in (True, False):
        model = mlp(torch.float32)
        gs = groups(model)
        gs[1]["state_dtype"] = "bfloat16"
        opt = ft.Adam(gs, lr=1e-2, state_dtype="uint8")
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=scaled)
        for k in range(4):
            opt.zero_grad()
            scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
            scaler.step(opt)
            scaler.update()
        runs.append((model, opt))
    (a, oa), (b, ob) = runs
    for p, q in zip(a.parameters(), b.parameters()):  # the scale is a power of two: exact
        assert torch.equal(p, q)
        for k, v in oa.state[p].items():
            assert torch.equal(v, ob.state[q][k]), k
    w, bias = oa.param_groups[0]["params"][0], oa.param_groups[1]["params"][0]
    assert oa.state[w]["exp_avg"].dtype == torch.uint8
    assert oa.state[bias]["exp_avg"].dtype == torch.bfloat16


def test_8bit_state_reaches_the_kernel_without_copies():
    p = torch.nn.Parameter(torch.zeros(5000))
    opt = ft.Adam([p], lr=0.1, state_dtype="uint8")
    p.grad = torch.ones(5000)
    opt.step()
    rec = opt._records[id(p)]
    q = rec.views[0]
    assert isinstance(q, quant.QuantizedState) and q.signed
    assert q.codes.ctypes.data == opt.state[p]["exp_avg"].data_ptr()
    assert q.absmax.ctypes.data == opt.state[p]["exp_avg_absmax"].data_ptr()
    assert not rec.views[1].signed
    opt.step()
    assert (p < 0).all()
    # bfloat16 states: ml_dtypes.bfloat16 views of the tensors' memory
    b = torch.nn.Parameter(torch.zeros(10, dtype=torch.bfloat16))
    opt = ft.Adam([b], lr=0.1, state_dtype="bfloat16", stochastic_rounding=True)
    b.grad = torch.ones(10, dtype=torch.bfloat16)
    opt.step()
    rec = opt._records[id(b)]
    assert [v.dtype.name for v in rec.views] == ["bfloat16", "bfloat16"]
    assert [v.ctypes.data for v in rec.views] == [opt.state[b][k].data_ptr()
                                                  for k in ("exp_avg", "exp_avg_sq")]


def test_names_and_defaults_of_the_new_keywords():
    import inspect

    for name in ft.optimizers.__all__:
        sig = inspect.signature(getattr(ft, name)).parameters
        for arg, default in (("state_dtype", "float32"), ("stochastic_rounding", False),
                             ("seed", None)):
            assert sig[arg].default == default and sig[arg].kind == sig[arg].KEYWORD_ONLY
        g = getattr(ft, name)(mlp(torch.float32).parameters()).param_groups[0]
        assert g["state_dtype"] == "float32" and g["stochastic_rounding"] is False
        assert 0 <= g["seed"] < 2**63


@pytest.mark.parametrize("make, exc, match", [
    (lambda m: ft.Adam(m.parameters(), state_dtype="int8"), ValueError,
     r"param_groups\[0\]\['state_dtype'\] must be one of"),
    (lambda m: ft.Adam(m.double().parameters(), state_dtype="uint8"), ValueError,
     r"param_groups\[0\]\['state_dtype'\]: 'uint8' needs float32, float16 or bfloat16"),
    (lambda m: ft.SGD(m.parameters(), stochastic_rounding=True), ValueError,
     r"param_groups\[0\]\['stochastic_rounding'\]: rounds bfloat16 params; params\[0\] has "
     r"dtype torch.float32"),
    (lambda m: ft.SGD(m.bfloat16().parameters(), stochastic_rounding=1), TypeError,
     r"stochastic_rounding'\]: must be a bool"),
    (lambda m: ft.Adamax(m.parameters(), seed=-2), ValueError, r"seed"),
    (lambda m: ft.Adagrad(m.parameters(), seed=2**64), ValueError, r"seed must be < 2\*\*63"),
])
def test_bad_options_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make(mlp(torch.float32))


def test_a_bad_group_is_refused_and_not_added():
    model = mlp(torch.float32)
    opt = ft.AdamW([next(model.parameters())], lr=1e-2)
    rest = list(model.parameters())[1:]
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['stochastic_rounding'\]"):
        opt.add_param_group({"params": rest, "stochastic_rounding": True})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": rest, "state_dtype": "uint8"})
    assert opt.param_groups[1]["state_dtype"] == "uint8"


def test_a_bad_8bit_state_is_refused_naming_the_param_and_changes_nothing():
    x, y = digits(torch.float32)
    model = mlp(torch.float32)
    opt = ft.Adam(groups(model), lr=1e-2, state_dtype="uint8")
    train(model, opt, x, y, {}, steps=2)
    w = opt.param_groups[0]["params"][0]
    opt.state[w]["exp_avg_absmax"] = torch.zeros(3)
    before = [p.detach().clone() for p in model.parameters()]
    keep = copy.deepcopy(opt.state[w]["exp_avg"])
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\]: "
                                         r"state\['exp_avg'\] holds 8-bit codes: its absmax"):
        opt.step()
    for a, p in zip(before, model.parameters()):
        assert torch.equal(a, p)
    assert torch.equal(keep, opt.state[w]["exp_avg"])
