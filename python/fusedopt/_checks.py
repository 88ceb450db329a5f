"""Checks of hyperparameters and array lists, shared by every backend.

Layer: support (pure Python: used by ``ops``, ``reference``, ``optim``, ``schedules`` and the rest; imports
only ``fusedopt.quant``, the state format, of the same layer).

Every public function checks all of its arguments with these helpers *before* it modifies
anything, so a call either happens whole or raises. Messages name the argument.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import quant

__all__ = [
    "real",
    "nonneg",
    "unit",
    "flag",
    "integer",
    "function",
    "step_count",
    "check_lists",
    "check_rule_lists",
    "MATH",
    "MASTER",
    "SIGNED",
    "UNSIGNED",
    "state_kind",
    "SIGNEDNESS",
    "rounding",
    "PARAM_DTYPES",
    "is_16bit",
]


def _unwrap(x):
    """A 0-d NumPy array as its scalar (what ``np.load`` gives back for a saved scalar)."""
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def real(name: str, x) -> float:
    """`x` as a finite Python float, else TypeError/ValueError naming `name`. A 0-d NumPy
    array is taken as its scalar."""
    if type(x) is float:  # the common case, without the abstract-class checks below (~1 us)
        v = x
    else:
        x = _unwrap(x)
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
        try:
            v = float(x)
        except OverflowError:  # an int beyond float range
            bits = x.bit_length() if isinstance(x, int) else "?"
            raise ValueError(f"{name} must be finite, got an int of {bits} bits, beyond "
                             "float range") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return v


def nonneg(name: str, x) -> float:
    """`x` as a finite Python float >= 0."""
    v = real(name, x)
    if v < 0.0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return v


def unit(name: str, x, *, closed: bool = False) -> float:
    """A value in [0, 1) (or [0, 1] when `closed`), as betas and alpha are."""
    v = real(name, x)
    if v < 0.0 or (v > 1.0 if closed else v >= 1.0):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {v!r}")
    return v


def flag(name: str, x) -> bool:
    """`x` as a Python bool (a Python or NumPy bool, or a 0-d bool array; not 0/1)."""
    if x is True or x is False:
        return x
    x = _unwrap(x)
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return bool(x)


def integer(name: str, x, minimum: int | None = None) -> int:
    """`x` as a Python int (not a bool; a 0-d integer array is taken as its scalar) that is
    >= `minimum` when given."""
    x = _unwrap(x)
    if type(x) is not int and (isinstance(x, (bool, np.bool_)) or
                               not isinstance(x, numbers.Integral)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)


def function(name: str, f, *, optional: bool = False):
    """`f` if it is callable (or None when `optional`), else TypeError naming `name`."""
    if not (callable(f) or (optional and f is None)):
        raise TypeError(
            f"{name} must be callable{' or None' if optional else ''}, got {type(f).__name__}")
    return f


STEP_MAX = 2**63 - 1


def step_count(x) -> int:
    """The 1-based number of the step being taken, at most ``STEP_MAX`` (an int64)."""
    step = integer("step", x, minimum=1)
    if step > STEP_MAX:
        raise ValueError(f"step must be <= 2**63 - 1, got an int of {step.bit_length()} bits")
    return step


def _address(a) -> int:
    iface = getattr(a, "__array_interface__", None)
    if iface is not None:
        return iface["data"][0]
    return a.data.ptr  # cupy


#: The dtype of a list that holds a rule's state: the param's math type (float32 for float16 and
#: bfloat16 params, else the param's dtype).
MATH = "math"
#: The dtype of master weights: float32, and only for float16/bfloat16 params.
MASTER = "master"
#: The dtype of a state list that may also hold 16-bit or 8-bit state (issue 10): per tensor an
#: array of the param's math type, or, where that math type is float32 (float32, float16 and
#: bfloat16 params), a bfloat16 array or a ``quant.QuantizedState`` with this signedness
#: (SIGNED: first moments and momentum; UNSIGNED: second moments, sums, maxima).
SIGNED = "signed"
UNSIGNED = "unsigned"
#: The dtypes of params the update rules take (bfloat16 is ml_dtypes'; named, not imported).
PARAM_DTYPES = ("float32", "float64", "float16", "bfloat16")


def is_16bit(dtype) -> bool:
    """Whether `dtype` is float16 or (ml_dtypes') bfloat16."""
    return np.dtype(dtype).name in ("float16", "bfloat16")


def state_kind(a) -> str:
    """How a state tensor is held: "plain" (an array of the math type), "bfloat16" (an
    ml_dtypes bfloat16 array) or "uint8" (a ``quant.QuantizedState``)."""
    if isinstance(a, quant.QuantizedState):
        return "uint8"
    dt = getattr(a, "dtype", None)
    return "bfloat16" if dt is not None and np.dtype(dt).name == "bfloat16" else "plain"


#: The signedness of each rule's state list (by its argument name): first moments and momentum
#: signed, second moments, sums and maxima unsigned.
SIGNEDNESS = {"momentum_buffers": SIGNED, "exp_avgs": SIGNED, "grad_avgs": SIGNED,
              "state_sums": UNSIGNED, "square_avgs": UNSIGNED, "exp_avg_sqs": UNSIGNED,
              "max_exp_avg_sqs": UNSIGNED, "exp_infs": UNSIGNED}


CENTERED_8BIT = ("centered RMSprop with 8-bit state: square_avg - grad_avg**2 of two "
                 "independently quantized averages can be negative (sqrt -> NaN); use "
                 "state_dtype 'bfloat16' or 'float32' for centered RMSprop")


def centered_states(centered, square_avgs, grad_avgs) -> None:
    """Centered RMSprop refuses 8-bit states (ValueError naming ``centered``): the variance
    estimate of two independently quantized averages goes negative (bitsandbytes' 8-bit
    RMSprop has no centered form either)."""
    if centered and any(isinstance(a, quant.QuantizedState)
                        for lst in (square_avgs, grad_avgs) if isinstance(lst, (list, tuple))
                        for a in lst):
        raise ValueError(CENTERED_8BIT)


def rounding(params, stochastic_rounding, seed) -> bool:
    """The stochastic rounding keywords of the rules: a bool, and an int seed in [0, 2**64);
    True only with bfloat16 params (every one of them; ValueError naming
    ``stochastic_rounding`` otherwise). Returns the flag."""
    sr = flag("stochastic_rounding", stochastic_rounding)
    seed = integer("seed", seed, minimum=0)
    if seed >= 2**64:
        raise ValueError(f"seed must be < 2**64, got an int of {seed.bit_length()} bits")
    if sr and isinstance(params, (list, tuple)):
        for i, p in enumerate(params):
            dt = getattr(p, "dtype", None)
            if dt is None or np.dtype(dt).name != "bfloat16":
                raise ValueError(f"stochastic_rounding=True needs bfloat16 params; params[{i}] "
                                 f"has dtype {dt}")
    return sr


def _math32(p) -> bool:
    return p.dtype == np.float32 or is_16bit(p.dtype)


def _check_quantized(name, i, q, p, pname, want, written, spans, array_type=np.ndarray):
    """The checks of one QuantizedState item (codes, absmax, signedness); adds its spans."""
    if not _math32(p):
        raise TypeError(f"{name}[{i}] is 8-bit state, which needs float32 math; {pname}[{i}] "
                        f"has dtype {p.dtype} (8-bit and bfloat16 state take float32, float16 "
                        "or bfloat16 params)")
    if q.signed != (want == SIGNED):
        raise ValueError(f"{name}[{i}] is {'signed' if q.signed else 'unsigned'} 8-bit state; "
                         f"{name} must be {want}")
    for part, a in (("codes", q.codes), ("absmax", q.absmax)):
        if not isinstance(a, array_type):
            raise TypeError(f"{name}[{i}].{part} must be a {array_type.__module__}."
                            f"{array_type.__name__}, got {type(a).__module__}.{type(a).__name__}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name}[{i}].{part} must be C-contiguous")
        if written and not getattr(a.flags, "writeable", True):
            raise ValueError(f"{name}[{i}].{part} is read-only; it is updated in place")
        if not getattr(a.flags, "aligned", True):
            raise ValueError(f"{name}[{i}].{part} must be aligned to its dtype")
    if q.codes.dtype != np.uint8:
        raise TypeError(f"{name}[{i}].codes has dtype {q.codes.dtype}; expected uint8")
    if q.absmax.dtype != np.float32 or q.absmax.ndim != 1:
        raise TypeError(f"{name}[{i}].absmax must be one-dimensional float32, got "
                        f"{q.absmax.dtype} of {q.absmax.ndim} dimensions")
    if q.codes.shape != p.shape:
        raise ValueError(f"{name}[{i}].codes: shape {q.codes.shape} does not match "
                         f"{pname}[{i}] {p.shape}")
    if q.absmax.size != quant.blocks(p.size):
        raise ValueError(f"{name}[{i}].absmax has {q.absmax.size} values; {pname}[{i}] of "
                         f"{p.size} elements needs {quant.blocks(p.size)} (one per "
                         f"{quant.BLOCK})")
    for a in (q.codes, q.absmax):
        if a.size:
            lo = _address(a)
            spans.append((lo, lo + a.nbytes, written, name, i))


def _want(want, p):
    """The dtype a list item must have, for a `want` of check_lists and its param `p`."""
    if want is None:
        return p.dtype
    if want in (MATH, MASTER, SIGNED, UNSIGNED):
        return np.dtype(np.float32) if is_16bit(p.dtype) else p.dtype
    return np.dtype(want)


def check_lists(lists, *, array_type=np.ndarray, dtypes=(np.float32, np.float64)):
    """Check a multi-tensor call's lists, Python-side (the compiled path does the same in C++).

    `lists` is a sequence of (name, list, written) or (name, list, written, dtype); the first is
    the params, whose dtypes must be among `dtypes` (dtypes or their names, such as
    ``PARAM_DTYPES``). Every other list must have each param's dtype, or `dtype` where one is
    given: a dtype (float32 state for float16 params, say), ``MATH`` (a state: float32 for 16-bit
    params, else the param's dtype) or ``MASTER`` (float32 master weights, only for 16-bit
    params). Raises TypeError/ValueError naming the first offending argument; modifies nothing.
    """
    lists = [tuple(entry) + (None,) * (4 - len(entry)) for entry in lists]
    allowed = tuple(d if isinstance(d, str) else np.dtype(d).name for d in dtypes)
    pname, params = lists[0][:2]
    for name, seq, _, _ in lists:
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple of arrays, got {type(seq).__name__}")
        if len(seq) != len(params):
            raise ValueError(f"{name} has {len(seq)} arrays but {pname} has {len(params)}")
    spans = []
    for i, p in enumerate(params):
        for k, (name, seq, written, want) in enumerate(lists):
            a = seq[i]
            if k and want in (SIGNED, UNSIGNED) and isinstance(a, quant.QuantizedState):
                _check_quantized(name, i, a, p, pname, want, written, spans, array_type)
                continue
            if not isinstance(a, array_type):
                raise TypeError(
                    f"{name}[{i}] must be a {array_type.__module__}.{array_type.__name__}, "
                    f"got {type(a).__module__}.{type(a).__name__}"
                )
            if k == 0:
                if a.dtype.name not in allowed or not a.dtype.isnative:
                    raise TypeError(
                        f"{name}[{i}] has dtype {a.dtype}; expected "
                        f"{' or '.join(allowed)} (native byte order)"
                    )
            else:
                if want == MASTER and not is_16bit(p.dtype):
                    raise TypeError(f"{name}: float32 master weights belong to float16 or "
                                    f"bfloat16 params; {pname}[{i}] has dtype {p.dtype}")
                bf16_state = want in (SIGNED, UNSIGNED) and a.dtype.name == "bfloat16"
                if bf16_state and not _math32(p):
                    raise TypeError(f"{name}[{i}] is bfloat16 state, which needs float32 math; "
                                    f"{pname}[{i}] has dtype {p.dtype}")
                if want is not None and not bf16_state and a.dtype != _want(want, p):
                    raise TypeError(f"{name}[{i}] has dtype {a.dtype}; expected "
                                    f"{_want(want, p)}" + (f", the math type of {p.dtype} "
                                                           f"{pname}[{i}]" if want in (MATH, MASTER)
                                                           and is_16bit(p.dtype) else ""))
                if want is None and a.dtype != p.dtype:
                    raise TypeError(
                        f"{name}[{i}] has dtype {a.dtype} but {pname}[{i}] has dtype {p.dtype}"
                    )
                if a.shape != p.shape:
                    raise ValueError(
                        f"{name}[{i}]: shape {a.shape} does not match {pname}[{i}] {p.shape}"
                    )
            if not a.flags.c_contiguous:
                raise ValueError(f"{name}[{i}] must be C-contiguous")
            if written and not getattr(a.flags, "writeable", True):
                raise ValueError(f"{name}[{i}] is read-only; it is updated in place")
            if isinstance(a, np.ndarray) and not a.flags.aligned:
                raise ValueError(f"{name}[{i}] must be aligned to its dtype")
            if a.size:
                lo = _address(a)
                spans.append((lo, lo + a.nbytes, written, name, i))
    spans.sort(key=lambda s: s[0])
    for s in range(len(spans)):
        lo, hi, w, name, i = spans[s]
        t = s + 1
        while t < len(spans) and spans[t][0] < hi:
            if w or spans[t][2]:
                a, b = (spans[s], spans[t]) if w else (spans[t], spans[s])
                raise ValueError(
                    f"{a[3]}[{a[4]}] shares memory with {b[3]}[{b[4]}]; arrays that are "
                    "updated in place must not alias"
                )
            t += 1


def check_rule_lists(lists, master_params):
    """check_lists for one rule's step: `lists` its (name, list, written) items, params and grads
    first, then the states by their slot names (their kind from SIGNEDNESS: of the param's math
    type, or compact -- bfloat16, 8-bit); 16-bit params allowed; the optional master weights
    last. The reference's checks, and the names of a compact step's fault in fusedopt.ops."""
    lists = [(n, a, w, None if n in ("params", "grads") else SIGNEDNESS[n])
             for n, a, w in lists]
    if master_params is not None:
        lists.append(("master_params", master_params, True, MASTER))
    check_lists(lists, dtypes=PARAM_DTYPES)
