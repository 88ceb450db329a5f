"""The CPU threading (csrc/cpu/parallel.*): one blocked float64 sum with one lane rule, the same
bits for any thread count and schedule (also while other processes load the cores), and a worker
pool that survives concurrent callers, fork() and interpreter exit."""
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fusedopt
from fusedopt import _core, lbfgs, ops
from fusedopt.benchmarks import load
from cases import CASES, CASE_IDS, assert_same_bits, assert_same_state, grad_stream, make_params

BLOCK = int(_core.reduce_block)
# Odd sizes around the lane width (8), the block and the serial cutoff (2**15).
ODD = [1, 7, 8, 9, 15, BLOCK - 1, BLOCK + 13, 3 * BLOCK + 5, 100_003, 278_011]


def blocked_sum(terms):
    """NumPy model of fusedopt/blocked_sum.h: element i of a block starting at lo goes to lane
    (i - lo) % 8 (no special tail), each lane adds in order from 0.0 (np.cumsum is sequential),
    lanes combined ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)); returns the block sums."""
    sums = []
    for lo in range(0, terms.size, BLOCK):
        blk = terms[lo:lo + BLOCK]
        a = [float(np.cumsum(blk[j::8])[-1]) if blk[j::8].size else 0.0 for j in range(8)]
        sums.append(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])))
    return sums


def in_order(values):
    total = 0.0
    for v in values:
        total = total + v
    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_dot_and_norm_are_the_one_blocked_sum(dtype):
    """The L-BFGS dot and global_norm's sum of squares give the model's bits, tail included."""
    rng = np.random.default_rng(5)
    arrays = []
    for n in ODD:
        a = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        arrays.append(a)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        for nt in (1, 2, 3):
            with fusedopt.num_threads(nt):
                assert _core.lbfgs_dot(a, b) == in_order(blocked_sum(a64 * b64)), (n, nt)
                assert ops.global_norm([a]) == math.sqrt(in_order(blocked_sum(a64 * a64)))
    # Many tensors: the blocks of each tensor, tensors in order, one running sum.
    want = math.sqrt(in_order(s for a in arrays for s in blocked_sum(a.astype(np.float64) ** 2)))
    for nt in (1, 2, 3):
        with fusedopt.num_threads(nt):
            assert ops.global_norm(arrays) == want


def _steps(case, shapes, dtypes, steps=4):
    opt = case.make(make_params(shapes, np.float64))
    params = [p.astype(d) for p, d in zip(opt.params, dtypes)]
    opt = case.make(params)
    grads = grad_stream(shapes, dtypes)
    for _ in range(steps):
        opt.step(next(grads))
    return opt


# Above the serial cutoff, odd, and several tensors (one of them empty, one in a chunk's middle).
SHAPES = [(3 * BLOCK + 5,), (0,), (1,), (40_001,), (7, 11), (100_003,)]
MIXED = [np.float32, np.float64, np.float32, np.float64, np.float32, np.float32]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_same_bits_for_1_2_3_threads_mixed_dtypes(case):
    runs = []
    for nt in (1, 2, 3):
        with fusedopt.num_threads(nt):
            runs.append(_steps(case, SHAPES, MIXED))
    assert_same_state(runs[0], runs[1])
    assert_same_state(runs[0], runs[2])


def _all_kernels(seed=0):
    """Adam, global_norm and the L-BFGS direction on sizes above the cutoffs; returns bytes."""
    rng = np.random.default_rng(seed)
    shapes = [(278_011,), (5,), (2 * BLOCK + 1,)]
    p = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for step in range(1, 4):
        ops.adam_(p, g, m, v, step=step, lr=1e-2)
    n = int(_core.lbfgs_parallel_min) + BLOCK + 3
    h = lbfgs.History(n, 4, np.float64)
    for _ in range(5):
        s = rng.standard_normal(n)
        h.push(s, 2.0 * s + 0.01 * rng.standard_normal(n))
    d = np.empty(n)
    gd = ops.lbfgs_direction_(d, rng.standard_normal(n), h)
    return [x.tobytes() for x in p + m + v] + [d.tobytes(), ops.global_norm(p), gd]


