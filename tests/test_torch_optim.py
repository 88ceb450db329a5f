"""fusedopt.torch: drop-in torch.optim optimizers (skipped where torch is absent).

Ground truths: ``fusedopt.optim`` with ``backend="reference"`` (the NumPy equations) must be
matched bit for bit, and ``torch.optim`` with the same options within per-dtype tolerances (torch
orders some operations differently; see tests/test_torch.py). The model: an MLP on the first
256 of scikit-learn's digits, full batch, two parameter groups (the weights with the case's
weight decay, the biases without), torch's StepLR, 120 steps.
"""
from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest

from cases import CASES, assert_same_bits

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import fusedopt  # noqa: E402
import fusedopt.torch as ft  # noqa: E402
from fusedopt.torch import _bridge  # noqa: E402

TDTYPES = {"f32": torch.float32, "f64": torch.float64}
STEPS = 120
# After 120 steps of training (the errors of each step feed the next through the gradients):
# float64 agrees to ~1e-12, float32 to a few 1e-6 relative (measured: max 3e-6 on every case).
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}
TORCH_CASES = [c for c in CASES if "eps_root" not in c.options]
# Two cases are chaotic on this model: their float64 runs, which start 1e-16 apart (torch's
# order of operations), drift apart tenfold every ~7 steps (measured: 1e-14 after 20 steps,
# 1e-2 after 100, for adamax-wd-max), a property of the trajectory, not of the rule; they are
# compared with torch over fewer steps. Everything is compared with the reference over all.
TORCH_STEPS = {"adamax-wd-max": 20, "rmsprop-momentum-wd-max": 40}
# Centered RMSprop in float32 is ill-conditioned where a weight's gradient barely varies: its
# centered variance square_avg - grad_avg**2 cancels, and the step divides by its square root.
# torch's CPU kernels round differently from the rule's written order (after one step on an AMD
# Zen 4, square_avg differs in its last bit and a param by 3e-10, which fused multiply-adds
# explain; fusedopt never contracts), and the cancellation amplifies that: measured as max |a - b| / (atol + rtol |b|), 0.09
# after 40 and 60 steps, 0.83 after 90, above 1 (a momentum buffer) after 120. float64 agrees
# to 4e-11 after 120 steps (the same math); the bit-exact test above covers float32.
F32_STEPS = {"rmsprop-centered-momentum": 40}


def digits(dtype):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:256] / 16.0, dtype=dtype), torch.tensor(y[:256])


def mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 10)).to(dtype)


def groups(model, options):
    """Two parameter groups: the weights with the case's weight decay, the biases without."""
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n.endswith("weight")]},
            {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}]


def loss_of(model, x, y, options):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    return -loss if options.get("maximize") else loss   # maximize: ascend -loss


def torch_class(case, module):
    return getattr(module, case.cls.__name__)


def train(model, opt, x, y, options, steps=STEPS, sched=None, each=None):
    for _ in range(steps):
        opt.zero_grad()
        loss_of(model, x, y, options).backward()
        if each is not None:
            each()
        opt.step()
        if sched is not None:
            sched.step()


def torch_options(case):
    return {k: v for k, v in case.options.items() if k != "eps_root"}


@pytest.mark.parametrize("dt", TDTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mlp_equals_the_reference_bit_for_bit(case, dt):
    dtype = TDTYPES[dt]
    x, y = digits(dtype)
    model = mlp(dtype)
    opt = torch_class(case, ft)(groups(model, case.options), **case.options)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
    refs = []
    for g in opt.param_groups:
        opts = dict(case.options, weight_decay=g["weight_decay"])
        refs.append(case.cls([p.detach().numpy().copy() for p in g["params"]],
                             backend="reference", **opts))

    def reference_step():
        for ref, g in zip(refs, opt.param_groups):
            ref.lr = g["lr"]
            ref.step([p.grad.numpy().copy() for p in g["params"]])

    train(model, opt, x, y, case.options, sched=sched, each=reference_step)
    assert opt.param_groups[0]["lr"] == case.options["lr"] * 0.5 ** 4
    for ref, g in zip(refs, opt.param_groups):
        for i, (a, p) in enumerate(zip(ref.params, g["params"])):
            assert_same_bits(p.detach().numpy(), a, f"params[{i}]")
            state = opt.state[p]
            for name, arrs in ref.state.items():
                assert_same_bits(state[name].numpy(), arrs[i], f"state {name}[{i}]")
            if "step" in state:
                assert state["step"].item() == STEPS


@pytest.mark.parametrize("dt", TDTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=[c.id for c in TORCH_CASES])
def test_mlp_agrees_with_torch_optim(case, dt):
    dtype = TDTYPES[dt]
    x, y = digits(dtype)
    runs = []
    for module in (ft, torch.optim):
        model = mlp(dtype)
        opt = torch_class(case, module)(groups(model, case.options), **torch_options(case))
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
        steps = TORCH_STEPS.get(case.id, STEPS)
        if dtype == torch.float32:
            steps = min(steps, F32_STEPS.get(case.id, steps))
        train(model, opt, x, y, case.options, steps=steps, sched=sched)
        runs.append((model, opt))
    (ours, oopt), (theirs, topt) = runs
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, **TOL[dtype])
        assert oopt.state[p].keys() == topt.state[q].keys()
        for k, v in oopt.state[p].items():
            torch.testing.assert_close(v, topt.state[q][k], **TOL[dtype], msg=k)
    assert oopt.param_groups[0]["lr"] == topt.param_groups[0]["lr"]


