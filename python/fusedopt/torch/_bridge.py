"""How torch tensors reach the kernels of ``fusedopt.ops``: zero-copy array views, checks.

Layer: algorithms (the torch front door; imports torch at its top level, which is allowed here
alone because ``import fusedopt`` never imports ``fusedopt.torch``).

CPU tensors become NumPy arrays with ``Tensor.numpy()`` (a view of the same memory, no copy);
bfloat16 ones, which NumPy lacks, through an int16 view reinterpreted as ``ml_dtypes.bfloat16``
(imported when the first bfloat16 tensor is seen). CUDA tensors become CuPy arrays with
``cupy.from_dlpack`` (also a view). DTensor params (FSDP2)
are stepped through their local shard. Everything a kernel would refuse is refused here first,
with the param named, so that a step with several kernel calls changes nothing when one of them
would fail.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from .. import ops


_DTensor: Any = None
try:  # DTensor (FSDP2's sharded params) exists where torch.distributed does
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # pragma: no cover - torch built without distributed
    pass

#: The dtypes the kernels take: float32 and float64, and the 16-bit ones (float32 states).
DTYPES = (torch.float32, torch.float64)
HALF = (torch.float16, torch.bfloat16)
#: The names of the kernels' dtypes (``fusedopt.ops.tensor_plan``).
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
               torch.bfloat16: "bfloat16"}
_bfloat16: Any = None  # ml_dtypes.bfloat16, once a bfloat16 tensor has been seen


def state_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype of the optimizer state of a param: float32 for 16-bit params, else its own."""
    return torch.float32 if t.dtype in HALF else t.dtype


def bfloat16(where: str) -> Any:
    """``ml_dtypes.bfloat16``, imported on first use (ImportError naming ``where``)."""
    global _bfloat16
    if _bfloat16 is None:
        try:
            import ml_dtypes  # noqa: PLC0415 -- only bfloat16 tensors need it
        except ImportError as e:
            raise ImportError(f"{where}: bfloat16 tensors reach the kernels as "
                              "ml_dtypes.bfloat16 arrays; pip install ml_dtypes") from e
        _bfloat16 = ml_dtypes.bfloat16
    return _bfloat16


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor itself, or the local shard of a DTensor."""
    if _DTensor is not None and isinstance(t, _DTensor):
        return t.to_local()
    return t


def check_param(p: Any, where: str) -> None:
    """Refuse what the kernels cannot update in place (TypeError/ValueError naming ``where``)."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where}: must be a torch.Tensor, got {type(p).__name__}")
    t = local(p)
    if t.layout != torch.strided:
        raise TypeError(f"{where}: {t.layout} params are not supported (dense tensors only)")
    if t.device.type == "meta":
        raise ValueError(f"{where}: is a meta tensor (no data to update); materialize it first")
    if t.dtype not in DTYPES and t.dtype not in HALF:
        raise TypeError(f"{where}: dtype {t.dtype} is not supported (float32, float64, "
                        "float16 or bfloat16)")
    if t.dtype == torch.bfloat16:
        bfloat16(where)
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: device {t.device} is not supported (cpu or cuda)")
    if not t.is_contiguous():
        raise ValueError(f"{where}: is not contiguous (its stride is {t.stride()}); the "
                         "kernels update contiguous tensors in place")


def check_group_devices(params: list, where: str) -> None:
    """All params of one group on one device (one kernel call per group)."""
    devices = {local(p).device for p in params if isinstance(p, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError(f"{where}: params on different devices in one group "
                         f"({', '.join(sorted(map(str, devices)))}); put them in separate groups")


def grad_array(p: torch.Tensor, pview: Any, where: str) -> Any:
    """A read-only array view of ``p.grad`` (a contiguous copy of a non-contiguous grad),
    checked against the param's view."""
    g: Any = p.grad
    if g.layout != torch.strided:
        raise TypeError(f"{where}: sparse gradients are not supported (got {g.layout})")
    g = local(g)
    if g.dtype != p.dtype or g.shape != local(p).shape:
        raise TypeError(f"{where}: its grad has dtype {g.dtype} and shape {tuple(g.shape)}, "
                        f"the param {p.dtype} and {tuple(local(p).shape)}")
    if g.device != local(p).device:
        raise ValueError(f"{where}: its grad is on {g.device}, the param on {local(p).device}")
    if not g.is_contiguous():
        g = g.contiguous()
    return array(g, where)


def array(t: torch.Tensor, where: str = "tensor") -> Any:
    """A NumPy (CPU) or CuPy (CUDA) array sharing ``t``'s memory (bfloat16: an
    ``ml_dtypes.bfloat16`` view of its bits). A CUDA tensor is exported by DLPack to CuPy on
    torch's current stream of its device (see ``cuda_stream``): the exporter then has no other
    stream to order after, and nothing waits on the host."""
    t = t.detach()
    bf16 = t.dtype == torch.bfloat16
    if bf16:
        t = t.view(torch.int16)
    if t.device.type == "cpu":
        a = t.numpy()
    else:
        import cupy  # noqa: PLC0415 -- only CUDA tensors need CuPy

        with cuda_stream(t):
            a = cupy.from_dlpack(t)
        if bf16:
            try:
                return a.view(bfloat16(where))
            except (TypeError, ValueError) as e:
                raise TypeError(f"{where}: this CuPy cannot hold bfloat16 arrays ({e})") from e
    return a.view(bfloat16(where)) if bf16 else a


def cuda_stream(t: torch.Tensor) -> Any:
    """A context in which CuPy works on torch's current stream of ``t``'s device (the kernels
    are launched there, and DLPack exports are made for it)."""
    import cupy  # noqa: PLC0415

    return cupy.cuda.ExternalStream(torch.cuda.current_stream(t.device).cuda_stream,
                                    t.device.index)


def amp_arrays(grad_scale: Any, like: torch.Tensor) -> dict:
    """AMP's ``grad_scale`` and a zero ``found_inf`` (GradScaler's inf check has been read on
    the host already) as float32 arrays of one element beside ``like``: for a CUDA param, CuPy
    views of device tensors (GradScaler's scale is not read on the host)."""
    if like.device.type != "cpu" and isinstance(grad_scale, torch.Tensor):
        scale = grad_scale.detach().reshape(1).to(device=like.device, dtype=torch.float32)
    else:
        scale = torch.tensor([float(grad_scale)], dtype=torch.float32, device=like.device)
    return {"grad_scale": array(scale), "found_inf": array(torch.zeros(1, device=like.device))}


def on_torch_threads(func):
    """``func`` with the calling thread marked as a step of ``fusedopt.torch`` for its duration:
    under ``fusedopt.set_threading("auto")`` (the default) its CPU kernel calls then run on the
    OpenMP runtime's threads -- torch's own when both load one libgomp, awake after torch's
    work -- instead of beside them on fusedopt's pool."""
    @functools.wraps(func)
    def marked(*args: Any, **kwargs: Any) -> Any:
        before = ops.mark_torch_caller(True)
        try:
            return func(*args, **kwargs)
        finally:
            ops.mark_torch_caller(before)
    return marked
