"""bfloat16 and 8-bit blockwise state, stochastic rounding (issue 10): the fused kernels against
the NumPy reference, bit for bit.

One registry (RULES) of rules x options; every rule runs with each state kind (float32,
bfloat16, uint8) and each param kind (float32, float16, bfloat16 with and without master
weights and stochastic rounding), over a model of odd sizes, 25 steps; params, master weights
and every state (bits; codes and absmax) must equal the reference's after every run.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from fusedopt import _core, ops, quant, reference
from cases import assert_same_bits, threads_and_isa

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

# (id, function name, the state lists in the rule's positional order with their signedness
#  (None: not passed), hyperparameters)
RULES = [
    ("sgd-momentum", "sgd_", ("signed",), dict(lr=0.05, momentum=0.9)),
    ("sgd-nesterov-wd-max", "sgd_", ("signed",),
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
    ("sgd-dampening", "sgd_", ("signed",), dict(lr=0.05, momentum=0.5, dampening=0.5)),
    ("adagrad", "adagrad_", ("unsigned",),
     dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, eps_root=1e-8)),
    ("rmsprop", "rmsprop_", ("unsigned", None, None), dict(lr=0.01)),
    ("rmsprop-centered-momentum-wd", "rmsprop_", ("unsigned", "signed", "signed"),
     dict(lr=0.01, alpha=0.9, centered=True, momentum=0.9, weight_decay=0.01)),
    ("rmsprop-momentum-max", "rmsprop_", ("unsigned", None, "signed"),
     dict(lr=0.01, momentum=0.5, maximize=True, eps_root=1e-6)),
    ("adam", "adam_", ("signed", "unsigned"), dict(lr=0.01)),
    ("adam-l2-eps_root", "adam_", ("signed", "unsigned"),
     dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, eps_root=1e-8)),
    ("adamw-amsgrad-max", "adam_", ("signed", "unsigned", "unsigned"),
     dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True, amsgrad=True,
          maximize=True)),
    ("adamax", "adamax_", ("signed", "unsigned"), dict(lr=0.01)),
    ("adamax-wd-max", "adamax_", ("signed", "unsigned"),
     dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.05, maximize=True)),
]
RULE_IDS = [r[0] for r in RULES]

# (id, param dtype, master weights, stochastic rounding)
PARAMS = [
    ("float32", np.dtype(np.float32), False, False),
    ("float16", np.dtype(np.float16), False, False),
    ("float16-master", np.dtype(np.float16), True, False),
    ("bfloat16", BF16, False, False),
    ("bfloat16-master", BF16, True, False),
    ("bfloat16-sr", BF16, False, True),
    ("bfloat16-master-sr", BF16, True, True),
]
PARAM_IDS = [p[0] for p in PARAMS]
STATE_KINDS = ["float32", "bfloat16", "uint8"]

SIZES = [0, 1, 7, 255, 256, 257, 4097]
BIG = 278011
STEPS = 25


def _rule(rule_id):
    return next(r for r in RULES if r[0] == rule_id)


def _param_kind(pid):
    return next(p for p in PARAMS if p[0] == pid)


def make_state(kind, signed, shape, init=0.0):
    x = np.full(shape, init, np.float32)
    if kind == "float32":
        return x
    if kind == "bfloat16":
        return x.astype(BF16)
    return quant.quantize(x, signed)


class Model:
    """Params, grads source, states and master weights of one run."""

    def __init__(self, rule_id, pid, kind, sizes, seed=0):
        _, self.fn, self.signs, self.hyper = _rule(rule_id)
        _, self.dtype, self.master, self.sr = _param_kind(pid)
        rng = np.random.default_rng(seed)
        p32 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        self.params = [p.astype(self.dtype) for p in p32]
        self.master_params = ([p.astype(np.float32) for p in self.params]
                              if self.master else None)
        init = 0.1 if self.fn == "adagrad_" else 0.0
        self.states = [None if s is None else
                       [make_state(kind, s == "signed", p.shape, init) for p in self.params]
                       for s in self.signs]
        self.sizes = sizes

    def grads(self, t, seed=1):
        rng = np.random.default_rng(seed + 1000 * t)
        scale = 10.0 ** rng.uniform(-3, 1)
        return [(scale * rng.standard_normal(n)).astype(self.dtype) for n in self.sizes]

    def step(self, module, t, **extra):
        kw = dict(self.hyper, step=t, master_params=self.master_params, **extra)
        if self.sr:
            kw.update(stochastic_rounding=True, seed=12345)
        getattr(module, self.fn)(self.params, self.grads(t), *self.states, **kw)

    def arrays(self):
        """(name, array) of everything the run writes."""
        out = [(f"params[{i}]", p) for i, p in enumerate(self.params)]
        if self.master_params is not None:
            out += [(f"master_params[{i}]", p) for i, p in enumerate(self.master_params)]
        for k, lst in enumerate(self.states):
            for i, s in enumerate(lst or []):
                if isinstance(s, quant.QuantizedState):
                    out += [(f"state{k}[{i}].codes", s.codes), (f"state{k}[{i}].absmax", s.absmax)]
                else:
                    out.append((f"state{k}[{i}]", s))
        return out


def _bits_equal(a, b):
    for (name, x), (_, y) in zip(a.arrays(), b.arrays()):
        if x.dtype == np.uint8:
            assert np.array_equal(x, y), f"{name}: {np.count_nonzero(x != y)} codes differ"
        else:
            assert_same_bits(x, y, name)


def _centered_8bit(rule_id, kind):
    return kind == "uint8" and _rule(rule_id)[3].get("centered", False)


def _run_both(rule_id, pid, kind, sizes, steps=STEPS):
    """Both modules' runs, bit-equal (returns ops' run); None for a combination that both
    refuse before anything changes (centered RMSprop with 8-bit state, asserted here)."""
    if _centered_8bit(rule_id, kind):
        m = Model(rule_id, pid, kind, sizes)
        snap = _snapshot(m)
        for module in (ops, reference):
            with pytest.raises(ValueError, match="centered RMSprop with 8-bit state"):
                m.step(module, 1)
        _unchanged(m, snap)
        return None
    a = Model(rule_id, pid, kind, sizes)
    b = copy.deepcopy(a)
    for t in range(1, steps + 1):
        a.step(ops, t)
        b.step(reference, t)
    _bits_equal(a, b)
    return a


@pytest.mark.parametrize("kind", STATE_KINDS)
@pytest.mark.parametrize("pid", PARAM_IDS)
@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_kernels_equal_reference(rule_id, pid, kind):
    _run_both(rule_id, pid, kind, SIZES)


@pytest.mark.parametrize("kind", ["bfloat16", "uint8"])
@pytest.mark.parametrize("pid", ["float32", "bfloat16-sr"])
@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_kernels_equal_reference_large_tail(rule_id, pid, kind):
    a = _run_both(rule_id, pid, kind, [BIG, 3])
    if a is not None:   # (None: refused, as _run_both asserts)
        assert np.isfinite(a.params[0].astype(np.float32)).all()


@pytest.mark.parametrize("kind", ["bfloat16", "uint8"])
@pytest.mark.parametrize("rule_id", ["adam", "rmsprop-centered-momentum-wd", "sgd-momentum"])
def test_same_bits_for_any_thread_count_and_isa(rule_id, kind):
    if _centered_8bit(rule_id, kind):
        pytest.skip("refused (see test_kernels_equal_reference)")
    sizes = [BIG, 4097, 70000]
    runs = []
    for threads, isa in [(1, "generic")] + [(n, i) for n in (2, 3) for i in
                                             _core.available_isas()]:
        m = Model(rule_id, "bfloat16-sr", kind, sizes)
        with threads_and_isa(threads, isa):
            for t in range(1, 4):
                m.step(ops, t)
        runs.append(m)
    for m in runs[1:]:
        _bits_equal(runs[0], m)


def test_state_is_actually_compact_and_changes():
    m = Model("adam", "float32", "uint8", [4097])
    before = [s.codes.copy() for s in m.states[0]]
    m.step(ops, 1)
    assert not np.array_equal(before[0], m.states[0][0].codes)
    q = m.states[0][0]
    assert q.codes.dtype == np.uint8 and q.absmax.shape == (quant.blocks(4097),)
    assert (q.absmax > 0).all()
    # 8-bit Adam: at most 2.05 bytes of state per parameter (codes + absmax, both moments)
    assert (m.states[0][0].nbytes + m.states[1][0].nbytes) / 4097 <= 2.05


# ---- quantize / dequantize ------------------------------------------------------------------

@pytest.mark.parametrize("signed", [True, False])
def test_map_is_increasing_with_zero_and_one(signed):
    m = quant.dynamic_map(signed)
    assert m.dtype == np.float32 and m.shape == (256,)
    assert np.all(np.diff(m) > 0)
    assert 0.0 in m and m[-1] == 1.0
    assert (m.min() < 0) == signed
    t = quant.thresholds(signed)
    assert np.all(t[:-1] >= m[:-1]) and np.all(t[:-1] < m[1:]) and np.isposinf(t[-1])


@pytest.mark.parametrize("signed", [True, False])
def test_map_values_encode_to_their_own_codes(signed):
    m = quant.dynamic_map(signed)
    q = quant.quantize(m, signed)  # one block whose absmax is 1
    assert q.absmax[0] == 1.0
    assert np.array_equal(q.codes, np.arange(256, dtype=np.uint8))
    assert np.array_equal(quant.dequantize(q), m)


@pytest.mark.parametrize("signed", [True, False])
def test_nearest_code_and_ties_to_the_lower(signed):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1 if signed else 0, 1, 5000).astype(np.float32)
    x[::256] = 1.0  # absmax 1 in every block: y == x
    q = quant.quantize(x, signed)
    m = quant.dynamic_map(signed).astype(np.float64)
    dist = np.abs(x.astype(np.float64)[:, None] - m[None, :])
    best = dist.min(axis=1)
    assert np.array_equal(dist[np.arange(x.size), q.codes], best)
    # a y exactly half-way between two entries takes the lower
    mid = (m[:-1] + m[1:]) / 2
    exact = np.flatnonzero(mid.astype(np.float32).astype(np.float64) == mid)
    assert exact.size > 10
    y = np.concatenate([[1.0], mid[exact]]).astype(np.float32)
    qt = quant.quantize(y, signed)
    assert np.array_equal(qt.codes[1:], exact.astype(np.uint8))


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 4097])
@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_error_within_half_a_gap(n, signed):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 2)).astype(np.float32)
    if not signed:
        x = np.abs(x)
    q = quant.quantize(x, signed)
    assert q.shape == x.shape and q.absmax.size == quant.blocks(n)
    d = quant.dequantize(q)
    gap = np.max(np.diff(quant.dynamic_map(signed).astype(np.float64)))
    scale = np.repeat(q.absmax.astype(np.float64), quant.BLOCK)[:n]
    assert np.all(np.abs(d - x) <= (gap / 2 + 1e-6) * scale)
    # requantizing what was dequantized keeps it (positive maxima are exact)
    if not signed:
        assert np.array_equal(quant.quantize(d, signed).codes, q.codes)


def test_zeros_and_bad_quantized_state():
    z = quant.zeros((3, 100), True)
    assert np.array_equal(quant.dequantize(z), np.zeros((3, 100), np.float32))
    assert z.nbytes == 300 + 4 * 2
    with pytest.raises(ValueError, match="absmax"):
        quant.QuantizedState(np.zeros(300, np.uint8), np.zeros(1, np.float32), True)
    with pytest.raises(TypeError, match="codes"):
        quant.QuantizedState(np.zeros(3, np.int8), np.zeros(1, np.float32), True)


# ---- stochastic rounding --------------------------------------------------------------------

def test_stochastic_rounding_is_unbiased_and_keyed():
    x = np.full(200000, 1.0 + 2.0**-9, np.float32)  # a quarter of the way up a bf16 ulp
    r = quant.stochastic_round_bf16(x, quant.sr_key(7, 1, 0)).astype(np.float32)
    up = np.mean(r > 1.0)
    assert 0.24 < up < 0.26
    assert set(np.unique(r)) == {1.0, 1.0 + 2.0**-7}
    r2 = quant.stochastic_round_bf16(x, quant.sr_key(8, 1, 0)).astype(np.float32)
    assert not np.array_equal(r, r2)
    ex = np.array([1.0, -2.5, np.inf, -np.inf, np.nan, 0.0], np.float32)
    out = quant.stochastic_round_bf16(ex, 123).astype(np.float32)
    assert np.array_equal(out[:4], ex[:4]) and np.isnan(out[4]) and out[5] == 0


def test_stochastic_rounding_kernel_matches_reference_on_ties():
    # bfloat16 params without master whose updates are below half an ulp: round to nearest
    # stalls, stochastic rounding moves on average
    p = [np.ones(20000, BF16)]
    g = [np.full(20000, 1e-3, BF16)]
    q = copy.deepcopy(p)
    for t in range(1, 6):
        ops.sgd_(p, g, step=t, lr=0.5, stochastic_rounding=True, seed=5)
        reference.sgd_(q, g, step=t, lr=0.5, stochastic_rounding=True, seed=5)
    assert_same_bits(p[0], q[0], "params")
    assert p[0].astype(np.float32).mean() < 1.0 - 1e-3
    n = [np.ones(20000, BF16)]
    ops.sgd_(n, g, step=1, lr=0.5)
    assert (n[0].astype(np.float32) == 1.0).all()


# ---- bad input ------------------------------------------------------------------------------

def _snapshot(m):
    return [(name, a.copy()) for name, a in m.arrays()]


def _unchanged(m, snap):
    for (name, a), (_, b) in zip(m.arrays(), snap):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), name


BAD = [
    # (id, param kind, state kind, mutation of the model, error, message)
    ("float64-state", "float32", "uint8",
     lambda m: m.states[0].__setitem__(0, np.zeros(m.sizes[0], np.float64)), TypeError,
     "dtype float64"),
    ("bf16-state-float64-params", "float32", "bfloat16",
     lambda m: (setattr(m, "params", [p.astype(np.float64) for p in m.params]),
                setattr(m, "dtype", np.dtype(np.float64))),
     TypeError, "float32 math"),
    ("codes-wrong-length", "float32", "uint8",
     lambda m: m.states[1].__setitem__(1, quant.zeros(m.sizes[1] + 1, False)), ValueError,
     "codes: shape"),
    ("absmax-wrong-length", "float32", "uint8",
     lambda m: setattr(m.states[1][1], "absmax", np.zeros(9, np.float32)), ValueError,
     "absmax has 9 values"),
    ("signedness", "float32", "uint8",
     lambda m: m.states[0].__setitem__(0, quant.zeros(m.sizes[0], False)), ValueError,
     "must be signed"),
    ("read-only-codes", "float32", "uint8",
     lambda m: m.states[0][1].codes.setflags(write=False), ValueError, "read-only"),
    ("stochastic-rounding-float32", "float32", "uint8",
     lambda m: setattr(m, "sr", True), ValueError, "stochastic_rounding"),
    ("stochastic-rounding-float16", "float16", "bfloat16",
     lambda m: setattr(m, "sr", True), ValueError, "stochastic_rounding"),
]


@pytest.mark.parametrize("module", [ops, reference], ids=["ops", "reference"])
@pytest.mark.parametrize("bad", BAD, ids=[b[0] for b in BAD])
def test_bad_input_refused_before_anything_changes(bad, module):
    _, pid, kind, mutate, err, msg = bad
    m = Model("adam", pid, kind, [300, 5000])
    mutate(m)
    snap = _snapshot(m)
    with pytest.raises(err, match=msg):
        m.step(module, 1)
    _unchanged(m, snap)


@pytest.mark.parametrize("module", [ops, reference], ids=["ops", "reference"])
def test_bad_seed(module):
    p, g = [np.ones(3, BF16)], [np.ones(3, BF16)]
    with pytest.raises(ValueError, match="seed"):
        module.sgd_(p, g, step=1, lr=0.1, stochastic_rounding=True, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        module.sgd_(p, g, step=1, lr=0.1, stochastic_rounding=True, seed=1.5)
    with pytest.raises(TypeError, match="stochastic_rounding"):
        module.sgd_(p, g, step=1, lr=0.1, stochastic_rounding=1)
    assert (p[0].astype(np.float32) == 1).all()


@pytest.mark.parametrize("signed", [True, False])
def test_kernel_encoding_equals_reference_at_every_bucket_edge_and_threshold(signed):
    # The kernels encode with quant.encode_table (two look-ups); the reference searches the
    # exact midpoints. SGD's first momentum step stores g itself: its codes are quantize(g).
    e = np.arange(quant.ENCODE_LO - 2, quant.ENCODE_HI + 3, dtype=np.uint32)
    edges = np.concatenate([e << np.uint32(16), (e << np.uint32(16)) | np.uint32(0xFFFF)])
    t = quant.thresholds(signed)[:-1]
    y = np.concatenate([edges.view(np.float32), t, np.nextafter(t, np.float32(2)),
                        np.nextafter(t, np.float32(-2)), quant.dynamic_map(signed),
                        np.random.default_rng(0).uniform(-1, 1, 20000).astype(np.float32)])
    y = y[np.abs(y) <= 1]
    y = np.concatenate([y, -y]) if signed else np.abs(y)
    nb = quant.blocks(y.size)
    x = np.insert(y, np.arange(nb) * (quant.BLOCK - 1), np.float32(1.0))  # absmax 1 per block
    x = x.astype(np.float32)
    buf = quant.zeros(x.shape, signed)
    if not signed:  # momentum buffers are signed: use Adagrad's unsigned sum instead
        buf = quant.zeros(x.shape, False)
        ops.adagrad_([np.zeros_like(x)], [np.sqrt(x)], [buf], step=1, lr=0.0)
        want = quant.quantize(np.sqrt(x) * np.sqrt(x), False)
    else:
        ops.sgd_([np.zeros_like(x)], [x], [buf], step=1, lr=0.0, momentum=0.9)
        want = quant.quantize(x, True)
    assert np.array_equal(buf.absmax, want.absmax)
    assert np.array_equal(buf.codes, want.codes)


def _momentum_codes(x, isa, threads):
    """SGD's first momentum step stores g itself: the kernel's quantization of x (signed)."""
    buf = quant.zeros(x.shape, True)
    with threads_and_isa(threads, isa):
        ops.sgd_([np.zeros_like(x)], [x], [buf], step=1, lr=0.0, momentum=0.9)
    return buf


def _blocks_of(*blocks):
    return np.concatenate([np.resize(np.asarray(b, np.float32), quant.BLOCK) for b in blocks])


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_encoder_multiplies_by_the_reciprocal_of_absmax_per_block(isa):
    # quant's rule: y = x * (1 / absmax), one float32 reciprocal per block (not x / absmax);
    # blocks of subnormal absmax are scaled by 2^64 first; zero, infinite and NaN absmax.
    if isa not in _core.available_isas():
        pytest.skip(f"this CPU cannot run the {isa} copy")
    rng = np.random.default_rng(11)
    normal = [rng.standard_normal(quant.BLOCK) * 10.0 ** k for k in (-30, -3, 0, 5, 30)]
    tiny = [rng.standard_normal(quant.BLOCK) * np.float32(s) for s in (1e-39, 1e-44, 2.0 ** -127)]
    one_tiny = np.zeros(quant.BLOCK, np.float32)
    one_tiny[[3, 77]] = [np.float32(1e-45), np.float32(-1e-45)]  # 2^-149 both
    inf = rng.standard_normal(quant.BLOCK)
    inf[[5, 9]] = [np.inf, -np.inf]
    nan = rng.standard_normal(quant.BLOCK)
    nan[17] = np.nan
    x = _blocks_of(*normal, *tiny, one_tiny, np.zeros(quant.BLOCK), inf, nan,
                   rng.standard_normal(77))
    want = quant.quantize(x, True)
    for threads in (1, 2):
        got = _momentum_codes(x, isa, threads)
        assert_same_bits(got.absmax, want.absmax, "absmax")
        assert np.array_equal(got.codes, want.codes), np.flatnonzero(got.codes != want.codes)[:9]
    # the blocks' largest elements stay exact (code of +-1 or the nearest to it), subnormal
    # blocks included, and the zero block is all zero codes
    m = quant.dynamic_map(True)
    for b in range(9):
        i = b * quant.BLOCK + int(np.argmax(np.abs(x[b * quant.BLOCK:(b + 1) * quant.BLOCK])))
        assert abs(float(m[want.codes[i]])) >= 0.99, (b, m[want.codes[i]])
    assert (want.codes[9 * quant.BLOCK:10 * quant.BLOCK] == 127).all()
    assert m[want.codes[10 * quant.BLOCK + 5]] == 1.0  # inf * (1 / inf): NaN, code 255
    assert (want.codes[11 * quant.BLOCK:12 * quant.BLOCK] == 255).all()  # a NaN block


def test_encoder_rule_is_the_reciprocal_not_the_division():
    # blocks where x * (1 / absmax) and x / absmax (both float32) fall on either side of a
    # threshold: the reference (and so every kernel) takes the reciprocal's code
    rng = np.random.default_rng(5)
    t = quant.thresholds(True)[128:254].astype(np.float32)
    found = []
    for a in (rng.uniform(1, 2, 4000).astype(np.float32)):
        inv = np.float32(1) / a
        x = (t * a).astype(np.float32)
        for d in (-1, 0, 1):
            xx = (x.view(np.int32) + d).view(np.float32)
            by_mul, by_div = xx * inv, xx / a
            hit = (by_mul > t) != (by_div > t)
            found += [(a, v) for v in xx[hit & (xx < a)]]
        if len(found) >= 8:
            break
    assert len(found) >= 8
    x = _blocks_of(*[[a, v] for a, v in found[:8]])
    q = quant.quantize(x, True)
    m = quant.dynamic_map(True).astype(np.float64)
    mid = (m[:-1] + m[1:]) / 2.0
    xb = x.reshape(-1, quant.BLOCK)
    inv = (np.float32(1) / xb[:, 0]).astype(np.float32)
    by_mul = np.searchsorted(mid, (xb * inv[:, None]).astype(np.float64), side="left")
    by_div = np.searchsorted(mid, (xb / xb[:, :1]).astype(np.float64), side="left")
    assert (by_mul != by_div).any()
    assert np.array_equal(q.codes, by_mul.ravel().astype(np.uint8))
    assert np.array_equal(_momentum_codes(x, "auto", 2).codes, q.codes)


def test_bench_state_section_runs_and_counts_bytes():
    from fusedopt.benchmarks import state
    from fusedopt.benchmarks.registry import Context
    from fusedopt.benchmarks.timing import Timer

    assert state.state_bytes("float32", "float32") == (16, 12)
    r, w = state.state_bytes("float32", "uint8")
    assert r + w == pytest.approx(16 + 16 / 256)
    r, w = state.state_bytes("bfloat16", "uint8")
    assert r + w == pytest.approx(10 + 16 / 256)
    ctx = Context(sizes=[20000], timer=Timer(0.01), sizes_given=True)
    (block,) = state.section(ctx)
    rows = [re.split(r"\s{2,}", ln.strip()) for ln in block.splitlines()
            if ln.startswith("20000")]
    assert sorted(r[1] for r in rows if "bitsandbytes" not in r[1]) == sorted(
        c[0] for c in state.CONFIGS)
    assert all(float(r[3]) > 0 and r[-1].endswith("x") for r in rows)
    try:
        import bitsandbytes  # noqa: F401
        has_bnb = True
    except Exception:
        has_bnb = False
    assert ("bitsandbytes Adam8bit" in block) == has_bnb


def test_quant_docstring_examples_run():
    import doctest

    result = doctest.testmod(quant, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("module", [ops, reference], ids=["ops", "reference"])
def test_kinds_mix_per_tensor_and_amp(module):
    # one list holding float32, bfloat16 and 8-bit state side by side, with AMP's pair
    sizes = [300, 5000, 70000]
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    m = [np.zeros(300, np.float32), np.zeros(5000, BF16), quant.zeros(70000, True)]
    v = [quant.zeros(300, False), np.zeros(5000, np.float32), np.zeros(70000, BF16)]
    ref_p, ref_m, ref_v = copy.deepcopy((params, m, v))
    scale = np.array([4.0], np.float32)
    for t in range(1, 6):
        grads = [rng.standard_normal(n).astype(np.float32) * 4 for n in sizes]
        skip = np.array([1.0 if t == 3 else 0.0], np.float32)
        module.adam_(params, grads, m, v, step=t, lr=0.01, grad_scale=scale, found_inf=skip)
        reference.adam_(ref_p, grads, ref_m, ref_v, step=t, lr=0.01, grad_scale=scale,
                        found_inf=skip)
    for i in range(3):
        assert_same_bits(params[i], ref_p[i], f"params[{i}]")
    assert np.array_equal(m[2].codes, ref_m[2].codes)
    assert np.array_equal(v[0].absmax, ref_v[0].absmax)
    assert_same_bits(m[1], ref_m[1], "m[1]")
    assert_same_bits(v[2], ref_v[2], "v[2]")
    # a skipped step changes nothing
    before = copy.deepcopy((params, m, v))
    module.adam_(params, grads, m, v, step=6, lr=0.01, grad_scale=scale,
                 found_inf=np.ones(1, np.float32))
    for a, b in zip(params + [m[0], m[1], v[1], v[2]],
                    before[0] + [before[1][0], before[1][1], before[2][1], before[2][2]]):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
    assert np.array_equal(m[2].codes, before[1][2].codes)


@pytest.mark.parametrize("kind", STATE_KINDS)
def test_ops_picks_the_kernel_from_the_state_dtypes(monkeypatch, kind):
    # ops decides plain vs compact from the states' dtypes before calling either kernel: a step
    # with compact state never enters the plain kernel, a plain step never the compact one.
    calls = []
    for name in ("adam", "compact_step"):
        real = getattr(_core, name)

        def spy(*args, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(_core, name, spy)
    m = Model("adam", "float32", kind, [4097, 7])
    m.step(ops, 1)
    assert calls == ["adam" if kind == "float32" else "compact_step"]
    # a mix of plain and compact tensors in one list is a compact step
    mixed = Model("adam", "float32", "float32", [300, 5])
    mixed.states[0][1] = make_state("bfloat16" if kind == "float32" else kind, True, (5,))
    calls.clear()
    mixed.step(ops, 1)
    assert calls == ["compact_step"]


_VBMI_RUN = """
import sys
import numpy as np
from fusedopt import ops, quant
rng = np.random.default_rng(5)
sizes = [278011, 4097, 70, 1]
params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
m = [quant.quantize(np.zeros(n, np.float32), True) for n in sizes]
v = [quant.quantize(np.zeros(n, np.float32), False) for n in sizes]
w = [quant.quantize(np.zeros(n, np.float32), False) for n in sizes]
for t in range(1, 6):
    grads = [(10.0 ** rng.uniform(-3, 1) * rng.standard_normal(n)).astype(np.float32)
             for n in sizes]
    ops.adam_(params, grads, m, v, w, step=t, lr=0.01, amsgrad=True)