def test_names_and_defaults_are_torch_optims():
    import inspect

    for name in ft.optimizers.__all__:
        ours = inspect.signature(getattr(ft, name)).parameters
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
        extra = ("eps_root", "master_weights", "state_dtype", "stochastic_rounding",
                 "seed")                                 # fusedopt's own keywords
        assert [a for a in ours if a not in extra] == list(theirs), name
        assert ours["master_weights"].default is False, name
        assert ours["master_weights"].kind == inspect.Parameter.KEYWORD_ONLY, name
        for arg, p in theirs.items():
            assert ours[arg].default == p.default, (name, arg)
            assert ours[arg].kind == p.kind, (name, arg)
        model = mlp(torch.float32)
        a = getattr(ft, name)(model.parameters()).param_groups[0]
        b = getattr(torch.optim, name)(model.parameters()).param_groups[0]
        assert {k: v for k, v in a.items() if k not in extra} == b, name
        assert a["master_weights"] is False, name


# ---------------------------------------------------------------------------------------------
# Checkpoints: torch's format both ways, resume bit for bit


def roundtrip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c.id for c in TORCH_CASES])
@pytest.mark.parametrize("direction", ["torch-to-fusedopt", "fusedopt-to-torch"])
def test_checkpoint_cross_loads_and_training_continues(case, direction):
    dtype = torch.float32
    x, y = digits(dtype)
    first, second = (torch.optim, ft) if direction == "torch-to-fusedopt" else (ft, torch.optim)
    opts = torch_options(case)
    model = mlp(dtype)
    opt = torch_class(case, first)(groups(model, opts), **opts)
    train(model, opt, x, y, opts, steps=10)
    saved_model, saved_opt = roundtrip(model.state_dict()), roundtrip(opt.state_dict())
    # continue in the first library and, from the checkpoint, in the second
    train(model, opt, x, y, opts, steps=10)
    resumed = mlp(dtype, seed=1)
    resumed.load_state_dict(saved_model)
    opt2 = torch_class(case, second)(groups(resumed, opts), **opts)
    opt2.load_state_dict(saved_opt)
    for p in resumed.parameters():
        for k, v in opt2.state[p].items():
            assert v.data_ptr() != 0 and (k == "step" or v.dtype == dtype)
    train(resumed, opt2, x, y, opts, steps=10)
    for p, q in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, **TOL[dtype])
        assert opt.state[p].keys() == opt2.state[q].keys()
        for k in opt.state[p]:
            torch.testing.assert_close(opt.state[p][k], opt2.state[q][k], **TOL[dtype])
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd1["state"].keys() == sd2["state"].keys()
    for g1, g2 in zip(sd1["param_groups"], sd2["param_groups"]):
        assert g1["params"] == g2["params"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resume_is_bit_identical(case):
    dtype = torch.float32
    x, y = digits(dtype)
    cls = torch_class(case, ft)
    straight = mlp(dtype)
    opt = cls(groups(straight, case.options), **case.options)
    train(straight, opt, x, y, case.options, steps=30)
    model = mlp(dtype)
    opt_a = cls(groups(model, case.options), **case.options)
    train(model, opt_a, x, y, case.options, steps=15)
    saved_model, saved_opt = roundtrip(model.state_dict()), roundtrip(opt_a.state_dict())
    resumed = mlp(dtype, seed=2)
    resumed.load_state_dict(saved_model)
    opt_b = cls(groups(resumed, case.options), **case.options)
    opt_b.load_state_dict(saved_opt)
    train(resumed, opt_b, x, y, case.options, steps=15)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert_same_bits(p.detach().numpy(), q.detach().numpy(), "param")
        for k in opt.state[p]:
            assert_same_bits(opt.state[p][k].numpy(), opt_b.state[q][k].numpy(), k)


def test_sgd_state_with_a_none_buffer_starts_the_momentum_afresh():
    """Older torch checkpoints hold momentum_buffer None before the first step: the buffer is
    then set to the gradient, as torch does."""
    runs = []
    for module in (ft, torch.optim):
        p = torch.nn.Parameter(torch.ones(4))
        opt = module.SGD([p], lr=0.1, momentum=0.9)
        opt.load_state_dict({"state": {0: {"momentum_buffer": None}},
                             "param_groups": [dict(opt.state_dict()["param_groups"][0])]})
        for _ in range(3):
            p.grad = torch.full((4,), 2.0)
            opt.step()
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[0], runs[1])


