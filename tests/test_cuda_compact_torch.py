"""fusedopt.torch with CUDA tensors and ``state_dtype`` (issue 10): bfloat16 and 8-bit state
(uint8 codes and float32 absmax tensors on the param's device), stochastic rounding, through
the CUDA kernels (csrc/cuda/compact.cu) -- the CPU run's bits.

As in tests/test_torch_cuda.py: on the host emulation (the optimizers' CUDA path over CPU
tensors viewed as the emulation's CuPy arrays), and, ``gpu``-marked, on real CUDA tensors.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("ml_dtypes")

import fusedopt.torch as ft  # noqa: E402

from test_torch_cuda import cuda_or_skip, emulate, same_bits, train  # noqa: E402
from test_torch_optim import digits, groups  # noqa: E402
from test_torch_state_dtypes import mlp  # noqa: E402 -- 64-72-10: a weight of 8-bit state

CONFIGS = [("uint8", torch.float32, {}), ("bfloat16", torch.float32, {}),
           ("uint8", torch.bfloat16, {"stochastic_rounding": True}),
           ("bfloat16", torch.bfloat16, {"master_weights": True, "stochastic_rounding": True})]
IDS = ["u8-f32", "bf16-f32", "u8-bf16-sr", "bf16-bf16-master-sr"]


def run(state_dtype, dtype, kw, device="cpu", steps=4):
    x, y = digits(torch.float32)
    model = mlp(dtype).to(device)
    opt = ft.AdamW(groups(model, {}), lr=1e-2, amsgrad=True, state_dtype=state_dtype, seed=3,
                   **kw)
    train(model, opt, x.to(device, dtype), y.to(device), steps)
    return model, opt


def _compact_states(opt, state_dtype):
    want = torch.uint8 if state_dtype == "uint8" else torch.bfloat16
    return [k for st in opt.state.values() for k, v in st.items()
            if isinstance(v, torch.Tensor) and v.dtype == want]


@pytest.mark.parametrize("state_dtype, dtype, kw", CONFIGS, ids=IDS)
def test_cuda_path_with_compact_state_on_the_host_emulation_equals_cpu(state_dtype, dtype, kw,
                                                                     monkeypatch):
    cpu = run(state_dtype, dtype, kw)
    assert _compact_states(cpu[1], state_dtype)
    with monkeypatch.context() as m:
        entered = emulate(m)
        cuda = run(state_dtype, dtype, kw)
        recs = list(cuda[1]._records.values())
        assert recs and all(r.cuda for r in recs)  # the CUDA path was taken
        assert entered
    same_bits(cpu, cuda)


@pytest.mark.gpu
@pytest.mark.parametrize("state_dtype, dtype, kw", CONFIGS, ids=IDS)
def test_cuda_tensors_with_compact_state_equal_the_cpu(state_dtype, dtype, kw):
    cuda_or_skip()
    cpu = run(state_dtype, dtype, kw)
    cuda = run(state_dtype, dtype, kw, device="cuda")
    for st in cuda[1].state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                assert v.device.type == "cuda", k
    for p, q in zip(cpu[0].parameters(), cuda[0].parameters()):
        assert torch.equal(p.detach(), q.detach().cpu())
    for p, q in zip(cpu[0].parameters(), cuda[0].parameters()):
        sa, sb = cpu[1].state[p], cuda[1].state[q]
        assert sa.keys() == sb.keys()
        for k in sa:
            b = sb[k].cpu() if isinstance(sb[k], torch.Tensor) else sb[k]
            assert torch.equal(sa[k], b), k
