"""Experiment 5: exponentially weighted averages, with and without bias correction.

Layer: tools.
"""
from __future__ import annotations

import numpy as np

from ..benchmarks.table import Table
from .figures import legend_outside

__all__ = ["TITLE", "NEEDS", "units", "run", "ewa"]

TITLE = "exponentially weighted averages"
NEEDS = None


def units(cfg):
    """Progress units: one."""
    return 1


def ewa(series, beta, bias_correction=False):
    """``v_t = beta v_{t-1} + (1 - beta) theta_t`` from ``v_0 = 0``; with bias correction
    ``v_t / (1 - beta^t)`` (Adam's correction of its moment estimates)."""
    v, out = 0.0, np.empty(len(series))
    for t, x in enumerate(series, start=1):
        v = beta * v + (1 - beta) * x
        out[t - 1] = v / (1 - beta ** t) if bias_correction else v
    return out


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    rng = np.random.default_rng(cfg.seed)
    days = np.arange(1, 366)
    truth = 15 + 10 * np.sin(2 * np.pi * (days - 110) / 365)
    temp = truth + 4 * rng.standard_normal(days.size)
    tab = Table("5. Exponentially weighted averages of a noisy daily series (365 days, "
                "seasonal signal + N(0, 4^2) noise)",
                ["beta", "window 1/(1-beta)", "bias corr.", "v day 1", "v day 5",
                 "RMS err days 1-10", "RMS err days 1-50", "RMS err days 200-365"],
                note=f"RMS error against the noise-free signal; the raw series has "
                     f"{float(np.sqrt(np.mean((temp - truth) ** 2))):.3f}. Day 1 value "
                     f"{temp[0]:.3f} (signal {truth[0]:.3f}). Without correction the average "
                     f"starts near 0 and needs ~1/(1-beta) days to catch up; the correction "
                     f"removes that bias, and once beta^t is small the two agree. beta = 0.98 "
                     f"averages ~50 days: smoother, but it lags the seasonal signal.")
    series = {}
    for beta in (0.9, 0.98):
        for bc in (False, True):
            v = ewa(temp, beta, bc)
            series[(beta, bc)] = v
            rms = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))   # noqa: E731
            tab.add(beta, 1 / (1 - beta), bc, v[0], v[4], rms(v[:10], truth[:10]),
                    rms(v[:50], truth[:50]), rms(v[199:], truth[199:]))
    bar.update()
    if figs.enabled:
        fig, ax = figs.new(1, 1, (10, 4.5))
        ax = ax[0, 0]
        ax.plot(days, temp, ".", ms=3, color="0.6", label="daily values")
        ax.plot(days, truth, "k-", lw=0.8, label="signal")
        # the dashed uncorrected curves above the corrected ones: visible where the two agree
        # (after ~1/(1-beta) days)
        for (beta, bc), v in series.items():
            ax.plot(days, v, "-" if bc else "--", zorder=2.5 if bc else 3,
                    label=f"beta={beta}" + (" corrected" if bc else ""))
        ax.set_xlabel("day")
        ax.set_ylabel("value (signal + noise)")
        legend_outside(ax)
        ax.set_title("Exponentially weighted averages")
        figs.save(fig, "05_ewa.png")
    return [tab]
