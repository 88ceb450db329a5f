"""Compact state on the CUDA backend (issue 10): bfloat16 and 8-bit blockwise state, stochastic
rounding, for CuPy arrays -- the same bits as the NumPy reference and the CPU kernels.

The registry of tests/test_state_dtypes.py (RULES x PARAMS x state kinds, odd sizes, 25 steps)
runs through the ``dev`` fixture: on a GPU (``gpu`` marker) and on the host emulation of the
kernels (tests/cuda_host). Params, master weights and every state (bfloat16 bits; 8-bit codes and
absmax) must equal the reference's and the CPU kernels' after every run; bad input is refused
before anything changes.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from fusedopt import _cuda, ops, quant, reference
from cuda_host.devices import dev  # noqa: F401 -- the fixture
from cases import assert_same_bits
from test_state_dtypes import (BF16, PARAM_IDS, RULE_IDS, SIZES, STEPS, Model, _bits_equal,
                               _centered_8bit, make_state)

BIG = 278011


def _need_bf16(dev):
    try:
        dev.asarray(np.zeros(2, BF16))
    except Exception as e:  # noqa: BLE001 -- a CuPy without bfloat16 arrays
        pytest.skip(f"this CuPy cannot hold bfloat16 arrays: {e!r}")


def to_device(dev, x):
    """A state item, param list item or master weight as the device holds it."""
    if isinstance(x, quant.QuantizedState):
        return quant.QuantizedState(dev.asarray(x.codes), dev.asarray(x.absmax), x.signed)
    return dev.asarray(x)


class DeviceModel:
    """A Model's params, master weights and states copied to the device; steps through ops with
    the Model's grads and hyperparameters."""

    def __init__(self, dev, m: Model):
        self.dev, self.m = dev, m
        self.params = [to_device(dev, p) for p in m.params]
        self.master_params = (None if m.master_params is None
                              else [to_device(dev, p) for p in m.master_params])
        self.states = [None if lst is None else [to_device(dev, s) for s in lst]
                       for lst in m.states]

    def step(self, t, **extra):
        m = self.m
        kw = dict(m.hyper, step=t, master_params=self.master_params, **extra)
        if m.sr:
            kw.update(stochastic_rounding=True, seed=12345)
        getattr(ops, m.fn)(self.params, [self.dev.asarray(g) for g in m.grads(t)],
                           *self.states, **kw)

    def host(self) -> Model:
        """The device's arrays back in a copy of the Model (for _bits_equal)."""
        out = copy.deepcopy(self.m)
        back = self.dev.asnumpy
        out.params = [back(p) for p in self.params]
        if self.master_params is not None:
            out.master_params = [back(p) for p in self.master_params]
        out.states = [None if lst is None else [_host_state(s, back) for s in lst]
                      for lst in self.states]
        return out


def _host_state(s, back):
    if not isinstance(s, quant.QuantizedState):
        return back(s)
    q = copy.copy(s)  # as it is, even where a test broke it (an absmax of the wrong length)
    q.codes, q.absmax = back(s.codes), back(s.absmax)
    return q


def run_three(dev, rule_id, pid, kind, sizes, steps=STEPS):
    """The device, the CPU kernels and the reference from the same start: all bit-equal."""
    base = Model(rule_id, pid, kind, sizes)
    if base.dtype == BF16 or kind == "bfloat16":
        _need_bf16(dev)
    cpu, ref = copy.deepcopy(base), copy.deepcopy(base)
    gpu = DeviceModel(dev, base)
    for t in range(1, steps + 1):
        gpu.step(t)
        cpu.step(ops, t)
        ref.step(reference, t)
    dev.sync()
    _bits_equal(cpu, ref)
    got = gpu.host()
    _bits_equal(got, ref)
    return got


