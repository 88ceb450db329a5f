"""The Python face of the optimizers: pickle/deepcopy, checkpoints through np.savez, a
load_state_dict that cannot half-apply, threads, AMP's grad_scale/found_inf, the package's dir()
and the docstrings (every parameter documented, the examples run)."""
import copy
import doctest
import inspect
import math
import pickle
import re
import threading

import numpy as np
import pytest
from cases import CASE_IDS, CASES, assert_same_bits, assert_same_state, grad_stream, make_params
from cuda_host.devices import dev  # noqa: F401 -- the fixture: CuPy on a GPU, or the host double
from test_cuda import assert_same_gpu_state, to_gpu

import fusedopt
from fusedopt import functions, init, optim, ops, schedules

SHAPES = [(7,), (4097,)]


def _make(case, params, **kw):
    """The case's optimizer with some options replaced (``lr`` by a schedule, say)."""
    return case.cls(params, **{**case.options, **kw})


def _run(opt, grads):
    for g in grads:
        opt.step(g)


def _grads(n, dtype=np.float32):
    stream = grad_stream(SHAPES, dtype)
    return [next(stream) for _ in range(n)]


# -- pickle and deepcopy ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_optimizer_survives_pickle_and_deepcopy(case, how):
    grads = _grads(8)
    opt = _make(case, make_params(SHAPES, np.float32), lr=schedules.cosine_decay(0.01, 6))
    _run(opt, grads[:4])
    twin = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    assert twin.step_count == 4 and repr(twin.lr) == repr(opt.lr)
    for p, q in zip(opt.params, twin.params):
        assert not np.shares_memory(p, q)
    _run(opt, grads[4:])
    _run(twin, grads[4:])
    assert twin.step_count == opt.step_count == 8
    assert_same_state(opt, twin)


ALL_SCHEDULES = [
    schedules.constant(0.1),
    schedules.inverse_time_decay(0.2, 1.0),
    schedules.exponential_decay(1.0, 0.5),
    schedules.inverse_sqrt_decay(0.1, 2.0),
    schedules.step_decay(1.0, 0.5, 10),
    schedules.cosine_decay(1e-3, 1000),
    schedules.linear_warmup(1e-2, 20, start=1e-4),
    schedules.join([schedules.linear_warmup(1.0, 10), schedules.cosine_decay(1.0, 90)], [10]),
]


