"""Section ``torch`` of ``python -m fusedopt bench`` (and ``deepspeed``, named only): fusedopt
against ``torch.optim.Adam(fused=True)`` and DeepSpeed's ``DeepSpeedCPUAdam`` on the same torch
tensors, side by side in one run, interleaved.

Layer: tools (torch, ml_dtypes and deepspeed are imported only here, and only when used).

fusedopt steps the tensors through its front door, ``fusedopt.torch.Adam`` (zero-copy: data
pointers, one kernel call per step). The cases:

* Adam, float32, 1e6 and 1e7 elements in one tensor;
* Adam, float32, a 200-tensor model of 1e7 elements (``registry.model_sizes``);
* Adam, bfloat16 params and grads with float32 master weights and states, 1e7 elements: 30 bytes
  per element (reads p 2, g 2, master 4, exp_avg 4, exp_avg_sq 4; writes all but g). torch has
  no master weights: ``Adam(fused=True)`` steps the bfloat16 params with bfloat16 states (18
  bytes per element, other rounding) -- the column shows what a torch user gets;
* a training loop on one process (an MLP's forward and backward in torch, then the step):
  the iteration and the step's share, ``fusedopt.torch.Adam`` (by default, threading 'auto', on
  the OpenMP runtime's threads, torch's own when both load one libgomp; also on fusedopt's worker
  pool with an idle spin of 200 us, of 2 ms, about its former spin and the order of libgomp's,
  and with none: idle workers sleep at once, ``fusedopt.set_pool_spin``) against
  ``Adam(fused=True)``:
  what a user sees when torch's OpenMP threads and fusedopt's workers take turns on the cores;
* one training step of FSDP2 with ``CPUOffloadPolicy(pin_memory=False)`` on 2 gloo processes
  (this module run as a script: ``python -m fusedopt.benchmarks.vs_torch fsdp-worker ...``), an
  MLP of 3 square layers (width 1024, 512 with --quick), one thread per rank: the whole step and
  the optimizer's share, ``fusedopt.torch.AdamW`` against ``torch.optim.AdamW(fused=True)`` on
  the same model (two copies in each process, stepped alternately).

DeepSpeed (``pip install deepspeed``; its CPU op compiles at first use, minutes, cached by torch
under ``~/.cache/torch_extensions``) runs only in the ``deepspeed`` section, never by default.
``DeepSpeedCPUAdam`` steps the tensors themselves: in the bfloat16 case bfloat16 params with
float32 states and no master weights (its CPU op has none; 22 bytes per element), the setting
of the issue's DeepSpeed figure.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import _core
from .registry import STEP, Context, model_sizes, probe_arrays
from .table import format_table, gbs, us

__all__ = ["section", "section_deepspeed", "cases", "Case"]

ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


class Case:
    """One benchmark case: tensor sizes, whether the params are bfloat16 with float32 master
    weights, and the bytes one step must move."""

    def __init__(self, name: str, sizes, bf16: bool = False):
        self.name, self.sizes, self.bf16 = name, [int(n) for n in sizes], bf16

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def bytes_per_element(self) -> int:
        return 30 if self.bf16 else 28  # float32 Adam: 4 reads, 3 writes of 4 bytes

    def nbytes(self) -> int:
        return self.bytes_per_element * self.total


def cases(quick: bool = False, sizes=None):
    """The cases of the issue (1e5 for 1e6 and 1e6 for 1e7 with --quick; the smallest and the
    largest of ``sizes`` where given)."""
    if sizes:
        small, big = min(sizes), max(max(sizes), 200)
    else:
        small, big = (10**5, 10**6) if quick else (10**6, 10**7)
    return [Case(f"Adam float32, {small:.0e}", [small]),
            Case(f"Adam float32, {big:.0e}", [big]),
            Case(f"Adam float32, 200 tensors, {big:.0e}", model_sizes(big)),
            Case(f"Adam bf16 params + float32 master, {big:.0e}", [big], bf16=True)]


def _torch():
    return importlib.import_module("torch")


def make_tensors(case: Case, seed: int = 0):
    """(params, grads) as torch tensors: float32, or bfloat16 for the bf16 case."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if case.bf16 else torch.float32
    params = [torch.randn(n, generator=g).to(dtype) for n in case.sizes]
    grads = [torch.randn(n, generator=g).to(dtype) for n in case.sizes]
    return params, grads


def fusedopt_step(case: Case, params, grads):
    """One ``fusedopt.torch.Adam`` step on the tensors themselves (float32 states; float32
    master weights for the bf16 case), alternating maximize as the other columns do."""
    torch = _torch()
    import fusedopt.torch as ft  # noqa: PLC0415 -- imports torch

    tparams = [torch.nn.Parameter(t) for t in params]
    for t, g in zip(tparams, grads):
        t.grad = g
    opt = ft.Adam(tparams, master_weights=case.bf16, **ADAM)
    group = opt.param_groups[0]

    def step():
        group["maximize"] = not group["maximize"]
        opt.step()

    return step


