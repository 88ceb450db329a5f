"""Learning-rate schedules: each returns a callable ``schedule(t) -> float``.

``t`` is the number of steps (or epochs) already taken: an optimizer calls ``schedule(0)`` for its
first step, as optax does. Pass a schedule as ``lr`` to any ``fusedopt.optim`` class.

    >>> lr = join([linear_warmup(1e-3, 100), cosine_decay(1e-3, 900)], boundaries=[100])
"""
from __future__ import annotations

import bisect
import math

from ._checks import nonneg, real

__all__ = ["Schedule", "constant", "inverse_time_decay", "exponential_decay", "inverse_sqrt_decay",
           "step_decay", "cosine_decay", "linear_warmup", "join"]


def _t(t) -> float:
    t = real("t", t)
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    return t


class Schedule:
    """A learning-rate schedule: ``schedule(t)`` is the rate after ``t`` steps; it prints as the
    call that made it."""

    __slots__ = ("_fn", "_text")

    def __init__(self, fn, text):
        self._fn = fn
        self._text = text

    def __call__(self, t) -> float:
        return self._fn(t)

    def __repr__(self):
        return self._text





def constant(lr):
    """``lr`` at every step."""
    lr = nonneg("lr", lr)
    return Schedule(lambda t: (_t(t), lr)[1], f"constant({lr})")


def inverse_time_decay(lr0, decay_rate):
    """``lr0 / (1 + decay_rate * t)``."""
    lr0, k = nonneg("lr0", lr0), nonneg("decay_rate", decay_rate)
    return Schedule(lambda t: lr0 / (1.0 + k * _t(t)), f"inverse_time_decay({lr0}, {k})")


def exponential_decay(lr0, rate):
    """``lr0 * rate ** t``; ``rate`` in (0, 1] decays."""
    lr0, rate = nonneg("lr0", lr0), nonneg("rate", rate)
    return Schedule(lambda t: lr0 * rate ** _t(t), f"exponential_decay({lr0}, {rate})")


def inverse_sqrt_decay(lr0, k=1.0):
    """``k * lr0 / sqrt(t)``, with ``t = 0`` taken as 1 (the formula has no value there)."""
    lr0, k = nonneg("lr0", lr0), nonneg("k", k)
    return Schedule(lambda t: k * lr0 / math.sqrt(max(_t(t), 1.0)),
                  f"inverse_sqrt_decay({lr0}, {k})")


def step_decay(lr0, factor, every):
    """``lr0 * factor ** floor(t / every)``: multiply by ``factor`` every ``every`` steps."""
    lr0, factor = nonneg("lr0", lr0), nonneg("factor", factor)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    return Schedule(lambda t: lr0 * factor ** math.floor(_t(t) / every),
                  f"step_decay({lr0}, {factor}, {every})")


def cosine_decay(lr0, total, final=0.0):
    """Half a cosine from ``lr0`` at t = 0 to ``final`` at t = ``total``, then ``final``."""
    lr0, final = nonneg("lr0", lr0), nonneg("final", final)
    total = real("total", total)
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}")

    def f(t):
        x = min(_t(t), total) / total
        return final + (lr0 - final) * 0.5 * (1.0 + math.cos(math.pi * x))

    return Schedule(f, f"cosine_decay({lr0}, {total}, final={final})")


def linear_warmup(peak, warmup_steps, start=0.0):
    """From ``start`` at t = 0 linearly up to ``peak`` at t = ``warmup_steps``, then ``peak``."""
    peak, start = nonneg("peak", peak), nonneg("start", start)
    w = real("warmup_steps", warmup_steps)
    if w <= 0:
        raise ValueError(f"warmup_steps must be > 0, got {w}")
    return Schedule(lambda t: start + (peak - start) * min(_t(t), w) / w,
                  f"linear_warmup({peak}, {w}, start={start})")


def join(schedules, boundaries):
    """Chain schedules: ``schedules[i]`` runs from ``boundaries[i-1]`` to ``boundaries[i]``, and
    each sees its own clock starting at 0 (so ``join([warmup, cosine], [100])`` runs the cosine
    from its own t = 0 at step 100)."""
    schedules = list(schedules)
    boundaries = [real(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
    if not schedules or not all(callable(s) for s in schedules):
        raise TypeError("schedules must be a non-empty list of callables")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join needs len(schedules) - 1 = {len(schedules) - 1} boundaries, got "
            f"{len(boundaries)}")
    if any(b <= a for a, b in zip(boundaries, boundaries[1:])) or any(b < 0 for b in boundaries):
        raise ValueError(f"boundaries must be increasing and >= 0, got {boundaries}")

    def f(t):
        t = _t(t)
        i = bisect.bisect_right(boundaries, t)
        return schedules[i](t - (boundaries[i - 1] if i else 0.0))

    return Schedule(f, f"join({schedules!r}, {boundaries})")