@pytest.mark.parametrize("s", ALL_SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedules_pickle_deepcopy_repr(s):
    for twin in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert twin == s and hash(twin) == hash(s) and repr(twin) == repr(s)
        assert [twin(t) for t in range(0, 120, 7)] == [s(t) for t in range(0, 120, 7)]
    # The repr is the call that made it: evaluating it gives an equal schedule.
    assert eval(repr(s), vars(schedules)) == s
    assert isinstance(s, schedules.Schedule) and callable(s)


def test_schedule_repr_reads_as_the_call():
    assert repr(schedules.cosine_decay(0.001, 1000)) == \
        "cosine_decay(lr0=0.001, total=1000, final=0.0)"
    assert repr(schedules.linear_warmup(1e-2, 20)) == \
        "linear_warmup(peak=0.01, warmup_steps=20, start=0.0)"
    assert schedules.constant(0.1) != schedules.constant(0.2)
    assert schedules.constant(0.1) != schedules.inverse_sqrt_decay(0.1)


# -- schedules check their arguments -------------------------------------------------------------
@pytest.mark.parametrize("make, exc, name", [
    # The reported case: arguments in the wrong order used to give lr = 20.0.
    (lambda: schedules.linear_warmup(0.0, 1e-2, 20), TypeError, "warmup_steps"),
    (lambda: schedules.linear_warmup(1e-2, 20, start=0.5), ValueError, "start"),
    (lambda: schedules.cosine_decay(1e-3, 100.5), TypeError, "total"),
    (lambda: schedules.cosine_decay(1e-3, 100, final=1.0), ValueError, "final"),
    (lambda: schedules.step_decay(1.0, 0.5, 2.0), TypeError, "every"),
    (lambda: schedules.step_decay(1.0, 2.0, 10), ValueError, "factor"),
    (lambda: schedules.exponential_decay(1.0, 1.5), ValueError, "rate"),
    (lambda: schedules.constant("0.1"), TypeError, "lr"),
    (lambda: schedules.inverse_sqrt_decay(0.1, k=-1), ValueError, "k"),
    (lambda: schedules.join([schedules.constant(1)] * 2, [2.5]), TypeError, r"boundaries\[0\]"),
    (lambda: schedules.join([schedules.constant(1)] * 3, [5, 3]), ValueError, "boundaries"),
    (lambda: schedules.join(schedules.constant(1), []), TypeError, "schedules"),
    (lambda: schedules.join([schedules.constant(1), "x"], [3]), TypeError, r"schedules\[1\]"),
    (lambda: schedules.cosine_decay(10**400, 100), ValueError, "lr0"),
    (lambda: schedules.cosine_decay(1.0, 100)(10**400), ValueError, "t"),
])
def test_schedule_arguments_are_checked(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


# -- checkpoints through np.savez --------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_savez_round_trip_resumes_bit_identically(case, tmp_path):
    grads = _grads(12)
    sched = schedules.join([schedules.linear_warmup(0.02, 3), schedules.cosine_decay(0.02, 9)],
                           [3])
    straight = _make(case, make_params(SHAPES, np.float32), lr=sched)
    _run(straight, grads)

    first = _make(case, make_params(SHAPES, np.float32), lr=sched)
    _run(first, grads[:5])
    np.savez(tmp_path / "ckpt.npz", **optim.flatten_state_dict(first.state_dict()))
    params = [p.copy() for p in first.params]
    with np.load(tmp_path / "ckpt.npz") as f:           # allow_pickle stays False
        loaded = optim.unflatten_state_dict(f)
    resumed = _make(case, params, lr=sched)
    resumed.load_state_dict(loaded)
    assert resumed.step_count == 5 and resumed.current_lr() == first.current_lr()
    _run(resumed, grads[5:])
    assert_same_state(straight, resumed)


def test_flat_state_dict_keys_and_float_lr(tmp_path):
    opt = optim.Adam(make_params(SHAPES, np.float64), lr=0.01, amsgrad=True)
    _run(opt, _grads(2, np.float64))
    flat = optim.flatten_state_dict(opt.state_dict())
    assert sorted(flat) == sorted(
        ["step", "lr", *(f"hyperparams.{k}" for k in opt.hyperparams),
         *(f"state.{k}.{i}" for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
           for i in range(2))])
    assert all(isinstance(v, np.ndarray) for v in flat.values())
    np.savez(tmp_path / "c.npz", **flat)
    with np.load(tmp_path / "c.npz") as f:
        back = optim.unflatten_state_dict(f)
    sd = opt.state_dict()
    assert back["step"] == 2 and back["lr"] == 0.01 and back["hyperparams"] == sd["hyperparams"]
    assert type(back["hyperparams"]["betas"]) is tuple
    assert type(back["hyperparams"]["amsgrad"]) is bool
    for k, arrs in sd["state"].items():
        for a, b in zip(arrs, back["state"][k]):
            assert_same_bits(a, b)
    with pytest.raises(ValueError, match="unknown key"):
        optim.unflatten_state_dict({**flat, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="numbered"):
        optim.unflatten_state_dict({k: v for k, v in flat.items() if k != "state.exp_avg.0"})


def test_load_state_dict_takes_0d_arrays_for_scalars():
    grads = _grads(4)
    a = optim.Adam(make_params(SHAPES, np.float32), lr=0.01, weight_decay=0.1)
    _run(a, grads[:2])
    sd = a.state_dict()
    sd0 = {**sd, "step": np.array(sd["step"]), "lr": np.array(sd["lr"]),
           "hyperparams": {k: np.array(v) for k, v in sd["hyperparams"].items()}}
    b = optim.Adam([p.copy() for p in a.params], lr=0.5)
    b.load_state_dict(sd0)
    assert b.step_count == 2 and b.lr == 0.01 and type(b.lr) is float
    assert b.hyperparams == a.hyperparams and type(b.hyperparams["betas"]) is tuple
    _run(a, grads[2:])
    _run(b, grads[2:])
    assert_same_state(a, b)


# -- load_state_dict never half-applies ---------------------------------------------------------
class _BrokenArray:
    """Right shape and dtype, but its conversion to an array fails."""

    def __init__(self, like):
        self.shape, self.dtype = like.shape, like.dtype

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("cannot convert")


def test_load_state_dict_with_an_unconvertible_entry_changes_nothing():
    opt = optim.Adam(make_params(SHAPES, np.float32), lr=0.01, amsgrad=True)
    grads = _grads(3)
    opt.step(grads[0])
    sd = opt.state_dict()
    # Another optimizer's state, with different lr and hyperparameters, and the last array of
    # the last state list broken: before the fix, lr and hyperparameters were replaced and the
    # state partly rebuilt.
    other = optim.Adam(make_params(SHAPES, np.float32), lr=0.5, betas=(0.5, 0.6))
    other.step(grads[1])
    bad = other.state_dict()
    bad["hyperparams"]["amsgrad"] = True
    bad["state"]["max_exp_avg_sq"] = [bad["state"]["exp_avg_sq"][0],
                                      _BrokenArray(opt.params[1])]
    keep = copy.deepcopy(opt)
    with pytest.raises(TypeError, match=r"state_dict\['state'\]\['max_exp_avg_sq'\]\[1\]"):
        opt.load_state_dict(bad)
    assert opt.lr == 0.01 and opt.hyperparams == keep.hyperparams and opt.step_count == 1
    assert_same_state(opt, keep)
    opt.step(grads[2])          # no KeyError: the state is whole
    keep.step(grads[2])
    assert_same_state(opt, keep)
    assert opt.state_dict()["step"] == 2 and sd["step"] == 1


# -- Python ints beyond float range -------------------------------------------------------------
def test_huge_ints_raise_value_errors_naming_the_argument():
    huge = 10**400
    p = make_params(SHAPES, np.float32)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.Adam(p, weight_decay=huge)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(p, lr=huge)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        optim.Adam(p, betas=(huge, 0.9))
    g = [np.ones_like(x) for x in p]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for impl in (ops, fusedopt.reference):
        with pytest.raises(ValueError, match="step"):
            impl.adam_(p, g, m, v, step=huge)
        with pytest.raises(ValueError, match="step"):
            impl.adam_(p, g, m, v, step=2**63)
    opt = optim.SGD(p, lr=lambda t: huge)
    with pytest.raises(ValueError, match="schedule"):
        opt.step(g)
    assert opt.step_count == 0
    with pytest.raises(ValueError, match="max_norm"):
        ops.clip_by_global_norm_(g, huge)
    sd = optim.SGD(p, lr=0.1).state_dict()
    with pytest.raises(ValueError, match=r"state_dict\['step'\]"):
        optim.SGD(p, lr=0.1).load_state_dict({**sd, "step": huge})


# -- threads ----------------------------------------------------------------------------------
def test_steps_from_two_threads_are_serialized():
    """SGD with lr 1 and grads of ones subtracts exactly 1 per step (small integers are exact):
    after n steps from each of two threads every element is -2n, and step_count is 2n. Without
    the lock, steps overlap (the kernel releases the GIL) and updates are lost."""
    n, size = 60, 1 << 19
    w = np.zeros(size)
    opt = optim.SGD([w], lr=1.0)
    g = [np.ones(size)]
    start = threading.Barrier(2)
    errors = []

    def worker():
        try:
            start.wait()
            for _ in range(n):
                opt.step(g)
        except Exception as e:  # pragma: no cover -- reported below
            errors.append(e)

    with fusedopt.num_threads(1):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert opt.step_count == 2 * n
    assert np.all(w == -2.0 * n)


def test_threads_documented():
    assert "Threads" in optim.Optimizer.__doc__ and "serialized" in optim.Optimizer.__doc__


# -- AMP: grad_scale / found_inf ----------------------------------------------------------------
def _amp(flag, scale=4.0):
    return np.array([scale], np.float32), np.array([flag], np.float32)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_found_inf_skips_the_step_and_the_count(case, backend):
    grads = _grads(3)
    opt = case.make(make_params(SHAPES, np.float32), backend=backend)
    opt.step(grads[0])
    keep = copy.deepcopy(opt)
    scale, found = _amp(1.0)
    bad = [np.full_like(g, np.inf) for g in grads[1]]
    opt.step(bad, grad_scale=scale, found_inf=found)
    assert opt.step_count == 1
    assert_same_state(opt, keep)
    opt.step(grads[2])       # the next step is step 2, as if the skipped one never happened
    keep.step(grads[2])
    assert_same_state(opt, keep)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grad_scale_divides_the_grads(case, backend):
    """With found_inf == 0 the rule sees g / grad_scale: the same bits as stepping with the
    unscaled grads (a power of two scales exactly), and the count advances."""
    grads = _grads(4)
    plain = case.make(make_params(SHAPES, np.float32), backend=backend)
    scaled = case.make(make_params(SHAPES, np.float32), backend=backend)
    scale, found = _amp(0.0, 1024.0)
    for g in grads:
        plain.step(g)
        scaled.step([x * np.float32(1024.0) for x in g], grad_scale=scale, found_inf=found)
    assert scaled.step_count == 4
    assert_same_state(plain, scaled)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grad_scale_auto_equals_reference(case):
    """A scale that is not a power of two: the fused path divides as the reference does."""
    grads = _grads(3)
    opts = [case.make(make_params(SHAPES, np.float32), backend=b) for b in ("auto", "reference")]
    scale, found = _amp(0.0, 3.0)
    for g in grads:
        for o in opts:
            o.step(g, grad_scale=scale, found_inf=found)
    assert_same_state(*opts)


def test_amp_arguments_are_checked_before_anything_changes():
    opt = optim.Adam(make_params(SHAPES, np.float32))
    keep = copy.deepcopy(opt)
    g = _grads(1)[0]
    scale, found = _amp(0.0)
    with pytest.raises(ValueError, match="grad_scale and found_inf"):
        opt.step(g, grad_scale=scale)
    with pytest.raises(ValueError, match="grad_scale and found_inf"):
        opt.step(g, found_inf=found)
    with pytest.raises(TypeError, match="found_inf"):
        opt.step(g, grad_scale=scale, found_inf=0.0)
    with pytest.raises(TypeError, match="grad_scale"):
        opt.step(g, grad_scale=np.array([2.0]), found_inf=found)
    with pytest.raises(TypeError, match="found_inf"):
        opt.step(g, grad_scale=scale, found_inf=np.zeros(2, np.float32))
    assert opt.step_count == 0
    assert_same_state(opt, keep)


# -- the same on the CUDA backend (a GPU, or the host double of tests/cuda_host) -------------
@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("adam-wd-amsgrad", "sgd-momentum",
                                                               "rmsprop-centered-momentum")],
                         ids=lambda c: c.id)
def test_cuda_amp_skip_scale_and_checkpoint(dev, case, tmp_path):
    """On device arrays: found_inf != 0 skips the step and the count; grad_scale divides; a
    checkpoint through np.savez (state copied to the host) resumes on the device, bit for bit
    with the CPU fused path."""
    grads = _grads(6)
    ref = case.make(make_params(SHAPES, np.float32))
    opt = case.make(to_gpu(dev, make_params(SHAPES, np.float32)))
    one = dev.asarray(np.ones(1, np.float32))
    zero = dev.asarray(np.zeros(1, np.float32))
    scale = dev.asarray(np.full(1, 256.0, np.float32))
    for k, g in enumerate(grads[:3]):
        ref.step(g)
        opt.step(to_gpu(dev, [np.full_like(x, np.nan) for x in g]), grad_scale=scale, found_inf=one)
        opt.step(to_gpu(dev, [x * np.float32(256.0) for x in g]), grad_scale=scale, found_inf=zero)
        assert opt.step_count == k + 1
    assert_same_gpu_state(dev, opt, ref)

    np.savez(tmp_path / "ckpt.npz", **optim.flatten_state_dict(opt.state_dict()))
    resumed = case.make(to_gpu(dev, [dev.asnumpy(p) for p in opt.params]))
    with np.load(tmp_path / "ckpt.npz") as f:
        resumed.load_state_dict(optim.unflatten_state_dict(f))
    # (the host double's array class, named cupy.ndarray, cannot be pickled: deepcopy there)
    twin = pickle.loads(pickle.dumps(opt)) if dev.name == "cuda" else copy.deepcopy(opt)
    for g in grads[3:]:
        ref.step(g)
        resumed.step(to_gpu(dev, g))
        twin.step(to_gpu(dev, g))
    assert_same_gpu_state(dev, resumed, ref)
    assert_same_gpu_state(dev, twin, ref)


# -- the package's face -------------------------------------------------------------------------
def test_dir_lists_the_public_api_only():
    names = dir(fusedopt)
    assert names == sorted(fusedopt.__all__)
    for private in ("_core", "contextlib", "importlib", "annotations", "bench"):
        assert private not in names
    for lazy in ("functions", "init", "sampling", "newton", "demo", "benchmarks"):
        assert lazy in names
    for name in names:          # every listed name resolves (the lazy ones are imported)
        assert getattr(fusedopt, name) is not None, name


def test_dead_defaults_are_gone():
    assert not hasattr(optim.Optimizer, "_defaults")
    assert "_impl" not in vars(optim.Adam(make_params(SHAPES, np.float32)))


# -- docstrings -------------------------------------------------------------------------------
def _public(module, skip=()):
    for name in module.__all__:
        obj = getattr(module, name)
        if name in skip or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        yield name, obj


DOCUMENTED = [(m, name, obj) for m, skip in (
    (optim, ("LBFGS", "Optimizer")), (schedules, ("Schedule",)), (functions, ()), (init, ()))
    for name, obj in _public(m, skip)]


_PARAM_LINE = re.compile(r"^([A-Za-z_][\w, ]*) : (.*?)(?:, default (.*))?$")


def _documented_parameters(doc):
    """{name: default text or None} from a numpydoc Parameters section."""
    lines = doc.split("Parameters\n----------\n", 1)[1].splitlines()
    out = {}
    for line in lines:
        if line.strip() and not line.startswith(" "):
            if line.rstrip() in ("Returns", "Examples", "Notes", "Raises", "Attributes"):
                break
            m = _PARAM_LINE.match(line)
            if m:
                for n in m.group(1).split(","):
                    out[n.strip()] = m.group(3)
    return out


@pytest.mark.parametrize("module, name, obj", DOCUMENTED,
                         ids=[f"{m.__name__}.{n}" for m, n, _ in DOCUMENTED])
def test_every_parameter_is_documented(module, name, obj):
    """numpydoc: a Parameters section naming each argument with its default (the same value
    as the signature's), and an example."""
    doc = inspect.getdoc(obj) or ""
    sig = inspect.signature(obj)
    params = [p for p in sig.parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if params:
        assert "Parameters\n----------\n" in doc, name
        documented = _documented_parameters(doc)
        for p in params:
            assert p.name in documented, f"{name}: {p.name} undocumented"
            if p.default is not p.empty:
                text = documented[p.name]
                assert text is not None, f"{name}: {p.name}'s default undocumented"
                value = eval(text, {"np": np, "math": math})   # our own docs: a literal
                assert value == p.default, f"{name}: {p.name} default {text} != {p.default!r}"
    assert "Examples\n--------" in doc and ">>>" in doc, f"{name}: no example"
    assert not re.search(r"^\s*<[a-z_ ]+>", doc, re.M), f"{name}: a placeholder left unfilled"


@pytest.mark.parametrize("module", [optim, schedules, functions, init],
                         ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    globs = {"np": np, "fusedopt": fusedopt, **vars(module)}
    result = doctest.testmod(module, globs=globs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_help_shows_the_equations():
    doc = inspect.getdoc(optim.Adam)
    for text in ("exp_avg_sq", "max_exp_avg_sq", "1 - beta1^t", "eps_root",
                 "betas : tuple of 2 floats, default (0.9, 0.999)", "maximize : bool",
                 "backend :", "lr : float or callable, default 1e-3"):
        assert text in doc, text
    assert "<shared parameters>" not in doc and "<params and lr>" not in doc
    assert math.isfinite(optim.Adam(make_params(SHAPES, np.float32)).current_lr())