def torch_step(case: Case, params, grads):
    """One ``torch.optim.Adam(fused=True)`` step on the tensors themselves (bfloat16 states for
    bfloat16 params: torch's own behaviour)."""
    torch = _torch()
    tparams = [torch.nn.Parameter(t) for t in params]
    for t, g in zip(tparams, grads):
        t.grad = g
    opt = torch.optim.Adam(tparams, fused=True, **ADAM)
    group = opt.param_groups[0]

    def step():
        group["maximize"] = not group["maximize"]
        opt.step()

    return step


def deepspeed_available() -> bool:
    try:
        importlib.import_module("deepspeed.ops.adam")
    except Exception:  # noqa: BLE001 -- absent, or broken in this environment: skipped alike
        return False
    return True


def deepspeed_step(case: Case, params, grads):
    """One ``DeepSpeedCPUAdam`` step on the tensors themselves (float32 states; bfloat16 params
    are read and written in place, without master weights: DeepSpeed's CPU op has no master
    slot). Compiles DeepSpeed's op on first use."""
    torch = _torch()
    from deepspeed.ops.adam import DeepSpeedCPUAdam  # noqa: PLC0415 -- optional

    tparams = [torch.nn.Parameter(t) for t in params]
    for t, g in zip(tparams, grads):
        t.grad = g
    opt = DeepSpeedCPUAdam(tparams, adamw_mode=False, **ADAM)
    return opt.step


def probe_step(case: Case):
    """The bandwidth probe for the case's byte count: 4 float32 reads and 3 writes per element
    over ``nbytes / 28`` elements (28 bytes each), so that it moves what the rule must. It runs
    on the threads that ``fusedopt.torch``'s steps run on (marked as a torch caller: OpenMP's,
    under "auto"), so that torch's spinning OpenMP threads beside it slow it no more than they
    slow the step it bounds."""
    n = max(1, round(case.nbytes() / 28))
    lists = probe_arrays([n], 4)
    from ..torch._bridge import on_torch_threads  # noqa: PLC0415 -- imports torch

    return on_torch_threads(lambda: _core.stream(*lists, 4, 3))


def symmetric(timer, fns: dict) -> dict:
    """``timer(fns)`` in the given order and in the reverse order, the two medians averaged:
    round-robin in one order lets each column always follow the same other one (a column that
    leaves spinning threads behind slows the next); with both orders each follows every other."""
    a = timer(fns)
    b = timer(dict(reversed(list(fns.items()))))
    return {k: (a[k] + b[k]) / 2 for k in fns}


def compare(case: Case, timer, with_deepspeed: bool):
    """Times of every column (seconds per step), interleaved in both orders (``symmetric``)."""
    params, grads = make_tensors(case)
    fns = {"fusedopt": fusedopt_step(case, params, grads), "probe": probe_step(case)}
    tp, tg = make_tensors(case)  # torch gets its own tensors: it may not share fusedopt's
    fns["torch"] = torch_step(case, tp, tg)
    if with_deepspeed:
        dp, dg = make_tensors(case)
        fns["deepspeed"] = deepspeed_step(case, dp, dg)
    return symmetric(timer, fns)


def _block(ctx: Context, with_deepspeed: bool):
    torch = _torch()
    torch.set_num_threads(_core.get_num_threads())
    labels = {"fusedopt": "fusedopt.torch.Adam", "torch": "torch Adam(fused=True)",
              "deepspeed": "DeepSpeedCPUAdam", "probe": "bandwidth probe (same bytes)"}
    blocks = []
    for case in cases(ctx.quick, ctx.sizes if ctx.sizes_given else None):
        t = compare(case, ctx.timer, with_deepspeed)
        rows = []
        for k in ("fusedopt", "torch", "deepspeed", "probe"):
            if k in t:
                rows.append([labels[k], us(t[k]), gbs(case.nbytes(), t[k]),
                             f"{t['probe'] / t[k]:.0%}", f"{t[k] / t['fusedopt']:.2f}"])
        plural = "s" if len(case.sizes) > 1 else ""
        title = (f"torch: {case.name} ({len(case.sizes)} tensor{plural}, "
                 f"{case.bytes_per_element} bytes/element for fusedopt)")
        blocks.append(f"{title}\n" + format_table(
            ["implementation", "us", "GB/s (fusedopt's bytes)", "% of probe", "time / fusedopt"],
            rows))
    return blocks


def timed_iteration(model, opt, x, y) -> tuple[float, float]:
    """Seconds of one training iteration (zero_grad, forward, MSE loss, backward, step) and of
    its step."""
    torch = _torch()
    t0 = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


