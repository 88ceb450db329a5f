"""The demo's configuration (iteration counts, full and ``--quick``) and the context every
experiment is given.

Layer: tools.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Config", "Context"]


@dataclass(frozen=True)
class Config:
    quick: bool
    seed: int = 0
    gd_steps: int = 50                 # item 1
    iters: int = 10_000                # item 2
    epochs: int = 30                   # items 3-4
    batch: int = 32
    eval_every: int = 5                # validation loss every this many iterations
    threshold: float = 0.15            # validation loss threshold of item 3's table
    ms_starts: tuple = ((2, 100), (10, 50))   # item 6: (dimension, starts per run)
    ms_runs: int = 5
    grid: int = 300                    # contour grid resolution
    inits: int = 3                     # item 9: accuracies averaged over this many inits
    dpi: int = 110

    @classmethod
    def make(cls, quick, seed=0):
        if quick:
            return cls(quick=True, seed=seed, iters=300, epochs=2, eval_every=5,
                       ms_starts=((2, 6), (10, 4)), ms_runs=1, grid=60, dpi=60, inits=1)
        return cls(quick=False, seed=seed)



@dataclass
class Context:
    """What an experiment's ``run(ctx)`` gets: the configuration, the figure writer, the progress
    bar (``ctx.bar.update()`` once per unit of work), and ``shared``, a cache for data that
    several experiments use in one run (the digits of items 3 and 4)."""

    cfg: Config
    figs: object        # figures.Figures
    bar: object         # progress.progress(...)
    shared: dict = field(default_factory=dict)
