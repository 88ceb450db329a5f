"""The Adam step on 1 and on 2 threads while other processes keep the cores busy.

Layer: tools.

A training host rarely has its cores to itself (data-loader workers, other jobs). This benchmark
starts 0, then 1, then 2 processes that spin in a busy loop (``multiprocessing``, terminated on
the way out whatever happens) and times ``fusedopt.ops.adam_`` on float32 arrays with
``fusedopt.num_threads(1)`` and ``(2)``, interleaved (1, 2, 1, 2, ...) so that drift hits both
alike, taking the median of several samples. The target: with load, the 2-thread step is never
more than 1.25x the 1-thread step; without load, threads still pay off at large sizes.

    python -m fusedopt.benchmarks.load [--sizes 1e5 1e6 1e7] [--repeats 15]
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np

from .. import _core, ops

SIZES = (1e5, 1e6, 1e7)
LOADS = (0, 1, 2)  # spinning processes
TARGET = 1.25  # the most a loaded 2-thread step may take, relative to 1 thread


def _spin():
    """A busy loop that never returns (the benchmark terminates it)."""
    while True:
        pass


class Spinners:
    """``with Spinners(k):`` runs k busy-looping processes for the duration of the block."""

    def __init__(self, count):
        self.count = int(count)
        self._procs = []

    def __enter__(self):
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no state of ours
        try:
            for _ in range(self.count):
                p = ctx.Process(target=_spin, daemon=True)
                p.start()
                self._procs.append(p)
            time.sleep(0.2 * self.count)  # let them start spinning
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for p in self._procs:
            p.terminate()
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        self._procs.clear()
        return False


def _adam_state(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    return [p], [g], [np.zeros_like(p)], [np.zeros_like(p)]


def time_adam(n, threads=(1, 2), repeats=15, min_time=2e-3):
    """Median seconds per ``adam_`` step on n float32 elements for each thread count, sampled
    interleaved; each sample times back-to-back calls for about ``min_time`` seconds."""
    params, grads, ms, vs = _adam_state(n)

    def step():
        ops.adam_(params, grads, ms, vs, step=1, lr=1e-6)

    with ops.num_threads(max(threads)):
        t0 = time.perf_counter()
        step()
        number = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    samples = {t: [] for t in threads}
    for _ in range(repeats):
        for t in threads:
            with ops.num_threads(t):
                step()  # warm: pages, the pool's workers
                t0 = time.perf_counter()
                for _ in range(number):
                    step()
                samples[t].append((time.perf_counter() - t0) / number)
    return {t: statistics.median(s) for t, s in samples.items()}


def run(sizes=SIZES, loads=LOADS, repeats=15):
    """Rows ``{"load", "n", "t1", "t2", "ratio"}`` (seconds per step on 1 and 2 threads, and
    t2 / t1) for each number of spinning processes and each size."""
    rows = []
    for load in loads:
        with Spinners(load):
            for n in sizes:
                t = time_adam(int(n), repeats=repeats)
                rows.append({"load": load, "n": int(n), "t1": t[1], "t2": t[2],
                             "ratio": t[2] / t[1]})
    return rows


def format_rows(rows):
    """The rows as a table; loaded rows over TARGET are marked."""
    lines = [f"{'spinners':>8} {'n':>10} {'1 thread ms':>12} {'2 threads ms':>13} {'2/1':>6}"]
    for r in rows:
        flag = "  > target" if r["load"] and r["ratio"] > TARGET else ""
        lines.append(f"{r['load']:>8} {r['n']:>10.0e} {r['t1'] * 1e3:>12.3f} "
                     f"{r['t2'] * 1e3:>13.3f} {r['ratio']:>6.2f}{flag}")
    return "\n".join(lines)


def section(ctx):
    """``python -m fusedopt bench --rules load``: the table as one text block (sizes from
    ``--sizes`` when given; fewer repeats with ``--quick``)."""
    sizes = ctx.sizes if ctx.sizes_given else SIZES
    rows = run(sizes, LOADS, 5 if ctx.quick else 15)
    title = (f"Under load: Adam float32, 1 vs 2 threads, 0/1/2 spinning processes started by "
             f"the benchmark (target: loaded 2/1 <= {TARGET})")
    return [title + "\n" + format_rows(rows)]


def main(argv=None):
    """Command line: prints the table; returns 0 (the numbers are for reading, not a test)."""
    ap = argparse.ArgumentParser(prog="python -m fusedopt.benchmarks.load",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=list(SIZES))
    ap.add_argument("--loads", type=int, nargs="+", default=list(LOADS))
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args(argv)
    print(f"Adam float32, median of {a.repeats}; "
          f"isa {_core.isa()}, {multiprocessing.cpu_count()} CPUs, "
          f"default threads {_core.get_num_threads()}")
    print(format_rows(run(a.sizes, a.loads, a.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
