"""Where a 200-tensor Adam step loses against one flat tensor of the same 1e7 elements: the
kernel alone (``fusedopt.ops.adam_`` on NumPy views of the torch tensors, on 1 and 2 threads)
for one flat tensor, 200 separate tensors and 200 views of one flat tensor, next to the whole
``fusedopt.torch.Adam`` step of the same layouts and the Python cost of a 200-tensor step (the
same step on 200 tensors of 64 elements), interleaved in one process.

    PYTHONPATH=python python bench/torch_layout.py                # 10 rounds
    PYTHONPATH=python python bench/torch_layout.py --rounds 20

If "kernel, 200 tensors" matches "kernel, flat", the segments cost nothing in the kernel and the
gap of the whole step is the per-tensor Python and checks (the "200 tiny tensors" line).
Medians in ms; run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch_split import interleave  # (bench/ is the script's directory)

import fusedopt
import fusedopt.torch as ft
from fusedopt import ops

N, K = 10_000_000, 200


def layouts() -> dict:
    """name: (params, grads) as float32 torch tensors."""
    g = torch.Generator().manual_seed(0)
    out = {"flat": ([torch.zeros(N)], [torch.randn(N, generator=g)])}
    out["200 tensors"] = ([torch.zeros(N // K) for _ in range(K)],
                          [torch.randn(N // K, generator=g) for _ in range(K)])
    P, G = torch.zeros(N), torch.randn(N, generator=g)
    out["200 views"] = (list(P.split(N // K)), list(G.split(N // K)))
    return out


def kernel_step(params, grads, threads: int):
    """ops.adam_ on NumPy views of the tensors and of fresh zero states."""
    p = [t.numpy() for t in params]
    g = [t.numpy() for t in grads]
    m = [torch.zeros_like(t).numpy() for t in params]
    v = [torch.zeros_like(t).numpy() for t in params]
    count = [0]

    def step():
        count[0] += 1
        with fusedopt.num_threads(threads):
            ops.adam_(p, g, m, v, step=count[0], lr=1e-3)
    return step


def torch_step(params, grads):
    ps = [torch.nn.Parameter(t.clone()) for t in params]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    return ft.Adam(ps, lr=1e-3).step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    cols = {}
    for name, (p, g) in layouts().items():
        for nt in (1, 2):
            cols[f"kernel, {name}, {nt} thread{'s' if nt > 1 else ''}"] = kernel_step(p, g, nt)
        cols[f"fusedopt.torch step, {name}"] = torch_step(p, g)
    tiny = [torch.zeros(64) for _ in range(K)]
    cols["fusedopt.torch step, 200 tiny tensors"] = torch_step(tiny, [torch.randn(64)] * K)
    for f in cols.values():
        f()
    res = interleave(cols, args.rounds)
    names = list(cols)
    print(f"n = {N:.0e}, medians in ms (and the fastest) over {args.rounds} rounds x 3")
    for k in names:
        print(f"  {k:44s} {statistics.median(res[k]) * 1e3:8.3f}  (min {min(res[k]) * 1e3:8.3f})")


if __name__ == "__main__":
    main()
