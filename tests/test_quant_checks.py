"""The checks of a compact-state step (issue 10): ``fusedopt.ops`` calls ``_core.compact_step``
first and runs ``_checks.check_lists`` only when the compiled checks refuse (to name the fault in
the library's words), so the compiled checks must refuse everything ``check_lists`` refuses.

One table of bad inputs, each one that ``check_lists`` refuses: the compiled call alone refuses it
(TypeError or ValueError) before anything changes, and ``ops`` raises ``check_lists``' own
message, again with nothing changed. The good input of the same table passes all three.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from fusedopt import _checks, _core, _scalars, ops, quant

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
SIZES = [300, 5000]
STEP = 3


def _case(pdtype=np.float32, kind_m="bfloat16", kind_v="uint8", master=False):
    """The lists of an Adam step: params (of `pdtype`), grads, exp_avgs (signed), exp_avg_sqs
    (unsigned) of the given kinds, master weights for 16-bit params when `master`."""
    rng = np.random.default_rng(0)
    p32 = [rng.standard_normal(n).astype(np.float32) for n in SIZES]

    def state(kind, signed, n):
        x = np.full(n, 0.01, np.float32)
        return x.astype(BF16) if kind == "bfloat16" else quant.quantize(x, signed)

    return {
        "params": [p.astype(pdtype) for p in p32],
        "grads": [(0.1 * rng.standard_normal(n)).astype(pdtype) for n in SIZES],
        "exp_avgs": [state(kind_m, True, n) for n in SIZES],
        "exp_avg_sqs": [state(kind_v, False, n) for n in SIZES],
        "master_params": [p.copy() for p in p32] if master else None,
    }


def _arrays(c):
    out = []
    for name in ("params", "grads", "exp_avgs", "exp_avg_sqs", "master_params"):
        for i, a in enumerate(c[name] or []):
            if isinstance(a, (quant.QuantizedState, types.SimpleNamespace)):
                out += [(f"{name}[{i}].codes", a.codes), (f"{name}[{i}].absmax", a.absmax)]
            else:
                out.append((f"{name}[{i}]", a))
    return out


def _snapshot(c):
    return [(n, a.view(np.uint8).copy()) for n, a in _arrays(c)]


def _unchanged(c, snap):
    for (name, a), (_, b) in zip(_arrays(c), snap):
        assert np.array_equal(a.view(np.uint8), b), name


def _quantized(codes, absmax, signed):
    q = quant.QuantizedState(codes, np.zeros(absmax.size, np.float32), signed)
    q.absmax = absmax  # past the constructor's own checks
    return q


def _set(name, i, make):
    def mutate(c):
        c[name][i] = make(c)
    return mutate


BAD = [
    # (id, case options, mutation, error, check_lists' message)
    ("bf16-state-other-shape", {}, _set("exp_avgs", 0, lambda c: np.zeros((3, 100), BF16)),
     ValueError, r"exp_avgs\[0\]: shape"),
    ("codes-other-shape", {},
     _set("exp_avg_sqs", 1, lambda c: quant.zeros((50, 100), False)), ValueError,
     r"exp_avg_sqs\[1\].codes: shape"),
    ("absmax-two-dimensional", {},
     _set("exp_avg_sqs", 1, lambda c: _quantized(np.zeros(5000, np.uint8),
                                                 np.zeros((4, 5), np.float32), False)),
     TypeError, "one-dimensional float32"),
    ("absmax-float64", {},
     _set("exp_avg_sqs", 0, lambda c: _quantized(np.zeros(300, np.uint8),
                                                 np.zeros(2, np.float64), False)),
     TypeError, "one-dimensional float32"),
    ("signedness", {}, _set("exp_avg_sqs", 0, lambda c: quant.zeros(300, True)), ValueError,
     "must be unsigned"),
    ("signedness-first-moment", {"kind_m": "uint8"},
     _set("exp_avgs", 1, lambda c: quant.zeros(5000, False)), ValueError, "must be signed"),
    ("not-a-quantized-state", {},
     _set("exp_avg_sqs", 1, lambda c: types.SimpleNamespace(
         codes=np.zeros(5000, np.uint8), absmax=np.zeros(20, np.float32), signed=False)),
     TypeError, r"exp_avg_sqs\[1\] must be a numpy.ndarray"),
    ("state-aliases-state", {"kind_v": "bfloat16"},
     _set("exp_avg_sqs", 0, lambda c: c["exp_avgs"][0]), ValueError, "shares memory"),
    ("codes-alias-codes", {"kind_m": "uint8"},
     _set("exp_avgs", 1, lambda c: _quantized(c["exp_avg_sqs"][1].codes,
                                              np.zeros(20, np.float32), True)),
     ValueError, "shares memory"),
    ("absmax-aliases-param", {},
     _set("exp_avg_sqs", 0, lambda c: _quantized(np.zeros(300, np.uint8),
                                                 c["params"][1][:2], False)),
     ValueError, "shares memory"),
    ("grad-aliases-param", {}, _set("grads", 0, lambda c: c["params"][0]), ValueError,
     "shares memory"),
    ("bf16-state-views-param", {"pdtype": BF16, "kind_v": "bfloat16"},
     _set("exp_avg_sqs", 1, lambda c: c["params"][1]), ValueError, "shares memory"),
    ("master-other-shape", {"pdtype": BF16, "master": True},
     _set("master_params", 0, lambda c: np.zeros((3, 100), np.float32)), ValueError,
     r"master_params\[0\]: shape"),
    ("master-aliases-state", {"pdtype": BF16, "master": True, "kind_m": "uint8",
                              "kind_v": "uint8"},
     _set("exp_avg_sqs", 0, lambda c: _quantized(np.zeros(300, np.uint8),
                                                 c["master_params"][0][:2], False)),
     ValueError, "shares memory"),
    ("read-only-bf16-state", {},
     lambda c: c["exp_avgs"][1].setflags(write=False), ValueError, "read-only"),
    ("read-only-absmax", {},
     lambda c: c["exp_avg_sqs"][0].absmax.setflags(write=False), ValueError, "read-only"),
    ("grad-other-dtype", {}, _set("grads", 1, lambda c: np.zeros(5000, np.float64)), TypeError,
     "dtype"),
]


def _lists(c):
    lists = [("params", c["params"], True, None), ("grads", c["grads"], False, None),
             ("exp_avgs", c["exp_avgs"], True, _checks.SIGNED),
             ("exp_avg_sqs", c["exp_avg_sqs"], True, _checks.UNSIGNED)]
    if c["master_params"] is not None:
        lists.append(("master_params", c["master_params"], True, _checks.MASTER))
    return lists


def _core_step(c):
    s = _scalars.adam(step=STEP, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, eps_root=0.0,
                      weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
                      maximize=False)
    slots = [("exp_avgs", c["exp_avgs"], True), ("exp_avg_sqs", c["exp_avg_sqs"], False), None]
    _core.compact_step(s, c["params"], c["grads"], slots, master_params=c["master_params"],
                       step=STEP, seed=0, stochastic_rounding=False)


def _ops_step(c):
    ops.adam_(c["params"], c["grads"], c["exp_avgs"], c["exp_avg_sqs"], step=STEP, lr=1e-2,
              master_params=c["master_params"])


@pytest.mark.parametrize("bad", BAD, ids=[b[0] for b in BAD])
def test_compiled_checks_refuse_what_check_lists_refuses(bad):
    _, opts, mutate, err, msg = bad
    c = _case(**opts)
    mutate(c)
    with pytest.raises(err, match=msg):  # the table holds check_lists' refusals
        _checks.check_lists(_lists(c), dtypes=_checks.PARAM_DTYPES)
    snap = _snapshot(c)
    with pytest.raises((TypeError, ValueError)):
        _core_step(c)
    _unchanged(c, snap)
    with pytest.raises(err, match=msg):  # ops names the fault as check_lists does
        _ops_step(c)
    _unchanged(c, snap)


@pytest.mark.parametrize("opts", [{}, {"kind_m": "uint8"}, {"kind_v": "bfloat16"},
                                  {"pdtype": BF16, "master": True},
                                  {"pdtype": np.float16, "kind_m": "uint8"}],
                         ids=["bf16-u8", "u8-u8", "bf16-bf16", "bf16-params-master",
                              "f16-params"])
def test_good_lists_pass_every_check_and_step(opts):
    c = _case(**opts)
    _checks.check_lists(_lists(c), dtypes=_checks.PARAM_DTYPES)
    before = [p.copy() for p in (c["master_params"] or c["params"])]
    _core_step(c)
    after = c["master_params"] or c["params"]
    assert all(not np.array_equal(a, b) for a, b in zip(after, before))
    _ops_step(c)


def test_a_direct_call_with_the_wrong_signedness_is_refused():
    # the slot names the signedness: a direct call cannot run a second moment on the signed map
    c = _case(kind_m="uint8")
    c["exp_avgs"], c["exp_avg_sqs"] = c["exp_avg_sqs"], c["exp_avgs"]
    snap = _snapshot(c)
    with pytest.raises(ValueError, match="signedness"):
        _core_step(c)
    _unchanged(c, snap)