@pytest.mark.parametrize("kind", ["bfloat16", "uint8"])
@pytest.mark.parametrize("pid", PARAM_IDS)
@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_cuda_compact_equals_reference_and_cpu(dev, rule_id, pid, kind):
    if _centered_8bit(rule_id, kind):
        m = Model(rule_id, pid, kind, [300])
        gpu = DeviceModel(dev, m)
        before = gpu.host()
        with pytest.raises(ValueError, match="centered RMSprop with 8-bit state"):
            gpu.step(1)
        _bits_equal(gpu.host(), before)
        return
    got = run_three(dev, rule_id, pid, kind, SIZES)
    assert not np.array_equal(got.params[-1].view(np.uint8),
                              Model(rule_id, pid, kind, SIZES).params[-1].view(np.uint8))


@pytest.mark.parametrize("kind", ["bfloat16", "uint8"])
@pytest.mark.parametrize("pid", ["float32", "bfloat16-sr"])
@pytest.mark.parametrize("rule_id", ["adam", "sgd-momentum"])
def test_cuda_compact_large_tensor(dev, rule_id, pid, kind):
    # Larger than one pass of the grid. On the host emulation the grid's blocks run one after
    # another (about 20 s for STEPS steps): 5 steps there; test_state_dtypes runs BIG for STEPS
    # steps on the CPU kernels against the reference.
    run_three(dev, rule_id, pid, kind, [BIG, 3], steps=STEPS if dev.name == "cuda" else 5)


def test_cuda_stochastic_rounding_equals_cpu(dev):
    """bfloat16 params whose updates are below half an ulp: the device rounds them with the
    CPU's random bits (the same hash of seed, step, tensor and element), and they move."""
    _need_bf16(dev)
    p = [np.ones(20000, BF16), np.ones(513, BF16)]
    g = [np.full(20000, 1e-3, BF16), np.full(513, -1e-3, BF16)]
    cpu = copy.deepcopy(p)
    gp = [dev.asarray(x) for x in p]
    for t in range(1, 6):
        ops.sgd_(gp, [dev.asarray(x) for x in g], step=t, lr=0.5, stochastic_rounding=True,
                 seed=2**63 + 5)
        ops.sgd_(cpu, g, step=t, lr=0.5, stochastic_rounding=True, seed=2**63 + 5)
    for i in range(2):
        assert_same_bits(dev.asnumpy(gp[i]), cpu[i], f"params[{i}]")
    assert dev.asnumpy(gp[0]).astype(np.float32).mean() < 1.0 - 1e-3


@pytest.mark.parametrize("blocks", [1, 3, 64])
def test_cuda_compact_same_bits_for_any_grid(dev, blocks, monkeypatch):
    monkeypatch.setattr(_cuda.runtime, "launch_blocks", blocks)
    run_three(dev, "adamw-amsgrad-max", "bfloat16-master-sr", "uint8", [4097, 1, 700],
              steps=4)


def test_cuda_kinds_mix_per_tensor_and_amp(dev):
    """One list holding float32, bfloat16 and 8-bit state side by side (each tensor's exp_avg and
    exp_avg_sq of another kind), with AMP's pair on the device: a step with found_inf != 0
    changes nothing, the others equal the reference's."""
    _need_bf16(dev)
    kinds = [(300, "float32", "uint8"), (5000, "bfloat16", "float32"), (7000, "uint8", "bfloat16")]
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(n).astype(np.float32) for n, _, _ in kinds]
    m = [make_state(k, True, (n,)) for n, k, _ in kinds]
    v = [make_state(k, False, (n,)) for n, _, k in kinds]
    ref = Model("adam", "float32", "float32", [n for n, _, _ in kinds])
    ref.params, ref.states = params, [m, v]
    gpu = DeviceModel(dev, ref)
    ref = copy.deepcopy(ref)
    scale = np.array([4.0], np.float32)
    for t in range(1, 6):
        grads = [rng.standard_normal(n).astype(np.float32) * 4 for n, _, _ in kinds]
        skip = np.array([1.0 if t == 3 else 0.0], np.float32)
        before = gpu.host()
        ops.adam_(gpu.params, [dev.asarray(x) for x in grads], *gpu.states, step=t, lr=0.01,
                  grad_scale=dev.asarray(scale), found_inf=dev.asarray(skip))
        reference.adam_(ref.params, grads, *ref.states, step=t, lr=0.01, grad_scale=scale,
                        found_inf=skip)
        if t == 3:
            _bits_equal(gpu.host(), before)
    _bits_equal(gpu.host(), ref)
    assert [type(x).__name__ for x in gpu.states[0]] == ["ndarray", "ndarray", "QuantizedState"]


