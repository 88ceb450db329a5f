"""fusedopt.torch's Adam step under each way of handing out its chunks (``_core._split``:
"claim", one shared counter; "ranges", each thread its contiguous slice first) and on the worker
pool, next to ``torch.optim.Adam(fused=True)`` and DeepSpeed's ``DeepSpeedCPUAdam`` (when
importable) and the bandwidth probe of the same bytes (``vs_torch.probe_step``), the columns
interleaved in one process (the order rotating each round), for the
issue's float32 cases: 1e6, 1e7 and the 200-tensor model of 1e7.

    PYTHONPATH=python python bench/torch_split.py                  # 8 rounds
    PYTHONPATH=python python bench/torch_split.py --rounds 16 --cases 1e6
    PYTHONPATH=python python bench/torch_split.py --cases 1e6 --cache warm   # or cold

Times are medians per step in ms (and the fastest step); the last columns are torch's and DeepSpeed's time over the
best fusedopt column's. Run it on a quiet machine: the effects are a few percent.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fusedopt import _core
from fusedopt.benchmarks import vs_torch

# column: (threading, split) of fusedopt.torch's step
OURS = {"ours claim": ("auto", "claim"),
        "ours ranges": ("auto", "ranges"),
        "ours pool": ("pool", "claim")}


#: Bytes written before each timed call under ``--cache cold``: twice this VM's 32 MiB L3.
FLUSH_BYTES = 64 << 20


def interleave(cols: dict, rounds: int, cache: str = "mixed") -> dict:
    """name: the times (s) of 3 calls of ``cols[name]`` per round, the columns taking turns, the
    order rotating each round. ``cache``: "mixed", the 3 calls back to back (the first finds the
    previous column's arrays in the L3 cache, the others its own where they fit: at 1e6, 28 MB,
    they do); "warm", one untimed call first; "cold", each call after writing ``FLUSH_BYTES``
    (untimed), so that each starts from memory."""
    res: dict = {k: [] for k in cols}
    names = list(cols)
    flush = np.zeros(FLUSH_BYTES // 4, np.float32) if cache == "cold" else None
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            if cache == "warm":
                cols[k]()
            for _ in range(3):
                if flush is not None:
                    flush += 1.0
                t0 = time.perf_counter()
                cols[k]()
                res[k].append(time.perf_counter() - t0)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cases", default="1e6,1e7,200",
                    help="comma-separated: 1e6, 1e7 and/or 200 (tensors, 1e7 in all)")
    ap.add_argument("--cache", choices=("mixed", "warm", "cold"), default="mixed",
                    help="the caches each timed call starts from (interleave)")
    args = ap.parse_args()
    allc = {c.name: c for c in vs_torch.cases()}
    pick = {"1e6": "Adam float32, 1e+06", "1e7": "Adam float32, 1e+07",
            "200": "Adam float32, 200 tensors, 1e+07"}
    chosen = [allc[pick[k.strip()]] for k in args.cases.split(",")]
    with_ds = vs_torch.deepspeed_available()
    old = (_core._pool_waits(), _core._split())
    print(f"{_core.get_num_threads()} threads, medians in ms over {args.rounds} rounds x 3 "
          f"({args.cache} caches); "
          f"deepspeed {'included' if with_ds else 'not importable: left out'}")
    try:
        for case in chosen:
            cols: dict = {}
            for name, (threading, split) in OURS.items():
                p, g = vs_torch.make_tensors(case)
                step = vs_torch.fusedopt_step(case, p, g)

                def ours(step=step, threading=threading, split=split):
                    _core._pool_waits(threading=threading)
                    _core._split(split)
                    step()
                cols[name] = ours
            p, g = vs_torch.make_tensors(case)
            cols["torch fused"] = vs_torch.torch_step(case, p, g)
            if with_ds:
                p, g = vs_torch.make_tensors(case)
                cols["deepspeed"] = vs_torch.deepspeed_step(case, p, g)
            cols["probe"] = vs_torch.probe_step(case)
            for f in cols.values():
                f()
            res = interleave(cols, args.rounds, args.cache)
            names = list(cols)
            med = {k: statistics.median(v) * 1e3 for k, v in res.items()}
            best = min(med[k] for k in OURS)
            print(f"\n{case.name}")
            for k in names:
                extra = f"   {med[k] / best:5.2f}x best of ours" if k not in OURS else \
                    f"   {med[k] / med['ours claim']:5.3f} of claim"
                print(f"  {k:12s} {med[k]:9.3f}  (min {min(res[k]) * 1e3:9.3f}){extra}")
    finally:
        _core._pool_waits(*old[0])
        _core._split(old[1])


if __name__ == "__main__":
    main()
