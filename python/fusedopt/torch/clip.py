"""``clip_grad_norm_`` with torch's semantics on fusedopt's fused, deterministic global norm.

Layer: algorithms (the torch front door; imports torch at its top level).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .. import ops
from . import _bridge

__all__ = ["clip_grad_norm_", "NonFiniteNormError"]


class NonFiniteNormError(RuntimeError, ValueError):
    """The total norm is NaN or infinite and ``error_if_nonfinite=True``: torch raises
    RuntimeError, fusedopt ValueError; this is both. Nothing was scaled."""


@_bridge.on_torch_threads
def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None
                    ) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``, fused: one pass for the norm, one for the scaling.

    The L2 norm of all the gradients, as one vector, is accumulated in float64 in fixed blocks
    added in a fixed order (``fusedopt.ops.global_norm``): the same bits for any number of
    threads. If it exceeds ``max_norm`` every gradient is scaled in place by
    ``max_norm / (norm + 1e-6)``. Returns the norm as a 0-d tensor of the gradients' dtype
    (float32 if they mix float32 and float64). ``error_if_nonfinite=True`` raises
    ``NonFiniteNormError`` (a RuntimeError, as torch raises, and a ValueError) on a NaN or
    infinite norm, scaling nothing.

    float16 and bfloat16 gradients (which the fused norm does not read) are widened into float32
    temporaries for the norm, one per gradient, alive during the call (exact: the norm is that
    of their values, with the same blocks and order); they are then scaled in place by torch's
    ``mul_`` (float32 math, rounded to nearest even), the float32/float64 ones by the fused
    kernel.

    Only ``norm_type=2`` is fused. Other norm types, gradients that are not dense float32,
    float64, float16 or bfloat16 CPU/CUDA tensors, and DTensor gradients (whose norm needs a collective) fall back
    to ``torch.nn.utils.clip_grad_norm_``. ``foreach`` is accepted for torch's signature and
    only passed on to that fallback.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    fused = float(norm_type) == 2.0 and all(
        type(g) is torch.Tensor and g.layout == torch.strided
        and (g.dtype in _bridge.DTYPES or g.dtype in _bridge.HALF)
        and g.is_contiguous() and g.device == grads[0].device
        and g.device.type in ("cpu", "cuda") for g in grads)
    if not fused:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type,
                                              error_if_nonfinite, foreach)
    if not float(max_norm) >= 0.0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    try:
        if any(g.dtype in _bridge.HALF for g in grads):
            norm = _clip_16bit(grads, float(max_norm), bool(error_if_nonfinite))
        else:
            norm = ops.clip_by_global_norm_([_bridge.array(g) for g in grads],
                                            float(max_norm), eps=1e-6,
                                            error_if_nonfinite=bool(error_if_nonfinite))
    except ValueError as e:
        if "nothing was clipped" not in str(e):
            raise
        raise NonFiniteNormError(
            f"The total norm of order 2.0 for gradients from `parameters` is non-finite, so it "
            f"cannot be clipped ({e}). To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`") from None
    dtype = grads[0].dtype if all(g.dtype == grads[0].dtype for g in grads) else torch.float32
    return torch.tensor(norm, dtype=dtype, device=grads[0].device)


def _clip_16bit(grads: list, max_norm: float, error_if_nonfinite: bool) -> float:
    """``ops.clip_by_global_norm_`` for gradients some of which are float16/bfloat16: the norm
    over float32 widenings of those, the same scaling rule (eps 1e-6)."""
    wide = [_bridge.array(g.float() if g.dtype in _bridge.HALF else g) for g in grads]
    norm = ops.global_norm(wide)
    del wide
    if error_if_nonfinite and not math.isfinite(norm):
        raise ValueError(f"the global norm of arrays is {norm}; nothing was clipped")
    if norm + 1e-6 == 0.0:
        return norm
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0 or not math.isfinite(norm):
        full = [_bridge.array(g) for g in grads if g.dtype not in _bridge.HALF]
        if full:
            ops.backend_of(full).scale_(full, coef)
        for g in grads:
            if g.dtype in _bridge.HALF:
                g.mul_(coef)
    return norm
