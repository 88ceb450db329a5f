"""Per-step scalars of every rule, computed once in float64.

Layer: support (shared by the reference and the kernel-facing modules; pure Python, imports
no kernels).

The NumPy reference, the C++ kernels and the CUDA kernels all take their scalars from here and
cast each one once to the array dtype, so that every backend performs the very same operations
on the very same numbers. Each function also checks its hyperparameters (names as in
torch.optim) and raises TypeError/ValueError naming the bad one.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _checks as c


# Each record is the fields of the C++ struct rules::XScalars<T> (csrc/include/fusedopt/rules/),
# in the same order, then the flags of rules::XFlags that select the kernel instance, which
# always start with ``maximize`` (n_scalars() counts the former). The record goes whole from
# fusedopt.ops to the backend: _core converts it in one place (csrc/bindings.cpp),
# fusedopt._cuda builds the kernel argument from it; tests/test_rules.py checks the names
# against _core.scalar_fields().
# weight_decay_mode: 0 none (weight_decay == 0), 1 L2, 2 decoupled (rules::WeightDecay).

class SgdScalars(NamedTuple):
    lr: float
    momentum: float
    one_minus_dampening: float
    weight_decay: float
    first_step: bool  # the momentum buffer is set to g instead of being decayed
    maximize: bool
    weight_decay_mode: int
    has_momentum: bool
    nesterov: bool


class AdagradScalars(NamedTuple):
    lr_t: float  # lr / (1 + (t - 1) * lr_decay)
    eps: float
    eps_root: float
    weight_decay: float
    maximize: bool
    weight_decay_mode: int


class RmspropScalars(NamedTuple):
    lr: float
    alpha: float
    one_minus_alpha: float
    eps: float
    eps_root: float
    weight_decay: float
    momentum: float
    maximize: bool
    weight_decay_mode: int
    centered: bool
    has_momentum: bool


class AdamScalars(NamedTuple):
    step_size: float  # lr / (1 - beta1**t)
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    inv_bias_correction2: float  # 1 / (1 - beta2**t)
    eps: float
    eps_root: float
    weight_decay: float
    decay: float  # 1 - lr * weight_decay (decoupled weight decay), else 1
    maximize: bool
    weight_decay_mode: int
    amsgrad: bool


class AdamaxScalars(NamedTuple):
    step_size: float  # lr / (1 - beta1**t)
    beta1: float
    one_minus_beta1: float
    beta2: float
    eps: float
    weight_decay: float
    maximize: bool
    weight_decay_mode: int


RECORDS = (SgdScalars, AdagradScalars, RmspropScalars, AdamScalars, AdamaxScalars)


def _decay_mode(weight_decay: float, decoupled: bool = False) -> int:
    if weight_decay == 0.0:
        return 0
    return 2 if decoupled else 1


def _betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return c.unit("betas[0]", betas[0]), c.unit("betas[1]", betas[1])


def sgd(*, step, lr, momentum, dampening, weight_decay, nesterov, maximize) -> SgdScalars:
    t = c.step_count(step)
    lr = c.nonneg("lr", lr)
    momentum = c.nonneg("momentum", momentum)
    dampening = c.unit("dampening", dampening, closed=True)
    weight_decay = c.nonneg("weight_decay", weight_decay)
    nesterov = c.flag("nesterov", nesterov)
    maximize = c.flag("maximize", maximize)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("nesterov=True requires momentum > 0 and dampening == 0")
    return SgdScalars(lr, momentum, 1.0 - dampening, weight_decay, t == 1, maximize,
                      _decay_mode(weight_decay), momentum != 0.0, nesterov)


def adagrad(*, step, lr, lr_decay, weight_decay, eps, eps_root, maximize) -> AdagradScalars:
    t = c.step_count(step)
    lr = c.nonneg("lr", lr)
    lr_decay = c.nonneg("lr_decay", lr_decay)
    weight_decay = c.nonneg("weight_decay", weight_decay)
    eps = c.nonneg("eps", eps)
    eps_root = c.nonneg("eps_root", eps_root)
    maximize = c.flag("maximize", maximize)
    return AdagradScalars(lr / (1.0 + (t - 1) * lr_decay), eps, eps_root, weight_decay, maximize,
                          _decay_mode(weight_decay))


def rmsprop(*, step, lr, alpha, eps, eps_root, weight_decay, momentum, centered,
            maximize) -> RmspropScalars:
    c.step_count(step)
    lr = c.nonneg("lr", lr)
    alpha = c.unit("alpha", alpha, closed=True)
    eps = c.nonneg("eps", eps)
    eps_root = c.nonneg("eps_root", eps_root)
    weight_decay = c.nonneg("weight_decay", weight_decay)
    momentum = c.nonneg("momentum", momentum)
    centered = c.flag("centered", centered)
    maximize = c.flag("maximize", maximize)
    return RmspropScalars(lr, alpha, 1.0 - alpha, eps, eps_root, weight_decay, momentum, maximize,
                          _decay_mode(weight_decay), centered, momentum != 0.0)


def adam(*, step, lr, betas, eps, eps_root, weight_decay, decoupled_weight_decay, amsgrad,
         maximize) -> AdamScalars:
    t = c.step_count(step)
    lr = c.nonneg("lr", lr)
    beta1, beta2 = _betas(betas)
    eps = c.nonneg("eps", eps)
    eps_root = c.nonneg("eps_root", eps_root)
    weight_decay = c.nonneg("weight_decay", weight_decay)
    decoupled = c.flag("decoupled_weight_decay", decoupled_weight_decay)
    amsgrad = c.flag("amsgrad", amsgrad)
    maximize = c.flag("maximize", maximize)
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    return AdamScalars(lr / (1.0 - beta1**t), beta1, 1.0 - beta1, beta2, 1.0 - beta2,
                       1.0 / (1.0 - beta2**t), eps, eps_root, weight_decay, decay, maximize,
                       _decay_mode(weight_decay, decoupled), amsgrad)


def adamax(*, step, lr, betas, eps, weight_decay, maximize) -> AdamaxScalars:
    t = c.step_count(step)
    lr = c.nonneg("lr", lr)
    beta1, beta2 = _betas(betas)
    eps = c.nonneg("eps", eps)
    weight_decay = c.nonneg("weight_decay", weight_decay)
    maximize = c.flag("maximize", maximize)
    return AdamaxScalars(lr / (1.0 - beta1**t), beta1, 1.0 - beta1, beta2, eps, weight_decay,
                         maximize, _decay_mode(weight_decay))


def n_scalars(record) -> int:
    """How many of the record's fields are the C++ struct's scalars (the flags follow)."""
    return type(record)._fields.index("maximize")


def cast(record, dtype):
    """The record with its scalars as NumPy scalars of `dtype` (one rounding each, as the kernels
    do); bools and the flags stay as they are."""
    t = np.dtype(dtype).type
    n = n_scalars(record)
    return type(record)(*(v if isinstance(v, bool) else t(v) for v in record[:n]), *record[n:])


def scalars(record) -> tuple:
    """The scalar fields of a record (as the C++ struct holds them), without the flags."""
    return tuple(record[:n_scalars(record)])


def flags(record) -> tuple:
    """The flag fields of a record (they select the kernel instance)."""
    return tuple(record[n_scalars(record):])
