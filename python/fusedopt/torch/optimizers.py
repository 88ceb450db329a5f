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
tensors (float32, float64, float16 and bfloat16 alike; a group with master weights: one call for
its 16-bit params, one for the others), through zero-copy views (``Tensor.numpy()``; CuPy's
``from_dlpack`` for CUDA tensors). Views of the params and of the state are cached per param and
rebuilt when a tensor is replaced (``p.data = ...``, ``load_state_dict``). Everything is checked
before the first kernel runs: a bad input raises TypeError/ValueError naming the param and
changes nothing. CPU groups are then cached as plans (``_Plan``: the calls' arrays in a
``fusedopt._core.TensorPlan``, checked there once), which later steps check in bulk and hand the
grad tensors to, without building views (the C++ plan reads and checks each grad's pointer,
dtype, shape and layout, through torch's C shim where it has one; the per-step cost about
14 us + 0.5 us per tensor); whatever a plan does not vouch for goes through the general path
above. CUDA tensors are exported and stepped on torch's current stream.

16-bit params: float16 and bfloat16 params (bfloat16 through ``ml_dtypes``) have float32
states and float32 math; a torch.optim checkpoint's 16-bit states are widened on load. With
``master_weights=True`` (a keyword of every class, also per parameter group) each 16-bit param
gets a float32 copy of itself in its state, ``master_param`` (made from the param at its first
step, or at the first step after a checkpoint without one was loaded): the rule updates it and
the param receives it rounded to nearest even, in the same pass. float32 and float64 params in
such a group need no master and get none (they are updated as in any other group). A group
whose params need master weights for some and not for others steps them in two kernel calls.

Fewer bytes of state: ``state_dtype="bfloat16"`` or ``"uint8"`` (a keyword of every class,
also per parameter group; float32, float16 and bfloat16 params; CPU and CUDA tensors, not DTensors)
keeps the states in bfloat16 tensors, or as Dettmers' blockwise 8-bit state: the codes, a uint8
tensor under the state's usual key, and the float32 absmax of each block of 256 under
``<key>_absmax`` (``fusedopt.quant``). Only tensors of at least ``quant.MIN_SIZE`` (4096)
elements get 8-bit state; smaller ones keep float32 state. Master weights stay float32. The
state_dict holds them as they are; a state of another format found at a step (a float32
checkpoint, torch.optim's, loaded into an 8-bit optimizer, or an 8-bit one into a float32
optimizer) is converted there, through ``fusedopt.optim.convert_state``: quantized, rounded to
bfloat16, dequantized or widened. ``stochastic_rounding=True`` (bfloat16 params only, also per
group) rounds the params stochastically when they are stored; its ``seed`` (drawn from the OS
when None) is kept in each parameter group, so in the state_dict, and group ``j``'s kernel
calls use ``fusedopt.optim.group_seed(seed, j)``.

