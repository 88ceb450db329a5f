"""The one table formatter of fusedopt's tools: the benchmark tables, ``bench/report.py`` and
the demo's tables all print through ``format_table``.

Layer: tools (plain Python; imports nothing of fusedopt).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["format_table", "format_value", "size_label", "Table", "us", "gbs", "ratio"]


def format_table(headers, rows) -> str:
    """A plain text table: a header line, a rule of dashes, one line per row; columns
    right-aligned except the first (left-aligned). Cells are shown with ``str``."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def format_value(v) -> str:
    """A table cell: 4 significant digits (scientific notation outside [1e-3, 1e5)), ``-`` for
    None, ``yes``/``no`` for booleans, arrays as tuples."""
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == 0:
            return "0"
        return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(v, np.ndarray):
        return "(" + ", ".join(format_value(float(t)) for t in v.ravel()) + ")"
    return str(v)


def size_label(n: int) -> str:
    """``1e7`` for powers of ten from 100 up, else the number."""
    e = len(str(n)) - 1
    return f"1e{e}" if n == 10**e and e > 1 else str(n)


class Table:
    """A titled table that keeps its values (for tests and figures) and formats them on output:
    the title, a rule of ``=``, ``format_table`` of the formatted cells, an optional note."""

    def __init__(self, title, headers, note=None):
        self.title, self.headers, self.rows, self.note = title, list(headers), [], note

    def add(self, *row):
        if len(row) != len(self.headers):
            raise ValueError(f"row has {len(row)} cells, table {self.title!r} has "
                             f"{len(self.headers)} columns")
        self.rows.append(list(row))

    def format(self):
        body = format_table(self.headers, [[format_value(v) for v in r] for r in self.rows])
        out = [self.title, "=" * len(self.title), body]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def column(self, header):
        i = self.headers.index(header)
        return [r[i] for r in self.rows]


def us(seconds) -> str:
    """Microseconds, one decimal."""
    return f"{seconds * 1e6:.1f}"


def gbs(nbytes, seconds) -> str:
    """Effective GB/s, two decimals."""
    return f"{nbytes / seconds / 1e9:.2f}"


def ratio(a, b) -> str:
    """``a / b`` as a speed-up, ``1.23x``."""
    return f"{a / b:.2f}x"
