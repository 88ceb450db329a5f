"""``torch.optim`` optimizers whose step is one fused kernel call per parameter group.

Layer: algorithms (torch.optim.Optimizer subclasses over ``fusedopt.ops``; imports torch at its
top level, which only ``fusedopt.torch`` may do).

Each class has torch.optim's signature and defaults (plus ``eps_root`` where the rule has one),
parameter groups, ``step(closure=None)``, ``zero_grad``, ``add_param_group``, the base class's
hooks and torch's ``state_dict`` format: the state tensors carry torch's names (``step``,
``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``, ``sum``, ``square_avg``,
``grad_avg``, ``exp_inf``), so a checkpoint of ``torch.optim.AdamW`` loads into
``fusedopt.torch.AdamW`` and back. The update equations are those of ``fusedopt.reference``.

A step, per group: the params whose ``.grad`` is not None, bucketed by their step count (one
bucket unless some params missed steps), one ``fusedopt.ops`` call per bucket for all their
tensors (float32 and float64 alike), through zero-copy views (``Tensor.numpy()``; CuPy's
``from_dlpack`` for CUDA tensors). Views of the params and of the state are cached per param and
rebuilt when a tensor is replaced (``p.data = ...``, ``load_state_dict``). Everything is checked
before the first kernel runs: a bad input raises TypeError/ValueError naming the param and
changes nothing.

AMP: ``torch.amp.GradScaler`` sees ``_step_supports_amp_scaling`` and hands the optimizer
``grad_scale`` and ``found_inf``; ``found_inf`` is read on the host (one float: a sync for CUDA
tensors) and a step with an inf or NaN gradient changes nothing, its count included; otherwise
the kernels see ``g / grad_scale`` in the same pass (the CPU kernels once they take
``grad_scale``; until then the grads are divided into a temporary first).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import _get_scalar_dtype

from .. import ops
from . import _bridge

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax"]


class _Record:
    """What a param's step needs, cached: its view and its state tensors' views.

    Valid while ``p`` keeps its memory (``ptr``) and ``state`` holds the very tensors in
    ``tensors`` under ``keys``."""

    __slots__ = ("p", "ptr", "pview", "state", "keys", "tensors", "views", "step_view", "cuda")

    def __init__(self, p: torch.Tensor, ptr: int, pview: Any) -> None:
        self.p, self.ptr, self.pview = p, ptr, pview
        self.state: dict | None = None
        self.keys: tuple = ()
        self.tensors: tuple = ()
        self.views: tuple = ()
        self.step_view: Any = None
        self.cuda = pview.__class__.__module__.startswith("cupy")


def _ptr(p: torch.Tensor) -> int:
    return p.data_ptr() if type(p) in (torch.Tensor, torch.nn.Parameter) else \
        _bridge.local(p).data_ptr()


class _FusedOptimizer(torch.optim.Optimizer):
    """The shared machinery; subclasses name their state keys and call their kernel."""

    _step_supports_amp_scaling = True
    #: whether the state keeps a ``step`` tensor (SGD does not)
    _counts_steps = True

    def __init__(self, params: Any, defaults: dict) -> None:
        self._records: dict[int, _Record] = {}
        super().__init__(params, defaults)

    # -- to be provided by subclasses ---------------------------------------------------------
    def _state_keys(self, group: dict) -> tuple[str, ...]:
        """The state tensors of a param under ``group``'s options, in the kernel's order."""
        raise NotImplementedError

    def _initial(self, key: str, group: dict) -> float:
        return 0.0

    def _kernel(self, group: dict, params: list, grads: list, states: list, step: int,
                **amp: Any) -> None:
        raise NotImplementedError

    # -- groups -------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """torch's ``add_param_group``, then the group is checked (params, devices,
        hyperparameters) and taken back out if anything is wrong."""
        super().add_param_group(param_group)
        n = len(self.param_groups) - 1
        group = self.param_groups[n]
        try:
            params = group["params"]
            _bridge.check_group_devices(params, f"param_groups[{n}]['params']")
            for i, p in enumerate(params):
                _bridge.check_param(p, f"param_groups[{n}]['params'][{i}]")
            if len({id(p) for p in params}) != len(params):
                raise ValueError(f"param_groups[{n}]['params']: a param appears twice in one "
                                 "group")
            self._check_hyperparameters(group, n)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _check_hyperparameters(self, group: dict, n: int) -> None:
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise ValueError(f"param_groups[{n}]['{flag}']: {flag}=True is not supported "
                                 "by fusedopt.torch")
        # The kernel on empty lists checks every hyperparameter and updates nothing.
        keys = self._state_keys(group)
        self._kernel(group, [], [], [[] for _ in keys], 1)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
        self._records = {}  # load_state_dict and unpickling replace the state tensors

    # -- state --------------------------------------------------------------------------------
    def _record(self, p: torch.Tensor, where: str) -> _Record:
        rec = self._records.get(id(p))
        if rec is not None and rec.p is p and rec.ptr == _ptr(p):
            return rec
        _bridge.check_param(p, where)
        t = _bridge.local(p)
        rec = _Record(p, t.data_ptr(), _bridge.array(t))
        self._records[id(p)] = rec
        return rec

    def _attach(self, rec: _Record, group: dict, keys: tuple, where: str) -> None:
        """Make sure ``rec`` holds the views of the param's state under ``keys`` (creating
        the state at the first step, as torch does)."""
        state = self.state[rec.p]
        if rec.state is state and rec.keys == keys and \
                all(state.get(k) is t for k, t in zip(keys, rec.tensors)):
            return
        p = rec.p
        if self._counts_steps:
            s = state.get("step")
            if not (isinstance(s, torch.Tensor) and s.device.type == "cpu" and s.dim() == 0
                    and s.dtype in (torch.float32, torch.float64)):
                s = torch.tensor(0.0 if s is None else float(s), dtype=_get_scalar_dtype())
                state["step"] = s
            rec.step_view = s.numpy()
        local = _bridge.local(p)
        for k in keys:
            t = state.get(k)
            if t is None:
                v = self._initial(k, group)
                t = torch.zeros_like(p) if v == 0.0 else torch.full_like(p, v)
                state[k] = t
            lt = _bridge.local(t)
            if lt.shape != local.shape or lt.dtype != local.dtype or lt.device != local.device:
                raise ValueError(f"{where}: state['{k}'] has shape {tuple(lt.shape)}, dtype "
                                 f"{lt.dtype}, device {lt.device}; the param "
                                 f"{tuple(local.shape)}, {local.dtype}, {local.device}")
            if not lt.is_contiguous():
                t = state[k] = t.contiguous()
        rec.state, rec.keys = state, keys
        rec.tensors = tuple(state[k] for k in keys)
        rec.views = tuple(_bridge.array(_bridge.local(t)) for t in rec.tensors)

    def _steps_taken(self, rec: _Record) -> int:
        return int(rec.step_view[()])

    def _count(self, rec: _Record, step: int) -> None:
        rec.step_view[()] = step

    # -- the step -----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every param that has a ``.grad``; ``closure`` (re-evaluating the
        loss) is called first, with gradients enabled, and its value returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) != 0.0:
            return loss  # GradScaler found an inf or NaN: nothing changes
        # Phase 1: every check and every view, before any kernel runs.
        plans = []
        for n, group in enumerate(self.param_groups):
            keys = self._state_keys(group)
            recs, grads = [], []
            for i, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                where = f"param_groups[{n}]['params'][{i}]"
                rec = self._record(p, where)
                gv = _bridge.fast_grad_array(g, rec.pview)
                if gv is None:
                    gv = _bridge.grad_array(p, rec.pview, where)
                self._attach(rec, group, keys, where)
                recs.append(rec)
                grads.append(gv)
            if recs:
                plans.append((n, group, keys, recs, grads))
        if len(plans) > 1:
            for n, group, *_ in plans:
                self._check_hyperparameters(group, n)
        # Phase 2: one kernel call per group (and step count), then the counts.
        for _, group, keys, recs, grads in plans:
            buckets: dict[int, list] = {}
            for rec, gv in zip(recs, grads):
                buckets.setdefault(self._steps_taken(rec), []).append((rec, gv))
            for taken, items in buckets.items():
                self._launch(group, keys, items, taken + 1, grad_scale)
                for rec, _ in items:
                    self._count(rec, taken + 1)
        return loss

    def _launch(self, group: dict, keys: tuple, items: list, step: int, grad_scale: Any) -> None:
        params = [rec.pview for rec, _ in items]
        grads = [gv for _, gv in items]
        states = [[rec.views[j] for rec, _ in items] for j in range(len(keys))]
        amp: dict[str, Any] = {}
        cuda = items[0][0].cuda
        if grad_scale is not None:
            scale = grad_scale
            if cuda:
                import cupy  # noqa: PLC0415

                amp = {"grad_scale": cupy.asarray([float(scale)], dtype=cupy.float32),
                       "found_inf": cupy.zeros(1, dtype=cupy.float32)}
            elif _bridge.numpy_amp():
                amp = {"grad_scale": np.array([float(scale)], np.float32),
                       "found_inf": np.zeros(1, np.float32)}
            else:  # CPU kernels without AMP arguments: the same division, into temporaries
                s32 = np.float32(float(scale))
                grads = [g / g.dtype.type(s32) for g in grads]
        if cuda:
            with _bridge.cuda_stream(items[0][0].p):
                self._kernel(group, params, grads, states, step, **amp)
        else:
            self._kernel(group, params, grads, states, step, **amp)


def _betas(group: dict) -> tuple[float, float]:
    b1, b2 = group["betas"]
    return float(b1), float(b2)


class SGD(_FusedOptimizer):
    """``torch.optim.SGD`` on the fused kernel: ``momentum_buffer`` is the gradient at the
    first step, then ``momentum * buf + (1 - dampening) * g`` (Nesterov: ``g + momentum *
    buf``). No state without momentum, and no ``step`` in the state (as torch)."""

    _counts_steps = False

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _attach(self, rec: _Record, group: dict, keys: tuple, where: str) -> None:
        fresh = keys and "momentum_buffer" not in self.state[rec.p]
        super()._attach(rec, group, keys, where)
        rec.step_view = 0 if fresh else 1  # the buffer is set to g at the first step

    def _steps_taken(self, rec: _Record) -> int:
        return rec.step_view

    def _count(self, rec: _Record, step: int) -> None:
        rec.step_view = 1

    def _kernel(self, group: dict, params: list, grads: list, states: list, step: int,
                **amp: Any) -> None:
        ops.sgd_(params, grads, states[0] if states else None, step=step,
                 lr=float(group["lr"]), momentum=group["momentum"],
                 dampening=group["dampening"], weight_decay=float(group["weight_decay"]),
                 nesterov=group["nesterov"], maximize=group["maximize"], **amp)


class Adagrad(_FusedOptimizer):
    """``torch.optim.Adagrad`` on the fused kernel; the state ``sum`` starts at
    ``initial_accumulator_value`` (created in the constructor, as torch does)."""

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 eps_root: float = 0.0) -> None:
        if not initial_accumulator_value >= 0.0:
            raise ValueError("initial_accumulator_value must be >= 0, got "
                             f"{initial_accumulator_value}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, fused=fused,
                                      eps_root=eps_root))
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                state["sum"] = torch.full_like(p, group["initial_accumulator_value"])

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("sum",)

    def _initial(self, key: str, group: dict) -> float:
        return float(group["initial_accumulator_value"])

    def _kernel(self, group: dict, params: list, grads: list, states: list, step: int,
                **amp: Any) -> None:
        ops.adagrad_(params, grads, states[0], step=step, lr=float(group["lr"]),
                     lr_decay=group["lr_decay"], weight_decay=float(group["weight_decay"]),
                     eps=group["eps"], eps_root=group["eps_root"], maximize=group["maximize"],
                     **amp)


class RMSprop(_FusedOptimizer):
    """``torch.optim.RMSprop`` on the fused kernel: ``square_avg``, ``grad_avg`` when
    ``centered``, ``momentum_buffer`` when ``momentum > 0``."""

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False, *,
                 eps_root: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay,
                                      capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable,
                                      eps_root=eps_root))

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("square_avg",) + (("grad_avg",) if group["centered"] else ()) + \
            (("momentum_buffer",) if group["momentum"] > 0 else ())

    def _kernel(self, group: dict, params: list, grads: list, states: list, step: int,
                **amp: Any) -> None:
        it = iter(states[1:])
        grad_avgs = next(it) if group["centered"] else None
        bufs = next(it) if group["momentum"] > 0 else None
        ops.rmsprop_(params, grads, states[0], grad_avgs, bufs, step=step,
                     lr=float(group["lr"]), alpha=group["alpha"], eps=group["eps"],
                     eps_root=group["eps_root"], weight_decay=float(group["weight_decay"]),
                     momentum=group["momentum"], centered=group["centered"],
                     maximize=group["maximize"], **amp)


class Adam(_FusedOptimizer):
    """``torch.optim.Adam`` on the fused kernel (AdamW with ``decoupled_weight_decay=True``,
    AMSGrad with ``amsgrad=True``)."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False, eps_root: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable,
                                      fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      eps_root=eps_root))

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _kernel(self, group: dict, params: list, grads: list, states: list, step: int,
                **amp: Any) -> None:
        ops.adam_(params, grads, states[0], states[1],
                  states[2] if group["amsgrad"] else None, step=step, lr=float(group["lr"]),
                  betas=_betas(group), eps=group["eps"], eps_root=group["eps_root"],
                  weight_decay=float(group["weight_decay"]),
                  decoupled_weight_decay=group["decoupled_weight_decay"],
                  amsgrad=group["amsgrad"], maximize=group["maximize"], **amp)


class AdamW(Adam):
    """``torch.optim.AdamW`` on the fused kernel: Adam with decoupled weight decay
    (``p <- p * (1 - lr * weight_decay)`` before the update)."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 eps_root: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, eps_root=eps_root)


class Adamax(_FusedOptimizer):
    """``torch.optim.Adamax`` on the fused kernel: ``exp_avg`` and ``exp_inf``."""

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable))

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def _kernel(self, group: dict, params: list, grads: list, states: list, step: int,
                **amp: Any) -> None:
        ops.adamax_(params, grads, states[0], states[1], step=step, lr=float(group["lr"]),
                    betas=_betas(group), eps=group["eps"],
                    weight_decay=float(group["weight_decay"]), maximize=group["maximize"],
                    **amp)