AMP: ``torch.amp.GradScaler`` sees ``_step_supports_amp_scaling`` and hands the optimizer
``grad_scale`` and ``found_inf``; ``found_inf`` is read on the host (one float: a sync for CUDA
tensors) and a step with an inf or NaN gradient changes nothing, its count included; otherwise
the kernels see ``g / grad_scale`` in the same pass (the CPU kernels once they take
``grad_scale``; until then the grads are divided into a temporary first).
"""
from __future__ import annotations

import functools
import operator
import re
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.optim.optimizer as _torch_optimizer
from torch.optim.optimizer import _get_scalar_dtype

from .. import _checks, ops, optim, quant
from . import _bridge

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax"]


class _Record:
    """What a param's step needs, cached: its view and its state tensors' views.

    Valid while ``p`` keeps its memory (``ptr``; DTensors are looked up afresh each step) and
    ``state`` holds the very tensors of ``pairs`` under the same ``keys``."""

    __slots__ = ("p", "ptr", "pview", "state", "keys", "pairs", "views", "step_view", "cuda",
                 "master")

    def __init__(self, p: torch.Tensor, pview: Any) -> None:
        plain = type(p) in (torch.Tensor, torch.nn.Parameter)
        self.p, self.pview = p, pview
        self.ptr = p.data_ptr() if plain else -1
        self.state: dict = {}
        self.keys: tuple = ()
        self.pairs: tuple = ()
        self.views: tuple = ()
        self.step_view: Any = None  # 0-d float array: the steps taken (a view of state["step"])
        self.master: Any = None  # the view of state["master_param"], with master weights
        self.cuda = pview.__class__.__module__.startswith("cupy")

    def current(self) -> bool:
        state = self.state
        for k, t in self.pairs:
            if state.get(k) is not t:
                return False
        return True


_is = operator.is_
_data_ptr = torch.Tensor.data_ptr


class _Plan:
    """One group's kernel calls, cached, for plain CPU tensors (the common case).

    A part per bucket of the general path (step count, master weights or not): a
    ``fusedopt._core.TensorPlan`` holding the NumPy views of its params, states and master
    weights, checked there once, when the plan is made (dtypes, shapes, contiguity, alignment,
    no aliasing). At each step only cheap checks run here, in bulk (C-level ``map`` over the
    group): the group holds the same params, each param the same memory and the same state
    tensors, and the same params have a grad. The grads themselves are checked in C++ by
    ``TensorPlan.set_grads`` (``bind``): each a plain CPU tensor of its param's dtype and shape,
    contiguous, its pointer read from the tensor and aligned, aliasing no array of the plan;
    a grad that fails any of these sends the group to the general path, which copies a
    non-contiguous grad or refuses it naming the param. Anything else (a grad set to None or
    given, a state replaced, ``p.data = ...``) also sends the group to the general path, which
    checks it whole and makes a new plan. What the plan cannot see: a step count changed in
    place (``state["step"].fill_(...)``) between steps, and a ``.data`` swap of a param's, a
    state's or a grad's memory by another thread while the kernel runs."""

    __slots__ = ("group", "params", "keys", "parts", "order", "dense", "pattern", "grads",
                 "ordered", "pptrs", "sts", "values", "master")

    def __init__(self, group: dict, keys: tuple, buckets: dict, slots: dict) -> None:
        self.group, self.keys = group, keys
        self.params = list(group["params"])
        self.master = group.get("master_weights") is True
        self.pattern = [p.grad is not None for p in self.params]
        self.order: list[int] = []
        self.parts: list[list] = []  # [TensorPlan, steps taken, step views, master, lo, hi]
        recs_all = []
        for (taken, master), (recs, _, index) in buckets.items():
            lo = len(self.order)
            self.order.extend(index)
            recs_all.extend(recs)
            states: list = [None, None, None]
            for j, k in enumerate(keys):  # each state in its kernel slot (fusedopt/slots.h)
                states[slots.get(k, j)] = [rec.views[j] for rec in recs]
            core = ops.tensor_plan([rec.pview for rec in recs], states,
                                   [rec.master for rec in recs] if master else None)
            self.parts.append([core, taken, [rec.step_view for rec in recs], master, lo,
                               len(self.order)])
        self.ordered = [self.params[i] for i in self.order]
        self.sts = [rec.state for rec in recs_all]
        # The state tensors the kernels use (and the step counts), per key: the states that have
        # it, and its tensors.
        self.values = []
        for k in set(chain.from_iterable(rec.keys for rec in recs_all)) | {"step"}:
            having = [st for st in self.sts if k in st]
            self.values.append((operator.itemgetter(k), having, [st[k] for st in having]))
        self.pptrs = list(map(_data_ptr, self.ordered))
        self.dense = self.order == list(range(len(self.params)))
        self.grads: list | None = None

    def valid(self, n: int, group: dict, keys: tuple, state: Any, state_same: bool) -> bool:
        """Whether the plan still serves ``group`` (``param_groups[n]``; see the class); its
        grads are then bound."""
        params = group["params"]
        if group is not self.group or keys != self.keys or len(params) != len(self.params) or \
                (group.get("master_weights") is True) != self.master or \
                not all(map(_is, params, self.params)):
            return False
        full = [p.grad for p in params]
        if [g is not None for g in full] != self.pattern:
            return False
        if list(map(_data_ptr, self.ordered)) != self.pptrs:
            return False
        # The params' state dicts: looked up only when some entry of the optimizer's state was
        # added or replaced since the last step (state_same; a lookup hashes each param in Python).
        if not state_same and \
                not all(map(_is, map(state.__getitem__, self.ordered), self.sts)):
            return False
        try:
            for get, having, values in self.values:
                if not all(map(_is, map(get, having), values)):
                    return False
        except KeyError:
            return False
        return self.bind(n, full if self.dense else [full[i] for i in self.order])

    def bind(self, n: int, grads: list) -> bool:
        """Hands the grads to the kernel plans, which check them (see the class); False, with
        no grad held, when one fails there (the general path then copies or names it), except
        for a grad aliasing a written array, refused here naming the param."""
        parts = self.parts
        lo = 0
        try:
            for part in parts:
                lo = part[4]
                part[0].set_grads(grads[lo:part[5]])
        except (TypeError, ValueError) as e:
            for part in parts:
                part[0].set_grads(None)
            if "shares memory" not in str(e):
                return False
            # "grads[j] ...": j counts the part's tensors; name the group's param instead
            j = re.match(r"grads\[(\d+)\]", str(e))
            where = f"param_groups[{n}]['params']" + \
                (f"[{self.order[lo + int(j.group(1))]}]" if j else "")
            raise type(e)(f"{where}: {e}") from None
        self.grads = grads
        return True


_GLOBAL_PRE = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
_GLOBAL_POST = getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
_profiler_enabled = getattr(getattr(torch._C, "_autograd", None), "_profiler_enabled", None)


def _with_hooks(func: Any) -> Any:
    """``step`` with the base class's step hooks, as ``Optimizer.profile_hook_step`` wraps it
    (global and per-optimizer pre-hooks, which may replace the arguments, then post-hooks), and
    its ``record_function`` range only while a profiler runs: entering that range costs about
    15 us, more than the whole step on small models. Marked ``hooked`` so that torch does not
    wrap it again; where this torch lacks the names used here, torch's own wrapper is used."""
    if _GLOBAL_PRE is None or _GLOBAL_POST is None or _profiler_enabled is None:
        return func

    def run(args: tuple, kwargs: dict) -> Any:
        self = args[0]
        for pre_hook in chain(_GLOBAL_PRE.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{func} must return None or a tuple of (new_args, "
                                       f"new_kwargs), but got {result}.")
        out = func(*args, **kwargs)
        self._optimizer_step_code()
        for post_hook in chain(self._optimizer_step_post_hooks.values(), _GLOBAL_POST.values()):
            post_hook(self, args, kwargs)
        return out

    @functools.wraps(func)
    @_bridge.on_torch_threads
    def step(*args: Any, **kwargs: Any) -> Any:
        if _profiler_enabled():
            name = f"Optimizer.step#{type(args[0]).__name__}.step"
            with torch.autograd.profiler.record_function(name):
                return run(args, kwargs)
        return run(args, kwargs)

    step.hooked = True  # type: ignore[attr-defined]
    return step


class _FusedOptimizer(torch.optim.Optimizer):
    """The shared machinery; subclasses name their state keys and call their kernel."""

    _step_supports_amp_scaling = True

    def __init__(self, params: Any, defaults: dict) -> None:
        self._records: dict[int, _Record] = {}
        self._plans: dict[int, _Plan] = {}  # group index -> its cached kernel calls
        self._state_seen: list = []  # the state's values (dicts) at the last step
        super().__init__(params, defaults)

    # -- to be provided by subclasses ---------------------------------------------------------
    def _state_keys(self, group: dict) -> tuple[str, ...]:
        """The state tensors of a param under ``group``'s options, in the kernel's order."""
        raise NotImplementedError

    def _initial(self, key: str, group: dict) -> float:
        return 0.0

    #: The kernel's state slot (0-2) of a state key where it differs from the key's place in
    #: ``_state_keys`` (RMSprop's momentum_buffer is always the third).
    _state_slots: dict[str, int] = {}

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
        except (TypeError, ValueError, ImportError):
            self.param_groups.pop()
            raise

    def _check_hyperparameters(self, group: dict, n: int) -> None:
        mw = group.get("master_weights", False)
        if not isinstance(mw, bool):
            raise TypeError(f"param_groups[{n}]['master_weights']: must be a bool, got "
                            f"{type(mw).__name__}")
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise ValueError(f"param_groups[{n}]['{flag}']: {flag}=True is not supported "
                                 "by fusedopt.torch")
        self._check_storage(group, n)
        # The kernel on empty lists checks every hyperparameter and updates nothing.
        keys = self._state_keys(group)
        self._kernel(group, [], [], [[] for _ in keys], 1)

    @staticmethod
    def _check_storage(group: dict, n: int) -> None:
        """A group's ``state_dtype``, ``stochastic_rounding`` and ``seed``, against its params
        (bfloat16/8-bit state: float32 math; stochastic rounding: bfloat16 params)."""
        where = f"param_groups[{n}]"
        sd = optim.check_state_dtype(f"{where}['state_dtype']",
                                     group.get("state_dtype", "float32"))
        sr = group.get("stochastic_rounding", False)
        if not isinstance(sr, bool):
            raise TypeError(f"{where}['stochastic_rounding']: must be a bool, got "
                            f"{type(sr).__name__}")
        optim.check_seed(f"{where}['seed']", group.get("seed", 0))
        if sd == "uint8" and group.get("centered", False):
            raise ValueError(f"{where}['state_dtype']: 'uint8': {_checks.CENTERED_8BIT}")
        for i, p in enumerate(group["params"]):
            if sd != "float32" and p.dtype == torch.float64:
                raise ValueError(f"{where}['state_dtype']: {sd!r} needs float32, float16 or "
                                 f"bfloat16 params (float32 math); params[{i}] is float64")
            if sr and p.dtype != torch.bfloat16:
                raise ValueError(f"{where}['stochastic_rounding']: rounds bfloat16 params; "
                                 f"params[{i}] has dtype {p.dtype}")

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
        self._records = {}  # load_state_dict and unpickling replace the state tensors
        self._plans = {}
        self._state_seen = []

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's ``load_state_dict``, keeping float32 states of 16-bit params float32.

        torch casts every floating state tensor to its param's dtype: the states (and master
        weights) of a 16-bit param would be rounded to 16 bits. The checkpoint's float32 ones
        are put back after it; 16-bit ones (a ``torch.optim`` checkpoint) are widened exactly.
        The same for 8-bit codes (torch would make them floats) and bfloat16 states of float16
        params. Each group keeps its own ``state_dtype`` and ``stochastic_rounding``: the
        loaded states are converted to it at the next step (see the module docstring); the
        ``seed`` is the checkpoint's where it has one.
        """
        saved = state_dict["state"]
        ids = list(chain.from_iterable(g["params"] for g in state_dict["param_groups"]))
        params = list(chain.from_iterable(g["params"] for g in self.param_groups))
        keep = []
        if len(ids) == len(params):  # else torch raises
            for pid, p in zip(ids, params):
                st = saved.get(pid)
                if p.dtype in _bridge.HALF and isinstance(st, dict):
                    keep.extend((p, k, v) for k, v in st.items() if k != "step"
                                and isinstance(v, torch.Tensor) and v.dtype == torch.float32)
                if isinstance(st, dict):  # 8-bit codes (torch would cast them to floats), and
                    # bfloat16 states of float16 params (torch would round them to float16)
                    keep.extend((p, k, v) for k, v in st.items() if k != "step" and
                                isinstance(v, torch.Tensor) and (v.dtype == torch.uint8 or (
                                    v.dtype == torch.bfloat16 and p.dtype == torch.float16)))
        # How the state is stored is ours to keep (a loaded state is converted to it); the
        # seed of stochastic rounding comes with the checkpoint where it has one.
        storage = [{k: g[k] for k in ("state_dtype", "stochastic_rounding") if k in g}
                   for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, ours in zip(self.param_groups, storage):
            g.update(ours)
        for p in params:
            if p.dtype in _bridge.HALF and p in self.state:
                st = self.state[p]
                for k, v in list(st.items()):
                    if k != "step" and isinstance(v, torch.Tensor) and v.dtype in _bridge.HALF:
                        st[k] = v.float()
        for p, k, v in keep:
            t = self.state[p].get(k)
            if isinstance(t, torch.Tensor) and t.shape == v.shape:
                self.state[p][k] = v.detach().to(device=t.device, copy=True)

    # -- state --------------------------------------------------------------------------------
    def _refresh(self, p: torch.Tensor, group: dict, keys: tuple, where: str) -> _Record:
        """A new record for ``p``: the param checked, its state found or created (at the first
        step, as torch does) and checked, the views taken."""
        _bridge.check_param(p, where)
        local = _bridge.local(p)
        rec = _Record(p, _bridge.array(local))
        state = self.state[p]
        rec.step_view = self._step_view(state, keys)
        sdtype = _bridge.state_dtype(local)
        packed = []  # the bfloat16 and 8-bit states (and 8-bit ones to unpack)
        for k in keys:
            t = state.get(k)
            fmt = optim.state_format(group.get("state_dtype", "float32"), local.numel(), k)
            if fmt != "full" or (t is not None and _bridge.local(t).dtype == torch.uint8):
                packed.append(self._packed(state, k, fmt, local, rec.pview, local is p, group,
                                          where))
                continue
            if t is None:
                if k == "master_param":  # a float32 copy of the 16-bit param
                    t = p.detach().to(torch.float32)
                else:
                    v = self._initial(k, group)
                    t = torch.zeros_like(p, dtype=sdtype) if v == 0.0 else \
                        torch.full_like(p, v, dtype=sdtype)
                state[k] = t
            lt = _bridge.local(t)
            if lt.dtype != sdtype and lt.dtype in _bridge.HALF and sdtype == torch.float32:
                t = state[k] = t.float()  # 16-bit states (torch.optim's), widened exactly
                lt = _bridge.local(t)
            if lt.shape != local.shape or lt.dtype != sdtype or lt.device != local.device:
                raise ValueError(f"{where}: state['{k}'] has shape {tuple(lt.shape)}, dtype "
                                 f"{lt.dtype}, device {lt.device}; expected "
                                 f"{tuple(local.shape)}, {sdtype}, {local.device} (the param "
                                 f"is {local.dtype})")
            if not lt.is_contiguous():
                state[k] = t.contiguous()
        rec.state, rec.keys = state, keys
        rec.pairs = tuple((k, state[k]) for k in keys) + \
            tuple((f"{k}_absmax", state[f"{k}_absmax"]) for k in packed if k is not None)
        rec.views = tuple(self._view(state, k, where) for k in keys)
        if keys and keys[-1] == "master_param":
            rec.master = rec.views[-1]
        if rec.ptr != -1:
            self._records[id(p)] = rec
        return rec

    def _packed(self, state: dict, k: str, fmt: str, local: torch.Tensor, pview: Any,
                plain: bool, group: dict, where: str) -> str | None:
        """``state[k]`` made (at the first step), or converted from what a checkpoint holds, in
        format ``fmt``: a bfloat16 tensor, or uint8 codes with a float32 ``state[k +
        "_absmax"]``; an 8-bit state is unpacked for a "full" ``fmt``. Returns ``k`` when the
        state is 8-bit, else None. Conversions go through NumPy on the host
        (``optim.convert_state``)."""
        if not plain:
            raise ValueError(f"{where}: state_dtype={fmt!r} is supported for plain CPU and "
                             "CUDA tensors (not DTensors)")
        absk = f"{k}_absmax"
        t, m = state.get(k), state.get(absk)
        if t is None:
            v = self._initial(k, group)
            x = np.full(tuple(local.shape), v, np.float32)
            if fmt == "uint8":
                signed = k in optim.SIGNED_STATES
                new: Any = quant.zeros(x.shape, signed) if v == 0.0 else \
                    quant.quantize(x, signed)
            else:
                new = x.astype(optim._bfloat16())
        else:
            if t.shape == local.shape and t.dtype == {"uint8": torch.uint8, "bfloat16":
                                                      torch.bfloat16}.get(fmt) and \
                    (fmt != "uint8" or (isinstance(m, torch.Tensor) and m.dtype ==
                                        torch.float32 and m.shape == (quant.blocks(t.numel()),)
                                        and m.device == t.device)) and t.device == local.device:
                state[k] = t.contiguous()
                if fmt == "uint8":
                    state[absk] = m.contiguous()
                return k if fmt == "uint8" else None
            a = t.detach().cpu()
            a = _bridge.array(a, where) if a.dtype == torch.bfloat16 else a.numpy()
            if isinstance(m, torch.Tensor):
                m = m.detach().cpu().numpy()
            new = optim.convert_state(f"{where}: state['{k}']", a, m, fmt, k, pview)
        state.pop(absk, None)
        if isinstance(new, quant.QuantizedState):
            state[k] = torch.from_numpy(new.codes).to(local.device)
            state[absk] = torch.from_numpy(new.absmax).to(local.device)
            return k
        if new.dtype.name == "bfloat16":
            state[k] = torch.from_numpy(new.view(np.int16)).view(torch.bfloat16).to(local.device)
        else:
            state[k] = torch.from_numpy(new).to(local.device)
        return None

    @staticmethod
    def _view(state: dict, k: str, where: str) -> Any:
        """The kernel's view of ``state[k]``: an array, or a ``quant.QuantizedState`` of the
        views of the codes and ``state[k + "_absmax"]``."""
        t = _bridge.local(state[k])
        if t.dtype == torch.uint8:  # NumPy or (CUDA tensors) CuPy views of codes and absmax
            return quant.QuantizedState(_bridge.array(t, where),
                                        _bridge.array(state[f"{k}_absmax"], where),
                                        k in optim.SIGNED_STATES)
        return _bridge.array(t, where)

    def _step_view(self, state: dict, keys: tuple) -> Any:
        """A 0-d array holding the steps taken: a view of ``state["step"]`` (made a CPU float
        tensor if it came as something else)."""
        s = state.get("step")
        if not (isinstance(s, torch.Tensor) and s.device.type == "cpu" and s.dim() == 0
                and s.dtype in (torch.float32, torch.float64)):
            s = state["step"] = torch.tensor(0.0 if s is None else float(s),
                                             dtype=_get_scalar_dtype())
        return s.numpy()

    # -- the step -----------------------------------------------------------------------------
    @_with_hooks
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
        # Phase 1: the views (the params and the state checked once, when first seen or
        # replaced), before any kernel runs; a group whose cached plan still holds is checked in
        # bulk (_Plan.valid), the others param by param, and a plan is made for them if they fit.
        plans = []
        fast = []
        state = self.state
        seen = self._state_seen
        state_same = len(state) == len(seen) and all(map(_is, state.values(), seen))
        for n, group in enumerate(self.param_groups):
            keys = self._state_keys(group)
            plan = self._plans.get(n)
            if plan is not None and plan.valid(n, group, keys, state, state_same):
                fast.append((n, group, plan))
                continue
            self._plans.pop(n, None)
            buckets = self._buckets(n, group, keys)
            if not buckets:
                continue
            plan = self._plan_of(group, keys, buckets)
            if plan is None or \
                    not plan.bind(n, [group["params"][i].grad for i in plan.order]):
                plans.append((n, group, keys, buckets))
            else:
                self._plans[n] = plan
                fast.append((n, group, plan))
        if not state_same:
            self._state_seen = list(state.values())
        if not plans and len(fast) <= 1:
            for _, group, plan in fast:  # one kernel call, everything checked
                self._call(group, plan, grad_scale)
            return loss
        if not fast and len(plans) == 1 and len(plans[0][3]) == 1:
            # One kernel call, which checks every array before it changes any: on an error,
            # the grads are checked here to name the param (and non-contiguous ones copied).
            n, group, keys, buckets = plans[0]
            ((taken, _), (recs, grads, index)), = buckets.items()
            try:
                self._launch(group, keys, recs, grads, int(taken) + 1, grad_scale)
                return loss
            except (TypeError, ValueError):
                self._check_grads(n, recs, grads, index)
                self._launch(group, keys, recs, grads, int(taken) + 1, grad_scale)
                return loss
        # Several kernel calls: everything is checked before the first one.
        for n, group, keys, buckets in plans:
            self._check_hyperparameters(group, n)
            for recs, grads, index in buckets.values():
                self._check_grads(n, recs, grads, index)
        for n, group, _ in fast:
            self._check_hyperparameters(group, n)
        # Phase 2: one kernel call per group, step count and master weights, then the counts.
        for _, group, plan in fast:
            self._call(group, plan, grad_scale)
        for _, group, keys, buckets in plans:
            for (taken, _), (recs, grads, _) in buckets.items():
                self._launch(group, keys, recs, grads, int(taken) + 1, grad_scale)
        return loss

    def _buckets(self, n: int, group: dict, keys: tuple) -> dict:
        """The records of the params of ``group`` that have a grad (made or checked afresh) and
        their grads' views, bucketed by step count and master weights (one kernel call each)."""
        half = _bridge.HALF
        get = self._records.get
        mkeys = keys + ("master_param",) if group.get("master_weights") is True else keys
        buckets: dict[tuple, tuple[list, list, list]] = {}
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            want = mkeys if p.dtype in half else keys
            rec = get(id(p))
            if rec is None or rec.p is not p or rec.ptr != p.data_ptr() or \
                    rec.keys != want or not rec.current():
                rec = self._refresh(p, group, want, f"param_groups[{n}]['params'][{i}]")
            if rec.cuda:  # a CuPy view on torch's current stream
                gv = _bridge.grad_array(p, rec.pview, f"param_groups[{n}]['params'][{i}]")
            else:
                try:
                    gv = g.numpy()  # checked by the kernel, or by _check_grads
                except (TypeError, RuntimeError):  # bfloat16, sparse, requires_grad...
                    gv = _bridge.grad_array(p, rec.pview, f"param_groups[{n}]['params'][{i}]")
            b = buckets.setdefault((rec.step_view.item(), rec.master is not None),
                                   ([], [], []))
            b[0].append(rec)
            b[1].append(gv)
            b[2].append(i)
        return buckets

    def _plan_of(self, group: dict, keys: tuple, buckets: dict) -> _Plan | None:
        """A plan for the group when it fits one (see _Plan), else None."""
        if group.get("stochastic_rounding"):
            return None  # (the general path passes the rounding's seed)
        for recs, _, _ in buckets.values():
            if any(r.ptr == -1 or r.cuda for r in recs):
                return None
            # A plan holds full-precision states only (each the param's math type): bfloat16
            # and 8-bit states take the general path, whose kernels know their formats.
            if not all(type(v) is np.ndarray and v.dtype == _plan_state_dtype(r.pview.dtype)
                       for r in recs for v in r.views):
                return None
        try:  # (the plan checks the arrays again; the general path then names the param)
            return _Plan(group, keys, buckets, self._state_slots)
        except (TypeError, ValueError):
            return None

    def _call(self, group: dict, plan: _Plan, grad_scale: Any) -> None:
        """The kernel calls of a plan (its grads bound), then the step counts advance."""
        amp: dict[str, Any] = {}
        if grad_scale is not None:
            amp |= {"grad_scale": np.array([float(grad_scale)], np.float32),
                    "found_inf": np.zeros(1, np.float32)}
        for part in plan.parts:
            core, taken, step_views, master = part[:4]
            step = int(taken) + 1
            self._kernel(group, core, core, [core] * len(plan.keys), step,
                         **(amp | {"master_params": core} if master else amp))
            part[1] = step
            for v in step_views:
                v[()] = step
        plan.grads = None  # (weak references only, between steps: zero_grad frees the grads)

    @staticmethod
    def _check_grads(n: int, recs: list, grads: list, index: list) -> None:
        """Every grad checked against its param (TypeError/ValueError naming the param); the
        views of non-contiguous grads replaced by views of contiguous copies."""
        for j, (rec, gv) in enumerate(zip(recs, grads)):
            pv = rec.pview
            if type(rec.p.grad) is not torch.Tensor or gv.shape != pv.shape or \
                    gv.dtype != pv.dtype or not gv.flags.c_contiguous:
                grads[j] = _bridge.grad_array(rec.p, pv, f"param_groups[{n}]['params'][{index[j]}]")

    def _launch(self, group: dict, keys: tuple, recs: list, grads: list, step: int,
                grad_scale: Any) -> None:
        """One kernel call for ``recs`` (params with ``step - 1`` steps taken), then their
        counts advance."""
        params = [rec.pview for rec in recs]
        states = [[rec.views[j] for rec in recs] for j in range(len(keys))]
        amp: dict[str, Any] = {}
        if recs[0].master is not None:
            amp["master_params"] = [rec.master for rec in recs]
        if group.get("stochastic_rounding"):
            j = next(j for j, g in enumerate(self.param_groups) if g is group)
            amp |= {"stochastic_rounding": True, "seed": optim.group_seed(group["seed"], j)}
        cuda = recs[0].cuda
        if grad_scale is not None:
            if cuda:
                amp |= _bridge.amp_arrays(grad_scale, _bridge.local(recs[0].p))
            else:
                amp |= {"grad_scale": np.array([float(grad_scale)], np.float32),
                        "found_inf": np.zeros(1, np.float32)}
        if cuda:
            with _bridge.cuda_stream(recs[0].p):
                self._kernel(group, params, grads, states, step, **amp)
        else:
            self._kernel(group, params, grads, states, step, **amp)
        for rec in recs:
            rec.step_view[()] = step


