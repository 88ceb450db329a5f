"""Agreement with torch.optim for the options torch shares (skipped where torch is absent).

torch orders some operations differently (e.g. Adam divides by sqrt(v)/sqrt(1-b2^t) rather than
taking sqrt(v/(1-b2^t)), and RMSprop's centered average uses lerp), so the results agree to
rounding, not bit for bit. Tolerances after 25 steps: float64 rtol 1e-9, float32 rtol 2e-5 (with
an absolute floor for values near zero), a few ulps per step, accumulated.
"""
import numpy as np
import pytest

from cases import CASE_IDS, CASES, DTYPES, grad_stream, make_params

torch = pytest.importorskip("torch")

TORCH_CLASS = {"SGD": "SGD", "Adagrad": "Adagrad", "RMSprop": "RMSprop", "Adam": "Adam",
               "AdamW": "AdamW", "Adamax": "Adamax"}
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-9, atol=1e-11)}
SHARED = [c for c in CASES if c.options.get("eps_root", 0.0) == 0.0]


def step_both(ours, tparams, topt, shapes, dtype, steps=25):
    """The same gradients to both optimizers for ``steps`` steps; then the params agree."""
    grads = grad_stream(shapes, dtype)
    for _ in range(steps):
        g = next(grads)
        ours.step(g)
        for tp, gi in zip(tparams, g):
            tp.grad = torch.tensor(gi)
        topt.step()
    for p, tp in zip(ours.params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", SHARED, ids=[c.id for c in SHARED])
def test_agrees_with_torch_optim(case, dtype):
    shapes = [(257,), (3, 11)]
    params = make_params(shapes, dtype)
    ours = case.make([p.copy() for p in params])
    tparams = [torch.tensor(p.copy()) for p in params]
    topt = getattr(torch.optim, TORCH_CLASS[case.cls.__name__])(tparams, **case.options)
    step_both(ours, tparams, topt, shapes, dtype)
    for name, arrs in ours.state.items():
        for a, tp in zip(arrs, tparams):
            np.testing.assert_allclose(a, topt.state[tp][name].numpy(), **TOL[dtype],
                                       err_msg=f"state {name}")
    # Every state array we keep is one torch keeps too, under the same name.
    assert set(ours.state) <= set(topt.state[tparams[0]])


@pytest.mark.parametrize("name", sorted(TORCH_CLASS))
def test_names_and_defaults_are_torch_optims(name):
    """A user switching from torch.optim keeps the argument names and defaults: every argument
    of ours (but params, backend, optax's eps_root and master_weights, issue 9's float32 copies
    of 16-bit params, and issue 10's state_dtype, stochastic_rounding and seed) is torch's,
    with torch's default."""
    import inspect

    from fusedopt import optim

    ours = inspect.signature(getattr(optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, TORCH_CLASS[name])).parameters
    for arg, p in ours.items():
        if arg in ("params", "backend", "eps_root", "master_weights", "state_dtype",
                   "stochastic_rounding", "seed"):
            continue
        assert arg in theirs, f"{name}: {arg} is not torch's"
        assert p.default == theirs[arg].default, \
            f"{name}: {arg} defaults to {p.default!r}, torch's to {theirs[arg].default!r}"


@pytest.mark.parametrize("case", SHARED, ids=[c.id for c in SHARED])
def test_parameter_groups_agree_with_torch_optims(case):
    """fusedopt.optim's parameter groups mean what torch.optim's do: each group's values
    override the constructor's."""
    from test_optim_groups import SHAPES, SPLIT, overrides

    dtype = np.float64
    params = make_params(SHAPES, dtype)
    group1 = overrides(case)
    # torch.optim.Adagrad fills every group's sum with the constructor's
    # initial_accumulator_value, ignoring a group's own (fusedopt uses the group's)
    group1.pop("initial_accumulator_value", None)
    ours = case.cls([{"params": [p.copy() for p in params[:SPLIT]]},
                     {"params": [p.copy() for p in params[SPLIT:]], **group1}], **case.options)
    tparams = [torch.tensor(p.copy()) for p in params]
    topt = getattr(torch.optim, TORCH_CLASS[case.cls.__name__])(
        [{"params": tparams[:SPLIT]}, {"params": tparams[SPLIT:], **group1}], **case.options)
    step_both(ours, tparams, topt, SHAPES, dtype)


# ---- the torch section's training loop and column order (smoke runs) ---------------------------

def test_symmetric_timing_runs_both_orders_and_averages():
    from fusedopt.benchmarks import vs_torch  # noqa: PLC0415

    orders = []

    def timer(fns):
        orders.append(list(fns))
        return {k: (1.0 if len(orders) == 1 else 3.0) * (i + 1) for i, k in enumerate(fns)}

    got = vs_torch.symmetric(timer, {"a": None, "b": None, "c": None})
    assert orders == [["a", "b", "c"], ["c", "b", "a"]]
    assert got == {"a": (1.0 + 9.0) / 2, "b": (2.0 + 6.0) / 2, "c": (3.0 + 3.0) / 2}


def test_training_loop_times_every_column_and_restores_the_pool_waits():
    from fusedopt import _core  # noqa: PLC0415
    from fusedopt.benchmarks import vs_torch  # noqa: PLC0415

    before = _core._pool_waits()
    times, n = vs_torch.training_loop(quick=True, rounds=1)
    assert _core._pool_waits() == before
    assert set(times) == set(vs_torch.LOOP_IMPLS)
    assert n == 4 * 1024 * 1024 + 4 * 1024
    for it, st in times.values():
        assert 0 < st < it


def test_torch_steps_run_on_openmp_threads_under_auto():
    """fusedopt.torch's step and clip_grad_norm_ mark their thread as a torch caller: under
    threading 'auto' (the default) their kernel calls run on the OpenMP runtime's threads
    (torch's), under 'pool' on fusedopt's pool; the mark is gone afterwards, also after an
    error; the bits do not depend on it."""
    import fusedopt  # noqa: PLC0415
    import fusedopt.torch as ft  # noqa: PLC0415
    from fusedopt import _core  # noqa: PLC0415

    n = 300007
    g = torch.linspace(-1, 1, n)

    def run(mode):
        fusedopt.set_threading(mode)
        p = torch.nn.Parameter(torch.zeros(n))
        p.grad = g.clone()
        opt = ft.Adam([p], lr=0.1)
        r0 = _core._openmp_regions()
        opt.step()
        opt.step()
        ft.clip_grad_norm_([p], 0.5)
        return _core._openmp_regions() - r0, p.detach().numpy().tobytes(), p.grad.numpy().tobytes()

    old = fusedopt.get_threading()
    try:
        with fusedopt.num_threads(2):
            auto, pool = run("auto"), run("pool")
            assert auto[0] >= 3 and pool[0] == 0
            assert auto[1:] == pool[1:]
            fusedopt.set_threading("auto")
            bad = ft.Adam([torch.nn.Parameter(torch.zeros(3))])
            bad.param_groups[0]["params"][0].grad = torch.zeros(3)
            bad.param_groups[0]["lr"] = -1.0
            with pytest.raises(ValueError, match="lr"):
                bad.step()
            assert _core._torch_caller(False) is False  # the mark did not leak
    finally:
        fusedopt.set_threading(old)