def test_pickle_and_deepcopy_keep_training_identically():
    x, y = digits(torch.float32)
    model = mlp(torch.float32)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    train(model, opt, x, y, {}, steps=3)
    model2 = copy.deepcopy(model)
    opt2 = ft.Adam(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))
    train(model, opt, x, y, {}, steps=3)
    train(model2, opt2, x, y, {}, steps=3)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    copied = copy.deepcopy(opt)     # torch's __getstate__/__setstate__: the caches start afresh
    assert copied._records == {} and copied.state_dict()["state"].keys() == \
        opt.state_dict()["state"].keys()


# ---------------------------------------------------------------------------------------------
# torch.optim behaviours: schedulers, None grads, hooks, closure, lr changes


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5),
    "MultiStepLR": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5], 0.1),
    "ExponentialLR": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1 / (1 + k)),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.05, total_steps=20),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.001, 0.05, step_size_up=3),
    "LinearLR": lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.2, total_iters=5),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, "max",
                                                                            patience=0),
    "SequentialLR": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o, [torch.optim.lr_scheduler.ConstantLR(o, 0.5, total_iters=2),
            torch.optim.lr_scheduler.ExponentialLR(o, 0.9)], milestones=[2]),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_lr_scheduler_works_unchanged(name):
    x, y = digits(torch.float64)
    lrs, models = [], []
    for module in (ft, torch.optim):
        model = mlp(torch.float64)
        opt = module.SGD(model.parameters(), lr=0.05, momentum=0.9)   # CyclicLR cycles momentum
        sched = SCHEDULERS[name](opt)
        seen = []
        for _ in range(12):
            opt.zero_grad()
            loss = loss_of(model, x, y, {})
            loss.backward()
            opt.step()
            sched.step(loss.item()) if name == "ReduceLROnPlateau" else sched.step()
            seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        lrs.append(seen)
        models.append(model)
    assert lrs[0] == lrs[1]
    assert len({lr for lr, _ in lrs[0]}) > 1
    for p, q in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(p, q, **TOL[torch.float64])