def _plan_state_dtype(param_dtype: np.dtype) -> np.dtype:
    """The dtype of a full-precision state of a param of ``param_dtype`` (its math type)."""
    return param_dtype if param_dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _storage(state_dtype: str, stochastic_rounding: bool, seed: int | None) -> dict:
    """The defaults that choose how the state is stored, and the seed (drawn from the OS when
    None: one per optimizer, kept in each group and so in the state_dict)."""
    return dict(state_dtype=state_dtype, stochastic_rounding=stochastic_rounding,
                seed=optim.new_seed() if seed is None else optim.check_seed("seed", seed))


def _betas(group: dict) -> tuple[float, float]:
    b1, b2 = group["betas"]
    return float(b1), float(b2)


class SGD(_FusedOptimizer):
    """``torch.optim.SGD`` on the fused kernel: ``momentum_buffer`` is the gradient at the
    first step, then ``momentum * buf + (1 - dampening) * g`` (Nesterov: ``g + momentum *
    buf``). No state without momentum, and no ``step`` in the state (as torch)."""

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None,
                 master_weights: bool = False,
                 state_dtype: str = "float32", stochastic_rounding: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused,
                                      master_weights=master_weights,
                                      **_storage(state_dtype, stochastic_rounding, seed)))

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _step_view(self, state: dict, keys: tuple) -> Any:
        # Not kept in the state (torch keeps none): only the first step matters, where the
        # buffer is set to the gradient; a buffer found in the state means it is past.
        fresh = "momentum_buffer" in keys and state.get("momentum_buffer") is None
        return np.array(0.0 if fresh else 1.0)

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
                 eps_root: float = 0.0, master_weights: bool = False,
                 state_dtype: str = "float32", stochastic_rounding: bool = False,
                 seed: int | None = None) -> None:
        if not initial_accumulator_value >= 0.0:
            raise ValueError("initial_accumulator_value must be >= 0, got "
                             f"{initial_accumulator_value}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, fused=fused,
                                      eps_root=eps_root, master_weights=master_weights,
                                      **_storage(state_dtype, stochastic_rounding, seed)))
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                state["sum"] = torch.full_like(p, group["initial_accumulator_value"],
                                               dtype=_bridge.state_dtype(p))

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
                 eps_root: float = 0.0, master_weights: bool = False,
                 state_dtype: str = "float32", stochastic_rounding: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay,
                                      capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable,
                                      eps_root=eps_root, master_weights=master_weights,
                                      **_storage(state_dtype, stochastic_rounding, seed)))

    _state_slots = {"square_avg": 0, "grad_avg": 1, "momentum_buffer": 2}

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
                 decoupled_weight_decay: bool = False, eps_root: float = 0.0,
                 master_weights: bool = False,
                 state_dtype: str = "float32", stochastic_rounding: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable,
                                      fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      eps_root=eps_root, master_weights=master_weights,
                                      **_storage(state_dtype, stochastic_rounding, seed)))

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
                 eps_root: float = 0.0, master_weights: bool = False,
                 state_dtype: str = "float32", stochastic_rounding: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, eps_root=eps_root,
                         master_weights=master_weights, state_dtype=state_dtype,
                         stochastic_rounding=stochastic_rounding, seed=seed)


class Adamax(_FusedOptimizer):
    """``torch.optim.Adamax`` on the fused kernel: ``exp_avg`` and ``exp_inf``."""

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False, master_weights: bool = False,
                 state_dtype: str = "float32", stochastic_rounding: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable,
                                      master_weights=master_weights,
                                      **_storage(state_dtype, stochastic_rounding, seed)))

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def _kernel(self, group: dict, params: list, grads: list, states: list, step: int,
                **amp: Any) -> None:
        ops.adamax_(params, grads, states[0], states[1], step=step, lr=float(group["lr"]),
                    betas=_betas(group), eps=group["eps"],
                    weight_decay=float(group["weight_decay"]), maximize=group["maximize"],
                    **amp)