def test_same_bits_while_other_processes_load_the_cores():
    with fusedopt.num_threads(1):
        want = _all_kernels()
    with load.Spinners(2):
        for nt in (2, 3):
            with fusedopt.num_threads(nt):
                assert _all_kernels() == want
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


# The pool's waits (_core._pool_waits): how long an idle worker polls before it sleeps (us of the
# steady clock; 0: at once), and how long a caller polls before it blocks on the workers' last
# chunks (-1: never blocks, yields). None changes a bit.
WAITS = [(200, 100, "pool"), (5000, -1, "pool"), (200, 0, "pool"), (0, 0, "pool"),
         (20, 100, "pool"), (1000000, 100, "pool"), (200, 100, "openmp"), (200, 100, "auto")]


@pytest.mark.parametrize("waits", WAITS, ids=[f"spin{a}-block{b}-{c}" for a, b, c in WAITS])
def test_same_bits_under_every_pool_wait(waits):
    with fusedopt.num_threads(1):
        want = _all_kernels()
    old = _core._pool_waits(*waits)
    try:
        assert _core._pool_waits() == waits
        assert fusedopt.get_pool_spin() == waits[0]
        with fusedopt.num_threads(2):
            assert _all_kernels() == want
            time.sleep(0.01)  # (workers past a short spin asleep: woken by the next call)
            assert _all_kernels() == want
        with load.Spinners(2), fusedopt.num_threads(3):  # workers descheduled: callers block
            assert _all_kernels() == want
    finally:
        _core._pool_waits(*old)
    assert _core._pool_waits() == old


# How a call on OpenMP's threads hands out its chunks (_core._split): one shared counter, or each
# thread its contiguous slice first, then the others' (parallel.h split_mode). 5 threads: slices
# of unequal chunk counts, and more threads than cores.
SPLITS = [(s, nt) for s in ("claim", "ranges") for nt in (2, 3, 5)]


@pytest.mark.parametrize("split,nt", SPLITS, ids=[f"{s}-{nt}threads" for s, nt in SPLITS])
def test_same_bits_under_every_split(split, nt):
    with fusedopt.num_threads(1):
        want = _all_kernels()
    old = (_core._pool_waits(None, None, "openmp"), _core._split(split))
    try:
        assert _core._split() == split
        regions = _core._openmp_regions()
        with fusedopt.num_threads(nt):
            assert _all_kernels() == want
            assert _core._openmp_regions() > regions  # (the calls did run on OpenMP's threads)
        with load.Spinners(2), fusedopt.num_threads(nt):  # a slice's thread descheduled
            assert _all_kernels() == want
    finally:
        _core._pool_waits(*old[0])
        _core._split(old[1])
    assert _core._split() == old[1]


def test_split_refuses_bad_values():
    old = _core._split()
    with pytest.raises(ValueError, match="mode must be 'claim' or 'ranges'"):
        _core._split("static")
    with pytest.raises(TypeError, match="mode must be 'claim', 'ranges' or None"):
        _core._split(1)
    assert _core._split() == old


def test_pool_waits_refuse_bad_values():
    old = _core._pool_waits()
    with pytest.raises(ValueError, match="idle_spin_us"):
        _core._pool_waits(-1, None)
    with pytest.raises(ValueError, match="block_after_us"):
        _core._pool_waits(None, -2)
    with pytest.raises(TypeError, match="idle_spin_us must be an int"):
        _core._pool_waits("many", None)
    with pytest.raises(TypeError, match="block_after_us must be an int"):
        _core._pool_waits(None, 1.5)
    with pytest.raises(ValueError, match="block_after_us must be"):
        _core._pool_waits(None, 2**40)
    with pytest.raises(ValueError, match="idle_spin_us must be"):
        _core._pool_waits(2**40, None)
    with pytest.raises(TypeError, match="threading must be 'auto', 'pool' or 'openmp'"):
        _core._pool_waits(None, None, True)
    with pytest.raises(ValueError, match="threading must be 'auto', 'pool' or 'openmp'"):
        _core._pool_waits(None, None, "omp")
    assert _core._pool_waits() == old