#: The training loop's columns: (label, optimizer, the pool's waits -- (idle_spin_us,
#: block_after_us, threading) of ``_core._pool_waits`` -- or None for the default: threading
#: 'auto', which runs fusedopt.torch's steps on the OpenMP runtime's threads).
LOOP_IMPLS = {
    "fusedopt": ("fusedopt.torch.Adam (auto: OpenMP's threads)", "fusedopt", None),
    "fusedopt-pool": ("  on fusedopt's pool, idle spin 200 us", "fusedopt", (200, 100, "pool")),
    "fusedopt-long": ("  on the pool, idle spin 2 ms (as before)", "fusedopt",
                      (2000, 100, "pool")),
    "fusedopt-none": ("  on the pool, idle spin 0", "fusedopt", (0, 100, "pool")),
    "torch": ("torch Adam(fused=True)", "torch", None),
}


def fixed_malloc_thresholds() -> bool:
    """Fixes glibc's mmap and trim thresholds for the rest of the process (256 MiB, 1 GiB):
    with its dynamic ones, the grads that each backward pass allocates anew (16 MiB per layer
    here) are mmapped or trimmed and come back as fresh pages, at a cost of ~10-100 ms per
    iteration, in whichever column's allocations happen to sit at the heap's top (measured here:
    always the first model built, whatever its optimizer). A benchmark's setting, never the
    library's. False where the C library has no mallopt (not glibc)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 256 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def training_loop(quick: bool = False, rounds: int = 0) -> tuple[dict, int]:
    """Median seconds of one iteration (zero_grad, forward, backward, step) and of its step,
    per column of LOOP_IMPLS: ``({key: (iteration, step)}, parameters)``. Each column trains its
    own copy of an MLP (4 layers of width 2048, 1024 with --quick; batch 64) with the same
    threads; the columns take turns, in an order that rotates each round. glibc's malloc
    thresholds are fixed first (``fixed_malloc_thresholds``)."""
    torch = _torch()
    import fusedopt.torch as ft  # noqa: PLC0415 -- imports torch

    fixed_malloc_thresholds()
    width = 1024 if quick else 2048
    rounds = rounds or (5 if quick else 15)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, width, generator=g), torch.randn(64, width, generator=g)
    runs = {}
    for key, (_, kind, waits) in LOOP_IMPLS.items():
        torch.manual_seed(0)
        model = torch.nn.Sequential(*[m for _ in range(4) for m in
                                      (torch.nn.Linear(width, width), torch.nn.ReLU())][:-1])
        opt = ft.Adam(model.parameters(), **ADAM) if kind == "fusedopt" else \
            torch.optim.Adam(model.parameters(), fused=True, **ADAM)
        runs[key] = (model, opt, waits)
    keys = list(runs)
    times: dict = {k: ([], []) for k in keys}
    default = _core._pool_waits()
    try:
        for r in range(2 + rounds):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                model, opt, waits = runs[key]
                _core._pool_waits(*(waits or default))
                it, st = timed_iteration(model, opt, x, y)
                if r >= 2:
                    times[key][0].append(it)
                    times[key][1].append(st)
    finally:
        _core._pool_waits(*default)
    n = sum(p.numel() for p in runs["torch"][0].parameters())
    return {k: (statistics.median(a), statistics.median(b)) for k, (a, b) in times.items()}, n


def loop_block(quick: bool = False) -> str:
    """The training loop's table."""
    t, n = training_loop(quick)
    base = t["fusedopt"]
    rows = [[label, f"{t[k][0] * 1e3:.2f}", f"{t[k][1] * 1e3:.2f}", f"{t[k][1] / t[k][0]:.0%}",
             f"{t[k][0] / base[0]:.2f}", f"{t[k][1] / base[1]:.2f}"]
            for k, (label, _, _) in LOOP_IMPLS.items()]
    title = (f"torch: a training loop (MLP, {n:.2e} parameters, Adam float32, "
             f"{_core.get_num_threads()} threads): iteration = zero_grad + forward + backward + "
             "step (glibc's malloc thresholds fixed: fixed_malloc_thresholds)")
    return f"{title}\n" + format_table(
        ["implementation", "iteration ms", "step ms", "step share", "iteration / fusedopt",
         "step / fusedopt"], rows)


def section(ctx: Context):
    """fusedopt vs torch.optim.Adam(fused=True), one table per case, a training loop, and the
    FSDP2 CPU-offload step; nothing without torch."""
    if not ctx.with_torch:
        return ["torch: skipped (torch is not installed, or --no-torch)"]
    if ctx.sizes_given:
        own = ["torch: a training loop: skipped (--sizes given; the loop has its own model)",
               "torch FSDP2: skipped (--sizes given; the FSDP2 step has its own model)"]
    else:
        own = [loop_block(ctx.quick), fsdp_block(ctx.quick)]
    return _block(ctx, with_deepspeed=False) + own


