"""The demo's progress bar: tqdm where installed, else a plain one on stderr.

Layer: tools (tqdm is imported only when a bar is made).
"""
from __future__ import annotations

import sys

from ..benchmarks.timing import stopwatch

__all__ = ["progress", "PlainBar", "NullBar"]


class PlainBar:
    """A minimal stand-in for tqdm: one line on stderr, redrawn in place."""

    def __init__(self, total, desc):
        self.total, self.n, self.desc, self.t0 = total, 0, desc, stopwatch()
        self._draw()

    def set_description(self, desc):
        self.desc = desc
        self._draw()

    def update(self, k=1):
        self.n += k
        self._draw()

    def _draw(self):
        frac = self.n / self.total if self.total else 1.0
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r{self.desc[:40]:<40} [{bar:<30}] {self.n}/{self.total} "
                         f"{stopwatch() - self.t0:5.1f}s")
        sys.stderr.flush()

    def clear(self):
        sys.stderr.write("\r" + " " * 100 + "\r")

    def close(self):
        sys.stderr.write("\n")


class NullBar(PlainBar):
    """Counts, draws nothing (``--no-progress``)."""

    def _draw(self):
        pass

    def clear(self):
        pass

    def close(self):
        pass


def progress(total, desc, enabled=True):
    """tqdm's bar on stderr where tqdm is installed, else a plain one; ``NullBar`` when not
    ``enabled``."""
    if not enabled:
        return NullBar(total, desc)
    try:
        from tqdm import tqdm  # noqa: PLC0415 -- optional
    except ImportError:
        return PlainBar(total, desc)
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True)
