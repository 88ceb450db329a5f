"""The demo's figures and plotting helpers: PNGs (and a GIF) through matplotlib's
object-oriented API, contour plots of 2-D functions with labelled axes, trajectories that mark
divergence, legends outside the data.

Layer: tools (matplotlib is imported only when a ``Figures`` is made).
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["Figures", "contour", "trajectory", "legend_outside", "first_below"]


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

    def animate(self, fig, name, frames, draw, fps=8):
        """Write ``name`` (a GIF) with matplotlib's Pillow writer: ``draw(i)`` updates the
        figure for frame ``i`` of ``range(frames)``. Returns False (and writes nothing) where
        Pillow is not installed."""
        try:
            import PIL  # noqa: F401, PLC0415 -- optional: the writer needs it
            from matplotlib.animation import PillowWriter  # noqa: PLC0415 -- optional
        except ImportError:
            return False
        path = os.path.join(self.out, name)
        writer = PillowWriter(fps=fps)
        with writer.saving(fig, path, dpi=min(self.dpi, 80)):
            for i in range(frames):
                draw(i)
                writer.grab_frame()
        self.written.append(path)
        return True


def contour(ax, fun, box, grid, *, log=False, levels=30, labels=("x", "y")):
    """Contour lines of ``fun.value`` over ``box = ((x0, x1), (y0, y1))`` (of
    ``log10(f - min f + 1e-3)`` when ``log``), the axes limited to the box and labelled."""
    (x0, x1), (y0, y1) = box
    X, Y = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    value = fun.value if hasattr(fun, "value") else fun
    Z = value(np.stack([X, Y], axis=-1))
    if log:
        Z = np.log10(Z - Z.min() + 1e-3)
    ax.contour(X, Y, Z, levels=levels, linewidths=0.6, cmap="viridis")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])


def trajectory(ax, path, label, *, diverges=False, **kw):
    """Draw a trajectory (rows: iterates) on axes whose limits are set (by ``contour``).

    A run that diverged (a non-finite point, or beyond 1e6) is drawn up to the last point
    before it left the axes for good, that point marked with an ``x``, and ``(diverged at
    step k)`` added to its label, k the first non-finite (or beyond 1e6) step. ``diverges``
    (the caller knows the run grows without bound, still finite) does the same with
    ``(diverges)``. Long runs are thinned to their first 500 points and 1500 more spread
    evenly (the picture is the same). Returns the step of divergence, or None."""
    p = np.asarray(path, dtype=np.float64)
    ok = np.all(np.isfinite(p), axis=1) & np.all(np.abs(p) < 1e6, axis=1)
    diverged = None if ok.all() else int(np.argmin(ok))
    if diverged is not None or diverges:
        p = p[:diverged]
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        inside = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
        last_in = np.flatnonzero(inside)
        p = p[: last_in[-1] + 1] if last_in.size else p[:1]
        label += " (diverges)" if diverged is None else f" (diverged at step {diverged})"
    if len(p) > 2000:
        p = p[np.unique(np.r_[np.arange(500), np.linspace(0, len(p) - 1, 1500).astype(int)])]
    if len(p):
        kw = {"ms": 2, "lw": 0.8, **kw}
        (line,) = ax.plot(p[:, 0], p[:, 1], ".-" if len(p) <= 200 else "-", label=label, **kw)
        if diverged is not None or diverges:
            ax.plot(p[-1, 0], p[-1, 1], "x", ms=9, mew=2, color=line.get_color())
    return diverged


def legend_outside(ax, *, where="right", fontsize=7, ncol=1, **kw):
    """The axes' legend beside (``where="right"``) or under (``"below"``) the axes, off the
    data; constrained layout makes room for it."""
    if where == "right":
        return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                         fontsize=fontsize, ncol=ncol, **kw)
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), borderaxespad=0.0,
                     fontsize=fontsize, ncol=ncol, **kw)


def first_below(values, level, every=1):
    """``every`` times the index of the first value below ``level`` (the iteration count when
    ``values[i]`` was taken after ``i * every`` iterations), else None."""
    hit = np.flatnonzero(np.asarray(values) < level)
    return int(hit[0]) * every if hit.size else None
