"""L-BFGS on MPI: time per iteration split into the objective, the collectives and the
minimizer's own work, for 1 and 2 ranks (or any list), interleaved in one run.

    PYTHONPATH=python python bench/bench_mpi.py                      # 1e6 features, n = 1e7
    PYTHONPATH=python python bench/bench_mpi.py --ranks 1 2 4 --repeat 3
    PYTHONPATH=python python bench/bench_mpi.py --features 100000 --n 1000000 --iters 5  # quick

The driver starts ``mpiexec -n K python bench/bench_mpi.py --worker ...`` for each K, round
after round (interleaved, so that a load change hits every K alike), and prints one table per
mode with the median of the rounds:

* data-parallel: logistic regression with ``--features`` features and ``--samples`` dense
  samples (float64) split across the ranks (each rank makes its own rows);
* sharded: extended Rosenbrock at ``n = --n``, x and the history split by ``local_slice``.

Every run takes exactly ``--iters`` iterations (gtol = ftol = 0). "objective" is the time in
``fun`` (rank 0), "collectives" the time in MPI calls (rank 0: includes waiting for the slowest
rank), "own" the rest (the minimizer's passes over x, g and the history). Threads: each rank
uses ``--threads`` fusedopt threads (default 1, so that K ranks use K cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(args):
    import numpy as np
    from mpi4py import MPI

    import fusedopt
    from fusedopt.lbfgs import local_slice, minimize

    fusedopt.set_num_threads(args.threads)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    out = {"ranks": size}
    if args.worker == "dp":
        rows = np.array_split(np.arange(args.samples), size)[rank]
        a = np.empty((len(rows), args.features))
        for i, r in enumerate(rows):  # each row from its own seed: the same data on any K
            a[i] = np.random.default_rng(1000 + int(r)).standard_normal(args.features)
        b = np.where(np.arange(args.samples)[rows] % 2 == 0, 1.0, -1.0)
        lam = 1e-3 if rank == 0 else 0.0

        def fun(w):
            z = -b * (a @ w)
            g = a.T @ (-b / (1.0 + np.exp(-z)))
            f = float(np.logaddexp(0.0, z).sum())
            if lam:
                f += 0.5 * lam * float(w @ w)
                g += lam * w
            return f, g
        x0 = np.zeros(args.features)
        out["n"] = args.features
        shard = False
    else:
        sl = local_slice(args.n, comm)
        x0 = np.ones(sl.stop - sl.start)
        x0[0::2] = -1.2

        def fun(x):
            u, v = x[0::2], x[1::2]
            r = v - u * u
            g = np.empty_like(x)
            g[0::2] = -400.0 * u * r - 2.0 * (1.0 - u)
            g[1::2] = 200.0 * r
            return float((100.0 * r * r + (1.0 - u) ** 2).sum()), g
        out["n"] = args.n
        shard = True
    comm.Barrier()
    t0 = time.perf_counter()
    res = minimize(fun, x0, comm=comm, shard=shard, m=args.m, maxiter=args.iters, gtol=0.0,
                   ftol=0.0)
    wall = time.perf_counter() - t0
    if rank == 0:
        it = max(res.nit, 1)
        out.update(nit=res.nit, nfev=res.nfev, f=res.fun, total=wall / it,
                   objective=res.fun_seconds / it, collectives=res.comm_seconds / it,
                   own=(wall - res.fun_seconds - res.comm_seconds) / it,
                   calls=res.collectives / it)
        print("RESULT " + json.dumps(out), flush=True)


def driver(args):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else "mpiexec"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    rows = {}
    for mode in ("dp", "shard"):
        for _ in range(args.repeat):
            for k in args.ranks:    # interleaved: one run of each K per round
                cmd = [mpiexec, "-n", str(k), sys.executable, str(HERE), "--worker", mode,
                       "--features", str(args.features), "--samples", str(args.samples),
                       "--n", str(args.n), "--iters", str(args.iters), "--m", str(args.m),
                       "--threads", str(args.threads)]
                p = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                if p.returncode or not line:
                    sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
                rows.setdefault((mode, k), []).append(json.loads(line[0][7:]))
    title = {"dp": f"data-parallel logistic regression, {args.features} features, "
                   f"{args.samples} samples", "shard": f"sharded extended Rosenbrock, n = {args.n}"}
    for mode in ("dp", "shard"):
        print(f"\n{title[mode]}, m = {args.m}, {args.iters} iterations, median of {args.repeat}"
              f" (ms per iteration)")
        print(f"{'ranks':>5} {'total':>9} {'objective':>10} {'collectives':>12} {'own':>9}"
              f" {'coll/it':>8} {'fev/it':>7}")
        for k in args.ranks:
            rs = rows[(mode, k)]
            med = {c: statistics.median(r[c] for r in rs) * 1e3
                   for c in ("total", "objective", "collectives", "own")}
            print(f"{k:>5} {med['total']:>9.2f} {med['objective']:>10.2f} "
                  f"{med['collectives']:>12.2f} {med['own']:>9.2f} {rs[0]['calls']:>8.2f} "
                  f"{rs[0]['nfev'] / max(rs[0]['nit'], 1):>7.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("dp", "shard"))
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--features", type=int, default=10**6)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--n", type=int, default=10**7)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--m", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
