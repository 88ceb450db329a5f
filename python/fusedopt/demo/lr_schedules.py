"""Experiment 4: learning-rate schedules, and their effect on experiment 3's SGD.

Layer: tools.
"""
from __future__ import annotations

import math

import numpy as np

from .. import optim, schedules
from ..benchmarks.table import Table
from .figures import legend_outside
from .mlp import setup, table_row, train

__all__ = ["TITLE", "NEEDS", "units", "run", "epoch_schedules"]

TITLE = "learning-rate schedules"
NEEDS = "sklearn"


def units(cfg):
    """Progress units: one per schedule."""
    return len(epoch_schedules(cfg.epochs))


def epoch_schedules(epochs):
    """The schedules of item 4, as functions of the epoch (lr0 = 0.2)."""
    w = min(3, max(1, epochs - 1))
    return (
        ("constant", schedules.constant(0.2)),
        ("inverse time (decay 1)", schedules.inverse_time_decay(0.2, 1.0)),
        ("exponential (0.9/epoch)", schedules.exponential_decay(0.2, 0.9)),
        ("inverse sqrt", schedules.inverse_sqrt_decay(0.2)),
        ("step (x0.5 every 10)", schedules.step_decay(0.2, 0.5, 10)),
        ("cosine", schedules.cosine_decay(0.2, epochs)),
        (f"warmup {w} + cosine", schedules.join([schedules.linear_warmup(0.2, w),
                                                 schedules.cosine_decay(0.2, epochs - w)],
                                                [w])),
    )


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    data, params0, order = setup(ctx)
    iters_per_epoch = math.ceil(len(order[0]) / cfg.batch)
    sch = epoch_schedules(cfg.epochs)
    inv = schedules.inverse_time_decay(0.2, 1.0)
    t1 = Table("4a. Inverse-time decay lr = lr0 / (1 + decay * epoch), lr0 = 0.2, decay 1",
               ["epoch", "lr"])
    for e in range(1, 5):
        t1.add(e, inv(e))
    shown = [e for e in (0, 1, 2, 3, 4, 5, 10, 20, 29) if e < max(cfg.epochs, 5)]
    t2 = Table("4b. Learning rate per epoch (schedules of the epoch count, lr0 = 0.2)",
               ["schedule"] + [f"e={e}" for e in shown])
    for name, s in sch:
        t2.add(name, *[s(e) for e in shown])
    t3 = Table(f"4c. SGD on item 3's MLP with each schedule (lr fixed within an epoch), "
               f"{cfg.epochs} epochs",
               ["schedule", "lr0", f"first iter val loss < {cfg.threshold:g}",
                "final train loss", "final val loss", "val accuracy"])
    curves = {}
    for name, s in sch:
        lr = (lambda t, s=s: s(t // iters_per_epoch))
        res = train(cfg, data, lambda p, lr=lr: optim.SGD(p, lr=lr), params0, order)
        table_row(t3, cfg, name, 0.2, res)
        curves[name] = res
        bar.update()
    if figs.enabled:
        fig, axes = figs.new(1, 2, (5.2, 4.2))
        e = np.arange(cfg.epochs + 1)
        for name, s in sch:
            axes[0, 0].plot(e, [s(v) for v in e], ".-", label=name)
            vl = curves[name][1]
            axes[0, 1].semilogy(np.arange(len(vl)) * cfg.eval_every, vl, label=name)
        axes[0, 0].set_title("learning rate by epoch (legend on the right)")
        axes[0, 0].set_xlabel("epoch")
        axes[0, 0].set_ylabel("learning rate")
        axes[0, 1].set_title("SGD on item 3's MLP: validation loss")
        axes[0, 1].set_xlabel("iteration")
        axes[0, 1].set_ylabel("mean cross-entropy, validation set")
        legend_outside(axes[0, 1])
        figs.save(fig, "04_schedules.png")
    return [t1, t2, t3]