def test_params_without_grad_are_skipped_as_torch_does():
    """Params whose .grad is None are left alone, state and step count included; their step
    counts then differ within a group (one kernel call per count), as torch's do."""
    x, y = digits(torch.float64)
    runs = []
    for module in (ft, torch.optim):
        model = mlp(torch.float64)
        opt = module.Adam(model.parameters(), lr=1e-2)
        params = list(model.parameters())
        for k in range(10):
            opt.zero_grad()
            loss_of(model, x, y, {}).backward()
            params[k % 4].grad = None           # a different param misses each step
            if k < 3:
                params[3].grad = None           # the last bias starts late
            opt.step()
        runs.append((model, opt))
    (m1, o1), (m2, o2) = runs
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, **TOL[torch.float64])
        assert o1.state[p]["step"] == o2.state[q]["step"]
    assert [o1.state[p]["step"].item() for p in m1.parameters()] == [7, 7, 8, 5]

    model = mlp(torch.float32)
    opt = ft.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()                                   # no grads at all: nothing happens
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_hooks_closure_zero_grad_and_lr_changes():
    model = mlp(torch.float32)
    x, y = digits(torch.float32)
    opt = ft.AdamW(model.parameters(), lr=1e-2)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = loss_of(model, x, y, {})
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and calls == ["pre", "post"]
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    # a changed lr takes effect at the next step: lr 0 with weight decay 0 leaves params alone
    opt.param_groups[0]["lr"] = 0.0
    opt.param_groups[0]["weight_decay"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # add_param_group: a new tensor joins and is stepped
    extra = torch.nn.Parameter(torch.ones(5))
    opt.add_param_group({"params": [extra], "lr": 0.1})
    extra.grad = torch.ones(5)
    opt.step()
    assert (extra < 1).all() and opt.state[extra]["step"].item() == 1


def test_tensors_reach_the_kernels_without_copies():
    p = torch.nn.Parameter(torch.zeros(10))
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(10)
    opt.step()
    rec = opt._records[id(p)]
    assert rec.pview.ctypes.data == p.data_ptr()
    assert [v.ctypes.data for v in rec.views] == [opt.state[p][k].data_ptr()
                                                  for k in ("exp_avg", "exp_avg_sq")]
    # a param given new memory is seen at the next step
    p.data = torch.zeros(10)
    opt.step()
    assert (p < 0).all() and opt._records[id(p)].pview.ctypes.data == p.data_ptr()


# ---------------------------------------------------------------------------------------------
# Bad input: refused naming the argument, nothing changed


def snapshot(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            copy.deepcopy(opt.state_dict()))


def assert_unchanged(model, opt, snap):
    params, sd = snap
    for a, p in zip(params, model.parameters()):
        assert torch.equal(a, p)
    now = opt.state_dict()
    assert now["state"].keys() == sd["state"].keys()
    for i in sd["state"]:
        for k, v in sd["state"][i].items():
            assert torch.equal(v, now["state"][i][k]), (i, k)


def trained(cls=ft.Adam, groups_of=groups, **kw):
    model = mlp(torch.float32)
    x, y = digits(torch.float32)
    opt = cls(groups_of(model, {}), **kw)
    train(model, opt, x, y, {}, steps=2)
    opt.zero_grad()
    loss_of(model, x, y, {}).backward()
    return model, opt


@pytest.mark.parametrize("n, i, hyper", [(1, 1, "lr"), (0, 2, "eps")],
                         ids=["two-groups", "one-group"])
def test_bad_grads_raise_naming_the_param_and_change_nothing(n, i, hyper):
    """Two groups: every grad and group is checked before the first kernel call. One group,
    one kernel call: the kernel's own checks refuse the call before it changes anything, and
    the param is then named."""
    model, opt = trained(groups_of=groups if n else (lambda m, o: m.parameters()))
    snap = snapshot(model, opt)
    where = rf"param_groups\[{n}\]\['params'\]\[{i}\]"
    p = opt.param_groups[n]["params"][i]
    good = p.grad
    p.grad = good.to_sparse()
    with pytest.raises(TypeError, match=where + ".*sparse"):
        opt.step()
    assert_unchanged(model, opt, snap)
    p.grad = good.clone()
    p.grad.data = good.double()                 # torch checks dtype only on assignment
    with pytest.raises(TypeError, match=where + ".*dtype"):
        opt.step()
    p.grad.data = torch.zeros(3)
    with pytest.raises(TypeError, match=where + ".*shape"):
        opt.step()
    assert_unchanged(model, opt, snap)
    # a hyperparameter made bad in the last group: the first group is not stepped either
    p.grad = good
    opt.param_groups[n][hyper] = -1.0
    with pytest.raises(ValueError, match=hyper):
        opt.step()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: [torch.zeros(4, 3).t()], ValueError, "not contiguous"),
    (lambda: [torch.zeros(3, device="meta")], ValueError, "meta"),
    (lambda: [torch.zeros(3, dtype=torch.complex64)], TypeError, "dtype"),
    (lambda: [torch.zeros(3, dtype=torch.int32)], TypeError, "dtype"),
    (lambda: [torch.zeros(3), torch.zeros(3, device="meta")], ValueError,
     "different devices"),
    (lambda: [torch.zeros(2, 2).to_sparse()], TypeError, "sparse|dense"),
])
def test_bad_params_are_refused_at_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        ft.Adam(make())


def test_bad_groups_are_refused_and_not_added():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    opt = ft.SGD([a], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="twice in one group"):
        opt.add_param_group({"params": [b, b]})
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\].*dtype"):
        opt.add_param_group({"params": [torch.zeros(3, dtype=torch.int32)]})
    with pytest.raises(ValueError, match="momentum"):
        opt.add_param_group({"params": [b], "momentum": -1.0})
    assert len(opt.param_groups) == 1
    for flag in ("capturable", "differentiable"):
        with pytest.raises(ValueError, match=flag):
            ft.Adam([b], **{flag: True})
    with pytest.raises(ValueError, match="lr"):
        ft.AdamW([b], lr=-1.0)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        ft.Adagrad([b], initial_accumulator_value=-1.0)


def test_a_param_made_non_contiguous_later_is_refused_at_the_step():
    p = torch.nn.Parameter(torch.zeros(4, 3))
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.ones(4, 3)
    opt.step()
    p.data = torch.zeros(3, 4).t()
    p.grad = torch.ones(4, 3)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\].*contiguous"):
        opt.step()
    assert (p == 0).all()


def test_a_non_contiguous_grad_is_read_through_a_copy():
    p = torch.nn.Parameter(torch.zeros(4, 3))
    q = torch.nn.Parameter(torch.zeros(4, 3))
    opt = ft.SGD([p, q], lr=0.5)
    g = torch.arange(12.0).reshape(3, 4).t()
    p.grad, q.grad = g, g.contiguous()
    opt.step()
    assert torch.equal(p, q) and not torch.equal(p, torch.zeros(4, 3))


# ---------------------------------------------------------------------------------------------
# AMP: torch.amp.GradScaler


def amp_run(module, inf_at=None, steps=6, dtype=torch.float32, enabled=True, **kw):
    x, y = digits(dtype)
    model = mlp(dtype)
    opt = module.Adam(model.parameters(), lr=1e-2, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3,
                                  enabled=enabled)
    scales = []
    for k in range(steps):
        opt.zero_grad()
        scaler.scale(loss_of(model, x, y, {})).backward()
        if k == inf_at:
            next(model.parameters()).grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return model, opt, scales