def test_set_pool_spin_sets_the_idle_spin_and_refuses_bad_values():
    old = fusedopt.get_pool_spin()
    assert old == _core._pool_waits()[0]
    try:
        for us in (0, 1, 50, 1000000):
            fusedopt.set_pool_spin(us)
            assert fusedopt.get_pool_spin() == us == _core._pool_waits()[0]
        fusedopt.set_pool_spin(old)
        for bad, exc in [(-1, ValueError), (1000001, ValueError), (2**70, ValueError),
                         (1.0, TypeError), ("200", TypeError), (True, TypeError),
                         (None, TypeError)]:
            with pytest.raises(exc, match="us must be"):
                fusedopt.set_pool_spin(bad)
            assert fusedopt.get_pool_spin() == old
    finally:
        fusedopt.set_pool_spin(old)


# The settings read at import: (variable, getter, [(value, printed, or None: the import fails
# with a ValueError naming the variable)], the error's text). None: the variable unset (default).
ENV_SETTINGS = [
    ("FUSEDOPT_POOL_SPIN_US", "get_pool_spin",
     [(None, "200"), ("0", "0"), ("75", "75"), ("1000000", "1000000"), ("-1", None),
      ("1e3", None), ("", None), ("abc", None), ("1000001", None)],
     "ValueError: FUSEDOPT_POOL_SPIN_US must be an integer 0..1000000"),
    ("FUSEDOPT_THREADING", "get_threading",
     [(None, "auto"), ("pool", "pool"), ("openmp", "openmp"), ("auto", "auto"), ("omp", None),
      ("", None)],
     "ValueError: FUSEDOPT_THREADING must be 'auto', 'pool' or 'openmp'"),
]
ENV_CASES = [(var, getter, value, want, error) for var, getter, rows, error in ENV_SETTINGS
             for value, want in rows]


@pytest.mark.parametrize("var, getter, value, want, error", ENV_CASES,
                         ids=[f"{c[0]}={c[2]!r}" for c in ENV_CASES])
def test_settings_from_the_environment(var, getter, value, want, error):
    """FUSEDOPT_POOL_SPIN_US (the idle spin, default 200 us) and FUSEDOPT_THREADING (default
    'auto') are read at import; a bad value fails the import with a ValueError naming the
    variable; a parallel call then works."""
    env = {k: v for k, v in os.environ.items() if k != var}
    if value is not None:
        env[var] = value
    code = ("import fusedopt, numpy as np\n"
            "w = np.zeros(100003, np.float32)\n"
            "with fusedopt.num_threads(2):\n"
            "    fusedopt.ops.sgd_([w], [np.ones_like(w)], step=1, lr=0.5)\n"
            "assert (w == -0.5).all()\n"
            f"print(fusedopt.{getter}())")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    if want is None:
        assert r.returncode != 0
        assert error in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [want]


def test_set_threading_sets_the_mode_and_refuses_bad_values():
    old = fusedopt.get_threading()
    assert old == _core._pool_waits()[2]
    try:
        for mode in ("pool", "openmp", "auto"):
            fusedopt.set_threading(mode)
            assert fusedopt.get_threading() == mode == _core._pool_waits()[2]
        for bad, exc in [("OpenMP", ValueError), ("", ValueError), (None, TypeError),
                         (1, TypeError), (True, TypeError)]:
            with pytest.raises(exc, match="mode must be 'auto', 'pool' or 'openmp'"):
                fusedopt.set_threading(bad)
            assert fusedopt.get_threading() == "auto"
    finally:
        fusedopt.set_threading(old)


