"""fusedopt.torch's per-step overhead with the grads read through torch's C shim (the default
where torch has one) and through the attribute look-ups (``_core._torch_shim(use=False)``),
interleaved in one process: ``Adam.step`` on tensors of 4 elements, grads kept between steps
or made anew (the assignment's time subtracted), and torch's fused Adam beside them.

    PYTHONPATH=python python bench/torch_shim.py --rounds 30
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import fusedopt.torch as ft
from fusedopt import _core
from fusedopt.benchmarks.overhead import _torch_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if _core._torch_shim() is None:
        ft.Adam([torch.nn.Parameter(torch.ones(1))]).step()  # (torch seen by _core)
    if _core._torch_shim() is None:
        raise SystemExit("this torch has no C shim: nothing to compare")
    for count in (1, 200):
        fns = {}
        for fresh in (False, True):
            fns[fresh], assign = _torch_model(torch, ft.Adam, count, fresh)
        theirs, _ = _torch_model(torch, torch.optim.Adam, count, False)
        cases = {(use, fresh): (use, fns[fresh]) for use in (True, False) for fresh in fns}
        cases["assign"] = (True, assign)
        cases["torch fused"] = (True, theirs)
        res: dict = {c: [] for c in cases}
        names = list(cases)
        for r in range(args.rounds):
            for c in names[r % len(names):] + names[:r % len(names)]:
                use, fn = cases[c]
                _core._torch_shim(use)
                fn()
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    fn()
                    res[c].append(time.perf_counter() - t0)
        _core._torch_shim(True)
        med = {c: statistics.median(v) * 1e6 for c, v in res.items()}
        print(f"{count} tensors of 4 elements: medians in us ({args.rounds} rounds x "
              f"{args.repeats}), target {30 + count} us; torch fused {med['torch fused']:.1f}")
        for use in (True, False):
            print(f"  {'shim' if use else 'look-ups':9s} kept {med[(use, False)]:7.1f}   fresh "
                  f"{med[(use, True)] - med['assign']:7.1f}")


if __name__ == "__main__":
    main()