def test_grad_scaler_unscales_in_the_step_and_skips_infs():
    assert ft.Adam._step_supports_amp_scaling
    model, opt, scales = amp_run(ft)
    # the scale is a power of two: unscaling is exact, so a run without AMP gives the same bits
    x, y = digits(torch.float32)
    plain = mlp(torch.float32)
    popt = ft.Adam(plain.parameters(), lr=1e-2)
    train(plain, popt, x, y, {}, steps=6)
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p, q)
    assert scales == [1024.0, 1024.0, 2048.0, 2048.0, 2048.0, 4096.0]
    # and torch.optim.Adam under the same scaler agrees to rounding
    tmodel, _, tscales = amp_run(torch.optim)
    assert tscales == scales
    for p, q in zip(model.parameters(), tmodel.parameters()):
        torch.testing.assert_close(p, q, **TOL[torch.float32])


def test_grad_scaler_inf_step_changes_nothing_and_backs_off():
    model, opt, scales = amp_run(ft, inf_at=2, steps=3)
    ref, ropt, _ = amp_run(ft, steps=2)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)                      # step 3 was skipped
        assert opt.state[p]["step"].item() == 2       # and not counted
        assert torch.equal(opt.state[p]["exp_avg"], ropt.state[q]["exp_avg"])
    assert scales == [1024.0, 1024.0, 512.0]
    tmodel, topt, tscales = amp_run(torch.optim, inf_at=2, steps=3)
    assert tscales == scales


def test_grad_scaler_with_explicit_unscale_and_clipping():
    x, y = digits(torch.float32)
    models = []
    for unscale in (True, False):
        model = mlp(torch.float32)
        opt = ft.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
        for _ in range(3):
            opt.zero_grad()
            scaler.scale(loss_of(model, x, y, {})).backward()
            if unscale:
                scaler.unscale_(opt)
                ft.clip_grad_norm_(model.parameters(), 1e9)    # never clips
            scaler.step(opt)
            scaler.update()
        models.append(model)
    for p, q in zip(*(m.parameters() for m in models)):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------------
# clip_grad_norm_


def grads_model(dtype=torch.float32, scale=1.0):
    model = mlp(dtype)
    x, y = digits(dtype)
    (scale * loss_of(model, x, y, {})).backward()
    return model


@pytest.mark.parametrize("dt", TDTYPES)
@pytest.mark.parametrize("max_norm", [1e-3, 1e6])
def test_clip_grad_norm_is_torchs(dt, max_norm):
    dtype = TDTYPES[dt]
    ours, theirs = grads_model(dtype, 50.0), grads_model(dtype, 50.0)
    n1 = ft.clip_grad_norm_(ours.parameters(), max_norm)
    n2 = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    assert isinstance(n1, torch.Tensor) and n1.dtype == n2.dtype and n1.dim() == 0
    torch.testing.assert_close(n1, n2, **TOL[dtype])
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL[dtype])
    if max_norm > 1:
        assert all(torch.equal(p.grad, q.grad) for p, q in
                   zip(ours.parameters(), grads_model(dtype, 50.0).parameters()))


def test_clip_grad_norm_same_bits_for_any_thread_count():
    out = []
    for n in (1, 2, 3):
        model = grads_model(scale=1e3)
        with fusedopt.num_threads(n):
            norm = ft.clip_grad_norm_(model.parameters(), 0.5)
        out.append((norm, [p.grad.clone() for p in model.parameters()]))
    for norm, grads in out[1:]:
        assert torch.equal(norm, out[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, out[0][1]))


def test_clip_grad_norm_nonfinite_and_fallbacks():
    model = grads_model()
    p = next(model.parameters())
    p.grad[0, 0] = float("nan")
    before = [q.grad.clone() for q in model.parameters()]
    with pytest.raises(RuntimeError, match="non-finite"):
        ft.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError):
        ft.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
    assert all(torch.equal(a, q.grad, ) or (a.isnan() == q.grad.isnan()).all()
               for a, q in zip(before, model.parameters()))
    assert ft.clip_grad_norm_(model.parameters(), 1.0).isnan()
    assert all(q.grad.isnan().all() for q in model.parameters())     # torch scales by NaN too
    # other norm types are torch's own
    a, b = grads_model(scale=10.0), grads_model(scale=10.0)
    assert torch.equal(ft.clip_grad_norm_(a.parameters(), 0.1, norm_type="inf"),
                       torch.nn.utils.clip_grad_norm_(b.parameters(), 0.1, norm_type="inf"))
    assert ft.clip_grad_norm_([torch.zeros(3, requires_grad=True)], 1.0).item() == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        ft.clip_grad_norm_(a.parameters(), -1.0)


# ---------------------------------------------------------------------------------------------
# CUDA tensors (CuPy through DLPack)