out = {}
for i in range(len(sizes)):
    out[f"p{i}"] = params[i]
    for name, s in (("m", m), ("v", v), ("w", w)):
        out[f"{name}{i}c"], out[f"{name}{i}a"] = s[i].codes, s[i].absmax
np.savez(sys.argv[1], **out)
"""


def test_avx512_decode_with_and_without_vbmi_same_bits(tmp_path):
    # The AVX-512 copy decodes 8-bit state with VBMI byte permutes where the CPU has them, else
    # with float permutes; FUSEDOPT_NO_VBMI turns the first off. Both (and every other copy, see
    # above) give the same bits.
    import os
    import subprocess
    import sys

    if "avx512" not in _core.available_isas():
        pytest.skip("no AVX-512 copy on this CPU")
    runs = []
    for env_extra in ({}, {"FUSEDOPT_NO_VBMI": "1"}):
        env = dict(os.environ, **env_extra)
        f = tmp_path / f"run{len(runs)}.npz"
        subprocess.run([sys.executable, "-c", _VBMI_RUN, str(f)], env=env, check=True)
        runs.append(np.load(f))
    assert sorted(runs[0].files) == sorted(runs[1].files)
    for k in runs[0].files:
        assert runs[0][k].tobytes() == runs[1][k].tobytes(), k
    # and without VBMI: the encoding edges and every rule with 8-bit state against the reference
    env = dict(os.environ, FUSEDOPT_NO_VBMI="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "at_every_bucket_edge or (equal_reference and not large and uint8 "
                        "and float32)"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout


# The block encoders of every copy against the definition (fusedopt/compact.h fo_quant_encode)
# for normalized values y = x / absmax (|y| <= 1 + 2**-23): the AVX-512 VBMI copy finds each
# value's candidate code by arithmetic on the map's lines (one threshold comparison then fixes
# it), so its floor must be exact next to every threshold and decade boundary. Every float near
# those (4096 either side), and one float in 61 of the whole range; tools/exhaustive_encode.py
# checks all 2.1e9 of them (about 10 s a copy).
_TOP = int(np.float32(1 + 2**-23).view(np.uint32))


def _encoder_windows(signed):
    edges = list(quant.thresholds(signed)[:-1]) + [np.float32(10.0**-k) for k in range(1, 8)]
    edges += [np.float32(1.0), np.float32(0.0)]
    out = []
    for e in edges:
        b = int(np.abs(np.float32(e)).view(np.uint32))
        for sign in (0, 0x80000000):
            out.append((sign + max(0, b - 4096), sign + min(_TOP, b + 4096)))
    return out


@pytest.mark.parametrize("isa", _core.available_isas())
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_block_encoder_equals_the_definition(isa, signed):
    with threads_and_isa(1, isa):
        for first, last in _encoder_windows(signed):
            assert _core.quant_encode_mismatches(signed, first, last) == 0, (hex(first), isa)
        for sign in (0, 0x80000000):
            assert _core.quant_encode_mismatches(signed, sign, sign + _TOP, 61) == 0, isa


def test_block_encoder_check_refuses_a_zero_stride():
    with pytest.raises(ValueError, match="stride"):
        _core.quant_encode_mismatches(True, 0, 10, 0)
