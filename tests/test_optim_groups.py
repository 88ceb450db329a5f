"""Parameter groups of the NumPy optimizers (``fusedopt.optim``): a list of dicts, each with its
own hyperparameters, as torch.optim's.

Ground truth: one optimizer per group, with the group's values, gives the same bits as one
optimizer with the groups (and agreement with torch.optim's groups is in tests/test_torch.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from cases import CASES, assert_same_bits, grad_stream, make_params

from fusedopt import optim, schedules

SHAPES = [(5, 3), (7,), (4097,), (2, 3), (11,)]
SPLIT = 3  # group 0: the first three arrays; group 1: the rest


def overrides(case):
    """The values group 1 sets: another lr, and another weight decay / momentum / betas where
    the case has them."""
    o = {"lr": case.options["lr"] * 0.5}
    if "weight_decay" in case.options or case.cls is not optim.SGD:
        o["weight_decay"] = 0.0 if case.options.get("weight_decay") else 0.02
    if case.options.get("momentum"):
        o["momentum"] = 0.0 if case.cls is optim.RMSprop else case.options["momentum"] / 2
    if case.options.get("betas"):
        o["betas"] = (0.85, 0.98)
    if case.cls is optim.Adagrad:
        o["initial_accumulator_value"] = 0.25
    return o


def grouped_and_separate(case, dtype=np.float64, backend="auto"):
    params = make_params(SHAPES, dtype)
    grouped = case.cls([{"params": [p.copy() for p in params[:SPLIT]]},
                        {"params": [p.copy() for p in params[SPLIT:]], **overrides(case)}],
                       backend=backend, **case.options)
    first = case.cls([p.copy() for p in params[:SPLIT]], backend=backend, **case.options)
    second = case.cls([p.copy() for p in params[SPLIT:]], backend=backend,
                      **{**case.options, **overrides(case)})
    return grouped, first, second


def assert_groups_match(grouped, first, second):
    n = len(first.params)
    for i, (a, b) in enumerate(zip(grouped.params, first.params + second.params)):
        assert_same_bits(a, b, f"params[{i}]")
    for name, arrs in grouped.state.items():
        for part, lo in ((first, 0), (second, n)):
            if name in part.state:
                for i, b in enumerate(part.state[name]):
                    assert_same_bits(arrs[lo + i], b, f"state[{name!r}][{lo + i}]")
            else:   # a state this group's options do not use stays as it started
                assert all(not a.any() for a in arrs[lo:lo + len(part.params)])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_groups_step_like_one_optimizer_per_group(case):
    grouped, first, second = grouped_and_separate(case)
    grads = grad_stream(SHAPES, np.float64)
    for _ in range(6):
        g = next(grads)
        grouped.step(g)
        first.step(g[:SPLIT])
        second.step(g[SPLIT:])
    assert grouped.step_count == 6
    assert_groups_match(grouped, first, second)


@pytest.mark.parametrize("case", CASES[::4], ids=[c.id for c in CASES[::4]])
def test_groups_on_the_reference_backend(case):
    grouped, first, second = grouped_and_separate(case, np.float32, backend="reference")
    auto, _, _ = grouped_and_separate(case, np.float32)
    grads = grad_stream(SHAPES, np.float32)
    for _ in range(4):
        g = next(grads)
        for opt in (grouped, auto):
            opt.step(g)
        first.step(g[:SPLIT])
        second.step(g[SPLIT:])
    assert_groups_match(grouped, first, second)
    for a, b in zip(auto.params, grouped.params):
        assert_same_bits(a, b, "auto vs reference")


def test_a_group_value_changed_between_steps_and_schedules():
    params = make_params(SHAPES, np.float64)
    opt = optim.SGD([{"params": [p.copy() for p in params[:SPLIT]]},
                     {"params": [p.copy() for p in params[SPLIT:]],
                      "lr": schedules.exponential_decay(0.1, 0.5)}],
                    lr=0.2)
    a = optim.SGD([p.copy() for p in params[:SPLIT]], lr=0.2)
    b = optim.SGD([p.copy() for p in params[SPLIT:]], lr=opt.param_groups[1]["lr"])
    grads = grad_stream(SHAPES, np.float64)
    for k in range(5):
        if k == 3:
            opt.param_groups[0]["lr"] = 0.05
            a.lr = 0.05
        g = next(grads)
        opt.step(g)
        a.step(g[:SPLIT])
        b.step(g[SPLIT:])
    assert_groups_match(opt, a, b)
    assert opt.current_lr() == 0.05     # the first group's


def test_groups_checkpoint_and_resume_bit_for_bit(tmp_path):
    case = next(c for c in CASES if c.id == "adam-eps_root-max")
    straight, _, _ = grouped_and_separate(case)
    opt, _, _ = grouped_and_separate(case)
    grads = list(zip(range(6), grad_stream(SHAPES, np.float64)))
    for _, g in grads:
        straight.step(g)
    for _, g in grads[:3]:
        opt.step(g)
    sd = opt.state_dict()
    assert sd["param_groups"] == [{"size": SPLIT}, {"size": len(SHAPES) - SPLIT,
                                                    **overrides(case)}]
    np.savez(tmp_path / "ckpt.npz", **optim.flatten_state_dict(sd))
    resumed, _, _ = grouped_and_separate(case)
    for p, q in zip(resumed.params, opt.params):
        p[...] = q
    resumed.param_groups[1]["lr"] = 123.0          # the checkpoint's values come back
    with np.load(tmp_path / "ckpt.npz") as f:
        resumed.load_state_dict(optim.unflatten_state_dict(f))
    assert resumed.param_groups[1]["lr"] == overrides(case)["lr"]
    assert type(resumed.param_groups[1]["betas"]) is tuple
    for _, g in grads[3:]:
        resumed.step(g)
    for a, b in zip(straight.params, resumed.params):
        assert_same_bits(a, b, "param")
    for name in straight.state:
        for a, b in zip(straight.state[name], resumed.state[name]):
            assert_same_bits(a, b, name)


def test_a_plain_optimizer_keeps_its_state_dict_format():
    opt = optim.Adam([np.zeros(3)], lr=0.1)
    assert set(opt.state_dict()) == {"step", "lr", "hyperparams", "state"}
    assert opt.param_groups == [{"params": opt.params}]


def test_bad_groups_are_refused_naming_them():
    p, q = np.zeros(3), np.zeros(4)
    with pytest.raises(ValueError, match=r"params\[1\]: 'momentun' is not a hyperparameter"):
        optim.SGD([{"params": [p]}, {"params": [q], "momentun": 0.9}], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[1\]\['lr'\]"):
        optim.SGD([{"params": [p]}, {"params": [q], "lr": -1.0}], lr=0.1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([{"params": [p]}, {"params": [q], "betas": (1.5, 0.9)}])
    with pytest.raises(TypeError, match=r"params\[1\] must be a dict"):
        optim.Adam([{"params": [p]}, [q]])
    with pytest.raises(ValueError, match=r"params\[0\] shares memory with params\[1\]"):
        optim.Adam([{"params": [p]}, {"params": [p]}])


def test_a_bad_step_changes_no_group():
    case = next(c for c in CASES if c.id == "sgd-momentum")
    opt, _, _ = grouped_and_separate(case)
    grads = next(grad_stream(SHAPES, np.float64))
    opt.step(grads)
    before = [p.copy() for p in opt.params], [b.copy() for b in opt.state["momentum_buffer"]]
    bad = list(grads)
    bad[-1] = bad[-1].astype(np.float32)           # a wrong dtype in the last group
    with pytest.raises(TypeError, match=r"grads\[4\]"):
        opt.step(bad)
    opt.param_groups[1]["momentum"] = -1.0         # a bad value in the last group
    with pytest.raises(ValueError, match="momentum"):
        opt.step(grads)
    for a, b in zip(before[0] + before[1], opt.params + opt.state["momentum_buffer"]):
        assert_same_bits(a, b)
    assert opt.step_count == 1


def test_load_state_dict_refuses_other_groups_and_changes_nothing():
    case = next(c for c in CASES if c.id == "adam")
    opt, _, _ = grouped_and_separate(case)
    sd = opt.state_dict()
    other, _, _ = grouped_and_separate(case)
    for bad, match in [({**sd, "param_groups": sd["param_groups"][:1]}, "list of 2 groups"),
                       ({**sd, "param_groups": [sd["param_groups"][0],
                                                {**sd["param_groups"][1], "size": 9}]},
                        r"\[1\] must be a dict with 'size' 2"),
                       ({k: v for k, v in sd.items() if k != "param_groups"}, "list of 2"),
                       ({**sd, "param_groups": [sd["param_groups"][0],
                                                {**sd["param_groups"][1], "lr": -2.0}]},
                        r"\['lr'\]")]:
        with pytest.raises(ValueError, match=match):
            other.load_state_dict(bad)
        assert other.param_groups[1]["lr"] == overrides(case)["lr"]