def test_cuda_encoding_equals_reference_at_every_bucket_edge(dev):
    """SGD's first momentum step stores g itself: the device's codes of every bucket edge and
    threshold of the encoding table (and either side of it) are quantize(g)'s."""
    for signed in (True, False):
        e = np.arange(quant.ENCODE_LO - 2, quant.ENCODE_HI + 3, dtype=np.uint32)
        edges = np.concatenate([e << np.uint32(16), (e << np.uint32(16)) | np.uint32(0xFFFF)])
        t = quant.thresholds(signed)[:-1]
        y = np.concatenate([edges.view(np.float32), t, np.nextafter(t, np.float32(2)),
                            np.nextafter(t, np.float32(-2)), quant.dynamic_map(signed)])
        y = y[np.abs(y) <= 1]
        y = np.concatenate([y, -y]) if signed else np.abs(y)
        nb = quant.blocks(y.size)
        x = np.insert(y, np.arange(nb) * (quant.BLOCK - 1), np.float32(1.0)).astype(np.float32)
        buf = to_device(dev, quant.zeros(x.shape, signed))
        if signed:
            ops.sgd_([dev.xp.zeros(x.size, np.float32)], [dev.asarray(x)], [buf], step=1,
                     lr=0.0, momentum=0.9)
            want = quant.quantize(x, True)
        else:
            g = np.sqrt(x)
            ops.adagrad_([dev.xp.zeros(x.size, np.float32)], [dev.asarray(g)], [buf], step=1,
                         lr=0.0)
            want = quant.quantize(g * g, False)
        assert np.array_equal(dev.asnumpy(buf.absmax), want.absmax)
        assert np.array_equal(dev.asnumpy(buf.codes), want.codes)


# ---- bad input: refused before anything changes --------------------------------------------------

def _set_state(m, k, i, value):
    m.states[k][i] = value


BAD = [
    # (id, param kind, state kind, mutation of the DeviceModel, error, message)
    ("float64-state", "float32", "uint8",
     lambda d: _set_state(d, 0, 0, d.dev.xp.zeros(300, np.float64)), TypeError, "dtype float64"),
    ("codes-wrong-length", "float32", "uint8",
     lambda d: _set_state(d, 1, 1, to_device(d.dev, quant.zeros(5001, False))), ValueError,
     "codes: shape"),
    ("absmax-wrong-length", "float32", "uint8",
     lambda d: setattr(d.states[1][1], "absmax", d.dev.xp.zeros(9, np.float32)), ValueError,
     "absmax has 9 values"),
    ("signedness", "float32", "uint8",
     lambda d: _set_state(d, 0, 0, to_device(d.dev, quant.zeros(300, False))), ValueError,
     "must be signed"),
    ("numpy-codes", "float32", "uint8",
     lambda d: _set_state(d, 0, 1, quant.zeros(5000, True)), TypeError,
     r"codes must be a cupy\.ndarray"),
    ("numpy-bf16-state", "float32", "bfloat16",
     lambda d: _set_state(d, 1, 0, np.zeros(300, BF16)), TypeError,
     r"must be a cupy\.ndarray"),
    ("stochastic-rounding-float32", "float32", "uint8",
     lambda d: setattr(d.m, "sr", True), ValueError, "stochastic_rounding"),
    ("float64-params", "float32", "bfloat16",
     lambda d: setattr(d, "params", [d.dev.asarray(d.dev.asnumpy(p).astype(np.float64))
                                     for p in d.params]), TypeError, "float32 math"),
]


