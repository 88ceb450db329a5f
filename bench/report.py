"""GB/s tables from a pytest-benchmark JSON file of ``bench/``.

    PYTHONPATH=python python -m pytest bench/ --benchmark-only --benchmark-json=out.json
    PYTHONPATH=python python bench/report.py out.json [--stat median|min]

Prints, from the times of one run (side by side, so the machine's drift cancels in the ratios):

* per rule and size: the fused kernel's time and GB/s, the probe's GB/s for the same read/write
  pattern and the fraction of it reached, the speed-up over the NumPy reference and over
  torch.optim (where it ran);
* the 200-tensor model against one flat array (target: time / flat <= 1.10);
* the fixed cost of ``Adam.step`` against the target of 20 us + 0.5 us per tensor;
* any other benchmarks (e.g. ``bench_lbfgs.py``, ``bench_cuda.py``), per group, against the
  group's fastest and, where the run measured a device copy, against its bandwidth.

GB/s = ``extra_info['bytes']`` / time, the bytes the rule must move per step.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from fusedopt.benchmarks.table import format_table, size_label


def _ratio(num, den):
    return f"{num / den:.2f}x" if num and den else "-"


def _us(t):
    return f"{t * 1e6:.1f}" if t else "-"


def _gbs(nbytes, t):
    return f"{nbytes / t / 1e9:.2f}" if t else "-"


def elementwise_table(benches, stat):
    cells = defaultdict(dict)           # (rule, n) -> impl -> benchmark
    order = []
    for b in benches:
        key = (b["extra_info"]["rule"], b["extra_info"]["n"])
        if key not in cells:
            order.append(key)
        cells[key][b["extra_info"]["impl"]] = b
    rows = []
    for key in order:
        c = cells[key]
        t = {impl: b["stats"][stat] for impl, b in c.items()}
        ref = next(iter(c.values()))["extra_info"]
        nbytes = ref["bytes"]
        fused, probe = t.get("fused"), t.get("probe")
        rows.append([
            key[0], size_label(key[1]), f"{ref['reads']}/{ref['writes']}", _us(fused),
            _gbs(nbytes, fused), _gbs(nbytes, probe),
            f"{probe / fused:.0%}" if fused and probe else "-",
            _us(t.get("reference")), _ratio(t.get("reference"), fused),
            _us(t.get("torch")), _ratio(t.get("torch"), fused),
            ref["torch"].replace("torch.optim.", "") if "torch" in t else "-"])
    return format_table(["rule", "n", "r/w", "fused us", "fused GB/s", "probe GB/s", "of probe",
                         "reference us", "x reference", "torch us", "x torch", "torch"], rows)


def model_table(benches, stat):
    t = {b["extra_info"]["layout"]: b["stats"][stat] for b in benches}
    info = {b["extra_info"]["layout"]: b["extra_info"] for b in benches}
    flat = t.get("flat")
    rows = []
    for layout, secs in t.items():
        e = info[layout]
        rows.append([layout, e["tensors"], _us(secs), _gbs(e["bytes"], secs),
                     f"{secs / flat:.2f}" if flat else "-"])
    return format_table(["layout", "tensors", "us", "GB/s", "time / flat"], rows)


def overhead_table(benches, stat):
    rows = []
    for b in benches:
        e = b["extra_info"]
        secs = b["stats"][stat]
        met = ("yes" if secs <= e["target_s"] else "NO") if e["impl"] == "fused" else ""
        rows.append([e["impl"], e["tensors"], _us(secs), _us(e["target_s"]), met])
    return format_table(["impl", "tensors", "step us", "target us", "met"], rows)


def other_table(benches, stat, copy_gbs=None):
    """Benchmarks of other files (e.g. bench_lbfgs.py, bench_cuda.py): per group, each one's
    time, GB/s where ``extra_info`` has ``bytes``, its time over the group's fastest and, given
    the copy bandwidth measured in the same run, the share of it that the GB/s reach."""
    rows = []
    groups = defaultdict(list)
    for b in benches:
        groups[b.get("group") or "-"].append(b)
    for group, members in groups.items():
        best = min(b["stats"][stat] for b in members)
        for b in members:
            secs = b["stats"][stat]
            nbytes = b["extra_info"].get("bytes")
            row = [group, b["name"].split("[")[-1].rstrip("]"), _us(secs),
                   _gbs(nbytes, secs) if nbytes else "-", f"{secs / best:.2f}"]
            if copy_gbs:
                row.append(f"{nbytes / secs / 1e9 / copy_gbs:.0%}" if nbytes and secs else "-")
            rows.append(row)
    return format_table(["group", "case", "us", "GB/s", "time / fastest"]
                        + (["of copy"] if copy_gbs else []), rows)


def report(data, stat="median") -> str:
    benches = data.get("benchmarks", [])
    model = [b for b in benches if "layout" in b["extra_info"]]
    overhead = [b for b in benches if "target_s" in b["extra_info"]]
    elementwise = [b for b in benches if b not in model and b not in overhead
                   and {"rule", "impl", "n", "bytes", "torch"} <= b["extra_info"].keys()]
    other = [b for b in benches if b not in model and b not in overhead and b not in elementwise]
    mi = data.get("machine_info", {})
    out = [f"{len(benches)} benchmarks, {data.get('datetime', '?')}, "
           f"{mi.get('cpu', {}).get('brand_raw', mi.get('processor', '?'))}; {stat} times; "
           "GB/s = bytes the rule moves per step / time"]
    if elementwise:
        out += ["", "fused vs probe (same read/write pattern), NumPy reference and torch.optim",
                elementwise_table(elementwise, stat)]
    if model:
        total = model[0]["extra_info"]["n"]
        out += ["", f"Adam, {size_label(total)} elements: a model of many tensors vs one flat "
                "array (target: time / flat <= 1.10)", model_table(model, stat)]
    if overhead:
        out += ["", "Adam.step fixed cost on tensors of 4 elements (target: 20 us + 0.5 us per "
                "tensor)", overhead_table(overhead, stat)]
    if other:
        # A device-to-device copy benchmark (extra_info["copy"], bench_cuda.py) in the same run
        # gives the bandwidth that the others' GB/s are measured against.
        copy = [b for b in other if b["extra_info"].get("copy")]
        copy_gbs = copy[0]["extra_info"]["bytes"] / copy[0]["stats"][stat] / 1e9 if copy else None
        device = next((b["extra_info"]["device"] for b in other if "device" in b["extra_info"]),
                      None)
        title = "other benchmarks" + (f" on {device}" if device else "")
        if copy_gbs:
            title += f"; device copy bandwidth {copy_gbs:.0f} GB/s (read + write)"
        out += ["", title, other_table(other, stat, copy_gbs)]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", help="the file written by --benchmark-json")
    p.add_argument("--stat", choices=("median", "min", "mean"), default="median")
    args = p.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    print(report(data, args.stat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