def test_torch_caller_mark_is_per_thread_and_picks_openmp_under_auto():
    """Under 'auto' a call runs on OpenMP's threads exactly while its thread is marked a torch
    caller (fusedopt.torch's steps), on the pool otherwise; 'pool' and 'openmp' ignore the mark;
    the mark of one Python thread is not another's. Same bits every way."""
    n = 300007
    rng = np.random.default_rng(3)
    g = rng.standard_normal(n).astype(np.float32)

    def regions_of_a_step(mark: bool) -> tuple[int, bytes]:
        w = np.ones(n, np.float32)
        before_mark = _core._torch_caller(mark)
        try:
            r0 = _core._openmp_regions()
            fusedopt.ops.sgd_([w], [g], step=1, lr=0.25)
            return _core._openmp_regions() - r0, w.tobytes()
        finally:
            _core._torch_caller(before_mark)

    old = fusedopt.get_threading()
    try:
        with fusedopt.num_threads(2):
            want = regions_of_a_step(False)[1]
            for mode, unmarked, marked in [("auto", 0, 1), ("pool", 0, 0), ("openmp", 1, 1)]:
                fusedopt.set_threading(mode)
                assert regions_of_a_step(False) == (unmarked, want), mode
                assert regions_of_a_step(True) == (marked, want), mode
            fusedopt.set_threading("auto")
            assert _core._torch_caller(True) is False
            seen = []
            t = threading.Thread(target=lambda: seen.append(regions_of_a_step(False)[0]))
            t.start()
            t.join(60)
            assert _core._torch_caller(False) is True
            assert seen == [0]  # another thread, unmarked: the pool
    finally:
        fusedopt.set_threading(old)


@pytest.mark.parametrize("threading_mode", ["pool", "openmp"])
def test_two_python_threads_at_once(threading_mode):
    """Kernels release the GIL; two threads calling at once share the pool (one of them runs on
    its own thread; on OpenMP's threads each has a parallel region of its own) and both get the
    bits of a lone call."""
    with fusedopt.num_threads(1):
        want = _all_kernels()
    got, errors = [], []
    old = _core._pool_waits(threading=threading_mode)

    def work():
        try:
            fusedopt.set_num_threads(2)  # per calling thread, as OpenMP's setting
            for _ in range(3):
                got.append(_all_kernels())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        _core._pool_waits(*old)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(got) == 9 and all(r == want for r in got)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_fork_after_a_parallel_call():
    with fusedopt.num_threads(2):
        want = _all_kernels()  # the pool's workers exist now
        pid = os.fork()
        if pid == 0:  # the child: the same calls must run (on a fresh pool), not hang
            code = 1
            try:
                code = 0 if _all_kernels() == want else 2
            finally:
                os._exit(code)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a kernel call")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_interpreter_exits_cleanly_with_workers_busy():
    """Exit while the pool's workers exist and a daemon thread is inside kernel calls."""
    code = """if True:
        import threading, numpy as np, fusedopt
        from fusedopt import ops
        fusedopt.set_num_threads(2)
        p = [np.ones(300_000, np.float32)]; g = [np.ones(300_000, np.float32)]
        m = [np.zeros(300_000, np.float32)]; v = [np.zeros(300_000, np.float32)]
        ops.adam_(p, g, m, v, step=1)
        def spin():
            fusedopt.set_num_threads(2)
            while True:
                ops.global_norm(p)
        threading.Thread(target=spin, daemon=True).start()
        ops.adam_(p, g, m, v, step=2)
        print("ok")
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_thread_count_setting_is_kept():
    old = fusedopt.get_num_threads()
    try:
        fusedopt.set_num_threads(3)
        assert fusedopt.get_num_threads() == 3
        with fusedopt.num_threads(1):
            assert fusedopt.get_num_threads() == 1
        assert fusedopt.get_num_threads() == 3
    finally:
        fusedopt.set_num_threads(old)


def test_load_benchmark_rows_and_cleanup():
    rows = load.run(sizes=(1e5,), loads=(0, 1), repeats=1)
    assert [(r["load"], r["n"]) for r in rows] == [(0, 100_000), (1, 100_000)]
    for r in rows:
        assert r["t1"] > 0 and r["t2"] > 0 and r["ratio"] == r["t2"] / r["t1"]
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
    text = load.format_rows(rows)
    assert text.count("\n") == 2 and "1e+05" in text
