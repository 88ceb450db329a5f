"""The one registry of optimizer configurations that every test iterates over.

Each case names an optimizer class and options; together the cases turn every option of every
rule on and off at least once (each boolean both ways, momentum and eps_root on and off, weight
decay in L2 and decoupled form, maximize).
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from fusedopt import optim


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    cls: type
    options: dict

    def make(self, params, **kw):
        return self.cls(params, **self.options, **kw)


CASES = [
    # SGD
    Case("sgd", optim.SGD, dict(lr=0.05)),
    Case("sgd-wd-max", optim.SGD, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    Case("sgd-momentum", optim.SGD, dict(lr=0.05, momentum=0.9)),
    Case("sgd-ema-dampening", optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.9)),
    Case("sgd-nesterov-wd", optim.SGD,
         dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    Case("sgd-momentum-max", optim.SGD, dict(lr=0.05, momentum=0.5, maximize=True)),
    # Adagrad
    Case("adagrad", optim.Adagrad, dict(lr=0.1)),
    Case("adagrad-all", optim.Adagrad,
         dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1,
              eps_root=1e-8, maximize=True)),
    # RMSprop
    Case("rmsprop", optim.RMSprop, dict(lr=0.01)),
    Case("rmsprop-centered-momentum", optim.RMSprop,
         dict(lr=0.01, alpha=0.9, centered=True, momentum=0.9)),
    Case("rmsprop-centered-eps_root", optim.RMSprop,
         dict(lr=0.01, centered=True, eps_root=1e-6, weight_decay=0.01)),
    Case("rmsprop-momentum-wd-max", optim.RMSprop,
         dict(lr=0.01, momentum=0.5, weight_decay=0.01, maximize=True)),
    # Adam / AdamW / AMSGrad
    Case("adam", optim.Adam, dict(lr=0.01)),
    Case("adam-wd-amsgrad", optim.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    Case("adam-eps_root-max", optim.Adam,
         dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, eps_root=1e-8, maximize=True)),
    Case("adamw", optim.AdamW, dict(lr=0.01)),
    Case("adamw-amsgrad-max", optim.AdamW,
         dict(lr=0.01, weight_decay=0.05, amsgrad=True, maximize=True)),
    # Adamax
    Case("adamax", optim.Adamax, dict(lr=0.01)),
    Case("adamax-wd-max", optim.Adamax,
         dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.05, maximize=True)),
]

CASE_IDS = [c.id for c in CASES]
DTYPES = [np.float32, np.float64]


def dtypes16() -> dict:
    """{name: dtype} of the 16-bit params (float32 states and math): float16, and bfloat16 where
    ml_dtypes is installed."""
    out = {"float16": np.dtype(np.float16)}
    try:
        import ml_dtypes  # noqa: PLC0415 -- optional

        out["bfloat16"] = np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return out


SIZES = [0, 1, 7, 4097, 278011]
# A model of many tensors: mixed sizes and shapes, an empty one included.
MULTI_SHAPES = [(3, 5), (0,), (1,), (7,), (4097,), (64, 33), (2, 3, 4), (1000,), (17,)]


def make_params(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grad_stream(shapes, dtypes, seed=1):
    """An endless sequence of gradient lists (the same for every consumer with the same seed).
    Mixes scales so that divisions, square roots and maxima see a wide range of values."""
    rng = np.random.default_rng(seed)
    if not isinstance(dtypes, (list, tuple)):
        dtypes = [dtypes] * len(shapes)
    while True:
        scale = 10.0 ** rng.uniform(-3, 1)
        yield [(scale * rng.standard_normal(s)).astype(d) for s, d in zip(shapes, dtypes)]


def bits(a):
    """The array's bytes as unsigned integers, for exact comparison (NaN-safe, -0 != +0)."""
    a = np.ascontiguousarray(a)
    return a.view({4: np.uint32, 8: np.uint64, 2: np.uint16, 1: np.uint8}[a.dtype.itemsize])


def assert_same_bits(a, b, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if not np.array_equal(bits(a), bits(b)):
        diff = np.flatnonzero(bits(a).ravel() != bits(b).ravel())
        i = diff[0]
        raise AssertionError(
            f"{what}: {diff.size} of {a.size} elements differ; first at {i}: "
            f"{a.ravel()[i]!r} vs {b.ravel()[i]!r}")


def assert_same_stored(a, b, what=""):
    """assert_same_bits for one state: an array, or an 8-bit ``quant.QuantizedState`` (the same
    map, codes and absmax)."""
    if hasattr(a, "codes") or hasattr(b, "codes"):
        assert hasattr(a, "codes") and hasattr(b, "codes") and a.signed == b.signed, what
        assert_same_bits(a.codes, b.codes, f"{what} codes")
        assert_same_bits(a.absmax, b.absmax, f"{what} absmax")
    else:
        assert_same_bits(a, b, what)


def assert_same_state(opt_a, opt_b):
    assert opt_a.state.keys() == opt_b.state.keys()
    for i, (p, q) in enumerate(zip(opt_a.params, opt_b.params)):
        assert_same_bits(p, q, f"params[{i}]")
    for name in opt_a.state:
        for i, (x, y) in enumerate(zip(opt_a.state[name], opt_b.state[name])):
            assert_same_stored(x, y, f"state[{name!r}][{i}]")


@contextlib.contextmanager
def threads_and_isa(n, isa="auto"):
    """Run the CPU kernels with ``n`` threads and the kernel copy ``isa`` inside the block."""
    from fusedopt import _core  # noqa: PLC0415

    old_n, old_isa = _core.get_num_threads(), _core.isa()
    _core.set_num_threads(n)
    _core.set_isa(isa)
    try:
        yield
    finally:
        _core.set_num_threads(old_n)
        _core.set_isa(old_isa)


def refused_centered_8bit(case, state_dtype, make):
    """Centered RMSprop refuses 8-bit state (``fusedopt._checks.centered_states``: the variance
    of two independently quantized averages goes negative): for such a case, asserts that
    ``make()`` raises naming it, then skips the rest of the calling test."""
    if state_dtype == "uint8" and case.options.get("centered"):
        import pytest

        with pytest.raises(ValueError, match="centered RMSprop with 8-bit state"):
            make()
        pytest.skip("refused, as asserted: centered RMSprop with 8-bit state")
