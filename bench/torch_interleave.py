"""fusedopt.torch's step next to torch's own threads: Adam (float32) alone, right after a
``torch.optim.Adam(fused=True)`` step, right after an MLP's forward and backward, and the other
way round, under several settings of fusedopt's threading (``set_threading``: torch's OpenMP
threads or fusedopt's worker pool, its idle spin, ``set_pool_spin``, and its thread count), all interleaved in one process (the settings and the cases take turns, the
order rotating each round).

    PYTHONPATH=python python bench/torch_interleave.py                 # n = 1e7, 8 rounds
    PYTHONPATH=python python bench/torch_interleave.py --n 1e6 --rounds 12
    OMP_WAIT_POLICY=passive PYTHONPATH=python python bench/torch_interleave.py  # torch's
        # OpenMP threads sleep at once after a parallel region (fusedopt's pool ignores it)

Settings: "auto (OpenMP threads)" is the default (fusedopt.set_threading("auto"): fusedopt.torch's
steps run in an OpenMP parallel region, on torch's own threads when both load one libgomp);
the others run the chunks on fusedopt's worker pool: "pool, spin 200us" (idle workers poll
200 us for the next call, then sleep), "pool, spin 2ms" the pool's former spin (200000 pauses:
2.2 ms on this Xeon; libgomp's default spin is of that order), "pool, spin 0" sleeps at once,
"pool, 1 thread" runs our step on the calling thread alone (is a worker worth having while
torch's OpenMP threads still spin?). Run it on a quiet machine: the effects are a few milliseconds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import fusedopt.torch as ft
from fusedopt import _core

# name: (idle_spin_us, block_after_us, threading) of _core._pool_waits, threads (None: the
# default); "auto" (the default) runs fusedopt.torch's steps on the OpenMP runtime's threads.
SETTINGS = {"auto (OpenMP threads)": ((200, 100, "auto"), None),
            "pool, spin 200us": ((200, 100, "pool"), None),
            "pool, spin 2ms": ((2000, 100, "pool"), None),
            "pool, spin 0": ((0, 100, "pool"), None),
            "pool, 1 thread": ((200, 100, "pool"), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=1e7)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    n = int(args.n)
    torch.manual_seed(0)
    p1, p2 = torch.zeros(n), torch.zeros(n)
    p1.grad, p2.grad = torch.randn(n), torch.randn(n)
    ours = ft.Adam([p1], lr=1e-3)
    theirs = torch.optim.Adam([p2], lr=1e-3, fused=True)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    x, y = torch.randn(128, 256), torch.randint(0, 10, (128,))

    def fwd_bwd():
        torch.nn.functional.cross_entropy(mlp(x), y).backward()

    threads = _core.get_num_threads()
    ours_threads = [threads]

    def our_step():
        # (fusedopt and torch share one libgomp here, whose thread count both read: set ours
        # around our step only, so that torch keeps its threads)
        if ours_threads[0] == threads:
            return ours.step()
        _core.set_num_threads(ours_threads[0])
        try:
            ours.step()
        finally:
            _core.set_num_threads(threads)

    cases = {
        "ours alone": (None, our_step),
        "ours after torch step": (theirs.step, our_step),
        "ours after fwd+bwd": (fwd_bwd, our_step),
        "torch alone": (None, theirs.step),
        "torch after ours": (our_step, theirs.step),
        "fwd+bwd after ours": (our_step, fwd_bwd),
        "fwd+bwd after torch": (theirs.step, fwd_bwd),
    }
    for _ in range(3):
        our_step(), theirs.step(), fwd_bwd()
    names = list(SETTINGS)
    res: dict = {(s, c): [] for s in names for c in cases}
    default = _core._pool_waits()
    try:
        for r in range(args.rounds):
            for s in names[r % len(names):] + names[:r % len(names)]:
                _core._pool_waits(*SETTINGS[s][0])
                ours_threads[0] = SETTINGS[s][1] or threads
                for c, (before, timed) in cases.items():
                    for _ in range(3):
                        if before:
                            before()
                        t0 = time.perf_counter()
                        timed()
                        res[(s, c)].append(time.perf_counter() - t0)
    finally:
        _core._pool_waits(*default)
    print(f"n = {n:.0e}, {_core.get_num_threads()} threads, medians in ms "
          f"({args.rounds} rounds x 3 of each case)")
    print(f"{'case':24s}" + "".join(f"{s:>23s}" for s in names))
    for c in cases:
        print(f"{c:24s}" + "".join(f"{statistics.median(res[(s, c)]) * 1e3:23.2f}"
                                   for s in names))


if __name__ == "__main__":
    main()
