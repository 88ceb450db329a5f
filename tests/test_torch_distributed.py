"""fusedopt.torch under torch.distributed: ZeroRedundancyOptimizer and FSDP2 (``fully_shard``).

Each test starts 2 processes (this file run as a script) on the gloo backend on localhost,
trains a small MLP on scikit-learn's digits, each rank on its half of the batch, and saves the
full parameters. Every rank must end with the same parameters (bit for bit), equal to a
single-process run on the whole batch within per-dtype tolerances: the ranks' gradients are
averaged by an all-reduce (DDP) or a reduce-scatter (FSDP2), which rounds differently from one
backward pass on the whole batch (a few ulps per step).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import fusedopt

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 2
STEPS = 12
TIMEOUT = 60  # seconds, for the whole group of processes
#: ZeroRedundancyOptimizer(optimizer_class=fusedopt.torch.AdamW) over DDP; FSDP2; FSDP2 with
#: CPUOffloadPolicy(pin_memory=False). On a machine without an accelerator the default
#: CPUOffloadPolicy() (pin_memory=True) fails in fully_shard itself, before any optimizer:
#: FSDPParam._init_sharded_param calls Tensor.pin_memory(), which raises "RuntimeError: Cannot
#: access accelerator device when none is available" (torch 2.13).
MODES = ("zero", "fsdp", "fsdp-offload")
DTYPES = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16}
#: bfloat16: the params (DTensor shards under FSDP2) are bfloat16 with float32 master weights
#: (``master_weights=True``); the grads are reduced in bfloat16, whose rounding (8 bits) differs
#: from one backward pass on the whole batch by an ulp or two of a gradient per step, and the
#: params are the masters rounded to bfloat16: agreement within a few bfloat16 ulps of the
#: largest weights after 12 steps.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
# Where this process imports fusedopt from (the source tree or the installed wheel): the ranks
# import the same one.
PYTHON_DIR = Path(fusedopt.__file__).resolve().parents[1]


def data(dtype):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:128] / 16.0, dtype=dtype), torch.tensor(y[:128])


def mlp(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 10)).to(dtype)


def make_optimizer(params, dtype):
    import fusedopt.torch as ft

    return ft.AdamW(params, lr=1e-2, weight_decay=1e-2, amsgrad=True,
                    master_weights=dtype == torch.bfloat16)


def loss_of(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


def single_process(dtype):
    x, y = data(dtype)
    model = mlp(dtype)
    opt = make_optimizer(model.parameters(), dtype)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


# ---------------------------------------------------------------------------------------------
# The worker (this file run as a script)


def worker(rank: int, dt: str, port: int, out: str) -> None:
    """Every mode in turn on one process group."""
    import datetime

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT))
    torch.set_num_threads(1)
    for mode in MODES:
        train_mode(rank, mode, DTYPES[dt], out)
    # Both ranks are done with every collective before either tears gloo down; then leave without
    # running the interpreter's and torch's exit-time destructors: a rank that exited while the
    # other still tore down its pairs once aborted ("terminate called without an active
    # exception") after its results were written.
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


def train_mode(rank: int, mode: str, dtype, out: str) -> None:
    x, y = data(dtype)
    half = len(y) // WORLD
    x, y = x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]
    model = mlp(dtype)
    if mode == "zero":
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        import fusedopt.torch as ft

        net = DistributedDataParallel(model)
        opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=ft.AdamW, lr=1e-2,
                                      weight_decay=1e-2, amsgrad=True,
                                      master_weights=dtype == torch.bfloat16)
        assert isinstance(opt.optim, ft.AdamW)
    else:
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        policy = CPUOffloadPolicy(pin_memory=False) if mode == "fsdp-offload" else None
        kw = {"offload_policy": policy} if policy is not None else {}
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, **kw)
        net = fully_shard(model, **kw)
        opt = make_optimizer(model.parameters(), dtype)
        from torch.distributed.tensor import DTensor

        assert all(isinstance(p, DTensor) for p in model.parameters())
    for _ in range(STEPS):
        opt.zero_grad()
        loss_of(net, x, y).backward()
        opt.step()
    full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    states = (opt.optim.state if mode == "zero" else opt.state).values()
    steps = [float(s["step"]) for s in states]
    # 16-bit params: every param's state holds its float32 master, of which it is the rounding
    masters = [(opt.state[p]["master_param"], p) for p in model.parameters()
               if p.dtype == torch.bfloat16] if mode != "zero" else []
    assert mode == "zero" or dtype != torch.bfloat16 or len(masters) == 4, mode
    for m, p in masters:
        m, p = (t.to_local() if hasattr(t, "to_local") else t for t in (m, p))
        assert m.dtype == torch.float32 and torch.equal(m.to(torch.bfloat16), p), mode
    torch.save({"params": [p.detach().cpu() for p in full], "steps": steps},
               os.path.join(out, f"{mode}-rank{rank}.pt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(dt: str, tmp_path) -> dict:
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PYTHON_DIR), env.get("PYTHONPATH")]))
    procs = [subprocess.Popen([sys.executable, __file__, str(r), dt, str(port),
                               str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the {WORLD} processes did not finish in {TIMEOUT} s")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-4000:]}"
    return {mode: [torch.load(tmp_path / f"{mode}-rank{r}.pt") for r in range(WORLD)]
            for mode in MODES}


@pytest.mark.parametrize("dt", DTYPES)
def test_two_ranks_train_like_one_process(dt, tmp_path):
    dtype = DTYPES[dt]
    alone = single_process(dtype)
    for mode, results in launch(dt, tmp_path).items():
        first = results[0]["params"]
        for other in results[1:]:
            for a, b in zip(first, other["params"]):
                assert torch.equal(a, b), mode
        # every param's state counted every step (ZeRO: the params this rank owns)
        assert all(r["steps"] for r in results), mode
        assert all(s == STEPS for r in results for s in r["steps"]), mode
        for a, b in zip(first, alone):
            assert a.dtype == dtype
            torch.testing.assert_close(a, b, **TOL[dtype], msg=mode)


def test_bench_fsdp_offload_block():
    """The FSDP2 CPU-offload case of the torch bench section (2 gloo ranks, --quick model):
    one row per optimizer, the optimizer's time inside the step's."""
    from fusedopt.benchmarks import vs_torch

    res = vs_torch.fsdp_offload(quick=True)
    assert res["elements_per_rank"] == 3 * (512 * 512 + 512) // WORLD
    for impl in vs_torch.FSDP_IMPLS:
        t = res["times"][impl]
        assert 0 < t["optimizer"] < t["step"], (impl, t)
    block = vs_torch.fsdp_block(quick=True)
    assert block.startswith("torch FSDP2: one CPU-offload training step"), block
    assert all(label in block for label in vs_torch.FSDP_IMPLS.values()), block


if __name__ == "__main__":
    sys.path.insert(0, str(PYTHON_DIR))
    worker(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4])
