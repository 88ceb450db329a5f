"""The demo's figures and plotting helpers: PNGs through matplotlib's object-oriented API,
contour plots of 2-D functions, trajectories.

Layer: tools (matplotlib is imported only when a ``Figures`` is made).
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["Figures", "contour", "trajectory", "first_below"]


class Figures:
    """Writes PNGs with matplotlib's object-oriented API (no pyplot, no global backend)."""

    def __init__(self, out, dpi):
        self.out, self.dpi, self.written = out, dpi, []
        try:
            from matplotlib.figure import Figure  # noqa: PLC0415 -- optional
        except ImportError:
            self.Figure = None
        else:
            self.Figure = Figure

    @property
    def enabled(self):
        return self.Figure is not None

    def new(self, nrows=1, ncols=1, size=(6.4, 4.8)):
        fig = self.Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        return fig, axes

    def save(self, fig, name):
        path = os.path.join(self.out, name)
        fig.savefig(path, dpi=self.dpi)
        self.written.append(path)


def contour(ax, fun, box, grid, *, log=False, levels=30):
    (x0, x1), (y0, y1) = box
    X, Y = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    Z = fun.value(np.stack([X, Y], axis=-1))
    if log:
        Z = np.log10(Z - Z.min() + 1e-3)
    ax.contour(X, Y, Z, levels=levels, linewidths=0.6, cmap="viridis")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def trajectory(ax, path, label, **kw):
    """Draw a trajectory up to its first non-finite (diverged) point; long ones thinned to
    their first 500 points and 1500 more spread evenly (the picture is the same)."""
    p = np.asarray(path)
    ok = np.all(np.isfinite(p), axis=1) & np.all(np.abs(p) < 1e6, axis=1)
    p = p[: np.argmin(ok) if not ok.all() else len(p)]
    if len(p) > 2000:
        p = p[np.unique(np.r_[np.arange(500), np.linspace(0, len(p) - 1, 1500).astype(int)])]
    if len(p):
        ax.plot(p[:, 0], p[:, 1], ".-" if len(p) <= 200 else "-", ms=2, lw=0.8, label=label,
                **kw)


def first_below(values, level, every=1):
    """``every`` times the index of the first value below ``level`` (the iteration count when
    ``values[i]`` was taken after ``i * every`` iterations), else None."""
    hit = np.flatnonzero(np.asarray(values) < level)
    return int(hit[0]) * every if hit.size else None
