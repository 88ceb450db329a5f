"""Print bench_cuda.py's pytest-benchmark JSON as one table per group: median time per step,
effective GB/s (``extra_info['bytes']`` / median) and the share of the copy bandwidth measured in
the same run.

    python bench/cuda_report.py results.json
"""
from __future__ import annotations

import json
import sys


def report(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    rows = data["benchmarks"]
    copy = [r for r in rows if r["group"] == "copy"]
    copy_bw = copy[0]["extra_info"]["bytes"] / copy[0]["stats"]["median"] / 1e9 if copy else None
    lines = []
    device = next((r["extra_info"].get("device") for r in rows if "device" in r["extra_info"]), "?")
    lines.append(f"device: {device}; date: {data.get('datetime', '?')}")
    if copy_bw:
        lines.append(f"device-to-device copy bandwidth (read + write): {copy_bw:.0f} GB/s")
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    for group, rs in groups.items():
        lines.append("")
        lines.append(f"{group}")
        lines.append(f"  {'implementation':<28}{'median':>12}{'GB/s':>10}{'% copy':>9}")
        for r in sorted(rs, key=lambda r: r["stats"]["median"]):
            t = r["stats"]["median"]
            nbytes = r["extra_info"].get("bytes")
            gbs = nbytes / t / 1e9 if nbytes else None
            pct = 100 * gbs / copy_bw if gbs and copy_bw else None
            lines.append(f"  {r['name']:<28}{t * 1e3:>10.3f}ms"
                         f"{'' if gbs is None else f'{gbs:10.0f}'}"
                         f"{'' if pct is None else f'{pct:8.1f}%'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