@pytest.mark.gpu
def test_cuda_tensors_step_like_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x, y = digits(torch.float32)
    models = []
    for device in ("cpu", "cuda"):
        model = mlp(torch.float32).to(device)
        opt = ft.AdamW(groups(model, {}), lr=1e-2, amsgrad=True)
        train(model, opt, x.to(device), y.to(device), {}, steps=5)
        models.append(model)
    for p, q in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(p.cpu(), q.cpu(), **TOL[torch.float32])



# -- 16-bit params: float16 and bfloat16, float32 states, optional master weights -------------

HDTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
HSTEPS = 30
# Against torch.optim run in float32 from the same start, after 30 steps: the 16-bit params
# round every update (without master weights updates below half an ulp are lost) and the
# forward and backward passes run in 16 bits. Measured max abs difference of the params (which
# move by 0.05 to 0.9 in these steps): bfloat16 up to 0.037, float16 up to 0.013 (adamax-wd-max);
# the two RMSprop cases with momentum reach 0.23 (bfloat16) after 30 steps whether or not
# master weights are kept (the 16-bit forward pass, not the update), and are compared over 10;
# rmsprop-momentum-wd-max in bfloat16 is 0.3 apart already after 10 steps (float16: 0.002) and
# is compared with the reference only.
HTOL = {torch.bfloat16: 0.05, torch.float16: 0.02}
HTORCH_STEPS = {"rmsprop-centered-momentum": 10, "rmsprop-momentum-wd-max": 10}


def half_array(t):
    """A NumPy copy of a 16-bit tensor (bfloat16 as ml_dtypes.bfloat16)."""
    return _bridge.array(t.detach()).copy()


