"""The one timer of the benchmarks: interleaved repeats, medians, and the spread that shows a
busy machine.

Layer: tools (plain Python).
"""
from __future__ import annotations

import statistics
import time

__all__ = ["call_time", "time_interleaved", "Timer", "stopwatch"]

#: The clock of every measurement (the demo's experiment times too).
stopwatch = time.perf_counter


def call_time(fn, *, cheap: float = 0.05) -> float:
    """Seconds one call of ``fn`` takes after a warm-up call (the warm-up's own time where that
    took longer than ``cheap`` seconds: a slow call needs no second warm-up)."""
    t0 = stopwatch()
    fn()
    dt = stopwatch() - t0
    if dt < cheap:
        t0 = stopwatch()
        fn()
        dt = stopwatch() - t0
    return max(dt, 1e-7)


def time_interleaved(fns: dict, *, budget: float = 0.3, min_repeats: int = 3,
                     max_repeats: int = 25, sample: float = 2e-3) -> dict:
    """Seconds per call of each zero-argument callable in ``fns``: ``{key: [one per repeat]}``.

    Each callable is warmed up, then called ``number`` times back to back per sample (enough
    for ``sample`` seconds). Samples are taken round-robin over all callables, so that a drift
    of the machine affects them alike, until ``min_repeats`` rounds are done and ``budget``
    seconds have passed (or ``max_repeats`` rounds).
    """
    numbers = {key: max(1, int(sample / call_time(fn))) for key, fn in fns.items()}
    samples = {key: [] for key in fns}
    start = stopwatch()
    for r in range(max_repeats):
        for key, fn in fns.items():
            number = numbers[key]
            t0 = stopwatch()
            for _ in range(number):
                fn()
            samples[key].append((stopwatch() - t0) / number)
        if r + 1 >= min_repeats and stopwatch() - start >= budget:
            break
    return samples


class Timer:
    """Medians of ``time_interleaved`` with a fixed budget per call, remembering the largest
    spread seen (upper over lower quartile of one measurement's repeats): a busy machine shows
    there first."""

    def __init__(self, budget: float):
        self.budget = budget
        self.spread = 1.0

    def __call__(self, fns: dict, **kwargs) -> dict:
        samples = time_interleaved(fns, budget=self.budget, **kwargs)
        for v in samples.values():
            if len(v) >= 4:
                q1, _, q3 = statistics.quantiles(v, n=4)
                self.spread = max(self.spread, q3 / q1)
        return {key: statistics.median(v) for key, v in samples.items()}
