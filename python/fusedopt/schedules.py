"""Learning-rate schedules: each is a small object, a callable ``schedule(t) -> float``.

Layer: algorithms (pure Python).

``t`` is the number of steps (or epochs) already taken: an optimizer calls ``schedule(0)`` for
its first step, as optax does. Pass a schedule as ``lr`` to any ``fusedopt.optim`` class; the
optimizer's ``state_dict()`` keeps its position (the step count).

    >>> from fusedopt import schedules
    >>> lr = schedules.join([schedules.linear_warmup(1e-3, 100),
    ...                      schedules.cosine_decay(1e-3, 900)], boundaries=[100])
    >>> lr(0), lr(100), lr(1000)
    (0.0, 0.001, 0.0)
    >>> schedules.cosine_decay(1e-3, 1000)
    cosine_decay(lr0=0.001, total=1000, final=0.0)

Every schedule checks its arguments when made (TypeError/ValueError naming the argument): rates
are finite and >= 0, step counts (``warmup_steps``, ``total``, ``every``, ``boundaries``) are
ints, a warmup rises (``start <= peak``) and a decay falls. A schedule prints as the call that
made it, compares equal to one made with the same arguments, and survives ``pickle`` and
``copy.deepcopy``.

The lower-case names (``cosine_decay``...) are the classes themselves (``CosineDecay``...),
spelled as optax spells its schedule functions.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from . import _checks
from ._checks import nonneg, real

__all__ = ["Schedule", "Constant", "InverseTimeDecay", "ExponentialDecay", "InverseSqrtDecay",
           "StepDecay", "CosineDecay", "LinearWarmup", "Join",
           "constant", "inverse_time_decay", "exponential_decay", "inverse_sqrt_decay",
           "step_decay", "cosine_decay", "linear_warmup", "join"]


def _t(t: float) -> float:
    t = real("t", t)
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    return t


def _steps(name: str, x: Any) -> int:
    """A number of steps: an int >= 1 (a float such as 0.01 is refused: it is most often an
    argument given in the wrong place)."""
    if isinstance(x, float):
        raise TypeError(f"{name} must be an int (a number of steps), got float {x!r}")
    return _checks.integer(name, x, minimum=1)


class Schedule:
    """Base class of the schedules: ``schedule(t)`` is the learning rate after ``t`` steps.

    A subclass sets ``_name`` (the name it prints as), ``_fields`` (its arguments, in order,
    stored as attributes of the same names) and implements ``_value(t)`` for a checked
    ``t >= 0``.
    """

    _name: ClassVar[str] = "schedule"
    _fields: ClassVar[tuple[str, ...]] = ()

    def __call__(self, t: float) -> float:
        """The learning rate after ``t`` steps (``t >= 0``, a real number)."""
        return self._value(_t(t))

    def _value(self, t: float) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"{self._name}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self._fields)

    def __hash__(self) -> int:
        return hash((type(self), *(_hashable(getattr(self, k)) for k in self._fields)))


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


class Constant(Schedule):
    """``lr`` at every step: ``lr(t) = lr``.

    Parameters
    ----------
    lr : float
        The learning rate, >= 0.

    Examples
    --------
    >>> constant(0.1)(1000)
    0.1
    """

    _name = "constant"
    _fields = ("lr",)

    def __init__(self, lr: float) -> None:
        self.lr = nonneg("lr", lr)

    def _value(self, t: float) -> float:
        return self.lr


class InverseTimeDecay(Schedule):
    """``lr(t) = lr0 / (1 + decay_rate * t)``.

    Parameters
    ----------
    lr0 : float
        The rate at t = 0, >= 0.
    decay_rate : float
        >= 0; the rate halves at ``t = 1 / decay_rate``.

    Examples
    --------
    >>> inverse_time_decay(0.2, 1.0)(3)
    0.05
    """

    _name = "inverse_time_decay"
    _fields = ("lr0", "decay_rate")

    def __init__(self, lr0: float, decay_rate: float) -> None:
        self.lr0 = nonneg("lr0", lr0)
        self.decay_rate = nonneg("decay_rate", decay_rate)

    def _value(self, t: float) -> float:
        return self.lr0 / (1.0 + self.decay_rate * t)


class ExponentialDecay(Schedule):
    """``lr(t) = lr0 * rate ** t``.

    Parameters
    ----------
    lr0 : float
        The rate at t = 0, >= 0.
    rate : float
        The factor per step, in [0, 1].

    Examples
    --------
    >>> exponential_decay(1.0, 0.5)(3)
    0.125
    """

    _name = "exponential_decay"
    _fields = ("lr0", "rate")

    def __init__(self, lr0: float, rate: float) -> None:
        self.lr0 = nonneg("lr0", lr0)
        self.rate = _checks.unit("rate", rate, closed=True)

    def _value(self, t: float) -> float:
        return self.lr0 * self.rate ** t


class InverseSqrtDecay(Schedule):
    """``lr(t) = k * lr0 / sqrt(t)``, with ``t = 0`` taken as 1 (the formula has no value
    there).

    Parameters
    ----------
    lr0 : float
        >= 0.
    k : float, default 1.0
        A factor, >= 0.

    Examples
    --------
    >>> inverse_sqrt_decay(0.1, 2.0)(4)
    0.1
    """

    _name = "inverse_sqrt_decay"
    _fields = ("lr0", "k")

    def __init__(self, lr0: float, k: float = 1.0) -> None:
        self.lr0 = nonneg("lr0", lr0)
        self.k = nonneg("k", k)

    def _value(self, t: float) -> float:
        return self.k * self.lr0 / math.sqrt(max(t, 1.0))


class StepDecay(Schedule):
    """``lr(t) = lr0 * factor ** floor(t / every)``: multiply by ``factor`` every ``every``
    steps.

    Parameters
    ----------
    lr0 : float
        The rate for t in [0, every), >= 0.
    factor : float
        In [0, 1].
    every : int
        A number of steps, >= 1.

    Examples
    --------
    >>> step_decay(1.0, 0.5, 10)(25)
    0.25
    """

    _name = "step_decay"
    _fields = ("lr0", "factor", "every")

    def __init__(self, lr0: float, factor: float, every: int) -> None:
        self.lr0 = nonneg("lr0", lr0)
        self.factor = _checks.unit("factor", factor, closed=True)
        self.every = _steps("every", every)

    def _value(self, t: float) -> float:
        return self.lr0 * self.factor ** math.floor(t / self.every)


class CosineDecay(Schedule):
    """Half a cosine from ``lr0`` at t = 0 down to ``final`` at t = ``total``, then ``final``:
    ``lr(t) = final + (lr0 - final) * (1 + cos(pi * min(t, total) / total)) / 2``.

    Parameters
    ----------
    lr0 : float
        The rate at t = 0, >= 0.
    total : int
        The number of steps of the decay, >= 1.
    final : float, default 0.0
        The rate from t = total on, in [0, lr0].

    Examples
    --------
    >>> cosine_decay(1.0, 100, final=0.1)(50)
    0.55
    """

    _name = "cosine_decay"
    _fields = ("lr0", "total", "final")

    def __init__(self, lr0: float, total: int, final: float = 0.0) -> None:
        self.lr0 = nonneg("lr0", lr0)
        self.total = _steps("total", total)
        self.final = nonneg("final", final)
        if self.final > self.lr0:
            raise ValueError(f"final must be <= lr0 (a decay), got final={self.final!r} > "
                             f"lr0={self.lr0!r}")

    def _value(self, t: float) -> float:
        x = min(t, self.total) / self.total
        return self.final + (self.lr0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * x))


class LinearWarmup(Schedule):
    """From ``start`` at t = 0 linearly up to ``peak`` at t = ``warmup_steps``, then ``peak``:
    ``lr(t) = start + (peak - start) * min(t, warmup_steps) / warmup_steps``.

    Parameters
    ----------
    peak : float
        The rate reached, >= 0.
    warmup_steps : int
        The number of steps of the warmup, >= 1.
    start : float, default 0.0
        The rate at t = 0, in [0, peak].

    Examples
    --------
    >>> linear_warmup(1.0, 10)(5)
    0.5
    """

    _name = "linear_warmup"
    _fields = ("peak", "warmup_steps", "start")

    def __init__(self, peak: float, warmup_steps: int, start: float = 0.0) -> None:
        self.peak = nonneg("peak", peak)
        self.warmup_steps = _steps("warmup_steps", warmup_steps)
        self.start = nonneg("start", start)
        if self.start > self.peak:
            raise ValueError(f"start must be <= peak (a warmup rises), got start={self.start!r}"
                             f" > peak={self.peak!r}; the order is (peak, warmup_steps, start)")

    def _value(self, t: float) -> float:
        w = self.warmup_steps
        return self.start + (self.peak - self.start) * min(t, w) / w


class Join(Schedule):
    """Chain schedules: ``schedules[i]`` runs from ``boundaries[i-1]`` to ``boundaries[i]``, and
    each sees its own clock starting at 0 (``join([warmup, cosine], [100])`` runs the cosine
    from its own t = 0 at step 100).

    Parameters
    ----------
    schedules : sequence of callables
        Schedules (or any callable of ``t`` returning a float), at least one.
    boundaries : sequence of int
        ``len(schedules) - 1`` step counts, increasing, each >= 1.

    Examples
    --------
    >>> j = join([linear_warmup(1.0, 10), cosine_decay(1.0, 90)], boundaries=[10])
    >>> j(5), j(10)
    (0.5, 1.0)
    """

    _name = "join"
    _fields = ("schedules", "boundaries")

    def __init__(self, schedules: Sequence[Callable[[float], float]],
                 boundaries: Sequence[int]) -> None:
        if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence):
            raise TypeError(f"schedules must be a list of callables, got "
                            f"{type(schedules).__name__}")
        if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
            raise TypeError(f"boundaries must be a list of ints, got {type(boundaries).__name__}")
        self.schedules = list(schedules)
        for i, s in enumerate(self.schedules):
            _checks.function(f"schedules[{i}]", s)
        self.boundaries = [_steps(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        if not self.schedules:
            raise ValueError("schedules must be a non-empty list of callables")
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"join needs len(schedules) - 1 = {len(self.schedules) - 1} boundaries, got "
                f"{len(self.boundaries)}")
        b = self.boundaries
        if any(hi <= lo for lo, hi in zip(b, b[1:])):
            raise ValueError(f"boundaries must be increasing, got {b}")

    def _value(self, t: float) -> float:
        i = bisect.bisect_right(self.boundaries, t)
        return self.schedules[i](t - (self.boundaries[i - 1] if i else 0.0))


constant = Constant
inverse_time_decay = InverseTimeDecay
exponential_decay = ExponentialDecay
inverse_sqrt_decay = InverseSqrtDecay
step_decay = StepDecay
cosine_decay = CosineDecay
linear_warmup = LinearWarmup
join = Join