def section_deepspeed(ctx: Context):
    """As ``section``, with DeepSpeedCPUAdam (named only: ``--rules deepspeed``)."""
    if not ctx.with_torch:
        return ["deepspeed: skipped (torch is not installed, or --no-torch)"]
    if not deepspeed_available():
        return ["deepspeed: skipped (deepspeed is not importable; pip install deepspeed)"]
    return _block(ctx, with_deepspeed=True)


# ---------------------------------------------------------------------------------------------
# FSDP2 with CPU offload: 2 gloo processes

FSDP_IMPLS = {"fusedopt": "fusedopt.torch.AdamW", "torch": "torch AdamW(fused=True)"}


def _fsdp_worker(rank: int, port: int, out: str, width: int, repeats: int) -> None:
    """One rank: two copies of the model under FSDP2 with CPU offload, one per optimizer,
    stepped alternately; rank 0 writes the median times (seconds) to ``out``."""
    import datetime  # noqa: PLC0415

    torch = _torch()
    import torch.distributed as dist  # noqa: PLC0415
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard  # noqa: PLC0415

    import fusedopt.torch as ft  # noqa: PLC0415

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=600))
    torch.set_num_threads(1)
    _core.set_num_threads(1)
    policy = CPUOffloadPolicy(pin_memory=False)  # pinning needs an accelerator
    models = {}
    for name in FSDP_IMPLS:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(),
                                    torch.nn.Linear(width, width), torch.nn.ReLU(),
                                    torch.nn.Linear(width, width))
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, offload_policy=policy)
        fully_shard(model, offload_policy=policy)
        kw = dict(lr=1e-4, weight_decay=1e-2)
        opt = ft.AdamW(model.parameters(), **kw) if name == "fusedopt" else \
            torch.optim.AdamW(model.parameters(), fused=True, **kw)
        models[name] = (model, opt)
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(32, width, generator=g), torch.randn(32, width, generator=g)
    times: dict = {name: {"step": [], "optimizer": []} for name in models}
    for r in range(3 + repeats):
        for name, (model, opt) in models.items():
            dist.barrier()
            it, st = timed_iteration(model, opt, x, y)
            if r >= 3:
                times[name]["step"].append(it)
                times[name]["optimizer"].append(st)
    local = sum(p.to_local().numel() for p in models["fusedopt"][0].parameters())
    if rank == 0:
        med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
        Path(out).write_text(json.dumps({"times": med, "elements_per_rank": local}))
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


def fsdp_offload(quick: bool = False, timeout: float = 600.0) -> dict:
    """Runs the 2 ranks; ``{"times": {impl: {"step": s, "optimizer": s}}, "elements_per_rank":
    n}``. Raises RuntimeError (with the ranks' output) if a rank fails."""
    width, repeats = (512, 5) if quick else (1024, 9)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    here = str(Path(__file__).resolve().parents[2])  # the ranks import this fusedopt
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "fsdp.json")
        procs = [subprocess.Popen([sys.executable, "-m", __name__, "fsdp-worker", str(r),
                                   str(port), out, str(width), str(repeats)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for r in range(2)]
        logs = []
        try:
            for p in procs:
                logs.append(p.communicate(timeout=timeout)[0])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if any(p.returncode for p in procs) or not os.path.exists(out):
            raise RuntimeError("FSDP2 ranks failed:\n" + "\n".join(log[-2000:] for log in logs))
        return json.loads(Path(out).read_text())


def fsdp_block(quick: bool = False) -> str:
    """The FSDP2 CPU-offload table (or a line saying why it was skipped)."""
    torch = _torch()
    if not torch.distributed.is_available():
        return "torch FSDP2: skipped (torch.distributed is not available)"
    try:
        res = fsdp_offload(quick)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        return f"torch FSDP2: skipped ({str(e).splitlines()[0]})"
    t = res["times"]
    rows = [[FSDP_IMPLS[k], f"{t[k]['step'] * 1e3:.2f}", f"{t[k]['optimizer'] * 1e3:.2f}",
             f"{t[k]['optimizer'] / t[k]['step']:.0%}",
             f"{t[k]['optimizer'] / t['fusedopt']['optimizer']:.2f}"] for k in FSDP_IMPLS]
    title = (f"torch FSDP2: one CPU-offload training step, 2 gloo ranks, "
             f"{res['elements_per_rank']:.2e} elements per rank, 1 thread each")
    return f"{title}\n" + format_table(
        ["implementation", "step ms", "optimizer ms", "optimizer share", "optimizer / fusedopt"],
        rows)


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "fsdp-worker":
    _fsdp_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]),
                 int(sys.argv[6]))