@pytest.mark.parametrize("mw", [False, True], ids=["plain", "master"])
@pytest.mark.parametrize("dt", HDTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_16bit_mlp_equals_the_reference_bit_for_bit(case, dt, mw):
    dtype = HDTYPES[dt]
    x, y = digits(dtype)
    model = mlp(dtype)
    opt = torch_class(case, ft)(groups(model, case.options), master_weights=mw, **case.options)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    refs = []
    for g in opt.param_groups:
        opts = dict(case.options, weight_decay=g["weight_decay"])
        refs.append(case.cls([half_array(p) for p in g["params"]], backend="reference",
                             master_weights=mw, **opts))

    def reference_step():
        for ref, g in zip(refs, opt.param_groups):
            ref.lr = g["lr"]
            ref.step([half_array(p.grad) for p in g["params"]])

    train(model, opt, x, y, case.options, steps=HSTEPS, sched=sched, each=reference_step)
    for ref, g in zip(refs, opt.param_groups):
        for i, (a, p) in enumerate(zip(ref.params, g["params"])):
            assert p.dtype == dtype
            assert_same_bits(_bridge.array(p.detach()), a, f"params[{i}]")
            state = opt.state[p]
            assert ("master_param" in state) == mw
            for name, arrs in ref.state.items():
                assert state[name].dtype == torch.float32
                assert_same_bits(state[name].numpy(), arrs[i], f"state {name}[{i}]")
            if "step" in state:
                assert state["step"].item() == HSTEPS


@pytest.mark.parametrize("mw", [False, True], ids=["plain", "master"])
@pytest.mark.parametrize("dt", HDTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=[c.id for c in TORCH_CASES])
def test_16bit_mlp_is_close_to_torch_optim_in_float32(case, dt, mw):
    dtype = HDTYPES[dt]
    if case.id == "rmsprop-momentum-wd-max" and dtype == torch.bfloat16:
        pytest.skip("chaotic in bfloat16 on this model (0.3 apart after 10 steps, with or "
                    "without master weights); bit-exact against the reference above")
    steps = min(HSTEPS, TORCH_STEPS.get(case.id, HSTEPS), HTORCH_STEPS.get(case.id, HSTEPS))
    model = mlp(dtype)
    wide = mlp(torch.float32)
    wide.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    opt = torch_class(case, ft)(groups(model, case.options), master_weights=mw,
                                **torch_options(case))
    topt = torch_class(case, torch.optim)(groups(wide, case.options), **torch_options(case))
    start = [p.detach().float() for p in model.parameters()]
    train(model, opt, *digits(dtype), case.options, steps=steps)
    train(wide, topt, *digits(torch.float32), case.options, steps=steps)
    err = max((p.float() - q).abs().max().item()
              for p, q in zip(model.parameters(), wide.parameters()))
    moved = max((q - s).abs().max().item() for s, q in zip(start, wide.parameters()))
    print(f"16BIT {case.id} {dt} {mw} err {err:.3g} moved {moved:.3g}")
    assert err <= HTOL[dtype], err
    assert moved > 2 * err


def test_16bit_mixed_dtypes_in_one_group_equal_one_group_per_dtype():
    """float16, bfloat16 and float32 params in one group (one kernel call; with master weights
    two: the 16-bit params with their masters, the float32 one without) give the bits of one
    group per dtype."""
    for mw in (False, True):
        runs = []
        for split in (False, True):
            torch.manual_seed(0)
            ps = [torch.randn(5, 3, dtype=d) for d in (torch.float16, torch.bfloat16,
                                                       torch.float32, torch.bfloat16)]
            for p in ps:
                p.requires_grad_(True)
            groups_ = [{"params": [p]} for p in ps] if split else [{"params": ps}]
            opt = ft.AdamW(groups_, lr=1e-2, master_weights=mw)
            for k in range(5):
                for j, p in enumerate(ps):
                    p.grad = torch.full_like(p, 0.1 * (k + 1) - 0.05 * j).sin()
                opt.step()
            runs.append((ps, opt))
        (a, oa), (b, ob) = runs
        for p, q in zip(a, b):
            assert p.dtype == q.dtype and torch.equal(p.view(-1), q.view(-1))
            assert oa.state[p].keys() == ob.state[q].keys()
            assert ("master_param" in oa.state[p]) == (mw and p.dtype != torch.float32)
            for k, v in oa.state[p].items():
                assert v.dtype == torch.float32 and torch.equal(v, ob.state[q][k]), k


def test_16bit_master_weights_per_group():
    model = mlp(torch.bfloat16)
    gs = groups(model, {})
    gs[1]["master_weights"] = True
    opt = ft.Adam(gs, lr=1e-2)
    train(model, opt, *digits(torch.bfloat16), {}, steps=3)
    for p in opt.param_groups[0]["params"]:
        assert "master_param" not in opt.state[p]
    for p in opt.param_groups[1]["params"]:
        m = opt.state[p]["master_param"]
        assert m.dtype == torch.float32 and torch.equal(m.bfloat16(), p.detach())
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['master_weights'\]"):
        ft.Adam([{"params": [torch.zeros(2, dtype=torch.float16)]},
                 {"params": [torch.zeros(2)], "master_weights": 1}])


def sixteen_bit_run(module, steps, opt_sd=None, model_sd=None, mw=False, seed=0):
    model = mlp(torch.bfloat16, seed=seed)
    if model_sd is not None:
        model.load_state_dict(model_sd)
    kw = {"master_weights": mw} if module is ft else {}
    opt = module.AdamW(groups(model, {}), lr=1e-2, **kw)
    if opt_sd is not None:
        opt.load_state_dict(roundtrip(opt_sd))   # a fresh copy: "step" is loaded as is
    train(model, opt, *digits(torch.bfloat16), {}, steps=steps)
    return model, opt


def test_16bit_checkpoint_from_torch_optim_bf16_states_is_widened():
    model, topt = sixteen_bit_run(torch.optim, 5)
    q = next(model.parameters())
    assert topt.state[q]["exp_avg"].dtype == torch.bfloat16      # torch keeps bf16 states
    saved = roundtrip(topt.state_dict()), roundtrip(model.state_dict())
    resumed, opt = sixteen_bit_run(ft, 0, *saved, seed=1)
    for p, q in zip(resumed.parameters(), model.parameters()):
        for k in ("exp_avg", "exp_avg_sq"):
            assert opt.state[p][k].dtype == torch.float32
            assert torch.equal(opt.state[p][k], topt.state[q][k].float())   # exactly widened
    train(resumed, opt, *digits(torch.bfloat16), {}, steps=5)
    train(model, topt, *digits(torch.bfloat16), {}, steps=5)
    for p, q in zip(resumed.parameters(), model.parameters()):
        assert opt.state[p]["step"].item() == 10
        torch.testing.assert_close(p.float(), q.float(), rtol=0, atol=HTOL[torch.bfloat16])


@pytest.mark.parametrize("mw", [False, True], ids=["plain", "master"])
def test_16bit_checkpoint_to_torch_optim_and_resume_bit_identical(mw):
    model, opt = sixteen_bit_run(ft, 5, mw=mw)
    saved = roundtrip(opt.state_dict()), roundtrip(model.state_dict())
    for st in saved[0]["state"].values():
        assert all(v.dtype == torch.float32 for k, v in st.items() if k != "step")
        assert ("master_param" in st) == mw
    # torch.optim loads it (casting the states to bf16) and trains on
    tmodel, topt = sixteen_bit_run(torch.optim, 5, *saved, seed=1)
    p = next(tmodel.parameters())
    assert topt.state[p]["exp_avg"].dtype == torch.bfloat16 and \
        topt.state[p]["step"].item() == 10
    # fusedopt resumes bit for bit: the float32 states and masters survive torch's cast
    resumed, ropt = sixteen_bit_run(ft, 5, *saved, mw=mw, seed=1)
    train(model, opt, *digits(torch.bfloat16), {}, steps=5)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
        assert opt.state[p].keys() == ropt.state[q].keys()
        for k, v in opt.state[p].items():
            assert v.dtype == ropt.state[q][k].dtype and torch.equal(v, ropt.state[q][k]), k


@pytest.mark.parametrize("mw", [False, True], ids=["plain", "master"])
def test_16bit_bad_grads_and_states_raise_naming_the_param_and_change_nothing(mw):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3).to(torch.float16),
                                torch.nn.Linear(3, 2).to(torch.bfloat16))
    ps = list(model.parameters())
    opt = ft.Adam([{"params": ps[:2]}, {"params": ps[2:]}], lr=1e-2, master_weights=mw)
    for one_group in (False, True):
        if one_group:
            opt = ft.Adam(ps, lr=1e-2, master_weights=mw)
        for p in ps:
            p.grad = torch.ones_like(p)
        opt.step()
        snap = snapshot(model, opt)
        for i, bad in ((1, torch.bfloat16), (3, torch.float16), (2, torch.float32)):
            p = ps[i]
            n, j = (0, i) if one_group or i < 2 else (1, i - 2)
            good = p.grad
            p.grad = torch.ones_like(p)
            p.grad.data = torch.ones_like(p, dtype=bad)   # torch checks dtype on assignment
            with pytest.raises(TypeError, match=rf"param_groups\[{n}\]\['params'\]\[{j}\]"
                                                r".*dtype"):
                opt.step()
            assert_unchanged(model, opt, snap)
            p.grad = good
        # a state of the wrong dtype (float64) for a 16-bit param
        st = opt.state[ps[0]]
        good = st["exp_avg"]
        st["exp_avg"] = good.double()
        with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\].*exp_avg"):
            opt.step()
        st["exp_avg"] = good
        assert_unchanged(model, opt, snap)


