"""Optimizer classes with torch.optim's names and defaults, over lists of NumPy/CuPy arrays.

    >>> opt = fusedopt.optim.Adam(params, lr=1e-3)
    >>> for batch in data:
    ...     grads = compute_grads(params, batch)    # arrays aligned with params
    ...     opt.step(grads)                          # params updated in place

Differences from torch.optim: ``step`` takes the gradients (NumPy arrays carry no ``.grad``);
there are no parameter groups; ``lr`` may be a float or a schedule, a callable of the number of
steps already taken (0 for the first step, as optax counts) returning the learning rate.

``backend="auto"`` runs the fused kernels of ``fusedopt.ops`` (C++ for NumPy arrays, CUDA for
CuPy arrays); ``backend="reference"`` runs ``fusedopt.reference``, the plain NumPy equations. Both
give the same bits.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _checks, _scalars, ops, reference

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "LBFGS"]

_BACKENDS = {"auto": ops, "reference": reference}


def _param_list(params):
    if isinstance(params, (list, tuple)):
        params = list(params)
    elif hasattr(params, "dtype") and hasattr(params, "shape"):
        params = [params]
    else:
        try:
            params = list(params)
        except TypeError:
            raise TypeError(
                f"params must be a list of arrays, got {type(params).__name__}") from None
    if not params:
        raise ValueError("params is an empty list")
    kind = type(params[0])
    if not (kind is np.ndarray or kind.__module__.startswith("cupy")):
        raise TypeError(f"params[0] must be a numpy or cupy ndarray, got {kind.__name__}")
    _checks.check_lists([("params", params, True)], array_type=kind)
    return params


class Optimizer:
    """Base class: holds params, the learning rate (float or schedule), the hyperparameters and
    the state arrays, and implements step / state_dict / load_state_dict."""

    # Set by subclasses.
    _defaults: dict = {}

    def __init__(self, params, lr, backend="auto", **hyperparams):
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be 'auto' or 'reference', got {backend!r}")
        self.params = _param_list(params)
        self.backend = backend
        self._impl = _BACKENDS[backend]
        if not callable(lr):
            lr = _checks.nonneg("lr", lr)
        self.lr = lr
        self.hyperparams = dict(hyperparams)
        self._step = 0
        # Checks every hyperparameter now rather than at the first step.
        self._scalars(1, 0.0 if callable(lr) else lr, self.hyperparams)
        self.state = {name: [self._new_state(p, name) for p in self.params]
                      for name in self._state_names(self.hyperparams)}

    # -- to be provided by subclasses ---------------------------------------------------------
    def _state_names(self, hp) -> tuple:
        raise NotImplementedError

    def _scalars(self, step, lr, hp):
        """Checks the hyperparameters (raises) for the given step and lr."""
        raise NotImplementedError

    def _update(self, grads, step, lr):
        raise NotImplementedError

    def _initial_value(self, name) -> float:
        return 0.0

    # -----------------------------------------------------------------------------------------
    def _new_state(self, p, name):
        v = self._initial_value(name)
        return np.zeros_like(p) if v == 0.0 else np.full_like(p, v)

    @property
    def step_count(self) -> int:
        """Number of steps taken so far."""
        return self._step

    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        if callable(self.lr):
            return _checks.nonneg("lr (the schedule's value)", self.lr(self._step))
        return self.lr

    def step(self, grads):
        """One update of every param with ``grads`` (a list aligned with params, or one array
        when there is one param). Raises, changing nothing, on any bad input."""
        if not isinstance(grads, (list, tuple)):
            if hasattr(grads, "dtype") and len(self.params) == 1:
                grads = [grads]
            else:
                raise TypeError(f"grads must be a list of arrays, got {type(grads).__name__}")
        lr = self.current_lr()
        self._update(grads, self._step + 1, lr)
        self._step += 1

    def state_dict(self) -> dict:
        """A copy of the optimizer's state: step count, lr, hyperparameters and state arrays."""
        return {
            "step": self._step,
            "lr": None if callable(self.lr) else self.lr,
            "hyperparams": dict(self.hyperparams),
            "state": {k: [a.copy() for a in v] for k, v in self.state.items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a ``state_dict()``; a resumed run continues bit for bit. Everything is checked
        before anything is changed."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"step", "lr", "hyperparams", "state"} - state_dict.keys()
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}")
        step = state_dict["step"]
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"state_dict['step'] must be an int >= 0, got {step!r}")
        hp = state_dict["hyperparams"]
        if not isinstance(hp, dict) or set(hp) != set(self.hyperparams):
            raise ValueError(
                f"state_dict['hyperparams'] must have the keys {sorted(self.hyperparams)}")
        lr = state_dict["lr"]
        if lr is not None:
            lr = _checks.nonneg("state_dict['lr']", lr)
        self._scalars(1, 0.0 if lr is None else lr, hp)
        names = self._state_names(hp)
        st = state_dict["state"]
        if not isinstance(st, dict) or set(st) != set(names):
            raise ValueError(f"state_dict['state'] must have the arrays {sorted(names)}")
        for name in names:
            arrs = st[name]
            if not isinstance(arrs, (list, tuple)) or len(arrs) != len(self.params):
                raise ValueError(
                    f"state_dict['state']['{name}'] must be a list of {len(self.params)} arrays")
            for i, (a, p) in enumerate(zip(arrs, self.params)):
                if getattr(a, "shape", None) != p.shape or getattr(a, "dtype", None) != p.dtype:
                    raise ValueError(
                        f"state_dict['state']['{name}'][{i}] must have shape {p.shape} and dtype "
                        f"{p.dtype}")
        # Checked: now apply.
        self.hyperparams = dict(hp)
        if lr is not None and not callable(self.lr):
            self.lr = lr
        old = self.state
        self.state = {}
        for name in names:
            bufs = old.get(name) or [np.empty_like(p) for p in self.params]
            for b, a in zip(bufs, st[name]):
                b[...] = a
            self.state[name] = bufs
        self._step = int(step)

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return (f"{type(self).__name__}({len(self.params)} params, lr={self.lr!r}, {hp}, "
                f"backend={self.backend!r})")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening and Nesterov momentum
    (``torch.optim.SGD``). ``SGD(params, lr, momentum=0.9, dampening=0.9)`` is the exponential
    moving average form ``v = 0.9 v + 0.1 g`` (after a first step that sets ``v = g``)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, backend="auto"):
        super().__init__(params, lr, backend, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _state_names(self, hp):
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    def _scalars(self, step, lr, hp):
        return _scalars.sgd(step=step, lr=lr, **hp)

    def _update(self, grads, step, lr):
        self._impl.sgd_(self.params, grads, self.state.get("momentum_buffer"), step=step, lr=lr,
                        **self.hyperparams)


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``), with optax's ``eps_root`` inside the square root."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, eps_root=0.0, maximize=False,
                 backend="auto"):
        self._init_acc = _checks.nonneg("initial_accumulator_value", initial_accumulator_value)
        super().__init__(params, lr, backend, lr_decay=lr_decay, weight_decay=weight_decay,
                         eps=eps, eps_root=eps_root, maximize=maximize)

    def _initial_value(self, name):
        return self._init_acc

    def _state_names(self, hp):
        return ("sum",)

    def _scalars(self, step, lr, hp):
        return _scalars.adagrad(step=step, lr=lr, **hp)

    def _update(self, grads, step, lr):
        self._impl.adagrad_(self.params, grads, self.state["sum"], step=step, lr=lr,
                            **self.hyperparams)


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``): centered variant, momentum, ``eps_root``."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, eps_root=0.0, maximize=False, backend="auto"):
        super().__init__(params, lr, backend, alpha=alpha, eps=eps, eps_root=eps_root,
                         weight_decay=weight_decay, momentum=momentum, centered=centered,
                         maximize=maximize)

    def _state_names(self, hp):
        names = ["square_avg"]
        if hp["centered"]:
            names.append("grad_avg")
        if hp["momentum"] != 0:
            names.append("momentum_buffer")
        return tuple(names)

    def _scalars(self, step, lr, hp):
        return _scalars.rmsprop(step=step, lr=lr, **hp)

    def _update(self, grads, step, lr):
        st = self.state
        self._impl.rmsprop_(self.params, grads, st["square_avg"], st.get("grad_avg"),
                            st.get("momentum_buffer"), step=step, lr=lr, **self.hyperparams)


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``): Kingma & Ba's bias correction, L2 ``weight_decay``,
    AMSGrad, and optax's ``eps_root``."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, eps_root=0.0, maximize=False, backend="auto"):
        if isinstance(betas, list):
            betas = tuple(betas)
        super().__init__(params, lr, backend, betas=betas, eps=eps, eps_root=eps_root,
                         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)

    def _state_names(self, hp):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if hp["amsgrad"] else names

    def _scalars(self, step, lr, hp):
        return _scalars.adam(step=step, lr=lr, decoupled_weight_decay=self._decoupled, **hp)

    def _update(self, grads, step, lr):
        st = self.state
        self._impl.adam_(self.params, grads, st["exp_avg"], st["exp_avg_sq"],
                         st.get("max_exp_avg_sq"), step=step, lr=lr,
                         decoupled_weight_decay=self._decoupled, **self.hyperparams)


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): Adam with decoupled weight decay
    ``p <- p * (1 - lr * weight_decay)``, default ``weight_decay=1e-2``."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, eps_root=0.0, maximize=False, backend="auto"):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, eps_root=eps_root,
                         maximize=maximize, backend=backend)


class Adamax(Optimizer):
    """AdaMax (``torch.optim.Adamax``), Adam's infinity-norm variant."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 maximize=False, backend="auto"):
        if isinstance(betas, list):
            betas = tuple(betas)
        super().__init__(params, lr, backend, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)

    def _state_names(self, hp):
        return ("exp_avg", "exp_inf")

    def _scalars(self, step, lr, hp):
        return _scalars.adamax(step=step, lr=lr, **hp)

    def _update(self, grads, step, lr):
        st = self.state
        self._impl.adamax_(self.params, grads, st["exp_avg"], st["exp_inf"], step=step, lr=lr,
                           **self.hyperparams)


from .lbfgs import LBFGS  # noqa: E402 -- re-exported here; defined with the L-BFGS solver
