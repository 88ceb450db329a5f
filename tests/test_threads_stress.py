"""The kernels hold strong references to every list and array for the whole call: another thread
that clears or replaces the argument lists while a kernel runs without the GIL cannot free the
arrays under it (this crashed with SIGSEGV before). Run in a subprocess so that a crash fails the
test instead of killing pytest."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import fusedopt

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from fusedopt import ops, _core

    _core.set_num_threads(2)
    n, rounds, check = 1_000_000, int(sys.argv[1]), sys.argv[2] == "found_inf"
    stop = threading.Event()
    lists = {k: [] for k in "pgmv"}
    armed, cleared = [False], [0]

    def vandal():
        # Spins with the GIL whenever it can get it; once armed (just before a call) it gets it
        # when the main thread releases it inside the kernel, and drops the lists' references to
        # the arrays then: only the kernel call itself may still keep them alive.
        while not stop.is_set():
            if armed[0]:
                for k in "pgmv":
                    lists[k].clear()
                armed[0] = False
                cleared[0] += 1

    t = threading.Thread(target=vandal)
    t.start()
    done = 0
    try:
        for step in range(1, rounds + 1):
            for k, fill in zip("pgmv", (1.0, 0.5, 0.0, 0.0)):
                lists[k] = [np.full(n, fill, np.float32) for _ in range(2)]
            p, g, m, v = lists["p"], lists["g"], lists["m"], lists["v"]
            armed[0] = True
            try:
                ops.adam_(p, g, m, v, step=step, lr=1e-3)
                if check:
                    ops.found_inf_(g, np.zeros(1, np.float32))
                ops.global_norm(p)
                done += 1
            except ValueError:
                pass  # a list cleared before the call: refused, as it should be
    finally:
        stop.set()
        t.join()
    print("ok", done, cleared[0])
""")



def test_clearing_the_lists_from_another_thread_does_not_crash(tmp_path):
    script = tmp_path / "vandal.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    # Where this process imports fusedopt from (the source tree or the installed wheel).
    python_dir = str(pathlib.Path(fusedopt.__file__).resolve().parents[1])
    env["PYTHONPATH"] = python_dir + os.pathsep + env.get("PYTHONPATH", "")
    # Large blocks come from mmap and go back to the system when freed, so that a kernel that
    # reads freed memory faults at once instead of reading stale data.
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    for _ in range(3):
        r = subprocess.run([sys.executable, str(script), "40", "found_inf"], capture_output=True,
                           text=True, env=env, timeout=600, check=False)
        assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
        word, done, cleared = r.stdout.split()
        # The lists were really cleared, and calls really ran (the old code crashed: SIGSEGV).
        assert word == "ok" and int(done) > 0 and int(cleared) > 0, r.stdout
