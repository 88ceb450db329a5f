"""fusedopt for PyTorch: drop-in ``torch.optim`` optimizers on the fused kernels.

Layer: algorithms (the torch front door). It imports torch at its top level, the only part of
fusedopt that may: ``import fusedopt`` never imports ``fusedopt.torch``; ``import
fusedopt.torch`` does (torch is an optional dependency, ``pip install fusedopt[torch]``).

    >>> import torch, fusedopt.torch
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = fusedopt.torch.AdamW(model.parameters(), lr=1e-3)   # was torch.optim.AdamW
    >>> model(torch.randn(8, 4)).pow(2).mean().backward()
    >>> opt.step(); opt.zero_grad()

``SGD, Adagrad, RMSprop, Adam, AdamW, Adamax``: torch.optim's signatures, defaults, parameter
groups, schedulers, hooks, ``state_dict`` format and ``GradScaler`` protocol (see
``fusedopt.torch.optimizers``); float32, float64, float16 and bfloat16 params on the CPU (CUDA
tensors through CuPy), the 16-bit ones with float32 states and, with ``master_weights=True``,
float32 master weights in the state (``master_param``). ``clip_grad_norm_``: torch's, with a deterministic fused norm. They also serve as the
``optimizer_class`` of ``torch.distributed.optim.ZeroRedundancyOptimizer`` and under FSDP2's
``fully_shard``, where they step the local shards of DTensor params.
"""
from __future__ import annotations

from .clip import NonFiniteNormError, clip_grad_norm_
from .optimizers import SGD, Adagrad, Adam, Adamax, AdamW, RMSprop

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "clip_grad_norm_",
           "NonFiniteNormError"]