@pytest.mark.parametrize("bad", BAD, ids=[b[0] for b in BAD])
def test_cuda_compact_bad_input_refused_before_anything_changes(dev, bad):
    _, pid, kind, mutate, err, msg = bad
    if kind == "bfloat16":
        _need_bf16(dev)
    d = DeviceModel(dev, Model("adam", pid, kind, [300, 5000]))
    mutate(d)
    if bad[0] == "float64-params":  # grads must match the params' dtype to reach the check
        grads = d.m.grads
        d.m.grads = lambda t: [g.astype(np.float64) for g in grads(t)]
    launched = []
    real = _cuda.runtime.function
    _cuda.runtime.function = lambda *a: launched.append(a) or real(*a)
    try:
        before = d.host()
        with pytest.raises(err, match=msg):
            d.step(1)
    finally:
        _cuda.runtime.function = real
    assert not launched
    _bits_equal(d.host(), before)


def test_cuda_compact_amp_pair_and_devices(dev):
    """AMP's pair goes together and lives on the params' device; state on another device is
    refused (naming the argument)."""
    from cuda_host import emulation  # noqa: PLC0415

    if dev.name != "host":
        pytest.skip("two devices are emulated on the host only")
    d = DeviceModel(dev, Model("adam", "float32", "uint8", [300, 5000]))
    before = d.host()
    with pytest.raises(ValueError, match="grad_scale and found_inf go together"):
        d.step(1, grad_scale=dev.asarray(np.ones(1, np.float32)))
    with pytest.raises(TypeError, match="found_inf must be a cupy.ndarray"):
        d.step(1, grad_scale=dev.asarray(np.ones(1, np.float32)),
               found_inf=np.zeros(1, np.float32))
    q = d.states[0][1]
    d.states[0][1] = quant.QuantizedState(emulation.on_device(dev.asnumpy(q.codes), 1),
                                          q.absmax, True)
    with pytest.raises(TypeError, match=r"exp_avgs\[1\]\.codes is on device 1"):
        d.step(1)
    d.states[0][1] = q
    _bits_equal(d.host(), before)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "uint8"])
@pytest.mark.parametrize("cls", ["Adam", "SGD", "RMSprop"])
def test_cuda_optimizer_class_compact_state(dev, cls, state_dtype):
    """fusedopt.optim with CuPy params and ``state_dtype`` makes its compact state on the device
    and steps with the bits of the same class on NumPy params; its state_dict holds them."""
    from fusedopt import optim  # noqa: PLC0415

    _need_bf16(dev)
    kw = dict(lr=0.01, stochastic_rounding=True, seed=7, state_dtype=state_dtype)
    if cls == "SGD":
        kw["momentum"] = 0.9
    if cls == "RMSprop":
        kw["momentum"] = 0.5
    shapes = [(5000,), (7,), (4097,)]
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(BF16) for s in shapes]
    gpu = getattr(optim, cls)([dev.asarray(p) for p in params], **kw)
    cpu = getattr(optim, cls)([p.copy() for p in params], **kw)
    for _ in range(5):
        g = [(rng.standard_normal(s) * 0.1).astype(BF16) for s in shapes]
        gpu.step([dev.asarray(x) for x in g])
        cpu.step(g)
    for i, p in enumerate(cpu.params):
        assert_same_bits(dev.asnumpy(gpu.params[i]), p, f"params[{i}]")
    assert gpu.state.keys() == cpu.state.keys()
    compact = 0
    for name in cpu.state:
        for i, (x, y) in enumerate(zip(gpu.state[name], cpu.state[name])):
            if isinstance(y, quant.QuantizedState):
                compact += 1
                assert isinstance(x.codes, dev.ndarray)
                assert np.array_equal(dev.asnumpy(x.codes), y.codes), (name, i)
                assert np.array_equal(dev.asnumpy(x.absmax), y.absmax), (name, i)
            else:
                compact += y.dtype == BF16
                assert isinstance(x, dev.ndarray)
                assert_same_bits(dev.asnumpy(x), y, f"state[{name!r}][{i}]")
    assert compact >= 2