def test_16bit_grad_scaler_unscales_in_the_step_and_skips_infs():
    def run(scaled, inf_at=None, steps=6):
        return amp_run(ft, inf_at, steps, torch.bfloat16, scaled, master_weights=True)[:2]

    model, opt = run(True)
    plain, _ = run(False)
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p, q)          # unscaling by a power of two is exact
    model, opt = run(True, inf_at=2, steps=3)
    ref, ropt = run(True, steps=2)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
        assert opt.state[p]["step"].item() == 2
        assert torch.equal(opt.state[p]["master_param"], ropt.state[q]["master_param"])


@pytest.mark.parametrize("dt", HDTYPES)
@pytest.mark.parametrize("max_norm", [1e-3, 1e6])
def test_clip_grad_norm_16bit_grads(dt, max_norm):
    dtype = HDTYPES[dt]
    model = mlp(dtype)
    x, y = digits(dtype)
    loss_of(model, x, y, {}).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    torch_model = copy.deepcopy(model)
    for q, g in zip(torch_model.parameters(), grads):
        q.grad = g.clone()
    norm = ft.clip_grad_norm_(model.parameters(), max_norm)
    tnorm = torch.nn.utils.clip_grad_norm_(torch_model.parameters(), max_norm)
    assert norm.dtype == dtype
    # the norm of the exact values, accumulated in float64
    exact = float(np.sqrt(sum((g.double() ** 2).sum().item() for g in grads)))
    assert norm.item() == pytest.approx(exact, rel=1e-2)
    assert float(np.float32(fusedopt.ops.global_norm([g.float().numpy() for g in grads]))) \
        == pytest.approx(exact, rel=1e-6)
    torch.testing.assert_close(norm.float(), tnorm.float(), rtol=2e-2, atol=0)
    coef = max_norm / (fusedopt.ops.global_norm([g.float().numpy() for g in grads]) + 1e-6)
    for g, p, q in zip(grads, model.parameters(), torch_model.parameters()):
        want = g.mul(coef) if coef < 1.0 else g
        assert torch.equal(p.grad, want)
        torch.testing.assert_close(p.grad.float(), q.grad.float(), rtol=2e-2, atol=1e-6)


def test_16bit_tensors_reach_the_kernels_without_copies():
    for dtype in HDTYPES.values():
        p = torch.randn(4, 3).to(dtype)
        a = _bridge.array(p)
        assert a.__array_interface__["data"][0] == p.data_ptr() and a.shape == (4, 3)
        assert a.dtype.itemsize == 2 and a.dtype.name == str(dtype).split(".")[1]
        assert np.array_equal(a.astype(np.float32), p.float().numpy())


def test_16bit_without_ml_dtypes_bfloat16_is_refused_naming_the_param(monkeypatch):
    import sys

    monkeypatch.setattr(_bridge, "_bfloat16", None)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)      # import ml_dtypes fails
    with pytest.raises(ImportError, match=r"param_groups\[0\]\['params'\]\[1\].*ml_dtypes"):
        ft.Adam([torch.zeros(2, dtype=torch.float16), torch.zeros(2, dtype=torch.bfloat16)])
    ft.Adam([torch.zeros(2, dtype=torch.float16)])               # float16 needs none
