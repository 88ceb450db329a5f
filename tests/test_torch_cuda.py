"""fusedopt.torch with CUDA tensors: the CUDA kernels (fusedopt._cuda) through DLPack, on torch's
current stream, without host synchronization (skipped where torch is absent).

What runs where. CUDA torch tensors cannot exist on a machine without a GPU, so here:

* the optimizers' CUDA path (``rec.cuda``: CuPy views, grads viewed on torch's stream, AMP's
  scale as a device array, the launch inside ``_bridge.cuda_stream``) runs on the host
  emulation of the CUDA kernels (tests/cuda_host/emulation.py): ``_bridge.array`` hands out the
  emulation's stand-in CuPy arrays over the CPU tensors' memory, so the real CUDA kernel sources
  (compiled for the host) update the torch tensors, and the run must equal the CPU kernels'
  bit for bit;
* the DLPack export itself (``_bridge.array`` of a CUDA tensor) is checked with a fake tensor
  and a fake CuPy: ``cupy.from_dlpack`` is called inside CuPy's ``ExternalStream`` of
  ``torch.cuda.current_stream(device)``.

The ``gpu``-marked tests (bench/gpu_check.sh runs them on a machine with a GPU and CUDA torch)
train on real CUDA tensors against the CPU, with ``torch.cuda.set_sync_debug_mode("error")``
(any host synchronization torch makes raises), and with GradScaler and bfloat16 master weights.
Not covered without a GPU: CuPy's own DLPack import and stream handling.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import fusedopt.torch as ft  # noqa: E402
from fusedopt.torch import _bridge  # noqa: E402

from test_torch_optim import TOL, digits, groups, loss_of, mlp  # noqa: E402


def train(model, opt, x, y, steps, scaler=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model, x, y, {})
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


def emulate(monkeypatch):
    """CPU tensors reach fusedopt._cuda's host emulation as if they were CUDA tensors; returns
    the list where the devices of the streams entered are recorded."""
    if shutil.which("g++") is None:
        pytest.skip("no g++ for the host build of the CUDA kernels")
    from cuda_host import emulation  # noqa: PLC0415

    emulation.install(monkeypatch)
    real = _bridge.array
    monkeypatch.setattr(_bridge, "array", lambda t, where="tensor": real(t, where).view(
        emulation.ndarray))
    streams = []

    @contextlib.contextmanager
    def stream(t):
        streams.append(t.device)
        yield

    monkeypatch.setattr(_bridge, "cuda_stream", stream)
    return streams


@pytest.fixture
def emulated(monkeypatch):
    return emulate(monkeypatch)


def run(dtype, steps=4, scaler=None, **kw):
    x, y = digits(dtype if dtype != torch.bfloat16 else torch.float32)
    model = mlp(dtype)
    if dtype == torch.bfloat16:
        x = x.to(dtype)
    opt = ft.AdamW(groups(model, {}), lr=1e-2, amsgrad=True, **kw)
    train(model, opt, x, y, steps, scaler)
    return model, opt


def same_bits(a, b):
    for p, q in zip(a[0].parameters(), b[0].parameters()):
        assert torch.equal(p.detach(), q.detach())
    for p, q in zip(a[0].parameters(), b[0].parameters()):
        sa, sb = a[1].state[p], b[1].state[q]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("dtype, kw", [(torch.float32, {}), (torch.float64, {}),
                                       (torch.bfloat16, {"master_weights": True})],
                         ids=["f32", "f64", "bf16-master"])
def test_the_cuda_path_on_the_host_emulation_equals_the_cpu_kernels(dtype, kw, monkeypatch):
    if dtype == torch.bfloat16:
        pytest.importorskip("ml_dtypes")
    cpu = run(dtype, **kw)
    with monkeypatch.context() as m:
        entered = emulate(m)
        cuda = run(dtype, **kw)
        recs = list(cuda[1]._records.values())
        assert recs and all(r.cuda for r in recs)       # the CUDA path was taken
        assert not cuda[1]._plans                        # (plans are for CPU tensors only)
        assert len(entered) == 2 * 4                     # one launch per group and step
    same_bits(cpu, cuda)


def test_grad_scaler_on_the_cuda_path_of_the_host_emulation(emulated):
    ref = run(torch.float32, steps=3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled = run(torch.float32, steps=3, scaler=scaler)
    assert scaler.get_scale() == 2.0**10
    # the scale is a power of two: unscaling in the kernel's pass gives the same bits
    same_bits(ref, scaled)
    assert len(emulated) == 2 * 6


def test_a_cuda_tensor_is_exported_on_torchs_current_stream(monkeypatch):
    calls = []

    class ExternalStream:
        current = None

        def __init__(self, ptr, device_id=-1):
            self.ptr, self.device_id = ptr, device_id

        def __enter__(self):
            ExternalStream.current = (self.ptr, self.device_id)
            return self

        def __exit__(self, *exc):
            ExternalStream.current = None

    def from_dlpack(t):
        calls.append((t, ExternalStream.current))
        return np.zeros(3, np.float32)

    fake_cupy = types.SimpleNamespace(from_dlpack=from_dlpack,
                                      cuda=types.SimpleNamespace(ExternalStream=ExternalStream))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    asked = []

    def current_stream(device):
        asked.append(device)
        return types.SimpleNamespace(cuda_stream=0xBEEF)

    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)

    class CudaTensor:  # what _bridge.array reads of a tensor
        dtype = torch.float32
        device = types.SimpleNamespace(type="cuda", index=1)

        def detach(self):
            return self

    t = CudaTensor()
    _bridge.array(t)
    assert calls == [(t, (0xBEEF, 1))] and asked == [t.device]


# ---------------------------------------------------------------------------------------------
# On a GPU (bench/gpu_check.sh)


def cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    pytest.importorskip("cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, kw", [(torch.float32, {}),
                                       (torch.bfloat16, {"master_weights": True})],
                         ids=["f32", "bf16-master"])
def test_cuda_steps_make_no_host_sync_and_equal_the_cpu(dtype, kw):
    cuda_or_skip()
    x, y = digits(torch.float32)
    out = []
    for device in ("cpu", "cuda"):
        model = mlp(dtype).to(device)
        opt = ft.AdamW(groups(model, {}), lr=1e-2, amsgrad=True, **kw)
        xd, yd = x.to(device, dtype), y.to(device)
        train(model, opt, xd, yd, 2)           # first steps: states made, CuPy compiles
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                opt.zero_grad()
                loss_of(model, xd, yd, {}).backward()
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        out.append(model)
    tol = TOL[torch.float32] if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for p, q in zip(*(m.parameters() for m in out)):
        torch.testing.assert_close(p.detach().float(), q.detach().cpu().float(), **tol)


@pytest.mark.gpu
def test_cuda_grad_scaler_equals_the_unscaled_run():
    cuda_or_skip()
    x, y = digits(torch.float32)
    out = []
    for scaler in (None, torch.amp.GradScaler("cuda", init_scale=2.0**10)):
        model = mlp(torch.float32).cuda()
        opt = ft.AdamW(groups(model, {}), lr=1e-2)
        train(model, opt, x.cuda(), y.cuda(), 4, scaler)
        out.append(model)
    for p, q in zip(*(m.parameters() for m in out)):
        assert torch.equal(p, q)
